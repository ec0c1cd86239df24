"""One camera of a node failing (H36).

- A live stream whose frames arrive but do not decode ("decoder returned no image") was never
  reopened: after 200 in a row (``Source.read``'s limit) it failed for good, exit 2, and in a node
  of several cameras it stopped them all. It is now a stream that stopped delivering frames:
  reopened with the backoff and counted in ``reconnects``; its undecodable frames are counted in
  ``corrupt`` and named in runs (by the frame after them), not 20 identical lines.
- A camera that never delivered a frame made every batch of the others wait the whole batch
  timeout, for as long as it stayed away; now only once.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from perception.errors import SourceError
from perception.sources.base import MAX_FAILED_GRABS, Reconnector, SourceOptions, UndecodedFrames
from perception.sources.stream import StreamSource

W, H = 32, 24


class UndecodableCapture:
    """A live stream's capture: every grab works; frames ``good`` (1-based, by grab) decode, the
    others do not (``retrieve`` gives no image)."""

    opens = 0

    def __init__(self, good):
        type(self).opens += 1
        self.good = good
        self.n = 0

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return True

    def get(self, prop):  # a live stream: it states no frame count
        return {cv2.CAP_PROP_FRAME_WIDTH: W, cv2.CAP_PROP_FRAME_HEIGHT: H}.get(prop, 0.0)

    def grab(self):
        self.n += 1
        return True

    def retrieve(self):
        if self.good(self.n):
            return True, np.full((H, W, 3), self.n, np.uint8)
        return False, None

    def release(self):
        pass


def stream_of(good):
    class Stream(StreamSource):
        reconnect_options = {"initial_s": 0.0, "max_s": 0.0}  # the reopen logic is the same

        def _capture(self, params):
            return UndecodableCapture(good)

        def _served_as_file(self):
            return False

    return Stream("udp://127.0.0.1:1", SourceOptions())


def test_a_live_stream_that_stops_decoding_is_reopened_not_failed():
    src = stream_of(lambda n: n <= 3)  # 3 frames decode on each connection, then none does
    try:
        frames = [src.read() for _ in range(3 * 80)]  # far beyond 200 undecodable frames in a row
    except SourceError as exc:  # what it did: "200 unreadable frames in a row", exit 2
        pytest.fail(f"a live stream failed for good: {exc}")
    assert [f.seq for f in frames] == list(range(240))
    assert src.reconnects == 79  # each run of undecodable frames is a dropped connection, reopened
    assert src.corrupt == 79 * MAX_FAILED_GRABS
    assert src.skipped[0] == (f"before frame 3: {MAX_FAILED_GRABS} frames in a row could not be decoded "
                              "(decoder returned no image); the stream is reopened")
    assert src.skipped[1].startswith("before frame 6: ")
    src.close()


def test_a_few_undecodable_frames_are_one_numbered_note_and_no_reconnect():
    src = stream_of(lambda n: not 4 <= n <= 8)
    frames = [src.read() for _ in range(6)]
    assert [int(f.image[0, 0, 0]) for f in frames] == [1, 2, 3, 9, 10, 11]
    assert src.corrupt == 5 and src.reconnects == 0
    assert src.skipped == ["before frame 3: 5 frames could not be decoded (decoder returned no image); "
                           "the connection stayed up"]
    src.close()


def test_undecodable_frames_for_the_read_timeout_drop_the_connection_before_the_count():
    now = [0.0]

    class Slow(UndecodableCapture):
        def grab(self):
            now[0] += 1.0  # one frame a second
            return super().grab()

    waits = threading.Event()
    reconnector = Reconnector(lambda: Slow(lambda n: n == 1), describe="stream x", interrupted=waits,
                              clock=lambda: now[0], stall_s=5.0, initial_s=0.0)
    assert reconnector.next_image() is not None
    with pytest.raises(UndecodedFrames, match="^5 frames in a row could not be decoded"):
        reconnector.next_image()
    assert reconnector.capture is None  # dropped after the read timeout's worth (5 s), not 30 frames
    assert reconnector.next_image() is not None and reconnector.reconnects == 1


def test_a_video_file_keeps_its_limit_of_unreadable_frames():
    class Clip(StreamSource):  # a clip behind a URL (it states a frame count) is read like a file
        def _capture(self, params):
            cap = UndecodableCapture(lambda n: n == 1)
            cap.get = lambda prop: {cv2.CAP_PROP_FRAME_COUNT: 1000.0}.get(prop, 0.0) or (
                W if prop == cv2.CAP_PROP_FRAME_WIDTH else H if prop == cv2.CAP_PROP_FRAME_HEIGHT else 0.0)
            return cap

    src = Clip("http://127.0.0.1:1/clip.avi", SourceOptions())
    assert src.read() is not None
    with pytest.raises(SourceError, match="200 unreadable frames in a row"):
        src.read()
    src.close()


def test_a_node_not_on_streams_auto_says_what_it_runs_beside_what_the_probe_measured(monkeypatch, tmp_path):
    """A node of several cameras (one frame in flight) showed the probe's streams 2 and "--streams
    auto: 2" as if it ran them, and the cached verdict's document had no state (H36-2)."""
    from test_engines_cpu import HW
    from tiny_models import write_brightness_model

    from perception.engines import EngineOptions
    from perception.engines import auto as auto_mod
    from perception.engines.probe_verdict import Selection

    monkeypatch.setenv("PERCEPTION_PROBE_CACHE", str(tmp_path / "probe-cache"))
    model = write_brightness_model(tmp_path / "tiny.onnx", HW)
    verdict = Selection(engine="ort", precision="fp32", reason="test; --streams auto would run 2 (...)", streams=2,
                        streams_fps={"1": 10.0, "2": 15.0})
    engine = auto_mod.load_auto(model, EngineOptions(threads=1, streams=1), cached=verdict)
    try:
        assert engine.selection["streams"] == 1 and engine.selection["probe_streams"] == 2
        assert engine.selection["state"] == "chosen"
    finally:
        engine.close()
