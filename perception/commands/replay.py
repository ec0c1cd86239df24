"""``perception replay``: republish the masks of an MCAP recording on their original topics.

    perception replay out/run.mcap                       # at the recorded rate
    perception replay out/run.mcap --rate 2 --endpoint tcp://127.0.0.1:5560
    perception replay out/run.mcap --max-rate --wait-first-subscriber 5
    perception replay out/run_0.mcap out/run_1.mcap      # splits in order (or: out/run.mcap, or a folder)
    perception replay out/run.mcap --endpoint tcp://0.0.0.0:5556 \
        --curve-secret-key keys/server.key_secret --curve-allow allowed   # encrypted, as `perception run`

Stops at the end of the file (``--loop`` starts again) or on Ctrl-C / SIGTERM. At the end it
waits for the messages still queued while the subscribers take them; exits 1 when a subscriber that
took nothing for ``--drain-timeout`` seconds lost the last of them (the closing line says so).
"""

from __future__ import annotations

import argparse
import threading

from perception.console import emit
from perception.flags import add_flags, config_from_flags
from perception.replay import ReplayConfig, run_replay
from perception.signals import install_signal_handlers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, ReplayConfig)


def main(args: argparse.Namespace) -> int:
    config = config_from_flags(ReplayConfig, args, source="perception replay")
    stop = threading.Event()
    with install_signal_handlers(stop):
        summary = run_replay(config, stop)
    emit(summary.format(config.file))
    # The README's promise: a slow subscriber makes the replay wait instead of losing messages. One
    # that stopped taking them lost the tail all the same: not a clean end.
    return 1 if summary.stalled_subscribers else 0
