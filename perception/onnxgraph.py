"""Reading and small edits of an exported ONNX graph, with onnx alone (no torch): what
``perception inspect`` reads (``nhwc_normalisation``) and what the tools rewriting files in place
share (``export/unknown.py`` replaces the confidence tail, ``export/upgrade.py`` the input
normalisation).

By hand, not ``onnx.utils.Extractor``: the extractor misses values read inside If/Loop bodies and
rebuilds the model without its metadata.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnx.external_data_helper import uses_external_data

from perception.contracts import INPUT_NAME


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The bodies of an If/Loop/Scan ``node`` (none for other ops)."""
    return [a.g for a in node.attribute if a.HasField("g")] + [g for a in node.attribute for g in a.graphs]


def inputs_of(nodes) -> set[str]:
    """The tensor names ``nodes`` read, those their If/Loop/Scan subgraphs read included."""
    names: set[str] = set()
    for n in nodes:
        names.update(n.input)
        for sub in subgraphs(n):
            names |= inputs_of(sub.node)
    return names


def sweep(graph: onnx.GraphProto) -> None:
    """Drop, in place, the nodes none of whose outputs is used (until none is left to drop), then
    the initializers nothing reads (one that is a graph input stays with it) and the value infos of
    tensors no node produces any more."""
    nodes = list(graph.node)
    outputs = {o.name for o in graph.output}
    while True:
        used = inputs_of(nodes) | outputs
        live = [n for n in nodes if any(out in used for out in n.output)]
        if len(live) == len(nodes):
            break
        nodes = live
    del graph.node[:]
    graph.node.extend(nodes)
    used = inputs_of(nodes) | {i.name for i in graph.input}
    produced = {x for n in nodes for x in n.output}
    initializers = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    infos = [v for v in graph.value_info if v.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(infos)


def names_in(graph: onnx.GraphProto) -> set[str]:
    """Every tensor and node name ``graph`` uses (its subgraphs' included): a new one must avoid them."""
    names = {t.name for t in graph.initializer} | {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
    for n in graph.node:
        names |= {n.name, *n.input, *n.output}
        for sub in subgraphs(n):
            names |= names_in(sub)
    return names


def nhwc_normalisation(proto: onnx.ModelProto) -> list[onnx.NodeProto] | None:
    """The Cast, Mul, Add, Slice (channel flip) and Transpose nodes of the older input
    normalisation on N x H x W x 3 (module docstring), each read only by the next, its constants
    initializers stored in the file (not overridable inputs); None when the graph does not start that way."""
    graph = proto.graph
    image = next((i for i in graph.input if i.name == INPUT_NAME), None)
    dims = image.type.tensor_type.shape.dim if image is not None else []
    if image is None or image.type.tensor_type.elem_type != TensorProto.UINT8 or len(dims) != 4 or dims[3].dim_value != 3:
        return None
    overridable = {i.name for i in graph.input}
    inits = {t.name: t for t in graph.initializer if t.name not in overridable and not uses_external_data(t)}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    in_subgraphs = inputs_of([m for n in graph.node for sub in subgraphs(n) for m in sub.node])
    outputs = {o.name for o in graph.output}

    def sole_reader(name: str, op: str) -> onnx.NodeProto | None:
        found = readers.get(name, [])
        ok = len(found) == 1 and found[0].op_type == op and name not in outputs and name not in in_subgraphs
        return found[0] if ok else None

    def constant(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(inits[name]) if name in inits else None

    def per_channel(node: onnx.NodeProto, data: str) -> bool:  # x op c, c three values along the last axis
        others = [constant(x) for x in node.input if x != data]
        return len(node.input) == 2 and len(others) == 1 and others[0] is not None and others[0].size == 3 \
            and others[0].shape[-1:] == (3,) and others[0].dtype == np.float32

    cast = sole_reader(INPUT_NAME, "Cast")
    if cast is None or next((a.i for a in cast.attribute if a.name == "to"), None) != TensorProto.FLOAT:
        return None
    mul = sole_reader(cast.output[0], "Mul")
    add = mul and per_channel(mul, cast.output[0]) and sole_reader(mul.output[0], "Add")
    flip = add and per_channel(add, mul.output[0]) and sole_reader(add.output[0], "Slice")
    if not flip or len(flip.input) != 5 or flip.input[0] != add.output[0]:
        return None
    starts, ends, axes, steps = (constant(x) for x in flip.input[1:])
    if any(v is None or v.shape != (1,) for v in (starts, ends, axes, steps)):
        return None
    if not (starts[0] == -1 and ends[0] <= -4 and axes[0] in (-1, 3) and steps[0] == -1):
        return None
    transpose = sole_reader(flip.output[0], "Transpose")
    perm = transpose and next((list(a.ints) for a in transpose.attribute if a.name == "perm"), None)
    return [cast, mul, add, flip, transpose] if perm == [0, 3, 1, 2] else None
