"""A node of several cameras publishes every camera's frame at once: what a subscriber that keeps up
receives, and what a camera whose source fails for good publishes before the node stops.

- Four synthetic cameras at the default ``--sndhwm``, the README's lossless recipe (a subscriber
  joined first, ``--wait-subscribers 1``): a raw ZeroMQ subscriber receives every message the node
  counted as sent, every mask of every published frame, with no ``pub_seq`` gap (hunt s37: the old
  fixed limit of 16 messages lost the tail of the four cameras' bursts).
- An explicit ``--sndhwm`` below two bursts is warned about once, naming the burst of all cameras.
- A camera whose source stops with "200 unreadable frames in a row" publishes every good frame it
  read before, as a node of one camera does, and the node then ends with that error.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict

import pytest
import zmq

from perception import contracts
from perception.cameras import MultiCameraNode
from perception.cli import main as cli_main
from perception.config import load_config
from perception.errors import SourceError
from perception.publish import MaskPublisher
from perception.run_config import RunConfig
from perception.send_limit import AUTO_BURSTS
from perception.sources import open_source
from perception.sources.base import CorruptFrame, Source, SourceOptions
from perception.wire import parse_header

CAMERAS = ("front", "rear", "left", "right")
FRAMES = 30


class RawSubscriber:
    """A plain SUB socket on every ``perception/`` topic with an unbounded receive queue, read in its
    own thread until every camera's final stats document has arrived."""

    def __init__(self, endpoint: str, cameras) -> None:
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.rcvhwm = 0
        self._socket.linger = 0
        self._socket.subscribe(b"perception/")
        self._socket.connect(endpoint)
        self._waiting = set(cameras)
        self.messages: dict[str, list[dict]] = defaultdict(list)  # topic -> headers, in arrival order
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        deadline = time.monotonic() + 20
        while self._waiting and time.monotonic() < deadline:
            if not self._socket.poll(100):
                continue
            topic, header, *payload = self._socket.recv_multipart()
            name = topic.decode()
            self.messages[name].append(parse_header(header))
            if name.endswith("/stats") and b"end_reason" in payload[-1]:
                self._waiting.discard(name.split("/")[1])

    def join(self) -> None:
        self._thread.join(30)
        self._socket.close()
        self._context.term()


def _run_four_cameras(tiny_model_path, port, capsys, *extra):
    endpoint = f"tcp://127.0.0.1:{port}"
    sub = RawSubscriber(endpoint, CAMERAS)
    argv = ["-q", "run", "--model", str(tiny_model_path), *[a for c in CAMERAS for a in ("--source", f"{c}=synthetic")],
            "--width", "320", "--height", "240", "--mask-size", "source", "--fps", "240", "--queue", "lossless",
            "--max-frames", str(FRAMES), "--threads", "1", "--batch-timeout-ms", "10000", "--wait-subscribers", "1",
            "--endpoint", endpoint, *extra]
    try:
        code = cli_main(argv)
    finally:
        sub.join()
    captured = capsys.readouterr()
    return code, json.loads(captured.out.strip().splitlines()[-1]), captured.err, sub


def test_four_cameras_at_the_default_sndhwm_lose_nothing_for_a_subscriber_that_keeps_up(
        tiny_model_path, free_tcp_port, capsys, caplog):
    code, final, err, sub = _run_four_cameras(tiny_model_path, free_tcp_port, capsys)
    assert code == 0, err
    assert not [r for r in caplog.records if "sndhwm" in r.getMessage()]  # nothing to warn about
    assert final["balanced"] and final["published"] == len(CAMERAS) * FRAMES
    for camera in CAMERAS:
        doc = final["cameras"][camera]
        assert doc["published"] == FRAMES, camera
        for mask in doc["masks"]:
            headers = sub.messages[f"perception/{camera}/{mask}"]
            assert [h["pub_seq"] for h in headers] == list(range(FRAMES)), (camera, mask)
            assert [h["seq"] for h in headers] == list(range(FRAMES)), (camera, mask)
        obstacles = sub.messages[f"perception/{camera}/obstacles"]
        assert [h["seq"] for h in obstacles] == list(range(FRAMES)), camera
        stats = sub.messages[f"perception/{camera}/stats"]
        assert [h["seq"] for h in stats] == list(range(len(stats))) and stats, camera


def test_an_sndhwm_below_two_bursts_of_every_camera_is_warned_about_once(tiny_model_path, free_tcp_port, capsys,
                                                                         caplog):
    code, final, err, _ = _run_four_cameras(tiny_model_path, free_tcp_port, capsys, "--sndhwm", "16")
    assert code == 0, err
    burst = len(CAMERAS) * (len(final["cameras"]["front"]["masks"]) + 2)
    warnings = [r.getMessage() for r in caplog.records if "below two bursts" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("--sndhwm 16 is below two bursts") and f"{burst} messages" in warnings[0]
    assert f"use --sndhwm {AUTO_BURSTS * burst} or more" in warnings[0] and f"{len(CAMERAS)} cameras" in warnings[0]


def test_the_default_sndhwm_holds_bursts_of_every_camera_and_a_short_one_is_warned_about(caplog):
    per_frame = len(contracts.MASK_TOPICS) + 2  # the masks, obstacles and stats of one frame
    with MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace="perception/a", namespaces=4) as pub:
        assert pub.sndhwm == AUTO_BURSTS * 4 * per_frame
        for name in "bcd":
            pub.add_namespace(f"perception/{name}")
        assert pub.burst == 4 * per_frame
        pub.wait_for_subscribers(0, timeout_s=0)  # (where the first frame checks the limit)
    with MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace="perception/a", atomic_frames=True) as pub:
        assert pub.sndhwm == AUTO_BURSTS * 3  # an atomic frame is one message, plus obstacles and stats
    assert not [r for r in caplog.records if "two bursts" in r.getMessage()]
    # Made for one camera, then given four: the limit cannot follow (ZeroMQ fixes it at the bind), so
    # the first frame says so, with the value to use.
    with MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace="perception/a") as pub:
        for name in "bcd":
            pub.add_namespace(f"perception/{name}")
        pub.wait_for_subscribers(0, timeout_s=0)
        pub.wait_for_subscribers(0, timeout_s=0)
    warnings = [r.getMessage() for r in caplog.records if "two bursts" in r.getMessage()]
    assert len(warnings) == 1 and f"use --sndhwm {AUTO_BURSTS * 4 * per_frame} or more" in warnings[0], warnings


# ---- a camera whose source fails for good ------------------------------------------------------

GOOD = 12


class FailingCamera(Source):
    """A file camera that gives ``GOOD`` frames, then 200 unreadable ones in a row."""

    kind = "failing"

    def __init__(self) -> None:
        super().__init__("failing", SourceOptions())
        self._inner = open_source("synthetic", width=96, height=72, fps=240, seed=5)
        self._inner.pace(None)
        self._given = 0

    def _next_image(self):
        if self._given >= GOOD:
            raise CorruptFrame("damaged stretch", frames=200)
        self._given += 1
        frame = self._inner.read()
        return frame.image, frame.capture_ns, frame.capture_mono_ns

    def close(self) -> None:
        self._inner.close()


class GatedEngine:
    """The shared engine, holding the cameras' batches until ``open`` is set (the warm-up runs)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.open = threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def infer(self, batch):
        if threading.current_thread().name == "perception-batcher":  # not the warm-up, before the cameras start
            self.open.wait(30)
        return self.inner.infer(batch)


def test_a_camera_stopped_by_unreadable_frames_publishes_its_good_frames_first(tiny_engine):
    config = load_config(RunConfig, {
        "source": {"front": "failing", "rear": "synthetic"}, "queue": "lossless", "queue_capacity": GOOD,
        "width": 96, "height": 72, "fps": 240, "seed": 3, "warmup": 1, "max_frames": 40,
        "batch_timeout_ms": 5,
    }, source="test")
    rear = open_source("synthetic", width=96, height=72, fps=240, seed=3)
    rear.pace(None)
    engine = GatedEngine(tiny_engine)
    pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace="perception/front", sndhwm=10_000)
    publishers = [pub, pub.add_namespace("perception/rear")]
    node = MultiCameraNode(config, sources=[FailingCamera(), rear], engine=engine, publishers=publishers)
    # The batches run only once the node has looked at the failed camera a few times: its good
    # frames are still queued then, as when the node is busy (the case it must drain, not drop).
    front = node.pipelines[0]
    looks = []

    def wait(timeout=None, _wait=front.wait):
        done = _wait(timeout)
        if front.failed:
            looks.append(done)
            if len(looks) >= 3:
                engine.open.set()
        return done

    front.wait = wait
    try:
        with pytest.raises(SourceError, match="200 unreadable frames in a row"):
            node.run()
    finally:
        engine.open.set()
        pub.close()
    doc = node.final_stats["cameras"]["front"]
    assert doc["published"] == GOOD and doc["in_flight_discarded"] == 0, doc
    assert doc["corrupt"] == 200 and doc["balanced"] and doc["end_reason"] == "capture failed"
    assert node.final_stats["balanced"] and node.final_stats["cameras"]["rear"]["balanced"]
