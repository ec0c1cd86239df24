"""Bring a model file an earlier ``perception export`` wrote to the graph it writes now, without
the checkpoint.

    python -m perception.export.upgrade model.onnx [model.int8.onnx ...] [--out new.onnx]

One rewrite so far, the input normalisation. Files exported before 2026-12-06 cast the uint8 image
to float, scaled and shifted it and swapped its channels on N x H x W x 3, then transposed it;
ONNX Runtime broadcasts slowly over an innermost axis of 3, and those four ops took about 7 ms of a
352x480 frame on 2 cores (0.9 ms for the same ops after the transpose). The rewrite moves the
transpose first (``export.onnx.ExportWrapper.normalise``): each value goes through the same
multiply and add, so ONNX Runtime's outputs are bit for bit those of the original, which the tool
checks on three images before it writes. (OpenVINO fuses the new order differently: on the default
model its class ids differed on 3 of 20.9 million pixels and its confidence on 0.003 %.) The
metadata (and so the file's recorded figures) is kept. An INT8 file is upgraded on its own: its
normalisation is the same float ops.

A model whose weights lie in a file beside it (``model.onnx`` + ``model.onnx.data``, ONNX external
data) needs that file to be read; a rewritten one is written whole into its ``--out`` (or in place),
and one with nothing to rewrite is copied to ``--out`` with its weights file beside it.
"""

from __future__ import annotations

import contextlib
import filecmp
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from perception.contracts import INPUT_NAME
from perception.errors import ConfigError, ModelError, PerceptionError
from perception.onnxgraph import names_in, nhwc_normalisation, sweep

_PREFIX = "perception_input"


def upgrade_normalisation(proto: onnx.ModelProto) -> bool:
    """Rewrite the older input normalisation of ``proto`` in place as Cast -> Transpose -> channel
    flip on axis 1 -> Mul -> Add on N x 3 x H x W (the exporter's graph today); False when there is
    none to rewrite. The Add writes the old Transpose's output, so every reader downstream is as it
    was; the sweep after it drops the old constants and value infos (and any other dead node)."""
    found = nhwc_normalisation(proto)
    if found is None:
        return False
    cast, mul, add, flip, transpose = found
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    taken = names_in(graph)

    def fresh(stem: str) -> str:  # perception_input_<stem>, or with _2, _3, ... where a file has that name
        name, k = f"{_PREFIX}_{stem}", 1
        while name in taken:
            k += 1
            name = f"{_PREFIX}_{stem}_{k}"
        taken.add(name)
        return name

    def const(stem: str, values: np.ndarray) -> str:
        name = fresh(stem)
        graph.initializer.append(numpy_helper.from_array(values, name))
        return name

    def nchw(node: onnx.NodeProto, data: str, new_data: str) -> list[str]:
        # The per-channel constant in RGB order as 1 x 3 x 1 x 1, on the side of the op it was on.
        values = numpy_helper.to_array(inits[next(x for x in node.input if x != data)]).reshape(3)[::-1]
        c = const({"Mul": "scale", "Add": "bias"}[node.op_type], np.ascontiguousarray(values).reshape(1, 3, 1, 1))
        return [new_data if x == data else c for x in node.input]

    i64 = np.int64
    nchw_image, rgb, scaled = fresh("nchw"), fresh("rgb"), fresh("scaled")
    slice_inputs = [nchw_image, const("starts", np.array([-1], i64)), const("ends", np.array([np.iinfo(i64).min], i64)),
                    const("axes", np.array([1], i64)), const("steps", np.array([-1], i64))]
    nodes = [
        helper.make_node("Transpose", [cast.output[0]], [nchw_image], name=fresh("transpose"), perm=[0, 3, 1, 2]),
        helper.make_node("Slice", slice_inputs, [rgb], name=fresh("flip")),
        helper.make_node("Mul", nchw(mul, cast.output[0], rgb), [scaled], name=fresh("mul")),
        helper.make_node("Add", nchw(add, mul.output[0], scaled), [transpose.output[0]], name=fresh("add")),
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
    sweep(graph)
    return True


def _outputs(model: bytes, images: list[np.ndarray], which: str, source: Path) -> list[np.ndarray]:
    import onnxruntime as ort

    from perception.engines.base import backend_error_text

    options = ort.SessionOptions()
    options.log_severity_level = 4  # its errors are raised, and said in one line below
    try:
        session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        return [out for image in images for out in session.run(None, {INPUT_NAME: image})]
    except Exception as exc:  # ORT's own error types (Fail, InvalidArgument, ...) derive from Exception only
        raise ModelError(f"{source}: ONNX Runtime cannot run {which} ({backend_error_text(exc)}); nothing written") from exc


def upgrade_file(model: Path, out: Path) -> str:
    """Upgrade ``model`` into ``out`` (module docstring); returns a one-line report. ``out`` the same
    file as ``model`` (also through a link): rewritten in place, a symbolic link's target and with
    the file's permissions kept (``save_model``). Another ``out``: written under a temporary name
    beside it and renamed onto it (a link there is replaced, not written through); a model with
    nothing to upgrade is copied there as it is, so ``out`` always holds the current form.

    Raises:
        ModelError: the file cannot be read, the node would refuse it (``read_model_metadata``),
            ONNX Runtime cannot run it, or the rewritten graph's outputs differ from the
            original's (nothing is written then). ConfigError: ``out`` cannot be written.
    """
    from perception.modelfile import (
        check_model_path,
        external_data_files,
        load_model_proto,
        read_model_metadata,
        save_model,
    )

    check_model_path(model)  # first: a FIFO would block the reader below
    read_model_metadata(model)  # the node's checks first: its metadata, I/O contract, input size bound, weights file
    in_place = Path(out) == Path(model) or _same_file(out, model)
    if not in_place:
        from perception.export import check_out

        check_out(out)  # before the work: a folder, a FIFO (the write would block), a device
    proto = load_model_proto(model)
    original = proto.SerializeToString()
    if not upgrade_normalisation(proto):
        nothing = f"upgrade: {model}: nothing to do (its input normalisation is not the older N x H x W x 3 form)"
        if in_place:
            return nothing + ("" if Path(out) == Path(model) else f"; --out {out} is that file, left as it is")
        external = external_data_files(model)
        copied = _copy_external_data(Path(model), Path(out), external)
        try:
            _write_beside(out, lambda staged: shutil.copyfile(model, staged))
        except BaseException:
            for path in copied:
                path.unlink(missing_ok=True)
            raise
        weights = f" with its weights file{'s' if len(external) > 1 else ''} {', '.join(p.name for p in external)}"
        return f"{nothing}; copied it to {out}{weights if external else ''}"
    spec = next(i for i in proto.graph.input if i.name == INPUT_NAME).type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else 1 for d in spec]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8), np.zeros(shape, np.uint8), np.full(shape, 255, np.uint8)]
    before = _outputs(original, images, "it", model)
    after = _outputs(proto.SerializeToString(), images, "the rewritten graph", model)
    if any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True)):
        raise ModelError(f"{model}: the rewritten graph's outputs differ from the original's; nothing written "
                         "(re-export the model from its checkpoint instead)")
    if in_place:
        save_model(proto, model)  # in place: a link's target, the file's permissions kept; ConfigError if it cannot
    else:
        _write_beside(out, lambda staged: save_model(proto, staged))
    return (f"upgrade: {model}: input normalisation now on N x 3 x H x W (faster in ONNX Runtime), "
            f"outputs bit-identical in ONNX Runtime on 3 images; wrote {out}{_int8_sibling_note(Path(model))}")


def _int8_sibling_note(model: Path) -> str:
    """"; model.int8.onnx beside it ..." when the INT8 file paired with ``model`` is still on the older
    normalisation (an upgrade rewrites one file; the pair stays paired and runs either way)."""
    from perception.modelfile import load_model_proto

    if model.name.endswith(".int8.onnx") or model.suffix != ".onnx":
        return ""
    sibling = model.with_name(model.name[: -len(".onnx")] + ".int8.onnx")
    try:
        if not sibling.is_file() or not upgrade_normalisation(load_model_proto(sibling)):
            return ""
    except Exception:  # noqa: BLE001 - a sibling that does not load is not this upgrade's to judge
        return ""
    return (f"\n  {sibling} beside it is still on the older normalisation (it stays paired with {model.name} and "
            f"runs): python -m perception.export.upgrade {sibling} upgrades it too")


def _copy_external_data(model: Path, out: Path, external: dict[Path, int]) -> list[Path]:
    """Copy the files holding ``model``'s external weights beside ``out``, at the names ``model``
    gives them (its copy names them so); returns the files it wrote. One already there (the same
    folder, or an earlier copy) is left when it holds the same bytes. ConfigError, nothing
    overwritten, when one there holds other data: another model's weights."""
    from perception.export import make_folder, move_into_place, temp_beside

    wanted = [(data, out.parent / data.relative_to(model.parent)) for data in external]
    for data, dest in wanted:
        if dest.exists() and not _same_file(dest, data) and not (dest.is_file() and filecmp.cmp(dest, data, shallow=False)):
            raise ConfigError(f"--out {out}: its weights file would be {dest}, which is already there with other data "
                              f"(another model's?); choose another --out folder, or remove {dest}")
    written: list[Path] = []
    try:
        for data, dest in wanted:
            if dest.exists():
                continue
            make_folder(dest.parent)
            staged = temp_beside(dest)
            try:
                shutil.copyfile(data, staged)
            except OSError as exc:
                staged.unlink(missing_ok=True)
                raise ConfigError(f"cannot write {dest} ({exc.strerror or exc}); choose a writable --out") from None
            move_into_place(staged, dest)
            written.append(dest)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def _same_file(a: Path, b: Path) -> bool:
    from perception.export import same_file

    return same_file(a, b)


def _write_beside(out: Path, write) -> None:
    """``write(staged)`` a temporary file beside ``out``, then rename it onto ``out``; on any
    failure (or Ctrl-C) the temporary file and the folders made for it go. ConfigError naming
    ``out`` when it cannot be written."""
    from perception.export import check_out, make_folder, move_into_place, remove_folders, temp_beside

    check_out(out)
    created = make_folder(out.parent)
    staged = temp_beside(out)
    try:
        try:
            write(staged)
        except OSError as exc:
            raise ConfigError(f"cannot write {out} ({exc.strerror or exc}); choose a writable --out") from None
        move_into_place(staged, out)
    except BaseException:
        with contextlib.suppress(OSError):
            staged.unlink(missing_ok=True)
        remove_folders(created)
        raise


def main(argv: list[str] | None = None) -> int:
    from perception.export import ToolParser

    parser = ToolParser("upgrade", label="python -m perception.export.upgrade", description=__doc__.split("\n\n")[0])
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
