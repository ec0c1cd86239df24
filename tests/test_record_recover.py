"""Recovery of a recording whose recorder was SIGKILLed: ``perception record --recover`` rebuilds
it, and an independent ROS 2 reader (rosbags) opens the result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from test_record import ENCODINGS, REPO, frame_masks, free_endpoint

from perception.errors import ConfigError
from perception.publish import MaskPublisher
from perception.recover import recording_is_intact, recover_recording
from perception.replay import read_recording

NS = "perception/crash"
H, W = 120, 160


def masks_of(seq: int) -> dict[str, np.ndarray]:
    """Large enough masks that the recorder finishes several 1 MiB chunks in a few hundred frames."""
    return frame_masks(seq, (H, W))


@pytest.fixture(scope="module")
def killed_recording(tmp_path_factory):
    """A real ``perception record`` process, SIGKILLed after it has written at least two chunks."""
    out = tmp_path_factory.mktemp("crash") / "killed.mcap"
    endpoint = free_endpoint()
    pub = MaskPublisher(endpoint=endpoint, namespace=NS, encodings=ENCODINGS, sndhwm=100000)
    proc = subprocess.Popen([sys.executable, "-m", "perception", "record", "--endpoint", endpoint,
                             "--namespace", NS, "--out", str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert pub.wait_for_subscribers(1, timeout_s=60), "the recorder never subscribed"
        seq = 0
        deadline = time.monotonic() + 120
        # Publish until the recorder has flushed at least two 1 MiB chunks to disk (the file grows
        # a chunk at a time), then a few more frames so that an unfinished chunk is lost in the kill.
        while not (out.exists() and out.stat().st_size > 2_200_000):
            assert time.monotonic() < deadline and proc.poll() is None, "the recorder wrote too little"
            pub.publish_masks(seq=seq, capture_ns=time.time_ns(), frame_id="crash", masks=masks_of(seq),
                              latency_ms={"infer": 1.0}, model_id="tiny-test")
            seq += 1
            time.sleep(0.002)  # paces the publisher so the recorder keeps up; nothing is timed
        for _ in range(5):
            pub.publish_masks(seq=seq, capture_ns=time.time_ns(), frame_id="crash", masks=masks_of(seq),
                              latency_ms={"infer": 1.0}, model_id="tiny-test")
            seq += 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pub.close()
    assert proc.returncode == -signal.SIGKILL
    return out, seq


def test_killed_recording_is_unfinished(killed_recording):
    path, _ = killed_recording
    assert not recording_is_intact(path)
    with open(path, "rb") as f, pytest.raises(Exception):  # noqa: B017,PT011 - any error: no footer to read
        make_reader(f).get_summary()


def test_recover_rebuilds_an_indexed_file_that_rosbags_reads(killed_recording, tmp_path):
    rosbags = pytest.importorskip("rosbags.rosbag2", reason="rosbags (dev extra) is not installed")
    from rosbags.typesys import Stores, get_typestore

    damaged, published = killed_recording
    streamed = list(read_recording(damaged))  # the stream reader reads up to the cut
    out = tmp_path / "recovered.mcap"
    summary = recover_recording(damaged, out)
    assert summary.cut is not None and summary.messages > 0 and summary.bytes_out > 0
    assert recording_is_intact(out)
    with open(out, "rb") as f:
        reader = make_reader(f)
        stats = reader.get_summary().statistics
        assert stats.message_count == summary.messages == 2 * len(streamed)
        assert reader.get_header().profile == "ros2"

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    seqs: dict[str, list[int]] = {}
    with rosbags.Reader(out) as bag:
        assert bag.message_count == summary.messages
        # The channel metadata survives recovery: rosbag2's QoS profiles are still there.
        assert all(c.ext.offered_qos_profiles for c in bag.connections)
        for connection, _, raw in bag.messages():
            if connection.msgtype != "sensor_msgs/msg/Image":
                continue
            image = typestore.deserialize_cdr(raw, connection.msgtype)
            seqs.setdefault(connection.topic, []).append(image.header.stamp.sec * 10**9 + image.header.stamp.nanosec)
            if connection.topic.endswith("/class_map"):
                seqs.setdefault("class_map_images", []).append(image)
    images = seqs.pop("class_map_images")
    assert sorted(seqs) == [f"/{NS}/{n}" for n in ("class_map", "drivable", "lane", "obstacle")]
    # What rosbags reads is exactly what our own reader streamed from the damaged file.
    ours = [m for m in streamed if m.topic == f"{NS}/class_map"]
    assert len(images) == len(ours) > 10
    for image, msg in zip(images, ours, strict=True):
        assert (image.height, image.width, image.encoding) == (H, W, "8UC1")
        np.testing.assert_array_equal(image.data.reshape(H, W), masks_of(msg.seq)["class_map"])
    assert [m.seq for m in ours] == list(range(len(ours)))  # contiguous from the first frame
    assert len(ours) < published  # the chunk being filled at the kill is lost, nothing before it


def test_recover_cli_in_place_then_replay(killed_recording, tmp_path):
    damaged, _ = killed_recording
    work = tmp_path / "run.mcap"
    work.write_bytes(damaged.read_bytes())
    done = subprocess.run([sys.executable, "-m", "perception", "record", "--recover", str(work)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "recovered" in done.stdout and "run.mcap.damaged" in done.stdout
    assert recording_is_intact(work)
    assert (tmp_path / "run.mcap.damaged").read_bytes() == damaged.read_bytes()
    assert [m.seq for m in read_recording(tmp_path) if m.topic == f"{NS}/lane"][:3] == [0, 1, 2]
    again = subprocess.run([sys.executable, "-m", "perception", "record", "--recover", str(work)],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "nothing to recover" in again.stdout


@pytest.mark.parametrize("out", ["run.mcap", "./run.mcap", "{abs}"])
def test_recover_with_out_equal_to_the_input_keeps_the_original(killed_recording, tmp_path, out):
    """--recover F --out F is in place too: the original bytes are kept as F.damaged, not lost."""
    damaged, _ = killed_recording
    work = tmp_path / "run.mcap"
    work.write_bytes(damaged.read_bytes())
    done = subprocess.run([sys.executable, "-m", "perception", "record", "--recover", "run.mcap",
                           "--out", out.format(abs=work)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "run.mcap.damaged" in done.stdout
    assert (tmp_path / "run.mcap.damaged").read_bytes() == damaged.read_bytes()
    assert recording_is_intact(work)


def test_recover_never_replaces_an_earlier_original_or_an_unnamed_file(killed_recording, tmp_path):
    damaged, _ = killed_recording
    work, kept, other = tmp_path / "run.mcap", tmp_path / "run.mcap.damaged", tmp_path / "other.mcap"
    work.write_bytes(damaged.read_bytes())
    kept.write_bytes(b"the original of an earlier recovery")
    with pytest.raises(ConfigError, match=r"run\.mcap\.damaged already exists.*--out"):
        recover_recording(work)
    assert kept.read_bytes() == b"the original of an earlier recovery"
    assert work.read_bytes() == damaged.read_bytes()
    other.write_bytes(b"another file")
    with pytest.raises(ConfigError, match=r"other\.mcap already exists.*--overwrite"):
        recover_recording(work, other)
    assert other.read_bytes() == b"another file" and not (tmp_path / "other.mcap.recovering").exists()
    assert recover_recording(work, other, overwrite=True).messages > 0
    assert recording_is_intact(other) and work.read_bytes() == damaged.read_bytes()


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (None, [], "recording {path} not found"),
        (b"not mcap at all", [], "is not an MCAP file"),
        (b"\x89MCAP0\r\n", [], "nothing to recover"),
        (b"\x89MCAP0\r\n", ["--namespace", "x"], "leave out --namespace"),
    ],
)
def test_recover_errors_are_one_line(tmp_path, content, extra, message):
    path = tmp_path / "bad.mcap"
    if content is not None:
        path.write_bytes(content)
    done = subprocess.run([sys.executable, "-m", "perception", "record", "--recover", str(path), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message.format(path=path) in lines[0], done.stderr
    assert not Path(str(path) + ".recovering").exists()
