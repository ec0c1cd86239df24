"""A node of several cameras whose one camera is not there at start-up (unplugged, not yet
enumerated after boot, its server down) stopped altogether with exit 4, and a launch file restarted
it for as long as that camera stayed away, every other camera dark meanwhile (H17 finding 1). Now
the others start without it and it is opened as soon as it is there (``sources/pending.py``); a
node of one camera, a node none of whose cameras is there, and a camera that is a mistake (a file
not found) still fail at once. Its openings run at once, so N streams that do not answer cost one
``--read-timeout``."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from perception.commands.run import open_camera_sources
from perception.errors import SourceError, SourceUnavailableError
from perception.run_config import RunConfig
from perception.sources import pending
from perception.sources.base import Frame
from perception.sources.pending import PendingSource


def _cameras(*specs: str) -> list[RunConfig]:
    config = RunConfig(source={f"cam{i}": spec for i, spec in enumerate(specs)})
    return [config.camera_config(i) for i in range(len(specs))]


def test_a_camera_not_there_starts_pending_and_the_others_open(caplog):
    sources = open_camera_sources(_cameras("synthetic", "/dev/video93"), stop_requested=lambda: False)
    try:
        assert sources[0].describe().startswith("synthetic") and isinstance(sources[1], PendingSource)
        assert sources[1].live and sources[1].frames_read == 0 and sources[1].describe() == "/dev/video93 (not opened yet)"
        said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert said == ["camera 'cam1' is not there (camera /dev/video93 not found; check the cable and 'v4l2-ctl "
                        "--list-devices', or pass another --source); the other cameras start without it, and it is "
                        "opened as soon as it is (tried again every 5 s at most)"]
        sources[1].interrupt()
        assert sources[1].read() is None  # a stop ends its wait
    finally:
        for source in sources:
            source.close()


def test_a_node_none_of_whose_cameras_is_there_fails_naming_each():  # each since s42 (H47 L6)
    with pytest.raises(SourceUnavailableError, match=r"^no camera is there: camera 'cam0' \(--source cam0=/dev/video93\): "
                       r"camera .*; camera 'cam1' \(--source cam1=/dev/video94\): camera "):
        open_camera_sources(_cameras("/dev/video93", "/dev/video94"), stop_requested=lambda: False)


def test_a_camera_that_is_a_mistake_still_fails_the_node(tmp_path):
    with pytest.raises(SourceError, match=r"^camera 'cam1' \(--source cam1=.*nowhere\.mp4\): video file ") as info:
        open_camera_sources(_cameras("synthetic", str(tmp_path / "nowhere.mp4")), stop_requested=lambda: False)
    assert not isinstance(info.value, SourceUnavailableError)


def test_one_camera_not_there_fails_as_before():
    with pytest.raises(SourceUnavailableError, match=r"^camera /dev/video93 not found"):
        open_camera_sources(_cameras("/dev/video93"), stop_requested=lambda: False)


class _Camera:
    """A source that gives ``n`` frames then waits."""

    def __init__(self, n: int):
        self.frames_read, self.corrupt, self.reconnects, self.skipped, self.named = 0, 0, 0, [], None
        self.n, self.closed = n, False

    def read(self):
        if self.frames_read >= self.n:
            return None
        self.frames_read += 1
        return Frame(seq=self.frames_read - 1, capture_ns=1, capture_mono_ns=1, capture_ms=0.0, image=np.zeros((4, 4, 3), np.uint8))

    def describe(self):
        return "camera /dev/video93"

    def name_camera(self, name):
        self.named = name

    def interrupt(self):
        pass

    def close(self):
        self.closed = True


def test_a_pending_camera_opens_once_it_is_there_and_is_that_camera_from_then(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="perception")
    monkeypatch.setattr(pending, "INITIAL_BACKOFF_S", 0.001)
    monkeypatch.setattr(pending, "MAX_BACKOFF_S", 0.001)
    tries, camera = [], _Camera(2)

    def open_source(spec, options):
        tries.append(spec)
        if len(tries) < 12:
            raise SourceUnavailableError("camera /dev/video93 not found")
        return camera

    monkeypatch.setattr("perception.sources.open_source", open_source)
    source = PendingSource("/dev/video93", None, SourceUnavailableError("camera /dev/video93 not found"), "rear")
    frames = [source.read(), source.read()]
    assert [f.seq for f in frames] == [0, 1] and len(tries) == 12
    assert source.frames_read == 2 and source.describe() == "camera /dev/video93" and camera.named == "rear"
    said = [r.getMessage() for r in caplog.records if r.name == "perception.sources.pending"]
    assert said[1].startswith("camera 'rear': try 10 to open it failed (camera /dev/video93 not found)")
    assert said[2] == "camera 'rear' is there now: opened after 12 more tries (camera /dev/video93)"
    source.close()
    assert camera.closed


def test_a_pending_camera_closed_while_it_waits_ends_its_read(monkeypatch):
    monkeypatch.setattr("perception.sources.open_source",
                        lambda spec, options: (_ for _ in ()).throw(SourceUnavailableError("not found")))
    source = PendingSource("/dev/video93", None, SourceUnavailableError("not found"), "rear")
    got = []
    reader = threading.Thread(target=lambda: got.append(source.read()))
    reader.start()
    source.close()
    reader.join(10)
    assert not reader.is_alive() and got == [None]
