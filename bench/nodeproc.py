"""The process side of a node under the bench: its ``perception run`` command line, starting it so
that it dies with the bench, stopping it cleanly (SIGINT, then SIGTERM, then SIGKILL), the bench's
own stop signals, and the node's last error line. ``bench/node.py`` measures what such a node
publishes; ``bench/multicamera.py`` starts several.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perception.errors import PerceptionError
from perception.signals import STOP_SIGNALS, SignalHandlers, die_with_parent
from perception.spawn import child_env, perception_command

if TYPE_CHECKING:
    from perception.bench.pipeline import PipelineBenchConfig

#: How long the node gets to exit after SIGINT before it is terminated.
SHUTDOWN_TIMEOUT_S = 10.0
#: Camera name (namespace ``perception/<name>``) the benchmarked node publishes under.
BENCH_CAMERA = "bench"


#: The node's exit statuses the bench passes on as its own (``perception.errors``: 2 a bad input,
#: 3 a missing dependency, 4 a camera or stream not there); any other failure is the bench's 2.
PASSED_ON_EXIT_CODES = (2, 3, 4)


class NodeFailed(PerceptionError):
    """The node under test exited or never published; the message carries its last error line.
    ``status``: the node's exit status, which becomes the bench's (``PASSED_ON_EXIT_CODES``), so a
    missing camera is 4 from ``bench pipeline`` as from ``perception run``."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        if status in PASSED_ON_EXIT_CODES:
            self.exit_code = status


def exited(returncode: int | None) -> str:
    """How the node ended, for an error line: ``exited with status 2``, or for a negative status
    (``Popen``'s killed-by-signal) ``was killed by SIGKILL (status -9)``."""
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name} (status {returncode})"
    return f"exited with status {returncode}"


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_command(cfg: PipelineBenchConfig, model: Path, endpoint: str, cameras: tuple[str, ...] = ()) -> list[str]:
    """The ``perception run`` command line of the node under test: one camera (``BENCH_CAMERA``),
    or ``cameras`` batched in one node, each reading ``cfg.source``. Written from run's
    declarations (``perception.flags.flags_for``), the settings the bench shares with run."""
    from perception.flags import flags_for
    from perception.run_config import RunConfig

    settings: dict[str, Any] = {"model": str(model), "endpoint": endpoint}
    if cameras:
        settings["source"] = [f"{name}={cfg.source}" for name in cameras]
    else:
        settings.update(source=cfg.source, camera_name=BENCH_CAMERA)
    # None (not given): the node's own default
    settings.update(engine=cfg.engine, provider=cfg.provider, threads=cfg.threads, streams=cfg.streams,
                    precision=cfg.precision, warmup=cfg.warmup, loop=cfg.loop, fps=cfg.fps, width=cfg.width,
                    height=cfg.height)
    if cfg.peak_rate or cameras:
        settings["queue"] = "latest"
    if len(cameras) > 1:
        settings["batch_timeout_ms"] = cfg.batch_timeout_ms
    # perception.spawn: never a perception.py from the folder the bench was started in
    return perception_command("-q", "run", *flags_for(RunConfig, settings, where="perception bench"))


def start_node(cmd: list[str], log_path: Path, out_path: Path) -> subprocess.Popen:
    """Start a node under test, its stderr into ``log_path`` and stdout (its final stats line)
    into ``out_path``. It dies with the bench: Linux sends it SIGTERM when the thread that started
    it ends, also by SIGKILL (``die_with_parent``, as the launcher's nodes and ``--engine auto``'s
    probe), so a bench killed by its supervisor or a CI runner leaves no node running on (a
    synthetic source never ends). Start it from the main thread, which outlives it."""
    env = child_env({**os.environ, "PYTHONUNBUFFERED": "1"})
    with open(log_path, "w") as err, open(out_path, "w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=err, env=env, preexec_fn=die_with_parent())


class BenchStopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP reached the bench: raised in its main thread as Ctrl-C raises
    KeyboardInterrupt, so the same ``finally`` blocks stop its nodes with SIGINT (their own clean
    shutdown) and the bench ends as after Ctrl-C ("perception: interrupted", status 130). A
    KeyboardInterrupt, so that no ``except Exception`` on the way swallows it."""


#: What stops the bench besides Ctrl-C (KeyboardInterrupt already): ``kill``, ``docker stop``,
#: systemd, a CI runner's cancel (SIGTERM), and the hangup of its terminal (SIGHUP; still ignored
#: under nohup).
BENCH_STOP_SIGNALS = tuple(s for s in STOP_SIGNALS if s != signal.SIGINT)


class StopOnSignal:
    """While nodes run: a stop signal raises ``BenchStopped`` in the main thread, once. Its
    default action would end the bench at once, skipping ``stop_node``; the node would then get
    only its parent-death SIGTERM. Once ``stopping`` is set (the nodes are being stopped), a signal
    is noted and the stop goes on: ``stop_node`` is bounded, and SIGKILL still ends the bench.
    Off the main thread Python sets no handlers, and this does nothing."""

    def __init__(self) -> None:
        self.stopping = False
        self.signal: str | None = None
        self._handlers = SignalHandlers(self._on_signal, BENCH_STOP_SIGNALS)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.signal = self.signal or signal.Signals(signum).name
        if not self.stopping:
            self.stopping = True
            raise BenchStopped(self.signal)

    def __enter__(self) -> StopOnSignal:
        self._handlers.install()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._handlers.restore()


def stop_node(proc: subprocess.Popen) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # the node's own clean shutdown (closes sockets, logs totals)
        try:
            proc.wait(SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return proc.returncode


#: What starts the node's own error line; the bench's error line has it already.
ERROR_PREFIX = "perception: error: "


def last_line(log_path: Path) -> str:
    """The node's last line of stderr (its error, when it failed), without the ``perception: error:``
    that the bench's own error line starts with (it read "error: ...: perception: error: ...")."""
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    return lines[-1].removeprefix(ERROR_PREFIX) if lines else "no output"
