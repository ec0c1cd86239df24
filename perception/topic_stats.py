"""A subscriber's running figures per topic (what ``perception listen`` and ``perception demo``
report): rate, latency percentiles, bytes, and missing sequence numbers split into transport
losses and the node's own drops (the names as ``contracts.SEQUENCE_FIGURES`` defines them). The client that receives the messages is ``perception.subscribe``.
"""

from __future__ import annotations

import random
from array import array
from typing import TYPE_CHECKING, Any

from perception.contracts import INFO_TOPIC, OBSTACLES_TOPIC
from perception.stats import latency_percentiles

if TYPE_CHECKING:
    from perception.subscribe import Message


class TopicStats:
    """Running figures for one topic, like ``ros2 topic hz``: rate, latency, missing numbers, bytes.

    Latency is ``receive_ns - capture_ns`` for masks and ``obstacles`` (whose payload carries its
    frame's ``capture_ns``), ``receive_ns - publish_ns`` for ``stats`` and ``info``, all on
    the wall clock, so across machines it is only as good as their clock sync. ``missing`` counts
    missing capture sequence numbers, split into ``lost`` (gaps in the publisher's per-topic
    ``pub_seq``: messages sent but lost in the transport, e.g. at a full high-water mark) and
    ``node_dropped`` (the rest: frames the node itself dropped, e.g. by its keep-latest queue, or
    did not compute). Wire version 1 has no ``pub_seq``, so there every gap counts as lost. A
    sequence number that goes backwards counts as a publisher restart, not as gaps. ``obstacles`` is
    counted by the frame number in its payload (its header numbers documents: the transport's
    count), so its figures read as the masks' do. The latched
    ``<namespace>/info`` topic counts no gaps: the publisher sends its latest document again to each
    new subscription, so its numbers skip by design and the newest document is all a reader needs;
    nor has it a rate (``latched``; ``rate_hz`` None in the summary): its copies come when the
    document changes and when someone subscribes (milliseconds apart for two subscriptions), so
    count over time says nothing about the node.

    The run's latency percentiles come from a uniform sample of the whole run (reservoir sampling,
    at most ``_MAX_SAMPLES`` values, so a listener running for days stays bounded); the maximum and
    the minimum (``latency_min_ms``: below 0 proves the two machines' clocks differ) are exact.

    Cheap per topic (a listener keeps one for each of up to ``--max-topics`` topics): slots, and
    the sample an array of doubles, the sampling's random generator made only once the sample is
    full: a topic's sample tops out at 800 kB, the rest is a few hundred bytes.
    """

    __slots__ = ("latched", "count", "wire_bytes", "missing", "lost", "restarts", "last_seq", "last_pub_seq", "first_s", "last_s",
                 "latencies_ms", "latency_max_ms", "latency_min_ms", "_latency_count", "_reservoir_rng", "_window_start_s",
                 "_window_count", "_window_bytes", "_window_latencies_ms")

    _MAX_SAMPLES = 100_000  # latency samples kept for the final percentiles (about an hour at 30 Hz)

    def __init__(self, now_s: float) -> None:
        #: The latched ``<namespace>/info`` topic (``is_latched``), known from the first message.
        self.latched = False
        self.count = 0
        self.wire_bytes = 0
        self.missing = 0
        self.lost = 0
        self.restarts = 0
        self.last_seq: int | None = None
        self.last_pub_seq: int | None = None
        self.first_s: float | None = None
        self.last_s: float | None = None
        self.latencies_ms = array("d")  # 8 bytes a sample (a list of floats takes 32)
        self.latency_max_ms: float | None = None
        self.latency_min_ms: float | None = None
        self._latency_count = 0
        self._reservoir_rng: random.Random | None = None  # made when the sample is full (2.5 kB of state)
        self._window_start_s = now_s
        self._window_count = 0
        self._window_bytes = 0
        self._window_latencies_ms: list[float] = []

    def add(self, msg: Message, now_s: float) -> None:
        """Account one message received at monotonic time ``now_s``."""
        self.count += 1
        self.wire_bytes += msg.wire_bytes
        self._window_count += 1
        self._window_bytes += msg.wire_bytes
        self.first_s = now_s if self.first_s is None else self.first_s
        self.last_s = now_s
        seq, pub_seq = msg.seq, msg.pub_seq
        name = msg.topic.rpartition("/")[2]
        self.latched = name == INFO_TOPIC
        if name == OBSTACLES_TOPIC and isinstance(msg.data, dict):
            # Its header numbers documents; the frame's number is in the payload. Counted by that,
            # as the masks are, its header's number the transport's (a gap there is a lost document).
            frame = msg.data.get("seq")
            if isinstance(frame, int) and not isinstance(frame, bool) and 0 <= frame < 2**63:
                seq, pub_seq = frame, msg.seq if pub_seq is None else pub_seq
        if self.last_seq is not None and not self.latched:
            if seq > self.last_seq:
                missing = seq - self.last_seq - 1
                self.missing += missing
                if pub_seq is None or self.last_pub_seq is None:
                    self.lost += missing
                elif pub_seq > self.last_pub_seq:
                    self.lost += min(missing, pub_seq - self.last_pub_seq - 1)
            else:
                self.restarts += 1
        self.last_seq = seq
        self.last_pub_seq = pub_seq
        stamp_ns = msg.capture_ns
        if stamp_ns is None and isinstance(msg.data, dict):  # obstacles: the frame's capture time, in the payload
            stamp_ns = msg.data.get("capture_ns")
        # stats, info: no frame of their own. A payload's number is not checked by the wire reader:
        # only one an int64 holds is a time (10**400 would not even convert to a float).
        if not isinstance(stamp_ns, int) or isinstance(stamp_ns, bool) or not 0 <= stamp_ns < 2**63:
            stamp_ns = msg.header.get("publish_ns")
        if isinstance(stamp_ns, int):
            latency_ms = (msg.receive_ns - stamp_ns) / 1e6
            self._window_latencies_ms.append(latency_ms)
            self._sample_latency(latency_ms)

    def _sample_latency(self, latency_ms: float) -> None:
        """Keep ``latency_ms`` in the run's bounded uniform sample (Algorithm R) and track the max and min."""
        self._latency_count += 1
        if self.latency_max_ms is None or latency_ms > self.latency_max_ms:
            self.latency_max_ms = latency_ms
        if self.latency_min_ms is None or latency_ms < self.latency_min_ms:
            self.latency_min_ms = latency_ms
        if len(self.latencies_ms) < self._MAX_SAMPLES:
            self.latencies_ms.append(latency_ms)
            return
        if self._reservoir_rng is None:
            self._reservoir_rng = random.Random(0)  # seeded: the same messages give the same summary
        slot = self._reservoir_rng.randrange(self._latency_count)
        if slot < self._MAX_SAMPLES:
            self.latencies_ms[slot] = latency_ms

    def window(self, now_s: float) -> dict[str, Any]:
        """Figures since the previous call (rate, latency, bytes/s), then start a new window."""
        elapsed_s = max(now_s - self._window_start_s, 1e-9)
        out = {
            "count": self._window_count,
            "rate_hz": self._window_count / elapsed_s,
            "bytes_per_s": self._window_bytes / elapsed_s,
            "latency_ms": _percentiles(self._window_latencies_ms),
            "missing": self.missing,
            "lost": self.lost,
            "node_dropped": self.missing - self.lost,
        }
        self._window_start_s, self._window_count, self._window_bytes = now_s, 0, 0
        self._window_latencies_ms = []
        return out

    def summary(self, duration_s: float) -> dict[str, Any]:
        """Figures over the whole run; the rate is over first-to-last message, None for the latched
        info topic (``latched``: its copies are resends, not a stream) and for a topic with fewer than
        ``MIN_RATE_MESSAGES`` (two messages are one interval: the node's last stats document comes a
        few milliseconds after its periodic one, which read as 318 Hz)."""
        span_s = (self.last_s - self.first_s) if self.count >= 2 else 0.0
        rate_hz = (None if self.latched or 0 < self.count < MIN_RATE_MESSAGES
                   else (self.count - 1) / span_s if span_s > 0 else 0.0)
        return {
            "count": self.count,
            "rate_hz": rate_hz,
            "bytes": self.wire_bytes,
            "bytes_per_s": self.wire_bytes / duration_s if duration_s > 0 else 0.0,
            "latency_ms": _percentiles(self.latencies_ms, max_ms=self.latency_max_ms),
            "missing": self.missing,
            "lost": self.lost,
            "node_dropped": self.missing - self.lost,
            "seq_restarts": self.restarts,
            "last_seq": self.last_seq,
        }


#: A run's rate (``TopicStats.summary``) needs at least this many messages of a topic.
MIN_RATE_MESSAGES = 3


def is_latched(topic: str) -> bool:
    """Whether ``topic`` is a latched ``<namespace>/info`` topic: sent when its document changes and
    again to each new subscription, so it has no rate (``TopicStats.summary``, ``listen``'s lines)."""
    return topic.rpartition("/")[2] == INFO_TOPIC


def _percentiles(values: list[float] | array, *, max_ms: float | None = None) -> dict[str, float] | None:
    """p50/p90/p99 of ``values`` and their max (``max_ms`` when the values are only a sample)."""
    if not values:
        return None
    top = max(values) if max_ms is None else max_ms
    return {**latency_percentiles(values), "max": float(top)}
