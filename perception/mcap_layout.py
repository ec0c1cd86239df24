"""The layout of a perception recording: the MCAP file that ``perception record`` writes and
``perception replay`` reads, declared once for both (and for anyone writing a reader of their own).

Layout of a file (MCAP ``ros2`` profile, every channel CDR-encoded ROS 2 messages, following
rosbag2's conventions):

=================================  ======================  =================================================
channel                            schema                  content
=================================  ======================  =================================================
``/<ns>/<mask>``                   sensor_msgs/msg/Image   stamp = capture time, frame_id, height, width,
                                                           ``mono8`` (0/255 masks) or ``8UC1`` (the class
                                                           map: class ids), step, the decoded mask
``/<ns>/stats``, ``/<ns>/obstacles``  std_msgs/msg/String  the JSON document as published
``/<topic>/meta``                  std_msgs/msg/String     the wire header JSON of each message above (seq,
                                                           capture/publish times, model_id, latency_ms,
                                                           compression...), so ``perception replay`` is exact
=================================  ======================  =================================================

Channel names are ROS 2 names (``ros2_topic_name``: absolute, illegal characters made ``_``), one
wire topic and one type a name in a whole recording (``RosTopicNames``: a topic whose name another
already has, or that ends in ``/meta``, gets ``distinct_topic_name``). Every channel's metadata
holds rosbag2's ``offered_qos_profiles`` (YAML), the wire topic (``perception.wire_topic``), ``perception.content`` (``data`` or ``wire_header``) and, for masks,
``perception.values`` (``binary`` or ``class_ids``). Each MCAP message's ``sequence`` is the wire
``seq`` modulo 2^32 (``mcap_sequence``: MCAP's field is a uint32, the wire's seq an int64; the
``/meta`` header holds the whole seq, and a message's data and header records share it),
``log_time`` the receive time and ``publish_time`` the node's publish time (``mcap_time``). A metadata
record ``perception.recording`` holds the endpoint, the topics, the perception and wire
versions, and the file's own counts: ``message_counts`` (per wire topic, the messages this file
holds, as its MCAP statistics count its data channels) and ``skipped_counts`` (received while it was
written, not recorded); a split adds its ``split_index`` and the totals of the recorder run that
wrote it up to its end (an ``--append`` run counts from 0 again), ``recording_message_counts`` and
``recording_skipped_counts``. (Splits of earlier versions hold
those totals under ``message_counts``; nothing in perception reads the counts.)

A split recording to ``run.mcap`` is ``run_0.mcap``, ``run_1.mcap``... (``split_path``, ``split_files``),
beside rosbag2's ``metadata.yaml``, which makes their folder one rosbag2 bag; each file also holds
rosbag2's own ``rosbag2`` metadata record, which says how its QoS metadata is written
(``perception/record_output.py``: ``BagMetadata``, ``ROSBAG2_RECORD``).
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml

from perception import contracts

IMAGE_SCHEMA = "sensor_msgs/msg/Image"
STRING_SCHEMA = "std_msgs/msg/String"
#: Suffix of the channel that carries each topic's wire headers.
META_SUFFIX = "/meta"
#: Name of the MCAP metadata record written by the recorder.
METADATA_NAME = "perception.recording"

# ROS 2 message definitions in the concatenated form rosbag2 writes (dependencies after a line
# of '=' and "MSG: <type>"), which mcap_ros2 and Foxglove parse.
_SEPARATOR = "=" * 80
IMAGE_MSGDEF = "\n".join(
    [
        "std_msgs/Header header",
        "uint32 height",
        "uint32 width",
        "string encoding",
        "uint8 is_bigendian",
        "uint32 step",
        "uint8[] data",
        _SEPARATOR,
        "MSG: std_msgs/Header",
        "builtin_interfaces/Time stamp",
        "string frame_id",
        _SEPARATOR,
        "MSG: builtin_interfaces/Time",
        "int32 sec",
        "uint32 nanosec",
    ]
)
STRING_MSGDEF = "string data"


def wire_topic(channel: str) -> str:
    """The wire topic of a channel written without ``perception.wire_topic`` metadata (older recordings)."""
    return channel.lstrip("/")


def ros2_topic_name(topic: str) -> str:
    """The ROS 2 name of a wire topic: absolute, and within ROS 2's naming rules (tokens of letters,
    digits and single underscores, none starting with a digit), so ``ros2 bag`` accepts it.

    ``perception/front/lane`` -> ``/perception/front/lane``; ``perception/front-left.1/lane`` ->
    ``/perception/front_left_1/lane``. The wire topic itself is kept in the channel metadata
    (``perception.wire_topic``), so a replay is exact whatever the name became.
    """
    tokens = []
    for token in topic.split("/"):
        token = re.sub(r"_{2,}", "_", re.sub(r"[^A-Za-z0-9_]", "_", token))
        if token:
            tokens.append("_" + token if token[0].isdigit() else token)
    return "/" + "/".join(tokens)


def distinct_topic_name(topic: str, name: str, taken) -> str:
    """A ROS 2 name for wire topic ``topic`` whose plain name ``name`` cannot be used: ``name``
    with ``_`` and the first 8 hex digits of the SHA-1 of the wire topic added to its last token
    (``/perception/front_left/lane_3fa2c1d0``), so the same wire topic is always given the same
    name; should that be in ``taken`` too, ``_2``, ``_3``... after it."""
    digest = hashlib.sha1(topic.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    base = name if name != "/" else "/topic"
    base += ("" if base.endswith("_") else "_") + digest
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}_{n}"
    return candidate


class RosTopicNames:
    """The ROS 2 names of a recording's wire topics (the data channel's; its wire headers are on
    that name + ``META_SUFFIX``), one wire topic and one message type per name, as rosbag2 wants.

    A wire topic is named ``ros2_topic_name(topic)`` unless that name cannot be its own: it ends in
    ``/meta`` (the wire-header channel of the topic above it: a per-class obstacle class named
    ``meta``), or another wire topic of the recording already has it (``front-left`` and
    ``front_left``, ``traffic-light`` and ``traffic light`` clean up to one name). It then gets
    ``distinct_topic_name``. A name once given stays for the whole recording: one object is shared
    by the splits of a recording and, with ``--append``, starts from the names of the splits already
    there (``claim``). ``types`` holds each wire topic's message type (schema), also shared, so a
    topic cannot change type from one split to the next."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}
        self._owners: dict[str, str] = {}
        self.types: dict[str, str] = {}
        #: How many wire topics were given a name other than their plain one (for rate-limited warnings).
        self.renamed = 0

    def claim(self, topic: str, name: str, schema: str | None = None) -> None:
        """``topic`` is recorded as ``name`` in a file already written (``--append``); ignored when
        either is already taken (a file of an earlier version may hold two topics on one name)."""
        if topic in self._names or name in self._owners:
            return
        self._names[topic], self._owners[name] = name, topic
        if schema:
            self.types.setdefault(topic, schema)

    def name(self, topic: str) -> tuple[str, str | None]:
        """``(ROS 2 name, why)`` of wire topic ``topic``: ``why`` says why it is not the plain name,
        the first time it is given (None otherwise)."""
        known = self._names.get(topic)
        if known is not None:
            return known, None
        plain = ros2_topic_name(topic)
        why = None
        if plain == "/":
            why = "it has no character a ROS 2 name keeps"
        elif plain.endswith(META_SUFFIX):
            why = (f"{plain} is the name of the wire-header channel of the topic "
                   f"{plain[: -len(META_SUFFIX)]} (each topic's headers go on <topic>{META_SUFFIX})")
        elif plain in self._owners:
            why = (f"{plain} is already the ROS 2 name of the wire topic {self._owners[plain]!r} in this recording "
                   "(a ROS 2 topic holds one stream of one type)")
        name = plain if why is None else distinct_topic_name(topic, plain, self._owners)
        self._names[topic], self._owners[name] = name, topic
        if why is not None:
            self.renamed += 1
        return name, why


#: Channel metadata keys (besides rosbag2's ``offered_qos_profiles``).
WIRE_TOPIC_KEY = "perception.wire_topic"
CONTENT_KEY = "perception.content"
VALUES_KEY = "perception.values"
#: ``perception.content``: the message itself, or the wire headers of a topic's messages.
CONTENT_DATA = "data"
CONTENT_HEADER = "wire_header"
#: Wire topics the node sends latched (the last message goes to every new subscriber).
LATCHED_SUFFIXES = ("/" + contracts.INFO_TOPIC,)


def channel_role(channel: Any) -> tuple[bool, str]:
    """(whether the channel holds wire headers, its wire topic), from the channel metadata the
    recorder writes, or from the channel name in recordings made before it wrote any."""
    metadata = channel.metadata or {}
    if WIRE_TOPIC_KEY in metadata and CONTENT_KEY in metadata:
        return metadata[CONTENT_KEY] == CONTENT_HEADER, metadata[WIRE_TOPIC_KEY]
    if channel.topic.endswith(META_SUFFIX):
        return True, wire_topic(channel.topic[: -len(META_SUFFIX)])
    return False, wire_topic(channel.topic)


def offered_qos_profiles(topic: str) -> str:
    """rosbag2's ``offered_qos_profiles`` channel metadata: the YAML list rosbag2 (Humble) writes,
    with enum values as numbers (which every rosbag2 release and rosbags read).

    The node's ZeroMQ PUB socket keeps the latest messages and drops for a slow subscriber:
    KEEP_LAST (1), BEST_EFFORT (2), VOLATILE (2). A latched topic (``<ns>/info``) is RELIABLE (1),
    TRANSIENT_LOCAL (1), depth 1, as ROS 2 latches. Depth 0 and zero durations (the defaults) are
    what rosbag2 records for a publisher's offered profile.

    There are only these two profiles, each dumped once (``_qos_yaml``): a YAML dump for each new
    channel took half the time of a recording of 40,000 topics.
    """
    return _qos_yaml(topic.endswith(LATCHED_SUFFIXES))


@functools.cache
def _qos_yaml(latched: bool) -> str:
    """The ``offered_qos_profiles`` YAML of a latched topic or of any other (``offered_qos_profiles``)."""
    # A dict of its own for each duration: one dict used three times is dumped with YAML anchors
    # (``&id001`` / ``*id001``), which rosbag2 never writes and a simple parser may not take.
    profile = {
        "history": 1, "depth": 1 if latched else 0, "reliability": 1 if latched else 2,
        "durability": 1 if latched else 2, "deadline": {"sec": 0, "nsec": 0}, "lifespan": {"sec": 0, "nsec": 0},
        "liveliness": 1, "liveliness_lease_duration": {"sec": 0, "nsec": 0}, "avoid_ros_namespace_conventions": False,
    }
    return yaml.safe_dump([profile], sort_keys=False)


def ros_image_encoding(header: dict) -> str:
    """The ``sensor_msgs/Image`` encoding of a mask: ``8UC1`` (plain 8-bit values, not intensities)
    for a class map, whose pixels are class ids; the header's own (``mono8``) for 0/255 masks."""
    return "8UC1" if header.get("values") == contracts.VALUES_CLASS_IDS else header["encoding"]


def channel_metadata(topic: str, content: str, header: dict) -> dict[str, str]:
    """The metadata of a channel: rosbag2's QoS, the wire topic, and for a mask what its values mean."""
    metadata = {"offered_qos_profiles": offered_qos_profiles(topic), WIRE_TOPIC_KEY: topic, CONTENT_KEY: content}
    if content == CONTENT_DATA and header.get("kind") == contracts.KIND_MASK and header.get("values"):
        metadata[VALUES_KEY] = str(header["values"])
    return metadata


#: Largest value of MCAP's ``Message.sequence`` (uint32) and of its times (uint64 nanoseconds).
MCAP_SEQUENCE_MAX = 2**32 - 1
MCAP_TIME_MAX = 2**64 - 1
#: Most channels one MCAP file holds (channel ids are uint16, 0 is not used); a topic takes two.
MCAP_MAX_CHANNELS = 2**16 - 1


def mcap_sequence(seq: int) -> int:
    """The MCAP ``sequence`` of a message with wire ``seq``: its low 32 bits. MCAP's field is a
    uint32 and the wire's ``seq`` goes up to 2^63-1; the whole seq is in the ``/meta`` header,
    which readers take it from (they pair a message's two records by topic and this number)."""
    return int(seq) & MCAP_SEQUENCE_MAX


def mcap_time(ns: int) -> int:
    """An MCAP ``log_time`` / ``publish_time`` (uint64 nanoseconds): ``ns`` clamped to 0..2^64-1
    (the wire's stamps are 0..2^63-1, so only a caller's own odd clock is ever clamped)."""
    return min(max(int(ns), 0), MCAP_TIME_MAX)


def compact_json(doc: Any, *, limit: int) -> bytes:
    """``doc`` as compact UTF-8 JSON, as the node writes it (non-ASCII characters as ``\\u``
    escapes); when the escapes would take it over ``limit`` bytes, without them (plain UTF-8,
    which every reader parses the same), so a document a reader took is never made too big for
    the next one by being written again. Raises ValueError for NaN or infinity, TypeError for
    what JSON cannot hold."""
    data = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(data) > limit:
        data = json.dumps(doc, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode("utf-8")
    return data


def header_frame(header: dict[str, Any]) -> bytes:
    """The wire header frame of ``header`` as the node writes it (``wire.dump_header``), or, when
    its ``\\u`` escapes would take it over ``contracts.MAX_HEADER_BYTES``, without them: what the
    recorder stores in ``/meta`` and a replay sends."""
    from perception.wire import dump_header

    frame = dump_header(header)
    if len(frame) > contracts.MAX_HEADER_BYTES:
        frame = compact_json(json.loads(frame), limit=contracts.MAX_HEADER_BYTES)
    return frame


def split_path(out: Path, index: int) -> Path:
    """The file of split ``index`` of a recording to ``out``: ``run.mcap`` -> ``run_0.mcap``, ``run_1.mcap``..."""
    out = Path(out)
    return out.with_name(f"{out.stem}_{index}{out.suffix or '.mcap'}")


def split_files(out: Path) -> list[Path]:
    """The split files of a recording to ``out`` that exist now (``run_0.mcap``, ``run_1.mcap``...), in index order."""
    out = Path(out)
    suffix = out.suffix or ".mcap"
    found = [f for f in out.parent.glob(f"{glob.escape(out.stem)}_*{glob.escape(suffix)}")
             if re.fullmatch(re.escape(out.stem) + r"_\d+", f.stem, re.DOTALL)]
    return sorted(found, key=lambda f: int(f.stem.rpartition("_")[2]))
