"""The one signal-handler installer: it sets the stop event, and it always puts back what it replaced."""

from __future__ import annotations

import os
import signal
import threading

from perception.signals import install_signal_handlers


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
