"""What a missing GPU provider's line tells the user to install (H24): ``onnxruntime`` (the base
install's) and ``onnxruntime-gpu`` (the ``gpu`` extra's) are one module in two packages, and with
both installed the CPU one can hide the GPU one's providers; the line then says to keep one."""

from __future__ import annotations

from importlib import metadata

import pytest

from perception.engines.ort import choose_providers
from perception.errors import DependencyError


def _installed(monkeypatch, names: set[str]) -> None:
    def version(name: str) -> str:
        if name in names:
            return "1.0"
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", version)


def test_both_onnxruntime_packages_installed_names_the_clash_and_the_fix(monkeypatch):
    _installed(monkeypatch, {"onnxruntime", "onnxruntime-gpu"})
    with pytest.raises(DependencyError) as refused:
        choose_providers("cuda", ["AzureExecutionProvider", "CPUExecutionProvider"])
    assert str(refused.value) == (
        "ONNX Runtime here has no CUDAExecutionProvider (available: AzureExecutionProvider, CPUExecutionProvider); "
        "both onnxruntime and onnxruntime-gpu are installed, and the CPU one hides the GPU one's providers: pip "
        "uninstall -y onnxruntime onnxruntime-gpu, then pip install onnxruntime-gpu; or use --provider cpu")


def test_the_cpu_package_alone_names_the_gpu_extra(monkeypatch):
    _installed(monkeypatch, {"onnxruntime"})
    with pytest.raises(DependencyError, match=r"; install onnxruntime-gpu \(pip install -e '\.\[gpu\]' "):
        choose_providers("tensorrt", ["CPUExecutionProvider"])
