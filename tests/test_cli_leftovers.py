"""Leftovers of the command line: a single-value flag given twice, the export tools' error lines,
``bench report``'s ``timed_runs`` check and the auto probe's reference label on an INT8 file."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from perception.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _fails(capsys, *argv: str) -> str:
    """``perception ARGV`` refused by its parser: the one stderr line (exit 2 asserted)."""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "usage:" not in err and "Traceback" not in err
    return err.strip()


# ---- a single-value flag given twice -------------------------------------------------------------


@pytest.mark.parametrize(("argv", "said"), [
    (["run", "--model", "a.onnx", "--model", "b.onnx"],
     "perception: error: run: argument --model: given twice (a.onnx, b.onnx); give it once; "
     "see 'perception run --help'"),
    (["run", "--config", "a.yaml", "--source", "synthetic", "--config", "b.yaml"],
     "run: argument --config: given twice (a.yaml, b.yaml); give it once"),
    (["run", "--width", "96", "--width=128"], "run: argument --width: given twice (96, 128)"),
    (["listen", "--duration", "1", "--duration", "2"], "listen: argument --duration: given twice (1, 2)"),
    (["record", "--out", "a.mcap", "--out", "b.mcap"], "record: argument --out: given twice (a.mcap, b.mcap)"),
    (["eval", "--model", "a.onnx", "--model", "b.onnx"], "eval: argument --model: given twice"),
    (["bench", "engine", "--runs", "10", "--runs", "20"], "bench engine: argument --runs: given twice (10, 20)"),
    (["demo", "--duration", "1", "--duration", "2"], "demo: argument --duration: given twice (1, 2)"),
    (["eval", "--tasks", "--tasks", "lane"], "eval: argument --tasks: given twice (--tasks, --tasks lane)"),
    # an old spelling and the current one set one setting: given twice too, not the last one winning
    (["replay", "x.mcap", "--wait-first-subscriber", "1", "--wait-subscriber", "2"],
     "replay: argument --wait-first-subscriber: given twice (--wait-first-subscriber 1, --wait-subscriber 2)"),
])
def test_a_single_value_flag_given_twice_is_refused_in_one_line(capsys, argv, said):
    assert said in _fails(capsys, *argv)


def test_the_pipeline_bench_keeps_its_hint_for_a_second_model(capsys):
    err = _fails(capsys, "bench", "pipeline", "--model", "a.onnx", "--model", "b.onnx")
    assert "argument --model: given twice (a.onnx, b.onnx)" in err
    assert "perception bench engine --model A --model B" in err


def test_a_secret_in_a_flag_given_twice_is_not_echoed(capsys):
    err = _fails(capsys, "run", "--source", "rtsp://admin:pw@cam/a", "--model", "m.onnx", "--model", "n.onnx")
    assert "given twice" in err
    err = _fails(capsys, "listen", "--endpoint", "tcp://u:secret@h:1", "--endpoint", "tcp://u:secret@h:2")
    assert "secret" not in err


def test_every_single_value_flag_of_every_command_refuses_a_repeat():
    """Not one command keeps argparse's "last one wins" for a flag that takes one value."""
    from test_readme_walk_fixes import _command_parsers

    last_wins = [f"{name} {action.option_strings[0]}" for name, parser in _command_parsers()
                 for action in parser._actions
                 if action.option_strings and type(action) is argparse._StoreAction]
    assert not last_wins, f"flags where a second value silently replaces the first: {last_wins}"


@pytest.mark.parametrize("argv", [
    ["bench", "engine", "--model", "a.onnx", "--model", "b.onnx", "--threads", "1", "--threads", "2"],
    ["run", "--source", "a=synthetic", "--source", "b=synthetic", "--encoding", "lane=rle", "--encoding", "drivable=png"],
    ["train", "--config", "a.yaml", "--config", "b.yaml", "--set", "lr=0.1", "--set", "steps=2"],
    ["run", "--loop", "--loop"],  # a switch given twice means the same thing twice
    ["run", "-v", "-v"],
])
def test_repeatable_flags_stay_repeatable(argv):
    from perception.cli import build_parser

    args = build_parser(argv[0]).parse_args(argv)  # no SystemExit
    assert args.command == argv[0]


def test_flags_override_a_config_file_and_are_no_repeat(tmp_path):
    from perception.cli import build_parser
    from perception.commands.run import load_run_config

    node = tmp_path / "node.yaml"
    node.write_text("width: 320\nheight: 240\n")
    args = build_parser("run").parse_args(["run", "--config", str(node), "--width", "640"])
    config = load_run_config(args)
    assert (config.source_options.width, config.source_options.height) == (640, 240)


def test_launch_node_command_lines_give_each_flag_once(tmp_path):
    """A launch file's parameters and its NAME:=VALUE overrides make one value per flag (the node's
    parser would refuse a repeat): the override replaces the parameter, it is not appended."""
    from perception.launch import load_launch, parse_launch_arguments

    launch = tmp_path / "l.yaml"
    launch.write_text(
        "launch:\n"
        "  - arg: {name: width, default: 320}\n"
        "  - node:\n"
        "      name: cam\n"
        "      kind: pipeline\n"
        "      parameters: {source: synthetic, width: $(var width), height: 240, fps: 5}\n")
    plan = load_launch(launch, parse_launch_arguments(["width:=640"]))
    (node,) = plan.nodes
    options = [word for word in node.argv if word.startswith("--")]
    assert len(options) == len(set(options)), node.argv
    assert node.argv[node.argv.index("--width") + 1] == "640"
    from perception.cli import build_parser

    build_parser("run").parse_args(["run", *node.argv])  # the node's own parser takes it as is


# ---- python -m perception.export.*: argparse's errors in one line, as the tools' other errors -----


@pytest.mark.parametrize(("tool", "argv", "said"), [
    ("batch", [], "export.batch: error: the following arguments are required: model; "
                  "see 'python -m perception.export.batch --help'"),
    ("batch", ["m.onnx", "--bogus"], "export.batch: error: unrecognized arguments: --bogus; "
                                     "see 'python -m perception.export.batch --help'"),
    ("upgrade", [], "python -m perception.export.upgrade: error: the following arguments are required: MODEL; "
                    "see 'python -m perception.export.upgrade --help'"),
    ("upgrade", ["m.onnx", "--out"], "python -m perception.export.upgrade: error: argument --out: expected one "
                                     "argument; see 'python -m perception.export.upgrade --help'"),
    ("unknown", ["m.onnx", "--count", "x"], "python -m perception.export.unknown: error: argument --count: invalid "
                                            "int value: 'x'; see 'python -m perception.export.unknown --help'"),
    ("unknown", ["m.onnx", "--bogus"], "python -m perception.export.unknown: error: unrecognized arguments: --bogus; "
                                       "see 'python -m perception.export.unknown --help'"),
    ("quantize", [], "export.quantize: error: the following arguments are required: model; "
                     "see 'python -m perception.export.quantize --help'"),
])
def test_an_export_tool_says_a_bad_command_line_in_one_line(tool, argv, said, capsys):
    import importlib

    module = importlib.import_module(f"perception.export.{tool}")
    with pytest.raises(SystemExit) as info:
        module.main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [said] and captured.out == ""


def test_an_export_tool_run_as_a_program_prints_no_usage_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "perception.export.upgrade", "--bogus"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stdout == "" and done.stderr.splitlines() == [
        "python -m perception.export.upgrade: error: the following arguments are required: MODEL; "
        "see 'python -m perception.export.upgrade --help'"]


# ---- bench report: timed_runs is checked like the other figures ----------------------------------


def _bench_json(tmp_path: Path, **changes) -> Path:
    from perception.bench.results import RESULTS_SCHEMA

    row = {"label": "m", "model_name": "m", "engine": "ort", "provider": "cpu", "precision": "fp32",
           "agreement": 1.0, "input_hw": [64, 96], "batch": 1, "warmup_runs": 1, "timed_runs": 2,
           "latency_ms": {"count": 2, "mean": 1.0, "p50": 1.0, "p90": 1.0, "p99": 1.0, "max": 1.0}, "fps": 1000.0,
           "throughput_ips": 1000.0, "model_file_mb": 0.001, "samples_ms": [1.0, 1.0], **changes}
    path = tmp_path / "perception.bench.json"
    path.write_text(json.dumps({"schema": RESULTS_SCHEMA, "kind": "engine", "engine": {"results": [row]}}))
    return path


@pytest.mark.parametrize(("value", "said"), [
    (-1, "timed_runs is -1, expected a whole number not below 0"),
    (2.5, "timed_runs is 2.5, expected a whole number not below 0"),
    ("2", 'timed_runs is "2", expected a number'),
    (None, "timed_runs is null, expected a number"),
    (10**12, "timed_runs is 1000000000000, but the row holds 2 samples_ms (one per timed run)"),
    (3, "timed_runs is 3, but the row holds 2 samples_ms (one per timed run)"),
])
def test_bench_report_refuses_a_damaged_timed_runs_naming_it(tmp_path, value, said):
    from perception.bench.results import load_results
    from perception.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"^{tmp_path}/perception\.bench\.json: engine\.results\[0\]\.{re.escape(said)}"):
        load_results(_bench_json(tmp_path, timed_runs=value))


def test_bench_report_cli_says_a_negative_timed_runs_in_one_line(tmp_path, capsys):
    path = _bench_json(tmp_path, timed_runs=-5)
    assert main(["bench", "report", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "engine.results[0].timed_runs is -5, expected a whole number not below 0" in err


def test_bench_report_reads_a_whole_timed_runs_and_a_json_without_one(tmp_path):
    from perception.bench.results import load_results

    assert load_results(_bench_json(tmp_path, timed_runs=2.0))["engine"]["results"][0]["timed_runs"] == 2.0
    path = _bench_json(tmp_path)
    doc = json.loads(path.read_text())
    del doc["engine"]["results"][0]["timed_runs"]  # written before the field, or by hand
    path.write_text(json.dumps(doc))
    assert load_results(path)["engine"]["results"][0]["label"] == "m"


# ---- --engine auto on an INT8 file: the reference is labelled with what it ran --------------------


@pytest.fixture
def int8_file(tmp_path, monkeypatch):
    """An INT8 model file given to --engine auto as it is; private probe and OpenVINO caches."""
    from test_engines_cpu import HW, write_good_int8
    from tiny_models import write_brightness_model

    monkeypatch.setenv("PERCEPTION_OPENVINO_CACHE", str(tmp_path / "ov-cache"))
    monkeypatch.setenv("PERCEPTION_PROBE_CACHE", str(tmp_path / "probe-cache"))
    return write_good_int8(write_brightness_model(tmp_path / "tiny.onnx", HW))


def test_bench_probe_on_an_int8_file_labels_its_reference_with_what_ran(int8_file, tmp_path, monkeypatch, capsys):
    from perception.engines import EngineOptions, probe_cache
    from perception.engines import auto as auto_mod

    monkeypatch.setattr(auto_mod, "openvino_offers", lambda: (False, False))  # ONNX Runtime alone: a short probe
    cache = tmp_path / "probe"
    assert main(["bench", "probe", str(int8_file), "--threads", "1", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "ort-fp32" not in out, out  # the INT8 graph ran, as it is
    assert out.splitlines()[0].endswith(": ort-int8, probed in " + out.splitlines()[0].split("probed in ")[1])
    assert "ort-int8: fastest verified" in out and "agree 100.00 % with ort-int8 on" in out
    assert [line.split()[0] for line in out.splitlines()[3:-1]] == ["ort-int8"]  # the candidates' table
    # The verdict keeps the candidate it was keyed under: the cache and its agreement logic are as before.
    options = EngineOptions(threads=1)
    key = probe_cache.probe_key(int8_file, options, auto_mod.cpu_candidates(int8_file, options))
    assert key["candidates"] == ["ort-fp32"]
    cached = probe_cache.read_cached(key, cache)
    assert cached is not None and (cached.engine, cached.precision) == ("ort", "fp32")


def test_a_verdict_cached_by_an_earlier_version_still_loads_and_is_said_as_what_runs(int8_file, tmp_path, monkeypatch,
                                                                                     capsys):
    from perception.engines import EngineOptions, probe_cache
    from perception.engines import auto as auto_mod
    from perception.engines.probe_verdict import CandidateResult, Selection

    monkeypatch.setattr(auto_mod, "openvino_offers", lambda: (True, False))
    options = EngineOptions(threads=1)
    key = probe_cache.probe_key(int8_file, options, auto_mod.cpu_candidates(int8_file, options))
    assert key["candidates"] == ["ort-fp32", "openvino-int8"]  # the key recipe earlier versions cached under
    old = Selection(engine="ort", precision="fp32", key=key, probed_utc="2026-01-01T00:00:00Z", probe_s=1.0,
                    reason="ort-fp32: fastest verified, 1.00 ms p50, class ids agree 100.00 % with ort-fp32 on 16 "
                           "probe frames (rendered road scenes; gate 99.5 %); others: openvino-int8 1.20 ms",
                    results=[CandidateResult("ort", "fp32", 1.0, 1.0, True, "", 0.995),
                             CandidateResult("openvino", "int8", 1.2, 1.0, True, "", 0.995)])
    cache = tmp_path / "probe"
    cache.mkdir()
    (cache / f"{probe_cache.key_digest(key)}.json").write_text(json.dumps(old.to_dict()))
    assert main(["bench", "probe", str(int8_file), "--threads", "1", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith(": ort-int8, cached verdict"), out
    assert [line.split()[0] for line in out.splitlines()[3:-1]] == ["ort-int8", "openvino-int8"]


def test_the_node_on_an_int8_file_says_it_switched_from_ort_int8(int8_file, tmp_path, monkeypatch, caplog):
    import numpy as np
    from test_engines_cpu import HW, fake_probe, run_until

    from perception.engines import EngineOptions
    from perception.engines import auto as auto_mod
    from perception.engines.switching import SwitchingEngine

    if not auto_mod.openvino_offers()[0]:
        pytest.skip("OpenVINO is not installed: an INT8 file has no second candidate")
    flag = fake_probe(monkeypatch, tmp_path, verdict={"engine": "openvino", "precision": "int8", "reason": "test"})
    engine = auto_mod.load_auto(int8_file, EngineOptions(threads=1), background=True)
    batch = np.full((1, *HW, 3), 200, np.uint8)
    try:
        assert isinstance(engine, SwitchingEngine)
        flag.touch()
        with caplog.at_level("INFO", logger="perception.engines.auto"):
            run_until(engine, lambda: engine.kind == "openvino", batch)
        lines = [r.getMessage() for r in caplog.records if "switched from" in r.getMessage()]
        assert len(lines) == 1 and "switched from ort-int8 to openvino-int8" in lines[0], lines
    finally:
        engine.close()


def test_the_node_on_an_int8_file_says_the_probe_kept_ort_int8(int8_file, tmp_path, monkeypatch, caplog):
    import numpy as np
    from test_engines_cpu import HW, fake_probe, run_until

    from perception.engines import EngineOptions
    from perception.engines import auto as auto_mod

    monkeypatch.setattr(auto_mod, "openvino_offers", lambda: (True, False))  # two candidates: the node probes aside
    flag = fake_probe(monkeypatch, tmp_path, verdict={"engine": "ort", "precision": "fp32", "reason": "test"})
    engine = auto_mod.load_auto(int8_file, EngineOptions(threads=1), background=True)
    batch = np.full((1, *HW, 3), 200, np.uint8)
    try:
        flag.touch()
        with caplog.at_level("INFO", logger="perception.engines.auto"):
            run_until(engine, lambda: engine.selection["state"] != "probing", batch)
        kept = [r.getMessage() for r in caplog.records if "background probe kept" in r.getMessage()]
        assert len(kept) == 1 and "kept ort-int8 (test)" in kept[0], kept
        assert engine.precision == "int8" and engine.selection["state"] == "chosen"
    finally:
        engine.close()


def test_a_cached_winner_that_fails_on_an_int8_file_falls_back_to_what_runs(int8_file, monkeypatch, caplog):
    from perception.engines import EngineOptions, probe_cache
    from perception.engines import auto as auto_mod

    monkeypatch.setattr(auto_mod, "openvino_offers", lambda: (True, False))
    options = EngineOptions(threads=1)
    key = probe_cache.probe_key(int8_file, options, auto_mod.cpu_candidates(int8_file, options))
    probe_cache.write_cached(auto_mod.Selection(engine="openvino", precision="int8", reason="cached", key=key),
                             probe_cache.probe_cache_dir())
    real_load = auto_mod.load_candidate

    def load(candidate, path, opts):
        if candidate.engine == "openvino":
            raise RuntimeError("no such plugin here")
        return real_load(candidate, path, opts)

    monkeypatch.setattr(auto_mod, "load_candidate", load)
    with caplog.at_level("WARNING", logger="perception.engines.auto"):
        engine = auto_mod.load_auto(int8_file, options)
    try:
        assert engine.precision == "int8" and engine.selection["state"] == "failed"
        assert engine.selection["reason"].endswith("; ONNX Runtime INT8 kept"), engine.selection["reason"]
        warned = [r.getMessage() for r in caplog.records if "failed to load here" in r.getMessage()]
        assert len(warned) == 1 and "; running ONNX Runtime INT8 (the next start probes again)" in warned[0], warned
    finally:
        engine.close()
