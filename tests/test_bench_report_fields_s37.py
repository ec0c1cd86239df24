"""`perception bench report` shows the pipeline bench's accounting fields (s37, after F8): the rate
the source was asked for and a source-limited run's label, the run's warnings, the frames received
after the window closed (so that captured = received + missing balances on the page), the cameras'
warnings and an unpaced file said as such; `bench report` prints the terminal summary with them from a
saved JSON; a JSON written before these fields still makes a report; and a hand-edited value of one
of them is refused in one line naming the key."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from perception.bench.pipeline import source_rate
from perception.bench.received import Received, record_message, summarize_received
from perception.bench.results import REPORT_FILE, RESULTS_FILE, RESULTS_SCHEMA
from perception.cli import main as cli_main

LIMITED = "source-limited: the source was asked for 3 FPS (--fps)"
STALLED = "nothing in the last"


def _mask(topic: str, seq: int, pub_seq: int, receive_ns: int):
    from perception.subscribe import Message

    header = {"kind": "mask", "seq": seq, "pub_seq": pub_seq, "capture_ns": seq * 1_000_000,
              "publish_ns": seq * 1_000_000 + 500_000, "latency_ms": {"infer": 1.0 + seq % 3},
              "model_id": "tiny"}
    return Message(topic=f"perception/bench/{topic}", header=header, data=None, wire_bytes=10,
                   receive_ns=receive_ns)


def _pipeline(*, published, received, late=(), frames_in, in_flight=0, fps=3.0, window_s=5.0):
    """The ``pipeline`` block the bench writes for a node that numbered frames 0..frames_in-1 and
    published ``published`` (one message per topic, ``pub_seq`` counting them); frame 0 opened the
    window, the subscriber got ``received`` in it and ``late`` after it closed. As measure_node
    builds it: summarize_received against the node's final line, then source_rate."""
    pub = {seq: i for i, seq in enumerate(sorted(published))}
    topics = ("drivable", "lane")
    before = Received()
    record_message(before, _mask(topics[0], 0, pub[0], 1_000_000))
    rx = before.window_after()
    record_message(rx, _mask(topics[1], 0, pub[0], 1_000_000))
    for seq in received:
        for topic in topics:
            record_message(rx, _mask(topic, seq, pub[seq], seq * 1_000_000 + 2_000_000))
    rx.closed = True
    for seq in late:
        for topic in topics:
            record_message(rx, _mask(topic, seq, pub[seq], seq * 1_000_000 + 2_000_000))
    final = {"frames_in": frames_in, "published": len(published), "dropped": frames_in - len(published) - in_flight,
             "corrupt": 0, "source_corrupt": 0, "in_flight_discarded": in_flight, "unheard": 0, "balanced": True}
    run = summarize_received(rx, window_s=window_s, cpu={}, subscriber={}, final=final,
                             window_end_ns=int(window_s * 1e9),
                             extra={"source": "synthetic", "duration_s": window_s})
    run.update(source_rate(SimpleNamespace(fps=fps, source="synthetic"), run))
    return run


def _doc(**parts) -> dict:
    return {"schema": RESULTS_SCHEMA, "kind": "pipeline", "created_utc": "2026-12-07T00:00:00Z",
            "command": "perception bench pipeline", "environment": {}, **parts}


def _report(tmp_path: Path, doc: dict, capsys, name: str = "run") -> tuple[int, str, str, str]:
    """``bench report`` on ``doc`` saved as a bench JSON: exit code, Markdown, stdout, stderr."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / RESULTS_FILE).write_text(json.dumps(doc))
    code = cli_main(["bench", "report", str(folder)])
    out = capsys.readouterr()
    md = (folder / REPORT_FILE).read_text() if (folder / REPORT_FILE).exists() else ""
    return code, md, out.out, out.err


def _row(md: str, label: str) -> str:
    """The value cell of the figure table's row ``label``."""
    rows = [line for line in md.splitlines() if line.startswith(f"| {label} | ")]
    assert len(rows) == 1, (label, md)
    return rows[0].removeprefix(f"| {label} | ").removesuffix(" |")


def test_a_source_limited_run_shows_the_rate_asked_and_labels_the_figures_it_set(tmp_path, capsys):
    """--fps 3, every frame published and received, two of them after the window closed: the page
    says the rate asked and where it came from, labels the output FPS and node/engine-only rows,
    says why, and its counts balance: captured = received + received after the window + missing."""
    run = _pipeline(published=range(16), received=range(1, 14), late=(14, 15), frames_in=16, fps=3.0)
    assert run["source_limited"].startswith(LIMITED) and run["frames_received_after_window"] == 2
    doc = _doc(pipeline=run, ratios={"engine_only_fps": 30.0, "node_over_engine_fps": 0.1})
    code, md, out, err = _report(tmp_path, doc, capsys)
    assert code == 0, err
    assert _row(md, "source rate") == "3.00 FPS requested (--fps)"
    limited = ", source-limited (see the note below)"
    assert _row(md, f"output FPS (frames received){limited}") == "2.60"
    assert _row(md, f"node FPS / engine-only FPS{limited}") == "0.10"
    assert "\n**Source-limited:** the source was asked for 3 FPS (--fps) and the node took" in md
    captured, received = int(_row(md, "frames captured")), int(_row(md, "frames received"))
    after = [line for line in md.splitlines() if line.startswith("| frames received after the window closed (")]
    assert len(after) == 1 and after[0].endswith(" | 2 |")
    missing = int(_row(md, "sequence numbers missing at subscriber"))
    assert (captured, received, missing) == (15, 13, 0) and captured == received + 2 + missing
    assert "frames captured = frames received + received after the window closed + missing" in md
    # the terminal summary of the saved JSON says it too
    assert f"\nnote: {LIMITED}" in out and "warning:" not in out


def test_a_run_whose_subscriber_stalled_lists_the_warning_in_the_report_and_the_summary(tmp_path, capsys):
    """The subscriber heard nothing for the last 3.8 s while the node published on (F8's case):
    the warning the run printed on stderr is in the report and in `bench report`'s summary."""
    run = _pipeline(published=range(0, 100, 2), received=range(2, 12, 2), frames_in=100, fps=30.0)
    (warning,) = run["warnings"]
    assert STALLED in warning and run["source_limited"] is None
    code, md, out, err = _report(tmp_path, _doc(pipeline=run), capsys)
    assert code == 0, err
    assert f"\n**Warning:** {warning}.\n" in md and "**Source-limited:**" not in md
    assert "source-limited" not in md
    assert _row(md, "source rate") == "30.00 FPS requested (--fps)"
    assert f"\nwarning: {warning}\n" in out and "note:" not in out
    captured, missing = int(_row(md, "frames captured")), int(_row(md, "sequence numbers missing at subscriber"))
    assert captured == int(_row(md, "frames received")) + missing  # none after the window


def _cameras(*, source: str, fps: float | None, warnings: list[str], new: bool = True) -> dict:
    e2e = {"count": 2, "mean": 15.0, "std": 7.07, "min": 10.0, "p50": 15.0, "p90": 19.0, "p99": 19.9, "max": 20.0}

    def camera(share: float) -> dict:
        cam = {"output_fps": 5.0, "input_fps": 5.0, "frames_received": 10, "frames_captured": 10,
               "frames_dropped": 0, "lost_after_node": 0, "loss_split": "pub_seq", "capture_to_receive_ms": e2e,
               "stages_p50_ms": {"infer": 9.0}}
        if new:
            cam.update(frames_received_after_window=0, missing=0, delivered_share=share, warnings=[])
        return cam

    def one_run() -> dict:
        run = {"window_s": 2.0, "images_per_s": 10.0, "cpu_percent_mean": 150.0, "min_camera_share": 1.0,
               "images_per_core_s": 6.7, "per_camera": {"bench0": camera(0.5), "bench1": camera(0.5)}}
        if new:
            run["warnings"] = []
        return run

    block = {"n": 2, "source": source, "fps_requested": fps, "batch_timeout_ms": None, "one_node": one_run(),
             "separate_nodes": one_run(), "one_node_over_separate": 1.0, "one_node_over_separate_per_core": 1.0}
    if new:
        block.update(fps_requested_from="--fps" if fps else None, warnings=warnings)
    else:
        for run in ("one_node", "separate_nodes"):
            block[run].pop("images_per_core_s")
    return block


def test_cameras_warnings_are_listed_and_a_file_without_fps_reads_unpaced(tmp_path, capsys):
    shortfall = "one node, camera bench1: its camera delivered 5.0 of the 10 FPS requested (50 %)"
    code, md, out, err = _report(tmp_path, _doc(cameras=_cameras(source="synthetic", fps=10.0, warnings=[shortfall])),
                                 capsys, "paced")
    assert code == 0, err
    assert "2 cameras, each reading `synthetic` at 10.00 FPS requested (--fps), queue latest: " in md
    assert f"\n**Warning:** {shortfall}.\n" in md and f"\nwarning: {shortfall}\n" in out
    assert "| one node | bench1 | 5.00 | 0.50 | 5.00 | 0 |" in md  # input / requested beside input FPS
    code, md, out, err = _report(tmp_path, _doc(cameras=_cameras(source="drive.mp4", fps=None, warnings=[])),
                                 capsys, "file")
    assert code == 0, err
    assert "2 cameras, each reading `drive.mp4`, unpaced (no --fps: read as fast as the node takes it), " in md
    assert " - FPS requested" not in md and "**Warning:**" not in md and "warning:" not in out


def test_a_json_written_before_these_fields_still_makes_its_report(tmp_path, capsys):
    """A pipeline and a cameras JSON as the bench wrote them before the accounting (no accounting,
    warnings, frames received after the window, rate requested, source_limited; fps_requested null for
    the synthetic camera): `bench report` makes their report and summary without the new lines."""
    run = _pipeline(published=range(16), received=range(1, 16), frames_in=16, fps=3.0)
    for key in ("accounting", "warnings", "frames_received_after_window", "fps_requested", "fps_requested_from",
                "source_limited"):
        run.pop(key)
    for key in ("missing_between_received", "missing_outside_received", "lost_after_last_received",
                "received_after_window"):
        run["sequence"].pop(key)
    code, md, out, err = _report(tmp_path, _doc(pipeline=run), capsys, "pipeline")
    assert code == 0, err
    assert _row(md, "frames captured") == "15" and _row(md, "output FPS (frames received)") == "3.00"
    for new_line in ("| source rate |", "| frames received after the window closed", "**Warning:**",
                     "**Source-limited:**", "counted against the node's own final stats"):
        assert new_line not in md
    assert out.startswith("node: in 3.0 FPS, out 3.0 FPS") and "warning:" not in out and "note:" not in out
    code, md, out, err = _report(tmp_path, _doc(cameras=_cameras(source="synthetic", fps=None, warnings=[], new=False)),
                                 capsys, "cameras")
    assert code == 0, err
    assert "2 cameras, each reading `synthetic`, no rate requested (no --fps: the source's own rate)" in md
    assert "| one node | bench0 | 5.00 | - | 5.00 |" in md and "one node / 2 nodes: x1.00 images/s" in out


def _stalled() -> dict:
    return _doc(pipeline=_pipeline(published=range(0, 100, 2), received=range(2, 12, 2), frames_in=100, fps=30.0))


def _set(path: str, value):
    """An edit of the pipeline block: ``value`` at the dotted ``path``."""
    def edit(p: dict) -> None:
        *parents, key = path.split(".")
        for name in parents:
            p = p[name]
        p[key] = value
    return edit


HOSTILE = {
    "warnings not a list": (_set("warnings", "all good"), 'pipeline.warnings is "all good", expected a list'),
    "a warning not text": (_set("warnings", [7]), "pipeline.warnings[0] is 7, expected text"),
    "negative after the window": (_set("frames_received_after_window", -2),
                                  "pipeline.frames_received_after_window is -2, expected a whole number not below 0"),
    "fractional after the window": (_set("frames_received_after_window", 1.5),
                                    "pipeline.frames_received_after_window is 1.5, expected a whole number"),
    "negative rate requested": (_set("fps_requested", -30.0),
                                "pipeline.fps_requested is -30.0, expected a number not below 0"),
    "rate requested as text": (_set("fps_requested", "30"), 'pipeline.fps_requested is "30", expected a number'),
    "source_limited not text": (_set("source_limited", True), "pipeline.source_limited is true, expected text"),
    "accounting a list": (_set("accounting", []), "pipeline.accounting is a list, expected an object"),
    "negative captured": (_set("accounting.captured", -1),
                          "pipeline.accounting.captured is -1, expected a whole number not below 0"),
    "problems not a list": (_set("accounting.problems", "none"), 'pipeline.accounting.problems is "none", expected a list'),
    "negative tail": (_set("sequence.lost_after_last_received", -4),
                      "pipeline.sequence.lost_after_last_received is -4, expected a whole number not below 0"),
    "dropped not captured - published": (_set("accounting.dropped", 10),
                                         "pipeline.accounting.dropped is 10, but its captured 99 - published 49 gives 50"),
    "lost not published - received": (_set("accounting.lost_after_node", 3),
                                      "pipeline.accounting.lost_after_node is 3, but its published 49 - received 5"),
    "captured not the accounting's": (_set("frames_captured", 40),
                                      "pipeline.frames_captured is 40, but pipeline.accounting.captured is 99"),
    "missing not the accounting's": (_set("sequence.missing", 4),
                                     "pipeline.sequence.missing is 4, but pipeline.accounting.missing is 94"),
    "more received than captured": (_set("frames_received", 120),
                                    "pipeline.frames_received is 120, more than the 99 frames captured"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_bench_report_refuses_a_hand_edited_accounting_field_naming_it(case, tmp_path, capsys):
    edit, said = HOSTILE[case]
    doc = _stalled()
    code, _, _, err = _report(tmp_path, copy.deepcopy(doc), capsys, "whole")
    assert code == 0, err  # as the bench wrote it, it is reported
    edit(doc["pipeline"])
    code, md, out, err = _report(tmp_path, doc, capsys, "edited")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err and md == "", err
    folder = tmp_path / "edited"
    assert lines[0].startswith(f"perception: error: {folder / RESULTS_FILE}: {said}"), lines[0]
    assert lines[0].endswith("so no report can be made from it; pass the perception.bench.json that bench wrote, "
                             "as it wrote it (or run the bench again)")


def test_more_received_than_published_is_reported_when_the_bench_said_the_counts_disagree(tmp_path, capsys):
    """The node's final line said fewer frames published than arrived: the bench keeps the figures and
    lists the disagreement (accounting.problems, and a warning); `bench report` reports it, warning
    included, rather than refusing the file the bench wrote."""
    doc = _doc(pipeline=_disagreeing())
    code, md, out, err = _report(tmp_path, doc, capsys)
    assert code == 0, err
    (warning,) = doc["pipeline"]["warnings"]
    assert "disagree" in warning and f"**Warning:** {warning}." in md and f"warning: {warning}" in out


def _disagreeing() -> dict:
    """A pipeline block whose node's final line counts 5 frames published while 11 arrived."""
    pub = {seq: i for i, seq in enumerate(range(12))}
    before = Received()
    record_message(before, _mask("drivable", 0, 0, 1_000_000))
    rx = before.window_after()
    for seq in range(1, 12):
        record_message(rx, _mask("drivable", seq, pub[seq], seq * 1_000_000 + 2_000_000))
    final = {"frames_in": 12, "published": 5, "dropped": 7, "corrupt": 0, "source_corrupt": 0,
             "in_flight_discarded": 0, "unheard": 0, "balanced": True}
    run = summarize_received(rx, window_s=1.0, cpu={}, subscriber={}, extra={}, final=final,
                             window_end_ns=1_000_000_000)
    assert run["accounting"]["problems"] and run["frames_received"] > run["accounting"]["published"]
    return run
