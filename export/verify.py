"""Step 2 of the export chain: the exported graph must compute what the PyTorch model computes.

``verify_onnx`` runs ONNX Runtime (CPU) and PyTorch on the same uint8 BGR images and compares
(1) the float logits, read from the shipped graph itself with an extra output (see
``export.graph.with_logits_output``), against a stated tolerance, and (2) the fused uint8 class ids
against the PyTorch argmax. It reads no labels, so ``--verify-data`` may be a dataset of any class
table. ``reference_samples`` picks the images: ``--verify-data`` when given, else synthetic road
scenes, else the checkpoint's own dataset. ``load_samples`` reads the images (and labels) of the
INT8 steps, with the class-table check of the gate (``int8_gate.check_gate_classes``) when asked.
``evaluate_onnx`` scores an ONNX file on labelled images, which must be of ``class_table``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from perception.contracts import INPUT_NAME, OUTPUT_CLASS_IDS, OUTPUT_CONFIDENCE, ClassTable
from perception.errors import ConfigError, DataError, ModelError, PerceptionError, why_not_a_file
from perception.metrics import ConfusionMatrix
from perception.preprocess import letterbox_image, letterbox_label

if TYPE_CHECKING:
    from perception.datasets import Dataset

log = logging.getLogger(__name__)

# The FP32 gate, and why it is shaped so. ONNX Runtime and PyTorch both compute in float32 but
# add in different orders, so every logit carries rounding noise of about 1e-6 of the logits' own
# range: the tolerance is LOGITS_ABS_TOL + LOGITS_REL_TOL * max |logit| of the model on these images.
# Where a model is discontinuous (argmax; SegNet's unpooling switch keeps the first maximum of each
# pooling window) that 1-ulp noise can flip a near-tie and move a whole region's values: with
# torch 2.14.1 and ONNX Runtime 1.32, one flat test image had 6.75 % of its logits off by up to
# 0.21, and there ORT agreed with a float64 PyTorch run to 3e-6 while PyTorch's own float32 result
# was the one off. So values beyond the tolerance are arbitrated by float64 PyTorch, the
# computation the graph is meant to approximate: a value agrees when ORT is within the tolerance of
# PyTorch float32 or of float64. A graph that really differs from the model is off from both and
# fails. Class ids keep their own gate, with near-tie pixels (top-2 margin within the tolerance)
# identified and reported rather than counted.
#: Logit tolerance: |ORT - reference| <= ABS + REL * max |PyTorch logits|.
LOGITS_ABS_TOL = 1e-3
LOGITS_REL_TOL = 1e-4
#: Minimum share of logits that agree (with float32 or, for near-tie flips, float64 PyTorch).
MIN_LOGITS_WITHIN_TOL = 0.999
#: Minimum share of confidence values within one step of PyTorch's (float32 or float64).
MIN_CONFIDENCE_WITHIN_ONE = 0.999
#: Minimum share of pixels whose class id matches the PyTorch argmax, near-tie pixels excepted.
MIN_ARGMAX_AGREEMENT = 0.999

Sample = tuple[np.ndarray, np.ndarray | None]
#: Label value of the letterbox padding: outside every class table, so metrics ignore it.
LABEL_PAD = 255


def resize_sample(image: np.ndarray, label: np.ndarray | None, input_hw: tuple[int, int]) -> Sample:
    """Fit a sample to the model input as the node does (``perception.preprocess``): the image
    letterboxed, the label placed the same way (nearest) with the padding set to ``LABEL_PAD``
    so metrics skip it."""
    image, letterbox = letterbox_image(image, input_hw)
    if label is not None:
        label = letterbox_label(label, letterbox, fill=LABEL_PAD)
    return np.ascontiguousarray(image), label


def load_samples(
    spec: str, *, split: str, count: int, input_hw: tuple[int, int], check: Callable[[Dataset], None] | None = None,
    labels: bool = True, flag: str = "", fix: str = "",
) -> tuple[list[Sample], str]:
    """``count`` (image, label) pairs spread evenly over dataset ``spec``, resized to ``input_hw``.

    ``check`` runs on the opened dataset before any image is read (the INT8 gate's class-table
    check: ``int8_gate.check_gate_classes``). Without ``labels`` (calibration, verification), ``spec``
    may also be a video file or an image folder: every ``SOURCE_FRAME_STRIDE``-th frame, no labels.
    Returns the samples and the dataset's name. Raises ConfigError/DataError from the dataset or
    ``check``, and ConfigError (``flag``, ``spec``, why, ``fix``) for frames where labels are needed.
    """
    from perception.datasets import dataset_kinds, open_dataset
    from perception.frames import SOURCE_FRAME_STRIDE, is_frames_path, source_frames
    from perception.sources.images import list_images

    if is_frames_path(spec):
        if labels:
            raise ConfigError(f"{flag or 'the dataset'} {spec}: a video file or image folder has no labels, and these "
                              "images are scored; " + (fix or "give a labelled dataset (folder:PATH with images/, "
                                                       "labels/ and classes.yaml, camvid:PATH, synthetic)"))
        try:
            # A folder's images spread over it (often photos, each its own scene); a video's every
            # SOURCE_FRAME_STRIDE-th frame (its neighbours are near copies), as bench --frames reads.
            stride = max(1, len(list_images(spec)) // count) if Path(spec).is_dir() else SOURCE_FRAME_STRIDE
            frames = source_frames(spec, input_hw, count, stride)
        except PerceptionError as exc:
            raise type(exc)(f"{flag}: {exc}" if flag else str(exc)) from None
        if not frames:
            raise DataError(f"{flag or 'the frames'} {spec}: no frame could be read; give a video file or an image folder")
        return [(frame, None) for frame in frames], spec
    if not labels and spec.partition(":")[0].strip() not in dataset_kinds():  # a file or folder, not there
        raise ConfigError(f"{flag or 'the frames'} {spec}: {why_not_a_file(spec)}; give a video file, an image folder "
                          f"or a dataset spec ({', '.join(kind + ':PATH' if kind != 'synthetic' else kind for kind in dataset_kinds())})")
    dataset = open_dataset(spec, split=split)
    if check is not None:
        check(dataset)
    if len(dataset) == 0:
        raise DataError(f"dataset {spec!r} has no {split} images; check the path and split")
    indices = np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int)
    picked = dict.fromkeys(indices.tolist())
    if not labels:  # calibration, verification: the images alone (a label is neither read nor checked)
        return [resize_sample(dataset.image(int(i)), None, input_hw) for i in picked], spec
    samples = [resize_sample(*dataset[int(i)], input_hw) for i in picked]
    return samples, spec


def reference_samples(
    verify_data: str | None, *, checkpoint_dataset: str, count: int, input_hw: tuple[int, int]
) -> tuple[list[Sample], str]:
    """The images the FP32 gate runs on: ``verify_data``, else synthetic scenes, else the
    checkpoint's dataset (its val split). Returns the samples and where they came from."""
    if verify_data:
        return load_samples(verify_data, split="val", count=count, input_hw=input_hw, labels=False, flag="--verify-data")
    try:
        from perception.synthetic import render_scene
    except ImportError:
        render_scene = None
    if render_scene is not None:
        from perception.options import synthetic_hw_near

        # Drawn at the model's size where the synthetic world can draw it, else at the nearest size it
        # can, and letterboxed like any frame: a model input of 32x64 is verified too.
        h, w = synthetic_hw_near(input_hw)
        samples = [render_scene(1_000_000 + i, height=h, width=w) for i in range(count)]
        return [resize_sample(img, lab, input_hw) for img, lab in samples], "synthetic scenes"
    if checkpoint_dataset:
        return load_samples(checkpoint_dataset, split="val", count=count, input_hw=input_hw, labels=False)
    raise DataError("no images to verify the export on; pass --verify-data SPEC (e.g. camvid:/data/camvid)")


def ort_session(model: str | Path | onnx.ModelProto, *, threads: int = 0):
    """A CPU ONNX Runtime session for a path or an in-memory model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        raise ModelError(f"ONNX Runtime cannot load the exported model: {str(exc).splitlines()[0][:300]}") from None


@dataclass(frozen=True)
class VerifyReport:
    """Figures of the ONNX Runtime vs PyTorch comparison."""

    images: int
    source: str
    logits_max_abs: float
    logits_max_rel: float
    logits_tol: float
    logits_within_tol: float
    logits_within_tol_fp32: float
    argmax_agreement: float
    decisive_agreement: float
    tie_pixels: int
    confidence_max_diff: int | None
    confidence_within_one: float | None
    passed: bool

    def lines(self) -> list[str]:
        verdict = "PASS" if self.passed else "FAIL"
        out = [
            f"verify {verdict}: ONNX Runtime vs PyTorch on {self.images} images ({self.source})",
            f"  logits max |diff| {self.logits_max_abs:.2e} (relative {self.logits_max_rel:.2e}), "
            f"tolerance {self.logits_tol:.2e} met by {100 * self.logits_within_tol:.3f} % of values "
            f"(gate >= {100 * MIN_LOGITS_WITHIN_TOL:.1f} %); directly by PyTorch float32 on "
            f"{100 * self.logits_within_tol_fp32:.3f} %, the rest are near-tie flips where ONNX Runtime "
            "matches float64 PyTorch",
            f"  class ids agree on {100 * self.argmax_agreement:.3f} % of pixels, "
            f"{100 * self.decisive_agreement:.3f} % outside {self.tie_pixels} near-tie pixels "
            f"(gate >= {100 * MIN_ARGMAX_AGREEMENT:.1f} %)",
        ]
        if self.confidence_max_diff is not None:
            out.append(
                f"  confidence max |diff| {self.confidence_max_diff}, within 1 on "
                f"{100 * self.confidence_within_one:.3f} % of pixels (gate >= {100 * MIN_CONFIDENCE_WITHIN_ONE:.1f} %)"
            )
        return out


def verify_onnx(wrapper, proto: onnx.ModelProto, samples: list[Sample], *, source: str = "images") -> VerifyReport:
    """Compare the exported graph ``proto`` with ``wrapper`` (export.onnx.ExportWrapper) on ``samples``.

    Returns a VerifyReport; ``passed`` is False when fewer than MIN_LOGITS_WITHIN_TOL of the logits
    agree (see the comment above LOGITS_ABS_TOL), the decisive argmax agreement is below
    MIN_ARGMAX_AGREEMENT, or fewer than MIN_CONFIDENCE_WITHIN_ONE of the confidences are within one
    step.
    """
    import torch

    from perception.export.graph import LOGITS_OUTPUT, with_logits_output

    if not samples:
        raise DataError("no images to verify the export on")
    session = ort_session(with_logits_output(proto))
    output_names = [o.name for o in session.get_outputs()]
    runs = []  # (image batch, ORT outputs, PyTorch float32 logits)
    for image, _ in samples:
        batch = image[None]  # 1 x H x W x 3 uint8 BGR
        outputs = dict(zip(output_names, session.run(None, {INPUT_NAME: batch}), strict=True))
        with torch.no_grad():
            ref_logits = wrapper.logits(torch.from_numpy(batch)).numpy()
        if outputs[LOGITS_OUTPUT].shape != ref_logits.shape:
            raise ModelError(f"exported logits have shape {outputs[LOGITS_OUTPUT].shape}, PyTorch gives {ref_logits.shape}")
        runs.append((batch, outputs, ref_logits))
    max_ref = max(float(np.abs(ref).max()) for _, _, ref in runs)
    tol = LOGITS_ABS_TOL + LOGITS_REL_TOL * max_ref
    wrapper64 = None
    max_abs = 0.0
    agree = decisive_agree = total = ties = 0
    logits_ok = logits_ok_fp32 = logits_total = 0
    conf_close = conf_total = 0
    conf_diff: int | None = None
    lut = wrapper.confidence.pool_lut
    pool = None if lut is None else lut.numpy()
    for batch, outputs, ref_logits in runs:
        ort_logits = outputs[LOGITS_OUTPUT]
        diff = np.abs(ort_logits - ref_logits)
        max_abs = max(max_abs, float(diff.max()))
        close = diff <= tol
        logits_ok_fp32 += int(close.sum())
        ref64 = None
        if not close.all():  # arbitrate the values beyond the tolerance with float64 PyTorch
            wrapper64 = wrapper64 if wrapper64 is not None else _float64_copy(wrapper)
            if wrapper64 is not None:
                with torch.no_grad():
                    ref64 = wrapper64.logits(torch.from_numpy(batch)).numpy()
                close |= np.abs(ort_logits - ref64) <= tol
        logits_ok += int(close.sum())
        logits_total += close.size
        ref_ids = ref_logits.argmax(axis=1)
        same = outputs[OUTPUT_CLASS_IDS].astype(np.int64) == ref_ids
        top2 = np.sort(ref_logits, axis=1)[:, -2:]  # N x 2 x H x W
        decisive = (top2[:, 1] - top2[:, 0]) > tol
        agree += int(same.sum())
        decisive_agree += int(same[decisive].sum())
        ties += int((~decisive).sum())
        total += same.size
        if OUTPUT_CONFIDENCE in outputs:
            conf = outputs[OUTPUT_CONFIDENCE].astype(np.int64)
            conf_abs = np.abs(conf - _confidence(ref_logits, pool))
            conf_diff = max(conf_diff or 0, int(conf_abs.max()))
            conf_ok = conf_abs <= 1
            if ref64 is not None:
                conf_ok |= np.abs(conf - _confidence(ref64, pool)) <= 1
            conf_close += int(conf_ok.sum())
            conf_total += conf_ok.size
    decisive_total = total - ties
    decisive_share = decisive_agree / decisive_total if decisive_total else 1.0
    within = logits_ok / logits_total
    conf_share = conf_close / conf_total if conf_total else None
    passed = (
        within >= MIN_LOGITS_WITHIN_TOL
        and decisive_share >= MIN_ARGMAX_AGREEMENT
        and (conf_share is None or conf_share >= MIN_CONFIDENCE_WITHIN_ONE)
    )
    return VerifyReport(
        images=len(samples),
        source=source,
        logits_max_abs=max_abs,
        logits_max_rel=max_abs / max_ref if max_ref else 0.0,
        logits_tol=tol,
        logits_within_tol=within,
        logits_within_tol_fp32=logits_ok_fp32 / logits_total,
        argmax_agreement=agree / total,
        decisive_agreement=decisive_share,
        tie_pixels=ties,
        confidence_max_diff=conf_diff,
        confidence_within_one=conf_share,
        passed=passed,
    )


def _float64_copy(wrapper):
    """A float64 copy of ``wrapper`` (the arbiter for near-tie flips), or None when the model
    cannot run in float64 (then only the float32 comparison counts)."""
    import copy

    try:
        return copy.deepcopy(wrapper).double().eval()
    except (RuntimeError, TypeError) as exc:  # a module with float32-only state
        log.info("no float64 reference for the export gate (%s); comparing with float32 only", exc)
        return None


def _confidence(logits: np.ndarray, pool: np.ndarray | None = None) -> np.ndarray:
    """uint8 confidence as the graph computes it, as int64: round(255 * max softmax), or of the
    pool's summed softmax where a ``pool`` class (bool per class) wins (contracts.confidence_pool)."""
    prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    top = prob.max(axis=1)
    if pool is not None:
        top = np.where(pool[logits.argmax(axis=1)], prob[:, pool].sum(axis=1), top)
    return np.round(top / prob.sum(axis=1) * 255.0).astype(np.int64)


def evaluate_onnx(model: str | Path | onnx.ModelProto, samples: list[Sample], class_table: ClassTable) -> ConfusionMatrix:
    """Confusion matrix of an exported model's class ids over labelled ``samples``."""
    session = ort_session(model)
    matrix = ConfusionMatrix(class_table.num_classes, ignore_id=class_table.ignore_id)
    for image, label in samples:
        if label is None:
            raise DataError("evaluation needs labelled images; pass a dataset with labels")
        class_ids = session.run([OUTPUT_CLASS_IDS], {INPUT_NAME: image[None]})[0][0]
        matrix.update(class_ids, label)
    return matrix
