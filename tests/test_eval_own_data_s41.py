"""``perception eval`` on one's own labelled frames (hunt s41/h42): ``--record`` never writes
metadata the reader refuses (an undefined figure is null), a file an older ``--record`` broke with
NaN stays usable, labels with void 0 and classes 1..N (ADE20K's layout) are described in
classes.yaml, and the table says which tasks were not scored, how many pixels were, and where the
data comes from."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
import yaml

from perception.cli import main as cli_main
from perception.contracts import METADATA_KEY
from perception.errors import DataError, ModelError
from perception.model_metadata import ModelMetadata
from perception.synthetic import SYNTHETIC_CLASSES

HW = (48, 64)


def _synth_folder(root, count: int = 3, *, label=None, flat: bool = False) -> str:
    """A tiny ``perception synth`` folder (48x64, val.txt/train.txt lists; ``flat``: no lists, the
    whole folder); ``label`` (a class id or 255) overwrites every label."""
    from perception.synthetic.dataset import write_dataset

    write_dataset(root, count=count, height=HW[0], width=HW[1], seed=5, split={"val": 0.3})
    if flat:
        for name in ("train.txt", "val.txt", "test.txt"):
            (root / name).unlink(missing_ok=True)
    if label is not None:
        for path in (root / "labels").iterdir():
            assert cv2.imwrite(str(path), np.full(HW, label, np.uint8))
    return f"folder:{root}"


@pytest.fixture
def model(tmp_path):
    from tiny_models import write_brightness_model

    return write_brightness_model(tmp_path / "m.onnx", HW)


def _raw_metadata(path) -> str:
    import onnx

    return next(p.value for p in onnx.load(str(path)).metadata_props if p.key == METADATA_KEY)


# ------------------------------------------------------------------------------------------------
# F1: --record and undefined figures
# ------------------------------------------------------------------------------------------------


def test_record_stores_an_undefined_figure_as_null_and_the_model_still_loads(tmp_path, model, capsys):
    """Labels of sky only: every task's recall is undefined. --record wrote NaN, and run, inspect
    and eval then refused the model ("recall nan is not a share in 0..1"); now null, shown as -."""
    from perception.commands.inspect import format_description
    from perception.modelfile import describe_model, read_model_metadata

    spec = _synth_folder(tmp_path / "sky", label=SYNTHETIC_CLASSES.id_of("sky"))
    assert cli_main(["eval", "--model", str(model), "--data", spec, "--tasks", "drivable,lane", "--record"]) == 0
    capsys.readouterr()
    assert "NaN" not in _raw_metadata(model)
    check = read_model_metadata(model).real_road_check
    assert check["tasks"]["drivable"]["recall"] is None and check["tasks"]["lane"]["recall"] is None
    lines = format_description(describe_model(model))
    assert any(line.startswith("real road  drivable IoU") for line in lines)
    assert not any("nan" in line.lower() for line in lines)


def test_metadata_to_json_refuses_nan():
    from tiny_models import tiny_metadata

    metadata = tiny_metadata(HW, real_road_check={"tasks": {"lane": {"recall": float("nan")}}})
    with pytest.raises(ValueError, match="JSON compliant"):
        metadata.to_json()


@pytest.mark.parametrize(("figure", "message"), [
    (float("nan"), r"is left unchanged: its new metadata is not standard JSON"),
    (1.5, r"is left unchanged: its new metadata: metadata is incomplete or malformed "
          r"\(real_road_check.tasks.lane.iou 1.5 is not a share in 0..1\)$"),
])
def test_record_metadata_refuses_what_the_reader_would_refuse_before_touching_the_file(model, figure, message):
    from perception.modelfile import read_model_metadata, record_metadata

    before = model.read_bytes()
    with pytest.raises(ModelError, match=message):
        record_metadata(model, real_road_check={"tasks": {"lane": {"iou": figure}}})
    assert model.read_bytes() == before
    read_model_metadata(model)


def test_a_file_an_older_record_broke_with_nan_loads_with_a_warning_and_records_again(tmp_path, model, caplog, capsys):
    """Written as the older --record wrote it (JSON NaN): read as undefined with one warning naming
    the figures and the fix, and a new --record stores null."""
    import onnx

    from perception.modelfile import read_model_metadata

    proto = onnx.load(str(model))
    prop = next(p for p in proto.metadata_props if p.key == METADATA_KEY)
    doc = json.loads(prop.value)
    doc["real_road_check"] = {"data": "x", "frames": 3, "tasks": {"lane": {"iou": 0.0, "precision": 0.0,
                                                                           "recall": float("nan")}}}
    prop.value = json.dumps(doc)  # NaN, as json.dumps writes it by default
    onnx.save(proto, str(model))
    with caplog.at_level(logging.WARNING):
        check = read_model_metadata(model).real_road_check
    assert check["tasks"]["lane"]["recall"] is None
    (warning,) = [r.getMessage() for r in caplog.records if "NaN" in r.getMessage()]
    assert "real_road_check.tasks.lane.recall as NaN" in warning and "--record' on it again" in warning
    spec = _synth_folder(tmp_path / "d")
    assert cli_main(["eval", "--model", str(model), "--data", spec, "--tasks", "drivable", "--record"]) == 0
    capsys.readouterr()
    assert "NaN" not in _raw_metadata(model)


# ------------------------------------------------------------------------------------------------
# F2: labels with void 0 and classes 1..N
# ------------------------------------------------------------------------------------------------


def _zero_void_copy(src, dst) -> str:
    """``src`` (a synth folder, void 255) as ADE20K stores it: void 0, class k as k + 1."""
    import shutil

    shutil.copytree(src, dst)
    for path in (dst / "labels").iterdir():
        label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.int32)
        assert cv2.imwrite(str(path), np.where(label == 255, 0, label + 1).astype(np.uint8))
    table = yaml.safe_load((dst / "classes.yaml").read_text())
    table["ignore_id"] = 0
    for entry in table["classes"]:
        entry["id"] += 1
    (dst / "classes.yaml").write_text(yaml.safe_dump(table))
    return f"folder:{dst}"


def test_labels_with_void_0_and_classes_from_1_read_as_the_usual_numbering(tmp_path):
    from perception.datasets import open_dataset

    src = tmp_path / "usual"
    _synth_folder(src)
    first = cv2.imread(str(next((src / "labels").iterdir())), cv2.IMREAD_UNCHANGED)
    first[:4] = 255  # some void
    for path in (src / "labels").iterdir():
        assert cv2.imwrite(str(path), first)
    spec = _zero_void_copy(src, tmp_path / "ade")
    usual, ade = (open_dataset(s, split="val") for s in (f"folder:{src}", spec))
    assert ade.class_table == usual.class_table  # classes 0..N-1, ignore id 255: what a model carries
    for i in range(len(usual)):
        assert np.array_equal(ade[i][1], usual[i][1])
    assert (ade[0][1] == 255).any()


def test_eval_scores_zero_void_labels_as_the_same_labels_stored_the_usual_way(tmp_path, model, capsys):
    src = tmp_path / "usual"
    usual = _synth_folder(src)
    ade = _zero_void_copy(src, tmp_path / "ade")
    figures = []
    for spec in (usual, ade):
        assert cli_main(["eval", "--model", str(model), "--data", spec, "--tasks", "--json", "-"]) == 0
        figures.append(json.loads(capsys.readouterr().out)["tasks"])
    assert figures[0] == figures[1]


@pytest.mark.parametrize(("start", "ignore", "first"), [
    (0, 0, "ignore id 0 collides with a class id"),
    (1, 255, "class ids must be 0..11 in order, got [1, 2,"),
])
def test_a_table_for_void_0_written_another_way_names_the_fix(tmp_path, start, ignore, first):
    from perception.datasets import open_dataset

    root = tmp_path / "d"
    _synth_folder(root)
    table = yaml.safe_load((root / "classes.yaml").read_text())
    table["ignore_id"] = ignore
    for class_id, entry in enumerate(table["classes"], start):
        entry["id"] = class_id
    (root / "classes.yaml").write_text(yaml.safe_dump(table))
    with pytest.raises(DataError) as info:
        open_dataset(f"folder:{root}", split="val")
    assert first in str(info.value)
    assert str(info.value).endswith("number the classes from 1 (id: 1, 2, ...) and set ignore_id: 0: they are read "
                                    "as classes 0..N-1 with ignore id 255")


# ------------------------------------------------------------------------------------------------
# F3, F4, F5, F6: what the table says
# ------------------------------------------------------------------------------------------------


def test_plain_tasks_name_a_task_only_one_side_defines(tmp_path, model, capsys):
    spec = _synth_folder(tmp_path / "d")
    report = tmp_path / "eval.json"
    assert cli_main(["eval", "--model", str(model), "--data", spec, "--tasks", "--data-task", "sky=sky",
                     "--json", str(report)]) == 0
    out = capsys.readouterr().out
    note = (f"sky: not scored, model {model} has no sky group (add --task sky=CLASS[,CLASS] to score it)")
    assert f"note: {note}\n" in out
    assert note in json.loads(report.read_text())["notes"]


def test_the_header_counts_scored_and_ignored_pixels(tmp_path, model, capsys):
    spec = _synth_folder(tmp_path / "d", count=3)
    for label_file in (tmp_path / "d" / "labels").iterdir():
        label = cv2.imread(str(label_file), cv2.IMREAD_UNCHANGED)
        label[:10] = 255
        assert cv2.imwrite(str(label_file), label)
    report = tmp_path / "eval.json"
    assert cli_main(["eval", "--model", str(model), "--data", spec, "--tasks", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    data = json.loads(report.read_text())
    assert data["ignored_pixels"] >= 10 * HW[1]
    assert data["labelled_pixels"] + data["ignored_pixels"] == HW[0] * HW[1]  # val: 1 image
    assert (f"scored on {data['labelled_pixels']:,} labelled pixels, {data['ignored_pixels']:,} ignored "
            "(ignore id 255)\n") in out


@pytest.mark.parametrize("quiet", [False, True])
def test_a_long_evaluation_shows_progress_unless_quiet(tmp_path, model, capsys, monkeypatch, quiet):
    from perception.commands import eval as eval_command
    from perception.progress import set_quiet

    monkeypatch.setattr(eval_command, "PROGRESS_MIN_IMAGES", 1)
    spec = _synth_folder(tmp_path / "d", flat=True)
    try:
        assert cli_main([*(["-q"] if quiet else []), "eval", "--model", str(model), "--data", spec, "--tasks"]) == 0
    finally:
        set_quiet(False)
    err = capsys.readouterr().err
    assert ("eval: done, 3 images in" in err) != quiet


def test_a_flat_folder_is_said_to_be_the_whole_folder(tmp_path, model, capsys):
    spec = _synth_folder(tmp_path / "d", flat=True)
    assert cli_main(["eval", "--model", str(model), "--data", spec, "--tasks", "drivable"]) == 0
    out = capsys.readouterr().out
    assert (f"{model} on {spec} (val: the whole folder, which has no split lists or split folders; 3 images)"
            in out.splitlines()[0])
    assert cli_main(["eval", "--model", str(model), "--data", _synth_folder(tmp_path / "l"), "--tasks",
                     "drivable"]) == 0
    assert "(val, 1 image)" in capsys.readouterr().out.splitlines()[0]


def test_tiny_error_shares_print_as_under_a_tenth_of_a_percent():
    from perception.training.evaluate import TaskScore, format_task_table

    score = TaskScore("obstacle", ("car",), ("Car",), true_positive=5, false_positive=10_000)
    score.claimed_where = {"Road": 9_999, "Bicycle": 1}
    assert "false positives where the label is: Road 100.0 %, Bicycle <0.1 %" in format_task_table([score])


def test_a_class_name_of_another_case_is_suggested():
    from perception.errors import ConfigError
    from perception.masks import check_group_classes

    with pytest.raises(ConfigError, match=r"--data-task drivable=ROAD: dataset has no class 'ROAD' \(did you mean "
                                          r"'road'\?\); its classes: road, "):
        check_group_classes("drivable", ["ROAD"], SYNTHETIC_CLASSES, flag="--data-task", owner="dataset")


def test_a_grey_and_alpha_label_is_described_as_such(tmp_path):
    from PIL import Image

    from perception.datasets import open_dataset

    root = tmp_path / "d"
    spec = _synth_folder(root)
    for path in (root / "labels").iterdir():
        ids = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        Image.fromarray(np.dstack([ids, np.full_like(ids, 255)]), mode="LA").save(path)
    with pytest.raises(DataError, match=r"which is not in the class table; it looks like class ids saved as a grey "
                                        r"image with an alpha channel \(grey\+alpha\): save them as a single-channel "
                                        r"8-bit PNG, without alpha$"):
        open_dataset(spec, split="val")[0]


def test_metadata_without_nan_reads_back_unchanged():
    """The reader's NaN repair leaves good metadata as it was (the same JSON after a round trip)."""
    from tiny_models import tiny_metadata

    check = {"data": "x", "tasks": {"lane": {"iou": 0.5, "precision": None, "recall": 1.0}}}
    text = tiny_metadata(HW, real_road_check=check).to_json()
    assert ModelMetadata.from_json(text).to_json() == text


def test_a_nan_in_a_field_no_other_check_reads_is_refused_naming_it():
    """model_kwargs NaN was read and kept, and to_json (now strict) would fail later, at the node's
    info message or a metadata rewrite: refused when read, naming the key."""
    from tiny_models import tiny_metadata

    doc = json.loads(tiny_metadata(HW).to_json())
    doc["model_kwargs"] = {"width": [1.0, float("nan")]}
    with pytest.raises(ModelError, match=r"^m.onnx: metadata is incomplete or malformed \(model_kwargs.width\[1\] is "
                                         r"not a finite number\); re-export the model$"):
        ModelMetadata.from_json(json.dumps(doc), source="m.onnx")
