"""``perception demo``: the synthetic camera through the shipped model, with a listener and an overlay video.

    perception demo                                  # about 10 s, writes out/demo.mp4 and out/demo.png
    perception demo --model runs/bisenetv2.onnx --duration 30 --out-dir out/demo2

Everything runs on localhost (port 5556, or a free one if that is taken). See ``perception/demo.py``.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from perception.demo import DemoConfig, run_demo
from perception.launch import config_from_args
from perception.signals import install_signal_handlers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="exported .onnx model (default: perception/assets/default.onnx)")
    parser.add_argument("--duration", type=float, metavar="S", help="seconds to run (default 10)")
    parser.add_argument("--endpoint", help="where to publish (default tcp://127.0.0.1:5556, or a free port)")
    parser.add_argument("--out-dir", type=Path, help="folder for demo.mp4 and demo.png (default out)")
    parser.add_argument("--width", type=int, help="synthetic camera width (default 640)")
    parser.add_argument("--height", type=int, help="synthetic camera height (default 360)")
    parser.add_argument("--fps", type=float, help="synthetic camera rate (default 30)")
    parser.add_argument("--seed", type=int, help="synthetic world seed (default 0)")
    parser.add_argument("--provider", help="ONNX Runtime provider: auto, cpu, cuda, tensorrt (default auto)")
    parser.add_argument("--threads", type=int, help="CPU inference threads (0: ONNX Runtime's default)")


def main(args: argparse.Namespace) -> int:
    config = config_from_args(DemoConfig, args, command="demo")
    stop = threading.Event()
    with install_signal_handlers(stop):
        result = run_demo(config, stop=stop, out=lambda line: print(line, flush=True))
    print(f"\noverlay video: {result.video}\nsnapshot:      {result.snapshot}\n")
    print(result.summary(), flush=True)
    return 0
