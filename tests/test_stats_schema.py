"""The stats document's keys are declared once (``perception/stats_schema.py``, re-exported by
``contracts``): real documents of the node must match the declaration exactly (every declared key
present with its type, no undeclared key), so the producers, the readers and the README cannot
drift apart again."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from pathlib import Path

import pytest

from perception import contracts
from perception.bench.stats import sequence_gaps
from perception.cli import main as cli_main
from perception.pipeline import Pipeline
from perception.publish import MaskPublisher, PublishCounters
from perception.run_config import RunConfig
from perception.sources import open_source
from perception.stats_schema import (
    CAMERA_STATS,
    FRAME_COUNTERS,
    NODE_STATS,
    STARTUP_STATS,
    STATS_ALIASES,
    SUMMED,
    check_stats,
    sequence_figures_markdown,
    startup_document,
    stats_table_markdown,
)
from perception.subscribe import MaskSubscriber, Message
from perception.topic_stats import TopicStats

README = Path(__file__).resolve().parents[1] / "README.md"
NS = "perception/schema"


def test_a_camera_node_publishes_documents_that_match_the_declaration(tiny_engine):
    """Every interval document on the stats topic and the final one, as a subscriber receives them."""
    publisher = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, sndhwm=10_000)
    config = RunConfig.from_settings(source="synthetic", width=96, height=72, fps=120, max_frames=40, queue="lossless",
                       stats_interval_s=0.05, wait_subscribers=1, wait_timeout_s=60, warmup=0)
    pipeline = Pipeline(config, source=open_source("synthetic", width=96, height=72, fps=120),
                        engine=tiny_engine, publisher=publisher)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(final=pipeline.run()))
    docs: list[dict] = []
    try:
        with MaskSubscriber(publisher.endpoint, namespace=NS) as sub:
            thread.start()
            while not docs or "end_reason" not in docs[-1]:
                msg = sub.recv(timeout_s=30)
                assert msg is not None, f"the node's final stats never came ({len(docs)} documents)"
                if msg.topic == contracts.topic_name(NS, contracts.STATS_TOPIC):
                    docs.append(msg.data)
        thread.join(timeout=30)
    finally:
        pipeline.stop()
        thread.join(timeout=10)
        publisher.close()
    *interval, final = docs
    assert interval, "no interval document before the final one"
    for doc in interval:
        assert check_stats(doc, final=False) == [], doc
    assert check_stats(final, final=True) == [], final
    assert final == json.loads(json.dumps(result["final"]))  # the document the run returned (and prints)
    assert final["balanced"] and final["published"] == final["frames_out"] == 40
    # The publisher block is the declared one: the counters' fields plus the two live figures.
    assert set(final["publisher"]) == {*asdict(PublishCounters()), "hwm_overflows", "subscriptions", "curve_rejections",
                                       "curve_disconnects"}
    assert final["publisher"]["hwm_overflows"] == 0  # a subscriber that keeps up


def test_a_node_with_several_cameras_prints_a_document_that_matches_the_declaration(tiny_model_path, free_tcp_port,
                                                                                  capsys):
    code = cli_main(["-q", "run", "--model", str(tiny_model_path), "--source", "front=synthetic",
                     "--source", "rear=synthetic", "--width", "96", "--height", "72", "--fps", "240",
                     "--queue", "lossless", "--max-frames", "3", "--threads", "1",
                     "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    final = json.loads(out[-1])
    assert check_stats(final, NODE_STATS, final=True, where="node") == [], final
    for name, doc in final["cameras"].items():  # with several cameras: `camera` and `batching` are there
        assert doc["camera"] == name and "batching" in doc
    assert all(final[key] == sum(doc[key] for doc in final["cameras"].values())
               for key in SUMMED if key not in ("input_fps", "output_fps"))


def test_a_run_stopped_during_start_up_prints_the_declared_document():
    doc = startup_document("loading the engine", "signal SIGTERM")
    assert check_stats(doc, STARTUP_STATS, final=True, where="startup") == []
    assert doc["balanced"] and all(doc[name] == 0 for name in FRAME_COUNTERS)


def test_the_check_names_every_kind_of_drift():
    doc = startup_document("loading the engine", "signal SIGTERM")
    assert {"stats.end_reason is only in a final document", "stats.balanced is only in a final document"} <= set(
        check_stats(doc, CAMERA_STATS, final=False))
    drifted = {**doc, "frames_dropped": 3, "dropped": "3", "drops": 3}
    del drifted["corrupt"]
    assert sorted(check_stats(drifted, STARTUP_STATS, final=True)) == [
        "stats.corrupt is missing",
        "stats.dropped is str '3', expected int",
        "stats.drops differs from 'dropped', of which it is the old name",
        "stats: undeclared key 'frames_dropped'",
    ]
    assert check_stats([], STARTUP_STATS) == ["stats is list, expected an object"]
    nested = {"publisher": {"messages_sent": True}}
    problems = check_stats(nested, CAMERA_STATS, final=False)
    assert "stats.publisher.messages_sent is bool True, expected int" in problems
    assert "stats.publisher.bytes_sent is missing" in problems


def test_each_key_is_declared_once_and_aliases_name_canonical_keys():
    for keys in (CAMERA_STATS, NODE_STATS, STARTUP_STATS):
        names = [key.name for key in keys]
        assert len(names) == len(set(names)), names
    canonical = {key.name for key in CAMERA_STATS if key.alias_of is None}
    assert STATS_ALIASES == {"frames_out": "published", "drops": "dropped"}
    assert set(STATS_ALIASES.values()) <= canonical
    assert contracts.CAMERA_STATS is CAMERA_STATS and contracts.check_stats is check_stats


@pytest.mark.parametrize(("keys", "collapse"), [(CAMERA_STATS, False), (NODE_STATS, True)], ids=["camera", "node"])
def test_the_readme_holds_the_declared_table(keys, collapse):
    assert stats_table_markdown(keys, collapse_summed=collapse, blocks=not collapse) in README.read_text(), (
        "README's stats tables differ from perception/stats_schema.py; paste stats_table_markdown() output"
    )


def test_the_readme_holds_the_declared_sequence_figures():
    assert sequence_figures_markdown() in README.read_text()


def test_missing_and_gaps_mean_one_thing_for_the_listener_and_the_bench():
    """``missing``: numbers absent; ``gaps``: places with at least one absent (contracts.SEQUENCE_FIGURES)."""
    seqs = [5, 8, 9, 13]  # 6, 7 and 10, 11, 12 absent: 5 missing numbers in 2 gaps, the longest 3
    bench = sequence_gaps(seqs)
    listener = TopicStats(0.0)
    for seq in seqs:
        listener.add(Message(topic="t", header={"kind": "mask", "seq": seq, "pub_seq": seq, "capture_ns": 1},
                             data=None, wire_bytes=1, receive_ns=2), 0.0)
    summary = listener.summary(1.0)
    assert bench["missing"] == summary["missing"] == 5 and bench["gaps"] == 2 and bench["max_gap"] == 3
    assert summary["lost"] + summary["node_dropped"] == summary["missing"]
    sequence_keys = {"missing", "gaps", "max_gap", "lost", "node_dropped"}
    assert set(contracts.SEQUENCE_FIGURES) == sequence_keys
    # Each side reports only figures of that vocabulary, under those names (no second meaning of "gaps").
    assert {k for k in summary if k in sequence_keys or "gap" in k} <= set(contracts.SEQUENCE_FIGURES)
    assert {k for k in bench if k in sequence_keys or "gap" in k} <= set(contracts.SEQUENCE_FIGURES)


def test_the_bench_reads_the_node_drops_under_the_declared_name():
    """bench pipeline used to guess among frames_dropped, dropped and drops, at any depth."""
    from perception.bench.received import Received, summarize_received

    rx = Received()
    rx.order, rx.frames = [0, 1, 4], {s: {"capture_ns": 0, "publish_ns": 1, "receive_ns": 2, "latency_ms": {}}
                                      for s in (0, 1, 4)}
    first = startup_document("complete", "x")
    last = {**first, "dropped": 2, "drops": 2, "publisher": {"dropped": 99}}
    rx.stats_docs = [{"receive_ns": 0, "doc": first}, {"receive_ns": 1, "doc": last}]
    run = summarize_received(rx, window_s=1.0, cpu={}, subscriber={}, extra={})
    assert run["frames_dropped"] == 2 and run["sequence"]["missing"] == 2 and run["lost_after_node"] == 0
    rx.stats_docs = [{"receive_ns": 1, "doc": {"frames_dropped": 2}}]  # not a key of the node's document
    assert summarize_received(rx, window_s=1.0, cpu={}, subscriber={}, extra={})["frames_dropped"] is None
