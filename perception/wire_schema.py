"""The schema of received headers: what each field of a mask, JSON-document, atomic-frame header
and an ``info`` document may hold, per wire version. Every reader checks a message against it
(``wire.check_fields``) before it trusts the message; the limits it applies (``WIRE_INT_MAX``,
``MAX_MASK_SIDE``, ``MAX_HEADER_STRING`` ...) are the contract's, in ``perception/contracts.py``.

Imported by the runtime node: free of torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from perception import contracts


@dataclass(frozen=True)
class FieldRule:
    """What one header field may hold: its JSON ``kind`` (``int``, ``number``, ``str``, ``bool``,
    ``object``, ``list`` (``low..high`` items, each by ``values``), or ``ns``: a decimal string of an
    integer in ``low..high``, at most ``max_len`` digits), an inclusive range for numbers, a length bound for strings (characters) and
    objects (entries), the allowed ``choices``, and for objects either named ``fields`` or a rule
    for every value (``values``, under string keys of at most ``contracts.MAX_HEADER_STRING`` characters).
    Named fields must be present; other keys of a header are allowed (and bounded by
    ``MAX_HEADER_BYTES``) so that a newer publisher may add fields."""

    kind: str
    low: float | None = None
    high: float | None = None
    max_len: int | None = None
    choices: tuple[Any, ...] | None = None
    fields: dict[str, FieldRule] | None = None
    values: FieldRule | None = None


_INT = FieldRule("int", 0, contracts.WIRE_INT_MAX)
_SIDE = FieldRule("int", 1, contracts.MAX_MASK_SIDE)
_NAME = FieldRule("str", max_len=contracts.MAX_HEADER_STRING)

#: A nanosecond stamp of wire version 2: a decimal string of at most 19 digits (int64, no sign).
_NS = FieldRule("ns", 0, contracts.WIRE_INT_MAX, max_len=19)

#: Schema of a wire version 1 mask header (after ``wire_version`` and ``kind``, checked first).
MASK_HEADER_SCHEMA_V1: dict[str, FieldRule] = {
    "header": FieldRule("object", fields={
        "stamp": FieldRule("object", fields={
            "sec": FieldRule("int", 0, contracts.ROS_SEC_MAX),
            "nanosec": FieldRule("int", 0, contracts.ROS_NANOSEC_MAX),
        }),
        "frame_id": _NAME,
    }),
    "height": _SIDE,
    "width": _SIDE,
    "encoding": FieldRule("str", max_len=contracts.MAX_HEADER_STRING),
    "is_bigendian": FieldRule("int", 0, 1),
    "step": FieldRule("int", 0, contracts.WIRE_INT_MAX),
    "compression": FieldRule("str", choices=tuple(contracts.COMPRESSION_OF_ENCODING.values())),
    "values": FieldRule("str", choices=(contracts.VALUES_BINARY, contracts.VALUES_CLASS_IDS)),
    "seq": _INT,
    "capture_ns": _INT,
    "publish_ns": _INT,
    "model_id": _NAME,
    "latency_ms": FieldRule(
        "object", max_len=contracts.MAX_LATENCY_ENTRIES, values=FieldRule("number", -1e12, 1e12),
    ),
}
#: Schema of a wire version 1 JSON-document header (stats, obstacles).
JSON_HEADER_SCHEMA_V1: dict[str, FieldRule] = {"name": _NAME, "seq": _INT, "publish_ns": _INT}

#: Schema of a wire version 2 mask header: nanoseconds as decimal strings, plus the publication
#: counter and the geometry (``roi`` in source pixels, as sensor_msgs/RegionOfInterest;
#: ``binning_*`` source pixels per mask pixel, as CameraInfo binning but not necessarily whole).
MASK_HEADER_SCHEMA: dict[str, FieldRule] = {
    **MASK_HEADER_SCHEMA_V1,
    "capture_ns": _NS,
    "publish_ns": _NS,
    "pub_seq": _INT,
    "source_height": _SIDE,
    "source_width": _SIDE,
    "roi": FieldRule("object", fields={
        "x_offset": FieldRule("int", 0, contracts.MAX_MASK_SIDE),
        "y_offset": FieldRule("int", 0, contracts.MAX_MASK_SIDE),
        "width": _SIDE,
        "height": _SIDE,
        "do_rectify": FieldRule("bool"),
    }),
    "binning_x": FieldRule("number", 1e-6, 1e6),
    "binning_y": FieldRule("number", 1e-6, 1e6),
}
#: Schema of a wire version 2 JSON-document header.
JSON_HEADER_SCHEMA: dict[str, FieldRule] = {"name": _NAME, "seq": _INT, "pub_seq": _INT, "publish_ns": _NS}
#: Schema of an atomic frame's first header: the frame's numbers and the mask names, in the order
#: of the (mask header, payload) pairs that follow.
FRAME_HEADER_SCHEMA: dict[str, FieldRule] = {
    "frame_id": _NAME, "seq": _INT, "pub_seq": _INT, "capture_ns": _NS, "publish_ns": _NS,
    "masks": FieldRule("list", 1, contracts.MAX_FRAME_MASKS, values=_NAME),
}
#: What a reader needs of an ``<namespace>/info`` document (other keys are allowed, as in headers):
#: the class table, each id once, none of them ``unknown_id`` (checked by ``wire.check_info``).
INFO_SCHEMA: dict[str, FieldRule] = {
    "wire_version": FieldRule("int", 0, 1e6),
    "model_id": _NAME,
    "unknown_id": FieldRule("int", 0, 255),
    "classes": FieldRule("list", 0, 255, values=FieldRule("object", fields={
        "id": FieldRule("int", 0, 254),
        "name": _NAME,
        "color_rgb": FieldRule("list", 3, 3, values=FieldRule("int", 0, 255)),
    })),
}
#: The schemas by wire version (mask, json).
HEADER_SCHEMAS: dict[int, tuple[dict[str, FieldRule], dict[str, FieldRule]]] = {
    1: (MASK_HEADER_SCHEMA_V1, JSON_HEADER_SCHEMA_V1),
    2: (MASK_HEADER_SCHEMA, JSON_HEADER_SCHEMA),
}
