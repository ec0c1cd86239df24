"""The few parts of an ONNX model file the node needs, read straight from the protobuf wire format.

``ModelHeader.read(path)`` returns the file's metadata properties, its graph inputs and outputs
(``TensorSpec``), the initializers it stores outside itself (``ExternalRef``) and whether its graph
is quantised (``quantised``: quantisation nodes, whatever its metadata says), or None when the
light reader cannot parse it (``modelfile`` then asks ``onnx`` for the exact error). Written by
hand, not with the ``onnx`` package, because importing that package (through ``ml_dtypes``) took
longer than the rest of the node's start-up together (measured 0.3-6 s on a busy 2-core machine),
and the node reads only these fields. A field that occurs more than once is read as protobuf reads
it (``onnx.load``, ONNX Runtime, OpenVINO): a message field given twice (``ModelProto.graph``
written in two parts) is one message whose repeated fields (nodes, initializers, inputs, outputs)
are the parts' in order, so no weight of the first part is missed. What the fields mean and whether they meet the contract is
``modelfile``'s business; this module only reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, element type (numpy name) and shape (ints or symbols)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ExternalRef:
    """One initializer stored outside the ``.onnx`` (ONNX external data), as the file records it:
    its name, its ``external_data`` entries (``location``: a file relative to the model's folder,
    ``offset``, ``length``), its shape and its ONNX element type."""

    tensor: str
    entries: tuple[tuple[str, str], ...]
    dims: tuple[int, ...]
    data_type: int

    @property
    def location(self) -> str:
        return dict(self.entries).get("location", "")


#: ONNX TensorProto.DataType -> numpy dtype name (the types a perception model's I/O can have).
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
                9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}


#: Op types of a quantised graph: the QDQ format's QuantizeLinear / DequantizeLinear pairs (what
#: NNCF, ``perception.export.quantize`` and ONNX Runtime's ``quantize_static`` write), the
#: QOperator format's integer ops (``QLinear*``, ``ConvInteger``, ``MatMulInteger``) and ONNX
#: Runtime's dynamic quantisation (``DynamicQuantize*``, ``MatMulIntegerToFloat``, ``QGemm``,
#: ``QAttention``). A float graph holds none of them.
QUANTISATION_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger",
                              "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM",
                              "QGemm", "QAttention"})


#: The name of every op ``is_quantisation_op`` knows holds one of these: a node whose bytes hold none
#: of them is none of them, and its op type need not be parsed (a float graph costs three byte
#: searches a node, not a parse of every node: within the noise of a 2 ms read of the default model).
QUANTISATION_OP_MARKS = (b"Q", b"Dequantize", b"Integer")


def _may_be_quantisation_op(data: bytes, span: tuple[int, int]) -> bool:
    return any(data.find(mark, *span) >= 0 for mark in QUANTISATION_OP_MARKS)


def is_quantisation_op(op_type: str) -> bool:
    """Whether a node of type ``op_type`` only occurs in a quantised graph (``QUANTISATION_OPS``)."""
    return op_type in QUANTISATION_OPS or op_type.startswith("QLinear")


class WireError(ValueError):
    pass


def varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    """The protobuf varint at ``buf[pos]`` (before ``end``) and the position after it."""
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def fields(buf: memoryview, start: int = 0, end: int | None = None):
    """(field number, wire type, value) of one protobuf message in ``buf[start:end]``; the value is
    an int for varints and a (start, end) span for length-delimited fields."""
    end = len(buf) if end is None else end
    pos = start

    def next_varint() -> int:
        nonlocal pos
        value, pos = varint(buf, pos, end)
        return value

    while pos < end:
        key = next_varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, next_varint()
        elif wire == 2:
            length = next_varint()
            if pos + length > end:
                raise WireError("field runs past the end")
            yield number, wire, (pos, pos + length)
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > end:
                raise WireError("fixed field runs past the end")
        else:
            raise WireError(f"unsupported wire type {wire}")


def fields_of_varints(buf: memoryview, start: int, end: int):
    """The varints of a packed repeated field in ``buf[start:end]``, as ``fields`` yields values."""
    pos = start
    while pos < end:
        value, pos = varint(buf, pos, end)
        yield 1, 0, value


@dataclass(frozen=True)
class ModelHeader:
    """The parts of an ONNX ModelProto the node needs, read from the wire format (see the module
    docstring; field numbers from onnx/onnx.proto: ModelProto.graph 7, metadata_props 14; GraphProto
    initializer 5, input 11, output 12; ValueInfoProto name 1, type 2; TypeProto.tensor_type 1;
    Tensor elem_type 1, shape 2; TensorShapeProto.dim 1; Dimension dim_value 1, dim_param 2)."""

    props: dict[str, str]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    #: Initializers stored outside the file (TensorProto dims 1, data_type 2, name 8,
    #: external_data 13 as key 1 / value 2 entries, data_location 14: EXTERNAL is 1).
    external: tuple[ExternalRef, ...] = ()
    #: The graph holds quantisation nodes (``is_quantisation_op``; NodeProto op_type 4), whatever
    #: the metadata's ``precision`` says: a file quantised by another tool keeps the FP32 file's metadata.
    quantised: bool = False

    @classmethod
    def read(cls, path: Path) -> ModelHeader | None:
        """The header of ``path``; None when the file is missing or not a well-formed model."""
        try:
            buf = memoryview(path.read_bytes())
            return cls._parse(buf)
        except (OSError, WireError, UnicodeDecodeError, KeyError):
            return None

    @classmethod
    def _parse(cls, buf: memoryview) -> ModelHeader | None:
        def text(span: tuple[int, int]) -> str:
            return bytes(buf[span[0] : span[1]]).decode("utf-8")

        props: dict[str, str] = {}
        graphs = []
        for number, wire, value in fields(buf):
            if number == 14 and wire == 2:
                entry = {n: text(v) for n, w, v in fields(buf, *value) if w == 2}
                props[entry.get(1, "")] = entry.get(2, "")
            elif number == 7 and wire == 2:
                graphs.append(value)  # protobuf merges the parts of a message field: read them all
        if not graphs:
            return None
        weights, inputs, outputs, nodes, external = set(), [], [], 0, []
        data = buf.obj if isinstance(buf.obj, bytes) and len(buf.obj) == len(buf) else bytes(buf)
        quantised = False
        for graph in graphs:
            for number, wire, value in fields(buf, *graph):
                if wire != 2:
                    continue
                if number == 1:
                    nodes += 1
                    if not quantised and _may_be_quantisation_op(data, value):
                        quantised = is_quantisation_op(cls._op_type(buf, value, text))
                elif number == 5:
                    name, ref = cls._initializer(buf, value, text)
                    weights.add(name)
                    if ref is not None:
                        external.append(ref)
                elif number in (11, 12):
                    (inputs if number == 11 else outputs).append(cls._value_info(buf, value, text))
        if not nodes or not inputs or not outputs:
            return None
        return cls(props=props, inputs=tuple(t for t in inputs if t.name not in weights), outputs=tuple(outputs),
                   external=tuple(external), quantised=quantised)

    @staticmethod
    def _op_type(buf: memoryview, span: tuple[int, int], text) -> str:
        """The op type of one node (a NodeProto; the last, as protobuf reads a field given twice)."""
        op_type = ""
        for number, wire, value in fields(buf, *span):
            if number == 4 and wire == 2:
                op_type = text(value)
        return op_type

    @staticmethod
    def _initializer(buf: memoryview, span: tuple[int, int], text) -> tuple[str, ExternalRef | None]:
        """The name of one initializer (a TensorProto) and, when stored outside the file, its ExternalRef."""
        name, dims, data_type, location, entries = "", [], 0, 0, {}
        for number, wire, value in fields(buf, *span):
            if number == 8 and wire == 2:
                name = text(value)
            elif number == 1 and wire == 0:
                dims.append(value)
            elif number == 1 and wire == 2:  # packed dims
                dims.extend(v for _, _, v in fields_of_varints(buf, *value))
            elif number == 2 and wire == 0:
                data_type = value
            elif number == 13 and wire == 2:
                entry = {n: text(v) for n, w, v in fields(buf, *value) if w == 2}
                entries[entry.get(1, "")] = entry.get(2, "")
            elif number == 14 and wire == 0:
                location = value
        if location != 1:
            return name, None
        return name, ExternalRef(tensor=name, entries=tuple(entries.items()), dims=tuple(dims), data_type=data_type)

    @staticmethod
    def _value_info(buf: memoryview, span: tuple[int, int], text) -> TensorSpec:
        name, dtype, shape = "", "unknown", []
        for number, wire, value in fields(buf, *span):
            if number == 1 and wire == 2:
                name = text(value)
            elif number == 2 and wire == 2:
                for tn, tw, tensor in fields(buf, *value):
                    if tn != 1 or tw != 2:
                        continue
                    for en, ew, ev in fields(buf, *tensor):
                        if en == 1 and ew == 0:
                            dtype = _ONNX_DTYPES.get(ev, f"onnx-type-{ev}")
                        elif en == 2 and ew == 2:
                            for dn, dw, dim in fields(buf, *ev):
                                if dn != 1 or dw != 2:
                                    continue
                                size: int | str = "?"
                                for xn, xw, xv in fields(buf, *dim):
                                    if xn == 1 and xw == 0:
                                        size = xv
                                    elif xn == 2 and xw == 2:
                                        size = text(xv) or "?"
                                shape.append(size)
        return TensorSpec(name=name, dtype=dtype, shape=tuple(shape))
