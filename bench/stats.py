"""Summary statistics for benchmark samples: latency percentiles, rates and sequence gaps.

Percentiles use linear interpolation between closest ranks (numpy's default ``method="linear"``,
Hyndman & Fan type 7): for ``n`` sorted samples ``x[0..n-1]`` and a percentage ``p`` the position is
``h = (n - 1) * p / 100`` and the value ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``.
So p50 of 1..10 is 5.5 and p99 of 1..10 is 9.91. With fewer than about 100 samples p99 lies
between the two largest samples; ``count`` is reported next to every percentile so a reader can
tell how many samples stand behind it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from itertools import pairwise

import numpy as np

from perception.stats import PERCENTILES, latency_percentiles


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct``-th percentile of ``values`` with linear interpolation (see module docstring).

    Raises ValueError on an empty sequence or a percentage outside 0..100.
    """
    if len(values) == 0:
        raise ValueError("percentile of no samples")
    if not 0.0 <= pct <= 100.0:
        raise ValueError(f"percentile {pct} is outside 0..100")
    return float(np.percentile(np.asarray(values, dtype=np.float64), pct, method="linear"))


def summarize_ms(values_ms: Iterable[float]) -> dict[str, float | int | None]:
    """count, mean, std, min, p50, p90, p99 and max of latency samples in milliseconds.

    An empty input gives ``count == 0`` and None for every statistic (a stage that never ran is
    reported as absent, not as zero).
    """
    arr = np.asarray(list(values_ms), dtype=np.float64)
    keys = ["mean", "std", "min", *(f"p{p}" for p in PERCENTILES), "max"]
    if arr.size == 0:
        return {"count": 0, **{k: None for k in keys}}
    out: dict[str, float | int | None] = {
        "count": int(arr.size),
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "min": float(arr.min()),
    }
    out.update(latency_percentiles(arr))
    out["max"] = float(arr.max())
    return out


def sequence_gaps(seqs: Sequence[int]) -> dict[str, int]:
    """Missing, repeated and out-of-order sequence numbers in the order they were received.

    ``missing``, ``gaps`` and ``max_gap`` as ``contracts.SEQUENCE_FIGURES`` defines them: numbers
    absent between the first and the last received (a subscriber that joins late does not count the
    frames before its first message), the places where at least one number was skipped, and the
    longest run of missing numbers.
    """
    if len(seqs) == 0:
        return {"received": 0, "first": -1, "last": -1, "missing": 0, "gaps": 0, "max_gap": 0,
                "duplicates": 0, "out_of_order": 0}
    arr = np.asarray(seqs, dtype=np.int64)
    steps = np.diff(arr)
    skipped = steps[steps > 1] - 1
    unique = np.unique(arr)
    expected = int(unique[-1] - unique[0] + 1)
    return {
        "received": int(arr.size),
        "first": int(arr[0]),
        "last": int(arr[-1]),
        "missing": expected - int(unique.size),
        "gaps": int(skipped.size),
        "max_gap": int(skipped.max()) if skipped.size else 0,
        "duplicates": int(arr.size - unique.size),
        "out_of_order": int((steps < 0).sum()),
    }


def transport_losses(seqs: Iterable[int], pub_seqs: dict[str, dict[int, int]]) -> int | None:
    """Of the frames missing at a subscriber (``sequence_gaps``' ``missing``: numbers absent between
    the first and last received, on every topic), how many the node published: lost after it, in
    the transport. The rest the node never published (its drop-oldest queue, a failed stage).

    ``seqs``: the frame numbers received (any mask topic); ``pub_seqs``: per mask topic, each
    received frame number -> its message's ``pub_seq`` (the publisher's per-topic message count).
    This is the README's loss-accounting rule per frame: between two messages of one topic,
    ``pub_seq`` counts the messages the node sent on it. The node sends every frame it publishes
    on every subscribed mask topic, so a run of missing frames whose two ends one topic received
    is settled by that topic; a run no topic saw both ends of (each end lost on the other topics)
    by a topic's messages around it: what it sent in between, less the frames that arrived on any
    topic and the runs settled already. Exact, unlike the node's 1 Hz drop counter, whose first
    document comes a second in (the drops before it read as transport losses). None without
    ``pub_seq`` (wire version 1).
    """
    received = sorted(set(seqs))
    topics = [(sorted(pubs), pubs) for pubs in pub_seqs.values() if pubs]
    if not topics:
        return None
    settled: dict[int, int] = {}  # a run's first missing number -> frames of it the node published
    unsettled: list[tuple[int, int]] = []  # (last received before, first received after)
    for before, after in pairwise(received):
        if after - before < 2:
            continue
        pair = next((pubs for _, pubs in topics if before in pubs and after in pubs), None)
        if pair is None:
            unsettled.append((before, after))
        else:
            settled[before + 1] = min(max(pair[after] - pair[before] - 1, 0), after - before - 1)
    for before, after in unsettled:
        if before + 1 in settled:  # settled with an earlier run, by the same topic's messages
            continue
        around = []
        for keys, pubs in topics:
            i = bisect_right(keys, before) - 1  # this topic's last message at or before the run
            j = bisect_left(keys, after)  # and its first at or after it
            if i >= 0 and j < len(keys):
                around.append((keys[j] - keys[i], keys[i], keys[j], pubs))
        if not around:
            continue  # no topic spans the run: no pub_seq says it was sent, so it counts as the node's
        _, lo, hi, pubs = min(around, key=lambda a: a[0])
        arrived = bisect_left(received, hi) - bisect_right(received, lo)
        inside = [(b, a) for b, a in unsettled if lo <= b and a <= hi and b + 1 not in settled]
        known = sum(n for first, n in settled.items() if lo < first < hi)
        size = sum(a - b - 1 for b, a in inside)
        lost = min(max(pubs[hi] - pubs[lo] - 1 - arrived - known, 0), size)
        for b, a in inside:  # the runs share the count: each takes what is left, up to its size
            settled[b + 1] = min(lost, a - b - 1)
            lost -= settled[b + 1]
    return sum(settled.values())


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is absent or the denominator is zero."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return float(numerator) / float(denominator)


#: The node's final-stats counters ``node_accounting`` reads (``contracts.CAMERA_STATS``).
_FINAL_COUNTERS = ("frames_in", "published", "source_corrupt", "in_flight_discarded", "unheard")


def node_accounting(received: Iterable[int], pub_seqs: dict[str, dict[int, int]], *, start_seq: int | None,
                    anchor_pub_seqs: dict[str, int], final: dict | None, end_seq: int | None = None) -> dict | None:
    """The measuring span's frames counted against the node's own final stats, the tail included.

    The span is the frames numbered after ``start_seq`` (the last frame seen before the window
    opened) up to ``end_seq`` (the window's last frame, ``received.window_end_seq``), or without it
    (or past the node's last frame) up to the last one the node read before it stopped: frames the
    node captured while it stopped, after the window, are not the window's. ``received``: the frame numbers
    the subscriber got in the span (in the window and while the node stopped); ``pub_seqs`` per
    mask topic, frame number -> ``pub_seq`` of those messages; ``anchor_pub_seqs``: per topic, the
    ``pub_seq`` of frame ``start_seq``'s message (the node's count of what it sent on the topic
    before the span); ``final``: the node's final stats line (one camera's).

    Frames are numbered at capture from 0 (``seq``; an unreadable frame gets none), so the node
    read ``frames_in - source_corrupt`` numbered frames in all; a published frame goes on every
    subscribed mask topic (``pub_seq`` counts them, from 0), so ``published - unheard`` frames went
    on the anchor's topic. Of the span's frames the node: captured ``captured`` (less the
    ``in_flight`` ones its stop cut off, which its own balance counts apart), published
    ``published``, never published the rest (``dropped``: its queue, a failed stage). Of those it
    published, ``lost_after_node`` never reached the subscriber, ``lost_after_last_received`` of them
    after the last frame it received (the tail a count between received frames cannot see).
    ``problems``: where the node's counts and the messages received disagree beyond that design
    (more received than published, a ``pub_seq`` past the node's count), in words.

    None when the span cannot be settled against the node: no final stats (a node that printed
    none), no ``start_seq``, or no anchor ``pub_seq`` (wire version 1).
    """
    if final is None or start_seq is None:
        return None
    counts = {k: final.get(k, 0 if k in ("source_corrupt", "in_flight_discarded", "unheard") else None)
              for k in _FINAL_COUNTERS}
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts.values()):
        return None
    topics = [t for t in anchor_pub_seqs if isinstance(anchor_pub_seqs[t], int)]
    if not topics:
        return None
    read = counts["frames_in"] - counts["source_corrupt"]  # numbered frames: seq 0 .. read - 1
    sent_on_topic = counts["published"] - counts["unheard"]  # frames whose masks went to the socket
    last_seq = read - 1 if end_seq is None else min(end_seq, read - 1)  # the span's last frame
    got = sorted({s for s in received if start_seq < s <= last_seq})
    # The topic whose last received message is latest settles the tail (prefer one the span has).
    def last_on(topic: str) -> tuple[int, int] | None:
        inside = [(s, p) for s, p in (pub_seqs.get(topic) or {}).items() if start_seq < s <= last_seq]
        return max(inside) if inside else None
    topic = max(topics, key=lambda t: (last_on(t) or (-1, -1))[0])
    before = anchor_pub_seqs[topic] + 1  # messages on the topic up to and with frame start_seq
    span = last_seq - start_seq
    # the frames its stop cut off are its last ones read: in the span only where it reaches them
    tail_start = read - counts["in_flight_discarded"]  # its first frame in flight at the stop
    in_flight = min(counts["in_flight_discarded"], max(span, 0), max(last_seq - tail_start + 1, 0))
    captured = span - in_flight
    # messages on the topic up to and with the span's last frame: all the node sent, for a span to its
    # stop; else the pub_seq of the topic's last message at or before it, and of the frames between it
    # and the next message (or the node's stop) the share up to it
    sent_in_span = sent_on_topic
    if last_seq < read - 1:
        topic_pubs = {s: p for s, p in (pub_seqs.get(topic) or {}).items() if start_seq < s < read}
        lo = max(((s, p) for s, p in topic_pubs.items() if s <= last_seq), default=(start_seq, before - 1))
        # past the last message: the node's stop, before the frames in flight there (never sent)
        hi = min(((s, p) for s, p in topic_pubs.items() if s > last_seq),
                 default=(max(tail_start, last_seq + 1), sent_on_topic))
        between = hi[0] - lo[0] - 1  # frames strictly between the two
        sent_between = max(hi[1] - lo[1] - 1, 0)  # of which the node sent
        share = round(sent_between * (last_seq - lo[0]) / between) if between > 0 else 0
        sent_in_span = lo[1] + 1 + min(share, last_seq - lo[0])
    published = sent_in_span - before
    problems: list[str] = []
    if published < 0 or published > captured:
        problems.append(f"the node's final stats count {sent_on_topic} frames sent in all, which leaves {published} for "
                        f"the {captured} it captured in the span after the {before} it had sent before it")
    if len(got) > max(published, 0):
        problems.append(f"the subscriber received {len(got)} frames of the span, more than the {max(published, 0)} "
                        "the node's final stats say it published")
    heard = [(s, p) for s, p in (pub_seqs.get(topic) or {}).items() if start_seq < s < read]
    if heard and max(heard)[1] + 1 > sent_on_topic:
        problems.append(f"a message of frame {max(heard)[0]} carries pub_seq {max(heard)[1]}, past the "
                        f"{sent_on_topic} frames the node's final stats say it sent")
    last = last_on(topic)
    after_last = 0
    if last is not None:
        last_rx, last_pub = last
        later = sum(1 for s in got if s > last_rx)  # frames after it that arrived on other topics only
        after_last = max(0, sent_in_span - (last_pub + 1) - later)
    elif got:
        after_last = 0
    else:
        after_last = max(published, 0)
    published = min(max(published, 0), captured)
    lost = max(published - len(got), 0)
    return {
        "first_seq": start_seq + 1,
        "last_seq": last_seq,
        "captured": captured,
        "in_flight_at_stop": in_flight,
        "published": published,
        "dropped": captured - published,
        "received": len(got),
        "lost_after_node": lost,
        "lost_after_last_received": min(after_last, lost),
        "missing": captured - len(got),
        "topic": topic,
        "problems": problems,
    }


#: Fewer frames or timed calls than this: the run's FPS, percentiles and ratios are not results.
MIN_SAMPLES = 10
#: The fewest samples a percentile is shown from (below: ``-``); the JSON keeps it, with its ``count``.
PERCENTILE_MIN_SAMPLES = {"p50": 1, "p90": 10, "p99": 100}


def few_samples(count: int | None, what: str, unit: str, flags: str = "--duration") -> str | None:
    """The warning for a figure made of fewer than ``MIN_SAMPLES`` samples, else None; ``flags``:
    those of the command that made it that measure longer."""
    if count is None or count >= MIN_SAMPLES:
        return None
    if count == 1:
        unit = unit.replace("calls", "call").replace("frames", "frame")
    return (f"{what}: only {count} {unit} measured (fewer than {MIN_SAMPLES}), so its FPS, percentiles and ratios "
            f"are not reliable; measure longer ({flags})")
