"""The ``python -m perception.export.*`` tools on model files they cannot use (hunt s35 h5, F5/F7/F12):
one line naming the file and the fix, a non-zero exit, never a traceback or a hang.

- ``batch`` on a fixed batch other than 1, and on a batch-1 file ONNX Runtime cannot run or whose
  outputs are not what its graph declares;
- ``batch``, ``quantize``, ``upgrade`` and ``unknown`` on a FIFO (the path check comes before any read);
- ``quantize --gate-only`` with an ``--out`` that does not exist.

The files are built here with onnx.helper in tmp_path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_bench_runtime_failures import HW, write_runtime_fail, write_runtime_half_width
from tiny_models import write_brightness_model

from perception.export import batch


def test_batch_refuses_a_fixed_batch_other_than_1(tmp_path, capsys):
    model = write_brightness_model(tmp_path / "b4.onnx", HW, batch=4)
    assert batch.main([str(model), "--out", str(tmp_path / "out.onnx")]) == 2
    assert capsys.readouterr().out.splitlines() == [
        "export.batch: error: b4.onnx has a fixed batch of 4; this tool converts a file exported with batch 1, so "
        "re-export it from its checkpoint with 'perception export --dynamic-batch'"]
    assert not (tmp_path / "out.onnx").exists()


def test_batch_refuses_a_batch_1_file_that_cannot_run_in_one_line(tmp_path, capsys):
    fail = write_runtime_fail(tmp_path / "fail.onnx", batch=1)
    assert batch.main([str(fail), "--out", str(tmp_path / "out.onnx")]) == 2
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "export.batch: error: fail.onnx: ONNX Runtime cannot run the batch-1 original (Fail: "), captured
    assert "Reshape" in lines[0] and lines[0].endswith("; check the file with perception inspect (the node would refuse "
                                                       "it as well)")
    assert "\x1b" not in captured.err  # ONNX Runtime's own coloured log line is not printed beside it
    half = write_runtime_half_width(tmp_path / "half.onnx", batch=1)
    assert batch.main([str(half), "--out", str(tmp_path / "out.onnx")]) == 2
    assert capsys.readouterr().out.splitlines() == [
        f"export.batch: error: {half}: output 'class_ids' is uint8 (1, 48, 32) when it runs, the node needs uint8 "
        "(1, 48, 64) as its graph declares; re-export the model"]
    assert not (tmp_path / "out.onnx").exists()


def test_batch_still_converts_a_batch_1_file(tmp_path, capsys):
    model = write_brightness_model(tmp_path / "b1.onnx", HW, batch=1)
    assert batch.main([str(model), "--out", str(tmp_path / "dyn.onnx")]) == 0
    assert "100.00 % equal class ids" in capsys.readouterr().out


#: tool -> the start of its error lines
TOOLS = {"batch": "export.batch: error:", "quantize": "export.quantize: error:",
         "upgrade": "python -m perception.export.upgrade: error:", "unknown": "python -m perception.export.unknown: error:"}


def test_every_export_tool_refuses_a_fifo_before_reading_it(tmp_path):
    fifo = tmp_path / "fifo.onnx"
    os.mkfifo(fifo)

    def run(tool: str) -> subprocess.CompletedProcess:
        # A reader that opened the FIFO would wait for a writer forever: the timeout fails the test.
        return subprocess.run([sys.executable, "-m", f"perception.export.{tool}", str(fifo)], capture_output=True,
                              text=True, timeout=120)

    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = dict(zip(TOOLS, pool.map(run, TOOLS), strict=True))
    for tool, proc in procs.items():
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (tool, proc.stderr)
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        assert lines == [f"{TOOLS[tool]} model file {fifo} is not a regular file (a device, pipe or socket); check the "
                         "path or export it with 'perception export'"], tool


def test_quantize_gate_only_says_a_missing_int8_file_does_not_exist(tmp_path, capsys):
    import perception.export.quantize as quantize

    model = write_brightness_model(tmp_path / "m.onnx", HW)
    missing = tmp_path / "nowhere.int8.onnx"
    assert quantize.main([str(model), "--gate-only", "--out", str(missing), "--val-count", "1"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"export.quantize: error: --gate-only: {missing} does not exist; quantise the model first (drop --gate-only), "
        "or name the INT8 file with --out"]
    not_int8 = write_brightness_model(tmp_path / "m2.int8.onnx", HW)
    assert quantize.main([str(model), "--gate-only", "--out", str(not_int8), "--val-count", "1"]) == 2
    assert "is not an INT8 model; quantise it first" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever a tool writes stays in the test's folder
