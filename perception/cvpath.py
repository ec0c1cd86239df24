"""File names handed to OpenCV: the one way every module reads or writes an image or video file
through it, whatever bytes the file's name holds.

OpenCV's Python binding turns a ``str`` argument into UTF-8 text, and a name that is not valid
UTF-8 (a byte such as ``\\xff`` or ``\\xfe`` in it, as a Latin-1 name on a FAT USB stick is; Python
holds it as a lone surrogate, ``os.fsdecode``) makes it crash the process (SIGSEGV, exit 139, not a
word), whichever function is given it: ``imread``, ``imwrite``, ``haveImageReader``,
``VideoCapture``, ``VideoWriter``. So:

- images are read without handing OpenCV the name (``imread``: the file's bytes, ``cv2.imdecode``
  with the same flags, which decodes exactly as ``cv2.imread`` does: EXIF orientation, 16 bits, the
  pixel limit), and written the same way (``imwrite``: ``cv2.imencode``, then a plain write whose
  failure says why, a full disk among others);
- a video file whose name OpenCV cannot take is opened through an alias (``opencv_name``): a
  symbolic link with a plain ASCII name, in a private temporary folder, to the file, removed again
  as soon as OpenCV has opened it. Where no such link can be made the caller says so in one line,
  naming the file (``display``) and the fix (rename it).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from perception import MAX_SOURCE_PIXELS

#: The largest image file ``imread`` reads into memory to decode (twice the largest frame the node
#: decodes, 8192 x 8192 at 3 bytes: more than any one image within that limit takes, even an
#: uncompressed 4-channel TIFF). A larger file (a multi-page TIFF, a file with a huge trailer) is
#: decoded by OpenCV from the file itself, as ``cv2.imread`` does, so it costs no more memory.
WHOLE_FILE_MAX = 2 * 3 * MAX_SOURCE_PIXELS
#: A suffix kept on an alias (OpenCV picks a video writer's container by it, FFmpeg uses it as a hint).
_PLAIN_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,16}")


def opencv_can_take(path: str | os.PathLike) -> bool:
    """Whether OpenCV may be handed the name ``path`` as it is: it is valid UTF-8 (no lone
    surrogate, which is what a name's undecodable bytes become in Python)."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def display(path: str | os.PathLike) -> str:
    """``path`` for an error line, quoted: each byte of its name that is not UTF-8 written ``\\xff``
    (as Python shows such bytes), any other character that is not printable escaped as ``repr``
    escapes it (a newline in a name cannot fake a line)."""
    out = []
    for c in os.fspath(path):
        if "\udc80" <= c <= "\udcff":  # an undecodable byte (os.fsdecode's surrogateescape)
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif c.isprintable() and c not in "\\'":
            out.append(c)
        else:
            out.append(repr(c)[1:-1] if c != "'" else "\\'")
    return "'" + "".join(out) + "'"


@contextlib.contextmanager
def opencv_name(path: str | os.PathLike) -> Iterator[str]:
    """A name of the file ``path`` that OpenCV can be handed: the name itself where it can take it
    (``opencv_can_take``), else a symbolic link to it with a plain name (``f`` and the file's
    suffix where that is plain ASCII) in a private temporary folder, removed with its folder when
    the block ends: open the file inside the block (OpenCV keeps its own descriptor, so a capture
    or writer goes on working once the link is gone).

    Raises:
        OSError: no link can be made (no usable temporary folder, a full one, or the current folder
            of a relative ``path`` is gone).
    """
    name = os.fspath(path)
    if opencv_can_take(name):
        yield name
        return
    target = os.path.abspath(name)
    suffix = os.path.splitext(target)[1]
    folder = tempfile.mkdtemp(prefix="perception-cvpath-")
    try:
        link = os.path.join(folder, "f" + (suffix if _PLAIN_SUFFIX.fullmatch(suffix) else ""))
        os.symlink(target, link)
        yield link
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def unnamable(path: str | os.PathLike, what: str, exc: OSError) -> str:
    """The error line's text for a ``path`` that OpenCV cannot be handed and no alias of which
    could be made (``exc``): the file, why, and the fix."""
    why = (exc.strerror or str(exc) or type(exc).__name__).lower()
    return (f"{what} {display(path)}: its name is not valid UTF-8, which OpenCV cannot take, and no temporary "
            f"link to it could be made ({why}); rename it with a UTF-8 name (convmv -f latin1 -t utf8)")


def imread(path: str | os.PathLike, flags: int = cv2.IMREAD_COLOR,
           jpeg: Callable[[np.ndarray, int], np.ndarray | None] | None = None) -> np.ndarray | None:
    """``cv2.imread(path, flags)`` for any name: the same image (the same decoder and flags, given
    the file's bytes: ``cv2.imdecode``, as fast), or None where ``cv2.imread`` gives None (no such
    file, not readable, not a regular file, empty, not an image it decodes). ``cv2.error`` as
    ``cv2.imread`` raises it (OpenCV's size limits, checked before decoding). Where OpenCV 5.0's
    ``imread`` itself fails on a file its decoder reads (a TIFF whose EXIF orientation turns it by
    90 degrees, a PFM read as grey), this gives the image. ``jpeg``: what decodes a file whose
    bytes are a JPEG image instead of ``cv2.imdecode``, given them and ``flags``
    (``perception.sources.jpeg.decode``, which raises for damaged data)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # a folder, FIFO or device: never a blocking read
            return None
        if st.st_size > WHOLE_FILE_MAX:
            return _imread_by_name(path, flags)
        data = np.empty(st.st_size, np.uint8)
        got, view = 0, memoryview(data)
        while got < st.st_size:  # a file cut shorter meanwhile: what is there
            n = os.readv(fd, [view[got:]])
            if not n:
                break
            got += n
    except OSError:
        return None
    finally:
        os.close(fd)
    if got == 0:  # cv2.imdecode asserts on an empty buffer; cv2.imread gives None
        return None
    if jpeg is not None and got >= 3 and data[0] == 0xFF and data[1] == 0xD8 and data[2] == 0xFF:
        return jpeg(data[:got], flags)
    return cv2.imdecode(data[:got], flags)


def _imread_by_name(path: str | os.PathLike, flags: int) -> np.ndarray | None:
    try:
        with opencv_name(path) as name:
            return cv2.imread(name, flags)
    except OSError:
        return None


def imwrite(path: str | os.PathLike, image: np.ndarray, params: list[int] | tuple[int, ...] = ()) -> bool:
    """``cv2.imwrite(path, image, params)`` for any name: encoded by the suffix of ``path``, then
    written (replacing the file). False where OpenCV has no encoder for that suffix or cannot
    encode ``image`` as it; ``cv2.error`` as ``cv2.imwrite`` raises it.

    Raises:
        OSError: the file cannot be written (its errno says why: a full disk, no permission); a file
            cut short by a failed write is removed.
    """
    suffix = Path(os.fspath(path)).suffix
    if not suffix or not opencv_can_take(suffix):
        return False
    ok, encoded = cv2.imencode(suffix, image, list(params))
    if not ok:
        return False
    regular = False
    try:
        with open(path, "wb") as f:  # closed inside: a write error that shows only at close (NFS) is caught too
            regular = stat.S_ISREG(os.fstat(f.fileno()).st_mode)
            f.write(encoded.data)
    except OSError:
        if regular:  # a file cut short is not left as if it were an image (a device, /dev/full, is left alone)
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise
    return True


def have_image_reader(path: str | os.PathLike) -> bool:
    """``cv2.haveImageReader(path)`` (whether OpenCV recognises the file as an image by its first
    bytes) for any name; False when no alias of a name OpenCV cannot take could be made."""
    try:
        with opencv_name(path) as name:
            return cv2.haveImageReader(name)
    except OSError:
        return False


def have_image_writer(path: str | os.PathLike) -> bool:
    """``cv2.haveImageWriter(path)`` (whether OpenCV can encode an image by the suffix of ``path``)
    for any name: a suffix that is not valid UTF-8 has no encoder."""
    suffix = Path(os.fspath(path)).suffix
    return bool(suffix) and opencv_can_take(suffix) and cv2.haveImageWriter("f" + suffix)


def video_capture(path: str | os.PathLike, *args) -> cv2.VideoCapture:
    """``cv2.VideoCapture(path, *args)`` for any name (``opencv_name``).

    Raises:
        OSError: the name is one OpenCV cannot take and no alias of it could be made (``unnamable``).
    """
    with opencv_name(path) as name:
        return cv2.VideoCapture(name, *args)


def video_writer(path: str | os.PathLike, *args) -> cv2.VideoWriter:
    """``cv2.VideoWriter(path, *args)`` for any name (``opencv_name``); the container is chosen by
    the suffix of ``path``, as for the name itself.

    Raises:
        OSError: the name is one OpenCV cannot take and no alias of it could be made (``unnamable``).
    """
    with opencv_name(path) as name:
        return cv2.VideoWriter(name, *args)
