"""A recording's output as the recorder writes it: one MCAP file, or a sequence of splits
``<stem>_N.mcap`` (``SplitWriter``: when a split ends, its latched topics written again, each wire
topic's ROS 2 name kept, the folder's rosbag2 ``metadata.yaml``, ``--overwrite`` and ``--append``,
the lock on ``--out``), and what is kept when a file cannot be written any more (``Abandoned``).
Each file is written by ``mcap_writer.McapMaskWriter``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from perception import contracts
from perception.errors import ConfigError
from perception.mcap_layout import (
    LATCHED_SUFFIXES,
    RosTopicNames,
    split_files,
    split_path,
)
from perception.mcap_writer import INDEX_WARN_BYTES, FrameTally, McapMaskWriter, TopicCount
from perception.record_output import (
    BagMetadata,
    OutputFailing,
    OutputLock,
    OutputUnwritable,
    existing_outputs,
    finished_mcap,
    refuse_existing,
)
from perception.recover import empty_recording

if TYPE_CHECKING:
    from perception.record import RecordConfig

# The name it had before this module was split from mcap_writer.py: filters and tests that name it go on working.
log = logging.getLogger("perception.mcap_writer")


@dataclass
class Abandoned:
    """What ``SplitWriter.abandon`` kept of a recording whose file could not be written any more."""

    #: The file being written when it failed.
    path: Path
    #: Messages written into it, and those of them whole on disk (``McapMaskWriter.whole_on_disk``).
    messages: int
    whole: int
    #: Messages in the finished splits before it, and those splits.
    finished: int
    splits: list[Path]
    #: Whether it was removed: no message of it reached the disk whole.
    removed: bool
    #: The latched topics (``<ns>/info``) written again at its start (a split) whose copies are whole
    #: on disk: ``--recover`` and ``replay`` of the file count them beside the ``whole``.
    repeated: list[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        """The messages whole on disk as ``--recover`` and ``replay`` of this file count them."""
        return self.whole + len(self.repeated)


class SplitWriter:
    """The recorder's output: one ``McapMaskWriter`` at ``config.out``, or, with ``split_duration``
    / ``split_size``, a sequence of complete MCAP files ``<stem>_0.mcap``, ``<stem>_1.mcap``...

    Each split is finished (summary, index, metadata record) before the next is opened, so a
    recorder killed mid-run loses at most the open split, and ``perception recover`` rebuilds
    that one. A split ends at the first message after its duration has passed, or once the file
    has reached ``split_size`` MB; it can exceed the size by at most one chunk (``chunk_size``,
    at most ``chunk_size_kb`` and an eighth of the size limit). ``metadata(split=, file_counts=)`` is
    called when a file is closed, with its split index (None without splits) and the messages that
    file holds per topic (``McapMaskWriter.file_counts``); it returns the file's metadata record.
    The latest message of each latched topic (``<ns>/info``) is written again at the start of
    every split, so each split alone holds the class table it needs (a replay of all the splits
    sends it once). Each wire topic keeps one ROS 2 channel name in every split (``names``, a
    ``RosTopicNames``; with ``config.append``, the names of the splits already there first), and
    the folder's rosbag2 ``metadata.yaml`` (``BagMetadata``) is written again as each split is
    finished, so the folder opens as one rosbag2 bag.

    Files of an earlier recording to the same ``out`` (``existing_outputs``) make it raise
    ConfigError before anything is written; with ``config.overwrite`` they are all removed, so no
    old split is left to be replayed after the new ones, but only when the first message is
    written: a recording that receives nothing (no node there yet) leaves the one it was to replace
    as it was. Until then its folder is only checked to be writable. With ``config.append`` (splits
    only) the splits there are kept as they are (``continued``) and the first new one takes the
    next index after the last of them; those left unfinished by a killed recorder are
    ``unfinished``, for ``perception record --recover`` (an unsplit ``out`` there is refused: it
    is another recording, which a replay of ``out`` would play instead of the splits).

    The output is held with an ``OutputLock`` from the start until ``release``: a second recorder
    to the same ``out`` is refused. A file's chunk indexes held in memory past ``INDEX_WARN_BYTES``
    draw one warning (``_warn_index``).
    """

    def __init__(self, config: RecordConfig, metadata) -> None:
        #: Files of an earlier recording that --overwrite removes when the first message comes.
        self.replaced: list[Path] = []
        #: With --append: the splits already there, kept, and those of them left unfinished.
        self.continued: list[Path] = []
        self.unfinished: list[Path] = []
        #: Of the ``continued``: those holding nothing (their recorder ended before its first message).
        self.empty: list[Path] = []
        #: The files written that were no longer there when the folder was checked (``_check_folder``).
        self.vanished: list[Path] = []
        #: Messages (counted ones) in each file written, once it is closed.
        self._file_messages: dict[Path, int] = {}
        #: The index of the first split written here (after the ``continued`` ones).
        self.first_index = 0
        #: The ROS 2 name of each wire topic, the same in every split (``RosTopicNames``).
        self.names = RosTopicNames()
        #: The rosbag2 metadata.yaml of the splits' folder.
        self.bag = BagMetadata(Path(config.out))
        try:
            self._lock = OutputLock(Path(config.out))  # also makes the folder
        except OutputUnwritable as exc:
            earlier = split_files(Path(config.out)) if config.append else []
            if not earlier:
                raise
            # Its earlier splits were written there: the folder or disk failed since (a launch's respawn).
            raise OutputFailing(
                f"cannot write {config.out} any more ({exc.why}), where the splits {earlier[0]} .. {earlier[-1].name} "
                "were written: a folder turned read-only or a failing disk; make it writable again (a launch "
                "restarts this recorder until it can write, and it goes on after those splits)") from None
        try:
            self._start(config, metadata)
        except BaseException:
            self.release()
            raise

    def _start(self, config: RecordConfig, metadata) -> None:
        if config.append:
            out = Path(config.out)
            if (out.exists() and not out.is_dir()) or out.is_symlink():
                raise ConfigError(f"{out} already exists (an earlier recording in one file); --append goes on after "
                                  "the splits <stem>_N.mcap of a --split-* recording only: choose another --out, or "
                                  "remove it")
            self.continued = split_files(out)
            if self.continued:
                self.first_index = int(self.continued[-1].stem.rpartition("_")[2]) + 1
            self.empty = [p for p in self.continued if empty_recording(p)]
            self.unfinished = [p for p in self.continued if p not in self.empty and finished_mcap(p) is False]
            # metadata.yaml as the disk is now: a recorder killed between finishing a split and
            # writing it again left that split out.
            self.bag.update()
            for info in self.bag.finished():  # the names the splits there gave their topics
                for topic, name, msgtype in info.wire_topics:
                    self.names.claim(topic, name, msgtype)
        elif not config.overwrite:
            refuse_existing(config)
        else:
            self.replaced = existing_outputs(config)
            folder = Path(config.out).parent
            if not os.access(folder, os.W_OK | os.X_OK):
                raise ConfigError(f"cannot write {config.out}: permission denied; choose a writable --out")
        self._exclusive = not config.overwrite
        self.config = config
        self.counts: dict[str, TopicCount] = {}
        self.paths: list[Path] = []
        self._metadata = metadata
        self._latched: dict[str, object] = {}
        #: The latched topics written again at the start of the open file, in order.
        self._repeated: list[str] = []
        #: Masks of an --atomic-frames node and their frames, among the messages counted.
        self.frames = FrameTally()
        self._limit_bytes = None if config.split_size is None else int(config.split_size * 1e6)
        self._chunk_size = config.chunk_size_kb * 1024
        if self._limit_bytes is not None:
            self._chunk_size = max(4096, min(self._chunk_size, self._limit_bytes // 8))
        self._writer: McapMaskWriter | None = None
        self._opening = Path(config.out)
        self._index_warned = False
        if not config.overwrite:
            self._open(0)  # now: a file another recorder creates meanwhile is refused, not clobbered

    def _split_index(self) -> int:
        """The index of the open split (``<stem>_N.mcap``)."""
        return self.first_index + len(self.paths) - 1

    def _replace_old(self) -> None:
        for old in self.replaced:
            try:
                old.unlink(missing_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot remove {old} for --overwrite: {exc.strerror}; remove it yourself") from None
        if self.replaced:
            self.bag.update()  # the metadata.yaml of the splits removed goes too
        self.replaced = []

    def _open(self, start_ns: int) -> None:
        """Open the next file; the latched messages written again at its start are logged at
        ``start_ns`` (the first message it is opened for), so a split's log times start with its
        data (the first file has none to write: nothing was received before it)."""
        path = split_path(self.config.out, self.first_index + len(self.paths)) if self.config.splits \
            else Path(self.config.out)
        self._writer, self._opening = None, path  # until it is open: what ``abandon`` names
        # A later split that cannot be opened (the disk failing, the folder read-only now) is a
        # write error (OSError: exit 1, a launch restarts the recorder), not a bad --out (exit 2).
        self._writer = McapMaskWriter(path, chunk_size=self._chunk_size, counts=self.counts, exclusive=self._exclusive,
                                      names=self.names, startup=not self.paths)
        self.paths.append(path)
        self._opened = time.monotonic()
        self._repeated = []
        for topic, msg in self._latched.items():
            self._writer.write(msg, count=False, log_time_ns=start_ns)
            self._repeated.append(topic)

    def _full(self) -> bool:
        if self._writer.messages == 0:
            return False
        if self.config.split_duration is not None and time.monotonic() - self._opened >= self.config.split_duration:
            return True
        return self._limit_bytes is not None and self._writer.size_bytes >= self._limit_bytes

    def write(self, msg) -> None:
        """Write one message, first starting the next split when the open one is full (or, with
        --overwrite, the first file, once the old ones are removed)."""
        if self._writer is None:
            self._replace_old()
            self._open(msg.receive_ns)
        elif self.config.splits and self._full():
            self._check_folder()
            self._finish()
            self._open(msg.receive_ns)
        self._writer.write(msg)
        if not self._index_warned and self._writer.index_bytes >= INDEX_WARN_BYTES:
            self._warn_index()
        self.frames.add(msg.topic, mask=msg.header["kind"] == contracts.KIND_MASK, seq=int(msg.header["seq"]),
                        time_ns=msg.receive_ns, document=msg.data)
        if msg.topic.endswith(LATCHED_SUFFIXES):
            self._latched[msg.topic] = msg

    @property
    def path(self) -> Path:
        """The file being written (the open split; ``out`` before the first one is opened)."""
        return self.paths[-1] if self.paths else Path(self.config.out)

    def _warn_index(self) -> None:
        """Say once that the open file's chunk indexes held in memory have passed ``INDEX_WARN_BYTES``
        (the ``mcap`` Writer keeps them until the file is finished), with the figures and the fix."""
        self._index_warned = True
        writer = self._writer
        hours = max(time.monotonic() - self._opened, 1e-3) / 3600
        mb = writer.index_bytes / 1e6
        which = f"the split {writer.path}" if self.config.splits else f"the recording {writer.path}"
        fix = ("a smaller --split-size or --split-duration bounds it" if self.config.splits else
               "for long runs record with --split-duration S or --split-size MB, which finish each file and free "
               "its index")
        log.warning("%s holds the index of its %d chunks in memory until it is finished: about %.0f MB after %.1f h, "
                    "growing by about %.0f MB an hour (%d bytes a chunk), so the recorder's memory grows for as long "
                    "as it records; %s (a larger --chunk-size makes fewer chunks)", which, writer.chunks, mb, hours,
                    mb / hours, writer.index_bytes // max(writer.chunks, 1), fix)

    def _finish(self) -> None:
        """Finish the open file, and write the folder's ``metadata.yaml`` of a split recording again
        (``BagMetadata.update(closed=)``: the cost of a split stays the same however many came before)."""
        path = self.paths[-1]
        self._writer.close(self._metadata(split=self._split_index() if self.config.splits else None,
                                          file_counts=dict(self._writer.file_counts)))
        self._file_messages[path] = self._writer.messages
        if self.config.splits:
            self.bag.update(closed=path)

    def close(self) -> None:
        """Finish the open file (and write the folder's ``metadata.yaml`` of a split recording again); idempotent."""
        if self._writer is not None:
            self._check_folder()
            self._finish()
        self.vanished = [p for p in self.paths if not p.exists()]

    def lost_messages(self) -> int:
        """The messages in the finished files that are no longer there (``vanished``)."""
        return sum(self._file_messages.get(p, 0) for p in self.vanished)

    def _check_folder(self) -> None:
        """Say once when the lock file on ``out`` is gone (its folder removed while recording: the
        splits in it, the open one too, are lost, and a second recorder would no longer be kept off),
        and lock ``out`` again; the recording goes on in the folder made again for the next split."""
        if self._lock.held():
            return
        gone = [p for p in self.paths if not p.exists()]
        self.vanished += [p for p in gone if p not in self.vanished]
        which = ("" if not gone else f": {gone[0]} is gone" if len(gone) == 1 else
                 f": {len(gone)} files of it are gone ({gone[0].name} .. {gone[-1].name}, the open one included)")
        log.warning("%s was removed while recording (its folder removed?)%s; recording goes on, %s locked again, and "
                    "the closing line counts what was lost", self._lock.path, which, self.config.out)
        self._lock.retake()
    def release(self) -> None:
        """Give up the output (``OutputLock.release``), once the files are finished or abandoned."""
        self._lock.release()

    def abandon(self) -> Abandoned:
        """Close the open file unfinished, ignoring errors (see ``McapMaskWriter.abandon``), and say
        what was kept. A file in which no message reached the disk whole (a disk full at its first
        chunk) is removed: it holds nothing to recover, and would only make the next recording to
        the same ``--out`` refuse to start."""
        if self._writer is None:  # the file could not even be started (``_open``); it is gone
            total = sum(c.messages for c in self.counts.values())
            return Abandoned(self._opening, 0, 0, total, list(self.paths), removed=True)
        self._writer.abandon()
        path = self.paths[-1]
        whole, records = self._writer.whole_on_disk()
        done = list(self.paths[:-1])  # the finished splits before it
        finished = sum(c.messages for c in self.counts.values()) - self._writer.messages
        removed = records == 0
        if removed:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self.paths.pop()
        # The repeated latched messages come first in the file: those whole on disk are its first records.
        repeated = self._repeated[: max(0, records - whole)]
        return Abandoned(path, self._writer.messages, whole, finished, done, removed=removed, repeated=repeated)

    def remove(self) -> None:
        """Remove every file written (a recording that received nothing): an empty file would only
        make the next recording to the same ``--out`` refuse to start."""
        for path in self.paths:
            path.unlink(missing_ok=True)
        if self.paths and self.config.splits:
            self.bag.update()  # lists the splits there now (those of earlier runs, with --append)
        self.paths = []
