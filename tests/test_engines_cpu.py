"""CPU engines beyond ONNX Runtime: the OpenVINO engine, precision choices and ``--engine auto``.

Tiny brightness models (tests/tiny_models.py) whose class ids are known exactly; an INT8 sibling
with a different scale is the deliberately broken candidate the probe must reject.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from tiny_models import expected_class_ids, tiny_metadata, write_brightness_model, write_upsampling_model

from perception import contracts
from perception.engines import EngineOptions, load_engine, probe_cache
from perception.engines import auto as auto_mod
from perception.engines import probe as probe_mod
from perception.engines.switching import SwitchingEngine
from perception.errors import ConfigError, ModelError

HW = (48, 64)


@pytest.fixture(autouse=True)
def _private_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("PERCEPTION_OPENVINO_CACHE", str(tmp_path / "ov-cache"))
    monkeypatch.setenv("PERCEPTION_PROBE_CACHE", str(tmp_path / "probe-cache"))


def write_broken_int8(fp32: Path) -> Path:
    """A valid INT8-labelled sibling that computes the wrong classes (scale doubled)."""
    proto = onnx.load(str(fp32))
    for i, init in enumerate(proto.graph.initializer):
        if init.name == "scale":
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 2, "scale"))
    meta = tiny_metadata(HW, precision="int8")
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {contracts.METADATA_KEY: meta.to_json()})
    path = fp32.with_name(fp32.name.removesuffix(".onnx") + ".int8.onnx")
    onnx.save(proto, str(path))
    return path


def test_openvino_gives_the_same_class_ids_as_ort(tmp_path):
    pytest.importorskip("openvino")
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    batch = np.random.default_rng(0).integers(0, 256, (1, *HW, 3), dtype=np.uint8)
    ov = load_engine("openvino", model, EngineOptions(precision="fp32", threads=1))
    ort = load_engine("ort", model, EngineOptions(provider="cpu", threads=1))
    got, ref = ov.infer(batch)["class_ids"], ort.infer(batch)["class_ids"]
    assert got.dtype == np.uint8 and got.shape == (1, *HW)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got, expected_class_ids(batch))
    # A second batch through the same request: outputs are copies, not views of reused buffers.
    other = ov.infer(255 - batch)["class_ids"]
    np.testing.assert_array_equal(got, expected_class_ids(batch))
    np.testing.assert_array_equal(other, expected_class_ids(255 - batch))
    # The dynamic batch dimension runs several frames at once.
    two = np.concatenate([batch, 255 - batch])
    np.testing.assert_array_equal(ov.infer(two)["class_ids"], expected_class_ids(two))
    assert ov.precision == "fp32" and ov.metadata.model_name == "tiny" and "openvino" in ov.describe()
    assert ov.planar_tails == 0  # no upsample before its argmax: compiled as written
    ov.close()
    ort.close()


@pytest.mark.parametrize("logit_bias", [False, True], ids=["plain", "logit-adjusted"])
def test_openvino_runs_the_upsampled_class_tail_planar_with_the_same_outputs(tmp_path, logit_bias):
    """The engine folds the classes into the batch around the last upsample (planar_class_tail);
    the class ids are those of the graph compiled as written, the confidence within a level."""
    pytest.importorskip("openvino")
    from perception.engines.openvino import shared_core

    model = write_upsampling_model(tmp_path / "up.onnx", HW, logit_bias=logit_bias, with_confidence=True)
    engine = load_engine("openvino", model, EngineOptions(precision="fp32", threads=1))
    assert engine.planar_tails == 1
    # What the rewrite is for: the argmax runs on the planar layout (OpenVINO's runtime-model info).
    ops = engine._compiled.get_runtime_model().get_ordered_ops()
    layouts = {str(op.get_rt_info()["outputLayouts"].astype(str)) for op in ops
               if op.get_rt_info()["layerType"].astype(str) == "TopK"}
    assert layouts == {"abcd"}
    as_written = shared_core().compile_model(str(model), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (3, HW[0] // 8, HW[1] // 8, 3), dtype=np.uint8)
    batch = np.ascontiguousarray(small.repeat(8, axis=1).repeat(8, axis=2))  # blocks: class edges inside
    got, want = engine.infer(batch), as_written({0: batch})
    np.testing.assert_array_equal(got["class_ids"], want["class_ids"])
    assert len(np.unique(got["class_ids"])) > 2  # a map with edges, not one class everywhere
    assert np.abs(got["confidence"].astype(int) - want["confidence"]).max() <= 1
    ort = load_engine("ort", model, EngineOptions(provider="cpu", threads=1))
    assert (ort.infer(batch)["class_ids"] == got["class_ids"]).mean() > 0.999
    engine.close()
    ort.close()
    # An upsample by scales follows the given scale, not output/input size: compiled as written.
    by_scales = write_upsampling_model(tmp_path / "scales.onnx", HW, by_scales=True)
    engine = load_engine("openvino", by_scales, EngineOptions(precision="fp32", threads=1))
    assert engine.planar_tails == 0
    as_written = shared_core().compile_model(str(by_scales), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    np.testing.assert_array_equal(engine.infer(batch)["class_ids"], as_written({0: batch})["class_ids"])
    engine.close()


def test_openvino_compiled_model_cache_is_written(tmp_path):
    pytest.importorskip("openvino")
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    load_engine("openvino", model, EngineOptions(precision="fp32")).close()
    assert any((tmp_path / "ov-cache").iterdir())


def test_precision_flags_fail_with_the_fix(tmp_path):
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    with pytest.raises(ConfigError, match="--engine openvino"):
        load_engine("ort", model, EngineOptions(precision="bf16"))
    with pytest.raises(ModelError, match=r"no tiny\.int8\.onnx beside it; write one with 'python -m perception.export\.quantize"):
        load_engine("ort", model, EngineOptions(precision="int8"))
    with pytest.raises(ConfigError, match="unknown --precision 'int4'"):
        EngineOptions(precision="int4")


def test_int8_precision_runs_the_sibling(tmp_path):
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    sibling = write_broken_int8(model)
    engine = load_engine("ort", model, EngineOptions(provider="cpu", precision="int8"))
    assert engine.model_path == str(sibling) and engine.precision == "int8"


@pytest.mark.parametrize(
    ("flags", "warned"),
    [
        ({"avx2", "fma"}, True),  # AVX2 only (an EPYC before Zen 4): u8 x s8 dot products saturate
        ({"avx2", "fma", "avx512f"}, True),  # AVX-512 without VNNI (Skylake-SP)
        ({"avx2", "fma", "avx512f", "avx512_vnni"}, False),
        ({"avx2", "fma", "avx_vnni"}, False),
        ({"asimd"}, False),  # not x86: not judged
    ],
)
def test_int8_on_a_cpu_without_vnni_warns_once_with_the_cpu_named(tmp_path, monkeypatch, caplog, flags, warned):
    from perception.engines import base, cpu

    monkeypatch.setattr(cpu, "_cpuinfo", lambda: ("Test CPU 9000", frozenset(flags)))
    monkeypatch.setattr(base, "_warned_int8_saturation", False)
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    int8 = write_broken_int8(model)
    caplog.set_level("WARNING")
    for _ in range(2):
        load_engine("ort", model, EngineOptions(provider="cpu", precision="int8"))
    load_engine("ort", model, EngineOptions(provider="cpu"))  # FP32: never
    messages = [r.getMessage() for r in caplog.records if "without VNNI" in r.getMessage()]
    if warned:
        assert len(messages) == 1
        assert "Test CPU 9000" in messages[0] and "--engine auto" in messages[0]
        # A failed INT8 gate on such a CPU says why and where to gate instead.
        assert "Test CPU 9000) has no VNNI" in cpu.int8_gate_hint() and "--overflow-fix enable" in cpu.int8_gate_hint()
        # A file whose gate found its weights within 7 bits computes the same here: no warning, no hint.
        assert cpu.int8_gate_hint(saturation_safe=True) == ""
        from perception.modelfile import record_metadata

        caplog.clear()
        monkeypatch.setattr(base, "_warned_int8_saturation", False)
        record_metadata(int8, val_metrics={"int8_gate": {"passed": True, "saturation_safe": True}})
        load_engine("ort", model, EngineOptions(provider="cpu", precision="int8"))
        assert not [r for r in caplog.records if "without VNNI" in r.getMessage()]
    else:
        assert messages == []
        assert cpu.int8_gate_hint() == ""


def test_auto_rejects_a_candidate_that_disagrees_with_fp32(tmp_path):
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    write_broken_int8(model)
    selection = auto_mod.select_engine(model, EngineOptions(threads=1), cache_dir=tmp_path / "probe")
    by_label = {r.label: r for r in selection.results}
    assert not by_label["ort-int8"].eligible and by_label["ort-int8"].agreement < 0.9
    assert by_label["ort-fp32"].eligible and by_label["ort-fp32"].agreement == 1.0
    assert selection.precision != "int8"
    assert "ort-int8 rejected (agree" in selection.reason
    if "openvino-int8" in by_label:
        assert not by_label["openvino-int8"].eligible


def test_auto_judges_agreement_on_the_frames_it_is_given(tmp_path, capsys):
    """The broken INT8 file (scale doubled) still maps black to class 0: on black frames it agrees,
    on rendered scenes not. --frames probes again whatever is cached, caches that verdict and says
    which frames it judged on; a wrong frames file is a one-line error."""
    import json

    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    write_broken_int8(model)
    cache, options = tmp_path / "probe", EngineOptions(threads=1)
    black = tmp_path / "perception-probe-black.npy"  # named as the node names its frames file
    np.save(black, np.zeros((3, *HW, 3), np.uint8))
    rendered = auto_mod.select_engine(model, options, cache_dir=cache)
    assert not {r.label: r for r in rendered.results}["ort-int8"].eligible
    on_black = auto_mod.select_engine(model, options, cache_dir=cache, frames=str(black))
    assert not on_black.from_cache
    int8 = {r.label: r for r in on_black.results}["ort-int8"]
    assert int8.eligible and int8.agreement == 1.0
    assert "on 3 probe frames (the node's frames; gate" in on_black.reason
    assert auto_mod.select_engine(model, options, cache_dir=cache).reason == on_black.reason  # now cached

    np.save(tmp_path / "mine.npy", np.zeros((40, *HW, 3), np.uint8))
    frames, described = auto_mod.frames_from(str(tmp_path / "mine.npy"), HW)
    assert len(frames) == probe_mod.PROBE_FRAMES and type(frames[0]) is np.ndarray
    assert described == f"the frames in {tmp_path / 'mine.npy'}"
    frames, described = auto_mod.frames_from("synthetic:count=3,size=48x64", HW)  # a dataset: its val images
    assert len(frames) == 3 and frames[0].shape == (1, *HW, 3) and described == "val images of synthetic:count=3,size=48x64"
    np.save(tmp_path / "small.npy", np.zeros((2, 8, 8, 3), np.uint8))
    (tmp_path / "junk.npy").write_text("not an array")
    with pytest.raises(ConfigError, match=r"junk\.npy: not a readable \.npy file"):
        auto_mod.frames_from(str(tmp_path / "junk.npy"), HW)
    with pytest.raises(ConfigError, match=r"small\.npy: uint8 \(2, 8, 8, 3\), expected uint8 N x 48 x 64 x 3"):
        auto_mod.frames_from(str(tmp_path / "small.npy"), HW)
    assert auto_mod.main([str(model), "--frames", str(tmp_path / "small.npy"), "--cache-dir", str(cache)]) == 2
    error = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert error["error_type"] == "ConfigError" and "expected uint8 N x 48 x 64 x 3" in error["error"]


def test_bench_probe_reports_and_caches_the_verdict_on_the_users_frames(tmp_path, capsys):
    """``perception bench probe MODEL --frames SPEC``: every candidate's figures, the verdict cached
    where the node reads it; wrong frames are a one-line error."""
    from perception.cli import main as cli_main

    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    write_broken_int8(model)
    cache = tmp_path / "probe"
    black = tmp_path / "black.npy"
    np.save(black, np.zeros((4, *HW, 3), np.uint8))
    assert cli_main(["bench", "probe", str(model), "--threads", "1", "--frames", str(black),
                     "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "--engine auto for tiny.onnx" in out and f"on 4 probe frames (the frames in {black}" in out
    int8_line = next(line for line in out.splitlines() if line.split()[:1] == ["ort-int8"])
    assert "100.00" in int8_line and int8_line.endswith("eligible")
    assert f"--threads 1' in {cache}" in out
    options = EngineOptions(threads=1)
    cached = probe_cache.read_cached(probe_cache.probe_key(model, options, auto_mod.cpu_candidates(model, options)), cache)
    assert cached is not None and "the frames in" in cached.reason

    code = cli_main(["bench", "probe", str(model), "--frames", str(tmp_path / "none.npy"), "--cache-dir", str(cache)])
    err = capsys.readouterr().err
    assert code != 0 and "none.npy: not a readable .npy file" in err and "Traceback" not in err


def test_auto_rejects_a_candidate_without_the_confidence_output(tmp_path):
    """An INT8 sibling made before the model got its confidence output would silently turn unknown
    marking off: the probe never chooses it."""
    model = write_brightness_model(tmp_path / "tiny.onnx", HW, with_confidence=True)
    plain = write_brightness_model(tmp_path / "plain.onnx", HW, metadata=tiny_metadata(HW, precision="int8"))
    plain.rename(tmp_path / "tiny.int8.onnx")
    selection = auto_mod.select_engine(model, EngineOptions(threads=1, precision="auto"), cache_dir=tmp_path / "probe")
    by_label = {r.label: r for r in selection.results}
    assert "lacks the confidence output of ort-fp32" in by_label["ort-int8"].error
    assert not by_label["ort-int8"].eligible and selection.precision != "int8"


def test_auto_fails_when_no_candidate_agrees(tmp_path):
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    write_broken_int8(model)
    with pytest.raises(ModelError, match=r"--engine auto: no engine ran tiny\.onnx correctly \(ort-int8: agreement"):
        auto_mod.select_engine(model, EngineOptions(precision="int8"), cache_dir=tmp_path / "probe")


def test_auto_engine_publishes_its_choice(tmp_path):
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    engine = load_engine("auto", model, EngineOptions(threads=1))
    assert engine.selection is not None
    assert (engine.selection["engine"], engine.selection["precision"]) == (engine.kind, engine.precision)
    assert "fastest verified" in engine.selection["reason"]
    batch = np.full((1, *HW, 3), 200, np.uint8)
    np.testing.assert_array_equal(engine.infer(batch)["class_ids"], expected_class_ids(batch))


def test_the_node_probes_in_a_child_process(tmp_path, monkeypatch):
    """--engine auto (load_auto) probes in a child, so that the candidates' memory never stays in
    the node; the child's verdict is cached for the next start, and its errors come back as such."""
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    monkeypatch.setenv("PERCEPTION_PROBE_CACHE", str(tmp_path / "probe"))

    def no_probe_here(*args, **kwargs):
        raise AssertionError("probed in the node's own process")

    monkeypatch.setattr(auto_mod, "run_probe", no_probe_here)
    engine = load_engine("auto", model, EngineOptions(threads=1))
    assert engine.selection is not None and not engine.selection["from_cache"]
    assert "fastest verified" in engine.selection["reason"]
    assert len(list((tmp_path / "probe").glob("*.json"))) == 1
    again = load_engine("auto", model, EngineOptions(threads=1))
    assert again.selection["from_cache"] and again.selection["reason"] == engine.selection["reason"]

    write_broken_int8(model)
    with pytest.raises(ModelError, match=r"--engine auto: no engine ran tiny\.onnx correctly \(ort-int8: agreement"):
        load_engine("auto", model, EngineOptions(precision="int8"))


def test_probe_cache_is_keyed_and_invalidated(tmp_path, monkeypatch):
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    cache = tmp_path / "probe"
    probes = []
    real_probe = auto_mod.run_probe

    def counting_probe(*args, **kwargs):
        probes.append(1)
        return real_probe(*args, **kwargs)

    monkeypatch.setattr(auto_mod, "run_probe", counting_probe)
    options = EngineOptions(threads=1)
    first = auto_mod.select_engine(model, options, cache_dir=cache)
    again = auto_mod.select_engine(model, options, cache_dir=cache)
    assert len(probes) == 1 and again.from_cache and not first.from_cache
    assert (again.engine, again.precision, again.reason) == (first.engine, first.precision, first.reason)

    auto_mod.select_engine(model, EngineOptions(threads=2), cache_dir=cache)  # another thread count
    assert len(probes) == 2
    write_brightness_model(model, HW, metadata=tiny_metadata(HW, model_name="tiny2"))  # the model changed
    auto_mod.select_engine(model, options, cache_dir=cache)
    assert len(probes) == 3
    write_broken_int8(model)  # an INT8 sibling appeared: new candidates, new key
    auto_mod.select_engine(model, options, cache_dir=cache)
    assert len(probes) == 4
    real_version = probe_cache._version
    monkeypatch.setattr(probe_cache, "_version", lambda d: "9.9" if d == "onnxruntime" else real_version(d))
    auto_mod.select_engine(model, options, cache_dir=cache)  # a library upgrade
    assert len(probes) == 5
    monkeypatch.setattr(probe_cache, "cpu_model", lambda: "Another CPU")
    auto_mod.select_engine(model, options, cache_dir=cache)  # another machine
    assert len(probes) == 6
    auto_mod.select_engine(model, options, cache_dir=cache)
    assert len(probes) == 6

    for entry in cache.glob("*.json"):  # a corrupt entry is probed again, not trusted
        entry.write_text("{not json")
    auto_mod.select_engine(model, options, cache_dir=cache)
    assert len(probes) == 7


def test_cpu_engines_import_neither_torch_nor_onnx(tmp_path):
    """The node's start-up path: onnx (through ml_dtypes) cost more than the rest of start-up, and
    OpenVINO's Model Conversion API more than the rest of ``import openvino``."""
    import subprocess
    import sys

    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    engines = ["ort", "auto"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    code = (
        "import sys\n"
        "from perception.engines import load_engine\n"
        + "".join(f"load_engine({e!r}, {str(model)!r})\n" for e in engines)
        + "bad = [m for m in ('torch', 'onnx', 'nncf', 'openvino.tools.ovc') if m in sys.modules]\n"
        # Left out of the start-up, the Model Conversion API still imports when asked for.
        + ("import openvino.tools.ovc\n" if "openvino" in engines else "")
        + "sys.exit(f'imported {bad}' if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], timeout=120, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def write_good_int8(fp32: Path) -> Path:
    """An INT8-labelled sibling that computes the same classes (a candidate the probe may choose)."""
    return write_brightness_model(fp32.with_name(fp32.stem + ".int8.onnx"), HW, metadata=tiny_metadata(HW, precision="int8"))


def fake_probe(monkeypatch, tmp_path, *, verdict: dict | None, exit_code: int = 0, stderr: str = "",
               frames_seen: list | None = None) -> Path:
    """Replace the background probe child with one that waits for a flag file, then prints
    ``verdict`` (or ``stderr``) and exits ``exit_code``: the test decides when the verdict arrives.
    ``frames_seen`` receives, per start, the frames file it was given and its frames (or None)."""
    import json
    import sys

    flag = tmp_path / "probe-may-finish"
    script = (
        "import sys, time, pathlib\n"
        f"while not pathlib.Path({str(flag)!r}).exists(): time.sleep(0.01)\n"
        f"print({json.dumps(json.dumps(verdict)) if verdict else repr('')}); sys.stderr.write({stderr!r}); sys.exit({exit_code})\n"
    )

    def command(*args, frames=None, **kwargs):
        if frames_seen is not None:
            frames_seen.append((frames, None if frames is None else np.load(frames)))
        return [sys.executable, "-c", script], None

    monkeypatch.setattr(auto_mod, "probe_command", command)
    return flag


def run_until(engine, done, batch, limit_s: float = 60.0) -> None:
    """Feed ``engine`` frames until ``done()`` (the verdict arrives on another thread)."""
    import time

    deadline = time.monotonic() + limit_s
    while not done() and time.monotonic() < deadline:
        engine.infer(batch)
        time.sleep(0.005)


INT8_VERDICT = {"engine": "ort", "precision": "int8", "reason": "test verdict: ort-int8 fastest verified"}


def test_first_start_on_an_int8_file_runs_it_as_it_is_and_says_so(tmp_path, monkeypatch, caplog):
    """An INT8 file given to --engine auto runs INT8 while it probes: no warning about a --precision
    fp32 the user never gave, and the stats' engine_selection names the precision that runs."""
    int8 = write_good_int8(write_brightness_model(tmp_path / "tiny.onnx", HW))
    fake_probe(monkeypatch, tmp_path, verdict=INT8_VERDICT)  # never let finish
    with caplog.at_level("INFO", logger="perception"):
        engine = auto_mod.load_auto(int8, EngineOptions(threads=1), background=True)
    try:
        assert isinstance(engine, SwitchingEngine)
        assert engine.precision == "int8" and engine.selection["precision"] == "int8"
        assert "ONNX Runtime INT8 runs meanwhile" in engine.selection["reason"]
        assert not [r for r in caplog.records if "--precision" in r.getMessage()]
    finally:
        engine.close()


def test_first_start_runs_fp32_at_once_and_switches_between_frames(tmp_path, monkeypatch, caplog):
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    sibling = write_good_int8(model)
    flag = fake_probe(monkeypatch, tmp_path, verdict=INT8_VERDICT)
    engine = auto_mod.load_auto(model, EngineOptions(threads=1), background=True)
    batch = np.full((1, *HW, 3), 200, np.uint8)
    try:
        assert isinstance(engine, SwitchingEngine)
        for _ in range(3):  # the verdict cannot have arrived: FP32 runs the first frames
            np.testing.assert_array_equal(engine.infer(batch)["class_ids"], expected_class_ids(batch))
        assert (engine.kind, engine.precision, engine.selection["state"]) == ("ort", "fp32", "probing")
        # It makes way for the winner: no memory arena, whose pages outlive the session.
        assert engine._current.session.get_session_options().enable_cpu_mem_arena is False
        flag.touch()
        with caplog.at_level("INFO", logger="perception.engines.auto"):
            run_until(engine, lambda: engine.precision == "int8", batch)
        assert engine.precision == "int8" and engine.model_path == str(sibling)
        assert engine.selection["reason"] == INT8_VERDICT["reason"] and engine.selection["state"] == "chosen"
        assert engine.selection["switched_after_runs"] == engine.switched_at_call >= 3
        assert engine.selection["switch_pause_ms"] >= 0 and engine.selection["switched_after_s"] > 0
        assert sum("switched from ort-fp32 to ort-int8" in r.getMessage() for r in caplog.records) == 1
        np.testing.assert_array_equal(engine.infer(batch)["class_ids"], expected_class_ids(batch))
    finally:
        engine.close()


def test_the_winner_runs_first_after_fp32_closed_and_fp32_returns_if_that_run_fails(tmp_path, monkeypatch, caplog):
    """The two engines' working memory is never held at once; a winner whose first run fails is
    dropped and ONNX Runtime FP32 is loaded again, with the reason published."""
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    write_good_int8(model)
    flag = fake_probe(monkeypatch, tmp_path, verdict=INT8_VERDICT)
    loaded, fp32_open_at_first_run = [], []
    real_load = probe_mod.load_candidate

    def load_failing(candidate, path, options):
        winner = real_load(candidate, path, options)
        loaded.append(winner)

        def first_run(batch):
            fp32_open_at_first_run.append(first_engine.session is not None)
            raise RuntimeError("out of memory in the first run")

        winner.infer = first_run
        return winner

    monkeypatch.setattr(probe_mod, "load_candidate", load_failing)
    engine = auto_mod.load_auto(model, EngineOptions(threads=1), background=True)
    first_engine = engine._current
    cached = tmp_path / "probe-cache" / f"{probe_cache.key_digest(engine._key)}.json"
    cached.parent.mkdir(exist_ok=True)
    cached.write_text("{}")  # where the real probe child caches its verdict
    batch = np.full((1, *HW, 3), 200, np.uint8)
    try:
        flag.touch()
        with caplog.at_level("WARNING", logger="perception.engines.auto"):
            run_until(engine, lambda: engine.selection["state"] != "probing", batch)
        assert fp32_open_at_first_run == [False]  # FP32 had closed before the winner's first run
        assert loaded[0].session is None  # the failed winner was closed
        assert (engine.kind, engine.precision, engine.selection["state"]) == ("ort", "fp32", "failed")
        assert "the probe chose ort-int8 but it failed to load or run here (out of memory in the first run)" in (
            engine.selection["reason"])
        assert any("ONNX Runtime FP32 keeps running" in r.getMessage() for r in caplog.records)
        assert engine._current is not first_engine  # loaded again
        np.testing.assert_array_equal(engine.infer(batch)["class_ids"], expected_class_ids(batch))
    finally:
        engine.close()
    assert not cached.exists()  # its verdict forgotten: the next start probes again


def test_a_failing_background_probe_leaves_fp32_running_and_says_why(tmp_path, monkeypatch, caplog):
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    write_good_int8(model)
    flag = fake_probe(monkeypatch, tmp_path, verdict=None, exit_code=3, stderr="probe exploded: out of memory\n")
    engine = auto_mod.load_auto(model, EngineOptions(threads=1), background=True)
    batch = np.full((1, *HW, 3), 90, np.uint8)
    try:
        flag.touch()
        with caplog.at_level("WARNING", logger="perception.engines.auto"):
            run_until(engine, lambda: engine.selection["state"] != "probing", batch)
        assert (engine.kind, engine.precision, engine.selection["state"]) == ("ort", "fp32", "failed")
        assert "status 3 (probe exploded: out of memory)" in engine.selection["reason"]
        assert any("ONNX Runtime FP32 keeps running" in r.getMessage() for r in caplog.records)
        np.testing.assert_array_equal(engine.infer(batch)["class_ids"], expected_class_ids(batch))
    finally:
        engine.close()
    assert not list((tmp_path / "probe-cache").glob("*.json"))  # nothing cached: the next start probes again


def test_a_cached_verdict_starts_on_the_winner_and_close_stops_a_running_probe(tmp_path, monkeypatch):
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    write_good_int8(model)
    fake_probe(monkeypatch, tmp_path, verdict=INT8_VERDICT)  # never let finish
    engine = auto_mod.load_auto(model, EngineOptions(threads=1), background=True)
    engine.close()  # stopped before its first frame: no probe child was ever started
    assert engine._proc is None and not engine._watcher.is_alive()
    engine = auto_mod.load_auto(model, EngineOptions(threads=1), background=True)
    run_until(engine, lambda: engine._proc is not None, np.full((1, *HW, 3), 200, np.uint8))
    child = engine._proc
    engine.close()
    assert child.poll() is not None  # the probe child was stopped with the node
    options = EngineOptions(threads=1)
    key = probe_cache.probe_key(model, options, auto_mod.cpu_candidates(model, options))
    probe_cache.write_cached(auto_mod.Selection(engine="ort", precision="int8", reason="cached verdict", key=key),
                             probe_cache.probe_cache_dir())
    engine = auto_mod.load_auto(model, options, background=True)
    assert not isinstance(engine, SwitchingEngine) and engine.precision == "int8"
    assert engine.selection["from_cache"] and engine.selection["reason"] == "cached verdict"
    engine.close()


def test_the_background_probe_judges_on_the_nodes_own_frames(tmp_path, monkeypatch):
    """The child gets every 10th non-blank model input of the node's first frames (16 of them) in a
    temporary .npy, removed when it ends: a real-road model is judged on the road it sees."""
    import time

    from perception.engines.switching import PROBE_FRAME_STRIDE as stride

    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    write_good_int8(model)
    seen: list = []
    flag = fake_probe(monkeypatch, tmp_path, verdict=INT8_VERDICT, frames_seen=seen)
    engine = auto_mod.load_auto(model, EngineOptions(threads=1), background=True)
    try:
        engine.infer(np.zeros((1, *HW, 3), np.uint8))  # a warm-up's blank frame is not the road
        for value in range(1, stride * probe_mod.PROBE_FRAMES + 10):
            engine.infer(np.full((1, *HW, 3), value, np.uint8))
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        path, frames = seen[0]
        assert frames.dtype == np.uint8 and frames.shape == (probe_mod.PROBE_FRAMES, *HW, 3)
        assert [int(f.max()) for f in frames] == list(range(1, stride * probe_mod.PROBE_FRAMES, stride))
        assert path.exists()
        flag.touch()
        run_until(engine, lambda: engine.precision == "int8", np.full((1, *HW, 3), 200, np.uint8))
        assert engine.precision == "int8"
        engine._watcher.join(10)
        assert not path.exists()  # the frames file goes with the child
    finally:
        engine.close()


def test_an_unwritable_temporary_folder_probes_on_rendered_scenes(tmp_path, monkeypatch, caplog):
    """The node's frames cannot be handed over: the probe still runs (on rendered scenes), with a
    warning naming the folder, and the node never stalls on it."""
    import tempfile
    import time

    from perception.engines import switching

    monkeypatch.setattr(switching, "PROBE_FRAME_STRIDE", 1)
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    write_good_int8(model)
    seen: list = []
    fake_probe(monkeypatch, tmp_path, verdict=INT8_VERDICT, frames_seen=seen)
    missing = tmp_path / "no-such-folder"
    monkeypatch.setattr(tempfile, "tempdir", str(missing))
    engine = auto_mod.load_auto(model, EngineOptions(threads=1), background=True)
    try:
        with caplog.at_level("WARNING", logger="perception.engines.auto"):
            for value in range(1, probe_mod.PROBE_FRAMES + 1):
                engine.infer(np.full((1, *HW, 3), value, np.uint8))
            deadline = time.monotonic() + 30
            while not seen and time.monotonic() < deadline:
                time.sleep(0.01)
        assert seen == [(None, None)]
        assert any(f"cannot write the probe's frames to {missing}" in r.getMessage() for r in caplog.records)
    finally:
        engine.close()


@pytest.mark.parametrize("frames_given", [2, 0])
def test_a_slow_camera_probes_on_the_frames_it_gave_or_on_rendered_scenes(tmp_path, monkeypatch, frames_given):
    """Short of 16 frames after PROBE_FRAMES_WAIT_S, the probe starts on what came; with none, on
    rendered road scenes (no frames file)."""
    import time

    from perception.engines import switching

    monkeypatch.setattr(switching, "PROBE_FRAMES_WAIT_S", 0.2)
    monkeypatch.setattr(switching, "PROBE_FRAME_STRIDE", 3)
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    write_good_int8(model)
    seen: list = []
    fake_probe(monkeypatch, tmp_path, verdict=INT8_VERDICT, frames_seen=seen)
    engine = auto_mod.load_auto(model, EngineOptions(threads=1), background=True)
    try:
        for value in (10, 20, 30, 40)[: 2 * frames_given]:
            engine.infer(np.full((1, *HW, 3), value, np.uint8))
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        path, frames = seen[0]
        if frames_given:
            assert [int(f.max()) for f in frames] == [10, 40]
        else:
            assert path is None and frames is None
        engine.infer(np.full((1, *HW, 3), 50, np.uint8))  # collecting has stopped: nothing more is kept
        assert engine._probe_frames == [] and len(seen) == 1
    finally:
        engine.close()


def test_the_node_switches_engines_mid_run_and_its_counts_balance(tmp_path, monkeypatch, capsys, free_tcp_port):
    """A first start with --engine auto publishes from the first frames on FP32, switches when the
    verdict arrives, and its final stats balance and name the engine it ended on."""
    import json
    import threading

    from perception.cli import main as cli_main

    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    write_good_int8(model)
    flag = fake_probe(monkeypatch, tmp_path, verdict=INT8_VERDICT)
    made: list = []
    real_init = SwitchingEngine.__init__

    def recording_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(SwitchingEngine, "__init__", recording_init)
    from perception.publish import MaskPublisher

    infos: list[dict] = []
    real_set_info = MaskPublisher.set_info
    monkeypatch.setattr(MaskPublisher, "set_info", lambda self, doc: (infos.append(doc), real_set_info(self, doc))[1])

    def release_then_stop():  # the verdict arrives after 5 runs; the node stops 20 runs after the switch
        import os
        import signal
        import time

        deadline = time.monotonic() + 60
        while not (made and made[0].calls >= 5) and time.monotonic() < deadline:
            time.sleep(0.01)
        flag.touch()
        while not (made and made[0].switched_at_call is not None) and time.monotonic() < deadline:
            time.sleep(0.01)
        switched = made[0].switched_at_call or 0
        while made[0].calls < switched + 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)  # the node's own clean stop

    threading.Thread(target=release_then_stop, daemon=True).start()
    code = cli_main(["run", "--engine", "auto", "--model", str(model), "--source", "synthetic", "--width", "64",
                     "--height", "48", "--fps", "100", "--queue", "lossless", "--threads", "1",
                     "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"])
    assert code == 0
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert final["end_reason"] == "signal SIGINT" and final["balanced"], final
    assert final["published"] > 20 and final["dropped"] == 0  # lossless; balanced counts the frames in flight
    assert (final["engine"], final["precision"]) == ("ort", "int8"), final["engine_selection"]
    assert final["engine_selection"]["switched_after_runs"] >= 5
    # The latched <ns>/info follows the engine: a late subscriber reads the model that makes the masks.
    ids = [doc["model_id"] for doc in infos]
    assert ids[0] != ids[-1] and ids[-1] == final["model_id"], ids


def test_probe_key_versions_equal_importlib_metadata():
    """The probe key reads versions from dist-info folder names (no importlib.metadata at start-up)."""
    import importlib.metadata

    for dist in ("onnxruntime", "numpy", "perception", "pyzmq", "opencv-python", "no-such-dist-xyz"):
        try:
            want = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            want = "absent"
        assert probe_cache._version(dist) == want, dist


def test_an_int8_file_is_held_to_the_agreement_its_gate_measured(tmp_path):
    """An INT8 sibling that records a passed mIoU gate is held to the class-id agreement that gate
    measured (less INT8_AGREEMENT_MARGIN), not to MIN_AGREEMENT; a broken file still fails, and a
    failed or missing gate changes nothing."""
    from perception.modelfile import record_metadata

    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    sibling = write_broken_int8(model)
    int8 = auto_mod.Candidate("ort", "int8")
    assert probe_mod.candidate_min_agreement(int8, model, 0.995) == 0.995  # no gate recorded
    record_metadata(sibling, val_metrics={"int8_gate": {"passed": True, "agreement_with_fp32": 0.99}})
    assert probe_mod.candidate_min_agreement(int8, model, 0.995) == pytest.approx(0.99 - probe_mod.INT8_AGREEMENT_MARGIN)
    assert probe_mod.candidate_min_agreement(auto_mod.Candidate("ort", "fp32"), model, 0.995) == 0.995
    selection = auto_mod.select_engine(model, EngineOptions(threads=1, precision="auto"), cache_dir=tmp_path / "probe")
    by_label = {r.label: r for r in selection.results}
    assert not by_label["ort-int8"].eligible and by_label["ort-int8"].min_agreement == pytest.approx(0.985)
    record_metadata(sibling, val_metrics={"int8_gate": {"passed": False, "agreement_with_fp32": 0.2}})
    assert probe_mod.candidate_min_agreement(int8, model, 0.995) == 0.995  # a failed gate sets nothing
    # A correct INT8 file is held to its own gate and chosen under it (said in the reason).
    write_good_int8(model)
    record_metadata(sibling, val_metrics={"int8_gate": {"passed": True, "agreement_with_fp32": 0.97}})
    selection = auto_mod.select_engine(model, EngineOptions(threads=1, precision="int8"), cache_dir=tmp_path / "probe")
    result = {r.label: r for r in selection.results}["ort-int8"]
    assert result.eligible and result.min_agreement == pytest.approx(0.965)
    assert "from its INT8 gate" in selection.reason
