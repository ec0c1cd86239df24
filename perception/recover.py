"""Recovery of a recording whose recorder was killed (``perception record --recover FILE``).

A recorder that dies (SIGKILL, power loss) leaves an MCAP file without its summary section:
stream readers read it, indexed readers (rosbags, ``mcap.reader.SeekingReader``) refuse it.
``recover_recording`` rewrites every record that can still be read into a finished, indexed
file. Kept apart from ``perception/mcap_writer.py``, which writes recordings: this module only reads
damaged ones. A ``stop`` event (``perception record --recover`` sets it on Ctrl-C, SIGTERM or a
hangup) ends a recovery between two records: ``RecoveryStopped``, the input left as it was and the
partial ``<out>.recovering`` removed.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from perception.errors import ConfigError, SourceError
from perception.mcap_layout import (
    IMAGE_SCHEMA,
    LATCHED_SUFFIXES,
    channel_role,
)
from perception.mcap_writer import FrameTally
from perception.record_output import ROSBAG2_RECORD, FolderBag, rosbag2_record


@dataclass
class RecoverSummary:
    """What ``recover_recording`` saved: record counts, sizes, and where and why reading stopped
    (``cut`` is None when the input ran to its end).

    ``messages`` and ``channels`` are MCAP's (what ``ros2 bag`` and rosbags count): a recording of
    ``perception record`` stores each message twice, its data and its wire header on the
    ``<topic>/meta`` channel. ``wire_messages`` and ``topics`` count them as ``record`` and
    ``replay`` do: a data record with its header, one topic for the two channels."""

    source: Path
    out: Path
    messages: int = 0
    channels: int = 0
    wire_messages: int = 0
    topics: int = 0
    #: Whether the file has wire-header channels (``<topic>/meta``): a recording of ``perception record``.
    wire_headers: bool = False
    metadata: int = 0
    attachments: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    cut: str | None = None
    kept: Path | None = None
    #: The damaged chunks skipped ("at byte N: why"); reading went on after each.
    skipped: list[str] = field(default_factory=list)
    #: Messages dropped because their channel was declared only in a skipped chunk (and the file
    #: has no readable summary to take it from).
    orphaned: int = 0
    #: Masks of an ``--atomic-frames`` node and the frames they came in (a replay sends one a frame).
    frames: FrameTally | None = None
    #: The rosbag2 ``metadata.yaml`` written again to list the rebuilt split, and the splits it lists.
    bag_metadata: Path | None = None
    bag_files: int = 0
    #: Why no ``metadata.yaml`` was written for a file named like a split (``_update_bag``).
    not_split: str | None = None

    def format(self) -> str:
        records = f"{self.metadata} metadata record{'' if self.metadata == 1 else 's'}"
        if self.wire_headers:  # counted as record and replay count them; the MCAP figures beside
            counts = (f"{self.wire_messages} messages on {self.topics} topic{'' if self.topics == 1 else 's'} "
                      f"({self.messages} MCAP messages on {self.channels} channels: the data and the /meta wire "
                      f"header of each; {records})")
        else:
            counts = f"{self.messages} messages on {self.channels} channels ({records})"
        text = (f"recovered {counts} from {self.source} ({self.bytes_in} bytes) into {self.out} ({self.bytes_out} "
                f"bytes, indexed) in {self.seconds:.2f} s")
        note = self.frames.note(self.wire_messages) if self.frames is not None else ""
        if note:
            text += f"\n  {note}"
        if self.skipped:
            text += (f"\n  skipped {len(self.skipped)} damaged chunk{'s' if len(self.skipped) > 1 else ''} "
                     f"(their messages are lost; the first {self.skipped[0]})")
        if self.orphaned:
            text += f"\n  dropped {self.orphaned} messages whose channel was declared only in a damaged chunk"
        if self.cut:
            text += f"\n  the input ends in a damaged or unfinished record: {self.cut}"
        if self.kept:
            text += f"\n  the original is kept as {self.kept}"
        if self.bag_metadata:
            text += (f"\n  {self.bag_metadata} lists it now ({self.bag_files} split{'' if self.bag_files == 1 else 's'}: "
                     "ros2 bag and rosbags open the folder as one bag)")
        if self.not_split:
            text += f"\n  {self.not_split}"
        return text


#: Largest MCAP record recovery and replay read: a damaged length field must not make them allocate gigabytes.
RECOVER_RECORD_LIMIT = 256 * 1024 * 1024
#: Largest uncompressed chunk recovery and replay inflate (the recorder's largest is ``--chunk-size``,
#: at most 64 MiB, plus one message): a chunk declaring more is damaged or hostile (a "decompression
#: bomb": 33 kB of zstd that inflate to 1 GiB), and is refused before anything is decompressed.
CHUNK_SIZE_LIMIT = 256 * 1024 * 1024
#: Chunk compressions MCAP defines ("" is none); any other is a damaged or foreign chunk, not raw records.
CHUNK_COMPRESSIONS = ("", "zstd", "lz4")


class RecoveryStopped(Exception):
    """A stop signal ended ``recover_recording`` (or ``recording_is_intact``) before it was done:
    nothing was replaced, and the partial ``.recovering`` file is removed."""


def _check_stop(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise RecoveryStopped


class DamagedRecord(ValueError):
    """A record that cannot be read although it is all there: a chunk that does not decompress, fails
    its CRC, declares more than ``CHUNK_SIZE_LIMIT`` or an unknown compression. Readers treat it like
    the end of a file cut short (a ValueError, as the ``mcap`` library's own read errors are)."""


def _kind_of(mode: int) -> str:
    """What a path that is not a regular file is, for an error line ("is a FIFO")."""
    for test, what in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "not a regular file"


def not_a_recording_file(path: Path) -> str | None:
    """"<path> is a FIFO, not a recording file" (a folder, a socket, a device...) when ``path`` exists
    and is not a regular file; None otherwise. Checked before opening: open() on a FIFO blocks until
    a writer comes, and Python retries it after Ctrl-C or SIGTERM, so it would hang for good."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else f"{path} is {_kind_of(mode)}, not a recording file"


#: The most bytes ``empty_recording`` reads: a file holding only MCAP's magic and header record
#: (profile and library names) is far smaller.
_EMPTY_PROBE_BYTES = 64 * 1024
_MCAP_MAGIC = b"\x89MCAP0\r\n"
_HEADER_OPCODE = 0x01


def empty_recording(path: Path) -> bool:
    """Whether ``path`` is a regular file a recorder left holding nothing: 0 bytes, a part of MCAP's
    magic, or the magic and (part of) the header record and no other record. A recorder killed
    before its first message leaves one (older versions: 0 bytes; now the magic and header, written
    at once). It is unfinished and has nothing to replay or recover."""
    if not_a_recording_file(Path(path)) is not None:
        return False
    try:
        if os.stat(path).st_size > _EMPTY_PROBE_BYTES:
            return False
        with open_recording(Path(path), "") as stream:
            data = stream.read(_EMPTY_PROBE_BYTES + 1)
    except (OSError, SourceError):
        return False
    if len(data) <= len(_MCAP_MAGIC):
        return _MCAP_MAGIC.startswith(data)
    if not data.startswith(_MCAP_MAGIC):
        return False
    offset = len(_MCAP_MAGIC)
    while offset < len(data):
        if data[offset] != _HEADER_OPCODE:
            return False  # any other record: something was written after the header
        if offset + 9 > len(data):
            return True  # cut inside the header record's length
        (length,) = struct.unpack_from("<Q", data, offset + 1)
        offset += 9 + length
    return True


def open_recording(path: Path, fix: str) -> IO[bytes]:
    """``path`` opened for reading if it is a regular file; SourceError naming what it is otherwise
    (``fix``: what to do instead). Opened non-blocking and checked on the open descriptor, so a
    FIFO swapped in after any earlier check cannot block either."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SourceError(f"recording {path} not found; {fix}") from None
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}; {fix}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise SourceError(f"{path} is {_kind_of(mode)}, not a recording file; {fix}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _inflate(chunk: Any) -> bytes:
    """The records of a chunk, decompressed with the output bounded by its declared size (itself
    bounded by ``CHUNK_SIZE_LIMIT``), and checked against that size and its CRC. Raises
    DamagedRecord (never a library's own exception type: zstd and lz4 raise their own)."""
    size = chunk.uncompressed_size
    if size > CHUNK_SIZE_LIMIT:
        raise DamagedRecord(f"a chunk declares {size} bytes uncompressed, more than the "
                            f"{CHUNK_SIZE_LIMIT // 2**20} MiB limit (damaged, or a decompression bomb)")
    if chunk.compression not in CHUNK_COMPRESSIONS:
        raise DamagedRecord(f"a chunk has the unknown compression {chunk.compression[:40]!r}")
    try:
        if chunk.compression == "zstd":
            import zstandard

            # A stream reader writes at most what is asked for, whatever the frame claims.
            with zstandard.ZstdDecompressor().stream_reader(chunk.data) as reader:
                data = reader.read(size + 1)
        elif chunk.compression == "lz4":
            import lz4.frame

            data = lz4.frame.LZ4FrameDecompressor().decompress(chunk.data, max_length=size + 1)
        else:
            data = bytes(chunk.data)
    except Exception as exc:  # noqa: BLE001 - zstd's ZstdError, lz4's RuntimeError, MemoryError...: all mean damage
        raise DamagedRecord(f"a {chunk.compression} chunk does not decompress ({str(exc) or type(exc).__name__})") \
            from None
    if len(data) != size:
        got = f"more than the {size} bytes" if len(data) > size else f"{len(data)} of the {size} bytes"
        raise DamagedRecord(f"a {chunk.compression or 'raw'} chunk inflates to {got} it declares")
    if chunk.uncompressed_crc != 0 and zlib.crc32(data) != chunk.uncompressed_crc:
        raise DamagedRecord(f"a {chunk.compression or 'raw'} chunk fails its CRC")
    return data


def read_records(stream: IO[bytes], *, check_only: bool = False,
                 on_damaged: Callable[[DamagedRecord], None] | None = None) -> Iterator[Any]:
    """The records of an MCAP file in order, chunks opened safely (``_inflate``), up to DataEnd
    (the summary that follows is an index of what was read, not needed by a stream reader, and a
    summary cut short is no damage to the data). Raises the ``mcap`` library's read errors,
    struct.error, EOFError or ValueError (DamagedRecord among them) where a record is damaged or
    the file ends; its message names the byte where that record starts.

    ``check_only``: chunks are decompressed and checked but not broken up (``recording_is_intact``).
    ``on_damaged``: a chunk whose framing is intact but whose content is damaged (it does not
    decompress, fails its CRC, or its records do not parse: a torn write or a bit flip inside it)
    is passed to it as a DamagedRecord and skipped, and reading goes on with the next record, as
    the Go ``mcap recover`` does; without it, such a chunk raises. A record whose framing is broken
    still ends the reading: where the next one starts is then unknown.
    """
    from mcap.records import Chunk, DataEnd
    from mcap.stream_reader import StreamReader, breakup_chunk

    reader = StreamReader(stream, emit_chunks=True, record_size_limit=RECOVER_RECORD_LIMIT)
    start = stream.tell() + 8  # where the record being read starts (after the magic, at first)
    for record in reader.records:
        if isinstance(record, Chunk):
            try:
                data = _inflate(record)
                if check_only:
                    continue
                inner = breakup_chunk(Chunk(compression="", data=data, message_end_time=0, message_start_time=0,
                                            uncompressed_crc=0, uncompressed_size=len(data)))
            except (struct.error, EOFError, ValueError) as exc:
                damage = DamagedRecord(f"at byte {start}: {str(exc) or type(exc).__name__}")
                if on_damaged is None:
                    raise damage from None
                on_damaged(damage)
                start = stream.tell()
                continue
            yield from inner
        else:
            yield record
            if isinstance(record, DataEnd):
                return
        start = stream.tell()


def summary_channels(stream: IO[bytes]) -> tuple[dict[int, Any], dict[int, Any]]:
    """The schemas and channels (by id) that the summary section of an MCAP file declares; empty
    when it has none or it does not read. A message read after a skipped damaged chunk finds its
    channel here when the chunk held the channel's only declaration in the data. The stream is
    left at its start."""
    from mcap.reader import SeekingReader

    try:
        summary = SeekingReader(stream, record_size_limit=RECOVER_RECORD_LIMIT).get_summary()
    except Exception:  # noqa: BLE001 - a damaged or missing summary, whatever the library raises: none to use
        summary = None
    finally:
        stream.seek(0)
    if summary is None:
        return {}, {}
    return dict(summary.schemas), dict(summary.channels)


def recording_is_intact(path: Path, *, stop: threading.Event | None = None) -> bool:
    """True when ``path`` ends in a valid footer and summary, so indexed readers open it as it is,
    and every chunk of its data decompresses and matches its CRC: a file whose summary is intact
    but whose data was damaged (a torn write, a bit flip) is not complete. The chunks are read one
    at a time (memory: one chunk); the cost is one decompression of the file, as a replay's."""
    from mcap.exceptions import McapError
    from mcap.reader import SeekingReader

    if not_a_recording_file(Path(path)) is not None:
        return False
    try:
        with open_recording(Path(path), "") as stream:
            if SeekingReader(stream, record_size_limit=RECOVER_RECORD_LIMIT).get_summary() is None:
                return False
            stream.seek(0)
            for _ in read_records(stream, check_only=True):
                _check_stop(stop)  # (RecoveryStopped: a stop signal, between two chunks)
            return True
    except (McapError, SourceError, struct.error, EOFError, ValueError, OSError):
        return False


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when ``a`` and ``b`` both exist and are the same file (same path, a link, ``./x`` and ``x``)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def recover_recording(path: str | Path, out: str | Path | None = None, *, overwrite: bool = False,
                      stop: threading.Event | None = None) -> RecoverSummary | FolderBag:
    """Rebuild a recording whose recorder was killed into a finished MCAP file that indexed readers open.

    Every record that can be read in order (header, schemas, channels with their metadata,
    messages, metadata records, attachments) is written again through ``mcap.writer.Writer``,
    which adds the message indexes, chunk indexes, statistics and summary; reading stops at the
    first damaged or unfinished record (the chunk the recorder was filling when it died). This
    is what the Go ``mcap recover`` command does; the Python ``mcap`` package has no recovery
    function, so its stream reader and writer are used here.

    ``out`` None (or ``path`` itself) rewrites ``path`` in place: the result replaces it
    atomically and the original is kept beside it as ``<name>.damaged`` (not a ``.mcap`` name, so
    a folder replay skips it); an existing ``<name>.damaged`` (the original of an earlier
    recovery) is never replaced. Another existing ``out`` is replaced only with ``overwrite``.
    Raises SourceError when ``path`` is missing or is not MCAP, ConfigError when ``out`` cannot
    be written or would replace a file it must not, RecoveryStopped when ``stop`` was set before
    the rebuilt file was complete (checked between records; ``path`` is then left as it was and
    the partial ``<out>.recovering`` removed).

    ``path`` a folder: ``write_folder_bag`` (the rosbag2 ``metadata.yaml`` of the split recording there).
    """
    source = Path(path)
    if source.is_dir():
        if out is not None:
            raise ConfigError(f"--recover {source} (a folder) writes its {source / 'metadata.yaml'}; leave out --out")
        from perception.record_output import write_folder_bag

        return write_folder_bag(source)
    what = not_a_recording_file(source)
    if what is not None:
        raise SourceError(f"{what}; --recover rebuilds one .mcap file made by 'perception record'")
    if not source.is_file():
        raise SourceError(f"recording {source} not found; check the path given to --recover")
    if empty_recording(source):
        size = source.stat().st_size
        raise SourceError(f"{source} holds nothing to recover: its recorder ended before it wrote a message to it "
                          f"({size} bytes: {'only the MCAP header' if size > 8 else 'no MCAP record'}); a replay of "
                          "the recording skips it; delete it")
    in_place = out is None or same_file(out, source)  # --out FILE itself: the original bytes are kept too
    target = source if in_place else Path(out)
    kept = source.with_name(source.name + ".damaged")
    # Checked before anything is written: neither the original of an earlier recovery nor a file
    # the user did not name for replacing is lost.
    if in_place and (kept.exists() or kept.is_symlink()):
        raise ConfigError(f"{kept} already exists (the original of an earlier recovery); move it away first, "
                          "or pass --out OTHER.mcap")
    if not in_place and target.is_dir():
        raise ConfigError(f"--out {target} is a folder; name the rebuilt file, e.g. --out {target / source.name}")
    if not in_place and not overwrite and (target.exists() or target.is_symlink()):
        raise ConfigError(f"{target} already exists; choose another --out, or pass --overwrite to replace it")
    temp = target.with_name(target.name + ".recovering")
    t0 = time.monotonic()
    summary = RecoverSummary(source=source, out=target, bytes_in=source.stat().st_size)
    with open_recording(source, "check the path given to --recover") as stream:
        if stream.read(8) != b"\x89MCAP0\r\n":
            raise SourceError(f"{source} is not an MCAP file; --recover rebuilds recordings made by 'perception record'")
        stream.seek(0)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            sink = open(temp, "wb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise ConfigError(f"cannot write {temp}: {exc.strerror}; choose a writable --out") from None
        try:
            try:
                _copy_records(source, stream, sink, summary, stop)
                if summary.messages == 0:
                    # Not an empty "recovered" file in place of the input: nothing to keep is an error.
                    why = [f"{len(summary.skipped)} damaged chunks skipped, the first {summary.skipped[0]}"] \
                        if summary.skipped else []
                    why += [f"{summary.orphaned} messages on channels declared only in a damaged chunk"] \
                        if summary.orphaned else []
                    why += [f"the data ends {summary.cut}"] if summary.cut else []
                    raise SourceError(f"no message of {source} can be recovered ({'; '.join(why) or 'it holds none'}); "
                                      "it is left as it is")
                sink.close()
                if in_place:
                    os.replace(source, kept)
                    summary.kept = kept
                try:
                    os.replace(temp, target)
                except OSError:
                    if in_place:
                        os.replace(kept, source)  # the original goes back where it was
                        summary.kept = None
                    raise
            except OSError as exc:
                # A full disk (in writes, or only in close()'s flush), a folder in the way: one line.
                raise ConfigError(f"cannot write {temp if exc.filename is None else exc.filename}: "
                                  f"{exc.strerror or exc}; free space or choose another --out") from None
        except BaseException:
            # Whatever failed (close() included, which flushes and fails again on a full disk),
            # the partial file goes: it would hold the space the user must free.
            try:
                sink.close()
            except OSError:
                pass
            finally:
                temp.unlink(missing_ok=True)
            raise
    summary.bytes_out = target.stat().st_size
    summary.seconds = time.monotonic() - t0
    _update_bag(target, summary)
    return summary


def _update_bag(target: Path, summary: RecoverSummary) -> None:
    """When the rebuilt file is a split (``<stem>_N.mcap``), write its folder's rosbag2 ``metadata.yaml``
    again so that it lists the split (``record_output.BagMetadata``): where one of that recording is
    there, or, for a recording of ``perception record`` (wire-header channels), where there is none
    and another file of that name says it is a split (its ``split_index``). A killed recorder wrote
    no metadata, so the name alone proves nothing: ``drive_2025.mcap`` beside ``drive_2023.mcap`` is
    two recordings, not two splits of ``drive.mcap`` (``summary.not_split`` says so)."""
    from perception.record_output import BagMetadata

    match = re.fullmatch(r"(.+)_\d+", target.stem, re.DOTALL)
    if match is None or not target.suffix:
        return
    bag = BagMetadata(target.with_name(match.group(1) + target.suffix))
    rebuilt = bag.file(target)
    split = rebuilt is not None and rebuilt.split is True
    if not split and rebuilt is not None and rebuilt.split is None and bag.ours() is None:
        split = any(info.split for info in bag.finished() if info.name != target.name)
        if not split and summary.wire_headers:
            summary.not_split = (f"{target.name} is taken for a recording of its own, not a split of "
                                 f"{bag.out.name}: no other {match.group(1)}_N{target.suffix} there says it is a "
                                 f"split, and no {bag.path.name} lists one; no {bag.path.name} written")
            return
    written = bag.update(create=summary.wire_headers and split)
    if written is not None:
        summary.bag_metadata, summary.bag_files = written, len(bag.finished())


def _copy_records(source: Path, stream: IO[bytes], sink: IO[bytes], summary: RecoverSummary,
                  stop: threading.Event | None = None) -> None:
    """Write every readable record of ``stream`` into ``sink`` through a new ``Writer``; where reading
    stops is ``summary.cut``. Raises SourceError when nothing, not even the header, can be read."""
    from mcap.exceptions import McapError
    from mcap.records import Attachment, Channel, Header, Message, Metadata, Schema
    from mcap.writer import Writer

    writer: Writer | None = None
    schema_ids: dict[int, int] = {}
    channel_ids: dict[int, int] = {}
    # Per wire topic, the records written on its data channel and on its /meta channel: a message
    # as replay counts it is one of each (the cut may leave a header without its data).
    roles: dict[int, tuple[bool, str]] = {}
    per_topic: dict[str, list[int]] = {}
    schema_names: dict[int, str] = {}
    images: set[int] = set()  # channels of sensor_msgs/msg/Image: masks
    summary.frames = frames = FrameTally()
    known_schemas, known_channels = summary_channels(stream)
    # What the rebuilt file's ``rosbag2`` record says, should the input have none (a recorder killed
    # before it finished the file).
    log_range: list[int] = []
    profile = ""
    has_bag_record = False

    def add_schema(record: Schema) -> None:
        schema_ids[record.id] = writer.register_schema(record.name, record.encoding, record.data)
        schema_names[record.id] = record.name

    def add_channel(record: Channel) -> None:
        if record.schema_id not in schema_ids and record.schema_id in known_schemas:
            add_schema(known_schemas[record.schema_id])
        channel_ids[record.id] = writer.register_channel(
            record.topic, record.message_encoding, schema_ids.get(record.schema_id, 0), dict(record.metadata),
        )
        roles[record.id] = channel_role(record)
        if schema_names.get(record.schema_id) == IMAGE_SCHEMA:
            images.add(record.id)

    try:
        for record in read_records(stream, on_damaged=lambda damage: summary.skipped.append(str(damage))):
            _check_stop(stop)
            if isinstance(record, Header):
                writer = Writer(sink)
                writer.start(profile=record.profile, library=record.library)
                profile = record.profile
            elif writer is None:
                raise SourceError(f"{source} has no MCAP header record; it cannot be recovered")
            elif isinstance(record, Schema) and record.id not in schema_ids:
                add_schema(record)
            elif isinstance(record, Channel) and record.id not in channel_ids:
                add_channel(record)
            elif isinstance(record, Message):
                if record.channel_id not in channel_ids and record.channel_id in known_channels:
                    add_channel(known_channels[record.channel_id])  # declared in a skipped chunk
                if record.channel_id not in channel_ids:
                    summary.orphaned += 1
                    continue
                writer.add_message(channel_ids[record.channel_id], record.log_time, record.data,
                                   record.publish_time, record.sequence)
                summary.messages += 1
                log_range = [min(log_range[0], record.log_time), max(log_range[1], record.log_time)] \
                    if log_range else [record.log_time, record.log_time]
                is_header, topic = roles[record.channel_id]
                per_topic.setdefault(topic, [0, 0])[is_header] += 1
                if not is_header:
                    mask = record.channel_id in images
                    document = None if mask or not topic.endswith(LATCHED_SUFFIXES) else _cdr_json(record.data)
                    frames.add(topic, mask=mask, seq=record.sequence, time_ns=record.log_time, document=document)
            elif isinstance(record, Metadata):
                writer.add_metadata(record.name, dict(record.metadata))
                summary.metadata += 1
                has_bag_record = has_bag_record or record.name == ROSBAG2_RECORD
            elif isinstance(record, Attachment):
                writer.add_attachment(record.create_time, record.log_time, record.name,
                                      record.media_type, record.data)
                summary.attachments += 1
    except DamagedRecord as exc:
        summary.cut = str(exc)  # names the byte the damaged chunk starts at
    except (McapError, struct.error, EOFError, ValueError) as exc:
        at = stream.tell()
        # (Never Python's own wording for a short buffer: "unpack requires a buffer of 8 bytes".)
        why = str(exc) if not isinstance(exc, struct.error) else \
            "a record is shorter than its own fields (damaged)" if at < summary.bytes_in else ""
        summary.cut = f"at byte {at} of {summary.bytes_in}: {why or 'the file ends inside a record'}"
    if writer is None:
        raise SourceError(f"{source} ends before its MCAP header; nothing to recover")
    if profile == "ros2" and not has_bag_record and summary.messages:
        # As the recorder writes it when it finishes a file (``McapMaskWriter._rosbag2_metadata``).
        writer.add_metadata(ROSBAG2_RECORD, rosbag2_record(summary.out.name, *log_range, summary.messages))
    writer.finish()
    summary.channels = len(channel_ids)
    summary.wire_headers = any(is_header for is_header, _ in roles.values())
    if summary.wire_headers:
        headed = {topic for is_header, topic in roles.values() if is_header}
        summary.topics = len({topic for _, topic in roles.values()})
        # A topic without a header channel (not one of ours) counts its data records.
        summary.wire_messages = sum(min(data, headers) if topic in headed else data
                                    for topic, (data, headers) in per_topic.items())
    else:
        summary.topics, summary.wire_messages = summary.channels, summary.messages


def _cdr_json(data: bytes) -> Any:
    """The JSON document in a recorded ``std_msgs/msg/String`` (CDR: a 4-byte encapsulation
    header, a uint32 length, the text and its NUL); None when it is not one."""
    import json

    if len(data) < 8 or data[0] != 0 or data[1] not in (0, 1):
        return None
    size = int.from_bytes(data[4:8], "little" if data[1] == 1 else "big")
    try:
        return json.loads(bytes(data[8: 8 + size]).rstrip(b"\0"))
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested past the parser's depth
        return None

