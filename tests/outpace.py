"""Make a simulated engine slower than its sources by waiting on them, not by sleeping.

A test that needs the keep-latest queue to drop must make inference outlast capture. A fixed
sleep does that on a quiet machine only (CI once failed when a loaded machine made the sources
slower than the sleep). ``wait_for_more_frames`` returns once every source has read ``more``
further frames, so a capacity-1 queue must have dropped one, or has read nothing for ``idle_s``
(it has ended, or stopped after its last frame).
"""

from __future__ import annotations

import time
from collections.abc import Sequence


def wait_for_more_frames(sources: Sequence, *, more: int = 2, idle_s: float = 0.5) -> None:
    start = [s.frames_read for s in sources]
    last, idle_since = list(start), [time.monotonic()] * len(sources)
    while True:
        now = time.monotonic()
        for i, source in enumerate(sources):
            if source.frames_read != last[i]:
                last[i], idle_since[i] = source.frames_read, now
        if all(n >= s + more or now - t > idle_s for n, s, t in zip(last, start, idle_since, strict=True)):
            return
        time.sleep(0.001)
