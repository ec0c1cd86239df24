"""``perception demo``: the synthetic road camera through a model, end to end, in one command.

The real pieces, in one process: ``SyntheticSource`` -> ``Pipeline`` (engine, masks) ->
``MaskPublisher`` on localhost (port 5556, or a free port when that one is taken) -> a
``MaskSubscriber`` that prints per-topic rates and capture-to-receive latency every second and
draws each received class map over the very camera frame it came from (``render_overlay``) into
``out/demo.mp4``, with a snapshot in ``out/demo.png``. At the end it prints where the files are and
a summary: FPS, latency p50/p99 and drops. ``out/`` is the demo's own, its two files replaced each
run; in a folder the user names with ``--out``, earlier ones are refused before the model loads
unless ``--overwrite`` (``claim_out``).

The subscriber receives, time-stamps and counts every message in a thread of its own
(``_Receiver``); the main thread only draws the newest class map and prints. Drawing a frame
(overlay, video encoding) takes tens to hundreds of milliseconds on a small CPU: when the same
loop both drew and received, the topics sent after a frame's class map (drivable, lane, obstacle)
waited in the socket while it drew, and the demo reported them 250 ms later than a separate
``perception listen`` on the same node did (hunt6c; 1021 ms against 773 ms p50 on a loaded 2-core
VM). The latencies it prints are now the node's, as ``listen`` sees them.

Run: ``perception demo`` (the shipped model) or ``perception demo --model m.onnx --duration 5``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perception import contracts
from perception.config import composed, setting
from perception.errors import ConfigError, ModelError
from perception.options import (
    SYNTHETIC_DEFAULT_HW,
    SYNTHETIC_FPS_RANGE,
    SYNTHETIC_MAX_HW,
    SYNTHETIC_MIN_HW,
    EngineOptions,
    PublishOptions,
    SourceOptions,
    synthetic_size_error,
)
from perception.sources.synthetic import DEFAULT_FPS as SYNTHETIC_DEFAULT_FPS
from perception.sources.synthetic import SyntheticSource

log = logging.getLogger(__name__)

#: Rate of the overlay video: enough to watch, cheap enough not to slow the subscriber down.
VIDEO_FPS = 10.0
#: Camera frames kept for pairing with class maps that arrive later (a few frames of latency).
KEPT_FRAMES = 64
DEFAULT_PORT = 5556
#: After the node stops, how long the subscriber waits for messages still in flight.
DRAIN_S = 0.2


#: The demo's shortest run: it stops by itself, then writes its video and summary, so it has no
#: "0: no limit" (a node without a limit is ``perception run``).
MIN_DURATION_S = 0.5


@dataclass
class DemoConfig:
    """The flags of ``perception demo``. Its camera is the synthetic one, so the source settings it
    offers are worded for that camera here (``composed``'s ``help``), with their one declaration."""

    model: Path | None = setting(None, help="exported .onnx model (default: the shipped default.onnx)")
    # Its lower bound is checked in __post_init__, which can say why 0 is not "no limit" here.
    duration_s: float = setting(10.0, hi=3600.0, flag="--duration", metavar="S", old_names=("duration",),
                                help=f"seconds to run, at least {MIN_DURATION_S:g}: the demo stops by itself to write "
                                     "its video and summary (for a node without a limit: perception run)")
    endpoint: str | None = setting(None, help="where to publish (default tcp://127.0.0.1:5556, or a free port)")
    # --out as every other command; the demo's own --out-dir stays as a hidden alias (commands/demo.py).
    out_dir: Path = setting(Path("out"), flag="--out", metavar="DIR", help="folder for demo.mp4 and demo.png")
    overwrite: bool = setting(False, help="replace the demo.mp4 and demo.png of an earlier demo in the --out folder "
                                          "you name instead of refusing to start (without --out, out/ is the demo's "
                                          "own: replaced each run)")
    source_options: SourceOptions = composed(
        SourceOptions, only=("width", "height", "fps", "seed"), group=None,
        help={"width": "frame width of the synthetic camera",
              "height": "frame height of the synthetic camera",
              "fps": f"frame rate of the synthetic camera; the overlay video is written at {VIDEO_FPS:g}"},
        # what the synthetic camera takes, not the 16..16384 a camera may be asked for
        shown={"width": {"default_text": f"{SYNTHETIC_DEFAULT_HW[1]}",
                         "help_range": f"{SYNTHETIC_MIN_HW[1]}..{SYNTHETIC_MAX_HW[1]}"},
               "height": {"default_text": f"{SYNTHETIC_DEFAULT_HW[0]}",
                          "help_range": f"{SYNTHETIC_MIN_HW[0]}..{SYNTHETIC_MAX_HW[0]}"},
               "fps": {"default_text": f"{SYNTHETIC_DEFAULT_FPS:g}",
                       "help_range": f"{SYNTHETIC_FPS_RANGE[0]:g}..{SYNTHETIC_FPS_RANGE[1]:g}"}})
    engine_options: EngineOptions = composed(
        EngineOptions, only=("provider", "threads"), group=None,
        help={"threads": "CPU inference threads (0: the backend's default)"})  # the demo runs one frame at a time

    def __post_init__(self) -> None:
        if not self.duration_s >= MIN_DURATION_S:
            raise ValueError(f"duration_s={self.duration_s:g}: the demo needs at least {MIN_DURATION_S:g} s, as it "
                             "stops by itself to write its video and summary (0 is not 'no limit' here; a node "
                             "without a limit is 'perception run')")
        problem = synthetic_size_error(self.source_options.width, self.source_options.height, self.source_options.fps)
        if problem:  # the demo's camera is the synthetic one: say so before the model loads
            raise ValueError(problem)


class KeepingSyntheticSource(SyntheticSource):
    """The synthetic camera, also keeping its last frames by ``seq`` so masks can be drawn over them."""

    def __init__(self, options: SourceOptions, keep: int = KEPT_FRAMES) -> None:
        super().__init__("synthetic", options)
        self._keep = keep
        self._kept: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def read(self):
        frame = super().read()
        if frame is not None:
            with self._lock:
                self._kept[frame.seq] = frame.image
                while len(self._kept) > self._keep:
                    self._kept.popitem(last=False)
        return frame

    def image(self, seq: int) -> np.ndarray | None:
        with self._lock:
            return self._kept.get(seq)


class _Receiver:
    """Receives every message of the demo's subscriber in its own thread, time-stamps it there
    (``Message.receive_ns``, set as it is decoded) and counts it in ``stats`` (one ``TopicStats``
    per topic, read under ``lock``), so that drawing in the main thread never delays a message's
    time stamp. The newest class map not yet drawn waits in ``take_class_map``.

    The subscriber's socket is used only by this thread while it runs (ZeroMQ sockets are not
    thread-safe); ``finish`` lets it drain what is still in flight and ends it, ``close`` ends it at
    once; an error in the thread is raised again by ``take_class_map`` or ``finish``.
    """

    def __init__(self, subscriber, start_s: float) -> None:
        self._subscriber = subscriber
        self._start_s = start_s
        self.lock = threading.Lock()
        self.stats: dict[str, Any] = {}
        self._class_map = None
        self._new_class_map = threading.Condition(self.lock)
        self._finishing = threading.Event()
        self._closing = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="demo-receive", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        from perception.topic_stats import TopicStats

        try:
            while not self._closing.is_set():
                finishing = self._finishing.is_set()
                msg = self._subscriber.recv(timeout_s=DRAIN_S if finishing else 0.05)
                if msg is None:
                    if finishing:  # a whole DRAIN_S without a message after the node stopped
                        return
                    continue
                now_s = time.monotonic()
                with self.lock:
                    self.stats.setdefault(msg.topic, TopicStats(self._start_s)).add(msg, now_s)
                    if msg.topic.endswith("/class_map"):
                        self._class_map = msg
                        self._new_class_map.notify()
        except BaseException as exc:  # handed to the main thread by finish()
            self._error = exc
            with self.lock:
                self._new_class_map.notify()

    def take_class_map(self, timeout_s: float):
        """The newest class map received since the last call (older ones are skipped: the video
        runs at ``VIDEO_FPS``), or None when none arrives within ``timeout_s``."""
        with self.lock:
            if self._class_map is None and self._error is None:
                self._new_class_map.wait(timeout_s)
            msg, self._class_map = self._class_map, None
        if self._error is not None:
            raise self._error
        return msg

    def finish(self) -> None:
        """Receive what is still in flight (until ``DRAIN_S`` pass without a message), then stop."""
        self._finishing.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop at once, without draining (a demo that failed): before its subscriber is closed."""
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join()


def pick_endpoint(requested: str | None) -> str:
    """``requested``, else tcp://127.0.0.1:5556 when free, else a free port on 127.0.0.1."""
    if requested:
        return requested
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", DEFAULT_PORT))
            return f"tcp://127.0.0.1:{DEFAULT_PORT}"
        except OSError:
            pass
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log.info("port %d is taken; publishing on %d instead", DEFAULT_PORT, port)
    return f"tcp://127.0.0.1:{port}"


@dataclass
class DemoResult:
    video: Path
    snapshot: Path
    frames_rendered: int
    final_stats: dict[str, Any]
    topics: dict[str, dict[str, Any]]
    endpoint: str

    def summary(self) -> str:
        s = self.final_stats
        class_map = self.topics.get(contracts.topic_name(contracts.default_namespace("front"), "class_map")) or {}
        lat = class_map.get("latency_ms")
        lat_text = f"capture-to-subscriber latency p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms" if lat else (
            "no masks reached the subscriber"
        )
        # Missing seq numbers also count the frames the node's keep-latest queue dropped on purpose, so the
        # subscriber's losses are what the node published minus what arrived.
        missed = max(0, s["published"] - class_map.get("count", 0))
        infer = (s.get("latency_ms") or {}).get("infer") or {}
        infer_text = f" (inference p50 {infer['p50']:.1f} ms)" if infer else ""
        return (
            f"The node ran {s['model_id']} on {s['provider']} over {s['uptime_s']:.1f} s of the synthetic drive: "
            f"{s['frames_in']} frames captured, {s['published']} published at {s['output_fps']:.1f} FPS"
            f"{infer_text}; {lat_text}; {s['dropped']} frames dropped by the node's keep-latest queue and "
            f"{missed} published frames missed by the subscriber. Masks went out on {self.endpoint}; "
            f"{self.frames_rendered} overlay frames were written."
        )


def run_demo(config: DemoConfig, *, stop: threading.Event | None = None, out=print) -> DemoResult:
    """Run the demo for ``config.duration_s`` seconds (or until ``stop``); returns what it made.

    Raises ModelError when the model (or the shipped default) is missing, PublishError when the
    endpoint cannot be bound, ConfigError for an unwritable output folder or, without
    ``config.overwrite``, one holding an earlier demo's files (``claim_out``).
    """
    from perception.engines import load_engine
    from perception.modelfile import check_model_path
    from perception.overlay import render_overlay
    from perception.pipeline import Pipeline
    from perception.publish import MaskPublisher
    from perception.run_config import DEFAULT_MODEL, RunConfig
    from perception.sinks import FrameSink
    from perception.subscribe import MaskSubscriber

    stop = stop or threading.Event()
    model = config.model or DEFAULT_MODEL
    if config.model:
        check_model_path(model)  # the words every command uses for a --model that is not there
    elif not Path(model).is_file():
        raise ModelError(f"the shipped default model {model} is missing; pass --model model.onnx or run "
                         "'make default-model'")
    video_path, snapshot_path = config.out_dir / "demo.mp4", config.out_dir / "demo.png"
    claim_out(config.out_dir, (video_path, snapshot_path), overwrite=config.overwrite)
    endpoint = pick_endpoint(config.endpoint)
    run_config = RunConfig(
        source="synthetic", model=str(model), queue="latest", source_options=config.source_options,
        engine_options=config.engine_options,
        # The demo's own subscriber must have joined before the first frame goes out, or a fast
        # start publishes frames nobody receives and the summary counts them as missed.
        publish_options=PublishOptions(endpoint=endpoint, camera_name="front", wait_subscribers=1),
    )
    namespace = run_config.publish_options.resolved_namespace
    sink = FrameSink(video_path, fps=VIDEO_FPS)  # made first: an unwritable --out fails before the model loads
    snapshot = FrameSink(snapshot_path, fps=VIDEO_FPS)
    engine = publisher = source = subscriber = pipeline = receiver = None
    try:
        engine = load_engine("ort", model, config.engine_options)
        publisher = MaskPublisher(endpoint=endpoint, namespace=namespace, sndhwm=run_config.publish_options.sndhwm)
        subscriber = MaskSubscriber(endpoint, namespace=namespace)
        source = KeepingSyntheticSource(config.source_options)
        pipeline = Pipeline(run_config, source=source, engine=engine, publisher=publisher)
        table = engine.metadata.class_table
        out(f"demo: {source.describe()} -> {engine.describe()} -> {endpoint} ({namespace}/*)")
        start_s = time.monotonic()
        # Receiving and time-stamping run in their own thread, drawing here (see the module docstring).
        receiver = _Receiver(subscriber, start_s)
        receiver.start()
        pipeline.start()
        next_report_s = start_s + 1.0
        next_render_s = start_s
        end_s = start_s + config.duration_s
        last_caption = ""
        while not stop.is_set() and time.monotonic() < end_s and not pipeline.wait(0):
            msg = receiver.take_class_map(timeout_s=0.05)
            now_s = time.monotonic()
            if msg is not None and now_s >= next_render_s:
                image = source.image(msg.seq)
                if image is not None:
                    next_render_s = now_s + 1.0 / VIDEO_FPS
                    frame = render_overlay(image, msg.data, table, caption=f"seq {msg.seq}  {last_caption}")
                    sink.write(frame)
                    snapshot.write(frame)
            if now_s >= next_report_s:
                next_report_s = now_s + 1.0
                with receiver.lock:
                    last_caption = _report(receiver.stats, now_s, now_s - start_s, out)
        pipeline.stop("demo finished")
        final = pipeline.finish()
        # Frames published while the node stopped are still on their way: the receiver counts them too.
        receiver.finish()
        stats = receiver.stats
    finally:
        if receiver is not None:
            receiver.close()  # its thread uses the subscriber's socket: ended before that is closed
        if pipeline is None and source is not None:
            source.close()
        for closable in (subscriber, publisher, engine):
            if closable is not None:
                closable.close()
        snapshot.close()
        sink.close()  # last: the folders it made go again when nothing was written (a failed start)
    duration_s = time.monotonic() - start_s
    return DemoResult(
        video=video_path,
        snapshot=snapshot_path,
        frames_rendered=sink.frames,
        final_stats=final,
        topics={t: s.summary(duration_s) for t, s in sorted(stats.items())},
        endpoint=endpoint,
    )


def claim_out(out_dir: Path, files: tuple[Path, ...], *, overwrite: bool) -> None:
    """ConfigError before any work when ``files`` (the demo's video and snapshot in ``out_dir``) are
    already there without ``overwrite`` (``perception demo`` sets it when ``--out`` is not given:
    ``out/`` is the demo's own), or a folder stands in the place of one. The files are replaced
    only when the new ones are written, so a demo that fails leaves them as they were; nothing
    else in the folder is touched."""
    from perception.overwrite import refuse_earlier_output

    for path in files:
        if path.is_dir() and not path.is_symlink():
            what = "overlay video" if path.suffix == ".mp4" else "snapshot"
            raise ConfigError(f"--out {out_dir}: {path} is a folder, where the demo writes its {what}; remove it or "
                              "choose another --out")
    earlier = [path for path in files if path.exists() or path.is_symlink()]
    refuse_earlier_output(out_dir, earlier, flag="--out", what="an earlier demo", overwrite=overwrite)


def _report(stats: dict, now_s: float, elapsed_s: float, out) -> str:
    """Print one line per topic for the last second; returns a short caption for the video."""
    if not stats:
        out(f"[{elapsed_s:3.0f} s] waiting for the first masks ...")
        return ""
    out(f"[{elapsed_s:3.0f} s]")
    caption = ""
    for topic, s in sorted(stats.items()):
        w = s.window(now_s)
        lat = w["latency_ms"]
        lat_text = f"latency p50 {lat['p50']:6.1f} p99 {lat['p99']:6.1f} ms" if lat else "latency      -"
        # Missing capture numbers, split as `listen` does: lost in transport, or dropped by the node's
        # keep-latest queue (which the summary counts apart from what the subscriber missed).
        out(f"  {topic:<30} {w['rate_hz']:5.1f} Hz  {lat_text}  missing {w['missing']} "
            f"(lost {w['lost']}, node {w['node_dropped']})")
        if topic.endswith("/class_map") and lat:
            caption = f"{w['rate_hz']:.1f} Hz  latency p50 {lat['p50']:.0f} ms"
    return caption
