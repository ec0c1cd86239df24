"""Recording: subscribe to a node's topics and write them to MCAP files that ROS 2 tools open.

``perception record --endpoint tcp://127.0.0.1:5556 --namespace perception/front --out run.mcap``
(or ``--topic perception/front/lane ...``; ``--duration S``; ``--split-duration S`` /
``--split-size MB`` for ``run_0.mcap``, ``run_1.mcap``...; Ctrl-C ends it and finishes the file;
it refuses an ``--out`` where an earlier recording is, unless ``--overwrite``).
``perception record --recover run.mcap`` rebuilds a file whose recorder was killed.

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

Channel names are ROS 2 names (``ros2_topic_name``: absolute, illegal characters made ``_``).
Every channel's metadata holds rosbag2's ``offered_qos_profiles`` (YAML), the wire topic
(``perception.wire_topic``), ``perception.content`` (``data`` or ``wire_header``) and, for masks,
``perception.values`` (``binary`` or ``class_ids``). Each MCAP message's ``sequence`` is the wire
``seq``, ``log_time`` the receive time and ``publish_time`` the node's publish time. A metadata
record ``perception.recording`` holds the endpoint, the topics, the perception and wire
versions, per-topic counts and, in a split, its ``split_index``.
"""

from __future__ import annotations

import glob
import json
import logging
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import yaml

from perception import __version__, contracts
from perception.config import setting
from perception.errors import ConfigError

log = logging.getLogger(__name__)

IMAGE_SCHEMA = "sensor_msgs/msg/Image"
STRING_SCHEMA = "std_msgs/msg/String"
#: Suffix of the channel that carries each topic's wire headers.
META_SUFFIX = "/meta"
#: The recorder's fixed reconnect interval (ms) while the node is not (yet) there.
RECONNECT_MS = 10
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


#: Channel metadata keys (besides rosbag2's ``offered_qos_profiles``).
WIRE_TOPIC_KEY = "perception.wire_topic"
CONTENT_KEY = "perception.content"
VALUES_KEY = "perception.values"
#: ``perception.content``: the message itself, or the wire headers of a topic's messages.
CONTENT_DATA = "data"
CONTENT_HEADER = "wire_header"
#: Wire topics the node sends latched (the last message goes to every new subscriber).
LATCHED_SUFFIXES = ("/" + contracts.INFO_TOPIC,)


def offered_qos_profiles(topic: str) -> str:
    """rosbag2's ``offered_qos_profiles`` channel metadata: the YAML list rosbag2 (Humble) writes,
    with enum values as numbers (which every rosbag2 release and rosbags read).

    The node's ZeroMQ PUB socket keeps the latest messages and drops for a slow subscriber:
    KEEP_LAST (1), BEST_EFFORT (2), VOLATILE (2). A latched topic (``<ns>/info``) is RELIABLE (1),
    TRANSIENT_LOCAL (1), depth 1, as ROS 2 latches. Depth 0 and zero durations (the defaults) are
    what rosbag2 records for a publisher's offered profile.
    """
    latched = topic.endswith(LATCHED_SUFFIXES)
    zero = {"sec": 0, "nsec": 0}
    profile = {
        "history": 1, "depth": 1 if latched else 0, "reliability": 1 if latched else 2,
        "durability": 1 if latched else 2, "deadline": zero, "lifespan": zero, "liveliness": 1,
        "liveliness_lease_duration": zero, "avoid_ros_namespace_conventions": False,
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


@dataclass
class RecordConfig:
    """The flags of ``perception record`` (and the parameters of a ``record`` launch node)."""

    out: Path = setting(help="output .mcap file (with --recover: where the rebuilt file goes)")
    endpoint: str = setting(contracts.DEFAULT_ENDPOINT, help="publisher endpoint")
    # One of the two is required when recording; __post_init__ says so (not argparse, so --recover needs neither).
    namespace: str | None = setting(None, exclusive="what", help="every topic under this namespace, e.g. perception/front")
    topic: list[str] = setting(default_factory=list, exclusive="what", metavar="T", help="exact topics to record")
    duration_s: float | None = setting(None, lo=0.001, flag="--duration", metavar="S", old_names=("duration",),
                                       help="stop after S seconds (default: until Ctrl-C)")
    curve_server_key: str | None = setting(None, metavar="FILE", help="the node's public .key file (CURVE)")
    curve_key: str | None = setting(None, metavar="FILE", help="this client's .key_secret file (CURVE)")
    max_mask_pixels: int = setting(contracts.MAX_MASK_PIXELS, lo=1, hi=contracts.MAX_MASK_SIDE ** 2, metavar="N",
                                   help="skip masks declaring more than N pixels, before decoding")
    #: Start a new split file after this many seconds (rosbag2's --max-bag-duration).
    split_duration: float | None = setting(None, lo=0.001, metavar="S",
                                           help="write <out stem>_0.mcap, _1.mcap, ... starting a new file every S seconds")
    #: Start a new split file once the open one holds this many MB (rosbag2's --max-bag-size).
    split_size: float | None = setting(None, lo=0.001, metavar="MB",
                                       help="write <out stem>_0.mcap, _1.mcap, ... starting a new file at MB megabytes")
    #: Compressed MCAP chunk size: the recorder holds the chunk it is filling in memory, so a recorder
    #: killed outright (SIGKILL, power loss) loses at most this much; smaller chunks index more often.
    chunk_size_kb: int = setting(1024, lo=4, hi=65536, flag="--chunk-size", metavar="KB",
                                 help="MCAP chunk size in KiB: a recorder killed outright loses at most the chunk it "
                                      "is filling")
    overwrite: bool = setting(False, help="replace an existing --out (and, with splits, remove every old <stem>_N.mcap) "
                                          "instead of refusing to start")

    def __post_init__(self) -> None:
        if bool(self.namespace) == bool(self.topic):
            raise ValueError("give --namespace NS (all its topics) or --topic T ... (exact topics), one of the two")

    @property
    def splits(self) -> bool:
        return self.split_duration is not None or self.split_size is not None


def split_path(out: Path, index: int) -> Path:
    """The file of split ``index`` of a recording to ``out``: ``run.mcap`` -> ``run_0.mcap``, ``run_1.mcap``..."""
    out = Path(out)
    return out.with_name(f"{out.stem}_{index}{out.suffix or '.mcap'}")


def split_files(out: Path) -> list[Path]:
    """The split files of a recording to ``out`` that exist now (``run_0.mcap``, ``run_1.mcap``...), in index order."""
    out = Path(out)
    suffix = out.suffix or ".mcap"
    found = [f for f in out.parent.glob(f"{glob.escape(out.stem)}_*{glob.escape(suffix)}")
             if re.fullmatch(re.escape(out.stem) + r"_\d+", f.stem)]
    return sorted(found, key=lambda f: int(f.stem.rpartition("_")[2]))


def existing_outputs(config: RecordConfig) -> list[Path]:
    """Files a recording per ``config`` would replace or be mixed with: ``out`` and, for a split
    recording, every existing split of that name (a replay of ``out`` would play old splits after
    the new ones, or the old ``out`` instead of them)."""
    out = Path(config.out)
    # A folder is left to open() to refuse ("cannot write"); a dangling link counts, as "xb" would fail on it.
    found = [out] if (out.exists() and not out.is_dir()) or out.is_symlink() else []
    return found + split_files(out) if config.splits else found


def refuse_existing(config: RecordConfig) -> None:
    """Raise ConfigError naming the files a recording to ``config.out`` would overwrite."""
    found = existing_outputs(config)
    if found:
        names = ", ".join(str(f) for f in found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        one = len(found) == 1
        raise ConfigError(f"{names} already exist{'s' if one else ''} (an earlier recording); choose another --out, "
                          f"remove {'it' if one else 'them'}, or pass --overwrite to replace {'it' if one else 'them'}")


@dataclass
class TopicCount:
    """Per-topic figures: messages, first/last seq, seqs missing between them, seq restarts."""

    messages: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    missing: int = 0
    restarts: int = 0

    def add(self, seq: int) -> None:
        if self.last_seq is not None:
            if seq > self.last_seq + 1:
                self.missing += seq - self.last_seq - 1
            elif seq <= self.last_seq:
                self.restarts += 1  # the node restarted (its seq starts again)
        if self.first_seq is None:
            self.first_seq = seq
        self.last_seq = seq
        self.messages += 1


class McapMaskWriter:
    """Writes received ``perception.subscribe.Message`` objects into an MCAP file (layout above).

    ``chunk_size`` (bytes) is how much goes into one compressed MCAP chunk; a recorder killed
    mid-run loses at most the chunk being filled. Raises ConfigError when ``path`` cannot be written,
    or, with ``exclusive``, already exists.

    The file is written with ``mcap.writer.Writer`` (``ros2`` profile) and the ROS 2 CDR encoders
    of ``mcap_ros2``: its own ``Writer`` cannot give a channel metadata, and rosbag2's convention
    (and the ``ros2`` profile) want ``offered_qos_profiles`` on every channel.
    """

    def __init__(
        self, path: Path, *, chunk_size: int = 1024 * 1024, counts: dict[str, TopicCount] | None = None,
        exclusive: bool = False,
    ) -> None:
        from mcap.well_known import MessageEncoding, SchemaEncoding
        from mcap.writer import Writer
        from mcap_ros2 import __version__ as mcap_ros2_version
        from mcap_ros2._dynamic import serialize_dynamic  # the encoders mcap_ros2.writer.Writer uses

        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # exclusive: a file that appeared since the recorder checked (another recorder) is not clobbered.
            self._file: IO[bytes] = open(self.path, "xb" if exclusive else "wb")  # noqa: SIM115 - closed in close()
        except FileExistsError:
            raise ConfigError(f"{self.path} already exists; choose another --out, or pass --overwrite") from None
        except OSError as exc:
            raise ConfigError(f"cannot write {self.path}: {exc.strerror}; choose a writable --out") from None
        self._writer = Writer(self._file, chunk_size=chunk_size)
        self._writer.start(profile="ros2", library=f"perception {__version__}; mcap-ros2-support {mcap_ros2_version}")
        self._cdr = MessageEncoding.CDR
        self._schemas: dict[str, int] = {}
        self._encoders = {}
        for name, msgdef in ((IMAGE_SCHEMA, IMAGE_MSGDEF), (STRING_SCHEMA, STRING_MSGDEF)):
            self._schemas[name] = self._writer.register_schema(name, SchemaEncoding.ROS2, msgdef.encode())
            self._encoders[name] = serialize_dynamic(name, msgdef)[name]
        self._channels: dict[tuple[str, str], int] = {}
        #: Per-topic figures; a dict shared by the splits of one recording gives the totals.
        self.counts: dict[str, TopicCount] = counts if counts is not None else {}
        self.messages = 0
        self._closed = False

    @property
    def size_bytes(self) -> int:
        """Bytes in the file so far (the chunk being filled is not counted until it is written)."""
        return self._file.tell()

    def _channel(self, topic: str, content: str, schema: str, header: dict) -> int:
        """The channel of a wire topic's ``content`` (``data`` or ``wire_header``), registered on first use."""
        key = (topic, content)
        if key not in self._channels:
            metadata = channel_metadata(topic, content, header)
            name = ros2_topic_name(topic) + (META_SUFFIX if content == CONTENT_HEADER else "")
            self._channels[key] = self._writer.register_channel(name, self._cdr, self._schemas[schema], metadata)
        return self._channels[key]

    def write(self, msg, *, count: bool = True) -> None:
        """Write one message (mask or JSON) and its wire header; ``count`` False for a latched
        message repeated at the start of a split (not counted again)."""
        header = msg.header
        common = {"log_time": msg.receive_ns, "publish_time": int(header["publish_ns"]), "sequence": int(header["seq"])}
        meta = self._channel(msg.topic, CONTENT_HEADER, STRING_SCHEMA, header)
        from perception.wire import dump_header, ros_image_fields

        if header["kind"] == contracts.KIND_MASK:

            image = ros_image_fields(header)
            image["encoding"] = ros_image_encoding(header)
            image["data"] = msg.data.tobytes()
            data = (self._channel(msg.topic, CONTENT_DATA, IMAGE_SCHEMA, header), IMAGE_SCHEMA, image)
        else:
            data = (self._channel(msg.topic, CONTENT_DATA, STRING_SCHEMA, header), STRING_SCHEMA,
                    {"data": json.dumps(msg.data)})
        # Encode both before writing either, so a message the encoder refuses leaves nothing behind.
        # The /meta channel holds the header exactly as the wire writes it (v2: nanoseconds as strings).
        records = [(meta, self._encoders[STRING_SCHEMA]({"data": dump_header(header).decode("utf-8")})),
                   (data[0], self._encoders[data[1]](data[2]))]
        for channel, payload in records:
            self._writer.add_message(channel, data=payload, **common)
        if count:
            self.counts.setdefault(msg.topic, TopicCount()).add(int(header["seq"]))
            self.messages += 1

    def close(self, metadata: dict[str, str] | None = None) -> None:
        """Write the metadata record and the summary, and close the file; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if metadata is not None:
                self._writer.add_metadata(METADATA_NAME, metadata)
            self._writer.finish()
        finally:
            self._file.close()


class SplitWriter:
    """The recorder's output: one ``McapMaskWriter`` at ``config.out``, or, with ``split_duration``
    / ``split_size``, a sequence of complete MCAP files ``<stem>_0.mcap``, ``<stem>_1.mcap``...

    Each split is finished (summary, index, metadata record) before the next is opened, so a
    recorder killed mid-run loses at most the open split, and ``perception recover`` rebuilds
    that one. A split ends at the first message after its duration has passed, or once the file
    has reached ``split_size`` MB; it can exceed the size by at most one chunk (``chunk_size``,
    at most ``chunk_size_kb`` and an eighth of the size limit). ``metadata`` is called when a split is closed.
    The latest message of each latched topic (``<ns>/info``) is written again at the start of
    every split, so each split alone holds the class table it needs (a replay of all the splits
    sends it once).

    Files of an earlier recording to the same ``out`` (``existing_outputs``) make it raise
    ConfigError before anything is written; with ``config.overwrite`` they are all removed first,
    so no old split is left to be replayed after the new ones.
    """

    def __init__(self, config: RecordConfig, metadata) -> None:
        if not config.overwrite:
            refuse_existing(config)
        else:
            for old in existing_outputs(config):
                try:
                    old.unlink()
                except OSError as exc:
                    raise ConfigError(f"cannot remove {old} for --overwrite: {exc.strerror}; remove it yourself") from None
        self._exclusive = not config.overwrite
        self.config = config
        self.counts: dict[str, TopicCount] = {}
        self.paths: list[Path] = []
        self._metadata = metadata
        self._latched: dict[str, object] = {}
        self._limit_bytes = None if config.split_size is None else int(config.split_size * 1e6)
        self._chunk_size = config.chunk_size_kb * 1024
        if self._limit_bytes is not None:
            self._chunk_size = max(4096, min(self._chunk_size, self._limit_bytes // 8))
        self._open()

    def _open(self) -> None:
        path = split_path(self.config.out, len(self.paths)) if self.config.splits else Path(self.config.out)
        self._writer = McapMaskWriter(path, chunk_size=self._chunk_size, counts=self.counts, exclusive=self._exclusive)
        self.paths.append(path)
        self._opened = time.monotonic()
        for msg in self._latched.values():
            self._writer.write(msg, count=False)

    def _full(self) -> bool:
        if self._writer.messages == 0:
            return False
        if self.config.split_duration is not None and time.monotonic() - self._opened >= self.config.split_duration:
            return True
        return self._limit_bytes is not None and self._writer.size_bytes >= self._limit_bytes

    def write(self, msg) -> None:
        """Write one message, first starting the next split when the open one is full."""
        if self.config.splits and self._full():
            self._writer.close(self._metadata(split=len(self.paths) - 1))
            self._open()
        self._writer.write(msg)
        if msg.topic.endswith(LATCHED_SUFFIXES):
            self._latched[msg.topic] = msg

    def close(self) -> None:
        """Finish the open file; idempotent."""
        self._writer.close(self._metadata(split=len(self.paths) - 1 if self.config.splits else None))


@dataclass
class RecordSummary:
    """What a recording run wrote, and what it received but skipped: ``skipped`` holds the
    subscriber's ``malformed`` / ``version_mismatch`` counts and ``write_errors`` (messages the
    MCAP writer refused)."""

    path: Path
    seconds: float
    counts: dict[str, TopicCount]
    skipped: dict[str, int] = field(default_factory=dict)
    #: The files written: ``[path]``, or the splits in order.
    files: list[Path] = field(default_factory=list)
    #: Where it subscribed, and the flag that chose the topics (for the hint when nothing came).
    endpoint: str = ""
    what_flag: str = "--namespace"

    @property
    def messages(self) -> int:
        return sum(c.messages for c in self.counts.values())

    def format(self) -> str:
        files = self.files or [self.path]
        where = str(files[0]) if len(files) == 1 else f"{len(files)} splits {files[0]} .. {files[-1]}"
        lines = [f"recorded {self.messages} messages in {self.seconds:.1f} s to {where}"]
        for topic, c in sorted(self.counts.items()):
            extra = f", {c.missing} missing" if c.missing else ""
            extra += f", {c.restarts} restarts" if c.restarts else ""
            lines.append(f"  {topic}: {c.messages} (seq {c.first_seq}..{c.last_seq}{extra})")
        bad = {k: v for k, v in self.skipped.items() if v}
        if bad:
            lines.append("  skipped: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in bad.items()))
        elif self.messages == 0:
            # Nothing arrived at all (not even a bad message): the hint 'perception listen' gives.
            lines.append(f"no messages received from {self.endpoint or 'the endpoint'}; is the node running? "
                         f"check --endpoint / {self.what_flag}")
        return "\n".join(lines)


class Recorder:
    """Subscribes per ``RecordConfig`` and writes everything it receives until stopped.

    Opening the output and the socket happens in ``__init__`` so that mistakes fail before
    anything runs (ConfigError for the output, or for files of an earlier recording there unless
    ``config.overwrite``; PublishError for the endpoint or keys). The socket is opened first, so a bad
    endpoint leaves no empty file behind to be refused next time.
    ``messages`` counts what has been written so far (readable from another thread).
    """

    def __init__(self, config: RecordConfig) -> None:
        from perception.subscribe import MaskSubscriber

        self.config = config
        self._started_utc = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.messages = 0
        self.write_errors = 0
        self._sub = MaskSubscriber(
            config.endpoint,
            topics=list(config.topic) or None,
            namespace=config.namespace,
            curve_server_key=config.curve_server_key,
            curve_key_file=config.curve_key,
            # Retry often: a node started after the recorder publishes as soon as it has bound,
            # and everything sent before this socket has connected is lost (PUB/SUB slow joiner).
            reconnect_ivl_ms=RECONNECT_MS,
            reconnect_ivl_max_ms=RECONNECT_MS,
            max_mask_pixels=config.max_mask_pixels,
        )
        try:
            self._writer = SplitWriter(config, self._metadata)
        except BaseException:
            self._sub.close()
            raise

    def run(self, stop: threading.Event) -> RecordSummary:
        """Record until ``stop`` is set or ``duration`` has passed; then finish the file."""
        t0 = time.monotonic()
        deadline = None if self.config.duration_s is None else t0 + self.config.duration_s
        try:
            while not stop.is_set():
                timeout = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                if timeout <= 0:
                    break
                msg = self._sub.recv(timeout_s=timeout)
                if msg is not None:
                    self._write(msg)
        finally:
            self._sub.close()
            self._writer.close()
        return RecordSummary(
            path=self.config.out, seconds=time.monotonic() - t0, counts=self._writer.counts, skipped=self.skipped(),
            files=list(self._writer.paths), endpoint=self.config.endpoint,
            what_flag="--namespace" if self.config.namespace else "--topic",
        )

    def _write(self, msg) -> None:
        """Write one message; one the writer refuses is counted and skipped, the recording goes on."""
        try:
            self._writer.write(msg)
        except (ValueError, TypeError, OverflowError, struct.error) as exc:
            self.write_errors += 1
            if self.write_errors in (1, 10, 100) or self.write_errors % 1000 == 0:  # rate-limited
                log.warning("could not record a %s message (seq %s): %s (%d so far)",
                            msg.topic, msg.seq, exc, self.write_errors)
            return
        self.messages += 1

    def skipped(self) -> dict[str, int]:
        """Messages received but not recorded: malformed, from another wire version, refused by the writer."""
        counters = self._sub.counters if self._sub is not None else None
        return {
            "malformed": counters.malformed if counters else 0,
            "version_mismatch": counters.version_mismatch if counters else 0,
            "write_errors": self.write_errors,
        }

    def _metadata(self, split: int | None = None) -> dict[str, str]:
        """The ``perception.recording`` record; counts are the recording's totals up to this file's end."""
        counts = {t: c.messages for t, c in self._writer.counts.items()}
        extra = {} if split is None else {"split_index": str(split)}
        return extra | {
            "endpoint": self.config.endpoint,
            "subscription": self.config.namespace or " ".join(self.config.topic),
            "started_utc": self._started_utc,
            "perception_version": __version__,
            "wire_version": str(contracts.WIRE_VERSION),
            "message_counts": json.dumps(counts, sort_keys=True),
            "skipped_counts": json.dumps(self.skipped(), sort_keys=True),
            "layout": (f"masks: {IMAGE_SCHEMA} (mono8: 0/255 masks; 8UC1: class ids, channel metadata "
                       f"{VALUES_KEY}=class_ids); JSON topics: {STRING_SCHEMA}; wire headers: <topic>{META_SUFFIX}; "
                       f"wire topic of each channel: channel metadata {WIRE_TOPIC_KEY}"),
        }
