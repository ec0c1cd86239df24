"""The commands under a hostile stdout and process limits (H18, s38): stdout on a full disk
(``>/dev/full``), closed (``>&-``) or gone (``| head``), an ASCII-only stdout with non-ASCII
names, a thread the system will not start (``ulimit -u``/``-v``), the open-file limit
(``ulimit -n``), and no usable temporary folder.

What a user relies on: the work is done and kept (a recording stays whole), the result lines escape
what stdout cannot encode, a stdout that cannot be written is one line naming it and the cause with
a non-zero exit (README: a full disk is exit 1), a launch whose stdout is gone goes on supervising
and draining its nodes, and a limit reached is one line naming the limit, never a traceback."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from tiny_models import write_brightness_model

from perception.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
STDOUT_FULL = "cannot write to stdout (/dev/full): No space left on device, so the result lines were lost; "


def perception(*argv, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perception", *argv], capture_output=True, timeout=120, cwd=cwd,
                          env={**os.environ, **(env or {})})


def one_error(err: str | bytes) -> str:
    """The one error line of a command's stderr (log lines may come before it), never a traceback."""
    text = err.decode("utf-8", "backslashreplace") if isinstance(err, bytes) else err
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("perception: error: ")]
    assert len(errors) == 1, text
    return errors[0].removeprefix("perception: error: ")


# ---- stdout on a full disk ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_brightness_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx", (48, 64))


def run_to_full_stdout(tmp_path: Path, *argv) -> tuple[int, str]:
    err = tmp_path / "stderr.txt"
    with open("/dev/full", "w") as full, open(err, "w") as errors:
        done = subprocess.run([sys.executable, "-m", "perception", *argv], stdout=full, stderr=errors, cwd=tmp_path,
                              timeout=120)
    return done.returncode, err.read_text()


def test_inspect_to_a_full_disk_is_one_line_naming_stdout_exit_1(tmp_path, tiny):
    code, err = run_to_full_stdout(tmp_path, "inspect", str(tiny))
    assert code == 1, err
    assert one_error(err).startswith(STDOUT_FULL)


def test_keys_to_a_full_stdout_writes_the_keys_and_says_the_lines_were_lost(tmp_path):
    code, err = run_to_full_stdout(tmp_path, "keys", "--out", "k", "--name", "car")
    assert code == 1, err
    assert one_error(err) == STDOUT_FULL + "free space on its disk or send stdout elsewhere"
    assert (tmp_path / "k" / "car.key").is_file() and (tmp_path / "k" / "car.key_secret").is_file()


def test_a_node_with_stdout_on_a_full_disk_runs_to_its_end_then_says_so(tmp_path, tiny, free_tcp_port):
    code, err = run_to_full_stdout(tmp_path, "run", "--model", str(tiny), "--max-frames", "3",
                                   "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}")
    assert code == 1, err
    assert "stopped (max frames reached)" in err  # the run itself was done
    assert one_error(err).startswith(STDOUT_FULL)


# ---- record: the recording is kept whole ---------------------------------------------------------


def _record_while_publishing(tmp_path: Path, out: str, *, stdout, env: dict | None = None) -> subprocess.Popen:
    """``perception record`` for 2 s while this test publishes frames to it; the finished process."""
    from loopback_ports import free_endpoint

    from perception.publish import MaskPublisher

    endpoint = free_endpoint()
    proc = subprocess.Popen([sys.executable, "-m", "perception", "record", "--endpoint", endpoint, "--namespace",
                             "perception/rec", "--duration", "2", "--out", out],
                            cwd=tmp_path, stdout=stdout, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    pub = MaskPublisher(endpoint=endpoint, namespace="perception/rec", encodings={"class_map": "rle"})
    seq = 0
    try:
        while proc.poll() is None:
            pub.publish_masks(seq=seq, capture_ns=time.time_ns(), frame_id="rec",
                              masks={"class_map": np.full((24, 32), seq % 7, np.uint8)}, latency_ms={},
                              model_id="tiny-test")
            seq += 1
            time.sleep(0.02)  # a 50 fps camera's pace, until the recorder's --duration ends it
    finally:
        pub.close()
        proc.wait(timeout=60)
    return proc


def _recorded_masks(path: Path) -> int:
    from perception.mcap_reader import read_recording
    from perception.recover import recording_is_intact

    assert recording_is_intact(path), f"{path} is not whole"
    return sum(msg.kind == "mask" for msg in read_recording(path))


def test_record_with_stdout_on_a_full_disk_keeps_a_whole_recording(tmp_path):
    with open("/dev/full", "w") as full:
        proc = _record_while_publishing(tmp_path, "run.mcap", stdout=full)
    err = proc.stderr.read().decode()
    assert proc.returncode == 1, err
    assert one_error(err).startswith(STDOUT_FULL)
    assert _recorded_masks(tmp_path / "run.mcap") > 0


def test_record_with_an_ascii_stdout_and_a_non_ascii_name_records_and_escapes_it(tmp_path):
    proc = _record_while_publishing(tmp_path, "r_ñ_🚗.mcap", stdout=subprocess.PIPE, env={"PYTHONIOENCODING": "ascii"})
    out = proc.stdout.read().decode("ascii")
    assert proc.returncode == 0, proc.stderr.read().decode()
    assert out.startswith("recording perception/rec/* from ") and "to r_\\xf1_\\U0001f697.mcap" in out.splitlines()[0]
    assert _recorded_masks(tmp_path / "r_ñ_🚗.mcap") > 0


# ---- an ASCII-only stdout, names that are not ASCII or not UTF-8 -----------------------------------


def test_result_lines_escape_what_an_ascii_stdout_cannot_encode(tmp_path, tiny):
    model = tmp_path / "m_ñ_🚗.onnx"
    shutil.copyfile(tiny, model)
    ascii_only = {"PYTHONIOENCODING": "ascii"}
    shown = perception("inspect", model.name, cwd=tmp_path, env=ascii_only)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.decode("ascii").startswith("m_\\xf1_\\U0001f697.onnx  (")
    keys = perception("keys", "--out", "k_ñ", "--name", "a", cwd=tmp_path, env=ascii_only)
    assert keys.returncode == 0, keys.stderr
    assert keys.stdout.decode("ascii").startswith("public key: k_\\xf1/a.key  (")
    assert (tmp_path / "k_ñ" / "a.key").is_file()
    plan = perception("launch", "--check", str(REPO / "launch" / "demo.yaml"), f"model:={model}", cwd=tmp_path,
                      env=ascii_only)
    assert plan.returncode == 0, plan.stderr
    assert "model=" + str(model).replace("ñ", "\\xf1").replace("🚗", "\\U0001f697") in plan.stdout.decode("ascii")


def test_bench_with_an_out_name_that_is_not_utf8_writes_a_whole_report(tmp_path, tiny):
    out = os.fsdecode(b"b_\xff")
    done = perception("bench", "engine", "--model", str(tiny), "--runs", "5", "--warmup", "1", "--no-progress", "-q",
                      "--out", out, cwd=tmp_path, env={"PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0, done.stderr
    assert "wrote b_\\udcff/perception.bench.md" in done.stdout.decode("ascii")
    report = (tmp_path / out / "perception.bench.md").read_text(encoding="utf-8")  # UTF-8 text, not left empty
    assert "--out 'b_\\udcff'`" in report  # the command line, as a terminal shows the name


# ---- stdout closed or gone: listen and launch go on -------------------------------------------------


def _close_stdout() -> None:
    os.close(1)


def test_listen_with_stdout_closed_listens_to_its_end(tmp_path):
    from loopback_ports import free_endpoint

    done = subprocess.run([sys.executable, "-m", "perception", "listen", "--endpoint", free_endpoint(),
                           "--duration", "0.5"], stderr=subprocess.PIPE, preexec_fn=_close_stdout, timeout=60)
    # nothing is published there: "nothing received" (exit 4) is the end it reaches, in one line
    assert done.returncode == 4, done.stderr
    assert one_error(done.stderr).startswith("no messages received from ")


@pytest.mark.parametrize("how", ["closed", "head -3"])
def test_launch_whose_stdout_is_closed_or_gone_runs_its_nodes_to_the_end(tmp_path, tiny, how):
    from loopback_ports import free_endpoint

    argv = [sys.executable, "-m", "perception", "launch", str(REPO / "launch" / "demo.yaml"), f"model:={tiny}",
            f"endpoint:={free_endpoint()}", "duration:=2"]
    err = tmp_path / "stderr.txt"
    with open(err, "w") as errors:
        if how == "closed":
            proc = subprocess.Popen(argv, stderr=errors, preexec_fn=_close_stdout)
        else:  # the reader takes the plan's first 3 lines and exits, before any node has started
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors)
            lines = [proc.stdout.readline() for _ in range(3)]
            proc.stdout.close()
            assert lines[0].startswith(b"launch plan: ")
        code = proc.wait(timeout=120)
    said = err.read_text()
    assert "Traceback" not in said and "Exception in thread" not in said, said
    assert code == 0, said
    assert "[camera]" in said and "stopped (duration reached)" in said  # the node ran to its end


def test_a_launch_whose_output_reader_is_gone_keeps_draining_a_chatty_node(tmp_path):
    """A node that prints far more than a pipe holds (64 KiB) must not block once launch's stdout is
    gone: its output is still read, and dropped."""
    from perception.launch import LaunchPlan, LaunchSupervisor, NodePlan

    class Gone:
        def write(self, text):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    chatty = ("import signal, sys; signal.alarm(60)\n"  # blocked on a full pipe: SIGALRM ends it (a failure)
              "for i in range(20000): print('x' * 100, i)\n"
              "print('done', file=sys.stderr)")

    class ScriptNode(NodePlan):
        def command_line(self):
            return [sys.executable, "-c", chatty]

    node = ScriptNode(name="chatty", kind="listen", command="listen", parameters={}, argv=(),
                      source_file=Path("test.yaml"), respawn=False, respawn_delay_s=1.0, respawn_max=0,
                      required=True, delay_s=0.0)
    supervisor = LaunchSupervisor(LaunchPlan(file=Path("test.yaml"), arguments={}, nodes=[node]), out=Gone(),
                                  err=Gone())
    assert supervisor.run() == 0  # the node printed its 2 MB and ended 0, not killed by its alarm


# ---- a thread the system will not start -------------------------------------------------------------


def _refuse_thread(monkeypatch, name: str) -> None:
    """``Thread.start`` refuses the thread called ``name`` as CPython does when pthread_create fails
    (as root, RLIMIT_NPROC does not apply, so ``ulimit -u`` cannot make it refuse)."""
    start = threading.Thread.start

    def refusing(self):
        if self.name == name:
            raise RuntimeError("can't start new thread")
        return start(self)

    monkeypatch.setattr(threading.Thread, "start", refusing)


@pytest.mark.parametrize(("thread", "what"), [
    ("perception-engine-load", "the thread that loads the engine"),
    ("perception-open", "the thread that opens the source"),
    ("perception-inference", "the node's inference thread"),
    ("perception-publish", "the node's publish thread"),
])
def test_a_thread_the_system_refuses_is_one_line_naming_the_limits(thread, what, tiny, free_tcp_port, monkeypatch,
                                                                    capsys):
    # As root, RLIMIT_NPROC does not apply (ulimit -u 6 as another user does this): Thread.start
    # refuses as CPython does when pthread_create fails.

    _refuse_thread(monkeypatch, thread)
    code = cli_main(["run", "--model", str(tiny), "--max-frames", "3", "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"])
    monkeypatch.undo()
    said = capsys.readouterr()
    assert code == 1, said.err
    line = one_error(said.err)
    assert line.startswith(f"cannot start {what}: the system refused a new thread; ")
    assert "ulimit -u" in line and "ulimit -v" in line
    final = json.loads(said.out.strip().splitlines()[-1])  # the start-up failed, said on stdout as always
    assert final["end_reason"] == "start-up failed" and final["error"] == line
    # nothing of the node is left running (a capture thread started before the refused one is stopped)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("perception-") and t.is_alive()]


def test_without_the_stop_deadline_thread_the_node_still_runs_and_stops(tiny, free_tcp_port, monkeypatch, capsys):
    # The thread that keeps the stop deadline below the signal handlers is the first a node starts:
    # refused, the node runs without it (the signals still stop it) and meets the limit, if at all,
    # at its own threads, in one line.

    _refuse_thread(monkeypatch, "stop-watch")
    code = cli_main(["run", "--model", str(tiny), "--max-frames", "3", "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"])
    monkeypatch.undo()
    said = capsys.readouterr()
    assert code == 0, said.err
    assert json.loads(said.out.strip().splitlines()[-1])["end_reason"] == "max frames reached"


def test_a_thread_refused_anywhere_else_is_one_line_too(monkeypatch, capsys):
    import perception.commands.keys as keys


    def main(_args):
        threading.Thread(target=lambda: None, name="helper").start()

    _refuse_thread(monkeypatch, "helper")
    monkeypatch.setattr(keys, "main", main)
    code = cli_main(["keys", "--out", "k", "--name", "a"])
    monkeypatch.undo()
    assert code == 1
    assert one_error(capsys.readouterr().err).startswith("cannot start a thread: the system refused a new thread; ")


# ---- the open-file limit ------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [
    OSError(errno.EMFILE, "Too many open files", "/venv/perception/synthetic/__init__.py"),
    OSError(errno.EMFILE, "Too many open files"),
    "zmq",
])
def test_the_open_file_limit_is_named_with_its_fix(error, monkeypatch, capsys):
    import resource

    import zmq

    import perception.commands.keys as keys

    raised = zmq.ZMQError(errno.EMFILE) if error == "zmq" else error

    def main(_args):
        raise raised

    monkeypatch.setattr(keys, "main", main)
    assert cli_main(["keys", "--out", "k", "--name", "a"]) == 1
    line = one_error(capsys.readouterr().err)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert line.startswith("too many open files")
    assert line.endswith(f"the open-file limit (ulimit -n, now {soft}) is reached; raise it (ulimit -n 1024)")
    assert "check the file and its file system" not in line
    if isinstance(error, OSError) and error.filename:
        assert "(opening /venv/perception/synthetic/__init__.py)" in line


# ---- no usable temporary folder ------------------------------------------------------------------------


def test_bench_pipeline_without_a_usable_temporary_folder_is_one_line(monkeypatch):
    from perception.bench.node import scratch_folder
    from perception.errors import ConfigError

    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setattr(tempfile, "_candidate_tempdir_list", lambda: ["/proc/no-such-tmp", "/sys"])
    with pytest.raises(ConfigError) as refused:
        scratch_folder("bench-node-")
    assert str(refused.value).startswith("cannot make a temporary folder for the benched node's logs: No usable "
                                         "temporary directory found in ")
    assert str(refused.value).endswith("; set TMPDIR to a writable folder with some free space")
