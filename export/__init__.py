"""Checkpoint -> deployable engines, as a chain of checked steps (``perception export``).

1. ``export.onnx``: the model inside a uint8-NHWC-BGR-in / uint8-class-ids-out graph with its
   metadata, passed by ``onnx.checker``;
2. ``export.verify``: ONNX Runtime vs PyTorch on real images within a stated tolerance;
   with ``--confidence``, ``export.unknown`` then stores the unknown threshold (chosen by its rule
   on the model's own validation data, or ``--unknown-threshold``) in the metadata;
3. ``export.quantize`` (``--int8``): INT8 (NNCF or ONNX Runtime), gated on validation mIoU and
   timed by ``export.int8_gate``;
4. ``perception.engines.trt_build`` (``--tensorrt``): a TensorRT engine through the engine cache.

Each step prints what it checked and the figure; a failed gate raises ``ExportGateError`` (the
command exits non-zero). Every input is read before anything is written, and each file is written
under a temporary name beside its place and renamed there only once its gate passed, so a failed
export leaves the files it would have replaced as they were (``run_export``).

Run: ``perception export --checkpoint runs/x/best.pt --out model.onnx [--int8 --calib SPEC]``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from perception.config import hw_from_text, hw_to_text, setting
from perception.contracts import MAX_MODEL_INPUT_SIDE, MIN_MODEL_INPUT_SIDE
from perception.errors import TRAIN_INSTALL_HINT, ConfigError, DependencyError, ModelError, file_in_the_way
from perception.overwrite import SPECIAL_FILE, is_special_file, refuse_special_file

log = logging.getLogger(__name__)


class ToolParser(argparse.ArgumentParser):
    """The parser of a ``python -m perception.export.<tool>`` program: a bad command line is one
    line, ``<label>: error: <what>; see '<prog> --help'`` on stderr, exit 2, as the tool's other
    errors (argparse would print its usage line first); no prefix abbreviations; a flag that takes
    one value given twice is refused, as by every ``perception`` command (``cli.OnceFlag``)."""

    def __init__(self, tool: str, *, label: str, description: str | None = None) -> None:
        from perception.cli import refuse_repeats

        super().__init__(prog=f"python -m perception.export.{tool}", description=description, allow_abbrev=False)
        refuse_repeats(self)  # before the tool adds its flags: each single-value flag is a OnceFlag
        self.label = label  # the start of the tool's error lines: "export.quantize", "python -m perception.export.upgrade"

    def error(self, message: str):  # noqa: ANN201 - argparse hook; never returns
        self.exit(2, f"{self.label}: error: {message}; see '{self.prog} --help'\n")

#: Validation images the INT8 gate scores FP32 and INT8 on, by default, whichever route quantises
#: (``perception export --int8`` or ``python -m perception.export.quantize``): one gate, one verdict.
DEFAULT_GATE_IMAGES = 100
#: ``perception export``'s default calibration images and latency runs (a flag given at another
#: value without ``--int8`` is refused, as the INT8 flags are).
DEFAULT_CALIB_IMAGES, DEFAULT_LATENCY_RUNS = 64, 20


class ExportGateError(ModelError):
    """An exported model failed a verification gate."""


def logit_adjust_from_text(text: str) -> float | str:
    """``--logit-adjust``: ``auto`` or a number in 0..1."""
    word = str(text).strip().lower()
    if word == "auto":
        return "auto"
    try:
        tau = float(word)
    except ValueError:
        raise ConfigError(f"--logit-adjust {text}: give a number in 0..1 or 'auto'") from None
    if not 0.0 <= tau <= 1.0:
        raise ConfigError(f"--logit-adjust {text}: tau must be in 0..1 or 'auto' (0: off, 1: the class weights fully undone)")
    return tau


@dataclass
class ExportConfig:
    """What ``perception export`` does; validated by ``perception.config.load_config``."""

    checkpoint: Path = setting(help="checkpoint .pt written by 'perception train'")
    out: Path = setting(help="ONNX file to write, e.g. model.onnx")
    input_hw: tuple[int, int] | None = setting(None, flag="--size", metavar="HxW", from_text=hw_from_text,
                                               to_text=hw_to_text, help="input size (default: the checkpoint's training size; a width/height "
                                                                    "ratio more than 2x off the training size's warns)")
    confidence: bool = setting(False, help="add the uint8 per-pixel confidence output and store the unknown threshold in "
                                           "the metadata")
    unknown_threshold: float | None = setting(
        None, lo=0, hi=1, metavar="P",
        help="with --confidence: pixels whose confidence is below P are unknown in the node; the confidence is the "
             "top class probability, or the summed probability of the obstacle classes where one of them wins "
             "(default: chosen by the rule of export/unknown.py on --unknown-data)")
    unknown_data: str | None = setting(None, metavar="SPEC", help="with --confidence: val data the threshold is chosen "
                                                                  "on (default: the checkpoint's dataset)")
    unknown_count: int = setting(50, lo=1, hi=10000, help="val images the threshold is chosen on")
    logit_adjust: float | str = setting(
        0.0, metavar="TAU|auto", from_text=logit_adjust_from_text,
        help="subtract TAU x log(class weight) from the logits before the argmax, undoing that much of the training's "
             "class weighting at the decision (0: off; auto: the TAU of 0..1 that scores best on the checkpoint's "
             "training frames); needs the training data")
    dynamic_batch: bool = setting(False, help="dynamic batch dimension (default: batch 1)")
    verify_data: str | None = setting(None, metavar="SPEC", help="images for the ONNX-vs-PyTorch check: a dataset (val split), a video file or an image folder")
    verify_count: int = setting(8, lo=1, hi=1000, help="images for the check")
    int8: bool = setting(False, help="also write a gated INT8 model (model.int8.onnx); with --tensorrt: an INT8 engine")
    calib: str | None = setting(None, metavar="SPEC", help="calibration images: a dataset (train split, e.g. camvid:/data/camvid), a video file or an image folder")
    calib_count: int = setting(DEFAULT_CALIB_IMAGES, lo=1, hi=10000, help="calibration images")
    val_data: str | None = setting(None, metavar="SPEC", help="dataset for the INT8 mIoU gate (default: --calib, val split)")
    val_count: int = setting(DEFAULT_GATE_IMAGES, lo=1, hi=10000, help="validation images for the INT8 gate")
    allow_int8_drop: bool = setting(False, help="keep the INT8 model even if it misses the mIoU budget")
    latency_runs: int = setting(DEFAULT_LATENCY_RUNS, lo=1, hi=10000, help="runs per CPU latency median")
    tensorrt: bool = setting(False, help="build a TensorRT engine (needs an NVIDIA GPU)")
    fp16: bool = setting(False, help="TensorRT engine in FP16")
    trt_cache_dir: Path | None = setting(None, flag="--trt-cache", metavar="DIR",
                                         help="engine cache (default ~/.cache/perception/trt)")

    @property
    def trt_precision(self) -> Literal["fp32", "fp16", "int8"]:
        """The TensorRT engine's precision: int8 with ``--int8``, fp16 with ``--fp16``, else fp32."""
        if not self.tensorrt:
            return "fp32"
        return "int8" if self.int8 else "fp16" if self.fp16 else "fp32"

    def __post_init__(self) -> None:
        if self.input_hw is not None and not (
            min(self.input_hw) >= MIN_MODEL_INPUT_SIDE and max(self.input_hw) <= MAX_MODEL_INPUT_SIDE
        ):
            raise ValueError(f"input size {self.input_hw[0]}x{self.input_hw[1]} is out of range: each side "
                             f"{MIN_MODEL_INPUT_SIDE}..{MAX_MODEL_INPUT_SIDE}")
        if self.out.suffix != ".onnx":
            raise ValueError(f"--out {self.out} must end in .onnx")
        if self.out.name.endswith(".int8.onnx"):  # engines.base.INT8_SUFFIX: the name the engines read as INT8
            raise ValueError(f"--out {self.out} is an INT8 file's name, and the export writes the FP32 model there "
                             "(its INT8 file goes beside it as NAME.int8.onnx); choose a name without .int8")
        if (self.unknown_threshold is not None or self.unknown_data) and not self.confidence:
            raise ValueError("--unknown-threshold / --unknown-data set the threshold on the confidence output; add --confidence")
        try:  # a number or 'auto' (as text from YAML or a launch file): the flag's own check
            self.logit_adjust = logit_adjust_from_text(str(self.logit_adjust))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if self.fp16 and not self.tensorrt:
            raise ValueError("--fp16 applies to TensorRT engines; add --tensorrt")
        int8_only = [flag for flag, given in (
            ("--calib", self.calib), ("--calib-count", self.calib_count != DEFAULT_CALIB_IMAGES), ("--val-data", self.val_data),
            ("--val-count", self.val_count != DEFAULT_GATE_IMAGES), ("--allow-int8-drop", self.allow_int8_drop),
            ("--latency-runs", self.latency_runs != DEFAULT_LATENCY_RUNS)) if given]
        if int8_only and not self.int8:  # without --int8 they were ignored: an FP32 file only, no word of INT8
            raise ValueError(f"{' / '.join(int8_only)} {'applies' if len(int8_only) == 1 else 'apply'} to the INT8 "
                             "model, which only --int8 writes; add --int8 (or leave "
                             f"{'it' if len(int8_only) == 1 else 'them'} out for the FP32 model alone)")
        if self.int8 and not self.calib:
            raise ValueError("INT8 needs calibration images: add --calib SPEC (e.g. camvid:/data/camvid)")


@dataclass
class ExportSummary:
    """The files written and the figures of every gate."""

    onnx_path: Path
    onnx_bytes: int
    export_s: float
    verify: object
    int8_path: Path | None = None
    int8: object | None = None
    engine_path: Path | None = None
    engine_built: bool = False


#: ``export --size`` warns when its width/height ratio is more than this factor off the training
#: size's: a frame shaped like the training frames then fills less than half of each inference,
#: the rest is letterbox padding (hunt s39: 32x4096 of a 64x96 model, 99 % padding, said nothing).
ASPECT_WARN_FACTOR = 2.0


def aspect_warning(export_hw: tuple[int, int], train_hw: tuple[int, int]) -> str | None:
    """The one warning line for an export size whose aspect ratio is more than ``ASPECT_WARN_FACTOR``
    off the training size's (None when it is within it): how far off, how much of an inference a
    frame of the training's shape fills, and sizes of the training's shape to export at instead."""
    (h, w), (th, tw) = export_hw, train_hw
    ratio = (w / h) / (tw / th)
    off = max(ratio, 1 / ratio)
    if off <= ASPECT_WARN_FACTOR:
        return None
    return (f"--size {h}x{w} is {off:.3g}x {'wider' if ratio > 1 else 'taller'} in shape than the training size "
            f"{th}x{tw}: a frame shaped like the training frames fills {100 / off:.2g} % of each inference, the "
            f"rest is letterbox padding; export at the training shape, e.g. --size {th}x{tw}"
            + (f" or {2 * th}x{2 * tw}" if 2 * max(th, tw) <= MAX_MODEL_INPUT_SIDE else ""))


def int8_path_for(out: Path) -> Path:
    """``model.onnx`` -> ``model.int8.onnx`` (the CPU INT8 model next to the FP32 one)."""
    return out.with_name(f"{out.stem}.int8.onnx")


def run_export(cfg: ExportConfig, *, report: Callable[[str], None] = print) -> ExportSummary:
    """Run the export chain for ``cfg``; ``report`` receives one line per step.

    Every input (the checkpoint, ``--verify-data``, ``--calib``, ``--val-data``, the unknown
    threshold's data) is read before anything is written. The model is written to a temporary file
    beside ``--out`` (``temp_beside``), verified there, and only then renamed onto ``--out``; the
    INT8 sibling of the model replaced goes only then, and a new one is renamed into place only
    after its gate. A failure or Ctrl-C before the FP32 model passed leaves ``--out`` and its INT8
    sibling as they were and removes the folders the export created.

    Raises:
        ModelError: unreadable checkpoint or export failure. ExportGateError: a gate failed.
        DataError/ConfigError: bad dataset specs, or an ``--out`` that is a folder, cannot be
        written or is the checkpoint. DependencyError: --tensorrt without TensorRT.
    """
    check_out(cfg.out, checkpoint=cfg.checkpoint)  # a bad --out costs a second, not the export's minutes
    if cfg.int8 and is_special_file(int8_path_for(cfg.out)):  # --int8 would replace it (check_out refuses one at --out)
        raise ConfigError(f"{int8_path_for(cfg.out)}, the INT8 file beside --out {cfg.out}, is {SPECIAL_FILE}, which no "
                          "output is written to; remove it or choose another --out")
    import onnx

    try:
        import torch
    except ImportError:
        raise DependencyError(f"perception export needs torch to read the checkpoint: {TRAIN_INSTALL_HINT}") from None

    from perception.export.onnx import ExportWrapper, build_metadata, export_onnx, prepare_model
    from perception.export.verify import load_samples, reference_samples, verify_onnx
    from perception.training.checkpoint import build_model_from_checkpoint, load_checkpoint

    if cfg.tensorrt:  # fail before minutes of work, not after
        from perception.engines.trt_build import import_tensorrt

        import_tensorrt()
    ckpt = load_checkpoint(cfg.checkpoint)
    model = build_model_from_checkpoint(ckpt)
    input_hw = tuple(cfg.input_hw or ckpt.input_hw)
    warning = aspect_warning(input_hw, tuple(ckpt.input_hw))
    if warning is not None:
        log.warning("%s", warning)
    metadata = build_metadata(ckpt, input_hw=input_hw, dynamic_batch=cfg.dynamic_batch, with_confidence=cfg.confidence)

    # Every image the gates need, before anything is written: a typo in a spec costs seconds and
    # leaves the model on disk alone.
    samples, source = reference_samples(
        cfg.verify_data, checkpoint_dataset=ckpt.dataset, count=cfg.verify_count, input_hw=input_hw
    )
    calib_images = val = val_source = None
    if cfg.int8:
        from functools import partial

        from perception.export.int8_gate import check_gate_classes, check_gate_labels, val_data_fix

        # The gate's labels must be of the model's class table (as perception eval's); calibration
        # needs no labels, so --calib may be any dataset. Checked before a calibration image is read.
        gate_flag = "--val-data" if cfg.val_data else "--val-data (default: --calib)"
        gate_fix = val_data_fix(val_data=cfg.val_data, calib=cfg.calib, trained_on=ckpt.dataset)
        gate_classes = partial(check_gate_classes, metadata.class_table, model=f"checkpoint {cfg.checkpoint}",
                               flag=gate_flag, fix=gate_fix)
        if not cfg.val_data:  # --calib read first: a file that is no images at all is --calib's to name, not the gate's
            load_samples(cfg.calib, split="train", count=1, input_hw=input_hw, labels=False, flag="--calib")
        val, val_source = load_samples(cfg.val_data or cfg.calib, split="val", count=cfg.val_count, input_hw=input_hw,
                                       check=gate_classes, flag=gate_flag, fix=gate_fix)
        check_gate_labels(val, metadata.class_table, spec=cfg.val_data or cfg.calib,
                          fix="or give the gate labelled images: --val-data SPEC")
        calib, _ = load_samples(cfg.calib, split="train", count=cfg.calib_count, input_hw=input_hw, labels=False,
                                flag="--calib")
        calib_images = [image for image, _ in calib]
    unknown_spec = _unknown_data(cfg, metadata) if cfg.confidence else None

    if cfg.logit_adjust != 0.0:
        from perception.export.logit_adjust import choose

        adjust = choose(ckpt, model.eval(), cfg.logit_adjust, input_hw=input_hw, source=str(cfg.checkpoint),
                        report=report)
        metadata = replace(metadata, logit_adjust=adjust.to_metadata())
        report(f"logit adjustment: tau {adjust.tau:g}, bias " + ", ".join(
            f"{name} {b + 0.0:+.2f}" for name, b in zip(metadata.class_table.names, adjust.bias, strict=True)) + f"; {adjust.rule}")

    out, int8_path = cfg.out, int8_path_for(cfg.out)
    kept = f"; {out} left as it was" if out.exists() or out.is_symlink() else ""
    created = make_folder(out.parent)
    staged = temp_beside(out)
    staged_int8: Path | None = None
    placed = False
    try:
        exported = export_onnx(model, staged, metadata)
        report(
            f"export: {ckpt.model_name} {input_hw[0]}x{input_hw[1]} -> {out} "
            f"({exported.size_bytes / 1e6:.2f} MB, opset {onnx.load(str(staged), load_external_data=False).opset_import[0].version}, "
            f"{exported.export_s:.1f} s), onnx.checker passed"
        )
        wrapper = ExportWrapper(
            prepare_model(model), mean_rgb=metadata.mean, std_rgb=metadata.std, with_confidence=cfg.confidence,
            confidence_pool=metadata.confidence_pool_flags(), logit_bias=metadata.logit_adjust.get("bias"),
        ).eval()
        with torch.no_grad():
            verify = verify_onnx(wrapper, onnx.load(str(staged)), samples, source=source)
        for line in verify.lines():
            report(line)
        if not verify.passed:
            raise ExportGateError(f"the exported model failed verification against PyTorch (see above); not written{kept}")
        if cfg.confidence:
            metadata = _unknown_step(cfg, staged, unknown_spec, report)
        _place_fp32(staged, out, int8_path, report, cfg.int8)
        placed = True
        summary = ExportSummary(onnx_path=out, onnx_bytes=out.stat().st_size, export_s=exported.export_s, verify=verify)

        if cfg.int8:
            from perception.export.int8_gate import gate_int8
            from perception.export.quantize import quantize_int8, resolve_quantizer

            staged_int8 = temp_beside(int8_path)  # renamed into place only with its gate's verdict
            quantize_int8(out, staged_int8, calib_images, metadata=metadata)
            int8 = gate_int8(out, staged_int8, val, metadata, runs=cfg.latency_runs, allow_drop=cfg.allow_int8_drop)
            size = staged_int8.stat().st_size / 1e6
            keep = int8.passed or cfg.allow_int8_drop
            if keep:
                move_into_place(staged_int8, int8_path)
            report(f"int8: {resolve_quantizer('auto')} quantiser, calibrated on {len(calib_images)} images of {cfg.calib}; "
                   + (f"wrote {int8_path}" if keep else f"{int8_path.name} not written")
                   + f" ({size:.2f} MB); validated on {val_source}")
            for line in int8.lines():
                report(line)
            if not keep:
                from perception.engines.cpu import int8_gate_hint

                raise ExportGateError(
                    f"INT8 mIoU drop {int8.drop_points:.2f} points exceeds {int8.max_drop_points:.1f}; "
                    f"{int8_path.name} not written ({out} is the verified FP32 model; keep the costly layers float "
                    f"with `python -m perception.export.quantize {out} --calib ... --val-data ... --accuracy-control "
                    "SPEC`, labelled images other than the gate's; or --allow-int8-drop to keep it)"
                    f"{int8_gate_hint(int8.saturation_safe)}"
                )
            summary.int8_path, summary.int8 = int8_path, int8
    except BaseException:  # a failure or Ctrl-C: no half-written or ungated file stays
        for path in (staged, staged_int8):
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
        if not placed:
            remove_folders(created)
        raise

    if cfg.tensorrt:
        summary.engine_path, summary.engine_built = _tensorrt_step(cfg, metadata, calib_images, report)
    return summary


def _place_fp32(staged: Path, out: Path, int8_path: Path, report: Callable[[str], None], int8: bool) -> None:
    """Rename the verified ``staged`` model onto ``out``; the INT8 sibling of the model it replaces
    goes with it (the engines pair the two by name: --precision int8, --engine auto), so neither an
    INT8 file of other weights stays beside the new model nor, should the rename fail, the old
    model loses its INT8 file."""
    stale = int8_path.is_file() or int8_path.is_symlink()
    aside = temp_beside(int8_path, tag="old") if stale else None
    if aside is not None:
        os.replace(int8_path, aside)
    try:
        move_into_place(staged, out)
    except BaseException:
        if aside is not None:
            os.replace(aside, int8_path)
        raise
    if aside is not None:
        with contextlib.suppress(OSError):
            aside.unlink()
        report(f"removed {int8_path.name}: it was quantised from the model {out.name} replaced"
               + ("; --int8 writes a new one" if int8 else "; add --int8 (or run python -m perception.export.quantize) for a new one"))


def _unknown_data(cfg: ExportConfig, metadata) -> str | None:
    """The dataset the unknown threshold will be chosen on (None with --unknown-threshold), opened
    now so that a bad spec fails before anything is written."""
    if cfg.unknown_threshold is not None:
        return None
    spec = cfg.unknown_data or metadata.dataset
    if not spec:
        raise ConfigError("the checkpoint does not say which dataset it was trained on; pass --unknown-data SPEC "
                          "(the model's own validation data) or --unknown-threshold P")
    from perception.errors import DataError

    dataset = (open_recorded_dataset(spec, "val", recorded_in=f"checkpoint {cfg.checkpoint}",
                                     fix="pass --unknown-data SPEC to choose on other data, or --unknown-threshold P")
               if not cfg.unknown_data else None)
    if dataset is None:
        from perception.datasets import open_dataset

        dataset = open_dataset(spec, split="val")
    if len(dataset) == 0:
        raise DataError(f"dataset {spec!r} has no val images to choose the unknown threshold on; pass --unknown-data")
    return spec


def open_recorded_dataset(spec: str, split: str, *, recorded_in: str, fix: str):
    """``open_dataset(spec, split)`` of the dataset a checkpoint or model records (its training data,
    the user never typed it: a folder relative to where the run started, a path on the training
    machine); a failure says where the spec came from and ``fix``, the flag that gives another."""
    from perception.datasets import open_dataset
    from perception.errors import PerceptionError

    try:
        return open_dataset(spec, split=split)
    except PerceptionError as exc:
        argument = spec.partition(":")[2].strip()
        relative = bool(argument) and "=" not in argument and not Path(argument).expanduser().is_absolute()
        where = ", a folder relative to where that run started" if relative else ""
        raise type(exc)(f"{exc} (dataset {spec!r} is the training data recorded in {recorded_in}{where}; {fix})") from None


def _unknown_step(cfg: ExportConfig, model: Path, spec: str | None, report: Callable[[str], None]):
    """Store the unknown threshold in the metadata of the exported file ``model`` (not yet renamed
    onto ``--out``): ``--unknown-threshold``, else the ``export.unknown`` rule on ``spec`` (see
    ``_unknown_data``). Returns the new metadata, which the INT8 and TensorRT models inherit."""
    from perception.export.unknown import choose_for_model
    from perception.modelfile import record_metadata

    if cfg.unknown_threshold is not None:
        threshold, rule = cfg.unknown_threshold, "given (perception export --unknown-threshold)"
    else:
        choice = choose_for_model(model, spec, count=cfg.unknown_count)
        threshold, rule = choice.threshold, choice.rule
    metadata = record_metadata(model, unknown_threshold=float(threshold), unknown_rule=rule)
    report(f"unknown: pixels with confidence below {threshold:.4g} are unknown (id 255) in the node; {rule}")
    return metadata


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` are one file (through links, hard links included); False when either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def temp_beside(dest: Path, *, tag: str = "tmp") -> Path:
    """``.<stem>.<tag>-<pid><suffix>`` beside ``dest``: a new file for ``dest`` is written and
    checked there, then ``move_into_place`` renames it onto ``dest`` (a rename in one folder:
    atomic, and it replaces a link at ``dest`` rather than writing through it)."""
    return dest.with_name(f".{dest.stem}.{tag}-{os.getpid()}{dest.suffix}")


def move_into_place(staged: Path, dest: Path, *, fix: str = "choose a writable --out") -> None:
    """``os.replace(staged, dest)``, ``dest``'s permissions kept when it is a regular file;
    ConfigError naming ``dest`` when the rename fails (``staged`` then stays for the caller to remove)."""
    with contextlib.suppress(OSError):
        if dest.is_file() and not dest.is_symlink():
            os.chmod(staged, stat.S_IMODE(dest.stat().st_mode))
    try:
        os.replace(staged, dest)
    except OSError as exc:
        raise ConfigError(f"cannot write {dest} ({exc.strerror or exc}); {fix}") from None


def make_folder(folder: Path, *, flag: str = "--out") -> list[Path]:
    """Create ``folder`` and its missing parents; returns the folders created, outermost first, for
    ``remove_folders`` after a failure. ConfigError naming the folder when it cannot be created."""
    missing = []
    for candidate in (folder, *folder.parents):
        if candidate.exists() or candidate.is_symlink():
            break
        missing.append(candidate)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        remove_folders(missing[::-1])
        why = file_in_the_way(folder) or exc.strerror or str(exc)
        raise ConfigError(f"cannot create folder {folder} for {flag} ({why}); choose a writable path") from None
    return missing[::-1]


def remove_folders(created: list[Path]) -> None:
    """Remove the folders ``make_folder`` created (innermost first), each only while empty."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()


def check_out(out: Path, *, checkpoint: Path | None = None, flag: str = "--out") -> None:
    """ConfigError, before any work, when ``out`` is a folder, cannot be created (a file where a
    folder of its path should be, a folder that cannot be written), or is the ``checkpoint`` itself
    or its INT8 sibling is (also through a link): writing there would destroy the checkpoint; and
    when it is a FIFO, device or socket (``overwrite.refuse_special_file``)."""
    if out.is_dir():
        raise ConfigError(f"{flag} {out} is a directory; give a file name such as {out / 'model.onnx'}")
    refuse_special_file(out, flag=flag)  # a FIFO would block the write (or be replaced), a device take the model
    if checkpoint is not None:
        for path in (out, int8_path_for(out)):
            if same_file(path, checkpoint):
                link = " (through a link)" if path.is_symlink() or Path(checkpoint).is_symlink() else ""
                if path == out:
                    raise ConfigError(f"{flag} {out} is the checkpoint {checkpoint} itself{link}: the export would "
                                      "overwrite it; choose another --out")
                raise ConfigError(f"{path}, the INT8 file beside {flag} {out}, is the checkpoint {checkpoint} itself{link}: "
                                  "the export would remove it; choose another --out")
    why = file_in_the_way(out.parent)
    if why:
        raise ConfigError(f"cannot write {flag} {out} ({why}); choose a writable {flag}")
    existing = next(p for p in (out.parent, *out.parent.parents) if p.exists() or p == Path(p.anchor))
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {flag} {out} (no write permission in {existing}); choose a writable {flag}")


def check_model_runs(model: Path, *, name: str | None = None) -> None:
    """The node's first-inference check of an export tool's input ``model`` before any work
    (``Engine.warmup``'s one checked run, ONNX Runtime on the CPU, as bench and eval run it): a
    file ONNX Runtime cannot load or run, or whose outputs are not the uint8 1 x H x W its graph
    declares, is one line (ModelError, WarmupError) instead of a traceback from the graph rewrite,
    the shape inference or the quantiser. ``name``: the path the line names instead of ``model``
    (the user's file when ``model`` is a temporary copy of the same file name)."""
    from perception.engines.base import WARMUP_FIX_NO_ENGINE
    from perception.engines.ort import OrtEngine
    from perception.options import EngineOptions

    try:
        engine = OrtEngine(model, EngineOptions(provider="cpu"))
        try:
            engine.warmup(1, fix=WARMUP_FIX_NO_ENGINE)
        finally:
            engine.close()
    except ModelError as exc:
        if name is None or name == str(model):
            raise
        raise ModelError(str(exc).replace(str(model), name)) from exc


def _tensorrt_step(cfg: ExportConfig, metadata, calib_images, report) -> tuple[Path, bool]:
    """Build (or find in the cache) the TensorRT engine; INT8 goes through a symmetric QDQ ONNX."""
    from perception.engines.cache import EngineCache
    from perception.engines.trt_build import engine_for
    from perception.export.quantize import quantize_int8

    source = cfg.out
    if cfg.trt_precision == "int8":
        source = cfg.out.with_name(f"{cfg.out.stem}.int8-trt.onnx")
        quantize_int8(cfg.out, source, calib_images, metadata=metadata, symmetric_activations=True)
    cache = EngineCache(cfg.trt_cache_dir)
    engine, key, built = engine_for(source, precision=cfg.trt_precision, cache=cache)
    local = cfg.out.with_name(f"{cfg.out.stem}.{cfg.trt_precision}.engine")
    shutil.copyfile(engine, local)
    verb = "built" if built else "loaded from cache"
    report(f"tensorrt: {cfg.trt_precision} engine {verb} ({key.gpu_name}, TensorRT {key.trt_version}); wrote {local}")
    return local, built
