"""What hunt s35 h5's fixer left (f5's "Left for others"), each as a user meets it:

- ``run --streams 2`` on a model whose first inference fails: the warm-up of the workers gives
  ``warmup``'s one line (exit 2), not a traceback (``Engine.warm_workers``);
- ``run --warmup 0``: the one check run still happens, so a model whose outputs are not what its
  graph declares (or that fails when run) is refused before any frame is published;
- ``eval``'s first-inference line names no ``--engine`` (it has none), run's still does;
- an OpenVINO IR (``.xml``, or its ``.bin``) is named as such by run, inspect and eval, not called
  truncated or corrupt;
- an ``--out`` that is a FIFO or a device is refused in one line before any work (it hung
  ``export.batch``; the others' rename replaced the FIFO).

The models are built here with onnx.helper in tmp_path (``test_bench_runtime_failures``' writers).
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_bench_runtime_failures import (
    HW,
    one_error_line,
    run_cli_table,
    write_runtime_fail,
    write_runtime_half_width,
)
from tiny_models import write_brightness_model

from perception.engines import EngineOptions, load_engine
from perception.engines.base import WARMUP_FIX, WARMUP_FIX_NO_ENGINE, WarmupError
from perception.errors import ConfigError, ModelError

IR_XML = ('<?xml version="1.0"?>\n<net name="onnx_Frontend_IR" version="11">\n\t<layers>\n'
          '\t\t<layer id="0" name="image" type="Parameter" version="opset1"/>\n\t</layers>\n</net>\n')


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("leftovers")
    write_runtime_fail(root / "fail.onnx")
    write_runtime_half_width(root / "half.onnx")
    write_brightness_model(root / "good.onnx", HW)
    (root / "ir.xml").write_text(IR_XML)
    (root / "ir.bin").write_bytes(bytes(range(256)) * 4)  # an IR's weights: raw floats, no header
    return root


RUN = "-q run --source synthetic --width 64 --height 48 --max-frames 2 --endpoint tcp://127.0.0.1:*"
DATA = "--data synthetic:count=1,size=48x64"
#: name -> command line (shell words, {fx} the fixture folder)
CLI = {
    "run fail": f"{RUN} --model {{fx}}/fail.onnx --engine ort",
    "run fail streams": f"{RUN} --model {{fx}}/fail.onnx --engine ort --streams 2",
    "run fail warmup 0": f"{RUN} --model {{fx}}/fail.onnx --engine ort --warmup 0",
    "run half": f"{RUN} --model {{fx}}/half.onnx --engine ort",
    "run half warmup 0": f"{RUN} --model {{fx}}/half.onnx --engine ort --warmup 0",
    "run half openvino streams warmup 0": f"{RUN} --model {{fx}}/half.onnx --engine openvino --streams 2 --warmup 0",
    "eval fail": f"eval --model {{fx}}/fail.onnx {DATA}",
    "run ir": f"{RUN} --model {{fx}}/ir.xml",
    "inspect ir": "inspect {fx}/ir.xml",
    "eval ir bin": f"eval --model {{fx}}/ir.bin {DATA}",
}


@pytest.fixture(scope="module")
def cli(fx) -> dict[str, subprocess.CompletedProcess]:
    return run_cli_table(CLI, fx, PERCEPTION_OPENVINO_CACHE=str(fx / "ov-cache"))


# ------------------------------------------------------------------ --streams 2 and --warmup 0


def test_a_model_that_fails_on_its_workers_gets_warmups_line_not_a_traceback(cli, fx):
    run_line = one_error_line(cli["run fail"])
    assert run_line.startswith(f"{fx}/fail.onnx: the first inference on ort failed (Fail: ") and "Reshape" in run_line
    assert one_error_line(cli["run fail streams"]) == run_line


@pytest.mark.parametrize("kind", ["ort", "openvino"])
def test_warm_workers_wraps_each_backends_error_as_warmup_does(fx, kind, tmp_path, monkeypatch):
    if kind == "openvino":
        pytest.importorskip("openvino")
        monkeypatch.setenv("PERCEPTION_OPENVINO_CACHE", str(tmp_path / "ov-cache"))
    engine = load_engine(kind, fx / "fail.onnx", EngineOptions(provider="cpu", threads=2, streams=2))
    try:
        with pytest.raises(WarmupError) as one:
            engine.warmup(1)
        with pytest.raises(WarmupError) as workers:
            engine.warm_workers([engine.worker(), engine.worker()], 1)
        assert str(workers.value) == str(one.value)
        assert str(one.value).startswith(f"{fx / 'fail.onnx'}: the first inference on {kind} failed (")
        assert str(one.value).endswith(f"; {WARMUP_FIX}")
    finally:
        engine.close()


def test_warmup_0_still_checks_the_model_before_a_frame_is_published(cli):
    # the same line as with the default warm-up: nothing was published before it
    assert one_error_line(cli["run half warmup 0"]) == one_error_line(cli["run half"])
    assert "output 'class_ids' is uint8 (1, 48, 32) when it runs" in one_error_line(cli["run half"])
    assert one_error_line(cli["run fail warmup 0"]) == one_error_line(cli["run fail"])
    line = one_error_line(cli["run half openvino streams warmup 0"])  # each worker checked, also at 0
    assert "output 'class_ids' is uint8 (1, 48, 32) when it runs" in line


def test_warmup_0_makes_one_checked_run_on_the_engine_and_on_each_worker(fx):
    engine = load_engine("ort", fx / "good.onnx", EngineOptions(provider="cpu", threads=2, streams=2))
    calls = []

    class Counted:  # a worker (ORT's is the engine itself), counting its runs
        def __init__(self, name, infer) -> None:
            self.name, self.run = name, infer

        def infer(self, batch):
            calls.append(self.name)
            return self.run(batch)

    try:
        engine.warm_workers([Counted(0, engine.worker().infer), Counted(1, engine.worker().infer)], 0)
        assert sorted(calls) == [0, 1]
        calls.clear()
        engine.infer = Counted("engine", engine.infer).infer
        engine.warmup(0)
        assert calls == ["engine"]
        calls.clear()
        engine.warmup(3)
        assert calls == ["engine"] * 3  # a warm-up of n runs is n runs, the check among them
    finally:
        engine.close()
    half = load_engine("ort", fx / "half.onnx", EngineOptions(provider="cpu", threads=1))
    try:
        with pytest.raises(ModelError, match=r"output 'class_ids' is uint8 \(1, 48, 32\) when it runs"):
            half.warmup(0)
    finally:
        half.close()


# ------------------------------------------------------------------ eval's hint


def test_evals_first_inference_line_names_no_engine_flag(cli, fx):
    run_line = one_error_line(cli["run fail"])
    eval_line = one_error_line(cli["eval fail"])
    assert run_line.endswith("; check the file with perception inspect, or try another --engine")
    assert eval_line == run_line.removesuffix(WARMUP_FIX) + WARMUP_FIX_NO_ENGINE
    assert "--engine" not in eval_line


def test_eval_in_process_gives_the_hint_without_engine(fx):
    from perception.datasets import open_dataset
    from perception.training.evaluate import evaluate_engine

    engine = load_engine("ort", fx / "fail.onnx", EngineOptions(provider="cpu", threads=1))
    try:
        with pytest.raises(WarmupError) as caught:
            evaluate_engine(engine, open_dataset("synthetic:count=1,size=48x64", split="val"))
    finally:
        engine.close()
    assert str(caught.value).endswith("(Fail: " + caught.value.reason + "); check the file with perception inspect")


# ------------------------------------------------------------------ an OpenVINO IR


def test_run_inspect_and_eval_name_an_openvino_ir_and_say_what_to_pass(cli, fx):
    for name, path in (("run ir", f"{fx}/ir.xml"), ("inspect ir", f"{fx}/ir.xml"), ("eval ir bin", f"{fx}/ir.bin")):
        line = one_error_line(cli[name])
        assert line == (f"{path} is an OpenVINO IR file, which perception does not read; pass the .onnx it was "
                        "converted from, or export one with 'perception export' (perception run --engine openvino "
                        "runs an .onnx on OpenVINO)"), name
        assert "corrupt" not in line


def test_an_ir_is_recognised_by_its_content_and_a_bin_by_its_xml(fx, tmp_path):
    from perception.modelfile import describe_model, read_model_metadata
    from perception.modelfile_kind import openvino_ir_line

    # no XML declaration, a byte order mark and blanks first, another suffix: still an IR
    bare = tmp_path / "exported.model"
    bare.write_bytes(b"\xef\xbb\xbf\n  <net name='m' version='11'></net>")
    for read in (read_model_metadata, describe_model):
        with pytest.raises(ModelError) as caught:
            read(bare)
        assert str(caught.value) == openvino_ir_line(bare)
    # raw bytes with no IR beside them are what they were: not a readable ONNX file
    (tmp_path / "weights.bin").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ModelError, match=r"weights.bin is not a readable ONNX file \(DecodeError\); it may be "
                                         "truncated or corrupt"):
        read_model_metadata(tmp_path / "weights.bin")


# ------------------------------------------------------------------ an --out that is not a regular file


#: tool -> (its arguments before --out, the start of its error line)
TOOLS = {
    "batch": (["b1.onnx"], "export.batch: error: --out {out} is not a regular file"),
    "unknown": (["dyn.onnx", "--threshold", "0.5"], "python -m perception.export.unknown: error: cannot write {out}: it "
                                                    "is not a regular file"),
    "upgrade": (["dyn.onnx"], "python -m perception.export.upgrade: error: --out {out} is not a regular file"),
    "quantize": (["dyn.onnx", "--calib", "synthetic:count=1,size=48x64", "--val-count", "1"],
                 "export.quantize: error: --out {out} is not a regular file"),
}


def test_every_export_tool_refuses_a_fifo_out_before_any_work(tmp_path):
    write_brightness_model(tmp_path / "b1.onnx", HW, batch=1)
    write_brightness_model(tmp_path / "dyn.onnx", HW)
    fifo = tmp_path / "out.onnx"
    os.mkfifo(fifo)

    def run(tool: str) -> subprocess.CompletedProcess:
        # A tool that opened the FIFO to write would wait for a reader forever: the timeout fails the test.
        args, _ = TOOLS[tool]
        return subprocess.run([sys.executable, "-m", f"perception.export.{tool}", *args, "--out", str(fifo)],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)

    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = dict(zip(TOOLS, pool.map(run, TOOLS), strict=True))
    for tool, proc in procs.items():
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (tool, proc.stderr)
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(TOOLS[tool][1].format(out=fifo)), (tool, lines)
        assert "(a device, pipe or socket)" in lines[0] and "--out" in lines[0], tool
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # left as it was, not replaced by a file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b1.onnx", "dyn.onnx", "out.onnx"]  # nothing else written


def test_the_shared_writer_checks_refuse_a_fifo_and_a_device_whatever_overwrite_says(tmp_path):
    from perception.export import check_out
    from perception.modelfile import check_writable
    from perception.overwrite import refuse_existing_file

    fifo = tmp_path / "sheet.png"
    os.mkfifo(fifo)
    link = tmp_path / "link.json"
    link.symlink_to(fifo)
    for path in (fifo, link, Path("/dev/null")):
        for overwrite in (False, True):
            with pytest.raises(ConfigError, match=rf"^--json {path} is not a regular file \(a device, pipe or "
                                                  r"socket\), which no output is written to; choose another --json$"):
                refuse_existing_file(path, flag="--json", overwrite=overwrite, example="eval.json")
        with pytest.raises(ConfigError, match=rf"^cannot write {path}: it is not a regular file"):
            check_writable(path)
        with pytest.raises(ConfigError, match=rf"^--out {path} is not a regular file"):
            check_out(path)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    # a regular file, a missing one and a folder keep their own answers
    regular = tmp_path / "eval.json"
    regular.write_text("{}")
    refuse_existing_file(regular, flag="--json", overwrite=True, example="eval.json")
    refuse_existing_file(tmp_path / "new.json", flag="--json", overwrite=False, example="eval.json")
    check_writable(regular)
    with pytest.raises(ConfigError, match="already exists"):
        refuse_existing_file(regular, flag="--json", overwrite=False, example="eval.json")
    with pytest.raises(ConfigError, match="is a folder"):
        refuse_existing_file(tmp_path, flag="--json", overwrite=True, example="eval.json")


def test_eval_refuses_a_fifo_json_before_a_model_loads(tmp_path, fx):
    fifo = tmp_path / "eval.json"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "perception", "eval", "--model", str(fx / "good.onnx"),
                           *shlex.split(DATA), "--json", str(fifo), "--overwrite"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert one_error_line(proc) == (f"--json {fifo} is not a regular file (a device, pipe or socket), which no output "
                                    "is written to; choose another --json")
