"""Leftovers of session 33's hunt of the input sources (h1 F6, v1's new problems), session 34.

1. A camera's settings (``--width``, ``--height``, ``--fourcc``) and the other source settings that
   only some sources use were accepted without a word for a source that ignores them.
2. A video whose header overstates its frame count ended ``--loop`` playback with "capture failed".
3. ``source_skipped`` and ``corrupt`` repeated the same skipped file on every pass of ``--loop``.
4. The per-frame cap counted pixels, so a 16-bit image cost twice the bytes it promised.
5. ``--duration 1e400`` was echoed as ``(--duration inf)``.
6. A source under a folder this user cannot enter was called a "video file" whatever it was.
7. A bad ``--curve-secret-key`` was reported after a "CURVE on" info line.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_corrupt_sources import write_damaged_avi, write_numbered_avi

from perception.cli import main as cli_main
from perception.errors import ConfigError, PublishError
from perception.sources import images as image_source
from perception.sources import open_source, source_kind

H, W = 48, 64


def read_n(source, n: int) -> list:
    frames = []
    while len(frames) < n and (frame := source.read()) is not None:
        frames.append(frame)
    return frames


def run_node(argv: list[str], capsys) -> tuple[int, dict | None, list[str]]:
    """``perception -q run ARGV`` in this process: its status, final stats and stderr lines."""
    code = cli_main(["-q", "run", *argv])
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    return code, json.loads(lines[-1]) if lines else None, err.strip().splitlines()


# ---- 1. settings for sources that do not use them ---------------------------------------------------


@pytest.fixture
def clip(tmp_path) -> Path:
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    for i in range(3):
        writer.write(np.full((H, W, 3), 40 * i, np.uint8))
    writer.release()
    return tmp_path / "clip.avi"


UNUSED = {  # name -> (flags, with {clip} and {dir}; the one error line's start after "perception: error: ")
    "width of a video": ("--source {clip} --width 640",
                         "--width applies to cameras and the synthetic camera only, not to --source {clip}: a file, "
                         "folder or stream is read at its own size (the engine letterboxes every frame); drop it"),
    "height of a folder": ("--source {dir}/ --height 480", "--height applies to cameras and the synthetic camera only"),
    "width of a stream": ("--source rtsp://user:pw@127.0.0.1:1/s --width 640",
                          "--width applies to cameras and the synthetic camera only, not to --source "
                          "rtsp://***@127.0.0.1:1/s"),
    "fourcc of a video": ("--source {clip} --fourcc MJPG", "--fourcc applies to V4L2 cameras only, not to --source"),
    "fourcc of the synthetic camera": ("--source synthetic --fourcc YUYV", "--fourcc applies to V4L2 cameras only"),
    "loop of the synthetic camera": ("--source synthetic --loop",
                                     "--loop applies to video files, image folders and clips behind a URL only, not "
                                     "to --source synthetic: a live source does not end; drop it"),
    "realtime of a camera": ("--source /dev/video97 --realtime", "--realtime applies to video files, image folders"),
    "read timeout of a video": ("--source {clip} --read-timeout 2",
                                "--read-timeout applies to cameras, streams and GStreamer pipelines only"),
    "seed of a folder": ("--source {dir}/ --seed 3", "--seed applies to the synthetic camera only"),
    "width of two named cameras": ("--source a={clip} --source b={clip} --width 640",  # names kept (H47 of s42)
                                   "--width applies to cameras and the synthetic camera only, not to --source "
                                   "a={clip}, b="),
    "a key of the config file": ("--config {dir}/node.yaml --source {clip}",
                                 "width in {dir}/node.yaml applies to cameras and the synthetic camera only"),
}


@pytest.mark.parametrize("name", list(UNUSED))
def test_a_source_setting_the_source_does_not_use_is_one_line_before_the_model_loads(name, clip, tmp_path,
                                                                                     tiny_model_path, monkeypatch,
                                                                                     capsys):
    import perception.commands.run as run_command

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the settings were checked")

    monkeypatch.setattr(run_command, "EngineLoader", no_loading)
    cv2.imwrite(str(tmp_path / "0.png"), np.zeros((H, W), np.uint8))
    (tmp_path / "node.yaml").write_text("width: 640\n")
    flags, message = (text.format(clip=clip, dir=tmp_path) for text in UNUSED[name])
    code = cli_main(["run", "--model", str(tiny_model_path), *flags.split()])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"perception: error: {message}"), lines[0]


@pytest.mark.parametrize("settings", [
    {"source": ["front=/dev/video0", "rear=clip.avi"], "width": 1280, "fourcc": "MJPG"},  # for the camera
    {"source": ["front=synthetic", "rear=clip.avi"], "seed": 4, "loop": True, "height": 96},
    {"source": "clip.avi", "fps": 10, "realtime": True, "loop": True},
    {"source": "http://cam.local/clip.mp4", "loop": True, "read_timeout_s": 2, "fps": 5},
    {"source": "/dev/video0", "width": 640, "height": 480, "fps": 30, "fourcc": "YUYV", "read_timeout_s": 1},
    {"source": "synthetic", "width": 96, "height": 64, "fps": 12, "seed": 9},
])
def test_settings_some_source_of_the_node_uses_are_taken(settings):
    from perception.commands.run import check_source_settings
    from perception.run_config import RunConfig

    check_source_settings(RunConfig.from_settings(**settings))  # no ConfigError


def test_a_gstreamer_pipeline_sets_its_own_rate():
    from perception.commands.run import check_source_settings
    from perception.run_config import RunConfig

    config = RunConfig.from_settings(source="videotestsrc ! videoconvert ! appsink", fps=15)
    with pytest.raises(ConfigError, match=r"^--fps applies to cameras, the synthetic camera, files and streams only"):
        check_source_settings(config)


def test_a_file_named_like_a_pipeline_is_a_file_for_the_settings_too(tmp_path, monkeypatch):
    from perception.sources import _source_family

    monkeypatch.chdir(tmp_path)
    (tmp_path / "appsink").write_bytes(b"")
    assert _source_family("appsink") == "file" == {"video": "file"}[source_kind("appsink")]


# ---- 2 and 3: --loop at a video's real end; each skipped file or frame once per run -----------------


def write_overstated_avi(path: Path, n: int, states: int) -> Path:
    """An MJPG AVI of ``n`` frames (grey 6 * i) whose headers state ``states`` frames."""
    data, _ = write_numbered_avi(path, n)
    header = bytearray(data)
    struct.pack_into("<I", header, header.find(b"avih") + 8 + 16, states)  # dwTotalFrames
    struct.pack_into("<I", header, header.find(b"strh") + 8 + 32, states)  # the stream's dwLength
    path.write_bytes(bytes(header))
    return path


def greys(frames) -> list[int]:
    return [round(float(f.image.mean()) / 6) for f in frames]


def test_a_video_that_overstates_its_count_loops_at_its_real_end(tmp_path, caplog):
    video = write_overstated_avi(tmp_path / "over.avi", 12, 100_000)
    source = open_source(str(video), loop=True)
    assert source.frame_count == 100_000
    frames = read_n(source, 40)
    source.close()
    assert greys(frames) == [i % 12 for i in range(40)] and [f.seq for f in frames] == list(range(40))
    # One note, counted once, not again on each pass: FFmpeg read the file to its last byte, so it
    # ends there, as a file cut short does (s35 N3; a tail damaged past recovery: test_video_cut_short).
    assert source.corrupt == 100_000 - 12 and source.real_end == 12
    assert source.skipped == ["frames 12-99999 of 100000 missing: the file ends after 12 of the 100000 frames its "
                              "container states (cut off, or frames lost to damage earlier in the file)"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "the file ends after 12 of the 100000 frames" in warnings[0]


def test_the_node_loops_a_video_that_overstates_its_count(tmp_path, tiny_model_path, free_tcp_port, capsys):
    """h1 F6.8: it published the 60 frames, then ended with exit 2 and 'capture failed'."""
    video = write_overstated_avi(tmp_path / "over.avi", 12, 100_000)
    code, final, err = run_node(["--model", str(tiny_model_path), "--source", str(video), "--loop", "--max-frames",
                                 "30", "--threads", "1", "--warmup", "0", "--endpoint",
                                 f"tcp://127.0.0.1:{free_tcp_port}"], capsys)
    assert code == 0, err
    assert final["end_reason"] == "max frames reached" and final["published"] == 30 and final["balanced"]
    assert final["corrupt"] == 100_000 - 12 and len(final["source_skipped"]) == 1
    # Without --loop, the file ends there too (s35 N3: read to its last byte, it is not damage).
    code, final, err = run_node(["--model", str(tiny_model_path), "--source", str(video), "--threads", "1",
                                 "--warmup", "0", "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"], capsys)
    assert code == 0 and final["end_reason"] == "end of input" and final["published"] == 12, err
    assert final["source_skipped"] == ["frames 12-99999 of 100000 missing: the file ends after 12 of the 100000 "
                                       "frames its container states (cut off, or frames lost to damage earlier in "
                                       "the file)"]


def test_a_cut_off_video_loops_at_its_end_and_counts_the_missing_frames_once(tmp_path):
    data, chunks = write_numbered_avi(tmp_path / "whole.avi", 20)
    (tmp_path / "cut.avi").write_bytes(data[: chunks[15]])  # the header still states 20 frames
    source = open_source(str(tmp_path / "cut.avi"), loop=True)
    frames = read_n(source, 50)
    source.close()
    assert greys(frames) == [i % 15 for i in range(50)]
    assert source.corrupt == 5 and len(source.skipped) == 1 and source.skipped[0].startswith("frames 15-19 of 20 missing")


def test_damaged_frames_of_a_looped_video_are_counted_and_named_once(tmp_path):
    video = write_damaged_avi(tmp_path / "damaged.avi", 20, range(5, 8))
    source = open_source(str(video), loop=True)
    frames = read_n(source, 17 * 3)  # three passes of the 17 good frames
    source.close()
    assert len(frames) == 51 and source.corrupt == 3
    assert source.skipped == [f"frame {i} of 20 cannot be read" for i in (5, 6, 7)]


def test_a_looped_clip_behind_a_url_counts_its_missing_end_once():
    from test_sources import FakeClip

    from perception.sources import SourceOptions
    from perception.sources.stream import StreamSource

    class ShortClip(FakeClip):  # states 6 frames, holds 3, also when reopened
        def grab(self):
            return self.pos < 3 and super().grab()

    captures = [ShortClip(6) for _ in range(12)]

    class Fake(StreamSource):
        reconnect_options = {"initial_s": 0.001}

        def _capture(self, params):
            return captures.pop(0)

    source = Fake("http://cam.local/clip.avi", SourceOptions(read_timeout_s=1.0, loop=True))
    frames = read_n(source, 9)  # three passes
    source.close()
    assert [round(float(f.image.mean()) / 10) for f in frames] == [0, 1, 2] * 3
    assert source.corrupt == 3 and source.skipped == [
        "frames 3-5 of 6 missing: the stream ended after 3 of the 6 frames it states, also when reopened"]


@pytest.fixture
def folder_with_a_bad_file(tmp_path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (0, 2):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((H, W), 50 + 50 * i, np.uint8))
    (folder / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return folder


def test_a_skipped_image_is_counted_named_and_warned_about_once_per_run(folder_with_a_bad_file, caplog):
    """h1 F6.9: 20 entries of source_skipped, alternating the same two names."""
    source = open_source(str(folder_with_a_bad_file), loop=True)
    frames = read_n(source, 10)
    source.close()
    assert [int(f.image[0, 0, 0]) for f in frames] == [50, 150] * 5
    assert source.corrupt == 1 and source.skipped == [f"{str(folder_with_a_bad_file / '001.png')!r} cannot be decoded"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "001.png' cannot be decoded (1 skipped so far)" in warnings[0]


def test_the_node_counts_a_skipped_image_of_a_looped_folder_once(folder_with_a_bad_file, tiny_model_path,
                                                                 free_tcp_port, capsys):
    code, final, err = run_node(["--model", str(tiny_model_path), "--source", str(folder_with_a_bad_file), "--loop",
                                 "--max-frames", "12", "--threads", "1", "--warmup", "0", "--endpoint",
                                 f"tcp://127.0.0.1:{free_tcp_port}"], capsys)
    assert code == 0, err
    assert final["published"] == 12 and final["corrupt"] == final["source_corrupt"] == 1
    assert final["frames_in"] == 13 and final["balanced"] and len(final["source_skipped"]) == 1


def test_a_looped_folder_with_no_readable_image_ends_after_one_pass(tmp_path, tiny_model_path, free_tcp_port, capsys):
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"not an image")
    source = open_source(str(tmp_path), loop=True)
    assert source.read() is None and source.corrupt == 2
    code, final, err = run_node(["--model", str(tiny_model_path), "--source", str(tmp_path), "--loop", "--threads",
                                 "1", "--warmup", "0", "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"], capsys)
    assert code == 2 and final["corrupt"] == 2 and final["frames_in"] == 2
    assert err[-1].startswith(f"perception: error: images {tmp_path} (2 files) ended without one readable frame "
                              "(2 unreadable)"), err


def test_a_folder_whose_images_are_gone_on_a_later_pass_ends_with_a_warning(tmp_path, caplog):
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((H, W), 10 * i, np.uint8))
    source = open_source(str(tmp_path), loop=True)
    assert len(read_n(source, 2)) == 2
    for i in range(2):
        (tmp_path / f"{i}.png").unlink()
    assert source.read() is None and source.corrupt == 2
    assert any("no file could be read in a whole pass of --loop; the input ends" in r.getMessage()
               for r in caplog.records)


# ---- 4. one decoded image: a cap on bytes, whatever its depth -------------------------------------------


def png_header(width: int, height: int, depth: int, colour: int = 2) -> bytes:
    """A PNG that states ``width`` x ``height`` at ``depth`` bits (no pixel data: never decoded)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + chunk + end


def test_the_decoded_size_is_read_from_the_header_of_every_deep_format(tmp_path):
    rgb16 = np.full((H, W, 3), 1000, np.uint16)
    files = {
        "c16.png": (rgb16, 2), "g16.png": (rgb16[..., 0], 2), "c8.png": (rgb16.astype(np.uint8), 1),
        "c16.tif": (rgb16, 2), "f32.tif": (rgb16.astype(np.float32), 4), "c8.tif": (rgb16.astype(np.uint8), 1),
        "g16.pgm": (rgb16[..., 0], 2), "c16.ppm": (rgb16, 2), "c8.ppm": (rgb16.astype(np.uint8), 1),
        "f.pfm": (rgb16.astype(np.float32), 4), "f.hdr": (rgb16.astype(np.float32), 4),
    }
    for name, (image, _) in files.items():
        assert cv2.imwrite(str(tmp_path / name), image), name
    for name, (_, depth) in files.items():
        assert image_source.decoded_size(tmp_path / name) == (W, H, depth), name
        decoded = cv2.imread(str(tmp_path / name), image_source.IMREAD_FLAGS)
        assert decoded.shape == (H, W, 3) and decoded.itemsize == depth, name  # what the cap is computed for
    assert cv2.imwrite(str(tmp_path / "c.jpg"), rgb16.astype(np.uint8))
    assert image_source.decoded_size(tmp_path / "c.jpg") is None  # 8 bits only: decoded at 8 bits


def test_a_16_bit_image_over_the_byte_cap_is_skipped_before_it_is_decoded(tmp_path, monkeypatch):
    """h1 F6.7: a 16-bit 8000 x 8000 PNG (a 390 KB file) was decoded: 384 MB, where 200 MB was promised."""
    (tmp_path / "0.png").write_bytes(png_header(6000, 6000, 16))  # 216 MB at 16 bits; 108 MB at 8
    cv2.imwrite(str(tmp_path / "1.png"), np.full((H, W), 7 * 257, np.uint16))
    from perception import cvpath

    decoded = []
    real_imread = cvpath.imread  # every image decode goes through it (s38: any file name)
    monkeypatch.setattr(cvpath, "imread", lambda path, flags: decoded.append(Path(path).name) or real_imread(path, flags))
    source = open_source(str(tmp_path))
    frames = read_n(source, 5)
    assert [int(f.image[0, 0, 0]) for f in frames] == [7]  # a 16-bit image within the cap reads as before
    assert decoded == ["1.png"] and source.corrupt == 1
    assert source.skipped == [f"{str(tmp_path / '0.png')!r} is 6000 wide x 6000 high at 16 bits a sample: decoded it "
                              "would take 216 MB, more than the 201 MB one frame may take (8192 x 8192 pixels at 8 "
                              "bits); resize it or convert it to 8 bits for the node"]


def test_the_cap_counts_bytes_so_a_16_bit_image_may_have_half_the_pixels(tmp_path, monkeypatch):
    monkeypatch.setattr(image_source, "MAX_FRAME_BYTES", H * W * 3)  # one 8-bit frame of this size
    cv2.imwrite(str(tmp_path / "a8.png"), np.full((H, W), 30, np.uint8))
    cv2.imwrite(str(tmp_path / "b16.png"), np.full((H, W), 30 * 257, np.uint16))
    cv2.imwrite(str(tmp_path / "c16.png"), np.full((H // 2, W), 30 * 257, np.uint16))
    source = open_source(str(tmp_path))
    frames = read_n(source, 5)
    assert [f.image.shape for f in frames] == [(H, W, 3), (H // 2, W, 3)]
    assert source.corrupt == 1 and "b16.png' is 64 wide x 48 high at 16 bits a sample" in source.skipped[0]


# ---- 5. a flag's value as typed -------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "echo"), [
    (["run", "--duration", "1e400"], "(--duration 1e400)"),
    (["run", "--duration=1E400"], "(--duration 1E400)"),
    (["run", "--fps", "0.010"], "(--fps 0.010)"),
    (["listen", "--duration", "1e400"], "(--duration 1e400)"),
])
def test_a_refused_number_is_echoed_as_typed(argv, echo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(echo), lines


def test_a_float_flag_gives_the_config_a_plain_float():
    import argparse

    from perception.flags import TypedFloat, add_flags, config_from_flags
    from perception.run_config import RunConfig

    parser = argparse.ArgumentParser()
    add_flags(parser, RunConfig)
    args = parser.parse_args(["--duration", "2.50", "--fps", "1e1"])
    assert isinstance(args.duration_s, TypedFloat) and args.duration_s.typed == "2.50"
    config = config_from_flags(RunConfig, args, source="perception run")
    assert type(config.duration_s) is float and config.duration_s == 2.5
    assert type(config.source_options.fps) is float and config.source_options.fps == 10.0


# ---- 6. a source that cannot be looked at is named by what its name says --------------------------------


def test_a_source_that_is_not_there_is_named_by_its_name(tmp_path, monkeypatch, capsys):
    from perception.sources.base import video_spec_word

    monkeypatch.chdir(tmp_path)
    assert video_spec_word("nowhere/frames") == "source" and video_spec_word("nowhere/clip.mp4") == "video file"
    assert cli_main(["run", "--source", "nowhere"]) == 2
    assert capsys.readouterr().err.strip() == "perception: error: source nowhere not found; check the path"


@pytest.fixture(scope="module")
def closed(tiny_model_path) -> Path:
    """A world-readable folder (pytest's own are closed to other users) holding ``nx``, which only
    its owner (nobody, under root) may enter, with an image folder and a video in it."""
    root = Path(tempfile.mkdtemp(prefix="perception-closed-"))
    root.chmod(0o755)
    (root / "home").mkdir(mode=0o777)
    (root / "home").chmod(0o777)
    shutil.copy(tiny_model_path, root / "model.onnx")
    (root / "nx" / "frames").mkdir(parents=True)
    cv2.imwrite(str(root / "nx" / "frames" / "0.png"), np.zeros((H, W), np.uint8))
    (root / "nx").chmod(0o700)
    if os.geteuid() == 0:
        os.chown(root / "nx", 65534, 65534)
    yield root
    (root / "nx").chmod(0o755)
    shutil.rmtree(root)


@pytest.mark.parametrize(("spec", "message"), [
    ("nx/frames", "source nx/frames cannot be read: permission denied on folder nx"),
    ("nx/frames/", "image folder nx/frames/ cannot be read: permission denied on folder nx"),
    ("nx/clip.avi", "video file nx/clip.avi cannot be read: permission denied on folder nx"),
])
def test_a_source_under_a_folder_this_user_cannot_enter_is_not_called_a_video_file(spec, message, closed,
                                                                                   permission_bound):
    """v1 N3: 'video file outer/inner cannot be read' for an image folder."""
    proc = subprocess.run([*permission_bound, sys.executable, "-m", "perception", "run", "--source", spec, "--model",
                           "model.onnx", "--endpoint", "ipc://home/never-bound"], capture_output=True, text=True,
                          timeout=120, cwd=closed, env={**os.environ, "HOME": str(closed / "home")})
    lines = [line for line in proc.stderr.splitlines() if line.startswith("perception: error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"perception: error: {message}"), lines[0]


# ---- 7. the server's key is checked before CURVE is announced ------------------------------------------


@pytest.mark.parametrize("allow", [True, False])
def test_a_bad_server_key_is_the_one_line_with_no_curve_on_before_it(allow, tmp_path, free_tcp_port, caplog):
    """v1 N7: 'CURVE on: 1 allowed client key from allowed ...', then the error about the key."""
    from perception.curve_keys import create_key_pair
    from perception.xpub import XpubCore

    public, _ = create_key_pair(tmp_path / "keys", "server")
    client, _ = create_key_pair(tmp_path / "keys", "client")
    (tmp_path / "allowed").mkdir()
    shutil.copy(client, tmp_path / "allowed")
    caplog.set_level(logging.INFO)
    with pytest.raises(PublishError, match=r"server secret key file .*server.key has no secret key"):
        XpubCore(f"tcp://127.0.0.1:{free_tcp_port}", sndhwm=4, curve_secret_key_file=str(public),
                 curve_allow_dir=str(tmp_path / "allowed") if allow else None)
    assert not [r.getMessage() for r in caplog.records if "CURVE" in r.getMessage()]


def test_view_refuses_a_source_setting_its_source_does_not_use(tmp_path, capsys):
    from perception.cli import main

    code = main(["view", "--source", str(tmp_path / "clip.mp4"), "--model", str(tmp_path / "m.onnx"), "--width", "640"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "--width applies to cameras and the synthetic camera only, not to --source" in err[0], err
