"""The unknown threshold a model ships with: step 2b of the export chain (``--confidence``).

The node marks a pixel unknown (class id ``contracts.UNKNOWN_CLASS_ID``, in no task mask) when the
model's confidence (its top softmax probability, or the summed probability of the obstacle classes
where one of them wins: ``contracts.confidence_pool``) is below ``unknown_threshold`` in the model's
metadata. ``choose_threshold`` picks that threshold on the model's own validation data by one rule:

    the lowest threshold at which the drivable pixels the model claims wrongly (predicted
    drivable, labelled otherwise) fall to at most half (``FALSE_DRIVABLE_CUT``) of their number
    without unknown marking, unless that marks more than 5 % (``UNKNOWN_BUDGET``) of the labelled
    pixels unknown; then the highest threshold that marks at most 5 %.

Why: drivable is the mask a planner trusts, and a false "drivable" is the costly error, so the
marking must at least halve those errors where it is measured. The budget keeps the model from
being unsure of the data it knows: in its own domain at most 5 % of the pixels are unknown, so a
much larger share on the road (night, fog, a real road for a model trained on the synthetic world)
is a signal, not the normal state. The rule never sees the data a model is judged on (CamVid for
the shipped default model, which is trained on the synthetic world and chooses on its val split).
A model without a drivable task group counts all its misclassified pixels instead.

For an already exported model (no checkpoint)::

    python -m perception.export.unknown model.onnx --out model_conf.onnx [--data SPEC] [--count 50] [--threshold P]

adds the confidence output (softmax, max or the obstacle pool, x255, round, uint8 after the logits
of its ArgMax: the graph ``perception export --confidence`` builds; one the model has is replaced, so
a file exported before the pool gets it) and stores the threshold
(chosen by the rule on ``--data``, default the model's own dataset, val split; or ``--threshold``).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from perception.contracts import OUTPUT_CLASS_IDS, OUTPUT_CONFIDENCE, confidence_pool, unknown_level
from perception.errors import ConfigError, DataError, PerceptionError
from perception.onnxgraph import sweep

log = logging.getLogger(__name__)

#: The rule's target: wrongly claimed drivable pixels at most this share of those without marking.
FALSE_DRIVABLE_CUT = 0.5
#: The rule's budget: at most this share of the labelled validation pixels may be unknown.
UNKNOWN_BUDGET = 0.05
#: Validation images the threshold is chosen on (spread evenly over the split).
DEFAULT_COUNT = 50


@dataclass
class ConfidenceCurves:
    """Labelled pixels by uint8 confidence level (``labelled``) and, of those, the wrongly claimed
    ones (``wrong``: predicted drivable and labelled otherwise, or misclassified when ``errors`` says
    so), over ``images`` images of ``data``."""

    labelled: np.ndarray
    wrong: np.ndarray
    images: int
    data: str
    errors: str

    def unknown_share(self) -> np.ndarray:
        """Share of labelled pixels unknown at each level 0..255 (those with confidence < level)."""
        below = np.concatenate(([0], np.cumsum(self.labelled)[:-1]))
        return below / max(int(self.labelled.sum()), 1)

    def wrong_left(self) -> np.ndarray:
        """Wrongly claimed pixels still claimed at each level 0..255 (confidence >= level)."""
        return np.cumsum(self.wrong[::-1])[::-1]


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold the rule chose and the figures that justify it."""

    threshold: float
    level: int
    unknown_share: float
    wrong_before: int
    wrong_after: int
    rule: str


class _Spread:
    """``count`` samples spread evenly over a dataset (the chooser does not need every image)."""

    def __init__(self, dataset, count: int) -> None:
        self.class_table, self.name = dataset.class_table, dataset.name
        picks = np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int)
        self._dataset, self._indices = dataset, list(dict.fromkeys(picks.tolist()))

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int):
        return self._dataset[self._indices[index]]


#: The fix named when the rule has no labelled pixel to choose on (``perception export``'s flags).
NO_LABELS_FIX = "pass --unknown-data SPEC naming labelled images of the model's classes, or --unknown-threshold P"


def measure_curves(engine, spec: str, *, count: int = DEFAULT_COUNT, fix: str = NO_LABELS_FIX) -> ConfidenceCurves:
    """Histograms of ``engine`` (with a confidence output) over ``count`` val images of ``spec``,
    letterboxed as the node does.

    Raises:
        DataError/ConfigError: the dataset cannot be opened, is empty, shares neither a drivable
            group nor the class table with the model, or has no labelled pixel (every label the
            ignore id: ``perception eval``'s line, then ``fix``): the rule would report "no wrongly
            claimed pixels" on nothing.
    """
    from perception.datasets import open_dataset
    from perception.metrics import no_labelled_pixels
    from perception.training.evaluate import predict_like_the_node, resolve_task_groups

    dataset = open_dataset(spec, split="val")
    if len(dataset) == 0:
        raise DataError(f"dataset {spec!r} has no val images to choose the unknown threshold on; pass --unknown-data")
    model_table, data_table = engine.metadata.class_table, dataset.class_table
    try:
        group = resolve_task_groups(model_table, data_table, tasks=["drivable"])[0]
    except ConfigError:
        if model_table.names != data_table.names:
            raise ConfigError(
                f"dataset {spec!r} shares neither a drivable task group nor the class table with the model; "
                "choose the unknown threshold on the model's own data (--unknown-data) or give --unknown-threshold"
            ) from None
        group = None
    model_lut, data_lut = np.zeros(256, bool), np.zeros(256, bool)
    if group is not None:
        model_lut[[model_table.id_of(n) for n in group.model_classes]] = True
        data_lut[[data_table.id_of(n) for n in group.data_classes]] = True
    labelled, wrong = np.zeros(256, np.int64), np.zeros(256, np.int64)
    subset = _Spread(dataset, count)
    for class_ids, label, confidence in predict_like_the_node(engine, subset, with_confidence=True):
        valid = label < data_table.num_classes  # the ignore id and stray values count for nothing
        conf, ids, lab = confidence[valid], class_ids[valid], label[valid]
        mistaken = model_lut[ids] & ~data_lut[lab] if group is not None else ids != lab
        labelled += np.bincount(conf, minlength=256)
        wrong += np.bincount(conf[mistaken], minlength=256)
    if not labelled.any():
        raise DataError(f"unknown threshold: {no_labelled_pixels(spec, 'val', subset)}; {fix}")
    errors = (f"drivable ({','.join(group.model_classes)}) claimed where the label is not "
              f"({','.join(group.data_classes)})") if group is not None else "misclassified (no drivable group)"
    return ConfidenceCurves(labelled=labelled, wrong=wrong, images=len(subset), data=spec, errors=errors)


def choose_threshold(
    curves: ConfidenceCurves, *, cut: float = FALSE_DRIVABLE_CUT, budget: float = UNKNOWN_BUDGET
) -> ThresholdChoice:
    """The rule of the module docstring over ``curves``; threshold 0 when nothing is claimed wrongly."""
    share, left = curves.unknown_share(), curves.wrong_left()
    before = int(left[0])
    cut_level = int(np.argmax(left <= cut * before))  # the first level at the target (left is non-increasing)
    budget_level = int(np.flatnonzero(share <= budget)[-1])  # share[0] == 0, so never empty
    level = min(cut_level, budget_level)
    threshold = round(level / 255, 4)
    assert unknown_level(threshold) == level  # 4 decimals of level/255 round back to the level
    how = ("halves" if level == cut_level else f"is cut by {100 * (1 - left[level] / max(before, 1)):.0f} % at the "
           f"{100 * budget:.0f} % budget (halving needs {100 * share[cut_level]:.1f} % unknown)")
    rule = (
        f"lowest confidence at which wrongly claimed pixels fall to {100 * cut:.0f} %, at most {100 * budget:.0f} % "
        f"unknown (export.unknown); on {curves.images} val images of {curves.data}: {curves.errors}: "
        f"{before} -> {int(left[level])} ({how}), {100 * share[level]:.2f} % of labelled pixels unknown"
    )
    if before == 0:
        rule = f"no wrongly claimed pixels on {curves.images} val images of {curves.data}: no unknown threshold"
    return ThresholdChoice(threshold=threshold, level=level, unknown_share=float(share[level]),
                           wrong_before=before, wrong_after=int(left[level]), rule=rule)


def choose_for_model(model: Path, spec: str, *, count: int = DEFAULT_COUNT, fix: str = NO_LABELS_FIX) -> ThresholdChoice:
    """The rule's threshold for the exported ``model`` (with a confidence output), run through ONNX
    Runtime on ``count`` val images of ``spec``; ``fix`` as for ``measure_curves``."""
    from perception.engines.ort import OrtEngine

    engine = OrtEngine(model)
    try:
        return choose_threshold(measure_curves(engine, spec, count=count, fix=fix))
    finally:
        engine.close()


def add_confidence_output(proto: onnx.ModelProto, pool: list[bool] | None = None) -> onnx.ModelProto:
    """A copy of an exported graph whose ``confidence`` output is the one ``perception export
    --confidence`` builds (``export.onnx.ExportWrapper``) for ``pool``; an existing confidence output
    is replaced. round(255 x p) as uint8, p the top softmax probability over the logits of the
    ArgMax that gives ``class_ids`` (as 1 / sum(exp(logits - max)), without a Softmax node), or the
    pool's summed probability where a ``pool`` class wins (``pool``: per class, whether it is in
    ``contracts.confidence_pool``; None: no pool).

    Raises:
        ModelError: the graph does not end in the exporter's ArgMax -> Cast pattern.
    """
    from perception.export.graph import class_argmax, logits_tensor

    logits, argmax = logits_tensor(proto), class_argmax(proto)
    copy = _without_output(proto, OUTPUT_CONFIDENCE)
    opset = next((o.version for o in copy.opset_import if o.domain in ("", "ai.onnx")), 18)
    prefix = "perception_confidence"
    nodes: list[onnx.NodeProto] = []

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=f"{prefix}_{len(nodes)}_{op}", **attrs))
        return output

    def const(name: str, dtype: int, dims: list[int], values) -> str:
        copy.graph.initializer.append(helper.make_tensor(f"{prefix}_{name}", dtype, dims, values))
        return f"{prefix}_{name}"

    axes = const("axes", TensorProto.INT64, [1], [1]) if opset >= 13 else ""

    def reduce(op: str, source: str, out: str, keepdims: int, axes_as_input_from: int) -> str:
        # Over the class axis 1; the axes became an input at opset 18 (ReduceSum: 13).
        if opset >= axes_as_input_from:
            return node(op, [source, axes], out, keepdims=keepdims)
        return node(op, [source], out, keepdims=keepdims, axes=[1])

    # The exporter's tail: the top softmax probability as 1 / sum(exp(logits - max)), without a
    # Softmax over the channel axis (slow in ONNX Runtime).
    top = reduce("ReduceMax", logits, f"{prefix}_top", 1, 18)  # N x 1 x H x W
    exp = node("Exp", [node("Sub", [logits, top], f"{prefix}_shifted")], f"{prefix}_exp")  # the winner's is 1
    total = reduce("ReduceSum", exp, f"{prefix}_sum", 0, 13)  # N x H x W
    if pool is None or not any(pool):
        prob = node("Reciprocal", [total], f"{prefix}_prob")
    else:  # a pooled winner counts the whole pool; 1 / sum otherwise
        members = [i for i, p in enumerate(pool) if p]
        index = const("pool_index", TensorProto.INT64, [len(members)], members)
        lut = const("pool_lut", TensorProto.BOOL, [len(pool)], [bool(p) for p in pool])
        # The pool's channels only (a Gather: 1 ms less than a mask over every channel, 288x480, 2 cores).
        pooled = reduce("ReduceSum", node("Gather", [exp, index], f"{prefix}_pool_exp", axis=1),
                        f"{prefix}_pooled", 0, 13)
        wins = node("Gather", [lut, argmax.output[0]], f"{prefix}_wins", axis=0)
        if next((a.i for a in argmax.attribute if a.name == "keepdims"), 1):  # ids N x 1 x H x W
            wins = node("Squeeze", [wins, axes] if opset >= 13 else [wins], f"{prefix}_wins_hw",
                        **({} if opset >= 13 else {"axes": [1]}))
        one = const("one", TensorProto.FLOAT, [], [1.0])
        prob = node("Div", [node("Where", [wins, pooled, one], f"{prefix}_pool_top"), total], f"{prefix}_prob")
    scaled = node("Mul", [prob, const("scale", TensorProto.FLOAT, [], [255.0])], f"{prefix}_scaled")
    rounded = node("Round", [scaled], f"{prefix}_rounded")  # half to even, as torch.round
    node("Cast", [rounded], OUTPUT_CONFIDENCE, to=TensorProto.UINT8)
    copy.graph.node.extend(nodes)
    class_ids = next(out for out in copy.graph.output if out.name == OUTPUT_CLASS_IDS)
    confidence = onnx.ValueInfoProto()
    confidence.CopyFrom(class_ids)  # uint8 N x H x W, like the class ids
    confidence.name = OUTPUT_CONFIDENCE
    copy.graph.output.append(confidence)
    return copy


def _without_output(proto: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """A copy of ``proto`` without graph output ``name`` and the nodes, initializers and value infos
    that only it used (``perception.onnxgraph.sweep``)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    kept_outputs = [o for o in copy.graph.output if o.name != name]
    if len(kept_outputs) == len(copy.graph.output):
        return copy
    del copy.graph.output[:]
    copy.graph.output.extend(kept_outputs)
    sweep(copy.graph)
    return copy


def main(argv: list[str] | None = None) -> int:
    from perception.export import ToolParser

    parser = ToolParser("unknown", label="python -m perception.export.unknown", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="an exported .onnx model")
    parser.add_argument("--out", type=Path, help="where to write the model (default: rewrite MODEL in place)")
    parser.add_argument("--data", metavar="SPEC", help="val data to choose on (default: the model's own dataset)")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help=f"val images (default {DEFAULT_COUNT})")
    parser.add_argument("--threshold", type=float, metavar="P", help="store this threshold (0..1) instead of choosing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        print(add_unknown_threshold(args.model, args.out or args.model, data=args.data, count=args.count,
                                    threshold=args.threshold))
    except PerceptionError as exc:
        print(f"python -m perception.export.unknown: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def add_unknown_threshold(
    model: Path, out: Path, *, data: str | None = None, count: int = DEFAULT_COUNT, threshold: float | None = None
) -> str:
    """Write ``model`` to ``out`` with a confidence output and an unknown threshold (see the module
    docstring); returns a one-line report."""
    import tempfile

    from perception.export import check_model_runs
    from perception.export.graph import finish_model
    from perception.modelfile import (
        check_model_path,
        check_writable,
        load_model_proto,
        read_model_metadata,
        save_model,
    )

    if threshold is not None and not 0 <= threshold <= 1:
        raise ConfigError(f"--threshold {threshold:g} must be a probability in 0..1")
    if count < 1:
        raise ConfigError(f"--count {count} must be at least 1")
    if out.suffix != ".onnx" or out.is_dir():
        raise ConfigError(f"--out {out} must be an .onnx file name")
    check_model_path(model)  # first: a FIFO would block the reader below
    metadata = read_model_metadata(model)
    check_writable(out)  # before the threshold search, not after
    # The node's first inference of the input, whatever the flags: a graph that cannot run, or runs
    # to other shapes than it declares, is one line naming the file, not a traceback from the rewrite.
    check_model_runs(model)
    metadata = dataclasses.replace(metadata, has_confidence=True, confidence_pool=confidence_pool(metadata.class_table))
    proto = finish_model(add_confidence_output(load_model_proto(model), metadata.confidence_pool_flags()), metadata,
                         source=f"{model} with a confidence output")
    spec = None
    if threshold is None:
        spec = data or metadata.dataset
        if not spec:
            raise ConfigError(f"{model.name} does not say which dataset it was trained on; pass --data")
        if not data:  # the model's own record, which the user never typed: say so, and the flag
            from perception.export import open_recorded_dataset

            open_recorded_dataset(spec, "val", recorded_in=str(model),
                                  fix="pass --data SPEC to choose on other data, or --threshold P")
    with tempfile.TemporaryDirectory(prefix="perception-unknown-") as tmp:
        staged = Path(tmp) / model.name  # the user's file name: messages name the user's path instead
        save_model(proto, staged)
        # The rewritten graph must run too (with --threshold as well): never write a model the node refuses.
        check_model_runs(staged, name=f"{model} (with the confidence output added)")
        if threshold is not None:
            metadata = dataclasses.replace(metadata, unknown_threshold=float(threshold), unknown_rule="given")
        else:
            choice = choose_for_model(staged, spec, count=count,
                                      fix="pass --data SPEC naming labelled images of the model's classes, or --threshold P")
            metadata = dataclasses.replace(metadata, unknown_threshold=choice.threshold, unknown_rule=choice.rule)
    save_model(finish_model(proto, metadata, source=f"{model} with a confidence output"), out)
    sibling = out.with_name(out.name.removesuffix(".onnx") + ".int8.onnx")
    stale = f"; {sibling.name} lacks them: python -m perception.export.quantize {out}" if sibling.is_file() else ""
    return f"unknown: threshold {metadata.unknown_threshold:.4g} ({metadata.unknown_rule}); wrote {out}{stale}"


if __name__ == "__main__":
    sys.exit(main())
