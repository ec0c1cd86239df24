"""Reading exported model files without torch: metadata, the I/O contract and clear errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from perception.cli import main as cli_main
from perception.contracts import INPUT_NAME, METADATA_KEY, OUTPUT_CLASS_IDS
from perception.errors import ModelError
from perception.model_metadata import ModelMetadata
from perception.modelfile import describe_model, read_model_metadata
from perception.synthetic import SYNTHETIC_CLASSES

HW = (4, 6)


def _graph_model(*, input_type=TensorProto.UINT8, output_name=OUTPUT_CLASS_IDS, metadata: ModelMetadata | None = None):
    """A tiny contract-shaped graph: uint8 NHWC in, argmax over channels as uint8 N x H x W out."""
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ArgMax", ["x"], ["ids64"], axis=3, keepdims=0),
        helper.make_node("Cast", ["ids64"], [output_name], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(INPUT_NAME, input_type, [1, *HW, 3])],
        [helper.make_tensor_value_info(output_name, TensorProto.UINT8, [1, *HW])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="test")
    model.ir_version = 10  # what the exporter writes; onnx.helper defaults to a newer IR than ORT reads
    if metadata is not None:
        helper.set_model_props(model, {METADATA_KEY: metadata.to_json()})
    onnx.checker.check_model(model)
    return model


def _meta(**changes) -> ModelMetadata:
    values = {"model_name": "segnet", "class_table": SYNTHETIC_CLASSES, "input_hw": HW, "dataset": "synthetic",
              "val_metrics": {"miou": 0.5}}
    values.update(changes)
    return ModelMetadata(**values)


def _write(tmp_path, model, name="m.onnx"):
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def test_metadata_round_trip_and_description(tmp_path):
    meta = _meta()
    path = _write(tmp_path, _graph_model(metadata=meta))
    assert read_model_metadata(path) == meta
    d = describe_model(path)
    assert d.op_counts == {"Cast": 2, "ArgMax": 1}
    assert d.inputs[0].to_dict() == {"name": INPUT_NAME, "dtype": "uint8", "shape": [1, *HW, 3]}
    assert d.outputs[0].dtype == "uint8" and d.size_bytes == path.stat().st_size
    assert d.to_dict()["metadata"]["class_table"]["task_groups"]["lane"] == ["lane_marking"]


def test_the_graph_really_runs_as_described(tmp_path):
    import onnxruntime as ort

    path = _write(tmp_path, _graph_model(metadata=_meta()))
    image = np.zeros((1, *HW, 3), np.uint8)
    image[..., 2] = 9  # red is the largest channel everywhere -> class 2
    (ids,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {INPUT_NAME: image})
    assert ids.dtype == np.uint8 and (ids == 2).all()


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match=r"model file .*nope.onnx not found; check the path"):
        read_model_metadata(tmp_path / "nope.onnx")


def test_truncated_and_corrupt_files(tmp_path):
    data = _graph_model(metadata=_meta()).SerializeToString()
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError, match=r"cut.onnx .*truncated"):
        read_model_metadata(truncated)
    corrupt = tmp_path / "junk.onnx"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    with pytest.raises(ModelError, match=r"junk.onnx .*(truncated|corrupt)"):
        read_model_metadata(corrupt)


def test_model_without_metadata(tmp_path):
    path = _write(tmp_path, _graph_model())
    with pytest.raises(ModelError) as info:
        read_model_metadata(path)
    assert str(info.value) == "m.onnx has no perception metadata; export it with 'perception export'"


def test_io_not_matching_the_contract(tmp_path):
    path = _write(tmp_path, _graph_model(input_type=TensorProto.FLOAT, metadata=_meta()))
    with pytest.raises(ModelError, match=r"input 'image' is float32 .* expected uint8 \[N, 4, 6, 3\]"):
        read_model_metadata(path)
    path = _write(tmp_path, _graph_model(metadata=_meta(input_hw=(8, 6))), "size.onnx")
    with pytest.raises(ModelError, match=r"size.onnx: input 'image' is uint8 \[1, 4, 6, 3\], expected uint8 \[N, 8, 6, 3\]"):
        read_model_metadata(path)
    path = _write(tmp_path, _graph_model(metadata=_meta(has_confidence=True)), "conf.onnx")
    with pytest.raises(ModelError, match=r"output 'confidence' is missing"):
        read_model_metadata(path)
    path = _write(tmp_path, _graph_model(output_name="labels", metadata=_meta()), "name.onnx")
    with pytest.raises(ModelError, match=r"output 'class_ids' is missing \(found labels\)"):
        read_model_metadata(path)


@pytest.mark.parametrize("kind", ["truncated", "no-metadata"])
def test_cli_inspect_errors_are_one_line(tmp_path, kind):
    data = _graph_model(metadata=None if kind == "no-metadata" else _meta()).SerializeToString()
    path = tmp_path / "m.onnx"
    path.write_bytes(data[: len(data) // 2] if kind == "truncated" else data)
    proc = subprocess.run([sys.executable, "-m", "perception", "inspect", str(path)], capture_output=True, text=True)
    assert proc.returncode == ModelError.exit_code
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and re.match(r"perception: error: \S*m\.onnx ", lines[0]), lines  # the file, as given


def test_inspect_prints_metadata_without_torch(tmp_path):
    path = _write(tmp_path, _graph_model(metadata=_meta()))
    code = (
        "import sys; from perception.cli import main; rc = main(['inspect', sys.argv[1]]);"
        "sys.exit(rc or (3 if 'torch' in sys.modules else 0))"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for needle in ("segnet", "synthetic", "mIoU 50.00 %", "lane_marking", "obstacle", "ArgMax", "uint8", "[1, 4, 6]"):
        assert needle in proc.stdout, needle


def test_inspect_labels_the_training_validation_as_the_checkpoint_s(tmp_path, capsys):
    """hunt4d: a file exported at 96x128 from a checkpoint trained and validated at 64x96 showed
    the checkpoint's mIoU as its own."""
    from tiny_models import tiny_metadata, write_brightness_model

    from perception.cli import main as cli_main

    meta = tiny_metadata((96, 128), val_metrics={"miou": 0.5, "global_acc": 0.9, "class_acc": 0.6, "step": 40,
                                                  "input_hw": [64, 96]})
    path = write_brightness_model(tmp_path / "m.onnx", (96, 128), metadata=meta)
    assert cli_main(["inspect", str(path)]) == 0
    assert ("val        mIoU 50.00 %, global acc 90.00 %, class acc 60.00 %: the checkpoint's validation in training "
            "(step 40, at 64x96, this file 96x128); perception eval --model scores this file") in capsys.readouterr().out


def test_inspect_json(tmp_path, capsys):
    import json

    path = _write(tmp_path, _graph_model(metadata=_meta()))
    assert cli_main(["inspect", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["metadata"]["model_name"] == "segnet" and doc["op_counts"]["ArgMax"] == 1
    assert doc["outputs"] == [{"name": OUTPUT_CLASS_IDS, "dtype": "uint8", "shape": [1, *HW]}]


@pytest.mark.parametrize("input_hw, message", [
    ("[Infinity, 1]", "is not [height, width] in whole pixels"),
    ("[1e400, 1]", "is not [height, width] in whole pixels"),
    ("[true, true]", "is not [height, width] in whole pixels"),
    ("[352.9, 480]", "is not [height, width] in whole pixels"),
    ('"12"', "is not [height, width] in whole pixels"),
    ("[352, 480, 3]", "is not [height, width] in whole pixels"),
    ("[0, 480]", "each side must be 1..16384"),
    ("[16385, 1]", "each side must be 1..16384"),
    ("[4097, 4096]", "more than 16777216"),
])
def test_a_hostile_input_size_is_one_model_error(input_hw, message):
    text = _meta().to_json().replace('"input_hw": [4, 6]', f'"input_hw": {input_hw}')
    assert input_hw in text
    with pytest.raises(ModelError, match=re.escape(message)) as info:
        ModelMetadata.from_json(text, source="m.onnx")
    assert str(info.value).startswith("m.onnx: ") and "\n" not in str(info.value)


def _mutated(change) -> str:
    doc = json.loads(_meta(model_name="segnet", class_table=SYNTHETIC_CLASSES).to_json())
    change(doc)
    return json.dumps(doc)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["class_table"].update(task_groups=["drivable"]), "is not a mapping of task to class names"),
    (lambda d: d["class_table"]["classes"][0].update(color=[999, -1, 0]), "is not three values 0..255"),
    (lambda d: d["class_table"]["classes"][0].update(color="red"), "is not three values 0..255"),
    (lambda d: d["class_table"]["classes"][0].update(name=""), "is not 1..64 characters"),
    (lambda d: d["class_table"]["classes"][0].update(name="x" * 5_000_000), "is not 1..64 characters"),
    (lambda d: d["class_table"].update(ignore_id=999), "ignore_id 999 is not a class id"),
    (lambda d: d.update(model_name="m" * 300), "messages carry at most 256"),  # subscribers would refuse every message
])
def test_hostile_metadata_is_one_short_model_error(change, message):
    with pytest.raises(ModelError, match=re.escape(message)) as info:
        ModelMetadata.from_json(_mutated(change), source="m.onnx")
    assert len(str(info.value)) < 600 and "\n" not in str(info.value)


def test_saving_over_a_model_writes_through_its_link_and_keeps_its_permissions(tmp_path):
    from perception.modelfile import save_model

    target, link = tmp_path / "real.onnx", tmp_path / "link.onnx"
    save_model(_graph_model(metadata=_meta()), target)
    target.chmod(0o640)
    link.symlink_to(target)
    save_model(_graph_model(metadata=_meta(dataset="camvid")), link)  # e.g. python -m perception.export.unknown link.onnx
    assert link.is_symlink() and read_model_metadata(target).dataset == "camvid"
    assert target.stat().st_mode & 0o777 == 0o640 and not list(tmp_path.glob("*.tmp"))


def test_saving_where_nothing_can_be_written_is_one_config_error(tmp_path):
    from perception.errors import ConfigError
    from perception.modelfile import save_model

    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"cannot write .*file.txt/m.onnx \(.*\); choose a writable --out"):
        save_model(_graph_model(metadata=_meta()), tmp_path / "file.txt" / "m.onnx")  # every export tool's --out


def test_check_writable_fails_as_save_model_would_and_leaves_nothing(tmp_path):
    from perception.errors import ConfigError
    from perception.modelfile import check_writable

    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "folder.onnx").mkdir()
    for bad, why in ((tmp_path / "file.txt" / "m.onnx", "File exists|Not a directory"), (tmp_path / "folder.onnx", "Is a directory")):
        with pytest.raises(ConfigError, match=rf"cannot write .* \(({why})\); choose a writable --out"):
            check_writable(bad)
    check_writable(tmp_path / "new" / "m.onnx")  # creatable: fine, and no probe file left behind
    assert list((tmp_path / "new").iterdir()) == []


def test_a_pickled_checkpoint_and_paths_that_are_not_files_are_named(tmp_path):
    import os

    from perception.errors import why_not_a_file
    from perception.modelfile import load_model_proto

    (tmp_path / "old.pt").write_bytes(b"\x80\x02" + bytes(60))  # torch.save before the zip format
    with pytest.raises(ModelError, match=r"old.pt is a PyTorch checkpoint, not an ONNX model: export it"):
        load_model_proto(tmp_path / "old.pt")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert why_not_a_file(tmp_path / "pipe") == "is not a regular file (a device, pipe or socket)"
    assert why_not_a_file(tmp_path) == "is a directory"
    assert why_not_a_file(tmp_path / "nowhere") == "not found"
    assert why_not_a_file(tmp_path / "dangling") == "is a symbolic link to nothing"
    assert why_not_a_file(tmp_path / "file" / "x").startswith("cannot be reached (Not a directory")
