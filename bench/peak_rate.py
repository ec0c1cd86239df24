"""``perception bench pipeline --peak-rate``: the highest source rate the node holds.

The node runs several times on the paced synthetic camera (queue ``latest``), each for
``duration_s``; a rate is held when at most ``PEAK_MAX_DROP`` of the captured frames were dropped or
missing at the subscriber. The first trial runs at ``PEAK_START_FPS``; the output rate it reaches
brackets a bisection of ``peak_steps`` trials. This is how Isaac ROS reports node throughput.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from perception.bench.node import measure_node

if TYPE_CHECKING:
    from perception.bench.pipeline import PipelineBenchConfig

#: --peak-rate: the largest share of captured frames that may be dropped or lost at a held rate.
PEAK_MAX_DROP = 0.01
#: --peak-rate: the first trial's source rate: the synthetic camera's maximum, above what a CPU node reaches.
PEAK_START_FPS = 240.0


def _held(trial: dict[str, Any]) -> bool:
    """Whether a trial's node kept up: at most PEAK_MAX_DROP of the captured frames dropped by the
    node or missing at the subscriber."""
    captured = trial.get("frames_captured") or 0
    lost = max(trial.get("frames_dropped") or 0, (trial.get("sequence") or {}).get("missing") or 0)
    return captured > 0 and lost <= PEAK_MAX_DROP * captured


def peak_rate_source_error(source: str) -> str | None:
    """Why ``--peak-rate`` cannot run on ``source`` (None for the synthetic camera, which it paces)."""
    from perception.config import cut

    if source.strip().startswith("synthetic"):
        return None
    return (f"--peak-rate paces the synthetic camera, not --source {cut(source, 200)} (a file is read unpaced, a camera "
            "runs at its own rate); use --source synthetic")


def find_peak_rate(cfg: PipelineBenchConfig, model: Path) -> dict[str, Any]:
    """The highest synthetic-camera rate the node holds (see the module docstring); the
    ``peak_rate`` block: ``fps_held`` (None when even the lowest tried rate dropped) and every trial.

    Raises NodeFailed when a node run fails, ConfigError when the source is not synthetic.
    """
    import dataclasses

    from perception.errors import ConfigError

    problem = peak_rate_source_error(cfg.source)
    if problem:
        raise ConfigError(problem)
    trials: list[dict[str, Any]] = []

    def trial(fps: float) -> bool:
        run = measure_node(dataclasses.replace(cfg, fps=round(fps, 2)), model)
        held = _held(run)
        trials.append({"fps_requested": round(fps, 2), "input_fps": run["input_fps"], "output_fps": run["output_fps"],
                       "frames_captured": run["frames_captured"], "frames_dropped": run["frames_dropped"],
                       "lost_after_node": run.get("lost_after_node"), "missing": run["sequence"]["missing"],
                       "held": held,
                       "cpu_percent": (run.get("cpu") or {}).get("mean_percent")})
        return held

    if trial(PEAK_START_FPS):
        return {"fps_held": trials[0]["input_fps"], "max_drop": PEAK_MAX_DROP, "trials": trials,
                "note": f"held the fastest rate tried ({PEAK_START_FPS:g} FPS requested); the source is the limit"}
    ceiling = trials[0]["output_fps"] or 1.0  # what the node delivers when saturated
    lo, hi = 0.0, ceiling * 1.1
    if trial(ceiling * 0.9):
        lo = ceiling * 0.9
    else:
        hi = ceiling * 0.9
        lo = ceiling * 0.5 if trial(ceiling * 0.5) else 0.0
    for _ in range(max(0, cfg.peak_steps - 2)):
        mid = (lo + hi) / 2
        if mid <= 0.1:
            break
        if trial(mid):
            lo = mid
        else:
            hi = mid
    dropping = [t["fps_requested"] for t in trials if not t["held"]]
    return {"fps_held": round(lo, 2) if lo > 0 else None, "lowest_dropping_fps": min(dropping),
            "max_drop": PEAK_MAX_DROP, "trials": trials}

