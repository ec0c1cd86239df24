"""One node, several cameras: a pipeline per camera, one engine for all of them.

``perception run --source front=/dev/video0 --source rear=clip.mp4`` builds a ``MultiCameraNode``:
each camera keeps everything a single-camera node has (its ``Pipeline``: source, bounded
keep-latest queue, seq, ``<namespace>/<camera>`` topics with their own pub_seq and info, latency
fields, stats document with FPS, drops and latency percentiles), all on one ZeroMQ endpoint
(``MaskPublisher.add_namespace``), and their frames meet in a ``FrameBatcher``
(``perception/batching.py``) that runs the one engine on a batch of every camera's latest frame.

With ``wait_subscribers`` N every camera is held until its own namespace has N subscriptions (one
to the cameras' common parent counts for each), and no camera starts before all have them
(``subscriber_wait.wait_for_subscribers``): a camera that started alone would publish frames that the
restart after the timeout (exit 4) publishes again.

The node ends when every camera has ended (end of input, ``max_frames`` per camera), on
``duration_s``, or on ``stop()``; a stage that fails in one camera stops them all (once it has
finished: a failed source's camera publishes the frames it read first). The final
document sums the counters of the cameras (``balanced`` when every camera balances) and holds
each camera's own final stats under ``cameras``::

    node = MultiCameraNode(config, sources=[front, rear], engine=engine, publishers=[pub, pub_rear])
    final = node.run()
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from perception.batching import FrameBatcher
from perception.engines.base import Engine
from perception.errors import PerceptionError
from perception.pipeline import POLL_S, Pipeline
from perception.run_config import RunConfig
from perception.sources.base import Source
from perception.stats_schema import STATS_ALIASES, SUMMED, with_aliases
from perception.subscriber_wait import wait_for_subscribers

log = logging.getLogger(__name__)



class MultiCameraNode:
    """The cameras of ``config.cameras`` on one engine (see the module docstring). ``sources`` and
    ``publishers`` are per camera, in the same order; the caller owns the engine and the
    publishers (the first one's ``close`` closes the shared socket); each pipeline closes its source."""

    def __init__(self, config: RunConfig, *, sources: list[Source], engine: Engine, publishers: list[Any]) -> None:
        cameras = config.cameras
        if not len(cameras) == len(sources) == len(publishers):
            raise ValueError(f"{len(cameras)} cameras, {len(sources)} sources and {len(publishers)} publishers")
        self.config = config
        self.engine = engine
        self.batcher = FrameBatcher(engine, [c.name for c in cameras], timeout_ms=config.batch_timeout_ms)
        self.pipelines = [
            Pipeline(config.camera_config(i), source=source, engine=self.batcher.camera_engine(i), publisher=publisher)
            for i, (source, publisher) in enumerate(zip(sources, publishers, strict=True))
        ]
        for i, pipeline in enumerate(self.pipelines):
            # A camera whose inference thread has ended hands in nothing more: batches stop waiting
            # for it. (Not "its queue is closed and empty": the thread may hold a last frame.)
            self.batcher.set_active(i, self._waited_for(pipeline, config.batch_timeout_ms / 1e3))
        self.final_stats: dict[str, Any] | None = None
        #: Cameras that were not there at start-up and never came while the others ran (``run``).
        self.never_came: list[str] = []

    @staticmethod
    def _waited_for(pipeline: Pipeline, timeout_s: float) -> Callable[[], bool]:
        """Whether batches wait for ``pipeline``'s camera: while its inference thread runs, and,
        before its first frame, only for one batch timeout in all (counted from the first batch
        that waited for it). A camera that never delivered a frame (not there at start-up, a stream
        that sends none) is then not waited for, as one whose input ended, and is still opened and
        read: it is waited for again once a frame of it came. Otherwise every batch of the others
        waited the whole timeout for it, for as long as it stayed away."""
        since: list[float] = []

        def active() -> bool:
            if not pipeline.inferring:
                return False
            if pipeline.source.frames_read > 0:
                return True
            now = time.monotonic()
            if not since:
                since.append(now)
            return now - since[0] < timeout_s

        return active

    @property
    def first_publish_mono_ns(self) -> int | None:
        """When the first mask of any camera went out (None before)."""
        stamps = [p.first_publish_mono_ns for p in self.pipelines if p.first_publish_mono_ns is not None]
        return min(stamps) if stamps else None

    def start(self) -> None:
        """Warm the engine up once (batch 1 and the full batch), then start the batcher and every
        camera's pipeline (``_start_cameras``). A camera that fails to start stops the others; when
        one of them had started, ``final_stats`` holds the node's summary (with ``error``), as after a
        stage failure, so that what it published is told; otherwise nothing ran and it stays None."""
        t0 = time.perf_counter()
        try:
            self.batcher.warmup(self.config.warmup)
        except BaseException:
            for pipeline in self.pipelines:
                pipeline.source.close()
            raise
        log.info("engine warm-up for %d cameras (batch %s): %.0f ms; batch timeout %g ms",
                 len(self.pipelines), "dynamic" if self.engine.fixed_batch is None else self.engine.fixed_batch,
                 (time.perf_counter() - t0) * 1e3, self.config.batch_timeout_ms)
        self.batcher.start()
        try:
            self._start_cameras()
        except BaseException as exc:
            launched = any(p.startup == "complete" for p in self.pipelines)
            for pipeline in self.pipelines:
                if pipeline.startup != "complete":  # no capture thread owns its source
                    pipeline.source.close()
            self.stop("start-up failed")
            docs, _ = self._finish_all()
            if launched:  # a camera ran before another failed to start: what it published is told
                self.final_stats = self.summary(docs)
                self.final_stats["error"] = str(exc)
            raise

    def _start_cameras(self) -> None:
        """Prepare every camera (``Pipeline.prepare``), wait for the subscribers of all of them at
        once (``wait_subscribers``: each camera's own namespace needs them, and no camera publishes
        before all have them), then start their threads. Stopped meanwhile: every camera ends unstarted."""
        for pipeline in self.pipelines:
            if not pipeline.prepare():
                self._abandon_unstarted()
                return
        if self.config.publish_options.wait_subscribers:
            for pipeline in self.pipelines:
                pipeline.startup = "waiting for subscribers"
            if not wait_for_subscribers(self.pipelines, poll_s=POLL_S):
                self._abandon_unstarted()
                return
        for pipeline in self.pipelines:
            pipeline.launch()

    def _abandon_unstarted(self) -> None:
        """A stop during start-up: every camera whose threads did not start ends (its source closed)."""
        for pipeline in self.pipelines:
            if pipeline.startup != "complete":
                pipeline.abandon_before_launch()

    def stop(self, reason: str = "stopped") -> None:
        """Stop every camera (thread- and signal-safe)."""
        for pipeline in self.pipelines:
            pipeline.stop(reason)

    def run(self) -> dict[str, Any]:
        """Start, run until every camera has ended, ``duration_s`` or ``stop()``; the final stats.

        Raises:
            the first failed camera's error (after every camera's final stats went out).
        """
        self.start()
        deadline = time.monotonic() + self.config.duration_s if self.config.duration_s else None
        while not all(p.wait(0) for p in self.pipelines):
            # A camera that failed stops the others once it has finished: a source that failed for
            # good (200 unreadable frames in a row) still publishes the frames it read before, as
            # a single camera does; any other stage stops its own pipeline at once.
            failed = next((p for p in self.pipelines if p.failed and p.wait(0)), None)
            empty = next((p for p in self.pipelines if p.wait(0) and p.ended_without_a_frame), None)
            # Cameras not there at start-up and not yet opened (``sources.pending``): once every other
            # camera has ended (a file, --max-frames), nothing will come of them.
            waiting = [p for p in self.pipelines if not getattr(p.source, "opened", True)]
            if failed is not None:
                self.stop(f"camera {failed.config.publish_options.camera_name} failed")
            elif empty is not None:  # a file or folder with no readable frame: the caller's error
                self.stop(f"camera {empty.config.publish_options.camera_name} gave no frame")
            elif waiting and all(p.wait(0) for p in self.pipelines if p not in waiting):
                self.never_came = [p.config.publish_options.camera_name for p in waiting]
                self.stop(f"camera {', '.join(self.never_came)} never came")
            elif deadline is not None and time.monotonic() >= deadline:
                self.stop("duration reached")
            time.sleep(POLL_S)
        return self.finish()

    def _finish_all(self) -> tuple[list[dict[str, Any]], PerceptionError | BaseException | None]:
        """Every pipeline's final stats (each published on its camera's stats topic), then the
        batcher closed; the first failure, if any."""
        docs: list[dict[str, Any]] = []
        failure: BaseException | None = None
        for pipeline in self.pipelines:
            try:
                docs.append(pipeline.finish())
            except BaseException as exc:  # noqa: PERF203 - every camera is finished, the first failure raised
                failure = failure or exc
                docs.append(pipeline.final_stats or {})
        self.batcher.close()
        return docs, failure

    def finish(self) -> dict[str, Any]:
        """Join every camera, publish their final stats, and return the node's summary (also kept
        in ``final_stats``); raises the first camera's failure after that."""
        docs, failure = self._finish_all()
        self.final_stats = self.summary(docs)
        if failure is not None:
            self.final_stats["error"] = str(failure)
            raise failure
        return self.final_stats

    def summary(self, docs: list[dict[str, Any]]) -> dict[str, Any]:
        """The node's final document (``contracts.NODE_STATS``): the cameras' counters summed, ``balanced`` when every camera
        balances, the end reason (one, or each camera's), the engine and the batching figures, and
        every camera's own final stats under ``cameras``."""
        names = [p.config.publish_options.camera_name for p in self.pipelines]
        final: dict[str, Any] = {key: sum(doc.get(key, 0) or 0 for doc in docs) for key in SUMMED if key not in STATS_ALIASES}
        for key in ("input_fps", "output_fps"):
            final[key] = round(final[key], 2)
        reasons = [doc.get("end_reason", "stopped") for doc in docs]
        final["end_reason"] = (
            reasons[0] if len(set(reasons)) == 1 else "; ".join(f"{n}: {r}" for n, r in zip(names, reasons, strict=True))
        )
        final["startup"] = next((d["startup"] for d in docs if d.get("startup") != "complete"), "complete")
        final["balanced"] = all(doc.get("balanced", False) for doc in docs)
        final.update({
            "engine": self.engine.kind,
            "provider": self.engine.provider,
            "precision": self.engine.precision or self.engine.metadata.precision,
            "model_id": self.engine.model_id,
            "batching": self.batcher.stats(),
            "cameras": dict(zip(names, docs, strict=True)),
        })
        return with_aliases(final)
