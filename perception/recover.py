"""Recovery of a recording whose recorder was killed (``perception record --recover FILE``).

A recorder that dies (SIGKILL, power loss) leaves an MCAP file without its summary section:
stream readers read it, indexed readers (rosbags, ``mcap.reader.SeekingReader``) refuse it.
``recover_recording`` rewrites every record that can still be read into a finished, indexed
file. Kept apart from ``perception/mcap_writer.py``, which writes recordings: this module only reads
damaged ones.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from perception.errors import ConfigError


@dataclass
class RecoverSummary:
    """What ``recover_recording`` saved: record counts, sizes, and where and why reading stopped
    (``cut`` is None when the input ran to its end)."""

    source: Path
    out: Path
    messages: int = 0
    channels: int = 0
    metadata: int = 0
    attachments: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    cut: str | None = None
    kept: Path | None = None

    def format(self) -> str:
        text = (f"recovered {self.messages} messages on {self.channels} channels ({self.metadata} metadata records) "
                f"from {self.source} ({self.bytes_in} bytes) into {self.out} ({self.bytes_out} bytes, indexed) "
                f"in {self.seconds:.2f} s")
        if self.cut:
            text += f"\n  the input ends in a damaged or unfinished record: {self.cut}"
        if self.kept:
            text += f"\n  the original is kept as {self.kept}"
        return text


#: Largest MCAP record recovery reads: a damaged length field must not make it allocate gigabytes.
RECOVER_RECORD_LIMIT = 256 * 1024 * 1024


def recording_is_intact(path: Path) -> bool:
    """True when ``path`` ends in a valid footer and summary, so indexed readers open it as it is."""
    from mcap.exceptions import McapError
    from mcap.reader import SeekingReader

    try:
        with open(path, "rb") as stream:
            return SeekingReader(stream).get_summary() is not None
    except (McapError, struct.error, EOFError, ValueError, OSError):
        return False


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when ``a`` and ``b`` both exist and are the same file (same path, a link, ``./x`` and ``x``)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def recover_recording(path: str | Path, out: str | Path | None = None, *, overwrite: bool = False) -> RecoverSummary:
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
    be written or would replace a file it must not.
    """
    from mcap.exceptions import McapError
    from mcap.records import Attachment, Channel, DataEnd, Header, Message, Metadata, Schema
    from mcap.stream_reader import StreamReader
    from mcap.writer import Writer

    from perception.errors import SourceError

    source = Path(path)
    if not source.is_file():
        raise SourceError(f"recording {source} not found; check the path given to --recover")
    in_place = out is None or same_file(out, source)  # --out FILE itself: the original bytes are kept too
    target = source if in_place else Path(out)
    kept = source.with_name(source.name + ".damaged")
    # Checked before anything is written: neither the original of an earlier recovery nor a file
    # the user did not name for replacing is lost.
    if in_place and (kept.exists() or kept.is_symlink()):
        raise ConfigError(f"{kept} already exists (the original of an earlier recovery); move it away first, "
                          "or pass --out OTHER.mcap")
    if not in_place and not overwrite and (target.exists() or target.is_symlink()):
        raise ConfigError(f"{target} already exists; choose another --out, or pass --overwrite to replace it")
    temp = target.with_name(target.name + ".recovering")
    t0 = time.monotonic()
    summary = RecoverSummary(source=source, out=target, bytes_in=source.stat().st_size)
    with open(source, "rb") as stream:
        if stream.read(8) != b"\x89MCAP0\r\n":
            raise SourceError(f"{source} is not an MCAP file; --recover rebuilds recordings made by 'perception record'")
        stream.seek(0)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            sink = open(temp, "wb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise ConfigError(f"cannot write {temp}: {exc.strerror}; choose a writable --out") from None
        try:
            writer: Writer | None = None
            schema_ids: dict[int, int] = {}
            channel_ids: dict[int, int] = {}
            reader = StreamReader(stream, validate_crcs=True, record_size_limit=RECOVER_RECORD_LIMIT)
            try:
                for record in reader.records:
                    if isinstance(record, Header):
                        writer = Writer(sink)
                        writer.start(profile=record.profile, library=record.library)
                    elif writer is None:
                        raise SourceError(f"{source} has no MCAP header record; it cannot be recovered")
                    elif isinstance(record, Schema) and record.id not in schema_ids:
                        schema_ids[record.id] = writer.register_schema(record.name, record.encoding, record.data)
                    elif isinstance(record, Channel) and record.id not in channel_ids:
                        channel_ids[record.id] = writer.register_channel(
                            record.topic, record.message_encoding, schema_ids.get(record.schema_id, 0),
                            dict(record.metadata),
                        )
                    elif isinstance(record, Message) and record.channel_id in channel_ids:
                        writer.add_message(channel_ids[record.channel_id], record.log_time, record.data,
                                           record.publish_time, record.sequence)
                        summary.messages += 1
                    elif isinstance(record, Metadata):
                        writer.add_metadata(record.name, dict(record.metadata))
                        summary.metadata += 1
                    elif isinstance(record, Attachment):
                        writer.add_attachment(record.create_time, record.log_time, record.name,
                                              record.media_type, record.data)
                        summary.attachments += 1
                    elif isinstance(record, DataEnd):
                        break  # the summary section that follows is rebuilt, not copied
            except (McapError, struct.error, EOFError, ValueError) as exc:
                summary.cut = f"at byte {stream.tell()} of {summary.bytes_in}: {str(exc) or type(exc).__name__}"
            if writer is None:
                raise SourceError(f"{source} ends before its MCAP header; nothing to recover")
            writer.finish()
            summary.channels = len(channel_ids)
        except BaseException:
            sink.close()
            temp.unlink(missing_ok=True)
            raise
        sink.close()
    if in_place:
        os.replace(source, kept)
        summary.kept = kept
    os.replace(temp, target)
    summary.bytes_out = target.stat().st_size
    summary.seconds = time.monotonic() - t0
    return summary
