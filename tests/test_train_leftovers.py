"""Training leftovers of hunt H2 and verify pass V2: a wrong value in a --config file that a flag
replaces is still reported; void training batches are numbered as the log numbers steps; a label
file that cannot be read is called a label."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch
from test_trainer import write_scenes

from perception import cli
from perception.datasets import open_dataset
from perception.errors import ConfigError, DataError
from perception.training.config import load_train_config


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("perception: error:")]


def test_a_wrong_value_in_a_config_file_is_named_though_a_flag_replaces_it(tmp_path, capsys):
    """H2 F7: `steps: "ten"` in the file with --steps 2 trained with exit 0, the file left broken
    for the next run that leaves the flag out."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text('steps: "ten"\nlr: 0.01\n')
    out = tmp_path / "run"
    assert cli.main(["train", "--config", str(recipe), "--steps", "2", "--data", "synthetic", "--out", str(out)]) == 2
    assert _error_lines(capsys) == [
        f"perception: error: {recipe}: steps: expected an integer, got 'ten' (the command line sets steps too and "
        "wins in this run, but the file is wrong: fix it)"
    ]
    assert not out.exists()
    # a --set replacing it, and a value out of range, are named the same way
    recipe.write_text("lr: -1\n")
    with pytest.raises(ConfigError, match=rf"^{recipe}: lr=-1.0 is out of range \[0, 10\] \(the command line sets lr"):
        load_train_config(recipe, {"lr": 0.01})
    # a later --config file that replaces it does not hide it either
    small = tmp_path / "small.yaml"
    small.write_text("lr: 0.02\n")
    with pytest.raises(ConfigError, match=rf"^{recipe}: lr=-1.0 is out of range \[0, 10\] \({small} sets lr too"):
        load_train_config([recipe, small])
    # a right value replaced, and values checked only together with other keys, are not reported
    recipe.write_text("lr: 0.5\ncopy_paste: 0.5\ncopy_paste_classes: [car]\n")
    config = load_train_config(recipe, {"lr": 0.01, "copy_paste": 0.2})
    assert (config.lr, config.copy_paste, config.copy_paste_classes) == (0.01, 0.2, ["car"])
    assert load_train_config(recipe, {"copy_paste": 0.0}).copy_paste == 0.0  # 0.5 alone lacks the classes
    recipe.write_text("mix_share: 0\n")  # alone the default; with this run's mix_data it would not do
    mixed = {"mix_share": 0.3, "mix_data": "synthetic", "mix_classes": {"road": "road"}}
    assert load_train_config(recipe, mixed).mix_share == 0.3


def test_void_batches_are_numbered_as_the_log_numbers_steps(tmp_path, capsys, caplog, monkeypatch):
    """H2 F8: the first void batch was "the batch at step 0" where the log says "step 1/6" for it,
    and the stop said "(to step 2)" for the batches of steps 1-3."""
    import perception.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "MAX_VOID_BATCHES", 3)  # 20 in the product
    root = tmp_path / "void"
    write_scenes(root / "train", 4)
    write_scenes(root / "val", 2, seed=1)
    for label in sorted((root / "train" / "labels").glob("*.png")):
        cv2.imwrite(str(label), np.full((48, 64), 255, np.uint8))
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="perception.training.trainer"):
        assert cli.main(["train", "--model", "segnet_basic", "--data", f"folder:{root}", "--size", "32x48",
                         "--batch-size", "2", "--workers", "0", "--device", "cpu", "--out", str(out), "--steps", "6",
                         "--set", "progress=false", "--set", "torch_threads=1"]) == 2
    said = [r.getMessage() for r in caplog.records if "no labelled pixel" in r.getMessage()]
    # The classes the data never labels are named at the start (s38), then the first void batch.
    assert said[0].startswith("classes road, car, sky have no labelled pixel in the 4 training labels of ")
    assert said[1:] == ["the batch of step 1 has no labelled pixel (every label is the ignore id 255); it teaches nothing"]
    assert _error_lines(capsys) == [
        "perception: error: the last 3 training batches (steps 1-3) had no labelled pixel: every label pixel was the "
        "ignore id 255; check that the labels hold the class table's ids (not colours, not all void); the 2 steps "
        f"trained are in {out / 'last.pt'}: fix the data, then continue with: perception train --resume "
        f"{out / 'last.pt'}"
    ]


def test_a_label_that_cannot_be_read_is_named_as_a_label(tmp_path):
    """V2 N4: a junk label file was reported as "cannot read image .../labels/000.png"."""
    root = write_scenes(tmp_path / "data", 1)
    label = root / "labels" / "000.png"
    label.write_bytes(b"junk")
    dataset = open_dataset(f"folder:{root}", split="train")
    with pytest.raises(DataError) as info:
        dataset[0]
    assert str(info.value) == (f"cannot read label {label}: it is text, not an image (it starts with 'junk'); "
                               "replace it with a good copy, or remove it and its image")
