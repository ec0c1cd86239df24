"""What ``perception bench report`` checks in a bench JSON before it makes a report of it.

``results_problem(doc)`` says where a JSON (its schema tag already checked) holds something the
bench never writes, in one phrase naming the key: a value of the wrong type or out of range (a
negative time, size or count, an agreement outside 0..1, a number of 16 digits or more), a part the
report needs that is missing or empty (an engine block without rows, a pipeline block without its
stage table), or figures that contradict each other (p50 above p99, percentiles or an FPS that the
row's own raw samples do not give). The report prints what the JSON says; these checks are why it
may: a hand-edited figure is refused, never printed as measured.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

#: Kinds of bench JSON (``new_results``): each its report's title.
KINDS = ("engine", "pipeline")

#: No figure of a bench reaches this (ms, FPS, MB, bytes, counts): larger is an edit, which the
#: report would print as a 300-digit number.
MAX_FIGURE = 1e15

#: How far a percentile or mean may be from what its samples give: the JSON rounds the samples to
#: 0.1 us (engine) or 1 us (pipeline), and a hand may round a figure to 0.01 ms.
_ABS_MS, _REL = 0.01, 0.005
#: How far an FPS may be from what its runs and times give, besides ``timed_s``'s rounding (to 0.1 ms
#: in files written before 2026-12-07, 1 us since).
_REL_FPS = 0.01
_TIMED_S_ROUNDING = 5e-5

# ---- what a report reads from a bench JSON, checked before it is read ------------------------------
#
# A spec is "num" (a finite number), "nn" (a finite number not below 0: times, rates, counts), "count" (a
# whole number not below 0: runs), "size" (a whole number from 1: a batch), "share" (a fraction in 0..1:
# agreement), "str", "any", each with "?" when null is allowed too; ("obj", {key: spec}, nullable) with
# "key?" for a key that may be absent; ("list", spec, nullable); ("map", spec): an object of any keys;
# ("hw",): a [height, width] pair of numbers.


def _obj(fields: dict, nullable: bool = False) -> tuple:
    return ("obj", fields, nullable)


def _list(item, nullable: bool = False) -> tuple:
    return ("list", item, nullable)


_SUMMARY = _obj({"count": "count", "mean?": "nn?", "std?": "nn?", "min?": "nn?", "p50": "nn?", "p90": "nn?",
                 "p99": "nn?", "max": "nn?"})
_ENGINE_SKIPPED = _obj({"label": "str", "skipped": "str"})
_ENGINE_ROW = _obj({
    "label": "str", "skipped?": "str?", "model?": "any", "model_tag?": "str?", "model_name": "any", "engine": "any",
    "provider": "any", "precision": "any", "warmup_runs?": "count", "timed_runs?": "count", "agreement": "share?", "agreement_skipped?": "str?", "input_hw": ("hw",),
    "threads_requested?": "any", "streams_requested?": "any", "batch": "size", "latency_ms": _SUMMARY, "fps": "nn?",
    "throughput_ips": "nn?", "ratio_to_first?": _obj({"fps?": "num?", "throughput_ips?": "num?", "p50_ms?": "num?",
                                                       "p99_ms?": "num?"}, nullable=True),
    "memory?": _obj({"rss_before_load_mb?": "nn?", "rss_after_load_mb?": "nn?", "rss_peak_mb?": "nn?",
                     "rss_load_delta_mb?": "num?", "gpu_peak_mb?": "nn?"}),  # a load may free memory: delta < 0
    "model_file_mb": "nn?", "model_file_bytes?": "count", "samples_ms": _list("nn"),
    "load_s?": "nn", "timed_s?": "nn", "cpu_ms_per_run?": "nn?",
    "block_runs?": _list("count"), "block_p50_ms?": _list("nn"), "block_p50_spread?": "nn?",
    "block_load_1m?": _list(_list("nn?")),
})
_ENGINE = _obj({"settings?": ("map", "any"), "results": _list("any"), "load_average_1m_end?": "nn?",
                "warnings?": _list("str"),
                "interrupted?": _obj({"blocks_done": "size", "blocks": "size"}, nullable=True)})
# rows: _ENGINE_ROW or _ENGINE_SKIPPED
_LATENCY = _obj({"count": "count", "mean": "nn?", "std?": "nn?", "min?": "nn?", "p50": "nn?", "p90": "nn?",
                 "p99": "nn?", "max": "nn?"}, nullable=True)
_SEQUENCE = _obj({"received?": "count", "first?": "num?", "last?": "num?", "missing?": "count", "gaps?": "count",
                  "max_gap?": "count", "duplicates?": "count", "out_of_order?": "count",
                  "missing_between_received?": "count", "missing_outside_received?": "count",
                  "lost_after_last_received?": "count", "received_after_window?": "count"})
#: ``stats.node_accounting``: the window's frames counted against the node's final stats.
_ACCOUNTING = _obj({"first_seq": "count", "last_seq": "num", "captured": "count", "in_flight_at_stop": "count",
                    "published": "count", "dropped": "count", "received": "count", "lost_after_node": "count",
                    "lost_after_last_received": "count", "missing": "count", "topic": "str?",
                    "problems": _list("str")}, nullable=True)
_PIPELINE = _obj({
    "duration_s?": "nn?", "window_s?": "nn?", "input_ended_s?": "nn?", "sequence?": _SEQUENCE,
    "frames_captured?": "nn?", "frames_received?": "nn?", "messages_received?": "nn?",
    "frames_dropped?": "nn?", "lost_after_node?": "nn?", "input_fps?": "nn?", "output_fps?": "nn?",
    "startup_to_first_mask_s?": "nn?", "loss_split?": "str?",
    # bench pipeline since s37 (stats.node_accounting, pipeline.source_rate); older files lack them
    "frames_received_after_window?": "count?", "accounting?": _ACCOUNTING, "warnings?": _list("str"),
    "fps_requested?": "nn?", "fps_requested_from?": "str?", "source_limited?": "str?",
    "cpu?": _obj({"mean_percent?": "nn?", "max_percent?": "nn?", "rss_peak_mb?": "nn?",
                  "threads?": _list(_obj({"name?": "any", "tid": "any", "percent": "any"}))}, nullable=True),
    "probe_wait?": _obj({"waited_s?": "nn?"}, nullable=True),
    "stages_ms": ("map", _LATENCY), "capture_to_publish_ms?": _LATENCY, "capture_to_receive_ms?": _LATENCY,
    "capture_to_receive_samples_ms?": _list("nn", nullable=True), "topics?": "any",
})
_BASELINE = _obj({"fps?": "nn?", "latency_ms": _LATENCY, "samples_ms?": _list("nn", nullable=True)}, nullable=True)
_RATIOS = _obj({"engine_only_fps?": "nn?", "cpu_per_frame?": _obj({
    "node_ms": "num?", "subscriber_ms": "num?", "engine_only_ms": "num?", "node_beyond_engine_ms": "num?",
    "cpu_bound_node_over_engine": "num?"}, nullable=True)}, nullable=True)
_ROUNDS = _list(_obj({"engine": "any", "precision": "any", "node_fps": "nn?"}), nullable=True)
_PEAK = _obj({"max_drop": "num", "fps_held?": "num?", "sustained?": _obj({}, nullable=True),
              "trials": _list(_obj({"fps_requested": "any", "input_fps": "any", "output_fps": "any",
                                    "frames_captured": "any", "missing": "any", "frames_dropped": "any",
                                    "cpu_percent": "any"}))}, nullable=True)
_CAMERA_RUN = _obj({"window_s": "nn", "images_per_s": "nn?", "cpu_percent_mean": "nn?", "min_camera_share": "any",
                    "warnings?": _list("str"),
                    "per_camera": ("map", _obj({"capture_to_receive_ms?": ("map", "any", True),
                                                "frames_received_after_window?": "count", "missing?": "count",
                                                "delivered_share?": "nn?", "warnings?": _list("str")}))})
_CAMERAS = _obj({"n": "any", "one_node": _CAMERA_RUN, "separate_nodes": _CAMERA_RUN, "source?": "any",
                 "fps_requested?": "nn?", "fps_requested_from?": "str?", "warnings?": _list("str"),
                 "rounds?": _list(_obj({"one_node_images_per_s": "any", "separate_images_per_s": "any",
                                        "ratio": "any"}), nullable=True)}, nullable=True)
_ENVIRONMENT = _obj({"libraries?": ("map", "any"), "thread_variables?": ("map", "any"),
                     "gpus?": _list(_obj({"name": "any", "memory_total_mb": "any", "driver": "any"})),
                     "cpu_isa?": _list("str", nullable=True), "ort_providers?": _list("any"),
                     "load_average_1m?": "nn?", "cpu_logical_cores?": "nn?", "cpu_usable_cores?": "nn?"})
_RESULTS = _obj({"engine?": _ENGINE, "pipeline?": _PIPELINE, "baseline?": _BASELINE, "ratios?": _RATIOS,
                 "rounds?": _ROUNDS, "peak_rate?": _PEAK, "cameras?": _CAMERAS, "environment?": _ENVIRONMENT})

_WORDS = {"num": "a number", "nn": "a number not below 0", "count": "a whole number not below 0",
          "size": "a whole number from 1", "share": "a fraction in 0..1", "str": "text",
          "obj": "an object", "list": "a list", "map": "an object",
          "hw": "a [height, width] pair"}


def _shown(value: Any) -> str:
    text = "null" if value is None else json.dumps(value) if isinstance(value, (str, int, float, bool)) else (
        "an object" if isinstance(value, dict) else "a list" if isinstance(value, list) else repr(value))
    return text if len(text) <= 40 else text[:37] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _problem(value: Any, spec: Any, where: str) -> str:
    """Where and how ``value`` (at ``where`` in the JSON) is not what ``spec`` says; empty when it is."""
    if spec == "any":
        return ""
    if isinstance(spec, str):
        base = spec.rstrip("?")
        if value is None and spec.endswith("?"):
            return ""
        if base == "str":
            return "" if isinstance(value, str) else f"{where} is {_shown(value)}, expected text"
        if not _is_number(value):
            return f"{where} is {_shown(value)}, expected a number"
        ok = ((base == "num" or value >= 0) and (base != "share" or value <= 1)  # no negative time, rate or count
              and (base not in ("count", "size") or float(value).is_integer())  # no fraction of a run
              and (base != "size" or value >= 1))
        return "" if ok else f"{where} is {_shown(value)}, expected {_WORDS[base]}"
    kind = spec[0]
    if kind == "hw":
        ok = isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)
        return "" if ok else f"{where} is {_shown(value)}, expected {_WORDS['hw']}"
    if value is None and len(spec) > 2 and spec[2]:
        return ""
    if kind in ("obj", "map") and not isinstance(value, dict):
        return f"{where} is {_shown(value)}, expected {_WORDS[kind]}"
    if kind == "list" and not isinstance(value, list):
        return f"{where} is {_shown(value)}, expected {_WORDS[kind]}"
    if kind == "obj":
        for key, sub in spec[1].items():
            name = key.rstrip("?")
            if name not in value:
                if key.endswith("?"):
                    continue
                return f"{where}.{name} is missing"
            problem = _problem(value[name], sub, f"{where}.{name}")
            if problem:
                return problem
        return ""
    items = enumerate(value) if kind == "list" else value.items()
    for key, item in items:
        problem = _problem(item, spec[1], f"{where}[{key}]" if kind == "list" else f"{where}.{key}")
        if problem:
            return problem
    return ""


def _huge(doc: Any) -> str:
    """The first number anywhere in ``doc`` that no bench writes (NaN, Infinity, ``MAX_FIGURE`` or
    more), walked without recursion; empty when there is none."""
    stack: list[tuple[Any, str]] = [(doc, "")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k)) for k, v in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend((v, f"{where}[{i}]") for i, v in reversed(list(enumerate(value))))
        elif isinstance(value, float) and not math.isfinite(value):
            return f"{where} is {_shown(value)}, expected a number"
        elif _is_number(value) and abs(value) >= MAX_FIGURE:
            return f"{where} is {_shown(value)}, more than any bench measures (below {MAX_FIGURE:.0e})"
    return ""


def results_problem(doc: dict[str, Any]) -> str:
    """Where a bench JSON (``schema`` already checked) holds something its report cannot be made of
    (``samples_ms: ["x", null]``, ``latency_ms: null``, ``p50`` above ``p99``): the key and what it
    holds, e.g. ``engine.results[0].latency_ms is null, expected an object``; empty when it is whole."""
    problem = _problem(doc, _RESULTS, "the JSON").replace("the JSON.", "", 1)
    if problem:
        return problem
    if doc.get("kind") not in KINDS:
        return f"kind is {_shown(doc.get('kind'))}, expected one of {', '.join(map(json.dumps, KINDS))}"
    problem = _huge(doc)
    if problem:
        return problem
    if doc["kind"] == "engine" and "engine" not in doc:
        return "engine is missing (an engine bench's figures)"
    if doc["kind"] == "pipeline" and "pipeline" not in doc and "cameras" not in doc:
        return "pipeline is missing (a pipeline bench's figures)"
    engine = doc.get("engine")
    if engine is not None and not engine["results"]:
        return "engine.results is empty: no configuration to report"
    for i, row in enumerate((engine or {}).get("results") or []):
        problem = _row_problem(row, f"engine.results[{i}]")
        if problem:
            return problem
    pipeline = doc.get("pipeline") or {}
    for name, summary in (pipeline.get("stages_ms") or {}).items():
        problem = _order_problem(summary, f"pipeline.stages_ms.{name}")
        if problem:
            return problem
    for key in ("capture_to_publish_ms", "capture_to_receive_ms"):
        problem = _order_problem(pipeline.get(key), f"pipeline.{key}")
        if problem:
            return problem
    problem = _accounting_problem(pipeline) or _pipeline_rate_problem(pipeline)
    if problem:
        return problem
    samples = pipeline.get("capture_to_receive_samples_ms")
    summary = pipeline.get("capture_to_receive_ms")
    if samples and summary and summary["count"] == len(samples):  # every frame's: they must agree
        problem = _samples_problem(summary, samples, "pipeline.capture_to_receive_ms",
                                   "capture_to_receive_samples_ms")
        if problem:
            return problem
    base = doc.get("baseline") or {}
    problem = _order_problem(base.get("latency_ms"), "baseline.latency_ms")
    if problem:
        return problem
    if base.get("samples_ms") and base.get("latency_ms"):
        return _samples_problem(base["latency_ms"], base["samples_ms"], "baseline.latency_ms", "samples_ms")
    return ""


def _row_problem(row: Any, where: str) -> str:
    """An engine row that is not what the bench writes: its types, then its figures against its samples."""
    spec = _ENGINE_SKIPPED if isinstance(row, dict) and row.get("skipped") else _ENGINE_ROW
    problem = _problem(row, spec, where)
    if problem or spec is _ENGINE_SKIPPED:
        return problem
    samples = row["samples_ms"]
    if "timed_runs" in row and row["timed_runs"] != len(samples):
        # the bench keeps every timed run's time: a count that is not theirs was changed after
        return (f"{where}.timed_runs is {_shown(row['timed_runs'])}, but the row holds "
                f"{len(samples)} samples_ms (one per timed run)")
    lat = row["latency_ms"]
    problem = _order_problem(lat, f"{where}.latency_ms")
    if problem:
        return problem
    if samples or lat["count"]:
        problem = _samples_problem(lat, samples, f"{where}.latency_ms", "samples_ms")
        if problem:
            return problem
    if "block_runs" in row and sum(row["block_runs"]) != len(samples):
        return (f"{where}.block_runs adds up to {sum(row['block_runs'])}, but the row holds {len(samples)} "
                "samples_ms")
    return _rate_problem(row, where)


def _accounting_problem(p: dict[str, Any]) -> str:
    """A pipeline count that ``pipeline.accounting`` (``stats.node_accounting``: the window's frames
    against the node's final stats) makes impossible; empty without one (a file from before it, or a
    node that printed no final stats). By construction: captured = published + dropped, missing =
    captured - received, lost after the node = published - received (0 when the node's counts and the
    messages disagree, which ``problems`` then says), its tail a part of it; the pipeline's
    ``frames_captured``, ``frames_dropped``, ``lost_after_node`` and ``sequence`` counts are the
    accounting's. With no ``problems`` listed the node published at most what it captured and the
    subscriber received at most what it published: frames received (in the window and after it) are
    at most the frames captured."""
    acct = p.get("accounting")
    if not acct:
        return ""
    where = "pipeline.accounting"
    captured, published, received = acct["captured"], acct["published"], acct["received"]
    for key, expected, how in (
            ("dropped", captured - published, f"captured {captured} - published {published}"),
            ("missing", captured - received, f"captured {captured} - received {received}"),
            ("lost_after_node", max(published - received, 0), f"published {published} - received {received}")):
        if acct[key] != expected:
            return (f"{where}.{key} is {_shown(acct[key])}, but its {how} gives {expected} (the node's frames are "
                    "published or dropped, and what it published was received or lost)")
    if acct["lost_after_last_received"] > acct["lost_after_node"]:
        return (f"{where}.lost_after_last_received is {_shown(acct['lost_after_last_received'])}, more than its "
                f"lost_after_node {_shown(acct['lost_after_node'])} (they are a part of them)")
    if not acct["problems"] and received > published:
        return (f"{where}.received is {received}, more than the {published} frames published, and its problems "
                "name no such disagreement (the bench lists it there)")
    seq = p.get("sequence") or {}
    for key, value, of in (("frames_captured", p.get("frames_captured"), "captured"),
                           ("frames_dropped", p.get("frames_dropped"), "dropped"),
                           ("lost_after_node", p.get("lost_after_node"), "lost_after_node"),
                           ("sequence.missing", seq.get("missing"), "missing"),
                           ("sequence.lost_after_last_received", seq.get("lost_after_last_received"),
                            "lost_after_last_received")):
        if value is not None and value != acct[of]:
            return (f"pipeline.{key} is {_shown(value)}, but {where}.{of} is {_shown(acct[of])} (the figure is "
                    "the accounting's)")
    after = p.get("frames_received_after_window")
    if after is not None and seq.get("received_after_window") not in (None, after):
        return (f"pipeline.sequence.received_after_window is {_shown(seq['received_after_window'])}, but "
                f"pipeline.frames_received_after_window is {after} (the same frames)")
    got = p.get("frames_received", seq.get("received"))
    if not acct["problems"] and got is not None and got + (after or 0) > captured:
        return (f"pipeline.frames_received is {_shown(got)}"
                + (f", with {after} received after the window," if after else ",")
                + f" more than the {captured} frames captured (a frame is captured before it is received)")
    return ""


def _pipeline_rate_problem(p: dict[str, Any]) -> str:
    """An ``input_fps`` or ``output_fps`` that the window's frames do not give: input = frames captured
    / ``window_s``, output = frames received in the window / ``window_s`` (``bench/received.py``)."""
    window = p.get("window_s")
    if not window:
        return ""
    for key, frames_key in (("input_fps", "frames_captured"), ("output_fps", "frames_received")):
        fps, frames = p.get(key), p.get(frames_key)
        if fps is None or frames is None:
            continue
        if abs(fps * window - frames) > _REL_FPS * frames + fps * _TIMED_S_ROUNDING + 0.5:
            return (f"pipeline.{key} is {_shown(fps)}, but its {frames:g} {frames_key.replace('_', ' ')} in window_s "
                    f"{_shown(window)} give {frames / window:.4g}")
    return ""


def _order_problem(summary: dict[str, Any] | None, where: str) -> str:
    """min <= p50 <= p90 <= p99 <= max, and the mean within min..max: what every sample set gives."""
    if not summary:
        return ""
    keys = [k for k in ("min", "p50", "p90", "p99", "max") if summary.get(k) is not None]
    for low, high in zip(keys, keys[1:], strict=False):
        if summary[low] > summary[high]:
            return (f"{where}.{low} is {_shown(summary[low])}, above its {high} {_shown(summary[high])} "
                    "(no set of samples gives that)")
    mean, top = summary.get("mean"), summary.get("max")
    if mean is not None and top is not None and mean > top:
        return f"{where}.mean is {_shown(mean)}, above its max {_shown(top)} (no set of samples gives that)"
    return ""


def _near(value: float, expected: float, rel: float, absolute: float = 0.0) -> bool:
    return abs(value - expected) <= max(absolute, rel * abs(expected))


def _samples_problem(summary: dict[str, Any], samples: list[float], where: str, samples_key: str) -> str:
    """A count, mean or percentile of ``summary`` that its raw ``samples`` (beside it) do not give."""
    from perception.bench.stats import summarize_ms

    if summary["count"] != len(samples):
        return (f"{where}.count is {_shown(summary['count'])}, but {samples_key} holds {len(samples)} samples "
                "(the figures are made of them)")
    if not samples:
        return ""
    given = summarize_ms(samples)
    for key in ("mean", "min", "p50", "p90", "p99", "max"):
        value = summary.get(key)
        if value is not None and not _near(value, given[key], _REL, _ABS_MS):
            return (f"{where}.{key} is {_shown(value)}, but its {samples_key} give {given[key]:.4g} (the figures "
                    "are made of the samples beside them)")
    return ""


def _rate_problem(row: dict[str, Any], where: str) -> str:
    """An FPS or img/s that the row's runs and times do not give: FPS = runs / timed_s (one call at a
    time: 1000 / mean latency), img/s = FPS x batch."""
    fps, lat, n = row["fps"], row["latency_ms"], len(row["samples_ms"])
    if fps is not None and row.get("timed_s") is not None:
        if row["timed_s"] == 0:
            return f"{where}.timed_s is 0, but fps is {_shown(fps)} ({n} runs take some time)"
        expected = n / row["timed_s"]
        if abs(fps * row["timed_s"] - n) > _REL_FPS * n + fps * _TIMED_S_ROUNDING:
            return (f"{where}.fps is {_shown(fps)}, but its {n} runs in timed_s {_shown(row['timed_s'])} give "
                    f"{expected:.4g}")
    if fps is not None and (row.get("streams_requested") or 1) <= 1 and lat.get("mean"):
        expected = 1000 / lat["mean"]
        if not _near(fps, expected, _REL_FPS):
            return (f"{where}.fps is {_shown(fps)}, but 1000 / its latency_ms.mean gives {expected:.4g} (one call "
                    "at a time)")
    ips = row["throughput_ips"]
    if fps is not None and ips is not None and not _near(ips, fps * row["batch"], _REL_FPS):
        return f"{where}.throughput_ips is {_shown(ips)}, but fps x batch gives {fps * row['batch']:.4g}"
    if "block_p50_ms" in row and "block_runs" in row:
        starts = np.cumsum([0, *row["block_runs"]])
        medians = [float(np.median(row["samples_ms"][a:b])) for a, b in zip(starts, starts[1:], strict=False) if b > a]
        if len(medians) != len(row["block_p50_ms"]) or not all(
                _near(v, m, _REL, _ABS_MS) for v, m in zip(row["block_p50_ms"], medians, strict=True)):
            return f"{where}.block_p50_ms is not the medians of its blocks of samples_ms (block_runs)"
    return ""
