"""The one small engine interface every inference backend implements (ONNX Runtime, TensorRT, torch).

``engine.infer(batch)`` takes uint8 N x H x W x 3 BGR frames (already fitted to ``input_spec``) and
returns ``{"class_ids": uint8 N x H x W}`` plus ``"confidence"`` when the model has it.
``engine.worker()`` hands out one more frame in flight (``--streams``): an object with the same
``infer`` that may run at the same time as the other workers' (each its own request or context).
``engine.metadata`` is the model's ``contracts.ModelMetadata``; ``engine.provider`` says what
actually runs it (e.g. ``CPUExecutionProvider``, ``tensorrt``, ``torch-cuda-fp16``).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from perception.contracts import INPUT_DTYPE, OUTPUT_CLASS_IDS, OUTPUT_CONFIDENCE, ModelMetadata
from perception.errors import ConfigError, ModelError, PerceptionError
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


def int8_model_path(path: Path) -> Path:
    """The INT8 model to run for ``path``: ``path`` itself when its metadata says ``int8``, else the
    ``<stem>.int8.onnx`` sibling that ``perception export --int8`` writes.

    Raises:
        ModelError: ``path`` is not INT8 and has no INT8 sibling.
    """
    from perception.modelfile import read_model_metadata

    if read_model_metadata(path).precision == "int8":
        return path
    sibling = path.with_name(path.name.removesuffix(".onnx") + INT8_SUFFIX)
    if not sibling.is_file():
        raise ModelError(
            f"--precision int8: {path.name} is {read_model_metadata(path).precision} and there is no {sibling.name} "
            f"beside it; write one with 'python -m perception.export.quantize {path}' or 'perception export --int8'"
        )
    return sibling


class WarmupError(ModelError):
    """A model that passed every check but whose first inference failed in its backend: one line
    naming the file, with the backend's error (``reason``: its lines joined, the first 300
    characters; OpenVINO's first line only says where in its sources it raised) inside."""

    def __init__(self, model_path: str, kind: str, exc: BaseException) -> None:
        self.reason = (" ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__)[:300]
        super().__init__(f"{model_path}: the first inference on {kind} failed ({type(exc).__name__}: {self.reason}); "
                         "check the file with perception inspect, or try another --engine")


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

    def warmup(self, n: int = 3) -> None:
        """Run ``n`` dummy batches so that lazy allocation and kernel selection happen before real frames."""
        h, w = self.input_hw
        batch = np.zeros((1, h, w, 3), dtype=np.uint8)
        try:
            for _ in range(n):
                self.check_outputs(self.infer(batch))
        except (PerceptionError, AssertionError, AttributeError, NameError, TypeError):
            raise  # ours, or a bug in this code, whose traceback is the report (errors.py)
        except Exception as exc:  # each backend raises its own types (ORT's Fail, OpenVINO's RuntimeError, ...)
            raise WarmupError(self.model_path, self.kind, exc) from exc

    def check_outputs(self, outputs: dict[str, np.ndarray]) -> None:
        """ModelError unless the outputs of one frame are what the contract says: uint8 1 x H x W.
        A graph may declare that and compute another shape; the mask stage would fail on every frame."""
        h, w = self.input_hw
        for name in self.output_names:
            out = outputs.get(name)
            if out is None or out.dtype != np.uint8 or out.shape != (1, h, w):
                got = "missing" if out is None else f"{out.dtype} {tuple(out.shape)}"
                raise ModelError(f"{self.model_path}: output {name!r} is {got} when it runs, the node needs uint8 "
                                 f"(1, {h}, {w}) as its graph declares; re-export the model")

    def worker(self) -> InferWorker:
        """One more frame in flight: an object whose ``infer`` may run while other workers' (and
        this engine's) run, each on its own request or context; the node takes ``streams`` of them.
        Its outputs stay valid after its next call (the publish stage still reads them).

        Raises:
            ConfigError: the engine runs one frame at a time (the base class's answer).
        """
        raise ConfigError(f"--engine {self.kind} runs one frame at a time; use --streams 1")

    def warm_workers(self, workers: list[InferWorker], n: int) -> None:
        """``n`` dummy runs on each worker (its own request allocates and picks kernels on its first
        run), the workers at once as the node runs them. OpenVINO INT8, 2 streams, default model,
        2-core Xeon, 3 alternating starts each: 163-226 ms at once, 199-294 ms one after the other."""
        import threading

        h, w = self.input_hw
        batch = np.zeros((1, h, w, 3), dtype=np.uint8)
        errors: list[BaseException] = []

        def warm(worker: InferWorker) -> None:
            try:
                for _ in range(n):
                    self.check_outputs(worker.infer(batch))
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
