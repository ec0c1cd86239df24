"""``perception record``: subscribe to a node's topics and write them to an MCAP file.

    perception record --namespace perception/front --out out/run.mcap --duration 60
    perception record --topic perception/front/lane perception/front/stats --out lanes.mcap
    perception record --namespace perception/front --out out/run.mcap --split-duration 60   # run_0.mcap, run_1.mcap...
    perception record --namespace perception/front --out out/run.mcap --split-duration 60 --append   # after run_N

    perception record --recover out/run.mcap          # rebuild a file whose recorder was killed
                                                      # (Ctrl-C / SIGTERM: stopped, nothing replaced, exit 128+N)

Refuses to start when ``--out`` or any ``<stem>_N.mcap`` split of it already exists, unless
``--overwrite`` (which first removes them all, so no old split is replayed with the new ones) or,
for a split recording, ``--append`` (which keeps them and goes on at the next free index: a
respawned recorder), and when another recorder writes to the same ``--out`` (its lock file).
Stops after ``--duration`` or on Ctrl-C / SIGTERM, finishing the file either way. A recording that
received nothing leaves no file (nor the folders it made for ``--out``) and exits 4 with one line,
as ``listen`` and ``view`` do (a plain one when a stop signal ended it); a full disk ends it with
one line naming the file to ``--recover`` and the messages written whole there, or, when none
reached the disk, saying the empty file was removed, exit 1. The layout
(sensor_msgs/msg/Image masks, std_msgs/msg/String JSON, wire headers in ``<topic>/meta``) is
described in ``perception/mcap_layout.py``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from perception.commands.listen import cut_off_line, no_messages_hint
from perception.console import emit
from perception.errors import ConfigError, SourceError, SourceUnavailableError
from perception.flags import add_flags, config_from_flags, flag_values, flags
from perception.mcap_layout import split_files, split_path
from perception.overwrite import refuse_special_file
from perception.record import RecordConfig, Recorder
from perception.recover import RecoveryStopped, recording_is_intact, recover_recording, same_file
from perception.signals import install_signal_handlers
from perception.sinks import missing_folders, remove_empty_folders
from perception.subscribe_unasked import unasked_line

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, RecordConfig)
    # --out is required to record (its help says so), not with --recover: this help says that.
    parser.add_argument("--recover", type=Path, metavar="FILE|DIR",
                        help="record nothing: rebuild FILE, left unfinished by a killed recorder, into an indexed MCAP "
                             "in place, the original kept as FILE.damaged (--out, not required with --recover: "
                             "write it there instead); given a folder of splits, write its metadata.yaml")


def main(args: argparse.Namespace) -> int:
    if args.recover is not None:
        return recover(args)
    config = config_from_flags(RecordConfig, args, source="perception record")
    check_out(config.out)
    created = missing_folders(config.out.parent)  # made for --out by the writer; removed if nothing is kept
    try:
        code = _record(config)
    except BaseException:
        remove_empty_folders(created)
        raise
    if code:  # stopped before any message: nothing is kept
        remove_empty_folders(created)
    return code


def check_out(out: Path) -> None:
    """Refuse, before connecting, an ``--out`` that is a folder, a device, FIFO or socket (or has a
    split that is one), or lies under a file (``--out drive.mp4/x.mcap``), whatever ``--overwrite``
    says; warn of one not named ``.mcap``, which ROS
    tools and a replay of its folder pass over."""
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file path such as {out / 'run.mcap'}")
    for path in (out, *split_files(out)):  # a device or FIFO is no earlier recording: --overwrite removed /dev/null
        refuse_special_file(path, flag="--out")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--out {out}: {parent} is a file, not a folder; choose another --out")
            break
    if out.suffix != ".mcap":
        log.warning("--out %s: a recording is an MCAP file, and ROS tools and 'perception replay' of its folder "
                    "look for .mcap: name it %s", out, out.with_suffix(".mcap").name if out.suffix else f"{out.name}.mcap")


def _record(config: RecordConfig) -> int:
    recorder = Recorder(config)
    stop = threading.Event()
    stopped_by: list[int] = []  # the stop signal, for the line of a recording stopped before any message

    def on_stop(signum: int, _frame: object) -> None:
        stopped_by.append(signum)
        stop.set()

    what = config.namespace.rstrip("/") + "/*" if config.namespace else ", ".join(config.topic)
    first = recorder.first_split
    where = f"{split_path(config.out, first)}, {split_path(config.out, first + 1).name}, ..." if config.splits \
        else config.out
    with install_signal_handlers(on_stop):  # before the first line: a stop from then on finishes the file
        emit(f"recording {what} from {config.endpoint} to {where}")
        continuing = recorder.continuing()
        if continuing:
            log.info("%s", continuing)
        summary = recorder.run(stop)
    if summary.messages == 0 and not any(summary.skipped.values()):
        # Nothing at all arrived: no empty file is left (it would only block the next recording to
        # this --out), and one line says so: exit 4 as for a stream that is not there (a launch
        # file respawns the node), as listen and view.
        kept = recorder.kept  # --overwrite removes the earlier recording only once a message comes
        left = f" (the earlier recording there, {len(kept)} file{'s' if len(kept) > 1 else ''}, is left as it was)" \
            if kept else ""
        if stopped_by:
            # Stopped (Ctrl-C, a launch ending, systemd) before anything came: a normal stop, said
            # plainly, not as an error with a hint about the node; the exit status stays 4.
            name = signal.Signals(stopped_by[0]).name
            emit(f"stopped ({name}) after {summary.seconds:.1f} s, before any message arrived from "
                 f"{config.endpoint}; nothing recorded, so no file was written to {config.out}{left}", file=sys.stderr)
            return SourceUnavailableError.exit_code
        # With the hint (the summary would say it again).
        # Why the node refused this client, when it did (the subscriber's monitor saw it).
        failure = recorder.handshake_failure
        hint = no_messages_hint("--namespace" if config.namespace else "--topic", curve=bool(config.curve_server_key),
                                endpoint=config.endpoint, handshake_failure=failure)
        # Or only messages on longer topics that start with a --topic came (a typo, a namespace): said so.
        unasked = unasked_line(config.endpoint, config.topic, summary.seconds, recorder.unasked) if config.topic else None
        raise SourceUnavailableError(f"nothing recorded, so no file was written to {config.out}{left}: " + (
            unasked or f"no messages received from {config.endpoint} in {summary.seconds:.1f} s; {hint}"))
    emit(summary.format())  # also when a closed ssh session (SIGHUP) stopped it: the file is finished
    if summary.messages == 0:  # messages came but every one was skipped: a bad input (exit 2)
        why = recorder.last_version_error
        raise SourceError(f"nothing recorded from {config.endpoint}: every message received was skipped "
                          f"(see the counts above{f'; the last of another version: {why}' if why else ''}); "
                          "no file was written")
    if recorder.cut_off is not None:
        # Admitted, then refused for good (a revoked key): the file is finished; exit 4, which a
        # launch file respawns (a new recorder makes a new handshake).
        raise SourceUnavailableError(cut_off_line(config.endpoint, summary.messages, recorder.cut_off))
    if recorder.handshake_failure is not None:  # still refused at the end, a failure libzmq retries
        log.warning("at the end, %s was refusing this recorder's handshakes: %s", config.endpoint,
                    recorder.handshake_failure)
    return 0


def recover(args: argparse.Namespace) -> int:
    """``--recover FILE [--out OUT]``: rebuild a killed recording (``perception.recover.recover_recording``)."""
    recording = flag_values(RecordConfig, args)
    recording_flags = [f.option for f in flags(RecordConfig) if f.name in recording and f.name not in ("out", "endpoint", "overwrite")]
    if recording_flags:
        raise ConfigError(f"--recover rebuilds a file and records nothing; leave out {', '.join(recording_flags)}")
    out = recording.get("out")
    if out is not None and same_file(out, args.recover):
        out = None  # --out FILE is in place: the original is kept as FILE.damaged all the same
    if out is not None:  # a device or FIFO is no file to write: --overwrite replaced /dev/null (V1 of s42)
        refuse_special_file(Path(out), flag="--out")
    # Ctrl-C, SIGTERM (a script's timeout, systemd) and a hangup stop it between two records, also
    # when SIGINT came ignored (a background job of a script): the input is left as it was and the
    # partial FILE.recovering removed, with one line and the status of death by that signal.
    stop = threading.Event()
    stopped_by: list[int] = []

    def on_stop(signum: int, _frame: object) -> None:
        stopped_by.append(signum)
        stop.set()

    started = time.monotonic()
    with install_signal_handlers(on_stop):
        try:
            if out is None and recording_is_intact(args.recover, stop=stop):
                emit(f"{args.recover} is complete (footer, summary and index present, every chunk reads); nothing "
                     "to recover")
                return 0
            summary = recover_recording(args.recover, out, overwrite=bool(recording.get("overwrite")), stop=stop)
        except RecoveryStopped:
            name = signal.Signals(stopped_by[0]).name
            partial = Path(out if out is not None else args.recover)
            emit(f"perception: interrupted ({name}) after {time.monotonic() - started:.1f} s: {args.recover} was not "
                 f"recovered and is left as it was{'' if out is None else f', nothing was written to {out}'} (the "
                 f"partial {partial.with_name(partial.name + '.recovering')} is removed); run 'perception record "
                 f"--recover {args.recover}' again to rebuild it", file=sys.stderr)
            return 128 + stopped_by[0]
    emit(summary.format())
    return 0
