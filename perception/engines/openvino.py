"""OpenVINO engine: runs the same self-describing ``.onnx`` on the CPU with Intel's runtime.

OpenVINO reads the exported ONNX directly (uint8 NHWC BGR input, fused argmax, metadata in the
file), so there is no second model format. What it adds over ONNX Runtime on x86 CPUs is the
precision: ``--precision bf16`` runs the network in bfloat16 on AVX-512 BF16 / AMX (about twice
ONNX Runtime FP32 on a Sapphire Rapids Xeon), and ``--precision int8`` runs the model's INT8
sibling on VNNI/AMX. ``fp32`` (also what ``auto`` means here) keeps full precision.

Compiled models are cached (OpenVINO's ``CACHE_DIR``, default ``~/.cache/perception/openvino``,
``PERCEPTION_OPENVINO_CACHE`` overrides it), so a second start skips graph compilation. The folder
is made private to the user (0700); one that another user owns or others can write is not used, and
an entry there that is not the user's alone is removed before OpenVINO could load it
(``usable_cache_dir``); a cache that cannot be used (that, no home folder) is one warning, and the
model compiles without it. The folder keeps the ``OV_CACHE_MAX_ENTRIES`` most recently used blobs
within ``OV_CACHE_MAX_BYTES`` (``keep_cache_tidy``, after each compile). The chosen
precision, threads, streams and device are logged once. ``--streams N`` compiles N CPU streams
(``NUM_STREAMS``; ``--threads`` is the total, shared by them) and gives each frame in flight its
own infer request (``worker``). Installed with ``make venv-dev`` (the locked ``openvino`` extra; ``errors.OPENVINO_INSTALL_HINT``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from perception.contracts import OUTPUT_CLASS_IDS, OUTPUT_CONFIDENCE
from perception.engines import cache as engine_cache
from perception.engines.base import (
    INT8_SUFFIX,
    Engine,
    EngineOptions,
    InputSpec,
    backend_error_text,
    check_input_spec,
    int8_model_path,
    quota_threads,
    resource_refused,
    warn_int8_file_for_float,
    warn_int8_saturation,
)
from perception.errors import OPENVINO_INSTALL_HINT, ConfigError, DependencyError, ModelError
from perception.modelfile import read_model_metadata

log = logging.getLogger(__name__)

#: --precision -> OpenVINO INFERENCE_PRECISION_HINT (for INT8 models: the precision of the ops
#: left in float, bf16 where the CPU has it, which measured faster than f32 for the argmax tail).
OV_PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
#: OPTIMIZATION_CAPABILITIES entry each hint needs.
_CAPABILITY_OF_HINT = {"f32": "FP32", "bf16": "BF16", "f16": "FP16"}


#: How the warnings name this cache, and what running without it costs.
OV_CACHE = "OpenVINO cache"
OV_COST = "models are compiled at every start"
#: The cache keeps at most this many compiled models (the most recently used; OpenVINO itself never
#: removes one: a blob for each model, precision, thread count and OpenVINO version) ...
OV_CACHE_MAX_ENTRIES = 16
#: ... and at most this many bytes of them (the default model's FP32 blob is about 5 MB).
OV_CACHE_MAX_BYTES = 512 * 1024 * 1024
#: The name OpenVINO gives a compiled model in its cache (a decimal hash): other files there are not
#: its, and are never pruned (a folder of the user's own blobs given as the cache keeps them).
OV_BLOB_NAME = re.compile(r"[0-9]+\.blob")


def openvino_cache_dir() -> Path | None:
    """Where compiled models are cached (``PERCEPTION_OPENVINO_CACHE`` overrides the default); None
    when there is no home folder to put it in (one warning)."""
    return engine_cache.default_dir("PERCEPTION_OPENVINO_CACHE", "openvino", OV_CACHE, OV_COST)


def usable_cache_dir() -> Path | None:
    """``openvino_cache_dir`` when OpenVINO may use it (made private if missing; see the module
    docstring), with each entry there that another user owns or others can write removed first;
    None, with one warning, when it cannot be used."""
    folder = openvino_cache_dir()
    if folder is None:
        return None
    if engine_cache.utf8_path(folder) is None:
        engine_cache.warn_once(f"cannot use the {OV_CACHE} {folder}: OpenVINO takes only UTF-8 paths; {OV_COST} "
                               "(set PERCEPTION_OPENVINO_CACHE to a UTF-8 path)")
        return None
    if not engine_cache.usable_dir(folder, OV_CACHE, OV_COST):
        return None
    try:
        foreign = [entry for entry in os.scandir(folder)
                   if engine_cache.untrusted(entry.stat(follow_symlinks=False))]
    except OSError as exc:
        engine_cache.warn_once(f"cannot read the {OV_CACHE} {folder} ({engine_cache.os_cause(exc)}); {OV_COST}")
        return None
    for entry in foreign:
        why = engine_cache.untrusted(entry.stat(follow_symlinks=False))
        try:
            os.unlink(entry.path)
        except OSError:
            engine_cache.warn_once(f"not using the {OV_CACHE} {folder}: its entry {entry.name} cannot be removed, and "
                                   f"{why}; {OV_COST}")
            return None
        engine_cache.warn_once(f"removed {entry.path} from the {OV_CACHE} unread: {why}")
    return folder


def keep_cache_tidy(folder: Path, *, since: float) -> None:
    """After a compile with ``CACHE_DIR`` ``folder``: mark the blob it used as used now (the one
    OpenVINO mapped into this process on a hit, or wrote at ``since`` or later on a miss), then remove
    the least recently used blobs beyond ``OV_CACHE_MAX_ENTRIES`` / ``OV_CACHE_MAX_BYTES``
    (``engine_cache.prune_entries``; only names OpenVINO gives, ``<digits>.blob``). OpenVINO names a
    blob by a hash it does not expose, so the process's own memory map (``/proc/self/maps``) tells
    the blob of a hit, by its device and inode (the folder may be given relative, through a link
    or with ``..``, and the map names it by its real path)."""
    mapped: set[tuple[int, int]] = set()
    with contextlib.suppress(OSError, ValueError), \
            open("/proc/self/maps", encoding="utf-8", errors="surrogateescape") as maps:
        for line in maps:
            fields = line.rstrip("\n").split(maxsplit=5)  # address perms offset dev(major:minor) inode path
            if len(fields) == 6 and fields[5].endswith(".blob") and fields[4] != "0":
                major, minor = (int(part, 16) for part in fields[3].split(":"))
                mapped.add((os.makedev(major, minor), int(fields[4])))
    used: set[Path] = set()
    with contextlib.suppress(OSError), os.scandir(folder) as scan:
        for entry in scan:
            if not OV_BLOB_NAME.fullmatch(entry.name):
                continue
            st = entry.stat(follow_symlinks=False)
            if (st.st_dev, st.st_ino) in mapped or st.st_mtime >= since - 1:
                used.add(Path(entry.path))
    for blob in used:
        with contextlib.suppress(OSError):  # a read-only cache stays as it is
            os.utime(blob)
    engine_cache.prune_entries(folder, suffix=".blob", keep=used, max_entries=OV_CACHE_MAX_ENTRIES,
                               max_bytes=OV_CACHE_MAX_BYTES, what=OV_CACHE, kind="compiled model",
                               names=OV_BLOB_NAME)


#: The Model Conversion API (``openvino.convert_model`` and its telemetry), which ``import openvino``
#: loads inside a ``try: ... except ImportError`` although inference never uses it.
_OVC_MODULE = "openvino.tools.ovc"


def import_openvino():
    """The ``openvino`` module, or DependencyError saying how to install it.

    The first import leaves out the Model Conversion API: a ``None`` entry in ``sys.modules`` makes
    its import inside ``openvino/__init__`` fail into that package's own ``except ImportError``, and
    the entry is removed right after, so ``import openvino.tools.ovc`` still works later. That
    part was 0.22 s of the 0.35 s ``import openvino`` took on the 2-core Xeon (0.13 s without it),
    on the path to the node's first mask; the node reads ONNX files directly and converts nothing.
    """
    blocked = "openvino" not in sys.modules and _OVC_MODULE not in sys.modules
    if blocked:
        sys.modules[_OVC_MODULE] = None  # type: ignore[assignment]
    try:
        import openvino
    except ImportError:
        raise DependencyError(
            f"--engine openvino needs the openvino package: {OPENVINO_INSTALL_HINT}"
        ) from None
    finally:
        if blocked and sys.modules.get(_OVC_MODULE, 0) is None:
            del sys.modules[_OVC_MODULE]
    return openvino


@lru_cache(maxsize=1)
def shared_core():
    """One ``openvino.Core`` per process: creating one discovers the device plugins (0.1-0.2 s),
    and the probe, the engine and the capability check would otherwise each pay it."""
    ov = import_openvino()
    try:
        return ov.Core()
    except Exception as exc:  # a thread or memory refused (pids or memory limit): one line, not a traceback
        raise resource_refused(exc, "starting OpenVINO") or DependencyError(
            f"OpenVINO cannot start: {ov_error_text(exc)}; try --engine ort") from None


def cpu_capabilities() -> list[str]:
    """OpenVINO's CPU OPTIMIZATION_CAPABILITIES (e.g. ``FP32, BF16, INT8``); empty without OpenVINO.

    Raises:
        ResourceError: the system refused the CPU plugin a thread or memory (a container's pids
            or memory limit; the one line names it, exit 1), not a traceback.
        DependencyError: the CPU plugin cannot be created for another reason (its words, one line).
    """
    try:
        core = shared_core()
    except DependencyError:
        return []
    try:
        return [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    except Exception as exc:  # the plugin is created here: RuntimeError with a multi-line C++ trace
        raise resource_refused(exc, "starting OpenVINO's CPU plugin") or DependencyError(
            f"OpenVINO cannot start its CPU plugin: {ov_error_text(exc)}; try --engine ort") from None


def ov_error_text(exc: BaseException) -> str:
    """OpenVINO's words in ``exc`` without the ``Exception from src/...`` lines, which only say
    where in its sources it raised (its last such line, as ``backend_error_text`` shortens it)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith("Exception from")]
    return backend_error_text(RuntimeError(lines[-1])) if lines else type(exc).__name__


def int8_hint(capabilities: list[str]) -> str:
    """The INFERENCE_PRECISION_HINT of an INT8 file (the precision of the ops it leaves in float):
    bf16 where the CPU has it, which measured faster than f32 for the argmax tail, else f32."""
    return "bf16" if "BF16" in capabilities else "f32"


def int8_class_ids(model_path: str | Path, images: list[np.ndarray]) -> tuple[list[np.ndarray], list[str]]:
    """Class ids of the INT8 file ``model_path`` on each uint8 BGR image (at its input size) as
    ``--engine openvino`` computes them (``int8_hint``, the planar class tail), and its
    ``pool_padding_hazards``, for the INT8 gate (``export.int8_gate``). DependencyError without
    OpenVINO; ModelError when it cannot compile the file."""
    core = shared_core()
    hint = int8_hint(cpu_capabilities())
    try:
        model = core.read_model(str(model_path))
        hazards = pool_padding_hazards(model)
        planar_class_tail(model)
        request = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint}).create_infer_request()
    except Exception as exc:  # RuntimeError subclasses with multi-line C++ traces
        raise resource_refused(exc, f"compiling {Path(model_path).name} on OpenVINO") or ModelError(
            f"OpenVINO cannot compile {Path(model_path).name} for the CPU at {hint}: {backend_error_text(exc)}") from None
    ids = [run_request(request, image[None], [OUTPUT_CLASS_IDS])[OUTPUT_CLASS_IDS][0] for image in images]
    return ids, hazards


def pool_padding_hazards(model) -> list[str]:
    """Names of the average pools of ``model`` (an ``openvino.Model`` read from a QDQ ONNX file) that
    OpenVINO's CPU plugin computes otherwise than ONNX: padding counted in (``exclude-pad`` false,
    padded), on a tensor dequantised with a non-zero zero point. OpenVINO runs the pool on the 8-bit
    values and pads them with 0, where ONNX pads the dequantised tensor with 0.0, the zero point
    (``export.qdq.padded_pool_inputs``, which this version's ort quantiser quantises symmetrically).
    Read from the graph OpenVINO's ONNX reader makes of DequantizeLinear: AvgPool <- Multiply(scale)
    <- Subtract(zero point) <- Convert; a graph of another shape is not reported."""
    hazards = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "AvgPool":
            continue
        attrs = op.get_attributes()
        padded = any(attrs.get("pads_begin", [])) or any(attrs.get("pads_end", [])) or \
            str(attrs.get("auto_pad", "")).lower() in ("same_upper", "same_lower")
        if attrs.get("exclude-pad", True) or not padded:
            continue
        node = op.input(0).get_source_output().get_node()
        if node.get_type_name() == "Multiply":
            node = next((i.get_source_output().get_node() for i in node.inputs()
                         if i.get_source_output().get_node().get_type_name() == "Subtract"), None)
        if node is None or node.get_type_name() != "Subtract":
            continue
        zero_point = node.input(1).get_source_output().get_node()
        while zero_point.get_type_name() == "Convert":
            zero_point = zero_point.input(0).get_source_output().get_node()
        if zero_point.get_type_name() != "Constant" or np.any(zero_point.get_data() != 0):
            hazards.append(op.get_friendly_name())
    return hazards


_warned_disagreement: set[str] = set()


def warn_int8_disagreement(path: Path, metadata, hazards: list[str]) -> None:
    """Log once per file and process when OpenVINO is known to compute the INT8 file ``path``
    otherwise than its FP32 model: its INT8 gate measured its class ids under OpenVINO
    (``val_metrics.int8_gate.openvino_agreement_with_fp32``) below what ``--engine auto`` asks of
    it (``engines.probe.int8_min_agreement``), or, for a file whose gate did not measure
    OpenVINO, its graph has ``hazards`` (``pool_padding_hazards``: the ort quantiser's files before
    it quantised those pools symmetrically, whose masks differed from FP32 on 35-39 % of pixels).
    Warned, not refused: the file is what the user asked for, and the line says how to mend it."""
    key = str(path.resolve())
    if key in _warned_disagreement:
        return
    from perception.engines.probe import int8_min_agreement

    gate = metadata.val_metrics.get("int8_gate")
    gate = gate if isinstance(gate, dict) else {}
    measured = gate.get("openvino_agreement_with_fp32")
    if isinstance(measured, (int, float)) and not isinstance(measured, bool):
        need = int8_min_agreement(gate)
        if measured >= need:
            return
        why = (f"its INT8 gate measured its class ids under OpenVINO equal to FP32 on only {100 * measured:.2f} % of "
               f"the pixels (ONNX Runtime {100 * float(gate.get('agreement_with_fp32') or 0):.2f} %), under the "
               f"{100 * need:.2f} % --engine auto asks of it")
    else:
        if not hazards:
            return
        why = (f"its average pool {hazards[0]} counts padding in and its input has a non-zero zero point, which "
               "OpenVINO pads with the 8-bit 0 where ONNX pads the value 0.0: such files' masks differed from "
               "FP32 on 35-39 % of the pixels under OpenVINO, 2-3 % under ONNX Runtime")
    _warned_disagreement.add(key)
    fp32 = path.name.removesuffix(INT8_SUFFIX) + ".onnx" if path.name.endswith(INT8_SUFFIX) else "its FP32 model"
    log.warning("%s under OpenVINO: %s; quantise it again with this version (python -m perception.export.quantize "
                "%s), or run it with --engine ort", path.name, why, fp32)


class OpenVinoEngine(Engine):
    """An OpenVINO compiled model over an exported ONNX file (see the module docstring).

    Raises (from the constructor):
        DependencyError: OpenVINO is not installed, or the CPU lacks the requested precision.
        ModelError: the file is missing, corrupt, without metadata, or OpenVINO cannot compile it.
        ConfigError: a provider other than ``auto``/``cpu``.
    """

    kind = "openvino"

    def __init__(self, model_path: str | Path, options: EngineOptions | None = None) -> None:
        options = options or EngineOptions()
        if options.provider not in ("auto", "cpu"):
            raise ConfigError(f"--engine openvino runs on the CPU; --provider {options.provider} is for --engine ort")
        ov = import_openvino()
        path = Path(model_path)
        precision = options.precision
        if precision == "int8":
            path = int8_model_path(path)
        self.model_path = str(path)
        self.metadata = read_model_metadata(path)  # ModelError: missing, corrupt, no metadata, bad I/O
        if precision == "auto":
            precision = "int8" if self.metadata.precision == "int8" else "fp32"
        # An INT8 file runs its 8-bit kernels whatever the hint: a float --precision sets only the
        # precision of the ops left in float, and what runs (and the stats say) is int8.
        runs = "int8" if self.metadata.precision == "int8" else precision
        if runs != precision:
            warn_int8_file_for_float(log, path, precision, "OpenVINO")
        core = shared_core()
        capabilities = cpu_capabilities()
        if precision == "int8":
            hint = int8_hint(capabilities)
        else:
            hint = OV_PRECISION_HINTS[precision]
            if _CAPABILITY_OF_HINT[hint] not in capabilities:
                raise DependencyError(
                    f"--precision {precision}: this CPU has no {_CAPABILITY_OF_HINT[hint]} support in OpenVINO "
                    f"(it offers {', '.join(capabilities)}); use --precision fp32 or int8"
                )
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        cache_dir = usable_cache_dir()
        if cache_dir is not None:
            config["CACHE_DIR"] = str(cache_dir)
        if options.streams > 1:
            # --streams N: N CPU streams, each running one infer request on its share of the
            # INFERENCE_NUM_THREADS (the total across streams; OpenVINO gives each stream at least
            # one thread, so it runs fewer streams than asked when threads are short). An explicit
            # NUM_STREAMS is kept under either hint; THROUGHPUT is the hint that names the intent.
            config.update(PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=options.streams)
        threads = options.threads or quota_threads()
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            model = core.read_model(str(path))
            hazards = pool_padding_hazards(model) if runs == "int8" else []
            self.planar_tails = planar_class_tail(model)
            compiled_at = time.time()
            self._compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with multi-line C++ traces
            # a thread or memory the system refused (a pids or memory limit) is not the file's fault:
            # ResourceError, exit 1 (a launch file's respawn may find the limit no longer reached)
            refused = resource_refused(exc, f"compiling {path.name} on OpenVINO")
            raise refused or ModelError(
                f"OpenVINO cannot compile {path.name} for the CPU at {hint}: {ov_error_text(exc)}; try --engine ort "
                "or re-export the model"
            ) from None
        if cache_dir is not None:
            keep_cache_tidy(cache_dir, since=compiled_at)
        self._request = self._compiled.create_infer_request()
        inp = self._compiled.inputs[0]
        shape = inp.get_partial_shape()
        self.input_spec = InputSpec(
            name=inp.get_any_name(),
            shape=tuple(d.get_length() if d.is_static else None for d in shape),
            dtype=inp.get_element_type().to_dtype().name,
        )
        check_input_spec(self.input_spec, self.metadata, source=path.name)
        outputs = {name for out in self._compiled.outputs for name in out.get_names()}
        self._output_names = [OUTPUT_CLASS_IDS] + ([OUTPUT_CONFIDENCE] if OUTPUT_CONFIDENCE in outputs else [])
        self.output_names = tuple(self._output_names)
        self.precision = runs
        self.provider = f"CPU-{runs}"
        threads = self._compiled.get_property("INFERENCE_NUM_THREADS")
        self.streams = options.streams
        #: CPU streams OpenVINO runs (fewer than ``streams`` when it had fewer threads than that).
        self.cpu_streams = int(self._compiled.get_property("NUM_STREAMS"))
        if self.cpu_streams < self.streams:
            log.warning("OpenVINO runs %d CPU streams for --streams %d (one thread each at least, %s threads): "
                        "the other frames in flight wait for a free stream", self.cpu_streams, self.streams, threads)
        log.info(
            "OpenVINO %s: %s on %s, precision %s (inference hint %s; CPU offers %s), %s threads, %d stream%s, cache %s",
            ov.__version__ if hasattr(ov, "__version__") else ov.get_version(),
            self.metadata.model_id,
            core.get_property("CPU", "FULL_DEVICE_NAME"),
            runs,
            hint,
            ", ".join(capabilities),
            threads,
            self.cpu_streams,
            "" if self.cpu_streams == 1 else "s",
            config.get("CACHE_DIR", "off"),
        )
        if runs == "int8":
            warn_int8_saturation(log, self.metadata)
            warn_int8_disagreement(path, self.metadata, hazards)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self.infer_any_batch(self._run, batch)

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return run_request(self._request, batch, self._output_names)

    def worker(self) -> OpenVinoWorker:
        """Its own infer request on the shared compiled model (requests are not thread-safe, the
        compiled model is): one frame in flight on one of the ``streams`` CPU streams."""
        return OpenVinoWorker(self, self._compiled.create_infer_request())

    def close(self) -> None:
        self._request = None
        self._compiled = None


def planar_class_tail(model) -> int:
    """Rewrite ``model`` (an ``openvino.Model``) so its per-pixel class tail runs in the planar layout.

    Returns how many upsample -> argmax tails it rewrote (0 leaves the model as it was).

    An exported graph ends in Resize (the logits to the input size) -> ArgMax over the classes, and
    the confidence output reduces over the classes too. OpenVINO's CPU plugin keeps the layout the
    convolutions chose (channels-last or blocked) through that tail, where a reduction over a dozen
    classes is slow: on a 2-core AVX2 EPYC the tail of the default model took about 19 ms of a 56 ms
    frame (TopK 6-7 ms alone), against 8 ms for the same ops on planar tensors. Folding the classes
    into the batch around the upsample (N x C x h x w -> N*C x 1 x h x w, upsample, back to
    N x C x H x W) leaves OpenVINO nothing to keep but the planar layout, for the upsample and every
    reduction after it. Each class is upsampled on its own either way, so the values are the same;
    only the order of the confidence's sum may differ in the last bit. Done here, on the model
    OpenVINO compiles, and not in the file: ONNX Runtime runs that form's upsample 2 ms slower.
    No pass of OpenVINO's own does this (its layout choice is internal to the CPU plugin).
    """
    import_openvino()
    from openvino import opset11

    rewritten = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "TopK" or op.get_attributes().get("axis") != 1:
            continue
        upsample = _upsample_feeding(op)
        if upsample is None:
            continue
        in_shape = upsample.input(0).get_partial_shape()
        out_shape = upsample.get_output_partial_shape(0)
        if in_shape.rank.is_dynamic or in_shape.rank.get_length() != 4 or not all(
            d.is_static for d in (in_shape[1], out_shape[1], out_shape[2], out_shape[3])
        ):
            continue
        classes, height, width = (out_shape[i].get_length() for i in (1, 2, 3))
        attrs = upsample.get_attributes()
        if (classes < 2 or in_shape[1].get_length() != classes or attrs.get("antialias")
                or attrs.get("shape_calculation_mode") != "sizes"
                or any(attrs.get("pads_begin", [])) or any(attrs.get("pads_end", []))):
            # An upsample across the classes, or one this rewrite would not reproduce exactly: with
            # scales the coordinates follow the given scale, not output/input size.
            continue
        source = upsample.input(0).get_source_output()
        # [N, C, h, w] -> [N*C, 1, h, w]: a 0 copies that axis of the input (special_zero).
        folded = opset11.reshape(source, opset11.constant(np.array([-1, 1, 0, 0], np.int64)), special_zero=True)
        resized = opset11.interpolate(
            folded,
            opset11.constant(np.array([height, width], np.int64)),
            mode=attrs["mode"],
            shape_calculation_mode="sizes",
            coordinate_transformation_mode=attrs["coordinate_transformation_mode"],
            nearest_mode=attrs["nearest_mode"],
            cube_coeff=attrs["cube_coeff"],
            axes=opset11.constant(np.array([2, 3], np.int64)),
        )
        # [N*C, 1, H, W] -> [N, C, H, W]
        unfolded = opset11.reshape(resized, opset11.constant(np.array([-1, classes, height, width], np.int64)), special_zero=False)
        upsample.output(0).replace(unfolded.output(0))
        rewritten += 1
    if rewritten:
        model.validate_nodes_and_infer_types()
    return rewritten


def _upsample_feeding(argmax):
    """The Interpolate whose output reaches ``argmax``'s input through nothing but elementwise ops
    with a constant (the logit adjustment's per-class Add), or None."""
    node = argmax.input(0).get_source_output().get_node()
    while node.get_type_name() in ("Add", "Subtract", "Multiply"):
        sources = [i.get_source_output().get_node() for i in node.inputs()]
        variable = [n for n in sources if n.get_type_name() != "Constant"]
        if len(variable) != 1:
            return None
        node = variable[0]
    return node if node.get_type_name() == "Interpolate" and node.get_output_size() == 1 else None


def run_request(request, batch: np.ndarray, output_names: list[str]) -> dict[str, np.ndarray]:
    """``request.infer`` on ``batch``, its outputs copied out."""
    request.infer({0: batch})
    # The request reuses its output buffers on the next call, while the publish thread may
    # still hold this frame's ids: hand out copies (one byte per pixel, tens of microseconds).
    return {name: request.get_tensor(name).data.copy() for name in output_names}


class OpenVinoWorker:
    """One frame in flight of an ``OpenVinoEngine`` (``engine.worker()``): its own infer request."""

    def __init__(self, engine: OpenVinoEngine, request) -> None:
        self._engine, self._request = engine, request

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self._engine.infer_any_batch(self._run, batch)

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return run_request(self._request, batch, self._engine._output_names)
