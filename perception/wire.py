"""Message headers of the ZeroMQ wire format: built by the publisher, checked by every reader.

A message is three frames: ``[topic, header, payload]``. The header is UTF-8 JSON; for mask
messages its fields map one to one onto ROS 2 ``sensor_msgs/Image`` (``header.stamp``,
``header.frame_id``, ``height``, ``width``, ``encoding``, ``is_bigendian``, ``step``) plus the
payload ``compression`` and the node's own fields (``seq``, ``capture_ns``, ``publish_ns``,
``model_id``, ``latency_ms``, ``values``). See the README's "Wire format" section.

The publisher (``perception/publish.py``), the subscriber (``perception/subscribe.py``) and the
recorder use these functions so that the layout lives in one place next to ``contracts.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from perception import contracts


class WireError(ValueError):
    """A message that does not follow the wire format (wrong frame count, bad header)."""


class WireVersionError(WireError):
    """A message from a publisher speaking another wire version."""

    def __init__(self, version: object) -> None:
        super().__init__(
            f"message has wire version {version!r}, this reader understands version {contracts.WIRE_VERSION}; "
            "run the same perception version on both sides"
        )
        self.version = version


def values_for_topic(mask_name: str) -> str:
    """``class_ids`` for the class map, ``binary`` (0/255) for the task masks."""
    return contracts.VALUES_CLASS_IDS if mask_name == "class_map" else contracts.VALUES_BINARY


def ros_stamp(time_ns: int) -> dict[str, int]:
    """builtin_interfaces/Time from nanoseconds since the UNIX epoch."""
    sec, nanosec = divmod(int(time_ns), 1_000_000_000)
    return {"sec": sec, "nanosec": nanosec}


def mask_header(
    *,
    height: int,
    width: int,
    compression: str,
    values: str,
    seq: int,
    capture_ns: int,
    publish_ns: int,
    frame_id: str,
    model_id: str,
    latency_ms: dict[str, float],
) -> dict[str, Any]:
    """The header dict of one mask message (``contracts.HEADER_FIELDS_MASK``, in that order)."""
    return {
        "wire_version": contracts.WIRE_VERSION,
        "kind": contracts.KIND_MASK,
        "header": {"stamp": ros_stamp(capture_ns), "frame_id": frame_id},
        "height": int(height),
        "width": int(width),
        "encoding": contracts.ROS_IMAGE_ENCODING,
        "is_bigendian": 0,
        "step": int(width),
        "compression": compression,
        "values": values,
        "seq": int(seq),
        "capture_ns": int(capture_ns),
        "publish_ns": int(publish_ns),
        "model_id": model_id,
        "latency_ms": {k: round(float(v), 3) for k, v in latency_ms.items()},
    }


def json_header(*, name: str, seq: int, publish_ns: int) -> dict[str, Any]:
    """The header dict of a JSON-document message (stats, obstacles)."""
    return {
        "wire_version": contracts.WIRE_VERSION,
        "kind": contracts.KIND_JSON,
        "name": name,
        "seq": int(seq),
        "publish_ns": int(publish_ns),
    }


def dump_header(header: dict[str, Any]) -> bytes:
    return json.dumps(header, separators=(",", ":")).encode("utf-8")


_MASK_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "header": dict,
    "height": int,
    "width": int,
    "encoding": str,
    "is_bigendian": int,
    "step": int,
    "compression": str,
    "values": str,
    "seq": int,
    "capture_ns": int,
    "publish_ns": int,
    "model_id": str,
    "latency_ms": dict,
}


_ROS_HEADER_FIELD_TYPES: dict[str, type] = {"stamp": dict, "frame_id": str}
_ROS_STAMP_FIELD_TYPES: dict[str, type] = {"sec": int, "nanosec": int}
_JSON_FIELD_TYPES: dict[str, type] = {"name": str, "seq": int, "publish_ns": int}


def _check_types(doc: dict[str, Any], types: dict[str, type], what: str) -> None:
    """WireError naming the first field of ``types`` that ``doc`` lacks or holds with another type."""
    for name, typ in types.items():
        value = doc.get(name)
        if not isinstance(value, typ) or isinstance(value, bool):
            raise WireError(f"{what} field {name!r} is {value!r}, expected {typ.__name__}")


def parse_header(frame: bytes) -> dict[str, Any]:
    """Parse and check a header frame.

    Returns the header dict. Raises WireVersionError for another wire version, WireError for
    anything else that is not a valid header (not JSON, unknown kind, missing or mistyped field).
    """
    try:
        header = json.loads(bytes(frame).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"header is not UTF-8 JSON ({exc})") from None
    if not isinstance(header, dict):
        raise WireError(f"header is a JSON {type(header).__name__}, expected an object")
    version = header.get("wire_version")
    if version != contracts.WIRE_VERSION:
        raise WireVersionError(version)
    kind = header.get("kind")
    if kind == contracts.KIND_JSON:
        _check_types(header, _JSON_FIELD_TYPES, "json header")
        return header
    if kind != contracts.KIND_MASK:
        raise WireError(f"header kind {kind!r} is neither {contracts.KIND_MASK!r} nor {contracts.KIND_JSON!r}")
    _check_types(header, _MASK_FIELD_TYPES, "mask header")
    # The std_msgs/Header part: readers (the recorder's ROS Image) use it as is.
    _check_types(header["header"], _ROS_HEADER_FIELD_TYPES, "mask header.header")
    _check_types(header["header"]["stamp"], _ROS_STAMP_FIELD_TYPES, "mask header.header.stamp")
    if header["encoding"] != contracts.ROS_IMAGE_ENCODING or header["step"] != header["width"]:
        raise WireError(
            f"mask header says encoding {header['encoding']!r} step {header['step']}, "
            f"expected {contracts.ROS_IMAGE_ENCODING!r} with step == width"
        )
    return header


def ros_image_fields(header: dict[str, Any]) -> dict[str, Any]:
    """The ROS 2 ``sensor_msgs/Image`` fields (all but ``data``) of a mask header.

    ``data`` is the decoded mask's bytes (``mask.tobytes()``), ``step * height`` long.
    """
    return {
        "header": {
            "stamp": dict(header["header"]["stamp"]),
            "frame_id": header["header"]["frame_id"],
        },
        "height": header["height"],
        "width": header["width"],
        "encoding": header["encoding"],
        "is_bigendian": header["is_bigendian"],
        "step": header["step"],
    }


@dataclass
class WireMessage:
    """A decoded message: wire ``topic``, parsed ``header``, and ``data`` (the decoded H x W uint8
    mask for ``kind == "mask"``, the JSON document for ``kind == "json"``). Received and recorded
    messages extend it with where and when they were seen."""

    topic: str
    header: dict[str, Any]
    data: Any

    @property
    def kind(self) -> str:
        return self.header["kind"]

    @property
    def seq(self) -> int:
        return self.header["seq"]

    @property
    def capture_ns(self) -> int | None:
        """Capture time of a mask message (None for JSON documents)."""
        return self.header.get("capture_ns")
