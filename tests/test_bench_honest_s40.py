"""The bench does not present figures it did not measure (s40, after H34): a window without a frame
is an error naming the fix; every FPS/percentile line on the terminal shows its sample count; a
percentile is shown only from enough samples; a run of too few samples says so in the JSON, the
Markdown and the terminal; other processes on the cores during a measured window (read from
/proc/stat, not the lagging load average) make one warning; the warnings the bench and the node
give as they run (``--threads`` above the cores) reach the report; a missing model is said before
the other flags' checks. The decisions are fed numbers: no test here depends on the machine's load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from perception.bench import contention
from perception.bench.contention import combine, contention_warning, window_figures
from perception.bench.engine import EngineBenchConfig
from perception.bench.node import NodeFailed, no_frame_message, node_warnings
from perception.bench.report import engine_warnings, render_markdown, summary_text
from perception.bench.stats import few_samples, summarize_ms
from perception.errors import ModelError


def _fig(*, wall=4.0, busy=8.0, steal=0.0, own=4.0, cores=2):
    return window_figures(wall_s=wall, busy_s=busy, steal_s=steal, own_cpu_s=own, usable_cores=cores)


def test_contention_decision_from_measured_cpu():
    # H34 #3: a hog pinned to one core beside a 2-thread row: the row got 0.95 cores, others 1.0.
    hog = _fig(wall=4.0, busy=7.8, own=3.8)
    text = contention_warning(hog, wanted_cores=2, what="#2 t2")
    assert text and text.startswith("#2 t2: other processes used 1.00 of the 2 cores it may run on")
    assert "it used 0.95" in text and "/proc/stat" in text
    # a one-thread row leaves a core free: the same other load does not compete with it
    assert contention_warning(hog, wanted_cores=1, what="#1 t1") is None
    # a node may use every core (wanted None): any other load beyond the threshold competes
    assert contention_warning(_fig(wall=4.0, busy=5.2, own=4.0), wanted_cores=None, what="node") is not None
    assert contention_warning(_fig(wall=4.0, busy=4.4, own=4.0), wanted_cores=None, what="node") is None
    # hypervisor steal alone
    stolen = contention_warning(_fig(wall=4.0, busy=4.0, own=4.0, steal=0.8), wanted_cores=2, what="x")
    assert stolen and "stole 10.0 %" in stolen
    # a window too short for /proc/stat's 10 ms ticks is not judged; blocks add up
    short = _fig(wall=0.02, busy=0.04, own=0.0)
    assert contention_warning(short, wanted_cores=2, what="x") is None
    rows = combine([short] * 50)
    assert rows["wall_s"] == pytest.approx(1.0) and contention_warning(rows, wanted_cores=2, what="x")
    assert contention_warning(None, wanted_cores=2, what="x") is None and combine([None]) is None


def test_cpu_window_reads_usable_cores(monkeypatch):
    monkeypatch.setattr(contention.os, "sched_getaffinity", lambda _pid: {0})
    window = contention.CpuWindow()
    assert window.cores == [0]
    figures = window.start().stop()
    if Path("/proc/stat").exists():
        assert figures is not None and figures["usable_cores"] == 1


def _engine_row(count: int, label: str = "default ort CPUExecutionProvider b1") -> dict:
    samples = [20.0 + i % 3 for i in range(count)]
    return {"label": label, "model_name": "default", "engine": "ort", "provider": "cpu", "precision": "fp32",
            "input_hw": [64, 64], "batch": 1, "latency_ms": summarize_ms(samples), "fps": 48.0,
            "throughput_ips": 48.0, "model_file_mb": 1.0, "samples_ms": samples}


def _engine_doc(rows, warnings=(), env=None) -> dict:
    return {"kind": "engine", "environment": env or {}, "engine": {"settings": {}, "results": rows,
                                                                   "warnings": list(warnings)}}


def test_engine_line_shows_n_and_hides_p99_of_few_samples():
    out = summary_text(_engine_doc([_engine_row(1)]))
    assert "n=1  p50" in out and "p99 - ms" in out
    assert "warning: #1 default ort CPUExecutionProvider b1: only 1 timed call measured" in out
    md = render_markdown(_engine_doc([_engine_row(1)]))
    assert "only 1 timed call measured" in md
    enough = summary_text(_engine_doc([_engine_row(150)]))
    assert "n=150" in enough and "p99 - ms" not in enough and "timed call" not in enough


def test_engine_warnings_carry_the_runs_own_and_use_usable_cores():
    threads = "--threads 8: more than the 2 CPU cores this process may use"
    doc = _engine_doc([_engine_row(50)], warnings=[threads],
                      env={"cpu_logical_cores": 2, "cpu_usable_cores": 1, "load_average_1m": 1.5})
    warned = engine_warnings(doc)
    assert warned[0] == threads and any("reached 1.50 on 1 cores" in w for w in warned)
    assert f"**Warning:** {threads}." in render_markdown(doc)


def _pipeline(frames: int, warnings=()) -> dict:
    e2e = summarize_ms([90.0 + i for i in range(frames)])
    return {"source": "synthetic", "duration_s": 0.1, "window_s": 0.1, "frames_received": frames,
            "frames_captured": 3, "input_fps": 29.8, "output_fps": 9.9, "sequence": {"missing": 2},
            "frames_dropped": 2, "lost_after_node": 0, "warnings": list(warnings), "stages_ms": {},
            "capture_to_receive_ms": e2e, "cpu": {}}


def test_pipeline_line_of_one_frame_says_so():
    # H34 #2: --duration 0.1 printed FPS and p50 = p99 from one frame, with ratios, and no caveat.
    doc = {"kind": "pipeline", "environment": {}, "pipeline": _pipeline(1),
           "baseline": {"fps": 22.1, "latency_ms": summarize_ms([45.0, 45.0, 46.0])},
           "ratios": {"node_over_baseline_fps": 0.45}}
    out = summary_text(doc)
    assert "out 9.9 FPS (n=1 frames in 0.10 s)" in out and "p99 - ms" in out
    assert "warning: the node: only 1 frame measured" in out
    assert "serial baseline: 22.1 FPS (n=3)" in out
    assert "only 1 frame measured" in render_markdown(doc)
    assert few_samples(10, "x", "frames") is None and few_samples(9, "x", "frames")


def test_no_frame_in_the_window_is_an_error_naming_the_fix():
    class Cfg:
        source = "one.avi"

    ended = no_frame_message(Cfg(), 3.0, 0.2)
    assert "input ended 0.2 s into the measuring window" in ended and "--loop" in ended
    assert "--duration" in no_frame_message(Cfg(), 3.0, None)
    assert issubclass(NodeFailed, Exception)


def test_node_threads_warning_reaches_the_report():
    log = ("16:58:43 I perception.run: start\n"
           "16:58:43 W perception.engines.base: --threads 8: more than the 2 CPU cores this process may use; x\n"
           "16:58:44 W perception.run: something else\n")
    assert node_warnings(log) == ["the node warned: --threads 8: more than the 2 CPU cores this process may use; x"]


def test_missing_model_is_said_before_the_runs_check(tmp_path):
    with pytest.raises(ModelError, match="not found; check the --model path"):
        EngineBenchConfig(models=[tmp_path / "nope.onnx"], runs=2)


def test_clip_ending_before_the_window_has_a_frame_exits_2(tmp_path):
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    clip = tmp_path / "one.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 30, (160, 96))
    w.write(np.zeros((96, 160, 3), np.uint8))
    w.release()
    out = tmp_path / "o1"
    proc = subprocess.run([sys.executable, "-m", "perception", "bench", "pipeline", "--source", str(clip),
                           "--duration", "3", "--engine-runs", "0", "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "--loop" in proc.stderr
    assert "FPS" not in proc.stdout and not (out / "perception.bench.json").exists()


def test_peak_rate_held_from_few_frames_says_its_n():
    from perception.bench.report import _peak_rate_line

    peak = {"max_drop": 0.01, "fps_held": 18.98, "lowest_dropping_fps": 20.5, "sustained": {"trial": 1},
            "trials": [{"frames_captured": 19}, {"frames_captured": 18}]}
    line = _peak_rate_line(peak)
    assert "best n=19 frames; its best trial captured only 19 frames, too few to show 1 %" in line
    peak["trials"][0]["frames_captured"] = 400
    assert "best n=400 frames" in _peak_rate_line(peak) and "too few" not in _peak_rate_line(peak)
