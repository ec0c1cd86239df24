"""Inference engines, chosen by name: ``load_engine("ort", "model.onnx", EngineOptions(provider="cpu"))``.

=========  ==========================================  ==========================================
name       module                                      model file
=========  ==========================================  ==========================================
ort        ``perception/engines/ort.py``               ``.onnx`` (CPU, CUDA or TensorRT provider)
openvino   ``perception/engines/openvino.py``          ``.onnx`` (CPU: fp32, bf16, int8 sibling)
auto       ``perception/engines/auto.py``              ``.onnx``: probes the above, runs the fastest
                                                       whose class ids agree with FP32
tensorrt   ``perception/engines/tensorrt.py``          ``.onnx`` (engine built and cached) or ``.engine``
torch      ``perception/engines/torch.py``             ``.pt`` training checkpoint (development)
=========  ==========================================  ==========================================

Backend modules are imported only when chosen, so the base install never imports torch or tensorrt.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from perception.engines.base import (
    PRECISION_CHOICES,
    PROVIDER_CHOICES,
    Engine,
    EngineOptions,
    InputSpec,
    check_input_spec,
)
from perception.registry import Registry

EngineLoader = Callable[[Path, EngineOptions], Engine]
ENGINES: Registry[EngineLoader] = Registry("engine")


@ENGINES.register("ort")
def _load_ort(path: Path, options: EngineOptions) -> Engine:
    from perception.engines.ort import OrtEngine

    return OrtEngine(path, options)


@ENGINES.register("auto")
def _load_auto(path: Path, options: EngineOptions) -> Engine:
    from perception.engines.auto import load_auto

    return load_auto(path, options)


@ENGINES.register("openvino")
def _load_openvino(path: Path, options: EngineOptions) -> Engine:
    from perception.engines.openvino import OpenVinoEngine

    return OpenVinoEngine(path, options)


@ENGINES.register("tensorrt")
def _load_tensorrt(path: Path, options: EngineOptions) -> Engine:
    from perception.engines.tensorrt import TrtEngine

    return TrtEngine(path, options)


@ENGINES.register("torch")
def _load_torch(path: Path, options: EngineOptions) -> Engine:
    from perception.engines.torch import TorchEngine

    return TorchEngine(path, options)


def load_engine(kind: str, model_path: str | Path, options: EngineOptions | None = None) -> Engine:
    """Load ``model_path`` with the engine ``kind``.

    Raises:
        ConfigError: unknown ``kind``.
        ModelError: missing/corrupt model, no metadata, or an input not matching the contract.
        DependencyError: the backend (or the requested provider) is not installed.
    """
    return ENGINES.get(kind)(Path(model_path), options or EngineOptions())


__all__ = ["ENGINES", "PRECISION_CHOICES", "PROVIDER_CHOICES", "Engine", "EngineOptions", "InputSpec", "check_input_spec", "load_engine"]
