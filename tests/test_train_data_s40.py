"""Hunt s40 h29 (your own dataset at scale): a resume on data from which a bad pair was removed
keeps the run's schedule and says what changed; dataset error lines word each cause of an
unreadable file (link loop, link to nothing, empty, cut short, an HTML page, a folder) and escape
odd file names; the start-up label scan reads labels only; ``train -q`` prints no config."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_resume_after_data_error import _train as train_tiny
from test_trainer import write_scenes

from perception import cli
from perception.datasets import open_dataset
from perception.errors import DataError
from perception.training.checkpoint import load_checkpoint
from perception.training.label_stats import SCAN_NOTE_LABELS, LabelStats
from perception.training.trainer import poly_lr_factor


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _train(data_spec: str, out: Path, *extra: str) -> int:
    return train_tiny(data_spec, out, "--set", "log_every=1", *extra)


def _train_records(run_dir: Path) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["lr"] for r in map(json.loads, lines) if r["kind"] == "train"}


def _interrupt_at(monkeypatch, at_step: int) -> None:
    """Ctrl-C during step ``at_step`` (counted from 1): the run stops after it with last.pt."""
    import perception.training.fit as fit_module

    real_step = fit_module.step

    def interrupted_step(run, images, labels):
        if run.step == at_step - 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(run, images, labels)

    monkeypatch.setattr(fit_module, "step", interrupted_step)


def _remove_pairs(root: Path, names: list[str]) -> None:
    for name in names:
        (root / "images" / f"{name}.png").unlink()
        (root / "labels" / f"{name}.png").unlink()


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# --------------------------------------------------------------------------------------------
# M1: a resume after removing a bad pair
# --------------------------------------------------------------------------------------------


def test_an_epochs_run_resumed_on_fewer_samples_keeps_its_schedule_and_says_so(tmp_path, monkeypatch, caplog):
    """The steps were recomputed from the new size without a word: --epochs 2 of 8 samples is 8
    steps; after 2 pairs were removed the resume made it 6, and the poly learning rate jumped."""
    root = tmp_path / "data"
    write_scenes(root / "train", 8)
    write_scenes(root / "val", 2, seed=1)
    spec = f"folder:{root}"
    out = tmp_path / "run"
    _interrupt_at(monkeypatch, 3)
    assert _train(spec, out, "--epochs", "2", "--steps", "0") == 130
    last = out / "last.pt"
    assert load_checkpoint(last).step == 3
    monkeypatch.undo()

    _remove_pairs(root / "train", ["006", "007"])  # what the data-error line says to do: fix the data
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert cli.main(["train", "--resume", str(last)]) == 0
    assert load_checkpoint(last).step == 8  # the run's 8 steps, not 2 epochs of the 6 samples left
    lrs = _train_records(out)
    assert sorted(lrs) == list(range(1, 9))
    for step_number, lr in lrs.items():  # one poly schedule over 8 steps, before and after the resume
        assert lr == pytest.approx(0.01 * poly_lr_factor(step_number - 1, total_steps=8, warmup_steps=0, power=0.9))
    (line,) = [w for w in _warnings(caplog) if "training data has" in w]
    assert "has 6 samples" in line and "started on 8" in line and "schedule of 8 steps" in line
    assert "an epoch is now 3 steps (was 4)" in line and "--steps 6" in line
    assert "the learning rate goes on as it would have" in line


def test_a_resume_with_the_steps_the_warning_names_says_the_learning_rate_jumps(tmp_path, monkeypatch, caplog):
    """Following the hint (--steps for --epochs over the new data) changes the schedule's total: the
    line said "the learning rate goes on as it would have" while it jumped."""
    root = tmp_path / "data"
    write_scenes(root / "train", 8)
    write_scenes(root / "val", 2, seed=1)
    out = tmp_path / "run"
    _interrupt_at(monkeypatch, 3)
    assert _train(f"folder:{root}", out, "--epochs", "2", "--steps", "0") == 130
    monkeypatch.undo()
    _remove_pairs(root / "train", ["006", "007"])
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert cli.main(["train", "--resume", str(out / "last.pt"), "--steps", "6"]) == 0
    (line,) = [w for w in _warnings(caplog) if "training data has" in w]
    assert "schedule of 6 steps" in line and "not the 8 steps the run was set to" in line, line
    assert "as it would have" not in line, line


def test_a_steps_run_resumed_on_fewer_samples_says_the_data_order_changes(tmp_path, monkeypatch, caplog):
    root = tmp_path / "data"
    write_scenes(root / "train", 6)
    write_scenes(root / "val", 2, seed=1)
    out = tmp_path / "run"
    _interrupt_at(monkeypatch, 2)
    assert _train(f"folder:{root}", out, "--steps", "4") == 130
    monkeypatch.undo()
    _remove_pairs(root / "train", ["005"])
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert cli.main(["train", "--resume", str(out / "last.pt")]) == 0
    assert load_checkpoint(out / "last.pt").step == 4
    (line,) = [w for w in _warnings(caplog) if "training data has" in w]
    assert "has 5 samples" in line and "started on 6" in line and "(--steps 4;" in line
    assert "data order" in line


def test_a_resume_on_the_same_data_says_nothing_about_its_size(tmp_path, monkeypatch, caplog):
    root = tmp_path / "data"
    write_scenes(root / "train", 4)
    write_scenes(root / "val", 2, seed=1)
    out = tmp_path / "run"
    _interrupt_at(monkeypatch, 1)
    assert _train(f"folder:{root}", out, "--steps", "2") == 130
    monkeypatch.undo()
    assert load_checkpoint(out / "last.pt").train_state["train_samples"] == 4
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert cli.main(["train", "--resume", str(out / "last.pt")]) == 0
    assert not [w for w in _warnings(caplog) if "training data has" in w]


# --------------------------------------------------------------------------------------------
# M2, M3, L5: what a dataset error line says
# --------------------------------------------------------------------------------------------


@pytest.fixture
def scenes(tmp_path) -> Path:
    return write_scenes(tmp_path / "data", 3)


def _read_all_error(root: Path) -> str:
    with pytest.raises(DataError) as info:
        dataset = open_dataset(f"folder:{root}", split="train")
        for index in range(len(dataset)):
            dataset[index]
    return str(info.value)


def test_a_link_loop_is_named_as_one(scenes):
    image = scenes / "images" / "001.png"
    image.unlink()
    os.symlink(image.name, image)
    line = _read_all_error(scenes)
    assert f"cannot read image {image}: it cannot be reached (" in line and "symbolic links" in line
    assert "point the link at the image file, or remove it and its label" in line
    assert "valid PNG/JPEG" not in line


def test_a_label_link_to_nothing_is_named_as_one(scenes):
    label = scenes / "labels" / "001.png"
    label.unlink()
    os.symlink("/nonexistent/x.png", label)
    assert _read_all_error(scenes).startswith(f"cannot read label {label}: it is a symbolic link to nothing; ")


def test_the_second_link_of_a_loop_is_named_as_a_loop_not_as_an_image_without_label(scenes):
    image = scenes / "images" / "001.png"
    image.unlink()
    os.symlink("loopB.png", image)
    os.symlink(image.name, image.parent / "loopB.png")
    line = _read_all_error(scenes)
    assert line.startswith(f"image {image.parent / 'loopB.png'} cannot be reached (") and "has no label" not in line


def test_an_empty_file_is_named_empty(scenes):
    (scenes / "labels" / "002.png").write_bytes(b"")
    assert "label" in (line := _read_all_error(scenes)) and ": it is empty (0 bytes); " in line


def test_a_cut_png_is_named_cut_short_and_libpng_prints_nothing(scenes, capfd):
    label = scenes / "labels" / "001.png"
    data = label.read_bytes()
    label.write_bytes(data[: len(data) // 2])
    line = _read_all_error(scenes)
    assert line.startswith(f"cannot read label {label}: it is a PNG file cut short ({len(data) // 2} bytes")
    assert "libpng" not in capfd.readouterr().err


def test_a_cut_jpeg_is_named_cut_short(scenes):
    image = scenes / "images" / "001.png"
    ok, jpeg = cv2.imencode(".jpg", cv2.imread(str(image)))
    image.unlink()
    (scenes / "images" / "001.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])
    assert "it is a JPEG file cut short" in _read_all_error(scenes)


def test_an_html_page_saved_as_an_image_is_named_as_one(scenes):
    (scenes / "images" / "001.png").write_text("<!DOCTYPE html><html>404 Not Found</html>\n")
    line = _read_all_error(scenes)
    assert "it is an HTML page, not an image (it starts with '<!DOCTYPE html>" in line


def test_a_folder_with_an_image_name_is_named_as_a_folder(scenes):
    image = scenes / "images" / "001.png"
    image.unlink()
    image.mkdir()
    line = _read_all_error(scenes)
    assert f"{image} is there, but it is a folder, not an image file" in line


def test_odd_file_names_are_escaped_in_the_line(tmp_path):
    root = write_scenes(tmp_path / "data", 2)
    for old, new in ((b"000", b"caf\xe9"), (b"001", b"evil\nperception: ok")):
        for sub in (b"images", b"labels"):
            os.rename(bytes(root / sub.decode()) + b"/" + old + b".png", bytes(root / sub.decode()) + b"/" + new + b".png")
    latin = bytes(root / "images") + b"/caf\xe9.png"
    with open(latin, "wb"):
        pass  # empty: the first pair read fails, naming it
    line = _read_all_error(root)
    assert "\n" not in line and "caf\\xe9.png" in line and "\\udce9" not in line
    (root / "labels" / "evil\nperception: ok.png").unlink()
    with pytest.raises(DataError) as info:
        open_dataset(f"folder:{root}", split="train")
    assert "\n" not in str(info.value) and "evil\\nperception: ok" in str(info.value)


def test_a_label_value_outside_the_table_lists_the_ids_it_takes(scenes):
    cv2.imwrite(str(scenes / "labels" / "001.png"), np.full((48, 64), 50, np.uint8))
    line = _read_all_error(scenes)
    assert "holds value 50, which is not a class id of this dataset (class ids 0..2, ignore id 255)" in line


def test_the_mid_run_line_reads_as_one_sentence(tmp_path, capsys):
    root = tmp_path / "data"
    write_scenes(root / "train", 4)
    write_scenes(root / "val", 2, seed=1)
    bad = root / "val" / "images" / "001.png"
    bad.write_bytes(b"junk")
    assert _train(f"folder:{root}", tmp_path / "run", "--steps", "4", "--set", "val_every=2") == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("perception: error:")]
    assert line.startswith(f"perception: error: cannot read image {bad}: it is text, not an image (it starts with 'junk'); ")
    assert "?;" not in line and "the 2 steps trained are in" in line


# --------------------------------------------------------------------------------------------
# L1, L2
# --------------------------------------------------------------------------------------------


def test_the_label_scan_reads_labels_only_and_says_so_when_long(tmp_path, monkeypatch, caplog):
    import perception.datasets.base as base

    root = write_scenes(tmp_path / "data", SCAN_NOTE_LABELS)
    dataset = open_dataset(f"folder:{root}", split="train")
    decoded = []
    real = base.read_dataset_image
    monkeypatch.setattr(base, "read_dataset_image", lambda path: decoded.append(path) or real(path))
    with caplog.at_level(logging.INFO):
        stats = LabelStats.of(dataset)
    assert decoded == [] and stats.labels == SCAN_NOTE_LABELS
    assert f"reading {SCAN_NOTE_LABELS} of the {SCAN_NOTE_LABELS} labels of folder:{root}" in caplog.text
    # the labels as the pairs give them
    assert all(np.array_equal(dataset.label(i), dataset[i][1]) for i in (0, SCAN_NOTE_LABELS - 1))


def test_train_q_prints_no_resolved_config(tmp_path, capsys):
    root = tmp_path / "data"
    write_scenes(root / "train", 4)
    write_scenes(root / "val", 2, seed=1)
    assert _train(f"folder:{root}", tmp_path / "loud", "--steps", "1") == 0
    assert "resolved config" in capsys.readouterr().out
    assert _train(f"folder:{root}", tmp_path / "quiet", "--steps", "1", "-q") == 0
    out = capsys.readouterr().out
    assert "resolved config" not in out and "done: step 1" in out
