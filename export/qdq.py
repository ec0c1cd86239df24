"""QDQ graph helpers shared by both INT8 quantisers (``quantize.py``: ONNX Runtime, ``nncf_quant.py``:
NNCF): which nodes stay float, unique node names, what accuracy control left float, and ONNX
Runtime's exception types.
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
