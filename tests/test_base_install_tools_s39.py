"""The base install has no torch, and the README says ``python -m perception.export.quantize`` and
``python -m perception.export.unknown`` need none. Both imported ``export.onnx`` (which imports torch
at its top) for graph edits that need no torch: quantize calibrated, then died with
ModuleNotFoundError (H24). The graph edits are in ``export.graph`` now; these run the tools with
``import torch`` failing, as on the base install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_confidence_pool import logits_graph
from tiny_models import write_brightness_model

from perception.modelfile import read_model_metadata, save_model

REPO = Path(__file__).resolve().parents[1]

WITHOUT_TORCH = """
import runpy, sys
sys.modules["torch"] = None  # `import torch` raises ImportError, as on the base install
sys.modules["torchvision"] = None
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def without_torch(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *argv], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_quantize_runs_without_torch(tmp_path):
    model = write_brightness_model(tmp_path / "tiny.onnx", (48, 64))
    done = without_torch("perception.export.quantize", str(model), "--calib", "synthetic", "--val-data", "synthetic",
                         "--calib-count", "2", "--val-count", "2", "--quantizer", "ort", "--allow-int8-drop",
                         cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    int8 = read_model_metadata(tmp_path / "tiny.int8.onnx")
    assert int8.precision == "int8"
    assert {"onnx", "onnxruntime", "perception"} <= set(int8.tool_versions)


def test_the_unknown_threshold_tool_runs_without_torch(tmp_path):
    model = tmp_path / "m.onnx"
    save_model(logits_graph()[0], model)
    done = without_torch("perception.export.unknown", str(model), "--threshold", "0.4", "--out", str(tmp_path / "u.onnx"),
                         cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert read_model_metadata(tmp_path / "u.onnx").unknown_threshold == 0.4
