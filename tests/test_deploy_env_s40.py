"""The node deployed like a car computer or a container (H32's findings): no usable temporary
folder, a full one, a thread or memory the system refuses (``ulimit -u``, ``ulimit -v``), a
read-only ONNX Runtime telemetry folder, a passwd home that is not a folder. Each is one warning or
one line naming the limit and the fix, never a traceback, and never blamed on the model file."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import types
from pathlib import Path

import numpy as np
import pytest
from test_engines_cpu import HW, INT8_VERDICT, fake_probe, run_until, write_good_int8
from test_launch_supervisor import RUNS_UNTIL_STOPPED, Output, node
from tiny_models import write_brightness_model

from perception import cli
from perception.engines import EngineOptions, load_engine, probe
from perception.engines import auto as auto_mod
from perception.engines import cache as cache_mod
from perception.engines import ort as ort_mod
from perception.engines import switching as switching_mod
from perception.errors import ResourceError, thread_refused
from perception.launch import LaunchPlan, LaunchSupervisor
from perception.launch import supervisor as sup_module

CPU = EngineOptions(provider="cpu", threads=1)
BATCH = np.full((1, *HW, 3), 200, np.uint8)


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    monkeypatch.setattr(cache_mod, "_warned", set())


@pytest.fixture
def thread_errors(monkeypatch):
    """The exceptions that ended a thread (what ``Exception in thread ...`` tracebacks would print)."""
    seen = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    return seen


def probe_lines(caplog) -> tuple[list[str], list[str]]:
    records = [r for r in caplog.records if r.name == "perception.engines.auto"]
    return ([r.getMessage() for r in records if r.levelname == "WARNING"],
            [r.getMessage() for r in records if "probing" in r.getMessage() and r.levelname == "INFO"])


# ---- H1: no usable temporary folder; L1: a full one ------------------------------------------------


def _probing_setup(tmp_path, monkeypatch) -> tuple[Path, list]:
    """A tiny model with its INT8 sibling, a fake probe child that records the frames it was given
    (``seen``), and a probe on 2 frames: (the model, ``seen``)."""
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    write_good_int8(model)
    seen: list = []
    fake_probe(monkeypatch, tmp_path, verdict=INT8_VERDICT, frames_seen=seen).touch()
    monkeypatch.setattr(probe, "PROBE_FRAMES", 2)
    return model, seen


def test_auto_without_a_usable_temp_folder_warns_once_and_probes_on_rendered_scenes(tmp_path, monkeypatch, caplog,
                                                                                      thread_errors):
    model, seen = _probing_setup(tmp_path, monkeypatch)
    engine = auto_mod.load_auto(model, CPU, background=True)

    def no_temp(*args, **kwargs):  # what tempfile says on a read-only root with no writable TMPDIR
        raise FileNotFoundError(errno.ENOENT, "No usable temporary directory found in ['/tmp', '/var/tmp', '/']")

    monkeypatch.setattr(tempfile, "mkstemp", no_temp)
    monkeypatch.setattr(tempfile, "gettempdir", no_temp)
    monkeypatch.setattr(tempfile, "tempdir", None)
    try:
        with caplog.at_level("INFO", logger="perception.engines.auto"):
            run_until(engine, lambda: engine.selection["state"] != "probing", BATCH, limit_s=30)
        assert thread_errors == []
        assert engine.selection["state"] == "chosen", engine.selection
        warnings, started = probe_lines(caplog)
        assert len(warnings) == 1 and "No usable temporary directory" in warnings[0], warnings
        assert "the probe judges on rendered road scenes" in warnings[0]
        assert seen == [(None, None)]  # the child was started, without a frames file
        assert len(started) == 1 and "(the node's frames could not be written)" in started[0], started
    finally:
        engine.close()


def test_auto_with_a_full_temp_folder_says_no_space_left(tmp_path, monkeypatch, caplog, thread_errors):
    model, seen = _probing_setup(tmp_path, monkeypatch)
    temp = tmp_path / "tmp"
    temp.mkdir()
    engine = auto_mod.load_auto(model, CPU, background=True)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))

    def short_write(*args, **kwargs):  # numpy's own words for a write the full file system cut short
        raise OSError("6635520 requested and 1048448 written")

    monkeypatch.setattr(switching_mod.np, "save", short_write)
    try:
        with caplog.at_level("INFO", logger="perception.engines.auto"):
            run_until(engine, lambda: engine.selection["state"] != "probing", BATCH, limit_s=30)
        assert thread_errors == []
        warnings, started = probe_lines(caplog)
        assert len(warnings) == 1, warnings
        assert f"cannot write the probe's frames to {temp} (no space left on the device)" in warnings[0], warnings
        assert "requested" not in warnings[0]
        assert len(started) == 1 and "no frame came" not in started[0], started
        assert list(temp.iterdir()) == []  # the partial file is gone
    finally:
        engine.close()


# ---- H3: launch, a reader thread refused ------------------------------------------------------------


def test_launch_with_a_refused_reader_thread_raises_its_one_line_error(tmp_path, monkeypatch, thread_errors):
    real = sup_module.start_thread
    calls = []

    def second_refused(thread, what):
        calls.append(what)
        if len(calls) == 2:
            raise ResourceError(thread_refused(what))
        real(thread, what)

    monkeypatch.setattr(sup_module, "start_thread", second_refused)
    out = Output()
    supervisor = LaunchSupervisor(LaunchPlan(file=Path("test.yaml"), arguments={},
                                             nodes=(node("cam", RUNS_UNTIL_STOPPED),)), out=out, err=out)
    with pytest.raises(ResourceError, match="cannot start the thread that reads node 'cam''s output"):
        supervisor.run()


# ---- H2: a thread refused in the stop watch; OpenBLAS at one thread ---------------------------------


def test_stop_watch_with_a_refused_deadline_thread_has_no_traceback(monkeypatch, thread_errors):
    from perception import signals

    watch = signals._StopWatch(5.0, (signal.SIGTERM,))

    class Refused(threading.Timer):
        def start(self):
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(signals.threading, "Timer", Refused)
    os.write(watch._write, bytes([signal.SIGTERM]))
    watch.stop()
    watch._thread.join()
    assert thread_errors == []


@pytest.mark.parametrize(("command", "expected"), [("run", "1"), ("launch", "1"), ("listen", "1"), ("eval", None)])
def test_the_node_commands_start_numpy_with_one_blas_thread(command, expected):
    script = ("import os, sys\n"
              f"sys.argv = ['perception', {command!r}, '--help']\n"
              "from perception import cli\n"
              "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
              "print('BLAS', os.environ.get('OPENBLAS_NUM_THREADS'), 'numpy' in sys.modules, file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert f"BLAS {expected}" in done.stderr, done.stderr[-2000:]


# ---- H4: MemoryError in a command -------------------------------------------------------------------


@pytest.mark.parametrize("limited", [True, False])
def test_memory_refused_to_a_command_is_one_line(tmp_path, monkeypatch, capsys, limited):
    from perception.commands import inspect as inspect_cmd

    def out_of_memory(args):
        raise MemoryError("Unable to allocate 21.1 MiB for an array with shape (1, 1080, 1920, 3)")

    monkeypatch.setattr(inspect_cmd, "main", out_of_memory)
    real = resource.getrlimit
    limit = (650000 * 1024, resource.RLIM_INFINITY) if limited else (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    monkeypatch.setattr(resource, "getrlimit", lambda which: limit if which == resource.RLIMIT_AS else real(which))
    assert cli.main(["inspect", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("perception: error: out of memory (Unable to allocate"), err
    if limited:
        assert "(ulimit -v, now 650000 KiB); raise the limit (ulimit -v unlimited)" in err
    else:
        assert "ulimit -v" not in err and "free memory" in err


@pytest.mark.parametrize("filename", ["/data/synthetic", None])
def test_memory_refused_while_opening_a_file_is_not_blamed_on_the_file(tmp_path, monkeypatch, capsys, filename):
    """ENOMEM on a folder said "/data/synthetic: Cannot allocate memory; check the file and its file
    system" (s40 F32), and without a file name it was a traceback."""
    from perception.commands import inspect as inspect_cmd

    def refused(args):
        raise OSError(errno.ENOMEM, "Cannot allocate memory", filename)

    monkeypatch.setattr(inspect_cmd, "main", refused)
    assert cli.main(["inspect", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    opening = " while opening /data/synthetic" if filename else ""
    assert err.startswith(f"perception: error: out of memory{opening} (Cannot allocate memory): "), err
    assert "check the file" not in err


def test_a_library_that_cannot_be_mapped_under_an_address_space_limit_is_one_line(tmp_path, monkeypatch, capsys):
    """Under a low ulimit -v, importing cv2 failed with an ImportError traceback (V3 N2)."""
    from perception.commands import inspect as inspect_cmd

    def unmappable(args):
        raise ImportError("libavcodec-9b4c2a6b.so.61: failed to map segment from shared object")

    monkeypatch.setattr(inspect_cmd, "main", unmappable)
    assert cli.main(["inspect", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("perception: error: out of memory while loading a library (libavcodec"), err


# ---- M1: ONNX Runtime refused a thread or memory ----------------------------------------------------

PTHREAD = "pthread_create failed, error code: 11 error msg: Resource temporarily unavailable"
NO_MEMORY = ("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running Conv node. "
             "Failed to allocate memory for requested buffer of size 13271040")


def test_a_thread_refused_at_load_keeps_the_ort_cache_entry_and_is_a_resource_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PERCEPTION_ORT_CACHE", str(tmp_path / "ort"))
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    load_engine("ort", model, CPU).close()
    entries = sorted((tmp_path / "ort").glob("*.onnx"))
    assert len(entries) == 1

    def refused(*args, **kwargs):
        raise RuntimeError(PTHREAD)

    monkeypatch.setattr(ort_mod, "_session", refused)
    with pytest.raises(ResourceError) as caught:
        load_engine("ort", model, CPU)
    assert caught.value.exit_code == 1
    said = str(caught.value)
    assert "the system refused a new thread" in said and "ulimit -u" in said and "re-export" not in said, said
    assert sorted((tmp_path / "ort").glob("*.onnx")) == entries  # not deleted as "damaged"


def test_memory_refused_at_the_first_inference_is_a_resource_error(tmp_path):
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    engine = load_engine("ort", model, CPU)

    def no_memory(batch):
        raise RuntimeError(NO_MEMORY)

    with pytest.raises(ResourceError) as caught:
        engine._checked_runs(no_memory, 1)
    assert caught.value.exit_code == 1
    said = str(caught.value)
    assert said.startswith("out of memory while running the first inference of tiny.onnx on ort (") and "Failed to allocate" in said
    assert "check the file" not in said


# ---- M2: telemetry folder on a read-only file system; L2: a passwd home that is not a folder -------


def test_ort_telemetry_is_off_when_its_id_folder_cannot_be_written(tmp_path, monkeypatch):
    folder = tmp_path / "Microsoft" / "DeveloperTools" / ".onnxruntime"
    folder.mkdir(parents=True, mode=0o700)
    (folder / "deviceid").write_text("id")
    assert cache_mod._ort_can_keep(folder)
    real = os.access

    def read_only(path, mode, **kwargs):  # EROFS: access(W_OK) fails, as root too
        if Path(path) == folder and mode & os.W_OK:
            return False
        return real(path, mode, **kwargs)

    monkeypatch.setattr(cache_mod.os, "access", read_only)
    assert not cache_mod._ort_can_keep(folder)


def test_no_home_names_a_passwd_home_that_is_not_a_folder(monkeypatch):
    import pwd

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: types.SimpleNamespace(pw_dir="/nonexistent"))
    said = cache_mod.no_home()
    assert "has no passwd entry" not in said
    assert said == f"HOME is not set and the passwd home of user id {os.geteuid()}, '/nonexistent', is not a folder"
