"""A clip behind a URL whose frame count FFmpeg cannot tell (an MPEG-TS or raw MJPEG file from a
server without Range requests, such as ``python -m http.server``) was taken for a live stream: at
its end it was reopened and played again from its start, about 6 times a second for as long as the
node ran (a 90-frame clip: 5490 frames in, 60 reconnects in 12 s). Its server says it is a file
(``served_as_file``), so it is read once like a clip. The reopen that tells a clip's end from a
dropped connection is information, not a warning, and a reconnect only when frames came after it."""

from __future__ import annotations

import base64
import http.server
import logging
import socket
import threading

import cv2
import numpy as np
import pytest
from test_sources import FakeClip

from perception.sources import SourceOptions, open_source
from perception.sources.stream import StreamSource, served_as_file


def write_ts(path, n: int) -> None:
    """An MPEG-TS clip of ``n`` frames, grey 10 * index, at 10 fps."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    assert writer.isOpened(), "this OpenCV cannot write MPEG-TS"
    for i in range(n):
        writer.write(np.full((48, 64, 3), 10 * i, np.uint8))
    writer.release()


def greys(frames) -> list[int]:
    return [round(float(f.image.mean()) / 10) for f in frames]


def read_all(src, limit: int = 100) -> list:
    frames = []
    while len(frames) < limit and (frame := src.read()) is not None:
        frames.append(frame)
    return frames


def test_an_mpeg_ts_file_from_a_server_without_range_requests_is_read_once(http_dir, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="perception")
    monkeypatch.setattr(StreamSource, "reconnect_options", {"initial_s": 0.001})
    folder, url = http_dir
    write_ts(folder / "drive.ts", 6)
    src = open_source(f"{url}/drive.ts", read_timeout_s=5)
    assert src.finite and not src.live and src.frame_count is None  # a clip, of a count no one states
    frames = read_all(src)
    assert greys(frames) == [0, 1, 2, 3, 4, 5] and [f.seq for f in frames] == list(range(6))
    assert src.read() is None  # its end ends the input: before, it played again and again
    assert src.reconnects == 0 and src.corrupt == 0 and src.skipped == []
    src.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert any("holds no frame after the 6 read, also when opened again: taken as its end" in r.getMessage()
               and "FFmpeg cannot tell this file's frame count" in r.getMessage() for r in caplog.records)


def test_a_looped_mpeg_ts_file_url_plays_again_from_its_start(http_dir, monkeypatch):
    monkeypatch.setattr(StreamSource, "reconnect_options", {"initial_s": 0.001})
    folder, url = http_dir
    write_ts(folder / "drive.ts", 4)
    src = open_source(f"{url}/drive.ts", read_timeout_s=5, loop=True)
    frames = [src.read() for _ in range(10)]
    src.close()
    assert greys(frames) == [0, 1, 2, 3] * 2 + [0, 1] and [f.seq for f in frames] == list(range(10))
    assert src.reconnects == 0 and src.corrupt == 0


class UnknownCount(FakeClip):
    """A clip FFmpeg states no count for (its duration unknown), whose connection ends after ``cut``."""

    def get(self, prop):
        return -3074457345618259.0 if prop == cv2.CAP_PROP_FRAME_COUNT else super().get(prop)


def fake_stream(url: str, captures: list, served_as_a_file: bool = True, **options) -> StreamSource:
    class Fake(StreamSource):
        reconnect_options = {"initial_s": 0.001}

        def _capture(self, params):
            return captures.pop(0)

        def _served_as_file(self):
            return served_as_a_file

    return Fake(url, SourceOptions(read_timeout_s=1.0, **options))


def test_a_connection_dropped_part_way_resumes_at_the_next_frame_and_is_one_reconnect(caplog):
    caplog.set_level(logging.INFO, logger="perception")
    captures = [UnknownCount(8, cut=3), UnknownCount(8), UnknownCount(8)]  # the last: nothing after 8
    src = fake_stream("http://cam.local/drive.ts", captures)
    frames = read_all(src)
    src.close()
    assert greys(frames) == list(range(8)) and [f.seq for f in frames] == list(range(8))
    assert src.reconnects == 1 and src.corrupt == 0 and src.skipped == []
    said = [r.getMessage() for r in caplog.records]
    assert "stream http://cam.local/drive.ts had dropped: reconnected (reconnect 1)" in said


def test_a_url_the_server_does_not_call_a_file_stays_live():
    src = fake_stream("http://cam.local/live", [UnknownCount(3)], served_as_a_file=False)
    assert src.live and not src.finite and src.frame_count is None
    src.close()


class Answers(http.server.BaseHTTPRequestHandler):
    """Answers HEAD with the headers of ``self.server.answer`` and records the Authorization."""

    def do_HEAD(self):  # noqa: N802 (http.server's name)
        status, headers = self.server.answer
        self.server.auth = self.headers.get("Authorization")
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def answering():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    server.auth = None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status, headers, is_file", [
    (200, {"Content-Type": "video/mp2t", "Content-Length": "4096"}, True),
    (200, {"Content-Type": "application/octet-stream", "Content-Length": "4096"}, True),
    (200, {"Content-Type": "multipart/x-mixed-replace; boundary=f"}, False),  # an MJPEG camera
    (200, {"Content-Type": "multipart/x-mixed-replace; boundary=f", "Content-Length": "99"}, False),
    (200, {"Content-Type": "image/jpeg", "Content-Length": "4096"}, False),  # a snapshot, asked again
    (200, {"Content-Type": "video/mp2t", "Transfer-Encoding": "chunked"}, False),  # a live TS stream
    (200, {"Content-Type": "video/mp2t", "Content-Length": "0"}, False),
    (405, {"Content-Length": "0"}, False),  # a server that takes no HEAD: taken as live, as before
    (404, {}, False),
])
def test_whether_a_server_says_a_url_is_a_file(answering, status, headers, is_file):
    server, host = answering
    server.answer = (status, headers)
    assert served_as_file(f"http://{host}/x", 2.0) is is_file


def test_credentials_in_the_url_are_sent_as_basic_authentication(answering):
    server, host = answering
    server.answer = (200, {"Content-Type": "video/mp2t", "Content-Length": "10"})
    assert served_as_file(f"http://us%40er:p%3Ass@{host}/x.ts", 2.0)
    assert server.auth == "Basic " + base64.b64encode(b"us@er:p:ss").decode()


def test_a_server_that_never_answers_is_taken_for_live_within_the_timeout():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        assert not served_as_file(f"http://127.0.0.1:{silent.getsockname()[1]}/x", 0.3)
    assert not served_as_file("rtsp://127.0.0.1/x", 0.3)  # asked of HTTP(S) URLs only


def test_a_camera_down_for_long_is_said_at_its_1st_10th_100th_and_every_1000th_try(caplog):
    """H16 finding 5: a camera unplugged for a week logged a warning at every try, one every 5 s at
    the longest backoff (17,000 lines a day)."""
    from perception.errors import SourceError
    from perception.sources.base import Reconnector

    down = [False]

    def open_capture():
        if down[0]:
            raise SourceError("camera /dev/video0 not found")
        return UnknownCount(1)

    connection = Reconnector(open_capture, describe="camera /dev/video0", interrupted=threading.Event(),
                             initial_s=0.0, max_s=0.0, clock=lambda: 0.0)
    down[0] = True
    connection.dropped()
    caplog.clear()
    for _ in range(2500):
        assert not connection.reopen()
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [m.split(" to reopen")[0] for m in said] == [f"camera /dev/video0: try {n}" for n in (1, 10, 100, 1000, 2000)]
    assert said[0].endswith("; said again at try 10, 100 and every 1000th")
    down[0] = False
    assert connection.reopen() and connection.reconnects == 1  # one outage, one reconnect
