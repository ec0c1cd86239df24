"""``listen``'s summary gives no rate for a topic with fewer than 3 messages (H47 of s42: the node's
final stats document, a few ms after its periodic one, read as ``stats 318.1 Hz``)."""

from __future__ import annotations

from perception.subscribe import Message
from perception.topic_stats import TopicStats
from perception.wire import json_header


def _stats_message(seq: int) -> Message:
    header = json_header(name="stats", seq=seq, publish_ns=seq)
    return Message(topic="perception/front/stats", header=header, data={}, wire_bytes=10, receive_ns=seq)


def test_two_messages_are_no_rate_three_are():
    stats = TopicStats(0.0)
    stats.add(_stats_message(0), 1.0)
    stats.add(_stats_message(1), 1.003)  # the final document, 3 ms after the periodic one
    assert stats.summary(2.0)["rate_hz"] is None
    stats.add(_stats_message(2), 2.003)
    assert abs(stats.summary(3.0)["rate_hz"] - 2 / 1.003) < 1e-9
