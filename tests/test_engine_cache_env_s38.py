"""The engines' caches under hostile process environments (H18's findings H1, M1, M5, M7, L3, L4, L7):
a cache folder that exists but cannot be written, a model path that is not valid UTF-8, no home
folder, a umask that opens the caches to everyone and entries planted by another user, ONNX
Runtime's own telemetry warning, the probe child's cache warnings, and the ONNX Runtime cache's size.
A cache is never the reason a node does not start: each case is one warning, and the engine runs
without that cache. Tiny models (tests/tiny_models.py)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import pwd
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from tiny_models import expected_class_ids, tiny_metadata, write_brightness_model, write_upsampling_model

from perception.engines import EngineOptions, load_engine, probe_cache
from perception.engines import auto as auto_mod
from perception.engines import cache as cache_mod
from perception.engines import ort as ort_mod
from perception.errors import ConfigError, ModelError

HW = (48, 64)
CPU = EngineOptions(provider="cpu", threads=1)
FF = os.fsdecode(b"\xff")  # a byte that is not UTF-8, as a FAT or Latin-1 file name brings it
BATCH = np.random.default_rng(0).integers(0, 256, (1, *HW, 3), dtype=np.uint8)


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    """Each test sees the cache warnings its process would say (they are said once per process)."""
    monkeypatch.setattr(cache_mod, "_warned", set())


def cache_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == cache_mod.__name__ and r.levelno >= logging.WARNING]


def node(model: Path, cache: Path, prefix: list[str] = (), preexec_fn=None) -> subprocess.CompletedProcess:
    """``perception run`` on the tiny model, two frames, with ``cache`` as its ONNX Runtime cache."""
    env = dict(os.environ, PERCEPTION_ORT_CACHE=str(cache), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(
        [*prefix, sys.executable, "-m", "perception", "run", "--model", str(model), "--source", "synthetic",
         "--width", "64", "--height", "48", "--threads", "1", "--max-frames", "2", "--endpoint", "tcp://127.0.0.1:*"],
        capture_output=True, text=True, timeout=180, env=env, preexec_fn=preexec_fn)


def assert_ran_with_one_cache_warning(done: subprocess.CompletedProcess, cache: Path, cause: str) -> None:
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    # stdout carries the run's JSON stats and nothing else (ONNX Runtime's fall-back banner went there)
    lines = done.stdout.splitlines()
    assert lines and all(isinstance(json.loads(line), dict) for line in lines), done.stdout[:1000]
    assert json.loads(lines[-1])["published"] == 2
    warned = [line for line in done.stderr.splitlines() if "ONNX Runtime cache" in line]
    assert len(warned) == 1, done.stderr[-2000:]
    assert f"cannot write the ONNX Runtime cache {cache} ({cause}" in warned[0]
    assert warned[0].endswith("graphs are optimised at every start")
    assert "re-export" not in done.stderr
    assert list(cache.iterdir()) == []  # nothing left behind (a 0-byte .tmp graph was)


# ---- H1: a cache folder that exists but cannot be written ---------------------------------------------------


def test_an_ort_cache_folder_without_write_permission_is_one_warning_and_the_node_runs(tiny_model_path, tmp_path,
                                                                                          permission_bound):
    cache = tmp_path / "ort"
    cache.mkdir(mode=0o700)
    cache.chmod(0o500)  # this user's, read-only to it (a read-only bind mount or rootfs does the same)
    try:
        done = node(tiny_model_path, cache, permission_bound)
    finally:
        cache.chmod(0o700)
    assert_ran_with_one_cache_warning(done, cache, "permission denied")


def test_an_optimised_graph_that_cannot_be_written_is_one_warning_and_no_leftover(tiny_model_path, tmp_path):
    """ONNX Runtime's own write of the graph fails (as on a full disk, here a file size limit): the
    session is made again without the cache, and its temporary file is removed."""
    cache = tmp_path / "ort"
    cache.mkdir(mode=0o700)

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))

    done = node(tiny_model_path, cache, preexec_fn=small_files)
    assert_ran_with_one_cache_warning(done, cache, "")


# ---- M1: a model path that is not valid UTF-8 ----------------------------------------------------------------


@pytest.mark.parametrize("cached", [True, False])
def test_an_ort_model_whose_name_is_not_utf8_runs_and_its_cache_entry_is_named_by_its_key(tmp_path, monkeypatch,
                                                                                           caplog, cached):
    cache = tmp_path / "cache"
    monkeypatch.setenv("PERCEPTION_ORT_CACHE", str(cache) if cached else "off")
    model = write_brightness_model(tmp_path / f"m_{FF}.onnx", HW)
    for _ in range(2):  # the second start reads the cache entry
        engine = load_engine("ort", model, CPU)
        assert np.array_equal(engine.infer(BATCH)["class_ids"], expected_class_ids(BATCH))
    assert cache_warnings(caplog) == []
    if cached:
        names = [p.name for p in cache.iterdir()]
        assert len(names) == 1 and names[0].isascii() and "m_" not in names[0], names


def test_a_split_model_whose_path_is_not_utf8_is_one_line_saying_to_rename_it(tmp_path):
    model = write_upsampling_model(tmp_path / "a.onnx", HW)
    folder = tmp_path / "ext"
    folder.mkdir()
    onnx.save_model(onnx.load(str(model)), str(folder / "m.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="m.onnx.data", size_threshold=0)
    split = folder.rename(tmp_path / f"ext_{FF}") / "m.onnx"  # (onnx cannot write it there)
    with pytest.raises(ModelError) as info:
        load_engine("ort", split, CPU)
    message = str(info.value)
    assert "\n" not in message and "is not valid UTF-8" in message and "rename the file" in message
    assert "re-export" not in message and "incompatible function arguments" not in message


def test_a_utf8_model_name_under_an_ascii_locale_keeps_its_cache_entry(tmp_path):
    """``PYTHONUTF8=0 LC_ALL=C``: Python reads the name ``m_ñ`` as surrogates, which the cache entry's
    name carried to ONNX Runtime: the entry was taken for damaged and removed at every start."""
    cache = tmp_path / "cache"
    model = write_brightness_model(tmp_path / "m_\u00f1.onnx", HW)
    script = ("import sys; from perception.engines import EngineOptions, load_engine\n"
              "for _ in range(2): load_engine('ort', sys.argv[1], EngineOptions(provider='cpu', threads=1))\n")
    env = dict(os.environ, PYTHONUTF8="0", LC_ALL="C", PYTHONCOERCECLOCALE="0", PERCEPTION_ORT_CACHE=str(cache))
    env.pop("LANG", None)
    done = subprocess.run([sys.executable, "-c", script, os.fsencode(model)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "damaged" not in done.stderr and done.stderr.strip() == "", done.stderr[-2000:]
    assert len(list(cache.iterdir())) == 1


# ---- M5: no home folder --------------------------------------------------------------------------------------


@pytest.fixture
def homeless(monkeypatch):
    """No HOME and no passwd entry for this user id (an ``env -i`` supervisor, a container under an
    arbitrary uid), and no cache variables."""
    monkeypatch.delenv("HOME", raising=False)
    for name in ("PERCEPTION_ORT_CACHE", "PERCEPTION_OPENVINO_CACHE", "PERCEPTION_PROBE_CACHE", "PERCEPTION_TRT_CACHE"):
        monkeypatch.delenv(name, raising=False)

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    with pytest.raises(RuntimeError):
        Path.home()


def test_without_a_home_folder_ort_runs_without_its_cache_and_says_so_once(homeless, tmp_path, caplog):
    model = write_brightness_model(tmp_path / "m.onnx", HW)
    for _ in range(2):
        engine = load_engine("ort", model, CPU)
        assert np.array_equal(engine.infer(BATCH)["class_ids"], expected_class_ids(BATCH))
    warned = cache_warnings(caplog)
    assert warned == [f"no home folder (HOME is not set and user id {os.geteuid()} has no passwd entry): running "
                      "without the ONNX Runtime cache, so graphs are optimised at every start; set HOME, or "
                      "PERCEPTION_ORT_CACHE to a folder of your own"]


def test_without_a_home_folder_openvino_runs_without_its_cache(homeless, tmp_path, caplog):
    if importlib.util.find_spec("openvino") is None:  # (importorskip imports its converter, which needs a home)
        pytest.skip("needs openvino")
    model = write_brightness_model(tmp_path / "m.onnx", HW)
    engine = load_engine("openvino", model, EngineOptions(precision="fp32", threads=1))
    assert np.array_equal(engine.infer(BATCH)["class_ids"], expected_class_ids(BATCH))
    warned = cache_warnings(caplog)
    assert len(warned) == 1 and "running without the OpenVINO cache, so models are compiled at every start" in warned[0]


def test_without_a_home_folder_auto_probes_without_a_verdict_cache(homeless, tmp_path, caplog, capsys):
    from perception.cli import main as cli_main

    model = write_brightness_model(tmp_path / "m.onnx", HW)
    options = EngineOptions(threads=1)
    assert auto_mod.cached_selection(model, options) is None  # was a RuntimeError traceback in the node
    assert probe_cache.node_cache_dir() is None
    warned = cache_warnings(caplog)
    assert len(warned) == 1 and "running without the engine probe cache" in warned[0]
    # perception bench probe, whose point is that cache: one line, exit 2
    assert cli_main(["bench", "probe", str(model), "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("perception: error: no home folder for the engine probe cache (HOME is not set")
    assert err[-1].endswith("set HOME or PERCEPTION_PROBE_CACHE, or give --cache-dir")
    with pytest.raises(ConfigError):
        probe_cache.probe_cache_dir()


def test_without_a_home_folder_tensorrt_engines_go_to_a_private_folder_of_the_process(homeless, caplog):
    folder = cache_mod.EngineCache().directory
    assert folder.is_dir() and (folder.stat().st_mode & 0o777) == 0o700
    assert cache_mod.default_cache_dir() == folder
    warned = cache_warnings(caplog)
    assert len(warned) == 1 and "running without the TensorRT engine cache, so engines are built at every start" in warned[0]


# ---- M7: private folders, and what another user could have put there -----------------------------------------


@pytest.fixture
def open_umask():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): oct(p.stat().st_mode & 0o777) for p in sorted(root.rglob("*"))}


def test_under_umask_000_the_caches_are_private(open_umask, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    monkeypatch.setenv("HOME", str(home))
    for name in ("PERCEPTION_ORT_CACHE", "PERCEPTION_OPENVINO_CACHE", "PERCEPTION_PROBE_CACHE"):
        monkeypatch.delenv(name)
    model = write_brightness_model(tmp_path / "m.onnx", HW)
    load_engine("ort", model, CPU)
    selection = auto_mod.Selection(engine="ort", precision="fp32", reason="test", key={"k": 1})
    probe_cache.write_cached(selection, probe_cache.node_cache_dir())
    found = modes(home / ".cache" / "perception")
    assert found.pop("ort") == found.pop("probe") == "0o700"
    assert set(found.values()) == {"0o600"} and len(found) == 2, found
    assert oct((home / ".cache").stat().st_mode & 0o777) == "0o700"
    assert oct((home / ".cache" / "perception").stat().st_mode & 0o777) == "0o700"
    if importlib.util.find_spec("openvino") is not None:
        load_engine("openvino", model, EngineOptions(precision="fp32", threads=1))
        assert oct((home / ".cache" / "perception" / "openvino").stat().st_mode & 0o777) == "0o700"
        blobs = list((home / ".cache" / "perception" / "openvino").iterdir())
        assert blobs and all(not p.stat().st_mode & 0o022 for p in blobs)


def plant(path: Path, how: str) -> None:
    """Make ``path`` what another user could have put there: theirs, or writable by anyone."""
    if how == "another user's":
        if os.geteuid() != 0:
            pytest.skip("only root can give a file to another user")
        os.chown(path, 65534, 65534)
    else:
        path.chmod(0o666)


@pytest.mark.parametrize("how", ["another user's", "writable by others"])
def test_an_ort_graph_that_is_not_the_users_alone_is_not_loaded(tmp_path, monkeypatch, caplog, how):
    cache = tmp_path / "cache"
    monkeypatch.setenv("PERCEPTION_ORT_CACHE", str(cache))
    model = write_brightness_model(tmp_path / "m.onnx", HW)
    entry = ort_mod.optimized_model_path(model, cache)
    cache.mkdir(mode=0o700)
    entry.write_bytes(write_upsampling_model(tmp_path / "planted.onnx", HW).read_bytes())  # another graph
    plant(entry, how)
    engine = load_engine("ort", model, CPU)
    assert np.array_equal(engine.infer(BATCH)["class_ids"], expected_class_ids(BATCH))  # the model's own graph
    warned = cache_warnings(caplog)
    assert len(warned) == 1 and warned[0].startswith(f"not loading the ONNX Runtime cache entry {entry}: ")
    assert ("belongs to user id 65534" if how == "another user's" else "(mode 0666)") in warned[0]
    st = entry.stat()  # replaced by this user's own graph, private
    assert st.st_uid == os.geteuid() and st.st_mode & 0o777 == 0o600


def test_an_ort_cache_folder_others_can_write_is_not_used(tmp_path, monkeypatch, caplog):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    monkeypatch.setenv("PERCEPTION_ORT_CACHE", str(cache))
    model = write_brightness_model(tmp_path / "m.onnx", HW)
    for _ in range(2):
        engine = load_engine("ort", model, CPU)
        assert np.array_equal(engine.infer(BATCH)["class_ids"], expected_class_ids(BATCH))
    assert list(cache.iterdir()) == []
    warned = cache_warnings(caplog)
    assert len(warned) == 1 and warned[0].startswith(f"not using the ONNX Runtime cache {cache}: group or other "
                                                     "users can write it (mode 0777)")


@pytest.mark.parametrize("how", ["another user's", "writable by others"])
def test_a_probe_verdict_that_is_not_the_users_alone_is_not_read(tmp_path, caplog, how):
    cache = tmp_path / "probe"
    key = {"version": probe_cache.PROBE_KEY_VERSION, "candidates": ["ort-fp32", "openvino-fp32"]}
    probe_cache.write_cached(auto_mod.Selection(engine="openvino", precision="fp32", reason="planted", key=key), cache)
    assert probe_cache.read_cached(key, cache) is not None  # this user's own is read
    path = probe_cache.cache_path(key, cache)
    plant(path, how)
    assert probe_cache.read_cached(key, cache) is None
    warned = cache_warnings(caplog)
    assert len(warned) == 1 and warned[0].startswith(f"not loading the engine probe cache entry {path}: ")


def test_a_probe_cache_folder_others_can_write_is_neither_read_nor_written(tmp_path, caplog):
    cache = tmp_path / "probe"
    key = {"version": probe_cache.PROBE_KEY_VERSION, "candidates": ["ort-fp32"]}
    probe_cache.write_cached(auto_mod.Selection(engine="ort", precision="fp32", reason="ok", key=key), cache)
    cache.chmod(0o777)
    assert probe_cache.read_cached(key, cache) is None
    probe_cache.cache_path(key, cache).unlink()
    probe_cache.write_cached(auto_mod.Selection(engine="ort", precision="fp32", reason="ok", key=key), cache)
    assert list(cache.iterdir()) == []
    warned = cache_warnings(caplog)
    assert len(warned) == 1 and warned[0].startswith(f"not using the engine probe cache {cache}: group or other users "
                                                     "can write it")


def test_an_openvino_cache_entry_that_is_not_the_users_alone_is_removed_unread(tmp_path, monkeypatch, caplog):
    pytest.importorskip("openvino")
    cache = tmp_path / "ov"
    monkeypatch.setenv("PERCEPTION_OPENVINO_CACHE", str(cache))
    model = write_brightness_model(tmp_path / "m.onnx", HW)
    options = EngineOptions(precision="fp32", threads=1)
    load_engine("openvino", model, options)
    blobs = list(cache.iterdir())
    assert blobs
    blobs[0].chmod(0o666)
    engine = load_engine("openvino", model, options)
    assert np.array_equal(engine.infer(BATCH)["class_ids"], expected_class_ids(BATCH))
    warned = cache_warnings(caplog)
    assert len(warned) == 1 and warned[0].startswith(f"removed {blobs[0]} from the OpenVINO cache unread: ")
    assert all(not p.stat().st_mode & 0o022 for p in cache.iterdir())  # compiled again, this user's


def test_an_openvino_cache_folder_others_can_write_is_not_used(tmp_path, monkeypatch, caplog):
    pytest.importorskip("openvino")
    cache = tmp_path / "ov"
    cache.mkdir()
    cache.chmod(0o777)
    monkeypatch.setenv("PERCEPTION_OPENVINO_CACHE", str(cache))
    model = write_brightness_model(tmp_path / "m.onnx", HW)
    engine = load_engine("openvino", model, EngineOptions(precision="fp32", threads=1))
    assert np.array_equal(engine.infer(BATCH)["class_ids"], expected_class_ids(BATCH))
    assert list(cache.iterdir()) == []
    warned = cache_warnings(caplog)
    assert len(warned) == 1 and warned[0].startswith(f"not using the OpenVINO cache {cache}: ")


# ---- L3: ONNX Runtime's telemetry warning ----------------------------------------------------------------------


def test_onnx_runtime_prints_nothing_when_the_home_cache_cannot_be_written(tmp_path, permission_bound):
    home = tmp_path / "home"
    home.mkdir(mode=0o500)  # this user's, read-only to it
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "ORT_DISABLE_TELEMETRY")}
    env.update(HOME=str(home), PERCEPTION_ORT_CACHE="off")
    try:
        done = subprocess.run([*permission_bound, sys.executable, "-c", "import perception.engines.ort"],
                              capture_output=True, text=True, env=env, timeout=120)
    finally:
        home.chmod(0o700)
    assert done.returncode == 0 and done.stderr == "", done.stderr  # was a colour-coded telemetry line


# ---- L4: the background probe's cache warnings reach the node's log --------------------------------------------


def test_the_probe_childs_cache_warning_is_logged_once_by_the_node(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PERCEPTION_ORT_CACHE", "off")
    model = write_brightness_model(tmp_path / "m.onnx", HW)
    (tmp_path / "file").write_text("not a folder")
    cache = tmp_path / "file" / "probe"  # the child cannot write its verdict there
    selection = auto_mod.select_engine(model, EngineOptions(threads=1), cache_dir=cache, isolated=True)
    assert selection.engine in ("ort", "openvino")
    warned = cache_warnings(caplog)
    assert len(warned) == 1, warned
    assert warned[0].startswith(f"cannot use the engine probe cache {cache} (") and "probes the engines again" in warned[0]


def test_the_cache_warning_lines_of_a_failed_child_are_not_its_last_words():
    key = {"k": 1}
    stderr = "boom: the child died\n" + auto_mod.CACHE_WARNING_PREFIX + json.dumps("cannot write X") + "\n"
    with pytest.raises(Exception, match=r"exited with status 1 \(boom: the child died\)"):
        auto_mod.child_verdict(1, "", stderr, key)


# ---- L7: the ONNX Runtime cache is bounded -------------------------------------------------------------------


def models(tmp_path: Path, count: int) -> list[Path]:
    """``count`` tiny models whose bytes (so cache keys) differ."""
    return [write_brightness_model(tmp_path / f"m{i}.onnx", HW, metadata=tiny_metadata(HW, model_name=f"tiny{i}"))
            for i in range(count)]


def test_the_ort_cache_keeps_the_most_recently_used_graphs(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("PERCEPTION_ORT_CACHE", str(cache))
    monkeypatch.setattr(ort_mod, "ORT_CACHE_MAX_ENTRIES", 2)
    a, b, c = models(tmp_path, 3)
    entry = {m: ort_mod.optimized_model_path(m, cache) for m in (a, b, c)}
    for model in (a, b):
        load_engine("ort", model, CPU)
    os.utime(entry[a], (time.time() - 100, time.time() - 100))
    os.utime(entry[b], (time.time() - 50, time.time() - 50))
    load_engine("ort", a, CPU)  # a hit: a is now the most recently used
    stale = cache / ".x.tmp123.onnx"  # what an interrupted write left, long ago
    stale.write_bytes(b"")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    load_engine("ort", c, CPU)
    assert sorted(cache.iterdir()) == sorted([entry[a], entry[c]])  # b, the least recently used, went


def test_the_ort_cache_keeps_within_its_size(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("PERCEPTION_ORT_CACHE", str(cache))
    a, b = models(tmp_path, 2)
    load_engine("ort", a, CPU)
    monkeypatch.setattr(ort_mod, "ORT_CACHE_MAX_BYTES", ort_mod.optimized_model_path(a, cache).stat().st_size + 10)
    load_engine("ort", b, CPU)
    assert list(cache.iterdir()) == [ort_mod.optimized_model_path(b, cache)]


def test_openvino_with_a_model_and_a_cache_folder_whose_paths_are_not_utf8(tmp_path):
    """The model runs (OpenVINO reads such a path), and the cache folder, which OpenVINO cannot take,
    is one warning: it was "OpenVINO cannot compile ... Unable to cast Python instance"."""
    pytest.importorskip("openvino")
    model = write_brightness_model(tmp_path / f"m_{FF}.onnx", HW)
    script = ("import logging, sys; logging.basicConfig(format='%(levelname)s %(message)s')\n"
              "from perception.engines import EngineOptions, load_engine\n"
              "e = load_engine('openvino', sys.argv[1], EngineOptions(precision='fp32', threads=1))\n"
              "import numpy as np; print(int(e.infer(np.full((1, 48, 64, 3), 255, np.uint8))['class_ids'].max()))\n")
    env = dict(os.environ, PERCEPTION_OPENVINO_CACHE=os.fsencode(tmp_path) + b"/ov_\xff")
    done = subprocess.run([sys.executable, "-c", script, os.fsencode(model)], capture_output=True, env=env,
                          timeout=120)
    assert done.stdout.decode().split() == [str(expected_class_ids(np.full((1, 1, 1, 3), 255, np.uint8)).max())]
    err = done.stderr.decode("utf-8", "backslashreplace")
    assert done.returncode == 0, err[-2000:]
    assert err.splitlines() == [f"WARNING cannot use the OpenVINO cache {tmp_path}/ov_\\udcff: OpenVINO takes only UTF-8 "
                                "paths; models are compiled at every start (set PERCEPTION_OPENVINO_CACHE to a UTF-8 "
                                "path)"], err


def test_a_tensorrt_engine_cache_that_cannot_be_written_or_trusted_is_not_used(tmp_path, caplog):
    key = cache_mod.engine_key(b"onnx", trt_version="10.9.0", gpu_name="GPU sm89", precision="fp16",
                               input_shapes={"image": (1, 48, 64, 3)})
    (tmp_path / "file").write_text("not a folder")
    blocked = cache_mod.EngineCache(tmp_path / "file" / "trt")
    stored = blocked.store(key, b"plan")  # the engine that was built is kept for this process
    assert stored.read_bytes() == b"plan" and stored.parent != tmp_path / "file" / "trt"
    assert stored.stat().st_mode & 0o777 == 0o600
    cache = cache_mod.EngineCache(tmp_path / "trt")
    path = cache.store(key, b"plan")
    assert cache.load(key) == b"plan"
    path.chmod(0o666)
    assert cache.load(key) is None  # writable by others: built again
    warned = cache_warnings(caplog)
    assert len(warned) == 2 and warned[0].startswith(f"cannot write the TensorRT engine cache {tmp_path / 'file' / 'trt'}")
    assert warned[1].startswith(f"not loading the TensorRT engine cache entry {path}: group or other users can write")


def test_a_cache_folder_an_earlier_release_left_readable_to_others_is_made_private(tmp_path):
    """H43 F7: folders an older release made under umask 022 stayed 0755 (its graphs readable to
    other users), though the README says the caches are private (0700)."""
    old = tmp_path / "ort"
    old.mkdir()
    old.chmod(0o755)
    assert cache_mod.usable_dir(old, "ONNX Runtime cache", "it runs without it")
    assert old.stat().st_mode & 0o777 == 0o700
