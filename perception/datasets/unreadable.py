"""Why an image or label file of a dataset did not decode, in an error line's words with the fix
(``cannot_read``): a TIFF OpenCV does not turn, a file gone, a link to nothing or a link loop, a
folder, a file this user may not read, empty, cut short, not an image at all (an HTML page saved as
.jpg), or an image OpenCV cannot decode; and a PNG cut short refused before OpenCV decodes it
(``refuse_cut_png``). ``named`` writes a file's name for any dataset error line."""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

from perception import cvpath
from perception.datasets.headers import MAX_HEADER_ENTRIES, PNG_SIGNATURE, tiff_orientation
from perception.errors import DataError, unreadable
from perception.sources.images import _not_a_regular_file


def named(path: str | os.PathLike) -> str:
    """A file's name for an error line: as it is when every character is printable (the usual
    case, as typed), else as ``cvpath.display`` quotes it (a newline escaped, so that a name cannot
    fake a line; a byte that is not UTF-8 written ``\\xe9``)."""
    text = os.fspath(path)
    return text if text.isprintable() else cvpath.display(text)


def _pair_fix(what: str) -> str:
    """The fix for a dataset file that cannot be read: put a good one there, or drop its pair."""
    other = "label" if what == "image" else "image"
    return f"replace it with a good copy, or remove it and its {other}"


#: The start of each image type OpenCV reads, and what it is called in an error line. By hand: the
#: file is one that did not decode, often cut short, and Pillow's identification parses more than the
#: magic at open (a WebP cut in half reads as no image at all to it).
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"BM", "BMP"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"RIFF", "WebP"), (b"#?", "Radiance HDR"),
    (b"\x76\x2f\x31\x01", "OpenEXR"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x59\xa6\x6a\x95", "Sun raster"), (b"GIF8", "GIF"),
)
_PNM = re.compile(rb"P[1-7Ff]\s")
#: The bytes read from a file's end to see whether it is whole (a JPEG may carry a trailer after its end).
_TAIL_BYTES = 4096
#: A PNG's last chunk, IEND (no data, its CRC): what a whole PNG ends with.
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def cannot_read(what: str, path: Path) -> str:
    """Why ``what`` (image, label) ``path`` did not decode, in an error line's words, with the fix:
    OpenCV 5.0 does not decode a TIFF whose EXIF orientation turns it by 90 degrees (as the node,
    which skips it); else the file is gone, a link to nothing or a link loop, a folder, not
    readable by this user, empty, cut short, not an image at all (an HTML page saved as .jpg), or
    an image that OpenCV cannot decode."""
    turn = tiff_orientation(path)
    if turn in (5, 6, 7, 8):
        return (f"cannot read {what} {named(path)}: OpenCV does not decode a TIFF whose EXIF orientation tag ({turn}) "
                f"turns it; turn it for good (mogrify -auto-orient {named(path)}) or save it as PNG")
    return f"cannot read {what} {named(path)}: it {_why_not_decoded(path, what)}"


def _why_not_decoded(path: Path, what: str) -> str:
    """What follows "it" in ``cannot_read``'s line."""
    fix = _pair_fix(what)
    if not os.path.lexists(path):
        return "is gone (deleted or moved since the dataset was opened); put it back, or remove its pair"
    why = _not_a_regular_file(path)  # the node's words: a link to nothing, a link loop, a folder, a pipe
    if why is not None:
        other = "label" if what == "image" else "image"
        return f"{why}; {f'point the link at the {what} file' if path.is_symlink() else 'put the file there'}, " \
               f"or remove it and its {other}"
    denied = unreadable(path)
    if denied is not None:
        return denied
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc}); {fix}"
    if size == 0:
        return f"is empty (0 bytes); {fix}"
    kind = _image_type(head)
    if kind is None:
        return f"{_content_words(head)}; {fix}"
    cut = _png_cut_short(path) if kind == "PNG" else (
        "no end-of-image marker" if kind == "JPEG" and b"\xff\xd9" not in tail else None)
    if cut is not None:
        return f"is a {kind} file cut short ({size} bytes, {cut}), as a copy or download that did not finish leaves it; {fix}"
    return f"is a {kind} file that OpenCV cannot decode (damaged, or a kind of {kind} it does not read); {fix}"


def _image_type(head: bytes) -> str | None:
    """The image type a file's first bytes ``head`` say it is (``_SIGNATURES``), or None."""
    for signature, kind in _SIGNATURES:
        if head.startswith(signature) and (kind != "WebP" or head[8:12] == b"WEBP"):
            return kind
    return "PNM" if _PNM.match(head) else None


def _content_words(head: bytes) -> str:
    """What follows "it" for a file that is not an image, from its first bytes: an HTML page (a web
    page saved under an image's name), other text, or binary data, quoting its start."""
    start = head.lstrip()
    shown_start = repr(start[:24])[1:]
    if start[:1] == b"<" and (b"html" in start.lower() or start[:5].lower() == b"<!doc"):
        return (f"is an HTML page, not an image (it starts with {shown_start}), as a download that saved the web "
                "page instead leaves it")
    if all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
        return f"is text, not an image (it starts with {shown_start})"
    return f"is not an image of a type that OpenCV reads (it starts with {shown_start})"


def _png_cut_short(path: Path) -> str | None:
    """How PNG ``path`` is cut short (the chunk that runs past its end, or no IEND), or None when it
    is whole: its last bytes are IEND (one read), else its chunks are walked (skipped, not read)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size >= len(PNG_SIGNATURE) + len(_PNG_IEND):
                f.seek(size - len(_PNG_IEND))
                if f.read() == _PNG_IEND:
                    return None
            offset = len(PNG_SIGNATURE)
            for _ in range(MAX_HEADER_ENTRIES):
                f.seek(offset)
                head = f.read(8)
                if len(head) < 8:
                    return "no IEND chunk"
                length, kind = struct.unpack(">I4s", head)
                offset += 12 + length
                if offset > size:
                    return f"its {kind.decode('latin-1')!r} chunk runs past the end"
                if kind == b"IEND":
                    return None
    except (OSError, struct.error):
        return None
    return None


def refuse_cut_png(path: Path, what: str) -> None:
    """DataError for a PNG that is cut short, before OpenCV decodes it: libpng would print its own
    "libpng error: PNG input buffer is incomplete" on stderr beside the error line. One small read
    for a whole PNG (its last bytes), none for other files but their first 8 bytes."""
    try:
        with open(path, "rb") as f:
            if f.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
                return
    except OSError:
        return  # said by the decode that follows
    if _png_cut_short(path) is not None:
        raise DataError(cannot_read(what, path))
