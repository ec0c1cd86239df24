"""Writing recordings: received messages into an MCAP file laid out as ``perception/mcap_layout.py``
says, with per-topic counts (a sequence of splits: ``perception/record_splits.py``).

``perception.record.Recorder`` feeds it from a subscriber; ``McapMaskWriter`` alone writes any
``perception.subscribe.Message`` objects (the tests build files with it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from perception import __version__, contracts
from perception.errors import ConfigError
from perception.mcap_layout import (
    CONTENT_DATA,
    CONTENT_HEADER,
    IMAGE_MSGDEF,
    IMAGE_SCHEMA,
    LATCHED_SUFFIXES,
    MCAP_MAX_CHANNELS,
    META_SUFFIX,
    METADATA_NAME,
    STRING_MSGDEF,
    STRING_SCHEMA,
    WIRE_TOPIC_KEY,
    RosTopicNames,
    channel_metadata,
    compact_json,
    header_frame,
    mcap_sequence,
    mcap_time,
    ros_image_encoding,
)
from perception.record_output import (
    ROSBAG2_RECORD,
    rosbag2_record,
)

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

#: The ``mcap`` Writer keeps one chunk index per chunk written (about 0.6 kB, and some 50 bytes
#: more per channel it holds) until the file is finished: an unsplit recording's memory grows with
#: it. Once the estimate passes ``INDEX_WARN_BYTES`` the recorder says so, once (``SplitWriter``).
CHUNK_INDEX_BYTES = 600
CHANNEL_INDEX_BYTES = 50
INDEX_WARN_BYTES = 64 * 1024 * 1024

#: Where the last chunks end (``McapMaskWriter._chunk_ends``): enough of them for a write that
#: failed, whose file on disk is short of the stream by the one chunk being written and the file
#: buffer (8 KiB: at most some 140 small chunks); older ones are never looked at again.
CHUNK_ENDS_KEPT = 4096

class UnrecordableMessage(ValueError):
    """A message the writer refuses, having written nothing of it (the recorder counts it and goes on)."""


class BrokenRecording(OSError):
    """The ``mcap`` library failed inside a record: the file is left unfinished (what is on disk
    is whole chunks) for ``perception record --recover``; nothing more can be written to it."""


def _packs(record) -> None:
    """Pack an ``mcap`` record on a scratch buffer: raises what the library would raise half-way
    into the chunk (struct.error for a number out of its field's range, UnicodeEncodeError...)."""
    from mcap.data_stream import RecordBuilder

    try:
        record.write(RecordBuilder())
    except (struct.error, ValueError, TypeError, OverflowError) as exc:
        raise UnrecordableMessage(f"it cannot be packed into an MCAP {type(record).__name__} record ({exc})") from None


@dataclass
class TopicCount:
    """Per-topic figures: messages, first/last seq, seqs missing between them, seq restarts."""

    messages: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    missing: int = 0
    restarts: int = 0

    def add(self, seq: int) -> None:
        if self.last_seq is not None:
            if seq > self.last_seq + 1:
                self.missing += seq - self.last_seq - 1
            elif seq <= self.last_seq:
                self.restarts += 1  # the node restarted (its seq starts again)
        if self.first_seq is None:
            self.first_seq = seq
        self.last_seq = seq
        self.messages += 1


class FramedTopics:
    """Which mask topics an ``--atomic-frames`` node sends inside ``<ns>/frame``: what each
    namespace's latest ``<ns>/info`` says (each mask's ``"in": "<ns>/frame"``). A recording of
    several cameras holds one info a camera: each info replaces only its own entries, so a camera's
    info does not unframe the others (``mcap_reader.as_sent`` and ``FrameTally`` read this)."""

    def __init__(self) -> None:
        self._by_info: dict[str, dict[str, str]] = {}  # info topic -> {mask topic: frame topic}
        self._framed: dict[str, str] = {}  # mask topic -> frame topic, over every info

    def update(self, topic: str, document: object) -> None:
        """One JSON message as recorded: read when it is an ``<ns>/info`` document."""
        if not (topic.endswith(LATCHED_SUFFIXES) and isinstance(document, dict)):
            return
        topics = document.get("topics")
        self._by_info.pop(topic, None)  # re-added last: the newest info wins a topic two infos name
        self._by_info[topic] = {t: d["in"] for t, d in topics.items() if isinstance(d, dict) and isinstance(
            d.get("in"), str) and d["in"].endswith("/" + contracts.FRAME_TOPIC)} if isinstance(topics, dict) else {}
        self._framed = {t: f for entries in self._by_info.values() for t, f in entries.items()}

    def get(self, topic: str) -> str | None:
        """The frame topic ``topic`` travels in; None when it travels on its own."""
        return self._framed.get(topic)


class FrameTally:
    """The masks of an ``--atomic-frames`` node in a recording, and the atomic frames they came in.

    Such a node sends the masks of a frame as one message on ``<ns>/frame``; the recorder stores
    them split, one message each, and a replay sends them as one frame message again
    (``mcap_reader.as_sent``, whose grouping this follows: consecutive masks of one seq logged at
    one time, on topics their namespace's latest ``<ns>/info`` says travel ``"in": "<ns>/frame"``). Record and
    ``--recover`` count the masks one by one, replay the frames: this says how the counts meet
    (``replayed``)."""

    def __init__(self) -> None:
        self.frames = 0
        self.masks = 0
        self._framed = FramedTopics()  # mask topic -> frame topic, from each namespace's latest info
        self._group: tuple[str, int, int, set[str]] | None = None  # (frame topic, seq, time, mask topics)

    def add(self, topic: str, *, mask: bool, seq: int, time_ns: int, document: object = None) -> None:
        """One message as recorded (``document``: a JSON message's document, read for ``<ns>/info``)."""
        self._framed.update(topic, document)
        frame = self._framed.get(topic) if mask else None
        if frame is None:
            self._group = None  # any other message ends a frame's masks, as in ``as_sent``
            return
        group = self._group
        if group is None or group[:3] != (frame, seq, time_ns) or topic in group[3]:
            self.frames += 1
            self._group = (frame, seq, time_ns, {topic})
        else:
            group[3].add(topic)
        self.masks += 1

    def replayed(self, messages: int) -> int:
        """How many messages a replay sends for ``messages`` counted one by one: one a frame."""
        return messages - self.masks + self.frames

    def note(self, messages: int) -> str:
        """What record and ``--recover`` add to their count of ``messages`` (empty without frames)."""
        if not self.frames:
            return ""
        masks = "1 of them is a mask" if self.masks == 1 else f"{self.masks} of them are masks"
        return (f"{masks} that came in {self.frames} atomic frame{'' if self.frames == 1 else 's'}, which a replay "
                f"sends as one message each ({self.replayed(messages)} messages)")


#: Renamed topics said one by one; after that, one line says that more are not named.
RENAMED_WARNINGS = 10


def _warn_renamed(topic: str, name: str, why: str, renamed: int) -> None:
    """Say (once a topic, for the first ``RENAMED_WARNINGS`` of a recording) that a wire topic is
    recorded under a ROS 2 name of its own, and why."""
    if renamed <= RENAMED_WARNINGS:
        log.warning("the wire topic %r is recorded on the ROS 2 topic %s: %s; replay still sends it on %r (channel "
                    "metadata %s)%s", topic, name, why, topic, WIRE_TOPIC_KEY,
                    "; further renamed topics are not logged" if renamed == RENAMED_WARNINGS else "")


class McapMaskWriter:
    """Writes received ``perception.subscribe.Message`` objects into an MCAP file (layout above).

    ``chunk_size`` (bytes) is how much goes into one compressed MCAP chunk; a recorder killed
    mid-run loses at most the chunk being filled. Raises ConfigError when ``path`` cannot be written,
    or, with ``exclusive``, already exists. ``names`` gives each wire topic its ROS 2 channel name
    and holds its message type (``RosTopicNames``: one shared by the splits of a recording keeps
    them the same in every split).

    The file is written with ``mcap.writer.Writer`` (``ros2`` profile) and the ROS 2 CDR encoders
    of ``mcap_ros2``: its own ``Writer`` cannot give a channel metadata, and rosbag2's convention
    (and the ``ros2`` profile) want ``offered_qos_profiles`` on every channel.

    ``startup`` False (a later split of a running recording): an OSError opening the file is raised
    as it is, a failing disk (the recorder exits 1, and a launch restarts it), not a ConfigError.
    """

    def __init__(
        self, path: Path, *, chunk_size: int = 1024 * 1024, counts: dict[str, TopicCount] | None = None,
        exclusive: bool = False, names: RosTopicNames | None = None, startup: bool = True,
    ) -> None:
        from mcap.records import Channel, Message
        from mcap.well_known import MessageEncoding, SchemaEncoding
        from mcap.writer import Writer
        from mcap_ros2 import __version__ as mcap_ros2_version
        from mcap_ros2._dynamic import serialize_dynamic  # the encoders mcap_ros2.writer.Writer uses

        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # exclusive: a file that appeared since the recorder checked (another recorder) is not clobbered.
            self._file: IO[bytes] = open(self.path, "xb" if exclusive else "wb")  # noqa: SIM115 - closed in close()
        except FileExistsError:
            raise ConfigError(f"{self.path} already exists; choose another --out, or pass --overwrite") from None
        except OSError as exc:
            if not startup:  # a later split (``SplitWriter``): the disk failed mid-run, not the user's --out
                raise
            raise ConfigError(f"cannot write {self.path}: {exc.strerror}; choose a writable --out") from None
        try:
            self._writer = Writer(self._file, chunk_size=chunk_size)
            self._writer.start(profile="ros2", library=f"perception {__version__}; mcap-ros2-support {mcap_ros2_version}")
            self._start_offset = self._file.tell()
            # On disk now, not with the first chunk: a recorder killed before its first message
            # leaves a file that reads as an MCAP file holding nothing (``recover.empty_recording``),
            # not 0 bytes. (A file object without flush() has no buffer to flush.)
            # One that fails (a full disk) is left to the first chunk's write to report, as before.
            flush = getattr(self._file, "flush", None)
            if flush is not None:
                with contextlib.suppress(OSError):
                    flush()
        except OSError:  # not even the header could be written (a full disk): no empty file is left
            with contextlib.suppress(OSError):
                self._file.close()
            self.path.unlink(missing_ok=True)
            raise
        self._cdr = MessageEncoding.CDR
        self._schemas: dict[str, int] = {}
        self._encoders = {}
        for name, msgdef in ((IMAGE_SCHEMA, IMAGE_MSGDEF), (STRING_SCHEMA, STRING_MSGDEF)):
            self._schemas[name] = self._writer.register_schema(name, SchemaEncoding.ROS2, msgdef.encode())
            self._encoders[name] = serialize_dynamic(name, msgdef)[name]
        self._channels: dict[tuple[str, str], int] = {}
        self._names = names if names is not None else RosTopicNames()
        #: The file's first and last log times, for its ``rosbag2`` record (``close``).
        self._log_range: list[int] = []
        self._Channel, self._Message = Channel, Message  # packed on a scratch buffer first (``_packs``)
        #: Why the writer stopped taking messages (a failure inside a record), or None.
        self._broken: str | None = None
        #: Per-topic figures; a dict shared by the splits of one recording gives the totals.
        self.counts: dict[str, TopicCount] = counts if counts is not None else {}
        #: Messages in this file alone, per wire topic, the latched ones repeated at a split's start
        #: included: what a reader of the file finds there (its metadata's ``message_counts``).
        self.file_counts: dict[str, int] = {}
        self.messages = 0
        #: Every message written (``messages`` and the latched ones repeated at a split's start).
        self._records = 0
        #: ``(offset, messages, records)`` where each chunk (with its message indexes) ends in the
        #: stream, and how many messages were whole in the file up to there: what a file cut at a
        #: given size holds (``whole_on_disk``).
        #: Only the last ``CHUNK_ENDS_KEPT``: a long recording's memory must not grow with them.
        self._chunk_ends: deque[tuple[int, int, int]] = deque(maxlen=CHUNK_ENDS_KEPT)
        #: Chunks written so far: the ``mcap`` Writer holds an index of each until ``close`` (``index_bytes``).
        self.chunks = 0
        self._closed = False

    @property
    def size_bytes(self) -> int:
        """Bytes in the file so far (the chunk being filled is not counted until it is written)."""
        return self._file.tell()

    @property
    def index_bytes(self) -> int:
        """About how much memory the ``mcap`` Writer holds for this file's chunk indexes (one a chunk,
        kept until the file is finished): what a long unsplit recording grows by."""
        return self.chunks * (CHUNK_INDEX_BYTES + CHANNEL_INDEX_BYTES * len(self._channels))

    def _chunk_written(self, end: int) -> None:
        """A chunk (with its message indexes) was written, ending at ``end`` in the stream."""
        self._chunk_ends.append((end, self.messages, self._records))
        self.chunks += 1

    def _channels_for(self, topic: str, header: dict, schema: str) -> tuple[int, int]:
        """The ``(wire header, data)`` channels of a topic, registered on first use. Refuses
        (UnrecordableMessage, nothing registered) a data schema other than the topic's first (in
        this recording: ``RosTopicNames.types``), and a topic that would take the file past MCAP's
        channel ids (``MCAP_MAX_CHANNELS``). The channels are named ``RosTopicNames.name``: a topic
        whose plain ROS 2 name another topic has, or that ends in ``/meta``, gets a name of its own,
        said once in a warning (``_warn_renamed``)."""
        wanted = {CONTENT_HEADER: STRING_SCHEMA, CONTENT_DATA: schema}
        known = self._names.types.get(topic)
        if known is not None and known != schema:
            # One type a topic: readers decode every message of it with the first one's (rosbag2:
            # one type a topic name, across the files of a bag too).
            raise UnrecordableMessage(f"{topic} is recorded as {known}; a {schema} message on it is refused")
        new = [content for content in wanted if (topic, content) not in self._channels]
        if len(self._channels) + len(new) > MCAP_MAX_CHANNELS:
            raise UnrecordableMessage(
                f"{topic} is not recorded: this file already holds {len(self._channels)} channels, the most an MCAP "
                f"file can (2 a topic); --split-duration or --split-size starts new files")
        if new:
            ros_name, why = self._names.name(topic)
            if why is not None:
                _warn_renamed(topic, ros_name, why, self._names.renamed)
        for content in new:
            metadata = channel_metadata(topic, content, header)
            name = ros_name + (META_SUFFIX if content == CONTENT_HEADER else "")
            schema_id = self._schemas[wanted[content]]
            # Packed on a scratch buffer first: a field the library cannot pack (a topic that is
            # not UTF-8) must fail here, not half-way into the chunk (see ``write``).
            _packs(self._Channel(id=len(self._channels) + 1, topic=name, message_encoding=self._cdr,
                                 schema_id=schema_id, metadata=metadata))
            self._channels[(topic, content)] = self._writer.register_channel(name, self._cdr, schema_id, metadata)
        self._names.types.setdefault(topic, schema)
        return self._channels[(topic, CONTENT_HEADER)], self._channels[(topic, CONTENT_DATA)]

    def write(self, msg, *, count: bool = True, log_time_ns: int | None = None) -> None:
        """Write one message (mask or JSON) and its wire header; ``count`` False for a latched
        message repeated at the start of a split (not counted again), ``log_time_ns`` its log
        time there (the split's start, not the time it was first received).

        All or nothing: a message that cannot be recorded, or could not be replayed from the file
        (a document or header over the readers' limits once written again), raises
        UnrecordableMessage (a ValueError) before anything of it is written, so it costs that
        message and never the file. Everything the ``mcap`` library packs is encoded, checked and
        packed on a scratch buffer first: the library writes a record into the chunk field by
        field and, on a value it cannot pack (a seq of 2^32 as the uint32 ``sequence``), leaves
        half of it there, which breaks every record after it. Should it fail inside a record all
        the same, the file is left unfinished (its chunks on disk are whole) and BrokenRecording
        (an OSError) raised: ``perception record --recover`` rebuilds what was written before."""
        if self._broken is not None:
            raise BrokenRecording(self._broken)
        header = msg.header
        try:
            seq = int(header["seq"])
            log_time = mcap_time(msg.receive_ns if log_time_ns is None else log_time_ns)
            common = {"log_time": log_time, "publish_time": mcap_time(header["publish_ns"]),
                      "sequence": mcap_sequence(seq)}
            meta_payload, data_schema, data_payload = self._encode(msg)
        except (KeyError, TypeError, ValueError, OverflowError, struct.error, IndexError, AttributeError) as exc:
            if isinstance(exc, UnrecordableMessage):
                raise
            raise UnrecordableMessage(f"it cannot be recorded: {type(exc).__name__}: {exc}") from None
        meta, data = self._channels_for(msg.topic, header, data_schema)
        records = [(meta, meta_payload), (data, data_payload)]
        for channel, _ in records:
            _packs(self._Message(channel_id=channel, data=b"", **common))
        start = self._file.tell()  # registering a channel may have written the chunk before this message
        if start != self._stream_end():
            self._chunk_written(start)
        ends = []  # where the stream is after each record: it moves when a chunk was written
        try:
            for channel, payload in records:
                self._writer.add_message(channel, data=payload, **common)
                ends.append(self._file.tell())
            self._log_range = [min(self._log_range[0], log_time), max(self._log_range[1], log_time)] \
                if self._log_range else [log_time, log_time]
        except OSError:
            raise  # the file cannot be written (a full disk): the recorder ends and abandons it
        except Exception as exc:  # noqa: BLE001 - checked above, so a library fault: the chunk is broken
            self._broken = f"the MCAP writer failed inside a record ({type(exc).__name__}: {exc})"
            raise BrokenRecording(self._broken) from exc
        if ends[0] != start:  # a chunk was written after its header record: the messages before it are whole there
            self._chunk_written(ends[0])
        if count:
            self.counts.setdefault(msg.topic, TopicCount()).add(seq)
            self.messages += 1
        self.file_counts[msg.topic] = self.file_counts.get(msg.topic, 0) + 1
        self._records += 1
        if ends[1] != ends[0]:  # a chunk was written after its data record: this message is whole in it
            self._chunk_written(ends[1])

    def _stream_end(self) -> int:
        """Where the stream was when the last chunk recorded in ``_chunk_ends`` (or the file's start) ended."""
        return self._chunk_ends[-1][0] if self._chunk_ends else self._start_offset

    def whole_on_disk(self) -> tuple[int, int]:
        """``(messages, records)``: how many of the messages written (counted ones; every one, the
        latched messages repeated at a split's start included) are whole in the file as it is on
        disk, after ``abandon``: those in the chunks that reached it (a write that failed, a full
        disk, leaves the file shorter than the stream, and the chunk being filled never got there).
        ``perception record --recover`` rebuilds exactly those."""
        try:
            size = os.stat(self.path).st_size
        except OSError:
            return 0, 0
        whole = [(messages, records) for end, messages, records in self._chunk_ends if end <= size]
        return whole[-1] if whole else (0, 0)

    def _encode(self, msg) -> tuple[bytes, str, bytes]:
        """The CDR payloads of a message's ``/meta`` record and data record (and the data's schema);
        the header and a JSON document are checked against the limits a replay reads them with
        (``mcap_reader``). Nothing is written."""
        from perception.wire import WireError, ros_image_fields
        from perception.wire_json import load_json

        header = msg.header
        # The /meta channel holds the header as the wire writes it (v2: nanoseconds as strings).
        # Written again, a header a reader took can only have grown (a number such as 1e9 is
        # 1000000000.0 now): one over the readers' limit would be skipped by every replay.
        frame = header_frame(header)
        if len(frame) > contracts.MAX_HEADER_BYTES:
            raise UnrecordableMessage(f"its header is {len(frame)} bytes as recorded, more than the "
                                      f"{contracts.MAX_HEADER_BYTES} a replay reads")
        meta = self._encoders[STRING_SCHEMA]({"data": frame.decode("utf-8")})
        if header["kind"] == contracts.KIND_MASK:
            image = ros_image_fields(header)
            image["encoding"] = ros_image_encoding(header)
            image["data"] = msg.data.tobytes()
            return meta, IMAGE_SCHEMA, self._encoders[IMAGE_SCHEMA](image)
        # The document compact, as the node sends it: json.dumps' defaults (", " and ASCII escapes)
        # made an 800 kB document 1.2 MB, which a replay refuses (readers parse at most 1 MiB).
        document = compact_json(msg.data, limit=contracts.MAX_JSON_PAYLOAD_BYTES)
        try:
            load_json(document, max_bytes=contracts.MAX_JSON_PAYLOAD_BYTES, what="the document as recorded")
        except WireError as exc:
            raise UnrecordableMessage(f"{exc}, so a replay could not send it") from None
        return meta, STRING_SCHEMA, self._encoders[STRING_SCHEMA]({"data": document.decode("utf-8")})

    def close(self, metadata: dict[str, str] | None = None) -> None:
        """Write the metadata record and the summary, and close the file; idempotent. A writer
        broken inside a record (see ``write``) is abandoned instead and BrokenRecording raised:
        finishing it would write its broken chunk."""
        if self._closed:
            return
        if self._broken is not None:
            self.abandon()
            raise BrokenRecording(self._broken)
        self._closed = True
        try:
            # The chunk being filled first, so that where it ends is known (``whole_on_disk``)
            # should finishing the file fail (a full disk).
            flush = getattr(self._writer, "flush", None)  # mcap >= 1.2
            if flush is not None and self._records:
                flush()
                if self._file.tell() != self._stream_end():
                    self._chunk_written(self._file.tell())
            if metadata is not None:
                self._writer.add_metadata(METADATA_NAME, metadata)
            # The version rosbag2 reads the channels' QoS by (``record_output.ROSBAG2_RECORD``).
            start, end = self._log_range or [0, 0]
            self._writer.add_metadata(ROSBAG2_RECORD, rosbag2_record(self.path.name, start, end, 2 * self._records))
            self._writer.finish()
        except BaseException:
            self.abandon()  # a full disk fails finish(); the file's own close() would fail again
            raise
        self._file.close()

    def abandon(self) -> None:
        """Close the file without finishing it, ignoring errors (after a write failed: a full
        disk). What was written stays, unfinished: ``perception record --recover`` rebuilds it."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._file.close()  # flushes what it holds (failing again on a full disk), then closes
