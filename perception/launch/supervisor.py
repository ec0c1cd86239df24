"""Running a plan: child processes, ``[name]``-prefixed output, respawn with backoff, and signals.

``LaunchSupervisor(plan).run()`` starts each node as ``python -m perception <command> ...``,
prefixes its output lines with ``[name]``, restarts nodes per their policy and stops everything on
SIGINT/SIGTERM (SIGTERM to every child, a grace period, then SIGKILL), returning 0; when a required
node is gone for good it stops the rest and returns 1 (0 if that node finished cleanly).

A node that exits with 2 (a bad input: file, flag, model) or 3 (a missing dependency) is never
restarted, whatever its policy: the same command would fail the same way forever. The launch says
so in one line with the node's own last error line; if the node is required it stops everything
and returns that code (2 or 3), otherwise the other nodes keep running.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO

from perception.errors import DependencyError, PerceptionError
from perception.launch.plan import LaunchPlan, NodePlan
from perception.signals import die_with_parent, install_signal_handlers

#: A node restarted this many times in a row without staying up this long has its delay doubled.
STABLE_RUN_S = 10.0
#: Upper bound of the doubled respawn delay (unless respawn_delay itself is larger).
MAX_BACKOFF_S = 30.0
#: How long stopping waits for children after SIGTERM before it sends SIGKILL.
STOP_GRACE_S = 5.0
#: Exit codes of a ``perception`` command that a restart cannot fix (perception/errors.py), with what
#: they mean. A failing stage (StageError, exit code 1), a live source that is not there yet
#: (SourceUnavailableError, exit code 4: a camera after boot; SubscribersMissingError, also 4: a
#: recorder not started yet for --wait-subscribers) or a signal may be respawned.
NO_RESPAWN_EXIT_CODES = {PerceptionError.exit_code: "a bad input", DependencyError.exit_code: "a missing dependency"}


@dataclass
class _Running:
    plan: NodePlan
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    quick_failures: int = 0
    restart_at: float | None = None
    finished: bool = False
    returncode: int | None = None
    last_error_line: str = ""
    readers: list[threading.Thread] = dataclasses.field(default_factory=list)


class LaunchSupervisor:
    """Starts the nodes of a plan as child processes and keeps them running per their policy.

    ``run()`` blocks until SIGINT/SIGTERM (returns 0), until a required node is gone for good
    (returns its failure as 1, its own code for a bad input (2) or a missing dependency (3), or 0
    when it exited cleanly), or until every node has finished (0 when all exited 0, else 1).
    ``stop()`` may be called from another thread.
    """

    def __init__(self, plan: LaunchPlan, *, out: IO[str] | None = None, err: IO[str] | None = None) -> None:
        self.plan = plan
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._nodes = [_Running(plan=n) for n in plan.nodes]

    def stop(self) -> None:
        self._stop.set()

    def say(self, text: str) -> None:
        self._write(self._out, f"[launch] {text}\n")

    def run(self) -> int:
        handlers = install_signal_handlers(self._stop)
        try:
            return self._supervise()
        finally:
            self._shutdown()
            handlers.restore()

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
                failed = [n.plan.name for n in self._nodes if n.returncode != 0]
                self.say("all nodes finished" + (f"; failed: {', '.join(failed)}" if failed else ""))
                return 1 if failed else 0
        self.say("stop requested; stopping all nodes")
        return 0

    def _start(self, node: _Running) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
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
        node.readers = [
            threading.Thread(target=self._pump, args=(node.process.stdout, self._out, node, False), daemon=True),
            threading.Thread(target=self._pump, args=(node.process.stderr, self._err, node, True), daemon=True),
        ]
        for reader in node.readers:
            reader.start()
        again = f" (restart {node.restarts})" if node.restarts else ""
        self.say(f"started node {node.plan.name!r} (pid {node.process.pid}){again}")

    def _on_exit(self, node: _Running, now: float) -> int | None:
        code = node.process.returncode
        node.returncode = code
        node.process = None
        for reader in node.readers:
            reader.join(timeout=1.0)
        how = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
        plan = node.plan
        if code in NO_RESPAWN_EXIT_CODES:
            node.finished = True
            said = node.last_error_line or "(it printed no error line)"
            self.say(
                f"node {plan.name!r} failed on {NO_RESPAWN_EXIT_CODES[code]} ({how}); not restarting it, "
                f"a restart cannot fix that: {said}"
            )
            if plan.required:
                self.say(f"required node {plan.name!r} is gone; stopping all nodes")
                return code
            return None
        if plan.respawn and (plan.respawn_max == 0 or node.restarts < plan.respawn_max):
            node.quick_failures = node.quick_failures + 1 if now - node.started_at < STABLE_RUN_S else 0
            cap = max(MAX_BACKOFF_S, plan.respawn_delay_s)
            delay = min(cap, plan.respawn_delay_s * 2 ** max(0, node.quick_failures - 1))
            node.restart_at = now + delay
            self.say(f"node {plan.name!r} ended ({how}); restarting in {delay:g} s")
            return None
        node.finished = True
        gave_up = f"; gave up after {node.restarts} restarts" if plan.respawn else ""
        self.say(f"node {plan.name!r} ended ({how}){gave_up}")
        if plan.required:
            self.say(f"required node {plan.name!r} is gone; stopping all nodes")
            return 0 if code == 0 else 1
        return None

    def _shutdown(self) -> None:
        running = [n for n in self._nodes if n.process is not None and n.process.poll() is None]
        for node in running:
            node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for node in running:
            try:
                node.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"node {node.plan.name!r} did not stop within {STOP_GRACE_S:g} s; killing it")
                node.process.kill()
                node.process.wait()
        for node in self._nodes:
            for reader in node.readers:
                reader.join(timeout=1.0)

    def _pump(self, stream: IO[bytes], sink: IO[str], node: _Running, is_stderr: bool) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if is_stderr and line.strip():
                node.last_error_line = line.strip()  # quoted when the node fails for good
            self._write(sink, f"[{node.plan.name}] {line}\n")
        stream.close()

    def _write(self, sink: IO[str], text: str) -> None:
        with self._lock:
            sink.write(text)
            sink.flush()
