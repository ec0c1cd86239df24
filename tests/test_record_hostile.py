"""Recording what a hostile (or merely unusual) publisher sends: every message the recorder keeps
must replay, and a message it cannot keep costs that message, counted, never the file.

The recorder is fed through ``MaskSubscriber.recv`` (as in test_record's full-disk test), so the
messages are exactly those given; the replay goes over real sockets to a real subscriber.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from test_record import NS, frame_masks, free_endpoint

from perception import contracts
from perception.mcap_reader import ReadCounters, read_recording
from perception.record import RecordConfig, Recorder, RecordSummary, RecordWriteError
from perception.replay import ReplayConfig, run_replay
from perception.subscribe import MaskSubscriber, Message
from perception.wire import json_header, mask_header

BIG_SEQS = [0, 1, 2**32 - 1, 2**32, 2**32 + 5, 2**63 - 2, 2**63 - 1, 7]


def class_map_message(seq: int, receive_ns: int, stamp_ns: int | None = None) -> Message:
    """A class map with capture and publish time ``stamp_ns`` (by default ``receive_ns``)."""
    stamp_ns = receive_ns if stamp_ns is None else stamp_ns
    header = mask_header(height=24, width=32, compression="rle", values="class_ids", seq=seq, pub_seq=seq,
                         capture_ns=stamp_ns, publish_ns=stamp_ns, frame_id="rec", model_id="m", latency_ms={})
    return Message(f"{NS}/class_map", header, frame_masks(seq % 1000)["class_map"], 1, receive_ns)


def stats_message(seq: int, doc, receive_ns: int) -> Message:
    return Message(f"{NS}/stats", json_header(name="stats", seq=seq, publish_ns=receive_ns), doc, 1, receive_ns)



def feed_messages(monkeypatch, messages) -> threading.Event:
    """Make every ``MaskSubscriber.recv`` return the next of ``messages``; the event is set once they
    are all taken (a ``Recorder``'s stop)."""
    feed = iter(messages)
    stop = threading.Event()

    def recv(self, timeout_s=None):
        msg = next(feed, None)
        if msg is None:
            stop.set()
        return msg

    monkeypatch.setattr(MaskSubscriber, "recv", recv)
    return stop


def record(monkeypatch, tmp_path, messages: list[Message], **config) -> tuple[RecordSummary, str]:
    """Record ``messages`` with a ``Recorder`` (stopped once they are all taken); its summary and the file."""
    stop = feed_messages(monkeypatch, messages)
    out = tmp_path / "rec.mcap"
    try:
        summary = Recorder(RecordConfig(out=out, endpoint=free_endpoint(), namespace=NS, **config)).run(stop)
    finally:
        monkeypatch.undo()
    return summary, str(out)


def replay_to_subscriber(path: str, topics: list[str]) -> tuple[list[Message], object]:
    """Replay ``path`` as fast as it goes to a subscriber of ``topics``; what it received, and the summary."""
    endpoint = free_endpoint()
    sub = MaskSubscriber(endpoint, topics=topics)
    try:
        summary = run_replay(ReplayConfig(file=path, max_rate=True, endpoint=endpoint, wait_first_subscriber_s=20),
                             threading.Event())
        got = list(iter(lambda: sub.recv(timeout_s=3), None))
        assert sub.counters.malformed == 0
    finally:
        sub.close()
    return got, summary


def indexed_message_count(path: str) -> tuple[int, int]:
    """(messages the summary's statistics claim, messages an indexed reader yields)."""
    from mcap.reader import make_reader

    with open(path, "rb") as f:
        reader = make_reader(f)
        claimed = reader.get_summary().statistics.message_count
        return claimed, sum(1 for _ in reader.iter_messages())


def test_seqs_past_32_bits_are_recorded_and_replayed_whole(monkeypatch, tmp_path):
    """The wire's seq goes up to 2^63-1, MCAP's sequence is a uint32: a seq of 2^32 or more made the
    mcap library fail half-way into a record, leaving the chunk broken (replay then sent 6 messages
    of 18, and --recover called the file complete). Now every message is kept, with its whole seq."""
    messages = []
    for i, seq in enumerate(BIG_SEQS):
        messages += [class_map_message(seq, 1_000_000 + i), stats_message(seq, {"n": i}, 1_000_000 + i)]
    summary, path = record(monkeypatch, tmp_path, messages)
    assert summary.messages == len(messages) and summary.skipped["write_errors"] == 0

    counters = ReadCounters()
    recorded = list(read_recording(path, counters=counters))
    assert counters.malformed == 0
    assert [(m.topic.rpartition("/")[2], m.seq) for m in recorded] == [
        (name, seq) for seq in BIG_SEQS for name in ("class_map", "stats")]
    assert indexed_message_count(path) == (2 * len(messages), 2 * len(messages))  # data + /meta records

    got, summary = replay_to_subscriber(path, [f"{NS}/class_map", f"{NS}/stats"])
    assert summary.messages == len(messages) and summary.skipped == 0
    assert [(m.topic.rpartition("/")[2], m.seq) for m in got] == [
        (name, seq) for seq in BIG_SEQS for name in ("class_map", "stats")]
    for msg in got:
        if msg.kind == "mask":
            np.testing.assert_array_equal(msg.data, frame_masks(msg.seq % 1000)["class_map"])


def test_a_message_the_writer_refuses_costs_only_that_message(monkeypatch, tmp_path, caplog):
    """Messages that cannot be kept (a mask on a topic recorded as JSON, a document that holds NaN,
    a header over the readers' 16 kB as written) are counted as write errors between good ones;
    every good message replays and the file's summary counts exactly what it holds."""
    odd_mask = class_map_message(3, 1_000_003)
    odd_mask = Message(f"{NS}/stats", odd_mask.header, odd_mask.data, 1, 1_000_003)  # stats is JSON here
    big_header = class_map_message(4, 1_000_004)  # over 16 kB once written again (1e9 is 1000000000.0 then)
    big_header.header["latency_ms"] = {f"{'k' * 250}{i:02d}": 1e9 for i in range(32)}
    big_header.header["note"] = "n" * 7600
    messages = [stats_message(0, {"n": 0}, 1_000_000), class_map_message(1, 1_000_001),
                odd_mask, stats_message(2, {"bad": float("nan")}, 1_000_002), big_header,
                stats_message(5, {"n": 5}, 1_000_005), class_map_message(6, 1_000_006)]
    summary, path = record(monkeypatch, tmp_path, messages, chunk_size_kb=4)
    assert summary.format().startswith("recorded 4 messages") and "skipped: 3 write errors" in summary.format()
    assert "a sensor_msgs/msg/Image message on it is refused" in caplog.text  # the first is named

    counters = ReadCounters()
    assert [m.seq for m in read_recording(path, counters=counters)] == [0, 1, 5, 6]
    assert counters.malformed == 0
    assert indexed_message_count(path) == (8, 8)


def test_a_document_near_the_limit_is_recorded_compact_and_replays(monkeypatch, tmp_path, caplog):
    """An 800 kB document ([0,0,...], or 400k non-ASCII characters) is under the readers' 1 MiB:
    the recorder used to write it with json.dumps' defaults (", " and ASCII escapes), 1.2 or 2.4
    MB, which a replay refused. Now it is kept compact and replays; one that would not fit even
    so (its numbers longer once written again) is refused and counted by the recorder instead of
    being recorded and then skipped by every replay."""
    zeros = [0] * 400_000  # 800 kB as the node sends it
    accents = {"note": "\u00e9" * 400_000}  # 800 kB of UTF-8; 2.4 MB with ASCII escapes
    longer = [100000.0] * 120_000  # received as 1e5 (480 kB), written again as 100000.0 (1.1 MB)
    messages = [stats_message(0, zeros, 1_000_000), stats_message(1, accents, 1_000_001),
                stats_message(2, longer, 1_000_002), stats_message(3, {"n": 3}, 1_000_003)]
    summary, path = record(monkeypatch, tmp_path, messages)
    assert summary.messages == 3 and summary.skipped["write_errors"] == 1
    assert "so a replay could not send it" in caplog.text

    got, summary = replay_to_subscriber(path, [f"{NS}/stats"])
    assert summary.messages == 3 and summary.skipped == 0
    assert [(m.seq, m.data) for m in got] == [(0, zeros), (1, accents), (3, {"n": 3})]


def test_a_header_over_the_limit_with_escapes_is_recorded_and_replayed_without_them(tmp_path):
    """A header within 16 kB as UTF-8 that ASCII escapes would take past it: stored and sent as
    UTF-8. One over 16 kB even so is refused by the writer, which writes nothing of it."""
    from perception.mcap_writer import McapMaskWriter, UnrecordableMessage

    msg = class_map_message(9, 1_000_000)
    msg.header["model_id"] = "\u00e9" * 250
    msg.header["frame_id"] = "\u00e9" * 250
    msg.header["latency_ms"] = {"\u00e9" * 200 + f"{i:02d}": 1.0 for i in range(30)}
    assert len(json.dumps(msg.header, separators=(",", ":"))) > contracts.MAX_HEADER_BYTES
    too_big = class_map_message(10, 1_000_001)  # over 16 kB once written again (1e9 is 1000000000.0 then)
    too_big.header["latency_ms"] = {f"{'k' * 250}{i:02d}": 1e9 for i in range(32)}
    too_big.header["note"] = "n" * 7600
    writer = McapMaskWriter(tmp_path / "h.mcap")
    writer.write(msg)
    with pytest.raises(UnrecordableMessage, match=r"its header is 166\d\d bytes as recorded, more than the 16384 a "
                                                  "replay reads"):
        writer.write(too_big)
    writer.close()
    got, summary = replay_to_subscriber(str(tmp_path / "h.mcap"), [f"{NS}/class_map"])
    assert summary.messages == 1 and [m.header for m in got] == [msg.header]


def test_odd_times_are_clamped_to_mcap_and_kept_whole_in_the_header(tmp_path):
    """MCAP's times are uint64: a negative or too large receive time is clamped (it used to break
    the chunk as a large seq did), and the header keeps the publish time as sent."""
    from perception.mcap_writer import McapMaskWriter

    path = tmp_path / "t.mcap"
    writer = McapMaskWriter(path)
    for seq, receive_ns in enumerate([5, -7, 2**64 + 3, 9]):
        writer.write(class_map_message(2**63 - 1 - seq, receive_ns, stamp_ns=2**60 + seq))
    writer.close()
    got = list(read_recording(path))
    assert [m.seq for m in got] == [2**63 - 1 - seq for seq in range(4)]
    assert [m.log_time_ns for m in got] == [5, 0, 2**64 - 1, 9]
    assert [m.header["publish_ns"] for m in got] == [2**60 + seq for seq in range(4)]
    assert indexed_message_count(str(path)) == (8, 8)


def test_a_full_file_of_channels_refuses_new_topics_and_keeps_the_rest(monkeypatch, tmp_path):
    """MCAP channel ids are uint16 (65535 a file, 2 a topic): a topic past that is refused and
    counted, and the file stays whole (the limit is lowered here, to spare 65535 channels)."""
    import perception.mcap_writer as mcap_writer
    from perception.mcap_writer import McapMaskWriter, UnrecordableMessage

    monkeypatch.setattr(mcap_writer, "MCAP_MAX_CHANNELS", 5)
    path = tmp_path / "c.mcap"
    writer = McapMaskWriter(path)
    for i in range(3):
        msg = Message(f"{NS}/t{i}", json_header(name=f"t{i}", seq=i, publish_ns=i), {"i": i}, 1, 10 + i)
        if i < 2:
            writer.write(msg)
        else:
            with pytest.raises(UnrecordableMessage, match="already holds 4 channels"):
                writer.write(msg)
    writer.write(Message(f"{NS}/t0", json_header(name="t0", seq=5, publish_ns=5), {"i": 5}, 1, 20))
    writer.close()
    assert [(m.topic, m.seq) for m in read_recording(path)] == [(f"{NS}/t0", 0), (f"{NS}/t1", 1), (f"{NS}/t0", 5)]
    assert indexed_message_count(str(path)) == (6, 6)


def test_a_library_failure_inside_a_record_ends_the_recording_and_the_file_recovers(monkeypatch, tmp_path):
    """Should the mcap library still fail half-way into a record, the recorder stops (one line
    naming --recover) instead of writing on into a broken chunk; the whole chunks on disk recover."""
    from mcap.writer import Writer

    from perception.recover import recover_recording

    real = Writer.add_message
    calls = {"n": 0}

    def add_message(self, channel_id, log_time, data, publish_time, sequence=0):
        calls["n"] += 1
        if calls["n"] == 61:  # the /meta record of message 31
            raise RuntimeError("simulated fault")
        return real(self, channel_id, log_time, data, publish_time, sequence)

    monkeypatch.setattr(Writer, "add_message", add_message)
    messages = [class_map_message(seq, 1_000_000 + seq) for seq in range(60)]
    path = str(tmp_path / "rec.mcap")
    with pytest.raises(RecordWriteError) as failed:
        record(monkeypatch, tmp_path, messages, chunk_size_kb=4)
    assert str(failed.value) == (f"the MCAP writer failed inside a record (RuntimeError: simulated fault) writing "
                                 f"{path} after 30 messages; the file is left unfinished: 'perception record "
                                 f"--recover {path}' rebuilds what was written before it")
    summary = recover_recording(path)
    seqs = [m.seq for m in read_recording(path)]
    assert 0 < summary.messages // 2 == len(seqs) <= 30 and seqs == list(range(len(seqs)))
