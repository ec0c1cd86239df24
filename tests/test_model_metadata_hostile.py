"""What a model file's metadata claims against what the file is (hunt s35 H5: F3, F10, F11).

- A file quantised by another tool (ONNX Runtime's ``quantize_static`` copies the FP32 file's
  metadata, ``precision: fp32`` included) is read as the INT8 file it is: ``inspect`` says
  ``precision int8 (graph; metadata says fp32)`` and gives its ``weights`` line, the engines and
  the model id say int8.
- Metadata values that would print nonsense or be misread are refused in one line naming the
  field: figures that are not shares in 0..1 (``mIoU inf %``), a logit adjustment without its tau
  (``tau abc of the None class weights``), an unknown precision, ``"false"`` for a flag.
- A right-to-left override or another invisible character in a metadata string is refused like a
  control character (the set the wire's topic check uses).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from test_model_files_hostile import set_metadata
from tiny_models import NUM_CLASSES, write_brightness_model, write_upsampling_model

from perception import contracts, wire
from perception.commands.inspect import format_description
from perception.engines import EngineOptions, load_engine
from perception.errors import ModelError
from perception.modelfile import describe_model, model_precision, read_model_metadata
from perception.modelfile_graph import graph_quantised
from perception.onnxwire import ModelHeader

HW = (48, 64)


# ------------------------------------------------------------------------------------------------
# A file quantised elsewhere: the graph says int8, the metadata fp32
# ------------------------------------------------------------------------------------------------


def quantise_with_ort(source, out, fmt: str):
    """``source`` quantised by ONNX Runtime's own ``quantize_static`` (8-bit weights at full range);
    the tool copies the metadata as it is."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self.frames = iter([{"image": np.random.default_rng(i).integers(0, 256, (1, *HW, 3), dtype=np.uint8)}
                                for i in range(2)])

        def get_next(self):
            return next(self.frames, None)

    quantize_static(str(source), str(out), Frames(), quant_format=getattr(QuantFormat, fmt),
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    return out


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign_int8")
    plain = write_upsampling_model(root / "plain.onnx", HW)
    return {"plain": plain, "QDQ": quantise_with_ort(plain, root / "qdq.onnx", "QDQ"),
            "QOperator": quantise_with_ort(plain, root / "qop.onnx", "QOperator")}


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_a_file_quantised_elsewhere_is_read_as_int8_whatever_its_metadata_says(foreign, fmt):
    path = foreign[fmt]
    assert json.loads(ModelHeader.read(path).props[contracts.METADATA_KEY])["precision"] == "fp32"  # as copied
    assert model_precision(path) == ("int8", "fp32")
    metadata = read_model_metadata(path)
    assert metadata.precision == "int8" and metadata.model_id.endswith("-int8")
    assert graph_quantised(onnx.load(str(path))) and ModelHeader.read(path).quantised  # both readers agree
    lines = format_description(describe_model(path))
    assert "precision  int8 (graph; metadata says fp32)" in lines
    # quantize_static's default 8-bit weights use the full range: the VNNI warning is shown.
    assert any(line.startswith("weights    not shown within 7 bits: CPUs without VNNI") for line in lines), lines
    doc = describe_model(path).to_dict()
    assert (doc["precision"], doc["precision_from"], doc["metadata"]["precision"]) == ("int8", "graph", "fp32")


def test_a_float_file_keeps_its_precision_and_has_no_weights_line(foreign):
    path = foreign["plain"]
    assert model_precision(path) == ("fp32", "fp32") and not ModelHeader.read(path).quantised
    lines = format_description(describe_model(path))
    assert "precision  fp32" in lines and not any(line.startswith("weights") for line in lines)
    assert describe_model(path).to_dict()["precision_from"] == "metadata"


def test_the_engine_and_its_stats_say_int8_for_a_file_quantised_elsewhere(foreign):
    engine = load_engine("ort", foreign["QDQ"], EngineOptions(provider="cpu", threads=1))
    try:
        assert engine.precision == "int8" and engine.metadata.model_id.endswith("-int8")
    finally:
        engine.close()


def test_the_shipped_files_read_as_their_metadata_says():
    assets = contracts.__file__.rsplit("/", 1)[0] + "/assets/"
    assert model_precision(assets + "default.onnx") == ("fp32", "fp32")
    assert model_precision(assets + "default.int8.onnx") == ("int8", "int8")


# ------------------------------------------------------------------------------------------------
# Values that would print nonsense or be misread
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "says"), [
    ({"val_metrics": {"miou": 1e308}}, r"val_metrics\.miou 1e\+308 is not a share in 0\.\.1"),
    ({"val_metrics": {"miou": 0.5, "global_acc": "abc"}}, r"val_metrics\.global_acc 'abc' is not a share in 0\.\.1"),
    ({"val_metrics": {"per_class_iou": {"road": 5}}}, r"val_metrics\.per_class_iou\.road 5 is not a share"),
    ({"val_metrics": {"step": -1e300}}, r"val_metrics\.step -1e\+300 is not a count"),
    ({"val_metrics": {"int8_gate": {"passed": True, "agreement_with_fp32": 1e9}}},
     r"val_metrics\.int8_gate\.agreement_with_fp32 1000000000\.0 is not a share"),
    ({"val_metrics": {"int8_gate": {"passed": "yes"}}}, r"val_metrics\.int8_gate\.passed 'yes' is not true or false"),
    ({"val_metrics": [1, 2]}, r"val_metrics \[1, 2\] is not a JSON object"),
    ({"real_road_check": {"tasks": {"drivable": {"iou": 2}}}}, r"real_road_check\.tasks\.drivable\.iou 2 is not a share"),
    ({"logit_adjust": {"tau": "abc", "bias": [1e308] * 3}}, r"logit_adjust\.tau 'abc' is not a share in 0\.\.1"),
    ({"logit_adjust": {"tau": 0.5, "bias": [0.0] * 3, "weighting": "enet"}},
     rf"logit_adjust\.bias \[0\.0, 0\.0, 0\.0\] is not {NUM_CLASSES} finite numbers \(one per class\)"),
    ({"logit_adjust": {"tau": 0.5, "bias": [0.0] * NUM_CLASSES}}, r"logit_adjust\.weighting None is not the name"),
    ({"precision": "int4"}, r"precision 'int4' is not one of fp32, fp16, int8"),
    ({"dynamic_batch": "false"}, r"dynamic_batch 'false' is not true or false"),
    ({"has_confidence": 1}, r"has_confidence 1 is not true or false"),
])
def test_hostile_metadata_values_are_refused_naming_the_field(tmp_path, changes, says):
    path = set_metadata(write_brightness_model(tmp_path / "m.onnx", HW), **changes)
    pattern = rf"^m\.onnx: metadata is incomplete or malformed \({says}.*\); re-export the model$"
    with pytest.raises(ModelError, match=pattern):
        read_model_metadata(path)
    with pytest.raises(ModelError, match=pattern):
        describe_model(path)


def test_the_values_exports_write_are_accepted(tmp_path):
    good = {
        "val_metrics": {"miou": 0.5, "global_acc": 1, "class_acc": None, "step": 40, "pixels": 10,
                        "per_class_iou": {"road": 0.9, "bus": None}, "input_hw": [48, 64],
                        "int8_gate": {"passed": False, "fp32_miou": 0.5, "int8_miou": 0.49, "drop_points": -0.2,
                                      "budget_points": 0.5, "agreement_with_fp32": 0.99, "images": 4,
                                      "saturation_safe": True}},
        "real_road_check": {"data": "camvid", "frames": 3, "tasks": {"drivable": {"iou": 0.9, "precision": None}},
                            "unknown": {"threshold": 0.4}},
        "logit_adjust": {"tau": 1, "weighting": "enet", "bias": [0.5] * NUM_CLASSES, "rule": "given",
                         "sweep_miou": {"0.5": 0.6}},
        "precision": "fp16", "dynamic_batch": True,
    }
    path = set_metadata(write_brightness_model(tmp_path / "m.onnx", HW), **good)
    metadata = read_model_metadata(path)
    assert metadata.dynamic_batch is True and metadata.logit_adjust["tau"] == 1
    lines = format_description(describe_model(path))
    assert any(line.startswith("val        mIoU 50.00 %, global acc 100.00 %, class acc -") for line in lines), lines
    assert any("tau 1 of the enet class weights" in line for line in lines), lines


def test_inspect_refuses_a_hostile_figure_in_one_line(tmp_path):
    path = set_metadata(write_brightness_model(tmp_path / "m.onnx", HW), val_metrics={"miou": 1e308})
    proc = subprocess.run([sys.executable, "-m", "perception", "inspect", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == ModelError.exit_code and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "perception: error: m.onnx: metadata is incomplete or malformed (val_metrics.miou 1e+308 is not a share in "
        "0..1); re-export the model"]


# ------------------------------------------------------------------------------------------------
# Bidirectional and invisible characters
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "field", "shown"), [
    ({"model_name": "\u202eevil"}, "model_name", r"'\\u202eevil'"),
    ({"dataset": "road\u200bs"}, "dataset", r"'road\\u200bs'"),
    ({"unknown_rule": "\u2066isolated"}, "unknown_rule", r"'\\u2066isolated'"),
])
def test_bidi_and_invisible_characters_are_refused_like_control_characters(tmp_path, changes, field, shown):
    path = set_metadata(write_brightness_model(tmp_path / "m.onnx", HW), **changes)
    pattern = rf"^m\.onnx: metadata field {field} holds a control character \({shown}\);"
    with pytest.raises(ModelError, match=pattern):
        read_model_metadata(path)
    with pytest.raises(ModelError, match=pattern):
        describe_model(path)


def test_metadata_and_topics_are_held_to_one_set_of_characters():
    assert wire._CONTROL is contracts.CONTROL_CHARACTERS
    for char in "\x1b\x85\u2028\u202e\u200b\u2066\ufeff":
        with pytest.raises(wire.WireError):
            wire.check_topic(f"perception/front/a{char}b".encode())
