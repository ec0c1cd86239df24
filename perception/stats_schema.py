"""The keys of the node's stats document, declared once: name, type, unit, meaning, and when a key
is there. Re-exported by ``perception.contracts``.

Three documents share these keys:

- ``CAMERA_STATS``: what a camera's pipeline publishes on ``<namespace>/stats`` once per
  ``--stats-interval`` and, for the whole run, when it stops (``Pipeline.stats``). A single-camera
  ``perception run`` prints its final one as a JSON line.
- ``NODE_STATS``: the final line of a node with several cameras (``MultiCameraNode.summary``): the
  cameras' counters summed, and each camera's own final document under ``cameras``.
- ``STARTUP_STATS``: the final line of a run stopped during start-up (nothing read yet).

Producers fill the canonical keys and call ``with_aliases`` for the two old names the README
documents for outside readers (``frames_out`` = ``published``, ``drops`` = ``dropped``); readers in
this package use the canonical names. ``check_stats`` lists where a document departs from its
declaration (tests run it on real documents of the node, so the two cannot drift), and
``stats_table_markdown`` writes the README's table of keys.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

#: The percentiles every latency summary reports: the node's stats, the subscriber's, the bench's.
PERCENTILES = (50, 90, 99)

#: ``StatsKey.when``: in every document; only (and always) in the final one; in any document when it
#: applies (the meaning says when); only in the final one, when it applies.
ALWAYS, FINAL, OPTIONAL, FINAL_OPTIONAL = "always", "final", "optional", "final, optional"
_KINDS = {"int": (int,), "number": (int, float), "str": (str,), "bool": (bool,), "object": (dict,), "list": (list,)}


@dataclass(frozen=True)
class StatsKey:
    """One key of a stats document.

    ``kind``: the JSON type (``int``, ``number``, ``str``, ``bool``, ``object``, ``list``);
    ``nullable``: null is allowed too. An ``object`` has either declared ``fields`` (a closed set
    of keys) or free keys (stage names, camera names, batch sizes) whose every value follows
    ``values``; a ``list`` holds items of kind ``items``. ``alias_of``: an old name kept for
    outside readers, always equal to that canonical key. ``summed``: the node's final document with
    several cameras holds the sum over the cameras.
    """

    name: str
    kind: str
    meaning: str
    unit: str = ""
    when: str = ALWAYS
    nullable: bool = False
    fields: tuple[StatsKey, ...] | None = None
    values: StatsKey | None = None
    items: str | None = None
    alias_of: str | None = None
    summed: bool = False


def _ms(name: str, meaning: str) -> StatsKey:
    return StatsKey(name, "number", meaning, "ms")


#: ``{"p50", "p90", "p99"}`` in ms: one latency summary (``perception.stats.latency_percentiles``).
PERCENTILE_FIELDS = tuple(_ms(f"p{p}", f"{p}th percentile (linear interpolation)") for p in PERCENTILES)

#: The ``publisher`` block: what the node's publisher did (``MaskPublisher.stats``).
PUBLISHER_STATS = (
    StatsKey("messages_sent", "int", "messages handed to ZeroMQ"),
    StatsKey("bytes_sent", "int", "their bytes (topic, headers, payloads)", "bytes"),
    StatsKey("send_errors", "int", "sends that failed (counted, never raised)"),
    StatsKey("hwm_overflows", "int", "sends of this namespace that found one or more subscriber queues full "
             "(`--sndhwm`; ZeroMQ tells whether any queue is full, not which: subscribers that fill on the same send "
             "count once, so this is no number of subscribers): each full subscriber loses every message from then "
             "until its queue has drained by half (one stuck for good adds 1 at most; its `pub_seq` gaps say how "
             "many it lost)"),
    StatsKey("subscriptions", "int", "live subscriptions that receive one of this namespace's topics (one per "
             "subscriber and prefix; a prefix under the namespace that names none of them, e.g. `<ns>/x`, does not "
             "count, nor `<ns>/frame` on a node without `--atomic-frames`; with them a reader that asks for masks by "
             "name and takes `<ns>/frame` for them counts once per mask, and any holder of `<ns>/frame` at least once)"),
    StatsKey("curve_rejections", "int", "CURVE handshakes the allow-list refused"),
    StatsKey("curve_disconnects", "int", "connected CURVE clients cut because their key left --curve-allow"),
)

#: The ``unknown`` block: pixels the model is unsure of (``--unknown-threshold``).
UNKNOWN_STATS = (
    StatsKey("id", "int", "the class id of unknown pixels (255)"),
    StatsKey("threshold", "number", "the model's confidence (top class probability, or its "
             "`confidence_pool` summed) below which a pixel is unknown; 0 when off"),
    StatsKey("enabled", "bool", "whether pixels are marked unknown"),
    StatsKey("set_by", "str", "`model metadata` or `--unknown-threshold` (when enabled)", when=OPTIONAL),
    StatsKey("fraction", "number", "mean share of unknown pixels per frame, over the interval or the run "
             "(when enabled; null over no frames)", when=OPTIONAL, nullable=True),
    StatsKey("fraction_max", "number", "the largest share of one frame (when enabled; null over no frames)",
             when=OPTIONAL, nullable=True),
    StatsKey("frames", "int", "frames behind the two shares (when enabled)", when=OPTIONAL),
)

#: The ``drivable`` block: what the ego reach (``--drivable-reach``) left out of the drivable mask.
DRIVABLE_STATS = (
    StatsKey("reach", "str", "`ego` (only the area joined to the car) or `all` (`--drivable-reach`)"),
    StatsKey("cut", "number", "mean share of the drivable classes' pixels left out as unreachable, per frame, "
             "over the interval or the run (ego; null over no frames)", when=OPTIONAL, nullable=True),
    StatsKey("cut_max", "number", "the largest share of one frame (ego; null over no frames)", when=OPTIONAL,
             nullable=True),
    StatsKey("emptied", "number", "share of frames with >= 10 % of their pixels in the drivable classes whose drivable "
             "mask the reach emptied (ego; a hood the model does not know as `ego_vehicle`; null over no frames)",
             when=OPTIONAL, nullable=True),
    StatsKey("frames", "int", "frames behind the shares: those whose drivable mask was built (ego)", when=OPTIONAL),
)

#: The ``batching`` block of a camera of a node with several cameras (``FrameBatcher.stats``).
BATCHING_STATS = (
    StatsKey("cameras", "list", "the cameras sharing the engine, in batch order", items="str"),
    StatsKey("timeout_ms", "number", "`--batch-timeout-ms`", "ms"),
    StatsKey("batches", "int", "engine calls so far"),
    StatsKey("frames", "int", "frames in them"),
    StatsKey("mean_batch", "number", "frames per batch (null before the first)", nullable=True),
    StatsKey("batch_sizes", "object", "batches per size (keys: sizes as strings)", values=StatsKey("n", "int", "")),
    StatsKey("timed_out", "int", "batches that ran on the timeout with a camera missing"),
    StatsKey("fixed_batch", "int", "the model's fixed batch (null: dynamic)", nullable=True),
    StatsKey("infer_ms", "object", "batch inference p50/p90/p99 (empty before the first)", "ms",
             values=StatsKey("p", "number", "")),
)

_LATENCY = StatsKey("latency_ms", "object", "per stage (`capture`, `queue`, `preprocess`, `batch`, `infer`, "
                    "`postprocess`, `publish`, `total`) its p50/p90/p99 over the last 512 frames; `capture` is the "
                    "source's read, before the frame is stamped, so `total` (from that stamp to the last message "
                    "sent) does not hold it", "ms",
                    values=StatsKey("stage", "object", "", fields=PERCENTILE_FIELDS))

#: ``startup`` in the final stats of a node that started but whose source gave no frame at all
#: (a stream that sends nothing decodable): "complete" is kept for a run that frames flowed through.
NO_FRAME_YET = "waiting for the first frame"

#: Every key of a camera's stats document, in the order the pipeline writes them.
CAMERA_STATS = (
    StatsKey("uptime_s", "number", "since the engine warm-up ended", "s"),
    StatsKey("input_fps", "number", "frames the source produced per second, over the interval (the run when final)",
             "1/s", summed=True),
    StatsKey("output_fps", "number", "frames published per second, over the interval (the run when final)",
             "1/s", summed=True),
    StatsKey("frames_in", "int", "every frame the source produced, readable or not", summed=True),
    StatsKey("published", "int", "frames that went through every stage: their masks went to each subscriber "
             "there was (`unheard` of them to none)", summed=True),
    StatsKey("unheard", "int", "of `published`: frames no mask or obstacles topic had a subscriber for, so "
             "nothing was built or sent (`output_fps` counts them: a health check reads this too)", summed=True),
    StatsKey("frames_out", "int", "old name of `published` (the canonical key)", alias_of="published", summed=True),
    StatsKey("dropped", "int", "frames replaced by a newer one in the `latest` queue", summed=True),
    StatsKey("drops", "int", "old name of `dropped` (the canonical key)", alias_of="dropped", summed=True),
    StatsKey("corrupt", "int", "`source_corrupt` + `bad_frames`", summed=True),
    StatsKey("in_flight_discarded", "int", "read but still queued or inside a stage when the run ended",
             summed=True),
    StatsKey("source_corrupt", "int", "frames the source could not read", summed=True),
    StatsKey("bad_frames", "int", "frames a stage failed on (counted and skipped)", summed=True),
    StatsKey("reconnects", "int", "times a stream or camera was opened again after it dropped out (one a reopening "
             "that worked, however many tries it took)", summed=True),
    _LATENCY,
    StatsKey("queue", "str", "the frame queue policy: `latest` or `lossless`"),
    StatsKey("source", "str", "the source's kind and spec"),
    StatsKey("engine", "str", "the engine's registry name (`ort`, `tensorrt`, `openvino`, `torch`)"),
    StatsKey("provider", "str", "where it runs (e.g. `CPUExecutionProvider`)"),
    StatsKey("precision", "str", "what runs: `fp32`, `bf16`, `fp16` or `int8`"),
    StatsKey("streams", "int", "frames in flight in the inference stage (`--streams`)"),
    StatsKey("model_id", "str", "the model's id, as in every mask header"),
    StatsKey("masks", "list", "the mask topics published", items="str"),
    StatsKey("publisher", "object", "the publisher's counters", fields=PUBLISHER_STATS),
    StatsKey("unknown", "object", "pixels below the confidence threshold", fields=UNKNOWN_STATS),
    StatsKey("drivable", "object", "the drivable area the car can reach", fields=DRIVABLE_STATS),
    StatsKey("engine_selection", "object", "with `--engine auto`: the choice, the reason and the probe's "
             "figures; at a first start `state` is `probing` (ONNX Runtime FP32 runs) until the verdict: "
             "`chosen` (`switched_after_runs`, `switched_after_s` and `switch_pause_ms` when the engine "
             "changed) or `failed`", when=OPTIONAL),
    StatsKey("camera", "str", "the camera's name (nodes with several cameras)", when=OPTIONAL),
    StatsKey("batching", "object", "the shared engine's batching (nodes with several cameras)", when=OPTIONAL,
             fields=BATCHING_STATS),
    StatsKey("source_skipped", "list", "the first 20 unreadable frames, named (when there were any)",
             when=OPTIONAL, items="str"),
    StatsKey("cpu_throttled_s", "number", "under a cgroup CPU quota: the time the quota held the node back since "
             "it started, summed over the cores it was throttled on (`cpu.stat`; the cgroup's, so other processes "
             "in it count too); absent without a quota", "s", when=OPTIONAL),
    StatsKey("end_reason", "str", "`end of input` (every frame read went through), `max frames reached`, "
             "`duration reached`, `signal SIGINT` / `signal SIGTERM` / `signal SIGHUP` (also after the input's end, while frames "
             "were still in flight), `<stage> failed`, `camera <name> gave no frame` (several cameras) or `stopped`",
             when=FINAL),
    StatsKey("startup", "str", "the start-up step reached; `complete` once frames flowed, "
             f"`{NO_FRAME_YET}` when the node started but its source gave no frame", when=FINAL),
    StatsKey("balanced", "bool", "`frames_in == published + dropped + corrupt + in_flight_discarded`",
             when=FINAL),
    StatsKey("error", "str", "the failure that ended the run (when a stage failed)", when=FINAL_OPTIONAL),
    StatsKey("startup_to_first_mask_ms", "number", "the line `perception run` prints only: from the command's "
             "start to the first mask sent (when one was)", "ms", when=FINAL_OPTIONAL),
)

_BY_NAME = {key.name: key for key in CAMERA_STATS}
#: Old key -> canonical key, for readers outside this package (see the README).
STATS_ALIASES = {key.name: key.alias_of for key in CAMERA_STATS if key.alias_of is not None}
#: The counters a node with several cameras sums over its cameras.
SUMMED = tuple(key.name for key in CAMERA_STATS if key.summed)
#: The frame counters of the balance (``frames_in = published + dropped + corrupt + in_flight_discarded``).
FRAME_COUNTERS = ("frames_in", "published", "dropped", "corrupt", "in_flight_discarded")

#: The final document of a node with several cameras.
NODE_STATS = (
    *(StatsKey(k.name, k.kind, f"summed over the cameras: {k.meaning}", k.unit, FINAL, alias_of=k.alias_of,
               summed=True) for k in CAMERA_STATS if k.summed),
    StatsKey("end_reason", "str", "the cameras' end reason when they agree, else `name: reason; ...`", when=FINAL),
    StatsKey("startup", "str", "`complete`, or the first camera's step that was not", when=FINAL),
    StatsKey("balanced", "bool", "every camera balances", when=FINAL),
    *(_BY_NAME[name] for name in ("engine", "provider", "precision", "model_id")),
    replace(_BY_NAME["batching"], when=FINAL, meaning="the shared engine's batching"),
    StatsKey("cameras", "object", "camera name -> that camera's own final document", when=FINAL,
             values=StatsKey("camera", "object", "", fields=CAMERA_STATS)),
    _BY_NAME["error"],
    _BY_NAME["startup_to_first_mask_ms"],
)

#: The final document of a run stopped, or failed, during start-up: zero counters, balanced.
STARTUP_STATS = (
    *(StatsKey(k.name, k.kind, k.meaning, k.unit, FINAL, alias_of=k.alias_of)
      for k in CAMERA_STATS if k.name in FRAME_COUNTERS or k.alias_of in FRAME_COUNTERS),
    *(_BY_NAME[name] for name in ("end_reason", "startup", "balanced")),
    replace(_BY_NAME["error"], meaning="the failure that ended the start-up (`end_reason` `start-up failed`)"),
)


#: What a reader of the wire counts from sequence numbers, one name per figure everywhere
#: (``perception listen`` and ``demo``: ``perception.topic_stats``; ``perception bench pipeline``:
#: ``perception.bench.stats.sequence_gaps``). Where the node's ``seq`` skips 5 -> 8 -> 9 -> 13,
#: ``missing`` is 5 and ``gaps`` is 2.
SEQUENCE_FIGURES = {
    "missing": "sequence numbers absent between the first and the last received",
    "gaps": "places where at least one number was skipped (a run of missing numbers is one gap)",
    "max_gap": "the longest run of missing numbers",
    "lost": "of `missing`, those the transport lost (a gap in the publisher's per-topic `pub_seq`)",
    "node_dropped": "of `missing`, those the node itself did not publish (a gap in `seq` alone)",
}


def with_aliases(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with every old key (``STATS_ALIASES``) set to its canonical key's value, in place."""
    for alias, canonical in STATS_ALIASES.items():
        if canonical in doc:
            doc[alias] = doc[canonical]
    return doc


#: ``end_reason`` of a run that failed during start-up (its ``error`` says why).
STARTUP_FAILED = "start-up failed"


def startup_document(step: str, reason: str, error: str | None = None) -> dict[str, Any]:
    """The final document of a run stopped, or failed (``error``), during start-up (``STARTUP_STATS``)."""
    doc: dict[str, Any] = {name: 0 for name in FRAME_COUNTERS}
    doc = with_aliases({**doc, "end_reason": reason, "startup": step, "balanced": True})
    if error is not None:
        doc["error"] = error
    return doc


def check_stats(doc: Any, keys: tuple[StatsKey, ...] = CAMERA_STATS, *, final: bool = False,
                where: str = "stats") -> list[str]:
    """Where ``doc`` departs from ``keys``: a key missing or present against its ``when``, a value
    of another type, an undeclared key, an alias that differs from its canonical key. Empty when
    the document matches. ``final``: the document is a run's last one."""
    if not isinstance(doc, dict):
        return [f"{where} is {type(doc).__name__}, expected an object"]
    problems = [f"{where}: undeclared key {name!r}" for name in doc if name not in {k.name for k in keys}]
    for key in keys:
        path = f"{where}.{key.name}"
        if key.name not in doc:
            if key.when == ALWAYS or (key.when == FINAL and final):
                problems.append(f"{path} is missing")
            continue
        if not final and key.when in (FINAL, FINAL_OPTIONAL):
            problems.append(f"{path} is only in a final document")
        problems += _check_value(doc[key.name], key, path, final)
        if key.alias_of is not None and doc.get(key.alias_of) != doc[key.name]:
            problems.append(f"{path} differs from {key.alias_of!r}, of which it is the old name")
    return problems


def _check_value(value: Any, key: StatsKey, path: str, final: bool) -> list[str]:
    if value is None and key.nullable:
        return []
    if not isinstance(value, _KINDS[key.kind]) or (isinstance(value, bool) and key.kind != "bool"):
        return [f"{path} is {type(value).__name__} {value!r:.40}, expected {key.kind}"]
    if key.fields is not None:
        return check_stats(value, key.fields, final=final, where=path)
    problems: list[str] = []
    if key.values is not None:
        for name, item in value.items():
            problems += _check_value(item, key.values, f"{path}.{name}", final)
    if key.items is not None:
        item_key = StatsKey("item", key.items, "")
        for index, item in enumerate(value):
            problems += _check_value(item, item_key, f"{path}[{index}]", final)
    return problems


def stats_table_markdown(keys: tuple[StatsKey, ...] = CAMERA_STATS, *, collapse_summed: bool = False,
                         blocks: bool = True) -> str:
    """The README's table of stats keys (``tests/test_stats_schema.py`` checks the README holds it).

    ``collapse_summed``: the summed counters in one row (the node's document); ``blocks``: a table
    per object with declared fields (``publisher``, ``unknown``, ``batching``) after the main one.
    """
    rows = ["| key | type | unit | when | meaning |", "|---|---|---|---|---|"]
    if collapse_summed:
        summed = [key for key in keys if key.summed]
        rows.append(f"| {', '.join(f'`{k.name}`' for k in summed)} | number | | {FINAL} | each the sum of the "
                    "cameras' final figures |")
        keys = tuple(key for key in keys if not key.summed)
    rows += [_row(key) for key in keys]
    if blocks:
        for key in keys:
            if key.fields is not None and key.fields != PERCENTILE_FIELDS:
                rows += ["", f"`{key.name}`:", "", "| key | type | unit | when | meaning |", "|---|---|---|---|---|"]
                rows += [_row(field) for field in key.fields]
    return "\n".join(rows)


def _row(key: StatsKey) -> str:
    kind = key.kind + (" or null" if key.nullable else "")
    meaning = key.meaning
    if key.fields is not None:
        meaning += ": " + ", ".join(f"`{f.name}`" for f in key.fields)
    return f"| `{key.name}` | {kind} | {key.unit} | {key.when} | {meaning} |"


def sequence_figures_markdown() -> str:
    """The README's table of ``SEQUENCE_FIGURES`` (checked by ``tests/test_stats_schema.py``)."""
    return "\n".join(["| name | meaning |", "|---|---|",
                      *(f"| `{name}` | {meaning} |" for name, meaning in SEQUENCE_FIGURES.items())])
