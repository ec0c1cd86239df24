"""``perception view --endpoint E --namespace NS --source synthetic`` joining a node that has run a
while (s42 H1, L6): the view read its own copy of the source frame by frame from seq 0 up to the
node's seq before drawing anything, deaf to ``--duration`` and Ctrl-C/SIGTERM meanwhile (28 s for
``--duration 3`` at seq ~1070; minutes for a node up 13 min; 1 frame for ``--duration 6``), and
refused a source of the wrong size only after that catch-up. Now the synthetic world skips ahead
(``SyntheticSource.seek``), any other catch-up ends at a stop or at ``--duration``, and the size is
compared on the first source frame."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from perception import contracts
from perception.errors import ConfigError, SourceError
from perception.options import SourceOptions
from perception.publish import MaskPublisher
from perception.sources import open_source
from perception.sources.synthetic import SyntheticSource
from perception.view import ViewConfig, run_view

NS = "perception/front"
H, W = 48, 64  # the node's frames: the smallest synthetic size
JOIN_SEQ = 5000  # the node's seq when the view joins: 5000 frames to catch up (about 20 s rendered one by one)
REPO = Path(__file__).resolve().parents[1]


def _info() -> dict:
    return {"wire_version": contracts.WIRE_VERSION, "frame_id": "v", "model_id": "node-model", "unknown_id": 255,
            "classes": [{"id": 0, "name": "road", "color_rgb": [128, 64, 128]},
                        {"id": 1, "name": "sky", "color_rgb": [70, 130, 180]}]}


def _class_map(seq: int) -> np.ndarray:
    ids = np.zeros((H, W), np.uint8)
    ids[: H // 2] = 1
    ids[0, 0] = seq % 2
    return ids


class _Node:
    """A publisher standing in for a node that has run a while: its masks start at ``JOIN_SEQ``."""

    def __init__(self) -> None:
        self.pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, sndhwm=1000)
        self.pub.set_info(_info())
        self.seq = JOIN_SEQ

    def send(self) -> None:
        self.pub.publish_masks(seq=self.seq, capture_ns=time.time_ns(), frame_id="v",
                               masks={"class_map": _class_map(self.seq)}, latency_ms={}, model_id="node-model")
        self.seq += 1

    def close(self) -> None:
        self.pub.close()


def _view(node: _Node, tmp_path: Path, *, duration_s: float = 0.0, hw: tuple[int, int] = (H, W),
          stop: threading.Event | None = None, stop_after_s: float | None = None, limit_s: float = 30.0):
    """Run the view in a (daemon) thread while ``node`` publishes at 25 fps; ``stop`` is set
    ``stop_after_s`` after the start. Returns (frames rendered or the exception, seconds it ran,
    seconds from the stop to its end)."""
    config = ViewConfig(endpoint=node.pub.endpoint, namespace=NS, source="synthetic",
                        source_options=SourceOptions(seed=1, width=hw[1], height=hw[0]),
                        out=tmp_path / "frames", duration_s=duration_s)
    result: dict = {}

    def target():
        try:
            result["n"] = run_view(config, stop=stop)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            result["n"] = exc

    viewer = threading.Thread(target=target, daemon=True)  # a view that never ends must not hold pytest
    started = time.monotonic()
    viewer.start()
    stopped = None
    while viewer.is_alive() and time.monotonic() - started < limit_s:
        node.send()
        if stop is not None and stopped is None and time.monotonic() - started >= stop_after_s:
            stop.set()
            stopped = time.monotonic()
        viewer.join(timeout=0.04)
    ran = time.monotonic() - started
    assert not viewer.is_alive(), f"the view still ran after {ran:.1f} s"
    return result.get("n"), ran, (time.monotonic() - stopped if stopped is not None else None)


@pytest.fixture
def node():
    node = _Node()
    yield node
    node.close()


@pytest.fixture
def read_one_by_one(monkeypatch):
    """A source without ``seek`` (as a video file): the catch-up reads every frame."""
    monkeypatch.delattr(SyntheticSource, "seek", raising=False)  # (none before s42)


def test_synthetic_view_of_a_node_far_on_ends_at_its_duration_with_frames(node, tmp_path):
    n, ran, _ = _view(node, tmp_path, duration_s=3.0)
    assert ran < 3.0 + 2.0, ran
    assert isinstance(n, int) and n >= 5, n  # L6: 1 frame for --duration 6


def test_a_catch_up_read_one_by_one_ends_at_duration(node, tmp_path, read_one_by_one):
    n, ran, _ = _view(node, tmp_path, duration_s=2.0)
    assert ran < 2.0 + 2.0, ran
    assert isinstance(n, SourceError) and "--duration ended while --source synthetic was catching up" in str(n), n


def test_a_catch_up_read_one_by_one_ends_at_a_stop(node, tmp_path, read_one_by_one):
    n, _, after_stop = _view(node, tmp_path, stop=threading.Event(), stop_after_s=1.5)
    assert after_stop < 1.0, after_stop
    assert isinstance(n, SourceError) and "stopped before the first frame" in str(n), n


def test_a_source_of_another_size_is_refused_before_catching_up(node, tmp_path, read_one_by_one):
    n, ran, _ = _view(node, tmp_path, duration_s=20.0, hw=(96, 128))
    assert ran < 5.0, ran  # not the ~20 s of reading 5000 frames first
    assert isinstance(n, ConfigError), n
    assert "gives 128x96 frames" in str(n) and "the node's 64x48 frames" in str(n), n


@pytest.mark.parametrize("seed", [1, 4])  # 4: a night in the rain (the render's rain draws)
def test_seek_gives_the_frames_reading_gives(seed):
    reading, seeking = (open_source("synthetic", width=128, height=96, seed=seed) for _ in range(2))
    try:
        reading.pace(None)
        seeking.pace(None)
        frames = [reading.read() for _ in range(41)]
        assert seeking.seek(40)
        got = seeking.read()
        assert got.seq == 40 and np.array_equal(got.image, frames[40].image)
        assert seeking.seek(41) and np.array_equal(seeking.read().image, reading.read().image)  # one frame on too
        assert not seeking.seek(5000, stop=lambda: True) and seeking.frames_read < 5000
    finally:
        reading.close()
        seeking.close()


def test_the_cli_ends_at_once_on_sigterm(node, tmp_path):
    """Through the CLI: SIGTERM ends the view promptly (before: it ran on through the catch-up)."""
    node.seq = 20_000
    view = subprocess.Popen(
        [sys.executable, "-m", "perception", "view", "--endpoint", node.pub.endpoint, "--namespace", NS,
         "--source", "synthetic", "--width", str(W), "--height", str(H), "--out", str(tmp_path / "frames")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "DISPLAY": ""})
    try:
        started = time.monotonic()
        while time.monotonic() - started < 4.0:
            node.send()
            time.sleep(0.04)
        view.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        while view.poll() is None and time.monotonic() - sent < 10:
            node.send()
            time.sleep(0.04)
        assert view.poll() is not None and time.monotonic() - sent < 3.0, "still running after SIGTERM"
        err = view.communicate(timeout=5)[1]
        assert "Traceback" not in err, err
        assert view.returncode == 0, err
    finally:
        if view.poll() is None:
            view.kill()
            view.communicate()
