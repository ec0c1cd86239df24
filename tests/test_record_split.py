"""Split recordings (``perception record --split-duration / --split-size``): every split is a
complete, indexed MCAP file, and a replay across the splits loses nothing."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from mcap.reader import make_reader
from test_record import ENCODINGS, NS, frame_masks, free_endpoint, wait_until

from perception.errors import ConfigError, SourceError
from perception.mcap_layout import split_path
from perception.mcap_reader import read_recording, recording_files
from perception.publish import MaskPublisher
from perception.record import RecordConfig, Recorder

N_FRAMES = 60
INFO = {"wire_version": 2, "model_id": "m", "unknown_id": 255,
        "classes": [{"id": 0, "name": "road", "color_rgb": [1, 2, 3]}, {"id": 1, "name": "car", "color_rgb": [4, 5, 6]}]}


def record_frames(out, *, pace_s: float = 0.0, overwrite: bool = False, **split) -> tuple:
    """Record N_FRAMES frames of four masks (plus a stats document) with the given split options."""
    endpoint = free_endpoint()
    recorder = Recorder(RecordConfig(out=out, endpoint=endpoint, namespace=NS, overwrite=overwrite, **split))
    stop = threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: result.update(summary=recorder.run(stop)))
    thread.start()
    pub = MaskPublisher(endpoint=endpoint, namespace=NS, encodings=ENCODINGS, sndhwm=10000)
    try:
        # Connected once its subscription has reached the publisher: everything sent from now on is
        # received. Not stats pings until the recorder has one: split 0's duration runs from its first
        # message, so a test thread starved past --split-duration between the first ping and the info
        # left split 0 holding pings alone, without the info the recorder had not received yet.
        assert pub.wait_for_subscribers(1, timeout_s=20), "the recorder never subscribed"
        pub.publish_json("info", INFO)  # the first message, as a node's latched info; repeated at each split's start
        for seq in range(N_FRAMES):
            pub.publish_masks(seq=seq, capture_ns=time.time_ns(), frame_id="rec", masks=frame_masks(seq),
                              latency_ms={"infer": 1.0}, model_id="tiny-test")
            if pace_s:
                time.sleep(pace_s)  # spreads the frames over several split durations; nothing is timed
        wait_until(lambda: recorder._writer.counts.get(f"{NS}/class_map") is not None
                   and recorder._writer.counts[f"{NS}/class_map"].messages == N_FRAMES
                   and recorder._writer.counts[f"{NS}/obstacle"].messages == N_FRAMES, what="all frames recorded")
    finally:
        stop.set()
        thread.join(timeout=10)
        pub.close()
    return result["summary"]


def check_splits(summary, out) -> None:
    files = summary.files
    assert len(files) >= 2, files
    assert files == [split_path(out, i) for i in range(len(files))]
    assert not out.exists()  # only the splits are written
    total = 0
    for index, file in enumerate(files):
        with open(file, "rb") as f:
            reader = make_reader(f)
            summary_section = reader.get_summary()  # read from the footer: the file is finished and indexed
            assert summary_section is not None and summary_section.chunk_indexes
            meta = {m.name: m.metadata for m in reader.iter_metadata()}
            assert meta["perception.recording"]["split_index"] == str(index)
            topics = {c.topic for c in summary_section.channels.values()}
            assert f"/{NS}/info" in topics  # every split holds the latched info
            # ... logged at the split's start, not at the time it was first received: a split's log
            # times (what Foxglove shows, what replay paces by) start with its own data.
            if index:
                times = [(m.log_time, c.topic) for _, c, m in reader.iter_messages(log_time_order=False)]
                assert times[0][1].startswith(f"/{NS}/info"), times[:3]
                assert times[0][0] == min(t for t, topic in times if "/info" not in topic), times[:3]
            total += summary_section.statistics.message_count
    repeats = len(files) - 1  # the info message again at the start of each later split
    assert total == (sum(c.messages for c in summary.counts.values()) + repeats) * 2  # each + its /meta header
    # Replay across the splits, from the folder, the files in order, or the recording's own name.
    for source in (out.parent, files, out):
        assert recording_files(source) == files
        seqs: dict[str, list[int]] = {}
        for msg in read_recording(source):
            if msg.kind == "mask":
                seqs.setdefault(msg.topic, []).append(msg.seq)
                if msg.seq == N_FRAMES - 1 and msg.topic.endswith("class_map"):
                    np.testing.assert_array_equal(msg.data, frame_masks(msg.seq)["class_map"])
        assert len(seqs) == 4 and all(s == list(range(N_FRAMES)) for s in seqs.values()), seqs
        assert [m.data for m in read_recording(source) if m.topic == f"{NS}/info"] == [INFO]


def test_split_by_size(tmp_path):
    out = tmp_path / "rec" / "run.mcap"
    summary = record_frames(out, split_size=0.02)
    check_splits(summary, out)
    sizes = [f.stat().st_size for f in summary.files]
    # A split ends once it reaches 20 kB; it can exceed that by one chunk (4 kB here) plus the summary.
    assert all(s < 20_000 + 4096 + 8192 for s in sizes), sizes
    assert "splits" in summary.format()


def test_split_by_duration(tmp_path):
    out = tmp_path / "rec" / "run.mcap"
    summary = record_frames(out, pace_s=0.01, split_duration=0.15)
    check_splits(summary, out)


def test_recording_files_order_and_errors(tmp_path):
    for i in (0, 1, 2, 10):
        (tmp_path / f"run_{i}.mcap").write_bytes(b"")
    (tmp_path / "run_x.mcap").write_bytes(b"")
    assert [f.name for f in recording_files(tmp_path / "run.mcap")] == ["run_0.mcap", "run_1.mcap", "run_2.mcap",
                                                                        "run_10.mcap"]
    with pytest.raises(SourceError, match="not found"):
        recording_files(tmp_path / "other.mcap")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no .mcap file"):
        recording_files(tmp_path / "empty")


def chunk_sizes(path) -> list[int]:
    with open(path, "rb") as f:
        return [c.uncompressed_size for c in make_reader(f).get_summary().chunk_indexes]


def test_chunk_size_bounds_what_a_killed_recorder_holds_in_memory(tmp_path):
    # --chunk-size KB: the chunk being filled (what an outright kill loses) stays near KB; the default
    # 1 MiB chunk holds the whole of this small recording in one chunk.
    small = record_frames(tmp_path / "small.mcap", chunk_size_kb=4)
    default = record_frames(tmp_path / "default.mcap")
    small_chunks, default_chunks = chunk_sizes(small.files[0]), chunk_sizes(default.files[0])
    assert len(default_chunks) == 1
    largest_message = max(m.data.nbytes for m in read_recording(small.files[0]) if m.kind == "mask")
    assert len(small_chunks) > 10
    assert max(small_chunks) <= 4096 + 2 * largest_message + 1024  # one message can overshoot, plus record headers
    assert [m.seq for m in read_recording(small.files[0]) if m.topic.endswith("class_map")] == list(range(N_FRAMES))


def test_chunk_size_out_of_range_names_the_flag(tmp_path, capsys):
    from perception.cli import main

    assert main(["record", "--out", str(tmp_path / "x.mcap"), "--namespace", NS, "--chunk-size", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--chunk-size 2" in err and "[4, 65536]" in err, err
    assert not (tmp_path / "x.mcap").exists()


def test_a_second_recording_to_the_same_out_is_refused_unless_overwrite(tmp_path):
    """A shorter second recording to the same --out used to replace run_0 and leave the old run_1,
    run_2..., so that a replay of run.mcap mixed the two sessions (time and seq going backwards)."""
    out = tmp_path / "rec" / "run.mcap"
    first = record_frames(out, pace_s=0.01, split_duration=0.15)
    assert len(first.files) >= 3, first.files
    before = {f: f.read_bytes() for f in first.files}
    with pytest.raises(ConfigError, match=r"run_0\.mcap, .*run_1\.mcap, .*already exist.*--overwrite"):
        Recorder(RecordConfig(out=out, endpoint=free_endpoint(), namespace=NS, split_duration=60))
    assert {f: f.read_bytes() for f in first.files} == before  # refused before anything was written
    # --overwrite removes every old split, so the new recording is all that replays.
    second = record_frames(out, overwrite=True, split_duration=60)
    assert second.files == [split_path(out, 0)]
    # and the folder's rosbag2 metadata.yaml lists only the new split
    assert recording_files(out) == second.files and sorted(out.parent.iterdir()) == [out.parent / "metadata.yaml",
                                                                                     *second.files]
    seqs = [m.seq for m in read_recording(out) if m.topic == f"{NS}/lane"]
    assert seqs == list(range(N_FRAMES))


@pytest.mark.parametrize("split", [[], ["--split-duration", "1"]])
def test_record_cli_refuses_an_existing_out_in_one_line(tmp_path, capsys, split):
    from perception.cli import main

    out = tmp_path / "run.mcap"
    old = out if not split else split_path(out, 2)
    old.write_bytes(b"an earlier recording")
    argv = ["record", "--namespace", NS, "--endpoint", free_endpoint(), "--out", str(out), *split, "--duration", "0.1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{old} already exists" in err and "--overwrite" in err, err
    assert old.read_bytes() == b"an earlier recording" and len(list(tmp_path.iterdir())) == 1
    # --overwrite removes it only once a message comes: nothing is received here (exit 4), so the
    # earlier recording stays as it was (verify 6: it was deleted, and the line said "no file was written")
    assert main([*argv, "--overwrite"]) == 4
    err = capsys.readouterr().err
    assert "the earlier recording there, 1 file, is left as it was" in err, err
    assert old.read_bytes() == b"an earlier recording" and len(list(tmp_path.iterdir())) == 1


def test_a_recording_without_splits_over_old_splits_is_refused(tmp_path):
    """Old run_0.mcap, run_1.mcap... next to a new run.mcap: 'replay run.mcap' would play the new
    file and a folder replay both sessions, so a recording without --split-* refuses them too."""
    out = tmp_path / "run.mcap"
    for i in range(2):
        split_path(out, i).write_bytes(b"an earlier split")
    with pytest.raises(ConfigError, match=r"run_0\.mcap, .*run_1\.mcap already exist.*--overwrite"):
        Recorder(RecordConfig(out=out, endpoint=free_endpoint(), namespace=NS))
    recorder = Recorder(RecordConfig(out=out, endpoint=free_endpoint(), namespace=NS, overwrite=True, duration_s=0.05))
    summary = recorder.run(threading.Event())
    # nothing received: no empty file, and the old splits stay (removed only once a message comes)
    assert summary.messages == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["run_0.mcap", "run_1.mcap"]
    assert recorder.kept == [split_path(out, 0), split_path(out, 1)]


def test_a_split_that_begins_with_an_old_info_replays_without_waiting_for_it(tmp_path):
    """Hunt 6c: splits written before the fix begin with the latched info at its original log
    time, seconds before the split's data, and replay waited that long before its first mask.
    The replay clock now starts at the first message that is not latched."""
    from perception.mcap_writer import McapMaskWriter
    from perception.replay import ReplayConfig, run_replay
    from perception.subscribe import Message
    from perception.wire import json_header, mask_header

    path = tmp_path / "run_3.mcap"
    writer = McapMaskWriter(path)
    writer.write(Message(f"{NS}/info", json_header(name="info", seq=0, publish_ns=1), INFO, 1, 1_000))
    start = 6_700_000_000  # 6.7 s after the info
    for seq in range(3):
        header = mask_header(height=24, width=32, compression="none", values="class_ids", seq=seq, capture_ns=start,
                             publish_ns=start, frame_id="rec", model_id="m", latency_ms={})
        writer.write(Message(f"{NS}/class_map", header, frame_masks(seq)["class_map"], 1, start + seq * 100_000_000))
    writer.close()

    class Clock(threading.Event):
        """A stop event that records every wait the replay asks for (and does not sleep)."""

        def __init__(self) -> None:
            super().__init__()
            self.waits: list[float] = []

        def wait(self, timeout=None):
            self.waits.append(timeout or 0.0)
            return self.is_set()

    class Sink:
        endpoint = "test"

        def __init__(self) -> None:
            self.topics: list[str] = []

        def wait_for_subscriber(self, *_a) -> bool:
            return True

        def send(self, msg, _stop, *, shift_ns: int = 0) -> bool:
            self.topics.append(msg.topic)
            return True

    clock, sink = Clock(), Sink()
    summary = run_replay(ReplayConfig(file=[str(path)], wait_first_subscriber_s=0), clock, publisher=sink)
    assert summary.messages == 4 and sink.topics[0] == f"{NS}/info"
    assert max(clock.waits) < 0.5, clock.waits  # the masks' own 0.1 s spacing, not the 6.7 s before them
