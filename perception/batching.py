"""One engine for several cameras: the frames of all cameras batched into one inference.

What nvstreammux + nvinfer do in DeepStream, for the node's own pipelines. ``FrameBatcher`` owns
the one loaded engine and one thread that runs it; each camera's pipeline (``perception/pipeline.py``,
unchanged: its own source, keep-latest queue, seq, namespace and stats) gets a ``CameraEngine``
from ``batcher.camera_engine(i)`` in place of an engine. A camera's ``infer`` hands its
letterboxed frame to the batcher and waits for the batch that holds it.

Batching rule: a batch runs as soon as every active camera has handed in a frame, or
``timeout_ms`` after the batcher took the first frame of the batch, with the frames it holds then
(a late or dead camera delays the others by at most the timeout). A camera is active until its
pipeline's inference thread has ended (``set_active``): a camera whose input ended is not
waited for. Each camera has at most one frame in the batcher (its inference thread waits), so
nothing grows: a batch holds at most one frame per camera, and what a camera captures meanwhile
waits in its own bounded queue (``latest``: the newest kept, drops counted per camera).

A model exported with a fixed batch of 1 still serves every camera: the batch's frames run one by
one in the batcher's thread (logged once); ``perception export --dynamic-batch`` avoids that.

    batcher = FrameBatcher(engine, ["front", "rear"], timeout_ms=20)
    batcher.warmup(3)
    batcher.start()
    front = Pipeline(front_config, source=front_source, engine=batcher.camera_engine(0), publisher=...)
    ...
    batcher.close()   # after the pipelines have finished
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from perception.engines.base import Engine
from perception.errors import PerceptionError
from perception.stats import LatencyWindow
from perception.threadname import set_os_thread_name

log = logging.getLogger(__name__)

#: How often waiting threads look at the batcher's state when nothing wakes them.
POLL_S = 0.05


class BatcherClosed(PerceptionError):
    """A camera handed in a frame after the batcher was closed (its thread stopped)."""

    exit_code = 1


@dataclass
class _Request:
    """One camera's frame waiting in the batcher, and then its results."""

    camera: int
    image: np.ndarray  # H x W x 3 uint8, the camera's letterboxed frame
    handed_ns: int
    done: threading.Event
    outputs: dict[str, np.ndarray] | None = None
    error: BaseException | None = None
    wait_ms: float = 0.0
    infer_ms: float = 0.0


class FrameBatcher:
    """Runs one engine on the frames of several cameras (see the module docstring).

    Args:
        engine: the loaded engine (the caller closes it, after ``close``).
        cameras: the camera names, in the order of ``camera_engine`` indices.
        timeout_ms: how long a batch waits for late cameras (0: run at once with what is there).
    """

    def __init__(self, engine: Engine, cameras: Sequence[str], *, timeout_ms: float) -> None:
        if not cameras:
            raise ValueError("a FrameBatcher needs at least one camera")
        self.engine = engine
        self.cameras = tuple(cameras)
        self.timeout_s = max(0.0, timeout_ms) / 1e3
        h, w = engine.input_hw
        self._batch = np.zeros((len(self.cameras), h, w, 3), dtype=np.uint8)  # allocated once
        self._cond = threading.Condition()
        self._pending: dict[int, _Request] = {}
        self._active: list[Callable[[], bool]] = [lambda: True] * len(self.cameras)
        self._closed = False
        self._thread: threading.Thread | None = None
        self._fallback_logged = False
        # Figures for the stats documents (written by the batcher thread only).
        self.batches = 0
        self.frames = 0
        self.timed_out = 0
        self.sizes: Counter[int] = Counter()
        self._infer_ms = LatencyWindow(stages=("infer",))

    def camera_engine(self, index: int) -> CameraEngine:
        """The ``Engine`` camera ``index``'s pipeline runs on."""
        if not 0 <= index < len(self.cameras):
            raise IndexError(f"camera index {index} out of range 0..{len(self.cameras) - 1}")
        return CameraEngine(self, index)

    def set_active(self, index: int, active: Callable[[], bool]) -> None:
        """``active()`` says whether camera ``index`` may still hand in frames (checked while a batch
        waits; a camera not active is not waited for)."""
        self._active[index] = active

    def warmup(self, n: int) -> None:
        """Warm the engine up at batch 1 and at the full batch of all cameras, each the engine's
        checked run (``Engine.warmup``: at least one run, also at ``--warmup 0``; a backend's error
        is ``WarmupError``'s one line, outputs of another shape, the batch included, ``ModelError``):
        a model that runs one frame but fails at the cameras' batch stops the node before any frame.
        A fixed batch of 1 runs the cameras' frames one by one, which the batch-1 run has checked."""
        self.engine.warmup(n)
        if len(self.cameras) > 1 and self.engine.fixed_batch != 1:
            self.engine.warmup(n, batch=len(self.cameras))

    def start(self) -> None:
        """Start the batcher's thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="perception-batcher", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the thread; a frame still waiting gets ``BatcherClosed``. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            for request in self._pending.values():
                request.error = BatcherClosed("the batcher was closed before this frame ran")
                request.done.set()
            self._pending.clear()

    # ------------------------------------------------------------------ cameras' side

    def submit(self, index: int, batch: np.ndarray) -> _Request:
        """Hand in camera ``index``'s frame (``batch``: 1 x H x W x 3) and wait until its batch has
        run; the request with ``outputs`` (1 x ...) or the engine's ``error``.

        Raises:
            BatcherClosed: the batcher is closed.
        """
        request = _Request(camera=index, image=batch[0], handed_ns=time.monotonic_ns(), done=threading.Event())
        with self._cond:
            if self._closed:
                raise BatcherClosed("the batcher is closed")
            if index in self._pending:  # one inference thread per camera makes this a caller bug
                raise RuntimeError(f"camera {self.cameras[index]!r} handed in a frame while one was waiting")
            self._pending[index] = request
            self._cond.notify_all()
        while not request.done.wait(POLL_S):
            if self._thread is None or not self._thread.is_alive():
                with self._cond:
                    if not request.done.is_set():
                        self._pending.pop(index, None)
                        raise BatcherClosed("the batcher's thread is not running")
        return request

    # ------------------------------------------------------------------ the batcher's thread

    def _loop(self) -> None:
        set_os_thread_name("batcher")  # the cameras' shared inference, in top -H and bench's per-thread CPU
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: self._closed or self._pending, timeout=POLL_S):
                    continue
                if self._closed:
                    return
                deadline = time.monotonic() + self.timeout_s
                while not self._closed and not self._all_in():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    # A camera that stops being active does not notify: look again every 5 ms.
                    self._cond.wait(min(remaining, 0.005))
                if self._closed:
                    return
                timed_out = not self._all_in()
                taken = [self._pending.pop(i) for i in sorted(self._pending)]
            self._run(taken, timed_out=timed_out)

    def _all_in(self) -> bool:
        """Every camera that may still hand in a frame has one waiting (caller holds the lock)."""
        return all(i in self._pending or not self._active[i]() for i in range(len(self.cameras)))

    def _run(self, taken: list[_Request], *, timed_out: bool) -> None:
        k = len(taken)
        for j, request in enumerate(taken):
            self._batch[j] = request.image
        start_ns = time.monotonic_ns()
        try:
            fixed = self.engine.fixed_batch
            if fixed is not None and fixed != k and not self._fallback_logged:
                self._fallback_logged = True
                log.warning(
                    "%s has a fixed batch of %d: the frames of %d cameras run %s in one thread; "
                    "export it with 'perception export --dynamic-batch' to batch them",
                    self.engine.model_id, fixed, len(self.cameras), "one by one" if fixed == 1 else f"in chunks of {fixed}",
                )
            outputs = self.engine.infer(self._batch[:k])
        except BaseException as exc:  # handed to every camera of the batch: each counts a bad frame
            for request in taken:
                request.error = exc
                request.done.set()
            if not isinstance(exc, Exception):
                raise
            return
        end_ns = time.monotonic_ns()
        infer_ms = (end_ns - start_ns) / 1e6
        self.batches += 1
        self.frames += k
        self.sizes[k] += 1
        self.timed_out += timed_out
        self._infer_ms.add("infer", infer_ms)
        for j, request in enumerate(taken):
            request.outputs = {name: out[j : j + 1] for name, out in outputs.items()}
            request.wait_ms = (start_ns - request.handed_ns) / 1e6
            request.infer_ms = infer_ms
            request.done.set()

    def stats(self) -> dict:
        """The ``batching`` block of each camera's stats document: cameras, timeout, batches run,
        frames in them, mean batch size, batches per size, batches that ran on the timeout with a
        camera missing, the engine's fixed batch (None: dynamic) and the batch inference p50/p90/p99."""
        sizes = dict(self.sizes)
        return {
            "cameras": list(self.cameras),
            "timeout_ms": round(self.timeout_s * 1e3, 3),
            "batches": self.batches,
            "frames": self.frames,
            "mean_batch": round(self.frames / self.batches, 3) if self.batches else None,
            "batch_sizes": {str(size): sizes[size] for size in sorted(sizes)},
            "timed_out": self.timed_out,
            "fixed_batch": self.engine.fixed_batch,
            "infer_ms": self._infer_ms.percentiles().get("infer", {}),
        }


def _shared(name: str) -> property:
    """A ``CameraEngine`` attribute read from the batcher's shared engine at each use."""
    return property(lambda self: getattr(self.batcher.engine, name), doc=f"the shared engine's {name}")


class CameraEngine(Engine):
    """The engine one camera's pipeline sees: the shared engine's description, ``infer`` through
    the batcher. ``last_wait_ms`` is the latest frame's wait for its batch (the pipeline reports it
    as the ``batch`` stage, apart from ``infer``)."""

    def __init__(self, batcher: FrameBatcher, index: int) -> None:
        self.batcher = batcher
        self.index = index
        self.kind = batcher.engine.kind  # type: ignore[misc]  # the shared engine's registry name
        self.last_wait_ms: float | None = None

    # The shared engine's description, read through (not copied at start): its outputs decide the
    # unknown marking (a copy without output_names turned it off in every camera), and an
    # ``--engine auto`` engine changes precision and selection when it switches.
    metadata = _shared("metadata")
    input_spec = _shared("input_spec")
    output_names = _shared("output_names")
    provider = _shared("provider")
    model_path = _shared("model_path")
    precision = _shared("precision")
    selection = _shared("selection")
    fixed_batch = _shared("fixed_batch")

    @property
    def batching(self) -> dict:
        return self.batcher.stats()

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        request = self.batcher.submit(self.index, batch)
        if request.error is not None:
            raise request.error
        self.last_wait_ms = request.wait_ms
        assert request.outputs is not None  # set with done when there is no error
        return request.outputs

    def warmup(self, n: int = 3, **_: object) -> None:
        """Nothing: the batcher warms the shared engine up once for all cameras (``FrameBatcher.warmup``)."""

    def close(self) -> None:
        """Nothing: the shared engine belongs to the batcher's owner."""
