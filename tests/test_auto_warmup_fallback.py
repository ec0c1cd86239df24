"""``--engine auto``: a verdict's winner that loads but fails its first inference (the warm-up's
first run) is treated as one that fails to load: one warning naming the engine and the error,
ONNX Runtime FP32 runs and publishes, the stats' ``engine_selection`` says so, and the verdict is
forgotten so that the next start probes again. Tiny models (tests/tiny_models.py), no OpenVINO."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_models import expected_class_ids, tiny_metadata, write_brightness_model

from perception.engines import EngineOptions, probe_cache
from perception.engines import auto as auto_mod
from perception.errors import ModelError

HW = (48, 64)
ERROR = "a kernel failed in the first run"


@pytest.fixture(autouse=True)
def _private_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("PERCEPTION_OPENVINO_CACHE", str(tmp_path / "ov-cache"))
    monkeypatch.setenv("PERCEPTION_PROBE_CACHE", str(tmp_path / "probe-cache"))
    monkeypatch.setenv("PERCEPTION_ORT_CACHE", "off")
    monkeypatch.setattr(auto_mod, "openvino_offers", lambda: (False, False))  # candidates: ort fp32 and int8


def model_with_int8(tmp_path: Path) -> Path:
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    write_brightness_model(tmp_path / "tiny.int8.onnx", HW, metadata=tiny_metadata(HW, precision="int8"))
    return model


def cached_int8_verdict(model: Path, options: EngineOptions) -> Path:
    """The verdict a probe would cache for ``model``: ONNX Runtime INT8 won."""
    key = probe_cache.probe_key(model, options, auto_mod.cpu_candidates(model, options))
    doc = auto_mod.Selection(engine="ort", precision="int8", reason="ort-int8: fastest verified", key=key).to_dict()
    path = probe_cache.cache_path(key, probe_cache.probe_cache_dir())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def int8_that_cannot_run(monkeypatch) -> list:
    """The INT8 winner loads, then every inference on it raises; returns the engines it loaded."""
    real_load = auto_mod.load_candidate
    loaded = []

    def load(candidate, path, options):
        engine = real_load(candidate, path, options)
        if candidate.precision == "int8":
            def infer(batch):
                raise RuntimeError(ERROR)

            engine.infer = infer
            loaded.append(engine)
        return engine

    monkeypatch.setattr(auto_mod, "load_candidate", load)
    return loaded


def test_a_cached_winner_that_fails_its_first_inference_leaves_the_node_publishing(
        tmp_path, monkeypatch, caplog, capsys, free_tcp_port):
    from perception.cli import main as cli_main

    model = model_with_int8(tmp_path)
    path = cached_int8_verdict(model, EngineOptions(provider="auto", threads=1))
    loaded = int8_that_cannot_run(monkeypatch)
    with caplog.at_level("WARNING"):
        code = cli_main(["run", "--engine", "auto", "--model", str(model), "--source", "synthetic", "--width", "64",
                         "--height", "48", "--threads", "1", "--duration", "0.5",
                         "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"])
    assert code == 0
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (final["engine"], final["precision"]) == ("ort", "fp32") and final["published"] > 0
    selection = final["engine_selection"]  # what really runs, and why
    assert (selection["engine"], selection["precision"], selection["state"]) == ("ort", "fp32", "failed")
    assert f"chose ort-int8 but its first inference failed here (RuntimeError: {ERROR})" in selection["reason"]
    assert selection["reason"].endswith("ONNX Runtime FP32 kept")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert warnings[0] == (f"--engine auto: the cached verdict {path} chose ort-int8 but its first inference failed "
                           f"here (RuntimeError: {ERROR}); running ONNX Runtime FP32 (the next start probes again)")
    assert len(loaded) == 1 and loaded[0].session is None  # the failed winner was closed
    assert not path.exists()  # forgotten: the next start probes again
    assert auto_mod.cached_selection(model, EngineOptions(provider="auto", threads=1)) is None


def test_streams_auto_falls_back_to_one_frame_in_flight(tmp_path, monkeypatch):
    model = model_with_int8(tmp_path)
    options = EngineOptions(provider="auto", threads=1, streams="auto")
    path = cached_int8_verdict(model, options)
    int8_that_cannot_run(monkeypatch)
    engine = auto_mod.load_auto(model, options, background=True, cached=auto_mod.cached_selection(model, options))
    try:
        assert (engine.kind, engine.precision, engine.streams) == ("ort", "fp32", 1)
        assert engine.selection["state"] == "failed"
        batch = np.full((1, *HW, 3), 200, np.uint8)
        np.testing.assert_array_equal(engine.infer(batch)["class_ids"], expected_class_ids(batch))
    finally:
        engine.close()
    assert not path.exists()


def test_a_forced_precision_has_no_fp32_to_run_and_says_which_verdict_failed(tmp_path, monkeypatch):
    model = model_with_int8(tmp_path)
    forced = EngineOptions(provider="auto", threads=1, precision="int8")
    path = cached_int8_verdict(model, forced)
    int8_that_cannot_run(monkeypatch)
    with pytest.raises(ModelError) as info:
        auto_mod.load_auto(model, forced, background=True)
    message = str(info.value)
    assert message == (f"--engine auto --precision int8: the cached verdict {path} chose ort-int8 but its first "
                       f"inference failed here (RuntimeError: {ERROR}); it is forgotten, so the next start probes again")
    assert not path.exists()


def test_a_forced_precision_refused_memory_at_its_first_inference_is_a_resource_error(tmp_path, monkeypatch):
    """ONNX Runtime's refused memory under a forced precision was a ModelError (exit 2: a bad model,
    never respawned by launch); it is the system's limit (exit 1), named as such."""
    from test_deploy_env_s40 import NO_MEMORY

    from perception.errors import ResourceError

    model = model_with_int8(tmp_path)
    forced = EngineOptions(provider="auto", threads=1, precision="int8")
    path = cached_int8_verdict(model, forced)
    monkeypatch.setitem(globals(), "ERROR", NO_MEMORY)  # what int8_that_cannot_run raises
    int8_that_cannot_run(monkeypatch)
    with pytest.raises(ResourceError) as info:
        auto_mod.load_auto(model, forced, background=True)
    assert info.value.exit_code == 1
    message = str(info.value)
    assert message.startswith("--engine auto --precision int8: out of memory while running the first inference of "
                              "tiny.int8.onnx on ort (") and "Failed to allocate" in message, message
    assert "free memory" in message and "re-export" not in message, message
    assert path.exists()  # the verdict is not at fault: kept
