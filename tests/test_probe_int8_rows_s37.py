"""``--engine auto`` on an INT8 model file: the reference's row in ``engine_selection.results`` (the
stats document, the cached verdict, ``bench probe``) says what ran, ``ort``/``int8``, as the reason
and the log lines do; the verdict and its cache key keep the candidate it is keyed under
(``ort-fp32``), so verdicts cached before still load (s36 leftover; s37 f2).
"""

from __future__ import annotations

import json

import pytest
from test_engines_cpu import HW, write_good_int8
from tiny_models import write_brightness_model

from perception.cli import main
from perception.engines import EngineOptions, probe_cache, probe_verdict
from perception.engines import auto as auto_mod
from perception.engines import probe as probe_mod


@pytest.fixture
def int8_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PERCEPTION_OPENVINO_CACHE", str(tmp_path / "ov-cache"))
    monkeypatch.setenv("PERCEPTION_PROBE_CACHE", str(tmp_path / "probe-cache"))
    monkeypatch.setenv("PERCEPTION_ORT_CACHE", "off")
    monkeypatch.setattr(auto_mod, "openvino_offers", lambda: (False, False))  # ONNX Runtime alone: a short probe
    return write_good_int8(write_brightness_model(tmp_path / "tiny.onnx", HW))


def _rows(doc: dict) -> list[str]:
    return [f"{r['engine']}-{r['precision']}" for r in doc["results"]]


def test_the_cached_and_published_rows_name_the_int8_reference_by_what_ran(int8_file, tmp_path, capsys):
    cache = tmp_path / "probe-cache"
    assert main(["bench", "probe", str(int8_file), "--threads", "1", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "ort-fp32" not in out, out
    options = EngineOptions(threads=1)
    key = probe_cache.probe_key(int8_file, options, auto_mod.cpu_candidates(int8_file, options))
    assert key["candidates"] == ["ort-fp32"]  # the cache key is as before
    (path,) = cache.glob("*.json")
    stored = json.loads(path.read_text())
    assert _rows(stored) == ["ort-int8"], stored["results"]
    assert (stored["engine"], stored["precision"]) == ("ort", "fp32")  # the verdict keeps its keyed candidate
    assert "ort-fp32" not in json.dumps({k: v for k, v in stored.items() if k != "key"})  # the key keeps its recipe

    # The node reads that cache: its stats document's engine_selection says int8 throughout.
    engine = auto_mod.load_auto(int8_file, options)
    try:
        selection = engine.selection
        assert selection["precision"] == "int8" and _rows(selection) == ["ort-int8"], selection
        assert "ort-fp32" not in json.dumps({k: v for k, v in selection.items() if k != "key"}), selection
    finally:
        engine.close()


def test_an_fp32_file_keeps_its_reference_row_as_ort_fp32(tmp_path):
    rows = [probe_verdict.CandidateResult("ort", "fp32", 1.0, 1.0, True),
            probe_verdict.CandidateResult("ort", "int8", 0.8)]
    assert [r.label for r in probe_verdict.shown_results(rows, "fp32")] == ["ort-fp32", "ort-int8"]
    assert [r.label for r in probe_verdict.shown_results(rows[:1], "int8")] == ["ort-int8"]
    assert rows[0].precision == "fp32"  # the probe's own rows are left as measured


def test_no_engine_ran_an_int8_file_names_its_reference_by_what_ran(int8_file, monkeypatch):
    from perception.errors import ModelError

    frames = probe_mod.probe_frames(HW, 2)
    real = probe_mod.load_candidate
    calls = []

    def failing_candidate(candidate, model_path, options):
        calls.append(candidate)
        if len(calls) > 1:  # the reference loads for the expected ids; as a candidate it fails
            raise RuntimeError("boom")
        return real(candidate, model_path, options)

    monkeypatch.setattr(probe_mod, "load_candidate", failing_candidate)
    with pytest.raises(ModelError) as caught:
        probe_mod.run_probe(int8_file, EngineOptions(threads=1), [probe_verdict.Candidate(*probe_verdict.REFERENCE)],
                            frames, runs=1)
    assert "(ort-int8: " in str(caught.value) and "ort-fp32" not in str(caught.value), caught.value


def test_a_background_probe_that_keeps_the_reference_on_an_int8_file_says_int8(int8_file, tmp_path, monkeypatch):
    """The stats document's ``engine_selection.precision`` after the background probe kept the
    reference: what runs (int8), as the foreground probe says it (was fp32)."""
    import numpy as np
    from test_engines_cpu import fake_probe, run_until

    monkeypatch.setenv("PERCEPTION_OPENVINO_CACHE", str(tmp_path / "ov-cache"))
    monkeypatch.setenv("PERCEPTION_PROBE_CACHE", str(tmp_path / "probe-cache"))
    monkeypatch.setattr(auto_mod, "openvino_offers", lambda: (True, False))
    flag = fake_probe(monkeypatch, tmp_path, verdict={"engine": "ort", "precision": "fp32", "reason": "test",
                                                      "results": [{"engine": "ort", "precision": "int8", "p50_ms": 1.0}]})
    engine = auto_mod.load_auto(int8_file, EngineOptions(threads=1), background=True)
    try:
        assert engine.selection["state"] == "probing" and engine.selection["precision"] == "int8"
        flag.touch()
        run_until(engine, lambda: engine.selection["state"] != "probing", np.full((1, *HW, 3), 200, np.uint8))
        assert engine.selection["state"] == "chosen"
        assert (engine.selection["engine"], engine.selection["precision"], engine.precision) == ("ort", "int8", "int8")
    finally:
        engine.close()
