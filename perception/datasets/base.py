"""What every dataset format shares: the file-pair reader, label look-up tables, list files, statistics.

A format module (``camvid``, ``cityscapes``, ``folder``) finds its ``(image, label)`` file pairs and
builds a label look-up table; ``SegmentationDataset`` decodes a pair on access and checks it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from perception import MAX_SOURCE_PIXELS, cvpath
from perception.contracts import ClassTable
from perception.datasets.headers import ORIENTATION_WORDS, read_header
from perception.datasets.unreadable import cannot_read, named, refuse_cut_png
from perception.errors import DataError
from perception.sources.base import CorruptFrame, as_bgr

# The node's image reader: datasets take the files it takes and decode them its way (EXIF orientation,
# 16-bit scaling), so that a model is trained and scored on the frames the node will give it.
from perception.sources.images import (
    DEPTH_CHECK_FRAMES,
    LOW_BITS_MAX,
    decoded_size,
    imread_at_depth,
    to_8bit,
    too_big,
)
from perception.sources.jpeg import DamagedJpeg

log = logging.getLogger(__name__)
#: Dataset images found to be damaged JPEGs and said so (``read_dataset_image``), once a process each.
_DAMAGED_SAID: set[str] = set()

#: Marks label values a lookup table does not accept (outside uint8 on purpose).
INVALID_LABEL = 256


class SegmentationDataset(Sequence):
    """Pairs of image files and label files, decoded on access.

    ``label_lut`` maps every raw label value (0..255) to a class id, the ignore id, or
    ``INVALID_LABEL``; ``decode_label`` (optional) turns a raw label image into class ids itself
    (colour palettes, binary masks).
    """

    def __init__(
        self,
        *,
        name: str,
        class_table: ClassTable,
        pairs: list[tuple[Path, Path]],
        label_lut: np.ndarray | None = None,
        decode_label: Callable[[np.ndarray, Path], np.ndarray] | None = None,
    ) -> None:
        lossy = next((label for _, label in pairs if label.suffix.lower() in LOSSY_LABEL_SUFFIXES), None)
        if lossy is not None:
            # Refused up front: JPEG changes ids and colours at every edge, and when the changed values
            # happen to stay inside the class table, nothing later can tell (a silently wrong score).
            raise DataError(f"label {named(lossy)} is a {lossy.suffix} file, whose compression changes label values at every "
                            "edge: save labels as PNG")
        self.name = name
        self.class_table = class_table
        self.pairs = pairs
        self._lut = label_lut if label_lut is not None else identity_lut(class_table)
        self._decode_label = decode_label
        # Per index: the EXIF orientations of its image and label files (``_orientations``), read once.
        self._turns: dict[int, tuple[int, int, bool]] = {}
        warn_low_bit_depth(self)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.pairs[index]
        image = read_dataset_image(image_path)
        image_turn, label_turn, label_turned = self._orientations(index)
        raw = read_image(label_path, cv2.IMREAD_UNCHANGED, what="label")
        label = (self._decode_label(raw, label_path) if self._decode_label
                 else map_label(raw, self._lut, label_path, self.class_table))
        if image_turn != 1 and label_turn != image_turn:
            raise DataError(orientation_mismatch(image_path, image_turn, image.shape[:2],
                                                 label_path, label_turn, label.shape))
        if not label_turned:  # the image was turned by OpenCV, as the node turns it; a TIFF label was too
            label = apply_orientation(label, label_turn)
        if label.shape != image.shape[:2]:
            raise DataError(
                f"label {named(label_path)} is {label.shape[0]} high x {label.shape[1]} wide but image {named(image_path)} is "
                f"{image.shape[0]} high x {image.shape[1]} wide; they must match"
                + _turned_sizes(image_path, image_turn, label_path, label_turn, image.shape[:2], label.shape)
            )
        return image, label

    def label(self, index: int) -> np.ndarray:
        """Pair ``index``'s label alone, as ``self[index]`` gives it (class ids, turned by its EXIF
        orientation), its image neither decoded nor compared with it: for what reads labels only,
        such as the class statistics of a training start (``class_pixel_stats``), which a 1080p
        JPEG decode beside each label made about twice as slow."""
        _, label_path = self.pairs[index]
        _, label_turn, label_turned = self._orientations(index)
        raw = read_image(label_path, cv2.IMREAD_UNCHANGED, what="label")
        label = (self._decode_label(raw, label_path) if self._decode_label
                 else map_label(raw, self._lut, label_path, self.class_table))
        return label if label_turned else apply_orientation(label, label_turn)

    def image(self, index: int) -> np.ndarray:
        """Pair ``index``'s image alone, as the node reads it (its label neither read nor checked):
        for what needs no labels, such as INT8 calibration, export verification, ``bench --frames``."""
        return read_dataset_image(self.pairs[index][0])

    def _orientations(self, index: int) -> tuple[int, int, bool]:
        """The EXIF orientations (1: none) of pair ``index``'s image and label, and whether the label
        is turned by its decoder already (a TIFF), read from their headers once (a few small reads
        beside the decode that follows; then kept); DataError for a label that is a lossy WebP file."""
        turns = self._turns.get(index)
        if turns is None:
            image_path, label_path = self.pairs[index]
            label = read_header(label_path)
            if label.lossy:
                raise DataError(f"label {named(label_path)} is a lossy WebP file, whose compression changes label values "
                                "at every edge: save labels as PNG (or lossless WebP)")
            turns = self._turns[index] = (read_header(image_path).orientation, label.orientation, label.always_turned)
        return turns

    def describe(self, index: int) -> str:
        return str(self.pairs[index][0])


def read_image(path: Path, flags: int, *, what: str = "image") -> np.ndarray:
    """The decoded file ``path``; DataError calling it ``what`` (an image, or a label of one) when
    it cannot be decoded or is too large."""
    refuse_cut_png(path, what)
    try:
        image = cvpath.imread(path, flags)  # any name: OpenCV is not handed one that is not UTF-8
    except cv2.error:  # OpenCV's OPENCV_IO_MAX_IMAGE_PIXELS (perception.MAX_SOURCE_PIXELS), checked before decoding
        raise DataError(f"{what} {named(path)} has more than {MAX_SOURCE_PIXELS} pixels (8192 x 8192); resize it") from None
    if image is None:
        raise DataError(cannot_read(what, path))
    return image


def read_dataset_image(path: Path) -> np.ndarray:
    """Image ``path`` as the node reads it (``perception.sources.images``): EXIF orientation
    applied, at its own depth, then 16-bit brought to 8 bits by the same fixed factor (65535 ->
    255), as uint8 BGR; DataError naming it when it cannot be."""
    refuse_cut_png(path, "image")
    try:
        try:
            image = imread_at_depth(path, strict_jpeg=True)
        except DamagedJpeg as exc:  # the node skips it; training and eval go on, told once
            if str(path) not in _DAMAGED_SAID:
                _DAMAGED_SAID.add(str(path))
                log.warning("image %s: %s; read as libjpeg conceals the damage (the node skips such a frame): "
                            "replace it with a good copy, or remove it and its label", named(path), exc)
            image = imread_at_depth(path)
        if image is None:
            raise DataError(cannot_read("image", path))
        return as_bgr(to_8bit(image))
    except cv2.error as exc:  # OpenCV's own limits, checked before decoding (perception.MAX_SOURCE_PIXELS)
        raise DataError(f"image {too_big(path, exc)}") from None
    except CorruptFrame as exc:  # over the bytes one frame may take, or a pixel type the node refuses too
        raise DataError(f"image {named(path)}: {exc}" if str(path) not in str(exc) else f"image {exc}") from None



def warn_low_bit_depth(dataset: SegmentationDataset) -> None:
    """10- or 12-bit data stored in 16-bit images: scaled 65535 -> 255 as the node scales them, it
    is nearly black. Warned once per dataset, when it opens, as the node warns once per source;
    looked at only when its first image is 16-bit (from the header), on up to
    ``DEPTH_CHECK_FRAMES`` images spread over it, stopping at the first that uses more bits."""
    if not dataset.pairs or (decoded_size(dataset.pairs[0][0]) or (0, 0, 1))[2] != 2:
        return
    step = max(1, len(dataset.pairs) // DEPTH_CHECK_FRAMES)
    seen = top = 0
    for image_path, _ in dataset.pairs[::step][:DEPTH_CHECK_FRAMES]:
        try:
            image = imread_at_depth(image_path)
        except (cv2.error, CorruptFrame):  # said when the sample is read
            continue
        if image is None or image.dtype != np.uint16:
            continue
        seen, top = seen + 1, max(top, int(image.max()))
        if top > LOW_BITS_MAX:
            return
    if seen and top:
        log.warning("dataset %s: %d 16-bit images hold values up to %d only (10- or 12-bit data?); they are scaled "
                    "as 16-bit (65535 -> 255), as the node scales them, and are nearly black: convert them to 8 bits "
                    "at their real depth (12-bit: value / 16)", dataset.name, seen, top)



def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """``array`` (rows, columns[, channels]) turned as OpenCV turns an image by its EXIF
    ``orientation`` (1..8; 1 and unknown values leave it as it is)."""
    if orientation not in ORIENTATION_WORDS:
        return array
    if orientation >= 5:
        array = array.swapaxes(0, 1)
    if orientation in (2, 3, 6, 7):
        array = array[:, ::-1]
    if orientation in (3, 4, 7, 8):
        array = array[::-1]
    return np.ascontiguousarray(array)


def orientation_mismatch(image: Path, image_turn: int, image_hw: tuple[int, ...],
                         label: Path, label_turn: int, label_hw: tuple[int, ...]) -> str:
    """The error for an image that OpenCV turns by its EXIF orientation whose label does not carry
    the same tag: which way the label was drawn cannot be known (for a 90-degree turn of a frame
    that is not square, its size tells, and the line says so), so both fixes are named."""
    has = "carries no orientation tag" if label_turn == 1 else f"carries orientation tag {label_turn}"
    way = "which way the label was drawn is not known"
    if image_turn >= 5 and image_hw[0] != image_hw[1] and label_turn == 1:
        if tuple(label_hw) == tuple(image_hw):
            way = "its size says that it was drawn on the image as shown"
        elif tuple(label_hw) == tuple(image_hw[::-1]):
            way = "its size says that it was drawn on the image's pixels as stored"
    image, label = named(image), named(label)
    return (f"image {image} carries EXIF orientation tag {image_turn}, so it is shown {ORIENTATION_WORDS[image_turn]} "
            f"(and the node reads it so), but its label {label} {has}: {way}; if on the image as shown, turn the "
            f"image for good (exiftran -ai {image}, or mogrify -auto-orient {image}); if on its pixels as stored, "
            f"remove the image's tag (exiftool -Orientation= -n {image})")


def _turned_sizes(image: Path, image_turn: int, label: Path, label_turn: int,
                  image_hw: tuple[int, ...], label_hw: tuple[int, ...]) -> str:
    """For a label whose size is the image's turned by 90 degrees when an EXIF orientation turned
    one of them: the words that say so (the files themselves hold the other size)."""
    if tuple(label_hw) != tuple(image_hw[::-1]):
        return ""
    turned = [f"{what} {named(path)} is turned by its EXIF orientation tag {turn} ({ORIENTATION_WORDS[turn]})"
              for what, path, turn in (("image", image, image_turn), ("label", label, label_turn)) if turn >= 5]
    if not turned:
        return ""
    return (f"; the sizes are the same turned by 90 degrees: the {' and the '.join(turned)}, as the node turns it; "
            "remove the tag that is wrong (exiftool -Orientation= -n FILE)")



def identity_lut(table: ClassTable) -> np.ndarray:
    """Raw value v -> v for class ids and the ignore id; everything else invalid."""
    lut = np.full(256, INVALID_LABEL, dtype=np.uint16)
    lut[: table.num_classes] = np.arange(table.num_classes)
    if table.ignore_id is not None:
        lut[table.ignore_id] = table.ignore_id
    return lut


def map_label(raw: np.ndarray, lut: np.ndarray, path: Path, table: ClassTable | None = None) -> np.ndarray:
    """Apply ``lut`` to a single-channel label image; DataError naming a value it does not accept
    and the values it does (``table``: the dataset's, whose ignore id the line names)."""
    check_8_bit(raw, path)
    if raw.ndim != 2:
        raise DataError(f"label {named(path)} must be a single-channel 8-bit image of class ids, got shape {raw.shape}")
    mapped = lut[raw]
    bad = mapped == INVALID_LABEL
    if bad.any():
        value = int(raw[bad][0])
        raise DataError(f"label {named(path)} holds value {value}, which is not a class id of this dataset "
                        f"({accepted_values(lut, table)}); check the labels")
    return mapped.astype(np.uint8)


def accepted_values(lut: np.ndarray, table: ClassTable | None = None) -> str:
    """The label values ``lut`` accepts, as ranges (``class ids 0..11, ignore id 255``; ``values
    0..31`` where the lut maps raw values of another numbering)."""
    values = [int(v) for v in np.flatnonzero(lut[:256] != INVALID_LABEL)]
    ignore = table.ignore_id if table is not None and table.ignore_id in values else None
    ranges: list[tuple[int, int]] = []
    for value in values:
        if value == ignore:
            continue
        if ranges and ranges[-1][1] == value - 1:
            ranges[-1] = (ranges[-1][0], value)
        else:
            ranges.append((value, value))
    text = ", ".join(f"{a}" if a == b else f"{a}, {b}" if b == a + 1 else f"{a}..{b}" for a, b in ranges) or "none"
    identity = table is not None and all(int(lut[v]) == v for v in values)
    return (f"{'class ids' if identity else 'it takes values'} {text}"
            + (f", ignore id {ignore}" if ignore is not None else ""))


def check_8_bit(raw: np.ndarray, path: Path) -> None:
    """DataError naming the fix when label ``raw`` is not 8 bits a channel (a 16-bit PNG)."""
    if raw.dtype != np.uint8:
        bits = 8 * raw.dtype.itemsize
        raise DataError(f"label {named(path)} is a {bits}-bit {'colour' if raw.ndim == 3 else 'single-channel'} image; "
                        "labels are 8-bit: save class ids (0..254) as an 8-bit single-channel PNG"
                        f"{' or colours as an 8-bit RGB PNG' if raw.ndim == 3 else ''}")


#: Label files whose compression changes pixel values: a class id or a palette colour does not
#: survive. Refused when a dataset is opened (``SegmentationDataset``).
LOSSY_LABEL_SUFFIXES = (".jpg", ".jpeg")


def unknown_split(split: str, kind: str, known: Iterable[str], where: str = "") -> DataError:
    """The DataError for a split a dataset does not have: ``unknown split 'x' for KIND<where>; known: ...``."""
    names = ", ".join(sorted(known)) or "none"
    return DataError(f"unknown split {split!r} for {kind}{where}; known: {names}")


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder; DataError naming ``what`` and the path otherwise."""
    if not path.is_dir():
        raise DataError(f"{what} {named(path)} not found; check the dataset path")
    return path


def _list_text(list_file: Path) -> str:
    """The text of a list file: UTF-8 (a byte-order mark allowed), or UTF-16 with its mark, as
    Windows editors save "Unicode" text."""
    data = list_file.read_bytes()
    encoding = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DataError(f"list file {named(list_file)} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def read_list_file(list_file: Path, root: Path, *, quiet: bool = False) -> list[tuple[Path, Path]]:
    """``image_path label_path`` per line, relative to ``root`` (the CamVid and synth layout).

    A path is read as written, inside ``root`` (``images/seqB/000018.png``; an absolute path
    inside ``root`` too); when no file is there, by its last two parts (``images/000018.png``),
    as SegNet's CamVid lists hold absolute paths of their authors' machine. Errors quote the line
    as written. An absolute path outside ``root`` to a file that exists, read by its last two parts
    all the same, is warned about once per list (unless ``quiet``: the file is read only to compare).
    """
    pairs = []
    first_line: dict[Path, int] = {}
    elsewhere: list[tuple[int, str, Path]] = []  # (line, path as written, the file read instead)
    for number, line in enumerate(_list_text(list_file).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            spaces = ("; a line splits at white space, so a file name with a space cannot be listed: rename the "
                      "file" if len(parts) > 2 else "")
            raise DataError(f"{named(list_file)}:{number}: expected 'image_path label_path', got {line.strip()!r}{spaces}")
        image, label = (_listed_path(text, root, f"{named(list_file)}:{number}") for text in parts)
        for text, path in zip(parts, (image, label), strict=True):
            if not quiet and _replaced(Path(text), path):
                elsewhere.append((number, text, path))
        if image in first_line:
            # A repeated frame would count twice in every score (and be drawn twice as often in training).
            raise DataError(f"{named(list_file)}:{number}: {named(parts[0])} is listed again (first on line {first_line[image]}); "
                            "list each frame once")
        first_line[image] = number
        pairs.append((image, label))
    if not pairs:
        raise DataError(f"list file {named(list_file)} is empty")
    if elsewhere:
        number, text, path = elsewhere[0]
        log.warning("%s:%d: %s is outside the dataset folder %s, so %s (its last two parts there) was read instead, "
                    "as for %d listed path%s in all; to use the listed files, put them in the dataset folder",
                    named(list_file), number, named(text), named(root), named(path), len(elsewhere),
                    "" if len(elsewhere) == 1 else "s")
    return pairs


def _replaced(written: Path, path: Path) -> bool:
    """Whether an absolute path ``written`` in a list names a file that exists but is not ``path``,
    the file of the dataset folder read for it (``_listed_path``)."""
    if not written.is_absolute() or written == path:
        return False
    try:
        return written.is_file() and not written.samefile(path)
    except OSError:
        return False


def warn_frames_in_other_lists(list_file: Path, pairs: list[tuple[Path, Path]], root: Path) -> None:
    """One warning when frames of a split's list are also in ``train.txt``, ``val.txt`` or
    ``test.txt`` beside it: scored on frames it was trained on, a model looks better than it is.
    Said by the split that is not ``train``, so a training run (train and val) says it once; a list
    that cannot be read is left to be reported when its split is opened."""
    if list_file.stem == "train":
        return
    mine = {image: number for number, (image, _) in enumerate(pairs)}
    for name in ("train", "val", "test"):
        other = root / f"{name}.txt"
        if other.name == list_file.name or not other.is_file():
            continue
        try:
            shared = [image for image, _ in read_list_file(other, root, quiet=True) if image in mine]
        except DataError:
            continue
        if shared:
            first = min(shared, key=mine.__getitem__)
            log.warning("%d of the %d frames of %s are also in %s (first: %s): a split scored on frames that another "
                        "trains on overstates the score; list each frame in one list only", len(shared), len(pairs),
                        named(list_file), named(other.name), named(first))


def _listed_path(text: str, root: Path, where: str) -> Path:
    """The file a list line's path ``text`` names under ``root`` (see ``read_list_file``);
    DataError naming ``where`` (file and line) and ``text`` when it is outside ``root`` or missing.

    Checked on the text, not the resolved path, so symbolic links inside the folder still work: a
    ``..`` (or a root ``/`` left after the cut) would reach outside the dataset folder."""
    written = Path(text)
    if written.is_absolute():
        inside = next((written.relative_to(r) for r in (root.absolute(), root.resolve()) if written.is_relative_to(r)), None)
    else:
        inside = written
    if inside is not None and inside.parts and ".." not in inside.parts and (root / inside).is_file():
        return root / inside
    last_two = Path(*written.parts[-2:])
    if last_two.is_absolute() or ".." in last_two.parts:
        raise DataError(f"{where}: {named(text)} points outside the dataset folder {named(root)}; "
                        "list paths inside it, such as images/000000.png")
    path = root / last_two
    if not path.is_file():
        also = "" if last_two == written else f" (nor {last_two.as_posix()}, its last two parts)"
        fix = ("use / between folders in list files, not \\ (a Windows path)" if "\\" in text
               else "is the dataset folder complete?")
        raise DataError(f"{where}: {named(text)} not found in {named(root)}{also}; {fix}")
    return path
