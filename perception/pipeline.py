"""The node's loop: capture thread -> FrameQueue -> inference thread(s) -> publish thread.

- capture: ``source.read()`` stamps each frame and puts it on the frame queue (``latest`` drops
  the oldest when inference falls behind; ``lossless`` makes capture wait);
- inference: letterbox into the worker's preallocated batch, ``engine.infer``; with ``streams`` N > 1
  (``--streams``), N workers, each with its own batch and engine worker, run N frames at once and
  the publish thread puts them back in capture order (``perception/inflight.py``);
- publish: in capture order, ``MaskStage.publish`` (``perception/mask_stage.py``: cut the letterbox
  padding off, or map back to the source size if asked, build the masks and obstacle blobs that
  someone subscribes to, ``publisher.publish_masks``) and, once per ``stats_interval_s``, the stats
  document.

Inference and publishing overlap (ONNX Runtime and OpenCV release the GIL), so the node runs close
to the engine's own rate. Every frame's stage latencies go into its message header
(``latency_ms``: capture, queue, preprocess, infer, postprocess, total; the publisher adds encode
and publish) and into rolling p50/p90/p99 in the stats. A bad frame is counted and skipped; a stage
that keeps failing stops the node with a ``StageError``. With ``wait_subscribers`` the threads start
only once that many subscriptions have reached the publisher (a lossless file run with a recorder
then loses nothing); ``wait_timeout_s`` later the node fails with a one-line
``SubscribersMissingError`` (exit code 4, as for a source that is not there yet).

Neighbouring modules by stage: ``perception/run_config.py`` (``RunConfig``, every ``perception run``
flag, also loaded from ``--config node.yaml`` and from launch files), ``perception/stats.py``
(rolling latency percentiles and rates of the stats document), ``perception/mask_stage.py`` (the
publish thread's per-frame work), ``perception/masks.py`` and ``perception/publish.py``. Library use::

    pipeline = Pipeline(config, source=source, engine=engine, publisher=publisher)
    final_stats = pipeline.run()          # until the input ends, max_frames, duration_s or stop()
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from perception import contracts
from perception.batching import CameraEngine
from perception.engines.base import Engine, warmup_runs
from perception.errors import PerceptionError, ResourceError, start_thread
from perception.frame_queue import FrameQueue, QueueClosed
from perception.inflight import InFlight
from perception.mask_stage import Inferred, MaskStage
from perception.preprocess import Preprocessor
from perception.run_config import RunConfig
from perception.sources.base import Frame, Source, quoted
from perception.stats import LatencyWindow, RateLimitedLog, RateMeter
from perception.stats_schema import NO_FRAME_YET, with_aliases
from perception.subscriber_wait import wait_for_subscribers
from perception.threadname import set_os_thread_name

log = logging.getLogger(__name__)

#: A stage fails for good after this many bad frames in a row.
MAX_CONSECUTIVE_FAILURES = 25
#: How long the threads sleep on an empty queue before looking at the stop flag again.
POLL_S = 0.05
#: How long ``finish`` waits for the inference and publish threads (they always return; a slow
#: engine may need a moment to finish the frame it holds, which must then be counted).
JOIN_S = 10.0


class StageError(PerceptionError):
    """A pipeline stage failed for good (the message names the stage and the cause)."""

    exit_code = 1


class Pipeline:
    """The running node (see the module docstring). ``publisher`` is a ``MaskPublisher`` (or any
    object with its ``publish_masks``, ``publish_json``, ``stats``, ``wait_for_subscribers`` and
    ``endpoint``); the caller owns and closes source, engine and publisher, except that the
    pipeline closes the source when it finishes (or fails to start)."""

    def __init__(self, config: RunConfig, *, source: Source, engine: Engine, publisher: Any,
                 warmed_ms: float | None = None) -> None:
        self.config = config
        #: The engine's warm-up already ran, in this many ms (``perception run`` warms it up while
        #: it opens the source); None: ``start`` runs it.
        self.warmed_ms = warmed_ms
        self.source = source
        self.engine = engine
        self.publisher = publisher
        policy = config.queue if config.queue != "auto" else ("latest" if source.live else "lossless")
        self.frames: FrameQueue[Frame] = FrameQueue(config.queue_capacity, policy)
        #: Frames the inference stage runs at once: what the engine was built for (``--streams``;
        #: ``--streams auto`` is resolved by ``--engine auto``).
        self.streams = engine.streams
        # Lossless between inference and publishing: a frame that was inferred is always published.
        # It carries (ticket, frame or None) for the reorder step (perception/inflight.py), which
        # with one worker only passes frames on.
        self._inferred: FrameQueue[tuple[int, Inferred | None]] = FrameQueue(2 * self.streams, "lossless")
        self._inflight: InFlight[Frame, Inferred] = InFlight(self.frames, window=2 * self.streams, limit=config.max_frames)
        # One frame at a time runs on the engine itself (any engine can); several on its workers.
        self._workers: list[Any] = [engine.worker() for _ in range(self.streams)] if self.streams > 1 else [engine]
        self._workers_running = 0
        self._count_lock = threading.Lock()
        self.preprocess = Preprocessor(engine.input_hw)
        #: Class map -> masks, blobs and the info document (perception/mask_stage.py).
        self.stage = MaskStage(config, engine=engine, publisher=publisher)
        # The masks this camera publishes (per-class ones included): subscriptions to others are
        # not counted by --wait-subscribers nor in the stats (a test double may not take them).
        declare = getattr(publisher, "declare_topics", None)
        if declare is not None:
            declare(self.stage.masks.topics)
        self.latency = LatencyWindow()
        self._limited = RateLimitedLog(log)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._inference_ended = threading.Event()  # set when the inference stage will hand in nothing more
        self._error: tuple[str, BaseException] | None = None
        self._end_reason = ""
        #: The source reached its end (not an interrupt): the run's end reason unless it was stopped
        #: (a signal, ``duration_s``) before every frame read had gone through.
        self._input_ended = False
        self._threads: list[threading.Thread] = []
        self.frames_inferred = 0
        self.frames_published = 0
        self.bad_frames = 0
        #: Frames read but neither published, dropped nor failed when the run ended (queued or mid-stage).
        self.in_flight_discarded = 0
        self._discard_lock = threading.Lock()
        #: The start-up step reached (``startup`` in the stats document): "complete" once the threads
        #: run, reported as ``NO_FRAME_YET`` in the final stats while the source has given no frame.
        self.startup = "created"
        #: The final stats document once ``finish`` has run (also when a stage failed).
        self.final_stats: dict[str, Any] | None = None
        self.first_publish_mono_ns: int | None = None
        self.rates = RateMeter()
        from perception.cgroups import cpu_throttled_s

        #: The cgroup's CPU-quota throttled seconds at the start (None: no quota): ``cpu_throttled_s``.
        self.throttled_at_start = cpu_throttled_s()

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        """Warm the engine up, wait for subscribers if asked (``wait_subscribers``), then start the
        three threads.

        Raises:
            SubscribersMissingError: ``wait_subscribers`` subscriptions did not arrive within
                ``wait_timeout_s`` (exit code 4: a restart may find them).
        """
        if not self.prepare():
            return
        if self.config.publish_options.wait_subscribers:
            self.startup = "waiting for subscribers"
            try:
                subscribed = self._wait_for_subscribers()
            except BaseException:
                self.source.close()
                raise
            if not subscribed:  # stopped while waiting: nothing ran, nothing to join
                self.abandon_before_launch()
                return
        self.launch()

    def prepare(self) -> bool:
        """The start-up steps before the wait for subscribers: warm the engine up (unless done),
        log the node's set-up and latch the info document. False when stopped meanwhile (the
        source is then closed and the run over). A ``MultiCameraNode`` prepares every camera, waits
        for all of their subscribers at once, then ``launch``es them."""
        t0 = time.perf_counter()
        self.startup = "warming up the engine"
        try:
            if self.warmed_ms is None and self.streams > 1:
                self.engine.warm_workers(self._workers, self.config.warmup)
            elif self.warmed_ms is None:
                self.engine.warmup(self.config.warmup)
        except BaseException:
            self.source.close()  # no capture thread will own it: a camera must not stay open
            raise
        if self._stop.is_set():  # a signal during the warm-up: nothing ran, nothing to join
            self.abandon_before_launch()
            return False
        warm_ms = (time.perf_counter() - t0) * 1e3 if self.warmed_ms is None else self.warmed_ms
        if isinstance(self.engine, CameraEngine):  # several cameras: the batcher warmed the shared engine up once
            warmed = (f"camera {quoted(self.config.publish_options.camera_name)}: engine shared by "
                      f"{len(self.engine.batcher.cameras)} cameras (warm-up above)")
        else:
            workers = f" on each of {self.streams} workers" if self.streams > 1 else ""
            beside = " (beside the source's opening)" if self.warmed_ms is not None else ""
            n = self.config.warmup
            runs = (f"{n} run{'s' if n > 1 else ''}" if n else
                    f"{warmup_runs(n)} run (the model check, which --warmup 0 keeps)")
            warmed = f"engine warm-up: {runs}{workers} in {warm_ms:.0f} ms{beside}"
        log.info(
            "%s; source %s, queue %s(%d), masks %s%s", warmed,
            self.source.describe(), self.frames.policy, self.frames.capacity,
            ",".join(self.stage.masks.topics), f"; {self.streams} frames in flight" if self.streams > 1 else "",
        )
        self.stage.publish_info(None)
        return True

    def abandon_before_launch(self) -> None:
        """Stopped before the threads started (a signal during the warm-up or the wait for
        subscribers): close the source, which no capture thread owns, and end the run."""
        self.source.close()
        self._done.set()

    def launch(self) -> None:
        """Start the capture, inference and publish threads (after ``prepare`` and the wait)."""
        self.startup = "complete"
        self.rates.restart()
        stages: list[tuple[str, str, Any]] = [("capture", "capture", self._capture_loop)]
        self._workers_running = len(self._workers)
        stages += [("inference", "inference" if self.streams == 1 else f"inference-{i}", lambda i=i: self._worker_loop(i))
                   for i in range(len(self._workers))]
        stages.append(("publish", "publish", self._publish_loop))
        for stage, name, target in stages:
            t = threading.Thread(target=self._guard, args=(stage, target), name=f"perception-{name}", daemon=True)
            try:
                start_thread(t, f"the node's {name} thread")
            except ResourceError:
                self._abandon_start()
                raise
            self._threads.append(t)

    def _abandon_start(self) -> None:
        """A stage thread could not start (a process or memory limit): stop the ones that did, and
        close the source when no capture thread owns it; the run then ends in start-up with the error."""
        self.stop("start-up failed")
        for t in self._threads:
            t.join(timeout=JOIN_S)
        if not self._threads:
            self.source.close()
        self._done.set()

    def _wait_for_subscribers(self) -> bool:
        """Hold the first frame until ``wait_subscribers`` subscriptions have reached the publisher
        (``wait_for_subscribers``). False when stopped meanwhile."""
        return wait_for_subscribers([self], poll_s=POLL_S)

    @property
    def stopping(self) -> bool:
        """``stop`` was called (a signal, another camera's failure, the end of the run)."""
        return self._stop.is_set()

    def stop(self, reason: str = "stopped") -> None:
        """Ask every stage to finish now (thread- and signal-safe); ``wait`` returns soon after.

        ``reason`` becomes the end reason unless one is set or the publish stage has already
        finished: a stop after the source's end but before its queued frames were published is
        what ended the run (those frames are counted in ``in_flight_discarded``)."""
        if not self._end_reason and not self._done.is_set():
            self._end_reason = reason
        self._stop.set()
        if not self._threads:  # stopped before the threads started: none will
            self._inference_ended.set()
        self.source.interrupt()
        self.frames.close()
        self._inferred.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the publish stage has finished (or ``timeout``); True when finished."""
        return self._done.wait(timeout)

    def run(self) -> dict[str, Any]:
        """Start, run until the input ends / ``max_frames`` / ``duration_s`` / ``stop()``, and
        return the final stats.

        Raises:
            StageError (or the stage's own PerceptionError): a stage failed.
        """
        self.start()
        deadline = time.monotonic() + self.config.duration_s if self.config.duration_s else None
        while not self.wait(POLL_S):
            if deadline is not None and time.monotonic() >= deadline:
                self.stop("duration reached")
        return self.finish()

    def finish(self) -> dict[str, Any]:
        """Join the threads, count what was still in flight, publish the final stats and return
        them; when a stage failed, publish them too (``final_stats``, with ``error``) and raise
        that failure.

        The capture thread gets half a second (a camera read may hang); inference and publishing,
        which always return, get longer so that their frame is counted.
        """
        for t in self._threads:
            t.join(timeout=0.5 if t.name == "perception-capture" else JOIN_S)
        # Whatever is still queued between the stages (or waiting for its turn) will not be published.
        self._discard(len(self.frames) + self._unpublished_inferred())
        final = self.stats(final=True)
        failure: PerceptionError | None = None
        if self._error is not None:
            stage, exc = self._error
            failure = exc if isinstance(exc, PerceptionError) else StageError(
                f"{stage} stage failed: {type(exc).__name__}: {exc}"
            )
            final["error"] = str(failure)
        self.final_stats = final
        # The last document on the stats topic is the run's summary (with its end_reason), so a
        # subscriber learns how the run ended even when it was shorter than one stats interval.
        try:
            self.publisher.publish_json(contracts.STATS_TOPIC, final)
        except Exception as exc:  # a broken publisher must not hide the stage failure or the stats
            if failure is None:
                raise
            log.warning("could not publish the final stats: %s", exc)
        if failure is not None:
            if failure is self._error[1]:
                raise failure
            raise failure from self._error[1]
        return final

    def _unpublished_inferred(self) -> int:
        """Inferred frames left between the stages at the end (the threads have been joined)."""
        left = self._inflight.held
        self._inferred.close()
        while True:  # a closed queue hands out what it holds, then raises
            try:
                entry = self._inferred.get(timeout=0)
            except QueueClosed:
                return left
            left += entry is not None and entry[1] is not None

    def _count_bad(self) -> None:
        with self._count_lock:  # inference workers and the publish thread all count
            self.bad_frames += 1

    def _discard(self, count: int) -> None:
        with self._discard_lock:  # capture and inference both count at the end of a run
            self.in_flight_discarded += count

    @property
    def end_reason(self) -> str:
        return self._end_reason or ("end of input" if self._input_ended else "")

    @property
    def ended_without_a_frame(self) -> bool:
        """The source ended (a file, a folder) without one readable frame."""
        return self._input_ended and self.source.frames_read == 0

    @property
    def failed(self) -> bool:
        """A stage failed (``finish`` raises it)."""
        return self._error is not None

    @property
    def inferring(self) -> bool:
        """The inference stage may still hand frames to the engine: it has not started yet (and
        the pipeline was not stopped), or its thread is running."""
        return not self._inference_ended.is_set()

    # ------------------------------------------------------------------ stages

    def _guard(self, stage: str, target) -> None:
        # The OS name without the prefix: 15 bytes hold "inference-1", not "perception-inference-1".
        set_os_thread_name(threading.current_thread().name.removeprefix("perception-"))
        try:
            target()
        except BaseException as exc:  # any failure stops the whole node, named by stage
            if self._error is None:
                self._error = (stage, exc)
            if stage == "capture" and isinstance(exc, PerceptionError):
                # The source failed for good (200 unreadable frames in a row, a camera gone): the
                # frames it read before are still inferred and published (its queue is closed, so
                # the other stages end once it is empty); then the run ends with that error.
                self._end_reason = self._end_reason or f"{stage} failed"
                self.frames.close()
            else:
                self.stop(f"{stage} failed")
        finally:
            if stage == "publish":
                self._done.set()

    def _capture_loop(self) -> None:
        # A lossless queue hands every frame read to inference: reading more than max_frames would
        # only read frames that are then discarded.
        read_limit = self.config.max_frames if self.frames.policy == "lossless" else 0
        try:
            while not self._stop.is_set():
                if read_limit and self.source.frames_read >= read_limit:
                    break  # inference ends the run with "max frames reached" once it has them all
                frame = self.source.read()
                if frame is None:
                    self._input_ended = not self._stop.is_set()
                    break
                while not self.frames.put(frame, timeout=POLL_S):
                    if self.frames.closed or self._stop.is_set():
                        self._discard(1)  # read, but the run ended before it was queued
                        return
        finally:
            self.frames.close()
            self.source.close()

    def _worker_loop(self, index: int) -> None:
        """Inference worker ``index`` of ``streams`` (see ``perception/inflight.py``): its own
        letterbox batch and engine worker; each frame goes on with its ticket, a failed one as None.
        With ``streams`` 1 the one worker is the engine itself."""
        inflight = self._inflight
        preprocess = self.preprocess if index == 0 else Preprocessor(self.engine.input_hw)
        worker = self._workers[index]
        consecutive = 0
        try:
            while not self._stop.is_set() and not inflight.exhausted:
                try:
                    taken = inflight.take(POLL_S)
                except QueueClosed:
                    break
                if taken is None:
                    continue
                ticket, frame = taken
                try:
                    item = self._infer_one(frame, preprocess, worker)
                except BaseException as exc:
                    inflight.done(ok=False)
                    self._hand_on((ticket, None), counted=False)  # lets later frames go out
                    consecutive = self._infer_failed(frame, exc, consecutive)
                    continue
                consecutive = 0
                handed = self._hand_on((ticket, item), counted=True)
                if handed:
                    with self._count_lock:
                        self.frames_inferred += 1
                if inflight.done(ok=handed):
                    self._max_frames_reached()
                if not handed:
                    return
        finally:
            with self._count_lock:
                self._workers_running -= 1
                last = self._workers_running == 0
            self.frames.close()  # frees a capture thread waiting for room in a lossless queue
            if last:  # the others may still hand frames on until they end
                self._inference_ended.set()
                self._inferred.close()

    def _infer_one(self, frame: Frame, preprocess: Preprocessor, engine: Any) -> Inferred:
        """Letterbox ``frame`` into ``preprocess``'s batch and run ``engine`` (or an engine worker)
        on it; raises what they raise."""
        dequeue_mono = time.monotonic_ns()
        t0 = time.perf_counter()
        batch = preprocess(frame.image)
        t1 = time.perf_counter()
        outputs = engine.infer(batch)
        t2 = time.perf_counter()
        # Several cameras on one engine (perception/batching.py): the wait for the batch is
        # its own stage, apart from the inference itself.
        batch_ms = getattr(engine, "last_wait_ms", None)
        return Inferred(
            seq=frame.seq,
            capture_ns=frame.capture_ns,
            capture_mono_ns=frame.capture_mono_ns,
            class_ids=outputs[contracts.OUTPUT_CLASS_IDS][0],
            letterbox=preprocess.letterbox,
            confidence=outputs[contracts.OUTPUT_CONFIDENCE][0] if self.stage.unknown is not None else None,
            latency_ms={
                "capture": frame.capture_ms,
                "queue": (dequeue_mono - frame.capture_mono_ns) / 1e6,
                "preprocess": (t1 - t0) * 1e3,
                **({} if batch_ms is None else {"batch": batch_ms}),
                "infer": (t2 - t1) * 1e3 - (batch_ms or 0.0),
            },
        )

    def _infer_failed(self, frame: Frame, exc: BaseException, consecutive: int) -> int:
        """Count a frame inference failed on; raise when the stage fails for good, else the new
        count of failures in a row."""
        consecutive += 1
        self._count_bad()
        if consecutive >= MAX_CONSECUTIVE_FAILURES or not isinstance(exc, Exception):
            raise exc
        self._limited.warning("infer", "frame %d skipped: %s: %s", frame.seq, type(exc).__name__, exc)
        return consecutive

    def _hand_on(self, entry: Any, *, counted: bool) -> bool:
        """Put ``entry`` on the queue to publishing; False when publishing has ended (an inferred
        frame, ``counted``, is then discarded)."""
        while not self._inferred.put(entry, timeout=POLL_S):
            if self._inferred.closed:
                if counted:
                    self._discard(1)  # inferred, but publishing has ended
                return False
        return True

    def _max_frames_reached(self) -> None:
        self._end_reason = self._end_reason or "max frames reached"
        self.source.interrupt()

    def _publish_loop(self) -> None:
        consecutive = 0
        while not self._stop.is_set():
            try:
                entry = self._inferred.get(timeout=POLL_S)
            except QueueClosed:
                break
            if entry is not None:
                # (ticket, frame or None), held until every earlier ticket has come back.
                for item in self._inflight.in_order(*entry):
                    try:
                        self._publish_one(item)
                        consecutive = 0
                    except BaseException as exc:
                        consecutive += 1
                        self._count_bad()  # counted whether skipped or fatal: the equation must balance
                        # Only a frame the post-processing cannot use is skipped; anything else (a broken
                        # socket, a bug) stops the node at once.
                        if consecutive >= MAX_CONSECUTIVE_FAILURES or not isinstance(exc, (ValueError, TypeError, ArithmeticError)):
                            raise
                        self._limited.warning("publish", "frame %d skipped: %s: %s", item.seq, type(exc).__name__, exc)
            if self.rates.due(self.config.publish_options.stats_interval_s):
                self.publisher.publish_json(contracts.STATS_TOPIC, self.stats())

    def _publish_one(self, item: Inferred) -> None:
        latency = self.stage.publish(item)
        for stage, value in latency.items():
            self.latency.add(stage, value)
        self.frames_published += 1
        if self.first_publish_mono_ns is None:
            self.first_publish_mono_ns = time.monotonic_ns()
            camera = getattr(self.source, "camera_prefix", str)()  # ("camera 'rear', " in a node of several)
            log.info("%sfirst masks published (seq %d, %.1f ms after capture)", camera, item.seq, latency["total"])

    # ------------------------------------------------------------------ stats

    def stats(self, *, final: bool = False) -> dict[str, Any]:
        """The stats document: rates over the last interval (over the whole run when ``final``),
        counters, per-stage p50/p90/p99, engine, model, the publisher's counters and ``unknown``.
        Every key (name, type, meaning, whether only the final document has it) is declared in
        ``contracts.CAMERA_STATS`` (``perception/stats_schema.py``); the final document balances:
        ``frames_in == published + dropped + corrupt + in_flight_discarded``.
        """
        source_corrupt = self.source.corrupt
        frames_in, frames_out = self.source.frames_read + source_corrupt, self.frames_published
        drops = self.frames.drops
        corrupt = source_corrupt + self.bad_frames
        doc: dict[str, Any] = {
            **self.rates.rates(frames_in, frames_out, final=final),
            "frames_in": frames_in,
            "published": frames_out,
            "unheard": self.stage.frames_unheard,
            "dropped": drops,
            "corrupt": corrupt,
            "in_flight_discarded": self.in_flight_discarded,
            "source_corrupt": source_corrupt,
            "bad_frames": self.bad_frames,
            "reconnects": self.source.reconnects,
            "latency_ms": self.latency.percentiles(),
            "queue": self.frames.policy,
            "source": self.source.describe(),
            "engine": self.engine.kind,
            "provider": self.engine.provider,
            "precision": self.engine.precision or self.engine.metadata.precision,
            "streams": self.streams,
            "model_id": self.engine.model_id,
            "masks": self.stage.masks.topics,
            "publisher": self.publisher.stats(),
        }
        doc["unknown"] = self.stage.unknown_stats(final)
        doc["drivable"] = self.stage.reach_stats(final)
        if self.engine.selection is not None:
            doc["engine_selection"] = self.engine.selection  # --engine auto: the choice and why
        batching = getattr(self.engine, "batching", None)
        if batching is not None:
            doc["camera"] = self.config.publish_options.camera_name
            doc["batching"] = batching  # one engine for several cameras: perception/batching.py
        skipped = getattr(self.source, "skipped", None)
        if skipped:
            doc["source_skipped"] = list(skipped)
        if self.throttled_at_start is not None:
            from perception.cgroups import cpu_throttled_s

            if (throttled := cpu_throttled_s()) is not None:
                doc["cpu_throttled_s"] = round(max(0.0, throttled - self.throttled_at_start), 3)
        if final:
            doc["end_reason"] = self.end_reason or "stopped"
            # Started, but the source never gave a frame (a stream sending nothing decodable): not complete.
            doc["startup"] = NO_FRAME_YET if self.startup == "complete" and frames_in == 0 else self.startup
            doc["balanced"] = frames_in == frames_out + drops + corrupt + self.in_flight_discarded
        return with_aliases(doc)
