"""ONNX Runtime engine: runs an exported ``.onnx`` model on the TensorRT, CUDA or CPU provider.

``--provider auto`` picks the first available of TensorRT, CUDA, CPU (from
``onnxruntime.get_available_providers()``); naming one that is not installed is an error rather
than a silent fall back to the CPU. The choice is logged once.

On the CPU provider the graph ONNX Runtime optimised (fusions, NCHWc layouts) is saved once to
``~/.cache/perception/ort`` (``PERCEPTION_ORT_CACHE`` overrides it; ``PERCEPTION_ORT_CACHE=off``
disables it) under a key of the model's SHA-256, the ONNX Runtime version, the CPU and its ISA
(the saved layouts are specific to them), and later starts load it with optimisation off: session
creation went from 0.14-0.16 s to 0.075 s for the default model on a busy 2-core Xeon. A model whose
weights lie outside it (``model.onnx`` + ``model.onnx.data``, ONNX external data) is not cached: the
saved graph would name its weights file relative to the cache folder, and the key would not see new
weights in that file. Entries are named by the key alone (``<hash>.onnx``), so no file name of the
user's reaches ONNX Runtime through them. The cache keeps the ``ORT_CACHE_MAX_ENTRIES`` most recently
used graphs within ``ORT_CACHE_MAX_BYTES`` (``prune_cache``, after each new entry). The folder is
private to the user and one that others could write is not used (``perception.engines.cache``). A
cache that cannot be written (read-only, full, no permission, no home folder) is one warning, and
the session is made without it: a cache is never the reason a node does not start.

ONNX Runtime's own log lines stay off the terminal on the CPU (an error there is also raised, and
said in one line naming the file, ``backend_error_text`` keeping its cause); its fall back to the
CPU, which prints a banner on stdout, is off where the CPU is the only provider. A model path that
is not valid UTF-8 (which ONNX Runtime's ``str`` arguments cannot carry) is read here and handed to
ONNX Runtime as bytes (``_session``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from perception.contracts import ONNX_OPSET, OUTPUT_CLASS_IDS, OUTPUT_CONFIDENCE
from perception.engines.base import (
    Engine,
    EngineOptions,
    InputSpec,
    backend_error_text,
    check_input_spec,
    int8_model_path,
    quota_threads,
    resource_refused,
    usable_cores,
    warn_int8_file_for_float,
    warn_int8_saturation,
)
from perception.engines.cache import (
    disk_full,
    os_cause,
    prune_entries,
    quiet_ort_telemetry,
    trusted_entry,
    unlink_quietly,
    usable_dir,
    utf8_path,
    warn_once,
)
from perception.errors import ConfigError, DependencyError, ModelError, PerceptionError, ort_gpu_fix
from perception.model_metadata import ModelMetadata
from perception.modelfile import read_model_file

quiet_ort_telemetry()  # before ONNX Runtime's import, which prints that warning

import onnxruntime as ort  # noqa: E402

log = logging.getLogger(__name__)

#: --provider name -> ONNX Runtime provider, in the order ``auto`` prefers them.
ORT_PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}

_ORT_TYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32", "tensor(float16)": "float16"}


def choose_providers(requested: str, available: list[str]) -> list[str]:
    """The provider list to hand ONNX Runtime: the requested (or best available) one, then fall-backs.

    Raises:
        DependencyError: ``requested`` names a provider this ONNX Runtime build lacks.
    """
    order = list(ORT_PROVIDERS)
    if requested == "auto":
        chosen = [ORT_PROVIDERS[n] for n in order if ORT_PROVIDERS[n] in available]
        return chosen or ["CPUExecutionProvider"]
    wanted = ORT_PROVIDERS[requested]
    if wanted not in available:
        raise DependencyError(
            f"ONNX Runtime here has no {wanted} (available: {', '.join(available)}); "
            f"{ort_gpu_fix()}; or use --provider cpu"
        )
    # Keep the slower providers behind the requested one: TensorRT hands the nodes it cannot
    # run to CUDA, then CPU, instead of failing the whole session.
    return [ORT_PROVIDERS[n] for n in order[order.index(requested) :] if ORT_PROVIDERS[n] in available]


def tensorrt_provider_options(metadata: ModelMetadata) -> dict[str, object]:
    """Options for ONNX Runtime's TensorRT provider: the exporter's (engine and timing caches on,
    shared with ``perception export``); ONNX Runtime's defaults if the export package is absent."""
    try:
        from perception.engines.cache import ort_providers
    except ImportError:
        log.warning("export package not installed: TensorRT provider runs without an engine cache")
        return {}
    trt_entry = ort_providers(fp16=metadata.precision == "fp16")[0]
    return dict(trt_entry[1]) if isinstance(trt_entry, tuple) else {}


#: How the warnings name this cache, and what running without it costs.
ORT_CACHE = "ONNX Runtime cache"
ORT_COST = "graphs are optimised at every start"
#: The cache keeps at most this many graphs (the most recently used) ...
ORT_CACHE_MAX_ENTRIES = 16
#: ... and at most this many bytes of them (the default model's graph is 7.8 MB).
ORT_CACHE_MAX_BYTES = 256 * 1024 * 1024


def ort_cache_dir() -> Path | None:
    """Where optimised CPU graphs are cached; None when ``PERCEPTION_ORT_CACHE=off``, or when there
    is no home folder to put it in (one warning)."""
    from perception.engines.cache import default_dir

    env = os.environ.get("PERCEPTION_ORT_CACHE")
    if env and env.lower() in ("off", "0", "none"):
        return None
    return default_dir("PERCEPTION_ORT_CACHE", "ort", ORT_CACHE, ORT_COST)


#: ONNX Runtime's words for a model stamped with an opset newer than it knows.
_NEWER_OPSET = re.compile(r"Opset (\d+) is under development.*?support for domain (\S+) is till opset (\d+)")


def load_error(path: Path, exc: BaseException) -> ModelError:
    """ONNX Runtime's failure to load ``path`` as one line that keeps its cause, with the fix."""
    reason = backend_error_text(exc)
    newer = _NEWER_OPSET.search(" ".join(str(exc).split()))
    if newer:
        opset, domain, supported = newer.groups()
        return ModelError(f"ONNX Runtime {ort.__version__} cannot load {path.name}: its opset {domain} {opset} is newer "
                          f"than this ONNX Runtime supports (up to opset {supported}); export the model at opset "
                          f"{supported} or lower (perception export writes opset {ONNX_OPSET}), or upgrade onnxruntime")
    return ModelError(f"ONNX Runtime cannot load {path.name}: {reason}; the file is damaged or was not written by "
                      "'perception export': re-export the model")


def optimized_model_path(path: Path, cache_dir: Path) -> Path:
    """The cache entry for ``path``'s optimised CPU graph (see the module docstring): named by its
    key alone, whatever the model file is called."""
    from perception.engines.cpu import cpu_isa, cpu_model

    digest = hashlib.sha256(path.read_bytes())
    digest.update(f"|{ort.__version__}|{cpu_model()}|{','.join(cpu_isa())}".encode())
    return cache_dir / f"{digest.hexdigest()[:24]}.onnx"


def prune_cache(cache_dir: Path, keep: Path) -> int:
    """Remove the least recently used graphs of ``cache_dir`` beyond ``ORT_CACHE_MAX_ENTRIES`` or
    ``ORT_CACHE_MAX_BYTES`` (``keep``, the entry just written, always stays), and temporary files of
    writes interrupted over an hour ago; returns how many graphs it removed. A hit refreshes an
    entry's time (``_touch``), so what runs stays."""
    return prune_entries(cache_dir, suffix=".onnx", keep={keep}, max_entries=ORT_CACHE_MAX_ENTRIES,
                         max_bytes=ORT_CACHE_MAX_BYTES, what=ORT_CACHE, kind="graph")


def _touch(path: Path) -> None:
    """Mark a cache hit as recently used (``prune_cache``); a read-only cache stays as it is."""
    with contextlib.suppress(OSError):
        os.utime(path)


def _session(source: Path, session_options, provider_list: list, *, external: tuple = ()):
    """``ort.InferenceSession`` over ``source``: by its path when ONNX Runtime can take it
    (``utf8_path``), else over its bytes; a model whose weights are in other files (``external``)
    needs its path, and is then refused in one line saying to rename it. Without ONNX Runtime's fall
    back (a banner on stdout, then the same CPU again) where the CPU is the only provider."""
    source_arg: str | bytes | None = utf8_path(source)
    if source_arg is None:
        if external:
            raise ModelError(f"ONNX Runtime cannot open {source.name}: its path {str(source)!r} is not valid UTF-8 and "
                             "its weights are in a separate file, which ONNX Runtime finds by that path; rename the "
                             "file (or its folder) to a UTF-8 name")
        source_arg = source.read_bytes()
    names = [p[0] if isinstance(p, tuple) else p for p in provider_list]
    extra = {"enable_fallback": 0} if names == ["CPUExecutionProvider"] else {}
    return ort.InferenceSession(source_arg, sess_options=session_options, providers=provider_list, **extra)


def stream_threads(threads: int, streams: int) -> int:
    """Intra-op threads of each of ``streams`` calls at once out of ``threads`` in all (0: the
    usable cores: ONNX Runtime's default, its physical cores, for one stream, unless a cgroup CPU
    quota allows fewer, which ONNX Runtime does not read; for several, the usable cores shared out)."""
    if threads:
        return threads if streams <= 1 else max(1, threads // streams)
    if streams <= 1:
        return quota_threads()
    return max(1, usable_cores() // streams)


class OrtEngine(Engine):
    """An ONNX Runtime session over an exported model (see the module docstring)."""

    kind = "ort"

    def __init__(self, model_path: str | Path, options: EngineOptions | None = None, *, memory_arena: bool = True) -> None:
        """``memory_arena=False``: no ONNX Runtime CPU memory arena. The arena keeps what it once
        allocated past the session's end in a way the C allocator does not give back, so a session
        that is to make way for another engine (``--engine auto``'s first start) runs without one."""
        options = options or EngineOptions()
        path = Path(model_path)
        if options.precision in ("bf16", "fp16"):
            raise ConfigError(
                f"--engine ort runs the model file's own precision; for --precision {options.precision} on a CPU "
                "use --engine openvino (or --engine auto)"
            )
        if options.precision == "int8":
            path = int8_model_path(path)
        self.model_path = str(path)
        # ModelError: missing, corrupt, no metadata, bad I/O, its weights file missing or short
        self.metadata, external = read_model_file(path)
        if options.precision == "fp32" and self.metadata.precision == "int8":
            warn_int8_file_for_float(log, path, "fp32", "ONNX Runtime")
        providers = choose_providers(options.provider, ort.get_available_providers())
        session_options = ort.SessionOptions()
        if providers == ["CPUExecutionProvider"]:
            # Its errors are raised too (and said in one line below); its warnings on the CPU are
            # about hardware-specific layouts (why the cache key holds the CPU). On a GPU its
            # warnings name the nodes a provider hands on, which the user wants to see.
            session_options.log_severity_level = 4
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # --streams N: the N frames in flight share this one session (``run`` is thread-safe), each
        # call on threads // N intra-op threads (the caller's thread is one of them). Measured on the
        # 2-core Xeon, default model, 2 calls at once: one session at 1 thread each 31-41 FPS,
        # at 2 threads each 27-33, two sessions at 1 thread each 20-28, one call at 2 threads 26-27.
        self.streams = options.streams
        self.intra_op_threads = stream_threads(options.threads, options.streams)
        session_options.intra_op_num_threads = self.intra_op_threads
        session_options.inter_op_num_threads = 1
        session_options.enable_cpu_mem_arena = memory_arena
        # Worker threads that spin between operators take the CPU that capture, letterboxing and
        # publishing need. Measured on 2 cores (CamVid BiSeNet V2, 352x480, 2 threads): engine
        # alone 3 % slower, the node 6 % faster (40.6 -> 43.1 FPS). The node is what runs.
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        provider_list: list[object] = [
            (p, tensorrt_provider_options(self.metadata)) if p == "TensorrtExecutionProvider" else p
            for p in providers
        ]
        try:
            self.session = self._cached_session(path, session_options, provider_list, providers, external)
        except PerceptionError:  # said already (a path ONNX Runtime cannot take)
            raise
        except Exception as exc:  # onnxruntime raises its own pybind types (Fail, InvalidGraph, ...)
            refused = resource_refused(exc, f"loading {path.name} on ONNX Runtime")
            raise (refused or load_error(path, exc)) from None
        inp = self.session.get_inputs()[0]
        self.input_spec = InputSpec(
            name=inp.name,
            shape=tuple(d if isinstance(d, int) else None for d in inp.shape),
            dtype=_ORT_TYPES.get(inp.type, inp.type),
        )
        check_input_spec(self.input_spec, self.metadata, source=path.name)
        outputs = {o.name for o in self.session.get_outputs()}
        self._output_names = [OUTPUT_CLASS_IDS] + ([OUTPUT_CONFIDENCE] if OUTPUT_CONFIDENCE in outputs else [])
        self.output_names = tuple(self._output_names)
        self.provider = self.session.get_providers()[0]
        self.precision = self.metadata.precision
        log.info(
            "ONNX Runtime %s: %s on %s (available: %s; intra-op threads: %s%s)",
            ort.__version__,
            self.metadata.model_id,
            self.provider,
            ", ".join(ort.get_available_providers()),
            self.intra_op_threads or "ONNX Runtime's default, one per physical core",
            f" per frame, {self.streams} frames in flight on one session" if self.streams > 1 else "",
        )
        if self.precision == "int8" and self.provider == "CPUExecutionProvider":
            warn_int8_saturation(log, self.metadata)

    @staticmethod
    def _cached_session(path: Path, session_options, provider_list: list, providers: list[str], external: dict):
        """A session over the cached optimised graph when there is one (CPU only), else over
        ``path``, saving the optimised graph for the next start; not for a model with ``external``
        weights files (the module docstring). A cache that cannot be used or written is one warning
        (``perception.engines.cache``), and the session is made without it."""
        cache_dir = ort_cache_dir() if providers == ["CPUExecutionProvider"] else None
        if cache_dir is None:
            return _session(path, session_options, provider_list, external=tuple(external))
        if external:
            log.debug("no optimised-graph cache for %s: its weights are in %s (ONNX external data), which a cached graph "
                      "could not find and its key would not see change", path.name, ", ".join(p.name for p in external))
            return _session(path, session_options, provider_list, external=tuple(external))
        if utf8_path(cache_dir) is None:
            warn_once(f"cannot use the {ORT_CACHE} {cache_dir}: ONNX Runtime takes only UTF-8 paths; {ORT_COST} "
                      "(set PERCEPTION_ORT_CACHE to a UTF-8 path)")
            return _session(path, session_options, provider_list)
        if not usable_dir(cache_dir, ORT_CACHE, ORT_COST):
            return _session(path, session_options, provider_list)
        cached = optimized_model_path(path, cache_dir)
        if trusted_entry(cached, ORT_CACHE, "optimising the model again"):
            session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            try:
                session = _session(cached, session_options, provider_list)
            except Exception as exc:  # a damaged entry: drop it and optimise again
                refused = resource_refused(exc, f"loading {path.name} on ONNX Runtime")
                if refused is not None:  # a thread or memory the system refused: the entry is fine, kept
                    raise refused from None
                if cached.exists():  # not one that another process pruned meanwhile
                    warn_once(f"ignoring the damaged optimised-graph cache {cached} ({backend_error_text(exc, 160)})")
                    unlink_quietly(cached)
                session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            else:
                _touch(cached)
                return session
        try:  # ours, mode 0600: ONNX Runtime writes into it (the umask would give others its mode)
            fd, name = tempfile.mkstemp(prefix=f".{cached.stem}.tmp", suffix=".onnx", dir=cache_dir)
            os.close(fd)
        except OSError as exc:  # read-only, full, no permission
            warn_once(f"cannot write the {ORT_CACHE} {cache_dir} ({os_cause(exc, cache_dir)}); {ORT_COST}")
            return _session(path, session_options, provider_list)
        tmp = Path(name)
        # The warning that an NCHWc graph is hardware-specific (why the key holds the CPU) is below
        # the log level the constructor set.
        session_options.optimized_model_filepath = str(tmp)
        try:
            try:
                session = _session(path, session_options, provider_list)
            except Exception as exc:  # it could not write the graph (a full disk), or the model does not load
                session_options.optimized_model_filepath = ""
                session = _session(path, session_options, provider_list)  # the model's own error, if that
                cause = "no space left on the device" if disk_full(cache_dir) else backend_error_text(exc, 160)
                warn_once(f"cannot write the {ORT_CACHE} {cache_dir} ({cause}); {ORT_COST}")
                return session
            try:
                os.replace(tmp, cached)
            except OSError as exc:
                warn_once(f"cannot write the {ORT_CACHE} {cache_dir} ({os_cause(exc, cache_dir)}); {ORT_COST}")
                return session
        finally:
            unlink_quietly(tmp)  # gone after the rename; else what was left of it
        prune_cache(cache_dir, keep=cached)
        return session

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self.infer_any_batch(self._run, batch)

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        results = self.session.run(self._output_names, {self.input_spec.name: batch})
        return dict(zip(self._output_names, results, strict=True))

    def worker(self) -> OrtEngine:
        """The engine itself: ``InferenceSession.run`` is thread-safe and returns new arrays."""
        return self

    def close(self) -> None:
        self.session = None
