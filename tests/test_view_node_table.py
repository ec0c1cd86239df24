"""``perception view`` as a user sees it (hunt 6e findings 1.2, 1.6, 1.8, 1.10): a node's masks in the
node's own class colours, an earlier output replaced whole or refused, CURVE nodes, and the
figures and drawing of small and changing frames."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from tiny_models import write_brightness_model

from perception import contracts, view_node
from perception.contracts import ClassInfo, ClassTable
from perception.errors import ConfigError, SourceUnavailableError
from perception.overlay import TASK_TINTS_BGR, render_overlay
from perception.publish import MaskPublisher
from perception.sinks import FrameSink
from perception.synthetic.classes import SYNTHETIC_CLASSES
from perception.view import ViewConfig, run_view

NS = "perception/v"
# A CamVid-like node table: its ids mean other things than the synthetic table of the tiny model.
NODE_TABLE = ClassTable(classes=(ClassInfo(0, "Sky", (128, 128, 128)), ClassInfo(1, "Building", (128, 0, 0)),
                                 ClassInfo(2, "Road", (10, 200, 30))))
NODE_MODEL = "camvid-test-24x32"
H, W = 24, 32


def _info(table: ClassTable = NODE_TABLE, model_id: str = NODE_MODEL) -> dict:
    return {"wire_version": contracts.WIRE_VERSION, "frame_id": "v", "model_id": model_id, "unknown_id": 255,
            "classes": [{"id": c.id, "name": c.name, "color_rgb": list(c.color)} for c in table.classes]}


def _class_map(seq: int) -> np.ndarray:
    ids = np.zeros((H, W), np.uint8)  # Sky on the left, Building in the middle, Road on the right
    ids[:, 10:20] = 1
    ids[:, 20:] = 2
    ids[0, 0] = seq % 3  # one pixel tells the seqs apart
    return ids


def _tasks() -> dict[str, np.ndarray]:
    lane = np.zeros((H, W), np.uint8)
    lane[:, :8] = 255
    return {"drivable": np.zeros((H, W), np.uint8), "lane": lane, "obstacle": np.zeros((H, W), np.uint8)}


def start_view(config: ViewConfig) -> tuple[threading.Thread, dict]:
    """``run_view(config)`` started in a thread; its result dict gets ``n`` (frames rendered) or
    ``error`` (the exception raised)."""
    result: dict = {}

    def target():
        try:
            result["n"] = run_view(config)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    viewer = threading.Thread(target=target)
    viewer.start()
    return viewer, result


def _serve(config: ViewConfig, *, info: dict | None, tasks: bool = False, publisher_kwargs: dict | None = None,
           seconds: float = 20.0):
    """Run the view in a thread while a publisher sends class maps (and the task masks); returns
    (frames rendered or the exception raised, the seqs published)."""
    pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, sndhwm=1000, **(publisher_kwargs or {}))
    config.endpoint = pub.endpoint
    viewer, result = start_view(config)
    try:
        if info is not None:
            pub.set_info(info)
        seq = 0
        deadline = time.monotonic() + seconds
        while viewer.is_alive() and time.monotonic() < deadline:
            masks = {**(_tasks() if tasks else {}), "class_map": _class_map(seq)}
            pub.publish_masks(seq=seq, capture_ns=time.time_ns(), frame_id="v", masks=masks, latency_ms={},
                              model_id=NODE_MODEL)
            seq += 1
            viewer.join(timeout=0.04)
    finally:
        viewer.join(timeout=20)
        pub.close()
    return result.get("error", result.get("n")), seq


def _written(folder: Path) -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in sorted(folder.glob("view_*.png"))]


def _drawn_with(frame: np.ndarray, table, seqs: int) -> bool:
    """Whether ``frame`` is one of the published class maps drawn with ``table`` (caption and legend too)."""
    dark = np.zeros((H, W, 3), np.uint8)
    return any(np.array_equal(frame, render_overlay(dark, _class_map(s), table, alpha=1.0, caption=f"seq {s}  {NODE_MODEL}"))
               for s in range(seqs))


def test_a_nodes_masks_get_the_nodes_colours_and_legend_not_the_models(tmp_path, caplog):
    """Finding 1.2: --model's (synthetic) table coloured a CamVid node's class ids, with no word."""
    model = write_brightness_model(tmp_path / "tiny.onnx", (32, 48))
    config = ViewConfig(endpoint="tcp://127.0.0.1:1", namespace=NS, model=model, out=tmp_path / "frames",
                        max_frames=3, alpha=1.0)
    with caplog.at_level(logging.INFO, logger="perception.view"):
        n, seqs = _serve(config, info=_info())
    assert n == 3
    frames = _written(tmp_path / "frames")
    assert len(frames) == 3
    for frame in frames:
        assert _drawn_with(frame, NODE_TABLE, seqs)
        assert not _drawn_with(frame, SYNTHETIC_CLASSES, seqs)
        assert tuple(frame[12, 15]) == (0, 0, 128)  # Building's RGB (128, 0, 0) as BGR
        assert tuple(frame[12, 25]) == (30, 200, 10)  # Road
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # said once, not per frame
    assert f"the node runs {NODE_MODEL}" in warnings[0] and "drawing with the node's" in warnings[0]
    assert str(model) in warnings[0]


def test_without_model_the_node_table_colours_the_class_map(tmp_path, caplog):
    config = ViewConfig(endpoint="tcp://127.0.0.1:1", namespace=NS, out=tmp_path / "frames", max_frames=2, alpha=1.0)
    with caplog.at_level(logging.WARNING):
        n, seqs = _serve(config, info=_info(), tasks=True)
    assert n == 2
    assert all(_drawn_with(frame, NODE_TABLE, seqs) for frame in _written(tmp_path / "frames"))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "perception.view"]


def test_the_same_table_under_model_says_nothing(tmp_path, caplog):
    model = write_brightness_model(tmp_path / "tiny.onnx", (32, 48))
    config = ViewConfig(endpoint="tcp://127.0.0.1:1", namespace=NS, model=model, out=tmp_path / "frames",
                        max_frames=2, alpha=1.0)
    with caplog.at_level(logging.WARNING):
        n, _ = _serve(config, info=_info(SYNTHETIC_CLASSES))
    assert n == 2
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "perception.view"]


@pytest.mark.parametrize("with_model", [True, False])
def test_no_info_says_what_is_drawn_instead(tmp_path, caplog, monkeypatch, with_model):
    monkeypatch.setattr(view_node, "INFO_WAIT_S", 0.3)
    model = write_brightness_model(tmp_path / "tiny.onnx", (32, 48)) if with_model else None
    config = ViewConfig(endpoint="tcp://127.0.0.1:1", namespace=NS, model=model, out=tmp_path / "frames",
                        max_frames=2, alpha=1.0)
    with caplog.at_level(logging.WARNING):
        n, seqs = _serve(config, info=None, tasks=True)
    assert n == 2
    frames = _written(tmp_path / "frames")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "perception.view"]
    assert len(warnings) == 1 and f"no {NS}/info from the node in 0.3 s" in warnings[0], warnings
    if with_model:
        assert f"class table of --model {model}" in warnings[0]
        assert all(_drawn_with(frame, SYNTHETIC_CLASSES, seqs) for frame in frames)
    else:
        assert "as tints" in warnings[0]
        assert all(tuple(frame[5, 3]) == TASK_TINTS_BGR["lane"] for frame in frames)


def _images(folder: Path, count: int, hw: tuple[int, int] = (24, 32)) -> Path:
    folder.mkdir()
    for i in range(count):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((*hw, 3), 20 * i, np.uint8))
    return folder


def test_a_smaller_second_run_into_a_folder_leaves_only_its_frames(tmp_path):
    """Finding 1.6: a 3-frame run into a folder of 8 frames left 1-3 new and 4-8 old."""
    model = write_brightness_model(tmp_path / "tiny.onnx", (32, 48))
    images = _images(tmp_path / "images", 5)
    out = tmp_path / "v"
    assert run_view(ViewConfig(source=str(images), model=model, out=out)) == 5
    assert run_view(ViewConfig(source=str(images), model=model, out=out, max_frames=2)) == 2
    assert sorted(p.name for p in out.iterdir()) == ["view_000001.png", "view_000002.png"]
    # A folder holding anything else is refused and left as it was, --overwrite or not.
    (out / "notes.md").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match=r"--out .*v holds files that are not an earlier view's frames \(.*notes\.md"):
            run_view(ViewConfig(source=str(images), model=model, out=out, overwrite=overwrite))
    assert sorted(p.name for p in out.iterdir()) == ["notes.md", "view_000001.png", "view_000002.png"]


def test_a_view_that_renders_nothing_keeps_the_earlier_frames(tmp_path):
    model = write_brightness_model(tmp_path / "tiny.onnx", (32, 48))
    out = tmp_path / "v"
    assert run_view(ViewConfig(source=str(_images(tmp_path / "images", 2)), model=model, out=out)) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(16))
    with pytest.raises(Exception, match=r"the earlier 2 frame\(s\) there are left as they were"):
        run_view(ViewConfig(source=str(empty), model=model, out=out))
    assert len(list(out.iterdir())) == 2


def test_an_existing_file_is_refused_without_overwrite_and_png_says_it_holds_the_last(tmp_path, capsys):
    from perception.cli import main as cli_main

    model = write_brightness_model(tmp_path / "tiny.onnx", (32, 48))
    images = _images(tmp_path / "images", 4)
    last = tmp_path / "last.png"
    argv = ["view", "--source", str(images), "--model", str(model), "--out", str(last)]
    assert cli_main(argv) == 0
    assert capsys.readouterr().out.strip() == f"rendered 4 frame(s); wrote the last one to {last}"
    before = last.read_bytes()
    # The second run refuses, in one line, before any work; the file is untouched.
    assert cli_main([*argv, "--max-frames", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--out {last} already exists" in err[0] and "--overwrite" in err[0], err
    assert last.read_bytes() == before
    assert cli_main([*argv, "--max-frames", "1", "--overwrite"]) == 0
    assert last.read_bytes() != before  # now the first frame (the darkest), not the fourth
    video = tmp_path / "v.mp4"
    video.write_bytes(b"someone's video")
    assert cli_main(["view", "--source", str(images), "--model", str(model), "--out", str(video)]) == 2
    assert "already exists" in capsys.readouterr().err and video.read_bytes() == b"someone's video"


def test_a_curve_node_is_drawn_with_keys_and_the_error_without_names_curve(tmp_path):
    """Finding 1.8: view had no CURVE options, and its error did not mention CURVE."""
    from perception.curve_keys import create_key_pair

    keys, allow = tmp_path / "keys", tmp_path / "allow"
    allow.mkdir()
    server_public, server_secret = create_key_pair(keys, "server")
    client_public, client_secret = create_key_pair(keys, "client")
    (allow / "client.key").write_bytes(client_public.read_bytes())
    curve = {"curve_secret_key_file": str(server_secret), "curve_allow_dir": str(allow)}
    config = ViewConfig(endpoint="tcp://127.0.0.1:1", namespace=NS, out=tmp_path / "frames", max_frames=2, alpha=1.0,
                        curve_server_key=str(server_public), curve_key=str(client_secret))
    n, seqs = _serve(config, info=_info(), publisher_kwargs=curve)
    assert n == 2 and all(_drawn_with(f, NODE_TABLE, seqs) for f in _written(tmp_path / "frames"))
    plain = ViewConfig(endpoint="tcp://127.0.0.1:1", namespace=NS, out=tmp_path / "plain", duration_s=0.5)
    error, _ = _serve(plain, info=_info(), publisher_kwargs=curve)
    assert isinstance(error, SourceUnavailableError)
    # the subscriber's handshake failure names the cause (a mechanism mismatch, or a bare close,
    # whichever libzmq reports first) when it came in time, else the general hint: all name the flags
    assert "no masks received" in str(error) and "CURVE" in str(error)
    assert "--curve-server-key" in str(error) and "--curve-key" in str(error), str(error)
    assert not (tmp_path / "plain").exists()


def test_curve_keys_need_an_endpoint():
    from perception.config import load_config

    with pytest.raises(ConfigError, match="--curve-server-key / --curve-key are for drawing a node's masks"):
        load_config(ViewConfig, {"source": "synthetic", "model": "m.onnx", "curve_server_key": "s.key",
                                 "curve_key": "c.key_secret"}, source="perception view")


def test_a_video_letterboxes_frames_of_another_size_and_says_so_once(tmp_path, caplog):
    """Finding 1.10: a 40x400 frame among 64x48 ones was squashed into the first frame's size."""
    sink = FrameSink(tmp_path / "v.avi", fps=10)
    with caplog.at_level(logging.WARNING, logger="perception.sinks"):
        sink.write(np.full((48, 64, 3), 200, np.uint8))
        sink.write(np.full((400, 40, 3), 200, np.uint8))  # tall and narrow: bars left and right
        sink.write(np.full((20, 300, 3), 200, np.uint8))  # wide: bars above and below
        sink.close()
    assert len([r for r in caplog.records if "frame sizes change" in r.getMessage()]) == 1
    cap = cv2.VideoCapture(str(tmp_path / "v.avi"))
    frames = [cap.read()[1] for _ in range(3)]
    cap.release()
    tall, wide = frames[1], frames[2]
    assert tall.shape[:2] == (48, 64)
    assert tall[:, :25].max() < 40 and tall[:, -25:].max() < 40 and tall[24, 30:34].min() > 160  # ~5 px wide, centred
    assert wide[:18].max() < 40 and wide[-18:].max() < 40 and wide[24, :].min() > 160  # ~3 rows high, centred


def test_the_caption_hides_nothing_of_a_small_frame(tmp_path):
    """Finding 1.10: on a 48x64 frame the caption bar covered the bottom third."""
    small = np.full((48, 64, 3), 90, np.uint8)
    class_map = np.ones((48, 64), np.uint8)
    bare = render_overlay(small, class_map, SYNTHETIC_CLASSES, legend=False)
    captioned = render_overlay(small, class_map, SYNTHETIC_CLASSES, legend=False, caption="seq 85  litefpn-camvid")
    assert captioned.shape[0] > 48 and captioned.shape[1] == 64  # a strip under the picture
    np.testing.assert_array_equal(captioned[:48], bare)  # every pixel of the image as without a caption
    assert captioned[48:].max() > 150  # the caption text (white, anti-aliased) is there
    with_legend = render_overlay(small, class_map, SYNTHETIC_CLASSES, caption="seq 85")
    np.testing.assert_array_equal(with_legend[:48, :64], bare)
    # A frame large enough keeps the caption on its bottom rows, and its size.
    large = np.full((360, 640, 3), 90, np.uint8)
    on = render_overlay(large, None, None, legend=False, caption="seq 85")
    assert on.shape == large.shape and on[-5:, :20].min() == 0
