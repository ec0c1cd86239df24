"""One node under the bench: start ``perception run`` as its own process on a free loopback port
(``bench/nodeproc.py``: its command line, start and stop), receive its messages in a ``MaskSubscriber``,
sample its CPU, wait out ``--engine auto``'s probe, stop it, and summarise what arrived
(``bench/received.py``: rates, missing sequence numbers, per-stage and end-to-end latency, the node's own
counters from its stats documents). ``perception bench pipeline`` (``bench/pipeline.py``) runs it once,
``--peak-rate`` (``peak_rate.py``) at several rates, ``--cameras`` (``multicamera.py``) several nodes at once.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from perception import contracts
from perception.bench.contention import CpuWindow, contention_warning
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
from perception.bench.received import Received, record_message, stats_document, summarize_received
from perception.bench.stats import few_samples
from perception.errors import ConfigError, PerceptionError
from perception.options import MAX_QUEUE_MB
from perception.spawn import shown

if TYPE_CHECKING:
    from perception.bench.pipeline import PipelineBenchConfig

#: How long the node may take to load its model and publish its first mask.
STARTUP_TIMEOUT_S = 60.0
#: The measuring subscriber's reconnect interval, without back-off (see ``measure_node``).
FAST_RECONNECT = {"reconnect_ivl_ms": 10, "reconnect_ivl_max_ms": 10}
#: After the node has stopped, how long the subscriber keeps reading what it had sent (a second
#: that brings nothing ends it): frames published in the window that were still on their way.
DRAIN_IDLE_S = 0.3
#: How long ``--engine auto`` may probe (a first start for the model and machine) before the
#: window starts anyway; a probe of the 2-core machines here takes 30-60 s.
PROBE_WAIT_S = 300.0
#: The window opens at a random moment up to this long after the first frame, not on its arrival:
#: opened right on a frame, the frames received in it come out half a frame short on average.
OPEN_JITTER_S = 0.25


def probe_cache_command(cfg: PipelineBenchConfig, model: Path) -> str:
    """The ``perception bench probe`` command that caches the verdict the node would probe for:
    judged on the bench's own clip, with the node's ``--threads`` and ``--precision`` (the verdict
    is cached per thread count)."""
    from perception.sources import source_is_live

    parts = ["perception bench probe", str(model)]
    if not source_is_live(cfg.source):
        parts.append(f"--frames {cfg.source}")
    if cfg.threads:
        parts.append(f"--threads {cfg.threads}")
    if cfg.precision not in (None, "auto"):
        parts.append(f"--precision {cfg.precision}")
    return " ".join(parts)


def probe_ended_message(cfg: PipelineBenchConfig, model: Path) -> str:
    """The one-line error for a node whose input ended (exit status 0) while ``--engine auto``
    was still probing: the cause and the three ways round it."""
    from perception.config import cut

    return (f"the node's input {cut(cfg.source, 200)} ended before --engine auto's probe gave its verdict (a first "
            "start for this model and machine probes the engines while the node runs, 30 s or more on 2 cores), so "
            "the node exited with status 0 and nothing was measured; pass --loop, bench a longer clip, or cache the "
            f"verdict first with '{probe_cache_command(cfg, model)}'")


def loop_for_probe(cfg: PipelineBenchConfig, model: Path) -> str | None:
    """Why the node must loop its file while ``--engine auto`` probes, or None when it need not.

    At a first start for the model and machine (no cached verdict) the node runs ONNX Runtime
    beside the probe for 30 s or more, reading its file flat out; the bench measures only after
    the verdict. A clip shorter than that ends first, and the node exits with nothing measured
    (hunt6c 1.2: a 60-frame drive.mp4 ended after 3.5 s). So for a video file or image folder
    without ``--loop`` the node is given ``--loop``: the wait and the window then run on the
    clip however short it is, and the window is the whole ``--duration`` (a clip that would have
    ended inside it plays again instead). A cached verdict (``perception bench probe``, or an earlier
    start) needs no probe, and then the clip is read once as asked.
    """
    from perception.config import cut
    from perception.sources import source_is_live

    if cfg.engine != "auto" or cfg.loop or source_is_live(cfg.source):
        return None
    # A GPU provider or a forced precision other than fp32 waits for its verdict before the first frame.
    if (cfg.provider or "auto") not in ("auto", "cpu") or (cfg.precision or "auto") not in ("auto", "fp32"):
        return None
    from perception.engines.auto import cached_selection
    from perception.options import EngineOptions

    try:
        options = EngineOptions(provider=cfg.provider or "auto", threads=cfg.threads or 0,
                                precision=cfg.precision or "auto")
    except (ValueError, PerceptionError):  # the node reports its own bad flags
        return None
    if cached_selection(model, options) is not None:
        return None
    return (f"--engine auto has no cached verdict for {model.name} on this machine, so the node probes the engines "
            f"first (30 s or more on 2 cores); it loops {cut(cfg.source, 200)} (--loop) so that the clip "
            "does not end before the verdict, and the window measures the looped clip for --duration")


def subscribed_masks(cfg: PipelineBenchConfig) -> list[str] | None:
    """What the bench's subscriber asks the node for: ``--topics`` and the stats document (its
    drop counter), or None for every topic of the camera's namespace."""
    return [*cfg.topics, contracts.STATS_TOPIC] if cfg.topics else None


class CpuSampler:
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

    def _thread_name(self, tid: int) -> str | None:
        try:
            return Path(f"/proc/{self.proc.pid}/task/{tid}/comm").read_text().strip() or None
        except OSError:  # the thread ended, or not Linux
            return None

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
            # Named by the OS (the node names its stages: capture, inference[-N], publish).
            "threads": [{"tid": tid, "name": self._thread_name(tid), "percent": round(p, 1)}
                        for tid, p in per_thread if p >= 0.5],
            "rss_peak_mb": round(self.rss_peak / 2**20, 1) if self.rss_peak else None,
        }


def scratch_folder(prefix: str) -> tempfile.TemporaryDirectory:
    """A temporary folder for the benched node's logs (its stderr and stdout); ConfigError (one line
    naming TMPDIR) when the system has none that can be written: /tmp full, missing or read-only."""
    try:
        return tempfile.TemporaryDirectory(prefix=prefix)
    except OSError as exc:  # "No usable temporary directory found in [...]" (FileNotFoundError)
        raise ConfigError(f"cannot make a temporary folder for the benched node's logs: {exc.strerror or exc}; set "
                          "TMPDIR to a writable folder with some free space") from None


def measure_node(cfg: PipelineBenchConfig, model: Path, tick=None) -> dict[str, Any]:
    """Start the node, measure it for ``cfg.duration_s`` seconds, stop it; the ``pipeline`` block.

    Raises NodeFailed when the node exits early or publishes nothing within STARTUP_TIMEOUT_S.
    """
    from perception.subscribe import MaskSubscriber

    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    namespace = contracts.default_namespace(BENCH_CAMERA)
    rx = Received()
    # The subscriber connects first, so that no message after the node's first is missed. It
    # retries its connection every 10 ms without back-off (the default backs off to 250 ms while
    # the node is still starting), so the start-up figure is the node's, not the retry timer's.
    with (
        StopOnSignal() as stop,
        MaskSubscriber(endpoint, namespace=namespace, masks=subscribed_masks(cfg), max_queue_mb=MAX_QUEUE_MB,
                       **FAST_RECONNECT) as sub,
        scratch_folder("bench-node-") as tmp,
    ):
        log_path, out_path = Path(tmp) / "stderr.log", Path(tmp) / "stdout.jsonl"
        cmd = node_command(cfg, model, endpoint)
        proc = None
        try:
            proc = start_node(cmd, log_path, out_path)
            t_start = time.monotonic()
            while rx.first_receive_ns is None:
                if proc.poll() is not None:
                    # A short clip can be published whole and the node gone before this loop looks
                    # again (a starved CPU): then it did publish, but there is no window to measure.
                    if proc.returncode == 0 and sub.recv(timeout_s=0.5) is not None:
                        raise NodeFailed("the node published its whole input and exited before the measuring "
                                         "window opened; bench a longer clip, or pass --loop")
                    raise NodeFailed(f"the node {exited(proc.returncode)} before publishing: "
                                     f"{last_line(log_path)}", status=proc.returncode)
                if time.monotonic() - t_start > STARTUP_TIMEOUT_S:
                    raise NodeFailed(f"the node published nothing within {STARTUP_TIMEOUT_S:.0f} s: "
                                     f"{last_line(log_path)}")
                msg = sub.recv(timeout_s=0.2)
                if msg is not None:
                    record_message(rx, msg)
            startup_s = time.monotonic() - t_start
            probe = None
            if cfg.engine == "auto":
                # A first start measures ONNX Runtime FP32 beside the probe child, which shares the
                # cores: the window starts once the verdict is in, on fresh counts.
                probe = wait_for_probe(sub, proc, log_path, PROBE_WAIT_S,
                                       ended=probe_ended_message(cfg, model), seen=rx)
            else:
                settle = time.monotonic() + random.uniform(0.0, OPEN_JITTER_S)  # see OPEN_JITTER_S
                while (now := time.monotonic()) < settle and proc.poll() is None:
                    if (msg := sub.recv(timeout_s=settle - now)) is not None:
                        record_message(rx, msg)
            # The window counts from here: the frame(s) whose first mask opened it, or arrived while
            # waiting for the probe, are left out, so its FPS is frames published inside it over its
            # length (counting the opening mask read about 1/--duration FPS high).
            rx = rx.window_after()
            cpu = CpuSampler(proc.pid)
            cpu_window = CpuWindow().start()  # other processes on the cores during the window
            own_cpu_start = time.process_time()  # this process: the subscriber's decoding and ZeroMQ
            t_window = time.monotonic()
            deadline = t_window + cfg.duration_s
            input_ended_s = None
            while (now := time.monotonic()) < deadline:
                if proc.poll() is not None:
                    if proc.returncode != 0:
                        raise NodeFailed(f"the node {exited(proc.returncode)} during the run: "
                                         f"{last_line(log_path)}", status=proc.returncode)
                    # Exit 0 inside the window: its file input ended (no --loop). The window is what
                    # it ran; the messages it flushed on the way out still count.
                    input_ended_s = now - t_window
                    while (msg := sub.recv(timeout_s=1.0)) is not None:  # until a second passes without one
                        record_message(rx, msg)
                    break
                msg = sub.recv(timeout_s=min(0.2, deadline - now))
                if msg is not None:
                    before = len(rx.order)
                    record_message(rx, msg)
                    if tick is not None and len(rx.order) > before:
                        tick(1)
                cpu.maybe_sample()
            window_s = input_ended_s if input_ended_s is not None else time.monotonic() - t_window
            window_end_mono_ns = time.monotonic_ns()  # a duration's end: not the wall clock
            contention = cpu_window.stop()
            subscriber_cpu_s = time.process_time() - own_cpu_start
            cpu_summary = cpu.summary()
            counters = dict(sub.counters.__dict__)
        finally:
            stop.stopping = True
            exit_code = None if proc is None else stop_node(proc)
        # What the node sent before it stopped and was still on its way (in this socket's queue):
        # frames of the window that reached the subscriber, counted against the node's final stats.
        rx.closed = True
        while (msg := sub.recv(timeout_s=DRAIN_IDLE_S)) is not None:
            record_message(rx, msg)
        final_stats = read_final_stats(out_path)
        node_log = log_path.read_text(encoding="utf-8", errors="replace") if log_path.is_file() else ""
    if not rx.order:
        raise NodeFailed(no_frame_message(cfg, window_s, input_ended_s))
    summary = summarize_received(rx, window_s=window_s, cpu=cpu_summary, subscriber=counters, final=final_stats,
                                 window_end_mono_ns=window_end_mono_ns, extra={
        "source": cfg.source,
        "duration_s": round(window_s, 3),
        "startup_to_first_mask_s": round(startup_s, 3),
        "node_command": shown(cmd),
        "node_exit_code": exit_code,
        "node_final_stats": final_stats,
        "topics": list(cfg.topics) or "all",
        "subscriber_cpu_s": round(subscriber_cpu_s, 4),
        "probe_wait": probe,
        "input_ended_s": None if input_ended_s is None else round(input_ended_s, 3),
    })
    summary["contention"] = contention
    summary["warnings"] += node_warnings(node_log)
    busy = contention_warning(contention, wanted_cores=None, what="the node's window")
    if busy:
        summary["warnings"].append(busy)
    few = few_samples(len(rx.order), "the node", "frames")
    if few:
        summary["warnings"].append(few)
    warn_accounting(summary.get("warnings"))
    return summary


def no_frame_message(cfg: PipelineBenchConfig, window_s: float, input_ended_s: float | None) -> str:
    """Why a window holds no frame, and the fix: nothing to measure is an error, not a 0 FPS figure."""
    if input_ended_s is not None:
        return (f"the node's input ended {input_ended_s:.1f} s into the measuring window, before any frame of it "
                f"arrived ({cfg.source} ended right after the frame that opened the window): no frame to measure; "
                "pass --loop or bench a longer clip")
    return (f"no frame of the node arrived in the {window_s:.1f} s measuring window: nothing to measure; check the "
            "source, or give a longer --duration")


#: The node's own warning lines (its stderr, ``W <logger>: <text>``) that change what is measured.
NODE_WARNING_PREFIXES = ("--threads",)


def node_warnings(log_text: str) -> list[str]:
    """The node's warnings about its settings (``--threads`` above the cores), from its stderr log,
    which the bench keeps in a file: into the report's warnings, as the node's."""
    found = []
    for line in log_text.splitlines():
        # ``HH:MM:SS W logger: text`` (the CLI's log format)
        m = re.match(r"^\S+ W \S+: (.*)$", line.strip())
        if m and m.group(1).startswith(NODE_WARNING_PREFIXES):
            found.append(f"the node warned: {m.group(1).strip()}")
    return list(dict.fromkeys(found))


def warn_accounting(warnings: list[str] | None, where: str = "") -> None:
    """Say on stderr where the subscriber's count and the node's final stats disagree (also in the
    JSON's ``warnings``): a figure the report prints must never hide it."""
    for text in warnings or []:
        print(f"perception bench: warning: {where}{text}", file=sys.stderr)


def wait_for_probe(sub, proc: subprocess.Popen, log_path: Path, timeout_s: float, *,
                   ended: str | None = None, seen: Received | None = None) -> dict[str, Any]:
    """Receive (and discard) until a stats document says the ``--engine auto`` node is no longer
    probing, or ``timeout_s`` pass. Returns ``waited_s`` (0 when the first stats document already
    had a verdict: a cached one; ``was_probing`` then False), the ``state`` last seen, and ``timed_out``. Raises NodeFailed when
    the node exits meanwhile: ``ended`` (``probe_ended_message``) when it exited with status 0, its
    input at an end, else its own last error line. Messages go into ``seen`` when given (the
    frames seen before the window), and are otherwise discarded."""
    t0 = time.monotonic()
    state, waited, decided = None, False, False
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            if proc.returncode == 0:  # a clean exit: its file ended (no --loop) before the verdict
                raise NodeFailed(ended or "the node's input ended (it exited with status 0) before --engine auto's "
                                          "probe gave its verdict; pass --loop or bench a longer clip")
            raise NodeFailed(f"the node {exited(proc.returncode)} while probing engines: "
                             f"{last_line(log_path)}", status=proc.returncode)
        msg = sub.recv(timeout_s=0.2)
        if msg is not None and seen is not None:
            record_message(seen, msg)
        doc = None if msg is None else stats_document(msg)
        if doc is None:
            continue
        selection = doc.get("engine_selection")
        state = selection.get("state") if isinstance(selection, dict) else None
        if state != "probing":
            decided = True
            break
        waited = True
    timed_out = not decided
    if timed_out:
        what = "was still probing engines" if state == "probing" else "sent no stats document, so no verdict,"
        print(f"perception bench: warning: the node {what} after {timeout_s:.0f} s; measuring it as it runs",
              file=sys.stderr)
    return {"was_probing": waited, "waited_s": round(time.monotonic() - t0, 3) if waited else 0.0, "state": state,
            "timed_out": timed_out}


def read_final_stats(out_path: Path) -> dict[str, Any] | None:
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
