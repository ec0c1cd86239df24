"""Network streams (RTSP/HTTP/RTMP/UDP URLs through FFmpeg) and GStreamer pipeline strings.

``perception run --source rtsp://10.0.0.5:8554/front`` or
``--source 'v4l2src ! videoconvert ! appsink'`` (needs an OpenCV built with GStreamer). A live
stream that drops out or stalls for ``read_timeout_s`` is reopened with backoff, counted in
``reconnects``; the backoff keeps growing while connections keep ending within
``Reconnector.stable_s`` (a server that closes every connection after a frame or two).

A URL whose resource states a frame count above one (``CAP_PROP_FRAME_COUNT`` > 1: a clip served over
HTTP) is finite and read like a video file: not ``live`` (every frame once, in order, by default),
paced only with ``realtime``/``fps``, and its end ends the input (``loop`` opens it again). A
connection lost before the stated count is reopened with backoff and resumes at the next frame;
when the reopened resource has no frame there, that is its end (a connection that dropped part-way
looks the same as the clip's real end until then), counted missing only where the URL's suffix names
a container that stores its count (``.avi``, ``.mp4``, ``.mov``: ``stores_count``); elsewhere
(``.mkv``, ``.webm``, ``.ts``, no suffix) FFmpeg's count may be an estimate, and nothing is counted.
Live streams (MJPEG cameras, RTSP, a ``snapshot.jpg``) state no count, or one frame. A clip for which
FFmpeg states no count (an MPEG-TS or a raw MJPEG file from a server without Range requests) is still
finite when its server says it is a file (``served_as_file``: a length, not an image, not a
multipart stream): read once like a clip of unknown count, its end is its end (after one reopen, as
above), nothing counted missing. Without that it would be taken for a live stream that dropped, and
played again from its start with every reconnect.

Frames over ``MAX_SOURCE_PIXELS`` are refused when the stream opens (or reopens), from the size
FFmpeg reports. OpenCV scales a frame whose size changes later to that size: an MJPEG stream is
therefore decoded here, packet by packet (``mjpeg.JpegPackets``), each frame at its own size (a later one
over the limit is a corrupt frame, refused from its header); for other codecs a size change is seen
only when the stream reopens at another size (warned once). A frame that never
ends (an MJPEG part whose boundary never comes) is buffered by FFmpeg only up to
``FFMPEG_MAX_ALLOC_BYTES`` (``limit_ffmpeg_allocations``, set before each open): the read then fails
within ``read_timeout_s`` and the stream is reopened, instead of growing the node by the link's rate
for ``read_timeout_s``.

Through OpenCV a frame FFmpeg cannot decode is a grab that fails at once, as at the end of a
connection; the next grab reads the next frame. The reconnector tries again on the same connection
(``MAX_FAILED_GRABS``): failed grabs that a frame follows are counted in ``corrupt``; a live stream
that sends nothing decodable at all is one that stops delivering frames, reopened (``reconnects``).
A frame FFmpeg decodes with its errors concealed is delivered as it came.
"""

from __future__ import annotations

import base64
import ctypes
import functools
import http.client
import logging
import math
import os
import re
import ssl
import threading
import time
import urllib.parse
import urllib.request

import cv2

from perception import MAX_SOURCE_PIXELS, cvpath
from perception.errors import SourceError, SourceUnavailableError, hide_credentials
from perception.sources.base import (
    CorruptFrame,
    LiveCaptureSource,
    SourceOptions,
    frame_too_big,
    grab_and_retrieve,
    quoted,
    shown,
)
from perception.sources.container import codec_of, is_av1, reencode_hint
from perception.sources.mjpeg import is_mjpeg, jpeg_packets

log = logging.getLogger(__name__)

#: The largest block FFmpeg may allocate at once in a process that reads a stream (``av_max_alloc``;
#: FFmpeg's own default is 2 GiB): the BGR image of the largest frame allowed (``MAX_SOURCE_PIXELS``
#: x 3 bytes, 192 MiB, which OpenCV has FFmpeg allocate) with 16 MiB to spare. A stream can make
#: FFmpeg buffer one frame without end (an MJPEG part whose next boundary never comes: its demuxer
#: and parsers have no size limit of their own, and OpenCV passes none): with this limit that buffer
#: stops at this size, the read fails (within the read timeout) and the stream is reopened.
FFMPEG_MAX_ALLOC_BYTES = MAX_SOURCE_PIXELS * 3 + (16 << 20)

_ffmpeg_limited: dict[str, int] = {}  # libavutil file -> the limit set in it
_ffmpeg_lock = threading.Lock()


def _loaded_libavutil() -> list[str]:
    """The paths of the libavutil shared libraries this process has loaded (Linux: /proc/self/maps)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return []
    paths = set()
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and os.path.basename(fields[5]).startswith("libavutil") and ".so" in fields[5]:
            paths.add(fields[5])
    return sorted(paths)


def limit_ffmpeg_allocations(limit: int | None = None) -> bool:
    """Set FFmpeg's largest single allocation (``av_max_alloc``) to ``limit`` bytes (None:
    ``FFMPEG_MAX_ALLOC_BYTES``) in each libavutil this process has loaded (OpenCV's, bundled in its
    wheel or the system's); True when at least one is set, now or before.

    FFmpeg has one such limit for the whole process: it then holds for every capture in it. Only
    already loaded libraries are touched (``RTLD_NOLOAD``). Elsewhere than Linux, or with an OpenCV
    whose FFmpeg is linked into it statically, nothing is found and nothing is set; call it again
    after an open (OpenCV may load its FFmpeg only then).
    """
    limit = FFMPEG_MAX_ALLOC_BYTES if limit is None else limit
    with _ffmpeg_lock:
        for path in _loaded_libavutil():
            if _ffmpeg_limited.get(path) == limit:
                continue
            try:
                set_max = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY).av_max_alloc
            except (OSError, AttributeError) as exc:
                log.debug("cannot limit FFmpeg's allocations through %s: %s", path, exc)
                continue
            set_max.argtypes, set_max.restype = [ctypes.c_size_t], None
            set_max(limit)
            _ffmpeg_limited[path] = limit
            log.debug("FFmpeg allocates at most %d MiB at once (%s)", limit >> 20, path)
        return bool(_ffmpeg_limited)


#: URL schemes that always name a host (``udp://@:1234`` listens without one).
HOSTED_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp", "rtmps")


def refuse_malformed_url(spec: str) -> None:
    """SourceError (exit 2: a mistake, not a stream that is not there yet, which a launch file would
    respawn for ever) for a URL of a ``HOSTED_SCHEMES`` scheme that names no host (``rtsp://``, a
    blank one: ``rtsp:// /x``, ``rtsp://%20/x``), a port that is no number in 1..65535
    (``rtsp://host:abc/x``, ``:99999``, ``:0``) or that Python cannot split (``rtsp://[::1/x``).
    FFmpeg's open fails on each of them, only later and as a stream that is not there."""
    scheme = spec.partition("://")[0].lower() if "://" in spec else ""
    if scheme not in HOSTED_SCHEMES:
        return
    fix = f"give {scheme}://HOST[:PORT]/PATH"
    try:
        parts = urllib.parse.urlsplit(spec)
        host = parts.hostname
    except ValueError as exc:  # an IPv6 address without its ']', or one that is none
        raise SourceError(f"--source {hide_credentials(shown(spec))} is not a valid URL ({exc}); {fix}") from None
    if not host or not urllib.parse.unquote(host).strip() or not host.isprintable():
        raise SourceError(f"--source {hide_credentials(shown(spec))} names no host; {fix}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        text = parts.netloc.rpartition("@")[2].rpartition("]")[2].rpartition(":")[2]
        raise SourceError(f"--source {hide_credentials(shown(spec))}: port {quoted(text, 20)} is not a number in "
                          f"1..65535; {fix}")


#: An open that failed after this share of its timeout (``read_timeout_s``, FFmpeg's open timeout)
#: or later is said to have timed out (the server never answered), not to have been refused.
TIMED_OUT_SHARE = 0.9

#: Rate used for --realtime on a finite stream that states none.
FALLBACK_FPS = 30.0

#: What the path of a clip's URL ends in where its container stores a frame count (AVI, MP4/MOV): a
#: clip that ends before it, also when reopened, lacks frames. Elsewhere (MKV, WebM, TS..., or no
#: suffix) FFmpeg's count may be its estimate (the duration, often the audio's, x the nominal rate:
#: ``container.Layout``), and the clip may end before it without having lost a frame.
STORED_COUNT_SUFFIXES = (".avi", ".mp4", ".m4v", ".mov", ".3gp", ".3g2")


def stores_count(url: str) -> bool:
    """Whether a clip URL names, by its path's suffix, a container that stores its frame count."""
    try:
        path = urllib.parse.urlsplit(url).path.lower()
    except ValueError:
        return False
    return path.endswith(STORED_COUNT_SUFFIXES)


#: How long the request that asks a server whether a URL is a file may take (at most; less when
#: ``read_timeout_s`` is shorter): a camera that never answers it is taken for the live stream it is.
SERVED_AS_FILE_TIMEOUT_S = 3.0


def served_as_file(url: str, timeout_s: float) -> bool:
    """Whether an HTTP(S) server says ``url`` is a file: a HEAD request answered 200 with a
    ``Content-Length`` above 0, not chunked, not an image (a camera's snapshot, asked again) and
    not ``multipart/`` (an MJPEG camera's stream). False for any other answer or none.

    Asked only where FFmpeg states no frame count (``StreamSource``): FFmpeg knows the length but
    OpenCV does not pass it on. Not through FFmpeg: it would open the stream a second time. As
    FFmpeg does by default, the server's certificate is not checked (this reads headers only)."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            return False
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        netloc += f":{parts.port}" if parts.port else ""
        request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=netloc)), method="HEAD")
        if parts.username is not None:  # user:password@host, as FFmpeg takes it: basic authentication
            token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            request.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode("ascii"))
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as answer:
            length = answer.headers.get("Content-Length", "")
            kind = answer.headers.get_content_type().lower()
            chunked = "chunked" in answer.headers.get("Transfer-Encoding", "").lower()
            return (answer.status == 200 and length.isdigit() and int(length) > 0 and not chunked
                    and not kind.startswith(("image/", "multipart/")))
    except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, 405, timeout, a bad answer
        log.debug("cannot ask whether %s is a file: %s", hide_credentials(url), exc)
        return False


def refuse_undecodable(spec: str, what: str) -> None:
    """SourceError for a URL or pipeline holding bytes that are not UTF-8 (a shell variable of
    Latin-1 text): OpenCV crashes when handed one (``perception/cvpath.py``)."""
    if not cvpath.opencv_can_take(spec):
        raise SourceError(f"the {what} {cvpath.display(hide_credentials(spec))} holds bytes that are not UTF-8, which "
                          "OpenCV cannot take; percent-encode them in a URL (\\xff as %FF) or write the text in UTF-8")


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


@functools.lru_cache(maxsize=1)
def _say_unlimited() -> None:
    log.debug("found no libavutil to limit FFmpeg's allocations in: a stream frame that never ends costs up to "
              "the link's rate x the read timeout")


class StreamSource(LiveCaptureSource):
    """An RTSP/HTTP/... URL read with FFmpeg, with open and read timeouts. Live unless the resource
    states its frame count (a clip behind a URL, ``frame_count``): then read like a video file."""

    kind = "stream"

    def __init__(self, spec: str, options: SourceOptions) -> None:
        #: Frames the resource states it holds (None: a live stream, or a file of unknown count).
        self.frame_count: int | None = None
        #: A clip (read once, like a file), not a live stream: it states a count, or its server
        #: says it is a file (``served_as_file``).
        self.finite = False
        self.native_fps: float | None = None
        self._pos = 0  # frames of a finite resource read (or found unreadable) in this pass
        self._good_this_pass = 0
        self._resuming = False  # reopened after a drop: the first grab decides whether frames are left
        self._checking_end = False  # reopened (not yet counted) where its end may be: frames after it count it
        self._pass_over = False  # this pass of a finite resource has ended
        self._stores_count = stores_count(spec)  # whether its count is one it stores (by its suffix)
        self._said_ended = False
        self._opened_size: tuple[int, int] | None = None  # the frame size the stream stated when last opened
        self._said_resized = False
        refuse_undecodable(spec, "URL")
        refuse_malformed_url(spec)
        super().__init__(spec, options)  # opens the stream through the reconnector
        cap = self._reconnector.capture
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        # One frame is a still image (a camera's snapshot.jpg, for which FFmpeg states a count of 1
        # or none depending on its size): a live source asked again, not a clip that ends the run.
        if count and math.isfinite(count) and count > 1:
            self.frame_count = int(count)
        if self.frame_count or (count != 1 and self._served_as_file()):
            self.finite = True
            self.live = False  # a clip: every frame once by default (the lossless queue), like a file
            fps = cap.get(cv2.CAP_PROP_FPS)
            self.native_fps = fps if fps and math.isfinite(fps) and fps > 0 else None
            if options.realtime or options.fps:
                self.pace(options.fps or self.native_fps or FALLBACK_FPS)

    def describe(self) -> str:
        return f"stream {shown(hide_credentials(self.spec))}"  # never log credentials

    def _open(self) -> cv2.VideoCapture:
        timeout_ms = int(self.options.read_timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        limited = limit_ffmpeg_allocations()  # before FFmpeg buffers anything of this stream
        started = time.monotonic()
        cap = self._capture(params)
        if not limited and not limit_ffmpeg_allocations():  # an OpenCV that loaded its FFmpeg only now
            _say_unlimited()
        if not cap.isOpened():
            cap.release()
            timeout_s = self.options.read_timeout_s
            if time.monotonic() - started >= timeout_s * TIMED_OUT_SHARE:
                # A server that took the connection and then sent nothing (or too little to know the
                # stream by) until FFmpeg's open timeout: not a refused address or a bad name.
                raise SourceUnavailableError(
                    f"cannot open {self.describe()}: no answer within {timeout_s:g} s (--read-timeout); check that "
                    "the server sends a stream at that address, or give a slow one a longer --read-timeout")
            raise SourceUnavailableError(f"cannot open {self.describe()}; check the address, credentials and network")
        width, height = (cap.get(prop) for prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT))
        if frame_too_big(width, height):  # before the node decodes a frame of it
            cap.release()
            raise SourceError(f"{self.describe()} sends {width:.0f}x{height:.0f} frames, more than {MAX_SOURCE_PIXELS} "
                              "pixels (8192 x 8192) a frame; have the camera or server send smaller ones (e.g. 1920x1080)")
        self._note_opened_size((int(width), int(height)), cap)
        return jpeg_packets(cap, reopen=lambda: self._plain_capture(params), describe=self.log_name(), fail_grab=True)

    def _plain_capture(self, params: list[int]) -> cv2.VideoCapture:
        """The stream opened again, decoded by OpenCV (``JpegPackets`` found its packets are not
        whole JPEG images)."""
        cap = self._capture(params)
        if not cap.isOpened():
            cap.release()
            raise SourceUnavailableError(f"cannot open {self.describe()} again; check the address, credentials and network")
        return cap

    def _note_opened_size(self, size: tuple[int, int], cap: cv2.VideoCapture) -> None:
        """Warn once when the stream reopens at another size than it had: through OpenCV its frames
        had been read at the size of the open, those after the change scaled to it (MJPEG is decoded
        at each frame's own size, ``JpegPackets``: nothing to say)."""
        before, self._opened_size = self._opened_size, size
        if before is None or before == size or self._said_resized or is_mjpeg(cap):
            return
        self._said_resized = True
        log.warning("%s reopened at %dx%d, not the %dx%d it had: its frame size changed. OpenCV reads %s video at the "
                    "size it had when opened, and scales a frame whose size changes to it: frames between the change "
                    "and this reconnect may have been read stretched (said once; only MJPEG is read at each frame's "
                    "own size)", self.log_name(), *size, *before, codec_of(cap) or "this")

    def _capture(self, params: list[int]) -> cv2.VideoCapture:
        """A new ``cv2.VideoCapture`` of the URL (tests stand in a fake)."""
        return cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG, params)

    def _served_as_file(self) -> bool:
        return served_as_file(self.spec, min(SERVED_AS_FILE_TIMEOUT_S, self.options.read_timeout_s))

    def _next_image(self):
        if not self.finite:
            return super()._next_image()
        return self._next_finite()

    def _next_finite(self):
        """The next frame of a clip: end of input at its end (unless ``loop``), a reconnect resuming
        at the next frame when the connection ends before it (before its count, or anywhere when its
        count is unknown)."""
        connection, count = self._reconnector, self.frame_count
        of_count = "" if count is None else f" of {count}"
        while not self._interrupted.is_set():
            if not self._pass_over:
                if connection.capture is None:
                    if not connection.reopen(counted=not self._checking_end):
                        continue
                    self._resume(connection.capture)
                index = self._pos
                try:
                    got = grab_and_retrieve(connection.capture)
                except CorruptFrame as exc:
                    self._pos += 1
                    self._resuming = False
                    raise CorruptFrame(f"frame {index}{of_count}: {exc}", key=index) from None  # once per run
                if got is not None:
                    self._pos += 1
                    self._good_this_pass += 1
                    self._resuming = False
                    if self._checking_end:  # frames after where it ended: it had dropped
                        self._checking_end = False
                        connection.count_reconnect()
                    return got
                if index == 0 and self._good_this_pass == 0 and is_av1(codec_of(connection.capture)):
                    raise SourceError(f"{self.describe()} is AV1 video, which this OpenCV's FFmpeg cannot decode; "
                                      f"{reencode_hint(shown(hide_credentials(self.spec)))}")
                short = count is None or index < count
                if short and not self._resuming:
                    # Ended early: reopen (once) and resume here. Also for a container whose count is
                    # an estimate, or unknown: a connection that dropped part-way looks the same as its
                    # real end, and only the reopened resource tells them apart (frames after this one,
                    # or none). There that is said as information, and counted as a reconnect only
                    # when frames come after this one.
                    self._checking_end = count is None or not self._stores_count
                    connection.dropped(maybe_its_end=f"ended after {index} frames" if self._checking_end else "")
                    continue
                self._checking_end = False
                self._pass_over = True
                if short and (count is None or not self._stores_count):
                    # Its count was FFmpeg's estimate (or may be), or none: nothing more came, so it
                    # ends here, nothing counted; a connection that dropped there is said once.
                    self._say_ended(index, count)
                    continue
                if short:  # reopened, and still no frame there: the resource holds no more
                    missing = count - index
                    which = f"frame {index}" if missing == 1 else f"frames {index}-{count - 1}"
                    hint = "" if index or not self.spec.lower().startswith(("http:", "https:")) else (
                        # FFmpeg reads an MP4's index (moov) at its end through a Range request; a
                        # server that ignores them sends the file from the start and it ends "partial".
                        "; an MP4 whose index is at its end cannot be read from a server without HTTP Range "
                        "requests (python -m http.server has none): serve it from one with them, or move the "
                        "index to the front (ffmpeg -i in.mp4 -c copy -movflags +faststart out.mp4)")
                    raise CorruptFrame(f"{which} of {count} missing: the stream ended after {index} of the {count} "
                                       f"frames it states, also when reopened{hint}", frames=missing,
                                       key=("end", index), ends_pass=True)
            if not self.options.loop or self._good_this_pass == 0:
                return None
            self._pos = self._good_this_pass = 0
            self._pass_over = self._resuming = False
            connection.restart()  # when that fails, the next turn reopens it with backoff
        return None

    def _say_ended(self, index: int, count: int | None) -> None:
        if self._said_ended:
            return
        self._said_ended = True
        stated = ("FFmpeg cannot tell this file's frame count" if count is None else f"the {count} frames FFmpeg "
                  "states are its estimate from the duration, often the audio's, which can run longer")
        log.info("%s holds no frame after the %d read, also when opened again: taken as its end, nothing counted "
                 "missing (%s)", self.describe(), index, stated)

    def _resume(self, cap: cv2.VideoCapture) -> None:
        """After a reopen, go to the frame after the last one read (the resource starts again at 0)
        by reading past the frames already delivered (grabbed, not decoded). Not by seeking: over
        HTTP from a server without Range requests (``python -m http.server``) FFmpeg's seek says it
        succeeded and lands some frames further on, which would skip frames without a word."""
        self._resuming = True
        for _ in range(self._pos):
            if not cap.grab():
                break


class GStreamerSource(LiveCaptureSource):
    """A GStreamer pipeline string ending in ``appsink``."""

    kind = "gstreamer"

    def __init__(self, spec: str, options: SourceOptions) -> None:
        refuse_undecodable(spec, "GStreamer pipeline")
        if not opencv_has_gstreamer():
            raise SourceError(
                "this OpenCV build has no GStreamer support (cv2.getBuildInformation() says GStreamer: NO); "
                "install an OpenCV built with GStreamer, or use a camera, file or URL source"
            )
        super().__init__(spec, options)

    def describe(self) -> str:
        return f"gstreamer pipeline {quoted(self.spec, 400)}"

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(self.spec, cv2.CAP_GSTREAMER)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"cannot start {self.describe()}; test it with gst-launch-1.0 and end it in 'appsink'"
            )
        return cap
