"""What a video file's container says, read from a few of its bytes and from OpenCV: its codec
(``codec_of``; AV1, which OpenCV's FFmpeg cannot decode), and its ``Layout``: whether it is cut off,
and whether it stores an exact count of the frames it shows (an AVI without dropped-frame chunks, an
MP4 whose edit list shows all its frames) or only an estimate (MKV, WebM, TS: FFmpeg's duration x
nominal rate). ``video.py`` holds a file that ends short of ``CAP_PROP_FRAME_COUNT`` against it only
when ``Layout.holds_count``.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import cv2

log = logging.getLogger(__name__)


def codec_of(cap) -> str:
    """A capture's video codec as FFmpeg names it (``CAP_PROP_FOURCC``: ``h264``, ``AV01``...); "" for none."""
    try:
        code = int(cap.get(cv2.CAP_PROP_FOURCC)) & 0xFFFFFFFF
    except (TypeError, ValueError, OverflowError, cv2.error):
        return ""
    text = code.to_bytes(4, "little").decode("latin-1")
    return "".join(c for c in text if c.isprintable() and c.isascii()).strip()


def is_av1(codec: str) -> bool:
    """AV1, which the FFmpeg in OpenCV's wheels cannot decode (its ``av1`` decoder needs a hardware
    one; no libdav1d or libaom): every grab fails, as for damage."""
    return codec.lower() in ("av01", "av1")


def reencode_hint(name: str) -> str:
    return f"re-encode it to H.264 (ffmpeg -i {name} -c:v libx264 -crf 18 out.mp4)"


#: Largest ``moov`` box (an MP4's index) read to look at its tracks; a longer one is not looked into.
MAX_INDEX_BYTES = 64 << 20


def _iso_boxes(data: bytes, start: int = 0, end: int | None = None):
    """``(kind, payload_start, payload_end)`` of the ISO BMFF boxes in ``data[start:end]``, stopping
    at one that does not fit."""
    end = len(data) if end is None else end
    at = start
    while at + 8 <= end:
        size, kind, head = int.from_bytes(data[at:at + 4], "big"), data[at + 4:at + 8], 8
        if size == 1 and at + 16 <= end:
            size, head = int.from_bytes(data[at + 8:at + 16], "big"), 16
        elif size == 0:
            size = end - at
        if size < head or at + size > end:
            return
        yield kind, at + head, at + size
        at += size


def _child(data: bytes, start: int, end: int, *path: bytes) -> tuple[int, int] | None:
    for name in path:
        found = next(((s, e) for kind, s, e in _iso_boxes(data, start, end) if kind == name), None)
        if found is None:
            return None
        start, end = found
    return start, end


def _timescale_duration(data: bytes, start: int) -> tuple[int, int]:
    """``(timescale, duration)`` of an ``mvhd`` or ``mdhd`` box's payload."""
    if data[start] == 1:
        return int.from_bytes(data[start + 20:start + 24], "big"), int.from_bytes(data[start + 24:start + 32], "big")
    return int.from_bytes(data[start + 12:start + 16], "big"), int.from_bytes(data[start + 16:start + 20], "big")


#: How audio-only files begin (ID3-tagged or bare MP3, FLAC, WAV): no video stream to read.
_AUDIO_MAGIC = (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2", b"fLaC")


class Layout:
    """What a video file's own structure says, read from a few of its bytes (the top-level boxes or
    elements; an MP4's index): whether it is cut off (it ends inside an element it declares), and
    whether ``CAP_PROP_FRAME_COUNT`` is a count it stores of exactly the frames it shows.

    That count is FFmpeg's estimate (duration x nominal rate: the longest stream's duration, often
    the audio's, and the nominal rate of a variable-rate clip) where the container stores none:
    Matroska/WebM, MPEG-TS, a fragmented MP4 and most others. An AVI stores one (its headers), but
    counts the empty chunks of frames its recorder dropped (the previous frame shown again, never
    decoded); an MP4 stores its samples, also those its edit list does not show (a lossless trim,
    ``ffmpeg -ss 5 -c copy``). Read only when a file ends before its count (``holds_count``)."""

    def __init__(self, path: Path) -> None:
        self.size = 0
        self.container = "other"
        self.cut = False  #: the file ends inside an element its structure declares (cut off)
        self.exact_count = False  #: its container stores a frame count of exactly the frames it shows
        self.index: bool | None = None  #: MP4/MOV: whether it holds its index (moov)
        self.video_track: bool | None = None  #: MP4/MOV with an index: whether it holds a video track
        self.audio = False  #: an audio file by its first bytes (MP3, FLAC, WAV)
        with contextlib.suppress(OSError, ValueError, IndexError), open(path, "rb") as f:
            self.size = f.seek(0, 2)
            f.seek(0)
            head = f.read(12)
            self.audio = head.startswith(_AUDIO_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WAVE")
            if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"):
                self.container = "mp4"
                self._mp4(f)
            elif head[:4] == b"RIFF" and head[8:12] == b"AVI ":
                self.container = "avi"
                self._avi(f)
            elif head[:4] == b"\x1a\x45\xdf\xa3":
                self.container = "matroska"
                self.cut = self._matroska_cut(f)

    def _mp4(self, f) -> None:
        """The top-level boxes (one that does not fit: cut off), then the index's first video track:
        its samples are all shown unless the index is fragmented or its edits show less than them."""
        at, moov = 0, None
        while at < self.size:
            f.seek(at)
            head = f.read(16)
            if len(head) < 8:
                self.cut = True
                break
            size, kind, hl = int.from_bytes(head[:4], "big"), head[4:8], 8
            if size == 1:
                if len(head) < 16:
                    self.cut = True
                    break
                size, hl = int.from_bytes(head[8:16], "big"), 16
            elif size == 0:
                size = self.size - at
            if size < hl:
                break  # not boxes (any more): nothing to tell
            if at + size > self.size:
                self.cut = True
                break
            if kind == b"moov" and moov is None:
                moov = (at + hl, size - hl)
            at += size
        self.index = moov is not None
        if moov is None or moov[1] > MAX_INDEX_BYTES:
            return
        f.seek(moov[0])
        data = f.read(moov[1])
        mvhd = _child(data, 0, len(data), b"mvhd")
        if mvhd is None:
            return
        movie_scale, _ = _timescale_duration(data, mvhd[0])
        fragmented = _child(data, 0, len(data), b"mvex") is not None
        self.video_track = False
        for kind, start, end in _iso_boxes(data):
            if kind != b"trak":
                continue
            hdlr = _child(data, start, end, b"mdia", b"hdlr")
            if hdlr is None or data[hdlr[0] + 8:hdlr[0] + 12] != b"vide":
                continue
            self.video_track = True
            mdhd = _child(data, start, end, b"mdia", b"mdhd")
            stsz = _child(data, start, end, b"mdia", b"minf", b"stbl", b"stsz")
            if fragmented or mdhd is None or stsz is None or not movie_scale:
                return
            scale, duration = _timescale_duration(data, mdhd[0])
            samples = int.from_bytes(data[stsz[0] + 8:stsz[0] + 12], "big")
            if not scale or not samples:
                return
            elst = _child(data, start, end, b"edts", b"elst")
            kept = duration / scale
            if elst is not None:  # the time its edits show: less than the samples' for a trim (-ss -c copy)
                version, entries = data[elst[0]], int.from_bytes(data[elst[0] + 4:elst[0] + 8], "big")
                width = 20 if version == 1 else 12
                kept = 0.0
                for i in range(entries):
                    at = elst[0] + 8 + i * width
                    half = 8 if version == 1 else 4
                    seg = int.from_bytes(data[at:at + half], "big")
                    media_time = int.from_bytes(data[at + half:at + 2 * half], "big", signed=True)
                    if media_time != -1:  # an empty edit delays the start, showing no samples
                        kept += seg / movie_scale
            self.exact_count = kept >= duration / scale - 1.5 * (duration / scale) / samples
            return

    def _avi(self, f) -> None:
        """The RIFF chunks (one that does not fit: cut off), then the first one's index (idx1)."""
        at, first = 0, True
        while at + 8 <= self.size:
            f.seek(at)
            head = f.read(12)
            size = int.from_bytes(head[4:8], "little")
            if head[:4] != b"RIFF" or len(head) < 12:
                break
            if at + 8 + size > self.size:
                self.cut = True
                return
            if first:
                self.exact_count = not self._avi_drops(f, at + 12, at + 8 + size)
                first = False
            at += 8 + size + (size & 1)
        if at + 8 > self.size and at < self.size:
            self.cut = True

    @staticmethod
    def _avi_drops(f, start: int, end: int) -> bool:
        """Whether the AVI's index (idx1) lists empty video chunks: frames dropped by the recorder
        (the previous one shown again), counted in its headers' frame count but never decoded."""
        at = start
        while at + 8 <= end:
            f.seek(at)
            head = f.read(8)
            size = int.from_bytes(head[4:8], "little")
            if head[:4] == b"idx1":
                data = f.read(min(size, end - at - 8))
                for i in range(0, len(data) - 15, 16):
                    if data[i + 2:i + 4] in (b"dc", b"db") and not int.from_bytes(data[i + 12:i + 16], "little"):
                        return True
                return False
            at += 8 + size + (size & 1)
        return False

    def _matroska_cut(self, f) -> bool:
        """Whether a Matroska/WebM file ends inside an element its structure declares; False where
        that cannot be told (an element of unknown size: a live recording's)."""
        at, level_end = 0, self.size
        while at < level_end:
            f.seek(at)
            head = f.read(12)
            if not head:
                return False
            id_len = 9 - head[0].bit_length()
            if not 1 <= id_len <= 4 or len(head) < id_len + 1:
                return len(head) < id_len + 1
            element = head[:id_len]
            first = head[id_len]
            size_len = 9 - first.bit_length()
            if not 1 <= size_len <= 8:
                return False
            if len(head) < id_len + size_len:
                return True
            raw = head[id_len:id_len + size_len]
            value = int.from_bytes(raw, "big") & ((1 << (7 * size_len)) - 1)
            body = at + id_len + size_len
            if value == (1 << (7 * size_len)) - 1:  # unknown size
                if element != b"\x18\x53\x80\x67":
                    return False
                at = body  # a Segment of unknown size: look at its children
                continue
            if body + value > self.size:
                return True
            at = body + value
        return False

    @property
    def holds_count(self) -> bool:
        """Whether frames short of ``CAP_PROP_FRAME_COUNT`` at the file's end are frames it lacks:
        it is cut off, or its container stores a count of exactly the frames it shows."""
        return self.cut or self.exact_count
