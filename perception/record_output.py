"""What a recording's ``--out`` holds and who writes it: the files of an earlier recording there
(``out`` and its ``<stem>_N.mcap`` splits), whether a file is a finished MCAP file, and the lock
that keeps a second recorder off the same output. ``perception/mcap_writer.py``'s ``SplitWriter``
claims its output through these before it writes anything.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING

from perception.errors import ConfigError
from perception.mcap_layout import split_files

if TYPE_CHECKING:
    from perception.record import RecordConfig

log = logging.getLogger(__name__)

#: The last 8 bytes of a finished MCAP file (its closing magic); an unfinished one lacks them.
MCAP_MAGIC = b"\x89MCAP0\r\n"

def existing_outputs(config: RecordConfig) -> list[Path]:
    """Files a recording per ``config`` would replace or be mixed with: ``out`` and every existing
    split of that name, with or without ``--split-*`` (a replay of ``out`` would play old splits
    after the new ones, or the old ``out`` instead of them)."""
    out = Path(config.out)
    # A folder is left to open() to refuse ("cannot write"); a dangling link counts, as "xb" would fail on it.
    found = [out] if (out.exists() and not out.is_dir()) or out.is_symlink() else []
    # Old splits count without --split-* too: ``replay out/run.mcap`` would play the new file, not
    # them, and a folder replay both sessions mixed.
    return found + split_files(out)


def refuse_existing(config: RecordConfig) -> None:
    """Raise ConfigError naming the files a recording to ``config.out`` would overwrite."""
    found = existing_outputs(config)
    if found:
        names = ", ".join(str(f) for f in found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        one = len(found) == 1
        raise ConfigError(f"{names} already exist{'s' if one else ''} (an earlier recording); choose another --out, "
                          f"remove {'it' if one else 'them'}, or pass --overwrite to replace {'it' if one else 'them'}")


def lock_path(out: Path) -> Path:
    """The lock file of a recording to ``out`` and its splits: ``.run.mcap.lock`` beside ``run.mcap``."""
    out = Path(out)
    return out.with_name(f".{out.name}.lock")


class OutputLock:
    """Exclusive use of a recording's output (``out`` and its ``<stem>_N.mcap`` splits) by one
    recorder: ``fcntl.flock`` on ``lock_path(out)``, which holds the recorder's pid. A second
    recorder to the same ``out`` (however spelled: ``a/./run.mcap``, a linked folder) is refused
    with ConfigError naming the file and that pid, instead of both writing (with ``--overwrite``,
    each removing the other's file) and both reporting success over a file no one can read.

    The kernel drops the lock when the recorder ends, also when it is killed (SIGKILL, OOM): the
    file left then is taken over by the next recorder. ``release`` removes it (before unlocking:
    one that opened the old file meanwhile finds it gone and opens the new one)."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = lock_path(self.out)
        self._file: IO[bytes] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot write {self.out}: {exc.strerror}; choose a writable --out") from None
        while self._file is None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise ConfigError(f"cannot write {self.out} (its lock file {self.path.name}: {exc.strerror}); "
                                  "choose a writable --out") from None
            file = os.fdopen(fd, "r+b", buffering=0)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _lock_holder(file)
                file.close()
                who = f"another recorder (pid {holder})" if holder else "another recorder"
                raise ConfigError(f"{self.out} is being written by {who}, which holds {self.path}; stop it, or "
                                  "choose another --out") from None
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    file.close()
                    raise
                log.debug("no lock on %s (%s): this file system takes none", self.path, exc.strerror)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if same:
                self._file = file
            else:  # removed (and perhaps made again) by the recorder that held it, as it ended
                file.close()
        with contextlib.suppress(OSError):  # the pid is for the message above; a full disk leaves it out
            self._file.truncate(0)
            self._file.write(f"{os.getpid()}\n".encode())

    def release(self) -> None:
        """Remove the lock file and unlock; idempotent."""
        if self._file is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        self._file.close()
        self._file = None


def _lock_holder(file: IO[bytes]) -> int | None:
    """The pid written in a lock file, or None (not written yet, or not a pid)."""
    try:
        file.seek(0)
        text = file.read(32).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def finished_mcap(path: Path) -> bool | None:
    """Whether a regular file ends with MCAP's closing magic, as a finished file does (one whose
    recorder was killed lacks it: ``perception record --recover`` rebuilds it); None when it is not
    a regular file or cannot be read."""
    try:
        if not path.is_file():
            return None
        with Path(path).open("rb") as f:  # not this module's open (tests stand in for it)
            size = f.seek(0, os.SEEK_END)
            if size < len(MCAP_MAGIC):
                return False
            f.seek(size - len(MCAP_MAGIC))
            return f.read(len(MCAP_MAGIC)) == MCAP_MAGIC
    except OSError:
        return None
