"""The subscriber client: receive and decode mask and JSON messages from a perception node.

Usage::

    from perception.subscribe import MaskSubscriber
    with MaskSubscriber("tcp://127.0.0.1:5556", namespace="perception/front", masks=["lane"]) as sub:
        msg = sub.recv(timeout_s=1.0)          # Message or None after the timeout
        if msg is not None:
            print(msg.topic, msg.seq, msg.data.shape)

``keep_latest=True`` drains everything that is queued on each ``recv`` and keeps only the newest
message per topic, returned with the topics taking turns (ZMQ_CONFLATE cannot do this: it does not
support multipart messages).

One subscriber may be shared by threads (``recv`` and ``close`` take a lock); asyncio runs
``recv`` in an executor (``await loop.run_in_executor(None, sub.recv, 0.5)``); a forked child
creates its own. See ``MaskSubscriber``.

Reconnection is ZeroMQ's own: a SUB socket keeps trying to reach the publisher, every
``reconnect_ivl_ms`` at first and backing off to ``reconnect_ivl_max_ms``, and resends its
subscriptions when the publisher comes back, so a restarted node is picked up without any action
here (its ``seq`` then starts again). One case ZeroMQ does not reconnect: a publisher that sends a
frame larger than ``max_frame_bytes`` (``ZMQ_MAXMSGSIZE``) is cut off for good, as after any
protocol error. A socket monitor sees that (a connection dropped with no reconnect to follow), and
the subscriber connects again itself, with a rate-limited warning naming the endpoint and the
limit, counted in ``counters.reconnects``.

Memory for what arrives before it is read is bounded by ``max_queue_mb`` (``subscribe_decode.rcvhwm_for``): ZeroMQ
counts its receive queue (``ZMQ_RCVHWM``) in whole messages, whatever their size, so the queue gets
``max(1, max_queue_mb MiB // max_frame_bytes)`` of them; a full queue makes ZeroMQ stop reading the
connection (TCP pushes back to the publisher, which drops at its own high-water mark), it drops
nothing here. ``keep_latest`` stops a drain once it holds that many bytes too.

Every received message is untrusted: the topic, the header (bounded JSON, every field against the
schema in ``perception/contracts.py``) and the payload (its size against the declared geometry,
the declared geometry against ``max_mask_pixels``, before anything is allocated) are checked.
Messages that are not valid (wrong frame count, bad or hostile JSON, a payload that does not match
its header, a decode bomb), messages from another wire version and messages of a kind or
compression this reader does not know (from a newer publisher) are counted in ``counters`` and
skipped, never raised; the 1st, 10th, 100th and every 1000th of each kind is logged with the reason
(received text in it escaped, ``wire.printable``).

Topics come from the network too, and every topic costs whoever reads the messages some state (a
line of figures in ``listen``, a folder of ``--save-dir``, a channel of ``record``, a class table):
the subscriber keeps track of at most ``max_topics`` distinct topics (default 256), those of the
messages it returns (an atomic frame's masks each on its own topic) in the order they first came,
``<namespace>/info`` counted from the start when a namespace is given. A valid message on one topic
more is skipped and counted (``counters.over_max_topics``), the first one with a warning. The C and
JavaScript readers follow the same rule (``--max-topics``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import socket
import threading
import time
from collections import deque
from dataclasses import asdict
from typing import Any

import zmq

from perception import contracts
from perception.config import short
from perception.encoding import DecodeError, MaskOverLimit
from perception.endpoints import check_endpoint, is_ipv6_literal
from perception.errors import ConfigError, PerceptionError, PublishError
from perception.options import DEFAULT_MAX_QUEUE_MB, DEFAULT_MAX_TOPICS, MAX_TOPICS
from perception.subscribe_decode import (
    Message,
    NewerPublisherError,
    SubscribeCounters,
    checked_rcvhwm,
    decode_message,
    frames_nbytes,
    max_frame_bytes,
)
from perception.subscribe_monitor import _MONITOR_EVENTS, _RECONNECT_GRACE_S, Connections
from perception.subscribe_monitor import (
    handshake_failure_text as handshake_failure_text,  # importable from here too
)
from perception.subscribe_topics import subscriptions
from perception.subscribe_unasked import Unasked
from perception.wire import (
    WireError,
    WireVersionError,
    printable,
)
from perception.zmq_context import new_context

log = logging.getLogger(__name__)

# Upper bound on messages taken off the socket in one keep-latest drain, so a publisher that is
# faster than this reader cannot keep recv() from returning.
_MAX_DRAIN = 10_000
# A keep-latest drain that found ZeroMQ's receive queue empty waits a little for more before it
# stops: ZeroMQ refills that queue (3 messages at the default max_mask_pixels) from the network
# only once it is read, in its I/O thread, some microseconds to a few ms later (measured on a loaded
# 2-core box: median 15-150 us, at worst 2-6 ms), so a drain that stopped at the first empty look
# left all but 3-4 messages in the socket buffers and returned masks seconds old. The wait is a
# tenth of the time the caller was away since the previous recv returned, at most
# _DRAIN_WAIT_MAX_S (a longer absence leaves a longer backlog, worth a longer wait on a loaded
# machine), and none below _DRAIN_WAIT_MIN_S: a reader that comes back at once (``listen
# --keep-latest``) has no backlog to wait for, and takes what comes as it comes.
_DRAIN_WAIT_MIN_S = 0.001
_DRAIN_WAIT_MAX_S = 0.01
# A keep-latest drain waits at most as long as the caller was away, and at most this long: a
# backlog piles up only while the reader is away, and takes far less time to drain than to pile
# up, so a stream that never pauses does not hold up a reader for long either.
_DRAIN_MAX_S = 0.25
# recv polls in slices of at most this long (ZeroMQ's poll takes whole milliseconds in an int).
_POLL_SLICE_S = 1.0
class SubscriberClosedError(PerceptionError):
    """``recv`` on a closed ``MaskSubscriber``: called after ``close()``, or blocked in another
    thread when ``close()`` was called (a worker thread ends its loop on it)."""


class SubscriberForkError(PerceptionError):
    """A ``MaskSubscriber`` used in a process forked from the one that created it: its ZeroMQ
    sockets and I/O thread belong to the parent (ZeroMQ does not survive a fork)."""


_CLOSED = "the MaskSubscriber is closed (close() was called); create a new one to receive again"


def _deadline(timeout_s: float | None) -> float | None:
    """The monotonic time ``recv`` waits until, None for no limit (``None`` or ``inf``); a
    ConfigError for what is no number of seconds (a string, a bool, NaN)."""
    if timeout_s is None:
        return None
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, numbers.Real) or math.isnan(timeout_s):
        raise ConfigError(f"timeout_s={short(timeout_s)} must be a number of seconds, or None to wait until a "
                          "message comes")
    if timeout_s == math.inf:
        return None
    return time.monotonic() + max(0.0, float(timeout_s))


class MaskSubscriber:
    """A SUB socket connected to a perception node, returning decoded ``Message`` objects.

    Args:
        endpoint: the publisher's endpoint (default ``tcp://127.0.0.1:5556``).
        topics: a list of exact topic names to receive (``["perception/front/lane"]``); or
        namespace: receive ``<namespace>/<mask>`` for each of ``masks`` (all topics of the
            namespace when ``masks`` is None). With neither, every topic is received. Wire
            topics have no leading ``/`` (``perception/front``, not ``/perception/front``).
        masks: a list of names of a node's topics under ``namespace``: ``drivable``, ``lane``,
            ``obstacle``, ``class_map``, ``obstacle/<class>``, ``obstacles``, ``stats``, ``info``,
            ``frame`` (another name is a ConfigError; any topic can be asked for by its exact name
            in ``topics``). A single string is refused, not taken as a list of its characters.
        keep_latest: on each ``recv`` drain the socket and keep only the newest message per topic;
            ``recv`` returns one of them, the topics taking turns: the pending topic that has
            waited longest comes first (a topic returned goes to the back of the line when its
            next message comes), so every topic of a stream is returned to a slow reader, each
            with its newest message. When the caller was away (since the previous ``recv``
            returned), the drain goes past ZeroMQ's short receive queue, which ZeroMQ refills from
            the network only as it is read: after an empty look it waits a tenth of that absence
            (1 to 10 ms) for more, and waits at most as long as the absence, 0.25 s at most. A
            reader that comes back at once (within 10 ms) does not wait.
        curve_server_key: the publisher's public ``.key`` file (CURVE); needs ``curve_key_file``.
        curve_key_file: this client's ``.key_secret`` file; its public key must be in the
            publisher's allow-list.
        max_queue_mb: MiB of received messages ZeroMQ may queue before ``recv`` takes them (1 to
            65536): the receive queue gets ``rcvhwm_for(max_mask_pixels, max_queue_mb)`` messages.
        rcvhwm: a shorter receive queue, in messages (default: the one above); more than that
            is a ConfigError. A full queue drops nothing: ZeroMQ stops reading the connection.
        reconnect_ivl_ms / reconnect_ivl_max_ms: ZeroMQ reconnect interval and its back-off cap.
            The cap is 250 ms (ZeroMQ would back off further): a client started before its node
            then misses at most about a quarter of a second of it, for one connect attempt per
            250 ms while the node is away.
        max_mask_pixels: largest decoded mask accepted (height * width); bigger ones are skipped
            as malformed before anything is allocated. Frames larger than any valid message of such
            masks holds (``max_frame_bytes``) are refused by ZeroMQ itself (``ZMQ_MAXMSGSIZE``: it
            drops the connection; the subscriber connects again, with a warning).
        split_frames: an atomic frame message (``perception run --atomic-frames``) is returned
            as its mask messages, one per ``recv``, each on its own topic (so consumers of
            per-topic masks work unchanged; all masks of the frame arrived or none did). False
            returns it whole: ``kind == "frame"``, ``data`` a dict of mask name -> ``Message``.
            With ``namespace`` and ``masks``, or exact mask ``topics``, ``<namespace>/frame`` is
            subscribed too, and only the asked-for masks of a frame are returned.
        max_topics: distinct topics kept track of (1 to 65536): those of the messages returned, in
            the order they first came, ``<namespace>/info`` from the start when ``namespace`` is
            given. A valid message on a topic past them is skipped, counted in
            ``counters.over_max_topics`` and, the first time, warned about; ``infos`` holds the
            info documents of tracked topics only.

    Attributes:
        info: the latest ``<namespace>/info`` document (a dict: class table, unknown id, topics,
            encodings...), None until one arrives. With ``namespace`` the info topic is always
            subscribed, also when only some ``masks`` are asked for (then info messages update
            ``info`` without being returned); with exact ``topics`` only when its topic is
            among them.
        infos: each info document received, by topic (several nodes' namespaces).
        counters: a ``SubscribeCounters`` (received, malformed, version_mismatch, superseded,
            reconnects, over_max_topics); ``stats()`` gives them as a dict.
        last_error: the reason the latest skipped message was skipped (None before any).
        last_version_error: the reason of the latest one skipped for another wire version or a kind
            or compression this reader does not know (``version_mismatch``), naming the fix.
        rcvhwm, max_frame_bytes, max_queue_bytes: the receive queue and frame limits in force.
        closed: True once ``close()`` was called.

    Threads, asyncio and processes: one subscriber may be shared by threads. ``recv`` and
    ``close`` take a lock, so calls from several threads take turns (each message goes to one of
    them; a ``recv`` waiting for the lock counts that wait in its ``timeout_s``). ``close()`` from
    another thread wakes a ``recv`` blocked there at once, which raises ``SubscriberClosedError``,
    as does any ``recv`` after ``close()``. ``info``, ``infos``, ``counters``, ``last_error`` and
    ``stats()`` may be read from any thread. In asyncio, run ``recv`` in an executor, which
    keeps the event loop running::

        msg = await asyncio.get_running_loop().run_in_executor(None, sub.recv, 0.5)

    A call that ``asyncio.wait_for`` gave up on goes on in its thread until its own timeout, the
    next call waiting for it, and a message it returns is lost: give ``recv`` the timeout rather
    than wrapping it in ``wait_for``. A subscriber cannot be used after ``os.fork()`` (nor in a
    ``multiprocessing`` child started by fork): ``recv`` there raises ``SubscriberForkError``;
    create one in the child (``close()`` or dropping the parent's copy there is harmless).
    The class is not iterable: call ``recv`` in a loop.

    Raises:
        ConfigError: conflicting topic arguments, ``topics`` or ``masks`` given as one string, a
            mask name that is none of a node's, a ``namespace`` with a leading ``/``, half a CURVE
            configuration, a queue over the budget (``max_queue_mb`` out of range, ``rcvhwm`` over
            what it allows), or ``max_topics`` out of range.
        PublishError: bad endpoint or key files.
    """

    def __init__(
        self,
        endpoint: str = contracts.DEFAULT_ENDPOINT,
        *,
        topics: list[str] | None = None,
        namespace: str | None = None,
        masks: list[str] | None = None,
        keep_latest: bool = False,
        curve_server_key: str | None = None,
        curve_key_file: str | None = None,
        max_queue_mb: int = DEFAULT_MAX_QUEUE_MB,
        rcvhwm: int | None = None,
        reconnect_ivl_ms: int = 100,
        reconnect_ivl_max_ms: int = 250,
        max_mask_pixels: int = contracts.MAX_MASK_PIXELS,
        split_frames: bool = True,
        max_topics: int = DEFAULT_MAX_TOPICS,
    ) -> None:
        # Each mistake that would subscribe to nothing the node sends, without a word, is refused.
        wanted = subscriptions(topics, namespace, masks)
        if (curve_server_key is None) != (curve_key_file is None):
            raise ConfigError(  # the keyword arguments, and the flags of listen, record and view that give them
                "CURVE needs both curve_server_key (--curve-server-key: the node's .key) and curve_key_file "
                "(--curve-key: this client's .key_secret)"
            )
        if isinstance(max_topics, bool) or not isinstance(max_topics, int) or not 1 <= max_topics <= MAX_TOPICS:
            raise ConfigError(f"max_topics={max_topics!r} must be a whole number of topics in 1..{MAX_TOPICS}")
        host = check_endpoint(endpoint, connect=True)  # '*' is for a node's bind: refused, naming the fix
        #: The latest ``<namespace>/info`` document received (None until one arrives), and each
        #: one by topic. With ``namespace`` the info topic is always subscribed, also when only some
        #: ``masks`` are asked for (then info messages update these without being returned).
        self.info: dict[str, Any] | None = None
        self.infos: dict[str, dict[str, Any]] = {}
        self._info_topics = wanted.info_topics
        # A node with --atomic-frames sends mask <ns>/X inside <ns>/frame: subscribed too, only
        # the asked-for masks of each frame kept.
        self._frame_topics = wanted.frame_topics
        self.split_frames = split_frames
        self._split: deque[Message] = deque()  # the rest of a split atomic frame
        #: The exact topics asked for; None for a prefix subscription (everything under the
        #: namespace, or everything).
        self.topics: list[str] | None = wanted.topics
        self.endpoint = endpoint
        self.keep_latest = keep_latest
        if isinstance(max_mask_pixels, bool) or not isinstance(max_mask_pixels, int) or max_mask_pixels < 1:
            raise ConfigError(f"max_mask_pixels {short(max_mask_pixels)} must be a whole number >= 1")
        self.max_mask_pixels = max_mask_pixels
        self.counters = SubscribeCounters()
        self.unasked = Unasked()  # messages dropped as not asked for (subscribe_unasked), from any thread
        self.last_error: str | None = None
        self.last_version_error: str | None = None
        self.max_topics = max_topics
        #: The topics kept track of (``_track``): the node's info topic first, when there is a namespace.
        self._tracked: set[str] = {contracts.topic_name(namespace, contracts.INFO_TOPIC)} if namespace else set()
        self._exact = set(self.topics) if self.topics is not None else None
        self._pending: dict[str, list[zmq.Frame]] = {}
        self._pending_bytes = 0  # the size of the messages in _pending
        self.max_frame_bytes = max_frame_bytes(max_mask_pixels)
        #: The receive queue in messages and its budget in bytes (``rcvhwm_for``).
        self.rcvhwm = checked_rcvhwm(max_mask_pixels, max_queue_mb, rcvhwm)
        self.max_queue_bytes = max_queue_mb * 2**20
        # What the socket monitor said of the connections (see _watch_connections).
        self._connections = Connections(curve=curve_server_key is not None)
        # recv and close take the lock (ZeroMQ sockets must not be used by two threads at once:
        # libzmq asserts and aborts the process); close() first sets _closed and writes a byte to
        # _wake, which a recv blocked in another thread polls too, so that it lets go of the lock
        # at once. Reentrant: a signal handler may close the subscriber its thread is reading.
        self._lock = threading.RLock()
        self._closed = False
        self._pid = os.getpid()  # ZeroMQ does not survive a fork: recv in a child refuses
        self._returned_at = time.monotonic()  # when recv last returned, and how long the caller was
        self._away_s = 0.0  # away from recv before this call (the keep-latest drain's budget)
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._context = new_context("the subscriber", monitor=True)
        self._socket = self._context.socket(zmq.SUB)
        self._monitor: zmq.Socket | None = None
        try:
            self._socket.linger = 0
            self._socket.rcvhwm = self.rcvhwm
            self._socket.reconnect_ivl = reconnect_ivl_ms
            self._socket.reconnect_ivl_max = reconnect_ivl_max_ms
            self._socket.maxmsgsize = self.max_frame_bytes
            self._monitor = self._socket.get_monitor_socket(_MONITOR_EVENTS)
            self._monitor.linger = 0
            self._poller = zmq.Poller()
            self._poller.register(self._socket, zmq.POLLIN)
            self._poller.register(self._monitor, zmq.POLLIN)
            self._wake = socket.socketpair()
            for end in self._wake:
                end.setblocking(False)
            self._poller.register(self._wake[0], zmq.POLLIN)
            if is_ipv6_literal(host):
                self._socket.ipv6 = True
            if curve_server_key is not None:
                # Imported here: pyzmq's authenticator behind it pulls in asyncio, only CURVE needs it.
                from perception.security import make_curve_client

                make_curve_client(self._socket, server_key_file=curve_server_key, client_secret_file=curve_key_file)
            for prefix in wanted.prefixes:
                self._socket.setsockopt(zmq.SUBSCRIBE, prefix.encode("utf-8"))
            self._socket.connect(endpoint)
        except zmq.ZMQError as exc:
            self._teardown()
            raise PublishError(f"cannot connect to {endpoint}: {exc.strerror}; check --endpoint") from None
        except BaseException:
            self._teardown()
            raise

    def recv(self, timeout_s: float | None = 1.0) -> Message | None:
        """The next valid message, or None when none arrives within ``timeout_s`` seconds.

        ``timeout_s``: 0 (or less) returns what has arrived already, or None; ``None`` (or
        ``math.inf``) waits until a message comes. Ctrl-C (KeyboardInterrupt) and ``close()``
        from another thread end any wait. Messages that fail a check are skipped and counted
        (``counters``, ``last_error``), never raised. Safe to call from several threads (they
        take turns; see the class docstring).

        Raises:
            SubscriberClosedError: the subscriber is closed: ``close()`` was called before this
                call, or while it waited.
            SubscriberForkError: called in a process forked from the one that created the
                subscriber; create a new one there.
            ConfigError: ``timeout_s`` is no number of seconds (a string, NaN).
        """
        deadline = _deadline(timeout_s)
        called = time.monotonic()
        if os.getpid() != self._pid:  # before the lock: a fork may have copied it held
            raise SubscriberForkError(
                f"this MaskSubscriber was created in process {self._pid} and cannot be used after fork (this is process "
                f"{os.getpid()}): ZeroMQ sockets do not survive a fork; create a MaskSubscriber in the child")
        if self._closed:
            raise SubscriberClosedError(_CLOSED)
        wait = -1 if deadline is None else min(threading.TIMEOUT_MAX, max(0.0, deadline - time.monotonic()))
        if not self._lock.acquire(timeout=wait):
            return None  # another thread's recv held the socket for all of timeout_s
        try:
            self._away_s = called - self._returned_at
            return self._recv(deadline)
        except zmq.ZMQError:
            if self._closed:  # closed under this very call (by a signal handler of this thread)
                raise SubscriberClosedError(_CLOSED) from None
            raise
        finally:
            self._returned_at = time.monotonic()
            self._lock.release()

    def _recv(self, deadline: float | None) -> Message | None:
        while True:
            if self._closed:
                raise SubscriberClosedError(_CLOSED)
            if self._split:
                return self._split.popleft()
            self._watch_connections()
            msg = self._take_latest() if self.keep_latest else self._take_next()
            if msg is not None:
                return msg
            wait = _POLL_SLICE_S
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                wait = min(wait, remaining)
            if self._connections.dropped:  # come back when the grace period of a dropped connection is over
                wait = min(wait, _RECONNECT_GRACE_S)
            self._poller.poll(max(1, int(wait * 1000)))  # the socket, its monitor, or close()'s wake-up

    def _watch_connections(self) -> None:
        """Reconnect what ZeroMQ dropped for good. A connection dropped by the network or by a node
        that stopped is followed at once by ZeroMQ's own reconnect (``EVENT_CONNECT_RETRIED``); one
        it refused for a protocol error, above all a frame over ``ZMQ_MAXMSGSIZE``, is not, and the
        subscriber would hear nothing from that endpoint again. So a connection that was up and is
        dropped without a reconnect announced within ``_RECONNECT_GRACE_S`` is made again here."""
        if self._monitor is None:
            return
        self._connections.read(self._monitor)
        for endpoint in self._connections.lost():
            with contextlib.suppress(zmq.ZMQError):  # its session is gone already
                self._socket.disconnect(endpoint)
            self._socket.connect(endpoint)
            self.counters.reconnects += 1
            self._report(f"ZeroMQ dropped the connection to {endpoint} for a protocol error and would not reconnect; "
                         f"most likely the publisher sent a frame over {self.max_frame_bytes} bytes, more than any valid "
                         f"message of masks up to {self.max_mask_pixels} pixels holds (ZMQ_MAXMSGSIZE; "
                         "--max-mask-pixels raises it); reconnected", self.counters.reconnects)

    @property
    def handshake_failure(self) -> str | None:
        """Why the node refused the last handshake (``handshake_failure_text``), None once one
        succeeds; from any thread."""
        return self._connections.handshake_failure

    def cut_off(self) -> str | None:
        """Why the node cut this subscriber off (``Connections.cut_off``: it had admitted it, then
        refused its handshakes for ``CUT_OFF_S``, and libzmq will not try again), else None. Readers
        that would wait for ever end on it (``listen``, ``record``, ``view``: exit 4, which a launch
        file respawns; a restarted client makes a new handshake)."""
        return self._connections.cut_off()

    def _recv_frames(self) -> list[zmq.Frame] | None:
        try:
            frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        if self._exact is not None:
            raw = frames[0].buffer
            if len(raw) > contracts.MAX_TOPIC_BYTES:  # no topic asked for is this long: not decoded whole
                self.unasked.add(bytes(raw[:contracts.MAX_TOPIC_BYTES]).decode("utf-8", "replace") + "...")
                return []
            topic = bytes(raw).decode("utf-8", "replace")
            if topic in self._info_topics:
                self._decode(frames)  # kept in self.info, not returned: not asked for
                return []
            if topic not in self._exact and topic not in self._frame_topics:
                self.unasked.add(topic)  # a longer topic that shares a subscribed prefix
                return []
        return frames

    def _take_next(self) -> Message | None:
        while (frames := self._recv_frames()) is not None:
            if frames and (msg := self._decode(frames)) is not None:
                return msg
        return None

    def _take_latest(self) -> Message | None:
        # The drain holds one message a topic, and the topics come from outside (any name under a
        # subscribed namespace): it stops once what it holds comes to max_queue_bytes, as ZeroMQ's
        # own queue does (the rest waits there for the next recv). ZeroMQ's queue is short (3
        # messages at the default max_mask_pixels) and refilled from the network only as it is
        # read, so after a reader's absence an empty look is followed by a short wait for more,
        # within a budget (_DRAIN_WAIT_MAX_S, _DRAIN_MAX_S: both grow with the time it was away).
        start = time.monotonic()
        wait = min(_DRAIN_WAIT_MAX_S, self._away_s / 10)
        budget = min(_DRAIN_MAX_S, self._away_s)
        taken = 0
        while taken < _MAX_DRAIN and self._pending_bytes < self.max_queue_bytes and not self._closed:
            frames = self._recv_frames()
            if frames is None:
                left = min(wait, start + budget - time.monotonic())
                if taken and wait >= _DRAIN_WAIT_MIN_S and left > 0 and \
                        self._socket.poll(max(1, int(left * 1000)), zmq.POLLIN):
                    continue
                break
            taken += 1
            if not frames:
                continue
            topic = bytes(frames[0].buffer).decode("utf-8", "replace")
            if (older := self._pending.get(topic)) is not None:
                self.counters.superseded += 1
                self._pending_bytes -= frames_nbytes(older)
            # Replaced in place: the dict keeps the topics in the order they came since each was
            # last returned, and the first is returned, so the topics take turns. (Moving a replaced
            # topic last, the first topic of each frame won every recv of a slow reader.)
            self._pending[topic] = frames
            self._pending_bytes += frames_nbytes(frames)
        while self._pending:
            frames = self._pending.pop(next(iter(self._pending)))
            self._pending_bytes -= frames_nbytes(frames)
            msg = self._decode(frames)
            if msg is not None:
                return msg
        return None

    def _decode(self, frames: list[zmq.Frame]) -> Message | None:
        try:
            msg = decode_message(frames, max_mask_pixels=self.max_mask_pixels)
        except (WireVersionError, NewerPublisherError) as exc:
            # Not malformed: a message this reader is too old (or too new) for; the reason names the fix.
            self.counters.version_mismatch += 1
            self.last_version_error = printable(str(exc))
            self._report(str(exc), self.counters.version_mismatch)
            return None
        except (WireError, DecodeError) as exc:
            self.counters.malformed += 1  # (a mask over the size limit too: counted among the unreadable)
            what = "a message over this reader's size limit" if isinstance(exc, MaskOverLimit) else "a malformed message"
            self._report(f"skipped {what}: {exc}", self.counters.malformed)
            return None
        except (ValueError, TypeError, ArithmeticError, RecursionError, MemoryError) as exc:
            # Last line of defence: decode_message validates everything it reads, so this means a
            # bug there; the subscriber still survives, counts the message and names the failure.
            self.counters.malformed += 1
            self._report(f"skipped a message that broke the decoder ({type(exc).__name__}: {str(exc)[:200]})",
                         self.counters.malformed)
            return None
        if msg.kind == contracts.KIND_FRAME and self.split_frames:
            whole = self._exact is None or msg.topic in self._exact  # the frame topic itself was asked for
            if not whole and not any(m.topic in self._exact for m in msg.data.values()):
                self.unasked.add(*(m.topic for m in msg.data.values()))  # none of its masks asked for
                return None
            parts = [m for m in msg.data.values() if (whole or m.topic in self._exact) and self._track(m.topic)]
            self.counters.received += len(parts)
            if not parts:
                return None
            self._split.extend(parts[1:])
            return parts[0]
        if not self._track(msg.topic):
            return None
        self.counters.received += 1
        if msg.kind == contracts.KIND_JSON and msg.topic.endswith("/" + contracts.INFO_TOPIC) and isinstance(msg.data, dict):
            self.info = msg.data
            self.infos[msg.topic] = msg.data  # bounded with the topics tracked
        return msg

    def _track(self, topic: str) -> bool:
        """Whether a valid message on ``topic`` is taken: its topic is tracked already, or is
        tracked now while fewer than ``max_topics`` are; else it is counted (and the first one
        warned about)."""
        if topic in self._tracked:
            return True
        if len(self._tracked) < self.max_topics:
            self._tracked.add(topic)
            return True
        self.counters.over_max_topics += 1
        if self.counters.over_max_topics == 1:
            log.warning("topic %s is one past the %d this reader keeps track of (max_topics, --max-topics): its "
                        "messages, and those of further new topics, are skipped and counted (over_max_topics), without "
                        "another warning", topic, self.max_topics)
        return False

    def _report(self, message: str, count: int) -> None:
        message = printable(message)  # it may quote received text: no terminal escapes in a log line
        self.last_error = message
        if count in (1, 10, 100) or count % 1000 == 0:  # rate-limited: a bad stream must not flood the log
            log.warning("%s (%d so far)", message, count)

    def stats(self) -> dict[str, int]:
        """``counters`` as a dict: ``received``, ``malformed``, ``version_mismatch``,
        ``superseded``, ``reconnects``, ``over_max_topics`` (``SubscribeCounters``); from any thread."""
        return asdict(self.counters)

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called: ``recv`` then raises ``SubscriberClosedError``."""
        return self._closed

    def close(self) -> None:
        """Close the socket at once (linger 0); idempotent, from any thread. A ``recv`` blocked in
        another thread wakes and raises ``SubscriberClosedError``, as does any later ``recv``. In a
        forked child it only marks the child's copy closed (the sockets are the parent's)."""
        self._closed = True
        if os.getpid() != self._pid:
            for end in self._wake or ():
                end.close()  # the child's copies of the descriptors only
            return
        if self._wake is not None:
            with contextlib.suppress(OSError):  # full (woken already) or closed (closed already)
                self._wake[1].send(b"\0")
        with self._lock:
            self._teardown()

    def __del__(self) -> None:
        # A subscriber dropped without close(): its wake-up pair is closed quietly here (ZeroMQ's
        # own objects warn for themselves, as before the pair existed).
        for end in getattr(self, "_wake", None) or ():
            end.close()

    def _teardown(self) -> None:
        if self._wake is not None:
            for end in self._wake:
                end.close()
        if self._monitor is not None and not self._monitor.closed:
            self._socket.disable_monitor()
            self._monitor.close(linger=0)
        if not self._socket.closed:
            self._socket.close(linger=0)
        if not self._context.closed:
            self._context.term()

    def __enter__(self) -> MaskSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
