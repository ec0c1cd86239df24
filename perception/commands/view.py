"""``perception view``: camera images with the masks blended in, in a window or as MP4 / PNG.

    perception view --source synthetic --model model.onnx                     # window (or out/view.mp4)
    perception view --source drive.mp4 --model model.onnx --out out/view.mp4
    perception view --endpoint tcp://127.0.0.1:5556 --namespace perception/front \\
                    --source synthetic --out out/frames/    # the node's class table, from its info

An endpoint that sends only some masks gets what arrives drawn (drivable / lane / obstacle as
tints when no class map comes), with one warning saying what is not drawn and why. See
``perception/view.py`` for how masks and frames are paired.
"""

from __future__ import annotations

import argparse
import logging
import threading

from perception.console import emit
from perception.flags import add_flags, config_from_flags
from perception.signals import install_signal_handlers
from perception.sinks import resolve_output
from perception.view import ViewConfig, run_view

log = logging.getLogger("perception.view")  # the line run_view gives a view stopped before its first frame


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, ViewConfig)


def main(args: argparse.Namespace) -> int:
    config = config_from_flags(ViewConfig, args, source="perception view")
    if config.endpoint is None and config.source is not None:  # --width for a video file: refused as run does
        from perception.sources import check_source_options

        check_source_options(config.source_options, [config.source], args)
    stop = threading.Event()
    with install_signal_handlers(stop):
        # Resolved here, so that the line below names out/view.mp4 when no display chose it (-q hides
        # the log line); inside the handlers, as the display probe may wait seconds for an X server
        # that does not answer, and SIGTERM or Ctrl-C then stops view as at any other time. Set, not
        # dataclasses.replace: that would check (and split) the source a second time.
        defaulted = config.out is None
        config.out = resolve_output(config.out, stop)
        if stop.is_set():  # stopped while the display was probed: nothing loaded, nothing written
            log.warning("nothing rendered: stopped before the first frame")
            return 0
        if defaulted:
            config.overwrite = True  # out/view.mp4, not named by the user, is view's own: replaced each time
        frames = run_view(config, stop=stop)  # a file output that got nothing raises, saying why
    if frames:
        if config.out is None:
            where = " in a window"
        elif config.out.suffix.lower() == ".png":
            where = f"; wrote the last one to {config.out}"  # a .png --out holds the last frame only
        else:
            where = f" to {config.out}"
        emit(f"rendered {frames} frame(s){where}")
    return 0
