"""A run's state in its checkpoint: ``save_run_checkpoint`` writes it (weights, config, class
table, metrics, and the optimiser, scheduler, scaler and RNG state), ``resume_run`` takes a run
back to it, after the checks of what a resume may change: another model or class table is refused
(``check_resume_model``, ``check_resume_class_table``), other settings of what is trained are named
in one warning (``resume_changes``). The loop that uses them is ``fit.py``.
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perception.config import config_to_dict, cut, hw_to_text, short
from perception.contracts import ClassTable
from perception.errors import ConfigError, ModelError, PerceptionError
from perception.models.common import state_dict_mismatch
from perception.progress import count_of
from perception.synthetic.version import (
    SYNTHETIC_WORLD_VERSION,
    WORLD_KEY,
    is_synthetic,
    recorded_world,
    world_change,
)
from perception.training.checkpoint import Checkpoint, load_checkpoint, metrics_problem, save_checkpoint
from perception.training.config import TrainConfig
from perception.training.trainer import Data, Run, poly_lr_factor

log = logging.getLogger(__name__)


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def save_run_checkpoint(run: Run, data: Data, path: Path) -> Path:
    """Weights, config, class table and metrics, plus the optimiser / scheduler / scaler / RNG state.

    With a weight average the checkpoint's weights are the average (what eval and export read), and
    the trained weights and the number of averaged updates go under ``train_state`` for resume.

    ``metrics`` are the validation figures of the weights saved: empty for a checkpoint written
    between validations (Ctrl-C, a data error, before the first), whose weights no validation
    scored; the latest validation, whatever its step, goes under ``train_state`` for resume, with
    ``val_pending`` when the validation due at this step did not finish (a resume runs it first)."""
    config = run.config
    state_dict = _cpu_state(run.kept_model)
    rng = {"python": random.getstate(), "numpy": _numpy_rng_state(), "torch": torch.get_rng_state()}
    if run.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(run.device)
    steps_per_epoch = data.steps_per_epoch
    ckpt = Checkpoint(
        model_name=config.model,
        model_kwargs=dict(config.model_kwargs),
        class_table=data.class_table,
        input_hw=tuple(config.input_hw),
        state_dict=state_dict,
        dataset=config.data,
        config=config_to_dict(config),
        # (figures without a step were set by the caller for these weights: the step-by-step API)
        metrics=dict(run.last_metrics) if run.last_metrics.get("step", run.step) == run.step else {},
        step=run.step,
        epoch=run.step // steps_per_epoch,
        train_state={
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(),
            "rng": rng,
            "best_miou": run.best_miou,
            "total_steps": run.total_steps,
            # The samples an epoch the schedule was set with: a resume on data of another size keeps it.
            "train_samples": run.train_samples if run.train_samples is not None else len(data.samples),
            "last_validation": dict(run.last_metrics),
            "val_pending": run.val_pending,
            # The synthetic world it trained and validated in (``resume_world_change``).
            WORLD_KEY: SYNTHETIC_WORLD_VERSION,
        },
    )
    if run.ema is not None:
        ckpt.train_state["trained_weights"] = _cpu_state(run.bare_model)
        ckpt.train_state["ema_updates"] = int(run.ema.n_averaged)
    return save_checkpoint(path, ckpt)


#: The number of 32-bit keys in numpy's MT19937 state (checked before a crafted state is copied).
MT19937_KEYS = 624


def _numpy_rng_state() -> dict[str, Any]:
    """numpy's global RNG state as tensors and numbers, which torch's safe loader reads (an array
    would need numpy globals allowed in the unpickler)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def _set_numpy_rng_state(state: Any) -> None:
    """Restore what ``_numpy_rng_state`` saved, or the tuple of earlier checkpoints."""
    if isinstance(state, dict):
        keys = state["keys"]
        if not isinstance(keys, torch.Tensor) or keys.shape != (MT19937_KEYS,):
            raise ValueError(f"numpy RNG keys are not {MT19937_KEYS} numbers")
        state = (state["kind"], keys.numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["gauss"])
    elif not isinstance(state, tuple) or len(state) != 5 or np.shape(state[1]) != (MT19937_KEYS,):
        raise ValueError(f"numpy RNG state is not MT19937's ({MT19937_KEYS} keys)")
    np.random.set_state(state)


#: Settings that live in the optimiser's and scheduler's saved state (the peak learning rate in the
#: scheduler's base_lrs, weight decay and momentum in the parameter groups): a resume restores them.
OPTIMIZER_STATE_KEYS = ("lr", "weight_decay", "momentum")


def check_resume_model(ckpt: Checkpoint, config: TrainConfig, path: str | Path) -> None:
    """ModelError when the checkpoint holds no training state or another architecture than
    ``config`` trains: checked before the model is built, so that a swapped ``--model`` is named as
    such (not as the new model's refusal of the run's input size)."""
    if ckpt.train_state is None:
        raise ModelError(f"checkpoint {path} holds no training state; resume from a last.pt of 'perception train'")
    world = ckpt.train_state.get(WORLD_KEY) if isinstance(ckpt.train_state, dict) else None
    if world is not None and not (type(world) is int and world >= 0):
        raise ModelError(f"checkpoint {path} is damaged: train_state {WORLD_KEY} {short(world, 40)} is not a count "
                         "(a whole number >= 0, the synthetic world version); resume from an intact copy")
    if ckpt.model_name != config.model:
        raise ModelError(
            f"checkpoint {path} is a {ckpt.model_name!r} model, this run trains {config.model!r}: a run resumes the "
            f"model it trained; resume with --model {ckpt.model_name} (or without --model), or train {config.model!r} "
            "as a new run (without --resume)"
        )


def _class_list(table: ClassTable) -> str:
    return cut(", ".join(table.names), 120)


def check_resume_class_table(ckpt: Checkpoint, table: ClassTable, path: str | Path, *,
                             data_spec: str = "") -> str | None:
    """Compare the checkpoint's class table with the data's (``table``): the weights of each class id
    were trained under the checkpoint's class names, so another count, name or order of classes is
    refused (ConfigError naming the first difference and the fix): resumed, the run's checkpoints
    would carry the data's names on those weights, and an export would label the classes wrongly.
    Other differences (a colour, the ignore id, the task groups) are returned as the text of one
    warning line, or None: the resumed checkpoints carry the data's table."""
    old = ckpt.class_table
    data = f"the data ({cut(data_spec, 200)})" if data_spec else "the data"
    fix = ("resume with the data (classes.yaml) it was trained on, or start a new run on this data (without "
           "--resume)")
    if data_spec.partition(":")[0].strip() == "synthetic":
        # The synthetic world is this release's: the one the checkpoint was trained on cannot be made again.
        added = [n for n in table.names if n not in old.names]
        removed = [n for n in old.names if n not in table.names]
        what = "; ".join(part for part in (f"added {cut(', '.join(added), 120)}" if added else "",
                                           f"removed {cut(', '.join(removed), 120)}" if removed else "") if part)
        fix = (f"the synthetic world of this release has other classes than the one it was trained in"
               f"{f' ({what})' if what else ''}, which cannot be made again: use the checkpoint as it is "
               f"('perception export --checkpoint {path}'), or start a new run on this data (without --resume)")
    if old.num_classes != table.num_classes:
        raise ConfigError(
            f"checkpoint {path} was trained on {old.num_classes} classes ({_class_list(old)}), {data} has "
            f"{table.num_classes} ({_class_list(table)}); {fix}"
        )
    for class_id, (was, now) in enumerate(zip(old.names, table.names, strict=True)):
        if was != now:
            how = "the same classes in another order" if sorted(old.names) == sorted(table.names) else "renamed"
            raise ConfigError(
                f"checkpoint {path} was trained with class {class_id} {cut(was, 64)!r}, {data} names class {class_id} "
                f"{cut(now, 64)!r} ({how}): its weights would carry the new names; {fix}"
            )
    changes = []
    for was, now in zip(old.classes, table.classes, strict=True):
        if tuple(was.color) != tuple(now.color):
            changes.append(f"colour of {cut(was.name, 64)!r} {list(was.color)} -> {list(now.color)}")
    if old.ignore_id != table.ignore_id:
        changes.append(f"ignore_id {old.ignore_id} -> {table.ignore_id}")
    if old.task_groups != table.task_groups:
        groups = sorted(set(old.task_groups) | set(table.task_groups))
        task = next(t for t in groups if old.task_groups.get(t) != table.task_groups.get(t))
        changes.append(f"task group {cut(task, 64)!r} {list(old.task_groups.get(task, ()))} -> "
                       f"{list(table.task_groups.get(task, ()))}")
    if not changes:
        return None
    return (f"the class table of {data} differs from checkpoint {path}'s: {'; '.join(changes[:3])}"
            f"{f' (and {len(changes) - 3} more)' if len(changes) > 3 else ''}; the resumed run's checkpoints "
            "carry the data's table"
            + (" (colour-coded labels map colours to classes by it)" if any(c.startswith("colour") for c in changes)
               else ""))


#: Config keys whose change on a resume does not change what is trained from the checkpoint on (where
#: and how fast it runs, what is logged and validated, how long: raising --steps is how a run goes
#: on), or that are refused (model, optimiser), or that only built the initial weights.
_RESUME_FREE_KEYS = frozenset({
    "out", "overwrite", "device", "workers", "torch_threads", "log_every", "progress", "val_every",
    "val_batch_size", "val_data", "val_split", "steps", "epochs", "data", "mix_data", "model", "optimizer",
    *OPTIMIZER_STATE_KEYS, "pretrained", "init_seed", "channels_last",
})


_WORLD_SPECS = ("data", "val_data", "mix_data")


def resume_world_change(ckpt: Checkpoint, config: TrainConfig, path: str | Path) -> str | None:
    """The text of one warning line when a run on the synthetic world resumes a checkpoint of
    another world version (``perception/synthetic/version.py``; an earlier release recorded none),
    or None. The same spec and seed render other scenes now: the checkpoint's validation figures
    (and the best.pt chosen by them) are not comparable with the resumed run's, and it trains on
    the new scenes. Taken, not refused: the weights are still a good start."""
    now = config_to_dict(config)
    stored = ckpt.config if isinstance(ckpt.config, dict) else {}
    if not any(is_synthetic(now.get(key)) for key in _WORLD_SPECS):
        return None
    if not (any(is_synthetic(stored.get(key)) for key in _WORLD_SPECS) or is_synthetic(ckpt.dataset)):
        return None
    state = ckpt.train_state if isinstance(ckpt.train_state, dict) else {}
    recorded = state.get(WORLD_KEY) if WORLD_KEY in state else recorded_world(ckpt.metrics)
    return world_change(recorded if type(recorded) is int else None,
                        whose=f"checkpoint {path}'s training and validation figures",
                        consequence="its figures (and the best.pt they chose) are not comparable with the resumed "
                                    "run's, and the resumed run trains on the new scenes")


def resume_changes(ckpt: Checkpoint, config: TrainConfig) -> str | None:
    """The text of one warning line naming the settings that ``config`` changes from the run's
    (``--batch-size 2 -> 4``), or None. They are taken (a smaller --batch-size after running out of
    memory is the usual fix), but the run no longer continues as the uninterrupted one would."""
    from perception.flags import flags

    options = {flag.name: flag.option for flag in flags(TrainConfig) if flag.option}
    now = config_to_dict(config)
    stored = _stored_settings(ckpt.config, now)
    changed = []
    for key, value in now.items():
        if key in _RESUME_FREE_KEYS or key not in stored:
            continue
        was = stored[key]
        if _same_setting(was, value):
            continue
        if key in ("input_hw", "crop_hw"):
            was, value = (hw_to_text(v) if isinstance(v, (list, tuple)) and len(v) == 2 else v for v in (was, value))
        changed.append(f"{options.get(key, key)} {_setting_text(was)} -> {_setting_text(value)}")
    if not changed:
        return None
    order = [key for key in ("batch_size", "seed") if key in stored and not _same_setting(stored[key], now[key])]
    cost = f"its steps from {ckpt.step + 1} on differ from the uninterrupted run's{' (another data order)' if order else ''}"
    return (f"resumed with settings other than the run's: {', '.join(changed)}; it trains on with them, but is no "
            f"longer an exact continuation: {cost}; resume without them to continue it exactly")


def _setting_text(value: Any) -> str:
    return cut(value, 40) if isinstance(value, str) and value.strip() else short(value, 40)


def _stored_settings(stored: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's config keys in the form ``config_to_dict`` gives them (a run of an earlier
    release may have stored ``input_hw`` as "352x480"); as stored where they do not load."""
    from perception.config import load_config

    known = {key: value for key, value in stored.items() if key in now}
    try:
        loaded = config_to_dict(load_config(TrainConfig, known, source="the checkpoint's config"))
    except (PerceptionError, ValueError, TypeError):
        return known
    return {key: loaded[key] for key in known}


def _same_setting(was: Any, now: Any) -> bool:
    if isinstance(was, (int, float)) and isinstance(now, (int, float)) and not isinstance(was, bool) \
            and not isinstance(now, bool):
        return math.isclose(was, now, rel_tol=1e-9, abs_tol=0.0)
    if isinstance(was, (list, tuple)) and isinstance(now, (list, tuple)):
        return len(was) == len(now) and all(_same_setting(a, b) for a, b in zip(was, now, strict=True))
    if isinstance(was, dict) and isinstance(now, dict):
        return was.keys() == now.keys() and all(_same_setting(was[k], now[k]) for k in was)
    return was == now


def _more_steps_fix(run: Run, step: int) -> str:
    """How to give a run at ``step`` more steps: --steps when steps set it (then --epochs counts
    for nothing), else --epochs."""
    config = run.config
    if config.steps:
        return (f"raise --steps to train on, e.g. --steps {2 * step} (this run is set by steps, so --epochs counts "
                "only with --steps 0)")
    per_epoch = max(run.total_steps // config.epochs, 1)
    epochs = max(2 * config.epochs, step // per_epoch + 1)
    return (f"raise --epochs to train on (now {config.epochs}, {per_epoch} steps an epoch), e.g. --epochs {epochs}, "
            f"or set the steps with --steps {2 * step}")


def _stored_samples(ckpt: Checkpoint, run: Run) -> int | None:
    """The training samples an epoch the checkpoint's run was set with, when it stored them (runs
    of earlier releases did not) and they differ from ``run``'s; else None."""
    stored = (ckpt.train_state or {}).get("train_samples")
    if isinstance(stored, bool) or not isinstance(stored, int) or stored <= 0 or run.train_samples is None:
        return None
    return stored if stored != run.train_samples else None


def _kept_total_steps(run: Run, stored: int) -> int:
    """The run's total steps counted as it was set: ``--steps``, else ``--epochs`` epochs of the
    ``stored`` samples it started on (at this run's batch size and process count)."""
    config = run.config
    return config.steps or config.epochs * max(1, stored // (run.info.world_size * config.batch_size))


def _keep_schedule(run: Run, ckpt: Checkpoint) -> None:
    """On training data of another size than the checkpoint's run (a bad pair removed, frames
    added): the total steps and the poly learning-rate schedule stay those of the run (``--epochs``
    counted in its epochs), instead of jumping to what the new size would make of them."""
    stored = _stored_samples(ckpt, run)
    if stored is None:
        return
    total = _kept_total_steps(run, stored)
    if total == run.total_steps:
        return
    config = run.config
    run.total_steps = total
    run.scheduler.lr_lambdas = [
        lambda s: poly_lr_factor(s, total_steps=total, warmup_steps=config.warmup_steps, power=config.poly_power)
        for _ in run.scheduler.lr_lambdas
    ]


def data_size_change(ckpt: Checkpoint, run: Run, path: str | Path, per_epoch: int) -> str | None:
    """The text of one warning line when the training data holds another number of samples than
    when the checkpoint's run started (``per_epoch``: this run's steps an epoch), or None: the
    schedule is kept (``_keep_schedule``), but the epochs are of the new size, so the data order and
    the epoch ends are not the uninterrupted run's."""
    stored = _stored_samples(ckpt, run)
    if stored is None:
        return None
    config = run.config
    was_per_epoch = max(1, stored // (run.info.world_size * config.batch_size))
    set_by = (f"--steps {config.steps}" if config.steps else
              f"--epochs {config.epochs} of the {count_of(stored, 'sample')} it started on")
    validates = " and the epoch ends, where it validates," if not config.val_every else " and the epoch ends"
    fix = ("" if config.steps or per_epoch == was_per_epoch else
           f"; to run --epochs {config.epochs} over the new data instead, resume with --steps {config.epochs * per_epoch} "
           "(the learning rate then follows that total)")
    was = ckpt.config
    was_total = (was.get("steps") or 0) or (was.get("epochs") or 0) * max(
        1, stored // (run.info.world_size * (was.get("batch_size") or config.batch_size)))
    lr = ("the learning rate goes on as it would have" if not was_total or was_total == run.total_steps else
          f"not the {was_total} steps the run was set to: the learning rate jumps to the new schedule's at this step")
    # The same steps an epoch (27 samples for 26 at batch 2): the epochs end where they did, only
    # the samples drawn differ.
    epochs = (f"an epoch is now {per_epoch} steps (was {was_per_epoch}), so the data order{validates} differ"
              if per_epoch != was_per_epoch else
              f"an epoch is still {per_epoch} steps, but of other samples, so the data order differs")
    return (f"the training data has {count_of(run.train_samples, 'sample')}, checkpoint {path}'s run started on "
            f"{stored}: the run keeps a schedule of {run.total_steps} steps ({set_by}; {lr}), but {epochs} from the "
            f"uninterrupted run's{fix}")


def resume_run(run: Run, path: str | Path, *, ckpt: Checkpoint | None = None,
               class_table: ClassTable | None = None) -> Checkpoint:
    """Load model, optimiser, scheduler, scaler, RNG state and step from a ``last.pt`` (``ckpt``:
    the checkpoint already read from ``path``). With ``class_table`` (the data's), another class
    table than the checkpoint's is refused (``check_resume_class_table``)."""
    if ckpt is None:
        ckpt = load_checkpoint(path)
    check_resume_model(ckpt, run.config, path)
    if class_table is not None:
        check_resume_class_table(ckpt, class_table, path, data_spec=run.config.data)
    state = ckpt.train_state
    trained = state.get("trained_weights")
    if run.ema is not None and trained is None:
        raise ModelError(
            f"checkpoint {path} was trained without a weight average; resume it with ema_decay 0 "
            f"(--set ema_decay=0), or start a new run with ema_decay {run.config.ema_decay}"
        )
    trained_with = ckpt.config.get("optimizer")
    if trained_with is not None and trained_with != run.config.optimizer:
        raise ModelError(
            f"checkpoint {path} was trained with optimizer {trained_with!r}, this run uses {run.config.optimizer!r}; "
            f"resume with --set optimizer={trained_with}, or start a new run"
        )
    for key in OPTIMIZER_STATE_KEYS:  # restored with the optimiser's state: a new value would not be used
        trained_value = ckpt.config.get(key)
        value = getattr(run.config, key)
        if isinstance(trained_value, (int, float)) and not math.isclose(trained_value, value, rel_tol=1e-9):
            raise ConfigError(
                f"checkpoint {path} was trained with {key} {trained_value:g}, this run sets {value:g}; a resumed run "
                f"keeps its optimiser's state, so the new value would not be used: resume with --set {key}="
                f"{trained_value:g}, or start a new run"
            )
    _keep_schedule(run, ckpt)  # on data of another size: the run's own schedule (``data_size_change``)
    pending = state.get("val_pending") is True  # the validation at its step is still to run
    if ckpt.step > run.total_steps or (ckpt.step == run.total_steps and not pending):
        raise ConfigError(
            f"checkpoint {path} is at step {ckpt.step}, already at this run's {run.total_steps} steps; "
            f"{_more_steps_fix(run, ckpt.step)}"
        )
    try:
        # A checkpoint with an average holds the trained weights apart; the run goes on from those.
        run.bare_model.load_state_dict(trained if trained is not None else ckpt.state_dict)
        if run.ema is not None:
            run.ema.module.load_state_dict(ckpt.state_dict)
    except RuntimeError as exc:
        raise ModelError(
            f"checkpoint {path} weights do not fit the configured model: {state_dict_mismatch(exc).rstrip('.')}; "
            f"resume with the model_kwargs it was trained with (--set \"model_kwargs={short(ckpt.model_kwargs, 80)}\") "
            "and the data (class table) it was trained on"
        ) from None
    try:
        if run.ema is not None:
            run.ema.n_averaged.fill_(int(state["ema_updates"]))
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        # The next step's learning rate from this run's schedule, as LambdaLR computes it: the saved
        # one is the old schedule's, 0 at the end of a finished run resumed with a higher --steps
        # (its first step then trained at 0). The same value when the schedule is unchanged.
        for group, base, factor in zip(run.optimizer.param_groups, run.scheduler.base_lrs, run.scheduler.lr_lambdas,
                                       strict=True):
            group["lr"] = base * factor(run.scheduler.last_epoch)
        run.scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        random.setstate(rng["python"])
        _set_numpy_rng_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and run.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], run.device)
        best = float(state["best_miou"])
        # The latest validation (the checkpoint's own metrics when it was written at one; earlier
        # checkpoints hold no other): whether this step is validated yet, and OOM's last.pt line.
        last_validation = state.get("last_validation", ckpt.metrics)
        if not isinstance(last_validation, dict) or not isinstance(state.get("val_pending", False), bool):
            raise TypeError("last_validation is not a mapping or val_pending not true/false")
        problem = metrics_problem(last_validation)  # they go back into the next checkpoint's metrics
        if problem:
            raise ValueError(f"last_validation: {problem}")
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
        raise ModelError(
            f"checkpoint {path} holds a damaged training state ({type(exc).__name__}: {short(str(exc))}); "
            "resume from another last.pt, or start a new run"
        ) from None
    run.step = ckpt.step
    run.best_miou = best
    run.last_metrics = dict(last_validation)
    run.val_pending = pending
    return ckpt
