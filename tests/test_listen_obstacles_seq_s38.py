"""``listen``'s per-topic figures counted ``obstacles`` by its header's document number, so a node
that dropped 582 frames showed 582 missing on every mask topic and 0 on ``obstacles`` (H16). It is
counted by the frame number in its payload, its header's number the transport's, as the README's
wire section says: missing = frames with no document, lost = documents that did not arrive."""

from __future__ import annotations

from perception.subscribe import Message
from perception.topic_stats import TopicStats


def _obstacles(frame_seq, doc_seq: int) -> Message:
    return Message(topic="perception/front/obstacles", header={"kind": "json", "seq": doc_seq, "pub_seq": doc_seq},
                   data={"seq": frame_seq, "capture_ns": 1_000 + doc_seq, "obstacles": []}, wire_bytes=1,
                   receive_ns=2_000_000 + doc_seq)


def test_frames_the_node_sent_no_document_for_count_as_node_drops():
    stats = TopicStats(0.0)
    # frames 0, 1 | node dropped 2, 3, 4 | 5 | a document lost in transport (frame 6) | 7
    for frame, doc in [(0, 0), (1, 1), (5, 2), (7, 4)]:
        stats.add(_obstacles(frame, doc), 0.0)
    summary = stats.summary(1.0)
    assert (summary["missing"], summary["lost"], summary["node_dropped"]) == (4, 1, 3)


def test_a_payload_without_a_usable_frame_number_falls_back_to_the_header():
    stats = TopicStats(0.0)
    for frame, doc in [("x", 0), (True, 1), (None, 3)]:
        stats.add(_obstacles(frame, doc), 0.0)
    summary = stats.summary(1.0)
    assert (summary["missing"], summary["lost"]) == (1, 1)
