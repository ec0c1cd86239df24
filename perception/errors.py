"""Error types for user mistakes and broken inputs.

Each carries a one-line message that names the input and the fix. ``perception.cli.main`` catches
``PerceptionError`` once and turns it into ``perception: error: <message>`` and a non-zero exit;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path


class PerceptionError(Exception):
    """Base class: a problem with something from outside (a file, a flag, a camera, a model)."""

    exit_code = 2


class ConfigError(PerceptionError):
    """A bad flag, config file or launch file."""


class DataError(PerceptionError):
    """A dataset that is missing, incomplete or inconsistent."""


class ModelError(PerceptionError):
    """A model or checkpoint file that is missing, corrupt, or lacks what the node needs."""


class SourceError(PerceptionError):
    """A camera, video, image folder or stream that cannot be opened or read."""


class SourceUnavailableError(SourceError):
    """A live source (camera, stream) that is not there right now: unplugged, not yet enumerated
    after boot, or its server down. Unlike a bad path, a later restart may find it, so launch files
    respawn nodes that fail this way."""

    exit_code = 4


class PublishError(PerceptionError):
    """A socket that cannot be bound or connected (address in use, bad endpoint, bad keys)."""


class DependencyError(PerceptionError):
    """An optional dependency (torch, tensorrt, a GPU) that the requested feature needs is absent."""

    exit_code = 3


#: ``user:password@`` in a URL, and the value of a query key that names a secret (``?token=...``).
_URL_CREDENTIALS = re.compile(r"//[^/@\s]*@")
_SECRET_QUERY = re.compile(r"(?i)([?&;][^=&;#\s]*(?:token|pass|pwd|secret|key|auth|sig)[^=&;#\s]*=)[^&;#\s,'\")\]>]*")


def hide_credentials(text: str) -> str:
    """``text`` (a source spec, a command line, an error) with URL credentials and secret query
    values as ``***``: ``rtsp://admin:pw@cam/x?token=t`` -> ``rtsp://***@cam/x?token=***``. Every
    line that can reach a log or a terminal goes through it (journals outlive the car's keys)."""
    return _SECRET_QUERY.sub(r"\1***", _URL_CREDENTIALS.sub("//***@", text))


def why_not_a_file(path: str | Path) -> str:
    """Why ``path`` is not a regular file, in a few words for an error line ("not found", "is a
    directory", ...), so that a folder or a FIFO given for a file is not reported as missing."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "is a symbolic link to nothing" if path.is_symlink() else "not found"
    except OSError as exc:  # ELOOP, EACCES, ENOTDIR (a file where a folder should be) ...
        return f"cannot be reached ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return "is a directory"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a device, pipe or socket)"
    return "is a file"


def file_in_the_way(folder: str | Path) -> str | None:
    """"<path> is a file, not a folder" for the file (or other non-folder) at ``folder`` or at one of
    its parents that keeps ``folder`` from being created; None when there is none. ``mkdir`` says
    only "File exists" or "Not a directory", naming neither."""
    for candidate in (Path(folder), *Path(folder).parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else f"{candidate} is a file, not a folder"
    return None
