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

from perception.errors import ConfigError, SourceError
from perception.mcap_reader import read_recording
from perception.publish import MaskPublisher
from perception.recover import recording_is_intact, recover_recording

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


# ---------------------------------------------------------------- damaged, hostile and odd inputs

def chunked_recording(path, n_frames: int = 12) -> list[int]:
    """A complete recording of ``n_frames`` 24x32 class maps in small chunks (several frames each);
    the offsets of each chunk's zstd data in the file."""
    from perception.mcap_writer import McapMaskWriter
    from perception.subscribe import Message
    from perception.wire import mask_header

    writer = McapMaskWriter(path, chunk_size=2048)
    for seq in range(n_frames):
        header = mask_header(height=24, width=32, compression="none", values="class_ids", seq=seq,
                             capture_ns=seq, publish_ns=seq, frame_id="rec", model_id="m", latency_ms={})
        writer.write(Message(f"{NS}/class_map", header, frame_masks(seq)["class_map"], 1, 1000 + seq))
    writer.close()
    data = path.read_bytes()
    offsets, at = [], data.find(b"\x28\xb5\x2f\xfd")
    while at >= 0:
        offsets.append(at)
        at = data.find(b"\x28\xb5\x2f\xfd", at + 1)
    assert len(offsets) >= 4, offsets
    return offsets


def raw_mcap(chunk_compression: str, chunk_data: bytes, declared_size: int) -> bytes:
    """An MCAP file of a header and one hand-made chunk (as a hostile or damaged file holds)."""
    import struct

    def record(op, body):
        return bytes([op]) + struct.pack("<Q", len(body)) + body

    def string(x):
        x = x.encode() if isinstance(x, str) else x
        return struct.pack("<I", len(x)) + x

    chunk = struct.pack("<QQQI", 0, 1, declared_size, 0) + string(chunk_compression) + \
        struct.pack("<Q", len(chunk_data)) + chunk_data
    return b"\x89MCAP0\r\n" + record(1, string("ros2") + string("test")) + record(6, chunk) + \
        record(15, struct.pack("<I", 0))


def chunk_data_length(data: bytes, at: int) -> int:
    """The length of the chunk data that starts at ``at`` (the u64 just before it)."""
    import struct

    return struct.unpack("<Q", data[at - 8: at])[0]


@pytest.mark.parametrize("how", ["flip", "zeros"])
def test_a_chunk_damaged_inside_is_skipped_and_the_rest_read(tmp_path, caplog, how):
    """A bit flip or a zero-filled block (a torn write) inside the data of one chunk, its framing
    intact: replay warns once, skips that chunk's messages and plays the rest; --recover is not
    fooled by the intact summary, keeps every other record and names the chunk it skipped."""
    path = tmp_path / "run.mcap"
    offsets = chunked_recording(path)
    data = bytearray(path.read_bytes())
    hit = offsets[2]  # the third chunk
    if how == "flip":
        data[hit + 8] ^= 0xFF
    else:
        length = chunk_data_length(data, hit)
        data[hit + 4: hit + length - 4] = bytes(length - 8)
    path.write_bytes(bytes(data))
    messages = list(read_recording(path))
    seqs = [m.seq for m in messages]
    lost = sorted(set(range(12)) - set(seqs))
    # One whole chunk's frames are missing, in one run, neither the first frames nor the last.
    assert lost and seqs == sorted(seqs) and lost == list(range(lost[0], lost[-1] + 1)), seqs
    assert lost[0] > 0 and lost[-1] < 11
    assert caplog.text.count("skipping a damaged chunk") == 1 and "damaged at byte" in caplog.text
    assert "cut short" not in caplog.text
    assert not recording_is_intact(path)
    summary = recover_recording(path, tmp_path / "out.mcap")
    # MCAP messages: each wire message is two (its header in /meta, and its data).
    assert summary.messages == 2 * len(messages) and summary.cut is None and summary.orphaned == 0
    assert len(summary.skipped) == 1 and "at byte" in summary.skipped[0] and "chunk" in summary.skipped[0]
    assert [m.seq for m in read_recording(tmp_path / "out.mcap")] == seqs
    assert recording_is_intact(tmp_path / "out.mcap")
    done = subprocess.run([sys.executable, "-m", "perception", "record", "--recover", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "nothing to recover" not in done.stdout, done.stdout + done.stderr
    assert "skipped 1 damaged chunk" in done.stdout and "Traceback" not in done.stderr


def test_damage_across_a_chunk_boundary_is_a_cut(tmp_path, caplog):
    """Zeros that run past a chunk's end break the framing of the records after it: where the next
    record starts is unknown, so reading stops there (a cut), keeping everything before."""
    path = tmp_path / "run.mcap"
    offsets = chunked_recording(path)
    data = bytearray(path.read_bytes())
    hit = offsets[2]
    end = hit + chunk_data_length(data, hit) + 40
    data[hit + 4: end] = bytes(end - hit - 4)
    path.write_bytes(bytes(data))
    seqs = [m.seq for m in read_recording(path)]
    assert 0 < len(seqs) < 12 and seqs == list(range(len(seqs)))
    assert "cut short" in caplog.text
    summary = recover_recording(path, tmp_path / "out.mcap")
    assert summary.cut and [m.seq for m in read_recording(tmp_path / "out.mcap")][:len(seqs)] == seqs


def test_a_channel_declared_in_a_damaged_chunk_comes_from_the_summary(tmp_path, caplog):
    """The first chunk holds the schema and channel records; damaged, the messages after it would
    have no channel. A file with an intact summary section declares them there too: replay and
    recover read every later message; without the summary, they are counted, not guessed."""
    path = tmp_path / "run.mcap"
    offsets = chunked_recording(path)
    data = bytearray(path.read_bytes())
    data[offsets[0] + 8] ^= 0xFF
    path.write_bytes(bytes(data))
    seqs = [m.seq for m in read_recording(path)]
    assert seqs and seqs[0] > 0 and seqs[-1] == 11 and seqs == list(range(seqs[0], 12))
    summary = recover_recording(path, tmp_path / "out.mcap")
    assert summary.orphaned == 0 and len(summary.skipped) == 1
    assert [m.seq for m in read_recording(tmp_path / "out.mcap")] == seqs
    # The same damage in a file cut before its summary (its recorder was killed, say).
    data_end = bytes(data).rfind(b"\x0f\x04\x00\x00\x00\x00\x00\x00\x00")  # DataEnd: opcode 0x0F, length 4
    assert data_end > offsets[-1]
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(bytes(data[:data_end]))
    with pytest.raises(SourceError, match=r"\d+ messages on channels declared only in a damaged chunk"):
        recover_recording(cut, tmp_path / "out2.mcap")
    with pytest.raises(SourceError, match="damaged at byte"):
        list(read_recording(cut))


@pytest.mark.parametrize(
    ("compression", "data", "declared", "message"),
    [
        ("zstd", b"garbage" * 10, 1000, "zstd chunk does not decompress"),
        ("lz4", b"garbage" * 10, 1000, "lz4 chunk does not decompress"),
        ("brotli", b"garbage" * 10, 70, "unknown compression 'brotli'"),
        # A decompression bomb: refused from its declared size, before anything is inflated.
        ("zstd", b"\x28\xb5\x2f\xfd" + bytes(20), 3 * 2**30, "more than the 256 MiB limit"),
        # One that lies about its size: inflated no further than the size it declares.
        ("zstd", "zeros", 100, "inflates to more than the 100 bytes it declares"),
        ("lz4", "zeros", 100, "inflates to more than the 100 bytes it declares"),
    ],
)
def test_bad_and_hostile_chunks_give_one_line(tmp_path, compression, data, declared, message, capsys):
    import lz4.frame
    import zstandard

    from perception.cli import main as cli_main

    if data == "zeros":  # 64 MiB of zeros in a few kB
        data = (zstandard.compress if compression == "zstd" else lz4.frame.compress)(bytes(64 * 2**20))
    path = tmp_path / "bad.mcap"
    path.write_bytes(raw_mcap(compression, data, declared))
    argvs = [["replay", str(path), "--max-rate", "--endpoint", free_endpoint()], ["record", "--recover", str(path)]]
    # In process (a dozen interpreters cost seconds of the suite); one case also runs as the
    # program itself, where a log line or a traceback would show on stderr too.
    for argv in argvs:
        assert cli_main(argv) == 2, argv
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "()" not in lines[0], lines
    if declared == 3 * 2**30:
        for argv in argvs:
            done = subprocess.run([sys.executable, "-m", "perception", *argv], cwd=REPO, capture_output=True,
                                  text=True, timeout=60)
            assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mcap"]  # nothing recovered, nothing replaced


def test_recover_a_fifo_or_folder_is_refused_without_hanging(tmp_path):
    from perception.errors import SourceError
    from perception.mcap_reader import recording_files

    fifo = tmp_path / "rec" / "fifo.mcap"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    for call in (lambda: recover_recording(fifo), lambda: recording_files(fifo), lambda: recording_files(fifo.parent),
                 lambda: list(read_recording(fifo.parent))):
        with pytest.raises(SourceError, match="fifo.mcap is a FIFO, not a recording file"):
            call()
    assert not recording_is_intact(fifo)
    with pytest.raises(SourceError, match="holds no split recording"):  # a folder: its splits' metadata.yaml (s41)
        recover_recording(tmp_path)


class FullDisk:
    """A file that takes ``room`` bytes and then fails every write, flush and close with ENOSPC."""

    def __init__(self, path, mode, room):
        self._file, self._room = open(path, mode), room  # noqa: SIM115 - closed in close()

    def write(self, data):
        import errno

        if len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._file.write(data)

    def tell(self):
        return self._file.tell()

    def flush(self):
        self._file.flush()

    def close(self):
        import errno

        self._file.close()
        if self._room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_recover_on_a_full_disk_or_to_a_folder_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import perception.recover as recover

    path = tmp_path / "run.mcap"
    chunked_recording(path, n_frames=30)
    before = path.read_bytes()
    monkeypatch.setattr(recover, "open", lambda p, mode: FullDisk(p, mode, 3000), raising=False)
    with pytest.raises(ConfigError, match=r"cannot write .*run\.mcap\.recovering: No space left on device; free space"):
        recover_recording(path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.mcap"] and path.read_bytes() == before
    (tmp_path / "dir.mcap").mkdir()
    done = subprocess.run([sys.executable, "-m", "perception", "record", "--recover", str(path), "--out",
                           str(tmp_path / "dir.mcap"), "--overwrite"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "dir.mcap is a folder" in done.stderr and len(done.stderr.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.mcap", "run.mcap"]


def test_no_cut_warning_when_only_the_summary_is_cut(tmp_path, caplog):
    from mcap.stream_reader import StreamReader

    path = tmp_path / "run.mcap"
    chunked_recording(path)
    data = path.read_bytes()
    with open(path, "rb") as f:  # where DataEnd ends: the summary follows
        reader = StreamReader(f)
        for record in reader.records:
            if type(record).__name__ == "DataEnd":
                end = f.tell()
                break
    (tmp_path / "cut.mcap").write_bytes(data[: end + 20])
    assert len(list(read_recording(tmp_path / "cut.mcap"))) == 12 and "cut short" not in caplog.text
