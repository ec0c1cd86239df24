"""V4L2 cameras: ``/dev/videoN`` or an index, with requested size, rate and pixel format.

``perception run --source /dev/video0 --width 1280 --height 720 --fps 30 --fourcc MJPG``. What the
driver actually granted is logged once; a camera that drops out or stalls is reopened with backoff.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path

import cv2

from perception.errors import SourceError, SourceUnavailableError
from perception.sources.base import LiveCaptureSource, SourceOptions

log = logging.getLogger(__name__)

CAMERA_PATTERN = re.compile(r"^(/dev/video\d+|\d+)$")


def camera_device(spec: str) -> str:
    """``"0"`` -> ``"/dev/video0"``; a device path stays as it is."""
    return f"/dev/video{spec}" if spec.isdigit() else spec


def _not_a_device(device: str) -> str | None:
    """What ``device`` is when it is no character device (a V4L2 camera is one): ``is a regular
    file``, ``is a directory``...; None for a device, or when it cannot be looked at (the open says why)."""
    try:
        mode = os.stat(device).st_mode
    except OSError:
        return None
    if stat.S_ISCHR(mode):
        return None
    if stat.S_ISREG(mode):
        return "is a regular file"
    if stat.S_ISDIR(mode):
        return "is a directory"
    return "is a pipe, socket or block device"


def fourcc_to_str(code: float) -> str:
    value = int(code)
    return "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00") or "?"


class CameraSource(LiveCaptureSource):
    """A V4L2 camera read through OpenCV's V4L2 backend."""

    kind = "camera"

    def __init__(self, spec: str, options: SourceOptions) -> None:
        if options.fourcc is not None and len(options.fourcc) != 4:
            raise SourceError(f"--fourcc {options.fourcc!r} must be 4 characters, e.g. MJPG or YUYV")
        self.device = camera_device(spec)
        if not Path(self.device).exists():
            raise SourceUnavailableError(
                f"camera {self.device} not found; check the cable and 'v4l2-ctl --list-devices', "
                "or pass another --source"
            )
        not_a_device = _not_a_device(self.device)
        if not_a_device:  # a file left at /dev/video2 is a mistake; "is another program using it?" would mislead
            raise SourceError(f"{self.device} {not_a_device}, not a camera device; find the camera's path with "
                              "'v4l2-ctl --list-devices', or pass another --source")
        # OpenCV's V4L2 backend waits this many seconds in select() before giving up on a frame
        # (default 10 s, read once at the first capture); it has no CAP_PROP_READ_TIMEOUT_MSEC.
        os.environ.setdefault("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", str(max(1, round(options.read_timeout_s))))
        self._granted_logged = False
        super().__init__(spec, options)  # opens the camera through the reconnector

    def describe(self) -> str:
        return f"camera {self.device}"

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise SourceUnavailableError(
                f"camera {self.device} cannot be opened; is another program using it, "
                "and are you in the 'video' group?"
            )
        o = self.options
        # FOURCC first: the sizes and rates a camera offers depend on the pixel format.
        if o.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*o.fourcc))
        if o.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, o.width)
        if o.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, o.height)
        if o.fps:
            cap.set(cv2.CAP_PROP_FPS, o.fps)
        # One driver buffer: the node wants the newest frame, not a backlog.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if not self._granted_logged:
            self._granted_logged = True
            log.info(
                "camera %s granted %dx%d @ %.1f fps, %s (requested %sx%s @ %s fps, %s)",
                self.device,
                int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                cap.get(cv2.CAP_PROP_FPS),
                fourcc_to_str(cap.get(cv2.CAP_PROP_FOURCC)),
                o.width or "-",
                o.height or "-",
                o.fps or "-",
                o.fourcc or "-",
            )
        return cap
