"""What is done to an exported ONNX graph without torch: its metadata attached and checked
(``finish_model``), the logits it ends in found and exposed (``class_argmax``, ``logits_tensor``,
``with_logits_output``) and the metadata of a file derived from it (``with_precision``, an INT8
file or an FP16 engine). The base install's tools (``python -m perception.export.quantize``,
``python -m perception.export.unknown``) use these, so this module never imports torch;
``export.onnx``, the torch side, makes the graph.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import onnx

from perception import __version__ as perception_version
from perception.contracts import OUTPUT_CLASS_IDS
from perception.errors import ModelError
from perception.model_metadata import ModelMetadata
from perception.modelfile import write_metadata

#: Name of the extra float output exposed by ``with_logits_output`` for verification.
LOGITS_OUTPUT = "logits"


def graph_tool_versions() -> dict[str, str]:
    """Versions of the tools that write and check a graph (stored in the metadata; ``export.onnx``
    adds torch's, which made it)."""
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "perception": perception_version}


def finish_model(proto: onnx.ModelProto, metadata: ModelMetadata, *, source: str = "the model") -> onnx.ModelProto:
    """Attach the metadata, infer shapes and run the ONNX checker.

    Raises:
        ModelError: ONNX's strict shape inference or its checker rejects the graph (a graph whose
            declared shapes are not what its operators compute), naming ``source`` (the user's file)
            with ONNX's words, instead of a traceback.
    """
    from perception.engines.base import backend_error_text

    write_metadata(proto, metadata)
    proto.producer_name = "perception"
    proto.producer_version = perception_version
    proto.doc_string = f"perception segmentation model {metadata.model_id}"
    try:
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        raise ModelError(f"{source}: ONNX shape inference or its checker rejects the graph ({type(exc).__name__}: "
                         f"{backend_error_text(exc)}); check the file with perception inspect and re-export it "
                         "with perception export") from exc
    return proto


def class_argmax(proto: onnx.ModelProto) -> onnx.NodeProto:
    """The ArgMax node whose output, cast, is ``class_ids``.

    Raises:
        ModelError: the graph does not end in the exporter's ArgMax -> Cast pattern.
    """
    producer = {out: node for node in proto.graph.node for out in node.output}
    node = producer.get(OUTPUT_CLASS_IDS)
    while node is not None and node.op_type == "Cast":  # walk back from class_ids over the Cast
        node = producer.get(node.input[0])
    if node is None or node.op_type != "ArgMax":
        raise ModelError(f"graph output {OUTPUT_CLASS_IDS!r} is not produced by an ArgMax; re-export the model")
    return node


def logits_tensor(proto: onnx.ModelProto) -> str:
    """The name of the float N x C x H x W logits tensor whose ArgMax gives ``class_ids``.

    Raises:
        ModelError: the graph does not end in the exporter's ArgMax -> Cast pattern.
    """
    producer = {out: node for node in proto.graph.node for out in node.output}
    logits_name = class_argmax(proto).input[0]  # over a Softmax before the ArgMax, to the logits
    source = producer.get(logits_name)
    if source is not None and source.op_type == "Softmax":
        logits_name = source.input[0]
    return logits_name


def with_logits_output(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of an exported graph that also outputs the model's float logits (``LOGITS_OUTPUT``).

    The logits are the input of the ArgMax (or of the Softmax before it) that produces the class
    ids, so the graph checked is the graph shipped, not a second export.

    Raises:
        ModelError: the graph does not end in the exporter's ArgMax -> Cast pattern.
    """
    logits_name = logits_tensor(proto)
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    inferred = {vi.name: vi for vi in copy.graph.value_info}
    if logits_name in inferred:
        value = onnx.ValueInfoProto()
        value.CopyFrom(inferred[logits_name])
    else:
        value = onnx.helper.make_tensor_value_info(logits_name, onnx.TensorProto.FLOAT, None)
    # Renaming would touch every consumer; an Identity gives the logits their public name instead.
    copy.graph.node.append(onnx.helper.make_node("Identity", [logits_name], [LOGITS_OUTPUT]))
    value.name = LOGITS_OUTPUT
    copy.graph.output.append(value)
    return copy


def with_precision(metadata: ModelMetadata, precision: str) -> ModelMetadata:
    """``metadata`` for a derived model (INT8, FP16 engine) with a new precision and time stamp."""
    return replace(
        metadata,
        precision=precision,
        created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        # torch's version stays the FP32 export's (it made the graph); the tools here are this run's
        tool_versions={**metadata.tool_versions, **graph_tool_versions()},
    )
