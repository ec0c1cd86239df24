"""``perception inspect model.onnx``: what an exported model is, without torch.

Prints the metadata (classes, task groups, input size, training dataset and its validation
figures, precision, tool versions), the inputs and outputs, the file size (and its external weights
file's, which must be there) and the operator counts; ``--json`` prints the same as one JSON
document. Where the file says something the node does otherwise, it says what the node does: a
stored unknown threshold without a confidence output (marking off), a class table that does not
match the classes the graph's argmax runs over (``warning``), a quantised graph whose metadata says
fp32 (``precision int8 (graph; metadata says fp32)``, and its ``weights`` line).
"""

from __future__ import annotations

import argparse
import json

from perception.console import emit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="exported .onnx file")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def main(args: argparse.Namespace) -> int:
    from perception.modelfile import describe_model

    description = describe_model(args.model)
    if args.json:
        emit(json.dumps(description.to_dict(), indent=2, sort_keys=True))
    else:
        emit("\n".join(format_description(description)))
    return 0


def _newest_opset() -> int:
    """The newest ai.onnx opset the installed onnx package knows (ONNX Runtime's releases follow it)."""
    import onnx.defs

    return int(onnx.defs.onnx_opset_version())


def _pct(value) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    text = f"{100 * value:.2f}"
    return f"{'0.00' if text == '-0.00' else text} %"  # -0.0 (a hand-written figure) is no negative share


def format_description(d) -> list[str]:
    """Human-readable lines for a perception.modelfile.ModelDescription."""
    from pathlib import Path

    from perception.contracts import OUTPUT_CONFIDENCE, UNKNOWN_CLASS_ID, confidence_pool
    from perception.metrics import display_width
    from perception.sources.base import shown  # the graph's producer is not checked metadata: escaped
    from perception.synthetic.version import (
        SYNTHETIC_WORLD_VERSION,
        is_synthetic,
        recorded_world,
        world_change,
    )

    m = d.metadata
    table = m.class_table
    h, w = m.input_hw
    external = "".join(f" + {size / 1e6:.2f} MB of weights in {Path(name).name}" for name, size in d.external_data.items())
    lines = [
        f"{d.path}  ({d.size_bytes / 1e6:.2f} MB{external}, {shown(d.producer) if d.producer else 'unknown producer'}, "
        f"opset {', '.join(f'{k} {v}' for k, v in d.opsets.items())})",
        f"model      {m.model_name}  id {m.model_id}",
        f"precision  {m.precision}" + (f" (graph; metadata says {d.metadata_precision})" if d.precision_from_graph else ""),
        f"input      {h}x{w}, dynamic batch: {'yes' if m.dynamic_batch else 'no'}, "
        f"mean {list(m.mean)}, std {list(m.std)} (RGB, on 0..1; as exported, the graph normalises the image itself)",
        f"dataset    {m.dataset or '-'}",
    ]
    newest = _newest_opset()
    if d.opsets.get("ai.onnx", 0) > newest:
        lines.insert(1, f"warning    opset ai.onnx {d.opsets['ai.onnx']} is newer than any this installation knows (up to "
                        f"{newest}): ONNX Runtime is likely to refuse it; export the model at opset {newest} or lower")
    if d.older_normalisation:
        lines.insert(-1, "           normalised on N x H x W x 3, as older exports are (slower in ONNX Runtime): "
                         f"python -m perception.export.upgrade {d.path} rewrites it, ONNX Runtime's outputs unchanged")
    metrics = m.val_metrics
    if metrics and not isinstance(metrics.get("miou"), (int, float)):
        # A checkpoint saved between validations (Ctrl-C, a data error) stores no figures: the
        # previous validation scored other weights, and is not shown as this model's.
        lines.append("val        none stored: no validation in training scored these weights (the checkpoint was "
                     "saved between validations); perception eval --model scores this file")
    elif metrics:
        # The training run's validation of the checkpoint, not a score of this file (another input
        # size, INT8): `perception eval --model` scores the file itself.
        hw = metrics.get("input_hw")
        at = [f"step {metrics['step']}"] if isinstance(metrics.get("step"), int) else []
        if isinstance(hw, list) and len(hw) == 2:
            at.append(f"at {hw[0]}x{hw[1]}" + ("" if tuple(hw) == (h, w) else f", this file {h}x{w}"))
        lines.append(
            f"val        mIoU {_pct(metrics.get('miou'))}, global acc {_pct(metrics.get('global_acc'))}, "
            f"class acc {_pct(metrics.get('class_acc'))}: the checkpoint's validation in training"
            f"{' (' + ', '.join(at) + ')' if at else ''}{', before INT8' if m.precision == 'int8' else ''}; "
            f"perception eval --model scores this file"
        )
        if is_synthetic(m.dataset):
            world = recorded_world(metrics)
            if world == SYNTHETIC_WORLD_VERSION:
                lines[-1] = lines[-1].replace(": the checkpoint's validation", f" in synthetic world version {world}: the "
                                                                               "checkpoint's validation", 1)
            elif world is not None:  # none recorded (an earlier release, the shipped model): nothing to compare
                lines.append("           " + world_change(world, whose="these figures", consequence=(
                    "perception eval of this file on synthetic data scores other scenes, and its figures are not "
                    "comparable with these")))
    gate = metrics.get("int8_gate") if m.precision == "int8" else None
    if isinstance(gate, dict):
        lines.append(f"int8 gate  {'PASS' if gate.get('passed') else 'FAIL'}: mIoU {_pct(gate.get('fp32_miou'))} FP32 -> "
                     f"{_pct(gate.get('int8_miou'))} INT8 on {gate.get('images', '?')} images, class ids agree "
                     f"{_pct(gate.get('agreement_with_fp32'))}")
    if d.saturation_safe is not None:  # read from the file's weights, whoever quantised it
        lines.append("weights    " + ("every dense 8-bit weight within 7 bits: the same results on CPUs with and without VNNI"
                                      if d.saturation_safe else
                                      "not shown within 7 bits: CPUs without VNNI (AVX2/AVX-512 only) may saturate; "
                                      "python -m perception.export.quantize --overflow-fix enable"))
    check = m.real_road_check
    confidence_output = OUTPUT_CONFIDENCE in {t.name for t in d.outputs}  # what the node goes by
    if check:
        tasks = check.get("tasks") or {}
        figures = ", ".join(f"{t} IoU {_pct((v or {}).get('iou'))}" for t, v in tasks.items()) or "no task figures"
        lines.append(f"real road  {figures} on {check.get('data') or 'data not named'} ({check.get('split') or '?'}, "
                     f"{check.get('frames', '?')} frames, never trained on)")
        reach = {"ego": "drivable only where joined to the car", "all": "drivable every pixel of its classes"}.get(
            check.get("drivable_reach", "all"), "")
        off = check.get("tasks_unknown_off") or {}
        if off and not confidence_output:
            # Measured with marking on another file; this one marks nothing (no confidence output).
            lines.append(f"           (measured with unknown marking, which this file cannot do; {reach}; with marking "
                         "off, as this file's node publishes: "
                         + ", ".join(f"{t} IoU {_pct((v or {}).get('iou'))}" for t, v in off.items()) + ")")
        elif off:
            threshold = (check.get("unknown") or {}).get("threshold")
            lines.append(f"           (the node's masks: unknown below {threshold}, {reach}; with marking off: "
                         + ", ".join(f"{t} IoU {_pct((v or {}).get('iou'))}" for t, v in off.items()) + ")")
        elif "drivable" in tasks:
            lines.append(f"           ({reach})")
    per_class = metrics.get("per_class_iou") or {}
    if not confidence_output:
        stored = f"; its stored threshold {m.unknown_threshold:.4g} is not used" if m.unknown_threshold > 0 else ""
        lines.append(f"unknown    marking off: no confidence output{stored} (perception export --confidence adds it)")
    elif m.unknown_threshold > 0:
        lines.append(f"unknown    id 255 below confidence {m.unknown_threshold:.4g} ({m.unknown_rule or 'no rule recorded'})")
    else:
        lines.append("unknown    no threshold stored (perception run --unknown-threshold P marks unsure pixels)")
    if m.has_confidence and m.confidence_pool:
        lines.append(f"confidence the top class probability, or the summed probability of {', '.join(m.confidence_pool)} "
                     "where one of them wins")
    elif m.has_confidence:
        fix = ("python -m perception.export.unknown pools the obstacle classes" if confidence_pool(table)
               else "no obstacle group of two or more classes to pool")
        lines.append(f"confidence the top class probability (no pool: {fix})")
    adjust = m.logit_adjust
    if adjust and adjust.get("tau") == 0:  # auto found no tau better than none: the biases are all 0
        lines.append(f"logits     not adjusted: tau 0 chosen ({adjust.get('rule', 'no rule recorded')})")
    elif adjust:
        lines.append(f"logits     adjusted: tau {adjust.get('tau')} of the {adjust.get('weighting')} class weights undone at the "
                     f"argmax ({adjust.get('rule', 'no rule recorded')}); the per-class val IoUs below are the model's before it")
    lines.append(f"classes    {table.num_classes} (ignore id {table.ignore_id})")
    graph = d.graph_classes
    if graph is not None and graph > table.num_classes:
        lines.append(f"warning    the graph's argmax runs over {graph} classes, its class table names {table.num_classes}: "
                     f"the node publishes class ids {table.num_classes}..{graph - 1} as unknown ({UNKNOWN_CLASS_ID}); "
                     "the metadata is another model's: re-export the model")
    elif graph is not None and graph < table.num_classes:
        lines.append(f"warning    the graph's argmax runs over {graph} classes, its class table names {table.num_classes}: "
                     f"classes {graph}..{table.num_classes - 1} never appear; the metadata is another model's: "
                     "re-export the model")
    # Padded by the columns a terminal shows (a CJK character or an emoji takes two), as eval's table.
    columns = max([20, *(display_width(name) for name in table.names)])
    for c in table.classes:
        iou = f"  IoU {_pct(per_class[c.name])}" if c.name in per_class else ""
        lines.append(f"  {c.id:>3}  {c.name}{' ' * (columns - display_width(c.name))} rgb{tuple(c.color)}{iou}")
    if table.task_groups:
        lines.append("tasks")
        columns = max([10, *(display_width(task) for task in table.task_groups)])
        for task, names in table.task_groups.items():
            lines.append(f"  {task}{' ' * (columns - display_width(task))} {', '.join(names)}")
    lines.append("inputs")
    lines += [f"  {t.name:<12} {t.dtype:<8} {list(t.shape)}" for t in d.inputs]
    lines.append("outputs")
    lines += [f"  {t.name:<12} {t.dtype:<8} {list(t.shape)}" for t in d.outputs]
    lines.append(f"operators  {sum(d.op_counts.values())} nodes")
    lines += [f"  {op:<24} {n}" for op, n in d.op_counts.items()]
    if m.tool_versions:
        lines.append("tools      " + ", ".join(f"{k} {v}" for k, v in sorted(m.tool_versions.items())))
    if m.created_utc:
        lines.append(f"created    {m.created_utc}")
    return lines
