"""What every frame source shares: the ``Frame`` record, options, stamping, pacing and reconnects.

A source's ``read()`` returns the next ``Frame`` (seq contiguous from 0, stamped at capture with
``time.time_ns()`` and ``time.monotonic_ns()``) or None at the end of a finite input. Corrupt frames
are counted in ``corrupt``, named in ``skipped`` (the first ``MAX_NAMED_SKIPS``) and in a
rate-limited warning, and skipped; ``MAX_CONSECUTIVE_CORRUPT`` in a row end the run with a
``SourceError`` (an error exit, not success), except where a video file has ended (its grabs fail
once FFmpeg has read it to its last byte: a file cut short, ``perception.sources.video``). Live sources that drop out are reopened with
exponential backoff and counted in ``reconnects`` (the backoff starts again from its minimum only
after a connection stayed up ``Reconnector.stable_s``; the lines about it are rate-limited).
Opening problems raise ``SourceError`` with the fix. Names from outside (file names, specs) are
shown through ``shown``/``quoted``, so a newline or an escape sequence in one cannot fake a log line.

OpenCV's and FFmpeg's own console lines (``[ WARN:0@0.03] global cap.cpp...``, ``[mjpeg @ 0x...]
No JPEG data found``) are silenced here, at import: every problem they describe reaches the user
through our own log line or error. Set ``OPENCV_LOG_LEVEL`` / ``OPENCV_FFMPEG_LOGLEVEL`` to see them.
OpenCV's own MJPEG AVI reader prints to stderr directly, whatever the level: video files are opened
with FFmpeg alone (``perception.sources.video``), so that it is never tried.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from perception import MAX_SOURCE_PIXELS
from perception.errors import SourceError
from perception.options import SourceOptions  # noqa: F401 - declared there (light, shared with the configs)
from perception.sources.pacing import FrameTime, Pacer, TimestampPacer
from perception.stats import RateLimitedLog

log = logging.getLogger(__name__)

#: After this many corrupt frames in a row the source is declared unreadable: the run ends with a
#: SourceError (exit status 2), not as a clean end of input.
MAX_CONSECUTIVE_CORRUPT = 200
#: How many skipped frames a source names in ``skipped`` (the stats' ``source_skipped``).
MAX_NAMED_SKIPS = 20
#: Longest quoted name (a file path) in a log line or skip note; longer ones are cut in the middle.
MAX_QUOTED = 120
#: Failed grabs in a row that a live capture reads on over the same connection (each one that came
#: back sooner than half the read timeout: not a stall) before it is taken for dropped. Through
#: OpenCV, a frame FFmpeg cannot decode is a failed grab, and the next grab reads the next frame.
MAX_FAILED_GRABS = 30


def quoted(text: object, limit: int = MAX_QUOTED) -> str:
    """``repr(str(text))``: an outside name (a file name) as a log line quotes it, every control
    character escaped, so that a newline in a file name cannot fake a log line; cut in the middle
    to about ``limit`` characters (the end, a file's own name, is kept)."""
    text = str(text)
    out = repr(text)
    keep = len(text)
    while len(out) > limit and keep > 8:
        keep = min(keep - 1, keep * limit // len(out))
        head = keep // 3
        out = repr(text[:head] + "..." + text[len(text) - (keep - head):])
    return out


def shown(text: object) -> str:
    """``text`` as it is when every character is printable, else quoted as ``quoted`` does: for a
    spec in a description or error, which stays as typed in the ordinary case."""
    text = str(text)
    return text if text.isprintable() else quoted(text)


def video_spec_word(spec: str | os.PathLike) -> str:
    """What an error line calls a spec read as a video: ``video file``, or ``source`` when it cannot
    be looked at (a folder on the way that this user may not enter; not there) and its name has no
    suffix that makes it a file (``outer/frames`` may be an image folder: "video file" would
    mislead)."""
    try:
        os.stat(spec)
    except (OSError, ValueError):
        return "video file" if os.path.splitext(os.fspath(spec).rstrip("/"))[1] else "source"
    return "video file"


def local_path(spec: str) -> str:
    """The path of a ``file://`` URL (``file:///data/drive.mp4`` -> ``/data/drive.mp4``, percent
    escapes decoded); any other spec as it is. SourceError for a URL of another machine's file."""
    if spec[:7].lower() != "file://":
        return spec
    url = urllib.parse.urlsplit(spec)
    if url.netloc not in ("", "localhost") or url.query or url.fragment:
        raise SourceError(f"cannot read {shown(spec)}: a file:// URL must name a local file (file:///path/to/file, "
                          "no host, query or fragment); give the path instead")
    path = urllib.parse.unquote(url.path)
    if not path:
        raise SourceError(f"{shown(spec)} names no file; give the path, e.g. --source /data/drive.mp4")
    return path


def quiet_video_backends() -> None:
    """Silence OpenCV's and FFmpeg's console output unless the user asked for it by environment.

    FFmpeg's level is read by OpenCV when it first opens a capture (``OPENCV_FFMPEG_LOGLEVEL``,
    -8 is AV_LOG_QUIET); OpenCV's own is set directly, to SILENT: its decoders report a damaged
    file at ERROR level (``[ERROR:0@0.6] global grfmt_png.cpp:297 readHeader IHDR chunk shall be
    first...``), once per read, so every ``--loop`` pass repeated it, and our own warning already
    names the file once. Nothing the node does depends on these lines: OpenCV's failures reach it
    as return values and ``cv2.error`` exceptions, which the level does not change.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    if os.environ.get("OPENCV_LOG_LEVEL", "SILENT") == "SILENT":  # the commands' default (cli.quiet_opencv),
        # set directly too for a program that imported cv2 before the sources (the variable is read once)
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


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
    """Raised by a source's ``_next_image`` for an undecodable frame; counted and skipped.

    ``frames``: how many frames the one note stands for (a video that ends before the count its
    container states: ``frames 35-39 of 40 ...``). ``key``: what was skipped, the same on every
    pass of a ``--loop`` (an image's path, a video's frame number): ``Source.read`` counts, names
    and warns about each key once per run, and skips it silently on later passes. ``ends_pass``:
    the note of a pass's end (the frames a file lacks at its end), not part of a run of unreadable
    frames in a row."""

    def __init__(self, message: str, frames: int = 1, *, key: object = None, ends_pass: bool = False) -> None:
        super().__init__(message)
        self.frames = frames
        self.key = key
        self.ends_pass = ends_pass


class UndecodedFrames(CorruptFrame):
    """Raised by ``Reconnector.next_image`` for grabs that failed on a connection that then gave a
    frame: frames FFmpeg could not decode. ``LiveCaptureSource`` names them by the next frame's number."""


class Source(ABC):
    """A frame source. Subclasses implement ``_next_image`` and may override ``close``.

    Class attributes: ``kind`` (registry name) and ``live`` (True for cameras and streams: the
    pipeline then defaults to the drop-oldest queue).
    """

    kind: ClassVar[str] = ""
    live: ClassVar[bool] = False
    #: The camera this source feeds in a node with several (``name_camera``); None with one.
    camera: str | None = None

    def __init__(self, spec: str, options: SourceOptions) -> None:
        self.spec = spec
        self.options = options
        #: Unreadable frames, each counted once per run: with ``--loop``, a file or frame skipped on
        #: every pass is counted (named, warned about) on the first (``CorruptFrame.key``).
        self.corrupt = 0
        #: What was skipped, named (the first MAX_NAMED_SKIPS): "frame 31 of clip.avi: ...".
        self.skipped: list[str] = []
        self._skipped_keys: set[object] = set()
        self._seq = 0
        self._consecutive_corrupt = 0
        self._interrupted = threading.Event()
        self._pacer: Pacer | TimestampPacer | None = None
        self._limited = RateLimitedLog(log)

    def name_camera(self, name: str) -> None:
        """Name the camera this source feeds, for a node with several: its log lines and errors then
        say which camera (``camera 'rear', stream http://...``), not only the file or URL."""
        self.camera = name

    def camera_prefix(self) -> str:
        """``camera 'rear', `` before what a log line calls this source, when it has a camera name
        (``name_camera``); empty otherwise."""
        return "" if self.camera is None else f"camera {quoted(self.camera)}, "

    def log_name(self) -> str:
        """What log lines and errors call this source: ``describe()``, after the camera's name when
        it has one (``name_camera``)."""
        return self.camera_prefix() + self.describe()

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
                if exc.key is not None:
                    if exc.key in self._skipped_keys:  # skipped on an earlier pass of --loop: said then
                        continue
                    self._skipped_keys.add(exc.key)
                self.corrupt += exc.frames
                self._consecutive_corrupt = 0 if exc.ends_pass else self._consecutive_corrupt + exc.frames
                if len(self.skipped) < MAX_NAMED_SKIPS:
                    self.skipped.append(str(exc))
                if self._consecutive_corrupt >= MAX_CONSECUTIVE_CORRUPT and self._unreadable_run_fails():
                    raise SourceError(
                        f"{self.log_name()}: {self._consecutive_corrupt} unreadable frames in a row ({exc}); "
                        "the input is damaged or not what it claims to be"
                    ) from None
                what = "an unreadable frame" if exc.frames == 1 else f"{exc.frames} unreadable frames"
                self._limited.warning("corrupt", "%s: skipped %s: %s (%d skipped so far)",
                                      self.log_name(), what, exc, self.corrupt)
                continue
            if got is None:
                return None
            image, capture_ns, capture_mono_ns = got
            capture_ms = (time.perf_counter() - t0) * 1e3
            self._consecutive_corrupt = 0
            if self._pacer is not None and self._pacer.by_timestamps:  # due by its own timestamp, known once read
                if not self._pacer.deliver(self._frame_time(), self._interrupted):
                    return None
                capture_ns, capture_mono_ns = stamp()  # stamped when it is delivered, as a paced read is
            frame = Frame(
                seq=self._seq,
                capture_ns=capture_ns,
                capture_mono_ns=capture_mono_ns,
                image=image,
                capture_ms=capture_ms,
            )
            self._seq += 1
            return frame
        return None

    def _unreadable_run_fails(self) -> bool:
        """Whether ``MAX_CONSECUTIVE_CORRUPT`` unreadable frames in a row end the run (a file, a
        folder); a live capture reopens its connection instead (``Reconnector``), and never fails
        for it mid-run."""
        return True

    def pace(self, fps: float | None) -> None:
        """Deliver at most ``fps`` frames per second (None or 0: as fast as possible; this also ends
        ``pace_by_timestamps``)."""
        self._pacer = Pacer(fps) if fps else None

    def pace_by_timestamps(self, fps: float) -> None:
        """Deliver each frame at its own timestamp (``_frame_time``), relative to the first, as the
        file was recorded (``TimestampPacer``); ``fps`` (the file's average rate) spaces frames
        without a usable one."""
        self._pacer = TimestampPacer(fps, self.log_name)

    def _frame_time(self) -> FrameTime | None:
        """Where the frame ``_next_image`` returned last sits on its file's timeline, for
        ``pace_by_timestamps``; None when the source does not know (it is then spaced at the
        average rate)."""
        return None

    def interrupt(self) -> None:
        """Ask a blocked or backing-off ``read`` to return None soon (thread-safe)."""
        self._interrupted.set()

    def close(self) -> None:
        """Release the underlying device or file (subclasses extend this); later reads return None."""
        self._interrupted.set()

    @property
    def frames_read(self) -> int:
        return self._seq

    @property
    def reconnects(self) -> int:
        """Times the source was opened again after it dropped out (live sources; 0 for the others)."""
        return 0


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


def frame_too_big(width: float, height: float) -> bool:
    """Whether a frame of ``width`` x ``height`` is over ``MAX_SOURCE_PIXELS``."""
    return width * height > MAX_SOURCE_PIXELS


def grab_and_retrieve(cap: cv2.VideoCapture) -> tuple[np.ndarray, int, int] | None:
    """Read one frame from an OpenCV capture, stamped at grab time (before decoding).

    Returns None when the capture has no more frames (end of file, or a live source that stopped).
    A frame over ``MAX_SOURCE_PIXELS`` is a CorruptFrame (OpenCV scales a frame whose size changed
    to the size the capture had when it opened, which the sources check, so this is a last guard).
    """
    if not cap.grab():
        return None
    capture_ns, capture_mono_ns = stamp()
    ok, image = cap.retrieve()
    if not ok or image is None:
        raise CorruptFrame("decoder returned no image")
    if isinstance(image, np.ndarray) and image.ndim >= 2 and frame_too_big(image.shape[1], image.shape[0]):
        raise CorruptFrame(f"a frame of {image.shape[1]}x{image.shape[0]}, more than {MAX_SOURCE_PIXELS} pixels "
                           "(8192 x 8192)")
    return as_bgr(image), capture_ns, capture_mono_ns


class Reconnector:
    """Reopens a live capture with exponential backoff after it drops out or stalls.

    ``open_capture()`` returns an opened object with ``grab``/``retrieve``/``release`` (an OpenCV
    ``VideoCapture``) or raises SourceError. Backoff doubles from ``initial_s`` up to ``max_s`` with
    every reopen, and starts again from ``initial_s`` only when a connection that drops had stayed up
    ``stable_s`` or delivered ``stable_frames``: a server that ends every connection after a frame or
    two (a clip or a snapshot behind a URL) is asked again ever more rarely, not ten times a second,
    while a live camera on a weak link that drops every few seconds, each time after many frames, is
    reopened at once. The warning and info lines
    are rate-limited (one per key per 5 s, with the count of the others). Waits end early when
    ``interrupted`` is set. ``clock`` is the monotonic clock (tests pass their own).

    A grab that fails sooner than ``stall_s / 2`` (not a stall: the connection ended, or FFmpeg could
    not decode what came) is tried again on the same capture, and so is a frame that was grabbed but
    does not decode (``retrieve`` gives no image: a ``CorruptFrame`` of ``grab_and_retrieve``), up to
    ``MAX_FAILED_GRABS`` of them in a row, for at most ``stall_s`` since the last frame; when a later
    grab there gives a frame, the failed ones were undecodable frames: ``next_image`` raises
    CorruptFrame for them, all in one (counted and named by ``Source.read``), and returns that frame
    on its next call. A stream with a damaged frame now and then is read on, its damaged frames
    counted, instead of being reopened for each one. A run longer than that is a stream that stopped
    delivering frames: it is dropped and reopened with the backoff (a reconnect); the frames of it
    that came but did not decode are counted as unreadable all in one, raised as it drops.
    """

    def __init__(
        self,
        open_capture: Callable[[], Any],
        *,
        describe: str,
        interrupted: threading.Event,
        initial_s: float = 0.1,
        max_s: float = 5.0,
        stable_s: float = 10.0,
        stable_frames: int = 30,
        stall_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open = open_capture
        self._describe = describe
        self._interrupted = interrupted
        self.initial_s = initial_s
        self.max_s = max_s
        self.stable_s = stable_s
        self.stable_frames = stable_frames
        self.stall_s = stall_s
        self._clock = clock
        self._failed_grabs = 0  # failed grabs in a row on this connection, each sooner than stall_s / 2
        self._undecoded = 0  # frames grabbed in a row on this connection that did not decode
        self._undecoded_reason = ""  # why the last of them did not (the decoder's word)
        self._run_started = 0.0  # when the run of failed grabs and undecoded frames began
        self._pending: tuple[np.ndarray, int, int] | None = None  # the frame after undecodable ones
        self._frames_this_connection = 0
        #: Times the capture was opened again after a drop (tries that failed are not counted: one
        #: long outage is one reconnect, however many tries it took).
        self.reconnects = 0
        self._tries = 0  # opens tried since the last drop
        self._limited = RateLimitedLog(log)
        self._cap = open_capture()  # the first open fails loudly: a wrong device is a user mistake
        self._opened_s = clock()
        self._backoff_s = initial_s

    @property
    def capture(self) -> Any | None:
        """The open capture, or None between a drop and the reopen."""
        return self._cap

    @property
    def backoff_s(self) -> float:
        """The wait before the next reopen."""
        return self._backoff_s

    def next_image(self) -> tuple[np.ndarray, int, int] | None:
        """The next frame; reconnects as often as needed. None only once interrupted. CorruptFrame
        for failed grabs that a frame on the same connection followed (that frame comes next)."""
        if self._pending is not None:
            got, self._pending = self._pending, None
            return got
        while not self._interrupted.is_set():
            if self._cap is None and not self.reopen():
                continue
            started = self._clock()
            try:
                got = grab_and_retrieve(self._cap)
            except CorruptFrame as exc:  # a frame came and did not decode: the connection is up
                if not self._failed_grabs + self._undecoded:
                    self._run_started = started
                self._undecoded += exc.frames
                self._undecoded_reason = str(exc)
                if (self._failed_grabs + self._undecoded < MAX_FAILED_GRABS
                        and self._clock() - self._run_started < self.stall_s):
                    continue
                # Nothing decodable for MAX_FAILED_GRABS frames or the read timeout: the stream
                # stopped delivering frames, as one that stalls (reopened, a reconnect).
                undecoded, reason = self._undecoded, self._undecoded_reason
                self.dropped()
                raise UndecodedFrames(f"{undecoded} frame{'s' if undecoded != 1 else ''} in a row could not be decoded "
                                      f"({reason}); the stream is reopened", frames=undecoded) from None
            if got is not None:
                self._frames_this_connection += 1
                undecodable, self._failed_grabs = self._failed_grabs + self._undecoded, 0
                undecoded, self._undecoded = self._undecoded, 0
                if undecodable == undecoded == 1:  # one frame that did not decode: said as it was
                    self._pending = got
                    raise CorruptFrame(self._undecoded_reason)
                if undecodable:
                    self._pending = got
                    said = (f"{undecodable} frame{'s' if undecodable != 1 else ''} could not be decoded "
                            f"({self._undecoded_reason})" if undecoded else "could not be decoded")
                    raise UndecodedFrames(f"{said}; the connection stayed up", frames=undecodable)
                return got
            if not self._failed_grabs + self._undecoded:
                self._run_started = started
            if (self._clock() - started < self.stall_s / 2 and self._failed_grabs + self._undecoded < MAX_FAILED_GRABS
                    and (not self._undecoded or self._clock() - self._run_started < self.stall_s)):
                self._failed_grabs += 1  # ended, or an undecodable frame: the next grab says which
                continue
            undecoded, reason = self._undecoded, self._undecoded_reason
            self.dropped()
            if undecoded:  # frames that came before it ended did not decode: counted
                raise UndecodedFrames(f"{undecoded} frame{'s' if undecoded != 1 else ''} in a row could not be "
                                      f"decoded ({reason}); the stream is reopened", frames=undecoded)
        return None

    def dropped(self, *, maybe_its_end: str = "") -> None:
        """The capture ended or stalled: release it. The next ``reopen`` waits ``backoff_s``, back at
        ``initial_s`` only when this connection had stayed up ``stable_s`` or delivered ``stable_frames``.
        ``maybe_its_end``: how a clip ended where that may be its real end (it is opened again to
        tell), said as information instead of the warning of a drop."""
        if self._clock() - self._opened_s >= self.stable_s or self._frames_this_connection >= self.stable_frames:
            self._backoff_s = self.initial_s
        quick, undecoded = self._failed_grabs + self._undecoded, self._undecoded
        self._failed_grabs = self._undecoded = 0
        if maybe_its_end:
            self._limited.info("dropped", "%s %s; opening it again once to tell its end from a dropped connection",
                               self._describe, maybe_its_end)
        else:
            self._limited.warning("dropped", "%s stopped delivering frames; reconnecting in %.1f s%s", self._describe,
                                  self._backoff_s, " (it sends nothing that can be decoded)" if undecoded
                                  else " (it ended, or sends nothing that can be decoded)"
                                  if quick >= MAX_FAILED_GRABS else "")
        self._release()

    def count_reconnect(self) -> None:
        """Count a reopen made with ``reopen(counted=False)`` after all: it had dropped."""
        self.reconnects += 1
        self._limited.info("reconnected", "%s had dropped: reconnected (reconnect %d)", self._describe,
                           self.reconnects)

    def reopen(self, *, counted: bool = True) -> bool:
        """Wait the backoff, then try to open again; True (a reconnect, counted unless ``counted`` is
        False: ``count_reconnect`` counts it later) when it opened, False when that failed or the
        wait was interrupted."""
        self._interrupted.wait(self._backoff_s)
        if self._interrupted.is_set():
            return False
        self._tries += 1
        self._backoff_s = min(self._backoff_s * 2, self.max_s)  # back at initial_s only after a stable connection
        try:
            cap = self._open()
        except SourceError as exc:
            # A camera unplugged for a week is said at its 1st, 10th, 100th and every 1000th try
            # (every 83 minutes at the longest backoff), not every 5 s: 17,000 lines a day.
            if self._tries in (1, 10, 100) or self._tries % 1000 == 0:
                log.warning("%s: try %d to reopen it failed (%s); next try in %.1f s%s", self._describe, self._tries,
                            exc, self._backoff_s, "; said again at try 10, 100 and every 1000th" if self._tries == 1 else "")
            return False
        tries, self._tries = self._tries, 0
        self._cap, self._opened_s, self._frames_this_connection = cap, self._clock(), 0
        if counted:
            self.reconnects += 1
            self._limited.info("reconnected", "%s reconnected (reconnect %d%s)", self._describe, self.reconnects,
                               f", after {tries} tries" if tries > 1 else "")
        return True

    def restart(self) -> bool:
        """Open again at once, without waiting and not counted as a reconnect (a finite stream's
        ``--loop``); False when that failed (then ``reopen`` as after a drop)."""
        self._release()
        try:
            self._cap = self._open()
        except SourceError as exc:
            self._limited.warning("failed", "%s: reopening it for --loop failed (%s); next try in %.1f s",
                                  self._describe, exc, self._backoff_s)
            return False
        self._opened_s, self._frames_this_connection = self._clock(), 0
        return True

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def close(self) -> None:
        self._release()


class LiveCaptureSource(Source):
    """A camera or stream read through ``cv2.VideoCapture``, reopened with backoff when it drops out.

    Subclasses implement ``_open()`` (a new, opened capture, or SourceError) and ``describe()``.
    ``reconnect_options`` are passed to the ``Reconnector`` (tests shorten the waits).
    """

    live = True
    reconnect_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, spec: str, options: SourceOptions) -> None:
        super().__init__(spec, options)
        self._reconnector = Reconnector(self._open, describe=self.describe(), interrupted=self._interrupted,
                                        **{"stall_s": options.read_timeout_s, **self.reconnect_options})

    def _open(self) -> cv2.VideoCapture:
        raise NotImplementedError

    def name_camera(self, name: str) -> None:
        super().name_camera(name)
        self._reconnector._describe = self.log_name()  # its lines about drops and reopens name the camera too

    @property
    def reconnects(self) -> int:
        """The reconnector's count as it is now, also while a read is still reconnecting (a stream
        that opens and then delivers nothing, again and again) or blocked in a grab: every stats
        document, the final one included, is true. (A copy taken when a read returned stayed at 0
        through a whole reconnect storm.)"""
        reconnector = getattr(self, "_reconnector", None)
        return reconnector.reconnects if reconnector is not None else 0

    def _unreadable_run_fails(self) -> bool:
        return not self.live  # a live one is reopened instead (a clip behind a URL: as a file)

    def _next_image(self):
        try:
            return self._reconnector.next_image()
        except UndecodedFrames as exc:  # named by the number the good frame after them gets
            raise CorruptFrame(f"before frame {self._seq}: {exc}", frames=exc.frames) from None

    def close(self) -> None:
        super().close()
        self._reconnector.close()
