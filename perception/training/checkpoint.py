"""Training checkpoints: one file that alone suffices to evaluate, export or resume a model.

A checkpoint carries the weights, the model name and builder arguments, the class table, the input
size, the normalisation, the resolved training config, the validation metrics, and (for resume)
the optimiser / scheduler / scaler / RNG state under ``train_state``.
"""

from __future__ import annotations

import math
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from perception.contracts import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, ClassTable
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
    torch.save(doc, tmp)
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
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(
            f"checkpoint {path} is not a perception checkpoint (format {CHECKPOINT_FORMAT}); "
            "pass a file written by 'perception train'"
        )
    try:
        ckpt = Checkpoint(
            model_name=doc["model_name"],
            model_kwargs=dict(doc["model_kwargs"]),
            class_table=ClassTable.from_dict(doc["class_table"]),
            input_hw=(int(doc["input_hw"][0]), int(doc["input_hw"][1])),
            state_dict=doc["state_dict"],
            dataset=doc.get("dataset", ""),
            mean=tuple(doc.get("mean", IMAGENET_MEAN_RGB)),
            std=tuple(doc.get("std", IMAGENET_STD_RGB)),
            config=doc.get("config", {}),
            metrics=doc.get("metrics", {}),
            step=int(doc.get("step", 0)),
            epoch=int(doc.get("epoch", 0)),
            train_state=doc.get("train_state"),
        )
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise ModelError(f"checkpoint {path} is incomplete ({exc}); it cannot be used") from None
    problem = _checkpoint_problem(ckpt)
    if problem:
        raise ModelError(f"checkpoint {path} is damaged: {problem}; it cannot be used")
    return ckpt


def _checkpoint_problem(ckpt: Checkpoint) -> str | None:
    """What is wrong with the numbers of a readable checkpoint, or None."""
    if ckpt.step < 0 or ckpt.epoch < 0:
        return f"step {ckpt.step} / epoch {ckpt.epoch} is negative"
    if min(ckpt.input_hw) <= 0:
        return f"input_hw {list(ckpt.input_hw)} is not a size"
    for name, values in (("mean", ckpt.mean), ("std", ckpt.std)):
        if len(values) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            return f"{name} {list(values)[:4]} is not three finite numbers (R, G, B)"
    if min(ckpt.std) <= 0:
        return f"std {list(ckpt.std)} is not positive"
    if not isinstance(ckpt.state_dict, dict):
        return "its weights (state_dict) are not a mapping of tensors"
    if ckpt.train_state is not None and not isinstance(ckpt.train_state, dict):
        return "its training state is not a mapping"
    for name, doc in (("config", ckpt.config), ("metrics", ckpt.metrics)):
        if nesting_depth(doc, MAX_NESTING) > MAX_NESTING:
            return f"its {name} is nested more than {MAX_NESTING} deep"
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
    """The checkpoint's model with its weights loaded, in eval mode, on ``device``."""
    from perception.models import build_model

    kwargs = {k: v for k, v in ckpt.model_kwargs.items() if k != "num_classes"}
    kwargs["pretrained"] = False  # the weights come from the checkpoint, never from a download
    model = build_model(ckpt.model_name, num_classes=ckpt.num_classes, **kwargs)
    try:
        missing, unexpected = model.load_state_dict(ckpt.state_dict, strict=False)
    except RuntimeError as exc:  # shapes: e.g. a class table edited after training (torch lists each tensor)
        raise ModelError(
            f"checkpoint weights do not fit model {ckpt.model_name!r} with its {ckpt.num_classes} classes: "
            f"{state_dict_mismatch(exc)}; was the checkpoint's class table or model_kwargs changed after training?"
        ) from None
    # Auxiliary heads may be dropped for deployment; anything else missing is a real mismatch.
    missing = [k for k in missing if ".aux" not in k and not k.startswith("aux")]
    if missing:
        raise ModelError(f"checkpoint weights do not fit model {ckpt.model_name!r}: missing {missing[:3]}")
    return model.eval().to(device)
