"""Verifier V2's findings (session s36): outputs checked up front, stop signals, one-line errors.

- N1: ``synth --video EXISTING_READONLY.mp4 --overwrite`` wrote the whole dataset, then blamed mp4v.
- N2: ``synth --contact-sheet EXISTING_READONLY.png --overwrite`` rendered every tile, leaked an
  OpenCV WARN line and advised about the folder; ``--contact-sheet /proc/x.png`` did not name the flag.
- N3: ``bench probe`` stopped while it measured 2 streams printed a thread's traceback after
  ``perception: interrupted`` (the engines were closed under worker threads still in ``infer``).
- N4: SIGTERM while ``view`` waited for an X server that does not answer killed it with no line.
- N6: a deprecated flag given twice said a warning, then named the new flag; ``view`` with no
  ``--out`` named ``--out`` when ``out/`` could not be made; ``labels/`` holds label masks;
  ``(Permission denied)`` beside ``(permission denied)``.
- Notes: the ``python -m perception.export.*`` tools refuse a single-value flag given twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from perception.cli import main as cli_main

needs_proc = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
SMALL = ["--count", "3", "--size", "48x64"]


def _run(prefix: list[str], cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return subprocess.run([*prefix, sys.executable, "-m", "perception", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=env)


def _one_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("perception: error: "), \
        (done.returncode, done.stderr)
    return lines[0].removeprefix("perception: error: ")


# ---- N1, N2, N6 (d): a read-only file or folder, said before any work, in lower case ----------------------


@pytest.fixture
def read_only(tmp_path):
    """``ro.mp4`` and ``ro.png`` (read-only files holding "x") and ``rod/`` (a read-only folder)."""
    for name in ("ro.mp4", "ro.png"):
        (tmp_path / name).write_text("x")
        (tmp_path / name).chmod(0o444)
    (tmp_path / "rod").mkdir()
    (tmp_path / "rod").chmod(0o555)
    yield tmp_path
    (tmp_path / "rod").chmod(0o755)


@pytest.mark.parametrize(("argv", "said"), [
    (["synth", "--out", "ds", *SMALL, "--video", "ro.mp4", "--overwrite"],
     "cannot write ro.mp4 (permission denied); choose a writable --video path"),
    (["synth", "--out", "ds", *SMALL, "--video", "rod/d.mp4"],
     "cannot write rod/d.mp4 (permission denied); choose a writable --video path"),
    (["synth", "--contact-sheet", "ro.png", "--count", "2", "--size", "48x64", "--overwrite"],
     "cannot write ro.png (permission denied); choose a writable --contact-sheet path"),
    (["synth", "--contact-sheet", "rod/sub/cs.png", "--count", "2", "--size", "48x64"],
     "cannot create rod/sub for --contact-sheet rod/sub/cs.png (permission denied); choose a writable "
     "--contact-sheet path"),
    (["view", "--source", "synthetic", "--model", "not_loaded.onnx", "--out", "rod/v.png"],
     "cannot write rod/v.png (permission denied); choose a writable --out"),
])
def test_a_read_only_output_is_refused_in_one_line_before_any_work(read_only, permission_bound, argv, said):
    before = sorted(p.name for p in read_only.iterdir())
    done = _run(permission_bound, read_only, *argv)
    assert _one_line(done) == said  # no OpenCV WARN line before it, no advice about mp4v
    assert sorted(p.name for p in read_only.iterdir()) == before  # no dataset written, no folder made
    assert (read_only / "ro.mp4").read_text() == "x" and (read_only / "ro.png").read_text() == "x"


@needs_proc
def test_a_contact_sheet_under_proc_names_the_flag(tmp_path, permission_bound):
    done = _run(permission_bound, tmp_path, "synth", "--contact-sheet", "/proc/x.png", "--count", "2")
    message = _one_line(done)
    # root: (no such file or directory); bound by permissions: (permission denied)
    assert message.startswith("cannot write /proc/x.png (") and message.endswith("); choose a writable --contact-sheet "
                                                                                    "path"), message


def test_a_contact_sheet_is_written_in_any_case_of_its_suffix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["synth", "--contact-sheet", "cs.PNG", "--count", "2", "--size", "48x64"]) == 0
    assert (tmp_path / "cs.PNG").read_bytes().startswith(b"\x89PNG")


# ---- N3: bench probe's streams measurement joins its workers ---------------------------------------------


def test_an_interrupt_while_two_streams_are_measured_waits_for_the_other_worker():
    from perception.engines.probe import _frames_in_flight

    said: list[str] = []
    release = threading.Event()

    class Busy:  # the second stream's worker, inside infer when the first one is interrupted
        calls = 0
        entered = threading.Event()

        def infer(self, frame):
            self.calls += 1
            self.entered.set()
            release.wait(1.0)  # still in here, as a real infer would be, when the interrupt comes
            said.append("the other worker's infer returned")

    busy = Busy()

    class Interrupted:  # this thread's worker: Ctrl-C (or SIGTERM under interrupt_on_stop_signals)
        def infer(self, frame):
            busy.entered.wait(30)
            raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            _frames_in_flight([Interrupted(), busy], [np.zeros((2, 2, 3), np.uint8)], runs=50)
        said.append("the caller closes the engines")
        # The engines are closed only after the other worker left infer, and it took no frame after.
        assert said == ["the other worker's infer returned", "the caller closes the engines"]
        assert busy.calls == 1
    finally:
        release.set()


def test_an_error_in_a_stream_worker_is_raised_to_the_measurement_not_printed():
    from perception.engines.probe import _frames_in_flight

    class Fails:
        def infer(self, frame):
            raise RuntimeError("this stream's session failed")

    class Works:
        calls = 0

        def infer(self, frame):
            self.calls += 1

    works = Works()
    with pytest.raises(RuntimeError, match="this stream's session failed"):  # choose_streams: a warning, then 1
        _frames_in_flight([works, Fails()], [np.zeros((2, 2, 3), np.uint8)], runs=10_000_000)
    assert works.calls < 10_000_000  # stopped when the other one failed


# ---- N4: SIGTERM while view waits for an X server ---------------------------------------------------------


def _silent_x_server() -> tuple[str, threading.Event, socket.socket, list[socket.socket]]:
    """A DISPLAY on 127.0.0.1 whose server accepts the connection and never answers; the event is set
    once it accepted (the view is then inside its display check). The accepted connection is in the
    list, which the caller keeps until the view is done: held only by the accepting thread, it was
    closed when that thread ended, and a view slow to get its signal (a loaded machine) then saw
    "no X server there" and went on past the check."""
    from test_view_display_and_out import _x_listener

    listener, number = _x_listener()
    accepted = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            held.append(conn)
            accepted.set()

    threading.Thread(target=serve, daemon=True).start()
    return f"127.0.0.1:{number}", accepted, listener, held


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the X display probe is for Linux")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_during_the_display_check_stops_view_cleanly(tmp_path, sig):
    import ctypes

    try:
        ctypes.CDLL("libxcb.so.1")
    except OSError:
        pytest.skip("no libxcb here: the display check opens no connection")
    display, accepted, listener, held = _silent_x_server()
    env = {k: v for k, v in os.environ.items() if k != "WAYLAND_DISPLAY"}
    env["DISPLAY"] = display
    with listener:
        view = subprocess.Popen([sys.executable, "-m", "perception", "view", "--source", "synthetic", "--model",
                                 "not_loaded.onnx"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert accepted.wait(60), "the view never connected to the display"
            view.send_signal(sig)
            out, err = view.communicate(timeout=60)
        finally:
            if view.poll() is None:
                view.kill()
                view.communicate()
            for conn in held:
                conn.close()
    assert view.returncode == 0, (view.returncode, err)  # was -15: killed with no line
    assert out == "" and "Traceback" not in err
    assert err.strip().endswith("nothing rendered: stopped before the first frame"), err
    assert not (tmp_path / "out").exists()  # nothing loaded, nothing written


# ---- N6: wording ------------------------------------------------------------------------------------------


def test_a_deprecated_flag_given_twice_is_one_line_naming_it_as_typed(capsys, caplog):
    with caplog.at_level(logging.WARNING), pytest.raises(SystemExit) as info:
        cli_main(["replay", "x.mcap", "--wait-subscriber", "1", "--wait-subscriber", "1"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "perception: error: replay: argument --wait-subscriber: given twice (1, 1); give it once; "
        "see 'perception replay --help'"]
    assert "deprecated" not in caplog.text  # no warning before the refusal
    # With the current spelling too: both as typed, still no warning first.
    with caplog.at_level(logging.WARNING), pytest.raises(SystemExit):
        cli_main(["replay", "x.mcap", "--wait-subscriber", "1", "--wait-first-subscriber", "2"])
    assert "given twice (--wait-subscriber 1, --wait-first-subscriber 2)" in capsys.readouterr().err
    assert "deprecated" not in caplog.text
    # Given once, it still warns, once.
    with caplog.at_level(logging.WARNING):
        assert cli_main(["replay", "x.mcap", "--wait-subscriber", "1"]) == 2  # x.mcap not found
    assert caplog.text.count("--wait-subscriber is deprecated") == 1


@pytest.mark.parametrize("in_the_way", ["file", "folder"])
def test_view_with_no_out_names_its_default_and_the_flag_to_pass(tmp_path, monkeypatch, capsys, in_the_way):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if in_the_way == "file":
        (tmp_path / "out").write_text("x")
        said = ("cannot create out for out/view.mp4 (the default output where no window can open): out is a file, "
                "not a folder; pass --out PATH")
    else:
        (tmp_path / "out" / "view.mp4").mkdir(parents=True)
        said = "out/view.mp4 (the default output where no window can open) is a folder, not a .mp4 file; pass --out PATH"
    assert cli_main(["view", "--source", "synthetic", "--model", "not_loaded.onnx"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"perception: error: {said}"]


def test_a_default_out_view_mp4_given_as_out_is_named_as_the_users(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").write_text("x")
    assert cli_main(["view", "--source", "synthetic", "--model", "not_loaded.onnx", "--out", "out/view.mp4"]) == 2
    assert capsys.readouterr().err.strip() == ("perception: error: cannot create out for --out: out is a file, not a "
                                               "folder; choose a writable path")


@pytest.mark.parametrize(("argv", "said"), [
    (["unknown", "m.onnx", "--threshold", "0.5", "--threshold=0.6"],
     "python -m perception.export.unknown: error: argument --threshold: given twice (0.5, 0.6); give it once; "
     "see 'python -m perception.export.unknown --help'"),
    (["batch", "m.onnx", "--out", "a.onnx", "--out", "b.onnx"],
     "export.batch: error: argument --out: given twice (a.onnx, b.onnx); give it once; "
     "see 'python -m perception.export.batch --help'"),
    (["quantize", "m.onnx", "--calib-count", "3", "--calib-count", "4"],
     "export.quantize: error: argument --calib-count: given twice (3, 4); give it once; "
     "see 'python -m perception.export.quantize --help'"),
])
def test_the_export_tools_refuse_a_single_value_flag_given_twice(capsys, argv, said):
    import importlib

    tool = importlib.import_module(f"perception.export.{argv[0]}")
    with pytest.raises(SystemExit) as info:
        tool.main(argv[1:])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [said]
