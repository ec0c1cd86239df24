"""Video files (mp4, avi, mkv, gif, ... anything FFmpeg decodes).

As fast as possible by default (with the lossless queue every frame is processed once, in order);
``realtime`` delivers each frame at its own timestamp, as the file was recorded (``CAP_PROP_POS_MSEC``,
``pacing.TimestampPacer``: gaps capped, frames without one at the average rate; ``fps`` overrides it
with a fixed rate); ``loop`` restarts at the end. The end of the file ends the run cleanly.

A damaged stretch is not the end: when a grab fails before the frame count the container states
(``CAP_PROP_FRAME_COUNT``), the frame is counted as corrupt, named, and skipped (FFmpeg has
consumed the damaged packet, so the next grab reads the frame after it). The run ends at the
stated count or, for a container that states none, at the first failed grab; ``MAX_CONSECUTIVE_CORRUPT``
unreadable frames in a row end it with an error instead, unless FFmpeg had read the file to its
last byte before the first of them and read nothing more through them all: that is a file cut
short, however many frames it lacks, not damage (``_at_file_end``: the position of FFmpeg's own
descriptor on the file, where the system shows it, ``/proc/self/fd``; elsewhere the limit applies).

Which frames a failed grab stands for is known only when a good frame follows it: then the grabs
failed in place and name their frames (``frame 30 of 120 cannot be read``). When the grabs fail
from some point to the stated count, the file simply holds fewer frames than it states (cut off,
or its demuxer dropped damaged frames somewhere while it resynchronised, which it does not say):
those frames are counted as one note, ``frames 35-39 of 40 missing: ...``, not named one by one
as if the last frames, which were published, were the damaged ones. That count is held against
the file only where it is one the container stores of exactly the frames it shows, or where the
file is cut off (``Layout``, from a few of its bytes): FFmpeg estimates it where the container
stores none (MKV, WebM, TS: duration x nominal rate, the duration often the audio's), and an
AVI's dropped-frame chunks and an MP4's edit-list trim are counted but never shown. An intact file
that ends before such a count simply ends there, nothing counted. A damaged frame that FFmpeg's
demuxer drops without a failed grab in a container that states no count (raw MJPEG) cannot be seen
through OpenCV and is not counted.

A raw MJPEG file (``.mjpeg``: JPEG images one after another, no container) is decoded here, packet
by packet (``mjpeg.JpegPackets``), so that each frame keeps its own size: OpenCV scales a frame
whose size differs from the first to the first's. In a container (AVI, MOV, MP4) every frame is
decoded by OpenCV at the size the container states.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from pathlib import Path

import cv2
import numpy as np

from perception import MAX_SOURCE_PIXELS, cvpath
from perception.errors import SourceError, why_not_a_file
from perception.sources import base
from perception.sources.base import (
    CorruptFrame,
    Source,
    SourceOptions,
    frame_too_big,
    grab_and_retrieve,
    shown,
    stamp,
    video_spec_word,
)
from perception.sources.container import Layout, codec_of, is_av1, reencode_hint
from perception.sources.interlace import (
    H264_CODECS,
    INTERLACE_CHECK_FRAMES,
    MPEG2_CODECS,
    interlaced_headers,
    stale_frames,
)
from perception.sources.mjpeg import is_mjpeg, jpeg_packets
from perception.sources.pacing import FrameTime

log = logging.getLogger(__name__)

#: Rate used for --realtime when the container does not state one.
FALLBACK_FPS = 30.0
#: Pixel aspect ratios within this fraction of 1 are taken as square: OpenCV reports a bogus
#: 5776/5769 (0.12 % off) for an MJPEG AVI of odd size, and no real anamorphic format is that close.
SQUARE_TOLERANCE = 0.01


def pixel_aspect(cap) -> float | None:
    """The width of a stored pixel over its height (``CAP_PROP_SAR_NUM / _DEN``) where it is not
    square; None for square pixels, within ``SQUARE_TOLERANCE``, or none stated."""
    try:
        num, den = cap.get(cv2.CAP_PROP_SAR_NUM), cap.get(cv2.CAP_PROP_SAR_DEN)
    except cv2.error:
        return None
    if not (num and den and math.isfinite(num) and math.isfinite(den) and num > 0 and den > 0):
        return None
    ratio = num / den
    return None if abs(ratio - 1.0) <= SQUARE_TOLERANCE else ratio


def display_size(width: int, height: int, aspect: float | None, rotation: int) -> tuple[int, int]:
    """The size a frame of ``width`` x ``height`` (as OpenCV delivers it: already turned by
    ``rotation`` degrees) is displayed at, for stored pixels ``aspect`` wide to 1 high: the axis the
    stored width lies on is stretched (or narrowed) by it, as players and ``ffmpeg -vf
    scale=iw*sar:ih`` do; turned a quarter, that is the delivered height."""
    if aspect is None:
        return width, height
    if rotation % 180 == 90:
        return width, max(1, round(height * aspect))
    return max(1, round(width * aspect)), height


def to_display(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` resampled to ``size`` (width, height) when it is not that size already."""
    if (image.shape[1], image.shape[0]) == size:
        return image
    shrink = size[0] * size[1] < image.shape[0] * image.shape[1]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _descriptors() -> dict[int, tuple[int, int]] | None:
    """This process's open descriptors and the file each is on ``(st_dev, st_ino)``; None where the
    system does not list them (no ``/proc/self/fd``)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    found = {}
    for name in names:
        try:
            st = os.stat(f"/proc/self/fd/{name}")
        except (OSError, ValueError):
            continue  # closed meanwhile (the listing's own descriptor among them)
        found[int(name)] = (st.st_dev, st.st_ino)
    return found


def _holds_bare_jpegs(path: Path) -> bool:
    """Whether the file is a raw MJPEG stream (JPEG images one after another, no container: an
    ``.mjpeg`` recording), whose frames may change size from one to the next."""
    try:
        with open(path, "rb") as file:
            return file.read(3) == b"\xff\xd8\xff"
    except OSError:
        return False


def _file_backend() -> int:
    """The OpenCV backend video files are opened with: FFmpeg alone, where this OpenCV has it. Left
    to choose, OpenCV tries its other backends on a file FFmpeg refuses, and its own MJPEG AVI
    parser prints to the console directly, whatever the log level ("Unexpected element. Expected:
    LIST. Got: JUNK." for a damaged AVI), without reading anything FFmpeg could not. An OpenCV
    built without FFmpeg keeps its own choice."""
    registry = getattr(cv2, "videoio_registry", None)
    try:
        if registry is not None and registry.hasBackend(cv2.CAP_FFMPEG):
            return cv2.CAP_FFMPEG
    except cv2.error:
        pass
    return cv2.CAP_ANY


class VideoFileSource(Source):
    """A video file read with OpenCV (FFmpeg backend)."""

    kind = "video"
    #: Passes begun (``--loop``) and where the last frame grabbed sits on the file's timeline, for
    #: ``--realtime`` (``_frame_time``). Class defaults: any grab, whenever made, finds them.
    _passes = 0
    _grabbed_at: FrameTime | None = None

    def __init__(self, spec: str, options: SourceOptions) -> None:
        super().__init__(spec, options)
        self.path = Path(spec)
        self._mjpeg_said: set[str] = set()  # what an MJPEG file's decoding said already (mjpeg.JpegPackets)
        if not self.path.is_file():
            raise SourceError(f"{video_spec_word(spec)} {shown(spec)} {why_not_a_file(self.path)}; check the path")
        self._cap = self._open()
        self._read_geometry()
        width, height = self.size
        if frame_too_big(width, height):  # checked before the first frame is decoded
            self._cap.release()
            raise SourceError(f"video file {shown(spec)} is {width:.0f}x{height:.0f}, more than {MAX_SOURCE_PIXELS} "
                              "pixels (8192 x 8192) a frame; scale it down for the node (ffmpeg -vf scale=1920:-2)")
        try:
            self._refuse_interlaced()
        except SourceError:
            self._cap.release()
            raise
        self._frames_this_pass = 0
        self._attempts_this_pass = 0  # frames read or found unreadable in this pass
        self._pass_over = False  # this pass reached the file's end (a note said where)
        #: Where the file really ends when that is before the count its container states (found on
        #: the first pass): later passes of --loop end there at once, without looking past it.
        self.real_end: int | None = None
        #: What a look past a failed grab found: notes of unreadable frames, then the good frame.
        self._pending: list[CorruptFrame | tuple] = []
        #: Frames the container says it holds (None when it does not say); read again at each
        #: reopen of --loop, since the file may have been replaced between passes.
        self.frame_count = self._stated_count()
        native_fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.native_fps = native_fps if native_fps and math.isfinite(native_fps) and native_fps > 0 else None
        if options.fps:  # a fixed rate, over the file's own timing
            self.pace(options.fps)
        elif options.realtime:  # as recorded: each frame at its own timestamp (the average rate without one)
            self.pace_by_timestamps(self.native_fps or FALLBACK_FPS)
        log.info("%s", self._opened_line())

    def _read_geometry(self) -> None:
        """What the capture says of its frames' geometry: ``rotation`` (degrees its display matrix
        turns the stored frames, which OpenCV applies), ``aspect`` (a stored pixel's width over its
        height where not square, ``pixel_aspect``), ``delivered`` (the size OpenCV delivers, turned)
        and ``size`` (the size the node reads each frame at: ``delivered`` resampled to square
        pixels, ``display_size``)."""
        cap = self._cap
        width, height = (int(cap.get(prop) or 0) for prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT))
        try:
            rotation = int(cap.get(cv2.CAP_PROP_ORIENTATION_META) or 0) % 360
            if not cap.get(cv2.CAP_PROP_ORIENTATION_AUTO):
                rotation = 0  # not applied
        except (cv2.error, ValueError, OverflowError):
            rotation = 0
        self.rotation, self.aspect, self.delivered = rotation, pixel_aspect(cap), (width, height)
        self.size = display_size(width, height, self.aspect, rotation)

    def _opened_line(self) -> str:
        """One line of what the file holds, said at open: the size frames are read at, how it is
        stored when that differs (turned by its display matrix, non-square pixels), codec, rate and
        frame count, so that a wrong geometry shows in the log."""
        width, height = self.size
        notes = []
        stored = self.delivered[::-1] if self.rotation % 180 == 90 else self.delivered
        if self.rotation:
            notes.append(f"turned {self.rotation} degrees by its display matrix")
        if self.aspect is not None:
            notes.append(f"pixels {self.aspect:.4g}:1 wide (anamorphic), resampled to square pixels")
        where = f" (stored {stored[0]}x{stored[1]}, {', '.join(notes)})" if notes else ""
        codec = codec_of(self._cap) or "unknown codec"
        rate = f"{self.native_fps:.4g} fps" if self.native_fps else "no frame rate stated"
        count = f"{self.frame_count} frames" if self.frame_count else "no frame count stated"
        return f"{self.describe()}: {width}x{height}{where}, {codec}, {rate}, {count}"

    def _refuse_interlaced(self) -> None:
        """SourceError for an interlaced stream this OpenCV decodes to blank or stale frames.

        OpenCV 5.0 converts FFmpeg's frames to BGR with ``sws_scale_frame``, which refuses a frame
        flagged interlaced ("Cannot convert interlaced to progressive frames"); OpenCV ignores the
        failure and returns its output buffer as it was, ``ok`` True: zeros or leftover memory, the
        same bytes for every frame (no capture property avoids it: ``CAP_PROP_CONVERT_RGB`` 0 and
        hardware decoding go through the same converter). Judged from two things together, so that
        neither a night drive or a black lead-in (frames really alike) nor an interlace-capable
        stream that does decode (H.264 coded as frames only) is refused: the codec headers say the
        stream is interlaced (``interlaced_headers``: MPEG-2's progressive flags, H.264's
        ``frame_mbs_only_flag``), and its first frames, decoded, are one and the same bytes
        (``stale_frames``). Only FFmpeg's converter has this flaw: other backends are not asked."""
        codec = codec_of(self._cap)
        if codec not in MPEG2_CODECS | H264_CODECS or _file_backend() != cv2.CAP_FFMPEG:
            return
        try:
            raw = cvpath.video_capture(self.path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_FORMAT, -1])
        except (OSError, cv2.error):
            return
        chunks = []
        try:
            if raw.isOpened():
                ok, extra = raw.retrieve(None, int(raw.get(cv2.CAP_PROP_CODEC_EXTRADATA_INDEX)))
                if ok and extra is not None:
                    chunks.append(bytes(np.asarray(extra).ravel()))
                for _ in range(2):  # headers sent in the stream (TS, raw H.264) come with the first packets
                    ok, packet = raw.read()
                    if not ok or packet is None:
                        break
                    chunks.append(bytes(np.asarray(packet).ravel()))
        except cv2.error:
            pass
        finally:
            raw.release()
        if not interlaced_headers(codec, chunks):
            return
        probe = cvpath.video_capture(self.path, cv2.CAP_FFMPEG)
        frames = []
        try:
            for _ in range(INTERLACE_CHECK_FRAMES):
                ok, image = probe.read()
                if not ok or image is None:
                    break
                frames.append(image)
        finally:
            probe.release()
        if stale_frames(frames) or len(frames) == 1:  # one frame alone cannot be compared: its headers say
            name = shown(self.spec)
            raise SourceError(f"video file {name} is interlaced {'MPEG-2' if codec in MPEG2_CODECS else 'H.264'} video, "
                              "which this OpenCV's FFmpeg cannot convert to pictures (every frame comes out blank "
                              f"or as leftover memory); deinterlace it first (ffmpeg -i {name} -vf bwdif "
                              "-c:v libx264 -crf 18 out.mp4)")

    def describe(self) -> str:
        return f"video file {shown(self.spec)}"

    def _open(self) -> cv2.VideoCapture:
        """Open the file (again, for each pass of --loop): SourceError when it is gone or not a file
        any more ("not found", as at start-up), or FFmpeg cannot read it. ``_file_id`` records which
        file it is, so that a file replaced between passes is told from the one read before."""
        try:
            st = os.stat(self.path)
            file_id = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None
        except OSError:
            file_id = None
        if file_id is None:  # deleted (or swapped for a folder...) since it was checked: say so, not the codec
            # log_name: which camera, in a node of several (a --loop pass reopens it mid-run)
            raise SourceError(f"{self.log_name()} {why_not_a_file(self.path)}; check the path")
        cap = self._open_capture(file_id[:2])
        if not cap.isOpened():
            cap.release()
            if not self.path.is_file():  # gone while FFmpeg opened it
                raise SourceError(f"{self.log_name()} {why_not_a_file(self.path)}; check the path")
            raise SourceError(f"video file {shown(self.spec)} {self._why_unreadable()}")
        self._file_id = file_id
        if is_mjpeg(cap) and _holds_bare_jpegs(self.path):  # decoded here, each frame at its own size
            cap = jpeg_packets(cap, reopen=lambda: self._plain_capture(file_id), describe=self.describe(),
                               said=self._mjpeg_said)  # once a run, not once a --loop pass
        return cap

    def _plain_capture(self, file_id: tuple) -> cv2.VideoCapture:
        """The file opened again, decoded by OpenCV (``JpegPackets`` found its packets are not whole
        JPEG images)."""
        cap = self._open_capture(file_id[:2])
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"video file {shown(self.spec)} {self._why_unreadable()}")
        return cap

    def _why_unreadable(self) -> str:
        """Why FFmpeg could not open the file, and what to do, as its bytes tell: empty, an MP4
        without its index (a recording or download cut short), no video track, or not a video."""
        layout = Layout(self.path)
        if layout.size == 0:
            return "is empty (0 bytes): its recording or copy wrote nothing; check --source"
        if layout.container == "mp4" and layout.index is False:
            return ("has no index (no moov box): its recording or download was cut short; copy or download it "
                    "again, or recover it with a tool such as untrunc")
        if layout.audio or (layout.container == "mp4" and layout.video_track is False):
            return "holds no video track (audio only?); give a video file"
        return "cannot be read; is it a video FFmpeg can decode (mp4, avi, mkv, gif)?"

    def _open_capture(self, ident: tuple[int, int]) -> cv2.VideoCapture:
        """``cv2.VideoCapture`` of the file (``ident``: its ``(st_dev, st_ino)``), and which of this
        process's descriptors FFmpeg opened on it (``_fd``, for ``_at_file_end``): the one new
        descriptor on this file. None when there is not exactly one (another capture of the same
        file opened at the same time) or the system does not list them."""
        before = _descriptors()
        try:  # a name OpenCV cannot take (not UTF-8) is opened through an alias (cvpath)
            cap = cvpath.video_capture(self.path, _file_backend())
        except OSError as exc:
            raise SourceError(cvpath.unnamable(self.spec, "video file", exc)) from None
        after = _descriptors() if before is not None else None
        mine = [] if after is None else [fd for fd, on in after.items()
                                         if on == ident and before.get(fd) != ident]
        self._fd = mine[0] if len(mine) == 1 else None
        return cap

    def _at_file_end(self) -> bool:
        """Whether FFmpeg has read the file to its last byte: its descriptor's position is the file's
        size. False where that cannot be told (no descriptor found, or it is not this file any more)."""
        if self._fd is None:
            return False
        try:
            st = os.fstat(self._fd)
            if (st.st_dev, st.st_ino) != self._file_id[:2]:
                return False
            return os.lseek(self._fd, 0, os.SEEK_CUR) >= st.st_size
        except OSError:
            return False

    def _stated_count(self) -> int | None:
        """``CAP_PROP_FRAME_COUNT``: a count the container stores, or FFmpeg's estimate where it
        stores none (``Layout``); which of them only matters where the file ends before it."""
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        return int(count) if count and math.isfinite(count) and count > 0 else None

    _layout_of: tuple | None = None  # the file ``_layout`` was read from (``_file_id``)

    def _layout(self) -> Layout:
        """What this file's structure says (``Layout``), read once per file. A file now shorter than
        it was when opened was cut while it was read (truncated in place, a copy restarted over it):
        cut off, whatever its bytes now say (cut to 0 bytes, they say nothing: it ended silently)."""
        if self._layout_of != self._file_id:
            layout = Layout(self.path)
            if self._file_id is not None and layout.size < self._file_id[2]:
                layout.cut = True
            self._layout_read, self._layout_of = layout, self._file_id
        return self._layout_read

    def _undecodable(self) -> SourceError:
        """The error for a file whose video FFmpeg opened but cannot decode one frame of, and that is
        not cut off: its codec (AV1: this OpenCV's FFmpeg has no AV1 decoder, only a hardware one)."""
        codec, name = codec_of(self._cap), shown(self.spec)
        if is_av1(codec):
            return SourceError(f"video file {name} is AV1 video, which this OpenCV's FFmpeg cannot decode; "
                               f"{reencode_hint(name)}")
        what = f"its {codec!r} video" if codec else "its video"
        return SourceError(f"video file {name}: not one frame of {what} decodes (a codec this OpenCV's FFmpeg "
                           f"cannot decode, or damage); {reencode_hint(name)}")

    def _read_ended(self, index: int) -> None:
        """This pass simply ended at frame ``index``, before a count that FFmpeg only estimated or
        that counts frames the file never shows (``Layout``): nothing is missing, and nothing is
        counted; a later pass of --loop ends there at once."""
        self._pass_over, self.real_end = True, index
        log.debug("%s ends after %d frames (its container's count, %d, is an estimate or counts frames it does "
                  "not show)", self.describe(), index, self.frame_count or 0)

    def _reopen(self) -> None:
        """The next pass of --loop: the file opened again (more reliable than seeking to frame 0
        across containers: gif, mkv). A file replaced since the last pass is judged by what its own
        container states, not by the one before: its frame count, and where it really ends is
        found again (``real_end``)."""
        before = self._file_id
        self._cap.release()
        self._cap = self._open()
        if self._file_id != before:
            self.frame_count, self.real_end = self._stated_count(), None
            self._read_geometry()
            width, height = self.size
            if frame_too_big(width, height):
                raise SourceError(f"video file {shown(self.spec)} was replaced by one of {width:.0f}x{height:.0f}, "
                                  f"more than {MAX_SOURCE_PIXELS} pixels (8192 x 8192) a frame; scale it down for "
                                  "the node (ffmpeg -vf scale=1920:-2)")
            self._refuse_interlaced()
            log.info("%s (replaced)", self._opened_line())

    def _grab(self) -> tuple | None:
        """The next frame of this pass (None: a failed grab); CorruptFrame naming a frame that was
        grabbed but not decoded."""
        index = self._attempts_this_pass
        self._attempts_this_pass += 1
        if index == 0:
            self._passes += 1  # a new pass: its timeline starts again
        try:
            got = grab_and_retrieve(self._cap)
        except CorruptFrame as exc:
            raise CorruptFrame(f"frame {index}: {exc}", key=index) from None
        if got is not None:
            if self.aspect is not None:  # anamorphic: resampled to the shape it is displayed at
                image = got[0]
                got = (to_display(image, display_size(image.shape[1], image.shape[0], self.aspect, self.rotation)),
                       *got[1:])
            self._frames_this_pass += 1
            if self._pacer is not None and self._pacer.by_timestamps:
                self._grabbed_at = FrameTime(self._passes, index, self._position_s())
        return got

    def _position_s(self) -> float | None:
        """The timestamp of the frame grabbed last, in seconds from the file's start; None when FFmpeg
        gives none (OpenCV then says 0, as for every frame of a raw H.264 stream: ``pacing.TimestampPacer``
        takes a repeated timestamp for none)."""
        ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        return ms / 1e3 if isinstance(ms, (int, float)) and math.isfinite(ms) and ms >= 0 else None

    def _frame_time(self) -> FrameTime | None:
        """Where the frame delivered now sits on the file's timeline: the last one grabbed (a frame a
        look past failed grabs found is delivered before anything else is grabbed)."""
        return self._grabbed_at

    def _next_image(self):
        if self._pending:
            item = self._pending.pop(0)
            if isinstance(item, CorruptFrame):
                raise item
            return (item[0], *stamp())  # stamped when it is delivered, not when the look-ahead grabbed it
        if not self._pass_over:
            index = self._attempts_this_pass
            got = self._grab()
            if got is not None:
                return got
            if self.frame_count is not None and index < self.frame_count and index != self.real_end:
                failed = self._look_past_failed_grab(index)
                if failed is not None:
                    raise failed
        if not self.options.loop or self._frames_this_pass == 0:
            return None
        self._reopen()
        self._frames_this_pass = self._attempts_this_pass = 0
        self._pass_over = False
        self._pending = []
        return self._next_image()

    def _ends_at(self, index: int, message: str, frames: int) -> CorruptFrame:
        """The note of the file's real end at frame ``index`` (before the count its container
        states), standing for ``frames`` failed grabs: this pass is over, and a later one of
        ``--loop`` ends there at once (the note is counted once per run)."""
        self._pass_over, self.real_end = True, index
        return CorruptFrame(message, frames=frames, key=("end", index), ends_pass=True)

    def _unreadable(self, index: int, count: int) -> CorruptFrame:
        return CorruptFrame(f"frame {index} of {count} cannot be read", key=index)

    def _look_past_failed_grab(self, index: int) -> CorruptFrame | None:
        """What the failed grab of frame ``index`` (before the stated count) stands for, found by
        grabbing on: a good frame within ``MAX_CONSECUTIVE_CORRUPT`` grabs means the failed ones
        were damaged frames in place (each named; the good frame is kept for the next read); the
        stated count reached without one means the file ends early: one note for them all where
        the file is cut off or its container stores that count (``Layout.holds_count``), None (the
        end of the pass, nothing counted) where the count was only an estimate. SourceError when
        not one frame of a file that is not cut off decodes (its codec)."""
        count = self.frame_count or 0
        failed = [index]
        # Read to its last byte before this grab failed: failed grabs from here on read nothing more.
        at_end = self._at_file_end()
        while len(failed) < base.MAX_CONSECUTIVE_CORRUPT and self._attempts_this_pass < count:
            at = self._attempts_this_pass
            try:
                got = self._grab()
            except CorruptFrame as exc:  # grabbed, so the frames before it failed in place too
                self._pending = [self._unreadable(i, count) for i in failed[1:]] + [exc]
                return self._unreadable(index, count)
            if got is not None:
                self._pending = [self._unreadable(i, count) for i in failed[1:]] + [got]
                return self._unreadable(index, count)
            failed.append(at)
        which = f"frame {index}" if count - index == 1 else f"frames {index}-{count - 1}"
        # No good frame up to the stated count, or, before it, none in MAX_CONSECUTIVE_CORRUPT grabs
        # that all failed at the end of the file's bytes (it was read to its end before the first
        # of them, and is still): the file ends early, however many frames it lacks. Damage before
        # the end makes FFmpeg read on through the damaged packets.
        ended = self._attempts_this_pass >= count or (at_end and self._at_file_end())
        if (ended or self._fd is None) and index == 0 and not self._frames_this_pass and not self._layout().cut:
            raise self._undecodable()
        if not self._layout().holds_count and (self._at_file_end() or (self._fd is None and self._attempts_this_pass >= count)):
            # The count was FFmpeg's estimate, or counts frames the file never shows, and FFmpeg read
            # the file to its last byte: its end. Not where FFmpeg stopped before its end (frames lost
            # to damage: counted below). Where the read position cannot be seen (no /proc/self/fd),
            # grabs that failed up to the count are taken for the end, and MAX_CONSECUTIVE_CORRUPT of
            # them before it end the run with its error, as for damage.
            self._read_ended(index)
            return None
        if ended:
            return self._ends_at(index, f"{which} of {count} missing: the file ends after {index} of the {count} "
                                 "frames its container states (cut off, or frames lost to damage earlier in the file)",
                                 frames=count - index)
        if self.options.loop and self._frames_this_pass:
            # --loop: no frame in MAX_CONSECUTIVE_CORRUPT grabs after this pass's last good one, with
            # the file's bytes not all read (a tail damaged past recovery) or where that cannot be
            # seen (``_at_file_end``: then a container that overstates its count, as some recorders'
            # headers do, looks the same), is taken as the file's real end, and it plays again from
            # there. The failed grabs are counted, once per run.
            return self._ends_at(index, f"{which} of {count} missing: no frame in the {len(failed)} grabs after "
                                 f"frame {index - 1}, taken as the end of the file (its container overstates its "
                                 "count, or the rest is damaged); --loop plays it again from its first frame",
                                 frames=len(failed))
        # MAX_CONSECUTIVE_CORRUPT failed grabs in a row and more frames stated: named one by one
        # (the source then ends the run with its error).
        self._pending = [self._unreadable(i, count) for i in failed[1:]]
        return self._unreadable(index, count)

    def close(self) -> None:
        super().close()
        self._cap.release()
