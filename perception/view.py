"""Viewing: camera images with the masks blended in, shown in a window or written to MP4 / PNG.

``render_overlay(image_bgr, class_map, class_table)`` is the library piece (``perception demo``
and the tests use it): class colours from the model's class table, optional drivable / lane /
obstacle tints, and a colour legend beside the image.

``perception view`` runs it in one of two ways:

- ``--source SPEC --model m.onnx``: reads the source and runs the model itself (no node needed);
- ``--endpoint E --namespace NS [--source SPEC] [--model m.onnx]``: draws the masks a running node
  publishes (the class map in the model's class colours when ``--model`` names the node's model,
  else the drivable / lane / obstacle masks as tints). With a
  reproducible ``--source`` (the synthetic world with the node's ``--seed``, or the node's video
  file) each mask is drawn over the source frame with the same ``seq``; without one the masks are
  drawn on a dark background.

Output: a window when a display exists ($DISPLAY / $WAYLAND_DISPLAY) and ``--out`` is not given;
otherwise ``--out`` (default ``out/view.mp4``): ``*.mp4``/``*.avi`` a video, ``*.png`` the last
frame, a folder numbered PNGs. When no frame could be rendered (the source delivered none, no node
published, stopped before the first) a file output is a ``SourceError`` saying why; a window warns.

Run: ``perception view --source synthetic --model m.onnx --out out/view.mp4 --max-frames 100``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from perception import contracts
from perception.config import bounds
from perception.contracts import ClassTable
from perception.errors import ConfigError, SourceError
from perception.stats import RateLimitedLog

log = logging.getLogger(__name__)

#: BGR tints of the task masks (used when no class map is at hand, e.g. a node publishing tasks only).
TASK_TINTS_BGR: dict[str, tuple[int, int, int]] = {
    "drivable": (80, 200, 60),  # green
    "lane": (0, 230, 255),  # yellow
    "obstacle": (40, 40, 230),  # red
}
#: Frame rate of written videos when --fps is not given.
DEFAULT_VIDEO_FPS = 10.0
VIDEO_SUFFIXES = {".mp4": "mp4v", ".avi": "MJPG"}
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def render_overlay(
    image_bgr: np.ndarray,
    class_map: np.ndarray | None,
    class_table: ClassTable | None,
    *,
    task_masks: dict[str, np.ndarray] | None = None,
    alpha: float = 0.5,
    legend: bool = True,
    caption: str | None = None,
) -> np.ndarray:
    """Blend masks into a camera image and return a new BGR image.

    Args:
        image_bgr: uint8 H x W x 3 camera frame (not modified).
        class_map: uint8 class ids covering the whole frame at any scale (as the node publishes
            them: letterbox padding cut off), resized to the frame; ids outside the class table
            are left unpainted.
            None to draw only ``task_masks``.
        class_table: colours and names for ``class_map`` and the legend (needed with a class map).
        task_masks: optional ``{"drivable"|"lane"|"obstacle": 0/255 mask}`` painted with
            ``TASK_TINTS_BGR`` over the class colours.
        alpha: weight of the mask colours, 0..1.
        legend: append a legend panel to the right of the image listing the class table's colours
            and the tints used.
        caption: one line of text drawn at the bottom of the image (e.g. FPS and latency).

    Returns:
        uint8 BGR image: H x W x 3, or wider (and at least tall enough for the legend) with ``legend``.

    Raises:
        ValueError: a non-BGR image, or a class map without a class table (caller bugs).
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 H x W x 3 BGR image, got {image_bgr.dtype} {image_bgr.shape}")
    if class_map is not None and class_table is None:
        raise ValueError("a class map needs its class table for colours")
    hw = image_bgr.shape[:2]
    colour = image_bgr.copy()
    painted = np.zeros(hw, dtype=bool)
    entries: list[tuple[str, tuple[int, int, int]]] = []
    if class_map is not None:
        ids = _to_frame(class_map, hw)
        lut = np.zeros((256, 3), dtype=np.uint8)
        known = np.zeros(256, dtype=bool)
        for info in class_table.classes:
            if info.id < 256:
                lut[info.id] = info.color[::-1]  # table colours are RGB
                known[info.id] = True
        colour = np.where(known[ids][..., None], lut[ids], colour)
        painted |= known[ids]
        # Every class, not only those in view: the frame size then stays the same from frame to frame.
        entries += [(c.name, tuple(int(v) for v in c.color[::-1])) for c in class_table.classes]
    for task, mask in (task_masks or {}).items():
        tint = TASK_TINTS_BGR.get(task)
        if tint is None:
            raise ValueError(f"unknown task {task!r}; known: {', '.join(TASK_TINTS_BGR)}")
        on = _to_frame(mask, hw) > 0
        colour[on] = tint
        painted |= on
        entries.append((task, tint))
    out = image_bgr.copy()
    blended = cv2.addWeighted(image_bgr, 1.0 - alpha, colour, alpha, 0.0)
    out[painted] = blended[painted]
    if caption:
        _draw_caption(out, caption)
    return _with_legend(out, entries) if legend else out


def _to_frame(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A mask resized to the frame. Masks cover the whole frame (wire v2: the letterbox padding is
    cut and ``roi`` is the frame), so this is a plain nearest resize, sampled at pixel centres; a
    crop of padding here would shift them by a pixel."""
    if mask.shape[:2] == hw:
        return mask
    return cv2.resize(mask, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST_EXACT)


def _draw_caption(image: np.ndarray, text: str) -> None:
    scale = max(0.3, image.shape[0] / 900)
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
    y = image.shape[0] - base - 3
    cv2.rectangle(image, (0, y - th - 3), (min(image.shape[1], tw + 6), image.shape[0]), (0, 0, 0), -1)
    cv2.putText(image, text, (3, y), _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


def _with_legend(image: np.ndarray, entries: list[tuple[str, tuple[int, int, int]]]) -> np.ndarray:
    # A panel beside the image rather than on it: the legend never hides part of the scene.
    h, w = image.shape[:2]
    scale = 0.4
    row_h = 16
    labels = entries or [("(no mask)", (60, 60, 60))]
    text_w = max(cv2.getTextSize(name, _FONT, scale, 1)[0][0] for name, _ in labels)
    panel_w = 8 + 12 + 6 + text_w + 8
    panel_h = max(h, 6 + row_h * len(labels))
    canvas = np.full((panel_h, w + panel_w, 3), 24, dtype=np.uint8)
    canvas[:h, :w] = image
    for i, (name, bgr) in enumerate(labels):
        y = 6 + i * row_h
        cv2.rectangle(canvas, (w + 8, y), (w + 20, y + 12), bgr, -1)
        cv2.putText(canvas, name, (w + 26, y + 10), _FONT, scale, (235, 235, 235), 1, cv2.LINE_AA)
    return canvas


# --------------------------------------------------------------------------------------------
# Where rendered frames go
# --------------------------------------------------------------------------------------------


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class FrameSink:
    """Receives rendered frames: a window, a video file, one PNG or a folder of PNGs.

    ``write(frame)`` returns False once the user closed the window (q or Esc). ``close()``
    finishes the file. Frames may change size; videos are fixed to the first frame's size.
    """

    def __init__(self, out: Path | None, *, fps: float) -> None:
        self.out = out
        self.fps = fps
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self._last: np.ndarray | None = None
        if out is None:
            self.mode = "window"
        elif out.suffix.lower() in VIDEO_SUFFIXES:
            self.mode = "video"
        elif out.suffix.lower() == ".png":
            self.mode = "png"
        elif out.suffix:
            raise ConfigError(f"--out {out}: unknown file type; use .mp4, .avi, .png or a folder for numbered PNGs")
        else:
            self.mode = "folder"
        if out is not None:
            target = out if self.mode == "folder" else out.parent
            try:
                target.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create {target} for --out: {exc.strerror}; choose a writable path") from None

    def write(self, frame: np.ndarray) -> bool:
        self.frames += 1
        self._last = frame
        if self.mode == "window":
            cv2.imshow("perception view", frame)
            return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)
        if self.mode == "video":
            if self._writer is None:
                self._size = (frame.shape[1], frame.shape[0])
                fourcc = cv2.VideoWriter_fourcc(*VIDEO_SUFFIXES[self.out.suffix.lower()])
                self._writer = cv2.VideoWriter(str(self.out), fourcc, self.fps, self._size)
                if not self._writer.isOpened():
                    raise ConfigError(f"OpenCV cannot write video {self.out}; try --out with .avi or a PNG folder")
            if (frame.shape[1], frame.shape[0]) != self._size:
                frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
            self._writer.write(frame)
        elif self.mode == "folder":
            self._imwrite(self.out / f"view_{self.frames:06d}.png", frame)
        return True

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.mode == "png" and self._last is not None:
            self._imwrite(self.out, self._last)
        if self.mode == "window":
            cv2.destroyAllWindows()

    @staticmethod
    def _imwrite(path: Path, frame: np.ndarray) -> None:
        if not cv2.imwrite(str(path), frame):
            raise ConfigError(f"cannot write {path}; choose a writable --out")


# --------------------------------------------------------------------------------------------
# perception view
# --------------------------------------------------------------------------------------------


@dataclass
class ViewConfig:
    """The flags of ``perception view`` (and the parameters of a ``view`` launch node)."""

    source: str | None = None
    model: Path | None = None
    endpoint: str | None = None
    namespace: str | None = None
    seed: int = 0
    width: int | None = field(default=None, metadata=bounds(16, 8192))
    height: int | None = field(default=None, metadata=bounds(16, 8192))
    fps: float | None = field(default=None, metadata=bounds(0.1, 1000.0))
    out: Path | None = None
    max_frames: int | None = field(default=None, metadata=bounds(1, None))
    duration: float | None = field(default=None, metadata=bounds(0.1, None))
    alpha: float = field(default=0.5, metadata=bounds(0.0, 1.0))
    provider: str = "auto"

    def __post_init__(self) -> None:
        if self.endpoint is None and (self.source is None or self.model is None):
            raise ValueError("give --source and --model (run the model here) or --endpoint and --namespace (draw a node's masks)")
        if self.endpoint is not None and not self.namespace:
            raise ValueError("--endpoint needs --namespace, e.g. perception/front")


def resolve_output(out: Path | None) -> Path | None:
    """``out`` as given; with none, a window if there is a display, else ``out/view.mp4``."""
    if out is not None or has_display():
        return out
    default = Path("out/view.mp4")
    log.info("no display ($DISPLAY / $WAYLAND_DISPLAY unset); writing %s", default)
    return default


def run_view(config: ViewConfig, *, stop: threading.Event | None = None) -> int:
    """Run ``perception view`` until the input ends, a limit is reached, the window closes or ``stop`` is set.

    Returns the number of frames rendered (at least 1 when the output is a file). Raises
    ConfigError / SourceError / ModelError / PublishError for bad inputs (before the first frame),
    and SourceError saying why when a file output got no frame at all.
    """
    stop = stop or threading.Event()
    sink = FrameSink(resolve_output(config.out), fps=config.fps or DEFAULT_VIDEO_FPS)
    deadline = None if config.duration is None else time.monotonic() + config.duration
    ended: list[str] = []  # why the frames ran out, as the frame generator knows it
    if config.endpoint is None:
        frames = _model_frames(config, stop, ended)
    else:
        frames = _node_frames(config, stop, deadline, ended)
    try:
        for frame in frames:
            if not sink.write(frame) or stop.is_set():
                break
            if config.max_frames is not None and sink.frames >= config.max_frames:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
    finally:
        frames.close()
        sink.close()
    if sink.frames == 0:
        why = "stopped before the first frame" if stop.is_set() else (ended[-1] if ended else "the input ended")
        if sink.out is not None:
            raise SourceError(f"nothing rendered, so nothing written to {sink.out}: {why}")
        log.warning("nothing rendered: %s", why)
    elif sink.out is not None:
        log.info("wrote %d frame(s) to %s", sink.frames, sink.out)
    return sink.frames


def _open_source(config: ViewConfig, *, paced: bool):
    from perception.sources import open_source

    source = open_source(config.source, width=config.width, height=config.height, fps=config.fps, seed=config.seed)
    if not paced:
        source.pace(None)  # pairing with a node's seq: read as fast as needed to catch up
    return source


def _model_frames(config: ViewConfig, stop: threading.Event, ended: list[str]):
    from perception.engines import EngineOptions, load_engine
    from perception.preprocess import Preprocessor

    engine = load_engine("ort", config.model, EngineOptions(provider=config.provider))
    source = _open_source(config, paced=config.out is None)
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
            class_ids = engine.infer(prep(frame.image))[contracts.OUTPUT_CLASS_IDS][0]
            infer_ms = (time.perf_counter() - t0) * 1e3
            mapped = prep.letterbox.to_source(class_ids)
            caption = f"seq {frame.seq}  infer {infer_ms:.1f} ms  {engine.model_id}"
            yield render_overlay(frame.image, mapped, table, alpha=config.alpha, caption=caption)
    finally:
        source.close()
        engine.close()


def _node_frames(config: ViewConfig, stop: threading.Event, deadline: float | None, ended: list[str]):
    """Frames drawn from a node's masks; ends at ``deadline`` (monotonic s) even when none arrive.

    Appends to ``ended`` why it stopped early, when that explains an empty output."""
    from perception.modelfile import read_model_metadata
    from perception.subscribe import MaskSubscriber

    # With the model's class table the class map alone carries everything; without it the task
    # masks of one seq are gathered and drawn as tints.
    table = read_model_metadata(config.model).class_table if config.model else None
    wanted = ["class_map"] if table is not None else ["drivable", "lane", "obstacle"]
    source = _open_source(config, paced=False) if config.source else None
    sub = MaskSubscriber(config.endpoint, namespace=config.namespace, masks=wanted)
    limited = RateLimitedLog(log)
    frame = None
    pending: dict[str, np.ndarray] = {}
    pending_seq = -1
    received = False
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            msg = sub.recv(timeout_s=0.2)
            if msg is None:
                continue
            if msg.kind != contracts.KIND_MASK:  # a JSON document on a mask topic: not drawable
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
        if not received and not stop.is_set():
            ended.append(
                f"no masks received from {config.endpoint} under {config.namespace} in {config.duration:g} s; "
                "is the node running? check --endpoint / --namespace"
            )
    finally:
        sub.close()
        if source is not None:
            source.close()
