"""A network interface's name and its own address are one bind address in launch's clash check.

Two pipeline nodes on ``tcp://eth0:6321`` and ``tcp://192.0.2.2:6321`` (eth0's address) passed
``--check``; at run time the second failed with "address already in use" and was never restarted.
ZeroMQ itself is the judge here: the address it binds for the interface's name.
"""

from __future__ import annotations

import socket

import pytest
import yaml
import zmq

from perception.cli import main as cli_main
from perception.endpoints import canonical_bind_host, interface_ipv4, is_loopback_interface


def _bindable_interfaces() -> list[tuple[str, str]]:
    """(name, the IPv4 address ZeroMQ binds for it) of each non-loopback interface it binds by name."""
    found = []
    with zmq.Context() as ctx:
        for _, name in socket.if_nameindex() if hasattr(socket, "if_nameindex") else ():
            if is_loopback_interface(name):
                continue
            sock = ctx.socket(zmq.PUB)
            try:
                sock.bind(f"tcp://{name}:*")
                host = sock.last_endpoint.decode().removeprefix("tcp://").rsplit(":", 1)[0]
                found.append((name, host))
            except zmq.ZMQError:
                pass
            finally:
                sock.close(linger=0)
    return found


INTERFACES = _bindable_interfaces()
needs_interface = pytest.mark.skipif(not INTERFACES, reason="no non-loopback interface with an IPv4 address here")


@needs_interface
def test_an_interface_name_is_the_address_zeromq_binds_for_it():
    for name, host in INTERFACES:
        assert canonical_bind_host(name) == host, name


@needs_interface
def test_an_interface_and_its_own_address_clash_under_check(tmp_path, capsys):
    name, host = INTERFACES[0]
    nodes = [{"node": {"name": n, "kind": "pipeline", "parameters": {"source": "synthetic", "camera_name": n,
                                                                      "endpoint": e}}}
             for n, e in (("a", f"tcp://{name}:6321"), ("b", f"tcp://{host}:6321"))]
    file = tmp_path / "l.yaml"
    file.write_text(yaml.safe_dump({"launch": nodes}))
    code = cli_main(["launch", str(file), "--check"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"nodes 'a' (tcp://{name}:6321) and 'b' (tcp://{host}:6321) bind the same address" in err, err


def test_the_loopback_interface_reads_its_address_and_other_names_are_kept():
    if not hasattr(socket, "if_nameindex") or "lo" not in {n for _, n in socket.if_nameindex()}:
        pytest.skip("no interface named lo here")
    assert interface_ipv4("lo") == "127.0.0.1"
    assert interface_ipv4("no-such-if0") is None and canonical_bind_host("no-such-if0") == "no-such-if0"
    assert interface_ipv4("car.local") is None and interface_ipv4("x" * 40) is None
