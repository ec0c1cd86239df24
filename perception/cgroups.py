"""This process's cgroup limits, read from /proc/self/cgroup and /sys/fs/cgroup (v1 and v2).

A container or a service manager limits a process through its cgroups: a CPU quota (a share of
the cores' time, which the CPU affinity does not show), a memory limit (which the kernel's
MemAvailable does not show: the OOM killer ends the process at the limit, with SIGKILL and no
error line), and a pids limit (the threads and processes the group may have). Hand-written
because psutil, the dependency that reads the rest of the machine, does not read cgroup limits,
and the readers that do would be a new dependency for a few small files.

For each controller the process's own cgroup is found from ``/proc/self/cgroup`` (v1:
``N:memory:/path``; v2: ``0::/path``) under its mount (v1 ``/sys/fs/cgroup/<controller>``, v2
``/sys/fs/cgroup`` or, on a hybrid system, ``/sys/fs/cgroup/unified``). Inside a container
without its own cgroup namespace the path names the host's hierarchy, which is not visible: the
longest tail of the path that exists is taken, down to the mount itself. From there the reader
walks up to the mount's root, and the ancestor whose limit binds (the smallest quota, the least
room left) is the one reported: a limit set on a parent applies to every group below it.

- CPU: v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (``-1``: none), v2 ``cpu.max``
  (``max 100000``: none), in cores; ``cpu.stat``'s throttled time of the group that sets it.
- Memory: v1 ``memory.limit_in_bytes`` (2^62 or more: none) and ``memory.usage_in_bytes``, v2
  ``memory.max`` (``max``: none) and ``memory.current``; the OOM kills counted in the process's
  own group (v1 ``memory.oom_control``, v2 ``memory.events``: ``oom_kill N``).
- pids: ``pids.max`` (``max``: none) and ``pids.current``.

Every read is best-effort: None where a file is absent or unreadable (not Linux, no such
controller, a kernel without the counter). Each call reads a few small files; nothing is cached,
since a limit can change while the process runs. ``ROOT`` and ``PROC_CGROUP`` are module
globals so tests point them at a fake tree.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

#: Where the cgroup hierarchies are mounted, and the file naming this process's groups.
ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
#: A cgroup v1 memory limit at or above this is "no limit" (the kernel writes 2^63 rounded to pages).
V1_UNLIMITED = 2**62


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, ValueError):
        return None


def _int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _membership() -> tuple[dict[str, tuple[str, str]], str | None]:
    """(v1 controller -> (its hierarchy's controller list, path), the v2 path or None)."""
    text = _read(PROC_CGROUP) or ""
    v1: dict[str, tuple[str, str]] = {}
    v2 = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        else:
            for controller in controllers.split(","):
                v1[controller] = (controllers, path)
    return v1, v2


def _walk(mount: Path, path: str) -> list[Path]:
    """The process's group under ``mount`` and its ancestors up to ``mount``, nearest first."""
    parts = [p for p in path.split("/") if p and p not in (".", "..")]
    here = mount
    for start in range(len(parts) + 1):  # the longest tail of the path that is visible
        if (mount.joinpath(*parts[start:])).is_dir():
            here = mount.joinpath(*parts[start:])
            break
    levels = [here]
    while here != mount and mount in here.parents:
        here = here.parent
        levels.append(here)
    return levels


def _levels(controller: str) -> tuple[int, list[Path]]:
    """(cgroup version, the groups to read ``controller``'s files in, nearest first); (0, []) when
    this process is in no visible hierarchy of ``controller``."""
    v1, v2 = _membership()
    if controller in v1:
        controllers, path = v1[controller]
        for name in (controller, controllers):
            if (ROOT / name).is_dir():
                return 1, _walk(ROOT / name, path)
    if v2 is not None:
        for mount in (ROOT, ROOT / "unified"):
            if (mount / "cgroup.controllers").is_file():
                return 2, _walk(mount, v2)
    return 0, []


def _max_value(path: Path) -> int | None:
    """A v2 ``*.max`` file's number; None for ``max`` or when unreadable."""
    text = _read(path)
    return int(text) if text is not None and text.isdigit() else None


def _keyed(path: Path, key: str) -> int | None:
    """``key``'s number in a flat keyed file (``cpu.stat``, ``memory.events``, ``memory.oom_control``)."""
    for line in (_read(path) or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


# ---- CPU ----------------------------------------------------------------------------------------


def _quota_at(version: int, group: Path) -> float | None:
    if version == 1:
        quota, period = _int(group / "cpu.cfs_quota_us"), _int(group / "cpu.cfs_period_us")
    else:
        fields = (_read(group / "cpu.max") or "").split()
        quota = int(fields[0]) if len(fields) == 2 and fields[0].isdigit() else None
        period = int(fields[1]) if len(fields) == 2 and fields[1].isdigit() else None
    if quota is None or period is None or quota <= 0 or period <= 0:
        return None
    return quota / period


def _quota_group() -> tuple[int, Path, float] | None:
    version, levels = _levels("cpu")
    quotas = [(q, group) for group in levels if (q := _quota_at(version, group)) is not None]
    if not quotas:
        return None
    quota, group = min(quotas, key=lambda item: item[0])
    return version, group, quota


def cpu_quota_cores() -> float | None:
    """The CPU time this process's cgroup may use, in cores (0.5: half of one core's time), the
    smallest quota among its ancestors; None without one."""
    found = _quota_group()
    return None if found is None else round(found[2], 3)


def cpu_throttled_s() -> float | None:
    """Seconds the group that sets the CPU quota was held back by it so far (``cpu.stat``: v1
    ``throttled_time``, summed over the CPUs it was throttled on; v2 ``throttled_usec``). It is
    the group's: other processes in it count too. None without a quota or the counter."""
    found = _quota_group()
    if found is None:
        return None
    version, group, _ = found
    if version == 1:
        ns = _keyed(group / "cpu.stat", "throttled_time")
        return None if ns is None else ns / 1e9
    us = _keyed(group / "cpu.stat", "throttled_usec")
    return None if us is None else us / 1e6


def affinity_cores() -> int:
    """The cores this process may run on (its affinity: ``taskset``, a cpuset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def usable_cores() -> int:
    """The cores this process can keep busy: its affinity, or fewer under a CPU quota
    (``ceil(quota)``: 1 under a quota of 0.5 on 2 cores)."""
    cores = affinity_cores()
    quota = cpu_quota_cores()
    return cores if quota is None else max(1, min(cores, math.ceil(quota - 1e-9)))


def quota_note() -> str:
    """`` (CPU quota 0.5, cgroup)`` under a quota below this process's affinity, else ``""``: what a
    warning about the usable cores adds when the quota, not the affinity, counted them."""
    quota = cpu_quota_cores()
    return f" (CPU quota {quota:g}, cgroup)" if quota is not None and quota < affinity_cores() else ""


def quota_line() -> str | None:
    """The start-up line of a process under a CPU quota below its cores, else None."""
    quota, cores = cpu_quota_cores(), affinity_cores()
    if quota is None or quota >= cores:
        return None
    usable = max(1, min(cores, math.ceil(quota - 1e-9)))
    return (f"CPU quota {quota:g} of {cores} cores (cgroup): this process gets {quota:g} core's time, so it counts "
            f"{usable} usable core{'s' if usable != 1 else ''} for its threads; what it runs beyond that waits "
            "(throttled; the stats' cpu_throttled_s says how long)")


# ---- memory -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    """The binding memory limit of this process's cgroup and the usage it counts, in bytes."""

    limit: int
    usage: int | None

    @property
    def headroom(self) -> int:
        return max(0, self.limit - (self.usage or 0))


def memory() -> Memory | None:
    """The memory limit that binds this process (the ancestor with the least room left) and its
    group's usage; None without a limit."""
    version, levels = _levels("memory")
    found = []
    for group in levels:
        if version == 1:
            limit = _int(group / "memory.limit_in_bytes")
            limit = None if limit is None or limit >= V1_UNLIMITED else limit
            usage = _int(group / "memory.usage_in_bytes")
        else:
            limit, usage = _max_value(group / "memory.max"), _int(group / "memory.current")
        if limit is not None:
            found.append(Memory(limit, usage))
    if version == 1 and levels:
        # A limit set on an ancestor that a container's cgroup namespace hides: v1 states the
        # smallest limit on the way up in memory.stat; the usage known is this group's (at least).
        hierarchical = _keyed(levels[0] / "memory.stat", "hierarchical_memory_limit")
        if hierarchical is not None and hierarchical < V1_UNLIMITED:
            found.append(Memory(hierarchical, _int(levels[0] / "memory.usage_in_bytes")))
    return min(found, key=lambda m: m.headroom) if found else None


def memory_headroom_bytes() -> int | None:
    """Memory this process's cgroup may still take (limit minus usage); None without a limit."""
    found = memory()
    return None if found is None else found.headroom


def oom_kills() -> int | None:
    """Processes the kernel's OOM killer ended in this process's memory cgroup (and the groups
    below it) so far; None where the counter cannot be read."""
    version, levels = _levels("memory")
    name = "memory.oom_control" if version == 1 else "memory.events"
    for group in levels:  # the nearest group with the counter: an ancestor's counts its siblings too
        count = _keyed(group / name, "oom_kill")
        if count is not None:
            return count
    return None


def size_text(n: int) -> str:
    """``300 MiB``, ``1.5 GiB``."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


#: A deliberately low estimate of what a node needs beyond its model: Python, the engine runtime,
#: the frame buffers (a one-camera ONNX Runtime node measured well above it: 119 MiB with the
#: 2.4 MB INT8 model, 130 MiB with the 8 MB FP32 one). Low, so that the warning is never a false alarm.
NODE_BASE_BYTES = 64 * 2**20
#: ... plus this many times the model file (its weights, once loaded and once arranged by the runtime).
MODEL_FACTOR = 4


def memory_line(model: Path | None) -> tuple[bool, str] | None:
    """(a warning?, the start-up line) under a cgroup memory limit, else None: the limit and the
    usage, and a warning when the room left is below a low estimate of what a node with ``model``
    needs (``NODE_BASE_BYTES`` + ``MODEL_FACTOR`` x its file)."""
    found = memory()
    if found is None:
        return None
    used = f", {size_text(found.usage)} in use" if found.usage is not None else ""
    said = f"memory limit {size_text(found.limit)} (cgroup){used}"
    try:
        model_bytes = model.stat().st_size if model is not None else 0
    except OSError:
        model_bytes = 0
    need = NODE_BASE_BYTES + MODEL_FACTOR * model_bytes
    if found.headroom >= need:
        return False, said
    of_model = f" plus {MODEL_FACTOR}x {model.name}'s {size_text(model_bytes)}" if model_bytes else ""
    return True, (f"{said}: the {size_text(found.headroom)} left is less than a rough, low estimate of what this "
                  f"node needs (about {size_text(need)}: {size_text(NODE_BASE_BYTES)} for Python, the engine "
                  f"runtime and the frames{of_model}); if it runs out, the kernel's OOM killer ends the node with "
                  "SIGKILL and no error line; raise the memory limit")


# ---- pids ---------------------------------------------------------------------------------------


def pids() -> tuple[int, int | None] | None:
    """(``pids.max``, ``pids.current``) of the group with the least room left; None without a limit."""
    _, levels = _levels("pids")
    found = [(limit, _int(group / "pids.current")) for group in levels
             if (limit := _max_value(group / "pids.max")) is not None]
    return min(found, key=lambda f: f[0] - (f[1] or 0)) if found else None


@dataclass(frozen=True)
class Limits:
    """Every limit at once (None: none set, or not readable)."""

    cpu_quota_cores: float | None
    cpu_throttled_s: float | None
    memory: Memory | None
    oom_kills: int | None
    pids: tuple[int, int | None] | None


def read_limits() -> Limits:
    return Limits(cpu_quota_cores(), cpu_throttled_s(), memory(), oom_kills(), pids())
