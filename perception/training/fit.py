"""The training loop over the steps of ``trainer.py`` and ``fit(config)``; the checkpoints it
writes and resumes from are ``run_state.py``'s.

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
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from perception import progress as progress_state
from perception.config import config_to_dict
from perception.errors import ConfigError, DataError, PerceptionError
from perception.progress import count_of, logs_above, mark_stopped, progress
from perception.signals import STOP_SIGNALS, install_signal_handlers
from perception.synthetic.version import SYNTHETIC_WORLD_VERSION, WORLD_KEY, is_synthetic
from perception.training.checkpoint import load_checkpoint
from perception.training.config import TrainConfig
from perception.training.distributed import DistInfo, cleanup_distributed, pick_device, setup_distributed
from perception.training.loaders import loader_batches, lost_worker_ends_stop, worker_deaths_as_stop
from perception.training.run_dir import (
    check_run_dir_free,
    check_run_dir_outside_data,
    make_run_dir,
    remove_run_files,
    resumes_from,
)
from perception.training.run_state import (
    check_resume_class_table,
    check_resume_model,
    data_size_change,
    resume_changes,
    resume_run,
    resume_world_change,
    save_run_checkpoint,
)
from perception.training.runlog import RunLog, StepLines
from perception.training.trainer import Data, Run, build_data, build_run, evaluate, step

log = logging.getLogger(__name__)


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
        if is_synthetic(run.config.val_data or run.config.data):  # which scenes these figures were measured on
            metrics[WORLD_KEY] = SYNTHETIC_WORLD_VERSION
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
            keys = ("miou", "global_acc", "class_acc", "trained_miou", WORLD_KEY)
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
    # A stop that also ended the data-loading workers (SIGTERM to the whole process group) ends
    # here as any stop does: the batch a dead worker owed never comes (lost_worker_ends_stop).
    with logs_above(bar), lost_worker_ends_stop(stop):
        while run.step < until_step and not (stop is not None and stop.is_set()):
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
        size = f"--size {config.input_hw[0]}x{config.input_hw[1]}"
        if run.val_pending:  # validation batches are val_batch_size images, scored at the labels' size
            raise ConfigError(
                f"training {what} while validating at step {run.step} ({size}, val_batch_size {config.val_batch_size}, "
                f"--workers {config.workers}, device {run.device}); lower val_batch_size (--set val_batch_size=1) "
                f"or --size{kept}"
            ) from None
        raise ConfigError(
            f"training {what} at step {run.step} ({size}{crop}, "
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
                    size_warning = data_size_change(ckpt, run, resume, data.steps_per_epoch)
                    for warning in (table_warning, size_warning, resume_changes(ckpt, config),
                                    resume_world_change(ckpt, config, resume)):
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
            if not progress_state.is_quiet():  # -q: warnings, errors and the result lines only (--help)
                print(f"resolved config ({run_dir / 'config.yaml'}):\n{resolved}", flush=True)
            log.info(
                "training %s on %s: %d samples, %d steps (%d per epoch), device %s, world size %d",
                config.model, data.samples.dataset.name, len(data.samples), run.total_steps, data.steps_per_epoch,
                run.device, info.world_size,
            )
        if resume is not None and runlog is not None:
            runlog.truncate_after(run.step)
        stop = threading.Event()
        single = info.world_size == 1
        with (stop_after_step_on_signal(stop, enabled=single), worker_deaths_as_stop(stop, enabled=single),
              out_of_memory_as_error(run, run_dir), steps_kept_on_data_error(run, data, run_dir, since=run.step)):
            if run.val_pending:
                # The checkpoint stopped in (or just before) the validation of its step: run it as
                # the uninterrupted run did, so best.pt, metrics.jsonl and curves.png are the same.
                log.info("running the validation of step %d that did not finish before the checkpoint was saved",
                         run.step)
                with lost_worker_ends_stop(stop):
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
