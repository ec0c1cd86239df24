"""Markdown tables and PNG plots made from a bench JSON file.

``write_report(results, out_dir)`` writes ``perception.bench.md`` and the plots (``plots.py``) next to it; every figure in
them is read from the JSON, so ``perception bench report out/bench/perception.bench.json`` regenerates the
same report later (or on another machine) without measuring again. Plots use matplotlib's Agg
backend: no display is needed. ``summary_text`` gives the headline figures for the terminal. The
JSON itself (its schema, reading and writing) is ``results.py``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perception.bench.plots import plot_engine, plot_pipeline, writing
from perception.bench.results import REPORT_FILE
from perception.bench.stats import PERCENTILE_MIN_SAMPLES, few_samples


def write_report(results: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``perception.bench.md`` and the PNG plots for ``results`` into ``out_dir``; returns name -> path.
    An OSError names the file it failed on; the files written before it stay."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    written.update(plot_engine(results, out))
    written.update(plot_pipeline(results, out))
    md = render_markdown(results, plots={k: v.name for k, v in written.items()})
    path = out / REPORT_FILE
    with writing(path):
        # A name that is not UTF-8 (``--out b_\xff``, in the command line shown) is written escaped,
        # ``\udcff``, as a terminal shows it: the report stays UTF-8 text, never left empty by an
        # encoding error after the file was opened.
        path.write_text(md, encoding="utf-8", errors="backslashreplace")
    written["markdown"] = path
    return written


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != 0 and abs(value) < 0.1:
            return f"{value:.2g}"  # small sizes and ratios keep two significant digits
        return f"{value:.1f}" if abs(value) >= 1000 else f"{value:.{digits}f}"
    return str(value)


def _inline(text: Any) -> str:
    """``text`` on one line: a name with a line break in it would start a heading or a list of its own."""
    return " ".join(str(text).splitlines()) if text is not None else "-"


def _cell(value: Any) -> str:
    """One table cell: ``|`` escaped (it would end the cell), on one line (a break would end the table)."""
    return _inline(_fmt(value)).replace("|", "\\|")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


#: A configuration whose slowest block median is this many times its fastest was not measured on a
#: steady machine: its ratios to the other rows are not to be trusted.
BLOCK_SPREAD_WARN = 1.3


def _block_range(r: dict[str, Any]) -> str | None:
    """A row's block medians as ``min..max`` ms (with their ratio when they disagree), or None
    (one block, or a JSON written before the figure)."""
    medians = r.get("block_p50_ms") or []
    if len(medians) < 2:
        return None
    low, high = min(medians), max(medians)
    spread = r.get("block_p50_spread")
    return f"{_fmt(low)}..{_fmt(high)}" + (f" (x{spread:.2f})" if spread and spread >= BLOCK_SPREAD_WARN else "")


def _engine_loads(results: dict[str, Any]) -> list[float]:
    """Every 1-minute load average the engine bench read: at the start, around each block, at the end."""
    engine = results.get("engine") or {}
    loads = [(results.get("environment") or {}).get("load_average_1m"), engine.get("load_average_1m_end")]
    for r in engine.get("results") or []:
        loads += [v for pair in r.get("block_load_1m") or [] for v in pair]
    return [v for v in loads if v is not None]


def engine_warnings(results: dict[str, Any]) -> list[str]:
    """Why the engine rows' ratios may not be trusted: a machine busier than its cores (the 1-minute
    load average at the start, around any block or at the end), or a configuration whose block medians
    disagree by ``BLOCK_SPREAD_WARN`` or more. Empty for a steady run."""
    engine = results.get("engine") or {}
    rows = [r for r in engine.get("results") or [] if not r.get("skipped")]
    if not rows:
        return []
    # what the bench said as it ran (--threads above the cores, other processes on the cores: contention.py)
    warnings = [str(w) for w in engine.get("warnings") or []]
    env = results.get("environment") or {}
    cores = env.get("cpu_usable_cores") or env.get("cpu_logical_cores")
    loads = _engine_loads(results)
    # With one row there are no ratios between rows: its figures themselves are what the load touches.
    touched = "the ratios between rows are" if len(rows) > 1 else "its figures are"
    if cores and loads and max(loads) > cores:
        warnings.append(
            f"the machine was busy: its load average (1 min) reached {max(loads):.2f} on {cores} cores "
            f"(from {min(loads):.2f}; this bench's own threads count in it): other work took turns with the timed "
            f"calls, so {touched} not trustworthy; rerun on a quiet machine")
    for i, r in enumerate(engine.get("results") or [], start=1):
        spread = r.get("block_p50_spread")
        if not r.get("skipped") and spread and spread >= BLOCK_SPREAD_WARN:
            medians = r["block_p50_ms"]
            warnings.append(
                f"#{i} {_inline(r['label'])}: its {len(medians)} blocks' medians range {_fmt(min(medians))}.."
                f"{_fmt(max(medians))} ms (x{spread:.2f}): the machine's speed changed during the run, so its "
                f"{'ratios to the other rows are' if len(rows) > 1 else 'figures are'} not trustworthy; rerun on a "
                "quiet machine (or with more --runs)")
        if not r.get("skipped"):
            few = few_samples((r.get("latency_ms") or {}).get("count"), f"#{i} {_inline(r['label'])}", "timed calls",
                              "--duration, --runs")
            if few:
                warnings.append(few)
    return list(dict.fromkeys(warnings))  # a JSON's own warnings and those read from its figures, once


def pct(summary: dict[str, Any] | None, key: str) -> Any:
    """Percentile ``key`` of ``summary`` when it has ``PERCENTILE_MIN_SAMPLES[key]`` samples, else None
    (shown ``-``): a p99 of 5 samples is their largest, not a 99th percentile."""
    summary = summary or {}
    count = summary.get("count")
    if count is not None and count < PERCENTILE_MIN_SAMPLES.get(key, 1):
        return None
    return summary.get(key)


def pipeline_warnings(p: dict[str, Any]) -> list[str]:
    """The pipeline block's warnings, and (for a JSON written before it said so) the node's
    too-few-frames one read from its count, once each."""
    warnings = [str(w) for w in p.get("warnings") or []]
    few = few_samples(p.get("frames_received"), "the node", "frames")
    return list(dict.fromkeys([*warnings, *([few] if few else [])]))


def _partial_line(engine: dict[str, Any]) -> str | None:
    stop = engine.get("interrupted")
    if not stop:
        return None
    done = stop["blocks_done"]
    return (f"partial: interrupted after block {done} of {stop['blocks']}; every configuration's figures are from "
            f"its first {'block' if done == 1 else f'{done} blocks'}")


def render_markdown(results: dict[str, Any], plots: dict[str, str] | None = None) -> str:
    """The Markdown report for ``results``; ``plots`` maps plot names to file names to embed."""
    plots = plots or {}
    lines = [f"# perception bench: {_inline(results.get('kind', '?'))}", ""]
    lines += [f"Run {_inline(results.get('created_utc', '?'))} with `{_inline(results.get('command', ''))}`.", ""]
    if "engine" in results:
        lines += _engine_section(results["engine"], plots, engine_warnings(results))
    if "pipeline" in results:
        lines += _pipeline_section(results, plots)
    if "cameras" in results:
        lines += _cameras_section(results["cameras"])
    engine = results.get("engine") or {}
    during = [v for r in engine.get("results") or [] for pair in r.get("block_load_1m") or [] for v in pair
              if v is not None] + [v for v in [engine.get("load_average_1m_end")] if v is not None]
    lines += _environment_section(results.get("environment", {}), during)
    return "\n".join(lines) + "\n"


def _engine_section(engine: dict[str, Any], plots: dict[str, str], warnings: list[str] | None = None) -> list[str]:
    lines = ["## Engine", ""]
    partial = _partial_line(engine)
    if partial:
        lines += [f"**{partial[0].upper()}{partial[1:]}** (Ctrl-C or a stop signal); the rows are comparable with each "
                  "other, but hold fewer runs than asked.", ""]
    s = engine.get("settings", {})
    lines += [
        f"Warm-up {s.get('warmup')} runs per configuration (not timed); then {s.get('blocks')} round-robin "
        f"blocks of {s.get('runs_per_block') or 'duration ' + _fmt(s.get('block_s')) + ' s'} timed runs "
        f"per configuration, on {s.get('frames_from') or 'synthetic road scenes'}. "
        "Latency is one `Engine.infer` call on a batch; FPS = 1000 / mean latency; "
        "img/s = FPS x batch; ratios are to configuration #1 (x img/s > 1: more images per second; "
        "x p99 < 1: a shorter tail). Agreement: share of pixels whose class id equals ONNX Runtime on the "
        "same frames and the `--model` file itself (FP32 for an FP32 file; `--precision int8` runs its INT8 sibling). "
        "Block p50: the smallest..largest of the configuration's per-block medians (their ratio when "
        f"x{BLOCK_SPREAD_WARN} or more): a wide range means the machine's speed changed while it ran.",
        "",
    ]
    header = ["#", "model", "engine", "provider", "precision", "agree % vs ORT", "input", "threads", "streams", "batch",
              "runs", "p50 ms", "p90 ms", "p99 ms", "max ms", "block p50 ms", "FPS", "img/s", "x img/s #1", "x p99 #1",
              "load +RSS MB",
              "peak RSS MB", "GPU MB", "file MB"]
    rows = []
    skipped = []
    unmeasured = []  # rows whose agreement could not be measured, and why
    # Files of one architecture share a model name: then the short file name tells them apart.
    files_of: dict[str, set[str]] = {}
    for r in engine.get("results", []):
        files_of.setdefault(r.get("model_name", ""), set()).add(r.get("model", ""))
    for i, r in enumerate(engine.get("results", []), start=1):
        if r.get("skipped"):
            skipped.append(f"- #{i} {_inline(r['label'])}: skipped, {_inline(r['skipped'])}")
            continue
        if r.get("agreement_skipped"):
            unmeasured.append(f"- #{i} {_inline(r['label'])}: no agreement, {_inline(r['agreement_skipped'])}")
        lat = r["latency_ms"]
        ratios = r.get("ratio_to_first") or {}
        mem = r.get("memory", {})
        h, w = r["input_hw"]
        rows.append([
            i, f"{r['model_name']} ({r.get('model_tag', '')})" if len(files_of[r["model_name"]]) > 1 else r["model_name"],
            r["engine"], r["provider"], r["precision"],
            None if r.get("agreement") is None else round(100 * r["agreement"], 2), f"{h}x{w}",
            # as requested (the rows of --threads 1,2 differ only here); none: the engine's default
            r.get("threads_requested") or "default", r.get("streams_requested") or 1, r["batch"], lat["count"],
            lat["p50"], pct(lat, "p90"), pct(lat, "p99"), lat["max"], _block_range(r), r["fps"], r["throughput_ips"],
            ratios.get("throughput_ips"), ratios.get("p99_ms"), mem.get("rss_load_delta_mb"), mem.get("rss_peak_mb"), mem.get("gpu_peak_mb"),
            r["model_file_mb"],
        ])
    lines += _table(header, rows) + [""]
    if warnings:
        lines += [f"**Warning:** {w}." for w in warnings] + [""]
    if skipped:
        lines += skipped + [""]
    if unmeasured:
        lines += unmeasured + [""]
    for key, title in (("engine_cdf", "Latency CDF"), ("engine_fps", "FPS")):
        if key in plots:
            lines += [f"![{title}]({plots[key]})", ""]
    return lines


def _pipeline_section(results: dict[str, Any], plots: dict[str, str]) -> list[str]:
    p = results["pipeline"]
    lines = ["## Pipeline", ""]
    lines += [
        f"The node ran {_fmt(p.get('duration_s'))} s on source `{_inline(p.get('source'))}` with model "
        f"`{_inline(p.get('model_id'))}`; a subscriber in the bench process received its messages. "
        "Rates are counted over the measurement window (after the first message)."
        + (f" The node's input ended {_fmt(p['input_ended_s'], 1)} s into the window, which ends there (add "
           "`--loop` for the full window)." if p.get("input_ended_s") is not None else ""),
        "",
    ]
    if p.get("accounting"):
        lines += ["The frames are counted against the node's own final stats, from the one after the frame that "
                  "opened the window to the node's stop: frames captured = frames received + received after the "
                  "window closed + missing, and missing = dropped by the node + lost after it.", ""]
    seq = p.get("sequence", {})
    # pub_seq splits the missing frames exactly; the node's 1 Hz drop counter (no pub_seq) only roughly.
    rough = ("" if p.get("loss_split") == "pub_seq" or p.get("frames_dropped") is None
             else " (approximate: the node's 1 Hz stats)")
    # a paced source the node kept up with set its rate: the figures that read as the node's speed say so
    limited = ", source-limited (see the note below)" if p.get("source_limited") else ""
    late = p.get("frames_received_after_window")
    rows = [
        *([["source rate", requested_rate(p["fps_requested"], p.get("fps_requested_from"), p.get("source"))]]
          if "fps_requested" in p else []),
        ["input FPS (frames captured)", p.get("input_fps")],
        [f"output FPS (frames received){limited}", p.get("output_fps")],
        ["frames captured", p.get("frames_captured")],
        ["frames received", p.get("frames_received", seq.get("received"))],
        *([["frames received after the window closed (on their way when it closed, read while the node stopped; "
            "not missing, outside the rates and latencies)", late]] if late is not None else []),
        *([["messages received (every topic, stats included)", p["messages_received"]]]
          if "messages_received" in p else []),
        ["sequence numbers missing at subscriber", seq.get("missing")],
        [f"  of which dropped by the node (never published){rough}", p.get("frames_dropped")],
        [f"  of which lost after the node (ZeroMQ queue full){rough}", p.get("lost_after_node")],
        ["gaps (places with missing numbers)", seq.get("gaps")],
        ["longest gap", seq.get("max_gap")],
        ["node CPU % (100 = one core), mean", (p.get("cpu") or {}).get("mean_percent")],
        ["node CPU % max (1 s samples)", (p.get("cpu") or {}).get("max_percent")],
        ["node peak RSS MB", (p.get("cpu") or {}).get("rss_peak_mb")],
        ["node CPU % by thread (>= 0.5 %)", ", ".join(f"{t.get('name') or t['tid']} {t['percent']}"
                                                      for t in (p.get("cpu") or {}).get("threads", [])) or None],
    ]
    base = results.get("baseline")
    ratios = results.get("ratios", {})
    pooled = " (over the rounds' sums)" if len(results.get("rounds") or []) > 1 else ""
    if base:
        rows += [
            ["serial baseline FPS", base.get("fps")],
            [f"node FPS / baseline FPS{pooled}", ratios.get("node_over_baseline_fps")],
        ]
    if "engine_only_fps" in ratios:
        rows += [
            ["engine-only FPS (batch 1)", ratios.get("engine_only_fps")],
            [f"node FPS / engine-only FPS{pooled}{limited}", ratios.get("node_over_engine_fps")],
        ]
    cpu = ratios.get("cpu_per_frame")
    if cpu:
        rows += [
            [f"CPU per frame, ms of one core: the node{' (mean over the rounds)' if pooled else ''}", cpu["node_ms"]],
            ["  the bench process (its subscriber decodes every mask it receives)", cpu["subscriber_ms"]],
            ["  engine-only, per inference", cpu["engine_only_ms"]],
            ["  the node beyond its engine (decode, letterbox, masks, sends)", cpu["node_beyond_engine_ms"]],
            ["node / engine-only if CPU per frame were the only limit (engine / (node + subscriber))",
             cpu["cpu_bound_node_over_engine"]],
        ]
    probe = p.get("probe_wait") or {}
    if probe.get("was_probing"):
        rows.append(["--engine auto: first start, the window began after the probe's verdict, s",
                     f"{_fmt(probe.get('waited_s'))} ({probe.get('state')})"])
    rows.append(["subscribed topics", ", ".join(p["topics"]) if isinstance(p.get("topics"), list) else "all"])
    rows.append(["start-up: node launch -> first mask at the subscriber, s", p.get("startup_to_first_mask_s")])
    lines += _table(["figure", "value"], rows) + [""]
    warned = pipeline_warnings(p)
    lines += [f"**Warning:** {_inline(w)}." for w in warned] + ([""] if warned else [])
    if p.get("source_limited"):
        lines += [f"**Source-limited:** {_inline(_source_limited_text(p['source_limited']))}.", ""]
    rounds = results.get("rounds") or []
    if len(rounds) > 1:
        lines += [f"{len(rounds)} rounds, alternating node, serial baseline and engine-only runs (the ratios above "
                  "are over the rounds' sums of FPS; the other figures are round 1's):", ""]
        lines += _table(["round", "engine", "node FPS", "baseline FPS", "engine-only FPS", "node / baseline",
                         "node / engine-only"],
                        [[i, f"{r['engine']}-{r['precision']}", r["node_fps"], r.get("baseline_fps"),
                          r.get("engine_only_fps"), r.get("node_over_baseline_fps"), r.get("node_over_engine_fps")]
                         for i, r in enumerate(rounds, start=1)]) + [""]
    peak = results.get("peak_rate")
    if peak:
        lines += [f"**Peak rate** (synthetic camera, queue latest, kept up = at most {100 * peak['max_drop']:.0f} % "
                  f"of captured frames dropped or missing): **{_fmt(peak.get('fps_held'))} FPS held**, the node's "
                  "measured output in its best trial that kept up.", ""]
        if peak.get("source_limited"):
            lines += [f"The camera was the limit: {peak['source_limited']}.", ""]
        best = (peak.get("sustained") or {}).get("trial")
        lines += _table(["trial", "run", "requested FPS", "input FPS", "output FPS", "captured", "missing",
                         "dropped by the node", "lost after the node", "verdict", "CPU %"],
                        [[f"{i}{' (best)' if i == best else ''}", t.get("run", "trial"), t["fps_requested"],
                          t["input_fps"], t["output_fps"], t["frames_captured"], t["missing"], t["frames_dropped"],
                          t.get("lost_after_node"), t.get("verdict") or ("held" if t["held"] else "dropped"),
                          t["cpu_percent"]]
                         for i, t in enumerate(peak["trials"], start=1)]) + [""]
    lines += ["Latency per stage (from message headers) and end to end:", ""]
    stage_rows = []
    for name, s in (p.get("stages_ms") or {}).items():
        stage_rows.append([name, s["count"], s["mean"], s["p50"], pct(s, "p90"), pct(s, "p99"), s["max"]])
    for key, label in (("capture_to_publish_ms", "capture -> publish (node)"),
                       ("capture_to_receive_ms", "capture -> receive (end to end)")):
        s = p.get(key)
        if s:
            stage_rows.append([f"**{label}**", s["count"], s["mean"], s["p50"], pct(s, "p90"), pct(s, "p99"), s["max"]])
    if base:
        s = base["latency_ms"]
        stage_rows.append(["serial baseline: capture -> publish", s["count"], s["mean"], s["p50"], pct(s, "p90"),
                           pct(s, "p99"), s["max"]])
    lines += _table(["stage", "count", "mean ms", "p50 ms", "p90 ms", "p99 ms", "max ms"], stage_rows) + [""]
    lines += [f"A percentile is shown from enough samples only (p90 from {PERCENTILE_MIN_SAMPLES['p90']}, p99 from "
              f"{PERCENTILE_MIN_SAMPLES['p99']}; else `-`, and the max stands for the tail); the JSON keeps them "
              "with their count.", ""]
    for key, title in (("pipeline_cdf", "End-to-end latency CDF"), ("pipeline_stages", "Stage latency"),
                       ("pipeline_fps", "FPS")):
        if key in plots:
            lines += [f"![{title}]({plots[key]})", ""]
    return lines


def _cameras_section(c: dict[str, Any]) -> list[str]:
    """``--cameras N``: one node batching N cameras against N separate nodes, per camera and in total."""
    n = c["n"]
    timeout = "the node's default" if c.get("batch_timeout_ms") is None else f"{_fmt(c['batch_timeout_ms'])} ms"
    rate = requested_rate(c.get("fps_requested"), c.get("fps_requested_from"), c.get("source"))
    lines = ["## One engine for several cameras", ""]
    lines += [
        f"{n} cameras, each reading `{_inline(c.get('source'))}`"
        + (" at " if c.get("fps_requested") is not None else ", ") + rate
        + f", queue latest: one node batching them (batch timeout {timeout}), then {n} separate nodes "
        f"at once. Every camera measured for "
        f"{_fmt(c['one_node']['window_s'])} s from its own subscriber.",
        "",
        f"**Total images/s: one node {_fmt(c['one_node']['images_per_s'])}, {n} nodes "
        f"{_fmt(c['separate_nodes']['images_per_s'])}: x{_fmt(c.get('one_node_over_separate'))}.**",
        "",
    ]
    rounds = c.get("rounds") or []
    if len(rounds) > 1:
        lines += [f"{len(rounds)} rounds, alternating (the ratio above is over their sums; the tables show round 1):",
                  ""]
        lines += _table(["round", "one node images/s", f"{n} nodes images/s", "ratio"],
                        [[i, r["one_node_images_per_s"], r["separate_images_per_s"], r["ratio"]]
                         for i, r in enumerate(rounds, start=1)]) + [""]
    rows = []
    for label, key in (("one node", "one_node"), (f"{n} nodes", "separate_nodes")):
        run = c[key]
        for name, cam in run["per_camera"].items():
            e2e = cam.get("capture_to_receive_ms") or {}
            rows.append([label, name, cam.get("input_fps"), cam.get("delivered_share"), cam.get("output_fps"),
                         cam.get("frames_dropped"), e2e.get("p50"), pct(e2e, "p90"), pct(e2e, "p99"), e2e.get("max")])
        rows.append([f"**{label}**", "total", None, None, run["images_per_s"], None, None, None, None, None])
    lines += _table(["run", "camera", "input FPS", "input / requested", "output FPS", "dropped", "e2e p50 ms",
                     "p90 ms", "p99 ms", "max ms"], rows) + [""]
    lines += [f"**Warning:** {_inline(w)}." for w in c.get("warnings") or []] + ([""] if c.get("warnings") else [])
    lines += _table(["run", "CPU % (100 = one core)", "images per CPU-second", "slowest camera / mean camera FPS"],
                    [[label, c[key]["cpu_percent_mean"], c[key].get("images_per_core_s"), c[key]["min_camera_share"]]
                     for label, key in (("one node", "one_node"), (f"{n} nodes", "separate_nodes"))]) + [""]
    lines += [f"Images per CPU-second, one node / {n} nodes: x{_fmt(c.get('one_node_over_separate_per_core'))} "
              "(less swayed than the rates by other load on the machine).", ""]
    return lines


def requested_rate(fps: float | None, given_by: str | None, source: Any) -> str:
    """The rate the source was asked for, in words (the JSON's ``fps_requested`` and
    ``fps_requested_from``): ``30.00 FPS requested (--fps)``; without one, a file or folder is read
    unpaced (as fast as the node takes it), a camera or stream runs at its own rate."""
    if fps is not None:
        return f"{_fmt(fps)} FPS requested" + (f" ({_inline(given_by)})" if given_by else "")
    from perception.sources import source_is_live

    if isinstance(source, str) and source.strip() and source_is_live(source):
        return "no rate requested (no --fps: the source's own rate)"
    return "unpaced (no --fps: read as fast as the node takes it)"


def _source_limited_text(sentence: str) -> str:
    """``pipeline.source_limited`` without its ``source-limited:`` head (the report's label says it)."""
    head = "source-limited: "
    return sentence[len(head):] if sentence.startswith(head) else sentence


def _environment_section(env: dict[str, Any], loads: list[float] | None = None) -> list[str]:
    if not env:
        return ["## Environment", "", "Not recorded in the JSON.", ""]
    libs = ", ".join(f"{k} {v}" for k, v in env.get("libraries", {}).items() if v != "absent")
    gpus = "; ".join(f"{g['name']} ({g['memory_total_mb']} MB, driver {g['driver']})" for g in env.get("gpus", []))
    threads = ", ".join(f"{k}={v}" for k, v in env.get("thread_variables", {}).items() if v) or "none set"
    rows = [
        ["CPU", env.get("cpu_model")],
        ["CPU vector ISA", ", ".join(env.get("cpu_isa") or []) or "unknown"],
        ["cores (logical / physical / usable)",
         f"{env.get('cpu_logical_cores')} / {env.get('cpu_physical_cores')} / {env.get('cpu_usable_cores')}"],
        *([["CPU quota (cgroup), cores", env["cpu_quota_cores"]]] if env.get("cpu_quota_cores") is not None else []),
        ["load average (1 min) at start", env.get("load_average_1m")],
        *([["load average (1 min) during the engine blocks, min..max",
            f"{_fmt(min(loads))}..{_fmt(max(loads))}"]] if loads else []),
        ["memory MB", env.get("memory_total_mb")],
        *([["memory limit MB (cgroup)", env["memory_limit_mb"]]] if env.get("memory_limit_mb") is not None else []),
        ["thread variables", threads],
        ["OS", env.get("os")],
        ["Python", env.get("python")],
        ["libraries", libs],
        ["ONNX Runtime providers", ", ".join(env.get("ort_providers", [])) or "-"],
        ["GPU", gpus or "none"],
    ]
    return ["## Environment", ""] + _table(["", ""], rows)


def summary_text(results: dict[str, Any]) -> str:
    """A few lines for the terminal: the headline figures of ``results``."""
    lines = []
    partial = _partial_line(results.get("engine") or {})
    if partial:
        lines.append(partial)
    for i, r in enumerate(results.get("engine", {}).get("results", []), start=1):
        if r.get("skipped"):
            lines.append(f"#{i} {r['label']}: skipped ({r['skipped']})")
            continue
        lat = r["latency_ms"]
        x = (r.get("ratio_to_first") or {}).get("throughput_ips")
        lines.append(
            f"#{i} {r['label']}: n={lat.get('count')}  p50 {_num(lat['p50'], '.2f')} ms  "
            f"p99 {_num(pct(lat, 'p99'), '.2f')} ms  "
            f"max {_num(lat['max'], '.2f')} ms  "
            + (f"blocks p50 {_block_range(r)} ms  " if _block_range(r) else "")
            + f"{_num(r['fps'], '.1f')} FPS  {_num(r['throughput_ips'], '.1f')} img/s (x{_num(x, '.2f')} #1)  "
            f"peak RSS {_num((r.get('memory') or {}).get('rss_peak_mb'), '.0f')} MB"
            + ("" if r.get("agreement") is None else f"  agree {100 * r['agreement']:.2f} %")
            + ("  agree - (ONNX Runtime, the reference, cannot run the file)" if r.get("agreement_skipped") else "")
        )
    lines += [f"warning: {w}" for w in engine_warnings(results)]
    c = results.get("cameras")
    if c:
        for label, key in (("one node", "one_node"), (f"{c['n']} nodes", "separate_nodes")):
            cams = ", ".join(f"{name} {_fmt(cam['output_fps'], 1)} FPS (n={_fmt(cam.get('frames_received'))}) p50 "
                             f"{_fmt((cam['capture_to_receive_ms'] or {}).get('p50'))} ms"
                             for name, cam in c[key]["per_camera"].items())
            lines.append(f"{label}: {_fmt(c[key]['images_per_s'], 1)} images/s ({cams})")
        lines.append(f"one node / {c['n']} nodes: x{_fmt(c.get('one_node_over_separate'))} images/s, "
                     f"x{_fmt(c.get('one_node_over_separate_per_core'))} images per CPU-second")
        lines += [f"warning: {_inline(w)}" for w in c.get("warnings") or []]
    p = results.get("pipeline")
    if p:
        e2e = p.get("capture_to_receive_ms") or {}
        seq = p.get("sequence", {})
        rounds = results.get("rounds") or []  # with rounds, their lines and the pooled ratios below
        final = p.get("node_final_stats") or {}
        ran = (f" ({final['engine']}-{final['precision']})" if not rounds and final.get("engine")
               and final.get("precision") else "")  # with rounds, each round's line names it
        lines.append(
            f"node{ran}: in {_fmt(p.get('input_fps'), 1)} FPS, out {_fmt(p.get('output_fps'), 1)} FPS "
            f"(n={_fmt(p.get('frames_received'))} frames in {_fmt(p.get('window_s'))} s), "
            f"missing at subscriber {_fmt(seq.get('missing'))} (dropped by the node {_fmt(p.get('frames_dropped'))}, "
            f"lost after it {_fmt(p.get('lost_after_node'))}), "
            f"capture->receive p50 {_fmt(e2e.get('p50'))} ms p99 {_fmt(pct(e2e, 'p99'))} ms "
            f"max {_fmt(e2e.get('max'))} ms, "
            f"CPU {_fmt((p.get('cpu') or {}).get('mean_percent'), 0)} %"
        )
        lines += [f"warning: {_inline(w)}" for w in pipeline_warnings(p)]
        if p.get("source_limited"):
            lines.append(f"note: {_inline(p['source_limited'])}")
        if p.get("input_ended_s") is not None:
            lines.append(f"the node's input ended after {_fmt(p['input_ended_s'], 1)} s of the window: the figures "
                         "cover that; add --loop (or a shorter --duration) for the full window")
        probe = p.get("probe_wait") or {}
        if probe.get("was_probing"):
            lines.append(f"--engine auto, first start: waited {_fmt(probe.get('waited_s'), 1)} s for the probe's "
                         + ("verdict, which had not come; measured the node as it ran" if probe.get("timed_out")
                            else f"verdict ({probe.get('state')}) before measuring"))
        base = results.get("baseline")
        ratios = results.get("ratios", {})
        if base and not rounds:
            lines.append(f"serial baseline: {_fmt(base.get('fps'), 1)} FPS "
                         f"(n={_fmt((base.get('latency_ms') or {}).get('count'))}); node/baseline "
                         f"x{_fmt(ratios.get('node_over_baseline_fps'))}")
        if not rounds and ratios.get("engine_only_fps"):
            engine_n = next((r["latency_ms"].get("count") for r in (results.get("engine") or {}).get("results") or []
                             if not r.get("skipped")), None)
            lines.append(f"engine only: {_fmt(ratios['engine_only_fps'], 1)} FPS (n={_fmt(engine_n)}); node/engine "
                         f"x{_fmt(ratios.get('node_over_engine_fps'))}")
        for i, r in enumerate(rounds, start=1):
            lines.append(f"round {i}: node {_fmt(r['node_fps'], 1)} FPS ({r['engine']}-{r['precision']})"
                         + (f", baseline {_fmt(r['baseline_fps'], 1)}" if r.get("baseline_fps") is not None else "")
                         + (f", engine only {_fmt(r['engine_only_fps'], 1)}" if r.get("engine_only_fps") is not None else "")
                         + f"; node/baseline x{_fmt(r.get('node_over_baseline_fps'))}, "
                           f"node/engine x{_fmt(r.get('node_over_engine_fps'))}")
        if len(rounds) > 1:
            lines.append(f"over the {len(rounds)} rounds' sums: node/baseline x{_fmt(ratios.get('node_over_baseline_fps'))}, "
                         f"node/engine x{_fmt(ratios.get('node_over_engine_fps'))}")
        cpu = ratios.get("cpu_per_frame")
        if cpu:
            over = f", mean over the {len(rounds)} rounds" if len(rounds) > 1 else ""
            lines.append(f"CPU per frame (ms of one core{over}): node {_fmt(cpu['node_ms'])}, subscriber "
                         f"{_fmt(cpu['subscriber_ms'])}, engine-only {_fmt(cpu['engine_only_ms'])}; the node beyond "
                         f"its engine {_fmt(cpu['node_beyond_engine_ms'])}; node/engine if CPU were the only limit "
                         f"x{_fmt(cpu['cpu_bound_node_over_engine'])}")
        peak = results.get("peak_rate")
        if peak:
            lines.append(_peak_rate_line(peak))
    return "\n".join(lines)


def _num(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec`` for the terminal, ``-`` when the JSON holds none."""
    return "-" if value is None else format(value, spec)


def _peak_rate_line(peak: dict[str, Any]) -> str:
    """The ``--peak-rate`` answer for the terminal: the rate held, and what bounds it."""
    rule = f"at most {100 * peak['max_drop']:.0f} % of captured frames dropped or missing"
    n = len(peak.get("trials") or [])
    trials = f"{n} trial{'' if n == 1 else 's'}"
    if peak.get("fps_held") is None:
        return (f"peak rate: no rate held ({rule}): even {_fmt(peak.get('lowest_dropping_fps'))} FPS requested "
                f"dropped more; {trials}")
    limited = "; the camera was the limit (see the report)" if peak.get("source_limited") else ""
    best = (peak.get("sustained") or {}).get("trial")
    captured = (peak["trials"][best - 1].get("frames_captured") if best and best <= len(peak.get("trials") or [])
                else None)
    if captured is not None:
        # 0 of 19 frames cannot show "at most 1 %": the trial's size is said, and a small one flagged
        small = (f"; its best trial captured only {captured} frames, too few to show {100 * peak['max_drop']:.0f} % "
                 "(a longer --duration)" if captured < 1 / peak["max_drop"] else "")
        trials = f"{trials}, best n={captured} frames{small}"
    if peak.get("lowest_dropping_fps") is None:  # held the fastest rate tried: the source is the limit
        return f"peak rate: {_fmt(peak['fps_held'])} FPS held ({rule}), the fastest tried{limited}; {trials}"
    return (f"peak rate: {_fmt(peak['fps_held'])} FPS held ({rule}); {_fmt(peak['lowest_dropping_fps'])} FPS "
            f"requested dropped more{limited}; {trials}")
