"""Media the node met in hunt s40 h31: interlaced video, anamorphic video, what a video holds at open,
HEIC photos in a folder or glob, and natural order of number-only names.

Interlaced streams and non-square pixels cannot be written with cv2.VideoWriter, so a real MJPEG clip
is opened through a capture that reports what such a file reports (its codec, its headers, its pixel
aspect); the codec headers are real ones, taken from ffmpeg-made files. No ffmpeg binary needed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from perception import cvpath
from perception.errors import SourceError
from perception.sources import SourceOptions
from perception.sources import video as video_source
from perception.sources.images import ImageSource, natural_key
from perception.sources.interlace import h264_field_coding
from perception.sources.video import VideoFileSource

W, H = 64, 48

#: MPEG-2 sequence header + sequence extension of an interlaced clip (``progressive_sequence`` 0),
#: as ``ffmpeg -c:v mpeg2video -flags +ilme+ildct`` writes it; and the same with the flag set.
MPEG2_INTERLACED = bytes.fromhex("000001b328016833ffffe018000001b5148200010024")
MPEG2_PROGRESSIVE = bytes.fromhex("000001b328016833ffffe018000001b5148a00010024")
#: H.264 SPS NAL units: x264 with ``tff=1`` (frame_mbs_only_flag 0), and a progressive one.
SPS_INTERLACED = bytes.fromhex("67640016acd940a063f3e022000003000200000300283e28532c")
SPS_PROGRESSIVE = bytes.fromhex("67640016acb201405ff2e022000003000200000300281e2c5c90")

needs_ffmpeg_backend = pytest.mark.skipif(
    video_source._file_backend() != cv2.CAP_FFMPEG, reason="this OpenCV has no FFmpeg backend")


def write_clip(path: Path, frames: list[np.ndarray], fourcc: str = "MJPG") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (frames[0].shape[1], frames[0].shape[0]))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def ramp_clip(path: Path, n: int = 6) -> Path:
    frames = []
    for i in range(n):
        frame = np.zeros((H, W, 3), np.uint8)
        frame[:, : W // 2] = 200  # left half bright: where the halves meet shows the geometry
        frame[:, :, 1] = 20 * i
        frames.append(frame)
    return write_clip(path, frames)


class Reporting:
    """A real capture that reports other properties (``CAP_PROP_SAR_NUM``, ``CAP_PROP_FOURCC``...)."""

    def __init__(self, cap, props: dict[int, float]) -> None:
        self.cap, self.props = cap, props

    def get(self, prop):
        return self.props[prop] if prop in self.props else self.cap.get(prop)

    def __getattr__(self, name):
        return getattr(self.cap, name)


class RawPackets:
    """What ``CAP_PROP_FORMAT`` -1 (raw packets) gives: the codec's extradata, then packets."""

    def __init__(self, extradata: bytes, packets: list[bytes] = ()) -> None:
        self.extradata, self.packets = extradata, list(packets)

    def isOpened(self):
        return True

    def get(self, prop):
        return 99 if prop == cv2.CAP_PROP_CODEC_EXTRADATA_INDEX else 0

    def retrieve(self, image=None, index=0):
        return True, np.frombuffer(self.extradata, np.uint8).reshape(1, -1)

    def read(self):
        if not self.packets:
            return False, None
        return True, np.frombuffer(self.packets.pop(0), np.uint8).reshape(1, -1)

    def release(self):
        pass


def reporting(monkeypatch, props: dict[int, float], raw: RawPackets | None = None) -> None:
    real = cvpath.video_capture

    def capture(path, *args):
        if len(args) > 1 and list(args[1]) == [cv2.CAP_PROP_FORMAT, -1]:
            return raw if raw is not None else real(path, *args)
        return Reporting(real(path, *args), props)

    monkeypatch.setattr(cvpath, "video_capture", capture)


def fourcc(text: str) -> float:
    return float(int.from_bytes(text.encode(), "little"))


def read_all(source) -> list[np.ndarray]:
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame.image)
    source.close()
    return frames


# ---- 1. interlaced video ---------------------------------------------------------------------------

@needs_ffmpeg_backend
@pytest.mark.parametrize(("codec", "header", "word"), [("mpg2", MPEG2_INTERLACED, "MPEG-2"),
                                                       ("h264", b"\x00\x00\x00\x01" + SPS_INTERLACED, "H.264")])
def test_interlaced_clip_whose_frames_come_out_stale_is_refused_in_one_line(tmp_path, monkeypatch, codec, header,
                                                                            word):
    # What OpenCV 5.0 returns for such a file: every frame the same untouched buffer (zeros here).
    clip = write_clip(tmp_path / "tv.avi", [np.zeros((H, W, 3), np.uint8)] * 6)
    reporting(monkeypatch, {cv2.CAP_PROP_FOURCC: fourcc(codec)}, RawPackets(header))
    with pytest.raises(SourceError) as err:
        VideoFileSource(str(clip), SourceOptions())
    message = str(err.value)
    assert "\n" not in message
    assert str(clip) in message and f"interlaced {word} video" in message
    assert "-vf bwdif" in message  # the fix


@needs_ffmpeg_backend
def test_black_clip_of_a_progressive_stream_is_read_not_refused(tmp_path, monkeypatch):
    # A night drive or a black lead-in: frames really alike, but the headers say progressive.
    clip = write_clip(tmp_path / "night.avi", [np.zeros((H, W, 3), np.uint8)] * 6)
    reporting(monkeypatch, {cv2.CAP_PROP_FOURCC: fourcc("mpg2")}, RawPackets(MPEG2_PROGRESSIVE))
    assert len(read_all(VideoFileSource(str(clip), SourceOptions()))) == 6


@needs_ffmpeg_backend
def test_interlace_capable_stream_that_decodes_is_read_not_refused(tmp_path, monkeypatch):
    # H.264 whose SPS allows field coding but whose frames decode (they differ): nothing to refuse.
    clip = ramp_clip(tmp_path / "paff.avi")
    reporting(monkeypatch, {cv2.CAP_PROP_FOURCC: fourcc("avc1")}, RawPackets(b"\x00\x00\x01" + SPS_INTERLACED))
    assert len(read_all(VideoFileSource(str(clip), SourceOptions()))) == 6


def test_h264_sps_field_coding_flag_is_read():
    assert h264_field_coding(SPS_INTERLACED) is True
    assert h264_field_coding(SPS_PROGRESSIVE) is False
    assert h264_field_coding(b"\x68\xeb\xc3\xcb\x22\xc0") is None  # a PPS


# ---- 2. anamorphic video ---------------------------------------------------------------------------

@pytest.mark.parametrize(("sar", "shape"), [((2, 1), (H, 2 * W)), ((1, 2), (H, W // 2))])
def test_anamorphic_frames_are_resampled_to_their_display_aspect(tmp_path, monkeypatch, caplog, sar, shape):
    clip = ramp_clip(tmp_path / "dv.avi")
    reporting(monkeypatch, {cv2.CAP_PROP_SAR_NUM: sar[0], cv2.CAP_PROP_SAR_DEN: sar[1]})
    with caplog.at_level(logging.INFO, logger="perception.sources.video"):
        frames = read_all(VideoFileSource(str(clip), SourceOptions()))
    assert len(frames) == 6 and all(f.shape[:2] == shape for f in frames)
    # the bright half is still the left half of the (wider or narrower) picture
    assert frames[0][:, : shape[1] // 2 - 2, 0].min() > 150 and frames[0][:, shape[1] // 2 + 2:, 0].max() < 60
    line = [r.getMessage() for r in caplog.records if "anamorphic" in r.getMessage()]
    assert len(line) == 1 and f"{shape[1]}x{H}" in line[0] and f"stored {W}x{H}" in line[0]


def test_pixel_aspect_within_a_percent_of_square_is_square(tmp_path, monkeypatch):
    # OpenCV reports 5776/5769 for an MJPEG AVI of odd size: not resampled.
    clip = ramp_clip(tmp_path / "odd.avi")
    reporting(monkeypatch, {cv2.CAP_PROP_SAR_NUM: 5776, cv2.CAP_PROP_SAR_DEN: 5769})
    frames = read_all(VideoFileSource(str(clip), SourceOptions()))
    assert frames[0].shape[:2] == (H, W)


# ---- 3. what a video file holds, said at open -------------------------------------------------------

def test_open_says_size_codec_rate_and_count(tmp_path, caplog):
    clip = ramp_clip(tmp_path / "drive.avi")
    with caplog.at_level(logging.INFO, logger="perception.sources.video"):
        VideoFileSource(str(clip), SourceOptions()).close()
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert lines == [f"video file {clip}: {W}x{H}, MJPG, 10 fps, 6 frames"]


# ---- 4. HEIC photos ---------------------------------------------------------------------------------

def _photos(folder: Path) -> None:
    folder.mkdir()
    for name in ("1.png", "2.png"):
        cv2.imwrite(str(folder / name), np.full((H, W, 3), 90, np.uint8))
    (folder / "3.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))  # OpenCV cannot read it either way


def test_heic_left_out_of_a_folder_is_named_once(tmp_path, caplog):
    _photos(tmp_path / "phone")
    with caplog.at_level(logging.INFO, logger="perception.sources.images"):
        source = ImageSource(str(tmp_path / "phone"), SourceOptions())
    assert [p.name for p in source.files] == ["1.png", "2.png"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "1 file" in warned[0] and ".heic: 1" in warned[0] and "convert" in warned[0]


def test_glob_of_heic_photos_says_why_and_the_fix(tmp_path):
    _photos(tmp_path / "phone")
    with pytest.raises(SourceError, match=r"\.heic photos are not read by OpenCV.*convert them to JPEG or PNG"):
        ImageSource(str(tmp_path / "phone" / "*.heic"), SourceOptions())


# ---- 5. natural order ---------------------------------------------------------------------------------

def test_number_only_names_sort_among_the_others_as_file_browsers_do():
    names = ["frame_2.png", "10.png", "3.png", "2_b.png", "1.png"]
    assert [p.name for p in sorted(map(Path, names), key=natural_key)] == [
        "1.png", "2_b.png", "3.png", "10.png", "frame_2.png"]
    sequence = ["0051.png", "0050_edit.png", "0049.png", "0050.png"]
    assert [p.name for p in sorted(map(Path, sequence), key=natural_key)] == [
        "0049.png", "0050.png", "0050_edit.png", "0051.png"]
    stamps = ["1700000001.png", "1700000000.5.png", "1700000000.png", "1700000000.125.png"]
    assert [p.name for p in sorted(map(Path, stamps), key=natural_key)] == [
        "1700000000.png", "1700000000.125.png", "1700000000.5.png", "1700000001.png"]
