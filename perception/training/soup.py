"""Model soups: the uniform average of the weights of runs that started from the same weights.

Wortsman et al. 2022 ("Model soups: averaging weights of multiple fine-tuned models improves
accuracy without increasing inference time") average models fine-tuned from one pretrained start
with different data orders or hyper-parameters; such runs stay in one basin of the loss (Neyshabur
et al. 2020), so their average is a model of the same size and speed that is often better, most of
all under distribution shift, than each of them. Runs from different starts do not average: their
units are permuted against each other and the mean is noise. Here a start is the pretrained
encoder plus the decoder's random initialisation, so the ingredients must share ``init_seed``
(``perception train --set init_seed=N --set seed=K``; without ``init_seed`` a run's start is its
``seed``).

torch's ``AveragedModel`` averages the states of one model over time; averaging the saved
checkpoints of separate runs, with the checks below, is a few lines of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from perception.errors import ModelError
from perception.training.checkpoint import Checkpoint, load_checkpoint

log = logging.getLogger(__name__)


def start_seed(ckpt: Checkpoint) -> int | None:
    """The seed of a run's initial weights (its ``init_seed``, else its ``seed``); None if not recorded."""
    config = ckpt.config or {}
    seed = config.get("init_seed")
    if seed is None:
        seed = config.get("seed")
    return None if seed is None else int(seed)


def make_soup(paths: Sequence[str | Path]) -> Checkpoint:
    """The uniform average of the checkpoints' weights, as a checkpoint of the first one's kind.

    Floating-point tensors (weights and BatchNorm statistics) are averaged; integer buffers
    (BatchNorm's batch counters) are taken from the first checkpoint. The result has no
    ``train_state`` (a soup is not resumed) and the first checkpoint's config, with the ingredients
    listed under ``config["soup"]``; its ``metrics`` are empty until it is validated.
    ModelError names the checkpoint and what differs when they cannot be averaged.
    """
    if len(paths) < 2:
        raise ModelError(f"a soup needs at least two checkpoints, got {len(paths)}; pass the best.pt of each run")
    ckpts = [load_checkpoint(p) for p in paths]
    first, first_path = ckpts[0], Path(paths[0])
    for path, ckpt in zip(paths[1:], ckpts[1:], strict=True):
        _check_same_model(first_path, first, Path(path), ckpt)
    states = [c.state_dict for c in ckpts]
    averaged: dict[str, Any] = {}
    for key, value in states[0].items():
        if torch.is_tensor(value) and value.is_floating_point():
            total = torch.zeros_like(value, dtype=torch.float64)
            for state in states:
                total += state[key].to(torch.float64)
            averaged[key] = (total / len(states)).to(value.dtype)
        else:
            averaged[key] = value
    config = dict(first.config)
    config["soup"] = [
        {"checkpoint": str(p), "seed": (c.config or {}).get("seed"), "step": c.step, "val_miou": c.metrics.get("miou")}
        for p, c in zip(paths, ckpts, strict=True)
    ]
    return Checkpoint(
        model_name=first.model_name,
        model_kwargs=dict(first.model_kwargs),
        class_table=first.class_table,
        input_hw=first.input_hw,
        state_dict=averaged,
        dataset=first.dataset,
        mean=first.mean,
        std=first.std,
        config=config,
        metrics={},
        step=max(c.step for c in ckpts),
        epoch=max(c.epoch for c in ckpts),
        train_state=None,
    )


def _check_same_model(path_a: Path, a: Checkpoint, path_b: Path, b: Checkpoint) -> None:
    def differ(what: str, va: Any, vb: Any) -> ModelError:
        return ModelError(f"checkpoints {path_a} and {path_b} cannot be averaged: {what} differ ({va} vs {vb})")

    if a.model_name != b.model_name or a.model_kwargs != b.model_kwargs:
        raise differ("the models", f"{a.model_name} {a.model_kwargs}", f"{b.model_name} {b.model_kwargs}")
    if a.class_table.names != b.class_table.names:
        raise differ("the classes", a.class_table.names, b.class_table.names)
    if tuple(a.input_hw) != tuple(b.input_hw) or tuple(a.mean) != tuple(b.mean) or tuple(a.std) != tuple(b.std):
        raise differ("the input size or normalisation", (a.input_hw, a.mean, a.std), (b.input_hw, b.mean, b.std))
    shapes_a = {k: tuple(v.shape) for k, v in a.state_dict.items() if torch.is_tensor(v)}
    shapes_b = {k: tuple(v.shape) for k, v in b.state_dict.items() if torch.is_tensor(v)}
    if shapes_a != shapes_b:
        odd = sorted(set(shapes_a.items()) ^ set(shapes_b.items()))[:3]
        raise differ("the weights", "their tensors", f"{odd} ...")
    seed_a, seed_b = start_seed(a), start_seed(b)
    if seed_a is None or seed_b is None or seed_a != seed_b:
        raise ModelError(
            f"checkpoints {path_a} and {path_b} did not start from the same weights (initial-weight seeds "
            f"{seed_a} and {seed_b}), and the average of runs from different starts is not a working model; "
            "train the runs with one init_seed and different seeds: perception train --set init_seed=0 --set seed=K"
        )
