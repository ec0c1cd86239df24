"""A recorder that runs for a long time under a launch file (H16, H17 in session 38).

- ``--append`` (launch ``append: true``): a recorder restarted after a crash (``respawn``) or a full
  disk goes on after the splits already written, at the next free index, and keeps them untouched;
  a split left unfinished is named for ``--recover``.
- A full disk exits 1 (a failing disk, README "Commands"), not 2 (a bad input, never restarted).
- Two recorders to one ``--out`` are refused (a lock file beside it), not interleaved.
- An unsplit recording's chunk indexes, held in memory until it ends, draw one warning with the fix.
- A recorder stopped before any message says so plainly, not as an error.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
from test_record import ENCODINGS, NS, REPO, frame_masks, free_endpoint
from test_record_disk_full import FullDisk
from test_record_hostile import class_map_message, feed_messages

from perception.cli import main
from perception.errors import ConfigError
from perception.mcap_layout import split_files, split_path
from perception.mcap_reader import read_recording
from perception.publish import MaskPublisher
from perception.record import RecordConfig, Recorder


def feed_then_stop(monkeypatch, messages) -> None:
    """``perception record`` in this process gets ``messages``, then a SIGTERM (its stop) once they
    are all taken: it ends as a recorder stopped by its launch does."""
    from perception.subscribe import MaskSubscriber

    feed = iter(messages)

    def recv(self, timeout_s=None):
        msg = next(feed, None)
        if msg is None:
            os.kill(os.getpid(), signal.SIGTERM)  # handled by the command: it sets its stop
        return msg

    monkeypatch.setattr(MaskSubscriber, "recv", recv)


def digests(paths) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def record_argv(endpoint: str, out, *extra: str) -> list[str]:
    return [sys.executable, "-m", "perception", "record", "--endpoint", endpoint, "--namespace", NS, "--out", str(out),
            *extra]


def publish_until(pub: MaskPublisher, done, seq: int) -> int:
    """Publish frames until ``done()``; the next seq."""
    start = seq
    while not done():
        assert seq - start < 20000, "the recorder never got there"
        pub.publish_masks(seq=seq, capture_ns=time.time_ns(), frame_id="f", masks=frame_masks(seq),
                          latency_ms={"infer": 1.0}, model_id="m")
        seq += 1
        time.sleep(0.002)  # paces the publisher so the recorder keeps up; nothing is timed
    return seq


def test_a_killed_recorder_started_again_with_append_goes_on_after_its_splits(tmp_path):
    """The launch's respawn after a SIGKILL (an OOM kill): the restarted recorder records on, from
    the next split, leaves the earlier ones byte for byte, and names the one the kill cut off."""
    endpoint = free_endpoint()
    out = tmp_path / "rec" / "drive.mcap"
    argv = record_argv(endpoint, out, "--split-size", "0.02", "--chunk-size", "4", "--append")
    pub = MaskPublisher(endpoint=endpoint, namespace=NS, encodings=ENCODINGS, sndhwm=100000)
    second = None
    try:
        first = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert pub.wait_for_subscribers(1, timeout_s=60), "the recorder never subscribed"
            seq = publish_until(pub, lambda: len(split_files(out)) >= 3, 0)  # drive_2.mcap is open
        finally:
            first.kill()
            first.communicate(timeout=60)
        before = split_files(out)
        assert [p.name for p in before] == ["drive_0.mcap", "drive_1.mcap", "drive_2.mcap"]
        kept = digests(before)

        second = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = second.stdout.readline()
        assert line.strip().endswith(f"to {split_path(out, 3)}, drive_4.mcap, ..."), line
        # Until drive_4.mcap is there, drive_3.mcap, the first of the second recorder, is finished.
        publish_until(pub, lambda: split_path(out, 4).exists(), seq)
        second.send_signal(signal.SIGTERM)
        stdout, stderr = second.communicate(timeout=60)
    finally:
        if second is not None and second.poll() is None:
            second.kill()
            second.wait()
        pub.close()
    assert second.returncode == 0, stderr
    assert digests(before) == kept  # the earlier splits are left as they were
    assert f"--append: 3 splits {split_path(out, 0)} .. drive_2.mcap kept as they are; the new splits start at " \
           "drive_3.mcap; drive_2.mcap " in stderr, stderr
    # killed as drive_2.mcap appeared: a chunk may have reached the disk before the kill, or only the header
    if "drive_2.mcap holds nothing" not in stderr:
        assert "drive_2.mcap is unfinished" in stderr, stderr
        assert f"'perception record --recover {split_path(out, 2)}' rebuilds it" in stderr, stderr
    assert "recorded " in stdout and f"splits {split_path(out, 3)} .. " in stdout, stdout
    assert len(list(read_recording(split_path(out, 3)))) > 0  # a finished split of the second recorder
    assert not (out.parent / ".drive.mcap.lock").exists()  # the kill's stale lock was taken over, then removed


def test_a_full_disk_exits_1_and_append_then_goes_on(tmp_path, monkeypatch, capsys, caplog):
    """A full disk is a failing disk (exit 1: a launch respawns the recorder), not a bad input (2:
    never restarted); once restarted with --append, recording goes on after the cut split."""
    import perception.mcap_writer as mcap_writer

    out = tmp_path / "s" / "run.mcap"
    argv = ["record", "--namespace", NS, "--endpoint", free_endpoint(), "--out", str(out), "--split-size", "0.02",
            "--append", "--duration", "60"]
    feed_messages(monkeypatch, [class_map_message(seq, 1_000_000 + seq) for seq in range(400)])
    monkeypatch.setattr(mcap_writer, "open", FullDisk({2: 9000}), raising=False)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"perception: error: disk full writing {split_path(out, 2)}")
    monkeypatch.undo()
    before = split_files(out)
    assert [p.name for p in before] == ["run_0.mcap", "run_1.mcap", "run_2.mcap"]
    kept = digests(before)

    feed_then_stop(monkeypatch, [class_map_message(seq, 2_000_000 + seq) for seq in range(1000, 1100)])
    with caplog.at_level(logging.INFO, logger="perception.commands.record"):
        assert main(argv) == 0
    said = [r.getMessage() for r in caplog.records if r.name == "perception.commands.record"]
    assert len(said) == 1 and "the new splits start at run_3.mcap; run_2.mcap is unfinished" in said[0], said
    assert digests(before) == kept
    after = split_files(out)
    assert after[:3] == before and after[3] == split_path(out, 3)
    assert [m.seq for f in after[3:] for m in read_recording(f)] == list(range(1000, 1100))
    # and no lock file; the folder's rosbag2 metadata.yaml beside the splits
    assert sorted(os.listdir(out.parent)) == sorted(["metadata.yaml", *(p.name for p in after)])


def test_append_with_nothing_there_starts_at_0_and_keeps_what_it_finds_when_nothing_comes(tmp_path, monkeypatch,
                                                                                         capsys):
    out = tmp_path / "run.mcap"
    summary = Recorder(RecordConfig(out=out, endpoint=free_endpoint(), namespace=NS, split_size=1.0,
                                    append=True)).run(feed_messages(monkeypatch, [class_map_message(0, 1)]))
    assert summary.files == [split_path(out, 0)]
    kept = digests([split_path(out, 0)])
    # A restart that receives nothing (the node not up yet) removes only its own empty split.
    assert main(["record", "--namespace", NS, "--endpoint", free_endpoint(), "--out", str(out), "--split-size", "1",
                 "--append", "--duration", "0.2"]) == 4
    err = capsys.readouterr().err
    assert "(the earlier recording there, 1 file, is left as it was)" in err, err
    assert sorted(os.listdir(tmp_path)) == ["metadata.yaml", "run_0.mcap"] and digests([split_path(out, 0)]) == kept


@pytest.mark.parametrize(("extra", "message"), [
    (["--split-size", "1", "--overwrite"], "not allowed with argument"),
    ([], "--append writes new splits after the earlier ones: give --split-duration S or --split-size MB too"),
    (["--split-size", "1", "{one file}"], "run.mcap already exists (an earlier recording in one file); --append goes "
                                          "on after the splits"),
])
def test_append_mistakes_are_one_line(tmp_path, capsys, extra, message):
    out = tmp_path / "run.mcap"
    if "{one file}" in extra:
        extra = [e for e in extra if e != "{one file}"]
        out.write_bytes(b"an earlier recording")
    try:
        code = main(["record", "--namespace", NS, "--out", str(out), "--append", *extra])
    except SystemExit as exc:  # argparse's own check (two flags that exclude each other)
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err


def test_append_and_overwrite_together_in_a_launch_file_are_refused():
    with pytest.raises(ValueError, match="--append keeps the earlier splits and --overwrite removes them"):
        RecordConfig(out="r.mcap", namespace=NS, split_size=1.0, append=True, overwrite=True)


def test_a_second_recorder_to_the_same_out_is_refused_naming_the_first(tmp_path, monkeypatch):
    """Two recorders with one --out and --overwrite interleaved their writes and both reported
    success over a file no reader could open; the second is now refused, exit 2."""
    folder = tmp_path / "d"
    first = Recorder(RecordConfig(out=folder / "run.mcap", endpoint=free_endpoint(), namespace=NS, overwrite=True))
    try:
        done = subprocess.run(record_argv(free_endpoint(), f"{folder}/./run.mcap", "--overwrite", "--duration", "5"),
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        err = done.stderr.strip()
        assert err == (f"perception: error: {folder}/run.mcap is being written by another recorder (pid "
                       f"{os.getpid()}), which holds {folder}/.run.mcap.lock; stop it, or choose another --out"), err
        # Without --overwrite too, and with splits of the same name.
        with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
            Recorder(RecordConfig(out=folder / "run.mcap", endpoint=free_endpoint(), namespace=NS, split_size=1.0))
    finally:
        summary = first.run(feed_messages(monkeypatch, [class_map_message(seq, 1000 + seq) for seq in range(20)]))
    assert summary.messages == 20 and len(list(read_recording(folder / "run.mcap"))) == 20
    assert sorted(os.listdir(folder)) == ["run.mcap"]  # the lock is gone with the recorder
    # ... and the next recorder may go on.
    summary = Recorder(RecordConfig(out=folder / "run.mcap", endpoint=free_endpoint(), namespace=NS,
                                    overwrite=True)).run(feed_messages(monkeypatch, [class_map_message(5, 5)]))
    assert summary.messages == 1


def record_index_warnings(monkeypatch, tmp_path, caplog, **config) -> list[str]:
    import perception.record_splits as record_splits

    monkeypatch.setattr(record_splits, "INDEX_WARN_BYTES", 40_000)  # where SplitWriter reads it
    stop = feed_messages(monkeypatch, [class_map_message(seq, 1_000_000 + seq) for seq in range(300)])
    with caplog.at_level(logging.WARNING, logger="perception.mcap_writer"):
        Recorder(RecordConfig(out=tmp_path / "run.mcap", endpoint=free_endpoint(), namespace=NS, chunk_size_kb=4,
                              **config)).run(stop)
    return [r.getMessage() for r in caplog.records if r.name == "perception.mcap_writer"]


def test_an_unsplit_recording_says_once_that_its_index_grows_in_memory(monkeypatch, tmp_path, caplog):
    """The mcap Writer keeps every chunk's index until the file is finished (about 1 kB a chunk, 1 GB
    a day at 30 fps): one warning names the figure and the fix (the threshold, 64 MB, lowered here)."""
    warnings = record_index_warnings(monkeypatch, tmp_path, caplog)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"the recording {tmp_path / 'run.mcap'} holds the index of its "), warnings
    assert " chunks in memory until it is finished: about " in warnings[0]
    assert "for long runs record with --split-duration S or --split-size MB" in warnings[0], warnings


def test_a_large_split_says_so_too_and_a_small_one_never(monkeypatch, tmp_path, caplog):
    warnings = record_index_warnings(monkeypatch, tmp_path, caplog, split_size=1000.0)
    assert len(warnings) == 1 and "a smaller --split-size or --split-duration bounds it" in warnings[0], warnings
    caplog.clear()
    assert record_index_warnings(monkeypatch, tmp_path / "small", caplog, split_size=0.02) == []


def test_a_recorder_stopped_before_any_message_says_so_plainly(tmp_path):
    """A launch stopping a recorder 0.1 s after its start, before the node sent anything: a normal
    stop, one plain line (exit status 4, as for any recording that received nothing), not an error
    asking whether the node is running."""
    out = tmp_path / "new" / "run.mcap"
    proc = subprocess.Popen(record_argv(free_endpoint(), out), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("recording perception/rec/* from ")  # its stop handler is on
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 4, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("stopped (SIGTERM) after "), err
    assert "before any message arrived from tcp://" in err and f"nothing recorded, so no file was written to {out}" \
        in err, err
    assert "error" not in err and "is the node running" not in err, err
    assert os.listdir(tmp_path) == []  # no file, no lock, not the folders made for --out


def test_the_atomic_masks_of_one_frame_keep_one_log_time(monkeypatch, tmp_path):
    """Messages received together (the masks of one atomic frame) share their log time, by which a
    replay sends them as one frame again; the steady clock must not give each its own."""
    masks = [class_map_message(7, 5_000), class_map_message(7, 5_000), class_map_message(8, 6_000)]
    for i, name in enumerate(("a", "b", "c")):
        masks[i] = type(masks[i])(f"{NS}/{name}", masks[i].header, masks[i].data, 1, masks[i].receive_ns)
    Recorder(RecordConfig(out=tmp_path / "r.mcap", endpoint=free_endpoint(), namespace=NS)).run(
        feed_messages(monkeypatch, masks))
    from mcap.reader import make_reader

    with open(tmp_path / "r.mcap", "rb") as f:
        times = [m.log_time for _, c, m in make_reader(f).iter_messages(log_time_order=False)
                 if not c.topic.endswith("/meta")]
    assert len(times) == 3 and times[0] == times[1] < times[2], times
