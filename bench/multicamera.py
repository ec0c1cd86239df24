"""``perception bench pipeline --cameras N``: one engine for N cameras against a node per camera.

One node with N cameras (``--source bench0=SOURCE --source bench1=SOURCE ...``, batched inference),
then N separate nodes at once, each camera measured from its own subscriber thread (see the
pipeline bench's module docstring for the figures).
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perception import contracts
from perception.bench.contention import CpuWindow, contention_warning
from perception.bench.node import (
    DRAIN_IDLE_S,
    FAST_RECONNECT,
    STARTUP_TIMEOUT_S,
    CpuSampler,
    read_final_stats,
    scratch_folder,
    subscribed_masks,
    warn_accounting,
)
from perception.bench.nodeproc import (
    BENCH_CAMERA,
    NodeFailed,
    StopOnSignal,
    exited,
    free_tcp_port,
    last_line,
    node_command,
    start_node,
    stop_node,
)
from perception.bench.received import Received, record_message, summarize_received
from perception.bench.stats import few_samples, ratio
from perception.options import MAX_QUEUE_MB
from perception.spawn import shown

if TYPE_CHECKING:
    from perception.bench.pipeline import PipelineBenchConfig

#: A camera whose measured input rate is below this share of the rate requested is named as one
#: its source held back (its output FPS then measures the source, not the node).
DELIVERED_SHARE = 0.9


def fps_requested(cfg: PipelineBenchConfig) -> float | None:
    """The rate each camera was asked for: ``--fps``, else the synthetic camera's own default;
    None for a file read as fast as the node takes it, or a camera's or stream's own rate."""
    if cfg.fps:
        return float(cfg.fps)
    if cfg.source.strip() == "synthetic":
        from perception.sources.synthetic import DEFAULT_FPS

        return float(DEFAULT_FPS)
    return None


class _CameraReceiver(threading.Thread):
    """One camera namespace's subscriber in its own thread (a ZeroMQ socket stays in the thread
    that made it): records what arrives while ``measuring`` is set."""

    def __init__(self, endpoint: str, namespace: str, masks: list[str] | None = None) -> None:
        super().__init__(name=f"bench-receive-{namespace}", daemon=True)
        self.endpoint, self.namespace, self.masks = endpoint, namespace, masks
        self.ready, self.first_mask, self.measuring, self.closed, self.done = (threading.Event() for _ in range(5))
        self.last_message_s = time.monotonic()
        self.rx = Received()
        self.counters: dict[str, int] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        from perception.subscribe import MaskSubscriber

        try:
            with MaskSubscriber(self.endpoint, namespace=self.namespace, masks=self.masks, max_queue_mb=MAX_QUEUE_MB,
                                **FAST_RECONNECT) as sub:
                self.ready.set()
                before = Received()
                while not self.done.is_set():
                    msg = sub.recv(timeout_s=0.1)
                    if msg is None:
                        continue
                    self.last_message_s = time.monotonic()
                    if msg.kind != contracts.KIND_JSON:
                        self.first_mask.set()
                    if self.closed.is_set():  # the window's frames still on their way while the node stops
                        self.rx.closed = True
                        record_message(self.rx, msg)
                    elif self.measuring.is_set():
                        record_message(self.rx, msg)
                    else:  # frames begun before the window: the rest of their masks are not counted
                        record_message(before, msg)
                        self.rx = before.window_after()
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
    scratch = scratch_folder("bench-nodes-")  # before any receiver runs: /tmp may have no room
    endpoints = [f"tcp://127.0.0.1:{free_tcp_port()}" for _ in groups]
    receivers = {name: _CameraReceiver(endpoint, contracts.default_namespace(name), subscribed_masks(cfg))
                 for endpoint, group in zip(endpoints, groups, strict=True) for name in group}
    for receiver in receivers.values():
        receiver.start()
    for receiver in receivers.values():
        receiver.ready.wait(10)
    procs: list[tuple[subprocess.Popen, Path, Path, list[str]]] = []
    with StopOnSignal() as stop, scratch as tmp:
        try:
            for i, (endpoint, group) in enumerate(zip(endpoints, groups, strict=True)):
                cmd = node_command(cfg, model, endpoint, group)
                log_path, out_path = Path(tmp) / f"stderr{i}.log", Path(tmp) / f"stdout{i}.jsonl"
                procs.append((start_node(cmd, log_path, out_path), log_path, out_path, cmd))

            def check_alive(when: str) -> None:
                for proc, log_path, _, _ in procs:
                    if proc.poll() is not None:
                        if proc.returncode == 0:  # a node ends by itself only when its file input ended
                            raise NodeFailed(f"a node's input ended {when} (it exited with status 0): "
                                             f"{cfg.source} is shorter than the run; pass --loop or bench a longer "
                                             "clip (or a shorter --duration)")
                        raise NodeFailed(f"a node {exited(proc.returncode)} {when}: {last_line(log_path)}",
                                         status=proc.returncode)

            t_start = time.monotonic()
            while not all(r.first_mask.is_set() for r in receivers.values()):
                check_alive("before publishing")
                broken = next((r for r in receivers.values() if r.error is not None), None)
                if broken is not None:
                    raise NodeFailed(f"the subscriber of {broken.namespace} failed: {broken.error}")
                if time.monotonic() - t_start > STARTUP_TIMEOUT_S:
                    silent = [n for n, r in receivers.items() if not r.first_mask.is_set()]
                    raise NodeFailed(f"camera(s) {', '.join(silent)} published nothing within {STARTUP_TIMEOUT_S:.0f} s: "
                                     f"{last_line(procs[0][1])}")
                time.sleep(0.05)
            startup_s = time.monotonic() - t_start
            samplers = [CpuSampler(proc.pid) for proc, _, _, _ in procs]
            for receiver in receivers.values():
                receiver.measuring.set()
            cpu_window = CpuWindow().start()
            t_window = time.monotonic()
            while time.monotonic() < t_window + cfg.duration_s:
                check_alive("during the run")
                for sampler in samplers:
                    sampler.maybe_sample()
                time.sleep(0.05)
            for receiver in receivers.values():
                receiver.closed.set()
            window_s = time.monotonic() - t_window
            contention = cpu_window.stop()
            window_end_mono_ns = time.monotonic_ns()  # a duration's end: not the wall clock
            cpu = [sampler.summary() for sampler in samplers]
        finally:
            stop.stopping = True
            exit_codes = [stop_node(proc) for proc, _, _, _ in procs]
            # the frames the nodes sent before they stopped, still on their way (node.DRAIN_IDLE_S)
            drain_end = time.monotonic() + 5.0
            while time.monotonic() < drain_end and any(
                    r.is_alive() and time.monotonic() - r.last_message_s < DRAIN_IDLE_S for r in receivers.values()):
                time.sleep(0.05)
            for receiver in receivers.values():
                receiver.done.set()
            for receiver in receivers.values():
                receiver.join(5)
        final_stats = [read_final_stats(out_path) for _, _, out_path, _ in procs]
    per_camera = {}
    label = "one node" if len(groups) == 1 else f"{len(groups)} nodes"
    requested = fps_requested(cfg)
    warnings: list[str] = []
    for name, receiver in receivers.items():
        final = next((camera_final(f, name, group) for f, group in zip(final_stats, groups, strict=True)
                      if name in group), None)
        run = summarize_received(receiver.rx, window_s=window_s, cpu={}, subscriber=receiver.counters, extra={},
                                 final=final, window_end_mono_ns=window_end_mono_ns)
        per_camera[name] = {key: run[key] for key in (
            "output_fps", "input_fps", "frames_received", "frames_received_after_window", "frames_captured",
            "frames_dropped", "lost_after_node", "loss_split", "capture_to_receive_ms")}
        per_camera[name]["missing"] = run["sequence"]["missing"]
        per_camera[name]["stages_p50_ms"] = {stage: s["p50"] for stage, s in run["stages_ms"].items()}
        cam_warnings = list(run["warnings"])
        per_camera[name]["delivered_share"] = ratio(run["input_fps"], requested)
        shortfall = camera_shortfall(run, requested)
        if shortfall:
            cam_warnings.append(shortfall)
        few = few_samples(run["frames_received"], "its output", "frames")
        if few:
            cam_warnings.append(few)
        per_camera[name]["warnings"] = cam_warnings
        warnings += [f"{label}, camera {name}: {w}" for w in cam_warnings]
    busy = contention_warning(contention, wanted_cores=None, what=label)
    if busy:
        warnings.append(busy)
    warn_accounting(warnings)
    fps = [c["output_fps"] or 0.0 for c in per_camera.values()]
    return {
        "warnings": warnings,
        "nodes": [{"cameras": list(group), "command": shown(cmd), "exit_code": code, "cpu": c,
                   "final_stats": final}
                  for group, (_, _, _, cmd), code, c, final in zip(groups, procs, exit_codes, cpu, final_stats, strict=True)],
        "window_s": round(window_s, 3),
        "contention": contention,
        "startup_to_first_masks_s": round(startup_s, 3),
        "per_camera": per_camera,
        "images_per_s": round(sum(fps), 3),
        "min_camera_share": ratio(min(fps), sum(fps) / len(fps)),
        "cpu_percent_mean": sum(c["window_percent"] or 0.0 for c in cpu),
        # Images per second of CPU time (100 % = one core): the efficiency figure, which other
        # load on the machine distorts less than the rates (it takes CPU from either run alike).
        "images_per_core_s": ratio(sum(fps), sum(c["window_percent"] or 0.0 for c in cpu) / 100),
    }


def camera_shortfall(run: dict[str, Any], requested: float | None) -> str | None:
    """What to say of a camera whose measured input rate fell below ``DELIVERED_SHARE`` of the rate
    asked (``fps_requested``), or None."""
    share = ratio(run.get("input_fps"), requested)
    if requested is None or share is None or share >= DELIVERED_SHARE:
        return None
    kept_up = (run.get("frames_dropped") or 0) <= 0.01 * (run.get("frames_captured") or 0)
    return (f"its camera delivered {run['input_fps']:.1f} of the {requested:g} FPS requested ({100 * share:.0f} %): "
            "the source fell short of the rate asked (a synthetic camera renders on the cores the nodes use; a "
            "camera may not go that fast)" + (", and the node kept up with it, so its output FPS measures the "
                                               "source, not the node" if kept_up else ""))


def camera_final(final: dict[str, Any] | None, name: str, group: tuple[str, ...]) -> dict[str, Any] | None:
    """Camera ``name``'s own final stats: its node's final line, or for a node of several cameras the
    camera's entry under ``cameras`` (the node's line sums them)."""
    if final is None or len(group) == 1:
        return final
    cameras = final.get("cameras")
    own = cameras.get(name) if isinstance(cameras, dict) else None
    return own if isinstance(own, dict) else None


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
        # --fps, or the synthetic camera's default (None: a file unpaced, a camera's own rate)
        "fps_requested": fps_requested(cfg),
        "fps_requested_from": "--fps" if cfg.fps else "the source's default" if fps_requested(cfg) else None,
        "warnings": [w for key in ("one_node", "separate_nodes") for run in runs[key] for w in run["warnings"]],
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


