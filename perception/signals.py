"""The one place that installs signal handlers: ``install_signal_handlers``.

Every command that must end cleanly on Ctrl-C or ``kill`` (finish a file, flush counts, stop
children) installs its handler here, and the handler found before is put back when the command's
block ends, so a command run inside another (tests, ``perception launch``, an embedding program)
leaves the process as it found it. Python only lets the main thread set handlers; elsewhere this
is a logged no-op, and the caller's stop event must then be set another way.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

#: What "stop" means for a long-running command: Ctrl-C, the default ``kill``, and the hangup of
#: the terminal or ssh session it runs in (unless started under ``nohup``, which ignores it).
STOP_SIGNALS: tuple[signal.Signals, ...] = (
    signal.SIGINT, signal.SIGTERM, *((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()))

Handler = Callable[[int, FrameType | None], Any]

#: How long a command may take to finish once a stop signal came before the process exits anyway
#: (``SignalHandlers(grace_s=...)``, ``exit_if_stuck``): a node whose launcher was killed gets one
#: SIGTERM from the kernel and must never hang on after it, holding its port.
STOP_GRACE_S = 20.0

_first_stop: int | None = None  # the first stop signal these handlers caught in this process


#: prctl option: the signal a process gets when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], Any] | None:
    """The ``preexec_fn`` for a child process that must not outlive this one: Linux sends it SIGTERM
    when the thread that started it (and so its parent) dies, also by SIGKILL or a crash, so it never
    runs on as an orphan (a launcher's nodes; ``--engine auto``'s probe, which would keep two cores
    busy and then write a verdict timed beside whatever ran next). Start the child from a thread
    that outlives it. subprocess has no option for this (PR_SET_PDEATHSIG), hence ctypes; libc is
    loaded here, in the parent, so the child runs no dynamic loading between fork and exec (other
    threads may hold the loader's lock). None (no ``preexec_fn``) off Linux."""
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def force_exit(signum: int, why: str) -> None:
    """End the process now, from any thread, with one line and the status of death by ``signum``."""
    os.write(2, f"perception: error: {why}; exiting now without finishing\n".encode())
    os._exit(128 + signum)


def exit_if_stuck(grace_s: float = STOP_GRACE_S) -> None:
    """After a command stopped by a signal has returned, make sure the process ends: whatever
    still holds it (a thread that will not join) gets ``grace_s`` seconds, then ``force_exit``.
    For the program's own exit path only (``perception.cli`` run as a program), never a library call."""
    if _first_stop is not None:
        name = signal.Signals(_first_stop).name
        timer = threading.Timer(grace_s, force_exit, (_first_stop, f"still exiting {grace_s:g} s after {name}"))
        timer.daemon = True
        timer.start()


def exit_past_native_threads(code: int | None) -> None:
    """End the program now with ``code`` when a stage thread of ours is still alive as it returns
    (``perception-*``: a capture thread blocked in OpenCV's read of a hung stream, an inference still
    in a backend). The interpreter's own exit would go on with that thread in native code, and when
    its call returns during finalization the C++ runtime aborts the process ("terminate called
    without an active exception", exit 134) after the final stats were printed: a clean stop that a
    supervisor sees as a crash. Everything the command owns is closed by then (files, sockets with
    their linger), so only the buffered output is flushed first. For the program's own exit path
    only (``perception.cli`` run as a program), never a library call."""
    stuck = [t.name for t in threading.enumerate()
             if t.daemon and t.is_alive() and t.name.startswith("perception-")]
    if not stuck:
        return
    logging.getLogger(__name__).debug("exiting past thread(s) still in native code: %s", ", ".join(stuck))
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


_program = False  # perception.cli runs as the program (``as_program``), not a command in process
_exit_code: int | None = None  # the command's status once its work and output are done (``command_done``)
_ignoring_at_exit = False


def as_program() -> None:
    """``perception.cli`` runs as the program (the process ends when the command returns): from
    now on a stop signal that finds no command handler of its own, once a stop is under way or the
    command is done, ends the process as ``_program_handler`` says instead of by Python's default
    action (which killed it with no line, after a clean stop). Never called in process."""
    global _program
    _program = True


def command_done(code: int) -> None:
    """The command has done its work and written its output; ``code`` is its exit status. In the
    program (``as_program``) a stop signal no longer changes how the process ends: from now on it
    ends the process at once with ``code``, no line (nothing is left unfinished; only the exit was
    left). From the interpreter's exit functions on, where Python puts its default handlers back
    before tearing its modules down, stop signals are ignored, with ``signal.alarm`` as the deadline
    of a teardown that hangs. A no-op in process (tests, an embedding program)."""
    global _exit_code, _ignoring_at_exit
    if not _program:
        return
    _exit_code = code
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) in _DEFAULTS:  # a command handler still installed keeps the signal
            signal.signal(sig, _program_handler)
    if not _ignoring_at_exit:
        _ignoring_at_exit = True
        atexit.register(_ignore_stop_signals)  # the last registered runs first: after the threads are joined


def _exit_now(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # also a flush that the signal interrupted
            stream.flush()
    os._exit(code)


def _program_handler(signum: int, _frame: FrameType | None) -> None:
    """A stop signal in the program with no command handler installed: once the command is done,
    exit at once with its status; while its stop is still finishing (a command handler restored,
    its last lines not out), the second stop's one line and 130/143, as ``_StopWatch`` would."""
    if _exit_code is not None:
        _exit_now(_exit_code)
    if _first_stop is not None:
        force_exit(signum, f"a second stop signal ({signal.Signals(signum).name}) while stopping")
    if signum == signal.SIGINT:  # neither (not installed so): what Python's defaults do
        raise KeyboardInterrupt
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _ignore_stop_signals() -> None:
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "alarm"):
        signal.alarm(int(STOP_GRACE_S))


#: What a stop signal's handler is when nothing of this program's is installed.
_DEFAULTS = (signal.SIG_DFL, signal.default_int_handler, None)


class SignalHandlers:
    """``handler`` on ``signals`` between ``install()`` and ``restore()`` (or as a ``with`` block).

    ``install`` may be called again (e.g. a new attempt) without losing the handlers found the
    first time; ``restore`` puts those back and may be called from the handler itself (a second
    Ctrl-C then reaches the previous handler).

    With ``grace_s``, a stop must finish in time: the first signal starts a ``grace_s`` deadline
    and a second signal ends the process at once (``force_exit``), also while the main thread is
    blocked in a C call (``_StopWatch``); ``restore`` cancels the deadline.
    """

    def __init__(self, handler: Handler, signals: tuple[signal.Signals, ...] = STOP_SIGNALS, *,
                 grace_s: float | None = None) -> None:
        self.handler = handler
        self.signals = signals
        self.grace_s = grace_s
        self._previous: dict[signal.Signals, Any] = {}
        self._watch: _StopWatch | None = None

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def install(self) -> SignalHandlers:
        if threading.current_thread() is not threading.main_thread():
            log.debug("signal handlers not installed: not the main thread")
            return self
        for sig in self.signals:
            if sig is getattr(signal, "SIGHUP", None) and sig not in self._previous \
                    and signal.getsignal(sig) is signal.SIG_IGN:
                continue  # nohup (or a supervisor) asked for hangups to be ignored: they stay so
            previous = signal.signal(sig, self._on_signal)
            # None: a handler not set from Python; the closest restorable one is the default.
            self._previous.setdefault(sig, signal.SIG_DFL if previous is None else previous)
        if self.grace_s is not None and self._watch is None:
            try:
                self._watch = _StopWatch(self.grace_s, self.signals)
            except RuntimeError as exc:
                if "can't start new thread" not in str(exc):
                    raise
                # A process or memory limit (ulimit -u/-v): the stop still works through Python's
                # handlers, without the deadline kept below them; the command's own threads then
                # meet the limit and say so in one line.
                log.debug("no stop deadline below the signal handlers: %s", exc)
        return self

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        global _first_stop
        _first_stop = _first_stop or signum
        self.handler(signum, frame)

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            if _program and previous in _DEFAULTS and (_first_stop is not None or _exit_code is not None):
                # The program's last stretch (the stop's last lines, the return): a further signal
                # must not meet the default action, which kills the process by the signal.
                previous = _program_handler
            signal.signal(sig, previous)
        self._previous.clear()
        if self._watch is not None:
            self._watch.stop()
            self._watch = None

    def __enter__(self) -> SignalHandlers:
        return self.install()

    def __exit__(self, *_exc: object) -> None:
        self.restore()


class _StopWatch:
    """The stop deadline, kept below Python's signal handlers: CPython runs a Python handler only
    when the main thread is back in bytecode, so a main thread blocked in a C call (OpenCV opening
    a stream that never answers, for up to --read-timeout) would hold the first signal's deadline
    and a second signal's forced exit until the call returned. ``signal.set_wakeup_fd`` has the C
    handler write each signal's number to a pipe at once; this thread reads it, starts the
    ``grace_s`` deadline at the first stop signal and ends the process at the second."""

    def __init__(self, grace_s: float, signals: tuple[signal.Signals, ...]) -> None:
        self.grace_s = grace_s
        self.signals = {int(s) for s in signals}
        self._deadline: threading.Timer | None = None
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)  # the C handler must never block on a full pipe
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="stop-watch", daemon=True)
        try:
            self._thread.start()
        except RuntimeError:  # refused by a limit: hand the wakeup fd back, as stop() does
            signal.set_wakeup_fd(self._previous_fd)
            os.close(self._write)
            os.close(self._read)
            raise

    def _watch(self) -> None:
        stops = 0
        while data := os.read(self._read, 64):  # b"" once stop() closed the write end
            for signum in data:
                if signum not in self.signals:
                    continue
                stops += 1
                name = signal.Signals(signum).name
                if stops > 1 and _exit_code is not None:  # the command is done, its output out
                    _exit_now(_exit_code)
                if stops > 1:
                    force_exit(signum, f"a second stop signal ({name}) while stopping")
                self._deadline = threading.Timer(self.grace_s, force_exit,
                                                 (signum, f"still stopping {self.grace_s:g} s after {name}"))
                self._deadline.daemon = True
                try:
                    self._deadline.start()
                except RuntimeError:  # refused by a limit: no deadline; a second signal still ends it
                    self._deadline = None

    def stop(self) -> None:
        """Hand the wakeup fd back, end the thread and cancel the deadline (main thread only)."""
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._write)
        self._thread.join(timeout=1.0)
        os.close(self._read)
        if self._deadline is not None:
            self._deadline.cancel()


def install_signal_handlers(
    handler: Handler | threading.Event, signals: tuple[signal.Signals, ...] = STOP_SIGNALS
) -> SignalHandlers:
    """Install ``handler`` (or, for an Event, "set it") on ``signals``; returns the installed
    ``SignalHandlers``, to ``restore()`` or to use as a ``with`` block::

        with install_signal_handlers(stop):
            run_until(stop)
    """
    if isinstance(handler, threading.Event):
        event = handler
        handler = lambda *_: event.set()  # noqa: E731 - a one-line adapter
    return SignalHandlers(handler, signals).install()


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def interrupt_on_stop_signals() -> SignalHandlers:
    """For a batch command (``eval``, ``synth``, ``train``, ``export``): SIGTERM and SIGHUP stop it
    the way Ctrl-C does, as a KeyboardInterrupt, so its clean-up runs and the dispatcher prints its
    one line with Ctrl-C's status (130) whichever stop signal it was. Without this, SIGTERM's default
    action ends the process at once with 143 and no line (a half-written file stays). Use as a
    ``with`` block; the handlers found before come back at its end (a nested handler, such as
    training's "finish this step", takes precedence while it is installed)."""
    return install_signal_handlers(_interrupt, STOP_SIGNALS)


class StartupSignals:
    """SIGINT/SIGTERM handling from the first instruction of ``perception run`` to its last.

    Installed before anything heavy is imported: ``perception.cli`` calls ``install()`` before it
    imports the command (this module needs only the standard library), so only Python's own
    start-up and the dispatcher's imports (about 50 ms) come before it.
    Until the pipeline runs, a signal is only recorded and start-up stops at the next step
    (``reached``), so the node still exits 0 with a final stats document that says how far start-up
    got; once the pipeline exists, a signal stops it like any other end.
    """

    def __init__(self) -> None:
        self.signal: str | None = None
        self.step = "starting"
        self.pipeline: Any = None
        self._handlers = SignalHandlers(self._on_signal, grace_s=STOP_GRACE_S)

    @property
    def installed(self) -> bool:
        return self._handlers.installed

    def install(self) -> None:
        """Catch the signals from now on, with a fresh state."""
        self.signal, self.step, self.pipeline = None, "starting", None
        self._handlers.install()

    def uninstall(self) -> None:
        """Give the signals back to the handlers found at ``install``."""
        self._handlers.restore()

    def _on_signal(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        self.signal = self.signal or name
        if self.pipeline is not None:
            self.pipeline.stop(f"signal {name}")

    def reached(self, step: str) -> None:
        """Start-up is at ``step``; raises StartupInterrupted when a signal came before."""
        if self.signal is not None:
            raise StartupInterrupted
        self.step = step


class StartupInterrupted(Exception):
    """A signal arrived during start-up (before the pipeline ran)."""


#: The one ``perception run`` start-up state of this process (``perception.cli`` installs it first).
STARTUP_SIGNALS = StartupSignals()


def install_startup_signals() -> None:
    """Catch SIGINT/SIGTERM from now on (``perception.cli`` calls this first for ``run``)."""
    STARTUP_SIGNALS.install()
