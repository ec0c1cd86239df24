"""One node under the bench: start ``perception run`` as its own process on a free loopback port
(``bench/nodeproc.py``: its command line, start and stop), receive its messages in a ``MaskSubscriber``, sample its CPU, stop it, and summarise what arrived
(rates, missing sequence numbers, per-stage and end-to-end latency, the node's own counters from
its stats documents). ``perception bench pipeline`` (``bench/pipeline.py``) runs it once,
``--peak-rate`` (``peak_rate.py``) at several rates, ``--cameras`` (``multicamera.py``) several nodes at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from perception import contracts
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
from perception.bench.stats import node_accounting, sequence_gaps, summarize_ms, transport_losses
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
#: A subscriber that heard nothing for this long at the end of the window, while the node published
#: more, is said to have been cut off (a stall of the transport, not the stop's last frames).
SILENT_TAIL_S = 1.0
#: How long ``--engine auto`` may probe (a first start for the model and machine) before the
#: window starts anyway; a probe of the 2-core machines here takes 30-60 s.
PROBE_WAIT_S = 300.0


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


@dataclass
class Received:
    """What the subscriber saw, per frame (first mask message of each seq) and from stats."""

    frames: dict[int, dict[str, Any]] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    #: Per mask topic: frame number -> the message's ``pub_seq`` (``stats.transport_losses``).
    pub_seqs: dict[str, dict[int, int]] = field(default_factory=dict)
    messages: int = 0
    wire_bytes: int = 0
    stats_docs: list[dict[str, Any]] = field(default_factory=list)
    model_id: str | None = None
    first_receive_ns: int | None = None
    last_receive_ns: int | None = None
    #: Frames up to this number began before the measuring window (their first mask arrived before
    #: it opened): the rest of their masks are not counted as frames of the window.
    skip_through: int | None = None
    #: The highest frame number seen in any mask message, counted or not.
    last_seq: int | None = None
    #: Per mask topic, the ``pub_seq`` of frame ``skip_through``'s message: what the node had sent
    #: on the topic before the window (``stats.node_accounting``).
    anchor_pub_seqs: dict[str, int] = field(default_factory=dict)
    #: Set once the window has closed: frames of the window that arrive after (while the node
    #: stops) count as received for the loss accounting, not for the rates or latencies.
    closed: bool = False
    late_seqs: set[int] = field(default_factory=set)
    late_pub_seqs: dict[str, dict[int, int]] = field(default_factory=dict)

    def window_after(self) -> Received:
        """A fresh record for the window that opens now: the frames seen so far (up to ``last_seq``)
        are left out, and their ``pub_seq`` anchors the node's count of what it sent before."""
        anchors = {t: pubs[self.last_seq] for t, pubs in self.pub_seqs.items() if self.last_seq in pubs}
        return Received(skip_through=self.last_seq, anchor_pub_seqs=anchors)


def stats_document(msg) -> dict[str, Any] | None:
    """The node's stats document when ``msg`` is one (``<namespace>/stats``), else None."""
    if msg.kind == contracts.KIND_JSON and msg.topic.endswith("/" + contracts.STATS_TOPIC) and isinstance(msg.data, dict):
        return msg.data
    return None


def record_message(rx: Received, msg) -> None:
    rx.messages += 1
    rx.wire_bytes += msg.wire_bytes
    if msg.kind == contracts.KIND_JSON:
        if (doc := stats_document(msg)) is not None:
            rx.stats_docs.append({"receive_ns": msg.receive_ns, "doc": doc})
        return
    seq = msg.seq
    if rx.closed:
        if rx.skip_through is None or seq > rx.skip_through:
            rx.late_seqs.add(seq)
            if msg.pub_seq is not None:
                rx.late_pub_seqs.setdefault(msg.topic, {})[seq] = msg.pub_seq
        return
    rx.last_seq = seq if rx.last_seq is None else max(rx.last_seq, seq)
    if rx.skip_through is not None and seq <= rx.skip_through:
        if seq == rx.skip_through and msg.pub_seq is not None:  # the frame's other topics, arriving late
            rx.anchor_pub_seqs.setdefault(msg.topic, msg.pub_seq)
        return
    if msg.pub_seq is not None:
        rx.pub_seqs.setdefault(msg.topic, {})[seq] = msg.pub_seq
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
            # The window counts from here: the frame(s) whose first mask opened it, or arrived while
            # waiting for the probe, are left out, so its FPS is frames published inside it over its
            # length (counting the opening mask read about 1/--duration FPS high).
            rx = rx.window_after()
            cpu = CpuSampler(proc.pid)
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
            window_end_ns = time.time_ns()
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
    summary = summarize_received(rx, window_s=window_s, cpu=cpu_summary, subscriber=counters, final=final_stats,
                                 window_end_ns=window_end_ns, extra={
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
    warn_accounting(summary.get("warnings"))
    return summary


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


def summarize_received(rx: Received, *, window_s: float, cpu: dict, subscriber: dict, extra: dict,
                       final: dict | None = None, window_end_ns: int | None = None) -> dict:
    """Rates, gaps, per-stage and end-to-end latency from what the subscriber received, and the
    frames counted against the node's own final stats ``final`` (``stats.node_accounting``).

    With them, the figures balance: frames captured = received (+ received after the window closed) +
    missing, missing = dropped by the
    node + lost after it, the frames the node published after the subscriber's last one included
    (lost after it). Without them (a node that printed no final line), only the frames between the
    first and last received can be counted, and ``warnings`` says so. ``warnings`` also names any
    disagreement between the node's counts and the messages received."""
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
    stats_first = rx.stats_docs[0]["doc"] if rx.stats_docs else {}
    stats_last = rx.stats_docs[-1]["doc"] if rx.stats_docs else {}
    # Missing frames between the first and last received, split by pub_seq (exact, see
    # transport_losses): lost after the node, the rest never published by it.
    between = transport_losses(seqs, rx.pub_seqs)
    pub_seqs = {t: {**rx.pub_seqs.get(t, {}), **rx.late_pub_seqs.get(t, {})}
                for t in {*rx.pub_seqs, *rx.late_pub_seqs}}
    acct = node_accounting([*seqs, *rx.late_seqs], pub_seqs, start_seq=rx.skip_through,
                           anchor_pub_seqs=rx.anchor_pub_seqs, final=final)
    warnings: list[str] = []
    sequence: dict[str, Any] = dict(gaps)
    if acct is not None:
        # The node's own counts from the window's first frame to its stop (see node_accounting).
        captured, dropped, lost = acct["captured"], acct["dropped"], acct["lost_after_node"]
        # frames of the window still on their way when it closed, read while the node stopped: they
        # reached the subscriber (not missing), but are outside the window's rates and latencies
        late = len({s for s in rx.late_seqs if s not in rx.frames and acct["first_seq"] <= s <= acct["last_seq"]})
        # exact, as between received frames: pub_seq anchors the span, the node's own counts close it
        split = "pub_seq"
        sequence.update(missing=acct["missing"], missing_between_received=gaps["missing"],
                        # before the window's first frame received, or after its last (the tail)
                        missing_outside_received=max(0, acct["missing"] - gaps["missing"]),
                        lost_after_last_received=acct["lost_after_last_received"],
                        received_after_window=late)
        if acct["problems"] or (between is not None and between > lost):
            disagree = "; ".join(acct["problems"]) or (
                f"pub_seq gaps between the frames received show {between} lost after the node, more than the "
                f"{lost} the node's final stats leave")
            warnings.append(f"the node's final stats and the messages received disagree ({disagree}); the split of "
                            "the missing frames into dropped by the node and lost after it is uncertain")
        silent_s = (None if window_end_ns is None or rx.last_receive_ns is None
                    else (window_end_ns - rx.last_receive_ns) / 1e9)
        tail = acct["lost_after_last_received"]
        if tail and (not seqs or (silent_s is not None and silent_s > SILENT_TAIL_S)):
            heard = ("no frame in the window" if not seqs else
                     f"nothing in the last {silent_s:.1f} s of the {window_s:.1f} s window (its last frame: {seqs[-1]})")
            warnings.append(f"the subscriber received {heard}, while the node went on publishing (its final stats: "
                            f"{acct['published']} frames published from the window's start to its stop, "
                            f"{acct['received']} received): {tail} frames published after the last one received "
                            "count as lost after the node, and the output FPS is the subscriber's, not the node's")
    else:
        captured = gaps["last"] - gaps["first"] + 1 if seqs else 0
        late = 0
        if between is not None:
            split = "pub_seq"
            dropped: int | None = gaps["missing"] - between
            lost = between
        else:
            # Without pub_seq, the node's own drop counter over the stats documents received,
            # which misses the drops before its first document (about a second in).
            split = "node stats (approximate)"
            dropped = _counter_delta(stats_first, stats_last, "dropped")
            lost = None if dropped is None else max(0, gaps["missing"] - dropped)
        why = ("the node printed no final stats" if final is None else
               "the frames received carry no pub_seq to set against them" if between is None else
               "they lack the frame counters")
        warnings.append(f"{why}, so frames are counted only between the first and the last one received: frames the "
                        "node captured or published after the last one received are in no figure")
    node_cpu = cpu.get("window_percent")
    sub_cpu = extra.get("subscriber_cpu_s")
    return {
        **extra,
        "model_id": rx.model_id,
        "window_s": round(window_s, 4),
        # Frames of the window that reached the subscriber in it; captured = received + missing +
        # received_after_window (frames of the window read after it closed, while the node stopped).
        "frames_received": len(seqs),
        "frames_received_after_window": late,
        "frames_captured": captured,
        "input_fps": captured / window_s if window_s > 0 else None,
        "output_fps": len(seqs) / window_s if window_s > 0 else None,
        # Of the missing frames, those the node did not publish (its drop-oldest queue) ...
        "frames_dropped": dropped,
        # ... and those it published that never reached this subscriber (ZeroMQ's per-subscriber
        # send queue, --sndhwm, overflowed).
        "lost_after_node": lost,
        "loss_split": split,
        "accounting": acct,
        "warnings": warnings,
        "sequence": sequence,
        "messages_received": rx.messages,
        "wire_mb": round(rx.wire_bytes / 2**20, 3),
        "stages_ms": stages,
        "capture_to_publish_ms": summarize_ms(to_publish),
        "capture_to_receive_ms": summarize_ms(e2e),
        "capture_to_receive_samples_ms": [round(v, 3) for v in e2e],
        "cpu": cpu,
        # CPU per frame received (ms of one core): the node's process, and the bench's subscriber
        # on the same cores. Beside the engine-only run's CPU per inference they show where a
        # node that is slower than its engine spends the difference.
        "cpu_ms_per_frame": {
            "node": None if node_cpu is None or not seqs else round(node_cpu / 100 * window_s * 1e3 / len(seqs), 3),
            "subscriber": None if sub_cpu is None or not seqs else round(sub_cpu * 1e3 / len(seqs), 3),
        },
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


