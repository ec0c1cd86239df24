"""What an image file's header says, from a few small reads (chunks and segments skipped, not read):
the EXIF orientation OpenCV applies (JPEG, PNG, WebP, TIFF), and whether a WebP is lossy
(``read_header``, ``tiff_orientation``). Shared by the dataset reader (``base``) and the diagnosis
of a file that does not decode (``unreadable``)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, NamedTuple

#: What each EXIF orientation tag does to the stored pixels for display (OpenCV turns them so).
ORIENTATION_WORDS = {
    2: "mirrored left to right",
    3: "turned 180 degrees",
    4: "mirrored top to bottom",
    5: "mirrored left to right and turned 90 degrees anticlockwise",
    6: "turned 90 degrees clockwise",
    7: "mirrored left to right and turned 90 degrees clockwise",
    8: "turned 90 degrees anticlockwise",
}


class Header(NamedTuple):
    """What an image file's header says: the EXIF orientation OpenCV applies when it decodes it for
    display (1: none), whether it is a lossy WebP, and whether OpenCV applies that orientation
    however the file is read (a TIFF: its decoder turns it also for ``IMREAD_UNCHANGED``, which
    reads labels; JPEG, PNG and WebP are turned only when read for display)."""

    orientation: int = 1
    lossy: bool = False
    always_turned: bool = False


#: The EXIF Orientation tag (TIFF tag 274).
ORIENTATION_TAG = 0x0112
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: JPEG segments, PNG chunks or WebP chunks walked at most before giving up.
MAX_HEADER_ENTRIES = 100_000


def read_header(path: Path) -> Header:
    """The ``Header`` of image file ``path``, from a few small reads (chunks and segments skipped,
    not read): the Orientation of the EXIF data of a JPEG (APP1), a PNG (``eXIf``, before or after
    the image data) or a WebP (``EXIF``), and a TIFF's own tag (``tiff_orientation``), which OpenCV's
    TIFF decoder applies however the file is read (``always_turned``; decoded from its bytes, as
    ``cvpath.imread`` reads every image, tags 5-8 too). A header that cannot be read is a plain
    ``Header()``: decoding the file says what is wrong."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if head[:2] == b"\xff\xd8":
                return Header(_orientation_in(_jpeg_exif(f)))
            if head[:8] == PNG_SIGNATURE:
                return Header(_orientation_in(_png_exif(f)))
            if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                return _webp_header(f)
            if head[:4] in (b"II*\x00", b"MM\x00*"):
                return Header(tiff_orientation(path), always_turned=True)
    except (OSError, struct.error, ValueError, IndexError):  # IndexError: a JPEG cut in its fill bytes
        pass
    return Header()


def _jpeg_exif(f: BinaryIO) -> bytes:
    """The EXIF data (TIFF bytes) of the first ``Exif`` APP1 segment before a JPEG's image data."""
    f.seek(2)
    for _ in range(MAX_HEADER_ENTRIES):
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return b""
        code = marker[1]
        while code == 0xFF:  # fill bytes
            code = f.read(1)[0]
        if code in (0xD9, 0xDA):  # end of image, start of scan: no more header
            return b""
        if code == 0x01 or 0xD0 <= code <= 0xD7:  # markers without a length
            continue
        (length,) = struct.unpack(">H", f.read(2))
        if code == 0xE1:
            data = f.read(length - 2)
            if data.startswith(b"Exif\x00\x00"):
                return data[6:]
        else:
            f.seek(length - 2, 1)
    return b""


def _png_exif(f: BinaryIO) -> bytes:
    """The data of a PNG's ``eXIf`` chunk, wherever it is before ``IEND`` (OpenCV reads it after
    the image data too)."""
    f.seek(len(PNG_SIGNATURE))
    for _ in range(MAX_HEADER_ENTRIES):
        length, kind = struct.unpack(">I4s", f.read(8))
        if kind == b"eXIf":
            return f.read(length).removeprefix(b"Exif\x00\x00")
        if kind == b"IEND":
            return b""
        f.seek(length + 4, 1)  # the data and its CRC
    return b""


def _webp_header(f: BinaryIO) -> Header:
    """A WebP's ``EXIF`` chunk's orientation, and whether its image is lossy (a ``VP8 `` chunk;
    lossless is ``VP8L``)."""
    exif, lossy = b"", False
    for _ in range(MAX_HEADER_ENTRIES):
        head = f.read(8)
        if len(head) < 8:
            break
        kind, size = struct.unpack("<4sI", head)
        if kind == b"EXIF":
            exif = f.read(size).removeprefix(b"Exif\x00\x00")
            f.seek(size & 1, 1)
        else:
            lossy = lossy or kind == b"VP8 "
            f.seek(size + (size & 1), 1)  # chunks are padded to an even size
    return Header(_orientation_in(exif), lossy)


def _orientation_in(tiff: bytes) -> int:
    """The Orientation (1..8) in the first IFD of EXIF data ``tiff`` (TIFF bytes); 1 for none."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return 1
    (offset,) = struct.unpack_from(order + "I", tiff, 4)
    return _ifd_orientation(lambda at, size: tiff[at: at + size], order, offset)


def _ifd_orientation(read: Callable[[int, int], bytes], order: str, offset: int) -> int:
    """The Orientation tag of the IFD at ``offset``, read by ``read(offset, size)``; 1 for none."""
    (count,) = struct.unpack(order + "H", read(offset, 2))
    entries = read(offset + 2, 12 * min(count, 4096))
    for at in range(0, len(entries) - 11, 12):
        tag, kind = struct.unpack_from(order + "HH", entries, at)
        if tag == ORIENTATION_TAG:
            value = struct.unpack_from(order + ("I" if kind == 4 else "H"), entries, at + 8)[0]
            return value if value in ORIENTATION_WORDS else 1
    return 1


def tiff_orientation(path: Path) -> int:
    """The Orientation tag of a TIFF file's first image (1 for none, and for other files)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(head[:4])
            if order is None:
                return 1

            def read(at: int, size: int) -> bytes:
                f.seek(at)
                return f.read(size)

            return _ifd_orientation(read, order, struct.unpack(order + "I", head[4:8])[0])
    except (OSError, struct.error, ValueError):
        return 1
