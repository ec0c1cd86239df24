"""``--engine auto``'s first start: ONNX Runtime FP32 runs at once while the probe runs in a child
process, and the verified winner takes over between two frames (``SwitchingEngine``).

The probe and its verdict are ``perception.engines.auto``'s, their cache
``perception.engines.probe_cache``'s; this module only runs the node meanwhile and swaps engines.
It calls the probe module's functions through the module, so there is one probe command and one
verdict reader.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from perception.engines import auto, cache, probe, probe_cache, probe_verdict
from perception.engines.base import Engine, EngineOptions, WarmupError
from perception.errors import PerceptionError, ResourceError
from perception.threadname import set_os_thread_name

log = logging.getLogger("perception.engines.auto")  # one logger name for all of --engine auto


#: ``nice`` increment of the background probe child. 0 (the node's own priority), measured: at
#: nice 10 on the 2-core Xeon the probe beside a busy node took 21 s instead of 13, and its
#: starved, preempted timings ranked ONNX Runtime FP32 first (then cached that verdict), while
#: at 0 it ranked OpenVINO INT8 first, as a quiet probe does.
BACKGROUND_PROBE_NICE = 0
#: The probe judges the candidates' class ids on the node's own frames, not on rendered scenes:
#: a model trained on real roads is unsure on those, and its INT8 and bf16 answers flip there
#: (the CamVid LiteFPN on the 2-core Xeon, against ORT FP32: INT8 88.0 % on rendered scenes, 98.96 %
#: on CamVid val frames; bf16 97.75 % against 99.69 %), so the probe rejected candidates that are
#: right on the road the node sees. It takes every ``PROBE_FRAME_STRIDE``-th model input (the
#: warm-up's blank frames skipped; neighbours at 30 FPS are near copies, and agreement depends on
#: the scene: the same INT8 file agrees 97.4 % on CamVid's dusk sequence, 98.6 % over all of it)
#: until it has ``probe.PROBE_FRAMES`` (80 inputs: 3-4 s of a first start on FP32), or what it has
#: after ``PROBE_FRAMES_WAIT_S``; with none, the rendered scenes. The wait delays the switch: with
#: every 10th input and 8 s, the default model's first start had not switched after 30 s (its probe
#: takes about 20 s beside the node).
PROBE_FRAME_STRIDE = 5
PROBE_FRAMES_WAIT_S = 4.0
def release_free_heap() -> None:
    """Hand the heap pages that the C allocator holds free back to the system (glibc's
    ``malloc_trim``; nothing elsewhere). Python and the decoders free plenty while the node runs,
    and glibc keeps it: 2.7 MB after 100 frames of ONNX Runtime on the default model, measured,
    which is what the first start's peak (both engines loaded at the switch) stood over 250 MB by.
    Not in the standard library, hence ctypes."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # musl and other C libraries have no malloc_trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class SwitchingEngine(Engine):
    """``--engine auto`` at a first start (no cached verdict): ONNX Runtime FP32 runs at once while
    the probe runs in a child process; the verified winner takes over between two frames.

    The probe child is the same as ``probe_in_child``'s (it writes the cache, so the next start
    loads the winner directly). When its verdict arrives, a watcher thread imports the winner's
    library; the next ``infer`` call closes ONNX Runtime, then loads the winner (from the
    compiled-model caches the child filled) and runs it (``_switch``), so no frame is lost or run
    twice and the two engines are never in memory at once. The switch is logged once and
    the stats document's ``engine``, ``precision`` and ``engine_selection`` follow it. A probe that
    fails, or a winner that cannot be loaded or run, leaves ONNX Runtime FP32 running; the reason is
    logged and published (``engine_selection.state`` ``failed``). ``close`` stops a probe still
    running (the next start probes again).
    """

    def __init__(self, model_path: Path, options: EngineOptions, *, cache_dir: Path | None, key: dict) -> None:
        self._model_path, self._options, self._key = model_path, options, key
        self._current: Engine = self._reference()
        self.streams = options.streams
        #: The verdict to switch to (its candidate and ``engine_selection`` document), once the
        #: watcher has it and has imported what loading it needs.
        self._pending: tuple[probe_verdict.Candidate, dict] | None = None
        #: Calls running now on each engine (by id), and the engine switched away from while some
        #: still ran on it: the last of them closes it (``_leave``).
        self._running: dict[int, int] = {}
        self._retired: Engine | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._started = time.monotonic()
        #: ``infer`` calls so far (warm-up runs included), and how many ran before the winner took over.
        self.calls = 0
        self.switched_at_call: int | None = None
        running = self._current.precision or probe_verdict.REFERENCE[1]  # what runs: int8 for an INT8 file
        self._running_name = f"ONNX Runtime {running.upper()}"
        # as the probe names it (probe_verdict.ran_label): ort-int8 for an INT8 file, which the reference runs as it is
        self._running_label = f"{probe_verdict.REFERENCE[0]}-{running}"
        self._selection: dict = {
            "engine": probe_verdict.REFERENCE[0], "precision": running, "state": "probing", "from_cache": False,
            "reason": "first start for this model and machine: probing the engines in the background; "
                      f"{self._running_name} runs meanwhile",
        }
        self._cache_dir = cache_dir
        self._proc: subprocess.Popen | None = None
        #: The node's inputs the probe is to judge on (``PROBE_FRAME_STRIDE``), until ``_frames_ready``.
        self._probe_frames: list[np.ndarray] = []
        self._seen = 0
        self._frames_ready = threading.Event()
        self._frames_file: Path | None = None
        self._watcher = threading.Thread(target=self._watch, name="perception-probe", daemon=True)
        self._watcher.start()
        log.info("--engine auto: first start for %s here; running %s while the engines are probed "
                 "in the background on the node's first frames", model_path.name, self._running_name)

    # Everything the node reads follows the engine running now.
    kind = property(lambda self: self._current.kind)  # type: ignore[assignment]
    metadata = property(lambda self: self._current.metadata)  # type: ignore[assignment]
    input_spec = property(lambda self: self._current.input_spec)  # type: ignore[assignment]
    provider = property(lambda self: self._current.provider)  # type: ignore[assignment]
    precision = property(lambda self: self._current.precision)  # type: ignore[assignment]
    model_path = property(lambda self: self._current.model_path)  # type: ignore[assignment]
    output_names = property(lambda self: self._current.output_names)  # type: ignore[assignment]
    selection = property(lambda self: self._selection)  # type: ignore[assignment]

    def _reference(self) -> Engine:
        """ONNX Runtime FP32, the engine that runs until (and unless) the winner takes over."""
        from perception.engines.ort import OrtEngine

        # Without ONNX Runtime's memory arena: with it, closing the session gave back 14 of the node's
        # 198 MB and the switch peaked at 265 MB; without it, 79 MB and 242 MB (default model, OpenVINO
        # INT8 after it, 2-core Xeon; at the same speed: 40.7 against 41.8 ms p50 in one run).
        # The file as it is ("auto", as probe.load_candidate loads the reference): asked "fp32", an INT8
        # file warned about a --precision fp32 nobody gave; a --precision the user gave still warns.
        precision = "auto" if self._options.precision == "auto" else "fp32"
        return OrtEngine(self._model_path, EngineOptions(
            provider="cpu", threads=self._options.threads, precision=precision, streams=self._options.streams),
            memory_arena=False)

    def _fail(self, why: str, then: str = "the next start probes again") -> None:
        log.warning("--engine auto: %s; %s keeps running (%s)", why, self._running_name, then)
        self._selection = {**self._selection, "state": "failed", "reason": f"{why}; {self._running_name} kept"}

    def _collect(self, batch: np.ndarray) -> None:
        """Keep a copy of every ``PROBE_FRAME_STRIDE``-th input for the probe (caller holds the lock)."""
        for image in batch:
            if not image.any():  # a warm-up run's blank frame
                continue
            if self._seen % PROBE_FRAME_STRIDE == 0:
                self._probe_frames.append(image[None].copy())
                if len(self._probe_frames) >= probe.PROBE_FRAMES:
                    self._frames_ready.set()
                    return
            self._seen += 1

    def _start_probe(self) -> bool:
        """Start the probe child on the frames collected so far (written to a temporary .npy that
        ``_watch`` removes); False when the node closed first or it could not start (reported)."""
        self._frames_ready.wait(PROBE_FRAMES_WAIT_S)
        with self._lock:
            if self._closed:
                return False
            frames, self._probe_frames = self._probe_frames, []
            self._frames_ready.set()  # collect no more
        came = len(frames)
        room = auto.no_probe_room()  # looked at again: the node has grown since its start
        if room is not None:
            self._fail(room, f"raise the memory limit, or {auto.probe_elsewhere(self._model_path, self._options)}")
            return False
        if frames:  # written outside the lock: the node's frames go on meanwhile
            try:
                fd, name = tempfile.mkstemp(prefix=probe.NODE_FRAMES_PREFIX, suffix=".npy")
                self._frames_file = Path(name)
                with os.fdopen(fd, "wb") as f:
                    np.save(f, np.concatenate(frames), allow_pickle=False)
            except OSError as exc:  # a full or read-only temporary folder, or none: judge on rendered scenes
                log.warning("--engine auto: cannot write the probe's frames to %s (%s); the probe judges on rendered "
                            "road scenes", *self._frames_trouble(exc))
                if self._frames_file is not None:
                    with contextlib.suppress(OSError):
                        self._frames_file.unlink()
                self._frames_file, frames = None, []
        cmd, env = auto.probe_command(self._model_path, self._options, self._cache_dir, nice=BACKGROUND_PROBE_NICE,
                                      frames=self._frames_file)
        with self._lock:  # close() stops a child started before it, and none starts after it
            if self._closed:
                return False
            try:
                self._proc = subprocess.Popen(  # started by the watcher thread, which outlives it
                    cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env,
                    preexec_fn=auto.probe_preexec())  # dies with the node; the OOM killer takes it first
            except OSError as exc:
                self._fail(f"the probe process could not start ({exc.strerror})")
                return False
        log.info("--engine auto: probing %s in the background (pid %d) on %s", self._model_path.name, self._proc.pid,
                 f"{len(frames)} of the node's frames" if frames else
                 "rendered road scenes (the node's frames could not be written)" if came else
                 "rendered road scenes (no frame came)")
        return True

    def _frames_trouble(self, exc: OSError) -> tuple[str, str]:
        """Where the probe's frames were to be written and why they could not be, in words, without
        asking ``tempfile`` again: with no usable temporary folder (a read-only root, TMPDIR unset or
        gone) ``tempfile.gettempdir()`` raises what ``mkstemp`` raised."""
        folder = self._frames_file.parent if self._frames_file is not None else tempfile.tempdir
        where = str(folder) if folder else os.environ.get("TMPDIR") or "the temporary folder"
        if exc.errno is None and re.search(r"\d+ requested and \d+ written", str(exc)):
            # numpy's short write (its OSError has no errno): the file system took no more
            return where, "no space left on the device"
        return where, cache.os_cause(exc, Path(folder) if folder else None)

    def _watch(self) -> None:
        set_os_thread_name("probe")  # waits on the probe child; started from the loader thread ("engine")
        try:
            try:
                started = self._start_probe()
            except BaseException as exc:  # a bug: its traceback follows, but the stats must not say "probing" for ever
                self._fail(f"the background probe could not start ({type(exc).__name__}: {exc})")
                raise
            if not started:
                return
            assert self._proc is not None
            stdout, stderr = self._proc.communicate()
        finally:
            if self._frames_file is not None:
                with contextlib.suppress(OSError):
                    self._frames_file.unlink()
        if self._closed:
            return
        if self._proc.returncode == -signal.SIGKILL:  # a memory limit, most likely: the node lives on (probe_preexec)
            held = probe_cache.note_killed(self._key, self._cache_dir)
            self._fail(f"the background probe was {auto.PROBE_KILLED}", auto.held_off_then(
                self._model_path, self._options) if held else "the next start probes again")
            return
        try:
            selection = auto.child_verdict(self._proc.returncode, stdout, stderr, self._key)
        except PerceptionError as exc:
            self._fail(f"the background probe failed: {str(exc).splitlines()[0][:300]}")
            return
        doc = {**selection.to_dict(), "state": "chosen", "probe_wall_s": round(time.monotonic() - self._started, 3)}
        if (selection.engine, selection.precision) == probe_verdict.REFERENCE:
            # the reference runs as the file is: int8 for an INT8 file (as auto.open_auto says it)
            # said before the state changes: whoever sees "chosen" finds the line already logged
            log.info("--engine auto: the background probe kept %s (%s)", self._running_label, selection.reason)
            self._selection = {**doc, "precision": self._current.precision or doc["precision"]}
            return
        candidate = probe_verdict.Candidate(selection.engine, selection.precision)
        try:
            probe.prepare_candidate(candidate)  # its library and runtime, off the switch's pause
        except PerceptionError as exc:
            probe_cache.forget_cached(self._key, self._cache_dir)  # the child cached it; the next start probes again
            self._fail(f"the probe chose {candidate.label} but it cannot be used here ({str(exc).splitlines()[0][:200]})")
            return
        with self._lock:
            if not self._closed:
                self._pending = (candidate, doc)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        engine = self._enter(batch)
        try:
            return engine.infer(batch)
        finally:
            self._leave(engine)

    def worker(self) -> _SwitchingWorker:
        """One frame in flight (``--streams``) that follows the switch: a worker of the engine
        running now, replaced by one of the winner at its first call after the switch."""
        return _SwitchingWorker(self)

    def _enter(self, batch: np.ndarray) -> Engine:
        """The engine a call on ``batch`` runs on (swapping the winner in first when it is ready),
        counted as running on it until ``_leave``."""
        with self._lock:
            if not self._frames_ready.is_set():
                self._collect(batch)
            if self._pending is not None:
                self._switch()
            self.calls += 1
            engine = self._current
            self._running[id(engine)] = self._running.get(id(engine), 0) + 1
            return engine

    def _leave(self, engine: Engine) -> None:
        with self._lock:
            left = self._running[id(engine)] = self._running[id(engine)] - 1
            close = engine is self._retired and left == 0
            if close:
                self._retired = None
        if close:
            engine.close()
            release_free_heap()

    def _switch(self) -> None:
        """Swap the winner in (caller holds the lock, in the node's inference thread). ONNX Runtime
        closes first (or, when another frame in flight still runs on it, as that call returns), then
        the winner is loaded from the caches and makes its first run (allocations, kernel choice),
        so a first start's peak memory is one engine's, not two. Measured on the 2-core Xeon, default
        model, OpenVINO INT8 after ONNX Runtime FP32 (peak RSS of the node, first start, caches
        emptied): 277 MB when the winner was loaded and run beside ONNX Runtime, 270 MB loaded beside
        it and run after it closed, 265 MB loaded and run after it closed, 225-228 MB the same with
        ONNX Runtime's memory arena off (``_reference``), against 225 MB once switched. The load and
        the first run are the switch's one pause (270-290 ms there; 100 ms when loaded beside it,
        which peaked at 293 MB with the arena off), logged and published as ``switch_pause_ms``.
        A winner that fails to load or run is dropped and ONNX Runtime FP32 is back."""
        (candidate, doc), self._pending = self._pending, None
        old = self._current
        if self._running.get(id(old), 0):
            self._retired = old
        else:
            old.close()
            release_free_heap()
        started = time.monotonic()
        try:
            new = probe.load_candidate(candidate, self._model_path, self._options)
            try:
                if new.output_names != old.output_names:  # the probe checks this; never trade outputs
                    raise PerceptionError(f"it lacks outputs of {self._running_label} ({', '.join(old.output_names)})")
                new.warmup(1)
            except BaseException:
                new.close()
                raise
        except Exception as exc:  # whatever it is (OpenVINO raises RuntimeError), FP32 must come back
            if self._retired is old:  # still running another frame: keep it
                self._retired = None
            else:
                self._current = self._reference()
            probe_cache.forget_cached(self._key, self._cache_dir)  # the child cached it; the next start probes again
            # the warm-up names the file around the backend's error; the candidate's label says it here
            # (and a thread or memory the system refused, ResourceError, its backend's words as ``reason``)
            reason = getattr(exc, "reason", None) if isinstance(exc, (WarmupError, ResourceError)) else None
            reason = reason or (str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            self._fail(f"the probe chose {candidate.label} but it failed to load or run here ({reason})")
            return
        self._current = new
        pause_ms = round(1000 * (time.monotonic() - started), 1)
        self.switched_at_call = self.calls
        self._selection = {**doc, "switched_after_runs": self.calls,
                           "switched_after_s": round(time.monotonic() - self._started, 3),
                           "switch_pause_ms": pause_ms}
        new.selection = self._selection
        log.info("--engine auto: switched from %s to %s-%s after %d runs, %.1f s after start; loading it and its "
                 "first run took %.0f ms (%s)", self._running_label, new.kind, new.precision, self.calls,
                 time.monotonic() - self._started, pause_ms, doc.get("reason", ""))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._frames_ready.set()  # a watcher still waiting for frames starts nothing
            self._pending = None
            retired, self._retired = self._retired, None
        if retired is not None:
            retired.close()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()  # our own child; the next start probes again
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._watcher.join(10)
        self._current.close()


class _SwitchingWorker:
    """One frame in flight of a ``SwitchingEngine``: a worker of whichever engine runs now."""

    def __init__(self, parent: SwitchingEngine) -> None:
        self._parent = parent
        self._engine: Engine | None = None
        self._worker = None

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        engine = self._parent._enter(batch)
        try:
            if engine is not self._engine:  # the first call, or the first after the switch
                self._engine, self._worker = engine, engine.worker()
            return self._worker.infer(batch)
        finally:
            self._parent._leave(engine)
