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

This module builds the grid and reports it; ``cases.py`` loads each configuration, its input batches
and its agreement, ``timing.py`` times its blocks.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
import sys
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any, Literal

import numpy as np

from perception.bench.cases import (
    ENGINE_VARIANTS,
    FRAME_POOL,
    Case,
    available_memory_bytes,
    case_key,
    check_batch_memory,
    engine_bytes_per_image,
    file_precision,
    guarded,
    load_case,
    measure_agreement,
    model_names,
    peak_rss_before_resets,
    prepare_batches,
)
from perception.bench.contention import CpuWindow, combine, contention_warning
from perception.bench.env import gpu_memory_mb, load_average_1m
from perception.bench.stats import few_samples, ratio, summarize_ms
from perception.bench.timing import time_block
from perception.config import listed_setting, same_setting, setting
from perception.errors import ConfigError, ModelError, why_not_a_file
from perception.frames import SOURCE_FRAME_STRIDE, bench_frames, frames_description
from perception.modelfile import check_model_path
from perception.modelfile_kind import openvino_ir_line
from perception.options import EngineName, EngineOptions, PrecisionName, ProviderName
from perception.run_config import DEFAULT_MODEL, RunConfig

log = logging.getLogger(__name__)


class EngineBenchInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM / SIGHUP) once every configuration had finished at least one timed block:
    ``engine`` is the bench's ``engine`` block made of the first ``blocks_done`` blocks of every
    configuration (``engine["interrupted"]`` says so). A caller that does not keep it (the pipeline
    bench's engine-only run) sees a plain KeyboardInterrupt."""

    def __init__(self, engine: dict[str, Any], blocks_done: int, blocks: int) -> None:
        super().__init__(f"interrupted after block {blocks_done} of {blocks}")
        self.engine, self.blocks_done, self.blocks = engine, blocks_done, blocks
        self.results: dict[str, Any] | None = None  # the whole bench JSON, once the command has added its head


@dataclass
class _Blocks:
    """One configuration's timed blocks: what its counters held after each, and the 1-minute load
    average before and after each (``load_average_1m``)."""

    ends: list[tuple[int, int, int, int]] = dataclasses.field(default_factory=list)  # samples, rss, wall, cpu
    loads: list[list[float | None]] = dataclasses.field(default_factory=list)
    #: Each block's CPU figures (``bench/contention.py``): other processes' cores, steal, its own.
    cpu: list[dict[str, Any] | None] = dataclasses.field(default_factory=list)

    def keep(self, case: Case, done: int) -> None:
        """Cut ``case`` back to its first ``done`` blocks (a block cut short by Ctrl-C is dropped)."""
        samples, rss_n, wall, cpu = self.ends[done - 1]
        del case.samples_ns[samples:], case.rss_samples[rss_n:]
        case.wall_ns, case.cpu_ns = wall, cpu
        del self.ends[done:], self.loads[done:], self.cpu[done:]


#: Model files each engine reads; other pairings of the grid are left out, so that
#: ``--model a.onnx --model a.pt --engine ort,torch`` compares ORT on the ONNX file with torch on the
#: checkpoint without trying ORT on a checkpoint.
ENGINE_SUFFIXES = {"ort": (".onnx",), "openvino": (".onnx",), "auto": (".onnx",),
                   "tensorrt": (".onnx", ".engine", ".plan"), "torch": (".pt", ".pth"),
                   "torch-tensorrt": (".pt", ".pth")}

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
    engines: list[BenchEngineName] = listed_setting(
        RunConfig, "engine", default=("ort",), group=None,
        help="inference backend (auto: probe once, run the fastest verified); torch-tensorrt, of this bench only, is "
             "perception run's --engine torch --compile tensorrt (a .pt checkpoint on CUDA), as a row of its own")
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
    seed: int = setting(0, lo=0, help="seed of the synthetic input frames")
    frames: str = setting("", metavar="SPEC",
                          help="the input and agreement frames, letterboxed as the node does: a dataset spec (its val "
                               "images, e.g. camvid:PATH) or a --source (a video file or image folder; every "
                               f"{SOURCE_FRAME_STRIDE}th frame); default: synthetic road scenes. A model trained on other "
                               "roads is unsure on synthetic ones, so its agreement reads low there")
    progress: bool = setting(True, help="no progress bar")

    def __post_init__(self) -> None:
        # Ranges and choices are declared above (checked by load_config for the flags); this is
        # the one check that joins two settings. A missing model is said first: it is what a user
        # fixes first (a --runs line, then the missing file, took two tries).
        for m in self.models:
            if why_not_a_file(Path(m)) == "not found":
                raise ModelError(f"model file {m} not found; check the --model path")
        if self.duration_s is None and self.runs < self.blocks:
            raise ValueError(f"runs={self.runs} is fewer than blocks={self.blocks}; give more runs or fewer blocks")
        in_flight = max(self.streams, default=1)
        if self.duration_s is None and self.runs // self.blocks < in_flight:
            # A block of fewer runs than --streams never has that many calls in flight, yet each
            # worker still runs on --threads / N: the row would measure fewer streams than it says.
            per_block = self.runs // self.blocks
            fewer_blocks = f", or --blocks {self.runs // in_flight} or fewer" if self.runs >= in_flight else ""
            raise ValueError(
                f"runs={self.runs} in blocks={self.blocks} is {per_block} run{'s' if per_block > 1 else ''} a block, "
                f"fewer than the streams={in_flight} calls kept in flight; give --runs {self.blocks * in_flight} "
                f"or more{fewer_blocks}")


def resolve_models(models: list[Path]) -> list[Path]:
    """The model files to measure: the given ones, or the shipped default.

    Raises:
        ModelError: a file that is missing, or that every reader refuses (``check_model_path``'s
            line: a folder, a FIFO or device, a symbolic link loop, no permission).
        ConfigError: the same file given twice (two rows of one file under one label).
    """
    if not models:
        if not DEFAULT_MODEL.is_file():
            raise ModelError(
                f"no --model given and the shipped default model {DEFAULT_MODEL} is missing; "
                "pass --model path/to/model.onnx"
            )
        return [DEFAULT_MODEL]
    seen: dict[Path, Path] = {}
    for m in map(Path, models):
        if why_not_a_file(m) == "not found":
            raise ModelError(f"model file {m} not found; check the --model path")
        check_model_path(m)  # every reader's line: a directory, a FIFO, a link loop, no permission
        same = seen.setdefault(m.resolve(), m)
        if same is not m:
            twice = f"--model {m} is given twice" if same == m else f"--model {m} names the same file as --model {same}"
            raise ConfigError(f"{twice}; give each model file once (--engine, --precision and the other lists "
                              "make the rows of one file)")
    return [Path(m) for m in models]


def no_engine_reads(model: Path, engines: list[str]) -> str:
    """Why no chosen engine runs ``model``, and which would (``ENGINE_SUFFIXES``)."""
    if model.suffix.lower() in (".xml", ".bin"):
        return openvino_ir_line(model)  # every command's words for an IR (run, inspect, eval)
    return (f"no chosen engine ({', '.join(engines)}) reads {model.name}; pass --engine torch for .pt checkpoints, "
            "ort, openvino, auto or tensorrt for .onnx, tensorrt for .engine and .plan")


def warn_threads_over_cores(threads: list[int]) -> str | None:
    """One warning when a ``--threads`` value is more than the cores this process may run on: those
    rows time threads taking turns on the cores, far slower than the node runs (``engines.base``'s
    helper, which ``perception run`` warns with too)."""
    from perception.cgroups import quota_note
    from perception.engines.base import usable_cores

    cores = usable_cores()
    over = [t for t in threads if t > cores]
    if not over:
        return None
    text = (f"--threads {','.join(map(str, over))}: more than the {cores} CPU cores this process may use{quota_note()}; those "
            f"rows time threads taking turns on the cores (slower than --threads {cores})")
    log.warning("%s", text)
    return text


def _file_ran(case: Case) -> Path:
    """The file ``case`` runs: the engine's (``MODEL.int8.onnx`` for ``--precision int8``), else the ``--model`` file."""
    ran = getattr(case.engine, "model_path", None) if case.engine is not None else None
    return Path(ran) if ran else case.model


def _result(case: Case, cfg: EngineBenchConfig, blocks: _Blocks | None = None) -> dict[str, Any]:
    ran = _file_ran(case)
    size = ran.stat().st_size
    base = {
        "label": case.label(),
        "model": str(case.model),
        "model_tag": case.name or case.model.stem,
        # The file this row runs, in MB of 10^6 bytes as `perception inspect` gives it.
        "model_file": str(ran),
        "model_file_bytes": size,
        "model_file_mb": round(size / 1e6, 3),
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
            "agreement_reference": None if case.agreement is None else f"ort-{file_precision(case.model)}",
            # Why an ONNX file has no agreement: its ONNX Runtime reference could not run it.
            "agreement_skipped": case.agreement_skipped,
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
        "timed_s": round(total_s, 6),
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
    if blocks is not None and blocks.ends:
        base.update(_block_figures(samples_ms, blocks))
    return base


def _block_figures(samples_ms: list[float], blocks: _Blocks) -> dict[str, Any]:
    """The spread between one configuration's blocks: its runs and median (p50) per block, their
    largest / smallest median (``block_p50_spread``: 1.0 when the blocks agree, 2.4 when the machine
    ran one block at less than half the speed of another), and the load average around each block."""
    starts = [0, *(end[0] for end in blocks.ends[:-1])]
    runs = [end[0] - start for start, end in zip(starts, blocks.ends, strict=True)]
    medians = [round(float(np.median(samples_ms[start:start + n])), 4) for start, n in zip(starts, runs, strict=True)
               if n]
    return {
        "block_runs": runs,
        "block_p50_ms": medians,
        "block_p50_spread": round(max(medians) / min(medians), 3) if medians and min(medians) > 0 else None,
        "block_load_1m": blocks.loads,
    }


def _engine_reads(engine: str, model: Path) -> bool:
    suffixes = ENGINE_SUFFIXES.get(engine)
    return suffixes is None or model.suffix.lower() in suffixes


def build_cases(cfg: EngineBenchConfig, models: list[Path]) -> list[Case]:
    """The grid, in the order it is reported (the first is the reference of every ratio)."""
    providers: list[str | None] = list(cfg.providers) or [None]
    threads: list[int | None] = list(cfg.threads) or [None]
    streams: list[int | None] = list(cfg.streams) or [None]
    names = model_names(models)
    return [
        Case(model=m, engine_name=e, provider=p, threads=t, batch=b, fp16=h, precision=q, streams=s, name=names[m])
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
            raise ConfigError(no_engine_reads(m, cfg.engines))
    warnings = [w for w in [warn_threads_over_cores(cfg.threads)] if w]
    frames_by_hw: dict[tuple[int, int], list[np.ndarray]] = {}
    loaded: dict[tuple, Case] = {}
    try:
        for case in cases:
            key = case_key(case)
            if key in loaded:  # one loaded engine serves every batch size of its configuration
                first = loaded[key]
                case.engine, case.load_s, case.skipped = first.engine, first.load_s, first.skipped
                case.workers = first.workers
                case.rss_before_load, case.rss_after_load = first.rss_before_load, first.rss_after_load
            else:
                load_case(case)
                loaded[key] = case
        _check_memory(cases, frames_by_hw, cfg)
        for case in cases:
            if case.skipped:
                continue
            prepare_batches(case, frames_by_hw, cfg.seed, cfg.frames)
            if not case.skipped:
                log.info("%s: engine %s, provider %s, input %s", case.label(), case.engine_name,
                         case.engine.provider, case.engine.metadata.input_hw)
        active = [c for c in cases if not c.skipped]
        if not active:
            raise ConfigError(_all_skipped_message(cases))
        measure_agreement(active)
        warn_low_agreement(active)
        runs_per_block = None if cfg.duration_s else cfg.runs // cfg.blocks
        block_s = cfg.duration_s / cfg.blocks if cfg.duration_s else None
        total = len(active) * (cfg.warmup + cfg.runs) if runs_per_block else None
        blocks = {id(case): _Blocks() for case in active}
        with progress(total=total, desc="engine bench", unit="run", disable=not cfg.progress, file=sys.stderr) as bar:
            for case in active:
                bar.set_postfix_str(f"warm-up {case.label()}")
                for i in range(cfg.warmup):
                    # with streams, the runs go round the workers (each request's first run allocates)
                    infer = case.workers[i % len(case.workers)].infer if case.workers else case.engine.infer
                    guarded(case, "in its warm-up", infer, case.batches[i % len(case.batches)])
                    bar.update(1)
            try:
                for block in range(cfg.blocks):
                    for case in active:
                        bar.set_postfix_str(f"block {block + 1}/{cfg.blocks} {case.label()}")
                        runs = runs_per_block
                        if runs is not None and block == cfg.blocks - 1:
                            runs = cfg.runs - len(case.samples_ns)  # the last block takes the remainder
                        before = load_average_1m()
                        window = CpuWindow().start()
                        # outside the timed calls: a backend's error is one line naming the configuration
                        guarded(case, f"in timed block {block + 1}", time_block, case, runs, block_s, bar.update)
                        done = blocks[id(case)]
                        done.cpu.append(window.stop())
                        done.ends.append((len(case.samples_ns), len(case.rss_samples), case.wall_ns, case.cpu_ns))
                        done.loads.append([before, load_average_1m()])
                        case.gpu_peak_mb = _max_or_none(case.gpu_peak_mb, gpu_memory_mb())
                blocks_done = cfg.blocks
            except KeyboardInterrupt:
                # Keep the blocks that every configuration finished (rows made of the same blocks stay
                # comparable); before the first such block there is nothing to keep.
                blocks_done = min(len(b.ends) for b in blocks.values())
                if blocks_done == 0:
                    raise
                for case in active:
                    blocks[id(case)].keep(case, blocks_done)
    finally:
        for case in loaded.values():
            if case.engine is not None:
                case.engine.close()
    results = [_result(c, cfg, blocks.get(id(c))) for c in cases]
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
    engine = {
        "settings": {
            **{k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("models", "progress")},
            "models": [str(m) for m in models],
            "runs_per_block": runs_per_block,
            "block_s": block_s,
            "interleaved": len(active) > 1,
            "frames_from": frames_description(cfg.frames, cfg.seed),
        },
        "process_peak_rss_mb": round(_max_rss_bytes() / 2**20, 1),
        "load_average_1m_end": load_average_1m(),
        "results": results,
        # Said in the JSON, so that the report (and ``bench report`` later) carries them.
        "warnings": warnings + contention_warnings(cases, results, blocks),
    }
    if blocks_done < cfg.blocks:
        engine["interrupted"] = {"blocks_done": blocks_done, "blocks": cfg.blocks}
        raise EngineBenchInterrupted(engine, blocks_done, cfg.blocks)
    return engine


def contention_warnings(cases: list[Case], results: list[dict[str, Any]], blocks: dict[int, _Blocks]) -> list[str]:
    """Each row's blocks' CPU figures together (``contention.combine``) as ``row["contention"]``, and one
    warning per row whose blocks other work competed with for the cores it asked for
    (``contention_warning``), and per row of fewer than ``MIN_SAMPLES`` timed calls."""
    warnings = []
    for i, (case, row) in enumerate(zip(cases, results, strict=True), start=1):
        done = blocks.get(id(case))
        if row.get("skipped") or done is None:
            continue
        busiest = combine(done.cpu)  # its blocks together
        row["contention"] = busiest
        few = few_samples(row["latency_ms"].get("count"), f"#{i} {row['label']}", "timed calls", "--duration, --runs")
        if few:
            warnings.append(few)
        text = contention_warning(busiest, wanted_cores=case.threads, what=f"#{i} {case.label()}")
        if text:
            warnings.append(text)
            log.warning("%s", text)
    return warnings


def warn_low_agreement(cases: list[Case]) -> None:
    """One warning line for each configuration whose class ids agree with its reference less than
    ``--engine auto`` asks of it: ``MIN_AGREEMENT`` of a float run, ``int8_min_agreement`` (its
    gate's agreement less the margin) of an INT8 one. Its row is timed all the same."""
    from perception.engines.probe import MIN_AGREEMENT, int8_min_agreement

    for case in cases:
        if case.agreement is None or case.engine is None:
            continue
        meta = case.engine.metadata
        int8 = (case.engine.precision or meta.precision) == "int8"
        gate = meta.val_metrics.get("int8_gate") if int8 else None
        need = int8_min_agreement(gate) if int8 else MIN_AGREEMENT
        if case.agreement >= need:
            continue
        if need < MIN_AGREEMENT:  # from a passed gate: its agreement, less the margin
            images = gate.get("images")
            what = (f"this INT8 file (its gate's {100 * gate['agreement_with_fp32']:.2f} % on {images} image"
                    f"{'s' * (images != 1)}, less the margin): its masks differ from FP32 more than its gate measured")
        else:
            what = ("an INT8 file without a passed gate" if int8 else "a float engine") + ", so it would not choose it"
        log.warning("%s: class ids agree only %.2f %% with ort-%s on these frames, under the %.2f %% --engine auto "
                    "asks of %s (frames unlike the model's data read low: --frames SPEC)", case.label(),
                    100 * case.agreement, file_precision(case.model), 100 * need, what)


def _check_memory(cases: list[Case], frames_by_hw: dict[tuple[int, int], list[np.ndarray]],
                  cfg: EngineBenchConfig) -> None:
    """Refuse (ConfigError naming the largest batch that fits) a grid whose batches would take more
    memory than there is, before any batch is allocated: ``--batch 1024`` is in range and would
    otherwise be OOM-killed minutes in. Each engine's memory per image is measured on a batch of 1."""
    batched = [c for c in cases if not c.skipped and c.batch > 1 and c.engine.metadata.dynamic_batch]
    if not batched:
        return
    per_image: dict[tuple, int] = {}
    for case in batched:
        key = case_key(case)
        if key not in per_image:
            hw = (int(case.engine.metadata.input_hw[0]), int(case.engine.metadata.input_hw[1]))
            if hw not in frames_by_hw:
                frames_by_hw[hw] = bench_frames(hw, FRAME_POOL, cfg.seed, cfg.frames)
            per_image[key] = guarded(case, "measuring its memory per image", engine_bytes_per_image, case,
                                     frames_by_hw[hw][0])
    check_batch_memory(batched, per_image, available_memory_bytes())


def _all_skipped_message(cases: list[Case]) -> str:
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
    peak = peak if sys.platform == "darwin" else peak * 1024
    return max(peak, peak_rss_before_resets())  # the memory probe's resets lower ru_maxrss on Linux
