"""Reading MCAP recordings made by ``perception record``: the messages as the node sent them.

``read_recording(path)`` yields ``RecordedMessage`` (topic, header, decoded mask or JSON document,
log time) from one file, several, a split recording (``out/run.mcap`` for its ``run_N.mcap``) or a
folder. Each recorded header is checked like a received one; a message that does not decode, or
breaks the wire contract, is skipped and counted (``ReadCounters``); a recording cut short is read
up to that point with a warning, and a chunk damaged inside is skipped with one (``recover.read_records``
reads the records within bounds); a file that is not MCAP, or not a regular file, is a ``SourceError``. ``as_sent``
puts the masks of an ``--atomic-frames`` recording back into frames. ``missing_splits`` names the
splits of a split recording that are not there (replay warns of them). ``perception replay`` sends
what this reads (``perception/replay.py``); the layout is ``perception/mcap_layout.py``.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perception import contracts
from perception.errors import SourceError, unreadable
from perception.mcap_layout import (
    IMAGE_SCHEMA,
    LATCHED_SUFFIXES,
    META_SUFFIX,
    METADATA_NAME,
    STRING_SCHEMA,
    channel_role,
    split_files,
)
from perception.recover import (
    RECOVER_RECORD_LIMIT,
    DamagedRecord,
    empty_recording,
    not_a_recording_file,
    open_recording,
    read_records,
    summary_channels,
)
from perception.wire import WireMessage

log = logging.getLogger(__name__)


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


@dataclass
class _Contents:
    """What the files read held, for the error when none of it could be replayed
    (``_nothing_to_replay``): the data messages read (JSON documents and images, not their
    wire headers), and, by channel name, those without a wire header: every message of a channel
    whose topic has no wire-header channel in its file (a ROS 2 bag that ``perception record`` did
    not write), and those left unpaired at their file's end on a topic that has one."""

    data_messages: int = 0
    headerless: dict[str, int] = field(default_factory=dict)


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
        # A folder this user may not list would look empty (Path.glob yields nothing): say why instead.
        if (why := unreadable(path)) is not None:
            raise SourceError(f"recording folder {path} {why}")
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


def missing_splits(path: str | Path | list[str | Path] | tuple[str | Path, ...]) -> list[Path]:
    """The splits of a split recording that are not there, in index order: for a folder, or the
    ``--out`` name of a ``--split-*`` recording (``run.mcap`` for ``run_N.mcap``), every index from 0
    to the highest one there, and every split the folder's rosbag2 ``metadata.yaml`` lists, that has
    no file (moved away, deleted, not copied). Files named one by one are taken as given. A group of
    ``<stem>_<N>.mcap`` files counts as a split recording when a file of it says so in its metadata
    (``split_index``, as the recorder writes it) or ``metadata.yaml`` lists it, so that other files
    with a number in their name (``drive_2024.mcap``) are not taken for splits."""
    if isinstance(path, (list, tuple)):
        return [f for p in path for f in missing_splits(p)]
    path = Path(path)
    if path.is_dir():
        folder, files = path, sorted(path.glob("*.mcap"), key=_split_order)
    elif path.is_file() or not path.name:
        return []
    else:
        folder, files = path.parent, split_files(path)
        if not files:
            return []
    groups: dict[tuple[str, str], dict[int, Path]] = {}
    for file in files:
        match = re.fullmatch(r"(.+)_(\d+)", file.stem, re.DOTALL)
        if match is not None and (path.is_dir() or match.group(1) == path.stem):
            groups.setdefault((match.group(1), file.suffix), {})[int(match.group(2))] = file
    listed = _bag_listed(folder)
    missing = []
    for (stem, suffix), present in groups.items():
        pattern = re.compile(re.escape(stem) + r"_(\d+)" + re.escape(suffix), re.DOTALL)
        named = {int(m.group(1)) for name in listed if (m := pattern.fullmatch(name))}
        if not named and not any(_split_index(file) == index for index, file in list(present.items())[:2]):
            continue  # not the splits of a recording
        expected = set(range(max(present) + 1)) | named
        missing += [folder / f"{stem}_{index}{suffix}" for index in sorted(expected - set(present))]
    return missing


def _bag_listed(folder: Path) -> list[str]:
    """The file names the rosbag2 ``metadata.yaml`` in ``folder`` lists (none when it is not there or
    does not read)."""
    from perception.record_output import BAG_METADATA_FILE, load_yaml

    try:
        with open(folder / BAG_METADATA_FILE, "rb") as f:
            doc = load_yaml(f.read(16 * 1024 * 1024))
        paths = doc["rosbag2_bagfile_information"]["relative_file_paths"]
    except Exception:  # noqa: BLE001 - missing, unreadable, not YAML, not rosbag2's layout: nothing listed
        return []
    return [Path(p).name for p in paths if isinstance(p, str)] if isinstance(paths, list) else []


def _split_index(path: Path) -> int | None:
    """The ``split_index`` of a finished file's ``perception.recording`` metadata; None without one
    (an unsplit recording, an unfinished file, another tool's file)."""
    from mcap.reader import SeekingReader

    try:
        with open_recording(path, "") as stream:
            reader = SeekingReader(stream, record_size_limit=RECOVER_RECORD_LIMIT)
            if reader.get_summary() is None:
                return None
            for record in reader.iter_metadata():
                if record.name == METADATA_NAME and "split_index" in record.metadata:
                    return int(record.metadata["split_index"])
    except Exception:  # noqa: BLE001 - a damaged summary, whatever the library raises: not known
        return None
    return None


def _split_order(path: Path) -> tuple[str, int, str]:
    """Sort key: ``run_2.mcap`` before ``run_10.mcap`` (split index as a number), other names by name."""
    match = re.fullmatch(r"(.*)_(\d+)", path.stem, re.DOTALL)
    return (match.group(1), int(match.group(2)), path.name) if match else (path.stem, -1, path.name)


def read_recording(
    path: str | Path | list[str | Path], *, counters: ReadCounters | None = None,
    max_mask_pixels: int = contracts.MAX_MASK_PIXELS, warn_empty: bool = True,
) -> Iterator[RecordedMessage]:
    """Yield the messages of a recording in the order they were received.

    ``path`` is anything ``recording_files`` takes (a file, files, a folder of splits), read in
    order. Each recorded header is checked like a received one (``wire.parse_header``: bounded
    JSON, every field against the schema in ``contracts``) and each image against it (size,
    length, ``max_mask_pixels``) before use; a message that fails, or does not decode, is skipped, counted in
    ``counters`` and reported with a rate-limited warning. Raises SourceError when a file is
    missing or is not MCAP, or when the recording holds no perception channels. A file cut short
    (recorder killed) yields what precedes the cut and logs a warning. A file its recorder left
    holding nothing (``empty_splits``: killed before its first message) is skipped, with one
    warning naming it (``warn_empty`` False: none, as for a replay's later ``--loop`` passes).
    """
    counters = counters if counters is not None else ReadCounters()
    skipped_before = counters.malformed
    contents = _Contents()
    seen = 0
    latched: dict[str, dict[str, Any]] = {}  # the last header of each latched topic
    files = recording_files(path)
    # One file alone keeps the error its reading gives ("not an MCAP file", "cut short ...").
    empty = empty_splits(files) if len(files) > 1 else []
    if empty and len(empty) == len(files):
        raise SourceError(f"{recording_name(path)}: {empty_line(empty)}; nothing to replay: record one with "
                          "'perception record'")
    if empty and warn_empty:
        log.warning("%s; replayed without %s", empty_line(empty), "it" if len(empty) == 1 else "them")
    for file in files:
        if file in empty:
            continue
        for message in _read_file(file, counters, max_mask_pixels, first=seen == 0, contents=contents):
            if message.topic.endswith(LATCHED_SUFFIXES):
                if latched.get(message.topic) == message.header:
                    continue  # repeated at the start of a split (see record_splits.SplitWriter)
                latched[message.topic] = message.header
            seen += 1
            yield message
    if seen == 0:
        raise SourceError(f"{recording_name(path)}: {_nothing_to_replay(contents, counters.malformed - skipped_before, counters)}")


def empty_splits(files: list[Path]) -> list[Path]:
    """Those of ``files`` that their recorder left holding nothing (``recover.empty_recording``: 0
    bytes, or only MCAP's magic and header: it was killed before its first message)."""
    return [f for f in files if empty_recording(f)]


def empty_line(empty: list[Path]) -> str:
    """The words for ``empty_splits``: ``"run_4.mcap holds nothing (its recorder ended before its first
    message)"``, the first 3 named."""
    names = ", ".join(str(p) for p in empty[:3]) + (f" and {len(empty) - 3} more" if len(empty) > 3 else "")
    one = len(empty) == 1
    return (f"{names} hold{'s' if one else ''} nothing (unfinished: {'its recorder' if one else 'their recorders'} "
            f"ended before {'its' if one else 'their'} first message; delete {'it' if one else 'them'})")


def recording_name(path: str | Path | list[str | Path]) -> str:
    """A recording as a line names it: its path, or its files (not a Python list's repr)."""
    if isinstance(path, (list, tuple)):
        names = [str(p) for p in path]
        if len(names) == 1:
            return names[0]
        return f"{len(names)} files ({names[0]} .. {names[-1]})"
    return str(path)


def _nothing_to_replay(contents: _Contents, skipped: int, counters: ReadCounters) -> str:
    """Why a recording gave no message to replay, and the fix: it holds none; what it holds has no
    wire headers (an MCAP file or ROS 2 bag that ``perception record`` did not write); or every
    message was skipped (the last reason is named)."""
    fix = "record one with 'perception record'"
    if contents.data_messages == 0 and not skipped:
        return f"no perception topics in this recording (it holds no messages); {fix}"
    reasons = []
    if contents.headerless:
        names = sorted(contents.headerless)
        count = sum(contents.headerless.values())
        shown_names = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        reasons.append(f"its {count} message{'' if count == 1 else 's'} on {shown_names} ha"
                       f"{'s' if count == 1 else 've'} no wire-header channel beside {'it' if len(names) == 1 else 'them'} "
                       f"({names[0]}{META_SUFFIX}: each message's JSON header as a {STRING_SCHEMA}), which replay "
                       "sends them with")
    if skipped:
        reasons.append(f"{skipped} message{'' if skipped == 1 else 's'} skipped as malformed (the last: "
                       f"{counters.last_error})")
    what = "not a perception recording" if contents.headerless and not skipped else "no message of it can be replayed"
    return f"{what}: {'; '.join(reasons)}; {fix} (the README's recording section describes the layout)"


def _read_file(path: Path, counters: ReadCounters, max_mask_pixels: int, *, first: bool,
               contents: _Contents | None = None) -> Iterator[RecordedMessage]:
    """The messages of one MCAP file; ``first``: nothing was read before it (a cut at once is an
    error). ``contents`` is told what the file held (``_Contents``)."""
    from mcap.exceptions import McapError
    from mcap.records import Channel, Message, Schema
    from mcap_ros2.decoder import DecoderFactory

    with open_recording(path, "pass a .mcap file made by 'perception record'") as stream:
        if stream.read(8) != b"\x89MCAP0\r\n":
            if empty_recording(path):  # 0 bytes, or part of the magic: an older recorder killed at once
                raise SourceError(f"{path} is empty ({path.stat().st_size} bytes): its recorder ended before it wrote "
                                  "a message to it; nothing to replay: delete it, and record one with 'perception record'")
            raise SourceError(f"{path} is not an MCAP file; record one with 'perception record'")
        stream.seek(0)
        # A stream read (``recover.read_records``: no summary section needed, chunks inflated
        # within bounds and checked), so a recording whose recorder was killed, or with a damaged
        # chunk, still replays up to the point where it stops.
        schemas: dict[int, Any] = {}
        channels: dict[int, Any] = {}
        # A chunk damaged inside (a torn write, a bit flip) is skipped with a warning and the file
        # read on. A channel declared only in such a chunk comes from the summary section, if the
        # file has one; otherwise the messages on it are skipped and counted.
        damaged: list[DamagedRecord] = []
        warned = False  # about the first damaged chunk: held back until a message is read after it
        known_schemas, known_channels = summary_channels(stream)

        def warn_once() -> None:
            nonlocal warned
            if damaged and not warned:
                warned = True
                log.warning("%s: skipping a damaged chunk (damaged %s); its messages are lost, the rest of "
                            "the file is read", path, damaged[0])

        def skip_chunk(damage: DamagedRecord) -> None:
            damaged.append(damage)
            if seen or not first:  # else a file with nothing readable is one error line, not a warning too
                warn_once()

        # Messages are decoded one at a time (not by iter_decoded_messages), so that one record
        # that does not decode (invalid UTF-8, a payload cut short) is skipped and counted like a
        # bad header, instead of ending the file as if it were cut short.
        factory = DecoderFactory()
        pending_meta: dict[tuple[str, int], dict[str, Any]] = {}
        pending_data: dict[tuple[str, int], tuple[Any, int, str]] = {}
        contents = contents if contents is not None else _Contents()
        data_channels: dict[str, str] = {}  # wire topic -> its data channel's name
        data_counts: dict[str, int] = {}  # wire topic -> the data messages read on it
        headed: set[str] = set()  # wire topics with a wire-header channel in this file
        rejected: set[tuple[str, int]] = set()  # messages whose header or data was skipped
        seen = 0
        try:
            for record in read_records(stream, on_damaged=skip_chunk):
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
                if message.channel_id not in channels and message.channel_id in known_channels:
                    channel = channels[message.channel_id] = known_channels[message.channel_id]
                    schemas.setdefault(channel.schema_id, known_schemas.get(channel.schema_id))
                if message.channel_id not in channels:
                    if not damaged:
                        raise McapError(f"no channel record found with id {message.channel_id}")
                    counters.malformed += 1  # its channel was declared in a skipped chunk
                    counters.last_error = f"a message on channel {message.channel_id}, declared in a damaged chunk"
                    continue
                channel = channels[message.channel_id]
                schema = schemas.get(channel.schema_id)
                is_header, topic = channel_role(channel)
                if is_header:
                    headed.add(topic)
                else:
                    contents.data_messages += 1
                    data_channels[topic] = channel.topic
                    data_counts[topic] = data_counts.get(topic, 0) + 1
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
                    payload = (decoded, message.log_time, getattr(schema, "name", ""))
                    if key not in pending_meta:
                        pending_data[key] = payload
                        continue
                    got = _recorded(topic, pending_meta.pop(key), *payload, counters, max_mask_pixels)
                if got is not None:
                    warn_once()
                    seen += 1
                    yield got
        except (McapError, struct.error, EOFError, ValueError) as exc:
            offset = stream.tell()
            cut = _cut_short(exc, offset, stream)
            reason = f"at byte {offset}: the file ends inside a record" if cut else _read_error(exc, offset)
            if seen == 0 and first:
                # Nothing before the cut: --recover would find no message either.
                if damaged:
                    reason = f"damaged {damaged[0]}, and it ends {reason}"
                elif cut:
                    where = "just after its 8-byte magic" if offset <= 8 else f"at byte {offset} inside a record"
                    reason = f"not a whole MCAP file: it is cut short, ending {where}"
                raise SourceError(f"{path}: not a readable MCAP recording ({reason}); no message before that can be "
                                  "replayed or recovered: record it again") from None
            log.warning(
                "%s is cut short after %d messages (%s); was the recorder killed? 'perception record --recover FILE' "
                "rebuilds it", path, seen, reason,
            )
        # Data whose wire header never came: all of a topic without a header channel (counted as
        # read: a foreign bag's messages may all share one sequence, which pairing goes by), and
        # on a topic with one, those left unpaired.
        for topic, count in data_counts.items():
            if topic not in headed:
                name = data_channels[topic]
                contents.headerless[name] = contents.headerless.get(name, 0) + count
        for topic, _seq in pending_data:
            if topic in headed:
                name = data_channels.get(topic, topic)
                contents.headerless[name] = contents.headerless.get(name, 0) + 1
        if damaged and seen == 0 and first:
            raise SourceError(f"{path}: not a readable MCAP recording (damaged {damaged[0]}); no message of it can be "
                              "replayed or recovered: record it again")
        if len(damaged) > 1:
            log.warning("%s: %d damaged chunks were skipped in all", path, len(damaged))


def _read_error(exc: BaseException, offset: int) -> str:
    """Where and why reading stopped, never empty (the ``mcap`` library's EndOfFile has no text),
    never Python's own wording for a short buffer (struct.error: "unpack requires a buffer of 4 bytes")."""
    if isinstance(exc, DamagedRecord):
        return f"damaged {exc}"  # "damaged at byte N: a zstd chunk does not decompress (...)"
    if isinstance(exc, struct.error):
        return f"at byte {offset}: a record is shorter than its own fields (damaged)"
    return f"at byte {offset}: {str(exc) or 'the file ends inside a record'}"


def _cut_short(exc: BaseException, offset: int, stream: Any) -> bool:
    """Whether reading stopped because the file ends inside a record: a short read (struct.error,
    EOFError, the ``mcap`` library's EndOfFile, which has no text) with the file read to its end."""
    if isinstance(exc, DamagedRecord) or not (isinstance(exc, (struct.error, EOFError)) or not str(exc)):
        return False
    try:
        return offset >= os.fstat(stream.fileno()).st_size
    except (OSError, AttributeError, ValueError):
        return False



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
    topic: str, header: dict[str, Any], decoded: Any, log_time: int, schema: str, counters: ReadCounters,
    max_mask_pixels: int,
) -> RecordedMessage | None:
    """The message of a header and its data record (``schema``: the data record's schema name);
    None (counted) when the two do not fit."""
    from perception.wire import WireError, load_json

    is_mask = header["kind"] == contracts.KIND_MASK
    expected = IMAGE_SCHEMA if is_mask else STRING_SCHEMA
    if schema != expected:
        what = "a mask" if is_mask else "a JSON document"
        _skip(counters, f"{topic} seq {header['seq']}: the recorded message is a {schema or 'schemaless message'}, "
                        f"but its header says {what}, which is recorded as {expected}")
        return None
    if is_mask:
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


def as_sent(messages: Iterator[RecordedMessage]) -> Iterator[RecordedMessage]:
    """The recorded messages as the node sent them: the masks of a node run with
    ``--atomic-frames`` (its latest ``<ns>/info`` says each mask travels ``"in": "<ns>/frame"``)
    are put back into one frame message on ``<ns>/frame``, as the subscriber split them on
    arrival: consecutive masks of one seq, received at one time. The frame header is rebuilt
    (``wire.frame_header``) from the masks' own headers: seq, pub_seq (the frame's, which each
    mask carries), capture time, frame_id, the mask names in their order, and the latest mask
    publish time (the node's own frame header was taken a few microseconds after it)."""
    from perception.mcap_writer import FramedTopics
    from perception.wire import frame_header

    framed = FramedTopics()  # mask topic -> frame topic, from each namespace's latest info document
    group: list[RecordedMessage] = []
    group_topic = ""
    for msg in messages:
        framed.update(msg.topic, msg.data)
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
