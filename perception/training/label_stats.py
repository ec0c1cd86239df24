"""What a training set's labels hold: pixels per class (``LabelStats``, read from up to 200 evenly
spaced labels), the loss's class weights computed from them (``class_weights_of``, also used by
``perception export --logit-adjust``), and the warning for classes no label holds.

Imported by the training side and the exporter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from perception.datasets import Dataset, SyntheticDataset, class_pixel_stats, stats_indices
from perception.metrics import masks_0_255_fix
from perception.progress import count_of
from perception.training.losses import enet_weights, median_frequency_weights

log = logging.getLogger(__name__)


def class_weights_of(weighting: str, train_set: Dataset) -> np.ndarray | None:
    """The loss's class weights (``class_weighting``: none, enet or median_freq) from ``train_set``'s
    pixel counts; None for none. ``perception export --logit-adjust`` recomputes them this way."""
    if weighting == "none":
        return None
    return weights_from_stats(weighting, LabelStats.of(train_set))


def weights_from_stats(weighting: str, stats: LabelStats) -> np.ndarray:
    """``class_weights_of`` from label statistics already read (enet or median_freq)."""
    if weighting == "enet":
        return enet_weights(stats.counts)
    return median_frequency_weights(stats.counts, stats.present)


#: Labels read for ``LabelStats`` from which a line says so before (a second or more at 1080p).
SCAN_NOTE_LABELS = 50


@dataclass
class LabelStats:
    """``class_pixel_stats`` of a dataset (up to 200 evenly spaced labels), with how many labels and
    pixels it read: the pixels of no class are the ignore id's."""

    counts: np.ndarray  # pixels per class
    present: np.ndarray  # valid pixels of the labels in which each class occurs
    labels: int
    pixels: int

    @classmethod
    def of(cls, dataset: Dataset) -> LabelStats:
        scanned = len(stats_indices(len(dataset)))
        if scanned >= SCAN_NOTE_LABELS and not isinstance(dataset, SyntheticDataset):
            # Seconds to minutes on a large dataset, with nothing else on the console meanwhile.
            log.info("reading %d of the %s of %s for the class statistics", scanned,
                     count_of(len(dataset), "label"), getattr(dataset, "name", "the data"))
        tally = _LabelTally(dataset)
        counts, present = class_pixel_stats(tally)
        return cls(counts, present, tally.labels, tally.pixels)

    @property
    def ignored(self) -> int:
        return self.pixels - int(self.counts.sum())


class _LabelTally:
    """``dataset`` as ``class_pixel_stats`` reads it, counting the labels and pixels it reads."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.class_table = dataset.class_table
        self.labels = self.pixels = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, label = self.dataset[index]
        self._count(label)
        return image, label

    def label(self, index: int) -> np.ndarray:
        """The label alone where the dataset reads it so (its image is not decoded), else from the pair."""
        read = getattr(self.dataset, "label", None)
        label = read(index) if read is not None else self.dataset[index][1]
        self._count(label)
        return label

    def _count(self, label: np.ndarray) -> None:
        self.labels += 1
        self.pixels += int(label.size)


def unlabelled_classes_warning(stats: LabelStats, train_set: Dataset, *, mixed: bool = False) -> str | None:
    """One line naming the classes of ``train_set``'s table without a labelled pixel in the labels
    ``stats`` sampled (the model cannot learn them), or None. For a two-class table whose ignore id is
    255 and whose labels hold only 0 and 255 (0/255 masks, whose 255 is then never read as class 1)
    it names that as the likely cause and the fix."""
    table = train_set.class_table
    missing = [name for name, count in zip(table.names, stats.counts, strict=True) if count == 0]
    if not missing or stats.labels == 0:
        return None
    sampled = (f"the {count_of(stats.labels, 'training label')}" if stats.labels == len(train_set)
               else f"{stats.labels} of the {count_of(len(train_set), 'training label')}")
    where = f"{sampled} of {train_set.name!r}" + (" (mix_data's frames not counted)" if mixed else "")
    if (table.num_classes == 2 and table.ignore_id == 255 and missing == [table.names[1]]
            and stats.ignored > 0):
        return (f"class {missing[0]} has no labelled pixel in {where}: they hold only 0 and 255, and the class table "
                "sets ignore_id: 255, so every 255 pixel is left out of the loss and the model never learns "
                f"{missing[0]}; {masks_0_255_fix(table)}")
    what = f"class {missing[0]} has" if len(missing) == 1 else f"classes {', '.join(missing)} have"
    return (f"{what} no labelled pixel in {where}: the model cannot learn "
            f"{'it' if len(missing) == 1 else 'them'}; check that the labels hold "
            f"{'its id' if len(missing) == 1 else 'their ids'} ({', '.join(str(table.names.index(n)) for n in missing)})")
