"""The ``perception`` command: a thin dispatcher over one module per subcommand.

Each subcommand lives in ``perception/commands/<name>.py`` and provides ``add_arguments(parser)``
and ``main(args) -> int``. Only the chosen subcommand's module is imported, so ``perception run``
never pulls in the training side (or torch).

Errors from outside (``PerceptionError``) are caught here, once, and printed as one line:
``perception: error: <what is wrong and how to fix it>`` with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import os
import sys
from typing import TextIO

from perception import __version__
from perception.errors import PerceptionError

#: name -> one-line help. The module is perception.commands.<name with '-' as '_'>.
COMMANDS: dict[str, str] = {
    "run": "run the node: source -> engine -> masks published over ZeroMQ",
    "listen": "subscribe to mask topics and report rates, latency and sequence gaps",
    "demo": "synthetic camera through the shipped model, with a listener and an overlay video",
    "synth": "write synthetic road-world frames as a dataset and/or a video",
    "train": "train a segmentation model (needs the 'train' extra)",
    "eval": "evaluate a checkpoint or an ONNX model on a dataset",
    "export": "export a checkpoint to a verified ONNX model (FP32/INT8) and TensorRT engines",
    "inspect": "show an exported model's metadata, inputs, outputs and operators",
    "bench": "measure engine and pipeline FPS and latency and write a report",
    "keys": "create CURVE key pairs for encrypted publishing",
    "launch": "start the nodes described by a launch file",
    "record": "record mask topics to an MCAP file",
    "replay": "republish masks from an MCAP recording",
    "view": "show or save camera images with the masks blended in",
}

log = logging.getLogger("perception")
#: What a write to a terminal or pipe that is gone raises: the terminal or ssh session closed (EIO,
#: ENXIO), the reader of a pipe exited (EPIPE).
GONE_ERRNOS = (errno.EIO, errno.ENXIO, errno.EPIPE)


def emit(text: str, file: TextIO | None = None) -> bool:
    """Print ``text`` (a command's result line) and flush; False when the terminal or pipe is gone.

    A command that a closed ssh session stopped (SIGHUP) has done its work and finished its files;
    only the line reporting it cannot be shown. The stream is then pointed at /dev/null (so later
    writes and the interpreter's final flush are quiet) and the command ends with its own status,
    not a traceback and exit 1."""
    stream = sys.stdout if file is None else file
    try:
        print(text, file=stream, flush=True)
    except OSError as exc:
        if exc.errno not in GONE_ERRNOS:
            raise
        _to_devnull(stream)
        return False
    return True


class GoneSafe:
    """A text stream for a command's running output (``listen``'s live lines): once the terminal or
    pipe behind it is gone (a closed ssh session), writes go to /dev/null instead of raising, so the
    command still stops cleanly and writes its other outputs (``listen --json > file``)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            self._guard(self._stream.write, text)
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            self._guard(self._stream.flush)

    def _guard(self, call, *args) -> None:
        try:
            call(*args)
        except OSError as exc:
            if exc.errno not in GONE_ERRNOS:
                raise
            self.gone = True
            _to_devnull(self._stream)


def _to_devnull(stream: TextIO) -> None:
    with contextlib.suppress(OSError, ValueError):  # ValueError: no file descriptor (a test's capture)
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


#: Third-party loggers that are quiet unless -vv is given.
NOISY_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch._dynamo", "torch.export")


class OneLineParser(argparse.ArgumentParser):
    """argparse with the house error format: one line naming the flag and where to read more.

    An argument no parser takes (``perception train --bogus``), which argparse reports from the top
    parser, is reported by the (sub)command chosen, so the line points to ``perception train --help``
    (``perception bench engine --help``), where its flags are listed."""

    subcommands: argparse.Action | None = None  # what add_subparsers returned: .dest, .choices (name -> parser)

    def add_subparsers(self, **kwargs):
        self.subcommands = super().add_subparsers(**kwargs)
        return self.subcommands

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            owner = self
            while isinstance(owner, OneLineParser) and owner.subcommands is not None:
                chosen = owner.subcommands.choices.get(getattr(parsed, owner.subcommands.dest, None))
                if chosen is None:
                    break
                owner = chosen
            owner.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def error(self, message: str):
        command = self.prog.removeprefix("perception").strip()
        where = f"perception {command}" if command else "perception"
        self.exit(2, f"perception: error: {command + ': ' if command else ''}{message}; see '{where} --help'\n")


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="perception",
        description="Real-time road-scene perception: drivable area, lanes and obstacles over ZeroMQ.",
    )
    parser.add_argument("--version", action="version", version=f"perception {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            load_command(name).add_arguments(p)
    return parser


def load_command(name: str):
    return importlib.import_module(f"perception.commands.{name.replace('-', '_')}")


def configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose >= 2 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname).1s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if verbose < 2:
        # The ONNX exporter's libraries narrate every graph pass at INFO; keep them for -vv.
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        # Imported by NNCF on a CPU-only machine, it warns that it found no CUDA runtime: true, and
        # no problem for anything this program does.
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def _chosen_command(argv: list[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    """The ``perception`` program (``argv`` None: the process's own arguments, and the process ends
    soon after) or a command run in process (``argv`` given: tests, embedding programs)."""
    if argv is None:
        try:
            return _main(sys.argv[1:])
        finally:
            # A command stopped by SIGINT/SIGTERM has returned: the interpreter's exit must not
            # hang on a thread that will not join (a node killed with its launcher would linger).
            from perception.signals import exit_if_stuck

            exit_if_stuck()
    return _main(list(argv))


def _main(argv: list[str]) -> int:
    command = _chosen_command(argv)
    if command == "run":
        # Signals from the first instruction: the node exits cleanly, with its stats, whenever
        # SIGINT/SIGTERM arrives (see perception/commands/run.py).
        from perception.signals import (
            install_startup_signals,  # standard library only: before the command's imports
        )

        install_startup_signals()
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    configure_logging(args.verbose, args.quiet)
    try:
        return int(load_command(args.command).main(args) or 0)
    except PerceptionError as exc:
        print(f"perception: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("perception: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`perception inspect m.onnx | head`): as for any Unix
        # filter, stop quietly; point stdout at /dev/null so the interpreter's final flush is quiet too.
        _to_devnull(sys.stdout)
        return 141
    except OSError as exc:
        if exc.errno in (errno.EIO, errno.ENXIO):
            # The terminal is gone (a closed ssh session) while the command was writing to it:
            # nothing can be shown any more; end quietly with the status of a hangup.
            _to_devnull(sys.stdout)
            _to_devnull(sys.stderr)
            return 129
        if exc.errno != errno.ENAMETOOLONG:
            raise
        # The OS refuses the name before any file is touched: one line for every path a user can
        # type (--source, --model, --config, --out, a launch file's parameters...), not a traceback.
        from perception.config import short

        print(f"perception: error: path {short(str(exc.filename or ''))} is too long for the file system "
              "(a name part over 255 bytes, or over 4096 in all); check the path", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
