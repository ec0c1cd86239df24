"""The machine a benchmark ran on: CPU, cores, thread settings, OS, Python, library versions, GPU.

Every bench JSON carries this block so figures are never read without their machine. Library
versions come from the installed package metadata (``importlib.metadata``), so asking for the
torch version does not import torch; the GPU is read from ``nvidia-smi`` when it is on PATH.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys

import psutil

from perception.engines.cpu import cpu_isa, cpu_model
from perception.signals import die_with_parent

#: Distribution names whose versions every report lists ("absent" when not installed).
LIBRARIES = ("numpy", "onnxruntime", "onnxruntime-gpu", "opencv-python", "opencv-python-headless",
             "pyzmq", "onnx", "openvino", "torch", "tensorrt", "psutil", "perception")

#: Environment variables that change how many threads the math libraries use.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ORT_NUM_THREADS")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def ort_providers() -> list[str]:
    """Execution providers this onnxruntime build offers (empty when it is not installed)."""
    from perception.engines.cache import quiet_ort_telemetry

    quiet_ort_telemetry()  # before ONNX Runtime's import, which may warn in colour of its telemetry ID
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def gpus() -> list[dict[str, str]]:
    """Name, driver and total memory of each NVIDIA GPU, from nvidia-smi (empty without one)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True, preexec_fn=die_with_parent(),
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            found.append({"name": parts[0], "driver": parts[1], "memory_total_mb": parts[2]})
    return found


def load_average_1m() -> float | None:
    """The 1-minute load average (runnable and waiting tasks of the whole machine), rounded; None
    where the OS has none. The engine bench reads it before and after every timed block."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def collect_environment() -> dict:
    """The environment block of a bench JSON (see bench/README.md for each field). Under a cgroup
    CPU quota ``cpu_quota_cores`` is that share (0.5: half of one core's time; null without one), and
    ``memory_limit_mb`` the cgroup's memory limit (null without one): a container's figures are for
    them, not for the machine's cores and memory."""
    from perception import cgroups

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count()
    freq = psutil.cpu_freq()
    memory_limit = cgroups.memory()
    return {
        "cpu_model": cpu_model(),
        "cpu_isa": cpu_isa(),
        "cpu_logical_cores": psutil.cpu_count(logical=True),
        "cpu_physical_cores": psutil.cpu_count(logical=False),
        "cpu_usable_cores": affinity,
        "cpu_quota_cores": cgroups.cpu_quota_cores(),
        "cpu_max_mhz": round(freq.max, 1) if freq and freq.max else None,
        "load_average_1m": load_average_1m(),
        "memory_total_mb": round(psutil.virtual_memory().total / 2**20),
        "memory_limit_mb": None if memory_limit is None else round(memory_limit.limit / 2**20),
        "thread_variables": {k: os.environ.get(k, "") for k in THREAD_VARIABLES},
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "libraries": library_versions(),
        "ort_providers": ort_providers(),
        "gpus": gpus(),
    }


def gpu_memory_mb(pid: int | None = None) -> float | None:
    """GPU memory held by process ``pid`` (default: this one) in MiB, or None without a GPU.

    Read from ``nvidia-smi --query-compute-apps`` (covers ONNX Runtime's CUDA/TensorRT providers,
    TensorRT and torch alike, including the CUDA context); when nvidia-smi cannot see the process
    (containers hide PIDs) and torch is already imported with CUDA initialised, torch's peak
    allocation is used instead (tensors only, no context). Never imports torch itself.
    """
    pid = os.getpid() if pid is None else pid
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            out = subprocess.run(
                [smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=10, check=True, preexec_fn=die_with_parent(),
            ).stdout
            for line in out.strip().splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 2 and parts[0] == str(pid) and parts[1].isdigit():
                    return float(parts[1])
        except (OSError, subprocess.SubprocessError):
            pass
    torch = sys.modules.get("torch")
    if torch is not None and pid == os.getpid() and torch.cuda.is_available() and torch.cuda.is_initialized():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return None
