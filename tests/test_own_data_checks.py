"""Own labelled data through a folder dataset: what a class table, a label file or a list file may
hold, and the one-line refusals that replace a wrong score or a traceback later (hunt s36/h9)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from perception import contracts
from perception.contracts import ClassInfo, ClassTable
from perception.datasets import CAMVID_CLASSES, CITYSCAPES_CLASSES, open_dataset
from perception.errors import ConfigError, DataError
from perception.synthetic import SYNTHETIC_CLASSES

H, W = 12, 16
#: A table of one's own, as a person writes it: spaces and a non-ASCII name are fine.
TABLE = {
    "classes": [
        {"id": 0, "name": "drivable surface", "color": [128, 64, 128]},
        {"id": 1, "name": "lane paint", "color": [255, 255, 255]},
        {"id": 2, "name": "Fahrzeug 🚗", "color": [0, 0, 142]},
        {"id": 3, "name": "person", "color": [220, 20, 60]},
        {"id": 4, "name": "background", "color": [90, 90, 90]},
    ],
    "ignore_id": 255,
    "task_groups": {"drivable": ["drivable surface", "lane paint"], "lane": ["lane paint"],
                    "obstacle": ["Fahrzeug 🚗", "person"]},
}


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)


def _ids(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 5, (H, W)).astype(np.uint8)


def _dataset(root: Path, table: dict = TABLE, labels: dict[str, np.ndarray] | None = None) -> Path:
    """A folder dataset: ``images/<name>.png`` and ``labels/<name>.png`` (``name`` may hold a sub-folder)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.yaml").write_text(yaml.safe_dump(table, allow_unicode=True), encoding="utf-8")
    for i, (name, label) in enumerate((labels if labels is not None else {"a": _ids(0), "b": _ids(1)}).items()):
        _write(root / "images" / f"{name}.png", _image(i))
        _write(root / "labels" / f"{name}.png", label)
    return root


def _renamed(old: str, new: str) -> dict:
    """``TABLE`` with class ``old`` called ``new`` (in its task groups too)."""
    classes = [{**c, "name": new if c["name"] == old else c["name"]} for c in TABLE["classes"]]
    groups = {k: [new if n == old else n for n in v] for k, v in TABLE["task_groups"].items()}
    return {**TABLE, "classes": classes, "task_groups": groups}


# ------------------------------------------------------------------------------------------------
# The class table
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "why"), [
    ("person/rider", r"holds '/', which would split its per-class topic obstacle/<class> in two"),
    ("info", r"is a name the wire reserves \(., .., stats, obstacles, info, frame\)"),
    ("..", r"is a name the wire reserves"),
    ("car\u202e", r"holds a control character or an invisible format character"),
    ("🚗" * 17, r"has 68 UTF-8 bytes, more than 64: its per-class topic <namespace>/obstacle/<class> must fit the "
                r"readers' 256-byte topic limit"),
    ("  person", r"starts or ends with a space, which --task and --data-task strip"),
    ("person, rider", r"holds ',', which separates the classes of --task and --data-task"),
])
def test_a_class_name_that_cannot_be_a_topic_or_named_in_task_is_refused(tmp_path, name, why):
    """'person/rider' was trained and exported, then --per-class-obstacles died with a traceback;
    64 emoji (256 bytes) made topics every reader dropped as malformed; '  person' and 'a, b'
    could never be named in --task. Refused with the table, naming the class."""
    root = _dataset(tmp_path / "d", _renamed("person", name))
    with pytest.raises(DataError) as caught:
        open_dataset(f"folder:{root}", split="val")
    message = str(caught.value)
    assert "\n" not in message and f"class name {name!r:.80}" in message
    assert f"classes.yaml is malformed: class name {name!r:.80} " in message
    assert re.search(why + r".*; rename the class$", message), message


def test_names_up_to_64_utf8_bytes_pass_and_every_shipped_table_does(tmp_path):
    root = _dataset(tmp_path / "d", _renamed("person", "🚗" * 16))  # 64 bytes: its topic fits
    assert open_dataset(f"folder:{root}", split="val").class_table.names[3] == "🚗" * 16
    from perception.modelfile import read_model_metadata
    from perception.run_config import DEFAULT_MODEL

    shipped = [CAMVID_CLASSES, CITYSCAPES_CLASSES, SYNTHETIC_CLASSES, read_model_metadata(DEFAULT_MODEL).class_table]
    assert [table.new_table_error() for table in shipped] == [None] * 4
    longest = contracts.topic_name("/" + "n" * (contracts.MAX_NAMESPACE_CHARS - 1),
                                   contracts.PER_CLASS_OBSTACLE_PREFIX + "🚗" * 16)
    assert len(longest.encode()) == contracts.MAX_TOPIC_BYTES


def test_a_namespace_with_a_leading_slash_counts_it(tmp_path):
    """Topics keep the leading '/': '/' + 182 characters made the longest topic 257 bytes."""
    n = contracts.MAX_NAMESPACE_CHARS
    assert contracts.ros_namespace_error("/" + "n" * (n - 1)) is None
    assert f"it has {n + 1} characters, more than {n}" in contracts.ros_namespace_error("/" + "n" * n)


def test_model_files_and_checkpoints_with_such_names_still_load():
    """Files written before the check keep working: only a new table (classes.yaml) is held to it."""
    table = ClassTable.from_dict(_renamed("person", "person/rider"))
    assert table.names[3] == "person/rider"
    with pytest.raises(ValueError, match=r"class name 'person/rider' holds '/'"):
        ClassTable.from_dict(_renamed("person", "person/rider"), new=True)


def test_an_empty_task_group_is_refused(tmp_path):
    """'drivable: []' was scored as IoU 0.0 of a blank class list."""
    root = _dataset(tmp_path / "d", {**TABLE, "task_groups": {**TABLE["task_groups"], "drivable": []}})
    with pytest.raises(DataError, match=r"classes.yaml is malformed: task group 'drivable' is empty: name its classes, "
                                        r"or leave the group out$"):
        open_dataset(f"folder:{root}", split="val")


# ------------------------------------------------------------------------------------------------
# A model exported before: --per-class-obstacles ends in one line, without it the model runs
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slash_model(tmp_path_factory) -> Path:
    from tests.tiny_models import tiny_metadata, write_brightness_model

    classes = tuple(ClassInfo(c.id, "person/rider" if c.name == "pedestrian" else c.name, c.color)
                    for c in SYNTHETIC_CLASSES.classes)
    groups = {k: tuple("person/rider" if n == "pedestrian" else n for n in v) for k, v in SYNTHETIC_CLASSES.task_groups.items()}
    table = ClassTable(classes=classes, ignore_id=255, task_groups=groups)
    path = tmp_path_factory.mktemp("slash") / "m.onnx"
    return write_brightness_model(path, (48, 64), metadata=tiny_metadata((48, 64), class_table=table))


def _run(model: Path, port: int, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "perception", "-q", "run", "--model", str(model), "--source", "synthetic",
                           "--max-frames", "2", "--warmup", "0", "--threads", "1", "--endpoint", f"tcp://127.0.0.1:{port}",
                           *flags], capture_output=True, text=True, timeout=120, env=env)


def test_per_class_obstacles_of_a_model_with_a_slash_class_is_one_line(slash_model, free_tcp_port):
    done = _run(slash_model, free_tcp_port, "--per-class-obstacles")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert lines[-1] == ("perception: error: --per-class-obstacles: the model's obstacle class 'person/rider' holds '/', "
                         "which would split its per-class topic obstacle/<class> in two; run without "
                         "--per-class-obstacles, or rename the class in the dataset's classes.yaml, train and export again")
    done = _run(slash_model, free_tcp_port)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_per_class_topic_past_the_readers_limit_is_refused_when_topics_are_declared():
    """A 64-character class of a model file (256 bytes of emoji) made topics of 282 bytes."""
    from perception.publish import MaskPublisher

    with MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace="perception/front") as pub:
        pub.declare_topics([*contracts.MASK_TOPICS, "obstacle/" + "🚗" * 16])  # 256 bytes in all: fits
        with pytest.raises(ConfigError, match=r"class '🚗+' makes the topic perception/front/obstacle/<class> 282 UTF-8 "
                                              r"bytes long, more than the readers' 256; run without --per-class-obstacles"):
            pub.declare_topics([*contracts.MASK_TOPICS, "obstacle/" + "🚗" * 64])


# ------------------------------------------------------------------------------------------------
# Label files
# ------------------------------------------------------------------------------------------------


def test_colour_labels_with_a_table_whose_colours_repeat_are_refused(tmp_path):
    """Two classes with one colour: every such pixel was read as the first, silently (+4.6 mIoU)."""
    shared = {**TABLE, "classes": [{**c, "color": [0, 0, 142]} if c["name"] == "person" else c for c in TABLE["classes"]]}
    palette = np.array([c["color"] for c in shared["classes"]], np.uint8)
    ids = _ids(0)
    root = _dataset(tmp_path / "rgb", shared, {"a": palette[ids][..., ::-1]})
    with pytest.raises(DataError, match=r"a.png is coded by colour, but class table .*classes.yaml gives classes "
                                        r"'Fahrzeug 🚗' and 'person' the same colour RGB\(0,0,142\); give each class "
                                        r"its own colour, or store class-id labels$"):
        open_dataset(f"folder:{root}", split="val")[0]
    # Class-id labels do not need the colours: the same table reads them.
    root = _dataset(tmp_path / "ids", shared, {"a": ids})
    assert np.array_equal(open_dataset(f"folder:{root}", split="val")[0][1], ids)


def test_an_indexed_png_whose_palette_is_the_table_reads_by_index_when_colours_repeat(tmp_path):
    from PIL import Image

    shared = {**TABLE, "classes": [{**c, "color": [0, 0, 142]} if c["name"] == "person" else c for c in TABLE["classes"]]}
    ids = _ids(0)
    root = _dataset(tmp_path / "p", shared, {"a": ids})
    image = Image.fromarray(ids, mode="P")
    image.putpalette([v for c in shared["classes"] for v in c["color"]])
    image.save(root / "labels" / "a.png")
    assert np.array_equal(open_dataset(f"folder:{root}", split="val")[0][1], ids)


def test_jpeg_labels_are_refused_up_front_even_when_their_values_stay_in_the_table(tmp_path):
    """JPEG changed hundreds of pixels a label, every value still a class id: scored silently."""
    root = _dataset(tmp_path / "d")
    for name in ("a", "b"):
        ids = cv2.imread(str(root / "labels" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        (root / "labels" / f"{name}.png").unlink()
        _write(root / "labels" / f"{name}.jpeg", ids)
    with pytest.raises(DataError, match=r"label .*labels/a.jpeg is a .jpeg file, whose compression changes label "
                                        r"values at every edge: save labels as PNG$"):
        open_dataset(f"folder:{root}", split="val")


@pytest.mark.parametrize(("label", "message"), [
    (np.dstack([_ids(0)] * 3), r"has colour RGB\(\d,\d,\d\), which is not in the class table; it looks like class ids "
                               r"saved as a colour image \(all three channels equal\): save them as a single-channel 8-bit PNG$"),
    (_ids(0).astype(np.uint16), r"is a 16-bit single-channel image; labels are 8-bit: save class ids \(0..254\) as an "
                                r"8-bit single-channel PNG$"),
    (np.dstack([_ids(0)] * 3).astype(np.uint16) * 257, r"is a 16-bit colour image; labels are 8-bit: save class ids "
                                                       r"\(0..254\) as an 8-bit single-channel PNG or colours as an 8-bit RGB PNG$"),
])
def test_labels_in_a_wrong_format_name_the_fix(tmp_path, label, message):
    root = _dataset(tmp_path / "d", labels={"a": label})
    with pytest.raises(DataError, match=r"label .*a.png " + message):
        open_dataset(f"folder:{root}", split="val")[0]


# ------------------------------------------------------------------------------------------------
# Where the files are: sub-folders, list files, two files of one name
# ------------------------------------------------------------------------------------------------


def test_images_in_sub_folders_pair_by_their_path(tmp_path):
    """images/seqA/000000.png pairs with labels/seqA/000000.png, and seqB's 000000 with seqB's
    (was: 'no images in .../images')."""
    labels = {"seqA/000000": _ids(0), "seqB/000000": _ids(1), "top": _ids(2)}
    root = _dataset(tmp_path / "d", labels=labels)
    _write(root / "images" / ".ipynb_checkpoints" / "x.png", _image(9))  # hidden: left out
    _write(root / "labels" / "._top.png", _ids(9))  # macOS's resource fork beside it
    ds = open_dataset(f"folder:{root}", split="val")
    assert [p[0].relative_to(root).as_posix() for p in ds.pairs] == ["images/seqA/000000.png", "images/seqB/000000.png",
                                                                      "images/top.png"]
    assert all(np.array_equal(ds[i][1], label) for i, label in enumerate(labels.values()))
    (root / "labels" / "seqB" / "000000.png").unlink()
    with pytest.raises(DataError, match=r"image .*images/seqB/000000.png has no label named seqB/000000\.\* in "):
        open_dataset(f"folder:{root}", split="val")
    empty = _dataset(tmp_path / "empty", labels={})
    (empty / "images" / "seqA").mkdir(parents=True)
    (empty / "labels").mkdir()
    with pytest.raises(DataError, match=r"no images \(.bmp, .jpeg, .jpg, .pgm, .png, .ppm, .tif, .tiff, .webp\) in .*images or its sub-folders$"):
        open_dataset(f"folder:{empty}", split="val")


def test_two_files_of_one_name_are_refused_naming_both(tmp_path):
    """images/x.png and images/x.jpg: one of the two was dropped without a word."""
    root = _dataset(tmp_path / "d")
    _write(root / "images" / "a.jpg", _image(5))
    with pytest.raises(DataError, match=r"images .*images/a.jpg and .*images/a.png share the name a; keep one of them"):
        open_dataset(f"folder:{root}", split="val")


def test_list_lines_are_read_as_written_first(tmp_path):
    """'images/seqB/000018.png labels/seqB/000018.png' failed naming 'seqB/000018.png', a path the
    list never held: only the last two parts were kept."""
    labels = {"seqA/000000": _ids(0), "seqB/000018": _ids(1)}
    root = _dataset(tmp_path / "d", labels=labels)
    (root / "train.txt").write_text("images/seqA/000000.png labels/seqA/000000.png\n")
    (root / "val.txt").write_text(f"images/seqB/000018.png {root}/labels/seqB/000018.png\n")  # absolute, inside the folder
    assert np.array_equal(open_dataset(f"folder:{root}", split="val")[0][1], labels["seqB/000018"])
    assert np.array_equal(open_dataset(f"folder:{root}", split="train")[0][1], labels["seqA/000000"])
    (root / "val.txt").write_text("images/seqB/000019.png labels/seqB/000018.png\n")
    with pytest.raises(DataError, match=r"val.txt:1: images/seqB/000019.png not found in .*/d \(nor seqB/000019.png, "
                                        r"its last two parts\); is the dataset folder complete\?$"):
        open_dataset(f"folder:{root}", split="val")
    (root / "val.txt").write_text("images/seqB/000018.png labels/seqB/000018.png\n"
                                  "images/seqB/000018.png labels/seqB/000018.png\n")
    with pytest.raises(DataError, match=r"val.txt:2: images/seqB/000018.png is listed again \(first on line 1\)"):
        open_dataset(f"folder:{root}", split="val")


def test_split_named_sub_folders_of_images_are_the_splits(tmp_path):
    """images/train/ and images/val/ (Cityscapes' layout): read as every split, val would have
    scored the training frames."""
    labels = {"train/000000": _ids(0), "train/000001": _ids(1), "val/000002": _ids(2)}
    root = _dataset(tmp_path / "d", labels=labels)
    assert [p[1].name for p in open_dataset(f"folder:{root}", split="train").pairs] == ["000000.png", "000001.png"]
    val = open_dataset(f"folder:{root}", split="val")
    assert len(val) == 1 and np.array_equal(val[0][1], labels["val/000002"])
    with pytest.raises(DataError, match=r"unknown split 'test' for folder .* \(no images/test/ there\); known: train, val$"):
        open_dataset(f"folder:{root}", split="test")


@pytest.mark.parametrize(("train", "val"), [("training", "validation"), ("Train", "Val"), ("train", "valid")])
def test_split_folders_by_other_common_names_are_the_splits(tmp_path, train, val):
    """ADE20K's images/training/ + images/validation/ (and Train/, valid/) were read as one folder
    serving every split: the validation frames were trained on, without a word (V3, s36, N1)."""
    labels = {f"{train}/000000": _ids(0), f"{train}/000001": _ids(1), f"{val}/000002": _ids(2)}
    root = _dataset(tmp_path / "d", labels=labels)
    assert [p[0].relative_to(root).as_posix() for p in open_dataset(f"folder:{root}", split="train").pairs] == [
        f"images/{train}/000000.png", f"images/{train}/000001.png"]
    val_set = open_dataset(f"folder:{root}", split="val")
    assert len(val_set) == 1 and np.array_equal(val_set[0][1], labels[f"{val}/000002"])


FIX = ("keep only split folders there, the same in images/ and labels/ (move the rest out), or list each split's "
       "pairs in train.txt and val.txt")


@pytest.mark.parametrize(("others", "named"), [
    ({f"{i:06d}": _ids(i) for i in range(5)}, "000000.png, 000001.png, 000002.png and 2 more"),  # flat frames
    ({"seqA/000000": _ids(0), "seqB/000000": _ids(1)}, "seqA/, seqB/"),  # sequence folders
], ids=["flat", "sequences"])
@pytest.mark.parametrize("split", ["train", "val"])
def test_split_folders_beside_other_images_are_refused(tmp_path, others, named, split):
    """12 flat frames and a stray images/train/ trained on the one image in train/ and dropped the 12;
    val was refused as unknown (V3, s36, N1)."""
    root = _dataset(tmp_path / "d", labels={**others, "train/x": _ids(7)})
    message = f"{root / 'images'} holds split folders (train/) beside {named}, which no split folder holds"
    with pytest.raises(DataError, match=re.escape(message) + r" \(they would be trained and validated on, or left out\): "
                                        + re.escape(FIX) + "$"):
        open_dataset(f"folder:{root}", split=split)
    # Lists say which frame is in which split, whatever the folders: they win, as before.
    (root / "train.txt").write_text("images/train/x.png labels/train/x.png\n")
    (root / "val.txt").write_text(f"images/{next(iter(others))}.png labels/{next(iter(others))}.png\n")
    assert len(open_dataset(f"folder:{root}", split=split)) == 1


def test_split_folders_must_be_mirrored_in_labels_and_one_per_split(tmp_path):
    root = _dataset(tmp_path / "d", labels={"train/a": _ids(0), "val/b": _ids(1)})
    (root / "labels" / "val" / "b.png").rename(root / "labels" / "b.png")
    (root / "labels" / "val").rmdir()
    with pytest.raises(DataError, match=re.escape(f"{root / 'labels'} holds split folders (train/) beside b.png")):
        open_dataset(f"folder:{root}", split="train")
    (root / "labels" / "b.png").rename(root / "labels" / "train" / "b.png")
    with pytest.raises(DataError, match=re.escape(f"{root / 'images'} has split folders train/, val/ but {root / 'labels'} "
                                                  "has split folders train/; give labels/ the same split folders as "
                                                  "images/, or list each split's pairs in train.txt and val.txt") + "$"):
        open_dataset(f"folder:{root}", split="train")
    twice = _dataset(tmp_path / "twice", labels={"train/a": _ids(0), "training/b": _ids(1), "val/c": _ids(2)})
    with pytest.raises(DataError, match=re.escape(f"{twice / 'images'} has 2 folders for split train (train/, training/): "
                                                  "keep one of them")):
        open_dataset(f"folder:{twice}", split="val")


def test_a_folder_of_images_without_split_folders_serves_every_split(tmp_path):
    """Flat, and sequence folders whose names are not splits: every image in every split, as before."""
    labels = {"seqA/000000": _ids(0), "trainval/000001": _ids(1), "top": _ids(2)}
    root = _dataset(tmp_path / "d", labels=labels)
    pairs = {split: open_dataset(f"folder:{root}", split=split).pairs for split in ("train", "val", "test")}
    assert pairs["train"] == pairs["val"] == pairs["test"] and len(pairs["train"]) == 3


@pytest.mark.parametrize("nested", ["city/train", "seqA/Val"])
def test_split_named_folders_below_the_top_are_refused(tmp_path, nested):
    """images/city/train/ + images/city/val/ served every split, so validation scored training frames
    without a word (V4, s36, N1)."""
    root = _dataset(tmp_path / "d", labels={f"{nested}/000000": _ids(0), "city/other/000001": _ids(1)})
    where = root / "images" / nested
    with pytest.raises(DataError, match=re.escape(f"{where} is named like a split but is not at the top of {root / 'images'}")
                       + ".* or list each split's pairs in train.txt and val.txt$"):
        open_dataset(f"folder:{root}", split="val")


@pytest.mark.parametrize(("stray", "side"), [("images/thumbs/x.png", "images"), ("labels/vis/a.png", "labels")])
def test_a_stray_sub_folder_names_the_folder_to_move_out(tmp_path, stray, side):
    root = _dataset(tmp_path / "d")
    _write(root / stray, _image(3))
    folder = root / stray.rsplit("/", 1)[0]
    with pytest.raises(DataError, match=re.escape(f"; if {folder}/ is not part of the dataset (previews, thumbnails), "
                                                  f"move it out of {side}/") + "$"):
        open_dataset(f"folder:{root}", split="val")


def test_a_colour_of_no_class_names_both_fixes(tmp_path):
    """A black void in colour-coded labels said only 'RGB(0,0,0) is not in the class table' (V3, s36, N5)."""
    palette = np.array([c["color"] for c in TABLE["classes"]], np.uint8)
    label = palette[_ids(0)][..., ::-1].copy()
    label[2:4, 3:6] = 0  # void, black
    root = _dataset(tmp_path / "d", labels={"a": label})
    with pytest.raises(DataError, match=re.escape(
            "a.png has colour RGB(0,0,0), which is not in the class table; add the colour to "
            f"{root / 'classes.yaml'} as a class of its own (color: [0, 0, 0]), or, to leave those pixels out (a void), "
            "save labels as class ids (a single-channel 8-bit PNG) with them set to the ignore id 255") + "$"):
        open_dataset(f"folder:{root}", split="val")[0]
