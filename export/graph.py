"""Small edits of an exported ONNX graph that the tools rewriting files in place share
(``export/unknown.py`` replaces the confidence tail, ``export/upgrade.py`` the input normalisation).

By hand, not ``onnx.utils.Extractor``: the extractor misses values read inside If/Loop bodies and
rebuilds the model without its metadata.
"""

from __future__ import annotations

import onnx


def inputs_of(nodes) -> set[str]:
    """The tensor names ``nodes`` read, those their If/Loop/Scan subgraphs read included."""
    names: set[str] = set()
    for n in nodes:
        names.update(n.input)
        for attribute in n.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
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

