"""Recording to MCAP and replaying it: real sockets on loopback, read back with the MCAP/ROS 2 readers.

A recording must hold every message of a lossless stream as ROS 2 ``sensor_msgs/msg/Image``
(exact masks, stamps from capture time) plus the wire headers, and a replay must put the same
headers and masks back on the wire.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
import zmq
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from tiny_models import write_brightness_model

from perception.mcap_reader import read_recording
from perception.publish import MaskPublisher
from perception.record import RecordConfig, Recorder
from perception.subscribe import MaskSubscriber

REPO = Path(__file__).resolve().parents[1]
NS = "perception/rec"
N_FRAMES = 12
ENCODINGS = {"drivable": "png", "lane": "bitpack", "obstacle": "mono8", "class_map": "rle"}


def free_endpoint() -> str:
    from loopback_ports import free_endpoint

    return free_endpoint()  # this xdist worker's own port block (a freed bind(0) port may be taken)


def wait_until(predicate, timeout_s: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def frame_masks(seq: int, shape: tuple[int, int] = (24, 32)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seq)
    class_map = rng.integers(0, 11, shape, dtype=np.uint8)
    return {
        "drivable": np.where(class_map < 2, 255, 0).astype(np.uint8),
        "lane": np.where(class_map == 1, 255, 0).astype(np.uint8),
        "obstacle": np.where(class_map >= 8, 255, 0).astype(np.uint8),
        "class_map": class_map,
    }


def wait_for_recorder(recorder: Recorder, pub: MaskPublisher) -> None:
    """The recorder is connected once it has received something: until then, stats pings."""
    deadline = time.monotonic() + 20
    while recorder.messages == 0:
        assert time.monotonic() < deadline, "the recorder never received a ping"
        pub.publish_json("stats", {"ping": True})
        time.sleep(0.02)  # ping interval, not synchronisation: the loop waits on recorder.messages


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """Record a lossless stream of N_FRAMES frames (four mask topics) plus stats documents."""
    out = tmp_path_factory.mktemp("rec") / "run.mcap"
    endpoint = free_endpoint()
    recorder = Recorder(RecordConfig(out=out, endpoint=endpoint, namespace=NS))
    stop = threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: result.update(summary=recorder.run(stop)))
    thread.start()
    pub = MaskPublisher(endpoint=endpoint, namespace=NS, encodings=ENCODINGS, sndhwm=1000)
    captures = {}
    try:
        wait_for_recorder(recorder, pub)
        for seq in range(N_FRAMES):
            captures[seq] = time.time_ns()
            pub.publish_masks(seq=seq, capture_ns=captures[seq], frame_id="rec", masks=frame_masks(seq),
                              latency_ms={"infer": 1.5 + seq}, model_id="tiny-test")
        pub.publish_json("stats", {"frames": N_FRAMES})
        wait_until(lambda: recorder._writer.counts.get(f"{NS}/class_map") is not None
                   and recorder._writer.counts[f"{NS}/class_map"].messages == N_FRAMES
                   and recorder._writer.counts[f"{NS}/stats"].last_seq is not None
                   and recorder.messages >= 4 * N_FRAMES + 2, what="all frames recorded")
    finally:
        stop.set()
        thread.join(timeout=10)
        pub.close()
    return out, captures, result["summary"]


def test_recording_is_ros2_images_with_exact_masks_and_contiguous_seqs(recording):
    path, captures, summary = recording
    assert summary.counts[f"{NS}/lane"].missing == 0
    images: dict[str, list] = {}
    metas: dict[str, list] = {}
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        meta_records = {m.name: m.metadata for m in reader.iter_metadata()}
        for schema, channel, message, ros in reader.iter_decoded_messages():
            if channel.topic.endswith("/meta"):
                metas.setdefault(channel.topic, []).append(json.loads(ros.data))
            elif schema.name == "sensor_msgs/msg/Image":
                images.setdefault(channel.topic, []).append((message.sequence, ros))
    assert json.loads(meta_records["perception.recording"]["message_counts"])[f"{NS}/class_map"] == N_FRAMES
    for name in ("drivable", "lane", "obstacle", "class_map"):
        got = images[f"/{NS}/{name}"]
        assert [seq for seq, _ in got] == list(range(N_FRAMES))
        for seq, ros in got:
            expected = frame_masks(seq)[name]
            encoding = "8UC1" if name == "class_map" else "mono8"  # class ids are values, not intensities
            assert (ros.height, ros.width, ros.step, ros.encoding, ros.is_bigendian) == (24, 32, 32, encoding, 0)
            assert ros.header.frame_id == "rec"
            assert ros.header.stamp.sec * 10**9 + ros.header.stamp.nanosec == captures[seq]
            np.testing.assert_array_equal(np.frombuffer(ros.data, np.uint8).reshape(24, 32), expected)
        headers = metas[f"/{NS}/{name}/meta"]
        assert [h["seq"] for h in headers] == list(range(N_FRAMES))
        assert headers[3]["model_id"] == "tiny-test" and headers[3]["latency_ms"]["infer"] == 4.5
        assert headers[0]["compression"] == {"png": "png", "bitpack": "bitpack", "mono8": "none", "rle": "rle"}[ENCODINGS[name]]
    stats = [m for m in read_recording(path) if m.topic == f"{NS}/stats"]
    assert stats[-1].data == {"frames": N_FRAMES}


def test_replay_republishes_identical_messages(recording, tmp_path):
    path, _, _ = recording
    recorded = {(m.topic, m.seq): m for m in read_recording(path) if m.kind == "mask"}
    endpoint = free_endpoint()
    sub = MaskSubscriber(endpoint, namespace=NS, masks=["drivable", "lane", "obstacle", "class_map"])
    proc = subprocess.Popen([sys.executable, "-m", "perception", "replay", str(path), "--max-rate",
                             "--endpoint", endpoint, "--wait-first-subscriber", "30"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    got = {}
    try:
        deadline = time.monotonic() + 30
        while len(got) < len(recorded) and time.monotonic() < deadline:
            msg = sub.recv(timeout_s=0.5)
            if msg is not None:
                got[(msg.topic, msg.seq)] = msg
        out, err = proc.communicate(timeout=30)
    finally:
        sub.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"replayed {len(recorded) + sum(1 for m in read_recording(path) if m.kind == 'json')} messages" in out
    assert set(got) == set(recorded)
    for key, msg in got.items():
        assert msg.header == recorded[key].header
        np.testing.assert_array_equal(msg.data, recorded[key].data)


def test_record_cli_with_a_lossless_node_keeps_every_frame(tmp_path):
    """A video through the node in lossless mode plus a recorder, as in launch/replay.yaml."""
    model = write_brightness_model(tmp_path / "tiny.onnx", (48, 64))
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (80, 60))
    for i in range(15):
        writer.write(np.full((60, 80, 3), i * 16, np.uint8))
    writer.release()
    out = tmp_path / "clip.mcap"
    shipped = yaml.safe_load((REPO / "launch" / "replay.yaml").read_text())
    node = next(e["node"] for e in shipped["launch"] if "node" in e and e["node"]["kind"] == "pipeline")
    # The node holds its first frame until the recorder has subscribed (no delay, no long warm-up).
    assert node["parameters"]["wait_subscribers"] == 1 and "delay" not in node
    assert node["parameters"]["queue"] == "lossless"
    # Start the recorder well after the node, longer than the whole clip plays (0.6 s): without
    # the wait every frame would be gone before the recorder joins.
    recorder = next(e["node"] for e in shipped["launch"] if "node" in e and e["node"]["kind"] == "record")
    recorder["delay"] = 1.0
    launch_file = tmp_path / "replay.yaml"
    launch_file.write_text(yaml.safe_dump(shipped))
    done = subprocess.run(
        [sys.executable, "-m", "perception", "launch", str(launch_file), f"video:={video}", f"model:={model}",
         f"out:={out}", f"endpoint:={free_endpoint()}"],
        cwd=REPO, capture_output=True, text=True, timeout=90,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    seqs: dict[str, list[int]] = {}
    for msg in read_recording(out):
        if msg.kind == "mask":
            seqs.setdefault(msg.topic, []).append(msg.seq)
    assert sorted(seqs) == [f"perception/front/{n}" for n in ("class_map", "drivable", "lane", "obstacle")]
    assert all(s == list(range(15)) for s in seqs.values()), seqs


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["record", "--namespace", "perception/x", "--out", "/proc/no/such/run.mcap"], "cannot write /proc/no/such/run.mcap"),
        (["record", "--namespace", "perception/x", "--out", "x.mcap", "--duration", "-1"], "duration_s=-1.0 is out of range"),
        (["replay", "missing.mcap"], "recording missing.mcap not found"),
        (["replay", "{garbage}"], "is not an MCAP file"),
        (["replay", "{truncated}"], "not a readable MCAP recording"),
    ],
)
def test_record_and_replay_errors_are_one_line(tmp_path, recording, argv, message):
    (tmp_path / "garbage.mcap").write_bytes(b"not an mcap file at all")
    (tmp_path / "truncated.mcap").write_bytes(recording[0].read_bytes()[:200])
    argv = [a.format(garbage=tmp_path / "garbage.mcap", truncated=tmp_path / "truncated.mcap") for a in argv]
    done = subprocess.run([sys.executable, "-m", "perception", *argv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("perception: error: ") and message in lines[0], done.stderr


def test_truncated_recording_replays_up_to_the_cut(tmp_path, caplog):
    from perception.mcap_writer import McapMaskWriter
    from perception.subscribe import Message
    from perception.wire import mask_header

    path = tmp_path / "small_chunks.mcap"
    writer = McapMaskWriter(path, chunk_size=2048)  # many chunks, as a long recording has
    for seq in range(N_FRAMES):
        mask = frame_masks(seq)["class_map"]
        header = mask_header(height=24, width=32, compression="none", values="class_ids", seq=seq,
                             capture_ns=seq, publish_ns=seq, frame_id="rec", model_id="m", latency_ms={})
        writer.write(Message(f"{NS}/class_map", header, mask, 0, seq + 1))
    writer.close()
    data = path.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: len(data) // 2])  # as if the recorder had been killed half way
    messages = list(read_recording(cut))
    assert 0 < len(messages) < N_FRAMES
    assert [m.seq for m in messages] == list(range(len(messages)))
    np.testing.assert_array_equal(messages[-1].data, frame_masks(len(messages) - 1)["class_map"])
    assert "cut short" in caplog.text


def test_a_topic_keeps_one_schema_in_a_recording(tmp_path):
    """A mask arriving on a topic already recorded as JSON (or the reverse) is refused by the writer,
    so the topic's real messages stay readable; before, the first message chose the channel's
    schema and every later real document failed to decode on replay."""
    from perception.mcap_writer import McapMaskWriter
    from perception.subscribe import Message
    from perception.wire import json_header, mask_header

    path = tmp_path / "one_schema.mcap"
    writer = McapMaskWriter(path)
    stats = [Message(f"{NS}/odd", json_header(name="odd", seq=s, publish_ns=s), {"seq": s}, 1, 1000 + s) for s in range(3)]
    mask = mask_header(height=24, width=32, compression="none", values="class_ids", seq=9, capture_ns=9,
                       publish_ns=9, frame_id="rec", model_id="m", latency_ms={})
    writer.write(stats[0])
    with pytest.raises(ValueError, match="recorded as std_msgs/msg/String; a sensor_msgs/msg/Image message"):
        writer.write(Message(f"{NS}/odd", mask, frame_masks(9)["class_map"], 1, 1001))
    writer.write(stats[1])
    writer.write(stats[2])
    writer.close()
    assert [(m.topic, m.data) for m in read_recording(path)] == [(f"{NS}/odd", {"seq": s}) for s in range(3)]


def write_small_recording(path, n_frames: int = 5, *, log_times=None) -> int:
    """A complete recording of ``n_frames`` class maps and stats documents; the number of messages.
    ``log_times`` gives each frame's receive time (ns)."""
    from perception.mcap_writer import McapMaskWriter
    from perception.subscribe import Message
    from perception.wire import json_header, mask_header

    writer = McapMaskWriter(path)
    for seq in range(n_frames):
        received = log_times[seq] if log_times else 1000 + seq
        header = mask_header(height=24, width=32, compression="none", values="class_ids", seq=seq,
                             capture_ns=seq, publish_ns=seq, frame_id="rec", model_id="m", latency_ms={})
        writer.write(Message(f"{NS}/class_map", header, frame_masks(seq)["class_map"], wire_bytes=1,
                             receive_ns=received))
        writer.write(Message(f"{NS}/stats", json_header(name="stats", seq=seq, publish_ns=seq), {"seq": seq},
                             wire_bytes=1, receive_ns=received))
    writer.close()
    return 2 * n_frames


def rewrite_messages(src, dst, change) -> None:
    """Copy the MCAP file ``src`` to ``dst`` record by record (mcap's stream reader and writer),
    each message's data passed through ``change(channel topic, sequence, data)``."""
    from mcap.records import Channel, DataEnd, Header, Message, Metadata, Schema
    from mcap.stream_reader import StreamReader
    from mcap.writer import Writer

    with open(src, "rb") as f, open(dst, "wb") as out:
        writer, schemas, channels = Writer(out), {}, {}
        for record in StreamReader(f).records:
            if isinstance(record, Header):
                writer.start(record.profile, record.library)
            elif isinstance(record, Schema) and record.id not in schemas:
                schemas[record.id] = writer.register_schema(record.name, record.encoding, record.data)
            elif isinstance(record, Channel) and record.id not in channels:
                channels[record.id] = (writer.register_channel(record.topic, record.message_encoding,
                                                               schemas[record.schema_id], dict(record.metadata)),
                                       record.topic)
            elif isinstance(record, Message):
                channel, topic = channels[record.channel_id]
                writer.add_message(channel, record.log_time, change(topic, record.sequence, record.data),
                                   record.publish_time, record.sequence)
            elif isinstance(record, Metadata):
                writer.add_metadata(record.name, dict(record.metadata))
            elif isinstance(record, DataEnd):
                break
        writer.finish()


def _damage(channel: str, seq: int, how: str):
    """A ``change`` for rewrite_messages that damages the message of ``channel`` with sequence ``seq``."""
    def change(topic, sequence, data):
        if topic != channel or sequence != seq:
            return data
        # CDR: 4-byte encapsulation header, then a string's uint32 length and its bytes.
        return data[:8] + b"\xff\xfe" + data[10:] if how == "utf8" else data[:20]
    return change


@pytest.mark.parametrize(
    ("channel", "how"),
    [(f"/{NS}/stats", "utf8"), (f"/{NS}/stats/meta", "utf8"), (f"/{NS}/class_map", "cut")],
    ids=["stats-invalid-utf8", "header-invalid-utf8", "image-cut-short"],
)
def test_a_message_that_does_not_decode_is_skipped_counted_and_named(tmp_path, caplog, channel, how):
    """A complete file with one bad message: the rest replays, the bad one is named, and the file is
    not called cut short (--recover would say it is complete)."""
    from perception.mcap_reader import ReadCounters
    from perception.recover import recording_is_intact

    good, bad = tmp_path / "good.mcap", tmp_path / "bad.mcap"
    total = write_small_recording(good)
    rewrite_messages(good, bad, _damage(channel, 2, how))
    assert recording_is_intact(bad)
    counters = ReadCounters()
    got = [(m.topic.rpartition("/")[2], m.seq) for m in read_recording(bad, counters=counters)]
    lost = "class_map" if "class_map" in channel else "stats"
    assert len(got) == total - 1 and (lost, 2) not in got and got[-1][1] == 4
    assert counters.malformed == 1 and f"{channel} seq 2" in counters.last_error
    assert "cut short" not in caplog.text and "skipped a recorded message" in caplog.text


def test_replay_cli_skips_an_undecodable_message_and_exits_0(tmp_path):
    good, bad = tmp_path / "good.mcap", tmp_path / "bad.mcap"
    total = write_small_recording(good)
    rewrite_messages(good, bad, _damage(f"/{NS}/stats", 3, "utf8"))
    done = subprocess.run([sys.executable, "-m", "perception", "replay", str(bad), "--max-rate",
                           "--endpoint", free_endpoint()], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"replayed {total - 1} messages" in done.stdout and "1 malformed skipped" in done.stdout
    assert f"/{NS}/stats seq 3" in done.stderr and "cut short" not in done.stderr


def test_record_that_receives_nothing_says_where_it_listened(tmp_path, capsys):
    from perception.cli import main

    endpoint = free_endpoint()  # nothing publishes there
    for what, flag in ((["--namespace", NS], "--namespace"), (["--topic", f"{NS}/lane"], "--topic")):
        out = tmp_path / f"empty{flag}.mcap"
        # Exit 4 (a stream that is not there) and no empty file to block the next run, nor the
        # folders made for --out (hunt 5d finding 11).
        out = tmp_path / "new" / "sub" / out.name
        assert main(["record", *what, "--endpoint", endpoint, "--out", str(out), "--duration", "0.2"]) == 4
        printed, err = capsys.readouterr()
        assert not out.exists() and list(tmp_path.iterdir()) == []
        # Said once, on stderr, with the hint (hunt 5d finding 2: the hint was on stdout as well).
        assert printed.strip().startswith("recording ") and len(printed.strip().splitlines()) == 1, printed
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"perception: error: nothing recorded, so no file was written to {out}: no messages "
                              f"received from {endpoint} in "), err
        assert re.search(r"in \d+\.\d s; is the node running\? check --endpoint / " + flag, err), err
        assert err.rstrip().endswith("(a node with --curve-secret-key needs --curve-server-key and --curve-key)"), err


def test_replay_shortens_a_huge_gap_between_recorded_times(tmp_path, caplog):
    """A 10^18 ns jump in log times (a damaged clock) must not make the replay wait for years."""
    from perception.replay import MAX_GAP_S, ReplayConfig, run_replay

    path = tmp_path / "gap.mcap"
    total = write_small_recording(path, log_times=[0, 10**6, 10**18, 2 * 10**18, 2 * 10**18 + 10**6])

    class Sink:
        endpoint = "inproc://sink"
        sent: list = []

        def send(self, msg, stop, *, shift_ns=0):
            self.sent.append(msg.seq)
            return True

    stop, result = threading.Event(), {}
    # At --rate 100 each shortened gap takes MAX_GAP_S / 100 s.
    worker = threading.Thread(target=lambda: result.update(
        summary=run_replay(ReplayConfig(file=path, rate=100.0), stop, publisher=Sink())))
    worker.start()
    worker.join(timeout=2 * MAX_GAP_S / 100 + 10)
    stop.set()
    worker.join(timeout=10)
    assert result["summary"].messages == total, Sink.sent
    assert caplog.text.count("is replayed as") == 1, caplog.text  # said once, for every shortened gap


def test_a_full_disk_ends_the_recording_in_one_line_and_the_file_recovers(tmp_path, monkeypatch, capsys):
    """ENOSPC while recording (a fake file takes 12 kB, then fails every write and its close): one
    line naming the file and --recover, exit 2, no chained tracebacks; what was written recovers."""
    import errno

    import perception.mcap_writer as mcap_writer
    from perception.cli import main
    from perception.recover import recover_recording
    from perception.subscribe import MaskSubscriber, Message
    from perception.wire import mask_header

    class FullDisk:
        def __init__(self, path, mode):
            self._file, self._room = open(path, mode.replace("x", "w")), 12000  # noqa: SIM115

        def write(self, data):
            if len(data) > self._room:
                self._room = 0
                raise OSError(errno.ENOSPC, "No space left on device")
            self._room -= len(data)
            return self._file.write(data)

        def tell(self):
            return self._file.tell()

        def close(self):
            self._file.close()
            if not self._room:
                raise OSError(errno.ENOSPC, "No space left on device")

    frames = iter(range(10_000))

    def recv(self, timeout_s=None):
        seq = next(frames)
        header = mask_header(height=24, width=32, compression="none", values="class_ids", seq=seq, capture_ns=seq,
                             publish_ns=seq, frame_id="rec", model_id="m", latency_ms={})
        return Message(f"{NS}/class_map", header, frame_masks(seq)["class_map"], 1, 1000 + seq)

    monkeypatch.setattr(mcap_writer, "open", FullDisk, raising=False)
    monkeypatch.setattr(MaskSubscriber, "recv", recv)
    out = tmp_path / "full.mcap"
    assert main(["record", "--namespace", NS, "--endpoint", free_endpoint(), "--out", str(out), "--chunk-size", "4",
                 "--duration", "20"]) == 1  # a full disk is exit 1, as the README's general rule says (s38)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"disk full writing {out} after " in err, err
    assert f"perception record --recover {out}" in err
    monkeypatch.undo()
    assert recover_recording(out).messages > 0


def test_a_late_subscriber_to_a_replay_gets_the_latched_info_first(tmp_path):
    """As from a live node: the replay keeps the last <ns>/info and sends it again to each new subscription."""
    from perception.mcap_reader import RecordedMessage
    from perception.replay import ReplayPublisher
    from perception.wire import json_header

    pub = ReplayPublisher(free_endpoint())
    stop = threading.Event()
    info = RecordedMessage(f"{NS}/info", json_header(name="info", seq=0, publish_ns=1), {"classes": ["road"]}, 1)
    stats = RecordedMessage(f"{NS}/stats", json_header(name="stats", seq=0, publish_ns=2), {"fps": 1}, 2)
    sub = None
    try:
        assert pub.send(info, stop) and pub.send(stats, stop)  # nobody listens yet
        sub = zmq.Context.instance().socket(zmq.SUB)  # a raw subscriber: the info here is not a full document
        sub.rcvtimeo, sub.linger = 5000, 0
        sub.connect(pub.endpoint)
        sub.subscribe(f"{NS}/".encode())
        wait_until(lambda: pub.subscriptions > 0, what="the late subscription")
        assert pub.send(stats, stop)
        got = [sub.recv_multipart() for _ in range(2)]
        assert [parts[0].decode() for parts in got] == [f"{NS}/info", f"{NS}/stats"]
        assert json.loads(got[0][2]) == {"classes": ["road"]}
    finally:
        if sub is not None:
            sub.close()
        pub.close()


def test_an_atomic_frames_recording_replays_as_atomic_frames(tmp_path):
    """A node run with --atomic-frames sends every mask of a frame in one <ns>/frame message; the
    recorder stores them split (and the info saying so): the replay puts the frames back together."""
    from perception.mcap_reader import as_sent
    from perception.mcap_writer import McapMaskWriter
    from perception.replay import ReplayConfig, run_replay
    from perception.subscribe import Message
    from perception.wire import json_header, mask_header

    path = tmp_path / "atomic.mcap"
    writer = McapMaskWriter(path)
    names = ["lane", "class_map"]
    info = {"topics": {f"{NS}/{n}": {"kind": "mask", "in": f"{NS}/frame"} for n in names}}
    writer.write(Message(f"{NS}/info", json_header(name="info", seq=0, publish_ns=1), info, 1, 1))
    for seq in range(4):
        for name in names:
            header = mask_header(height=24, width=32, compression="rle" if name == "lane" else "none",
                                 values="binary" if name == "lane" else "class_ids", seq=seq, pub_seq=seq,
                                 capture_ns=100 + seq, publish_ns=200 + seq, frame_id="rec", model_id="m",
                                 latency_ms={})
            writer.write(Message(f"{NS}/{name}", header, frame_masks(seq)[name], 1, 1000 + seq))
        writer.write(Message(f"{NS}/stats", json_header(name="stats", seq=seq, publish_ns=seq), {"seq": seq}, 1,
                             1000 + seq))
    writer.close()
    sent = list(as_sent(read_recording(path)))
    assert [m.topic.rpartition("/")[2] for m in sent] == ["info"] + ["frame", "stats"] * 4
    assert sent[1].header["masks"] == names and sent[1].header["pub_seq"] == 0 and sent[1].header["seq"] == 0

    endpoint = free_endpoint()
    sub = MaskSubscriber(endpoint, topics=[f"{NS}/frame"], split_frames=False)
    try:
        summary = run_replay(ReplayConfig(file=path, max_rate=True, endpoint=endpoint, wait_first_subscriber_s=10),
                             threading.Event())
        assert summary.messages == 9
        frames = [m for m in iter(lambda: sub.recv(timeout_s=2), None) if m.topic == f"{NS}/frame"]
        assert [f.seq for f in frames] == [0, 1, 2, 3]
        for f in frames:
            assert list(f.data) == names
            for name in names:
                np.testing.assert_array_equal(f.data[name].data, frame_masks(f.seq)[name])
    finally:
        sub.close()


def test_replay_takes_the_mask_limit_the_recording_was_made_with(recording):
    """record --max-mask-pixels above the default recorded masks that replay, reading at the
    default, skipped: replay takes the same flag. Here a limit under the masks' size skips them all."""
    path, _, _ = recording
    masks = sum(1 for m in read_recording(path) if m.kind == "mask")
    documents = sum(1 for m in read_recording(path) if m.kind == "json")
    done = subprocess.run([sys.executable, "-m", "perception", "replay", str(path), "--max-rate", "--endpoint",
                           free_endpoint(), "--max-mask-pixels", "1"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"replayed {documents} messages" in done.stdout and f"{masks} malformed skipped" in done.stdout, done.stdout
