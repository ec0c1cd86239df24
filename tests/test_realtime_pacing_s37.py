"""``--realtime`` on a video file plays it as recorded: each frame at its own timestamp (s37 h15 F2).

Before, every frame came at the container's average rate: a clip recorded at 30 fps then 5 fps
came at a steady 8.7 fps, and one with a 98 s gap in its timestamps at 0.89 fps, 34 times slower
than recorded, without a word. These tests read a fake capture (``cv2.VideoCapture`` replaced: it
gives ``CAP_PROP_POS_MSEC`` as FFmpeg does) on a fake clock (the sources' ``time`` and
``threading.Event`` replaced: a wait moves the clock on), and check the times at which frames are
delivered (``Frame.capture_mono_ns``, stamped at delivery) against the clip's timestamps. No
real clock, no ffmpeg binary.
"""

from __future__ import annotations

import itertools
import logging
import types

import cv2
import numpy as np
import pytest

from perception.sources import base, open_source, pacing
from perception.sources.base import SourceOptions

H, W = 24, 32
GRAB_S = 0.004  # what a grab and decode take on the fake clock


class Clock:
    def __init__(self):
        self.now = 1000.0

    def advance(self, seconds):
        self.now += max(seconds, 0.0)


class FakeEvent:
    """``threading.Event`` on the fake clock: a wait moves the clock on by its timeout."""

    def __init__(self, clock):
        self.clock, self.flag = clock, False

    def wait(self, timeout=None):
        if not self.flag and timeout is not None:
            self.clock.advance(timeout)
        return self.flag

    def is_set(self):
        return self.flag

    def set(self):
        self.flag = True


@pytest.fixture
def clock(monkeypatch):
    """The sources' clock and waits, faked: ``time`` and ``threading.Event`` as ``perception.sources.base``
    and ``.pacing`` see them (the pacers' clock, the frames' stamps, the waits of a read)."""
    fake = Clock()
    ns = lambda: int(round(fake.now * 1e9))  # noqa: E731
    fake_time = types.SimpleNamespace(monotonic=lambda: fake.now, perf_counter=lambda: fake.now, monotonic_ns=ns,
                                      time_ns=ns)
    monkeypatch.setattr(base, "time", fake_time)
    monkeypatch.setattr(pacing, "time", fake_time)  # the pacers' clock
    monkeypatch.setattr(base, "threading", types.SimpleNamespace(Event=lambda: FakeEvent(fake)))
    return fake


def clip(monkeypatch, tmp_path, clock, stamps_ms, *, fps):
    """A video file whose capture gives frames with these timestamps (ms; ``CAP_PROP_POS_MSEC`` after
    each grab) and states ``fps`` as its rate (``CAP_PROP_FPS``, the average FFmpeg reports)."""

    class Capture:
        def __init__(self, *args):
            self.pos = 0

        def isOpened(self):
            return True

        def get(self, prop):
            return {cv2.CAP_PROP_FRAME_COUNT: float(len(stamps_ms)), cv2.CAP_PROP_FPS: fps,
                    cv2.CAP_PROP_FRAME_WIDTH: float(W), cv2.CAP_PROP_FRAME_HEIGHT: float(H),
                    cv2.CAP_PROP_POS_MSEC: stamps_ms[self.pos - 1] if self.pos else 0.0}.get(prop, 0.0)

        def set(self, prop, value):
            return False

        def grab(self):
            if self.pos >= len(stamps_ms):
                return False
            clock.advance(GRAB_S)
            self.pos += 1
            return True

        def retrieve(self):
            return True, np.full((H, W, 3), self.pos - 1, np.uint8)

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoCapture", Capture)
    path = tmp_path / "drive.mkv"
    path.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(2048))  # an EBML (mkv) header and some bytes
    return str(path)


def deliveries(source, limit=1000):
    """(frame number in the clip, seconds after the first frame was delivered) of each frame read."""
    out = []
    while len(out) < limit:
        frame = source.read()
        if frame is None:
            break
        out.append((int(frame.image[0, 0, 0]), frame.capture_mono_ns / 1e9))
    source.close()
    return [(index, at - out[0][1]) for index, at in out]


def steps(times):
    return [b - a for a, b in itertools.pairwise(times)]


def gaps_warned(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "jump" in r.getMessage()]


VFR_MS = [i * 1000 / 30 for i in range(45)] + [1500 + i * 200 for i in range(45)]  # 30 fps, then 5 fps
GAP_MS = [i * 1000 / 30 for i in range(45)] + [100_000 + i * 1000 / 30 for i in range(45)]  # 98.5 s gap


def test_a_clip_of_variable_frame_rate_plays_as_recorded(monkeypatch, tmp_path, clock, caplog):
    spec = clip(monkeypatch, tmp_path, clock, VFR_MS, fps=8.71)  # FFmpeg's average for this clip
    got = deliveries(open_source(spec, SourceOptions(realtime=True)))
    assert [index for index, _ in got] == list(range(90))
    # Frame k comes at its own timestamp: the 30 fps part 33 ms apart, the 5 fps part 200 ms apart
    # (at the average rate they all came 115 ms apart: the first 1.5 s took 5.2 s).
    assert [at for _, at in got] == pytest.approx([ms / 1e3 for ms in VFR_MS], abs=1e-6)
    assert not gaps_warned(caplog)


def test_a_98_s_gap_in_the_timestamps_is_played_as_one_frame_interval_with_one_warning(
        monkeypatch, tmp_path, clock, caplog):
    spec = clip(monkeypatch, tmp_path, clock, GAP_MS, fps=0.887)  # the average the gap makes
    got = deliveries(open_source(spec, SourceOptions(realtime=True)))
    times = [at for _, at in got]
    assert len(got) == 90
    # Every frame 1/30 s after the one before, the one after the gap too: the clip's 3 s of footage
    # take 3 s (at the average rate every frame came 1.13 s apart: 100 s; waiting out the gap, 101 s).
    assert steps(times) == pytest.approx([1 / 30] * 89, abs=1e-6)
    warned = gaps_warned(caplog)
    assert len(warned) == 1
    assert "98.5 s ahead at frame 45" in warned[0] and "drive.mkv" in warned[0]


def test_each_pass_of_loop_starts_the_timeline_again_and_the_gap_is_warned_about_once(
        monkeypatch, tmp_path, clock, caplog):
    spec = clip(monkeypatch, tmp_path, clock, GAP_MS, fps=0.887)
    got = deliveries(open_source(spec, SourceOptions(realtime=True, loop=True)), limit=270)
    assert [index for index, _ in got] == list(range(90)) * 3
    times = [at for _, at in got]
    # The first frame of a pass comes one frame interval after the last one of the pass before, not
    # at once and not 101 s later (the timestamps going back to 0 is a new pass, not a reset).
    assert steps(times) == pytest.approx([1 / 30] * 269, abs=1e-6)
    assert len(gaps_warned(caplog)) == 1


def test_frames_without_timestamps_or_going_back_come_at_the_average_rate(monkeypatch, tmp_path, clock, caplog):
    caplog.set_level(logging.INFO)
    spec = clip(monkeypatch, tmp_path, clock, [0.0] * 10, fps=25.0)  # a raw H.264 stream: every frame says 0
    times = [at for _, at in deliveries(open_source(spec, SourceOptions(realtime=True)))]
    assert times == pytest.approx([i * 0.04 for i in range(10)], abs=1e-6)  # not flat out
    assert sum("no timestamp of its own" in r.getMessage() for r in caplog.records) == 1

    joined = [i * 50.0 for i in range(5)] + [i * 50.0 for i in range(5)]  # two recordings joined: 0 again
    spec = clip(monkeypatch, tmp_path, clock, joined, fps=20.0)
    times = [at for _, at in deliveries(open_source(spec, SourceOptions(realtime=True)))]
    assert times == pytest.approx([i * 0.05 for i in range(10)], abs=1e-6)
    assert sum("go back 0.200 s at frame 5" in r.getMessage() for r in caplog.records) == 1


def test_fps_overrides_the_timestamps(monkeypatch, tmp_path, clock, caplog):
    spec = clip(monkeypatch, tmp_path, clock, GAP_MS, fps=0.887)
    times = [at for _, at in deliveries(open_source(spec, SourceOptions(realtime=True, fps=10.0)))]
    assert steps(times) == pytest.approx([0.1] * 89, abs=1e-6)
    assert not gaps_warned(caplog)


def test_a_reader_that_falls_behind_gets_no_burst_to_catch_up(monkeypatch, tmp_path, clock):
    spec = clip(monkeypatch, tmp_path, clock, [i * 100.0 for i in range(6)], fps=10.0)
    source = open_source(spec, SourceOptions(realtime=True))
    times = [source.read().capture_mono_ns / 1e9]
    clock.advance(1.0)  # the consumer was busy for 10 frame intervals
    times += [source.read().capture_mono_ns / 1e9 for _ in range(5)]
    source.close()
    waits = steps(times)
    assert waits[0] == pytest.approx(1.0 + GRAB_S)  # delivered as soon as it is read
    assert waits[1:] == pytest.approx([0.1] * 4)  # then at the clip's pace again, not all at once


def test_unpaced_reading_of_a_realtime_source_is_flat_out(monkeypatch, tmp_path, clock):
    """``view --out`` reads a --realtime source unpaced (``pace(None)``) and writes at the average rate."""
    spec = clip(monkeypatch, tmp_path, clock, VFR_MS, fps=8.71)
    source = open_source(spec, SourceOptions(realtime=True))
    source.pace(None)
    times = [at for _, at in deliveries(source)]
    assert times[-1] == pytest.approx(89 * GRAB_S)
