"""The node end to end: real sources, ONNX Runtime, MaskPublisher and a subscriber on loopback.

Lossless runs must deliver every sequence number exactly once with masks equal to the engine's
output for the same frames; latest mode under a slow engine must drop and count; ``perception run``
must stop on SIGTERM with exit 0 and final stats, and turn each user mistake into one line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq
from outpace import wait_for_more_frames
from tiny_models import expected_class_ids, write_brightness_model

from perception import contracts
from perception.cli import main as cli_main
from perception.engines import EngineOptions, load_engine
from perception.engines.base import Engine
from perception.masks import EgoReach
from perception.pipeline import Pipeline, StageError
from perception.preprocess import Preprocessor
from perception.publish import MaskPublisher
from perception.run_config import RunConfig
from perception.sources import open_source
from perception.subscribe import MaskSubscriber
from perception.synthetic.classes import SYNTHETIC_CLASSES as T
from perception.topic_stats import TopicStats

MODEL_HW = (48, 64)
NS = "perception/test"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return write_brightness_model(tmp_path_factory.mktemp("model") / "tiny.onnx", MODEL_HW)


@pytest.fixture
def engine(model_path):
    eng = load_engine("ort", model_path, EngineOptions(provider="cpu", threads=1))
    yield eng
    eng.close()


def write_video(path: Path, n: int, hw=(60, 80)) -> Path:
    rng = np.random.default_rng(7)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (hw[1], hw[0]))
    for _ in range(n):
        writer.write(cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (hw[1], hw[0]),
                                interpolation=cv2.INTER_NEAREST))
    writer.release()
    return path


class Link:
    """A real MaskPublisher on a random loopback port and a subscriber that has joined."""

    def __init__(self):
        self.pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, sndhwm=10_000)
        self.sub = MaskSubscriber(self.pub.endpoint, namespace=NS)
        # ZeroMQ's slow joiner: publish probes until the subscription has reached the publisher.
        for _ in range(100):
            self.pub.publish_json("probe", {})
            msg = self.sub.recv(timeout_s=0.05)
            if msg is not None and msg.topic.endswith("/probe"):
                break
        else:
            raise AssertionError("subscriber never joined")

    def collect(self, want_frames: int, *, timeout_s: float = 10.0) -> dict[str, dict[int, object]]:
        """Messages by topic name and seq, until every mask topic has ``want_frames`` (or the timeout)."""
        got: dict[str, dict[int, object]] = {}
        deadline = time.monotonic() + timeout_s
        while (
            min(len(got.get(t, {})) for t in contracts.MASK_TOPICS) < want_frames and time.monotonic() < deadline
        ):
            msg = self.sub.recv(timeout_s=0.2)
            if msg is None:
                continue
            name = msg.topic.rsplit("/", 1)[1]
            per = got.setdefault(name, {})
            key = msg.seq if msg.kind == "mask" else len(per)
            assert key not in per or msg.kind != "mask", f"seq {key} of {name} arrived twice"
            per[key] = msg
        return got

    def close(self):
        self.sub.close()
        self.pub.close()


@pytest.fixture
def link():
    lk = Link()
    yield lk
    lk.close()


def expected_maps(spec: str, n: int, *, source_size: bool = False, **options) -> list[np.ndarray]:
    """The class maps the model gives for the first ``n`` frames of ``spec`` (read independently)."""
    src = open_source(spec, **options)
    src.pace(None)
    pre = Preprocessor(MODEL_HW)
    maps = []
    for _ in range(n):
        frame = src.read()
        ids = expected_class_ids(pre(frame.image))[0]
        maps.append(pre.letterbox.to_source(ids).copy() if source_size else pre.letterbox.content(ids).copy())
    src.close()
    return maps


def test_lossless_synthetic_every_frame_once_with_exact_masks(engine, link):
    n = 10
    config = RunConfig.from_settings(source="synthetic", queue="lossless", max_frames=n, width=96, height=72, fps=240,
                       seed=5, warmup=1, stats_interval_s=0.05)
    source = open_source("synthetic", config.source_options)
    source.pace(None)
    final = Pipeline(config, source=source, engine=engine, publisher=link.pub).run()
    got = link.collect(n)
    assert sorted(got["class_map"]) == list(range(n))
    for task in ("drivable", "lane", "obstacle"):
        assert sorted(got[task]) == list(range(n))
    expected = expected_maps("synthetic", n, width=96, height=72, fps=240, seed=5)
    for seq in range(n):
        cm = got["class_map"][seq].data
        np.testing.assert_array_equal(cm, expected[seq])
        np.testing.assert_array_equal(got["lane"][seq].data > 0, np.isin(cm, T.task_ids("lane")))
        header = got["class_map"][seq].header
        assert set(header["latency_ms"]) >= {"capture", "queue", "preprocess", "infer", "postprocess", "total",
                                             "encode", "publish"}
        assert header["model_id"] == engine.model_id
    assert final["frames_out"] == n and final["drops"] == 0 and final["end_reason"] == "max frames reached"
    assert set(final["latency_ms"]) >= {"capture", "preprocess", "infer", "postprocess", "publish", "total"}
    assert {"input_fps", "output_fps", "corrupt", "reconnects", "uptime_s", "provider", "model_id"} <= set(final)
    assert got["obstacles"] and all("blobs" in m.data for m in got["obstacles"].values())
    publisher = final["publisher"]
    assert publisher["messages_sent"] >= 5 * n and publisher["bytes_sent"] > 0  # 4 masks + obstacles per frame
    assert publisher["send_errors"] == 0 and publisher["subscriptions"] == 1
    # The run's last stats document comes after its last masks: it ends the stream.
    stats = got.get("stats") or {}
    deadline = time.monotonic() + 10
    while not any(m.data.get("end_reason") for m in stats.values()) and time.monotonic() < deadline:
        msg = link.sub.recv(timeout_s=0.2)
        if msg is not None and msg.topic.endswith("/stats"):
            stats[len(stats)] = msg
    last = stats[len(stats) - 1].data
    assert last["end_reason"] == "max frames reached" and last["frames_out"] == n
    assert set(last["publisher"]) == set(publisher)


def test_per_class_obstacle_masks_on_their_own_topics(engine, link):
    n = 4
    config = RunConfig.from_settings(source="synthetic", queue="lossless", max_frames=n, width=96, height=72, fps=240, seed=3,
                       warmup=0, per_class_obstacles=True, task={"obstacle": ["car", "pedestrian"]})
    source = open_source("synthetic", config.source_options)
    source.pace(None)
    final = Pipeline(config, source=source, engine=engine, publisher=link.pub).run()
    per_class = {f"{NS}/obstacle/car": "car", f"{NS}/obstacle/pedestrian": "pedestrian"}
    got: dict[str, dict[int, object]] = {}
    while min(len(got.get(t, {})) for t in [*per_class, f"{NS}/class_map"]) < n:
        msg = link.sub.recv(timeout_s=10)
        assert msg is not None, f"missing messages: { {t: sorted(v) for t, v in got.items()} }"
        if msg.kind == "mask":
            got.setdefault(msg.topic, {})[msg.seq] = msg
    assert final["masks"] == ["drivable", "lane", "obstacle", "obstacle/car", "obstacle/pedestrian", "class_map"]
    for topic, name in per_class.items():
        for seq in range(n):
            msg = got[topic][seq]
            assert msg.header["values"] == "binary"
            np.testing.assert_array_equal(msg.data > 0, got[f"{NS}/class_map"][seq].data == T.id_of(name))


def test_video_file_to_source_size_until_end_of_file(tmp_path, engine, link):
    n = 12
    video = str(write_video(tmp_path / "clip.avi", n, hw=(60, 100)))  # 5:3 into 4:3: letterboxed
    config = RunConfig.from_settings(source=video, mask_size="source", warmup=1, encoding={"drivable": "bitpack", "class_map": "rle"})
    source = open_source(video)
    pipeline = Pipeline(config, source=source, engine=engine, publisher=link.pub)
    assert pipeline.frames.policy == "lossless"  # the default for files
    final = pipeline.run()
    got = link.collect(n)
    assert sorted(got["class_map"]) == list(range(n))
    expected = expected_maps(video, n, source_size=True)
    for seq in range(n):
        assert got["class_map"][seq].data.shape == (60, 100)
        np.testing.assert_array_equal(got["class_map"][seq].data, expected[seq])
        # The drivable classes, less what no drivable path joins to the bottom of the frame (the
        # default --drivable-reach ego; tests/test_drivable_reach.py checks that rule itself).
        reachable = EgoReach(T, T.task_groups["drivable"]).reachable(expected[seq])
        drivable = np.isin(expected[seq], T.task_ids("drivable")) & (True if reachable is None else reachable > 0)
        np.testing.assert_array_equal(got["drivable"][seq].data > 0, drivable)
    assert final["end_reason"] == "end of input" and final["frames_in"] == final["frames_out"] == n


@pytest.mark.parametrize(("hw", "mask_size"), [
    ((61, 37), "model"),    # portrait, odd sides: padding left and right
    ((45, 101), "model"),   # wider than 4:3, odd sides: padding top and bottom
    ((61, 37), "source"),
])
def test_masks_hold_no_padding_and_say_how_they_map_to_the_frame(tmp_path, engine, link, hw, mask_size):
    """Letterboxed frames: the published masks are the content region only (model scale) or the
    frame size, never the padded model input; each header gives the source size, the region of
    interest (the whole frame) and the binning; obstacle blobs lie inside the mask."""
    n = 3
    rng = np.random.default_rng(3)
    for i in range(n):  # PNG frames: a video codec would round odd sides to even
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
    video = str(tmp_path / "*.png")
    config = RunConfig.from_settings(source=video, mask_size=mask_size, warmup=0)
    Pipeline(config, source=open_source(video), engine=engine, publisher=link.pub).run()
    got = link.collect(n)
    pre = Preprocessor(MODEL_HW)
    pre(np.zeros((*hw, 3), np.uint8))
    content_hw = pre.letterbox.content_hw
    assert pre.letterbox.padded and content_hw != MODEL_HW
    want_hw = content_hw if mask_size == "model" else hw
    expected = expected_maps(video, n, source_size=mask_size == "source")
    for seq in range(n):
        for topic in contracts.MASK_TOPICS:
            msg = got[topic][seq]
            h = msg.header
            assert msg.data.shape == want_hw == (h["height"], h["width"])
            assert (h["source_height"], h["source_width"]) == hw
            assert h["roi"] == {"x_offset": 0, "y_offset": 0, "width": hw[1], "height": hw[0], "do_rectify": False}
            assert h["binning_x"] == pytest.approx(hw[1] / want_hw[1], abs=1e-9)
            assert h["binning_y"] == pytest.approx(hw[0] / want_hw[0], abs=1e-9)
        np.testing.assert_array_equal(got["class_map"][seq].data, expected[seq])
    # The latched info document describes the same geometry, the class table and the encodings.
    info = link.sub.info
    assert info["geometry"]["source_hw"] == list(hw) and info["geometry"]["mask_hw"] == list(want_hw)
    assert info["geometry"]["roi"] == got["lane"][0].header["roi"] and info["mask_size"] == mask_size
    assert [c["name"] for c in info["classes"]] == T.names and info["unknown_id"] == contracts.UNKNOWN_CLASS_ID
    assert info["model_id"] == engine.model_id and len(info["metadata_sha256"]) == 64
    assert info["input_hw"] == list(MODEL_HW) and info["wire_version"] == contracts.WIRE_VERSION
    assert info["topics"][f"{NS}/class_map"]["values"] == "class_ids" and set(info["task_groups"]) >= {"drivable"}
    for doc in (m.data for m in got.get("obstacles", {}).values()):
        assert doc["image_hw"] == list(want_hw)
        for blob in doc["blobs"]:
            x, y, w, h = blob["box_xywh"]
            assert x + w <= want_hw[1] and y + h <= want_hw[0]


def test_atomic_frames_through_the_pipeline(engine):
    n = 5
    with (
        MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, sndhwm=10_000, atomic_frames=True) as pub,
        MaskSubscriber(pub.endpoint, namespace=NS, split_frames=False) as sub,
    ):
        config = RunConfig.from_settings(source="synthetic", queue="lossless", max_frames=n, width=96, height=72, warmup=0,
                           wait_subscribers=1, atomic_frames=True)
        source = open_source("synthetic", config.source_options)
        source.pace(None)
        final = Pipeline(config, source=source, engine=engine, publisher=pub).run()
        frames = {}
        deadline = time.monotonic() + 10
        while len(frames) < n and time.monotonic() < deadline:
            msg = sub.recv(timeout_s=0.2)
            if msg is not None and msg.kind == "frame":
                frames[msg.seq] = msg
        assert sorted(frames) == list(range(n)) and final["frames_out"] == n
        expected = expected_maps("synthetic", n, width=96, height=72, seed=0)
        for seq, frame in frames.items():
            assert set(frame.data) == set(contracts.MASK_TOPICS) and frame.pub_seq == seq
            np.testing.assert_array_equal(frame.data["class_map"].data, expected[seq])
        assert sub.info["topics"][f"{NS}/frame"]["kind"] == "frame"
        # hunt4c: info listed the mask topics as if sent on their own; each now says where it travels.
        assert all(sub.info["topics"][f"{NS}/{name}"]["in"] == f"{NS}/frame" for name in contracts.MASK_TOPICS)


class SlowEngine(Engine):
    """The tiny model, made slower than the source, to force the latest queue to drop."""

    kind = "slow"

    def __init__(self, inner: Engine, delay_s: float, outpaced_by=None) -> None:
        self.inner, self.delay_s, self.outpaced_by = inner, delay_s, outpaced_by
        self.metadata, self.input_spec, self.provider = inner.metadata, inner.input_spec, inner.provider
        self.model_path = inner.model_path

    def infer(self, batch):
        time.sleep(self.delay_s)  # simulated compute time, not synchronisation
        if self.outpaced_by is not None:
            wait_for_more_frames([self.outpaced_by])  # certain drops on a loaded machine too
        return self.inner.infer(batch)

    def close(self):
        pass


def _os_thread_name() -> str:
    return Path("/proc/thread-self/comm").read_text().strip()


@pytest.mark.skipif(not Path("/proc/thread-self/comm").exists(), reason="OS thread names are read from Linux's /proc")
def test_the_node_names_its_threads_for_the_os(engine, link, monkeypatch):
    # top -H and bench pipeline's per-thread CPU then name the stages instead of showing "python".
    # Each stage notes its own thread's OS name when it calls out: reading, inferring, sending.
    config = RunConfig.from_settings(source="synthetic", queue="lossless", max_frames=3, width=96, height=72, fps=240,
                                     warmup=0)
    source = open_source("synthetic", config.source_options)
    names: dict[str, set[str]] = {"read": set(), "infer": set(), "send": set()}

    def noting(kind, call):
        def wrapped(*args, **kwargs):
            names[kind].add(_os_thread_name())
            return call(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(source, "read", noting("read", source.read))
    monkeypatch.setattr(engine, "infer", noting("infer", engine.infer))
    monkeypatch.setattr(link.pub, "publish_masks", noting("send", link.pub.publish_masks))
    # warmed_ms: warmed up already (the check run that --warmup 0 keeps runs in the caller's thread)
    Pipeline(config, source=source, engine=engine, publisher=link.pub, warmed_ms=0.0).run()
    assert names == {"read": {"capture"}, "infer": {"inference"}, "send": {"publish"}}


@pytest.mark.skipif(not Path("/proc/thread-self/comm").exists(), reason="OS thread names are read from Linux's /proc")
def test_an_engine_loaded_beside_the_source_loads_on_a_thread_named_engine(model_path, monkeypatch):
    # The threads an engine starts while it loads (OpenVINO's streams) inherit that name.
    from perception.commands.run import EngineLoader
    from perception.engines import auto as auto_mod

    seen = []

    def fake_load_auto(path, options, **kwargs):
        seen.append(Path("/proc/thread-self/comm").read_text().strip())
        return "the engine"

    monkeypatch.setattr(auto_mod, "cached_selection", lambda *a, **k: None)  # no verdict: loads beside
    monkeypatch.setattr(auto_mod, "load_auto", fake_load_auto)
    loader = EngineLoader(RunConfig.from_settings(source="synthetic", model=str(model_path), engine="auto"))
    assert loader.result() == "the engine" and seen == ["engine"]


def test_latest_queue_drops_and_counts_under_slow_engine(tmp_path, engine, link):
    n = 40
    video = str(write_video(tmp_path / "clip.avi", n))
    config = RunConfig.from_settings(source=video, queue="latest", queue_capacity=1, warmup=0)
    source = open_source(video)
    final = Pipeline(config, source=source, engine=SlowEngine(engine, 0, outpaced_by=source), publisher=link.pub).run()
    got = link.collect(final["frames_out"], timeout_s=5)
    seqs = sorted(got["class_map"])
    assert final["drops"] > 0
    assert final["frames_in"] == n and final["frames_out"] + final["drops"] == n  # every frame accounted for
    assert len(seqs) == final["frames_out"] and seqs[-1] == n - 1  # the newest frame always makes it
    # pub_seq numbers the publications: contiguous where seq has the node's own drops as gaps, and
    # a subscriber's accounting puts those gaps on the node, none on the transport.
    msgs = [got["class_map"][s] for s in seqs]
    assert [m.pub_seq for m in msgs] == list(range(len(msgs)))
    assert seqs != list(range(len(seqs)))
    stats = TopicStats(0.0)
    for m in msgs:
        stats.add(m, 0.0)
    summary = stats.summary(1.0)
    assert summary["lost"] == 0 and summary["node_dropped"] == summary["missing"] == seqs[-1] - seqs[0] + 1 - len(seqs)


def test_wait_subscribers_holds_the_first_frame_until_a_subscriber_joins(tmp_path, engine):
    """No probes, no sleeps: the node must not read a frame before the subscriber has subscribed,
    and then deliver every frame of the file from seq 0."""
    n = 8
    video = str(write_video(tmp_path / "clip.avi", n))
    pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, sndhwm=10_000)
    waiting = threading.Event()
    wait_for_subscribers = pub.wait_for_subscribers

    def spy(count, *, timeout_s):
        waiting.set()
        return wait_for_subscribers(count, timeout_s=timeout_s)

    pub.wait_for_subscribers = spy
    source = open_source(video)
    pipeline = Pipeline(RunConfig.from_settings(source=video, wait_subscribers=1, wait_timeout_s=60, warmup=0),
                        source=source, engine=engine, publisher=pub)
    result = {}
    thread = threading.Thread(target=lambda: result.update(final=pipeline.run()))
    thread.start()
    seqs: dict[str, list[int]] = {}
    try:
        assert waiting.wait(30), "the node never started waiting"
        assert source.frames_read == 0  # held before capture
        with MaskSubscriber(pub.endpoint, namespace=NS) as sub:
            while min(len(seqs.get(t, [])) for t in contracts.MASK_TOPICS) < n:
                msg = sub.recv(timeout_s=10)
                assert msg is not None, f"frames missing: {seqs}"
                if msg.kind == "mask":
                    seqs.setdefault(msg.topic.rsplit("/", 1)[1], []).append(msg.seq)
        thread.join(timeout=30)
    finally:
        pipeline.stop()
        thread.join(timeout=10)
        pub.close()
    assert all(seqs[t] == list(range(n)) for t in contracts.MASK_TOPICS), seqs
    assert result["final"]["frames_out"] == n and result["final"]["end_reason"] == "end of input"


def test_failing_engine_stops_with_stage_error(engine, link):
    class Broken(SlowEngine):
        def infer(self, batch):
            raise RuntimeError("device lost")

    config = RunConfig.from_settings(source="synthetic", width=64, height=48, fps=240, warmup=0, queue="lossless")
    src = open_source("synthetic", config.source_options)
    src.pace(None)
    with pytest.raises(StageError, match="inference stage failed: RuntimeError: device lost"):
        # warmed_ms: its check run passed (--warmup 0 still makes one); the device is lost at the first frame
        Pipeline(config, source=src, engine=Broken(engine, 0), publisher=link.pub, warmed_ms=0.0).run()


# --------------------------------------------------------------------------------------------
# perception run (the command)
# --------------------------------------------------------------------------------------------


def test_cli_run_to_the_end_delivers_every_frame_and_the_final_stats(model_path, free_tcp_port):
    # At the end of its input the node flushes what is queued before closing: the last frames and
    # the summary stats document reach a subscriber that keeps up.
    n = 40
    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    with MaskSubscriber(endpoint, namespace="perception/front", masks=["class_map", "stats"]) as sub:
        proc = subprocess.Popen(
            [sys.executable, "-m", "perception", "-q", "run", "--model", str(model_path), "--source", "synthetic",
             "--width", "96", "--height", "64", "--fps", "240", "--queue", "lossless", "--max-frames", str(n),
             "--threads", "1", "--endpoint", endpoint, "--wait-subscribers", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        seqs, last_stats = set(), None
        deadline = time.monotonic() + 60
        while last_stats is None and time.monotonic() < deadline:
            msg = sub.recv(timeout_s=0.5)
            if msg is None:
                if proc.poll() is not None:
                    break  # ended without a summary: the assertions below say what is missing
                continue
            if msg.kind == "mask":
                seqs.add(msg.seq)
            elif msg.data.get("end_reason"):
                last_stats = msg.data
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert seqs == set(range(n))
    assert last_stats is not None and last_stats["frames_out"] == n
    assert json.loads(out.strip().splitlines()[-1])["frames_out"] == n


def test_sigterm_stops_the_node_with_exit_0_and_final_stats(model_path, free_tcp_port):
    cmd = [sys.executable, "-m", "perception", "run", "--source", "synthetic", "--model", str(model_path),
           "--width", "96", "--height", "72", "--fps", "60", "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}",
           "--threads", "1", "--warmup", "1"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    started = threading.Event()
    err_lines: list[str] = []

    def read_stderr():
        for line in proc.stderr:
            err_lines.append(line)
            if "first masks published" in line:
                started.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert started.wait(60), "node did not publish: " + "".join(err_lines)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)  # past the node's own 20 s stop deadline: that one decides
    finally:
        proc.kill()
    assert proc.returncode == 0, "".join(err_lines)
    final = json.loads(out.strip().splitlines()[-1])
    assert final["end_reason"] == "signal SIGTERM" and final["frames_out"] >= 1
    assert final["startup_to_first_mask_ms"] > 0


def run_cli(argv, capsys) -> tuple[int, list[str]]:
    code = cli_main(["-q", "run", *argv])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory, model_path):
    d = tmp_path_factory.mktemp("bad")
    corrupt = d / "corrupt.onnx"
    corrupt.write_bytes(model_path.read_bytes()[:100])
    from onnx import TensorProto

    return {
        "corrupt": corrupt,
        "bare": write_brightness_model(d / "bare.onnx", MODEL_HW, with_metadata=False),
        "float": write_brightness_model(d / "float.onnx", MODEL_HW, input_dtype=TensorProto.FLOAT),
    }


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--source", "/dev/video42"], "camera /dev/video42 not found"),
        (["--source", "nowhere.mp4"], "video file nowhere.mp4 not found"),
        (["--source", "{text}"], "cannot be read"),
        (["--model", "missing.onnx"], "model file missing.onnx not found"),
        (["--model", "{corrupt}"], "corrupt.onnx is not a readable ONNX file"),
        (["--model", "{bare}"], "bare.onnx has no perception metadata"),
        (["--model", "{float}"], "float.onnx: input 'image' is float32"),
        (["--queue", "newest"], "queue: 'newest' is not one of"),
        (["--threads", "-1"], "threads=-1 is out of range"),
        (["--encoding", "drivable=zip"], "encoding drivable=zip: unknown encoding"),
        (["--encoding", "drivable"], "expected NAME=VALUE"),
        (["--task", "lane=zebra"], "has no class 'zebra'"),
        (["--engine", "onnx"], "engine: 'onnx' is not one of 'ort', 'openvino', 'auto', 'tensorrt', 'torch'"),
        (["--config", "nope.yaml"], "config file nope.yaml not found"),
    ],
)
def test_cli_errors_are_one_line(argv, match, model_path, bad_models, tmp_path, capsys, free_tcp_port):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    argv = [a.format(text=text, **bad_models) for a in argv]
    defaults = {"--model": str(model_path), "--source": "synthetic", "--endpoint": f"tcp://127.0.0.1:{free_tcp_port}"}
    for flag, value in defaults.items():
        if flag not in argv:
            argv += [flag, value]
    code, lines = run_cli(argv + ["--max-frames", "1"], capsys)
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("perception: error: "), lines
    assert match in lines[0]


def test_cli_address_in_use_is_one_line_naming_the_endpoint_and_the_fix(model_path):
    ctx = zmq.Context.instance()
    blocker = ctx.socket(zmq.PUB)
    blocker.linger = 0
    port = blocker.bind_to_random_port("tcp://127.0.0.1")
    endpoint = f"tcp://127.0.0.1:{port}"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "perception", "-q", "run", "--source", "synthetic", "--model", str(model_path),
             "--endpoint", endpoint, "--max-frames", "1"],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        blocker.close()
    assert done.returncode != 0 and "Traceback" not in done.stderr
    # A failure once start-up is under way still prints the final stats line, balanced, naming it.
    final = json.loads(done.stdout)
    assert final["end_reason"] == "start-up failed" and final["startup"] == "opening the publisher"
    assert final["balanced"] and final["frames_in"] == 0 and "address already in use" in final["error"]
    assert done.stderr.strip().splitlines() == [f"perception: error: cannot bind {endpoint}: address already in use; "
                      "use another port (e.g. --endpoint tcp://127.0.0.1:* for any free one, logged at start) or "
                      f"stop what holds it (ss -ltnp 'sport = :{port}' names it)"], done.stderr


def test_cli_wait_subscribers_timeout_is_one_line(model_path, capsys, free_tcp_port):
    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    code, lines = run_cli(["--model", str(model_path), "--source", "synthetic", "--endpoint", endpoint,
                           "--wait-subscribers", "1", "--wait-timeout", "0.2", "--warmup", "0"], capsys)
    assert code != 0
    assert lines == [f"perception: error: no subscriber connected to {endpoint} within 0.2 s; "
                     "start the recorder first or drop --wait-subscribers"]


def test_cli_default_model_missing_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("perception.commands.run.DEFAULT_MODEL", tmp_path / "default.onnx")
    code, lines = run_cli(["--source", "synthetic"], capsys)
    assert code != 0 and len(lines) == 1 and "no --model given" in lines[0] and "make default-model" in lines[0]


def test_config_file_and_flags(tmp_path, model_path):
    import argparse

    from perception.commands.run import add_arguments, load_run_config

    cfg = tmp_path / "node.yaml"
    cfg.write_text(f"source: synthetic\nmodel: {model_path}\nqueue: lossless\nencoding: {{lane: bitpack}}\n")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--config", str(cfg), "--queue", "latest", "--encoding", "class_map=rle",
                              "--task", "obstacle=car,pedestrian", "--duration", "2.5"])
    config = load_run_config(args)
    assert config.queue == "latest" and config.model == str(model_path)
    assert config.publish_options.encoding == {"lane": "bitpack", "class_map": "rle"}
    assert config.publish_options.task == {"obstacle": ["car", "pedestrian"]} and config.duration_s == 2.5
    assert config.publish_options.resolved_namespace == contracts.default_namespace("front")
    cfg.write_text("sourc: synthetic\n")
    with pytest.raises(Exception, match="unknown key 'sourc'; did you mean 'source'"):
        load_run_config(parser.parse_args(["--config", str(cfg)]))


def test_only_subscribed_masks_and_blobs_are_computed(engine, monkeypatch):
    """A subscriber to the lane topic alone gets every lane mask; the node builds no other mask and
    no obstacle blobs (XPUB tells it what is subscribed), and says which topics it computed."""
    import perception.mask_stage as pipeline_mod  # where the publish thread builds them

    built: list[set[str]] = []
    blob_calls = []
    real_build = pipeline_mod.MaskBuilder.build

    def spy_build(self, class_map, only=None):
        masks = real_build(self, class_map, only)
        built.append(set(masks))
        return masks

    monkeypatch.setattr(pipeline_mod.MaskBuilder, "build", spy_build)
    monkeypatch.setattr(pipeline_mod, "obstacle_blobs", lambda *a, **k: blob_calls.append(1) or [])
    pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, sndhwm=10_000)
    sub = MaskSubscriber(pub.endpoint, topics=[f"{NS}/lane"])
    try:
        assert pub.wait_for_subscribers(1, timeout_s=10)
        assert pub.subscribed(["lane", "obstacle", "obstacles", "class_map"]) == {"lane"}
        n = 5
        config = RunConfig.from_settings(source="synthetic", queue="lossless", max_frames=n, width=96, height=72, fps=240,
                           seed=5, warmup=0, per_class_obstacles=True)
        source = open_source("synthetic", config.source_options)
        source.pace(None)
        final = Pipeline(config, source=source, engine=engine, publisher=pub).run()
        got = {}
        while len(got) < n:
            msg = sub.recv(timeout_s=10)
            assert msg is not None, f"lane masks missing: got {sorted(got)}"
            assert msg.topic == f"{NS}/lane"
            got[msg.seq] = msg
        assert sorted(got) == list(range(n)) and final["frames_out"] == n
        assert final["unheard"] == 0  # every published frame reached the lane subscriber
        assert built and all(b <= {"lane", "class_map"} for b in built), built
        assert not blob_calls
    finally:
        sub.close()
        pub.close()


def test_frames_published_to_no_subscriber_are_counted_as_unheard(engine):
    """Hunt 4b finding 7: with nobody subscribed, every frame counted as published (output_fps 3.3)
    while not one mask was built or sent; a health check could not tell. They are now 'unheard'."""
    pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, sndhwm=10_000)
    try:
        config = RunConfig.from_settings(source="synthetic", queue="lossless", max_frames=4, width=96, height=72,
                                         fps=240, warmup=0)
        source = open_source("synthetic", config.source_options)
        source.pace(None)
        final = Pipeline(config, source=source, engine=engine, publisher=pub).run()
        assert final["published"] == final["unheard"] == 4
        assert final["publisher"]["subscriptions"] == 0
    finally:
        pub.close()


def test_publisher_subscribed_follows_prefixes():
    pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS)
    sub = MaskSubscriber(pub.endpoint, topics=[f"{NS}/obstacle"])
    try:
        assert pub.wait_for_subscribers(1, timeout_s=10)
        # ZeroMQ matches by prefix: "<ns>/obstacle" also receives "obstacles" and "obstacle/car".
        assert pub.subscribed(["lane", "obstacle", "obstacles", "obstacle/car", "class_map"]) == {
            "obstacle", "obstacles", "obstacle/car"}
    finally:
        sub.close()
    deadline = time.monotonic() + 10
    while pub.subscribed(["obstacle"]) and time.monotonic() < deadline:
        time.sleep(0.02)  # the unsubscribe travels asynchronously; poll its arrival
    assert pub.subscribed(["obstacle"]) == set()
    pub.close()


@pytest.mark.parametrize(("flags", "message"), [
    (["--endpoint", "foo"], "bad endpoint 'foo'"),
    (["--source", "nope.mp4"], "video file nope.mp4 not found; check the path"),
    (["--source", "front=synthetic", "--source", "rear=nope.mp4"],
     "camera 'rear' (--source rear=nope.mp4): video file nope.mp4 not found"),
    # verify 6: images, folders and patterns that are not there were still found after the loading
    (["--source", "nope.jpg"], "image file nope.jpg not found; check the path"),
    (["--source", "nope_dir/"], "image folder nope_dir/ not found"),
    (["--source", "nope_dir/*.png"], "no files match 'nope_dir/*.png'"),
])
def test_run_checks_the_endpoint_and_a_video_file_before_loading_the_model(flags, message, model_path, tmp_path,
                                                                             monkeypatch, capsys):
    """Hunt 5d finding 12: 'run --endpoint foo' and 'run --source nope.mp4' loaded the model (and bound
    the port) before their one-line error."""
    import perception.commands.run as run_command

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the cheap checks")

    monkeypatch.setattr(run_command, "EngineLoader", no_loading)
    monkeypatch.chdir(tmp_path)
    assert cli_main(["run", "--model", str(model_path), *flags]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"perception: error: {message}"), lines


def test_run_names_a_bad_model_before_a_missing_video_file(tmp_path, capsys):
    """The cheap source check keeps the order of the errors: a bad model is still named first."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    assert cli_main(["run", "--model", str(bad), "--source", str(tmp_path / "nope.mp4")]) == 2
    err = capsys.readouterr().err
    assert "bad.onnx is not a readable ONNX file" in err and "nope.mp4" not in err


def test_a_camera_that_is_not_there_still_prints_the_final_stats_line(model_path, capsys, free_tcp_port):
    """Hunt 6c: a camera or stream that fails to open printed only its error line, although every
    other end prints the balanced final stats (a supervisor reads the last stdout line). A mistake
    found before start-up (a flag, a file that is not there) still prints the error alone."""
    code = cli_main(["-q", "run", "--model", str(model_path), "--source", "/dev/video97",
                     "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"])
    out, err = capsys.readouterr()
    final = json.loads(out)
    assert code == 4 and final["end_reason"] == "start-up failed" and final["startup"] == "opening the source"
    assert final["balanced"] and final["published"] == 0 and "/dev/video97" in final["error"]
    assert err.strip().splitlines() == [f"perception: error: {final['error']}"]
    for argv in (["--model", str(model_path), "--source", "nope.mp4"], ["--model", "nothere.onnx"]):
        code = cli_main(["-q", "run", *argv, "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"])
        out, err = capsys.readouterr()
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (argv, out, err)
