"""The engines under a container's limits (hunt H40): a probe child the OOM killer takes first and
that is said to have been killed (H1); OpenVINO's refused thread or memory as the one-line
ResourceError, exit 1 (H2); a verdict made while a candidate was refused is not cached, and
OpenVINO's reasons say something (H3); the verdict cache key holds the usable cores (M4).
Refusals are simulated (monkeypatched backends, a child that SIGKILLs itself); tiny models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_auto_warmup_fallback import HW, _private_caches, model_with_int8  # noqa: F401 - an autouse fixture
from tiny_models import write_brightness_model

from perception.engines import EngineOptions, probe, probe_cache, probe_verdict
from perception.engines import auto as auto_mod
from perception.engines.switching import SwitchingEngine
from perception.errors import DependencyError, ModelError, ResourceError

#: OpenVINO's words when the system refused its CPU plugin a thread (pids.max reached), as H40 saw them.
OV_THREAD_REFUSED = ("Exception from src/inference/src/cpp/core.cpp:268:\n"
                     "Exception from src/inference/src/dev/plugin.cpp:53:\n"
                     "Failed to create plugin libopenvino_intel_cpu_plugin.so for device CPU\n"
                     "Resource temporarily unavailable\n")


def killed_child(monkeypatch, tmp_path) -> Path:
    """The probe child replaced by one that writes its oom_score_adj, then dies by SIGKILL (as the
    OOM killer ends it); returns the file it writes."""
    seen = tmp_path / "oom_score_adj"
    script = (f"import os, pathlib, signal\npathlib.Path({str(seen)!r}).write_text(open('/proc/self/oom_score_adj').read())\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    monkeypatch.setattr(auto_mod, "probe_command", lambda *a, **k: ([sys.executable, "-c", script], None))
    return seen


# ---- H1: the probe child, not the node, is what the OOM killer takes, and its death is said so ------------


def test_the_probe_preexec_puts_the_child_first_for_the_oom_killer():
    done = subprocess.run([sys.executable, "-c", "print(open('/proc/self/oom_score_adj').read())"],
                          capture_output=True, text=True, preexec_fn=auto_mod.probe_preexec(), timeout=30)
    assert done.stdout.strip() == "1000"


def test_a_background_probe_killed_by_sigkill_is_said_so_and_the_next_starts_do_not_probe(tmp_path, monkeypatch,
                                                                                           caplog):
    model = model_with_int8(tmp_path)
    seen = killed_child(monkeypatch, tmp_path)
    monkeypatch.setattr("perception.engines.switching.PROBE_FRAMES_WAIT_S", 0.0)
    options = EngineOptions(threads=1)
    with caplog.at_level("WARNING", logger="perception.engines.auto"):
        engine = auto_mod.load_auto(model, options, background=True)
        try:
            assert isinstance(engine, SwitchingEngine)
            engine._watcher.join(30)
            assert engine.selection["state"] == "failed" and engine.kind == "ort"  # the node runs on
            batch = np.full((1, *HW, 3), 200, np.uint8)
            assert engine.infer(batch)["class_ids"].shape == (1, *HW)
        finally:
            engine.close()
    assert seen.read_text().strip() == "1000"
    warned = [r.getMessage() for r in caplog.records]
    assert any("killed (SIGKILL, most likely the kernel's OOM killer: the probe needs more memory than is free)" in w
               and "run it without probing" in w and "perception bench probe" in w for w in warned), warned
    assert not any("status -9" in w for w in warned), warned
    # The next start neither probes nor dies: ONNX Runtime FP32, and the reason says why.
    monkeypatch.setattr(auto_mod, "probe_command", lambda *a, **k: pytest.fail("probed again"))
    caplog.clear()
    with caplog.at_level("WARNING", logger="perception.engines.auto"):
        again = auto_mod.load_auto(model, options, background=True)
    try:
        assert not isinstance(again, SwitchingEngine) and again.kind == "ort"
        assert again.selection["state"] == "failed" and "runs without probing" in again.selection["reason"]
        assert sum("was killed (SIGKILL" in r.getMessage() for r in caplog.records) == 1
    finally:
        again.close()


def test_a_foreground_probe_killed_by_sigkill_is_a_resource_error_not_status_minus_9(tmp_path, monkeypatch):
    model = model_with_int8(tmp_path)
    seen = killed_child(monkeypatch, tmp_path)
    with pytest.raises(ResourceError, match=r"killed \(SIGKILL, most likely the kernel's OOM killer") as caught:
        auto_mod.probe_in_child(model, EngineOptions(threads=1), tmp_path / "probe-cache", {"k": 1})
    assert caught.value.exit_code == 1 and "status" not in str(caught.value) and "\n" not in str(caught.value)
    assert seen.read_text().strip() == "1000"


# ---- H2: OpenVINO's refused thread or memory is ResourceError (exit 1), not ModelError or a traceback -----


class _Core:
    """OpenVINO's Core, whose ``compile_model`` or ``get_property`` raises ``error`` (the rest is the real one's)."""

    def __init__(self, real, *, compile_error: str = "", property_error: str = "") -> None:
        self._real, self._compile_error, self._property_error = real, compile_error, property_error

    def __getattr__(self, name):
        return getattr(self._real, name)

    def compile_model(self, *args, **kwargs):
        if self._compile_error:
            raise RuntimeError(self._compile_error)
        return self._real.compile_model(*args, **kwargs)

    def get_property(self, *args):
        if self._property_error:
            raise RuntimeError(self._property_error)
        return self._real.get_property(*args)


def test_openvino_refused_a_thread_while_compiling_is_a_resource_error(tmp_path, monkeypatch):
    ov = pytest.importorskip("perception.engines.openvino")
    pytest.importorskip("openvino")
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    real = ov.shared_core()
    monkeypatch.setattr(ov, "shared_core", lambda: _Core(real, compile_error=OV_THREAD_REFUSED))
    with pytest.raises(ResourceError) as caught:
        ov.OpenVinoEngine(model, EngineOptions(threads=1))
    text = str(caught.value)
    assert not isinstance(caught.value, ModelError) and caught.value.exit_code == 1
    assert text.startswith("cannot start the threads for compiling tiny.onnx on OpenVINO: the system refused a new "
                           "thread") and "\n" not in text
    # any other compile failure stays the file's (ModelError), with OpenVINO's words, not its source lines
    monkeypatch.setattr(ov, "shared_core", lambda: _Core(real, compile_error="Exception from src/x.cpp:1:\nbad op Foo"))
    with pytest.raises(ModelError, match=r"at f32: bad op Foo; try --engine ort"):
        ov.OpenVinoEngine(model, EngineOptions(threads=1))


def test_openvino_cpu_capabilities_refused_a_thread_is_one_line_not_a_traceback(monkeypatch):
    ov = pytest.importorskip("perception.engines.openvino")
    pytest.importorskip("openvino")
    real = ov.shared_core()
    monkeypatch.setattr(ov, "shared_core", lambda: _Core(real, property_error=OV_THREAD_REFUSED))
    with pytest.raises(ResourceError, match=r"^cannot start the threads for starting OpenVINO's CPU plugin: the system "
                                            r"refused a new thread") as caught:
        ov.cpu_capabilities()
    assert caught.value.exit_code == 1
    monkeypatch.setattr(ov, "shared_core", lambda: _Core(real, property_error="Exception from src/a.cpp:9:\nno CPU"))
    with pytest.raises(DependencyError, match=r"^OpenVINO cannot start its CPU plugin: no CPU; try --engine ort$"):
        ov.cpu_capabilities()


# ---- H3: a verdict made while the system refused a candidate is for this start only --------------------------


def refuse_int8(monkeypatch, error: BaseException) -> None:
    real = probe.load_candidate

    def load(candidate, path, options):
        if candidate.precision == "int8":
            raise error
        return real(candidate, path, options)

    monkeypatch.setattr(probe, "load_candidate", load)


@pytest.mark.parametrize("error", [
    ResourceError("cannot start the threads for loading tiny.int8.onnx on ONNX Runtime: the system refused a new "
                  "thread; raise the limit it reached"),
    RuntimeError(OV_THREAD_REFUSED),  # a backend's own words (a first inference, say)
], ids=["ResourceError", "RuntimeError"])
def test_a_verdict_with_a_refused_candidate_is_not_cached_and_says_so(tmp_path, monkeypatch, error):
    model = model_with_int8(tmp_path)
    options = EngineOptions(provider="cpu", threads=1)
    cache_dir = tmp_path / "probe-cache"
    refuse_int8(monkeypatch, error)
    selection = auto_mod.select_engine(model, options, cache_dir=cache_dir)
    assert (selection.engine, selection.precision) == ("ort", "fp32")
    assert "not cached: the system refused a thread or memory to ort-int8, so" in selection.reason
    assert "the next start probes again" in selection.uncached
    assert not probe_cache.cache_path(selection.key, cache_dir).exists()
    assert "nothing written in" in probe_verdict.describe(selection, model, 1, cache_dir)
    # the limit is gone: the next probe tries INT8 again, and that verdict is cached
    monkeypatch.undo()
    monkeypatch.setattr(auto_mod, "openvino_offers", lambda: (False, False))
    monkeypatch.setenv("PERCEPTION_ORT_CACHE", "off")
    again = auto_mod.select_engine(model, options, cache_dir=cache_dir)
    assert not again.uncached and not again.from_cache
    assert not any(r.error for r in again.results)
    assert probe_cache.cache_path(again.key, cache_dir).exists()


def test_an_openvino_reason_says_more_than_where_it_raised():
    assert probe.candidate_error(RuntimeError("Exception from src/inference/src/cpp/core.cpp:268:\n"
                                              "Exception from src/plugins/intel_cpu/src/node.cpp:12:\n"
                                              "Unsupported operation Foo")) == "Unsupported operation Foo"
    refused = ResourceError("cannot start the threads for compiling m.onnx on OpenVINO: the system refused a new "
                            "thread; raise the limit it reached, the processes and threads of this user")
    assert probe.candidate_error(refused) == ("cannot start the threads for compiling m.onnx on OpenVINO: the system "
                                              "refused a new thread")


# ---- M4: the verdict cache key holds the cores this process may use ---------------------------------------------


def test_a_verdict_probed_on_two_cores_is_not_reused_on_one(tmp_path, monkeypatch):
    model = model_with_int8(tmp_path)
    options = EngineOptions(threads=0)
    candidates = auto_mod.cpu_candidates(model, options)
    cache_dir = tmp_path / "probe-cache"
    monkeypatch.setattr(probe_cache, "usable_cores", lambda: 2)
    two = probe_cache.probe_key(model, options, candidates)
    doc = probe_verdict.Selection(engine="ort", precision="int8", reason="probed on 2 cores", key=two, streams=2)
    probe_cache.write_cached(doc, cache_dir)
    assert probe_cache.read_cached(two, cache_dir) is not None
    monkeypatch.setattr(probe_cache, "usable_cores", lambda: 1)
    one = probe_cache.probe_key(model, options, candidates)
    assert one["cores"] == 1 and two["cores"] == 2
    assert probe_cache.read_cached(one, cache_dir) is None  # a new probe, no error
    assert json.loads(probe_cache.cache_path(two, cache_dir).read_text())["key"]["cores"] == 2


def test_no_background_probe_is_begun_without_the_memory_room_it_takes(tmp_path, monkeypatch, caplog):
    """H40 H1 at 300 MB: the node alone nearly fills the limit, and a probe beside it got one of the
    two OOM-killed. Under a memory cgroup with less room than a probe takes, none is begun: said at
    the start, where no probe is promised; or, the room gone by the time the probe would begin
    (the node has grown), said then."""
    from perception import cgroups

    model = model_with_int8(tmp_path)
    monkeypatch.setattr("perception.engines.switching.PROBE_FRAMES_WAIT_S", 0.0)
    monkeypatch.setattr(auto_mod, "probe_command", lambda *a, **k: pytest.fail("a probe was begun"))
    batch = np.full((1, *HW, 3), 200, np.uint8)
    short = "not probing: this cgroup's memory limit leaves 40 MiB, and a probe takes about 512 MiB"
    monkeypatch.setattr(cgroups, "memory_headroom_bytes", lambda: 40 * 2**20)
    with caplog.at_level("INFO", logger="perception.engines.auto"):
        engine = auto_mod.load_auto(model, EngineOptions(threads=1), background=True)
    try:
        assert not isinstance(engine, SwitchingEngine) and engine.kind == "ort"
        assert engine.selection["state"] == "failed" and short in engine.selection["reason"]
        assert engine.infer(batch)["class_ids"].shape == (1, *HW)
    finally:
        engine.close()
    said = [r.getMessage() for r in caplog.records]
    assert not any("in the background" in m for m in said), said  # no probe promised
    assert any(short in m and "perception bench probe" in m for m in said), said
    caplog.clear()
    rooms = iter([900 * 2**20])  # room at the start, none when the probe would begin
    monkeypatch.setattr(cgroups, "memory_headroom_bytes", lambda: next(rooms, 40 * 2**20))
    with caplog.at_level("WARNING", logger="perception.engines.auto"):
        engine = auto_mod.load_auto(model, EngineOptions(threads=1), background=True)
        try:
            assert isinstance(engine, SwitchingEngine)
            engine._watcher.join(30)
            assert engine.selection["state"] == "failed" and engine.kind == "ort"
            assert engine.infer(batch)["class_ids"].shape == (1, *HW)
        finally:
            engine.close()
    assert any(short in r.getMessage() for r in caplog.records)


def test_a_verdict_is_keyed_to_the_engines_code_and_old_ones_are_pruned(tmp_path, monkeypatch):
    """H43 F3: perception's version stays 0.1.0 between commits, so a checkout updated in place
    reused a verdict that older code had made; and a verdict no key asks for was never removed."""
    import os
    import time

    from perception.engines import probe_cache
    from perception.engines.probe_verdict import Selection

    model = model_with_int8(tmp_path)
    options = EngineOptions(threads=1)
    key = probe_cache.probe_key(model, options, auto_mod.cpu_candidates(model, options))
    assert key["code"] == probe_cache.engines_code_digest() and len(key["code"]) == 16
    cache_dir = tmp_path / "verdicts"
    cache_dir.mkdir(mode=0o700)
    old = time.time() - 3600
    for i in range(probe_cache.MAX_VERDICTS + 5):  # verdicts of keys no start asks for any more
        stale = cache_dir / f"{i:032x}.json"
        stale.write_text("{}")
        os.utime(stale, (old + i, old + i))
    probe_cache.write_cached(Selection(engine="ort", precision="fp32", reason="r", key=key), cache_dir)
    left = sorted(p.name for p in cache_dir.glob("*.json"))
    assert len(left) == probe_cache.MAX_VERDICTS and probe_cache.cache_path(key, cache_dir).name in left
    assert f"{0:032x}.json" not in left  # the oldest went first
    assert probe_cache.read_cached(key, cache_dir) is not None
    assert probe_cache.read_cached({**key, "code": "0" * 16}, cache_dir) is None  # other code: probed again
