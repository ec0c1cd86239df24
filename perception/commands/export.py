"""``perception export``: checkpoint -> verified ONNX (FP32, optionally INT8) and TensorRT engines.

Thin over ``export.run_export``; see the ``export`` package for the steps and their gates.
"""

from __future__ import annotations

import argparse

from perception.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint .pt written by 'perception train'")
    parser.add_argument("--out", required=True, help="ONNX file to write, e.g. model.onnx")
    parser.add_argument("--size", help="input HxW (default: the checkpoint's training size)")
    parser.add_argument("--confidence", action="store_true",
                        help="add the uint8 per-pixel confidence output and store the unknown threshold in the metadata")
    parser.add_argument("--unknown-threshold", type=float, metavar="P",
                        help="with --confidence: pixels below this top-class probability (0..1) are unknown in the "
                             "node (default: chosen by the rule of export/unknown.py on --unknown-data)")
    parser.add_argument("--unknown-data", metavar="SPEC",
                        help="with --confidence: val data the threshold is chosen on (default: the checkpoint's dataset)")
    parser.add_argument("--unknown-count", type=int, default=50, help="val images the threshold is chosen on (default 50)")
    parser.add_argument("--dynamic-batch", action="store_true", help="dynamic batch dimension (default: batch 1)")
    parser.add_argument("--verify-data", metavar="SPEC", help="dataset for the ONNX-vs-PyTorch check (val split)")
    parser.add_argument("--verify-count", type=int, default=8, help="images for the check (default 8)")
    parser.add_argument("--int8", action="store_true", help="also write a gated INT8 model (model.int8.onnx); "
                        "with --tensorrt: an INT8 engine")
    parser.add_argument("--calib", metavar="SPEC", help="calibration dataset (train split), e.g. camvid:/data/camvid")
    parser.add_argument("--calib-count", type=int, default=64, help="calibration images (default 64)")
    parser.add_argument("--val-data", metavar="SPEC", help="dataset for the INT8 mIoU gate (default: --calib, val split)")
    parser.add_argument("--val-count", type=int, default=50, help="validation images for the INT8 gate (default 50)")
    parser.add_argument("--allow-int8-drop", action="store_true", help="keep the INT8 model even if it misses the mIoU budget")
    parser.add_argument("--latency-runs", type=int, default=20, help="runs per CPU latency median (default 20)")
    parser.add_argument("--tensorrt", action="store_true", help="build a TensorRT engine (needs an NVIDIA GPU)")
    parser.add_argument("--fp16", action="store_true", help="TensorRT engine in FP16")
    parser.add_argument("--trt-cache", metavar="DIR", help="engine cache (default ~/.cache/perception/trt)")


def main(args: argparse.Namespace) -> int:
    from perception.config import parse_hw
    from perception.export import ExportConfig, run_export

    if args.fp16 and not args.tensorrt:
        from perception.errors import ConfigError

        raise ConfigError("--fp16 applies to TensorRT engines; add --tensorrt")
    precision = "int8" if args.int8 else "fp16" if args.fp16 else "fp32"
    values = {
        "checkpoint": args.checkpoint,
        "out": args.out,
        "input_hw": list(parse_hw(args.size)) if args.size else None,
        "confidence": args.confidence,
        "unknown_threshold": args.unknown_threshold,
        "unknown_data": args.unknown_data,
        "unknown_count": args.unknown_count,
        "dynamic_batch": args.dynamic_batch,
        "verify_data": args.verify_data,
        "verify_count": args.verify_count,
        "int8": args.int8,
        "calib": args.calib,
        "calib_count": args.calib_count,
        "val_data": args.val_data,
        "val_count": args.val_count,
        "allow_int8_drop": args.allow_int8_drop,
        "latency_runs": args.latency_runs,
        "tensorrt": args.tensorrt,
        "trt_precision": precision if args.tensorrt else "fp32",
        "trt_cache_dir": args.trt_cache,
    }
    cfg = load_config(ExportConfig, values, source="perception export")
    run_export(cfg, report=print)
    return 0
