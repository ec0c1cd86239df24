"""The subscription counts of the XPUB core (``perception/xpub.py``): pure bookkeeping, no sockets.

libzmq does the filtering (which subscriber gets which message); the core only counts, for the
stats, ``--wait-subscribers`` and the node's lazy publishing (a topic nobody receives is not
computed). The core reads each subscribe and unsubscribe message off its socket, names the
connection that sent it, and hands both to ``SubscriptionCounts``:

    counts = SubscriptionCounts()
    counts.track(b"ns/lane", b"ns/")           # a topic the publisher sends, in its group (namespace)
    counts.subscribe(b"ns/", conn)             # -> the tracked topics the new subscription receives
    counts.unsubscribe(b"ns/", conn)
    counts.unsubscribe(b"ns/", None)           # libzmq's own, for a connection that closed
    counts.settle(alive)                       # once a read: drop the connections ``alive`` says are gone
    counts.receivers(b"ns/lane"), counts.count(b"ns/"), counts.count(b"")
    counts.carry(b"ns/", b"ns/frame", [b"ns/lane"])  # atomic frames: ns/frame holds ns/lane (see ``carry``)

What is counted is a connection holding a prefix, as libzmq keeps it: a connection that subscribes
to one prefix N times holds it once (a SUB socket sends every subscribe, but only one unsubscribe,
or none: when it closes libzmq makes one per prefix it held). ``conn`` is any hashable name of a
connection that stays the same for its life and is never given to another (the core uses the
socket's descriptor, device and inode); None means no connection is known, and then every message
counts, as libzmq sends them (the unsubscribes libzmq makes for a closed connection carry none).

The counts are kept per tracked topic and per group, updated when a subscription comes or goes (one
look-up of the prefix among the prefixes of the tracked topics), so ``receivers(topic)`` and
``count(group)`` cost the same whatever the subscribers ask for. Subscriptions that receive no
tracked topic are kept, for topics tracked later, up to ``MAX_PREFIXES`` of them (a connection and
a prefix each); beyond that they are counted (``prefixes_over_cap``, and in ``count(b"")``) and
warned about once a minute, never kept. Subscriptions to the tracked topics are always kept.

Connections that close. libzmq reports a closed connection's subscriptions as unsubscribes that name
no connection, after it closed the connection's socket. An unsubscribe that does not remove a
subscription at once (no connection named, or one that does not hold the prefix) waits for
``settle``, once per read: it asks ``alive`` about every connection held (not once per message: a
client with 10,000 prefixes leaving among 100 connections costs 100 questions a read, not a
million), drops the closed ones with all their subscriptions, then matches the waiting unsubscribes
with the subscriptions dropped (``_gone``: libzmq's unsubscribes for them, read before or after the
drop, change nothing). The rest remove subscriptions counted without a connection, or one over the
cap of the connection named. The matching is by prefix (over the cap, by number): where
subscriptions with and without a connection mix, an unsubscribe of no known connection may be taken
for a dropped connection's, and the subscription it ended counts until that one's own is read.

``count`` also asks ``alive`` (when given) about every connection held, at most once a
``SWEEP_INTERVAL_S``, and drops the closed ones: under connect-disconnect churn libzmq's report of
a closed connection can come after the next one's subscriptions, and both counted meanwhile.

What may be counted too long, never too short: a connection that holds a carrier (``carry``:
``<ns>/frame``, which ZeroMQ sends it whole) counts at least once, also one that asks for a name the
node does not send and drops what comes (``listen --topic <ns>/x`` takes ``<ns>/frame`` too); a
subscription over the cap is not kept, so one a connection repeats counts again (until it closes); a
connection whose socket was closed and whose
descriptor a new one took may, for its messages read after that, be taken for the new one
(``merge``: the core could not tell them apart), whose count then holds the old one's until it
closes. A live connection's subscription is removed only by an unsubscribe read under its own name
(its own, or the old one's for a subscription the old one's messages gave it) or once its own socket
is gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Sequence

from perception import contracts

log = logging.getLogger(__name__)

#: Subscriptions kept (a connection and a prefix each) that receive none of the tracked topics
#: (``<ns>/x`` under a namespace, another namespace, ``zz...``); beyond it they are counted in
#: ``prefixes_over_cap`` with one warning a minute. Subscriptions to the tracked topics are always
#: kept (there are at most a few hundred distinct prefixes of them, per connection), so this bounds
#: the memory and never a real subscriber.
MAX_PREFIXES = 10_000
_CAP_WARN_INTERVAL_S = 60.0
_NO_TOPICS: tuple[bytes, ...] = ()
_NO_GROUPS: frozenset[bytes] = frozenset()
#: ``count`` drops the closed connections (``alive``) at most this often: a connection that closed
#: counts until then, not until libzmq's report of it is read (under churn that came after the next
#: connection's subscriptions, and ``subscriptions`` counted both).
SWEEP_INTERVAL_S = 0.05
#: The kinds of a connection's subscriptions under a group with carried topics (``carry``): one
#: that receives only the carrier (``<ns>/frame``), one to a carried name that receives no tracked
#: topic (``<ns>/lane``) or one (``<ns>/obstacle`` receives ``<ns>/obstacles``). One under the group
#: that receives nothing (``<ns>/x``) is none of them: it changes nothing.
_CARRIER_ONLY, _CARRIED, _CARRIED_REAL = range(3)
_FRAME = contracts.FRAME_TOPIC.encode()  # (``ns/obstacle/frame``: where a reader looks for per-class masks, no class)


def _carried_extra(kinds: list[int]) -> int:
    """What a connection's subscriptions of ``kinds`` add to its group's count: when it holds the
    carrier (it receives every frame), each carried name that receives nothing of its own (the
    masks come in the carrier), or, when it names none, each prefix of the carrier it holds. So a
    connection that receives the carrier counts at least once, whatever else it holds: a prefix
    that receives nothing (``<ns>/obstacle/bus``, a class the model lacks) does not take that away.
    (A ``listen --topic`` of a name the node does not send, which also subscribes to ``<ns>/frame``,
    then counts once: the node sends it every frame, which it drops. Too long, never too short.)"""
    if not kinds[_CARRIER_ONLY]:
        return 0
    if kinds[_CARRIED] or kinds[_CARRIED_REAL]:
        return kinds[_CARRIED]
    return kinds[_CARRIER_ONLY]


class SubscriptionCounts:
    """Live subscriptions, per connection and prefix, counted per tracked topic and per group (see
    the module docstring). Not thread-safe: the core calls it with its lock held."""

    def __init__(self, max_prefixes: int = MAX_PREFIXES, *, alive: Callable[[Hashable], bool] | None = None) -> None:
        self._live: dict[bytes, int] = {}  # kept prefix -> subscriptions that hold it
        # Every prefix of every tracked topic -> (the tracked topics it receives, its groups).
        self._index: dict[bytes, tuple[list[bytes], set[bytes]]] = {}
        self._receivers: dict[bytes, int] = {}  # tracked topic -> live subscriptions that receive it
        self._groups: dict[bytes, int] = {}  # group (namespace) -> live subscriptions to its topics
        self._families: dict[bytes, bytes] = {}  # topics not declared yet, one segment under -> group
        self._held: dict[Hashable, set[bytes]] = {}  # connection -> the kept prefixes it holds
        self._over: dict[Hashable, int] = {}  # connection -> its subscriptions over the cap
        self._anon: dict[bytes, int] = {}  # kept prefix -> subscriptions of no known connection
        self._anon_over = 0  # the same, over the cap
        # Subscriptions of dropped connections whose unsubscribes may still come: per prefix (at
        # most max_prefixes of them), the rest and those over the cap in one number.
        self._gone: dict[bytes, int] = {}
        self._gone_over = 0
        self._pending: list[tuple[bytes, Hashable | None]] = []  # unsubscribes waiting for settle
        self._total = 0  # every live subscription, kept or not
        self._extra = 0  # kept subscriptions outside the index (at most max_prefixes)
        self._unstored = 0  # live subscriptions over the cap, not kept
        #: Subscriptions kept that receive no tracked topic (see ``MAX_PREFIXES``).
        self.max_prefixes = max_prefixes
        #: Subscriptions not kept because of ``max_prefixes`` (or longer than any topic), ever.
        self.prefixes_over_cap = 0
        self._cap_warn_at = 0.0  # (monotonic) when the cap may be warned about again
        # ``count`` first drops the connections ``alive`` says are closed, at most once a SWEEP_INTERVAL_S.
        self._alive, self._swept_at = alive, -SWEEP_INTERVAL_S
        # Carried topics (``carry``): group -> (its carrier topic, the carried names, the carried
        # family or None); per (connection, group) its subscriptions of each kind (``_CARRIER_ONLY`` ...); per
        # group what those add to its count.
        self._carriers: dict[bytes, tuple[bytes, frozenset[bytes], bytes | None]] = {}
        self._kinds: dict[tuple[Hashable | None, bytes], list[int]] = {}
        self._carried_count: dict[bytes, int] = {}

    # ------------------------------------------------------------------ tracked topics

    def track(self, topic: bytes, group: bytes | None = None) -> None:
        """Keep, from now on, the count of live subscriptions that receive ``topic`` (``receivers``)
        and, when ``group`` (a namespace ``b"ns/"``) is given, count ``topic`` among the group's
        topics (``count(group)``). Idempotent; costs one look-up per byte of ``topic``."""
        if group is None and topic in self._receivers:
            return  # (the replay latches its info again with every copy it sends)
        prefixes = [topic[:i] for i in range(len(topic) + 1)]
        before = {p: self._snapshot(p) for p in prefixes if p in self._live}
        new_topic = topic not in self._receivers
        changed = new_topic
        if new_topic:
            self._receivers[topic] = 0
        if group is not None:
            self._groups.setdefault(group, 0)
        for p in prefixes:
            entry = self._index.get(p)
            if entry is None:
                entry = self._index[p] = ([], set())
                # It receives a tracked topic now: its subscriptions no longer count against the cap.
                self._extra -= self._live.get(p, 0)
            if new_topic:
                entry[0].append(topic)
            if group is not None and group not in entry[1]:
                entry[1].add(group)
                changed = True
        self._recount(before)
        if changed:
            self._rebuild_carried()

    def track_family(self, family: bytes, group: bytes) -> None:
        """Count in ``group`` the subscriptions to topics the publisher may add later, one path
        segment under ``family`` (``b"ns/obstacle/"``: per-class masks of classes not declared yet);
        ``untrack_family`` once the topics are declared (``track``)."""
        affected = {p: self._snapshot(p) for p in self._live if p.startswith(family)}
        self._families[family] = group
        self._recount(affected)
        self._rebuild_carried()

    def untrack_family(self, family: bytes) -> None:
        affected = {p: self._snapshot(p) for p in self._live if p.startswith(family)}
        self._families.pop(family, None)
        self._recount(affected)
        self._rebuild_carried()

    def carry(self, group: bytes, carrier: bytes, names: Sequence[bytes] = (), family: bytes | None = None) -> None:
        """In ``group``, the tracked topic ``carrier`` (``b"ns/frame"``) holds the topics ``names``
        (``b"ns/lane"``; none sent on its own) and those one segment under ``family``
        (``b"ns/obstacle/"``). A subscriber asks for them by name and takes the carrier too: the
        group's ``count`` takes such a connection once per carried name, not for the carrier; the
        carrier alone counts when the connection names none of them (a prefix that receives nothing
        changes nothing: ``_carried_extra``). Called again, it replaces what it said before."""
        affected = {p: self._snapshot(p) for p in self._live if p.startswith(group)}
        self._carriers[group] = (carrier, frozenset(names), family)
        self._recount(affected)
        self._rebuild_carried()

    def _raw_groups(self, prefix: bytes) -> tuple[list[bytes] | tuple[bytes, ...], set[bytes] | frozenset[bytes]]:
        """The tracked topics a subscription to ``prefix`` receives, and the groups of those topics."""
        entry = self._index.get(prefix)
        topics, groups = (entry[0], entry[1]) if entry is not None else (_NO_TOPICS, _NO_GROUPS)
        for family, group in self._families.items():
            if group not in groups and prefix.startswith(family) and b"/" not in prefix[len(family):]:
                groups = groups | {group}
        return topics, groups

    def _kind(self, prefix: bytes, group: bytes) -> int | None:
        """The kind (``_CARRIER_ONLY`` ...) of a subscription to ``prefix`` in ``group``, which has carried topics."""
        if len(prefix) <= len(group) or not prefix.startswith(group):
            return None  # the group itself, a prefix of it, another group: it receives all or none
        carrier, names, family = self._carriers[group]
        receives = group in self._raw_groups(prefix)[1]
        if prefix in names or (family is not None and prefix.startswith(family) and len(prefix) > len(family)
                               and b"/" not in prefix[len(family):] and prefix[len(family):] != _FRAME):
            return _CARRIED_REAL if receives else _CARRIED
        if carrier.startswith(prefix):
            return _CARRIER_ONLY
        return None  # receives what it counts for in the group, or nothing: no part in the carried count

    def _note(self, conn: Hashable | None, prefix: bytes, delta: int) -> None:
        """A kept subscription of ``conn`` to ``prefix`` came (1) or went (-1): its part in the
        count of a group with carried topics."""
        for group in self._carriers:
            kind = self._kind(prefix, group)
            if kind is None:
                continue
            kinds = self._kinds.setdefault((conn, group), [0, 0, 0])
            before = _carried_extra(kinds)
            kinds[kind] += delta
            self._carried_count[group] = self._carried_count.get(group, 0) + _carried_extra(kinds) - before
            if not any(kinds):
                del self._kinds[conn, group]

    def _rebuild_carried(self) -> None:
        """The carried counts anew from every kept subscription (after the tracked topics changed)."""
        if not self._carriers:
            return
        self._kinds.clear()
        self._carried_count.clear()
        for conn, held in self._held.items():
            for prefix in held:
                self._note(conn, prefix, 1)
        for prefix, n in self._anon.items():
            for _ in range(n):
                self._note(None, prefix, 1)

    def _contribution(self, prefix: bytes) -> tuple[list[bytes] | tuple[bytes, ...], set[bytes] | frozenset[bytes]]:
        """The tracked topics a subscription to ``prefix`` receives, and the groups it counts in
        as such (not one with carried topics where it receives only the carrier: ``carry``)."""
        topics, groups = self._raw_groups(prefix)
        if self._carriers and groups:
            for group in groups & self._carriers.keys():
                if self._kind(prefix, group) == _CARRIER_ONLY:
                    groups = groups - {group}
        return topics, groups

    def _snapshot(self, prefix: bytes) -> tuple[list[bytes], set[bytes]]:
        topics, groups = self._contribution(prefix)
        return list(topics), set(groups)

    def _recount(self, before: dict[bytes, tuple[list[bytes], set[bytes]]]) -> None:
        """Move the live counts of the prefixes in ``before`` from what they received then to what
        they receive now (after tracking a topic or a family)."""
        for prefix, (topics, groups) in before.items():
            n = self._live[prefix]
            now_topics, now_groups = self._contribution(prefix)
            for topic in set(now_topics).difference(topics):
                self._receivers[topic] += n
            for group in now_groups - groups:
                self._groups[group] += n
            for group in groups - now_groups:
                self._groups[group] -= n

    def _apply(self, prefix: bytes, delta: int) -> Sequence[bytes]:
        topics, groups = self._contribution(prefix)
        for topic in topics:
            self._receivers[topic] += delta
        for group in groups:
            self._groups[group] += delta
        return topics

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, prefix: bytes, conn: Hashable | None = None) -> Sequence[bytes]:
        """Count ``conn``'s subscription to ``prefix`` (None: a connection not known, every
        subscribe counts). Returns the tracked topics it receives (for the latched ones: a new
        subscriber waits for them); none when ``conn`` held ``prefix`` already, or when it is over
        the cap. The sequence is the core's own: read it, do not keep it."""
        held = None
        if conn is not None:
            held = self._held.get(conn)
            if held is not None and prefix in held:
                return _NO_TOPICS  # a duplicate: libzmq keeps one, and sends one unsubscribe
        if prefix not in self._index:
            # A prefix that receives no tracked topic: kept (a topic tracked later may match it) up
            # to the cap, beyond it only counted. Longer than any topic, it never matches one.
            if self._extra >= self.max_prefixes or len(prefix) > contracts.MAX_TOPIC_BYTES:
                self._count_over_cap(conn)
                return _NO_TOPICS
            self._extra += 1
        self._total += 1
        if conn is None:
            self._anon[prefix] = self._anon.get(prefix, 0) + 1
        elif held is None:
            self._held[conn] = {prefix}
        else:
            held.add(prefix)
        self._live[prefix] = self._live.get(prefix, 0) + 1
        if self._carriers:
            self._note(conn, prefix, 1)
        return self._apply(prefix, 1)

    def _count_over_cap(self, conn: Hashable | None) -> None:
        self._total += 1
        self._unstored += 1
        self.prefixes_over_cap += 1
        if conn is None:
            self._anon_over += 1
        else:
            self._over[conn] = self._over.get(conn, 0) + 1
        now = time.monotonic()
        if now >= self._cap_warn_at:
            self._cap_warn_at = now + _CAP_WARN_INTERVAL_S
            log.warning(
                "subscribers hold more than %d subscriptions to prefixes that receive none of the topics published "
                "here (or to ones longer than %d bytes): the others are not kept, only counted (%d so far; ZeroMQ "
                "still filters for them; subscriptions to the topics published here are always kept)",
                self.max_prefixes, contracts.MAX_TOPIC_BYTES, self.prefixes_over_cap)

    def unsubscribe(self, prefix: bytes, conn: Hashable | None = None) -> None:
        """``conn``'s unsubscribe from ``prefix`` (None: no connection named, as libzmq's own for a
        connection that closed). Removes ``conn``'s subscription at once when it holds ``prefix``;
        any other waits for ``settle``."""
        if conn is not None:
            held = self._held.get(conn)
            if held is not None and prefix in held:
                held.remove(prefix)
                if not held:
                    del self._held[conn]
                self._remove(prefix, conn)
                return
        self._pending.append((prefix, conn))

    def needs_connection(self, prefix: bytes) -> bool:
        """Whether an unsubscribe from ``prefix`` may need its connection named: a connection holds
        it, or subscriptions over the cap are counted. Otherwise ``unsubscribe(prefix, None)`` does
        the same, and the core spares itself naming the connection."""
        return prefix in self._live or self._unstored > 0

    def _remove(self, prefix: bytes, conn: Hashable | None) -> None:
        """``conn``'s kept subscription to ``prefix`` is gone."""
        if self._carriers:
            self._note(conn, prefix, -1)
        self._total -= 1
        n = self._live[prefix]
        if n > 1:
            self._live[prefix] = n - 1
        else:
            del self._live[prefix]
        if prefix not in self._index:
            self._extra -= 1
        self._apply(prefix, -1)

    @property
    def pending(self) -> bool:
        """Whether unsubscribes wait for ``settle``."""
        return bool(self._pending)

    def settle(self, alive: Callable[[Hashable], bool]) -> None:
        """Resolve the unsubscribes that did not remove a subscription at once (see the module
        docstring): drop the connections ``alive`` says are closed (asked once each, and only when
        such unsubscribes wait), then match the waiting unsubscribes with what was dropped. The core
        calls it once a read."""
        if not self._pending:
            return
        for conn in [c for c in self._held.keys() | self._over.keys() if not alive(c)]:
            self.drop(conn)
        pending, self._pending = self._pending, []
        for prefix, conn in pending:
            self._settle_one(prefix, conn)

    def _sweep(self) -> None:
        """Drop the connections ``alive`` says are closed, at most once a ``SWEEP_INTERVAL_S``."""
        now = time.monotonic()
        if self._alive is None or now - self._swept_at < SWEEP_INTERVAL_S:
            return
        self._swept_at = now
        for conn in [c for c in self._held.keys() | self._over.keys() if not self._alive(c)]:
            self.drop(conn)

    def drop(self, conn: Hashable) -> None:
        """Forget every subscription of ``conn``, a connection that closed; the unsubscribes libzmq
        makes for them, read before or after, then change nothing."""
        for prefix in self._held.pop(conn, ()):
            self._remove(prefix, conn)
            if prefix in self._gone or len(self._gone) < self.max_prefixes:
                self._gone[prefix] = self._gone.get(prefix, 0) + 1
            else:
                self._gone_over += 1
        over = self._over.pop(conn, 0)
        self._total -= over
        self._unstored -= over
        self._gone_over += over

    def merge(self, old: Hashable, new: Hashable) -> None:
        """Hand every subscription of ``old`` to ``new``, when the caller cannot tell their messages
        apart (``old`` closed and ``new`` took its descriptor while a read was taking them): ``new``
        is then counted for all of them until it closes, never for fewer than it holds. A prefix both
        hold counts once (libzmq reports ``old``'s as gone later, with no connection named)."""
        held = self._held.pop(old, None)
        if held:
            into = self._held.get(new)
            if into is None:
                self._held[new] = held
            else:
                for prefix in held:
                    if prefix in into:
                        self._remove(prefix, old)
                    else:
                        into.add(prefix)
            if self._carriers:
                self._rebuild_carried()
        over = self._over.pop(old, 0)
        if over:
            self._over[new] = self._over.get(new, 0) + over

    def _settle_one(self, prefix: bytes, conn: Hashable | None) -> None:
        n = self._gone.get(prefix)
        if n:  # a dropped connection's, already taken off
            if n > 1:
                self._gone[prefix] = n - 1
            else:
                del self._gone[prefix]
            return
        if self._gone_over:
            self._gone_over -= 1
            return
        if conn is not None:
            # A live connection's subscription that is not kept: over the cap (libzmq reports an
            # unsubscribe only for a subscription the connection holds).
            over = self._over.get(conn)
            if over:
                if over > 1:
                    self._over[conn] = over - 1
                else:
                    del self._over[conn]
                self._total -= 1
                self._unstored -= 1
            return
        n = self._anon.get(prefix)
        if n:
            if n > 1:
                self._anon[prefix] = n - 1
            else:
                del self._anon[prefix]
            self._remove(prefix, None)
        elif self._anon_over:
            self._anon_over -= 1
            self._total -= 1
            self._unstored -= 1

    # ------------------------------------------------------------------ questions

    @property
    def prefixes(self) -> set[bytes]:
        """The prefixes of the live subscriptions that are kept (see ``max_prefixes``)."""
        return set(self._live)

    @property
    def connections(self) -> int:
        """Connections that hold a live subscription."""
        return len(self._held.keys() | self._over.keys())

    def receivers(self, topic: bytes) -> int:
        """Live subscriptions that receive ``topic``. A tracked topic is one look-up; another, one
        per byte of it."""
        n = self._receivers.get(topic)
        if n is None:
            n = sum(self._live.get(topic[:i], 0) for i in range(len(topic) + 1))
        return n

    def count(self, prefix: bytes = b"") -> int:
        """Live subscriptions that receive some topic under ``prefix`` (see
        ``XpubCore.subscriptions``): a group's count, all of them for ``b""``, else a scan of the
        kept prefixes (at most max_prefixes plus the tracked topics')."""
        self._sweep()
        n = self._groups.get(prefix)
        if n is not None:
            return n + self._carried_count.get(prefix, 0)
        if not prefix:
            return self._total
        return sum(n for p, n in self._live.items() if prefix.startswith(p) or p.startswith(prefix))
