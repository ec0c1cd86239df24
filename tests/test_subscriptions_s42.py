"""s42 H47 HIGH-1 / H50 M1, M2, M3, L2: what the node counts as a subscriber, what
``hwm_overflows`` counts, and a view of a node that says the frames it never received.

- ``--wait-subscribers N`` and ``publisher.subscriptions`` counted ``<ns>/frame``, which every
  ``listen --topic`` also takes, on a node that does not send it: one ``listen --topic <ns>/drivable``
  counted 2 and a mistyped ``--topic <ns>/x`` started the run (README: once per topic; one that
  receives none of the node's topics not at all). Now ``<ns>/frame`` counts only on an
  ``--atomic-frames`` node, which sends the masks in it: there a reader that asks for masks by name
  counts once per mask, and a mistyped one once (its ``<ns>/frame`` gets every frame; H51 M1).
- A connection that closed counted until libzmq's report of it was read (under churn, after the
  next client's subscriptions).
- ``hwm_overflows`` counts sends, not subscribers: its warning and description say so.
- ``perception view --endpoint`` of a node said nothing of the frames that never came.
"""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import zmq

from perception import contracts
from perception.publish import MaskPublisher
from perception.send_limit import SendLimit
from perception.stats_schema import PUBLISHER_STATS
from perception.subscribe import MaskSubscriber
from perception.subscriber_wait import wait_for_subscribers
from perception.view import ViewConfig, run_view
from perception.xpub_counts import SubscriptionCounts

NS = "perception/front"
H, W = 12, 16


def _until(what, why: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        assert time.monotonic() < deadline, f"timed out waiting for {why}"
        time.sleep(0.01)


def _count(pub: MaskPublisher, total: int) -> int:
    """The namespace's count once ``total`` subscriptions of any kind have reached the socket."""
    _until(lambda: pub._core.subscriptions() == total, f"{total} subscriptions to be read")
    return pub.stats()["subscriptions"]


def _raw(endpoint: str, *prefixes: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.linger = 0
    sock.connect(endpoint)
    for prefix in prefixes:
        sock.subscribe(prefix.encode())
    return sock


def test_listen_topic_counts_once_per_topic_and_a_mistyped_one_not_at_all():
    """H47 HIGH-1 (a) and (b), H50 M2: before, 2 for one topic and 1 for a mistyped one."""
    with MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS) as pub:
        with MaskSubscriber(pub.endpoint, topics=[f"{NS}/x"]):
            assert _count(pub, 2) == 0  # <ns>/x and <ns>/frame: neither is sent here
            assert not pub.wait_for_subscribers(1, timeout_s=0.05)
        _until(lambda: pub._core.subscriptions() == 0, "the mistyped listener to leave")
        with MaskSubscriber(pub.endpoint, topics=[f"{NS}/drivable"]):
            assert _count(pub, 2) == 1
            assert not pub.wait_for_subscribers(2, timeout_s=0.05)
        _until(lambda: pub._core.subscriptions() == 0, "the listener to leave")
        with MaskSubscriber(pub.endpoint, topics=[f"{NS}/drivable", f"{NS}/lane", f"{NS}/stats"]):
            assert _count(pub, 4) == 3


def test_an_atomic_frames_node_counts_a_listener_once_per_mask_it_asked_for():
    """The masks travel in <ns>/frame: a listener of two masks is 2 (before: 3, each mask topic and the
    frame); a mistyped one 1, as its <ns>/frame gets every frame (it drops them, and says so at its
    end: H51 M1, a raw reader of <ns>/frame and <ns>/x sends the same subscriptions and must count);
    a plain SUB of <ns>/frame 1, one of <ns>/lane alone 0 (it receives nothing; before: 1)."""
    with MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, atomic_frames=True) as pub:
        with MaskSubscriber(pub.endpoint, topics=[f"{NS}/lane", f"{NS}/drivable"]):
            assert _count(pub, 3) == 2
            with MaskSubscriber(pub.endpoint, topics=[f"{NS}/x"]):
                assert _count(pub, 5) == 3  # its <ns>/frame gets every frame (H51 M1)
                frame, lane = _raw(pub.endpoint, f"{NS}/frame"), _raw(pub.endpoint, f"{NS}/lane")
                try:
                    assert _count(pub, 7) == 4
                finally:
                    frame.close()
                    lane.close()
        _until(lambda: pub._core.subscriptions() == 0, "the listeners to leave")
        assert pub.stats()["subscriptions"] == 0
        with MaskSubscriber(pub.endpoint, namespace=NS, masks=["lane", "class_map"]):
            assert _count(pub, 4) == 3  # once per mask plus info (README "Delivery")
        _until(lambda: pub._core.subscriptions() == 0, "the subscriber to leave")
        pub.declare_topics(["drivable", "lane", "obstacle", "obstacle/car", "class_map"])
        with MaskSubscriber(pub.endpoint, topics=[f"{NS}/obstacle/car"]):  # + <ns>/obstacle/frame, <ns>/frame
            assert _count(pub, 3) == 1
        _until(lambda: pub._core.subscriptions() == 0, "the listener to leave")
        with MaskSubscriber(pub.endpoint, topics=[f"{NS}/obstacle/bus"]):  # no such class here
            assert _count(pub, 3) == 1  # its <ns>/frame gets every frame


def test_the_wait_says_it_counts_subscriptions_and_how(caplog):
    """H50 M2: the lines said '2 subscriber(s) joined' for one listener."""
    with MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS) as pub, \
            MaskSubscriber(pub.endpoint, topics=[f"{NS}/lane"]):
        options = SimpleNamespace(wait_subscribers=1, wait_timeout_s=10.0, resolved_namespace=NS, camera_name="front")
        camera = SimpleNamespace(config=SimpleNamespace(publish_options=options), publisher=pub, stopping=False)
        with caplog.at_level(logging.INFO, logger="perception.subscriber_wait"):
            assert wait_for_subscribers([camera], poll_s=0.01)
    lines = [r.getMessage() for r in caplog.records]
    assert "for 1 subscription(s) to perception/front" in lines[0] and "listen --topic once per topic" in lines[0]
    assert lines[-1] == "1 subscription(s) to perception/front reached the node; starting"


def test_a_wait_that_times_out_with_only_a_mistyped_reader_says_one_is_connected():
    """H54 M1: the line said 'no subscriber connected' while a reader of a mistyped topic was."""
    from perception.errors import SubscribersMissingError

    with MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS) as pub, \
            MaskSubscriber(pub.endpoint, topics=[f"{NS}/x"]):
        options = SimpleNamespace(wait_subscribers=1, wait_timeout_s=1.0, resolved_namespace=NS, camera_name="front")
        camera = SimpleNamespace(config=SimpleNamespace(publish_options=options), publisher=pub, stopping=False)
        with pytest.raises(SubscribersMissingError, match=r"^no subscription to the node's topics reached .* within "
                           r"1 s: 1 connected reader subscribed only to topics it does not send \(check their --topic"):
            wait_for_subscribers([camera], poll_s=0.01)


def test_a_connection_that_closed_stops_counting_before_libzmq_reports_it():
    """H50 L2: under churn libzmq reported a closed connection's unsubscribes after the next client
    had subscribed, and ``subscriptions`` read 21 where at most 11 were live."""
    live = {"a", "b"}
    counts = SubscriptionCounts(alive=lambda conn: conn in live)
    counts.track(b"ns/lane", b"ns/")
    counts.subscribe(b"ns/", "a")
    counts.subscribe(b"ns/", "b")
    assert counts.count(b"ns/") == 2
    live.discard("a")  # closed; libzmq has not said so yet
    time.sleep(0.06)  # (xpub_counts.SWEEP_INTERVAL_S)
    assert counts.count(b"ns/") == 1
    counts.unsubscribe(b"ns/", None)  # libzmq's report, at last: changes nothing
    counts.settle(lambda conn: conn in live)
    assert counts.count(b"ns/") == counts.count(b"") == 1


def test_hwm_overflows_says_it_counts_sends_not_subscribers(caplog):
    """H50 M1: 20 stuck subscribers showed as 2, and the warning spoke of 'a subscriber's queue'.
    libzmq says only whether some queue of a send is full (dist_t::check_hwm), so the node cannot
    count subscribers: what it counts is said."""
    with caplog.at_level(logging.WARNING, logger="perception.send_limit"):
        SendLimit(asked=30, value=30).overflowed(1, 6)
    line = caplog.records[-1].getMessage()
    assert line.startswith("a send found a subscriber queue full (--sndhwm 30 messages")
    assert "1 such send so far; subscribers that fill on the same send count once" in line
    meaning = {key.name: key.meaning for key in PUBLISHER_STATS}["hwm_overflows"]
    assert meaning.startswith("sends of this namespace") and "fill on the same send count once" in meaning


def test_two_stuck_subscribers_filling_on_one_send_count_once():
    """What ``hwm_overflows`` counts, shown: two readers that never read fill on the same send."""
    with MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, sndhwm=4) as pub:
        subs = [_raw(pub.endpoint, "") for _ in range(2)]
        for sub in subs:
            sub.rcvhwm = 1
        try:
            _count(pub, 2)
            for i in range(40):
                pub.publish_json("stats", {"i": i, "pad": "x" * 200_000})
            assert pub.stats()["hwm_overflows"] >= 1
            assert pub.stats()["hwm_overflows"] < pub.stats()["messages_sent"]
        finally:
            for sub in subs:
                sub.close()


def _info() -> dict:
    return {"wire_version": contracts.WIRE_VERSION, "frame_id": "p", "model_id": "m", "unknown_id": 255,
            "classes": [{"id": 0, "name": "sky", "color_rgb": [70, 130, 180]},
                        {"id": 1, "name": "road", "color_rgb": [128, 64, 128]}],
            "topics": {contracts.topic_name(NS, t): {"kind": "mask"} for t in contracts.MASK_TOPICS}}


def test_a_view_of_a_node_says_the_frames_it_never_received(tmp_path, caplog):
    """H50 M3: a view that fell behind wrote a video with a hole cut out and said nothing. Frames
    0-3, then 8-11: of seq 4-7, 3 were lost in transport (a gap in pub_seq) and 1 the node dropped."""
    pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, sndhwm=1000)
    pub.set_info(_info())
    config = ViewConfig(endpoint=pub.endpoint, namespace=NS, out=tmp_path / "frames", duration_s=3.0)
    done = threading.Event()
    masks = {name: np.zeros((H, W), np.uint8) for name in contracts.MASK_TOPICS}

    def publish():
        wanted = {"class_map", *contracts.TASKS}
        while not done.is_set() and pub.subscribed(wanted) != wanted:
            time.sleep(0.01)
        for seq in [0, 1, 2, 3, 8, 9, 10, 11]:
            if seq == 8:
                for name in contracts.MASK_TOPICS:  # 3 messages of each topic sent, none received
                    pub._pub_seq[contracts.topic_name(NS, name).encode()] += 3
            pub.publish_masks(seq=seq, capture_ns=time.time_ns(), frame_id="p", masks=masks, latency_ms={},
                              model_id="m")
            done.wait(0.05)

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        with caplog.at_level(logging.INFO, logger="perception.view"):
            frames = run_view(config)
    finally:
        done.set()
        thread.join(timeout=10)
        pub.close()
    assert frames == 8
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("4 of the node's frames never arrived (gaps in seq: lost in transport 3, dropped by the node 1); "
               "the output jumps over them" in line for line in said), said


@pytest.mark.parametrize("pub_seqs, lost", [([0, 1, 5], 3), ([0, 1, 2], 0), ([None, None, None], 3)])
def test_seq_gaps_split_lost_and_dropped_as_listen_does(pub_seqs, lost):
    from perception.view import SeqGaps

    gaps = SeqGaps()
    for seq, pub_seq in zip([0, 1, 5], pub_seqs, strict=True):
        gaps.add(f"{NS}/lane", seq, pub_seq)
    assert (gaps.missing, gaps.lost) == (3, lost)
    gaps.add(f"{NS}/lane", 0, 0)  # the node started again: no gap
    assert gaps.missing == 3
