"""A message as a reader receives it: ``Message`` (its topic, header, decoded data), its decoding
from the wire's frames (``decode_message``: the header checked, the payload decoded within the
reader's bounds, an atomic frame split into its masks), the bounds themselves (``max_frame_bytes``,
``rcvhwm_for``) and the counters a reader keeps. ``perception.subscribe.MaskSubscriber`` takes the
frames off its socket and hands them here; ``record``, ``replay`` and the tests build ``Message``
objects directly.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import zmq

from perception import contracts
from perception.config import short
from perception.encoding import codec_for_compression, max_payload_bytes
from perception.errors import ConfigError
from perception.options import (
    DEFAULT_MAX_QUEUE_MB,
    MAX_QUEUE_MB,
)
from perception.wire import (
    WireError,
    WireMessage,
    WireVersionError,
    check_info,
    check_topic,
    load_json,
    parse_header,
)
from perception.wire_schema import HEADER_SCHEMAS

log = logging.getLogger("perception.subscribe")  # its warnings are the subscriber's

#: An atomic frame may declare at most this many times ``max_mask_pixels`` in all its masks
#: together (a frame of 4 masks plus per-class ones at the largest mask size fits).
_FRAME_PIXEL_FACTOR = 4

class NewerPublisherError(WireError):
    """A message whose header is valid but for a ``kind`` or a ``compression`` this reader does not
    know: one a newer publisher added within the wire version (the README's "Versioning"), not a
    malformed one. Counted with the messages of another wire version (``version_mismatch``)."""


#: The fix that ends a ``NewerPublisherError``'s reason (the C and JavaScript readers say the same).
NEWER_PUBLISHER_FIX = "this reader does not know (from a newer publisher?): upgrade this reader"


@dataclass
class Message(WireMessage):
    """One received message (see ``WireMessage``; the README's "Wire format" for the header).

    ``wire_bytes`` is the size of all three frames, ``receive_ns`` the ``time.time_ns()`` on arrival.
    """

    wire_bytes: int
    receive_ns: int


@dataclass
class SubscribeCounters:
    """``received``: valid messages returned; ``malformed`` / ``version_mismatch``: skipped
    (``version_mismatch``: another wire version, or a kind or compression this reader does not know,
    ``NewerPublisherError``);
    ``superseded``: older messages replaced by a newer one of the same topic (keep_latest);
    ``reconnects``: connections ZeroMQ dropped for good (a frame over ``max_frame_bytes``, or
    another protocol error) that the subscriber made again; ``over_max_topics``: valid messages
    skipped because they came on a topic past the first ``max_topics``."""

    received: int = 0
    malformed: int = 0
    version_mismatch: int = 0
    superseded: int = 0
    reconnects: int = 0
    over_max_topics: int = 0


def decode_message(
    frames: list[bytes | memoryview | zmq.Frame],
    *,
    receive_ns: int | None = None,
    max_mask_pixels: int = contracts.MAX_MASK_PIXELS,
) -> Message:
    """Decode the frames of one untrusted message.

    Every header field is checked against the schema in ``contracts`` (``wire.parse_header``), the
    topic and JSON payloads with bounded parsers, and a mask payload against its declared size
    and ``max_mask_pixels`` before anything is allocated. Raises WireVersionError for another
    wire version, NewerPublisherError (a WireError) for a kind or compression this reader does not
    know on an otherwise valid header, WireError or DecodeError for anything that does not follow the wire format;
    nothing else (the fuzz tests in ``tests/test_fuzz.py`` hold it to that).
    """
    if len(frames) < 3:
        raise WireError(f"message has {len(frames)} frames, expected 3 (topic, header, payload)")
    raw = [f.buffer if isinstance(f, zmq.Frame) else memoryview(f) for f in frames]
    topic = check_topic(raw[0])
    header = _parse_header(raw[1])
    _check_kind_fits_topic(topic, header["kind"])
    receive_ns = time.time_ns() if receive_ns is None else receive_ns
    if header["kind"] == contracts.KIND_FRAME:
        data = _decode_frame(topic, header, raw, receive_ns, max_mask_pixels)
    elif len(frames) != 3:
        raise WireError(f"message has {len(frames)} frames, expected 3 (topic, header, payload)")
    elif header["kind"] == contracts.KIND_JSON:
        data = load_json(raw[2], max_bytes=contracts.MAX_JSON_PAYLOAD_BYTES, what=f"{topic}: JSON payload")
        if topic.rpartition("/")[2] == contracts.INFO_TOPIC:
            check_info(data)
    else:
        codec = codec_for_compression(header["compression"])
        data = codec.decode(raw[2], height=header["height"], width=header["width"], max_pixels=max_mask_pixels)
    return Message(
        topic=topic,
        header=header,
        data=data,
        wire_bytes=sum(r.nbytes for r in raw),
        receive_ns=receive_ns,
    )


def _parse_header(frame: memoryview) -> dict[str, Any]:
    """``wire.parse_header``, but a header refused only for its ``kind`` or ``compression``, one of
    a wire version this reader speaks and valid otherwise, raises ``NewerPublisherError``: a newer
    publisher may add kinds and compressions within a wire version (README "Versioning"), and
    such a message is not malformed. Looked into only once ``parse_header`` refused the header."""
    try:
        return parse_header(frame)
    except WireVersionError:
        raise
    except WireError as exc:
        newer = _newer_publisher_reason(frame)
        if newer is not None:
            raise NewerPublisherError(newer) from None
        raise exc from None


def _newer_publisher_reason(frame: memoryview) -> str | None:
    """The reason of a ``NewerPublisherError`` for this refused header, or None when it is refused
    for anything else (``_parse_header``)."""
    try:
        header = load_json(frame, max_bytes=contracts.MAX_HEADER_BYTES, what="header")
    except WireError:
        return None
    if not isinstance(header, dict):
        return None
    version, kind = header.get("wire_version"), header.get("kind")
    if isinstance(version, bool) or not isinstance(version, int | float) or version not in HEADER_SCHEMAS:
        return None
    if not isinstance(kind, str):
        return None
    if kind not in (contracts.KIND_MASK, contracts.KIND_JSON, contracts.KIND_FRAME):
        return f"header kind {short(kind)} is a message kind {NEWER_PUBLISHER_FIX}"
    compression = header.get("compression")
    known = tuple(contracts.COMPRESSION_OF_ENCODING.values())
    if kind != contracts.KIND_MASK or not isinstance(compression, str) or compression in known:
        return None
    # Valid with a compression it knows: then the compression alone was what it refused.
    known_header = json.dumps({**header, "compression": known[0]}, separators=(",", ":"), ensure_ascii=False)
    try:
        parse_header(known_header.encode("utf-8"))
    except WireError:
        return None
    return f"compression {short(compression)} is a compression {NEWER_PUBLISHER_FIX}"


def frame_topics_of(topic: str) -> set[str]:
    """Where an ``--atomic-frames`` node sends mask topic ``<ns>/<mask>``: ``<ns>/frame``; for a
    per-class ``<ns>/obstacle/<class>`` the namespace is one level up, so both are given. Empty
    for a JSON or frame topic."""
    namespace, _, name = topic.rpartition("/")
    if not namespace or name in contracts.RESERVED_TOPIC_NAMES:
        return set()
    found = {contracts.topic_name(namespace, contracts.FRAME_TOPIC)}
    parent, _, group = namespace.rpartition("/")
    if parent and group + "/" == contracts.PER_CLASS_OBSTACLE_PREFIX:
        found.add(contracts.topic_name(parent, contracts.FRAME_TOPIC))
    return found


def _check_kind_fits_topic(topic: str, kind: str) -> None:
    """WireError when the topic's name belongs to another kind of message: ``stats``, ``obstacles``
    and ``info`` carry JSON documents only, ``frame`` atomic frames only (``_decode_frame``), and a
    node's mask topics (``drivable``, ``lane``, ``obstacle``, ``class_map``, ``obstacle/<class>``)
    no JSON. A recording keeps one schema a topic, so one message of the wrong kind would spoil
    the rest of that topic. JSON on other names stays open (``MaskPublisher.publish_json``)."""
    parent, _, name = topic.rpartition("/")
    if kind == contracts.KIND_MASK and name in contracts.RESERVED_TOPIC_NAMES:
        raise WireError(f"mask on topic {topic!r}, whose name {name!r} is reserved for "
                        f"{'atomic frames' if name == contracts.FRAME_TOPIC else 'a JSON document'}")
    if kind == contracts.KIND_JSON and (
        name in contracts.MASK_TOPICS or name == contracts.FRAME_TOPIC
        or parent.rpartition("/")[2] + "/" == contracts.PER_CLASS_OBSTACLE_PREFIX
    ):
        raise WireError(f"JSON document on topic {topic!r}, a {'frame' if name == contracts.FRAME_TOPIC else 'mask'} topic")


def _mask_name_error(name: str) -> str | None:
    """Why an atomic frame's mask name cannot make a topic, or None: it is relative, each of its
    ``/`` parts is a plain name (not empty, ``.`` or ``..``) and the last is not reserved."""
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "an empty, '.' or '..' part"
    if parts[-1] in contracts.RESERVED_TOPIC_NAMES:
        return f"the reserved name {parts[-1]!r}"
    return None


def _decode_frame(topic: str, header: dict[str, Any], raw: list[memoryview], receive_ns: int,
                  max_mask_pixels: int) -> dict[str, Message]:
    """The masks of an atomic frame message, by name: each a mask ``Message`` on its own topic
    (``<namespace>/<name>``). Every part is checked like a mask message of its own, the frame
    count and names first, and the frame's pixels in total against ``_FRAME_PIXEL_FACTOR`` masks."""
    names = header["masks"]
    if len(raw) != 2 + 2 * len(names):
        raise WireError(f"frame message has {len(raw)} frames, expected {2 + 2 * len(names)} for {len(names)} masks")
    if len(set(names)) != len(names):
        raise WireError(f"frame message names a mask twice: {short(names)}")
    if not topic.endswith("/" + contracts.FRAME_TOPIC):
        raise WireError(f"frame message on topic {topic!r}; expected <namespace>/{contracts.FRAME_TOPIC}")
    namespace = topic[: -len(contracts.FRAME_TOPIC) - 1]
    for name in names:
        problem = _mask_name_error(name)
        if problem is not None:
            raise WireError(f"frame message names a mask {short(name)} with {problem}")
        # The mask's own topic, as readers print, record and replay it, under the same rules.
        check_topic(contracts.topic_name(namespace, name).encode("utf-8"))
    headers = [_parse_header(raw[2 + 2 * i]) for i in range(len(names))]
    total = 0
    for name, part in zip(names, headers, strict=True):
        if part["kind"] != contracts.KIND_MASK or part["seq"] != header["seq"]:
            raise WireError(f"frame message: the header of {name!r} is not a mask header of seq {header['seq']}")
        total += part["height"] * part["width"]
    if total > _FRAME_PIXEL_FACTOR * max_mask_pixels:
        raise WireError(f"frame message declares {total} pixels, more than {_FRAME_PIXEL_FACTOR} x {max_mask_pixels}")
    masks = {}
    for i, (name, part) in enumerate(zip(names, headers, strict=True)):
        payload = raw[3 + 2 * i]
        codec = codec_for_compression(part["compression"])
        mask = codec.decode(payload, height=part["height"], width=part["width"], max_pixels=max_mask_pixels)
        masks[name] = Message(topic=contracts.topic_name(namespace, name), header=part, data=mask,
                              wire_bytes=raw[2 + 2 * i].nbytes + payload.nbytes, receive_ns=receive_ns)
    return masks


def max_frame_bytes(max_mask_pixels: int) -> int:
    """The largest frame of a valid message, which is what a subscriber takes off the wire
    (``ZMQ_MAXMSGSIZE``): a mask payload of at most ``max_mask_pixels`` in its largest encoding
    (``encoding.max_payload_bytes``: ``rle``, 5 bytes a pixel at worst), a JSON payload, a header or
    a topic. It comes to ``max(5 * max_mask_pixels, MAX_JSON_PAYLOAD_BYTES)``, the README's rule,
    which the C and JavaScript readers apply (``tests/test_subscriber_limits.py`` holds the two equal)."""
    return max(max_payload_bytes(max_mask_pixels), contracts.MAX_JSON_PAYLOAD_BYTES, contracts.MAX_HEADER_BYTES,
               contracts.MAX_TOPIC_BYTES)


def rcvhwm_for(max_mask_pixels: int, max_queue_mb: int = DEFAULT_MAX_QUEUE_MB) -> int:
    """The receive queue (``ZMQ_RCVHWM``, in messages) that keeps what ZeroMQ holds for a reader
    within ``max_queue_mb`` MiB: as many messages as frames at the limit (``max_frame_bytes``) fit,
    at least one. ZeroMQ counts ``RCVHWM`` in whole messages (a multipart message is one) and has no
    limit in bytes; ``ZMQ_MAXMSGSIZE`` bounds each frame. So a queue of messages of one frame at the
    limit (a mask message: its topic and header are small) holds at most ``max_queue_mb`` MiB, or
    one frame when a frame is larger. The README's rule; the C and JavaScript readers apply it
    (``tests/test_reader_memory.py``)."""
    return max(1, max_queue_mb * 2**20 // max_frame_bytes(max_mask_pixels))


def checked_rcvhwm(max_mask_pixels: int, max_queue_mb: int, rcvhwm: int | None) -> int:
    """``rcvhwm_for`` of a valid ``max_queue_mb``, or the given ``rcvhwm`` when it is not longer
    (a ConfigError naming the fix when it is, or when either is not a whole number in range)."""
    if isinstance(max_queue_mb, bool) or not isinstance(max_queue_mb, int) or not 1 <= max_queue_mb <= MAX_QUEUE_MB:
        raise ConfigError(f"max_queue_mb={max_queue_mb!r} must be a whole number of MiB in 1..{MAX_QUEUE_MB}")
    allowed = rcvhwm_for(max_mask_pixels, max_queue_mb)
    if rcvhwm is None:
        return allowed
    if isinstance(rcvhwm, bool) or not isinstance(rcvhwm, int) or not 1 <= rcvhwm <= allowed:
        raise ConfigError(f"rcvhwm={rcvhwm!r} must be a whole number in 1..{allowed}: {allowed} messages of frames up "
                          f"to {max_frame_bytes(max_mask_pixels)} bytes fill max_queue_mb={max_queue_mb}; raise "
                          "max_queue_mb or lower max_mask_pixels for a longer queue")
    return rcvhwm


def frames_nbytes(frames: list[zmq.Frame]) -> int:
    return sum(len(f) for f in frames)
