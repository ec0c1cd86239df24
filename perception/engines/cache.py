"""The TensorRT engine cache: an engine is reused only for the exact model, TensorRT and GPU.

A serialized TensorRT engine runs only on the TensorRT version and GPU model that built it, so
the cache key is sha256 over the ONNX bytes, the TensorRT version and its major version (10 and
11 build by different routes: weakly typed with builder flags, or strongly typed from an FP16
graph; see ``perception.engines.trt_build``), the GPU name and compute capability, the precision and the input
shapes. Torch-TensorRT's own engine cache lives in the ``torch_tensorrt`` folder of the same
directory (``torch_tensorrt_cache_dir``). An unchanged model loads its engine; a changed
ONNX file, TensorRT upgrade or different GPU gets a new key and is rebuilt. Default directory:
``~/.cache/perception/trt`` (``PERCEPTION_TRT_CACHE`` overrides it).

Torch-free and TensorRT-free (the node's engine loader uses it too): the GPU is identified
through ``nvidia-smi``, which ships with the driver. ``ort_providers`` (ONNX Runtime's GPU
provider list, with the TensorRT EP's engine and timing caches in this directory) lives here for
the same reason: the runtime and ``perception export`` both need it, and the runtime imports
nothing from the top-level ``export`` package.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from perception.errors import DependencyError

#: Bump when the key recipe below changes, so old entries are never mistaken for new ones.
#: 2: the TensorRT major version joined the key.
CACHE_KEY_VERSION = 2
PRECISIONS = ("fp32", "fp16", "int8")


def default_cache_dir() -> Path:
    env = os.environ.get("PERCEPTION_TRT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "perception" / "trt"


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; ``digest`` names the cache entry."""

    onnx_sha256: str
    trt_version: str
    trt_major: int
    gpu_name: str
    precision: str
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def digest(self) -> str:
        doc = json.dumps({"v": CACHE_KEY_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(doc.encode()).hexdigest()[:32]

    def to_dict(self) -> dict:
        doc = asdict(self)
        doc["input_shapes"] = {name: list(shape) for name, shape in self.input_shapes}
        return doc


def engine_key(
    onnx_bytes: bytes, *, trt_version: str, gpu_name: str, precision: str, input_shapes: dict[str, tuple[int, ...]]
) -> EngineKey:
    """The cache key of an engine built from ``onnx_bytes`` (see module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return EngineKey(
        onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        trt_version=trt_version,
        trt_major=trt_major(trt_version),
        gpu_name=gpu_name,
        precision=precision,
        input_shapes=tuple(sorted((name, tuple(int(d) for d in shape)) for name, shape in input_shapes.items())),
    )


def trt_major(trt_version: str) -> int:
    """The major version in a TensorRT version string (``"11.4.0"`` -> 11); ValueError if none."""
    head = str(trt_version).split(".", 1)[0]
    if not head.isdigit():
        raise ValueError(f"TensorRT version {trt_version!r} does not start with a major version number")
    return int(head)


def torch_tensorrt_cache_dir(directory: str | Path | None = None) -> Path:
    """Where Torch-TensorRT keeps its engines and timing cache: beside ours, in one place."""
    return (Path(directory) if directory is not None else default_cache_dir()) / "torch_tensorrt"


def gpu_name(device_index: int = 0) -> str:
    """``"<name> sm<major><minor>"`` of GPU ``device_index``, via nvidia-smi.

    Raises:
        DependencyError: no NVIDIA driver / GPU.
    """
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise DependencyError("no NVIDIA GPU found (nvidia-smi is missing); TensorRT engines need an NVIDIA GPU")
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader", f"--id={device_index}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (subprocess.SubprocessError, OSError) as exc:
        raise DependencyError(f"nvidia-smi cannot query GPU {device_index} ({type(exc).__name__}); check the driver") from None
    name, _, capability = out.partition(",")
    return f"{name.strip()} sm{capability.strip().replace('.', '')}"


class EngineCache:
    """Engines on disk: ``<dir>/<digest>.engine`` plus ``<digest>.json`` describing the key."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def engine_path(self, key: EngineKey) -> Path:
        return self.directory / f"{key.digest}.engine"

    def load(self, key: EngineKey) -> bytes | None:
        """The cached engine for ``key``, or None when there is none (or it is empty)."""
        path = self.engine_path(key)
        if not path.is_file() or path.stat().st_size == 0:
            return None
        return path.read_bytes()

    def store(self, key: EngineKey, engine: bytes) -> Path:
        """Write ``engine`` under ``key`` atomically; returns its path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.engine_path(key)
        for target, data in ((path.with_suffix(".json"), json.dumps(key.to_dict(), indent=2).encode()), (path, engine)):
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return path

    def timing_cache_path(self, *, trt_version: str, gpu: str) -> Path:
        """Where the TensorRT timing cache for this TensorRT version and GPU lives (shared by models)."""
        tag = hashlib.sha256(f"{trt_version}|{gpu}".encode()).hexdigest()[:16]
        return self.directory / f"timing-{tag}.cache"


def ort_providers(
    cache_dir: str | Path | None = None, *, fp16: bool = False, device_id: int = 0
) -> list[tuple[str, dict[str, Any]] | str]:
    """ONNX Runtime providers, best first, for onnxruntime-gpu: TensorRT EP, CUDA EP, CPU.

    The TensorRT EP keeps its engines and timing cache under ``cache_dir`` (default: the engine
    cache directory), so the second start of the node skips the engine build.
    """
    directory = str(Path(cache_dir) if cache_dir is not None else EngineCache().directory / "ort")
    trt_options = {
        "device_id": device_id,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": directory,
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": directory,
        "trt_fp16_enable": fp16,
    }
    return [("TensorrtExecutionProvider", trt_options), ("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
