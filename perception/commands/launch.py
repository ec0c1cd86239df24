"""``perception launch``: start the nodes a launch file describes, supervised, as one command.

    perception launch launch/front_camera.yaml model:=model.onnx
    perception launch launch/two_cameras.yaml model:=model.onnx --check   # print the plan only

Prints the resolved plan, then starts every node (output lines prefixed ``[name]``), restarts
nodes per their ``respawn`` policy and stops everything on Ctrl-C / SIGTERM (exit 0) or when a
``required`` node is gone for good (exit 1). See ``perception/launch.py`` for the file format.
"""

from __future__ import annotations

import argparse

from perception.launch import LaunchSupervisor, format_plan, load_launch, parse_launch_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="launch file (YAML), e.g. launch/demo.yaml")
    parser.add_argument("arguments", nargs="*", metavar="NAME:=VALUE", help="launch arguments")
    parser.add_argument("--check", action="store_true", help="validate and print the plan; start nothing")


def main(args: argparse.Namespace) -> int:
    plan = load_launch(args.file, parse_launch_arguments(args.arguments))
    print(format_plan(plan), flush=True)
    if args.check:
        return 0
    return LaunchSupervisor(plan).run()
