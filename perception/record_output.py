"""What a recording's ``--out`` holds and who writes it: the files of an earlier recording there
(``out`` and its ``<stem>_N.mcap`` splits), whether a file is a finished MCAP file, the lock
that keeps a second recorder off the same output, and the rosbag2 ``metadata.yaml`` that makes the
folder of a split recording a rosbag2 bag (``BagMetadata``). ``perception/record_splits.py``'s ``SplitWriter``
claims its output through these before it writes anything.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from perception.errors import ConfigError, PerceptionError, SourceError
from perception.mcap_layout import (
    CONTENT_DATA,
    CONTENT_KEY,
    METADATA_NAME,
    WIRE_TOPIC_KEY,
    split_files,
    split_path,
)

if TYPE_CHECKING:
    from perception.record import RecordConfig

log = logging.getLogger(__name__)

#: The last 8 bytes of a finished MCAP file (its closing magic); an unfinished one lacks them.
MCAP_MAGIC = b"\x89MCAP0\r\n"

def existing_outputs(config: RecordConfig) -> list[Path]:
    """Files a recording per ``config`` would replace or be mixed with: ``out`` and every existing
    split of that name, with or without ``--split-*`` (a replay of ``out`` would play old splits
    after the new ones, or the old ``out`` instead of them)."""
    out = Path(config.out)
    # A folder is left to open() to refuse ("cannot write"); a dangling link counts, as "xb" would fail on it.
    found = [out] if (out.exists() and not out.is_dir()) or out.is_symlink() else []
    # Old splits count without --split-* too: ``replay out/run.mcap`` would play the new file, not
    # them, and a folder replay both sessions mixed.
    return found + split_files(out)


def refuse_existing(config: RecordConfig) -> None:
    """Raise ConfigError naming the files a recording to ``config.out`` would overwrite."""
    found = existing_outputs(config)
    if found:
        names = ", ".join(str(f) for f in found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        one = len(found) == 1
        raise ConfigError(f"{names} already exist{'s' if one else ''} (an earlier recording); choose another --out, "
                          f"remove {'it' if one else 'them'}, or pass --overwrite to replace {'it' if one else 'them'}")


def lock_path(out: Path) -> Path:
    """The lock file of a recording to ``out`` and its splits: ``.run.mcap.lock`` beside ``run.mcap``."""
    out = Path(out)
    return out.with_name(f".{out.name}.lock")


class OutputUnwritable(ConfigError):
    """``--out`` (its folder or lock file) cannot be written: a bad input at a recorder's start
    (exit 2). ``why``: the system's reason."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


class OutputFailing(PerceptionError):
    """``--out`` cannot be written any more where an ``--append`` recorder's earlier splits show that
    it was (a folder turned read-only, a failing disk): exit 1, as any file the system fails to
    write, so a launch restarts the recorder (with its back-off) until it can write again, not 2,
    which a launch never restarts."""

    exit_code = 1


class OutputLock:
    """Exclusive use of a recording's output (``out`` and its ``<stem>_N.mcap`` splits) by one
    recorder: ``fcntl.flock`` on ``lock_path(out)``, which holds the recorder's pid. A second
    recorder to the same ``out`` (however spelled: ``a/./run.mcap``, a linked folder) is refused
    with ConfigError naming the file and that pid, instead of both writing (with ``--overwrite``,
    each removing the other's file) and both reporting success over a file no one can read.

    The kernel drops the lock when the recorder ends, also when it is killed (SIGKILL, OOM): the
    file left then is taken over by the next recorder. ``release`` removes it (before unlocking:
    one that opened the old file meanwhile finds it gone and opens the new one)."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = lock_path(self.out)
        self._file: IO[bytes] | None = None
        self._acquire()

    def _acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputUnwritable(f"cannot write {self.out}: {exc.strerror}; choose a writable --out",
                                   exc.strerror or str(exc)) from None
        while self._file is None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise OutputUnwritable(f"cannot write {self.out} (its lock file {self.path.name}: {exc.strerror}); "
                                       "choose a writable --out", exc.strerror or str(exc)) from None
            file = os.fdopen(fd, "r+b", buffering=0)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _lock_holder(file)
                file.close()
                who = f"another recorder (pid {holder})" if holder else "another recorder"
                raise ConfigError(f"{self.out} is being written by {who}, which holds {self.path}; stop it, or "
                                  "choose another --out") from None
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    file.close()
                    raise
                log.debug("no lock on %s (%s): this file system takes none", self.path, exc.strerror)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if same:
                self._file = file
            else:  # removed (and perhaps made again) by the recorder that held it, as it ended
                file.close()
        with contextlib.suppress(OSError):  # the pid is for the message above; a full disk leaves it out
            self._file.truncate(0)
            self._file.write(f"{os.getpid()}\n".encode())

    def held(self) -> bool:
        """Whether the lock file there is still the one this holds (not removed, with its folder, by
        someone while recording); True once released."""
        if self._file is None:
            return True
        try:
            return os.path.samestat(os.fstat(self._file.fileno()), os.stat(self.path, follow_symlinks=False))
        except OSError:
            return False

    def retake(self) -> None:
        """Lock ``out`` again with a new lock file, after ``held`` found this one gone (ConfigError,
        as at the start, when another recorder took it meanwhile or it cannot be made)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._acquire()

    def release(self) -> None:
        """Remove the lock file and unlock; idempotent."""
        if self._file is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        self._file.close()
        self._file = None


def _lock_holder(file: IO[bytes]) -> int | None:
    """The pid written in a lock file, or None (not written yet, or not a pid)."""
    try:
        file.seek(0)
        text = file.read(32).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def finished_mcap(path: Path) -> bool | None:
    """Whether a regular file ends with MCAP's closing magic, as a finished file does (one whose
    recorder was killed lacks it: ``perception record --recover`` rebuilds it); None when it is not
    a regular file or cannot be read."""
    try:
        if not path.is_file():
            return None
        with Path(path).open("rb") as f:  # not this module's open (tests stand in for it)
            size = f.seek(0, os.SEEK_END)
            if size < len(MCAP_MAGIC):
                return False
            f.seek(size - len(MCAP_MAGIC))
            return f.read(len(MCAP_MAGIC)) == MCAP_MAGIC
    except OSError:
        return None


#: The rosbag2 metadata file of a bag folder: a split recording's folder holds one (``BagMetadata``).
BAG_METADATA_FILE = "metadata.yaml"
#: The version of rosbag2's ``metadata.yaml`` written: 8 (rosbag2 of Iron), the newest that writes
#: ``offered_qos_profiles`` as a YAML string, as the MCAP channels hold it. Every rosbag2 since Humble
#: reads it (Humble reads the fields it knows; Jazzy and later read older versions), and rosbags
#: (versions up to 9). Version 9 (Jazzy) writes the profiles as a YAML list, which Humble's reader
#: refuses ("bad conversion").
ROSBAG2_METADATA_VERSION = 8
#: The MCAP metadata record in which rosbag2 keeps a file's bag metadata (``serialized_metadata``:
#: ``bag_metadata_yaml(record=True)``). rosbag2's MCAP storage reads the channels'
#: ``offered_qos_profiles`` by its ``version``; without the record, Jazzy and later take them as
#: version 9 (policy names), and the numbers written here (``mcap_layout.offered_qos_profiles``)
#: would read as unknown policies.
ROSBAG2_RECORD = "rosbag2"
#: Largest record read from a split's summary (a damaged length must not allocate gigabytes).
_SUMMARY_RECORD_LIMIT = 256 * 1024 * 1024


def load_yaml(data: bytes | str):
    """``yaml.safe_load`` with libyaml's loader where PyYAML has it (``CSafeLoader``: some 10 times
    faster than the pure-Python one on a metadata.yaml of thousands of splits)."""
    import yaml

    return yaml.load(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    """``(size, mtime_ns, inode)`` of ``path`` (not followed), or None when it is not there."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass
class BagFile:
    """What ``metadata.yaml`` says of one MCAP file, read from the file's summary (its statistics)."""

    name: str
    start_ns: int
    end_ns: int
    messages: int
    #: Per channel, in the file's order: (ROS 2 topic name, message type, serialization format,
    #: ``offered_qos_profiles``, messages).
    channels: list[tuple[str, str, str, str, int]] = field(default_factory=list)
    #: Per data channel of a wire topic: (wire topic, ROS 2 name, message type), for ``RosTopicNames.claim``.
    wire_topics: list[tuple[str, str, str]] = field(default_factory=list)
    #: What the file's own ``perception.recording`` metadata says: True, a split (``split_index``);
    #: False, a recording of its own (the record without ``split_index``: ``drive_2024.mcap``, numbered
    #: but not a split); None, no such record (another tool's file, a split rebuilt by ``--recover``).
    split: bool | None = None
    #: That record's ``split_index`` and ``started_utc`` (when its recorder run started), None without
    #: them: ``--recover DIR`` leaves out a ``run_7.mcap`` that says it is split 1, or whose run is another.
    index: int | None = None
    started: str | None = None


def bag_file(path: Path) -> BagFile | None:
    """``path``'s ``BagFile``, from its summary section; None when it has none that reads (an
    unfinished or damaged file: ``perception record --recover`` rebuilds it) or no statistics."""
    from mcap.reader import SeekingReader

    from perception.recover import open_recording

    split = index = started = None
    try:
        with open_recording(Path(path), "") as stream:
            reader = SeekingReader(stream, record_size_limit=_SUMMARY_RECORD_LIMIT)
            summary = reader.get_summary()
            if summary is not None and summary.statistics is not None:
                for record in reader.iter_metadata():
                    if record.name == METADATA_NAME and record.metadata:
                        split = "split_index" in record.metadata
                        raw = record.metadata.get("split_index", "")
                        index = int(raw) if raw.isascii() and raw.isdigit() else None
                        started = record.metadata.get("started_utc") or None
    except Exception:  # noqa: BLE001 - whatever the library raises for a damaged summary: none to use
        return None
    if summary is None or summary.statistics is None:
        return None
    stats = summary.statistics
    info = BagFile(Path(path).name, stats.message_start_time, stats.message_end_time, stats.message_count, split=split,
                   index=index, started=started)
    for channel_id in sorted(summary.channels):
        channel = summary.channels[channel_id]
        schema = summary.schemas.get(channel.schema_id)
        msgtype = schema.name if schema is not None else ""
        metadata = channel.metadata or {}
        info.channels.append((channel.topic, msgtype, channel.message_encoding,
                              metadata.get("offered_qos_profiles", ""), stats.channel_message_counts.get(channel_id, 0)))
        if metadata.get(CONTENT_KEY) == CONTENT_DATA and WIRE_TOPIC_KEY in metadata:
            info.wire_topics.append((metadata[WIRE_TOPIC_KEY], channel.topic, msgtype))
    return info


def bag_metadata_yaml(files: list[BagFile], *, record: bool = False) -> str:
    """rosbag2's ``metadata.yaml`` (version ``ROSBAG2_METADATA_VERSION``) of a bag of ``files``, in
    order: each file and its times and count, and each topic (ROS 2 name and type) with its
    ``offered_qos_profiles`` and its messages in all the files. ``record``: the bag metadata alone,
    without the ``rosbag2_bagfile_information`` key, as rosbag2 stores it in an MCAP file's
    ``rosbag2`` metadata record (``rosbag2_record``)."""
    topics: dict[tuple[str, str], dict] = {}
    for info in files:
        for name, msgtype, encoding, qos, count in info.channels:
            entry = topics.get((name, msgtype))
            if entry is None:
                entry = topics[(name, msgtype)] = {
                    "topic_metadata": {"name": name, "type": msgtype, "serialization_format": encoding,
                                       "offered_qos_profiles": qos, "type_description_hash": ""},
                    "message_count": 0,
                }
            entry["message_count"] += count
    timed = [info for info in files if info.messages]
    start = min((info.start_ns for info in timed), default=0)
    end = max((info.end_ns for info in timed), default=0)
    info = {
        "version": ROSBAG2_METADATA_VERSION,
        "storage_identifier": "mcap",
        "duration": {"nanoseconds": end - start},
        "starting_time": {"nanoseconds_since_epoch": start},
        "message_count": sum(info.messages for info in files),
        "topics_with_message_count": list(topics.values()),
        # The chunks of an MCAP file are compressed inside it (the storage's own compression):
        # rosbag2 records no bag compression for that.
        "compression_format": "",
        "compression_mode": "",
        # Filled in below, each file's entries dumped once (``_file_yaml``): a recorder writes the
        # file again at each split, which must not cost more with every split before it.
        "relative_file_paths": [],
        "files": [],
        "custom_data": None,
        "ros_distro": "",
    }
    doc = info if record else {"rosbag2_bagfile_information": info}
    text = _dump_yaml(doc)
    if files:
        indent = "" if record else "  "
        entries = [_file_yaml(f.name, f.start_ns if f.messages else 0, f.end_ns - f.start_ns if f.messages else 0,
                              f.messages) for f in files]
        for key, part in (("relative_file_paths", 0), ("files", 1)):
            body = "".join(indent + line for entry in entries for line in entry[part].splitlines(keepends=True))
            text = text.replace(f"\n{indent}{key}: []\n", f"\n{indent}{key}:\n{body}", 1)
    return text


def _dump_yaml(doc) -> str:
    """``doc`` as YAML, block style, keys in order, with libyaml's dumper where PyYAML has it."""
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(doc, Dumper=dumper, sort_keys=False, default_flow_style=False, width=2**30)


@functools.lru_cache(maxsize=1 << 16)
def _file_yaml(name: str, start_ns: int, duration_ns: int, messages: int) -> tuple[str, str]:
    """One file's items of ``relative_file_paths`` and ``files`` in metadata.yaml, unindented."""
    return _dump_yaml([name]), _dump_yaml([{"path": name, "starting_time": {"nanoseconds_since_epoch": start_ns},
                                            "duration": {"nanoseconds": duration_ns}, "message_count": messages}])


def rosbag2_record(name: str, start_ns: int, end_ns: int, messages: int) -> dict[str, str]:
    """The ``rosbag2`` metadata record (``ROSBAG2_RECORD``) of an MCAP file ``name`` of ``messages``
    logged from ``start_ns`` to ``end_ns``: its bag metadata, which rosbag2's MCAP storage reads for
    its ``version`` (how the channels' ``offered_qos_profiles`` are written) and then completes from
    the file itself (counts and times from its statistics, each topic from its channel). So its
    topic list is left empty: the channels say it all, and a split stays as small as it was."""
    return {"serialized_metadata": bag_metadata_yaml([BagFile(name, start_ns, end_ns, messages)], record=True)}


class BagMetadata:
    """The rosbag2 ``metadata.yaml`` beside the splits of a recording to ``out`` (``<stem>_N.mcap``),
    which makes their folder a rosbag2 bag: ``ros2 bag info/play DIR`` and rosbags'
    ``AnyReader([DIR])`` read the splits as one bag, with their topics, types, QoS and counts.

    ``update`` writes it again from the finished splits there now (an unfinished one, left by a
    killed recorder, is listed once ``--recover`` has rebuilt it): the recorder calls it as each
    split is finished, and ``--recover`` after rebuilding a split. Each split's summary is read
    once (kept by name, size and change time). It is written to a temporary file and renamed, so
    it is never half there. An unsplit recording (one file, which ROS tools open by its name) gets
    none: with no split there, ``update`` only removes one it wrote before (``--overwrite``).

    A ``metadata.yaml`` there that lists other files than this recording's splits (another bag, or
    the splits of another ``--out`` in the same folder), or that does not read, is left as it is,
    with one warning: a folder holds one bag."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out.parent / BAG_METADATA_FILE
        self._files: dict[str, tuple[tuple[int, int, int], BagFile | None]] = {}
        self._warned = False
        #: The ``_stat_key`` of the metadata.yaml this object wrote last, and the files it lists.
        self._written: tuple[int, int, int] | None = None
        self._listed: list[BagFile] | None = None
        #: Names of split files ``finished`` leaves out (``--recover DIR``: another recording's splits).
        self.left_out: set[str] = set()

    def file(self, path: Path) -> BagFile | None:
        """``bag_file(path)`` of a finished file (None for an unfinished one), read again only when the
        file changed: a recording of many splits reads each once."""
        key = _stat_key(path)
        if key is None:
            return None
        cached = self._files.get(path.name)
        if cached is None or cached[0] != key:
            cached = self._files[path.name] = (key, bag_file(path) if finished_mcap(path) else None)
        return cached[1]

    def finished(self) -> list[BagFile]:
        """The ``BagFile`` of each finished split there now, in index order. A numbered file whose own
        metadata says it is a recording of its own (``BagFile.split`` False: ``drive_2024.mcap`` beside
        the splits ``drive_0.mcap``...) is not one of them."""
        found = (self.file(path) for path in split_files(self.out))
        return [info for info in found if info is not None and info.split is not False and info.name not in self.left_out]

    def ours(self) -> bool | None:
        """Whether the ``metadata.yaml`` there lists only splits of ``out`` (None: there is none). The
        one this object wrote last, unchanged since (``_written``), is not read again."""
        key = _stat_key(self.path)
        if key is None:
            return None
        if key is not None and key == self._written:
            return True
        try:
            with self.path.open("rb") as f:
                doc = load_yaml(f.read(16 * 1024 * 1024))
            paths = doc["rosbag2_bagfile_information"]["relative_file_paths"]
        except Exception:  # noqa: BLE001 - unreadable, not YAML, not rosbag2's layout: not ours to replace
            return False
        if not isinstance(paths, list):
            return False
        suffix = self.out.suffix or ".mcap"
        pattern = re.compile(re.escape(self.out.stem) + r"_\d+" + re.escape(suffix), re.DOTALL)
        return all(isinstance(p, str) and pattern.fullmatch(Path(p).name) for p in paths)

    def update(self, *, create: bool = True, closed: Path | None = None) -> Path | None:
        """Write ``metadata.yaml`` for the finished splits there now (``create`` False: only where
        one of this recording is there already), or remove the one of this recording when there is
        none. Returns the file written, or None. A file that cannot be written (a full disk) is one
        warning, not an error: the splits themselves are complete MCAP files.

        ``closed``: the split its recorder has just finished. While the ``metadata.yaml`` there is
        the one this object wrote last (same inode, size and time), its listing is kept in memory
        and only ``closed`` is read and added: a split costs the same however many came before
        (the folder is read again, and the file parsed, only when someone else changed it:
        ``--recover`` of a split, a file removed)."""
        listed, self._listed = self._listed, None
        if closed is not None and listed is not None and _stat_key(self.path) == self._written:
            info = self.file(closed)
            files = [f for f in listed if f.name != closed.name] + ([info] if info is not None else [])
            owner: bool | None = True
        else:
            files = self.finished()
            owner = self.ours()
        try:
            if not files:
                if owner:
                    self.path.unlink(missing_ok=True)
                self._written = None
                return None
            if owner is False:
                self._warn(f"{self.path} is left as it is: it lists other files than the splits of {self.out} (a "
                           f"folder holds one rosbag2 bag), so ros2 bag does not open these splits as one bag; give "
                           f"each split recording a folder of its own (--out DIR/{self.out.name})")
                return None
            if owner is None and not create:
                return None
            temp = self.path.with_name(f".{BAG_METADATA_FILE}.{os.getpid()}.writing")
            try:
                temp.write_text(bag_metadata_yaml(files), encoding="utf-8")
                os.replace(temp, self.path)
            finally:
                temp.unlink(missing_ok=True)
            self._written, self._listed = _stat_key(self.path), files
        except OSError as exc:
            self._warn(f"could not write {self.path} ({exc.strerror or exc}): ros2 bag and rosbags open the "
                       f"folder of the splits as a bag only with it (each split still opens as a file); it is "
                       f"written again when the next split is finished")
            return None
        return self.path

    def _warn(self, text: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("%s", text)


@dataclass
class FolderBag:
    """What ``write_folder_bag`` wrote: the folder's ``metadata.yaml``, the splits it lists, and the
    unfinished splits left out of it (each rebuilt with ``--recover FILE``)."""

    path: Path
    stem: str
    splits: list[str]
    unfinished: list[Path]
    #: Splits of the recording not there (a gap in the indices, or listed by the earlier metadata.yaml).
    missing: list[Path] = field(default_factory=list)
    #: Split files left out as another recording's, each with why.
    foreign: list[tuple[Path, str]] = field(default_factory=list)

    def format(self) -> str:
        count = len(self.splits)
        names = self.splits[0] if count == 1 else f"{self.splits[0]} .. {self.splits[-1]}"
        def index(name: str) -> int:
            tail = Path(name).stem.rpartition("_")[2]
            return int(tail) if tail.isdigit() else -1

        listed = set(self.splits)
        low, high = (index(self.splits[0]), index(self.splits[-1])) if count > 1 else (0, -1)
        between = sorted({p.name for p in self.unfinished + self.missing
                          if p.name not in listed and low < index(p.name) < high}, key=index)
        if between:  # a range that seems to hold a split it leaves out: say which (H54 L3 of s42)
            names += " without " + ", ".join(between[:3]) + (" ..." if len(between) > 3 else "")
        text = (f"{self.path} written: it lists the {count} split{'' if count == 1 else 's'} of {self.stem} "
                f"({names}); ros2 bag and rosbags open {self.path.parent} as one bag")
        if self.unfinished:
            one = len(self.unfinished) == 1
            shown = ", ".join(str(p) for p in self.unfinished[:3]) + \
                (f" and {len(self.unfinished) - 3} more" if len(self.unfinished) > 3 else "")
            text += (f"\n  {shown} {'is' if one else 'are'} unfinished (a killed recorder) and not listed: rebuild "
                     f"{'it' if one else 'each'} with 'perception record --recover FILE', which lists it then")
        if self.missing:
            one = len(self.missing) == 1
            shown = ", ".join(p.name for p in self.missing[:5]) + \
                (f" and {len(self.missing) - 5} more" if len(self.missing) > 5 else "")
            text += (f"\n  {shown} {'is' if one else 'are'} missing (deleted, moved or not copied): the bag lacks "
                     f"{'that stretch' if one else 'those stretches'} of the recording; copy "
                     f"{'it' if one else 'them'} back and run --recover {self.path.parent} again")
        for path, why in self.foreign:
            text += (f"\n  {path.name} is left out: {why}, so it is another recording's split (copied in or "
                     f"renamed); move it out of {path.parent}")
        return text


def _foreign_splits(files: list[BagFile]) -> dict[str, str]:
    """The split files among ``files`` (one stem's, in index order) that belong to another recording,
    each with why, from what each file's own ``perception.recording`` record says: its
    ``split_index`` is not the number in its name, or its recorder run (``started_utc``) is not that
    of the splits before and after it, which share one (a run's splits are consecutive; an
    ``--append`` run comes after all earlier splits)."""
    foreign: dict[str, str] = {}
    for info in files:
        number = int(Path(info.name).stem.rpartition("_")[2])
        if info.index is not None and info.index != number:
            foreign[info.name] = f"its own metadata says it is split {info.index} of a recording, not split {number}"
    kept = [info for info in files if info.name not in foreign]
    for before, info, after in zip(kept, kept[1:], kept[2:], strict=False):
        if before.started and info.started and before.started == after.started != info.started:
            foreign[info.name] = (f"its own metadata says its recorder started at {info.started}, those of "
                                  f"{before.name} and {after.name} at {before.started}")
    return foreign


def write_folder_bag(folder: Path) -> FolderBag:
    """Write the rosbag2 ``metadata.yaml`` of the split recording in ``folder`` (``perception record
    --recover DIR``), which makes the folder one bag for ``ros2 bag`` and rosbags: for splits that
    earlier versions wrote without one, or one a user removed. The splits are the ``<stem>_N.mcap``
    files of the stem whose files say they are splits (``split_index``) or that a ``metadata.yaml``
    there lists. Raises SourceError when there is none, ConfigError when the folder holds the
    splits of several recordings (a folder is one bag) or has another bag's ``metadata.yaml``."""
    from perception.recover import empty_recording

    stems = sorted({m.group(1) for f in folder.glob("*.mcap") if (m := re.fullmatch(r"(.+)_\d+", f.stem, re.DOTALL))})
    found: list[BagMetadata] = []
    for stem in stems:
        bag = BagMetadata(folder / f"{stem}.mcap")
        if bag.ours() or any(info.split for info in bag.finished()):
            found.append(bag)
    if not found:
        raise SourceError(f"{folder} holds no split recording (no <stem>_N.mcap file there says it is a split); "
                          "--recover DIR writes the metadata.yaml of a split recording's folder, --recover FILE "
                          "rebuilds a file whose recorder was killed")
    if len(found) > 1:
        names = ", ".join(f"{bag.out.stem}_N.mcap" for bag in found)
        raise ConfigError(f"{folder} holds the splits of {len(found)} recordings ({names}), and a folder is one "
                          "rosbag2 bag; move each recording's splits into a folder of its own, then --recover each folder")
    bag = found[0]
    if bag.ours() is False:
        what = ("is a folder, not a file" if bag.path.is_dir()
                else f"lists other files than the splits of {bag.out.stem} (or does not read)")
        raise ConfigError(f"{bag.path} {what}; it is left as it is: move it away, then run --recover {folder} again")
    from perception.mcap_reader import _bag_listed

    foreign = _foreign_splits(bag.finished())
    bag.left_out = set(foreign)
    # The splits there, and those the earlier metadata.yaml lists (read before it is written again).
    present = {int(p.stem.rpartition("_")[2]): p for p in split_files(bag.out)}
    own = [n for n, p in present.items() if p.name not in foreign]
    pattern = re.compile(re.escape(bag.out.stem) + r"_(\d+)" + re.escape(bag.out.suffix), re.DOTALL)
    expected = set(range(max(own) + 1 if own else 0))
    if bag.ours():
        expected |= {int(m.group(1)) for name in _bag_listed(folder) if (m := pattern.fullmatch(name))}
    missing = [split_path(bag.out, n) for n in sorted(expected - set(present))]
    if foreign and not bag.finished():
        raise ConfigError(f"{folder} holds no split of its own recording {bag.out.stem}: each says it is another "
                          f"recording's ({next(iter(foreign.values()))}); nothing was written")
    written = bag.update(create=True)
    if written is None:
        raise ConfigError(f"{folder / BAG_METADATA_FILE} was not written (the warning above says why)")
    unfinished = [p for p in split_files(bag.out) if bag.file(p) is None and not empty_recording(p)]
    return FolderBag(written, bag.out.stem, [info.name for info in bag.finished()], unfinished, missing,
                     [(present[int(Path(name).stem.rpartition("_")[2])], why) for name, why in foreign.items()])
