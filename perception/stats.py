"""The node's running figures: rolling per-stage latency percentiles and interval rates.

``Pipeline.stats()`` (``perception/pipeline.py``) assembles the stats document from these plus the
counters of the source, the frame queue and the publisher, and publishes it on
``<namespace>/stats`` every ``stats_interval_s`` (``perception run`` prints the final one as JSON).

    latency = LatencyWindow()
    latency.add("infer", 4.2)
    latency.percentiles()        # {"infer": {"p50": 4.2, "p90": 4.2, "p99": 4.2}}

Both classes have a single writer (the publish thread) and allocate nothing per frame.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from perception.stats_schema import PERCENTILES

#: Per-frame stages the node times itself; the publisher adds ``encode`` and ``publish``.
#: ``batch``: with several cameras, the wait for the other cameras' frames (``perception/batching.py``).
STAGES = ("capture", "queue", "preprocess", "batch", "infer", "postprocess", "publish", "total")
#: Frames kept for the rolling percentiles.
LATENCY_WINDOW = 512


def latency_percentiles(values_ms, *, nan_aware: bool = False) -> dict[str, float]:
    """``{"p50", "p90", "p99"}`` of ``values_ms`` with numpy's linear interpolation (Hyndman & Fan
    type 7), the one definition behind every latency summary; ``nan_aware`` skips NaN slots (the
    rolling window's unfilled ones). Raises ValueError on no values."""
    values = np.asarray(values_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("percentiles of no samples")
    pct = (np.nanpercentile if nan_aware else np.percentile)(values, PERCENTILES)
    return {f"p{p}": float(v) for p, v in zip(PERCENTILES, pct, strict=True)}


class LatencyWindow:
    """Rolling per-stage latencies (ms) over the last ``size`` frames; single writer."""

    def __init__(self, stages: tuple[str, ...] = STAGES, size: int = LATENCY_WINDOW) -> None:
        self.stages = stages
        self._index = {s: i for i, s in enumerate(stages)}
        self._values = np.full((len(stages), size), np.nan)
        self._pos = np.zeros(len(stages), dtype=np.int64)

    def add(self, stage: str, value_ms: float) -> None:
        i = self._index[stage]
        self._values[i, self._pos[i] % self._values.shape[1]] = value_ms
        self._pos[i] += 1

    def percentiles(self) -> dict[str, dict[str, float]]:
        """``{stage: {"p50", "p90", "p99"}}`` for stages with samples."""
        out = {}
        for stage, i in self._index.items():
            if self._pos[i] == 0:
                continue
            out[stage] = {k: round(v, 3) for k, v in latency_percentiles(self._values[i], nan_aware=True).items()}
        return out


class RateMeter:
    """Input and output frame rates over the interval since the previous stats document, or over
    the whole run for the final one."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """Start the run's clock now (after the engine warm-up, so it does not count)."""
        self.start_mono = time.monotonic()
        self._last = (self.start_mono, 0, 0)

    def due(self, interval_s: float) -> bool:
        """True when ``interval_s`` has passed since the previous interval ended."""
        return time.monotonic() - self._last[0] >= interval_s

    def rates(self, frames_in: int, frames_out: int, *, final: bool = False) -> dict[str, float]:
        """``uptime_s``, ``input_fps``, ``output_fps``; a non-final call starts the next interval."""
        now = time.monotonic()
        if final:
            since, in0, out0 = self.start_mono, 0, 0
        else:
            since, in0, out0 = self._last
            self._last = (now, frames_in, frames_out)
        span = max(now - since, 1e-6)
        return {
            "uptime_s": round(now - self.start_mono, 3),
            "input_fps": round((frames_in - in0) / span, 2),
            "output_fps": round((frames_out - out0) / span, 2),
        }


class FractionMeter:
    """A per-frame share (the unknown pixels of each frame): mean and max over the interval since
    the previous stats document, or over the whole run for the final one; single writer."""

    def __init__(self) -> None:
        self._interval = [0.0, 0.0, 0]  # sum, max, frames
        self._run = [0.0, 0.0, 0]

    def add(self, fraction: float) -> None:
        for acc in (self._interval, self._run):
            acc[0] += fraction
            acc[1] = max(acc[1], fraction)
            acc[2] += 1

    def summary(self, *, final: bool = False) -> dict[str, float | int | None]:
        """``fraction`` (mean), ``fraction_max`` and ``frames``; a non-final call starts the next
        interval. The fractions are None over no frames."""
        total, peak, frames = self._run if final else self._interval
        if not final:
            self._interval = [0.0, 0.0, 0]
        return {
            "fraction": round(total / frames, 5) if frames else None,
            "fraction_max": round(peak, 5) if frames else None,
            "frames": frames,
        }


class RateLimitedLog:
    """Logs a repeated line at most once per ``interval_s`` (per ``key``) with the count of the
    suppressed ones, so a stream of bad frames or messages, or a stream that keeps dropping out,
    names the problem without flooding the journal. Thread-safe."""

    def __init__(self, logger: logging.Logger, interval_s: float = 5.0) -> None:
        self._log = logger
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, msg: str, *args: Any) -> None:
        self._emit(logging.WARNING, key, msg, args)

    def info(self, key: str, msg: str, *args: Any) -> None:
        self._emit(logging.INFO, key, msg, args)

    def _emit(self, level: int, key: str, msg: str, args: tuple) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -1e9) < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            extra = self._suppressed.pop(key, 0)
            self._last[key] = now
        self._log.log(level, msg + (f" ({extra} more since the last report)" if extra else ""), *args)
