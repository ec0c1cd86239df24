"""What a ``MaskSubscriber``'s socket monitor says about its connections: which are up, which ZeroMQ
dropped without a reconnect of its own to follow (the subscriber connects those again), and why a
node refused the handshake (``handshake_failure_text``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import zmq

# The subscriber's own logger: a filter or level set on perception.subscribe covers these lines too.
log = logging.getLogger("perception.subscribe")

# How long after a dropped connection ZeroMQ has to announce its own reconnect (it does so at once,
# in the same I/O thread step) before the subscriber takes the connection for dead and reconnects.
_RECONNECT_GRACE_S = 0.1
#: How long a node may refuse the handshakes of a client it had admitted (a key revoked from its
#: --curve-allow, a restart without CURVE) before the client takes itself for cut off (``cut_off``):
#: libzmq does not retry a handshake the node refused, so nothing more would ever arrive; a
#: failure it does retry (a bare close) and that then succeeds within it is not a cut.
CUT_OFF_S = 2.0  # (refusals libzmq does not retry only: _NEVER_RETRIED)
# The socket monitor events the subscriber watches (see MaskSubscriber._watch_connections).
# The HANDSHAKE_FAILED_* events name why a node refused this client (MaskSubscriber.handshake_failure):
# libzmq 4.3 gives FAILED_AUTH (ZAP status 400) for a key the node's --curve-allow refuses,
# FAILED_PROTOCOL (mechanism mismatch) for a plain client of a CURVE node or a CURVE client of a plain
# one, and FAILED_NO_DETAIL for a CURVE client with the wrong server public key.
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
#: The failures libzmq does not retry: a key the node's ZAP refused (AUTH) and a plain/CURVE mismatch
#: (PROTOCOL). A bare close (NO_DETAIL: a connection accepted and closed at once, as a port forward
#: such as docker-proxy or ssh -L does while the node behind it restarts) is retried, and succeeds once
#: the node is back: it never starts the cut-off clock (``cut_off``).
_NEVER_RETRIED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
_MONITOR_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
                   | _HANDSHAKE_FAILED)


def handshake_failure_text(event: int, value: int, *, curve: bool) -> str:
    """What a failed handshake (a ``HANDSHAKE_FAILED_*`` monitor event and its value) means for a
    client that uses CURVE (``curve``) or not, and what to do: one clause for a "nothing received" line."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return (f"the node refused this client's key (status {value}): its --curve-allow folder does not hold this "
                "client's public key; give the node's operator the .key that goes with --curve-key")
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        if curve:
            return ("the node is not encrypted (it runs without --curve-secret-key): drop --curve-server-key and "
                    "--curve-key, or give the node a key pair")
        return ("the node is encrypted (CURVE): give --curve-server-key (the node's public .key) and --curve-key "
                "(this client's .key_secret)")
    if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and curve:
        return ("the CURVE handshake failed: --curve-server-key is most likely not this node's public key (or the "
                "node is not encrypted)")
    if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:  # a plain client: the node closed on it (often an encrypted one)
        return (f"the node closed the handshake (error {value:#x}): if it is encrypted (CURVE), give --curve-server-key "
                "(the node's public .key) and --curve-key (this client's .key_secret)")
    return f"the ZeroMQ handshake with the node failed (protocol error {value:#x}): is --endpoint a perception node?"


class Connections:
    """The state of a subscriber's connections, as its socket monitor reports them (``read``), and
    those ZeroMQ dropped for good (``lost``). Used under the subscriber's lock; ``handshake_failure``
    may be read from any thread."""

    def __init__(self, *, curve: bool) -> None:
        self.curve = curve  # whether the subscriber uses CURVE (for handshake_failure_text)
        # The endpoints whose connection is up (handshake done), and when ZeroMQ dropped one without
        # announcing a reconnect (monotonic seconds; see read).
        self.up: set[str] = set()
        self.dropped: dict[str, float] = {}
        self.ever_up: set[str] = set()  # the endpoints whose handshake succeeded once
        self.failure_event: int | None = None  # the monitor event of handshake_failure
        #: Why the node refused the last handshake (``handshake_failure_text``), None once one succeeds.
        self.handshake_failure: str | None = None
        #: When (monotonic s) a node that had admitted this client first refused it since, None once a
        #: handshake succeeds again.
        self.refused_since: float | None = None

    def read(self, monitor: zmq.Socket) -> None:
        """Take the events waiting on ``monitor``. A connection dropped by the network or by a node
        that stopped is followed at once by ZeroMQ's own reconnect (``EVENT_CONNECT_RETRIED``); one
        it refused for a protocol error, above all a frame over ``ZMQ_MAXMSGSIZE``, is not: it stays
        in ``dropped``, and ``lost`` gives it once ``_RECONNECT_GRACE_S`` is over."""
        while monitor.poll(0):
            # Imported here: zmq.utils.monitor imports asyncio, tens of ms of every start (the
            # node's and every subscriber's), for the first event only.
            from zmq.utils.monitor import recv_monitor_message

            event = recv_monitor_message(monitor)
            where = event["endpoint"].decode("utf-8", "replace")  # as connect() was given it
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.up.add(where)
                self.dropped.pop(where, None)
                self.ever_up.add(where)
                self.handshake_failure = self.failure_event = self.refused_since = None
            elif event["event"] & _HANDSHAKE_FAILED:
                if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and self.failure_event in (
                        zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
                    continue  # a bare closed connection says less than the failure already seen
                seen, self.failure_event = self.failure_event, event["event"]
                failure = handshake_failure_text(event["event"], event["value"], curve=self.curve)
                if where in self.ever_up:
                    if event["event"] != seen:
                        # refused after it was up (a key revoked, the node restarted otherwise): said at once,
                        # once a kind (a bare close's errno alternates between retries: 10 lines a second)
                        log.warning("%s: %s", where, failure)
                    if self.refused_since is None and event["event"] in _NEVER_RETRIED:
                        self.refused_since = time.monotonic()
                self.handshake_failure = failure
            elif event["event"] == zmq.EVENT_DISCONNECTED and where in self.up:
                self.up.discard(where)
                self.dropped[where] = time.monotonic()
            elif event["event"] == zmq.EVENT_CONNECT_RETRIED:
                self.dropped.pop(where, None)

    def cut_off(self, after_s: float = CUT_OFF_S) -> str | None:
        """Why the node cut this client off: a node that had admitted it has refused its handshakes
        for ``after_s`` with none succeeding since (``handshake_failure``); None when it has not."""
        if self.refused_since is None or time.monotonic() - self.refused_since < after_s:
            return None
        return self.handshake_failure

    def lost(self) -> Iterator[str]:
        """The endpoints dropped with no reconnect announced within ``_RECONNECT_GRACE_S``, each
        taken out of ``dropped`` as it is given (the subscriber connects it again)."""
        now = time.monotonic()
        for endpoint, since in list(self.dropped.items()):
            if now - since < _RECONNECT_GRACE_S:
                continue
            del self.dropped[endpoint]
            yield endpoint
