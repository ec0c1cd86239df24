"""Segmentation losses, chosen by name, and class weights from label frequencies.

``build_loss(config, class_table, ignore_id, class_weights)`` returns a module computing
``total = main + aux_weight * sum(aux heads)`` on the dict a model returns in train mode.

Registered losses (all skip pixels labelled ``ignore_id``):
- ``ce``: cross-entropy, optionally class-weighted;
- ``ohem``: online hard example mining CE as in BiSeNet's OhemCELoss: keep pixels whose
  probability of the true class is below ``ohem_threshold``, but at least ``ohem_min_fraction`` of
  the valid pixels (the hardest ones);
- ``dice``: 1 - mean soft Dice over classes present in the batch (ground truth or prediction);
- ``focal``: focal loss ``(1 - p_t)^gamma * CE`` (Lin et al. 2017);
- ``ial``: importance-aware loss (Chen et al., IJCAI 2018), see ``ImportanceAwareLoss``.

``lovasz_weight`` > 0 adds the Lovász-softmax loss (``lovasz_softmax``) of the main output to any of
them: a convex surrogate of each class's IoU, which weighted CE over-predicts rare classes against.
``skeleton_weight`` > 0 adds the skeleton recall loss (``skeleton_recall``) of the classes in
``skeleton_classes``: the share of a thin structure's skeleton that the prediction misses.
``detail_weight`` > 0 trains a model's ``"detail"`` output (STDC's detail guidance, ``detail_loss``):
binary cross-entropy plus Dice against the label's class boundaries.

Class weights: ``enet`` w_c = 1 / ln(1.02 + p_c) with p_c the class's share of labelled pixels
(Paszke et al. 2016); ``median_freq`` w_c = median(f) / f_c with f_c = pixels of c / pixels of the
images where c occurs (Eigen & Fergus 2015, used by SegNet).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from perception.contracts import ClassTable
from perception.errors import ConfigError
from perception.registry import Registry
from perception.training.config import TrainConfig

LOSSES: Registry[type[nn.Module]] = Registry("loss")
ENET_C = 1.02
#: ``lovasz_weight``: the Lovász term sees every LOVASZ_STRIDE-th pixel in each direction.
LOVASZ_STRIDE = 2

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Class weights (numpy: computed once from dataset statistics)
# --------------------------------------------------------------------------------------------


def enet_weights(pixel_counts: np.ndarray, *, c: float = ENET_C) -> np.ndarray:
    """w = 1 / ln(c + p) with p each class's share of all labelled pixels."""
    p = pixel_counts / max(int(pixel_counts.sum()), 1)
    return 1.0 / np.log(c + p)


def median_frequency_weights(pixel_counts: np.ndarray, present_pixels: np.ndarray) -> np.ndarray:
    """w = median(f) / f with f = class pixels / pixels of images containing the class.

    Classes never seen get weight 0 (they cannot contribute to the loss anyway).
    """
    seen = present_pixels > 0
    freq = np.zeros(len(pixel_counts), dtype=np.float64)
    freq[seen] = pixel_counts[seen] / present_pixels[seen]
    weights = np.zeros_like(freq)
    nonzero = freq > 0
    weights[nonzero] = np.median(freq[nonzero]) / freq[nonzero]
    return weights


# --------------------------------------------------------------------------------------------
# Losses: each maps (logits N x C x H x W, target N x H x W int64) -> scalar
# --------------------------------------------------------------------------------------------


@LOSSES.register("ce")
class CrossEntropy(nn.Module):
    def __init__(self, *, ignore_id: int, class_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.ignore_id = ignore_id
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=self.ignore_id)


@LOSSES.register("ohem")
class OhemCrossEntropy(nn.Module):
    """Mean CE over pixels with p(true class) < threshold, at least ``min_fraction`` of valid pixels."""

    def __init__(
        self, *, ignore_id: int, class_weights: torch.Tensor | None = None, threshold: float = 0.7,
        min_fraction: float = 1.0 / 16.0,
    ) -> None:
        super().__init__()
        self.ignore_id = ignore_id
        self.loss_threshold = -float(np.log(threshold)) if threshold > 0 else float("inf")
        self.min_fraction = min_fraction
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != self.ignore_id
        n_min = max(1, int(valid.sum().item() * self.min_fraction))
        per_pixel = F.cross_entropy(
            logits, target, weight=self.class_weights, ignore_index=self.ignore_id, reduction="none"
        )[valid]
        if per_pixel.numel() == 0:
            return logits.sum() * 0.0
        hard = per_pixel[per_pixel > self.loss_threshold]
        if hard.numel() < n_min:
            hard, _ = per_pixel.topk(min(n_min, per_pixel.numel()))
        return hard.mean()


@LOSSES.register("dice")
class DiceLoss(nn.Module):
    def __init__(self, *, ignore_id: int, smooth: float = 1.0) -> None:
        super().__init__()
        self.ignore_id = ignore_id
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[1]
        valid = (target != self.ignore_id).unsqueeze(1)  # N x 1 x H x W
        probs = logits.float().softmax(1) * valid
        one_hot = F.one_hot(target.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2) * valid
        dims = (0, 2, 3)
        intersection = (probs * one_hot).sum(dims)
        cardinality = probs.sum(dims) + one_hot.sum(dims)
        dice = (2 * intersection + self.smooth) / (cardinality + self.smooth)
        present = one_hot.sum(dims) > 0
        return 1.0 - (dice[present].mean() if present.any() else dice.mean())


@LOSSES.register("focal")
class FocalLoss(nn.Module):
    def __init__(self, *, ignore_id: int, class_weights: torch.Tensor | None = None, gamma: float = 2.0) -> None:
        super().__init__()
        self.ignore_id = ignore_id
        self.gamma = gamma
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != self.ignore_id
        ce = F.cross_entropy(logits, target, ignore_index=self.ignore_id, reduction="none")
        p_true = torch.exp(-ce)
        loss = (1.0 - p_true).pow(self.gamma) * ce
        if self.class_weights is not None:
            loss = loss * self.class_weights[target.clamp(0, len(self.class_weights) - 1)]
        return loss[valid].sum() / valid.sum().clamp(min=1)


#: Importance levels of the IAL by class-name keyword (lower-cased, '_'/' ' ignored):
#: 3 vehicles and people, 2 the road surface, 0 sky, and 1 everything else (buildings, vegetation...).
IMPORTANCE_KEYWORDS = {
    3: ("car", "truck", "bus", "train", "motorcycle", "bicycle", "bicyclist", "cyclist", "person", "pedestrian", "rider"),
    2: ("road", "lanemarking", "lane"),
    0: ("sky",),
}


def importance_levels(class_table: ClassTable, overrides: dict[str, int] | None = None) -> list[int]:
    """Importance level 0..3 of every class (keywords above, then ``overrides`` by class name)."""
    overrides = overrides or {}
    unknown = [n for n in overrides if n not in class_table.names]
    if unknown:
        raise ConfigError(f"ial_levels names unknown classes {unknown}; known: {', '.join(class_table.names)}")
    levels = []
    for name in class_table.names:
        key = name.lower().replace("_", "").replace(" ", "")
        level = next((lv for lv, words in IMPORTANCE_KEYWORDS.items() if key in words), 1)
        levels.append(overrides.get(name, level))
    return levels


@LOSSES.register("ial")
class ImportanceAwareLoss(nn.Module):
    """Importance-aware loss: CE weighted by the safety importance of each pixel's true class.

    Classes sit in importance levels (vehicles and people > road > buildings, vegetation and the
    rest > sky); level l has weight W_l (``ial_level_weights``, increasing). With g(y) the level of
    ground-truth class y and p_n the softmax output at pixel n over the valid pixels V:

        IAL = sum_{n in V} W_{g(y_n)} * (-log p_n[y_n]) / sum_{n in V} W_{g(y_n)}

    i.e. group-wise weighted CE normalised by the total weight (PyTorch's weighted-CE convention),
    so mistakes on important classes cost more. Optional class weights multiply W.
    """

    def __init__(
        self,
        *,
        ignore_id: int,
        class_table: ClassTable,
        class_weights: torch.Tensor | None = None,
        level_weights: tuple[float, float, float, float] = (1.0, 1.5, 2.0, 3.0),
        levels: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.ignore_id = ignore_id
        weights = torch.tensor([level_weights[lv] for lv in importance_levels(class_table, levels)], dtype=torch.float32)
        if class_weights is not None:
            weights = weights * class_weights
        self.register_buffer("pixel_weights", weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, weight=self.pixel_weights, ignore_index=self.ignore_id)


def lovasz_softmax(logits: torch.Tensor, target: torch.Tensor, *, ignore_id: int) -> torch.Tensor:
    """The Lovász-softmax loss (Berman, Rannen Triki and Blaschko, CVPR 2018) over the whole batch:
    for each class present in ``target``, the Lovász extension of its Jaccard loss evaluated at the
    pixel errors |1[y = c] - p_c|, averaged over those classes.

    Written here because no library this project installs has it (MMSegmentation and
    segmentation_models_pytorch would add a framework for 30 lines); the algorithm is the paper's.
    """
    num_classes = logits.shape[1]
    probs = logits.float().softmax(1).permute(0, 2, 3, 1).reshape(-1, num_classes)
    labels = target.reshape(-1)
    valid = labels != ignore_id
    probs, labels = probs[valid], labels[valid]
    losses = []
    for c in labels.unique().tolist():
        foreground = (labels == c).float()
        errors = (foreground - probs[:, c]).abs()
        errors_sorted, order = errors.sort(descending=True)
        fg_sorted = foreground[order]
        # Gradient of the Lovász extension of the Jaccard loss along the sorted errors (paper, Alg. 1).
        total = fg_sorted.sum()
        intersection = total - fg_sorted.cumsum(0)
        union = total + (1.0 - fg_sorted).cumsum(0)
        jaccard = 1.0 - intersection / union
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append(torch.dot(errors_sorted, jaccard))
    if not losses:
        return logits.sum() * 0.0
    return torch.stack(losses).mean()


def _extreme3(x: torch.Tensor, dim: int, pick) -> torch.Tensor:
    # min or max over each pixel and its two neighbours along ``dim`` (-2: rows, -1: columns) of maps
    # in [0, 1], padded with the value that loses (1 for the min, 0 for the max) as max_pool2d's
    # padding does; elementwise on shifted views: 10x faster on a CPU than max_pool2d's kernel.
    pad = (0, 0, 1, 1) if dim == -2 else (1, 1, 0, 0)
    p = F.pad(x, pad, value=1.0 if pick is torch.minimum else 0.0)
    n = p.shape[dim]
    return pick(pick(p.narrow(dim, 0, n - 2), p.narrow(dim, 1, n - 2)), p.narrow(dim, 2, n - 2))


def _soft_erode(x: torch.Tensor) -> torch.Tensor:
    # The minimum over a plus-shaped 3x3 neighbourhood (clDice's 2D erosion).
    return torch.minimum(_extreme3(x, -2, torch.minimum), _extreme3(x, -1, torch.minimum))


def _dilate(x: torch.Tensor) -> torch.Tensor:
    # The maximum over the full 3x3 neighbourhood.
    return _extreme3(_extreme3(x, -2, torch.maximum), -1, torch.maximum)


def _soft_open(x: torch.Tensor) -> torch.Tensor:
    return _dilate(_soft_erode(x))


def soft_skeleton(x: torch.Tensor, iterations: int) -> torch.Tensor:
    """The soft skeleton of N x C x H x W maps in [0, 1] (Shit et al. 2021, Alg. 1): what each of
    ``iterations`` erosions removes that an opening would not restore, accumulated. On a binary
    mask it is the morphological skeleton of objects up to 2 x ``iterations`` + 1 pixels wide."""
    skeleton = F.relu(x - _soft_open(x))
    for _ in range(iterations):
        x = _soft_erode(x)
        delta = F.relu(x - _soft_open(x))
        skeleton = skeleton + F.relu(delta - skeleton * delta)
    return skeleton


def skeleton_recall(logits: torch.Tensor, target: torch.Tensor, class_ids: tuple[int, ...], *, ignore_id: int,
                    iterations: int) -> torch.Tensor:
    """Mean over ``class_ids`` of the skeleton recall loss (Kirchhoff, Rokuss et al., "Skeleton Recall
    Loss for connectivity conserving and resource efficient segmentation of thin tubular structures",
    ECCV 2024) over the batch: 1 - the share of the label's skeleton, tubed by a 3x3 dilation, that
    the predicted probability covers. A thin pole missed along its length costs as much as a wide
    one, where cross-entropy counts its few pixels. The skeleton comes from the label alone, without
    gradient, so it costs a few elementwise passes: soft-clDice (Shit et al. 2021), which skeletonises
    the prediction too, made a CPU training step half as long again. A class absent from the batch
    adds nothing.

    Written here because no library this project installs has it (the paper's code is an nnU-Net
    fork); the algorithm is the paper's.
    """
    ids = torch.as_tensor(class_ids, device=logits.device)
    with torch.no_grad():
        truth = (target.unsqueeze(1) == ids.view(1, -1, 1, 1)).float()
        tube = _dilate(soft_skeleton(truth, iterations)) * truth
        tube = tube * (target != ignore_id).unsqueeze(1)
        length = tube.sum((0, 2, 3))
    probs = logits.float().softmax(1).index_select(1, ids)
    covered = (tube * probs).sum((0, 2, 3))
    present = length > 0
    if not bool(present.any()):
        return logits.sum() * 0.0
    return (1.0 - covered[present] / length[present]).mean()


def boundary_targets(target: torch.Tensor, size: tuple[int, int], *, ignore_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The label's class boundaries pooled to ``size``, and which of those cells hold labelled pixels.

    A labelled pixel is a boundary pixel when a labelled pixel of its 3x3 neighbourhood has another
    class (an ignored neighbour makes none). A cell of ``size`` is a boundary cell when it holds
    one, as STDC's detail map marks the Laplacian's response at strides 1-4 (here the cell is the
    head's pixel). Returns float N x 1 x h x w maps in {0, 1}: boundaries and valid cells.
    """
    valid = (target != ignore_id).unsqueeze(1)
    labels = target.unsqueeze(1).float()
    big = float(ignore_id) + 1.0
    highest = F.max_pool2d(torch.where(valid, labels, -1.0), 3, stride=1, padding=1)
    lowest = -F.max_pool2d(torch.where(valid, -labels, -big), 3, stride=1, padding=1)
    edge = valid & ((highest != labels) | (lowest != labels))
    return (F.adaptive_max_pool2d(edge.float(), size), F.adaptive_max_pool2d(valid.float(), size))


def detail_loss(logits: torch.Tensor, target: torch.Tensor, *, ignore_id: int) -> torch.Tensor:
    """STDC's detail loss (Fan et al., "Rethinking BiSeNet For Real-time Semantic Segmentation",
    CVPR 2021): binary cross-entropy plus Dice between a detail head's N x 1 x h x w logits and the
    label's class boundaries at that resolution (``boundary_targets``), over cells with labelled
    pixels. Dice balances the few boundary cells against the many others, as in the paper."""
    edge, valid = boundary_targets(target, tuple(logits.shape[-2:]), ignore_id=ignore_id)
    logits = logits.float()
    cells = valid.sum().clamp_min(1.0)
    bce = (F.binary_cross_entropy_with_logits(logits, edge, reduction="none") * valid).sum() / cells
    probs = logits.sigmoid() * valid
    overlap = (probs * edge).sum((1, 2, 3))
    dice = 1.0 - (2.0 * overlap + 1.0) / (probs.sum((1, 2, 3)) + edge.sum((1, 2, 3)) + 1.0)
    return bce + dice.mean()


class SegmentationLoss(nn.Module):
    """``main(out) + aux_weight * sum(main(aux_k)) + lovasz_weight * lovasz_softmax(out)
    + skeleton_weight * skeleton_recall(out) + detail_weight * detail_loss(detail)`` over a
    model's train-mode output dict."""

    def __init__(self, criterion: nn.Module, *, aux_weight: float, lovasz_weight: float = 0.0,
                 ignore_id: int = 255, skeleton_weight: float = 0.0, skeleton_ids: tuple[int, ...] = (),
                 skeleton_iterations: int = 5, detail_weight: float = 0.0) -> None:
        super().__init__()
        self.criterion = criterion
        self.aux_weight = aux_weight
        self.lovasz_weight = lovasz_weight
        self.ignore_id = ignore_id
        self.skeleton_weight = skeleton_weight if skeleton_ids else 0.0
        self.skeleton_ids = skeleton_ids
        self.skeleton_iterations = skeleton_iterations
        self.detail_weight = detail_weight

    def forward(self, outputs: dict[str, torch.Tensor] | torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        main = outputs if isinstance(outputs, torch.Tensor) else outputs["out"]
        total = self.criterion(main, target)
        if self.lovasz_weight > 0:  # on every 2nd pixel each way: the sort over all of them doubled a CPU step
            sub = (..., slice(None, None, LOVASZ_STRIDE), slice(None, None, LOVASZ_STRIDE))
            total = total + self.lovasz_weight * lovasz_softmax(main[sub], target[sub], ignore_id=self.ignore_id)
        if self.skeleton_weight > 0:
            total = total + self.skeleton_weight * skeleton_recall(main, target, self.skeleton_ids,
                                                                   ignore_id=self.ignore_id,
                                                                   iterations=self.skeleton_iterations)
        if isinstance(outputs, torch.Tensor):
            return total
        for name, logits in outputs.items():
            if name == "detail":
                if self.detail_weight > 0:
                    total = total + self.detail_weight * detail_loss(logits, target, ignore_id=self.ignore_id)
            elif name != "out" and self.aux_weight > 0:
                total = total + self.aux_weight * self.criterion(logits, target)
        return total


#: TrainConfig fields that configure each loss, by the loss's keyword: declared once, here.
LOSS_OPTIONS: dict[str, dict[str, str]] = {
    "ohem": {"threshold": "ohem_threshold", "min_fraction": "ohem_min_fraction"},
    "focal": {"gamma": "focal_gamma"},
    "ial": {"level_weights": "ial_level_weights", "levels": "ial_levels"},
}


def build_loss(
    config: TrainConfig, *, class_table: ClassTable, ignore_id: int, class_weights: np.ndarray | None = None
) -> SegmentationLoss:
    """The configured loss with auxiliary-head weighting.

    Each loss takes explicit keywords, checked like a model's ``model_kwargs``: what the trainer
    provides (ignore id, class table, class weights) goes to the losses that take it, and the
    loss's own settings come from the TrainConfig fields in ``LOSS_OPTIONS``.

    Raises:
        ConfigError: an unknown loss name, or class weights for a loss that does not use them.
    """
    loss_class = LOSSES.get(config.loss)
    accepted = set(inspect.signature(loss_class).parameters)
    kwargs: dict[str, object] = {"ignore_id": ignore_id}
    if "class_table" in accepted:
        kwargs["class_table"] = class_table
    if class_weights is not None:
        if "class_weights" not in accepted:
            raise ConfigError(
                f"loss {config.loss!r} takes no class weights; set class_weighting: none, or use a loss that "
                f"does ({', '.join(n for n in LOSSES.names() if 'class_weights' in inspect.signature(LOSSES.get(n)).parameters)})"
            )
        kwargs["class_weights"] = torch.as_tensor(class_weights, dtype=torch.float32)
    for keyword, field_name in LOSS_OPTIONS.get(config.loss, {}).items():
        kwargs[keyword] = getattr(config, field_name)
    _warn_unused_options(config)
    unknown = [name for name in config.skeleton_classes if name not in class_table.names]
    if unknown:
        raise ConfigError(f"skeleton_classes: {unknown[0]!r} is not a class of the training data; its classes: "
                          f"{', '.join(class_table.names)}")
    skeleton_ids = tuple(class_table.names.index(name) for name in config.skeleton_classes)
    return SegmentationLoss(loss_class(**kwargs), aux_weight=config.aux_weight, lovasz_weight=config.lovasz_weight,
                            ignore_id=ignore_id, skeleton_weight=config.skeleton_weight, skeleton_ids=skeleton_ids,
                            skeleton_iterations=config.skeleton_iterations, detail_weight=config.detail_weight)


def _warn_unused_options(config: TrainConfig) -> None:
    """Settings of another loss than the configured one (``ial_levels`` with ``loss: ohem``) change
    nothing: say so once rather than ignore them silently. A warning, not an error, so that a
    recipe's file can switch its loss with ``--set loss=...`` and keep its other keys."""
    defaults = {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
    defaults.update({f.name: f.default_factory() for f in dataclasses.fields(config)
                     if f.default_factory is not dataclasses.MISSING})
    for loss_name, options in LOSS_OPTIONS.items():
        if loss_name == config.loss:
            continue
        unused = [name for name in options.values() if name in defaults and getattr(config, name) != defaults[name]]
        if unused:
            verb = ("configure", "change") if len(unused) > 1 else ("configures", "changes")
            log.warning("%s %s the %r loss and %s nothing with loss %r", ", ".join(unused), verb[0], loss_name,
                        verb[1], config.loss)
