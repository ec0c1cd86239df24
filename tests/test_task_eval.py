"""Task-level evaluation across class tables, and the deploy preprocessing shared by evaluation,
export verification, calibration loading and training validation (the node's letterbox).

A stub engine (no model file) predicts a known class map so every count can be checked by hand.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from perception.contracts import ClassInfo, ClassTable
from perception.errors import ConfigError
from perception.preprocess import Letterbox, Preprocessor, letterbox_image, letterbox_label
from perception.training.evaluate import (
    evaluate_engine,
    evaluate_tasks,
    format_task_table,
    resolve_task_groups,
)

#: The model's classes (like the synthetic world's) ...
MODEL_TABLE = ClassTable(
    classes=(ClassInfo(0, "road", (0, 0, 0)), ClassInfo(1, "lane_marking", (1, 1, 1)), ClassInfo(2, "car", (2, 2, 2)),
             ClassInfo(3, "sky", (3, 3, 3))),
    ignore_id=255,
    task_groups={"drivable": ("road", "lane_marking"), "lane": ("lane_marking",), "obstacle": ("car",)},
)
#: ... and a dataset's, with other names, ids and groups (like CamVid's; no lane group).
DATA_TABLE = ClassTable(
    classes=(ClassInfo(0, "Sky", (0, 0, 0)), ClassInfo(1, "Vehicle", (1, 1, 1)), ClassInfo(2, "Street", (2, 2, 2))),
    ignore_id=255,
    task_groups={"drivable": ("Street",), "obstacle": ("Vehicle",)},
)


class StubEngine:
    """Returns a fixed class map of the input size; records the batches it was given."""

    def __init__(self, class_ids: np.ndarray, table: ClassTable = MODEL_TABLE) -> None:
        self.class_ids = class_ids
        self.input_hw = class_ids.shape
        self.metadata = SimpleNamespace(class_table=table, dataset="")
        self.model_path = "stub.onnx"
        self.batches: list[np.ndarray] = []

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.batches.append(batch.copy())
        return {"class_ids": self.class_ids[None]}


class ListDataset:
    def __init__(self, samples, table: ClassTable = DATA_TABLE) -> None:
        self.samples = samples
        self.class_table = table
        self.name = "list"

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        return self.samples[index]


def test_tasks_map_each_side_through_its_own_groups():
    # 2 x 4 frame, model input the same size (no letterbox padding).
    predicted = np.array([[0, 1, 2, 3], [0, 0, 2, 2]], dtype=np.uint8)  # road lane car sky / road road car car
    label = np.array([[2, 2, 1, 0], [2, 255, 1, 2]], dtype=np.uint8)  # Street Street Vehicle Sky / Street ign Vehicle Street
    engine = StubEngine(predicted)
    dataset = ListDataset([(np.zeros((2, 4, 3), np.uint8), label)])
    scores = evaluate_tasks(engine, dataset, resolve_task_groups(MODEL_TABLE, DATA_TABLE))
    by_task = {s.task: s for s in scores}
    assert list(by_task) == ["drivable", "obstacle"]  # lane: the dataset has no such group
    drivable = by_task["drivable"]  # model road|lane vs Street; the ignored pixel counts for nothing
    assert (drivable.true_positive, drivable.false_positive, drivable.false_negative) == (3, 0, 1)
    assert drivable.iou == pytest.approx(3 / 4)
    obstacle = by_task["obstacle"]  # car vs Vehicle
    assert (obstacle.true_positive, obstacle.false_positive, obstacle.false_negative) == (2, 1, 0)
    assert obstacle.precision == pytest.approx(2 / 3) and obstacle.recall == 1.0
    # Where the errors fell: the model's car on a Street pixel is obstacle's false positive and
    # drivable's false negative.
    assert obstacle.claimed_where == {"Street": 1} and obstacle.missed_as == {}
    assert drivable.missed_as == {"car": 1} and drivable.claimed_where == {}
    assert obstacle.to_dict()["false_positive_by_label"] == {"Street": 1}
    table = format_task_table(scores)
    assert "road,lane_marking -> Street" in table
    assert "false positives where the label is: Street 100.0 %" in table
    assert "false negatives where the model said: car 100.0 %" in table


def test_task_overrides_define_new_groups_on_both_sides():
    scores = resolve_task_groups(
        MODEL_TABLE, DATA_TABLE, tasks=["sky", "obstacle"], model_overrides={"sky": ["sky"]},
        data_overrides={"sky": ["Sky"], "obstacle": ["Vehicle", "Sky"]},
    )
    assert [(s.task, s.model_classes, s.data_classes) for s in scores] == [
        ("sky", ("sky",), ("Sky",)), ("obstacle", ("car",), ("Vehicle", "Sky"))
    ]
    with pytest.raises(ConfigError, match=r"task 'lane': dataset has no such task group .*--data-task lane=CLASS"):
        resolve_task_groups(MODEL_TABLE, DATA_TABLE, tasks=["lane"])
    with pytest.raises(ConfigError, match=r"--data-task sky=Cloud: dataset has no class 'Cloud'; its classes: Sky, Vehicle, Street"):
        resolve_task_groups(MODEL_TABLE, DATA_TABLE, tasks=["sky"], data_overrides={"sky": ["Cloud"]})
    lonely = ClassTable(classes=(ClassInfo(0, "x", (0, 0, 0)),))
    with pytest.raises(ConfigError, match="share no task"):
        resolve_task_groups(MODEL_TABLE, lonely)


def test_evaluation_letterboxes_like_the_node_and_maps_masks_back():
    # A 4 x 8 frame into a 4 x 4 model input: content 2 x 4 at row 1, rows 0 and 3 padding.
    image = np.arange(4 * 8 * 3, dtype=np.uint8).reshape(4, 8, 3)
    predicted = np.full((4, 4), 3, dtype=np.uint8)  # sky in the padding rows (must be cut off)
    predicted[1:3] = [[0, 0, 2, 2], [0, 0, 2, 2]]  # left half road, right half car
    engine = StubEngine(predicted)
    label = np.zeros((4, 8), np.uint8)
    label[:, :4], label[:, 4:] = 2, 1  # Street left, Vehicle right
    scores = evaluate_tasks(engine, ListDataset([(image, label)]), resolve_task_groups(MODEL_TABLE, DATA_TABLE))
    assert all(s.iou == 1.0 for s in scores), [(s.task, s.iou) for s in scores]
    # The engine saw exactly the node's preprocessing of the frame.
    node_batch = Preprocessor((4, 4))(image)
    np.testing.assert_array_equal(engine.batches[0], node_batch)
    # Per-class evaluation (same class table) goes through the same path.
    same = ListDataset([(image, np.where(label == 2, 0, 2).astype(np.uint8))], table=MODEL_TABLE)
    cm = evaluate_engine(engine, same)
    assert cm.global_accuracy() == 1.0


def test_letterbox_helpers_match_the_node_preprocessor():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    boxed, letterbox = letterbox_image(image, (352, 480))
    np.testing.assert_array_equal(boxed, Preprocessor((352, 480))(image)[0])
    assert letterbox == Letterbox.fit((360, 480), (352, 480)) and letterbox.padded
    label = rng.integers(0, 11, (360, 480), dtype=np.uint8)
    placed = letterbox_label(label, letterbox, fill=255)
    top, left = letterbox.offset_yx
    assert (placed[:, :left] == 255).all() and (letterbox.content(placed) < 11).all()
    # Label and image share the pixel-centre grid: mapping the placed label back is exact enough
    # that nearly every source pixel gets its own label (nearest twice loses only the seams).
    assert (letterbox.to_source(placed) == label).mean() > 0.95


def test_export_samples_and_training_validation_use_the_letterbox():
    torch = pytest.importorskip("torch")
    from perception.export.verify import LABEL_PAD, resize_sample
    from perception.training.augment import EvalSamples, normalise_bgr

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    label = rng.integers(0, 11, (360, 480), dtype=np.uint8)
    boxed, letterbox = letterbox_image(image, (352, 480))
    sample_image, sample_label = resize_sample(image, label, (352, 480))
    np.testing.assert_array_equal(sample_image, boxed)
    np.testing.assert_array_equal(sample_label, letterbox_label(label, letterbox, fill=LABEL_PAD))
    tensor, full_label, content = EvalSamples(ListDataset([(image, label)]), (352, 480))[0]
    assert torch.equal(tensor, normalise_bgr(boxed))
    assert full_label.shape == (360, 480)
    assert content.tolist() == [*letterbox.offset_yx, *letterbox.content_hw]


def test_eval_records_the_real_road_check_and_draws_a_contact_sheet(tmp_path, capsys):
    """`perception eval --tasks --record --contact-sheet`: the task figures land in the model's
    metadata (what `perception inspect` shows) equal to a direct evaluation, and the sheet holds
    the frames spread over the dataset."""
    import cv2
    from tiny_models import write_brightness_model

    from perception.cli import main as cli_main
    from perception.datasets import open_dataset
    from perception.engines import EngineOptions, load_engine
    from perception.modelfile import describe_model, read_model_metadata

    model = write_brightness_model(tmp_path / "m.onnx", (48, 64))
    spec = "synthetic:count=5,seed=3,size=48x64"
    sheet = tmp_path / "sheet.png"
    argv = ["eval", "--model", str(model), "--data", spec, "--split", "train", "--tasks", "drivable,obstacle",
            "--record", "--contact-sheet", str(sheet), "--sheet-count", "4"]
    assert cli_main(argv) == 0
    check = read_model_metadata(model).real_road_check
    assert check["data"] == spec and check["frames"] == 5 and check["input_hw"] == [48, 64]
    engine = load_engine("ort", model, EngineOptions(provider="cpu", threads=1))
    dataset = open_dataset(spec, split="train")
    scores = resolve_task_groups(engine.metadata.class_table, dataset.class_table, tasks=["drivable", "obstacle"])
    evaluate_tasks(engine, dataset, scores)
    for s in scores:
        assert check["tasks"][s.task]["iou"] == pytest.approx(s.iou)
    assert any(line.startswith("real road  drivable IoU") for line in _inspect_lines(describe_model(model)))
    image = cv2.imread(str(sheet))
    assert image is not None and image.shape[1] == 3 * 400  # 4 frames: a row of 3, then 1
    capsys.readouterr()


def _inspect_lines(description) -> list[str]:
    from perception.commands.inspect import format_description

    return format_description(description)


def test_eval_record_and_sheet_flags_fail_before_any_work(tmp_path, tiny_model_path):
    import argparse

    from perception.commands.eval import EvalConfig, _check_config
    from perception.commands.eval import add_arguments as eval_arguments
    from perception.flags import config_from_flags

    parser = argparse.ArgumentParser()
    eval_arguments(parser)
    bad = {
        ("--record",): "needs --tasks and --model",
        ("--tasks", "--contact-sheet", str(tmp_path / "no" / "x.png")): "folder .* does not exist",
        ("--contact-sheet", str(tmp_path / "x.jpg")): "give a .png file name",
        ("--contact-sheet", str(tmp_path / "x.png"), "--sheet-count", "0"): "--sheet-count 0 must be >= 1",
    }
    for extra, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            args = parser.parse_args(["--model", str(tiny_model_path), *extra])
            _check_config(config_from_flags(EvalConfig, args, source="perception eval"))


def _synth_folder(root, count: int = 3, *, label=None):
    """A tiny `perception synth` folder (48x64); ``label`` (a class id or 255) overwrites every label."""
    import cv2

    from perception.synthetic.dataset import write_dataset

    write_dataset(root, count=count, height=48, width=64, seed=5, split={"val": 0.3})
    if label is not None:
        for path in (root / "labels").iterdir():
            assert cv2.imwrite(str(path), np.full((48, 64), label, np.uint8))
    return f"folder:{root}"


@pytest.mark.parametrize("extra", [(), ("--tasks",), ("--tasks", "drivable,obstacle")])
def test_eval_on_labels_that_are_all_ignore_is_one_error_naming_the_dataset(tmp_path, tiny_model_path, capsys, extra):
    """Every label pixel void: plain and --tasks eval printed n/a / "-" figures and exited 0, --json
    wrote nulls. Now one line naming the dataset and its ignore id, exit 2, no --json written."""
    from perception.cli import main as cli_main

    spec = _synth_folder(tmp_path / "void", label=255)
    report = tmp_path / "eval.json"
    rc = cli_main(["eval", "--model", str(tiny_model_path), "--data", spec, "--json", str(report), *extra])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ""
    assert captured.err == (f"perception: error: every label pixel of {spec} (val, 1 image) is the ignore id 255: there "
                            "are no labelled pixels to score; check the labels (they should hold class ids 0..11) and "
                            "the class table's classes and ignore_id\n")
    assert not report.exists()


def test_eval_tasks_say_why_a_figure_is_missing(tmp_path, tiny_model_path, capsys):
    """A task the dataset has no pixel of (every label sky here) keeps its "-" but gets one line
    saying why, in the table and in --json; the other tasks are scored as usual."""
    import json

    from perception.cli import main as cli_main
    from perception.synthetic import SYNTHETIC_CLASSES

    spec = _synth_folder(tmp_path / "sky", label=SYNTHETIC_CLASSES.id_of("sky"))
    report = tmp_path / "eval.json"
    rc = cli_main(["eval", "--model", str(tiny_model_path), "--data", spec, "--tasks", "drivable,lane,obstacle",
                   "--json", str(report)])
    out = capsys.readouterr().out
    assert rc == 0
    data = json.loads(report.read_text())
    assert data["labelled_pixels"] == 48 * 64
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert [n.removeprefix("note: ") for n in notes] == data["notes"]
    assert len(notes) == 3  # one per task: the dataset labels none of them
    for task in ("drivable", "lane", "obstacle"):
        figures = data["tasks"][task]
        assert figures["recall"] is None
        (note,) = (n for n in notes if n.startswith(f"note: {task}: "))
        classes = ",".join(figures["data_classes"])
        if figures["iou"] is None:
            assert f"IoU, precision and recall -: {spec} labels no pixel of {classes} and the model predicted none" in note
        else:
            assert f"recall -: {spec} labels no pixel of {classes} (IoU 0 from the model's" in note


def test_plain_evaluation_across_two_class_tables_points_to_task_evaluation():
    """A model scored on data labelled with another class table: the error names both tables and
    the way to compare them anyway (by task group)."""
    from perception.errors import DataError

    engine = StubEngine(np.zeros((4, 6), np.uint8))
    data = ListDataset([(np.zeros((4, 6, 3), np.uint8), np.zeros((4, 6), np.uint8), "a")])
    with pytest.raises(DataError, match=r"stub.onnx predicts classes \['road', .*\], but dataset 'list' labels "
                                        r"\['Sky', 'Vehicle', 'Street'\]; .* with 'perception eval --tasks'$"):
        evaluate_engine(engine, data)


@pytest.mark.parametrize("extra", [(), ("--tasks", "drivable")])
def test_eval_json_dash_prints_the_json_alone_on_stdout(tmp_path, tiny_model_path, capsys, monkeypatch, extra):
    """Hunt 5d: listen --json and inspect --json print to stdout, but eval --json - wrote a file
    named '-'. Now the JSON alone goes to stdout (so '| jq .' works) and the table to stderr."""
    import json

    from perception.cli import main as cli_main

    monkeypatch.chdir(tmp_path)
    spec = "synthetic:count=2,size=48x64"
    assert cli_main(["eval", "--model", str(tiny_model_path), "--data", spec, "--json", "-", *extra]) == 0
    captured = capsys.readouterr()
    figures = json.loads(captured.out)  # nothing else on stdout
    assert figures["data"] == spec and figures["split"] == "val"
    assert f"on {spec} (val, 2 images)" in captured.err
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize(("flags", "message"), [
    (("--data", "nope"), "unknown dataset kind 'nope'"),
    (("--data", "synthetic", "--split", "nope"), "unknown split 'nope'"),
    (("--checkpoint", "nope.pt", "--data", "synthetic"), "checkpoint nope.pt not found"),
    (("--model", "nope.onnx", "--data", "synthetic"), "model file nope.onnx not found"),
])
def test_eval_checks_its_inputs_before_it_loads_a_model(tmp_path, tiny_model_path, capsys, caplog, monkeypatch, flags,
                                                         message):
    """Hunt 5d: a bad --data or --split was found after the model loaded, and a missing checkpoint
    after the line "evaluating nope.pt on synthetic ...". Now one line, exit 2, nothing loaded."""
    import perception.engines
    from perception.cli import main as cli_main

    def no_loading(*_args, **_kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(perception.engines, "load_engine", no_loading)
    monkeypatch.chdir(tmp_path)
    what = () if "--checkpoint" in flags or "--model" in flags else ("--model", str(tiny_model_path))
    assert cli_main(["eval", *what, *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("perception: error: ") and message in err and err.count("\n") == 1
    assert not [r for r in caplog.records if "evaluating" in r.getMessage()]


def test_eval_device_cuda_without_a_gpu_names_eval_s_own_flag(tiny_model_path, capsys):
    """Hunt 5d: the advice was '--provider cpu', a flag eval does not have; a missing GPU is a
    missing dependency (exit 3), as for run --provider cuda."""
    import onnxruntime

    from perception.cli import main as cli_main

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this ONNX Runtime has CUDA")
    assert cli_main(["eval", "--model", str(tiny_model_path), "--data", "synthetic:count=2", "--device", "cuda"]) == 3
    err = capsys.readouterr().err
    assert "use --device cpu" in err and "--provider" not in err and err.count("\n") == 1


@pytest.mark.parametrize(("mask_size", "street_found"), [("model", 8), ("source", 4)])
def test_the_drivable_reach_is_judged_at_the_scale_the_node_judges_it(mask_size, street_found):
    """Hunt 6b: a frame smaller than the model input. The node (``--mask-size model``, its default)
    joins the drivable area to the car at model scale, where a thin strip of road joins the far
    patch; at the frame's scale (``--mask-size source``) the strip is gone and the far patch is cut.
    eval scored only the second way."""
    image = np.zeros((4, 4, 3), np.uint8)  # upscaled x2 into the 8 x 8 input, no padding
    predicted = np.full((8, 8), 3, dtype=np.uint8)  # sky
    predicted[0:2] = 0  # the far road patch (frame row 0)
    predicted[6:8] = 0  # the road under the car (frame row 3)
    predicted[2:6, 2] = 0  # the strip joining them: column 2, which the nearest map back skips
    label = np.zeros((4, 4), np.uint8)  # Sky
    label[0], label[3] = 2, 2  # Street where the frame shows road
    scores = [s for s in resolve_task_groups(MODEL_TABLE, DATA_TABLE) if s.task == "drivable"]
    evaluate_tasks(StubEngine(predicted), ListDataset([(image, label)]), scores, mask_size=mask_size)
    (drivable,) = scores
    assert (drivable.true_positive, drivable.false_negative, drivable.false_positive) == (street_found, 8 - street_found, 0)
    assert drivable.missed_as.get("unreachable", 0) == 8 - street_found
