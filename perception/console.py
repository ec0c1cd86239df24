"""A command's output streams: result lines that survive a closed terminal or a full disk.

``emit`` prints a result line; ``GoneSafe`` wraps a stream for running output. A terminal or pipe
that is gone (a closed ssh session, a reader that exited) sends later writes to /dev/null so the
command still finishes its files; a stdout that fails otherwise (a full disk behind ``> log``) is
remembered, and the dispatcher (``perception/cli.py``) ends with one line naming it
(``stdout_failed``), exit 1. ``escape_unencodable`` makes stdout escape what its encoding cannot hold.

Imported by every command and the runtime node: standard library only.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import sys
from typing import TextIO

#: What a write to a terminal or pipe that is gone raises: the terminal or ssh session closed (EIO,
#: ENXIO), the reader of a pipe exited (EPIPE).
GONE_ERRNOS = (errno.EIO, errno.ENXIO, errno.EPIPE)
#: The first write to stdout that failed for another reason than its reader being gone (a full disk
#: or quota behind ``> log``, ``>/dev/full``): ``(where stdout went, the error)``. The command goes
#: on (a recording stays whole) with stdout on /dev/null, and ends with one line naming it, exit 1.
_stdout_failure: tuple[str, OSError] | None = None


def emit(text: str, file: TextIO | None = None) -> bool:
    """Print ``text`` (a command's result line) and flush; False when it could not be written.

    A command that a closed ssh session stopped (SIGHUP) has done its work and finished its files;
    only the line reporting it cannot be shown. The stream is then pointed at /dev/null (so later
    writes and the interpreter's final flush are quiet) and the command ends with its own status,
    not a traceback and exit 1. A stdout that fails otherwise (a full disk) is pointed at /dev/null
    too and the command goes on; the dispatcher says so at its end (``stdout_failed``), exit 1."""
    stream = sys.stdout if file is None else file
    try:
        print(text, file=stream, flush=True)
    except OSError as exc:
        write_failed(stream, exc)
        return False
    return True


class GoneSafe:
    """A text stream for a command's running output (``listen``'s live lines, ``launch``'s node
    lines): once the terminal or pipe behind it is gone (a closed ssh session) or cannot be written
    (a full disk, see ``emit``), writes go to /dev/null instead of raising, so the command still
    runs to its end and writes its other outputs (``listen --json > file``); a closed stream
    (``>&-``: None) is gone from the start."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self.gone = stream is None

    def write(self, text: str) -> int:
        if not self.gone:
            self._guard(self._stream.write, text)
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            self._guard(self._stream.flush)

    def _guard(self, call, *args) -> None:
        try:
            call(*args)
        except OSError as exc:
            self.gone = True
            write_failed(self._stream, exc)
        except ValueError:  # closed under it: as gone
            self.gone = True


def write_failed(stream: TextIO, exc: OSError) -> None:
    """``stream`` failed a write with ``exc``: point it at /dev/null, and remember a stdout that
    failed for another reason than its reader being gone (``GONE_ERRNOS``), for ``stdout_failed``."""
    global _stdout_failure
    if exc.errno not in GONE_ERRNOS and _stdout_failure is None and _is_stdout(stream):
        where = ""
        with contextlib.suppress(OSError, ValueError, AttributeError):
            where = os.readlink(f"/proc/self/fd/{stream.fileno()}")
        _stdout_failure = (where, exc)
    to_devnull(stream)


def _is_stdout(stream: TextIO | None) -> bool:
    return stream is not None and (stream is sys.stdout or stream is sys.__stdout__)


def stdout_failed() -> str | None:
    """The error line for a stdout that could not be written since the command began (flushing what
    is still buffered first), or None."""
    stream = sys.stdout
    if stream is not None:
        try:
            stream.flush()
        except OSError as exc:
            write_failed(stream, exc)
        except ValueError:  # closed
            pass
    if _stdout_failure is None:
        return None
    where, exc = _stdout_failure
    reason = exc.strerror or str(exc)
    shown = where if where.isprintable() else repr(where)
    named = f" ({shown})" if where and not where.startswith(("pipe:", "socket:")) else ""
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    fix = ("free space on its disk or send stdout elsewhere" if full
           else "check the file or device stdout goes to, or send stdout elsewhere")
    return f"cannot write to stdout{named}: {reason}, so the result lines were lost; {fix}"


def to_devnull(stream: TextIO | None) -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):  # ValueError: no file descriptor (a test's capture)
        fd = stream.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)


def escape_unencodable() -> None:
    """A result line on stdout escapes what its encoding cannot hold (``PYTHONIOENCODING=ascii`` and
    a model named ``m_ñ.onnx``; a file name with a byte that is not UTF-8, ``m_\\udcff``), as
    Python's stderr does (backslashreplace), instead of failing the command with a
    UnicodeEncodeError after (or before) its work. A stdout already set to ``surrogateescape`` (the C
    locale without UTF-8 mode) keeps writing such bytes as they were and escapes only the rest."""
    stream = sys.stdout
    errors = getattr(stream, "errors", None)
    with contextlib.suppress(AttributeError, ValueError, OSError):  # not a TextIOWrapper, closed
        if errors == "strict":
            stream.reconfigure(errors="backslashreplace")
        elif errors == "surrogateescape":
            stream.reconfigure(errors=_SURROGATES_OR_ESCAPE)


_SURROGATES_OR_ESCAPE = "perception-surrogateescape-or-backslashreplace"


def _surrogates_or_escape(exc: UnicodeError) -> tuple[bytes, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = bytearray()
    for char in exc.object[exc.start:exc.end]:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not text when it was read (surrogateescape)
            out.append(code - 0xDC00)
        else:
            out += char.encode("ascii", "backslashreplace")
    return bytes(out), exc.end


codecs.register_error(_SURROGATES_OR_ESCAPE, _surrogates_or_escape)


def reset_stdout_failure() -> None:
    """Forget an earlier failure of stdout (a new command starts in this process)."""
    global _stdout_failure
    _stdout_failure = None
