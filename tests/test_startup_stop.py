"""How ``perception run`` ends during start-up, and after it has ended (hunt s35 h6).

- ``--wait-subscribers`` that times out is a start-up failure like any other: the final stats line
  (also on ``stats``) and exit status 4, "not there yet", which launch files respawn (was: no stats
  at all and exit 2, "bad input", never respawned).
- A stop while a stream is opening that never answers is a stop: exit 0 at once, with the step
  named (was: held until the open timed out, up to the 20 s emergency exit, or reported as a
  failure, exit 4); an open that times out says so.
- A second signal after the final stats line no longer kills the process by the signal.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from perception.errors import SubscribersMissingError

REPO = Path(__file__).resolve().parents[1]
NS = "perception/front"


def _perception(*argv: str) -> list[str]:
    return [sys.executable, "-m", "perception", "-q", *argv]


def _last_json(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, f"no stats line on stdout: {stdout!r}"
    return json.loads(lines[-1])


class Blackhole:
    """A TCP server that accepts every connection and never answers (a camera's web server that
    hung after ``accept``); ``accepted`` is set at the first connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self._held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self._held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def blackhole():
    server = Blackhole()
    yield server
    server.close()


# ------------------------------------------------------------------ F1: --wait-subscribers timing out


def test_wait_subscribers_timing_out_prints_and_publishes_the_final_stats_and_exits_4(tiny_model_path, free_tcp_port):
    from perception.subscribe import MaskSubscriber

    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    # Subscribed to the stats topic only: not one of the subscribers --wait-subscribers counts (and
    # two are asked for), so the node gives up, and this one sees the final document go out.
    with MaskSubscriber(endpoint, topics=[f"{NS}/stats"]) as sub:
        done = subprocess.run(
            _perception("run", "--model", str(tiny_model_path), "--source", "synthetic", "--width", "64",
                        "--height", "48", "--endpoint", endpoint, "--wait-subscribers", "2", "--wait-timeout", "2",
                        "--warmup", "0"),
            capture_output=True, text=True, timeout=120, cwd=REPO)
        published = []
        while (msg := sub.recv(timeout_s=0.5)) is not None:
            published.append(msg.data)
    assert done.returncode == SubscribersMissingError.exit_code == 4, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("perception: error:")]
    assert len(errors) == 1 and f"connected to {endpoint} within 2 s" in errors[0], done.stderr
    assert "start the recorder first or drop --wait-subscribers" in errors[0]
    assert "Traceback" not in done.stderr
    final = _last_json(done.stdout)
    assert final["end_reason"] == "start-up failed" and final["startup"] == "waiting for subscribers"
    assert final["error"] == errors[0].removeprefix("perception: error: ")
    assert final["balanced"] and final["frames_in"] == 0
    assert published and published[-1] == final  # on the stats topic too, as the README says


def test_launch_respawns_a_node_whose_subscribers_did_not_come(tmp_path):
    from test_launch import LaunchProcess, camera_node, free_port, write_launch
    from tiny_models import write_brightness_model

    model = write_brightness_model(tmp_path / "tiny.onnx", (48, 64))
    node = camera_node("cam", free_port(), model, respawn=True, respawn_delay=0.1)
    node["node"]["parameters"].update(wait_subscribers=1, wait_timeout_s=0.3, warmup=0)
    launch = LaunchProcess(write_launch(tmp_path / "wait.yaml", [node]))
    try:
        launch.wait_line(r"\[cam\] perception: error: no subscriber connected to .* within 0.3 s", timeout_s=120)
        launch.wait_line(r"node 'cam' ended \(exit code 4\); restarting")
        launch.wait_line(r"started node 'cam' \(pid \d+\) \(restart 1\)")
        launch.proc.send_signal(signal.SIGTERM)
        assert launch.proc.wait(timeout=30) == 0
    finally:
        launch.stop()
    assert not any("not restarting" in line for line in launch.seen), launch.seen


# ------------------------------------------------------------------ F2: a stop while a stream opens


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_stop_while_a_stream_that_never_answers_opens_is_a_clean_stop(tiny_model_path, free_tcp_port, blackhole, name):
    # --read-timeout 60: the open would hold the node for a minute (past the 20 s emergency exit,
    # status 143 without stats); the stop abandons it instead.
    proc = subprocess.Popen(
        _perception("run", "--model", str(tiny_model_path), "--source", f"http://127.0.0.1:{blackhole.port}/s.mjpg",
                    "--read-timeout", "60", "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert blackhole.accepted.wait(120), "the node never connected to the stream"
        proc.send_signal(getattr(signal, name))
        out, err = proc.communicate(timeout=60)  # past the node's own 20 s stop deadline: that one decides
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    final = _last_json(out)
    assert final["end_reason"] == f"signal {name}" and final["startup"] == "opening the source", final
    assert "error" not in final and final["balanced"]
    assert "perception: error" not in err and "Traceback" not in err


def test_an_open_that_times_out_says_so(tiny_model_path, free_tcp_port, blackhole):
    done = subprocess.run(
        _perception("run", "--model", str(tiny_model_path), "--source", f"http://127.0.0.1:{blackhole.port}/s.mjpg",
                    "--read-timeout", "0.5", "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"),
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 4, done.stderr  # not there (yet): a launch file respawns it
    line = f"cannot open stream http://127.0.0.1:{blackhole.port}/s.mjpg: no answer within 0.5 s (--read-timeout)"
    assert f"perception: error: {line}" in done.stderr
    final = _last_json(done.stdout)
    assert final["end_reason"] == "start-up failed" and final["startup"] == "opening the source"
    assert final["error"].startswith(line)


class _SlowSource:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()


def test_an_abandoned_opening_closes_what_it_opens_later(monkeypatch):
    """The opening a stop gives up on is never handed on: when it opens after all, its own thread
    closes it; the sources already open are closed at once."""
    from perception.commands.run import open_camera_sources
    from perception.run_config import RunConfig
    from perception.signals import StartupInterrupted

    release, opened, stop = threading.Event(), [], threading.Event()

    def fake_open(spec, _options):
        source = _SlowSource(spec)
        opened.append(source)
        if spec == "slow":
            release.wait(30)  # an open that has not answered yet
        return source

    monkeypatch.setattr("perception.sources.open_source", fake_open)
    config = RunConfig.from_settings(source=["front=fast", "rear=slow"])
    cameras = [config.camera_config(i) for i in range(2)]
    asked = threading.Timer(0.2, stop.set)
    asked.start()
    try:
        with pytest.raises(StartupInterrupted):
            open_camera_sources(cameras, stop_requested=stop.is_set)
    finally:
        asked.cancel()
    fast, slow = opened
    assert fast.closed.is_set() and not slow.closed.is_set()
    release.set()  # the slow open answers at last: nobody holds it, its thread closes it
    assert slow.closed.wait(10)


# ------------------------------------------------------------------ F5: a signal after the final line


def test_a_second_stop_signal_after_the_final_stats_never_kills_the_node(tiny_model_path, free_tcp_port):
    """A supervisor that sends SIGTERM twice: the second one, a moment after the final stats line,
    found Python's default handler back and the process died by the signal (-15, no line). Each
    gap: exit 0, or (the second signal still inside the stop) the documented one line and 143."""
    for gap in (0.0, 0.03, 0.08, 0.15):
        proc = subprocess.Popen(
            _perception("run", "--model", str(tiny_model_path), "--source", "synthetic", "--width", "64",
                        "--height", "48", "--fps", "10", "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        try:
            _wait_until_bound(proc, free_tcp_port)  # well into start-up, or running: either way a stop
            proc.send_signal(signal.SIGTERM)
            line = proc.stdout.readline()  # the final stats
            time.sleep(gap)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            rest, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert json.loads(line)["end_reason"] == "signal SIGTERM", (gap, line, err)
        assert proc.returncode in (0, 128 + signal.SIGTERM), (gap, proc.returncode, err)
        if proc.returncode != 0:
            assert "a second stop signal (SIGTERM) while stopping" in err, (gap, err)
        assert "Traceback" not in err


def _wait_until_bound(proc: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.communicate()
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline, "the node never bound its port"
        time.sleep(0.05)


def test_a_stop_signal_while_the_interpreter_tears_down_keeps_the_exit_status():
    """``command_done`` (the program's exit path): a signal once the command has returned ends the
    process with the command's status, also in the interpreter's last steps (module teardown),
    where Python has put its default handlers back."""
    code = (
        "import os, signal, sys, time\n"
        "from perception.signals import as_program, command_done\n"
        "class Late:\n"
        "    def __del__(self):  # runs as the modules are torn down\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(0.2)\n"
        "late = Late()\n"
        "as_program()\n"
        "command_done(7)\n"
        "if sys.argv[1] == 'now':\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(5)\n"
        "sys.exit(7)\n"
    )
    for when in ("now", "teardown"):
        done = subprocess.run([sys.executable, "-c", code, when], capture_output=True, text=True, timeout=60, cwd=REPO)
        assert done.returncode == 7, (when, done.returncode, done.stderr)
