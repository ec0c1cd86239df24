"""The node's one check runs at the batch it will run (several cameras, ``bench engine --batch N``):
a model that runs one frame but fails at batch N, or returns one row whatever the batch, ends in
one line with exit 2, not a traceback or skipped frames (verifier s35 N1, N2); and the small bench
and run leftovers (N7, N10, N12)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from perception.errors import ModelError

HW = (64, 96)


def _save(path, nodes, inits):
    from tiny_models import write_brightness_model

    # the shipped helper writes the metadata; the graph is replaced by the hostile one
    write_brightness_model(path, HW)
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    meta = json.loads(props["perception.metadata"])
    meta["dynamic_batch"] = True
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("image", T.UINT8, ["batch", *HW, 3])],
                     [h.make_tensor_value_info("class_ids", T.UINT8, ["batch", *HW])], initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 18)])
    m.ir_version = 9
    h.set_model_props(m, {**props, "perception.metadata": json.dumps(meta)})
    onnx.save(m, str(path))
    return path


def fails_at_batch_2(path):
    """Runs at batch 1; a Reshape to a batch of 1 fails at batch 2."""
    return _save(path, [
        h.make_node("Cast", ["image"], ["f"], to=T.FLOAT),
        h.make_node("Reshape", ["f", "shp"], ["r"]),
        h.make_node("ArgMax", ["r"], ["am"], axis=3, keepdims=0),
        h.make_node("Cast", ["am"], ["class_ids"], to=T.UINT8)],
        [nh.from_array(np.array([1, *HW, 3], np.int64), "shp")])


def one_row(path):
    """Returns one row whatever the batch."""
    return _save(path, [
        h.make_node("Cast", ["image"], ["f"], to=T.FLOAT),
        h.make_node("ArgMax", ["f"], ["am"], axis=3, keepdims=0),
        h.make_node("Slice", ["am", "st", "en", "ax"], ["sl"]),
        h.make_node("Cast", ["sl"], ["class_ids"], to=T.UINT8)],
        [nh.from_array(np.array([v], np.int64), n) for v, n in ((0, "st"), (1, "en"), (0, "ax"))])


@pytest.fixture
def cli_run(tmp_path):
    """``perception ARGS`` in a child process (its exit status and one-line error are the behaviour)."""

    def run(*args):
        return subprocess.run([sys.executable, "-m", "perception", *args], capture_output=True, text=True,
                              cwd=tmp_path, timeout=300, check=False)

    return run


@pytest.fixture
def ort_engine():
    from perception.engines import EngineOptions, load_engine

    opened = []

    def load(path):
        engine = load_engine("ort", path, EngineOptions(provider="cpu", threads=1))
        opened.append(engine)
        return engine

    yield load
    for engine in opened:
        engine.close()


@pytest.mark.parametrize("warmup", [0, 2])
def test_two_cameras_check_the_model_at_batch_2_before_any_frame(tmp_path, ort_engine, warmup):
    from perception.batching import FrameBatcher
    from perception.engines.base import WarmupError

    engine = ort_engine(fails_at_batch_2(tmp_path / "b2_fail.onnx"))
    engine.warmup(warmup)  # one camera: fine
    with pytest.raises(WarmupError, match=r"b2_fail\.onnx: the first inference on ort at batch 2 failed \(Fail: .*Reshape"):
        FrameBatcher(engine, ["a", "b"], timeout_ms=5).warmup(warmup)


def test_one_row_at_batch_2_is_refused_naming_the_shape(tmp_path, ort_engine):
    from perception.batching import FrameBatcher

    engine = ort_engine(one_row(tmp_path / "b2_shape.onnx"))
    engine.warmup(0)
    with pytest.raises(ModelError, match=r"output 'class_ids' is uint8 \(1, 64, 96\) when it runs at batch 2, "
                                         r"the node needs uint8 \(2, 64, 96\)"):
        FrameBatcher(engine, ["a", "b"], timeout_ms=5).warmup(0)


def test_an_empty_output_is_said_as_no_output_not_a_model_to_re_export(tmp_path, ort_engine):
    engine = ort_engine(one_row(tmp_path / "m.onnx"))
    with pytest.raises(ModelError, match=r"returned no output for 'class_ids' .*likely out of memory") as info:
        engine.check_outputs({"class_ids": np.zeros((0, *HW), np.uint8)})
    assert "re-export" not in str(info.value)


def test_cli_two_cameras_one_line_exit_2(tmp_path, cli_run):
    model = fails_at_batch_2(tmp_path / "b2_fail.onnx")
    done = cli_run("run", "--model", str(model), "--source", "a=synthetic", "--source", "b=synthetic",
                   "--width", "96", "--height", "64", "--max-frames", "3", "--warmup", "0")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "the first inference on ort at batch 2 failed" in done.stderr.strip().splitlines()[-1]


def test_bench_engine_checks_at_the_batch_it_times(tmp_path, cli_run):
    model = one_row(tmp_path / "b2_shape.onnx")
    done = cli_run("bench", "engine", "--model", str(model), "--batch", "2", "--runs", "10", "--engine", "ort",
                   "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    assert "is uint8 (1, 64, 96) when it runs at batch 2" in done.stderr.strip().splitlines()[-1]


def test_bench_pipeline_refuses_a_model_given_twice(tmp_path, cli_run):
    done = cli_run("bench", "pipeline", "--model", "a.onnx", "--model", "b.onnx", "--duration", "1",
                   "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "--model: given twice" in done.stderr


def test_run_warns_once_about_threads_above_the_cores(tmp_path, cli_run):
    done = cli_run("run", "--threads", "256", "--source", "synthetic", "--width", "96", "--height", "64",
                   "--max-frames", "1")
    assert done.stderr.count("--threads 256: more than the") == 1, done.stderr


@pytest.mark.parametrize(("key", "value", "said"), [
    ("agreement", -1, "agreement is -1, expected a fraction in 0..1"),
    ("agreement", 1.5, "agreement is 1.5, expected a fraction in 0..1"),
    ("fps", -1, "fps is -1, expected a number not below 0"),
])
def test_bench_report_refuses_out_of_range_figures(tmp_path, key, value, said):
    from perception.bench.results import RESULTS_SCHEMA, load_results
    from perception.errors import ConfigError

    row = {"label": "m", "model_name": "m", "engine": "ort", "provider": "cpu", "precision": "fp32",
           "agreement": 1.0, "input_hw": [64, 96], "batch": 1,
           "latency_ms": {"count": 2, "mean": 1.0, "p50": 1.0, "p90": 1.0, "p99": 1.0, "max": 1.0}, "fps": 1000.0,
           "throughput_ips": 1000.0, "model_file_mb": 0.001, "samples_ms": [1.0, 1.0]}
    row[key] = value
    path = tmp_path / "perception.bench.json"
    path.write_text(json.dumps({"schema": RESULTS_SCHEMA, "kind": "engine", "engine": {"results": [row]}}))
    with pytest.raises(ConfigError, match=rf"^{tmp_path}/perception\.bench\.json: engine\.results\[0\]\.{said}"):
        load_results(path)
