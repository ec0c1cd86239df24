"""JPEG images decoded with libjpeg's warnings seen, so that a damaged JPEG is a corrupt frame.

OpenCV's ``imdecode`` hands back whatever libjpeg made of a JPEG whose data is damaged but that
still ends in its end marker (bit rot mid-file, a frame cut short that a camera closed with FF D9):
the part it could not decode is grey or garbage, the only sign is libjpeg's own ``Corrupt JPEG
data: ...`` line on the process's stderr, and OpenCV offers no way to see it (catching fd 2 would
take every other thread's lines with it). Here a JPEG is decoded by libjpeg-turbo through
``simplejpeg`` (``decode``), whose ``strict`` mode raises on those warnings: such an image is a
``DamagedJpeg`` (a ``CorruptFrame``: skipped, counted and named), and no library line reaches the
console. The pixels are the same as ``cv2.imdecode``'s (both are libjpeg-turbo with its default,
accurate DCT and smooth upsampling; checked on baseline, progressive, greyscale, CMYK, 4:4:4,
4:2:2, 4:1:1 and restart-marker files). A JPEG this libjpeg-turbo does not decode (12-bit data,
odd sampling factors) and one over OpenCV's size limits go to ``cv2.imdecode`` as before.

Warnings that leave the picture whole are not damage: an unknown JFIF revision, an unknown Adobe
colour transform, a bad ICC profile, and the few fill bytes (all 00 or all FF) that some webcams
put before the end marker (``Corrupt JPEG data: 2 extraneous bytes before marker 0xd9``): such an
image is decoded as libjpeg decodes it, without its warning.
"""

from __future__ import annotations

import os
import re
import struct

import cv2
import numpy as np
import simplejpeg

from perception import MAX_SOURCE_PIXELS
from perception.sources.base import CorruptFrame

#: Frame-header markers (SOFn) that state a JPEG's size: C0-CF but DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: Marker segments read before a frame header at most: real encoders write a few dozen (APPn, DQT,
#: DHT ...); a packet of thousands (hostile, or damage) is refused rather than walked byte by byte.
MAX_MARKERS = 1000
#: OpenCV's default limit on one side of an image (CV_IO_MAX_IMAGE_WIDTH / _HEIGHT).
_DEFAULT_MAX_SIDE = 1 << 20
#: The EXIF Orientation tag (TIFF tag 274).
_ORIENTATION_TAG = 0x0112
#: The flags ``decode`` decodes itself: IMREAD_COLOR, with or without these (an 8-bit JPEG has no other depth).
_OWN_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION
_EXTRANEOUS = re.compile(r"Corrupt JPEG data: ([0-9]+) extraneous bytes before marker 0xd9")


class DamagedJpeg(CorruptFrame):
    """A JPEG image whose data libjpeg found damaged (its warning says how); what it would decode
    to is partly grey or garbage."""


def is_jpeg(data) -> bool:
    """Whether ``data`` (bytes or a uint8 array) starts as a JPEG image does (SOI and a marker)."""
    return len(data) >= 3 and bytes(data[:3]) == b"\xff\xd8\xff"


def jpeg_size(packet) -> tuple[int, int] | None:
    """(width, height) a JPEG's frame header (SOFn) states, read from its markers without decoding
    anything; None when ``packet`` (bytes or a uint8 array) is not a JPEG, has none before its
    scan data, or has more than ``MAX_MARKERS`` segments before it. A run of fill bytes is skipped
    in one numpy search (a packet padded with megabytes of 0xFF cost 0.1 s a MB walked in Python)."""
    arr = np.ascontiguousarray(packet).reshape(-1).view(np.uint8)
    data = memoryview(arr).cast("B")
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    at = 2
    for _ in range(MAX_MARKERS):
        if at + 4 > len(data) or data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill bytes before a marker: skip the whole run
            rest = arr[at + 1:] != 0xFF
            at += int(np.argmax(rest)) if rest.any() else len(rest) + 1  # to the last 0xFF of the run
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            at += 2
            continue
        if marker in _SOF_MARKERS:
            if at + 9 > len(data):
                return None
            return (data[at + 7] << 8) | data[at + 8], (data[at + 5] << 8) | data[at + 6]
        if marker in (0xD9, 0xDA):  # end of image, or its scan data: no frame header came
            return None
        at += 2 + ((data[at + 2] << 8) | data[at + 3])
    return None


def exif_orientation(data) -> int:
    """The EXIF Orientation (1..8) of the first ``Exif`` APP1 segment before a JPEG's image data,
    as OpenCV reads it to turn the image upright; 1 for none (or one that cannot be read)."""
    raw = memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8)).cast("B")
    at = 2
    try:
        for _ in range(MAX_MARKERS):
            if at + 4 > len(raw) or raw[at] != 0xFF:
                return 1
            marker = raw[at + 1]
            if marker == 0xFF:
                at += 1
                continue
            if marker == 0x01 or 0xD0 <= marker <= 0xD7:
                at += 2
                continue
            if marker in (0xD9, 0xDA):  # end of image, start of scan: no more header
                return 1
            length = (raw[at + 2] << 8) | raw[at + 3]
            if marker == 0xE1 and bytes(raw[at + 4: at + 10]) == b"Exif\x00\x00":
                return _tiff_orientation(bytes(raw[at + 10: at + 2 + length]))
            at += 2 + length
    except (struct.error, IndexError, ValueError):
        pass
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return 1
    (offset,) = struct.unpack_from(order + "I", tiff, 4)
    (count,) = struct.unpack_from(order + "H", tiff, offset)
    for at in range(offset + 2, min(offset + 2 + 12 * count, len(tiff) - 11), 12):
        tag, kind = struct.unpack_from(order + "HH", tiff, at)
        if tag == _ORIENTATION_TAG:
            value = struct.unpack_from(order + ("I" if kind == 4 else "H"), tiff, at + 8)[0]
            return value if 1 <= value <= 8 else 1
    return 1


def turned_upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """``image`` turned as OpenCV turns a decoded image for its EXIF ``orientation``."""
    if orientation in (5, 6, 7, 8):
        image = cv2.transpose(image)
    flip = {2: 1, 3: -1, 4: 0, 6: 1, 7: -1, 8: 0}.get(orientation)
    return image if flip is None else cv2.flip(image, flip)


def _within_opencv_limits(width: int, height: int) -> bool:
    """Whether OpenCV's own size limits (``OPENCV_IO_MAX_IMAGE_*``) let it decode this image."""
    env = os.environ.get
    try:
        return (width <= int(env("OPENCV_IO_MAX_IMAGE_WIDTH", _DEFAULT_MAX_SIDE))
                and height <= int(env("OPENCV_IO_MAX_IMAGE_HEIGHT", _DEFAULT_MAX_SIDE))
                and width * height <= int(env("OPENCV_IO_MAX_IMAGE_PIXELS", MAX_SOURCE_PIXELS)))
    except ValueError:
        return False  # a limit OpenCV reads its own way: it decides


def _is_damage(why: str, data) -> bool:
    """Whether libjpeg's warning ``why`` means the picture is damaged (not whole)."""
    if why.startswith("Premature end of JPEG file") or why.startswith("Inconsistent progression sequence"):
        return True
    if "Corrupt JPEG data" not in why or "ICC" in why:
        return False
    extraneous = _EXTRANEOUS.search(why)
    if extraneous:  # a webcam's fill bytes before the end marker, after a whole picture, are not damage
        count = int(extraneous.group(1))
        tail = np.ascontiguousarray(data).reshape(-1).view(np.uint8).tobytes()
        end = tail.rfind(b"\xff\xd9")
        fill = tail[max(0, end - count): end] if end >= 0 else b""
        if count and len(fill) == count and (not fill.strip(b"\x00") or not fill.strip(b"\xff")):
            return False
    return True


def decode(data, flags: int = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) -> np.ndarray | None:
    """The JPEG image ``data`` (bytes or a uint8 array) as ``cv2.imdecode(data, flags)`` decodes it,
    BGR, turned upright by its EXIF orientation unless ``flags`` has ``IMREAD_IGNORE_ORIENTATION``;
    None where it gives None (libjpeg cannot decode it at all). ``cv2.error`` as it raises (OpenCV's
    size limits: such an image is given to OpenCV, which checks them before decoding).

    Raises:
        DamagedJpeg: libjpeg decodes it only with a warning that its data is damaged.
    """
    size = jpeg_size(data)
    if size is None or not _within_opencv_limits(*size) or flags & ~_OWN_FLAGS != cv2.IMREAD_COLOR:
        return cv2.imdecode(np.asarray(data, dtype=np.uint8).reshape(-1), flags)
    buffer = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        image = simplejpeg.decode_jpeg(buffer, colorspace="BGR", strict=True)
    except ValueError as exc:
        why = str(exc).strip()
        try:  # a warning, or an error libjpeg-turbo cannot decode past (then OpenCV tries)
            image = simplejpeg.decode_jpeg(buffer, colorspace="BGR", strict=False)
        except ValueError:
            return cv2.imdecode(buffer, flags)  # 12-bit, odd sampling factors: OpenCV's own decoder
        if _is_damage(why, buffer):
            raise DamagedJpeg(f"a damaged JPEG image (libjpeg: {why[:200]})") from None
    if not flags & cv2.IMREAD_IGNORE_ORIENTATION:
        image = turned_upright(image, exif_orientation(buffer))
    return image
