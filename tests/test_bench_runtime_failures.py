"""Models that pass every static check but fail when they run (hunt s35 h5, F1/F2/F8/F9/F12), in
``bench``, ``--engine auto``'s probe and ``eval``: each is refused as ``perception run`` refuses it,
in one line with run's words and a non-zero exit, never a traceback, and never measured or scored.

- ``fail.onnx``: a Reshape to a shape its input cannot take (the backend raises at the first run);
- ``half.onnx``: declares ``class_ids`` N x H x W but computes N x H x W/2 (run's output check).

Also: bench's model path check is every reader's (a FIFO, a link loop), the same file twice, an
OpenVINO IR, ``--threads`` above the cores, a backend error after the warm-up check, the agreement
reference that cannot run a file, and ``bench report`` on a JSON with the right schema tag but
damaged contents. The files are built here with onnx.helper in tmp_path.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tiny_models import tiny_metadata, write_brightness_model

from perception import contracts
from perception.bench.cases import Case
from perception.bench.engine import EngineBenchConfig, run_engine_bench
from perception.bench.results import RESULTS_SCHEMA, load_results
from perception.bench.timing import time_block
from perception.engines import EngineOptions, load_engine
from perception.errors import ConfigError, ModelError

HW = (48, 64)


def write_graph(path: Path, nodes, initializers, *, batch: int | str = "N", opset: int = 17) -> Path:
    """A graph from ``image`` (uint8 N x H x W x 3) to ``class_ids`` declared uint8 N x H x W, with
    the tiny models' metadata: every static check passes, whatever the nodes compute."""
    h, w = HW
    graph = helper.make_graph(
        nodes, "hostile",
        [helper.make_tensor_value_info(contracts.INPUT_NAME, TensorProto.UINT8, [batch, h, w, 3])],
        [helper.make_tensor_value_info(contracts.OUTPUT_CLASS_IDS, TensorProto.UINT8, [batch, h, w])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    helper.set_model_props(model, {contracts.METADATA_KEY: tiny_metadata(HW, dynamic_batch=batch == "N").to_json()})
    onnx.save(model, str(path))
    return path


def write_runtime_fail(path: Path, *, batch: int | str = "N") -> Path:
    """Reshape of the 48 x 64 x 3 input to 1 x 7 x 7 x 3: ONNX Runtime fails on the first run."""
    return write_graph(path, [
        helper.make_node("Cast", [contracts.INPUT_NAME], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["pixels", "shape"], ["reshaped"]),
        helper.make_node("ArgMax", ["reshaped"], ["ids"], axis=3, keepdims=0),
        helper.make_node("Cast", ["ids"], [contracts.OUTPUT_CLASS_IDS], to=TensorProto.UINT8),
    ], [numpy_helper.from_array(np.array([1, 7, 7, 3], np.int64), "shape")], batch=batch)


def write_runtime_half_width(path: Path, *, batch: int | str = "N") -> Path:
    """Declares N x 48 x 64 class ids, computes N x 48 x 32 (a Slice of the width)."""
    return write_graph(path, [
        helper.make_node("Cast", [contracts.INPUT_NAME], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("ArgMax", ["pixels"], ["ids"], axis=3, keepdims=0),
        helper.make_node("Slice", ["ids", "starts", "ends", "axes"], ["half"]),
        helper.make_node("Cast", ["half"], [contracts.OUTPUT_CLASS_IDS], to=TensorProto.UINT8),
    ], [numpy_helper.from_array(np.array([0], np.int64), "starts"),
        numpy_helper.from_array(np.array([HW[1] // 2], np.int64), "ends"),
        numpy_helper.from_array(np.array([2], np.int64), "axes")], batch=batch)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The one stderr line of a refused command (exit 2, no traceback)."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if " I " not in ln[:12] and " W " not in ln[:12]]
    assert len(lines) == 1 and lines[0].startswith("perception: error: "), proc.stderr
    return lines[0].removeprefix("perception: error: ")


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runtime_failures")
    write_runtime_fail(root / "fail.onnx")
    write_runtime_half_width(root / "half.onnx")
    write_brightness_model(root / "good.onnx", HW)
    os.mkfifo(root / "fifo.onnx")
    (root / "loop_a.onnx").symlink_to(root / "loop_b.onnx")
    (root / "loop_b.onnx").symlink_to(root / "loop_a.onnx")
    (root / "cache").mkdir()
    return root


BENCH = "bench engine --runs 2 --blocks 1 --warmup 0 --no-progress --out {fx}/out --overwrite"
DATA = "--data synthetic:count=1,size=48x64"
RUN = "run --source synthetic --width 64 --height 48 --max-frames 2 --endpoint tcp://127.0.0.1:*"
#: name -> command line (shell words, {fx} the fixture folder)
CLI = {
    "run fail": f"-q {RUN} --model {{fx}}/fail.onnx --engine ort",
    "run half": f"-q {RUN} --model {{fx}}/half.onnx --engine ort",
    "bench fail": f"{BENCH} --model {{fx}}/fail.onnx",
    "bench half": f"{BENCH} --model {{fx}}/half.onnx",
    "bench auto half": f"{BENCH} --model {{fx}}/half.onnx --engine auto --threads 1",
    "eval fail": f"eval --model {{fx}}/fail.onnx {DATA}",
    "eval half": f"eval --model {{fx}}/half.onnx {DATA}",
    "eval tasks half": f"eval --model {{fx}}/half.onnx {DATA} --tasks drivable",
    "bench fifo": f"{BENCH} --model {{fx}}/fifo.onnx",
    "bench loop": f"{BENCH} --model {{fx}}/loop_a.onnx",
}


def run_cli_table(table: dict[str, str], fx: Path, **env: str) -> dict[str, subprocess.CompletedProcess]:
    """Each command line of ``table`` (shell words, ``{fx}`` the fixture folder) as ``perception``,
    two at a time, in ``fx`` with ``env`` added: name -> its finished process."""
    environ = {**os.environ, **env}

    def run(words: str) -> subprocess.CompletedProcess:
        args = [a.format(fx=fx) for a in shlex.split(words)]
        return subprocess.run([sys.executable, "-m", "perception", *args], capture_output=True, text=True,
                              timeout=300, cwd=fx, env=environ)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(table, pool.map(run, table.values()), strict=True))


@pytest.fixture(scope="module")
def cli(fx) -> dict[str, subprocess.CompletedProcess]:
    return run_cli_table(CLI, fx, PERCEPTION_PROBE_CACHE=str(fx / "cache"))


def test_a_model_whose_first_inference_fails_is_refused_by_bench_and_eval_as_by_run(cli, fx):
    run_line = one_error_line(cli["run fail"])
    assert run_line.startswith(f"{fx}/fail.onnx: the first inference on ort failed (Fail: ") and "Reshape" in run_line
    # bench and eval give run's line, word for word (the path as each was given it), but for eval's
    # fix, which names no --engine (eval has none)
    assert one_error_line(cli["bench fail"]) == run_line
    assert one_error_line(cli["eval fail"]) == run_line.removesuffix(", or try another --engine")
    assert not (fx / "out" / "perception.bench.json").exists()  # nothing measured, nothing written


def test_a_model_whose_outputs_are_not_what_its_graph_declares_is_never_measured_or_scored(cli, fx):
    run_line = one_error_line(cli["run half"])
    assert "output 'class_ids' is uint8 (1, 48, 32) when it runs, the node needs uint8 (1, 48, 64)" in run_line
    for name in ("bench half", "bench auto half", "eval half", "eval tasks half"):
        assert one_error_line(cli[name]) == run_line, name
    assert "mIoU" not in cli["eval half"].stdout and "IoU" not in cli["eval tasks half"].stdout
    # --engine auto's probe refused it too: no verdict is cached for a model the node will not run
    assert not list((fx / "cache").glob("*.json"))


def test_bench_checks_a_model_path_as_every_reader_does(cli, fx):
    assert one_error_line(cli["bench fifo"]) == (f"model file {fx}/fifo.onnx is not a regular file (a device, pipe or "
                                                 "socket); check the path or export it with 'perception export'")
    line = one_error_line(cli["bench loop"])
    assert line.startswith(f"model file {fx}/loop_a.onnx cannot be reached (") and "not found" not in line


def test_the_probe_refuses_a_reference_that_fails_and_caches_nothing(fx, tmp_path):
    from perception.engines.auto import select_engine

    for model, words in ((fx / "fail.onnx", "the first inference on ort failed"),
                         (fx / "half.onnx", "output 'class_ids' is uint8 (1, 48, 32) when it runs")):
        with pytest.raises(ModelError, match=re.escape(words)):
            select_engine(model, EngineOptions(provider="cpu", threads=1), cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_probe_candidate_that_fails_its_first_inference_is_unavailable_not_a_traceback(fx, monkeypatch):
    """A candidate (here ort-int8, standing for an INT8 sibling ORT cannot run) whose first inference
    fails is listed with the backend's words; the reference still wins."""
    from perception.engines import probe
    from perception.engines.probe import run_probe
    from perception.engines.probe_verdict import Candidate

    real = probe.load_candidate

    def load(candidate, model_path, options):
        if candidate.precision == "int8":
            return real(Candidate("ort", "fp32"), fx / "fail.onnx", options)
        return real(candidate, model_path, options)

    monkeypatch.setattr(probe, "load_candidate", load)
    monkeypatch.setattr(probe, "choose_streams", lambda *a, **k: (1, {}))
    frames = [np.zeros((1, *HW, 3), np.uint8)]
    selection = run_probe(fx / "good.onnx", EngineOptions(provider="cpu", threads=1),
                          [Candidate("ort", "fp32"), Candidate("ort", "int8")], frames, runs=1)
    assert (selection.engine, selection.precision) == ("ort", "fp32")
    failed = next(r for r in selection.results if r.precision == "int8")
    assert not failed.eligible and failed.error.startswith("its first inference failed (Fail: ") and "Reshape" in failed.error


def test_eval_in_process_refuses_before_the_first_sample(fx):
    from perception.datasets import open_dataset
    from perception.training.evaluate import evaluate_engine, evaluate_tasks, resolve_task_groups

    dataset = open_dataset("synthetic:count=1,size=48x64", split="val")
    engine = load_engine("ort", fx / "half.onnx", EngineOptions(provider="cpu"))
    try:
        with pytest.raises(ModelError, match=r"output 'class_ids' is uint8 \(1, 48, 32\) when it runs"):
            evaluate_engine(engine, dataset)
        scores = resolve_task_groups(engine.metadata.class_table, dataset.class_table, tasks=["drivable"])
        with pytest.raises(ModelError, match="when it runs"):
            evaluate_tasks(engine, dataset, scores)
        assert scores[0].true_positive == scores[0].false_positive == scores[0].false_negative == 0
    finally:
        engine.close()


def test_the_same_model_twice_an_openvino_ir_and_a_bad_grid_are_one_line(fx, tmp_path):
    good = fx / "good.onnx"
    with pytest.raises(ConfigError, match=r"^--model .*good.onnx is given twice; give each model file once"):
        run_engine_bench(EngineBenchConfig(models=[good, good], progress=False))
    with pytest.raises(ConfigError, match=r"names the same file as --model .*good.onnx; give each model file once"):
        run_engine_bench(EngineBenchConfig(models=[good, fx / ".." / fx.name / "good.onnx"], progress=False))
    ir = tmp_path / "model.xml"
    ir.write_text('<?xml version="1.0"?><net name="m" version="11"></net>')
    with pytest.raises(ConfigError, match=r"model.xml is an OpenVINO IR file, which perception does not read; pass the "
                                          r"\.onnx it was converted from"):
        run_engine_bench(EngineBenchConfig(models=[ir], engines=["openvino"], progress=False))
    with pytest.raises(ConfigError, match=r"pass --engine torch for \.pt checkpoints, ort, openvino, auto or tensorrt "
                                          r"for \.onnx"):
        run_engine_bench(EngineBenchConfig(models=[good], engines=["torch"], progress=False))


def test_threads_above_the_cores_are_measured_with_one_warning(fx, caplog):
    cores = len(os.sched_getaffinity(0))
    cfg = EngineBenchConfig(models=[fx / "good.onnx"], threads=[cores + 1, cores + 7], runs=2, blocks=1, warmup=0,
                            progress=False)
    with caplog.at_level(logging.WARNING, logger="perception.bench.engine"):
        results = run_engine_bench(cfg)["results"]
    warnings = [r.getMessage() for r in caplog.records if "--threads" in r.getMessage()]
    assert warnings == [f"--threads {cores + 1},{cores + 7}: more than the {cores} CPU cores this process may use; "
                        f"those rows time threads taking turns on the cores (slower than --threads {cores})"]
    assert [r["timed_runs"] for r in results] == [2, 2]


def test_a_backend_error_after_the_warm_up_check_is_one_line_naming_the_configuration(fx, monkeypatch):
    import perception.bench.engine as bench_engine

    def fails(case, runs, seconds, tick):
        raise RuntimeError("out of memory at batch 4\nsecond line")

    monkeypatch.setattr(bench_engine, "time_block", fails)
    with pytest.raises(ModelError, match=r"good.onnx: good ort CPUExecutionProvider b1 failed in timed block 1 "
                                         r"\(RuntimeError: out of memory at batch 4 second line\); check the file"):
        run_engine_bench(EngineBenchConfig(models=[fx / "good.onnx"], runs=2, blocks=1, warmup=0, progress=False))


def test_a_worker_that_fails_with_calls_in_flight_stops_the_block_and_raises_here():
    class Failing:
        def infer(self, batch):
            raise RuntimeError("worker failed")

    case = Case(model=Path("m.onnx"), engine_name="openvino", provider=None, threads=2, batch=1, streams=2,
                workers=[Failing(), Failing()], batches=[np.zeros((1, *HW, 3), np.uint8)])
    with pytest.raises(RuntimeError, match="worker failed"):
        time_block(case, 10, None, lambda n: None)
    assert case.samples_ns == []


def test_a_file_the_agreement_reference_cannot_run_is_timed_with_the_reason(fx, monkeypatch, caplog):
    """OpenVINO runs a file ONNX Runtime refuses (a newer opset): the reference's failure is said in
    one warning and on the row, and the engine is measured all the same."""
    import perception.bench.cases as cases

    real = cases.open_engine

    def reference_refuses(model, engine, provider=None, threads=None, *args, **kwargs):
        if engine == "ort" and provider == "cpu" and not args and not kwargs:  # the agreement's reference
            raise ModelError(f"ONNX Runtime cannot load {model.name}: its opset ai.onnx 99 is newer than it supports")
        return real(model, engine, provider, threads, *args, **kwargs)

    monkeypatch.setattr(cases, "open_engine", reference_refuses)
    with caplog.at_level(logging.WARNING, logger="perception.bench.engine"):
        block = run_engine_bench(EngineBenchConfig(models=[fx / "good.onnx"], runs=2, blocks=1, warmup=0, progress=False))
    row = block["results"][0]
    assert row["timed_runs"] == 2 and row["agreement"] is None and row["agreement_reference"] is None
    assert row["agreement_skipped"].startswith("ONNX Runtime, the reference of the agreement, cannot run good.onnx")
    assert any("no class-id agreement for" in r.getMessage() for r in caplog.records)
    from perception.bench.report import render_markdown

    assert "- #1 good ort CPUExecutionProvider b1: no agreement, ONNX Runtime" in render_markdown(
        {"kind": "engine", "engine": block})


@pytest.mark.parametrize(("damage", "where"), [
    (lambda r: r.update(samples_ms=["x", None]), 'engine.results[0].samples_ms[0] is "x", expected a number'),
    (lambda r: r.update(latency_ms=None), "engine.results[0].latency_ms is null, expected an object"),
    (lambda r: r.pop("input_hw"), "engine.results[0].input_hw is missing"),
    (lambda r: r.update(throughput_ips="fast"), 'engine.results[0].throughput_ips is "fast", expected a number'),
])
def test_bench_report_refuses_a_damaged_json_naming_the_file_and_the_key(damage, where, tmp_path, fx):
    path = tmp_path / "perception.bench.json"
    row = {"label": "m ort b1", "skipped": None, "model_name": "m", "engine": "ort", "provider": "cpu",
           "precision": "fp32", "agreement": 1.0, "input_hw": [48, 64], "batch": 1,
           "latency_ms": {"count": 2, "mean": 1.0, "p50": 1.0, "p90": 1.0, "p99": 1.0, "max": 1.0}, "fps": 1000.0,
           "throughput_ips": 1000.0, "model_file_mb": 0.001, "samples_ms": [1.0, 1.0]}
    damage(row)
    path.write_text(json.dumps({"schema": RESULTS_SCHEMA, "kind": "engine", "engine": {"results": [row]}}))
    with pytest.raises(ConfigError, match="^" + re.escape(f"{path}: {where}, so no report")):
        load_results(path)
    proc = subprocess.run([sys.executable, "-m", "perception", "bench", "report", str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"perception: error: {path}: {where}, so no report can be made from it; "
                                                "pass the perception.bench.json that bench wrote, as it wrote it (or "
                                                "run the bench again)"]


def test_a_file_quantised_elsewhere_is_benched_as_int8_whatever_its_metadata_says(tmp_path):
    """ONNX Runtime's quantize_static copies the FP32 file's metadata (precision fp32): bench reads the
    file's precision from its graph (QuantizeLinear / DequantizeLinear), labels the row int8, names
    its reference ort-int8, and skips --precision fp32 on it with the reason."""
    model = write_graph(tmp_path / "qdq.onnx", [
        helper.make_node("Cast", [contracts.INPUT_NAME], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("QuantizeLinear", ["pixels", "q_scale", "q_zero"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "q_scale", "q_zero"], ["dq"]),
        helper.make_node("ArgMax", ["dq"], ["ids"], axis=3, keepdims=0),
        helper.make_node("Cast", ["ids"], [contracts.OUTPUT_CLASS_IDS], to=TensorProto.UINT8),
    ], [numpy_helper.from_array(np.array(1.0, np.float32), "q_scale"),
        numpy_helper.from_array(np.array(0, np.uint8), "q_zero")])
    assert json.loads(onnx.load(str(model)).metadata_props[0].value)["precision"] == "fp32"
    block = run_engine_bench(EngineBenchConfig(models=[model], precisions=["auto", "fp32"], runs=2, blocks=1, warmup=0,
                                               progress=False))
    auto, fp32 = block["results"]
    assert auto["precision"] == "int8" and auto["agreement_reference"] == "ort-int8" and auto["agreement"] == 1.0
    assert fp32["skipped"].startswith("--precision fp32: qdq.onnx is an INT8 file")
