"""A ZeroMQ context that the system's limits leave room for, or one line saying which limit does not.

libzmq starts its I/O thread and its reaper, and opens their mailboxes and pollers, when a context
makes its first socket. When the process limit (``ulimit -u``, a container's pids limit) refuses
one of those threads, or the open-file limit (``ulimit -n``) refuses a descriptor, libzmq aborts
the whole process in C (``Resource temporarily unavailable (src/thread.cpp:241)``, ``Too many open
files (src/epoll.cpp:38)``; exit 134) before Python can see an error: the node's masks stop with
no word of why. pyzmq has no way to ask libzmq beforehand, so the headroom is checked here, just
before the context is made: the descriptors are counted, and the threads are tried (started, then
let go; a thread the system refuses is the same error libzmq would have met).
"""

from __future__ import annotations

import os
import threading
import time

import zmq

from perception.errors import ResourceError, start_thread

#: Threads libzmq starts with a context's first socket: one I/O thread and the reaper.
ZMQ_THREADS = 2
#: Descriptors a context takes with its first socket and one endpoint (measured with pyzmq 27 / libzmq
#: 4.3): the context 1; its I/O thread and reaper, a mailbox and a poller each, and the socket's
#: mailbox, 5; the bound or connected endpoint 1. A connection libzmq cannot open later is not fatal
#: (it retries), so none is kept for those: this is the least a node runs with, not a margin.
ZMQ_FDS = 7
#: What a subscriber's connection monitor adds (measured as above: a listener ran with 8 spare, not 7).
MONITOR_FDS = 1


def new_context(what: str, *, monitor: bool = False) -> zmq.Context:
    """A new ``zmq.Context`` for ``what`` ("the publisher") whose socket will have one endpoint (and a
    connection ``monitor``); ResourceError (one line naming the limit, its value and the fix) when the
    open-file or thread limit would make libzmq abort the process."""
    _check_open_files(what, ZMQ_FDS + (MONITOR_FDS if monitor else 0))
    _check_threads(what)
    return zmq.Context()


def _open_files() -> int | None:
    """The descriptors this process holds, or None where the system does not list them."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder)) - 1  # less the one listing the folder
        except OSError:
            continue
    return None


def _check_open_files(what: str, needed: int) -> None:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):  # not on Linux or macOS
        return
    held = _open_files()
    if soft == resource.RLIM_INFINITY or held is None or soft - held >= needed:
        return
    raise ResourceError(f"too many open files for ZeroMQ in {what}: it needs {needed} file descriptors and the "
                        f"open-file limit (ulimit -n, now {soft}) leaves {max(soft - held, 0)} ({held} open); raise "
                        "it (ulimit -n 1024)")


def _tasks() -> set[str] | None:
    """The ids of this process's threads as the system counts them, or None where it does not list them."""
    try:
        return set(os.listdir("/proc/self/task"))
    except OSError:
        return None


def _check_threads(what: str) -> None:
    """Start (and let go) as many threads as libzmq will: one the system refuses is ResourceError."""
    release = threading.Event()
    started: list[threading.Thread] = []
    try:
        for _ in range(ZMQ_THREADS):
            thread = threading.Thread(target=release.wait, name="zmq-headroom", daemon=True)
            start_thread(thread, f"ZeroMQ's threads for {what}")
            started.append(thread)
    finally:
        release.set()
        for thread in started:
            thread.join()
    # ``join`` returns as a thread's Python state goes, a moment before the system stops counting it:
    # wait (briefly) until it has, so libzmq's threads meet the count the trial met.
    ids = {str(thread.native_id) for thread in started}
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline and ids & (_tasks() or set()):
        time.sleep(0.0005)
