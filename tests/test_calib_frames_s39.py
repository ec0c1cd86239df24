"""INT8 calibration and export verification need no labels, so ``--calib`` and ``--verify-data`` also
take the deployment camera's own frames: a video file or a plain folder of images (before, only a
dataset's ``images/`` + ``labels/`` + ``classes.yaml`` layout, or "unknown dataset kind"). Where
labels are scored (the gate's ``--val-data``, its default ``--calib``), such frames are one line."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from perception.errors import ConfigError
from perception.export.verify import load_samples


@pytest.fixture
def frames(tmp_path):
    folder = tmp_path / "camera"
    folder.mkdir()
    for i in range(12):  # each image its own brightness: which were picked can be told from the samples
        cv2.imwrite(str(folder / f"f{i:02d}.png"), np.full((30, 40, 3), 20 * i, np.uint8))
    return folder


def test_a_folder_of_images_is_calibration_frames_spread_over_it(frames):
    samples, name = load_samples(str(frames), split="train", count=4, input_hw=(24, 32), labels=False, flag="--calib")
    assert name == str(frames)
    assert all(label is None and image.shape == (24, 32, 3) for image, label in samples)
    assert [int(image[12, 16, 0]) for image, _ in samples] == [0, 60, 120, 180]  # every 3rd of 12, not the first 4


def test_a_video_file_is_every_tenth_frame(tmp_path):
    clip = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (40, 30))
    for i in range(25):
        writer.write(np.full((30, 40, 3), 10 * i, np.uint8))
    writer.release()
    samples, _ = load_samples(str(clip), split="train", count=8, input_hw=(30, 40), labels=False, flag="--calib")
    assert [round(float(image.mean()) / 10) for image, _ in samples] == [0, 10, 20]  # frames 0, 10, 20


def test_frames_where_labels_are_scored_are_one_line_with_the_fix(frames):
    with pytest.raises(ConfigError) as refused:
        load_samples(str(frames), split="val", count=4, input_hw=(24, 32), flag="--val-data (default: --calib)",
                     fix="calibration needs no labels, so keep --calib X and add --val-data SPEC")
    assert str(refused.value) == (f"--val-data (default: --calib) {frames}: a video file or image folder has no labels, "
                                  "and these images are scored; calibration needs no labels, so keep --calib X and add "
                                  "--val-data SPEC")


def test_a_missing_file_is_named_with_what_may_be_given(tmp_path):
    with pytest.raises(ConfigError) as refused:
        load_samples(str(tmp_path / "nosuch.mp4"), split="train", count=4, input_hw=(24, 32), labels=False,
                     flag="--calib")
    assert str(refused.value).startswith(f"--calib {tmp_path / 'nosuch.mp4'}: not found; give a video file, an image "
                                         "folder or a dataset spec (camvid:PATH, ")


def test_quantize_calibrates_on_a_folder_and_gates_on_labelled_data(frames, tiny_model_path, tmp_path, monkeypatch,
                                                                     capsys):
    import perception.export.quantize as quantize

    seen = {}

    def calibrating(model, out, images, **kwargs):
        seen["images"] = images
        raise SystemExit(0)  # the calibration itself is quantize_int8's own tests'

    monkeypatch.setattr(quantize, "quantize_int8", calibrating)
    with pytest.raises(SystemExit):
        quantize.main([str(tiny_model_path), "--out", str(tmp_path / "t.int8.onnx"), "--calib", str(frames),
                       "--val-data", "synthetic", "--calib-count", "6", "--val-count", "1"])
    assert len(seen["images"]) == 6 and seen["images"][0].shape == (48, 64, 3)

    monkeypatch.undo()
    assert quantize.main([str(tiny_model_path), "--out", str(tmp_path / "t.int8.onnx"), "--calib", str(frames)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--val-data (default: --calib) " in err and "has no labels" in err, err
    assert not (tmp_path / "t.int8.onnx").exists()
