"""Subscriptions are counted per connection and prefix, not per message (hunt s35, NEW-1): one
connection subscribing to one prefix a thousand times counted a thousand subscriptions, and 999 of
them stayed after it left (libzmq sends one unsubscribe per prefix a closing connection held), so
``subscriptions``, ``--wait-subscribers`` and the node's choice of what to build counted a client
that was gone. Real XPUB sockets on loopback (waits on counters with deadlines, never on timings),
then the bookkeeping (``perception/xpub_counts.py``) on its own, without sockets."""

from __future__ import annotations

import os
import socket
import time

import pytest
import zmq

from perception.publish import MaskPublisher
from perception.xpub import XpubCore
from perception.xpub_connections import CLOSED, connection_alive, name_connection, shut_down_connection
from perception.xpub_counts import SubscriptionCounts

NS = "perception/front"
LANE = f"{NS}/lane".encode()
NAMES = ["drivable", "lane", "obstacle", "class_map", "obstacles"]


def _until(check, what: str, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
    return value


def _read(core: XpubCore):
    """The core's counts, once it read the subscription messages waiting."""
    core.subscriptions()
    return core._counts


def _socket(kind: int, endpoint: str, *prefixes: bytes) -> zmq.Socket:
    sock = zmq.Context.instance().socket(kind)
    sock.linger = 0
    sock.sndhwm = 0  # libzmq drops none of the subscribe messages
    if kind == zmq.SUB:
        sock.reconnect_ivl = 50
        for prefix in prefixes:
            sock.setsockopt(zmq.SUBSCRIBE, prefix)
    sock.connect(endpoint)
    return sock


@pytest.mark.parametrize("kind", ["raw XSUB", "SUB"])
def test_one_connection_subscribing_a_prefix_1000_times_counts_once_and_not_after_it_left(kind):
    pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS)
    core = pub._core
    if kind == "raw XSUB":
        client = _socket(zmq.XSUB, pub.endpoint)
        subscribe = lambda prefix: client.send(b"\x01" + prefix)  # noqa: E731
    else:
        client = _socket(zmq.SUB, pub.endpoint)
        subscribe = lambda prefix: client.setsockopt(zmq.SUBSCRIBE, prefix)  # noqa: E731
    try:
        subscribe(b"zz-first")  # (sent once connected, by the socket itself)
        _until(lambda: core.subscriptions() == 1, "the connection")
        for _ in range(1000):
            subscribe(LANE)
        subscribe(b"zz-last")  # read after the thousand
        _until(lambda: b"zz-last" in _read(core).prefixes, "the thousand subscribes to be read")
        assert pub.stats()["subscriptions"] == 1  # was 1000
        assert core.subscriptions() == 3
        assert not pub.wait_for_subscribers(2, timeout_s=0.05)  # --wait-subscribers 2: one client is not two
        assert pub.subscribed(NAMES) == {"lane"}
        client.close()
        _until(lambda: core.subscriptions() == 0, "the client's subscriptions to go")  # was 999 for ever
        assert pub.stats()["subscriptions"] == 0
        assert pub.subscribed(NAMES) == set()  # nothing is built for it any more
        assert not pub.wait_for_subscribers(1, timeout_s=0.05)
        assert core._counts.connections == 0
    finally:
        client.close()
        pub.close()


def test_two_connections_holding_a_prefix_count_two_and_one_after_one_left():
    pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS)
    first = _socket(zmq.SUB, pub.endpoint, LANE, LANE)
    second = _socket(zmq.SUB, pub.endpoint, LANE)
    try:
        assert pub.wait_for_subscribers(2, timeout_s=30)
        _until(lambda: pub._core.subscriptions() == 2, "both")
        first.close()
        _until(lambda: _read(pub._core).connections == 1, "the first to leave")
        assert pub.stats()["subscriptions"] == 1
        assert pub.subscribed(NAMES) == {"lane"}  # still built for the second
        second.setsockopt(zmq.SUBSCRIBE, f"{NS}/drivable".encode())
        assert pub.wait_for_subscribers(2, timeout_s=30)  # the second's two prefixes: two
    finally:
        first.close()
        second.close()
        pub.close()


def test_a_client_that_reconnects_counts_once():
    """The node drops a SUB's connection (as a removed CURVE key does); the SUB reconnects and sends
    its subscriptions again, often on the same descriptor number. The old connection's go, the new
    one's count: once, never twice, never none."""
    core = XpubCore("tcp://127.0.0.1:*", sndhwm=16)
    with core.lock:
        core.track(LANE, f"{NS}/".encode())
    client = _socket(zmq.SUB, core.endpoint, f"{NS}/".encode())
    counts = core._counts
    try:
        _until(lambda: core.subscriptions() == 1, "the client")
        client.setsockopt(zmq.SUBSCRIBE, LANE)  # twice, once connected: two subscribes on the wire
        client.setsockopt(zmq.SUBSCRIBE, LANE)
        _until(lambda: LANE in _read(core).prefixes, "its subscribes")
        assert core.subscriptions() == 2
        for _ in range(3):
            (old,) = counts._held
            fd, dev, ino = old
            with core.lock:
                assert shut_down_connection(fd, (dev, ino))
            # (client.poll: a SUB sends its subscriptions again once its own thread looks at it.)
            _until(lambda old=old: client.poll(0) >= 0 and old not in _read(core)._held and counts.connections == 1
                   and core.subscriptions() == 2, "the old connection to go and the new one to come")
            with core.lock:
                assert core.receivers_locked(LANE) == 2 and core.receivers_locked(f"{NS}/info".encode()) == 1
            assert core.subscriptions(f"{NS}/".encode()) == 2
            with core.lock:
                core.send_locked(LANE, b"mask")
            assert client.poll(10_000) and client.recv_multipart() == [LANE, b"mask"]
    finally:
        client.close()
        core.close()


def test_a_descriptor_reused_during_a_read_never_counts_the_new_connection_for_less():
    """The read names each descriptor's connection once and again at its end: when the connection
    closed and a new one took its descriptor meanwhile, the messages taken as the old one's may be
    the new one's, so the new one gets them all (more, until it closes; never fewer)."""
    core = XpubCore("tcp://127.0.0.1:*", sndhwm=16)
    with core.lock:
        core.track(LANE, f"{NS}/".encode())
    old_pair, new_pair, gone_pair = socket.socketpair(), socket.socketpair(), socket.socketpair()
    try:
        fd = old_pair[0].fileno()
        old = name_connection(fd)
        counts = core._counts
        counts.subscribe(LANE, old)
        counts.subscribe(b"zz", old)
        os.dup2(new_pair[0].fileno(), fd)  # the old connection closed, a new one has its number
        new = name_connection(fd)
        assert new not in (old, CLOSED) and connection_alive(new) and not connection_alive(old)
        with core.lock:
            core._recheck_locked({fd: old}, {})
        assert counts.receivers(LANE) == 1 and counts.count(b"") == 2 and set(counts._held) == {new}
        # Subscribes refused while the descriptor was no socket, then one opened on it: counted for it.
        closed_fd = gone_pair[0].fileno()
        gone_pair[0].close()
        assert name_connection(closed_fd) is CLOSED
        os.dup2(new_pair[1].fileno(), closed_fd)
        with core.lock:
            core._recheck_locked({closed_fd: CLOSED}, {closed_fd: {f"{NS}/".encode(): None}})
        assert counts.count(f"{NS}/".encode()) == 2 and counts.connections == 2
        os.close(closed_fd)
    finally:
        for pair in (old_pair, new_pair, gone_pair):
            for sock in pair:
                sock.close()
        core.close()


# ---- the bookkeeping alone ------------------------------------------------------------------------


def _counts(*topics: bytes, group: bytes = b"ns/") -> SubscriptionCounts:
    counts = SubscriptionCounts()
    for topic in topics:
        counts.track(topic, group)
    return counts


def test_a_subscribe_a_connection_holds_already_counts_nothing_and_wakes_no_latch():
    counts = _counts(b"ns/info", b"ns/lane")
    assert sorted(counts.subscribe(b"ns/", "a")) == [b"ns/info", b"ns/lane"]  # a latched info goes to it
    for _ in range(1000):
        assert not counts.subscribe(b"ns/", "a")
    assert counts.subscribe(b"ns/lane", "a") == [b"ns/lane"]
    assert counts.subscribe(b"ns/", "b")
    assert counts.count(b"ns/") == 3 and counts.receivers(b"ns/lane") == 3 and counts.receivers(b"ns/info") == 2
    counts.unsubscribe(b"ns/", "a")  # one unsubscribe takes it, as in libzmq
    assert counts.count(b"ns/") == 2 and counts.receivers(b"ns/info") == 1
    assert not counts.pending


def test_a_closed_connection_goes_at_the_first_unsubscribe_naming_none_and_the_rest_change_nothing():
    counts = _counts(b"ns/lane")
    for prefix in (b"ns/", b"ns/lane", b"zz1", b"zz2"):
        counts.subscribe(prefix, "a")
    counts.subscribe(b"ns/lane", "b")
    asked: list[str] = []
    alive = {"a", "b"}

    def is_alive(conn: str) -> bool:
        asked.append(conn)
        return conn in alive

    alive.discard("a")
    counts.unsubscribe(b"zz2", None)
    counts.unsubscribe(b"ns/", None)
    assert counts.pending and counts.count(b"") == 5  # settled once the read is over
    counts.settle(is_alive)
    assert sorted(asked) == ["a", "b"]  # each connection asked once, not once per unsubscribe
    assert counts.count(b"") == 1 and counts.receivers(b"ns/lane") == 1 and counts.prefixes == {b"ns/lane"}
    for prefix in (b"ns/lane", b"zz1"):  # libzmq's others for "a", read later
        counts.unsubscribe(prefix, None)
    asked.clear()
    counts.settle(is_alive)
    assert asked == ["b"] and counts.count(b"") == 1 and counts.receivers(b"ns/lane") == 1
    assert not counts._gone and not counts._gone_over and counts.connections == 1


def test_over_the_cap_a_connections_subscriptions_are_counted_and_go_with_it(caplog):
    counts = _counts(b"ns/lane")
    counts.max_prefixes = 2
    for i in range(5):
        counts.subscribe(b"junk%d" % i, "a")
    counts.subscribe(b"ns/lane", "b")  # a topic's prefix: kept over the cap
    assert counts.count(b"") == 6 and len(counts.prefixes) == 3 and counts.prefixes_over_cap == 3
    assert counts.subscribe(b"junk0", "b") == () and counts.prefixes_over_cap == 4  # the cap is per subscription
    assert "subscriptions to prefixes that receive none" in caplog.text
    counts.unsubscribe(b"junk4", "a")  # an explicit one, for a subscription over the cap
    counts.settle(lambda conn: True)
    assert counts.count(b"") == 6 and counts._over == {"a": 2, "b": 1}
    for prefix in (b"junk0", b"junk1", b"junk2", b"junk3"):  # "a" closes: libzmq's, naming none
        counts.unsubscribe(prefix, None)
    counts.settle(lambda conn: conn == "b")
    assert counts.count(b"") == 2 and counts.prefixes == {b"ns/lane"} and counts._unstored == 1
    assert not counts._gone and not counts._gone_over


def test_an_old_connections_late_unsubscribe_taken_as_the_new_ones_does_not_uncount_the_new_one():
    """The old connection's messages read after its descriptor went to a new one are taken as the
    new one's: an unsubscribe of the old one's then removes the old one's, when it is dropped."""
    counts = _counts(b"ns/lane")
    counts.max_prefixes = 0  # every prefix outside the topics' is over the cap
    counts.subscribe(b"ns/lane", "old")
    counts.subscribe(b"junk-old", "old")
    counts.subscribe(b"ns/lane", "new")
    counts.subscribe(b"junk-new", "new")
    counts.unsubscribe(b"junk-old", "new")  # the old one's, taken as the new one's
    counts.unsubscribe(b"ns/lane", None)  # libzmq's, for the old one
    counts.settle(lambda conn: conn == "new")
    assert counts.count(b"") == 2 and counts.receivers(b"ns/lane") == 1 and counts._over == {"new": 1}
    counts.merge("gone", "new")  # (nothing to hand over)
    counts.subscribe(b"ns/", "older")
    counts.subscribe(b"ns/lane", "older")
    counts.merge("older", "new")  # the read could not tell them apart: the new one takes both
    assert counts.receivers(b"ns/lane") == 2 and counts.count(b"") == 3 and counts.connections == 1


def test_without_a_connection_every_message_counts():
    """A transport whose messages name no connection: counted per message, as libzmq sends them."""
    counts = _counts(b"ns/lane")
    counts.subscribe(b"ns/lane")
    counts.subscribe(b"ns/lane")
    assert counts.count(b"ns/") == 2
    counts.unsubscribe(b"ns/lane")
    counts.settle(lambda conn: True)
    assert counts.count(b"ns/") == 1 and counts.prefixes == {b"ns/lane"}
