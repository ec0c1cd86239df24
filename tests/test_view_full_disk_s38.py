"""``view --out x.mp4`` on a full disk: OpenCV opens no writer, and the line advised "try --out with
.avi or a PNG folder", a format that was not the problem (H18 L1, V1). It now says the disk is full."""

from __future__ import annotations

import os

import numpy as np
import pytest

from perception import cvpath, sinks
from perception.errors import ConfigError


class _Closed:
    def isOpened(self):  # noqa: N802 (OpenCV's name)
        return False


@pytest.mark.parametrize("free_blocks, said", [
    (0, "cannot write video {out}: no space left on its disk; free space or choose another --out"),
    (1000, "OpenCV cannot write video {out}; try --out with .avi or a PNG folder"),
])
def test_a_video_writer_that_will_not_open_names_a_full_disk(tmp_path, monkeypatch, free_blocks, said):
    out = tmp_path / "v.mp4"
    sink = sinks.FrameSink(out, fps=10.0)
    real_statvfs = os.statvfs

    class Stat:
        def __init__(self, path):
            self.f_bavail = free_blocks if str(path) == str(tmp_path) else real_statvfs(path).f_bavail

    monkeypatch.setattr(cvpath, "video_writer", lambda *args: _Closed())
    monkeypatch.setattr(os, "statvfs", Stat)
    with pytest.raises(ConfigError) as info:
        sink.write(np.zeros((48, 64, 3), np.uint8))
    assert str(info.value) == said.format(out=out)
