"""Error types for user mistakes and broken inputs.

Each carries a one-line message that names the input and the fix. ``perception.cli.main`` catches
``PerceptionError`` once and turns it into ``perception: error: <message>`` and a non-zero exit,
and does the same for an ``OSError`` about a file that no command caught (``os_error_line``);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import stat
import threading
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


class SubscribersMissingError(PublishError):
    """``--wait-subscribers N``: fewer than N subscribers connected within ``--wait-timeout`` (a
    recorder or listener not started yet). Like a source that is not there yet, a later restart
    may find them, so the exit code is the same 4 and launch files respawn such a node."""

    exit_code = SourceUnavailableError.exit_code


class DependencyError(PerceptionError):
    """An optional dependency (torch, tensorrt, a GPU) that the requested feature needs is absent."""

    exit_code = 3


class ResourceError(PerceptionError):
    """The system refused this process something it needs to run: a thread (the process limit,
    ``ulimit -u`` or a container's pids limit, or the memory limit, ``ulimit -v``). Not a bad input
    (exit 1, as a failing stage): a launch file's respawn may find the limit no longer reached."""

    exit_code = 1


#: What CPython's ``threading.Thread.start`` raises (RuntimeError) when the system refuses a thread.
THREAD_REFUSED = "can't start new thread"


def thread_refused(what: str) -> str:
    """The error line's text for ``what`` (``the engine-loading thread``) that could not start: the
    limits that refuse a thread, with their values, and the fix."""
    try:
        import resource

        def limit(which: int, unit: str = "") -> str:
            soft = resource.getrlimit(which)[0]
            return "unlimited" if soft == resource.RLIM_INFINITY else f"{soft // 1024 if unit else soft}{unit}"

        nproc = f", now {limit(resource.RLIMIT_NPROC)}" if hasattr(resource, "RLIMIT_NPROC") else ""
        memory = f", now {limit(resource.RLIMIT_AS, ' KiB')}"
    except ImportError:  # not on Linux or macOS
        nproc = memory = ""
    from perception.cgroups import pids

    cap = pids()
    if cap is not None:  # a container's pids limit: most likely the one reached, so named first
        used = f", {cap[1]} in use" if cap[1] is not None else ""
        return (f"cannot start {what}: the system refused a new thread; raise the limit it reached, this cgroup's "
                f"pids limit (pids.max, now {cap[0]}{used}; a one-camera node on ONNX Runtime runs about 10 "
                f"threads), the processes and threads of this user (ulimit -u{nproc}) or the memory of this process "
                f"(ulimit -v{memory}), or stop other processes in this cgroup")
    return (f"cannot start {what}: the system refused a new thread; raise the limit it reached, the processes "
            f"and threads of this user (ulimit -u{nproc}; a container's pids limit) or the memory of this process "
            f"(ulimit -v{memory}), or stop other processes of this user")


def memory_refused(detail: str = "", what: str = "") -> str:
    """The error line's text for memory the system refused (``detail``: the error's own words,
    ``what``: what was being done): the address-space limit with its value when one is set
    (``ulimit -v``), and the fix."""
    detail = " ".join(detail.split())[:160]
    said = f"out of memory{' while ' + what if what else ''}{f' ({detail})' if detail else ''}"
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        limited = soft != resource.RLIM_INFINITY
    except (ImportError, AttributeError, OSError):  # not on Linux or macOS
        soft, limited = 0, False
    if limited:
        return (f"{said}: the memory this process may use is limited (ulimit -v, now {soft // 1024} KiB); raise the "
                "limit (ulimit -v unlimited), or free memory")
    return f"{said}: the system refused this process more memory; free memory (stop other processes) or raise a " \
           "container's memory limit"


def start_thread(thread: threading.Thread, what: str) -> None:
    """``thread.start()``; ResourceError (one line: the limits and the fix) when the system refuses it."""
    try:
        thread.start()
    except RuntimeError as exc:
        if THREAD_REFUSED not in str(exc):
            raise
        raise ResourceError(thread_refused(what)) from None


#: How to get the ``train`` extra (torch, torchvision, NNCF, the EfficientNet-Lite0 weights) and the
#: ``openvino`` extra: from the lock, as ``make demo`` installed the base (``make venv-dev`` installs
#: the locked train, openvino and dev extras into .venv); a plain ``pip install '.[train]'`` resolves
#: the newest releases instead of the versions the suite is verified with.
TRAIN_INSTALL_HINT = "make venv-dev in the perception checkout (the locked train extra), or pip install '.[train]' there"
OPENVINO_INSTALL_HINT = ("make venv-dev in the perception checkout (the locked openvino extra), or pip install "
                         "'.[openvino]' there")

#: The install line of the ``gpu`` extra (TensorRT 10/11, Torch-TensorRT, onnxruntime-gpu, cuda-python)
#: that every missing-TensorRT hint gives: PyPI's ``tensorrt`` is a stub that fetches the real wheels
#: from NVIDIA's index, so the index is named (README, "Installing TensorRT").
GPU_INSTALL_HINT = ("pip install -e '.[gpu]' --extra-index-url https://pypi.nvidia.com "
                    "(in the perception checkout, on a machine with an NVIDIA GPU)")


def ort_gpu_fix() -> str:
    """How to get ONNX Runtime's CUDA and TensorRT providers, for a line saying this build has none.
    ``onnxruntime`` (the base install's) and ``onnxruntime-gpu`` (the ``gpu`` extra's) are one
    module in two packages: with both installed, whichever pip wrote last is the one imported, and
    the CPU one has no GPU providers (microsoft/onnxruntime#26996); only the GPU one may stay."""
    from importlib import metadata

    def installed(name: str) -> bool:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            return False
        return True

    if installed("onnxruntime") and installed("onnxruntime-gpu"):
        return ("both onnxruntime and onnxruntime-gpu are installed, and the CPU one hides the GPU one's providers: "
                "pip uninstall -y onnxruntime onnxruntime-gpu, then pip install onnxruntime-gpu")
    return f"install onnxruntime-gpu ({GPU_INSTALL_HINT})"


#: ``user:password@`` in a URL with a host part (``SCHEME://USERINFO@HOST``: a userinfo of at least
#: one character), and the value of a query key that names a secret (``?token=...``). Not in an
#: ``ipc://`` endpoint, whose rest is a path (``ipc://@name`` is a Linux abstract socket).
_URL_CREDENTIALS = re.compile(r"(?<![A-Za-z0-9+.\-])(?!(?i:ipc|inproc|file):)([A-Za-z][A-Za-z0-9+.\-]*:)//[^/@\s]+@")
_SECRET_QUERY = re.compile(r"(?i)([?&;][^=&;#\s]*(?:token|pass|pwd|secret|key|auth|sig)[^=&;#\s]*=)[^&;#\s,'\")\]>]*")


def hide_credentials(text: str) -> str:
    """``text`` (a source spec, a command line, an error) with URL credentials and secret query
    values as ``***``: ``rtsp://admin:pw@cam/x?token=t`` -> ``rtsp://***@cam/x?token=***``. Every
    line that can reach a log or a terminal goes through it (journals outlive the car's keys)."""
    return _SECRET_QUERY.sub(r"\1***", _URL_CREDENTIALS.sub(r"\1//***@", text))


def why_not_a_file(path: str | Path) -> str:
    """Why ``path`` is not a regular file, in a few words for an error line ("not found", "is a
    directory", ...), so that a folder or a FIFO given for a file is not reported as missing. A
    folder on the way that may not be entered: ``permission_denied``'s words. A name too long for
    the file system raises its OSError: ``perception.cli`` says so in one line, naming the limits."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "is a symbolic link to nothing" if path.is_symlink() else "not found"
    except PermissionError:
        return permission_denied(path)
    except OSError as exc:  # ELOOP, ENOTDIR (a file where a folder should be) ...
        if exc.errno == errno.ENAMETOOLONG:
            raise
        return f"cannot be reached ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return "is a directory"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a device, pipe or socket)"
    return "is a file"


def _printable(text: object) -> str:
    """A name as typed when every character is printable, else as ``repr`` quotes it (a newline in
    a file name cannot fake a log line)."""
    text = str(text)
    return text if text.isprintable() else repr(text)


def permission_denied(path: str | Path) -> str:
    """What follows a file's name in an error line when this user may not read it: ``cannot be read:
    permission denied; check its permissions (ls -ld PATH) or run as a user who can read it``. A
    folder on the way that this user cannot enter is named instead of the file (``permission denied
    on folder data``): ``ls -l`` of the file itself would fail the same way."""
    return "cannot be read: " + _denied(path, "read it")


def _denied(path: str | Path, can: str) -> str:
    path = Path(path)
    blocker = path
    for folder in reversed(path.parents):  # from the top down: the first folder that cannot be entered
        if str(folder) != "." and os.path.isdir(folder) and not os.access(folder, os.X_OK):
            blocker = folder
            break
    where = "" if blocker == path else f" on folder {_printable(blocker)}"
    return (f"permission denied{where}; check its permissions (ls -ld {shlex.quote(str(blocker))}) "
            f"or run as a user who can {can}")


def unreadable(path: str | Path) -> str | None:
    """``permission_denied(path)`` when ``path`` is a file or folder this user may not read (or reach),
    else None (also when it is not there: that is for the caller to say). Opens a regular file
    without reading it and lists no folder beyond its first entry; a pipe or device is not opened."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            with os.scandir(path) as entries:
                next(entries, None)
        elif stat.S_ISREG(mode):
            os.close(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)))
    except PermissionError:
        return permission_denied(path)
    except OSError:
        return None
    return None


def os_error_line(exc: OSError) -> str:
    """One line for an ``OSError`` no command caught (a file it could not open, read or write):
    the file, the system's reason and, for a permission problem, the fix."""
    name = exc.filename if exc.filename is not None else exc.filename2
    if name is not None:
        name = os.fsdecode(name) if isinstance(name, (str, bytes)) else str(name)
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
        if name is not None:
            return f"{_printable(name)}: {_denied(name, 'use it')}"
        return (f"permission denied ({exc.strerror or exc}); check the permissions of the files and devices it "
                "uses, or run as a user who may use them")
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        # The process's (EMFILE) or the system's (ENFILE) open-file limit, not the file: an import
        # or any other file may be the one that meets it.
        where = f" (opening {_printable(name)})" if name is not None else ""
        if exc.errno == errno.ENFILE:
            return (f"too many open files in the system{where}; close other programs' files or raise the system's "
                    "limit (sysctl fs.file-max)")
        return (f"too many open files{where}: the open-file limit (ulimit -n{_open_files_limit()}) is reached; "
                "raise it (ulimit -n 1024)")
    if exc.errno == errno.ENOMEM:
        # The system refused memory (a container's limit, ``ulimit -v``) while a file was opened or
        # read: the file is not at fault, and "check the file" would send the user the wrong way.
        return memory_refused(reason, f"opening {_printable(name)}" if name is not None else "")
    if name is not None:
        return f"{_printable(name)}: {reason}; check the file and its file system"
    return f"{reason} ({type(exc).__name__})"


def _open_files_limit() -> str:
    """``, now N``: the process's open-file limit, for the error line."""
    try:
        import resource

        return f", now {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}"
    except (ImportError, OSError, ValueError):
        return ""


def file_in_the_way(folder: str | Path) -> str | None:
    """"<path> is a file, not a folder" for the file (or other non-folder) at ``folder`` or at one of
    its parents that keeps ``folder`` from being created; None when there is none. ``mkdir`` says
    only "File exists" or "Not a directory", naming neither."""
    for candidate in (Path(folder), *Path(folder).parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else f"{candidate} is a file, not a folder"
    return None
