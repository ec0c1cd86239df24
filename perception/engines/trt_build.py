"""Step 4 of the export chain: TensorRT engines (FP32 / FP16 / INT8) built from the verified ONNX.

``engine_for(onnx_path, precision=...)`` returns a serialized engine from the cache
(``perception.engines.cache``, keyed by the TensorRT major version among other things) or builds one:
``trt.OnnxParser`` into a network, a builder config with a workspace limit, a persistent timing
cache, a progress monitor that logs each build phase (a long build is never silent), and
``build_serialized_network``.

TensorRT 10 and 11 are both supported; ``build_plan`` picks the route from ``trt.__version__``:

=========  =============================================  ==============================================
precision  TensorRT 10 (weakly typed network)             TensorRT 11 (strongly typed, always)
=========  =============================================  ==============================================
fp32       no precision flag                              the FP32 graph as it is
fp16       ``BuilderFlag.FP16``                           an FP16 graph from ``perception.engines.fp16`` (checked
                                                          against FP32 with ONNX Runtime first)
int8       ``BuilderFlag.FP16`` + ``BuilderFlag.INT8``    the explicit Q/DQ graph as it is
           on the explicit Q/DQ graph
=========  =============================================  ==============================================

Why: TensorRT 11 removed ``BuilderFlag.FP16``/``INT8``, ``IBuilderConfig.int8_calibrator`` and
``set_calibration_profile`` ("Removed Python APIs and Replacements",
https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html);
networks are strongly typed ("Migrating from Weak Typing to Strong Typing",
https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-patterns.html).
``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` exists in 10.x and is passed on the 11 branch
(https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Builder.html).
INT8 comes only from our explicit Q/DQ model (``perception.export.quantize.quantize_int8(...,
symmetric_activations=True)``) on both versions: the implicit ``IInt8EntropyCalibrator2`` route,
deprecated since 10.1 and gone in 11, is not used. APIs common to both (OnnxParser,
``create_builder_config``, ``set_memory_pool_limit``, ``IProgressMonitor``, timing caches,
optimization profiles, ``build_serialized_network``) are called the same way.

For onnxruntime-gpu users, ``ort_providers`` gives the TensorrtExecutionProvider /
CUDAExecutionProvider options with the engine and timing caches on.

tensorrt is imported lazily; without it (or without a GPU) the functions raise DependencyError.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from perception.contracts import INPUT_NAME
from perception.engines.cache import (
    TRT_CACHE,
    EngineCache,
    EngineKey,
    engine_key,
    gpu_name,
    make_private_dirs,
    os_cause,
    trt_major,
    trusted_entry,
    warn_once,
    write_private,
)
from perception.errors import GPU_INSTALL_HINT, DependencyError, ModelError

log = logging.getLogger(__name__)

MISSING_TENSORRT = f"TensorRT 10 or 11 is not installed: {GPU_INSTALL_HINT}"
#: TensorRT major versions this module builds for (pyproject's gpu extra says the same).
SUPPORTED_TRT_MAJORS = (10, 11)
#: Builder scratch memory limit.
DEFAULT_WORKSPACE_GIB = 2.0


def import_tensorrt():
    """The ``tensorrt`` module, or DependencyError with the install hint."""
    try:
        import tensorrt as trt
    except ImportError:
        raise DependencyError(MISSING_TENSORRT) from None
    return trt


def tensorrt_major(trt: Any) -> int:
    """The major version of the ``tensorrt`` module; DependencyError for one we do not support."""
    version = str(getattr(trt, "__version__", ""))
    try:
        major = trt_major(version)
    except ValueError:
        raise DependencyError(f"cannot read the TensorRT version {version!r}; reinstall TensorRT 10 or 11") from None
    if major not in SUPPORTED_TRT_MAJORS:
        raise DependencyError(
            f"TensorRT {version} is not supported; install TensorRT 10 or 11: {GPU_INSTALL_HINT}"
        )
    return major


@dataclass(frozen=True)
class BuildPlan:
    """How an engine of ``precision`` is built on TensorRT ``major`` (see the module docstring).

    ``builder_flags``: names of ``trt.BuilderFlag`` members to set (TensorRT 10 only);
    ``strongly_typed``: create the network with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``;
    ``fp16_onnx``: convert the ONNX graph to FP16 first; ``needs_qdq``: the ONNX must carry Q/DQ.
    """

    major: int
    precision: str
    builder_flags: tuple[str, ...] = ()
    strongly_typed: bool = False
    fp16_onnx: bool = False
    needs_qdq: bool = False


def build_plan(major: int, precision: str) -> BuildPlan:
    """The build route for TensorRT ``major`` and ``precision`` (``fp32``, ``fp16`` or ``int8``)."""
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision {precision!r} is not one of fp32, fp16, int8")
    if major >= 11:
        return BuildPlan(major, precision, strongly_typed=True, fp16_onnx=precision == "fp16",
                         needs_qdq=precision == "int8")
    flags = {"fp32": (), "fp16": ("FP16",), "int8": ("FP16", "INT8")}[precision]
    return BuildPlan(major, precision, builder_flags=flags, needs_qdq=precision == "int8")


def has_qdq(proto: onnx.ModelProto) -> bool:
    """Whether the graph is explicitly quantised (QuantizeLinear / DequantizeLinear nodes)."""
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in proto.graph.node)


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


def input_shapes(proto: onnx.ModelProto, *, max_batch: int) -> dict[str, tuple[int, ...]]:
    """The image input's shape with a symbolic batch replaced by ``max_batch``."""
    for value in proto.graph.input:
        if value.name == INPUT_NAME:
            dims = value.type.tensor_type.shape.dim
            return {INPUT_NAME: tuple(d.dim_value if d.HasField("dim_value") else max_batch for d in dims)}
    raise ModelError(f"model has no input named {INPUT_NAME!r}; export it with 'perception export'")




def fp16_graph(onnx_bytes: bytes, *, check_frames: int = 2) -> bytes:
    """The FP16 graph TensorRT 11 builds an FP16 engine from, checked against FP32 on the CPU.

    Raises:
        ModelError: class ids agree on fewer than ``perception.engines.fp16.MIN_FP16_AGREEMENT`` of pixels.
        DependencyError: onnxconverter-common is missing.
    """
    import cv2

    from perception.engines.fp16 import check_fp16, convert_fp16
    from perception.synthetic import render_scene

    fp32 = onnx.load_from_string(onnx_bytes)
    fp16 = convert_fp16(fp32)
    _, height, width, _ = input_shapes(fp32, max_batch=1)[INPUT_NAME]
    # Road scenes rendered at a camera size and fitted to any model input (the renderer has a minimum).
    frames = [cv2.resize(render_scene(seed, height=360, width=480)[0], (width, height))[None] for seed in range(check_frames)]
    check = check_fp16(fp32, fp16, frames)
    log.info("%s", check.line())
    if not check.passed:
        raise ModelError(f"{check.line()}; build an fp32 engine, or an int8 one from the Q/DQ model")
    return fp16.SerializeToString()


def build_engine(
    onnx_bytes: bytes,
    *,
    precision: str,
    max_batch: int = 1,
    workspace_gib: float = DEFAULT_WORKSPACE_GIB,
    timing_cache_path: Path | None = None,
) -> bytes:
    """Build a serialized TensorRT engine from ONNX bytes, by ``build_plan`` for this TensorRT.

    Args:
        precision: ``fp32``, ``fp16`` or ``int8``. For ``int8`` the ONNX must carry Q/DQ nodes
            (explicit quantisation; ``perception export --tensorrt --int8 --calib SPEC`` makes it).
        max_batch: the largest batch of a dynamic-batch model (profile min 1, opt = max).
        timing_cache_path: read before and written after the build (speeds up rebuilds).

    Raises:
        DependencyError: no tensorrt / GPU, or an unsupported TensorRT. ModelError: an INT8 build
        from a graph without Q/DQ, a failed FP16 check, or the parser or the builder fails.
    """
    trt = import_tensorrt()
    plan = build_plan(tensorrt_major(trt), precision)
    if plan.needs_qdq and not has_qdq(onnx.load_from_string(onnx_bytes)):
        raise ModelError(
            "INT8 engines are built only from an explicitly quantised (Q/DQ) ONNX; "
            "make one with 'perception export --tensorrt --int8 --calib SPEC'"
        )
    if plan.fp16_onnx:
        onnx_bytes = fp16_graph(onnx_bytes)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Explicit batch is the only mode since TensorRT 10; STRONGLY_TYPED is how 10.x opts in and
    # is always on in 11.x (Builder.html, NetworkDefinitionCreationFlag).
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse the ONNX model: {errors[:400]}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    config.progress_monitor = _progress_monitor(trt)
    for name in plan.builder_flags:  # TensorRT 10 only: weak typing lets layers run in FP16 / INT8
        config.set_flag(getattr(trt.BuilderFlag, name))

    image = network.get_input(0)
    if any(d < 0 for d in image.shape):  # dynamic batch: one profile from 1 to max_batch
        profile = builder.create_optimization_profile()
        static = tuple(image.shape)[1:]
        profile.set_shape(image.name, (1, *static), (max_batch, *static), (max_batch, *static))
        config.add_optimization_profile(profile)

    timing_bytes = (timing_cache_path.read_bytes() if timing_cache_path
                    and trusted_entry(timing_cache_path, TRT_CACHE, "timing the tactics again") else b"")
    timing_cache = config.create_timing_cache(timing_bytes)
    config.set_timing_cache(timing_cache, ignore_mismatch=False)

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"TensorRT could not build a {precision} engine; run with -vv for the builder log")
    log.info("TensorRT %s %s engine built in %.1f s (%s)", trt.__version__, precision, time.perf_counter() - start,
             "strongly typed" if plan.strongly_typed else "builder flags " + ",".join(plan.builder_flags or ("none",)))
    if timing_cache_path is not None:
        try:
            make_private_dirs(timing_cache_path.parent)
            write_private(timing_cache_path, bytes(config.get_timing_cache().serialize()))
        except OSError as exc:  # the engine is built: a timing cache that cannot be kept is a warning
            warn_once(f"cannot write the {TRT_CACHE} {timing_cache_path.parent} "
                      f"({os_cause(exc, timing_cache_path.parent)}); tactics are timed again at the next build")
    return bytes(serialized)


def engine_for(
    onnx_path: str | Path,
    *,
    precision: str,
    cache: EngineCache | None = None,
    max_batch: int = 1,
    workspace_gib: float = DEFAULT_WORKSPACE_GIB,
) -> tuple[Path, EngineKey, bool]:
    """The cached engine for ``onnx_path`` at ``precision``, building it when the key is new.

    Returns the engine path, its key and whether it was built now (False: loaded from cache).
    Raises as ``build_engine``.
    """
    trt = import_tensorrt()
    tensorrt_major(trt)  # an unsupported TensorRT fails here, before the GPU is queried
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
    )
    return cache.store(key, engine), key, True
