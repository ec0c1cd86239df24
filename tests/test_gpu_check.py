"""``make gpu-check`` (bench/gpu_check.py): on a machine without a GPU every step is skipped with
its reason, the JSON is written and the exit status is 0; a step that runs and fails makes it 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from perception.bench import gpu_check

REPO = Path(__file__).resolve().parents[1]


def test_makefile_target_runs_the_script():
    text = (REPO / "Makefile").read_text()
    assert "\ngpu-check:" in text and "-m perception.bench.gpu_check --out out/gpu-check" in text


def test_without_a_gpu_every_step_is_skipped_with_its_reason(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the steps would run (make gpu-check does that)")
    proc = subprocess.run([sys.executable, "-m", "perception.bench.gpu_check", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    assert list(doc["steps"]) == ["tests", "bench_torch", "bench_tensorrt", "train_amp", "ddp_nccl"]
    for name, step in doc["steps"].items():
        assert step["status"] == "skipped", name
        assert step["reason"] == "no CUDA GPU: torch.cuda.is_available() is False"
    assert doc["passed"] is True and doc["environment"]["cuda"] is False
    assert "gpu-check: tests: skipped (no CUDA GPU" in proc.stdout


def test_missing_tensorrt_is_a_skip_and_a_failing_step_fails_the_check(tmp_path, monkeypatch):
    env = {"torch": "2.x", "cuda": True, "tensorrt": None}
    with pytest.raises(gpu_check.Skip, match="TensorRT is not installed"):
        gpu_check.step_bench_tensorrt(env, tmp_path)

    def broken(env, out):
        raise RuntimeError("exit 1: CUDA error: an illegal memory access")

    def skipped(env, out):
        raise gpu_check.Skip("no TensorRT")

    monkeypatch.setattr(gpu_check, "STEPS", {"a": broken, "b": skipped, "c": lambda env, out: {"fps": 1.0}})
    doc = gpu_check.run_gpu_check(tmp_path)
    assert doc["passed"] is False
    assert doc["steps"]["a"] == {"status": "failed", "reason": "RuntimeError: exit 1: CUDA error: an illegal memory access",
                                 "seconds": doc["steps"]["a"]["seconds"]}
    assert doc["steps"]["b"]["status"] == "skipped" and doc["steps"]["c"]["results"] == {"fps": 1.0}
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == doc


def test_the_ddp_step_worker_runs_under_torchrun_with_gloo_on_the_cpu(tmp_path):
    """The ddp_nccl step's worker, on the CPU backend (gloo): same code but nccl and AMP."""
    pytest.importorskip("torch")
    result = tmp_path / "ddp.json"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m",
         "perception.bench.gpu_check", "--ddp-worker", str(result), "--ddp-device", "cpu", "--ddp-steps", "2", "--ddp-batch", "2",
         "--ddp-size", "96", "128"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(result.read_text())
    assert doc["backend"] == "gloo" and doc["world_size"] == 1 and doc["all_reduce"] == 1.0
    assert doc["steps"] == 2 and doc["first_loss"] > 0
