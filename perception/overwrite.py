"""Outputs the user named are never replaced silently: one rule for every writer.

A file or folder named by a flag (``synth --contact-sheet``, ``eval --json``, ``demo --out``,
``bench --out``, ``listen --save-dir``) that already holds an earlier output is refused before any
work starts, in one line naming the path and the way out (``pass --overwrite to replace it``), as
``record``, ``view --out`` and ``train --out`` do; with ``--overwrite`` it is replaced. An output
the user did not name (``demo``'s ``out/``, ``bench``'s ``out/bench``, ``view``'s ``out/view.mp4``)
is the command's own and is replaced each run.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from perception.errors import ConfigError

#: What an output path that is a FIFO, a device or a socket is (``errors.why_not_a_file``'s words).
SPECIAL_FILE = "not a regular file (a device, pipe or socket)"


def is_special_file(path: str | Path) -> bool:
    """Whether ``path`` (through a symbolic link) is there and is neither a regular file nor a
    folder: a FIFO, whose writer waits for a reader for ever (a tool hung on one), a device or a
    socket. No output is written to one: it is refused before any work (``refuse_special_file``,
    ``refuse_existing_file``, ``modelfile.check_writable``, ``export.check_out``)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # not there (or not reachable): the writer says why
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def refuse_special_file(path: Path, *, flag: str) -> None:
    """ConfigError (one line, before any work) when the output ``path`` given as ``flag`` is a
    FIFO, a device or a socket (``is_special_file``), whatever ``--overwrite`` says."""
    if is_special_file(path):
        raise ConfigError(f"{flag} {path} is {SPECIAL_FILE}, which no output is written to; choose another {flag}")


def refuse_existing_file(path: Path, *, flag: str, overwrite: bool, example: str) -> None:
    """ConfigError before any work when writing the file ``path`` (given as ``flag``) would replace
    an existing file (or a symbolic link) without ``overwrite``, for a folder in its place
    (``example``: a file name to suggest inside it), and for a FIFO, device or socket there
    (``refuse_special_file``) with or without ``overwrite``."""
    refuse_special_file(path, flag=flag)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file path such as {path / example}")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise ConfigError(f"{flag} {path} already exists; choose another {flag}, remove it, or pass --overwrite to "
                          "replace it")


def refuse_earlier_output(folder: Path, found: Sequence[Path], *, flag: str, what: str, overwrite: bool) -> None:
    """ConfigError before any work when the folder ``folder`` (given as ``flag``) holds ``found``,
    the files of an earlier output (``what``: whose, e.g. "an earlier demo"), without
    ``overwrite``. The files are named (the first three), relative to ``folder``."""
    if not found or overwrite:
        return
    names = [str(p.relative_to(folder)) if p.is_relative_to(folder) else str(p) for p in found[:3]]
    listed = ", ".join(names) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    them = "it" if len(found) == 1 else "them"
    raise ConfigError(f"{flag} {folder} already holds {listed} ({what}); choose another {flag}, remove {them}, or "
                      f"pass --overwrite to replace {them}")


def remove_earlier_output(found: list[Path], *, folder: Path | None, flag: str, what: str,
                          folders: bool = False) -> None:
    """``--overwrite``: remove ``found``, the files of an earlier output (``refuse_earlier_output``'s),
    all of them, before the first new file is written; with ``folders`` also the subfolders they
    leave empty (a folder still holding other files stays). ConfigError naming a file that cannot
    be removed (``what``: whose it is, e.g. "a frame of an earlier view"). ``found`` is emptied, so
    a second call does nothing."""
    for path in found:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            where = f" in {flag} {folder}" if folder is not None else ""
            raise ConfigError(f"cannot remove {path}, {what}{where}: {exc.strerror}; remove it yourself or choose "
                              f"another {flag}") from None
    if folders:
        for parent in sorted({path.parent for path in found}):
            with contextlib.suppress(OSError):  # it holds other files (they stay), or it is a link to a folder
                parent.rmdir()
    found.clear()
