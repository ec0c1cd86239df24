"""The node under cgroup limits (H40: H4, M1, M2, M3, M5, L1, L3): perception/cgroups.py reads this
process's CPU quota, throttling, memory limit, OOM kills and pids limit from fake /sys trees (v1 and
v2 layouts), and the node, launch and bench use them."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import pytest

from perception import cgroups

MIB = 2**20


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """``fake(proc_cgroup_text, {relative file: text})``: this process's cgroups on a fake tree."""

    def make(proc: str, files: dict[str, str], cores: int = 2) -> Path:
        root = tmp_path / "sys" / "fs" / "cgroup"
        root.mkdir(parents=True, exist_ok=True)
        _write(root, files)
        (tmp_path / "cgroup").write_text(proc)
        monkeypatch.setattr(cgroups, "ROOT", root)
        monkeypatch.setattr(cgroups, "PROC_CGROUP", tmp_path / "cgroup")
        monkeypatch.setattr(cgroups, "affinity_cores", lambda: cores)
        return root

    return make


V1_PROC = "9:pids:/svc\n4:memory:/svc/node\n2:cpuacct:/svc/node\n1:cpu:/svc/node\n0::/\n"
#: A v1 tree: the CPU quota (0.5) and the memory limit (200 MiB) set on the parent, not the node's group.
V1 = {
    "cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000",
    "cpu/svc/cpu.cfs_quota_us": "50000", "cpu/svc/cpu.cfs_period_us": "100000",
    "cpu/svc/cpu.stat": "nr_periods 137\nnr_throttled 134\nthrottled_time 2500000000",
    "cpu/svc/node/cpu.cfs_quota_us": "-1", "cpu/svc/node/cpu.cfs_period_us": "100000",
    "cpu/svc/node/cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_time 0",
    "memory/memory.limit_in_bytes": str(2**63 - 4096), "memory/memory.usage_in_bytes": str(900 * MIB),
    "memory/svc/memory.limit_in_bytes": str(200 * MIB), "memory/svc/memory.usage_in_bytes": str(150 * MIB),
    "memory/svc/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 7",
    "memory/svc/node/memory.limit_in_bytes": str(2**63 - 4096),
    "memory/svc/node/memory.usage_in_bytes": str(100 * MIB),
    "memory/svc/node/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3",
    "pids/svc/pids.max": "9", "pids/svc/pids.current": "9", "pids/pids.current": "300",
}
#: A v2 tree: cpu.max 1.5 CPU on the parent, the memory limit on the parent, no pids limit.
V2 = {
    "cgroup.controllers": "cpu memory pids",
    "svc/cpu.max": "150000 100000", "svc/cpu.stat": "usage_usec 9\nnr_throttled 4\nthrottled_usec 1500000",
    "svc/node/cpu.max": "max 100000", "svc/node/cpu.stat": "usage_usec 9\nnr_throttled 0\nthrottled_usec 0",
    "svc/memory.max": str(300 * MIB), "svc/memory.current": str(40 * MIB),
    "svc/node/memory.max": "max", "svc/node/memory.current": str(30 * MIB),
    "svc/node/memory.events": "low 0\nhigh 0\nmax 5\noom 2\noom_kill 2",
    "svc/node/pids.max": "max", "svc/node/pids.current": "12",
}


def test_v1_limits_are_read_from_the_ancestor_that_sets_them(fake):
    fake(V1_PROC, V1)
    limits = cgroups.read_limits()
    assert limits.cpu_quota_cores == 0.5 and limits.cpu_throttled_s == pytest.approx(2.5)
    assert limits.memory == cgroups.Memory(200 * MIB, 150 * MIB) and limits.memory.headroom == 50 * MIB
    assert limits.oom_kills == 3  # the node's own group, not the parent's (which counts its siblings too)
    assert limits.pids == (9, 9)
    assert cgroups.usable_cores() == 1  # ceil(0.5), below the 2 cores of the affinity


def test_v2_limits_and_a_hybrid_mount(fake, tmp_path):
    fake("0::/svc/node\n", V2, cores=4)
    assert cgroups.cpu_quota_cores() == 1.5 and cgroups.cpu_throttled_s() == pytest.approx(1.5)
    assert cgroups.memory() == cgroups.Memory(300 * MIB, 40 * MIB)
    assert cgroups.oom_kills() == 2 and cgroups.pids() is None
    assert cgroups.usable_cores() == 2
    # hybrid: the v2 hierarchy under unified/, no v1 line for memory: still read
    fake("0::/svc/node\n", {f"unified/{k}": v for k, v in V2.items()}, cores=4)
    (tmp_path / "sys/fs/cgroup/cgroup.controllers").unlink()
    assert cgroups.memory() == cgroups.Memory(300 * MIB, 40 * MIB) and cgroups.cpu_quota_cores() == 1.5


def test_a_container_without_its_own_cgroup_namespace_reads_its_mount(fake):
    # /proc/self/cgroup names the host's path, which is not mounted here: the group is the mount itself
    fake("4:memory:/docker/abc123\n1:cpu:/docker/abc123\n",
         {"memory/memory.limit_in_bytes": str(90 * MIB), "memory/memory.usage_in_bytes": str(10 * MIB),
          "cpu/cpu.cfs_quota_us": "100000", "cpu/cpu.cfs_period_us": "100000"})
    assert cgroups.memory() == cgroups.Memory(90 * MIB, 10 * MIB) and cgroups.cpu_quota_cores() == 1.0


def test_no_limits_and_unreadable_files_are_none(fake):
    fake("4:memory:/\n1:cpu:/\n9:pids:/\n", {"memory/memory.limit_in_bytes": str(2**63 - 4096),
                                             "cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000",
                                             "pids/pids.max": "max", "memory/memory.oom_control": "garbage"})
    limits = cgroups.read_limits()
    assert limits == cgroups.Limits(None, None, None, None, None)
    assert cgroups.usable_cores() == 2 and cgroups.quota_line() is None and cgroups.memory_line(None) is None
    fake("", {})  # not Linux, or no /proc: nothing at all
    assert cgroups.read_limits() == cgroups.Limits(None, None, None, None, None)


# ---- what the user sees ---------------------------------------------------------------------------


def test_bench_sees_a_v1_memory_limit_and_refuses_the_batch_naming_it(fake):
    """H4: the cgroup v1 limit was not seen; bench engine was OOM-killed instead of refusing --batch 64."""
    from perception.bench.cases import available_memory_bytes, check_batch_memory
    from perception.errors import ConfigError

    fake(V1_PROC, V1)
    assert available_memory_bytes() == 50 * MIB
    with pytest.raises(ConfigError, match=r"more than the 85% of the 50 MiB available \(the room left under this "
                                          r"cgroup's memory limit of 200 MiB\) that a bench plans to use; use --batch [1-4] or less$"):
        check_batch_memory([_case(64)], {_key(64): 8 * MIB}, available_memory_bytes())


def _case(batch):
    from types import SimpleNamespace

    from perception.bench.cases import Case

    engine = SimpleNamespace(metadata=SimpleNamespace(input_hw=(288, 480)))
    return Case(Path("m.onnx"), "ort", None, 1, batch, engine=engine)


def _key(batch):
    from perception.bench.cases import case_key

    return case_key(_case(batch))


def test_threads_above_a_cpu_quota_warn_and_the_quota_is_said_at_start(fake, caplog):
    """M1: --threads 2 under a 0.5 CPU quota on 2 cores said nothing."""
    from perception.bench.engine import warn_threads_over_cores as bench_warning
    from perception.engines.base import usable_cores, warn_threads_over_cores

    fake(V1_PROC, V1)
    log = logging.getLogger("test")
    with caplog.at_level(logging.WARNING):
        warn_threads_over_cores(log, [2], "x %d")
    assert usable_cores() == 1
    assert "--threads 2: more than the 1 CPU cores this process may use (CPU quota 0.5, cgroup); x 1" in caplog.text
    assert "(CPU quota 0.5, cgroup)" in bench_warning([2])
    assert cgroups.quota_line().startswith("CPU quota 0.5 of 2 cores (cgroup): this process gets 0.5 core's time, "
                                           "so it counts 1 usable core")


def test_the_node_logs_its_memory_limit_and_warns_when_it_looks_too_small(fake, tmp_path):
    """M5: under a 90 MB limit the node died with no line at all."""
    model = tmp_path / "m.onnx"
    model.write_bytes(b"\0" * (8 * MIB))
    fake("4:memory:/\n", {"memory/memory.limit_in_bytes": str(90 * MIB), "memory/memory.usage_in_bytes": str(11 * MIB)})
    warn, line = cgroups.memory_line(model)
    assert warn and line.startswith("memory limit 90 MiB (cgroup), 11 MiB in use: the 79 MiB left is less than a "
                                    "rough, low estimate of what this node needs (about 96 MiB")
    assert "raise the memory limit" in line
    fake("4:memory:/\n", {"memory/memory.limit_in_bytes": str(300 * MIB), "memory/memory.usage_in_bytes": str(11 * MIB)})
    assert cgroups.memory_line(model) == (False, "memory limit 300 MiB (cgroup), 11 MiB in use")


def test_a_run_under_a_quota_says_it_and_reports_the_throttled_seconds(fake, tiny_model_path, free_tcp_port,
                                                                       capsys, caplog):
    """M1: no quota line, no throttling in the stats; the final document carries cpu_throttled_s."""
    from perception.cli import main as cli_main
    from perception.stats_schema import check_stats

    root = fake(V1_PROC, V1)
    stat = root / "cpu/svc/cpu.stat"
    seen = iter(range(10**6))  # the throttled time grows by 0.1 s a read
    real = cgroups._keyed

    def growing(path, key):
        if path == stat and key == "throttled_time":
            return 2_500_000_000 + 100_000_000 * next(seen)
        return real(path, key)

    cgroups._keyed = growing
    try:
        with caplog.at_level(logging.INFO):
            code = cli_main(["run", "--model", str(tiny_model_path), "--source", "synthetic", "--width", "96",
                             "--height", "72", "--fps", "240", "--queue", "lossless", "--max-frames", "3",
                             "--threads", "2", "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"])
    finally:
        cgroups._keyed = real
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and check_stats(final, final=True) == [], final
    assert final["cpu_throttled_s"] > 0
    assert "CPU quota 0.5 of 2 cores (cgroup)" in caplog.text
    assert "more than the 1 CPU cores this process may use (CPU quota 0.5, cgroup)" in caplog.text
    assert "memory limit 200 MiB (cgroup), 150 MiB in use" in caplog.text
    assert "; the CPU quota throttled it" in caplog.text


def test_bench_environment_records_the_quota_and_the_memory_limit(fake, monkeypatch):
    """M2, L3: cpu_usable_cores 2 and the host's memory, nothing about the cgroup."""
    from perception.bench import env

    monkeypatch.setattr(env, "ort_providers", lambda: [])
    monkeypatch.setattr(env, "gpus", lambda: [])
    fake(V1_PROC, V1)
    block = env.collect_environment()
    assert block["cpu_quota_cores"] == 0.5 and block["memory_limit_mb"] == 200
    from perception.bench.report import _environment_section

    text = "\n".join(_environment_section(block))
    assert "CPU quota (cgroup), cores" in text and "memory limit MB (cgroup)" in text


def test_a_window_throttled_by_the_quota_is_not_blamed_on_other_work():
    """M2: 'other processes used 1.51 of the 2 usable cores ... rerun on a quiet machine' under 0.5 CPU."""
    from perception.bench.contention import combine, contention_warning, window_figures

    busy = window_figures(wall_s=4.2, busy_s=4.2 * 1.93, steal_s=0, own_cpu_s=4.2 * 0.42, usable_cores=2,
                          quota_cores=0.5, throttled_s=3.1)
    text = contention_warning(busy, wanted_cores=2, what="#2 t2 b1")
    assert text.startswith("#2 t2 b1: throttled by this cgroup's CPU quota (0.5 CPU): it used 0.42 cores")
    assert "other processes" not in text and "a quieter machine would not change them" in text
    assert combine([busy, busy])["throttled_s"] == pytest.approx(6.2)
    # other work beyond what the quota leaves free is still said, with the quota beside it
    crowded = window_figures(wall_s=4.0, busy_s=4.0 * 2.0, steal_s=0, own_cpu_s=4.0 * 0.2, usable_cores=2,
                             quota_cores=0.5, throttled_s=1.0)
    assert "other processes used 1.80" in contention_warning(crowded, wanted_cores=2, what="x")
    assert "CPU quota (0.5 CPU) held it back 1.0 s too" in contention_warning(crowded, wanted_cores=2, what="x")
    # without a quota: the figures and the warning as before
    plain = window_figures(wall_s=4.2, busy_s=4.2 * 1.93, steal_s=0, own_cpu_s=4.2 * 0.42, usable_cores=2)
    assert "quota_cores" not in plain and "other processes used 1.51" in contention_warning(plain, wanted_cores=2, what="x")


def test_launch_says_a_sigkill_was_the_oom_killer_when_the_count_rose(fake):
    """M3: '(signal SIGKILL)', '(it printed no error line)' for a node the OOM killer took."""
    from perception.launch.supervisor import ended_how

    fake(V1_PROC, V1)
    kill = -signal.SIGKILL
    assert ended_how(kill, 2) == "signal SIGKILL: killed by the kernel's OOM killer at its cgroup's memory limit of 200 MiB"
    assert ended_how(kill, 3) == "signal SIGKILL"  # the count did not rise while it ran
    assert ended_how(kill) == "signal SIGKILL" and ended_how(-signal.SIGTERM, 0) == "signal SIGTERM"
    assert ended_how(1, 0) == "exit code 1"


def test_a_refused_thread_names_the_pids_limit(fake):
    """L1: 'ulimit -u, now 96367' inside a container whose pids.max is 9."""
    from perception.errors import thread_refused

    fake(V1_PROC, V1)
    said = thread_refused("the node's publish thread")
    assert "this cgroup's pids limit (pids.max, now 9, 9 in use; a one-camera node on ONNX Runtime runs about 10" in said
    assert "ulimit -u" in said and said.startswith("cannot start the node's publish thread: the system refused")
    fake("9:pids:/\n", {"pids/pids.max": "max"})
    assert "a container's pids limit" in thread_refused("x")


def test_onnx_runtime_threads_follow_a_cpu_quota_it_does_not_read(fake):
    """ONNX Runtime's default intra-op threads are the physical cores: 2 under a 0.5 CPU quota on 2
    cores (H40 M1, left by F40b). With no --threads the node now asks for the usable cores."""
    from perception.engines.ort import stream_threads

    fake(V1_PROC, V1)  # 0.5 CPU on 2 cores
    assert (stream_threads(0, 1), stream_threads(0, 2), stream_threads(2, 1), stream_threads(4, 2)) == (1, 1, 2, 2)
    fake("0::/\n", {"cgroup.controllers": "cpu"})  # no quota: ONNX Runtime's own default, the cores shared out
    assert (stream_threads(0, 1), stream_threads(0, 2)) == (0, 1)


def test_a_v1_limit_on_an_ancestor_the_namespace_hides_is_read_from_memory_stat(fake):
    """V1 of s41: inside a container's own cgroup namespace the parent's limit is not visible; v1's
    memory.stat states it (hierarchical_memory_limit), so bench and the probe see the room left."""
    fake("4:memory:/\n0::/\n", {
        "memory/memory.limit_in_bytes": str(2**63 - 4096), "memory/memory.usage_in_bytes": str(100 * MIB),
        "memory/memory.stat": f"cache 0\nrss 1\nhierarchical_memory_limit {300 * MIB}\ntotal_rss 1",
    })
    found = cgroups.memory()
    assert found is not None and (found.limit, found.headroom) == (300 * MIB, 200 * MIB)
    fake("4:memory:/\n0::/\n", {"memory/memory.stat": f"hierarchical_memory_limit {2**63 - 4096}"})
    assert cgroups.memory() is None  # unlimited all the way up
