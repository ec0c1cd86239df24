"""What record, ``record --recover`` and ``replay`` say they counted adds up for the user.

* A split cut by a full disk: the line's "rebuilds the N in run_2.mcap" is what ``--recover`` and a
  replay of that file give, the ``<ns>/info`` written again at the split's start included (it said
  one fewer).
* An ``--atomic-frames`` recording: record and ``--recover`` count the masks one by one, replay sends
  one frame message for the masks of a frame; each line says how the two counts meet (record said
  169, replay 70, with nothing on screen to say why).
"""

from __future__ import annotations

import re
import shutil
import threading

from test_record import ENCODINGS, NS, free_endpoint, wait_until
from test_record_disk_full import FullDisk
from test_record_hostile import class_map_message, feed_messages

from perception import contracts
from perception.mcap_reader import read_recording
from perception.publish import MaskPublisher
from perception.record import RecordConfig, Recorder, RecordWriteError
from perception.recover import recover_recording
from perception.replay import ReplayConfig, run_replay
from perception.subscribe import Message
from perception.wire import json_header

INFO = {"wire_version": contracts.WIRE_VERSION, "model_id": "m", "unknown_id": 255,
        "classes": [{"id": 0, "name": "road", "color_rgb": [1, 2, 3]}]}


def test_a_split_cut_by_a_full_disk_counts_the_info_written_again_at_its_start(tmp_path, monkeypatch):
    import perception.mcap_writer as mcap_writer

    info = Message(f"{NS}/info", json_header(name="info", seq=0, publish_ns=999_999), INFO, 1, 999_999)
    stop = feed_messages(monkeypatch, [info] + [class_map_message(seq, 1_000_000 + seq) for seq in range(400)])
    monkeypatch.setattr(mcap_writer, "open", FullDisk({2: 9000}), raising=False)
    d = tmp_path / "s"
    try:
        recorder = Recorder(RecordConfig(out=d / "run.mcap", endpoint=free_endpoint(), namespace=NS, split_size=0.02))
        try:
            recorder.run(stop)
        except RecordWriteError as exc:
            line = str(exc)
        else:
            raise AssertionError("the full disk did not end the recording")
    finally:
        monkeypatch.undo()
    found = re.fullmatch(rf"disk full writing {d}/run_2\.mcap after (\d+) messages, (\d+) of them written whole \((\d+) "
                         rf"in the complete splits {d}/run_0\.mcap \.\. {d}/run_1\.mcap\); free space, then 'perception "
                         rf"record --recover {d}/run_2\.mcap' rebuilds the (\d+) in run_2\.mcap \((\d+) and the latched "
                         rf"{NS}/info, written again at its start\)", line)
    assert found, line
    received, whole, complete, in_file, own = map(int, found.groups())
    assert whole == complete + own < received and in_file == own + 1 and own > 0
    # What the line promises for the file is what a replay of it and --recover give...
    assert len(list(read_recording(d / "run_2.mcap"))) == in_file
    assert recover_recording(d / "run_2.mcap", tmp_path / "rebuilt.mcap").wire_messages == in_file
    assert len(list(read_recording(tmp_path / "rebuilt.mcap"))) == in_file
    # ...and the recording's total what a replay of the folder gives (it sends the info once).
    assert len(list(read_recording(d))) == whole


def _record_an_atomic_frames_node(out, n_frames: int):
    """A publisher sending as ``perception run --atomic-frames`` does (its info says where each mask
    travels), recorded by a real recorder over a real socket; the recorder's summary."""
    pub = MaskPublisher(endpoint=free_endpoint(), namespace=NS, encodings=ENCODINGS, atomic_frames=True,
                        sndhwm=100000)
    recorder = Recorder(RecordConfig(out=out, endpoint=pub.endpoint, namespace=NS, chunk_size_kb=4))
    stop = threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: result.update(summary=recorder.run(stop)))
    thread.start()
    try:
        assert pub.wait_for_subscribers(1, timeout_s=60), "the recorder never subscribed"
        pub.set_info(INFO | {"topics": pub.topic_encodings(list(ENCODINGS))})
        wait_until(lambda: recorder.messages >= 1, what="the recorder's first message (the latched info)")
        from test_record import frame_masks

        for seq in range(n_frames):
            pub.publish_masks(seq=seq, capture_ns=1_000_000 + seq, frame_id="f", masks=frame_masks(seq),
                              latency_ms={}, model_id="m")
            pub.publish_json("stats", {"seq": seq})
        expected = 1 + n_frames * (len(ENCODINGS) + 1)
        wait_until(lambda: recorder.messages >= expected, what=f"{expected} messages recorded")
    finally:
        stop.set()
        thread.join(timeout=60)
        pub.close()
    return result["summary"]


def test_atomic_frame_counts_meet_across_record_recover_and_replay(tmp_path):
    n = 12
    out = tmp_path / "atomic.mcap"
    summary = _record_an_atomic_frames_node(out, n)
    masks, messages = n * len(ENCODINGS), summary.messages
    assert messages == summary.counts[f"{NS}/info"].messages + n * (len(ENCODINGS) + 1)
    sent = messages - masks + n  # a replay sends a frame's masks as one message
    first = summary.format().splitlines()[0]
    assert first.startswith(f"recorded {messages} messages in ")
    assert first.endswith(f"; {masks} of them are masks that came in {n} atomic frames, which a replay sends as one "
                          f"message each ({sent} messages)"), first

    replayed = run_replay(ReplayConfig(file=out, max_rate=True, endpoint=free_endpoint()), threading.Event())
    assert replayed.messages == sent and replayed.as_recorded == messages
    assert replayed.format(out).endswith(f"; {n} of them are atomic frames holding {masks} masks, which record and "
                                         f"--recover count one by one ({messages} messages)"), replayed.format(out)

    # A recorder killed mid-run: the file cut inside its data. --recover and the replay of what it
    # rebuilt give the same two counts, each saying how they meet.
    cut = tmp_path / "cut.mcap"
    data = out.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    recovered = recover_recording(cut, tmp_path / "rebuilt.mcap")
    frames, framed = recovered.frames.frames, recovered.frames.masks
    assert 0 < frames < n and recovered.wire_messages < messages
    again = run_replay(ReplayConfig(file=tmp_path / "rebuilt.mcap", max_rate=True, endpoint=free_endpoint()),
                       threading.Event())
    assert f"\n  {framed} of them are masks that came in {frames} atomic frames, which a replay sends as one message " \
           f"each ({again.messages} messages)\n" in recovered.format(), recovered.format()
    assert (again.frames, again.framed_masks, again.as_recorded) == (frames, framed, recovered.wire_messages)
    # The cut file replayed as it is (a stream reader reads it up to the cut) counts the same.
    shutil.copy(cut, tmp_path / "as_is.mcap")
    as_is = run_replay(ReplayConfig(file=tmp_path / "as_is.mcap", max_rate=True, endpoint=free_endpoint()),
                       threading.Event())
    assert (as_is.messages, as_is.as_recorded) == (again.messages, recovered.wire_messages)


def test_a_recording_without_atomic_frames_says_nothing_of_them(tmp_path, monkeypatch):
    from test_record_hostile import record

    summary, path = record(monkeypatch, tmp_path, [class_map_message(seq, 1000 + seq) for seq in range(5)])
    assert summary.format().splitlines()[0].endswith(f"to {path}")
    replayed = run_replay(ReplayConfig(file=path, max_rate=True, endpoint=free_endpoint()), threading.Event())
    assert replayed.messages == 5 and "atomic" not in replayed.format(path)


def test_the_time_a_recording_listened_leaves_out_the_subscriber_s_close(tmp_path, monkeypatch):
    """``no messages received ... in N s`` is the --duration it listened: ZeroMQ's term() can wait
    seconds for a DNS lookup in its I/O thread (a node's host name that does not resolve), and that
    wait was counted (``--duration 3`` said "in 7.0 s")."""
    import time

    from perception.subscribe import MaskSubscriber

    real_close = MaskSubscriber.close

    def slow_close(self):
        time.sleep(1.5)
        real_close(self)

    monkeypatch.setattr(MaskSubscriber, "close", slow_close)
    recorder = Recorder(RecordConfig(out=tmp_path / "run.mcap", endpoint=free_endpoint(), namespace=NS, duration_s=0.3))
    summary = recorder.run(threading.Event())
    assert summary.messages == 0 and 0.3 <= summary.seconds < 1.2, summary.seconds
