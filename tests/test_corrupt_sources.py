"""Issue 15, findings 1 and 7: sources tell a damaged stretch from the end, and name what they skip.

The test video is an MJPG AVI written with OpenCV whose frames 30-39 are then overwritten in place
(their JPEG data replaced by 0xFF bytes): FFmpeg fails the grab of each and reads on after it.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from tiny_models import write_brightness_model

from perception.errors import SourceError
from perception.sources import base as source_base
from perception.sources import open_source

H, W = 48, 64


def write_damaged_avi(path: Path, n: int, damaged: range) -> Path:
    """An MJPG AVI of ``n`` numbered frames with the JPEG data of the ``damaged`` frames destroyed."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (W, H))
    for i in range(n):
        image = np.full((H, W, 3), (i * 7) % 256, np.uint8)
        cv2.putText(image, str(i), (4, 36), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
        writer.write(image)
    writer.release()
    data = bytearray(path.read_bytes())
    chunks, at = [], data.find(b"movi")
    while len(chunks) < n:  # the frames' '00dc' chunks in the movi list, in order
        at = data.find(b"00dc", at)
        size = int.from_bytes(data[at + 4: at + 8], "little")
        chunks.append((at + 8, size))
        at += 8 + size
    for k in damaged:
        offset, size = chunks[k]
        data[offset: offset + size] = b"\xff" * size
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def damaged_video(tmp_path_factory) -> Path:
    return write_damaged_avi(tmp_path_factory.mktemp("video") / "damaged.avi", 120, range(30, 40))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return write_brightness_model(tmp_path_factory.mktemp("model") / "tiny.onnx", (H, W))


def test_a_damaged_stretch_is_skipped_counted_and_named_not_taken_for_the_end(damaged_video, caplog):
    caplog.set_level(logging.INFO)
    source = open_source(str(damaged_video))
    seqs = []
    while (frame := source.read()) is not None:
        seqs.append(frame.seq)
    source.close()
    assert seqs == list(range(110)) and source.corrupt == 10
    assert source.skipped[0] == "frame 30 of 120 cannot be read" and len(source.skipped) == 10
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "frame 30 of 120" in warnings[0].getMessage()
    assert len(warnings) <= 2  # rate-limited: not one line per frame


def test_too_many_unreadable_frames_in_a_row_is_an_error_not_the_end(tmp_path, monkeypatch):
    monkeypatch.setattr(source_base, "MAX_CONSECUTIVE_CORRUPT", 15)
    video = write_damaged_avi(tmp_path / "ruined.avi", 60, range(10, 60))
    source = open_source(str(video))
    for _ in range(10):
        assert source.read() is not None
    with pytest.raises(SourceError, match="15 unreadable frames in a row"):
        source.read()
    source.close()


def _run(model_path: Path, source: str, port: int, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "perception", "run", "--model", str(model_path), "--source", source, "--threads", "1",
         "--warmup", "0", "--endpoint", f"tcp://127.0.0.1:{port}", *extra],
        capture_output=True, text=True, timeout=120,
    )


def test_the_node_publishes_the_whole_damaged_drive_and_says_so(damaged_video, model_path, free_tcp_port):
    """Finding 1: the node published 30 frames, said 'end of input', 'corrupt 0', and exited 0."""
    done = _run(model_path, str(damaged_video), free_tcp_port)
    assert done.returncode == 0, done.stderr
    final = json.loads(done.stdout.strip().splitlines()[-1])
    assert final["end_reason"] == "end of input"
    assert final["published"] == 110 and final["corrupt"] == 10 and final["frames_in"] == 120
    assert final["balanced"] and final["source_skipped"][0] == "frame 30 of 120 cannot be read"
    assert "frame 30 of 120 cannot be read" in done.stderr  # named at the default log level
    assert "[mjpeg @" not in done.stderr  # FFmpeg's own console noise is silenced


def test_a_ruined_video_ends_with_an_error_exit(tmp_path, model_path, free_tcp_port):
    video = write_damaged_avi(tmp_path / "ruined.avi", 230, range(20, 230))
    done = _run(model_path, str(video), free_tcp_port)
    assert done.returncode == 2, done.stderr
    assert f"perception: error: video file {video}: 200 unreadable frames in a row" in done.stderr
    final = json.loads(done.stdout.strip().splitlines()[-1])
    assert final["end_reason"] == "capture failed" and final["balanced"]
    # The 20 frames read before the damage are all published before the run ends with the error.
    assert final["published"] == 20 and final["in_flight_discarded"] == 0 and final["corrupt"] == 200


def test_corrupt_images_in_a_folder_are_named_at_the_default_log_level(tmp_path, model_path, free_tcp_port):
    """Finding 7: they were counted but not named."""
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), np.full((H, W, 3), 60 * i, np.uint8))
    (tmp_path / "002.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    done = _run(model_path, str(tmp_path), free_tcp_port)
    assert done.returncode == 0, done.stderr
    assert f"{str(tmp_path / '002.png')!r} cannot be decoded" in done.stderr  # quoted, as names in log lines are
    final = json.loads(done.stdout.strip().splitlines()[-1])
    assert final["corrupt"] == 1 and final["published"] == 3 and final["balanced"]


def test_an_unreachable_stream_says_one_line_without_opencv_noise(model_path, free_tcp_port):
    """Finding 7: a raw OpenCV WARN line came before our own error line."""
    done = _run(model_path, "rtsp://127.0.0.1:1/front", free_tcp_port, "--read-timeout", "1")
    assert done.returncode == 4, done.stderr
    # Our own log lines ("12:00:00 I perception.x: ...") and one error line; nothing from OpenCV/FFmpeg.
    foreign = [line for line in done.stderr.splitlines() if line.strip() and not re.match(r"\d\d:\d\d:\d\d [DIWE] perception", line)]
    assert len(foreign) == 1 and foreign[0].startswith("perception: error: cannot open stream"), done.stderr


# --------------------------------------------------------------------------------------------
# Hunt 4a, finding 10: frames a video states but does not hold are counted, not pinned on the
# last frames (which were published); finding 4: a clip behind an http URL ends like a file.
# --------------------------------------------------------------------------------------------


def write_numbered_avi(path: Path, n: int) -> tuple[bytes, list[int]]:
    """An MJPG AVI of ``n`` frames (grey 6 * i); its bytes and the offsets of the frames' chunks."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    for i in range(n):
        writer.write(np.full((H, W, 3), 6 * i, np.uint8))
    writer.release()
    data = path.read_bytes()
    chunks, at = [], data.find(b"movi")
    while len(chunks) < n:
        at = data.find(b"00dc", at)
        chunks.append(at)
        at += 8 + int.from_bytes(data[at + 4: at + 8], "little")
    return data, chunks


def read_through(source) -> list:
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    source.close()
    return frames


def test_a_cut_off_video_counts_its_missing_frames_in_one_note(tmp_path, caplog):
    data, chunks = write_numbered_avi(tmp_path / "whole.avi", 40)
    (tmp_path / "cut.avi").write_bytes(data[: chunks[30]])  # the header still states 40 frames
    source = open_source(str(tmp_path / "cut.avi"))
    frames = read_through(source)
    assert [round(float(f.image.mean()) / 6) for f in frames] == list(range(30))
    assert source.corrupt == 10 and source.skipped == [
        "frames 30-39 of 40 missing: the file ends after 30 of the 40 frames its container states (cut off, or "
        "frames lost to damage earlier in the file)"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 10 unreadable frames: frames 30-39 of 40 missing" in warnings[0]


def test_frames_a_demuxer_drops_while_it_resyncs_are_not_named_as_the_last_ones(tmp_path):
    """The report's file: FFmpeg loses frames 0-4 without a failed grab; the node named frames
    35-39, which it had published."""
    data, _ = write_numbered_avi(tmp_path / "idx.avi", 40)
    damaged = bytearray(data)
    damaged[len(data) // 3: len(data) // 3 + 1500] = bytes(1500)
    (tmp_path / "idxdmg.avi").write_bytes(bytes(damaged))
    source = open_source(str(tmp_path / "idxdmg.avi"))
    frames = read_through(source)
    assert 0 < len(frames) < 40 and source.corrupt == 40 - len(frames)
    assert source.skipped == [f"frames {len(frames)}-39 of 40 missing: the file ends after {len(frames)} of the 40 "
                              "frames its container states (cut off, or frames lost to damage earlier in the file)"]


def test_the_node_reads_a_clip_behind_an_http_url_to_its_end_once(http_dir, model_path, free_tcp_port):
    """Finding 4: the clip looped for ever (64 reconnects in 8 s, 390 frames in for a 6-frame clip)."""
    folder, url = http_dir
    writer = cv2.VideoWriter(str(folder / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    for i in range(6):
        writer.write(np.full((H, W, 3), 30 * i, np.uint8))
    writer.release()
    done = _run(model_path, f"{url}/clip.avi", free_tcp_port, "--duration", "60")
    assert done.returncode == 0, done.stderr
    final = json.loads(done.stdout.strip().splitlines()[-1])
    assert final["end_reason"] == "end of input" and final["reconnects"] == 0
    assert final["frames_in"] == 6 and final["published"] == 6 and final["dropped"] == 0 and final["balanced"]
    assert "reconnect" not in done.stderr.replace("0 reconnects", "")
