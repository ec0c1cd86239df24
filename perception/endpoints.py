"""ZeroMQ endpoint strings, checked once for every side of the wire: the publishers' XPUB core
(``perception/xpub.py``), the subscriber (``perception/subscribe.py``), ``perception run``'s
checks before start-up and launch files' validation.

``check_endpoint`` accepts ``tcp://HOST:PORT`` (``*`` for any free port, ``[IPv6]`` hosts) and
``ipc://PATH`` and returns the TCP host, or raises a ``PublishError`` naming the endpoint and the
expected form; ``is_loopback`` and ``is_ipv6_literal`` judge that host (an interface name such as
``lo`` too), ``unbindable_host`` says why a publisher could not bind it, and ``canonical_bind_host``
spells the address it binds; ``address_in_use_fix`` and
``ipc_socket_is_live`` serve a bind that meets an address in use.

    host = check_endpoint("tcp://127.0.0.1:5556")   # "127.0.0.1"; None for ipc://
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import sys

from perception import contracts
from perception.errors import PublishError

#: The IFF_LOOPBACK bit of a Linux interface's flags (``/sys/class/net/NAME/flags``).
_IFF_LOOPBACK = 0x8

_ENDPOINT_RE = re.compile(r"^(?:tcp://(?P<host>\[[0-9a-fA-F:.]+\]|[^:/\[\]]+):(?P<port>\d+|\*)|ipc://(?P<path>.+))$")


def address_in_use_fix(endpoint: str) -> str:
    """The fix an "address already in use" error names: ``*`` for any free port (which the node
    logs at start) or another ipc path, or stopping what holds the address. No port number is
    suggested: one free now may be the next one another node of the same launch binds, or held
    by another program a moment later."""
    match = _ENDPOINT_RE.match(endpoint)
    if match is not None and match.group("port") not in (None, "*"):
        stem = endpoint[: match.start("port")]
        port = int(match.group("port"))
        return f"use another port (e.g. --endpoint {stem}* for any free one, logged at start) or stop what holds " \
               f"it (ss -ltnp 'sport = :{port}' names it)"
    return "use another --endpoint (another ipc:// path, or tcp://127.0.0.1:*) or stop the other node"


def check_endpoint(endpoint: str) -> str | None:
    """Validate an endpoint string; return its TCP host (None for ipc).

    Raises PublishError naming the endpoint and the expected form.
    """
    if isinstance(endpoint, str) and endpoint.startswith("inproc://"):
        # Each publisher and subscriber has its own ZeroMQ context: nothing could ever connect.
        raise PublishError(f"endpoint {endpoint!r}: inproc:// reaches only sockets of one ZeroMQ context in one "
                           f"process, and no other can join it; use tcp://HOST:PORT (e.g. {contracts.DEFAULT_ENDPOINT}) "
                           "or ipc://PATH")
    match = _ENDPOINT_RE.match(endpoint) if isinstance(endpoint, str) else None
    if match is None:
        raise PublishError(
            f"bad endpoint {endpoint!r}; expected tcp://HOST:PORT, e.g. {contracts.DEFAULT_ENDPOINT}"
        )
    port = match.group("port")
    if port not in (None, "*") and not 0 < int(port) < 65536:
        raise PublishError(f"bad endpoint {endpoint!r}: port {port} is out of range 1-65535")
    host = match.group("host")
    return host.strip("[]") if host is not None else None


def ipc_socket_is_live(path: str) -> bool:
    """True when a process is listening on the Unix socket at ``path`` (a stale file, left by a
    node that was killed, refuses the connection and may be bound over)."""
    if not os.path.exists(path):
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:  # refused (stale), not a socket, too long a path: bind reports the rest
        return False
    finally:
        probe.close()
    return True


def is_ipv6_literal(host: str | None) -> bool:
    """An IPv6 address (``::1`` of ``tcp://[::1]:5556``): its sockets need ZeroMQ's IPV6 option."""
    return host is not None and ":" in host


#: A numeric IPv4 host in the C library's classic forms, which ZeroMQ binds and connects through
#: getaddrinfo too: 1 to 4 parts, each decimal, octal (leading 0) or hex (0x): ``127.1``, ``0x7f.1``, ``2130706433``.
_CLASSIC_IPV4_RE = re.compile(r"(?:0[xX][0-9a-fA-F]+|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]+|[0-9]+)){0,3}")


def ip_address_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address a numeric ``host`` (``[IPv6]`` brackets allowed) stands for, as ZeroMQ reads
    it: the classic IPv4 forms too (``127.1`` is 127.0.0.1, ``0`` is 0.0.0.0), and an IPv4-mapped
    IPv6 address as its IPv4 address (``::ffff:127.0.0.1`` binds 127.0.0.1's port); None for a
    name (a host, an interface, ``localhost``, ``*``)."""
    host = host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not _CLASSIC_IPV4_RE.fullmatch(host):
            return None
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:  # a part out of range, or 08 (not octal)
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 (in any spelling ZeroMQ reads: ``127.1``,
    ``::ffff:127.0.0.1``), ::1 and the name of a loopback interface (``lo``), which ZeroMQ binds
    to that interface's address (``tcp://lo:5556`` is 127.0.0.1)."""
    if host.lower() == "localhost":
        return True
    address = ip_address_of(host)
    if address is not None:
        return address.is_loopback
    return is_loopback_interface(host)  # an interface name such as lo or eth0, a host name, or '*'


def unbindable_host(host: str) -> str | None:
    """Why a publisher cannot bind ``tcp://HOST:PORT`` on this machine, or None when it can (or
    when this system cannot list its interfaces). ZeroMQ binds ``*``, an IP address, ``localhost``
    and a network interface's name, and never looks a host name up: ``localhost.`` or ``car.local``
    fail at the bind with "No such device"."""
    host = host.strip("[]")
    if host == "*" or host.lower() == "localhost" or ip_address_of(host) is not None:
        return None
    try:
        interfaces = {name for _, name in socket.if_nameindex()}
    except (OSError, AttributeError):  # no interface list on this system: left to the bind
        return None
    if host in interfaces:
        return None
    return (f"{host!r} is neither an IP address nor a network interface of this machine, and a publisher binds "
            "only those (ZeroMQ looks no host name up: the bind fails with 'No such device'); bind 127.0.0.1 "
            "(this machine only), * (every interface) or an interface name such as eth0")


def is_loopback_interface(name: str) -> bool:
    """True when ``name`` is a loopback network interface: on Linux one whose flags
    (``/sys/class/net/NAME/flags``) hold IFF_LOOPBACK; where that cannot be read, ``lo`` or ``lo0``."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        return False
    try:
        with open(f"/sys/class/net/{name}/flags", encoding="ascii") as f:
            return bool(int(f.read().strip(), 16) & _IFF_LOOPBACK)
    except (OSError, ValueError):
        if os.path.isdir("/sys/class/net"):  # Linux: not an interface (a host name, or '*')
            return False
        return name in ("lo", "lo0")


def canonical_bind_host(host: str) -> str:
    """The address a publisher binding ``tcp://HOST:PORT`` takes, in one spelling, to tell two
    endpoints that bind the same address: ``localhost`` and a loopback interface name are
    127.0.0.1 (ZeroMQ binds IPv4 unless the host is an IPv6 address), ``*`` is 0.0.0.0, an IP
    address is written one way (``::0001`` is ``::1``, ``127.1`` and ``::ffff:127.0.0.1`` are
    127.0.0.1: ``ip_address_of``), another interface name is its IPv4 address
    on Linux (``eth0`` is 192.0.2.2: ``interface_ipv4``); other names (hosts, an interface elsewhere
    or without an IPv4 address) as written."""
    host = host.strip("[]")
    if host == "*":
        return "0.0.0.0"
    address = ip_address_of(host)
    if address is not None:
        return str(address)
    if is_loopback(host):
        return "127.0.0.1"
    return interface_ipv4(host) or host


#: ioctl request for an interface's (first) IPv4 address (linux/sockios.h), and the length of a name.
_SIOCGIFADDR = 0x8915
_IFNAMSIZ = 16


def interface_ipv4(name: str) -> str | None:
    """The IPv4 address ZeroMQ binds for the network interface ``name`` (``tcp://eth0:5556``): the
    interface's address as the kernel gives it (SIOCGIFADDR), on Linux; None for a name that is no
    interface here, an interface without an IPv4 address, or another system."""
    if not sys.platform.startswith("linux") or not name or "\0" in name:
        return None
    raw = name.encode("utf-8", "replace")
    if len(raw) >= _IFNAMSIZ:
        return None
    import fcntl
    import struct

    try:
        if name not in {n for _, n in socket.if_nameindex()}:  # a host name: resolved by ZeroMQ, not here
            return None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            answer = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", raw))
    except OSError:  # no IPv4 address on it (EADDRNOTAVAIL), or gone since
        return None
    return socket.inet_ntoa(answer[20:24])  # struct ifreq: the name, then a sockaddr_in (family, port, address)
