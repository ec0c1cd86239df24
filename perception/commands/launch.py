"""``perception launch``: start the nodes a launch file describes, supervised, as one command.

    perception launch launch/front_camera.yaml model:=model.onnx
    perception launch launch/two_cameras.yaml --check model:=model.onnx   # check files, print the plan

Prints the resolved plan, then starts every node (output lines prefixed ``[name]``), restarts
nodes per their ``respawn`` policy and stops everything on Ctrl-C / SIGTERM or when a ``required``
node is gone for good. A node that fails on a bad input (exit code 2) or a missing dependency (3) is
never restarted; if it is required, the launch stops and exits with that code. Otherwise the launch
exits 1 when any node failed for good during the run, however the run ended, else 0; a summary line
names every node that failed or restarted. See ``perception/launch/`` for the file format.
"""

from __future__ import annotations

import argparse

from perception.console import emit
from perception.launch import (
    LaunchSupervisor,
    check_node_files,
    format_plan,
    load_launch,
    parse_launch_arguments,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "%(prog)s [-h] [-v] [-q] [--check] FILE [NAME:=VALUE ...]"
    parser.epilog = ("exit status: 0 when no node failed for good; 1 when one did (ended non-zero and was not "
                     "restarted: no respawn, exit code 2 or 3, or it gave up after respawn_max), however the launch "
                     "ended; a required node's own 2 or 3 when it failed on a bad input or a missing dependency. "
                     "Each node runs 'perception COMMAND ...' on this Python, never a perception.py from the "
                     "working folder; its output lines are prefixed [name].")
    parser.add_argument("file", metavar="FILE", help="launch file (YAML), e.g. launch/demo.yaml")
    # argparse matches each positional once, at the first chance: a nargs="*" list would be matched
    # empty together with FILE, so "FILE --check camera:=2" left camera:=2 unparsed. One or more,
    # made optional, waits for the first override instead, before or after --check.
    overrides = parser.add_argument(
        "arguments", nargs="+", default=[], metavar="NAME:=VALUE", help="launch arguments (e.g. camera:=2)"
    )
    overrides.required = False
    parser.add_argument(
        "--check", action="store_true",
        help="validate; check that the files pipeline and replay nodes read exist and load (model, source, the "
             "recording, and the CURVE key files: curve_secret_key, the curve_allow folder; with "
             "per_class_obstacles, that the model's obstacle classes make valid topics); print the plan; start nothing",
    )


def main(args: argparse.Namespace) -> int:
    plan = load_launch(args.file, parse_launch_arguments(args.arguments))
    if args.check:
        check_node_files(plan)
    # emit: a stdout that is closed, gone (| head) or full does not keep the nodes from starting
    emit(format_plan(plan))
    if args.check:
        return 0
    return LaunchSupervisor(plan).run()
