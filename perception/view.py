"""Viewing: camera images with the masks blended in, shown in a window or written to MP4 / PNG.

The drawing is ``perception.overlay.render_overlay`` and the outputs are ``perception.sinks``;
``perception view`` runs them in one of two ways:

- ``--source SPEC [--model m.onnx]``: reads the source and runs the model itself (no node needed;
  without ``--model`` the shipped default model, as ``perception run`` takes);
- ``--endpoint E --namespace NS [--source SPEC]``: draws the masks a running node publishes: the
  class map in the colours of the node's own class table (its latched ``<NS>/info``, which names
  the model that made the masks). ``--model`` is not needed there; given, it is only the table to
  fall back on when no info arrives within ``INFO_WAIT_S`` of the first mask (said once; without it
  the drivable / lane / obstacle masks are drawn as tints), and a table of its that differs from
  the node's is said once and not used. An endpoint that sends only some masks (a replay of a
  recording of some topics, a node of another make) gets what arrives drawn: without class maps
  its drivable / lane / obstacle masks as tints, said once; class maps with no table to colour
  them are not drawn, said once. ``--curve-server-key`` / ``--curve-key`` reach a node that
  encrypts (as ``listen`` and ``record``). With a reproducible ``--source`` (the synthetic world
  with the node's ``--seed``, or the node's video file) each mask is drawn over the source frame
  with the same ``seq``; without one the masks are drawn on a dark background.

Output: a window when a display can be opened and ``--out`` is not given (a $DISPLAY that is set
but cannot be opened falls back with one warning naming it: ``sinks.window_unavailable``);
otherwise ``--out`` (default ``out/view.mp4``, checked writable before any work): ``*.mp4``/``*.avi`` a video, ``*.png`` the last
frame, a folder numbered PNGs. A video plays at ``--fps`` when given, else at the source's own rate
(``sources.native_rate``: a video file's or stream's reported one, the synthetic camera's), else, for a
node's masks, at the node's rate measured from its first masks' capture times (``node_rate``), else
at ``DEFAULT_VIDEO_FPS``; frames of another size than the first are letterboxed into it. An existing
``--out`` file is refused unless ``--overwrite`` (the default ``out/view.mp4`` is view's own and is
replaced); a folder must be new, empty or an earlier view's frames, which are replaced whole when
the first new frame comes (as ``perception synth`` replaces its own output), so a shorter run leaves
no stale frames. When no frame could be rendered (the source delivered none, stopped before the
first) a file output is a ``SourceError`` saying why and an earlier output is left as it was; a
window warns. Drawing a node's masks when no mask arrived is a ``SourceUnavailableError`` (exit 4,
as ``listen`` and ``record``), whatever the output, naming the node's info when only that came; when
masks came only under deeper namespaces (``--namespace perception`` on a node of several cameras,
whose masks are under ``perception/<camera>``) a ``ConfigError`` naming them and the
``--namespace`` to give (``view_node._DeeperNamespaces``);
masks that arrived with none drawable (class maps without a class table) a ``SourceError`` naming
what came and what is missing.

Run: ``perception view --source synthetic --model m.onnx --out out/view.mp4 --max-frames 100``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from perception import contracts
from perception.config import composed, same_setting, setting, short
from perception.errors import ConfigError, ModelError, SourceError, SourceUnavailableError
from perception.options import (
    CurveClientOptions,
    EngineOptions,
    SourceOptions,
    leading_slash_error,
    synthetic_size_error,
)
from perception.overlay import render_overlay
from perception.overwrite import remove_earlier_output
from perception.run_config import DEFAULT_MODEL, split_camera_source
from perception.sinks import DEFAULT_VIDEO_FPS, FOLDER_FRAME_NAME, FrameSink, resolve_output
from perception.sources import native_rate
from perception.sources.synthetic import DEFAULT_FPS as SYNTHETIC_DEFAULT_FPS
from perception.view_node import ElsewhereReceived, NothingReceived, WrongSource, node_frames

log = logging.getLogger(__name__)


@dataclass
class ViewConfig:
    """The flags of ``perception view`` (and the parameters of a ``view`` launch node)."""

    source: str | list[str] | None = setting(
        None, metavar="[CAMERA=]SOURCE",
        help="camera/video/images/synthetic (as for 'perception run'; one source, a camera name in front is allowed)")
    model: Path | None = setting(None, help=f"ONNX model to run here on --source (default: the shipped {DEFAULT_MODEL.name}, "
                                            "as for 'perception run'); with --endpoint not needed (the node's class "
                                            "table from its info is used), only a fallback when no info arrives")
    endpoint: str | None = setting(None, help="draw the masks a node publishes here instead of running a model")
    namespace: str | None = setting(None, help="with --endpoint: the node's namespace, e.g. perception/front")
    source_options: SourceOptions = composed(
        SourceOptions, only=("seed", "width", "height", "fps"), group=None,
        help={"seed": "seed of the synthetic source (match the node's)",
              "fps": f"source rate (match the node's for synthetic) and the video's frame rate (default: the "
                     f"source's own rate: a video file's or stream's, the synthetic camera's {SYNTHETIC_DEFAULT_FPS:g}; "
                     f"without one, a node's rate measured from its masks' capture times; else {DEFAULT_VIDEO_FPS:g})"})
    out: Path | None = setting(None, help="*.mp4/*.avi video, *.png last frame, or a folder of PNGs (default: a window "
                                          "when there is a display, else out/view.mp4)")
    overwrite: bool = setting(False, help="replace an existing --out .mp4/.avi/.png file instead of refusing to start "
                                          "(a folder of an earlier view's frames is replaced without it)")
    max_frames: int = setting(0, lo=0, metavar="N", help="stop after N frames (0: no limit)")
    duration_s: float = setting(0.0, lo=0, flag="--duration", metavar="S", old_names=("duration",),
                                       help="stop after S seconds (0: no limit)")
    alpha: float = setting(0.5, lo=0.0, hi=1.0, help="mask opacity")
    engine_options: EngineOptions = composed(EngineOptions, only=("provider",), group=None)
    # The client's CURVE keys, declared once for listen, record and view.
    curve_server_key: str | None = same_setting(CurveClientOptions, "curve_server_key")
    curve_key: str | None = same_setting(CurveClientOptions, "curve_key")

    def __post_init__(self) -> None:
        if isinstance(self.source, list):
            if len(self.source) != 1:
                raise ValueError(f"--source given {len(self.source)} times ({', '.join(short(s) for s in self.source[:3])}): "
                                 "a view draws one source; run one view per camera")
            self.source = self.source[0]
        if self.source is not None:
            # ``front=clip.mp4``, as ``perception run`` and launch files name a camera's source.
            self.source = split_camera_source(self.source)[1]
        if self.endpoint is None and self.source is None:
            raise ValueError("give --source (run --model here, by default the shipped one) or --endpoint and --namespace "
                             "(draw a node's masks)")
        if self.endpoint is not None and not self.namespace:
            raise ValueError("--endpoint needs --namespace, e.g. perception/front")
        if self.namespace and (problem := leading_slash_error("--namespace", self.namespace, publishing=False)):
            raise ValueError(problem)
        if self.endpoint is None and (self.curve_server_key or self.curve_key):
            raise ValueError("--curve-server-key / --curve-key are for drawing a node's masks (--endpoint); "
                             "a model run here needs no keys")
        if self.source is not None and self.source.strip() == "synthetic":  # images for a node's masks too
            problem = synthetic_size_error(self.source_options.width, self.source_options.height, self.source_options.fps)
            if problem:
                raise ValueError(problem)


class SeqGaps:
    """The node's frames a view never received (``missing``: gaps in ``seq`` between the masks that
    came), of them ``lost`` in transport (gaps in a topic's ``pub_seq``, as ``listen`` splits them;
    the rest the node dropped), and frames left out as they came without some mask (``incomplete``)."""

    def __init__(self) -> None:
        self.missing = self.lost = self.incomplete = 0
        self._seq: int | None = None
        self._pub: dict[str, int | None] = {}  # topic -> its last pub_seq

    def add(self, topic: str, seq: int, pub_seq: int | None) -> None:
        last_pub, self._pub[topic] = self._pub.get(topic), pub_seq
        if self._seq is None or seq < self._seq:  # the first, or the node started again: no gap to tell
            self._seq = seq
        elif seq > self._seq:
            gap, self._seq = seq - self._seq - 1, seq
            self.missing += gap
            lost = gap if pub_seq is None or last_pub is None else max(0, pub_seq - last_pub - 1)
            self.lost += min(gap, lost)


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
    try:
        # No --out at all: out/view.mp4 is view's own file, replaced each time.
        stale = _claim_out(out, overwrite=config.overwrite or config.out is None)
    except BaseException:
        sink.close()
        raise
    # 0 (as for 'perception run') or None: no limit
    deadline = time.monotonic() + config.duration_s if config.duration_s else None
    ended: list[str] = []  # why the frames ran out, as the frame generator knows it
    rate: list[float] = []  # the source's own frame rate, once the generator has opened it
    gaps = SeqGaps()  # the node's frames that never came (a view of a node)
    if config.endpoint is None:
        frames = _model_frames(config, stop, ended, rate)
    else:
        # A video's rate is fixed when it opens: measured from the node's first masks when nothing else gives it.
        measure = sink.mode == "video" and not config.source_options.fps
        frames = node_frames(config, stop, deadline, ended, rate, measure_rate=measure, gaps=gaps)
    try:
        for frame in frames:
            if sink.frames == 0:
                if rate and not config.source_options.fps:
                    sink.fps = rate[0]  # before the first frame opens the video: it plays at the source's pace
                remove_earlier_output(stale, folder=out, flag="--out", what="a frame of an earlier view")
            if not sink.write(frame) or stop.is_set():
                break
            if config.max_frames and sink.frames >= config.max_frames:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
    finally:
        frames.close()
        sink.close()
    if gaps.missing or gaps.incomplete:
        log.warning("%s: %d of the node's frames never arrived (gaps in seq: lost in transport %d, dropped by the "
                    "node %d)%s; the output jumps over them",
                    f"{config.endpoint} under {config.namespace}", gaps.missing, gaps.lost, gaps.missing - gaps.lost,
                    f", {gaps.incomplete} more came without all their masks" if gaps.incomplete else "")
    if sink.frames == 0:
        kept = f" (the earlier {len(stale)} frame(s) there are left as they were)" if stale else ""
        # masks came, under the cameras' namespaces below --namespace, or of another source's frames: the flag to change
        elsewhere = [why for why in ended if isinstance(why, (ElsewhereReceived, WrongSource))]
        if elsewhere:
            raise ConfigError(
                f"nothing rendered{f', so nothing written to {sink.out}{kept}' if sink.out is not None else ''}: "
                f"{elsewhere[0]}")
        nothing = [why for why in ended if isinstance(why, NothingReceived)]
        if nothing:  # no node there: exit 4 whatever the output, as listen and record
            raise SourceUnavailableError(
                f"nothing rendered{f', so nothing written to {sink.out}{kept}' if sink.out is not None else ''}: {nothing[0]}")
        why = "stopped before the first frame" if stop.is_set() else (ended[-1] if ended else "the input ended")
        if sink.out is not None:
            raise SourceError(f"nothing rendered, so nothing written to {sink.out}{kept}: {why}")
        log.warning("nothing rendered: %s", why)
    elif sink.mode == "png":
        log.info("wrote the last of %d frame(s) to %s", sink.frames, sink.out)
    elif sink.out is not None:
        log.info("wrote %d frame(s) to %s", sink.frames, sink.out)
    return sink.frames


def _check_out_spares_source(out: Path | None, source: str | None) -> None:
    """ConfigError when writing ``out`` would overwrite the ``--source`` file or folder being read
    (``--out in.mp4`` for ``--source in.mp4``, PNGs into the image folder being read)."""
    if out is None or source is None:
        return
    try:
        if not Path(source).exists():
            return  # a camera, the synthetic world or a URL
    except PermissionError:
        return  # a folder on the way that may not be entered: opening the source says so, in one line
    src, dst = Path(source).resolve(), out.resolve()
    if dst == src or src in dst.parents:
        raise ConfigError(f"--out {out} would overwrite the --source {source} it reads; choose another --out")


def _claim_out(out: Path | None, *, overwrite: bool) -> list[Path]:
    """What an earlier output in ``out`` means for this view, checked before any work.

    An existing file (``.mp4``, ``.avi``, ``.png``) is ConfigError without ``overwrite``, as for
    ``perception record`` (a folder named so, or a path that cannot be written, FrameSink has
    refused already); it is replaced when the new one is written. A folder follows
    ``perception synth``'s rule for its output: it must be new, empty or an earlier view's output
    (nothing but its numbered frames, ``FOLDER_FRAME_NAME``), whose frames are returned, to be
    removed when the first new frame comes (``overwrite.remove_earlier_output``), so a shorter run leaves
    none of them behind; a folder holding anything else is ConfigError and left untouched.
    """
    if out is None:
        return []
    if out.suffix:  # a file output (FrameSink has refused other suffixes)
        if out.exists() or out.is_symlink():
            if not overwrite:
                raise ConfigError(f"--out {out} already exists; choose another --out, or pass --overwrite to replace it")
            log.info("replacing %s", out)
        return []
    if not out.is_dir():
        return []  # made by FrameSink just now
    frames: list[Path] = []
    others: list[str] = []
    for path in sorted(out.iterdir()):
        if FOLDER_FRAME_NAME.fullmatch(path.name) and path.is_file() and not path.is_symlink():
            frames.append(path)
        else:
            others.append(path.name + ("/" if path.is_dir() else ""))
    if others:
        raise ConfigError(f"--out {out} holds files that are not an earlier view's frames ({short(others)}); "
                          "choose a new or empty folder")
    if frames:
        log.info("replacing the %d frame(s) of an earlier view in %s", len(frames), out)
    return frames


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

    if config.model is None and not DEFAULT_MODEL.is_file():
        raise ModelError(f"no --model given and the shipped default model {DEFAULT_MODEL} is missing; "
                         "pass --model model.onnx or run 'make default-model'")
    engine = load_engine("ort", config.model or DEFAULT_MODEL, config.engine_options)
    # Drawn as the node publishes it: unsure pixels are unknown (unpainted), at the model's threshold.
    unknown = unknown_marker_for(engine.has_confidence, engine.metadata.unknown_threshold, None, model=engine.model_id)
    source = _open_source(config, paced=config.out is None)
    rate.extend([r] if (r := native_rate(source)) else [])
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

