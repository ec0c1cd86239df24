"""Reading an exported model file without torch: its metadata, its I/O, its operators.

The node (engines), ``perception inspect`` and ``perception eval`` use this to learn what an
``.onnx`` file is before running it: ``read_model_metadata(path)`` returns the
``contracts.ModelMetadata`` stored by ``perception export`` and checks that the graph's input and
outputs match the contract; ``describe_model(path)`` adds tensor specs, operator counts and the
file size. Every problem is a ``ModelError`` naming the file and the fix.

Torch-free by design (the runtime node imports it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from perception.contracts import (
    INPUT_DTYPE,
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_CLASS_IDS,
    OUTPUT_CONFIDENCE,
    ModelMetadata,
)
from perception.errors import ModelError

_REEXPORT = "export it with 'perception export'"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, element type (numpy name) and shape (ints or symbols)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ModelDescription:
    """What ``perception inspect`` shows about a model file."""

    path: Path
    size_bytes: int
    metadata: ModelMetadata
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opsets: dict[str, int]
    op_counts: dict[str, int] = field(default_factory=dict)
    producer: str = ""

    def to_dict(self) -> dict:
        meta = json_metadata(self.metadata)
        return {
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "producer": self.producer,
            "opsets": self.opsets,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "op_counts": self.op_counts,
            "metadata": meta,
        }


def json_metadata(metadata: ModelMetadata) -> dict:
    import json

    return json.loads(metadata.to_json())


def load_model_proto(path: str | Path, *, with_weights: bool = True) -> onnx.ModelProto:
    """Parse an ONNX file; ModelError when it is missing, not ONNX, or cut short.

    Args:
        path: the ``.onnx`` file.
        with_weights: also load external weight files (when the model has any).
    """
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"model file {path} is a directory; pass the .onnx file inside it")
    if not path.is_file():
        raise ModelError(f"model file {path} not found; check the path or {_REEXPORT}")
    try:
        proto = onnx.load(str(path), load_external_data=with_weights)
    except (DecodeError, RuntimeError, ValueError, OSError) as exc:
        raise ModelError(
            f"{path.name} is not a readable ONNX file ({type(exc).__name__}); it may be truncated or corrupt: "
            f"copy it again or {_REEXPORT}"
        ) from None
    if not proto.graph.node or not proto.graph.input or not proto.graph.output:
        raise ModelError(f"{path.name} holds no complete ONNX graph; it may be truncated: copy it again or {_REEXPORT}")
    return proto


def metadata_from_proto(proto: onnx.ModelProto, *, source: str) -> ModelMetadata:
    """The perception metadata stored in ``proto``; ModelError when absent or malformed."""
    props = {p.key: p.value for p in proto.metadata_props}
    if METADATA_KEY not in props:
        raise ModelError(f"{source} has no perception metadata; {_REEXPORT}")
    return ModelMetadata.from_json(props[METADATA_KEY], source=source)


def tensor_specs(values) -> tuple[TensorSpec, ...]:
    """TensorSpecs of ONNX ValueInfoProtos (graph inputs/outputs)."""
    specs = []
    for value in values:
        ttype = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type).name if ttype.elem_type else "unknown"
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in ttype.shape.dim)
        specs.append(TensorSpec(name=value.name, dtype=dtype, shape=shape))
    return tuple(specs)


def graph_inputs(proto: onnx.ModelProto) -> tuple[TensorSpec, ...]:
    """The real inputs (initializers listed as inputs by old exporters are left out)."""
    weights = {init.name for init in proto.graph.initializer}
    return tensor_specs([v for v in proto.graph.input if v.name not in weights])


def check_io_contract(
    inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], metadata: ModelMetadata, *, source: str
) -> None:
    """ModelError unless the graph has the contract's uint8 NHWC input and uint8 class-id output."""
    h, w = metadata.input_hw
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        names = ", ".join(t.name for t in inputs) or "none"
        raise ModelError(f"{source}: expected one input named {INPUT_NAME!r}, found {names}; {_REEXPORT}")
    image = inputs[0]
    if image.dtype != INPUT_DTYPE or len(image.shape) != 4 or tuple(image.shape[1:]) != (h, w, 3):
        raise ModelError(
            f"{source}: input {INPUT_NAME!r} is {image.dtype} {list(image.shape)}, expected {INPUT_DTYPE} "
            f"[N, {h}, {w}, 3] (NHWC, BGR) as its metadata says; {_REEXPORT}"
        )
    by_name = {t.name: t for t in outputs}
    wanted = [OUTPUT_CLASS_IDS] + ([OUTPUT_CONFIDENCE] if metadata.has_confidence else [])
    for name in wanted:
        out = by_name.get(name)
        if out is None:
            raise ModelError(f"{source}: output {name!r} is missing (found {', '.join(by_name) or 'none'}); {_REEXPORT}")
        if out.dtype != "uint8" or len(out.shape) != 3 or tuple(out.shape[1:]) != (h, w):
            raise ModelError(
                f"{source}: output {name!r} is {out.dtype} {list(out.shape)}, expected uint8 [N, {h}, {w}]; {_REEXPORT}"
            )


def read_model_metadata(path: str | Path) -> ModelMetadata:
    """The metadata of an exported model, after checking the graph's I/O against the contract.

    Raises:
        ModelError: missing, corrupt or truncated file; no perception metadata; I/O not matching.
    """
    path = Path(path)
    proto = load_model_proto(path, with_weights=False)
    metadata = metadata_from_proto(proto, source=path.name)
    check_io_contract(graph_inputs(proto), tensor_specs(proto.graph.output), metadata, source=path.name)
    return metadata


def describe_model(path: str | Path) -> ModelDescription:
    """Everything ``perception inspect`` prints about ``path`` (see ModelDescription).

    Raises:
        ModelError: as ``read_model_metadata``.
    """
    path = Path(path)
    proto = load_model_proto(path, with_weights=False)
    metadata = metadata_from_proto(proto, source=path.name)
    inputs, outputs = graph_inputs(proto), tensor_specs(proto.graph.output)
    check_io_contract(inputs, outputs, metadata, source=path.name)
    counts = Counter(f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type for n in proto.graph.node)
    return ModelDescription(
        path=path,
        size_bytes=path.stat().st_size,
        metadata=metadata,
        inputs=inputs,
        outputs=outputs,
        opsets={(o.domain or "ai.onnx"): int(o.version) for o in proto.opset_import},
        op_counts=dict(counts.most_common()),
        producer=f"{proto.producer_name} {proto.producer_version}".strip(),
    )
