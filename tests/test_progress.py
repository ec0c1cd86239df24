"""Progress off a terminal: a few whole lines, never thousands of bar frames."""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest

from perception.progress import (
    LineProgress,
    RecentPace,
    clock_time,
    logs_above,
    mark_stopped,
    plural,
    progress,
)


def test_off_a_terminal_prints_stage_lines_and_one_summary():
    out = io.StringIO()  # not a tty, like a pipe into a file
    with progress(total=3000, desc="engine bench", unit="run", file=out) as bar:
        assert isinstance(bar, LineProgress)
        for stage in ("warm-up a", "block 1/2 a", "block 2/2 a"):
            bar.set_postfix_str(stage)
            for _ in range(1000):
                bar.set_postfix_str(stage)  # repeated names are not new stages
                bar.update(1)
    lines = out.getvalue().splitlines()
    assert lines[:3] == ["engine bench: warm-up a", "engine bench: block 1/2 a", "engine bench: block 2/2 a"]
    assert len(lines) == 4 and lines[3].startswith("engine bench: done, 3000 runs in ")
    assert "\r" not in out.getvalue()


def test_long_stage_gets_a_heartbeat_line(monkeypatch):
    out = io.StringIO()
    clock = iter(range(0, 10_000, 10))  # 10 s per call
    monkeypatch.setattr("perception.progress.time.monotonic", lambda: next(clock))
    bar = progress(total=100, initial=20, desc="train", unit="step", file=out, interval_s=30)
    bar.set_postfix(loss="0.5000")
    for _ in range(10):
        bar.update(1)
    bar.close()
    bar.close()  # idempotent, like tqdm
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("train: 23/100 steps, elapsed 00:30, ETA ") and lines[0].endswith("loss=0.5000")
    assert 2 <= len(lines) <= 5 and lines[-1].startswith("train: done, 10 steps in ")


def test_work_ended_by_an_interrupt_says_stopped_not_done():
    """"train: done, 5 step in 6.9 s" was printed after Ctrl-C: an unfinished end says "stopped"."""
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt), progress(total=10, desc="eval", unit="frame", file=out) as bar:
        bar.update(1)
        raise KeyboardInterrupt
    assert out.getvalue().startswith("eval: stopped, 1 frame in ")
    out = io.StringIO()
    bar = progress(total=10, desc="train", unit="step", file=out)
    bar.update(5)
    mark_stopped(bar)  # what training does when a stop signal ended the loop between two steps
    bar.close()
    assert out.getvalue().startswith("train: stopped, 5 steps in ")


def test_counts_read_in_the_plural_unless_one():
    assert [plural(n, "frame") for n in (0, 1, 2)] == ["frames", "frame", "frames"]
    assert plural(6, "run") == "runs" and plural(3, "it") == "it"  # tqdm's "it" stays as tqdm writes it
    out = io.StringIO()
    with progress(total=None, desc="bench", unit="frame", file=out):
        pass
    assert out.getvalue().startswith("bench: done, 0 frames in ")


def test_disabled_prints_nothing():
    out = io.StringIO()
    with progress(total=10, desc="x", disable=True, file=out) as bar:
        bar.set_postfix_str("stage")
        bar.update(10)
    assert out.getvalue() == ""


def test_quiet_flag_turns_progress_off():
    from perception import cli

    shown = []
    for quiet in (True, False):
        cli.configure_logging(0, quiet)  # what -q sets up, whatever handlers a test runner has
        out = io.StringIO()
        with progress(total=2, desc="engine bench", unit="run", file=out) as bar:
            bar.set_postfix_str("block 1/1")
            bar.update(2)
        shown.append(out.getvalue())
    assert shown[0] == "" and shown[1].startswith("engine bench: block 1/1\n")


def test_clock_time_reads_like_a_tqdm_bar():
    assert [clock_time(s) for s in (0, 4.6, 65, 3599.6, 3725, 90061)] == [
        "00:00", "00:05", "01:05", "1:00:00", "1:02:05", "25:01:01"]


def test_heartbeat_off_a_terminal_has_an_eta(monkeypatch):
    out = io.StringIO()
    now = [0.0]
    monkeypatch.setattr("perception.progress.time.monotonic", lambda: now[0])
    bar = progress(total=100, initial=20, desc="train", unit="step", file=out, interval_s=30)
    bar.set_postfix(loss="0.5000")
    for _ in range(30):  # 1 s a step: 50 steps left at the end
        now[0] += 1
        bar.update(1)
    assert out.getvalue().splitlines() == ["train: 50/100 steps, elapsed 00:30, ETA 00:50, loss=0.5000"]


def test_the_eta_follows_the_recent_pace_not_the_whole_run():
    pace = RecentPace(0, 0.0, span_s=300)
    assert pace.seconds_left(0, 100, 0.0) is None  # nothing timed yet
    t = 0.0
    for n in range(1, 601):  # 600 steps at 1 s, then 3 s a step
        t += 1 if n <= 300 else 3
        pace.add(n, t)
    assert pace.seconds_left(600, 1000, t) == pytest.approx(400 * 3, rel=0.02)
    assert len(pace.samples) < 30  # a few samples, not one per step


def test_log_lines_go_above_a_tqdm_bar_not_onto_its_line(capsys):
    from tqdm import tqdm

    handler = logging.StreamHandler(sys.stderr)  # what logging.basicConfig sets up for the CLI
    handler.setFormatter(logging.Formatter("%(levelname).1s %(message)s"))
    root, level = logging.getLogger(), logging.getLogger().level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        bar = tqdm(total=4, desc="train", file=sys.stderr, mininterval=0)
        with logs_above(bar):
            bar.update(2)
            logging.getLogger("perception.training.fit").info("step 2: val mIoU 50.00 %")
            bar.update(2)
        bar.close()
        line = LineProgress(total=4, initial=0, desc="x", unit="it", disable=False, file=sys.stderr, interval_s=30)
        with logs_above(line):
            assert handler in root.handlers  # whole lines need no redirect
        assert handler in root.handlers  # restored
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    err = capsys.readouterr().err
    # tqdm clears its line and writes the record from the line's start, then draws the bar again
    assert re.search(r"(^|[\r\n])I step 2: val mIoU 50\.00 %\n", err), repr(err)
    assert "]I step" not in err
