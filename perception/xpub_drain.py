"""How ``XpubCore.drain`` closes the publisher at the end of a replay (``drain_and_close``), and
what it watches: the subscriber connections of a bound endpoint, found among the process's
sockets, and whether each still holds messages in its kernel send queue or takes them (``ConnectionWatch``, Linux only), and how the drain ended (``Drained``).
ZeroMQ says neither (per-subscriber queue counts are only in libzmq's draft API), so the kernel is
asked: ``SIOCOUTQ``, ``TCP_INFO``'s bytes acknowledged and edge-triggered ``EPOLLOUT``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from perception.xpub_connections import (
    _on_socket_at,
    shut_down_connection,
)

if TYPE_CHECKING:
    from perception.xpub import XpubCore

log = logging.getLogger("perception.xpub")  # its messages are the publisher's

# Linux: the bytes a socket's kernel send queue holds (SIOCOUTQ), and TCP_INFO's tcpi_bytes_acked
# (a u64 at byte 120 of struct tcp_info, Linux 4.1 and later).
_SIOCOUTQ = 0x5411
_TCP_INFO = getattr(socket, "TCP_INFO", 11)
_BYTES_ACKED = struct.Struct("=Q")
_BYTES_ACKED_AT = 120
#: How long ``drain_and_close`` waits for the socket to close once it cut the subscribers that held it.
_CUT_WAIT_S = 5.0


@dataclass
class Drained:
    """How ``XpubCore.drain`` ended: ``stalled`` subscriber connections that took nothing for its
    ``idle_s`` and were cut with messages still queued for them; ``stopped``, those cut with
    messages queued because ``stop`` came first; ``watched`` False where connections cannot be
    watched (a plain linger, losses unseen)."""

    stalled: int = 0
    stopped: int = 0
    seconds: float = 0.0
    watched: bool = True


def _subscriber_at(fd: int, local: str | int, conn: socket.socket,
                   st: os.stat_result) -> tuple[int, tuple[int, int], bool] | None:
    """``ConnectionWatch.of``'s test of one socket: a connected stream socket whose local address is
    the endpoint's (``local``: its ipc path, or its TCP port)."""
    if conn.type != socket.SOCK_STREAM:
        return None
    if isinstance(local, str):
        if conn.family != socket.AF_UNIX or conn.getsockname() != local:
            return None
    elif conn.family not in (socket.AF_INET, socket.AF_INET6) or conn.getsockname()[1] != local:
        return None
    conn.getpeername()  # the listening socket has no peer (ENOTCONN: skipped)
    return fd, (st.st_dev, st.st_ino), conn.family != socket.AF_UNIX


class ConnectionWatch:
    """The subscriber connections of a bound endpoint (the process's sockets whose local address
    is the endpoint and that have a peer), each named by descriptor, device and inode, so that a
    descriptor closed and reused meanwhile is never read nor cut. ``sample`` tells whether anything
    moved: each connection's kernel send queue (``SIOCOUTQ``: bytes not yet taken by the peer),
    for TCP the bytes the peer acknowledged (``TCP_INFO``), and the times its socket woke a writer
    because the peer took data (edge-triggered ``EPOLLOUT``: a Unix socket's queue, refilled at
    once by ZeroMQ to the same size, would not show it). Linux only (``of`` returns None elsewhere)."""

    #: Samples in a row with every send queue empty that make ``all_taken`` true.
    EMPTY_SAMPLES = 3

    def __init__(self, conns: list[tuple[int, tuple[int, int], bool]]) -> None:
        import select

        self.conns = conns  # (fd, (device, inode), is TCP)
        self._empty = 0  # samples in a row with every send queue empty (or its connection gone)
        self._wakeups = dict.fromkeys((fd for fd, _, _ in conns), 0)
        self._epoll = select.epoll()
        for fd in self._wakeups:
            with contextlib.suppress(OSError):  # (libzmq's own descriptor: epoll drops it once libzmq closes it)
                self._epoll.register(fd, select.EPOLLOUT | select.EPOLLET)

    @classmethod
    def of(cls, endpoint: str) -> ConnectionWatch | None:
        if not sys.platform.startswith("linux") or not os.path.isdir("/proc/self/fd"):
            return None
        if endpoint.startswith("ipc://"):
            local: str | int = endpoint.removeprefix("ipc://")
        elif endpoint.startswith("tcp://"):
            try:
                local = int(endpoint.rpartition(":")[2])
            except ValueError:
                return None
        else:
            return None
        conns = [conn for name in os.listdir("/proc/self/fd")
                 if (conn := _on_socket_at(int(name), functools.partial(_subscriber_at, int(name), local)))]
        if conns and ConnectionWatch._read(conns[0]) is None:
            return None  # no SIOCOUTQ here: nothing can be watched
        return cls(conns)

    @staticmethod
    def _read(conn: tuple[int, tuple[int, int], bool]) -> tuple[int, int] | None:
        """(bytes queued, bytes acknowledged) of one connection; None once it is gone."""
        import fcntl

        fd, ident, tcp = conn

        def read(sock: socket.socket, st: os.stat_result) -> tuple[int, int] | None:
            if (st.st_dev, st.st_ino) != ident:
                return None
            queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0" * 4))[0]
            acked = 0
            if tcp:
                try:
                    info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 256)
                except OSError:  # (a kernel without TCP_INFO: the queue alone is watched)
                    info = b""
                if len(info) >= _BYTES_ACKED_AT + 8:
                    acked = _BYTES_ACKED.unpack_from(info, _BYTES_ACKED_AT)[0]
            return queued, acked

        return _on_socket_at(fd, read)

    def wait(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for a connection's socket to wake a writer, and count it. Waiting
        here, not sleeping: epoll reports the wakeup only if the socket is still writable when it is
        collected, and ZeroMQ fills it again at once, so it is collected as it happens."""
        for fd, _events in self._epoll.poll(timeout_s):
            if fd in self._wakeups:
                self._wakeups[fd] += 1

    def sample(self) -> list[tuple[int, int, int] | None]:
        """Per connection (bytes queued, bytes acknowledged, wakeups counted by ``wait``); a change
        is progress."""
        now = [None if (got := self._read(conn)) is None else (*got, self._wakeups[conn[0]]) for conn in self.conns]
        self._empty = self._empty + 1 if all(c is None or c[0] == 0 for c in now) else 0
        return now

    def all_taken(self) -> bool:
        """Every connection's send queue was empty (or it was gone) in the last ``EMPTY_SAMPLES``
        samples: the peers took all the bytes ZeroMQ wrote, and it wrote none since (what it still
        held would have gone out at once)."""
        return self._empty >= self.EMPTY_SAMPLES

    def cut_all(self) -> int:
        """Shut down every connection still open; returns how many still held bytes to send."""
        held = 0
        for conn in self.conns:
            now = self._read(conn)
            if now is None:
                continue
            held += now[0] > 0
            shut_down_connection(conn[0], conn[1])
        return held

    def close(self) -> None:
        self._epoll.close()


def drain_and_close(core: XpubCore, *, idle_s: float, stop: threading.Event, poll_s: float = 0.05) -> Drained:
    """``XpubCore.drain`` (see there): watch the connections of ``core``'s endpoint until they have
    taken what is queued, then close its socket; give up a stalled or stopped drain by cutting them."""
    t0 = time.monotonic()
    with core.lock:
        if core.closed:
            return Drained()
        watch = ConnectionWatch.of(core.endpoint)
        if watch is None or not watch.conns:
            core.closed = True
    if watch is None or not watch.conns:
        # Nothing to watch: no subscriber connected (nothing queued: this returns at once), or
        # a system where connections cannot be watched (a plain linger, losses unseen).
        if watch is not None:
            watch.close()
        core.teardown(idle_s)
        return Drained(watched=watch is not None, seconds=time.monotonic() - t0)
    result = Drained()
    done = threading.Event()
    try:
        gave_up = _watch_until(watch, watch.all_taken, idle_s, stop, poll_s)
        with core.lock:
            if core.closed:  # closed meanwhile by another thread
                return result
            core.closed = True
        closing = gave_up is None
        if closing:

            def teardown() -> None:
                try:
                    core.teardown(linger_ms=-1)  # (normally at once: nothing is left)
                finally:
                    done.set()

            # (perception-*: a program exit that finds it still running ends past it, see signals.py)
            threading.Thread(target=teardown, name="perception-xpub-drain", daemon=True).start()
            gave_up = _watch_until(watch, done.is_set, idle_s, stop, poll_s)
        if gave_up is not None:
            held = watch.cut_all()
            if gave_up == "stalled":
                result.stalled = held
            else:
                result.stopped = held
            if not closing:
                core.teardown(0.0)  # what is queued for the connections cut goes
            elif not done.wait(_CUT_WAIT_S):
                log.debug("the publisher's socket did not close %.0f s after its subscribers were cut", _CUT_WAIT_S)
    finally:
        watch.close()
        result.seconds = time.monotonic() - t0
    return result


def _watch_until(watch: ConnectionWatch, finished: Callable[[], bool], idle_s: float, stop: threading.Event,
                 poll_s: float) -> str | None:
    """Wait until ``finished()``: None; ``"stopped"`` once ``stop`` is set; ``"stalled"`` once no
    connection moved for ``idle_s`` seconds (see ``ConnectionWatch.sample``)."""
    last, moved_at = watch.sample(), time.monotonic()
    while not finished():
        watch.wait(poll_s)  # (returns early when a connection's socket wakes a writer)
        if finished():
            return None
        if stop.is_set():
            return "stopped"
        now = watch.sample()
        if now != last:
            last, moved_at = now, time.monotonic()
        elif time.monotonic() - moved_at >= idle_s:
            return "stalled"
    return None

