"""Endpoints on a car computer with several ECUs (s39, hunter H26; fixer F6).

1. The JavaScript client never exited on an ``inproc://`` endpoint (nor on SIGTERM): both reference
   clients now refuse it at start, in one line with exit 2, as ``perception listen`` does.
2. A subscriber endpoint with ``*`` (``tcp://*:5556`` copied from the node, ``tcp://127.0.0.1:*``)
   passed every check and failed at connect with a bare "Invalid argument"; ``launch`` started such
   nodes. Now refused in one line naming what to connect to, by listen/record/view, launch --check
   and both clients.
3. ``launch`` refused ``tcp://<name in /etc/hosts>:P``, which ``run`` binds (libzmq resolves a name for
   a bind), and its clash check took that name for another address than the one it resolves to.
5. ``ipc://@name`` (a Linux abstract socket) was printed as ``ipc://***@name``.
6. A link-local IPv6 address with a zone id (``tcp://[fe80::1%eth0]:5556``) was a "bad endpoint".
7. A host name that does not resolve got "is the node running?".
10. ``tcp://127.0.0.1:0`` was "out of range" without saying that ``*`` takes any free port.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
import yaml
import zmq
from test_clients import _c_client, _js_client

from perception import endpoints
from perception.cli import main as cli_main
from perception.endpoints import canonical_bind_host, check_endpoint, unbindable_host
from perception.errors import PublishError, hide_credentials
from perception.subscribe import MaskSubscriber


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return code, captured.out, captured.err


def _one_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("perception: error: "), err
    return lines[0]


def _launch_check(tmp_path, capsys, nodes: list[dict]) -> tuple[int, str, str]:
    file = tmp_path / "l.yaml"
    file.write_text(yaml.safe_dump({"launch": [{"node": n} for n in nodes]}, width=10**9), encoding="utf-8")
    return _run(capsys, "launch", str(file), "--check")


def _pipeline(name: str, endpoint: str) -> dict:
    return {"name": name, "kind": "pipeline", "parameters": {"source": "synthetic", "camera_name": name,
                                                              "endpoint": endpoint}}


def _client(name: str) -> list[str]:
    cmd, reason = (_c_client if name == "c" else _js_client)()
    if cmd is None:
        pytest.skip(f"the {name} subscriber cannot run here: {reason}")
    return cmd


# ---- 1: the clients refuse inproc:// at start ------------------------------------------------------

@pytest.mark.parametrize("name", ["c", "js"])
def test_a_client_refuses_inproc_at_once_with_one_line_and_status_2(name):
    """The JS client used to print its "no messages" line and then never exit (SIGTERM included)."""
    done = subprocess.run([*_client(name), "--endpoint", "inproc://x", "--duration", "30"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "inproc:// reaches only sockets of one ZeroMQ context" in done.stderr \
        and "use tcp://HOST:PORT" in done.stderr, done.stderr


# ---- 2: '*' is for a bind: a subscriber is refused, naming what to connect to ----------------------

@pytest.mark.parametrize(("endpoint", "fix"), [
    ("tcp://*:5556", "connect to the node's address: tcp://127.0.0.1:5556 on this machine"),
    ("tcp://127.0.0.1:*", "connect to the port the node logged at start ('publishing ... on tcp://127.0.0.1:PORT')"),
    ("tcp://[::1]:*", "('publishing ... on tcp://[::1]:PORT'), e.g. tcp://[::1]:5556"),
    ("tcp://*:*", "connect to the node's address and the port it logged at start"),
    ("ipc://*", "connect to the ipc:// path the node logged at start"),
])
def test_listen_refuses_a_wildcard_endpoint_naming_the_fix(capsys, endpoint, fix):
    code, _out, err = _run(capsys, "listen", "--endpoint", endpoint, "--duration", "5")
    line = _one_error(err)
    assert code == 2 and f"cannot connect to {endpoint}: " in line and "for a node's bind only" in line \
        and fix in line, line
    assert "Invalid argument" not in line


def test_record_refuses_a_wildcard_endpoint_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "r.mcap"
    code, _out, err = _run(capsys, "record", "--namespace", "perception/front", "--endpoint", "tcp://*:5556",
                           "--out", str(out), "--duration", "5")
    assert code == 2 and "tcp://127.0.0.1:5556" in _one_error(err), err
    assert not out.exists()


def test_the_python_subscriber_refuses_a_wildcard_endpoint():
    with pytest.raises(PublishError, match=r"cannot connect to tcp://\*:6123: host \* \(every interface\) is for a "
                                           r"node's bind only; connect to the node's address: tcp://127.0.0.1:6123"):
        MaskSubscriber("tcp://*:6123", namespace="perception/front")
    assert check_endpoint("tcp://*:6123") == "*"  # a node binds it


def test_launch_check_refuses_a_subscriber_that_copied_the_pipelines_wildcard(tmp_path, capsys):
    record = {"name": "r", "kind": "record", "parameters": {
        "endpoint": "tcp://*:6124", "namespace": "perception/a", "out": str(tmp_path / "r.mcap")}}
    code, _out, err = _launch_check(tmp_path, capsys, [_pipeline("a", "tcp://*:6124"), record])
    line = _one_error(err)
    assert code == 2 and "node 'r': parameters: endpoint: cannot connect to tcp://*:6124" in line \
        and "tcp://127.0.0.1:6124" in line, line
    listen = {"name": "l", "kind": "listen", "parameters": {"endpoint": "tcp://127.0.0.1:*", "namespace": "p/a"}}
    code, _out, err = _launch_check(tmp_path, capsys, [listen])
    assert code == 2 and "node 'l': parameters: endpoint: cannot connect to tcp://127.0.0.1:*" in _one_error(err)
    # The publisher's own tcp://*:P and tcp://HOST:* stay what they are: binds.
    code, _out, err = _launch_check(tmp_path, capsys, [_pipeline("a", "tcp://*:6124"), _pipeline("b", "tcp://127.0.0.1:*")])
    assert code == 0, err


@pytest.mark.parametrize("name", ["c", "js"])
@pytest.mark.parametrize(("endpoint", "fix"), [
    ("tcp://*:5556", "tcp://127.0.0.1:5556 on this machine"),
    ("tcp://127.0.0.1:*", "connect to the port the node logged at start"),
    ("ipc://*", "the ipc:// path the node logged at start"),
])
def test_a_client_refuses_a_wildcard_endpoint_as_listen_does(name, endpoint, fix):
    done = subprocess.run([*_client(name), "--endpoint", endpoint, "--duration", "30"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"error: cannot connect to {endpoint}: " in done.stderr and fix in done.stderr, done.stderr


# ---- 3: a host name a bind resolves (/etc/hosts) -------------------------------------------------------

@pytest.fixture()
def hosts(monkeypatch):
    """Names in this machine's hosts file, as getaddrinfo gives them (the test cannot edit /etc/hosts)."""
    table = {"ecu-front": "127.0.0.1"}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002 - socket's own names
        if host in table and family in (0, socket.AF_INET):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (table[host], port or 0))]
        return real(host, port, family, type, proto, flags)

    monkeypatch.setattr(endpoints.socket, "getaddrinfo", getaddrinfo)
    endpoints._connect_lookup.cache_clear()
    yield table
    endpoints._connect_lookup.cache_clear()


def test_launch_takes_a_host_name_that_resolves_and_sees_its_clash(tmp_path, capsys, hosts):
    code, _out, err = _launch_check(tmp_path, capsys, [_pipeline("a", "tcp://ecu-front:6130"),
                                                       _pipeline("b", "tcp://127.0.0.1:6131")])
    assert code == 0, err
    code, _out, err = _launch_check(tmp_path, capsys, [_pipeline("a", "tcp://ecu-front:6130"),
                                                       _pipeline("b", "tcp://127.0.0.1:6130")])
    line = _one_error(err)
    assert code == 2 and "nodes 'a' (tcp://ecu-front:6130) and 'b' (tcp://127.0.0.1:6130) bind the same address" \
        in line, line
    # A name that does not resolve is still refused before anything starts.
    code, _out, err = _launch_check(tmp_path, capsys, [_pipeline("a", "tcp://ecu-rear.invalid:6130")])
    line = _one_error(err)
    assert code == 2 and "'ecu-rear.invalid' is neither an IP address nor a network interface of this machine, " \
        "nor a host name it resolves" in line, line


def test_a_bind_resolves_a_name_as_zeromq_does():
    """Against libzmq itself: the address it binds for this machine's host name (in /etc/hosts on most
    systems) is the one the launch checks take it for."""
    name = socket.gethostname()
    try:
        socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except OSError:
        pytest.skip(f"this machine's host name {name!r} does not resolve here")
    with zmq.Context() as context, context.socket(zmq.PUB) as pub:
        pub.linger = 0
        try:
            pub.bind(f"tcp://{name}:*")
        except zmq.ZMQError as exc:
            pytest.skip(f"ZeroMQ cannot bind {name!r} here: {exc}")
        bound = pub.getsockopt_string(zmq.LAST_ENDPOINT).removeprefix("tcp://").rsplit(":", 1)[0]
    assert unbindable_host(name) is None
    assert canonical_bind_host(name) == bound.strip("[]")


# ---- 5: ipc://@name is no credential ------------------------------------------------------------------

def test_an_abstract_ipc_endpoint_is_printed_as_given(tmp_path, capsys):
    code, out, err = _launch_check(tmp_path, capsys, [_pipeline("a", "ipc://@perc-s39")])
    assert code == 0, err
    assert "--endpoint ipc://@perc-s39" in out and "***" not in out, out
    assert hide_credentials("ipc://@x ipc:///tmp/a@b.sock ipc://rel@x") == "ipc://@x ipc:///tmp/a@b.sock ipc://rel@x"
    assert hide_credentials("cam=rtsp://u:p@h/x rtsp://@h/y") == "cam=rtsp://***@h/x rtsp://@h/y"


# ---- 6: an IPv6 zone id ------------------------------------------------------------------------------

def _link_local() -> tuple[str, str] | None:
    """A link-local IPv6 address of this machine and its interface (/proc/net/if_inet6), or None."""
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as f:
            rows = [line.split() for line in f]
    except OSError:
        return None
    for row in rows:
        if len(row) >= 6 and row[0].startswith("fe80"):
            return str(socket.inet_ntop(socket.AF_INET6, bytes.fromhex(row[0]))), row[5]
    return None


def test_a_link_local_address_with_a_zone_id_publishes_and_subscribes():
    from perception.publish import MaskPublisher

    found = _link_local()
    if found is None:
        pytest.skip("no link-local IPv6 address on this machine")
    address, interface = found
    assert check_endpoint(f"tcp://[{address}%{interface}]:6140", connect=True) == f"{address}%{interface}"
    with MaskPublisher(endpoint=f"tcp://[{address}%{interface}]:*", namespace="perception/front") as pub:
        endpoint = pub.endpoint
        assert f"%{interface}]" in endpoint, endpoint
        with MaskSubscriber(endpoint, namespace="perception/front") as sub:
            got = None
            deadline = time.monotonic() + 20
            while got is None and time.monotonic() < deadline:
                pub.publish_json("stats", {"n": 1})
                got = sub.recv(timeout_s=0.1)
    assert got is not None and got.topic == "perception/front/stats"


def test_a_zone_id_that_names_no_interface_is_refused(capsys):
    code, _out, err = _run(capsys, "listen", "--endpoint", "tcp://[fe80::1%nosuchif0]:6141", "--duration", "5")
    line = _one_error(err)
    assert code == 2 and "zone id %nosuchif0 is no network interface of this machine" in line, line


# ---- 7: a host name that does not resolve --------------------------------------------------------------

def test_listen_says_a_host_name_does_not_resolve(capsys):
    try:
        socket.getaddrinfo("no-such-host.invalid", None, socket.AF_INET)
        pytest.skip("no-such-host.invalid resolves here")
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            pytest.skip("no name server answers here")
    endpoints._connect_lookup.cache_clear()
    code, _out, err = _run(capsys, "listen", "--endpoint", "tcp://no-such-host.invalid:6150", "--duration", "0.3")
    line = err.strip().splitlines()[-1]
    assert code == 4 and "host name 'no-such-host.invalid' does not resolve" in line \
        and "is the node running?" not in line, err


def test_a_name_with_ipv6_only_says_how_to_connect(hosts, monkeypatch):
    real = endpoints.socket.getaddrinfo

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002
        if host == "ecu-six":
            if family == socket.AF_INET6:
                return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fd00::7", 0, 0, 0))]
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, port, family, type, proto, flags)

    monkeypatch.setattr(endpoints.socket, "getaddrinfo", getaddrinfo)
    from perception.commands.listen import no_messages_hint

    hint = no_messages_hint("--namespace", curve=False, endpoint="tcp://ecu-six:6151")
    assert "resolves to IPv6 only (fd00::7)" in hint and "connect to tcp://[fd00::7]:6151" in hint, hint
    assert "is the node running?" in no_messages_hint("--namespace", curve=False, endpoint="tcp://ecu-front:6151")


# ---- 10: port 0 -----------------------------------------------------------------------------------------

def test_port_zero_suggests_the_any_port_form(capsys):
    code, _out, err = _run(capsys, "run", "--source", "synthetic", "--endpoint", "tcp://127.0.0.1:0", "--duration", "1")
    line = _one_error(err)
    assert code == 2 and "port 0 is out of range 1-65535; for any free port write tcp://127.0.0.1:* (the node logs " \
        "the port it takes)" in line, line


def test_a_host_name_that_binds_loopback_is_not_called_unencrypted_traffic_leaving(caplog, free_tcp_port):
    """The warning is judged on the address bound (xpub's LAST_ENDPOINT), not the name asked for."""
    import ipaddress
    import logging

    from perception.xpub import XpubCore

    name = socket.gethostname()
    try:
        if not ipaddress.ip_address(socket.gethostbyname(name)).is_loopback:
            pytest.skip(f"{name} resolves to a non-loopback address here")
    except OSError:
        pytest.skip(f"{name} does not resolve here")
    with caplog.at_level(logging.WARNING, logger="perception.xpub"):
        core = XpubCore(f"tcp://{name}:{free_tcp_port}", sndhwm=10)
        core.close()
    assert not [r for r in caplog.records if "leave this machine" in r.getMessage()]


@pytest.mark.parametrize("case", ["no folder", "long path"])
def test_an_ipc_path_that_cannot_be_bound_names_its_fix(tmp_path, case):
    """Both said 'use an address of this machine, e.g. tcp://127.0.0.1:5556' (H26 finding 4)."""
    from perception.errors import PublishError
    from perception.xpub import XpubCore

    if case == "no folder":
        path, fix = tmp_path / "nodir" / "x.sock", f"its folder {tmp_path / 'nodir'} does not exist; create it (mkdir -p"
    else:
        folder = tmp_path / ("a" * 120)
        folder.mkdir()
        path, fix = folder / "x.sock", "and a Unix socket's path holds at most 107; choose a shorter ipc:// path"
    with pytest.raises(PublishError) as refused:
        XpubCore(f"ipc://{path}", sndhwm=10)
    assert str(refused.value).startswith(f"cannot bind ipc://{path}: ") and fix in str(refused.value)


def test_an_interface_without_an_ipv4_address_is_refused_before_the_bind(monkeypatch):
    """libzmq binds an interface's IPv4 address: one without any failed only at run time with 'No
    such device' (launch --check passed it; V1 N2)."""
    from perception import endpoints

    monkeypatch.setattr(endpoints.socket, "if_nameindex", lambda: [(1, "lo"), (7, "can0")])
    monkeypatch.setattr(endpoints, "interface_has_ipv4", lambda name: name == "lo")
    assert endpoints.unbindable_host("lo") is None
    assert endpoints.unbindable_host("can0").startswith("network interface 'can0' has no IPv4 address, and ZeroMQ "
                                                        "binds an interface's IPv4 address")


@pytest.mark.skipif(sys.platform != "linux", reason="SIOCGIFADDR is Linux's")
def test_the_loopback_interface_has_an_ipv4_address():
    from perception.endpoints import interface_has_ipv4

    assert interface_has_ipv4("lo") is True
