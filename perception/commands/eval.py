"""``perception eval``: per-class IoU and G / C / mIoU of a checkpoint or an exported ONNX model.

    perception eval --checkpoint runs/camvid/best.pt --data camvid:../shared/data/camvid --split val
    perception eval --model out/model.onnx --data camvid:../shared/data/camvid

    perception eval --model perception/assets/default.onnx --data camvid:../shared/data/camvid --tasks
    perception eval --model m.onnx --data folder:frames --tasks drivable,obstacle --task obstacle=car,pedestrian \
        --data-task obstacle=vehicle,person

    perception eval --model perception/assets/default.onnx --data camvid:../shared/data/camvid --tasks \
        --record --contact-sheet docs/real_road.png

``--model x.onnx`` runs the file through ONNX Runtime (uint8 BGR input, class ids out) without
importing torch. Images are letterboxed into the model input exactly as the node does.
``--tasks`` scores by task group instead of by class: each side's classes are mapped through its
own task groups (``--task`` / ``--data-task NAME=CLASS,...`` add or replace a group), so any model
can be checked on any labelled dataset. ``--json`` also writes the figures to a file (``--json -``:
the JSON alone on stdout, the table on stderr).
``--record`` stores the task figures in the ONNX model's metadata as its real-road check
(``perception inspect`` shows them). ``--contact-sheet x.png`` draws ``--sheet-count`` frames spread
over the dataset with the model's drivable, lane and obstacle masks painted on. An existing ``--json``
or ``--contact-sheet`` file is refused before the evaluation starts unless ``--overwrite``.

With a model that has the confidence output (``perception export --confidence``), ``--tasks``
scores the masks the node publishes: pixels below the model's unknown threshold
(``--unknown-threshold P`` overrides it, 0 turns it off) are unknown and in no task, and the same
tasks are scored again with unknown marking off, with the share of labelled pixels left unknown::

    perception eval --model m.onnx --data camvid:../shared/data/camvid --tasks drivable
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from perception import contracts
from perception.config import same_setting, setting, short
from perception.console import emit
from perception.errors import (
    ConfigError,
    DataError,
    DependencyError,
    PerceptionError,
    file_in_the_way,
    ort_gpu_fix,
)
from perception.flags import add_flags, config_from_flags
from perception.metrics import masks_0_255_fix, no_labelled_pixels
from perception.options import EngineOptions, PublishOptions
from perception.overwrite import refuse_existing_file
from perception.progress import count_of, logs_above, progress
from perception.synthetic.version import is_synthetic, recorded_world, world_change

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """The flags of ``perception eval``."""

    checkpoint: str | None = setting(None, exclusive="what", help="a .pt checkpoint written by 'perception train'")
    model: str | None = setting(None, exclusive="what",
                                help="an exported .onnx model (evaluated with ONNX Runtime, no torch)")
    data: str | None = setting(None, help="dataset spec (default: the checkpoint's training data)")
    split: str = setting("val", help="dataset split")
    device: str = setting("auto", help="auto, cpu or cuda (a checkpoint also cuda:N)")
    batch_size: int = setting(4, lo=1, help="checkpoint evaluation batch size")
    workers: int = setting(2, lo=0, hi=64, help="checkpoint evaluation DataLoader workers (0: the main process)")
    threads: int = same_setting(EngineOptions, "threads", group=None, help="CPU threads, torch or ONNX Runtime (0: default)")
    json: str | None = setting(None, metavar="FILE|-",
                               help="also write the figures to this JSON file; '-': print the JSON on stdout "
                                    "(the table then goes to stderr, so '| jq .' works)")
    tasks: str | None = setting(
        None, const="", metavar="TASK[,TASK]",
        help="score by task group (drivable, lane, obstacle, or any group defined with --task/--data-task); "
             "no value: every task both the model and the dataset define")
    task: dict[str, list[str]] = setting(
        default_factory=dict, metavar="TASK=CLASS[,CLASS]",
        help="with --tasks: the model classes of a task, e.g. obstacle=car,pedestrian,cyclist")
    data_task: dict[str, list[str]] = setting(
        default_factory=dict, metavar="TASK=CLASS[,CLASS]",
        help="with --tasks: the dataset classes of a task, e.g. obstacle=Car,Pedestrian,Bicyclist")
    unknown_threshold: float | None = setting(
        None, lo=0, hi=1, metavar="P",
        help="with --tasks: pixels whose confidence is below P are unknown, in no task (default: the model's "
             "threshold; 0: off); needs a model with a confidence output")
    drivable_reach: Literal[contracts.DRIVABLE_REACH_CHOICES] = same_setting(
        PublishOptions, "drivable_reach", group=None,
        help="with --tasks or --contact-sheet: ego scores the drivable mask as the node publishes it, only the area "
             "joined to the car; all: every pixel of the drivable classes (the model's own figure)")
    mask_size: Literal[contracts.MASK_SIZES] = same_setting(
        PublishOptions, "mask_size", group=None,
        help="with --tasks and --drivable-reach ego: the scale at which the node you deploy (run --mask-size) "
             "joins the drivable area to the car; the two differ for frames smaller than the model input")
    record: bool = setting(False, help="with --tasks and --model: store the task figures in the model's metadata as "
                                       "its real-road check (use data the model never trained on)")
    contact_sheet: str | None = setting(
        None, metavar="PNG", help="with --model: also draw frames spread over the dataset with the task masks painted on")
    sheet_count: int = setting(12, help="frames on the contact sheet")
    overwrite: bool = setting(False, help="replace an existing --json or --contact-sheet file instead of refusing to "
                                          "start")

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.model is None):
            raise ValueError("give --checkpoint CKPT.pt or --model MODEL.onnx, one of the two")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, EvalConfig)


def _check_config(config: EvalConfig) -> None:
    """What depends on several flags, and the --json target, checked before minutes of evaluation
    could be lost to them (single values are checked by their declarations)."""
    if (config.task or config.data_task) and config.tasks is None:
        raise ConfigError("--task / --data-task define task groups for --tasks; add --tasks")
    if config.tasks and any(not name.strip() for name in config.tasks.split(",")):
        # ",,," would otherwise mean "every task", like --tasks given alone
        raise ConfigError(f"--tasks {short(config.tasks)} holds an empty task name; list names with single commas, "
                          "e.g. --tasks drivable,lane, or give --tasks alone for every task")
    if config.unknown_threshold is not None and config.tasks is None:
        raise ConfigError("--unknown-threshold applies to the task masks; add --tasks")
    if config.record and (config.tasks is None or not config.model):
        raise ConfigError("--record stores task figures in an ONNX model's metadata; it needs --tasks and --model")
    if config.contact_sheet and not config.model:
        raise ConfigError("--contact-sheet draws an exported model's masks; it needs --model")
    writes_file = bool(config.json and config.json != STDOUT)
    if config.overwrite and not writes_file and not config.contact_sheet:
        raise ConfigError("--overwrite replaces an existing --json or --contact-sheet file; add --json FILE or "
                          "--contact-sheet PNG, or drop --overwrite")
    if config.contact_sheet:
        from perception.contact_sheet import check_sheet_target

        check_sheet_target(config.contact_sheet, config.sheet_count)
        refuse_existing_file(Path(config.contact_sheet), flag="--contact-sheet", overwrite=config.overwrite,
                             example="sheet.png")
    if writes_file:
        target = Path(config.json)
        if target.is_dir():
            raise ConfigError(f"--json {target} is a directory; give a file name such as {target / 'eval.json'}")
        # replaced only with --overwrite (a figure file of another evaluation is worth keeping)
        refuse_existing_file(target, flag="--json", overwrite=config.overwrite, example="eval.json")
        if config.contact_sheet and target.resolve() == Path(config.contact_sheet).resolve():
            raise ConfigError(f"--json and --contact-sheet are both {target}; give each its own file")
        if not target.parent.is_dir():
            why = file_in_the_way(target.parent) or f"folder {target.parent} does not exist"
            raise ConfigError(f"--json {target}: {why}; create it or choose another path")
    from perception.modelfile import check_writable

    if writes_file:
        check_writable(config.json, fix="choose a writable --json path")
    if config.record:
        check_writable(config.model, fix="--record rewrites --model in place: make it writable, or evaluate a copy")


def _open_recorded_dataset(spec: str, split: str, recorded_in: str):
    """Open the dataset a model or checkpoint names; when that fails, say where the spec came from
    (a path on the training machine is a common reason) and how to override it."""
    from perception.datasets import open_dataset

    try:
        return open_dataset(spec, split=split)
    except PerceptionError as exc:
        raise type(exc)(f"{exc} (dataset {spec!r} is the one recorded in {recorded_in}; pass --data to use another)") from None


def _check_inputs(config: EvalConfig):
    """The model or checkpoint path, the device and ``--data``/``--split``, checked before a model
    loads (seconds, and log lines naming an evaluation that cannot run). Returns ``(spec, dataset)``
    of ``--data``, or None when the dataset is the one the model or checkpoint records."""
    if config.model:
        from perception.modelfile import check_model_path

        check_model_path(config.model)
        _check_onnx_device(config.device)
    else:
        from perception.training.run_dir import check_checkpoint_path

        check_checkpoint_path(config.checkpoint)
        try:
            from perception.training.distributed import DistInfo, pick_device
        except ImportError:  # no torch: evaluate_checkpoint names the missing dependency
            pass
        else:
            pick_device(config.device, DistInfo())
    if config.data:
        from perception.datasets import open_dataset

        return config.data, open_dataset(config.data, split=config.split)
    return None


def main(args: argparse.Namespace) -> int:
    from perception.signals import interrupt_on_stop_signals

    config = config_from_flags(EvalConfig, args, source="perception eval")
    _check_config(config)
    given = _check_inputs(config)
    # SIGTERM and SIGHUP stop an evaluation as Ctrl-C does: one line, status 130 (not a silent 143).
    with interrupt_on_stop_signals():
        if config.tasks is not None:
            return _main_tasks(config, given)
        return _main_classes(config, given)


def _main_classes(config: EvalConfig, given) -> int:
    from perception.training.evaluate import evaluate_checkpoint, evaluate_engine

    report = _report_stream(config)
    if config.model:
        engine = _onnx_engine(config)
        spec, dataset = given or _recorded_dataset(config, engine.metadata.dataset, config.model)
        _warn_world_change(spec, config.model, engine.metadata.dataset, engine.metadata.val_metrics)
        log.info("evaluating %s on %s (%s, %s)", engine.describe(), spec, config.split, count_of(len(dataset), "image"))
        with _eval_progress(dataset) as bar, logs_above(bar):
            cm = evaluate_engine(engine, dataset, on_sample=bar.update)
        source = config.model
    else:
        spec, dataset = given or _recorded_dataset(config, None, config.checkpoint)
        if is_synthetic(spec) and importlib.util.find_spec("torch") is not None:
            # (without torch, evaluate_checkpoint's one line says what to install)
            from perception.training.checkpoint import load_checkpoint

            ckpt = load_checkpoint(config.checkpoint)
            _warn_world_change(spec, config.checkpoint, ckpt.dataset, ckpt.metrics)
        log.info("evaluating %s on %s (%s, %s)", config.checkpoint, spec, config.split, count_of(len(dataset), "image"))
        cm = evaluate_checkpoint(
            config.checkpoint,
            dataset,
            device=config.device,
            batch_size=config.batch_size,
            workers=config.workers,
            threads=config.threads,
        )
        source = config.checkpoint
    if not cm.matrix.sum():
        raise DataError(no_labelled_pixels(spec, config.split, dataset))
    emit(f"{source} on {spec} ({_split_words(config.split, dataset)})", file=report)
    emit(cm.format_table(dataset.class_table), file=report)
    if config.json:
        _write_json(config.json, {"source": str(source), "data": spec, "split": config.split, **cm.summary(dataset.class_table)})
    if config.contact_sheet:
        _contact_sheet(config, engine, dataset, spec, report)
    return 0


#: ``--json -``: the JSON goes to stdout.
STDOUT = "-"


#: Datasets of at least this many images show progress on stderr (a line every few seconds off a
#: terminal, a bar on one; off with -q): 300 frames of 1080p take about a minute on a CPU.
PROGRESS_MIN_IMAGES = 50


def _eval_progress(dataset):
    """The progress of an evaluation over ``dataset`` (train's helper), off for a short one."""
    return progress(total=len(dataset), desc="eval", unit="image", disable=len(dataset) < PROGRESS_MIN_IMAGES,
                    interval_s=10.0)


def _split_words(split: str, dataset) -> str:
    """``val, 10 images``; for a folder with no split lists or split folders, which serves every
    split whole, says so (scoring on it may score frames the model was trained on)."""
    images = count_of(len(dataset), "image")
    if getattr(dataset, "whole_folder", False):
        return f"{split}: the whole folder, which has no split lists or split folders; {images}"
    return f"{split}, {images}"


def _report_stream(config: EvalConfig):
    """Where the human-readable lines go: stdout, unless ``--json -`` keeps stdout for the JSON alone."""
    return sys.stderr if config.json == STDOUT else sys.stdout


def _main_tasks(config: EvalConfig, given) -> int:
    """``--tasks``: binary IoU / precision / recall per task group, the node's preprocessing."""
    from perception.masks import unknown_marker_for
    from perception.training.evaluate import (
        UnknownTally,
        evaluate_tasks,
        format_task_table,
        resolve_task_groups,
    )

    report = _report_stream(config)
    if config.model:
        engine = _onnx_engine(config)
        source = config.model
    else:
        from perception.engines import EngineOptions, load_engine

        provider = {"auto": "cpu"}.get(config.device, config.device)
        engine = load_engine("torch", config.checkpoint, EngineOptions(provider=provider, threads=config.threads))
        source = config.checkpoint
    spec, dataset = given or _recorded_dataset(config, engine.metadata.dataset, source)
    _warn_world_change(spec, source, engine.metadata.dataset, engine.metadata.val_metrics)
    tasks = [t.strip() for t in config.tasks.split(",") if t.strip()] or None
    skipped = _unshared_tasks(engine.metadata.class_table, dataset.class_table, config, source=source, spec=spec) \
        if tasks is None else []
    scores = resolve_task_groups(
        engine.metadata.class_table,
        dataset.class_table,
        tasks=tasks,
        model_overrides=config.task,
        data_overrides=config.data_task,
        model_name=f"model {source}",
        data_name=f"dataset {spec}",
    )
    marker = unknown_marker_for(engine.has_confidence, engine.metadata.unknown_threshold, config.unknown_threshold,
                                model=engine.model_id)
    unknown = UnknownTally(marker) if marker is not None else None
    log.info("evaluating %s on %s (%s, %d images) by task", engine.describe(), spec, config.split, len(dataset))
    counted = _CountLabelled(dataset)
    with _eval_progress(dataset) as bar, logs_above(bar):
        evaluate_tasks(engine, counted, scores, unknown=unknown, drivable_reach=config.drivable_reach,
                       mask_size=config.mask_size, on_sample=bar.update)
    if not counted.labelled:
        raise DataError(no_labelled_pixels(spec, config.split, dataset))
    notes = skipped + _undefined_figures(scores, spec, counted)
    emit(f"{source} on {spec} ({_split_words(config.split, dataset)}), letterboxed to {engine.input_hw[0]}x{engine.input_hw[1]} as the node does", file=report)
    emit(_scored_pixels(counted), file=report)
    if config.drivable_reach == "ego" and any(s.task == "drivable" for s in scores):
        emit(f"drivable: the area joined to the car, as the node publishes it with --mask-size {config.mask_size} "
              "(--drivable-reach all: every pixel of its classes)", file=report)
    if unknown is None:
        emit("unknown marking off" + ("" if engine.has_confidence else " (the model has no confidence output)"), file=report)
        emit(format_task_table(scores), file=report)
        _print_notes(notes, report)
    else:
        emit(f"unknown: confidence below {marker.threshold:.4g} ({marker.set_by}): {100 * unknown.fraction:.2f} % "
              "of the labelled pixels, in no task", file=report)
        emit(format_task_table(scores), file=report)
        _print_notes(notes, report)
        emit("with unknown marking off:", file=report)
        emit(format_task_table(unknown.off), file=report)
        off_notes = [n for n in _undefined_figures(unknown.off, spec, counted) if n not in notes]
        _print_notes(off_notes, report)
        notes += off_notes
    if config.json:
        summary = {
            "source": str(source),
            "data": spec,
            "split": config.split,
            "input_hw": list(engine.input_hw),
            "preprocess": "letterbox (perception.preprocess, as the node)",
            "drivable_reach": config.drivable_reach,
            "mask_size": config.mask_size,
            "tasks": {s.task: s.to_dict() for s in scores},
            "unknown": unknown.to_dict() if unknown is not None else {"threshold": 0.0, "enabled": False},
            "labelled_pixels": counted.labelled,
            "ignored_pixels": counted.ignored,
            "notes": notes,
        }
        if unknown is not None:
            summary["tasks_unknown_off"] = {s.task: s.to_dict() for s in unknown.off}
        _write_json(config.json, summary)
    if config.record:
        from perception.modelfile import record_metadata

        check = {
            "data": spec,
            "split": config.split,
            "frames": len(dataset),
            "input_hw": list(engine.input_hw),
            "preprocess": "letterbox, as the node",
            "drivable_reach": config.drivable_reach,
            "mask_size": config.mask_size,
            # The figures are those of the masks the node publishes: with unknown marking at this threshold.
            "tasks": _task_figures(scores),
            "unknown": unknown.to_dict() if unknown is not None else {"threshold": 0.0, "enabled": False},
        }
        if unknown is not None:
            check["tasks_unknown_off"] = _task_figures(unknown.off)
        from perception.metrics import strict_json

        record_metadata(config.model, real_road_check=strict_json(check))
        emit(f"recorded in {config.model}'s metadata as its real-road check (perception inspect {config.model})",
              file=report)
    if config.contact_sheet:
        _contact_sheet(config, engine, dataset, spec, report)
    return 0


class _CountLabelled:
    """``dataset`` as the task evaluation reads it (length, class table, samples in order), counting
    the label pixels that hold a class id: the pixels every task is scored on."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset
        self.class_table = dataset.class_table
        self.labelled = 0
        self.ignored = 0  # pixels of the ignore id

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        import numpy as np

        image, label = self.dataset[index]
        self.labelled += int(np.count_nonzero(label < self.class_table.num_classes))
        if self.class_table.ignore_id is not None:
            self.ignored += int(np.count_nonzero(label == self.class_table.ignore_id))
        return image, label


def _undefined_figures(scores, spec: str, counted: _CountLabelled) -> list[str]:
    """One line per task with a figure printed as "-" (a zero denominator), saying why (for 0/255
    masks read with ``ignore_id: 255``, that cause and its fix)."""
    notes = []
    table = counted.class_table
    fix = masks_0_255_fix(table) if counted.ignored else ""
    for s in scores:
        present, claimed = s.true_positive + s.false_negative, s.true_positive + s.false_positive
        data_classes, model_classes = ",".join(s.data_classes), ",".join(s.model_classes)
        cause = ""
        if fix and table.names[1] in s.data_classes:
            cause = (f"; its labels hold {table.ignore_id}, which the class table's ignore_id: {table.ignore_id} leaves "
                     f"out: {fix}")
        if not present and not claimed:
            notes.append(f"{s.task}: IoU, precision and recall -: {spec} labels no pixel of {data_classes} "
                         f"and the model predicted none of {model_classes} on the labelled pixels{cause}")
        elif not present:
            notes.append(f"{s.task}: recall -: {spec} labels no pixel of {data_classes} "
                         f"(IoU 0 from the model's {s.false_positive} pixels of {model_classes}){cause}")
        elif not claimed:
            notes.append(f"{s.task}: precision -: the model predicted none of {model_classes} on the labelled pixels")
    return notes


def _print_notes(notes: list[str], file) -> None:
    for note in notes:
        emit(f"note: {note}", file=file)


def _task_figures(scores) -> dict:
    """The figures ``--record`` stores per task; an undefined one (NaN: a zero denominator) is
    null, as in ``--json``: the metadata reader takes null, and JSON has no NaN."""
    from perception.metrics import strict_json

    keys = ("iou", "precision", "recall", "model_classes", "data_classes")
    return {s.task: strict_json({k: s.to_dict()[k] for k in keys}) for s in scores}


def _unshared_tasks(model_table, data_table, config: EvalConfig, *, source: str, spec: str) -> list[str]:
    """For plain ``--tasks`` (every task both sides define): one note per task only one side
    defines, which is not scored, naming the flag that defines it on the other side."""
    model_tasks = [*model_table.task_groups, *(t for t in config.task if t not in model_table.task_groups)]
    data_tasks = [*data_table.task_groups, *(t for t in config.data_task if t not in data_table.task_groups)]
    notes = [f"{task}: not scored, dataset {spec} has no {task} group (add --data-task {task}=CLASS[,CLASS] to score it)"
             for task in model_tasks if task not in data_tasks]
    notes += [f"{task}: not scored, model {source} has no {task} group (add --task {task}=CLASS[,CLASS] to score it)"
              for task in data_tasks if task not in model_tasks]
    return notes


def _scored_pixels(counted: _CountLabelled) -> str:
    """How many label pixels the tasks were scored on, and how many the ignore id left out."""
    ignore = counted.class_table.ignore_id
    stored = getattr(counted.dataset, "stored_void", None)
    which = f"label value {stored}, read as ignore id {ignore}" if stored is not None else f"ignore id {ignore}"
    left_out = (f"{counted.ignored:,} ignored ({which})" if counted.ignored
                else "none ignored" if ignore is not None else "no ignore id")
    return f"scored on {counted.labelled:,} labelled pixels, {left_out}"


def _contact_sheet(config: EvalConfig, engine, dataset, spec: str, report) -> None:
    from perception.contact_sheet import build_contact_sheet, write_contact_sheet

    caption = f"{engine.metadata.model_id} on {spec} ({config.split}), letterboxed as the node"
    sheet = build_contact_sheet(engine, dataset, count=config.sheet_count, caption=caption,
                                unknown_threshold=config.unknown_threshold, drivable_reach=config.drivable_reach)
    write_contact_sheet(config.contact_sheet, sheet)
    emit(f"wrote {config.contact_sheet} ({min(config.sheet_count, len(dataset))} frames)", file=report)


def _onnx_engine(config: EvalConfig):
    from perception.engines import EngineOptions, load_engine

    return load_engine("ort", config.model, EngineOptions(provider=config.device, threads=config.threads))


def _check_onnx_device(device: str) -> None:
    """``--device`` for an ONNX model: its ONNX Runtime provider, named by eval's own flag (the
    engine's message names the node's --provider)."""
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device {device!r} for an ONNX model must be auto, cpu or cuda")
    if device != "cuda":
        return
    try:
        import onnxruntime
    except ImportError:
        return  # load_engine names the missing package
    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise DependencyError(
            f"--device cuda: ONNX Runtime here has no CUDAExecutionProvider (available: {', '.join(available)}); "
            f"{ort_gpu_fix()}; or use --device cpu (or auto)"
        )


def _recorded_dataset(config: EvalConfig, recorded: str | None, source: str):
    """``(spec, dataset)`` of the dataset the model or checkpoint records (no ``--data`` given)."""
    spec = recorded if recorded is not None else _checkpoint_dataset(source)
    if not spec:
        raise ConfigError(f"{source} does not say which dataset it was trained on; pass --data")
    return spec, _open_recorded_dataset(spec, config.split, source)


def _write_json(path: str, summary: dict) -> None:
    from perception.metrics import strict_json

    text = json.dumps(strict_json(summary), indent=2, allow_nan=False)
    if path == STDOUT:  # as listen --json and inspect --json: the document alone on stdout
        emit(text)
        return
    try:
        Path(path).write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write --json {path} ({exc.strerror}); the figures are printed above") from None


def _warn_world_change(spec: str, source: str, trained_on: str, metrics: dict) -> None:
    """One warning when an eval on the synthetic world scores a model whose stored validation figures
    (``perception inspect``) were measured in another world version (``perception/synthetic/version.py``)
    or in one an earlier release did not record: the same spec renders other scenes now."""
    if not (is_synthetic(spec) and is_synthetic(trained_on) and isinstance(metrics, dict) and "miou" in metrics):
        return
    line = world_change(recorded_world(metrics), whose=f"{source}'s stored validation figures (perception inspect)",
                        consequence="this eval scores it on other scenes, so its figures are not comparable with "
                                    "them (nor with an earlier release's eval of this file on the same spec)")
    if line:
        log.warning("%s", line)


def _checkpoint_dataset(path: str) -> str:
    from perception.training.checkpoint import load_checkpoint

    spec = load_checkpoint(path).dataset
    if not spec:
        raise ConfigError(f"checkpoint {path} does not say which dataset it was trained on; pass --data")
    return spec
