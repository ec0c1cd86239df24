"""Several frames in flight in the node's inference stage (``--streams N``), published in order.

With ``streams`` > 1 the pipeline (``perception/pipeline.py``) runs N inference workers, each a
thread with its own letterbox batch and its own engine worker (``Engine.worker``: an OpenVINO
infer request, a shared ONNX Runtime session). ``InFlight`` is what they share:

- ``take`` hands a worker the next frame of the frame queue with a ticket, both under one lock, so
  tickets follow the queue's order;
- ``done`` counts a finished frame (toward ``max_frames``, which no frame taken may overshoot);
- ``in_order`` (the publish thread's side) holds each inferred frame until every earlier ticket
  has come back, then hands them on in ticket order: subscribers see increasing ``seq`` as with
  one worker. A frame that failed comes back as None (its place is let go, nothing published).

A worker may take a ticket at most ``window`` ahead of the oldest one not yet handed on, so a
stalled frame holds back at most that many finished ones (memory stays bounded).
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

from perception.frame_queue import FrameQueue

F = TypeVar("F")
T = TypeVar("T")


class InFlight(Generic[F, T]):
    """Tickets and the reorder step of the inference workers (see the module docstring).

    Args:
        frames: the frame queue the workers take from.
        window: the most tickets out (taken and not yet handed on in order) at once.
        limit: the most frames that may finish (``max_frames``; 0: no limit).
    """

    def __init__(self, frames: FrameQueue[F], *, window: int, limit: int = 0) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.frames = frames
        self.window = window
        self.limit = limit
        self._take_lock = threading.Lock()  # one taker at a time: ticket order is queue order
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._handed_on = 0  # tickets released by in_order (publish thread)
        self.in_hand = 0  # frames taken and not yet done
        self.completed = 0  # frames done successfully
        self._held: dict[int, T | None] = {}  # publish thread only
        self._next_out = 0

    def _may_take(self) -> bool:
        if self._next_ticket - self._handed_on >= self.window:
            return False
        return not self.limit or self.completed + self.in_hand < self.limit

    @property
    def exhausted(self) -> bool:
        """``limit`` frames have finished: no worker takes another."""
        return bool(self.limit) and self.completed >= self.limit

    def take(self, timeout: float) -> tuple[int, F] | None:
        """The next frame and its ticket; None when nothing could be taken within ``timeout`` (an
        empty queue, a full window, or ``limit`` frames finished or in hand).

        Raises:
            QueueClosed: the frame queue is closed and empty.
        """
        with self._take_lock:
            with self._cond:
                if not self._cond.wait_for(self._may_take, timeout=timeout):
                    return None
            frame = self.frames.get(timeout=timeout)
            if frame is None:
                return None
            with self._cond:
                ticket = self._next_ticket
                self._next_ticket += 1
                self.in_hand += 1
            return ticket, frame

    def done(self, *, ok: bool) -> bool:
        """A taken frame finished (``ok``: inferred and handed on); True when it was the ``limit``-th."""
        with self._cond:
            self.in_hand -= 1
            self.completed += ok
            self._cond.notify_all()
            return ok and bool(self.limit) and self.completed == self.limit

    def in_order(self, ticket: int, item: T | None) -> list[T]:
        """Publish thread: hold ``item`` (None: its frame failed) and return every held item whose
        turn has come, in ticket order."""
        self._held[ticket] = item
        ready: list[T] = []
        start = self._next_out
        while self._next_out in self._held:
            out = self._held.pop(self._next_out)
            self._next_out += 1
            if out is not None:
                ready.append(out)
        if self._next_out != start:
            with self._cond:
                self._handed_on = self._next_out
                self._cond.notify_all()
        return ready

    @property
    def held(self) -> int:
        """Inferred frames waiting for an earlier ticket (not published if the run ends now)."""
        return sum(item is not None for item in list(self._held.values()))
