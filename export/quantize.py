"""Step 3 of the export chain: an INT8 model for CPUs, gated on accuracy and measured for speed.

Two quantisers write the same kind of file (a QDQ ONNX with the perception metadata, precision
``int8``), calibrated on real images (``CalibrationImages``):

- ``nncf`` (default when installed): OpenVINO NNCF post-training quantisation of the ONNX graph
  (per-channel symmetric INT8 weights, unsigned activations, fast bias correction). Its QDQ
  placement is the one OpenVINO's CPU plugin fuses into VNNI/AMX INT8 kernels, and ONNX Runtime
  runs it too.
- ``ort``: ONNX Runtime ``quantize_static`` (QDQ, per-channel INT8 weights). Activations are
  **unsigned** (QUInt8, asymmetric): the previous signed asymmetric activations (zero point -128
  after every ReLU) made OpenVINO's CPU plugin fail with "No suitable implementations" in bf16/
  default mode, and were slower in ONNX Runtime too. ``symmetric_activations`` (zero point 0,
  signed) is what TensorRT's explicit INT8 needs and is always done by ``ort``. One tensor kind is
  symmetric (signed, zero point 0) either way: the input of an average pool that counts its
  padding in, which OpenVINO would pad with the 8-bit 0 instead of the zero point
  (``qdq.padded_pool_inputs``; such BiSeNetV2 files agreed with FP32 on 63 % of pixels there).

**7-bit weights** (``overflow_fix``, default ``enable`` on the CPU): x86 CPUs without VNNI (AVX2 or
AVX-512 only: older Xeons, AMD EPYC before Zen 4) multiply u8 x s8 with VPMADDUBSW, whose 16-bit
sum of two products saturates once a weight passes 64 in magnitude (OpenVINO's "saturation issue",
NNCF's ``OverflowFix``). With every dense convolution and matmul weight in -64..64 (ONNX Runtime's
``reduce_range``; NNCF leaves grouped non-depthwise convolutions out, ``saturation_safe`` tells),
the sums fit, so the 8-bit products sum the same with and without VNNI and a gate passed on one CPU
should hold on the other. Measured on a 2-core AMD EPYC (AVX2) with the default
model and the same accuracy control: NNCF's own default (``first_layer``) lost 1.15 mIoU there
(class ids 96.44 % equal to FP32), ``enable`` lost 0.11 (99.13 %); on a Xeon with VNNI the first
lost 0.14. TensorRT's INT8 (``symmetric_activations``) has no such sum and keeps 8-bit weights.

The uint8 pre-processing (cast, channel swap, normalisation) and the argmax/confidence tail stay
in float in both: quantising them gains nothing and the argmax over quantised logits would tie.
The gate (``int8_gate.py``): validation mIoU may drop at most ``MAX_MIOU_DROP_POINTS`` below
FP32, and the CPU speed-up is measured (median latency of ONNX Runtime FP32 vs INT8). The NNCF
quantiser and its accuracy control live in ``nncf_quant.py``, the graph helpers both quantisers
share in ``qdq.py``; this module holds the ONNX Runtime quantiser, ``quantize_int8`` and the CLI.

**Accuracy control** (``nncf`` only, ``AccuracyControl``): when plain post-training quantisation
loses too much, ``nncf.quantize_with_accuracy_control`` quantises the same way, scores FP32 and INT8
on a labelled *accuracy-control set* with the gate's metric (mIoU), ranks the quantised layers by
how much each costs and returns them to float one at a time until the drop is at most
``max_drop_points``. The accuracy-control set must not be the gate's validation set (the CLI
refuses the same spec), so the gate still judges the file on images the search never saw.

Both labelled sets (the gate's ``--val-data``, default ``--calib``, and ``--accuracy-control``) must
label the model's classes, as ``perception eval`` requires (``int8_gate.check_gate_classes``, checked
before any calibration); the calibration images need no labels and may come from any dataset.

Run through ``perception export --int8 --calib SPEC``, or for an already exported model::

    python -m perception.export.quantize model.onnx --calib synthetic --val-data synthetic   # writes model.int8.onnx
    python -m perception.export.quantize model.onnx --calib synthetic --val-data synthetic \
        --accuracy-control synthetic:seed=1          # layers that cost mIoU on seed-1 scenes stay float
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from perception.contracts import INPUT_NAME
from perception.errors import TRAIN_INSTALL_HINT, ConfigError, DataError, ModelError
from perception.export import DEFAULT_GATE_IMAGES, ToolParser
from perception.export.int8_gate import (  # noqa: F401 (re-exported)
    MAX_MIOU_DROP_POINTS,
    Int8Report,
    check_gate_classes,
    check_gate_labels,
    gate_int8,
    val_data_fix,
)
from perception.export.nncf_quant import (  # noqa: F401 (re-exported)
    AccuracyControl,
    miou_validation_fn,
    nncf_available,
    quantize_nncf,
)
from perception.export.qdq import (
    ORT_ERRORS,
    float_weighted_layers,
    io_nodes_to_exclude,
    name_all_nodes,
    padded_pool_inputs,
)
from perception.model_metadata import ModelMetadata

log = logging.getLogger(__name__)

#: NNCF's overflow fixes (``nncf.OverflowFix``): which weights keep half the 8-bit range (see the
#: module docstring). ``enable``: every convolution, transposed convolution and matmul, except
#: grouped convolutions that are not depthwise, which NNCF leaves at the full range (ONNX Runtime's
#: ``reduce_range`` covers them: ``--quantizer ort``); ``first_layer``: the first convolution only
#: (NNCF's default); ``disable``: none. The ort quantiser has ``enable`` and ``disable``.
OVERFLOW_FIXES = ("enable", "first_layer", "disable")
#: Quantisers ``quantize_int8`` knows (``auto``: nncf when installed, else ort).
QUANTIZERS = ("auto", "nncf", "ort")
#: Most images ``--calib-count``, ``--val-count`` and ``--ac-count`` take (``perception export``'s bound).
MAX_COUNT = 10000


class CalibrationImages(CalibrationDataReader):
    """Feeds uint8 BGR images (already at the model's input size) one at a time to the calibrator."""

    def __init__(self, images: list[np.ndarray]) -> None:
        if not images:
            raise DataError("INT8 calibration needs at least one image; check --calib and --calib-count")
        self._images = images
        self._iter: Iterator[np.ndarray] = iter(images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self._iter, None)
        return None if image is None else {INPUT_NAME: image[None]}

    def rewind(self) -> None:
        self._iter = iter(self._images)


def resolve_quantizer(quantizer: str, *, symmetric_activations: bool = False, accuracy_control: bool = False) -> str:
    """The quantiser ``auto`` stands for: NNCF when it is installed (unsigned activations), else
    ONNX Runtime's; accuracy control needs NNCF, symmetric activations (TensorRT) ONNX Runtime's."""
    if quantizer != "auto":
        return quantizer
    return "ort" if (symmetric_activations or not nncf_available()) and not accuracy_control else "nncf"


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calib_images: list[np.ndarray],
    *,
    metadata: ModelMetadata,
    symmetric_activations: bool = False,
    method: str = "minmax",
    quantizer: str = "auto",
    accuracy_control: AccuracyControl | None = None,
    overflow_fix: str | None = None,
) -> Path:
    """Quantise the FP32 ONNX at ``fp32_path`` to a QDQ INT8 model at ``out_path``.

    Args:
        calib_images: uint8 BGR images at the model's input size.
        metadata: the FP32 model's metadata; stored again with ``precision="int8"``.
        symmetric_activations: zero-point-0 activations, as TensorRT's explicit INT8 needs (ort only).
        method: calibration method of the ort quantiser, ``minmax``, ``entropy`` or ``percentile``.
        quantizer: ``nncf``, ``ort`` or ``auto`` (nncf when installed and the activations need not
            be symmetric, else ort).
        accuracy_control: run NNCF's accuracy-controlled quantisation on these labelled images
            (nncf only; see ``AccuracyControl``).
        overflow_fix: one of OVERFLOW_FIXES; default ``enable`` (7-bit weights, the same results
            with and without VNNI), ``disable`` with ``symmetric_activations`` (TensorRT).

    Raises:
        ModelError: the quantiser fails; DataError: no calibration images, one not at the model's
            input size, or unlabelled accuracy-control images; ConfigError: accuracy control asked
            of the ort quantiser or without nncf, or ``first_layer`` of the ort quantiser.
    """
    from perception.export.graph import finish_model, with_precision
    from perception.modelfile import save_model

    h, w = metadata.input_hw
    for i, image in enumerate(calib_images):
        if image.shape != (h, w, 3):
            size = "x".join(str(d) for d in image.shape[:2])
            raise DataError(
                f"calibration image {i} is {size}, the model input is {h}x{w}; resize it first "
                "(export.verify.load_samples does)"
            )

    if quantizer not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {quantizer!r}; known: {', '.join(QUANTIZERS)}")
    quantizer = resolve_quantizer(quantizer, symmetric_activations=symmetric_activations,
                                  accuracy_control=accuracy_control is not None)
    if overflow_fix is None:
        overflow_fix = "disable" if symmetric_activations else "enable"
    if overflow_fix not in OVERFLOW_FIXES:
        raise ValueError(f"unknown overflow fix {overflow_fix!r}; known: {', '.join(OVERFLOW_FIXES)}")
    if quantizer == "nncf" and not nncf_available():
        raise ConfigError(f"the nncf quantiser needs NNCF (in the train extra): {TRAIN_INSTALL_HINT}; or pass --quantizer ort")
    if overflow_fix == "first_layer" and quantizer == "ort":
        raise ConfigError("--overflow-fix first_layer needs the nncf quantiser; the ort quantiser has enable "
                          "(7-bit weights everywhere) and disable")
    if accuracy_control is not None:
        if quantizer != "nncf" or symmetric_activations:
            raise ConfigError("INT8 accuracy control needs the nncf quantiser (unsigned activations); "
                              "drop --quantizer ort or the accuracy-control set")
        if not nncf_available():
            raise ConfigError(f"INT8 accuracy control needs NNCF (in the train extra): {TRAIN_INSTALL_HINT}")
        _check_samples(accuracy_control.samples, (h, w), what="accuracy-control")
    if quantizer == "nncf":
        result = quantize_nncf(Path(fp32_path), calib_images, metadata, accuracy_control, overflow_fix)
        result = finish_model(result, with_precision(metadata, "int8"), source=f"{fp32_path} quantised (nncf)")
        save_model(result, out_path)
        return Path(out_path)

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    reader = CalibrationImages(calib_images)
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="perception-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quantized = Path(tmp) / "quantized.onnx"
        try:
            # ONNX shape inference + ORT graph optimisations (Conv/BN fusion), as the quantiser docs advise;
            # the symbolic pass is skipped: the graph is static and it mishandles opset-18 Unsqueeze.
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            proto = onnx.load(str(prepared))
            name_all_nodes(proto)
            onnx.save(proto, str(prepared))
            extra_options = {"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True}
            if not symmetric_activations:
                # A pool that averages its padding in: signed symmetric (zero point 0), so that
                # OpenVINO pads it as ONNX does (qdq.padded_pool_inputs); the rest stays unsigned.
                extra_options["TensorQuantOverrides"] = {
                    name: [{"quant_type": QuantType.QInt8, "symmetric": True}] for name in padded_pool_inputs(proto)
                }
            quantize_static(
                str(prepared),
                str(quantized),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=io_nodes_to_exclude(proto),
                calibrate_method=methods[method],
                reduce_range=overflow_fix == "enable",
                extra_options=extra_options,
            )
            result = onnx.load(str(quantized))
        except (RuntimeError, ValueError, onnx.checker.ValidationError, *ORT_ERRORS) as exc:
            raise ModelError(f"INT8 quantisation failed: {str(exc).splitlines()[0][:300]}") from exc
    result = finish_model(result, with_precision(metadata, "int8"), source=f"{fp32_path} quantised (ort)")
    save_model(result, out_path)
    return out_path


def _check_samples(samples: list, input_hw: tuple[int, int], *, what: str) -> None:
    """DataError unless ``samples`` are labelled (image, label) pairs at ``input_hw``."""
    if not samples:
        raise DataError(f"the INT8 {what} set is empty; check its dataset spec and count")
    for i, (image, label) in enumerate(samples):
        if label is None:
            raise DataError(f"INT8 {what} image {i} has no label; pass a labelled dataset")
        if image.shape[:2] != tuple(input_hw) or label.shape != tuple(input_hw):
            raise DataError(f"INT8 {what} image {i} is not at the model input size {input_hw[0]}x{input_hw[1]}")


def main(argv: list[str] | None = None) -> int:
    """``python -m perception.export.quantize MODEL.onnx``: write and gate ``MODEL.int8.onnx`` from an exported
    FP32 model (no checkpoint or torch needed). Exit 0 when the gate passes, 1 when it fails, 2 on
    a bad input."""
    from perception.engines.base import INT8_SUFFIX
    from perception.errors import PerceptionError
    from perception.modelfile import check_model_path, read_model_metadata

    parser = ToolParser("quantize", label="export.quantize", description=main.__doc__)
    parser.add_argument("model", type=Path, help="exported FP32 .onnx")
    parser.add_argument("--out", type=Path, help=f"INT8 file (default: MODEL{INT8_SUFFIX} beside the model)")
    parser.add_argument("--calib", default="synthetic", help="calibration images: a dataset spec (train split), a video file or an image folder (default synthetic)")
    parser.add_argument("--calib-count", type=int, default=64, help="calibration images (default 64)")
    parser.add_argument("--val-data", help="dataset spec for the mIoU gate, val split (default: --calib)")
    parser.add_argument("--val-count", type=int, default=DEFAULT_GATE_IMAGES,
                        help=f"validation images for the gate (default {DEFAULT_GATE_IMAGES}, as export --int8)")
    parser.add_argument("--quantizer", choices=QUANTIZERS, default="auto", help="auto (nncf when installed), nncf, ort")
    parser.add_argument("--allow-int8-drop", action="store_true", help="keep the file even if it misses the mIoU budget")
    parser.add_argument("--gate-only", action="store_true",
                        help="gate (and record the gate in) an existing INT8 file instead of quantising again")
    parser.add_argument("--accuracy-control", metavar="SPEC",
                        help="labelled dataset spec (val split) for NNCF's accuracy-controlled quantisation: layers "
                             "that cost mIoU there stay float; must differ from --val-data (nncf only)")
    parser.add_argument("--ac-count", type=int, default=100, help="accuracy-control images (default 100)")
    parser.add_argument("--ac-max-drop", type=float, default=0.4,
                        help="mIoU points the accuracy control may lose on its own images (default 0.4, under the "
                             f"gate's {MAX_MIOU_DROP_POINTS} on --val-data)")
    parser.add_argument("--overflow-fix", choices=OVERFLOW_FIXES, default="enable",
                        help="8-bit weights kept within 7 bits: enable (every dense layer; the default: the same "
                             "results on CPUs with and without VNNI), first_layer (NNCF's default), disable")
    args = parser.parse_args(argv)
    from perception.export import (
        check_model_runs,
        check_out,
        make_folder,
        move_into_place,
        remove_folders,
        same_file,
        temp_beside,
    )
    from perception.export.verify import load_samples

    staged, created = None, []
    try:
        for flag, value in (("--calib-count", args.calib_count), ("--val-count", args.val_count),
                            ("--ac-count", args.ac_count)):
            if not 1 <= value <= MAX_COUNT:
                raise ConfigError(f"{flag} {value} is out of range [1, {MAX_COUNT}]")
        out = args.out or args.model.with_name(args.model.name.removesuffix(".onnx") + INT8_SUFFIX)
        if out.suffix != ".onnx" or not out.name:
            raise ConfigError(f"--out {str(out) or repr('')} must name an .onnx file (e.g. "
                              f"{args.model.name.removesuffix('.onnx')}{INT8_SUFFIX})")
        if same_file(out, args.model):
            link = " (through a link)" if out.is_symlink() or args.model.is_symlink() else ""
            raise ConfigError(f"--out {out} is the model {args.model} itself{link}: the INT8 file would overwrite its FP32 "
                              f"model; choose another --out (default: {args.model.name.removesuffix('.onnx')}{INT8_SUFFIX})")
        check_model_path(args.model)  # first: a FIFO would block the reader below
        metadata = read_model_metadata(args.model)
        if metadata.precision == "int8" and not args.gate_only:
            raise ConfigError(f"{args.model.name} is already INT8; quantise its FP32 model (the .onnx without .int8)")
        if not args.gate_only:
            check_out(out)  # before minutes of calibration, not after
            # The node's first inference before any work: a graph that cannot run, or runs to other
            # shapes than it declares, is one line here, not a traceback from the quantiser or ONNX.
            check_model_runs(args.model)
        else:  # the INT8 file to gate, before the gate's images are read
            if not out.exists() and not out.is_symlink():
                raise ConfigError(f"--gate-only: {out} does not exist; quantise the model first (drop --gate-only), "
                                  "or name the INT8 file with --out")
            check_model_path(out)  # a folder, a FIFO, a link loop: one line, before it is read
            if read_model_metadata(out).precision != "int8":
                raise ConfigError(f"--gate-only: {out} is not an INT8 model; quantise it first (drop --gate-only)")
        val_spec = args.val_data or args.calib
        control = None
        if args.accuracy_control:
            if args.accuracy_control.strip() == val_spec.strip():
                raise ConfigError(f"--accuracy-control {args.accuracy_control!r} is the gate's --val-data: the "
                                  "gate must judge images the search never saw; give another seed or dataset")
            if not 0 <= args.ac_max_drop <= MAX_MIOU_DROP_POINTS:
                raise ConfigError(f"--ac-max-drop {args.ac_max_drop} must be within 0..{MAX_MIOU_DROP_POINTS} (the gate's budget)")
        # The gate's images (labels of the model's class table, as perception eval's; calibration
        # needs none, so --calib may be any dataset) before minutes of calibration: a bad or
        # mismatched --val-data fails first, and --gate-only leaves the INT8 file untouched.
        gate_flag = "--val-data" if args.val_data else "--val-data (default: --calib)"
        gate_fix = val_data_fix(val_data=args.val_data, calib=args.calib, trained_on=metadata.dataset)
        gate_classes = partial(check_gate_classes, metadata.class_table, model=str(args.model), flag=gate_flag,
                               fix=gate_fix)
        val, source = load_samples(val_spec, split="val", count=args.val_count, input_hw=metadata.input_hw,
                                   check=gate_classes, flag=gate_flag, fix=gate_fix)
        check_gate_labels(val, metadata.class_table, spec=val_spec,
                          fix="or give the gate labelled images: --val-data SPEC")
        if args.accuracy_control:  # NNCF scores its candidates on these labels: the same check
            trained = f" ({metadata.dataset})" if metadata.dataset else ""
            ac_classes = partial(
                check_gate_classes, metadata.class_table, model=str(args.model), flag="--accuracy-control",
                what="INT8 accuracy control",
                fix=f"pass --accuracy-control SPEC naming labelled images of the dataset the model was trained "
                    f"for{trained}, other than --val-data's",
            )
            samples, _ = load_samples(args.accuracy_control, split="val", count=args.ac_count,
                                      input_hw=metadata.input_hw, check=ac_classes, flag="--accuracy-control")
            check_gate_labels(samples, metadata.class_table, spec=args.accuracy_control, what="INT8 accuracy control",
                              fix="or pass --accuracy-control SPEC naming labelled images")
            control = AccuracyControl(samples, max_drop_points=args.ac_max_drop)
        if args.gate_only:  # re-gate an existing INT8 file (and record the gate in it)
            judged = out  # checked above
        else:
            calib, _ = load_samples(args.calib, split="train", count=args.calib_count, input_hw=metadata.input_hw,
                                    labels=False, flag="--calib")
            created = make_folder(out.parent)
            staged = judged = temp_beside(out)  # renamed onto --out only with the gate's verdict
            start = time.perf_counter()
            quantize_int8(args.model, staged, [image for image, _ in calib], metadata=metadata, quantizer=args.quantizer,
                          accuracy_control=control, overflow_fix=args.overflow_fix)
            how = ""
            if control:
                kept, total = float_weighted_layers(onnx.load(str(staged)))
                how = (f", accuracy control on {len(control.samples)} images of {args.accuracy_control} "
                       f"(budget {control.max_drop_points:g} points; {kept} of {total} weighted layers float)")
            used = resolve_quantizer(args.quantizer, accuracy_control=control is not None)
            which = f"{used} quantiser" + (" (auto)" if args.quantizer == "auto" else "")
            print(f"int8: {which}, overflow fix {args.overflow_fix}, {len(calib)} calibration images of {args.calib}{how}, "
                  f"{time.perf_counter() - start:.1f} s ({staged.stat().st_size / 1e6:.2f} MB)")
        report = gate_int8(args.model, judged, val, metadata, allow_drop=args.allow_int8_drop)
        keep = report.passed or args.allow_int8_drop
        if staged is not None and keep:
            move_into_place(staged, out)
            staged = None
    except BaseException as exc:
        if staged is not None:  # a failure or Ctrl-C before the gate's verdict: no ungated INT8 model stays
            staged.unlink(missing_ok=True)
            remove_folders(created)
        if isinstance(exc, KeyboardInterrupt):
            print("export.quantize: interrupted; no INT8 file written, the files there before are left as they were",
                  file=sys.stderr)
            return 130
        if not isinstance(exc, PerceptionError):
            raise
        print(f"export.quantize: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"validated on {source}")
    for line in report.lines():
        print(line)
    if not keep:
        if staged is not None:
            staged.unlink(missing_ok=True)
            remove_folders(created)
        hint = ("" if args.accuracy_control else
                "; --accuracy-control SPEC (labelled images other than --val-data) keeps the layers that cost mIoU float")
        from perception.engines.cpu import int8_gate_hint

        what = (f"{out.name} removed" if args.gate_only else f"{out} not written"
                + ("; the file there before is left as it was" if out.exists() else ""))
        if args.gate_only:
            out.unlink(missing_ok=True)
        print(f"export.quantize: error: mIoU drop over budget; {what}{hint}{int8_gate_hint(report.saturation_safe)}",
              file=sys.stderr)
        return 1
    if not args.gate_only:
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
