"""perception bench pipeline: the frames counted against the node's own final stats (h14 findings 1,
5 and 8 of session s37). A subscriber that stopped getting frames part-way through the window was
reported as "lost after the node 0" and a low input FPS, because frames published after the last one
it received were counted as neither missing nor lost; the node's final line in the same JSON said
otherwise. Also: a paced source slower than the engine is labelled as the limit, and the
``--cameras`` figures say the rate asked and flag a camera its source held back."""

from __future__ import annotations

import signal

import pytest

from perception.bench.nodeproc import exited
from perception.bench.received import Received, record_message, summarize_received
from perception.bench.report import render_markdown, summary_text
from perception.bench.stats import node_accounting


def _mask(topic: str, seq: int, pub_seq: int, receive_ns: int = 3_000):
    from perception.subscribe import Message

    header = {"kind": "mask", "seq": seq, "pub_seq": pub_seq, "capture_ns": 1_000, "publish_ns": 2_000,
              "latency_ms": {"infer": 1.0}, "model_id": "tiny"}
    return Message(topic=f"perception/bench/{topic}", header=header, data=None, wire_bytes=10,
                   receive_ns=receive_ns)


def _final(frames_in: int, published: int, *, in_flight: int = 0, unheard: int = 0) -> dict:
    """The node's final stats line: it balances (frames_in = published + dropped + in flight)."""
    return {"frames_in": frames_in, "published": published, "dropped": frames_in - published - in_flight,
            "corrupt": 0, "source_corrupt": 0, "in_flight_discarded": in_flight, "unheard": unheard,
            "balanced": True}


def _node_run(published_seqs, received_seqs, *, frames_in, in_flight=0, topics=("drivable", "lane"),
              late=(), opened_at=0, receive_ns_of=None):
    """What the bench records from a node that numbered frames 0..frames_in-1 and published
    ``published_seqs`` (one message per topic each, ``pub_seq`` counting them from 0); frame
    ``opened_at``'s mask opened the window; the subscriber got ``received_seqs`` in the window and
    ``late`` after it closed (while the node stopped)."""
    pub = {seq: i for i, seq in enumerate(sorted(published_seqs))}
    before = Received()
    record_message(before, _mask(topics[0], opened_at, pub[opened_at]))
    rx = before.window_after()
    for topic in topics[1:]:  # the opening frame's other topics arrive inside the window
        record_message(rx, _mask(topic, opened_at, pub[opened_at]))
    for seq in received_seqs:
        for topic in topics:
            ns = receive_ns_of(seq) if receive_ns_of else 3_000
            record_message(rx, _mask(topic, seq, pub[seq], receive_ns=ns))
    rx.closed = True
    for seq in late:
        for topic in topics:
            record_message(rx, _mask(topic, seq, pub[seq]))
    final = _final(frames_in, len(published_seqs), in_flight=in_flight)
    return rx, final


def test_frames_published_after_the_subscribers_last_one_count_as_lost_after_the_node(capsys):
    """The h14 run: the node captured 119 frames and published 58 (every 2nd); the subscriber got
    frames 1..17's published ones (8) and then nothing for the rest of the 5 s window. The bench
    said 17 captured, 9 dropped, 0 lost, input 3.4 FPS; the figures must balance against the node."""
    published = list(range(0, 116, 2))  # 58 frames: 0, 2, ..., 114; 115..118 in flight at the stop: 4
    received = [s for s in published if 1 <= s <= 17]  # 2, 4, ..., 16: 8 frames
    assert len(published) == 58 and len(received) == 8
    window_end_ns = 5_000_000_000
    rx, final = _node_run(published, received, frames_in=119, in_flight=4,
                          receive_ns_of=lambda seq: seq * 100_000_000)  # the last at 1.6 s
    run = summarize_received(rx, window_s=5.0, cpu={}, subscriber={}, extra={}, final=final,
                             window_end_ns=window_end_ns)
    # frames 1..118 numbered after the opening one, 4 of them cut off by the stop: 114 captured,
    # 57 published (all but frame 0), 57 never published; 8 of the published received, 49 lost
    assert run["frames_captured"] == 114 and run["frames_received"] == 8
    assert run["frames_dropped"] == 57 and run["lost_after_node"] == 49
    assert run["sequence"]["missing"] == 106 == run["frames_dropped"] + run["lost_after_node"]
    assert run["frames_captured"] == run["frames_received"] + run["sequence"]["missing"]
    # published + dropped by the node = captured; the node's own line balances the same way
    assert run["accounting"]["published"] + run["frames_dropped"] == run["frames_captured"]
    assert run["accounting"]["published"] + 1 == final["published"]  # + the frame that opened the window
    assert run["input_fps"] == pytest.approx(114 / 5.0)  # not 17 / 5 = 3.4
    assert run["sequence"]["lost_after_last_received"] == 49 - 0  # none lost between the received ones
    # said, not left for the reader to find in node_final_stats
    assert any("nothing in the last 3.4 s" in w and "49 frames published after the last one received" in w
               for w in run["warnings"])
    # the report and the terminal read these figures
    md = render_markdown({"kind": "pipeline", "pipeline": run})
    assert "| frames captured | 114 |" in md and "| sequence numbers missing at subscriber | 106 |" in md
    assert "|   of which lost after the node (ZeroMQ queue full) | 49 |" in md
    assert "missing at subscriber 106 (dropped by the node 57, lost after it 49)" in summary_text({"pipeline": run})


def test_a_healthy_run_counts_the_frames_that_arrive_while_the_node_stops_as_received():
    """Every frame published reached the subscriber, the last two after the window closed (they
    were on their way): nothing is lost, nothing is said, and the figures match the node's."""
    published = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11]  # frame 4 dropped by the node; 12 in flight at the stop
    rx, final = _node_run(published, [1, 2, 3, 5, 6, 7, 8, 9], late=[10, 11], frames_in=13, in_flight=1)
    run = summarize_received(rx, window_s=1.0, cpu={}, subscriber={}, extra={}, final=final, window_end_ns=3_000)
    assert (run["frames_captured"], run["frames_received"], run["frames_dropped"], run["lost_after_node"]) == (11, 8, 1, 0)
    assert run["frames_received_after_window"] == 2 and run["output_fps"] == 8.0  # rates and latencies: the window's
    assert run["sequence"]["missing"] == 1 and run["capture_to_receive_ms"]["count"] == 8
    assert run["loss_split"] == "pub_seq" and run["accounting"] is not None and run["warnings"] == []


def test_frames_lost_between_received_ones_and_after_the_last_are_both_counted():
    published = list(range(0, 20))
    received = [1, 2, 5, 6, 7, 8]  # 3 and 4 lost in between; 9..19 after the last one received
    rx, final = _node_run(published, received, frames_in=20)
    run = summarize_received(rx, window_s=1.0, cpu={}, subscriber={}, extra={}, final=final, window_end_ns=None)
    assert run["frames_dropped"] == 0 and run["lost_after_node"] == 13
    assert run["sequence"]["missing_between_received"] == 2 and run["sequence"]["lost_after_last_received"] == 11


def test_when_the_node_and_the_messages_disagree_the_bench_says_so():
    """More frames received than the node's final line says it published: not a split to print
    silently."""
    rx, final = _node_run(list(range(10)), list(range(1, 10)), frames_in=10)
    final["published"] = 5
    run = summarize_received(rx, window_s=1.0, cpu={}, subscriber={}, extra={}, final=final)
    assert any("disagree" in w and "uncertain" in w for w in run["warnings"])


def test_without_the_nodes_final_stats_the_bench_says_the_tail_is_not_counted():
    rx, _ = _node_run(list(range(10)), [1, 2, 3], frames_in=10)
    run = summarize_received(rx, window_s=1.0, cpu={}, subscriber={}, extra={}, final=None)
    assert run["frames_captured"] == 3 and run["lost_after_node"] == 0  # only what the messages show
    assert any("no final stats" in w and "after the last one received are in no figure" in w for w in run["warnings"])


def test_node_accounting_leaves_out_frames_before_the_window_and_unheard_ones():
    """The window opened at frame 5 (pub_seq 3 on drivable: 3 frames sent before it were heard,
    2 unheard before the subscription); frames 6..9 published and received."""
    pubs = {"perception/bench/drivable": {6: 4, 7: 5, 8: 6, 9: 7}}
    acct = node_accounting([6, 7, 8, 9], pubs, start_seq=5, anchor_pub_seqs={"perception/bench/drivable": 3},
                           final=_final(10, 10, unheard=2))
    assert acct is not None
    assert (acct["captured"], acct["published"], acct["received"], acct["lost_after_node"], acct["problems"]) == (
        4, 4, 4, 0, [])
    # no anchor pub_seq (wire version 1) or no final line: not settled against the node
    assert node_accounting([6], pubs, start_seq=5, anchor_pub_seqs={}, final=_final(10, 10)) is None
    assert node_accounting([6], pubs, start_seq=5, anchor_pub_seqs={"perception/bench/drivable": 3}, final=None) is None


def test_a_paced_source_slower_than_the_engine_is_named_as_the_limit():
    from perception.bench.pipeline import PipelineBenchConfig, source_rate

    cfg = PipelineBenchConfig(source="synthetic", fps=3, duration_s=4)
    out = source_rate(cfg, {"input_fps": 3.0, "frames_captured": 12, "frames_dropped": 0})
    assert out["fps_requested"] == 3.0 and out["fps_requested_from"] == "--fps"
    assert out["source_limited"].startswith("source-limited: the source was asked for 3 FPS (--fps)")
    # a node that fell behind its source is not source-limited
    assert source_rate(cfg, {"input_fps": 3.0, "frames_captured": 12, "frames_dropped": 4})["source_limited"] is None
    # the synthetic camera's default rate is the rate asked; a file without --fps has none
    assert source_rate(PipelineBenchConfig(source="synthetic"), {})["fps_requested"] == 30.0
    assert source_rate(PipelineBenchConfig(source="clip.mp4"), {})["fps_requested"] is None


def test_a_killed_node_is_named_by_its_signal():
    assert exited(-signal.SIGKILL) == "was killed by SIGKILL (status -9)"
    assert exited(2) == "exited with status 2"


def test_a_paced_node_run_balances_against_its_final_stats(tiny_model_path):
    """A tiny real run: the figures the report prints add up, and match the node's final line."""
    from perception.bench.pipeline import PipelineBenchConfig, run_pipeline_bench

    cfg = PipelineBenchConfig(model=tiny_model_path, source="synthetic", duration_s=1.5, fps=10, width=96, height=64,
                              threads=1, engine_runs=0, progress=False)
    results = run_pipeline_bench(cfg, command="pytest")
    p = results["pipeline"]
    final, acct = p["node_final_stats"], p["accounting"]
    assert p["loss_split"] == "pub_seq" and acct is not None
    assert p["frames_captured"] == p["frames_received"] + p["frames_received_after_window"] + p["sequence"]["missing"]
    assert p["sequence"]["missing"] == p["frames_dropped"] + p["lost_after_node"]
    assert p["stages_ms"]["infer"]["count"] == p["frames_received"] == p["sequence"]["received"]
    assert acct["published"] + p["frames_dropped"] == p["frames_captured"]
    # the span runs from the window's first frame to its last (window_end_seq), never past the
    # node's last: the frames it captured while it stopped are not the window's (h34 finding 5, s40)
    assert acct["first_seq"] <= acct["last_seq"] <= final["frames_in"] - final["source_corrupt"] - 1
    assert acct["published"] <= final["published"] and p["frames_received"] <= acct["published"]
    assert p["fps_requested"] == 10.0
    if p["source_limited"]:  # the summary the command prints at the end says so
        assert "note: source-limited" in summary_text(results)


def test_the_cameras_figures_say_the_rate_asked_and_flag_a_camera_held_back(tiny_model_path):
    from perception.bench.multicamera import camera_final, camera_shortfall, fps_requested
    from perception.bench.pipeline import PipelineBenchConfig

    assert fps_requested(PipelineBenchConfig(source="synthetic", cameras=2)) == 30.0
    assert fps_requested(PipelineBenchConfig(source="synthetic", cameras=2, fps=12)) == 12.0
    # a camera of a node of several has its own counters under "cameras"
    final = {"frames_in": 50, "cameras": {"bench0": {"frames_in": 30}, "bench1": {"frames_in": 20}}}
    assert camera_final(final, "bench1", ("bench0", "bench1")) == {"frames_in": 20}
    assert camera_final(final, "bench0", ("bench0",)) is final
    # h14: bench1 of one node delivered 13.2 of its 30 FPS; the report said nothing
    behind = camera_shortfall({"input_fps": 13.2, "frames_captured": 40, "frames_dropped": 14}, 30.0)
    assert behind.startswith("its camera delivered 13.2 of the 30 FPS requested (44 %)") and "kept up" not in behind
    assert "the node kept up with it" in camera_shortfall({"input_fps": 13.2, "frames_captured": 40,
                                                           "frames_dropped": 0}, 30.0)
    assert camera_shortfall({"input_fps": 29.1, "frames_captured": 88, "frames_dropped": 60}, 30.0) is None
    assert camera_shortfall({"input_fps": 5.0}, None) is None  # a file read unpaced: no rate asked
