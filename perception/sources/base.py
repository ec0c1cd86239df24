"""What every frame source shares: the ``Frame`` record, options, stamping, pacing and reconnects.

A source's ``read()`` returns the next ``Frame`` (seq contiguous from 0, stamped at capture with
``time.time_ns()`` and ``time.monotonic_ns()``) or None at the end of a finite input. Corrupt frames
are counted in ``corrupt``, named in ``skipped`` (the first ``MAX_NAMED_SKIPS``) and in a
rate-limited warning, and skipped; ``MAX_CONSECUTIVE_CORRUPT`` in a row end the run with a
``SourceError`` (an error exit, not success). Live sources that drop out are reopened with
exponential backoff and counted in ``reconnects``. Opening problems raise ``SourceError`` with the fix.

OpenCV's and FFmpeg's own console lines (``[ WARN:0@0.03] global cap.cpp...``, ``[mjpeg @ 0x...]
No JPEG data found``) are silenced here, at import: every problem they describe reaches the user
through our own log line or error. Set ``OPENCV_LOG_LEVEL`` / ``OPENCV_FFMPEG_LOGLEVEL`` to see them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from perception.errors import SourceError
from perception.options import SourceOptions  # noqa: F401 - declared there (light, shared with the configs)
from perception.stats import RateLimitedLog

log = logging.getLogger(__name__)

#: After this many corrupt frames in a row the source is declared unreadable: the run ends with a
#: SourceError (exit status 2), not as a clean end of input.
MAX_CONSECUTIVE_CORRUPT = 200
#: How many skipped frames a source names in ``skipped`` (the stats' ``source_skipped``).
MAX_NAMED_SKIPS = 20


def quiet_video_backends() -> None:
    """Silence OpenCV's and FFmpeg's console output unless the user asked for it by environment.

    FFmpeg's level is read by OpenCV when it first opens a capture (``OPENCV_FFMPEG_LOGLEVEL``,
    -8 is AV_LOG_QUIET); OpenCV's own is set directly.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


quiet_video_backends()


@dataclass
class Frame:
    """One captured image. ``image`` is uint8 H x W x 3 BGR; ``capture_ms`` is how long the read took."""

    seq: int
    capture_ns: int
    capture_mono_ns: int
    image: np.ndarray
    capture_ms: float


class CorruptFrame(Exception):
    """Raised by a source's ``_next_image`` for an undecodable frame; counted and skipped."""


class Source(ABC):
    """A frame source. Subclasses implement ``_next_image`` and may override ``close``.

    Class attributes: ``kind`` (registry name) and ``live`` (True for cameras and streams: the
    pipeline then defaults to the drop-oldest queue).
    """

    kind: ClassVar[str] = ""
    live: ClassVar[bool] = False

    def __init__(self, spec: str, options: SourceOptions) -> None:
        self.spec = spec
        self.options = options
        self.corrupt = 0
        #: What was skipped, named (the first MAX_NAMED_SKIPS): "frame 31 of clip.avi: ...".
        self.skipped: list[str] = []
        self.reconnects = 0
        self._seq = 0
        self._consecutive_corrupt = 0
        self._interrupted = threading.Event()
        self._pacer: _Pacer | None = None
        self._limited = RateLimitedLog(log)

    @abstractmethod
    def _next_image(self) -> tuple[np.ndarray, int, int] | None:
        """The next image with its (capture_ns, capture_mono_ns) stamps, or None at the end.

        Raises CorruptFrame for a frame that cannot be decoded."""

    def describe(self) -> str:
        """A short human-readable description for logs and stats."""
        return f"{self.kind} {self.spec}"

    def read(self) -> Frame | None:
        """The next good frame, or None at the end of the input (or after ``interrupt()``)."""
        while not self._interrupted.is_set():
            if self._pacer is not None:
                self._pacer.wait(self._interrupted)
            t0 = time.perf_counter()
            try:
                got = self._next_image()
            except CorruptFrame as exc:
                self.corrupt += 1
                self._consecutive_corrupt += 1
                if len(self.skipped) < MAX_NAMED_SKIPS:
                    self.skipped.append(str(exc))
                if self._consecutive_corrupt >= MAX_CONSECUTIVE_CORRUPT:
                    raise SourceError(
                        f"{self.describe()}: {self._consecutive_corrupt} unreadable frames in a row ({exc}); "
                        "the input is damaged or not what it claims to be"
                    ) from None
                self._limited.warning("corrupt", "%s: skipped an unreadable frame: %s (%d skipped so far)",
                                      self.describe(), exc, self.corrupt)
                continue
            if got is None:
                return None
            image, capture_ns, capture_mono_ns = got
            self._consecutive_corrupt = 0
            frame = Frame(
                seq=self._seq,
                capture_ns=capture_ns,
                capture_mono_ns=capture_mono_ns,
                image=image,
                capture_ms=(time.perf_counter() - t0) * 1e3,
            )
            self._seq += 1
            return frame
        return None

    def pace(self, fps: float | None) -> None:
        """Deliver at most ``fps`` frames per second (None or 0: as fast as possible)."""
        self._pacer = _Pacer(fps) if fps else None

    def interrupt(self) -> None:
        """Ask a blocked or backing-off ``read`` to return None soon (thread-safe)."""
        self._interrupted.set()

    def close(self) -> None:
        """Release the underlying device or file (subclasses extend this); later reads return None."""
        self._interrupted.set()

    @property
    def frames_read(self) -> int:
        return self._seq


def stamp() -> tuple[int, int]:
    """(capture_ns, capture_mono_ns): wall clock for consumers on other machines, monotonic for latency."""
    return time.time_ns(), time.monotonic_ns()


def as_bgr(image: Any) -> np.ndarray:
    """Normalise a decoded image to uint8 H x W x 3 BGR; CorruptFrame when it cannot be one."""
    if not isinstance(image, np.ndarray) or image.size == 0:
        raise CorruptFrame("empty image")
    if image.dtype != np.uint8:
        raise CorruptFrame(f"unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    raise CorruptFrame(f"unsupported image shape {image.shape}")


def grab_and_retrieve(cap: cv2.VideoCapture) -> tuple[np.ndarray, int, int] | None:
    """Read one frame from an OpenCV capture, stamped at grab time (before decoding).

    Returns None when the capture has no more frames (end of file, or a live source that stopped).
    """
    if not cap.grab():
        return None
    capture_ns, capture_mono_ns = stamp()
    ok, image = cap.retrieve()
    if not ok or image is None:
        raise CorruptFrame("decoder returned no image")
    return as_bgr(image), capture_ns, capture_mono_ns


class Reconnector:
    """Reopens a live capture with exponential backoff after it drops out or stalls.

    ``open_capture()`` returns an opened object with ``grab``/``retrieve``/``release`` (an OpenCV
    ``VideoCapture``) or raises SourceError. Backoff doubles from ``initial_s`` up to ``max_s`` and
    resets after a good frame. Waits end early when ``interrupted`` is set.
    """

    def __init__(
        self,
        open_capture: Callable[[], Any],
        *,
        describe: str,
        interrupted: threading.Event,
        initial_s: float = 0.1,
        max_s: float = 5.0,
    ) -> None:
        self._open = open_capture
        self._describe = describe
        self._interrupted = interrupted
        self.initial_s = initial_s
        self.max_s = max_s
        self.reconnects = 0
        self._cap = open_capture()  # the first open fails loudly: a wrong device is a user mistake
        self._backoff_s = initial_s

    def next_image(self) -> tuple[np.ndarray, int, int] | None:
        """The next frame; reconnects as often as needed. None only once interrupted."""
        while not self._interrupted.is_set():
            if self._cap is None:
                self._cap = self._try_reopen()
                if self._cap is None:
                    continue
            got = grab_and_retrieve(self._cap)
            if got is not None:
                self._backoff_s = self.initial_s
                return got
            log.warning("%s stopped delivering frames; reconnecting", self._describe)
            self._release()
        return None

    def _try_reopen(self) -> Any | None:
        self._interrupted.wait(self._backoff_s)
        if self._interrupted.is_set():
            return None
        self.reconnects += 1
        try:
            cap = self._open()
        except SourceError as exc:
            log.warning("reconnect %d failed (%s); next try in %.1f s", self.reconnects, exc, self._backoff_s)
            self._backoff_s = min(self._backoff_s * 2, self.max_s)
            return None
        log.info("%s reconnected (reconnect %d)", self._describe, self.reconnects)
        return cap

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def close(self) -> None:
        self._release()


class _Pacer:
    """Sleeps so that successive calls are ``1/fps`` apart on the monotonic clock."""

    def __init__(self, fps: float) -> None:
        self.period_s = 1.0 / fps
        self._next_s: float | None = None

    def wait(self, interrupted: threading.Event) -> None:
        now = time.monotonic()
        if self._next_s is None or now - self._next_s > self.period_s:
            self._next_s = now  # first call, or too far behind to catch up: restart the schedule
        delay = self._next_s - now
        if delay > 0:
            interrupted.wait(delay)
        self._next_s += self.period_s


class LiveCaptureSource(Source):
    """A camera or stream read through ``cv2.VideoCapture``, reopened with backoff when it drops out.

    Subclasses implement ``_open()`` (a new, opened capture, or SourceError) and ``describe()``.
    """

    live = True

    def __init__(self, spec: str, options: SourceOptions) -> None:
        super().__init__(spec, options)
        self._reconnector = Reconnector(self._open, describe=self.describe(), interrupted=self._interrupted)

    def _open(self) -> cv2.VideoCapture:
        raise NotImplementedError

    def _next_image(self):
        got = self._reconnector.next_image()
        self.reconnects = self._reconnector.reconnects
        return got

    def close(self) -> None:
        super().close()
        self._reconnector.close()
