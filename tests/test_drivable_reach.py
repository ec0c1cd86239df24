"""The drivable area the car can reach: ``--drivable-reach ego`` (the default) keeps only the
drivable pixels joined to the bottom of the frame, through drivable pixels or the car's own hood.

The tiny model's class is its brightness (``tiny_models``): brightness 10 is road, 70 building,
110 vegetation, 250 the ego car's hood, so a painted frame has a known reachable area.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from recording import run_recorded
from tiny_models import expected_class_ids, tiny_metadata, write_brightness_model

from perception.cli import main as cli_main
from perception.contracts import UNKNOWN_CLASS_ID
from perception.masks import EgoReach, MaskBuilder
from perception.synthetic.classes import SYNTHETIC_CLASSES as T

ROAD, BUILDING, SIDEWALK, HOOD = (T.id_of(n) for n in ("road", "building", "sidewalk", "ego_vehicle"))
MODEL_HW = (48, 64)
ROAD_B, BUILDING_B, VEGETATION_B, HOOD_B = 10, 70, 110, 250


def drivable_of(class_map: np.ndarray, reach: str = "ego") -> np.ndarray:
    return MaskBuilder(T, drivable_reach=reach).build(class_map, only={"drivable"})["drivable"] > 0


def test_only_the_drivable_area_joined_to_the_bottom_of_the_frame_is_kept():
    cm = np.full((30, 40), BUILDING, np.uint8)
    cm[20:] = ROAD  # where the car stands
    cm[2:8, 5:15] = ROAD  # a patch no drivable path joins to the car
    cm[10:19, 30] = ROAD  # a strip that reaches the road below only diagonally
    cm[19, 31] = ROAD
    drivable = drivable_of(cm)
    assert drivable[20:].all() and drivable[10:19, 30].all() and drivable[19, 31]  # 8-connected
    assert not drivable[2:8, 5:15].any()
    assert drivable.sum() == 10 * 40 + 9 + 1
    # --drivable-reach all: every pixel of the drivable classes, the class map itself unchanged.
    np.testing.assert_array_equal(drivable_of(cm, "all"), cm == ROAD)
    masks = MaskBuilder(T).build(cm)
    assert (masks["class_map"][2:8, 5:15] == ROAD).all()


def test_the_hood_joins_the_road_to_the_car_and_unknown_pixels_do_not():
    cm = np.full((30, 40), BUILDING, np.uint8)
    cm[25:, 8:32] = HOOD  # the car's own hood along the bottom edge, building beside it
    cm[15:25, 10:30] = ROAD  # the road seen over the hood, touching no bottom-row pixel
    cm[3:8] = ROAD  # far road joined to it only through unsure pixels
    cm[8:15, 18:22] = UNKNOWN_CLASS_ID
    drivable = drivable_of(cm)
    assert drivable[15:25, 10:30].all() and not drivable[3:8].any()
    assert not drivable[25:].any()  # the hood joins, it is never drivable itself
    # The same road without the hood reaches nothing: the rows above the band are not the car.
    cm[25:] = BUILDING
    assert not drivable_of(cm).any()


def test_a_frame_whose_road_all_reaches_the_car_is_left_alone():
    cm = np.random.default_rng(0).integers(0, HOOD, (36, 48), dtype=np.uint8)  # every class but the hood
    cm[-4:] = ROAD
    cm[:, ::2] = ROAD  # every road pixel now reaches the bottom rows through a column of road
    reach = EgoReach(T, T.task_groups["drivable"])
    assert reach.reachable(cm) is None
    np.testing.assert_array_equal(drivable_of(cm), np.isin(cm, T.task_ids("drivable")))
    # With no drivable pixel near the car, nothing is reachable.
    cm[-4:] = BUILDING
    cm[:, ::2] = BUILDING
    assert not drivable_of(cm).any()


def painted_frame() -> np.ndarray:
    """Road at the top (rows 0-11), vegetation, a building band, road at the bottom (rows 36-47)."""
    image = np.full((*MODEL_HW, 3), BUILDING_B, np.uint8)
    image[0:12] = ROAD_B
    image[12:20] = VEGETATION_B
    image[36:48] = ROAD_B
    return image


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return write_brightness_model(tmp_path_factory.mktemp("m") / "tiny.onnx", MODEL_HW, metadata=tiny_metadata(MODEL_HW))


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("frames")
    for i in range(3):
        cv2.imwrite(str(root / f"{i:03d}.png"), painted_frame())
    return root


@pytest.mark.parametrize("reach", ["ego", "all", None])
def test_the_node_publishes_the_reachable_drivable_area_and_says_so(tiny_model, frames_dir, reach):
    publisher, final = run_recorded(tiny_model, frames_dir, **({} if reach is None else {"drivable_reach": reach}))
    want_map = expected_class_ids(painted_frame()[None])[0]
    road = want_map == ROAD
    assert road[0:12].all() and road[36:].all() and road.sum() == 24 * 64
    reachable = road.copy()
    if reach != "all":  # the default is ego
        reachable[:12] = False
    assert len(publisher.masks) == 3
    for masks in publisher.masks:
        np.testing.assert_array_equal(masks["class_map"], want_map)  # the classes are untouched
        np.testing.assert_array_equal(masks["drivable"] > 0, reachable)
    assert publisher.info["drivable_reach"] == (reach or "ego")
    # The stats say what the reach left out: half the road pixels of each frame, no frame emptied.
    if reach == "all":
        assert final["drivable"] == {"reach": "all"}
    else:
        assert final["drivable"] == {"reach": "ego", "cut": 0.5, "cut_max": 0.5, "emptied": 0.0, "frames": 3}


def test_a_road_that_never_reaches_the_car_is_counted_and_named_once(tiny_model, tmp_path, caplog):
    """A camera that sees the car's hood, with a model that does not know it as ego_vehicle: the
    road joins nothing, the drivable mask stays empty, and the node says why and what to do."""
    image = painted_frame()
    image[36:48] = 200  # the hood, as a model without an ego class might call it (pedestrian here)
    for i in range(32):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), image)
    with caplog.at_level(logging.WARNING, logger="perception.mask_stage"):
        publisher, final = run_recorded(tiny_model, tmp_path)
    assert not any(m["drivable"].any() for m in publisher.masks)
    assert final["drivable"] == {"reach": "ego", "cut": 1.0, "cut_max": 1.0, "emptied": 1.0, "frames": 32}
    warnings = [r.getMessage() for r in caplog.records if "drivable" in r.getMessage()]
    assert len(warnings) == 1 and "30 frames in a row" in warnings[0] and "--drivable-reach all" in warnings[0]


@pytest.fixture(scope="module")
def labelled_dir(tmp_path_factory) -> Path:
    """The painted frame, labelled road at the bottom and sidewalk at the top (the model's top
    road is a false positive), and one frame whose top road is road (missed when cut)."""
    import yaml

    root = tmp_path_factory.mktemp("labelled")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    (root / "classes.yaml").write_text(yaml.safe_dump(T.to_dict()))
    ids = expected_class_ids(painted_frame()[None])[0]
    pavement = ids.copy()
    pavement[0:12] = SIDEWALK
    for name, label in (("000", pavement), ("001", ids)):
        cv2.imwrite(str(root / "images" / f"{name}.png"), painted_frame())
        cv2.imwrite(str(root / "labels" / f"{name}.png"), label)
    return root


def test_eval_scores_the_drivable_area_the_node_publishes(tiny_model, labelled_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    args = ["eval", "--model", str(tiny_model), "--data", f"folder:{labelled_dir}", "--tasks", "drivable",
            "--json", str(out)]
    assert cli_main(args) == 0
    assert "drivable: the area joined to the car" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["drivable_reach"] == "ego"
    ego = doc["tasks"]["drivable"]
    patch = 12 * 64
    # Frame 0: the cut patch was pavement (a false positive gone); frame 1: it was road (now missed).
    assert (ego["true_positive"], ego["false_positive"], ego["false_negative"]) == (2 * patch, 0, patch)
    assert ego["false_negative_by_prediction"] == {"unreachable": patch}
    assert cli_main([*args, "--drivable-reach", "all", "--overwrite"]) == 0  # the figures above, replaced
    every = json.loads(out.read_text())["tasks"]["drivable"]
    assert (every["true_positive"], every["false_positive"], every["false_negative"]) == (3 * patch, patch, 0)
    assert every["false_positive_by_label"] == {"sidewalk": patch}


def test_eval_json_is_strict_and_keeps_names_that_spell_nan(tiny_model, labelled_dir, tmp_path):
    """Classes absent from labels and predictions score NaN; the JSON holds null there, and a path
    that happens to contain "NaN" stays as it is."""
    import shutil

    model = tmp_path / "NaNo.onnx"
    shutil.copy(tiny_model, model)
    data = tmp_path / "NaN data"
    shutil.copytree(labelled_dir, data)
    out = tmp_path / "eval.json"
    assert cli_main(["eval", "--model", str(model), "--data", f"folder:{data}", "--json", str(out)]) == 0

    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    doc = json.loads(out.read_text(), parse_constant=reject)
    assert doc["source"] == str(model) and doc["data"] == f"folder:{data}"
    assert None in doc["per_class_iou"].values()


def test_a_wrong_reach_is_one_line_naming_the_choices(capsys):
    assert cli_main(["run", "--drivable-reach", "bogus", "--max-frames", "1"]) == 2
    err = capsys.readouterr().err
    assert "'bogus' is not one of 'ego', 'all'" in err and "--drivable-reach" in err and "Traceback" not in err
