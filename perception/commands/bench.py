"""``perception bench``: measure engine and pipeline FPS and latency and write a report.

    perception bench engine --model a.onnx [--model b.onnx] [--engine ort,torch] [--provider ...]
                            [--threads 1,2] [--batch 1,4] [--runs 200 --warmup 20] [--out out/bench]
    perception bench pipeline --model m.onnx --source synthetic --duration 10 [--baseline] [--out ...]
    perception bench pipeline --cameras 2 --source clip.mp4 --loop --fps 30   # one node vs 2 nodes
    perception bench report out/bench/bench.json

Each writes ``bench.json`` (every figure and the environment), ``bench.md`` (tables made from the
JSON) and PNG plots into ``--out``. The library code lives in the ``bench`` package; see
bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from perception.errors import ConfigError


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,4, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _str_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _flatten(groups: list[list] | None) -> list:
    return [v for group in groups or [] for v in group]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_mode", metavar="MODE", required=True)

    eng = sub.add_parser("engine", help="time Engine.infer per model x engine x provider x threads x batch")
    eng.add_argument("--model", action="append", type=Path, default=[],
                     help="ONNX model (or checkpoint for --engine torch); repeat for side by side "
                          "(default: the shipped perception/assets/default.onnx)")
    eng.add_argument("--engine", action="append", type=_str_list, default=None,
                     help="engine(s), comma-separated or repeated: ort, openvino, auto, torch, tensorrt (default: ort)")
    eng.add_argument("--precision", action="append", type=_str_list, default=None,
                     help="precision(s) of each engine: fp32, bf16 (openvino), int8 (the MODEL.int8.onnx sibling); "
                          "pairings an engine lacks are reported as skipped (default: the model file's own)")
    eng.add_argument("--provider", action="append", type=_str_list, default=None,
                     help="ONNX Runtime provider(s), e.g. cpu,cuda (default: the engine's choice)")
    eng.add_argument("--threads", type=_int_list, default=None,
                     help="intra-op thread counts to compare, e.g. 1,2 (default: the engine's choice)")
    eng.add_argument("--batch", type=_int_list, default=[1], help="batch sizes, e.g. 1,4 (default: 1)")
    eng.add_argument("--fp16", choices=("no", "yes", "both"), default="no",
                     help="half precision (torch engine on CUDA): no, yes, or both side by side (default: no)")
    eng.add_argument("--runs", type=int, default=200, help="timed runs per configuration (default: 200)")
    eng.add_argument("--warmup", type=int, default=20, help="untimed warm-up runs per configuration (default: 20)")
    eng.add_argument("--duration", type=float, default=None,
                     help="seconds of timed runs per configuration instead of --runs")
    eng.add_argument("--blocks", type=int, default=5,
                     help="round-robin blocks the runs are split into, so drift hits every configuration alike")
    eng.add_argument("--seed", type=int, default=0, help="seed of the synthetic input frames")
    _add_common(eng)

    pipe = sub.add_parser("pipeline", help="run the node on a source and measure it from a subscriber")
    pipe.add_argument("--model", type=Path, default=None,
                      help="ONNX model (default: the shipped perception/assets/default.onnx)")
    pipe.add_argument("--source", default="synthetic", help="frame source: synthetic or a video file")
    pipe.add_argument("--duration", type=float, default=10.0, help="seconds to measure (default: 10)")
    pipe.add_argument("--fps", type=float, default=None,
                      help="source rate in frames/s, 0.1-1000 (default: the source's own, 30 for synthetic; "
                           "files are not paced)")
    pipe.add_argument("--width", type=int, default=None, help="synthetic source width")
    pipe.add_argument("--height", type=int, default=None, help="synthetic source height")
    pipe.add_argument("--engine", default="ort", help="engine: ort, openvino, auto, torch, tensorrt (default: ort)")
    pipe.add_argument("--precision", default=None, help="engine precision: fp32, bf16, int8 (default: the model's own)")
    pipe.add_argument("--peak-rate", action="store_true",
                      help="also find the highest synthetic-camera rate the node holds with < 1 %% drops "
                           "(several node runs of --duration each)")
    pipe.add_argument("--provider", default=None, help="ONNX Runtime provider (default: the engine's choice)")
    pipe.add_argument("--threads", type=int, default=None, help="engine intra-op threads")
    pipe.add_argument("--baseline", action="store_true",
                      help="also time a naive one-thread serial loop on the same model and source")
    pipe.add_argument("--engine-runs", type=int, default=100,
                      help="engine-only runs for the pipeline/engine FPS ratio (0 to skip; default: 100)")
    pipe.add_argument("--cameras", type=int, default=1, metavar="N",
                      help="compare one node batching N cameras (each reading --source) with N separate "
                           "nodes, in one run (default: 1, the single-node bench)")
    pipe.add_argument("--batch-timeout-ms", type=float, default=None, metavar="MS",
                      help="--cameras: the node's batch timeout (default: the node's own, 20)")
    pipe.add_argument("--rounds", type=int, default=1,
                      help="--cameras: alternate one node and N nodes this many times each (default: 1)")
    pipe.add_argument("--loop", action="store_true", help="restart a file source at its end")
    _add_common(pipe)

    rep = sub.add_parser("report", help="regenerate bench.md and the plots from a bench.json")
    rep.add_argument("results", type=Path, help="bench.json written by 'perception bench engine|pipeline'")
    rep.add_argument("--out", type=Path, default=None, help="output folder (default: next to the JSON)")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out/bench"), help="output folder (default: out/bench)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from perception.bench import report

    if args.bench_mode == "report":
        results = report.load_results(args.results)
        written = report.write_report(results, _prepare_out(args.out or args.results.parent))
        _print_written(written)
        return 0
    argv = sys.argv[1:]
    # Under 'python -m perception.bench' the argv lacks the 'bench' word; under 'perception' it has it.
    rest = argv[argv.index("bench") + 1:] if "bench" in argv else argv
    command = "perception bench " + " ".join(shlex.quote(a) for a in rest)
    _prepare_out(args.out)
    if args.bench_mode == "engine":
        results = _run_engine(args, command)
    else:
        results = _run_pipeline(args, command)
    path = report.write_results(results, args.out)
    written = report.write_report(results, args.out)
    print(report.summary_text(results))
    _print_written({"json": path, **written})
    return 0


def _prepare_out(out: Path) -> Path:
    """Create the --out folder before measuring, so a typo costs seconds, not a whole benchmark."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for bench.json, bench.md and the plots")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create --out folder {out} ({exc.strerror}); choose a writable path") from None
    return out


def _run_engine(args: argparse.Namespace, command: str) -> dict:
    from perception.bench.engine import EngineBenchConfig, run_engine_bench
    from perception.bench.report import new_results
    from perception.config import load_config

    cfg = load_config(EngineBenchConfig, {
        "models": [str(m) for m in args.model],
        "engines": _flatten(args.engine) or ["ort"],
        "providers": _flatten(args.provider),
        "threads": args.threads or [],
        "batches": args.batch,
        "fp16": {"no": [False], "yes": [True], "both": [False, True]}[args.fp16],
        "precisions": _flatten(args.precision) or ["auto"],
        "runs": args.runs,
        "warmup": args.warmup,
        "duration_s": args.duration,
        "blocks": args.blocks,
        "seed": args.seed,
        "progress": not args.no_progress,
    }, source="perception bench engine")
    results = new_results("engine", command)
    results["engine"] = run_engine_bench(cfg)
    return results


def _run_pipeline(args: argparse.Namespace, command: str) -> dict:
    from perception.bench.pipeline import PipelineBenchConfig, run_pipeline_bench
    from perception.config import load_config

    if args.duration <= 0:
        raise ConfigError(f"--duration {args.duration} must be > 0 seconds")
    cfg = load_config(PipelineBenchConfig, {
        "model": None if args.model is None else str(args.model),
        "source": args.source,
        "duration_s": args.duration,
        "fps": args.fps,
        "width": args.width,
        "height": args.height,
        "engine": args.engine,
        "provider": args.provider,
        "threads": args.threads,
        "precision": args.precision,
        "baseline": args.baseline,
        "peak_rate": args.peak_rate,
        "engine_runs": args.engine_runs,
        "progress": not args.no_progress,
        "cameras": args.cameras,
        "rounds": args.rounds,
        "batch_timeout_ms": args.batch_timeout_ms,
        "loop": args.loop,
    }, source="perception bench pipeline")
    return run_pipeline_bench(cfg, command=command)


def _print_written(written: dict[str, Path]) -> None:
    for path in written.values():
        print(f"wrote {path}")
