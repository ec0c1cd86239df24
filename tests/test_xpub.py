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
from perception.xpub import XpubCore

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
        assert str(info.value) == (f"cannot bind {endpoint}: address already in use; use another port (e.g. --endpoint "
                                   "tcp://127.0.0.1:* for any free one, logged at start) or stop what holds it (ss "
                                   f"-ltnp 'sport = :{free_tcp_port}' names it)")
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


def test_a_latched_topic_being_sent_as_a_subscription_arrives_goes_once_in_order():
    """hunt4c: a subscriber that joined while the node sent its info got info pub_seq 1 (the
    resend for the new subscription) before pub_seq 0 (the message being sent, numbered first)."""
    core = XpubCore("tcp://127.0.0.1:*", sndhwm=16)
    resent: list[bytes] = []

    def resend() -> None:
        resent.append(b"info")
        core.send_locked(b"ns/info", b"resent")

    core.latch(b"ns/info", resend)
    sub = _subscriber(core.endpoint, b"ns/")
    try:
        assert core._socket.poll(10_000)  # the subscription is waiting on the socket, not yet read
        with core.lock:
            core.send_locked(b"ns/info", b"first")
        assert sub.poll(10_000) and sub.recv_multipart() == [b"ns/info", b"first"]
        assert not sub.poll(300) and resent == []
        with core.lock:
            core.send_locked(b"ns/stats", b"s")  # another topic: nothing resent, it is subscribed already
        assert sub.recv_multipart() == [b"ns/stats", b"s"] and resent == []
    finally:
        sub.close()
        core.close()


@pytest.mark.parametrize("kind", sorted(PUBLISHERS))
def test_a_second_publisher_on_a_live_ipc_path_is_refused_and_a_stale_one_is_reused(kind, tmp_path):
    """Hunt 4b finding 4: libzmq unlinks an ipc path and binds anew, so a second node took over the
    first one's path without a word, and the first published to nobody from then on."""
    import socket

    make = PUBLISHERS[kind]
    endpoint = f"ipc://{tmp_path}/node.sock"
    first = make(endpoint)
    try:
        with pytest.raises(PublishError, match=r"address already in use; use another --endpoint \(another ipc:// path"):
            make(endpoint)
    finally:
        first.close()
    stale = socket.socket(socket.AF_UNIX)  # a socket file whose process is gone (killed node)
    stale.bind(f"{tmp_path}/stale.sock")
    stale.close()
    make(f"ipc://{tmp_path}/stale.sock").close()
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    with pytest.raises(PublishError, match=r"notes.txt is not a socket, and binding there would delete it"):
        make(f"ipc://{keep}")
    assert keep.read_text() == "mine"


def test_inproc_endpoints_are_refused_naming_the_ones_that_work():
    from perception.endpoints import check_endpoint

    with pytest.raises(PublishError, match=r"endpoint 'inproc://x': inproc:// reaches only .* use tcp://HOST:PORT"):
        check_endpoint("inproc://x")


def test_ipv6_endpoints_publish_and_subscribe(free_tcp_port):
    """Hunt 4b finding 5: 'tcp://[::1]:PORT' passed the check, then failed to bind ("No such
    device"), since ZeroMQ sockets take IPv6 addresses only with their IPV6 option."""
    import socket
    import time

    from perception.subscribe import MaskSubscriber

    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    endpoint = f"tcp://[::1]:{free_tcp_port}"
    core = XpubCore(endpoint, sndhwm=16)
    subscriber = MaskSubscriber(endpoint, topics=["perception/front/stats"])
    try:
        deadline = time.monotonic() + 10
        while not core.subscriptions(b"perception/") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert core.subscriptions(b"perception/") == 1
    finally:
        subscriber.close()
        core.close()
