"""The TensorRT engine cache: an engine is reused only for the exact model, TensorRT and GPU.

A serialized TensorRT engine runs only on the TensorRT version and GPU model that built it, so
the cache key is sha256 over the ONNX bytes, the TensorRT version and its major version (10 and
11 build by different routes: weakly typed with builder flags, or strongly typed from an FP16
graph; see ``perception.engines.trt_build``), the GPU name and compute capability, the precision and the input
shapes. Torch-TensorRT's own engine cache lives in the ``torch_tensorrt`` folder of the same
directory (``torch_tensorrt_cache_dir``). An unchanged model loads its engine; a changed
ONNX file, TensorRT upgrade or different GPU gets a new key and is rebuilt. Default directory:
``~/.cache/perception/trt`` (``PERCEPTION_TRT_CACHE`` overrides it).

Torch-free and TensorRT-free (the node's engine loader uses it too): the GPU is identified
through ``nvidia-smi``, which ships with the driver. ``ort_providers`` (ONNX Runtime's GPU
provider list, with the TensorRT EP's engine and timing caches in this directory) lives here for
the same reason: the runtime and ``perception export`` both need it, and the runtime imports
nothing from the top-level ``export`` package.

The cache folders of every engine (ONNX Runtime's optimised graphs, OpenVINO's compiled models,
the ``--engine auto`` verdicts, TensorRT engines) go through the helpers below, since what is read
from them runs: a folder is made private (0700, whatever the umask), and one that another user owns
or that group or others can write is not used, nor an entry that another user owns or others can
write (``untrusted``), each said in one warning, after which the engine runs without that cache.
Without a home folder (``HOME`` unset and no passwd entry for the user id, an ``env -i`` supervisor
or a container under an arbitrary uid) the default folders do not exist: the engine runs without
them, with one warning (``default_dir``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from perception.errors import DependencyError

#: Bump when the key recipe below changes, so old entries are never mistaken for new ones.
#: 2: the TensorRT major version joined the key.
CACHE_KEY_VERSION = 2
PRECISIONS = ("fp32", "fp16", "int8")


#: Every warning about a cache folder or entry comes from this logger, once per process
#: (``warn_once``); the ``--engine auto`` probe child hands these on to the node (``auto.main``).
log = logging.getLogger(__name__)
_warned: set[str] = set()


def warn_once(message: str) -> None:
    """``message`` as a warning of this logger, unless this process said it already."""
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def home_dir() -> Path | None:
    """The user's home folder; None when there is none (``no_home`` says why): ``HOME`` unset and no
    passwd entry for this user id, ``HOME`` empty or relative, or naming no folder (which is not
    made here)."""
    if os.environ.get("HOME") == "":  # Path.home() would say "/"
        return None
    try:
        home = Path.home()
    except (RuntimeError, KeyError, OSError):  # "Could not determine home directory."
        return None
    return home if home.is_absolute() and home.is_dir() else None


def no_home() -> str:
    """Why ``home_dir`` found none, in words."""
    home = os.environ.get("HOME")
    if home is None:
        uid = os.geteuid()
        try:
            import pwd

            entry = pwd.getpwuid(uid).pw_dir
        except (ImportError, KeyError):
            return f"HOME is not set and user id {uid} has no passwd entry"
        return f"HOME is not set and the passwd home of user id {uid}, {entry!r}, is not a folder"
    return f"HOME={home!r} is not a folder" if home else "HOME is empty"


def default_dir(env: str, name: str, what: str, cost: str) -> Path | None:
    """``$env`` (``~`` expanded) when set, else ``~/.cache/perception/<name>``; None, with one
    warning naming ``what`` and its ``cost``, when neither can be named (no home folder)."""
    value = os.environ.get(env)
    if value:
        try:
            return Path(value).expanduser()
        except RuntimeError:  # "~/..." without a home folder
            pass
    else:
        home = home_dir()
        if home is not None:
            return home / ".cache" / "perception" / name
    warn_once(f"no home folder ({no_home()}): running without the {what}, so {cost}; set HOME, or {env} to a "
              "folder of your own")
    return None


def utf8_path(path: Path) -> str | None:
    """``path`` as the ``str`` a C++ library's Python binding takes (ONNX Runtime's, OpenVINO's
    ``CACHE_DIR``: it is encoded as UTF-8), or None when that would not name the same file: a name
    that is not valid UTF-8 (``m_\\xff.onnx``), or one that this Python's file system encoding
    (``PYTHONUTF8=0 LC_ALL=C``) writes otherwise."""
    text = str(path)
    try:
        return text if text.encode("utf-8") == os.fsencode(text) else None
    except UnicodeError:
        return None


def untrusted(st: os.stat_result) -> str:
    """Why a cache folder or entry with this ``stat`` is not to be used ('' when it may be): another
    user owns it, or group or others may write it (anyone could put a graph there that the engine
    would then run)."""
    if st.st_uid != os.geteuid():
        return f"it belongs to user id {st.st_uid}, not to this user ({os.geteuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"group or other users can write it (mode {stat.S_IMODE(st.st_mode):04o})"
    return ""


def usable_dir(path: Path, what: str, cost: str, *, create: bool = True) -> bool:
    """True when ``path`` can serve as the ``what`` folder: it is a folder of this user's that no one
    else can write, or it was missing and is made here (with its missing parents) mode 0700,
    whatever the umask. False, with one warning naming the folder, why and the ``cost``, otherwise
    (it cannot be made: read-only, full, no permission, a file in the way; or ``untrusted``).
    ``create=False`` (to read from it): a folder that is missing or cannot be reached is False
    without a word (nothing to read; the write that follows says why it cannot write)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if not create:
            return False
        try:
            make_private_dirs(path)
        except OSError as exc:
            warn_once(f"cannot write the {what} {path} ({os_cause(exc, path)}); {cost}")
            return False
        return True
    except OSError as exc:  # no permission to look, a file on the way, a name too long
        if create:
            warn_once(f"cannot use the {what} {path} ({os_cause(exc, path)}); {cost}")
        return False
    if not stat.S_ISDIR(st.st_mode):
        if create:
            warn_once(f"cannot use the {what} {path}: it is not a folder; {cost}")
        return False
    why = untrusted(st)
    if why:
        warn_once(f"not using the {what} {path}: {why}, so what it holds may not be this user's; {cost} "
                  "(remove the folder and it is made again, private to this user)")
        return False
    if st.st_mode & 0o077 and create:
        # A folder of this user's that others may read (an earlier release made it under umask 022):
        # made private as a new one is; what it holds stays (entries are read by their owner only).
        with contextlib.suppress(OSError):
            os.chmod(path, 0o700)
    return True


def make_private_dirs(path: Path) -> None:
    """Make ``path`` and its missing parents, each mode 0700 whatever the umask (OSError as mkdir)."""
    missing = []
    probe = path
    while not os.path.lexists(probe) and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:  # another process made it meanwhile: judged as an existing folder
            continue
        os.chmod(folder, 0o700)  # mkdir's mode passes through the umask


def trusted_entry(path: Path, what: str, cost: str) -> bool:
    """True when ``path`` is a cache entry that may be read: a regular file of this user's that no one
    else can write. False when it is absent (silently) or not to be trusted (one warning naming it,
    why and the ``cost``)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    why = "it is not a regular file" if not stat.S_ISREG(st.st_mode) else untrusted(st)
    if why:
        warn_once(f"not loading the {what} entry {path}: {why}; {cost}")
        return False
    return True


def os_cause(exc: OSError, path: Path | None = None) -> str:
    """The cause of a failed cache write in words: read-only, full, no permission, or the system's."""
    code = exc.errno
    if code is None and path is not None and disk_full(path):
        code = errno.ENOSPC
    return {
        errno.EROFS: "read-only file system",
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
    }.get(code, exc.strerror or str(exc) or type(exc).__name__)


def disk_full(path: Path) -> bool:
    """The file system of ``path`` (or of its nearest existing parent) has no free block left for
    this user."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        fs = os.statvfs(probe)
    except OSError:
        return False
    return fs.f_bavail == 0 or (os.geteuid() == 0 and fs.f_bfree == 0)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file beside it, then renamed), mode 0600
    whatever the umask; OSError as open/write."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


#: A temporary file of an interrupted write older than this is removed by ``prune_entries``.
TMP_MAX_AGE_S = 3600


def prune_entries(folder: Path, *, suffix: str, keep: set[Path], max_entries: int, max_bytes: int, what: str,
                  kind: str, names: re.Pattern[str] | None = None) -> int:
    """Remove the least recently changed ``*suffix`` files of ``folder`` (a cache's entries) beyond
    the ``max_entries`` newest or ``max_bytes`` in all (those in ``keep``, in use now, always stay),
    and, without ``names``, temporary files (``.tmp`` in the name) of writes interrupted over an hour
    ago; returns how many entries it removed, said in one log line (``what``: the cache, ``kind``:
    what an entry holds). ``names``: the only entry names it may remove (files of others may share
    the folder). A cache marks a hit by setting the entry's time, so what runs stays. An entry another
    process has open or mapped stays readable to it (Linux keeps an unlinked file's data): only its
    next start builds it again. Written here, not found in a library: ONNX Runtime and OpenVINO
    write their caches but never remove an entry."""
    now = time.time()
    kept = {str(k) for k in keep}
    entries: list[tuple[bool, float, int, str]] = []
    try:
        with os.scandir(folder) as scan:
            for item in scan:
                if not item.name.endswith(suffix):
                    continue
                try:
                    st = item.stat(follow_symlinks=False)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                if ".tmp" in item.name and names is None:
                    if now - st.st_mtime > TMP_MAX_AGE_S:
                        unlink_quietly(item.path)
                    continue
                if names is not None and not names.fullmatch(item.name):
                    continue
                entries.append((item.path not in kept, -st.st_mtime, st.st_size, item.path))
    except OSError:
        return 0
    entries.sort()
    count, total, removed = 0, 0, 0
    for other, _age, size, name in entries:
        if not other or (count < max_entries and total + size <= max_bytes):
            count, total = count + 1, total + size
        elif unlink_quietly(name):
            removed += 1
    if removed:
        log.info("%s %s: removed the %d least recently used %s%s (it keeps %d, at most %d MB)", what, folder,
                 removed, kind, "" if removed == 1 else "s", max_entries, max_bytes >> 20)
    return removed


def unlink_quietly(name: str | Path) -> bool:
    """Remove ``name``; False (no error) where it cannot be (gone already, no permission)."""
    try:
        os.unlink(name)
    except OSError:
        return False
    return True


def quiet_ort_telemetry() -> None:
    """``ORT_DISABLE_TELEMETRY=1`` when ONNX Runtime could not keep its telemetry device ID (in
    ``$XDG_CACHE_HOME`` or ``~/.cache``, under ``Microsoft/DeveloperTools/.onnxruntime``): it then
    prints a colour-coded "Failed to persist telemetry device ID" warning on stderr when imported,
    whatever ``NO_COLOR`` says and before any log level can be set. Left as it is when the user set
    the variable, or ONNX Runtime is imported already (call it before ``import onnxruntime``)."""
    import sys

    if "onnxruntime" in sys.modules or "ORT_DISABLE_TELEMETRY" in os.environ:
        return
    home = home_dir()
    base = os.environ.get("XDG_CACHE_HOME") or (str(home / ".cache") if home else "")
    if base and _ort_can_keep(Path(base, "Microsoft", "DeveloperTools", ".onnxruntime")):
        return
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"


def _ort_can_keep(folder: Path) -> bool:
    """ONNX Runtime can read or write its device ID in ``folder`` (it takes no folder or file of
    another user's, as root neither). The folder is made here as ONNX Runtime makes it (0700): the
    one test that a read-only, full or odd file system (``/proc``) cannot fool."""
    try:
        make_private_dirs(folder)
        st = os.stat(folder)
    except OSError:
        return False
    if st.st_uid != os.geteuid():
        return False
    try:
        ident = os.stat(folder / "deviceid")
    except OSError:
        return os.access(folder, os.W_OK | os.X_OK)
    # It writes there too (its database beside the ID) and warns where it cannot: a folder made
    # long ago on a root file system that is read-only now (os.access sees EROFS, as root too)
    return (ident.st_uid == os.geteuid() and os.access(folder / "deviceid", os.R_OK)
            and os.access(folder, os.W_OK | os.X_OK))


def default_cache_dir() -> Path:
    """The TensorRT engine cache folder: ``PERCEPTION_TRT_CACHE``, else ``~/.cache/perception/trt``;
    without a home folder (one warning), a private temporary folder of this process, removed at its
    exit (engines are then built at every start)."""
    return default_dir("PERCEPTION_TRT_CACHE", "trt", TRT_CACHE, TRT_COST) or _process_dir()


TRT_CACHE = "TensorRT engine cache"
TRT_COST = "engines are built at every start"
_process_cache: list[Path] = []


def _process_dir() -> Path:
    """A private temporary folder for this process's engines (see ``default_cache_dir``)."""
    if not _process_cache:
        import atexit

        folder = Path(tempfile.mkdtemp(prefix="perception-trt-"))
        atexit.register(shutil.rmtree, folder, True)
        _process_cache.append(folder)
    return _process_cache[0]


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; ``digest`` names the cache entry."""

    onnx_sha256: str
    trt_version: str
    trt_major: int
    gpu_name: str
    precision: str
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def digest(self) -> str:
        doc = json.dumps({"v": CACHE_KEY_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(doc.encode()).hexdigest()[:32]

    def to_dict(self) -> dict:
        doc = asdict(self)
        doc["input_shapes"] = {name: list(shape) for name, shape in self.input_shapes}
        return doc


def engine_key(
    onnx_bytes: bytes, *, trt_version: str, gpu_name: str, precision: str, input_shapes: dict[str, tuple[int, ...]]
) -> EngineKey:
    """The cache key of an engine built from ``onnx_bytes`` (see module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return EngineKey(
        onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        trt_version=trt_version,
        trt_major=trt_major(trt_version),
        gpu_name=gpu_name,
        precision=precision,
        input_shapes=tuple(sorted((name, tuple(int(d) for d in shape)) for name, shape in input_shapes.items())),
    )


def trt_major(trt_version: str) -> int:
    """The major version in a TensorRT version string (``"11.4.0"`` -> 11); ValueError if none."""
    head = str(trt_version).split(".", 1)[0]
    if not head.isdigit():
        raise ValueError(f"TensorRT version {trt_version!r} does not start with a major version number")
    return int(head)


def torch_tensorrt_cache_dir(directory: str | Path | None = None) -> Path:
    """Where Torch-TensorRT keeps its engines and timing cache: beside ours, in one place."""
    return (Path(directory) if directory is not None else default_cache_dir()) / "torch_tensorrt"


def gpu_name(device_index: int = 0) -> str:
    """``"<name> sm<major><minor>"`` of GPU ``device_index``, via nvidia-smi.

    Raises:
        DependencyError: no NVIDIA driver / GPU.
    """
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise DependencyError("no NVIDIA GPU found (nvidia-smi is missing); TensorRT engines need an NVIDIA GPU")
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader", f"--id={device_index}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (subprocess.SubprocessError, OSError) as exc:
        raise DependencyError(f"nvidia-smi cannot query GPU {device_index} ({type(exc).__name__}); check the driver") from None
    name, _, capability = out.partition(",")
    return f"{name.strip()} sm{capability.strip().replace('.', '')}"


class EngineCache:
    """Engines on disk: ``<dir>/<digest>.engine`` plus ``<digest>.json`` describing the key."""

    def __init__(self, directory: str | Path | None = None) -> None:
        directory = Path(directory) if directory is not None else default_cache_dir()
        if os.path.lexists(directory) and not usable_dir(directory, TRT_CACHE, TRT_COST, create=False):
            directory = _process_dir()  # another user's, or writable by others: not read (warned)
        self.directory = directory

    def engine_path(self, key: EngineKey) -> Path:
        return self.directory / f"{key.digest}.engine"

    def load(self, key: EngineKey) -> bytes | None:
        """The cached engine for ``key``, or None when there is none, it is empty or it is not to be
        trusted (``trusted_entry``: another user's, or writable by others; warned)."""
        path = self.engine_path(key)
        if not trusted_entry(path, TRT_CACHE, "building the engine again") or path.stat().st_size == 0:
            return None
        return path.read_bytes()

    def store(self, key: EngineKey, engine: bytes) -> Path:
        """Write ``engine`` under ``key`` atomically, private to this user; returns its path. A cache
        folder that cannot be written (read-only, full) is one warning, and the engine goes to a
        private temporary folder of this process instead (it is built again at the next start)."""
        try:
            make_private_dirs(self.directory)
            return self._write(key, engine)
        except OSError as exc:
            if _process_cache and self.directory == _process_cache[0]:
                raise
            warn_once(f"cannot write the {TRT_CACHE} {self.directory} ({os_cause(exc, self.directory)}); {TRT_COST}")
            self.directory = _process_dir()
            return self._write(key, engine)

    def _write(self, key: EngineKey, engine: bytes) -> Path:
        path = self.engine_path(key)
        for target, data in ((path.with_suffix(".json"), json.dumps(key.to_dict(), indent=2).encode()), (path, engine)):
            write_private(target, data)
        return path

    def timing_cache_path(self, *, trt_version: str, gpu: str) -> Path:
        """Where the TensorRT timing cache for this TensorRT version and GPU lives (shared by models)."""
        tag = hashlib.sha256(f"{trt_version}|{gpu}".encode()).hexdigest()[:16]
        return self.directory / f"timing-{tag}.cache"


def ort_providers(
    cache_dir: str | Path | None = None, *, fp16: bool = False, device_id: int = 0
) -> list[tuple[str, dict[str, Any]] | str]:
    """ONNX Runtime providers, best first, for onnxruntime-gpu: TensorRT EP, CUDA EP, CPU.

    The TensorRT EP keeps its engines and timing cache under ``cache_dir`` (default: the engine
    cache directory), so the second start of the node skips the engine build.
    """
    folder = Path(cache_dir) if cache_dir is not None else EngineCache().directory / "ort"
    with contextlib.suppress(OSError):  # the provider says what it cannot write
        make_private_dirs(folder)  # else the provider makes it with the umask's mode
    directory = str(folder)
    trt_options = {
        "device_id": device_id,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": directory,
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": directory,
        "trt_fp16_enable": fp16,
    }
    return [("TensorrtExecutionProvider", trt_options), ("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
