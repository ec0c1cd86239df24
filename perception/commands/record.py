"""``perception record``: subscribe to a node's topics and write them to an MCAP file.

    perception record --namespace perception/front --out out/run.mcap --duration 60
    perception record --topic perception/front/lane perception/front/stats --out lanes.mcap
    perception record --namespace perception/front --out out/run.mcap --split-duration 60   # run_0.mcap, run_1.mcap...

    perception record --recover out/run.mcap          # rebuild a file whose recorder was killed

Stops after ``--duration`` or on Ctrl-C / SIGTERM, finishing the file either way. The layout
(sensor_msgs/msg/Image masks, std_msgs/msg/String JSON, wire headers in ``<topic>/meta``) is
described in ``perception/record.py``.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from perception import contracts
from perception.errors import ConfigError
from perception.launch import config_from_args
from perception.record import RecordConfig, Recorder, recording_is_intact, recover_recording, split_path
from perception.signals import install_signal_handlers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", default=contracts.DEFAULT_ENDPOINT, help="publisher endpoint (default %(default)s)")
    # One of the two is required when recording; RecordConfig says so (not argparse, so --recover needs neither).
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--namespace", help="every topic under this namespace, e.g. perception/front")
    which.add_argument("--topic", nargs="+", action="extend", metavar="T", help="exact topics to record")
    parser.add_argument("--out", type=Path, help="output .mcap file (with --recover: where the rebuilt file goes)")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: until Ctrl-C)")
    parser.add_argument("--split-duration", type=float, metavar="S",
                        help="write <out stem>_0.mcap, _1.mcap, ... starting a new file every S seconds")
    parser.add_argument("--split-size", type=float, metavar="MB",
                        help="write <out stem>_0.mcap, _1.mcap, ... starting a new file at MB megabytes")
    parser.add_argument("--max-mask-pixels", type=int, metavar="N",
                        help=f"skip masks declaring more than N pixels, before decoding (default {contracts.MAX_MASK_PIXELS})")
    parser.add_argument("--curve-server-key", metavar="FILE", help="the node's public .key file (CURVE)")
    parser.add_argument("--curve-key", metavar="FILE", help="this client's .key_secret file (CURVE)")
    parser.add_argument("--recover", type=Path, metavar="FILE",
                        help="record nothing: rebuild FILE, left unfinished by a killed recorder, into an indexed MCAP "
                             "(in place, the original kept as FILE.damaged; or to --out)")


def main(args: argparse.Namespace) -> int:
    if args.recover is not None:
        return recover(args)
    config = config_from_args(RecordConfig, args, command="record")
    recorder = Recorder(config)
    stop = threading.Event()
    what = config.namespace + "/*" if config.namespace else ", ".join(config.topic)
    where = f"{split_path(config.out, 0)}, {split_path(config.out, 1).name}, ..." if config.splits else config.out
    print(f"recording {what} from {config.endpoint} to {where}", flush=True)
    with install_signal_handlers(stop):
        summary = recorder.run(stop)
    print(summary.format(), flush=True)
    return 0


def recover(args: argparse.Namespace) -> int:
    """``--recover FILE [--out OUT]``: rebuild a killed recording (``perception.record.recover_recording``)."""
    recording_flags = [f"--{name.replace('_', '-')}" for name in ("namespace", "topic", "duration", "split_duration",
                                                                   "split_size") if getattr(args, name) is not None]
    if recording_flags:
        raise ConfigError(f"--recover rebuilds a file and records nothing; leave out {', '.join(recording_flags)}")
    if recording_is_intact(args.recover) and args.out is None:
        print(f"{args.recover} is complete (footer, summary and index present); nothing to recover", flush=True)
        return 0
    print(recover_recording(args.recover, args.out).format(), flush=True)
    return 0
