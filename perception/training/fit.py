"""The training loop over the steps of ``trainer.py``, checkpoints, resume, and ``fit(config)``.

The run directory (``config.out``) gets ``config.yaml`` (the resolved config), ``last.pt``
(after every validation and at the end), ``best.pt`` (highest validation mIoU),
``metrics.jsonl`` and ``curves.png``. Ctrl-C, SIGTERM or a hangup (single process) finishes the
current step, writes ``last.pt`` at that step and exits, so ``perception train --resume <out>/last.pt``
loses nothing. Data that fails on the way (a file that cannot be read, in training or validation)
ends the run with its one line once ``last.pt`` holds the steps trained (``keep_steps``).

The console: a tqdm bar on a terminal (log lines above it), a heartbeat line with an ETA every 30 s
off one (``perception.progress``); with ``progress: false`` no bar, but a log line at ``log_every``
steps (``runlog.StepLines``: at most one per ``STEP_LINE_MIN_S``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from perception.config import config_to_dict, cut, hw_to_text, short
from perception.contracts import ClassTable
from perception.errors import ConfigError, DataError, ModelError, PerceptionError
from perception.models.common import state_dict_mismatch
from perception.progress import count_of, logs_above, mark_stopped, progress
from perception.signals import STOP_SIGNALS, install_signal_handlers
from perception.training.checkpoint import Checkpoint, load_checkpoint, metrics_problem, save_checkpoint
from perception.training.config import TrainConfig
from perception.training.distributed import DistInfo, cleanup_distributed, pick_device, setup_distributed
from perception.training.loaders import loader_batches
from perception.training.run_dir import (
    check_run_dir_free,
    check_run_dir_outside_data,
    make_run_dir,
    remove_run_files,
    resumes_from,
)
from perception.training.runlog import RunLog, StepLines
from perception.training.trainer import Data, Run, build_data, build_run, evaluate, step

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# checkpoint
# --------------------------------------------------------------------------------------------


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
            "last_validation": dict(run.last_metrics),
            "val_pending": run.val_pending,
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
            "carry the data's table (colour-coded labels map colours to classes by it)")


#: Config keys whose change on a resume does not change what is trained from the checkpoint on (where
#: and how fast it runs, what is logged and validated, how long: raising --steps is how a run goes
#: on), or that are refused (model, optimiser), or that only built the initial weights.
_RESUME_FREE_KEYS = frozenset({
    "out", "overwrite", "device", "workers", "torch_threads", "log_every", "progress", "val_every",
    "val_batch_size", "val_data", "val_split", "steps", "epochs", "data", "mix_data", "model", "optimizer",
    *OPTIMIZER_STATE_KEYS, "pretrained", "init_seed", "channels_last",
})


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


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


def keep_steps(run: Run, data: Data, run_dir: Path | None, error: DataError) -> DataError:
    """``error`` (data that stopped the run: a file that cannot be read, labels with nothing to
    learn from) once the steps trained are safe: written to ``last.pt`` unless this run's last.pt
    already holds this step, and the line says where they are and how to go on. On other ranks,
    without a run directory, or before the first step, ``error`` as it is."""
    if run_dir is None or not run.info.is_main or run.step == 0 or getattr(error, "steps_kept", False):
        return error
    last = run_dir / "last.pt"
    if run.saved_step != run.step:
        save_run_checkpoint(run, data, last)
        run.saved_step = run.step
    # A validation that did not finish is run first by the resume (best.pt and metrics.jsonl then
    # are those of an uninterrupted run), also after the last step.
    then = (f"continue with: perception train --resume {last}" if run.step < run.total_steps or run.val_pending
            else f"score them with: perception eval --checkpoint {last}")
    kept = DataError(f"{error}; the {run.step} steps trained are in {last}: fix the data, then {then}")
    kept.steps_kept = True
    return kept


@contextlib.contextmanager
def steps_kept_on_data_error(run: Run, data: Data, run_dir: Path | None, *, since: int) -> Iterator[None]:
    """A DataError while training or validating (a file that cannot be read, which the loaders
    reach only when they come to it, perhaps hundreds of steps in) keeps the steps trained since
    ``since`` (the start or the resumed step) in ``last.pt``: ``keep_steps``."""
    try:
        yield
    except DataError as exc:
        if run.step <= since:
            raise  # nothing trained since the run began: the checkpoint it started from still holds it
        raise keep_steps(run, data, run_dir, exc) from None


def validate_and_checkpoint(run: Run, data: Data, run_dir: Path | None, runlog: RunLog | None) -> dict[str, Any]:
    """Evaluate; on rank 0 log, write last.pt and (when mIoU improved) best.pt. A validation file
    that cannot be read, or validation data without a labelled pixel, raises DataError once the
    steps trained are in last.pt (``keep_steps``), which records this validation as pending
    (``Run.val_pending``): a resume from it runs this validation before training on."""
    run.val_pending = True
    if run.info.is_main:  # a validation can take minutes on a CPU: say so before, not only after
        log.info("step %d: validating on %s of %s", run.step, count_of(len(data.val_set), "image"),
                 getattr(data.val_set, "name", "the validation data"))
    try:
        cm = evaluate(run, data)
        if int(cm.matrix.sum()) == 0:
            raise DataError(
                f"the validation data ({run.config.val_data or run.config.data}, split {run.config.val_split}) has no "
                f"labelled pixel: every label is the ignore id {data.ignore_id}; check its labels and class table"
            )
        metrics = {**cm.summary(data.class_table), "step": run.step}
        if run.ema is not None:
            # The trained weights too, so one run shows what the average bought (same data, same seed).
            metrics["trained_miou"] = float(evaluate(run, data, raw=True).miou())
    except DataError as exc:
        raise keep_steps(run, data, run_dir, exc) from None
    run.last_metrics, run.val_pending = metrics, False
    improved = run.last_metrics["miou"] > run.best_miou
    if improved:
        run.best_miou, run.best_step = run.last_metrics["miou"], run.step
    if run.info.is_main:
        log.info(
            "step %d: val mIoU %.2f %%  G %.2f %%  C %.2f %%%s",
            run.step, 100 * run.last_metrics["miou"], 100 * run.last_metrics["global_acc"],
            100 * run.last_metrics["class_acc"],
            f" (weight average; the trained weights: {100 * run.last_metrics['trained_miou']:.2f} %)"
            if run.ema is not None else "",
        )
        if runlog is not None:
            keys = ("miou", "global_acc", "class_acc", "trained_miou")
            runlog.write({"kind": "val", "step": run.step, **{k: run.last_metrics[k] for k in keys if k in run.last_metrics}})
            runlog.plot()
        if run_dir is not None:
            save_run_checkpoint(run, data, run_dir / "last.pt")
            run.saved_step = run.step
            if improved:
                save_run_checkpoint(run, data, run_dir / "best.pt")
    return run.last_metrics


def train_steps(
    run: Run,
    data: Data,
    *,
    until_step: int,
    run_dir: Path | None = None,
    runlog: RunLog | None = None,
    stop: threading.Event | None = None,
    validate_at_end: bool = False,
) -> list[dict[str, float]]:
    """Train from ``run.step`` to ``until_step``, validating every ``val_every`` steps (or per epoch).

    Returns the per-step records (loss, lr); returns early, between two steps, once ``stop`` is set.
    The batch order depends only on (seed, epoch, step), so stopping and resuming anywhere
    continues with the same batches. ``validate_at_end``: once ``until_step`` is reached (not
    stopped), its validation runs too unless that step already validated, before the progress says
    "done" (it can take minutes on a CPU).
    """
    config = run.config
    per_epoch = data.steps_per_epoch
    records: list[dict[str, float]] = []
    bar = progress(total=until_step, initial=run.step, desc="train", unit="step", disable=not (config.progress and run.info.is_main))
    lines = StepLines(run.step, until_step, enabled=not config.progress and run.info.is_main, logger=log)
    window_start, window_images, window_losses = time.perf_counter(), 0, []
    with logs_above(bar):
        while run.step < until_step:
            epoch, start_batch = divmod(run.step, per_epoch)
            data.sampler.set_position(epoch, start_batch)
            data.samples.set_epoch(epoch)
            for images, labels in loader_batches(data.loader):
                record = step(run, images, labels)
                records.append(record)
                window_images += images.shape[0] * run.info.world_size
                window_losses.append(record["loss"])
                end_of_epoch = run.step % per_epoch == 0
                validating = bool(config.val_every and run.step % config.val_every == 0) or (
                    not config.val_every and end_of_epoch)
                if run.step % config.log_every == 0 or run.step == until_step:
                    now = time.perf_counter()
                    # The logged loss is the mean over the steps since the last log step (one batch's
                    # loss swings too much to read a trend from); the returned records keep each step's.
                    logged = {**record, "loss": sum(window_losses) / len(window_losses),
                              "images_per_s": window_images / max(now - window_start, 1e-9)}
                    window_start, window_images, window_losses = now, 0, []
                    bar.set_postfix(loss=f"{logged['loss']:.4f}", lr=f"{logged['lr']:.2e}", img_s=f"{logged['images_per_s']:.1f}")
                    lines.log_step(run.step, logged, always=validating or run.step == until_step)
                    if runlog is not None and run.info.is_main:
                        runlog.write({"kind": "train", "step": run.step, "epoch": epoch, **logged})
                bar.update(1)
                if validating:
                    validate_and_checkpoint(run, data, run_dir, runlog)
                if run.step >= until_step or (stop is not None and stop.is_set()):
                    break
            if stop is not None and stop.is_set():
                break
        if (validate_at_end and run.step >= until_step and not (stop is not None and stop.is_set())
                and run.last_metrics.get("step") != run.step):
            # A first Ctrl-C here lets it finish and write last.pt (it holds every step), a second aborts.
            validate_and_checkpoint(run, data, run_dir, runlog)
    if stop is not None and stop.is_set() and run.step < until_step:
        mark_stopped(bar)  # its summary line says "stopped", not "done"
    bar.close()
    return records


def best_checkpoint(run: Run, run_dir: Path) -> dict[str, Any] | None:
    """The step and val mIoU of ``run_dir/best.pt``; None when there is none (a resume into a new
    ``--out`` that did not beat the score it carried). Read from the file when this process did not
    write it (a resume in place that did not beat it)."""
    path = run_dir / "best.pt"
    if not path.is_file():
        return None
    if run.best_step is not None:
        return {"step": run.best_step, "miou": run.best_miou}
    try:
        metrics = load_checkpoint(path).metrics
    except PerceptionError:
        return None
    if "step" not in metrics or "miou" not in metrics:
        return None
    return {"step": int(metrics["step"]), "miou": float(metrics["miou"])}


@contextlib.contextmanager
def stop_after_step_on_signal(stop: threading.Event, *, enabled: bool) -> Iterator[None]:
    """While active, the first stop signal (Ctrl-C, SIGTERM, a hangup: ``STOP_SIGNALS``) only sets
    ``stop`` (the loop ends after the current step and saves ``last.pt``); a second one reaches the
    handler found before (``perception train``'s: an interrupt at once). Not under DDP, where every
    rank would have to stop at the same step."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum, _frame) -> None:
        stop.set()
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        log.warning("%s: stopping after this step and saving last.pt (a second Ctrl-C or stop signal aborts at once)", name)
        handlers.restore()

    with install_signal_handlers(on_signal, STOP_SIGNALS) as handlers:
        yield


@contextlib.contextmanager
def out_of_memory_as_error(run: Run, run_dir: Path) -> Iterator[None]:
    """Turn running out of memory in training or validation into one line that names the settings
    to lower (torch raises a RuntimeError with the allocator's message, or CUDA's OutOfMemoryError;
    a DataLoader worker the kernel killed for memory surfaces as a RuntimeError in the main process)."""
    try:
        yield
    except (RuntimeError, MemoryError) as exc:
        text = str(exc)
        if isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower():
            what = "ran out of memory"
        elif "DataLoader worker" in text and ("exited unexpectedly" in text or "killed by signal: Killed" in text):
            what = "lost a data-loading worker (the kernel kills one that runs out of memory)"
        else:
            raise
        config = run.config
        crop = f", crop {config.crop_hw[0]}x{config.crop_hw[1]}" if config.crop_hw else ""
        saved = run.last_metrics.get("step")
        kept = (f"; {run_dir / 'last.pt'} holds step {saved}: continue from it with --resume and smaller settings"
                if saved else "")
        raise ConfigError(
            f"training {what} at step {run.step} (--size {config.input_hw[0]}x{config.input_hw[1]}{crop}, "
            f"--batch-size {config.batch_size}, --workers {config.workers}, device {run.device}); "
            f"lower --batch-size or --size, or train on crops (--set crop_hw=[H,W]){kept}"
        ) from None


def fit(config: TrainConfig, *, resume: str | Path | None = None) -> dict[str, Any]:
    """Train ``config`` to the end (from ``resume`` when given); returns the final validation metrics,
    with ``run_dir`` and ``best`` (``best_checkpoint``: best.pt's step and mIoU, or None).

    Raises:
        KeyboardInterrupt: after Ctrl-C (or SIGTERM, SIGHUP), once ``last.pt`` holds the step reached.
    """
    # --overwrite is what this start does to --out, not a setting of the run: it is not saved into the
    # run's config.yaml and checkpoints, whose config a later --resume or --config would carry on.
    overwrite, config = config.overwrite, dataclasses.replace(config, overwrite=False)
    info = setup_distributed(pick_device(config.device, DistInfo()))
    try:
        run_dir = Path(config.out)
        created = info.is_main and not run_dir.exists()
        if info.is_main:
            check_run_dir_free(run_dir, resume=resume, overwrite=overwrite)
            check_run_dir_outside_data(run_dir, config)
            make_run_dir(run_dir)
        try:
            # A resume is checked before anything in the run directory is written; its model before
            # the model is built (whose refusal of the input size would hide a swapped --model), its
            # class table before the weights are loaded.
            ckpt = load_checkpoint(resume) if resume is not None else None
            if ckpt is not None:
                check_resume_model(ckpt, config, resume)
            data = build_data(config, info)
            table_warning = (check_resume_class_table(ckpt, data.class_table, resume, data_spec=config.data)
                             if ckpt is not None else None)
            run = build_run(config, data, info=info)
            if ckpt is not None:
                resume_run(run, resume, ckpt=ckpt)
                log.info("resumed from %s at step %d", resume, run.step)
                if info.is_main:
                    for warning in (table_warning, resume_changes(ckpt, config)):
                        if warning:
                            log.warning("%s", warning)
        except BaseException:  # a refused dataset or resume leaves no empty run directory behind
            if created:
                with contextlib.suppress(OSError):
                    run_dir.rmdir()  # only when empty
            raise
        runlog = RunLog(run_dir) if info.is_main else None
        if info.is_main:
            if overwrite and not resumes_from(resume, run_dir):
                remove_run_files(run_dir)
            resolved = yaml.safe_dump(config_to_dict(config), sort_keys=False)
            (run_dir / "config.yaml").write_text(resolved, encoding="utf-8")
            print(f"resolved config ({run_dir / 'config.yaml'}):\n{resolved}", flush=True)
            log.info(
                "training %s on %s: %d samples, %d steps (%d per epoch), device %s, world size %d",
                config.model, data.samples.dataset.name, len(data.samples), run.total_steps, data.steps_per_epoch,
                run.device, info.world_size,
            )
        if resume is not None and runlog is not None:
            runlog.truncate_after(run.step)
        stop = threading.Event()
        with (stop_after_step_on_signal(stop, enabled=info.world_size == 1), out_of_memory_as_error(run, run_dir),
              steps_kept_on_data_error(run, data, run_dir, since=run.step)):
            if run.val_pending:
                # The checkpoint stopped in (or just before) the validation of its step: run it as
                # the uninterrupted run did, so best.pt, metrics.jsonl and curves.png are the same.
                log.info("running the validation of step %d that did not finish before the checkpoint was saved",
                         run.step)
                validate_and_checkpoint(run, data, run_dir, runlog)
            # The last validation runs inside (before the progress says "done"), under the same Ctrl-C
            # handling: a first Ctrl-C lets it finish and write last.pt (it holds every step), a second aborts.
            train_steps(run, data, until_step=run.total_steps, run_dir=run_dir, runlog=runlog, stop=stop,
                        validate_at_end=True)
        if stop.is_set() and run.step < run.total_steps:
            last = save_run_checkpoint(run, data, run_dir / "last.pt")
            log.warning(
                "interrupted at step %d of %d; saved %s; continue with: perception train --resume %s",
                run.step, run.total_steps, last, last,
            )
            raise KeyboardInterrupt
        if run.last_metrics.get("step") != run.step:  # Ctrl-C came after the last step, before its validation
            run.val_pending = True  # a resume runs it (and writes best.pt if it is the best)
            last = save_run_checkpoint(run, data, run_dir / "last.pt")
            log.warning("interrupted before the last validation; saved %s (all %d steps); run that validation with: "
                        "perception train --resume %s", last, run.step, last)
            raise KeyboardInterrupt
        best = best_checkpoint(run, run_dir) if info.is_main else None
        return {**run.last_metrics, "run_dir": str(run_dir), "best": best}
    finally:
        cleanup_distributed(info)
