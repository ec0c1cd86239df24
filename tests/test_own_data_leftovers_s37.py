"""Own labelled folders, the split rules' leftovers (s37/f1): ``--split validation`` on ADE20K's
``images/training/`` + ``images/validation/``, split folders whose names differ in case between
``images/`` and ``labels/``, and a ``val.txt`` without ``train.txt``."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from perception.cli import main as cli_main
from perception.datasets import open_dataset
from perception.errors import DataError
from perception.synthetic import SYNTHETIC_CLASSES

H, W = 48, 64  # the tiny model's input size


def _dataset(root: Path, names: dict[str, str]) -> Path:
    """A folder dataset with the synthetic class table: ``images/<image>.png`` and
    ``labels/<label>.png`` for each ``image: label`` of ``names``."""
    root.mkdir(parents=True)
    (root / "classes.yaml").write_text(yaml.safe_dump(SYNTHETIC_CLASSES.to_dict()), encoding="utf-8")
    for i, (image, label) in enumerate(names.items()):
        for path, array in ((root / "images" / f"{image}.png", np.full((H, W, 3), 20 * i, np.uint8)),
                            (root / "labels" / f"{label}.png", np.full((H, W), i % 11, np.uint8))):
            path.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(path), array)
    return root


def _chosen(root: Path, split: str) -> list[tuple[str, str]]:
    """The (image, label) pairs ``split`` reads, as paths inside ``root``."""
    pairs = open_dataset(f"folder:{root}", split=split).pairs
    return [(image.relative_to(root).as_posix(), label.relative_to(root).as_posix()) for image, label in pairs]


def _case_sensitive(folder: Path) -> bool:
    probe = folder / "case_probe"
    probe.mkdir()
    sensitive = not (folder / "CASE_PROBE").exists()
    probe.rmdir()
    return sensitive


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from tiny_models import write_brightness_model

    return write_brightness_model(tmp_path_factory.mktemp("model") / "tiny.onnx", (H, W))


@pytest.fixture
def ade(tmp_path) -> Path:
    """ADE20K's layout: flat split folders images/training/ + images/validation/, mirrored in labels/."""
    return _dataset(tmp_path / "ade", {"training/a": "training/a", "training/b": "training/b",
                                       "validation/c": "validation/c"})


# ------------------------------------------------------------------------------------------------
# 1. --split by the split folders' names, on ADE20K's layout
# ------------------------------------------------------------------------------------------------

TRAIN = [("images/training/a.png", "labels/training/a.png"), ("images/training/b.png", "labels/training/b.png")]
VAL = [("images/validation/c.png", "labels/validation/c.png")]


@pytest.mark.parametrize(("split", "expected"), [
    *((s, TRAIN) for s in ("train", "training", "Train", "TRAINING")),
    *((s, VAL) for s in ("val", "valid", "validation", "Validation", "VAL")),
])
def test_every_split_name_the_readme_promises_reads_its_split_folder(ade, split, expected):
    """'--split validation' said 'unknown split ... (one folder, no split lists); known: test, train,
    val' although images/validation/ was right there (s37, leftover 1)."""
    assert _chosen(ade, split) == expected


@pytest.mark.parametrize("split", ["test", "testing", "trainval"])
def test_a_split_the_split_folders_lack_names_the_ones_there(ade, split):
    with pytest.raises(DataError, match=re.escape(f"unknown split {split!r} for folder {ade} (no images/{split}/ there); "
                                                  "known: train, val") + "$"):
        open_dataset(f"folder:{ade}", split=split)


def test_split_names_serve_a_flat_folder_and_list_files_too(tmp_path):
    flat = _dataset(tmp_path / "flat", {"a": "a", "b": "b"})
    assert _chosen(flat, "validation") == _chosen(flat, "Testing") == _chosen(flat, "train") == [
        ("images/a.png", "labels/a.png"), ("images/b.png", "labels/b.png")]
    with pytest.raises(DataError, match=re.escape(f"unknown split 'trainval' for folder {flat} (one folder, no split "
                                                  "folders or lists); known: test, train, val") + "$"):
        open_dataset(f"folder:{flat}", split="trainval")
    (flat / "train.txt").write_text("images/a.png labels/a.png\n")
    (flat / "val.txt").write_text("images/b.png labels/b.png\n")
    assert _chosen(flat, "validation") == _chosen(flat, "Val") == [("images/b.png", "labels/b.png")]
    assert _chosen(flat, "training") == [("images/a.png", "labels/a.png")]


def test_eval_split_validation_on_ade_layout_through_the_cli(ade, tiny_model, capsys):
    assert cli_main(["eval", "--model", str(tiny_model), "--data", f"folder:{ade}", "--split", "validation",
                     "--threads", "1"]) == 0
    assert f"{tiny_model} on folder:{ade} (validation, 1 image)" in capsys.readouterr().out
    assert cli_main(["eval", "--model", str(tiny_model), "--data", f"folder:{ade}", "--split", "testing"]) == 2
    assert capsys.readouterr().err == (f"perception: error: unknown split 'testing' for folder {ade} "
                                       "(no images/testing/ there); known: train, val\n")


# ------------------------------------------------------------------------------------------------
# 2. split folder names in any case, between images/ and labels/
# ------------------------------------------------------------------------------------------------


def test_split_folders_pair_by_split_whatever_their_case_or_name(tmp_path):
    """images/Train/ with labels/train/ was refused ('has split folders Train/ ... but labels has
    train/') although the README says the names match in any case (s37, leftover 2)."""
    root = _dataset(tmp_path / "d", {"Train/a": "train/a", "Val/b": "validation/b"})
    assert _chosen(root, "train") == [("images/Train/a.png", "labels/train/a.png")]
    assert _chosen(root, "validation") == [("images/Val/b.png", "labels/validation/b.png")]
    # An image without its label in the paired folder still names the folder it looked in.
    (root / "labels" / "train" / "a.png").rename(root / "labels" / "validation" / "a.png")
    with pytest.raises(DataError, match=re.escape(f"has no label named a.* in {root / 'labels' / 'train'}")):
        open_dataset(f"folder:{root}", split="train")


@pytest.mark.parametrize("side", ["images", "labels"])
def test_two_folders_of_one_split_differing_in_case_are_refused_naming_both(tmp_path, side):
    if not _case_sensitive(tmp_path):
        pytest.skip("this file system folds case: train/ and Train/ are one folder")
    root = _dataset(tmp_path / "d", {"train/a": "train/a", "val/b": "val/b"})
    other = root / side / "Train"
    other.mkdir()
    assert cv2.imwrite(str(other / "c.png"), np.zeros((H, W), np.uint8))
    for split in ("train", "val"):
        with pytest.raises(DataError, match=re.escape(f"{root / side} has 2 folders for split train (Train/, train/): "
                                                      "keep one of them, or list each split's pairs in train.txt and "
                                                      "val.txt") + "$"):
            open_dataset(f"folder:{root}", split=split)


# ------------------------------------------------------------------------------------------------
# 3. val.txt without train.txt
# ------------------------------------------------------------------------------------------------


def _no_train_list(root: Path, lists: str = "val.txt", first: str = "val.txt") -> str:
    return re.escape(f"{root} has {lists} but no train.txt: with list files each split needs its own, as training on "
                     f"every image would train on the {lists} frames; write train.txt (one 'image_path label_path' "
                     f"line per training pair, as in {first}), or remove {lists} to split by the folders") + "$"


@pytest.mark.parametrize("layout", ["flat", "split folders"])
def test_val_list_without_train_list_serves_val_and_refuses_train(tmp_path, layout):
    """Training read every image, the val.txt frame too, so validation scored a frame trained on,
    without a word; --split test served the whole folder (s37, leftover 3)."""
    names = ["train/a", "train/b", "val/c"] if layout == "split folders" else ["a", "b", "c"]
    root = _dataset(tmp_path / "d", {n: n for n in names})
    listed = (f"images/{names[2]}.png", f"labels/{names[2]}.png")
    (root / "val.txt").write_text(" ".join(listed) + "\n")
    for split in ("val", "validation"):
        assert _chosen(root, split) == [listed]
    for split in ("train", "Training"):
        with pytest.raises(DataError, match=_no_train_list(root)):
            open_dataset(f"folder:{root}", split=split)
    with pytest.raises(DataError, match=re.escape(f"unknown split 'test' for folder {root} (no test.txt there); "
                                                  "known: val") + "$"):
        open_dataset(f"folder:{root}", split="test")


def test_lone_test_list_refuses_train_naming_both_lists(tmp_path):
    root = _dataset(tmp_path / "d", {"a": "a", "b": "b", "c": "c"})
    (root / "test.txt").write_text("images/c.png labels/c.png\n")
    with pytest.raises(DataError, match=_no_train_list(root, "test.txt", "test.txt")):
        open_dataset(f"folder:{root}", split="train")
    (root / "val.txt").write_text("images/b.png labels/b.png\n")
    with pytest.raises(DataError, match=_no_train_list(root, "val.txt and test.txt")):
        open_dataset(f"folder:{root}", split="train")
    (root / "train.txt").write_text("images/a.png labels/a.png\n")
    assert [_chosen(root, s) for s in ("train", "val", "test")] == [
        [("images/a.png", "labels/a.png")], [("images/b.png", "labels/b.png")], [("images/c.png", "labels/c.png")]]


def test_eval_and_train_with_a_val_list_only_through_the_cli(tmp_path, tiny_model, capsys):
    root = _dataset(tmp_path / "d", {"a": "a", "b": "b"})
    (root / "val.txt").write_text("images/b.png labels/b.png\n")
    assert cli_main(["eval", "--model", str(tiny_model), "--data", f"folder:{root}", "--split", "val",
                     "--threads", "1"]) == 0
    assert f"on folder:{root} (val, 1 image)" in capsys.readouterr().out
    expected = re.compile("perception: error: " + _no_train_list(root)[:-1] + "\n$")
    assert cli_main(["eval", "--model", str(tiny_model), "--data", f"folder:{root}", "--split", "train"]) == 2
    assert expected.fullmatch(capsys.readouterr().err)
    pytest.importorskip("torch")
    out = tmp_path / "run"
    assert cli_main(["train", "--model", "segnet_basic", "--data", f"folder:{root}", "--size", "48x64", "--steps", "1",
                     "--device", "cpu", "--out", str(out)]) == 2
    assert expected.fullmatch(capsys.readouterr().err)
    assert not out.exists()


def test_a_split_sub_folder_of_its_own_layout_still_serves_any_split_name(tmp_path):
    """``<split>/images/`` + ``<split>/labels/`` at the top (the docstring's first layout) serves a
    split of any name whole, as before the split names were read: no 'unknown split' for ``night``."""
    root = tmp_path / "d"
    _dataset(root / "night", {"a": "a"})
    _dataset(root / "day", {"b": "b"})
    pairs = open_dataset(f"folder:{root}", split="night").pairs
    assert [(i.relative_to(root).as_posix(), lb.relative_to(root).as_posix()) for i, lb in pairs] == [
        ("night/images/a.png", "night/labels/a.png")]
    with pytest.raises(DataError, match=re.escape(f"unknown split 'val' for folder {root} (no val/images there); "
                                                  "known: day, night") + "$"):
        open_dataset(f"folder:{root}", split="val")


# ------------------------------------------------------------------------------------------------
# 4. <split>/images/ sub-datasets by the split names in any case; the lists an unknown split names
# ------------------------------------------------------------------------------------------------


def _sub_datasets(root: Path, *names: str) -> Path:
    """``<name>/images/`` + ``<name>/labels/`` + ``<name>/classes.yaml`` for each name, one image each."""
    for name in names:
        _dataset(root / name, {name: name})
    return root


def _sub_chosen(root: Path, split: str) -> list[str]:
    return [image.relative_to(root).as_posix() for image, _label in open_dataset(f"folder:{root}", split=split).pairs]


@pytest.mark.parametrize(("split", "expected"), [
    *((s, "training/images/training.png") for s in ("train", "Train", "training", "TRAINING")),
    *((s, "validation/images/validation.png") for s in ("val", "VAL", "valid", "validation", "Validation")),
])
def test_split_sub_datasets_take_the_split_names_in_any_case(tmp_path, split, expected):
    """top/training/ + top/validation/: '--split val' and a plain train were refused ('unknown split
    'val' ...; known: training, validation') although the README promises the names in any case
    (s37 v1, NEW-3)."""
    root = _sub_datasets(tmp_path / "top", "training", "validation")
    assert _sub_chosen(root, split) == [expected]


def test_a_split_the_sub_datasets_lack_names_them(tmp_path):
    root = _sub_datasets(tmp_path / "top", "training", "validation")
    for split in ("test", "Testing", "night"):
        with pytest.raises(DataError, match=re.escape(f"unknown split {split!r} for folder {root} (no {split}/images "
                                                      "there); known: training, validation") + "$"):
            open_dataset(f"folder:{root}", split=split)


def test_two_sub_datasets_of_one_split_are_refused_naming_both(tmp_path):
    root = _sub_datasets(tmp_path / "top", "train", "val", "validation")
    assert _sub_chosen(root, "train") == ["train/images/train.png"]
    for split in ("val", "validation", "Valid"):
        with pytest.raises(DataError, match=re.escape(f"{root} has 2 folders for split val (val/, validation/), each "
                                                      "with its own images/: keep one of them") + "$"):
            open_dataset(f"folder:{root}", split=split)


def test_custom_sub_datasets_keep_their_exact_name_first(tmp_path):
    root = _sub_datasets(tmp_path / "top", "night", "Day")
    assert _sub_chosen(root, "night") == ["night/images/night.png"]
    assert _sub_chosen(root, "day") == ["Day/images/Day.png"]  # the names in any case, as the split names
    if _case_sensitive(tmp_path):
        _dataset(root / "Night", {"Night": "Night"})
        assert _sub_chosen(root, "night") == ["night/images/night.png"]
        assert _sub_chosen(root, "Night") == ["Night/images/Night.png"]
        with pytest.raises(DataError, match=re.escape(f"{root} has 2 folders for split night (Night/, night/)")):
            open_dataset(f"folder:{root}", split="NIGHT")


def test_train_and_eval_on_training_and_validation_sub_datasets_through_the_cli(tmp_path, tiny_model, capsys):
    root = _sub_datasets(tmp_path / "top", "training", "validation")
    assert cli_main(["eval", "--model", str(tiny_model), "--data", f"folder:{root}", "--split", "val",
                     "--threads", "1"]) == 0
    assert f"on folder:{root} (val, 1 image)" in capsys.readouterr().out
    pytest.importorskip("torch")
    out = tmp_path / "run"
    assert cli_main(["train", "--model", "segnet_basic", "--data", f"folder:{root}", "--size", "48x64", "--steps", "1",
                     "--batch-size", "1", "--device", "cpu", "--workers", "0", "--out", str(out)]) == 0, capsys.readouterr().err
    assert (out / "last.pt").is_file()


def test_an_unknown_split_names_only_the_split_lists_not_a_readme(tmp_path):
    """Every ``*.txt`` in the root was offered as a split ('known: test, x'), a README.txt too (s37 v1, NEW-3)."""
    root = _dataset(tmp_path / "d", {"a": "a", "b": "b", "c": "c"})
    (root / "train.txt").write_text("images/a.png labels/a.png\n")
    (root / "val.txt").write_text("images/b.png labels/b.png\n")
    (root / "README.txt").write_text("Labelled by hand, 2024.\nimages/a.png labels/a.png\n")
    (root / "notes.txt").write_text("")
    (root / "night.txt").write_text("\n  images/c.png   labels/c.png\n", encoding="utf-16")
    (root / "folder.txt").mkdir()
    with pytest.raises(DataError, match=re.escape(f"unknown split 'test' for folder {root} (no test.txt there); "
                                                  "known: night, train, val") + "$"):
        open_dataset(f"folder:{root}", split="test")
    assert _chosen(root, "night") == [("images/c.png", "labels/c.png")]  # a list it names serves that split
