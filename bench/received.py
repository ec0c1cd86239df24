"""What the bench's subscriber received from a node under the bench, and the figures made of it.

``Received`` holds the frames of the measuring window by number (each frame's first mask message),
their ``pub_seq`` per topic and the node's stats documents; ``record_message`` files one message in
it, and ``summarize_received`` turns it into the ``pipeline`` block's figures: rates, missing
frames split into dropped by the node and lost after it (against the node's own final stats),
per-stage and end-to-end latency, CPU per frame. ``node.py`` fills one while it runs a node,
``multicamera.py`` one per camera.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from perception import contracts
from perception.bench.stats import node_accounting, sequence_gaps, summarize_ms, transport_losses

#: A subscriber that heard nothing for this long at the end of the window, while the node published
#: more, is said to have been cut off (a stall of the transport, not the stop's last frames).
SILENT_TAIL_S = 1.0


@dataclass
class Received:
    """What the subscriber saw, per frame (first mask message of each seq) and from stats."""

    frames: dict[int, dict[str, Any]] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    #: Per mask topic: frame number -> the message's ``pub_seq`` (``stats.transport_losses``).
    pub_seqs: dict[str, dict[int, int]] = field(default_factory=dict)
    messages: int = 0
    wire_bytes: int = 0
    stats_docs: list[dict[str, Any]] = field(default_factory=list)
    model_id: str | None = None
    first_receive_ns: int | None = None
    last_receive_ns: int | None = None
    #: When the last frame of the window was recorded, on the monotonic clock (``time.monotonic_ns``;
    #: ``record_message`` runs as a message is received): what ``summarize_received`` measures the
    #: silence at the window's end against, which a step of the wall clock does not move.
    last_receive_mono_ns: int | None = None
    #: Frames up to this number began before the measuring window (their first mask arrived before
    #: it opened): the rest of their masks are not counted as frames of the window.
    skip_through: int | None = None
    #: The highest frame number seen in any mask message, counted or not.
    last_seq: int | None = None
    #: Per mask topic, the ``pub_seq`` of frame ``skip_through``'s message: what the node had sent
    #: on the topic before the window (``stats.node_accounting``).
    anchor_pub_seqs: dict[str, int] = field(default_factory=dict)
    #: The ``capture_ns`` of frame ``skip_through`` (the one that opened the window): where the
    #: window starts on the capture clock (``window_end_seq``).
    anchor_capture_ns: int | None = None
    #: Set once the window has closed: frames of the window that arrive after (while the node
    #: stops) count as received for the loss accounting, not for the rates or latencies.
    closed: bool = False
    late_seqs: set[int] = field(default_factory=set)
    late_pub_seqs: dict[str, dict[int, int]] = field(default_factory=dict)
    #: The ``capture_ns`` of those late frames: they say where the window ends on the capture clock.
    late_capture_ns: dict[int, int] = field(default_factory=dict)

    def window_after(self) -> Received:
        """A fresh record for the window that opens now: the frames seen so far (up to ``last_seq``)
        are left out, and their ``pub_seq`` anchors the node's count of what it sent before."""
        anchors = {t: pubs[self.last_seq] for t, pubs in self.pub_seqs.items() if self.last_seq in pubs}
        opening = self.frames.get(self.last_seq) if self.last_seq is not None else None
        return Received(skip_through=self.last_seq, anchor_pub_seqs=anchors,
                        anchor_capture_ns=None if opening is None else opening["capture_ns"])


def stats_document(msg) -> dict[str, Any] | None:
    """The node's stats document when ``msg`` is one (``<namespace>/stats``), else None."""
    if msg.kind == contracts.KIND_JSON and msg.topic.endswith("/" + contracts.STATS_TOPIC) and isinstance(msg.data, dict):
        return msg.data
    return None


def record_message(rx: Received, msg) -> None:
    rx.messages += 1
    rx.wire_bytes += msg.wire_bytes
    if msg.kind == contracts.KIND_JSON:
        if (doc := stats_document(msg)) is not None:
            rx.stats_docs.append({"receive_ns": msg.receive_ns, "doc": doc})
        return
    seq = msg.seq
    if rx.closed:
        if rx.skip_through is None or seq > rx.skip_through:
            rx.late_seqs.add(seq)
            capture_ns = msg.header.get("capture_ns")
            if isinstance(capture_ns, int) and not isinstance(capture_ns, bool):
                rx.late_capture_ns.setdefault(seq, capture_ns)
            if msg.pub_seq is not None:
                rx.late_pub_seqs.setdefault(msg.topic, {})[seq] = msg.pub_seq
        return
    rx.last_seq = seq if rx.last_seq is None else max(rx.last_seq, seq)
    if rx.skip_through is not None and seq <= rx.skip_through:
        if seq == rx.skip_through and msg.pub_seq is not None:  # the frame's other topics, arriving late
            rx.anchor_pub_seqs.setdefault(msg.topic, msg.pub_seq)
        return
    if msg.pub_seq is not None:
        rx.pub_seqs.setdefault(msg.topic, {})[seq] = msg.pub_seq
    rx.last_receive_ns = msg.receive_ns
    rx.last_receive_mono_ns = time.monotonic_ns()
    if rx.first_receive_ns is None:
        rx.first_receive_ns = msg.receive_ns
        rx.model_id = msg.header.get("model_id")
    if seq in rx.frames:  # another mask topic of a frame already counted
        return
    h = msg.header
    rx.order.append(seq)
    rx.frames[seq] = {
        "capture_ns": h["capture_ns"],
        "publish_ns": h["publish_ns"],
        "receive_ns": msg.receive_ns,
        "latency_ms": dict(h.get("latency_ms") or {}),
    }


def window_end_seq(rx: Received, window_s: float) -> int | None:
    """The window's last frame: the one captured nearest ``window_s`` after the frame that opened it.

    Frames are numbered at capture, one after another, so the window's frames are those numbered
    after the opening one up to this one: ``window_s`` of capture, the frames the node captured
    while it stopped (after the window) left out, and its count ``window_s`` x the capture rate
    (nearest, not the last at or before, so that the count is not half a frame short on average).
    Its capture time is known from the frames received (in the window and after it, while the node
    stopped); across frames that never arrived it is interpolated between the received ones around
    it, and past the last one received extrapolated at the pace of those before it. Never before
    the last frame received in the window (all of them are the window's).

    None (the span then runs to the node's stop, as ``stats.node_accounting`` says) without the
    opening frame's capture time, when no frame after it was received, or when the capture times
    do not rise with the frame numbers (not one clock)."""
    start, opened_ns = rx.skip_through, rx.anchor_capture_ns
    if start is None or opened_ns is None or window_s <= 0:
        return None
    points = {start: opened_ns}
    points.update({s: f["capture_ns"] for s, f in rx.frames.items() if s > start})
    points.update({s: c for s, c in rx.late_capture_ns.items() if s > start and s not in points})
    seqs = sorted(points)
    caps = [points[s] for s in seqs]
    if len(seqs) < 2 or any(b <= a for a, b in pairwise(caps)):
        return None
    edge = opened_ns + window_s * 1e9
    i = bisect_right(caps, edge) - 1  # the last frame known captured at or before the edge (>= 0)
    s_a, c_a = seqs[i], caps[i]
    if i + 1 < len(seqs):  # between two known frames
        s_b, c_b = seqs[i + 1], caps[i + 1]
    else:  # past the last known one, at the pace from the opening frame to it
        s_b, c_b = s_a + 1, c_a + (c_a - opened_ns) / (s_a - start)
    position = s_a + (edge - c_a) * (s_b - s_a) / (c_b - c_a)
    end = max(int(position + 0.5), s_a)
    if i + 1 < len(seqs):
        end = min(end, s_b)
    return max(end, max(rx.order, default=start))


def summarize_received(rx: Received, *, window_s: float, cpu: dict, subscriber: dict, extra: dict,
                       final: dict | None = None, window_end_ns: int | None = None,
                       window_end_mono_ns: int | None = None) -> dict:
    """Rates, gaps, per-stage and end-to-end latency from what the subscriber received, and the
    frames counted against the node's own final stats ``final`` (``stats.node_accounting``).

    The window's frames are those numbered after the one that opened it up to ``window_end_seq``
    (the frame captured nearest ``window_s`` after it; without capture times that rise, up to the
    node's stop): input FPS = those frames / ``window_s``, output FPS = those received in the window /
    ``window_s``, so frames the node captured while it stopped count in neither.

    With them, the figures balance: frames captured = received (+ received after the window closed) +
    missing, missing = dropped by the
    node + lost after it, the frames the node published after the subscriber's last one included
    (lost after it). Without them (a node that printed no final line), only the frames between the
    first and last received can be counted, and ``warnings`` says so. ``warnings`` also names any
    disagreement between the node's counts and the messages received.

    The silence at the window's end is measured from the last frame received to the window's end:
    ``window_end_mono_ns`` (``time.monotonic_ns()``, what the bench gives: a step of the wall clock
    during a run does not move it), else ``window_end_ns`` against the frames' wall ``receive_ns``."""
    seqs = rx.order
    frames = [rx.frames[s] for s in seqs]
    gaps = sequence_gaps(seqs)
    stage_names: list[str] = []
    for f in frames:
        for name in f["latency_ms"]:
            if name not in stage_names:
                stage_names.append(name)
    stages = {name: summarize_ms([f["latency_ms"][name] for f in frames if name in f["latency_ms"]])
              for name in stage_names}
    e2e = [(f["receive_ns"] - f["capture_ns"]) / 1e6 for f in frames]
    to_publish = [(f["publish_ns"] - f["capture_ns"]) / 1e6 for f in frames]
    stats_first = rx.stats_docs[0]["doc"] if rx.stats_docs else {}
    stats_last = rx.stats_docs[-1]["doc"] if rx.stats_docs else {}
    # Missing frames between the first and last received, split by pub_seq (exact, see
    # transport_losses): lost after the node, the rest never published by it.
    between = transport_losses(seqs, rx.pub_seqs)
    pub_seqs = {t: {**rx.pub_seqs.get(t, {}), **rx.late_pub_seqs.get(t, {})}
                for t in {*rx.pub_seqs, *rx.late_pub_seqs}}
    acct = node_accounting([*seqs, *rx.late_seqs], pub_seqs, start_seq=rx.skip_through,
                           anchor_pub_seqs=rx.anchor_pub_seqs, final=final, end_seq=window_end_seq(rx, window_s))
    warnings: list[str] = []
    sequence: dict[str, Any] = dict(gaps)
    if acct is not None:
        # The node's own counts from the window's first frame to its last (``window_end_seq``: the
        # frame captured nearest window_s after the opening one; see node_accounting).
        captured, dropped, lost = acct["captured"], acct["dropped"], acct["lost_after_node"]
        # frames of the window still on their way when it closed, read while the node stopped: they
        # reached the subscriber (not missing), but are outside the window's rates and latencies
        late = len({s for s in rx.late_seqs if s not in rx.frames and acct["first_seq"] <= s <= acct["last_seq"]})
        # exact, as between received frames: pub_seq anchors the span, the node's own counts close it
        split = "pub_seq"
        sequence.update(missing=acct["missing"], missing_between_received=gaps["missing"],
                        # before the window's first frame received, or after its last (the tail)
                        missing_outside_received=max(0, acct["missing"] - gaps["missing"]),
                        lost_after_last_received=acct["lost_after_last_received"],
                        received_after_window=late)
        if acct["problems"] or (between is not None and between > lost):
            disagree = "; ".join(acct["problems"]) or (
                f"pub_seq gaps between the frames received show {between} lost after the node, more than the "
                f"{lost} the node's final stats leave")
            warnings.append(f"the node's final stats and the messages received disagree ({disagree}); the split of "
                            "the missing frames into dropped by the node and lost after it is uncertain")
        if window_end_mono_ns is not None and rx.last_receive_mono_ns is not None:
            silent_s: float | None = (window_end_mono_ns - rx.last_receive_mono_ns) / 1e9
        elif window_end_ns is not None and rx.last_receive_ns is not None:
            silent_s = (window_end_ns - rx.last_receive_ns) / 1e9
        else:
            silent_s = None
        tail = acct["lost_after_last_received"]
        if tail and (not seqs or (silent_s is not None and silent_s > SILENT_TAIL_S)):
            heard = ("no frame in the window" if not seqs else
                     f"nothing in the last {silent_s:.1f} s of the {window_s:.1f} s window (its last frame: {seqs[-1]})")
            warnings.append(f"the subscriber received {heard}, while the node went on publishing (its final stats: "
                            f"{acct['published']} frames published from the window's start to its stop, "
                            f"{acct['received']} received): {tail} frames published after the last one received "
                            "count as lost after the node, and the output FPS is the subscriber's, not the node's")
    else:
        captured = gaps["last"] - gaps["first"] + 1 if seqs else 0
        late = 0
        if between is not None:
            split = "pub_seq"
            dropped: int | None = gaps["missing"] - between
            lost = between
        else:
            # Without pub_seq, the node's own drop counter over the stats documents received,
            # which misses the drops before its first document (about a second in).
            split = "node stats (approximate)"
            dropped = _counter_delta(stats_first, stats_last, "dropped")
            lost = None if dropped is None else max(0, gaps["missing"] - dropped)
        why = ("the node printed no final stats" if final is None else
               "the frames received carry no pub_seq to set against them" if between is None else
               "they lack the frame counters")
        warnings.append(f"{why}, so frames are counted only between the first and the last one received: frames the "
                        "node captured or published after the last one received are in no figure")
    node_cpu = cpu.get("window_percent")
    sub_cpu = extra.get("subscriber_cpu_s")
    return {
        **extra,
        "model_id": rx.model_id,
        "window_s": round(window_s, 4),
        # Frames of the window that reached the subscriber in it; captured = received + missing +
        # received_after_window (frames of the window read after it closed, while the node stopped).
        # The window's frames: numbered after the opening one, up to the one captured nearest
        # window_s after it (window_end_seq), so input_fps is the capture rate over the window and
        # output_fps the frames received in the window over the same seconds.
        "frames_received": len(seqs),
        "frames_received_after_window": late,
        "frames_captured": captured,
        "input_fps": captured / window_s if window_s > 0 else None,
        "output_fps": len(seqs) / window_s if window_s > 0 else None,
        # Of the missing frames, those the node did not publish (its drop-oldest queue) ...
        "frames_dropped": dropped,
        # ... and those it published that never reached this subscriber (ZeroMQ's per-subscriber
        # send queue, --sndhwm, overflowed).
        "lost_after_node": lost,
        "loss_split": split,
        "accounting": acct,
        "warnings": warnings,
        "sequence": sequence,
        "messages_received": rx.messages,
        "wire_mb": round(rx.wire_bytes / 2**20, 3),
        "stages_ms": stages,
        "capture_to_publish_ms": summarize_ms(to_publish),
        "capture_to_receive_ms": summarize_ms(e2e),
        "capture_to_receive_samples_ms": [round(v, 3) for v in e2e],
        "cpu": cpu,
        # CPU per frame received (ms of one core): the node's process, and the bench's subscriber
        # on the same cores. Beside the engine-only run's CPU per inference they show where a
        # node that is slower than its engine spends the difference.
        "cpu_ms_per_frame": {
            "node": None if node_cpu is None or not seqs else round(node_cpu / 100 * window_s * 1e3 / len(seqs), 3),
            "subscriber": None if sub_cpu is None or not seqs else round(sub_cpu * 1e3 / len(seqs), 3),
        },
        "subscriber": subscriber,
        "node_stats_last": stats_last,
    }


def _counter_delta(first: dict, last: dict, name: str) -> int | None:
    """``last[name] - first[name]`` for a counter of the node's stats document (a key of
    ``contracts.CAMERA_STATS``); None when the last document lacks it (no stats arrived)."""
    if name not in {key.name for key in contracts.CAMERA_STATS}:
        raise KeyError(f"{name!r} is not a key of the node's stats document")
    b = last.get(name)
    if not isinstance(b, int) or isinstance(b, bool):
        return None
    a = first.get(name)
    return b - (a if isinstance(a, int) and not isinstance(a, bool) else 0)
