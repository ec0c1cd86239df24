"""The engine probe's measurement: load each candidate, compare its class ids with ONNX Runtime
FP32 on the probe's frames, time the eligible ones, and explain the winner in one line.

``perception.engines.auto`` decides what to probe, caches the verdict and runs the probe in a child
process; this module is what that child measures (``run_probe``), and the types the verdict is
made of (``Candidate``, ``CandidateResult``, ``Selection``).

The frames: the node's own first inputs (a ``.npy`` the node writes, ``frames_from``), the
frames a user names with ``--frames SPEC``, else rendered road scenes (``probe_frames``). A model
trained on real roads is unsure on rendered scenes, where its INT8 and bf16 answers flip more,
so agreement there would reject candidates that are right on the road the node sees.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from perception.engines.base import INT8_SUFFIX, Engine, EngineOptions, WarmupError
from perception.errors import ConfigError, ModelError, PerceptionError
from perception.modelfile import read_model_metadata

log = logging.getLogger("perception.engines.auto")  # one logger name for all of --engine auto

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
#: The reference every candidate is compared with: ONNX Runtime on the model file as it is. Its
#: identity in the candidates, the verdict and the cache key; what it runs, and so what it is
#: called in what the probe says, is the file's own precision (``ran_label``: ``ort-int8`` for an
#: INT8 file).
REFERENCE = ("ort", "fp32")
#: ``--streams auto`` runs the winner with 2 frames in flight only when the probe measured them at
#: least this much faster than 1 (less is within a busy machine's noise, and costs latency).
STREAMS_MIN_GAIN = 1.15
#: Frames per block of that measurement (two blocks of each, alternating; about 2.5 s for the
#: default model on the 2-core Xeon). With 12 the gain it measured for OpenVINO INT8 on a quiet
#: machine ranged 1.09-1.24x, with 30 1.14-1.27x (the engine bench: 1.27-1.35x).
STREAMS_RUNS = 30
#: ``--streams auto`` for a node that reads a file or image folder flat out
#: (``RunConfig.reads_flat_out``): throughput is all that counts there, and besides inference the
#: node decodes, letterboxes, builds masks and publishes on the same cores, work that a second frame
#: in flight overlaps and the probe's engine-only measurement does not see. So such a node takes 2
#: whenever the probe measured 2 at least as fast as 1. On the 2-core AMD EPYC with AVX-512
#: (2026-12-04) the CamVid model's probe put 2 in flight at 1.04x and 1.11x (under the 1.15x of
#: ``STREAMS_MIN_GAIN``), while the node on a clip ran 1.10-1.25x faster with 2 than with 1. A paced
#: source (camera, stream, synthetic, ``--fps``, ``--realtime``) keeps the probe's choice, which
#: spends latency only for a clear gain.
FLAT_OUT_MIN_GAIN = 1.0
#: A gain within this share of either threshold (1.09-1.21x, 0.95-1.05x) is measured again (two
#: more blocks of each, all four pooled) before it decides: the default model's gain read 1.08x in
#: one probe and over 1.15x in another on the same EPYC, and the CamVid model's 1.04x, 1.07x, 1.11x.
STREAMS_CLOSE = 0.05
#: The name of the temporary .npy a node hands its probe child (``SwitchingEngine``) starts so.
NODE_FRAMES_PREFIX = "perception-probe-"


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


_RESULT_FIELDS = {f.name for f in dataclasses.fields(CandidateResult)}


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
    def from_dict(cls, doc: object) -> Selection:
        """The verdict in ``doc`` (a cached file's or the probe child's JSON).

        Raises:
            VerdictError: ``doc`` is not a verdict this code can run (``verdict_problem`` says why).
        """
        problem = verdict_problem(doc)
        if problem:
            raise VerdictError(problem)
        assert isinstance(doc, dict)
        results = [CandidateResult(**r) for r in doc.get("results", [])]
        fields = {k: doc[k] for k in ("engine", "precision", "reason", "key", "probed_utc", "probe_s", "streams",
                                      "streams_fps") if k in doc}
        return cls(results=results, **fields)


class VerdictError(ValueError):
    """A verdict document (a cached file, the probe child's output) that is not one this code can run."""


#: What a verdict may name: the engines and precisions the CPU probe chooses among, and its frames in flight.
VERDICT_ENGINES = ("ort", "openvino")
VERDICT_PRECISIONS = ("fp32", "bf16", "int8")
VERDICT_STREAMS = (1, 2)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(value: object, lo: float, hi: float = 1e12) -> bool:
    """A JSON number (not a boolean, NaN or infinity) in ``lo..hi``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return (isinstance(value, int) or math.isfinite(value)) and lo <= value <= hi


def _result_problem(doc: object) -> str:
    """Why one candidate's figures in a verdict are not ``CandidateResult``'s; empty when they are."""
    if not isinstance(doc, dict):
        return f"{_short(doc)} is not an object"
    unknown = sorted(str(k) for k in doc if k not in _RESULT_FIELDS)
    if unknown:
        return f"unknown field {_short(unknown[0])}"
    checks = {
        "engine": lambda v: isinstance(v, str), "precision": lambda v: isinstance(v, str),
        "error": lambda v: isinstance(v, str), "eligible": lambda v: isinstance(v, bool),
        "p50_ms": lambda v: v is None or _number(v, 0), "agreement": lambda v: v is None or _number(v, 0, 1),
        "min_agreement": lambda v: v is None or _number(v, 0, 1),
    }
    for name in ("engine", "precision"):
        if name not in doc:
            return f"no {name}"
    for name, ok in checks.items():
        if name in doc and not ok(doc[name]):
            return f"{name} {_short(doc[name])} is out of range or of the wrong type"
    return ""


def verdict_problem(doc: object) -> str:
    """Why ``doc`` (read from JSON: a cached verdict, the probe child's) is not a verdict this code
    can run, in a few words; empty when it is. Every field is checked, as data from disk must be:
    a wrong type or value would otherwise surface later as an error about flags nobody typed."""
    if not isinstance(doc, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
            type(doc), "null")
        return f"{kind}, not a verdict object"
    if doc.get("engine") not in VERDICT_ENGINES:
        return f"engine {_short(doc.get('engine'))} is not one of {', '.join(VERDICT_ENGINES)}"
    if doc.get("precision") not in VERDICT_PRECISIONS:
        return f"precision {_short(doc.get('precision'))} is not one of {', '.join(VERDICT_PRECISIONS)}"
    streams = doc.get("streams", 1)
    if type(streams) is not int or streams not in VERDICT_STREAMS:
        return f"streams {_short(streams)} is not one of {', '.join(map(str, VERDICT_STREAMS))}"
    fps = doc.get("streams_fps", {})
    if not (isinstance(fps, dict) and set(fps) <= {str(n) for n in VERDICT_STREAMS}
            and all(_number(v, 0) and v > 0 for v in fps.values())):
        return f"streams_fps {_short(fps)} is not FPS by frames in flight"
    for name in ("reason", "probed_utc"):
        if not isinstance(doc.get(name, ""), str):
            return f"{name} {_short(doc[name])} is not text"
    if not _number(doc.get("probe_s", 0.0), 0):
        return f"probe_s {_short(doc['probe_s'])} is not a duration"
    if not isinstance(doc.get("key", {}), dict):
        return f"key {_short(doc['key'])} is not an object"
    results = doc.get("results", [])
    if not isinstance(results, list):
        return f"results {_short(results)} is not a list"
    for i, result in enumerate(results):
        problem = _result_problem(result)
        if problem:
            return f"results[{i}]: {problem}"
    return ""


def int8_sibling(model_path: Path) -> Path | None:
    """``<stem>.int8.onnx`` beside ``model_path`` when it exists."""
    sibling = model_path.with_name(model_path.name.removesuffix(".onnx") + INT8_SUFFIX)
    return sibling if sibling.is_file() and sibling != model_path else None


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
    real structure, unlike noise, so class boundaries and confident regions are both exercised. An
    input outside the sizes the synthetic world draws (over 1080x1920, under 48x64) gets scenes drawn
    at the nearest size and letterboxed, as the node would (bench's ``sample_frames`` does the same)."""
    from perception.options import synthetic_hw_near
    from perception.preprocess import letterbox_image
    from perception.synthetic import render_scene

    h, w = synthetic_hw_near(input_hw)
    scenes = (render_scene(7_000_000 + i, height=h, width=w)[0] for i in range(count))
    return [(scene if (h, w) == tuple(input_hw) else letterbox_image(scene, input_hw)[0])[None] for scene in scenes]


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
            array = np.load(spec, allow_pickle=False, mmap_mode="r")  # 16 frames read, whatever its size
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--frames {spec}: not a readable .npy file ({exc})") from None
        h, w = input_hw
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1:] != (h, w, 3) or not len(array):
            raise ConfigError(f"--frames {spec}: {array.dtype} {tuple(array.shape)}, expected uint8 N x {h} x {w} x 3 "
                              "model inputs")
        label = "the node's frames" if Path(spec).name.startswith(NODE_FRAMES_PREFIX) else f"the frames in {spec}"
        return [np.array(frame[None]) for frame in array[:PROBE_FRAMES]], label
    from perception.frames import bench_frames, frames_description

    frames = bench_frames(input_hw, PROBE_FRAMES, 0, spec)
    return [frame[None] for frame in frames], frames_description(spec, 0)


def prepare_candidate(candidate: Candidate) -> None:
    """Import what loading ``candidate`` needs (its engine module and library; OpenVINO's ``Core``,
    which discovers the device plugins), so that ``load_candidate`` later pays for the model alone.

    Raises:
        DependencyError: the engine's package is not installed.
    """
    import importlib

    importlib.import_module(f"perception.engines.{candidate.engine}")
    if candidate.engine == "openvino":
        from perception.engines.openvino import shared_core

        shared_core()


def file_precision(model_path: Path) -> str:
    """The precision the model file's graph runs in (its metadata; ``REFERENCE``'s when unreadable)."""
    try:
        return read_model_metadata(model_path).precision or REFERENCE[1]
    except PerceptionError:
        return REFERENCE[1]


def ran_label(engine: str, precision: str, file_runs: str) -> str:
    """What a candidate ``engine``-``precision`` runs on a file whose graph runs in ``file_runs``
    (``file_precision``): its own label, except the reference, which runs the file as it is:
    ``ort-int8`` on an INT8 file, not the ``ort-fp32`` it is keyed and cached under."""
    return f"{engine}-{file_runs if (engine, precision) == REFERENCE else precision}"


def load_candidate(candidate: Candidate, model_path: Path, options: EngineOptions) -> Engine:
    from perception.engines import load_engine

    # The reference is the file as it is ("auto": ONNX Runtime runs the file's own precision): asked
    # "fp32", an INT8 file warned about a --precision fp32 nobody gave (a given one still warns).
    precision = "auto" if candidate == Candidate(*REFERENCE) and options.precision == "auto" else candidate.precision
    return load_engine(candidate.engine, model_path, EngineOptions(
        provider="cpu", threads=options.threads, precision=precision, streams=options.streams))


def candidate_error(exc: BaseException) -> str:
    """Why a candidate could not run, in at most 200 characters: a first inference that failed
    (``WarmupError``) as its backend's words, else the error's first line."""
    if isinstance(exc, WarmupError):
        text = f"its first inference failed ({type(exc.__cause__ or exc).__name__}: {exc.reason})"
    else:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


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
    runs_as = file_precision(model_path)  # what the reference runs: the file as it is
    # Candidates are timed one frame at a time; the winner then runs with the node's --streams.
    options = dataclasses.replace(options, streams=1)
    reference = load_candidate(Candidate(*REFERENCE), model_path, options)
    try:
        # The node's warm-up check first: a file whose first inference fails, or whose outputs are not
        # what its graph declares, is refused with perception run's line (WarmupError, ModelError),
        # and no verdict is cached for a model the node will not run.
        reference.warmup(1)
        expected = [reference.infer(f)["class_ids"] for f in frames]
        outputs = reference.output_names
    finally:
        reference.close()
    results: list[CandidateResult] = []
    loaded: dict[str, Engine] = {}
    for cand in candidates:
        result = CandidateResult(cand.engine, cand.precision)
        results.append(result)
        engine = None
        try:
            engine = load_candidate(cand, model_path, options)
            engine.warmup(1)  # the node's check: a backend's error becomes WarmupError
            got = [engine.infer(f)["class_ids"] for f in frames]
        except (PerceptionError, RuntimeError) as exc:
            if engine is not None:
                engine.close()
            result.error = candidate_error(exc)
            continue
        if engine.output_names != outputs:  # e.g. an INT8 sibling quantised before --confidence
            engine.close()
            missing = ", ".join(sorted(set(outputs) - set(engine.output_names))) or "the same outputs"
            result.error = f"lacks the {missing} output of {ran_label(*REFERENCE, runs_as)} (re-quantise it)"
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
        failed = "; ".join(f"{ran_label(r.engine, r.precision, runs_as)}: "
                           f"{r.error or f'agreement {100 * (r.agreement or 0):.2f} %'}" for r in results)
        raise ModelError(f"--engine auto: no engine ran {model_path.name} correctly ({failed}); try --engine ort")
    best = eligible[0]
    streams, streams_fps = choose_streams(Candidate(best.engine, best.precision), model_path, options, frames)
    reason = explain(best, results, min_agreement, len(frames), frames_label, file_runs=runs_as)
    if streams_fps:
        reason += (f"; --streams auto: {streams} ({streams_fps['2']:.1f} FPS with 2 frames in flight, "
                   f"{streams_fps['1']:.1f} with 1, 2 taken from {STREAMS_MIN_GAIN:.2f}x)")
    return Selection(
        engine=best.engine,
        precision=best.precision,
        reason=reason,
        results=shown_results(results, runs_as),
        probed_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        probe_s=round(time.perf_counter() - start, 3),
        streams=streams,
        streams_fps=streams_fps,
    )


def shown_results(results: list[CandidateResult], file_runs: str) -> list[CandidateResult]:
    """The rows as a user reads them (the stats document's ``engine_selection.results``, the cached
    verdict, ``bench probe``): the reference's row names what it ran (``ort``/``int8`` on an INT8
    file, ``ran_label``). The verdict's own ``engine``/``precision`` and the cache key keep the
    candidate it is keyed under (``REFERENCE``), and no row is read back as a candidate."""
    return [dataclasses.replace(r, precision=file_runs) if (r.engine, r.precision) == REFERENCE else r
            for r in results]


def choose_streams(candidate: Candidate, model_path: Path, options: EngineOptions, frames: list[np.ndarray],
                   runs: int = STREAMS_RUNS) -> tuple[int, dict[str, float]]:
    """Frames in flight for ``--streams auto``: 2 when the winner, loaded for 2 streams with a
    worker per frame, finishes frames at least ``STREAMS_MIN_GAIN`` times as fast as loaded for 1
    (alternating blocks of ``runs`` frames, each rate over the blocks' wall time; two blocks of
    each, four when the gain comes out close to a threshold, ``STREAMS_CLOSE``); else 1. Also
    the two rates, keyed "1" and "2" (empty when not measured: fewer than 2 threads, or the
    2-stream load failed)."""
    threads = options.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if threads < 2:
        return 1, {}
    engines: dict[int, Engine] = {}
    try:
        for n in (1, 2):
            engines[n] = load_candidate(candidate, model_path, dataclasses.replace(options, streams=n))
        workers = {1: [engines[1]], 2: [engines[2].worker(), engines[2].worker()]}
        for worker in workers[1] + workers[2]:
            worker.infer(frames[0])  # each request's first run allocates: not timed
        wall = {1: 0.0, 2: 0.0}

        def two_blocks_each() -> None:
            for _ in range(2):
                for n in (1, 2):
                    wall[n] += _frames_in_flight(workers[n], frames, runs)

        two_blocks_each()
        blocks = 2
        if wall[2] > 0 and _close_to_a_threshold(wall[1] / wall[2]):
            two_blocks_each()
            blocks = 4
    except (PerceptionError, RuntimeError) as exc:
        log.warning("--engine auto: could not measure 2 frames in flight for %s (%s); --streams auto is 1",
                    candidate.label, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
        return 1, {}
    finally:
        for engine in engines.values():
            engine.close()
    if not (wall[1] > 0 and wall[2] > 0):  # a clock that did not move: nothing was measured
        return 1, {}
    fps = {str(n): round(blocks * runs / wall[n], 2) for n in (1, 2)}
    return (2 if fps["2"] >= STREAMS_MIN_GAIN * fps["1"] else 1), fps


def _close_to_a_threshold(gain: float) -> bool:
    """``gain`` (2 in flight over 1) within ``STREAMS_CLOSE`` of a threshold that decides on it."""
    return any(abs(gain / threshold - 1.0) < STREAMS_CLOSE for threshold in (STREAMS_MIN_GAIN, FLAT_OUT_MIN_GAIN))


def streams_for_node(selection: Selection, *, flat_out: bool) -> tuple[int, str]:
    """``--streams auto``'s frames in flight for a node, and why when that is not the probe's own
    choice (``selection.streams``): 2 for a node reading ``flat_out`` when the probe measured 2 at
    least ``FLAT_OUT_MIN_GAIN`` times as fast as 1 (empty reason: the probe's choice stands)."""
    fps = selection.streams_fps
    if not flat_out or selection.streams != 1 or not fps or not fps.get("1") or not fps.get("2"):
        return selection.streams, ""
    gain = fps["2"] / fps["1"]
    if gain < FLAT_OUT_MIN_GAIN:
        return 1, ""
    return 2, (f"this node runs 2 frames in flight: it reads a file flat out and the probe measured 2 at "
               f"{gain:.2f}x 1 (the probe's 1 is for paced sources, which take 2 from {STREAMS_MIN_GAIN:.2f}x)")


def _frames_in_flight(workers: list, frames: list[np.ndarray], runs: int) -> float:
    """Seconds ``workers`` (a thread each) take to finish ``runs`` frames between them.

    However it ends, every worker thread has returned when this does: an interrupt (Ctrl-C, or a
    stop signal under ``interrupt_on_stop_signals``) or an error in one worker stops the others
    after the frame they are on, before the caller closes the engines under them (a worker still
    in ``infer`` on a closed engine printed a thread's traceback after ``perception: interrupted``).
    An error in a worker thread is raised here, as one in this thread's worker would be."""
    import threading

    left = iter(range(runs))
    lock = threading.Lock()
    stop = threading.Event()
    failed: list[BaseException] = []

    def work(worker) -> None:
        while not stop.is_set():
            with lock:
                i = next(left, None)
            if i is None:
                return
            worker.infer(frames[i % len(frames)])

    def work_in_thread(worker) -> None:
        try:
            work(worker)
        except BaseException as exc:  # noqa: BLE001 - handed to the measuring thread, which raises it
            failed.append(exc)
            stop.set()

    threads = [threading.Thread(target=work_in_thread, args=(w,), name="probe-stream", daemon=True)
               for w in workers[1:]]
    t0 = time.perf_counter()
    try:
        for t in threads:
            t.start()
        work(workers[0])  # this thread is the first worker
    finally:
        stop.set()
        _join_all(threads)
    if failed:
        raise failed[0]
    return time.perf_counter() - t0


def _join_all(threads: list) -> None:
    """Join ``threads`` even through a second interrupt (raised again once they have all returned)."""
    again: KeyboardInterrupt | None = None
    for t in threads:
        while t.is_alive():
            try:
                t.join()
            except KeyboardInterrupt as exc:
                again = exc
    if again is not None:
        raise again


def explain(best: CandidateResult, results: list[CandidateResult], min_agreement: float, frames: int,
            frames_label: str = "rendered road scenes", *, file_runs: str = REFERENCE[1]) -> str:
    """One line: the winner's figures, its speed-up over the reference, and every loser's reason;
    each candidate named by what it ran on a file whose graph runs in ``file_runs`` (``ran_label``)."""
    def label(r: CandidateResult) -> str:
        return ran_label(r.engine, r.precision, file_runs)

    ref = next((r for r in results if (r.engine, r.precision) == REFERENCE and r.p50_ms), None)
    speedup = f", {ref.p50_ms / best.p50_ms:.2f}x {label(ref)}" if ref and best.p50_ms and ref is not best else ""
    gate = best.min_agreement if best.min_agreement is not None else min_agreement
    stored = " from its INT8 gate" if gate < min_agreement else ""
    parts = [
        f"{label(best)}: fastest verified, {best.p50_ms:.2f} ms p50{speedup}, class ids agree "
        f"{100 * (best.agreement or 0):.2f} % with {ran_label(*REFERENCE, file_runs)} on {frames} probe frames "
        f"({frames_label}; gate {100 * gate:.1f} %{stored})"
    ]
    others = []
    for r in results:
        if r is best:
            continue
        if r.error:
            others.append(f"{label(r)} unavailable ({r.error})")
        elif not r.eligible:
            others.append(f"{label(r)} rejected (agree {100 * (r.agreement or 0):.2f} %, "
                          f"gate {100 * (r.min_agreement or min_agreement):.2f} %)")
        else:
            others.append(f"{label(r)} {r.p50_ms:.2f} ms")
    if others:
        parts.append("others: " + "; ".join(others))
    return "; ".join(parts)


def describe(selection: Selection, model: Path, threads: int, cache_dir: Path) -> str:
    """``perception bench probe``'s report: the verdict, every candidate's figures, where it is cached;
    each candidate named by what it runs (``ran_label``), a verdict cached by an earlier version too."""
    runs_as = file_precision(model)
    lines = [f"--engine auto for {model.name} ({selection.key.get('cpu', '?')}, --threads {threads}): "
             f"{ran_label(selection.engine, selection.precision, runs_as)}"
             f"{', cached verdict' if selection.from_cache else f', probed in {selection.probe_s:.1f} s'}",
             f"  {selection.reason}",
             f"  {'candidate':16s} {'p50 ms':>8s} {'agree %':>8s} {'gate %':>7s}  verdict"]
    for r in selection.results:
        # "-" for what was not measured: a rejected candidate is not timed, one in error not compared.
        verdict = "error: " + r.error if r.error else ("eligible" if r.eligible else "rejected: agreement under the gate, not timed")
        p50 = f"{r.p50_ms:8.2f}" if r.p50_ms is not None else f"{'-':>8s}"
        agree = f"{100 * r.agreement:8.2f}" if r.agreement is not None else f"{'-':>8s}"
        gate = f"{100 * r.min_agreement:7.2f}" if r.min_agreement is not None else f"{'-':>7s}"
        lines.append(f"  {ran_label(r.engine, r.precision, runs_as):16s} {p50} {agree} {gate}  {verdict}")
    flat_streams, flat_reason = streams_for_node(selection, flat_out=True)
    if flat_reason:
        gain = selection.streams_fps["2"] / selection.streams_fps["1"]
        lines.append(f"  --streams auto: {selection.streams} for a camera or a paced source, {flat_streams} for a node "
                     f"reading a file flat out (2 measured {gain:.2f}x 1, from {FLAT_OUT_MIN_GAIN:.2f}x)")
    lines.append(f"  cached for 'perception run --engine auto --model {model} --threads {threads}' in "
                 f"{cache_dir}")
    return "\n".join(lines)
