"""The shipped default model: present, small, self-describing, accurate on the synthetic world,
and what `perception run` uses when no --model is given."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

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


def test_default_model_segments_unseen_synthetic_scenes():
    engine = load_engine("ort", DEFAULT_MODEL, EngineOptions(threads=1))
    # The val split never overlaps the scenes the model was trained on.
    cm = evaluate_engine(engine, open_dataset("synthetic:count=6,size=288x384", split="val"))
    iou = cm.iou()
    assert iou[SYNTHETIC_CLASSES.id_of("road")] > 0.85
    assert iou[SYNTHETIC_CLASSES.id_of("sky")] > 0.85
    assert iou[SYNTHETIC_CLASSES.id_of("car")] > 0.4
    assert cm.miou() > 0.45


def test_run_without_model_uses_the_default(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, "-m", "perception", "-q", "run", "--source", "synthetic", "--queue", "lossless",
         "--max-frames", "5", "--threads", "1", "--endpoint", f"tcp://127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout.strip().splitlines()[-1])
    assert final["frames_out"] == 5 and final["model_id"] == "bisenetv2-synthetic-288x384-fp32"
