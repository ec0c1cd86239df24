"""Step 4 of the export chain: TensorRT engines (FP32 / FP16 / INT8) built from the verified ONNX.

``engine_for(onnx_path, precision=...)`` returns a serialized engine from the cache
(``export.cache``) or builds one with the TensorRT 10 Python API: ``trt.OnnxParser`` into an
explicit-batch network, a builder config with a workspace limit, a persistent timing cache, a
progress monitor that logs each build phase (a long build is never silent), and
``build_serialized_network``.

INT8: TensorRT 10 deprecates implicit INT8 calibration in favour of explicit quantisation, so the
INT8 route builds from a QDQ ONNX (``export.quantize.quantize_int8(..., symmetric_activations=True)``,
the zero-point-0 activations TensorRT requires). The legacy ``IInt8EntropyCalibrator2`` route is
kept for TensorRT builds that still offer it (``calib_images=``), with its calibration cache.

For onnxruntime-gpu users, ``ort_providers`` gives the TensorrtExecutionProvider /
CUDAExecutionProvider options with the engine and timing caches on.

tensorrt is imported lazily; without it (or without a GPU) the functions raise DependencyError.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from export.cache import EngineCache, EngineKey, engine_key, gpu_name
from perception.contracts import INPUT_NAME
from perception.errors import DependencyError, ModelError

log = logging.getLogger(__name__)

MISSING_TENSORRT = "TensorRT is not installed; pip install 'perception[gpu]' on a machine with an NVIDIA GPU"
#: Builder scratch memory limit.
DEFAULT_WORKSPACE_GIB = 2.0


def import_tensorrt():
    """The ``tensorrt`` module, or DependencyError with the install hint."""
    try:
        import tensorrt as trt
    except ImportError:
        raise DependencyError(MISSING_TENSORRT) from None
    return trt


def ort_providers(
    cache_dir: str | Path | None = None, *, fp16: bool = False, device_id: int = 0
) -> list[tuple[str, dict[str, Any]] | str]:
    """ONNX Runtime providers, best first, for onnxruntime-gpu: TensorRT EP, CUDA EP, CPU.

    The TensorRT EP keeps its engines and timing cache under ``cache_dir`` (default: the engine
    cache directory), so the second start of the node skips the engine build.
    """
    directory = str(Path(cache_dir) if cache_dir is not None else EngineCache().directory / "ort")
    trt_options = {
        "device_id": device_id,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": directory,
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": directory,
        "trt_fp16_enable": fp16,
    }
    return [("TensorrtExecutionProvider", trt_options), ("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]


def _progress_monitor(trt):
    """An IProgressMonitor that logs phase starts/ends and every ~10 % of each phase's steps."""

    class LoggingProgressMonitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._steps: dict[str, int] = {}
            self._started: dict[str, float] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self._steps[phase_name] = max(int(num_steps), 1)
            self._started[phase_name] = time.perf_counter()
            log.info("TensorRT build: %s%s (%d steps)", f"{parent_phase} / " if parent_phase else "", phase_name, num_steps)

        def step_complete(self, phase_name, step):
            total = self._steps.get(phase_name, 1)
            if total >= 10 and (step + 1) % max(total // 10, 1) == 0:
                log.info("TensorRT build: %s %d/%d", phase_name, step + 1, total)
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            elapsed = time.perf_counter() - self._started.pop(phase_name, time.perf_counter())
            log.info("TensorRT build: %s done in %.1f s", phase_name, elapsed)

    return LoggingProgressMonitor()


def _entropy_calibrator(trt, images: list[np.ndarray], cache_path: Path):
    """An IInt8EntropyCalibrator2 over uint8 images, one per batch, with a calibration cache file."""
    import torch  # device buffers; the export side has torch (the runtime node never builds engines)

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._images = images
            self._index = 0
            self._device = torch.empty((1, *images[0].shape), dtype=torch.uint8, device="cuda")

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            if self._index >= len(self._images):
                return None
            self._device.copy_(torch.from_numpy(self._images[self._index][None]))
            self._index += 1
            return [int(self._device.data_ptr())]

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache):
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_bytes(bytes(cache))

    return EntropyCalibrator()


def input_shapes(proto: onnx.ModelProto, *, max_batch: int) -> dict[str, tuple[int, ...]]:
    """The image input's shape with a symbolic batch replaced by ``max_batch``."""
    for value in proto.graph.input:
        if value.name == INPUT_NAME:
            dims = value.type.tensor_type.shape.dim
            return {INPUT_NAME: tuple(d.dim_value if d.HasField("dim_value") else max_batch for d in dims)}
    raise ModelError(f"model has no input named {INPUT_NAME!r}; export it with 'perception export'")


def build_engine(
    onnx_bytes: bytes,
    *,
    precision: str,
    max_batch: int = 1,
    workspace_gib: float = DEFAULT_WORKSPACE_GIB,
    timing_cache_path: Path | None = None,
    calib_images: list[np.ndarray] | None = None,
    calib_cache_path: Path | None = None,
) -> bytes:
    """Build a serialized TensorRT engine from ONNX bytes.

    Args:
        precision: ``fp32``, ``fp16`` or ``int8``. For ``int8`` the ONNX should carry Q/DQ nodes
            (explicit quantisation); with ``calib_images`` the legacy entropy calibrator is used.
        max_batch: the largest batch of a dynamic-batch model (profile min 1, opt = max).
        timing_cache_path: read before and written after the build (speeds up rebuilds).

    Raises:
        DependencyError: no tensorrt / GPU. ModelError: the parser or the builder fails.
    """
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse the ONNX model: {errors[:400]}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    config.progress_monitor = _progress_monitor(trt)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # layers left in float run in FP16
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        if calib_images:
            if not hasattr(trt, "IInt8EntropyCalibrator2"):
                raise DependencyError(
                    "this TensorRT has no implicit INT8 calibration; build from the QDQ INT8 ONNX instead"
                )
            config.int8_calibrator = _entropy_calibrator(trt, calib_images, calib_cache_path or Path("calib.cache"))

    image = network.get_input(0)
    if any(d < 0 for d in image.shape):  # dynamic batch: one profile from 1 to max_batch
        profile = builder.create_optimization_profile()
        static = tuple(image.shape)[1:]
        profile.set_shape(image.name, (1, *static), (max_batch, *static), (max_batch, *static))
        config.add_optimization_profile(profile)
        if calib_images:
            config.set_calibration_profile(profile)

    timing_bytes = timing_cache_path.read_bytes() if timing_cache_path and timing_cache_path.is_file() else b""
    timing_cache = config.create_timing_cache(timing_bytes)
    config.set_timing_cache(timing_cache, ignore_mismatch=False)

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"TensorRT could not build a {precision} engine; run with -vv for the builder log")
    log.info("TensorRT %s engine built in %.1f s", precision, time.perf_counter() - start)
    if timing_cache_path is not None:
        timing_cache_path.parent.mkdir(parents=True, exist_ok=True)
        timing_cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def engine_for(
    onnx_path: str | Path,
    *,
    precision: str,
    cache: EngineCache | None = None,
    max_batch: int = 1,
    workspace_gib: float = DEFAULT_WORKSPACE_GIB,
    calib_images: list[np.ndarray] | None = None,
) -> tuple[Path, EngineKey, bool]:
    """The cached engine for ``onnx_path`` at ``precision``, building it when the key is new.

    Returns the engine path, its key and whether it was built now (False: loaded from cache).
    Raises as ``build_engine``.
    """
    trt = import_tensorrt()
    cache = cache or EngineCache()
    onnx_bytes = Path(onnx_path).read_bytes()
    gpu = gpu_name()
    shapes = input_shapes(onnx.load_from_string(onnx_bytes), max_batch=max_batch)
    key = engine_key(onnx_bytes, trt_version=trt.__version__, gpu_name=gpu, precision=precision, input_shapes=shapes)
    if cache.load(key) is not None:
        log.info("TensorRT engine for %s (%s) found in cache: %s", Path(onnx_path).name, precision, cache.engine_path(key))
        return cache.engine_path(key), key, False
    engine = build_engine(
        onnx_bytes,
        precision=precision,
        max_batch=max_batch,
        workspace_gib=workspace_gib,
        timing_cache_path=cache.timing_cache_path(trt_version=trt.__version__, gpu=gpu),
        calib_images=calib_images,
        calib_cache_path=cache.directory / f"{key.onnx_sha256[:16]}.calib",
    )
    return cache.store(key, engine), key, True
