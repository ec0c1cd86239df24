"""The one place where the sides of the system agree.

Tensor names, dtypes and layouts of exported models, the metadata key and schema version, the
class table, topic names and the ZeroMQ wire format and its limits all live here, and the keys of
the node's stats document (declared in ``perception/stats_schema.py``, re-exported here); the
metadata document itself is ``perception/model_metadata.py``'s ``ModelMetadata``, and what each
received header field may hold is the schema in ``perception/wire_schema.py``. The exporter,
the engines, the publisher, the subscriber and the tests import these names; a change to the
wire format or the metadata is one diff that every side sees.

This module is imported by the runtime node and must stay free of torch.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

# The keys of the node's stats document are part of the contract; declared in their own module.
from perception.stats_schema import CAMERA_STATS as CAMERA_STATS
from perception.stats_schema import NODE_STATS as NODE_STATS
from perception.stats_schema import PUBLISHER_STATS as PUBLISHER_STATS
from perception.stats_schema import SEQUENCE_FIGURES as SEQUENCE_FIGURES
from perception.stats_schema import STARTUP_STATS as STARTUP_STATS
from perception.stats_schema import STATS_ALIASES as STATS_ALIASES
from perception.stats_schema import StatsKey as StatsKey
from perception.stats_schema import check_stats as check_stats

#: What every reader (Python, C, JS) calls a control character in text it prints: C0, DEL, C1, the
#: Unicode line and paragraph separators, and the invisible and bidirectional format characters
#: (soft hyphen, Arabic letter mark, Mongolian vowel separator, zero-width and direction marks,
#: bidi embeddings, overrides and isolates, word joiners, the byte order mark, interlinear
#: annotation, tags), which can reorder a printed line or make two names look the same. One
#: explicit set, not a Unicode category table, so that readers in other languages (and Unicode
#: versions) agree. Refused in received topics (``wire.check_topic``) and in every string of a
#: model's metadata (``modelfile``), whose names reach the terminal and every message header.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
                                "\ufeff\ufff9-\ufffb\U000e0000-\U000e007f]")

# --------------------------------------------------------------------------------------------
# Exported model I/O
# --------------------------------------------------------------------------------------------

#: Input tensor: uint8, NHWC, BGR (as OpenCV delivers frames), fixed H x W. Cast, channel swap
#: and mean/std normalisation happen inside the graph.
INPUT_NAME = "image"
INPUT_DTYPE = "uint8"
INPUT_LAYOUT = "NHWC"
INPUT_COLOR_ORDER = "BGR"

#: Output tensor: uint8 class ids (argmax fused into the graph), N x H x W.
OUTPUT_CLASS_IDS = "class_ids"
#: Optional second output: per-pixel confidence, uint8, N x H x W, a softmax probability scaled to
#: 0..255 (255 == 1.0): that of the winning class, or, when the winning class is one of the model's
#: ``confidence_pool`` classes (``ModelMetadata``), the summed probability of the pool.
OUTPUT_CONFIDENCE = "confidence"
#: The task group whose classes pool their probabilities in the confidence (``confidence_pool``).
CONFIDENCE_POOL_TASK = "obstacle"


def confidence_pool(table: ClassTable) -> tuple[str, ...]:
    """The classes an export's confidence output pools (``OUTPUT_CONFIDENCE``): the obstacle task
    group when it has two or more classes, else none (the top class probability alone).

    Why the obstacle group and no other: a pixel split between pedestrian and cyclist is sure to be
    an obstacle, and marking it unknown takes it out of the obstacle mask, the conservative claim.
    A drivable claim is the risky one, so it keeps the strict top-class probability (road against
    lane_marking still counts as unsure). Measured on the default model (README, "The unknown
    threshold"): real-frame obstacle IoU with unknown marking 41.0 -> 61.5, drivable precision kept.
    """
    members = table.task_groups.get(CONFIDENCE_POOL_TASK, ())
    return tuple(members) if len(members) >= 2 else ()


def unknown_level(threshold: float) -> int:
    """The uint8 confidence level below which a pixel is unknown, for a ``threshold`` on the
    confidence (``OUTPUT_CONFIDENCE``, 0..1; ``ModelMetadata.unknown_threshold``, ``--unknown-threshold``):
    a pixel is unknown when ``confidence < round(255 * threshold)``, so 0 marks nothing."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"unknown threshold {threshold!r} must be a probability in 0..1 (0: off)")
    return int(round(255 * threshold))

#: ONNX opset used by the exporter: the opset torch's dynamo exporter emits natively (lower
#: opsets go through onnx's version converter, which lacks a Split 18->17 adapter). ONNX Runtime
#: >= 1.14 and TensorRT 10 run it.
ONNX_OPSET = 18

#: Key in the ONNX ``metadata_props`` that holds the JSON metadata document.
METADATA_KEY = "perception.metadata"
#: Version of the metadata schema (``model_metadata.ModelMetadata``). Bump on any incompatible change.
METADATA_SCHEMA_VERSION = 1

#: Normalisation of the training side (ImageNet statistics, RGB order, on 0..1 pixel values).
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)

# --------------------------------------------------------------------------------------------
# Class table
# --------------------------------------------------------------------------------------------

#: The task groups the node publishes as binary masks.
TASKS = ("drivable", "lane", "obstacle")
#: How much of the drivable classes the ``drivable`` mask keeps (``--drivable-reach``): ``ego``, the
#: area joined to the bottom of the frame where the car stands (``perception.masks.EgoReach``);
#: ``all``, every pixel of the drivable classes.
DRIVABLE_REACH_CHOICES = ("ego", "all")
DEFAULT_DRIVABLE_REACH = "ego"
#: Classes that join the drivable area to the car without being drivable themselves: its own hood
#: at the bottom of the frame (the synthetic world's ``ego_vehicle``, Cityscapes' ``ego vehicle``).
EGO_CLASS_NAMES = ("ego_vehicle", "ego vehicle")


@dataclass(frozen=True)
class ClassInfo:
    """One semantic class: its id in label images and model outputs, a name and an RGB colour."""

    id: int
    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class ClassTable:
    """The classes a dataset labels and a model predicts.

    ``ignore_id`` marks pixels left out of losses and metrics (None when there is none).
    ``task_groups`` maps a task (``drivable``, ``lane``, ``obstacle``, or another name) to the
    class names that make it up.
    """

    classes: tuple[ClassInfo, ...]
    ignore_id: int | None = None
    task_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = [c.id for c in self.classes]
        if ids != list(range(len(ids))):
            raise ValueError(f"class ids must be 0..{len(ids) - 1} in order, got {ids}")
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names}")
        if len(ids) > UNKNOWN_CLASS_ID:
            raise ValueError(f"at most {UNKNOWN_CLASS_ID} classes: id {UNKNOWN_CLASS_ID} is reserved for unknown pixels")
        if self.ignore_id is not None and self.ignore_id in ids:
            raise ValueError(f"ignore id {self.ignore_id} collides with a class id")
        for task, members in self.task_groups.items():
            unknown = [m for m in members if m not in names]
            if unknown:
                raise ValueError(f"task group {task!r} names unknown classes {unknown}; known: {names}")

    def new_table_error(self) -> str | None:
        """What keeps this table from being a new one (a ``classes.yaml`` that a dataset, a training
        run and then a model carry), or None: a class name that ``class_name_error`` refuses, two
        names equal under Unicode NFC normalisation (one text spelled two ways), or an empty task
        group (it would be scored as IoU 0 of no class). Stored tables (model files, checkpoints)
        are read without this check, so that files written before it still run."""
        for name in self.names:
            problem = class_name_error(name)
            if problem is not None:
                return f"class name {name!r:.80} {problem}; rename the class"
        # Two spellings of one text (precomposed 'é' or 'e' and a combining accent) print alike, as do
        # their per-class topics: told apart in the line by their code points (ascii()).
        spelled: dict[str, str] = {}
        for name in self.names:
            first = spelled.setdefault(unicodedata.normalize("NFC", name), name)
            if first != name:
                return (f"class names {first!r:.80} and {name!r:.80} are one name in two Unicode spellings "
                        f"({ascii(first)} and {ascii(name)}), which print alike, as do their per-class topics; "
                        "rename one of them, or merge the two classes")
        for task, members in self.task_groups.items():
            if not members:
                return f"task group {task!r} is empty: name its classes, or leave the group out"
        return None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def id_of(self, name: str) -> int:
        for c in self.classes:
            if c.name == name:
                return c.id
        raise KeyError(f"unknown class {name!r}; known: {', '.join(self.names)}")

    def task_ids(self, task: str) -> list[int]:
        """Class ids that make up ``task`` (empty when the model has no such group)."""
        return [self.id_of(n) for n in self.task_groups.get(task, ())]

    def palette(self) -> list[tuple[int, int, int]]:
        """RGB colours indexed by class id."""
        return [c.color for c in self.classes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": [{"id": c.id, "name": c.name, "color": list(c.color)} for c in self.classes],
            "ignore_id": self.ignore_id,
            "task_groups": {k: list(v) for k, v in self.task_groups.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, new: bool = False) -> ClassTable:
        """A table from its dict form (model metadata, checkpoints, a folder dataset's classes.yaml);
        ValueError naming the first malformed entry. ``new``: a table a person wrote (a dataset's
        ``classes.yaml``), also held to ``new_table_error``'s rules."""
        try:
            entries = data["classes"]
            if not isinstance(entries, (list, tuple)) or not entries:
                raise ValueError(f"'classes' is {entries!r:.60}, not a list of {{id, name, color}} entries")
            classes = tuple(_class_info(n, c) for n, c in enumerate(entries))
            raw_groups = data.get("task_groups") or {}
            if not isinstance(raw_groups, dict) or not all(isinstance(v, (list, tuple)) for v in raw_groups.values()):
                raise ValueError(f"task_groups {raw_groups!r:.80} is not a mapping of task to class names")
            groups = {str(k): tuple(_class_name(n) for n in v) for k, v in raw_groups.items()}
            ignore = data.get("ignore_id")
            if ignore is not None and (type(ignore) is not int or not 0 <= ignore <= UNKNOWN_CLASS_ID):
                raise ValueError(f"ignore_id {ignore!r:.40} is not a class id 0..{UNKNOWN_CLASS_ID}")
            table = cls(classes=classes, ignore_id=ignore, task_groups=groups)
        except KeyError as exc:
            raise ValueError(f"it has no {exc.args[0]!r} key: the table is 'classes' (a list of {{id, name, color}}), "
                             "'ignore_id' and 'task_groups'") from None
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"malformed class table: {exc!r}") from exc
        problem = table.new_table_error() if new else None
        if problem is not None:
            raise ValueError(problem)
        return table


def _class_info(position: int, entry: Any) -> ClassInfo:
    """One ``classes`` entry; ValueError naming the entry and the key it lacks."""
    if not isinstance(entry, dict):
        raise ValueError(f"class entry {position} is {entry!r:.60}, not a mapping {{id: N, name: NAME, color: [R, G, B]}}")
    missing = [k for k in ("id", "name", "color") if k not in entry]
    if missing:
        raise ValueError(f"class entry {position} ({entry!r:.60}) has no {', '.join(missing)}: every class needs "
                         "id, name and color (RGB 0..255, the colour of its pixels in RGB-palette labels and overlays)")
    if type(entry["id"]) is not int:
        raise ValueError(f"class entry {position} id {entry['id']!r:.40} is not a whole number")
    return ClassInfo(id=entry["id"], name=_class_name(entry["name"]), color=_colour(entry["color"], entry["name"]))


#: Longest class name, in UTF-8 bytes for a new table (``class_name_error``; in characters for stored
#: ones): names travel in the ``info`` message and per-class topic names ``<namespace>/obstacle/<class>``,
#: which, with the longest namespace (``MAX_NAMESPACE_CHARS``), fill a reader's ``MAX_TOPIC_BYTES``.
MAX_CLASS_NAME = 64


def _class_name(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_CLASS_NAME:
        raise ValueError(f"class name {value!r:.40} is not 1..{MAX_CLASS_NAME} characters")
    return value


def topic_segment_error(name: str) -> str | None:
    """Why ``name`` cannot be the last part of a topic (a class's ``<namespace>/obstacle/<class>``),
    or None: what every reader refuses there (``wire.check_topic``, a mask on a reserved name, a
    ``.`` or ``..`` part) and a ``/``, which would make it two parts."""
    if not name:
        return "is empty"
    if "/" in name:
        return f"holds '/', which would split its per-class topic {PER_CLASS_OBSTACLE_PREFIX}<class> in two"
    if CONTROL_CHARACTERS.search(name):
        return "holds a control character or an invisible format character, which topics may not hold"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        return "holds a lone surrogate, which is not UTF-8 text"
    if name in (".", "..") or name in RESERVED_TOPIC_NAMES:
        return f"is a name the wire reserves ({', '.join(('.', '..', *RESERVED_TOPIC_NAMES))}), which no mask topic ends in"
    return None


#: How readers name a class id that the class table does not name (the C and JS clients'
#: ``classes_present``: ``id<N>``, the unknown id as ``id255``, every id before ``info`` arrived), kept
#: out of new tables by ``class_name_error`` so that no class prints as such an id.
UNNAMED_ID_NAME = re.compile(r"id[0-9]+")
#: The names ``perception eval --tasks`` gives pixels that are no class of the model's table, among
#: its classes (``false_negative_by_prediction``), and what each stands for; kept out of new tables.
READER_RESERVED_NAMES = {"unknown": "marked unknown (id 255)", "unreachable": "cut from drivable as unreachable"}


def class_name_error(name: str) -> str | None:
    """Why ``name`` cannot be a class name of a new table (``ClassTable.new_table_error``), or None:
    it must be a topic part (``topic_segment_error``: a class of the obstacle group is published on
    ``<namespace>/obstacle/<class>``) of 1..``MAX_CLASS_NAME`` UTF-8 bytes (so that topic fits the
    readers' limit under any namespace), nameable in ``--task``/``--data-task``, which split
    their value at commas and strip the spaces around each name, and none of the names readers give
    what is not a class (``UNNAMED_ID_NAME``, ``READER_RESERVED_NAMES``)."""
    problem = topic_segment_error(name)
    if problem is not None:
        return problem
    size = len(name.encode("utf-8"))
    if size > MAX_CLASS_NAME:
        return (f"has {size} UTF-8 bytes, more than {MAX_CLASS_NAME}: its per-class topic "
                f"<namespace>/{PER_CLASS_OBSTACLE_PREFIX}<class> must fit the readers' {MAX_TOPIC_BYTES}-byte topic limit")
    if name != name.strip():
        return "starts or ends with a space, which --task and --data-task strip"
    if "," in name:
        return "holds ',', which separates the classes of --task and --data-task"
    if UNNAMED_ID_NAME.fullmatch(name):
        return (f"is how the C and JS clients print a class id the table does not name (id<N>: id{UNKNOWN_CLASS_ID} "
                "for unknown pixels), so it would read as another id")
    if name in READER_RESERVED_NAMES:
        return (f"is the name perception eval --tasks gives pixels {READER_RESERVED_NAMES[name]}, beside the "
                "model's classes, so their counts would merge with this class's")
    return None


def per_class_topic_error(namespace: str, name: str) -> str | None:
    """Why class ``name`` of a model cannot have a per-class obstacle topic under ``namespace``
    (``perception run --per-class-obstacles``), or None: a model file exported before
    ``class_name_error`` may hold such a name, and only this flag makes a topic of it."""
    problem = topic_segment_error(name)
    if problem is not None:
        return problem
    size = len(topic_name(namespace, PER_CLASS_OBSTACLE_PREFIX + name).encode("utf-8"))
    if size > MAX_TOPIC_BYTES:
        return (f"makes the topic {namespace.rstrip('/')}/{PER_CLASS_OBSTACLE_PREFIX}<class> {size} UTF-8 bytes long, "
                f"more than the readers' {MAX_TOPIC_BYTES}")
    return None


def _colour(value: Any, name: Any) -> tuple[int, int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(type(x) is int and 0 <= x <= 255 for x in value):
        raise ValueError(f"class {name!r:.40} colour {value!r:.40} is not three values 0..255")
    return tuple(value)


# --------------------------------------------------------------------------------------------
# Topics and the ZeroMQ wire format
# --------------------------------------------------------------------------------------------

#: Version of the message header below. Bump on any incompatible change. Version 2 added the
#: mask geometry (``source_height``/``source_width``, ``roi``, ``binning_x``/``binning_y``), the
#: publication counter ``pub_seq``, and sends every nanosecond field as a decimal string.
WIRE_VERSION = 2
#: Older wire versions readers still accept (deprecation window): version 1 headers (nanoseconds
#: as JSON integers, no geometry, no ``pub_seq``) are read with one warning per reader.
WIRE_VERSIONS_READ = (1, 2)
#: Header fields that hold nanoseconds since the UNIX epoch. From wire version 2 they travel as
#: decimal strings (``"1764622800123456789"``): about 1.8e18 is beyond 2**53, the largest integer
#: a JavaScript number or cJSON's double holds exactly. Readers in this package turn them back
#: into Python ints after checking them.
NS_FIELDS = ("capture_ns", "publish_ns")
#: Default PUB endpoint: localhost only; other interfaces only when asked.
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5556"
#: Namespace prefix; the full namespace defaults to ``perception/<camera name>``.
NAMESPACE_PREFIX = "perception"

#: Mask topics: the three task masks (0/255) and the full class map (class ids).
MASK_TOPICS = ("drivable", "lane", "obstacle", "class_map")
#: Per-class obstacle masks (``perception run --per-class-obstacles``): mask ``obstacle/<class>``
#: on topic ``<namespace>/obstacle/<class>``, binary like ``obstacle`` and in its encoding.
PER_CLASS_OBSTACLE_PREFIX = "obstacle/"
#: Statistics topic (JSON payload, 1 Hz).
STATS_TOPIC = "stats"
#: Obstacle blobs topic (JSON payload: connected components with boxes and areas).
OBSTACLES_TOPIC = "obstacles"
#: Latched description of the node (JSON payload): class table, task groups, unknown id, model id
#: and metadata digest, input and mask geometry, encodings per topic, wire version. Sent when a
#: subscription to it arrives and whenever it changes.
INFO_TOPIC = "info"
#: Class id that never names a class (class tables hold at most 255 classes): the class map's
#: "unknown" pixels, whose confidence is below the model's ``unknown_threshold`` (models with a
#: ``confidence`` output). No task mask (drivable, lane, obstacle) ever claims one. The letterbox
#: padding is cut off, not marked unknown.
UNKNOWN_CLASS_ID = 255
#: Atomic frames (``perception run --atomic-frames``): every mask of a frame in one multipart
#: message on ``<namespace>/frame``: ``[topic, frame header, mask header 1, payload 1, ...]``.
FRAME_TOPIC = "frame"
#: Most masks one atomic frame message may carry (a reader refuses more).
MAX_FRAME_MASKS = 32
#: The JSON-document topics of a node.
JSON_TOPICS = (STATS_TOPIC, OBSTACLES_TOPIC, INFO_TOPIC)
#: Last topic segments that never name a mask: a reader refuses a mask on them, and an atomic frame
#: whose masks use them (a recording keeps one schema a topic). JSON on a mask topic is refused too.
RESERVED_TOPIC_NAMES = (*JSON_TOPICS, FRAME_TOPIC)

#: Payload encodings. ``mono8``: H*W bytes, row-major. ``bitpack``: ceil(H*W/8) bytes, numpy
#: ``packbits`` order (most significant bit first), a set bit is a mask pixel (binary masks only).
#: ``rle``: runs over the row-major pixels, each run 1 byte value + 4 bytes little-endian length.
#: ``png``: an 8-bit greyscale PNG file.
ENCODINGS = ("mono8", "bitpack", "rle", "png")
#: Default encoding per topic.
DEFAULT_ENCODINGS = {"drivable": "mono8", "lane": "mono8", "obstacle": "mono8", "class_map": "mono8"}
#: Header ``compression`` value for each payload encoding. The header's ``encoding`` is always the
#: ROS ``sensor_msgs/Image`` encoding of the decoded pixels (``mono8``); ``compression`` says how
#: the payload frame is packed, so the ROS mapping stays exact whatever goes over the wire.
COMPRESSION_OF_ENCODING = {"mono8": "none", "bitpack": "bitpack", "rle": "rle", "png": "png"}
#: ROS image encoding of every decoded mask (8-bit, one channel, ``step == width``).
ROS_IMAGE_ENCODING = "mono8"
#: Header ``values``: what the pixel values mean. Task masks are ``binary`` (0 or 255), the
#: class map carries ``class_ids`` (ids of the model's class table).
VALUES_BINARY = "binary"
VALUES_CLASS_IDS = "class_ids"
#: Header ``kind``: a mask message (header + encoded image) or a JSON document (stats, obstacles).
KIND_MASK = "mask"
KIND_JSON = "json"
#: Header ``kind`` of an atomic frame message (wire version 2, ``--atomic-frames``).
KIND_FRAME = "frame"
#: Header field names (UTF-8 JSON, second frame of every message).
HEADER_FIELDS_MASK = (
    "wire_version", "kind", "header", "height", "width", "encoding", "is_bigendian", "step",
    "compression", "values", "seq", "pub_seq", "capture_ns", "publish_ns", "model_id", "latency_ms",
    "source_height", "source_width", "roi", "binning_x", "binning_y",
)
HEADER_FIELDS_JSON = ("wire_version", "kind", "name", "seq", "pub_seq", "publish_ns")
HEADER_FIELDS_FRAME = ("wire_version", "kind", "frame_id", "seq", "pub_seq", "capture_ns", "publish_ns", "masks")
#: Mask size choices (``perception run --mask-size``). ``model``: the model's output with the
#: letterbox padding cut off, i.e. the content region only (no invented pixels); ``source``: that
#: region resized to the camera frame.
MASK_SIZES = ("model", "source")
DEFAULT_MASK_SIZE = "model"
#: RLE run layout: 1 byte value + 4 bytes little-endian run length (numpy dtype spec).
RLE_RUN_DTYPE = [("value", "u1"), ("length", "<u4")]
#: zlib level of ``png`` payloads: 1 is several times faster than the default 3 and the masks
#: (large flat regions) compress nearly as well.
PNG_COMPRESSION_LEVEL = 1


_ROS_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def ros_token_error(token: str) -> str | None:
    """Which ROS 2 naming rule a name token (a camera name, one part of a namespace) breaks, or
    None. The rules are those of ROS 2 topic names (design.ros2.org "Topic and Service name
    mapping to DDS"): only letters, digits and underscores; not empty; not starting with a digit;
    no repeated underscores."""
    if not token:
        return "it is empty"
    bad = sorted({c for c in token if c not in _ROS_TOKEN_CHARS})
    if bad:
        return f"it holds {''.join(bad)!r}; only letters, digits and '_' are allowed"
    if token[0].isdigit():
        return "it starts with a digit"
    if "__" in token:
        return "it holds a repeated underscore '__'"
    return None


def ros_namespace_error(namespace: str) -> str | None:
    """Which ROS 2 naming rule a namespace (``perception/front``, optionally starting with ``/``;
    a trailing ``/`` is ignored) breaks, or None: no repeated ``/``, every token passes
    ``ros_token_error``, and its longest topic (``<ns>/obstacle/<class>``) fits a reader's topic limit."""
    body = namespace[1:] if namespace.startswith("/") else namespace
    body = body[:-1] if body.endswith("/") else body
    if not body:
        return "it is empty"
    # Topics keep a leading '/' (``topic_name``), so it counts.
    size = len(namespace.rstrip("/"))
    if size > MAX_NAMESPACE_CHARS:
        return (f"it has {size} characters, more than {MAX_NAMESPACE_CHARS}: its longest topic, "
                f"<namespace>/{PER_CLASS_OBSTACLE_PREFIX}<class name>, must fit the readers' {MAX_TOPIC_BYTES}-byte topic limit")
    if "//" in namespace:
        return "it holds a repeated '/'"
    for token in body.split("/"):
        problem = ros_token_error(token)
        if problem is not None:
            return f"part {token!r}: {problem}"
    return None


def default_namespace(camera_name: str) -> str:
    return f"{NAMESPACE_PREFIX}/{camera_name}"


def topic_name(namespace: str, name: str) -> str:
    return f"{namespace.rstrip('/')}/{name}"


# --------------------------------------------------------------------------------------------
# Limits of received headers (what every reader checks before it trusts a message; the schema that
# applies them per field is perception/wire_schema.py)
# --------------------------------------------------------------------------------------------

#: Largest value of the wire's integer counters and stamps (``seq``, ``*_ns``): int64, as ROS and
#: every typed reader hold them. Larger values (``capture_ns = 10**400``) are malformed.
WIRE_INT_MAX = 2**63 - 1
#: ``header.stamp.sec`` is a ROS ``int32``; ``nanosec`` a ``uint32`` below one second.
ROS_SEC_MAX = 2**31 - 1
ROS_NANOSEC_MAX = 999_999_999
#: Longest topic a reader accepts (UTF-8 bytes); longer topics are malformed messages.
MAX_TOPIC_BYTES = 256
#: Longest namespace (or ``perception/<camera name>``) a node publishes under: its longest topic,
#: ``<namespace>/obstacle/<class name>``, then fits ``MAX_TOPIC_BYTES`` (namespaces are ASCII).
MAX_NAMESPACE_CHARS = MAX_TOPIC_BYTES - len("/" + PER_CLASS_OBSTACLE_PREFIX) - MAX_CLASS_NAME
#: Largest header frame (bytes) a reader parses; real headers are about 400 bytes.
MAX_HEADER_BYTES = 16 * 1024
#: Largest JSON payload (stats, obstacles) a reader parses; real documents are a few kB.
MAX_JSON_PAYLOAD_BYTES = 1024 * 1024
#: Deepest nesting of JSON arrays/objects a reader accepts (headers are 3 deep, stats 4).
MAX_JSON_DEPTH = 32
#: Most characters of one JSON integer literal (an int64 has at most 19 digits and a sign);
#: longer ones are rejected before Python converts them (its int-from-string limit is 4300).
MAX_JSON_INT_CHARS = 20
#: Longest string field of a header (``frame_id``, ``model_id``, ``name``) and latency key.
MAX_HEADER_STRING = 256
#: Most entries of the header's ``latency_ms`` object.
MAX_LATENCY_ENTRIES = 32
#: Largest mask side a reader accepts (pixels).
MAX_MASK_SIDE = 16384
#: Default bound on a decoded mask's pixels (height * width), checked before anything is
#: allocated: 4096 x 4096 covers 4K UHD masks twice over and caps one decoded mask at 16 MiB.
#: Readers take a ``max_mask_pixels`` argument (``perception listen --max-mask-pixels``) to change it.
MAX_MASK_PIXELS = 4096 * 4096
#: A model's input side (training ``--size``/``crop_hw``, ``export --size``): 4K camera frames fit
#: above, and beyond it training and tracing only exhaust memory; the node takes models of at most
#: MAX_MASK_PIXELS input pixels.
MIN_MODEL_INPUT_SIDE, MAX_MODEL_INPUT_SIDE = 16, 4096
