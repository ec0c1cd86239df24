"""The mask publisher: a ZeroMQ XPUB socket that sends every frame's masks without ever blocking.

Each message is three frames ``[topic, header JSON, payload]`` (see ``perception/wire.py`` and
the README's "Wire format"). Topics are ``<namespace>/<mask>``, e.g. ``perception/front/lane``,
plus JSON documents such as ``perception/front/stats``.

Usage::

    pub = MaskPublisher(namespace="perception/front", encodings={"lane": "bitpack"})
    pub.publish_masks(seq=7, capture_ns=time.time_ns(), frame_id="front", masks={"lane": lane},
                      latency_ms={"infer": 4.1}, model_id="bisenetv2-camvid-360x480-fp32")
    pub.publish_json("stats", {"fps": 29.8})
    pub.close()

The socket is an XPUB: for subscribers exactly a PUB (same topics, same drop-at-HWM behaviour),
but it also hands the publisher each subscribe/unsubscribe, so it can count the subscriptions to
its namespace (``stats()["subscriptions"]``) and hold the first frame until a recorder has
subscribed (``wait_for_subscribers``; ``perception run --wait-subscribers N``). The socket itself
(setup, bind errors, subscription counting, the latched info, close) is the XPUB core in
``perception/xpub.py``, which the replay's publisher shares; this module adds what the live node
sends: topic plans and encodings, ``pub_seq``, headers, atomic frames and the info document.

The send limit (``sndhwm``, messages queued per subscriber) defaults to ``send_limit.AUTO_BURSTS`` bursts of
the node, a burst being one frame of every namespace on the socket (``burst``): the caller says at
construction how many namespaces it will add (``namespaces``), since ZeroMQ fixes a connection's
limit at the socket's bind (and changing it while connections close crashes libzmq 4.3.5). A subscriber whose queue is full loses the
messages sent then; ``XPUB_NODROP`` lets the publisher see each time that happens
(``hwm_overflows``, with a warning) instead of ZeroMQ dropping without a word.

Binding is localhost-only by default; another interface only when asked (a warning says the
data leaves the machine). ``curve_secret_key_file`` + ``curve_allow_dir`` turn on CURVE
encryption with a client allow-list (``perception/security.py``).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
import zmq

from perception import contracts
from perception.encoding import Codec, get_codec, topic_encoding_error
from perception.errors import ConfigError
from perception.options import CurveServerOptions, leading_slash_error
from perception.run_config import MAX_CAMERAS
from perception.send_limit import SendLimit, messages_per_frame
from perception.wire import (
    MaskGeometry,
    dump_header,
    frame_header,
    json_header,
    mask_header,
    values_for_topic,
)
from perception.xpub import XpubCore

__all__ = ["MaskPublisher", "PublishCounters"]

log = logging.getLogger(__name__)

@dataclass
class PublishCounters:
    """What the publisher did: messages and bytes handed to ZeroMQ, and sends that failed.

    Transport drops are not among them: a subscriber whose queue is full loses the messages sent
    then, and only that subscriber sees how many, as gaps in ``pub_seq`` (``perception listen``
    reports them as ``lost``), apart from the node's own keep-latest drops (gaps in ``seq`` only).
    The publisher sees each time a queue fills (``MaskPublisher.hwm_overflows``).
    """

    messages_sent: int = 0
    bytes_sent: int = 0
    send_errors: int = 0


@dataclass(frozen=True)
class _TopicPlan:
    topic: bytes
    codec: Codec
    values: str


def check_per_class_topic(namespace: str, name: str) -> None:
    """ConfigError when per-class mask ``name`` (``obstacle/<class>``) cannot make a topic that
    readers take under ``namespace``: a class of a model file exported before class tables refused
    such names (``contracts.class_name_error``), with ``/`` in it, or too long for this namespace.
    What a node checks as it declares its topics, and ``perception launch --check`` before it starts."""
    class_name = name[len(contracts.PER_CLASS_OBSTACLE_PREFIX):]
    problem = contracts.per_class_topic_error(namespace.rstrip("/"), class_name)
    if problem is not None:
        raise ConfigError(f"--per-class-obstacles: the model's obstacle class {class_name!r:.80} {problem}; "
                          "run without --per-class-obstacles, or rename the class in the dataset's classes.yaml, "
                          "train and export again")


class MaskPublisher:
    """Publishes mask and JSON messages on one XPUB socket; ``publish_*`` never block.

    Args:
        endpoint: where to bind (default ``tcp://127.0.0.1:5556``).
        namespace: topic prefix, normally ``perception/<camera name>``.
        encodings: mask topic -> payload encoding (``mono8``, ``bitpack``, ``rle``, ``png``);
            topics not named use ``contracts.DEFAULT_ENCODINGS``.
        curve_secret_key_file: the server's ``.key_secret``; turns on CURVE encryption.
        curve_allow_dir: directory of allowed client ``.key`` files (needs the secret key).
        atomic_frames: send all masks of a frame as one multipart message on
            ``<namespace>/frame`` (a subscriber gets all of them or none) instead of one message
            per mask topic.
        sndhwm: messages queued per subscriber before ZeroMQ drops for that subscriber; None
            (the default): ``send_limit.AUTO_BURSTS`` bursts of ``namespaces`` namespaces of the fixed topics
            (one frame of each: its 4 masks plus obstacles and stats; an atomic frame plus those
            two), e.g. 30 for one camera, 120 for four; see the comment in ``__init__``.
        namespaces: how many namespaces (cameras) this socket will carry, this one and those
            ``add_namespace`` adds, for the default ``sndhwm``.

    Raises:
        ConfigError: unknown topic or encoding, ``bitpack`` for ``class_map``, bad ``sndhwm``.
        PublishError: bad endpoint, address in use, missing or invalid key files.
    """

    def __init__(
        self,
        *,
        endpoint: str = contracts.DEFAULT_ENDPOINT,
        namespace: str,
        encodings: dict[str, str] | None = None,
        curve_secret_key_file: str | None = None,
        curve_allow_dir: str | None = None,
        sndhwm: int | None = None,
        atomic_frames: bool = False,
        namespaces: int = 1,
    ) -> None:
        if not isinstance(namespace, str) or not namespace.strip("/"):
            raise ConfigError(f"namespace {namespace!r} is empty; use e.g. perception/front")
        problem = leading_slash_error("namespace", namespace)
        if problem is not None:
            raise ConfigError(problem)
        problem = contracts.ros_namespace_error(namespace)
        if problem is not None:
            raise ConfigError(f"namespace {namespace!r} is not a ROS 2 namespace ({problem}); use e.g. perception/front")
        if sndhwm is not None and (not isinstance(sndhwm, int) or isinstance(sndhwm, bool) or sndhwm < 1):
            raise ConfigError(f"sndhwm={sndhwm!r} must be an integer >= 1")
        try:
            CurveServerOptions(curve_secret_key_file, curve_allow_dir)  # their rule, declared once
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        # Checked before the socket is made: a bad topic or encoding binds nothing.
        self._init_namespace(namespace, encodings or {}, atomic_frames)
        # The send limit is fixed here, at the bind (perception/send_limit.py says why and how large).
        if not isinstance(namespaces, int) or isinstance(namespaces, bool) or not 1 <= namespaces <= MAX_CAMERAS:
            raise ConfigError(f"namespaces={namespaces!r} must be an integer 1..{MAX_CAMERAS}")
        limit = SendLimit.for_node(sndhwm, atomic_frames=atomic_frames, namespaces=namespaces)
        self._core = XpubCore(endpoint, sndhwm=limit.value, see_full_queues=True,
                              curve_secret_key_file=curve_secret_key_file, curve_allow_dir=curve_allow_dir)
        self.endpoint = self._core.endpoint
        #: Every namespace published on this socket (``add_namespace``), this one first.
        self._namespaces: list[MaskPublisher] = [self]
        self._limit = limit
        with self._core.lock:
            self._track_locked()
        log.info("publishing %s/{%s} on %s", self.namespace, ",".join(self._plans), self.endpoint)

    def _init_namespace(self, namespace: str, encodings: dict[str, str], atomic_frames: bool) -> None:
        """The per-namespace state: topics and their encodings, pub_seq and JSON seq counters, the
        latched info document."""
        self.namespace = namespace.rstrip("/")
        self.atomic_frames = bool(atomic_frames)
        self._encodings = dict(encodings)
        self._frame_topic = contracts.topic_name(self.namespace, contracts.FRAME_TOPIC).encode("utf-8")
        self._wire_topics: dict[str, bytes] = {}
        self._plans = self._plan_topics(self._encodings)
        self.counters = PublishCounters()
        self._json_seq: dict[str, int] = {}
        #: The mask topics declared (``declare_topics``); None: the fixed ones.
        self._declared: tuple[str, ...] | None = None
        #: Sends of this namespace that met a full subscriber queue (``XpubCore.see_full_queues``).
        self.hwm_overflows = 0
        # pub_seq: per topic, the count of messages handed to the socket so far (contiguous).
        self._pub_seq: Counter[bytes] = Counter()
        self._namespace_prefix = (self.namespace + "/").encode("utf-8")
        # The latched <namespace>/info document (sent again to each new subscription, see set_info).
        self._info_topic = contracts.topic_name(self.namespace, contracts.INFO_TOPIC).encode("utf-8")
        self._info_payload: bytes | None = None

    def add_namespace(self, namespace: str) -> MaskPublisher:
        """A publisher for another camera on this one's socket (same endpoint, CURVE, HWM,
        encodings and atomic-frames setting): its own ``namespace`` with its own topics, pub_seq,
        JSON seq, latched info, counters and subscription count. Closing any of them closes the
        socket of all.

        Raises:
            ConfigError: ``namespace`` is not a ROS 2 namespace or already published here.
        """
        problem = leading_slash_error("namespace", namespace)
        if problem is not None:
            raise ConfigError(problem)
        problem = contracts.ros_namespace_error(namespace) if isinstance(namespace, str) else "it is not a string"
        if problem is not None:
            raise ConfigError(f"namespace {namespace!r} is not a ROS 2 namespace ({problem}); use e.g. perception/rear")
        if any(p.namespace == namespace.rstrip("/") for p in self._namespaces):
            raise ConfigError(f"namespace {namespace!r} is already published on {self.endpoint}; give each camera its own")
        sibling = object.__new__(MaskPublisher)
        sibling._init_namespace(namespace, self._encodings, self.atomic_frames)
        sibling._core, sibling.endpoint, sibling._namespaces = self._core, self.endpoint, self._namespaces
        sibling._limit = self._limit
        with self._core.lock:
            self._namespaces.append(sibling)
            sibling._track_locked()
        log.info("publishing %s/{%s} on %s", sibling.namespace, ",".join(sibling._plans), self.endpoint)
        return sibling

    def _track_locked(self) -> None:
        """Latch the info topic and have the core count the subscriptions to this namespace's
        topics (``subscriptions``, ``subscribed``): the topics it sends, the mask and JSON topics and
        any per-class ``obstacle/<class>`` until ``declare_topics`` names them; with atomic frames the
        JSON and frame topics, the frame topic carrying the masks (``XpubCore.carry``: a reader that
        asks for masks by name, and takes the frame topic for them, counts once per mask)."""
        self._core.latch(self._info_topic, self._resend_info_locked)
        names = contracts.JSON_TOPICS + ((contracts.FRAME_TOPIC,) if self.atomic_frames else contracts.MASK_TOPICS)
        for name in names:
            self._core.track(contracts.topic_name(self.namespace, name).encode("utf-8"), self._namespace_prefix)
        if self.atomic_frames:
            self._carry_locked(contracts.MASK_TOPICS, family=self._per_class_prefix)
        else:
            self._core.counts.track_family(self._per_class_prefix, self._namespace_prefix)

    def _carry_locked(self, names, *, family: bytes | None) -> None:
        """Atomic frames: the frame topic carries the masks ``names`` (and, before ``declare_topics``,
        any per-class one under ``family``)."""
        carried = [contracts.topic_name(self.namespace, name).encode("utf-8") for name in names]
        self._core.counts.carry(self._namespace_prefix, self._frame_topic, carried, family)

    # ------------------------------------------------------------------ the send limit

    def _messages_per_frame(self) -> int:
        """The messages one frame of this namespace makes at most: every mask topic declared (the
        fixed four before ``declare_topics``) plus obstacles and stats; an atomic frame is one
        message plus those two."""
        if self._declared is None:
            return messages_per_frame(atomic_frames=self.atomic_frames)
        return messages_per_frame(atomic_frames=self.atomic_frames, mask_topics=len(self._declared))

    @property
    def burst(self) -> int:
        """The messages one frame of every namespace on this socket makes at most: what the node
        sends back to back when a batch of its cameras' frames is published."""
        return sum(ns._messages_per_frame() for ns in self._namespaces)

    @property
    def sndhwm(self) -> int:
        """The send limit every connection has (fixed at the bind)."""
        return self._limit.value

    def _warn_limit(self) -> None:
        """At the first frame: a limit below two bursts of the node as it runs (``SendLimit.warn_once``)."""
        self._limit.warn_once(self.burst, len(self._namespaces))

    @property
    def _per_class_prefix(self) -> bytes:
        return contracts.topic_name(self.namespace, contracts.PER_CLASS_OBSTACLE_PREFIX).encode("utf-8")

    def declare_topics(self, names) -> None:
        """Name the mask topics this namespace will publish (``MaskStage``'s ``masks.topics``, per-class
        ``obstacle/<class>`` included), so that a subscription to a per-class topic it does not
        publish (another class) is not counted in ``subscriptions`` nor by ``wait_for_subscribers``.
        Before this call any ``obstacle/<class>`` counts. (``subscribed`` answers for any name.)

        Raises:
            ConfigError: a per-class name that cannot make a topic (``_check_per_class``).
        """
        for name in names:
            if name.startswith(contracts.PER_CLASS_OBSTACLE_PREFIX):
                self._check_per_class(name)
        with self._core.lock:
            if self.atomic_frames:  # sent in the frame topic only
                self._carry_locked(names, family=None)
            else:
                for name in names:
                    self._core.track(contracts.topic_name(self.namespace, name).encode("utf-8"), self._namespace_prefix)
                self._core.counts.untrack_family(self._per_class_prefix)
            self._declared = tuple(names)
        if any(name not in self._plans for name in names):  # the start line named the fixed topics only
            log.info("publishing %s/{%s} on %s", self.namespace, ",".join(names), self.endpoint)

    def _plan_topics(self, encodings: dict[str, str]) -> dict[str, _TopicPlan]:
        unknown = [name for name in encodings if name not in contracts.MASK_TOPICS]
        if unknown:
            raise ConfigError(f"unknown mask topic {unknown[0]!r} in encodings; known: {', '.join(contracts.MASK_TOPICS)}")
        plans = {}
        for name in contracts.MASK_TOPICS:
            codec = get_codec(encodings.get(name, contracts.DEFAULT_ENCODINGS[name]))
            values = values_for_topic(name)
            if (problem := topic_encoding_error(name, codec.name)) is not None:
                raise ConfigError(problem)
            topic = contracts.topic_name(self.namespace, name).encode("utf-8")
            plans[name] = _TopicPlan(topic=topic, codec=codec, values=values)
        return plans

    def _plan_per_class(self, name: str) -> _TopicPlan:
        """The plan of a per-class obstacle mask (``obstacle/<class>``), made on its first frame:
        the ``obstacle`` topic's encoding under ``<namespace>/obstacle/<class>``."""
        class_name = name[len(contracts.PER_CLASS_OBSTACLE_PREFIX):]
        if not name.startswith(contracts.PER_CLASS_OBSTACLE_PREFIX) or not class_name or "/" in class_name:
            # A caller bug: a node declares its topics first (``declare_topics``), which refuses such a class.
            raise ValueError(
                f"unknown mask topic {name!r}; known: {', '.join(contracts.MASK_TOPICS)} "
                f"and {contracts.PER_CLASS_OBSTACLE_PREFIX}<class>"
            )
        self._check_per_class(name)
        plan = _TopicPlan(
            topic=contracts.topic_name(self.namespace, name).encode("utf-8"),
            codec=self._plans["obstacle"].codec,
            values=contracts.VALUES_BINARY,
        )
        self._plans[name] = plan
        return plan

    def _check_per_class(self, name: str) -> None:
        """``check_per_class_topic`` under this namespace."""
        check_per_class_topic(self.namespace, name)

    def publish_masks(
        self,
        *,
        seq: int,
        capture_ns: int,
        frame_id: str,
        masks: dict[str, np.ndarray],
        latency_ms: dict[str, float],
        model_id: str,
        geometry: MaskGeometry | None = None,
    ) -> None:
        """Encode and send one frame's masks, one message per mask topic; never blocks.

        ``capture_ns`` is the capture time in nanoseconds since the UNIX epoch (``time.time_ns()``),
        so a subscriber on another process can compute capture-to-receive latency. Each header's
        ``latency_ms`` is the caller's stages plus ``encode`` (this payload) and ``publish`` (from
        this call's start to this message's send, so it includes earlier topics of the frame).

        ``masks`` keys are ``contracts.MASK_TOPICS`` or per-class obstacle masks ``obstacle/<class>``
        (sent in the ``obstacle`` encoding). Raises ValueError for another name or a mask that is not
        2-D uint8 (caller bugs). Transport trouble is counted in ``counters``, never raised.

        ``geometry`` says how the masks map onto the camera frame (source size, region of
        interest); None means they cover the whole frame at their own size. Each message's
        ``pub_seq`` counts the messages of its topic, so gaps in it are transport losses while
        gaps in ``seq`` alone are frames the node itself dropped.
        """
        start = time.perf_counter()
        if not self._limit.warned:
            self._warn_limit()
        parts: list[bytes] = []
        for name, mask in masks.items():
            plan = self._plans.get(name) or self._plan_per_class(name)
            t0 = time.perf_counter()
            payload = plan.codec.encode(mask)
            t1 = time.perf_counter()
            stages = dict(latency_ms)
            stages["encode"] = (t1 - t0) * 1e3
            stages["publish"] = (t1 - start) * 1e3
            header = mask_header(
                height=mask.shape[0],
                width=mask.shape[1],
                compression=plan.codec.compression,
                values=plan.values,
                seq=seq,
                pub_seq=self._pub_seq[self._frame_topic] if self.atomic_frames else self._next_pub_seq(plan.topic),
                capture_ns=capture_ns,
                publish_ns=time.time_ns(),
                frame_id=frame_id,
                model_id=model_id,
                latency_ms=stages,
                geometry=geometry,
            )
            if self.atomic_frames:
                parts += [dump_header(header), payload]
            else:
                self._send(plan.topic, dump_header(header), payload)
        if self.atomic_frames and parts:
            # One multipart message: ZeroMQ delivers all of its parts or none.
            header = frame_header(seq=seq, pub_seq=self._next_pub_seq(self._frame_topic), capture_ns=capture_ns,
                                  publish_ns=time.time_ns(), frame_id=frame_id, masks=list(masks))
            self._send(self._frame_topic, dump_header(header), *parts)

    def _next_pub_seq(self, topic: bytes) -> int:
        seq = self._pub_seq[topic]
        self._pub_seq[topic] = seq + 1
        return seq

    def publish_json(self, name: str, doc: dict) -> None:
        """Send a JSON document on ``<namespace>/<name>`` (e.g. ``stats``, ``obstacles``); never blocks.

        The header carries a per-name ``seq`` counting from 0. Raises TypeError/ValueError when
        ``doc`` is not JSON-serialisable (a caller bug).
        """
        payload = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")
        with self._core.lock:
            self._send_json_locked(name, payload)

    def _send_json_locked(self, name: str, payload: bytes) -> None:
        seq = self._json_seq.get(name, 0)
        self._json_seq[name] = seq + 1
        header = json_header(name=name, seq=seq, publish_ns=time.time_ns())
        self._send_locked(contracts.topic_name(self.namespace, name).encode("utf-8"), dump_header(header), payload)

    def topic_encodings(self, names) -> dict[str, dict[str, str]]:
        """``{topic: {"kind", "encoding", "compression", "values"}}`` for the mask ``names``
        (including per-class ``obstacle/<class>``), as they will be sent, plus the JSON topics
        (``{"kind": "json", "encoding": "json"}``)."""
        out = {}
        for name in names:
            plan = self._plans.get(name) or self._plan_per_class(name)
            out[plan.topic.decode("utf-8")] = {
                "kind": contracts.KIND_MASK, "encoding": plan.codec.name, "compression": plan.codec.compression,
                "values": plan.values,
                # With atomic frames a mask travels only inside the frame topic's messages.
                **({"in": self._frame_topic.decode("utf-8")} if self.atomic_frames else {}),
            }
        for name in contracts.JSON_TOPICS:
            out[contracts.topic_name(self.namespace, name)] = {"kind": contracts.KIND_JSON, "encoding": "json"}
        if self.atomic_frames:  # the masks above travel inside this topic's messages, not on their own
            # The masks a frame may hold (all of them while anything subscribes to <ns>/frame); each frame header's
            # ``masks`` names that frame's parts in their order.
            out[self._frame_topic.decode("utf-8")] = {"kind": contracts.KIND_FRAME, "masks": list(names)}
        return out

    def set_info(self, doc: dict) -> None:
        """Latch ``doc`` (the node's description: class table, geometry, encodings; see
        ``Pipeline.info``) on ``<namespace>/info``.

        It is sent now when it differs from the latched one, and again each time a subscription
        that receives the info topic reaches the publisher (XPUB reports it), so a subscriber
        that joins late still gets it first thing. Raises TypeError/ValueError for a document that
        is not JSON-serialisable (a caller bug)."""
        payload = json.dumps(doc, separators=(",", ":"), allow_nan=False, sort_keys=True).encode("utf-8")
        with self._core.lock:
            if payload == self._info_payload:
                return
            self._info_payload = payload
            self._send_json_locked(contracts.INFO_TOPIC, payload)

    @property
    def info(self) -> dict | None:
        """The latched info document (None before ``set_info``)."""
        return None if self._info_payload is None else json.loads(self._info_payload)

    def _resend_info_locked(self) -> None:
        """The latched info again, for a subscription that just arrived (the core holds the lock)."""
        if self._info_payload is not None:
            self._send_json_locked(contracts.INFO_TOPIC, self._info_payload)

    def _send(self, topic: bytes, *frames: bytes) -> None:
        with self._core.lock:
            self._send_locked(topic, *frames)

    def _send_locked(self, topic: bytes, *frames: bytes) -> None:
        """Send ``[topic, *frames]`` (a header and a payload, or an atomic frame's parts); never
        blocks: a subscriber whose queue is full loses it instead, counted (``XpubCore``'s
        ``see_full_queues``) and warned about (``SendLimit.overflowed``)."""
        full_before = self._core.full_queue_sends
        try:
            if not self._core.send_locked(topic, *frames):
                return  # closed
        except zmq.ZMQError as exc:
            self.counters.send_errors += 1
            if self.counters.send_errors in (1, 10, 100) or self.counters.send_errors % 1000 == 0:
                log.warning("send on %s failed (%s); %d failures so far", topic.decode(), exc, self.counters.send_errors)
            return
        if self._core.full_queue_sends != full_before:
            self.hwm_overflows += 1
            self._limit.overflowed(self._core.full_queue_sends, self.burst)
        self.counters.messages_sent += 1
        self.counters.bytes_sent += len(topic) + sum(len(frame) for frame in frames)

    def wait_for_subscribers(self, count: int, *, timeout_s: float) -> bool:
        """Wait until ``count`` subscriptions to this namespace are live, at most ``timeout_s``.

        A subscriber counts once per prefix it subscribes to: a recorder or ``listen --namespace``
        once, ``listen --topic`` once per topic (with atomic frames once per mask it takes from
        ``<ns>/frame``: ``_track_locked``); a prefix that receives none of the namespace's topics
        (``<ns>/x``, ``<ns>/frame`` without atomic frames, a per-class topic not declared) not at all. A
        subscription that has reached the publisher receives every message sent after it, so the
        first frame is not lost to the slow joiner.
        Holds the socket for at most 10 ms at a time (call it before publishing, not alongside).

        Returns True when enough subscriptions are live, False on the timeout or once closed.
        """
        if not self._limit.warned:
            self._warn_limit()
        return self._core.wait_for_subscriptions(count, timeout_s=timeout_s, prefix=self._namespace_prefix)

    def subscribed(self, names) -> set[str]:
        """Which of ``names`` (mask topics such as ``lane``, ``obstacle/car``, or JSON names such as
        ``obstacles``) a live subscription receives. Pending subscribe/unsubscribe messages are read
        first, so the answer is ZeroMQ's own delivery filter at this moment: a name not in the set
        would be sent to nobody, and the node can skip computing it. The core keeps a count of
        live subscriptions per topic, so this costs one look-up per name, whatever the subscribers
        subscribed to (hunt s34: one client's million prefixes made it 4 s a frame). While a flood
        of subscribe messages is still being read (a read takes at most ``READ_BATCH``), every name
        is: a subscriber whose subscription waits behind the flood gets its masks meanwhile."""
        with self._core.lock:
            if self._core.closed:
                return set()
            if not self._core.read_subscriptions_locked():
                return set(names)
            return {n for n in names if self._core.receivers_locked(self._wire_topic_locked(n))}

    def _wire_topic_locked(self, name: str) -> bytes:
        """The topic bytes ``name`` goes out on, built (and tracked by the core) once per name
        (``subscribed`` asks every frame). Atomic frames: every mask goes out in <namespace>/frame,
        so it is wanted when that is."""
        topic = self._wire_topics.get(name)
        if topic is None:
            topic = (self._frame_topic if self.atomic_frames and name not in contracts.JSON_TOPICS
                     else contracts.topic_name(self.namespace, name).encode("utf-8"))
            self._core.track(topic)  # counted per topic; the namespace's count is its declared topics
            self._wire_topics[name] = topic
        return topic

    def connected_readers(self) -> int:
        """Connections holding a live subscription, whatever it receives: a ``--wait-subscribers``
        that timed out names readers whose topics this node does not send (a mistyped ``--topic``)."""
        with self._core.lock:
            return self._core.counts.connections

    def stats(self) -> dict[str, int]:
        """The ``publisher`` block of the stats document (``contracts.PUBLISHER_STATS``): the
        counters plus ``subscriptions`` (live subscriptions that receive one of this namespace's
        topics, see ``wait_for_subscribers``) and
        ``curve_rejections`` (handshakes the allow-list refused) and ``curve_disconnects``
        (connected clients cut when their key left the allow-list), and ``hwm_overflows``."""
        # Subscriptions first: reading them may resend the latched info, which the counters then hold.
        subscriptions = self._core.subscriptions(self._namespace_prefix)
        return {**asdict(self.counters), "hwm_overflows": self.hwm_overflows, "subscriptions": subscriptions,
                "curve_rejections": self._core.curve_rejections, "curve_disconnects": self._core.curve_disconnects}

    def close(self, *, flush_s: float = 0.0) -> None:
        """Close the socket (of every namespace on it); idempotent.

        ``flush_s`` bounds how long messages still queued may take to go out (ZeroMQ's linger):
        returns as soon as they are sent, or after ``flush_s`` with the rest dropped (a dead
        subscriber cannot hold the node). 0 drops them at once (stopping on a signal).
        """
        self._core.close(flush_s=flush_s)

    def __enter__(self) -> MaskPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
