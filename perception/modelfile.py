"""Reading an exported model file without torch: its metadata, its I/O, its operators.

The node (engines), ``perception inspect`` and ``perception eval`` use this to learn what an
``.onnx`` file is before running it: ``read_model_metadata(path)`` returns the
``model_metadata.ModelMetadata`` stored by ``perception export`` and checks that the graph's input and
outputs match the contract; ``describe_model(path)`` adds tensor specs, operator counts and the
file size. Every problem is a ``ModelError`` naming the file and the fix. What a file is when it is
not ONNX (an OpenVINO IR, an error page, a PyTorch checkpoint) is ``modelfile_kind``'s; the precision
and classes its graph shows, whatever its metadata says, ``modelfile_graph``'s.

Torch-free by design (the runtime node imports it), and ``onnx``-free on the node's path:
``read_model_metadata`` reads the few fields it needs (metadata, graph inputs and outputs) straight
from the protobuf wire format (``onnxwire.ModelHeader``), because importing the ``onnx`` package (through
``ml_dtypes``) took longer than the rest of the node's start-up together (measured 0.3-6 s on a
busy 2-core machine). A file the light reader cannot parse goes through ``onnx`` for the exact error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import math
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from perception.contracts import (
    CONTROL_CHARACTERS,
    INPUT_DTYPE,
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_CLASS_IDS,
    OUTPUT_CONFIDENCE,
)
from perception.errors import ConfigError, ModelError, unreadable, why_not_a_file
from perception.metadata_fields import STD_RANGE
from perception.model_metadata import ModelMetadata
from perception.modelfile_graph import (
    graph_class_count,
    graph_quantised,
    saturation_safe,
    with_graph_precision,
)
from perception.modelfile_kind import is_openvino_ir, not_onnx_line, openvino_ir_line
from perception.onnxwire import ExternalRef, ModelHeader, TensorSpec

_REEXPORT = "export it with 'perception export'"

#: Most bytes of perception metadata a model file may hold, checked before the JSON is parsed. The
#: shipped models hold 2.6 kB (default.int8.onnx) and 3.8 kB (default.onnx); a 50 MB value cost the
#: node 0.5 GB and seconds at its start, and ``inspect`` printed all of it.
MAX_METADATA_BYTES = 1 << 20
#: Control characters refused in every metadata string (its names reach the terminal, the log and
#: every message header's model id): C0, DEL, C1, the Unicode line and paragraph separators and the
#: invisible and bidirectional format characters (a right-to-left override would reorder the line
#: it is printed on), the set ``wire.check_topic`` refuses in topics.
_CONTROL = CONTROL_CHARACTERS


@dataclass(frozen=True)
class ModelDescription:
    """What ``perception inspect`` shows about a model file."""

    path: Path
    size_bytes: int
    #: Its ``precision`` is the file's (``modelfile_graph.effective_precision``): int8 for a quantised graph.
    metadata: ModelMetadata
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opsets: dict[str, int]
    op_counts: dict[str, int] = field(default_factory=dict)
    producer: str = ""
    #: INT8 files: every dense 8-bit weight within 7 bits (``saturation_safe``); None otherwise.
    saturation_safe: bool | None = None
    #: The input normalisation runs on N x H x W x 3, as files exported before 2026-12-06 do
    #: (``python -m perception.export.upgrade`` rewrites it; ONNX Runtime's outputs stay bit for bit).
    older_normalisation: bool = False
    #: Files holding its weights outside the ``.onnx`` (external data): path -> size in bytes.
    external_data: dict[str, int] = field(default_factory=dict)
    #: The classes the graph's argmax runs over (its logits' channel count), when the graph says.
    graph_classes: int | None = None
    #: The precision its metadata names (empty: ``metadata.precision``); another than that when the
    #: graph is quantised and its metadata, copied from the float file, says fp32.
    metadata_precision: str = ""

    @property
    def precision_from_graph(self) -> bool:
        return bool(self.metadata_precision) and self.metadata_precision != self.metadata.precision

    def to_dict(self) -> dict:
        meta = json_metadata(self.metadata)
        meta["precision"] = self.metadata_precision or self.metadata.precision  # as the file stores it
        return {
            "path": str(self.path),
            "precision": self.metadata.precision,
            "precision_from": "graph" if self.precision_from_graph else "metadata",
            "size_bytes": self.size_bytes,
            "producer": self.producer,
            "opsets": self.opsets,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "op_counts": self.op_counts,
            "saturation_safe": self.saturation_safe,
            "older_normalisation": self.older_normalisation,
            "external_data": self.external_data,
            "graph_classes": self.graph_classes,
            "metadata": meta,
        }


def json_metadata(metadata: ModelMetadata) -> dict:
    import json

    return json.loads(metadata.to_json())


def load_model_proto(path: str | Path, *, with_weights: bool = True):
    """Parse an ONNX file; ModelError when it is missing, not ONNX, or cut short.

    Args:
        path: the ``.onnx`` file.
        with_weights: also load external weight files (when the model has any).
    """
    import onnx
    from google.protobuf.message import DecodeError
    from onnx.checker import ValidationError

    path = check_model_path(path)
    not_onnx = not_onnx_line(path)  # an OpenVINO IR, an error page, a PyTorch checkpoint
    if not_onnx:
        raise ModelError(not_onnx)
    if with_weights:
        external_data_files(path)  # a missing or short weights file: its own one line, before onnx's
    try:
        proto = onnx.load(str(path), load_external_data=with_weights)
    except (DecodeError, RuntimeError, ValueError, OSError, ValidationError) as exc:
        if path.suffix.lower() == ".bin" and is_openvino_ir(path.with_suffix(".xml")):  # an IR's weights
            raise ModelError(openvino_ir_line(path)) from None
        raise ModelError(
            f"{path} is not a readable ONNX file ({type(exc).__name__}); it may be truncated or corrupt: "
            f"copy it again or {_REEXPORT}"
        ) from None
    if not proto.graph.node or not proto.graph.input or not proto.graph.output:
        raise ModelError(f"{path} holds no complete ONNX graph; it may be truncated: copy it again or {_REEXPORT}")
    return proto


def write_metadata(proto, metadata: ModelMetadata) -> None:
    """Store ``metadata`` as JSON under METADATA_KEY of ``proto`` (an ``onnx.ModelProto``),
    replacing an earlier value and keeping every other metadata prop."""
    import onnx

    props = {p.key: p.value for p in proto.metadata_props}
    props[METADATA_KEY] = metadata.to_json()
    onnx.helper.set_model_props(proto, props)


def check_writable(path: str | Path, *, fix: str = "choose a writable --out") -> None:
    """ConfigError, as ``save_model`` would raise it (ending in ``fix``), unless a file can be
    written to ``path``: for the tools that work for minutes (calibration, a threshold search, an
    evaluation) before they write."""
    _write(Path(path), None, fix=fix)


def save_model(proto, path: str | Path) -> int:
    """Write ``proto`` to ``path`` atomically (a reader never sees half a file); returns its size.
    Over an existing file, as an in-place edit: through a symbolic link to its target (the link
    stays a link) and with the file's permissions kept."""
    return save_model_bytes(proto.SerializeToString(), path)


def save_model_bytes(data: bytes, path: str | Path) -> int:
    """``save_model`` for a model file's bytes (a file already written and checked elsewhere)."""
    _write(Path(path), data)
    return len(data)


def _write(path: Path, data: bytes | None, *, fix: str = "choose a writable --out") -> None:
    """``data`` to ``path`` by a temporary file beside it and a rename; None: only try (the
    temporary file is written and removed). ConfigError naming the path when it cannot be, and for
    a FIFO, device or socket at ``path`` (``overwrite.is_special_file``), which it never replaces."""
    from perception.overwrite import SPECIAL_FILE, is_special_file

    if is_special_file(path):
        raise ConfigError(f"cannot write {path}: it is {SPECIAL_FILE}, which no output is written to; {fix}")
    if path.is_symlink():
        path = path.resolve()
    tmp = path.with_name(path.name + ".tmp")
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "Is a directory")
        mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data or b"")
        if data is None:
            tmp.unlink()
            return
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path} ({exc.strerror or exc}); {fix}") from None


def record_metadata(path: str | Path, **fields) -> ModelMetadata:
    """Rewrite the metadata of the model file ``path`` with ``fields`` replaced (e.g. its
    ``real_road_check``), atomically; returns the new metadata. ModelError for a bad file."""
    proto = load_model_proto(path)
    metadata = dataclasses.replace(metadata_from_proto(proto, source=str(path)), **fields)
    # Read back as every command will read the file, before it is touched: metadata the reader
    # refuses would leave a model that run, inspect and eval all refuse.
    unchanged = f"{path} is left unchanged"
    try:
        text = metadata.to_json()
    except ValueError as exc:  # NaN or Infinity, which standard JSON cannot hold
        raise ModelError(f"{unchanged}: its new metadata is not standard JSON ({exc})") from None
    try:
        metadata_from_props({METADATA_KEY: text}, source="its new metadata")
    except ModelError as exc:
        raise ModelError(f"{unchanged}: {str(exc).removesuffix('; re-export the model')}") from None
    write_metadata(proto, metadata)
    save_model(proto, path)
    return metadata


def metadata_from_proto(proto, *, source: str) -> ModelMetadata:
    """The perception metadata stored in ``proto`` (an ``onnx.ModelProto``); ModelError when absent or malformed."""
    return metadata_from_props({p.key: p.value for p in proto.metadata_props}, source=source)


def metadata_from_props(props: dict[str, str], *, source: str) -> ModelMetadata:
    """The perception metadata in a model's ``metadata_props``; ModelError when absent or malformed."""
    if METADATA_KEY not in props:
        raise ModelError(f"{source} has no perception metadata; {_REEXPORT}")
    text = props[METADATA_KEY]
    size = len(text) if len(text) * 4 <= MAX_METADATA_BYTES else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_METADATA_BYTES:
        raise ModelError(f"{source}: its perception metadata is {size / 1e6:.1f} MB, more than the {MAX_METADATA_BYTES} "
                         f"bytes (1 MiB) a model's metadata may hold (an exported model's is a few kB); re-export the model")
    metadata = ModelMetadata.from_json(text, source=source)
    _check_metadata_strings(text, source)
    lo, hi = STD_RANGE
    for name, values in (("mean", metadata.mean), ("std", metadata.std)):
        if (len(values) != 3 or not all(math.isfinite(v) for v in values)
                or (name == "std" and not all(lo <= v <= hi for v in values))):
            # std: the graph divides 0..1 pixels by it in float32 (1e-300's inverse is infinite there)
            what = f"three positive numbers in {lo:g}..{hi:g}" if name == "std" else "three finite numbers"
            raise ModelError(f"{source}: metadata {name} {list(values)!r:.80} is not {what} (the RGB normalisation "
                             "the graph was exported with); re-export the model")
    return metadata


def _check_metadata_strings(text: str, source: str) -> None:
    """ModelError naming the field when a string of the metadata JSON ``text`` (a key or a value)
    holds a control character (``_CONTROL``): its names are printed, logged and form the model id
    every message header carries, where a newline or a terminal escape would fake a line."""
    import json

    if not _CONTROL.search(text) and "\\" not in text:
        return  # no raw control character and no escape that could make one
    stack: list[tuple[str, object]] = [("", json.loads(text))]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                field_name = f"{where}.{key}" if where else str(key)
                if _CONTROL.search(str(key)):
                    _refuse_control(source, f"{where or 'the metadata'} (a key)", str(key))
                stack.append((field_name, item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
        elif isinstance(value, str) and _CONTROL.search(value):
            _refuse_control(source, where, value)


def _refuse_control(source: str, where: str, value: str) -> None:
    """The one line naming the field and showing the character (escaped by ``repr``, e.g.
    ``\u202e``): a long value is cut to 40 characters around it, not after its first 40."""
    if len(value) <= 40:
        shown = repr(value)
    else:
        at = _CONTROL.search(value).start()
        start = max(0, min(at - 20, len(value) - 40))
        shown = repr(("..." if start else "") + value[start:start + 40] + ("..." if start + 40 < len(value) else ""))
    raise ModelError(f"{source}: metadata field {_CONTROL.sub('?', where)!s:.80} holds a control character ({shown}); "
                     "a model's names reach the terminal, the log and every message header: re-export the model")


def tensor_specs(values) -> tuple[TensorSpec, ...]:
    """TensorSpecs of ONNX ValueInfoProtos (graph inputs/outputs)."""
    import onnx

    specs = []
    for value in values:
        ttype = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type).name if ttype.elem_type else "unknown"
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in ttype.shape.dim)
        specs.append(TensorSpec(name=value.name, dtype=dtype, shape=shape))
    return tuple(specs)


def graph_inputs(proto) -> tuple[TensorSpec, ...]:
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


def check_model_path(path: str | Path) -> Path:
    """``path`` as a Path when it names a file this user may read; ModelError (one line, the fix)
    when it is missing, a folder, not a regular file or not readable. What every reader of a model
    file checks first."""
    path = Path(path)
    why = why_not_a_file(path)  # also a FIFO or device, and permission denied on a folder on the way
    if why == "is a file":
        why = unreadable(path) or why  # a file this user may not read: not "truncated or corrupt"
    if why == "is a directory":
        raise ModelError(f"model file {path} is a directory; pass the .onnx file inside it")
    if why.startswith("cannot be read:"):
        raise ModelError(f"model file {path} {why}")
    if why != "is a file":
        raise ModelError(f"model file {path} {why}; check the path or {_REEXPORT}")
    return path


def read_model_metadata(path: str | Path) -> ModelMetadata:
    """The metadata of an exported model, after checking the graph's I/O against the contract and
    its external weights file, when it has one (``check_external_data``).

    Raises:
        ModelError: missing, corrupt or truncated file; no perception metadata; I/O not matching;
            its weights file missing or short.
    """
    return read_model_file(path)[0]


def read_model_file(path: str | Path) -> tuple[ModelMetadata, dict[Path, int]]:
    """``read_model_metadata``, and the files holding the model's external weights with their
    sizes (empty when its weights are inside it), from one read of the file."""
    metadata, external, _ = _read_model_file(path)
    return metadata, external


def model_precision(path: str | Path) -> tuple[str, str]:
    """The precision of the model file ``path`` as it runs (``modelfile_graph.effective_precision``, what
    ``read_model_metadata(path).precision`` says) and as its metadata names it; the two differ for a
    file quantised by another tool that kept the float file's metadata (``("int8", "fp32")``).
    ModelError as ``read_model_metadata``."""
    metadata, _, declared = _read_model_file(path)
    return metadata.precision, declared


def _read_model_file(path: str | Path) -> tuple[ModelMetadata, dict[Path, int], str]:
    """``read_model_file``, and the precision the metadata names."""
    path = Path(path)
    header = ModelHeader.read(path)
    if header is None:  # not parseable by the light reader: onnx gives the exact error
        proto = load_model_proto(path, with_weights=False)
        metadata = metadata_from_proto(proto, source=path.name)
        check_io_contract(graph_inputs(proto), tensor_specs(proto.graph.output), metadata, source=path.name)
        external, quantised = check_external_data(path, external_refs(proto)), graph_quantised(proto)
    else:
        metadata = metadata_from_props(header.props, source=path.name)
        check_io_contract(header.inputs, header.outputs, metadata, source=path.name)
        external, quantised = check_external_data(path, header.external), header.quantised
    declared = metadata.precision
    return with_graph_precision(metadata, quantised), external, declared


#: Bytes per element of the ONNX tensor types whose size follows from their shape.
_ELEMENT_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


def _extent(ref: ExternalRef, source: str) -> tuple[int, int | None]:
    """The offset and length (None: unknown) of ``ref`` in its file; ModelError when malformed."""
    tensor, entries = ref.tensor, dict(ref.entries)
    try:
        offset = int(entries.get("offset") or 0)
        length = int(entries["length"]) if entries.get("length") else None
    except ValueError:
        raise ModelError(f"{source}: the external data entry of weight {tensor!r:.80} has an offset or length that is "
                         f"not a whole number; {_REEXPORT}") from None
    if length is None and ref.data_type in _ELEMENT_BYTES:
        length = math.prod(ref.dims) * _ELEMENT_BYTES[ref.data_type]
    if offset < 0 or (length is not None and length < 0):
        raise ModelError(f"{source}: the external data entry of weight {tensor!r:.80} has a negative offset or length; "
                         f"{_REEXPORT}")
    return offset, length


def external_refs(proto) -> tuple[ExternalRef, ...]:
    """The ExternalRefs of ``proto``'s (an ``onnx.ModelProto``) initializers."""
    refs = []
    for t in proto.graph.initializer:
        if t.HasField("data_location") and t.data_location == 1:  # TensorProto.EXTERNAL
            entries = tuple((e.key, e.value) for e in t.external_data)
            refs.append(ExternalRef(tensor=t.name, entries=entries, dims=tuple(t.dims), data_type=t.data_type))
    return tuple(refs)


def check_external_data(path: Path, refs: tuple[ExternalRef, ...] | list[ExternalRef]) -> dict[Path, int]:
    """The files beside ``path`` that hold its external weights (``refs``), with their sizes;
    ModelError (one line: the model, the weights file and the fix) when one is outside the model's
    folder, missing, not a file or shorter than the weights it should hold."""
    needed: dict[str, int] = {}
    for ref in refs:
        location = ref.location
        parts = Path(location.replace("\\", "/")).parts
        if not location or Path(location).is_absolute() or ".." in parts or _CONTROL.search(location):
            raise ModelError(f"{path.name}: weight {ref.tensor!r:.80} is stored in {location!r:.120}, which is not a file "
                             "name inside the model's folder (ONNX external data lies beside the .onnx); re-export the model")
        offset, length = _extent(ref, path.name)
        needed[location] = max(needed.get(location, 0), offset + (length or 0))
    sizes: dict[Path, int] = {}
    for location, end in needed.items():
        data = path.parent / location
        beside = f"{path.name} keeps its weights in {location} beside it, and {data}"
        fix = (f"copy {location} into {path.parent} along with {path.name} (the two files are one model), "
               "or re-export the model")
        try:
            st = data.stat()
        except FileNotFoundError:
            raise ModelError(f"{beside} is missing: {fix}") from None
        except OSError as exc:
            raise ModelError(f"{beside} cannot be read ({exc.strerror or exc}): {fix}") from None
        if not stat.S_ISREG(st.st_mode):
            raise ModelError(f"{beside} is not a file: {fix}")
        if st.st_size < end:
            raise ModelError(f"{beside} is too short ({st.st_size} bytes, its weights need {end}): it is cut off or from "
                             f"another model; {fix}")
        sizes[data] = st.st_size
    return sizes


def external_data_files(path: str | Path) -> dict[Path, int]:
    """The files holding ``path``'s external weights, with their sizes (empty for a model that
    keeps its weights inside, or one the light reader cannot parse); ModelError as
    ``check_external_data`` when one is missing or short."""
    path = Path(path)
    header = ModelHeader.read(path)
    return check_external_data(path, header.external) if header is not None else {}


def describe_model(path: str | Path) -> ModelDescription:
    """Everything ``perception inspect`` prints about ``path`` (see ModelDescription).

    Raises:
        ModelError: as ``read_model_metadata``.
    """
    from perception.onnxgraph import nhwc_normalisation

    path = Path(path)
    proto = load_model_proto(path, with_weights=False)
    declared = metadata_from_proto(proto, source=path.name)
    metadata = with_graph_precision(declared, graph_quantised(proto))
    inputs, outputs = graph_inputs(proto), tensor_specs(proto.graph.output)
    check_io_contract(inputs, outputs, metadata, source=path.name)
    external = check_external_data(path, external_refs(proto))  # weights missing: not "0.34 MB" and exit 0
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
        saturation_safe=saturation_safe(proto) if metadata.precision == "int8" else None,
        older_normalisation=nhwc_normalisation(proto) is not None,
        external_data={str(p): n for p, n in external.items()},
        graph_classes=graph_class_count(proto),
        metadata_precision=declared.precision,
    )
