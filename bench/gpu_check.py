"""GPU verification: what a machine with an NVIDIA GPU runs as is (``make gpu-check``).

Steps, each with its own time limit so the whole check ends within 8 minutes:

1. ``tests``: the ``gpu``- and ``tensorrt``-marked tests (pytest ``-m "gpu or tensorrt"``).
2. ``bench_torch``: ``perception bench engine`` on a checkpoint, torch on CUDA in FP32 and FP16
   (the batch-1 CUDA graph path).
3. ``bench_tensorrt``: TensorRT FP16 (from the FP32 ONNX) and INT8 (from the symmetric Q/DQ ONNX)
   through ``--engine tensorrt``, and Torch-TensorRT FP16 (``--engine torch-tensorrt``) where
   torch_tensorrt is installed.
4. ``train_amp``: a 50-step AMP training run on the synthetic world (``perception train``).
5. ``ddp_nccl``: a single-GPU DDP run over nccl under ``torchrun`` (``--ddp-worker``): the trainer
   runs world size 1 without a process group, so this step builds one itself and trains our model
   wrapped in ``DistributedDataParallel`` for a few AMP steps.

The models are built here with random weights and real BatchNorm statistics (speed does not
depend on training; nothing is downloaded). Every result goes into one JSON (default
``out/gpu-check/gpu_check.json``): the environment (GPU, driver, torch, CUDA, TensorRT,
Torch-TensorRT, ONNX Runtime providers) and, per step, ``status`` (``passed``, ``failed`` or
``skipped``), ``reason`` when it did not pass, ``seconds`` and its figures. A step that cannot run
(no GPU, no TensorRT) is skipped with the reason and the check goes on; the exit status is 1 only
when a step that ran failed.

Run: ``python -m perception.bench.gpu_check [--out out/gpu-check]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import perception
from perception.console import emit
from perception.errors import TRAIN_INSTALL_HINT
from perception.signals import die_with_parent
from perception.spawn import perception_command

#: Seconds each step may take (together well under the 8-minute budget of ``make gpu-check``).
STEP_LIMITS_S = {"tests": 120, "bench_torch": 60, "bench_tensorrt": 140, "train_amp": 60, "ddp_nccl": 45}
#: The benchmarked model: the shipped default model's architecture and input size (its ImageNet
#: weights are not needed to time it; configs/synthetic_default_cpu.yaml is the recipe).
MODEL = {"name": "litefpn", "kwargs": {"encoder": "efficientnet_lite0", "channels": 64, "encoder_blocks": 14},
         "input_hw": (288, 480)}
#: Timed runs per bench configuration (after 20 warm-up runs).
BENCH_RUNS = "200"
REPO = Path(perception.__file__).resolve().parents[1]  # the checkout the tests run in


class Skip(Exception):
    """A step that cannot run here; the message says why."""


def probe() -> dict[str, Any]:
    """What this machine has: the facts every step's skip decision comes from."""
    env: dict[str, Any] = {"python": sys.version.split()[0], "cuda": False}
    if importlib.util.find_spec("torch") is not None:
        import torch

        env.update({"torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda": torch.cuda.is_available()})
        if env["cuda"]:
            env["gpu"] = torch.cuda.get_device_name(0)
            env["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    for module in ("tensorrt", "torch_tensorrt", "onnxruntime"):
        env[module] = _version_of(module)
    if env["onnxruntime"]:
        import onnxruntime

        env["ort_providers"] = onnxruntime.get_available_providers()
    smi = shutil.which("nvidia-smi")
    if smi:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, preexec_fn=die_with_parent())
        env["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    return env


def _version_of(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return str(getattr(__import__(module), "__version__", "?"))
    except Exception as exc:  # a broken install (wrong CUDA, missing libs) is a finding, not a crash
        return f"unusable ({type(exc).__name__}: {str(exc)[:120]})"


def _require_cuda(env: dict[str, Any]) -> None:
    if "torch" not in env:
        raise Skip(f"PyTorch is not installed ({TRAIN_INSTALL_HINT})")
    if not env["cuda"]:
        raise Skip("no CUDA GPU: torch.cuda.is_available() is False")


def _run(cmd: list[str], *, limit_s: float, log_path: Path, env: dict[str, str] | None = None) -> None:
    """Run ``cmd`` with its output in ``log_path``; RuntimeError with the log's tail on failure. The
    step dies with the check (``die_with_parent``): a killed check leaves no bench or training
    holding the GPU."""
    with log_path.open("w") as log:
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=limit_s, cwd=REPO,
                                  env={**os.environ, **(env or {})}, preexec_fn=die_with_parent())
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"timed out after {limit_s:.0f} s (log: {log_path})") from None
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"exit {proc.returncode}: {' | '.join(tail)[:400]} (log: {log_path})")


def make_models(out: Path, *, onnx: bool, int8: bool) -> dict[str, Path]:
    """The benchmarked model as a checkpoint (and FP32 / Q/DQ INT8 ONNX files when asked)."""
    import torch

    from perception.model_metadata import ModelMetadata
    from perception.models import build_model
    from perception.synthetic import SYNTHETIC_CLASSES
    from perception.training.checkpoint import Checkpoint, save_checkpoint

    torch.manual_seed(0)
    h, w = MODEL["input_hw"]
    model = build_model(MODEL["name"], num_classes=SYNTHETIC_CLASSES.num_classes, **MODEL["kwargs"])
    model.train()
    with torch.no_grad():  # real BatchNorm statistics, so activations are in a realistic range
        for _ in range(3):
            model(torch.randn(2, 3, h, w))
    model.eval()
    paths = {"checkpoint": save_checkpoint(out / "model.pt", Checkpoint(
        model_name=MODEL["name"], model_kwargs=dict(MODEL["kwargs"]), class_table=SYNTHETIC_CLASSES,
        input_hw=(h, w), state_dict=model.state_dict(), dataset="synthetic"))}
    if onnx:
        from perception.export.onnx import export_onnx

        meta = ModelMetadata(model_name=MODEL["name"], class_table=SYNTHETIC_CLASSES, input_hw=(h, w),
                             model_kwargs=dict(MODEL["kwargs"]))
        paths["onnx"] = export_onnx(model, out / "model.onnx", meta).path
        if int8:
            from perception.export.quantize import quantize_int8
            from perception.synthetic import render_scene

            calib = [render_scene(seed, height=h, width=w)[0] for seed in range(16)]
            paths["int8"] = quantize_int8(paths["onnx"], out / "model.int8-trt.onnx", calib, metadata=meta,
                                          symmetric_activations=True)
    return paths


def _bench(args: list[str], out: Path, name: str, limit_s: float) -> list[dict[str, Any]]:
    from perception.bench.results import RESULTS_FILE

    folder = out / name
    _run(perception_command("bench", "engine", *args, "--runs", BENCH_RUNS, "--warmup", "20",
                            "--blocks", "4", "--no-progress", "--out", str(folder), "--overwrite"),  # the check's own folder: rerun
         limit_s=limit_s, log_path=out / f"{name}.log")
    rows = json.loads((folder / RESULTS_FILE).read_text())["engine"]["results"]
    keep = ("label", "provider", "precision", "fps", "latency_ms", "skipped", "load_s")
    return [{k: row.get(k) for k in keep if k in row} for row in rows]


def step_tests(env: dict[str, Any], out: Path) -> dict[str, Any]:
    _require_cuda(env)
    junit = out / "gpu_tests.xml"
    log = out / "tests.log"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu or tensorrt", "-p", "no:cacheprovider",
           f"--junitxml={junit}", "tests"]
    failure = None
    try:
        _run(cmd, limit_s=STEP_LIMITS_S["tests"], log_path=log)
    except RuntimeError as exc:
        failure = str(exc)
    counts: dict[str, Any] = {}
    if junit.is_file():
        import xml.etree.ElementTree as ET

        suite = ET.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    if failure:
        raise RuntimeError(f"{failure}; counts {counts}")
    return counts


def step_bench_torch(env: dict[str, Any], out: Path) -> dict[str, Any]:
    _require_cuda(env)
    models = make_models(out, onnx=False, int8=False)
    rows = _bench(["--model", str(models["checkpoint"]), "--engine", "torch", "--provider", "cuda", "--fp16", "both"],
                  out, "bench_torch", STEP_LIMITS_S["bench_torch"])
    return {"model": MODEL, "rows": rows}


def step_bench_tensorrt(env: dict[str, Any], out: Path) -> dict[str, Any]:
    _require_cuda(env)
    if not env.get("tensorrt") or str(env["tensorrt"]).startswith("unusable"):
        raise Skip(f"TensorRT is not installed ({env.get('tensorrt') or 'no tensorrt module'}); see the README's GPU section")
    models = make_models(out, onnx=True, int8=True)
    limit = STEP_LIMITS_S["bench_tensorrt"]
    deadline = time.perf_counter() + limit  # engine builds included: split between the three rows

    def left(share: float) -> float:
        return max(1.0, min(limit * share, deadline - time.perf_counter()))

    rows = _bench(["--model", str(models["onnx"]), "--engine", "tensorrt", "--fp16", "yes"], out, "bench_trt_fp16",
                  left(0.4))
    rows += _bench(["--model", str(models["int8"]), "--engine", "tensorrt"], out, "bench_trt_int8", left(0.3))
    result: dict[str, Any] = {"model": MODEL, "rows": rows}
    if env.get("torch_tensorrt") and not str(env["torch_tensorrt"]).startswith("unusable"):
        result["rows"] += _bench(["--model", str(models["checkpoint"]), "--engine", "torch-tensorrt", "--fp16", "yes"],
                                 out, "bench_torch_trt", left(1.0))
    else:
        result["torch_tensorrt"] = "skipped: torch_tensorrt is not installed"
    return result


def step_train_amp(env: dict[str, Any], out: Path) -> dict[str, Any]:
    _require_cuda(env)
    run_dir = out / "train_amp"
    h, w = MODEL["input_hw"]
    _run(perception_command("train", "--model", MODEL["name"], "--data", "synthetic:count=64",
                            "--val-data", "synthetic:count=8", "--size", f"{h}x{w}", "--steps", "50", "--batch-size", "8",
                            "--device", "cuda", "--set", "amp=true", "--set", "progress=false",
                            "--set", "model_kwargs=" + json.dumps(MODEL["kwargs"]), "--out", str(run_dir), "--overwrite"),
         limit_s=STEP_LIMITS_S["train_amp"], log_path=out / "train_amp.log")
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    losses = [row["loss"] for row in lines if row.get("kind") == "train" and "loss" in row]
    return {"steps": 50, "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "records": len(lines)}


def step_ddp_nccl(env: dict[str, Any], out: Path) -> dict[str, Any]:
    _require_cuda(env)
    import torch.distributed as dist

    if not dist.is_nccl_available():
        raise Skip("this PyTorch build has no nccl backend")
    result_path = out / "ddp_nccl.json"
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
          "-m", "perception.bench.gpu_check", "--ddp-worker", str(result_path)],
         limit_s=STEP_LIMITS_S["ddp_nccl"], log_path=out / "ddp_nccl.log")
    return json.loads(result_path.read_text())


def ddp_worker(result_path: Path, *, device: str = "cuda", steps: int = 10, batch: int = 4,
               input_hw: tuple[int, int] | None = None) -> None:
    """One torchrun rank: a process group (nccl on CUDA, gloo on the CPU), our model wrapped in
    DistributedDataParallel, ``steps`` optimiser steps (AMP on CUDA) on synthetic road scenes, and
    an all-reduce; rank 0 writes the figures to ``result_path``."""
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from perception.models import build_model
    from perception.synthetic import SYNTHETIC_CLASSES, render_scene

    local_rank = int(os.environ["LOCAL_RANK"])
    cuda = device == "cuda"
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    target = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    h, w = input_hw or MODEL["input_hw"]
    torch.manual_seed(0)
    model = build_model(MODEL["name"], num_classes=SYNTHETIC_CLASSES.num_classes, aux=False, **MODEL["kwargs"])
    ddp = DistributedDataParallel(model.to(target), device_ids=[local_rank] if cuda else None)
    optimiser = torch.optim.AdamW(ddp.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    scenes = [render_scene(seed, height=h, width=w) for seed in range(batch)]
    x = torch.from_numpy(np.stack([s[0] for s in scenes])).to(target).permute(0, 3, 1, 2).float().div(255.0)
    labels = torch.from_numpy(np.stack([s[1] for s in scenes])).long().to(target)
    losses = []
    ddp.train()
    for _ in range(steps):
        with torch.autocast(target.type, dtype=torch.float16, enabled=cuda):
            out = ddp(x)
            logits = out["out"] if isinstance(out, dict) else out
        loss = torch.nn.functional.cross_entropy(logits.float(), labels, ignore_index=255)
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        losses.append(float(loss))
    check = torch.ones(1, device=target)
    dist.all_reduce(check)
    result = {"backend": dist.get_backend(), "world_size": dist.get_world_size(), "steps": steps, "amp": cuda,
              "first_loss": losses[0], "last_loss": losses[-1], "all_reduce": float(check)}
    dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        result_path.write_text(json.dumps(result))


STEPS = {"tests": step_tests, "bench_torch": step_bench_torch, "bench_tensorrt": step_bench_tensorrt,
         "train_amp": step_train_amp, "ddp_nccl": step_ddp_nccl}


def run_gpu_check(out: Path, steps: list[str] | None = None) -> dict[str, Any]:
    """Run the steps (all by default) and write ``out/gpu_check.json``; returns the document."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    env = probe()
    doc: dict[str, Any] = {"environment": env, "steps": {}}
    for name in steps or list(STEPS):
        t0 = time.perf_counter()
        try:
            entry: dict[str, Any] = {"status": "passed", "results": STEPS[name](env, out)}
        except Skip as exc:
            entry = {"status": "skipped", "reason": str(exc)}
        except Exception as exc:  # a failing step is recorded and the check goes on
            entry = {"status": "failed", "reason": f"{type(exc).__name__}: {str(exc)[:600]}"}
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        doc["steps"][name] = entry
        emit(f"gpu-check: {name}: {entry['status']}" + (f" ({entry['reason']})" if "reason" in entry else ""))
    doc["seconds"] = round(time.perf_counter() - started, 1)
    doc["passed"] = all(s["status"] != "failed" for s in doc["steps"].values())
    path = out / "gpu_check.json"
    path.write_text(json.dumps(doc, indent=2))
    emit(f"gpu-check: wrote {path} ({doc['seconds']} s)")
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perception.bench.gpu_check", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--out", type=Path, default=Path("out/gpu-check"), help="folder for the JSON and logs")
    parser.add_argument("--step", action="append", choices=list(STEPS), help="run only these steps (repeatable)")
    parser.add_argument("--ddp-worker", type=Path, help=argparse.SUPPRESS)  # one torchrun rank of ddp_nccl
    parser.add_argument("--ddp-device", default="cuda", choices=("cuda", "cpu"), help=argparse.SUPPRESS)
    parser.add_argument("--ddp-steps", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--ddp-batch", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--ddp-size", type=int, nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ddp_worker:
        ddp_worker(args.ddp_worker, device=args.ddp_device, steps=args.ddp_steps, batch=args.ddp_batch,
                   input_hw=tuple(args.ddp_size) if args.ddp_size else None)
        return 0
    doc = run_gpu_check(args.out, args.step)
    return 0 if doc["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
