"""The ``cityscapes`` dataset: ``leftImg8bit`` images with ``gtFine`` labelIds, mapped to the 19 train ids.

    open_dataset("cityscapes:/data/cityscapes", split="val")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perception.contracts import ClassInfo, ClassTable
from perception.datasets.base import INVALID_LABEL, SegmentationDataset, require_dir, unknown_split
from perception.errors import ConfigError, DataError

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


def open_cityscapes(argument: str, *, split: str, spec: str) -> SegmentationDataset:
    """``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with ``gtFine/<split>/<city>/*_gtFine_labelIds.png``."""
    if not argument:
        raise ConfigError(f"dataset {spec!r}: give the folder, e.g. cityscapes:/data/cityscapes")
    root = require_dir(Path(argument).expanduser(), "Cityscapes folder")
    images_root = require_dir(root / "leftImg8bit", "Cityscapes image folder")
    if not (images_root / split).is_dir():
        known = [p.name for p in images_root.iterdir() if p.is_dir()]
        raise unknown_split(split, "cityscapes", known, f" {root} (no leftImg8bit/{split} there)")
    image_dir = images_root / split
    label_dir = require_dir(root / "gtFine" / split, "Cityscapes label folder")
    pairs = []
    for image in sorted(image_dir.glob("*/*_leftImg8bit.png")):
        stem = image.name[: -len("_leftImg8bit.png")]
        label = label_dir / image.parent.name / f"{stem}_gtFine_labelIds.png"
        if not label.is_file():
            raise DataError(f"Cityscapes image {image} has no label {label}; is gtFine complete?")
        pairs.append((image, label))
    if not pairs:
        raise DataError(f"no *_leftImg8bit.png images under {image_dir}/<city>/")
    lut = np.full(256, INVALID_LABEL, dtype=np.uint16)
    lut[: CITYSCAPES_MAX_LABEL_ID + 1] = CITYSCAPES_CLASSES.ignore_id
    for train_id, (label_id, _, _) in enumerate(_CITYSCAPES_TRAIN):
        lut[label_id] = train_id
    return SegmentationDataset(name=spec, class_table=CITYSCAPES_CLASSES, pairs=pairs, label_lut=lut)
