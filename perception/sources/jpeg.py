"""JPEG images decoded with libjpeg's warnings seen, so that a damaged JPEG is a corrupt frame.

OpenCV's ``imdecode`` hands back whatever libjpeg made of a JPEG whose data is damaged but that
still ends in its end marker (bit rot mid-file, a frame cut short that a camera closed with FF D9):
the part it could not decode is grey or garbage, the only sign is libjpeg's own ``Corrupt JPEG
data: ...`` line on the process's stderr, and OpenCV offers no way to see it (catching fd 2 would
take every other thread's lines with it). Here a JPEG is decoded by libjpeg-turbo through
``simplejpeg`` (``decode``), whose ``strict`` mode raises on any warning: such an image is a
``DamagedJpeg`` (a ``CorruptFrame``: skipped, counted and named), and no library line reaches the
console. The pixels are the same as ``cv2.imdecode``'s (both are libjpeg-turbo with its default,
accurate DCT and smooth upsampling; checked on baseline, progressive, greyscale, CMYK, 4:4:4,
4:2:2, 4:1:1 and restart-marker files), and so is the EXIF orientation (``exif_orientation`` asks
OpenCV itself). A JPEG this libjpeg-turbo does not decode (12-bit data, odd sampling factors,
lossless) goes to ``cv2.imdecode`` as before, and one over OpenCV's size limits is refused from
its header with OpenCV's words.

Only the warnings known to leave the picture whole are not damage: an unknown JFIF revision, an
unknown Adobe colour transform and a bad ICC profile (header fields libjpeg reads and then decodes
as if they were right: their bytes are set to what it assumes, in a copy, and that copy decoded
strictly, so that damage after them is still seen), and the few fill bytes (all 00 or all FF) that
some webcams put before the end marker (``Corrupt JPEG data: 2 extraneous bytes before marker
0xd9``, libjpeg's first warning, after a whole picture). Any other warning, and any error (a
progressive JPEG whose later scan libjpeg cannot decode gives a picture never filled in), is
damage: nothing decoded from such data is returned, and it is decoded once.

A progressive JPEG costs a pass over the whole picture for each scan it holds, and nothing in the
format bounds the scans: a file of 100 KB repeating one scan 300 times took 3 s to decode at
4096x4096 (80 s at 8192x8192 with 1000). Its scans are counted from its bytes first
(``scan_count``), and one with more than ``MAX_SCANS`` is refused before decoding.
"""

from __future__ import annotations

import functools
import os
import re

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
#: The most scans (SOS markers) a JPEG may hold to be decoded. Each scan of a progressive JPEG is
#: a pass over the whole picture, so its decoding costs scans x pixels, and the format sets no
#: bound. libjpeg's own progressive script writes 10 scans for colour (18 for CMYK), and encoders
#: that search for better scripts (mozjpeg, jpegtran -optimize) stay within a few dozen; 100 leaves
#: a wide margin and bounds a frame of 8192 x 8192 to about 4 s. (libjpeg-turbo's TurboJPEG API
#: refuses more than 500 when asked to, TJFLAG_LIMITSCANS / TJPARAM_SCANLIMIT, and djpeg has
#: ``-maxscans N``; neither is on by default, nor reachable through simplejpeg or OpenCV.)
MAX_SCANS = 100
#: OpenCV's default limit on one side of an image (CV_IO_MAX_IMAGE_WIDTH / _HEIGHT).
_DEFAULT_MAX_SIDE = 1 << 20
#: The flags ``decode`` decodes itself: IMREAD_COLOR, with or without these (an 8-bit JPEG has no other depth).
_OWN_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION
_EXTRANEOUS = re.compile(r"Corrupt JPEG data: ([0-9]+) extraneous bytes before marker 0xd9")
#: libjpeg's warnings about header fields that it then decodes as if they were right (the picture
#: is whole): ``_quieted`` sets those fields to what libjpeg assumes.
_HEADER_WARNINGS = ("Warning: unknown JFIF revision number", "Unknown Adobe color transform code",
                    "Corrupt JPEG data: bad ICC marker")
#: What says this libjpeg-turbo (through TurboJPEG) does not decode such a JPEG at all, as opposed
#: to damage: checked before any scan is read; such a JPEG goes to OpenCV's own decoder.
_NOT_HERE = ("Unsupported JPEG data precision", "Unsupported color conversion request", "Unsupported JPEG process",
             "Sorry, arithmetic coding is not implemented", "Requested features are incompatible")


class DamagedJpeg(CorruptFrame):
    """A JPEG image not decoded: libjpeg found its data damaged (its message says how), or it holds
    more scans than ``MAX_SCANS``; what it would decode to is partly grey, garbage, or too costly."""


def is_jpeg(data) -> bool:
    """Whether ``data`` (bytes or a uint8 array) starts as a JPEG image does (SOI and a marker)."""
    return len(data) >= 3 and bytes(data[:3]) == b"\xff\xd8\xff"


def _flat(data) -> np.ndarray:
    return np.ascontiguousarray(data).reshape(-1).view(np.uint8)


def _header_segments(data):
    """(marker, offset) of each marker segment of a JPEG before its first scan (SOS) or end, in
    order, at most ``MAX_MARKERS``; offset is where its FF is. A run of fill bytes is skipped in one
    numpy search (a packet padded with megabytes of 0xFF cost 0.1 s a MB walked in Python)."""
    arr = _flat(data)
    raw = memoryview(arr).cast("B")
    if len(raw) < 4 or raw[0] != 0xFF or raw[1] != 0xD8:
        return
    at = 2
    for _ in range(MAX_MARKERS):
        if at + 4 > len(raw) or raw[at] != 0xFF:
            return
        marker = raw[at + 1]
        if marker == 0xFF:  # fill bytes before a marker: skip the whole run
            rest = arr[at + 1:] != 0xFF
            at += int(np.argmax(rest)) if rest.any() else len(rest) + 1  # to the last 0xFF of the run
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            at += 2
            continue
        yield marker, at
        if marker in (0xD9, 0xDA):  # end of image, or its scan data
            return
        at += 2 + ((raw[at + 2] << 8) | raw[at + 3])


def jpeg_size(packet) -> tuple[int, int] | None:
    """(width, height) a JPEG's frame header (SOFn) states, read from its markers without decoding
    anything; None when ``packet`` (bytes or a uint8 array) is not a JPEG, has none before its
    scan data, or has more than ``MAX_MARKERS`` segments before it."""
    raw = _flat(packet)
    for marker, at in _header_segments(raw):
        if marker in _SOF_MARKERS:
            if at + 9 > len(raw):
                return None
            return (int(raw[at + 7]) << 8) | int(raw[at + 8]), (int(raw[at + 5]) << 8) | int(raw[at + 6])
    return None


def scan_count(data) -> int:
    """How many scans libjpeg would read from the JPEG ``data``, at most (a count over
    ``MAX_SCANS`` may be any count over it). Every scan starts with an SOS marker, FF DA, which
    entropy-coded data never holds (an FF in it is followed by 00 or a restart marker): the FF DA
    pairs of the buffer bound the scans, in one numpy search. Only where they are more than
    ``MAX_SCANS`` (a file whose metadata or trailer holds many: embedded thumbnails, previews after
    the end marker) are the markers walked as libjpeg walks them, to its end marker."""
    arr = _flat(data)
    if arr.size < 2:
        return 0
    ff = np.flatnonzero(arr[:-1] == 0xFF)
    follow = arr[ff + 1]
    pairs = int(np.count_nonzero(follow == 0xDA))
    if pairs <= MAX_SCANS:
        return pairs
    # where libjpeg finds a marker: FF then a code that is not 00 (stuffing), FF (fill) or RSTn
    starts = ff[(follow != 0x00) & (follow != 0xFF) & ((follow < 0xD0) | (follow > 0xD7))]
    scans, at = 0, 2
    for _ in range(4 * MAX_MARKERS):
        k = int(np.searchsorted(starts, at))
        if k == len(starts):
            return scans
        at = int(starts[k])
        marker = int(arr[at + 1])
        if marker in (0xD8, 0xD9):  # end of image (a second SOI is an error libjpeg stops at)
            return scans
        if marker == 0x01:
            at += 2
            continue
        scans += marker == 0xDA
        if scans > MAX_SCANS or at + 4 > arr.size:
            return scans
        at += 2 + max(2, (int(arr[at + 2]) << 8) | int(arr[at + 3]))
    return MAX_SCANS + 1  # thousands of markers between scans: no real encoder writes that


@functools.cache
def _probe() -> tuple[bytes, dict[bytes, int]]:
    """A 16x16 grey JPEG of four distinct quarters, and its pixels as OpenCV turns them for each
    EXIF orientation: every orientation gives a different picture."""
    quarters = np.kron(np.array([[0, 80], [160, 240]], np.uint8), np.ones((8, 8), np.uint8))
    probe = cv2.imencode(".jpg", quarters, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()
    plain = cv2.imdecode(np.frombuffer(probe, np.uint8), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
    return probe, {turned_upright(plain, o).tobytes(): o for o in range(8, 0, -1)}


def exif_orientation(data) -> int:
    """The EXIF orientation (1..8) OpenCV reads from a JPEG to turn it upright; 1 for none.
    OpenCV's own reading decides (which APP1 segment, byte order, value type, damaged blocks): the
    JPEG's APP1 segments before its scan data are put, in order, into a 16x16 stand-in that OpenCV
    decodes, and how it turned the stand-in is the orientation. A JPEG without APP1 costs nothing."""
    raw = _flat(data)
    app1 = []
    for marker, at in _header_segments(raw):
        if marker == 0xE1:
            app1.append(raw[at: at + 2 + ((int(raw[at + 2]) << 8) | int(raw[at + 3]))].tobytes())
    if not app1:
        return 1
    probe, turns = _probe()
    turned = cv2.imdecode(np.frombuffer(probe[:2] + b"".join(app1) + probe[2:], np.uint8), cv2.IMREAD_GRAYSCALE)
    return 1 if turned is None else turns.get(turned.tobytes(), 1)


def turned_upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """``image`` turned as OpenCV turns a decoded image for its EXIF ``orientation``."""
    if orientation in (5, 6, 7, 8):
        image = cv2.transpose(image)
    flip = {2: 1, 3: -1, 4: 0, 6: 1, 7: -1, 8: 0}.get(orientation)
    return image if flip is None else cv2.flip(image, flip)


def over_limit(width: int, height: int) -> str | None:
    """Which of OpenCV's own size limits (``OPENCV_IO_MAX_IMAGE_*``) an image of this size is over,
    in OpenCV's words (``CV_IO_MAX_IMAGE_PIXELS`` ...); None within them, or where a limit is set
    in a way OpenCV reads its own way (then OpenCV decides)."""
    env = os.environ.get
    try:
        max_width = int(env("OPENCV_IO_MAX_IMAGE_WIDTH", _DEFAULT_MAX_SIDE))
        max_height = int(env("OPENCV_IO_MAX_IMAGE_HEIGHT", _DEFAULT_MAX_SIDE))
        max_pixels = int(env("OPENCV_IO_MAX_IMAGE_PIXELS", MAX_SOURCE_PIXELS))
    except ValueError:
        return None
    if width > max_width:
        return f"width {width} > CV_IO_MAX_IMAGE_WIDTH"
    if height > max_height:
        return f"height {height} > CV_IO_MAX_IMAGE_HEIGHT"
    if width * height > max_pixels:
        return f"{width} x {height} pixels > CV_IO_MAX_IMAGE_PIXELS"
    return None


#: Fill bytes libjpeg may have read into its bit buffer before it saw the picture was whole: a
#: webcam's run of fill is at most this many bytes longer than the "extraneous bytes" it names.
_FILL_READ_AHEAD = 8


def _fill_only(why: str, data: np.ndarray) -> bool:
    """Whether libjpeg's warning ``why`` is about a webcam's fill bytes (all 00 or all FF) before
    the end marker, after a whole picture (its first warning: no damage came before). The whole run
    of that byte before the end marker must be about the bytes libjpeg calls extraneous: zeros that
    start inside the picture's data (a zeroed disk block, a camera buffer not filled, then FF D9)
    decode as data until the picture is done, grey, and only the rest are extraneous."""
    extraneous = _EXTRANEOUS.search(why)
    if not extraneous:
        return False
    count = int(extraneous.group(1))
    tail = data.tobytes()
    end = tail.rfind(b"\xff\xd9")
    fill = tail[max(0, end - count): end] if end >= 0 else b""
    if not count or len(fill) != count or (fill.strip(b"\x00") and fill.strip(b"\xff")):
        return False
    run = end - len(tail[:end].rstrip(fill[:1]))  # the whole run of the fill byte before FF D9
    return run <= count + _FILL_READ_AHEAD


def _quieted(data: np.ndarray) -> np.ndarray:
    """A copy of the JPEG ``data`` whose header fields libjpeg warns about and then decodes as if
    right are set to what it assumes: a JFIF major version other than 1 to 1, an Adobe colour
    transform it does not know to the one it assumes (YCbCr for 3 components, YCCK for 4), an ICC
    profile segment renamed so that it is not read (libjpeg never applies it). The pixels are the
    ones the JPEG decodes to, and any other warning still shows."""
    out = data.copy()
    segments = list(_header_segments(out))
    components = next((int(out[at + 9]) for marker, at in segments if marker in _SOF_MARKERS and at + 10 <= out.size), 3)
    for marker, at in segments:
        length = (int(out[at + 2]) << 8) | int(out[at + 3])  # libjpeg reads these fields only when whole
        body = out[at + 4: at + 2 + min(length, 16)].tobytes()
        if marker == 0xE0 and body.startswith(b"JFIF\x00") and length >= 16:
            out[at + 9] = 1
        elif marker == 0xEE and body.startswith(b"Adobe") and length >= 14:
            if body[11] not in (0, 1 if components == 3 else 2):
                out[at + 15] = 1 if components == 3 else 2
        elif marker == 0xE2 and body.startswith(b"ICC_PROFILE\x00") and length >= 16:
            out[at + 4] = ord("X")
    return out


def _strict(buffer: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The strict decode of ``buffer``, or None and libjpeg's message: the error it stopped at, or
    else its first warning (libjpeg-turbo words only the first, and an error always after it)."""
    try:
        return simplejpeg.decode_jpeg(buffer, colorspace="BGR", strict=True), ""
    except ValueError as exc:
        return None, str(exc).strip()


def decode(data, flags: int = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) -> np.ndarray | None:
    """The JPEG image ``data`` (bytes or a uint8 array) as ``cv2.imdecode(data, flags)`` decodes it,
    BGR, turned upright by its EXIF orientation unless ``flags`` has ``IMREAD_IGNORE_ORIENTATION``;
    None where it gives None (this libjpeg-turbo and OpenCV cannot decode it at all).

    Raises:
        DamagedJpeg: libjpeg decodes it only with a warning or error that its data is damaged
            (nothing decoded from it is returned), or it holds more than ``MAX_SCANS`` scans.
        cv2.error: as OpenCV raises it for its size limits (``OPENCV_IO_MAX_IMAGE_*``), from the
            size its header states, before decoding (OpenCV itself says nothing when the rest of
            that header is cut or damaged: such a file was "cannot be decoded").
    """
    buffer = _flat(data)
    if scan_count(buffer) > MAX_SCANS:
        raise DamagedJpeg(f"a JPEG image of more than {MAX_SCANS} scans, each a pass over the whole picture (real "
                          "encoders write a few dozen at most: a hostile or damaged file), not decoded")
    size = jpeg_size(buffer)
    over = over_limit(*size) if size is not None else None
    if over is not None:
        raise cv2.error(f"a JPEG image whose header states {size[0]} x {size[1]}: {over}")
    if size is None or flags & ~_OWN_FLAGS != cv2.IMREAD_COLOR:
        return cv2.imdecode(buffer, flags)
    image, why = _strict(buffer)
    if image is None and why.startswith(_HEADER_WARNINGS):  # warned at the header: nothing decoded yet
        buffer = _quieted(buffer)
        image, why = _strict(buffer)
    if image is None:
        if why.startswith(_NOT_HERE) or "(): " in why[:40]:  # TurboJPEG's own words: not decoded here at all
            return cv2.imdecode(_flat(data), flags)
        try:
            if not _fill_only(why, buffer):
                raise ValueError(why)
            image = simplejpeg.decode_jpeg(buffer, colorspace="BGR", strict=False)  # a whole picture, once more
        except ValueError:
            raise DamagedJpeg(f"a damaged JPEG image (libjpeg: {why[:200]})") from None
    if not flags & cv2.IMREAD_IGNORE_ORIENTATION:
        image = turned_upright(image, exif_orientation(buffer))
    return image
