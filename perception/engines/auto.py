"""``--engine auto``: run the fastest engine and precision on this machine whose answers agree with FP32.

At the first start of a model on a machine a short probe loads each candidate (ONNX Runtime FP32,
OpenVINO FP32 / bf16 where the CPU has it, and ONNX Runtime / OpenVINO INT8 when the model has an
INT8 sibling), runs it on ``PROBE_FRAMES`` frames, and keeps only candidates whose
class ids equal the FP32 reference on at least ``MIN_AGREEMENT`` of the pixels. The fastest of those
(median latency, candidates timed in turn so that a busy machine slows them alike) runs the node.
The frames are the node's own first inputs when the node probes (``SwitchingEngine``), the
user's with ``python -m perception.engines.auto MODEL --frames SPEC``, else rendered road scenes:
a model trained on real roads is unsure on rendered ones, where its INT8 and bf16 answers flip
more, so agreement there would reject candidates that are right on the road the node sees.

The result is cached as JSON in ``~/.cache/perception/probe`` (``PERCEPTION_PROBE_CACHE``
overrides it) under a key of the model file's (and its INT8 sibling's) SHA-256, the CPU model and
ISA, the thread count and the versions of ONNX Runtime, OpenVINO and perception: a changed model,
library or machine probes again. The choice and its reason are logged once and published in the
stats document (``engine_selection``). ``--engine``, ``--precision`` and ``--provider`` force a
choice: ``--precision`` limits the candidates, a GPU ``--provider`` skips the CPU probe.

The node probes in a child process (``python -m perception.engines.auto MODEL``, which writes the
cache): the candidates' libraries, sessions and compiled models stay out of the node, whose memory
after a first start is then what it is after any later one (the default model on the 2-core Xeon,
OpenVINO bf16 chosen: 245 MB resident after an in-process probe, 151 MB with the verdict cached).
At a first start the node does not wait for the child (``load_auto(..., background=True)``,
``SwitchingEngine``): it runs ONNX Runtime FP32 from the first frame and switches to the verified
winner between two frames when the verdict arrives (first mask 0.65 s instead of 3.61 s there).
An INT8 candidate whose file records a passed mIoU gate is held to the class-id agreement that gate
measured (``INT8_AGREEMENT_MARGIN``), the issue's "or the model's stored gate". The probe times
candidates one frame at a time; the winner is loaded with the node's ``--streams``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from perception.engines.base import INT8_SUFFIX, Engine, EngineOptions
from perception.engines.cpu import cpu_isa, cpu_model
from perception.errors import ConfigError, DependencyError, ModelError, PerceptionError
from perception.modelfile import read_model_metadata

log = logging.getLogger(__name__)

#: Bump when the key recipe or the cached document changes, so old entries are never reused.
#: 3: the verdict holds the winner's frames in flight (``streams``, for ``--streams auto``).
#: 4: 16 probe frames instead of 4.
PROBE_KEY_VERSION = 4
#: Smallest share of pixels whose class id must equal the FP32 reference for a candidate to run.
MIN_AGREEMENT = 0.995
#: An INT8 candidate whose file records a passed mIoU gate (``val_metrics["int8_gate"]``, written by
#: ``perception.export.quantize``) must agree at least this much less than the gate measured
#: between the INT8 and FP32 files, instead of ``MIN_AGREEMENT``: quantisation moves some boundary
#: pixels by design (the mIoU gate judged that), a broken kernel or file moves far more.
INT8_AGREEMENT_MARGIN = 0.005
#: Rendered road scenes the candidates are compared and timed on. The agreement is a mean over
#: frames, and one hard scene moves a small sample: with 4 frames the shipped INT8 model measured
#: 98.69 % (one scene at 97.16 %), with 16 frames 99.21 %, against 99.15 % on its gate's 100
#: validation scenes, so 4 frames put a model that passed its gate 0.04 point from rejection.
#: 16 frames cost the probe about 2 s more on 2 cores.
PROBE_FRAMES = 16
#: Timed runs per candidate (after 2 warm-up runs), interleaved across candidates.
PROBE_RUNS = 10
#: The reference every candidate is compared with.
REFERENCE = ("ort", "fp32")
#: ``--streams auto`` runs the winner with 2 frames in flight only when the probe measured them at
#: least this much faster than 1 (less is within a busy machine's noise, and costs latency).
STREAMS_MIN_GAIN = 1.15
#: Frames per block of that measurement (two blocks of each, alternating; about 2.5 s for the
#: default model on the 2-core Xeon). With 12 the gain it measured for OpenVINO INT8 on a quiet
#: machine ranged 1.09-1.24x, with 30 1.14-1.27x (the engine bench: 1.27-1.35x).
STREAMS_RUNS = 30


@dataclass(frozen=True)
class Candidate:
    """One engine + precision the probe may choose."""

    engine: str
    precision: str

    @property
    def label(self) -> str:
        return f"{self.engine}-{self.precision}"


@dataclass
class CandidateResult:
    """What the probe measured for one candidate (``error`` when it could not load or run)."""

    engine: str
    precision: str
    p50_ms: float | None = None
    agreement: float | None = None
    eligible: bool = False
    error: str = ""
    #: The agreement it had to reach (``MIN_AGREEMENT``, or its INT8 file's stored gate).
    min_agreement: float | None = None

    @property
    def label(self) -> str:
        return f"{self.engine}-{self.precision}"


@dataclass
class Selection:
    """The probe's verdict, as cached and as published in the stats document."""

    engine: str
    precision: str
    reason: str
    results: list[CandidateResult] = field(default_factory=list)
    key: dict = field(default_factory=dict)
    probed_utc: str = ""
    probe_s: float = 0.0
    from_cache: bool = False
    #: Frames in flight for ``--streams auto`` (1 or 2) and the winner's FPS with each ("1", "2").
    streams: int = 1
    streams_fps: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict) -> Selection:
        results = [CandidateResult(**r) for r in doc.get("results", [])]
        fields = {k: doc[k] for k in ("engine", "precision", "reason", "key", "probed_utc", "probe_s", "streams",
                                      "streams_fps") if k in doc}
        return cls(results=results, **fields)


def probe_cache_dir() -> Path:
    env = os.environ.get("PERCEPTION_PROBE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "perception" / "probe"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(dist: str) -> str:
    """The installed version of ``dist``, read from its ``NAME-VERSION.dist-info`` folder name on
    ``sys.path`` (the first one, as importlib.metadata finds it). Hand-written because importing
    importlib.metadata (and the email parser under it) took 15-50 ms of every node start, for three
    version strings."""
    prefix = dist.replace("-", "_").lower() + "-"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith(".dist-info") and name.lower().startswith(prefix):
                return name[len(prefix):-len(".dist-info")]
    return "absent"


def int8_sibling(model_path: Path) -> Path | None:
    """``<stem>.int8.onnx`` beside ``model_path`` when it exists."""
    sibling = model_path.with_name(model_path.name.removesuffix(".onnx") + INT8_SUFFIX)
    return sibling if sibling.is_file() and sibling != model_path else None


def probe_key(model_path: Path, options: EngineOptions, candidates: list[Candidate]) -> dict:
    """Everything the probe's verdict depends on (see the module docstring)."""
    sibling = int8_sibling(model_path)
    return {
        "version": PROBE_KEY_VERSION,
        "model_sha256": _sha256(model_path),
        "int8_sha256": _sha256(sibling) if sibling else "",
        "cpu": cpu_model(),
        "isa": cpu_isa(),
        "threads": options.threads,
        "candidates": [c.label for c in candidates],
        "min_agreement": MIN_AGREEMENT,
        "onnxruntime": _version("onnxruntime"),
        "openvino": _version("openvino"),
        "perception": _version("perception"),
    }


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def read_cached(key: dict, cache_dir: Path) -> Selection | None:
    """The cached selection for ``key``; None when absent, unreadable or stored under another key."""
    path = cache_dir / f"{key_digest(key)}.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        selection = Selection.from_dict(doc)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.warning("engine probe cache %s is unreadable (%s); probing again", path, type(exc).__name__)
        return None
    if selection.key != key:
        return None
    selection.from_cache = True
    return selection


def write_cached(selection: Selection, cache_dir: Path) -> None:
    """Store ``selection`` (atomically: a crash leaves the old entry or none); a read-only cache
    folder is logged, not fatal."""
    path = cache_dir / f"{key_digest(selection.key)}.json"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(selection.to_dict(), indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write the engine probe cache %s (%s); the next start probes again", path, exc.strerror)


def openvino_offers() -> tuple[bool, bool]:
    """(OpenVINO is installed, it can run bf16 here), read without importing it where the CPU's
    flags tell: ``import openvino`` and its ``Core`` cost about 0.3 s of a node start that may run
    ONNX Runtime only. Its CPU plugin offers BF16 on AVX-512 BF16 or AMX-BF16; where /proc/cpuinfo
    is not available, OpenVINO is asked."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return False, False
    isa = cpu_isa()
    if isa:
        return True, bool({"AVX-512 BF16", "AMX-BF16"} & set(isa))
    try:
        from perception.engines.openvino import cpu_capabilities

        capabilities = cpu_capabilities()
    except ImportError:
        return False, False
    return bool(capabilities), "BF16" in capabilities


def cpu_candidates(model_path: Path, options: EngineOptions) -> list[Candidate]:
    """The candidates worth probing here, limited to ``options.precision`` unless ``auto``."""
    found = [Candidate("ort", "fp32")]
    openvino, bf16 = openvino_offers()
    if openvino:
        found.append(Candidate("openvino", "fp32"))
        if bf16:
            found.append(Candidate("openvino", "bf16"))
    if int8_sibling(model_path) is not None:
        found.append(Candidate("ort", "int8"))
        if openvino:
            found.append(Candidate("openvino", "int8"))
    if options.precision != "auto":
        found = [c for c in found if c.precision == options.precision]
    return found


def candidate_min_agreement(candidate: Candidate, model_path: Path, min_agreement: float) -> float:
    """``min_agreement``, or for an INT8 candidate whose file records a passed gate, the agreement
    that gate measured less ``INT8_AGREEMENT_MARGIN`` (whichever is lower)."""
    sibling = int8_sibling(model_path) if candidate.precision == "int8" else None
    if sibling is None:
        return min_agreement
    try:
        gate = read_model_metadata(sibling).val_metrics.get("int8_gate") or {}
    except PerceptionError:
        return min_agreement
    stored = gate.get("agreement_with_fp32") if isinstance(gate, dict) and gate.get("passed") is True else None
    if not isinstance(stored, (int, float)) or not 0 < stored <= 1:
        return min_agreement
    return min(min_agreement, float(stored) - INT8_AGREEMENT_MARGIN)


def probe_frames(input_hw: tuple[int, int], count: int = PROBE_FRAMES) -> list[np.ndarray]:
    """``count`` rendered road scenes (with texture and sensor noise) at the model's input size:
    real structure, unlike noise, so class boundaries and confident regions are both exercised."""
    from perception.synthetic import render_scene

    h, w = input_hw
    return [render_scene(7_000_000 + i, height=h, width=w)[0][None] for i in range(count)]


def frames_from(spec: str, input_hw: tuple[int, int]) -> tuple[list[np.ndarray], str]:
    """The probe's frames for ``--frames SPEC`` and where they came from: a ``.npy`` of uint8
    N x H x W x 3 model inputs (what the node hands its probe child), else what ``perception bench
    engine --frames`` reads (a dataset spec's val images, every 10th frame of a video or folder),
    letterboxed as the node does; at most ``PROBE_FRAMES``.

    Raises:
        ConfigError, DataError, SourceError: unreadable or wrong frames (the message names them).
    """
    if spec.endswith(".npy"):
        try:
            array = np.load(spec, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--frames {spec}: not a readable .npy file ({exc})") from None
        h, w = input_hw
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1:] != (h, w, 3) or not len(array):
            raise ConfigError(f"--frames {spec}: {array.dtype} {tuple(array.shape)}, expected uint8 N x {h} x {w} x 3 "
                              "model inputs")
        return [frame[None] for frame in array[:PROBE_FRAMES]], "the node's frames"
    from perception.bench.frames import bench_frames, frames_description

    frames = bench_frames(input_hw, PROBE_FRAMES, 0, spec)
    return [frame[None] for frame in frames], frames_description(spec, 0)


def _load(candidate: Candidate, model_path: Path, options: EngineOptions) -> Engine:
    from perception.engines import load_engine

    return load_engine(candidate.engine, model_path, EngineOptions(
        provider="cpu", threads=options.threads, precision=candidate.precision, streams=options.streams))


def run_probe(
    model_path: Path,
    options: EngineOptions,
    candidates: list[Candidate],
    frames: list[np.ndarray],
    *,
    runs: int = PROBE_RUNS,
    min_agreement: float = MIN_AGREEMENT,
    frames_label: str = "rendered road scenes",
) -> Selection:
    """Load, check and time every candidate; the fastest eligible one wins (see module docstring).

    Raises:
        ModelError: no candidate is eligible (not even the reference loads).
    """
    start = time.perf_counter()
    # Candidates are timed one frame at a time; the winner then runs with the node's --streams.
    options = dataclasses.replace(options, streams=1)
    reference = _load(Candidate(*REFERENCE), model_path, options)
    try:
        expected = [reference.infer(f)["class_ids"] for f in frames]
        outputs = reference.output_names
    finally:
        reference.close()
    results: list[CandidateResult] = []
    loaded: dict[str, Engine] = {}
    for cand in candidates:
        result = CandidateResult(cand.engine, cand.precision)
        results.append(result)
        try:
            engine = _load(cand, model_path, options)
            got = [engine.infer(f)["class_ids"] for f in frames]
        except (PerceptionError, RuntimeError) as exc:
            result.error = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            continue
        if engine.output_names != outputs:  # e.g. an INT8 sibling quantised before --confidence
            engine.close()
            missing = ", ".join(sorted(set(outputs) - set(engine.output_names))) or "the same outputs"
            result.error = f"lacks the {missing} output of {'-'.join(REFERENCE)} (re-quantise it)"
            continue
        result.agreement = float(np.mean([np.mean(g == e) for g, e in zip(got, expected, strict=True)]))
        result.min_agreement = candidate_min_agreement(cand, model_path, min_agreement)
        result.eligible = result.agreement >= result.min_agreement
        if result.eligible:
            loaded[cand.label] = engine
        else:
            engine.close()
    times: dict[str, list[float]] = {label: [] for label in loaded}
    try:
        for i in range(runs + 2):
            for label, engine in loaded.items():  # in turn: a load spike slows every candidate alike
                frame = frames[i % len(frames)]
                t0 = time.perf_counter()
                engine.infer(frame)
                if i >= 2:
                    times[label].append((time.perf_counter() - t0) * 1e3)
    finally:
        for engine in loaded.values():
            engine.close()
    for result in results:
        if result.label in times:
            result.p50_ms = round(statistics.median(times[result.label]), 3)
    eligible = sorted((r for r in results if r.eligible), key=lambda r: r.p50_ms or float("inf"))
    if not eligible:
        failed = "; ".join(f"{r.label}: {r.error or f'agreement {100 * (r.agreement or 0):.2f} %'}" for r in results)
        raise ModelError(f"--engine auto: no engine ran {model_path.name} correctly ({failed}); try --engine ort")
    best = eligible[0]
    streams, streams_fps = choose_streams(Candidate(best.engine, best.precision), model_path, options, frames)
    reason = explain(best, results, min_agreement, len(frames), frames_label)
    if streams_fps:
        reason += (f"; --streams auto: {streams} ({streams_fps['2']:.1f} FPS with 2 frames in flight, "
                   f"{streams_fps['1']:.1f} with 1, 2 taken from {STREAMS_MIN_GAIN:.2f}x)")
    return Selection(
        engine=best.engine,
        precision=best.precision,
        reason=reason,
        results=results,
        probed_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        probe_s=round(time.perf_counter() - start, 3),
        streams=streams,
        streams_fps=streams_fps,
    )


def choose_streams(candidate: Candidate, model_path: Path, options: EngineOptions, frames: list[np.ndarray],
                   runs: int = STREAMS_RUNS) -> tuple[int, dict[str, float]]:
    """Frames in flight for ``--streams auto``: 2 when the winner, loaded for 2 streams with a
    worker per frame, finishes frames at least ``STREAMS_MIN_GAIN`` times as fast as loaded for 1
    (alternating blocks of ``runs`` frames, each rate over the blocks' wall time); else 1. Also
    the two rates, keyed "1" and "2" (empty when not measured: fewer than 2 threads, or the
    2-stream load failed)."""
    threads = options.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if threads < 2:
        return 1, {}
    engines: dict[int, Engine] = {}
    try:
        for n in (1, 2):
            engines[n] = _load(candidate, model_path, dataclasses.replace(options, streams=n))
        workers = {1: [engines[1]], 2: [engines[2].worker(), engines[2].worker()]}
        for worker in workers[1] + workers[2]:
            worker.infer(frames[0])  # each request's first run allocates: not timed
        wall = {1: 0.0, 2: 0.0}
        for _ in range(2):
            for n in (1, 2):
                wall[n] += _frames_in_flight(workers[n], frames, runs)
    except (PerceptionError, RuntimeError) as exc:
        log.warning("--engine auto: could not measure 2 frames in flight for %s (%s); --streams auto is 1",
                    candidate.label, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
        return 1, {}
    finally:
        for engine in engines.values():
            engine.close()
    fps = {str(n): round(2 * runs / wall[n], 2) for n in (1, 2)}
    return (2 if fps["2"] >= STREAMS_MIN_GAIN * fps["1"] else 1), fps


def _frames_in_flight(workers: list, frames: list[np.ndarray], runs: int) -> float:
    """Seconds ``workers`` (a thread each) take to finish ``runs`` frames between them."""
    import threading

    left = iter(range(runs))
    lock = threading.Lock()

    def work(worker) -> None:
        while True:
            with lock:
                i = next(left, None)
            if i is None:
                return
            worker.infer(frames[i % len(frames)])

    threads = [threading.Thread(target=work, args=(w,)) for w in workers[1:]]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    work(workers[0])  # this thread is the first worker
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def explain(best: CandidateResult, results: list[CandidateResult], min_agreement: float, frames: int,
            frames_label: str = "rendered road scenes") -> str:
    """One line: the winner's figures, its speed-up over the reference, and every loser's reason."""
    ref = next((r for r in results if (r.engine, r.precision) == REFERENCE and r.p50_ms), None)
    speedup = f", {ref.p50_ms / best.p50_ms:.2f}x {ref.label}" if ref and best.p50_ms and ref is not best else ""
    gate = best.min_agreement if best.min_agreement is not None else min_agreement
    stored = " from its INT8 gate" if gate < min_agreement else ""
    parts = [
        f"{best.label}: fastest verified, {best.p50_ms:.2f} ms p50{speedup}, class ids agree "
        f"{100 * (best.agreement or 0):.2f} % with ort-fp32 on {frames} probe frames ({frames_label}; "
        f"gate {100 * gate:.1f} %{stored})"
    ]
    others = []
    for r in results:
        if r is best:
            continue
        if r.error:
            others.append(f"{r.label} unavailable ({r.error})")
        elif not r.eligible:
            others.append(f"{r.label} rejected (agree {100 * (r.agreement or 0):.2f} %, "
                          f"gate {100 * (r.min_agreement or min_agreement):.2f} %)")
        else:
            others.append(f"{r.label} {r.p50_ms:.2f} ms")
    if others:
        parts.append("others: " + "; ".join(others))
    return "; ".join(parts)


def select_engine(
    model_path: Path, options: EngineOptions, *, cache_dir: Path | None = None, isolated: bool = False,
    frames: str = "",
) -> Selection:
    """The cached selection for this model and machine, else a fresh probe (then cached);
    ``isolated`` probes in a child process (``probe_in_child``), as the node does. ``frames``
    (``frames_from``'s SPEC) probes on those frames whatever is cached, and caches that verdict."""
    candidates = cpu_candidates(model_path, options)
    if not candidates:
        raise DependencyError(
            f"--engine auto --precision {options.precision}: no installed engine runs that precision here "
            "(bf16 needs OpenVINO and a CPU with AVX-512 BF16/AMX; int8 needs a MODEL.int8.onnx)"
        )
    cache_dir = cache_dir or probe_cache_dir()
    key = probe_key(model_path, options, candidates)
    cached = None if frames else read_cached(key, cache_dir)
    if cached is not None:
        return cached
    metadata = read_model_metadata(model_path)  # a clear ModelError before any engine is tried
    if isolated:
        return probe_in_child(model_path, options, cache_dir, key)
    if frames:
        images, described = frames_from(frames, metadata.input_hw)
        selection = run_probe(model_path, options, candidates, images, frames_label=described)
    else:
        selection = run_probe(model_path, options, candidates, probe_frames(metadata.input_hw))
    selection.key = key
    write_cached(selection, cache_dir)
    return selection


def probe_command(model_path: Path, options: EngineOptions, cache_dir: Path, *, nice: int = 0,
                  frames: Path | None = None) -> tuple[list[str], dict]:
    """The command line and environment of the probe child (``python -m perception.engines.auto``);
    ``frames``: a .npy of the node's inputs to judge the candidates on."""
    import perception

    env = dict(os.environ)
    # The child imports this very package, wherever it was imported from.
    root = str(Path(perception.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    cmd = [sys.executable, "-m", "perception.engines.auto", str(model_path), "--threads", str(options.threads),
           "--precision", options.precision, "--cache-dir", str(cache_dir)]
    if nice:
        cmd += ["--nice", str(nice)]
    if frames is not None:
        cmd += ["--frames", str(frames)]
    return cmd, env


def child_verdict(returncode: int, stdout: str, stderr: str, key: dict) -> Selection:
    """The probe child's verdict (its last stdout line, JSON), or its error raised again here.

    Raises:
        ModelError / DependencyError: what the child's probe raised.
        PerceptionError: the child died without a verdict (its last output line is quoted).
    """
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    try:
        doc = json.loads(lines[-1]) if lines else {}
    except ValueError:
        doc = {}
    if returncode == 0 and "engine" in doc:
        selection = Selection.from_dict(doc)
        selection.key = key
        return selection
    error = {"ModelError": ModelError, "DependencyError": DependencyError}.get(doc.get("error_type", ""))
    if error is not None:
        raise error(doc.get("error", "the engine probe failed"))
    last = (stderr.strip().splitlines() or ["no output"])[-1]
    raise PerceptionError(f"--engine auto: the engine probe process exited with status {returncode} ({last[:200]}); "
                          "try --engine ort")


def probe_in_child(model_path: Path, options: EngineOptions, cache_dir: Path, key: dict) -> Selection:
    """``select_engine`` in a child process (see the module docstring): it writes the cache and
    prints the verdict as JSON; its ModelError or DependencyError comes back as the same error
    (``child_verdict``)."""
    cmd, env = probe_command(model_path, options, cache_dir)
    log.info("--engine auto: probing the engines for %s in a child process (once per model and machine)",
             model_path.name)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    return child_verdict(done.returncode, done.stdout, done.stderr, key)


def cached_selection(model_path: Path, options: EngineOptions) -> Selection | None:
    """The cached verdict ``load_auto(..., background=True)`` would load without probing; None
    when it would probe, start switching, or take no verdict (a GPU provider, a forced precision,
    an unreadable model: ``load_auto`` reports those)."""
    if options.provider not in ("auto", "cpu") or options.precision not in ("auto", "fp32"):
        return None
    try:
        candidates = cpu_candidates(model_path, options)
        return read_cached(probe_key(model_path, options, candidates), probe_cache_dir())
    except (OSError, PerceptionError):
        return None


def load_auto(model_path: Path, options: EngineOptions, *, background: bool = False,
              cached: Selection | None = None) -> Engine:
    """``--engine auto``: probe (or read the cached probe), load the winner, log why once.

    ``background`` (the node): without a cached verdict, start at once on ONNX Runtime FP32 and
    switch when the probe's verdict arrives (``SwitchingEngine``), rather than wait for it. Only
    when FP32 is a candidate: a forced ``--precision bf16``/``int8`` waits for its verdict.
    ``cached``: the verdict ``cached_selection`` read for these arguments (not read again).
    """
    auto_streams = options.streams == "auto"
    if options.provider not in ("auto", "cpu"):
        from perception.engines.ort import OrtEngine

        log.info("--engine auto with --provider %s: ONNX Runtime on that provider (the probe is for CPUs)",
                 options.provider)
        return OrtEngine(model_path, dataclasses.replace(options, streams=1) if auto_streams else options)
    selection = cached
    if selection is None and background and options.precision in ("auto", "fp32"):
        candidates = cpu_candidates(model_path, options)
        cache_dir = probe_cache_dir()
        key = probe_key(model_path, options, candidates)
        selection = read_cached(key, cache_dir)
        if selection is None and len(candidates) > 1:
            read_model_metadata(model_path)  # a clear ModelError before anything starts
            from perception.engines.switching import SwitchingEngine  # imports this module

            if auto_streams:  # the node's workers are set at its start, before the verdict
                log.info("--engine auto --streams auto: one frame in flight until the probe's verdict; "
                         "the next start runs the streams it measured")
                options = dataclasses.replace(options, streams=1)
            return SwitchingEngine(model_path, options, cache_dir=cache_dir, key=key)
    if selection is None:
        selection = select_engine(model_path, options, isolated=True)
    if auto_streams:
        options = dataclasses.replace(options, streams=selection.streams)
    engine = _load(Candidate(selection.engine, selection.precision), model_path, options)
    engine.selection = selection.to_dict()
    log.info(
        "--engine auto chose %s-%s%s (%s%s)",
        selection.engine, selection.precision,
        f", {options.streams} frame{'s' if options.streams > 1 else ''} in flight{' (--streams auto)' if auto_streams else ''}"
        if auto_streams or options.streams > 1 else "",
        selection.reason,
        "; cached probe" if selection.from_cache else f"; probed in {selection.probe_s:.1f} s",
    )
    return engine


def main(argv: list[str] | None = None) -> int:
    """The child of ``probe_in_child``: probe (or read the cache), print the verdict as one JSON line."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m perception.engines.auto", description=main.__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--nice", type=int, default=0, help="lower this process's priority by N first")
    parser.add_argument("--frames", default="", metavar="SPEC",
                        help="judge agreement on these frames and probe again whatever is cached: a dataset spec "
                             "(camvid:PATH, its val images), a video file or image folder (every 10th frame), or a "
                             ".npy of uint8 N x H x W x 3 model inputs; default: rendered road scenes")
    args = parser.parse_args(argv)
    if args.nice:
        os.nice(args.nice)
    try:
        options = EngineOptions(provider="cpu", threads=args.threads, precision=args.precision)
        selection = select_engine(args.model, options, cache_dir=args.cache_dir, frames=args.frames)
    except PerceptionError as exc:
        print(json.dumps({"error_type": type(exc).__name__, "error": str(exc)}))
        return 2
    print(json.dumps(selection.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
