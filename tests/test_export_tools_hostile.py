"""The export tools, metadata reading and the command line on hostile inputs (session s35, F10):
one line naming the user's file and the fix, exit 2, never a traceback or a model that cannot run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from onnx import TensorProto, helper
from test_bench_runtime_failures import HW, write_runtime_fail, write_runtime_half_width
from test_model_metadata_hostile import set_metadata
from tiny_models import tiny_metadata, write_brightness_model

from perception.errors import ConfigError, ModelError
from perception.export import ExportConfig, run_export
from perception.export.graph import finish_model
from perception.modelfile import load_model_proto, read_model_metadata


def _tool(tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"perception.export.{tool}", *args], capture_output=True, text=True,
                          timeout=120)


def _one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("write", [write_runtime_fail, write_runtime_half_width])
def test_quantize_refuses_a_model_that_cannot_run_before_calibrating(tmp_path, write):
    model = write(tmp_path / "bad.onnx", batch=1)
    line = _one_line(_tool("quantize", str(model), "--calib", "synthetic:count=2,size=48x64", "--calib-count", "2",
                           "--val-count", "2"))
    assert line.startswith(f"export.quantize: error: {model}: ")
    assert "the first inference on ort failed" in line or "when it runs" in line
    assert not (tmp_path / "bad.int8.onnx").exists()


@pytest.mark.parametrize("flags", [["--threshold", "0.3"], ["--data", "synthetic:count=2,size=48x64", "--count", "2"]])
def test_unknown_names_the_users_file_and_writes_nothing_whatever_the_flags(tmp_path, flags):
    model = write_runtime_fail(tmp_path / "bad.onnx", batch=1)
    out = tmp_path / "out.onnx"
    line = _one_line(_tool("unknown", str(model), "--out", str(out), *flags))
    assert line.startswith(f"python -m perception.export.unknown: error: {model}: the first inference on ort failed")
    assert "perception-unknown-" not in line
    assert not out.exists()


def test_finish_model_names_the_file_when_onnx_rejects_the_graph():
    h, w = HW
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["class_ids"])], "g",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, h, w, 3])],
        [helper.make_tensor_value_info("class_ids", TensorProto.UINT8, [1, h, w])],  # declared 3-D, computed 4-D
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelError, match=r"^user\.onnx: ONNX shape inference or its checker rejects the graph "
                                         r"\(InferenceError: .*; check the file with perception inspect"):
        finish_model(proto, tiny_metadata(HW), source="user.onnx")


@pytest.mark.parametrize(("changes", "field"), [
    ({"val_metrics": {"per_class_iou": {"road": float("nan")}}}, "val_metrics.per_class_iou.road"),
    ({"model_name": None}, "model_name"),
    ({"model_name": True}, "model_name"),
    ({"model_name": 5}, "model_name"),
    ({"model_name": ["a", "b"]}, "model_name"),
    ({"model_name": ""}, "model_name"),
    ({"model_name": "   "}, "model_name"),
    ({"model_name": "m" * 2000}, "model_name"),
    ({"dataset": {"a": 1}}, "dataset"),
    ({"tool_versions": [1]}, "tool_versions"),
    ({"model_kwargs": [1]}, "model_kwargs"),
    ({"mean": ["a", "b", "c"]}, "mean"),
    ({"real_road_check": {"input_hw": [float("nan"), 1]}}, "real_road_check.input_hw"),
    ({"unknown_rule": 5}, "unknown_rule"),
    ({"created_utc": "x" * 1_000_000}, "created_utc"),
])
def test_metadata_fields_of_the_wrong_kind_are_refused_naming_the_field(tmp_path, changes, field):
    path = set_metadata(write_brightness_model(tmp_path / "m.onnx", HW), **changes)
    with pytest.raises(ModelError, match=rf"^m\.onnx: metadata is incomplete or malformed \({field} ") as info:
        read_model_metadata(path)
    assert len(str(info.value)) < 400  # a 1 MB value is not printed


def test_a_std_near_zero_is_refused(tmp_path):
    path = set_metadata(write_brightness_model(tmp_path / "m.onnx", HW), std=[1e-300, 0.2, 0.2])
    with pytest.raises(ModelError, match=r"^m\.onnx: metadata std \[1e-300, 0\.2, 0\.2\] is not three positive numbers in "
                                         r"0\.0001\.\.10000"):
        read_model_metadata(path)


@pytest.mark.parametrize("version", [True, 1.0])
def test_a_schema_version_that_is_not_an_int_is_refused(tmp_path, version):
    path = set_metadata(write_brightness_model(tmp_path / "m.onnx", HW), schema_version=version)
    with pytest.raises(ModelError, match=r"metadata schema version (True|1\.0), this node reads version 1"):
        read_model_metadata(path)


def test_the_bidi_error_shows_the_character_of_a_long_value(tmp_path):
    value = "synthetic:count=16000,seed=0,size=360x640,more=" + "x" * 20 + "\u202e" + "y" * 30
    path = set_metadata(write_brightness_model(tmp_path / "m.onnx", HW), dataset=value)
    with pytest.raises(ModelError, match=r"metadata field dataset holds a control character \('\.\.\..*\\u202e.*\.\.\.'\)"):
        read_model_metadata(path)


def test_an_xml_error_body_is_not_called_an_openvino_ir(tmp_path):
    s3 = tmp_path / "model.onnx"
    s3.write_text('<?xml version="1.0"?><!-- x --><Error><Code>AccessDenied</Code></Error>')
    with pytest.raises(ModelError, match=r"is an XML document \(root element <Error>\), not a model: perhaps a failed "
                                         r"download"):
        load_model_proto(s3)
    ir = tmp_path / "ir.onnx"
    ir.write_text('<?xml version="1.0"?>\n<!-- converted -->\n<net name="m" version="11"><layers/></net>')
    with pytest.raises(ModelError, match=r"is an OpenVINO IR file"):
        load_model_proto(ir)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_export_int8_refuses_a_fifo_at_the_int8_path_before_any_work(tmp_path):
    os.mkfifo(tmp_path / "x.int8.onnx")
    cfg = ExportConfig(checkpoint=tmp_path / "missing.pt", out=tmp_path / "x.onnx", int8=True,
                       calib="synthetic:count=2,size=48x64")
    with pytest.raises(ConfigError, match=r"x\.int8\.onnx, the INT8 file beside --out .* is not a regular file"):
        run_export(cfg)
    assert (tmp_path / "x.int8.onnx").exists() and not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("argv", [
    ["perception", "bench", "pipeline", "--batch", "2"],
    ["perception", "run", "--max", "2"],
    ["python -m perception.export.unknown", "m.onnx", "--thresh", "0.3"],
])
def test_shortened_flags_are_not_taken_for_longer_ones(argv):
    if argv[0] == "perception":
        cmd = [sys.executable, "-m", "perception", *argv[1:]]
    else:
        cmd = [sys.executable, "-m", "perception.export.unknown", *argv[1:]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unrecognized arguments: " + " ".join(argv[-2:]) in proc.stderr, proc.stderr

