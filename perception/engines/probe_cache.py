"""The cache of ``--engine auto``'s probe verdicts: their key, and reading, writing and forgetting them.

    key = probe_key(model_path, options, auto.cpu_candidates(model_path, options))
    selection = read_cached(key, node_cache_dir())   # None: probe, then write_cached(selection, ...)

A verdict is cached as JSON in ``~/.cache/perception/probe`` (``PERCEPTION_PROBE_CACHE``
overrides it; a private folder, whose entries are read only when they are the user's alone, see
``perception.engines.cache``; without a home folder the node probes at every start) under a key of
the model file's (and its INT8 sibling's) SHA-256, the CPU model and ISA, the thread count, the CPU
cores this process may use (``usable_cores``), the versions of ONNX Runtime, OpenVINO and
perception and a digest of the engines' code: a changed model, library, machine, CPU share or
engine code probes again. The folder keeps the ``MAX_VERDICTS`` verdicts used last. A probe child killed by
SIGKILL (most likely the kernel's OOM killer) leaves a mark (``note_killed``) that spares the
starts of the next ``KILLED_HOLD_S`` another probe. ``perception.engines.auto`` chooses the candidates, probes and loads the winner.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path

from perception.engines import cache as engine_cache
from perception.engines.base import EngineOptions, usable_cores
from perception.engines.cpu import cpu_isa, cpu_model
from perception.engines.probe import MIN_AGREEMENT, int8_sibling
from perception.engines.probe_verdict import Candidate, Selection, VerdictError
from perception.errors import ConfigError
from perception.modelfile import check_model_path, external_data_files

log = logging.getLogger("perception.engines.auto")  # one logger name for all of --engine auto

#: Bump when the key recipe or the cached document changes, so old entries are never reused.
#: 3: the verdict holds the winner's frames in flight (``streams``, for ``--streams auto``).
#: 4: 16 probe frames instead of 4.
#: 5: judged on the node's own frames (a verdict on rendered scenes is probed again).
#: 6: OpenVINO runs the class tail planar (``planar_class_tail``, about 1.2x on an AVX2 EPYC), so a
#:    verdict that timed the slower OpenVINO is probed again.
#: 7: the CPU cores this process may use (``cores``): a verdict probed on 2 cores is not reused on 1.
#: 8: the digest of the engines' own code (``code``): perception's version stays 0.1.0 between
#:    commits, so a checkout updated in place reused a verdict older code had made (H43 F3); and
#:    the cgroup CPU quota (``cpu_quota``).
PROBE_KEY_VERSION = 8
#: Verdict files kept in the cache folder, the most recently used first: a new key (an upgrade, a
#: changed model) leaves the old file behind, which is never read again.
MAX_VERDICTS = 32
#: Seconds after a probe child was killed by SIGKILL (``note_killed``) during which the node's starts
#: run ONNX Runtime FP32 without probing: a memory limit that killed one probe kills the next.
KILLED_HOLD_S = 24 * 3600
#: How the warnings name this cache, and what running without it costs.
PROBE_CACHE = "engine probe cache"
PROBE_COST = "every start probes the engines again"


def probe_cache_dir() -> Path:
    """The verdict cache folder for ``perception bench probe`` (``PERCEPTION_PROBE_CACHE``, else
    ``~/.cache/perception/probe``).

    Raises:
        ConfigError: there is no home folder, and the variable is not set.
    """
    folder = node_cache_dir(warn=False)
    if folder is None:
        raise ConfigError(f"no home folder for the engine probe cache ({engine_cache.no_home()}); set HOME or "
                          "PERCEPTION_PROBE_CACHE, or give --cache-dir")
    return folder


def node_cache_dir(*, warn: bool = True) -> Path | None:
    """The verdict cache folder a node reads and writes; None, with one warning, when there is no
    home folder to put it in (the node probes at every start)."""
    if not warn and not os.environ.get("PERCEPTION_PROBE_CACHE") and engine_cache.home_dir() is None:
        return None
    return engine_cache.default_dir("PERCEPTION_PROBE_CACHE", "probe", PROBE_CACHE, PROBE_COST)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(dist: str) -> str:
    """The installed version of ``dist``, read from its ``NAME-VERSION.dist-info`` folder name on
    ``sys.path`` (the first one, as importlib.metadata finds it). Hand-written because importing
    importlib.metadata (and the email parser under it) took 15-50 ms of every node start, for three
    version strings."""
    prefix = dist.replace("-", "_").lower() + "-"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith(".dist-info") and name.lower().startswith(prefix):
                return name[len(prefix):-len(".dist-info")]
    return "absent"


@functools.lru_cache(maxsize=1)
def engines_code_digest() -> str:
    """SHA-256 (16 hex digits) of the sources of ``perception/engines`` (the engines, the probe and
    its verdict): a verdict is reused only by the code that made it. About 1 ms, once a process."""
    digest = hashlib.sha256()
    folder = Path(__file__).parent
    for path in sorted(folder.glob("*.py")):
        with contextlib.suppress(OSError):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _quota() -> float | None:
    """The cgroup CPU quota in cores (2 decimals), None without one: a verdict probed under 0.5 CPU
    is not reused on a whole core, though both count 1 usable core."""
    from perception.cgroups import cpu_quota_cores

    quota = cpu_quota_cores()
    return None if quota is None else round(quota, 2)


def probe_key(model_path: Path, options: EngineOptions, candidates: list[Candidate]) -> dict:
    """Everything the probe's verdict depends on (see the module docstring)."""
    check_model_path(model_path)  # hashed below: a missing file is the user's one-line error, not an OSError
    sibling = int8_sibling(model_path)
    return {
        "version": PROBE_KEY_VERSION,
        "model_sha256": _sha256(model_path),
        # Weights kept beside the model (``model.onnx.data``): new weights there change the verdict
        # too, although the .onnx bytes stay the same.
        "external_sha256": {p.name: _sha256(p) for p in external_data_files(model_path)},
        "int8_sha256": _sha256(sibling) if sibling else "",
        "cpu": cpu_model(),
        "isa": cpu_isa(),
        "threads": options.threads,
        # the figures and --streams auto depend on the cores the probe ran on (affinity, a CPU quota)
        "cores": usable_cores(),
        "cpu_quota": _quota(),
        "candidates": [c.label for c in candidates],
        "min_agreement": MIN_AGREEMENT,
        "onnxruntime": _version("onnxruntime"),
        "openvino": _version("openvino"),
        "perception": _version("perception"),
        "code": engines_code_digest(),
    }


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def cache_path(key: dict, cache_dir: Path) -> Path:
    """The file the verdict for ``key`` is cached in."""
    return cache_dir / f"{key_digest(key)}.json"


def read_cached(key: dict, cache_dir: Path | None) -> Selection | None:
    """The cached selection for ``key``; None when absent, stored under another key, or unusable
    (or there is no cache: ``cache_dir`` None).

    The file is data from disk: every field is checked (``Selection.from_dict``), and the winner
    must be one of the candidates this machine offers (``key["candidates"]``). A file that cannot be
    read, is not JSON, is not a verdict or names what cannot run here is one warning naming it, and
    is removed (when it could be read), so the probe that follows writes a new one and a second
    reader (the node's loader, its probe child) does not warn again. A folder or file that another
    user owns or others can write is not read (one warning; ``perception.engines.cache``).
    """
    if cache_dir is None or not engine_cache.usable_dir(cache_dir, PROBE_CACHE, PROBE_COST, create=False):
        return None
    path = cache_path(key, cache_dir)
    try:
        selection = Selection.from_dict(json.loads(_read_trusted(path)))
        if selection.key != key:  # another key's verdict under this name: not this start's to judge
            return None
        label = f"{selection.engine}-{selection.precision}"
        if label not in key["candidates"]:
            raise VerdictError(f"its winner {label} is not one of this machine's candidates: "
                               f"{', '.join(key['candidates'])}")
    except FileNotFoundError:
        return None
    except OSError as exc:  # a folder in its place, no permission: left as it is
        log.warning("engine probe cache %s is unreadable (%s); probing again", path, type(exc).__name__)
        return None
    except (ValueError, RecursionError) as exc:  # not JSON, nested too deep, not a verdict
        why = str(exc) if isinstance(exc, VerdictError) else type(exc).__name__
        log.warning("engine probe cache %s is unreadable (%s); probing again", path, why)
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    selection.from_cache = True
    with contextlib.suppress(OSError):  # used now: the last to go when old verdicts are pruned (_prune)
        os.utime(path)
    return selection


def _read_trusted(path: Path) -> str:
    """The text of the verdict file ``path``, read only when it is the user's alone (else an
    OSError that ``read_cached`` treats as a missing file, after one warning)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        why = engine_cache.untrusted(os.fstat(fd))
        if why:
            engine_cache.warn_once(f"not loading the {PROBE_CACHE} entry {path}: {why}; probing again")
            raise FileNotFoundError(path)
        return f.read().decode("utf-8")


def write_cached(selection: Selection, cache_dir: Path | None) -> None:
    """Store ``selection`` (atomically: a crash leaves the old entry or none), private to the user; a
    cache that cannot be written is one warning, not fatal."""
    if cache_dir is None or not engine_cache.usable_dir(cache_dir, PROBE_CACHE, PROBE_COST):
        return
    path = cache_path(selection.key, cache_dir)
    with contextlib.suppress(OSError):  # a verdict came (bench probe): a probe killed before no longer holds
        killed_path(selection.key, cache_dir).unlink(missing_ok=True)
    try:
        engine_cache.write_private(path, json.dumps(selection.to_dict(), indent=1, sort_keys=True).encode("utf-8"))
    except OSError as exc:
        engine_cache.warn_once(f"cannot write the {PROBE_CACHE} {path} ({engine_cache.os_cause(exc, cache_dir)}); "
                               f"{PROBE_COST}")
        return
    _prune(cache_dir, keep=path)


def _prune(cache_dir: Path, *, keep: Path) -> None:
    """Remove the verdict files (``*.json``) beyond the ``MAX_VERDICTS`` most recently used (their
    modification time: written, or read by ``read_cached``), never ``keep``, and marks
    (``*.killed``) older than ``KILLED_HOLD_S``: keys no start asks for any more (an upgrade, a
    model retrained) leave files no one reads."""
    entries = []
    with contextlib.suppress(OSError), os.scandir(cache_dir) as scan:
        for entry in scan:
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                entries.append((st.st_mtime, entry.name))
    now = time.time()
    verdicts = sorted((e for e in entries if e[1].endswith(".json") and e[1] != keep.name), reverse=True)
    stale = [name for _, name in verdicts[MAX_VERDICTS - 1:]]
    stale += [name for mtime, name in entries if name.endswith(".killed") and now - mtime >= KILLED_HOLD_S]
    for name in stale:
        with contextlib.suppress(OSError):
            (cache_dir / name).unlink()


def killed_path(key: dict, cache_dir: Path) -> Path:
    """The mark ``note_killed`` leaves for ``key``."""
    return cache_dir / f"{key_digest(key)}.killed"


def note_killed(key: dict, cache_dir: Path | None) -> bool:
    """Mark that the probe for ``key`` was killed by SIGKILL now (``killed_at``); False when it could
    not be written (no cache: the next start probes again)."""
    if cache_dir is None or not engine_cache.usable_dir(cache_dir, PROBE_CACHE, PROBE_COST):
        return False
    try:
        engine_cache.write_private(killed_path(key, cache_dir), b"")
    except OSError:
        return False
    return True


def killed_at(key: dict, cache_dir: Path | None) -> float | None:
    """When the probe for ``key`` was killed by SIGKILL (the mark's time), if that was less than
    ``KILLED_HOLD_S`` ago; None otherwise (a mark that old is removed, one another user could have
    written is ignored)."""
    if cache_dir is None:
        return None
    path = killed_path(key, cache_dir)
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if engine_cache.untrusted(st) or not 0 <= time.time() - st.st_mtime < KILLED_HOLD_S:
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return st.st_mtime


def forget_cached(key: dict, cache_dir: Path | None) -> None:
    """Remove the cached selection for ``key`` (a verdict the node could not use), so that the next
    start probes again; a cache folder that cannot be written is left as it is."""
    if cache_dir is not None:
        with contextlib.suppress(OSError):
            cache_path(key, cache_dir).unlink(missing_ok=True)
