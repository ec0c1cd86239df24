"""Bring a model file an earlier ``perception export`` wrote to the graph it writes now, without
the checkpoint, with bit-identical outputs.

    python -m perception.export.upgrade model.onnx [model.int8.onnx ...] [--out new.onnx]

One rewrite so far, the input normalisation. Files exported before 2026-12-06 cast the uint8 image
to float, scaled and shifted it and swapped its channels on N x H x W x 3, then transposed it;
ONNX Runtime broadcasts slowly over an innermost axis of 3, and those four ops took about 7 ms of a
352x480 frame on 2 cores (0.9 ms for the same ops after the transpose). The rewrite moves the
transpose first (``export.onnx.ExportWrapper.normalise``): each value goes through the same
multiply and add, so the outputs are bit for bit those of the original, and the tool checks that
with ONNX Runtime on three images before it writes. The metadata (and so the file's recorded
figures) is kept. An INT8 file is upgraded on its own: its normalisation is the same float ops.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from perception.contracts import INPUT_NAME
from perception.errors import ConfigError, ModelError, PerceptionError
from perception.export.graph import inputs_of, sweep

log = logging.getLogger(__name__)

_PREFIX = "perception_input"


def nhwc_normalisation(proto: onnx.ModelProto) -> list[onnx.NodeProto] | None:
    """The Cast, Mul, Add, Slice (channel flip) and Transpose nodes of the older input
    normalisation on N x H x W x 3 (module docstring), each read only by the next; None when the
    graph does not start that way."""
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    in_subgraphs = inputs_of(sub for n in graph.node for a in n.attribute
                             for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs))
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


def upgrade_normalisation(proto: onnx.ModelProto) -> bool:
    """Rewrite the older input normalisation of ``proto`` in place as Cast -> Transpose -> channel
    flip on axis 1 -> Mul -> Add on N x 3 x H x W (the exporter's graph today); False when there is
    none to rewrite. The Add writes the old Transpose's output, so the rest of the graph is untouched."""
    found = nhwc_normalisation(proto)
    if found is None:
        return False
    cast, mul, add, flip, transpose = found
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}

    def const(name: str, values: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(values, f"{_PREFIX}_{name}"))
        return f"{_PREFIX}_{name}"

    def nchw(node: onnx.NodeProto, data: str, new_data: str) -> list[str]:
        # The per-channel constant in RGB order as 1 x 3 x 1 x 1, on the side of the op it was on.
        values = numpy_helper.to_array(inits[next(x for x in node.input if x != data)]).reshape(3)[::-1]
        c = const({"Mul": "scale", "Add": "bias"}[node.op_type], np.ascontiguousarray(values).reshape(1, 3, 1, 1))
        return [new_data if x == data else c for x in node.input]

    i64 = np.int64
    nodes = [
        helper.make_node("Transpose", [cast.output[0]], [f"{_PREFIX}_nchw"], name=f"{_PREFIX}_transpose", perm=[0, 3, 1, 2]),
        helper.make_node("Slice", [f"{_PREFIX}_nchw", const("starts", np.array([-1], i64)),
                                   const("ends", np.array([np.iinfo(i64).min], i64)), const("axes", np.array([1], i64)),
                                   const("steps", np.array([-1], i64))], [f"{_PREFIX}_rgb"], name=f"{_PREFIX}_flip"),
        helper.make_node("Mul", nchw(mul, cast.output[0], f"{_PREFIX}_rgb"), [f"{_PREFIX}_scaled"], name=f"{_PREFIX}_mul"),
        helper.make_node("Add", nchw(add, mul.output[0], f"{_PREFIX}_scaled"), [transpose.output[0]], name=f"{_PREFIX}_add"),
    ]
    old = {id(n) for n in (mul, add, flip, transpose)}
    rebuilt: list[onnx.NodeProto] = []
    for n in graph.node:  # the new nodes where the Mul was: after the Cast, before every reader
        if n is mul:
            rebuilt += nodes
        elif id(n) not in old:
            rebuilt.append(n)
    del graph.node[:]
    graph.node.extend(rebuilt)
    sweep(graph)  # the old constants and the old intermediate tensors' value infos
    return True


def _outputs(model: bytes, images: list[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return [out for image in images for out in session.run(None, {INPUT_NAME: image})]


def upgrade_file(model: Path, out: Path) -> str:
    """Upgrade ``model`` into ``out`` (module docstring); returns a one-line report.

    Raises:
        ModelError: the file cannot be read, or the rewritten graph's outputs differ from the original's
            (nothing is written then).
    """
    from perception.modelfile import load_model_proto, save_model

    proto = load_model_proto(model)
    original = proto.SerializeToString()
    if not upgrade_normalisation(proto):
        return f"upgrade: {model}: nothing to do (its input normalisation is not the older N x H x W x 3 form)"
    spec = next(i for i in proto.graph.input if i.name == INPUT_NAME).type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else 1 for d in spec]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8), np.zeros(shape, np.uint8), np.full(shape, 255, np.uint8)]
    before, after = _outputs(original, images), _outputs(proto.SerializeToString(), images)
    if any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True)):
        raise ModelError(f"{model}: the rewritten graph's outputs differ from the original's; nothing written "
                         "(re-export the model from its checkpoint instead)")
    save_model(proto, out)
    return (f"upgrade: {model}: input normalisation now on N x 3 x H x W (about 6 ms less per 352x480 frame "
            f"in ONNX Runtime on 2 cores), outputs bit-identical on 3 images; wrote {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perception.export.upgrade", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", type=Path, nargs="+", metavar="MODEL", help="exported .onnx files")
    parser.add_argument("--out", type=Path, help="where to write (one MODEL only; default: rewrite each MODEL in place)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.out is not None and (len(args.models) > 1 or args.out.suffix != ".onnx" or args.out.is_dir()):
            raise ConfigError(f"--out {args.out} must be one .onnx file name, with one MODEL")
        for model in args.models:
            print(upgrade_file(model, args.out or model))
    except PerceptionError as exc:
        print(f"python -m perception.export.upgrade: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
