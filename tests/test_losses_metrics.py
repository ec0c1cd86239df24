"""Losses (ignore id, OHEM minimum, class-weight formulae, importance ordering, aux weights) and metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from perception.contracts import ClassInfo, ClassTable
from perception.datasets import CAMVID_CLASSES
from perception.errors import ConfigError
from perception.metrics import ConfusionMatrix
from perception.training.config import TrainConfig
from perception.training.losses import (
    LOSSES,
    OhemCrossEntropy,
    build_loss,
    enet_weights,
    importance_levels,
    median_frequency_weights,
)

torch.set_num_threads(1)
TABLE = ClassTable(
    classes=(ClassInfo(0, "a", (0, 0, 0)), ClassInfo(1, "b", (1, 1, 1)), ClassInfo(2, "c", (2, 2, 2))),
    ignore_id=255,
)


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 8, 12, generator=g, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 12), generator=g)
    target[:, :2] = 255
    return logits, target


# ---- losses ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_ignores_the_ignore_id(name):
    logits, target = _batch()
    loss = build_loss(TrainConfig(loss=name), class_table=TABLE, ignore_id=255)
    base = loss(logits, target)
    changed = logits.detach().clone()
    changed[:, :, :2] = 100 * torch.randn_like(changed[:, :, :2])  # only ignored pixels change
    assert torch.isfinite(base)
    assert loss(changed, target).item() == pytest.approx(base.item(), rel=1e-5)
    base.backward()
    assert logits.grad[:, :, :2].abs().max() == 0


def test_ce_matches_torch_on_valid_pixels():
    logits, target = _batch()
    loss = build_loss(TrainConfig(loss="ce"), class_table=TABLE, ignore_id=255)
    valid = target != 255
    manual = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], target[valid])
    assert loss(logits, target).item() == pytest.approx(manual.item(), rel=1e-6)


def test_ohem_keeps_at_least_its_minimum():
    logits, target = _batch()
    valid = target != 255
    per_pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none")[valid]
    # Threshold 1.0 -> loss threshold -log(1) = 0: every pixel with any loss is "hard".
    everything = OhemCrossEntropy(ignore_id=255, threshold=1.0)
    assert everything(logits, target).item() == pytest.approx(per_pixel.mean().item(), rel=1e-6)
    # Threshold ~0 -> nothing is hard: the hardest n_min = valid/4 pixels are kept.
    hardest = OhemCrossEntropy(ignore_id=255, threshold=1e-9, min_fraction=0.25)
    n_min = int(valid.sum()) // 4
    expected = per_pixel.topk(n_min).values.mean()
    assert hardest(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert hardest(logits, target) > everything(logits, target)


def test_aux_heads_add_with_their_weight():
    logits, target = _batch()
    aux_logits, _ = _batch(seed=1)
    ce = F.cross_entropy
    loss = build_loss(TrainConfig(loss="ce", aux_weight=0.4), class_table=TABLE, ignore_id=255)
    total = loss({"out": logits, "aux": aux_logits, "aux2": logits}, target)
    expected = ce(logits, target, ignore_index=255) * 1.4 + 0.4 * ce(aux_logits, target, ignore_index=255)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss(logits, target).item() == pytest.approx(ce(logits, target, ignore_index=255).item())


def test_focal_with_gamma_zero_is_ce_and_down_weights_easy_pixels():
    logits, target = _batch()
    ce = F.cross_entropy(logits, target, ignore_index=255)
    focal0 = build_loss(TrainConfig(loss="focal", focal_gamma=0.0), class_table=TABLE, ignore_id=255)
    focal2 = build_loss(TrainConfig(loss="focal", focal_gamma=2.0), class_table=TABLE, ignore_id=255)
    assert focal0(logits, target).item() == pytest.approx(ce.item(), rel=1e-6)
    assert focal2(logits, target) < ce


def test_dice_is_zero_for_a_perfect_prediction():
    _, target = _batch()
    perfect = F.one_hot(target.clamp(0, 2), 3).permute(0, 3, 1, 2).float() * 50
    dice = build_loss(TrainConfig(loss="dice"), class_table=TABLE, ignore_id=255)
    assert dice(perfect, target).item() == pytest.approx(0.0, abs=1e-4)
    assert dice(-perfect, target).item() > 0.9


def test_class_weight_formulae_on_known_frequencies():
    counts = np.array([600, 300, 100, 0])
    p = counts / 1000
    assert enet_weights(counts) == pytest.approx(1 / np.log(1.02 + p))
    assert enet_weights(counts)[2] > enet_weights(counts)[0]  # rarer class, larger weight
    # class 0 in images totalling 1000 px, class 1 in 500 px, class 2 in 200 px, class 3 nowhere
    present = np.array([1000, 500, 200, 0])
    freq = np.array([0.6, 0.6, 0.5])
    expected = np.median(freq) / freq
    assert median_frequency_weights(counts, present)[:3] == pytest.approx(expected)
    assert median_frequency_weights(counts, present)[3] == 0


def test_importance_levels_order_people_over_road_over_buildings_over_sky():
    levels = dict(zip(CAMVID_CLASSES.names, importance_levels(CAMVID_CLASSES), strict=True))
    assert levels["Pedestrian"] == levels["Car"] == levels["Bicyclist"] == 3
    assert levels["Road"] == 2 and levels["Building"] == levels["Tree"] == 1 and levels["Sky"] == 0
    assert importance_levels(CAMVID_CLASSES, {"Pole": 3})[CAMVID_CLASSES.id_of("Pole")] == 3
    with pytest.raises(ConfigError, match="unknown classes"):
        importance_levels(CAMVID_CLASSES, {"Lorry": 3})


def test_ial_weights_mistakes_by_importance():
    table = ClassTable(classes=(ClassInfo(0, "sky", (0, 0, 0)), ClassInfo(1, "car", (1, 1, 1))))
    ial = build_loss(TrainConfig(loss="ial", ial_level_weights=(1.0, 1.5, 2.0, 3.0)), class_table=table, ignore_id=255)
    target = torch.tensor([[[0, 1]]])
    wrong_on_car = torch.tensor([[[[5.0, 5.0]], [[0.0, 0.0]]]])  # predicts sky everywhere
    wrong_on_sky = torch.tensor([[[[0.0, 0.0]], [[5.0, 5.0]]]])  # predicts car everywhere
    # Same per-pixel CE for the single mistake; the one on a car pixel weighs 3 vs 1.
    assert ial(wrong_on_car, target) > ial(wrong_on_sky, target)
    ce = F.cross_entropy(wrong_on_car, target, reduction="none")[0, 0]
    assert ial(wrong_on_car, target).item() == pytest.approx(((1 * ce[0] + 3 * ce[1]) / 4).item(), rel=1e-6)


# ---- metrics --------------------------------------------------------------------------------


def test_confusion_matrix_against_hand_counts():
    target = np.array([[0, 0, 1, 1], [2, 2, 255, 255]], np.uint8)
    prediction = np.array([[0, 1, 1, 1], [2, 0, 2, 0]], np.uint8)
    cm = ConfusionMatrix(4, ignore_id=255)
    cm.update(prediction, target)
    # rows = ground truth, cols = prediction; the two ignored pixels count nowhere
    assert cm.matrix.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    iou = cm.iou()
    assert iou[:3] == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert math.isnan(iou[3])  # no GT and no prediction: left out of the mean (Cityscapes rule)
    assert cm.miou() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert cm.global_accuracy() == pytest.approx(4 / 6)
    assert cm.mean_class_accuracy() == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)


def test_a_class_predicted_but_absent_counts_as_zero_iou():
    cm = ConfusionMatrix(3, ignore_id=255)
    cm.update(np.array([0, 0, 2]), np.array([0, 0, 0]))
    assert cm.iou()[2] == 0.0 and math.isnan(cm.iou()[1])
    assert cm.miou() == pytest.approx((2 / 3 + 0.0) / 2)
    assert math.isnan(cm.class_accuracy()[2])  # no GT pixels: excluded from C


def test_updates_accumulate_and_table_prints_every_class():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 11, (2, 30, 40))
    prediction = rng.integers(0, 11, (2, 30, 40))
    once = ConfusionMatrix(11, ignore_id=255)
    once.update(prediction, target)
    twice = ConfusionMatrix(11, ignore_id=255)
    for p, t in zip(prediction, target, strict=True):
        twice.update(p, t)
    assert np.array_equal(once.matrix, twice.matrix)
    text = once.format_table(CAMVID_CLASSES)
    assert all(name in text for name in CAMVID_CLASSES.names)
    assert f"mIoU {100 * once.miou():.2f} %" in text
    with pytest.raises(ValueError, match="outside"):
        once.update(np.full((2, 2), 11), np.zeros((2, 2), int))


def test_losses_take_checked_keywords_declared_once():
    import dataclasses
    import inspect

    from perception.training.losses import LOSS_OPTIONS

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for name, options in LOSS_OPTIONS.items():
        params = inspect.signature(LOSSES.get(name)).parameters
        assert set(options) <= set(params), name
        assert set(options.values()) <= fields, name
    for name in LOSSES.names():  # no loss swallows unknown keywords any more
        kinds = {p.kind for p in inspect.signature(LOSSES.get(name)).parameters.values()}
        assert inspect.Parameter.VAR_KEYWORD not in kinds, name


def test_class_weights_for_a_loss_without_them_is_a_config_error():
    weights = np.ones(TABLE.num_classes, np.float32)
    with pytest.raises(ConfigError, match="loss 'dice' takes no class weights; set class_weighting: none"):
        build_loss(TrainConfig(loss="dice"), class_table=TABLE, ignore_id=255, class_weights=weights)
    assert build_loss(TrainConfig(loss="focal"), class_table=TABLE, ignore_id=255, class_weights=weights) is not None


def test_lovasz_softmax_equals_the_jaccard_loss_on_hard_predictions():
    """On 0/1 probabilities the Lovász extension is exact: the mean over the classes present of
    1 - IoU, ignored pixels left out; it falls as the prediction improves and carries a gradient."""
    from perception.training.losses import lovasz_softmax

    rng = np.random.default_rng(0)
    target = torch.as_tensor(rng.integers(0, 4, (2, 16, 16)))
    target[0, :2] = 255
    predicted = target.clone()
    flip = torch.as_tensor(rng.random((2, 16, 16)) < 0.3)
    predicted[flip] = torch.as_tensor(rng.integers(0, 4, int(flip.sum())))
    predicted[target == 255] = 0
    logits = torch.nn.functional.one_hot(predicted, 4).permute(0, 3, 1, 2).float() * 100.0
    valid = target != 255
    ious = []
    for c in range(4):
        inter = ((predicted == c) & (target == c) & valid).sum().item()
        union = (((predicted == c) | (target == c)) & valid).sum().item()
        ious.append(inter / union)
    expected = 1.0 - float(np.mean(ious))
    got = lovasz_softmax(logits, target, ignore_id=255)
    assert abs(got.item() - expected) < 1e-4
    perfect = torch.nn.functional.one_hot(target.clamp(max=3), 4).permute(0, 3, 1, 2).float() * 100.0
    assert lovasz_softmax(perfect, target, ignore_id=255).item() < 1e-4 < got.item()
    soft = logits.clone().requires_grad_(True)
    (lovasz_softmax(soft / 100.0, target, ignore_id=255)).backward()
    assert soft.grad is not None and soft.grad.abs().sum() > 0


def test_lovasz_weight_adds_the_term_to_the_configured_loss():
    from perception.training.losses import lovasz_softmax

    table = TABLE
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    plain = build_loss(TrainConfig(loss="ce", aux_weight=0.0), class_table=table, ignore_id=255)
    with_lovasz = build_loss(TrainConfig(loss="ce", aux_weight=0.0, lovasz_weight=0.5), class_table=table, ignore_id=255)
    want = plain(logits, target) + 0.5 * lovasz_softmax(logits[..., ::2, ::2], target[..., ::2, ::2], ignore_id=255)
    assert torch.allclose(with_lovasz({"out": logits}, target), want)


def test_settings_of_another_loss_are_named_not_silently_ignored(caplog):
    with caplog.at_level("WARNING", logger="perception.training.losses"):
        build_loss(TrainConfig(loss="ce", ial_levels={"car": 3}, focal_gamma=1.0), class_table=TABLE, ignore_id=255)
    assert "ial_levels configures the 'ial' loss and changes nothing with loss 'ce'" in caplog.text
    assert "focal_gamma configures the 'focal' loss" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="perception.training.losses"):
        build_loss(TrainConfig(loss="ohem"), class_table=TABLE, ignore_id=255)
    assert caplog.text == ""  # defaults say nothing


def test_soft_skeleton_thins_a_bar_to_a_line_along_its_middle():
    from perception.training.losses import soft_skeleton

    bar = torch.zeros(1, 1, 40, 30)
    bar[..., 5:35, 10:17] = 1.0  # 7 pixels wide, 30 high
    skeleton = soft_skeleton(bar, iterations=5)
    rows = skeleton[0, 0, 12:28]  # away from the bar's ends
    assert (rows > 0.5).sum(1).max() <= 2  # a line of one or two pixels per row, not the bar
    assert (rows[:, 12:15] > 0.5).any(1).all()  # in the middle of the bar on every row
    assert skeleton[..., :, :10].sum() == 0 and skeleton[..., :, 17:].sum() == 0


def test_skeleton_recall_punishes_a_missed_thin_pole_that_cross_entropy_hardly_sees():
    from perception.training.losses import skeleton_recall

    target = torch.zeros(1, 32, 32, dtype=torch.long)
    target[0, 2:30, 15:17] = 1  # a pole two pixels wide: 56 of 960 valid pixels
    target[0, :2, :] = 255  # ignored rows count for neither side
    perfect = torch.nn.functional.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 20.0
    missed = torch.zeros(1, 3, 32, 32)
    missed[:, 0] = 20.0  # everything background
    half = perfect.clone()
    half[0, 1, 16:30] = 0.0
    half[0, 0, 16:30] = 20.0  # the pole's lower half called background
    loss = lambda logits: skeleton_recall(logits, target, (1,), ignore_id=255, iterations=3).item()  # noqa: E731
    assert loss(perfect) < 1e-6
    assert loss(missed) > 0.99
    assert 0.4 < loss(half) < 0.6
    assert skeleton_recall(perfect, target, (2,), ignore_id=255, iterations=3).item() == 0.0  # no class 2 here
    logits = missed.clone().requires_grad_(True)
    skeleton_recall(logits, target, (1,), ignore_id=255, iterations=3).backward()
    assert logits.grad[0, 1, 10, 15] < 0  # raising the pole's logit on the pole lowers the loss
    assert logits.grad[0, 1, 10, 5] == 0  # away from the pole nothing changes


def test_skeleton_weight_adds_the_term_and_names_its_classes():
    from perception.training.losses import skeleton_recall

    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    plain = build_loss(TrainConfig(loss="ce", aux_weight=0.0), class_table=TABLE, ignore_id=255)
    name = TABLE.names[1]
    with_skeleton = build_loss(TrainConfig(loss="ce", aux_weight=0.0, skeleton_weight=0.5, skeleton_classes=[name]),
                               class_table=TABLE, ignore_id=255)
    want = plain(logits, target) + 0.5 * skeleton_recall(logits, target, (1,), ignore_id=255, iterations=5)
    assert torch.allclose(with_skeleton({"out": logits}, target), want)
    with pytest.raises(ConfigError, match="skeleton_classes: 'Lamppost' is not a class of the training data"):
        build_loss(TrainConfig(skeleton_weight=0.5, skeleton_classes=["Lamppost"]), class_table=TABLE, ignore_id=255)
    with pytest.raises(ValueError, match=r"skeleton_weight=0.5 needs skeleton_classes, e.g. \[Pole\]"):
        TrainConfig(skeleton_weight=0.5)
    with pytest.raises(ValueError, match="skeleton_classes is set but skeleton_weight is 0"):
        TrainConfig(skeleton_classes=[name])


def test_boundary_targets_mark_cells_holding_a_class_edge_and_ignore_makes_none():
    from perception.training.losses import boundary_targets
    target = torch.zeros(1, 16, 16, dtype=torch.long)
    target[:, :, 6:8] = 3  # a pole two pixels wide, columns 6-7: edges in columns 5-8
    target[:, :4, :] = 255  # ignored rows: their border with class 0 is no edge
    edge, valid = boundary_targets(target, (4, 4), ignore_id=255)
    want = torch.zeros(4, 4)
    want[1:, 1:3] = 1  # cells of columns 4-7 and 8-11, below the ignored rows
    assert torch.equal(edge[0, 0], want)
    assert valid[0, 0, 0].sum() == 0 and valid[0, 0, 1:].sum() == 12


def test_detail_loss_rewards_the_boundaries_and_weight_adds_it_to_the_configured_loss():
    from perception.training.losses import boundary_targets, detail_loss
    target = torch.zeros(2, 32, 32, dtype=torch.long)
    target[:, :, 10:13] = 1
    edge, _ = boundary_targets(target, (8, 8), ignore_id=255)
    right, blank = edge * 12.0 - 6.0, torch.full((2, 1, 8, 8), -6.0, requires_grad=True)
    assert detail_loss(right, target, ignore_id=255) < 0.05 < 1.0 < detail_loss(blank, target, ignore_id=255)
    detail_loss(blank, target, ignore_id=255).backward()
    assert (blank.grad[edge.bool()] < 0).all()  # pushes the missed boundary cells up
    logits = torch.randn(2, len(TABLE.classes), 32, 32)
    plain = build_loss(TrainConfig(loss="ce", aux_weight=0.0), class_table=TABLE, ignore_id=255)
    config = TrainConfig(loss="ce", aux_weight=0.4, detail_weight=0.5, model_kwargs={"detail": True})
    with_detail = build_loss(config, class_table=TABLE, ignore_id=255)
    # "detail" is not an auxiliary class map: only its own loss sees it.
    got = with_detail({"out": logits, "detail": right}, target)
    assert torch.allclose(got, plain(logits, target) + 0.5 * detail_loss(right, target, ignore_id=255))
    with pytest.raises(ValueError, match="detail_weight=0.5 needs the model's detail head: add detail: true"):
        TrainConfig(detail_weight=0.5)
    with pytest.raises(ValueError, match="detail: true but detail_weight is 0"):
        TrainConfig(model_kwargs={"detail": True})
