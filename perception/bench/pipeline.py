"""Pipeline mode: run the real node on a source and measure it from a subscriber.

``run_pipeline_bench(config)`` starts ``perception run`` as its own process (as it runs on a car:
its CPU use is then its own, not the bench's), publishing on a free loopback port. A
``MaskSubscriber`` in the bench process receives every message for ``duration_s`` seconds after
the first mask arrives (model loading and warm-up are left out). From the per-frame headers it
takes the stage latencies the node measured (capture, preprocess, infer, postprocess, encode,
publish: whatever the node reports under ``latency_ms``), and from the clocks the end-to-end
figure: ``receive_ns - capture_ns``, both ``time.time_ns()`` on the same machine. The node's CPU
use is sampled once a second with ``psutil`` (100 % = one core busy), per thread at the end.

The unhappy path is reported, not averaged away: frames the node dropped (from its stats topic),
sequence numbers missing at the subscriber, the longest gap, and the worst latencies.

With ``baseline=True`` the naive serial loop (``bench/baseline.py``) runs on the same model and
source afterwards, and a short engine-only run gives ``node FPS / engine FPS``.

With ``peak_rate=True`` the node is run several times on the paced synthetic camera (queue
``latest``), each for ``duration_s``, to find the highest source rate it holds: at most
``PEAK_MAX_DROP`` of the captured frames dropped or missing at the subscriber. The first trial
runs at ``PEAK_START_FPS``; the output rate it reaches brackets a bisection of ``peak_steps``
trials. This is how Isaac ROS reports node throughput.

With ``cameras=N`` (N > 1) it compares one engine for N cameras against a node per camera, in
one run: first one node with N cameras (``--source bench0=SOURCE --source bench1=SOURCE ...``,
batched inference), then N separate nodes at once (one camera each, as ``launch/two_cameras.yaml``
runs them), each measured for ``duration_s`` from a subscriber per camera (each in its own thread).
Both run the ``latest`` queue, as live cameras do. It reports per camera the FPS, drops and
capture-to-receive latency percentiles, the total images/s, the CPU of the node(s) and images per
CPU-second, and ``one_node_over_separate``: the total images/s of the one node over that of the N
nodes (``..._per_core``: the same for images per CPU-second, less swayed by other load). A camera
starved by the others shows as a low ``min_camera_share`` (slowest camera's FPS / mean camera FPS).

Run it with ``perception bench pipeline --model m.onnx --source synthetic --duration 10 --baseline``,
or ``perception bench pipeline --cameras 2 --source clip.mp4 --loop --fps 30 --duration 20``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from perception import contracts
from perception.bench.stats import ratio, sequence_gaps, summarize_ms
from perception.config import bounds
from perception.errors import PerceptionError

#: How long the node may take to load its model and publish its first mask.
STARTUP_TIMEOUT_S = 60.0
#: How long the node gets to exit after SIGINT before it is terminated.
SHUTDOWN_TIMEOUT_S = 10.0
#: Camera name (namespace ``perception/<name>``) the benchmarked node publishes under.
BENCH_CAMERA = "bench"


#: --peak-rate: the largest share of captured frames that may be dropped or lost at a held rate.
PEAK_MAX_DROP = 0.01
#: --peak-rate: the first trial's source rate: the synthetic camera's maximum, above what a CPU node reaches.
PEAK_START_FPS = 240.0


class NodeFailed(PerceptionError):
    """The node under test exited or never published; the message carries its last error line."""


@dataclass
class PipelineBenchConfig:
    """What to run. ``fps``: the source rate passed to the node (None: the source's default, 30 for
    the synthetic camera; files are read as fast as the node takes them)."""

    model: Path | None = None
    source: str = "synthetic"
    duration_s: float = field(default=10.0, metadata=bounds(0.1, 86_400))
    fps: float | None = field(default=None, metadata=bounds(0.1, 1000))
    width: int | None = field(default=None, metadata=bounds(16, 16_384))
    height: int | None = field(default=None, metadata=bounds(16, 16_384))
    engine: str = "ort"
    provider: str | None = None
    threads: int | None = field(default=None, metadata=bounds(0, 1024))
    precision: str | None = None
    baseline: bool = False
    peak_rate: bool = False
    peak_steps: int = field(default=4, metadata=bounds(1, 20))
    engine_runs: int = field(default=100, metadata=bounds(0, 1_000_000))
    progress: bool = True
    cameras: int = field(default=1, metadata=bounds(1, 16))
    rounds: int = field(default=1, metadata=bounds(1, 20))
    batch_timeout_ms: float | None = field(default=None, metadata=bounds(0, 10_000))
    loop: bool = False


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_command(cfg: PipelineBenchConfig, model: Path, endpoint: str, cameras: tuple[str, ...] = ()) -> list[str]:
    """The ``perception run`` command line of the node under test: one camera (``BENCH_CAMERA``),
    or ``cameras`` batched in one node, each reading ``cfg.source``."""
    sources = ["--source", cfg.source, "--camera-name", BENCH_CAMERA] if not cameras else [
        word for name in cameras for word in ("--source", f"{name}={cfg.source}")]
    cmd = [sys.executable, "-m", "perception", "-q", "run", "--model", str(model), *sources,
           "--endpoint", endpoint, "--engine", cfg.engine]
    if cfg.provider:
        cmd += ["--provider", cfg.provider]
    if cfg.threads:
        cmd += ["--threads", str(cfg.threads)]
    if cfg.precision:
        cmd += ["--precision", cfg.precision]
    if cfg.peak_rate or cameras:
        cmd += ["--queue", "latest"]
    if cfg.loop:
        cmd += ["--loop"]
    if cfg.batch_timeout_ms is not None and len(cameras) > 1:
        cmd += ["--batch-timeout-ms", str(cfg.batch_timeout_ms)]
    if cfg.fps is not None:
        cmd += ["--fps", str(cfg.fps)]
    if cfg.width:
        cmd += ["--width", str(cfg.width)]
    if cfg.height:
        cmd += ["--height", str(cfg.height)]
    return cmd


@dataclass
class _Received:
    """What the subscriber saw, per frame (first mask message of each seq) and from stats."""

    frames: dict[int, dict[str, Any]] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    messages: int = 0
    wire_bytes: int = 0
    stats_docs: list[dict[str, Any]] = field(default_factory=list)
    model_id: str | None = None
    first_receive_ns: int | None = None
    last_receive_ns: int | None = None


def _record(rx: _Received, msg) -> None:
    rx.messages += 1
    rx.wire_bytes += msg.wire_bytes
    if msg.kind == contracts.KIND_JSON:
        if msg.topic.endswith("/" + contracts.STATS_TOPIC) and isinstance(msg.data, dict):
            rx.stats_docs.append({"receive_ns": msg.receive_ns, "doc": msg.data})
        return
    seq = msg.seq
    rx.last_receive_ns = msg.receive_ns
    if rx.first_receive_ns is None:
        rx.first_receive_ns = msg.receive_ns
        rx.model_id = msg.header.get("model_id")
    if seq in rx.frames:  # another mask topic of a frame already counted
        return
    h = msg.header
    rx.order.append(seq)
    rx.frames[seq] = {
        "capture_ns": h["capture_ns"],
        "publish_ns": h["publish_ns"],
        "receive_ns": msg.receive_ns,
        "latency_ms": dict(h.get("latency_ms") or {}),
    }


class _CpuSampler:
    """The node's CPU use (psutil ``cpu_percent``: 100 = one core) once a second, and its peak RSS."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.samples: list[float] = []
        self.rss_peak = 0
        self._next_s = time.monotonic() + 1.0
        self.proc.cpu_percent(None)  # primes the counter; the first real sample covers the next second
        self._threads_start = self._thread_times()
        self._cpu_start = self._cpu_seconds()
        self._t_start = time.monotonic()

    def _cpu_seconds(self) -> float | None:
        try:
            times = self.proc.cpu_times()
        except psutil.Error:
            return None
        return times.user + times.system

    def _thread_times(self) -> dict[int, float]:
        try:
            return {t.id: t.user_time + t.system_time for t in self.proc.threads()}
        except psutil.Error:
            return {}

    def maybe_sample(self) -> None:
        now = time.monotonic()
        if now < self._next_s:
            return
        self._next_s = now + 1.0
        try:
            self.samples.append(self.proc.cpu_percent(None))
            self.rss_peak = max(self.rss_peak, self.proc.memory_info().rss)
        except psutil.Error:
            pass

    def summary(self) -> dict[str, Any]:
        end = self._thread_times()
        wall = max(time.monotonic() - self._t_start, 1e-9)
        per_thread = sorted(
            ((tid, 100.0 * (t - self._threads_start.get(tid, 0.0)) / wall) for tid, t in end.items()),
            key=lambda x: -x[1],
        )
        cpu_end = self._cpu_seconds()
        return {
            # The whole window's CPU time over its wall time (100 = one core busy throughout).
            "window_percent": (None if cpu_end is None or self._cpu_start is None
                               else round(100.0 * (cpu_end - self._cpu_start) / wall, 1)),
            "samples_percent": [round(s, 1) for s in self.samples],
            "mean_percent": sum(self.samples) / len(self.samples) if self.samples else None,
            "max_percent": max(self.samples) if self.samples else None,
            "cores": psutil.cpu_count(logical=True),
            "threads": [{"tid": tid, "percent": round(p, 1)} for tid, p in per_thread if p >= 0.5],
            "rss_peak_mb": round(self.rss_peak / 2**20, 1) if self.rss_peak else None,
        }


def _stop(proc: subprocess.Popen) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # the node's own clean shutdown (closes sockets, logs totals)
        try:
            proc.wait(SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return proc.returncode


def _last_line(log_path: Path) -> str:
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    return lines[-1] if lines else "no output"


def measure_node(cfg: PipelineBenchConfig, model: Path, tick=None) -> dict[str, Any]:
    """Start the node, measure it for ``cfg.duration_s`` seconds, stop it; the ``pipeline`` block.

    Raises NodeFailed when the node exits early or publishes nothing within STARTUP_TIMEOUT_S.
    """
    from perception.subscribe import MaskSubscriber

    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    namespace = contracts.default_namespace(BENCH_CAMERA)
    rx = _Received()
    # The subscriber connects first, so that no message after the node's first is missed.
    with MaskSubscriber(endpoint, namespace=namespace, rcvhwm=100_000) as sub, tempfile.TemporaryDirectory(
        prefix="bench-node-"
    ) as tmp:
        log_path, out_path = Path(tmp) / "stderr.log", Path(tmp) / "stdout.jsonl"
        cmd = node_command(cfg, model, endpoint)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(log_path, "w") as err, open(out_path, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        try:
            t_start = time.monotonic()
            while rx.first_receive_ns is None:
                if proc.poll() is not None:
                    raise NodeFailed(f"the node exited with status {proc.returncode} before publishing: "
                                     f"{_last_line(log_path)}")
                if time.monotonic() - t_start > STARTUP_TIMEOUT_S:
                    raise NodeFailed(f"the node published nothing within {STARTUP_TIMEOUT_S:.0f} s: "
                                     f"{_last_line(log_path)}")
                msg = sub.recv(timeout_s=0.2)
                if msg is not None:
                    _record(rx, msg)
            startup_s = time.monotonic() - t_start
            cpu = _CpuSampler(proc.pid)
            t_window = time.monotonic()
            deadline = t_window + cfg.duration_s
            while (now := time.monotonic()) < deadline:
                if proc.poll() is not None:
                    raise NodeFailed(f"the node exited with status {proc.returncode} during the run: "
                                     f"{_last_line(log_path)}")
                msg = sub.recv(timeout_s=min(0.2, deadline - now))
                if msg is not None:
                    before = len(rx.order)
                    _record(rx, msg)
                    if tick is not None and len(rx.order) > before:
                        tick(1)
                cpu.maybe_sample()
            window_s = time.monotonic() - t_window
            cpu_summary = cpu.summary()
            counters = dict(sub.counters.__dict__)
        finally:
            exit_code = _stop(proc)
        final_stats = _final_stats(out_path)
    return summarize_received(rx, window_s=window_s, cpu=cpu_summary, subscriber=counters, extra={
        "source": cfg.source,
        "duration_s": round(window_s, 3),
        "startup_to_first_mask_s": round(startup_s, 3),
        "node_command": " ".join(cmd[1:]),
        "node_exit_code": exit_code,
        "node_final_stats": final_stats,
    })


def _final_stats(out_path: Path) -> dict[str, Any] | None:
    """The JSON line ``perception run`` prints on stdout when it stops (its whole-run totals)."""
    try:
        lines = [ln for ln in out_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    for line in reversed(lines):
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            return doc
    return None


def summarize_received(rx: _Received, *, window_s: float, cpu: dict, subscriber: dict, extra: dict) -> dict:
    """Rates, gaps, per-stage and end-to-end latency from what the subscriber received."""
    seqs = rx.order
    frames = [rx.frames[s] for s in seqs]
    gaps = sequence_gaps(seqs)
    stage_names: list[str] = []
    for f in frames:
        for name in f["latency_ms"]:
            if name not in stage_names:
                stage_names.append(name)
    stages = {name: summarize_ms([f["latency_ms"][name] for f in frames if name in f["latency_ms"]])
              for name in stage_names}
    e2e = [(f["receive_ns"] - f["capture_ns"]) / 1e6 for f in frames]
    to_publish = [(f["publish_ns"] - f["capture_ns"]) / 1e6 for f in frames]
    # Frames the node captured over the window: the span of sequence numbers seen (seq is given at capture).
    captured = gaps["last"] - gaps["first"] + 1 if seqs else 0
    stats_first = rx.stats_docs[0]["doc"] if rx.stats_docs else {}
    stats_last = rx.stats_docs[-1]["doc"] if rx.stats_docs else {}
    dropped = _counter_delta(stats_first, stats_last, "dropped")
    return {
        **extra,
        "model_id": rx.model_id,
        "window_s": round(window_s, 4),
        "frames_received": len(seqs),
        "frames_captured": captured,
        "input_fps": captured / window_s if window_s > 0 else None,
        "output_fps": len(seqs) / window_s if window_s > 0 else None,
        "frames_dropped": dropped,
        # Missing at the subscriber but not counted by the node's queue: lost between the node's
        # publisher and this subscriber (ZeroMQ's per-subscriber send queue, --sndhwm, overflowed).
        # Approximate: the node's counter is read from 1 Hz stats, the gaps from every message.
        "lost_after_node": None if dropped is None else max(0, gaps["missing"] - dropped),
        "sequence": gaps,
        "messages_received": rx.messages,
        "wire_mb": round(rx.wire_bytes / 2**20, 3),
        "stages_ms": stages,
        "capture_to_publish_ms": summarize_ms(to_publish),
        "capture_to_receive_ms": summarize_ms(e2e),
        "capture_to_receive_samples_ms": [round(v, 3) for v in e2e],
        "cpu": cpu,
        "subscriber": subscriber,
        "node_stats_last": stats_last,
    }


def _counter_delta(first: dict, last: dict, name: str) -> int | None:
    """``last[name] - first[name]`` for a counter of the node's stats document (a key of
    ``contracts.CAMERA_STATS``); None when the last document lacks it (no stats arrived)."""
    if name not in {key.name for key in contracts.CAMERA_STATS}:
        raise KeyError(f"{name!r} is not a key of the node's stats document")
    b = last.get(name)
    if not isinstance(b, int) or isinstance(b, bool):
        return None
    a = first.get(name)
    return b - (a if isinstance(a, int) and not isinstance(a, bool) else 0)


class _CameraReceiver(threading.Thread):
    """One camera namespace's subscriber in its own thread (a ZeroMQ socket stays in the thread
    that made it): records what arrives while ``measuring`` is set."""

    def __init__(self, endpoint: str, namespace: str) -> None:
        super().__init__(name=f"bench-receive-{namespace}", daemon=True)
        self.endpoint, self.namespace = endpoint, namespace
        self.ready, self.first_mask, self.measuring, self.done = (threading.Event() for _ in range(4))
        self.rx = _Received()
        self.counters: dict[str, int] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        from perception.subscribe import MaskSubscriber

        try:
            with MaskSubscriber(self.endpoint, namespace=self.namespace, rcvhwm=100_000) as sub:
                self.ready.set()
                while not self.done.is_set():
                    msg = sub.recv(timeout_s=0.1)
                    if msg is None:
                        continue
                    if msg.kind != contracts.KIND_JSON:
                        self.first_mask.set()
                    if self.measuring.is_set():
                        _record(self.rx, msg)
                self.counters = dict(sub.counters.__dict__)
        except BaseException as exc:  # reported by the measuring thread
            self.error = exc
            self.ready.set()


def measure_nodes(cfg: PipelineBenchConfig, model: Path, groups: list[tuple[str, ...]]) -> dict[str, Any]:
    """Run one node per group of camera names at the same time (a group of several: one node
    batching them), measure every camera for ``cfg.duration_s`` once each has published, stop them.

    Returns per camera FPS, drops and latency, the total images/s, each node's CPU and final stats.
    Raises NodeFailed when a node exits early or a camera publishes nothing within STARTUP_TIMEOUT_S.
    """
    endpoints = [f"tcp://127.0.0.1:{free_tcp_port()}" for _ in groups]
    receivers = {name: _CameraReceiver(endpoint, contracts.default_namespace(name))
                 for endpoint, group in zip(endpoints, groups, strict=True) for name in group}
    for receiver in receivers.values():
        receiver.start()
    for receiver in receivers.values():
        receiver.ready.wait(10)
    procs: list[tuple[subprocess.Popen, Path, Path, list[str]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-nodes-") as tmp:
        try:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            for i, (endpoint, group) in enumerate(zip(endpoints, groups, strict=True)):
                cmd = node_command(cfg, model, endpoint, group)
                log_path, out_path = Path(tmp) / f"stderr{i}.log", Path(tmp) / f"stdout{i}.jsonl"
                with open(log_path, "w") as err, open(out_path, "w") as out:
                    procs.append((subprocess.Popen(cmd, stdout=out, stderr=err, env=env), log_path, out_path, cmd))

            def check_alive(when: str) -> None:
                for proc, log_path, _, _ in procs:
                    if proc.poll() is not None:
                        raise NodeFailed(f"a node exited with status {proc.returncode} {when}: {_last_line(log_path)}")

            t_start = time.monotonic()
            while not all(r.first_mask.is_set() for r in receivers.values()):
                check_alive("before publishing")
                broken = next((r for r in receivers.values() if r.error is not None), None)
                if broken is not None:
                    raise NodeFailed(f"the subscriber of {broken.namespace} failed: {broken.error}")
                if time.monotonic() - t_start > STARTUP_TIMEOUT_S:
                    silent = [n for n, r in receivers.items() if not r.first_mask.is_set()]
                    raise NodeFailed(f"camera(s) {', '.join(silent)} published nothing within {STARTUP_TIMEOUT_S:.0f} s: "
                                     f"{_last_line(procs[0][1])}")
                time.sleep(0.05)
            startup_s = time.monotonic() - t_start
            samplers = [_CpuSampler(proc.pid) for proc, _, _, _ in procs]
            for receiver in receivers.values():
                receiver.measuring.set()
            t_window = time.monotonic()
            while time.monotonic() < t_window + cfg.duration_s:
                check_alive("during the run")
                for sampler in samplers:
                    sampler.maybe_sample()
                time.sleep(0.05)
            for receiver in receivers.values():
                receiver.measuring.clear()
            window_s = time.monotonic() - t_window
            cpu = [sampler.summary() for sampler in samplers]
        finally:
            for receiver in receivers.values():
                receiver.done.set()
            exit_codes = [_stop(proc) for proc, _, _, _ in procs]
            for receiver in receivers.values():
                receiver.join(5)
        final_stats = [_final_stats(out_path) for _, _, out_path, _ in procs]
    per_camera = {}
    for name, receiver in receivers.items():
        run = summarize_received(receiver.rx, window_s=window_s, cpu={}, subscriber=receiver.counters, extra={})
        per_camera[name] = {key: run[key] for key in (
            "output_fps", "input_fps", "frames_received", "frames_captured", "frames_dropped", "lost_after_node",
            "capture_to_receive_ms")}
        per_camera[name]["stages_p50_ms"] = {stage: s["p50"] for stage, s in run["stages_ms"].items()}
    fps = [c["output_fps"] or 0.0 for c in per_camera.values()]
    return {
        "nodes": [{"cameras": list(group), "command": " ".join(cmd[1:]), "exit_code": code, "cpu": c,
                   "final_stats": final}
                  for group, (_, _, _, cmd), code, c, final in zip(groups, procs, exit_codes, cpu, final_stats, strict=True)],
        "window_s": round(window_s, 3),
        "startup_to_first_masks_s": round(startup_s, 3),
        "per_camera": per_camera,
        "images_per_s": round(sum(fps), 3),
        "min_camera_share": ratio(min(fps), sum(fps) / len(fps)),
        "cpu_percent_mean": sum(c["window_percent"] or 0.0 for c in cpu),
        # Images per second of CPU time (100 % = one core): the efficiency figure, which other
        # load on the machine distorts less than the rates (it takes CPU from either run alike).
        "images_per_core_s": ratio(sum(fps), sum(c["window_percent"] or 0.0 for c in cpu) / 100),
    }


def measure_cameras(cfg: PipelineBenchConfig, model: Path, tick=None) -> dict[str, Any]:
    """``--cameras N``: one node batching N cameras, then N separate nodes; the ``cameras`` block.

    With ``rounds`` > 1 the two alternate (one, N, N, one, one, ...), so that a load that drifts
    during the run weighs on both alike; ``one_node``/``separate_nodes`` are the first round's
    details, ``rounds`` every round's totals, and the ratio is over the sums of all rounds."""
    names = tuple(f"{BENCH_CAMERA}{i}" for i in range(cfg.cameras))
    runs: dict[str, list[dict[str, Any]]] = {"one_node": [], "separate_nodes": []}
    for r in range(cfg.rounds):
        order = ("one_node", "separate_nodes") if r % 2 == 0 else ("separate_nodes", "one_node")
        for key in order:
            groups = [names] if key == "one_node" else [(name,) for name in names]
            runs[key].append(measure_nodes(cfg, model, groups))
            if tick is not None:
                tick(1)
    total = {key: sum(run["images_per_s"] for run in runs[key]) for key in runs}
    per_core = {key: [run["images_per_core_s"] for run in runs[key] if run["images_per_core_s"]] for key in runs}
    return {
        "n": cfg.cameras,
        "source": cfg.source,
        "fps_requested": cfg.fps,
        "batch_timeout_ms": cfg.batch_timeout_ms,
        "one_node": runs["one_node"][0],
        "separate_nodes": runs["separate_nodes"][0],
        "rounds": [{"one_node_images_per_s": one["images_per_s"], "separate_images_per_s": sep["images_per_s"],
                    "ratio": ratio(one["images_per_s"], sep["images_per_s"])}
                   for one, sep in zip(runs["one_node"], runs["separate_nodes"], strict=True)],
        "one_node_over_separate": ratio(total["one_node"], total["separate_nodes"]),
        "one_node_over_separate_per_core": ratio(
            sum(per_core["one_node"]) / len(per_core["one_node"]) if per_core["one_node"] else None,
            sum(per_core["separate_nodes"]) / len(per_core["separate_nodes"]) if per_core["separate_nodes"] else None),
    }


def run_pipeline_bench(cfg: PipelineBenchConfig, *, command: str = "") -> dict[str, Any]:
    """The whole pipeline bench (node, then baseline and engine-only when asked); a full bench JSON.

    Raises ModelError for a missing model, NodeFailed when the node fails, SourceError/ConfigError
    for a bad source (from the baseline).
    """
    from perception.bench.baseline import run_serial_baseline
    from perception.bench.engine import EngineBenchConfig, resolve_models, run_engine_bench
    from perception.bench.report import new_results
    from perception.progress import progress

    model = resolve_models([cfg.model] if cfg.model else [])[0]
    results = new_results("pipeline", command)
    results["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items()}
    if cfg.cameras > 1:
        from perception.errors import ConfigError

        if cfg.baseline or cfg.peak_rate:
            raise ConfigError("--cameras compares one node with separate nodes; run --baseline or --peak-rate "
                              "without --cameras")
        with progress(desc=f"{cfg.cameras} cameras: one node and {cfg.cameras} nodes", unit="run", total=2 * cfg.rounds,
                      disable=not cfg.progress, file=sys.stderr) as bar:
            results["cameras"] = measure_cameras(cfg, model, tick=bar.update)
        return results
    with progress(desc="pipeline bench", unit="frame", disable=not cfg.progress, file=sys.stderr) as bar:
        bar.set_postfix_str("node")
        results["pipeline"] = measure_node(cfg, model, tick=bar.update)
        if cfg.baseline:
            bar.set_postfix_str("serial baseline")
            results["baseline"] = run_serial_baseline(
                model=model, source=cfg.source, source_options=source_options(cfg), duration_s=cfg.duration_s,
                engine=cfg.engine, provider=cfg.provider, threads=cfg.threads, precision=cfg.precision or "auto",
                tick=bar.update,
            )
    if cfg.peak_rate:
        results["peak_rate"] = find_peak_rate(cfg, model)
    ratios: dict[str, Any] = {}
    node_fps = results["pipeline"]["output_fps"]
    if cfg.baseline:
        ratios["node_over_baseline_fps"] = ratio(node_fps, results["baseline"]["fps"])
    if cfg.engine_runs:
        engine = run_engine_bench(EngineBenchConfig(
            models=[model], engines=[cfg.engine], providers=[cfg.provider] if cfg.provider else [],
            precisions=[cfg.precision or "auto"],
            threads=[cfg.threads] if cfg.threads else [], runs=cfg.engine_runs, warmup=10,
            blocks=min(5, cfg.engine_runs), progress=cfg.progress,
        ))
        row = engine["results"][0]
        results["engine"] = engine
        ratios["engine_only_fps"] = row["fps"]
        ratios["node_over_engine_fps"] = ratio(node_fps, row["fps"])
    results["ratios"] = ratios
    return results


def source_options(cfg: PipelineBenchConfig) -> dict[str, Any]:
    """The ``open_source`` options the node gets from the same flags (for the baseline)."""
    options: dict[str, Any] = {}
    if cfg.width:
        options["width"] = cfg.width
    if cfg.height:
        options["height"] = cfg.height
    if cfg.fps:
        options["fps"] = cfg.fps
    return options


def _held(trial: dict[str, Any]) -> bool:
    """Whether a trial's node kept up: at most PEAK_MAX_DROP of the captured frames dropped by the
    node or missing at the subscriber."""
    captured = trial.get("frames_captured") or 0
    lost = max(trial.get("frames_dropped") or 0, (trial.get("sequence") or {}).get("missing") or 0)
    return captured > 0 and lost <= PEAK_MAX_DROP * captured


def find_peak_rate(cfg: PipelineBenchConfig, model: Path) -> dict[str, Any]:
    """The highest synthetic-camera rate the node holds (see the module docstring); the
    ``peak_rate`` block: ``fps_held`` (None when even the lowest tried rate dropped) and every trial.

    Raises NodeFailed when a node run fails, ConfigError when the source is not synthetic.
    """
    import dataclasses

    from perception.errors import ConfigError

    if not cfg.source.startswith("synthetic"):
        raise ConfigError("--peak-rate paces the synthetic camera; use --source synthetic (files are read unpaced)")
    trials: list[dict[str, Any]] = []

    def trial(fps: float) -> bool:
        run = measure_node(dataclasses.replace(cfg, fps=round(fps, 2)), model)
        held = _held(run)
        trials.append({"fps_requested": round(fps, 2), "input_fps": run["input_fps"], "output_fps": run["output_fps"],
                       "frames_captured": run["frames_captured"], "frames_dropped": run["frames_dropped"],
                       "missing": run["sequence"]["missing"], "held": held,
                       "cpu_percent": (run.get("cpu") or {}).get("mean_percent")})
        return held

    if trial(PEAK_START_FPS):
        return {"fps_held": trials[0]["input_fps"], "max_drop": PEAK_MAX_DROP, "trials": trials,
                "note": f"held the fastest rate tried ({PEAK_START_FPS:g} FPS requested); the source is the limit"}
    ceiling = trials[0]["output_fps"] or 1.0  # what the node delivers when saturated
    lo, hi = 0.0, ceiling * 1.1
    if trial(ceiling * 0.9):
        lo = ceiling * 0.9
    else:
        hi = ceiling * 0.9
        lo = ceiling * 0.5 if trial(ceiling * 0.5) else 0.0
    for _ in range(max(0, cfg.peak_steps - 2)):
        mid = (lo + hi) / 2
        if mid <= 0.1:
            break
        if trial(mid):
            lo = mid
        else:
            hi = mid
    dropping = [t["fps_requested"] for t in trials if not t["held"]]
    return {"fps_held": round(lo, 2) if lo > 0 else None, "lowest_dropping_fps": min(dropping),
            "max_drop": PEAK_MAX_DROP, "trials": trials}
