"""The field checks of a model file's metadata, for ``model_metadata.ModelMetadata.from_json``: every
value the metadata holds is checked before anything uses it (a name that reaches every message
header, a std the graph divides by, a figure ``inspect`` prints), and a bad one raises ValueError
naming the field, which ``from_json`` turns into its one-line ``ModelError`` (``re-export the
model``). Kept apart from ``contracts.py``, which declares the schema itself.

    model_name = text(doc["model_name"], "model_name", empty=False)
    std = rgb(doc.get("std", IMAGENET_STD_RGB), "std")       # three numbers within STD_RANGE
    val = val_metrics(doc.get("val_metrics"))                 # shares in 0..1 or null, whole counts
"""

from __future__ import annotations

import math
from typing import Any

#: Most characters of a metadata name (``model_name``, ``dataset``, ``created_utc``), so that a
#: message never prints a megabyte; the model id every header carries, built from the first two, is
#: held to ``MAX_HEADER_STRING`` (256) in all by ``from_json``'s own line.
MAX_METADATA_NAME = 1024
#: Most characters of ``unknown_rule``, the sentence ``export.unknown`` writes (about 300).
MAX_METADATA_NOTE = 4096


def text(value: Any, key: str, *, empty: bool = True, limit: int = MAX_METADATA_NAME) -> str:
    """A metadata string of at most ``limit`` characters (``empty``: "" allowed; otherwise one of
    blanks only is refused too, as the start of every model id), else ValueError naming ``key`` (its
    value cut to 40 characters: a 1 MB value is not printed)."""
    if not isinstance(value, str) or (not value.strip() and not empty) or len(value) > limit:
        what = "a non-empty string" if not empty else "a string"
        raise ValueError(f"{key} {value!r:.40} is not {what} of at most {limit} characters")
    return value


#: The range of a metadata ``std`` value: the graph divides 0..1 pixels by it in float32. ImageNet's
#: is 0.22; below 1e-4 a pixel step (1/255) is over 39 units and 1e-300's inverse is infinite in
#: float32 (every pixel inf or NaN); above 1e4 every image is all but zero.
STD_RANGE = (1e-4, 1e4)


def rgb(value: Any, key: str) -> tuple[float, ...]:
    """A metadata ``mean`` or ``std``: three numbers, else ValueError naming ``key`` (finite, and
    ``std`` within ``STD_RANGE``: ``modelfile.read_model_metadata``'s own line)."""
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(_number(v) for v in value):
        raise ValueError(f"{key} {value!r:.60} is not three numbers (the RGB normalisation)")
    return tuple(float(v) for v in value)


def class_names(value: Any, key: str) -> tuple[str, ...]:
    """A metadata list of distinct class names (null or absent: none), else ValueError."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value) or len(set(value)) != len(value):
        raise ValueError(f"{key} {value!r:.80} is not a list of distinct class names")
    return tuple(value)


def input_hw(value: Any) -> tuple[int, int]:
    """A metadata input size: two whole numbers (not booleans, not floats), else ValueError."""
    if not isinstance(value, list) or len(value) != 2 or not all(type(v) is int for v in value):
        raise ValueError(f"input_hw {value!r:.80} is not [height, width] in whole pixels")
    return value[0], value[1]


#: Precisions a model file's metadata may name: what ``perception export`` and the quantisers write
#: (fp32, int8) and a TensorRT engine's (fp16). The file's graph decides when it is quantised and its
#: metadata says a float precision (``modelfile_graph.effective_precision``).
METADATA_PRECISIONS = ("fp32", "fp16", "int8")
#: Validation figures (``val_metrics``, its ``int8_gate``, ``real_road_check``'s tasks) that are
#: shares in 0..1 (null: not measured), and those that are counts.
_METRIC_SHARES = ("miou", "global_acc", "class_acc", "trained_miou")
_METRIC_COUNTS = ("step", "pixels", "synthetic_world")  # (the world version: perception/synthetic/version.py)
_GATE_SHARES = ("fp32_miou", "int8_miou", "agreement_with_fp32", "openvino_agreement_with_fp32", "openvino_int8_miou")
_TASK_SHARES = ("iou", "precision", "recall")


def precision(value: Any) -> str:
    if not isinstance(value, str) or value not in METADATA_PRECISIONS:
        raise ValueError(f"precision {value!r:.40} is not one of {', '.join(METADATA_PRECISIONS)}")
    return value


def flag(value: Any, key: str) -> bool:
    """A metadata flag: JSON true or false (the string "false" would read as true)."""
    if not isinstance(value, bool):
        raise ValueError(f"{key} {value!r:.40} is not true or false")
    return value


def mapping(value: Any, key: str) -> dict[str, Any]:
    """A metadata object (null or absent: empty), else ValueError."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{key} {value!r:.60} is not a JSON object")
    return dict(value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _share(value: Any, key: str, *, nan: bool = False) -> None:
    """ValueError unless ``value`` is a share in 0..1 or null (``nan``: NaN too, a per-class IoU of
    a class neither the labels nor the predictions hold)."""
    if value is None or (nan and isinstance(value, float) and math.isnan(value)):
        return
    if not _number(value) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{key} {value!r:.40} is not a share in 0..1")


def _count(value: Any, key: str) -> None:
    if type(value) is not int or value < 0:
        raise ValueError(f"{key} {value!r:.40} is not a count (a whole number >= 0)")


def val_metrics(value: Any) -> dict[str, Any]:
    """The training run's validation figures (and the INT8 gate's), checked as ``inspect`` and
    ``--engine auto`` read them: shares in 0..1, counts whole, the gate's verdict true or false."""
    metrics = mapping(value, "val_metrics")
    for key in _METRIC_SHARES:
        if key in metrics:
            _share(metrics[key], f"val_metrics.{key}")
    for key in _METRIC_COUNTS:
        if key in metrics:
            _count(metrics[key], f"val_metrics.{key}")
    for name, iou in mapping(metrics.get("per_class_iou"), "val_metrics.per_class_iou").items():
        _share(iou, f"val_metrics.per_class_iou.{name}")  # NaN: the exporter writes null (strict_json)
    if "input_hw" in metrics:
        hw = metrics["input_hw"]
        if not isinstance(hw, list) or len(hw) != 2 or not all(type(v) is int and v > 0 for v in hw):
            raise ValueError(f"val_metrics.input_hw {hw!r:.40} is not [height, width] in whole pixels")
    gate = mapping(metrics.get("int8_gate"), "val_metrics.int8_gate")
    for key in _GATE_SHARES:
        if key in gate:
            _share(gate[key], f"val_metrics.int8_gate.{key}")
    if "images" in gate:
        _count(gate["images"], "val_metrics.int8_gate.images")
    for key in ("passed", "saturation_safe"):
        if key in gate:
            flag(gate[key], f"val_metrics.int8_gate.{key}")
    for key in ("drop_points", "budget_points"):
        if key in gate and not (_number(gate[key]) and math.isfinite(gate[key])):
            raise ValueError(f"val_metrics.int8_gate.{key} {gate[key]!r:.40} is not a finite number")
    return metrics


def real_road_check(value: Any, undefined: list[str] | None = None) -> dict[str, Any]:
    """``perception eval --tasks --record``'s figures: per task shares in 0..1 or null (undefined),
    a frame count. A task figure stored as NaN (what ``--record`` wrote for an undefined figure
    before it wrote null) is read as null, and its key added to ``undefined`` for a warning: the
    file stays usable, and recording again stores null."""
    check = mapping(value, "real_road_check")
    for group in ("tasks", "tasks_unknown_off"):
        tasks = mapping(check.get(group), f"real_road_check.{group}")
        for task, figures in tasks.items():
            figures = mapping(figures, f"real_road_check.{group}.{task}")
            for key in _TASK_SHARES:
                if key in figures:
                    where = f"real_road_check.{group}.{task}.{key}"
                    if isinstance(figures[key], float) and math.isnan(figures[key]):
                        figures[key] = None
                        if undefined is not None:
                            undefined.append(where)
                    _share(figures[key], where)
            tasks[task] = figures
        if check.get(group) is not None:
            check[group] = tasks
    if "frames" in check:
        _count(check["frames"], "real_road_check.frames")
    if "input_hw" in check:
        hw = check["input_hw"]
        if not isinstance(hw, list) or len(hw) != 2 or not all(type(v) is int and v > 0 for v in hw):
            raise ValueError(f"real_road_check.input_hw {hw!r:.40} is not [height, width] in whole pixels")
    unknown = mapping(check.get("unknown"), "real_road_check.unknown")
    if "threshold" in unknown:
        _share(unknown["threshold"], "real_road_check.unknown.threshold")
    return check


def check_logit_adjust(adjust: dict[str, Any], classes: int) -> None:
    """``perception export --logit-adjust``'s record (empty: none): ``tau`` in 0..1, the class
    ``weighting`` it undoes, one finite ``bias`` per class and the ``rule`` that chose it."""
    if not adjust:
        return
    if adjust.get("tau") is None:
        raise ValueError("logit_adjust.tau is missing")
    _share(adjust["tau"], "logit_adjust.tau")
    weighting = adjust.get("weighting")
    if not isinstance(weighting, str) or not weighting:
        raise ValueError(f"logit_adjust.weighting {weighting!r:.40} is not the name of a class weighting")
    if not isinstance(adjust.get("rule", ""), str):
        raise ValueError(f"logit_adjust.rule {adjust['rule']!r:.40} is not text")
    bias = adjust.get("bias")
    if (not isinstance(bias, list) or len(bias) != classes
            or not all(_number(b) and math.isfinite(b) for b in bias)):
        raise ValueError(f"logit_adjust.bias {bias!r:.60} is not {classes} finite numbers (one per class)")


def probability(value: Any) -> float:
    """A metadata probability (0..1), else ValueError (from_json turns it into a ModelError)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"unknown_threshold {value!r} is not a probability in 0..1")
    return float(value)
