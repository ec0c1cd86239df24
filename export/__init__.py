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
command exits non-zero) and removes the file that failed it.

Run: ``perception export --checkpoint runs/x/best.pt --out model.onnx [--int8 --calib SPEC]``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from perception.config import hw_from_text, hw_to_text, setting
from perception.contracts import MAX_MODEL_INPUT_SIDE, MIN_MODEL_INPUT_SIDE
from perception.errors import ConfigError, DependencyError, ModelError

log = logging.getLogger(__name__)


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
                                               to_text=hw_to_text, help="input size (default: the checkpoint's training size)")
    confidence: bool = setting(False, help="add the uint8 per-pixel confidence output and store the unknown threshold in "
                                           "the metadata")
    unknown_threshold: float | None = setting(
        None, lo=0, hi=1, metavar="P",
        help="with --confidence: pixels below this top-class probability are unknown in the node (default: chosen by "
             "the rule of export/unknown.py on --unknown-data)")
    unknown_data: str | None = setting(None, metavar="SPEC", help="with --confidence: val data the threshold is chosen "
                                                                  "on (default: the checkpoint's dataset)")
    unknown_count: int = setting(50, lo=1, hi=10000, help="val images the threshold is chosen on")
    logit_adjust: float | str = setting(
        0.0, metavar="TAU|auto", from_text=logit_adjust_from_text,
        help="subtract TAU x log(class weight) from the logits before the argmax, undoing that much of the training's "
             "class weighting at the decision (0: off; auto: the TAU of 0..1 that scores best on the checkpoint's "
             "training frames); needs the training data")
    dynamic_batch: bool = setting(False, help="dynamic batch dimension (default: batch 1)")
    verify_data: str | None = setting(None, metavar="SPEC", help="dataset for the ONNX-vs-PyTorch check (val split)")
    verify_count: int = setting(8, lo=1, hi=1000, help="images for the check")
    int8: bool = setting(False, help="also write a gated INT8 model (model.int8.onnx); with --tensorrt: an INT8 engine")
    calib: str | None = setting(None, metavar="SPEC", help="calibration dataset (train split), e.g. camvid:/data/camvid")
    calib_count: int = setting(64, lo=1, hi=10000, help="calibration images")
    val_data: str | None = setting(None, metavar="SPEC", help="dataset for the INT8 mIoU gate (default: --calib, val split)")
    val_count: int = setting(50, lo=1, hi=10000, help="validation images for the INT8 gate")
    allow_int8_drop: bool = setting(False, help="keep the INT8 model even if it misses the mIoU budget")
    latency_runs: int = setting(20, lo=1, hi=10000, help="runs per CPU latency median")
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
        if (self.unknown_threshold is not None or self.unknown_data) and not self.confidence:
            raise ValueError("--unknown-threshold / --unknown-data set the threshold on the confidence output; add --confidence")
        try:  # a number or 'auto' (as text from YAML or a launch file): the flag's own check
            self.logit_adjust = logit_adjust_from_text(str(self.logit_adjust))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if self.fp16 and not self.tensorrt:
            raise ValueError("--fp16 applies to TensorRT engines; add --tensorrt")
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


def int8_path_for(out: Path) -> Path:
    """``model.onnx`` -> ``model.int8.onnx`` (the CPU INT8 model next to the FP32 one)."""
    return out.with_name(f"{out.stem}.int8.onnx")


def run_export(cfg: ExportConfig, *, report: Callable[[str], None] = print) -> ExportSummary:
    """Run the export chain for ``cfg``; ``report`` receives one line per step.

    Raises:
        ModelError: unreadable checkpoint or export failure. ExportGateError: a gate failed.
        DataError/ConfigError: bad dataset specs. DependencyError: --tensorrt without TensorRT.
    """
    prepare_out(cfg.out)  # a bad --out costs a second, not the export's minutes
    import onnx

    try:
        import torch
    except ImportError:
        raise DependencyError("perception export needs torch to read the checkpoint: pip install -e '.[train]'") from None

    from perception.export.onnx import ExportWrapper, build_metadata, export_onnx, prepare_model
    from perception.export.verify import load_samples, reference_samples, verify_onnx
    from perception.training.checkpoint import build_model_from_checkpoint, load_checkpoint

    if cfg.tensorrt:  # fail before minutes of work, not after
        from perception.engines.trt_build import import_tensorrt

        import_tensorrt()
    ckpt = load_checkpoint(cfg.checkpoint)
    model = build_model_from_checkpoint(ckpt)
    input_hw = tuple(cfg.input_hw or ckpt.input_hw)
    metadata = build_metadata(ckpt, input_hw=input_hw, dynamic_batch=cfg.dynamic_batch, with_confidence=cfg.confidence)
    if cfg.logit_adjust != 0.0:
        from perception.export.logit_adjust import choose

        adjust = choose(ckpt, model.eval(), cfg.logit_adjust, input_hw=input_hw, source=str(cfg.checkpoint),
                        report=report)
        metadata = replace(metadata, logit_adjust=adjust.to_metadata())
        report(f"logit adjustment: tau {adjust.tau:g}, bias " + ", ".join(
            f"{name} {b:+.2f}" for name, b in zip(metadata.class_table.names, adjust.bias, strict=True)) + f"; {adjust.rule}")

    exported = export_onnx(model, cfg.out, metadata)
    stale_int8 = int8_path_for(cfg.out)
    if stale_int8.is_file():
        # The INT8 sibling was made from the model just replaced; the engines pair them by name
        # (--precision int8, --engine auto), so it must not outlive it.
        stale_int8.unlink()
        report(f"removed {stale_int8.name}: it was quantised from the model {cfg.out.name} replaced"
               + ("; --int8 writes a new one" if cfg.int8 else "; add --int8 (or run python -m perception.export.quantize) for a new one"))
    report(
        f"export: {ckpt.model_name} {input_hw[0]}x{input_hw[1]} -> {cfg.out} "
        f"({exported.size_bytes / 1e6:.2f} MB, opset {onnx.load(str(cfg.out), load_external_data=False).opset_import[0].version}, "
        f"{exported.export_s:.1f} s), onnx.checker passed"
    )

    samples, source = reference_samples(
        cfg.verify_data, checkpoint_dataset=ckpt.dataset, count=cfg.verify_count, input_hw=input_hw
    )
    wrapper = ExportWrapper(
        prepare_model(model), mean_rgb=metadata.mean, std_rgb=metadata.std, with_confidence=cfg.confidence,
        confidence_pool=metadata.confidence_pool_flags(), logit_bias=metadata.logit_adjust.get("bias"),
    ).eval()
    with torch.no_grad():
        verify = verify_onnx(wrapper, onnx.load(str(cfg.out)), samples, source=source)
    for line in verify.lines():
        report(line)
    if not verify.passed:
        cfg.out.unlink(missing_ok=True)
        raise ExportGateError(f"{cfg.out.name} failed verification against PyTorch (see above); file removed")
    summary = ExportSummary(onnx_path=cfg.out, onnx_bytes=exported.size_bytes, export_s=exported.export_s, verify=verify)
    if cfg.confidence:
        metadata = _unknown_step(cfg, metadata, report)

    calib_images = None
    if cfg.int8:
        calib, _ = load_samples(cfg.calib, split="train", count=cfg.calib_count, input_hw=input_hw)
        calib_images = [image for image, _ in calib]
    if cfg.int8:
        from perception.export.int8_gate import gate_int8
        from perception.export.quantize import quantize_int8

        int8_path = int8_path_for(cfg.out)
        val, val_source = load_samples(cfg.val_data or cfg.calib, split="val", count=cfg.val_count, input_hw=input_hw)
        try:
            quantize_int8(cfg.out, int8_path, calib_images, metadata=metadata)
            int8 = gate_int8(cfg.out, int8_path, val, metadata, runs=cfg.latency_runs, allow_drop=cfg.allow_int8_drop)
        except BaseException:  # a failure or Ctrl-C before the gate's verdict: no ungated INT8 model stays
            int8_path.unlink(missing_ok=True)
            raise
        report(f"int8: calibrated on {len(calib_images)} images of {cfg.calib}; wrote {int8_path} "
               f"({int8_path.stat().st_size / 1e6:.2f} MB); validated on {val_source}")
        for line in int8.lines():
            report(line)
        if not int8.passed and not cfg.allow_int8_drop:
            from perception.engines.cpu import int8_gate_hint

            int8_path.unlink(missing_ok=True)
            raise ExportGateError(
                f"INT8 mIoU drop {int8.drop_points:.2f} points exceeds {int8.max_drop_points:.1f}; "
                "file removed (keep the costly layers float with `python -m perception.export.quantize "
                f"{cfg.out} --calib ... --val-data ... --accuracy-control SPEC`, labelled images other than "
                f"the gate's; or --allow-int8-drop to keep it){int8_gate_hint(int8.saturation_safe)}"
            )
        summary.int8_path, summary.int8 = int8_path, int8

    if cfg.tensorrt:
        summary.engine_path, summary.engine_built = _tensorrt_step(cfg, metadata, calib_images, report)
    return summary


def _unknown_step(cfg: ExportConfig, metadata, report: Callable[[str], None]):
    """Store the unknown threshold in the exported file's metadata: ``--unknown-threshold``, else
    the ``export.unknown`` rule on ``--unknown-data`` (default: the checkpoint's dataset, val split).
    Returns the new metadata, which the INT8 and TensorRT models inherit."""
    from perception.export.unknown import choose_for_model
    from perception.modelfile import record_metadata

    if cfg.unknown_threshold is not None:
        threshold, rule = cfg.unknown_threshold, "given (perception export --unknown-threshold)"
    else:
        spec = cfg.unknown_data or metadata.dataset
        if not spec:
            raise ConfigError("the checkpoint does not say which dataset it was trained on; pass --unknown-data SPEC "
                              "(the model's own validation data) or --unknown-threshold P")
        choice = choose_for_model(cfg.out, spec, count=cfg.unknown_count)
        threshold, rule = choice.threshold, choice.rule
    metadata = record_metadata(cfg.out, unknown_threshold=float(threshold), unknown_rule=rule)
    report(f"unknown: pixels with confidence below {threshold:.4g} are unknown (id 255) in the node; {rule}")
    return metadata


def prepare_out(out: Path) -> None:
    """Create the folder of ``--out``; ConfigError when ``out`` is a folder or cannot be written,
    found before the export's minutes of work rather than after."""
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give a file name such as {out / 'model.onnx'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create folder {out.parent} for --out ({exc.strerror}); choose a writable path") from None


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
