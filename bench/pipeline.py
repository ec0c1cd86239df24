"""Pipeline mode: run the real node on a source and measure it from a subscriber.

``run_pipeline_bench(config)`` starts ``perception run`` as its own process (as it runs on a car:
its CPU use is then its own, not the bench's), publishing on a free loopback port. A
``MaskSubscriber`` in the bench process receives every message for ``duration_s`` seconds after
the first mask arrives (model loading and warm-up are left out). From the per-frame headers it
takes the stage latencies the node measured (capture, preprocess, infer, postprocess, encode,
publish: whatever the node reports under ``latency_ms``), and from the clocks the end-to-end
figure: ``receive_ns - capture_ns``, both ``time.time_ns()`` on the same machine. The node's CPU
use is sampled once a second with ``psutil`` (100 % = one core busy), per thread at the end.

The unhappy path is reported, not averaged away: sequence numbers missing at the subscriber, split
into frames the node dropped and frames lost after it (by ``pub_seq``), the longest gap, and the
worst latencies.

With ``baseline=True`` the naive serial loop (``bench/baseline.py``) runs on the same model and
source afterwards, and a short engine-only run (on the source's frames when it is a file) gives
``node FPS / engine FPS``. With ``streams``
the node runs that many frames in flight and the engine-only run keeps as many calls in flight
(``bench/engine.py``), so the ratio compares like with like; the naive loop runs one at a time.

``topics`` (``--topics``) limits the subscriber to those mask topics (and the stats); the node
builds only what is subscribed, so this measures it for that consumer. With an engine-only run,
``ratios.cpu_per_frame`` (``cpu_budget``) sets the node's and the subscriber's CPU per frame
against the engine's CPU per inference.

With ``rounds`` > 1 (one camera) the node, the naive loop and the engine-only run alternate that
many times (node, loop, engine, node, loop, engine, ...): this VM's speed drifts by a third between
minutes, and a ratio between runs a minute apart measured that drift as much as the node (the
same node measured 0.72x and 1.02x its engine-only run in two rounds). ``rounds`` holds each
round's FPS and ratios; the headline ratios are over the rounds' sums; the tables show round 1.

With ``peak_rate=True`` the node is run several times on the paced synthetic camera (queue
``latest``), each for ``duration_s``, to find the highest rate it sustains: the measured output
rate of the best trial (the main run counts as one) in which at most ``PEAK_MAX_DROP`` of the
captured frames were dropped or missing at the subscriber. A trial whose camera delivered less
than it was asked for says so rather than count as held or dropped at that rate
(``bench/peak_rate.py``). This is how Isaac ROS reports node throughput.

With ``engine="auto"`` on a video file or image folder without ``loop``, and no cached verdict
for the model and machine, the node is given ``--loop``: it probes the engines for 30 s or more
before the bench measures, and a short clip would end first (``node.loop_for_probe``).

With ``cameras=N`` (N > 1) it compares one engine for N cameras against a node per camera, in
one run: first one node with N cameras (``--source bench0=SOURCE --source bench1=SOURCE ...``,
batched inference), then N separate nodes at once (one camera each, as ``launch/two_cameras.yaml``
runs them), each measured for ``duration_s`` from a subscriber per camera (each in its own thread).
Both run the ``latest`` queue, as live cameras do. It reports per camera the FPS, drops and
capture-to-receive latency percentiles, the total images/s, the CPU of the node(s) and images per
CPU-second, and ``one_node_over_separate``: the total images/s of the one node over that of the N
nodes (``..._per_core``: the same for images per CPU-second, less swayed by other load). A camera
starved by the others shows as a low ``min_camera_share`` (slowest camera's FPS / mean camera FPS).

The modules: ``node.py`` runs and measures one node, ``peak_rate.py`` the ``--peak-rate`` search,
``multicamera.py`` the ``--cameras`` comparison; this one holds the configuration and runs them.

Run it with ``perception bench pipeline --model m.onnx --source synthetic --duration 10 --baseline``,
or ``perception bench pipeline --cameras 2 --source clip.mp4 --loop --fps 30 --duration 20``.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perception import contracts
from perception.bench.multicamera import fps_requested, measure_cameras
from perception.bench.node import loop_for_probe, measure_node
from perception.bench.nodeproc import NodeFailed
from perception.bench.peak_rate import find_peak_rate, peak_rate_source_error
from perception.bench.stats import few_samples, ratio
from perception.config import bounds, same_setting, setting
from perception.errors import ConfigError
from perception.options import (
    EngineName,
    EngineOptions,
    PrecisionName,
    ProviderName,
    SourceOptions,
    StreamsValue,
    synthetic_size_error,
)
from perception.run_config import RunConfig

__all__ = ["NodeFailed", "PipelineBenchConfig", "run_pipeline_bench", "source_options", "topics_from_text"]

#: The shortest measuring window (``--duration``).
MIN_DURATION_S = 0.1
#: What ``--topics`` may name: the node's mask topics and its obstacles document.
BENCH_TOPICS = (*contracts.MASK_TOPICS, contracts.OBSTACLES_TOPIC)


def topics_from_text(text: str) -> tuple[str, ...]:
    """``--topics drivable,lane`` -> ``("drivable", "lane")``; ConfigError naming the bad name."""
    names = tuple(dict.fromkeys(n.strip() for n in str(text).split(",") if n.strip()))
    unknown = [n for n in names if n not in BENCH_TOPICS]
    if unknown:
        raise ConfigError(f"--topics {unknown[0]!r} is not a topic of the node; choose from {', '.join(BENCH_TOPICS)}")
    if not any(n in contracts.MASK_TOPICS for n in names):
        raise ConfigError(f"--topics {text!r} names no mask topic; the bench counts frames by their masks, so give at "
                          f"least one of {', '.join(contracts.MASK_TOPICS)}")
    return names


@dataclass
class PipelineBenchConfig:
    """What to run. ``fps``: the source rate passed to the node (None: the source's default, 30 for
    the synthetic camera; files are read as fast as the node takes them)."""

    model: Path | None = setting(None, help="ONNX model (default: the shipped perception/assets/default.onnx)")
    source: str = setting("synthetic", help="frame source, as for 'perception run': a camera (/dev/videoN), a video "
                                             "file, an image folder, an rtsp:// or http:// stream, or synthetic")
    # Its lower bound is checked in __post_init__, which can say why 0 is not "no limit" here.
    duration_s: float = setting(10.0, hi=86_400, flag="--duration", metavar="S",
                                help=f"seconds to measure, at least {MIN_DURATION_S:g} (a measuring window has an end: "
                                     "0 is not 'no limit' here)")
    fps: float | None = same_setting(SourceOptions, "fps", group=None)
    width: int | None = same_setting(SourceOptions, "width", group=None)
    height: int | None = same_setting(SourceOptions, "height", group=None)
    engine: EngineName = same_setting(RunConfig, "engine", group=None)
    # None: not given, the node's own default (the declaration's) applies
    precision: PrecisionName | None = same_setting(EngineOptions, "precision", default=None, group=None)
    peak_rate: bool = setting(False, help="also find the highest rate the node sustains on the synthetic camera: its "
                                          "measured output in a run with < 1 % dropped (several node runs of "
                                          "--duration each)")
    provider: ProviderName | None = same_setting(EngineOptions, "provider", default=None, group=None)
    threads: int | None = same_setting(EngineOptions, "threads", default=None, group=None)
    streams: StreamsValue | None = same_setting(EngineOptions, "streams", default=None, group=None)
    warmup: int = same_setting(RunConfig, "warmup", group=None,
                               help="the node's untimed warm-up runs before its first frame; the serial baseline makes "
                                    "as many untimed calls before its timing starts")
    baseline: bool = setting(False, help="also time a naive one-thread serial loop on the same model and source")
    engine_runs: int = setting(100, lo=0, hi=1_000_000,
                               help="engine-only runs for the pipeline/engine FPS ratio (0 to skip)")
    cameras: int = setting(1, lo=1, hi=16, metavar="N",
                           help="compare one node batching N cameras (each reading --source) with N separate nodes, "
                                "in one run (1: the single-node bench)")
    batch_timeout_ms: float | None = same_setting(RunConfig, "batch_timeout_ms", default=None, group=None)
    rounds: int = setting(1, lo=1, hi=20, help="alternate the runs this many times each, the ratios over their sums "
                                               "(one camera: the node, --baseline and the engine-only run; "
                                               "--cameras: one node and N nodes)")
    loop: bool = same_setting(SourceOptions, "loop", group=None)
    topics: tuple[str, ...] = setting(
        (), metavar="NAME[,...]", from_text=topics_from_text, to_text=",".join,
        help="the topics the bench's subscriber receives (default: all of them). The node builds only what someone "
             "subscribes to, so this measures it for a consumer of these topics, e.g. drivable,lane without the "
             "class map and the obstacle mask and blobs (subscriptions match by prefix: obstacle covers obstacles)")
    progress: bool = setting(True, help="no progress bar")
    peak_steps: int = field(default=4, metadata=bounds(1, 20))

    def __post_init__(self) -> None:
        if not self.duration_s >= MIN_DURATION_S:
            raise ValueError(f"duration_s={self.duration_s:g}: the bench measures the node over a window of "
                             f"--duration seconds, so it needs at least {MIN_DURATION_S:g} (0 is not 'no limit' here)")
        if self.source.strip() == "synthetic":  # said now, not by the node after the model has loaded
            problem = synthetic_size_error(self.width, self.height)
            if problem:
                raise ValueError(problem)


def run_pipeline_bench(cfg: PipelineBenchConfig, *, command: str = "") -> dict[str, Any]:
    """The whole pipeline bench (node, then baseline and engine-only when asked); a full bench JSON.

    Raises ModelError for a missing model, NodeFailed when the node fails, SourceError/ConfigError
    for a bad source (from the baseline).
    """
    from perception.bench.baseline import run_serial_baseline
    from perception.bench.engine import EngineBenchConfig, resolve_models, run_engine_bench
    from perception.bench.results import new_results
    from perception.progress import progress

    check_conflicts(cfg)
    model = resolve_models([cfg.model] if cfg.model else [])[0]
    results = new_results("pipeline", command)
    results["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items()}
    if cfg.cameras > 1:
        with progress(desc=f"{cfg.cameras} cameras: one node and {cfg.cameras} nodes", unit="run", total=2 * cfg.rounds,
                      disable=not cfg.progress, file=sys.stderr) as bar:
            results["cameras"] = measure_cameras(cfg, model, tick=bar.update)
        return results
    # --engine auto at a first start on a file without --loop: the node loops it while it probes
    # (``loop_for_probe``), in every round alike.
    node_cfg, looped = cfg, loop_for_probe(cfg, model)
    if looped:
        print(f"perception bench: {looped}", file=sys.stderr)
        node_cfg = dataclasses.replace(cfg, loop=True)
    rounds: list[dict[str, Any]] = []
    for r in range(cfg.rounds):
        of = f" (round {r + 1} of {cfg.rounds})" if cfg.rounds > 1 else ""
        with progress(desc=f"pipeline bench{of}", unit="frame", disable=not cfg.progress, file=sys.stderr) as bar:
            bar.set_postfix_str("node")
            node = measure_node(node_cfg, model, tick=bar.update)
            node["loop_for_probe"] = looped
            node.update(source_rate(cfg, node))
            node_engine, node_precision = ran_by_node(cfg, node)
            final = node.get("node_final_stats") or {}
            one: dict[str, Any] = {"node_fps": node["output_fps"], "engine": final.get("engine") or node_engine,
                                   "precision": final.get("precision") or node_precision,
                                   "node_cpu_ms_per_frame": node["cpu_ms_per_frame"]["node"],
                                   "subscriber_cpu_ms_per_frame": node["cpu_ms_per_frame"]["subscriber"]}
            if r == 0:
                results["pipeline"] = node
            if cfg.baseline:
                bar.set_postfix_str("serial baseline")
                baseline = run_serial_baseline(
                    model=model, source=cfg.source, source_options=source_options(cfg), duration_s=cfg.duration_s,
                    engine=node_engine, provider=cfg.provider, threads=cfg.threads, precision=node_precision,
                    warmup=baseline_warmup(cfg), tick=bar.update,
                )
                one["baseline_fps"] = baseline["fps"]
                if r == 0:
                    results["baseline"] = baseline
        if cfg.engine_runs:
            # --streams auto: the engine-only run keeps as many frames in flight as the node ran
            streams = final.get("streams") if cfg.streams == "auto" else cfg.streams
            engine = run_engine_bench(EngineBenchConfig(
                models=[model], engines=[node_engine], providers=[cfg.provider] if cfg.provider else [],
                precisions=[node_precision],
                threads=[cfg.threads] if cfg.threads else [], streams=[streams] if streams else [],
                frames=engine_frames(cfg.source),
                runs=cfg.engine_runs, warmup=10,
                blocks=engine_blocks(cfg.engine_runs, streams or 1), progress=cfg.progress,
            ))
            one["engine_only_fps"] = engine["results"][0]["fps"]
            one["engine_cpu_ms_per_run"] = engine["results"][0].get("cpu_ms_per_run")
            if r == 0:
                results["engine"] = engine
        one["node_over_baseline_fps"] = ratio(one["node_fps"], one.get("baseline_fps"))
        one["node_over_engine_fps"] = ratio(one["node_fps"], one.get("engine_only_fps"))
        rounds.append(one)
    if more := run_warnings(results):
        results["pipeline"].setdefault("warnings", []).extend(more)
    if cfg.peak_rate:
        results["peak_rate"] = find_peak_rate(cfg, model, main_run=results["pipeline"])
    results["ratios"] = pooled_ratios(rounds)
    if cfg.rounds > 1:
        results["rounds"] = rounds
    return results


def run_warnings(results: dict[str, Any]) -> list[str]:
    """The serial baseline's too-few-samples warning (round 1's, as the tables show), for the
    pipeline's ``warnings``: the node/baseline ratio made of it is not a result either."""
    warnings = []
    base = results.get("baseline")
    if base:
        few = few_samples((base.get("latency_ms") or {}).get("count"), "the serial baseline", "frames")
        if few:
            warnings.append(few)
    # the engine-only run's own (too few calls, other load) are its block's ``warnings`` (``engine_warnings``)
    return warnings


#: A paced source whose frames the node took at least this share of, dropping at most
#: ``SOURCE_LIMITED_DROP`` of them, set the node's rate (``source_rate``).
SOURCE_LIMITED_SHARE = 0.95
SOURCE_LIMITED_DROP = 0.01


def source_rate(cfg: PipelineBenchConfig, node: dict[str, Any]) -> dict[str, Any]:
    """The rate the source was asked for (``fps_requested``: ``--fps``, or the synthetic camera's
    default; None for a file read unpaced or a camera's own rate, ``fps_requested_from`` says which),
    and ``source_limited``: when the node took that rate and published (nearly) every frame, the
    sentence that says the source, not the node, set its output FPS (and so its node/engine ratio);
    else None."""
    requested = fps_requested(cfg)
    out: dict[str, Any] = {"fps_requested": requested,
                           "fps_requested_from": "--fps" if cfg.fps else "the source's default" if requested else None,
                           "source_limited": None}
    got, captured, dropped = node.get("input_fps"), node.get("frames_captured") or 0, node.get("frames_dropped")
    if requested is None or got is None or dropped is None or captured <= 0:
        return out
    if got >= SOURCE_LIMITED_SHARE * requested and dropped <= SOURCE_LIMITED_DROP * captured:
        out["source_limited"] = (
            f"source-limited: the source was asked for {requested:g} FPS ({out['fps_requested_from']}) and the node "
            f"took {got:.2f} FPS of it, dropping {dropped} of {captured} frames, so it kept up: its output FPS (and "
            "node/engine-only) measures the source's rate, not the node's ceiling (bench a file without --fps, read "
            "as fast as the node takes it, for that)")
    return out


def check_conflicts(cfg: PipelineBenchConfig) -> None:
    """ConfigError for flags that cannot go together, before any node starts (each is one line)."""
    if cfg.cameras > 1:
        if cfg.baseline or cfg.peak_rate:
            raise ConfigError("--cameras compares one node with separate nodes; run --baseline or --peak-rate "
                              "without --cameras")
        if cfg.streams not in (None, 1):
            raise ConfigError(f"--cameras {cfg.cameras}: a node with several cameras runs one batch at a time; "
                              f"drop --streams {cfg.streams}")
        return
    if cfg.peak_rate and peak_rate_source_error(cfg.source):
        # said now: find_peak_rate runs after every round of node, baseline and engine-only
        raise ConfigError(peak_rate_source_error(cfg.source))
    in_flight = AUTO_MAX_STREAMS if cfg.streams == "auto" else (cfg.streams or 1)
    if 0 < cfg.engine_runs < in_flight:
        up_to = "up to " if cfg.streams == "auto" else ""
        raise ConfigError(f"--engine-runs {cfg.engine_runs} is fewer than the {up_to}{in_flight} calls --streams "
                          f"{cfg.streams} keeps in flight, so the engine-only run would measure fewer; give "
                          f"--engine-runs {in_flight} or more (or 0 to skip it)")


def baseline_warmup(cfg: PipelineBenchConfig) -> int:
    """The serial loop's untimed calls before its timing starts: as many as the node has made when
    its window opens (its ``--warmup`` runs, then its first frame, whose mask opens the window), so
    that neither starts colder than the other (the loop's fixed 10 favoured it on a short window).
    ``--warmup 0`` still makes the node's one check run (``engines.base.warmup_runs``)."""
    from perception.engines.base import warmup_runs

    return warmup_runs(cfg.warmup) + 1


#: ``--streams auto``: the most frames in flight the node may choose (``streams_for_node``).
AUTO_MAX_STREAMS = 2


def engine_blocks(runs: int, in_flight: int) -> int:
    """The engine-only run's round-robin blocks: up to 5, each of at least ``in_flight`` runs, so that
    ``--streams N`` keeps N calls in flight in every block (``check_conflicts`` refuses fewer runs)."""
    return max(1, min(5, runs // max(1, in_flight)))


def pooled_ratios(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline ratios over the rounds' sums of FPS (one round: that round's), and round 1's
    engine-only FPS (the tables show round 1)."""
    def total(key: str) -> float | None:
        values = [r.get(key) for r in rounds]
        return None if any(v is None for v in values) else float(sum(values))

    ratios: dict[str, Any] = {}
    if rounds[0].get("baseline_fps") is not None:
        ratios["node_over_baseline_fps"] = ratio(total("node_fps"), total("baseline_fps"))
    if rounds[0].get("engine_only_fps") is not None:
        ratios["engine_only_fps"] = rounds[0]["engine_only_fps"]
        ratios["node_over_engine_fps"] = ratio(total("node_fps"), total("engine_only_fps"))
    cpu = cpu_budget(rounds)
    if cpu:
        ratios["cpu_per_frame"] = cpu
    return ratios


def cpu_budget(rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Where the cores go per frame, in ms of one core, averaged over the rounds: the node's
    process, the bench's subscriber, and one engine-only inference; the node's CPU beyond its
    engine (``node_beyond_engine_ms``: decode, letterbox, masks, sends, its threads' hand-offs);
    and ``cpu_bound_node_over_engine``, the node/engine-only ratio if CPU time per frame were the
    only limit (engine CPU over node plus subscriber CPU per frame; an estimate, not a bound). None without an engine-only run or CPU figures."""
    def mean(key: str) -> float | None:
        values = [r.get(key) for r in rounds]
        return None if any(v is None for v in values) else sum(values) / len(values)

    node, sub, engine = mean("node_cpu_ms_per_frame"), mean("subscriber_cpu_ms_per_frame"), mean("engine_cpu_ms_per_run")
    if node is None or sub is None or engine is None:
        return None
    return {"node_ms": round(node, 3), "subscriber_ms": round(sub, 3), "engine_only_ms": round(engine, 3),
            "node_beyond_engine_ms": round(node - engine, 3),
            "cpu_bound_node_over_engine": ratio(engine, node + sub)}


def ran_by_node(cfg: PipelineBenchConfig, pipeline: dict) -> tuple[str, str]:
    """The engine and precision the baseline and engine-only runs use: with ``--engine auto``, what
    the node ended on (its stats document), so that the ratios compare like with like and never
    start a second probe, which, without the node's frames, would judge on rendered scenes and
    cache that verdict; otherwise the flags."""
    final = pipeline.get("node_final_stats") or {}
    if cfg.engine == "auto" and final.get("engine") and final.get("precision"):
        return str(final["engine"]), str(final["precision"])
    return cfg.engine, cfg.precision or "auto"


def engine_frames(source: str) -> str:
    """The engine-only run's frames: the node's own file (every 10th frame, letterboxed as the node
    does), so its agreement column is the node's model on the node's input; rendered road scenes for
    the synthetic camera (a real-road model's INT8 answers flip more on those)."""
    from perception.sources import source_is_live

    return "" if source_is_live(source) else source


def source_options(cfg: PipelineBenchConfig) -> dict[str, Any]:
    """The ``open_source`` options the node gets from the same flags (for the baseline)."""
    options: dict[str, Any] = {}
    if cfg.width:
        options["width"] = cfg.width
    if cfg.height:
        options["height"] = cfg.height
    if cfg.fps:
        options["fps"] = cfg.fps
    return options


