"""The one place that installs signal handlers: ``install_signal_handlers``.

Every command that must end cleanly on Ctrl-C or ``kill`` (finish a file, flush counts, stop
children) installs its handler here, and the handler found before is put back when the command's
block ends, so a command run inside another (tests, ``perception launch``, an embedding program)
leaves the process as it found it. Python only lets the main thread set handlers; elsewhere this
is a logged no-op, and the caller's stop event must then be set another way.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

#: What "stop" means for a long-running command: Ctrl-C and the default ``kill``.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)

Handler = Callable[[int, FrameType | None], Any]


class SignalHandlers:
    """``handler`` on ``signals`` between ``install()`` and ``restore()`` (or as a ``with`` block).

    ``install`` may be called again (e.g. a new attempt) without losing the handlers found the
    first time; ``restore`` puts those back and may be called from the handler itself (a second
    Ctrl-C then reaches the previous handler).
    """

    def __init__(self, handler: Handler, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.handler = handler
        self.signals = signals
        self._previous: dict[signal.Signals, Any] = {}

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def install(self) -> SignalHandlers:
        if threading.current_thread() is not threading.main_thread():
            log.debug("signal handlers not installed: not the main thread")
            return self
        for sig in self.signals:
            previous = signal.signal(sig, self.handler)
            # None: a handler not set from Python; the closest restorable one is the default.
            self._previous.setdefault(sig, signal.SIG_DFL if previous is None else previous)
        return self

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def __enter__(self) -> SignalHandlers:
        return self.install()

    def __exit__(self, *_exc: object) -> None:
        self.restore()


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
