"""Where rendered frames go: a window, a video file, one PNG or a folder of numbered PNGs.

``FrameSink(out, fps=...)`` takes frames from ``perception view`` and ``perception demo``;
``resolve_output(out)`` picks a window when a display exists and ``out/view.mp4`` otherwise. A sink
that wrote nothing removes the folders it made for ``out`` when it closes, as
``missing_folders``/``remove_empty_folders`` let other commands do. A video has the first frame's
size; a later frame of another size is letterboxed into it (aspect kept, black bars), said once.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import cv2
import numpy as np

from perception.errors import ConfigError, file_in_the_way
from perception.preprocess import Letterbox

log = logging.getLogger(__name__)

#: Frame rate of written videos when --fps is not given.
DEFAULT_VIDEO_FPS = 10.0
VIDEO_SUFFIXES = {".mp4": "mp4v", ".avi": "MJPG"}
#: The names of the numbered PNGs a folder output receives (``view_000001.png``, ...).
FOLDER_FRAME_NAME = re.compile(r"view_[0-9]{6}\.png")


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class FrameSink:
    """Receives rendered frames: a window, a video file, one PNG or a folder of PNGs.

    ``write(frame)`` returns False once the user closed the window (q or Esc). ``close()``
    finishes the file. Frames may change size; a video is fixed to the first frame's size, and a
    frame of another size is letterboxed into it, keeping its aspect (one warning says so).
    """

    def __init__(self, out: Path | None, *, fps: float) -> None:
        self.out = out
        self.fps = fps
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self._last: np.ndarray | None = None
        self._letterboxed = False  # a frame of another size than the video's has been fitted (and said so)
        if out is None:
            self.mode = "window"
        elif out.suffix.lower() in VIDEO_SUFFIXES:
            self.mode = "video"
        elif out.suffix.lower() == ".png":
            self.mode = "png"
        elif out.suffix:
            raise ConfigError(
                f"--out {out}: unknown file type; use .mp4, .avi, .png or a folder for numbered PNGs"
            )
        else:
            self.mode = "folder"
        #: Folders made for ``out`` here: removed again by ``close`` when nothing was written.
        self.created: list[Path] = []
        if out is not None:
            # Made now, so an unwritable --out fails before any work, not at the first frame.
            target = out if self.mode == "folder" else out.parent
            created = missing_folders(target)
            try:
                target.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                remove_empty_folders(created)
                why = file_in_the_way(target) or exc.strerror
                raise ConfigError(f"cannot create {target} for --out: {why}; choose a writable path") from None
            self.created = created

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
                    from perception.modelfile import check_writable

                    check_writable(self.out)  # a folder it cannot write to is named as such, not as a format
                    raise ConfigError(
                        f"OpenCV cannot write video {self.out}; try --out with .avi or a PNG folder"
                    )
            if (frame.shape[1], frame.shape[0]) != self._size:
                frame = self._fit(frame)
            self._writer.write(frame)
        elif self.mode == "folder":
            self._imwrite(self.out / f"view_{self.frames:06d}.png", frame)
        return True

    def _fit(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` letterboxed into the video's size: scaled to fit, aspect kept, black bars."""
        width, height = self._size
        if not self._letterboxed:
            self._letterboxed = True
            log.warning("frame sizes change (frame %d is %dx%d, the video %dx%d): such frames are letterboxed into "
                        "the video's size, aspect kept; a folder --out keeps each frame's own size",
                        self.frames, frame.shape[1], frame.shape[0], width, height)
        box = Letterbox.fit(frame.shape[:2], (height, width))
        fitted = np.zeros((height, width, 3), np.uint8)
        shrink = box.content_hw[0] < frame.shape[0]
        box.apply(frame, fitted, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return fitted

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.mode == "png" and self._last is not None:
            self._imwrite(self.out, self._last)
        if self.mode == "window":
            cv2.destroyAllWindows()
        if self.frames == 0:  # a failed view or demo leaves no empty folder behind
            remove_empty_folders(self.created)

    @staticmethod
    def _imwrite(path: Path, frame: np.ndarray) -> None:
        if not cv2.imwrite(str(path), frame):
            raise ConfigError(f"cannot write {path}; choose a writable --out")


def missing_folders(folder: Path) -> list[Path]:
    """The folders that creating ``folder`` (``mkdir -p``) would make, outermost first: what a
    failed command removes again (``remove_empty_folders``), so that it leaves no empty tree."""
    missing: list[Path] = []
    for each in (folder, *folder.parents):
        if each.exists() or each.is_symlink():
            break
        missing.append(each)
    return missing[::-1]


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove ``folders`` (from ``missing_folders``), innermost first, each only while it is empty:
    whatever a command did write stays."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:  # not empty (something was written): nor are the folders around it
            return


def resolve_output(out: Path | None) -> Path | None:
    """``out`` as given; with none, a window if there is a display, else ``out/view.mp4``."""
    if out is not None or has_display():
        return out
    default = Path("out/view.mp4")
    log.info("no display ($DISPLAY / $WAYLAND_DISPLAY unset); writing %s", default)
    return default
