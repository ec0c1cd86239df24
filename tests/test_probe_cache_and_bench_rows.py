"""``--engine auto``'s verdict cache read as data from disk, and what each ``bench engine`` row says
it ran (hunt 6a 1.1, 1.2, 1.5, 1.10).

A cache file that is JSON but not a verdict, or a verdict this machine cannot use, is one warning
naming the file and a new probe, never a traceback or an error about flags nobody typed; a cached
winner that passes those checks and still fails to load leaves ONNX Runtime FP32 running and is
forgotten. Bench rows give the size of the file they ran and never label an INT8 graph fp32.
Tiny models (tests/tiny_models.py): a probe, where one runs, takes a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from tiny_models import tiny_metadata, write_brightness_model

from perception.bench.engine import EngineBenchConfig, run_engine_bench
from perception.engines import EngineOptions, probe_cache
from perception.engines import auto as auto_mod
from perception.engines.switching import SwitchingEngine
from perception.errors import ConfigError, DependencyError, ModelError, PerceptionError

HW = (48, 64)


@pytest.fixture(autouse=True)
def _private_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("PERCEPTION_OPENVINO_CACHE", str(tmp_path / "ov-cache"))
    monkeypatch.setenv("PERCEPTION_PROBE_CACHE", str(tmp_path / "probe-cache"))
    monkeypatch.setenv("PERCEPTION_ORT_CACHE", "off")


def model_with_int8(tmp_path: Path, *, int8_padding: int = 0) -> Path:
    """tiny.onnx and a tiny.int8.onnx that computes the same classes (``int8_padding`` bytes more)."""
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    int8 = write_brightness_model(tmp_path / "tiny.int8.onnx", HW, metadata=tiny_metadata(HW, precision="int8"))
    if int8_padding:
        proto = onnx.load(str(int8))
        proto.doc_string = "x" * int8_padding
        onnx.save(proto, str(int8))
    return model


def cached_verdict(model: Path, options: EngineOptions, **fields) -> Path:
    """Write the verdict a probe would cache for ``model`` and ``options`` (its key as written), with
    ``fields`` over a valid openvino-int8 verdict; returns the cache file."""
    key = probe_cache.probe_key(model, options, auto_mod.cpu_candidates(model, options))
    doc = auto_mod.Selection(engine="openvino", precision="int8", reason="hand-written verdict", key=key).to_dict()
    path = probe_cache.cache_path(key, probe_cache.probe_cache_dir())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**doc, **fields}), encoding="utf-8")
    return path


def cache_warnings(caplog, path: Path) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and str(path) in r.getMessage()]


# ---- 1.1: valid JSON that is not a verdict ---------------------------------------------------------


@pytest.mark.parametrize("content", ["[]", "null", "3", '"verdict"', "[" * 100_000, "{}"],
                         ids=["array", "null", "number", "string", "nested-100000-deep", "empty-object"])
def test_a_cache_file_that_is_json_but_not_a_verdict_is_one_warning_and_probes_again(tmp_path, monkeypatch, caplog,
                                                                                       capsys, content):
    """``perception bench probe``: one warning naming the file, a new probe, exit 0, a verdict cached."""
    from perception.cli import main as cli_main

    monkeypatch.setattr(auto_mod, "openvino_offers", lambda: (False, False))  # ort-fp32 and ort-int8: a short probe
    model = model_with_int8(tmp_path)
    cache = tmp_path / "probe"
    monkeypatch.setenv("PERCEPTION_PROBE_CACHE", str(cache))
    options = EngineOptions(provider="cpu", threads=1)
    path = cached_verdict(model, options)
    path.write_text(content, encoding="utf-8")
    with caplog.at_level("WARNING", logger="perception.engines.auto"):
        code = cli_main(["bench", "probe", str(model), "--threads", "1", "--cache-dir", str(cache)])
    out = capsys.readouterr().out
    assert code == 0 and "--engine auto for tiny.onnx" in out and "probed in" in out
    assert len(cache_warnings(caplog, path)) == 1
    assert "is unreadable" in cache_warnings(caplog, path)[0] and "probing again" in cache_warnings(caplog, path)[0]
    assert probe_cache.read_cached(probe_cache.probe_key(model, options, auto_mod.cpu_candidates(model, options)),
                                   cache) is not None  # the new verdict replaced it


def test_the_node_on_a_cache_file_of_an_array_runs_and_warns_once(tmp_path):
    """``perception run --engine auto`` with ``[]`` in its cache file: a running node (exit 0) and one
    line on stderr naming the file, no traceback."""
    model = model_with_int8(tmp_path)
    options = EngineOptions(threads=1)  # what the node below keys its verdict by
    path = probe_cache.cache_path(probe_cache.probe_key(model, options, auto_mod.cpu_candidates(model, options)),
                                  probe_cache.probe_cache_dir())
    env = dict(os.environ)  # the private caches of _private_caches
    path.parent.mkdir(parents=True)
    path.write_text("[]")
    done = subprocess.run(
        [sys.executable, "-m", "perception", "run", "--engine", "auto", "--model", str(model), "--threads", "1",
         "--source", "synthetic", "--width", "64", "--height", "48", "--duration", "1",
         "--endpoint", "tcp://127.0.0.1:*"],
        env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    about_it = [line for line in done.stderr.splitlines() if str(path) in line]
    assert len(about_it) == 1 and "is unreadable (an array, not a verdict object); probing again" in about_it[0]


# ---- 1.2: a verdict this machine cannot use ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"engine": "bogus"}, "engine 'bogus' is not one of ort, openvino"),
        ({"precision": "bf16"}, "its winner openvino-bf16 is not one of this machine's candidates"),
        ({"streams": 50}, "streams 50 is not one of 1, 2"),
        ({"streams": "abc"}, "streams 'abc' is not one of 1, 2"),
        ({"streams": True}, "streams True is not one of 1, 2"),
        ({"streams_fps": {"1": "fast", "2": 3.0}}, "streams_fps"),
        ({"reason": 7}, "reason 7 is not text"),
        ({"probe_s": "long"}, "probe_s 'long' is not a duration"),
        ({"results": {"ort-fp32": 1}}, "is not a list"),
        ({"results": [{"engine": "ort", "precision": "fp32", "agreement": 2.5}]}, "results[0]: agreement 2.5"),
        ({"results": [{"engine": "ort", "precision": "fp32", "speed": 1}]}, "results[0]: unknown field 'speed'"),
    ],
    ids=["engine", "bf16-not-here", "streams-50", "streams-text", "streams-bool", "streams_fps", "reason", "probe_s",
         "results-object", "agreement", "unknown-field"],
)
def test_a_verdict_this_machine_cannot_use_is_one_warning_and_probes_again(tmp_path, monkeypatch, caplog, fields, why):
    """The node (``load_auto``, background): a warning naming the file and why, then a first start
    again (ONNX Runtime FP32 while it probes), with ``--streams auto`` too; never an error about
    --precision or --streams, which nobody typed."""
    monkeypatch.setattr(auto_mod, "openvino_offers", lambda: (True, False))  # OpenVINO, and no BF16, here
    model = model_with_int8(tmp_path)
    options = EngineOptions(provider="auto", threads=1, streams="auto")
    path = cached_verdict(model, options, **fields)
    with caplog.at_level("WARNING", logger="perception.engines.auto"):
        assert auto_mod.cached_selection(model, options) is None
        engine = auto_mod.load_auto(model, options, background=True)
    try:
        assert isinstance(engine, SwitchingEngine) and (engine.kind, engine.precision) == ("ort", "fp32")
        assert engine.selection["state"] == "probing"
    finally:
        engine.close()  # before its first frame: no probe child started
    warned = cache_warnings(caplog, path)
    assert len(warned) == 1, warned  # the loader and the node read it: the first removed it
    assert why in warned[0] and warned[0].endswith("probing again")
    assert "--precision" not in warned[0] and "--streams" not in warned[0]
    assert not path.exists()


def test_a_cached_winner_this_cpu_cannot_run_leaves_ort_fp32_running_and_is_forgotten(tmp_path, monkeypatch, caplog,
                                                                                       capsys, free_tcp_port):
    """The capability case: a verdict for OpenVINO bf16 that passes every check (its key says this
    machine offers bf16) on a CPU whose OpenVINO has no BF16. The node runs ONNX Runtime FP32 (exit
    0, its stats say so and why), warns once naming the cache file and the CPU, never --precision,
    and the next start probes again."""
    pytest.importorskip("openvino")
    from perception.cli import main as cli_main
    from perception.engines import openvino as ov_mod

    monkeypatch.setattr(auto_mod, "openvino_offers", lambda: (True, True))  # the flags said BF16 ...
    monkeypatch.setattr(ov_mod, "cpu_capabilities", lambda: ["FP32", "INT8"])  # ... OpenVINO has none
    model = model_with_int8(tmp_path)
    options = EngineOptions(provider="auto", threads=1)
    path = cached_verdict(model, options, precision="bf16", reason="openvino-bf16: fastest verified")
    with caplog.at_level("WARNING", logger="perception.engines.auto"):
        code = cli_main(["run", "--engine", "auto", "--model", str(model), "--source", "synthetic", "--width", "64",
                         "--height", "48", "--threads", "1", "--duration", "0.5",
                         "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"])
    assert code == 0
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (final["engine"], final["precision"]) == ("ort", "fp32") and final["published"] > 0
    selection = final["engine_selection"]
    assert selection["state"] == "failed" and "ONNX Runtime FP32 kept" in selection["reason"]
    warned = cache_warnings(caplog, path)
    assert len(warned) == 1, warned
    assert "chose openvino-bf16 but it failed to load here (this CPU has no BF16 support in OpenVINO" in warned[0]
    assert "running ONNX Runtime FP32 (the next start probes again)" in warned[0]
    assert "--precision" not in warned[0] and "--precision" not in selection["reason"]
    assert not path.exists()  # forgotten
    assert auto_mod.cached_selection(model, options) is None  # the next start probes again

    # A forced --precision bf16 has no FP32 to run: one error naming the verdict, not a flag's fix.
    forced = EngineOptions(provider="auto", threads=1, precision="bf16")
    path = cached_verdict(model, forced, precision="bf16")
    with pytest.raises(DependencyError) as info:
        auto_mod.load_auto(model, forced, background=True)
    message = str(info.value)
    assert message.startswith(f"--engine auto --precision bf16: the cached verdict {path} chose openvino-bf16 but it "
                              "failed to load here (this CPU has no BF16")
    assert "use --precision" not in message and message.endswith("the next start probes again")
    assert not path.exists()


def test_a_probe_child_printing_a_bad_verdict_is_an_error_not_a_traceback():
    with pytest.raises(PerceptionError, match=r"gave an unusable verdict \(streams 9 is not one of 1, 2\)"):
        auto_mod.child_verdict(0, json.dumps({"engine": "ort", "precision": "fp32", "streams": 9}), "", {})
    with pytest.raises(PerceptionError, match="exited with status 0"):
        auto_mod.child_verdict(0, "[]", "", {})


# ---- 1.5 and 1.10: bench engine rows ---------------------------------------------------------------


def test_each_bench_row_gives_the_size_of_the_file_it_ran_in_mb(tmp_path):
    """The INT8 rows run tiny.int8.onnx, so their file MB is its size (10^6 bytes, as inspect says)."""
    from perception.bench.report import render_markdown

    model = model_with_int8(tmp_path, int8_padding=300_000)
    int8 = tmp_path / "tiny.int8.onnx"
    rows = run_engine_bench(EngineBenchConfig(models=[model], engines=["ort"], precisions=["fp32", "int8"], threads=[1],
                                              runs=2, warmup=0, blocks=1, progress=False))["results"]
    by = {r["precision_requested"]: r for r in rows}
    assert by["fp32"]["model_file"] == str(model) and by["int8"]["model_file"] == str(int8)
    for row, path in ((by["fp32"], model), (by["int8"], int8)):
        assert row["model_file_bytes"] == path.stat().st_size
        assert row["model_file_mb"] == round(path.stat().st_size / 1e6, 3)
    assert by["int8"]["model_file_mb"] > 0.3 > by["fp32"]["model_file_mb"]
    md = render_markdown({"kind": "engine", "engine": {"settings": {}, "results": rows}})
    int8_line = next(line for line in md.splitlines() if line.startswith("| 2 |"))
    assert int8_line.rstrip(" |").endswith(f"{by['int8']['model_file_mb']:.2f}")


def test_an_int8_model_file_is_never_run_under_a_float_label(tmp_path):
    """``--model x.int8.onnx --precision fp32,int8``: the fp32 row would time the INT8 graph, so it is
    skipped saying why; the int8 row runs. Asked for fp32 alone, the bench stops with one line."""
    model_with_int8(tmp_path)
    int8 = tmp_path / "tiny.int8.onnx"
    rows = run_engine_bench(EngineBenchConfig(models=[int8], engines=["ort"], precisions=["fp32", "int8"], threads=[1],
                                              runs=2, warmup=0, blocks=1, progress=False))["results"]
    by = {r["precision_requested"]: r for r in rows}
    assert by["fp32"]["skipped"] == ("--precision fp32: tiny.int8.onnx is an INT8 file, whose graph runs in INT8 "
                                     "whatever is asked; pass its FP32 file as --model to measure fp32")
    assert not by["int8"]["skipped"] and by["int8"]["precision"] == "int8" and by["int8"]["model_file"] == str(int8)
    with pytest.raises(ConfigError, match=r"^the one configuration was skipped, nothing was measured: --precision "
                                          r"fp32: tiny\.int8\.onnx is an INT8 file"):
        run_engine_bench(EngineBenchConfig(models=[int8], engines=["ort"], precisions=["fp32"], runs=2, warmup=0,
                                           blocks=1, progress=False))


def test_bench_engine_on_a_folder_named_like_a_model_says_it_is_a_directory(tmp_path, capsys):
    from perception.cli import main as cli_main

    folder = tmp_path / "x.onnx"
    folder.mkdir()
    with pytest.raises(ModelError, match=r"^model file .*x\.onnx is a directory; pass the \.onnx file inside it$"):
        run_engine_bench(EngineBenchConfig(models=[folder], progress=False))
    assert cli_main(["bench", "engine", "--model", str(folder), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"perception: error: model file {folder} is a directory; pass the .onnx file inside it"]



def test_the_probe_draws_frames_for_an_input_larger_than_the_synthetic_world_draws():
    """A 1200x1920 model (over the synthetic camera's 1080x1920) is probed on scenes drawn at the
    nearest size and letterboxed to its input, not refused with a size the user never gave."""
    from perception.engines.probe import probe_frames

    (frame,) = probe_frames((1200, 1920), count=1)
    assert frame.shape == (1, 1200, 1920, 3) and str(frame.dtype) == "uint8"
    # 1080x1920 drawn, letterboxed: black bands of 60 rows above and below, the scene between
    assert frame[0, :60].max() == 0 == frame[0, -60:].max() and frame[0, 60:-60].max() > 0
