"""Step 1 of the export chain: a PyTorch segmentation model -> a self-describing ONNX file.

The graph takes exactly what the node has (``contracts.INPUT_NAME``: uint8, NHWC, BGR, fixed
H x W) and does the cast, the channel swap and the mean/std normalisation inside; it ends with
the argmax fused, giving uint8 class ids (``contracts.OUTPUT_CLASS_IDS``), and optionally the
uint8 confidence of the winning class, pooled over the obstacle classes
(``contracts.OUTPUT_CONFIDENCE``, ``contracts.confidence_pool``). The model metadata
(``model_metadata.ModelMetadata``) is stored as JSON under ``contracts.METADATA_KEY`` in the ONNX
``metadata_props`` so the node can run the file with nothing else.

Exporter choice: torch's ``dynamo=True`` path (torch.export + onnxscript), which gives a clean,
fully static graph (no Shape/Gather subgraphs around Resize). It emits ``contracts.ONNX_OPSET``
natively; asking it for a lower opset goes through onnx's version converter, which has no
Split 18->17 adapter and mis-converts ReduceMax, and the TorchScript path (``dynamo=False``) is
deprecated in torch 2.9+ and announced for removal.

Used by ``perception export``; ``export_onnx`` can also be called directly.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from perception.contracts import INPUT_NAME, ONNX_OPSET, OUTPUT_CLASS_IDS, OUTPUT_CONFIDENCE, confidence_pool
from perception.errors import ModelError
from perception.export.graph import finish_model, graph_tool_versions
from perception.metrics import strict_json
from perception.model_metadata import ModelMetadata
from perception.modelfile import save_model

log = logging.getLogger(__name__)

class ExportWrapper(nn.Module):
    """The deployed graph around a model: uint8 NHWC BGR in, uint8 class ids (+ confidence) out.

    ``outputs="logits"`` returns the model's float logits N x C x H x W instead (used to check the
    pre-processing against the PyTorch reference).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mean_rgb: tuple[float, float, float],
        std_rgb: tuple[float, float, float],
        with_confidence: bool = False,
        confidence_pool: list[bool] | None = None,
        logit_bias: tuple[float, ...] | list[float] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.with_confidence = with_confidence
        self.confidence = Confidence(confidence_pool)
        # ``perception export --logit-adjust``: a per-class constant added to the logits (export/logit_adjust.py).
        bias = None if logit_bias is None else torch.tensor(list(logit_bias), dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("logit_bias", bias, persistent=False)
        mean = torch.tensor(mean_rgb, dtype=torch.float32)
        std = torch.tensor(std_rgb, dtype=torch.float32)
        # (x / 255 - mean) / std == x * scale + bias, one Mul + one Add per RGB channel.
        self.register_buffer("scale", (1.0 / (255.0 * std)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("bias", (-mean / std).view(1, 3, 1, 1), persistent=False)

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 N x H x W x 3 BGR -> float N x 3 x H x W RGB, normalised as in training.

        Transposed first, so the channel swap, the Mul and the Add run on N x 3 x H x W: ONNX Runtime
        broadcasts slowly over an innermost axis of 3 (these ops on N x H x W x 3 took ~7 ms per
        352x480 frame on a 2-core EPYC, 0.9 ms this way, with bit-identical results; older files are
        rewritten by ``python -m perception.export.upgrade``).
        """
        x = image.to(self.scale.dtype).permute(0, 3, 1, 2)  # N x 3 x H x W (BGR)
        return x.flip(1) * self.scale + self.bias  # RGB

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.model(self.normalise(image))  # N x C x H x W
        return logits if self.logit_bias is None else logits + self.logit_bias

    def forward(self, image: torch.Tensor):
        logits = self.logits(image)
        if not self.with_confidence:
            return logits.argmax(dim=1).to(torch.uint8)  # N x H x W
        class_ids = logits.argmax(dim=1)  # N x H x W
        return class_ids.to(torch.uint8), self.confidence(logits, class_ids)


class Confidence(nn.Module):
    """The ``confidence`` output (``contracts.OUTPUT_CONFIDENCE``) from float N x C x H x W logits
    and their argmax: uint8 round(255 x p), p the winner's softmax probability, or the pool's summed
    probability where a pool class wins. ``pool``: per class, whether it is in
    ``contracts.confidence_pool`` (None or no True: no pool). The exported graph and the torch
    engine both run this module, so the two cannot drift apart.
    """

    def __init__(self, pool: list[bool] | None = None) -> None:
        super().__init__()
        lut = torch.tensor(pool) if pool and any(pool) else None
        self.register_buffer("pool_lut", lut, persistent=False)
        # Fixed indices, not the boolean mask: a mask index syncs with the host, which CUDA graphs forbid.
        self.register_buffer("pool_index", None if lut is None else lut.nonzero().flatten(), persistent=False)

    def forward(self, logits: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        # The top softmax probability without the softmax: 1 / sum(exp(logits - max)). Equal in
        # exact arithmetic; ONNX Runtime's Softmax over the channel axis (not the last one) cost
        # 55 ms per 288x480 frame of the default model, against ~1 ms for these element-wise ops
        # and two reductions (measured: 85.3 vs 29.5 ms per frame, the model itself ~28 ms).
        top = logits.amax(dim=1, keepdim=True)  # N x 1 x H x W
        exp = torch.exp(logits - top)  # the winner's is exactly 1
        if self.pool_lut is None:
            prob = torch.reciprocal(exp.sum(dim=1))  # N x H x W
        else:  # a pooled winner counts the whole pool; 1 / sum as above otherwise
            pooled = exp.index_select(1, self.pool_index).sum(dim=1)
            prob = torch.where(self.pool_lut[class_ids], pooled, torch.ones_like(pooled)) / exp.sum(dim=1)
        return torch.round(prob * 255.0).to(torch.uint8)


@dataclass(frozen=True)
class OnnxExport:
    """What step 1 produced: the file, its metadata and how long the export took."""

    path: Path
    metadata: ModelMetadata
    export_s: float
    size_bytes: int


def tool_versions() -> dict[str, str]:
    """Versions of the tools that made an export (stored in the metadata)."""
    return {"torch": torch.__version__, **graph_tool_versions()}


def build_metadata(ckpt, *, input_hw: tuple[int, int], dynamic_batch: bool, with_confidence: bool) -> ModelMetadata:
    """ModelMetadata for an FP32 export of checkpoint ``ckpt`` (a training.checkpoint.Checkpoint)."""
    return ModelMetadata(
        model_name=ckpt.model_name,
        class_table=ckpt.class_table,
        input_hw=(int(input_hw[0]), int(input_hw[1])),
        mean=tuple(float(x) for x in ckpt.mean),
        std=tuple(float(x) for x in ckpt.std),
        dataset=ckpt.dataset,
        # The checkpoint's validation during training, and the input size it was measured at (this
        # file may be exported at another): ``perception inspect`` labels it as such.
        val_metrics=strict_json({**dict(ckpt.metrics), **_trained_hw(ckpt)}),
        precision="fp32",
        dynamic_batch=dynamic_batch,
        has_confidence=with_confidence,
        confidence_pool=confidence_pool(ckpt.class_table) if with_confidence else (),
        model_kwargs=strict_json(dict(ckpt.model_kwargs)),
        tool_versions=tool_versions(),
        created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def prepare_model(model: nn.Module) -> nn.Module:
    """Eval mode on CPU, switched to export-safe ops when the model offers ``prepare_for_export``."""
    model = model.eval().to("cpu")
    prepare = getattr(model, "prepare_for_export", None)
    if callable(prepare):
        result = prepare()
        model = result if isinstance(result, nn.Module) else model
    return model.eval()


def export_onnx(
    model: nn.Module,
    out_path: str | Path,
    metadata: ModelMetadata,
    *,
    verbose: bool = False,
) -> OnnxExport:
    """Export ``model`` wrapped in ``ExportWrapper`` to ``out_path`` with ``metadata`` stored inside.

    ``metadata.input_hw``, ``dynamic_batch``, ``has_confidence``, ``mean`` and ``std`` decide the
    graph. The file is checked (``onnx.checker`` with full shape inference) before it is written,
    and written atomically.

    Raises:
        ModelError: the input size does not fit the model, or torch cannot export it.
    """
    import time

    out_path = Path(out_path)
    h, w = metadata.input_hw
    check = getattr(model, "check_input_size", None)
    if callable(check):
        check(h, w)  # ConfigError with the nearest valid sizes
    model = prepare_model(model)
    wrapper = ExportWrapper(
        model, mean_rgb=metadata.mean, std_rgb=metadata.std, with_confidence=metadata.has_confidence,
        confidence_pool=metadata.confidence_pool_flags(), logit_bias=metadata.logit_adjust.get("bias"),
    ).eval()
    # A dynamic batch is traced with batch 2: torch.export specialises a dimension seen as 1.
    example = torch.zeros((2 if metadata.dynamic_batch else 1, h, w, 3), dtype=torch.uint8)
    output_names = [OUTPUT_CLASS_IDS] + ([OUTPUT_CONFIDENCE] if metadata.has_confidence else [])
    dynamic_shapes = {"image": {0: torch.export.Dim("batch", min=1, max=1024)}} if metadata.dynamic_batch else None

    start = time.perf_counter()
    proto = torch_to_onnx(wrapper, example, output_names=output_names, dynamic_shapes=dynamic_shapes, verbose=verbose)
    proto = finish_model(proto, metadata)
    export_s = time.perf_counter() - start
    size = save_model(proto, out_path)
    return OnnxExport(path=out_path, metadata=metadata, export_s=export_s, size_bytes=size)


def torch_to_onnx(
    wrapper: nn.Module,
    example: torch.Tensor,
    *,
    output_names: list[str],
    dynamic_shapes: dict[str, Any] | None = None,
    verbose: bool = False,
) -> onnx.ModelProto:
    """Run torch's dynamo exporter on ``wrapper`` and return the optimised ModelProto."""
    # The exporter prints progress lines to stdout; keep them out of the command's report.
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    try:
        with torch.inference_mode(False), torch.no_grad(), sink:
            program = torch.onnx.export(
                wrapper,
                (example,),
                dynamo=True,
                opset_version=ONNX_OPSET,
                input_names=[INPUT_NAME],
                output_names=output_names,
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                optimize=True,
                verbose=verbose,
            )
    except Exception as exc:  # torch.export raises many types; the message is what matters here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"torch could not export the model to ONNX: {first[:300]}") from exc
    return program.model_proto


def _trained_hw(ckpt) -> dict[str, list[int]]:
    """``{"input_hw": [h, w]}``: the size the checkpoint's validation figures were measured at."""
    hw = (ckpt.config or {}).get("input_hw")
    if isinstance(hw, (list, tuple)) and len(hw) == 2 and all(isinstance(v, int) for v in hw):
        return {"input_hw": [int(hw[0]), int(hw[1])]}
    return {}
