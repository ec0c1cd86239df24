"""Progress for long stages: a tqdm bar on a terminal, plain summary lines anywhere else.

Piped into a file or a CI log, a tqdm bar writes one frame per refresh (thousands of lines for a
bench). Off a terminal, ``progress`` instead prints a line when a stage starts (``set_postfix_str``
names the stage), a heartbeat at most every ``interval_s`` seconds while a stage runs long (training:
done/total, elapsed time, ETA and the postfix), and one summary line at the end: what was done, how
many, how fast ("stopped" instead of "done" when an exception left the ``with`` block or the caller
said so with ``mark_stopped``). ``logs_above(bar)`` writes log records above a tqdm bar instead of
onto its line. ``-q`` (``set_quiet``) turns progress off, as it leaves only warnings and errors.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, TextIO

#: Set by the command line's ``-q``: every progress display is off, bar and lines alike.
_quiet = False


def set_quiet(quiet: bool) -> None:
    """``-q``: no progress on stderr, whatever a command's own progress setting says."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    """Whether the command line said ``-q``: commands then leave out what is not a result line."""
    return _quiet


def progress(*, total: int | None = None, initial: int = 0, desc: str = "", unit: str = "it",
             disable: bool = False, file: TextIO | None = None, interval_s: float = 30.0):
    """A tqdm bar when ``file`` (default stderr) is a terminal, else a ``LineProgress``; the same
    calls work on both (update, set_postfix, set_postfix_str, close, and ``with``). Off under ``-q``."""
    stream = file if file is not None else sys.stderr
    disable = disable or _quiet
    if not disable and _isatty(stream):
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc or None, unit=unit, file=stream)
    return LineProgress(total=total, initial=initial, desc=desc, unit=unit, disable=disable, file=stream,
                        interval_s=interval_s)


@contextlib.contextmanager
def logs_above(bar: Any) -> Iterator[None]:
    """While ``bar`` is a tqdm bar, the root logger's console lines are written above it (tqdm's
    ``write``), not appended to the bar's line; a ``LineProgress`` (whole lines) needs nothing."""
    console = [h for h in logging.root.handlers
               if isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.stderr)]
    if isinstance(bar, LineProgress) or not console:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(tqdm_class=type(bar)):
        yield


def mark_stopped(bar: Any) -> None:
    """Say that ``bar``'s work ends unfinished (Ctrl-C, a stop signal): a ``LineProgress`` then
    closes with "stopped", not "done"; a tqdm bar needs nothing, it shows the count it reached."""
    if isinstance(bar, LineProgress):
        bar.stopped = True


def plural(n: int, unit: str) -> str:
    """``unit`` for a count of ``n``: "1 step", "0 steps", "6 runs"; tqdm's "it" stays as it is."""
    return unit if n == 1 or unit == "it" or unit.endswith("s") else unit + "s"


def count_of(n: int, unit: str) -> str:
    """``n`` and its ``unit``: "1 image", "101 images"."""
    return f"{n} {plural(n, unit)}"


def clock_time(seconds: float) -> str:
    """``65`` -> ``"01:05"``, ``3725`` -> ``"1:02:05"``: a duration as a tqdm bar shows it."""
    minutes, secs = divmod(max(0, int(round(seconds))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class RecentPace:
    """The pace of the last ``span_s`` seconds or so, for an ETA: the units left times the recent
    seconds per unit (whatever else that time held, such as a training run's validations).

    ``add(n, now)`` is cheap enough for every update: it keeps a sample at most every ``span_s / 20``
    seconds, and the oldest kept sample is the last one at least ``span_s`` old."""

    def __init__(self, n: int, now: float, *, span_s: float = 300.0) -> None:
        self.span_s = span_s
        self.samples: deque[tuple[float, int]] = deque([(now, n)])

    def add(self, n: int, now: float) -> None:
        if now - self.samples[-1][0] >= self.span_s / 20:
            self.samples.append((now, n))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.span_s:
            self.samples.popleft()

    def seconds_left(self, n: int, total: int, now: float) -> float | None:
        """Seconds until ``n`` reaches ``total`` at the recent pace; None before any unit was timed."""
        since, first = self.samples[0]
        if n <= first or now <= since:
            return None
        return max(0, total - n) * (now - since) / (n - first)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


class LineProgress:
    """The off-terminal stand-in for a tqdm bar: a few whole lines instead of bar frames."""

    def __init__(self, *, total: int | None, initial: int, desc: str, unit: str, disable: bool,
                 file: TextIO, interval_s: float) -> None:
        self.total, self.n, self.desc, self.unit = total, initial, desc or "progress", unit
        self.disable, self.file, self.interval_s = disable, file, interval_s
        self.start = self.last_line = time.monotonic()
        self.pace = RecentPace(initial, self.start)
        self.initial = initial
        self.postfix = ""
        self.closed = False
        self.stopped = False  # the work ended unfinished: the summary says "stopped"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        self.pace.add(self.n, now)
        if now - self.last_line >= self.interval_s:
            self._line(self._status(now))

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str) -> None:
        if text != self.postfix:
            self.postfix = text
            self._line(f"{self.desc}: {text}")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        elapsed = time.monotonic() - self.start
        done = self.n - self.initial
        rate = f" ({done / elapsed:.1f} {self.unit}/s)" if elapsed > 0 and done else ""
        how = "stopped" if self.stopped else "done"
        self._line(f"{self.desc}: {how}, {done} {plural(done, self.unit)} in {elapsed:.1f} s{rate}")

    def _status(self, now: float) -> str:
        of = f"/{self.total}" if self.total else ""
        left = self.pace.seconds_left(self.n, self.total, now) if self.total else None
        eta = f", ETA {clock_time(left)}" if left is not None else ""
        extra = f", {self.postfix}" if self.postfix else ""
        unit = plural(self.total if self.total else self.n, self.unit)
        return f"{self.desc}: {self.n}{of} {unit}, elapsed {clock_time(now - self.start)}{eta}{extra}"

    def _line(self, text: str) -> None:
        self.last_line = time.monotonic()
        if not self.disable:
            print(text, file=self.file, flush=True)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_exc: object) -> None:
        if exc_type is not None:  # Ctrl-C or an error ended the block: nothing was "done"
            self.stopped = True
        self.close()
