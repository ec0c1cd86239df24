"""Tiny ONNX models for the node's tests, built with the ``onnx`` helper API (no torch, no exporter).

``write_brightness_model(path, input_hw)`` writes a graph with the contract's I/O: uint8 NHWC BGR
``image`` in, uint8 ``class_ids`` out, where a pixel's class is ``floor(max(B, G, R) * C / 256)``
(C = 11 synthetic classes), and the perception metadata in ``metadata_props``.
``expected_class_ids(batch)`` computes the same in numpy, so tests can check outputs exactly.
With ``with_confidence=True`` the graph also has the ``confidence`` output (uint8 N x H x W): the
pixel's blue value, so a test paints exactly the area a model is unsure of
(``expected_confidence(batch)``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from perception import contracts
from perception.model_metadata import ModelMetadata
from perception.synthetic.classes import SYNTHETIC_CLASSES

NUM_CLASSES = SYNTHETIC_CLASSES.num_classes
# 11/256 is exact in binary floating point, so ONNX Runtime and numpy agree bit for bit.
SCALE = NUM_CLASSES / 256.0


def tiny_metadata(input_hw: tuple[int, int], **overrides) -> ModelMetadata:
    fields = {"model_name": "tiny", "class_table": SYNTHETIC_CLASSES, "input_hw": input_hw, "dataset": "test"}
    fields.update(overrides)
    return ModelMetadata(**fields)


def expected_class_ids(batch: np.ndarray) -> np.ndarray:
    """What the brightness model outputs for ``batch`` (N x H x W x 3 uint8)."""
    return np.floor(batch.max(axis=3).astype(np.float32) * np.float32(SCALE)).astype(np.uint8)


def expected_confidence(batch: np.ndarray) -> np.ndarray:
    """The ``confidence`` output of the brightness model with ``with_confidence``: the blue channel."""
    return batch[..., 0].copy()


def write_brightness_model(
    path: Path,
    input_hw: tuple[int, int],
    *,
    metadata: ModelMetadata | None = None,
    input_dtype: int = TensorProto.UINT8,
    nchw: bool = False,
    with_metadata: bool = True,
    with_confidence: bool = False,
    batch: int | str = "N",
) -> Path:
    """Write the brightness model to ``path``; ``input_dtype``/``nchw`` make contract-breaking
    variants; ``batch`` an int exports a fixed batch (default: dynamic)."""
    h, w = input_hw
    in_shape = [batch, 3, h, w] if nchw else [batch, h, w, 3]
    channel_axis = 1 if nchw else 3
    nodes = [
        helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["pixels"], ["brightest"], axes=[channel_axis], keepdims=0),
        helper.make_node("Mul", ["brightest", "scale"], ["scaled"]),
        helper.make_node("Floor", ["scaled"], ["floored"]),
        helper.make_node("Cast", ["floored"], [contracts.OUTPUT_CLASS_IDS], to=TensorProto.UINT8),
    ]
    outputs = [helper.make_tensor_value_info(contracts.OUTPUT_CLASS_IDS, TensorProto.UINT8, [batch, h, w])]
    initializers = [helper.make_tensor("scale", TensorProto.FLOAT, [], [SCALE])]
    if with_confidence:  # confidence = the blue channel (channel 0 of BGR), uint8 as the contract says
        nodes.append(helper.make_node("Gather", ["image", "blue"], [contracts.OUTPUT_CONFIDENCE], axis=channel_axis))
        outputs.append(helper.make_tensor_value_info(contracts.OUTPUT_CONFIDENCE, TensorProto.UINT8, [batch, h, w]))
        initializers.append(helper.make_tensor("blue", TensorProto.INT64, [], [0]))
    graph = helper.make_graph(
        nodes,
        "brightness",
        [helper.make_tensor_value_info("image", input_dtype, in_shape)],
        outputs,
        initializer=initializers,
    )
    # Opset 17: ReduceMax still takes ``axes`` as an attribute there.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="perception-tests")
    model.ir_version = 8
    if with_metadata:
        meta = metadata or tiny_metadata(input_hw, has_confidence=with_confidence)
        helper.set_model_props(model, {contracts.METADATA_KEY: meta.to_json()})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_upsampling_model(
    path: Path, input_hw: tuple[int, int], *, logit_bias: bool = False, with_confidence: bool = False,
    by_scales: bool = False,
) -> Path:
    """Write a model with the exporter's tail: logits at 1/4 of the input, a bilinear Resize to the
    input size (its sizes from the logits' shape, as torch exports them; ``by_scales``: a scale of 4
    instead), an optional per-class
    Add (the logit adjustment), an ArgMax over the classes, and with ``with_confidence`` the top
    class's probability as uint8. The logits are a fixed random 1x1 convolution of the pooled
    image, so a test compares engines on the same graph rather than against a closed form."""
    h, w = input_hw
    classes = NUM_CLASSES
    rng = np.random.default_rng(0)

    def const(name, array):
        return numpy_helper.from_array(np.asarray(array), name)

    initializers = [
        const("weight", rng.standard_normal((classes, 3, 1, 1)).astype(np.float32) / 64),
        const("bias", rng.standard_normal(classes).astype(np.float32)),
        const("out_hw", np.array([h, w], np.int64)),
        const("class_axis", np.array([1], np.int64)),
        const("adjust", rng.standard_normal((1, classes, 1, 1)).astype(np.float32)),
        const("levels", np.array(255.0, np.float32)),
        const("scales", np.array([1, 1, 4, 4], np.float32)),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["pixels"], ["planar"], perm=[0, 3, 1, 2]),
        helper.make_node("AveragePool", ["planar"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Conv", ["pooled", "weight", "bias"], ["coarse"]),
        helper.make_node("Shape", ["coarse"], ["batch_classes"], start=0, end=2),
        helper.make_node("Concat", ["batch_classes", "out_hw"], ["sizes"], axis=0),
        helper.make_node("Resize", ["coarse", "", "scales", ""] if by_scales else ["coarse", "", "", "sizes"],
                         ["upsampled"], mode="linear", coordinate_transformation_mode="half_pixel"),
    ]
    logits = "upsampled"
    if logit_bias:
        nodes.append(helper.make_node("Add", ["upsampled", "adjust"], ["adjusted"]))
        logits = "adjusted"
    nodes += [
        helper.make_node("ArgMax", [logits], ["argmax"], axis=1, keepdims=0),
        helper.make_node("Cast", ["argmax"], [contracts.OUTPUT_CLASS_IDS], to=TensorProto.UINT8),
    ]
    outputs = [helper.make_tensor_value_info(contracts.OUTPUT_CLASS_IDS, TensorProto.UINT8, ["N", h, w])]
    if with_confidence:  # 255 / sum(exp(logits - max)), rounded
        nodes += [
            helper.make_node("ReduceMax", [logits, "class_axis"], ["top"], keepdims=1),
            helper.make_node("Sub", [logits, "top"], ["shifted"]),
            helper.make_node("Exp", ["shifted"], ["exp"]),
            helper.make_node("ReduceSum", ["exp", "class_axis"], ["total"], keepdims=0),
            helper.make_node("Div", ["levels", "total"], ["scaled"]),
            helper.make_node("Round", ["scaled"], ["rounded"]),
            helper.make_node("Cast", ["rounded"], [contracts.OUTPUT_CONFIDENCE], to=TensorProto.UINT8),
        ]
        outputs.append(helper.make_tensor_value_info(contracts.OUTPUT_CONFIDENCE, TensorProto.UINT8, ["N", h, w]))
    graph = helper.make_graph(
        nodes, "upsampling", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", h, w, 3])], outputs,
        initializer=initializers,
    )
    # Opset 18: ReduceMax and ReduceSum take their axes as an input, as in exported files.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="perception-tests")
    model.ir_version = 8
    helper.set_model_props(model, {contracts.METADATA_KEY: tiny_metadata(input_hw, has_confidence=with_confidence).to_json()})
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path
