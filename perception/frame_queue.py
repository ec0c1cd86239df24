"""The bounded hand-off between pipeline stages (capture -> inference -> publish).

``FrameQueue(capacity, policy="latest")`` keeps only the newest items when the consumer falls behind
and counts what it dropped (the right choice for a live camera: stale frames are worthless);
``policy="lossless"`` blocks the producer instead, so every item is consumed exactly once and in
order (the right choice for files, and what tests rely on). Always bounded. ``close()`` wakes every
waiter; a closed queue still hands out what it holds, then reports the end with ``QueueClosed``.

The standard ``queue.Queue`` has neither drop-oldest nor close, hence this small class.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

QueuePolicy = Literal["latest", "lossless"]
QUEUE_POLICIES: tuple[str, ...] = ("latest", "lossless")


class QueueClosed(Exception):
    """Raised by ``get`` once the queue is closed and empty."""


class FrameQueue(Generic[T]):
    """A thread-safe bounded queue with a drop-oldest ("latest") or blocking ("lossless") policy.

    Args:
        capacity: the most items held at once (>= 1).
        policy: ``"latest"`` drops the oldest item when full and counts it in ``drops``;
            ``"lossless"`` makes ``put`` wait for room.
    """

    def __init__(self, capacity: int, policy: QueuePolicy = "latest") -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1, got {capacity}")
        if policy not in QUEUE_POLICIES:
            raise ValueError(f"queue policy must be one of {QUEUE_POLICIES}, got {policy!r}")
        self.capacity = capacity
        self.policy = policy
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._closed = False
        self.drops = 0
        self.puts = 0

    def put(self, item: T, timeout: float | None = None) -> bool:
        """Add ``item``. Returns False when the queue is closed (the item is discarded) or, for
        ``lossless``, when ``timeout`` seconds pass without room."""
        with self._lock:
            if self.policy == "lossless" and not self._not_full.wait_for(
                lambda: self._closed or len(self._items) < self.capacity, timeout=timeout
            ):
                return False
            if self._closed:
                return False
            if len(self._items) >= self.capacity:  # only reachable under "latest"
                self._items.popleft()
                self.drops += 1
            self._items.append(item)
            self.puts += 1
            self._not_empty.notify()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item; None when ``timeout`` seconds pass first.

        Raises:
            QueueClosed: the queue is closed and nothing is left in it.
        """
        with self._lock:
            if not self._not_empty.wait_for(lambda: self._closed or self._items, timeout=timeout):
                return None
            if not self._items:
                raise QueueClosed
            item = self._items.popleft()
            self._not_full.notify()
            return item

    def close(self) -> None:
        """Refuse new items and wake every waiting producer and consumer."""
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
