"""A dynamic batch for an already exported model, checked frame for frame.

``perception export --dynamic-batch`` makes a dynamic-batch model from a checkpoint. This step is
for an ``.onnx`` file exported with batch 1 whose checkpoint is not at hand (the shipped default
model and its INT8 sibling were made so): the batch dimension of the input and outputs becomes
symbolic (``N``), each ``Resize`` that was given constant ``sizes`` ([1, C, H, W]) takes its
batch and channels from its input's shape instead, a ``Reshape`` to a constant shape starting
with batch 1 copies the input's batch (``0``), and the stale intermediate shapes are dropped.

The gate (the converted file is written only when it passes): ONNX's checker, then ONNX Runtime
on ``VERIFY_FRAMES`` random frames run as one batch must give the class ids the original gives frame
by frame, at every batch size from 1 to ``VERIFY_FRAMES``: all of them for a float model, at least
``MIN_INT8_EQUAL`` for an INT8 one (ONNX Runtime's batched INT8 kernels round a few near-tie pixels
differently: 99.98 % on the shipped INT8 model). A ``confidence`` output (uint8 levels, 255 == 1.0)
is compared on the pixels whose class ids agree and may be off by at most ``CONFIDENCE_LEVELS`` level
on at most ``MAX_CONFIDENCE_OFF`` of them: batched convolutions add in another order, and a
probability that sits on a rounding edge then lands one level up or down (1-2 pixels of 675,840 on a
BiSeNet V2 ``--confidence`` export). Any other output must match within 1e-6. A graph with another
batch-1 constant fails that check and is left alone; the error line says to re-export from the
checkpoint with ``perception export --dynamic-batch``.

    python -m perception.export.batch perception/assets/default.onnx            # in place
    python -m perception.export.batch model.onnx --out model.dyn.onnx
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from perception.contracts import INPUT_NAME, METADATA_KEY, OUTPUT_CLASS_IDS, OUTPUT_CONFIDENCE
from perception.engines.base import backend_error_text
from perception.errors import ModelError, PerceptionError
from perception.export import ToolParser, check_out
from perception.modelfile import check_model_path, read_model_metadata, save_model_bytes

#: Frames of the equivalence check (every batch size from 1 to this is run).
VERIFY_FRAMES = 4
#: Least share of equal class ids an INT8 model must keep (a float model must keep all).
MIN_INT8_EQUAL = 0.999
#: Most uint8 levels a batched confidence may be off the batch-1 original on a pixel (float rounding).
CONFIDENCE_LEVELS = 1
#: Largest share of compared pixels whose batched confidence may be off at all (by ``CONFIDENCE_LEVELS``).
MAX_CONFIDENCE_OFF = 0.001
BATCH_DIM = "N"
#: What a failed check tells the user to do instead.
REEXPORT_HINT = "re-export it from its checkpoint with 'perception export --dynamic-batch'"


@dataclass(frozen=True)
class BatchCheck:
    """What ``verify_batches`` found over every batch size checked."""

    class_ids_equal: float  # share of equal class ids
    confidence_off: float | None = None  # share of compared pixels whose confidence is 1 level off; None: no output


@dataclass(frozen=True)
class BatchReport:
    """What the conversion changed and what the check found."""

    resizes: int
    reshapes: int
    frames_checked: int
    class_ids_equal: float  # share of equal class ids over every batch size checked
    confidence_off: float | None = None  # share of pixels whose confidence is off by 1 level; None: no confidence

    def lines(self) -> list[str]:
        confidence = ("" if self.confidence_off is None else
                      f", confidence off by {CONFIDENCE_LEVELS} level on {100 * self.confidence_off:.4f} % of the pixels "
                      f"(at most {100 * MAX_CONFIDENCE_OFF:g} % allowed: float rounding)")
        return [f"dynamic batch: {self.resizes} Resize and {self.reshapes} Reshape made batch-independent; "
                f"batches 1..{self.frames_checked} of ONNX Runtime vs the batch-1 original frame by frame: "
                f"{100 * self.class_ids_equal:.2f} % equal class ids{confidence}"]


def _constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def make_batch_dynamic(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, int]:
    """A copy of ``model`` with a symbolic batch (see the module docstring); with the counts of
    Resize and Reshape nodes rewritten."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    new_nodes: list[onnx.NodeProto] = []
    resizes = reshapes = 0
    for node in graph.node:
        if node.op_type == "Resize" and len(node.input) == 4 and node.input[3]:
            sizes = _constant(graph, node.input[3])
            if sizes is not None and sizes.shape == (4,) and sizes[0] == 1:
                # sizes = concat(shape(x)[0:2], [H, W]): batch and channels follow the input.
                base = f"{node.name or node.output[0]}_dynamic_batch"
                graph.initializer.extend([
                    numpy_helper.from_array(np.array([0], np.int64), f"{base}_start"),
                    numpy_helper.from_array(np.array([2], np.int64), f"{base}_end"),
                    numpy_helper.from_array(sizes[2:].astype(np.int64), f"{base}_hw"),
                ])
                new_nodes += [
                    helper.make_node("Shape", [node.input[0]], [f"{base}_shape"]),
                    helper.make_node("Slice", [f"{base}_shape", f"{base}_start", f"{base}_end"], [f"{base}_nc"]),
                    helper.make_node("Concat", [f"{base}_nc", f"{base}_hw"], [f"{base}_sizes"], axis=0),
                ]
                node.input[3] = f"{base}_sizes"
                resizes += 1
        elif node.op_type == "Reshape":
            shape = _constant(graph, node.input[1])
            allowzero = any(a.name == "allowzero" and a.i for a in node.attribute)
            if shape is not None and shape.ndim == 1 and shape.size and shape[0] == 1 and not allowzero:
                fixed = shape.copy()
                fixed[0] = 0  # 0: copy the input's dimension (the batch)
                name = f"{node.name or node.output[0]}_dynamic_batch_shape"
                graph.initializer.append(numpy_helper.from_array(fixed.astype(np.int64), name))
                node.input[1] = name
                reshapes += 1
        new_nodes.append(node)
    # The replaced batch-1 constants are used by nothing now: drop them (ONNX Runtime warns of each).
    used = {name for node in new_nodes for name in node.input} | {out.name for out in graph.output}
    kept = [n for n in new_nodes if n.op_type != "Constant" or n.output[0] in used]
    del graph.node[:]
    graph.node.extend(kept)
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    del graph.value_info[:]  # intermediate shapes recorded for batch 1
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = BATCH_DIM
    return model, resizes, reshapes


@contextlib.contextmanager
def _backend_errors(what: str, fix: str):
    """ONNX Runtime's errors (its own types, MemoryError) inside as one ModelError line: ``what``,
    the backend's words, ``fix``. Errors of this code (a bug) keep their traceback."""
    try:
        yield
    except (PerceptionError, AssertionError, AttributeError, NameError, TypeError):
        raise
    except Exception as exc:
        raise ModelError(f"{what} ({type(exc).__name__}: {backend_error_text(exc)}); {fix}") from exc


def verify_batches(original: Path, converted: Path, *, frames: int = VERIFY_FRAMES, seed: int = 0) -> BatchCheck:
    """``converted`` run on batches 1..``frames`` against ``original`` run frame by frame (ONNX Runtime
    CPU): the share of equal class ids (judged by the caller), and the confidence, checked here.

    Raises:
        ModelError: the confidence is more than ``CONFIDENCE_LEVELS`` off on a pixel whose class ids
            agree, or off on more than ``MAX_CONFIDENCE_OFF`` of them, or another output differs.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 4  # its errors are raised, and said in one line below
    with _backend_errors(f"{original.name}: ONNX Runtime cannot run the batch-1 original", "check the file with "
                         "perception inspect (the node would refuse it as well)"):
        a = ort.InferenceSession(str(original), options, providers=["CPUExecutionProvider"])
        shape = [d if isinstance(d, int) else 1 for d in a.get_inputs()[0].shape]
        x = np.random.default_rng(seed).integers(0, 256, (frames, *shape[1:]), dtype=np.uint8)
        names = [o.name for o in a.get_outputs()]
        reference = [dict(zip(names, a.run(None, {INPUT_NAME: x[i : i + 1]}), strict=True)) for i in range(frames)]
    h, w = x.shape[1:3]
    for name in (OUTPUT_CLASS_IDS, OUTPUT_CONFIDENCE):  # the node's check of its warm-up (Engine.check_outputs)
        out = reference[0].get(name)
        if out is not None and (out.dtype != np.uint8 or out.shape != (1, h, w)):
            raise ModelError(f"{original}: output {name!r} is {out.dtype} {tuple(out.shape)} when it runs, the node "
                             f"needs uint8 (1, {h}, {w}) as its graph declares; re-export the model")
    with _backend_errors(f"{original.name}: ONNX Runtime cannot load the dynamic-batch graph", REEXPORT_HINT):
        b = ort.InferenceSession(str(converted), options, providers=["CPUExecutionProvider"])
    equal = total = off = compared = 0
    for n in range(1, frames + 1):
        with _backend_errors(f"{original.name}: the dynamic-batch graph fails at batch {n}", REEXPORT_HINT):
            got = dict(zip(names, b.run(None, {INPUT_NAME: x[:n]}), strict=True))
        want = {name: np.concatenate([r[name] for r in reference[:n]]) for name in names}
        same_class = got[OUTPUT_CLASS_IDS] == want[OUTPUT_CLASS_IDS] if OUTPUT_CLASS_IDS in names else None
        for name in names:
            if name == OUTPUT_CLASS_IDS:
                equal += int(same_class.sum())
                total += same_class.size
            elif name == OUTPUT_CONFIDENCE:
                # Pixels whose class flipped are the class-id check's: their confidence is another class's.
                diff = np.abs(got[name].astype(np.int16) - want[name].astype(np.int16))
                if same_class is not None:
                    diff = diff[same_class]
                worst = int(diff.max(initial=0))
                if worst > CONFIDENCE_LEVELS:
                    raise ModelError(
                        f"{original.name}: the dynamic-batch graph's {name!r} at batch {n} is {worst} levels off the "
                        f"batch-1 original on a pixel (at most {CONFIDENCE_LEVELS} allowed); {REEXPORT_HINT}")
                off += int(np.count_nonzero(diff))
                compared += diff.size
            elif not np.allclose(got[name], want[name], atol=1e-6):
                raise ModelError(f"{original.name}: the dynamic-batch graph's output {name!r} at batch {n} differs from "
                                 f"the batch-1 original; {REEXPORT_HINT}")
    confidence_off = off / compared if compared else (0.0 if OUTPUT_CONFIDENCE in names else None)
    if confidence_off is not None and confidence_off > MAX_CONFIDENCE_OFF:
        raise ModelError(
            f"{original.name}: the dynamic-batch graph's {OUTPUT_CONFIDENCE!r} is off the batch-1 original on "
            f"{100 * confidence_off:.3f} % of the pixels (at most {100 * MAX_CONFIDENCE_OFF:g} % allowed); {REEXPORT_HINT}")
    return BatchCheck(class_ids_equal=equal / total if total else 1.0, confidence_off=confidence_off)


def convert(src: Path, dst: Path) -> BatchReport:
    """Write the dynamic-batch version of ``src`` to ``dst`` (may be ``src``) once it passes the gate.

    Raises:
        ModelError: ``src`` is not a perception model, is already dynamic, or the converted graph
            does not give the original's class ids (and confidence, within rounding) at every batch size.
    """
    check_model_path(src)  # first: a FIFO would block the readers below, a folder or link loop is one line
    check_out(dst)  # before the work: a folder, a FIFO (the write would block), a device, a folder not writable
    metadata = read_model_metadata(src)
    model = onnx.load(str(src))
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    if not batch.HasField("dim_value"):
        raise ModelError(f"{src.name} already has a dynamic batch")
    if batch.dim_value != 1:
        raise ModelError(f"{src.name} has a fixed batch of {batch.dim_value}; this tool converts a file exported with "
                         f"batch 1, so {REEXPORT_HINT}")
    converted, resizes, reshapes = make_batch_dynamic(model)
    props = {p.key: p.value for p in converted.metadata_props}
    props[METADATA_KEY] = replace(metadata, dynamic_batch=True).to_json()
    del converted.metadata_props[:]
    helper.set_model_props(converted, props)
    onnx.checker.check_model(converted)
    with tempfile.TemporaryDirectory(prefix="dynamic-batch-") as tmp:
        candidate = Path(tmp) / dst.name
        onnx.save(converted, str(candidate))
        check = verify_batches(src, candidate)
        equal = check.class_ids_equal
        required = MIN_INT8_EQUAL if metadata.precision == "int8" else 1.0
        if equal < required:
            raise ModelError(
                f"{src.name}: the dynamic-batch graph gives {100 * equal:.2f} % of the original's class ids, "
                f"under {100 * required:g} %; {REEXPORT_HINT}"
            )
        assert read_model_metadata(candidate).dynamic_batch  # the metadata reads back
        save_model_bytes(candidate.read_bytes(), dst)  # atomic; in place through a link, permissions kept
    return BatchReport(resizes=resizes, reshapes=reshapes, frames_checked=VERIFY_FRAMES, class_ids_equal=equal,
                       confidence_off=check.confidence_off)


def main(argv: list[str] | None = None) -> int:
    """Give an exported batch-1 model a dynamic batch, checked frame for frame (see the module docstring)."""
    from perception.errors import PerceptionError

    parser = ToolParser("batch", label="export.batch", description=main.__doc__)
    parser.add_argument("model", type=Path, help="exported batch-1 .onnx")
    parser.add_argument("--out", type=Path, help="where to write it (default: in place)")
    args = parser.parse_args(argv)
    try:
        report = convert(args.model, args.out or args.model)
    except PerceptionError as exc:
        print(f"export.batch: error: {exc}")
        return 2
    for line in report.lines():
        print(line)
    print(f"wrote {args.out or args.model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
