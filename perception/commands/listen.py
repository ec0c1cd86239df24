"""``perception listen``: subscribe to a node's topics and report rate, latency, missing numbers and bytes/s.

Like ``ros2 topic hz`` and ``ros2 topic echo`` together::

    perception listen                                      # every topic on tcp://127.0.0.1:5556
    perception listen --namespace perception/front --duration 10
    perception listen --topic perception/front/lane --echo --count 5
    perception listen --duration 5 --json > summary.json  # live lines on stderr, summary as JSON
    perception listen --save-dir out/masks --every 30      # every 30th mask of each topic as PNG

Every ``--interval`` seconds it prints one line per topic (rate over that interval,
capture-to-receive latency p50/p90/p99, missing capture sequence numbers so far split into
``lost`` in the transport (gaps in ``pub_seq``) and dropped by the ``node`` (gaps in ``seq`` alone),
bytes/s), and at the
end a summary over the whole run. It exits 0 when ``--duration`` or ``--count`` is reached or on
Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import cv2

from perception import contracts
from perception.errors import ConfigError
from perception.signals import install_signal_handlers
from perception.subscribe import MaskSubscriber, Message
from perception.topic_stats import TopicStats
from perception.wire import topic_dir_name

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", default=contracts.DEFAULT_ENDPOINT, help="publisher endpoint (default %(default)s)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--namespace", help="all topics under this namespace, e.g. perception/front")
    which.add_argument("--topic", action="append", metavar="T", help="an exact topic (repeatable)")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: until Ctrl-C)")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N messages in total")
    parser.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between report lines (default 1)")
    parser.add_argument("--echo", action="store_true", help="print every message's header (and JSON documents)")
    parser.add_argument("--save-dir", type=Path, metavar="DIR",
                        help="save received masks as PNG: DIR/<topic with / as _>/<seq>.png")
    parser.add_argument("--every", type=int, default=1, metavar="N", help="with --save-dir: every Nth mask per topic")
    parser.add_argument("--keep-latest", action="store_true", help="drain the socket, keep the newest message per topic")
    parser.add_argument("--json", action="store_true", help="final summary as JSON on stdout (live lines go to stderr)")
    parser.add_argument("--max-mask-pixels", type=int, default=contracts.MAX_MASK_PIXELS, metavar="N",
                        help="skip masks declaring more than N pixels, before decoding (default %(default)s)")
    parser.add_argument("--curve-server-key", metavar="FILE", help="the node's public .key file (CURVE)")
    parser.add_argument("--curve-key", metavar="FILE", help="this client's .key_secret file (CURVE)")


def _check_args(args: argparse.Namespace) -> None:
    if args.duration is not None and args.duration <= 0:
        raise ConfigError(f"--duration {args.duration} must be > 0 seconds")
    if args.count is not None and args.count < 1:
        raise ConfigError(f"--count {args.count} must be >= 1")
    if args.every < 1:
        raise ConfigError(f"--every {args.every} must be >= 1")
    if args.max_mask_pixels < 1:
        raise ConfigError(f"--max-mask-pixels {args.max_mask_pixels} must be >= 1")
    if args.interval <= 0:
        raise ConfigError(f"--interval {args.interval} must be > 0 seconds")
    if args.save_dir is not None:
        # Now, not at the first mask: a bad --save-dir must not surface mid-run.
        try:
            args.save_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create --save-dir {args.save_dir} ({exc.strerror}); choose a writable folder") from None


def _format_line(topic: str, figures: dict[str, Any]) -> str:
    lat = figures["latency_ms"]
    lat_text = f"lat p50 {lat['p50']:7.1f} p90 {lat['p90']:7.1f} p99 {lat['p99']:7.1f} ms" if lat else "lat        -"
    return (
        f"{topic:<32} {figures['rate_hz']:6.1f} Hz  {lat_text}  missing {figures['missing']:<5d} "
        f"(lost {figures['lost']}, node {figures['node_dropped']}) "
        f"{figures['bytes_per_s'] / 1e3:9.1f} kB/s  n={figures['count']}"
    )


def _echo(msg: Message, out) -> None:
    if msg.kind == contracts.KIND_JSON:
        print(f"{msg.topic} seq={msg.seq} {json.dumps(msg.data)}", file=out)
        return
    h = msg.header
    print(
        f"{msg.topic} seq={h['seq']} pub_seq={h.get('pub_seq', '-')} stamp={h['header']['stamp']['sec']}.{h['header']['stamp']['nanosec']:09d} "
        f"frame_id={h['header']['frame_id']} {h['height']}x{h['width']} {h['encoding']} "
        f"compression={h['compression']} values={h['values']} model={h['model_id']} latency_ms={h['latency_ms']}",
        file=out,
    )


def _save(msg: Message, save_dir: Path) -> str | None:
    """Write one mask under ``save_dir``; the reason when it could not be written."""
    # The topic comes from the network: topic_dir_name keeps it one safe folder name inside save_dir.
    folder = save_dir / topic_dir_name(msg.topic)
    path = folder / f"{msg.seq:08d}.png"
    try:
        folder.mkdir(exist_ok=True)
        if cv2.imwrite(str(path), msg.data):
            return None
        return f"cannot write {path}; check that --save-dir is writable"
    except (OSError, cv2.error) as exc:
        return f"cannot write {path}: {getattr(exc, 'strerror', None) or exc}"


def main(args: argparse.Namespace) -> int:
    _check_args(args)
    live = sys.stderr if args.json else sys.stdout
    stop = {"requested": False}

    def request_stop(signum, frame) -> None:
        stop["requested"] = True

    handlers = install_signal_handlers(request_stop)
    sub = MaskSubscriber(
        args.endpoint,
        topics=args.topic,
        namespace=args.namespace,
        keep_latest=args.keep_latest,
        curve_server_key=args.curve_server_key,
        curve_key_file=args.curve_key,
        max_mask_pixels=args.max_mask_pixels,
    )
    what = ", ".join(args.topic) if args.topic else (f"{args.namespace}/*" if args.namespace else "all topics")
    print(f"listening on {args.endpoint} to {what}", file=live, flush=True)
    stats: dict[str, TopicStats] = {}
    saved: dict[str, int] = {}
    start_s = time.monotonic()
    next_report_s = start_s + args.interval
    end_s = start_s + args.duration if args.duration is not None else None
    total = save_errors = 0
    try:
        while not stop["requested"]:
            now_s = time.monotonic()
            if end_s is not None and now_s >= end_s:
                break
            if args.count is not None and total >= args.count:
                break
            wait_s = min(0.1, next_report_s - now_s, (end_s - now_s) if end_s is not None else 0.1)
            msg = sub.recv(timeout_s=max(0.0, wait_s))
            now_s = time.monotonic()
            if msg is not None:
                total += 1
                stats.setdefault(msg.topic, TopicStats(start_s)).add(msg, now_s)
                if args.echo:
                    _echo(msg, live)
                if args.save_dir is not None and msg.kind == contracts.KIND_MASK:
                    n = saved.get(msg.topic, 0)
                    if n % args.every == 0 and (problem := _save(msg, args.save_dir)) is not None:
                        save_errors += 1
                        if save_errors in (1, 10, 100) or save_errors % 1000 == 0:  # rate-limited
                            log.warning("%s (%d mask(s) not saved so far)", problem, save_errors)
                    saved[msg.topic] = n + 1
            if now_s >= next_report_s:
                next_report_s = now_s + args.interval
                _report(stats, sub, now_s, live)
    finally:
        sub.close()
        handlers.restore()
    duration_s = time.monotonic() - start_s
    summary = {
        "endpoint": args.endpoint,
        "duration_s": round(duration_s, 3),
        "messages": total,
        "topics": {topic: s.summary(duration_s) for topic, s in sorted(stats.items())},
        "skipped": {"malformed": sub.counters.malformed, "version_mismatch": sub.counters.version_mismatch},
        "superseded": sub.counters.superseded,
        "save_errors": save_errors,
        "last_error": sub.last_error,
    }
    _print_summary(summary, live)
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0


def _report(stats: dict[str, TopicStats], sub: MaskSubscriber, now_s: float, out) -> None:
    if not stats:
        print(f"no messages yet from {sub.endpoint}; is the node running? check --endpoint / --namespace", file=out, flush=True)
    for topic, s in sorted(stats.items()):
        print(_format_line(topic, s.window(now_s)), file=out)
    skipped = sub.counters.malformed + sub.counters.version_mismatch
    if skipped:
        print(f"skipped {skipped} bad message(s): {sub.last_error}", file=out)
    out.flush()


def _print_summary(summary: dict[str, Any], out) -> None:
    print(f"--- summary: {summary['messages']} messages in {summary['duration_s']:.1f} s", file=out)
    for topic, figures in summary["topics"].items():
        print(_format_line(topic, figures) + f"  restarts {figures['seq_restarts']}", file=out)
    if not summary["topics"]:
        print(f"no messages received from {summary['endpoint']}; is the node running? check --endpoint / --namespace", file=out)
    skipped = summary["skipped"]
    if skipped["malformed"] or skipped["version_mismatch"]:
        print(f"skipped: {skipped['malformed']} malformed, {skipped['version_mismatch']} from another wire version "
              f"({summary['last_error']})", file=out)
    out.flush()
