"""Recording: subscribe to a node's topics and write them to MCAP files that ROS 2 tools open.

``perception record --endpoint tcp://127.0.0.1:5556 --namespace perception/front --out run.mcap``
(or ``--topic perception/front/lane ...``; ``--duration S``; ``--split-duration S`` /
``--split-size MB`` for ``run_0.mcap``, ``run_1.mcap``...; Ctrl-C ends it and finishes the file;
it refuses an ``--out`` where an earlier recording is, unless ``--overwrite``).
``perception record --recover run.mcap`` rebuilds a file whose recorder was killed.

The file layout is ``perception/mcap_layout.py``; the writer, splits included, ``perception/mcap_writer.py``.
This module is the subscribe side: the flags, the receive loop and its summary.
"""

from __future__ import annotations

import errno
import json
import logging
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from perception import __version__, contracts
from perception.config import same_setting, setting
from perception.errors import PerceptionError
from perception.mcap_layout import (
    IMAGE_SCHEMA,
    META_SUFFIX,
    STRING_SCHEMA,
    VALUES_KEY,
    WIRE_TOPIC_KEY,
    split_path,
)
from perception.mcap_writer import BrokenRecording, FrameTally, TopicCount
from perception.options import CurveClientOptions, ReaderQueueOptions, ReaderTopicOptions, leading_slash_error
from perception.record_splits import Abandoned, SplitWriter
from perception.subscribe_unasked import Unasked

log = logging.getLogger(__name__)

#: The recorder's fixed reconnect interval (ms) while the node is not (yet) there.
RECONNECT_MS = 10
#: At a stop, what is still queued for the recorder (a recorder behind the node) is written for up
#: to this many seconds; what is queued after that is counted for up to ``STOP_COUNT_S`` more, and
#: said as not recorded (``Recorder._drain``). A launch waits 5 s for a node to stop.
STOP_DRAIN_S = 2.0
STOP_COUNT_S = 1.0


@dataclass
class RecordConfig:
    """The flags of ``perception record`` (and the parameters of a ``record`` launch node)."""

    out: Path = setting(help="output .mcap file (with --recover: where the rebuilt file goes)",
                        required_text="required unless --recover")
    endpoint: str = setting(contracts.DEFAULT_ENDPOINT, help="publisher endpoint")
    # One of the two is required when recording; __post_init__ says so (not argparse, so --recover needs neither).
    namespace: str | None = setting(None, exclusive="what", help="every topic under this namespace, e.g. perception/front")
    topic: list[str] = setting(default_factory=list, exclusive="what", metavar="T", help="exact topics to record")
    duration_s: float | None = setting(None, lo=0.0, flag="--duration", metavar="S", old_names=("duration",),
                                       help="stop after S seconds (default and 0: until Ctrl-C)")
    curve_server_key: str | None = same_setting(CurveClientOptions, "curve_server_key")
    curve_key: str | None = same_setting(CurveClientOptions, "curve_key")
    max_mask_pixels: int = setting(contracts.MAX_MASK_PIXELS, lo=1, hi=contracts.MAX_MASK_SIDE ** 2, metavar="N",
                                   help="skip masks declaring more than N pixels, before decoding")
    max_queue_mb: int = same_setting(ReaderQueueOptions, "max_queue_mb")
    max_topics: int = same_setting(ReaderTopicOptions, "max_topics")
    #: Start a new split file after this many seconds (rosbag2's --max-bag-duration).
    split_duration: float | None = setting(None, lo=0.001, metavar="S",
                                           help="write <out stem>_0.mcap, _1.mcap, ... starting a new file every S seconds")
    #: Start a new split file once the open one holds this many MB (rosbag2's --max-bag-size).
    split_size: float | None = setting(None, lo=0.001, metavar="MB",
                                       help="write <out stem>_0.mcap, _1.mcap, ... starting a new file at MB megabytes")
    #: Compressed MCAP chunk size: the recorder holds the chunk it is filling in memory, so a recorder
    #: killed outright (SIGKILL, power loss) loses at most this much; smaller chunks index more often.
    chunk_size_kb: int = setting(1024, lo=4, hi=65536, flag="--chunk-size", metavar="KB",
                                 help="MCAP chunk size in KiB: a recorder killed outright loses at most the chunk it "
                                      "is filling")
    overwrite: bool = setting(False, exclusive="earlier", help="replace an existing --out and every old "
                                                               "<stem>_N.mcap split of it instead of refusing to "
                                                               "start (removed when the first message arrives)")
    #: Go on after the splits already there (a respawned recorder): the first new split is the next
    #: free index; the earlier ones are kept as they are (see ``SplitWriter``).
    append: bool = setting(False, exclusive="earlier",
                           help="with --split-*: keep the <stem>_N.mcap splits already there and write the new "
                                "ones after the last of them (for a recorder that is restarted, launch 'respawn')")

    def __post_init__(self) -> None:
        if bool(self.namespace) == bool(self.topic):
            raise ValueError("give --namespace NS (all its topics) or --topic T ... (exact topics), one of the two")
        for flag, name in [("--namespace", self.namespace), *(("--topic", t) for t in self.topic)]:
            problem = leading_slash_error(flag, name, publishing=False)
            if problem is not None:
                raise ValueError(problem)
        if self.append and self.overwrite:
            raise ValueError("--append keeps the earlier splits and --overwrite removes them: give one of the two")
        if self.append and not self.splits:
            raise ValueError("--append writes new splits after the earlier ones: give --split-duration S or "
                             "--split-size MB too (an MCAP file cannot be appended to)")

    @property
    def splits(self) -> bool:
        return self.split_duration is not None or self.split_size is not None


@dataclass
class RecordSummary:
    """What a recording run wrote, and what it received but skipped: ``skipped`` holds the
    subscriber's ``malformed`` / ``version_mismatch`` counts and ``write_errors`` (messages the
    MCAP writer refused)."""

    path: Path
    seconds: float
    counts: dict[str, TopicCount]
    skipped: dict[str, int] = field(default_factory=dict)
    #: The files written: ``[path]``, or the splits in order.
    files: list[Path] = field(default_factory=list)
    #: Where it subscribed, and the flag that chose the topics (for the hint when nothing came).
    endpoint: str = ""
    what_flag: str = "--namespace"
    #: Whether it subscribed with CURVE keys (the hint names them otherwise).
    curve: bool = False
    #: Masks of an --atomic-frames node and the frames they came in (a replay sends one a frame).
    frames: FrameTally = field(default_factory=FrameTally)
    #: Files written that were gone at the end (removed while recording), and the messages in them.
    lost_files: list[Path] = field(default_factory=list)
    lost_messages: int = 0
    #: At the stop: the messages still queued that were written after it, and those still queued
    #: after ``STOP_DRAIN_S`` that were not recorded (None: none were; ``lost_more``: more came still).
    drained: int = 0
    lost_queued: int | None = None
    lost_more: bool = False

    @property
    def messages(self) -> int:
        return sum(c.messages for c in self.counts.values())

    def format(self) -> str:
        files = self.files
        where = ("no file (nothing to keep)" if not files else str(files[0]) if len(files) == 1
                 else f"{len(files)} splits {files[0]} .. {files[-1]}")
        note = self.frames.note(self.messages)
        lines = [f"recorded {self.messages} messages in {self.seconds:.1f} s to {where}" + (f"; {note}" if note else "")]
        for topic, c in sorted(self.counts.items()):
            extra = f", {c.missing} missing" if c.missing else ""
            extra += f", {c.restarts} restarts" if c.restarts else ""
            lines.append(f"  {topic}: {c.messages} (seq {c.first_seq}..{c.last_seq}{extra})")
        if self.lost_files:
            gone = self.lost_files
            which = str(gone[0]) if len(gone) == 1 else f"{len(gone)} files {gone[0]} .. {gone[-1].name}"
            lines.append(f"  lost: {which} {'is' if len(gone) == 1 else 'are'} no longer there (removed while "
                         f"recording), {self.lost_messages} of the messages with {'it' if len(gone) == 1 else 'them'}")
        if self.lost_queued is not None:
            more = "at least " if self.lost_more else ""
            lines.append(f"  lost: {more}{self.lost_queued} messages still queued {STOP_DRAIN_S:g} s after the stop were "
                         f"not recorded: the recorder was behind the node (it wrote {self.drained} queued ones after "
                         "the stop); a slow disk? a larger --split-duration, --chunk-size or --max-mask-pixels limit "
                         "helps")
        bad = {k: v for k, v in self.skipped.items() if v}
        if bad:
            lines.append("  skipped: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in bad.items()))
        elif self.messages == 0:
            # Nothing arrived at all (not even a bad message): the hint 'perception listen' gives.
            lines.append(f"no messages received from {self.endpoint or 'the endpoint'}; is the node running? "
                         f"check --endpoint / {self.what_flag}"
                         + ("" if self.curve else " (a node with --curve-secret-key needs --curve-server-key and --curve-key)"))
        return "\n".join(lines)


#: A difference between the system clock and the recorder's steady clock above this is a clock
#: step (NTP or GPS setting the time), said once; smaller ones are drift and rounding.
CLOCK_STEP_S = 1.0


class SteadyClock:
    """Wall-clock nanoseconds that never step: the system clock when the recording started plus the
    monotonic time since. Log times come from it, so a clock set back or forward while recording
    (NTP or GPS on a car computer that booted with a wrong time) leaves the recording's timeline
    whole: in the order and spacing received, which replay and the readers that sort by log time
    follow. ``stepped_s`` is the system clock's step from it, once over ``CLOCK_STEP_S`` (said once)."""

    def __init__(self, wall_ns=time.time_ns, monotonic_ns=time.monotonic_ns) -> None:
        self._wall_ns, self._monotonic_ns = wall_ns, monotonic_ns
        self._wall0, self._mono0 = wall_ns(), monotonic_ns()
        self.stepped_s = 0.0

    def now_ns(self) -> int:
        steady = self._wall0 + self._monotonic_ns() - self._mono0
        if not self.stepped_s:
            step = (self._wall_ns() - steady) / 1e9
            if abs(step) > CLOCK_STEP_S:
                self.stepped_s = step
                log.warning("the system clock was set %s by %.1f s while recording (NTP or GPS?): log times keep "
                            "the recorder's own steady clock, so the recording's timeline stays as received; the "
                            "frames' capture_ns in their headers are the node's clock", "forward" if step > 0 else
                            "back", abs(step))
        return steady


class RecordWriteError(PerceptionError):
    """The recording file could not be written any more (a full disk, an I/O error); what was
    written before stays, unfinished, for ``perception record --recover`` (a file in which no
    message reached the disk is removed instead: there is nothing to recover).

    Exit 1, as any file the system fails to write (README "Commands"), not 2 (a bad input): a
    launch file's ``respawn`` restarts such a recorder, which goes on once there is space again
    (with ``--append``, after the splits already written)."""

    exit_code = 1


class Recorder:
    """Subscribes per ``RecordConfig`` and writes everything it receives until stopped.

    Opening the output and the socket happens in ``__init__`` so that mistakes fail before
    anything runs (ConfigError for the output, or for files of an earlier recording there unless
    ``config.overwrite``; PublishError for the endpoint or keys). The socket is opened first, so a bad
    endpoint leaves no empty file behind to be refused next time.
    ``messages`` counts what has been written so far (readable from another thread).
    """

    def __init__(self, config: RecordConfig) -> None:
        from perception.subscribe import MaskSubscriber

        self.config = config
        self._started_utc = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.messages = 0
        self.write_errors = 0
        #: At the stop (``_drain``): queued messages written after it, and those not recorded.
        self.drained = 0
        self.lost_queued: int | None = None
        self.lost_more = False
        self.clock = SteadyClock()  # the messages' log times (see SteadyClock)
        self._received_ns: int | None = None  # the last message's receive time, and its log time (``_write``)
        self._log_ns = 0
        #: ``skipped()`` when each split was closed, by split index (``_metadata``).
        self._skipped_at_split_end: dict[int, dict[str, int]] = {}
        self._sub = MaskSubscriber(
            config.endpoint,
            topics=list(config.topic) or None,
            namespace=config.namespace,
            curve_server_key=config.curve_server_key,
            curve_key_file=config.curve_key,
            # Retry often: a node started after the recorder publishes as soon as it has bound,
            # and everything sent before this socket has connected is lost (PUB/SUB slow joiner).
            reconnect_ivl_ms=RECONNECT_MS,
            reconnect_ivl_max_ms=RECONNECT_MS,
            max_mask_pixels=config.max_mask_pixels,
            max_queue_mb=config.max_queue_mb,
            max_topics=config.max_topics,
        )
        try:
            self._writer = SplitWriter(config, self._metadata)
        except BaseException:
            self._sub.close()
            raise

    @property
    def kept(self) -> list[Path]:
        """Files of an earlier recording left as they were: those ``--overwrite`` has not removed
        (yet; it removes them when the first message is written, so a recording that receives
        nothing keeps them), or the splits ``--append`` goes on after."""
        return list(self._writer.replaced or self._writer.continued)

    @property
    def first_split(self) -> int:
        """The index of the first split this recording writes (after the earlier ones, with ``--append``)."""
        return self._writer.first_index

    def continuing(self) -> str | None:
        """With ``--append`` after earlier splits, the line that says so, naming those a killed
        recorder left unfinished and how to rebuild them, and those it left holding nothing (to
        delete); None otherwise."""
        earlier, unfinished = self._writer.continued, self._writer.unfinished
        if not earlier:
            return None
        first = split_path(self.config.out, self.first_split)
        which = str(earlier[0]) if len(earlier) == 1 else f"{len(earlier)} splits {earlier[0]} .. {earlier[-1].name}"
        kept = "kept as it is" if len(earlier) == 1 else "kept as they are"
        line = f"--append: {which} {kept}; the new splits start at {first.name}"
        if unfinished:
            names = ", ".join(p.name for p in unfinished[:3]) + (f" and {len(unfinished) - 3} more"
                                                                  if len(unfinished) > 3 else "")
            one = len(unfinished) == 1
            line += (f"; {names} {'is' if one else 'are'} unfinished (the recorder did not finish "
                     f"{'it' if one else 'them'}: killed, or its disk full or failing): "
                     + (f"'perception record --recover {unfinished[0]}' rebuilds it"
                        if one else "'perception record --recover FILE' rebuilds each"))
        empty = self._writer.empty
        if empty:
            names = ", ".join(p.name for p in empty[:3]) + (f" and {len(empty) - 3} more" if len(empty) > 3 else "")
            one = len(empty) == 1
            line += (f"; {names} {'holds' if one else 'hold'} nothing (the recorder ended before "
                     f"{'its' if one else 'their'} first message: nothing to recover; replay skips "
                     f"{'it' if one else 'them'}): delete {'it' if one else 'them'}")
        return line

    def run(self, stop: threading.Event) -> RecordSummary:
        """Record until ``stop`` is set or ``duration`` has passed; then finish the file."""
        t0 = time.monotonic()
        deadline = None if not self.config.duration_s else t0 + self.config.duration_s  # 0: no limit, as run's
        failed: OSError | None = None
        try:
            try:
                got = False  # the last receive gave a message: more may be queued at the stop
                while not stop.is_set():
                    timeout = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                    if timeout <= 0:
                        break
                    msg = self._sub.recv(timeout_s=timeout)
                    got = msg is not None
                    if got:
                        self._write(msg)
                    elif (cut := self._sub.cut_off()) is not None:
                        self.cut_off = cut  # admitted, then refused for good: nothing more will come
                        break
                if got:
                    self._drain()
            except OSError as exc:  # from the writer (a full disk); the subscriber's own errors are not OSError
                failed = exc
            finally:
                # before close: ZeroMQ's term waits for its I/O thread, which may be in a DNS lookup for seconds
                listened_s = time.monotonic() - t0
                self._sub.close()
                if failed is None:
                    try:
                        self._writer.close()
                    except OSError as exc:  # finishing the file needs space too
                        failed = exc
            if failed is not None:
                raise RecordWriteError(self._failure(failed, self._writer.abandon())) from None
            if self.messages == 0:
                self._writer.remove()  # see SplitWriter.remove; the summary says nothing was received
        finally:
            self._writer.release()  # the output is free for the next recorder (a respawn)
        return RecordSummary(
            path=self.config.out, seconds=listened_s, counts=self._writer.counts, skipped=self.skipped(),
            files=list(self._writer.paths), endpoint=self.config.endpoint,
            what_flag="--namespace" if self.config.namespace else "--topic", curve=bool(self.config.curve_server_key),
            frames=self._writer.frames, lost_files=list(self._writer.vanished),
            lost_messages=self._writer.lost_messages(), drained=self.drained, lost_queued=self.lost_queued,
            lost_more=self.lost_more,
        )

    def _drain(self) -> None:
        """At a stop: write what is queued already (a recorder behind the node holds a backlog in
        its socket, which closing it would drop without a word), for up to ``STOP_DRAIN_S``; then
        count what is still queued, for up to ``STOP_COUNT_S``, as not recorded (the summary says so)."""
        end = time.monotonic() + STOP_DRAIN_S
        while time.monotonic() < end:
            msg = self._sub.recv(timeout_s=0)
            if msg is None:
                return
            self._write(msg)
            self.drained += 1
        end = time.monotonic() + STOP_COUNT_S
        self.lost_queued = 0
        while self._sub.recv(timeout_s=0) is not None:
            self.lost_queued += 1
            if time.monotonic() >= end:
                self.lost_more = True
                break
        if self.lost_queued == 0:
            self.lost_queued = None

    def _failure(self, failed: OSError, kept: Abandoned) -> str:
        """The one line for a recording that could not be written on: the file, the messages
        written before and how many of them are whole on disk, and ``--recover`` only when the
        file holds something for it (one in which nothing reached the disk is removed, see
        ``SplitWriter.abandon``), with what ``--recover`` and ``replay`` of that file count (a
        split's also holds the latched ``<ns>/info`` written again at its start: ``_repeated_note``)."""
        path = kept.path
        if isinstance(failed, BrokenRecording):
            what, fix = f"{failed} writing {path}", ""
        elif failed.errno in (errno.ENOSPC, errno.EDQUOT):
            what, fix = f"disk full writing {path}", "free space, then "
        elif failed.errno == errno.EFBIG:
            what, fix = f"{failed.strerror} while writing {path}", "the file system takes no bigger file (--split-size " \
                                                                  "keeps each file smaller); "
        else:
            what, fix = f"{failed.strerror or failed} while writing {path}", "check the disk, then "
        n = self.messages
        head = f"{what} at the first message" if n == 0 else f"{what} after {n} message{'' if n == 1 else 's'}"
        splits = ""
        if kept.splits:
            splits = (f"the complete split {kept.splits[0]}" if len(kept.splits) == 1
                      else f"the complete splits {kept.splits[0]} .. {kept.splits[-1]}")
        if kept.removed:
            if kept.splits:
                kept_text = f"the {kept.finished} in {splits} are kept, none after them reached {path}"
            else:
                kept_text = ("none reached the disk" if n == 0 else "it did not reach the disk" if n == 1
                             else "none of them reached the disk")
            return f"{head}; {kept_text}, so it is removed (nothing to recover); {fix}record again"
        if isinstance(failed, BrokenRecording):
            return (f"{head}; the file is left unfinished: 'perception record --recover {path}' rebuilds what was "
                    "written before it")
        whole = kept.finished + kept.whole
        written = (("all of them " if n > 1 else "") + "written whole") if whole == n else f"{whole} of them written whole"
        if kept.splits:
            written += f" ({kept.finished} in {splits})"
        return (f"{head}, {written}; {fix}'perception record --recover {path}' rebuilds the "
                f"{kept.records} in {path.name}{_repeated_note(kept)}")

    def _write(self, msg) -> None:
        """Write one message; one the writer refuses is counted and skipped, the recording goes on
        (the writer refuses a message before writing anything of it: ``McapMaskWriter.write``).
        An OSError (the file cannot be written: a full disk) ends the recording (see ``run``)."""
        # Its log time: the recorder's steady clock, not the system's. Messages received together
        # (the masks of one atomic frame, split by the subscriber, share their receive time) keep one
        # log time, by which a replay sends them as one frame again (``mcap_reader.as_sent``).
        if msg.receive_ns != self._received_ns:
            self._received_ns, self._log_ns = msg.receive_ns, self.clock.now_ns()
        msg.receive_ns = self._log_ns
        try:
            self._writer.write(msg)
        except (ValueError, TypeError, OverflowError, struct.error) as exc:
            self.write_errors += 1
            if self.write_errors in (1, 10, 100) or self.write_errors % 1000 == 0:  # rate-limited
                log.warning("could not record a %s message (seq %s): %s (%d so far)",
                            msg.topic, msg.seq, exc, self.write_errors)
            return
        self.messages += 1

    #: Why the node cut this recorder off (``MaskSubscriber.cut_off``), when it did.
    cut_off: str | None = None

    @property
    def handshake_failure(self) -> str | None:
        """Why the node refused this recorder's CURVE handshake (``MaskSubscriber.handshake_failure``),
        or None."""
        return self._sub.handshake_failure if self._sub is not None else None

    @property
    def unasked(self) -> Unasked:
        """Messages dropped as not asked for: on longer topics that start with a ``--topic``."""
        return self._sub.unasked if self._sub is not None else Unasked()

    @property
    def last_version_error(self) -> str | None:
        """Why the latest message of another wire version (or of a kind or compression the reader does
        not know) was skipped, naming both versions and the fix; None when none was."""
        return self._sub.last_version_error if self._sub is not None else None

    def skipped(self) -> dict[str, int]:
        """Messages received but not recorded: malformed, from another wire version, on a topic past
        ``--max-topics``, refused by the writer."""
        counters = self._sub.counters if self._sub is not None else None
        return {
            "malformed": counters.malformed if counters else 0,
            "version_mismatch": counters.version_mismatch if counters else 0,
            "over_max_topics": counters.over_max_topics if counters else 0,
            "write_errors": self.write_errors,
        }

    def _metadata(self, split: int | None = None, file_counts: dict[str, int] | None = None) -> dict[str, str]:
        """The ``perception.recording`` record of one file. ``message_counts`` and ``skipped_counts``
        describe that file: the messages it holds per topic (``file_counts``; in a split the latched
        ``<ns>/info`` written again at its start included, so they equal the file's own statistics)
        and those skipped while it was being written. A split also gives the totals of this recorder
        run up to its end (a run with ``--append`` starts them at 0; the whole recording's counts are
        in the folder's ``metadata.yaml``), ``recording_message_counts`` (each message once) and
        ``recording_skipped_counts``.
        Splits written by earlier versions hold the running totals under ``message_counts``;
        nothing in perception reads these counts, so replay and ``--recover`` take either.
        ``clock_step_s``, only once the system clock stepped while recording (``SteadyClock``): the
        step in seconds (+ forward), by which the frames' ``capture_ns`` from then on differ from
        the log times; the first one seen by the time the file was closed."""
        totals = {t: c.messages for t, c in self._writer.counts.items()}
        skipped = self.skipped()
        if split is None:
            own_skipped = skipped
        else:
            # The totals when this split closed, kept by index (close may be asked for it again).
            ends = self._skipped_at_split_end
            ends.setdefault(split, skipped)
            before = ends.get(split - 1, {})
            own_skipped = {k: v - before.get(k, 0) for k, v in ends[split].items()}
        extra = {} if split is None else {
            "split_index": str(split),
            "recording_message_counts": json.dumps(totals, sort_keys=True),
            "recording_skipped_counts": json.dumps(self._skipped_at_split_end[split], sort_keys=True),
        }
        if self.clock.stepped_s:
            extra["clock_step_s"] = f"{self.clock.stepped_s:.3f}"
        return extra | {
            "endpoint": self.config.endpoint,
            "subscription": self.config.namespace or " ".join(self.config.topic),
            "started_utc": self._started_utc,
            "perception_version": __version__,
            "wire_version": str(contracts.WIRE_VERSION),
            "message_counts": json.dumps(totals if file_counts is None else file_counts, sort_keys=True),
            "skipped_counts": json.dumps(own_skipped, sort_keys=True),
            "layout": (f"masks: {IMAGE_SCHEMA} (mono8: 0/255 masks; 8UC1: class ids, channel metadata "
                       f"{VALUES_KEY}=class_ids); JSON topics: {STRING_SCHEMA}; wire headers: <topic>{META_SUFFIX}; "
                       f"wire topic of each channel: channel metadata {WIRE_TOPIC_KEY}"),
        }


def _repeated_note(kept: Abandoned) -> str:
    """Why a split's count for ``--recover`` is more than its messages written whole: the latched
    messages (``<ns>/info``) written again at its start, which ``--recover`` and ``replay`` of the
    file count too (not the recording's total: a replay of all the splits sends them once)."""
    if not kept.repeated:
        return ""
    which = (f"the latched {kept.repeated[0]}" if len(kept.repeated) == 1
             else f"{len(kept.repeated)} latched messages ({', '.join(kept.repeated)})")
    if kept.whole == 0:
        return f" (only {which}, written again at its start)"
    return f" ({kept.whole} and {which}, written again at its start)"
