"""Score a training checkpoint or an exported model on a dataset: ``perception eval``.

``evaluate_engine`` runs an exported model through an ``Engine`` (e.g. ONNX Runtime) exactly as
the node does: each BGR image is letterboxed into the model input by ``perception.preprocess``
(the node's own code), and the uint8 class ids are mapped back to the image with the letterbox's
``to_source`` (padding cut, nearest resize), then to the label size if that differs. It uses
numpy and OpenCV only, so evaluating an ONNX file never imports torch. ``evaluate_checkpoint``
builds the checkpoint's model and scores it exactly as validation during training does (the same
letterbox, logits cropped to the image area and resized bilinearly to the label size); it
imports torch when called.

``evaluate_tasks`` scores any model on any dataset by task (drivable, lane, obstacle, or any named
group): each side's classes are mapped through its own task groups to one binary mask per task,
so a model trained on one class table can be checked on frames labelled with another. With an
``UnknownTally`` (a model with a ``confidence`` output) it scores the masks the node publishes,
where unsure pixels are unknown and in no task, and the same tasks with unknown marking off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from perception.contracts import DEFAULT_DRIVABLE_REACH, DEFAULT_MASK_SIZE, OUTPUT_CONFIDENCE, ClassTable
from perception.datasets import Dataset
from perception.errors import TRAIN_INSTALL_HINT, ConfigError, DataError, DependencyError, ModelError
from perception.masks import EgoReach, UnknownMarker, check_group_classes
from perception.metrics import ConfusionMatrix
from perception.preprocess import Letterbox, Preprocessor


def check_classes(model_table: ClassTable, dataset: Dataset, *, source: str) -> None:
    """DataError unless the model predicts the dataset's classes (same names in the same order)."""
    if model_table.names != dataset.class_table.names:
        raise DataError(
            f"{source} predicts classes {model_table.names}, but dataset {dataset.name!r} labels "
            f"{dataset.class_table.names}; evaluate on the dataset it was trained for, or score it by task "
            "group across the two class tables with 'perception eval --tasks'"
        )


def evaluate_engine(engine, dataset: Dataset, *, on_sample: Callable[[], None] | None = None) -> ConfusionMatrix:
    """Confusion matrix of ``engine`` (``perception.engines.Engine``) over every sample of ``dataset``."""
    check_classes(engine.metadata.class_table, dataset, source=engine.model_path)
    table = dataset.class_table
    cm = ConfusionMatrix(table.num_classes, ignore_id=table.ignore_id)
    for class_ids, label, _ in predict_like_the_node(engine, dataset):
        if class_ids.size and int(class_ids.max()) >= table.num_classes:  # the node publishes these as unknown
            raise ModelError(f"{engine.model_path}: predicts class id {int(class_ids.max())}, outside its class table "
                             f"(0..{table.num_classes - 1}): its metadata does not match its weights; re-export the model")
        cm.update(class_ids, label)
        if on_sample is not None:
            on_sample()
    return cm


def predict_like_the_node(
    engine, dataset: Dataset, *, with_confidence: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """``(class ids, label, confidence)`` at the label's size for every sample, preprocessed as the
    node does; ``confidence`` is None unless ``with_confidence`` (the engine must have it).

    The node's ``Preprocessor`` letterboxes each frame into the engine input; its letterbox maps the
    outputs back to the frame (``to_source``, nearest), and a label of another size gets a nearest
    resize. Both outputs take the same pixel mapping, so marking unknown pixels here equals marking
    them at model scale as the node does and mapping the result.
    """
    for prediction in _node_predictions(engine, dataset, with_confidence=with_confidence):
        yield prediction.class_ids, prediction.label, prediction.confidence


@dataclass
class _NodePrediction:
    """One sample as the node sees it: the engine's outputs at model scale (``model_ids``,
    ``model_confidence``: the whole input, padding included), the letterbox that made it, and the
    outputs mapped to the label's size (``class_ids``, ``confidence``)."""

    label: np.ndarray
    letterbox: Letterbox
    model_ids: np.ndarray
    model_confidence: np.ndarray | None
    class_ids: np.ndarray
    confidence: np.ndarray | None

    def to_label(self, values: np.ndarray) -> np.ndarray:
        """A model-scale array (the whole input) at the label's size, as ``class_ids`` was mapped."""
        return _to_label(self.letterbox.to_source(values), self.label.shape)


def _node_predictions(engine, dataset: Dataset, *, with_confidence: bool) -> Iterator[_NodePrediction]:
    from perception.engines.base import WARMUP_FIX_NO_ENGINE, Engine

    if isinstance(engine, Engine):
        # The node's warm-up check before the first sample: a file whose first inference fails, or
        # whose outputs are not the uint8 1 x H x W its graph declares, is refused with perception
        # run's line (WarmupError, ModelError), never scored (a half-width mask stretched back to the
        # frame read as an mIoU). Its fix names no --engine: eval and export.unknown have none.
        engine.warmup(1, fix=WARMUP_FIX_NO_ENGINE)
    preprocessor = Preprocessor(engine.input_hw)
    for index in range(len(dataset)):
        image, label = dataset[index]
        batch = preprocessor(image)
        outputs = engine.infer(batch)
        letterbox = preprocessor.letterbox
        model_ids = outputs["class_ids"][0]
        model_confidence = outputs[OUTPUT_CONFIDENCE][0] if with_confidence else None
        prediction = _NodePrediction(label, letterbox, model_ids, model_confidence, model_ids, None)
        prediction.class_ids = prediction.to_label(model_ids)
        if model_confidence is not None:
            prediction.confidence = prediction.to_label(model_confidence)
        yield prediction


def _reachable_at_label(reach: EgoReach, model_ids: np.ndarray, prediction: _NodePrediction,
                        mask_size: str) -> np.ndarray | None:
    """``EgoReach.reachable`` of ``model_ids`` (model scale, the whole input) computed where the
    node computes it, then mapped to the label's size: on the letterbox's content at model scale
    (``--mask-size model``, the node's default) or on the class map resized to the camera frame
    (``source``). Which pixels touch depends on the scale, so for a frame smaller than the model
    input the two differ, and the published drivable area with them."""
    letterbox = prediction.letterbox
    if mask_size == "source":
        reachable = reach.reachable(letterbox.to_source(model_ids))
        return None if reachable is None else _to_label(reachable, prediction.label.shape)
    reachable = reach.reachable(letterbox.content(model_ids))
    if reachable is None:
        return None
    sh, sw = letterbox.src_hw
    if reachable.shape != (sh, sw):
        reachable = cv2.resize(reachable, (sw, sh), interpolation=cv2.INTER_NEAREST_EXACT)
    return _to_label(reachable, prediction.label.shape)


def _to_label(values: np.ndarray, label_hw: tuple[int, ...]) -> np.ndarray:
    if values.shape == label_hw:
        return values
    return cv2.resize(values, (label_hw[1], label_hw[0]), interpolation=cv2.INTER_NEAREST_EXACT)


@dataclass
class TaskScore:
    """Pixel counts of one binary task mask against the labels, and the figures made from them."""

    task: str
    model_classes: tuple[str, ...]
    data_classes: tuple[str, ...]
    true_positive: int = 0
    false_positive: int = 0
    false_negative: int = 0
    #: Where the errors are: false positives by the dataset's label there, false negatives by what
    #: the model said there ("unknown" for a marked pixel); class name -> pixels.
    claimed_where: dict[str, int] = field(default_factory=dict)
    missed_as: dict[str, int] = field(default_factory=dict)

    @property
    def iou(self) -> float:
        union = self.true_positive + self.false_positive + self.false_negative
        return self.true_positive / union if union else float("nan")

    @property
    def precision(self) -> float:
        claimed = self.true_positive + self.false_positive
        return self.true_positive / claimed if claimed else float("nan")

    @property
    def recall(self) -> float:
        present = self.true_positive + self.false_negative
        return self.true_positive / present if present else float("nan")

    def to_dict(self) -> dict[str, object]:
        return {
            "model_classes": list(self.model_classes),
            "data_classes": list(self.data_classes),
            "iou": self.iou,
            "precision": self.precision,
            "recall": self.recall,
            "true_positive": self.true_positive,
            "false_positive": self.false_positive,
            "false_negative": self.false_negative,
            "false_positive_by_label": dict(self.claimed_where),
            "false_negative_by_prediction": dict(self.missed_as),
        }

    def add_errors(self, where: dict[str, int], counts: np.ndarray, names: list[str]) -> None:
        """Add a bincount over class ids (``names[i]`` names id i; the rest are ``unknown``) to ``where``."""
        for class_id in np.flatnonzero(counts):
            name = names[class_id] if class_id < len(names) else "unknown"
            where[name] = where.get(name, 0) + int(counts[class_id])


@dataclass
class UnknownTally:
    """Unknown marking in a task evaluation: the marker (threshold), the same tasks scored with
    marking off (``off``, filled by ``evaluate_tasks``), and how many labelled pixels were unknown."""

    marker: UnknownMarker
    off: list[TaskScore] = field(default_factory=list)
    labelled_pixels: int = 0
    unknown_pixels: int = 0

    @property
    def fraction(self) -> float:
        return self.unknown_pixels / self.labelled_pixels if self.labelled_pixels else float("nan")

    def to_dict(self) -> dict[str, object]:
        return {
            "threshold": self.marker.threshold,
            "set_by": self.marker.set_by,
            "enabled": True,
            "fraction": self.fraction,
            "unknown_pixels": self.unknown_pixels,
            "labelled_pixels": self.labelled_pixels,
        }


def resolve_task_groups(
    model_table: ClassTable,
    data_table: ClassTable,
    *,
    tasks: list[str] | None = None,
    model_overrides: dict[str, list[str]] | None = None,
    data_overrides: dict[str, list[str]] | None = None,
    model_name: str = "model",
    data_name: str = "dataset",
) -> list[TaskScore]:
    """One empty ``TaskScore`` per task, with the classes each side maps to it.

    Each side's groups are its class table's ``task_groups``, replaced per task by the overrides.
    ``tasks`` None means every task both sides define. Raises ConfigError for an override naming an
    unknown class, or a requested task one side does not define (naming the flag that adds it).
    """
    model_groups = _groups(model_table, model_overrides or {}, side=model_name, flag="--task")
    data_groups = _groups(data_table, data_overrides or {}, side=data_name, flag="--data-task")
    if tasks is None:
        tasks = [t for t in model_groups if t in data_groups]
        if not tasks:
            raise ConfigError(
                f"{model_name} (tasks {', '.join(model_groups) or 'none'}) and {data_name} (tasks "
                f"{', '.join(data_groups) or 'none'}) share no task; define one with --task / --data-task NAME=CLASS,..."
            )
    scores = []
    for task in tasks:
        for groups, side, flag in ((model_groups, model_name, "--task"), (data_groups, data_name, "--data-task")):
            if task not in groups:
                raise ConfigError(
                    f"task {task!r}: {side} has no such task group (it has: {', '.join(groups) or 'none'}); "
                    f"define it with {flag} {task}=CLASS[,CLASS]"
                )
        scores.append(TaskScore(task, tuple(model_groups[task]), tuple(data_groups[task])))
    return scores


def _groups(table: ClassTable, overrides: dict[str, list[str]], *, side: str, flag: str) -> dict[str, list[str]]:
    groups = {task: list(names) for task, names in table.task_groups.items()}
    for task, names in overrides.items():
        groups[task] = check_group_classes(task, names, table, flag=flag, owner=side)
    return groups


def _lookup(table: ClassTable, names: tuple[str, ...]) -> np.ndarray:
    """A 256-entry table: class id -> True when the class is in ``names``, False for any other id."""
    lut = np.zeros(256, dtype=bool)
    lut[[table.id_of(n) for n in names]] = True
    return lut


def evaluate_tasks(
    engine,
    dataset: Dataset,
    scores: list[TaskScore],
    *,
    unknown: UnknownTally | None = None,
    on_sample: Callable[[], None] | None = None,
    drivable_reach: str = DEFAULT_DRIVABLE_REACH,
    mask_size: str = DEFAULT_MASK_SIZE,
) -> list[TaskScore]:
    """Fill ``scores`` (from ``resolve_task_groups``) over every sample, the node's way.

    Pixels the dataset leaves unlabelled (its ignore id, or any id outside its classes) count for
    no task; every other pixel is a positive or a negative of each task on both sides. With
    ``unknown``, ``scores`` are those of the node's masks (an unknown pixel is in no task: a false
    negative where the label has the task), ``unknown.off`` gets the same tasks without marking,
    and ``unknown`` counts the labelled pixels that were unknown. ``drivable_reach`` ``ego``
    scores the ``drivable`` task as the node publishes it, only the area joined to the car
    (``EgoReach``; a cut pixel the label calls drivable is missed as ``unreachable``), computed at
    the scale the node computes it for ``mask_size`` (``run --mask-size``); ``all`` scores every
    pixel of its classes.
    """
    model_table = engine.metadata.class_table
    data_table = dataset.class_table
    luts = [(_lookup(model_table, s.model_classes), _lookup(data_table, s.data_classes)) for s in scores]
    reaches = [EgoReach(model_table, s.model_classes) if s.task == "drivable" and drivable_reach == "ego" else None
               for s in scores]
    names = (model_table.names, data_table.names)  # ids are 0..n-1 in order (ClassTable checks it)
    if unknown is not None:
        unknown.off = [TaskScore(s.task, s.model_classes, s.data_classes) for s in scores]
    def reachables(model_ids: np.ndarray) -> list[np.ndarray | None]:
        return [None if reach is None else _reachable_at_label(reach, model_ids, prediction, mask_size)
                for reach in reaches]

    for prediction in _node_predictions(engine, dataset, with_confidence=unknown is not None):
        class_ids, model_ids = prediction.class_ids, prediction.model_ids
        label = prediction.label.astype(np.int64, copy=False)
        valid = (label >= 0) & (label < data_table.num_classes)
        label = np.where(valid, label, 0)
        truths = [data_lut[label] & valid for _, data_lut in luts]
        if unknown is not None:
            _count_tasks(unknown.off, luts, reachables(model_ids), truths, class_ids, valid, label=label, names=names)
            # The node marks its own buffer at model scale; here the unmarked ids were just scored.
            # Marking at model scale and mapping equals mapping and marking (the same pixel mapping).
            class_ids = class_ids.copy()
            marks = unknown.marker.apply(class_ids, prediction.confidence)
            if any(reaches):  # what the node's reach sees, at model scale
                model_ids = model_ids.copy()
                unknown.marker.apply(model_ids, prediction.model_confidence)
            unknown.labelled_pixels += int(np.count_nonzero(valid))
            unknown.unknown_pixels += int(np.count_nonzero(valid & (marks != 0)))
        _count_tasks(scores, luts, reachables(model_ids), truths, class_ids, valid, label=label, names=names)
        if on_sample is not None:
            on_sample()
    return scores


def _count_tasks(scores: list[TaskScore], luts, reachables: list[np.ndarray | None], truths: list[np.ndarray],
                 class_ids: np.ndarray, valid: np.ndarray, *, label: np.ndarray,
                 names: tuple[list[str], list[str]]) -> None:
    """Add one sample's true/false positives and false negatives to each task's score, and where
    the errors fell (false positives by label, false negatives by prediction). ``reachables``: per
    task, the 0/255 ego reach at the label's size, or None (nothing cut, or no reach)."""
    model_names, data_names = names
    for score, (model_lut, _), reachable, truth in zip(scores, luts, reachables, truths, strict=True):
        predicted = model_lut[class_ids] & valid  # the 256-entry table maps the unknown id to False
        cut = None
        if reachable is not None:
            cut = predicted & (reachable == 0)
            predicted &= ~cut
        claimed, missed = predicted & ~truth, ~predicted & truth
        score.true_positive += int(np.count_nonzero(predicted & truth))
        score.false_positive += int(np.count_nonzero(claimed))
        score.false_negative += int(np.count_nonzero(missed))
        score.add_errors(score.claimed_where, np.bincount(label[claimed], minlength=1), data_names)
        if cut is not None:
            unreachable = int(np.count_nonzero(missed & cut))
            if unreachable:
                score.missed_as["unreachable"] = score.missed_as.get("unreachable", 0) + unreachable
            missed &= ~cut
        score.add_errors(score.missed_as, np.bincount(class_ids[missed], minlength=1), model_names)


def _shares(where: dict[str, int], total: int, top: int = 4) -> str:
    ranked = sorted(where.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{name} {_percent(n, total)}" for name, n in ranked[:top])
    return text + (f", {len(ranked) - top} more" if len(ranked) > top else "")


def _percent(n: int, total: int) -> str:
    """``12.3 %``; a share under 0.1 % as ``<0.1 %`` (one pixel of millions is not 0.0 %)."""
    share = 100 * n / total
    return f"{share:.1f} %" if share >= 0.1 or not n else "<0.1 %"


def format_task_table(scores: list[TaskScore]) -> str:
    """A plain-text table: task, IoU / precision / recall (%), and the classes of each side."""
    lines = [f"{'task':<10} {'IoU':>6} {'prec':>6} {'recall':>6}  model classes -> dataset classes"]
    for s in scores:
        figures = " ".join(f"{100 * v:6.1f}" if v == v else f"{'-':>6}" for v in (s.iou, s.precision, s.recall))
        lines.append(f"{s.task:<10} {figures}  {','.join(s.model_classes)} -> {','.join(s.data_classes)}")
        if s.false_positive:
            lines.append(f"{'':<10} false positives where the label is: {_shares(s.claimed_where, s.false_positive)}")
        if s.false_negative:
            lines.append(f"{'':<10} false negatives where the model said: {_shares(s.missed_as, s.false_negative)}")
    return "\n".join(lines)


def evaluate_checkpoint(
    path: str | Path, dataset: Dataset, *, device: str = "auto", batch_size: int = 4, workers: int = 2, threads: int = 0
) -> ConfusionMatrix:
    """Confusion matrix of the checkpoint's model over ``dataset`` (ModelError for a bad file).

    ``threads`` > 0 sets torch's CPU threads. DependencyError when torch is not installed.
    """
    try:
        import torch
    except ImportError:
        raise DependencyError(
            f"evaluating a .pt checkpoint needs torch: {TRAIN_INSTALL_HINT} "
            "(or evaluate the exported .onnx with --model, which needs no torch)"
        ) from None

    from perception.training.augment import EvalSamples, collate_eval, ignore_id_of
    from perception.training.checkpoint import build_model_from_checkpoint, load_checkpoint
    from perception.training.distributed import DistInfo, pick_device
    from perception.training.loaders import make_loader
    from perception.training.trainer import score_loader

    if threads > 0:
        torch.set_num_threads(threads)
    ckpt = load_checkpoint(path)
    check_classes(ckpt.class_table, dataset, source=f"checkpoint {path}")
    torch_device = pick_device(device, DistInfo())
    model = build_model_from_checkpoint(ckpt, device=torch_device)
    # make_loader: a file that cannot be read is one line naming it, with workers as without
    loader = make_loader(
        EvalSamples(dataset, ckpt.input_hw), batch_size=batch_size, num_workers=workers, collate_fn=collate_eval
    )
    return score_loader(
        model,
        loader,
        device=torch_device,
        num_classes=ckpt.num_classes,
        ignore_id=ignore_id_of(dataset),
        use_amp=torch_device.type == "cuda",
    )
