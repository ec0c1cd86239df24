"""MJPEG video decoded here, packet by packet (``JpegPackets``), so that each frame keeps its own
size: OpenCV scales a frame whose size differs from the size the video had when it was opened to
that size, so a camera switched from 640x360 to portrait 480x640 mid-stream would be read squashed.
Used by HTTP/RTSP streams (``stream.StreamSource``) and raw ``.mjpeg`` files (``video``). Written by
hand because OpenCV offers no per-frame size for its own decoding; the JPEG frame header is read
(``jpeg_size``) before anything is decoded, so a frame over ``MAX_SOURCE_PIXELS`` costs nothing.
Each JPEG is decoded by ``jpeg.decode`` (the pixels ``cv2.imdecode`` gives), which sees libjpeg's
warnings and errors: a damaged image (bit rot, a frame cut short that still ends in its end marker,
a progressive one whose later scan cannot be decoded) is a corrupt frame, not a picture half grey or
never filled in, and one of more than ``jpeg.MAX_SCANS`` scans is refused before decoding."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from perception import MAX_SOURCE_PIXELS
from perception.errors import SourceError
from perception.sources.base import CorruptFrame, frame_too_big
from perception.sources.container import codec_of
from perception.sources.jpeg import MAX_MARKERS, DamagedJpeg, decode, jpeg_size, over_limit

__all__ = ["MAX_MARKERS", "JpegPackets", "is_mjpeg", "jpeg_packets", "jpeg_size"]

log = logging.getLogger("perception.sources.stream")  # its lines are the stream's (and a file's) own


#: How a JPEG of MJPEG video is decoded here (``JpegPackets``): in colour, its EXIF orientation
#: ignored, as FFmpeg's MJPEG decoder ignores it.
JPEG_DECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def _later_starts(packet, limit: int = 8):
    """Where a JPEG image may begin after the first in ``packet`` (SOI and a marker: FF D8 FF), in
    order, at most ``limit``: searched past the first image's leading APPn/COM segments, so that an
    EXIF thumbnail (a JPEG inside APP1) of the first image is not taken for the next image; the
    next image's own thumbnail comes after its SOI, so the first that decodes is the next image."""
    data = np.ascontiguousarray(packet).reshape(-1).view(np.uint8).tobytes()
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF and (0xE0 <= data[at + 1] <= 0xEF or data[at + 1] == 0xFE):
        at += 2 + ((data[at + 2] << 8) | data[at + 3])
    for _ in range(limit):
        at = data.find(b"\xff\xd8\xff", max(at, 2))
        if at < 0:
            return
        yield at
        at += 3


def is_mjpeg(cap) -> bool:
    """Whether a capture's video is Motion JPEG (one JPEG image per packet)."""
    return codec_of(cap).upper() == "MJPG"


class JpegPackets:
    """An OpenCV capture of MJPEG video whose packets, each one JPEG image, are decoded here with
    ``jpeg.decode``: every frame at its own size, a damaged one a corrupt frame.

    Through OpenCV's own decoding a frame whose size differs from the size the video had when it
    was opened is scaled to that size (OpenCV 5.0 converts every frame to the size of the open):
    a camera that switches from 640x360 to portrait 480x640 mid-stream would be read squashed,
    with nothing said. Here the capture hands over its packets undecoded (``CAP_PROP_FORMAT`` -1),
    and each packet's size is read from its frame header first: one over ``MAX_SOURCE_PIXELS`` is a
    ``CorruptFrame`` before anything is decoded. A packet that does not decode is, with
    ``fail_grab`` (a stream), a failed grab, as FFmpeg's decoder makes it (the reconnector's
    counting and wording stay as they were); without it (a file), a ``CorruptFrame`` of
    ``grab_and_retrieve``, counted and skipped. A packet that decodes only with libjpeg's warning
    that its data is damaged (``jpeg.DamagedJpeg``) is a ``CorruptFrame`` either way: a stream's
    connection is up, so the reconnector counts it as a frame that did not decode. The first
    packet is checked against the size the capture states: a JPEG image of another size
    (interlaced MJPEG: a field of half the height a packet), or one of that size that this decoder cannot read, has the video opened again with
    ``reopen`` (a plain capture, read from its start) and decoded by OpenCV from then on.
    ``describe``: what log lines call the video.
    """

    def __init__(self, cap, *, reopen: Callable[[], Any], describe: str, fail_grab: bool = False,
                 said: set[str] | None = None) -> None:
        self._cap = cap
        self._reopen = reopen
        self._describe = describe
        self._fail_grab = fail_grab
        self.raw = True  #: packets decoded here (False: given back to OpenCV's decoding)
        self._checked = False
        self._image: np.ndarray | None = None  # the packet grabbed, decoded in ``grab``
        self._size: tuple[int, int] | None = None  # the size of the frame delivered last
        # what was said already: the source's own set, so that a --loop pass that reopens the file
        # does not say a size change again; a fresh one per connection otherwise
        self._said = said if said is not None else set()
        self._why_not = ""  # why the first packet was given back to OpenCV
        self._held: np.ndarray | None = None  # a decoded image the next grab gives (``_decode``)

    def grab(self) -> bool:
        if self._cap is None:
            return False
        if self._held is not None:  # the whole image of a packet that also held a cut one (``_decode``)
            self._image, self._held = self._held, None
            return True
        self._image = None
        if not self._cap.grab():
            return False
        if not self.raw:
            return True
        if not self._checked:
            self._checked = True
            if not self._first_packet_fits():
                return self._give_back()
            return self._image is not None or not self._fail_grab
        if not self._fail_grab:
            return True
        ok, packet = self._cap.retrieve()
        self._image = self._decode(packet) if ok and packet is not None else None
        return self._image is not None

    def _first_packet_fits(self) -> bool:
        """Whether the first packet is a JPEG image of the size the capture states (kept, decoded,
        for ``retrieve``), or not a JPEG at all (damage, counted as such); False for a JPEG image
        of another size, or of that size and undecodable here."""
        stated = (int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0))
        ok, packet = self._cap.retrieve()
        size = jpeg_size(packet) if ok and packet is not None else None
        if size is None:
            return True  # not a JPEG: damage, which ``retrieve`` (or ``grab``) then says
        if size != stated:
            self._why_not = f"a JPEG image of {size[0]}x{size[1]}"
            return False
        self._size = size
        self._image = self._decode(packet)  # a damaged first image: a corrupt frame (DamagedJpeg)
        self._why_not = "undecodable here"
        return self._image is not None

    def _give_back(self) -> bool:
        """Open the video again as a plain capture, decoded by OpenCV, and grab its first frame."""
        log.debug("%s: its first MJPEG packet is not a JPEG image of the %dx%d stated (%s): decoded by OpenCV, which "
                  "scales a frame whose size changes to that size", self._describe,
                  int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
                  self._why_not)
        self.raw, self._image = False, None
        self._cap.release()
        self._cap = None
        try:
            self._cap = self._reopen()
        except SourceError as exc:
            log.warning("%s: opening it again to decode it through OpenCV failed: %s", self._describe, exc)
            return False
        return self._cap.grab()

    def retrieve(self, image=None, flag: int = 0):
        if self._cap is None:
            return False, None
        if not self.raw:
            return self._cap.retrieve()
        decoded, self._image = self._image, None
        if decoded is None:
            ok, packet = self._cap.retrieve()
            if not ok or packet is None:
                return False, None
            decoded = self._decode(packet)
        if decoded is not None:
            self._note_size((decoded.shape[1], decoded.shape[0]))
        return True, decoded

    def _decode(self, packet) -> np.ndarray | None:
        try:
            image = self._decode_one(packet)
        except DamagedJpeg as exc:
            damaged: DamagedJpeg | None = exc
            image = None
        else:
            damaged = None
        if image is None and not self._fail_grab:
            # FFmpeg's MJPEG parser hands a JPEG cut short (no end marker) over together with the
            # whole one after it: that one is held for the next grab, and the cut one is counted
            # (one frame lost, not two; OpenCV's own decoding published the whole one).
            flat = np.ascontiguousarray(packet).reshape(-1)
            for start in _later_starts(flat):
                later = self._decode_one(flat[start:])
                if later is not None:
                    self._held = later
                    raise CorruptFrame("a JPEG image cut short (the demuxer handed it over with the next one, "
                                       "which is read)")
            if jpeg_size(packet) is None:
                raise CorruptFrame("not a JPEG image (no frame header)")
        if damaged is not None:
            raise damaged
        return image

    def _decode_one(self, packet) -> np.ndarray | None:
        size = jpeg_size(packet)
        if size is None:
            return None
        if frame_too_big(*size):
            raise CorruptFrame(f"a frame of {size[0]}x{size[1]}, more than {MAX_SOURCE_PIXELS} pixels (8192 x 8192)")
        over = over_limit(*size)  # a side over OpenCV's limit, which ``decode`` raises cv2.error for
        if over is not None:
            raise CorruptFrame(f"a frame of {size[0]}x{size[1]}, over OpenCV's size limits ({over})")
        return decode(packet, JPEG_DECODE_FLAGS)

    def _note_size(self, size: tuple[int, int]) -> None:
        if size != self._size and self._size is not None and "size" not in self._said:
            self._said.add("size")  # once: a camera that keeps switching is not said each time
            log.info("%s: frame size changed from %dx%d to %dx%d; each frame is read at its own size", self._describe,
                     *self._size, *size)
        self._size = size

    def get(self, prop: int) -> float:
        return self._cap.get(prop) if self._cap is not None else 0.0

    def set(self, prop: int, value: float) -> bool:
        return self._cap.set(prop, value) if self._cap is not None else False

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self._cap is not None and self._cap.isOpened()

    def release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def jpeg_packets(cap, *, reopen: Callable[[], Any], describe: str, fail_grab: bool = False,
                 said: set[str] | None = None):
    """``cap`` read through ``JpegPackets`` where its video is MJPEG and OpenCV hands its packets
    over undecoded; ``cap`` itself otherwise."""
    if not is_mjpeg(cap):
        return cap
    try:
        if not cap.set(cv2.CAP_PROP_FORMAT, -1):
            return cap
    except cv2.error:
        return cap
    return JpegPackets(cap, reopen=reopen, describe=describe, fail_grab=fail_grab, said=said)
