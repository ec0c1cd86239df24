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
    if raw.ndim != 2 or raw.dtype != np.uint8:
        raise DataError(f"label {path} must be a single-channel 8-bit image, got shape {raw.shape} {raw.dtype}")
    mapped = lut[raw]
    bad = mapped == INVALID_LABEL
    if bad.any():
        value = int(raw[bad][0])
        raise DataError(f"label {path} holds value {value}, which is not a class id of this dataset; "
                        f"{lossy_label_hint(path) or 'check the labels'}")
    return mapped.astype(np.uint8)


#: Label files whose compression changes pixel values: a class id or a palette colour does not survive.
LOSSY_LABEL_SUFFIXES = (".jpg", ".jpeg")


def lossy_label_hint(path: Path) -> str:
    """The fix for a label saved in a lossy format (JPEG blurs ids and colours at every edge), else ''."""
    if path.suffix.lower() in LOSSY_LABEL_SUFFIXES:
        return f"{path.suffix} compression changes label values at every edge: save labels as PNG"
    return ""


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
    """``image_path label_path`` per line, relative to ``root`` (the CamVid and synth layout)."""
    pairs = []
    first_line: dict[Path, int] = {}
    for number, line in enumerate(_list_text(list_file).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{list_file}:{number}: expected 'image_path label_path', got {line.strip()!r}")
        # SegNet's CamVid lists hold absolute paths of the authors' machine; keep the last two parts.
        kept = [Path(*Path(p).parts[-2:]) for p in parts]
        for text, relative in zip(parts, kept, strict=True):
            # Only "folder/file" under root: ".." (or a root "/") would reach outside the dataset folder.
            # Checked on the text, not the resolved path, so symbolic links inside the folder still work.
            if relative.is_absolute() or ".." in relative.parts:
                raise DataError(f"{list_file}:{number}: {text} points outside the dataset folder {root}; "
                                "list paths inside it, such as images/000000.png")
        image, label = (root / relative for relative in kept)
        for path in (image, label):
            if not path.is_file():
                raise DataError(f"{list_file}:{number}: {path} not found; is the dataset folder complete?")
        if image in first_line:
            # A repeated frame would count twice in every score (and be drawn twice as often in training).
            raise DataError(f"{list_file}:{number}: {kept[0]} is listed again (first on line {first_line[image]}); "
                            "list each frame once")
        first_line[image] = number
        pairs.append((image, label))
    if not pairs:
        raise DataError(f"list file {list_file} is empty")
    return pairs
