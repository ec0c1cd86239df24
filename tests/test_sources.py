"""Sources: kind detection, video files, image folders/globs, synthetic, reconnects, one-line errors."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from perception.errors import SourceError
from perception.sources import SOURCES, open_source, source_kind
from perception.sources.base import SourceOptions
from perception.sources.stream import StreamSource, opencv_has_gstreamer

H, W = 48, 64


def write_video(path, n, *, hw=(H, W)):
    """An MJPG .avi whose frame i is filled with grey level 10 * i."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (hw[1], hw[0]))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((*hw, 3), 10 * i, np.uint8))
    writer.release()
    return path


def read_all(source, limit=1000):
    frames = []
    while len(frames) < limit:
        f = source.read()
        if f is None:
            break
        frames.append(f)
    return frames


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("/dev/video0", "camera"), ("2", "camera"), ("synthetic", "synthetic"), ("drive.mp4", "video"),
        ("rtsp://cam.local/stream", "stream"), ("http://x/y.mjpg", "stream"), ("frames/*.png", "images"),
        ("videotestsrc ! videoconvert ! appsink", "gstreamer"), ("a.png", "images"),
    ],
)
def test_source_kind(spec, kind):
    assert source_kind(spec) == kind
    assert kind in SOURCES


def test_video_file_frames_seq_and_stamps(tmp_path):
    path = write_video(tmp_path / "clip.avi", 6)
    before_ns = time.time_ns()
    src = open_source(str(path))
    frames = read_all(src)
    assert [f.seq for f in frames] == list(range(6))
    assert src.read() is None  # end of file stays ended
    assert all(f.image.shape == (H, W, 3) and f.image.dtype == np.uint8 for f in frames)
    # Frame i was written as grey 10*i; MJPG is lossy but close.
    assert [round(float(f.image.mean()) / 10) for f in frames] == list(range(6))
    mono = [f.capture_mono_ns for f in frames]
    assert mono == sorted(mono)
    assert all(before_ns <= f.capture_ns <= time.time_ns() for f in frames)
    assert not src.live and src.corrupt == 0
    src.close()


def test_video_loop_keeps_seq_contiguous(tmp_path):
    path = write_video(tmp_path / "clip.avi", 3)
    src = open_source(str(path), loop=True)
    frames = [src.read() for _ in range(8)]
    assert [f.seq for f in frames] == list(range(8))
    assert [round(float(f.image.mean()) / 10) for f in frames] == [0, 1, 2, 0, 1, 2, 0, 1]
    src.close()


def test_image_folder_skips_and_counts_corrupt(tmp_path):
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"f{i:02d}.png"), np.full((H, W), 20 * i, np.uint8))  # greyscale on disk
    (tmp_path / "f01b.png").write_bytes(b"not a png")
    src = open_source(str(tmp_path))
    frames = read_all(src)
    assert [f.seq for f in frames] == [0, 1, 2, 3]
    assert src.corrupt == 1
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 20, 40, 60]
    assert frames[0].image.shape == (H, W, 3)
    glob_src = open_source(str(tmp_path / "f0[23].png"))
    assert len(read_all(glob_src)) == 2


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("/dev/video99", r"camera /dev/video99 not found; check the cable"),
        ("97", r"camera /dev/video97 not found"),
        ("missing.mp4", r"video file missing.mp4 not found; check the path"),
        ("nothing/*.png", r"no files match 'nothing/\*.png'"),
    ],
)
def test_open_errors_name_the_fix(spec, match):
    with pytest.raises(SourceError, match=match) as info:
        open_source(spec)
    # A missing camera may appear later (after boot, re-plugged): exit code 4 lets launch respawn it;
    # a missing file is a user mistake (exit code 2).
    assert info.value.exit_code == (4 if "camera" in match else 2)


def test_unreadable_video_and_empty_folder(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(SourceError, match="bad.mp4 cannot be read"):
        open_source(str(bad))
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(SourceError, match="holds no images"):
        open_source(str(empty))


def test_unreachable_stream_is_a_source_error():
    with pytest.raises(SourceError, match="cannot open stream rtsp://127.0.0.1:9/none"):
        open_source("rtsp://127.0.0.1:9/none", read_timeout_s=1.0)


@pytest.mark.skipif(opencv_has_gstreamer(), reason="this OpenCV has GStreamer")
def test_gstreamer_without_support_says_so():
    with pytest.raises(SourceError, match="no GStreamer support"):
        open_source("videotestsrc ! videoconvert ! appsink")


def test_synthetic_source():
    src = open_source("synthetic", width=W, height=H, fps=240, seed=3)
    assert src.live
    src.pace(None)
    frames = [src.read() for _ in range(3)]
    assert [f.seq for f in frames] == [0, 1, 2]
    assert frames[0].image.shape == (H, W, 3) and frames[0].image.dtype == np.uint8
    src.close()


class FakeCapture:
    """Delivers ``good`` frames, then reports the stream lost (grab fails)."""

    def __init__(self, good, value):
        self.left = good
        self.value = value
        self.released = False

    def grab(self):
        if self.left == 0:
            return False
        self.left -= 1
        return True

    def retrieve(self):
        return True, np.full((H, W, 3), self.value, np.uint8)

    def release(self):
        self.released = True


def test_live_source_reconnects_with_backoff_and_keeps_seq():
    opens = []

    class FlakyStream(StreamSource):
        def _open(self):
            opens.append(len(opens))
            if len(opens) == 2:  # the first reconnect attempt fails: the source backs off and retries
                raise SourceError("still down")
            return FakeCapture(good=2, value=len(opens))

    src = FlakyStream("rtsp://fake/stream", SourceOptions())
    src._reconnector.initial_s = 0.001  # keep the test fast; the backoff logic is the same
    frames = [src.read() for _ in range(6)]
    assert [f.seq for f in frames] == list(range(6))
    assert [int(f.image[0, 0, 0]) for f in frames] == [1, 1, 3, 3, 4, 4]
    assert src.reconnects == 3  # attempts after the first open: one failed, two succeeded
    src.interrupt()
    assert src.read() is None  # an interrupted live source ends instead of reconnecting forever
    src.close()


def test_corrupt_live_frame_is_skipped():
    class GlitchyCapture(FakeCapture):
        def retrieve(self):
            self.value += 1
            return (self.value != 2), np.full((H, W, 3), self.value, np.uint8)

    class Stream(StreamSource):
        def _open(self):
            return GlitchyCapture(good=4, value=0)

    src = Stream("rtsp://fake/stream", SourceOptions())
    frames = [src.read() for _ in range(3)]
    assert [f.seq for f in frames] == [0, 1, 2]
    assert [int(f.image[0, 0, 0]) for f in frames] == [1, 3, 4]
    assert src.corrupt == 1
    src.close()
