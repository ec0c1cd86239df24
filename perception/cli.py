"""The ``perception`` command: a thin dispatcher over one module per subcommand.

Each subcommand lives in ``perception/commands/<name>.py`` and provides ``add_arguments(parser)``
and ``main(args) -> int``. Only the chosen subcommand's module is imported, so ``perception run``
never pulls in the training side (or torch).

Errors from outside (``PerceptionError``) are caught here, once, and printed as one line:
``perception: error: <what is wrong and how to fix it>`` with a non-zero exit status. So is an
``OSError`` about a file that a command did not catch (permission denied, a full or failing disk):
the file and the cause. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import re
import shlex
import sys

from perception import __version__, console
from perception.errors import PerceptionError

#: name -> one-line help. The module is perception.commands.<name with '-' as '_'>.
COMMANDS: dict[str, str] = {
    "run": "run the node: source -> engine -> masks published over ZeroMQ",
    "listen": "subscribe to mask topics and report rates, latency and missing sequence numbers",
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
#: Third-party loggers that are quiet unless -vv is given.
NOISY_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch._dynamo", "torch.export")
#: The loggers that -v turns to DEBUG: this program's own (the node, the commands, the bench).
OWN_LOGGERS = ("perception", "bench")

VERBOSE_HELP = ("more log output: -v adds this program's debug lines (the resolved settings, where an error was "
                "raised), -vv also other libraries' debug output; before or after the command")
QUIET_HELP = "only warnings and errors (the result lines on stdout stay); not with -v"


def _add_verbosity(parser: argparse.ArgumentParser, level: str = "") -> None:
    """-v/-q on ``parser``: every (sub)command has them, so ``perception run -q`` works as well as
    ``perception -q run``. ``level`` keeps each parser's own dest: a subcommand's namespace replaces
    its parent's values of the same dest, which would lose the ``-v`` of ``perception -v run -v``."""
    parser.add_argument("-v", "--verbose", action="count", dest="verbose" + level,
                        default=0 if not level else argparse.SUPPRESS, help=VERBOSE_HELP)
    parser.add_argument("-q", "--quiet", action="store_true", dest="quiet" + level,
                        default=False if not level else argparse.SUPPRESS, help=QUIET_HELP)


def verbosity(args: argparse.Namespace) -> tuple[int, bool]:
    """(how many -v, whether -q) over every level of the command line."""
    given = vars(args)
    verbose = sum(v for k, v in given.items() if k == "verbose" or k.startswith("verbose@"))
    quiet = any(v for k, v in given.items() if k == "quiet" or k.startswith("quiet@"))
    return verbose, quiet


def _did_you_mean(word: str, choices: list[str]) -> str:
    """``; did you mean '--source'?`` for the choice closest to ``word``, or nothing. Flags are
    compared without their dashes: every long flag shares ``--``, which made ``--bogus`` "close" to ``--out``."""
    import difflib

    names = {choice.lstrip("-"): choice for choice in choices}
    bare = word.lstrip("-")
    # A flag the word begins (``--mask`` for ``--mask-size``) before one spelled alike (``--task``):
    # flags are never abbreviated, so a cut-short flag is the likeliest slip.
    starts = [name for name in names if bare and name.startswith(bare)]
    if 1 < len(starts) <= 3:  # --wait: --wait-subscribers or --wait-timeout, each as likely
        return "; did you mean " + " or ".join(repr(names[n]) for n in sorted(starts)) + "?"
    close = (difflib.get_close_matches(bare, starts, n=1, cutoff=0) if starts
             else difflib.get_close_matches(bare, list(names), n=1))
    return f"; did you mean {names[close[0]]!r}?" if close else ""


def _shell_word(text: str) -> str:
    """``text`` as one shell word on one line: as typed where it needs no quoting, in single quotes
    (``shlex.quote``) where every character is printable, else in bash's ``$'...'`` with each one that
    is not escaped (a newline in a file name cannot split the error line; a byte that is not UTF-8 is
    written ``\\xff``, as ``cvpath.display`` does)."""
    if text.isprintable():
        return shlex.quote(text)
    out = []
    for c in text:
        if "\udc80" <= c <= "\udcff":  # an undecodable byte (os.fsdecode's surrogateescape)
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif c in "\\'":
            out.append("\\" + c)
        else:
            out.append(c if c.isprintable() else repr(c)[1:-1])
    return "$'" + "".join(out) + "'"


def _expanded_pattern(args: list[str], extras: list[str]) -> str | None:
    """The line for words left over because the shell expanded an unquoted pattern (``--source
    frames/*.png`` or ``--source=frames/*.png`` gives the flag one file and leaves the others over):
    they all name files, the word before them too. ``None`` when that is not it."""
    if not extras or any(word.startswith("-") for word in extras) or not all(os.path.exists(w) for w in extras[:50]):
        return None
    at = next((i for i in range(len(args) - len(extras) + 1) if args[i:i + len(extras)] == extras), None)
    if at is None or at < 1:
        return None
    if args[at - 1].startswith("--") and "=" in args[at - 1]:  # --source=frames/0.png frames/1.png ...
        flag, _, first = args[at - 1].partition("=")
    elif at >= 2 and args[at - 2].startswith("--"):
        flag, first = args[at - 2].partition("=")[0], args[at - 1]
    else:
        return None
    if not os.path.exists(first):
        return None
    files = [first, *extras]
    folder = os.path.dirname(files[0])
    suffixes = {os.path.splitext(f)[1] for f in files}
    same = all(os.path.dirname(f) == folder for f in files) and len(suffixes) == 1
    what = "folders" if all(os.path.isdir(f) for f in files[:50]) else "files"
    shown = " ".join(map(_shell_word, files[:3])) + (f" ... ({len(files)} in all)" if len(files) > 3 else "")
    head = f"{_shell_word(flag)} takes one value, and got {len(files)} {what} ({shown})"
    if not same or what == "folders" or flag != "--source":
        # Not one folder's files of one kind, or a flag that takes no pattern (--config *.yaml):
        # no pattern to suggest; --source names each camera once.
        fix = ("give each camera its own --source NAME=PATH" if flag == "--source"
               else f"give {_shell_word(flag)} one of them")
        return f"{head}; {fix}"
    pattern = _shell_word(os.path.join(folder, "*" + suffixes.pop()))
    return f"{head}: the shell expanded an unquoted pattern; quote it: {_shell_word(flag)} {pattern}"


class OnceFlag(argparse.Action):
    """A flag that takes one value refuses to be given twice, in one line naming both values:
    argparse keeps the last one without a word (``run --model a.onnx --model b.onnx`` ran b.onnx).
    The default action of every ``OneLineParser``, so every command's single-value flags, hand-written
    or generated from the declarations, refuse a repeat; repeatable flags (``append``: ``--source``,
    ``--set``, ``bench engine --model``) and switches are not this action. A config file's keys are
    not flags: ``--config node.yaml --width 640`` overrides the file's width, as documented.

    A parser may add a hint per flag (``parser.repeat_hints = {"model": "..."}``), said after the fix."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001 - argparse hook
        if not self.option_strings:  # a positional: argparse matches it once
            setattr(namespace, self.dest, values)
            return
        given = namespace.__dict__.setdefault("_flags_given", {})  # dest -> (option as typed, value text)
        text = _value_text(values)
        if self.dest in given:
            from perception.config import cut
            from perception.errors import hide_credentials

            first_option, first = given[self.dest]
            # the long spelling; an old spelling (``_DeprecatedFlag``) given twice as itself, as typed;
            # the old and the current spelling together, the current flag (each is shown as typed)
            if getattr(self, "current", None) and first_option == option_string:
                name = option_string
            else:
                name = getattr(self, "current", None) or next(
                    (o for o in self.option_strings if o.startswith("--")), self.option_strings[0])
            both = ((first, text) if first_option == option_string and first and text  # a flag alone: its name
                    else (f"{first_option} {first}".strip(), f"{option_string} {text}".strip()))
            hint = getattr(parser, "repeat_hints", {}).get(self.dest)
            raise argparse.ArgumentError(None, hide_credentials(
                f"argument {name}: given twice ({cut(both[0], 80)}, {cut(both[1], 80)}); give it once"
                + (f" ({hint})" if hint else "")))
        given[self.dest] = (option_string, text)
        setattr(namespace, self.dest, values)


#: The namespace attribute where ``_DeprecatedFlag`` leaves its warnings for ``warn_deprecated``.
DEPRECATIONS = "_deprecations_said"


def warn_deprecated(namespace: argparse.Namespace) -> None:
    """Log the warnings of the old flag spellings (``perception.flags._DeprecatedFlag``) given on the
    command line parsed into ``namespace``, once. Said once the whole line has parsed, so that a
    line refused for another reason (the old flag given twice) is refused in its one line."""
    for message in namespace.__dict__.pop(DEPRECATIONS, ()):
        logging.getLogger("perception.flags").warning("%s", message)


def _value_text(values) -> str:  # noqa: ANN001 - what argparse converted
    """A flag's value as typed, near enough for an error line (a float flag keeps its text)."""
    if isinstance(values, (list, tuple)):
        return " ".join(_value_text(v) for v in values)
    return str(getattr(values, "typed", values))


def refuse_repeats(parser: argparse.ArgumentParser) -> None:
    """Make ``OnceFlag`` the default action of the flags added to ``parser`` from now on."""
    parser.register("action", None, OnceFlag)
    parser.register("action", "store", OnceFlag)


class OneLineParser(argparse.ArgumentParser):
    """argparse with the house error format: one line naming the flag and where to read more.

    An argument no parser takes (``perception train --bogus``), which argparse reports from the top
    parser, is reported by the (sub)command chosen, so the line points to ``perception train --help``
    (``perception bench engine --help``), where its flags are listed. A mistyped command, mode,
    choice or flag gets a "did you mean" (Python 3.11's argparse has no ``suggest_on_error``)."""

    subcommands: argparse.Action | None = None  # what add_subparsers returned: .dest, .choices (name -> parser)

    def __init__(self, *args, **kwargs):
        # No prefix abbreviations: `bench pipeline --batch 2` was taken as --batch-timeout-ms 2,
        # `run --max 2` as --max-frames. Every command and bench mode is built by this class.
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)
        refuse_repeats(self)  # a single-value flag given twice is an error, not "the last one wins"

    def add_subparsers(self, **kwargs):
        self.subcommands = super().add_subparsers(**kwargs)
        plain = self.subcommands.add_parser

        def add_parser(name: str, **options):
            parser = plain(name, **options)
            if isinstance(parser, OneLineParser):
                _add_verbosity(parser, "@" + parser.prog)
            return parser

        self.subcommands.add_parser = add_parser  # every command and bench mode takes -v/-q too
        return self.subcommands

    def chosen(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        """The innermost (sub)command parser that ``parsed`` went through (``perception bench engine``'s)."""
        owner: argparse.ArgumentParser = self
        while isinstance(owner, OneLineParser) and owner.subcommands is not None:
            chosen = owner.subcommands.choices.get(getattr(parsed, owner.subcommands.dest, None))
            if chosen is None:
                break
            owner = chosen
        return owner

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            owner = self.chosen(parsed)
            flag = next((word.partition("=")[0] for word in extras if word.startswith("-") and word != "-"), None)
            hint = ""
            if flag is not None:
                # the flags its --help lists (old spellings are hidden there): the lines that start
                # with an option, "  -v, --verbose", not the help text, which may name other commands' flags
                known = [option.split()[0] for line in owner.format_help().splitlines()
                         if re.match(r"  -\S", line) for option in line.strip().split("  ")[0].split(", ")]
                hint = _did_you_mean(flag, known)
            expanded = _expanded_pattern(list(sys.argv[1:] if args is None else args), extras)
            if expanded is not None:
                owner.error(expanded)
            shown = " ".join(w if w.isprintable() else _shell_word(w) for w in extras[:5]) + (
                f" ... ({len(extras)} in all)" if len(extras) > 5 else "")
            owner.error(f"unrecognized arguments: {shown}{hint}")
        warn_deprecated(parsed)
        return parsed

    def error(self, message: str):
        choice = re.search(r"invalid choice: '(.*?)' \(choose from (.*)\)$", message)
        if choice:
            message += _did_you_mean(choice.group(1), re.findall(r"'([^']*)'", choice.group(2)))
        command = self.prog.removeprefix("perception").strip()
        where = f"perception {command}" if command else "perception"
        self.exit(2, f"perception: error: {command + ': ' if command else ''}{message}; see '{where} --help'\n")


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="perception",
        description="Real-time road-scene perception: drivable area, lanes and obstacles over ZeroMQ.",
        epilog="'perception COMMAND --help' (or 'perception help COMMAND') shows a command's flags.",
    )
    parser.add_argument("--version", action="version", version=f"perception {__version__}")
    _add_verbosity(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            load_command(name).add_arguments(p)
    return parser


def load_command(name: str):
    return importlib.import_module(f"perception.commands.{name.replace('-', '_')}")


def configure_logging(verbose: int, quiet: bool) -> None:
    """The log ladder: default, this program's INFO and other libraries' WARNING; -v, this
    program's DEBUG too; -vv, every library's DEBUG; -q, WARNING for all.

    Only a process without logging set up yet is configured (the ``perception`` program): a test or
    an embedding program that has its own handlers keeps its levels. ``-q`` also turns progress
    off (``progress.set_quiet``): it is neither a warning nor an error."""
    from perception import progress

    progress.set_quiet(quiet)
    if logging.getLogger().handlers:
        return
    own = logging.WARNING if quiet else logging.DEBUG if verbose >= 1 else logging.INFO
    others = logging.WARNING if quiet or verbose < 2 else logging.DEBUG
    logging.basicConfig(level=others, format="%(asctime)s %(levelname).1s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(own)
    if verbose < 2:
        # The ONNX exporter's libraries narrate every graph pass at INFO; keep them for -vv.
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        # Imported by NNCF on a CPU-only machine, it warns that it found no CUDA runtime: true, and
        # no problem for anything this program does.
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


#: The commands whose process (and the nodes and probe children it starts) get numpy's OpenBLAS at
#: one thread (``main``): they multiply no matrices in numpy (the runtime and the operator tools;
#: not train, eval, export or bench, whose work or children set their own threads).
BLAS_THREADS_OFF = ("run", "launch", "listen", "record", "replay", "view", "demo", "inspect")


def _chosen_command(argv: list[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    """The ``perception`` program (``argv`` None: the process's own arguments, and the process ends
    soon after) or a command run in process (``argv`` given: tests, embedding programs)."""
    if argv is None:
        from perception.signals import as_program, command_done, exit_if_stuck, exit_past_native_threads

        as_program()
        console.escape_unencodable()
        if _chosen_command(sys.argv[1:]) in BLAS_THREADS_OFF:
            # numpy's OpenBLAS starts a thread per core when numpy is imported, and where the system
            # refuses one (ulimit -u, a pids limit) it raises SIGINT in this process, which the node
            # took for a Ctrl-C ("stopped (signal SIGINT)", exit 0). These commands do no BLAS work
            # in numpy (the node's inference is ONNX Runtime's, OpenVINO's or torch's, with their own
            # threads): one thread, none started. A user's own value wins.
            os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        try:
            code = _main(sys.argv[1:])
            # Done: a signal from now on (a supervisor's second SIGTERM just after the final stats)
            # ends the process with this status, not by the signal's default action.
            command_done(code)
        finally:
            # A command stopped by SIGINT/SIGTERM has returned: the interpreter's exit must not
            # hang on a thread that will not join (a node killed with its launcher would linger).
            exit_if_stuck()
        exit_past_native_threads(code)  # nor abort when such a thread's C call returns during it
        return code
    return _main(list(argv))


def _main(argv: list[str]) -> int:
    quiet_opencv()
    at = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), None)
    if at is not None and argv[at] == "help":
        # 'perception help run' is 'perception run --help' (and 'perception help' the overview)
        argv = [*argv[:at], *argv[at + 1:], "--help"]
    command = _chosen_command(argv)
    if command == "run":
        # Signals from the first instruction: the node exits cleanly, with its stats, whenever
        # SIGINT/SIGTERM arrives (see perception/commands/run.py).
        from perception.signals import (  # standard library only: before the command's imports
            STARTUP_SIGNALS,
            install_startup_signals,
        )

        install_startup_signals()
        try:
            return _parse_and_run(argv, command)
        finally:
            # run's own main gives the signals back; a command line refused before it (argparse's
            # exit for a flag given twice, --help) left them caught, with their stop watch running,
            # in a program that calls main() and goes on.
            if STARTUP_SIGNALS.installed:
                STARTUP_SIGNALS.uninstall()
    return _parse_and_run(argv, command)


def quiet_opencv() -> None:
    """OpenCV's own console lines (a decoder's "[ERROR:...] ... IHDR chunk shall be first" for a
    damaged PNG, once per read) off for every command: our own log line or error says what happened,
    and OpenCV's failures still reach the code as return values and cv2.error. Set before a command
    imports cv2 (which reads ``OPENCV_LOG_LEVEL`` once), here rather than at ``import perception``, so
    that a program using the library keeps its own OpenCV logging. A user's own value wins
    (``OPENCV_LOG_LEVEL=INFO``)."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
    cv2 = sys.modules.get("cv2")  # already loaded (a command run in process): set it directly
    if cv2 is not None and os.environ["OPENCV_LOG_LEVEL"] == "SILENT":
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def _parse_and_run(argv: list[str], command: str | None) -> int:
    """Parse ``argv`` for ``command`` (``_chosen_command``), set up logging, and run the command,
    turning a ``PerceptionError`` (and the few OS failures a user causes) into its one line and status."""
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        # One line, as for any other mistake (a script that forgot its command fails, exit 2); the
        # overview is 'perception --help'.
        parser.error(f"no command given; choose one of: {', '.join(COMMANDS)}")
    owner = parser.chosen(args)
    verbose, quiet = verbosity(args)
    if verbose and quiet:
        owner.error("-q and -v contradict each other; give one of them")
    configure_logging(verbose, quiet)
    if log.isEnabledFor(logging.DEBUG):
        import platform
        import shlex

        from perception.errors import hide_credentials

        log.debug("perception %s, Python %s (%s); command line: %s", __version__, platform.python_version(),
                  sys.executable, hide_credentials(shlex.join(["perception", *argv])))
    console.reset_stdout_failure()
    code = _run_command(args, owner)
    said = console.stdout_failed()
    if said is not None:
        # The work is done and its files are whole (a recording, a bench report); only the lines
        # that report it are lost. Not a success: a script reading stdout got nothing.
        console.emit(f"perception: error: {said}", file=sys.stderr)
        return code or 1
    return code


def _run_command(args: argparse.Namespace, owner: argparse.ArgumentParser) -> int:
    """Run the command chosen in ``args``; its status, with a ``PerceptionError`` (and the few OS
    failures a user causes) said in one line."""
    try:
        return int(load_command(args.command).main(args) or 0)
    except PerceptionError as exc:
        _log_origin(exc)
        # emit: a command stopped by a closed terminal (SIGHUP) keeps its own status for the error
        # it ends with (record's "nothing recorded", exit 4), not exit 1 from the write failing.
        console.emit(f"perception: error: {_as_said(exc, owner, args)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        console.emit("perception: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`perception inspect m.onnx | head`): as for any Unix
        # filter, stop quietly; point stdout at /dev/null so the interpreter's final flush is quiet too.
        console.to_devnull(sys.stdout)
        return 141
    except OSError as exc:
        if exc.errno in (errno.EIO, errno.ENXIO):
            # The terminal is gone (a closed ssh session) while the command was writing to it:
            # nothing can be shown any more; end quietly with the status of a hangup.
            console.to_devnull(sys.stdout)
            console.to_devnull(sys.stderr)
            return 129
        if exc.errno == errno.ENAMETOOLONG:
            # The OS refuses the name before any file is touched: one line for every path a user can
            # type (--source, --model, --config, --out, a launch file's parameters...), not a traceback.
            from perception.config import short

            print(f"perception: error: path {short(str(exc.filename or ''))} is too long for the file system "
                  "(a name part over 255 bytes, or over 4096 in all); check the path", file=sys.stderr)
            return 2
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):  # a system limit, with or without a file named
            from perception.errors import os_error_line

            _log_origin(exc)
            console.emit(f"perception: error: {os_error_line(exc)}", file=sys.stderr)
            return 1
        if not isinstance(exc, PermissionError) and exc.filename is None and exc.filename2 is None:
            raise  # about no file: a bug, with its traceback
        # The last net for a file that a command's own checks did not reach (each names its file and
        # the fix where it can): a file or folder this user may not read or write, a disk that failed
        # or filled up. One line naming the file and the cause, not a traceback; -v says where.
        from perception.errors import os_error_line

        _log_origin(exc)
        console.emit(f"perception: error: {os_error_line(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, PermissionError) else 1
    except Exception as exc:
        said = _limit_reached(exc)
        if said is None:
            raise  # a bug, with its traceback
        _log_origin(exc)
        console.emit(f"perception: error: {said}", file=sys.stderr)
        return 1


def _limit_reached(exc: Exception) -> str | None:
    """The error line's text for a system limit that an exception other than OSError reports, or
    None: a thread the system would not start (a process or memory limit) where the command did
    not say so itself (its own places raise ResourceError: the node's stages, its engine's loading),
    or ZeroMQ's socket that the open-file limit refused (ZMQError EMFILE)."""
    from perception.errors import THREAD_REFUSED, memory_refused, os_error_line, thread_refused

    if isinstance(exc, RuntimeError) and THREAD_REFUSED in str(exc):
        return thread_refused("a thread")
    if isinstance(exc, MemoryError):  # numpy's _ArrayMemoryError too
        return memory_refused(str(exc))
    if isinstance(exc, ImportError) and "failed to map segment" in str(exc):  # ulimit -v below a library's size
        return memory_refused(str(exc), "loading a library")
    if getattr(exc, "errno", None) in (errno.EMFILE, errno.ENFILE):
        return os_error_line(OSError(exc.errno, str(exc)))
    return None


def _as_said(exc: PerceptionError, owner: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The error line's text: a settings error about a flag names the command and the flag as typed
    (``train: lr=-1.0 is out of range [0, 10] (--lr -1)``), as argparse's own errors do."""
    if getattr(exc, "setting", None) is None:
        return str(exc)
    from perception.flags import command_error

    return command_error(exc, owner, args, owner.prog.removeprefix("perception").strip())


def _log_origin(exc: BaseException) -> None:
    """-v: where the error was raised (the one line printed says what, not where)."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    import traceback

    # An error said again with more context (config_from_flags adds the flag as typed) keeps the
    # first as its context: that one was raised where the problem was found.
    while isinstance(exc.__context__, PerceptionError):
        exc = exc.__context__
    if exc.__traceback__ is None:
        return
    last = traceback.extract_tb(exc.__traceback__)[-1]
    log.debug("%s raised at %s:%s in %s()", type(exc).__name__, last.filename, last.lineno, last.name)


if __name__ == "__main__":
    sys.exit(main())
