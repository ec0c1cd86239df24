"""The one small engine interface every inference backend implements (ONNX Runtime, TensorRT, torch).

``engine.infer(batch)`` takes uint8 N x H x W x 3 BGR frames (already fitted to ``input_spec``) and
returns ``{"class_ids": uint8 N x H x W}`` plus ``"confidence"`` when the model has it.
``engine.worker()`` hands out one more frame in flight (``--streams``): an object with the same
``infer`` that may run at the same time as the other workers' (each its own request or context).
``engine.metadata`` is the model's ``model_metadata.ModelMetadata``; ``engine.provider`` says what
actually runs it (e.g. ``CPUExecutionProvider``, ``tensorrt``, ``torch-cuda-fp16``).
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from perception.contracts import INPUT_DTYPE, OUTPUT_CLASS_IDS, OUTPUT_CONFIDENCE
from perception.errors import (
    ConfigError,
    ModelError,
    PerceptionError,
    ResourceError,
    memory_refused,
    thread_refused,
)
from perception.model_metadata import ModelMetadata
from perception.options import (  # noqa: F401 - declared there (light, shared with the configs), used from here
    COMPILE_CHOICES,
    PRECISION_CHOICES,
    PROVIDER_CHOICES,
    EngineOptions,
    PrecisionName,
    ProviderName,
)

#: Suffix of the INT8 sibling that ``perception export --int8`` writes next to ``model.onnx``.
INT8_SUFFIX = ".int8.onnx"


_warned_int8_saturation = False


def warn_int8_saturation(log: logging.Logger, metadata: ModelMetadata) -> None:
    """Log once per process why INT8 class ids may drift from FP32 on this CPU (no VNNI), if so:
    not for a file whose gate found it saturation-safe (``val_metrics["int8_gate"]``)."""
    global _warned_int8_saturation
    from perception.engines.cpu import int8_saturation_warning

    safe = bool((metadata.val_metrics.get("int8_gate") or {}).get("saturation_safe"))
    if not _warned_int8_saturation and (message := int8_saturation_warning(safe)):
        _warned_int8_saturation = True
        log.warning(message)


_warned_int8_as_float: set[str] = set()


def warn_int8_file_for_float(log: logging.Logger, path: Path, precision: str, runtime: str) -> None:
    """Log once per file and process that ``--precision {precision}`` asked a float run of the
    INT8 file ``path``, which ``runtime`` runs as it is: its weights are 8-bit, so the engine runs
    INT8 and its stats say ``int8``. Said rather than refused: ``--engine auto``'s probe and
    ``bench engine`` ask for ``fp32`` too, meaning the file as it is."""
    if str(path) not in _warned_int8_as_float:
        _warned_int8_as_float.add(str(path))
        fp32 = path.name.removesuffix(INT8_SUFFIX) + ".onnx" if path.name.endswith(INT8_SUFFIX) else "the model it was quantised from"
        log.warning("--precision %s: %s is an INT8 model (8-bit weights), so %s runs it in INT8 and the stats say int8; "
                    "for %s, run its FP32 model (%s)", precision, path.name, runtime, precision, fp32)


def usable_cores() -> int:
    """The CPU cores this process can keep busy: its affinity (the machine's count where there is
    none), or fewer under a cgroup CPU quota (``ceil(quota)``: 1 under 0.5 CPU; perception/cgroups.py)."""
    from perception.cgroups import usable_cores as cores

    return cores()


def quota_threads() -> int:
    """The threads an engine should run when ``--threads`` is 0 and a cgroup CPU quota allows
    fewer cores than this process's affinity (ONNX Runtime and OpenVINO size their default by the
    cores and read no quota): the usable cores; 0 (the backend's default) otherwise."""
    from perception import cgroups

    cores = usable_cores()
    return cores if cores < cgroups.affinity_cores() else 0


def warn_threads_over_cores(log: logging.Logger, threads: list[int], effect: str) -> None:
    """One warning when a ``--threads`` value is more than the cores this process may run on: the
    threads then take turns on the cores (256 threads on 2 cores: p50 197 ms against 30-50 ms at 2).
    ``effect``: what that means to the caller (bench: its rows; run: the node), ``%d`` the cores."""
    from perception.cgroups import quota_note

    cores = usable_cores()
    over = [t for t in threads if t > cores]
    if over:
        log.warning("--threads %s: more than the %d CPU cores this process may use%s; %s", ",".join(map(str, over)),
                    cores, quota_note(), effect % cores)


def int8_model_path(path: Path) -> Path:
    """The INT8 model to run for ``path``: ``path`` itself when its metadata says ``int8``, else the
    ``<stem>.int8.onnx`` sibling that ``perception export --int8`` writes, once
    ``check_int8_sibling`` found it quantised from ``path``.

    Raises:
        ModelError: ``path`` is not INT8 and has no INT8 sibling, or the sibling is another model's.
    """
    from perception.modelfile import read_model_metadata

    metadata = read_model_metadata(path)
    if metadata.precision == "int8":
        return path
    sibling = path.with_name(path.name.removesuffix(".onnx") + INT8_SUFFIX)
    if not sibling.is_file():
        raise ModelError(
            f"--precision int8: {path.name} is {metadata.precision} and there is no {sibling.name} "
            f"beside it; write one with 'python -m perception.export.quantize {path}' or 'perception export --int8'"
        )
    check_int8_sibling(path, sibling, metadata)
    return sibling


#: The metadata an INT8 file keeps from the FP32 file it was quantised from (``export.graph.with_precision``
#: changes only the precision, the time stamp and the tool versions; the gate adds
#: ``val_metrics["int8_gate"]``): what model it is, its classes, its input and how it was trained.
INT8_IDENTITY_FIELDS = ("model_name", "dataset", "input_hw", "class_table", "model_kwargs", "mean", "std",
                        "logit_adjust")


def int8_differences(fp32: ModelMetadata, int8: ModelMetadata) -> list[str]:
    """How the INT8 file's metadata ``int8`` shows it was not quantised from the model of ``fp32``
    (empty: it was, as far as the metadata tells). The confidence output, the unknown threshold and
    the batch are left out: the tools that add them to an FP32 file leave its INT8 file as it was,
    and the engines say so on their own."""
    found = [] if int8.precision == "int8" else [f"precision {int8.precision!r:.20} in the INT8 file"]
    for name in INT8_IDENTITY_FIELDS:
        a, b = getattr(fp32, name), getattr(int8, name)
        if a == b:
            continue
        if name == "class_table" and a.num_classes != b.num_classes:
            found.append(f"{a.num_classes} / {b.num_classes} classes")
        elif name == "class_table" and a.names != b.names:
            i = next(i for i, (x, y) in enumerate(zip(a.names, b.names, strict=True)) if x != y)
            found.append(f"class {i} {a.names[i]!r} / {b.names[i]!r}")
        elif name == "class_table":
            found.append("class colours, ignore id or task groups")
        elif name in ("model_name", "dataset"):
            found.append(f"{name} {a!r:.50} / {b!r:.50}")
        elif name == "input_hw":
            found.append(f"input {a[0]}x{a[1]} / {b[0]}x{b[1]}")
        else:
            found.append(f"{name} differs")

    def trained(m: ModelMetadata) -> dict:
        return {k: v for k, v in m.val_metrics.items() if k != "int8_gate"}

    if trained(fp32) != trained(int8):
        found.append("the checkpoint's validation figures differ (another training run)")
    return found


def check_int8_sibling(path: Path, sibling: Path, metadata: ModelMetadata | None = None) -> None:
    """ModelError (one line, both files and the fix) unless ``sibling``'s metadata shows it quantised
    from ``path`` (``int8_differences``; ``metadata``: ``path``'s, when already read). The engines
    pair the two files by name, so a model copied over ``path`` with its old INT8 file left beside
    it would otherwise run another model under ``--precision int8``."""
    from perception.modelfile import read_model_metadata

    differences = int8_differences(metadata or read_model_metadata(path), read_model_metadata(sibling))
    if differences:
        raise ModelError(
            f"--precision int8: {sibling.name} beside {path.name} was not quantised from it ({path.name} / {sibling.name}: "
            f"{'; '.join(differences)}): "
            f"it is left from another model; quantise this one again with 'python -m perception.export.quantize {path} "
            f"--calib SPEC' (or perception export --int8), or remove {sibling}"
        )


#: ONNX Runtime's status prefix (``[ONNXRuntimeError] : 1 : FAIL : ``) and a C++ source location
#: (``/onnxruntime_src/.../model_load_utils.h:46 `` or ``tensorprotoutils.cc:619 ``) in its messages.
_ORT_STATUS = re.compile(r"\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
_SOURCE_LOCATION = re.compile(r"(?:/[^\s:]*/)?[\w.+-]+\.(?:cc|cpp|cxx|c|h|hpp|cu|cuh):\d+\s+")
#: A function named after a source location without its signature (``GetExtDataFromTensorProto``,
#: ``operator()``): CamelCase with two capitals or more, a qualified name, or a call.
_BARE_FUNCTION = re.compile(r"(?:[A-Za-z_]\w*::)*(?:[a-z_]*[A-Z]\w*[A-Z]\w*|operator\W*\(\)|\w+::\w+)\s+")


def backend_error_text(exc: BaseException, limit: int = 300) -> str:
    """A backend's error as one line that keeps its cause: ONNX Runtime's status prefixes and the
    C++ source locations and signatures before its words are dropped (they filled the first 200
    characters and cut off "Current official support for domain ai.onnx is till opset 28"), the
    lines joined, and what is left cut to ``limit`` characters."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    text = _ORT_STATUS.sub("", text)
    out, pos = [], 0
    for match in _SOURCE_LOCATION.finditer(text):
        if match.start() < pos:
            continue
        out.append(text[pos:match.start()])
        pos = _skip_signature(text, match.end())
    out.append(text[pos:])
    text = re.sub(r"\s+", " ", " ".join(part.strip() for part in out if part.strip())).strip()
    text = re.sub(r"\s+([:.,;])", r"\1", text)
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _skip_signature(text: str, start: int) -> int:
    """Where the words after a C++ source location begin: past the function signature
    (``void a::b::F(const std::x&, int) const``) or bare function name that follows it."""
    paren = text.find("(", start)
    head = text[start:paren] if paren >= 0 else ""
    if paren >= 0 and "::" in head and len(head) <= 300 and '"' not in head:
        depth = 0
        for i in range(paren, len(text)):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            if depth == 0:
                end = i + 1
                if text.startswith(" const", end):
                    end += len(" const")
                return end
        return len(text)
    bare = _BARE_FUNCTION.match(text, start)
    return bare.end() if bare else start


#: What a ``WarmupError`` suggests to a command with ``--engine`` (``run``, ``bench``) ...
WARMUP_FIX = "check the file with perception inspect, or try another --engine"
#: ... and to one without (``eval``, ``export.unknown``'s threshold search): no flag it lacks.
WARMUP_FIX_NO_ENGINE = "check the file with perception inspect"


#: A backend's words for a thread the system refused it (ONNX Runtime: "pthread_create failed, error
#: code: 11 error msg: Resource temporarily unavailable" under ``ulimit -u``) and for memory it was
#: refused ("Failed to allocate memory for requested buffer of size N" under ``ulimit -v``,
#: std::bad_alloc): a system limit, not a damaged model.
_THREAD_REFUSED_TEXT = re.compile(r"pthread_create failed|Resource temporarily unavailable|can't start new thread")
_MEMORY_REFUSED_TEXT = re.compile(r"Failed to allocate memory|bad_alloc|Cannot allocate memory|out of memory", re.I)


def resource_refused(exc: BaseException, what: str) -> ResourceError | None:
    """The one-line ResourceError (exit 1: a launch file's respawn may find the limit no longer
    reached) when ``exc``, a backend's error while ``what`` (``loading default.onnx on ort``), says the
    system refused a thread or memory; None for any other error."""
    text, reason = str(exc), backend_error_text(exc, 160)
    if isinstance(exc, MemoryError) or _MEMORY_REFUSED_TEXT.search(text):
        error = ResourceError(memory_refused(reason, what))
    elif _THREAD_REFUSED_TEXT.search(text):
        error = ResourceError(f"{thread_refused(f'the threads for {what}')} ({reason})")
    else:
        return None
    error.reason = reason  # the backend's own words, as WarmupError's (what --engine auto's switch says)
    return error


class WarmupError(ModelError):
    """A model that passed every check but whose first inference failed in its backend: one line
    naming the file, with the backend's error (``reason``: its lines joined, the first 300
    characters; OpenVINO's first line only says where in its sources it raised) inside, ending in
    ``fix`` (the caller's: ``WARMUP_FIX`` names ``--engine``, ``WARMUP_FIX_NO_ENGINE`` does not)."""

    def __init__(self, model_path: str, kind: str, exc: BaseException, fix: str = WARMUP_FIX, batch: int = 1) -> None:
        self.reason = backend_error_text(exc)
        at = f" at batch {batch}" if batch != 1 else ""
        super().__init__(f"{model_path}: the first inference on {kind}{at} failed ({type(exc).__name__}: {self.reason}); "
                         f"{fix}")


def warmup_runs(n: int) -> int:
    """The dummy runs ``Engine.warmup(n)`` makes: ``n``, and one for ``n`` 0, because the first run
    is also the node's check of the model (its backend runs it, its outputs are the uint8 1 x H x W
    its graph declares): ``--warmup 0`` skips the warm-up, never the check."""
    return max(n, 1)


@dataclass(frozen=True)
class InputSpec:
    """The engine's input tensor: name, shape (None for a dynamic dimension) and numpy dtype name."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str


def check_input_spec(spec: InputSpec, metadata: ModelMetadata, *, source: str) -> None:
    """ModelError naming ``source`` unless ``spec`` is the contract's uint8 N x H x W x 3 input."""
    h, w = metadata.input_hw
    if spec.dtype != INPUT_DTYPE or len(spec.shape) != 4 or tuple(spec.shape[1:]) != (h, w, 3):
        shape = ["?" if d is None else d for d in spec.shape]
        raise ModelError(
            f"{source}: input {spec.name!r} is {spec.dtype} {shape}, the node needs uint8 [N, {h}, {w}, 3] "
            "(NHWC, BGR); export the model with 'perception export'"
        )


def infer_in_fixed_batches(run, batch: np.ndarray, fixed: int | None) -> dict[str, np.ndarray]:
    """``run(batch)`` for a model whose batch is ``fixed`` (None: dynamic, one call), on any N frames:
    chunks of ``fixed`` frames one after the other in this thread, the last chunk padded with
    blank frames whose outputs are dropped, the results stacked in frame order."""
    n = batch.shape[0]
    if fixed is None or n == fixed:
        return run(batch)
    parts = []
    for start in range(0, n, fixed):
        chunk = batch[start : start + fixed]
        real = chunk.shape[0]
        if real < fixed:
            chunk = np.concatenate([chunk, np.zeros((fixed - real, *chunk.shape[1:]), dtype=chunk.dtype)])
        parts.append({name: out[:real] for name, out in run(chunk).items()})
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


class InferWorker(Protocol):
    """One frame in flight (``Engine.worker``): ``infer`` as the engine's, on its own context."""

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...


def refuse_streams(options: EngineOptions, kind: str, why: str) -> None:
    """ConfigError when ``options.streams`` asks engine ``kind`` for more than one frame in flight
    (``why``: what it runs frames on)."""
    if options.streams > 1:
        raise ConfigError(f"--engine {kind} runs one frame at a time ({why}); drop --streams {options.streams} "
                          "or use --engine openvino, ort or auto")


class Engine(ABC):
    """A loaded model ready to run. Subclasses set ``metadata``, ``input_spec``, ``provider``."""

    kind: ClassVar[str] = ""
    metadata: ModelMetadata
    input_spec: InputSpec
    provider: str
    model_path: str
    #: The arithmetic it runs in (``fp32``, ``bf16``, ``int8``...); backends that choose set it.
    precision: str = ""
    #: ``--engine auto``'s verdict (``engines.auto.Selection.to_dict()``), published in the stats.
    selection: dict | None = None
    #: The outputs ``infer`` returns, in the contract's order: ``class_ids``, then ``confidence``
    #: when the model has it (each backend sets it from the graph it loaded).
    output_names: tuple[str, ...] = (OUTPUT_CLASS_IDS,)
    #: Frames it was built to run at once (``--streams``; the node takes that many ``worker()``s).
    streams: int = 1

    @abstractmethod
    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on ``batch`` (uint8 N x H x W x 3 BGR); returns uint8 ``class_ids`` N x H x W
        (and ``confidence`` when the model has it)."""

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.metadata.input_hw

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model was exported with, or None for a dynamic batch (``perception
        export --dynamic-batch``). ``infer`` takes any N either way (see ``infer_in_fixed_batches``)."""
        return self.input_spec.shape[0]

    def infer_any_batch(self, run, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``run`` (the backend's one call) on any N frames, whatever ``fixed_batch`` is
        (``infer_in_fixed_batches``); backends' ``infer`` is this over their own call."""
        return infer_in_fixed_batches(run, batch, self.fixed_batch)

    @property
    def model_id(self) -> str:
        return self.metadata.model_id

    @property
    def has_confidence(self) -> bool:
        """True when ``infer`` also returns the per-pixel ``confidence`` (what unknown marking needs)."""
        return OUTPUT_CONFIDENCE in self.output_names

    def warmup(self, n: int = 3, *, fix: str = WARMUP_FIX, batch: int = 1) -> None:
        """Run ``n`` dummy batches of ``batch`` frames (at least one: ``warmup_runs``) so that lazy
        allocation and kernel selection happen before real frames, each checked (``check_outputs``,
        at that batch: a node with several cameras, or ``bench engine --batch N``, checks at the
        batch it runs). A backend's error is ``WarmupError`` ending in ``fix``."""
        self._checked_runs(self.infer, n, fix, batch=batch)

    def _checked_runs(self, infer, n: int, fix: str = WARMUP_FIX, *, batch: int = 1) -> None:
        """``warmup_runs(n)`` checked runs of ``infer`` (the engine's or a worker's) on ``batch``
        blank frames."""
        h, w = self.input_hw
        frames = np.zeros((batch, h, w, 3), dtype=np.uint8)
        try:
            for _ in range(warmup_runs(n)):
                self.check_outputs(infer(frames), batch=batch)
        except (PerceptionError, AssertionError, AttributeError, NameError, TypeError):
            raise  # ours, or a bug in this code, whose traceback is the report (errors.py)
        except Exception as exc:  # each backend raises its own types (ORT's Fail, OpenVINO's RuntimeError, ...)
            refused = resource_refused(exc, f"running the first inference of {Path(self.model_path).name} on {self.kind}")
            if refused is not None:  # a thread or memory the system refused, not the model's fault
                raise refused from exc
            raise WarmupError(self.model_path, self.kind, exc, fix, batch) from exc

    def check_outputs(self, outputs: dict[str, np.ndarray], *, batch: int = 1) -> None:
        """ModelError unless the outputs of ``batch`` frames are what the contract says: uint8
        batch x H x W, the batch dimension included (a graph may declare that and compute another
        shape, or one row whatever the batch; the mask stage would fail on every frame). An empty
        output (OpenVINO's answer when it cannot allocate) is said as such, not blamed on the model."""
        h, w = self.input_hw
        for name in self.output_names:
            out = outputs.get(name)
            if out is not None and out.size == 0 and batch > 0:
                raise ModelError(f"{self.model_path}: {self.kind} returned no output for {name!r} (an empty "
                                 f"{out.dtype} {tuple(out.shape)} array; likely out of memory); free memory, "
                                 "or try a smaller model or another --engine")
            if out is None or out.dtype != np.uint8 or out.shape != (batch, h, w):
                got = "missing" if out is None else f"{out.dtype} {tuple(out.shape)}"
                at = f" at batch {batch}" if batch != 1 else ""
                raise ModelError(f"{self.model_path}: output {name!r} is {got} when it runs{at}, the node needs uint8 "
                                 f"({batch}, {h}, {w}) as its graph declares; re-export the model")

    def worker(self) -> InferWorker:
        """One more frame in flight: an object whose ``infer`` may run while other workers' (and
        this engine's) run, each on its own request or context; the node takes ``streams`` of them.
        Its outputs stay valid after its next call (the publish stage still reads them).

        Raises:
            ConfigError: the engine runs one frame at a time (the base class's answer).
        """
        raise ConfigError(f"--engine {self.kind} runs one frame at a time; use --streams 1")

    def warm_workers(self, workers: list[InferWorker], n: int) -> None:
        """``n`` dummy runs on each worker (at least one, the check: ``warmup_runs``; its own request
        allocates and picks kernels on its first run), the workers at once as the node runs them; a
        backend's error is ``WarmupError``, as ``warmup``'s. OpenVINO INT8, 2 streams, default
        model, 2-core Xeon, 3 alternating starts each: 163-226 ms at once, 199-294 ms one after the other."""
        import threading

        errors: list[BaseException] = []

        def warm(worker: InferWorker) -> None:
            try:
                self._checked_runs(worker.infer, n)
            except BaseException as exc:  # raised below, in the caller's thread
                errors.append(exc)

        threads = [threading.Thread(target=warm, args=(wk,), name="perception-warmup") for wk in workers[1:]]
        for t in threads:
            t.start()
        warm(workers[0])
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    @abstractmethod
    def close(self) -> None:
        """Release backend resources (sessions, device memory)."""

    def describe(self) -> str:
        precision = self.precision or self.metadata.precision
        return f"{self.kind} engine on {self.provider} ({precision}): {self.model_id} ({self.model_path})"
