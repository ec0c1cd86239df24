"""What every dataset format shares: the file-pair reader, label look-up tables, list files, statistics.

A format module (``camvid``, ``cityscapes``, ``folder``) finds its ``(image, label)`` file pairs and
builds a label look-up table; ``SegmentationDataset`` decodes a pair on access and checks it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from perception import MAX_SOURCE_PIXELS
from perception.contracts import ClassTable
from perception.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
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
            raise DataError(f"label {lossy} is a {lossy.suffix} file, whose compression changes label values at every "
                            "edge: save labels as PNG")
        self.name = name
        self.class_table = class_table
        self.pairs = pairs
        self._lut = label_lut if label_lut is not None else identity_lut(class_table)
        self._decode_label = decode_label

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.pairs[index]
        image = read_image(image_path, cv2.IMREAD_COLOR)
        raw = read_image(label_path, cv2.IMREAD_UNCHANGED, what="label")
        label = self._decode_label(raw, label_path) if self._decode_label else map_label(raw, self._lut, label_path)
        if label.shape != image.shape[:2]:
            raise DataError(
                f"label {label_path} is {label.shape[0]} high x {label.shape[1]} wide but image {image_path} is "
                f"{image.shape[0]} high x {image.shape[1]} wide; they must match"
            )
        return image, label

    def describe(self, index: int) -> str:
        return str(self.pairs[index][0])


def read_image(path: Path, flags: int, *, what: str = "image") -> np.ndarray:
    """The decoded file ``path``; DataError calling it ``what`` (an image, or a label of one) when
    it cannot be decoded or is too large."""
    try:
        image = cv2.imread(str(path), flags)
    except cv2.error:  # OpenCV's OPENCV_IO_MAX_IMAGE_PIXELS (perception.MAX_SOURCE_PIXELS), checked before decoding
        raise DataError(f"{what} {path} has more than {MAX_SOURCE_PIXELS} pixels (8192 x 8192); resize it") from None
    if image is None:
        raise DataError(f"cannot read {what} {path}; is it a valid PNG/JPEG file?")
    return image


def identity_lut(table: ClassTable) -> np.ndarray:
    """Raw value v -> v for class ids and the ignore id; everything else invalid."""
    lut = np.full(256, INVALID_LABEL, dtype=np.uint16)
    lut[: table.num_classes] = np.arange(table.num_classes)
    if table.ignore_id is not None:
        lut[table.ignore_id] = table.ignore_id
    return lut


def map_label(raw: np.ndarray, lut: np.ndarray, path: Path) -> np.ndarray:
    """Apply ``lut`` to a single-channel label image; DataError naming a value it does not accept."""
    check_8_bit(raw, path)
    if raw.ndim != 2:
        raise DataError(f"label {path} must be a single-channel 8-bit image of class ids, got shape {raw.shape}")
    mapped = lut[raw]
    bad = mapped == INVALID_LABEL
    if bad.any():
        value = int(raw[bad][0])
        raise DataError(f"label {path} holds value {value}, which is not a class id of this dataset; check the labels")
    return mapped.astype(np.uint8)


def check_8_bit(raw: np.ndarray, path: Path) -> None:
    """DataError naming the fix when label ``raw`` is not 8 bits a channel (a 16-bit PNG)."""
    if raw.dtype != np.uint8:
        bits = 8 * raw.dtype.itemsize
        raise DataError(f"label {path} is a {bits}-bit {'colour' if raw.ndim == 3 else 'single-channel'} image; "
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
        raise DataError(f"{what} {path} not found; check the dataset path")
    return path


def _list_text(list_file: Path) -> str:
    """The text of a list file: UTF-8 (a byte-order mark allowed), or UTF-16 with its mark, as
    Windows editors save "Unicode" text."""
    data = list_file.read_bytes()
    encoding = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DataError(f"list file {list_file} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def read_list_file(list_file: Path, root: Path) -> list[tuple[Path, Path]]:
    """``image_path label_path`` per line, relative to ``root`` (the CamVid and synth layout).

    A path is read as written, inside ``root`` (``images/seqB/000018.png``; an absolute path
    inside ``root`` too); when no file is there, by its last two parts (``images/000018.png``),
    as SegNet's CamVid lists hold absolute paths of their authors' machine. Errors quote the line
    as written.
    """
    pairs = []
    first_line: dict[Path, int] = {}
    for number, line in enumerate(_list_text(list_file).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{list_file}:{number}: expected 'image_path label_path', got {line.strip()!r}")
        image, label = (_listed_path(text, root, f"{list_file}:{number}") for text in parts)
        if image in first_line:
            # A repeated frame would count twice in every score (and be drawn twice as often in training).
            raise DataError(f"{list_file}:{number}: {parts[0]} is listed again (first on line {first_line[image]}); "
                            "list each frame once")
        first_line[image] = number
        pairs.append((image, label))
    if not pairs:
        raise DataError(f"list file {list_file} is empty")
    return pairs


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
        raise DataError(f"{where}: {text} points outside the dataset folder {root}; "
                        "list paths inside it, such as images/000000.png")
    path = root / last_two
    if not path.is_file():
        also = "" if last_two == written else f" (nor {last_two.as_posix()}, its last two parts)"
        raise DataError(f"{where}: {text} not found in {root}{also}; is the dataset folder complete?")
    return path
