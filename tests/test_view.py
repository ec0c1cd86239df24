"""The overlay renderer and ``perception view`` (model mode to MP4, node mode paired by seq to PNGs)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from loopback_ports import free_endpoint
from tiny_models import write_brightness_model

from perception.contracts import ClassInfo, ClassTable
from perception.overlay import TASK_TINTS_BGR, render_overlay
from perception.publish import MaskPublisher
from perception.sources import SourceOptions, open_source
from perception.synthetic.classes import SYNTHETIC_CLASSES
from perception.view import ViewConfig, run_view

REPO = Path(__file__).resolve().parents[1]
TABLE = ClassTable(classes=(ClassInfo(0, "road", (128, 64, 128)), ClassInfo(1, "car", (0, 0, 142))))


def test_render_overlay_paints_class_colours_and_legend():
    image = np.full((8, 10, 3), 100, np.uint8)
    class_map = np.zeros((8, 10), np.uint8)
    class_map[:, 5:] = 1
    class_map[0, 0] = 200  # not in the table: left as the camera saw it
    out = render_overlay(image, class_map, TABLE, alpha=1.0, legend=False)
    assert out.shape == image.shape
    assert tuple(out[4, 2]) == (128, 64, 128)[::-1]  # table colours are RGB, images BGR
    assert tuple(out[4, 7]) == (142, 0, 0)
    assert tuple(out[0, 0]) == (100, 100, 100)
    half = render_overlay(image, class_map, TABLE, alpha=0.5, legend=False)
    assert abs(int(half[4, 7, 0]) - (100 + 142) // 2) <= 1
    with_legend = render_overlay(image, class_map, TABLE, alpha=1.0)
    assert with_legend.shape[1] > 10 and with_legend.shape[0] >= 2 * 16
    np.testing.assert_array_equal(with_legend[:8, :10], out)
    assert image.max() == 100  # the input is not modified


def test_render_overlay_maps_model_sized_maps_and_tints_tasks():
    image = np.zeros((40, 80, 3), np.uint8)
    class_map = np.ones((20, 20), np.uint8)  # a square model input: letterboxed, padding rows top/bottom
    out = render_overlay(image, class_map, TABLE, alpha=1.0, legend=False)
    assert (out == (142, 0, 0)).all()
    lane = np.zeros((40, 80), np.uint8)
    lane[10:20, :] = 255
    tinted = render_overlay(image, None, None, task_masks={"lane": lane}, alpha=1.0, legend=False)
    assert tuple(tinted[15, 3]) == TASK_TINTS_BGR["lane"] and tuple(tinted[30, 3]) == (0, 0, 0)
    with pytest.raises(ValueError, match="class table"):
        render_overlay(image, class_map, None)


def test_render_overlay_blends_only_painted_pixels_exactly():
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    class_map = rng.integers(0, 4, (48, 64), dtype=np.uint8)  # 2 and 3: not in the table, left unpainted
    lane = np.where(rng.random((48, 64)) < 0.2, 255, 0).astype(np.uint8)
    out = render_overlay(image, class_map, TABLE, task_masks={"lane": lane}, alpha=0.3, legend=False)
    # Each painted pixel is the image and its colour blended (the lane tint over the class colour).
    colour = np.zeros_like(image)
    colour[class_map == 0], colour[class_map == 1] = (128, 64, 128)[::-1], (0, 0, 142)[::-1]
    colour[lane > 0] = TASK_TINTS_BGR["lane"]
    painted = (class_map < 2) | (lane > 0)
    expected = np.where(painted[..., None], cv2.addWeighted(image, 0.7, colour, 0.3, 0.0), image)
    np.testing.assert_array_equal(out, expected)


def test_render_overlay_of_a_large_frame_takes_no_boolean_index_copies():
    # 4096 x 4096 frames made view peak at 780 MB: render_overlay took about 8 frames of temporaries
    # (copies of the image, and boolean indexing's int64 index arrays). Now under 3.5 frames, output included.
    import tracemalloc

    image = np.full((2048, 2048, 3), 90, np.uint8)
    class_map = np.zeros((512, 512), np.uint8)
    class_map[:, 256:] = 1
    class_map[:100] = 9  # not in the table
    tasks = {name: np.full((2048, 2048), 255, np.uint8) for name in ("drivable", "lane", "obstacle")}
    for args, extra in (((class_map, TABLE), {}), ((None, None), {"task_masks": tasks})):
        tracemalloc.start()
        try:
            out = render_overlay(image, *args, alpha=0.5, caption="seq 1", **extra)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert out.shape[0] == 2048 and peak < 3.5 * image.nbytes, (peak / image.nbytes, args[0] is None)
        del out


def test_view_cli_runs_a_model_into_an_mp4(tmp_path):
    model = write_brightness_model(tmp_path / "tiny.onnx", (32, 48))
    out = tmp_path / "view.mp4"
    done = subprocess.run(
        [sys.executable, "-m", "perception", "view", "--source", "synthetic", "--model", str(model),
         "--width", "96", "--height", "64", "--fps", "30", "--max-frames", "6", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    cap = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 6
    assert frames[0].shape[0] >= 64 and frames[0].shape[1] > 96  # the legend panel beside the image


def test_view_of_a_node_pairs_masks_with_frames_by_seq(tmp_path):
    """Masks from a publisher, drawn over the synthetic frame with the same seq (same seed)."""
    endpoint = free_endpoint()
    model = write_brightness_model(tmp_path / "tiny.onnx", (32, 48))
    config = ViewConfig(endpoint=endpoint, namespace="perception/v", source="synthetic", model=model,
                        source_options=SourceOptions(seed=3, width=96, height=64), out=tmp_path / "frames",
                        max_frames=3, alpha=0.5)
    source = open_source("synthetic", width=96, height=64, seed=3)
    source.pace(None)
    frames = [source.read().image for _ in range(40)]
    source.close()
    maps = {seq: np.random.default_rng(seq).integers(0, 11, (64, 96), dtype=np.uint8) for seq in range(40)}
    result = {}
    viewer = threading.Thread(target=lambda: result.update(n=run_view(config)))
    viewer.start()
    pub = MaskPublisher(endpoint=endpoint, namespace="perception/v", sndhwm=1000)
    try:
        seq = 0
        deadline = time.monotonic() + 30
        while viewer.is_alive() and seq < 40 and time.monotonic() < deadline:
            pub.publish_masks(seq=seq, capture_ns=time.time_ns(), frame_id="v", masks={"class_map": maps[seq]},
                              latency_ms={}, model_id="tiny")
            seq += 1
            viewer.join(timeout=0.05)  # a frame interval; the loop ends as soon as the viewer is done
    finally:
        viewer.join(timeout=10)
        pub.close()
    assert result["n"] == 3
    written = sorted((tmp_path / "frames").glob("view_*.png"))
    assert len(written) == 3
    first = cv2.imread(str(written[0]))
    # Whatever seq the viewer saw first, its picture is that seq's frame under that seq's map
    # (compared above the caption line).
    matches = [s for s in range(40) if np.array_equal(
        first[:40, :96], render_overlay(frames[s], maps[s], SYNTHETIC_CLASSES, alpha=0.5, legend=False)[:40, :96])]
    assert len(matches) == 1
    # ... and not the same map over a neighbouring frame.
    s = matches[0]
    other = frames[s + 1] if s + 1 < 40 else frames[s - 1]
    assert not np.array_equal(
        first[:40, :96], render_overlay(other, maps[s], SYNTHETIC_CLASSES, alpha=0.5, legend=False)[:40, :96])


def test_view_cli_that_renders_nothing_says_why_and_fails(tmp_path):
    # One undecodable image: the source delivers no frame, so --out gets nothing.
    model = write_brightness_model(tmp_path / "tiny.onnx", (32, 48))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    out = tmp_path / "view.png"
    done = subprocess.run(
        [sys.executable, "-m", "perception", "view", "--source", str(tmp_path / "broken.png"), "--model", str(model),
         "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "rendered 0" not in done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("perception: error:")]
    assert len(errors) == 1, done.stderr
    assert f"nothing rendered, so nothing written to {out}" in errors[0]
    assert "broken.png" in errors[0] and "delivered no frames (1 corrupt)" in errors[0]
    assert not out.exists()


def _free_endpoint() -> str:
    return free_endpoint()


def test_view_of_a_silent_node_to_a_file_fails_naming_the_endpoint(tmp_path):
    from perception.errors import SourceUnavailableError

    endpoint = _free_endpoint()
    config = ViewConfig(endpoint=endpoint, namespace="perception/quiet", out=tmp_path / "new" / "frames", duration_s=0.3)
    # Exit 4, as listen and record (hunt 5d finding 2: it was 2, a bad input).
    with pytest.raises(SourceUnavailableError, match=rf"nothing rendered, so nothing written to .*frames: no masks received "
                                                     rf"from {endpoint} under perception/quiet in 0.3 s; is the node running"):
        run_view(config)
    assert list(tmp_path.iterdir()) == []  # nor the folders made for --out (hunt 5d finding 11)


def test_view_cli_of_no_node_exits_4_in_one_line(tmp_path):
    endpoint = _free_endpoint()
    done = subprocess.run(
        [sys.executable, "-m", "perception", "view", "--endpoint", endpoint, "--namespace", "perception/front",
         "--duration", "0.3", "--out", str(tmp_path / "v.png")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 4, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("perception: error:")]
    assert len(errors) == 1 and f"no masks received from {endpoint} under perception/front" in errors[0], done.stderr
    assert not (tmp_path / "v.png").exists()


def test_view_writes_the_video_at_the_sources_own_rate(tmp_path):
    """Hunt 5d finding 7: the video was 10 fps whatever the source (a 30 fps clip played 3x slow)."""
    model = write_brightness_model(tmp_path / "tiny.onnx", (32, 48))
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25, (96, 64))
    for i in range(4):
        writer.write(np.full((64, 96, 3), 40 * i, np.uint8))
    writer.release()

    def rate(out: Path) -> float:
        cap = cv2.VideoCapture(str(out))
        try:
            return cap.get(cv2.CAP_PROP_FPS)
        finally:
            cap.release()

    for source, extra, expected in ((str(clip), [], 25.0),  # a file's native rate
                                    ("synthetic", ["--width", "96", "--height", "64", "--max-frames", "2"], 30.0),
                                    (str(clip), ["--fps", "12"], 12.0)):  # --fps wins
        out = tmp_path / f"v{expected:g}.mp4"
        run_view(_config(source=source, model=model, out=out, extra=extra))
        assert rate(out) == pytest.approx(expected, abs=0.01), (source, extra)


def _config(*, source: str, model: Path, out: Path, extra: list[str]) -> ViewConfig:
    import argparse

    from perception.commands.view import add_arguments
    from perception.flags import config_from_flags

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--source", source, "--model", str(model), "--out", str(out), *extra])
    return config_from_flags(ViewConfig, args, source="perception view")


def test_view_zero_limits_are_no_limit_and_the_default_out_is_named(tmp_path):
    """Hunt 5d finding 8: '--duration 0' and '--max-frames 0' were errors (run takes them as no
    limit); and with no display and no --out, the closing line did not name out/view.mp4."""
    model = write_brightness_model(tmp_path / "tiny.onnx", (32, 48))
    image = tmp_path / "frames"
    image.mkdir()
    for i in range(3):
        cv2.imwrite(str(image / f"{i}.png"), np.full((64, 96, 3), 50 * i, np.uint8))
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    done = subprocess.run(
        [sys.executable, "-m", "perception", "-q", "view", "--source", str(image), "--model", str(model),
         "--duration", "0", "--max-frames", "0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"rendered 3 frame(s) to {Path('out/view.mp4')}", done.stdout
    assert (tmp_path / "out" / "view.mp4").is_file()


def test_view_config_errors():
    from perception.config import load_config
    from perception.errors import ConfigError

    with pytest.raises(ConfigError, match="give --source"):
        load_config(ViewConfig, {}, source="perception view")
    # --source alone runs the shipped default model, as 'perception run' does (s41 F3).
    assert load_config(ViewConfig, {"source": "synthetic"}, source="perception view").model is None
    with pytest.raises(ConfigError, match="--endpoint needs --namespace"):
        load_config(ViewConfig, {"endpoint": "tcp://127.0.0.1:5556"}, source="perception view")


def test_view_takes_one_source_with_or_without_a_camera_name():
    """Hunt 4a finding 9: 'view --source front=v.mp4' (the form of run and launch files) was "not
    found", and a second --source silently replaced the first."""
    from perception.config import load_config
    from perception.errors import ConfigError

    config = load_config(ViewConfig, {"source": "front=clip.mp4", "model": "m.onnx"}, source="perception view")
    assert config.source == "clip.mp4"
    config = load_config(ViewConfig, {"source": ["rear=synthetic"], "model": "m.onnx"}, source="perception view")
    assert config.source == "synthetic"
    with pytest.raises(ConfigError, match=r"--source given 2 times \('a=x.mp4', 'b=y.mp4'\): a view draws one source"):
        load_config(ViewConfig, {"source": ["a=x.mp4", "b=y.mp4"], "model": "m.onnx"}, source="perception view")
    with pytest.raises(ConfigError, match=r"fps=0.5 is outside the synthetic camera's range \(1..240"):
        load_config(ViewConfig, {"source": "synthetic", "model": "m.onnx", "fps": 0.5}, source="perception view")
    # the same check, named by flag, when the synthetic images are drawn under a node's masks
    with pytest.raises(ConfigError, match=r"width=8000 height=180 is outside the synthetic camera's range"):
        load_config(ViewConfig, {"source": "synthetic", "endpoint": "tcp://127.0.0.1:5999", "namespace": "perception/front",
                                 "width": 8000, "height": 180}, source="perception view")
