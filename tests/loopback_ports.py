"""Loopback TCP ports for tests to bind (a node's ``--endpoint``), each pytest-xdist worker from
its own block.

The usual "bind port 0, close, hand the number on" leaves a port that was free a moment ago, and
the kernel picks such ports at random from its ephemeral range (``ip_local_port_range``), the same
range every other ``bind(0)`` draws from: another worker's pick, a ZeroMQ ``tcp://127.0.0.1:*``, a
test's HTTP server. One of them could take the port in the seconds before a node started by the
test binds it ("address already in use", a subscriber that hears another test's node). Here each
worker hands out ports below that range, from a block no other worker of the run uses, in turn
(a port comes back only after the whole block); a port that something else holds is skipped.
"""

from __future__ import annotations

import itertools
import os
import random
import socket

#: Ports FIRST_PORT .. FIRST_PORT + BLOCKS * BLOCK - 1, all below Linux's default ephemeral range
#: (32768-60999); a worker's block: gwN takes block N % BLOCKS.
FIRST_PORT = 8000
BLOCK = 3000
BLOCKS = 8

# A random start in the block: two test runs on one machine at once do not walk the same ports.
_turns = itertools.count(random.randrange(BLOCK))


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _block_start() -> int | None:
    """The first port of this worker's block; None where the block would overlap the ephemeral range."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    first = FIRST_PORT + BLOCK * (index % BLOCKS)
    return first if first + BLOCK <= _ephemeral_low() else None


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1, free now and handed to no other test of this worker for a while."""
    first = _block_start()
    if first is not None:
        for _ in range(BLOCK):
            port = first + next(_turns) % BLOCK
            if _free(port):
                return port
    with socket.socket() as s:  # no block of our own here: the kernel's pick
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_endpoint() -> str:
    """``tcp://127.0.0.1:PORT`` on a ``free_tcp_port()``."""
    return f"tcp://127.0.0.1:{free_tcp_port()}"
