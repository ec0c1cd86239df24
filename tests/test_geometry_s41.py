"""Session 41 (H41): every frame's geometry.

- F1: an MJPEG stream or raw ``.mjpeg`` file whose frames change size was read squashed to the size
  it opened at (OpenCV scales such frames): each frame is now read at its own size.
- F2: masks over the readers' default ``--max-mask-pixels`` (``--mask-size source`` on a camera over
  16.7 MP) are warned about once by the node; the readers say "over --max-mask-pixels".
- F3: ``perception view --source S`` without ``--model`` runs the shipped default model, as ``run``.
"""

from __future__ import annotations

import http.server
import logging
import subprocess
import sys
import threading
import types

import cv2
import numpy as np
import pytest

from perception import contracts
from perception.encoding import DecodeError, MaskOverLimit, get_codec
from perception.mask_stage import MaskStage
from perception.preprocess import Letterbox
from perception.sources import SourceOptions, open_source
from perception.sources.mjpeg import JpegPackets, jpeg_size

LAND, PORTRAIT = (64, 36), (36, 64)  # (width, height)


def jpeg(size: tuple[int, int], level: int = 80) -> bytes:
    width, height = size
    image = np.full((height, width, 3), level, np.uint8)
    cv2.rectangle(image, (2, 2), (width // 2, height // 2), (255, 255, 255), -1)
    return cv2.imencode(".jpg", image)[1].tobytes()


def sizes_read(source, n: int | None = None) -> list[tuple[int, int]]:
    got = []
    while n is None or len(got) < n:
        frame = source.read()
        if frame is None:
            break
        got.append((frame.image.shape[1], frame.image.shape[0]))
    return got


def test_a_raw_mjpeg_file_whose_frames_change_size_is_read_at_each_frames_size(tmp_path, caplog):
    clip = tmp_path / "changing.mjpeg"
    clip.write_bytes(b"".join(jpeg(s) for s in (LAND, LAND, PORTRAIT, PORTRAIT, (65, 35))))
    caplog.set_level(logging.INFO)
    source = open_source(str(clip))
    try:
        assert sizes_read(source) == [LAND, LAND, PORTRAIT, PORTRAIT, (65, 35)]  # was 5 x (64, 36)
    finally:
        source.close()
    assert source.corrupt == 0
    changed = [r.getMessage() for r in caplog.records if "frame size changed" in r.getMessage()]
    assert changed == [f"video file {clip}: frame size changed from 64x36 to 36x64; each frame is read at its own size"]


def test_a_looped_mjpeg_file_says_its_size_change_once_a_run(tmp_path, caplog):
    """V1 of s41: each --loop pass reopened the file and said the change again (20 lines in 3 s)."""
    clip = tmp_path / "changing.mjpeg"
    clip.write_bytes(b"".join(jpeg(s) for s in (LAND, PORTRAIT)))
    caplog.set_level(logging.INFO)
    source = open_source(str(clip), SourceOptions(loop=True))
    try:
        assert sizes_read(source, 8) == [LAND, PORTRAIT] * 4
    finally:
        source.close()
    assert sum("frame size changed" in r.getMessage() for r in caplog.records) == 1


def test_a_later_mjpeg_frame_over_the_size_limit_is_skipped_from_its_header(tmp_path):
    huge = bytearray(jpeg(LAND))
    at = huge.find(b"\xff\xc0")  # its frame header, patched to state 9000 x 9000
    huge[at + 5: at + 9] = (9000).to_bytes(2, "big") * 2
    assert jpeg_size(np.frombuffer(bytes(huge), np.uint8)) == (9000, 9000)
    clip = tmp_path / "huge.mjpeg"
    clip.write_bytes(jpeg(LAND) + bytes(huge) + jpeg(PORTRAIT))
    source = open_source(str(clip))
    try:
        assert sizes_read(source) == [LAND, PORTRAIT]
    finally:
        source.close()
    assert source.corrupt == 1 and "a frame of 9000x9000, more than" in source.skipped[0]


def test_an_avi_of_mjpeg_is_still_decoded_by_opencv(tmp_path):
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, LAND)
    for _ in range(2):
        writer.write(np.full((LAND[1], LAND[0], 3), 90, np.uint8))
    writer.release()
    source = open_source(str(clip))
    try:
        assert isinstance(source._cap, cv2.VideoCapture) and sizes_read(source) == [LAND, LAND]
    finally:
        source.close()


class FakeRaw:
    """A capture in packet mode whose first packet is not a JPEG of the size it states."""

    def __init__(self, packets, stated):
        self.packets, self.stated, self.released = list(packets), stated, False

    def grab(self):
        return bool(self.packets)

    def retrieve(self, image=None, flag=0):
        return True, np.frombuffer(self.packets.pop(0), np.uint8)

    def get(self, prop):
        return {cv2.CAP_PROP_FRAME_WIDTH: self.stated[0], cv2.CAP_PROP_FRAME_HEIGHT: self.stated[1]}.get(prop, 0.0)

    def release(self):
        self.released = True


class FakePlain:
    def __init__(self):
        self.frames = [np.zeros((72, 64, 3), np.uint8)] * 2

    def grab(self):
        return bool(self.frames)

    def retrieve(self, image=None, flag=0):
        return True, self.frames.pop(0)


def test_packets_that_are_not_whole_jpegs_of_the_stated_size_go_back_to_opencv():
    raw = FakeRaw([jpeg((64, 36))], stated=(64, 72))  # interlaced MJPEG: one field of half the height
    cap = JpegPackets(raw, reopen=FakePlain, describe="video file x.mjpeg")
    assert cap.grab() and raw.released and not cap.raw
    ok, image = cap.retrieve()
    assert ok and image.shape == (72, 64, 3)  # the plain capture's first frame, from its start


def mjpeg_server(parts: list[bytes]):
    """A camera's MJPEG stream over HTTP (multipart/x-mixed-replace), sending ``parts`` and then
    the last one again until the client goes (at most 200 parts)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for i in range(200):
                    part = parts[min(i, len(parts) - 1)]
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(part)
                                     + part + b"\r\n")
                    self.wfile.flush()
            except OSError:
                pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_an_http_mjpeg_camera_that_turns_portrait_is_read_at_each_frames_size():
    server = mjpeg_server([jpeg(LAND), jpeg(LAND), jpeg(PORTRAIT)])
    try:
        source = open_source(f"http://127.0.0.1:{server.server_address[1]}/cam.mjpg", SourceOptions(read_timeout_s=5))
        try:
            assert source.live and sizes_read(source, 4) == [LAND, LAND, PORTRAIT, PORTRAIT]  # was 4 x (64, 36)
        finally:
            source.close()
    finally:
        server.shutdown()
        server.server_close()


def test_the_node_warns_once_when_its_masks_are_over_the_readers_limit(caplog):
    stage = MaskStage.__new__(MaskStage)  # only what the check reads
    stage.config = types.SimpleNamespace(publish_options=types.SimpleNamespace(mask_size="source"))
    stage._said_over_readers_limit = False
    caplog.set_level(logging.WARNING, logger="perception.mask_stage")
    stage._check_readers_limit(Letterbox.fit((4096, 4096), (288, 480)))  # at the limit: nothing said
    assert not caplog.records
    for _ in range(2):
        stage._check_readers_limit(Letterbox.fit((3500, 5000), (288, 480)))
    assert [r.getMessage() for r in caplog.records] == [
        "masks of 3500x5000 = 17500000 pixels are over the readers' default --max-mask-pixels 16777216 (4096x4096): "
        "subscribers skip every one of them unless they raise it (--max-mask-pixels 17500000 for perception "
        "listen/record/view and the C and JS clients); or publish masks at the model's scale (--mask-size model)"]
    model_scale = MaskStage.__new__(MaskStage)
    model_scale.config = types.SimpleNamespace(publish_options=types.SimpleNamespace(mask_size="model"))
    model_scale._said_over_readers_limit = False
    model_scale._check_readers_limit(Letterbox.fit((3500, 5000), (288, 480)))
    assert len(caplog.records) == 1


def test_a_reader_calls_a_mask_over_its_limit_a_size_limit():
    with pytest.raises(MaskOverLimit, match="over --max-mask-pixels, a size limit, not damage") as raised:
        get_codec("mono8").decode(bytes(17_500_000), height=3500, width=5000)
    assert isinstance(raised.value, DecodeError) and contracts.MAX_MASK_PIXELS == 16_777_216


def test_view_without_model_runs_the_shipped_default_model(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "000.png"), np.full((36, 64, 3), 90, np.uint8))
    done = subprocess.run([sys.executable, "-m", "perception", "-q", "view", "--source", str(folder),
                           "--out", str(tmp_path / "v.png"), "--max-frames", "1"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr  # was: "give --source and --model ..."
    assert (tmp_path / "v.png").is_file()


def test_the_subscriber_says_a_mask_over_its_limit_is_over_it_not_malformed():
    import time

    from perception.publish import MaskPublisher
    from perception.subscribe import MaskSubscriber

    with MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace="p/x") as pub, \
            MaskSubscriber(pub.endpoint, namespace="p/x", max_mask_pixels=100) as sub:
        deadline = time.monotonic() + 20
        while sub.counters.malformed == 0 and time.monotonic() < deadline:
            pub.publish_masks(seq=1, capture_ns=time.time_ns(), frame_id="x", masks={"drivable": np.zeros((20, 20), np.uint8)},
                              latency_ms={}, model_id="m")
            sub.recv(timeout_s=0.1)
        assert sub.last_error.startswith("skipped a message over this reader's size limit: mono8 payload declares 20x20"), \
            sub.last_error


def test_a_jpeg_cut_short_in_a_raw_mjpeg_file_costs_that_frame_only(tmp_path, caplog):
    """H45 F2: FFmpeg hands a JPEG cut short over with the whole one after it, and both were skipped
    as one unreadable frame (OpenCV's own decoding had published the whole one)."""
    images = [jpeg(LAND, level) for level in (40, 80, 120, 160, 200)]
    images[2] = images[2][: len(images[2]) // 2]  # cut short: no end marker
    clip = tmp_path / "cut.mjpeg"
    clip.write_bytes(b"".join(images))
    source = open_source(str(clip))
    try:
        levels = []
        while (frame := source.read()) is not None:
            levels.append(int(frame.image[-1, -1, 0]))
    finally:
        source.close()
    assert len(levels) == 4 and source.corrupt == 1, (levels, source.corrupt)
    assert abs(levels[2] - 160) <= 8 and abs(levels[3] - 200) <= 8  # the whole images after the cut one
    assert "a JPEG image cut short" in source.skipped[0]


def test_fill_bytes_and_marker_floods_are_read_without_a_walk_byte_by_byte():
    """H45 F3: a packet padded with 0xFF fill bytes took 0.1 s of Python a MB before decoding; now a
    run of them is one numpy search, and more than MAX_MARKERS segments are refused."""
    from perception.sources.mjpeg import MAX_MARKERS

    whole = jpeg(LAND)
    padded = np.frombuffer(whole[:2] + b"\xff" * 1_000_000 + whole[2:], np.uint8)
    assert jpeg_size(padded) == LAND
    flood = np.frombuffer(whole[:2] + b"\xff\xe5\x00\x02" * (MAX_MARKERS + 1) + whole[2:], np.uint8)
    assert jpeg_size(flood) is None  # refused, not walked


def test_a_cut_jpeg_before_one_with_a_thumbnail_gives_the_whole_image_not_the_thumbnail(tmp_path):
    """V2 of s41: the first fix took the last JPEG start in the merged packet, which was the next
    image's EXIF thumbnail (a 32x24 frame published); the next image itself is the first that decodes."""
    thumb = jpeg((32, 24))

    def with_thumbnail(data: bytes) -> bytes:
        body = b"Exif\x00\x00" + thumb
        return data[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + data[2:]

    images = [with_thumbnail(jpeg(LAND, level)) for level in (40, 80, 120, 160, 200)]
    images[2] = images[2][: len(images[2]) * 2 // 3]  # cut short inside its scan
    clip = tmp_path / "thumbs.mjpeg"
    clip.write_bytes(b"".join(images))
    source = open_source(str(clip))
    try:
        sizes = sizes_read(source)
    finally:
        source.close()
    assert sizes == [LAND] * 4 and source.corrupt == 1, (sizes, source.corrupt)
