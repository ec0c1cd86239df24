"""``perception demo`` end to end with a tiny model: it publishes, listens, and writes a video and a snapshot."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import cv2
from tiny_models import write_brightness_model

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_and_writes_its_files(tmp_path):
    model = write_brightness_model(tmp_path / "tiny.onnx", (48, 64))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    done = subprocess.run(
        [sys.executable, "-m", "perception", "demo", "--model", str(model), "--duration", "3", "--endpoint", endpoint,
         "--out-dir", str(tmp_path / "out"), "--width", "128", "--height", "96", "--fps", "15", "--threads", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert "perception/front/class_map" in done.stdout and " Hz " in done.stdout
    assert f"overlay video: {tmp_path / 'out' / 'demo.mp4'}" in done.stdout
    assert "FPS" in done.stdout and "latency p50" in done.stdout and "dropped" in done.stdout
    # Its own subscriber joins before the first frame and drains what the stop left in flight.
    assert "and 0 published frames missed by the subscriber" in done.stdout, done.stdout
    # Per topic, the missing numbers are split as `listen` splits them: no mask was lost in transport.
    class_map_lines = [ln for ln in done.stdout.splitlines() if "perception/front/class_map" in ln and "missing" in ln]
    assert class_map_lines and all("(lost 0, node " in ln for ln in class_map_lines), done.stdout
    cap = cv2.VideoCapture(str(tmp_path / "out" / "demo.mp4"))
    ok, frame = cap.read()
    assert ok and frame.shape[0] >= 96 and frame.shape[1] > 128
    snapshot = cv2.imread(str(tmp_path / "out" / "demo.png"))
    assert snapshot is not None and snapshot.shape == frame.shape


def test_demo_without_a_model_is_one_clear_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "perception", "demo", "--model", str(tmp_path / "none.onnx"), "--duration", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "none.onnx is missing; pass --model model.onnx" in lines[0]
