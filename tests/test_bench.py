"""perception bench: percentile arithmetic, the engine bench end to end on a tiny ONNX model, the
Markdown report made from its JSON, the pipeline bench on the synthetic source, and CLI errors."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from perception.bench.engine import EngineBenchConfig, run_engine_bench
from perception.bench.report import render_markdown, summary_text, write_report
from perception.bench.results import load_results, new_results, write_results
from perception.bench.stats import percentile, sequence_gaps, summarize_ms
from perception.contracts import INPUT_NAME, METADATA_KEY, ONNX_OPSET, OUTPUT_CLASS_IDS
from perception.errors import ConfigError, ModelError
from perception.model_metadata import ModelMetadata
from perception.synthetic import SYNTHETIC_CLASSES

INPUT_HW = (48, 64)


def build_tiny_model(path: Path, *, input_hw=INPUT_HW, name: str = "tiny", dynamic_batch: bool = True) -> Path:
    """A 1x1-conv "segmenter" with the contract's I/O: uint8 NHWC BGR in, uint8 class ids out."""
    h, w = input_hw
    n = SYNTHETIC_CLASSES.num_classes
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(n, 3, 1, 1)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.normal(size=(n,)).astype(np.float32), "b")
    scale = numpy_helper.from_array(np.array(1 / 255, np.float32), "scale")
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["x_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x_f", "scale"], ["x_s"]),
        helper.make_node("Transpose", ["x_s"], ["x_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["x_nchw", "w", "b"], ["logits"]),
        helper.make_node("ArgMax", ["logits"], ["ids64"], axis=1, keepdims=0),
        helper.make_node("Cast", ["ids64"], [OUTPUT_CLASS_IDS], to=TensorProto.UINT8),
    ]
    batch = "N" if dynamic_batch else 1
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, [batch, h, w, 3])],
        [helper.make_tensor_value_info(OUTPUT_CLASS_IDS, TensorProto.UINT8, [batch, h, w])],
        initializer=[weight, bias, scale],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = 8  # what every supported onnxruntime reads (newer onnx writes a newer IR)
    meta = ModelMetadata(model_name=name, class_table=SYNTHETIC_CLASSES, input_hw=input_hw,
                         dataset="synthetic", dynamic_batch=dynamic_batch)
    helper.set_model_props(model, {METADATA_KEY: meta.to_json()})
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny.onnx")


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------


def test_percentiles_match_hand_computed_linear_interpolation():
    values = [float(v) for v in range(10, 0, -1)]  # 10..1, unsorted on purpose
    # h = (n - 1) * p / 100 over the sorted samples 1..10, then linear between neighbours
    assert percentile(values, 50) == pytest.approx(5.5)  # h = 4.5 -> 5 + 0.5 * (6 - 5)
    assert percentile(values, 90) == pytest.approx(9.1)  # h = 8.1 -> 9 + 0.1 * (10 - 9)
    assert percentile(values, 99) == pytest.approx(9.91)  # h = 8.91
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 10.0
    s = summarize_ms([4.0, 1.0, 3.0, 2.0])
    assert s == pytest.approx({"count": 4, "mean": 2.5, "std": np.std([1, 2, 3, 4], ddof=1), "min": 1.0,
                               "p50": 2.5, "p90": 3.7, "p99": 3.97, "max": 4.0})
    assert summarize_ms([])["p99"] is None and summarize_ms([])["count"] == 0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_sequence_gaps_count_missing_duplicate_and_reordered():
    g = sequence_gaps([5, 6, 8, 9, 13, 13, 12])
    assert g["received"] == 7 and g["first"] == 5 and g["last"] == 12
    assert g["missing"] == 3  # 7, 10, 11 (range 5..13)
    assert g["gaps"] == 2 and g["max_gap"] == 3  # 9 -> 13 skips 10, 11, 12 at that point
    assert g["duplicates"] == 1 and g["out_of_order"] == 1
    assert sequence_gaps(list(range(100)))["missing"] == 0


# --------------------------------------------------------------------------------------------
# engine mode
# --------------------------------------------------------------------------------------------


def test_engine_bench_json_has_every_field_and_report_renders(tiny_model, tmp_path):
    second = build_tiny_model(tmp_path / "fixed.onnx", name="fixed", dynamic_batch=False)
    cfg = EngineBenchConfig(models=[tiny_model, second], threads=[1], batches=[1, 2], runs=12, warmup=2,
                            blocks=3, progress=False)
    results = new_results("engine", "pytest")
    results["engine"] = run_engine_bench(cfg)
    path = write_results(results, tmp_path / "out")
    doc = load_results(path)

    env = doc["environment"]
    for key in ("cpu_model", "cpu_logical_cores", "os", "python", "libraries", "ort_providers", "gpus",
                "thread_variables"):
        assert key in env
    assert env["libraries"]["onnxruntime"] != "absent" and "CPUExecutionProvider" in env["ort_providers"]
    rows = doc["engine"]["results"]
    assert [r["label"] for r in rows][:2] == ["tiny ort CPUExecutionProvider t1 b1",
                                             "tiny ort CPUExecutionProvider t1 b2"]
    measured = [r for r in rows if not r["skipped"]]
    skipped = [r for r in rows if r["skipped"]]
    assert len(measured) == 3 and len(skipped) == 1  # the fixed-batch model cannot run batch 2
    assert "fixed batch" in skipped[0]["skipped"]
    for r in measured:
        lat = r["latency_ms"]
        assert r["timed_runs"] == lat["count"] == 12 == len(r["samples_ms"])
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert lat["p50"] == pytest.approx(percentile(r["samples_ms"], 50), rel=1e-3)
        assert r["fps"] == pytest.approx(1000 / lat["mean"], rel=1e-2)
        assert r["throughput_ips"] == pytest.approx(r["fps"] * r["batch"])
        assert r["cpu_ms_per_run"] > 0  # measured: the process's CPU time over the timed runs
        assert r["input_hw"] == list(INPUT_HW) and r["precision"] == "fp32"
        assert r["model_file_mb"] > 0 and r["memory"]["rss_peak_mb"] >= r["memory"]["rss_after_load_mb"] > 0
        assert set(r["ratio_to_first"]) == {"fps", "throughput_ips", "p50_ms", "p99_ms"}
    assert measured[0]["ratio_to_first"]["fps"] == pytest.approx(1.0)

    written = write_report(doc, tmp_path / "out")
    md = written["markdown"].read_text()
    # threads 1 (as requested), streams 1, batch 1, 12 runs
    assert "| 1 | tiny | ort | CPUExecutionProvider | fp32 | 100.00 | 48x64 | 1 | 1 | 1 | 12 |" in md
    assert "skipped, model fixed.onnx has a fixed batch" in md
    assert "## Environment" in md and env["cpu_model"] in md and "CPU vector ISA" in md
    for name in ("engine_cdf", "engine_fps"):
        assert written[name].stat().st_size > 1000 and written[name].read_bytes()[:4] == b"\x89PNG"
    assert render_markdown(doc) == render_markdown(json.loads(json.dumps(doc)))
    # `perception bench report` takes the JSON the run wrote, by its name or by its folder.
    from perception.cli import main as cli_main

    written["markdown"].unlink()
    assert path.name == "perception.bench.json" and cli_main(["bench", "report", str(path.parent)]) == 0
    assert written["markdown"].is_file()
    assert cli_main(["bench", "report", str(path), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "perception.bench.md").read_text() == md


def test_engine_bench_duration_mode(tiny_model):
    cfg = EngineBenchConfig(models=[tiny_model], runs=1, blocks=2, warmup=1, duration_s=0.2, progress=False)
    row = run_engine_bench(cfg)["results"][0]
    assert row["timed_runs"] >= 2 and row["timed_s"] <= 0.3


def test_a_batch_that_does_not_fit_in_memory_is_refused_naming_one_that_does(tiny_model, monkeypatch):
    # --batch 1024 is in range, and was OOM-killed minutes in on a 23 GB machine. The tiny model's
    # 64 images need some MB (8 input batches alone are 5.9 MB); pretend 2 MB are free.
    import perception.bench.engine as engine_bench

    prepared = []
    # A fixed per-image figure (the measured one varies with the allocator): 1 MiB an image, 20 MiB free.
    monkeypatch.setattr(engine_bench, "engine_bytes_per_image", lambda *a, **k: 2**20)
    monkeypatch.setattr(engine_bench, "available_memory_bytes", lambda: 20 * 2**20)
    monkeypatch.setattr(engine_bench, "prepare_batches", lambda *a, **k: prepared.append(a))
    cfg = EngineBenchConfig(models=[tiny_model], batches=[1, 64], runs=1, warmup=0, blocks=1, progress=False)
    with pytest.raises(ConfigError, match=r"^--batch 64 needs about .* [MG]iB of memory .*, more than the 85% of the .* [MG]iB available that a bench plans to use; "
                                          r"use --batch (\d+) or less$") as info:
        run_engine_bench(cfg)
    fits = int(re.search(r"use --batch (\d+)", str(info.value)).group(1))
    assert 1 <= fits < 64 and not prepared  # refused before any input batch was made


def test_missing_model_bad_engine_and_bad_results_are_user_errors(tiny_model, tmp_path):
    with pytest.raises(ModelError, match="model file .*nope.onnx not found; check the --model path"):
        run_engine_bench(EngineBenchConfig(models=[tmp_path / "nope.onnx"], progress=False))
    with pytest.raises(ConfigError, match=r"no chosen engine \(torch\) reads tiny.onnx; pass --engine torch"):
        run_engine_bench(EngineBenchConfig(models=[tiny_model], engines=["torch"], progress=False))
    with pytest.raises(ConfigError, match="unknown engine 'onnx'"):
        run_engine_bench(EngineBenchConfig(models=[tiny_model], engines=["onnx"], progress=False))
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ConfigError, match="is not a bench result"):
        load_results(tmp_path / "x.json")


def test_cli_bad_model_path_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "perception", "bench", "engine", "--model", str(tmp_path / "nope.onnx"),
         "--out", str(tmp_path / "out" / "b1")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"perception: error: model file {tmp_path / 'nope.onnx'} not found; check the --model path"
    ]
    assert not (tmp_path / "out").exists()  # the folders made for --out went again (hunt 5d: an empty tree was left)


def test_engine_bench_frames_come_from_the_users_footage_or_dataset(tiny_model, tmp_path):
    """--frames: every 10th frame of an image folder (or video), or a dataset's val images,
    letterboxed as the node does, are the timed and agreement inputs; a source that gives nothing
    is a one-line error naming the flag."""
    from perception.bench.report import render_markdown
    from perception.frames import SOURCE_FRAME_STRIDE, bench_frames

    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(25):  # 4:3 frames of one grey level each, into the 48x64 (4:3) input
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((96, 128, 3), 4 * i, np.uint8))
    frames = bench_frames(INPUT_HW, 8, 0, str(folder))
    assert [int(f[24, 32, 0]) for f in frames] == [4 * i for i in range(0, 25, SOURCE_FRAME_STRIDE)]
    assert all(f.shape == (*INPUT_HW, 3) and f.dtype == np.uint8 for f in frames)
    data = bench_frames(INPUT_HW, 8, 0, "synthetic:count=3,size=96x128")  # a dataset: its val images
    assert len(data) == 3 and data[0].shape == (*INPUT_HW, 3)

    cfg = EngineBenchConfig(models=[tiny_model], threads=[1], runs=4, warmup=1, blocks=2, progress=False,
                            frames=str(folder))
    engine = run_engine_bench(cfg)
    assert engine["settings"]["frames"] == str(folder) and engine["results"][0]["agreement"] == 1.0
    assert f"on every {SOURCE_FRAME_STRIDE}th frame of {folder}" in render_markdown({"kind": "engine", "engine": engine})
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    proc = subprocess.run(
        [sys.executable, "-m", "perception", "bench", "engine", "--model", str(tiny_model), "--frames", str(empty),
         "--runs", "2", "--blocks", "1", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and last.startswith(f"perception: error: --frames {empty}: "), proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_with_every_configuration_skipped_fails_saying_why(tmp_path):
    # A fixed-batch model asked for batches 2 and 4 only: nothing can be measured.
    fixed = build_tiny_model(tmp_path / "fixed.onnx", name="fixed", dynamic_batch=False)
    proc = subprocess.run(
        [sys.executable, "-m", "perception", "bench", "engine", "--model", str(fixed), "--batch", "2,4",
         "--runs", "5", "--warmup", "1", "--blocks", "1", "--no-progress", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("perception: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert errors[0].startswith("perception: error: all 2 configurations were skipped, nothing was measured: ")
    assert ("model fixed.onnx has a fixed batch of 1 (export it with --dynamic-batch, or make a dynamic-batch copy: "
            "python -m perception.export.batch fixed.onnx --out fixed.dyn.onnx)") in errors[0]
    assert "b2" in errors[0] and "b4" in errors[0]
    assert not (tmp_path / "out" / "perception.bench.json").exists()


# --------------------------------------------------------------------------------------------
# pipeline mode
# --------------------------------------------------------------------------------------------


def test_pipeline_bench_reports_fps_drops_and_latency(tiny_model, tmp_path):
    from perception.bench.pipeline import PipelineBenchConfig, run_pipeline_bench

    cfg = PipelineBenchConfig(model=tiny_model, source="synthetic", duration_s=2.0, fps=30, width=96, height=64,
                              threads=1, baseline=True, engine_runs=10, progress=False)
    results = run_pipeline_bench(cfg, command="pytest")
    p = results["pipeline"]
    assert p["node_exit_code"] == 0
    assert p["frames_received"] > 5 and p["output_fps"] > 0 and p["input_fps"] >= p["output_fps"] * 0.5
    assert p["model_id"].startswith("tiny-synthetic-48x64")
    seq = p["sequence"]
    assert seq["received"] == p["frames_received"] and seq["missing"] >= 0 and seq["max_gap"] >= 0
    assert isinstance(p["frames_dropped"], int) and p["frames_dropped"] >= 0 and p["lost_after_node"] >= 0
    for stage in ("capture", "preprocess", "infer", "postprocess"):
        assert p["stages_ms"][stage]["count"] == p["frames_received"]
    e2e = p["capture_to_receive_ms"]
    assert e2e["count"] == p["frames_received"]
    # capture -> receive contains the node's own capture -> publish time
    assert e2e["p50"] >= p["stages_ms"]["infer"]["p50"] and e2e["min"] > 0
    assert p["cpu"]["mean_percent"] is not None and p["node_final_stats"]["frames_out"] >= p["frames_received"]
    base = results["baseline"]
    assert base["frames"] > 5 and base["fps"] > 0 and base["latency_ms"]["count"] == base["frames"]
    # As warm as the node when its window opened: its --warmup (run's default 1) and its first frame.
    assert "--warmup 1" in p["node_command"] and base["warmup_runs"] == 2
    ratios = results["ratios"]
    assert ratios["node_over_baseline_fps"] == pytest.approx(p["output_fps"] / base["fps"])
    assert ratios["node_over_engine_fps"] == pytest.approx(p["output_fps"] / ratios["engine_only_fps"])

    written = write_report(results, tmp_path)
    md = written["markdown"].read_text()
    assert "## Pipeline" in md and "capture -> receive (end to end)" in md and "node FPS / baseline FPS" in md
    assert {"pipeline_cdf", "pipeline_stages", "pipeline_fps"} <= set(written)


def test_pipeline_bench_on_a_clip_shorter_than_the_window_reports_what_ran(tiny_model, tmp_path):
    """The node exits 0 when its video ends (no --loop): the window ends there, every frame counts,
    and the report says why the window is short."""
    import cv2

    from perception.bench.pipeline import PipelineBenchConfig, run_pipeline_bench

    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    for i in range(12):
        writer.write(np.full((64, 96, 3), 20 * i, np.uint8))
    writer.release()
    # Paced at 20 FPS (0.6 s): unpaced, a starved CI machine could see the node publish all 12 and exit
    # before the bench read its first mask, which is no window to measure (a NodeFailed saying so).
    cfg = PipelineBenchConfig(model=tiny_model, source=str(clip), duration_s=30.0, threads=1, engine_runs=0,
                              fps=20, progress=False)
    results = run_pipeline_bench(cfg, command="pytest")
    p = results["pipeline"]
    assert p["node_exit_code"] == 0 and p["input_ended_s"] is not None and p["duration_s"] < 30
    # Counted to the clip's last frame (a PUB socket may drop the first before the subscription lands).
    published = p["node_final_stats"]["published"]
    assert 0 < p["frames_received"] <= published and p["sequence"]["last"] == published - 1
    md = write_report(results, tmp_path)["markdown"].read_text()
    assert "input ended" in md and "--loop" in md


def test_pipeline_bench_node_failure_is_one_line(tmp_path):
    from perception.bench.pipeline import NodeFailed, PipelineBenchConfig, run_pipeline_bench

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    cfg = PipelineBenchConfig(model=bad, duration_s=1.0, engine_runs=0, progress=False)
    with pytest.raises(NodeFailed, match=r"the node exited with status 2 before publishing: \S*bad\.onnx ") as caught:
        run_pipeline_bench(cfg)
    # The node's own line, without a second 'perception: error:', and its status as the bench's.
    assert "perception: error:" not in str(caught.value) and caught.value.exit_code == 2


def test_pipeline_bench_passes_on_the_nodes_exit_status_and_says_its_error_once(tiny_model, tmp_path, capsys):
    """Hunt 5d finding 5: a missing camera was 'status 4 ... perception: error: camera ...' and exit 2."""
    from perception.cli import main

    code = main(["bench", "pipeline", "--model", str(tiny_model), "--source", "/dev/video97", "--duration", "1",
                 "--engine-runs", "0", "--no-progress", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 4, err
    assert lines[-1].startswith("perception: error: the node exited with status 4 before publishing: camera "
                                "/dev/video97 not found"), err
    assert err.count("perception: error:") == 1, err


def test_bench_does_not_import_torch_unless_asked():
    code = (
        "import sys; import perception.bench.engine, perception.bench.pipeline, perception.bench.baseline, perception.bench.report, perception.bench.env;"
        "import perception.commands.bench; from perception.bench.env import collect_environment;"
        "env = collect_environment(); assert env['libraries']['numpy'] != 'absent';"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_engine_bench_precision_grid_skips_what_an_engine_lacks_and_reports_agreement(tiny_model, tmp_path):
    pytest.importorskip("openvino")
    from perception.bench.report import render_markdown

    cfg = EngineBenchConfig(models=[tiny_model], engines=["ort", "openvino"], precisions=["fp32", "bf16", "int8"],
                            threads=[1], runs=4, warmup=1, blocks=2, progress=False)
    results = run_engine_bench(cfg)["results"]
    by = {(r["engine"], r["precision_requested"]): r for r in results}
    assert len(results) == 6
    assert "--engine openvino" in by[("ort", "bf16")]["skipped"]
    assert "no tiny.int8.onnx" in by[("ort", "int8")]["skipped"] and by[("openvino", "int8")]["skipped"]
    assert by[("ort", "fp32")]["agreement"] == 1.0 and by[("openvino", "fp32")]["agreement"] == 1.0
    assert by[("openvino", "fp32")]["agreement_reference"] == "ort-fp32"
    assert by[("openvino", "fp32")]["precision"] == "fp32" and by[("openvino", "fp32")]["provider"] == "CPU-fp32"
    md = render_markdown({"kind": "engine", "engine": {"settings": {}, "results": results}})
    assert "agree % vs ORT" in md and "| 100.00 |" in md


def test_peak_rate_bisects_to_the_highest_held_rate(tiny_model, monkeypatch):
    """The search with a node that holds exactly 40 FPS (measure_node replaced by that model)."""
    import perception.bench.peak_rate as bp
    from perception.bench.pipeline import PipelineBenchConfig

    def fake_node(cfg, model, tick=None):
        fps = cfg.fps
        out = min(fps, 40.0)
        captured = round(fps * 10)
        dropped = captured - round(out * 10)
        return {"input_fps": fps, "output_fps": out, "frames_captured": captured, "frames_dropped": dropped,
                "sequence": {"missing": dropped}, "cpu": {"mean_percent": 100.0}}

    monkeypatch.setattr(bp, "measure_node", fake_node)
    peak = bp.find_peak_rate(PipelineBenchConfig(model=tiny_model, peak_rate=True, peak_steps=8), tiny_model)
    assert not peak["trials"][0]["held"] and peak["trials"][0]["fps_requested"] == bp.PEAK_START_FPS
    # Held: at most 1 % of the captured frames lost, so up to 40 / 0.99 = 40.4 FPS requested.
    assert 36.0 <= peak["fps_held"] <= 40.5 and 40.0 < peak["lowest_dropping_fps"] <= 44.5
    assert all(t["fps_requested"] <= 40.5 for t in peak["trials"] if t["held"])
    assert all(t["fps_requested"] > 40.0 for t in peak["trials"] if not t["held"])
    with pytest.raises(ConfigError, match="--peak-rate paces the synthetic camera"):
        bp.find_peak_rate(PipelineBenchConfig(source="drive.mp4", peak_rate=True), tiny_model)


def test_engine_bench_streams_keep_calls_in_flight_and_rate_them_over_wall_time(tiny_model):
    engines = ["ort", "openvino"] if importlib.util.find_spec("openvino") else ["ort"]
    cfg = EngineBenchConfig(models=[tiny_model], engines=engines, threads=[1, 2], streams=[1, 2], runs=12, warmup=2,
                            blocks=3, progress=False)
    rows = run_engine_bench(cfg)["results"]
    by = {(r["engine"], r["threads_requested"], r["streams_requested"]): r for r in rows}
    assert len(rows) == 4 * len(engines)
    for engine in engines:
        assert "fewer than --streams 2" in by[(engine, 1, 2)]["skipped"]
        two = by[(engine, 2, 2)]
        assert two["label"].endswith(" t2 s2 b1") and two["timed_runs"] == 12 == len(two["samples_ms"])
        # Calls overlap: the rate is over the blocks' wall time, never above what the calls' sum allows twice over.
        assert two["fps"] == pytest.approx(two["timed_runs"] / two["timed_s"], rel=2e-2)  # timed_s is rounded
        assert two["fps"] <= 2 * 1000 / two["latency_ms"]["min"]
        assert two["agreement"] == 1.0
        one = by[(engine, 2, 1)]
        assert one["fps"] == pytest.approx(1000 / one["latency_ms"]["mean"], rel=1e-2)
    # Hunt 5b finding 6: the report's rows of --threads 1,2 (and --streams 1,2) differed only in
    # their figures; they have threads and streams columns now.
    md = render_markdown({"kind": "engine", "engine": {"settings": {}, "results": rows}})
    header = next(line for line in md.splitlines() if line.startswith("| # |")).split(" | ")
    cells = {line.split(" | ")[0]: line.split(" | ") for line in md.splitlines() if re.match(r"\| \d+ \|", line)}
    threads, streams = header.index("threads"), header.index("streams")
    measured = {f"| {i}": r for i, r in enumerate(rows, start=1) if not r["skipped"]}
    assert set(cells) == set(measured)
    for key, r in measured.items():
        assert (cells[key][threads], cells[key][streams]) == (str(r["threads_requested"]), str(r["streams_requested"]))


def test_pipeline_bench_passes_streams_to_the_node_and_the_engine_only_run(tiny_model):
    from perception.bench.pipeline import PipelineBenchConfig, run_pipeline_bench

    cfg = PipelineBenchConfig(model=tiny_model, source="synthetic", duration_s=1.0, fps=60, width=96, height=64,
                              threads=2, streams=2, engine_runs=8, progress=False)
    results = run_pipeline_bench(cfg, command="pytest")
    p = results["pipeline"]
    assert "--streams 2" in p["node_command"] and p["node_final_stats"]["streams"] == 2
    assert p["frames_received"] > 0 and p["sequence"]["out_of_order"] == 0 == p["sequence"]["duplicates"]
    assert results["engine"]["results"][0]["streams_requested"] == 2
    # 8 engine-only runs in blocks of at least 2, so that each block has both calls in flight
    assert results["engine"]["settings"]["runs_per_block"] >= 2
    assert results["ratios"]["node_over_engine_fps"] > 0


def test_the_engine_only_run_reads_the_nodes_own_file(tiny_model, tmp_path):
    """On a video file the engine-only run times (and checks agreement on) the node's own frames."""
    from perception.bench.pipeline import PipelineBenchConfig, engine_frames, run_pipeline_bench

    assert engine_frames("frames/*.png") == "frames/*.png"
    assert engine_frames("synthetic") == "" and engine_frames("/dev/video0") == ""
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (96, 64))
    for i in range(30):
        writer.write(np.full((64, 96, 3), 8 * i, np.uint8))
    writer.release()
    cfg = PipelineBenchConfig(model=tiny_model, source=str(video), loop=True, duration_s=1.0, threads=1, engine_runs=4,
                              progress=False)
    results = run_pipeline_bench(cfg, command="pytest")
    assert results["engine"]["settings"]["frames_from"] == f"every 10th frame of {video}"
    assert results["engine"]["results"][0]["agreement"] == 1.0  # ORT FP32 against itself, on those frames


@pytest.mark.skipif(not Path("/proc/thread-self/comm").exists(), reason="OS thread names are read from Linux's /proc")
def test_the_cpu_sampler_names_each_busy_thread():
    import os
    import threading
    import time

    from perception.bench.node import CpuSampler
    from perception.threadname import set_os_thread_name

    spun, stop = threading.Event(), threading.Event()

    def busy() -> None:
        assert set_os_thread_name("perception-busy-worker")  # 15 bytes kept: "perception-busy"
        while time.thread_time() < 0.2:  # this thread's own CPU time
            pass
        spun.set()
        stop.wait(10)  # alive (and so named) until the summary is taken

    sampler = CpuSampler(os.getpid())
    worker = threading.Thread(target=busy)
    worker.start()
    assert spun.wait(30)
    summary = sampler.summary()
    stop.set()
    worker.join()
    busy_rows = [t for t in summary["threads"] if t["name"] == "perception-busy"]
    assert len(busy_rows) == 1 and busy_rows[0]["percent"] > 1  # 0.2 s of CPU in the window


def test_pipeline_bench_rounds_alternate_the_runs_and_pool_the_ratios(tiny_model, tmp_path):
    """--rounds 2: node, loop and engine-only twice over, each round's figures kept, the headline
    ratios over the sums (a drifting machine moves every run of a round alike)."""
    from perception.bench.pipeline import PipelineBenchConfig, run_pipeline_bench

    cfg = PipelineBenchConfig(model=tiny_model, source="synthetic", duration_s=1.0, fps=30, width=96, height=64,
                              threads=1, baseline=True, engine_runs=6, rounds=2, progress=False)
    results = run_pipeline_bench(cfg, command="pytest")
    rounds = results["rounds"]
    assert len(rounds) == 2 and all(r["node_fps"] > 0 and r["baseline_fps"] > 0 and r["engine_only_fps"] > 0 for r in rounds)
    assert rounds[0]["node_fps"] == results["pipeline"]["output_fps"]  # the tables show round 1
    assert all(r["node_over_engine_fps"] == pytest.approx(r["node_fps"] / r["engine_only_fps"]) for r in rounds)
    ratios = results["ratios"]
    assert ratios["node_over_engine_fps"] == pytest.approx(
        sum(r["node_fps"] for r in rounds) / sum(r["engine_only_fps"] for r in rounds))
    assert ratios["node_over_baseline_fps"] == pytest.approx(
        sum(r["node_fps"] for r in rounds) / sum(r["baseline_fps"] for r in rounds))
    md = write_report(results, tmp_path)["markdown"].read_text()
    assert "2 rounds, alternating node, serial baseline and engine-only runs" in md
    assert "round 2: node" in summary_text(results) and "over the 2 rounds' sums" in summary_text(results)


def test_pooled_ratios_are_over_the_sums_and_leave_out_what_did_not_run():
    from perception.bench.pipeline import pooled_ratios

    rounds = [{"node_fps": 10.0, "baseline_fps": 20.0, "engine_only_fps": 10.0},
              {"node_fps": 30.0, "baseline_fps": 20.0, "engine_only_fps": 50.0}]
    assert pooled_ratios(rounds) == {"node_over_baseline_fps": 1.0, "engine_only_fps": 10.0,
                                     "node_over_engine_fps": pytest.approx(40 / 60)}
    assert pooled_ratios([{"node_fps": 10.0}]) == {}


def test_cpu_budget_sets_the_engine_against_the_node_and_its_subscriber():
    from perception.bench.pipeline import cpu_budget

    rounds = [{"node_cpu_ms_per_frame": 50.0, "subscriber_cpu_ms_per_frame": 2.0, "engine_cpu_ms_per_run": 44.0},
              {"node_cpu_ms_per_frame": 54.0, "subscriber_cpu_ms_per_frame": 4.0, "engine_cpu_ms_per_run": 46.0}]
    assert cpu_budget(rounds) == {"node_ms": 52.0, "subscriber_ms": 3.0, "engine_only_ms": 45.0,
                                  "node_beyond_engine_ms": 7.0, "cpu_bound_node_over_engine": pytest.approx(45 / 55)}
    # a round without an engine-only run (or CPU figures): no budget rather than a half one
    assert cpu_budget([rounds[0], {**rounds[1], "engine_cpu_ms_per_run": None}]) is None


def test_pipeline_bench_topics_measure_the_node_for_a_consumer_of_those_topics(tiny_model, tmp_path):
    """--topics drivable: the subscriber asks for that mask (and the stats), so the node builds
    and sends one mask per frame, and the CPU per frame of node, subscriber and engine is reported."""
    from perception.bench.pipeline import PipelineBenchConfig, run_pipeline_bench

    cfg = PipelineBenchConfig(model=tiny_model, source="synthetic", duration_s=2.0, fps=30, width=96, height=64,
                              threads=1, engine_runs=10, topics=("drivable",), progress=False)
    results = run_pipeline_bench(cfg, command="pytest")
    p = results["pipeline"]
    assert p["topics"] == ["drivable"] and p["frames_received"] > 5
    # one mask message per frame and a stats document a second, nothing else (all topics: 5 a frame)
    assert p["messages_received"] <= p["frames_received"] + 4
    assert "--topics" not in p["node_command"]  # the node learns what is wanted from the subscriptions
    cpu = results["ratios"]["cpu_per_frame"]
    assert cpu["node_ms"] > 0 and cpu["subscriber_ms"] > 0 and cpu["engine_only_ms"] > 0
    assert cpu["node_beyond_engine_ms"] == pytest.approx(cpu["node_ms"] - cpu["engine_only_ms"], abs=2e-3)
    assert cpu["cpu_bound_node_over_engine"] == pytest.approx(
        cpu["engine_only_ms"] / (cpu["node_ms"] + cpu["subscriber_ms"]), rel=1e-3)
    md = write_report(results, tmp_path)["markdown"].read_text()
    assert "| subscribed topics | drivable |" in md and "the node beyond its engine" in md
    assert "CPU per frame (ms of one core): node" in summary_text(results)


@pytest.mark.parametrize(("text", "message"), [
    ("drivable,sky", "--topics 'sky' is not a topic of the node; choose from drivable, lane, obstacle, class_map, obstacles"),
    ("obstacles", "--topics 'obstacles' names no mask topic"),
])
def test_pipeline_bench_topics_are_checked(text, message):
    from perception.bench.pipeline import topics_from_text
    from perception.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        topics_from_text(text)
    assert topics_from_text(" lane, drivable,lane ") == ("lane", "drivable")


def test_auto_bench_baseline_and_engine_only_run_what_the_node_ran():
    """With --engine auto the ratios compare the node with the engine it ended on, and never start a
    second probe (which, without the node's frames, would judge rendered scenes and cache that)."""
    from perception.bench.pipeline import PipelineBenchConfig, ran_by_node

    auto = PipelineBenchConfig(engine="auto")
    assert ran_by_node(auto, {"node_final_stats": {"engine": "openvino", "precision": "int8"}}) == ("openvino", "int8")
    assert ran_by_node(auto, {"node_final_stats": {}}) == ("auto", "auto")
    forced = PipelineBenchConfig(engine="ort", precision="int8")
    assert ran_by_node(forced, {"node_final_stats": {"engine": "ort", "precision": "int8"}}) == ("ort", "int8")


class _FakeSub:
    """Hands out queued messages (None: nothing arrived within the timeout)."""

    def __init__(self, messages):
        self.messages = list(messages)

    def recv(self, timeout_s=0.2):
        return self.messages.pop(0) if self.messages else None


class _FakeProc:
    def __init__(self, code=None):
        self.returncode = code

    def poll(self):
        return self.returncode


def _stats(state):
    from types import SimpleNamespace

    doc = {"frames_out": 1} if state is None else {"engine_selection": {"state": state}}
    return SimpleNamespace(kind="json", topic="perception/bench/stats", data=doc)


def test_an_auto_node_is_measured_once_its_probe_has_chosen(tmp_path, capsys):
    """--engine auto at a first start: the bench waits (discarding) while the node's stats say
    `probing`, so the window measures the chosen engine, not ONNX Runtime beside the probe child."""
    from types import SimpleNamespace

    from perception.bench.node import wait_for_probe
    from perception.bench.nodeproc import NodeFailed

    mask = SimpleNamespace(kind="mask", topic="perception/bench/drivable", data=None)
    sub = _FakeSub([mask, _stats("probing"), mask, None, _stats("probing"), mask, _stats("chosen"), mask])
    got = wait_for_probe(sub, _FakeProc(), tmp_path / "log", timeout_s=30)
    assert got["state"] == "chosen" and got["was_probing"] and not got["timed_out"]
    assert sub.messages == [mask]  # it stops at the verdict; the window takes the rest
    # a cached verdict: the first stats document already says chosen, nothing to wait for
    got = wait_for_probe(_FakeSub([_stats("chosen")]), _FakeProc(), tmp_path / "log", 30)
    assert not got["was_probing"] and got["waited_s"] == 0.0
    # still probing when the time is up: measured anyway, and said
    got = wait_for_probe(_FakeSub([_stats("probing")] * 3), _FakeProc(), tmp_path / "log", timeout_s=0.05)
    assert got["timed_out"] and got["state"] == "probing"
    assert "still probing engines after 0 s" in capsys.readouterr().err
    # no stats document at all within the time: said too, not taken for a verdict
    got = wait_for_probe(_FakeSub([None] * 3), _FakeProc(), tmp_path / "log", timeout_s=0.05)
    assert got["timed_out"] and got["state"] is None
    assert "no verdict" in capsys.readouterr().err
    (tmp_path / "log").write_text("perception: error: the model file is gone\n")
    with pytest.raises(NodeFailed, match="exited with status 2 while probing engines: the model file is gone$"):
        wait_for_probe(_FakeSub([_stats("probing")]), _FakeProc(2), tmp_path / "log", 30)


def test_two_model_files_of_one_name_are_told_apart_in_labels_and_the_report(tiny_model, tmp_path):
    """``bench engine --model new/default.onnx old/default.onnx``: each row names its file."""
    from perception.bench.cases import model_names

    (tmp_path / "old").mkdir()
    old = build_tiny_model(tmp_path / "old" / tiny_model.name, name="tiny")
    assert model_names([Path("x/m.onnx"), Path("x/m.pt")]) == {Path("x/m.onnx"): "m.onnx", Path("x/m.pt"): "m.pt"}
    assert model_names([Path("a/tiny.onnx"), Path("b/fixed.onnx")]) == {Path("a/tiny.onnx"): "tiny", Path("b/fixed.onnx"): "fixed"}
    cfg = EngineBenchConfig(models=[tiny_model, old], threads=[1], batches=[1], runs=4, warmup=1, blocks=2, progress=False)
    results = new_results("engine", "pytest")
    results["engine"] = run_engine_bench(cfg)
    rows = results["engine"]["results"]
    first, second = (r["label"].split(" ")[0] for r in rows)
    assert first != second and second == f"old/{tiny_model.stem}"
    assert [r["model_tag"] for r in rows] == [first, second]
    assert f"(old/{tiny_model.stem})" in render_markdown(results)


# --------------------------------------------------------------------------------------------
# refused before any work, and said on the terminal (audit 2: findings 4-7, 9-11)
# --------------------------------------------------------------------------------------------


def test_a_block_of_fewer_runs_than_streams_is_refused_naming_the_runs_that_work(tiny_model):
    """--streams 2 --runs 5 in 5 blocks: one run a block, so never two calls in flight, while each
    worker runs on half the threads; refused, naming --runs 10 (and at most 2 blocks)."""
    with pytest.raises(ValueError, match=r"runs=5 in blocks=5 is 1 run a block, fewer than the streams=2 calls kept "
                                         r"in flight; give --runs 10 or more, or --blocks 2 or fewer$"):
        EngineBenchConfig(models=[tiny_model], threads=[2], streams=[1, 2], runs=5, blocks=5)
    with pytest.raises(ValueError, match=r"give --runs 2 or more$"):  # no --blocks can help 1 run
        EngineBenchConfig(models=[tiny_model], streams=[2], runs=1, blocks=1)
    EngineBenchConfig(models=[tiny_model], streams=[2], runs=10, blocks=5)  # 2 a block: fine
    EngineBenchConfig(models=[tiny_model], streams=[2], runs=1, blocks=2, duration_s=0.1)  # timed blocks: fine


def test_pipeline_mistakes_are_refused_before_any_node_starts(tiny_model, monkeypatch):
    """--peak-rate with a file source was refused only after every round of node, baseline and
    engine-only; --engine-runs below --streams would measure fewer calls in flight."""
    import perception.bench.pipeline as bp

    def no_node(*a, **k):
        raise AssertionError("a node was started")

    monkeypatch.setattr(bp, "measure_node", no_node)
    monkeypatch.setattr(bp, "measure_cameras", no_node)
    with pytest.raises(ConfigError, match=r"^--peak-rate paces the synthetic camera, not --source drive.mp4 .*; "
                                          r"use --source synthetic$"):
        bp.run_pipeline_bench(bp.PipelineBenchConfig(model=tiny_model, source="drive.mp4", peak_rate=True,
                                                     baseline=True, rounds=3, progress=False))
    with pytest.raises(ConfigError, match=r"^--engine-runs 1 is fewer than the 2 calls --streams 2 keeps in flight.*"
                                          r"give --engine-runs 2 or more \(or 0 to skip it\)$"):
        bp.run_pipeline_bench(bp.PipelineBenchConfig(model=tiny_model, streams=2, engine_runs=1, progress=False))
    with pytest.raises(ConfigError, match=r"fewer than the up to 2 calls --streams auto keeps in flight"):
        bp.check_conflicts(bp.PipelineBenchConfig(engine="auto", streams="auto", engine_runs=1))
    bp.check_conflicts(bp.PipelineBenchConfig(streams=2, engine_runs=0))  # no engine-only run: nothing to refuse
    # the engine-only run's blocks: up to 5, each of at least --streams runs
    assert [bp.engine_blocks(runs, 2) for runs in (2, 5, 8, 10, 100)] == [1, 2, 4, 5, 5]
    assert bp.engine_blocks(3, 1) == 3 and bp.engine_blocks(100, 1) == 5


def test_the_terminal_summary_gives_the_peak_rate_the_probe_wait_and_the_engine():
    """The person who asked for --peak-rate gets the answer on the terminal, not only in the .md;
    so is an --engine auto first start's wait and (one round) the engine the node ran."""
    results = {"pipeline": {"input_fps": 7.0, "output_fps": 6.5, "frames_dropped": 0, "sequence": {"missing": 0},
                            "node_final_stats": {"engine": "openvino", "precision": "fp32"},
                            "probe_wait": {"was_probing": True, "waited_s": 57.5, "state": "chosen",
                                           "timed_out": False}},
               "peak_rate": {"fps_held": 6.56, "lowest_dropping_fps": 7.2, "max_drop": 0.01, "trials": [{}] * 5},
               "ratios": {}}
    lines = summary_text(results).splitlines()
    assert lines[0].startswith("node (openvino-fp32): in 7.0 FPS, out 6.5 FPS")
    assert "--engine auto, first start: waited 57.5 s for the probe's verdict (chosen) before measuring" in lines
    assert lines[-1] == ("peak rate: 6.56 FPS held (at most 1 % of captured frames dropped or missing); "
                         "7.20 FPS requested dropped more; 5 trials")
    results["peak_rate"] = {"fps_held": None, "lowest_dropping_fps": 3.0, "max_drop": 0.01, "trials": [{}] * 4}
    assert summary_text(results).splitlines()[-1].startswith("peak rate: no rate held")
    # with rounds, each round's line names the engine; the node line does not repeat round 1's
    results["rounds"] = [{"node_fps": 6.5, "engine": "openvino", "precision": "fp32"}] * 2
    assert summary_text(results).startswith("node: in 7.0 FPS")


def test_the_cpu_per_frame_over_rounds_is_labelled_a_mean():
    cpu = {"node_ms": 98.91, "subscriber_ms": 2.0, "engine_only_ms": 80.0, "node_beyond_engine_ms": 18.91,
           "cpu_bound_node_over_engine": 0.8}
    results = {"kind": "pipeline", "pipeline": {"source": "drive.mp4"}, "ratios": {"cpu_per_frame": cpu},
               "rounds": [{"node_fps": 10.0, "engine": "ort", "precision": "fp32"}] * 3}
    md = render_markdown(results)
    assert "| CPU per frame, ms of one core: the node (mean over the rounds) | 98.91 |" in md
    assert "CPU per frame (ms of one core, mean over the 3 rounds): node 98.91" in summary_text(results)
    del results["rounds"]
    assert "| CPU per frame, ms of one core: the node | 98.91 |" in render_markdown(results)


def test_pipeline_help_names_every_source_kind():
    import dataclasses

    from perception.bench.pipeline import PipelineBenchConfig

    help_text = next(f for f in dataclasses.fields(PipelineBenchConfig) if f.name == "source").metadata["help"]
    assert "video file" in help_text and "image folder" in help_text and "synthetic" in help_text


@pytest.mark.parametrize(("args", "message"), [
    ("bench pipeline --peak-rate --source {fx}/drive.mp4 --duration 2 --baseline --no-progress --out {fx}/o",
     "--peak-rate paces the synthetic camera, not --source {fx}/drive.mp4"),
    ("bench engine --model {fx}/tiny.onnx --threads 2 --streams 2 --runs 5 --out {fx}/o", "give --runs 10 or more"),
    ("bench probe {fx}/tiny.onnx --cache-dir {fx}/file.txt/probe",
     "cannot use --cache-dir {fx}/file.txt/probe: {fx}/file.txt is a file, not a folder"),
    ("bench probe {fx}/tiny.onnx --threads 300 --cache-dir {fx}/c",
     "perception bench probe: threads=300 is out of range [0, 256] (--threads 300)"),
])
def test_bench_cli_mistakes_are_one_line_before_any_work(args, message, tiny_model, tmp_path):
    import shutil

    shutil.copy(tiny_model, tmp_path / "tiny.onnx")
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "drive.mp4").write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "perception", *args.format(fx=tmp_path).split()],
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("perception: error: ") and message.format(fx=tmp_path) in lines[0], proc.stderr
    assert not (tmp_path / "c").exists()  # the probe never ran


def test_bench_probe_says_cached_only_when_it_wrote_the_verdict(tiny_model, tmp_path, monkeypatch, capsys):
    """A verdict the cache did not take is printed without "cached for", and said (exit 2)."""
    import argparse

    import perception.engines.auto as auto
    from perception.commands import bench as bench_command

    args = argparse.Namespace(bench_mode="probe", model=tiny_model, threads=1, precision="fp32", frames="",
                              cache_dir=tmp_path / "cache")
    monkeypatch.setattr(auto, "write_cached", lambda selection, cache_dir: None)  # a full disk, say
    with pytest.raises(ConfigError, match=r"^the verdict was not cached: cannot write .*cache/\w+\.json; "):
        bench_command.main(args)
    out = capsys.readouterr().out
    assert "--engine auto for tiny.onnx" in out and "cached for" not in out
    monkeypatch.undo()
    assert bench_command.main(args) == 0
    assert "  cached for 'perception run --engine auto" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# hunt 5b: the split of missing frames, a bench that is killed, the report's labels
# --------------------------------------------------------------------------------------------


def _mask(topic: str, seq: int, pub_seq: int):
    """A received mask message of frame ``seq`` on ``perception/bench/<topic>``."""
    from perception.subscribe import Message

    header = {"kind": "mask", "seq": seq, "pub_seq": pub_seq, "capture_ns": 1_000, "publish_ns": 2_000,
              "latency_ms": {"infer": 1.0}, "model_id": "tiny"}
    return Message(topic=f"perception/bench/{topic}", header=header, data=None, wire_bytes=10, receive_ns=3_000)


def _stats_doc(dropped: int):
    from perception.subscribe import Message

    return Message(topic="perception/bench/stats", header={"kind": "json", "seq": 0, "pub_seq": 0},
                   data={"dropped": dropped}, wire_bytes=10, receive_ns=3_000)


def _overloaded(published, *, lost=(), dropped_at_first_stats=2, topics=("drivable", "lane")):
    """What the bench receives from an overloaded node that captured frames 0..max(published) and
    published only ``published`` (one message per topic, ``pub_seq`` counting them), its first
    stats document coming after frame 4 (the node had dropped ``dropped_at_first_stats`` by then),
    its last after the last frame. ``lost``: (topic, frame) messages the transport lost."""
    from perception.bench.received import Received, record_message

    rx = Received()
    captured = max(published) + 1
    for pub_seq, seq in enumerate(published):
        for topic in topics:
            if (topic, seq) not in lost:
                record_message(rx, _mask(topic, seq, pub_seq))
        if seq == 4:
            record_message(rx, _stats_doc(dropped_at_first_stats))
    record_message(rx, _stats_doc(captured - len(published)))
    return rx


def test_frames_the_node_dropped_before_its_first_stats_document_are_not_lost_after_it():
    """Hunt 5b finding 1: an overloaded node published 27 frames and dropped 37, the bench received
    all 27, yet the report said 8 were "lost after the node (ZeroMQ queue full)": the node's drop
    counter was taken from its first stats document, a second in, while the missing numbers count
    from the first mask. pub_seq (the README's loss-accounting rule) splits them exactly."""
    from perception.bench.received import summarize_received

    # Frames 0..11 captured; 1, 2, 5, 6, 9, 10 dropped by the node (1 and 2 before its first stats document).
    published = [0, 3, 4, 7, 8, 11]

    def split(rx):
        run = summarize_received(rx, window_s=1.0, cpu={}, subscriber={}, extra={})
        return run["sequence"]["missing"], run["frames_dropped"], run["lost_after_node"], run["loss_split"]

    rx = _overloaded(published)
    assert split(rx) == (6, 6, 0, "pub_seq")  # the old split: 6 - (6 - 2) = 2 "lost after the node"
    rx.pub_seqs = {}  # without pub_seq: the node's counter over its stats documents, as before
    assert split(rx) == (6, 4, 2, "node stats (approximate)")
    # Frame 7 published and lost on both topics: one transport loss; a frame lost on one topic
    # only (8 on lane) still arrived, so it is not missing at all.
    rx = _overloaded(published, lost={("drivable", 7), ("lane", 7), ("lane", 8)})
    assert split(rx) == (7, 6, 1, "pub_seq")
    # No topic received both ends of a missing run (4 only on drivable, 8 only on lane, 7 lost on
    # both): settled by the messages around it, 3 and 11 on lane (2 frames sent between 3 and 8
    # besides 4: 7, lost; and 8 arrived) -> still exactly one loss.
    rx = _overloaded(published, lost={("lane", 4), ("drivable", 7), ("lane", 7), ("drivable", 8)})
    assert split(rx) == (7, 6, 1, "pub_seq")


def test_a_frame_begun_before_the_window_is_not_counted_in_it():
    """The frame whose first mask opened the measuring window (or arrived while --engine auto
    probed) is not a frame of the window: counting it read the output FPS about 1/--duration high.
    Its other masks, arriving after the window opened, do not count it either."""
    from perception.bench.received import Received, record_message, summarize_received

    before = Received()
    record_message(before, _mask("drivable", 7, 7))  # the mask that opened the window
    assert before.last_seq == 7
    rx = Received(skip_through=before.last_seq)
    record_message(rx, _mask("lane", 7, 7))  # the same frame's second topic, now inside the window
    for seq in (8, 9, 10):
        for topic in ("drivable", "lane"):
            record_message(rx, _mask(topic, seq, seq))
    run = summarize_received(rx, window_s=2.0, cpu={}, subscriber={}, extra={})
    assert rx.order == [8, 9, 10]
    assert run["frames_received"] == 3 and run["output_fps"] == 1.5  # not 4 frames, 2.0 FPS
    assert run["sequence"]["first"] == 8 and run["frames_captured"] == 3
    assert rx.model_id == "tiny"


def test_the_peak_rate_trials_and_the_report_use_the_pub_seq_split(tiny_model, monkeypatch):
    """The --peak-rate trials take the corrected figures; the report labels frames as frames
    (hunt 5b finding 5: "messages received" showed the frame count) and shows both."""
    import perception.bench.peak_rate as bp
    from perception.bench.pipeline import PipelineBenchConfig
    from perception.bench.received import summarize_received

    run = summarize_received(_overloaded([0, 3, 4, 7, 8, 11]), window_s=1.0, cpu={}, subscriber={},
                             extra={"source": "synthetic"})
    monkeypatch.setattr(bp, "measure_node", lambda cfg, model, tick=None: run)
    peak = bp.find_peak_rate(PipelineBenchConfig(model=tiny_model, peak_rate=True, peak_steps=2), tiny_model)
    assert all((t["frames_dropped"], t["lost_after_node"], t["missing"]) == (6, 0, 6) for t in peak["trials"])
    md = render_markdown({"kind": "pipeline", "pipeline": run, "peak_rate": peak})
    assert "| frames received | 6 |" in md and "| messages received (every topic, stats included) | 14 |" in md
    assert "| sequence numbers missing at subscriber | 6 |" in md
    assert "|   of which dropped by the node (never published) | 6 |" in md
    assert "|   of which lost after the node (ZeroMQ queue full) | 0 |" in md
    # the trials: missing, dropped, lost, and the verdict (the camera gave 12 of the 240 FPS asked)
    assert ("| 240.00 | 12.00 | 6.00 | 12 | 6 | 6 | 0 | the source delivered 12.00 of the 240.00 FPS requested; "
            "the node dropped 6 of its 12 frames | - |") in md
    assert "missing at subscriber 6 (dropped by the node 6, lost after it 0)" in summary_text({"pipeline": run})


_FAKE_NODE = """
import os, pathlib, signal, sys, time
folder = pathlib.Path(sys.argv[1])
def stop(signum, _frame):
    (folder / "node.stopped").write_text(signal.Signals(signum).name)
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
(folder / "node.pid").write_text(str(os.getpid()))
time.sleep(60)
"""

_BENCH = """
import pathlib, sys
import perception.bench.node as node
from perception.bench.nodeproc import BenchStopped
from perception.bench.pipeline import PipelineBenchConfig
folder = sys.argv[1]
node.node_command = lambda cfg, model, endpoint, cameras=(): [sys.executable, "-c", {fake!r}, folder]
try:
    node.measure_node(PipelineBenchConfig(engine_runs=0, progress=False), pathlib.Path("unused.onnx"))
except BenchStopped as exc:
    print("stopped by", exc, flush=True)
    sys.exit(130)
"""


def _ended(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # ended, not yet reaped by init


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize(("sig", "node_got"), [(signal.SIGTERM, "SIGINT"), (signal.SIGKILL, "SIGTERM")],
                         ids=["sigterm", "sigkill"])
def test_a_killed_bench_takes_its_node_down(tmp_path, sig, node_got):
    """Hunt 5b finding 3: SIGTERM or SIGKILL to `bench pipeline` left its node running forever (a
    synthetic source never ends). SIGTERM now stops the node with SIGINT, its own clean shutdown,
    as Ctrl-C does; after SIGKILL the kernel sends the node SIGTERM (die_with_parent)."""
    import time

    bench = subprocess.Popen([sys.executable, "-c", _BENCH.format(fake=_FAKE_NODE), str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid_file = tmp_path / "node.pid"
    deadline = time.monotonic() + 60
    try:
        while not (pid_file.exists() and pid_file.read_text()) and bench.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pid_file.exists(), bench.communicate(timeout=10)
        node = int(pid_file.read_text())
        bench.send_signal(sig)
        out, err = bench.communicate(timeout=30)
        while not _ended(node) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _ended(node):
            os.kill(node, signal.SIGKILL)
            pytest.fail("the node outlived the bench")
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert (tmp_path / "node.stopped").read_text() == node_got
    if sig == signal.SIGTERM:
        assert bench.returncode == 130 and out.strip() == "stopped by SIGTERM", err
    else:
        assert bench.returncode == -signal.SIGKILL


def test_the_bench_starts_every_child_to_die_with_it():
    """Every child process of the bench (its nodes, nvidia-smi, the GPU check's steps) is started
    with die_with_parent, not only the one a test kills."""
    for path in (Path(__file__).parents[1] / "bench").glob("*.py"):
        text = path.read_text()
        starts = len(re.findall(r"subprocess\.(?:run|Popen|call|check_call|check_output)\(", text))
        assert starts == text.count("preexec_fn=die_with_parent()"), path.name


def test_the_serial_baseline_starts_as_warm_as_the_node():
    """Hunt 5b S2: the loop got 10 untimed calls, the node its --warmup (1): now the node's
    --warmup is the bench's, and the loop gets as many calls as the node made before its window."""
    from perception.bench.nodeproc import node_command
    from perception.bench.pipeline import PipelineBenchConfig, baseline_warmup

    cfg = PipelineBenchConfig(warmup=3)
    cmd = node_command(cfg, Path("m.onnx"), "tcp://127.0.0.1:5555")
    assert cmd[cmd.index("--warmup") + 1] == "3" and baseline_warmup(cfg) == 4
    assert PipelineBenchConfig().warmup == 1  # run's own default


def test_the_engine_help_says_what_torch_tensorrt_is():
    """Hunt 5b S4: `bench engine --engine foo` lists torch-tensorrt, which run lacks: a real
    bench-only row (the torch engine with --compile tensorrt), and the help says so."""
    import dataclasses

    from perception.bench.cases import ENGINE_VARIANTS

    field = next(f for f in dataclasses.fields(EngineBenchConfig) if f.name == "engines")
    assert ENGINE_VARIANTS["torch-tensorrt"] == ("torch", {"compile": "tensorrt"})
    assert "torch-tensorrt" in field.metadata["help"] and "--engine torch --compile tensorrt" in field.metadata["help"]


def test_the_peak_rate_report_marks_the_best_trial_and_a_camera_that_fell_short():
    """Hunt 6c follow-up: a trial whose camera delivered less than asked has ``held`` None; the
    report printed it as "no". Each trial now shows its verdict, the best one is marked, and a
    camera-limited figure says so in the report and on the terminal."""
    from perception.bench.peak_rate import judge_trial, peak_summary

    def run(in_fps, out_fps, dropped=0):
        return {"input_fps": in_fps, "output_fps": out_fps, "frames_captured": 40, "frames_dropped": dropped,
                "sequence": {"missing": dropped}, "cpu": {"mean_percent": 90.0}}

    trials = [judge_trial(run(11.0, 11.0), 240.0), judge_trial(run(6.0, 6.0), 6.0), judge_trial(run(9.5, 7.0, 9), 9.5)]
    peak = peak_summary(trials)
    assert peak["fps_held"] == 11.0 and peak["sustained"]["trial"] == 1 and peak["source_limited"]
    results = {"pipeline": {"input_fps": 7.0, "output_fps": 6.5, "frames_dropped": 0, "sequence": {"missing": 0},
                            "node_final_stats": {"engine": "ort", "precision": "fp32"}},
               "peak_rate": peak, "ratios": {}}
    # the best trial's frame count is said, and 40 frames cannot show 1 % (s40)
    assert summary_text(results).splitlines()[-1].endswith(
        "dropped more; the camera was the limit (see the report); 3 trials, best n=40 frames; its best trial "
        "captured only 40 frames, too few to show 1 % (a longer --duration)")
    from perception.bench.report import render_markdown

    text = render_markdown(results)
    assert "The camera was the limit: the synthetic camera delivered at most 11.00 FPS" in text
    rows = [line for line in text.splitlines() if line.startswith("| 1 (best)") or line.startswith("| 3 ")]
    assert len(rows) == 2 and "the source delivered 11.00 of the 240.00 FPS requested" in rows[0]
    assert "dropped at 9.50 FPS (9 of 40 frames)" in rows[1] and "| no |" not in text
