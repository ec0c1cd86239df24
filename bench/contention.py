"""Was the machine shared while a window was measured? Read directly, not from the load average.

The 1-minute load average lags a run of seconds (a CPU hog started next to a 10 s engine bench had
moved it from 1.1 to 1.7 on 2 cores while two threads ran at the speed of one). So each measured
window (an engine block, the node's window, a ``--cameras`` run) is bracketed by two readings of

- ``/proc/stat`` for the cores this process may run on (``os.sched_getaffinity``, not
  ``os.cpu_count``): their busy time and the time the hypervisor stole from them (``steal``);
- this process's and its children's CPU time (the node under the bench is a child).

``others_cores``: busy time minus this process tree's, over the wall time: the cores other
processes used. Under a cgroup CPU quota (a container's ``--cpus``), the window also records the
quota (``quota_cores``) and the time the quota held the group back (``throttled_s``, ``cpu.stat``;
perception/cgroups.py): work that sits at its quota is throttled, not crowded out, and the warning
says so. ``contention_warning`` turns one window's figures into one warning (or None), naming what
it measured; it is fed numbers, so tests need no load.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import psutil

#: Other processes using this many cores beyond those the measured work left free mean it took turns.
OTHERS_WARN_CORES = 0.25
#: Time stolen by the hypervisor from this share of the usable cores' wall time.
STEAL_WARN_SHARE = 0.05
#: A shorter window is not judged: /proc/stat counts in ticks of 10 ms.
MIN_WINDOW_S = 0.5
#: Throttled by the cgroup's CPU quota for this share of the wall time or more: the quota set the pace.
THROTTLE_WARN_SHARE = 0.05


def usable_cores() -> list[int]:
    """The cores this process may run on (``taskset`` and cgroups' cpusets shrink them)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def _proc_stat(cores: list[int]) -> tuple[float, float] | None:
    """(busy seconds, steal seconds) summed over ``cores`` (psutil's per-CPU times: /proc/stat on
    Linux); None where they cannot be read."""
    try:
        per_cpu = psutil.cpu_times(percpu=True)
    except (OSError, psutil.Error):
        return None
    times = [per_cpu[c] for c in cores if c < len(per_cpu)]
    if not times:
        return None
    # guest time is already in user; steal (and iowait, irq) are 0 where the system has none
    busy = sum(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) for t in times)
    return busy, sum(getattr(t, "steal", 0.0) for t in times)


def _own_cpu_s() -> float:
    """CPU seconds of this process, its reaped children and its live children (the node)."""
    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    try:
        kids = me.children(recursive=True)
    except psutil.Error:
        kids = []
    for kid in kids:
        try:
            k = kid.cpu_times()
            total += k.user + k.system
        except psutil.Error:
            pass
    return total


@dataclass
class _Reading:
    mono: float
    stat: tuple[float, float] | None
    own: float
    throttled: float | None = None


class CpuWindow:
    """``start()`` then ``stop()`` around a measured window; ``stop()`` returns its figures (or None
    where /proc/stat cannot be read)."""

    def __init__(self) -> None:
        from perception.cgroups import cpu_quota_cores

        self.cores = usable_cores()
        self.quota = cpu_quota_cores()
        self._start: _Reading | None = None

    def _read(self) -> _Reading:
        from perception.cgroups import cpu_throttled_s

        throttled = cpu_throttled_s() if self.quota is not None else None
        return _Reading(time.monotonic(), _proc_stat(self.cores), _own_cpu_s(), throttled)

    def start(self) -> CpuWindow:
        self._start = self._read()
        return self

    def stop(self) -> dict[str, Any] | None:
        a, b = self._start, self._read()
        if a is None or a.stat is None or b.stat is None:
            return None
        throttled = None if a.throttled is None or b.throttled is None else b.throttled - a.throttled
        return window_figures(wall_s=b.mono - a.mono, busy_s=b.stat[0] - a.stat[0], steal_s=b.stat[1] - a.stat[1],
                              own_cpu_s=b.own - a.own, usable_cores=len(self.cores), quota_cores=self.quota,
                              throttled_s=throttled)


def window_figures(*, wall_s: float, busy_s: float, steal_s: float, own_cpu_s: float, usable_cores: int,
                   quota_cores: float | None = None, throttled_s: float | None = None) -> dict[str, Any] | None:
    """One window's figures in cores (1.0 = one core busy for the whole window); under a CPU quota
    also ``quota_cores`` and ``throttled_s`` (the seconds the quota held the cgroup back)."""
    if wall_s <= 0:
        return None
    figures = {"wall_s": round(wall_s, 3), "usable_cores": usable_cores, "busy_s": round(busy_s, 3),
               "steal_s": round(steal_s, 3), "own_cpu_s": round(own_cpu_s, 3),
               "own_cores": round(max(0.0, own_cpu_s) / wall_s, 3),
               "others_cores": round(max(0.0, busy_s - own_cpu_s) / wall_s, 3),
               "steal_share": round(max(0.0, steal_s) / (wall_s * max(1, usable_cores)), 4)}
    if quota_cores is not None:
        figures["quota_cores"] = quota_cores
        figures["throttled_s"] = None if throttled_s is None else round(max(0.0, throttled_s), 3)
    return figures


def combine(figures: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The windows of ``figures`` (an engine row's blocks) as one: their seconds summed; None when
    none was read. /proc/stat counts in 10 ms ticks, so one short block alone says little."""
    read = [f for f in figures if f]
    if not read:
        return None
    throttled = [f.get("throttled_s") for f in read]
    return window_figures(**{k: sum(f[k] for f in read) for k in ("wall_s", "busy_s", "steal_s", "own_cpu_s")},
                          usable_cores=read[0]["usable_cores"], quota_cores=read[0].get("quota_cores"),
                          throttled_s=None if None in throttled else sum(throttled))


def contention_warning(figures: dict[str, Any] | None, *, wanted_cores: float | None, what: str) -> str | None:
    """One warning when other work competed with the measured work for the cores, else None.

    ``wanted_cores``: the cores the measured work asked for (an engine row's ``--threads``; None: all
    the usable cores, as a node's several threads may use them). Other processes' CPU beyond the
    cores left free (``OTHERS_WARN_CORES`` or more), or time stolen by the hypervisor
    (``STEAL_WARN_SHARE`` or more), makes the warning; it names the figures measured. Under a CPU
    quota the work cannot use more than the quota, so the cores beyond it are free to others; a
    window the quota throttled (``THROTTLE_WARN_SHARE`` of its time or more) is said to be held back
    by the quota, not by other work."""
    if not figures or figures["wall_s"] < MIN_WINDOW_S:
        return None
    usable = figures["usable_cores"]
    wanted = usable if wanted_cores is None else min(float(wanted_cores), usable)
    quota = figures.get("quota_cores")
    can_use = wanted if quota is None else min(wanted, quota)  # what the work could use: the rest is free to others
    competing = figures["others_cores"] - max(0.0, usable - can_use)
    steal = figures["steal_share"]
    throttled = figures.get("throttled_s") or 0.0
    by_quota = quota is not None and throttled >= THROTTLE_WARN_SHARE * figures["wall_s"]
    asked = f"asked for {wanted:g} of them" if wanted_cores is not None else "may use all of them"
    if competing < OTHERS_WARN_CORES and steal < STEAL_WARN_SHARE:
        if not by_quota:
            return None
        return (f"{what}: throttled by this cgroup's CPU quota ({quota:g} CPU): it used {figures['own_cores']:.2f} "
                f"cores during the {figures['wall_s']:.1f} s it was measured (of the {usable} cores it may run on, it "
                f"{asked.replace(' of them', '')}), "
                f"and the quota held it back {throttled:.1f} s (cpu.stat): its figures are for {quota:g} CPU, not for "
                f"{usable} cores, and a quieter machine would not change them")
    quota_too = (f"; this cgroup's CPU quota ({quota:g} CPU) held it back {throttled:.1f} s too (cpu.stat)"
                 if by_quota else "")
    return (f"{what}: other processes used {figures['others_cores']:.2f} of the {usable} cores it may run on during the "
            f"{figures['wall_s']:.1f} s it was measured ({asked}; it used {figures['own_cores']:.2f}), and the "
            f"hypervisor stole {100 * steal:.1f} % of their time (/proc/stat): it took turns with other work, so "
            f"its figures and ratios are not trustworthy; rerun on a quiet machine{quota_too}")
