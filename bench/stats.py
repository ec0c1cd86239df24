"""Summary statistics for benchmark samples: latency percentiles, rates and sequence gaps.

Percentiles use linear interpolation between closest ranks (numpy's default ``method="linear"``,
Hyndman & Fan type 7): for ``n`` sorted samples ``x[0..n-1]`` and a percentage ``p`` the position is
``h = (n - 1) * p / 100`` and the value ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``.
So p50 of 1..10 is 5.5 and p99 of 1..10 is 9.91. With fewer than about 100 samples p99 lies
between the two largest samples; ``count`` is reported next to every percentile so a reader can
tell how many samples stand behind it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is absent or the denominator is zero."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return float(numerator) / float(denominator)
