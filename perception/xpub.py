"""The XPUB socket core under every publisher of the wire format: the live node's ``MaskPublisher``
(``perception/publish.py``, one socket for every camera's namespace) and ``ReplayPublisher``
(``perception/replay.py``).

It owns what both need and must do alike: endpoint checks (``perception/endpoints.py``), socket
setup (linger, high-water mark, CURVE), binding with one-line errors naming the endpoint and the
fix, the subscriptions that XPUB reports (counted per subscriber connection and topic prefix),
latched topics that are sent again when a subscription that receives them arrives, sending, and
closing. What the messages hold (headers, encodings, pub_seq) stays with the publishers.

    core = XpubCore("tcp://127.0.0.1:5556", sndhwm=16)
    with core.lock:
        core.send_locked(b"perception/front/stats", header, payload)
    core.subscriptions(b"perception/front/")      # live subscriptions that receive that namespace
    core.close()

Subscription accounting (``perception/xpub_counts.py``, ``SubscriptionCounts``): libzmq does the
filtering; the core reads the subscribe and unsubscribe messages (``XPUB_VERBOSER``: all of them,
duplicates and the ones libzmq makes for a connection that closed) and hands each to the counts with
the connection that sent it, so that one subscriber holding a prefix counts once however often it
subscribed to it, and not at all once it is gone. The connection is named
(``perception/xpub_connections.py``) by the message's ``SRCFD`` (the descriptor of its socket in
libzmq) and that socket's device and inode, which no other connection has while it is open: one
``fstat`` (about 1 us; the descriptor is never duplicated nor closed) per descriptor a read meets,
and one more at the read's end, when a connection that closed and whose descriptor a new one took
meanwhile hands its subscriptions to the new one (whose messages may have been taken as its own: at
worst the new one counts for some it does not hold, until it leaves; never for fewer). A subscribe
whose descriptor is no longer an open socket (the connection closed before it was read) is not
counted. The unsubscribes libzmq makes for a connection that closed carry no ``SRCFD`` (its socket
is already closed): after a read that took one, the core looks once at every connection held and
drops those whose socket is gone (``SubscriptionCounts.settle``). A message with no ``SRCFD``
otherwise (a transport without one) counts as a message, as libzmq sends them. The publisher
``track``s the topics it publishes, each in a group (its namespace ``b"ns/"``), so
``receivers_locked(topic)`` and ``subscriptions(group)`` cost the same whatever the subscribers ask
for. A read takes at most ``READ_BATCH`` messages (a send ``SEND_READ_BATCH``), so a flood of them
is spread over many frames.

With a CURVE allow-list, each subscription message carries the subscriber's key (ZAP ``User-Id``)
and its connection's file descriptor (``SRCFD``): the core remembers which connection holds which
key, so that when a key is removed from the allow-list (``cut_clients``, called by the
authenticator's folder watcher) the connections already made with it are shut down at once; their
reconnects meet the new list and are refused. A subscription from a key no longer allowed is cut
the same way when it is read.

Two send modes: ``send_timeout_ms=None`` (the live node) never waits: a subscriber whose queue is
full loses the message, as with PUB (with ``see_full_queues``, each send that finds one or more
full queues is counted first: ``full_queue_sends``). A number (replay) sets ``XPUB_NODROP``: a send waits up to that long for room
and raises ``zmq.Again`` when there is none, so the caller can retry or stop.

Closing: ``close(flush_s=...)`` lets what is queued go out for at most ``flush_s`` seconds (ZeroMQ's
linger). ``drain(idle_s=..., stop=...)`` (replay, at the end of its file) waits instead for as long
as the subscribers keep taking messages: it watches each subscriber connection's socket (on Linux:
the bytes its kernel send queue holds, ``TIOCOUTQ``, and for TCP the bytes the peer acknowledged,
``TCP_INFO``) and gives up only on a subscriber that took nothing for ``idle_s`` seconds, or on
``stop``, cutting the connections still holding messages (``Drained`` says how many).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable

import zmq

from perception import contracts
from perception.endpoints import (
    address_in_use_fix,
    check_endpoint,
    ipc_socket_is_live,
    is_ipv6_literal,
    is_loopback,
)
from perception.errors import PerceptionError, PublishError
from perception.xpub_connections import (
    CLOSED,
    connection_alive,
    connection_id,
    name_connection,
    shut_down_connection,
)
from perception.xpub_counts import SubscriptionCounts
from perception.xpub_drain import Drained, drain_and_close
from perception.zmq_context import new_context

log = logging.getLogger(__name__)

# XPUB subscription messages: one byte (1 subscribe, 0 unsubscribe), then the topic prefix.
_SUBSCRIBE, _UNSUBSCRIBE = 1, 0
# wait_for_subscriptions holds the socket lock for at most this long at a time.
_WAIT_SLICE_MS = 10
#: Subscribe/unsubscribe messages one read takes off the socket (``subscribed``, once a frame;
#: ``subscriptions``; each wait slice): about 2.5 us each with libzmq's own work (3.5 us when a
#: client holding many prefixes leaves; naming each message's connection added about 1 us), so at
#: most about 7 ms a read. The rest wait for the next read: a subscriber that sends a flood of them
#: slows the node by a bounded amount and never stalls it. A send reads at most ``SEND_READ_BATCH``.
READ_BATCH = 2000
SEND_READ_BATCH = 100
#: Seconds between two resends of one latched topic for new subscriptions: one arriving sooner
#: waits for the end of the interval, and all those arriving meanwhile share one resend. Short, so
#: that clients started together all get ``info`` before their first masks or nearly (at 1 s, two of
#: four got it only after 5 frames); a subscribe-unsubscribe loop still costs at most 5 a second.
LATCH_RESEND_INTERVAL_S = 0.2
_NEVER = float("inf")
_SRCFD = int(zmq.SRCFD)


class AuthenticatorDied(PerceptionError):
    """The CURVE ZAP thread that answers every handshake died (``security.Authenticator.check_zap``):
    no client can be admitted, so publishing stops, exit 1 (a launch file's respawn starts it again)."""

    exit_code = 1


class XpubCore:
    """One bound XPUB socket (see the module docstring); thread-safe through ``lock``.

    Args:
        endpoint: where to bind (``tcp://HOST:PORT``, ``tcp://[IPv6]:PORT``, ``ipc://PATH``).
        sndhwm: messages queued per subscriber (drop or wait beyond it, see ``send_timeout_ms``).
        send_timeout_ms: None: never wait (drop at the HWM); a number: ``XPUB_NODROP``, a send waits
            up to that long for room, then raises ``zmq.Again``.
        see_full_queues: with ``send_timeout_ms`` None, see each send that finds a subscriber queue
            full (``XPUB_NODROP`` fails it): counted (``full_queue_sends``: once, however many queues
            were full) and made again without it (the full subscribers lose it, the others get it).
        curve_secret_key_file: the server's ``.key_secret``; turns on CURVE encryption.
        curve_allow_dir: directory of allowed client ``.key`` files (needs the secret key).
        what: what leaves the machine, for the warning on a non-loopback endpoint.

    Raises:
        PublishError: bad endpoint, address in use or not of this machine, bad key files.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        sndhwm: int,
        send_timeout_ms: int | None = None,
        see_full_queues: bool = False,
        curve_secret_key_file: str | None = None,
        curve_allow_dir: str | None = None,
        what: str = "masks",
    ) -> None:
        host = check_endpoint(endpoint)
        #: Sockets are not thread-safe: every use of the socket holds this lock (``*_locked`` methods
        #: expect the caller to hold it; the publish thread sends, another may ask for stats).
        self.lock = threading.Lock()
        self.closed = False
        # Subscription accounting (see the module docstring): per connection and prefix.
        self._counts = SubscriptionCounts(alive=connection_alive)
        # Latched topics: topic -> the callback that sends it again (caller holds the lock); those
        # due for a new subscription; when each last went again; when the first due one may go.
        self._latched: dict[bytes, Callable[[], None]] = {}
        self._due: set[bytes] = set()
        self._resent_at: dict[bytes, float] = {}
        self._next_due = _NEVER
        #: Seconds between two resends of one latched topic (``LATCH_RESEND_INTERVAL_S``).
        self.latch_interval_s = LATCH_RESEND_INTERVAL_S
        self._flags = zmq.NOBLOCK if send_timeout_ms is None else 0
        self._see_full_queues = see_full_queues and send_timeout_ms is None
        #: Sends that met a full subscriber queue (``see_full_queues``).
        self.full_queue_sends = 0
        self._context = new_context("the publisher")
        self._auth = None
        #: Why publishing must stop (the CURVE authenticator died), raised by the next send.
        self.auth_failed: str | None = None
        # With an allow-list: subscriber connections by file descriptor -> (their key, Z85 bytes;
        # the socket's (device, inode), to tell a reused descriptor number apart).
        self._peers: dict[int, tuple[bytes, tuple[int, int]]] = {}
        self._cut: deque[tuple[int, int]] = deque(maxlen=256)  # sockets shut down, until libzmq drops them
        #: Connections shut down because their key left the allow-list.
        self.curve_disconnects = 0
        self._socket = self._context.socket(zmq.XPUB)
        try:
            self._socket.linger = 0
            # VERBOSER: every subscribe and every unsubscribe reaches us, including the ones libzmq
            # makes for a subscriber that disconnects and duplicates of a prefix another subscriber
            # already holds (plain XPUB reports only the first and last of each prefix), so the
            # counts are per connection.
            self._socket.setsockopt(zmq.XPUB_VERBOSER, 1)
            if is_ipv6_literal(host):
                self._socket.ipv6 = True
            self._socket.sndhwm = sndhwm
            if send_timeout_ms is not None:
                # A full subscriber makes the send wait instead of losing the message; the timeout
                # lets a stalled subscriber still let stop requests through.
                self._socket.setsockopt(zmq.XPUB_NODROP, 1)
                self._socket.sndtimeo = send_timeout_ms
            elif self._see_full_queues:
                self._socket.setsockopt(zmq.XPUB_NODROP, 1)  # with NOBLOCK: a full queue fails the send
            if curve_secret_key_file is not None:
                # Imported here: pyzmq's authenticator pulls in asyncio (about 40 ms of a start-up
                # that only a CURVE node pays).
                from perception.curve_keys import load_key_pair
                from perception.security import make_curve_server, start_authenticator

                # The server's key first: a bad --curve-secret-key is the one line, not one after
                # "CURVE on: ..." or the warning below, as if encryption had started.
                keys = load_key_pair(curve_secret_key_file, role="server secret")
                if curve_allow_dir is not None:
                    self._auth = start_authenticator(self._context, curve_allow_dir)
                else:
                    log.warning("CURVE without --curve-allow: traffic is encrypted but any client key is accepted")
                make_curve_server(self._socket, keys)
            self._bind(endpoint)
        except BaseException:
            self.teardown()
            raise
        if self._auth is not None:
            self._auth.on_failure = self._auth_died
        if self._auth is not None and os.name != "nt":  # (descriptors are sockets only on POSIX)
            self._auth.on_revoke = self.cut_clients
        #: The bound endpoint (the real port when ``endpoint`` asked for ``*``).
        self.endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        # Judged on the address bound, not the name asked for: a host name in /etc/hosts binds 127.0.0.1.
        bound_host = check_endpoint(self.endpoint) if self.endpoint.startswith("tcp://") else None
        if bound_host is not None and not is_loopback(bound_host):
            log.warning(
                "publishing on %s: %s leave this machine%s", self.endpoint, what,
                "" if curve_secret_key_file else " unencrypted; see `perception keys` for CURVE encryption",
            )

    def _bind(self, endpoint: str) -> None:
        in_use = f"cannot bind {endpoint}: address already in use; {address_in_use_fix(endpoint)}"
        path = endpoint.removeprefix("ipc://") if endpoint.startswith("ipc://") else None
        if path is not None and os.path.lexists(path) and not stat.S_ISSOCK(os.lstat(path).st_mode):
            # libzmq unlinks whatever is at the path before it binds there.
            raise PublishError(f"cannot bind {endpoint}: {path} is not a socket, and binding there would delete "
                               "it; choose another ipc:// path")
        if path is not None and ipc_socket_is_live(path):
            # libzmq unlinks the path and binds anew: the node already there would publish to nobody.
            raise PublishError(in_use)
        if path is not None and path != "*" and not path.startswith("@"):
            folder = os.path.dirname(path) or "."
            if not os.path.isdir(folder):
                raise PublishError(f"cannot bind {endpoint}: its folder {folder} does not exist; create it (mkdir -p "
                                   f"{folder}) or choose another ipc:// path")
            if len(os.fsencode(path)) > zmq.IPC_PATH_MAX_LEN:
                raise PublishError(f"cannot bind {endpoint}: the path is {len(os.fsencode(path))} bytes, and a Unix "
                                   f"socket's path holds at most {zmq.IPC_PATH_MAX_LEN}; choose a shorter ipc:// path "
                                   "(e.g. under /run or /tmp)")
        try:
            self._socket.bind(endpoint)
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EADDRINUSE:
                raise PublishError(in_use) from None
            raise PublishError(
                f"cannot bind {endpoint}: {exc.strerror}; use an address of this machine (an interface's name "
                f"binds its IPv4 address: one without any is refused), e.g. {contracts.DEFAULT_ENDPOINT}"
            ) from None

    @property
    def curve_rejections(self) -> int:
        """CURVE handshakes the allow-list refused (0 without one)."""
        return self._auth.rejections if self._auth is not None else 0

    # ------------------------------------------------------------------ revocation

    def _auth_died(self) -> None:
        """``Authenticator.on_failure``: the next send raises ``AuthenticatorDied`` (the node's publish
        stage fails, exit 1), so a node no client can reach does not go on looking healthy."""
        self.auth_failed = (f"CURVE on {self.endpoint}: the ZAP authenticator thread died, so no client can be "
                            "admitted; the node stops (restart it: a launch file's respawn does)")

    def cut_clients(self, keys: frozenset[bytes]) -> int:
        """Shut down every subscriber connection made with one of ``keys`` (Z85 public keys just
        removed from the allow-list); returns how many. Called from the allow-list watcher thread."""
        with self.lock:
            if self.closed:
                return 0
            before = self.curve_disconnects
            self.read_subscriptions_locked()  # learn of connections whose subscriptions are queued
            for fd, (key, ident) in list(self._peers.items()):
                if key in keys:
                    del self._peers[fd]
                    self._cut_locked(fd, ident)
            return self.curve_disconnects - before

    def _note_subscriber_locked(self, frame: zmq.Frame) -> None:
        """Remember which connection holds which key (from a subscribe message); cut it at once
        when the key is no longer allowed (removed after its handshake)."""
        try:
            key = frame.get("User-Id").encode("ascii")
            fd = frame.get(zmq.SRCFD)
            peer_address = frame.get("Peer-Address")
        except (zmq.ZMQError, UnicodeEncodeError):  # made by libzmq (a disconnect's unsubscribe): no peer
            return
        ident = connection_id(fd, peer_address)
        if ident is None or ident in self._cut:
            return
        if key in self._auth.allowed:
            self._peers[fd] = (key, ident)
        elif self._cut_locked(fd, ident):
            self._peers.pop(fd, None)
            log.info("CURVE: disconnected a subscriber from %s whose key %s is no longer in --curve-allow",
                     peer_address, key.decode())

    def _cut_locked(self, fd: int, ident: tuple[int, int]) -> bool:
        if ident in self._cut or not shut_down_connection(fd, ident):
            return False
        self._cut.append(ident)
        self.curve_disconnects += 1
        return True

    # ------------------------------------------------------------------ subscriptions

    def latch(self, topic: bytes, resend: Callable[[], None]) -> None:
        """Call ``resend`` (with the lock held) when a subscription that receives ``topic`` arrives,
        so a subscriber that joins late still gets it: at once, or, when it went again for another
        subscription less than ``LATCH_RESEND_INTERVAL_S`` before, once that interval is over (the
        subscriptions arriving meanwhile share that one resend). The caller holds the lock, or no
        other thread uses the core yet."""
        self._latched[topic] = resend
        self.track(topic)

    def track(self, topic: bytes, group: bytes | None = None) -> None:
        """Keep, from now on, the count of live subscriptions that receive ``topic`` (``receivers``)
        and, when ``group`` (a namespace ``b"ns/"``) is given, count ``topic`` among the group's
        topics (``subscriptions(group)``). Idempotent; costs one look-up per byte of ``topic``.
        The caller holds the lock, or no other thread uses the core yet."""
        self._counts.track(topic, group)

    @property
    def counts(self) -> SubscriptionCounts:
        """The counts themselves (``track_family``, ``carry``: ``SubscriptionCounts``); the caller holds the lock."""
        return self._counts

    @property
    def max_prefixes(self) -> int:
        """Subscriptions kept (a connection and a prefix each) that receive no tracked topic (see
        ``MAX_PREFIXES``)."""
        return self._counts.max_prefixes

    @max_prefixes.setter
    def max_prefixes(self, value: int) -> None:
        self._counts.max_prefixes = value

    @property
    def prefixes_over_cap(self) -> int:
        """Subscriptions not kept because of ``max_prefixes`` (or longer than any topic)."""
        return self._counts.prefixes_over_cap

    def read_subscriptions_locked(self, sending: bytes | None = None, *, budget: int = READ_BATCH) -> bool:
        """Take up to ``budget`` queued subscribe/unsubscribe messages off the socket (the rest on
        later calls: a subscriber sending a flood of them cannot hold the lock for long), then
        resend the latched topics a new subscription receives (caller holds the lock). Returns
        False when messages may be left (the counts lag behind a flood), True when all were read.
        ``sending``: the topic about to be sent, which reaches the new subscriber anyway; resending
        it first would put two copies on the wire in reverse ``pub_seq`` order (its header is
        already numbered)."""
        noting = self._auth is not None and self._auth.on_revoke is not None
        counts, latched, recv = self._counts, self._latched, self._socket.recv
        # The connection of each descriptor met in this read, named once (one fstat) and named
        # again at its end (_recheck_locked); the prefixes subscribed from one that was no open socket.
        named: dict[int, tuple[int, int, int]] = {}
        refused: dict[int, dict[bytes, zmq.Frame | None]] = {}
        drained = False
        for _ in range(budget):
            try:
                frame = recv(zmq.NOBLOCK, copy=False)  # (a frame: its metadata names the connection)
            except zmq.Again:
                drained = True
                break
            message = frame.bytes
            if not message or message[0] > _SUBSCRIBE:
                continue
            prefix = message[1:]
            subscribe = message[0] == _SUBSCRIBE
            fd = conn = None
            # (An unsubscribe nobody holds and nothing over the cap: no need to name its connection,
            # which for libzmq's own, with no metadata, costs a raised error.)
            if subscribe or counts.needs_connection(prefix):
                try:
                    fd = frame.get(_SRCFD)
                except zmq.ZMQError:  # libzmq's own unsubscribe for a closed connection, or no SRCFD here
                    pass
                else:
                    conn = named.get(fd)
                    if conn is None:
                        conn = named[fd] = name_connection(fd)
            if not subscribe:
                if conn is CLOSED:
                    refused.get(fd, {}).pop(prefix, None)
                counts.unsubscribe(prefix, conn)
            elif conn is CLOSED:  # the connection closed before this was read: it counts for nothing
                refused.setdefault(fd, {})[prefix] = frame if noting else None
            else:
                if noting:
                    self._note_subscriber_locked(frame)
                topics = counts.subscribe(prefix, conn)
                if topics and latched:
                    self._due.update(topic for topic in topics if topic in latched)  # they wait for it
        if named:
            self._recheck_locked(named, refused)
        counts.settle(connection_alive)  # once a read, only when an unsubscribe waits for it
        self._resend_due_locked(sending)
        return drained

    def _subscribed_locked(self, prefix: bytes, conn: tuple[int, int, int]) -> None:
        """(``read_subscriptions_locked``'s own, for a subscribe counted late.)"""
        self._due.update(topic for topic in self._counts.subscribe(prefix, conn) if topic in self._latched)

    def _recheck_locked(self, named: dict[int, tuple[int, int, int]],
                        refused: dict[int, dict[bytes, zmq.Frame | None]]) -> None:
        """After a read, name again the connection of each descriptor it met. One closed and its
        descriptor reused by a new connection during the read: the messages taken as the old one's
        may be the new one's, whose subscriptions must count (a topic with none is not built). The
        new connection takes the old one's subscriptions, and those refused while the descriptor
        was no socket: at worst it is counted for some it does not hold, until it closes."""
        for fd, conn in named.items():
            now = name_connection(fd)
            if now == conn or now is CLOSED:
                continue  # (closed now: the old one's subscriptions go with it, see settle)
            if conn is CLOSED:
                for prefix, frame in refused.get(fd, {}).items():
                    if frame is not None:
                        self._note_subscriber_locked(frame)
                    self._subscribed_locked(prefix, now)
            else:
                self._counts.merge(conn, now)

    def _resend_due_locked(self, sending: bytes | None = None) -> None:
        """Resend the latched topics new subscriptions wait for, each at most once per
        ``LATCH_RESEND_INTERVAL_S``; the others stay due (``_next_due``: when the first may go)."""
        self._due.discard(sending)
        if not self._due:
            self._next_due = _NEVER
            return
        now = time.monotonic()
        ready = [topic for topic in self._due if now - self._resent_at.get(topic, -_NEVER) >= self.latch_interval_s]
        # Taken off first: the resend below may read subscriptions again.
        self._due.difference_update(ready)
        for topic in ready:
            self._resent_at[topic] = now
            self._latched[topic]()
        self._next_due = min((self._resent_at.get(topic, -_NEVER) + self.latch_interval_s for topic in self._due),
                             default=_NEVER)

    @property
    def prefixes(self) -> set[bytes]:
        """The topic prefixes with a live subscription that are kept (see ``max_prefixes``), as last read."""
        return self._counts.prefixes

    def receivers_locked(self, topic: bytes) -> int:
        """Live subscriptions that receive ``topic``, as last read (caller holds the lock). A tracked
        topic (``track``, ``latch``) is one look-up; another, one per byte of it."""
        return self._counts.receivers(topic)

    def subscriptions(self, prefix: bytes = b"") -> int:
        """Live subscriptions that receive some topic under ``prefix``. For a group (``track``: a
        namespace ``b"ns/"``): those that receive one of its tracked topics (one to the namespace,
        to one of its topics or to everything counts; one to another namespace, or to a prefix under
        it that names none of its topics, does not). For ``b""``: all. For another prefix: one to
        the prefix, a prefix of it or a prefix under it (kept ones only, see ``max_prefixes``).
        Reads pending subscription messages first."""
        with self.lock:
            if not self.closed:
                self.read_subscriptions_locked()
            return self._count(prefix)

    def _count(self, prefix: bytes) -> int:
        return self._counts.count(prefix)

    def wait_for_subscriptions(self, count: int, *, timeout_s: float, prefix: bytes = b"",
                               stop: threading.Event | None = None) -> bool:
        """Wait until ``count`` subscriptions under ``prefix`` are live (see ``subscriptions``), at
        most ``timeout_s`` or until ``stop`` is set. Holds the lock for at most 10 ms at a time.

        Returns True when enough subscriptions are live, False on the timeout, on ``stop`` or once
        closed.
        """
        deadline = time.monotonic() + max(0.0, timeout_s)
        while stop is None or not stop.is_set():
            with self.lock:
                if self.closed:
                    return False
                self.read_subscriptions_locked()
                if self._count(prefix) >= count:
                    return True
                remaining_ms = (deadline - time.monotonic()) * 1e3
                if remaining_ms <= 0:
                    return False
                self._socket.poll(max(1, min(_WAIT_SLICE_MS, int(remaining_ms))), zmq.POLLIN)
        return False

    # ------------------------------------------------------------------ sending

    def send_locked(self, topic: bytes, *frames: bytes) -> bool:
        """Send ``[topic, *frames]`` as one multipart message (caller holds the lock); False once
        closed.

        Raises zmq.Again when NODROP found no room within the send timeout, zmq.ZMQError for
        other transport trouble (the caller counts or retries; nothing is half-sent).
        """
        if self.closed:
            return False
        if self.auth_failed is not None:
            raise AuthenticatorDied(self.auth_failed)
        # Reading EVENTS makes libzmq process its pending commands now, including the I/O thread's
        # "subscriber has read N messages" acknowledgements; send() only does so about once a
        # millisecond, so a fast loop would otherwise see full queues that are long empty and drop
        # messages for subscribers that keep up. The same read says whether subscription messages
        # are waiting (POLLIN), so taking them costs the hot path nothing when there are none.
        if self._socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self.read_subscriptions_locked(sending=topic, budget=SEND_READ_BATCH)
        elif self._next_due <= time.monotonic():  # a latched resend that waited for its interval
            self._resend_due_locked(sending=topic)
        flags = self._flags
        # Every part is copied into ZeroMQ's own message, masks of 150-600 kB included. A zero-copy
        # send hands the buffer to pyzmq's garbage-collector thread, which takes the GIL to release
        # each one once the I/O thread is done with it (2.4 % of a core in a CamVid node at 85 FPS).
        # Measured side by side on 2 EPYC cores, auto engine, 2 in flight: the CamVid node 86.5 ->
        # 88.1 FPS (four 155 kB masks a frame), the default model's 84.4 -> 83.8 (five 230 kB masks):
        # a wash in speed, and one thread fewer contending for the GIL.
        # The first part decides: once it is queued, the rest of the message always is (ZeroMQ
        # delivers all parts or none).
        try:
            self._send_parts(topic, frames, flags)
        except zmq.Again:
            if not self._see_full_queues:
                raise
            # A subscriber queue is full (libzmq's check says whether any is, not which nor how many)
            # and nothing went out: counted once, then sent without XPUB_NODROP, so that each full
            # subscriber loses it and leaves the send set until its queue has drained by half.
            self.full_queue_sends += 1
            self._socket.setsockopt(zmq.XPUB_NODROP, 0)
            try:
                self._send_parts(topic, frames, flags)
            finally:
                self._socket.setsockopt(zmq.XPUB_NODROP, 1)
        if topic in self._due:  # it just reached every subscription read so far
            self._due.discard(topic)
        return True

    def set_sndhwm(self, sndhwm: int) -> None:
        """Messages queued per subscriber from now on (ZeroMQ applies it to connected subscribers
        too); the caller holds the lock. Replay lowers it as larger messages come (its queue budget
        in bytes)."""
        if not self.closed:
            self._socket.sndhwm = sndhwm

    def subscriptions_locked(self, prefix: bytes = b"") -> int:
        """``subscriptions(prefix)`` as last read (the caller holds the lock; reads nothing)."""
        return self._count(prefix)

    def _send_parts(self, topic: bytes, frames: tuple[bytes, ...], flags: int) -> None:
        self._socket.send(topic, zmq.SNDMORE | flags)
        for frame in frames[:-1]:
            self._socket.send(frame, zmq.SNDMORE | flags)
        self._socket.send(frames[-1], flags)

    # ------------------------------------------------------------------ closing

    def close(self, *, flush_s: float = 0.0) -> None:
        """Close the socket; idempotent.

        ``flush_s`` bounds how long messages still queued may take to go out (ZeroMQ's linger):
        returns as soon as they are sent, or after ``flush_s`` with the rest dropped (a dead
        subscriber cannot hold the publisher). 0 drops them at once (stopping on a signal).
        """
        with self.lock:
            if self.closed:
                return
            self.closed = True
        self.teardown(flush_s)

    def drain(self, *, idle_s: float, stop: threading.Event, poll_s: float = 0.05) -> Drained:
        """Close the socket once what is queued has reached the subscribers, however long that takes
        while they keep taking it; idempotent (a second call, or after ``close``, drains nothing).
        The caller sends nothing more.

        Each subscriber connection is watched (``ConnectionWatch``). First, with the socket still
        open, until every connection's kernel send queue stays empty: the subscribers have taken
        everything (ZeroMQ's own linger only waits until its queue is handed to its I/O thread,
        whose last buffer a close then drops). Then the socket is closed, with no limit on its
        linger. A subscriber that took nothing for ``idle_s`` seconds (paused, hung) is given up,
        and ``stop`` (a signal) gives up at once: the connections still holding messages are cut,
        so that ZeroMQ drops what it queued for them, and ``Drained`` counts them. Where connections
        cannot be watched (not Linux), this is ``close(flush_s=idle_s)`` and ``Drained.watched`` is
        False.
        """
        return drain_and_close(self, idle_s=idle_s, stop=stop, poll_s=poll_s)

    def teardown(self, flush_s: float = 0.0, *, linger_ms: int | None = None) -> None:
        """Close the socket (``linger_ms``, else ``flush_s``), stop the authenticator, end the context."""
        self._socket.close(linger=int(flush_s * 1000) if linger_ms is None else linger_ms)
        if self._auth is not None:
            self._auth.stop()
        self._context.term()

