"""``perception view``: camera images with the masks blended in, in a window or as MP4 / PNG.

    perception view --source synthetic --model model.onnx                     # window (or out/view.mp4)
    perception view --source drive.mp4 --model model.onnx --out out/view.mp4
    perception view --endpoint tcp://127.0.0.1:5556 --namespace perception/front \\
                    --source synthetic --model model.onnx --out out/frames/

See ``perception/view.py`` for how masks and frames are paired.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from perception.launch import config_from_args
from perception.signals import install_signal_handlers
from perception.view import ViewConfig, run_view


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", help="camera/video/images/synthetic (as for 'perception run')")
    parser.add_argument("--model", type=Path, help="ONNX model: run it here, or (with --endpoint) its class colours")
    parser.add_argument("--endpoint", help="draw the masks a node publishes here instead of running a model")
    parser.add_argument("--namespace", help="with --endpoint: the node's namespace, e.g. perception/front")
    parser.add_argument("--seed", type=int, help="seed of the synthetic source (match the node's)")
    parser.add_argument("--width", type=int, help="requested source width")
    parser.add_argument("--height", type=int, help="requested source height")
    parser.add_argument("--fps", type=float, help="source rate (match the node's for synthetic) and video frame rate (default: the source's / 10)")
    parser.add_argument("--out", type=Path, help="*.mp4/*.avi video, *.png last frame, or a folder of PNGs")
    parser.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument("--alpha", type=float, help="mask opacity 0..1 (default 0.5)")
    parser.add_argument("--provider", help="ONNX Runtime provider: auto, cpu, cuda, tensorrt (default auto)")


def main(args: argparse.Namespace) -> int:
    config = config_from_args(ViewConfig, args, command="view")
    stop = threading.Event()
    with install_signal_handlers(stop):
        frames = run_view(config, stop=stop)  # a file output that got nothing raises, saying why
    if frames:
        print(f"rendered {frames} frame(s)" + (f" to {config.out}" if config.out else ""), flush=True)
    return 0
