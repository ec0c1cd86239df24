"""TensorRT 10 and 11 without TensorRT: stand-in ``tensorrt`` modules of each major version's surface.

These check only our selection logic (which route, which flags, which calls), not TensorRT: the
stand-ins record every public attribute read on the module, the builder flags, the builder
config, the builder, the runtime and the execution context, and the TensorRT 11 stand-in lacks
what NVIDIA's "Removed Python APIs and Replacements" (10.x -> 11.x) lists. The real builds run
behind the ``tensorrt`` marker (tests/test_export.py, tests/test_engines.py) on a GPU machine.
"""

from __future__ import annotations

import enum
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from tiny_models import tiny_metadata, write_brightness_model

from perception.contracts import INPUT_NAME, OUTPUT_CLASS_IDS, OUTPUT_CONFIDENCE
from perception.engines.cache import EngineCache, engine_key, trt_major
from perception.errors import DependencyError, ModelError

HW = (48, 64)

#: Removed in TensorRT 11 (Python), as "Owner.name" the stand-ins record.
REMOVED_IN_11 = {
    *(f"BuilderFlag.{n}" for n in ("FP16", "INT8", "FP8", "BF16", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
                                    "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO")),
    *(f"IBuilderConfig.{n}" for n in ("int8_calibrator", "set_calibration_profile", "get_calibration_profile",
                                       "set_quantization_flag", "get_quantization_flag", "quantization_flags",
                                       "clear_quantization_flag", "algorithm_selector")),
    *(f"tensorrt.{n}" for n in ("IInt8Calibrator", "IInt8LegacyCalibrator", "IInt8EntropyCalibrator",
                                 "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator", "CalibrationAlgoType",
                                 "IAlgorithmSelector")),
    "Builder.platform_has_fast_fp16", "Builder.platform_has_fast_int8",
    "ICudaEngine.device_memory_size",
}


class Recorder:
    """Records each public attribute read as ``"<owner>.<name>"`` into a shared list."""

    owner = "?"

    def __init__(self, log: list[str]) -> None:
        object.__setattr__(self, "_log", log)

    def __getattribute__(self, name):
        if not name.startswith("_") and name != "owner":
            object.__getattribute__(self, "_log").append(f"{type(self).owner}.{name}")
        return object.__getattribute__(self, name)

    def __setattr__(self, name, value):
        self._log.append(f"{type(self).owner}.{name}")
        object.__setattr__(self, name, value)


class FakeFlags(Recorder):
    owner = "BuilderFlag"

    def __init__(self, log, names):
        super().__init__(log)
        for i, name in enumerate(names):
            object.__setattr__(self, name, f"BuilderFlag.{name}#{i}")


class NetworkFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class FakeTensor:
    def __init__(self, name, shape):
        self.name, self.shape = name, shape


class FakeNetwork(Recorder):
    owner = "INetworkDefinition"

    def get_input(self, index):
        return FakeTensor(INPUT_NAME, (1, *HW, 3))


class FakeConfig(Recorder):
    owner = "IBuilderConfig"

    def __init__(self, log, state):
        super().__init__(log)
        object.__setattr__(self, "_state", state)

    def set_memory_pool_limit(self, pool, size):
        pass

    def set_flag(self, flag):
        self._state["flags"].append(flag)

    def add_optimization_profile(self, profile):
        pass

    def create_timing_cache(self, data):
        return ("timing", bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch):
        pass

    def get_timing_cache(self):
        class Timing:
            def serialize(self):
                return b"timing-cache"

        return Timing()


class FakeBuilder(Recorder):
    owner = "Builder"

    def __init__(self, log, state):
        super().__init__(log)
        object.__setattr__(self, "_state", state)

    def create_network(self, flags):
        self._state["network_flags"] = flags
        return FakeNetwork(self._log)

    def create_builder_config(self):
        return FakeConfig(self._log, self._state)

    def create_optimization_profile(self):
        raise AssertionError("static-batch models need no optimization profile")

    def build_serialized_network(self, network, config):
        return b"serialized-plan"


class FakeTensorRT(Recorder):
    """The ``tensorrt`` module's builder surface at ``version``: 10.x has the weak-typing flags and
    the INT8 calibrators, 11.x has neither."""

    owner = "tensorrt"

    def __init__(self, version: str):
        log: list[str] = []
        super().__init__(log)
        state = {"flags": [], "network_flags": None, "parsed": None}
        object.__setattr__(self, "state", state)
        object.__setattr__(self, "__version__", version)
        flags = ["TF32", "REFIT", "SPARSE_WEIGHTS", "VERSION_COMPATIBLE"]
        if version.startswith("10."):
            flags += ["FP16", "INT8", "BF16", "FP8", "OBEY_PRECISION_CONSTRAINTS", "DIRECT_IO"]
            object.__setattr__(self, "IInt8EntropyCalibrator2", type("IInt8EntropyCalibrator2", (), {}))
        object.__setattr__(self, "BuilderFlag", FakeFlags(log, flags))
        object.__setattr__(self, "NetworkDefinitionCreationFlag", NetworkFlag)
        object.__setattr__(self, "MemoryPoolType", enum.Enum("MemoryPoolType", "WORKSPACE"))

        class Logger:
            WARNING = 2

            def __init__(self, severity):
                pass

        class IProgressMonitor:
            def __init__(self):
                pass

        class OnnxParser:
            num_errors = 0

            def __init__(self, network, logger):
                pass

            def parse(self, data):
                state["parsed"] = bytes(data)
                return True

        object.__setattr__(self, "Logger", Logger)
        object.__setattr__(self, "IProgressMonitor", IProgressMonitor)
        object.__setattr__(self, "OnnxParser", OnnxParser)
        object.__setattr__(self, "Builder", lambda logger: FakeBuilder(log, state))

    @property
    def touched(self) -> set[str]:
        return set(object.__getattribute__(self, "_log"))


def qdq_model_bytes() -> bytes:
    """A graph with QuantizeLinear / DequantizeLinear nodes (only its node types matter here)."""
    h, w = HW
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("QuantizeLinear", ["pixels", "scale", "zero"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["dq"]),
        helper.make_node("ReduceMax", ["dq"], ["m"], axes=[3], keepdims=0),
        helper.make_node("Cast", ["m"], [OUTPUT_CLASS_IDS], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(
        nodes, "qdq",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, [1, h, w, 3])],
        [helper.make_tensor_value_info(OUTPUT_CLASS_IDS, TensorProto.UINT8, [1, h, w])],
        initializer=[helper.make_tensor("scale", TensorProto.FLOAT, [], [1.0]),
                     helper.make_tensor("zero", TensorProto.INT8, [], [0])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.fixture
def fp32_model_bytes(tmp_path) -> bytes:
    return write_brightness_model(tmp_path / "m.onnx", HW).read_bytes()


def _use(monkeypatch, version: str) -> FakeTensorRT:
    fake = FakeTensorRT(version)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    return fake


def test_build_plan_per_major_version():
    from perception.engines.trt_build import build_plan

    assert build_plan(10, "fp32").builder_flags == () and not build_plan(10, "fp32").strongly_typed
    assert build_plan(10, "fp16").builder_flags == ("FP16",)
    assert build_plan(10, "int8").builder_flags == ("FP16", "INT8") and build_plan(10, "int8").needs_qdq
    for precision in ("fp32", "fp16", "int8"):
        plan = build_plan(11, precision)
        assert plan.strongly_typed and plan.builder_flags == ()
    assert build_plan(11, "fp16").fp16_onnx and not build_plan(11, "fp32").fp16_onnx
    assert build_plan(11, "int8").needs_qdq and not build_plan(11, "int8").fp16_onnx


@pytest.mark.parametrize("version", ["9.3.0", "12.0.1", "dev"])
def test_unsupported_tensorrt_is_a_dependency_error(monkeypatch, version, fp32_model_bytes):
    from perception.engines.trt_build import build_engine

    _use(monkeypatch, version)
    with pytest.raises(DependencyError, match=r"TensorRT 10 or 11"):
        build_engine(fp32_model_bytes, precision="fp32")


def test_tensorrt_10_keeps_the_builder_flags(monkeypatch, fp32_model_bytes):
    from perception.engines.trt_build import build_engine

    fake = _use(monkeypatch, "10.13.3")
    assert build_engine(fp32_model_bytes, precision="fp16") == b"serialized-plan"
    assert fake.state["network_flags"] == 0  # weakly typed, explicit batch
    assert fake.state["flags"] == ["BuilderFlag.FP16#4"]
    assert fake.state["parsed"] == fp32_model_bytes  # the FP32 graph as it is

    fake = _use(monkeypatch, "10.13.3")
    build_engine(qdq_model_bytes(), precision="int8")
    assert fake.state["flags"] == ["BuilderFlag.FP16#4", "BuilderFlag.INT8#5"]
    assert "IBuilderConfig.int8_calibrator" not in fake.touched  # the legacy calibrator is gone


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_11_is_strongly_typed_and_touches_no_removed_api(monkeypatch, precision, fp32_model_bytes):
    from perception.engines.trt_build import build_engine

    fake = _use(monkeypatch, "11.4.0")
    source = qdq_model_bytes() if precision == "int8" else fp32_model_bytes
    assert build_engine(source, precision=precision) == b"serialized-plan"
    assert fake.state["network_flags"] == 1 << int(NetworkFlag.STRONGLY_TYPED)
    assert fake.state["flags"] == []
    assert not fake.touched & REMOVED_IN_11, sorted(fake.touched & REMOVED_IN_11)
    parsed = onnx.load_from_string(fake.state["parsed"])
    float_types = {t.data_type for t in parsed.graph.initializer} - {TensorProto.INT8}
    if precision == "fp16":  # an FP16 graph with the contract's uint8 input and output kept
        assert float_types == {TensorProto.FLOAT16}
        assert parsed.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
        assert parsed.graph.output[0].type.tensor_type.elem_type == TensorProto.UINT8
    else:  # FP32 and the Q/DQ graph go to TensorRT unchanged
        assert fake.state["parsed"] == source


@pytest.mark.parametrize("version", ["10.13.3", "11.4.0"])
def test_int8_needs_the_qdq_model_on_both_versions(monkeypatch, version, fp32_model_bytes):
    from perception.engines.trt_build import build_engine

    _use(monkeypatch, version)
    with pytest.raises(ModelError, match=r"explicitly quantised \(Q/DQ\).*--tensorrt --int8 --calib"):
        build_engine(fp32_model_bytes, precision="int8")


def test_engine_for_keys_the_cache_by_major_version(monkeypatch, tmp_path):
    import perception.engines.trt_build as trt_export

    path = write_brightness_model(tmp_path / "m.onnx", HW)
    monkeypatch.setattr(trt_export, "gpu_name", lambda: "NVIDIA H200 sm90")
    cache = EngineCache(tmp_path / "trt")
    keys = {}
    for version in ("10.13.3", "11.4.0"):
        _use(monkeypatch, version)
        engine, key, built = trt_export.engine_for(path, precision="fp32", cache=cache)
        assert built and engine.read_bytes() == b"serialized-plan" and key.trt_major == trt_major(version)
        assert not trt_export.engine_for(path, precision="fp32", cache=cache)[2]  # second time: cached
        keys[version] = key
    assert keys["10.13.3"].digest != keys["11.4.0"].digest
    shapes = {INPUT_NAME: (1, *HW, 3)}
    a = engine_key(b"m", trt_version="10.13.3", gpu_name="g", precision="fp16", input_shapes=shapes)
    assert a.to_dict()["trt_major"] == 10


def test_fp16_conversion_runs_on_onnx_runtime_cpu_and_agrees_with_fp32(tmp_path):
    from perception.engines.fp16 import check_fp16, convert_fp16
    from perception.synthetic import render_scene

    fp32 = onnx.load(str(write_brightness_model(tmp_path / "m.onnx", HW, metadata=tiny_metadata(HW))))
    fp16 = convert_fp16(fp32)
    frames = [render_scene(seed, height=HW[0], width=HW[1])[0][None] for seed in range(3)]
    check = check_fp16(fp32, fp16, frames)
    assert check.passed and check.agreement >= 0.99, check.line()
    assert "agree with fp32" in check.line()


def test_fp16_conversion_of_the_default_model_keeps_class_ids():
    """The shipped BiSeNet V2 (convs, resizes, argmax): FP16 on ONNX Runtime CPU vs FP32."""
    from pathlib import Path

    from perception.engines.fp16 import check_fp16, convert_fp16
    from perception.synthetic import render_scene

    default = Path(__file__).resolve().parents[1] / "perception" / "assets" / "default.onnx"
    fp32 = onnx.load(str(default))
    fp16 = convert_fp16(fp32)
    dims = fp32.graph.input[0].type.tensor_type.shape.dim
    h, w = dims[1].dim_value, dims[2].dim_value
    check = check_fp16(fp32, fp16, [render_scene(seed, height=h, width=w)[0][None] for seed in range(2)])
    assert check.passed, check.line()
    assert any(t.data_type == TensorProto.FLOAT16 for t in fp16.graph.initializer)


# ---- the runtime engine (perception/engines/tensorrt.py) on each version's runtime surface -----

class FakeContext(Recorder):
    owner = "IExecutionContext"

    def __init__(self, log, shapes):
        super().__init__(log)
        object.__setattr__(self, "_shapes", shapes)

    def set_input_shape(self, name, shape):
        return True

    def get_tensor_shape(self, name):
        return self._shapes[name]

    def set_tensor_address(self, name, address):
        return True

    def execute_async_v3(self, stream_handle):
        return True


class FakeEngine(Recorder):
    owner = "ICudaEngine"

    def __init__(self, log, outputs=(OUTPUT_CLASS_IDS,)):
        super().__init__(log)
        h, w = HW
        shapes = {INPUT_NAME: (1, h, w, 3), **{name: (1, h, w) for name in outputs}}
        object.__setattr__(self, "_shapes", shapes)
        object.__setattr__(self, "_names", [INPUT_NAME, *outputs])
        object.__setattr__(self, "num_io_tensors", 1 + len(outputs))

    def get_tensor_name(self, index):
        return self._names[index]

    def get_tensor_mode(self, name):
        return "INPUT" if name == INPUT_NAME else "OUTPUT"

    def get_tensor_shape(self, name):
        return self._shapes[name]

    def get_tensor_dtype(self, name):
        return "uint8"

    def create_execution_context(self):
        return FakeContext(self._log, self._shapes)


class FakeCudart:
    class cudaMemcpyKind:  # noqa: N801 - cuda-python's name
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self):
        self.calls: list[str] = []

    def __getattr__(self, name):
        def call(*args):
            self.calls.append(name)
            return (0, 4096) if name in ("cudaStreamCreate", "cudaMalloc") else (0,)

        return call


@pytest.mark.parametrize("outputs", [(OUTPUT_CLASS_IDS,), (OUTPUT_CONFIDENCE, OUTPUT_CLASS_IDS)])
@pytest.mark.parametrize("version", ["10.13.3", "11.4.0"])
def test_runtime_engine_uses_the_tensor_api_of_both_versions(monkeypatch, tmp_path, version, outputs):
    import perception.engines.tensorrt as trt_engine

    fake = _use(monkeypatch, version)
    log = object.__getattribute__(fake, "_log")

    class Runtime(Recorder):
        owner = "IRuntime"

        def deserialize_cuda_engine(self, plan):
            return FakeEngine(log, outputs)

    object.__setattr__(fake, "Runtime", lambda logger: Runtime(log))
    object.__setattr__(fake, "TensorIOMode", type("TensorIOMode", (), {"INPUT": "INPUT", "OUTPUT": "OUTPUT"}))
    object.__setattr__(fake, "nptype", lambda dtype: np.uint8)
    cudart = FakeCudart()
    monkeypatch.setattr(trt_engine, "_import_backends", lambda: (fake, cudart))
    plan = tmp_path / "m.engine"
    plan.write_bytes(b"serialized-plan")
    (tmp_path / "m.json").write_text(tiny_metadata(HW).to_json())
    engine = trt_engine.TrtEngine(plan)
    out = engine.infer(np.zeros((1, *HW, 3), dtype=np.uint8))
    assert out[OUTPUT_CLASS_IDS].shape == (1, *HW) and out[OUTPUT_CLASS_IDS].dtype == np.uint8
    # Outputs go by name, whatever order the engine lists them in; the confidence output, when the
    # ONNX had one, comes back for unknown marking.
    assert engine.output_names == tuple(n for n in (OUTPUT_CLASS_IDS, OUTPUT_CONFIDENCE) if n in outputs)
    assert engine.has_confidence == (OUTPUT_CONFIDENCE in outputs) and set(out) == set(outputs)
    assert {"IExecutionContext.set_tensor_address", "IExecutionContext.execute_async_v3"} <= fake.touched
    assert not fake.touched & REMOVED_IN_11
    assert not {t for t in fake.touched if "binding" in t or t.endswith(("execute_async_v2", "execute_v2"))}
    assert cudart.calls.count("cudaMemcpyAsync") == 1 + len(outputs) and "cudaStreamSynchronize" in cudart.calls
    engine.close()


def test_runtime_engine_refuses_an_unsupported_tensorrt(monkeypatch):
    import perception.engines.tensorrt as trt_engine

    _use(monkeypatch, "12.0.0")
    with pytest.raises(DependencyError, match=r"supports TensorRT 10 and 11, found 12\.0\.0"):
        trt_engine._import_backends()
