"""Network streams (RTSP/HTTP/RTMP/UDP URLs through FFmpeg) and GStreamer pipeline strings.

``perception run --source rtsp://10.0.0.5:8554/front`` or
``--source 'v4l2src ! videoconvert ! appsink'`` (needs an OpenCV built with GStreamer). A stream
that drops out or stalls for ``read_timeout_s`` is reopened with backoff, counted in ``reconnects``.
"""

from __future__ import annotations

import functools
import re

import cv2

from perception.errors import SourceError, SourceUnavailableError
from perception.sources.base import LiveCaptureSource, SourceOptions

URL_PATTERN = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp|srt)://", re.IGNORECASE)


def is_gstreamer_pipeline(spec: str) -> bool:
    return " ! " in spec or spec.rstrip().endswith("appsink")


@functools.lru_cache(maxsize=1)
def opencv_has_gstreamer() -> bool:
    """True when this OpenCV build lists GStreamer as a video I/O backend."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return line.split(":", 1)[1].strip().upper().startswith("YES")
    return False


class StreamSource(LiveCaptureSource):
    """An RTSP/HTTP/... URL read with FFmpeg, with open and read timeouts."""

    kind = "stream"

    def describe(self) -> str:
        # Never log credentials embedded in the URL.
        return f"stream {re.sub(r'//[^/@]*@', '//***@', self.spec)}"

    def _open(self) -> cv2.VideoCapture:
        timeout_ms = int(self.options.read_timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        cap = cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise SourceUnavailableError(f"cannot open {self.describe()}; check the address, credentials and network")
        return cap


class GStreamerSource(LiveCaptureSource):
    """A GStreamer pipeline string ending in ``appsink``."""

    kind = "gstreamer"

    def __init__(self, spec: str, options: SourceOptions) -> None:
        if not opencv_has_gstreamer():
            raise SourceError(
                "this OpenCV build has no GStreamer support (cv2.getBuildInformation() says GStreamer: NO); "
                "install an OpenCV built with GStreamer, or use a camera, file or URL source"
            )
        super().__init__(spec, options)

    def describe(self) -> str:
        return f"gstreamer pipeline '{self.spec}'"

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(self.spec, cv2.CAP_GSTREAMER)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"cannot start {self.describe()}; test it with gst-launch-1.0 and end it in 'appsink'"
            )
        return cap
