"""The one XPUB core (``perception/xpub.py``) under the live node's MaskPublisher and the replay's
ReplayPublisher: the same bind errors, the same subscription counting, the same latching. Real
sockets on loopback, random ports, waits on messages with timeouts."""

from __future__ import annotations

import threading
import time

import pytest
import zmq

from perception.errors import PublishError
from perception.publish import MaskPublisher
from perception.replay import ReplayPublisher
from perception.xpub import ADDRESS_IN_USE_FIX, XpubCore

PUBLISHERS = {
    "node": lambda endpoint: MaskPublisher(endpoint=endpoint, namespace="perception/front"),
    "replay": ReplayPublisher,
}


@pytest.mark.parametrize("kind", sorted(PUBLISHERS))
def test_both_publishers_name_the_endpoint_and_the_fix_on_bind_errors(kind, free_tcp_port):
    make = PUBLISHERS[kind]
    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    first = make(endpoint)
    try:
        with pytest.raises(PublishError) as info:
            make(endpoint)
        assert str(info.value) == f"cannot bind {endpoint}: address already in use; {ADDRESS_IN_USE_FIX}"
    finally:
        first.close()
    with pytest.raises(PublishError, match=r"bad endpoint '127\.0\.0\.1:5556'; expected tcp://HOST:PORT"):
        make("127.0.0.1:5556")
    with pytest.raises(PublishError, match=r"cannot bind tcp://10\.255\.255\.1:5556: .*; use an address of this machine"):
        make("tcp://10.255.255.1:5556")


def _subscriber(endpoint: str, *prefixes: bytes) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.linger = 0
    for prefix in prefixes:
        sock.setsockopt(zmq.SUBSCRIBE, prefix)
    sock.connect(endpoint)
    return sock


def _wait_count(count, want: int) -> None:
    deadline = time.monotonic() + 10
    while count() != want:
        assert time.monotonic() < deadline, f"subscriptions stayed at {count()}, expected {want}"
        time.sleep(0.01)


def test_replay_counts_live_subscriptions_like_the_node():
    """Replay used to count subscribe events only (never a leave); it now reads the core's live count."""
    replay = ReplayPublisher("tcp://127.0.0.1:*")
    node = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace="perception/front")
    try:
        assert replay.subscriptions == 0
        subs = [_subscriber(pub.endpoint, b"perception/front/", b"perception/front/lane") for pub in (replay, node)]
        _wait_count(lambda: replay.subscriptions, 2)
        _wait_count(lambda: node.stats()["subscriptions"], 2)
        for sub in subs:
            sub.close()
        _wait_count(lambda: replay.subscriptions, 0)
        _wait_count(lambda: node.stats()["subscriptions"], 0)
    finally:
        replay.close()
        node.close()


def test_replay_waits_for_a_subscriber_until_one_comes_or_it_is_stopped():
    replay = ReplayPublisher("tcp://127.0.0.1:*")
    try:
        stop = threading.Event()
        stop.set()
        assert replay.wait_for_subscriber(10.0, stop) is False  # stopped: returns at once
        assert replay.wait_for_subscriber(0.0, threading.Event()) is False  # nobody there
        sub = _subscriber(replay.endpoint, b"")
        try:
            assert replay.wait_for_subscriber(10.0, threading.Event()) is True
        finally:
            sub.close()
    finally:
        replay.close()


def test_a_latched_topic_goes_again_to_each_subscription_that_receives_it():
    core = XpubCore("tcp://127.0.0.1:*", sndhwm=16)
    resent: list[bytes] = []

    def resend() -> None:
        resent.append(b"info")
        core.send_locked(b"ns/info", b"{}", b"{}")

    core.latch(b"ns/info", resend)
    try:
        other = _subscriber(core.endpoint, b"elsewhere/")  # receives no ns/ topic: nothing resent
        _wait_count(core.subscriptions, 1)
        assert resent == []
        sub = _subscriber(core.endpoint, b"ns/")
        _wait_count(lambda: core.subscriptions(b"ns/"), 1)
        assert resent == [b"info"]
        assert sub.poll(10_000) and sub.recv_multipart() == [b"ns/info", b"{}", b"{}"]
        assert core.subscriptions() == 2 and core.subscriptions(b"elsewhere/") == 1
        sub.close()
        other.close()
    finally:
        core.close()
    core.close()  # idempotent
    with core.lock:
        assert core.send_locked(b"ns/info", b"{}", b"{}") is False  # closed: nothing sent, nothing raised
