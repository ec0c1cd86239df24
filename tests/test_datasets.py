"""Dataset readers on tiny format-faithful fixtures, their error messages, and the real CamVid."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from perception.contracts import ClassInfo, ClassTable
from perception.datasets import (
    CAMVID_CLASSES,
    CITYSCAPES_CLASSES,
    class_pixel_stats,
    dataset_kinds,
    open_dataset,
)
from perception.errors import ConfigError, DataError
from perception.synthetic import SYNTHETIC_CLASSES

H, W = 12, 16


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def make_camvid(root: Path, labels: list[np.ndarray], *, absolute_paths: bool = False,
                names: list[str] | None = None) -> Path:
    lines = []
    for i, label in enumerate(labels):
        name = names[i] if names else f"f{i}.png"
        _write(root / "train" / name, _image(i))
        _write(root / "trainannot" / name, label)
        prefix = "/SegNet/CamVid/" if absolute_paths else ""
        lines.append(f"{prefix}train/{name} {prefix}trainannot/{name}")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    return root


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown dataset kind 'camvidd' \(did you mean 'camvid'\?\); known: "):
        open_dataset("camvidd:/x")
    assert dataset_kinds() == ["camvid", "cityscapes", "folder", "synthetic"]


def test_camvid_maps_unlabelled_to_ignore(tmp_path):
    label = np.arange(H * W, dtype=np.uint8).reshape(H, W) % 12  # values 0..11
    ds = open_dataset(f"camvid:{make_camvid(tmp_path, [label, label], absolute_paths=True)}", split="train")
    assert len(ds) == 2 and ds.class_table is CAMVID_CLASSES
    image, out = ds[1]
    assert image.shape == (H, W, 3) and np.array_equal(image, _image(1))
    assert np.array_equal(out[label < 11], label[label < 11]) and (out[label == 11] == 255).all()
    assert CAMVID_CLASSES.task_ids("drivable") == [3] and CAMVID_CLASSES.task_ids("lane") == []
    assert CAMVID_CLASSES.task_ids("obstacle") == [2, 7, 8, 9, 10]


def test_camvid_splits_by_sequence(tmp_path):
    # A held-out sequence: train on the others (LIST:-SEQ), validate on it (LIST:SEQ).
    names = ["0001TP_006690.png", "0006R0_f01200.png", "0016E5_07959.png", "0006R0_f01230.png"]
    root = make_camvid(tmp_path, [np.full((H, W), i, np.uint8) for i in range(4)], names=names)
    spec = f"camvid:{root}"

    def frames(split):
        return [int(open_dataset(spec, split=split)[i][1][0, 0]) for i in range(len(open_dataset(spec, split=split)))]

    assert frames("train") == [0, 1, 2, 3]
    assert frames("train:0006R0") == [1, 3]
    assert frames("train:-0006R0") == [0, 2]
    assert frames("train:0001TP+0016E5") == [0, 2]
    with pytest.raises(ConfigError, match=r"split 'train:Seq05VD': no sequence Seq05VD there; its sequences: "
                                          r"0001TP, 0006R0, 0016E5 \(write LIST:SEQ\+SEQ to keep"):
        open_dataset(spec, split="train:Seq05VD")
    with pytest.raises(ConfigError, match="keeps no frame"):
        open_dataset(spec, split="train:-0001TP+0006R0+0016E5")
    with pytest.raises(DataError, match=r"unknown split 'test' for camvid"):
        open_dataset(spec, split="test:0006R0")


def test_camvid_errors_name_the_file_and_fix(tmp_path):
    with pytest.raises(DataError, match="CamVid folder .*nowhere not found; check the dataset path"):
        open_dataset(f"camvid:{tmp_path / 'nowhere'}")
    root = make_camvid(tmp_path / "c", [np.full((H, W), 12, np.uint8)])
    with pytest.raises(DataError, match=r"unknown split 'val' for camvid .*\(no list file val.txt there\); known: train$"):
        open_dataset(f"camvid:{root}", split="val")
    with pytest.raises(DataError, match=r"f0.png holds value 12, which is not a class id"):
        open_dataset(f"camvid:{root}")[0]
    (root / "trainannot" / "f0.png").unlink()
    with pytest.raises(DataError, match=r"train.txt:1: .*trainannot/f0.png not found"):
        open_dataset(f"camvid:{root}")
    _write(root / "trainannot" / "f0.png", np.zeros((H + 1, W), np.uint8))
    # Said in words: "48x64" read as WxH in one message and HxW (--size) in the rest.
    with pytest.raises(DataError, match=rf"is {H + 1} high x {W} wide but image .* is {H} high x {W} wide; they must match"):
        open_dataset(f"camvid:{root}")[0]
    (root / "train" / "f0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image .*f0.png"):
        open_dataset(f"camvid:{root}")[0]


def test_cityscapes_label_ids_become_train_ids(tmp_path):
    label_ids = np.zeros((H, W), np.uint8)
    label_ids[0, :6] = [7, 8, 26, 33, 0, 3]  # road, sidewalk, car, bicycle, unlabeled, out of roi
    for city in ("aachen", "bonn"):
        _write(tmp_path / "leftImg8bit" / "val" / city / f"{city}_000000_000019_leftImg8bit.png", _image(0))
        _write(tmp_path / "gtFine" / "val" / city / f"{city}_000000_000019_gtFine_labelIds.png", label_ids)
    ds = open_dataset(f"cityscapes:{tmp_path}", split="val")
    assert len(ds) == 2 and ds.class_table is CITYSCAPES_CLASSES and CITYSCAPES_CLASSES.num_classes == 19
    _, label = ds[0]
    assert label[0, :6].tolist() == [0, 1, 13, 18, 255, 255]
    assert CITYSCAPES_CLASSES.palette()[13] == (0, 0, 142)
    assert CITYSCAPES_CLASSES.task_ids("drivable") == [0]
    (tmp_path / "gtFine" / "val" / "bonn" / "bonn_000000_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(DataError, match="bonn_000000_000019_leftImg8bit.png has no label"):
        open_dataset(f"cityscapes:{tmp_path}", split="val")
    with pytest.raises(DataError, match=r"unknown split 'train' for cityscapes .*\(no leftImg8bit/train there\); known: val$"):
        open_dataset(f"cityscapes:{tmp_path}", split="train")


def _folder(root: Path, table: ClassTable, masks: dict[str, np.ndarray], *, label_dir: str = "masks") -> Path:
    (root / "images").mkdir(parents=True)
    (root / "classes.yaml").write_text(yaml.safe_dump(table.to_dict()))
    for i, (stem, mask) in enumerate(masks.items()):
        _write(root / "images" / f"{stem}.jpg", _image(i))
        _write(root / label_dir / f"{stem}.png", mask)
    return root


def test_folder_palette_masks_map_through_the_table(tmp_path):
    ids = np.random.default_rng(0).integers(0, 11, (H, W)).astype(np.uint8)
    palette = np.array(SYNTHETIC_CLASSES.palette(), np.uint8)
    ds = open_dataset(f"folder:{_folder(tmp_path, SYNTHETIC_CLASSES, {'a': palette[ids][..., ::-1]})}")
    assert ds.class_table == SYNTHETIC_CLASSES
    assert np.array_equal(ds[0][1], ids)

    bad = palette[ids][..., ::-1].copy()
    bad[3, 4] = (1, 2, 3)  # BGR
    ds = open_dataset(f"folder:{_folder(tmp_path / 'bad', SYNTHETIC_CLASSES, {'a': bad})}")
    with pytest.raises(DataError, match=r"a.png has colour RGB\(3,2,1\), which is not in the class table; add the colour to "):
        ds[0]
    # Saved as JPEG, the colours blur at every edge: the error says so and names the fix.
    root = _folder(tmp_path / "jpeg", SYNTHETIC_CLASSES, {"a": palette[ids][..., ::-1]})
    _write(root / "masks" / "a.jpg", palette[ids][..., ::-1])
    (root / "masks" / "a.png").unlink()
    with pytest.raises(DataError, match=r"a.jpg is a .jpg file, whose compression changes label values at every "
                                        r"edge: save labels as PNG$"):
        open_dataset(f"folder:{root}")


def test_folder_indexed_png_labels_read_by_colour_else_by_index(tmp_path):
    """An indexed PNG is read by its colours when they are the table's (what an optimiser such as
    optipng makes of an RGB label), else by its index (Pascal VOC: index = class id, 255 void)."""
    from PIL import Image

    table = ClassTable(classes=(ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "road", (128, 64, 128)),
                                ClassInfo(2, "car", (0, 0, 142))), ignore_id=255)
    ids = np.random.default_rng(0).integers(0, 3, (H, W)).astype(np.uint8)
    ids[0] = 255
    root = _folder(tmp_path / "voc", table, {"a": ids, "b": ids})
    voc = [0] * 768
    voc[3:9] = [200, 10, 10, 10, 200, 10]  # VOC-style display colours, not the table's
    shuffled = [0] * 768
    shuffled[0:9] = [0, 0, 142, 0, 0, 0, 128, 64, 128]  # the table's colours in another order
    for stem, palette, values in (("a", voc, ids), ("b", shuffled, np.array([1, 2, 0], np.uint8)[np.minimum(ids, 2)])):
        image = Image.fromarray(values, mode="P")
        image.putpalette(palette)
        image.save(root / "masks" / f"{stem}.png")
    ds = open_dataset(f"folder:{root}")
    assert np.array_equal(ds[0][1], ids)
    assert np.array_equal(ds[1][1][1:], ids[1:])  # by colour: the shuffled indices do not matter
    bad = ids.copy()
    bad[5, 5] = 9
    image = Image.fromarray(bad, mode="P")
    image.putpalette(voc)
    image.save(root / "masks" / "a.png")
    with pytest.raises(DataError, match=r"a.png is an indexed PNG that fits neither reading: its colour "
                                        r"RGB\(200,10,10\) is not in the class table, and its index 9 is not a class id"):
        ds[0]


def test_an_indexed_png_that_reads_both_ways_follows_its_palette_and_warns(tmp_path, caplog):
    """Hunt 6b: a table that shares colours with Pascal VOC's palette (CamVid's Building, Tree and
    Sky are VOC's 1, 3 and 7), and a VOC label holding only those indices, read by colour: its Road
    became Tree, a whole class mislabelled without a word. VOC's own palette now means the index
    is the class id; another palette keeps the colour reading; both say so once."""
    from PIL import Image

    from perception.datasets.folder import voc_palette

    voc = voc_palette()
    table = ClassTable(classes=(ClassInfo(0, "Sky", tuple(voc[7].tolist())), ClassInfo(1, "Building", tuple(voc[1].tolist())),
                                ClassInfo(2, "Pole", (192, 192, 128)), ClassInfo(3, "Road", (128, 64, 128)),
                                ClassInfo(4, "Tree", tuple(voc[3].tolist()))), ignore_id=255)
    ids = np.full((H, W), 1, np.uint8)  # Building above
    ids[H // 2:] = 3  # Road below: VOC colour 3 is the table's Tree
    root = _folder(tmp_path / "voc", table, {"a": ids, "b": ids})
    other = voc.copy()
    other[0] = (9, 9, 9)  # an unused entry that is not VOC's: the same colours, another palette
    for stem, palette in (("a", voc), ("b", other)):
        image = Image.fromarray(ids, mode="P")
        image.putpalette(palette.reshape(-1).tolist())
        image.save(root / "masks" / f"{stem}.png")
    ds = open_dataset(f"folder:{root}")
    with caplog.at_level(logging.WARNING, logger="perception.datasets.folder"):
        assert np.array_equal(ds[0][1], ids)  # by index: Road stays Road
        by_colour = ds[1][1]
    assert (by_colour[H // 2:] == 4).all()  # another palette: its colours are what it means
    assert caplog.text.count("reads two ways") == 1 and "read by its indices, as its palette is Pascal VOC's" in caplog.text


def test_folder_binary_masks_and_synth_layout(tmp_path):
    table = ClassTable(classes=(ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "road", (255, 255, 255))))
    mask = np.zeros((H, W), np.uint8)
    mask[6:] = 255
    ds = open_dataset(f"folder:{_folder(tmp_path / 'bin', table, {'x': mask})}")
    assert np.array_equal(ds[0][1], (mask > 0).astype(np.uint8))
    # The layout `perception synth` writes: labels/ plus train.txt / val.txt lists.
    ids = np.ones((H, W), np.uint8)
    root = _folder(tmp_path / "synth", SYNTHETIC_CLASSES, {"000000": ids, "000001": ids * 2}, label_dir="labels")
    (root / "train.txt").write_text("images/000000.jpg labels/000000.png\n")
    (root / "val.txt").write_text("images/000001.jpg labels/000001.png\n")
    assert int(open_dataset(f"folder:{root}", split="val")[0][1][0, 0]) == 2
    with pytest.raises(DataError, match=r"unknown split 'test' for folder .*\(no test.txt there\); known: train, val$"):
        open_dataset(f"folder:{root}", split="test")
    # As Windows editors save it: UTF-16 with its mark, or UTF-8 with one; other bytes are one error.
    for encoding in ("utf-16", "utf-8-sig"):
        (root / "val.txt").write_text("images/000001.jpg labels/000001.png\n", encoding=encoding)
        assert int(open_dataset(f"folder:{root}", split="val")[0][1][0, 0]) == 2
    (root / "val.txt").write_bytes(b"images/\xe9t\xe9.jpg labels/000001.png\n")
    with pytest.raises(DataError, match=r"list file .*val.txt is not UTF-8 text \(byte 7\); save it as UTF-8"):
        open_dataset(f"folder:{root}", split="val")


def test_folder_errors(tmp_path):
    ids = np.zeros((H, W), np.uint8)
    root = _folder(tmp_path / "f", SYNTHETIC_CLASSES, {"a": ids, "b": ids})
    (root / "masks" / "b.png").rename(root / "masks" / "c.png")
    with pytest.raises(DataError, match=r"image .*b.jpg has no label named b\.\*"):
        open_dataset(f"folder:{root}")
    (root / "images" / "b.jpg").rename(root / "images" / "c.jpg")
    _write(root / "masks" / "c.png", np.full((H, W), 40, np.uint8))
    with pytest.raises(DataError, match=r"c.png holds value 40"):
        open_dataset(f"folder:{root}")[1]
    (root / "classes.yaml").unlink()
    with pytest.raises(DataError, match="class table .*classes.yaml not found"):
        open_dataset(f"folder:{root}")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "classes.yaml").write_text(yaml.safe_dump(SYNTHETIC_CLASSES.to_dict()))
    with pytest.raises(DataError, match="image folder .*images not found"):
        open_dataset(f"folder:{empty}")


@pytest.mark.parametrize(("text", "message"), [
    ("classes:\n- {id: 0, name: background}\n", r"class entry 0 \(.*\) has no color: every class needs id, name and color"),
    ("classes:\n- {name: road, color: [0, 0, 0]}\n", r"class entry 0 \(.*\) has no id:"),
    ("labels: [road]\n", r"it has no 'classes' key: the table is 'classes' \(a list of \{id, name, color\}\)"),
    ("classes: []\n", r"'classes' is \[\], not a list of \{id, name, color\} entries"),
    ("classes: [road, car]\n", r"class entry 0 is 'road', not a mapping"),
    ("classes:\n- {id: 0.5, name: a, color: [0, 0, 0]}\n", r"class entry 0 id 0.5 is not a whole number"),
])
def test_a_malformed_class_table_names_the_entry_and_what_it_lacks(tmp_path, text, message):
    root = _folder(tmp_path / "f", SYNTHETIC_CLASSES, {"a": np.zeros((H, W), np.uint8)})
    (root / "classes.yaml").write_text(text)
    with pytest.raises(DataError, match=r"class table .*classes.yaml is malformed: " + message):
        open_dataset(f"folder:{root}")


def test_list_files_stay_inside_the_dataset_folder_and_name_each_frame_once(tmp_path):
    ids = np.ones((H, W), np.uint8)
    root = _folder(tmp_path / "ds", SYNTHETIC_CLASSES, {"000000": ids, "000001": ids * 2}, label_dir="labels")
    (root / "train.txt").write_text("images/000000.jpg labels/000000.png\n")
    # A pair one level above the dataset folder: "../x" after keeping the last two parts.
    _write(tmp_path / "x.jpg", _image(9))
    _write(tmp_path / "y.png", ids)
    for line, shown in (("images/../../x.jpg labels/000000.png", "images/../../x.jpg"),
                        ("images/000000.jpg labels/../../y.png", "labels/../../y.png"),
                        ("/x.jpg labels/000000.png", "/x.jpg")):
        (root / "val.txt").write_text(f"images/000001.jpg labels/000001.png\n{line}\n")
        with pytest.raises(DataError, match=rf"val.txt:2: {shown} points outside the dataset folder {root}; list paths"):
            open_dataset(f"folder:{root}", split="val")
    # A frame listed twice would count twice in every score: refused, naming both lines.
    (root / "val.txt").write_text("images/000001.jpg labels/000001.png\n\nimages/000001.jpg labels/000001.png\n")
    with pytest.raises(DataError, match=r"val.txt:3: images/000001.jpg is listed again \(first on line 1\); list each"):
        open_dataset(f"folder:{root}", split="val")
    # Absolute paths of another machine keep working (the last two parts), and so do symbolic links
    # inside the folder, as before.
    (root / "images" / "linked.jpg").symlink_to(root / "images" / "000001.jpg")
    (root / "val.txt").write_text("/elsewhere/images/000001.jpg /elsewhere/labels/000001.png\n"
                                  "images/linked.jpg labels/000000.png\n")
    ds = open_dataset(f"folder:{root}", split="val")
    assert len(ds) == 2 and int(ds[0][1][0, 0]) == 2 and int(ds[1][1][0, 0]) == 1


def test_synthetic_spec_and_disjoint_splits():
    train = open_dataset("synthetic:count=2,seed=4,size=48x64", split="train")
    val = open_dataset("synthetic:count=2,seed=4,size=48x64", split="val")
    assert len(train) == 2 and train.class_table is SYNTHETIC_CLASSES
    image, label = train[0]
    assert image.shape == (48, 64, 3) and label.shape == (48, 64) and label.max() < 11
    assert np.array_equal(train[0][0], image)  # deterministic
    assert not np.array_equal(val[0][0], image)
    with pytest.raises(ConfigError, match="bad option 'colour=1'"):
        open_dataset("synthetic:colour=1")
    with pytest.raises(ConfigError, match="out of range"):
        open_dataset("synthetic:size=8x8")


def _split_fixture(tmp_path: Path, layout: str) -> str:
    """A tiny dataset in ``layout`` with train and val splits (flat folder: no splits); its spec."""
    ids = np.zeros((H, W), np.uint8)
    if layout == "synthetic":
        return "synthetic:count=4,size=64x96"
    if layout == "camvid":
        root = make_camvid(tmp_path, [ids])
        (root / "val.txt").write_text((root / "train.txt").read_text())
        return f"camvid:{root}"
    if layout == "cityscapes":
        for split in ("train", "val"):
            _write(tmp_path / "leftImg8bit" / split / "bonn" / "bonn_0_0_leftImg8bit.png", _image(0))
            _write(tmp_path / "gtFine" / split / "bonn" / "bonn_0_0_gtFine_labelIds.png", ids)
        return f"cityscapes:{tmp_path}"
    if layout == "folder lists":
        root = _folder(tmp_path, SYNTHETIC_CLASSES, {"a": ids}, label_dir="labels")
        for split in ("train", "val"):
            (root / f"{split}.txt").write_text("images/a.jpg labels/a.png\n")
        return f"folder:{root}"
    if layout == "folder sub-folders":
        for split in ("train", "val"):
            _folder(tmp_path / split, SYNTHETIC_CLASSES, {"a": ids})
        return f"folder:{tmp_path}"
    return f"folder:{_folder(tmp_path, SYNTHETIC_CLASSES, {'a': ids})}"  # flat


@pytest.mark.parametrize(
    ("layout", "known"),
    [
        ("synthetic", "train, val"),
        ("camvid", "train, val"),
        ("cityscapes", "train, val"),
        ("folder lists", "train, val"),
        ("folder sub-folders", "train, val"),
        ("folder flat", "test, train, val"),
    ],
)
def test_unknown_split_is_an_error_listing_the_known_ones(tmp_path, layout, known):
    spec = _split_fixture(tmp_path, layout)
    for split in known.split(", "):
        assert len(open_dataset(spec, split=split)) >= 1
    kind = spec.partition(":")[0]
    with pytest.raises(DataError, match=rf"^unknown split 'nosuch' for {kind}\b.*; known: {known}$"):
        open_dataset(spec, split="nosuch")


def test_unknown_synthetic_split_message():
    with pytest.raises(DataError) as caught:
        open_dataset("synthetic:count=4,size=64x96", split="nosuch")
    assert str(caught.value) == "unknown split 'nosuch' for synthetic; known: train, val"


def test_class_pixel_stats(tmp_path):
    a = np.zeros((H, W), np.uint8)
    b = np.zeros((H, W), np.uint8)
    b[:, : W // 2] = 3
    b[0, 0] = 11  # unlabelled: counted nowhere
    ds = open_dataset(f"camvid:{make_camvid(tmp_path, [a, b])}")
    counts, present = class_pixel_stats(ds)
    assert counts[0] == H * W + H * W // 2 and counts[3] == H * W // 2 - 1
    assert present[0] == 2 * H * W - 1 and present[3] == H * W - 1 and present[5] == 0


def test_readers_do_not_import_torch(tmp_path):
    code = (
        "import sys; from perception.datasets import open_dataset; from perception.metrics import ConfusionMatrix;"
        "open_dataset('synthetic:count=1,size=48x64')[0]; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.camvid
def test_real_camvid(camvid_dir):
    train = open_dataset(f"camvid:{camvid_dir}", split="train")
    val = open_dataset(f"camvid:{camvid_dir}", split="val")
    assert (len(train), len(val)) == (367, 101)
    image, label = train[0]
    assert image.shape == (360, 480, 3) and label.shape == (360, 480)
    assert set(np.unique(label)) <= set(range(11)) | {255}
