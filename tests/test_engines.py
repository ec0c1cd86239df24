"""Engines: the ONNX Runtime engine on tiny real models, contract checks, provider choice, registry."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
from onnx import TensorProto
from tiny_models import expected_class_ids, tiny_metadata, write_brightness_model

from perception.engines import ENGINES, EngineOptions, load_engine
from perception.engines.ort import choose_providers
from perception.errors import ConfigError, DependencyError, ModelError

HW = (48, 64)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_brightness_model(tmp_path_factory.mktemp("m") / "tiny.onnx", HW)


def test_ort_engine_runs_the_model_exactly(model_path):
    engine = load_engine("ort", model_path, EngineOptions(provider="cpu", threads=1))
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (2, *HW, 3), dtype=np.uint8)
    out = engine.infer(batch)
    assert out["class_ids"].dtype == np.uint8 and out["class_ids"].shape == (2, *HW)
    np.testing.assert_array_equal(out["class_ids"], expected_class_ids(batch))
    assert engine.provider == "CPUExecutionProvider"
    assert engine.input_spec.dtype == "uint8" and engine.input_spec.shape == (None, *HW, 3)
    assert engine.metadata.model_name == "tiny" and engine.model_id == "tiny-test-48x64-fp32"
    engine.warmup(2)
    engine.close()


def test_engine_registry_and_unknown_name(model_path):
    assert ENGINES.names() == ["auto", "openvino", "ort", "tensorrt", "torch"]
    with pytest.raises(ConfigError, match="unknown engine 'onnx'.*known: auto, openvino, ort, tensorrt, torch"):
        load_engine("onnx", model_path)


@pytest.mark.parametrize(
    ("variant", "match"),
    [
        ({"input_dtype": TensorProto.FLOAT}, r"bad\.onnx: input 'image' is float32"),
        ({"nchw": True}, r"bad\.onnx: input 'image' is uint8 \['N', 3, 48, 64\]"),
    ],
)
def test_model_with_wrong_input_is_rejected(tmp_path, variant, match):
    path = write_brightness_model(tmp_path / "bad.onnx", HW, **variant)
    with pytest.raises(ModelError, match=match):
        load_engine("ort", path)


def test_missing_corrupt_and_metadata_free_models(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_engine("ort", tmp_path / "nope.onnx")
    good = write_brightness_model(tmp_path / "good.onnx", HW)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ModelError, match="corrupt.onnx"):
        load_engine("ort", corrupt)
    bare = write_brightness_model(tmp_path / "bare.onnx", HW, with_metadata=False)
    with pytest.raises(ModelError, match="no perception metadata"):
        load_engine("ort", bare)


def test_metadata_input_size_must_match_graph(tmp_path):
    path = write_brightness_model(tmp_path / "lies.onnx", HW, metadata=tiny_metadata((32, 32)))
    with pytest.raises(ModelError, match="lies.onnx"):
        load_engine("ort", path)


def test_provider_choice():
    avail = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto", avail) == avail
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers("cuda", avail) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("cpu", avail) == ["CPUExecutionProvider"]
    with pytest.raises(DependencyError, match="no CUDAExecutionProvider.*--provider cpu"):
        choose_providers("cuda", ["CPUExecutionProvider"])


def test_runtime_modules_do_not_import_torch(model_path):
    import subprocess

    code = (
        "import sys, perception.pipeline, perception.commands.run, perception.engines, perception.sources, "
        "perception.masks, perception.preprocess\n"
        "from perception.engines import load_engine\n"
        f"load_engine('ort', {str(model_path)!r})\n"
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch (train extra)")
def test_torch_engine_rejects_onnx_and_missing_checkpoint(tmp_path, model_path):
    with pytest.raises(ModelError, match="--engine ort"):
        load_engine("torch", model_path, EngineOptions(provider="cpu"))
    with pytest.raises(ModelError, match="not found"):
        load_engine("torch", tmp_path / "none.pt", EngineOptions(provider="cpu"))


@pytest.mark.tensorrt
def test_tensorrt_engine_matches_onnx_runtime(tmp_path, model_path):
    trt_engine = load_engine("tensorrt", model_path)
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 256, (1, *HW, 3), dtype=np.uint8)
    np.testing.assert_array_equal(trt_engine.infer(batch)["class_ids"], expected_class_ids(batch))
    trt_engine.close()


def test_tensorrt_provider_options_come_from_the_exporter(model_path):
    from perception.engines.ort import tensorrt_provider_options

    options = tensorrt_provider_options(tiny_metadata(HW, precision="fp16"))
    assert options["trt_engine_cache_enable"] is True and options["trt_fp16_enable"] is True
