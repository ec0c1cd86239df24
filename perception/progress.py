"""Progress for long stages: a tqdm bar on a terminal, plain summary lines anywhere else.

Piped into a file or a CI log, a tqdm bar writes one frame per refresh (thousands of lines for a
bench). Off a terminal, ``progress`` instead prints a line when a stage starts (``set_postfix_str``
names the stage), a heartbeat at most every ``interval_s`` seconds while a stage runs long (training),
and one summary line at the end: what was done, how many, how fast.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def progress(*, total: int | None = None, initial: int = 0, desc: str = "", unit: str = "it",
             disable: bool = False, file: TextIO | None = None, interval_s: float = 30.0):
    """A tqdm bar when ``file`` (default stderr) is a terminal, else a ``LineProgress``; the same
    calls work on both (update, set_postfix, set_postfix_str, close, and ``with``)."""
    stream = file if file is not None else sys.stderr
    if not disable and _isatty(stream):
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc or None, unit=unit, file=stream)
    return LineProgress(total=total, initial=initial, desc=desc, unit=unit, disable=disable, file=stream,
                        interval_s=interval_s)


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
        self.initial = initial
        self.postfix = ""
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
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
        self._line(f"{self.desc}: done, {done} {self.unit} in {elapsed:.1f} s{rate}")

    def _status(self, now: float) -> str:
        of = f"/{self.total}" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {self.n}{of} {self.unit}, {now - self.start:.0f} s{extra}"

    def _line(self, text: str) -> None:
        self.last_line = time.monotonic()
        if not self.disable:
            print(text, file=self.file, flush=True)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
