"""A model's metadata: what ``perception export`` stores as JSON under ``contracts.METADATA_KEY`` in
an ONNX file's ``metadata_props``, and everything the node needs to run the model, read without
torch. Its field checks are ``perception/metadata_fields.py``; the class table, the input contract
and the limits it applies (``MAX_HEADER_STRING``, ``MAX_MASK_SIDE`` ...) are ``perception/contracts.py``'s.

Imported by the runtime node: free of torch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from perception import metadata_fields as fields
from perception.contracts import (
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    MAX_HEADER_STRING,
    MAX_MASK_PIXELS,
    MAX_MASK_SIDE,
    METADATA_SCHEMA_VERSION,
    ClassTable,
)
from perception.errors import ModelError

log = logging.getLogger(__name__)
#: Metadata (by the hash of its text) whose NaN real-road figures were warned about (``from_json``).
_WARNED_NAN: set[int] = set()


@dataclass(frozen=True)
class ModelMetadata:
    """Everything the node needs to run a model, read without torch.

    ``input_hw`` is the fixed (height, width) of the graph input. ``mean`` / ``std`` are the RGB
    normalisation on 0..1 pixels that the graph applies internally (recorded for reference).
    ``val_metrics`` holds the training run's validation figures (``miou``, ``global_acc``,
    ``class_acc`` and ``per_class_iou`` as fractions in 0..1). ``real_road_check`` holds the
    model's task figures on real road frames it never trained on, as ``perception eval --tasks
    --record`` measured them (``data``, ``split``, ``frames``, ``input_hw``, and per task
    ``iou`` / ``precision`` / ``recall`` as fractions); empty when never measured.
    ``unknown_threshold`` (models with the ``confidence`` output): pixels whose confidence
    (``OUTPUT_CONFIDENCE``) is below it are published as ``UNKNOWN_CLASS_ID`` (see ``unknown_level``); 0 when
    none was chosen. ``unknown_rule`` says how ``perception export`` chose it and on which data.
    ``confidence_pool`` (models with the ``confidence`` output): the classes whose probabilities the
    confidence sums when one of them wins (``confidence_pool()``); empty: the top class probability
    alone, as in every file exported before the pool (2026-12-06).
    ``logit_adjust`` (``perception export --logit-adjust``): the per-class ``bias`` the graph adds
    to the logits before its argmax, its ``tau``, the class ``weighting`` it undoes and the
    ``rule`` that chose it; empty when none (the graph is the model as trained).
    """

    model_name: str
    class_table: ClassTable
    input_hw: tuple[int, int]
    mean: tuple[float, float, float] = IMAGENET_MEAN_RGB
    std: tuple[float, float, float] = IMAGENET_STD_RGB
    dataset: str = ""
    val_metrics: dict[str, Any] = field(default_factory=dict)
    real_road_check: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"
    dynamic_batch: bool = False
    has_confidence: bool = False
    unknown_threshold: float = 0.0
    unknown_rule: str = ""
    confidence_pool: tuple[str, ...] = ()
    logit_adjust: dict[str, Any] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    tool_versions: dict[str, str] = field(default_factory=dict)
    created_utc: str = ""
    schema_version: int = METADATA_SCHEMA_VERSION

    @property
    def model_id(self) -> str:
        """A short human-readable id, sent in every message header."""
        h, w = self.input_hw
        dataset = self.dataset.split(":", 1)[0] or "unknown"  # the kind, not the spec's path/options
        return f"{self.model_name}-{dataset}-{h}x{w}-{self.precision}"

    def confidence_pool_flags(self) -> list[bool] | None:
        """Per class, whether the confidence output pools its probability (``confidence_pool``);
        None when the model has no confidence output or no pool."""
        pool = set(self.confidence_pool) if self.has_confidence else set()
        return [name in pool for name in self.class_table.names] if pool else None

    def to_json(self) -> str:
        doc = asdict(self)
        doc["class_table"] = self.class_table.to_dict()
        doc["input_hw"] = list(self.input_hw)
        doc["mean"] = list(self.mean)
        doc["std"] = list(self.std)
        # No NaN or Infinity: the reader (and jq, a C++ node) takes standard JSON; an undefined figure is null.
        return json.dumps(doc, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str, *, source: str = "model") -> ModelMetadata:
        """Parse metadata; raise ModelError naming ``source`` when it is missing or malformed."""
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:  # bad JSON, a number past int's digit limit, nesting too deep
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
            raise ModelError(f"{source}: metadata is not valid JSON ({why}); re-export the model") from exc
        if not isinstance(doc, dict):
            raise ModelError(f"{source}: metadata is not a JSON object (a {type(doc).__name__}); re-export the model")
        version = doc.get("schema_version")
        if type(version) is not int or version != METADATA_SCHEMA_VERSION:  # not true, not 1.0
            raise ModelError(
                f"{source}: metadata schema version {version!r:.40}, this node reads version "
                f"{METADATA_SCHEMA_VERSION}; re-export the model with this version of perception"
            )
        undefined: list[str] = []  # real-road figures stored as NaN by an older --record, read as null
        try:
            metadata = cls(
                model_name=fields.text(doc["model_name"], "model_name", empty=False),
                class_table=ClassTable.from_dict(doc["class_table"]),
                input_hw=fields.input_hw(doc["input_hw"]),
                mean=fields.rgb(doc.get("mean", IMAGENET_MEAN_RGB), "mean"),
                std=fields.rgb(doc.get("std", IMAGENET_STD_RGB), "std"),
                dataset=fields.text(doc.get("dataset", ""), "dataset"),
                val_metrics=fields.val_metrics(doc.get("val_metrics")),
                real_road_check=fields.real_road_check(doc.get("real_road_check"), undefined),
                precision=fields.precision(doc.get("precision", "fp32")),
                dynamic_batch=fields.flag(doc.get("dynamic_batch", False), "dynamic_batch"),
                has_confidence=fields.flag(doc.get("has_confidence", False), "has_confidence"),
                unknown_threshold=fields.probability(doc.get("unknown_threshold", 0.0)),
                unknown_rule=fields.text(doc.get("unknown_rule", ""), "unknown_rule", limit=fields.MAX_METADATA_NOTE),
                confidence_pool=fields.class_names(doc.get("confidence_pool"), "confidence_pool"),
                logit_adjust=fields.mapping(doc.get("logit_adjust"), "logit_adjust"),
                model_kwargs=fields.mapping(doc.get("model_kwargs"), "model_kwargs"),
                tool_versions={str(k): str(v) for k, v in fields.mapping(doc.get("tool_versions"), "tool_versions").items()},
                created_utc=fields.text(doc.get("created_utc", ""), "created_utc", limit=fields.MAX_METADATA_NAME),
                schema_version=version,
            )
            fields.check_logit_adjust(metadata.logit_adjust, metadata.class_table.num_classes)
            for name in metadata.confidence_pool:
                metadata.class_table.id_of(name)  # KeyError: a pool class the table lacks
        except (KeyError, TypeError, ValueError, IndexError, OverflowError, AttributeError) as exc:
            raise ModelError(f"{source}: metadata is incomplete or malformed ({str(exc)[:300]}); re-export the model") from exc
        # What to_json (allow_nan=False) could not write back: a metadata rewrite or the node's info hash.
        for name in ("val_metrics", "real_road_check", "logit_adjust", "model_kwargs"):
            where = _non_finite(getattr(metadata, name), name)
            if where is not None:
                raise ModelError(f"{source}: metadata is incomplete or malformed ({where} is not a finite number); "
                                 "re-export the model")
        if undefined and hash(text) not in _WARNED_NAN:  # once a process per metadata (eval reads it twice)
            _WARNED_NAN.add(hash(text))
            shown = ", ".join(undefined[:3]) + (f" and {len(undefined) - 3} more" if len(undefined) > 3 else "")
            log.warning("%s: its real-road check stores %s as NaN (an older 'perception eval --record' wrote undefined "
                        "figures so); read as undefined (-); run 'perception eval --tasks --record' on it again to "
                        "store them as null", source, shown)
        if len(metadata.model_id) > MAX_HEADER_STRING:  # every message carries it; readers refuse longer ones
            raise ModelError(f"{source}: its model id ({metadata.model_name!r:.40}... from model_name, dataset and size) is "
                             f"{len(metadata.model_id)} characters, messages carry at most {MAX_HEADER_STRING}; re-export the model")
        # Checked before an engine allocates anything for it: the masks of a larger input are past
        # what a subscriber reads by default (a 30000x30000 input asked ONNX Runtime for 10.8 GB).
        h, w = metadata.input_hw
        if not (0 < h <= MAX_MASK_SIDE and 0 < w <= MAX_MASK_SIDE):
            raise ModelError(f"{source}: input {h}x{w}: each side must be 1..{MAX_MASK_SIDE}; re-export the model")
        if h * w > MAX_MASK_PIXELS:
            raise ModelError(f"{source}: input {h}x{w} has {h * w} pixels, more than {MAX_MASK_PIXELS} (4096x4096, the "
                             "largest mask a subscriber reads by default); re-export it at a smaller --size")
        return metadata


def _non_finite(value: Any, where: str) -> str | None:
    """The key path of the first NaN or infinity in a metadata field (nested objects and lists),
    or None; such a value is not standard JSON."""
    if isinstance(value, float):
        return None if value == value and abs(value) != float("inf") else where
    if isinstance(value, dict):
        items = ((f"{where}.{k}", v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    return next((found for key, item in items if (found := _non_finite(item, key)) is not None), None)
