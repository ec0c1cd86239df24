"""The engine probe's measurement: load each candidate, compare its class ids with ONNX Runtime
FP32 on the probe's frames, time the eligible ones, and measure the winner's frames in flight.

``perception.engines.auto`` decides what to probe, caches the verdict and runs the probe in a child
process; this module is what that child measures (``run_probe``). The verdict it builds (its types
``Candidate``, ``CandidateResult``, ``Selection``, and the line that explains the winner) is
``perception.engines.probe_verdict``'s.

The frames: the node's own first inputs (a ``.npy`` the node writes, ``frames_from``), the
frames a user names with ``--frames SPEC``, else rendered road scenes (``probe_frames``). A model
trained on real roads is unsure on rendered scenes, where its INT8 and bf16 answers flip more,
so agreement there would reject candidates that are right on the road the node sees.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from pathlib import Path

import numpy as np

from perception.engines.base import (
    INT8_SUFFIX,
    Engine,
    EngineOptions,
    WarmupError,
    backend_error_text,
    resource_refused,
    usable_cores,
)
from perception.engines.probe_verdict import (
    FLAT_OUT_MIN_GAIN,
    REFERENCE,
    STREAMS_MIN_GAIN,
    Candidate,
    CandidateResult,
    Selection,
    explain,
    file_precision,
    ran_label,
    shown_results,
)
from perception.errors import ConfigError, ModelError, PerceptionError, ResourceError
from perception.modelfile import read_model_metadata

log = logging.getLogger("perception.engines.auto")  # one logger name for all of --engine auto

#: Smallest share of pixels whose class id must equal the FP32 reference for a candidate to run.
MIN_AGREEMENT = 0.995
#: An INT8 candidate whose file records a passed mIoU gate (``val_metrics["int8_gate"]``, written by
#: ``perception.export.quantize``) must agree at least this much less than the gate measured
#: between the INT8 and FP32 files, instead of ``MIN_AGREEMENT``: quantisation moves some boundary
#: pixels by design (the mIoU gate judged that), a broken kernel or file moves far more.
INT8_AGREEMENT_MARGIN = 0.005
#: ... and never less than this, whatever its gate measured: an INT8 file whose class ids differ from
#: its FP32 model's on more than 5 % of the pixels is not that model (one calibrated on black frames
#: agreed on 60 %, its mIoU drop within budget on a model barely trained); its gate fails too.
INT8_AGREEMENT_FLOOR = 0.95
#: Rendered road scenes the candidates are compared and timed on. The agreement is a mean over
#: frames, and one hard scene moves a small sample: with 4 frames the shipped INT8 model measured
#: 98.69 % (one scene at 97.16 %), with 16 frames 99.21 %, against 99.15 % on its gate's 100
#: validation scenes, so 4 frames put a model that passed its gate 0.04 point from rejection.
#: 16 frames cost the probe about 2 s more on 2 cores.
PROBE_FRAMES = 16
#: Timed runs per candidate (after 2 warm-up runs), interleaved across candidates.
PROBE_RUNS = 10
#: Frames per block of the measurement of 2 frames in flight against 1 (``choose_streams``, judged
#: by ``STREAMS_MIN_GAIN``: two blocks of each, alternating; about 2.5 s for the default model on
#: the 2-core Xeon). With 12 the gain it measured for OpenVINO INT8 on a quiet machine ranged
#: 1.09-1.24x, with 30 1.14-1.27x (the engine bench: 1.27-1.35x).
STREAMS_RUNS = 30
#: A gain within this share of either threshold (1.09-1.21x, 0.95-1.05x) is measured again (two
#: more blocks of each, all four pooled) before it decides: the default model's gain read 1.08x in
#: one probe and over 1.15x in another on the same EPYC, and the CamVid model's 1.04x, 1.07x, 1.11x.
STREAMS_CLOSE = 0.05
#: The name of the temporary .npy a node hands its probe child (``SwitchingEngine``) starts so.
NODE_FRAMES_PREFIX = "perception-probe-"


def int8_sibling(model_path: Path) -> Path | None:
    """``<stem>.int8.onnx`` beside ``model_path`` when it exists."""
    sibling = model_path.with_name(model_path.name.removesuffix(".onnx") + INT8_SUFFIX)
    return sibling if sibling.is_file() and sibling != model_path else None


def int8_min_agreement(gate: object, min_agreement: float = MIN_AGREEMENT) -> float:
    """The share of pixels whose class id an INT8 file must keep equal to its FP32 model's in any
    runtime: ``min_agreement``, or for a file whose gate passed (``gate``: its
    ``val_metrics["int8_gate"]``), the agreement that gate measured on ONNX Runtime less
    ``INT8_AGREEMENT_MARGIN`` (never under ``INT8_AGREEMENT_FLOOR``), whichever is lower. The one declaration of that rule: ``--engine
    auto``'s candidates (``candidate_min_agreement``), the INT8 gate's OpenVINO warning
    (``export.int8_gate``), ``--engine openvino`` when it runs such a file and ``bench engine``."""
    gate = gate if isinstance(gate, dict) else {}
    stored = gate.get("agreement_with_fp32") if gate.get("passed") is True else None
    if not isinstance(stored, (int, float)) or isinstance(stored, bool) or not 0 < stored <= 1:
        return min_agreement
    return min(min_agreement, max(INT8_AGREEMENT_FLOOR, float(stored) - INT8_AGREEMENT_MARGIN))


def candidate_min_agreement(candidate: Candidate, model_path: Path, min_agreement: float) -> float:
    """``int8_min_agreement`` of an INT8 candidate's file (``min_agreement`` for any other, or for a
    file whose metadata cannot be read)."""
    sibling = int8_sibling(model_path) if candidate.precision == "int8" else None
    if sibling is None:
        return min_agreement
    try:
        gate = read_model_metadata(sibling).val_metrics.get("int8_gate")
    except PerceptionError:
        return min_agreement
    return int8_min_agreement(gate, min_agreement)


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


def load_candidate(candidate: Candidate, model_path: Path, options: EngineOptions) -> Engine:
    from perception.engines import load_engine

    # The reference is the file as it is ("auto": ONNX Runtime runs the file's own precision): asked
    # "fp32", an INT8 file warned about a --precision fp32 nobody gave (a given one still warns).
    precision = "auto" if candidate == Candidate(*REFERENCE) and options.precision == "auto" else candidate.precision
    return load_engine(candidate.engine, model_path, EngineOptions(
        provider="cpu", threads=options.threads, precision=precision, streams=options.streams))


def candidate_error(exc: BaseException) -> str:
    """Why a candidate could not run, in at most 200 characters: a first inference that failed
    (``WarmupError``) as its backend's words; a thread or memory the system refused
    (``ResourceError``) as what was refused, without the advice that follows; else the error's
    words without OpenVINO's ``Exception from src/...:`` lines, which only say where in its sources
    it raised (the reason then said nothing else)."""
    if isinstance(exc, WarmupError):
        text = f"its first inference failed ({type(exc.__cause__ or exc).__name__}: {exc.reason})"
    elif isinstance(exc, ResourceError):
        text = str(exc).split("; ")[0]
    else:
        lines = [ln for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith("Exception from")]
        text = backend_error_text(RuntimeError("\n".join(lines)), 200) if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def refused(exc: BaseException) -> bool:
    """True when ``exc`` says the system refused a thread or memory (a pids or memory limit, for
    now): a verdict with such a candidate is not cached (``run_probe``)."""
    return isinstance(exc, ResourceError) or resource_refused(exc, "probing") is not None


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
    #: The candidates the system refused a thread or memory (``refused``): not the verdict's to keep.
    short_of: list[str] = []
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
            if refused(exc):
                short_of.append(ran_label(cand.engine, cand.precision, runs_as))
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
    streams, streams_fps = choose_streams(Candidate(best.engine, best.precision), model_path, options, frames,
                                          refused_to=short_of)
    reason = explain(best, results, min_agreement, len(frames), frames_label, file_runs=runs_as)
    if streams_fps:
        reason += (f"; --streams auto would run {streams} ({streams_fps['2']:.1f} FPS with 2 frames in flight, "
                   f"{streams_fps['1']:.1f} with 1, 2 taken from {STREAMS_MIN_GAIN:.2f}x)")
    uncached = ""
    if short_of:  # a limit of this moment (pids, memory) must not decide the starts after it
        uncached = (f"not cached: the system refused a thread or memory to {', '.join(short_of)}, so this verdict "
                    "is for this start only and the next start probes again")
        reason += f"; {uncached}"
    return Selection(
        engine=best.engine,
        precision=best.precision,
        reason=reason,
        results=shown_results(results, runs_as),
        probed_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        probe_s=round(time.perf_counter() - start, 3),
        streams=streams,
        streams_fps=streams_fps,
        uncached=uncached,
    )


def choose_streams(candidate: Candidate, model_path: Path, options: EngineOptions, frames: list[np.ndarray],
                   runs: int = STREAMS_RUNS, *, refused_to: list[str] | None = None) -> tuple[int, dict[str, float]]:
    """Frames in flight for ``--streams auto``: 2 when the winner, loaded for 2 streams with a
    worker per frame, finishes frames at least ``STREAMS_MIN_GAIN`` times as fast as loaded for 1
    (alternating blocks of ``runs`` frames, each rate over the blocks' wall time; two blocks of
    each, four when the gain comes out close to a threshold, ``STREAMS_CLOSE``); else 1. Also
    the two rates, keyed "1" and "2" (empty when not measured: fewer than 2 threads, or the
    2-stream load failed; one the system refused a thread or memory is added to ``refused_to``)."""
    threads = options.threads or usable_cores()
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
                    candidate.label, candidate_error(exc))
        if refused_to is not None and refused(exc):
            refused_to.append(f"{candidate.label} at 2 frames in flight")
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
