"""``perception view``: a display that cannot be opened, and ``--out`` checked before any work.

Hunt s36 H8: with ``$DISPLAY`` set but no X server there (a closed ``ssh -X``, a container), Qt
aborted the process (exit 134) at the first frame; an unwritable ``.png`` ``--out`` was found only
when the last frame was written (never, for an endless source, before Ctrl-C); a folder named
``x.png`` drew the advice to pass ``--overwrite``, which led to the same late failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from tiny_models import write_brightness_model

from perception.errors import ConfigError, SourceError
from perception.sinks import resolve_output
from perception.view import ViewConfig, run_view

REPO = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the X display probe is for Linux")


def _x_listener() -> tuple[socket.socket, int]:
    """A listening TCP socket on an X display port (6000 + N) of 127.0.0.1, and N.

    Each pytest-xdist worker takes its own 25 display numbers: ``_closed_display`` frees its port
    again, and another worker's listener taking that port would answer the view that expects a
    refusal (a CI run failed that way)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    first = 150 + 25 * (int(worker[2:]) % 10 if worker[2:].isdigit() else 0)
    for number in range(first, first + 25):
        listener = socket.socket()
        try:
            listener.bind(("127.0.0.1", 6000 + number))
        except OSError:
            listener.close()
            continue
        listener.listen(1)
        return listener, number
    pytest.skip("no free X display port on 127.0.0.1")


def _closed_display() -> str:
    """A DISPLAY on 127.0.0.1 where nothing listens: connecting is refused."""
    listener, number = _x_listener()
    listener.close()
    return f"127.0.0.1:{number}"


def _fake_x_server(status: int, reason: bytes = b"") -> str:
    """A DISPLAY served by a stand-in X server that answers one connection setup with ``status``
    (1 success, 0 refused with ``reason``), as the X11 protocol's setup reply says it."""
    listener, number = _x_listener()

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)  # the client's setup request (byte order, version, auth)
                if status == 1:
                    conn.sendall(struct.pack("<BBHHH", 1, 0, 11, 0, 8) + bytes(32))
                else:
                    pad = -len(reason) % 4
                    conn.sendall(struct.pack("<BBHHH", 0, len(reason), 11, 0, (len(reason) + pad) // 4)
                                 + reason + bytes(pad))
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    conn.recv(16)  # until the client hangs up

    threading.Thread(target=serve, daemon=True).start()
    return f"127.0.0.1:{number}"


@linux_only
def test_a_display_that_cannot_be_opened_falls_back_to_the_video_with_one_warning(monkeypatch, caplog):
    display = _closed_display()
    monkeypatch.setenv("DISPLAY", display)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with caplog.at_level(logging.INFO, logger="perception.sinks"):
        assert resolve_output(None) == Path("out/view.mp4")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    # "no X display can be opened there (...)"; where libxcb is missing, that it is missing
    assert warnings[0].startswith(f"$DISPLAY={display} is set, but "), warnings
    assert warnings[0].endswith("writing out/view.mp4 instead of a window")
    # Wayland alone: OpenCV's Qt has only its xcb (X11) plugin, and aborts there too.
    monkeypatch.delenv("DISPLAY")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-9")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="perception.sinks"):
        assert resolve_output(None) == Path("out/view.mp4")
    assert "$WAYLAND_DISPLAY=wayland-9 is set but $DISPLAY is not" in caplog.text
    # Nothing set: as before, an info line, no warning.
    monkeypatch.delenv("WAYLAND_DISPLAY")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="perception.sinks"):
        assert resolve_output(None) == Path("out/view.mp4")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # An --out given is taken as it is, whatever the display.
    assert resolve_output(Path("x.png")) == Path("x.png")


@linux_only
def test_an_x_server_that_answers_gets_the_window_and_one_that_refuses_is_named(monkeypatch, capfd):
    import ctypes

    from perception.sinks import window_unavailable

    try:
        ctypes.CDLL("libxcb.so.1")
    except OSError:
        pytest.skip("no libxcb here (nor, then, an OpenCV window)")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", _fake_x_server(1))  # each stand-in answers one connection
    assert window_unavailable() is None
    monkeypatch.setenv("DISPLAY", _fake_x_server(1))
    assert resolve_output(None) is None  # a window
    monkeypatch.setenv("DISPLAY", _fake_x_server(0, b"Authorization required, but no authorization protocol specified\n"))
    why = window_unavailable()
    assert why is not None and "(Authorization required, but no authorization protocol specified)" in why
    assert capfd.readouterr().err == ""  # what libxcb printed is in the one warning, not on stderr


@linux_only
def test_view_with_a_dead_display_writes_out_view_mp4_instead_of_aborting(tmp_path):
    model = write_brightness_model(tmp_path / "tiny.onnx", (32, 48))
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "0.png"), np.full((64, 96, 3), 80, np.uint8))
    env = {k: v for k, v in os.environ.items() if k != "WAYLAND_DISPLAY"}
    env["DISPLAY"] = _closed_display()
    done = subprocess.run(
        [sys.executable, "-m", "perception", "view", "--source", str(frames), "--model", str(model), "--max-frames", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env,
    )
    assert done.returncode == 0, (done.returncode, done.stderr)  # was 134: Qt's abort
    assert done.stdout.strip() == f"rendered 1 frame(s) to {Path('out/view.mp4')}"
    assert (tmp_path / "out" / "view.mp4").is_file()
    warned = [line for line in done.stderr.splitlines() if " W " in line]
    assert len(warned) == 1 and f"$DISPLAY={env['DISPLAY']} is set" in warned[0], done.stderr


def _view(tmp_path: Path, out: Path, *extra: str, model: Path | None = None) -> ViewConfig:
    import argparse

    from perception.commands.view import add_arguments
    from perception.flags import config_from_flags

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    # No such model: an output refused before any work is refused before the model would load.
    args = parser.parse_args(["--source", "synthetic", "--width", "96", "--height", "64",
                              "--model", str(model or tmp_path / "not_loaded.onnx"), "--out", str(out), *extra])
    return config_from_flags(ViewConfig, args, source="perception view")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("name", ["x.png", "x.mp4", "x.avi", "frames"])
def test_an_out_that_cannot_be_written_is_refused_before_the_model_loads(tmp_path, name):
    out = Path("/proc") / name
    with pytest.raises(ConfigError) as refused:
        run_view(_view(tmp_path, out))  # an endless synthetic source: before, a .png failed only at Ctrl-C
    message = str(refused.value)
    assert str(out) in message and "choose a writable" in message, message


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_folder_named_like_a_file_out_is_named_and_overwrite_is_not_advised(tmp_path, overwrite):
    out = tmp_path / "dir.png"
    out.mkdir()
    with pytest.raises(ConfigError) as refused:
        run_view(_view(tmp_path, out, *overwrite))
    message = str(refused.value)
    assert message.startswith(f"--out {out} is a folder, not a .png file; choose another --out"), message
    assert "--overwrite" not in message
    assert out.is_dir() and list(out.iterdir()) == []


def test_view_help_gives_the_limits_defaults():
    import argparse

    from perception.commands.view import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "--max-frames N stop after N frames (0: no limit) (default 0, >= 0)" in text
    assert "--duration S stop after S seconds (0: no limit) (default 0, >= 0)" in text


def test_a_dataset_root_as_source_names_its_images_folder(tmp_path):
    from perception.cli import main as cli_main

    root = tmp_path / "synth"
    assert cli_main(["-q", "synth", "--out", str(root), "--count", "2", "--size", "48x64"]) == 0
    model = write_brightness_model(tmp_path / "tiny.onnx", (32, 48))
    config = _view(tmp_path, tmp_path / "v.mp4", model=model)
    config.source = str(root)
    with pytest.raises(SourceError) as refused:
        run_view(config)
    assert str(refused.value).endswith(f"give --source {root / 'images'}"), refused.value
