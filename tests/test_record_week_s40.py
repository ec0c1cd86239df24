"""A week of a respawning recorder (hunter H30): splits left empty by a recorder killed before its
first message, metadata.yaml kept in memory and healed at an --append start, a folder turned
read-only or removed mid-run, a backlog at the stop, and the replay's line of files."""

from __future__ import annotations

import errno
import logging
import shutil
import threading

import pytest
import yaml
from test_record import NS, free_endpoint
from test_record_hostile import class_map_message, feed_messages

from perception.cli import main
from perception.errors import SourceError
from perception.mcap_layout import split_files, split_path
from perception.mcap_reader import read_recording
from perception.mcap_writer import McapMaskWriter
from perception.record import RecordConfig, Recorder
from perception.record_output import bag_file, bag_metadata_yaml, lock_path
from perception.recover import recover_recording


def record(monkeypatch, out, seqs, **config):
    """Record class maps ``seqs`` into 20 kB splits with --append (fake subscriber); the summary."""
    stop = feed_messages(monkeypatch, [class_map_message(seq, 1_000_000_000 + seq * 1000) for seq in seqs])
    try:
        recorder = Recorder(RecordConfig(out=out, endpoint=free_endpoint(), namespace=NS, split_size=0.02,
                                         append=True, **config))
        return recorder, recorder.run(stop)
    finally:
        monkeypatch.undo()


def listed(folder) -> list[str]:
    return yaml.safe_load((folder / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["relative_file_paths"]


def test_a_split_holds_its_header_from_the_start(tmp_path):
    """What a kill -9 before the first message leaves: the MCAP magic and header, not 0 bytes."""
    path = tmp_path / "run_0.mcap"
    writer = McapMaskWriter(path)
    try:
        assert path.stat().st_size > 8 and path.read_bytes().startswith(b"\x89MCAP0\r\n")
    finally:
        writer.abandon()


def test_empty_splits_a_killed_recorder_left_are_skipped_named_and_not_sent_to_recover(tmp_path, monkeypatch, caplog):
    out = tmp_path / "rec" / "run.mcap"
    _, first = record(monkeypatch, out, range(150))
    assert len(first.files) >= 2
    n = len(first.files)
    # Two recorders killed before their first message: an older one's 0 bytes, a newer one's header.
    split_path(out, n).write_bytes(b"")
    McapMaskWriter(split_path(out, n + 1)).abandon()
    recorder, second = record(monkeypatch, out, range(1000, 1100))
    line = recorder.continuing()
    assert f"run_{n}.mcap, run_{n + 1}.mcap hold nothing" in line and "delete them" in line, line
    assert "--recover" not in line, line
    assert second.files[0] == split_path(out, n + 2)
    # The whole folder replays, both empty splits skipped with one warning naming them.
    with caplog.at_level(logging.WARNING, logger="perception.mcap_reader"):
        seqs = [m.seq for m in read_recording(out.parent) if m.topic.endswith("class_map")]
    assert seqs == [*range(150), *range(1000, 1100)]
    warned = [r.getMessage() for r in caplog.records if "hold nothing" in r.getMessage()]
    assert len(warned) == 1 and f"run_{n}.mcap" in warned[0] and f"run_{n + 1}.mcap" in warned[0], warned
    for index in (n, n + 1):
        with pytest.raises(SourceError, match="holds nothing to recover.*delete it"):
            recover_recording(split_path(out, index))
    # metadata.yaml lists the finished splits only
    assert listed(out.parent) == [p.name for p in split_files(out) if p.name not in (f"run_{n}.mcap", f"run_{n + 1}.mcap")]
    # replay's "replaying ..." line counts the files it plays, not the empty ones it skips
    from perception.replay import ReplayConfig, run_replay

    class Sink:
        endpoint = "inproc://sink"

        def send(self, msg, stop, *, shift_ns=0):
            return True

    with caplog.at_level(logging.INFO, logger="perception.replay"):
        run_replay(ReplayConfig(file=out.parent, max_rate=True), threading.Event(), publisher=Sink())
    playing = [r.getMessage() for r in caplog.records if r.getMessage().startswith("replaying ")]
    assert len(playing) == 1 and f"run_{n}.mcap" not in playing[0] and f"run_{n + 1}.mcap" not in playing[0], playing


def test_an_unfinished_split_is_not_said_to_be_from_a_kill_alone(tmp_path, monkeypatch):
    out = tmp_path / "run.mcap"
    record(monkeypatch, out, range(60))
    writer = McapMaskWriter(split_path(out, len(split_files(out))), chunk_size=4096)
    for seq in range(60, 120):
        writer.write(class_map_message(seq, 2_000_000_000 + seq))
    writer.abandon()  # a full disk, or a kill: chunks on disk, no summary
    recorder, _ = record(monkeypatch, out, range(200, 210))
    line = recorder.continuing()
    assert "is unfinished (the recorder did not finish it: killed, or its disk full or failing)" in line, line
    assert "--recover" in line, line


def test_metadata_yaml_is_not_read_again_at_each_split(tmp_path, monkeypatch):
    loads = []
    for name in ("load", "safe_load"):
        real = getattr(yaml, name)
        monkeypatch.setattr(yaml, name, lambda *a, _real=real, **k: loads.append(1) or _real(*a, **k))
    stop = feed_messages(monkeypatch, [class_map_message(seq, 1_000_000_000 + seq * 1000) for seq in range(400)])
    out = tmp_path / "run.mcap"
    summary = Recorder(RecordConfig(out=out, endpoint=free_endpoint(), namespace=NS, split_size=0.02)).run(stop)
    monkeypatch.undo()
    assert len(summary.files) >= 5
    assert loads == []  # it wrote every one of them itself: nothing to parse
    assert listed(tmp_path) == [p.name for p in summary.files]


def test_an_append_start_writes_metadata_yaml_from_the_disk(tmp_path, monkeypatch):
    """A recorder killed between finishing a split and writing metadata.yaml left the split out."""
    out = tmp_path / "run.mcap"
    _, summary = record(monkeypatch, out, range(150))
    assert len(summary.files) >= 3
    (tmp_path / "metadata.yaml").write_text(bag_metadata_yaml([bag_file(summary.files[0])]))
    recorder = Recorder(RecordConfig(out=out, endpoint=free_endpoint(), namespace=NS, split_size=0.02, append=True))
    try:
        assert listed(tmp_path) == [p.name for p in summary.files]  # before any message
    finally:
        recorder._writer.remove()
        recorder._writer.release()
        recorder._sub.close()


class FailsFrom:
    """``open`` for ``perception.mcap_writer``: files from the Nth on fail to open (a folder turned read-only)."""

    def __init__(self, n: int) -> None:
        self.n, self.opened = n, 0

    def __call__(self, path, mode):
        self.opened += 1
        if self.opened > self.n:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return open(path, mode)  # noqa: SIM115 - the writer closes it


def test_a_split_that_cannot_be_opened_mid_run_is_a_write_error_exit_1(tmp_path, monkeypatch, capsys):
    import perception.mcap_writer as mcap_writer

    out = tmp_path / "rec" / "run.mcap"
    feed_messages(monkeypatch, [class_map_message(seq, 1_000_000_000 + seq * 1000) for seq in range(400)])
    monkeypatch.setattr(mcap_writer, "open", FailsFrom(2), raising=False)
    code = main(["record", "--namespace", NS, "--endpoint", free_endpoint(), "--out", str(out), "--split-size", "0.02",
                 "--append", "--duration", "60"])
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert len(err.splitlines()) == 1 and f"Read-only file system while writing {split_path(out, 2)}" in err, err
    assert listed(out.parent) == ["run_0.mcap", "run_1.mcap"]


def test_a_read_only_out_at_the_start_is_still_a_bad_input(tmp_path, monkeypatch, capsys):
    import perception.mcap_writer as mcap_writer

    monkeypatch.setattr(mcap_writer, "open", FailsFrom(0), raising=False)
    code = main(["record", "--namespace", NS, "--endpoint", free_endpoint(), "--out", str(tmp_path / "run.mcap"),
                 "--split-size", "0.02", "--duration", "1"])
    assert code == 2 and "choose a writable --out" in capsys.readouterr().err


def test_a_folder_removed_while_recording_is_said_and_counted(tmp_path, monkeypatch, caplog):
    from perception.subscribe import MaskSubscriber

    out = tmp_path / "rec" / "run.mcap"
    messages = iter([class_map_message(seq, 1_000_000_000 + seq * 1000) for seq in range(300)])
    stop = threading.Event()
    relocked = []

    def recv(self, timeout_s=None):
        msg = next(messages, None)
        if msg is None:
            stop.set()
        elif msg.seq == 150:
            shutil.rmtree(out.parent)  # rm -rf of the folder, splits, lock and all
        elif msg.seq == 299:
            relocked.append(lock_path(out).exists())
        return msg

    monkeypatch.setattr(MaskSubscriber, "recv", recv)
    with caplog.at_level(logging.WARNING):
        summary = Recorder(RecordConfig(out=out, endpoint=free_endpoint(), namespace=NS, split_size=0.02)).run(stop)
    warned = [r.getMessage() for r in caplog.records if "removed while recording" in r.getMessage()]
    assert len(warned) == 1 and str(lock_path(out)) in warned[0], warned
    assert relocked == [True]  # a second recorder is kept off again
    on_disk = split_files(out)
    assert summary.lost_files and not set(summary.lost_files) & set(on_disk)
    assert set(summary.files) == set(summary.lost_files) | set(on_disk)
    kept = sum(1 for f in on_disk for m in read_recording(f) if m.topic.endswith("class_map")
               and not m.topic.endswith("info"))
    assert summary.messages - summary.lost_messages == kept
    assert f"no longer there (removed while recording), {summary.lost_messages} of the messages" in summary.format()


def test_a_backlog_at_the_stop_is_written_and_what_is_left_is_counted(tmp_path, monkeypatch):
    """A recorder behind the node: at the stop its socket still holds messages."""
    import perception.record as record_module
    from perception.subscribe import MaskSubscriber

    monkeypatch.setattr(record_module, "STOP_DRAIN_S", 0.05)
    monkeypatch.setattr(record_module, "STOP_COUNT_S", 0.05)
    stop = threading.Event()
    seqs = iter(range(10**9))

    def recv(self, timeout_s=None):  # never empty: always more queued
        seq = next(seqs)
        if seq == 20:
            stop.set()
        return class_map_message(seq, 1_000_000_000 + seq * 1000)

    monkeypatch.setattr(MaskSubscriber, "recv", recv)
    summary = Recorder(RecordConfig(out=tmp_path / "run.mcap", endpoint=free_endpoint(), namespace=NS)).run(stop)
    assert summary.messages > 21 and summary.drained == summary.messages - 21
    assert summary.lost_queued and summary.lost_more
    assert f"at least {summary.lost_queued} messages still queued" in summary.format()


def test_a_caught_up_recorder_says_nothing_of_a_backlog(tmp_path, monkeypatch):
    stop = feed_messages(monkeypatch, [class_map_message(seq, 1_000_000_000 + seq * 1000) for seq in range(30)])
    summary = Recorder(RecordConfig(out=tmp_path / "run.mcap", endpoint=free_endpoint(), namespace=NS)).run(stop)
    assert summary.lost_queued is None and "lost" not in summary.format()


def test_the_replaying_line_names_a_few_files_of_many():
    from pathlib import Path

    from perception.replay import files_line

    files = [Path(f"rec/run_{i}.mcap") for i in range(833)]
    line = files_line(files)
    assert line.startswith("833 files: rec/run_0.mcap, rec/run_1.mcap, rec/run_2.mcap, ... (827 more), ")
    assert line.endswith("rec/run_832.mcap") and len(line) < 200
    assert files_line(files[:3]) == "rec/run_0.mcap, rec/run_1.mcap, rec/run_2.mcap"


def test_an_append_recorder_restarted_on_a_read_only_folder_exits_1_so_a_launch_retries(tmp_path, monkeypatch, capsys):
    """A folder turned read-only mid-run: the restarted --append recorder could not write its lock
    file and exited 2 (a bad input), which a launch never restarts, so nothing recorded once the
    folder was writable again. With its earlier splits there it exits 1; a new --out stays a bad input."""
    import os

    import perception.record_output as record_output

    out = tmp_path / "run.mcap"
    _, summary = record(monkeypatch, out, range(150))
    assert len(summary.files) >= 2
    real_open = os.open

    def read_only(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(record_output.os, "open", read_only)
    args = ["record", "--namespace", NS, "--endpoint", free_endpoint(), "--split-size", "0.02", "--duration", "1"]
    assert main([*args, "--out", str(out), "--append"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"cannot write {out} any more (Read-only file system), where the splits {summary.files[0]} .. " in err, err
    assert main([*args, "--out", str(tmp_path / "new" / "run.mcap"), "--append"]) == 2
    assert "choose a writable --out" in capsys.readouterr().err
