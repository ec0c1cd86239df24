"""How a source spaces its frames in time (``--realtime``, ``--fps``): ``Pacer`` at a fixed rate, and
``TimestampPacer`` at each video frame's own timestamp (``FrameTime``), so a clip of variable frame
rate plays as recorded, with gaps capped. ``Source.pace``/``pace_by_timestamps`` (``base.py``) set
one up; a video file says where each frame sits on its timeline (``video.py``).
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

log = logging.getLogger(__name__)


class Pacer:
    """Sleeps so that successive calls are ``1/fps`` apart on the monotonic clock."""

    #: Whether ``Source.read`` paces each frame once it is read, by its timestamp (``TimestampPacer``).
    by_timestamps: ClassVar[bool] = False

    def __init__(self, fps: float) -> None:
        self.period_s = 1.0 / fps
        self._next_s: float | None = None

    def wait(self, interrupted: threading.Event) -> None:
        now = time.monotonic()
        if self._next_s is None or now - self._next_s > self.period_s:
            self._next_s = now  # first call, or too far behind to catch up: restart the schedule
        delay = self._next_s - now
        if delay > 0:
            interrupted.wait(delay)
        self._next_s += self.period_s


#: A jump forward in a video's frame timestamps longer than this and than ``GAP_INTERVALS`` usual
#: frame intervals is a gap (a recording paused, a clock jump) that ``--realtime`` does not wait out.
MIN_GAP_S = 1.0
GAP_INTERVALS = 10
#: The usual frame interval is the median of the last this many intervals.
USUAL_OF = 15


class FrameTime(NamedTuple):
    """Where a video frame sits on its file's timeline: ``pass_number`` (the pass of ``--loop``),
    ``index`` (the frame's number in the file) and ``at_s`` (its presentation timestamp in seconds,
    ``CAP_PROP_POS_MSEC``; None when there is none)."""

    pass_number: int
    index: int
    at_s: float | None


class TimestampPacer:
    """Paces a video file's frames by their own timestamps (``--realtime``): each frame is delivered
    as long after the one before as its timestamp is after that one's, so a clip of variable frame
    rate (30 fps, then 5) plays as recorded. ``wait`` (before a read) does nothing: ``Source.read``
    calls ``deliver`` with the frame's ``FrameTime`` once it has read it.

    The usual interval is the median of the last ``USUAL_OF`` ones (before any, ``1/fps``: the file's
    average rate). A frame follows the one before by one usual interval instead of its timestamps'
    difference when it has no timestamp of its own (none, or the same as the one before's: a raw
    H.264 stream's frames all say 0, so such a file plays at its average rate), when its timestamp
    goes back (recordings joined, a clock reset: said once per run), and when it jumps forward more
    than ``MIN_GAP_S`` and ``GAP_INTERVALS`` usual intervals (a recording paused, a clock jump: one
    warning names each such gap, once per run however many passes of ``--loop``), which would
    otherwise stall the node for the whole gap. Each pass of ``--loop`` starts the timeline again
    (its first frame one usual interval after the last). Behind by more than the frame's own interval
    (a slow reader), the schedule starts again from now, as ``Pacer``'s does, rather than
    delivering a burst to catch up. ``clock``: the monotonic clock (tests pass their own).
    """

    by_timestamps: ClassVar[bool] = True

    def __init__(self, fps: float, name: Callable[[], str], clock: Callable[[], float] | None = None) -> None:
        self.period_s = 1.0 / fps
        self._name = name
        self._clock = clock or time.monotonic
        self._due_s: float | None = None
        self._last: FrameTime | None = None
        self._intervals: deque[float] = deque(maxlen=USUAL_OF)
        self._said: set[object] = set()  # what has been logged once this run

    def wait(self, interrupted: threading.Event) -> None:
        """Nothing: a frame's time is known only once it is read (``deliver``)."""

    def usual_s(self) -> float:
        """The usual interval between frames: the median of the last ones, else the average rate's."""
        return statistics.median(self._intervals) if self._intervals else self.period_s

    def _once(self, key: object, level: int, msg: str, *args: Any) -> None:
        if key not in self._said:
            self._said.add(key)
            log.log(level, msg, *args)

    def interval_s(self, frame: FrameTime | None) -> float:
        """How long after the frame before ``frame`` is due (see the class)."""
        last, self._last = self._last, frame
        usual = self.usual_s()
        if frame is None or last is None or frame.pass_number != last.pass_number:
            return usual  # a source that does not say, or a new pass of --loop: its timeline starts again
        if frame.at_s is None or last.at_s is None or frame.at_s == last.at_s:
            self._once("none", logging.INFO, "%s: frame %d has no timestamp of its own; --realtime plays "
                       "such frames one frame interval (%.3f s) after the one before", self._name(), frame.index, usual)
            return usual
        step = frame.at_s - last.at_s
        if step < 0:
            self._once("back", logging.INFO, "%s: the timestamps go back %.3f s at frame %d (recordings joined, or "
                       "a clock reset); --realtime plays it one frame interval (%.3f s) after the one before",
                       self._name(), -step, frame.index, usual)
            return usual
        if step > max(MIN_GAP_S, GAP_INTERVALS * usual):
            self._once(("gap", frame.index), logging.WARNING, "%s: the timestamps jump %.1f s ahead at frame %d, "
                       "%.3f s into the clip (a recording paused, or a clock jump); --realtime plays it one frame "
                       "interval (%.3f s) after the one before instead of waiting %.1f s", self._name(), step,
                       frame.index, last.at_s, usual, step)
            return usual
        self._intervals.append(step)
        return step

    def deliver(self, frame: FrameTime | None, interrupted: threading.Event) -> bool:
        """Wait until ``frame`` (just read) is due; False when ``interrupted`` ended the wait."""
        now = self._clock()
        if self._due_s is None:
            self._due_s, self._last = now, frame  # the first frame: at once
            return True
        step = self.interval_s(frame)
        self._due_s += step
        if now - self._due_s > step:
            self._due_s = now  # too far behind to catch up: the schedule starts again from now
        delay = self._due_s - now
        return not (delay > 0 and interrupted.wait(delay))
