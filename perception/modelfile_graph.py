"""What an exported model's graph shows about it, whatever its metadata says: the precision it runs
at and the classes its argmax runs over.

Precision: a graph holding quantisation nodes (QuantizeLinear / DequantizeLinear, QLinear* or
integer ops, ``onnxwire.is_quantisation_op``) runs at int8 even when its metadata, copied from the
float file by another quantiser, says fp32 (``effective_precision``). ``modelfile`` applies it to
every metadata it reads, from an ``onnx.ModelProto`` here (``graph_quantised``) or from the light
reader's ``onnxwire.ModelHeader.quantised``. Classes: ``graph_class_count``, which ``perception
inspect`` shows beside the metadata's class table.

Saturation: ``saturation_safe`` reads an INT8 graph's 8-bit weights and tells whether CPUs without
VNNI compute what CPUs with it do.

No file reading here: each function takes what ``modelfile`` read.
"""

from __future__ import annotations

import dataclasses

from perception.contracts import OUTPUT_CLASS_IDS
from perception.model_metadata import ModelMetadata
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


#: Ops that carry weights: the quantised body of a network lies between the first and the last.
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
#: Largest 8-bit weight magnitude whose products, two at a time, fit VPMADDUBSW's signed 16-bit sum
#: (2 x 255 x 64 = 32640 <= 32767): x86 CPUs without VNNI then compute what CPUs with it do.
SATURATION_SAFE_WEIGHT = 64
#: ONNX's QOperator-format integer ops, whose weights ``saturation_safe`` does not read.
_QOPERATOR_OPS = frozenset({"QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger"})


def _dequantized_initializer(node, inits: dict) -> bool:
    """Whether ``node`` (an input's producer, or None) dequantizes a stored initializer: a weight."""
    return node is not None and node.op_type == "DequantizeLinear" and node.input[0] in inits


def saturation_safe(proto) -> bool:
    """True when every 8-bit weight of a dense convolution, matmul or gemm of ``proto`` (an
    ``onnx.ModelProto``) fits in -SATURATION_SAFE_WEIGHT..SATURATION_SAFE_WEIGHT, so CPUs without
    VNNI compute what CPUs with it do.

    Read from the file itself, for the QDQ files both quantisers write: a DequantizeLinear of an
    int8 initializer feeds the weight input. Depthwise convolutions (one input channel per output)
    are skipped: their 8-bit kernels widen to 32 bits and never pair products (NNCF exempts them
    too); weights left in float cannot saturate. False whenever the file does not show it: no
    8-bit weight found, weights quantised in the graph (QuantizeLinear of a float initializer), or
    QOperator nodes (QLinearConv, ConvInteger, ...) this check does not read.
    """
    import numpy as np  # here, not at the top: reading metadata needs neither numpy nor onnx
    from onnx import numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    producer = {out: n for n in proto.graph.node for out in n.output}
    checked = 0
    for node in proto.graph.node:
        if node.op_type in _QOPERATOR_OPS:
            return False
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            continue
        weight_input = node.input[1]
        if node.op_type != "Conv" and not _dequantized_initializer(producer.get(weight_input), inits) \
                and _dequantized_initializer(producer.get(node.input[0]), inits):
            weight_input = node.input[0]  # a constant times an activation (PSPNet's pooling matmul)
        dq = producer.get(weight_input)
        if dq is None:
            continue  # a float weight initializer (a layer kept float)
        if dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            return False  # quantised at run time or by an op this check does not read
        weight = numpy_helper.to_array(inits[dq.input[0]])
        if weight.dtype != np.int8:
            return False
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "Conv" and group > 1 and weight.ndim > 1 and weight.shape[1] == 1:
            continue  # depthwise
        checked += 1
        if weight.size and int(np.abs(weight.astype(np.int16)).max()) > SATURATION_SAFE_WEIGHT:
            return False
    return checked > 0
