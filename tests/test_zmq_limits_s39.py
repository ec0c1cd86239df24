"""libzmq aborts the process in C (exit 134, no word from the node) when the open-file limit or the
thread limit refuses what a context's first socket needs; ``zmq_context.new_context`` checks the
headroom first, so a node, a listener or any subscriber at such a limit ends with one line naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from tiny_models import write_brightness_model

from perception import zmq_context
from perception.cli import main as cli_main
from perception.errors import ResourceError

REPO = Path(__file__).resolve().parents[1]


def one_error(err: str) -> str:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("perception: error: ")]
    assert len(errors) == 1, err
    return errors[0].removeprefix("perception: error: ")


def _refuse_headroom_threads(monkeypatch) -> None:
    """``Thread.start`` refuses the trial threads as CPython does when pthread_create fails (as root,
    RLIMIT_NPROC does not apply, so ``ulimit -u`` cannot make it refuse)."""
    start = threading.Thread.start
    tried = []

    def refusing(self):
        if self.name == "zmq-headroom":
            tried.append(self)
            if len(tried) == 2:  # the second: the first started and must be let go
                raise RuntimeError("can't start new thread")
        return start(self)

    monkeypatch.setattr(threading.Thread, "start", refusing)


def test_a_node_whose_zeromq_threads_are_refused_is_one_line(tmp_path, free_tcp_port, monkeypatch, capsys):
    tiny = write_brightness_model(tmp_path / "tiny.onnx", (48, 64))
    _refuse_headroom_threads(monkeypatch)
    code = cli_main(["run", "--model", str(tiny), "--max-frames", "3", "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"])
    monkeypatch.undo()
    said = capsys.readouterr()
    assert code == 1, said.err
    line = one_error(said.err)
    assert line.startswith("cannot start ZeroMQ's threads for the publisher: the system refused a new thread; ")
    assert "ulimit -u" in line
    assert json.loads(said.out.strip().splitlines()[-1])["end_reason"] == "start-up failed"
    assert not [t for t in threading.enumerate() if t.name == "zmq-headroom"]  # the trial thread was let go


def test_a_subscriber_whose_zeromq_threads_are_refused_raises_resource_error(monkeypatch):
    from perception.subscribe import MaskSubscriber

    _refuse_headroom_threads(monkeypatch)
    with pytest.raises(ResourceError, match="^cannot start ZeroMQ's threads for the subscriber: "):
        MaskSubscriber("tcp://127.0.0.1:1")


def test_the_descriptors_are_checked_before_the_context_is_made(monkeypatch):
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        pytest.skip("no open-file limit in this process")
    monkeypatch.setattr(zmq_context, "_open_files", lambda: soft - 7)
    zmq_context.new_context("the publisher").term()  # 7 left: a publisher fits (7)
    with pytest.raises(ResourceError) as refused:
        zmq_context.new_context("the subscriber", monitor=True)  # 8 with its monitor: not
    assert str(refused.value) == (f"too many open files for ZeroMQ in the subscriber: it needs 8 file descriptors and "
                                  f"the open-file limit (ulimit -n, now {soft}) leaves 7 ({soft - 7} open); raise it "
                                  "(ulimit -n 1024)")


# What libzmq did at such a limit before: "Too many open files (src/epoll.cpp:38)" and SIGABRT.
_LOW_LIMIT = textwrap.dedent("""
    import os, resource, sys
    import zmq
    import perception.cli, perception.commands.listen, perception.subscribe
    held = len(os.listdir("/proc/self/fd")) - 1
    resource.setrlimit(resource.RLIMIT_NOFILE, (held + {spare}, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    sys.exit(perception.cli.main(["listen", "--endpoint", "tcp://127.0.0.1:{port}", "--count", "1", "--duration", "1"]))
""")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to count descriptors")
def test_listen_at_a_low_open_file_limit_is_one_line_not_an_abort(tmp_path, free_tcp_port):
    done = subprocess.run([sys.executable, "-c", _LOW_LIMIT.format(spare=5, port=free_tcp_port)], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 1, (done.returncode, done.stderr)
    line = one_error(done.stderr)
    assert line.startswith("too many open files for ZeroMQ in the subscriber: it needs 8 file descriptors and the "
                           "open-file limit (ulimit -n, now ")
    assert line.endswith("; raise it (ulimit -n 1024)")
    assert "src/" not in done.stderr  # no libzmq assertion
