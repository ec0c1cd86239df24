"""Image folders, glob patterns and single image files, read in natural order.

``perception run --source frames/`` or ``--source 'frames/*.png'``. A spec that names an existing
file or folder is that file or folder, whatever characters its name holds (``drive[1].png``); only
a spec that is no path is a glob pattern. Files are read in natural order: the numbers in names
compare as numbers (``frame_2.png`` before ``frame_10.png``; zero-padded names keep their order).
A folder lists its files with an image suffix; a pattern keeps those and any other file OpenCV
recognises as an image by its content (``'*.mp4'`` matches no image). An unreadable image is
counted as corrupt and skipped; ``loop`` restarts at the first image; ``realtime``/``fps`` pace
delivery (30 FPS when only ``realtime`` is given).

Images are read as ``cv2.imread`` reads them for display (JPEG EXIF orientation applied, grey,
palette, CMYK and alpha images made BGR) but at their own bit depth: 16-bit images are brought
to 8 bits by a fixed factor (65535 -> 255), the same for every frame of a sequence. A JPEG is
decoded by ``jpeg.decode`` (the same pixels and EXIF orientation, libjpeg's warnings and errors
seen): one whose data is damaged is a corrupt frame, not a picture half grey or never filled in;
one of more than ``jpeg.MAX_SCANS`` scans, or whose header states a size over OpenCV's limits, is
refused before decoding. A PNG over libpng's side limit is refused from its header.

One decoded image may take at most ``MAX_FRAME_BYTES`` (8192 x 8192 pixels at 3 bytes: 201 MB),
whatever its depth: a 16-bit or floating-point image is checked from its header before it is
decoded (``decoded_size``), and a format whose header is not read here is decoded at 8 bits.
With ``loop``, a file skipped on every pass is counted, named and warned about once per run, and
is not decoded again while it is unchanged (libpng's own console line came on every pass).
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import re
import stat
import struct
from pathlib import Path

import cv2
import numpy as np

from perception import MAX_SOURCE_PIXELS, cvpath
from perception.errors import SourceError, permission_denied, unreadable, why_not_a_file
from perception.sources import jpeg
from perception.sources.base import CorruptFrame, Source, SourceOptions, as_bgr, quoted, shown, stamp

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
#: Photo formats OpenCV's image decoders do not read (phones' HEIC/HEIF, AVIF): left out of a folder
#: with a warning, not silently as other files are (``left_out``).
UNREAD_PHOTO_SUFFIXES = frozenset({".heic", ".heif", ".avif"})
GLOB_CHARS = frozenset("*?[")
#: Rate used for --realtime on image sequences when --fps is not given.
DEFAULT_IMAGE_FPS = 30.0
#: How images are decoded: as IMREAD_COLOR (EXIF orientation applied, always 3 channels), but at
#: the file's own depth (IMREAD_UNCHANGED would skip the EXIF orientation).
IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
#: The largest value of 12-bit data: 16-bit images whose values all lie at or below it hold fewer bits.
LOW_BITS_MAX = 4095
#: How many 16-bit frames (or all, when fewer) the bit-depth check looks at before it decides.
DEPTH_CHECK_FRAMES = 30
#: OpenCV's own limit on one side of an image (CV_IO_MAX_IMAGE_WIDTH / _HEIGHT), 2^20 unless set.
DEFAULT_MAX_SIDE = 1 << 20
#: libpng's own limit on one side of a PNG (PNG_USER_WIDTH_MAX / _HEIGHT_MAX), below OpenCV's: a PNG
#: over it is refused from its header, before libpng is given it (it would print its own lines).
PNG_MAX_SIDE = 1_000_000
#: The most bytes one decoded image may take (what ``cv2.imread`` allocates: 3 channels at the
#: file's depth): the largest frame allowed at 8 bits (``MAX_SOURCE_PIXELS`` x 3, 201 MB). A cap on
#: bytes, not on pixels, because what a car computer has to budget is memory: its RAM is fixed and
#: shared with the rest of the stack, and a cap of pixels alone let a 16-bit image take twice as
#: much (402 MB) and a floating-point one four times (805 MB), from a file of a few hundred bytes.
#: A 16-bit image may thus have half the pixels of an 8-bit one (its 8-bit copy, made next, adds
#: at most half as much again).
MAX_FRAME_BYTES = MAX_SOURCE_PIXELS * 3


def is_folder_spec(spec: str) -> bool:
    """A spec that ends in a slash names a folder, whether or not it exists."""
    return spec.endswith("/") or (os.sep != "/" and spec.endswith(os.sep))


def is_glob_spec(spec: str) -> bool:
    """True for a glob pattern: a spec with ``* ? [`` that names no existing file or folder (or none
    this user can see: a folder on the way that it may not enter)."""
    if not GLOB_CHARS & set(spec):
        return False
    return not path_exists(spec)


def path_exists(spec: str | Path) -> bool:
    """Whether ``spec`` names a file, folder or link (a dangling one too); False where a folder on
    the way cannot be entered (Python 3.11's ``Path.exists`` raises PermissionError there)."""
    try:
        os.lstat(spec)
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return False
    return True


def _is_dir(spec: str | Path) -> bool:
    """``Path.is_dir`` that is False, not PermissionError, where a folder on the way cannot be entered."""
    try:
        return Path(spec).is_dir()
    except OSError:
        return False


def is_image_spec(spec: str) -> bool:
    """True for a folder (existing, or a spec ending in ``/``), a glob pattern or an image file name."""
    return (is_folder_spec(spec) or _is_dir(spec) or is_glob_spec(spec)
            or Path(spec).suffix.lower() in IMAGE_SUFFIXES)


#: A file name that is one decimal number (``1700000000.125.png``: a timestamp, as ``str(time.time())``
#: or a bag extraction writes it, with fractions of varying length).
_DECIMAL_STEM = re.compile(r"[0-9]+(\.[0-9]+)?")


def natural_key(path: Path) -> tuple:
    """Sort key of a path in natural order, as file browsers sort: runs of digits compare as numbers
    (``frame_2`` before ``frame_10``, ``v1.2`` before ``v1.10``, ``2_b`` between ``1`` and ``3``) and
    letters without regard to case; a name that is one decimal number compares by its value
    (timestamps: ``1700000000.png``, then ``1700000000.125.png``, then ``.25``, ``.5``, then
    ``1700000001.png``); names equal that way keep their string order."""
    stem = path.name.removesuffix(path.suffix)
    if _DECIMAL_STEM.fullmatch(stem):
        whole, _, fraction = stem.partition(".")
        # The same shape as any other name's key (text, number, text), so that number-only names sort
        # among the others by their number; the fraction's digits compare as text (".125" < ".25" <
        # ".5", as values), after "\0", which sorts before any character a name goes on with.
        name_key: tuple = ("", int(whole), f"\0{fraction}\0{path.suffix.casefold()}")
    else:
        parts = re.split(r"([0-9]+)", path.name)
        name_key = tuple(int(part) if i % 2 else part.casefold() for i, part in enumerate(parts))
    folder = re.split(r"([0-9]+)", str(path.parent))
    return (*(int(part) if i % 2 else part for i, part in enumerate(folder)),), name_key, str(path)


def list_images(spec: str) -> list[Path]:
    """The image files ``spec`` names, in natural order; SourceError when there are none, or when
    this user may not read the folder (or a folder on the way, or the one image file named)."""
    p = Path(spec)
    try:
        files = _list_images(spec, p)
        # a single file: that it can be opened is said now, as an error, not later as a skipped frame
        if len(files) == 1 and files[0] == p and unreadable(p) is not None:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), spec)
        return files
    except PermissionError as exc:
        what = ("image folder" if is_folder_spec(spec) or _is_dir(p) else "pattern" if is_glob_spec(spec)
                else "image file")
        denied = Path(os.fsdecode(exc.filename)) if isinstance(exc.filename, (str, bytes)) else p
        # a file in the folder: its folder may not be entered (permission_denied names it)
        named = "" if denied == p or p in denied.parents else f" ({shown(str(denied))})"
        raise SourceError(f"{what} {shown(spec)}{named} {permission_denied(denied)}") from None


def left_out(folder: Path) -> dict[str, int]:
    """How many files of each other suffix an image folder holds besides its images (``.heic``: 2,
    ``(none)``: 1); what the folder's listing left out. Hidden files (``.DS_Store``, ``._x.jpg``
    from macOS) are not counted: nobody put them there to be read."""
    counts: dict[str, int] = {}
    try:
        for f in folder.iterdir():
            suffix = f.suffix.lower()
            if suffix not in IMAGE_SUFFIXES and not f.name.startswith(".") and f.is_file():
                key = suffix or "(no suffix)"
                counts[key] = counts.get(key, 0) + 1
    except OSError:
        return {}
    return counts


def _glob_base(spec: str) -> Path:
    """The folder a glob pattern starts from: its leading part without ``* ? [`` (``.`` for none)."""
    parts = Path(spec).parts
    plain = next((i for i, part in enumerate(parts) if GLOB_CHARS & set(part)), len(parts))
    return Path(*parts[:plain]) if plain else Path(".")


def _list_images(spec: str, p: Path) -> list[Path]:
    if p.is_dir():
        files = sorted((f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()), key=natural_key)
        if not files:
            hint = ""
            photos = sorted(set(left_out(p)) & UNREAD_PHOTO_SUFFIXES)
            if photos:
                hint = (f"; its {'/'.join(photos)} photos are not read by OpenCV's image decoders: convert them to "
                        "JPEG or PNG (heif-convert, or ffmpeg -i IN.heic OUT.png)")
            elif (p / "images").is_dir():  # a dataset's root (perception synth --out): its frames are in images/
                hint = f"; it looks like a dataset folder: its frames are in {shown(str(p / 'images'))}, so give --source {shown(str(p / 'images'))}"
            raise SourceError(f"image folder {shown(spec)} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}){hint}")
        return files
    if is_folder_spec(spec):
        why = why_not_a_file(p)
        if why == "is a file":
            raise SourceError(f"image folder {shown(spec)} is a file, not a folder; drop the trailing '/'")
        raise SourceError(f"image folder {shown(spec)} {why}; check the path")
    if is_glob_spec(spec):
        matched = [Path(f) for f in glob.glob(spec) if Path(f).is_file()]
        if not matched:
            base = _glob_base(spec)
            if unreadable(base) is not None:  # glob lists nothing in a folder it may not read: not "no files match"
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(base))
            raise SourceError(f"no files match {quoted(spec)}; check the path or pattern (quote a pattern so the "
                              "shell keeps it)")
        files = sorted((f for f in matched if f.suffix.lower() in IMAGE_SUFFIXES or cvpath.have_image_reader(f)),
                       key=natural_key)
        if not files:
            photos = sorted({f.suffix.lower() for f in matched if f.suffix.lower() in UNREAD_PHOTO_SUFFIXES})
            fix = (f"{'/'.join(photos)} photos are not read by OpenCV's image decoders: convert them to JPEG or PNG "
                   "(heif-convert, or ffmpeg -i IN.heic OUT.png)" if photos else "give a video as its own --source")
            raise SourceError(f"{len(matched)} file{'s' if len(matched) != 1 else ''} match {quoted(spec)} but none "
                              f"is an image ({', '.join(sorted(IMAGE_SUFFIXES))}); {fix}")
        return files
    if not p.is_file():
        raise SourceError(f"image file {shown(spec)} {why_not_a_file(p)}; check the path")
    return [p]


def to_8bit(image: np.ndarray) -> np.ndarray:
    """An 8-bit copy of a deeper image, by a fixed factor (the same for every frame, so a sequence
    does not flicker): 16-bit 65535 -> 255; floating point 0..1 -> 0..255 (values over 1: taken as
    0..255)."""
    if image.dtype == np.uint8:
        return image
    if np.issubdtype(image.dtype, np.integer):
        return cv2.convertScaleAbs(image, alpha=255.0 / np.iinfo(image.dtype).max)
    if np.issubdtype(image.dtype, np.floating):
        image = np.nan_to_num(image.astype(np.float32, copy=False))
        return cv2.convertScaleAbs(image, alpha=255.0 if float(image.max(initial=0.0)) <= 1.0 else 1.0)
    raise CorruptFrame(f"unsupported pixel type {image.dtype}")


def too_big(path: Path, exc: cv2.error) -> str:
    """Why OpenCV refused to decode ``path`` before allocating it: which of its limits it is over."""
    err = str(getattr(exc, "err", "") or exc)
    for side, word in (("WIDTH", "wider"), ("HEIGHT", "taller")):
        if f"CV_IO_MAX_IMAGE_{side}" in err:
            limit = os.environ.get(f"OPENCV_IO_MAX_IMAGE_{side}", str(DEFAULT_MAX_SIDE))
            return (f"{quoted(path)} is {word} than {limit} pixels, OpenCV's limit for one side of an image "
                    f"(OPENCV_IO_MAX_IMAGE_{side}); resize it for the node")
    if "CV_IO_MAX_IMAGE_PIXELS" in err:
        limit = os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_SOURCE_PIXELS))
        square = " (8192 x 8192)" if limit == str(MAX_SOURCE_PIXELS) else ""
        return f"{quoted(path)} has more than {limit} pixels{square}; resize it for the node"
    first = err.strip().splitlines()[0] if err.strip() else type(exc).__name__
    return f"{quoted(path)} cannot be decoded (OpenCV: {shown(first[:200])})"


def decoded_size(path: str | Path) -> tuple[int, int, int] | None:
    """(width, height, bytes a sample) of the image ``cv2.imread`` decodes from ``path`` with
    ``IMREAD_ANYDEPTH``, read from its header without decoding it, for the formats that can be
    deeper than 8 bits (PNG, TIFF, PNM/PAM/PFM, Radiance HDR); None for any other format, or a
    header that cannot be read (then the file is decoded at 8 bits, or fails to decode)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                width, height, depth = struct.unpack(">IIB", head[16:25])
                return width, height, 2 if depth == 16 else 1
            if head[:4] in (b"II*\x00", b"MM\x00*"):
                return _tiff_size(f, "<" if head[:2] == b"II" else ">", head)
            if head[:2] == b"#?":  # Radiance RGBE: floating point
                match = re.search(rb"\n\n[-+][XY] ([0-9]+) [-+][XY] ([0-9]+)", head)
                return (int(match.group(2)), int(match.group(1)), 4) if match else None
            if head[:1] == b"P" and head[1:2] in b"1234567Ff":
                return _pnm_size(head)
    except (OSError, struct.error, ValueError):
        return None
    return None


def _tiff_size(f, order: str, head: bytes) -> tuple[int, int, int] | None:
    """The first image of a (classic, not Big-) TIFF: its ImageWidth, ImageLength, BitsPerSample."""
    (offset,) = struct.unpack(order + "I", head[4:8])
    f.seek(offset)
    (count,) = struct.unpack(order + "H", f.read(2))
    entries = f.read(12 * min(count, 1024))
    size: dict[int, int] = {}
    bits = 1
    for at in range(0, len(entries) - 11, 12):
        tag, kind, n = struct.unpack(order + "HHI", entries[at: at + 8])
        value = entries[at + 8: at + 12]
        if tag in (256, 257):
            size[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), value[: 2 if kind == 3 else 4])[0]
        elif tag == 258 and 0 < n <= 64:  # BitsPerSample, one SHORT per sample (at an offset past two)
            if n > 2:
                f.seek(struct.unpack(order + "I", value)[0])
                value = f.read(2 * n)
            bits = max(struct.unpack(order + f"{min(n, 2)}H", value[: 2 * min(n, 2)]) if n <= 2
                       else struct.unpack(order + f"{n}H", value))
    if 256 not in size or 257 not in size:
        return None
    return size[256], size[257], max(1, (bits + 7) // 8)


def _pnm_size(head: bytes) -> tuple[int, int, int] | None:
    """A Netpbm header: P1-P6 (``width height [maxval]``), P7 (PAM: ``WIDTH``/``HEIGHT``/``MAXVAL``
    lines) or PF/Pf (PFM: floating point)."""
    magic = head[:2]
    if magic == b"P7":
        fields = dict(re.findall(rb"(?m)^(WIDTH|HEIGHT|MAXVAL)[ \t]+([0-9]+)", head.split(b"ENDHDR")[0]))
        return int(fields[b"WIDTH"]), int(fields[b"HEIGHT"]), 2 if int(fields.get(b"MAXVAL", b"255")) > 255 else 1
    tokens = re.sub(rb"#[^\n]*", b"", head[2:]).split()
    if magic in (b"PF", b"Pf"):
        return int(tokens[0]), int(tokens[1]), 4
    maxval = 1 if magic in (b"P1", b"P4") else int(tokens[2])
    return int(tokens[0]), int(tokens[1]), 2 if maxval > 255 else 1


def over_byte_cap(path: Path, size: tuple[int, int, int]) -> str | None:
    """Why the image ``size`` (``decoded_size``) of ``path`` is not decoded: at more than 8 bits a
    sample it would take more than ``MAX_FRAME_BYTES``; None when it fits. (At 8 bits that is
    OpenCV's own pixel limit, which ``too_big`` words.)"""
    width, height, depth = size
    need = width * height * 3 * depth
    if depth == 1 or need <= MAX_FRAME_BYTES:
        return None
    return (f"{quoted(path)} is {width} wide x {height} high at {8 * depth} bits a sample: decoded it would take "
            f"{need / 1e6:.0f} MB, more than the {MAX_FRAME_BYTES / 1e6:.0f} MB one frame may take (8192 x 8192 "
            "pixels at 8 bits); resize it or convert it to 8 bits for the node")


def over_png_side(path: Path, size: tuple[int, int, int]) -> str | None:
    """Why the PNG ``path`` of ``size`` (``decoded_size``) is not decoded: a side over libpng's own
    limit (``PNG_MAX_SIDE``); None when it is not a PNG or fits."""
    width, height, _ = size
    if max(width, height) <= PNG_MAX_SIDE:
        return None
    try:
        with open(path, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
    except OSError:
        return None
    word, side = ("wider", width) if width > PNG_MAX_SIDE else ("taller", height)
    return (f"{quoted(path)} is {word} than {PNG_MAX_SIDE} pixels ({side}), libpng's limit for one side of a PNG; "
            "resize it for the node")


def imread_at_depth(path: Path, *, strict_jpeg: bool = False) -> np.ndarray | None:
    """``path`` decoded as the node decodes an image, before ``to_8bit``: ``IMREAD_FLAGS`` (EXIF
    orientation applied, 3 channels) at its own depth when its header said what that costs
    (``decoded_size``), else at 8 bits, which OpenCV's pixel limit bounds to ``MAX_FRAME_BYTES``;
    None when OpenCV cannot decode it. Training and evaluation read dataset images this way too.
    ``strict_jpeg`` (the node's image sources): a JPEG is decoded by ``jpeg.decode`` (the same
    pixels), which sees libjpeg's warnings, so that a damaged one is not taken for an image.

    Raises:
        CorruptFrame: (keyed by the path) decoded at its depth it would take more than
            ``MAX_FRAME_BYTES`` (``over_byte_cap``'s words), or a PNG over libpng's side limit.
        jpeg.DamagedJpeg: with ``strict_jpeg``, a JPEG whose data libjpeg found damaged, or of
            more than ``jpeg.MAX_SCANS`` scans.
        cv2.error: over one of OpenCV's own limits, checked before decoding (``too_big`` words it).
    """
    size = decoded_size(path)
    refused = (over_byte_cap(path, size) or over_png_side(path, size)) if size is not None else None
    if refused is not None:
        raise CorruptFrame(refused, key=str(path))
    if strict_jpeg and size is None and _starts_as_jpeg(path):
        return cvpath.imread(path, cv2.IMREAD_COLOR, jpeg=jpeg.decode)  # any name (cvpath)
    return cvpath.imread(path, IMREAD_FLAGS if size is not None else cv2.IMREAD_COLOR)  # any name (cvpath)


def _starts_as_jpeg(path: Path) -> bool:
    """Whether the file ``path`` starts as a JPEG image does (its name may say otherwise)."""
    try:
        with open(path, "rb") as f:
            return jpeg.is_jpeg(f.read(3))
    except OSError:
        return False


def _file_state(path: Path) -> tuple[int, ...] | None:
    """What changes when a file is replaced, written or has its permissions changed; None when gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _not_a_regular_file(path: Path) -> str | None:
    """Why a listed image cannot be read as one now, in an error line's words; None for a regular file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "is gone (deleted or moved after the source listed it)" if not path.is_symlink() else why_not_a_file(path)
    except OSError:
        return why_not_a_file(path)  # a folder on the way that may not be entered, a link loop...
    return None if stat.S_ISREG(mode) else why_not_a_file(path)


class ImageSource(Source):
    """A naturally sorted list of image files."""

    kind = "images"

    def __init__(self, spec: str, options: SourceOptions) -> None:
        super().__init__(spec, options)
        self.files = list_images(spec)
        if _is_dir(spec):
            self._say_left_out()
        self._index = 0
        self._good_this_pass = 0
        #: Files found damaged: {path: (their ``_file_state`` then, the CorruptFrame's words)}. Not decoded
        #: again on a later pass of --loop while unchanged (a decoder's own console lines, libpng's, came
        #: on every pass); still skipped, counted once per run (``CorruptFrame.key``).
        self._damaged: dict[str, tuple[tuple[int, ...], str]] = {}
        self._passes = 0
        # The bit-depth check of 16-bit files (``_check_depth``): frames seen so far and their top value.
        self._depth_frames: int | None = 0
        self._depth_max = 0
        if options.realtime or options.fps:
            self.pace(options.fps or DEFAULT_IMAGE_FPS)

    def _say_left_out(self) -> None:
        """One line naming the files of the folder that are not read, by suffix: a warning when some
        are photos OpenCV cannot decode (``UNREAD_PHOTO_SUFFIXES``: a phone's HEIC among JPEGs would
        otherwise be lost without a word), information for others (labels, notes)."""
        counts = left_out(Path(self.spec))
        if not counts:
            return
        total = sum(counts.values())
        which = ", ".join(f"{suffix}: {n}" for suffix, n in sorted(counts.items()))
        photos = sorted(set(counts) & UNREAD_PHOTO_SUFFIXES)
        line = (f"{self.camera_prefix()}images {shown(self.spec)}: {total} file{'s' if total != 1 else ''} without an "
                f"image suffix left out ({which})")
        if photos:
            log.warning("%s; %s photos are not read by OpenCV's image decoders: convert them to JPEG or PNG "
                        "(heif-convert, or ffmpeg -i IN.heic OUT.png) to include them", line, "/".join(photos))
        else:
            log.info("%s", line)

    def describe(self) -> str:
        return f"images {shown(self.spec)} ({len(self.files)} file{'' if len(self.files) == 1 else 's'})"

    def _next_image(self):
        if self._index >= len(self.files):
            if not self.options.loop:
                return None
            if not self._good_this_pass:  # a whole pass without a frame: the next would be the same
                if self._passes:
                    log.warning("%simages %s: no file could be read in a whole pass of --loop; the input ends",
                                self.camera_prefix(), shown(self.spec))
                return None
            self._index, self._good_this_pass, self._passes = 0, 0, self._passes + 1
        path = self.files[self._index]
        self._index += 1
        image, capture_ns, capture_mono_ns = self._decode(path)
        self._good_this_pass += 1
        return image, capture_ns, capture_mono_ns

    def _decode(self, path: Path) -> tuple[np.ndarray, int, int]:
        """The image of ``path`` as uint8 BGR, stamped when decoded; CorruptFrame (keyed by the path:
        with ``loop`` counted once per run) when it cannot be one."""
        # A regular file, checked before it is read: imread of a pipe that replaced a listed image
        # would block in open() for ever.
        why = _not_a_regular_file(path)
        if why is not None:
            raise CorruptFrame(f"{quoted(path)} {why}", key=str(path))
        known = self._damaged.get(str(path))
        if known is not None:
            if known[0] == _file_state(path):  # unchanged since found damaged: not decoded again
                raise CorruptFrame(known[1], key=str(path))
            del self._damaged[str(path)]
        try:
            return self._decode_file(path)
        except CorruptFrame as exc:
            state = _file_state(path)
            if state is not None:
                self._damaged[str(path)] = (state, str(exc))
            raise

    def _decode_file(self, path: Path) -> tuple[np.ndarray, int, int]:
        try:
            image = imread_at_depth(path, strict_jpeg=True)
        except jpeg.DamagedJpeg as exc:
            raise CorruptFrame(f"{quoted(path)} is {exc}", key=str(path)) from None
        except cv2.error as exc:  # a size limit, checked before decoding (perception.MAX_SOURCE_PIXELS)
            raise CorruptFrame(too_big(path, exc), key=str(path)) from None
        capture_ns, capture_mono_ns = stamp()
        if image is None:
            why = _not_a_regular_file(path) or unreadable(path)  # changed meanwhile, or not ours to read
            raise CorruptFrame(f"{quoted(path)} {why or 'cannot be decoded'}", key=str(path))
        if image.dtype == np.uint16 and self._depth_frames is not None:
            self._check_depth(image)
        try:
            return as_bgr(to_8bit(image)), capture_ns, capture_mono_ns
        except CorruptFrame as exc:
            raise CorruptFrame(f"{quoted(path)}: {exc}", key=str(path)) from None

    def _check_depth(self, image: np.ndarray) -> None:
        """10- or 12-bit data stored in 16-bit files (machine-vision cameras, RAW converters): the
        fixed 65535 -> 255 scale leaves it nearly black, and the masks are guesses. Said once, when
        the first frames together (not one dark frame of a full-range sequence) stay within 12 bits."""
        self._depth_max = max(self._depth_max, int(image.max()))
        self._depth_frames += 1
        if self._depth_frames < min(DEPTH_CHECK_FRAMES, len(self.files)):
            return
        if 0 < self._depth_max <= LOW_BITS_MAX:
            log.warning("%simages %s: the first %d 16-bit frames hold values up to %d only (10- or 12-bit data?); "
                        "they are scaled as 16-bit (65535 -> 255) and show as nearly black: if the camera writes "
                        "fewer bits, convert them to 8 bits at their real depth (12-bit: value / 16)",
                        self.camera_prefix(), shown(self.spec), self._depth_frames, self._depth_max)
        self._depth_frames = None  # decided: checked once per source
