"""Replay: republish the masks of an MCAP recording on their original topics, byte-for-byte the same wire format.

``perception replay run.mcap [--rate 1.0 | --max-rate] [--endpoint E] [--wait-first-subscriber S]
[--curve-secret-key FILE --curve-allow DIR]``

Each message goes out as it was received: the recorded wire header (seq, stamps, model_id,
latency_ms, compression) and the mask re-encoded with the recorded compression through
``perception.encoding``, so a subscriber cannot tell a replay from the live node except by the
clock (``--restamp`` moves each message's capture and publish times to the moment it is sent, for
latency read-outs: those of the headers and those a JSON document carries, the ``obstacles`` frame's
``capture_ns``; see ``Restamper``).

Timing: messages keep their recorded spacing divided by ``--rate`` (a gap longer than
``MAX_GAP_S`` is shortened to it, with one warning; a step back over ``MAX_BACK_S`` is played on
from, with one warning); ``--max-rate`` sends as fast as the
subscribers take them. The socket is an XPUB with ``XPUB_NODROP``: a slow subscriber slows
the replay down instead of losing messages (unlike the live node, a replay has no deadline).
``--wait-first-subscriber S`` waits up to S seconds for a first subscriber before sending. The
send queue (``SNDHWM``, in messages) is sized from a budget in bytes, ``--max-queue-mb``: at most
``REPLAY_SNDHWM`` messages, fewer as larger messages come (``queue_messages``), so a stalled
subscriber holds at most about that much of the replay's memory whatever the mask size.

At the end of the file the replay waits for what is still queued to leave, for as long as the
subscribers keep taking it (``XpubCore.drain``); a subscriber that took nothing for
``--drain-timeout`` seconds is given up, and its queued tail is lost: the closing line says so and
the command exits 1. A stop signal ends the wait at once. ``--loop`` starts the next pass one
recorded frame interval (``--rate`` applied) after the last message, and a pass lasts at least
``LOOP_MIN_PASS_S``, so a recording of one frame does not spin. A split recording with a split
missing (``mcap_reader.missing_splits``) is replayed without it, with one warning naming it.

CURVE: ``--curve-secret-key FILE`` / ``--curve-allow DIR`` (``perception.options.CurveServerOptions``,
the node's own settings) re-publish a recording of an encrypted node encrypted, through the same
core and allow-list code as the node (``perception/xpub.py``, ``perception/security.py``): the folder
is read again every second, revoked clients are cut, and the summary line counts the refused
handshakes and the clients cut.

Counts: the summary counts the messages sent. A recording of an ``--atomic-frames`` node stores
each mask apart (record and ``--recover`` count them so) and is sent as one frame message for the
masks of a frame: the line then says how many of the messages were frames and the masks they held.

Reading is ``perception/mcap_reader.py`` (``read_recording(path)``, also a library call): a
recording cut short or damaged is read up to that point with a warning; a message that does not
decode, or breaks the wire contract, is skipped and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from perception import contracts
from perception.config import composed, setting
from perception.mcap_layout import LATCHED_SUFFIXES, compact_json, header_frame
from perception.mcap_reader import (
    ReadCounters,
    RecordedMessage,
    as_sent,
    empty_splits,
    missing_splits,
    read_recording,
    recording_files,
    recording_name,
)
from perception.options import MAX_QUEUE_MB, CurveServerOptions
from perception.xpub import XpubCore
from perception.xpub_drain import Drained

log = logging.getLogger(__name__)

#: Most messages queued per subscriber before a send waits (XPUB_NODROP): about two seconds of four
#: topics at 30 fps; fewer when ``--max-queue-mb`` would not hold that many of the largest message.
REPLAY_SNDHWM = 256
#: ``--max-queue-mb``'s default: MiB of messages ZeroMQ may hold for subscribers that are behind.
DEFAULT_REPLAY_QUEUE_MB = 64
#: ``--drain-timeout``'s default: at the end of a file, queued messages are waited for while the
#: subscribers take them; a subscriber that took nothing for this long is given up (its queued tail
#: lost, the replay exits 1). Generous: a subscriber may work through a queue of its own (``listen``
#: holds up to its ``--max-queue-mb``) before it reads the socket again.
DRAIN_IDLE_S = 30.0
#: ``--loop``: the shortest pass, so that a recording of one frame is not sent (and the file opened
#: again) hundreds of times a second.
LOOP_MIN_PASS_S = 0.1
#: Longest gap between recorded log times that a replay waits out (before ``--rate``); longer ones are shortened to it.
MAX_GAP_S = 10.0
#: A message logged more than this before the latest one sent is a step back of the recorded times
#: (the clock set back while recording): the replay goes on from it as recorded. Less is the
#: ordinary interleaving of topics (sent at once).
MAX_BACK_S = 1.0


@dataclass
class ReplayConfig:
    """The flags of ``perception replay`` (and the parameters of a ``replay`` launch node)."""

    #: A recording: a file, a folder of splits, several files in order (see ``recording_files``).
    file: Path | list[Path] = setting(positional=True, metavar="FILE",
                                      help="a recording made by 'perception record': a .mcap file, several in order, "
                                           "or a folder of splits (run_0.mcap, run_1.mcap, ...)")
    rate: float = setting(1.0, lo=0.001, hi=1000.0, exclusive="speed", help="speed factor over the recorded timing")
    max_rate: bool = setting(False, exclusive="speed", help="send as fast as subscribers take the messages")
    endpoint: str = setting(contracts.DEFAULT_ENDPOINT, help="where to publish")
    #: Seconds, not a count (``perception run --wait-subscribers N`` counts subscriptions).
    wait_first_subscriber_s: float = setting(
        0.0, lo=0.0, hi=3600.0, flag="--wait-first-subscriber", metavar="S",
        old_names=("wait_subscriber",), old_flags=("--wait-subscriber",),
        help="wait up to S seconds for a first subscriber, then replay anyway (0: start at once)")
    restamp: bool = setting(False, help="shift capture/publish times to now (live latency figures)")
    loop: bool = setting(False, help="start again at the end of the file")
    #: As ``record --max-mask-pixels`` took them: a recording of larger masks than the default is
    #: replayed whole when given the limit it was recorded with.
    max_mask_pixels: int = setting(contracts.MAX_MASK_PIXELS, lo=1, hi=contracts.MAX_MASK_SIDE ** 2, metavar="N",
                                   help="skip recorded masks of more than N pixels, before decoding (give a "
                                        "recording made with record --max-mask-pixels the same N)")
    #: At the end: how long a subscriber that takes nothing is waited for (``XpubCore.drain``).
    drain_timeout_s: float = setting(DRAIN_IDLE_S, lo=0.1, hi=3600.0, flag="--drain-timeout", metavar="S",
                                     help="at the end of the file, wait while subscribers take the messages still "
                                          "queued; give up on one that took nothing for S seconds (it loses them: "
                                          "exit 1)")
    #: The send queue's budget (``ReplayPublisher``): ZeroMQ's SNDHWM counts messages, whatever their size.
    max_queue_mb: int = setting(DEFAULT_REPLAY_QUEUE_MB, lo=1, hi=MAX_QUEUE_MB, metavar="MB",
                                help=f"MiB of messages queued for a subscriber that is behind before the replay "
                                     f"waits for it: the queue holds min({REPLAY_SNDHWM}, max(1, MB MiB / the "
                                     f"largest message sent)) messages")
    #: ``--curve-secret-key`` / ``--curve-allow``, as ``perception run`` takes them.
    curve: CurveServerOptions = composed(CurveServerOptions)


@dataclass
class ReplaySummary:
    """``skipped``: recorded messages left out because they break the wire contract."""

    messages: int
    seconds: float
    skipped: int = 0
    #: With a CURVE allow-list (else None): handshakes it refused, and connected clients cut
    #: because their key left the folder (the node's ``curve_rejections`` / ``curve_disconnects``).
    curve_rejections: int | None = None
    curve_disconnects: int = 0
    #: Of ``messages``, the atomic frames (an ``--atomic-frames`` recording) and the masks they held:
    #: record and ``--recover`` count those masks one by one.
    frames: int = 0
    framed_masks: int = 0
    #: Of ``messages``, those sent while no subscriber was connected (they reached nobody).
    unheard: int = 0
    #: Subscribers given up at the end because they took nothing for ``--drain-timeout``: the last
    #: messages queued for them (up to ``queue_messages``) never reached them.
    stalled_subscribers: int = 0
    #: Subscribers that still had messages queued when a stop signal ended the wait at the end.
    stopped_with_queued: int = 0
    #: The send queue per subscriber at the end, in messages (see ``--max-queue-mb``).
    queue_messages: int = REPLAY_SNDHWM
    #: Splits of the recording that are not there (``mcap_reader.missing_splits``), not replayed.
    missing_splits: list[Path] = field(default_factory=list)
    #: ``--drain-timeout``, for the line about ``stalled_subscribers``.
    drain_timeout_s: float = DRAIN_IDLE_S

    @property
    def as_recorded(self) -> int:
        """``messages`` counted as record and ``--recover`` count them: each mask of a frame apart."""
        return self.messages - self.frames + self.framed_masks

    def format(self, path: Path | list[Path]) -> str:
        path = recording_name(path)
        rate = self.messages / self.seconds if self.seconds > 0 else 0.0
        extra = f", {self.skipped} malformed skipped" if self.skipped else ""
        line = f"replayed {self.messages} messages from {path} in {self.seconds:.1f} s ({rate:.0f} msg/s{extra})"
        # (Before the frames' clause, which lines compared by their end keep last.)
        if self.messages and self.unheard >= self.messages:
            line += (f"; no subscriber was connected: all {self.messages} went to nobody "
                     "(--wait-first-subscriber S waits for one)")
        elif self.unheard:
            line += f"; {self.unheard} of them went out while no subscriber was connected (to nobody)"
        if self.frames:
            line += (f"; {self.frames} of them {'is an atomic frame' if self.frames == 1 else 'are atomic frames'} "
                     f"holding {self.framed_masks} mask{'' if self.framed_masks == 1 else 's'}, which record and "
                     f"--recover count one by one ({self.as_recorded} messages)")
        if self.curve_rejections is not None:
            line += (f"; CURVE: {self.curve_rejections} handshake{'' if self.curve_rejections == 1 else 's'} refused, "
                     f"{self.curve_disconnects} client{'' if self.curve_disconnects == 1 else 's'} cut "
                     "(key revoked in --curve-allow: removed, changed or unreadable)")
        if self.stalled_subscribers:
            line += f"; {self.stalled_lost()}"
        if self.stopped_with_queued:
            n = self.stopped_with_queued
            line += (f"; stopped while {n} subscriber{' still had messages' if n == 1 else 's still had messages'} "
                     f"queued (up to the last {self.queue_messages}, dropped)")
        if self.missing_splits:
            line += f"; {missing_line(self.missing_splits)}, not replayed"
        return line

    def stalled_lost(self) -> str:
        """What the subscribers given up at the end lost (``stalled_subscribers``)."""
        n = self.stalled_subscribers
        return (f"{n} subscriber{'' if n == 1 else 's'} took nothing for {self.drain_timeout_s:g} s after the last message "
                f"was sent, so the last messages still queued for {'it' if n == 1 else 'them'} (up to "
                f"{self.queue_messages}) were dropped and never reached {'it' if n == 1 else 'them'}")


#: ``files_line`` names at most this many files at each end of a recording.
FILES_NAMED = 3


def files_line(files: list[Path]) -> str:
    """The files of a recording for the "replaying" line: all of a few, else the first and last
    ``FILES_NAMED`` and how many there are (a week of splits must not make one 16 kB line)."""
    if len(files) <= 2 * FILES_NAMED + 1:
        return ", ".join(str(f) for f in files)
    head = ", ".join(str(f) for f in files[:FILES_NAMED])
    tail = ", ".join(str(f) for f in files[-FILES_NAMED:])
    return f"{len(files)} files: {head}, ... ({len(files) - 2 * FILES_NAMED} more), {tail}"


def missing_line(missing: list[Path]) -> str:
    """``"split run_2.mcap is missing"`` / ``"splits run_2.mcap, run_3.mcap are missing"`` (the
    first 5 named)."""
    names = [str(p) for p in missing[:5]] + ([f"{len(missing) - 5} more"] if len(missing) > 5 else [])
    return f"split{'' if len(missing) == 1 else 's'} {', '.join(names)} {'is' if len(missing) == 1 else 'are'} missing"


class ReplayPublisher:
    """Sends recorded messages in the wire format (see the module docstring) on the XPUB core the
    live node uses (``perception/xpub.py``), with ``XPUB_NODROP``: a full subscriber makes the
    replay wait instead of losing messages.

    ``curve``: the node's CURVE settings (``--curve-secret-key``, ``--curve-allow``), applied by the
    same core: encryption, the allow folder followed every second, revoked clients cut.

    Raises PublishError for a bad endpoint, an address in use or bad key files.
    """

    def __init__(self, endpoint: str, *, curve: CurveServerOptions | None = None,
                 max_queue_mb: int = DEFAULT_REPLAY_QUEUE_MB) -> None:
        curve = curve or CurveServerOptions()
        # A send waits at most 100 ms at a time, so a stalled subscriber still lets stop requests through.
        self._core = XpubCore(endpoint, sndhwm=REPLAY_SNDHWM, send_timeout_ms=100, what="recorded masks",
                              curve_secret_key_file=curve.curve_secret_key, curve_allow_dir=curve.curve_allow)
        self.endpoint = self._core.endpoint
        self._latched: dict[bytes, list[bytes]] = {}  # the wire frames of the last message of each latched topic
        self._due: set[bytes] = set()
        self._queue_bytes = max_queue_mb * 2**20
        #: The send queue per subscriber, in messages: REPLAY_SNDHWM, or fewer once the largest
        #: message sent (``largest_bytes``) would make that many more than ``max_queue_mb``.
        self.queue_messages = REPLAY_SNDHWM
        self.largest_bytes = 0
        #: Messages sent while no subscriber was connected.
        self.unheard = 0

    @property
    def subscriptions(self) -> int:
        """Live subscriptions (each subscriber once per topic prefix it asked for)."""
        return self._core.subscriptions()

    @property
    def curve_rejections(self) -> int:
        """CURVE handshakes the allow-list refused (0 without one)."""
        return self._core.curve_rejections

    @property
    def curve_disconnects(self) -> int:
        """Connected CURVE clients cut because their key left the allow folder."""
        return self._core.curve_disconnects

    def wait_for_subscriber(self, timeout_s: float, stop: threading.Event) -> bool:
        """Wait until a subscriber has subscribed (or ``timeout_s`` passes, or ``stop``); True if one did."""
        return self._core.wait_for_subscriptions(1, timeout_s=timeout_s, stop=stop)

    def send(self, msg: RecordedMessage, stop: threading.Event, *, shift_ns: int = 0) -> bool:
        """Send one message (or atomic frame, see ``_as_sent``); waits while subscribers are full.
        False when stopped first. A latched topic's message (``<ns>/info``) is kept and sent again,
        as recorded, to each subscription that arrives later, as the live node does (the core's
        ``latch``): a late subscriber, or a recorder of the replay, gets the class table first thing."""
        topic = msg.topic.encode("utf-8")
        if msg.header["kind"] == contracts.KIND_FRAME:
            frames = [header_frame(_restamped(msg.header, shift_ns))]
            for part in msg.data:
                frames += [header_frame(_restamped(part.header, shift_ns)), _payload(part)]
        else:
            frames = [header_frame(_restamped(msg.header, shift_ns)), _payload(msg, shift_ns)]
        size = len(topic) + sum(len(frame) for frame in frames)
        if size > self.largest_bytes:
            self._fit_queue(size)
        if msg.topic.endswith(LATCHED_SUFFIXES):
            with self._core.lock:
                self._latched[topic] = frames
                self._core.latch(topic, lambda: self._resend_locked(topic))
        while not stop.is_set():
            try:
                with self._core.lock:
                    while self._due:  # latched messages a full subscriber kept from going out
                        due = self._due.pop()
                        try:
                            self._core.send_locked(due, *self._latched[due])
                        except zmq.Again:
                            self._due.add(due)
                            raise
                    sent = self._core.send_locked(topic, *frames)
                    if sent and not self._core.subscriptions_locked():
                        self.unheard += 1
                    return sent
            except zmq.Again:
                continue  # every subscriber's queue is full (XPUB_NODROP): wait for room
        return False

    def _fit_queue(self, size: int) -> None:
        """A message of ``size`` bytes, larger than any before: the queue holds at most
        ``max_queue_mb`` of them (at least one, at most REPLAY_SNDHWM). ZeroMQ counts its queue in
        messages and applies a new count to connected subscribers too; messages are never split."""
        self.largest_bytes = size
        fits = max(1, min(REPLAY_SNDHWM, self._queue_bytes // size))
        if fits < self.queue_messages:
            self.queue_messages = fits
            with self._core.lock:
                self._core.set_sndhwm(fits)
            log.debug("send queue: %d messages (the largest is %d bytes; --max-queue-mb %d)", fits, size,
                      self._queue_bytes // 2**20)

    def _resend_locked(self, topic: bytes) -> None:
        """The latched message of ``topic`` again, for a subscription that just arrived (the core
        holds the lock); with no room now (XPUB_NODROP), it goes before the next message."""
        try:
            self._core.send_locked(topic, *self._latched[topic])
        except zmq.Again:
            self._due.add(topic)

    def close(self, *, flush_s: float = 0.0) -> None:
        """Close the socket; ``flush_s`` > 0 first lets queued messages go out for up to that long."""
        self._core.close(flush_s=flush_s)

    def drain(self, stop: threading.Event, *, idle_s: float = DRAIN_IDLE_S) -> Drained:
        """Close the socket once the queued messages have left, waiting while subscribers take them
        (``XpubCore.drain``): a subscriber that took nothing for ``idle_s``, or ``stop``, ends it."""
        return self._core.drain(idle_s=idle_s, stop=stop)


def run_replay(config: ReplayConfig, stop: threading.Event, *, publisher: ReplayPublisher | None = None) -> ReplaySummary:
    """Replay ``config.file`` until it ends (or forever with ``loop``) or ``stop`` is set."""
    counters = ReadCounters()
    messages = as_sent(iter(read_recording(config.file, counters=counters, max_mask_pixels=config.max_mask_pixels)))
    first = next(messages)  # reads the head now, so a bad file fails before the socket is bound
    own = publisher is None
    publisher = publisher or ReplayPublisher(config.endpoint, curve=config.curve, max_queue_mb=config.max_queue_mb)
    files = recording_files(config.file)
    if len(files) > 1:  # those that hold nothing were named already (read_recording), and are not replayed
        empty = set(empty_splits(files))
        files = [f for f in files if f not in empty] or files
    log.info("replaying %s on %s", files_line(files), publisher.endpoint)
    missing = missing_splits(config.file)
    if missing:
        # Said before the replay: a listener would count the gap as messages lost on the network.
        log.warning("%s: the recording is replayed without %s (seq and capture times jump over the gap)",
                    missing_line(missing), "it" if len(missing) == 1 else "them")
    sent = frames = framed_masks = 0
    drained = Drained()
    ended = False  # the file (or stop) ended the replay, not an error
    t_start = time.monotonic()
    try:
        if config.wait_first_subscriber_s > 0 and not publisher.wait_for_subscriber(config.wait_first_subscriber_s, stop):
            log.warning("no subscriber after %.1f s; replaying anyway", config.wait_first_subscriber_s)
        gap_warned = back_warned = False
        while not stop.is_set():
            t0 = t_pass = time.monotonic()
            spans: dict[str, list[int]] = {}  # per topic not latched: [first log time, last, messages]
            restamper = Restamper() if config.restamp else None  # each pass from its own send times
            # Recorded time replayed so far, and the latest log time sent: a message logged earlier
            # than one already sent goes at once, and a gap longer than MAX_GAP_S (a paused
            # recorder, files from different days, a damaged log time) is shortened to it, so
            # that the replay goes on instead of sleeping for days (or overflowing the wait).
            # The clock starts at the first message that is not latched: a split begins with the
            # latest `info` written again, which older recorders stamped with its original log
            # time, seconds before the split's data (the replay of one later split stalled).
            elapsed_ns, latest_ns = 0, None
            for msg in _chain(first, messages):
                if latest_ns is None and not msg.topic.endswith(LATCHED_SUFFIXES):
                    latest_ns = msg.log_time_ns
                    t0 = time.monotonic()
                if not config.max_rate and latest_ns is not None:
                    gap_ns = msg.log_time_ns - latest_ns
                    if gap_ns > MAX_GAP_S * 1e9:
                        if not gap_warned:
                            gap_warned = True
                            log.warning("a %.0f s gap in the recorded times (before %s seq %s) is replayed as %g s; "
                                        "so is every gap longer than that", gap_ns / 1e9, msg.topic, msg.seq, MAX_GAP_S)
                        gap_ns = int(MAX_GAP_S * 1e9)
                    if gap_ns < -MAX_BACK_S * 1e9:
                        # Recorded times that step back (a recorder whose clock was set back while it
                        # ran, before it kept a steady clock): played on from there as recorded,
                        # instead of everything after the step at once.
                        if not back_warned:
                            back_warned = True
                            log.warning("the recorded times step back %.0f s (before %s seq %s): replayed on from "
                                        "there as recorded (a clock set back while recording?)", -gap_ns / 1e9,
                                        msg.topic, msg.seq)
                        latest_ns, gap_ns = msg.log_time_ns, 0
                    if gap_ns > 0:
                        elapsed_ns += gap_ns
                        latest_ns = msg.log_time_ns
                    if stop.wait(max(0.0, t0 + elapsed_ns / 1e9 / config.rate - time.monotonic())):
                        break
                if not publisher.send(msg, stop, shift_ns=restamper.shift_ns(msg) if restamper else 0):
                    break
                sent += 1
                if msg.header["kind"] == contracts.KIND_FRAME:
                    frames += 1
                    framed_masks += len(msg.data)
                if config.loop and not msg.topic.endswith(LATCHED_SUFFIXES):
                    span = spans.get(msg.topic)
                    if span is None:
                        spans[msg.topic] = [msg.log_time_ns, msg.log_time_ns, 1]
                    else:
                        span[1:] = [msg.log_time_ns, span[2] + 1]
            if not config.loop or stop.is_set():
                break
            # The loop seam keeps the recorded timing: the next pass starts one frame interval after
            # the last message (the busiest topic's mean spacing, --rate applied; none at --max-rate),
            # and a pass lasts at least LOOP_MIN_PASS_S (a recording of one frame: 10 passes a second).
            intervals = [(last - first_ns) / (n - 1) for first_ns, last, n in spans.values() if n > 1 and last > first_ns]
            seam_s = 0.0 if config.max_rate or not intervals else min(min(intervals) / 1e9, MAX_GAP_S) / config.rate
            if stop.wait(max(0.0, max(time.monotonic() + seam_s, t_pass + LOOP_MIN_PASS_S) - time.monotonic())):
                break
            messages = as_sent(iter(read_recording(config.file, counters=counters, max_mask_pixels=config.max_mask_pixels,
                                                   warn_empty=False)))  # said once, before the first pass
            first = next(messages)
        ended = True
    finally:
        if own:
            # At the natural end, messages still queued belong to the replay: they leave for as long
            # as the subscribers take them. Stopped (or failed), they are dropped at once.
            if ended and not stop.is_set():
                drained = publisher.drain(stop, idle_s=config.drain_timeout_s)
            else:
                publisher.close(flush_s=0.0)
    summary = ReplaySummary(messages=sent, seconds=time.monotonic() - t_start, skipped=counters.malformed,
                            frames=frames, framed_masks=framed_masks, unheard=getattr(publisher, "unheard", 0),
                            stalled_subscribers=drained.stalled, stopped_with_queued=drained.stopped,
                            queue_messages=getattr(publisher, "queue_messages", REPLAY_SNDHWM),
                            missing_splits=missing, drain_timeout_s=config.drain_timeout_s)
    if drained.stalled:
        log.warning("%s; a subscriber that keeps taking messages is waited for, however slow (--drain-timeout S: "
                    "how long one that takes nothing is)", summary.stalled_lost())
    if config.curve.curve_allow is not None:
        summary.curve_rejections, summary.curve_disconnects = publisher.curve_rejections, publisher.curve_disconnects
    return summary


#: ``--restamp``: how many frames' shifts ``Restamper`` keeps (the masks and documents of one
#: frame arrive within a few messages of each other; several cameras interleave theirs).
RESTAMP_FRAMES = 1024


class Restamper:
    """``--restamp``: moves each message's stamps to the time it is sent, keeping the node's own
    capture-to-publish time, so that a reader's latency (receive time minus capture time) is
    live whatever happened to the recorded times: a wall clock stepped while recording (the
    frames' ``capture_ns`` jump, the recorder's log times do not), ``--rate`` / ``--max-rate``, a
    gap the replay shortened to ``MAX_GAP_S``, ``--loop``.

    ``shift_ns(msg)`` is the amount added to every stamp of ``msg`` (``_restamped``, ``_payload``):
    the send time (the wall clock now) minus its recorded ``publish_ns``, that is
    ``publish' = now`` and ``capture' = now - (publish_ns - capture_ns)``. The first message of a
    frame fixes its frame's shift, and the others that carry the same recorded capture time (the
    other masks, the ``obstacles`` document's ``capture_ns``, the parts of an atomic frame) take the
    same one, so they still name one capture time. A capture-to-publish time that is negative or
    over ``MAX_GAP_S`` (the node's clock stepped inside that frame) counts as 0: capture' = now."""

    def __init__(self, now_ns: Any = time.time_ns) -> None:
        self._now_ns = now_ns
        self._shifts: dict[int, int] = {}  # recorded capture time -> its frame's shift

    def shift_ns(self, msg: RecordedMessage) -> int:
        publish = _ns(msg.header.get("publish_ns"))
        capture = _ns(msg.header.get("capture_ns"))
        if capture is None and isinstance(msg.data, dict):  # obstacles: its frame's capture time
            capture = _ns(msg.data.get("capture_ns"))
        if capture is not None and capture in self._shifts:
            return self._shifts[capture]
        now = self._now_ns()
        if capture is None:
            return now - publish if publish is not None else 0
        spent = publish - capture if publish is not None else 0
        if not 0 <= spent <= MAX_GAP_S * 1e9:
            spent = 0
        shift = now - spent - capture
        if len(self._shifts) >= RESTAMP_FRAMES:
            del self._shifts[next(iter(self._shifts))]
        self._shifts[capture] = shift
        return shift


def _ns(value: Any) -> int | None:
    """A nanosecond stamp (a header's number or decimal string, a document's number), or None."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    return None


def _shifted(value: int | str, shift_ns: int) -> int | str:
    """A nanosecond header field moved by ``shift_ns``, in the form it came in (a number, or the
    decimal string that JSON parsers without 64-bit integers read exactly); kept as recorded when
    the move would take it out of int64 (below 0 or past 2**63 - 1)."""
    moved = int(value) + shift_ns
    if not 0 <= moved < 2**63:
        return value
    return str(moved) if isinstance(value, str) else moved


def _restamped(header: dict[str, Any], shift_ns: int) -> dict[str, Any]:
    """``header`` with its capture and publish times moved by ``shift_ns`` (``--restamp``)."""
    from perception.wire import ros_stamp

    if not shift_ns:
        return header
    header = dict(header, publish_ns=_shifted(header["publish_ns"], shift_ns))
    if "capture_ns" in header:
        header["capture_ns"] = _shifted(header["capture_ns"], shift_ns)
        if "header" in header:
            header["header"] = dict(header["header"], stamp=ros_stamp(int(header["capture_ns"])))
    return header


def _payload(msg: RecordedMessage, shift_ns: int = 0) -> bytes:
    """The payload frame of a mask (re-encoded with its recorded compression) or JSON message; a
    JSON document's own ``capture_ns`` / ``publish_ns`` (``obstacles`` carries its frame's capture
    time) moved by ``shift_ns`` as the headers are, so that it still names the same frame."""
    from perception.encoding import codec_for_compression

    if msg.header["kind"] == contracts.KIND_MASK:
        return codec_for_compression(msg.header["compression"]).encode(msg.data)
    doc = msg.data
    if shift_ns and isinstance(doc, dict):
        moved = {key: doc[key] + shift_ns for key in contracts.NS_FIELDS
                 if isinstance(doc.get(key), int) and not isinstance(doc[key], bool) and 0 <= doc[key] < 2**63
                 and 0 <= doc[key] + shift_ns < 2**63}
        doc = {**doc, **moved} if moved else doc
    # As the node writes it, unless its ASCII escapes would take it over what a reader parses.
    return compact_json(doc, limit=contracts.MAX_JSON_PAYLOAD_BYTES)


def _chain(first: RecordedMessage, rest: Iterator[RecordedMessage]) -> Iterator[RecordedMessage]:
    yield first
    yield from rest
