"""``--loop`` over a video file that changes between passes: a file replaced by a shorter one is
judged by its own container (no "missing" frames, nothing counted corrupt), one replaced by a
longer one plays in full, and one deleted is "not found", not a codec problem."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from perception.errors import SourceError
from perception.sources import open_source

W, H = 64, 48


def write_clip(path, frames: int, shade: int = 0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    for i in range(frames):
        writer.write(np.full((H, W, 3), shade + 2 * i, np.uint8))
    writer.release()


def read_frames(source, n: int) -> list:
    frames = [source.read() for _ in range(n)]
    assert all(frame is not None for frame in frames)
    return frames


@pytest.mark.parametrize(("first", "then"), [(60, 30), (30, 60)])
def test_a_file_replaced_between_passes_is_judged_by_its_own_frame_count(tmp_path, first, then):
    clip = tmp_path / "clip.avi"
    write_clip(clip, first)
    write_clip(tmp_path / "new.avi", then, shade=100)
    source = open_source(str(clip), loop=True)
    try:
        read_frames(source, first)  # the first pass, to its last frame
        os.replace(tmp_path / "new.avi", clip)  # as `cp new.avi clip.tmp; mv clip.tmp clip.avi` does
        frames = read_frames(source, 2 * then + 5)  # two passes of the new file and into a third
        assert source.corrupt == 0 and source.skipped == []
        # Every frame of the new file, in order, on each pass (flat frames: shade 100 + 2 i).
        shades = [round(float(frame.image.mean())) for frame in frames]
        expected = [100 + 2 * (i % then) for i in range(len(frames))]
        assert all(abs(a - b) <= 2 for a, b in zip(shades, expected, strict=True)), shades
    finally:
        source.close()


def test_a_file_deleted_during_a_loop_is_not_found_not_undecodable(tmp_path):
    clip = tmp_path / "clip.avi"
    write_clip(clip, 10)
    source = open_source(str(clip), loop=True)
    try:
        read_frames(source, 10)
        clip.unlink()
        with pytest.raises(SourceError) as failed:
            source.read()
    finally:
        source.close()
    assert str(failed.value) == f"video file {clip} not found; check the path"
