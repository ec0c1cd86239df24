"""An endpoint that names the loopback interface (``tcp://lo:5556``) is loopback (hunt s36 H7
finding F9): no warning that masks leave the machine, and it spells the address it binds as
127.0.0.1."""

from __future__ import annotations

import logging
import os

import pytest

from perception.endpoints import canonical_bind_host, is_loopback
from perception.publish import MaskPublisher

HAS_LO = os.path.exists("/sys/class/net/lo")


@pytest.mark.skipif(not HAS_LO, reason="no Linux loopback interface named lo here")
def test_binding_the_lo_interface_draws_no_leave_this_machine_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="perception.xpub"), \
            MaskPublisher(endpoint="tcp://lo:*", namespace="perception/lo") as pub:
        assert pub.endpoint.startswith("tcp://127.0.0.1:")
    assert not [r.getMessage() for r in caplog.records if "leave this machine" in r.getMessage()]


@pytest.mark.parametrize(("host", "loopback"), [
    ("lo", HAS_LO or not os.path.isdir("/sys/class/net")),
    ("localhost", True), ("LOCALHOST", True), ("127.0.0.2", True), ("::1", True),
    ("0.0.0.0", False), ("*", False), ("10.0.0.7", False), ("car.local", False), ("..", False),
])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.skipif(not HAS_LO, reason="no Linux loopback interface named lo here")
def test_lo_and_127_0_0_1_are_one_bind_address():
    assert {canonical_bind_host(h) for h in ("lo", "127.0.0.1", "localhost", "[127.0.0.1]")} == {"127.0.0.1"}
    assert canonical_bind_host("*") == "0.0.0.0"
    assert canonical_bind_host("[::0001]") == "::1"
    assert canonical_bind_host("eth-unknown") == "eth-unknown"
