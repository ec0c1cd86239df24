"""One node, several cameras, one engine: named sources, batched inference, per-camera topics and stats.

Two synthetic cameras go through one ``MultiCameraNode`` (real ONNX Runtime, real XPUB socket,
subscribers on loopback): each camera's masks arrive on its own namespace with its own seq in order
and its own pub_seq, equal to the tiny model's output for that camera's frames; counts balance
per camera; a camera that never delivers does not hold the other beyond the batch timeout; a
fixed-batch model serves both cameras one frame at a time; a bad second source is one line naming
the camera. Tiny model (48x64), tiny frames, few of them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from outpace import wait_for_more_frames
from tiny_models import expected_class_ids, tiny_metadata, write_brightness_model

from perception import contracts
from perception.batching import FrameBatcher
from perception.cameras import MultiCameraNode
from perception.cli import main as cli_main
from perception.config import load_config
from perception.engines import EngineOptions, load_engine
from perception.engines.base import infer_in_fixed_batches
from perception.errors import ConfigError
from perception.launch.parse import load_launch
from perception.preprocess import Preprocessor
from perception.publish import MaskPublisher
from perception.run_config import RunConfig
from perception.sources import open_source
from perception.sources.base import Source, SourceOptions
from perception.subscribe import MaskSubscriber

MODEL_HW = (48, 64)
CAMERAS = ("front", "rear")


@pytest.fixture(scope="module")
def fixed_model_path(tmp_path_factory):
    return write_brightness_model(tmp_path_factory.mktemp("fixed") / "fixed.onnx", MODEL_HW, batch=1)


def open_cameras(config: RunConfig) -> list[Source]:
    sources = []
    for i in range(len(config.cameras)):
        camera = config.camera_config(i)
        source = open_source(camera.cameras[0].source, camera.source_options)
        source.pace(None)
        sources.append(source)
    return sources


class Node:
    """A MultiCameraNode on a random loopback port, with one joined subscriber per camera namespace."""

    def __init__(self, config: RunConfig, engine, sources: list[Source] | None = None) -> None:
        names = [config.camera_config(i).publish_options.resolved_namespace for i in range(len(config.cameras))]
        self.pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=names[0], sndhwm=10_000)
        publishers = [self.pub] + [self.pub.add_namespace(ns) for ns in names[1:]]
        self.subs = {ns: MaskSubscriber(self.pub.endpoint, namespace=ns) for ns in names}
        self.node = MultiCameraNode(config, sources=sources or open_cameras(config), engine=engine,
                                    publishers=publishers)

    def collect(self, namespace: str, want: int, *, timeout_s: float = 20.0) -> list:
        """The class_map messages of ``namespace`` in arrival order, until ``want`` (or the timeout)."""
        got = []
        deadline = time.monotonic() + timeout_s
        while len(got) < want and time.monotonic() < deadline:
            msg = self.subs[namespace].recv(timeout_s=0.2)
            if msg is not None and msg.topic == f"{namespace}/class_map":
                got.append(msg)
        return got

    def close(self) -> None:
        for sub in self.subs.values():
            sub.close()
        self.pub.close()


def expected_maps(config: RunConfig, index: int, n: int) -> list[np.ndarray]:
    """The tiny model's class maps for the first ``n`` frames of camera ``index``, read independently."""
    camera = config.camera_config(index)
    source = open_source(camera.cameras[0].source, camera.source_options)
    source.pace(None)
    pre = Preprocessor(MODEL_HW)
    maps = []
    for _ in range(n):
        ids = expected_class_ids(pre(source.read().image))[0]
        maps.append(pre.letterbox.content(ids).copy())
    source.close()
    return maps


def two_synthetic(**overrides) -> RunConfig:
    data = {"source": {"front": "synthetic", "rear": "synthetic"}, "queue": "lossless", "width": 96, "height": 72,
            "fps": 240, "seed": 3, "warmup": 1, "stats_interval_s": 0.05, "wait_subscribers": 1,
            "batch_timeout_ms": 10_000}
    data.update(overrides)
    return load_config(RunConfig, data, source="test")


def test_two_cameras_one_engine_each_on_its_own_topics_with_its_own_seq(tiny_engine):
    n = 6
    config = two_synthetic(max_frames=n)
    node = Node(config, tiny_engine)
    try:
        final = node.node.run()
        for index, camera in enumerate(CAMERAS):
            ns = f"perception/{camera}"
            msgs = node.collect(ns, n)
            assert [m.seq for m in msgs] == list(range(n)), camera  # its own seq, in order
            assert [m.pub_seq for m in msgs] == list(range(n)), camera  # its own pub_seq
            for msg, expected in zip(msgs, expected_maps(config, index, n), strict=True):
                np.testing.assert_array_equal(msg.data, expected)  # this camera's frame, not the other's
                assert msg.header["header"]["frame_id"] == camera
                assert {"capture", "queue", "batch", "infer", "total"} <= set(msg.header["latency_ms"])
            assert node.subs[ns].info["frame_id"] == camera
            doc = final["cameras"][camera]
            assert doc["frames_in"] == doc["published"] == n and doc["balanced"] and doc["camera"] == camera
            assert {"batch", "infer", "total"} <= set(doc["latency_ms"]) and doc["output_fps"] > 0
        # Both cameras' frames went through the engine together, every time (the timeout was never needed).
        assert final["batching"]["batch_sizes"] == {"2": n} and final["batching"]["timed_out"] == 0
        assert final["published"] == 2 * n and final["balanced"] and final["end_reason"] == "max frames reached"
        assert set(final["cameras"]) == set(CAMERAS)
    finally:
        node.close()


def test_counts_balance_per_camera_when_the_engine_falls_behind(tiny_engine):
    config = two_synthetic(queue="latest", queue_capacity=1, max_frames=8, batch_timeout_ms=5)
    sources = open_cameras(config)

    class SlowEngine:
        """The shared engine slower than the cameras: each inference lasts until every camera has
        captured two more frames, so that its keep-latest queue (capacity 1) must drop one. Waiting
        on the cameras' counters, not on a sleep, keeps the drops certain on a loaded machine."""

        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def infer(self, batch):
            if not any(s.frames_read for s in sources):
                return self.inner.infer(batch)  # the warm-up, before the cameras start
            wait_for_more_frames(sources)  # each camera's capacity-1 queue drops one
            return self.inner.infer(batch)

    node = Node(config, SlowEngine(tiny_engine), sources=sources)
    try:
        final = node.node.run()
    finally:
        node.close()
    for camera in CAMERAS:
        doc = final["cameras"][camera]
        assert doc["published"] == 8
        assert doc["frames_in"] == doc["published"] + doc["dropped"] + doc["corrupt"] + doc["in_flight_discarded"]
        assert doc["balanced"] and doc["dropped"] > 0, doc
    assert sum(final["cameras"][c]["dropped"] for c in CAMERAS) == final["dropped"]
    assert final["balanced"]


class SilentCamera(Source):
    """A live camera that never delivers a frame (unplugged but not yet timed out)."""

    kind = "silent"
    live = True

    def _next_image(self):
        self._interrupted.wait()
        return None


def test_a_silent_camera_does_not_stall_the_other_beyond_the_batch_timeout(tiny_engine):
    n = 5
    config = two_synthetic(batch_timeout_ms=5)
    front = open_source("synthetic", width=96, height=72, fps=240, seed=3)
    front.pace(None)
    node = Node(config, tiny_engine, sources=[front, SilentCamera("rear", SourceOptions())])
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(node.node.run()))
    try:
        # The subscribers joined before the node starts: lossless front frames are all seen.
        runner.start()
        msgs = node.collect("perception/front", n)
        assert [m.seq for m in msgs] == list(range(n))  # the front camera ran on without the rear one
    finally:
        node.node.stop("test over")
        runner.join(30)
        node.close()
    assert not runner.is_alive()
    assert result["cameras"]["rear"]["published"] == 0 and result["cameras"]["rear"]["balanced"]
    batching = result["batching"]
    # Every batch ran alone; only the first waited the timeout for the rear camera, which has not
    # delivered a frame yet: it is then skipped (still read) until it does.
    assert batching["batch_sizes"].keys() == {"1"} and batching["batches"] >= n
    assert batching["timed_out"] <= 1


def test_a_fixed_batch_model_serves_every_camera_one_frame_at_a_time(fixed_model_path, caplog):
    engine = load_engine("ort", fixed_model_path, EngineOptions(provider="cpu", threads=1))
    assert engine.fixed_batch == 1
    n = 4
    config = two_synthetic(max_frames=n)
    node = Node(config, engine)
    try:
        with caplog.at_level(logging.WARNING, logger="perception.batching"):
            final = node.node.run()
        for index, camera in enumerate(CAMERAS):
            msgs = node.collect(f"perception/{camera}", n)
            assert [m.seq for m in msgs] == list(range(n))
            for msg, expected in zip(msgs, expected_maps(config, index, n), strict=True):
                np.testing.assert_array_equal(msg.data, expected)
    finally:
        node.close()
        engine.close()
    warnings = [r.getMessage() for r in caplog.records if "fixed batch" in r.getMessage()]
    assert len(warnings) == 1 and "one by one" in warnings[0] and "--dynamic-batch" in warnings[0]  # logged once
    assert final["batching"]["fixed_batch"] == 1 and final["batching"]["batch_sizes"] == {"2": n}


@pytest.mark.parametrize("engine_kind", ["ort", "openvino"])
def test_engines_take_any_batch_on_dynamic_and_fixed_models(engine_kind, tiny_model_path, fixed_model_path, tmp_path):
    if engine_kind == "openvino":
        pytest.importorskip("openvino")
    fixed2 = write_brightness_model(tmp_path / "fixed2.onnx", MODEL_HW, batch=2)
    frames = np.random.default_rng(0).integers(0, 256, (3, *MODEL_HW, 3), dtype=np.uint8)
    for path, fixed in ((tiny_model_path, None), (fixed_model_path, 1), (fixed2, 2)):
        engine = load_engine(engine_kind, path, EngineOptions(provider="cpu", threads=1))
        try:
            assert engine.fixed_batch == fixed
            out = engine.infer(frames)[contracts.OUTPUT_CLASS_IDS]
            np.testing.assert_array_equal(out, expected_class_ids(frames))  # 3 frames: chunks, the last padded
        finally:
            engine.close()


def test_fixed_batch_chunks_pad_the_last_and_keep_frame_order():
    calls = []

    def run(batch):
        calls.append(batch.shape[0])
        return {"class_ids": batch[..., 0].copy()}

    frames = np.arange(5, dtype=np.uint8).reshape(5, 1, 1, 1) * np.ones((5, 2, 2, 3), np.uint8)
    out = infer_in_fixed_batches(run, frames, 2)["class_ids"]
    assert calls == [2, 2, 2] and [int(v) for v in out[:, 0, 0]] == [0, 1, 2, 3, 4]
    assert infer_in_fixed_batches(run, frames, None)["class_ids"].shape[0] == 5 and calls[-1] == 5


def test_batcher_hands_each_camera_its_own_results(tiny_engine):
    batcher = FrameBatcher(tiny_engine, CAMERAS, timeout_ms=10_000)
    batcher.start()
    frames = [np.full((1, *MODEL_HW, 3), value, np.uint8) for value in (30, 250)]
    results: dict[int, np.ndarray] = {}
    try:
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(
            i, batcher.camera_engine(i).infer(frames[i])[contracts.OUTPUT_CLASS_IDS])) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        comm = Path(f"/proc/self/task/{batcher._thread.native_id}/comm")
        if comm.parent.parent.is_dir():  # Linux: the OS knows the thread as the batcher (top -H, bench)
            assert comm.read_text().strip() == "batcher"
    finally:
        batcher.close()
    for i in range(2):
        np.testing.assert_array_equal(results[i], expected_class_ids(frames[i]))
    assert batcher.stats()["batch_sizes"] == {"2": 1}


# ---- configuration: the --source forms, the launch file form, the errors ----------------------

@pytest.mark.parametrize(
    ("source", "cameras"),
    [
        ("clip.mp4", [("front", "clip.mp4")]),
        ("rear=clip.mp4", [("rear", "clip.mp4")]),
        (["front=/dev/video0", "rear=clip.mp4"], [("front", "/dev/video0"), ("rear", "clip.mp4")]),
        ({"left": "synthetic", "right": "rtsp://cam/s?a=1"}, [("left", "synthetic"), ("right", "rtsp://cam/s?a=1")]),
        ("v4l2src device=/dev/video0 ! appsink", [("front", "v4l2src device=/dev/video0 ! appsink")]),
        ("./front=x.mp4", [("front", "./front=x.mp4")]),
    ],
)
def test_source_forms(source, cameras):
    config = load_config(RunConfig, {"source": source}, source="test")
    assert [(c.name, c.source) for c in config.cameras] == cameras
    for i, (name, _spec) in enumerate(cameras):
        camera = config.camera_config(i)
        assert camera.publish_options.camera_name == name and camera.cameras == config.cameras[i : i + 1]
        assert camera.publish_options.resolved_namespace == f"perception/{name}"
        assert camera.source_options.seed == (i if len(cameras) > 1 else 0)


def test_several_cameras_take_the_namespace_as_their_prefix():
    config = load_config(RunConfig, {"source": ["a=synthetic", "b=synthetic"], "namespace": "car1/vision"}, source="t")
    assert [config.camera_config(i).publish_options.resolved_namespace for i in range(2)] == ["car1/vision/a", "car1/vision/b"]


@pytest.mark.parametrize(
    ("source", "match"),
    [
        (["clip.mp4", "rear=b.mp4"], "source 'clip.mp4' has no camera name"),
        (["front=a.mp4", "front=b.mp4"], "camera name 'front' is used by two sources"),
        (["front=a.mp4", "x__y=c.mp4"], "camera name 'x__y' of source 'x__y=c.mp4' is not a ROS 2 name"),
        (["front=a.mp4", "2nd=b.mp4"], "is not a ROS 2 name (it starts with a digit)"),
        (["front=a.mp4", "rear="], "source 'rear=' is empty"),
        ([], "source is empty"),
    ],
)
def test_source_errors_name_the_source(source, match):
    with pytest.raises(ConfigError, match=match.replace("(", r"\(").replace(")", r"\)")):
        load_config(RunConfig, {"source": source}, source="test")


def test_camera_name_beside_a_named_source_is_an_error():
    with pytest.raises(ConfigError, match="name the camera once"):
        load_config(RunConfig, {"source": "rear=clip.mp4", "camera_name": "left"}, source="test")


def test_more_cameras_than_a_node_batches_are_refused_at_start():
    """A --config listing 5,000 sources started that many capture threads and hung."""
    sources = {f"c{i}": "synthetic" for i in range(17)}
    with pytest.raises(ConfigError, match="source names 17 cameras; one node batches at most 16: run several nodes"):
        load_config(RunConfig, {"source": sources}, source="test")
    assert len(load_config(RunConfig, {"source": dict(list(sources.items())[:16])}, source="test").cameras) == 16


def test_a_launch_node_with_several_cameras(tmp_path):
    launch = tmp_path / "cams.yaml"
    launch.write_text(
        "launch:\n  - node:\n      name: cams\n      kind: pipeline\n"
        "      parameters:\n        source: {front: /dev/video0, rear: clip.mp4}\n        batch_timeout_ms: 15\n"
    )
    (node,) = load_launch(launch).nodes
    argv = list(node.argv)
    assert argv[argv.index("--source") + 1] == "front=/dev/video0"
    assert argv.count("--source") == 2 and "rear=clip.mp4" in argv
    assert argv[argv.index("--batch-timeout-ms") + 1] == "15"
    bad = tmp_path / "bad.yaml"
    bad.write_text(launch.read_text().replace("rear: clip.mp4", "front__2: clip.mp4"))
    with pytest.raises(ConfigError, match="node 'cams'.*camera name 'front__2'"):
        load_launch(bad)


def test_the_shipped_one_node_launch_file_resolves():
    from pathlib import Path

    plan = load_launch(Path(__file__).resolve().parents[1] / "launch" / "cameras_one_node.yaml")
    (node,) = plan.nodes
    assert node.argv.count("--source") == 2


# ---- the command line --------------------------------------------------------------------------

def run_cli(argv, capsys) -> tuple[int, list[str], list[str]]:
    code = cli_main(["-q", "run", *argv])
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err.strip().splitlines()


def test_cli_two_cameras_final_document_per_camera(tiny_model_path, free_tcp_port, capsys):
    code, out, err = run_cli(
        ["--model", str(tiny_model_path), "--source", "front=synthetic", "--source", "rear=synthetic",
         "--width", "96", "--height", "72", "--fps", "240", "--queue", "lossless", "--max-frames", "3",
         "--threads", "1", "--batch-timeout-ms", "50", "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"], capsys)
    assert code == 0, err
    final = json.loads(out[-1])
    assert set(final["cameras"]) == set(CAMERAS) and final["published"] == 6 and final["balanced"]
    assert final["batching"]["timeout_ms"] == 50 and final["cameras"]["rear"]["source"].endswith("(seed 1)")


def test_cli_two_cameras_each_log_line_names_its_camera(tiny_model_path, free_tcp_port, capsys, caplog):
    """In a node of several cameras, "first masks published" (and its sources' warnings) say which."""
    with caplog.at_level(logging.INFO, logger="perception"):
        code, _, err = run_cli(
            ["--model", str(tiny_model_path), "--source", "front=synthetic", "--source", "rear=synthetic",
             "--width", "96", "--height", "72", "--fps", "240", "--queue", "lossless", "--max-frames", "2",
             "--threads", "1", "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"], capsys)
    assert code == 0, err
    firsts = sorted(r.getMessage().split(" first")[0] for r in caplog.records if "first masks published" in r.getMessage())
    assert firsts == ["camera 'front',", "camera 'rear',"]


def test_every_camera_marks_unknown_pixels_as_a_one_camera_node_does(tmp_path, free_tcp_port, capsys):
    # Each camera's engine view once copied the shared engine's description without its outputs, so
    # a model with a confidence output ran every camera with unknown marking off (and refused
    # --unknown-threshold, saying the model had no confidence output).
    meta = tiny_metadata((64, 96), has_confidence=True, unknown_threshold=0.5, unknown_rule="test")
    model = write_brightness_model(tmp_path / "conf.onnx", (64, 96), metadata=meta, with_confidence=True)
    for extra, threshold in (([], 0.5), (["--unknown-threshold", "0.25"], 0.25)):
        code, out, err = run_cli(
            ["--model", str(model), "--source", "front=synthetic", "--source", "rear=synthetic",
             "--width", "96", "--height", "72", "--fps", "240", "--queue", "lossless", "--max-frames", "2",
             "--threads", "1", "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}", *extra], capsys)
        assert code == 0, err
        final = json.loads(out[-1])
        for camera in CAMERAS:
            unknown = final["cameras"][camera]["unknown"]
            assert unknown["enabled"] and unknown["threshold"] == threshold, (camera, unknown)


def test_cli_bad_second_source_is_one_line_naming_the_camera(tiny_model_path, free_tcp_port, capsys):
    code, _, err = run_cli(
        ["--model", str(tiny_model_path), "--source", "front=synthetic", "--source", "rear=nowhere.mp4",
         "--max-frames", "1", "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"], capsys)
    assert code != 0
    assert len(err) == 1 and err[0].startswith("perception: error: camera 'rear' (--source rear=nowhere.mp4): ")
    assert "video file nowhere.mp4 not found" in err[0]


def test_a_camera_whose_file_holds_no_readable_frame_stops_the_node_with_one_line(tmp_path, tiny_model_path,
                                                                                  free_tcp_port, capsys):
    """Hunt 4a finding 3: one source alone exits 2 'ended without one readable frame'; the same file
    as one camera among several exited 0 without a word (and beside a live camera, never)."""
    import cv2

    empty = tmp_path / "empty.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48)).release()
    code, out, err = run_cli(
        ["--model", str(tiny_model_path), "--source", "front=synthetic", "--source", f"rear={empty}",
         "--width", "96", "--height", "72", "--duration", "60", "--threads", "1",
         "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"], capsys)
    assert code == 2
    assert err == [f"perception: error: camera 'rear': video file {empty} ended without one readable frame "
                   "(0 unreadable); check --source"]
    final = json.loads(out[-1])
    assert final["cameras"]["rear"]["end_reason"] == "end of input"
    assert final["cameras"]["front"]["end_reason"] == "camera rear gave no frame" and final["balanced"]


@pytest.mark.parametrize(("text", "shown"), [
    ("rtsp://admin:hunter2@10.0.0.5:554/cam", "rtsp://***@10.0.0.5:554/cam"),
    ("http://cam/x.mjpg?user=me&password=pw&fps=5", "http://cam/x.mjpg?user=me&password=***&fps=5"),
    ("https://h/s?Token=abc;sig=d%20e#frag", "https://h/s?Token=***;sig=***#frag"),
    ("--source 'rtsp://u:p@h/x?access_key=zz' --fps 5", "--source 'rtsp://***@h/x?access_key=***' --fps 5"),
    ("clip.mp4 /dev/video0 synthetic user@host", "clip.mp4 /dev/video0 synthetic user@host"),
])
def test_credentials_are_hidden_from_every_line(text, shown):
    from perception.errors import hide_credentials

    assert hide_credentials(text) == shown


def test_cli_a_camera_stream_that_fails_to_open_hides_its_password(tiny_model_path, free_tcp_port, capsys):
    """Hunt 4a finding 2: the several-camera error repeated the --source value, password and all.
    (A node one of whose cameras is there starts without the other since s38: here neither is.)"""
    code, _, err = run_cli(
        ["--model", str(tiny_model_path), "--source", "front=rtsp://admin:hunter2@127.0.0.1:1/cam?token=s3cret",
         "--source", "rear=rtsp://admin:hunter2@127.0.0.1:1/rear", "--read-timeout", "2",
         "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"], capsys)
    assert code == 4 and len(err) == 1
    assert "hunter2" not in err[0] and "s3cret" not in err[0]
    assert err[0].startswith("perception: error: no camera is there: "  # each named (H47 L6 of s42)
                             "camera 'front' (--source front=rtsp://***@127.0.0.1:1/cam?token=***): ")
    assert "; camera 'rear' (--source rear=rtsp://***@127.0.0.1:1/rear): " in err[0]


def test_cli_unnamed_source_among_several_is_one_line(tiny_model_path, free_tcp_port, capsys):
    code, _, err = run_cli(
        ["--model", str(tiny_model_path), "--source", "synthetic", "--source", "rear=synthetic",
         "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"], capsys)
    assert code != 0
    assert len(err) == 1 and "source 'synthetic' has no camera name" in err[0]


# ---- the shared socket -------------------------------------------------------------------------

def test_namespaces_on_one_socket_keep_their_own_info_seq_and_subscriptions():
    pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace="perception/front")
    rear = pub.add_namespace("perception/rear")
    try:
        with pytest.raises(ConfigError, match="already published"):
            pub.add_namespace("perception/rear")
        with pytest.raises(ConfigError, match="not a ROS 2 namespace"):
            pub.add_namespace("perception/rear cam")
        info = {"wire_version": 2, "model_id": "m", "unknown_id": 255, "classes": []}
        pub.set_info({**info, "frame_id": "front"})
        rear.set_info({**info, "frame_id": "rear"})
        # A late subscriber to the rear namespace gets the rear info (latched), and counts for rear only.
        with MaskSubscriber(pub.endpoint, namespace="perception/rear") as sub:
            assert rear.wait_for_subscribers(1, timeout_s=10)
            assert pub.stats()["subscriptions"] == 0
            deadline = time.monotonic() + 10
            while sub.info is None and time.monotonic() < deadline:
                sub.recv(timeout_s=0.1)
            assert sub.info == {**info, "frame_id": "rear"}
            mask = np.zeros((4, 4), np.uint8)
            for publisher in (pub, rear, rear):
                publisher.publish_masks(seq=0, capture_ns=1, frame_id="x", masks={"lane": mask}, latency_ms={},
                                        model_id="m")
            got = []
            while len(got) < 2 and time.monotonic() < deadline:
                msg = sub.recv(timeout_s=0.1)
                if msg is not None and msg.kind == "mask":
                    got.append(msg)
            assert [m.topic for m in got] == ["perception/rear/lane"] * 2
            assert [m.pub_seq for m in got] == [0, 1]
    finally:
        pub.close()
    assert rear.stats()["messages_sent"] >= 3 and pub.stats()["messages_sent"] >= 2


# ---- a dynamic batch for an exported batch-1 model (export/batch.py) ----------------------------

def _resize_model(path, batch):
    """A contract model with a Resize to constant sizes [batch, 3, H, W] (the exporter's batch-1 form)."""
    import onnx
    from onnx import TensorProto, helper
    from tiny_models import tiny_metadata

    h, w = MODEL_HW
    nodes = [
        helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["pixels"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("AveragePool", ["nchw"], ["small"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Resize", ["small", "", "", "sizes"], ["big"], mode="nearest"),
        helper.make_node("ReduceMax", ["big"], ["brightest"], axes=[1], keepdims=0),
        helper.make_node("Mul", ["brightest", "scale"], ["scaled"]),
        helper.make_node("Floor", ["scaled"], ["floored"]),
        helper.make_node("Cast", ["floored"], ["class_ids"], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(
        nodes, "resize", [helper.make_tensor_value_info("image", TensorProto.UINT8, [batch, h, w, 3])],
        [helper.make_tensor_value_info("class_ids", TensorProto.UINT8, [batch, h, w])],
        initializer=[helper.make_tensor("scale", TensorProto.FLOAT, [], [11 / 256]),
                     helper.make_tensor("sizes", TensorProto.INT64, [4], [batch, 3, h, w])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {contracts.METADATA_KEY: tiny_metadata(MODEL_HW).to_json()})
    onnx.save(model, str(path))
    return path


def test_export_batch_makes_a_batch_1_model_serve_any_batch_frame_for_frame(tmp_path):
    from perception.errors import ModelError
    from perception.export.batch import convert
    from perception.modelfile import read_model_metadata

    src = _resize_model(tmp_path / "b1.onnx", 1)
    before = load_engine("ort", src, EngineOptions(provider="cpu", threads=1))
    assert before.fixed_batch == 1
    frames = np.random.default_rng(1).integers(0, 256, (3, *MODEL_HW, 3), dtype=np.uint8)
    want = before.infer(frames)[contracts.OUTPUT_CLASS_IDS]  # frame by frame
    report = convert(src, tmp_path / "dyn.onnx")
    assert report.resizes == 1 and report.class_ids_equal == 1.0
    after = load_engine("ort", tmp_path / "dyn.onnx", EngineOptions(provider="cpu", threads=1))
    assert after.fixed_batch is None and read_model_metadata(tmp_path / "dyn.onnx").dynamic_batch
    np.testing.assert_array_equal(after.infer(frames)[contracts.OUTPUT_CLASS_IDS], want)  # one batch of 3
    with pytest.raises(ModelError, match="already has a dynamic batch"):
        convert(tmp_path / "dyn.onnx", tmp_path / "again.onnx")


def test_the_shipped_default_model_batches():
    from perception.run_config import DEFAULT_MODEL

    engine = load_engine("ort", DEFAULT_MODEL, EngineOptions(provider="cpu", threads=1))
    try:
        assert engine.fixed_batch is None and engine.metadata.dynamic_batch
        frames = np.random.default_rng(2).integers(0, 256, (2, *engine.input_hw, 3), dtype=np.uint8)
        both = engine.infer(frames)[contracts.OUTPUT_CLASS_IDS]
        for i in range(2):
            np.testing.assert_array_equal(both[i : i + 1], engine.infer(frames[i : i + 1])[contracts.OUTPUT_CLASS_IDS])
    finally:
        engine.close()


# ---- the bench: one node with N cameras against N nodes ------------------------------------------

def test_bench_cameras_compares_one_node_with_separate_nodes(tiny_model_path):
    from perception.bench.pipeline import PipelineBenchConfig, run_pipeline_bench
    from perception.bench.report import render_markdown, summary_text

    cfg = PipelineBenchConfig(model=tiny_model_path, source="synthetic", width=96, height=72, fps=60,
                              duration_s=0.5, threads=1, cameras=2, engine_runs=0, progress=False)
    results = run_pipeline_bench(cfg, command="test")
    c = results["cameras"]
    assert c["n"] == 2 and "pipeline" not in results
    for key, nodes in (("one_node", 1), ("separate_nodes", 2)):
        run = c[key]
        assert set(run["per_camera"]) == {"bench0", "bench1"} and len(run["nodes"]) == nodes
        assert all(cam["output_fps"] > 0 and cam["capture_to_receive_ms"]["count"] > 0
                   for cam in run["per_camera"].values())
        assert run["images_per_s"] == pytest.approx(sum(cam["output_fps"] for cam in run["per_camera"].values()),
                                                    abs=1e-3)
        assert all(node["exit_code"] == 0 and node["final_stats"]["balanced"] for node in run["nodes"])
    assert set(c["one_node"]["nodes"][0]["final_stats"]["cameras"]) == {"bench0", "bench1"}
    assert "batch" in c["one_node"]["per_camera"]["bench0"]["stages_p50_ms"]
    assert c["one_node_over_separate"] == pytest.approx(c["one_node"]["images_per_s"] / c["separate_nodes"]["images_per_s"])
    md = render_markdown(results)
    assert "## One engine for several cameras" in md and "| one node | bench1 |" in md
    assert "one node / 2 nodes: x" in summary_text(results) and "images per CPU-second" in md
    assert c["one_node"]["images_per_core_s"] > 0 and c["one_node_over_separate_per_core"] > 0


def test_a_failing_engine_stops_every_camera_with_balanced_stats(tiny_engine):
    from perception.pipeline import StageError

    class BrokenEngine:
        """Fails on every frame (a fixed batch of 1: no batched warm-up either)."""

        fixed_batch = 1

        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def warmup(self, n=3):
            pass

        def infer(self, batch):
            raise RuntimeError("device lost")

    config = two_synthetic(queue="latest", wait_subscribers=0)
    node = Node(config, BrokenEngine(tiny_engine))
    try:
        with pytest.raises(StageError, match="inference stage failed: RuntimeError: device lost"):
            node.node.run()
    finally:
        node.close()
    final = node.node.final_stats
    assert final["error"] and final["published"] == 0 and final["bad_frames"] >= 25
    assert final["balanced"] and all(final["cameras"][c]["balanced"] for c in CAMERAS)
    assert all("failed" in final["cameras"][c]["end_reason"] for c in CAMERAS)


def test_launch_check_names_the_camera_whose_file_is_missing(tmp_path):
    from perception.errors import SourceError
    from perception.launch.checks import check_node_files

    launch = tmp_path / "cams.yaml"
    launch.write_text(
        "launch:\n  - node:\n      name: cams\n      kind: pipeline\n"
        f"      parameters:\n        source: {{front: synthetic, rear: {tmp_path / 'missing.mp4'}}}\n"
    )
    with pytest.raises(SourceError, match="node 'cams': parameters: source rear: video file .*missing.mp4 not found"):
        check_node_files(load_launch(launch))


def test_cli_a_camera_that_never_came_ends_the_node_with_the_others_exit_4(tiny_model_path, free_tcp_port, capsys):
    """V2 N1 (s38): a camera not there at start-up starts pending; once the others have ended
    (--max-frames, a file's end) the node ended never: nothing would come of it. Now it stops, with
    every camera's final stats, and exits 4 naming it, as for a camera not there at all."""
    code, out, err = run_cli(
        ["--model", str(tiny_model_path), "--source", "front=synthetic", "--source", "rear=/dev/video93",
         "--width", "96", "--height", "72", "--fps", "240", "--max-frames", "3", "--threads", "1",
         "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"], capsys)
    assert code == 4
    final = json.loads(out[-1])
    assert final["cameras"]["front"]["published"] == 3 and final["cameras"]["rear"]["frames_in"] == 0
    assert final["end_reason"] == "front: max frames reached; rear: camera rear never came" and final["balanced"]
    assert err == ["perception: error: camera 'rear' (--source rear=/dev/video93) never came while the other cameras "
                   "ran; check that it is plugged in, or give the right --source"]
