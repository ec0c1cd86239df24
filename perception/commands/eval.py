"""``perception eval``: per-class IoU and G / C / mIoU of a checkpoint or an exported ONNX model.

    perception eval --checkpoint runs/camvid/best.pt --data camvid:../shared/data/camvid --split val
    perception eval --model out/model.onnx --data camvid:../shared/data/camvid

``--model x.onnx`` runs the file through ONNX Runtime (uint8 BGR input, class ids out) without
importing torch. ``--json`` also writes the figures to a file.
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


def _check_args(args: argparse.Namespace) -> None:
    """Flag values and the --json target, checked before minutes of evaluation could be lost to them."""
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be >= 1")
    if args.workers < 0:
        raise ConfigError(f"--workers {args.workers} must be >= 0 (0: load in the main process)")
    if not 0 <= args.threads <= 256:
        raise ConfigError(f"--threads {args.threads} must be in 0..256 (0: the default)")
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
    from perception.datasets import open_dataset
    from perception.training.evaluate import evaluate_checkpoint, evaluate_engine

    _check_args(args)
    if args.model:
        from perception.engines import EngineOptions, load_engine

        if args.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"--device {args.device!r} for an ONNX model must be auto, cpu or cuda")
        engine = load_engine("ort", args.model, EngineOptions(provider=args.device, threads=args.threads))
        spec = args.data or engine.metadata.dataset
        if not spec:
            raise ConfigError(f"{args.model} does not say which dataset it was trained on; pass --data")
        if args.data:
            dataset = open_dataset(spec, split=args.split)
        else:
            dataset = _open_recorded_dataset(spec, args.split, args.model)
        log.info("evaluating %s on %s (%s, %d images)", engine.describe(), spec, args.split, len(dataset))
        cm = evaluate_engine(engine, dataset)
        source = args.model
    else:
        if args.data:
            spec, dataset = args.data, open_dataset(args.data, split=args.split)
        else:
            spec = _checkpoint_dataset(args.checkpoint)
            dataset = _open_recorded_dataset(spec, args.split, args.checkpoint)
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
        summary = {"source": str(source), "data": spec, "split": args.split, **cm.summary(dataset.class_table)}
        text = json.dumps(summary, indent=2, default=str).replace("NaN", "null")  # strict JSON: no NaN
        try:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write --json {args.json} ({exc.strerror}); the figures are printed above") from None
    return 0


def _checkpoint_dataset(path: str) -> str:
    from perception.training.checkpoint import load_checkpoint

    spec = load_checkpoint(path).dataset
    if not spec:
        raise ConfigError(f"checkpoint {path} does not say which dataset it was trained on; pass --data")
    return spec
