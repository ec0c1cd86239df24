"""Training checkpoints: one file that alone suffices to evaluate, export or resume a model.

A checkpoint carries the weights, the model name and builder arguments, the class table, the input
size, the normalisation, the resolved training config, the validation metrics of these weights
(none for a checkpoint saved between validations: Ctrl-C, a data error), and (for resume) the
optimiser / scheduler / scaler / RNG state under ``train_state``.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from perception.config import cut, short
from perception.contracts import (
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    MAX_MODEL_INPUT_SIDE,
    MIN_MODEL_INPUT_SIDE,
    ClassTable,
)
from perception.errors import ModelError
from perception.models.common import state_dict_mismatch
from perception.training.run_dir import check_checkpoint_path
from perception.wire_json import nesting_depth

#: Bump when the layout below changes incompatibly.
CHECKPOINT_FORMAT = 1


@dataclass
class Checkpoint:
    model_name: str
    model_kwargs: dict[str, Any]
    class_table: ClassTable
    input_hw: tuple[int, int]
    state_dict: dict[str, Any]
    dataset: str = ""
    mean: tuple[float, float, float] = IMAGENET_MEAN_RGB
    std: tuple[float, float, float] = IMAGENET_STD_RGB
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    epoch: int = 0
    train_state: dict[str, Any] | None = None
    #: The file it was read from (``load_checkpoint``; not saved), for messages.
    source: str = field(default="", compare=False)

    @property
    def num_classes(self) -> int:
        return self.class_table.num_classes


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` atomically (a reader never sees a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": CHECKPOINT_FORMAT,
        "model_name": ckpt.model_name,
        "model_kwargs": dict(ckpt.model_kwargs),
        "class_table": ckpt.class_table.to_dict(),
        "input_hw": list(ckpt.input_hw),
        "state_dict": ckpt.state_dict,
        "dataset": ckpt.dataset,
        "mean": list(ckpt.mean),
        "std": list(ckpt.std),
        "config": ckpt.config,
        "metrics": ckpt.metrics,
        "step": ckpt.step,
        "epoch": ckpt.epoch,
        "train_state": ckpt.train_state,
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(doc, tmp)
    except BaseException:  # a second Ctrl-C, a full disk: no half-written file is left behind
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint; ModelError naming the file when it is missing, corrupt or foreign."""
    path = check_checkpoint_path(path)
    try:
        # weights_only=True: torch's restricted unpickler builds tensors, containers and numbers and
        # refuses any other object, so a hostile .pt cannot run code while it is read. Checkpoints of
        # earlier releases hold numpy's RNG state as an array: the few numpy globals that rebuild one
        # are allowed by name (numpy 1.x pickles say numpy.core, 2.x numpy._core).
        with torch.serialization.safe_globals(_numpy_array_globals()):
            doc = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused_global(str(exc))
        if refused is None:
            raise ModelError(f"checkpoint {path} cannot be read ({_unpickler_reason(exc)}); it is damaged or not a "
                             ".pt file written by 'perception train'") from None
        raise ModelError(
            f"checkpoint {path} holds a Python object ({refused}) that no checkpoint of 'perception train' "
            "holds; it was not loaded, since unpickling it could run code: use a checkpoint you trained"
        ) from None
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise ModelError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}); it is truncated or not a .pt file "
            "written by 'perception train'"
        ) from None
    if not isinstance(doc, dict):
        raise ModelError(
            f"checkpoint {path} is not a perception checkpoint (format {CHECKPOINT_FORMAT}); "
            "pass a file written by 'perception train'"
        )
    written = doc.get("format")
    if _is_int(written) and written > CHECKPOINT_FORMAT:
        raise ModelError(
            f"checkpoint {path} was written by a newer perception (checkpoint format {short(written)}; this "
            f"version reads format {CHECKPOINT_FORMAT}): upgrade perception to use it"
        )
    if not _is_int(written) or written != CHECKPOINT_FORMAT:
        raise ModelError(
            f"checkpoint {path} is not a perception checkpoint (format {CHECKPOINT_FORMAT}); "
            "pass a file written by 'perception train'"
        )
    absent = next((key for key in _REQUIRED if key not in doc), None)
    if absent is not None:
        raise ModelError(f"checkpoint {path} is incomplete: it has no {absent!r}; {_UNUSABLE}")
    problem = _checkpoint_problem(doc)
    if problem:
        raise ModelError(f"checkpoint {path} is damaged: {problem}; {_UNUSABLE}")
    return Checkpoint(
        model_name=doc["model_name"],
        model_kwargs=dict(doc["model_kwargs"]),
        class_table=ClassTable.from_dict(doc["class_table"]),  # checked above
        input_hw=(doc["input_hw"][0], doc["input_hw"][1]),
        state_dict=doc["state_dict"],
        dataset=doc.get("dataset", ""),
        mean=tuple(doc.get("mean", IMAGENET_MEAN_RGB)),
        std=tuple(doc.get("std", IMAGENET_STD_RGB)),
        config=doc.get("config", {}),
        metrics=doc.get("metrics", {}),
        step=doc.get("step", 0),
        epoch=doc.get("epoch", 0),
        train_state=doc.get("train_state"),
        source=str(path),
    )


#: What a checkpoint must hold; the other fields have defaults (files of earlier releases lack some).
_REQUIRED = ("model_name", "model_kwargs", "class_table", "input_hw", "state_dict")
#: The fix for a checkpoint that cannot be used: nothing in it can be trusted to repair it.
_UNUSABLE = "it cannot be used: use an intact copy, or train the model again"
#: Figures of ``metrics`` that are shares (0..1) and whole counts, when present.
_SHARES = ("miou", "global_acc", "class_acc", "trained_miou")
_COUNTS = ("step", "pixels", "synthetic_world")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    return _is_number(value) and (not isinstance(value, float) or math.isfinite(value))


def _checkpoint_problem(doc: dict[str, Any]) -> str | None:
    """What is wrong with the fields of a readable checkpoint (``doc``, as ``save_checkpoint``
    writes it), or None: each field's type, and its range where a consumer allocates or computes
    from it. The message names the field.

    ``input_hw`` takes the sides ``train --size`` takes (``MIN_MODEL_INPUT_SIDE`` ..
    ``MAX_MODEL_INPUT_SIDE``); a crafted 10**6 x 10**6 made eval ask numpy for 2.7 TiB.
    """
    name = doc["model_name"]
    if not isinstance(name, str) or not name.strip():
        return f"model_name {short(name)} is not a model name (e.g. 'bisenetv2')"
    for key in ("model_kwargs", "config", "metrics"):
        value = doc.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            return f"{key} {short(value, 40)} is not a mapping of names to values"
        if nesting_depth(value, MAX_NESTING) > MAX_NESTING:
            return f"its {key} is nested more than {MAX_NESTING} deep"
    try:
        ClassTable.from_dict(doc["class_table"])
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        return f"class_table: {str(exc)[:200]}"
    hw = doc["input_hw"]
    if not isinstance(hw, (list, tuple)) or len(hw) != 2 or not all(_is_int(v) for v in hw):
        return f"input_hw {short(hw, 40)} is not two whole numbers [height, width]"
    if not all(MIN_MODEL_INPUT_SIDE <= v <= MAX_MODEL_INPUT_SIDE for v in hw):
        return (f"input_hw {list(hw)} is out of range: each side {MIN_MODEL_INPUT_SIDE}..{MAX_MODEL_INPUT_SIDE}, "
                "as train --size takes")
    for key in ("step", "epoch"):
        value = doc.get(key, 0)
        if not _is_int(value) or value < 0:
            return f"{key} {short(value, 40)} is not a count (a whole number >= 0)"
    dataset = doc.get("dataset", "")
    if not isinstance(dataset, str):
        return f"dataset {short(dataset, 40)} is not a dataset spec (e.g. 'camvid:PATH')"
    for key, default in (("mean", IMAGENET_MEAN_RGB), ("std", IMAGENET_STD_RGB)):
        values = doc.get(key, default)
        if (not isinstance(values, (list, tuple)) or len(values) != 3
                or not all(_is_finite(v) for v in values)):
            return f"{key} {short(values, 60)} is not three finite numbers (R, G, B)"
        if key == "std" and min(values) <= 0:
            return f"std {list(values)} is not positive"
    metrics = metrics_problem(doc.get("metrics", {}))
    if metrics:
        return metrics
    state = doc["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        return "its weights (state_dict) are not a mapping of names to tensors"
    # A NaN weight evaluated "fine" (a table of low figures, exit 0) and failed export's verify with
    # "tolerance nan". Training never saves one (it stops at the first non-finite loss).
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        return f"its weight {short(bad, 80)} holds NaN or infinite values"
    train_state = doc.get("train_state")
    if train_state is not None and not isinstance(train_state, dict):
        return "its training state (train_state) is not a mapping"
    return None


def metrics_problem(metrics: dict[str, Any]) -> str | None:
    """What is wrong with a checkpoint's validation figures (a mapping, checked by the caller), or
    None. Every figure is a number, none infinite; the shares (mIoU, accuracies) are finite and in
    0..1, the counts whole. The others may be NaN: a per-class IoU (``per_class_iou``) is NaN for a
    class that neither the labels nor the predictions hold, as in any run whose val set lacks one."""
    for key in _SHARES:
        if key in metrics and not (_is_finite(metrics[key]) and 0 <= metrics[key] <= 1):
            return f"metrics {key} {short(metrics[key], 40)} is not a share in 0..1"
    for key in _COUNTS:
        if key in metrics and not (_is_int(metrics[key]) and metrics[key] >= 0):
            return f"metrics {key} {short(metrics[key], 40)} is not a count (a whole number >= 0)"
    stack = [(f"metrics {k}", v) for k, v in metrics.items()]
    while stack:  # nesting is bounded by MAX_NESTING, checked before
        where, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{where}.{k}", v) for k, v in value.items())
        elif not (_is_finite(value) or isinstance(value, float) and math.isnan(value)):
            return f"{cut(where, 60)} {short(value, 40)} is not a number"
    return None


#: A checkpoint's config and metrics are a few levels deep; a crafted one 100,000 deep made the
#: export's metadata writer recurse until Python gave up.
MAX_NESTING = 32


def _numpy_array_globals() -> list[Any]:
    """What rebuilds a numpy array in a pickle (for the RNG state of older checkpoints), under the
    names numpy 2.x and 1.x write."""
    import numpy as np
    from numpy._core.multiarray import _reconstruct

    allowed: list[Any] = [np.ndarray, np.dtype, _reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct")]
    allowed += [type(np.dtype(t)) for t in (np.uint32, np.int64, np.float64)]
    return allowed


_REFUSED = re.compile(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)")


def _refused_global(message: str) -> str | None:
    """The global torch's safe unpickler refused (e.g. ``posix.system``), or None for another error."""
    found = _REFUSED.search(message)
    return found.group(1) if found else None


def _unpickler_reason(exc: BaseException) -> str:
    """torch's own reason in a refused load (its message opens with advice to load unsafely, which
    is not this tool's advice): the ``WeightsUnpickler error:`` line, else the first line."""
    text = str(exc)
    _, found, after = text.partition("WeightsUnpickler error:")
    reason = after.split("Check the documentation")[0] if found else (text.strip().splitlines() or [""])[0]
    return " ".join(reason.split())[:200] or type(exc).__name__


def build_model_from_checkpoint(ckpt: Checkpoint, *, device: str | torch.device = "cpu"):
    """The checkpoint's model with its weights loaded, in eval mode, on ``device``.

    Raises:
        ModelError: naming the checkpoint file, when its model name or model_kwargs do not build a
            model, its input size is not one the model takes, or its weights do not fit the model.
    """
    from perception.errors import ConfigError
    from perception.models import build_model

    where = f"checkpoint {ckpt.source}" if ckpt.source else "checkpoint"
    kwargs = {k: v for k, v in ckpt.model_kwargs.items() if k != "num_classes"}
    kwargs["pretrained"] = False  # the weights come from the checkpoint, never from a download
    try:
        model = build_model(ckpt.model_name, num_classes=ckpt.num_classes, **kwargs)
    except ConfigError as exc:  # an unknown name or a builder's refusal of a model_kwargs value
        raise ModelError(f"{where} does not build its model ({exc}); {_UNUSABLE}") from None
    check = getattr(model, "check_input_size", None)
    if callable(check):  # training refuses any other size (trainer.build_model_for)
        try:
            check(*ckpt.input_hw)
        except ConfigError as exc:
            raise ModelError(f"{where} is damaged: input_hw: {exc}; {_UNUSABLE}") from None
    try:
        missing, unexpected = model.load_state_dict(ckpt.state_dict, strict=False)
    except RuntimeError as exc:  # shapes: e.g. a class table edited after training (torch lists each tensor)
        raise ModelError(
            f"{where} weights do not fit model {ckpt.model_name!r} with its {ckpt.num_classes} classes: "
            f"{state_dict_mismatch(exc)}; was the checkpoint's class table or model_kwargs changed after training?"
        ) from None
    # Auxiliary heads may be dropped for deployment; anything else missing is a real mismatch.
    missing = [k for k in missing if ".aux" not in k and not k.startswith("aux")]
    if missing:
        raise ModelError(
            f"{where} weights do not fit model {ckpt.model_name!r}: missing {missing[:3]} ({len(missing)} in all); "
            "were its model_name or model_kwargs changed after training?"
        )
    return model.eval().to(device)
