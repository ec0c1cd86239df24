"""A second training dataset mixed into the first, its labels mapped into the first's classes.

Training a real-road model on its real frames plus rendered scenes of the synthetic world (mapped
class by class: ``road`` -> ``Road``, ``lane_marking`` -> ``Road``, ``sidewalk`` -> ``Pavement``,
...) is the oldest use of synthetic data in segmentation (Richter et al. 2016, "Playing for Data";
Ros et al. 2016, SYNTHIA): the rendered scenes add poles, signs, people and road layouts that a few
hundred real frames of a handful of drives do not have. ``torch.utils.data.ConcatDataset`` would
concatenate, but not remap labels, draw a fixed share, or move through a large rendered pool epoch
by epoch, so this wrapper does those three things.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from perception.contracts import ClassTable
from perception.errors import DataError

log = logging.getLogger(__name__)


def mix_label_lut(mix: ClassTable, primary: ClassTable, classes: Mapping[str, str], *, ignore_id: int,
                  mix_ignore_id: int | None) -> np.ndarray:
    """uint8[256]: a ``mix`` label value -> the ``primary`` class id (by ``classes``) or ``ignore_id``.

    Raises DataError naming a class that is in neither table."""
    mix_names, primary_names = set(mix.names), set(primary.names)
    for name, target in classes.items():
        if name not in mix_names:
            raise DataError(f"mix_classes: {name!r} is not a class of the mixed-in data; its classes: "
                            f"{', '.join(mix.names)}")
        if target not in primary_names:
            raise DataError(f"mix_classes: {name!r} -> {target!r}, which is not a class of the training data; "
                            f"its classes: {', '.join(primary.names)}")
    lut = np.full(256, ignore_id, dtype=np.uint8)
    for name, target in classes.items():
        lut[mix.names.index(name)] = primary.names.index(target)
    left_out = [name for name in mix.names if name not in classes]
    if left_out:
        log.info("mixed-in data: classes %s are ignored in the loss (not in mix_classes)", ", ".join(left_out))
    if mix_ignore_id is not None:
        lut[mix_ignore_id] = ignore_id
    return lut


class MixedDataset(Sequence):
    """``primary``'s samples, then ``extra`` samples of ``mix`` with labels mapped by ``lut``.

    Epoch ``e`` takes mix samples ``e * extra ...`` (wrapping around), so a large pool (the rendered
    world) is walked through rather than its first ``extra`` scenes seen every epoch. ``set_epoch``
    is called before each epoch's DataLoader iterator is made, so the workers see it.
    """

    def __init__(self, primary: Sequence, mix: Sequence, *, extra: int, lut: np.ndarray) -> None:
        if extra < 1:
            raise ValueError(f"extra={extra} must be >= 1")
        if len(mix) == 0:
            raise DataError("the mixed-in data has no samples")
        self.primary = primary
        self.mix = mix
        self.extra = extra
        self.lut = lut
        self.class_table = primary.class_table
        self.name = f"{primary.name} + {extra} of {mix.name}"
        self.epoch = 0

    @classmethod
    def with_share(cls, primary: Sequence, mix: Sequence, *, share: float, lut: np.ndarray) -> MixedDataset:
        """Mix samples making up ``share`` (0 < share < 1) of each epoch's samples."""
        extra = max(1, round(len(primary) * share / (1.0 - share)))
        return cls(primary, mix, extra=extra, lut=lut)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.primary) + self.extra

    def _mix_index(self, index: int) -> int:
        """The pool index of mixed sample ``index`` (>= len(primary)) in this epoch."""
        return (index - len(self.primary) + self.epoch * self.extra) % len(self.mix)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        if index < len(self.primary):
            return self.primary[index]
        image, label = self.mix[self._mix_index(index)]
        return image, self.lut[label]

    def describe(self, index: int) -> str:
        if index < len(self.primary):
            return self.primary.describe(index)
        return self.mix.describe(self._mix_index(index))
