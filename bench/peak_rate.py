"""``perception bench pipeline --peak-rate``: the highest frame rate the node sustains.

The node runs several times on the paced synthetic camera (queue ``latest``), each for
``duration_s``. Each trial is judged on what was measured, not on what was asked for:

- the node *kept up* when at most ``PEAK_MAX_DROP`` of the captured frames were dropped by it or
  missing at the subscriber;
- the source *delivered* the requested rate when its measured input rate reached
  ``SOURCE_DELIVERED`` of it. The synthetic camera renders every frame on the same cores as the
  node: asked for more than it can render there (240 FPS always is), it delivers less, and the
  frames it renders flat out take a core from the node.

A trial whose source delivered is *held* (the node kept up) or *dropped* at its requested rate; a
trial whose source fell short is neither at that rate: it says so (``verdict``), and when the node
kept up it is still a rate the node sustained (its measured input). The answer, ``fps_held``, is
the measured output rate of the best trial in which the node kept up, so it is never above what
the node put out (hunt6c: the search used to report the requested 11.50 FPS of a trial whose input
was 10.99 FPS, while the same bench's main run sustained 20 FPS).

The search: the bench's main run (when given) and a first trial at ``PEAK_START_FPS`` (above what a
CPU node reaches), then up to ``peak_steps`` trials: 0.9 times the first trial's output rate, then
the geometric mean of the highest rate sustained and the lowest rate dropped, until they are within
``CONVERGED``. A trial whose source fell short bounds the search at its request (asking for more
tests nothing more) but is not a rate the node dropped: with the camera rendering flat out beside
it, the node may lose frames at a rate it holds when the camera is paced below its limit (the first
trial's output is such a rate, which is why the search also goes above it). This is how Isaac ROS
reports node throughput.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perception.bench.node import measure_node

if TYPE_CHECKING:
    from perception.bench.pipeline import PipelineBenchConfig

#: --peak-rate: the largest share of captured frames that may be dropped or lost at a held rate.
PEAK_MAX_DROP = 0.01
#: --peak-rate: the first trial's source rate: the synthetic camera's maximum, above what a CPU node reaches.
PEAK_START_FPS = 240.0
#: A source delivered a trial's requested rate when it measured at least this share of it.
SOURCE_DELIVERED = 0.95
#: The search stops when the lowest rate dropped is within this factor of the highest rate held.
CONVERGED = 1.05
#: The synthetic camera's rate when the bench's main run gave no --fps.
SYNTHETIC_DEFAULT_FPS = 30.0


def _kept_up(run: dict[str, Any]) -> bool:
    """Whether the node kept up with what its source gave it: at most PEAK_MAX_DROP of the
    captured frames dropped by the node or missing at the subscriber."""
    captured = run.get("frames_captured") or 0
    lost = max(run.get("frames_dropped") or 0, (run.get("sequence") or {}).get("missing") or 0)
    return captured > 0 and lost <= PEAK_MAX_DROP * captured


def _delivered(requested: float, input_fps: float | None) -> bool:
    """Whether the source delivered the requested rate (``SOURCE_DELIVERED`` of it, measured)."""
    return input_fps is not None and input_fps >= SOURCE_DELIVERED * requested


def judge_trial(run: dict[str, Any], requested: float, *, run_label: str = "trial") -> dict[str, Any]:
    """One trial's row: what was asked, what was measured, and its verdict. ``held``: True or
    False at the requested rate, None when the source did not deliver it (``source_delivered``
    False; then ``kept_up`` says whether the node kept up with what it did get)."""
    kept_up, delivered = _kept_up(run), _delivered(requested, run.get("input_fps"))
    in_fps, out_fps = run.get("input_fps"), run.get("output_fps")
    missing = (run.get("sequence") or {}).get("missing")
    captured = run.get("frames_captured") or 0
    lost = max(run.get("frames_dropped") or 0, missing or 0)
    if delivered:
        verdict = (f"held {requested:.2f} FPS" if kept_up
                   else f"dropped at {requested:.2f} FPS ({lost} of {captured} frames)")
    else:
        got = "-" if in_fps is None else f"{in_fps:.2f}"
        verdict = (f"the source delivered {got} of the {requested:.2f} FPS requested; the node "
                   + ("kept up with it" if kept_up else f"dropped {lost} of its {captured} frames"))
    return {"run": run_label, "fps_requested": round(requested, 2), "input_fps": in_fps, "output_fps": out_fps,
            "frames_captured": run.get("frames_captured"), "frames_dropped": run.get("frames_dropped"),
            "lost_after_node": run.get("lost_after_node"), "missing": missing,
            "source_delivered": delivered, "kept_up": kept_up, "held": kept_up if delivered else None,
            "verdict": verdict, "cpu_percent": (run.get("cpu") or {}).get("mean_percent")}


def peak_rate_source_error(source: str) -> str | None:
    """Why ``--peak-rate`` cannot run on ``source`` (None for the synthetic camera, which it paces)."""
    from perception.config import cut

    if source.strip().startswith("synthetic"):
        return None
    return (f"--peak-rate paces the synthetic camera, not --source {cut(source, 200)} (a file is read unpaced, a camera "
            "runs at its own rate); use --source synthetic")


def find_peak_rate(cfg: PipelineBenchConfig, model: Path, main_run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The highest rate the node sustains (see the module docstring); the ``peak_rate`` block:
    ``fps_held`` (the measured output rate of the best trial the node kept up in; None when it
    kept up in none), ``sustained`` (that trial's requested, input and output rates),
    ``lowest_dropping_fps`` (the lowest requested rate at which more frames were dropped, whether
    or not the camera delivered it: what the terminal calls "requested dropped more"; None when
    none), ``source_limited`` (a sentence when the figure is the camera's limit rather
    than the node's) and every trial. ``main_run``: the bench's own run of the node on the same
    camera (``measure_node``'s block), counted as the first trial.

    Raises NodeFailed when a node run fails, ConfigError when the source is not synthetic.
    """
    import dataclasses

    from perception.errors import ConfigError

    problem = peak_rate_source_error(cfg.source)
    if problem:
        raise ConfigError(problem)
    trials: list[dict[str, Any]] = []
    # The highest rate sustained, and the lowest rate dropped or not delivered (no trial asks for more
    # than the camera's maximum, PEAK_START_FPS).
    lo, hi = 0.0, PEAK_START_FPS

    def judge(row: dict[str, Any]) -> None:
        nonlocal lo, hi
        trials.append(row)
        requested = row["fps_requested"]
        if row["kept_up"]:
            lo = max(lo, requested if row["source_delivered"] else (row["input_fps"] or 0.0))
        if not (row["source_delivered"] and row["kept_up"]):  # dropped, or the camera gave less
            hi = min(hi, requested)

    def trial(fps: float) -> None:
        judge(judge_trial(measure_node(dataclasses.replace(cfg, fps=round(fps, 2)), model), round(fps, 2)))

    if main_run is not None:
        judge(judge_trial(main_run, cfg.fps or SYNTHETIC_DEFAULT_FPS, run_label="main run"))
    trial(PEAK_START_FPS)
    saturated = trials[-1]["output_fps"] or 1.0  # what the node put out with the camera flat out
    for _ in range(cfg.peak_steps):
        if lo > 0 and hi / lo <= CONVERGED:
            break
        if lo > 0:
            fps = math.sqrt(lo * hi)
        elif not trials[-1]["kept_up"] and trials[-1]["fps_requested"] == PEAK_START_FPS:
            fps = min(saturated, hi) * 0.9
        else:
            fps = min(hi, saturated) / 2
        if fps <= 0.1:
            break
        trial(fps)
    return peak_summary(trials)


def peak_summary(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``peak_rate`` block from the judged trials (see ``find_peak_rate``)."""
    kept = [t for t in trials if t["kept_up"] and t["output_fps"]]
    best = max(kept, key=lambda t: t["output_fps"]) if kept else None
    # Asked for this, more frames were dropped: said of the request, also where the camera fell short.
    dropping = [t["fps_requested"] for t in trials if not t["kept_up"]]
    short = [t for t in trials if not t["source_delivered"]]
    result: dict[str, Any] = {
        "fps_held": round(best["output_fps"], 2) if best else None,
        "sustained": None if best is None else {
            "fps_requested": best["fps_requested"], "input_fps": round(best["input_fps"], 2),
            "output_fps": round(best["output_fps"], 2), "missing": best["missing"], "run": best["run"],
            "trial": next(i for i, t in enumerate(trials, start=1) if t is best)},
        "lowest_dropping_fps": min(dropping) if dropping else None,
        "max_drop": PEAK_MAX_DROP,
        "source_delivered": SOURCE_DELIVERED,
        "source_limited": None,
        "trials": trials,
    }
    if best is not None and not best["source_delivered"]:
        fastest = max((t["input_fps"] or 0.0) for t in short)
        result["source_limited"] = (
            f"the synthetic camera delivered at most {fastest:.2f} FPS here (asked for up to "
            f"{max(t['fps_requested'] for t in short):.2f}); the node kept up with {best['input_fps']:.2f} FPS of it, "
            "so its own limit may be higher (a smaller --width/--height renders faster)")
    return result
