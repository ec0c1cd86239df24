"""The rate limit of the node's audit of refused CURVE handshakes (``security.AuditingAuthenticator``):
each refused client key and address named, without letting a flood of keys flood the log."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

#: Seconds between audit lines for the same refused key and address (others are counted).
AUDIT_INTERVAL_S = 10.0
#: Key/address pairs named per AUDIT_INTERVAL_S; the refusals beyond (a flood of new keys) share
#: one summary line per interval.
MAX_AUDIT_NAMED = 20


class AuditLog:
    """The rate limit of the refusal audit (one thread: the authenticator's).

    A key/address pair is named at its first refusal, then at most once per ``interval_s`` (with
    the count of its refusals in between). At most ``max_named`` pairs are named per interval: the
    refusals beyond (a flood of new keys) are summed in one line per interval naming the latest.
    A pair is remembered only for ``interval_s`` after its line, so the record stays small (at most
    about ``2 * max_named`` pairs) and, once a flood has passed, a new client is named again at
    once; during one it is named within an interval of the flood's end. The refusals of a flood's
    last interval are summed by ``flush`` (called each second by the allow-list watcher, and at stop),
    else they would wait for a next refusal that may never come.
    """

    def __init__(self, logger: logging.Logger, interval_s: float, max_named: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self.interval_s = interval_s
        self.max_named = max_named
        self._clock = clock
        # pair -> [time of its last line, refusals since], in the order of their last line.
        self._pairs: dict[str, list] = {}
        self._window_at = -float("inf")  # start of the interval counting named pairs
        self._named = 0
        self._other_at = -float("inf")  # last summary line
        self._other = 0  # refusals not named since the last summary line
        self._other_latest: tuple[str, tuple] = ("", ())  # the latest of them: its line and arguments
        self._lock = threading.Lock()  # refused: the ZAP thread; flush: the watcher

    def __len__(self) -> int:
        return len(self._pairs)

    def refused(self, pair: str, line: str, *args: object) -> bool:
        """Log ``line % args`` for ``pair`` unless rate-limited; True when a line was logged."""
        with self._lock:
            return self._refused(pair, line, *args)

    def flush(self, *, final: bool = False) -> bool:
        """Log the summary of the refusals not named since the last one, once ``interval_s`` has
        passed since it (at once when ``final``); True when a line was logged."""
        with self._lock:
            now = self._clock()
            if not self._other or (not final and now - self._other_at < self.interval_s):
                return False
            line, args = self._other_latest
            self._summarise(now, line, args)
            return True

    def _summarise(self, now: float, line: str, args: tuple) -> None:
        self._log.warning(
            "CURVE: %d refused handshakes not named one by one (more than %d client key/address pairs in "
            "%g s: a flood of keys?); the latest: " + line, self._other, self.max_named, self.interval_s, *args)
        self._other_at, self._other = now, 0

    def _refused(self, pair: str, line: str, *args: object) -> bool:
        now = self._clock()
        seen = self._pairs.get(pair)
        if seen is not None and now - seen[0] < self.interval_s:
            seen[1] += 1
            return False
        more = 0
        if seen is not None:
            more = seen[1]
            del self._pairs[pair]  # named again below: back at the end of the order
        while self._pairs:  # forget the pairs whose line is older than the interval (oldest first)
            oldest = next(iter(self._pairs))
            if now - self._pairs[oldest][0] < self.interval_s:
                break
            del self._pairs[oldest]
        if now - self._window_at >= self.interval_s:
            self._window_at, self._named = now, 0
        if self._named >= self.max_named:
            self._other += 1
            self._other_latest = (line, args)
            if now - self._other_at < self.interval_s:
                return False
            self._summarise(now, line, args)
            return True
        self._named += 1
        self._pairs[pair] = [now, 0]
        self._log.warning(line + (f" ({more} more since the last report)" if more else ""), *args)
        return True
