"""OpenCV's own console lines stay silent on a damaged video file: only our one error is shown."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np

SCRIPT = """
import sys
from perception.errors import SourceError
from perception.sources import open_source
try:
    open_source(sys.argv[1])
except SourceError as exc:
    print(exc)
"""


def test_a_damaged_avi_prints_only_our_error(tmp_path):
    """An AVI cut inside its header: FFmpeg refuses it, and OpenCV's own AVI parser, which it fell
    back to, printed "Unexpected element. Expected: LIST. Got: JUNK." straight to stderr."""
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(30):
        writer.write(np.full((48, 64, 3), 4 * i, np.uint8))
    writer.release()
    damaged = tmp_path / "headonly.avi"
    damaged.write_bytes(clip.read_bytes()[:5000])
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(damaged)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"video file {damaged} cannot be read; is it a video FFmpeg can decode "
                                   "(mp4, avi, mkv, gif)?")
    assert done.stderr == ""
