"""``perception bench``: measure engine and pipeline FPS and latency and write a report.

    perception bench engine --model a.onnx [--model b.onnx] [--engine ort,torch] [--provider ...]
                            [--threads 1,2] [--batch 1,4] [--runs 200 --warmup 20] [--out out/bench]
    perception bench pipeline --model m.onnx --source synthetic --duration 10 [--baseline] [--out ...]
    perception bench pipeline --cameras 2 --source clip.mp4 --loop --fps 30   # one node vs 2 nodes
    perception bench probe [MODEL] --threads 2 --frames camvid:/data/camvid   # --engine auto's verdict, now
    perception bench report out/bench/perception.bench.json

Each writes ``perception.bench.json`` (every figure and the environment), ``perception.bench.md`` (tables made from the
JSON) and PNG plots into ``--out``. The default ``out/bench`` is the bench's own: an earlier result there is replaced
(its files removed once the new figures are measured). A folder named with ``--out`` that holds an earlier bench
output is refused before anything is measured, unless ``--overwrite``; its other files are never touched. The library code lives in the ``bench`` package; see
bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from perception.console import emit
from perception.errors import ConfigError
from perception.overwrite import remove_earlier_output


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
    # A flag given twice is refused by every command's parser (perception.cli.OnceFlag); a second
    # --model here most likely means a comparison, which is the engine bench's.
    pipe.repeat_hints = {"model": "the pipeline bench measures one model; run it once per model, or use "
                                  "'perception bench engine --model A --model B' to compare models"}
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
    rep.add_argument("--out", type=Path, default=None,
                     help="output folder for the report and a copy of the JSON (default: next to the JSON, where "
                          "the report is rebuilt)")
    _add_overwrite(rep)


#: Where engine and pipeline results go without --out: the bench's own folder, replaced each run.
DEFAULT_OUT = Path("out/bench")


def _add_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default: {DEFAULT_OUT}, the bench's own, "
                                                               "replaced each run)")
    _add_overwrite(parser)


def _add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier bench output (perception.bench.json, perception.bench.md, the plots) "
                             "in the --out folder you name instead of refusing to start; other files stay")


def main(args: argparse.Namespace) -> int:
    from perception.signals import interrupt_on_stop_signals

    # SIGTERM and SIGHUP stop a bench as Ctrl-C does: "perception: interrupted", status 130, as every
    # batch command (the engine bench was ended by SIGTERM's default action, -15 and no line). The
    # pipeline bench's own handler (bench.nodeproc.StopOnSignal) takes over while its nodes run.
    with interrupt_on_stop_signals():
        return _main(args)


def _main(args: argparse.Namespace) -> int:

    if args.bench_mode == "probe":
        return _probe(args)
    if args.bench_mode == "report":
        return _report(args)
    argv = sys.argv[1:]
    # Under 'python -m perception.bench' the argv lacks the 'bench' word; under 'perception' it has it.
    rest = argv[argv.index("bench") + 1:] if "bench" in argv else argv
    command = "perception bench " + " ".join(shlex.quote(a) for a in rest)
    from perception.bench.engine import EngineBenchInterrupted
    from perception.sinks import missing_folders, remove_empty_folders

    out = args.out or DEFAULT_OUT
    created = missing_folders(out)
    # out/bench is the bench's own; a folder the user named keeps an earlier result unless --overwrite
    earlier = _claim_out(out, overwrite=args.overwrite or args.out is None)
    try:
        if args.bench_mode == "engine":
            results = _run_engine(args, command)
        else:
            results = _run_pipeline(args, command)
    except EngineBenchInterrupted as stopped:
        if stopped.results is None:  # not the engine bench's own rows (they are kept only by _run_engine)
            remove_empty_folders(created)
            raise
        # Ctrl-C after every configuration finished a block: those blocks are kept, marked partial.
        remove_earlier_output(earlier, folder=out, flag="--out", what="a file of an earlier bench")
        path = _write_output(stopped.results, out)
        emit(f"perception: interrupted; wrote the first {stopped.blocks_done} of {stopped.blocks} blocks of every "
             f"configuration to {path} (marked partial)", file=sys.stderr)
        return 130
    except BaseException:
        remove_empty_folders(created)  # a bench that measured nothing leaves no empty --out behind
        raise
    # Only now: a bench that failed leaves the earlier result as it was.
    remove_earlier_output(earlier, folder=out, flag="--out", what="a file of an earlier bench")
    _write_output(results, out)
    return 0


def _write_output(results: dict, out: Path) -> Path:
    """Write the JSON, then the report and plots, then print the summary and the files; returns the
    JSON's path. A file that cannot be written (a full disk) is one line naming it and its cause, after
    the summary (the figures are on the terminal at least), saying what was kept."""
    from perception.bench import report
    from perception.bench.results import RESULTS_FILE, write_results

    try:
        path = write_results(results, out)
    except OSError as exc:
        emit(report.summary_text(results))
        raise ConfigError(f"cannot write {exc.filename or out / RESULTS_FILE} ({exc.strerror or exc}); "
                          "nothing of this run was kept but the summary above: free some space or choose a writable "
                          "--out, and run the bench again") from None
    try:
        written = report.write_report(results, out)
    except OSError as exc:
        emit(report.summary_text(results))
        raise ConfigError(f"cannot write {exc.filename or out} ({exc.strerror or exc}); kept {path}, every figure of "
                          f"this run: once there is room, 'perception bench report {out}' makes the report and "
                          "plots") from None
    emit(report.summary_text(results))
    _print_written({"json": path, **written})
    return path


def _probe(args: argparse.Namespace) -> int:
    """``bench probe``: the verdict, cached for the node. The cache folder is checked first (its
    whole point is that cache; a probe takes seconds to minutes), and "cached" is said only when
    the verdict's file is there."""
    from perception.engines.auto import probe_now
    from perception.engines.probe_cache import key_digest, probe_cache_dir
    from perception.engines.probe_verdict import describe
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
        emit("\n".join(line for line in text.splitlines() if not line.lstrip().startswith("cached for ")))
        raise ConfigError(f"the verdict was not cached: cannot write {cached}; 'perception run --engine auto' will "
                          "probe again at its next start")
    emit(text)
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


def _report(args: argparse.Namespace) -> int:
    """``bench report``: the report of a JSON rebuilt next to it (its earlier report and plots
    replaced), or written with a copy of the JSON into an --out folder that holds no earlier bench
    output (unless --overwrite)."""
    import shutil

    from perception.bench import report
    from perception.bench.results import RESULTS_FILE, load_results, results_path

    results = load_results(args.results)
    source = results_path(args.results)
    out = args.out or source.parent
    rebuilt = out.resolve() == source.parent.resolve()
    earlier = _claim_out(out, overwrite=args.overwrite or rebuilt)
    if rebuilt:  # the report and plots are replaced; a JSON beside them never is
        earlier = [p for p in earlier if p.name != RESULTS_FILE]
    remove_earlier_output(earlier, folder=out, flag="--out", what="a file of an earlier bench")
    written = {}
    if not rebuilt:
        try:
            written["json"] = Path(shutil.copyfile(source, out / RESULTS_FILE))
        except OSError as exc:
            raise ConfigError(f"cannot write {out / RESULTS_FILE} ({exc.strerror}); choose a writable --out") from None
    try:
        written.update(report.write_report(results, out))
        # the run's headline figures, with its warnings and notes, as the run itself printed them
        summary = report.summary_text(results)
    except OSError as exc:  # a full disk: one line naming the file (plots.writing names it)
        raise ConfigError(f"cannot write {exc.filename or out} ({exc.strerror or exc}); {source} is unchanged: free "
                          "some space or choose another --out") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        # A damaged JSON that ``load_results``'s checks let through (a key of a part they do not
        # cover): one line naming the file, not a traceback from the plotting code.
        what = f"key {exc.args[0]!r} is missing" if isinstance(exc, KeyError) and exc.args else (
            f"{type(exc).__name__}: {str(exc)[:120]}")
        raise ConfigError(f"{source}: cannot make a report from it ({what}); pass the perception.bench.json that "
                          "bench wrote, as it wrote it (or run the bench again)") from None
    emit(summary)
    _print_written(written)
    return 0


def _claim_out(out: Path, *, overwrite: bool) -> list[Path]:
    """The --out folder, made before any work (``_prepare_out``), and the files of an earlier bench
    output in it, to be removed before the new ones are written: ConfigError naming them when
    there are any and not ``overwrite`` (the default out/bench is the bench's own and replaced)."""
    from perception.bench.results import earlier_outputs
    from perception.overwrite import refuse_earlier_output

    _prepare_out(out)
    earlier = earlier_outputs(out)
    refuse_earlier_output(out, earlier, flag="--out", what="an earlier bench", overwrite=overwrite)
    return earlier


def _prepare_out(out: Path) -> Path:
    """Create the --out folder before measuring, and check that a file can be made in it (a read-only
    folder or file system), so a typo costs seconds, not a whole benchmark."""
    import tempfile

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for perception.bench.json, perception.bench.md and the plots")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create --out folder {out} ({exc.strerror}); choose a writable path") from None
    try:
        with tempfile.TemporaryFile(dir=out, prefix=".perception-bench-"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write in --out folder {out} ({exc.strerror or exc}); choose a writable folder") from None
    return out


def _run_engine(args: argparse.Namespace, command: str) -> dict:
    from perception.bench.engine import EngineBenchConfig, EngineBenchInterrupted, run_engine_bench
    from perception.bench.results import new_results
    from perception.flags import config_from_flags

    cfg = config_from_flags(EngineBenchConfig, args, source="perception bench engine")
    results = new_results("engine", command)
    try:
        results["engine"] = run_engine_bench(cfg)
    except EngineBenchInterrupted as stopped:  # the blocks every configuration finished, for _main to keep
        stopped.results = {**results, "engine": stopped.engine}
        raise
    return results


def _run_pipeline(args: argparse.Namespace, command: str) -> dict:
    from perception.bench.pipeline import PipelineBenchConfig, run_pipeline_bench
    from perception.flags import config_from_flags

    cfg = config_from_flags(PipelineBenchConfig, args, source="perception bench pipeline")
    return run_pipeline_bench(cfg, command=command)


def _print_written(written: dict[str, Path]) -> None:
    for path in written.values():
        emit(f"wrote {path}")
