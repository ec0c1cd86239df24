"""Segmentation metrics from a confusion matrix: per-class IoU, mIoU, global and class accuracy.

``ConfusionMatrix(num_classes, ignore_id=255)`` accumulates predictions over a dataset with one
``np.bincount`` per update; pixels whose ground truth is the ignore id (or any value outside the
classes) do not count. mIoU follows the official Cityscapes evaluator: a class with neither ground
truth nor prediction has IoU NaN and is left out of the mean. Numpy only (no torch), so the ONNX
evaluation and the exporter's accuracy gates use the very same numbers as training.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any

import numpy as np

from perception.contracts import ClassTable
from perception.progress import count_of


class ConfusionMatrix:
    """``matrix[t, p]`` counts pixels of ground-truth class ``t`` predicted as class ``p``."""

    def __init__(self, num_classes: int, *, ignore_id: int | None = None) -> None:
        self.num_classes = num_classes
        self.ignore_id = ignore_id
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, prediction: np.ndarray, target: np.ndarray) -> None:
        """Add one prediction / ground-truth pair of class-id arrays of the same shape.

        Raises ValueError when shapes differ; prediction values outside the classes raise too,
        since a model cannot legitimately predict them.
        """
        if prediction.shape != target.shape:
            raise ValueError(f"prediction shape {prediction.shape} != target shape {target.shape}")
        target = target.ravel().astype(np.int64)
        prediction = prediction.ravel().astype(np.int64)
        valid = (target >= 0) & (target < self.num_classes)
        target, prediction = target[valid], prediction[valid]
        if prediction.size and (prediction.min() < 0 or prediction.max() >= self.num_classes):
            raise ValueError(f"prediction holds class ids outside 0..{self.num_classes - 1}")
        self.matrix += np.bincount(
            target * self.num_classes + prediction, minlength=self.num_classes**2
        ).reshape(self.num_classes, self.num_classes)

    def merge(self, other: ConfusionMatrix) -> None:
        self.matrix += other.matrix

    # ---- figures ------------------------------------------------------------------------

    def iou(self) -> np.ndarray:
        """Per-class IoU = TP / (TP + FP + FN); NaN for a class absent from both GT and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        denom = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)

    def class_accuracy(self) -> np.ndarray:
        """Per-class recall TP / GT pixels; NaN for a class with no ground truth."""
        tp = np.diag(self.matrix).astype(np.float64)
        gt = self.matrix.sum(1)
        return np.where(gt > 0, tp / np.maximum(gt, 1), np.nan)

    def miou(self) -> float:
        return _nanmean(self.iou())

    def global_accuracy(self) -> float:
        """G: correctly classified valid pixels over all valid pixels (NaN when there are none)."""
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else math.nan

    def mean_class_accuracy(self) -> float:
        """C: the mean of per-class accuracies over classes that occur in the ground truth."""
        return _nanmean(self.class_accuracy())

    def summary(self, class_table: ClassTable | None = None) -> dict[str, Any]:
        """Plain-float figures (fractions in 0..1) as stored in checkpoints and model metadata."""
        names = class_table.names if class_table else [str(i) for i in range(self.num_classes)]
        return {
            "miou": self.miou(),
            "global_acc": self.global_accuracy(),
            "class_acc": self.mean_class_accuracy(),
            "per_class_iou": {n: float(v) for n, v in zip(names, self.iou(), strict=True)},
            "pixels": int(self.matrix.sum()),
        }

    def format_table(self, class_table: ClassTable) -> str:
        """A per-class IoU / accuracy table with G, C and mIoU underneath, in percent."""
        # Padded by the columns a terminal shows (a CJK character or an emoji takes two), not by len().
        width = max(12, *(display_width(n) for n in class_table.names))
        lines = [f"{'class':<{width}}  {'IoU %':>7}  {'acc %':>7}  {'GT pixels':>11}"]
        gt_pixels = self.matrix.sum(1)
        for name, iou, acc, pixels in zip(
            class_table.names, self.iou(), self.class_accuracy(), gt_pixels, strict=True
        ):
            pad = " " * (width - display_width(name))
            lines.append(f"{name}{pad}  {_pct(iou):>7}  {_pct(acc):>7}  {int(pixels):>11}")
        lines.append(
            f"G (global acc) {_pct(self.global_accuracy())} %   C (class acc) {_pct(self.mean_class_accuracy())} %   "
            f"mIoU {_pct(self.miou())} %"
        )
        return "\n".join(lines)


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: 2 for a wide or fullwidth character (East Asian Width W or
    F: CJK, most emoji), 0 for a combining mark, a variation selector or another format character,
    1 for the rest."""
    columns = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        columns += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return columns


def _nanmean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100.0 * value:.2f}"


def strict_json(value: Any) -> Any:
    """``value`` reduced to what strict JSON holds (numbers, lists, strings, null), for reports and
    metadata that other tools parse.

    NaN and infinities (the IoU of a class absent from labels and predictions) become None:
    ``json.dumps`` would write them as ``NaN``, which JSON parsers other than Python's reject.
    Arrays and tensors (anything with ``tolist``) become lists; other objects their ``str``."""
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (bool, int, float, str)):
        return strict_json(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    return str(value)


def masks_0_255_fix(table) -> str:
    """The fix for 0/255 masks read with a two-class table whose ignore id is 255: every 255 pixel (the
    class-1 pixels) is then left out, never scored or learnt. "" for any other table."""
    if table.num_classes != 2 or table.ignore_id != 255:
        return ""
    return ("for 0/255 masks remove ignore_id from classes.yaml (or set it to another value), so that 255 reads as "
            f"class 1 ({table.names[1]})")


def no_labelled_pixels(spec: str, split: str, dataset) -> str:
    """The one line for a dataset whose labels hold no class id at all: nothing can be scored
    (eval, the INT8 gate and the unknown threshold refuse such data with it)."""
    table = dataset.class_table
    ids = f"class ids 0..{table.num_classes - 1}"
    where = f"{spec} ({split}, {count_of(len(dataset), 'image')})"
    if table.ignore_id is None:
        return f"no label pixel of {where} holds one of its {ids}: nothing to score; check the labels and the class table"
    return (f"every label pixel of {where} is the ignore id {table.ignore_id}: there are no labelled pixels to score; "
            f"check the labels (they should hold {ids}) and the class table's classes and ignore_id")
