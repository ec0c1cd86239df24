"""Replay: republish the masks of an MCAP recording on their original topics, byte-for-byte the same wire format.

``perception replay run.mcap [--rate 1.0 | --max-rate] [--endpoint E] [--wait-first-subscriber S]``

Each message goes out as it was received: the recorded wire header (seq, stamps, model_id,
latency_ms, compression) and the mask re-encoded with the recorded compression through
``perception.encoding``, so a subscriber cannot tell a replay from the live node except by the
clock (``--restamp`` shifts the capture and publish times to now, for latency read-outs).

Timing: messages keep their recorded spacing divided by ``--rate`` (a gap longer than
``MAX_GAP_S`` is shortened to it, with one warning); ``--max-rate`` sends as fast as the
subscribers take them. The socket is an XPUB with ``XPUB_NODROP``: a slow subscriber slows
the replay down instead of losing messages (unlike the live node, a replay has no deadline).
``--wait-first-subscriber S`` waits up to S seconds for a first subscriber before sending.

Reading is also a library call: ``read_recording(path)`` yields ``RecordedMessage`` (topic, header,
decoded mask or JSON document, log time). A recording cut short (recorder killed) is read up to the
cut with a warning; a message that does not decode, or breaks the wire contract, is skipped and
counted; a file that is not MCAP is a ``SourceError``.
"""

from __future__ import annotations

import json
import logging
import re
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from perception import contracts
from perception.config import setting
from perception.errors import SourceError
from perception.mcap_layout import (
    CONTENT_HEADER,
    CONTENT_KEY,
    LATCHED_SUFFIXES,
    META_SUFFIX,
    WIRE_TOPIC_KEY,
    split_files,
    wire_topic,
)
from perception.recover import DamagedRecord, not_a_recording_file, open_recording, read_records
from perception.wire import WireMessage
from perception.xpub import XpubCore

log = logging.getLogger(__name__)

#: Messages queued per subscriber before a send waits (XPUB_NODROP): about two seconds of four topics at 30 fps.
REPLAY_SNDHWM = 256
#: At the end of a file, how long queued messages may take to reach slow subscribers before the socket closes.
FLUSH_S = 5.0
#: Longest gap between recorded log times that a replay waits out (before ``--rate``); longer ones are shortened to it.
MAX_GAP_S = 10.0


@dataclass
class RecordedMessage(WireMessage):
    """One recorded message (see ``WireMessage``) with the time the recorder logged it."""

    log_time_ns: int


@dataclass
class ReadCounters:
    """``malformed``: recorded messages skipped because their header or image breaks the wire
    contract (a file written by another tool, or damaged); ``last_error`` names the latest."""

    malformed: int = 0
    last_error: str | None = None


def recording_files(path: str | Path | list[str | Path] | tuple[str | Path, ...]) -> list[Path]:
    """The files of a recording, in order: a file; several files; a folder (its ``*.mcap`` files,
    splits ``<stem>_0.mcap``, ``<stem>_1.mcap``... in index order); or ``run.mcap`` when only the
    splits ``run_0.mcap``, ``run_1.mcap``... of a ``--split-*`` recording exist.

    Raises SourceError when a path is missing or a folder holds no ``.mcap`` file.
    """
    if isinstance(path, (list, tuple)):
        return [f for p in path for f in recording_files(p)]
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.mcap"), key=_split_order)
        if not files:
            raise SourceError(f"recording folder {path} holds no .mcap file; pass a recording made by 'perception record'")
        for file in files:
            # Checked before any is opened: open() on a FIFO would wait for a writer for good.
            what = not_a_recording_file(file)
            if what is not None:
                raise SourceError(f"{what}; move it out of {path}, or pass the recording files themselves")
        return files
    if path.is_file():
        return [path]
    what = not_a_recording_file(path)
    if what is not None:
        raise SourceError(f"{what}; pass a .mcap file made by 'perception record', or a folder of them")
    splits = split_files(path)
    if splits:
        return splits
    raise SourceError(f"recording {path} not found; check the path")


def _split_order(path: Path) -> tuple[str, int, str]:
    """Sort key: ``run_2.mcap`` before ``run_10.mcap`` (split index as a number), other names by name."""
    match = re.fullmatch(r"(.*)_(\d+)", path.stem)
    return (match.group(1), int(match.group(2)), path.name) if match else (path.stem, -1, path.name)


def read_recording(
    path: str | Path | list[str | Path], *, counters: ReadCounters | None = None,
    max_mask_pixels: int = contracts.MAX_MASK_PIXELS,
) -> Iterator[RecordedMessage]:
    """Yield the messages of a recording in the order they were received.

    ``path`` is anything ``recording_files`` takes (a file, files, a folder of splits), read in
    order. Each recorded header is checked like a received one (``wire.parse_header``: bounded
    JSON, every field against the schema in ``contracts``) and each image against it (size,
    length, ``max_mask_pixels``) before use; a message that fails, or does not decode, is skipped, counted in
    ``counters`` and reported with a rate-limited warning. Raises SourceError when a file is
    missing or is not MCAP, or when the recording holds no perception channels. A file cut short
    (recorder killed) yields what precedes the cut and logs a warning.
    """
    counters = counters if counters is not None else ReadCounters()
    seen = 0
    latched: dict[str, dict[str, Any]] = {}  # the last header of each latched topic
    for file in recording_files(path):
        for message in _read_file(file, counters, max_mask_pixels, first=seen == 0):
            if message.topic.endswith(LATCHED_SUFFIXES):
                if latched.get(message.topic) == message.header:
                    continue  # repeated at the start of a split (see mcap_writer.SplitWriter)
                latched[message.topic] = message.header
            seen += 1
            yield message
    if seen == 0:
        raise SourceError(f"{path}: no perception topics in this recording; record one with 'perception record'")


def _read_file(path: Path, counters: ReadCounters, max_mask_pixels: int, *, first: bool) -> Iterator[RecordedMessage]:
    """The messages of one MCAP file; ``first``: nothing was read before it (a cut at once is an error)."""
    from mcap.exceptions import McapError
    from mcap.records import Channel, Message, Schema
    from mcap_ros2.decoder import DecoderFactory

    with open_recording(path, "pass a .mcap file made by 'perception record'") as stream:
        if stream.read(8) != b"\x89MCAP0\r\n":
            raise SourceError(f"{path} is not an MCAP file; record one with 'perception record'")
        stream.seek(0)
        # A stream read (``recover.read_records``: no summary section needed, chunks inflated
        # within bounds and checked), so a recording whose recorder was killed, or with a damaged
        # chunk, still replays up to the point where it stops.
        schemas: dict[int, Any] = {}
        channels: dict[int, Any] = {}
        # Messages are decoded one at a time (not by iter_decoded_messages), so that one record
        # that does not decode (invalid UTF-8, a payload cut short) is skipped and counted like a
        # bad header, instead of ending the file as if it were cut short.
        factory = DecoderFactory()
        pending_meta: dict[tuple[str, int], dict[str, Any]] = {}
        pending_data: dict[tuple[str, int], tuple[Any, int]] = {}
        rejected: set[tuple[str, int]] = set()  # messages whose header or data was skipped
        seen = 0
        try:
            for record in read_records(stream):
                if isinstance(record, Schema):
                    schemas[record.id] = record
                    continue
                if isinstance(record, Channel):
                    if record.schema_id != 0 and record.schema_id not in schemas:
                        raise McapError(f"no schema record found with id {record.schema_id}")
                    channels[record.id] = record
                    continue
                if not isinstance(record, Message):
                    continue
                message = record
                if message.channel_id not in channels:
                    raise McapError(f"no channel record found with id {message.channel_id}")
                channel = channels[message.channel_id]
                schema = schemas.get(channel.schema_id)
                is_header, topic = _channel_role(channel)
                key = (topic, message.sequence)
                decoded = _decoded(factory, schema, channel, message, counters)
                header = _recorded_header(decoded, channel.topic, counters) if is_header and decoded is not None else None
                if decoded is None or (is_header and header is None):
                    # Its other half (data or header), read before or after, is dropped too.
                    if key in rejected:
                        rejected.discard(key)  # both halves were bad
                    elif (pending_data if is_header else pending_meta).pop(key, None) is None:
                        rejected.add(key)
                    continue
                if key in rejected:
                    rejected.discard(key)
                    continue
                if is_header:
                    if key not in pending_data:
                        pending_meta[key] = header
                        continue
                    got = _recorded(topic, header, *pending_data.pop(key), counters, max_mask_pixels)
                else:
                    payload = (decoded, message.log_time)
                    if key not in pending_meta:
                        pending_data[key] = payload
                        continue
                    got = _recorded(topic, pending_meta.pop(key), *payload, counters, max_mask_pixels)
                if got is not None:
                    seen += 1
                    yield got
        except (McapError, struct.error, EOFError, ValueError) as exc:
            reason = _read_error(exc, stream.tell())
            if seen == 0 and first:
                # Nothing before the cut: --recover would find no message either.
                raise SourceError(f"{path}: not a readable MCAP recording ({reason}); no message before that can be "
                                  "replayed or recovered: record it again") from None
            log.warning(
                "%s is cut short after %d messages (%s); was the recorder killed? 'perception record --recover FILE' "
                "rebuilds it", path, seen, reason,
            )


def _read_error(exc: BaseException, offset: int) -> str:
    """Where and why reading stopped, never empty (the ``mcap`` library's EndOfFile has no text)."""
    if isinstance(exc, DamagedRecord):
        return f"damaged {exc}"  # "damaged at byte N: a zstd chunk does not decompress (...)"
    return f"at byte {offset}: {str(exc) or 'the file ends inside a record'}"


def _channel_role(channel: Any) -> tuple[bool, str]:
    """(whether the channel holds wire headers, its wire topic), from the channel metadata the
    recorder writes, or from the channel name in recordings made before it wrote any."""
    metadata = channel.metadata or {}
    if WIRE_TOPIC_KEY in metadata and CONTENT_KEY in metadata:
        return metadata[CONTENT_KEY] == CONTENT_HEADER, metadata[WIRE_TOPIC_KEY]
    if channel.topic.endswith(META_SUFFIX):
        return True, wire_topic(channel.topic[: -len(META_SUFFIX)])
    return False, wire_topic(channel.topic)


def _decoded(factory: Any, schema: Any, channel: Any, message: Any, counters: ReadCounters) -> Any:
    """The ROS 2 message a record holds; None (counted) when it does not decode. The record itself
    was read whole, so this is a bad message (invalid UTF-8, a payload cut short), not a cut file."""
    from mcap.exceptions import McapError

    try:
        decoder = factory.decoder_for(channel.message_encoding, schema)  # cached per schema by the factory
        if decoder is None:
            raise McapError(f"no ROS 2 decoder for message encoding {channel.message_encoding!r}")
        return decoder(message.data)
    except (McapError, struct.error, ValueError, RuntimeError, IndexError) as exc:  # ValueError: UnicodeDecodeError
        _skip(counters, f"{channel.topic} seq {message.sequence}: the recorded message does not decode ({exc})")
        return None


def _skip(counters: ReadCounters, reason: str) -> None:
    counters.malformed += 1
    counters.last_error = reason
    if counters.malformed in (1, 10, 100) or counters.malformed % 1000 == 0:  # rate-limited
        log.warning("skipped a recorded message: %s (%d so far)", reason, counters.malformed)


def _recorded_header(decoded: Any, channel: str, counters: ReadCounters) -> dict[str, Any] | None:
    """The checked wire header of a ``<topic>/meta`` message; None (counted) when it is malformed."""
    from perception.wire import WireError, parse_header

    text = getattr(decoded, "data", None)
    if not isinstance(text, str):
        _skip(counters, f"{channel} holds no header string")
        return None
    try:
        return parse_header(text.encode("utf-8", "surrogatepass"))
    except (WireError, UnicodeEncodeError) as exc:
        _skip(counters, f"{channel}: {exc}")
        return None


def _recorded(
    topic: str, header: dict[str, Any], decoded: Any, log_time: int, counters: ReadCounters, max_mask_pixels: int,
) -> RecordedMessage | None:
    """The message of a header and its data record; None (counted) when the two do not fit."""
    from perception.wire import WireError, load_json

    if header["kind"] == contracts.KIND_MASK:
        h, w, data = header["height"], header["width"], getattr(decoded, "data", None)
        if h * w > max_mask_pixels:
            _skip(counters, f"{topic} seq {header['seq']}: a {h}x{w} mask is more than {max_mask_pixels} pixels")
            return None
        if (getattr(decoded, "height", None), getattr(decoded, "width", None)) != (h, w) or not isinstance(
            data, (bytes, bytearray, memoryview)) or len(data) != h * w:
            _skip(counters, f"{topic} seq {header['seq']}: the recorded image does not match its {h}x{w} header")
            return None
        mask = np.frombuffer(data, dtype=np.uint8).reshape(h, w)
        return RecordedMessage(topic, header, mask, log_time)
    text = getattr(decoded, "data", None)
    try:
        if not isinstance(text, str):
            raise WireError("the recorded document is not a string")
        doc = load_json(text.encode("utf-8", "surrogatepass"), max_bytes=contracts.MAX_JSON_PAYLOAD_BYTES,
                        what="JSON document")
    except (WireError, UnicodeEncodeError) as exc:
        _skip(counters, f"{topic} seq {header['seq']}: {exc}")
        return None
    return RecordedMessage(topic, header, doc, log_time)


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


@dataclass
class ReplaySummary:
    """``skipped``: recorded messages left out because they break the wire contract."""

    messages: int
    seconds: float
    skipped: int = 0

    def format(self, path: Path | list[Path]) -> str:
        if isinstance(path, list):
            path = path[0] if len(path) == 1 else f"{len(path)} files {path[0]} .. {path[-1]}"
        rate = self.messages / self.seconds if self.seconds > 0 else 0.0
        extra = f", {self.skipped} malformed skipped" if self.skipped else ""
        return f"replayed {self.messages} messages from {path} in {self.seconds:.1f} s ({rate:.0f} msg/s{extra})"


class ReplayPublisher:
    """Sends recorded messages in the wire format (see the module docstring) on the XPUB core the
    live node uses (``perception/xpub.py``), with ``XPUB_NODROP``: a full subscriber makes the
    replay wait instead of losing messages.

    Raises PublishError for a bad endpoint or an address in use.
    """

    def __init__(self, endpoint: str) -> None:
        # A send waits at most 100 ms at a time, so a stalled subscriber still lets stop requests through.
        self._core = XpubCore(endpoint, sndhwm=REPLAY_SNDHWM, send_timeout_ms=100, what="recorded masks")
        self.endpoint = self._core.endpoint
        self._latched: dict[bytes, list[bytes]] = {}  # the wire frames of the last message of each latched topic
        self._due: set[bytes] = set()

    @property
    def subscriptions(self) -> int:
        """Live subscriptions (each subscriber once per topic prefix it asked for)."""
        return self._core.subscriptions()

    def wait_for_subscriber(self, timeout_s: float, stop: threading.Event) -> bool:
        """Wait until a subscriber has subscribed (or ``timeout_s`` passes, or ``stop``); True if one did."""
        return self._core.wait_for_subscriptions(1, timeout_s=timeout_s, stop=stop)

    def send(self, msg: RecordedMessage, stop: threading.Event, *, shift_ns: int = 0) -> bool:
        """Send one message (or atomic frame, see ``_as_sent``); waits while subscribers are full.
        False when stopped first. A latched topic's message (``<ns>/info``) is kept and sent again,
        as recorded, to each subscription that arrives later, as the live node does (the core's
        ``latch``): a late subscriber, or a recorder of the replay, gets the class table first thing."""
        from perception.wire import dump_header

        topic = msg.topic.encode("utf-8")
        if msg.header["kind"] == contracts.KIND_FRAME:
            frames = [dump_header(_restamped(msg.header, shift_ns))]
            for part in msg.data:
                frames += [dump_header(_restamped(part.header, shift_ns)), _payload(part)]
        else:
            frames = [dump_header(_restamped(msg.header, shift_ns)), _payload(msg)]
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
                    return self._core.send_locked(topic, *frames)
            except zmq.Again:
                continue  # every subscriber's queue is full (XPUB_NODROP): wait for room
        return False

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


def run_replay(config: ReplayConfig, stop: threading.Event, *, publisher: ReplayPublisher | None = None) -> ReplaySummary:
    """Replay ``config.file`` until it ends (or forever with ``loop``) or ``stop`` is set."""
    counters = ReadCounters()
    messages = _as_sent(iter(read_recording(config.file, counters=counters)))
    first = next(messages)  # reads the head now, so a bad file fails before the socket is bound
    own = publisher is None
    publisher = publisher or ReplayPublisher(config.endpoint)
    files = recording_files(config.file)
    log.info("replaying %s on %s", ", ".join(str(f) for f in files), publisher.endpoint)
    sent = 0
    t_start = time.monotonic()
    try:
        if config.wait_first_subscriber_s > 0 and not publisher.wait_for_subscriber(config.wait_first_subscriber_s, stop):
            log.warning("no subscriber after %.1f s; replaying anyway", config.wait_first_subscriber_s)
        gap_warned = False
        while not stop.is_set():
            t0 = time.monotonic()
            shift_ns = time.time_ns() - first.log_time_ns if config.restamp else 0
            # Recorded time replayed so far, and the latest log time sent: a message logged earlier
            # than one already sent goes at once, and a gap longer than MAX_GAP_S (a paused
            # recorder, files from different days, a damaged log time) is shortened to it, so
            # that the replay goes on instead of sleeping for days (or overflowing the wait).
            elapsed_ns, latest_ns = 0, first.log_time_ns
            for msg in _chain(first, messages):
                if not config.max_rate:
                    gap_ns = msg.log_time_ns - latest_ns
                    if gap_ns > MAX_GAP_S * 1e9:
                        if not gap_warned:
                            gap_warned = True
                            log.warning("a %.0f s gap in the recorded times (before %s seq %s) is replayed as %g s; "
                                        "so is every gap longer than that", gap_ns / 1e9, msg.topic, msg.seq, MAX_GAP_S)
                        gap_ns = int(MAX_GAP_S * 1e9)
                    if gap_ns > 0:
                        elapsed_ns += gap_ns
                        latest_ns = msg.log_time_ns
                    if stop.wait(max(0.0, t0 + elapsed_ns / 1e9 / config.rate - time.monotonic())):
                        break
                if not publisher.send(msg, stop, shift_ns=shift_ns):
                    break
                sent += 1
            if not config.loop:
                break
            messages = _as_sent(iter(read_recording(config.file, counters=counters)))
            first = next(messages)
    finally:
        if own:
            # At the natural end, messages still queued belong to the replay: let them leave.
            publisher.close(flush_s=0.0 if stop.is_set() else FLUSH_S)
    return ReplaySummary(messages=sent, seconds=time.monotonic() - t_start, skipped=counters.malformed)


def _shifted(value: int | str, shift_ns: int) -> int | str:
    """A nanosecond header field moved by ``shift_ns``, in the form it came in (a number, or the
    decimal string that JSON parsers without 64-bit integers read exactly)."""
    return str(int(value) + shift_ns) if isinstance(value, str) else value + shift_ns


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


def _payload(msg: RecordedMessage) -> bytes:
    """The payload frame of a mask (re-encoded with its recorded compression) or JSON message."""
    from perception.encoding import codec_for_compression

    if msg.header["kind"] == contracts.KIND_MASK:
        return codec_for_compression(msg.header["compression"]).encode(msg.data)
    return json.dumps(msg.data, separators=(",", ":")).encode("utf-8")


def _as_sent(messages: Iterator[RecordedMessage]) -> Iterator[RecordedMessage]:
    """The recorded messages as the node sent them: the masks of a node run with
    ``--atomic-frames`` (its latest ``<ns>/info`` says each mask travels ``"in": "<ns>/frame"``)
    are put back into one frame message on ``<ns>/frame``, as the subscriber split them on
    arrival: consecutive masks of one seq, received at one time. The frame header is rebuilt
    (``wire.frame_header``) from the masks' own headers: seq, pub_seq (the frame's, which each
    mask carries), capture time, frame_id, the mask names in their order, and the latest mask
    publish time (the node's own frame header was taken a few microseconds after it)."""
    from perception.wire import frame_header

    framed: dict[str, str] = {}  # mask topic -> frame topic, from the latest info document
    group: list[RecordedMessage] = []
    group_topic = ""
    for msg in messages:
        if msg.topic.endswith(LATCHED_SUFFIXES) and isinstance(msg.data, dict):
            topics = msg.data.get("topics")
            framed = {t: d["in"] for t, d in topics.items() if isinstance(d, dict) and isinstance(d.get("in"), str)
                      and d["in"].endswith("/" + contracts.FRAME_TOPIC)} if isinstance(topics, dict) else {}
        frame_topic = framed.get(msg.topic) if msg.header["kind"] == contracts.KIND_MASK else None
        if group and (frame_topic != group_topic or msg.seq != group[0].seq
                      or msg.log_time_ns != group[0].log_time_ns or any(m.topic == msg.topic for m in group)):
            yield _frame_of(group, group_topic, frame_header)
            group = []
        if frame_topic is None:
            yield msg
            continue
        group.append(msg)
        group_topic = frame_topic
    if group:
        yield _frame_of(group, group_topic, frame_header)


def _frame_of(group: list[RecordedMessage], topic: str, frame_header: Any) -> RecordedMessage:
    namespace = topic[: -len(contracts.FRAME_TOPIC) - 1]
    first = group[0].header
    header = frame_header(seq=first["seq"], pub_seq=first["pub_seq"], capture_ns=int(first["capture_ns"]),
                          publish_ns=max(int(m.header["publish_ns"]) for m in group),
                          frame_id=first["header"]["frame_id"], masks=[m.topic[len(namespace) + 1:] for m in group])
    return RecordedMessage(topic, header, group, group[0].log_time_ns)


def _chain(first: RecordedMessage, rest: Iterator[RecordedMessage]) -> Iterator[RecordedMessage]:
    yield first
    yield from rest
