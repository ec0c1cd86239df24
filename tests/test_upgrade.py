"""``python -m perception.export.upgrade``: a file exported before 2026-12-06 (input normalisation on
N x H x W x 3, slow in ONNX Runtime) gets the exporter's current graph, with bit-identical outputs.

The older file is built by hand, node for node what the exporter wrote then: Cast -> Mul -> Add
(three constants in BGR order) -> a Slice flipping the last axis (its constants shared, as
torch.export emitted them) -> Transpose -> the network (a 3x3 Conv with zero padding, where the
order of normalisation and padding shows) -> ArgMax -> Cast.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from tiny_models import tiny_metadata

from perception import contracts
from perception.cli import main as cli_main
from perception.errors import ModelError
from perception.export import upgrade
from perception.export.upgrade import nhwc_normalisation, upgrade_file
from perception.modelfile import describe_model, read_model_metadata, save_model, write_metadata
from perception.synthetic.classes import SYNTHETIC_CLASSES as T

HW = (6, 8)
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
#: Normalisation of the older graph, per channel in the input's BGR order.
SCALE_BGR = (1 / (255 * STD))[::-1].astype(np.float32)
BIAS_BGR = (-MEAN / STD)[::-1].astype(np.float32)


def older_export(*, mul_read_twice: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(SCALE_BGR, "scale_bgr"), numpy_helper.from_array(BIAS_BGR, "bias_bgr"),
        numpy_helper.from_array(np.array([-1], np.int64), "val_0"),  # starts, axes and steps at once
        numpy_helper.from_array(np.array([np.iinfo(np.int64).min], np.int64), "val_1"),
        numpy_helper.from_array(rng.normal(size=(T.num_classes, 3, 3, 3)).astype(np.float32), "w"),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["to_copy"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["to_copy", "scale_bgr"], ["mul_2"]),
        helper.make_node("Add", ["mul_2", "bias_bgr"], ["add_10"]),
        helper.make_node("Slice", ["add_10", "val_0", "val_1", "val_0", "val_0"], ["flip"]),
        helper.make_node("Transpose", ["flip"], ["permute"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["permute", "w"], ["logits"], pads=[1, 1, 1, 1]),
        helper.make_node("ArgMax", ["logits"], ["ids64"], axis=1, keepdims=0),
        helper.make_node("Cast", ["ids64"], [contracts.OUTPUT_CLASS_IDS], to=TensorProto.UINT8),
    ]
    if mul_read_twice:  # the scaled image is also read by another branch: not the exporter's pattern
        nodes[5] = helper.make_node("Conv", ["permute", "w"], ["conv"], pads=[1, 1, 1, 1])
        nodes.insert(6, helper.make_node("ReduceMean", ["mul_2"], ["level"], keepdims=1))
        nodes.insert(7, helper.make_node("Add", ["conv", "level"], ["logits"]))
    graph = helper.make_graph(
        nodes, "older", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", *HW, 3])],
        [helper.make_tensor_value_info(contracts.OUTPUT_CLASS_IDS, TensorProto.UINT8, ["batch", *HW])],
        initializer=inits,
        value_info=[helper.make_tensor_value_info("mul_2", TensorProto.FLOAT, ["batch", *HW, 3])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", contracts.ONNX_OPSET)])
    proto.ir_version = 9
    write_metadata(proto, tiny_metadata(HW, class_table=T, dynamic_batch=True))
    return proto


def outputs(path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": images})[0]


def test_upgrade_gives_the_same_class_ids_and_the_exporters_graph(tmp_path):
    old, new = tmp_path / "old.onnx", tmp_path / "new.onnx"
    save_model(older_export(), old)
    report = upgrade_file(old, new)
    assert "bit-identical" in report and str(new) in report
    images = np.random.default_rng(0).integers(0, 256, (4, *HW, 3), dtype=np.uint8)
    images[0] = 0  # the padded border of a dark image: where padding before or after the shift differs
    before, after = outputs(old, images), outputs(new, images)
    assert np.array_equal(before, after)
    assert len(np.unique(before)) > 3  # the ids vary, so equal ids are a real check
    proto = onnx.load(str(new))
    ops = [n.op_type for n in proto.graph.node]
    assert ops[:5] == ["Cast", "Transpose", "Slice", "Mul", "Add"] and nhwc_normalisation(proto) is None
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert not {"scale_bgr", "bias_bgr", "val_0", "val_1"} & set(inits)  # the old constants are gone
    mul = proto.graph.node[3]
    np.testing.assert_array_equal(inits[mul.input[1]].ravel(), SCALE_BGR[::-1])  # RGB order, 1 x 3 x 1 x 1
    assert "mul_2" not in {v.name for v in proto.graph.value_info}
    assert read_model_metadata(new) == read_model_metadata(old)
    onnx.checker.check_model(proto, full_check=True)


def test_upgrade_cli_in_place_then_nothing_to_do_and_inspect_advises_only_before(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    save_model(older_export(), model)
    assert describe_model(model).older_normalisation
    assert cli_main(["inspect", str(model)]) == 0
    assert f"python -m perception.export.upgrade {model}" in capsys.readouterr().out
    assert upgrade.main([str(model)]) == 0
    assert "now on N x 3 x H x W" in capsys.readouterr().out
    assert not describe_model(model).older_normalisation
    assert cli_main(["inspect", str(model)]) == 0
    assert "perception.export.upgrade" not in capsys.readouterr().out
    size = model.stat().st_size
    assert upgrade.main([str(model)]) == 0
    assert "nothing to do" in capsys.readouterr().out and model.stat().st_size == size


def test_a_graph_that_reads_the_half_normalised_image_elsewhere_is_left_alone(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    save_model(older_export(mul_read_twice=True), model)
    data = model.read_bytes()
    assert upgrade.main([str(model)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert model.read_bytes() == data


def test_outputs_that_would_change_are_refused_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    model = tmp_path / "m.onnx"
    save_model(older_export(), model)
    data = model.read_bytes()
    real = upgrade.upgrade_normalisation

    def off_by_one_channel(proto):
        done = real(proto)
        bias = next(t for t in proto.graph.initializer if t.name.endswith("_bias"))
        bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(5), bias.name))
        return done

    monkeypatch.setattr(upgrade, "upgrade_normalisation", off_by_one_channel)
    with pytest.raises(ModelError, match="outputs differ"):
        upgrade_file(model, model)
    assert model.read_bytes() == data
    assert upgrade.main([str(model)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing written" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["{m}", "{m}", "--out", "{d}/x.onnx"], "with one MODEL"),
    (["{m}", "--out", "{d}/x.txt"], "one .onnx file name"),
    (["{d}/missing.onnx"], "missing.onnx"),
])
def test_upgrade_errors_are_one_line(tmp_path, capsys, argv, message):
    model = tmp_path / "m.onnx"
    save_model(older_export(), model)
    code = upgrade.main([a.format(m=model, d=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code != 0 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_the_exporter_writes_what_the_upgrade_does(tmp_path):
    torch = pytest.importorskip("torch")
    from perception.export.onnx import export_onnx
    from perception.models import build_model

    torch.manual_seed(0)
    model = build_model("segnet_basic", num_classes=T.num_classes).eval()
    meta = tiny_metadata((16, 16), class_table=T, model_name="segnet_basic")
    path = export_onnx(model, tmp_path / "e.onnx", meta).path
    exported = onnx.load(str(path))
    upgraded = older_export()
    upgrade.upgrade_normalisation(upgraded)
    assert nhwc_normalisation(exported) is None

    def head(proto):  # op types, the flip's axes and steps and the constants' shapes of the first five nodes
        inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        nodes = list(proto.graph.node)[:5]
        flip = [inits[x].tolist() for x in nodes[2].input[3:]]
        return [n.op_type for n in nodes], flip, [inits[n.input[1]].shape for n in nodes[3:5]]

    assert head(exported) == head(upgraded)
