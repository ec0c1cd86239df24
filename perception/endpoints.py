"""ZeroMQ endpoint strings, checked once for every side of the wire: the publishers' XPUB core
(``perception/xpub.py``), the subscriber (``perception/subscribe.py``), ``perception run``'s
checks before start-up and launch files' validation.

``check_endpoint`` accepts ``tcp://HOST:PORT`` (``*`` for any free port, ``[IPv6]`` hosts, with a
zone id: ``[fe80::1%eth0]``) and ``ipc://PATH`` and returns the TCP host, or raises a
``PublishError`` naming the endpoint and the expected form (``connect=True``, a subscriber's: ``*``
refused, it is for binding); ``is_loopback`` and ``is_ipv6_literal`` judge that host (an interface
name such as ``lo`` too), ``unbindable_host`` says why a publisher could not bind it, and
``canonical_bind_host`` spells the address it binds (a name resolved as ZeroMQ resolves it:
``resolved_bind_address``); ``address_in_use_fix`` and ``ipc_socket_is_live`` serve a bind that
meets an address in use; ``unresolved_host_problem`` says when a subscriber's host name does not
resolve.

    host = check_endpoint("tcp://127.0.0.1:5556")   # "127.0.0.1"; None for ipc://
    check_endpoint("tcp://*:5556", connect=True)     # PublishError: connect to tcp://127.0.0.1:5556
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
import re
import socket
import struct
import sys
import threading

from perception import contracts
from perception.errors import PublishError

#: The IFF_LOOPBACK bit of a Linux interface's flags (``/sys/class/net/NAME/flags``).
_IFF_LOOPBACK = 0x8

#: ``tcp://HOST:PORT`` (an IPv6 host in brackets, with a zone id as libzmq takes one:
#: ``tcp://[fe80::1%eth0]:5556``, the interface's name or index) or ``ipc://PATH``.
_ENDPOINT_RE = re.compile(r"^(?:tcp://(?P<host>\[[0-9a-fA-F:.]+(?:%(?P<zone>[0-9A-Za-z_.\-]+))?\]|[^:/\[\]]+)"
                          r":(?P<port>\d+|\*)|ipc://(?P<path>.+))$")


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


def check_endpoint(endpoint: str, *, connect: bool = False) -> str | None:
    """Validate an endpoint string; return its TCP host (None for ipc).

    ``connect``: the endpoint of a subscriber, which connects: ``*`` (any interface, any free port
    or ipc path) is for a node's bind only and is refused, naming the fix.
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
        any_port = "" if connect or int(port) != 0 else \
            f"; for any free port write {endpoint[: match.start('port')]}* (the node logs the port it takes)"
        raise PublishError(f"bad endpoint {endpoint!r}: port {port} is out of range 1-65535{any_port}")
    zone = match.group("zone")
    if zone is not None and (problem := _zone_problem(zone)) is not None:
        raise PublishError(f"bad endpoint {endpoint!r}: {problem}")
    host = match.group("host")
    if connect:
        _refuse_wildcard_connect(endpoint, host, port, match.group("path"))
    return host.strip("[]") if host is not None else None


def _zone_problem(zone: str) -> str | None:
    """Why ``%ZONE`` of an IPv6 endpoint names no network interface here (libzmq takes an
    interface's name, or its index when the zone starts with a digit), or None."""
    try:
        interfaces = socket.if_nameindex()
    except (OSError, AttributeError):  # no interface list on this system: left to ZeroMQ
        return None
    if zone[0].isdigit():
        if zone.isdigit() and int(zone) in {index for index, _ in interfaces}:
            return None
    elif zone in {name for _, name in interfaces}:
        return None
    names = ", ".join(f"{name} ({index})" if zone[0].isdigit() else name for index, name in interfaces) or "none"
    return f"zone id %{zone} is no network interface of this machine (its interfaces: {names})"


def _refuse_wildcard_connect(endpoint: str, host: str | None, port: str | None, path: str | None) -> None:
    """A subscriber's endpoint with ``*``, which libzmq takes only to bind (a connect fails with a
    bare "Invalid argument"): refused, naming what to connect to instead."""
    if path == "*":
        raise PublishError(f"cannot connect to {endpoint}: ipc://* is for a node's bind only (any free path); "
                           "connect to the ipc:// path the node logged at start")
    if host == "*" and port == "*":
        fix = "connect to the node's address and the port it logged at start, e.g. tcp://127.0.0.1:5556"
    elif host == "*":
        fix = (f"connect to the node's address: tcp://127.0.0.1:{port} on this machine, or the IP address or "
               "name of the node's machine")
    elif port == "*":
        fix = (f"connect to the port the node logged at start ('publishing ... on tcp://{host}:PORT'), e.g. "
               f"tcp://{host}:5556")
    else:
        return
    what = "host * (every interface) and port * (any free port) are" if host == "*" and port == "*" else \
        "host * (every interface) is" if host == "*" else "port * (any free port) is"
    raise PublishError(f"cannot connect to {endpoint}: {what} for a node's bind only; {fix}")


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
    when this system cannot list its interfaces). ZeroMQ binds ``*``, an IP address, a network
    interface's name and a host name it resolves as a bind does (``resolved_bind_address``:
    ``localhost`` or a name in /etc/hosts); a name that does not resolve (``localhost.``,
    ``car.local`` without mDNS) fails at the bind with "No such device"."""
    host = host.strip("[]")
    if host == "*" or host.lower() == "localhost" or ip_address_of(host) is not None:
        return None
    try:
        interfaces = {name for _, name in socket.if_nameindex()}
    except (OSError, AttributeError):  # no interface list on this system: left to the bind
        return None
    if host in interfaces:
        if interface_has_ipv4(host) is False:
            return (f"network interface {host!r} has no IPv4 address, and ZeroMQ binds an interface's IPv4 address, so "
                    "the bind would fail with 'No such device'; give the interface an address, or bind 127.0.0.1, * "
                    "or another interface")
        return None
    if resolved_bind_address(host) is not None:
        return None
    return (f"{host!r} is neither an IP address nor a network interface of this machine, nor a host name it "
            "resolves (/etc/hosts, DNS), so the bind would fail with 'No such device'; bind 127.0.0.1 (this "
            "machine only), * (every interface), an interface name such as eth0 or a name in /etc/hosts")


def interface_has_ipv4(name: str) -> bool | None:
    """Whether network interface ``name`` has an IPv4 address (what libzmq binds for its name); None
    where that cannot be asked (not Linux). Linux's ``SIOCGIFADDR``: EADDRNOTAVAIL means none."""
    try:
        import fcntl
    except ImportError:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode("utf-8", "replace")[:15]))
        except OSError as exc:
            return False if exc.errno == errno.EADDRNOTAVAIL else None
    return True


#: Linux's ioctl for an interface's IPv4 address (``interface_has_ipv4``).
_SIOCGIFADDR = 0x8915


def resolved_bind_address(name: str) -> str | None:
    """The IPv4 address ZeroMQ binds for a host ``name`` that is no IP address and no interface
    (``tcp://vm:5556``): libzmq looks it up as a bind (getaddrinfo, IPv4, ``AI_PASSIVE``: /etc/hosts,
    then DNS as /etc/nsswitch.conf says) and binds the first answer; None where it does not resolve."""
    if not name or "\0" in name or name == "*":
        return None
    try:
        answers = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except (OSError, UnicodeError, ValueError):  # no such name (gaierror), or none it could be
        return None
    return str(answers[0][4][0]) if answers else None


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
    on Linux (``eth0`` is 192.0.2.2: ``interface_ipv4``), a host name the address it resolves to as
    ZeroMQ binds it (``vm`` in /etc/hosts is 127.0.0.1: ``resolved_bind_address``); other names (one
    that does not resolve, an interface elsewhere or without an IPv4 address) as written."""
    host = host.strip("[]")
    if host == "*":
        return "0.0.0.0"
    address = ip_address_of(host)
    if address is not None:
        return str(address)
    if is_loopback(host):
        return "127.0.0.1"
    return interface_ipv4(host) or resolved_bind_address(host) or host


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


#: How long ``unresolved_host_problem`` waits for the resolver (an unreachable name server could
#: hold getaddrinfo for many seconds; the answer is then left unsaid).
RESOLVE_WAIT_S = 2.0


@functools.lru_cache(maxsize=16)
def _connect_lookup(host: str, timeout_s: float) -> tuple[str, str | None] | None:
    """How a subscriber's connect would resolve ``host``, once per host: ("ok", None), ("ipv6",
    an IPv6 address: the name has no IPv4 one) or ("none", None); None when the resolver did not
    answer within ``timeout_s``."""
    answer: list[tuple[str, str | None]] = []

    def look() -> None:
        try:
            socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
            answer.append(("ok", None))
            return
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_AGAIN:  # the name server did not answer: nothing known
                answer.append(("ok", None))
                return
        except (OSError, UnicodeError, ValueError):
            pass
        try:
            found = socket.getaddrinfo(host, None, socket.AF_INET6, socket.SOCK_STREAM)
            answer.append(("ipv6", str(found[0][4][0])) if found else ("none", None))
        except (OSError, UnicodeError, ValueError):
            answer.append(("none", None))

    thread = threading.Thread(target=look, name="perception-resolve", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return answer[0] if answer else None


def unresolved_host_problem(endpoint: str, *, timeout_s: float = RESOLVE_WAIT_S) -> str | None:
    """Why a subscriber of ``endpoint`` can reach nothing because of its host name, or None: a
    ``tcp://NAME:PORT`` whose name does not resolve (not in /etc/hosts, nor in DNS), or resolves to
    IPv6 only (a subscriber connects to a name over IPv4). ZeroMQ retries such a connect silently, so
    a subscriber that received nothing asks once (``commands.listen.no_messages_hint``); an IP
    address, ``ipc://`` or a resolver that does not answer in ``timeout_s`` gives None."""
    match = _ENDPOINT_RE.match(endpoint) if isinstance(endpoint, str) else None
    host = match.group("host") if match is not None else None
    if host is None or host.startswith("[") or host == "*" or ip_address_of(host) is not None:
        return None
    found = _connect_lookup(host, timeout_s)
    if found is None or found[0] == "ok":
        return None
    port = match.group("port")
    if found[0] == "ipv6":
        return (f"host name {host!r} resolves to IPv6 only ({found[1]}), and a subscriber connects to a name "
                f"over IPv4; connect to tcp://[{found[1]}]:{port}")
    return (f"host name {host!r} does not resolve (no such name in /etc/hosts or DNS); check --endpoint: "
            f"the node's IP address (e.g. tcp://127.0.0.1:{port} on this machine) or a name this machine resolves")
