"""The launch supervisor's verdicts with stand-in nodes: small Python scripts instead of ``perception``
commands, so exit codes, signals and restarts are exact and quick.

What an operator (or the systemd unit / script around ``perception launch``) relies on: the exit
status says a node failed for good, however the launch ended; a respawn delay of 0 still backs off;
``respawn_max`` counts restarts in a row, not over the whole run; a closing summary names the nodes
that failed or were restarted; a node killed by any signal is reported, never a traceback.
"""

from __future__ import annotations

import io
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from perception.launch import LaunchPlan, LaunchSupervisor, NodePlan
from perception.launch import supervisor as sup_module


@dataclass(frozen=True)
class ScriptNode(NodePlan):
    """A node whose process is ``python -c script``."""

    script: str = ""

    def command_line(self) -> list[str]:
        return [sys.executable, "-c", self.script]


def node(name: str, script: str, **policy) -> ScriptNode:
    fields = {"respawn": False, "respawn_delay_s": 1.0, "respawn_max": 0, "required": False, "delay_s": 0.0, **policy}
    return ScriptNode(name=name, kind="listen", command="listen", parameters={}, argv=(),
                      source_file=Path("test.yaml"), script=script, **fields)


class Output(io.StringIO):
    """The launcher's output; calls ``on_line`` with each line (to stop the launch at a point)."""

    def __init__(self) -> None:
        super().__init__()
        self.on_line = None

    def write(self, text: str) -> int:
        if self.on_line is not None:
            self.on_line(text)
        return super().write(text)


def launch(*nodes: ScriptNode, stop_on: str | None = None) -> tuple[int, str]:
    """Run the nodes under a LaunchSupervisor; stop it (as SIGTERM does) at the first line matching
    ``stop_on``. Returns (exit status, output)."""
    out = Output()
    supervisor = LaunchSupervisor(LaunchPlan(file=Path("test.yaml"), arguments={}, nodes=nodes), out=out, err=out)
    if stop_on is not None:
        out.on_line = lambda text: re.search(stop_on, text) and supervisor.stop()
    return supervisor.run(), out.getvalue()


def fails(code: int, line: str) -> str:
    return f"import sys; print({line!r}, file=sys.stderr); sys.exit({code})"


RUNS_UNTIL_STOPPED = "import time; time.sleep(60)"
BAD_INPUT = fails(2, "perception: error: out.mcap already exists; pass --overwrite")


def test_a_stop_signal_exits_1_when_a_node_failed_for_good(tmp_path):
    # A recorder that never ran, then Ctrl-C / SIGTERM: the unit or script around the launch must see it.
    code, out = launch(node("rec", BAD_INPUT, respawn=True), node("cam", RUNS_UNTIL_STOPPED),
                       stop_on=r"not restarting it")
    assert "stop requested; stopping all nodes" in out
    assert code == 1, out
    summary = re.search(r"\[launch\] summary: node 'rec' failed for good at .* \(exit code 2\), not restarted: (.*)", out)
    assert summary and summary.group(1) == "perception: error: out.mcap already exists; pass --overwrite", out
    assert "summary: node 'cam'" not in out  # it neither failed nor restarted


def test_a_required_node_that_ends_cleanly_exits_1_when_another_failed_for_good(tmp_path):
    marker = tmp_path / "rec-failed"
    rec = f"import pathlib; pathlib.Path({str(marker)!r}).touch(); " + BAD_INPUT
    # Ends cleanly a second after the recorder failed (the launch has long seen that by then).
    cam = (f"import os, sys, time\ndeadline = time.monotonic() + 30\n"
           f"while not os.path.exists({str(marker)!r}) and time.monotonic() < deadline: time.sleep(0.02)\n"
           "time.sleep(1)\nsys.exit(0)")
    code, out = launch(node("rec", rec), node("cam", cam, required=True))
    assert "required node 'cam' is gone; stopping all nodes" in out
    assert code == 1, out
    assert re.search(r"summary: node 'rec' failed for good .*out\.mcap already exists", out), out


def test_without_a_failure_the_launch_exits_0_however_it_ends():
    code, out = launch(node("cam", "pass", required=True), node("other", RUNS_UNTIL_STOPPED))
    assert code == 0 and "required node 'cam' is gone" in out, out
    code, out = launch(node("cam", RUNS_UNTIL_STOPPED), stop_on=r"started node 'cam'")
    assert code == 0 and "stop requested" in out, out
    assert "summary:" not in out


def test_a_respawn_delay_of_0_still_backs_off(monkeypatch):
    monkeypatch.setattr(sup_module, "MIN_BACKOFF_S", 0.01)  # the floor, small for the test
    dead = fails(4, "perception: error: camera /dev/video9 not found")
    code, out = launch(node("cam", dead, respawn=True, respawn_delay_s=0.0, respawn_max=5))
    # The first restart at once, then from the floor, doubled per quick failure.
    assert re.findall(r"restarting in (\S+) s", out) == ["0", "0.01", "0.02", "0.04", "0.08"], out
    gave_up = re.search(r"node 'cam' ended \(exit code 4\); gave up after 5 restarts in a row.*", out)
    assert gave_up and gave_up.group(0).endswith(": perception: error: camera /dev/video9 not found"), out
    assert re.search(r"summary: node 'cam' gave up at .* after it was restarted 5 times; it last ended \(exit code 4\): "
                     r"perception: error: camera /dev/video9 not found", out), out
    assert code == 1 and "all nodes finished; failed: cam" in out


def test_the_back_off_sequence():
    delays = [sup_module.respawn_delay(0.0, n) for n in range(1, 10)]
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert [sup_module.respawn_delay(1.0, n) for n in range(0, 8)] == [1.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert sup_module.respawn_delay(0.05, 2) == 0.5
    assert sup_module.respawn_delay(60.0, 5) == 60.0  # a delay above the cap is kept
    # A camera dead all night at the 30 s cap reaches 1,025 quick failures in under 9 hours.
    assert sup_module.respawn_delay(1.0, 5000) == 30.0


def test_respawn_max_counts_restarts_in_a_row_not_over_the_whole_run(tmp_path, monkeypatch):
    monkeypatch.setattr(sup_module, "STABLE_RUN_S", 0.2)  # "stayed up", short for the test
    count = tmp_path / "runs"
    # Each run stays up 0.4 s, then fails (a glitch once a day); the fifth run fails for good.
    glitch = (f"import pathlib, sys, time\np = pathlib.Path({str(count)!r})\nn = int(p.read_text()) + 1 if p.exists() else 1\n"
              "p.write_text(str(n))\nif n == 5: print('perception: error: stop here', file=sys.stderr); sys.exit(2)\n"
              "time.sleep(0.4)\nprint('perception: error: glitch', file=sys.stderr)\nsys.exit(1)")
    code, out = launch(node("cam", glitch, respawn=True, respawn_delay_s=0.0, respawn_max=2))
    assert "started node 'cam'" in out and "(restart 4)" in out, out
    assert "gave up" not in out
    assert code == 1
    assert re.search(r"summary: node 'cam' failed for good at .* \(exit code 2\), not restarted; it was restarted "
                     r"4 times before: perception: error: stop here", out), out


def test_a_restarted_node_that_runs_again_is_in_the_summary_but_not_a_failure(tmp_path):
    count = tmp_path / "runs"
    once = (f"import pathlib, sys, time\np = pathlib.Path({str(count)!r})\nfirst = not p.exists()\np.touch()\n"
            "if first: print('perception: error: camera glitch', file=sys.stderr); sys.exit(4)\ntime.sleep(60)")
    code, out = launch(node("cam", once, respawn=True, respawn_delay_s=0.0), stop_on=r"\(restart 1\)")
    assert code == 0, out
    assert re.search(r"summary: node 'cam' restarted 1 time; it last ended at .* \(exit code 4\): "
                     r"perception: error: camera glitch", out), out


def test_a_node_killed_by_a_real_time_signal_is_reported_not_a_traceback():
    number = signal.SIGRTMIN + 6  # 40 on Linux: no name in Python's signal.Signals
    if number in {s.value for s in signal.Signals}:
        pytest.skip("this platform names that signal")
    code, out = launch(node("cam", f"import os; os.kill(os.getpid(), {int(number)})"))
    assert f"node 'cam' ended (signal {int(number)})" in out, out
    assert code == 1 and "all nodes finished; failed: cam" in out
    assert "Traceback" not in out


def test_the_quoted_error_line_is_not_an_info_log_line():
    # Killed after its start-up logging: the last warning is quoted, not "first masks published".
    script = ("import os, signal, sys\n"
              "print('06:25:30 W perception.sources: camera 0 gave a short frame', file=sys.stderr)\n"
              "print('06:25:33 I perception.pipeline: first masks published', file=sys.stderr, flush=True)\n"
              "os.kill(os.getpid(), signal.SIGKILL)")
    code, out = launch(node("cam", script))
    assert code == 1
    ended = re.search(r"\[launch\] node 'cam' ended \(signal SIGKILL\): (.*)", out)
    assert ended and ended.group(1) == "06:25:30 W perception.sources: camera 0 gave a short frame", out
    assert re.search(r"summary: node 'cam' failed for good at .* \(signal SIGKILL\), not restarted: "
                     r"06:25:30 W perception.sources: camera 0 gave a short frame", out), out
