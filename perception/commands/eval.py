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

from perception.errors import ConfigError

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


def main(args: argparse.Namespace) -> int:
    from perception.datasets import open_dataset
    from perception.training.evaluate import evaluate_checkpoint, evaluate_engine

    if args.model:
        from perception.engines import EngineOptions, load_engine

        if args.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"--device {args.device!r} for an ONNX model must be auto, cpu or cuda")
        engine = load_engine("ort", args.model, EngineOptions(provider=args.device, threads=args.threads))
        spec = args.data or engine.metadata.dataset
        if not spec:
            raise ConfigError(f"{args.model} does not say which dataset it was trained on; pass --data")
        dataset = open_dataset(spec, split=args.split)
        log.info("evaluating %s on %s (%s, %d images)", engine.describe(), spec, args.split, len(dataset))
        cm = evaluate_engine(engine, dataset)
        source = args.model
    else:
        spec = args.data or _checkpoint_dataset(args.checkpoint)
        dataset = open_dataset(spec, split=args.split)
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
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


def _checkpoint_dataset(path: str) -> str:
    from perception.training.checkpoint import load_checkpoint

    spec = load_checkpoint(path).dataset
    if not spec:
        raise ConfigError(f"checkpoint {path} does not say which dataset it was trained on; pass --data")
    return spec
