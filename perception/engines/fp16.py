"""FP16 ONNX for TensorRT 11's strongly typed networks, checked against FP32 on the CPU.

TensorRT 11 removed ``BuilderFlag.FP16``: a network runs in the types its ONNX graph says, so an
FP16 engine needs an FP16 graph. NVIDIA's migration guide points to ModelOpt AutoCast
(https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-patterns.html),
but ``nvidia-modelopt[onnx]`` pins onnx 1.21 and pulls onnxruntime-gpu, which would replace the
onnx and onnxruntime the node runs on. So this uses onnxconverter-common's
``float16.convert_float_to_float16`` (the converter ModelOpt itself depends on), with:

- ``keep_io_types=True`` and our contract's uint8 ``image`` input and uint8 ``class_ids`` /
  ``confidence`` outputs, which the converter leaves alone (it converts float tensors only);
- the input Cast (uint8 -> float) kept as it is, with a float->float16 Cast after it: the converter
  retypes the Cast's output but not its ``to`` attribute, which ONNX Runtime rejects;
- its default block list (Resize and friends stay float32 between Casts).

``check_fp16`` runs both graphs with ONNX Runtime on the CPU over synthetic road scenes and
reports the share of pixels whose class id agrees, so a conversion that breaks the model is
caught before a GPU spends minutes building an engine from it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx

from perception.contracts import INPUT_NAME, OUTPUT_CLASS_IDS
from perception.errors import GPU_INSTALL_HINT, DependencyError, ModelError

log = logging.getLogger(__name__)

#: Class ids of the FP16 graph must agree with FP32 on at least this share of pixels.
MIN_FP16_AGREEMENT = 0.99


def convert_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """An FP16 copy of ``model`` with the uint8 input and integer outputs unchanged.

    Raises:
        DependencyError: onnxconverter-common is not installed. ModelError: the converted graph
        fails ``onnx.checker``.
    """
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise DependencyError(
            f"FP16 engines on TensorRT 11 need onnxconverter-common: {GPU_INSTALL_HINT}"
        ) from None
    model = onnx.ModelProto.FromString(model.SerializeToString())  # a copy: nodes get named below
    for index, node in enumerate(model.graph.node):  # the block list matches by name; ours are unique
        if not node.name:
            node.name = f"{node.op_type.lower()}_{index}"
    keep_float_casts = [
        node.name
        for node in model.graph.node
        if node.op_type == "Cast" and node.input and node.input[0] == INPUT_NAME
    ]
    converted = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=keep_float_casts)
    try:
        onnx.checker.check_model(converted)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"the FP16 conversion produced an invalid ONNX graph: {str(exc)[:300]}") from None
    return converted


@dataclass(frozen=True)
class Fp16Check:
    """How the FP16 graph's class ids compare with FP32's on the CPU."""

    agreement: float
    frames: int

    @property
    def passed(self) -> bool:
        return self.agreement >= MIN_FP16_AGREEMENT

    def line(self) -> str:
        verdict = "ok" if self.passed else f"below {MIN_FP16_AGREEMENT:.0%}"
        return f"fp16 onnx: class ids agree with fp32 on {self.agreement:.4%} of pixels over {self.frames} frames ({verdict})"


def check_fp16(fp32: onnx.ModelProto, fp16: onnx.ModelProto, frames: list[np.ndarray]) -> Fp16Check:
    """Run both graphs with ONNX Runtime's CPU provider on ``frames`` (uint8 1 x H x W x 3)."""
    import onnxruntime as ort

    sessions = [
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for m in (fp32, fp16)
    ]
    same = total = 0
    for frame in frames:
        ids32, ids16 = (s.run([OUTPUT_CLASS_IDS], {INPUT_NAME: frame})[0] for s in sessions)
        same += int(np.count_nonzero(ids32 == ids16))
        total += ids32.size
    return Fp16Check(agreement=same / max(total, 1), frames=len(frames))
