"""The NNCF quantiser of ``quantize.py``: OpenVINO NNCF post-training quantisation of the ONNX graph,
with NNCF's accuracy control when asked (see ``quantize.py``'s docstring for both).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from perception.contracts import INPUT_NAME
from perception.engines.base import backend_error_text
from perception.errors import DependencyError, ModelError, PerceptionError
from perception.export.qdq import io_nodes_to_exclude, name_all_nodes
from perception.model_metadata import ModelMetadata


@dataclass(frozen=True)
class AccuracyControl:
    """Labelled images and the mIoU budget of ``nncf.quantize_with_accuracy_control`` (module docstring).

    Attributes:
        samples: (uint8 BGR image, label) pairs at the model's input size, not the gate's images,
            labelled with the model's class table (the CLI checks it: ``int8_gate.check_gate_classes``).
        max_drop_points: the largest mIoU loss (points, 0..100) the search accepts on ``samples``.
        ranking_count: images NNCF ranks the quantised layers on (the first ones of ``samples``).
    """

    samples: list
    max_drop_points: float = 0.4
    ranking_count: int = 30


def class_id_runner(model: onnx.ModelProto):
    """``image -> class ids`` for an in-memory model: OpenVINO at f32 when installed (its VNNI/AMX
    INT8 kernels ran the default model's QDQ graph about 6x faster than ONNX Runtime's on the
    2-core Xeon, and accuracy control scores dozens of candidate models), else ONNX Runtime."""
    from perception.contracts import OUTPUT_CLASS_IDS

    try:
        from perception.engines.openvino import shared_core
        core = shared_core()
    except (ImportError, DependencyError):
        from perception.export.verify import ort_session

        session = ort_session(model)
        return lambda image: session.run([OUTPUT_CLASS_IDS], {INPUT_NAME: image[None]})[0][0]
    with tempfile.TemporaryDirectory(prefix="perception-ac-") as tmp:
        path = Path(tmp) / "candidate.onnx"
        onnx.save(model, str(path))
        compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    def run(image: np.ndarray) -> np.ndarray:
        request.infer({0: image[None]})
        return request.get_tensor(OUTPUT_CLASS_IDS).data[0].copy()

    return run


def miou_validation_fn(class_table):
    """NNCF's ``validation_fn`` for ONNX models: ``(model, items) -> (mIoU, per-image mIoU)``.

    The per-image values let NNCF rank layers by the metric itself, with one compiled model per
    call (NNCF calls it once per candidate model on the whole set, or the ranking subset).
    """
    from perception.metrics import ConfusionMatrix

    def validate(model: onnx.ModelProto, items) -> tuple[float, list[float]]:
        run = class_id_runner(model)
        total = ConfusionMatrix(class_table.num_classes, ignore_id=class_table.ignore_id)
        per_image = []
        for image, label in items:
            class_ids = run(image)
            one = ConfusionMatrix(class_table.num_classes, ignore_id=class_table.ignore_id)
            one.update(class_ids, label)
            total.merge(one)
            per_image.append(one.miou())
        return total.miou(), per_image

    return validate


def nncf_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("nncf") is not None


def quantize_nncf(
    fp32_path: Path, calib_images: list[np.ndarray], metadata: ModelMetadata, accuracy_control: AccuracyControl | None,
    overflow_fix: str,
) -> onnx.ModelProto:
    """NNCF post-training quantisation of the ONNX graph at ``fp32_path``, with accuracy control
    when asked (see module docstring)."""
    if not logging.getLogger("perception").isEnabledFor(logging.DEBUG):
        # NNCF imports torch.utils.cpp_extension, whose import warns "No CUDA runtime is found" on
        # every CPU machine with a CUDA_HOME: noise between the tool's figures. -vv shows it again.
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import nncf

    if not logging.getLogger("perception").isEnabledFor(logging.DEBUG):
        # NNCF narrates at INFO on its own handler (which nodes it leaves float, line by line); the
        # export prints what matters. -vv shows it again.
        nncf.set_log_level(logging.WARNING)
    from nncf.quantization.advanced_parameters import (
        AdvancedAccuracyRestorerParameters,
        AdvancedQuantizationParameters,
        OverflowFix,
    )

    proto = onnx.load(str(fp32_path))
    name_all_nodes(proto)
    dataset = nncf.Dataset(calib_images, lambda image: {INPUT_NAME: image[None]})
    common = {
        "subset_size": len(calib_images),
        "preset": nncf.QuantizationPreset.PERFORMANCE,  # symmetric weights and activations where it can
        "ignored_scope": nncf.IgnoredScope(names=io_nodes_to_exclude(proto), validate=False),
    }
    fixes = {"enable": OverflowFix.ENABLE, "first_layer": OverflowFix.FIRST_LAYER, "disable": OverflowFix.DISABLE}
    advanced = AdvancedQuantizationParameters(overflow_fix=fixes[overflow_fix])
    try:
        if accuracy_control is None:
            return nncf.quantize(proto, dataset, advanced_parameters=advanced, **common)
        return nncf.quantize_with_accuracy_control(
            proto,
            dataset,
            nncf.Dataset(accuracy_control.samples, lambda sample: {INPUT_NAME: sample[0][None]}),
            miou_validation_fn(metadata.class_table),
            max_drop=accuracy_control.max_drop_points / 100.0,  # mIoU is a 0..1 fraction here
            drop_type=nncf.DropType.ABSOLUTE,
            advanced_quantization_parameters=advanced,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                ranking_subset_size=min(accuracy_control.ranking_count, len(accuracy_control.samples)),
            ),
            **common,
        )
    except PerceptionError:
        raise  # the accuracy control's own checks
    except Exception as exc:  # NNCF raises its own types, and plain AttributeErrors on graphs it cannot follow
        raise ModelError(f"INT8 quantisation (nncf) of {fp32_path} failed ({type(exc).__name__}: "
                         f"{backend_error_text(exc)}); python -m perception.export.quantize --quantizer ort may "
                         "quantise it; check the file with perception inspect") from exc
