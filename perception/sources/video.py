"""Video files (mp4, avi, mkv, gif, ... anything FFmpeg decodes).

As fast as possible by default (with the lossless queue every frame is processed once, in order);
``realtime`` paces frames at the file's native rate (``fps`` overrides it); ``loop`` restarts at the
end. The end of the file ends the run cleanly.

A damaged stretch is not the end: when a grab fails before the frame count the container states
(``CAP_PROP_FRAME_COUNT``), the frame is counted as corrupt, named, and skipped (FFmpeg has
consumed the damaged packet, so the next grab reads the frame after it). The run ends at the
stated count or, for a container that states none, at the first failed grab; ``MAX_CONSECUTIVE_CORRUPT``
unreadable frames in a row end it with an error instead.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2

from perception import MAX_SOURCE_PIXELS
from perception.errors import SourceError, why_not_a_file
from perception.sources.base import CorruptFrame, Source, SourceOptions, grab_and_retrieve

log = logging.getLogger(__name__)

#: Rate used for --realtime when the container does not state one.
FALLBACK_FPS = 30.0


class VideoFileSource(Source):
    """A video file read with OpenCV (FFmpeg backend)."""

    kind = "video"

    def __init__(self, spec: str, options: SourceOptions) -> None:
        super().__init__(spec, options)
        self.path = Path(spec)
        if not self.path.is_file():
            raise SourceError(f"video file {spec} {why_not_a_file(self.path)}; check the path")
        self._cap = self._open()
        width, height = (self._cap.get(prop) for prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > MAX_SOURCE_PIXELS:  # checked before the first frame is decoded
            self._cap.release()
            raise SourceError(f"video file {spec} is {width:.0f}x{height:.0f}, more than {MAX_SOURCE_PIXELS} pixels "
                              "(8192 x 8192) a frame; scale it down for the node (ffmpeg -vf scale=1920:-2)")
        self._frames_this_pass = 0
        self._attempts_this_pass = 0  # frames read or found unreadable in this pass
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        #: Frames the container says it holds (None when it does not say).
        self.frame_count = int(count) if count and math.isfinite(count) and count > 0 else None
        native_fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.native_fps = native_fps if native_fps and math.isfinite(native_fps) and native_fps > 0 else None
        if options.realtime or options.fps:
            self.pace(options.fps or self.native_fps or FALLBACK_FPS)

    def describe(self) -> str:
        return f"video file {self.spec}"

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"video file {self.spec} cannot be read; is it a video FFmpeg can decode (mp4, avi, mkv, gif)?"
            )
        return cap

    def _next_image(self):
        index = self._attempts_this_pass
        self._attempts_this_pass += 1
        try:
            got = grab_and_retrieve(self._cap)
        except CorruptFrame as exc:
            raise CorruptFrame(f"frame {index}: {exc}") from None
        if got is not None:
            self._frames_this_pass += 1
            return got
        if self.frame_count is not None and index < self.frame_count:
            raise CorruptFrame(f"frame {index} of {self.frame_count} cannot be read")
        if not self.options.loop or self._frames_this_pass == 0:
            return None
        # Reopening is more reliable than seeking to frame 0 across containers (gif, mkv).
        self._cap.release()
        self._cap = self._open()
        self._frames_this_pass = self._attempts_this_pass = 0
        return self._next_image()

    def close(self) -> None:
        super().close()
        self._cap.release()
