"""PNG plots of a bench JSON (matplotlib, Agg backend: files only, no display): the engine's latency
CDF and throughput bars, the node's end-to-end latency CDF, stage latencies and FPS bars.
``bench/report.py`` writes them next to the markdown report.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

#: The file of each plot, in the report's folder: every name a bench output may hold.
PLOT_FILES = {
    "engine_cdf": "engine_latency_cdf.png",
    "engine_fps": "engine_fps.png",
    "pipeline_cdf": "pipeline_latency_cdf.png",
    "pipeline_stages": "pipeline_stages.png",
    "pipeline_fps": "pipeline_fps.png",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a car computer or in CI
    import matplotlib.pyplot as plt

    return plt


def _drawable(label: str) -> str:
    """``label`` as matplotlib can draw it: the bytes of a model name that are not UTF-8 (held as
    lone surrogates, which its text layout refuses with a traceback) written ``\\xff``."""
    try:
        return label.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # another lone surrogate (from a JSON "\\ud800" escape)
        return label.encode("utf-8", "backslashreplace").decode("utf-8")


def _cdf(ax, samples_ms: list[float], label: str) -> None:
    x = np.sort(np.asarray(samples_ms, dtype=np.float64))
    y = np.arange(1, x.size + 1) / x.size
    ax.step(x, y, where="post", label=label)


def _log_x_if_wide(ax, samples_ms: list[float]) -> None:
    # Configurations 100x apart would squash the fast ones against the axis on a linear scale.
    positive = [s for s in samples_ms if s > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_xscale("log")


def _latency_cdf(plt, curves: list[tuple[list[float], str]], *, xlabel: str, ylabel: str, title: str,
                 legend_size: int):
    """A figure of latency CDFs (one per ``(samples_ms, label)``), with the p99 line marked."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for samples_ms, label in curves:
        _cdf(ax, samples_ms, label)
    _log_x_if_wide(ax, [s for samples_ms, _ in curves for s in samples_ms])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.axhline(0.99, color="grey", lw=0.5, ls="--")
    ax.legend(fontsize=legend_size)
    return fig


@contextlib.contextmanager
def writing(path: Path):
    """Around the writing of one output file: an OSError that names no file (a full disk, from PIL's
    or Python's write) is raised again naming ``path``, and what was written of it is removed, so no
    truncated PNG or JSON stays to be read later as a whole one."""
    try:
        yield
    except OSError as exc:
        with contextlib.suppress(OSError):
            Path(path).unlink(missing_ok=True)
        if exc.filename is not None or exc.filename2 is not None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc) or type(exc).__name__, str(path)) from exc


def _save(plt, fig, path: Path) -> Path:
    try:
        fig.tight_layout()
        with writing(path):
            fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def plot_engine(results: dict[str, Any], out: Path) -> dict[str, Path]:
    rows = [r for r in results.get("engine", {}).get("results", []) if not r.get("skipped")]
    if not rows:
        return {}
    plt = _pyplot()
    written = {}
    fig = _latency_cdf(plt, [(r["samples_ms"], f"#{i} {_drawable(r['label'])}") for i, r in enumerate(rows, start=1)],
                       xlabel="latency per infer call (ms)", ylabel="fraction of calls <= x",
                       title="Engine latency CDF", legend_size=7)
    written["engine_cdf"] = _save(plt, fig, out / PLOT_FILES["engine_cdf"])

    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.5))
    labels = [f"#{i} {_drawable(r['label'])}" for i, r in enumerate(rows, start=1)]
    ax.barh(labels, [r["throughput_ips"] or 0 for r in rows])  # None: no time measured
    ax.invert_yaxis()
    ax.set_xlabel("images / s")
    ax.set_title("Engine throughput")
    ax.tick_params(axis="y", labelsize=7)
    written["engine_fps"] = _save(plt, fig, out / PLOT_FILES["engine_fps"])
    return written


def plot_pipeline(results: dict[str, Any], out: Path) -> dict[str, Path]:
    p = results.get("pipeline")
    if not p:
        return {}
    plt = _pyplot()
    written = {}
    base = results.get("baseline")
    if p.get("capture_to_receive_samples_ms"):
        curves = [(p["capture_to_receive_samples_ms"], "node: capture -> receive")]
        if base and base.get("samples_ms"):
            curves.append((base["samples_ms"], "serial baseline: capture -> publish"))
        fig = _latency_cdf(plt, curves, xlabel="latency (ms)", ylabel="fraction of frames <= x",
                           title="End-to-end latency CDF", legend_size=8)
        written["pipeline_cdf"] = _save(plt, fig, out / PLOT_FILES["pipeline_cdf"])
    stages = {k: v for k, v in (p.get("stages_ms") or {}).items() if v.get("count")}
    if stages:
        fig, ax = plt.subplots(figsize=(7, 4))
        names = list(stages)
        x = np.arange(len(names))
        for j, pct in enumerate(("p50", "p90", "p99")):
            ax.bar(x + (j - 1) * 0.27, [stages[n][pct] or 0 for n in names], width=0.27, label=pct)
        ax.set_xticks(x, names, rotation=20, fontsize=8)
        ax.set_ylabel("ms")
        ax.set_title("Stage latency (from message headers)")
        ax.legend(fontsize=8)
        written["pipeline_stages"] = _save(plt, fig, out / PLOT_FILES["pipeline_stages"])
    bars = {"node input": p.get("input_fps"), "node output": p.get("output_fps")}
    if base:
        bars["serial baseline"] = base.get("fps")
    engine_fps = results.get("ratios", {}).get("engine_only_fps")
    if engine_fps:
        bars["engine only"] = engine_fps
    bars = {k: v for k, v in bars.items() if v is not None}
    if bars:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar(list(bars), list(bars.values()))
        ax.set_ylabel("frames / s")
        ax.set_title("Pipeline FPS")
        written["pipeline_fps"] = _save(plt, fig, out / PLOT_FILES["pipeline_fps"])
    return written
