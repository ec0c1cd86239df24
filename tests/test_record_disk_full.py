"""A recording that cannot be written on (a full disk, a file-size limit): the one line counts the
messages that reached the disk whole, points to ``--recover`` only when the file holds some, and a
file in which nothing reached the disk is removed with the folders made for it, so the next
``record`` to the same ``--out`` is not refused. ``record --recover`` counts messages as record and
replay do."""

from __future__ import annotations

import errno
import io
import os
import re
import resource
import signal
import subprocess
import sys
import time

import pytest
from test_record import ENCODINGS, REPO, frame_masks, free_endpoint
from test_record_hostile import NS, class_map_message, feed_messages

from perception.mcap_reader import read_recording
from perception.publish import MaskPublisher
from perception.record import RecordConfig, Recorder, RecordWriteError
from perception.record_output import refuse_existing
from perception.recover import recover_recording


def record_with_file_limit(out, limit_bytes: int, *extra: str) -> subprocess.CompletedProcess:
    """``perception record`` in a process whose files cannot grow past ``limit_bytes`` (RLIMIT_FSIZE:
    a write past it fails with EFBIG, as one on a full disk fails with ENOSPC), fed by a publisher
    here until it ends."""
    endpoint = free_endpoint()

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    pub = MaskPublisher(endpoint=endpoint, namespace=NS, encodings=ENCODINGS, sndhwm=100000)
    proc = subprocess.Popen([sys.executable, "-m", "perception", "record", "--endpoint", endpoint, "--namespace", NS,
                             "--out", str(out), "--duration", "120", *extra], cwd=REPO, preexec_fn=limit,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert pub.wait_for_subscribers(1, timeout_s=60), "the recorder never subscribed"
        seq = 0
        while proc.poll() is None and seq < 20000:
            pub.publish_masks(seq=seq, capture_ns=time.time_ns(), frame_id="f", masks=frame_masks(seq, (60, 80)),
                              latency_ms={"infer": 1.0}, model_id="m")
            seq += 1
            time.sleep(0.002)  # paces the publisher so the recorder keeps up; nothing is timed
        out_text, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pub.close()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out_text, err)


def test_nothing_reached_the_disk_leaves_no_file_nor_folders_and_no_recover_hint(tmp_path):
    out = tmp_path / "new" / "sub" / "run.mcap"
    done = record_with_file_limit(out, 0, "--chunk-size", "4")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"while writing {out} after " in lines[0] and "none of them reached the disk" in lines[0], lines[0]
    assert "so it is removed (nothing to recover)" in lines[0] and "--recover" not in lines[0], lines[0]
    # Nothing is left to block the next recording to the same --out, not even the folders made for it.
    assert sorted(os.listdir(tmp_path)) == []
    refuse_existing(RecordConfig(out=out, namespace=NS))


def test_the_count_of_messages_written_whole_is_what_recover_and_replay_get(tmp_path):
    out = tmp_path / "run.mcap"
    done = record_with_file_limit(out, 150_000, "--chunk-size", "16")
    assert done.returncode == 1, done.stderr
    line = done.stderr.strip()
    found = re.fullmatch(rf"perception: error: File too large while writing {re.escape(str(out))} after (\d+) "
                         rf"messages, (\d+) of them written whole; .*'perception record --recover {re.escape(str(out))}'"
                         rf" rebuilds the (\d+) in run\.mcap", line)
    assert found, line
    received, whole, in_file = map(int, found.groups())
    assert 0 < whole == in_file < received
    assert out.stat().st_size == 150_000  # the chunk cut by the limit is lost, nothing before it
    assert len(list(read_recording(out))) == whole  # replay reads it up to the cut ("cut short")
    summary = recover_recording(out, tmp_path / "rebuilt.mcap")
    # MCAP counts each message twice (data and header); a chunk may end between the two halves of one.
    assert summary.wire_messages == whole and summary.messages - 2 * whole in (0, 1)
    assert summary.format().startswith(f"recovered {whole} messages on 4 topics (")
    assert len(list(read_recording(tmp_path / "rebuilt.mcap"))) == whole


class FullDisk:
    """``open`` for ``perception.mcap_writer``: the Nth file opened takes ``rooms[N]`` bytes (None: no
    limit), then fails every write with ENOSPC, as a disk that fills up; buffered as a real file is."""

    def __init__(self, rooms: dict[int, int | None]) -> None:
        self.rooms, self.opened = rooms, 0

    def __call__(self, path, mode):
        room = self.rooms.get(self.opened)
        self.opened += 1
        return io.BufferedWriter(_Raw(path, mode, room))


class _Raw(io.RawIOBase):
    def __init__(self, path, mode, room):
        self._file, self._room = open(path, mode, buffering=0), room  # noqa: SIM115 - closed in close()

    def writable(self):
        return True

    def write(self, data):
        if self._room == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        data = bytes(data) if self._room is None else bytes(data[: self._room])  # a short write, then ENOSPC
        if self._room is not None:
            self._room -= len(data)
        return self._file.write(data)

    def tell(self):
        return self._file.tell()

    def close(self):
        self._file.close()
        super().close()


def record_splits(monkeypatch, tmp_path, rooms, n: int = 400):
    """Record ``n`` class maps into 20 kB splits on a disk that ``rooms`` fills; the error line."""
    import perception.mcap_writer as mcap_writer

    stop = feed_messages(monkeypatch, [class_map_message(seq, 1_000_000 + seq) for seq in range(n)])
    monkeypatch.setattr(mcap_writer, "open", FullDisk(rooms), raising=False)
    config = RecordConfig(out=tmp_path / "s" / "run.mcap", endpoint=free_endpoint(), namespace=NS, split_size=0.02)
    try:
        with pytest.raises(RecordWriteError) as failed:
            Recorder(config).run(stop)
    finally:
        monkeypatch.undo()
    return str(failed.value)


def test_a_split_that_nothing_reached_is_removed_and_the_complete_ones_counted(tmp_path, monkeypatch):
    line = record_splits(monkeypatch, tmp_path, {2: 0})
    d = tmp_path / "s"
    found = re.fullmatch(rf"disk full writing {d}/run_2\.mcap after (\d+) messages; the (\d+) in the complete splits "
                         rf"{d}/run_0\.mcap \.\. {d}/run_1\.mcap are kept, none after them reached {d}/run_2\.mcap, so it "
                         r"is removed \(nothing to recover\); free space, then record again", line)
    assert found, line
    received, kept = map(int, found.groups())
    assert sorted(os.listdir(d)) == ["metadata.yaml", "run_0.mcap", "run_1.mcap"]  # the bag of the complete splits
    assert 0 < kept <= received and len(list(read_recording(d))) == kept


def test_a_split_cut_by_a_full_disk_counts_what_each_part_holds(tmp_path, monkeypatch):
    line = record_splits(monkeypatch, tmp_path, {2: 9000})
    d = tmp_path / "s"
    found = re.fullmatch(rf"disk full writing {d}/run_2\.mcap after (\d+) messages, (\d+) of them written whole \((\d+) "
                         rf"in the complete splits {d}/run_0\.mcap \.\. {d}/run_1\.mcap\); free space, then 'perception "
                         rf"record --recover {d}/run_2\.mcap' rebuilds the (\d+) in run_2\.mcap", line)
    assert found, line
    received, whole, complete, in_open = map(int, found.groups())
    assert whole == complete + in_open < received and in_open > 0
    assert len(list(read_recording(d))) == whole
    assert recover_recording(d / "run_2.mcap", tmp_path / "rebuilt.mcap").wire_messages == in_open
