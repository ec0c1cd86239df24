"""Progress off a terminal: a few whole lines, never thousands of bar frames."""

from __future__ import annotations

import io

from perception.progress import LineProgress, progress


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
    assert len(lines) == 4 and lines[3].startswith("engine bench: done, 3000 run in ")
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
    assert lines[0].startswith("train: 23/100 step, ") and lines[0].endswith("loss=0.5000")
    assert 2 <= len(lines) <= 5 and lines[-1].startswith("train: done, 10 step in ")


def test_disabled_prints_nothing():
    out = io.StringIO()
    with progress(total=10, desc="x", disable=True, file=out) as bar:
        bar.set_postfix_str("stage")
        bar.update(10)
    assert out.getvalue() == ""
