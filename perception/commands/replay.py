"""``perception replay``: republish the masks of an MCAP recording on their original topics.

    perception replay out/run.mcap                       # at the recorded rate
    perception replay out/run.mcap --rate 2 --endpoint tcp://127.0.0.1:5560
    perception replay out/run.mcap --max-rate --wait-subscriber 5
    perception replay out/run_0.mcap out/run_1.mcap      # splits in order (or: out/run.mcap, or a folder)

Stops at the end of the file (``--loop`` starts again) or on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from perception import contracts
from perception.launch import config_from_args
from perception.replay import ReplayConfig, run_replay
from perception.signals import install_signal_handlers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, nargs="+", metavar="FILE",
                        help="a recording made by 'perception record': a .mcap file, several in order, "
                             "or a folder of splits (run_0.mcap, run_1.mcap, ...)")
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--rate", type=float, help="speed factor over the recorded timing (default 1.0)")
    speed.add_argument("--max-rate", action="store_true", help="send as fast as subscribers take the messages")
    parser.add_argument("--endpoint", default=contracts.DEFAULT_ENDPOINT, help="where to publish (default %(default)s)")
    parser.add_argument("--wait-subscriber", type=float, metavar="S", help="wait up to S seconds for a subscriber first")
    parser.add_argument("--restamp", action="store_true", help="shift capture/publish times to now (live latency figures)")
    parser.add_argument("--loop", action="store_true", help="start again at the end of the file")


def main(args: argparse.Namespace) -> int:
    config = config_from_args(ReplayConfig, args, command="replay")
    stop = threading.Event()
    with install_signal_handlers(stop):
        summary = run_replay(config, stop)
    print(summary.format(config.file), flush=True)
    return 0
