"""Torch engine (development): runs a training checkpoint directly, on CPU or CUDA, optionally fp16.

``perception run --engine torch --model runs/bisenetv2/best.pt [--provider cuda] [--fp16]
[--compile tensorrt]``. Needs the ``train`` extra; torch is imported only when this engine is
chosen. It applies the same in-graph steps the exporter bakes into ONNX (BGR->RGB, ImageNet
normalisation, argmax, and the confidence through the exporter's own ``Confidence`` module) so its
class ids and confidence match the exported model's.

On the CPU it runs eagerly, exactly as before. On CUDA the whole step stays on the GPU:

- ``infer(batch)``: the uint8 batch is copied up through a pinned buffer, normalised, run, and
  its argmax and confidence are packed into one uint8 tensor that comes back in one copy. At the
  model's static shape (batch 1) that device step is captured once as a CUDA graph
  (``torch.cuda.CUDAGraph``) and replayed per frame, which removes the per-kernel launch cost of
  small real-time models; a model that cannot be captured runs eagerly (logged once).
- ``infer_frames(frames, luts)``: GPU-resident pre- and post-processing for a whole camera frame:
  uint8 upload, letterbox (bilinear resize into the padded model input, the geometry of
  ``perception.preprocess.Letterbox``), the model, argmax, and the task masks looked up from
  256-entry tables (``perception.masks.task_lut``), with one copy back of all uint8 outputs. It
  runs on the CPU too (same code, torch CPU kernels), which is how it is tested without a GPU.

``--compile tensorrt`` (CUDA only) compiles the model with Torch-TensorRT
(``torch_tensorrt.compile(..., ir="dynamo")``) for users who deploy straight from a checkpoint.
Its engines go to the ``torch_tensorrt`` folder of the TensorRT engine cache
(``perception.engines.cache.torch_tensorrt_cache_dir``). The TensorRT 10/11 caveats of ``perception.engines.trt_build``
apply: on TensorRT 10 FP16 comes from ``enabled_precisions`` (weak typing, the builder's FP16
flag); TensorRT 11 builds strongly typed networks only, so the model itself is cast to half and
compiled with ``use_explicit_typing=True`` (Torch-TensorRT's "Compile Mixed Precision models",
https://docs.pytorch.org/TensorRT/user_guide/mixed_precision.html).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import numpy as np

from perception.contracts import INPUT_NAME, OUTPUT_CLASS_IDS, OUTPUT_CONFIDENCE, confidence_pool
from perception.engines.base import Engine, EngineOptions, InputSpec, refuse_streams
from perception.errors import GPU_INSTALL_HINT, TRAIN_INSTALL_HINT, ConfigError, DependencyError, ModelError
from perception.model_metadata import ModelMetadata
from perception.preprocess import PAD_VALUE, Letterbox

log = logging.getLogger(__name__)

MISSING_TORCH_TENSORRT = f"--compile tensorrt needs Torch-TensorRT: {GPU_INSTALL_HINT}; or drop --compile"
NO_CUDA_FOR_COMPILE = "--compile tensorrt needs a CUDA GPU and PyTorch sees none here; drop --compile tensorrt"


def _import_torch_tensorrt() -> Any:
    try:
        import torch_tensorrt
    except ImportError:
        raise DependencyError(MISSING_TORCH_TENSORRT) from None
    return torch_tensorrt


def compile_tensorrt(model: Any, example: Any, *, half: bool) -> tuple[Any, Any]:
    """``model`` compiled by Torch-TensorRT (dynamo IR) at ``example``'s static shape, and the
    dtype its input must have (float16 for a strongly typed FP16 graph, else float32).

    Raises:
        DependencyError: torch_tensorrt (or its tensorrt) is absent, or the TensorRT is not 10/11.
    """
    import torch

    from perception.engines.cache import make_private_dirs, torch_tensorrt_cache_dir, trt_major

    torch_tensorrt = _import_torch_tensorrt()
    try:
        import tensorrt
    except ImportError:
        raise DependencyError(MISSING_TORCH_TENSORRT) from None
    major = trt_major(tensorrt.__version__)
    if major not in (10, 11):
        raise DependencyError(f"--compile tensorrt supports TensorRT 10 and 11, found {tensorrt.__version__}")
    cache_dir = torch_tensorrt_cache_dir()
    make_private_dirs(cache_dir)  # mode 0700: what it holds is run
    kwargs: dict[str, Any] = {
        "ir": "dynamo",
        "arg_inputs": [example],
        "min_block_size": 1,
        "cache_built_engines": True,
        "reuse_cached_engines": True,
        "timing_cache_path": str(cache_dir / f"timing-trt{major}.bin"),
    }
    # The engine cache folder is a keyword of dynamo.compile up to 2.11 and an engine_cache object
    # (DiskEngineCache) from 2.12 (the "Engine Caching" pages of each version); ask the signature.
    params = inspect.signature(torch_tensorrt.dynamo.compile).parameters
    if "engine_cache_dir" in params:
        kwargs["engine_cache_dir"] = str(cache_dir)
    elif "engine_cache" in params:
        from torch_tensorrt.dynamo._engine_cache import DiskEngineCache

        kwargs["engine_cache"] = DiskEngineCache(engine_cache_dir=str(cache_dir))
    input_dtype = torch.float32
    if major >= 11:  # strongly typed: the types come from the graph itself
        kwargs["use_explicit_typing"] = True
        if half:
            model, kwargs["arg_inputs"], input_dtype = model.half(), [example.half()], torch.float16
    else:  # TensorRT 10: weak typing, the builder may pick FP16 kernels inside an FP32-typed graph
        kwargs["enabled_precisions"] = {torch.float16} if half else {torch.float32}
    log.info("Torch-TensorRT %s compiling for TensorRT %s (%s), cache %s", torch_tensorrt.__version__,
             tensorrt.__version__, "fp16" if half else "fp32", cache_dir)
    return torch_tensorrt.compile(model, **kwargs), input_dtype


class TorchEngine(Engine):
    """A checkpoint's model in eval mode behind the Engine interface."""

    kind = "torch"
    #: The model's softmax gives both on every device (``_forward``).
    output_names = (OUTPUT_CLASS_IDS, OUTPUT_CONFIDENCE)

    def __init__(self, model_path: str | Path, options: EngineOptions | None = None) -> None:
        options = options or EngineOptions()
        refuse_streams(options, "torch", "one module on one device; a development engine")
        try:
            import torch
        except ImportError:
            raise DependencyError(f"--engine torch needs PyTorch: {TRAIN_INSTALL_HINT}") from None
        from perception.export.onnx import Confidence
        from perception.training.checkpoint import build_model_from_checkpoint, load_checkpoint

        path = Path(model_path)
        if path.suffix == ".onnx":
            raise ModelError(f"{path.name} is an ONNX model; --engine torch runs .pt checkpoints (use --engine ort)")
        if options.provider in ("tensorrt",):
            raise DependencyError(
                "--engine torch runs on --provider cpu or cuda; for TensorRT use --compile tensorrt or --engine tensorrt"
            )
        compiled = options.compile == "tensorrt"
        if compiled and options.provider == "cpu":
            raise ConfigError("--compile tensorrt runs on CUDA; drop --provider cpu")
        if (options.provider == "cuda" or compiled) and not torch.cuda.is_available():
            raise DependencyError(NO_CUDA_FOR_COMPILE if compiled else "--provider cuda: PyTorch sees no CUDA GPU here; use --provider cpu")
        if compiled:
            _import_torch_tensorrt()  # fail in one line before the checkpoint is read
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
        h, w = ckpt.input_hw
        dtype = torch.float16 if self._half else torch.float32
        if compiled:
            example = torch.zeros((1, 3, h, w), dtype=torch.float32, device=self._device)
            model, dtype = compile_tensorrt(model, example, half=self._half)
        elif self._half:
            model = model.half()
        self._model = model
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
            confidence_pool=confidence_pool(ckpt.class_table),
            model_kwargs=dict(ckpt.model_kwargs),
        )
        # The exported graph's confidence module (the pool, the rounding), so the two agree.
        self._confidence = Confidence(self.metadata.confidence_pool_flags()).to(self._device)
        self.input_spec = InputSpec(name=INPUT_NAME, shape=(None, h, w, 3), dtype="uint8")
        self.provider = f"torch-{device}-{'fp16' if self._half else 'fp32'}" + ("-tensorrt" if compiled else "")
        # CUDA state: a pinned upload buffer and, for batch 1, the device step as a CUDA graph.
        self._graph: Any = None
        self._compiled = compiled
        self._graph_failed = compiled  # Torch-TensorRT runs its own engine; no capture around it
        self._static_in = self._static_out = self._pinned_in = None
        log.info("torch %s: %s on %s", torch.__version__, self.metadata.model_id, self.provider)

    @property
    def cuda(self) -> bool:
        return self._device.type == "cuda"

    def _forward(self, x: Any) -> tuple[Any, Any]:
        """uint8 N x H x W x 3 BGR -> uint8 class ids and confidence, N x H x W each."""
        torch = self._torch
        if self._compiled and x.shape[0] != 1:  # a Torch-TensorRT module is built for batch 1
            parts = [self._forward(x[i : i + 1]) for i in range(x.shape[0])]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        x = x.permute(0, 3, 1, 2).flip(1)  # -> N x 3 x H x W, RGB
        x = (x.to(self._mean.dtype) - self._mean) / self._std
        logits = self._model(x).float()  # N x C x H x W
        class_ids = logits.argmax(dim=1)  # N x H x W
        return class_ids.to(torch.uint8), self._confidence(logits, class_ids)

    def _device_step(self, x: Any) -> Any:
        """``_forward`` packed into one uint8 2 x N x H x W tensor, for a single copy back."""
        return self._torch.stack(self._forward(x))

    @property
    def fixed_batch(self) -> int | None:
        """1 for a Torch-TensorRT module (built for batch 1; larger batches run frame by frame),
        else None: the eager module takes any batch."""
        return 1 if self._compiled else None

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            if not self.cuda:  # the CPU path, as it always was
                class_ids, confidence = self._forward(torch.from_numpy(batch))
                return {"class_ids": class_ids.numpy(), "confidence": confidence.numpy()}
            if batch.shape[0] == 1 and not self._graph_failed:
                packed = self._replay(batch)
            else:
                packed = self._device_step(torch.from_numpy(batch).to(self._device, non_blocking=True))
            host = packed.cpu().numpy()  # the one copy back (it synchronises the stream)
        return {"class_ids": host[0], "confidence": host[1]}

    def _replay(self, batch: np.ndarray) -> Any:
        """Batch-1 inference through the captured CUDA graph (captured on first use)."""
        torch = self._torch
        if self._graph is None:
            self._static_in = torch.zeros(batch.shape, dtype=torch.uint8, device=self._device)
            self._pinned_in = torch.zeros(batch.shape, dtype=torch.uint8).pin_memory()
            try:
                self._graph, self._static_out = self._capture()
            except RuntimeError as exc:  # an op that syncs or allocates on the host cannot be captured
                log.warning("CUDA graph capture failed (%s); running eagerly", str(exc).splitlines()[0][:200])
                self._graph_failed = True
                return self._device_step(torch.from_numpy(batch).to(self._device))
            log.info("CUDA graph captured for %s at %s", self.metadata.model_id, tuple(batch.shape))
        self._pinned_in.numpy()[...] = batch
        self._static_in.copy_(self._pinned_in, non_blocking=True)
        self._graph.replay()
        return self._static_out

    def _capture(self) -> tuple[Any, Any]:
        torch = self._torch
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up on a side stream, as the CUDA graphs notes ask
            for _ in range(3):
                self._device_step(self._static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._device_step(self._static_in)
        return graph, out

    def infer_frames(self, frames: np.ndarray, luts: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """Letterbox, infer and build task masks for camera frames, on this engine's device.

        Args:
            frames: uint8 N x H x W x 3 BGR camera frames (any size; all the same size).
            luts: mask name -> 256-entry uint8 table over class ids (``perception.masks.task_lut``).

        Returns:
            ``{"class_ids": N x h x w, "confidence": N x h x w, "masks": {name: N x h x w}}`` at the
            model input size (uint8, padding included; ``Letterbox.to_source`` maps them back),
            and ``"letterbox"``, the geometry used. All arrays come back in one device-to-host copy.
        """
        torch = self._torch
        functional = torch.nn.functional
        if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
            raise ConfigError(f"infer_frames takes uint8 N x H x W x 3 frames, got {frames.dtype} {frames.shape}")
        letterbox = Letterbox.fit(frames.shape[1:3], self.input_hw)
        names = list(luts or {})
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(frames)).to(self._device, non_blocking=True)
            ch, cw = letterbox.content_hw
            if (ch, cw) != tuple(frames.shape[1:3]):
                # Bilinear on pixel centres (align_corners=False), no antialiasing: the grid of
                # cv2.INTER_LINEAR, which the CPU path uses; values round like cv2's uint8 output.
                scaled = functional.interpolate(x.permute(0, 3, 1, 2).float(), size=(ch, cw), mode="bilinear",
                                                align_corners=False, antialias=False)
                content = scaled.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
            else:
                content = x
            h, w = self.input_hw
            top, left = letterbox.offset_yx
            model_in = torch.full((frames.shape[0], h, w, 3), PAD_VALUE, dtype=torch.uint8, device=self._device)
            model_in[:, top : top + ch, left : left + cw] = content
            packed = self._device_step(model_in)  # 2 x N x h x w
            if names:
                tables = torch.from_numpy(np.stack([luts[n] for n in names])).to(self._device)  # T x 256
                masks = tables[:, packed[0].long()]  # T x N x h x w, one gather per task
                packed = torch.cat((packed, masks))
            host = packed.cpu().numpy()
        return {"class_ids": host[0], "confidence": host[1],
                "masks": {name: host[2 + i] for i, name in enumerate(names)}, "letterbox": letterbox}

    def close(self) -> None:
        self._graph = self._static_in = self._static_out = self._pinned_in = None
        self._model = None
