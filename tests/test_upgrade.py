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
from perception.export.upgrade import upgrade_file
from perception.modelfile import describe_model, read_model_metadata, save_model, write_metadata
from perception.onnxgraph import nhwc_normalisation
from perception.synthetic.classes import SYNTHETIC_CLASSES as T

HW = (6, 8)
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
#: Normalisation of the older graph, per channel in the input's BGR order (float32 arithmetic, as the exporter's).
SCALE_BGR = (np.float32(1) / (np.float32(255) * STD))[::-1].copy()
BIAS_BGR = (-MEAN / STD)[::-1].copy()


def older_export(*, mul_read_twice: bool = False, read_in_branch: str = "", scale_on_left: bool = False,
                 weight_name: str = "w", fails_at_run: bool = False, input_type: int = TensorProto.UINT8) -> onnx.ModelProto:
    """The older graph; ``read_in_branch``: the logits pass through an If whose branches read that
    tensor from the outer graph; ``weight_name``: the Conv weight's name (to collide with the upgrade's);
    ``fails_at_run``: a confidence output gathering channel 5 of 3 (ONNX Runtime fails when it runs)."""
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(SCALE_BGR, "scale_bgr"), numpy_helper.from_array(BIAS_BGR, "bias_bgr"),
        numpy_helper.from_array(np.array([-1], np.int64), "val_0"),  # starts, axes and steps at once
        numpy_helper.from_array(np.array([np.iinfo(np.int64).min], np.int64), "val_1"),
        numpy_helper.from_array(rng.normal(size=(T.num_classes, 3, 3, 3)).astype(np.float32), weight_name),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["to_copy"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["scale_bgr", "to_copy"] if scale_on_left else ["to_copy", "scale_bgr"], ["mul_2"]),
        helper.make_node("Add", ["mul_2", "bias_bgr"], ["add_10"]),
        helper.make_node("Slice", ["add_10", "val_0", "val_1", "val_0", "val_0"], ["flip"]),
        helper.make_node("Transpose", ["flip"], ["permute"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["permute", weight_name], ["logits"], pads=[1, 1, 1, 1]),
        helper.make_node("ArgMax", ["logits"], ["ids64"], axis=1, keepdims=0),
        helper.make_node("Cast", ["ids64"], [contracts.OUTPUT_CLASS_IDS], to=TensorProto.UINT8),
    ]
    if mul_read_twice:  # the scaled image is also read by another branch: not the exporter's pattern
        nodes[5] = helper.make_node("Conv", ["permute", "w"], ["conv"], pads=[1, 1, 1, 1])
        nodes.insert(6, helper.make_node("ReduceMean", ["mul_2"], ["level"], keepdims=1))
        nodes.insert(7, helper.make_node("Add", ["conv", "level"], ["logits"]))
    if read_in_branch:
        nodes[5] = helper.make_node("Conv", ["permute", weight_name], ["conv"], pads=[1, 1, 1, 1])

        def branch(name: str) -> onnx.GraphProto:  # logits = conv + 0 x mean(read_in_branch)
            return helper.make_graph(
                [helper.make_node("ReduceMean", [read_in_branch], [f"{name}_m"], keepdims=0),
                 helper.make_node("Mul", [f"{name}_m", "zero"], [f"{name}_z"]),
                 helper.make_node("Add", ["conv", f"{name}_z"], [f"{name}_out"])],
                name, [], [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)])

        nodes.insert(6, helper.make_node("If", ["cond"], ["logits"], then_branch=branch("then"), else_branch=branch("else")))
        inits += [numpy_helper.from_array(np.array(True), "cond"), numpy_helper.from_array(np.float32(0), "zero")]
    outputs = [helper.make_tensor_value_info(contracts.OUTPUT_CLASS_IDS, TensorProto.UINT8, ["batch", *HW])]
    if fails_at_run:
        nodes.append(helper.make_node("Gather", ["permute", "five"], ["channel_5"], axis=1))
        nodes.append(helper.make_node("Cast", ["channel_5"], [contracts.OUTPUT_CONFIDENCE], to=TensorProto.UINT8))
        inits.append(numpy_helper.from_array(np.array(5, np.int64), "five"))
        outputs.append(helper.make_tensor_value_info(contracts.OUTPUT_CONFIDENCE, TensorProto.UINT8, ["batch", *HW]))
    graph = helper.make_graph(
        nodes, "older", [helper.make_tensor_value_info("image", input_type, ["batch", *HW, 3])], outputs,
        initializer=inits,
        value_info=[helper.make_tensor_value_info("mul_2", TensorProto.FLOAT, ["batch", *HW, 3])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", contracts.ONNX_OPSET)])
    proto.ir_version = 9
    write_metadata(proto, tiny_metadata(HW, class_table=T, dynamic_batch=True, has_confidence=fails_at_run))
    return proto


def outputs(path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": images})[0]


IMAGES = np.random.default_rng(0).integers(0, 256, (4, *HW, 3), dtype=np.uint8)
IMAGES[0] = 0  # the padded border of a dark image: where padding before or after the shift differs


def test_upgrade_gives_the_same_class_ids_and_the_exporters_graph(tmp_path):
    old, new = tmp_path / "old.onnx", tmp_path / "new.onnx"
    save_model(older_export(), old)
    report = upgrade_file(old, new)
    assert "bit-identical" in report and str(new) in report
    before, after = outputs(old, IMAGES), outputs(new, IMAGES)
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
    (["{d}/float.onnx"], "expected uint8"),  # what the node would refuse, the tool refuses
    (["{m}", "--out", "{d}/x.txt"], "one .onnx file name"),
    (["{d}/missing.onnx"], "missing.onnx"),
])
def test_upgrade_errors_are_one_line(tmp_path, capsys, argv, message):
    model = tmp_path / "m.onnx"
    save_model(older_export(), model)
    save_model(older_export(input_type=TensorProto.FLOAT), tmp_path / "float.onnx")
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

    def head(proto):  # the first five nodes: op types, the Transpose's perm, the flip's axes and steps, the constants
        inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        nodes = list(proto.graph.node)[:5]
        flip = [inits[x].tolist() for x in nodes[2].input[3:]]
        return ([n.op_type for n in nodes], onnx.helper.get_attribute_value(nodes[1].attribute[0]), flip,
                [(inits[n.input[1]].shape, inits[n.input[1]].ravel().tolist()) for n in nodes[3:5]])

    assert head(exported) == head(upgraded)


@pytest.mark.parametrize("variant", [
    {"scale_on_left": True},
    {"read_in_branch": "conv"},  # an If elsewhere, its branches reading the network's tensor
    {"weight_name": "perception_input_scale"},  # a name the upgrade would give its constant
])
def test_variants_the_exporter_could_write_are_upgraded_with_the_same_outputs(tmp_path, variant):
    old, new = tmp_path / "old.onnx", tmp_path / "new.onnx"
    save_model(older_export(**variant), old)
    assert "bit-identical" in upgrade_file(old, new)
    assert np.array_equal(outputs(old, IMAGES), outputs(new, IMAGES))
    assert describe_model(new).older_normalisation is False


def test_a_graph_reading_the_half_normalised_image_in_a_branch_is_left_alone(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(older_export(read_in_branch="mul_2"), str(model))
    data = model.read_bytes()
    assert upgrade.main([str(model)]) == 0
    assert "nothing to do" in capsys.readouterr().out and model.read_bytes() == data
    assert nhwc_normalisation(older_export(input_type=TensorProto.FLOAT)) is None  # not the node's uint8 input


def test_inspect_reads_constants_stored_outside_the_file_from_anywhere(tmp_path, monkeypatch, capsys):
    (tmp_path / "ext").mkdir()
    onnx.save_model(older_export(), str(tmp_path / "ext" / "m.onnx"), save_as_external_data=True, location="m.data",
                    size_threshold=0)
    monkeypatch.chdir(tmp_path)  # not the model's folder
    assert cli_main(["inspect", "ext/m.onnx"]) == 0
    assert "classes" in capsys.readouterr().out


def test_in_place_keeps_a_link_and_the_files_permissions(tmp_path):
    target, link = tmp_path / "target.onnx", tmp_path / "link.onnx"
    save_model(older_export(), target)
    target.chmod(0o640)
    link.symlink_to(target)
    upgrade_file(link, link)
    assert link.is_symlink() and nhwc_normalisation(onnx.load(str(target))) is None
    assert target.stat().st_mode & 0o777 == 0o640


def test_a_graph_onnx_runtime_cannot_run_and_an_unwritable_out_are_one_line(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    save_model(older_export(fails_at_run=True), model)
    assert upgrade.main([str(model)]) == 2
    err = capsys.readouterr().err
    assert "ONNX Runtime cannot run it" in err and err.count("\n") == 1 and "Traceback" not in err
    save_model(older_export(), model)
    (tmp_path / "file.txt").write_text("x")
    assert upgrade.main([str(model), "--out", str(tmp_path / "file.txt" / "new.onnx")]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and err.count("\n") == 1 and "Traceback" not in err


def test_out_gets_a_copy_when_there_is_nothing_to_do_and_a_link_there_is_replaced_not_written_through(tmp_path, capsys):
    """A script reading ``--out`` after the tool finds it there whether or not the model needed
    the rewrite; ``--out`` a link to another file: the link is replaced, its target untouched."""
    current, other = tmp_path / "current.onnx", tmp_path / "other.onnx"
    save_model(older_export(), current)
    upgrade_file(current, current)
    save_model(older_export(), other)
    other_bytes = other.read_bytes()
    out = tmp_path / "new" / "dir" / "x.onnx"
    assert upgrade.main([str(current), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "nothing to do" in printed and f"copied it to {out}" in printed
    assert out.read_bytes() == current.read_bytes()
    link = tmp_path / "link.onnx"
    link.symlink_to(other)
    assert upgrade.main([str(current), "--out", str(link)]) == 0
    assert not link.is_symlink() and link.read_bytes() == current.read_bytes()
    assert other.read_bytes() == other_bytes
    old = tmp_path / "old.onnx"
    save_model(older_export(), old)
    link.unlink()
    link.symlink_to(other)
    assert upgrade.main([str(old), "--out", str(link)]) == 0  # an upgrade too: the link replaced
    assert not link.is_symlink() and not describe_model(link).older_normalisation and other.read_bytes() == other_bytes
    assert not [p.name for p in tmp_path.rglob(".*")]  # no temporary file left


def test_out_the_same_file_as_the_model_through_a_link_is_in_place(tmp_path, capsys):
    model, link = tmp_path / "m.onnx", tmp_path / "l.onnx"
    save_model(older_export(), model)
    link.symlink_to(model)
    assert upgrade.main([str(model), "--out", str(link)]) == 0
    assert link.is_symlink() and not describe_model(model).older_normalisation
    capsys.readouterr()
    assert upgrade.main([str(model), "--out", str(link)]) == 0
    assert "is that file, left as it is" in capsys.readouterr().out and link.is_symlink()


def test_a_failed_write_to_out_leaves_no_folder_or_temporary_file(tmp_path, monkeypatch, capsys):
    import errno
    import pathlib

    model = tmp_path / "m.onnx"
    save_model(older_export(), model)

    def full_disk(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_bytes", full_disk)
    assert upgrade.main([str(model), "--out", str(tmp_path / "new" / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "No space left" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
