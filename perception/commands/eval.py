"""``perception eval``: per-class IoU and G / C / mIoU of a checkpoint or an exported ONNX model.

    perception eval --checkpoint runs/camvid/best.pt --data camvid:../shared/data/camvid --split val
    perception eval --model out/model.onnx --data camvid:../shared/data/camvid

    perception eval --model perception/assets/default.onnx --data camvid:../shared/data/camvid --tasks
    perception eval --model m.onnx --data folder:frames --tasks drivable,obstacle --task obstacle=car,pedestrian \
        --data-task obstacle=vehicle,person

    perception eval --model perception/assets/default.onnx --data camvid:../shared/data/camvid --tasks \
        --record --contact-sheet docs/real_road.png

``--model x.onnx`` runs the file through ONNX Runtime (uint8 BGR input, class ids out) without
importing torch. Images are letterboxed into the model input exactly as the node does.
``--tasks`` scores by task group instead of by class: each side's classes are mapped through its
own task groups (``--task`` / ``--data-task NAME=CLASS,...`` add or replace a group), so any model
can be checked on any labelled dataset. ``--json`` also writes the figures to a file.
``--record`` stores the task figures in the ONNX model's metadata as its real-road check
(``perception inspect`` shows them). ``--contact-sheet x.png`` draws ``--sheet-count`` frames spread
over the dataset with the model's drivable, lane and obstacle masks painted on.

With a model that has the confidence output (``perception export --confidence``), ``--tasks``
scores the masks the node publishes: pixels below the model's unknown threshold
(``--unknown-threshold P`` overrides it, 0 turns it off) are unknown and in no task, and the same
tasks are scored again with unknown marking off, with the share of labelled pixels left unknown::

    perception eval --model m.onnx --data camvid:../shared/data/camvid --tasks drivable
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from perception.errors import ConfigError, PerceptionError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", help="a .pt checkpoint written by 'perception train'")
    what.add_argument("--model", help="an exported .onnx model (evaluated with ONNX Runtime, no torch)")
    parser.add_argument("--data", help="dataset spec (default: the checkpoint's training data)")
    parser.add_argument("--split", default="val", help="dataset split (default: val)")
    parser.add_argument("--device", default="auto", help="checkpoint: auto, cpu or cuda; ONNX: auto, cpu, cuda")
    parser.add_argument("--batch-size", type=int, default=4, help="checkpoint evaluation batch size")
    parser.add_argument("--workers", type=int, default=2, help="checkpoint evaluation DataLoader workers")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads, torch or ONNX Runtime (0: default)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument(
        "--tasks",
        nargs="?",
        const="",
        metavar="TASK[,TASK]",
        help="score by task group (drivable, lane, obstacle, or any group defined with --task/--data-task); "
        "no value: every task both the model and the dataset define",
    )
    parser.add_argument("--task", action="append", default=[], metavar="TASK=CLASS[,CLASS]",
                        help="with --tasks: the model classes of a task, e.g. obstacle=car,pedestrian,cyclist")
    parser.add_argument("--data-task", action="append", default=[], metavar="TASK=CLASS[,CLASS]",
                        help="with --tasks: the dataset classes of a task, e.g. obstacle=Car,Pedestrian,Bicyclist")
    parser.add_argument("--unknown-threshold", type=float, metavar="P",
                        help="with --tasks: pixels whose confidence is below P (0..1) are unknown, in no task "
                             "(default: the model's threshold; 0: off); needs a model with a confidence output")
    parser.add_argument("--record", action="store_true",
                        help="with --tasks and --model: store the task figures in the model's metadata as its "
                        "real-road check (use data the model never trained on)")
    parser.add_argument("--contact-sheet", metavar="PNG",
                        help="with --model: also draw frames spread over the dataset with the task masks painted on")
    parser.add_argument("--sheet-count", type=int, default=12, help="frames on the contact sheet (default 12)")


def _check_args(args: argparse.Namespace) -> None:
    """Flag values and the --json target, checked before minutes of evaluation could be lost to them."""
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be >= 1")
    if args.workers < 0:
        raise ConfigError(f"--workers {args.workers} must be >= 0 (0: load in the main process)")
    if not 0 <= args.threads <= 256:
        raise ConfigError(f"--threads {args.threads} must be in 0..256 (0: the default)")
    if (args.task or args.data_task) and args.tasks is None:
        raise ConfigError("--task / --data-task define task groups for --tasks; add --tasks")
    if args.unknown_threshold is not None:
        if args.tasks is None:
            raise ConfigError("--unknown-threshold applies to the task masks; add --tasks")
        if not 0 <= args.unknown_threshold <= 1:
            raise ConfigError(f"--unknown-threshold {args.unknown_threshold:g} must be a probability in 0..1 (0: off)")
    if args.record and (args.tasks is None or not args.model):
        raise ConfigError("--record stores task figures in an ONNX model's metadata; it needs --tasks and --model")
    if args.contact_sheet and not args.model:
        raise ConfigError("--contact-sheet draws an exported model's masks; it needs --model")
    if args.contact_sheet:
        from perception.contact_sheet import check_sheet_target

        check_sheet_target(args.contact_sheet, args.sheet_count)
    if args.json:
        target = Path(args.json)
        if target.is_dir():
            raise ConfigError(f"--json {target} is a directory; give a file name such as {target / 'eval.json'}")
        if not target.parent.is_dir():
            raise ConfigError(f"--json {target}: folder {target.parent} does not exist; create it or choose another path")


def _open_recorded_dataset(spec: str, split: str, recorded_in: str):
    """Open the dataset a model or checkpoint names; when that fails, say where the spec came from
    (a path on the training machine is a common reason) and how to override it."""
    from perception.datasets import open_dataset

    try:
        return open_dataset(spec, split=split)
    except PerceptionError as exc:
        raise type(exc)(f"{exc} (dataset {spec!r} is the one recorded in {recorded_in}; pass --data to use another)") from None


def main(args: argparse.Namespace) -> int:
    _check_args(args)
    if args.tasks is not None:
        return _main_tasks(args)
    from perception.training.evaluate import evaluate_checkpoint, evaluate_engine

    if args.model:
        engine = _onnx_engine(args)
        spec, dataset = _dataset_for(args, engine.metadata.dataset, args.model)
        log.info("evaluating %s on %s (%s, %d images)", engine.describe(), spec, args.split, len(dataset))
        cm = evaluate_engine(engine, dataset)
        source = args.model
    else:
        spec, dataset = _dataset_for(args, None, args.checkpoint)
        log.info("evaluating %s on %s (%s, %d images)", args.checkpoint, spec, args.split, len(dataset))
        cm = evaluate_checkpoint(
            args.checkpoint,
            dataset,
            device=args.device,
            batch_size=args.batch_size,
            workers=args.workers,
            threads=args.threads,
        )
        source = args.checkpoint
    print(f"{source} on {spec} ({args.split}, {len(dataset)} images)")
    print(cm.format_table(dataset.class_table))
    if args.json:
        _write_json(args.json, {"source": str(source), "data": spec, "split": args.split, **cm.summary(dataset.class_table)})
    if args.contact_sheet:
        _contact_sheet(args, engine, dataset, spec)
    return 0


def _main_tasks(args: argparse.Namespace) -> int:
    """``--tasks``: binary IoU / precision / recall per task group, the node's preprocessing."""
    from perception.flags import parse_pairs
    from perception.masks import unknown_marker_for
    from perception.training.evaluate import (
        UnknownTally,
        evaluate_tasks,
        format_task_table,
        resolve_task_groups,
    )

    if args.model:
        engine = _onnx_engine(args)
        source = args.model
    else:
        from perception.engines import EngineOptions, load_engine

        provider = {"auto": "cpu"}.get(args.device, args.device)
        engine = load_engine("torch", args.checkpoint, EngineOptions(provider=provider, threads=args.threads))
        source = args.checkpoint
    spec, dataset = _dataset_for(args, engine.metadata.dataset, source)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] or None
    scores = resolve_task_groups(
        engine.metadata.class_table,
        dataset.class_table,
        tasks=tasks,
        model_overrides=parse_pairs(args.task, "--task", listed=True),
        data_overrides=parse_pairs(args.data_task, "--data-task", listed=True),
        model_name=f"model {source}",
        data_name=f"dataset {spec}",
    )
    marker = unknown_marker_for(engine.has_confidence, engine.metadata.unknown_threshold, args.unknown_threshold,
                                model=engine.model_id)
    unknown = UnknownTally(marker) if marker is not None else None
    log.info("evaluating %s on %s (%s, %d images) by task", engine.describe(), spec, args.split, len(dataset))
    evaluate_tasks(engine, dataset, scores, unknown=unknown)
    print(f"{source} on {spec} ({args.split}, {len(dataset)} images), letterboxed to {engine.input_hw[0]}x{engine.input_hw[1]} as the node does")
    if unknown is None:
        print("unknown marking off" + ("" if engine.has_confidence else " (the model has no confidence output)"))
        print(format_task_table(scores))
    else:
        print(f"unknown: confidence below {marker.threshold:.4g} ({marker.set_by}): {100 * unknown.fraction:.2f} % "
              "of the labelled pixels, in no task")
        print(format_task_table(scores))
        print("with unknown marking off:")
        print(format_task_table(unknown.off))
    if args.json:
        summary = {
            "source": str(source),
            "data": spec,
            "split": args.split,
            "input_hw": list(engine.input_hw),
            "preprocess": "letterbox (perception.preprocess, as the node)",
            "tasks": {s.task: s.to_dict() for s in scores},
            "unknown": unknown.to_dict() if unknown is not None else {"threshold": 0.0, "enabled": False},
        }
        if unknown is not None:
            summary["tasks_unknown_off"] = {s.task: s.to_dict() for s in unknown.off}
        _write_json(args.json, summary)
    if args.record:
        from perception.modelfile import record_metadata

        check = {
            "data": spec,
            "split": args.split,
            "frames": len(dataset),
            "input_hw": list(engine.input_hw),
            "preprocess": "letterbox, as the node",
            # The figures are those of the masks the node publishes: with unknown marking at this threshold.
            "tasks": _task_figures(scores),
            "unknown": unknown.to_dict() if unknown is not None else {"threshold": 0.0, "enabled": False},
        }
        if unknown is not None:
            check["tasks_unknown_off"] = _task_figures(unknown.off)
        record_metadata(args.model, real_road_check=check)
        print(f"recorded in {args.model}'s metadata as its real-road check (perception inspect {args.model})")
    if args.contact_sheet:
        _contact_sheet(args, engine, dataset, spec)
    return 0


def _task_figures(scores) -> dict:
    keys = ("iou", "precision", "recall", "model_classes", "data_classes")
    return {s.task: {k: s.to_dict()[k] for k in keys} for s in scores}


def _contact_sheet(args: argparse.Namespace, engine, dataset, spec: str) -> None:
    from perception.contact_sheet import build_contact_sheet, write_contact_sheet

    caption = f"{engine.metadata.model_id} on {spec} ({args.split}), letterboxed as the node"
    sheet = build_contact_sheet(engine, dataset, count=args.sheet_count, caption=caption,
                                unknown_threshold=getattr(args, "unknown_threshold", None))
    write_contact_sheet(args.contact_sheet, sheet)
    print(f"wrote {args.contact_sheet} ({min(args.sheet_count, len(dataset))} frames)")


def _onnx_engine(args: argparse.Namespace):
    from perception.engines import EngineOptions, load_engine

    if args.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device {args.device!r} for an ONNX model must be auto, cpu or cuda")
    return load_engine("ort", args.model, EngineOptions(provider=args.device, threads=args.threads))


def _dataset_for(args: argparse.Namespace, recorded: str | None, source: str):
    """``(spec, dataset)``: ``--data``, else the dataset the model or checkpoint records."""
    from perception.datasets import open_dataset

    if args.data:
        return args.data, open_dataset(args.data, split=args.split)
    spec = recorded if recorded is not None else _checkpoint_dataset(source)
    if not spec:
        raise ConfigError(f"{source} does not say which dataset it was trained on; pass --data")
    return spec, _open_recorded_dataset(spec, args.split, source)


def _write_json(path: str, summary: dict) -> None:
    text = json.dumps(summary, indent=2, default=str).replace("NaN", "null")  # strict JSON: no NaN
    try:
        Path(path).write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write --json {path} ({exc.strerror}); the figures are printed above") from None


def _checkpoint_dataset(path: str) -> str:
    from perception.training.checkpoint import load_checkpoint

    spec = load_checkpoint(path).dataset
    if not spec:
        raise ConfigError(f"checkpoint {path} does not say which dataset it was trained on; pass --data")
    return spec
