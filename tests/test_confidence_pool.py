"""The confidence output pools the obstacle group (``contracts.confidence_pool``): a pixel split
between pedestrian and cyclist is sure to be an obstacle, so unknown marking keeps it in the
obstacle mask, while a drivable claim keeps the strict top-class probability.

The graph here is built by hand (uint8 image -> 1x1 Conv -> logits -> ArgMax), so its logits are
known exactly and the tail ``python -m perception.export.unknown`` grafts is checked against numpy.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from tiny_models import tiny_metadata

from perception import contracts
from perception.contracts import ClassInfo, ClassTable, confidence_pool
from perception.errors import ModelError
from perception.export.graph import finish_model
from perception.export.unknown import add_confidence_output, add_unknown_threshold
from perception.masks import UnknownMarker
from perception.model_metadata import ModelMetadata
from perception.modelfile import read_model_metadata, save_model, write_metadata
from perception.synthetic.classes import SYNTHETIC_CLASSES as T

HW = (4, 6)
PED, CYC, ROAD = T.id_of("pedestrian"), T.id_of("cyclist"), T.id_of("road")


def logits_graph() -> onnx.ModelProto:
    """Logits = W @ (B, G, R) per pixel: blue drives pedestrian and cyclist equally (a split
    obstacle), green drives road and lane_marking equally (a split drivable), red drives car alone."""
    weights = np.zeros((T.num_classes, 3), np.float32)
    weights[[PED, CYC], 0] = 0.05
    weights[[ROAD, T.id_of("lane_marking")], 1] = 0.05
    weights[T.id_of("car"), 2] = 0.05
    nodes = [
        helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["pixels"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w"], ["logits"]),
        helper.make_node("ArgMax", ["logits"], ["ids64"], axis=1, keepdims=0),
        helper.make_node("Cast", ["ids64"], [contracts.OUTPUT_CLASS_IDS], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(
        nodes, "logits", [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, *HW, 3])],
        [helper.make_tensor_value_info(contracts.OUTPUT_CLASS_IDS, TensorProto.UINT8, [1, *HW])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, [T.num_classes, 3, 1, 1], weights.ravel())],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", contracts.ONNX_OPSET)])
    proto.ir_version = 9
    write_metadata(proto, tiny_metadata(HW, class_table=T))
    return proto, weights


def run(proto: onnx.ModelProto, image: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": image[None]}), strict=True))


def painted() -> np.ndarray:
    image = np.zeros((*HW, 3), np.uint8)
    image[0] = (200, 0, 0)  # pedestrian = cyclist: 10 each, the rest 0
    image[1] = (0, 200, 0)  # road = lane_marking
    image[2] = (0, 0, 200)  # car alone
    image[3] = (90, 0, 60)  # pedestrian 4.5 against car 3: a pooled winner with a rival in the pool
    return image


def reference(weights: np.ndarray, image: np.ndarray, pool: list[bool] | None) -> np.ndarray:
    logits = image.astype(np.float64) @ weights.T  # H x W x C
    prob = np.exp(logits - logits.max(-1, keepdims=True))
    prob /= prob.sum(-1, keepdims=True)
    top = prob.max(-1)
    if pool is not None:
        flags = np.array(pool)
        top = np.where(flags[logits.argmax(-1)], prob[..., flags].sum(-1), top)
    return np.round(top * 255).astype(int)


def test_the_pool_is_the_obstacle_group_and_travels_in_the_metadata():
    assert confidence_pool(T) == T.task_groups["obstacle"] == ("car", "pedestrian", "cyclist", "pole")
    one = ClassTable(classes=(ClassInfo(0, "road", (0, 0, 0)), ClassInfo(1, "car", (0, 0, 0))),
                     task_groups={"obstacle": ("car",)})
    assert confidence_pool(one) == () and confidence_pool(ClassTable(classes=one.classes)) == ()
    meta = tiny_metadata(HW, has_confidence=True, confidence_pool=confidence_pool(T))
    back = ModelMetadata.from_json(meta.to_json())
    assert back.confidence_pool == confidence_pool(T)
    assert back.confidence_pool_flags() == [n in confidence_pool(T) for n in T.names]
    # Files from before the pool read as the top class probability alone.
    doc = json.loads(meta.to_json())
    del doc["confidence_pool"]
    assert ModelMetadata.from_json(json.dumps(doc)).confidence_pool_flags() is None
    assert tiny_metadata(HW, confidence_pool=confidence_pool(T)).confidence_pool_flags() is None  # no output
    doc["confidence_pool"] = ["car", "tram"]
    with pytest.raises(ModelError, match="m.onnx: metadata is incomplete or malformed.*tram"):
        ModelMetadata.from_json(json.dumps(doc), source="m.onnx")


def test_the_grafted_tail_pools_obstacle_probabilities_and_keeps_drivable_strict():
    proto, weights = logits_graph()
    flags = [n in confidence_pool(T) for n in T.names]
    image = painted()
    pooled = run(add_confidence_output(proto, flags), image)
    plain = run(add_confidence_output(proto), image)
    np.testing.assert_array_equal(pooled[contracts.OUTPUT_CLASS_IDS][0], plain[contracts.OUTPUT_CLASS_IDS][0])
    got, got_plain = pooled[contracts.OUTPUT_CONFIDENCE][0].astype(int), plain[contracts.OUTPUT_CONFIDENCE][0].astype(int)
    assert np.abs(got - reference(weights, image, flags)).max() <= 1
    assert np.abs(got_plain - reference(weights, image, None)).max() <= 1
    # Split between pedestrian and cyclist: half each alone, sure as an obstacle.
    assert got_plain[0, 0] == pytest.approx(127, abs=1) and got[0, 0] >= 254
    # Split between road and lane_marking: unsure either way (drivable is never pooled).
    assert got[1, 0] == got_plain[1, 0] == pytest.approx(127, abs=1)
    assert got[2, 0] == got_plain[2, 0] >= 254  # a sure car is sure either way
    assert got[3, 0] > got_plain[3, 0]  # pedestrian over car: the car's share counts
    # Through the node's marker at 0.6: the split obstacle stays an obstacle, the split road is unknown.
    for confidence, want in ((got, [PED, 255]), (got_plain, [255, 255])):
        ids = pooled[contracts.OUTPUT_CLASS_IDS][0].copy()
        UnknownMarker(0.6).apply(ids, confidence.astype(np.uint8))
        assert [ids[0, 0], ids[1, 0]] == want


def test_grafting_replaces_an_existing_confidence_output(tmp_path):
    proto, weights = logits_graph()
    flags = [n in confidence_pool(T) for n in T.names]
    once = add_confidence_output(proto, flags)
    twice = add_confidence_output(add_confidence_output(proto), flags)  # class-level first, then the pool
    assert [o.name for o in twice.graph.output] == [contracts.OUTPUT_CLASS_IDS, contracts.OUTPUT_CONFIDENCE]
    assert [n.op_type for n in twice.graph.node] == [n.op_type for n in once.graph.node]
    assert sorted(t.name for t in twice.graph.initializer) == sorted(t.name for t in once.graph.initializer)
    finish_model(twice, tiny_metadata(HW, class_table=T))  # the ONNX checker passes
    np.testing.assert_array_equal(run(twice, painted())[contracts.OUTPUT_CONFIDENCE], run(once, painted())[contracts.OUTPUT_CONFIDENCE])
    # The command line's path: an old class-level file gets the pool and a stored threshold.
    old = tmp_path / "old.onnx"
    save_model(finish_model(add_confidence_output(proto), tiny_metadata(HW, class_table=T, has_confidence=True)), old)
    new = tmp_path / "new.onnx"
    assert "threshold 0.6" in add_unknown_threshold(old, new, threshold=0.6)
    meta = read_model_metadata(new)
    assert meta.confidence_pool == confidence_pool(T) and meta.unknown_threshold == 0.6
    session = ort.InferenceSession(str(new), providers=["CPUExecutionProvider"])
    confidence = session.run([contracts.OUTPUT_CONFIDENCE], {"image": painted()[None]})[0][0]
    assert np.abs(confidence.astype(int) - reference(weights, painted(), flags)).max() <= 1


def test_inspect_says_what_the_confidence_is(tmp_path, capsys):
    from perception.cli import main as cli_main

    proto, _ = logits_graph()
    old = tmp_path / "old.onnx"
    save_model(finish_model(add_confidence_output(proto), tiny_metadata(HW, class_table=T, has_confidence=True)), old)
    assert cli_main(["inspect", str(old)]) == 0
    text = capsys.readouterr().out
    assert "unknown    no threshold stored" in text and "confidence the top class probability (no pool" in text
    new = tmp_path / "new.onnx"
    add_unknown_threshold(old, new, threshold=0.5)
    assert cli_main(["inspect", str(new)]) == 0
    text = capsys.readouterr().out
    assert "unknown    id 255 below confidence 0.5 (given)" in text
    assert "summed probability of car, pedestrian, cyclist, pole where one of them wins" in text


def test_replacing_the_tail_keeps_what_subgraphs_and_graph_inputs_need():
    proto, weights = logits_graph()
    graph = proto.graph
    # An initializer that is also a graph input (an override), read only by the part being replaced.
    graph.initializer.append(helper.make_tensor("k", TensorProto.FLOAT, [], [2.0]))
    graph.input.append(helper.make_tensor_value_info("k", TensorProto.FLOAT, []))
    # The ArgMax reads the logits through an If whose branches use a value produced outside them.
    zero = helper.make_tensor("z", TensorProto.FLOAT, [], [0.0])
    graph.node.insert(0, helper.make_node("Constant", [], ["zero"], value=zero))
    graph.initializer.append(helper.make_tensor("yes", TensorProto.BOOL, [], [True]))
    branch = helper.make_graph([helper.make_node("Add", ["logits", "zero"], ["branch_out"])], "b", [],
                               [helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, None)])
    argmax = next(n for n in graph.node if n.op_type == "ArgMax")
    graph.node.insert(list(graph.node).index(argmax), helper.make_node(
        "If", ["yes"], ["routed"], then_branch=branch, else_branch=branch))
    argmax.input[0] = "routed"
    old = add_confidence_output(proto)
    # The old confidence also reads "zero" and "k" (rounded + zero * k, then the Cast); once it goes,
    # "zero" is read only inside the If's branches and "k" by nothing but the graph input.
    cast = next(n for n in old.graph.node if n.output[0] == contracts.OUTPUT_CONFIDENCE)
    old.graph.node.remove(cast)
    old.graph.node.extend([
        helper.make_node("Mul", ["zero", "k"], ["zk"]),
        helper.make_node("Add", ["perception_confidence_rounded", "zk"], ["mixed"]),
        helper.make_node("Cast", ["mixed"], [contracts.OUTPUT_CONFIDENCE], to=TensorProto.UINT8),
    ])
    run(old, painted())  # the graph before the swap runs
    new = add_confidence_output(old, [n in confidence_pool(T) for n in T.names])
    assert {"zero", "routed"} <= {o for n in new.graph.node for o in n.output}
    assert "k" in {t.name for t in new.graph.initializer} and "k" in {i.name for i in new.graph.input}
    got = run(new, painted())[contracts.OUTPUT_CONFIDENCE][0].astype(int)
    assert np.abs(got - reference(weights, painted(), [n in confidence_pool(T) for n in T.names])).max() <= 1


@pytest.mark.parametrize("bad", ["car", {"car": 1}, 0, ["car", 3], ["car", "car"], [["car"]]])
def test_a_malformed_pool_in_the_metadata_is_one_model_error(bad):
    doc = json.loads(tiny_metadata(HW, has_confidence=True).to_json())
    doc["confidence_pool"] = bad
    with pytest.raises(ModelError, match="m.onnx: metadata is incomplete or malformed.*confidence_pool"):
        ModelMetadata.from_json(json.dumps(doc), source="m.onnx")


def test_metadata_json_too_deep_or_too_long_is_one_model_error():
    for text in ("[" * 50_000 + "]" * 50_000, '{"n": ' + "9" * 5000 + "}"):
        with pytest.raises(ModelError, match="m.onnx: metadata is not valid JSON"):
            ModelMetadata.from_json(text, source="m.onnx")


def test_the_export_chain_carries_the_pool_to_int8_and_the_cpu_engines(trained_checkpoint, folder_dataset, tmp_path,
                                                                        capsys):
    """``perception export --confidence --int8`` on a checkpoint whose obstacle group has two classes:
    the verify gate checks the pooled confidence, the INT8 file keeps the float tail, and OpenVINO
    runs it."""
    pytest.importorskip("torch")
    import dataclasses

    from perception.cli import main as cli_main
    from perception.engines import EngineOptions, load_engine
    from perception.export import int8_path_for
    from perception.export.graph import LOGITS_OUTPUT, with_logits_output
    from perception.export.verify import _confidence
    from perception.training.checkpoint import save_checkpoint

    _, ckpt = trained_checkpoint
    root, _ = folder_dataset
    groups = {**ckpt.class_table.task_groups, "obstacle": ("background", "car")}
    pooled = save_checkpoint(tmp_path / "pooled.pt", dataclasses.replace(
        ckpt, class_table=dataclasses.replace(ckpt.class_table, task_groups=groups)))
    out = tmp_path / "m.onnx"
    code = cli_main(["export", "--checkpoint", str(pooled), "--out", str(out), "--confidence",
                     "--verify-data", f"folder:{root}", "--verify-count", "4", "--int8", "--calib", f"folder:{root}",
                     "--calib-count", "16", "--val-count", "12", "--latency-runs", "3"])
    printed = capsys.readouterr().out
    assert code == 0 and "verify PASS" in printed and "int8 PASS" in printed, printed
    images = np.stack([cv2.imread(str(p)) for p in sorted((root / "val" / "images").glob("*.png"))[:3]])
    flags = np.array([n in ("background", "car") for n in ckpt.class_table.names])
    for path in (out, int8_path_for(out)):
        assert read_model_metadata(path).confidence_pool == ("background", "car")
        session = ort.InferenceSession(with_logits_output(onnx.load(str(path))).SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        runs = [dict(zip(names, session.run(None, {"image": image[None]}), strict=True)) for image in images]
        close = [np.abs(r[contracts.OUTPUT_CONFIDENCE].astype(int) - _confidence(r[LOGITS_OUTPUT], flags)) <= 1
                 for r in runs]
        assert np.mean(close) >= 0.999, path.name
        assert any(flags[r[contracts.OUTPUT_CLASS_IDS]].any() for r in runs)  # pooled winners were there to check
    try:
        import openvino  # noqa: F401
    except ImportError:
        return
    reference = load_engine("ort", out, EngineOptions(provider="cpu", threads=1))
    want = [reference.infer(image[None]) for image in images]
    reference.close()
    for precision in ("fp32", "int8"):
        engine = load_engine("openvino", out, EngineOptions(precision=precision, threads=1))
        got = [engine.infer(image[None]) for image in images]
        engine.close()
        for g, w in zip(got, want, strict=True):
            assert g["confidence"].shape == w["confidence"].shape
            if precision == "fp32":
                assert np.mean(np.abs(g["confidence"].astype(int) - w["confidence"]) <= 1) >= 0.999
