"""The shipped default model: present, small, self-describing, accurate on the synthetic world,
and what `perception run` uses when no --model is given."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest
from loopback_ports import free_tcp_port

from perception.datasets import open_dataset
from perception.engines import EngineOptions, load_engine
from perception.modelfile import read_model_metadata
from perception.run_config import DEFAULT_MODEL
from perception.synthetic import SYNTHETIC_CLASSES
from perception.training.evaluate import evaluate_engine


def test_default_model_is_shipped_small_and_self_describing():
    assert DEFAULT_MODEL.is_file(), f"{DEFAULT_MODEL} missing; rebuild it with 'make default-model'"
    assert DEFAULT_MODEL.stat().st_size <= 10 * 1024 * 1024
    meta = read_model_metadata(DEFAULT_MODEL)
    assert meta.class_table == SYNTHETIC_CLASSES
    for task in ("drivable", "lane", "obstacle"):
        assert meta.class_table.task_ids(task)
    assert meta.val_metrics["miou"] > 0.5


def test_default_int8_model_is_small_gated_and_matches_the_fp32_file():
    """The shipped INT8 sibling (what --engine auto may choose) passed its mIoU gate, records it,
    and describes the same model as the FP32 file."""
    from perception.modelfile_graph import saturation_safe

    int8 = DEFAULT_MODEL.with_name("default.int8.onnx")
    assert int8.is_file() and int8.stat().st_size <= 5 * 1024 * 1024
    meta, fp32 = read_model_metadata(int8), read_model_metadata(DEFAULT_MODEL)
    assert meta.precision == "int8" and meta.class_table == fp32.class_table and meta.input_hw == fp32.input_hw
    assert meta.has_confidence and meta.unknown_threshold == fp32.unknown_threshold
    gate = meta.val_metrics["int8_gate"]
    assert gate["passed"] is True and gate["drop_points"] <= 0.5 and gate["images"] >= 100
    assert 0.98 < gate["agreement_with_fp32"] <= 1
    # 7-bit weights: the gate holds on CPUs without VNNI too (an AVX2 EPYC loses 0.11 with it, 1.15 without).
    assert gate["saturation_safe"] is True and saturation_safe(onnx.load(str(int8)))


def test_default_model_segments_unseen_synthetic_scenes():
    engine = load_engine("ort", DEFAULT_MODEL, EngineOptions(threads=1))
    # The val split never overlaps the scenes the model was trained on. 40 scenes (2-3 s): with 6,
    # one winter scene (sky seen through bare crowns is labelled vegetation) moved sky IoU by 0.07.
    cm = evaluate_engine(engine, open_dataset("synthetic:count=40,size=360x640", split="val"))
    iou = cm.iou()
    assert iou[SYNTHETIC_CLASSES.id_of("road")] > 0.85
    assert iou[SYNTHETIC_CLASSES.id_of("sky")] > 0.85
    assert iou[SYNTHETIC_CLASSES.id_of("car")] > 0.4
    assert cm.miou() > 0.45


def test_run_without_model_uses_the_default(tmp_path):
    port = free_tcp_port()
    proc = subprocess.run(
        [sys.executable, "-m", "perception", "-q", "run", "--source", "synthetic", "--queue", "lossless",
         "--max-frames", "5", "--threads", "1", "--endpoint", f"tcp://127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout.strip().splitlines()[-1])
    assert final["frames_out"] == 5 and final["model_id"] == read_model_metadata(DEFAULT_MODEL).model_id


@pytest.mark.camvid
@pytest.mark.parametrize(("model", "tolerance"), [
    (DEFAULT_MODEL, 1e-4),
    # INT8 kernels differ between CPUs (VNNI, AMX): a few pixels may change class
    (DEFAULT_MODEL.with_name("default.int8.onnx"), 2e-3),
])
def test_default_model_real_road_check_is_what_it_scores_on_camvid(camvid_dir, model, tolerance):
    """The figures stored in each shipped file's metadata are a fresh evaluation's, not a claim:
    the same frames (CamVid val, never trained on), the same task groups, the node's letterbox."""
    from perception.masks import UnknownMarker
    from perception.training.evaluate import UnknownTally, evaluate_tasks, resolve_task_groups

    check = read_model_metadata(model).real_road_check
    assert check, f"{model} has no real-road check; rebuild it with 'make default-model'"
    assert check["data"].startswith("camvid:") and check["split"] == "val" and check["frames"] == 101
    engine = load_engine("ort", model, EngineOptions(threads=1))
    dataset = open_dataset(f"camvid:{camvid_dir}", split="val")
    tasks = check["tasks"]
    scores = resolve_task_groups(
        engine.metadata.class_table,
        dataset.class_table,
        tasks=list(tasks),
        model_overrides={t: v["model_classes"] for t, v in tasks.items()},
        data_overrides={t: v["data_classes"] for t, v in tasks.items()},
    )
    # The recorded figures are the node's masks: unknown marking at the model's own threshold, and
    # the drivable area the node publishes by default (joined to the car).
    assert check["drivable_reach"] == "ego"
    assert check["unknown"]["threshold"] == engine.metadata.unknown_threshold
    unknown = UnknownTally(UnknownMarker(engine.metadata.unknown_threshold))
    evaluate_tasks(engine, dataset, scores, unknown=unknown, drivable_reach=check["drivable_reach"],
                   mask_size=check.get("mask_size", "model"))
    for score, off in zip(scores, unknown.off, strict=True):
        assert score.iou == pytest.approx(tasks[score.task]["iou"], abs=tolerance), score.task
        assert off.iou == pytest.approx(check["tasks_unknown_off"][off.task]["iou"], abs=tolerance), off.task
    assert unknown.fraction == pytest.approx(check["unknown"]["fraction"], abs=tolerance / 100)
