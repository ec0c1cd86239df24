"""Unknown pixels: a model's unsure pixels reach subscribers as class id 255 and in no task mask.

The tiny model's class is its brightness (``tiny_models``) and its confidence the blue value, so a
frame painted here has a known unsure area: rows 0-15 road at confidence 20, rows 16-31 road at
confidence 2, rows 32-47 car at confidence 3 (left half) and 200 (right half). The painted road
does not reach the bottom of the frame (the car is there), so these tests publish and score every
road pixel (``drivable_reach="all"``); ``tests/test_drivable_reach.py`` covers the ego reach.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import recording
from tiny_models import expected_class_ids, expected_confidence, tiny_metadata, write_brightness_model

from perception import contracts
from perception.cli import main as cli_main
from perception.commands.run import add_arguments, load_run_config
from perception.contracts import ClassInfo, ClassTable, unknown_level
from perception.engines import EngineOptions, load_engine
from perception.errors import ConfigError, ModelError
from perception.masks import UnknownMarker
from perception.model_metadata import ModelMetadata
from perception.pipeline import Pipeline
from perception.publish import MaskPublisher
from perception.run_config import RunConfig
from perception.sources import open_source
from perception.subscribe import MaskSubscriber
from perception.synthetic.classes import SYNTHETIC_CLASSES as T

MODEL_HW = (48, 64)
NS = "perception/unknown"
#: In the metadata: level round(255 * 0.03) = 8, so confidences 2 and 3 are unknown, 20 is not.
MODEL_THRESHOLD = 0.03
#: A run-time override: level 26, so the confidence-20 road is unknown too.
FLAG_THRESHOLD = 0.1


def painted_frame() -> np.ndarray:
    image = np.zeros((*MODEL_HW, 3), np.uint8)
    image[0:16] = (20, 0, 0)  # road (brightness 20 -> class 0), confidence 20
    image[16:32] = (2, 0, 0)  # road, confidence 2
    image[32:48, :32] = (3, 0, 200)  # car (brightness 200 -> class 8), confidence 3
    image[32:48, 32:] = (200, 0, 0)  # car, confidence 200
    return image


def expected_map(threshold: float) -> np.ndarray:
    batch = painted_frame()[None]
    ids = expected_class_ids(batch)[0]
    ids[expected_confidence(batch)[0] < unknown_level(threshold)] = contracts.UNKNOWN_CLASS_ID
    return ids


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("frames")
    for i in range(3):
        cv2.imwrite(str(root / f"{i:03d}.png"), painted_frame())
    return root


@pytest.fixture(scope="module")
def confident_model(tmp_path_factory) -> Path:
    meta = tiny_metadata(MODEL_HW, has_confidence=True, unknown_threshold=MODEL_THRESHOLD, unknown_rule="test")
    return write_brightness_model(tmp_path_factory.mktemp("m") / "conf.onnx", MODEL_HW, metadata=meta,
                                  with_confidence=True)


def load(path: Path):
    return load_engine("ort", path, EngineOptions(provider="cpu", threads=1))


def run_recorded(model: Path, frames: Path, **config):
    """``recording.run_recorded``, every road pixel published unless ``config`` says otherwise."""
    return recording.run_recorded(model, frames, **{"drivable_reach": "all", **config})


def test_unsure_pixels_reach_the_subscriber_as_unknown_and_in_no_task_mask(confident_model, frames_dir):
    n = 3
    engine = load(confident_model)
    with (
        MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, sndhwm=10_000) as pub,
        MaskSubscriber(pub.endpoint, namespace=NS) as sub,
    ):
        config = RunConfig.from_settings(source=str(frames_dir), warmup=0, wait_subscribers=1, drivable_reach="all")
        final = Pipeline(config, source=open_source(str(frames_dir)), engine=engine, publisher=pub).run()
        got: dict[str, dict[int, object]] = {}
        deadline = time.monotonic() + 10
        while min(len(got.get(t, {})) for t in [*contracts.MASK_TOPICS, "obstacles"]) < n and time.monotonic() < deadline:
            msg = sub.recv(timeout_s=0.2)
            if msg is not None and msg.topic.rsplit("/", 1)[1] in (*contracts.MASK_TOPICS, "obstacles"):
                got.setdefault(msg.topic.rsplit("/", 1)[1], {})[msg.seq if msg.kind == "mask" else msg.data["seq"]] = msg
        info = sub.info
    engine.close()
    want = expected_map(MODEL_THRESHOLD)
    assert (want == contracts.UNKNOWN_CLASS_ID).sum() == 16 * 64 + 16 * 32  # the painted unsure area
    for seq in range(n):
        class_map = got["class_map"][seq].data
        np.testing.assert_array_equal(class_map, want)
        # No task claims an unknown pixel: drivable is only the sure road, obstacle only the sure car.
        drivable, obstacle, lane = (got[t][seq].data > 0 for t in ("drivable", "obstacle", "lane"))
        np.testing.assert_array_equal(drivable, np.isin(class_map, T.task_ids("drivable")))
        assert drivable[:16].all() and not drivable[16:].any()
        assert obstacle[32:, 32:].all() and not obstacle[:32].any() and not obstacle[:, :32].any()
        assert not lane.any()
        assert [b["area_px"] for b in got["obstacles"][seq].data["blobs"]] == [16 * 32]
    assert info["unknown_id"] == 255 and info["unknown_threshold"] == MODEL_THRESHOLD
    assert final["unknown"] == {"id": 255, "threshold": MODEL_THRESHOLD, "enabled": True, "set_by": "model metadata",
                                "fraction": 0.5, "fraction_max": 0.5, "frames": n}


@pytest.mark.parametrize(("flag", "threshold", "set_by"), [
    (None, MODEL_THRESHOLD, "model metadata"),
    (FLAG_THRESHOLD, FLAG_THRESHOLD, "--unknown-threshold"),
    (0.0, 0.0, None),
])
def test_threshold_from_metadata_flag_overrides_zero_disables(confident_model, frames_dir, flag, threshold, set_by):
    publisher, final = run_recorded(confident_model, frames_dir, unknown_threshold=flag)
    if threshold:
        want = expected_map(threshold)
    else:
        want = expected_class_ids(painted_frame()[None])[0]
    assert len(publisher.masks) == 3
    for masks in publisher.masks:
        np.testing.assert_array_equal(masks["class_map"], want)
        np.testing.assert_array_equal(masks["drivable"] > 0, np.isin(want, T.task_ids("drivable")))
    assert publisher.info["unknown_threshold"] == threshold
    assert final["unknown"]["threshold"] == threshold and final["unknown"]["enabled"] == bool(threshold)
    assert final["unknown"].get("set_by") == set_by
    if flag == FLAG_THRESHOLD:  # the confidence-20 road is unknown too: 5/6 of the frame
        assert final["unknown"]["fraction"] == pytest.approx(5 / 6, abs=1e-5)
        assert not any(m["drivable"].any() for m in publisher.masks)


def test_padding_is_not_counted_as_unknown(confident_model, tmp_path):
    """A letterboxed frame: the padding (black, so confidence 0) is cut off, never counted."""
    cv2.imwrite(str(tmp_path / "wide.png"), np.full((48, 96, 3), (200, 0, 0), np.uint8))  # sure car, 2:1
    publisher, final = run_recorded(confident_model, tmp_path)
    assert publisher.masks[0]["class_map"].shape == (32, 64)
    assert not (publisher.masks[0]["class_map"] == 255).any() and final["unknown"]["fraction"] == 0.0


def test_model_without_confidence_works_as_before_and_says_so_once(tmp_path, frames_dir, caplog):
    plain = write_brightness_model(tmp_path / "plain.onnx", MODEL_HW)
    with caplog.at_level(logging.INFO, logger="perception.masks"):
        publisher, final = run_recorded(plain, frames_dir)
    lines = [r.getMessage() for r in caplog.records if "unknown marking off" in r.getMessage()]
    assert len(lines) == 1 and "no confidence output" in lines[0]
    want = expected_class_ids(painted_frame()[None])[0]
    for masks in publisher.masks:
        np.testing.assert_array_equal(masks["class_map"], want)
    assert final["unknown"] == {"id": 255, "threshold": 0.0, "enabled": False}
    # Asking for a threshold from such a model is one line naming the fix.
    with pytest.raises(ConfigError, match="no confidence output.*--confidence"):
        run_recorded(plain, frames_dir, unknown_threshold=0.5)


def test_confidence_model_without_a_stored_threshold_marks_nothing_until_asked(tmp_path, frames_dir, caplog):
    bare = write_brightness_model(tmp_path / "bare.onnx", MODEL_HW, with_confidence=True)
    with caplog.at_level(logging.INFO, logger="perception.masks"):
        publisher, _ = run_recorded(bare, frames_dir)
    assert any("no unknown_threshold in its metadata" in r.getMessage() for r in caplog.records)
    assert not (publisher.masks[0]["class_map"] == 255).any()
    publisher, _ = run_recorded(bare, frames_dir, unknown_threshold=MODEL_THRESHOLD)
    np.testing.assert_array_equal(publisher.masks[0]["class_map"], expected_map(MODEL_THRESHOLD))


def test_flag_and_yaml_and_cli_errors(tmp_path, frames_dir, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    node_yaml = tmp_path / "node.yaml"
    node_yaml.write_text("unknown_threshold: 0.2\n")
    assert load_run_config(parser.parse_args(["--config", str(node_yaml)])).publish_options.unknown_threshold == 0.2
    args = parser.parse_args(["--config", str(node_yaml), "--unknown-threshold", "0"])
    assert load_run_config(args).publish_options.unknown_threshold == 0.0  # the flag overrides the file
    node_yaml.write_text("unknown_threshold: 1.5\n")
    with pytest.raises(ConfigError, match="unknown_threshold"):
        load_run_config(parser.parse_args(["--config", str(node_yaml)]))
    # Launch files: a pipeline node's parameter becomes the flag, checked by the same parser.
    from perception.launch.flags import parameters_to_argv

    assert parameters_to_argv("run", RunConfig, {"unknown_threshold": 0.2}, "launch.yaml: node front") == ["--unknown-threshold", "0.2"]
    plain = write_brightness_model(tmp_path / "plain.onnx", MODEL_HW)
    code = cli_main(["run", "--model", str(plain), "--source", str(frames_dir), "--unknown-threshold", "0.5",
                     "--endpoint", "tcp://127.0.0.1:*"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("perception: error: --unknown-threshold 0.5: model") and "Traceback" not in "".join(err)


def test_marker_equals_the_plain_numpy_definition():
    rng = np.random.default_rng(0)
    confidence = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    ids = rng.integers(0, 11, (37, 53), dtype=np.uint8)
    for threshold in (0.0, 0.2, 0.5, 1.0):
        want = np.where(confidence < round(255 * threshold), 255, ids)
        got = ids.copy()
        marks = UnknownMarker(threshold).apply(got, confidence)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(marks == 255, want == 255)


def test_metadata_threshold_round_trip_and_limits():
    meta = tiny_metadata(MODEL_HW, has_confidence=True, unknown_threshold=0.4235, unknown_rule="rule text")
    back = ModelMetadata.from_json(meta.to_json())
    assert back.unknown_threshold == 0.4235 and back.unknown_rule == "rule text"
    assert ModelMetadata.from_json(tiny_metadata(MODEL_HW).to_json()).unknown_threshold == 0.0
    doc = json.loads(meta.to_json())
    for bad in (1.5, -0.1, "0.5", True):
        doc["unknown_threshold"] = bad
        with pytest.raises(ModelError, match="unknown_threshold"):
            ModelMetadata.from_json(json.dumps(doc), source="m.onnx")
    with pytest.raises(ValueError, match="reserved for unknown"):
        ClassTable(classes=tuple(ClassInfo(i, f"c{i}", (0, 0, 0)) for i in range(256)))
    assert [unknown_level(t) for t in (0.0, 0.03, 0.1, 1.0)] == [0, 8, 26, 255]


def curves(labelled: dict[int, int], wrong: dict[int, int]):
    from perception.export.unknown import ConfidenceCurves

    hist = [np.zeros(256, np.int64), np.zeros(256, np.int64)]
    for h, counts in zip(hist, (labelled, wrong), strict=True):
        for level, count in counts.items():
            h[level] = count
    return ConfidenceCurves(labelled=hist[0], wrong=hist[1], images=1, data="test", errors="drivable")


def test_rule_takes_the_lowest_threshold_that_halves_wrong_drivable_within_the_budget():
    from perception.export.unknown import choose_threshold

    # 1000 labelled pixels: 10 wrong drivable claims at confidence 100, 10 at 200, the rest sure.
    base = {100: 10, 150: 10, 200: 10, 255: 970}
    choice = choose_threshold(curves(base, {100: 10, 200: 10}))
    # Halving (20 -> 10) first happens at level 101, where 1 % of the pixels are unknown.
    assert (choice.level, choice.wrong_before, choice.wrong_after) == (101, 20, 10)
    assert choice.threshold == round(101 / 255, 4) and unknown_level(choice.threshold) == 101
    assert choice.unknown_share == pytest.approx(0.01) and "halves" in choice.rule
    # The same errors behind 6 % unsure-but-right pixels: halving costs more than the 5 % budget,
    # so the rule stops at the highest level within it.
    choice = choose_threshold(curves({50: 60, 100: 10, 200: 10, 255: 920}, {100: 10, 200: 10}))
    assert choice.level == 50 and choice.unknown_share == 0.0 and choice.wrong_after == 20 and "budget" in choice.rule
    # Nothing claimed wrongly: no threshold at all.
    assert choose_threshold(curves(base, {})).threshold == 0.0


@pytest.fixture(scope="module")
def painted_dataset(tmp_path_factory) -> Path:
    """The painted frame labelled with the classes the tiny model gives it (it is right everywhere)."""
    import yaml

    root = tmp_path_factory.mktemp("painted")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    (root / "classes.yaml").write_text(yaml.safe_dump(T.to_dict()))
    for i in range(2):
        cv2.imwrite(str(root / "images" / f"{i:03d}.png"), painted_frame())
        cv2.imwrite(str(root / "labels" / f"{i:03d}.png"), expected_class_ids(painted_frame()[None])[0])
    return root


def test_eval_scores_tasks_with_unknown_on_and_off(confident_model, painted_dataset, tmp_path, capsys):
    out = tmp_path / "eval.json"
    args = ["eval", "--model", str(confident_model), "--data", f"folder:{painted_dataset}", "--tasks", "drivable,obstacle",
            "--drivable-reach", "all", "--json", str(out)]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "unknown: confidence below 0.03 (model metadata): 50.00 % of the labelled pixels" in printed
    doc = json.loads(out.read_text())
    assert doc["unknown"] == {"threshold": MODEL_THRESHOLD, "set_by": "model metadata", "enabled": True, "fraction": 0.5,
                              "unknown_pixels": 2 * 1536, "labelled_pixels": 2 * 3072}
    drivable, off = doc["tasks"]["drivable"], doc["tasks_unknown_off"]["drivable"]
    # The unsure road (rows 16-31) is unknown: no longer claimed, so a false negative.
    assert (drivable["true_positive"], drivable["false_positive"], drivable["false_negative"]) == (2 * 1024, 0, 2 * 1024)
    assert drivable["false_negative_by_prediction"] == {"unknown": 2 * 1024}  # named as such, not as a class
    assert (off["true_positive"], off["false_positive"], off["false_negative"]) == (2 * 2048, 0, 0)
    assert drivable["precision"] == 1.0 and drivable["recall"] == 0.5 and off["recall"] == 1.0
    assert doc["tasks"]["obstacle"]["true_positive"] == 2 * 512 and doc["tasks_unknown_off"]["obstacle"]["recall"] == 1.0
    # The flag overrides the model's threshold; 0 turns marking off (one table, no off-scores).
    assert cli_main([*args, "--unknown-threshold", "0", "--overwrite"]) == 0  # replacing the figures above
    doc = json.loads(out.read_text())
    assert doc["unknown"] == {"threshold": 0.0, "enabled": False} and "tasks_unknown_off" not in doc
    assert doc["tasks"]["drivable"]["recall"] == 1.0
    assert cli_main([*args, "--unknown-threshold", str(FLAG_THRESHOLD), "--overwrite"]) == 0
    assert json.loads(out.read_text())["unknown"]["fraction"] == pytest.approx(5 / 6)
    capsys.readouterr()
    assert cli_main(["eval", "--model", str(confident_model), "--data", f"folder:{painted_dataset}",
                     "--unknown-threshold", "0.2"]) == 2
    assert "--unknown-threshold applies to the task masks; add --tasks" in capsys.readouterr().err


def test_class_ids_outside_the_models_table_are_published_as_unknown(tmp_path, frames_dir, caplog):
    """A model whose ids outrun its class table (here: the brightness model, 12 ids, with a table
    of 4) must not hand subscribers ids they would look up in that table."""
    table = ClassTable(classes=tuple(ClassInfo(i, n, (i, i, i)) for i, n in enumerate(["road", "lane_marking", "sidewalk", "car"])),
                       task_groups={"drivable": ("road",), "obstacle": ("car",)})
    model = write_brightness_model(tmp_path / "short_table.onnx", MODEL_HW, metadata=tiny_metadata(MODEL_HW, class_table=table))
    with caplog.at_level(logging.WARNING, logger="perception.mask_stage"):
        publisher, final = run_recorded(model, frames_dir)
    raw = expected_class_ids(painted_frame()[None])[0]
    assert raw.max() >= 4  # the painted car's brightness is an id past the table
    assert len(publisher.masks) == 3
    for masks in publisher.masks:
        np.testing.assert_array_equal(masks["class_map"], np.where(raw >= 4, contracts.UNKNOWN_CLASS_ID, raw))
        assert not masks["obstacle"].any()  # the table's car (id 3) is never painted; the ids past it are no car
    assert final["published"] == 3
    warnings = [r.getMessage() for r in caplog.records if "outside its class table" in r.getMessage()]
    assert len(warnings) == 1 and f"up to {raw.max()}," in warnings[0] and "(4 classes)" in warnings[0]


def test_a_threshold_that_rounds_to_level_0_is_refused_not_reported_on(confident_model, frames_dir, capsys):
    """H20 LOW-2: --unknown-threshold 0.001 said "marking on" (info and stats enabled: true) but level 0
    marks no pixel (confidence < 0); only 0 was documented as off. Now one line with both fixes."""
    code = cli_main(["run", "--model", str(confident_model), "--source", str(frames_dir), "--unknown-threshold",
                     "0.001", "--endpoint", "tcp://127.0.0.1:*"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Traceback" not in "".join(err)
    assert err[-1] == ("perception: error: --unknown-threshold 0.001 rounds to confidence level 0 of 255 (the "
                       "confidence output's steps), which marks no pixel; give 0 to turn marking off, or 0.002 or more")
    assert unknown_level(0.002) == 1  # the smallest threshold it names marks
