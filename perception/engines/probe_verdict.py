"""The ``--engine auto`` probe's verdict: what it is made of, how one read back is checked, and
how it is told.

``perception.engines.probe`` measures the candidates and builds a ``Selection``; this module holds
the types the verdict is made of (``Candidate``, ``CandidateResult``, ``Selection``), the check of
a verdict read from JSON (``verdict_problem``: a cached file, the probe child's output), the rule
that turns its measured frames in flight into a node's ``--streams auto`` (``streams_for_node``),
and its words: each candidate named by what it ran (``ran_label``), the one-line reason
(``explain``) and ``perception bench probe``'s report (``describe``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from perception.errors import PerceptionError
from perception.modelfile import read_model_metadata

#: The reference every candidate is compared with: ONNX Runtime on the model file as it is. Its
#: identity in the candidates, the verdict and the cache key; what it runs, and so what it is
#: called in what the probe says, is the file's own precision (``ran_label``: ``ort-int8`` for an
#: INT8 file).
REFERENCE = ("ort", "fp32")
#: ``--streams auto`` runs the winner with 2 frames in flight only when the probe measured them at
#: least this much faster than 1 (less is within a busy machine's noise, and costs latency).
STREAMS_MIN_GAIN = 1.15
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
    #: The agreement it had to reach (``probe.MIN_AGREEMENT``, or its INT8 file's stored gate).
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
    #: Why this verdict is not cached (the system refused a candidate a thread or memory: a limit of
    #: that moment); empty for a verdict that is.
    uncached: str = ""

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
                                      "streams_fps", "uncached") if k in doc}
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
    for name in ("reason", "probed_utc", "uncached"):
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


def shown_results(results: list[CandidateResult], file_runs: str) -> list[CandidateResult]:
    """The rows as a user reads them (the stats document's ``engine_selection.results``, the cached
    verdict, ``bench probe``): the reference's row names what it ran (``ort``/``int8`` on an INT8
    file, ``ran_label``). The verdict's own ``engine``/``precision`` and the cache key keep the
    candidate it is keyed under (``REFERENCE``), and no row is read back as a candidate."""
    return [dataclasses.replace(r, precision=file_runs) if (r.engine, r.precision) == REFERENCE else r
            for r in results]


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
    if selection.uncached:
        lines.append(f"  {selection.uncached} (nothing written in {cache_dir})")
    else:
        lines.append(f"  cached for 'perception run --engine auto --model {model} --threads {threads}' in "
                     f"{cache_dir}")
    return "\n".join(lines)
