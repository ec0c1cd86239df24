"""Message headers of the ZeroMQ wire format: built by the publisher, checked by every reader.

A message is three frames: ``[topic, header, payload]``. The header is UTF-8 JSON; for mask
messages it is a superset of ROS 2 ``sensor_msgs/Image`` (``header.stamp``, ``header.frame_id``,
``height``, ``width``, ``encoding``, ``is_bigendian``, ``step``): the payload ``compression``, the
geometry (``source_height``/``source_width``, ``roi`` as ``sensor_msgs/RegionOfInterest``,
``binning_x``/``binning_y`` as in ``CameraInfo``) and the node's own fields (``seq``, ``pub_seq``,
``capture_ns``, ``publish_ns``, ``model_id``, ``latency_ms``, ``values``), which ROS lacks. See
the README's "Wire format" section.

Header dicts in Python hold nanoseconds as ints; ``dump_header`` writes them as decimal strings
(wire version 2, ``contracts.NS_FIELDS``) and ``parse_header`` turns them back into ints.

The publisher (``perception/publish.py``), the subscriber (``perception/subscribe.py``) and the
recorder use these functions so that the layout lives in one place next to ``contracts.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from perception import contracts, wire_schema
from perception.config import short
from perception.wire_json import WireError, load_json  # readers import both from here too

log = logging.getLogger(__name__)


class WireVersionError(WireError):
    """A message from a publisher speaking another wire version."""

    def __init__(self, version: object) -> None:
        readable = " and ".join(str(v) for v in contracts.WIRE_VERSIONS_READ)
        super().__init__(
            f"message has wire version {short(version)}, this reader understands versions {readable}; "
            "run the same perception version on both sides"
        )
        self.version = version


def values_for_topic(mask_name: str) -> str:
    """``class_ids`` for the class map, ``binary`` (0/255) for the task masks."""
    return contracts.VALUES_CLASS_IDS if mask_name == "class_map" else contracts.VALUES_BINARY


def ros_stamp(time_ns: int) -> dict[str, int]:
    """builtin_interfaces/Time from nanoseconds since the UNIX epoch.

    Its ``sec`` is a ROS 2 ``int32``: 1970-01-01 to 2038-01-19 03:14:07 UTC. A time outside that
    (a machine whose clock is wrong, or the world past 2038) has no ROS 2 stamp, and every reader
    refuses such a header (``stamp_range_error``): the first one is said here, once a process, as
    one warning naming the clock, so a node whose masks nobody can read says why itself. The stamp
    is still the time (``header.stamp`` always equals ``capture_ns``): the readers name the cause."""
    sec, nanosec = divmod(int(time_ns), 1_000_000_000)
    if not 0 <= sec <= contracts.ROS_SEC_MAX and not _stamp_warned:
        _stamp_warned.append(sec)
        log.warning("this machine's clock reads %s (capture_ns %d), %s (int32 seconds): every reader refuses "
                    "these masks; set the clock (NTP, timedatectl)",
                    utc_text(sec), int(time_ns), _outside_ros_time(sec))
    return {"sec": sec, "nanosec": nanosec}


#: The stamp outside ROS 2's range that ``ros_stamp`` warned about (it warns once a process).
_stamp_warned: list[int] = []


def utc_text(sec: int) -> str:
    """``sec`` seconds since the UNIX epoch as a UTC date and time, for messages."""
    import datetime

    try:
        return datetime.datetime.fromtimestamp(sec, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return "a date past the year 9999" if sec > 0 else "a date before the year 1"


def _outside_ros_time(sec: int) -> str:
    if sec < 0:
        return "before 1970-01-01, the first second ROS 2's header.stamp holds"
    return f"past {utc_text(contracts.ROS_SEC_MAX)}, the last second ROS 2's header.stamp holds"


def stamp_range_error(header: dict[str, Any]) -> str | None:
    """Why a mask header's ``header.stamp.sec`` is refused when it is an integer outside ROS 2's
    ``int32`` (``ros_stamp``): the date it says and the likely cause, a publisher's clock; else
    None (the schema check names any other problem)."""
    stamp = header.get("header")
    stamp = stamp.get("stamp") if isinstance(stamp, dict) else None
    sec = stamp.get("sec") if isinstance(stamp, dict) else None
    if isinstance(sec, float) and sec.is_integer():
        sec = int(sec)
    if type(sec) is not int or 0 <= sec <= contracts.ROS_SEC_MAX:
        return None
    return (f"mask header field 'header.stamp.sec' is {short(sec)}, outside 0..{contracts.ROS_SEC_MAX} (int32 "
            f"seconds): {utc_text(sec)}, {_outside_ros_time(sec)}; the publisher's clock is wrong (or it is past "
            "2038): set its clock")


@dataclass(frozen=True)
class MaskGeometry:
    """How a mask maps onto the camera frame.

    ``source_hw``: the camera frame (height, width). ``roi_xywh``: the region of the camera frame
    the mask covers, in source pixels (``sensor_msgs/RegionOfInterest`` x_offset, y_offset, width,
    height). The mask is that region resized to the mask's size, so a mask pixel (u, v) covers
    source pixels from ``x_offset + u * binning_x`` (``binning_x = roi width / mask width``), as
    ``CameraInfo`` binning does (there a whole number; here any positive ratio).
    """

    source_hw: tuple[int, int]
    roi_xywh: tuple[int, int, int, int]

    @classmethod
    def full(cls, source_hw: tuple[int, int]) -> MaskGeometry:
        """The whole camera frame (the letterbox's content region always is)."""
        return cls(source_hw=(int(source_hw[0]), int(source_hw[1])),
                   roi_xywh=(0, 0, int(source_hw[1]), int(source_hw[0])))

    def fields(self, height: int, width: int) -> dict[str, Any]:
        x, y, w, h = self.roi_xywh
        return {
            "source_height": self.source_hw[0],
            "source_width": self.source_hw[1],
            "roi": {"x_offset": x, "y_offset": y, "width": w, "height": h, "do_rectify": False},
            "binning_x": round(w / width, 9),
            "binning_y": round(h / height, 9),
        }


def mask_header(
    *,
    height: int,
    width: int,
    compression: str,
    values: str,
    seq: int,
    pub_seq: int | None = None,
    capture_ns: int,
    publish_ns: int,
    frame_id: str,
    model_id: str,
    latency_ms: dict[str, float],
    geometry: MaskGeometry | None = None,
) -> dict[str, Any]:
    """The header dict of one mask message (``contracts.HEADER_FIELDS_MASK``, in that order).

    ``pub_seq`` defaults to ``seq`` (a writer that publishes every frame it numbers); ``geometry``
    to a mask covering the whole frame at its own size (no scaling)."""
    geometry = geometry or MaskGeometry.full((height, width))
    pub_seq = seq if pub_seq is None else pub_seq
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
        "pub_seq": int(pub_seq),
        "capture_ns": int(capture_ns),
        "publish_ns": int(publish_ns),
        "model_id": model_id,
        "latency_ms": {k: round(float(v), 3) for k, v in latency_ms.items()},
        **geometry.fields(height, width),
    }


def json_header(*, name: str, seq: int, publish_ns: int) -> dict[str, Any]:
    """The header dict of a JSON-document message (stats, obstacles). ``seq`` counts the
    documents of ``name``; ``pub_seq`` is the same counter (kept for symmetry with masks)."""
    return {
        "wire_version": contracts.WIRE_VERSION,
        "kind": contracts.KIND_JSON,
        "name": name,
        "seq": int(seq),
        "pub_seq": int(seq),
        "publish_ns": int(publish_ns),
    }


def frame_header(*, seq: int, pub_seq: int, capture_ns: int, publish_ns: int, frame_id: str,
                 masks: list[str]) -> dict[str, Any]:
    """The first header of an atomic frame message (``contracts.HEADER_FIELDS_FRAME``): the frame's
    numbers and the names of the masks whose (header, payload) pairs follow, in that order."""
    return {
        "wire_version": contracts.WIRE_VERSION,
        "kind": contracts.KIND_FRAME,
        "frame_id": frame_id,
        "seq": int(seq),
        "pub_seq": int(pub_seq),
        "capture_ns": int(capture_ns),
        "publish_ns": int(publish_ns),
        "masks": list(masks),
    }


def dump_header(header: dict[str, Any]) -> bytes:
    """The header frame: compact UTF-8 JSON. From wire version 2 the nanosecond fields
    (``contracts.NS_FIELDS``) are written as decimal strings, exact in every JSON parser."""
    if header.get("wire_version", contracts.WIRE_VERSION) >= 2:
        header = {k: str(int(v)) if k in contracts.NS_FIELDS and isinstance(v, int) else v for k, v in header.items()}
    return json.dumps(header, separators=(",", ":")).encode("utf-8")


_KIND_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int, float), "number": (int, float), "str": (str,), "object": (dict,), "bool": (bool,), "ns": (str,),
    "list": (list,),
}
_KIND_NAMES = {"int": "int", "number": "number", "str": "str", "object": "dict", "bool": "bool", "list": "list",
               "ns": "a decimal string of nanoseconds"}
_DECIMAL = re.compile(r"[0-9]+")
_BITPACK = contracts.COMPRESSION_OF_ENCODING["bitpack"]


def check_fields(doc: dict[str, Any], schema: dict[str, wire_schema.FieldRule], what: str) -> None:
    """WireError naming the first field of ``schema`` that ``doc`` lacks or holds outside its rule.

    An ``int`` field takes any JSON number of integral value (``2``, ``2.0``, ``2e0``: JSON does not
    tell them apart, nor does JavaScript), and ``doc`` then holds it as an int.
    """
    for name, rule in schema.items():
        doc[name] = _check_value(doc.get(name), rule, f"{what} field {name!r}")


def _check_value(value: Any, rule: wire_schema.FieldRule, where: str) -> Any:
    """``value`` checked against ``rule`` (an integral float of an ``int`` field made an int)."""
    if not isinstance(value, _KIND_TYPES[rule.kind]) or (isinstance(value, bool) and rule.kind != "bool"):
        raise WireError(f"{where} is {short(value)}, expected {_KIND_NAMES[rule.kind]}")
    if rule.kind == "int" and isinstance(value, float):
        if not value.is_integer():
            raise WireError(f"{where} is {short(value)}, expected int")
        value = int(value)
    if rule.kind == "ns":
        # Wire version 2 sends decimal strings only (a JSON number is refused, as by the C and
        # JavaScript readers, whose parsers would round it: about 1.8e18 is beyond 2^53).
        if rule.max_len is not None and len(value) > rule.max_len or not _DECIMAL.fullmatch(value):
            raise WireError(f"{where} is {short(value)}, expected {_KIND_NAMES['ns']} of at most {rule.max_len} digits")
        value = int(value)
        if not rule.low <= value <= rule.high:
            raise WireError(f"{where} is {short(value)}, outside {_bound(rule.low)}..{_bound(rule.high)}")
        return value
    if rule.choices is not None and value not in rule.choices:
        raise WireError(f"{where} is {short(value)}, expected one of {', '.join(map(repr, rule.choices))}")
    if rule.kind == "list":
        if not rule.low <= len(value) <= rule.high:
            raise WireError(f"{where} has {len(value)} items, expected {_bound(rule.low)}..{_bound(rule.high)}")
        for index, item in enumerate(value):
            value[index] = _check_value(item, rule.values, f"{where[:-1]}[{index}]'")
        return value
    if rule.kind in ("int", "number"):
        if isinstance(value, float) and not math.isfinite(value):
            raise WireError(f"{where} is {value!r}, expected a finite number")
        if (rule.low is not None and value < rule.low) or (rule.high is not None and value > rule.high):
            raise WireError(f"{where} is {short(value)}, outside {_bound(rule.low)}..{_bound(rule.high)}")
    elif rule.kind == "str":
        if rule.max_len is not None and len(value) > rule.max_len:
            raise WireError(f"{where} has {len(value)} characters, more than {rule.max_len}")
    elif rule.kind == "object":
        if rule.max_len is not None and len(value) > rule.max_len:
            raise WireError(f"{where} has {len(value)} entries, more than {rule.max_len}")
        if rule.fields is not None:
            for name, sub in rule.fields.items():
                value[name] = _check_value(value.get(name), sub, f"{where[:-1]}.{name}'")
        if rule.values is not None:
            for key, item in value.items():
                if len(key) > contracts.MAX_HEADER_STRING:
                    raise WireError(f"{where} has a key of {len(key)} characters, more than {contracts.MAX_HEADER_STRING}")
                value[key] = _check_value(item, rule.values, f"{where[:-1]}.{key[:40]}'")
    return value


def _bound(limit: float | None) -> str:
    return "" if limit is None else str(int(limit)) if float(limit).is_integer() else f"{limit:g}"


def parse_header(frame: bytes | memoryview) -> dict[str, Any]:
    """Parse and check a header frame against ``wire_schema.MASK_HEADER_SCHEMA`` /
    ``wire_schema.JSON_HEADER_SCHEMA`` (types, ranges, lengths, allowed values) with the bounded
    JSON parser (``load_json``).

    Returns the header dict. Raises WireVersionError for another wire version, WireError for
    anything else that is not a valid header (not JSON, too large or deep, unknown kind, a missing,
    mistyped or out-of-range field).
    """
    header = load_json(frame, max_bytes=contracts.MAX_HEADER_BYTES, what="header")
    if not isinstance(header, dict):
        raise WireError(f"header is a JSON {type(header).__name__}, expected an object")
    version = header.get("wire_version")
    if isinstance(version, float) and version.is_integer():
        version = header["wire_version"] = int(version)  # an int field, as every other (check_fields)
    if type(version) is not int:
        raise WireError(f"header field 'wire_version' is {short(version)}, expected int")
    if version not in wire_schema.HEADER_SCHEMAS:
        raise WireVersionError(version)
    if version < contracts.WIRE_VERSION:
        _warn_deprecated(version)
    mask_schema, json_schema = wire_schema.HEADER_SCHEMAS[version]
    kind = header.get("kind")
    if kind == contracts.KIND_JSON:
        check_fields(header, json_schema, "json header")
        return _ns_to_int(header)
    if kind == contracts.KIND_FRAME and version >= 2:
        check_fields(header, wire_schema.FRAME_HEADER_SCHEMA, "frame header")
        return _ns_to_int(header)
    if kind != contracts.KIND_MASK:
        raise WireError(
            f"header kind {short(kind)} is not {contracts.KIND_MASK!r}, {contracts.KIND_JSON!r} or {contracts.KIND_FRAME!r}"
        )
    if (out_of_range := stamp_range_error(header)) is not None:
        raise WireError(out_of_range)
    check_fields(header, mask_schema, "mask header")
    _ns_to_int(header)
    if header["encoding"] != contracts.ROS_IMAGE_ENCODING or header["step"] != header["width"]:
        raise WireError(
            f"mask header says encoding {short(header['encoding'])} step {header['step']}, "
            f"expected {contracts.ROS_IMAGE_ENCODING!r} with step == width"
        )
    if header["is_bigendian"] != 0:
        raise WireError("mask header says is_bigendian 1; mono8 masks are written with is_bigendian 0")
    if header.get("values") == contracts.VALUES_CLASS_IDS and header["compression"] == _BITPACK:
        raise WireError("mask header says bitpack for class ids; bitpack carries binary masks only")
    if version >= 2:
        _check_geometry(header)
    return header


def check_info(doc: Any) -> dict[str, Any]:
    """WireError unless ``doc`` is an ``info`` document a reader can use (``wire_schema.INFO_SCHEMA``:
    the class table, each id once and none of them ``unknown_id``); returns it."""
    if not isinstance(doc, dict):
        raise WireError(f"info payload is a JSON {type(doc).__name__}, expected an object")
    check_fields(doc, wire_schema.INFO_SCHEMA, "info")
    ids = [c["id"] for c in doc["classes"]]
    if len(set(ids)) != len(ids) or doc["unknown_id"] in ids:
        raise WireError(f"info class ids {short(ids)} repeat an id or use unknown_id {doc['unknown_id']}")
    return doc


def _check_geometry(header: dict[str, Any]) -> None:
    """WireError unless the (schema-checked) v2 mask header is consistent: ``header.stamp`` is
    ``capture_ns``, the roi lies in the source frame, and the binning maps the mask onto the roi
    (the publisher rounds it to 9 decimals)."""
    stamp = header["header"]["stamp"]
    if (stamp["sec"], stamp["nanosec"]) != divmod(header["capture_ns"], 1_000_000_000):
        raise WireError(f"mask header.stamp {stamp['sec']}.{stamp['nanosec']:09d} is not capture_ns {header['capture_ns']}")
    roi = header["roi"]
    if roi["x_offset"] + roi["width"] > header["source_width"] or roi["y_offset"] + roi["height"] > header["source_height"]:
        raise WireError(f"mask roi {roi['width']}x{roi['height']}+{roi['x_offset']}+{roi['y_offset']} reaches outside "
                        f"the {header['source_width']}x{header['source_height']} frame")
    for binning, mask_side, roi_side in (("binning_x", "width", "width"), ("binning_y", "height", "height")):
        # 1e-9 a mask pixel: the 9-decimal rounding's 5e-10, times the side (a tiny frame upscaled)
        if abs(header[binning] * header[mask_side] - roi[roi_side]) > 1e-6 * roi[roi_side] + 1e-6 + 1e-9 * header[mask_side]:
            raise WireError(f"mask {binning} {header[binning]:g} does not map the {header[mask_side]}-pixel mask "
                            f"{mask_side} onto the {roi[roi_side]}-pixel roi")


def _ns_to_int(header: dict[str, Any]) -> dict[str, Any]:
    """Turn the (checked) decimal-string nanosecond fields of ``header`` into ints, in place."""
    for name in contracts.NS_FIELDS:
        if isinstance(header.get(name), str):
            header[name] = int(header[name])
    return header


_deprecation_warned: set[int] = set()


def _warn_deprecated(version: int) -> None:
    if version not in _deprecation_warned:
        _deprecation_warned.add(version)
        log.warning(
            "reading wire version %d messages (deprecated; this reader speaks version %d and will drop "
            "version %d): upgrade the publisher", version, contracts.WIRE_VERSION, version,
        )


def check_topic(raw: bytes | memoryview) -> str:
    """The topic of a received message as text; WireError when it is not UTF-8, too long, or holds
    control characters (it is printed, logged and, by ``listen --save-dir``, made a folder name)."""
    raw = memoryview(raw)
    if raw.nbytes > contracts.MAX_TOPIC_BYTES:
        raise WireError(f"topic has {raw.nbytes} bytes, more than {contracts.MAX_TOPIC_BYTES}")
    try:
        topic = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("topic frame is not UTF-8") from None
    if not topic or _CONTROL.search(topic):
        raise WireError(f"topic {short(topic)} is empty or holds control characters")
    return topic


#: What every reader (Python, C, JS) calls a control character in a topic: C0, DEL, C1, the line and
#: paragraph separators and the invisible and bidirectional format characters (``contracts``, which
#: model metadata strings are held to as well).
_CONTROL = contracts.CONTROL_CHARACTERS


def printable(text: str) -> str:
    """``text`` with every character that is not printable (``str.isprintable``: control characters,
    C1, line and paragraph separators, bidi and other format characters, unassigned code points)
    written as its Python escape (``\\x1b``, ``\\u2028``), so that received text (a header's
    ``frame_id`` or ``model_id``, an info document's ``model_id``, a reason quoting either) cannot
    move the cursor, clear the screen, retitle the terminal or forge a line where it is printed or
    logged. Printable text comes back unchanged (the same object)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_UNSAFE_PATH_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
#: Topics whose folder is the topic itself with ``/`` written ``_`` and ``_`` written ``__``: lower-case
#: letters, digits, ``.``, ``_`` and ``/``, not starting with a dot, with no ``//``, ``__``, ``_/`` or
#: ``/_`` (so that every run of underscores in the folder name reads back one way: one is a ``/``, two
#: a ``_``). Every lower-case ROS 2 topic name without an underscore at the edge of one of its parts is
#: one. An upper-case letter makes a topic hashed: on a file system that ignores case (macOS,
#: Windows) ``a/Lane`` and ``a/lane`` would otherwise share one folder.
_PLAIN_TOPIC = re.compile(r"(?!\.)(?!.*(?://|__|_/|/_))[a-z0-9._/]+")
#: The longest folder name of a plain topic, and the part of another one kept before its hash.
_DIR_NAME_CHARS = 100


def topic_dir_name(topic: str) -> str:
    """A single, safe folder name for a topic, one a topic (``listen --save-dir``).

    A plain topic (``_PLAIN_TOPIC``, every ROS 2 topic name of the node's with a lower-case
    namespace and camera name) becomes itself with ``/`` as ``_`` and ``_`` as ``__``:
    ``perception/front/lane`` -> ``perception_front_lane``, ``perception/front/class_map`` ->
    ``perception_front_class__map``, and the name reads back to the topic. Any other topic (an
    upper-case letter, other characters, ``__``, an ``_`` next to a ``/``, a leading dot) and one
    whose name would be longer than 100 characters becomes its characters in ``[A-Za-z0-9._-]``
    (the rest as ``_``), cut to 100, then ``-`` and 10 (lower-case) hex digits of the SHA-1 of the
    exact topic. Only those names hold a ``-``, so the two kinds never meet, and two topics share a
    folder only if their hashes collide (about 1 in 2^40 for a pair), on a file system that ignores
    case too: plain names hold no upper-case letter, and two hashed names alike but for case hold
    the same hex digits. No name is ``.`` or ``..`` or starts with a dot, so no topic reaches outside
    the folder it is saved under, and every name is at most 111 characters.
    """
    if _PLAIN_TOPIC.fullmatch(topic):
        name = topic.replace("_", "__").replace("/", "_")
        if len(name) <= _DIR_NAME_CHARS:
            return name
    name = _UNSAFE_PATH_CHARS.sub("_", topic).strip("._")[:_DIR_NAME_CHARS] or "topic"
    digest = hashlib.sha1(topic.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{name}-{digest}"


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
    def pub_seq(self) -> int | None:
        """The publisher's per-topic message counter (None in wire version 1)."""
        return self.header.get("pub_seq")

    @property
    def capture_ns(self) -> int | None:
        """Capture time of a mask message (None for JSON documents)."""
        return self.header.get("capture_ns")
