"""The one signal-handler installer: it sets the stop event, and it always puts back what it replaced."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from perception.signals import install_signal_handlers, interrupt_on_stop_signals


def test_stop_event_is_set_and_the_previous_handlers_come_back():
    seen = []
    before = signal.signal(signal.SIGTERM, lambda *_: seen.append("outer"))
    try:
        stop = threading.Event()
        with install_signal_handlers(stop) as handlers:
            assert handlers.installed
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.wait(2.0)
        assert not handlers.installed and not seen
        os.kill(os.getpid(), signal.SIGTERM)  # the outer handler is back
        assert seen == ["outer"]
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_handler_can_give_the_signal_back_for_a_second_press():
    calls = []
    before = signal.signal(signal.SIGINT, lambda *_: calls.append("previous"))
    try:
        def first(_signum, _frame):
            calls.append("first")
            handlers.restore()

        handlers = install_signal_handlers(first, (signal.SIGINT,))
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        assert calls == ["first", "previous"]
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_a_batch_command_stops_on_sigterm_and_hangup_as_on_ctrl_c(name):
    """Hunt 5d: eval died of SIGTERM with 143 and no line (synth and train too): for a batch command
    every stop signal is the KeyboardInterrupt of Ctrl-C, and what was there before comes back."""
    sig = getattr(signal, name, None)
    if sig is None:
        pytest.skip(f"no {name} on this platform")
    previous = signal.signal(sig, signal.SIG_DFL)
    try:
        with pytest.raises(KeyboardInterrupt), interrupt_on_stop_signals():
            os.kill(os.getpid(), sig)
            time.sleep(5)  # the handler runs at the next bytecode: this never completes
        assert signal.getsignal(sig) is signal.SIG_DFL
    finally:
        signal.signal(sig, previous)


def _wait_for(proc, ready, what: str) -> None:
    deadline = time.monotonic() + 120
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{what} did not start"
        time.sleep(0.05)


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
@pytest.mark.parametrize(("command", "name"), [("eval", "SIGTERM"), ("synth", "SIGHUP"), ("eval", "SIGHUP"),
                                             ("bench", "SIGTERM"), ("bench", "SIGINT")])
def test_batch_commands_end_on_a_stop_signal_with_ctrl_c_s_line_and_status(tmp_path, tiny_model_path, command, name):
    import subprocess

    out = tmp_path / "synth"
    argv = {
        # thousands of frames: still running when the signal comes
        "eval": ["eval", "--model", str(tiny_model_path), "--data", "synthetic:count=100000,size=48x64", "--threads", "1"],
        "synth": ["synth", "--out", str(out), "--count", "100000", "--size", "48x64"],
        "bench": ["bench", "engine", "--model", str(tiny_model_path), "--engine", "ort", "--threads", "1", "--duration",
                  "120", "--out", str(tmp_path / "bench")],
    }[command]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # SIGHUP at its default in the child, as in a fresh ssh session: a test run under nohup (a CI
    # runner) would hand down its ignored SIGHUP, which the command rightly keeps ignoring.
    proc = subprocess.Popen([sys.executable, "-m", "perception", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    try:
        if command == "synth":
            _wait_for(proc, lambda: (out / "images").is_dir() and any((out / "images").iterdir()), "synth")
        else:
            lines: list[str] = []
            said = "evaluating" if command == "eval" else "engine bench: block"  # the bench is timing now
            _wait_for(proc, lambda: lines.append(proc.stderr.readline()) or said in lines[-1], command)
        os.kill(proc.pid, getattr(signal, name))
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    # synth says what it wrote: "perception: interrupted; wrote N of M frames to ..."
    assert stderr.splitlines()[-1].startswith("perception: interrupted") and "Traceback" not in stderr
    if command == "bench":
        assert not (tmp_path / "bench").exists()  # nothing measured: no empty --out left behind


def test_off_the_main_thread_it_installs_nothing():
    result = {}

    def worker():
        handlers = install_signal_handlers(threading.Event())
        result["installed"] = handlers.installed
        handlers.restore()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert result == {"installed": False}


_STUCK = """
import os, signal, sys, threading, time
from perception.signals import SignalHandlers
handlers = SignalHandlers(lambda *_: None, grace_s=float(sys.argv[1])).install()
print("ready", flush=True)
if sys.argv[2] == "c-call":
    # One C call of minutes that releases the GIL and is not interrupted by signals, as OpenCV's
    # stream open is: no Python handler runs until it returns.
    import hashlib
    hashlib.pbkdf2_hmac("sha256", b"x", b"y", 10**9)
time.sleep(30)  # a stop that never finishes
"""


@pytest.fixture
def stuck():
    """Start a process whose stop never finishes; killed at the end whatever the test found (a
    process left spinning in its C call would slow every later test)."""
    import subprocess
    import sys

    started = []

    def start(grace_s: float, where: str = "python") -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", _STUCK, str(grace_s), where], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout.readline().strip() == "ready"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.parametrize("where", ["python", "c-call"])
def test_a_stop_that_does_not_finish_in_its_grace_time_ends_the_process(where, stuck):
    """A node whose launcher was killed outright gets one SIGTERM (pdeathsig); if its stop hangs,
    it must not linger holding its port: after the grace time it exits, status 143, one line. Also
    while the main thread is inside one long C call (a stream that never answers), where no Python
    handler can run."""
    proc = stuck(grace_s=0.5, where=where)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip() == "perception: error: still stopping 0.5 s after SIGTERM; exiting now without finishing"


@pytest.mark.parametrize("where", ["python", "c-call"])
def test_a_second_signal_while_stopping_ends_the_process_at_once(where, stuck):
    proc = stuck(grace_s=60, where=where)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 128 + signal.SIGINT
    assert "a second stop signal (SIGINT) while stopping" in err


def test_run_catches_stop_signals_before_it_imports_its_command_module():
    """Hunt 4b finding 2: the handlers came after 'perception.commands.run' and its imports (about
    75 ms), so a SIGTERM in that window killed the node silently. The start-up state lives in this
    standard-library module and the dispatcher installs it before loading the command."""
    import subprocess
    import sys

    code = (
        "import signal, sys\n"
        "import perception.cli as cli\n"
        "from perception.signals import STARTUP_SIGNALS\n"
        "real = cli.load_command\n"
        "def spy(name):\n"
        "    if 'perception.commands.run' not in sys.modules:  # the first load: the handlers are in\n"
        "        assert STARTUP_SIGNALS.installed and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL\n"
        "        print('installed first', flush=True)\n"
        "    return real(name)\n"
        "cli.load_command = spy\n"
        "sys.exit(cli._main(['run', '--fps', '-5']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("installed first"), done.stderr
    assert done.returncode == 2 and "--fps" in done.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_started_with_die_with_parent_ends_when_its_parent_is_killed(tmp_path):
    """Hunt 4b finding 3: '--engine auto''s probe child ran on for 30 s (two cores, 350 MB) after
    its node was killed with SIGKILL, then wrote its verdict. Its children now die with it."""
    import subprocess

    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, threading, time\n"
        "from perception.signals import die_with_parent\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()  # a node has threads\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], preexec_fn=die_with_parent())\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n")])
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    parent.kill()
    parent.wait(timeout=10)
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":  # ended, not yet reaped by init
            return
        time.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the child outlived its killed parent")


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_a_hangup_stops_like_sigterm_unless_nohup_ignores_it():
    """Hunt 4b: closing the ssh session of a foreground node killed it (129) without its final
    stats, and a recording without its file finished. A hangup is a stop signal now; a process
    started under nohup (SIGHUP ignored) keeps ignoring it."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        stop = threading.Event()
        with install_signal_handlers(stop):
            os.kill(os.getpid(), signal.SIGHUP)
            assert stop.wait(5)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup starts it
        stop = threading.Event()
        with install_signal_handlers(stop):
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
            assert not stop.wait(0.2)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def _run_in_a_pty_then_hang_up(argv: list[str], wait_for: bytes, *, after_s: float = 0.0) -> int:
    """Run ``argv`` in a new session whose controlling terminal is a pty, close the pty ``after_s``
    after ``wait_for`` was printed (as a closed ssh session does), and return the wait status."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: a session whose controlling terminal is the pty
        # As a fresh ssh session starts it: a test run under nohup (a CI runner) would otherwise pass
        # on its ignored SIGHUP, which the command rightly keeps ignoring.
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        os.execv(argv[0], argv)
    seen = b""
    deadline = time.monotonic() + 60
    while wait_for not in seen and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    until = time.monotonic() + after_s
    while (left := until - time.monotonic()) > 0:  # the child runs on, its output drained
        if select.select([fd], [], [], min(left, 0.2))[0]:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    os.close(fd)  # hang up
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # never wait for ever on a child that did not stop
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail(f"{argv} did not stop within 60 s of the hangup")
    assert wait_for in seen, seen
    return status


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a pty hangup as Linux delivers it")
def test_a_closed_terminal_stops_record_cleanly_with_its_file_finished(tmp_path, free_tcp_port):
    """verify4 N1: closing the ssh session (the pty) stopped 'record' by SIGHUP, then the summary
    line to the dead terminal raised EIO: a traceback and exit 1. Now exit 0, the file finished."""
    from perception.publish import MaskPublisher

    out = tmp_path / "r.mcap"
    stop = threading.Event()
    # A node to record from: a recording that received nothing leaves no file (exit 4).
    with MaskPublisher(endpoint=f"tcp://127.0.0.1:{free_tcp_port}", namespace="perception/front") as pub:
        def feed():
            while not stop.wait(0.05):
                pub.publish_json("stats", {"uptime_s": 1.0})

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            status = _run_in_a_pty_then_hang_up(
                [sys.executable, "-m", "perception", "record", "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}",
                 "--namespace", "perception/front", "--out", str(out)], b"recording", after_s=0.8)
        finally:
            stop.set()
            feeder.join()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    from mcap.reader import make_reader

    with out.open("rb") as f:
        assert make_reader(f).get_summary() is not None  # footer, summary and index written


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a pty hangup as Linux delivers it")
def test_a_closed_terminal_keeps_listen_s_json_summary(tmp_path, free_tcp_port):
    """verify5: 'listen --json > file' lost its summary (empty file, exit 129) when the terminal
    closed: the live lines to the dead terminal failed first."""
    out = tmp_path / "summary.json"
    status = _run_in_a_pty_then_hang_up(
        ["/bin/sh", "-c", f"exec {sys.executable} -m perception listen --endpoint tcp://127.0.0.1:{free_tcp_port} "
                          f"--namespace perception/front --json > {out}"], b"listening on")
    # nothing to listen to: exit 4 (a stream that is not there), the summary written all the same
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 4, status
    import json

    summary = json.loads(out.read_text())
    assert summary["messages"] == 0 and summary["endpoint"] == f"tcp://127.0.0.1:{free_tcp_port}"
