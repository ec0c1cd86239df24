"""QDQ graph helpers shared by both INT8 quantisers (``quantize.py``: ONNX Runtime, ``nncf_quant.py``:
NNCF): which nodes stay float, unique node names, what accuracy control left float, ONNX Runtime's
exception types, and the average pools OpenVINO would pad otherwise than ONNX in a QDQ graph
(``padded_pool_inputs``).
"""

from __future__ import annotations

import onnx
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from perception.modelfile_graph import WEIGHTED_OPS

#: ONNX Runtime's own exception types (Fail, InvalidGraph, ...), raised by the calibration
#: sessions; they derive from Exception only, so they are listed here to become a ModelError.
ORT_ERRORS: tuple[type[Exception], ...] = tuple(
    value for value in vars(_ort_state).values() if isinstance(value, type) and issubclass(value, Exception)
)



def io_nodes_to_exclude(proto: onnx.ModelProto) -> list[str]:
    """Names of the pre-processing and output-tail nodes to keep in float.

    Pre-processing: nodes with no weighted op (WEIGHTED_OPS) upstream. Tail: non-weighted nodes
    with no weighted op downstream (final upsampling, softmax, argmax, casts). Found from the
    graph rather than by name because the exporter's node names are not stable across versions.
    """
    nodes = list(proto.graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            consumers.setdefault(name, []).append(i)
    # Nodes are topologically sorted in a valid ONNX graph: one forward and one backward sweep.
    weighted_above = [False] * len(nodes)
    for i, n in enumerate(nodes):
        weighted_above[i] = any(
            nodes[producer[x]].op_type in WEIGHTED_OPS or weighted_above[producer[x]] for x in n.input if x in producer
        )
    weighted_below = [False] * len(nodes)
    for i in range(len(nodes) - 1, -1, -1):
        weighted_below[i] = any(
            nodes[j].op_type in WEIGHTED_OPS or weighted_below[j] for out in nodes[i].output for j in consumers.get(out, [])
        )
    return [
        n.name
        for i, n in enumerate(nodes)
        if n.op_type not in WEIGHTED_OPS and (not weighted_above[i] or not weighted_below[i])
    ]


def name_all_nodes(proto: onnx.ModelProto) -> None:
    """Give unnamed nodes unique names (the quantiser selects nodes by name)."""
    taken = {n.name for n in proto.graph.node if n.name}
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def float_weighted_layers(proto: onnx.ModelProto) -> tuple[int, int]:
    """(weighted layers whose weights are not quantised, all weighted layers) of a QDQ model: what
    accuracy control handed back to float."""
    dequantized = {out for n in proto.graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    weighted = [n for n in proto.graph.node if n.op_type in WEIGHTED_OPS]
    return sum(1 for n in weighted if len(n.input) < 2 or n.input[1] not in dequantized), len(weighted)


def padded_pool_inputs(proto: onnx.ModelProto) -> list[str]:
    """Input tensors of the AveragePool nodes that count padding into their average
    (``count_include_pad`` with explicit or SAME padding: BiSeNetV2's 3x3 stride-2 pool).

    OpenVINO's CPU plugin runs such a pool on the 8-bit values of a QDQ graph and pads them with
    the integer 0, where ONNX pads the dequantised tensor with 0.0, which is the zero point. With an
    asymmetric activation (zero point 130 after a batch norm) a corner output moved by 5/9 of the
    zero point (72 quantisation steps), and the masks of a BiSeNetV2 file from the ort quantiser
    differed from FP32 on 35-39 % of pixels in OpenVINO against 2-3 % in ONNX Runtime. With a zero
    point of 0 both pad alike, so ``quantize.py`` quantises these tensors symmetrically; OpenVINO's
    engine finds the others (``engines.openvino.pool_padding_hazards``).
    """
    names = []
    for node in proto.graph.node:
        if node.op_type != "AveragePool":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        padded = any(attrs.get("pads", [])) or auto_pad in ("SAME_UPPER", "SAME_LOWER")
        if attrs.get("count_include_pad", 0) and padded and node.input[0] not in names:
            names.append(node.input[0])
    return names
