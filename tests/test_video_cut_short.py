"""A video file cut short is cut short however many frames it lacks (s35 N3).

A file cut after 20 of the 260 frames its container states was called damaged, exit 2 ("200
unreadable frames in a row ... the input is damaged"), where one lacking fewer than 200 frames got
"the file ends after N of the M frames", exit 0: the 200-in-a-row limit fired before the end of the
file was seen. Grabs that fail once FFmpeg has read the file to its last byte are its end; damage
before the end (FFmpeg reads on through it) keeps the limit (tests/test_corrupt_sources.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_corrupt_sources import write_damaged_avi
from tiny_models import write_brightness_model

from perception.errors import SourceError
from perception.sources import base as source_base
from perception.sources import open_source
from perception.sources import video as video_source

H, W = 48, 64
STATED = 260
KEPT = 20  # frames left whole in the cut file: 240 missing, more than MAX_CONSECUTIVE_CORRUPT (200)


def cut_avi(folder: Path, n: int = STATED, kept: int = KEPT) -> Path:
    """An MJPG AVI of ``n`` frames cut inside frame ``kept``'s chunk: its header still states ``n``."""
    whole = folder / "whole.avi"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 25, (W, H))
    for i in range(n):
        image = np.full((H, W, 3), (i * 7) % 256, np.uint8)
        cv2.putText(image, str(i), (4, 36), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
        writer.write(image)
    writer.release()
    data = whole.read_bytes()
    at = data.find(b"movi")
    for _ in range(kept + 1):  # the '00dc' chunk of frame `kept`
        at = data.find(b"00dc", at + 4)
    cut = folder / "cut.avi"
    cut.write_bytes(data[: at + 20])
    return cut


def note(kept: int = KEPT, stated: int = STATED) -> str:
    return (f"frames {kept}-{stated - 1} of {stated} missing: the file ends after {kept} of the {stated} frames its "
            "container states (cut off, or frames lost to damage earlier in the file)")


def read_all(source) -> int:
    n = 0
    while source.read() is not None:
        n += 1
    return n


def test_a_video_cut_before_most_of_its_frames_ends_as_cut_short(tmp_path):
    source = open_source(str(cut_avi(tmp_path)))
    try:
        assert read_all(source) == KEPT  # the end of the input, not a SourceError
        assert source.corrupt == STATED - KEPT and source.skipped == [note()]
    finally:
        source.close()


def test_loop_plays_a_cut_video_again_and_counts_its_missing_frames_once(tmp_path):
    source = open_source(str(cut_avi(tmp_path)), loop=True)
    try:
        for _ in range(3 * KEPT):
            assert source.read() is not None
        assert source.corrupt == STATED - KEPT and source.skipped == [note()]
    finally:
        source.close()


def test_the_node_runs_a_cut_video_to_its_end_and_exits_0(tmp_path, free_tcp_port):
    """The repro: `head -c 10000 clip.avi > cut.avi; perception run --source cut.avi` exited 2."""
    model = write_brightness_model(tmp_path / "tiny.onnx", (H, W))
    video = cut_avi(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "perception", "run", "--model", str(model), "--source", str(video), "--threads", "1",
         "--warmup", "0", "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "unreadable frames in a row" not in done.stderr and note() in done.stderr
    final = json.loads(done.stdout.strip().splitlines()[-1])
    assert final["end_reason"] == "end of input"
    assert final["published"] == KEPT and final["corrupt"] == STATED - KEPT and final["source_skipped"] == [note()]


def test_a_tail_damaged_to_the_end_is_still_damage(tmp_path):
    """FFmpeg reads on through damaged frames: 200 unreadable in a row before the end of the file's
    bytes is damage, not the end (an error; with --loop, the pass ends there, counted as 200)."""
    video = write_damaged_avi(tmp_path / "ruined.avi", 230, range(20, 230))
    source = open_source(str(video))
    try:
        with pytest.raises(SourceError, match="200 unreadable frames in a row"):
            read_all(source)
    finally:
        source.close()
    source = open_source(str(video), loop=True)
    try:
        for _ in range(50):
            assert source.read() is not None
        assert source.corrupt == 200 and source.skipped[0].startswith(
            "frames 20-229 of 230 missing: no frame in the 200 grabs after frame 19, taken as the end of the file")
    finally:
        source.close()


def test_where_the_read_position_cannot_be_seen_the_limit_still_applies(tmp_path, monkeypatch):
    """Without ``/proc/self/fd`` the end cannot be told from damage past the limit: an error, as before."""
    monkeypatch.setattr(video_source, "_descriptors", lambda: None)
    monkeypatch.setattr(source_base, "MAX_CONSECUTIVE_CORRUPT", 15)
    source = open_source(str(cut_avi(tmp_path, n=40, kept=10)))
    try:
        with pytest.raises(SourceError, match="15 unreadable frames in a row"):
            read_all(source)
    finally:
        source.close()
