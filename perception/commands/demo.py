"""``perception demo``: the synthetic camera through the shipped model, with a listener and an overlay video.

    perception demo                                  # about 10 s, writes out/demo.mp4 and out/demo.png
    perception demo --model runs/bisenetv2.onnx --duration 30 --out out/demo2
    perception demo --out out/demo2 --overwrite      # replace the demo.mp4 and demo.png an earlier demo left there

Everything runs on localhost (port 5556, or a free one if that is taken). See ``perception/demo.py``.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from perception.console import emit
from perception.demo import DemoConfig, run_demo
from perception.flags import add_flags, config_from_flags
from perception.signals import install_signal_handlers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, DemoConfig)
    # The demo's folder was --out-dir before it was --out as for every other command: the old
    # spelling keeps working, without a warning (scripts and the README's older examples use it).
    parser.add_argument("--out-dir", dest="out_dir", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    config = config_from_flags(DemoConfig, args, source="perception demo")
    if "out_dir" not in vars(args):
        config.overwrite = True  # out/, not named by the user, is the demo's own: its two files replaced each run
    stop = threading.Event()
    with install_signal_handlers(stop):
        result = run_demo(config, stop=stop, out=emit)
    emit(f"\noverlay video: {result.video}\nsnapshot:      {result.snapshot}\n")
    emit(result.summary())
    return 0
