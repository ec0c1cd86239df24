"""One configuration of the engine bench: its grid point, its loaded engine and input batches,
and its class-id agreement with ONNX Runtime FP32 (measured outside the timing).

``bench/engine.py`` builds the grid of cases and reports them; ``bench/timing.py`` times them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from perception.config import load_config
from perception.engines.base import backend_error_text
from perception.errors import ConfigError, ModelError, PerceptionError
from perception.frames import bench_frames

log = logging.getLogger("perception.bench.engine")

#: Bench-only engine names: a registered engine with fixed options, measured as a row of its own
#: (``--engine torch-tensorrt``: the torch engine with ``--compile tensorrt``, beside ``tensorrt``).
ENGINE_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {"torch-tensorrt": ("torch", {"compile": "tensorrt"})}
#: The ``perception run`` flag each variant stands for, which its engine's errors name: the bench
#: has no such flag, so they are said in the bench's own terms (``in_bench_terms``).
VARIANT_RUN_FLAGS: dict[str, str] = {"torch-tensorrt": "--compile tensorrt"}


def in_bench_terms(message: str, variant: str) -> str:
    """An engine error about ``perception run``'s flag for ``variant`` (``VARIANT_RUN_FLAGS``) with
    the bench's flags instead: "drop --compile tensorrt" becomes "drop torch-tensorrt from --engine",
    and the flag itself ``--engine torch-tensorrt``."""
    flag = VARIANT_RUN_FLAGS.get(variant)
    if not flag:
        return message
    option = flag.split()[0]  # "--compile"
    for drop in (f"drop {flag}", f"drop {option}"):
        message = message.replace(drop, f"drop {variant} from --engine")
    return message.replace(flag, f"--engine {variant}")

#: Distinct frames cycled through the timed runs (a few, so caches see varied data).
FRAME_POOL = 8
#: Images the ONNX Runtime reference of the agreement runs at once, whatever the batch measured
#: (its class ids are the same; its memory then does not grow with the batch).
REFERENCE_CHUNK = 8
#: The share of the available memory a bench may plan to use: the estimate is not exact, and the
#: machine goes on with other work.
MEMORY_SHARE = 0.85


@dataclass
class Case:
    """One configuration of the grid and what was measured for it."""

    model: Path
    engine_name: str
    provider: str | None
    threads: int | None
    batch: int
    fp16: bool = False
    precision: str = "auto"
    streams: int | None = None
    engine: Any = None
    workers: list[Any] = field(default_factory=list)
    wall_ns: int = 0
    cpu_ns: int = 0  # this process's CPU time over the timed blocks (all its threads)
    agreement: float | None = None
    batches: list[np.ndarray] = field(default_factory=list)
    samples_ns: list[int] = field(default_factory=list)
    rss_samples: list[int] = field(default_factory=list)
    rss_before_load: int = 0
    rss_after_load: int = 0
    gpu_peak_mb: float | None = None
    load_s: float = 0.0
    skipped: str | None = None
    #: Why ``agreement`` is None for an ONNX file: its ONNX Runtime reference could not run it.
    agreement_skipped: str | None = None
    name: str = ""  # the model's short name in labels (``model_names``); the file's stem when empty

    def label(self) -> str:
        parts = [self.name or self.model.stem, self.engine_name]
        if self.engine is not None:
            parts.append(str(self.engine.provider))
        elif self.provider:
            parts.append(self.provider)
        if self.threads:
            parts.append(f"t{self.threads}")
        if self.streams:
            parts.append(f"s{self.streams}")
        if self.fp16:
            parts.append("fp16")
        if self.precision != "auto":
            parts.append(self.precision)
        parts.append(f"b{self.batch}")
        return " ".join(parts)


def model_names(models: list[Path]) -> dict[Path, str]:
    """A short name per model file for labels: its stem, or, when two files share a stem (a new and an
    old ``default.onnx``), as many trailing parts of their paths as it takes to tell them apart
    (``assets/default``, ``old/default``)."""
    unique = list(dict.fromkeys(models))
    for suffix in (False, True):  # m.onnx and m.pt side by side keep their suffixes
        for depth in range(1, max((len(m.parts) for m in unique), default=1) + 1):
            names = {m: "/".join((m if suffix else m.with_suffix("")).parts[-depth:]) for m in unique}
            if len(set(names.values())) == len(unique):
                return names
    return {m: str(m) for m in unique}


def rss() -> int:
    return psutil.Process().memory_info().rss


def open_engine(
    model: Path, engine: str, provider: str | None = None, threads: int | None = None, fp16: bool = False,
    precision: str = "auto", streams: int | None = None,
):
    """Load ``model`` with the named engine; None for provider/threads/streams leaves the engine's default.

    Raises whatever the engine loader raises for a bad name, file or provider (ConfigError,
    ModelError, DependencyError): all are one-line user errors.
    """
    from perception.engines import EngineOptions, load_engine

    options: dict[str, Any] = {"fp16": fp16, "precision": precision}
    name, variant_options = ENGINE_VARIANTS.get(engine, (engine, {}))
    options.update(variant_options)
    if provider:
        options["provider"] = provider
    if threads:
        options["threads"] = threads
    if streams:
        options["streams"] = streams
    try:
        return load_engine(name, model, load_config(EngineOptions, options, source="perception bench"))
    except PerceptionError as exc:
        if engine not in VARIANT_RUN_FLAGS:
            raise
        worded = in_bench_terms(str(exc), engine)
        if worded == str(exc):
            raise
        raise type(exc)(worded) from None


#: Precisions that say how a float graph runs. An INT8 file's graph is quantised whatever is asked
#: (ONNX Runtime runs the file's own precision, OpenVINO its INT8 kernels under any hint), so such
#: a row would time the INT8 graph under a float label: it is skipped with the reason instead.
FLOAT_PRECISIONS = ("fp32", "bf16", "fp16")


def int8_file_reason(case: Case) -> str | None:
    """Why ``case`` asks a float precision of an INT8 ``--model`` file (None when it does not, or when
    the file cannot be read: its load then says why)."""
    if case.precision not in FLOAT_PRECISIONS or case.model.suffix.lower() != ".onnx":
        return None
    try:
        if file_precision(case.model) != "int8":
            return None
    except PerceptionError:
        return None
    return (f"--precision {case.precision}: {case.model.name} is an INT8 file, whose graph runs in INT8 whatever is "
            f"asked; pass its FP32 file as --model to measure {case.precision}")


def load_case(case: Case) -> None:
    if case.threads and case.streams and case.threads < case.streams:
        case.skipped = f"--threads {case.threads} is fewer than --streams {case.streams} (threads are the total)"
        return
    case.skipped = int8_file_reason(case)
    if case.skipped:
        return
    case.rss_before_load = rss()
    t0 = time.perf_counter()
    try:
        case.engine = open_engine(case.model, case.engine_name, case.provider, case.threads, case.fp16, case.precision,
                                  case.streams)
        if (case.streams or 1) > 1:
            case.workers = [case.engine.worker() for _ in range(case.streams)]
        case.load_s = time.perf_counter() - t0
        case.rss_after_load = rss()
        # The node's warm-up check, once, untimed and outside the load figures: a file that fails its
        # first inference, or whose outputs are not the uint8 1 x H x W its graph declares, is refused
        # with perception run's line (WarmupError, ModelError) instead of a traceback or a row of
        # figures for a model the node will not run.
        case.engine.warmup(1)
    except PerceptionError as exc:
        if case.engine is not None:
            case.engine.close()
            case.engine, case.workers = None, []
        if case.precision == "auto":
            raise
        # A precision grid crosses engines with precisions some of them lack (ort + bf16, a CPU
        # without BF16, no INT8 sibling, an INT8 sibling that fails to run): report the pairing as
        # skipped, measure the rest.
        case.skipped = str(exc)
        return


def prepare_batches(case: Case, frames_by_hw: dict[tuple[int, int], list[np.ndarray]], seed: int,
                     spec: str = "") -> None:
    meta = case.engine.metadata
    if case.batch > 1 and not meta.dynamic_batch:
        case.skipped = (f"model {case.model.name} has a fixed batch of 1 (export it with --dynamic-batch, or make "
                        f"a dynamic-batch copy: python -m perception.export.batch {case.model.name} --out "
                        f"{case.model.stem}.dyn.onnx)")
        return
    if case.batch > 1:
        # The node's check at the batch measured (load_case's ran at batch 1): a model that runs one
        # frame but fails at this batch, or returns another number of rows, is refused with run's line
        # rather than timed (one row per call of N frames read as N images a call).
        try:
            case.engine.warmup(1, batch=case.batch)
        except PerceptionError as exc:
            if case.precision == "auto":
                raise
            case.skipped = str(exc)
            return
    hw = (int(meta.input_hw[0]), int(meta.input_hw[1]))
    if hw not in frames_by_hw:
        frames_by_hw[hw] = bench_frames(hw, FRAME_POOL, seed, spec)
    pool = frames_by_hw[hw]
    # Pre-stacked batches: building a batch is not part of inference, so it stays out of the timing.
    case.batches = [
        np.ascontiguousarray(np.stack([pool[(i + j) % len(pool)] for j in range(case.batch)]))
        for i in range(len(pool))
    ]


def file_precision(model: Path) -> str:
    from perception.modelfile import read_model_metadata

    return read_model_metadata(model).precision


def measure_agreement(cases: list[Case]) -> None:
    """Each case's class-id agreement with ONNX Runtime FP32 on its own frames (outside the timing).

    The reference is loaded once per model file (ONNX files only; a checkpoint or serialized
    engine has no ORT reference and gets None). A file ONNX Runtime cannot load or run (an opset
    newer than it knows, which OpenVINO runs) gets None too, its reason in ``agreement_skipped``
    and one warning: the reference is the bench's, not the engine measured, so it does not stop
    the bench.

    Raises:
        ModelError: a case's own engine failed on a batch (``case_failure``: one line naming it).
    """
    references: dict[Path, Any] = {}
    unavailable: dict[Path, str] = {}
    expected: dict[tuple[Path, int], list[np.ndarray]] = {}
    try:
        for case in cases:
            if case.model.suffix.lower() != ".onnx":
                continue
            key = (case.model, case.batch)
            if case.model not in unavailable and key not in expected:
                try:
                    if case.model not in references:
                        references[case.model] = open_engine(case.model, "ort", "cpu", case.threads)
                    reference = references[case.model]
                    expected[key] = [np.concatenate([reference.infer(b[i:i + REFERENCE_CHUNK])["class_ids"]
                                                     for i in range(0, len(b), REFERENCE_CHUNK)])
                                     for b in case.batches]
                except BUGS:
                    raise
                except PerceptionError as exc:
                    unavailable[case.model] = str(exc)
                except Exception as exc:  # ONNX Runtime's own types (Fail, RuntimeException, ...)
                    unavailable[case.model] = f"{type(exc).__name__}: {backend_error_text(exc)}"
                if case.model in unavailable:
                    log.warning("no class-id agreement for %s: ONNX Runtime, the agreement's reference, cannot run "
                                "it (%s); its rows are timed all the same", case.model, unavailable[case.model])
            if case.model in unavailable:
                case.agreement_skipped = (f"ONNX Runtime, the reference of the agreement, cannot run "
                                          f"{case.model.name} ({unavailable[case.model]})")
                continue
            got = [guarded(case, "on its agreement frames", case.engine.infer, b)["class_ids"] for b in case.batches]
            case.agreement = float(np.mean([np.mean(g == e) for g, e in zip(got, expected[key], strict=True)]))
    finally:
        for ref in references.values():
            ref.close()


#: Exceptions that are bugs in this code, whose traceback is the report (``Engine.warmup``'s rule):
#: never reworded as a backend's failure.
BUGS = (AssertionError, AttributeError, NameError, TypeError)


def case_failure(case: Case, exc: BaseException, during: str) -> ModelError:
    """One line for a backend error of ``case``'s engine after its warm-up check passed (a larger
    batch, memory running out): the file, the configuration, the backend's own words."""
    smaller = f", or a --batch below {case.batch}" if case.batch > 1 else ""
    return ModelError(f"{case.model}: {case.label()} failed {during} ({type(exc).__name__}: "
                      f"{backend_error_text(exc)}); check the file with perception inspect, or try another "
                      f"--engine{smaller}")


def guarded(case: Case, during: str, call, *args):
    """``call(*args)`` with a backend's error raised as ``case_failure``'s one line."""
    try:
        return call(*args)
    except (PerceptionError, *BUGS):
        raise
    except Exception as exc:
        raise case_failure(case, exc, during) from exc


# ---- memory: a batch that does not fit is refused before it is allocated --------------------------


def available_memory_bytes() -> int:
    """Memory this process may still take: the kernel's MemAvailable, or less under a cgroup memory
    limit (v1 or v2, the ancestor with the least room: its limit minus its usage; perception/cgroups.py)."""
    from perception.cgroups import memory_headroom_bytes

    available = psutil.virtual_memory().available
    headroom = memory_headroom_bytes()
    return available if headroom is None else min(available, headroom)


#: The process's peak RSS before ``_peak_rss_reset`` last cleared it (``peak_rss_before_resets``).
_peak_before_resets = 0


def _peak_rss_reset() -> bool:
    """Reset the process's peak RSS (Linux ``clear_refs`` 5), keeping the peak so far for
    ``peak_rss_before_resets``; False where that is not possible."""
    global _peak_before_resets
    peak = _peak_rss()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    _peak_before_resets = max(_peak_before_resets, peak)
    return True


def peak_rss_before_resets() -> int:
    """The peak RSS the resets of the memory probe cleared (0: none), for the process's own peak figure."""
    return _peak_before_resets


def _peak_rss() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return rss()


def engine_bytes_per_image(case: Case, frame: np.ndarray, *, runs: int = 4) -> int:
    """The host memory ``case``'s engine holds per image in flight, from batch-1 runs on ``frame``:
    its peak RSS growth once the runs stop growing it (an allocator arena sizes itself over the
    first two). The memory for a batch of N is about N times this: activations and outputs grow
    with the batch, so a batch-1 run measures the slope (seconds, not the minutes and gigabytes of
    trying the batch). GPU memory is not counted."""
    infer = case.workers[0].infer if case.workers else case.engine.infer
    one = np.ascontiguousarray(frame[None])
    before = rss()
    grown = 0
    for run in range(runs):
        exact = _peak_rss_reset()
        infer(one)
        now = (_peak_rss() if exact else rss()) - before  # the growth since the first run
        settled = run > 0 and now - grown < 2**20
        grown = max(grown, now)
        if settled:
            break
    return max(grown, one.nbytes)


def batch_memory_bytes(cases: list[Case], per_image: dict[tuple, int], cap: int) -> int:
    """The memory ``cases`` will take beyond what is held now, each batch capped at ``cap``: each
    loaded engine's per-image memory times its largest batch (times its streams), each case's
    ``FRAME_POOL`` input batches, and the agreement's class ids (expected and got)."""
    engines: dict[tuple, int] = {}
    total = 0
    for case in cases:
        batch = min(case.batch, cap)
        h, w = (int(s) for s in case.engine.metadata.input_hw)
        total += FRAME_POOL * batch * h * w * (3 + 2)  # BGR inputs, then the expected and got class ids
        key = case_key(case)
        engines[key] = max(engines.get(key, 0), per_image[key] * batch * max(1, len(case.workers)))
        if case.model.suffix.lower() == ".onnx":  # its ORT reference, in chunks
            engines[("reference", case.model)] = per_image[key] * min(batch, REFERENCE_CHUNK)
    return total + sum(engines.values())


def case_key(case: Case) -> tuple:
    """The loaded engine a case runs on (one serves every batch size of its configuration)."""
    return (case.model, case.engine_name, case.provider, case.threads, case.fp16, case.precision, case.streams)


def check_batch_memory(cases: list[Case], per_image: dict[tuple, int], available: int) -> None:
    """ConfigError naming the largest batch that fits when ``cases`` would take more than
    ``MEMORY_SHARE`` of ``available`` bytes (an OOM kill, minutes in, is the alternative)."""
    largest = max(case.batch for case in cases)
    budget = int(available * MEMORY_SHARE)
    need = batch_memory_bytes(cases, per_image, largest)
    if need <= budget:
        return
    low, high = 0, largest  # the largest cap that fits: batch_memory_bytes grows with the cap
    while low < high:
        mid = (low + high + 1) // 2
        if batch_memory_bytes(cases, per_image, mid) <= budget:
            low = mid
        else:
            high = mid - 1
    from perception.cgroups import memory, size_text

    per = need / largest
    fix = (f"use --batch {low} or less" if low >= 1
           else "not even a batch of 1 fits; close other programs or measure fewer configurations at once")
    limit = memory()
    under = (f" (the room left under this cgroup's memory limit of {size_text(limit.limit)})"
             if limit is not None and limit.headroom <= available else "")
    raise ConfigError(
        f"--batch {largest} needs about {size_text(need)} of memory (about {per / 2**20:.0f} MiB per image, "
        f"measured on a batch of 1), more than the {MEMORY_SHARE:.0%} of the {size_text(available)} available{under} "
        f"that a bench plans to use; {fix}"
    )
