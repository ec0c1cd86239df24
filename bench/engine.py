"""Engine mode: how fast one ``Engine.infer`` call is, per model x engine x provider x threads x streams x batch.

``run_engine_bench(config)`` loads every engine configuration, warms each up (warm-up runs are
never timed), then times ``Engine.infer`` in round-robin blocks: block 1 of every configuration,
then block 2 of every configuration, and so on, so slow drift of the machine (thermal throttling,
a neighbour's load) spreads over all configurations alike instead of penalising the last one.

What is timed: the wall time (``time.perf_counter_ns``) of one ``engine.infer(batch)`` call on a
uint8 N x H x W x 3 BGR batch already at the model's input size, from the call to its return with
the outputs on the host. ONNX Runtime's ``run`` is synchronous; the torch and TensorRT engines
synchronise the GPU before returning, so GPU work is inside the figure. Inputs are synthetic road
scenes from the synthetic source (never zeros, which some kernels shortcut), or with ``--frames SPEC``
a dataset's val images, letterboxed as the node does.

With ``--streams N`` (N > 1) a configuration runs N threads, each calling its own engine worker
(``Engine.worker``: the frames in flight of ``perception run --streams N``) at once; its FPS is
the frames finished over the blocks' wall time (not over the summed call times, which overlap),
and its latency figures are per call, each call sharing the cores with N - 1 others. This is the
engine-only figure a node with ``--streams N`` is compared with.

Run it with ``perception bench engine --model m.onnx``; see bench/README.md for every figure.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Literal

import numpy as np
import psutil

from perception.bench.env import gpu_memory_mb
from perception.bench.stats import ratio, summarize_ms
from perception.config import listed_setting, load_config, same_setting, setting
from perception.errors import ConfigError, ModelError, PerceptionError
from perception.frames import SOURCE_FRAME_STRIDE, bench_frames, frames_description
from perception.options import EngineName, EngineOptions, PrecisionName, ProviderName
from perception.run_config import DEFAULT_MODEL, RunConfig

log = logging.getLogger(__name__)


#: Model files each engine reads; other pairings of the grid are left out, so that
#: ``--model a.onnx --model a.pt --engine ort,torch`` compares ORT on the ONNX file with torch on the
#: checkpoint without trying ORT on a checkpoint.
ENGINE_SUFFIXES = {"ort": (".onnx",), "openvino": (".onnx",), "auto": (".onnx",),
                   "tensorrt": (".onnx", ".engine", ".plan"), "torch": (".pt", ".pth"),
                   "torch-tensorrt": (".pt", ".pth")}

#: Bench-only engine names: a registered engine with fixed options, measured as a row of its own
#: (``--engine torch-tensorrt``: the torch engine with ``--compile tensorrt``, beside ``tensorrt``).
ENGINE_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {"torch-tensorrt": ("torch", {"compile": "tensorrt"})}

#: Distinct frames cycled through the timed runs (a few, so caches see varied data).
FRAME_POOL = 8


#: ``--engine`` of the engine bench: the node's engines and the bench-only variants (``ENGINE_VARIANTS``).
BenchEngineName = Literal[EngineName, "torch-tensorrt"]


#: ``--fp16``'s words -> the half-precision settings measured.
FP16_CHOICES: dict[str, tuple[bool, ...]] = {"no": (False,), "yes": (True,), "both": (False, True)}


def _fp16_from_text(text: str) -> tuple[bool, ...]:
    if text not in FP16_CHOICES:
        raise ConfigError(f"--fp16 {text!r}: expected no, yes or both")
    return FP16_CHOICES[text]


def _fp16_to_text(value: tuple[bool, ...]) -> str:
    return next(word for word, choice in FP16_CHOICES.items() if choice == tuple(value))


@dataclass
class EngineBenchConfig:
    """What to measure. Every list is one axis of the combination grid.

    ``providers`` / ``threads``: empty means the engine's own default (recorded as chosen).
    ``fp16``: half precision on or off (the torch engine's option). ``precisions``: ``--precision``
    of each engine (``fp32``, ``bf16``, ``int8`` runs the model's INT8 sibling; ``auto`` the file's
    own); a pairing an engine cannot run here is reported as skipped with the reason. Every result
    carries ``agreement``: the share of pixels whose class id equals ONNX Runtime FP32 on the same
    frames. The input size is fixed by each model file (one model per size).
    ``duration_s``: when set, each configuration gets ``duration_s / blocks`` seconds per block
    instead of ``runs / blocks`` runs.
    """

    models: list[Path] = setting(default_factory=list, flag="--model", metavar="MODEL",
                                 help="ONNX model (or checkpoint for --engine torch); repeat for side by side "
                                      "(default: the shipped perception/assets/default.onnx)")
    engines: list[BenchEngineName] = listed_setting(RunConfig, "engine", default=("ort",), group=None)
    precisions: list[PrecisionName] = listed_setting(EngineOptions, "precision", default=("auto",), group=None)
    providers: list[ProviderName] = listed_setting(EngineOptions, "provider", group=None)
    threads: list[int] = listed_setting(EngineOptions, "threads", group=None)
    streams: list[int] = listed_setting(EngineOptions, "streams", group=None, metavar="N[,...]", from_text=None,
                                        to_text=None)
    batches: list[int] = setting(default_factory=lambda: [1], lo=1, hi=1024, flag="--batch", listed="batch",
                                 help="batch size")
    fp16: tuple[bool, ...] = setting((False,), metavar="{no,yes,both}", from_text=_fp16_from_text,
                                     to_text=_fp16_to_text,
                                     help="half precision (torch engine on CUDA): no, yes, or both side by side")
    runs: int = setting(200, lo=1, hi=10_000_000, help="timed runs per configuration")
    warmup: int = same_setting(RunConfig, "warmup", default=20, group=None,
                               help="untimed warm-up runs per configuration")
    duration_s: float | None = setting(None, lo=0.01, hi=86_400, flag="--duration", metavar="S",
                                       help="seconds of timed runs per configuration instead of --runs")
    blocks: int = setting(5, lo=1, hi=10_000,
                          help="round-robin blocks the runs are split into, so drift hits every configuration alike")
    seed: int = setting(0, help="seed of the synthetic input frames")
    frames: str = setting("", metavar="SPEC",
                          help="the input and agreement frames, letterboxed as the node does: a dataset spec (its val "
                               "images, e.g. camvid:PATH) or a --source (a video file or image folder; every "
                               f"{SOURCE_FRAME_STRIDE}th frame); default: synthetic road scenes. A model trained on other "
                               "roads is unsure on synthetic ones, so its agreement reads low there")
    progress: bool = setting(True, help="no progress bar")

    def __post_init__(self) -> None:
        # Ranges and choices are declared above (checked by load_config for the flags); this is
        # the one check that joins two settings.
        if self.duration_s is None and self.runs < self.blocks:
            raise ValueError(f"runs={self.runs} is fewer than blocks={self.blocks}; give more runs or fewer blocks")


def resolve_models(models: list[Path]) -> list[Path]:
    """The model files to measure: the given ones, or the shipped default; ModelError when absent."""
    if not models:
        if not DEFAULT_MODEL.is_file():
            raise ModelError(
                f"no --model given and the shipped default model {DEFAULT_MODEL} is missing; "
                "pass --model path/to/model.onnx"
            )
        return [DEFAULT_MODEL]
    for m in models:
        if not Path(m).is_file():
            raise ModelError(f"model file {m} not found; check the --model path")
    return [Path(m) for m in models]


@dataclass
class _Case:
    """One configuration of the grid and what was measured for it."""

    model: Path
    engine_name: str
    provider: str | None
    threads: int | None
    batch: int
    fp16: bool = False
    precision: str = "auto"
    streams: int | None = None
    engine: Any = None
    workers: list[Any] = field(default_factory=list)
    wall_ns: int = 0
    cpu_ns: int = 0  # this process's CPU time over the timed blocks (all its threads)
    agreement: float | None = None
    batches: list[np.ndarray] = field(default_factory=list)
    samples_ns: list[int] = field(default_factory=list)
    rss_samples: list[int] = field(default_factory=list)
    rss_before_load: int = 0
    rss_after_load: int = 0
    gpu_peak_mb: float | None = None
    load_s: float = 0.0
    skipped: str | None = None

    def label(self) -> str:
        parts = [self.model.stem, self.engine_name]
        if self.engine is not None:
            parts.append(str(self.engine.provider))
        elif self.provider:
            parts.append(self.provider)
        if self.threads:
            parts.append(f"t{self.threads}")
        if self.streams:
            parts.append(f"s{self.streams}")
        if self.fp16:
            parts.append("fp16")
        if self.precision != "auto":
            parts.append(self.precision)
        parts.append(f"b{self.batch}")
        return " ".join(parts)


def _rss() -> int:
    return psutil.Process().memory_info().rss


def open_engine(
    model: Path, engine: str, provider: str | None = None, threads: int | None = None, fp16: bool = False,
    precision: str = "auto", streams: int | None = None,
):
    """Load ``model`` with the named engine; None for provider/threads/streams leaves the engine's default.

    Raises whatever the engine loader raises for a bad name, file or provider (ConfigError,
    ModelError, DependencyError): all are one-line user errors.
    """
    from perception.engines import EngineOptions, load_engine

    options: dict[str, Any] = {"fp16": fp16, "precision": precision}
    engine, variant_options = ENGINE_VARIANTS.get(engine, (engine, {}))
    options.update(variant_options)
    if provider:
        options["provider"] = provider
    if threads:
        options["threads"] = threads
    if streams:
        options["streams"] = streams
    return load_engine(engine, model, load_config(EngineOptions, options, source="perception bench"))


def _load(case: _Case) -> None:
    if case.threads and case.streams and case.threads < case.streams:
        case.skipped = f"--threads {case.threads} is fewer than --streams {case.streams} (threads are the total)"
        return
    case.rss_before_load = _rss()
    t0 = time.perf_counter()
    try:
        case.engine = open_engine(case.model, case.engine_name, case.provider, case.threads, case.fp16, case.precision,
                                  case.streams)
        if (case.streams or 1) > 1:
            case.workers = [case.engine.worker() for _ in range(case.streams)]
    except PerceptionError as exc:
        if case.precision == "auto":
            raise
        # A precision grid crosses engines with precisions some of them lack (ort + bf16, a CPU
        # without BF16, no INT8 sibling): report the pairing as skipped, measure the rest.
        case.skipped = str(exc)
        return
    case.load_s = time.perf_counter() - t0
    case.rss_after_load = _rss()


def _prepare_batches(case: _Case, frames_by_hw: dict[tuple[int, int], list[np.ndarray]], seed: int,
                     spec: str = "") -> None:
    meta = case.engine.metadata
    if case.batch > 1 and not meta.dynamic_batch:
        case.skipped = f"model {case.model.name} has a fixed batch of 1 (export it with a dynamic batch)"
        return
    hw = (int(meta.input_hw[0]), int(meta.input_hw[1]))
    if hw not in frames_by_hw:
        frames_by_hw[hw] = bench_frames(hw, FRAME_POOL, seed, spec)
    pool = frames_by_hw[hw]
    # Pre-stacked batches: building a batch is not part of inference, so it stays out of the timing.
    case.batches = [
        np.ascontiguousarray(np.stack([pool[(i + j) % len(pool)] for j in range(case.batch)]))
        for i in range(len(pool))
    ]


def _time_block(case: _Case, runs: int | None, seconds: float | None, tick) -> None:
    cpu_start = time.process_time_ns()
    try:
        if case.workers:
            _time_block_in_flight(case, runs, seconds, tick)
        else:
            _time_block_serial(case, runs, seconds, tick)
    finally:
        case.cpu_ns += time.process_time_ns() - cpu_start


def _time_block_serial(case: _Case, runs: int | None, seconds: float | None, tick) -> None:
    infer = case.engine.infer
    n = len(case.batches)
    i = len(case.samples_ns)
    deadline = None if seconds is None else time.perf_counter() + seconds
    done = 0
    while (runs is not None and done < runs) or (deadline is not None and time.perf_counter() < deadline):
        batch = case.batches[i % n]
        t0 = time.perf_counter_ns()
        infer(batch)
        t1 = time.perf_counter_ns()
        case.samples_ns.append(t1 - t0)
        # Outside the timed window: RSS after each run gives the peak at run granularity.
        case.rss_samples.append(_rss())
        i += 1
        done += 1
        tick(1)


def _time_block_in_flight(case: _Case, runs: int | None, seconds: float | None, tick) -> None:
    """One block with ``len(case.workers)`` calls in flight: a thread per worker takes the next run
    until ``runs`` are taken (or ``seconds`` pass); the block's wall time goes to ``case.wall_ns``."""
    lock = threading.Lock()
    n = len(case.batches)
    taken = [0, len(case.samples_ns)]  # runs taken in this block, index of the next input batch
    deadline = None if seconds is None else time.perf_counter() + seconds

    def loop(worker) -> None:
        while True:
            with lock:
                if (runs is not None and taken[0] >= runs) or (deadline is not None and time.perf_counter() >= deadline):
                    return
                taken[0] += 1
                batch = case.batches[taken[1] % n]
                taken[1] += 1
            t0 = time.perf_counter_ns()
            worker.infer(batch)
            t1 = time.perf_counter_ns()
            rss = _rss()
            with lock:
                case.samples_ns.append(t1 - t0)
                case.rss_samples.append(rss)
                tick(1)

    threads = [threading.Thread(target=loop, args=(w,), name=f"bench-stream-{i}") for i, w in enumerate(case.workers)]
    start = time.perf_counter_ns()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    case.wall_ns += time.perf_counter_ns() - start


def _result(case: _Case, cfg: EngineBenchConfig) -> dict[str, Any]:
    base = {
        "label": case.label(),
        "model": str(case.model),
        "model_file_mb": round(case.model.stat().st_size / 2**20, 3),
        "engine": case.engine_name,
        "provider_requested": case.provider,
        "threads_requested": case.threads,
        "streams_requested": case.streams,
        "fp16_requested": case.fp16,
        "precision_requested": case.precision,
        "batch": case.batch,
        "skipped": case.skipped,
    }
    if case.engine is not None:
        meta = case.engine.metadata
        base.update({
            "provider": str(case.engine.provider),
            "model_name": meta.model_name,
            "model_id": meta.model_id,
            # The file's precision, or fp16 when the engine says it runs half precision (the torch
            # engine ignores --fp16 on CPU, and its provider name says so).
            "precision": "fp16" if case.fp16 and "fp16" in str(case.engine.provider) else (
                case.engine.precision or meta.precision),
            "agreement": None if case.agreement is None else round(case.agreement, 5),
            # The reference is ORT on the --model file itself: FP32 for an FP32 file (whose INT8
            # sibling --precision int8 runs), the file's own precision for an INT8 file passed directly.
            "agreement_reference": None if case.agreement is None else f"ort-{_file_precision(case.model)}",
            "input_hw": list(meta.input_hw),
            "load_s": round(case.load_s, 4),
        })
    if case.skipped:
        return base
    samples_ms = [ns / 1e6 for ns in case.samples_ns]
    lat = summarize_ms(samples_ms)
    # Calls in flight overlap: their rate is over the wall time, not over the summed call times.
    total_s = (case.wall_ns if case.workers else sum(case.samples_ns)) / 1e9
    fps = len(samples_ms) / total_s if total_s > 0 else None
    base.update({
        "warmup_runs": cfg.warmup,
        "timed_runs": len(samples_ms),
        "timed_s": round(total_s, 4),
        "latency_ms": lat,
        "fps": fps,
        "throughput_ips": None if fps is None else fps * case.batch,
        # CPU time of the whole bench process over the timed runs, per run (100 % of a core for
        # 10 ms = 10 ms): what one inference costs the machine, which ``bench pipeline`` sets
        # against the node's CPU per frame.
        "cpu_ms_per_run": round(case.cpu_ns / 1e6 / len(samples_ms), 3) if samples_ms else None,
        "memory": {
            "rss_before_load_mb": round(case.rss_before_load / 2**20, 1),
            "rss_after_load_mb": round(case.rss_after_load / 2**20, 1),
            "rss_peak_mb": round(max(case.rss_samples) / 2**20, 1),
            "rss_load_delta_mb": round((case.rss_after_load - case.rss_before_load) / 2**20, 1),
            "gpu_peak_mb": case.gpu_peak_mb,
        },
        "samples_ms": [round(s, 4) for s in samples_ms],
    })
    return base


def _engine_reads(engine: str, model: Path) -> bool:
    suffixes = ENGINE_SUFFIXES.get(engine)
    return suffixes is None or model.suffix.lower() in suffixes


def build_cases(cfg: EngineBenchConfig, models: list[Path]) -> list[_Case]:
    """The grid, in the order it is reported (the first is the reference of every ratio)."""
    providers: list[str | None] = list(cfg.providers) or [None]
    threads: list[int | None] = list(cfg.threads) or [None]
    streams: list[int | None] = list(cfg.streams) or [None]
    return [
        _Case(model=m, engine_name=e, provider=p, threads=t, batch=b, fp16=h, precision=q, streams=s)
        for m, e, q, p, t, s, h, b in product(models, cfg.engines, cfg.precisions, providers, threads, streams, cfg.fp16,
                                              cfg.batches)
    ]


def run_engine_bench(cfg: EngineBenchConfig) -> dict[str, Any]:
    """Measure every configuration of ``cfg``; returns the ``engine`` block of the bench JSON.

    Raises ModelError for a missing model file, whatever the engine loader raises for a bad
    engine, provider or model (ConfigError, ModelError, DependencyError), and ConfigError listing
    why when every configuration is skipped (nothing would be measured).
    """
    from perception.engines import ENGINES
    from perception.progress import progress

    models = resolve_models(cfg.models)
    for name in cfg.engines:
        if name not in ENGINES and name not in ENGINE_VARIANTS:
            raise ConfigError(ENGINES.unknown_message(name))
    cases = [c for c in build_cases(cfg, models) if _engine_reads(c.engine_name, c.model)]
    for m in models:
        if not any(c.model == m for c in cases):
            raise ConfigError(f"no chosen engine ({', '.join(cfg.engines)}) reads {m.name}; "
                              "pass --engine torch for .pt checkpoints, ort or tensorrt for .onnx")
    frames_by_hw: dict[tuple[int, int], list[np.ndarray]] = {}
    loaded: dict[tuple, _Case] = {}
    try:
        for case in cases:
            key = (case.model, case.engine_name, case.provider, case.threads, case.fp16, case.precision, case.streams)
            if key in loaded:  # one loaded engine serves every batch size of its configuration
                first = loaded[key]
                case.engine, case.load_s, case.skipped = first.engine, first.load_s, first.skipped
                case.workers = first.workers
                case.rss_before_load, case.rss_after_load = first.rss_before_load, first.rss_after_load
            else:
                _load(case)
                loaded[key] = case
            if case.skipped:
                continue
            _prepare_batches(case, frames_by_hw, cfg.seed, cfg.frames)
            if not case.skipped:
                log.info("%s: engine %s, provider %s, input %s", case.label(), case.engine_name,
                         case.engine.provider, case.engine.metadata.input_hw)
        active = [c for c in cases if not c.skipped]
        if not active:
            raise ConfigError(_all_skipped_message(cases))
        _measure_agreement(active)
        runs_per_block = None if cfg.duration_s else cfg.runs // cfg.blocks
        block_s = cfg.duration_s / cfg.blocks if cfg.duration_s else None
        total = len(active) * (cfg.warmup + cfg.runs) if runs_per_block else None
        with progress(total=total, desc="engine bench", unit="run", disable=not cfg.progress, file=sys.stderr) as bar:
            for case in active:
                bar.set_postfix_str(f"warm-up {case.label()}")
                for i in range(cfg.warmup):
                    # with streams, the runs go round the workers (each request's first run allocates)
                    infer = case.workers[i % len(case.workers)].infer if case.workers else case.engine.infer
                    infer(case.batches[i % len(case.batches)])
                    bar.update(1)
            for block in range(cfg.blocks):
                for case in active:
                    bar.set_postfix_str(f"block {block + 1}/{cfg.blocks} {case.label()}")
                    runs = runs_per_block
                    if runs is not None and block == cfg.blocks - 1:
                        runs = cfg.runs - len(case.samples_ns)  # the last block takes the remainder
                    _time_block(case, runs, block_s, bar.update)
                    case.gpu_peak_mb = _max_or_none(case.gpu_peak_mb, gpu_memory_mb())
    finally:
        for case in loaded.values():
            if case.engine is not None:
                case.engine.close()
    results = [_result(c, cfg) for c in cases]
    first = next((r for r in results if not r.get("skipped")), None)
    for r in results:
        if r.get("skipped") or first is None:
            continue
        r["ratio_to_first"] = {
            "fps": ratio(r["fps"], first["fps"]),
            "throughput_ips": ratio(r["throughput_ips"], first["throughput_ips"]),
            "p50_ms": ratio(r["latency_ms"]["p50"], first["latency_ms"]["p50"]),
            "p99_ms": ratio(r["latency_ms"]["p99"], first["latency_ms"]["p99"]),
        }
    return {
        "settings": {
            **{k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("models", "progress")},
            "models": [str(m) for m in models],
            "runs_per_block": runs_per_block,
            "block_s": block_s,
            "interleaved": len(active) > 1,
            "frames_from": frames_description(cfg.frames, cfg.seed),
        },
        "process_peak_rss_mb": round(_max_rss_bytes() / 2**20, 1),
        "results": results,
    }


def _file_precision(model: Path) -> str:
    from perception.modelfile import read_model_metadata

    return read_model_metadata(model).precision


def _measure_agreement(cases: list[_Case]) -> None:
    """Each case's class-id agreement with ONNX Runtime FP32 on its own frames (outside the timing).

    The reference is loaded once per model file (ONNX files only; a checkpoint or serialized
    engine has no ORT reference and gets None).
    """
    references: dict[Path, Any] = {}
    expected: dict[tuple[Path, int], list[np.ndarray]] = {}
    try:
        for case in cases:
            if case.model.suffix.lower() != ".onnx":
                continue
            if case.model not in references:
                references[case.model] = open_engine(case.model, "ort", "cpu", case.threads)
            key = (case.model, case.batch)
            if key not in expected:
                expected[key] = [references[case.model].infer(b)["class_ids"] for b in case.batches]
            got = [case.engine.infer(b)["class_ids"] for b in case.batches]
            case.agreement = float(np.mean([np.mean(g == e) for g, e in zip(got, expected[key], strict=True)]))
    finally:
        for ref in references.values():
            ref.close()


def _all_skipped_message(cases: list[_Case]) -> str:
    """One line: each reason for skipping, with the configurations it hit."""
    by_reason: dict[str, list[str]] = {}
    for case in cases:
        by_reason.setdefault(case.skipped or "", []).append(case.label())
    reasons = "; ".join(f"{reason} ({', '.join(labels)})" for reason, labels in by_reason.items())
    which = "the one configuration was" if len(cases) == 1 else f"all {len(cases)} configurations were"
    return f"{which} skipped, nothing was measured: {reasons}"


def _max_or_none(a: float | None, b: float | None) -> float | None:
    vals = [v for v in (a, b) if v is not None]
    return max(vals) if vals else None


def _max_rss_bytes() -> int:
    # ru_maxrss is the process's lifetime peak; KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
