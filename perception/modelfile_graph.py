"""What an exported model's graph shows about it, whatever its metadata says: the precision it runs
at and the classes its argmax runs over.

Precision: a graph holding quantisation nodes (QuantizeLinear / DequantizeLinear, QLinear* or
integer ops, ``onnxwire.is_quantisation_op``) runs at int8 even when its metadata, copied from the
float file by another quantiser, says fp32 (``effective_precision``). ``modelfile`` applies it to
every metadata it reads, from an ``onnx.ModelProto`` here (``graph_quantised``) or from the light
reader's ``onnxwire.ModelHeader.quantised``. Classes: ``graph_class_count``, which ``perception
inspect`` shows beside the metadata's class table.

No file reading here: each function takes what ``modelfile`` read (whose ``saturation_safe`` reads
an INT8 file's 8-bit weights).
"""

from __future__ import annotations

import dataclasses

from perception.contracts import OUTPUT_CLASS_IDS, ModelMetadata
from perception.onnxwire import is_quantisation_op


def effective_precision(metadata_precision: str, quantised: bool) -> str:
    """The precision a model file runs at: ``int8`` when its graph is quantised (``quantised``:
    QuantizeLinear / DequantizeLinear, QLinear* or integer ops, ``onnxwire.is_quantisation_op``)
    whatever float precision its metadata names (ONNX Runtime's ``quantize_static`` and other
    tools copy the FP32 file's metadata, ``precision: fp32`` included), else the metadata's. A
    graph without such nodes keeps the metadata's word, int8 included."""
    return "int8" if quantised else metadata_precision


def with_graph_precision(metadata: ModelMetadata, quantised: bool) -> ModelMetadata:
    """``metadata`` with the precision the file runs at (``effective_precision``)."""
    precision = effective_precision(metadata.precision, quantised)
    return metadata if precision == metadata.precision else dataclasses.replace(metadata, precision=precision)


def graph_quantised(proto) -> bool:
    """Whether ``proto``'s (an ``onnx.ModelProto``) graph holds quantisation nodes (``onnxwire.is_quantisation_op``)."""
    return any(is_quantisation_op(n.op_type) for n in proto.graph.node)


#: Ops between the class logits and the argmax that keep the channel count (the logit adjustment's
#: Add, the upsample, quantisation pairs).
_CHANNEL_KEEPING_OPS = frozenset({"Resize", "Upsample", "Add", "Sub", "Mul", "Div", "Identity", "Cast", "Relu",
                                  "QuantizeLinear", "DequantizeLinear"})


def graph_class_count(proto) -> int | None:
    """How many classes the argmax that makes ``class_ids`` runs over (an ``onnx.ModelProto``),
    read statically: its input's channel count as the graph's shapes record it, else the output
    channels of the convolution that computes the logits; None when the graph does not say."""
    producer = {out: n for n in proto.graph.node for out in n.output}
    node = producer.get(OUTPUT_CLASS_IDS)
    while node is not None and node.op_type == "Cast":
        node = producer.get(node.input[0])
    if node is None or node.op_type != "ArgMax" or not node.input:
        return None
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    shapes = {v.name: v for v in (*proto.graph.value_info, *proto.graph.input, *proto.graph.output)}
    logits = node.input[0]
    dims = shapes[logits].type.tensor_type.shape.dim if logits in shapes else []
    if dims and -len(dims) <= axis < len(dims) and dims[axis].HasField("dim_value") and dims[axis].dim_value > 0:
        return int(dims[axis].dim_value)
    if axis != 1:
        return None
    weights = {t.name: t for t in proto.graph.initializer}
    node = producer.get(logits)
    for _ in range(16):  # back over ops that keep the channels, to the convolution
        if node is None:
            return None
        if node.op_type == "Conv" and len(node.input) > 1:
            weight = weights.get(node.input[1])
            if weight is None and (dq := producer.get(node.input[1])) is not None and dq.op_type == "DequantizeLinear":
                weight = weights.get(dq.input[0])
            return int(weight.dims[0]) if weight is not None and weight.dims else None
        if node.op_type not in _CHANNEL_KEEPING_OPS or not node.input:
            return None
        node = producer.get(node.input[0])
    return None
