"""Which subscriber connection sent an XPUB subscription message, told by its socket's descriptor
(the message's ``SRCFD``) and that socket's device and inode, which no other connection has while
it is open; and shutting one down (a CURVE key removed from the allow-list).

The XPUB core (``perception/xpub.py``) names each message's connection so that its subscription
counts (``perception/xpub_counts.py``) are per connection: ``name_connection`` costs one ``fstat``
(about 1 us; the descriptor is never duplicated nor closed), ``connection_alive`` tells whether a
named connection is still open, ``CLOSED`` names one whose socket closed before its message was
read. ``connection_id`` and ``shut_down_connection`` work on a duplicate of the descriptor (a
peer's address checked too), so libzmq's own descriptor is never closed. POSIX only: elsewhere a
descriptor is no socket.

    conn = name_connection(frame.get(zmq.SRCFD))    # (fd, device, inode), or CLOSED
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from collections.abc import Callable
from typing import TypeVar

# The name of a connection whose socket was closed before its message was read (see name_connection).
CLOSED = (-1, 0, 0)


def _same_host(a: str, b: str | None) -> bool:
    """Whether two textual IP addresses name the same host (IPv4-mapped IPv6 and scope ids aside);
    True when either cannot be parsed: the check only guards against a reused descriptor number."""
    def norm(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
        mapped = getattr(addr, "ipv4_mapped", None)
        return mapped if mapped is not None else addr

    if b is None:
        return True
    try:
        return norm(a) == norm(b)
    except ValueError:
        return True


T = TypeVar("T")


def _on_socket_at(fd: int, act: Callable[[socket.socket, os.stat_result], T]) -> T | None:
    """``act(conn, stat)`` on a duplicate of ``fd`` when it is a socket, else None (also on any
    OSError: closed meanwhile, not a socket). Working on a duplicate, libzmq's own descriptor is
    never closed, and a number closed and reused meanwhile is seen by its stat."""
    try:
        dup = os.dup(fd)
    except OSError:
        return None
    try:
        st = os.fstat(dup)
        if not stat.S_ISSOCK(st.st_mode):
            return None
        conn = socket.socket(fileno=dup)
        dup = -1  # the socket object owns it now
        with conn:
            return act(conn, st)
    except OSError:
        return None
    finally:
        if dup >= 0:
            os.close(dup)


def connection_id(fd: int, peer_address: str | None) -> tuple[int, int] | None:
    """(device, inode) of the connected stream socket at ``fd`` (a subscriber's connection, read
    from a message's ``SRCFD``), or None when ``fd`` is no such socket now: closed, or its number
    reused by another file. ``peer_address`` (the message's ``Peer-Address``) must match a TCP peer."""

    def ident(conn: socket.socket, st: os.stat_result) -> tuple[int, int] | None:
        if conn.type != socket.SOCK_STREAM:
            return None
        peer = conn.getpeername()  # a listening socket has none (ENOTCONN)
        if conn.family in (socket.AF_INET, socket.AF_INET6) and not _same_host(peer[0], peer_address):
            return None
        return st.st_dev, st.st_ino

    return _on_socket_at(fd, ident)


def shut_down_connection(fd: int, ident: tuple[int, int]) -> bool:
    """Shut down the connection at ``fd`` if it is still the socket ``ident`` names; libzmq then
    sees it closed and drops it (the subscriber reconnects through a new handshake)."""

    def shut(conn: socket.socket, st: os.stat_result) -> bool:
        if (st.st_dev, st.st_ino) != ident:
            return False
        conn.shutdown(socket.SHUT_RDWR)
        return True

    return bool(_on_socket_at(fd, shut))


def name_connection(fd: int) -> tuple[int, int, int]:
    """The name of the subscriber connection whose socket is ``fd`` (a message's ``SRCFD``):
    ``(fd, device, inode)``, which no other connection has while this one is open; ``CLOSED`` when
    ``fd`` is no open socket now (closed, or reused by a file). One ``fstat``: the read path's cost."""
    try:
        st = os.fstat(fd)
    except OSError:
        return CLOSED
    return (fd, st.st_dev, st.st_ino) if stat.S_ISSOCK(st.st_mode) else CLOSED


def connection_alive(conn: tuple[int, int, int]) -> bool:
    """Whether the connection ``name_connection`` named is still open: its descriptor still the same
    socket (libzmq closes it before it reports the connection's subscriptions gone)."""
    fd, dev, ino = conn
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return st.st_ino == ino and st.st_dev == dev
