"""In a node with several cameras a source's log lines name its camera (``Source.name_camera``), not
only the file or URL; an image folder of one file says "1 file"."""

from __future__ import annotations

import logging

import cv2
import numpy as np
from test_sources import FakeCapture

from perception.sources import SourceOptions, open_source
from perception.sources.stream import StreamSource


def test_a_named_camera_is_in_its_stream_lines(caplog):
    caplog.set_level(logging.INFO, logger="perception.sources")

    class DroppingStream(StreamSource):
        reconnect_options = {"initial_s": 0.001}

        def _open(self):
            return FakeCapture(good=1, value=9)

    src = DroppingStream("http://cam.example/rear.mjpg", SourceOptions())
    src.name_camera("rear")
    try:
        assert all(src.read() is not None for _ in range(3))
    finally:
        src.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("camera 'rear', stream http://cam.example/rear.mjpg stopped delivering frames")
               for m in messages), messages
    assert any(m.startswith("camera 'rear', stream http://cam.example/rear.mjpg reconnected") for m in messages)


def test_a_named_camera_is_in_its_skipped_frame_lines_and_one_file_is_one_file(tmp_path, caplog):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "000.png"), np.zeros((16, 16, 3), np.uint8))
    (folder / "001.png").write_bytes(b"not a png")
    cv2.imwrite(str(folder / "002.png"), np.zeros((16, 16, 3), np.uint8))
    src = open_source(str(folder))
    src.name_camera("front")
    try:
        assert [f.seq for f in iter(src.read, None)] == [0, 1]
    finally:
        src.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f"camera 'front', images {folder} (3 files): skipped"), warnings
    (folder / "001.png").unlink()
    (folder / "002.png").unlink()
    one = open_source(str(folder))
    try:
        assert one.describe() == f"images {folder} (1 file)"
    finally:
        one.close()
