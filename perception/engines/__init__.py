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

import importlib
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
from perception.errors import ConfigError
from perception.registry import Registry

EngineLoader = Callable[[Path, EngineOptions], Engine]
ENGINES: Registry[EngineLoader] = Registry("engine")


def _lazy_loader(module: str, attr: str) -> EngineLoader:
    """A loader that imports ``module`` only when its engine is chosen (see the module docstring)."""

    def load(path: Path, options: EngineOptions) -> Engine:
        return getattr(importlib.import_module(module), attr)(path, options)

    load.__qualname__ = load.__name__ = f"load_{attr}"
    return load


for _name, _module, _attr in (
    ("ort", "perception.engines.ort", "OrtEngine"),
    ("auto", "perception.engines.auto", "load_auto"),
    ("openvino", "perception.engines.openvino", "OpenVinoEngine"),
    ("tensorrt", "perception.engines.tensorrt", "TrtEngine"),
    ("torch", "perception.engines.torch", "TorchEngine"),
):
    ENGINES.register(_name)(_lazy_loader(_module, _attr))


def load_engine(kind: str, model_path: str | Path, options: EngineOptions | None = None) -> Engine:
    """Load ``model_path`` with the engine ``kind``.

    Raises:
        ConfigError: unknown ``kind``, or ``--streams auto`` for an engine other than ``auto``.
        ModelError: missing/corrupt model, no metadata, or an input not matching the contract.
        DependencyError: the backend (or the requested provider) is not installed.
    """
    options = options or EngineOptions()
    if options.streams == "auto" and kind != "auto":
        raise ConfigError(f"--streams auto is measured by --engine auto's probe; give --engine {kind} a number of "
                          "frames in flight, e.g. --streams 2 (or 1)")
    return ENGINES.get(kind)(Path(model_path), options)


__all__ = ["ENGINES", "PRECISION_CHOICES", "PROVIDER_CHOICES", "Engine", "EngineOptions", "InputSpec", "check_input_spec", "load_engine"]
