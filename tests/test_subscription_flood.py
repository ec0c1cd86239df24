"""Hostile subscribers against the node's subscription accounting (hunt s34, H4 findings 2, 10, 11,
13): one idle client subscribing to hundreds of thousands of prefixes, fake prefixes under the
namespace, a subscribe/unsubscribe churn, a flood of refused CURVE keys. Real XPUB sockets on
loopback; waits on counters with deadlines, never on timings."""

from __future__ import annotations

import logging
import time

import numpy as np
import zmq

from perception import xpub_counts
from perception.curve_audit import AuditLog
from perception.publish import MaskPublisher
from perception.xpub import XpubCore
from perception.xpub_counts import SubscriptionCounts

NS = "perception/front"
NAMES = ["drivable", "lane", "obstacle", "class_map", "obstacles"]


def _sub(endpoint: str, *prefixes: bytes, sndhwm: int | None = None) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.linger = 0
    if sndhwm is not None:
        sock.sndhwm = sndhwm  # 0: libzmq drops none of a flood of subscribe messages
    for prefix in prefixes:
        sock.setsockopt(zmq.SUBSCRIBE, prefix)
    sock.connect(endpoint)
    return sock


def _until(check, what: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
    return value


class _NoScan(dict):
    """The core's table of live prefixes, refusing to be walked: the per-frame questions must be
    answered from the counters kept per topic and per namespace, not by a scan of the prefixes."""

    def _refuse(self, *_a):
        raise AssertionError("the live prefixes were scanned")

    __iter__ = items = values = keys = _refuse


def test_a_client_with_200k_prefixes_neither_stalls_nor_fools_the_node(caplog):
    """F2: subscribed() scanned every prefix for every topic on every frame (4 s a frame with 1M),
    and every prefix ever subscribed was kept. F11: prefixes under the namespace that name no topic
    counted as subscriptions."""
    caplog.set_level(logging.WARNING, logger="perception.xpub_counts")
    pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS)
    legit = _sub(pub.endpoint, f"{NS}/lane".encode())
    flood = _sub(pub.endpoint, sndhwm=0)
    try:
        for i in range(190_000):
            flood.setsockopt(zmq.SUBSCRIBE, b"zz%07d" % i)
        for i in range(10_000):  # under the namespace, but no topic of the node
            flood.setsockopt(zmq.SUBSCRIBE, f"{NS}/x{i:07d}".encode())
        flood.setsockopt(zmq.SUBSCRIBE, f"{NS}/stats".encode())  # last: read once all the others are
        # Each read takes at most READ_BATCH messages: the flood is spread over many frames.
        _until(lambda: pub.subscribed(NAMES) == {"lane"} and pub.stats()["subscriptions"] == 2,
               "the flood to be read")
        core = pub._core
        assert len(core.prefixes) <= xpub_counts.MAX_PREFIXES + 2  # bounded: the rest counted, not kept
        assert core.prefixes_over_cap == 200_000 - xpub_counts.MAX_PREFIXES
        capped = [r for r in caplog.records if "subscriptions to prefixes that receive none" in r.getMessage()]
        assert len(capped) == 1, [r.getMessage() for r in capped]  # warned once, not per prefix
        assert not pub.wait_for_subscribers(3, timeout_s=0.05)  # 10k fake prefixes do not count
        counts = core._counts
        counts._live = _NoScan(counts._live)  # (the test reads it back with dict.items, unwalked)
        assert pub.subscribed(NAMES) == {"lane"}
        assert pub.stats()["subscriptions"] == 2
        # Publishing stays correct: libzmq still filters, the legit subscriber gets its mask.
        mask = np.full((4, 6), 255, np.uint8)
        pub.publish_masks(seq=0, capture_ns=time.time_ns(), frame_id="f", masks={"lane": mask},
                          latency_ms={}, model_id="m")
        assert legit.poll(10_000)
        assert legit.recv_multipart()[0] == f"{NS}/lane".encode()
        counts._live = dict(dict.items(counts._live))
        flood.close()
        _until(lambda: core.subscriptions() == 1, "the flood's subscriptions to go")  # over the cap too
        assert core.prefixes == {f"{NS}/lane".encode()}
        assert pub.stats()["subscriptions"] == 1
    finally:
        legit.close()
        flood.close()
        pub.close()


def test_while_a_flood_is_still_being_read_every_topic_is_built():
    """A read takes at most READ_BATCH messages: a subscription queued behind a flood is not
    counted yet, so until the queue is read the node builds every topic (libzmq still filters)."""
    pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS)
    try:
        assert pub.subscribed(NAMES) == set()
        pub._core.read_subscriptions_locked = lambda *a, **k: False  # messages left after the read
        assert pub.subscribed(NAMES) == set(NAMES)
    finally:
        pub.close()


def test_subscriptions_count_what_receives_a_topic_of_the_namespace():
    """F11: one client with 500 prefixes under the namespace read as 501 subscriptions and
    satisfied --wait-subscribers 500. Only subscriptions that receive one of the namespace's
    topics count (README: a MaskSubscriber with masks=[...] counts once per mask plus one); <ns>/frame
    only on a node that sends atomic frames (s42 H47: not this one)."""
    pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS)
    fake = _sub(pub.endpoint, *(f"{NS}/x{i:07d}".encode() for i in range(500)), f"{NS}/lanes".encode(),
                b"perception/front2/", b"perception/other/")
    real = _sub(pub.endpoint, b"perception/", f"{NS}/".encode(), f"{NS}/la".encode(), f"{NS}/info".encode(),
                f"{NS}/frame".encode(), f"{NS}/obstacle/car".encode(), f"{NS}/obstacle/bus".encode())
    try:
        assert pub.wait_for_subscribers(6, timeout_s=30)
        _until(lambda: pub._core.subscriptions() == 510, "every subscription to be read")
        assert pub.stats()["subscriptions"] == 6  # per-class topics count until the node names its own
        assert not pub.wait_for_subscribers(7, timeout_s=0.05)
        pub.declare_topics(["drivable", "lane", "obstacle", "obstacle/car", "class_map"])
        assert pub.stats()["subscriptions"] == 5  # obstacle/bus: no such topic here
        assert pub.subscribed(["obstacle/car", "obstacle/bus", "lane", "obstacles"]) == {
            "obstacle/car", "obstacle/bus", "lane", "obstacles"}  # perception/ and <ns>/ receive all
        real.setsockopt(zmq.UNSUBSCRIBE, b"perception/")
        real.setsockopt(zmq.UNSUBSCRIBE, f"{NS}/".encode())
        _until(lambda: pub.stats()["subscriptions"] == 3, "the unsubscribes")
        # ZeroMQ's own filter: a subscriber of obstacle/bus would get it (it is not counted above).
        assert pub.subscribed(["obstacle/car", "obstacle/bus", "lane", "obstacles", "class_map"]) == {
            "obstacle/car", "obstacle/bus", "lane"}
    finally:
        fake.close()
        real.close()
        pub.close()


def test_prefixes_over_the_cap_are_counted_and_topics_are_always_kept(caplog):
    caplog.set_level(logging.WARNING, logger="perception.xpub_counts")
    core = XpubCore("tcp://127.0.0.1:*", sndhwm=16)
    core.max_prefixes = 50
    with core.lock:
        core.track(b"ns/lane", b"ns/")
    flood = _sub(core.endpoint, *(b"junk%03d" % i for i in range(80)), b"x" * 300)
    try:
        _until(lambda: core.subscriptions() == 81, "the flood")
        assert len(core.prefixes) == 50 and core.prefixes_over_cap == 31
        late = _sub(core.endpoint, b"ns/lane", b"n")  # a topic's prefixes: kept over the cap
        _until(lambda: core.subscriptions(b"ns/") == 2, "the late subscriber")
        with core.lock:
            assert core.receivers_locked(b"ns/lane") == 2 and core.receivers_locked(b"ns/other") == 1
        warned = [r for r in caplog.records if "subscriptions to prefixes that receive none" in r.getMessage()]
        assert len(warned) == 1
        flood.close()
        _until(lambda: core.subscriptions() == 2, "the flood to leave")
        assert core.prefixes == {b"ns/lane", b"n"}
        late.close()
        _until(lambda: core.subscriptions() == 0, "the late subscriber to leave")
    finally:
        flood.close()
        core.close()


def test_a_subscribe_churn_gets_one_latched_resend_per_interval():
    """F13: a client subscribing and unsubscribing in a loop made the node resend its latched info
    for every subscription (an innocent listener got 28 info documents instead of 2)."""
    core = XpubCore("tcp://127.0.0.1:*", sndhwm=1000)
    resent: list[int] = []

    def resend() -> None:
        resent.append(1)
        core.send_locked(b"ns/info", b"{}")

    core.latch(b"ns/info", resend)
    listener = _sub(core.endpoint, b"ns/")
    churn = _sub(core.endpoint, sndhwm=0)
    try:
        _until(lambda: core.subscriptions() == 1, "the listener")
        assert resent == [1]  # a new subscriber gets the info at once
        core.latch_interval_s = 3600.0
        for _ in range(200):
            churn.setsockopt(zmq.SUBSCRIBE, b"ns/info")
            churn.setsockopt(zmq.UNSUBSCRIBE, b"ns/info")
        churn.setsockopt(zmq.SUBSCRIBE, b"ns/stats")  # last: read once the churn is
        _until(lambda: core.subscriptions() == 2, "the churn to be read")
        with core.lock:
            core.send_locked(b"ns/stats", b"s")
        assert resent == [1]  # 200 subscriptions within the interval: resent once, later
        core.latch_interval_s = 0.0
        core.subscriptions()  # reads, and sends what was due
        assert resent == [1, 1]
        core.subscriptions()
        assert resent == [1, 1]  # coalesced: not once per subscription
        infos = 0
        while listener.poll(500):
            infos += listener.recv_multipart()[0] == b"ns/info"
        assert infos == 2
    finally:
        listener.close()
        churn.close()
        core.close()


def test_a_latched_send_of_its_own_satisfies_the_pending_resend():
    core = XpubCore("tcp://127.0.0.1:*", sndhwm=16)
    resent: list[int] = []
    core.latch(b"ns/info", lambda: (resent.append(1), core.send_locked(b"ns/info", b"again")))
    core.latch_interval_s = 3600.0
    first = _sub(core.endpoint, b"ns/")
    try:
        _until(lambda: core.subscriptions() == 1, "the first subscriber")
        second = _sub(core.endpoint, b"ns/info")
        _until(lambda: core.subscriptions() == 2, "the second subscriber")
        assert resent == [1]  # the second one waits for the interval...
        with core.lock:
            core.send_locked(b"ns/info", b"changed")  # ...or for the topic's next message
        core.latch_interval_s = 0.0
        core.subscriptions()
        assert resent == [1]
        assert second.poll(10_000) and second.recv_multipart() == [b"ns/info", b"changed"]
        second.close()
    finally:
        first.close()
        core.close()


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_the_curve_audit_summarises_a_flood_and_names_a_new_client_once_it_passed():
    """F10: after 1024 distinct refused key/address pairs, every later refusal (a legitimate
    client's too) shared one line per 10 s for the node's life."""
    logger = logging.getLogger("test.curve.audit")
    logger.propagate = False
    handler = _Lines()
    logger.addHandler(handler)
    now = [0.0]
    audit = AuditLog(logger, 10.0, 20, clock=lambda: now[0])
    line = "refused %s"
    for i in range(3000):  # a flood of random keys within one interval
        audit.refused(f"key{i} 10.0.0.9", line, f"key{i}")
        now[0] += 0.002
    named = [s for s in handler.lines if s.startswith("refused")]
    summaries = [s for s in handler.lines if "not named one by one" in s]
    assert len(named) == 20 and len(summaries) == 1 and len(audit) <= 40
    assert "the latest: refused key20" in summaries[0]
    handler.lines.clear()
    now[0] += 10.5  # the flood is over: a new client is named at once
    assert audit.refused("laptop 10.0.0.7", line, "laptop")
    assert handler.lines == ["refused laptop"] and len(audit) == 1
    for _ in range(5):  # its retries within the interval are counted, then reported
        assert not audit.refused("laptop 10.0.0.7", line, "laptop")
    now[0] += 10.5
    assert audit.refused("laptop 10.0.0.7", line, "laptop")
    assert handler.lines[-1] == "refused laptop (5 more since the last report)"
    logger.removeHandler(handler)


def test_the_last_interval_of_a_flood_is_summed_once_it_passed():
    """s40 F8: the refusals after a flood's first summary waited for a next refusal to be said, so a
    flood that stopped left them unsaid for good (2979 of 3000 here)."""
    logger = logging.getLogger("test.curve.audit3")
    logger.propagate = False
    handler = _Lines()
    logger.addHandler(handler)
    now = [0.0]
    audit = AuditLog(logger, 10.0, 20, clock=lambda: now[0])
    for i in range(3000):  # 6 s of new keys, then nothing
        audit.refused(f"key{i} 10.0.0.9", "refused %s", f"key{i}")
        now[0] += 0.002
    assert not audit.flush()  # within the interval of the first summary: not yet
    now[0] += 10.0
    assert audit.flush()
    summaries = [s for s in handler.lines if "not named one by one" in s]
    assert len(summaries) == 2 and summaries[1].startswith("CURVE: 2979 refused handshakes not named one by one")
    assert summaries[1].endswith("the latest: refused key2999")
    assert not audit.flush(final=True)  # nothing left to say
    for i in range(25):  # a second flood: 20 named, 5 counted within the interval of the last summary
        audit.refused(f"late{i} 10.0.0.9", "refused %s", f"late{i}")
    assert audit.flush(final=True)  # at stop: said at once
    assert handler.lines[-1].startswith("CURVE: 5 refused handshakes") and handler.lines[-1].endswith("late24")
    logger.removeHandler(handler)


def test_a_sustained_flood_keeps_the_audit_bounded():
    logger = logging.getLogger("test.curve.audit2")
    logger.propagate = False
    handler = _Lines()
    logger.addHandler(handler)
    now = [0.0]
    audit = AuditLog(logger, 10.0, 20, clock=lambda: now[0])
    for i in range(100_000):  # 100 s of 1000 new keys a second
        audit.refused(f"k{i}", "refused %s", f"k{i}")
        now[0] += 0.001
        assert len(audit) <= 40
    assert len(handler.lines) <= 10 * 21 + 21  # at most 20 named and 1 summary per 10 s
    logger.removeHandler(handler)


def test_the_incremental_counts_equal_a_scan_of_every_subscription():
    """The per-topic and per-namespace counts, kept as subscriptions come and go and as topics are
    tracked, always equal what a scan of all live subscriptions gives (the old way, per frame): one
    per connection and prefix it holds (subscribing again to a prefix it holds changes nothing), one
    per subscribe of no known connection; a connection that closes takes its own with it, whenever
    libzmq's unsubscribes for them (which name no connection) are read."""
    import random

    rng = random.Random(7)
    counts = SubscriptionCounts()
    groups = {b"a/": [b"a/lane", b"a/info", b"a/obstacle"], b"ab/": [b"ab/lane"]}
    family = b"a/obstacle/"
    later = [b"a/obstacle/car", b"a/obstacle/bus", b"ab/stats"]
    words = [b"", b"a", b"a/", b"a/l", b"a/lane", b"a/lanes", b"a/obstacle", b"a/obstacle/", b"a/obstacle/c",
             b"a/obstacle/car", b"a/obstacle/car/x", b"ab", b"ab/", b"ab/lane", b"ab/stats", b"b/", b"zz"]
    held: dict[int, set[bytes]] = {}  # what libzmq holds: open connection -> its prefixes
    anonymous: list[bytes] = []  # subscriptions of no known connection (counted per message)
    queued: list[bytes] = []  # libzmq's unsubscribes for closed connections, not read yet
    tracked: dict[bytes, bytes] = {}
    families = {family: b"a/"}
    next_conn = exact = 0

    def settle() -> None:
        counts.settle(lambda conn: conn in held)

    for group, topics in groups.items():
        for topic in topics:
            counts.track(topic, group)
            tracked[topic] = group
    counts.track_family(family, b"a/")
    for step in range(4000):
        if step == 700:
            counts.untrack_family(family)
            families.clear()
        if step == 1000:
            counts.track(later[0], b"a/")
            tracked[later[0]] = b"a/"
        if step == 1500:
            counts.track_family(family, b"a/")
            families[family] = b"a/"
        if step == 2000:
            for topic in later[1:]:
                counts.track(topic, topic[:topic.index(b"/") + 1])
                tracked[topic] = topic[:topic.index(b"/") + 1]
        r = rng.random()
        if r < 0.04 or not held:
            held[next_conn] = set()
            next_conn += 1
        elif r < 0.08:  # a connection closes: libzmq sends one unsubscribe per prefix it held
            gone = held.pop(rng.choice(list(held)))
            queued.extend(gone)
            if queued:
                counts.unsubscribe(queued.pop(0), None)  # the first is read now, the rest later
                settle()
        elif r < 0.14 and queued:
            for _ in range(rng.randint(1, len(queued))):
                counts.unsubscribe(queued.pop(rng.randrange(len(queued))), None)
            settle()
        elif r < 0.18:
            prefix = rng.choice(words)
            anonymous.append(prefix)
            counts.subscribe(prefix, None)
        elif r < 0.21 and anonymous:
            counts.unsubscribe(anonymous.pop(rng.randrange(len(anonymous))), None)
            settle()
        elif r < 0.5 and any(held.values()):
            conn = rng.choice([c for c, prefixes in held.items() if prefixes])
            prefix = rng.choice(sorted(held[conn]))
            held[conn].discard(prefix)
            counts.unsubscribe(prefix, conn)
        else:
            conn = rng.choice(list(held))
            prefix = rng.choice(words)
            held[conn].add(prefix)  # again, maybe: libzmq keeps it once
            counts.subscribe(prefix, conn)
        live = [p for prefixes in held.values() for p in prefixes] + anonymous
        # Exact once libzmq's unsubscribes for the closed connections are read; before, one of no
        # known connection may be taken for one of theirs (which name none): more, never fewer.
        same = (lambda got, want: got == want) if not queued else (lambda got, want: got >= want)
        for topic in tracked:
            assert same(counts.receivers(topic), sum(topic.startswith(p) for p in live)), (step, topic)
        for group in groups:
            want = sum(any(t.startswith(p) for t, g in tracked.items() if g == group)
                       or any(g == group and p.startswith(f) and b"/" not in p[len(f):]
                              for f, g in families.items()) for p in live)
            assert same(counts.count(group), want), (step, group)
        assert same(counts.count(b""), len(live))
        assert counts.connections == sum(bool(prefixes) for prefixes in held.values())
        exact += not queued
    assert exact > 1000
    for prefix in queued:
        counts.unsubscribe(prefix, None)
    settle()
    assert not counts._gone and not counts._gone_over  # every unsubscribe of a closed connection matched
