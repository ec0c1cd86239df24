"""Native TensorRT engine: the fastest path on NVIDIA GPUs (Jetson and desktop), TensorRT 10 and 11.

``perception run --engine tensorrt --model model.onnx`` builds a TensorRT engine from the ONNX file
once (``perception.engines.trt_build.engine_for``: cached per ONNX file, precision, TensorRT version and GPU)
and runs it; ``--model model.engine`` runs a
prebuilt engine whose metadata comes from ``model.onnx`` or ``model.json`` beside it.

Runs with device buffers allocated once and a CUDA stream from cuda-python: ``set_input_shape``,
``set_tensor_address`` + ``execute_async_v3``, and the name-based I/O queries (``num_io_tensors``,
``get_tensor_name/mode/shape/dtype``). These are the same calls in TensorRT 10 and 11: 11 removed
the weak-typing builder flags and the INT8 calibrators, not the tensor-based runtime API
(https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html,
https://docs.nvidia.com/deeplearning/tensorrt/11.4.0/_static/python-api/infer/Core/ExecutionContext.html).
An engine runs only on the TensorRT that built it, so an engine file from another version fails
with a message saying to rebuild it from the .onnx model.

With ``--fp16`` (``EngineOptions.fp16``) an FP32 ONNX model gets an FP16 engine (TensorRT 10:
``BuilderFlag.FP16``; 11: an FP16 graph, see ``perception.engines.trt_build``). Needs the ``gpu`` extra
(tensorrt, cuda-python); imported only when chosen.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from perception.contracts import OUTPUT_CLASS_IDS, OUTPUT_CONFIDENCE
from perception.engines.base import Engine, EngineOptions, InputSpec, check_input_spec, refuse_streams
from perception.errors import GPU_INSTALL_HINT, DependencyError, ModelError
from perception.model_metadata import ModelMetadata
from perception.modelfile import read_model_metadata

log = logging.getLogger(__name__)


def _import_backends() -> tuple[Any, Any]:
    try:
        import tensorrt as trt
    except ImportError:
        raise DependencyError(f"--engine tensorrt needs TensorRT 10 or 11: {GPU_INSTALL_HINT}; or use --engine ort") from None
    from perception.engines.cache import trt_major  # torch-free and TensorRT-free

    version = str(getattr(trt, "__version__", "?"))
    if not version[:1].isdigit() or trt_major(version) not in (10, 11):
        raise DependencyError(f"--engine tensorrt supports TensorRT 10 and 11, found {version}: {GPU_INSTALL_HINT}")
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python layout
        except ImportError:
            raise DependencyError("--engine tensorrt needs cuda-python: pip install cuda-python") from None
    return trt, cudart


def _check(result: Any) -> Any:
    """Unwrap a cuda-python call's ``(error, *values)`` tuple; RuntimeError on a CUDA error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else tuple(values)


def metadata_for_engine_file(path: Path) -> ModelMetadata:
    """Metadata of a prebuilt engine: from the ONNX model beside it, or a ``.json`` sidecar."""
    onnx_path, json_path = path.with_suffix(".onnx"), path.with_suffix(".json")
    if onnx_path.is_file():
        return read_model_metadata(onnx_path)
    if json_path.is_file():
        # The checks of a model's own metadata (size cap first, control characters, normalisation).
        from perception.contracts import METADATA_KEY
        from perception.modelfile import MAX_METADATA_BYTES, metadata_from_props

        if json_path.stat().st_size > MAX_METADATA_BYTES:
            raise ModelError(f"{json_path.name} is {json_path.stat().st_size / 1e6:.1f} MB, more than the "
                             f"{MAX_METADATA_BYTES} bytes (1 MiB) a model's metadata may hold; export the model again")
        text = json_path.read_text(encoding="utf-8", errors="replace")
        return metadata_from_props({METADATA_KEY: text}, source=json_path.name)
    raise ModelError(
        f"{path.name} carries no model metadata; put {onnx_path.name} (or {json_path.name}) beside it, "
        "or pass the .onnx model and let the node build the engine"
    )


class TrtEngine(Engine):
    """A deserialized TensorRT engine with device buffers allocated once (batch 1)."""

    kind = "tensorrt"

    def __init__(self, model_path: str | Path, options: EngineOptions | None = None) -> None:
        options = options or EngineOptions()
        refuse_streams(options, "tensorrt", "one execution context with its device buffers")
        if options.provider not in ("auto", "tensorrt"):
            raise DependencyError(f"--engine tensorrt runs on the GPU only; drop --provider {options.provider}")
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(f"model file {path} not found; check the path")
        trt, cudart = self._trt, self._cudart = _import_backends()
        if path.suffix == ".onnx":
            self.metadata = read_model_metadata(path)
            # The exporter's engine cache: built once per ONNX file, precision, TensorRT and GPU.
            from perception.engines.trt_build import engine_for

            precision = "fp16" if options.fp16 and self.metadata.precision == "fp32" else self.metadata.precision
            engine_path, _key, built = engine_for(path, precision=precision)
            self.metadata = dataclasses.replace(self.metadata, precision=precision)
            log.info("TensorRT engine %s %s", engine_path, "built" if built else "from cache")
            plan = engine_path.read_bytes()
        else:
            self.metadata = metadata_for_engine_file(path)
            plan = path.read_bytes()
        self.model_path = str(path)
        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._trt_logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise ModelError(
                f"TensorRT {trt.__version__} cannot load {path.name}; engines are tied to the TensorRT version "
                "and GPU that built them: rebuild it from the .onnx model"
            )
        self._context = self._engine.create_execution_context()
        self._stream = _check(cudart.cudaStreamCreate())
        h, w = self.metadata.input_hw
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise ModelError(f"{path.name}: expected one input tensor, found {inputs}")
        in_name = inputs[0]
        in_shape = tuple(self._engine.get_tensor_shape(in_name))
        self.input_spec = InputSpec(
            name=in_name,
            shape=tuple(None if d < 0 else int(d) for d in in_shape),
            dtype=np.dtype(trt.nptype(self._engine.get_tensor_dtype(in_name))).name,
        )
        check_input_spec(self.input_spec, self.metadata, source=path.name)
        if -1 in in_shape:
            self._context.set_input_shape(in_name, (1, h, w, 3))
        self._outputs: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self._device: dict[str, int] = {}
        for name in names:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            self._device[name] = _check(cudart.cudaMalloc(nbytes))
            self._context.set_tensor_address(name, self._device[name])
            if name != in_name:
                self._outputs[name] = (shape, dtype)
        if OUTPUT_CLASS_IDS not in self._outputs:
            raise ModelError(f"{path.name}: output {OUTPUT_CLASS_IDS!r} is missing (found {', '.join(self._outputs)})")
        # Outputs are matched by name, never by binding order (TensorRT orders I/O tensors as the
        # parser met them). The confidence output, when the ONNX had one, feeds unknown marking.
        for name in (OUTPUT_CLASS_IDS, OUTPUT_CONFIDENCE):
            if name in self._outputs and self._outputs[name][1] != np.uint8:
                raise ModelError(
                    f"{path.name}: output {name!r} is {self._outputs[name][1]}, the node needs uint8; "
                    "rebuild the engine from a model written by 'perception export'"
                )
        self.output_names = tuple(n for n in (OUTPUT_CLASS_IDS, OUTPUT_CONFIDENCE) if n in self._outputs)
        self.provider = f"tensorrt-{trt.__version__}-{self.metadata.precision}"
        log.info("TensorRT %s: %s (%s)", trt.__version__, self.metadata.model_id, path.name)

    @property
    def fixed_batch(self) -> int | None:
        """1: the device buffers are allocated for one frame; larger batches run frame by frame
        (so a multi-camera node logs that it does)."""
        return 1

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if batch.shape[0] != 1:
            parts = [self.infer(batch[i : i + 1]) for i in range(batch.shape[0])]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        cudart = self._cudart
        host_in = np.ascontiguousarray(batch)
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart.cudaMemcpyAsync(self._device[self.input_spec.name], host_in.ctypes.data, host_in.nbytes, h2d, self._stream))
        if not self._context.execute_async_v3(self._stream):
            raise RuntimeError("TensorRT execute_async_v3 failed; see the TensorRT log")
        results = {}
        for name, (shape, dtype) in self._outputs.items():
            out = np.empty(shape, dtype=dtype)  # fresh: the consumer may hold it while the next frame runs
            _check(cudart.cudaMemcpyAsync(out.ctypes.data, self._device[name], out.nbytes, d2h, self._stream))
            results[name] = out
        _check(cudart.cudaStreamSynchronize(self._stream))
        return results

    def close(self) -> None:
        cudart = self._cudart
        for ptr in self._device.values():
            cudart.cudaFree(ptr)
        self._device.clear()
        cudart.cudaStreamDestroy(self._stream)
        self._context = None
        self._engine = None
