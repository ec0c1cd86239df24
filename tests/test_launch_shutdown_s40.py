"""Stopping a launch lets every node that can still finish do so, and the summary says how each ended.

- A node stopped by SIGSTOP (an operator's ``kill -STOP``, a tool pausing it) when the launch is
  stopped gets SIGCONT after its SIGTERM, so it finishes (a recorder: its split) instead of being
  SIGKILLed after the grace with the SIGTERM still pending. (SIGTSTP, SIGTTIN and SIGTTOU cannot stop
  a node: each runs in a session of its own, an orphaned process group, where the kernel drops them.)
- A node that still runs after the grace is killed with one line, and the summary names it: what it
  was writing is unfinished.
- A node that died just before the stop (within the launch's 50 ms poll) is reported with that end,
  not with its end before.

Stand-in nodes as in test_launch_supervisor: small Python scripts with a SIGTERM handler that writes a
file, as a recorder finishes its split.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
from test_launch_supervisor import RUNS_UNTIL_STOPPED, Output, launch, node

from perception.launch import LaunchPlan, LaunchSupervisor
from perception.launch import supervisor as sup_module

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states in /proc")


def finishes_on_sigterm(done: Path) -> str:
    """A node that, on SIGTERM, 'finishes its split' (writes ``done``) and exits 0; it prints
    ``ready <pid>`` once its handler is in place."""
    return (
        "import os, signal, sys, time\n"
        "def stop(signum, frame):\n"
        f"    open({str(done)!r}, 'w').write('finished')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('ready', os.getpid(), flush=True)\n"
        "while True:\n"
        "    time.sleep(0.05)\n"
    )


def state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rpartition(b")")[2].split()[0].decode()


def test_a_stopped_node_finishes_on_the_launch_stop_instead_of_being_killed(tmp_path):
    done = tmp_path / "split.done"
    out = Output()
    plan = LaunchPlan(file=Path("test.yaml"), arguments={}, nodes=(node("rec", finishes_on_sigterm(done)),))
    supervisor = LaunchSupervisor(plan, out=out, err=out)
    states = []

    def sigstop_then_stop(text: str) -> None:
        # At the node's ``ready <pid>`` line: SIGSTOP it, wait until the kernel has stopped it (at
        # most 20 s), then stop the launch as Ctrl-C does.
        found = re.search(r"\] ready (\d+)", text)
        if not found:
            return
        pid = int(found.group(1))
        os.kill(pid, signal.SIGSTOP)
        for _ in range(2000):
            states.append(state(pid))
            if states[-1] == "T":
                break
            time.sleep(0.01)
        supervisor.stop()

    out.on_line = sigstop_then_stop
    code = supervisor.run()
    text = out.getvalue()
    assert states and states[-1] == "T", (states[-5:], text)  # it was stopped when the launch stopped
    assert "stop requested; stopping all nodes" in text, text
    assert done.read_text() == "finished", text  # its SIGTERM handler ran: the split is finished
    assert "killing it" not in text and "summary: node 'rec'" not in text, text
    assert code == 0, text


def test_a_node_still_running_after_the_grace_is_killed_and_named_in_the_summary(monkeypatch):
    monkeypatch.setattr(sup_module, "STOP_GRACE_S", 0.5)
    ignores_sigterm = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                       "print('ready', flush=True); time.sleep(60)")
    code, out = launch(node("rec", ignores_sigterm), stop_on=r"\[rec\] ready")
    assert "[launch] node 'rec' did not stop within 0.5 s; killing it" in out, out
    assert re.search(r"\[launch\] summary: node 'rec' was killed at the stop \(SIGKILL\): it did not stop within "
                     r"0\.5 s of its SIGTERM, so what it was writing is unfinished\n", out), out
    assert code == 0, out  # a stop is how a launch ends; the node did not fail during the run


class KilledJustBeforeTheStop(LaunchSupervisor):
    """The node is SIGKILLed (an OOM kill) after the launch left its poll loop for the stop, before
    it signalled the nodes: what the launch's 50 ms poll misses."""

    def _shutdown(self):
        process = self._nodes[0].process
        process.kill()
        process.wait()
        return super()._shutdown()


def test_a_node_that_died_just_before_the_stop_is_summarised_with_that_end(tmp_path):
    marker = tmp_path / "ran-once"
    # Fails its first run (exit 1), is restarted, and runs until the recorder is killed below.
    script = (f"import pathlib, sys, time; p = pathlib.Path({str(marker)!r})\n"
              "if not p.exists():\n"
              "    p.touch(); print('perception: error: first run failed', file=sys.stderr); sys.exit(1)\n"
              "print('up again', flush=True); time.sleep(60)\n")
    out = Output()
    plan = LaunchPlan(file=Path("test.yaml"), arguments={},
                      nodes=(node("rec", script, respawn=True, respawn_delay_s=0.0),))
    supervisor = KilledJustBeforeTheStop(plan, out=out, err=out)
    out.on_line = lambda text: "[rec] up again" in text and supervisor.stop()
    code = supervisor.run()
    text = out.getvalue()
    assert "node 'rec' ended (signal SIGKILL) just before the stop; not restarting it" in text, text
    summary = re.search(r"\[launch\] summary: node 'rec' (.*)", text)
    assert summary, text
    # Down at the stop, and its last end is the SIGKILL, not the exit code 1 of its first run.
    assert summary.group(1).startswith("was down at the stop, waiting to restart"), text
    assert "it was restarted 1 time before; it last ended at" in summary.group(1), text
    assert "(signal SIGKILL)" in summary.group(1) and "exit code 1" not in summary.group(1), text
    assert code == 0, text  # respawn_max 0: never given up, so never failed for good


def test_a_node_without_respawn_that_died_just_before_the_stop_failed_for_good(tmp_path):
    # Seen 50 ms earlier it would have failed for good (exit status 1); seen at the stop it still has.
    script = "import sys, time; print('up', flush=True); time.sleep(60)"
    out = Output()
    plan = LaunchPlan(file=Path("test.yaml"), arguments={},
                      nodes=(node("rec", script), node("cam", RUNS_UNTIL_STOPPED)))
    supervisor = KilledJustBeforeTheStop(plan, out=out, err=out)
    out.on_line = lambda text: "[rec] up" in text and supervisor.stop()
    code = supervisor.run()
    text = out.getvalue()
    assert re.search(r"summary: node 'rec' failed for good at .* \(signal SIGKILL\), not restarted", text), text
    assert "summary: node 'cam'" not in text, text
    assert code == 1, text
