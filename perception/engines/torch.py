"""Torch engine (development): runs a training checkpoint directly, on CPU or CUDA, optionally fp16.

``perception run --engine torch --model runs/bisenetv2/best.pt [--provider cuda] [--fp16]``.
Needs the ``train`` extra; torch is imported only when this engine is chosen. It applies the same
in-graph steps the exporter bakes into ONNX (BGR->RGB, ImageNet normalisation, argmax, softmax
confidence) so its class ids match the exported model's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from perception.contracts import INPUT_NAME, ModelMetadata
from perception.engines.base import Engine, EngineOptions, InputSpec
from perception.errors import DependencyError, ModelError

log = logging.getLogger(__name__)


class TorchEngine(Engine):
    """A checkpoint's model in eval mode behind the Engine interface."""

    kind = "torch"

    def __init__(self, model_path: str | Path, options: EngineOptions | None = None) -> None:
        options = options or EngineOptions()
        try:
            import torch
        except ImportError:
            raise DependencyError("--engine torch needs PyTorch: pip install '.[train]'") from None
        from perception.training.checkpoint import build_model_from_checkpoint, load_checkpoint

        path = Path(model_path)
        if path.suffix == ".onnx":
            raise ModelError(f"{path.name} is an ONNX model; --engine torch runs .pt checkpoints (use --engine ort)")
        if options.provider in ("tensorrt",):
            raise DependencyError("--engine torch runs on --provider cpu or cuda; use --engine tensorrt for TensorRT")
        if options.provider == "cuda" and not torch.cuda.is_available():
            raise DependencyError("--provider cuda: PyTorch sees no CUDA GPU here; use --provider cpu")
        device = "cuda" if options.provider in ("cuda", "auto") and torch.cuda.is_available() else "cpu"
        if options.threads:
            torch.set_num_threads(options.threads)
        ckpt = load_checkpoint(path, map_location="cpu")  # ModelError for missing/corrupt/foreign files
        self._torch = torch
        self._device = torch.device(device)
        self._half = bool(options.fp16 and device == "cuda")
        if options.fp16 and not self._half:
            log.warning("--fp16 ignored on CPU (PyTorch CPU kernels are float32)")
        model = build_model_from_checkpoint(ckpt, device=device)
        self._model = model.half() if self._half else model
        dtype = torch.float16 if self._half else torch.float32
        # Stored as RGB order, shaped for broadcasting over N x 3 x H x W.
        self._mean = torch.tensor(ckpt.mean, dtype=dtype, device=self._device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(ckpt.std, dtype=dtype, device=self._device).view(1, 3, 1, 1) * 255.0
        self.model_path = str(path)
        self.metadata = ModelMetadata(
            model_name=ckpt.model_name,
            class_table=ckpt.class_table,
            input_hw=ckpt.input_hw,
            mean=ckpt.mean,
            std=ckpt.std,
            dataset=ckpt.dataset,
            val_metrics=dict(ckpt.metrics),
            precision="fp16" if self._half else "fp32",
            has_confidence=True,
            model_kwargs=dict(ckpt.model_kwargs),
        )
        h, w = ckpt.input_hw
        self.input_spec = InputSpec(name=INPUT_NAME, shape=(None, h, w, 3), dtype="uint8")
        self.provider = f"torch-{device}-{'fp16' if self._half else 'fp32'}"
        log.info("torch %s: %s on %s", torch.__version__, self.metadata.model_id, self.provider)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self._device, non_blocking=True)  # N x H x W x 3, uint8 BGR
            x = x.permute(0, 3, 1, 2).flip(1)  # -> N x 3 x H x W, RGB
            x = (x.to(self._mean.dtype) - self._mean) / self._std
            logits = self._model(x)  # N x C x H x W
            probs = logits.float().softmax(dim=1)
            confidence, class_ids = probs.max(dim=1)  # N x H x W each
            return {
                "class_ids": class_ids.to(torch.uint8).cpu().numpy(),
                "confidence": (confidence * 255.0).round().to(torch.uint8).cpu().numpy(),
            }

    def close(self) -> None:
        self._model = None
