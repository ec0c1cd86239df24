"""``replay --restamp`` moves each message's stamps to the time it is sent (session s40, hunt h28).

It once added one shift per pass (now minus the first log time) to every stamp, so a listener read
wrong latencies whenever the recorded capture times did not keep pace with the log times:

- a wall clock stepped while recording (the recorder's log times stay steady, the frames'
  ``capture_ns`` jump): after a +1 h step every later frame was an hour in the future, and after a
  boot step from 2000 to now, in 2053, past ROS 2's int32 stamp, so every reader refused them;
- ``--rate 3`` (or ``--rate 0.5``, ``--max-rate``): latencies drifting without bound;
- a gap over ``MAX_GAP_S``, which the replay shortens: every later frame in the future by the rest.

Now ``listen`` reads each message's latency as live (README, replay). The recorder also keeps the
step it saw in its ``perception.recording`` metadata (``clock_step_s``).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_record import NS, free_endpoint, wait_for_recorder, wait_until

from perception import replay as replay_module
from perception.mcap_reader import RecordedMessage
from perception.mcap_writer import McapMaskWriter
from perception.replay import ReplayConfig, ReplayPublisher, Restamper, run_replay
from perception.subscribe import MaskSubscriber, Message
from perception.wire import json_header, mask_header

S = 10**9
HOUR = 3600 * S
#: The node's capture-to-publish time in these recordings, kept by --restamp.
SPENT_NS = 4_000_000


def write_recording(path: Path, log_times: list[int], captures: list[int]) -> None:
    """One frame per log time: its class map (capture time ``captures[i]``, published SPENT_NS
    later), its ``obstacles`` document (carrying the frame's capture time) and a stats document,
    received 1 ms after publishing. The recorder's log times are ``log_times``."""
    writer = McapMaskWriter(path)
    for seq, (logged, capture) in enumerate(zip(log_times, captures, strict=True)):
        publish = capture + SPENT_NS
        header = mask_header(height=6, width=8, compression="none", values="class_ids", seq=seq, capture_ns=capture,
                             publish_ns=publish, frame_id="restamp", model_id="m", latency_ms={"total": 4.0})
        writer.write(Message(f"{NS}/class_map", header, np.full((6, 8), seq % 7, np.uint8), wire_bytes=1,
                             receive_ns=logged), log_time_ns=logged)
        doc = {"seq": seq, "capture_ns": capture, "frame_id": "restamp", "image_hw": [6, 8], "blobs": []}
        writer.write(Message(f"{NS}/obstacles", json_header(name="obstacles", seq=seq, publish_ns=publish), doc,
                             wire_bytes=1, receive_ns=logged), log_time_ns=logged)
        writer.write(Message(f"{NS}/stats", json_header(name="stats", seq=seq, publish_ns=publish), {"frames": seq},
                             wire_bytes=1, receive_ns=logged), log_time_ns=logged)
    writer.close()


def replay_and_receive(path: Path, config: dict, expected: int) -> list[Message]:
    """Replay ``path`` with ``--restamp`` (and ``config``) to a subscriber; what it received."""
    publisher = ReplayPublisher(free_endpoint())
    stop, worker, got = threading.Event(), None, []
    try:
        with MaskSubscriber(publisher.endpoint, namespace=NS) as sub:
            assert publisher.wait_for_subscriber(30, stop), "the subscriber never subscribed"
            worker = threading.Thread(target=run_replay, args=(ReplayConfig(file=path, restamp=True, **config), stop),
                                      kwargs={"publisher": publisher})
            worker.start()
            deadline = time.monotonic() + 60
            while len(got) < expected and time.monotonic() < deadline:
                msg = sub.recv(timeout_s=0.5)
                if msg is not None:
                    got.append(msg)
    finally:
        stop.set()
        if worker is not None:
            worker.join(timeout=30)
        publisher.close()
    assert len(got) == expected, f"received {len(got)} of {expected} messages"
    return got


def assert_live(got: list[Message]) -> None:
    """Every message reads as live: its capture time (a document's, or its publish time) within a
    second of when it arrived, and the obstacles document names the capture time of its frame's mask."""
    masks = {m.seq: m.capture_ns for m in got if m.kind == "mask"}
    late = []
    for msg in got:
        stamp = msg.capture_ns if msg.kind == "mask" else msg.data.get("capture_ns", msg.header["publish_ns"])
        stamp = int(stamp)
        if abs(msg.receive_ns - stamp) > S:
            late.append(f"{msg.topic} seq {msg.seq}: latency {(msg.receive_ns - stamp) / 1e6:.0f} ms")
        if msg.topic.endswith("/obstacles"):
            assert stamp == masks[msg.data["seq"]], "the obstacles document no longer names its frame's capture time"
    assert not late, f"{len(late)} of {len(got)} messages not live: {late[:4]}"


def test_a_recording_across_a_clock_step_replays_with_live_latencies(tmp_path):
    """The node's clock stepped +1 h after the fifth frame; the recorder's log times did not."""
    start, n = time.time_ns() - 2 * HOUR, 10
    logs = [start + i * 50_000_000 for i in range(n)]
    captures = [t - 1_000_000 + (HOUR if i >= 5 else 0) for i, t in enumerate(logs)]
    path = tmp_path / "stepped.mcap"
    write_recording(path, logs, captures)
    got = replay_and_receive(path, {}, 3 * n)
    assert_live(got)


def test_a_recording_from_a_clock_in_2000_stepped_to_now_is_not_sent_past_2038(tmp_path):
    """A car without a real-time clock: the recorder started with its clock in January 2000, and
    NTP set it to now midway. The stamps sent were once in 2053, which no reader accepts."""
    now, n = time.time_ns(), 6
    boot = 947_658_732 * S  # 2000-01-12
    logs = [boot + i * 50_000_000 for i in range(n)]
    captures = [t - 1_000_000 + (now - boot if i >= 3 else 0) for i, t in enumerate(logs)]
    path = tmp_path / "boot.mcap"
    write_recording(path, logs, captures)
    got = replay_and_receive(path, {}, 3 * n)
    assert_live(got)
    assert all(m.header["header"]["stamp"]["sec"] < 2**31 for m in got if m.kind == "mask")


def test_restamp_at_another_rate_does_not_drift(tmp_path):
    """3 s recorded, played at --rate 3 in 1 s: the frames once read up to 2 s in the future."""
    start, n = time.time_ns() - HOUR, 16
    logs = [start + i * 200_000_000 for i in range(n)]
    path = tmp_path / "rate.mcap"
    write_recording(path, logs, [t - 1_000_000 for t in logs])
    assert_live(replay_and_receive(path, {"rate": 3.0}, 3 * n))


def test_restamp_over_a_shortened_gap_stays_live(tmp_path, monkeypatch):
    """A 100 s gap in the recording (a paused recorder), replayed as MAX_GAP_S (here 0.3 s, so the
    test does not wait 10 s): the frames after it were once 99.7 s in the future."""
    monkeypatch.setattr(replay_module, "MAX_GAP_S", 0.3)
    start, n = time.time_ns() - HOUR, 6
    logs = [start + i * 50_000_000 + (100 * S if i >= 3 else 0) for i in range(n)]
    path = tmp_path / "gap.mcap"
    write_recording(path, logs, [t - 1_000_000 for t in logs])
    assert_live(replay_and_receive(path, {}, 3 * n))


def test_restamp_keeps_the_nodes_capture_to_publish_time_and_shares_a_frames_shift():
    now = [5_000 * S]
    restamper = Restamper(now_ns=lambda: now[0])

    def mask(seq, capture, publish):
        header = mask_header(height=1, width=1, compression="none", values="binary", seq=seq, capture_ns=capture,
                             publish_ns=publish, frame_id="f", model_id="m", latency_ms={})
        return RecordedMessage(f"{NS}/lane", header, np.zeros((1, 1), np.uint8), 0)

    shift = restamper.shift_ns(mask(0, 100 * S, 100 * S + SPENT_NS))
    assert 100 * S + shift == now[0] - SPENT_NS  # capture' = send time - the node's own 4 ms
    now[0] += 2_000_000  # the frame's next message, 2 ms later, names the same capture time
    doc = RecordedMessage(f"{NS}/obstacles", json_header(name="obstacles", seq=0, publish_ns=100 * S + 5_000_000),
                          {"capture_ns": 100 * S}, 0)
    assert restamper.shift_ns(doc) == shift
    # The node's clock stepped back an hour between capture and publish: capture' is the send time.
    assert 200 * S + restamper.shift_ns(mask(1, 200 * S, 200 * S - HOUR)) == now[0]
    stats = RecordedMessage(f"{NS}/stats", json_header(name="stats", seq=0, publish_ns=300 * S), {"frames": 1}, 0)
    assert 300 * S + restamper.shift_ns(stats) == now[0]


def test_the_recorder_keeps_the_clock_step_in_its_metadata(tmp_path):
    from mcap.reader import make_reader

    from perception.publish import MaskPublisher
    from perception.record import RecordConfig, Recorder, SteadyClock

    out = tmp_path / "run.mcap"
    endpoint = free_endpoint()
    recorder = Recorder(RecordConfig(out=out, endpoint=endpoint, namespace=NS))
    offset = [0]
    recorder.clock = SteadyClock(wall_ns=lambda: time.time_ns() + offset[0])
    stop = threading.Event()
    thread = threading.Thread(target=recorder.run, args=(stop,))
    thread.start()
    pub = MaskPublisher(endpoint=endpoint, namespace=NS, sndhwm=1000)
    try:
        wait_for_recorder(recorder, pub)
        offset[0] = HOUR  # NTP sets the clock an hour forward
        pub.publish_json("stats", {"after": True})
        wait_until(lambda: recorder.clock.stepped_s != 0, what="the step seen")
    finally:
        stop.set()
        thread.join(timeout=10)
        pub.close()
    with open(out, "rb") as f:
        meta = {m.name: m.metadata for m in make_reader(f).iter_metadata()}["perception.recording"]
    assert float(meta["clock_step_s"]) == pytest.approx(3600, abs=1)
    assert json.loads(meta["message_counts"])  # the rest of the record as before
