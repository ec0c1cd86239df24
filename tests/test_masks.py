"""Masks and letterboxing: task lookup tables, overrides, missing tasks, blobs, exact inverse mapping."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from perception.contracts import ClassInfo, ClassTable
from perception.errors import ConfigError
from perception.masks import MaskBuilder, label_type, obstacle_blobs
from perception.preprocess import Letterbox, Preprocessor
from perception.synthetic.classes import SYNTHETIC_CLASSES as T


def class_map(seed=0, hw=(40, 60)):
    return np.random.default_rng(seed).integers(0, T.num_classes, hw, dtype=np.uint8)


def test_task_masks_match_the_class_groups():
    cm = class_map()
    masks = MaskBuilder(T, drivable_reach="all").build(cm)  # every drivable pixel (the ego reach: test_drivable_reach)
    assert set(masks) == {"drivable", "lane", "obstacle", "class_map"}
    for task in ("drivable", "lane", "obstacle"):
        ids = T.task_ids(task)
        expected = np.where(np.isin(cm, ids), 255, 0).astype(np.uint8)
        np.testing.assert_array_equal(masks[task], expected)
    assert masks["class_map"] is cm


def test_overrides_and_per_class_masks():
    cm = class_map(1)
    builder = MaskBuilder(T, overrides={"obstacle": ["car", "pedestrian"]}, per_class_obstacles=True)
    assert builder.topics == ["drivable", "lane", "obstacle", "obstacle/car", "obstacle/pedestrian", "class_map"]
    masks = builder.build(cm)
    np.testing.assert_array_equal(masks["obstacle"] > 0, np.isin(cm, [T.id_of("car"), T.id_of("pedestrian")]))
    np.testing.assert_array_equal(masks["obstacle/car"] > 0, cm == T.id_of("car"))
    np.testing.assert_array_equal(masks["obstacle/pedestrian"] > 0, cm == T.id_of("pedestrian"))
    assert set(np.unique(masks["obstacle/car"])) <= {0, 255}
    assert "obstacle/car" not in MaskBuilder(T).topics  # off by default


def test_one_lookup_pass_gives_the_per_mask_lookups():
    """The bit-per-mask table equals one 256-entry lookup per mask, for every byte value (ids the
    model lacks and the unknown id 255 included), beyond eight masks and for a subset."""
    names = [f"c{i}" for i in range(12)]
    table = ClassTable(
        classes=tuple(ClassInfo(i, n, (i, i, i)) for i, n in enumerate(names)),
        task_groups={"drivable": ("c0", "c1"), "lane": ("c2",), "obstacle": tuple(names[3:])},
    )
    builder = MaskBuilder(table, per_class_obstacles=True, drivable_reach="all")
    assert len(builder.luts) == 12  # 3 tasks + 9 per-class masks: two lookup groups
    every_byte = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for cm in (every_byte, np.random.default_rng(3).integers(0, 256, (37, 53), dtype=np.uint8)):
        masks = builder.build(cm)
        assert set(masks) == {*builder.luts, "class_map"}
        for name, lut in builder.luts.items():
            np.testing.assert_array_equal(masks[name], lut[cm], err_msg=name)
        subset = builder.build(cm, only={"lane", "obstacle/c11"})
        assert set(subset) == {"lane", "obstacle/c11", "class_map"}
        np.testing.assert_array_equal(subset["obstacle/c11"], np.where(cm == 11, 255, 0))
    assert set(builder.build(every_byte, only=set())) == {"class_map"}
    np.testing.assert_array_equal(builder.build(np.full((2, 3), 2, np.uint8))["lane"], np.full((2, 3), 255))  # new size
    # A one-pixel map (a 1 x 1 source with --mask-size source): OpenCV takes a 1 x 1 array for a
    # scalar in some calls, which stopped the node's publish stage.
    for value, lane in ((2, 255), (3, 0)):
        masks = builder.build(np.full((1, 1), value, np.uint8))
        assert masks["lane"].shape == (1, 1) and masks["lane"][0, 0] == lane


@pytest.mark.parametrize(
    ("overrides", "match"),
    [({"lane": ["zebra"]}, "has no class 'zebra'.*its classes: road"), ({"sky": ["sky"]}, "unknown task 'sky'")],
)
def test_bad_overrides(overrides, match):
    with pytest.raises(ConfigError, match=match):
        MaskBuilder(T, overrides=overrides)


def test_task_the_model_lacks_is_not_advertised_with_one_warning(caplog):
    table = ClassTable(
        classes=(ClassInfo(0, "road", (1, 1, 1)), ClassInfo(1, "car", (2, 2, 2))),
        task_groups={"drivable": ("road",), "obstacle": ("car",)},
    )
    with caplog.at_level(logging.WARNING, logger="perception.masks"):
        builder = MaskBuilder(table, model="two-class")
    assert builder.topics == ["drivable", "obstacle", "class_map"]
    warnings = [r.message for r in caplog.records]
    assert len(warnings) == 1 and "two-class has no classes for task 'lane'" in warnings[0]
    assert "lane" not in builder.build(np.zeros((4, 4), np.uint8))


def test_obstacle_blobs_class_box_area_centroid():
    cm = np.zeros((30, 40), np.uint8)
    cm[2:8, 3:13] = T.id_of("car")  # 6 x 10 box
    cm[20:28, 30:34] = T.id_of("pedestrian")  # 8 x 4
    cm[20, 30] = T.id_of("car")  # one car pixel on the pedestrian's corner: its own (noise) region
    cm[15, 15] = T.id_of("car")  # a single pixel: noise
    masks = MaskBuilder(T).build(cm)
    blobs = obstacle_blobs(masks["obstacle"], cm, T, min_area_px=4)
    assert [b["class"] for b in blobs] == ["car", "pedestrian"]
    assert blobs[0]["box_xywh"] == [3, 2, 10, 6] and blobs[0]["area_px"] == 60
    assert blobs[0]["centroid_xy"] == [7.5, 4.5]
    assert blobs[1]["box_xywh"] == [30, 20, 4, 8] and blobs[1]["area_px"] == 31  # only its own pixels
    assert obstacle_blobs(np.zeros((5, 5), np.uint8), np.zeros((5, 5), np.uint8), T) == []


def test_touching_obstacles_of_two_classes_are_two_blobs_each_with_its_own_pixels():
    """hunt4c: one region of all obstacle classes together, named by its majority, called 721 car
    and 354 cyclist pixels a 'pedestrian' (area and box included them)."""
    cm = np.zeros((40, 60), np.uint8)
    cm[10:30, 5:35] = T.id_of("car")  # 20 x 30 = 600
    cm[12:32, 35:45] = T.id_of("pedestrian")  # 20 x 10 = 200, touching the car's right side
    blobs = obstacle_blobs(MaskBuilder(T).build(cm)["obstacle"], cm, T)
    assert [(b["class"], b["area_px"], b["box_xywh"]) for b in blobs] == [
        ("car", 600, [5, 10, 30, 20]), ("pedestrian", 200, [35, 12, 10, 20])]
    # At most max_blobs, the largest first, across classes.
    assert [b["class"] for b in obstacle_blobs(MaskBuilder(T).build(cm)["obstacle"], cm, T, max_blobs=1)] == ["car"]


def test_label_type_fits_the_most_components_a_mask_can_have():
    """16-bit labels only where even a checkerboard of isolated pixels cannot overflow them."""
    assert label_type((270, 480)) == cv2.CV_16U
    assert label_type((509, 509)) == cv2.CV_16U  # 255 * 255 components + the background fit in 16 bits
    assert label_type((511, 511)) == cv2.CV_32S  # 256 * 256 + 1 do not
    assert label_type((720, 1280)) == cv2.CV_32S
    worst = np.zeros((9, 11), np.uint8)
    worst[::2, ::2] = 255  # isolated pixels: the most 8-connected components there can be
    count = cv2.connectedComponents(worst, connectivity=8)[0] - 1
    assert count == 5 * 6 == -(-9 // 2) * -(-11 // 2)


@pytest.mark.parametrize("seed", range(4))
def test_obstacle_blobs_with_16_bit_labels_equal_32_bit_ones(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, T.num_classes, (30, 50), dtype=np.uint8)
    cm = np.kron(coarse, np.ones((9, 10), np.uint8))  # 270 x 500 with blocky objects
    cm[rng.random(cm.shape) < 0.02] = T.id_of("car")  # and speckle
    obstacle = MaskBuilder(T).build(cm)["obstacle"]
    assert label_type(obstacle.shape) == cv2.CV_16U
    fast = obstacle_blobs(obstacle, cm, T, min_area_px=1, max_blobs=10_000)
    monkeypatch.setattr("perception.masks.label_type", lambda hw: cv2.CV_32S)
    assert obstacle_blobs(obstacle, cm, T, min_area_px=1, max_blobs=10_000) == fast
    assert len(fast) > 10


def test_letterbox_geometry():
    lb = Letterbox.fit((60, 80), (64, 64))
    assert lb.content_hw == (48, 64) and lb.offset_yx == (8, 0) and lb.padded
    same = Letterbox.fit((120, 160), (48, 64))
    assert same.content_hw == (48, 64) and same.offset_yx == (0, 0) and not same.padded


@pytest.mark.parametrize(("src_hw", "dst_hw"), [((60, 80), (64, 64)), ((50, 100), (40, 40)), ((60, 80), (48, 64))])
def test_letterbox_inverse_mapping_is_exact(src_hw, dst_hw):
    """Labels drawn in blocks that map onto whole model pixels survive the round trip unchanged."""
    lb = Letterbox.fit(src_hw, dst_hw)
    scale = lb.content_hw[0] / src_hw[0]
    block = round(1 / scale * 4) if scale < 1 else 4
    rng = np.random.default_rng(0)
    coarse = rng.integers(1, 11, (src_hw[0] // block + 1, src_hw[1] // block + 1), dtype=np.uint8)
    labels = np.kron(coarse, np.ones((block, block), np.uint8))[: src_hw[0], : src_hw[1]]
    pre = Preprocessor(dst_hw)
    model_view = pre(np.repeat(labels[:, :, None], 3, axis=2))[0, :, :, 0].copy()
    # The padding stays at the pad value and is cut off again on the way back.
    top, left = lb.offset_yx
    assert (model_view[:top] == 0).all() and (model_view[top + lb.content_hw[0] :] == 0).all()
    model_view[:top] = 255
    back = lb.to_source(model_view)
    assert back.shape == src_hw
    np.testing.assert_array_equal(back, labels)


def test_preprocessor_reuses_one_buffer_and_refills_padding_on_size_change():
    pre = Preprocessor((64, 64))
    a = pre(np.full((60, 80, 3), 200, np.uint8))
    assert a[0, 0, 0, 0] == 0 and a[0, 32, 32, 0] == 200
    b = pre(np.full((80, 60, 3), 100, np.uint8))  # portrait: padding moves to the sides
    assert b is a
    assert b[0, 0, 32, 0] == 100 and b[0, 32, 0, 0] == 0


@pytest.mark.parametrize("seed", range(3))
def test_obstacle_blobs_are_each_class_s_own_connected_regions(seed):
    """The blobs equal a plain reference: every obstacle class's 8-connected regions found on its
    own, over the whole frame (the code splits only the regions that mix classes)."""
    rng = np.random.default_rng(seed)
    cm = np.kron(rng.integers(0, T.num_classes, (30, 50), dtype=np.uint8), np.ones((9, 10), np.uint8))
    cm[rng.random(cm.shape) < 0.02] = T.id_of("car")
    obstacle = MaskBuilder(T).build(cm)["obstacle"]
    reference = set()
    for cid in np.unique(cm[obstacle != 0]).tolist():
        n, _, stats, centroids = cv2.connectedComponentsWithStats(((cm == cid) & (obstacle != 0)).view(np.uint8),
                                                                  connectivity=8, ltype=cv2.CV_32S)
        for k in range(1, n):
            x, y, w, h, area = stats[k].tolist()
            reference.add((cid, x, y, w, h, area, round(float(centroids[k][0]), 2), round(float(centroids[k][1]), 2)))
    blobs = obstacle_blobs(obstacle, cm, T, min_area_px=1, max_blobs=100_000)
    assert {(b["class_id"], *b["box_xywh"], b["area_px"], *b["centroid_xy"]) for b in blobs} == reference
    assert len(blobs) == len(reference) > 10
    assert [b["area_px"] for b in blobs] == sorted((b["area_px"] for b in blobs), reverse=True)
