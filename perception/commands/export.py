"""``perception export``: checkpoint -> verified ONNX (FP32, optionally INT8) and TensorRT engines.

Thin over ``export.run_export``; see the ``export`` package for the steps and their gates.
"""

from __future__ import annotations

import argparse

from perception.flags import add_flags, config_from_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from perception.export import ExportConfig  # light: the export steps import their libraries when they run

    add_flags(parser, ExportConfig)


def main(args: argparse.Namespace) -> int:
    from perception.export import ExportConfig, run_export
    from perception.signals import interrupt_on_stop_signals

    config = config_from_flags(ExportConfig, args, source="perception export")
    # SIGTERM and SIGHUP stop an export as Ctrl-C does: its clean-up of half-written files runs, one
    # line, status 130 (as eval, synth and train).
    with interrupt_on_stop_signals():
        run_export(config, report=print)
    return 0
