"""``perception bench``: measure engine and pipeline FPS and latency and write a report.

    perception bench engine --model a.onnx [--model b.onnx] [--engine ort,torch] [--provider ...]
                            [--threads 1,2] [--batch 1,4] [--runs 200 --warmup 20] [--out out/bench]
    perception bench pipeline --model m.onnx --source synthetic --duration 10 [--baseline] [--out ...]
    perception bench pipeline --cameras 2 --source clip.mp4 --loop --fps 30   # one node vs 2 nodes
    perception bench probe [MODEL] --threads 2 --frames camvid:/data/camvid   # --engine auto's verdict, now
    perception bench report out/bench/perception.bench.json

Each writes ``perception.bench.json`` (every figure and the environment), ``perception.bench.md`` (tables made from the
JSON) and PNG plots into ``--out``. The library code lives in the ``bench`` package; see
bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from perception.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The engine and pipeline flags are generated from the bench configs' declarations; the
    # settings they share with 'perception run' (--engine, --precision, --provider, --threads,
    # --warmup, --fps, --width, --height, --loop, --batch-timeout-ms) are run's declarations, with
    # run's ranges, help and messages (the engine bench's as comma lists: --threads 1,2).
    from perception.bench.engine import EngineBenchConfig
    from perception.bench.pipeline import PipelineBenchConfig
    from perception.flags import add_flags

    sub = parser.add_subparsers(dest="bench_mode", metavar="MODE", required=True)

    eng = sub.add_parser("engine", help="time Engine.infer per model x engine x provider x threads x batch",
                         description="Time one Engine.infer call per model x engine x precision x provider x threads "
                                     "x streams x batch, on synthetic or dataset frames; writes JSON, Markdown and "
                                     "plots to --out.")
    add_flags(eng, EngineBenchConfig)
    _add_out(eng)

    pipe = sub.add_parser("pipeline", help="run the node on a source and measure it from a subscriber",
                          description="Run the node ('perception run') on a source and measure its FPS, latency "
                                      "and drops from a subscriber (optionally against a serial baseline, or one "
                                      "node per camera against one for all); writes JSON, Markdown and plots to "
                                      "--out.")
    add_flags(pipe, PipelineBenchConfig)
    _add_out(pipe)

    probe = sub.add_parser("probe", help="run --engine auto's probe now, on your frames, and cache its verdict "
                                         "for the node",
                           description="Run the probe of 'perception run --engine auto' now, on your frames, and "
                                       "cache its verdict (the fastest engine and precision here whose answers agree "
                                       "with FP32) for the node's next start.")
    from perception.engines.auto import add_probe_arguments

    add_probe_arguments(probe)

    rep = sub.add_parser("report", help="regenerate perception.bench.md and the plots from a perception.bench.json",
                         description="Regenerate perception.bench.md and the plots from a perception.bench.json "
                                     "(after an edit, or on another machine).")
    rep.add_argument("results", type=Path, help="perception.bench.json written by 'perception bench engine|pipeline', or its folder")
    rep.add_argument("--out", type=Path, default=None, help="output folder (default: next to the JSON)")


def _add_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out/bench"), help="output folder (default: out/bench)")


def main(args: argparse.Namespace) -> int:
    from perception.bench import report

    if args.bench_mode == "probe":
        return _probe(args)
    if args.bench_mode == "report":
        results = report.load_results(args.results)
        folder = args.results if args.results.is_dir() else args.results.parent
        written = report.write_report(results, _prepare_out(args.out or folder))
        _print_written(written)
        return 0
    argv = sys.argv[1:]
    # Under 'python -m perception.bench' the argv lacks the 'bench' word; under 'perception' it has it.
    rest = argv[argv.index("bench") + 1:] if "bench" in argv else argv
    command = "perception bench " + " ".join(shlex.quote(a) for a in rest)
    from perception.sinks import missing_folders, remove_empty_folders

    created = missing_folders(args.out)
    _prepare_out(args.out)
    try:
        if args.bench_mode == "engine":
            results = _run_engine(args, command)
        else:
            results = _run_pipeline(args, command)
    except BaseException:
        remove_empty_folders(created)  # a bench that measured nothing leaves no empty --out behind
        raise
    path = report.write_results(results, args.out)
    written = report.write_report(results, args.out)
    print(report.summary_text(results))
    _print_written({"json": path, **written})
    return 0


def _probe(args: argparse.Namespace) -> int:
    """``bench probe``: the verdict, cached for the node. The cache folder is checked first (its
    whole point is that cache; a probe takes seconds to minutes), and "cached" is said only when
    the verdict's file is there."""
    from perception.engines.auto import key_digest, probe_cache_dir, probe_now
    from perception.engines.probe import describe
    from perception.options import MAX_THREADS

    if not 0 <= args.threads <= MAX_THREADS:  # worded as run's (and the bench's other flags') range errors
        raise ConfigError(f"perception bench probe: threads={args.threads} is out of range [0, {MAX_THREADS}] "
                          f"(--threads {args.threads})")
    cache_dir = args.cache_dir or probe_cache_dir()
    _check_cache_dir(cache_dir, named=args.cache_dir is not None)
    selection = probe_now(args.model, threads=args.threads, precision=args.precision, frames=args.frames,
                          cache_dir=cache_dir)
    text = describe(selection, args.model, args.threads, cache_dir)
    cached = cache_dir / f"{key_digest(selection.key)}.json"
    if not cached.is_file():  # written after the check above, so this is rare: a full disk, a folder removed
        print("\n".join(line for line in text.splitlines() if not line.lstrip().startswith("cached for ")))
        raise ConfigError(f"the verdict was not cached: cannot write {cached}; 'perception run --engine auto' will "
                          "probe again at its next start")
    print(text)
    return 0


def _check_cache_dir(cache_dir: Path, *, named: bool) -> None:
    """ConfigError (one line) when the probe cache folder cannot be created or written."""
    import os
    import tempfile

    from perception.errors import file_in_the_way

    what = f"--cache-dir {cache_dir}" if named else (
        f"the probe cache folder {cache_dir}" + (" (PERCEPTION_PROBE_CACHE)" if os.environ.get("PERCEPTION_PROBE_CACHE") else ""))
    blocker = file_in_the_way(cache_dir)
    if blocker:
        raise ConfigError(f"cannot use {what}: {blocker}; give --cache-dir a writable folder")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache_dir):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write {what} ({exc.strerror}); give --cache-dir a writable folder") from None


def _prepare_out(out: Path) -> Path:
    """Create the --out folder before measuring, so a typo costs seconds, not a whole benchmark."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for perception.bench.json, perception.bench.md and the plots")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create --out folder {out} ({exc.strerror}); choose a writable path") from None
    return out


def _run_engine(args: argparse.Namespace, command: str) -> dict:
    from perception.bench.engine import EngineBenchConfig, run_engine_bench
    from perception.bench.report import new_results
    from perception.flags import config_from_flags

    cfg = config_from_flags(EngineBenchConfig, args, source="perception bench engine")
    results = new_results("engine", command)
    results["engine"] = run_engine_bench(cfg)
    return results


def _run_pipeline(args: argparse.Namespace, command: str) -> dict:
    from perception.bench.pipeline import PipelineBenchConfig, run_pipeline_bench
    from perception.flags import config_from_flags

    cfg = config_from_flags(PipelineBenchConfig, args, source="perception bench pipeline")
    return run_pipeline_bench(cfg, command=command)


def _print_written(written: dict[str, Path]) -> None:
    for path in written.values():
        print(f"wrote {path}")
