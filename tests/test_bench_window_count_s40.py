"""perception bench pipeline (and --cameras): the window's figures count only the frames captured in
it (h34 finding 5 of session s40). A 15 FPS camera read 17.7 FPS input (delivered share 1.18) and
its drops were inflated, because the window's frames ran to the node's stop: the frames it captured
while it stopped, after the window, were counted and divided by the window's seconds."""

from __future__ import annotations

import pytest

from perception.bench.received import Received, record_message, summarize_received, window_end_seq
from perception.bench.report_checks import _accounting_problem, _pipeline_rate_problem

FPS = 15
T_NS = 1_000_000_000 // FPS  # the camera's pace
LATENCY_NS = 100_000_000  # capture -> receive
TOPICS = ("drivable", "lane")


def _mask(topic: str, seq: int, pub_seq: int, capture_ns: int):
    from perception.subscribe import Message

    header = {"kind": "mask", "seq": seq, "pub_seq": pub_seq, "capture_ns": capture_ns,
              "publish_ns": capture_ns + LATENCY_NS // 2, "latency_ms": {"infer": 40.0}, "model_id": "tiny"}
    return Message(topic=f"perception/bench/{topic}", header=header, data=None, wire_bytes=10,
                   receive_ns=capture_ns + LATENCY_NS)


def _run(*, window_s: float, frames_in: int, published, received_until_s: float | None = None,
         in_flight: int = 0, capture_ns=lambda seq: seq * T_NS):
    """A paced camera (frame ``seq`` captured at ``capture_ns(seq)``) whose node numbered frames
    0..frames_in-1 and published ``published``; frame 0 opened the window at its arrival, which
    closed ``window_s`` later. Published frames arrive ``LATENCY_NS`` after capture: in the window,
    or after it while the node stopped (up to frames_in), unless the subscriber heard nothing after
    ``received_until_s`` into the window."""
    pub = {seq: i for i, seq in enumerate(sorted(published))}
    before = Received()
    for topic in TOPICS:
        record_message(before, _mask(topic, 0, pub[0], capture_ns(0)))
    rx = before.window_after()
    close_ns = capture_ns(0) + LATENCY_NS + int(window_s * 1e9)
    for seq in sorted(pub)[1:]:
        arrives = capture_ns(seq) + LATENCY_NS
        if received_until_s is not None and arrives > capture_ns(0) + LATENCY_NS + received_until_s * 1e9:
            continue
        rx.closed = arrives > close_ns
        for topic in TOPICS:
            record_message(rx, _mask(topic, seq, pub[seq], capture_ns(seq)))
    rx.closed = True
    final = {"frames_in": frames_in, "published": len(pub), "dropped": frames_in - len(pub) - in_flight,
             "corrupt": 0, "source_corrupt": 0, "in_flight_discarded": in_flight, "unheard": 0, "balanced": True}
    return summarize_received(rx, window_s=window_s, cpu={}, subscriber={}, extra={}, final=final,
                              window_end_ns=close_ns)


def _balances(run: dict) -> None:
    assert run["frames_captured"] == (run["frames_received"] + run["frames_received_after_window"]
                                      + run["sequence"]["missing"])
    assert run["sequence"]["missing"] == run["frames_dropped"] + run["lost_after_node"]
    assert _accounting_problem(run) == "" and _pipeline_rate_problem(run) == ""  # `bench report` reads it


def test_frames_the_node_captured_while_it_stopped_are_not_the_windows():
    """The h34 run: a 15 FPS camera, a 2.02 s window holding frames 1..30; the node went on for
    half a second while it stopped (frames 31..37: 31..33 published and read after the window, the
    rest dropped or in flight). Input was 36 / 2.02 = 17.8 FPS with 3 drops; it is the camera's 15."""
    run = _run(window_s=2.02, frames_in=38, published=range(34), in_flight=1)
    assert run["frames_captured"] == 30 and run["accounting"]["last_seq"] == 30
    assert run["input_fps"] == pytest.approx(30 / 2.02) and run["input_fps"] <= FPS
    assert run["frames_dropped"] == 0 and run["lost_after_node"] == 0 and run["sequence"]["missing"] == 0
    assert run["frames_received"] == 30 and run["frames_received_after_window"] == 0
    assert run["output_fps"] == pytest.approx(run["input_fps"])  # it kept up: out = in
    assert run["warnings"] == []
    _balances(run)


def test_a_window_that_ends_among_dropped_frames_counts_them_to_its_end_only():
    """A node that published every other frame: the window's end (frame 21, dropped) lies between
    two received frames; the frames it dropped after it, while it stopped, are not the window's."""
    run = _run(window_s=1.4, frames_in=40, published=range(0, 40, 2))
    assert run["accounting"]["last_seq"] == 21  # 1.4 s x 15 FPS after frame 0
    assert (run["frames_captured"], run["frames_received"], run["frames_dropped"]) == (21, 10, 11)
    assert run["lost_after_node"] == 0
    _balances(run)


def test_a_subscriber_cut_off_mid_window_still_counts_the_windows_tail_as_lost_and_no_more():
    """The subscriber heard nothing after 1 s of a 2.02 s window while the node went on publishing:
    the frames up to the window's end it never got are lost after the node; the stop's are not."""
    run = _run(window_s=2.02, frames_in=38, published=range(38), received_until_s=1.0)
    assert run["frames_captured"] == 30 and run["frames_received"] == 15
    assert run["lost_after_node"] == 15 == run["sequence"]["lost_after_last_received"]
    assert run["frames_dropped"] == 0
    _balances(run)


def test_without_capture_times_that_rise_the_window_runs_to_the_nodes_stop_as_before():
    """Capture stamps that do not follow the frame numbers (not one clock) cannot place the window's
    end: the count runs to the node's stop, as the README says."""
    rx = Received(skip_through=0, anchor_capture_ns=5)
    for seq in (1, 2, 3):
        record_message(rx, _mask("drivable", seq, seq, 5))
    assert window_end_seq(rx, 1.0) is None
    run = _run(window_s=2.02, frames_in=38, published=range(34), in_flight=1, capture_ns=lambda seq: 1_000)
    assert run["frames_captured"] == 36 and run["accounting"]["last_seq"] == 37


@pytest.mark.parametrize("window_s", [2.0, 2.02, 2.05, 2.1])
def test_the_windows_frame_count_is_its_seconds_times_the_rate_to_the_nearest_frame(window_s):
    """A 15 FPS camera, every frame published: the window holds round(window_s x 15) frames, not
    one more from a frame at each end (h34: a 5 FPS camera read 5.43 FPS)."""
    run = _run(window_s=window_s, frames_in=60, published=range(60))
    assert run["frames_captured"] == round(window_s * FPS)
    assert abs(run["input_fps"] - FPS) <= 0.5 / window_s + 1e-9
