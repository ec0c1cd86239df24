"""Viewing: camera images with the masks blended in, shown in a window or written to MP4 / PNG.

The drawing is ``perception.overlay.render_overlay`` and the outputs are ``perception.sinks``;
``perception view`` runs them in one of two ways:

- ``--source SPEC --model m.onnx``: reads the source and runs the model itself (no node needed);
- ``--endpoint E --namespace NS [--source SPEC] [--model m.onnx]``: draws the masks a running node
  publishes (the class map in the model's class colours when ``--model`` names the node's model,
  else the drivable / lane / obstacle masks as tints). With a
  reproducible ``--source`` (the synthetic world with the node's ``--seed``, or the node's video
  file) each mask is drawn over the source frame with the same ``seq``; without one the masks are
  drawn on a dark background.

Output: a window when a display exists ($DISPLAY / $WAYLAND_DISPLAY) and ``--out`` is not given;
otherwise ``--out`` (default ``out/view.mp4``): ``*.mp4``/``*.avi`` a video, ``*.png`` the last
frame, a folder numbered PNGs. A video plays at ``--fps`` when given, else at the source's own rate
(``source_rate``: a video file's or stream's reported one, the synthetic camera's), else at
``DEFAULT_VIDEO_FPS``. When no frame could be rendered (the source delivered none, stopped before the
first) a file output is a ``SourceError`` saying why; a window warns. Drawing a node's masks when
nothing at all arrived is a ``SourceUnavailableError`` (exit 4, as ``listen`` and ``record``),
whatever the output.

Run: ``perception view --source synthetic --model m.onnx --out out/view.mp4 --max-frames 100``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception import contracts
from perception.config import composed, setting, short
from perception.errors import ConfigError, SourceError, SourceUnavailableError
from perception.options import EngineOptions, SourceOptions, synthetic_size_error
from perception.overlay import render_overlay
from perception.run_config import split_camera_source
from perception.sinks import DEFAULT_VIDEO_FPS, FrameSink, resolve_output
from perception.sources.synthetic import DEFAULT_FPS as SYNTHETIC_DEFAULT_FPS
from perception.stats import RateLimitedLog

log = logging.getLogger(__name__)


@dataclass
class ViewConfig:
    """The flags of ``perception view`` (and the parameters of a ``view`` launch node)."""

    source: str | list[str] | None = setting(
        None, metavar="[CAMERA=]SOURCE",
        help="camera/video/images/synthetic (as for 'perception run'; one source, a camera name in front is allowed)")
    model: Path | None = setting(None, help="ONNX model: run it here, or (with --endpoint) its class colours")
    endpoint: str | None = setting(None, help="draw the masks a node publishes here instead of running a model")
    namespace: str | None = setting(None, help="with --endpoint: the node's namespace, e.g. perception/front")
    source_options: SourceOptions = composed(
        SourceOptions, only=("seed", "width", "height", "fps"), group=None,
        help={"seed": "seed of the synthetic source (match the node's)",
              "fps": f"source rate (match the node's for synthetic) and the video's frame rate (default: the "
                     f"source's own rate: a video file's or stream's, the synthetic camera's {SYNTHETIC_DEFAULT_FPS:g}; else "
                     f"{DEFAULT_VIDEO_FPS:g})"})
    out: Path | None = setting(None, help="*.mp4/*.avi video, *.png last frame, or a folder of PNGs (default: a window "
                                          "when there is a display, else out/view.mp4)")
    max_frames: int | None = setting(None, lo=0, metavar="N", help="stop after N frames (0: no limit)")
    duration_s: float | None = setting(None, lo=0, flag="--duration", metavar="S", old_names=("duration",),
                                       help="stop after S seconds (0: no limit)")
    alpha: float = setting(0.5, lo=0.0, hi=1.0, help="mask opacity")
    engine_options: EngineOptions = composed(EngineOptions, only=("provider",), group=None)

    def __post_init__(self) -> None:
        if isinstance(self.source, list):
            if len(self.source) != 1:
                raise ValueError(f"--source given {len(self.source)} times ({', '.join(short(s) for s in self.source[:3])}): "
                                 "a view draws one source; run one view per camera")
            self.source = self.source[0]
        if self.source is not None:
            # ``front=clip.mp4``, as ``perception run`` and launch files name a camera's source.
            self.source = split_camera_source(self.source)[1]
        if self.endpoint is None and (self.source is None or self.model is None):
            raise ValueError("give --source and --model (run the model here) or --endpoint and --namespace (draw a node's masks)")
        if self.endpoint is not None and not self.namespace:
            raise ValueError("--endpoint needs --namespace, e.g. perception/front")
        if self.endpoint is None and self.source is not None and self.source.strip() == "synthetic":
            problem = synthetic_size_error(self.source_options.width, self.source_options.height, self.source_options.fps)
            if problem:
                raise ValueError(problem)


def run_view(config: ViewConfig, *, stop: threading.Event | None = None) -> int:
    """Run ``perception view`` until the input ends, a limit is reached, the window closes or ``stop`` is set.

    Returns the number of frames rendered (at least 1 when the output is a file). Raises
    ConfigError / SourceError / ModelError / PublishError for bad inputs (before the first frame),
    and SourceError saying why when a file output got no frame at all.
    """
    stop = stop or threading.Event()
    out = resolve_output(config.out)
    _check_out_spares_source(out, config.source)
    sink = FrameSink(out, fps=config.source_options.fps or DEFAULT_VIDEO_FPS)
    # 0 (as for 'perception run') or None: no limit
    deadline = time.monotonic() + config.duration_s if config.duration_s else None
    ended: list[str] = []  # why the frames ran out, as the frame generator knows it
    rate: list[float] = []  # the source's own frame rate, once the generator has opened it
    if config.endpoint is None:
        frames = _model_frames(config, stop, ended, rate)
    else:
        frames = _node_frames(config, stop, deadline, ended, rate)
    try:
        for frame in frames:
            if sink.frames == 0 and rate and not config.source_options.fps:
                sink.fps = rate[0]  # before the first frame opens the video: it plays at the source's pace
            if not sink.write(frame) or stop.is_set():
                break
            if config.max_frames and sink.frames >= config.max_frames:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
    finally:
        frames.close()
        sink.close()
    if sink.frames == 0:
        nothing = [why for why in ended if isinstance(why, NothingReceived)]
        if nothing:  # no node there: exit 4 whatever the output, as listen and record
            raise SourceUnavailableError(
                f"nothing rendered{f', so nothing written to {sink.out}' if sink.out is not None else ''}: {nothing[0]}")
        why = "stopped before the first frame" if stop.is_set() else (ended[-1] if ended else "the input ended")
        if sink.out is not None:
            raise SourceError(f"nothing rendered, so nothing written to {sink.out}: {why}")
        log.warning("nothing rendered: %s", why)
    elif sink.out is not None:
        log.info("wrote %d frame(s) to %s", sink.frames, sink.out)
    return sink.frames


class NothingReceived(str):
    """Why a view of a node's masks ended empty when nothing at all arrived (no node there)."""


def source_rate(source) -> float | None:
    """The frame rate a source delivers at by itself: a video file's or stream's reported rate
    (``native_fps``; a source that sets it, as a camera could with its granted rate, is taken
    alike), the synthetic camera's ``fps``; None when it does not say (image folders)."""
    for name in ("native_fps", "fps"):
        value = getattr(source, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 10_000:
            return float(value)
    return None


def _check_out_spares_source(out: Path | None, source: str | None) -> None:
    """ConfigError when writing ``out`` would overwrite the ``--source`` file or folder being read
    (``--out in.mp4`` for ``--source in.mp4``, PNGs into the image folder being read)."""
    if out is None or source is None or not Path(source).exists():
        return  # a camera, the synthetic world or a URL
    src, dst = Path(source).resolve(), out.resolve()
    if dst == src or src in dst.parents:
        raise ConfigError(f"--out {out} would overwrite the --source {source} it reads; choose another --out")


def _open_source(config: ViewConfig, *, paced: bool):
    from perception.sources import open_source

    source = open_source(config.source, config.source_options)
    if not paced:
        source.pace(None)  # pairing with a node's seq: read as fast as needed to catch up
    return source


def _model_frames(config: ViewConfig, stop: threading.Event, ended: list[str], rate: list[float]):
    from perception.engines import load_engine
    from perception.masks import unknown_marker_for
    from perception.preprocess import Preprocessor

    engine = load_engine("ort", config.model, config.engine_options)
    # Drawn as the node publishes it: unsure pixels are unknown (unpainted), at the model's threshold.
    unknown = unknown_marker_for(engine.has_confidence, engine.metadata.unknown_threshold, None, model=engine.model_id)
    source = _open_source(config, paced=config.out is None)
    rate.extend([r] if (r := source_rate(source)) else [])
    prep = Preprocessor(engine.input_hw)
    table = engine.metadata.class_table
    try:
        while not stop.is_set():
            frame = source.read()
            if frame is None:
                corrupt = f" ({source.corrupt} corrupt)" if source.corrupt else ""
                ended.append(f"{source.describe()} delivered no frames{corrupt}; check --source")
                return
            t0 = time.perf_counter()
            outputs = engine.infer(prep(frame.image))
            class_ids = outputs[contracts.OUTPUT_CLASS_IDS][0]
            if unknown is not None:
                unknown.apply(class_ids, outputs[contracts.OUTPUT_CONFIDENCE][0])
            infer_ms = (time.perf_counter() - t0) * 1e3
            mapped = prep.letterbox.to_source(class_ids)
            caption = f"seq {frame.seq}  infer {infer_ms:.1f} ms  {engine.model_id}"
            yield render_overlay(frame.image, mapped, table, alpha=config.alpha, caption=caption)
    finally:
        source.close()
        engine.close()


def _node_frames(config: ViewConfig, stop: threading.Event, deadline: float | None, ended: list[str],
                 rate: list[float]):
    """Frames drawn from a node's masks; ends at ``deadline`` (monotonic s) even when none arrive.

    Appends to ``ended`` why it stopped early, when that explains an empty output."""
    from perception.modelfile import read_model_metadata
    from perception.subscribe import MaskSubscriber

    # With the model's class table the class map alone carries everything; without it the task
    # masks of one seq are gathered and drawn as tints.
    table = read_model_metadata(config.model).class_table if config.model else None
    wanted = ["class_map"] if table is not None else ["drivable", "lane", "obstacle"]
    source = _open_source(config, paced=False) if config.source else None
    rate.extend([r] if source is not None and (r := source_rate(source)) else [])
    sub = MaskSubscriber(config.endpoint, namespace=config.namespace, masks=wanted)
    limited = RateLimitedLog(log)
    frame = None
    pending: dict[str, np.ndarray] = {}
    pending_seq = -1
    received = False
    skipped = 0  # messages that arrived but are not masks
    started = time.monotonic()
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            msg = sub.recv(timeout_s=0.2)
            if msg is None:
                continue
            if msg.kind != contracts.KIND_MASK:  # a JSON document on a mask topic: not drawable
                skipped += 1
                limited.warning("kind", "skipped a %r message on mask topic %s", msg.kind, msg.topic)
                continue
            received = True
            if msg.seq != pending_seq:
                pending, pending_seq = {}, msg.seq
            pending[msg.topic.rsplit("/", 1)[-1]] = msg.data
            if len(pending) < len(wanted):
                continue
            while source is not None and (frame is None or frame.seq < msg.seq):
                frame = source.read()
                if frame is None:
                    ended.append(
                        f"--source {config.source} ended before frame seq {msg.seq} of the node's masks; "
                        "give the node's own source (and --seed)"
                    )
                    return
            if frame is not None and frame.seq == msg.seq:
                image = frame.image
            else:
                image = np.zeros((*msg.data.shape, 3), np.uint8)
            caption = f"seq {msg.seq}  {msg.header['model_id']}"
            if table is not None:
                yield render_overlay(image, pending["class_map"], table, alpha=config.alpha, caption=caption)
            else:
                yield render_overlay(image, None, None, task_masks=pending, alpha=config.alpha, caption=caption)
            pending = {}
        if not received:
            limit = config.duration_s if config.duration_s and not stop.is_set() else None
            waited = f" in {limit if limit else time.monotonic() - started:.1f} s"
            if sub.counters.malformed or sub.counters.version_mismatch or skipped:
                ended.append(f"no drawable masks from {config.endpoint} under {config.namespace}{waited}: every "
                             f"message was skipped ({sub.last_error or 'not a mask'}); check --namespace and versions")
            else:
                ended.append(NothingReceived(
                    f"no masks received from {config.endpoint} under {config.namespace}{waited}; "
                    "is the node running? check --endpoint / --namespace"))
    finally:
        sub.close()
        if source is not None:
            source.close()
