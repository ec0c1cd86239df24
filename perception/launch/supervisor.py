"""Running a plan: child processes, ``[name]``-prefixed output, respawn with backoff, and signals.

``LaunchSupervisor(plan).run()`` starts each node as ``python -P -m perception <command> ...``
(``perception.spawn``: never a ``perception.py`` from the launch's working folder),
prefixes its output lines with ``[name]``, restarts nodes per their policy and stops everything on
SIGINT/SIGTERM (SIGTERM to every child, then SIGCONT so that a child stopped by SIGSTOP can act on
it, a grace period, then SIGKILL). When a required node is gone for good it stops the rest.
A node found ended as the stop begins (it died just before it) is judged as the run would have judged
it, so the summary says how and when it really ended; a node killed after the grace is named there.

A node that exits with 2 (a bad input: file, flag, model) or 3 (a missing dependency) is never
restarted, whatever its policy: the same command would fail the same way forever. The launch says
so in one line with the node's own last error line; if the node is required it stops everything
and returns that code (2 or 3), otherwise the other nodes keep running.

The exit status says whether a node failed for good during the run (ended non-zero and was not
restarted: no respawn, exit code 2 or 3, or it gave up after ``respawn_max``): 1 then, however the
launch ends (a stop signal, a required node that finished cleanly, every node finished), unless a
required node's own 2 or 3 is returned. At the end, whatever ended it, one summary line per node
that failed for good, was restarted or was down at the stop waiting for its restart: its restarts,
how it last ended and its last error line.

Respawn: the first restart after a quick failure (a run shorter than ``STABLE_RUN_S``) waits
``respawn_delay``; each further quick failure in a row doubles it, from at least ``MIN_BACKOFF_S``
(so a ``respawn_delay`` of 0 backs off too), up to ``MAX_BACKOFF_S``. ``respawn_max`` counts the
restarts since the node last stayed up ``STABLE_RUN_S``: a camera that glitches once a day is
restarted every time, one that never comes up is given up after ``respawn_max`` restarts.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO

from perception.console import GoneSafe
from perception.errors import DependencyError, PerceptionError, start_thread
from perception.launch.plan import LaunchPlan, NodePlan
from perception.signals import die_with_parent, install_signal_handlers
from perception.spawn import child_env

#: A run shorter than this is a quick failure: the delay doubles per quick failure in a row, and a
#: run this long starts both the doubling and the ``respawn_max`` count again.
STABLE_RUN_S = 10.0
#: Upper bound of the doubled respawn delay (unless respawn_delay itself is larger).
MAX_BACKOFF_S = 30.0
#: The least delay from the second quick failure in a row on, doubled per further one: a
#: ``respawn_delay`` of 0 restarts at once the first time, then after 0.5, 1, 2, ... 30 s.
MIN_BACKOFF_S = 0.5
#: How long stopping waits for children after SIGTERM before it sends SIGKILL.
STOP_GRACE_S = 5.0
#: How a node ends when a stop signal reached it too (a service manager that signals the whole control
#: group, not only the launch): exit 0 (its clean stop), the stop signal itself, or 128 + it (a node
#: stopped before its handlers were in place, or its stop unfinished after 20 s; perception/signals.py).
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_STOP_ENDS = {0, *(-s for s in _STOP_SIGNALS), *(128 + s for s in _STOP_SIGNALS)}
#: Exit codes of a ``perception`` command that a restart cannot fix (perception/errors.py), with what
#: they mean. A failing stage (StageError, exit code 1), a live source that is not there yet
#: (SourceUnavailableError, exit code 4: a camera after boot; SubscribersMissingError, also 4: a
#: recorder not started yet for --wait-subscribers) or a signal may be respawned.
NO_RESPAWN_EXIT_CODES = {PerceptionError.exit_code: "a bad input", DependencyError.exit_code: "a missing dependency"}
#: A node's INFO or DEBUG log line (``perception.cli.configure_logging``'s format): not an error line,
#: so a node killed by a signal after "first masks published" is not quoted with that line.
_INFO_LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d [DI] [\w.]+: ")


def respawn_delay(respawn_delay_s: float, quick_failures: int) -> float:
    """Seconds to wait before a restart, after ``quick_failures`` quick failures in a row (0 when
    the run that ended was not quick): ``respawn_delay_s`` the first time, then doubled per quick
    failure from at least ``MIN_BACKOFF_S``, at most ``MAX_BACKOFF_S`` (or ``respawn_delay_s``)."""
    if quick_failures <= 1:
        return respawn_delay_s
    cap = max(MAX_BACKOFF_S, respawn_delay_s)
    doublings = min(quick_failures - 1, 64)  # past the cap long before; 2 ** 1100 overflows a float
    return min(cap, max(respawn_delay_s * 2**doublings, MIN_BACKOFF_S * 2 ** (doublings - 1)))


def _held(pid: int) -> str:
    """Why a node that got SIGTERM and SIGCONT may still run, from its state in /proc (Linux): held
    by a debugger (SIGCONT does not resume a traced process) or blocked in the kernel; else ""."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return ""
    return {b"t": " (it is held by a debugger)", b"T": " (it is stopped)",
            b"D": " (it is blocked in the kernel, e.g. on a hung disk or network file system)"}.get(state, "")


def ended_how(returncode: int, oom_kills_at_start: int | None = None) -> str:
    """``exit code 1``, ``signal SIGKILL``; ``signal 40`` for a signal Python has no name for (the
    real-time signals between SIGRTMIN and SIGRTMAX). A SIGKILL while the memory cgroup's OOM-kill
    count rose from ``oom_kills_at_start`` (read when the node started) is said to be the OOM killer's."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        how = f"signal {signal.Signals(-returncode).name}"
    except ValueError:
        return f"signal {-returncode}"
    if returncode == -signal.SIGKILL and oom_kills_at_start is not None:
        from perception.cgroups import memory, oom_kills, size_text

        now = oom_kills()
        if now is not None and now > oom_kills_at_start:
            limit = memory()
            how += ": killed by the kernel's OOM killer" + (
                f" at its cgroup's memory limit of {size_text(limit.limit)}" if limit is not None else "")
    return how


@dataclass
class _Running:
    plan: NodePlan
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    #: Restarts in all, and since the node last stayed up STABLE_RUN_S (what respawn_max counts).
    restarts: int = 0
    restarts_in_a_row: int = 0
    quick_failures: int = 0
    restart_at: float | None = None
    finished: bool = False
    #: Gone for good with a non-zero end (not restarted, or given up): the launch then exits non-zero.
    failed_for_good: bool = False
    gave_up: bool = False
    returncode: int | None = None
    #: The memory cgroup's OOM-kill count when the node started (perception/cgroups.py; None: unreadable).
    oom_kills_at_start: int | None = None
    last_error_line: str = ""
    #: The node's last end (how, its last error line, the wall-clock time), for the closing summary.
    last_end: tuple[str, str, float] | None = None
    #: Still running at the end of the stop's grace and killed: whatever it was writing is unfinished.
    killed_at_stop: str | None = None
    readers: list[threading.Thread] = dataclasses.field(default_factory=list)


class LaunchSupervisor:
    """Starts the nodes of a plan as child processes and keeps them running per their policy.

    ``run()`` blocks until SIGINT/SIGTERM, until a required node is gone for good (returns its own
    code for a bad input (2) or a missing dependency (3), else 1 when it failed) or until every node
    has finished. Otherwise it returns 0 when no node failed for good during the run, else 1, and
    prints a closing summary of the nodes that failed for good, were restarted or were down waiting
    for a restart.
    ``stop()`` may be called from another thread.
    """

    def __init__(self, plan: LaunchPlan, *, out: IO[str] | None = None, err: IO[str] | None = None) -> None:
        self.plan = plan
        # A stream that is closed (``launch >&-``), gone (``| head``: its reader exited) or full
        # (``> log`` on a full disk) takes no more lines, and the launch goes on supervising: each
        # node's output is still read and dropped, so no node blocks on a full pipe (see GoneSafe).
        self._out = GoneSafe(out if out is not None else sys.stdout)
        self._err = GoneSafe(err if err is not None else sys.stderr)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._nodes = [_Running(plan=n) for n in plan.nodes]
        self._stopped_at: float | None = None  # when the launch began to stop its nodes (monotonic)

    def stop(self) -> None:
        self._stop.set()

    def say(self, text: str) -> None:
        self._write(self._out, f"[launch] {text}\n")

    def run(self) -> int:
        handlers = install_signal_handlers(self._stop)
        try:
            code = self._supervise()
        finally:
            late = self._shutdown()
            handlers.restore()
        if late in NO_RESPAWN_EXIT_CODES and code in (0, 1):
            code = late  # a required node's own 2 or 3, found as the stop began
        elif code == 0 and self._failed_for_good():
            code = 1  # a node that failed for good just before the stop
        self._summarize()
        return code

    def _failed_for_good(self) -> list[str]:
        return [n.plan.name for n in self._nodes if n.failed_for_good]

    def _supervise(self) -> int:
        t0 = time.monotonic()
        for node in self._nodes:
            node.restart_at = t0 + node.plan.delay_s
        while not self._stop.wait(0.05):
            now = time.monotonic()
            for node in self._nodes:
                if node.process is not None and node.process.poll() is not None:
                    verdict = self._on_exit(node, now)
                    if verdict is not None:
                        return verdict
                if node.restart_at is not None and now >= node.restart_at:
                    node.restart_at = None
                    node.restarts += node.started_at > 0
                    self._start(node)
            if all(n.finished for n in self._nodes):
                failed = self._failed_for_good()
                self.say("all nodes finished" + (f"; failed: {', '.join(failed)}" if failed else ""))
                return 1 if failed else 0
        self.say("stop requested; stopping all nodes")
        return 1 if self._failed_for_good() else 0

    def _start(self, node: _Running) -> None:
        from perception.cgroups import oom_kills

        env = child_env(dict(os.environ, PYTHONUNBUFFERED="1"))
        node.oom_kills_at_start = oom_kills()
        # Own session per child: a Ctrl-C in the terminal reaches only the launcher, which then
        # stops the children in order instead of every process racing to exit at once.
        node.process = subprocess.Popen(
            node.plan.command_line(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        node.started_at = time.monotonic()
        node.last_error_line = ""
        readers = [
            threading.Thread(target=self._pump, args=(node.process.stdout, self._out, node, False), daemon=True),
            threading.Thread(target=self._pump, args=(node.process.stderr, self._err, node, True), daemon=True),
        ]
        node.readers = []
        for reader in readers:
            # Refused (a process limit): the node runs on unread; run()'s shutdown stops it, and the
            # error is one line (ResourceError). Only started readers are kept: the shutdown joins them.
            start_thread(reader, f"the thread that reads node {node.plan.name!r}'s output")
            node.readers.append(reader)
        again = f" (restart {node.restarts})" if node.restarts else ""
        self.say(f"started node {node.plan.name!r} (pid {node.process.pid}){again}")

    def _on_exit(self, node: _Running, now: float, *, stopping: bool = False) -> int | None:
        """Judge a node's end: restart it, give it up or stop the launch. ``stopping``: found ended
        as the stop begins, before the launch signalled it; it is judged the same (a failure for good
        is one) but neither restarted nor stopping anything, and the lines say so."""
        code = node.process.returncode
        node.returncode = code
        node.process = None
        for reader in node.readers:
            reader.join(timeout=1.0)
        how = ended_how(code, node.oom_kills_at_start)
        plan = node.plan
        said = node.last_error_line or "(it printed no error line)"
        node.last_end = (how, said, time.time())
        if now - node.started_at < STABLE_RUN_S:
            node.quick_failures += 1
        else:  # it stayed up: the back-off and the respawn_max count start again
            node.quick_failures = node.restarts_in_a_row = 0
        if code in NO_RESPAWN_EXIT_CODES:
            node.finished = node.failed_for_good = True
            self.say(
                f"node {plan.name!r} failed on {NO_RESPAWN_EXIT_CODES[code]} ({how}); not restarting it, "
                f"a restart cannot fix that: {said}"
            )
            if plan.required:
                if not stopping:
                    self.say(f"required node {plan.name!r} is gone; stopping all nodes")
                return code
            return None
        if plan.respawn and (plan.respawn_max == 0 or node.restarts_in_a_row < plan.respawn_max):
            delay = respawn_delay(plan.respawn_delay_s, node.quick_failures)
            node.restarts_in_a_row += 1
            node.restart_at = now + delay  # the summary: down at the stop, waiting to restart
            if stopping:
                self.say(f"node {plan.name!r} ended ({how}) just before the stop; not restarting it: {said}")
            else:
                self.say(f"node {plan.name!r} ended ({how}); restarting in {delay:g} s")
            return None
        node.finished = True
        node.failed_for_good = code != 0
        ended = f"node {plan.name!r} ended ({how})"
        if plan.respawn:
            node.gave_up = True
            in_all = f", {node.restarts} in all" if node.restarts != node.restarts_in_a_row else ""
            restarts = f"{node.restarts_in_a_row} restart{'' if node.restarts_in_a_row == 1 else 's'}"
            ended += (f"; gave up after {restarts} in a row, none of which stayed up "
                      f"{STABLE_RUN_S:g} s (respawn_max {plan.respawn_max}{in_all})")
        if stopping:
            ended += " just before the stop"
        self.say(ended + (f": {said}" if code != 0 else ""))
        if plan.required and not stopping:
            self.say(f"required node {plan.name!r} is gone; stopping all nodes")
            return 0 if code == 0 and not self._failed_for_good() else 1
        return None

    def _summarize(self) -> None:
        """One line per node that failed for good, was restarted, or was down at the stop waiting
        for its restart: an operator reading the end of the log after a night sees the camera that
        was dead all along (also one that died once and waited out a long ``respawn_delay``)."""
        for node in self._nodes:
            if node.killed_at_stop is not None:
                before = (f"; it was restarted {node.restarts} time{'' if node.restarts == 1 else 's'} before"
                          if node.restarts else "")
                self.say(f"summary: node {node.plan.name!r} was killed at the stop (SIGKILL): it did not stop "
                         f"within {STOP_GRACE_S:g} s of its SIGTERM{node.killed_at_stop}, so what it was writing "
                         f"is unfinished{before}")
                continue
            waiting = node.restart_at is not None and not node.finished
            if node.last_end is None or not (node.failed_for_good or node.restarts or waiting):
                continue
            how, said, at = node.last_end
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
            restarts = f"restarted {node.restarts} time{'' if node.restarts == 1 else 's'}"
            if waiting:
                due = max(0.0, node.restart_at - (self._stopped_at or time.monotonic()))
                before = f"; it was {restarts} before" if node.restarts else ""
                state = (f"was down at the stop, waiting to restart (due in {due:.0f} s){before}; it last ended at "
                         f"{when} ({how})")
            elif node.gave_up and node.failed_for_good:
                state = f"gave up at {when} after it was {restarts}; it last ended ({how})"
            elif node.failed_for_good:
                state = f"failed for good at {when} ({how}), not restarted" + (f"; it was {restarts} before" if node.restarts else "")
            else:
                state = f"{restarts}; it last ended at {when} ({how})"
            self.say(f"summary: node {node.plan.name!r} {state}: {said}")

    def _shutdown(self) -> int | None:
        """Stop every running node: SIGTERM, then SIGCONT (as systemd does), so a node stopped by
        SIGSTOP acts on its SIGTERM and finishes its files instead of being killed after the grace
        with the SIGTERM still pending. (SIGTSTP, SIGTTIN and SIGTTOU cannot stop a node: each runs in
        a session of its own, an orphaned process group, where the kernel drops them.) A node that ended
        before its SIGTERM (it died just before the stop) is judged as the run would have judged it
        (``_on_exit``); returns the code that a required one's end calls for, if any."""
        self._stopped_at = time.monotonic()
        signalled = self._stop.is_set()  # a stop signal, not a verdict of the run, ends the launch
        verdict = None
        running = []
        for node in self._nodes:
            if node.process is None:
                continue
            code = node.process.poll()
            if code is None:
                node.process.send_signal(signal.SIGTERM)
                node.process.send_signal(signal.SIGCONT)
                running.append(node)
            elif signalled and code in _STOP_ENDS:
                # Perhaps the stop signal reached it too (a service manager signalling the whole
                # control group): stopped with the launch, as those stopped by the SIGTERM below.
                node.process = None
            else:
                found = self._on_exit(node, self._stopped_at, stopping=True)
                verdict = found if verdict is None else verdict
        deadline = time.monotonic() + STOP_GRACE_S
        for node in running:
            try:
                node.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.killed_at_stop = _held(node.process.pid)
                self.say(f"node {node.plan.name!r} did not stop within {STOP_GRACE_S:g} s"
                         f"{node.killed_at_stop}; killing it")
                node.process.kill()
                node.process.wait()
        for node in self._nodes:
            for reader in node.readers:
                reader.join(timeout=1.0)
        return verdict

    def _pump(self, stream: IO[bytes], sink: GoneSafe, node: _Running, is_stderr: bool) -> None:
        """Copy a node's output to ``sink`` line by line, prefixed; to its end, also once ``sink``
        takes no more (the lines are then read and dropped)."""
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if is_stderr and line.strip() and not _INFO_LOG_LINE.match(line):
                node.last_error_line = line.strip()  # quoted when the node fails for good
            self._write(sink, f"[{node.plan.name}] {line}\n")
        stream.close()

    def _write(self, sink: GoneSafe, text: str) -> None:
        with self._lock:
            sink.write(text)
            sink.flush()
