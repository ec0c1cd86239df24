"""``perception listen``: subscribe to a node's topics and report rate, latency, missing numbers and bytes/s.

Like ``ros2 topic hz`` and ``ros2 topic echo`` together::

    perception listen                                      # every topic on tcp://127.0.0.1:5556
    perception listen --namespace perception/front --duration 10
    perception listen --topic perception/front/lane --echo --count 5
    perception listen --duration 5 --json > summary.json  # live lines on stderr, summary as JSON
    perception listen --save-dir out/masks --every 30      # every 30th mask of each topic as PNG
    perception listen --save-dir out/masks --overwrite     # replacing the masks an earlier listen saved there

Every ``--interval`` seconds it prints one line per topic (rate over that interval,
capture-to-receive latency p50/p90/p99, missing capture sequence numbers so far split into
``lost`` in the transport (gaps in ``pub_seq``) and dropped by the ``node`` (gaps in ``seq`` alone),
bytes/s), and at the
end a summary over the whole run. It exits 0 when ``--duration`` or ``--count`` is reached or on
Ctrl-C / SIGTERM, after reading something; when nothing at all arrived it ends with one
``perception: error:`` line saying what to check and exits 4, as ``record`` and ``view`` do (a
stream that is not there; ``--json`` still prints its summary on stdout first). When messages came
but every one was skipped (from another wire version, a newer publisher's kind or compression,
malformed) it ends with one line naming why and the fix, after the summary, and exits 2, as
``record`` does (``every_message_skipped``). A node that admitted it and then refuses its handshakes
(its key revoked from ``--curve-allow``: libzmq does not try again, so nothing more would come) ends
it after ``CUT_OFF_S``, with the summary and one line (``cut_off_line``), exit 4.

It keeps track of at most ``--max-topics`` topics (default 256; ``MaskSubscriber``): messages on
further topics are skipped and counted (``over_max_topics`` in the summary), so a publisher on
ever new topics cannot grow its memory, its report lines or its ``--save-dir`` folders without end.
Received text it prints (``--echo``'s header strings, a skipped message's reason) has its
non-printable characters escaped (``wire.printable``).

``--save-dir DIR`` writes ``DIR/<topic>/<seq>.png`` (the topic's folder named by
``wire.topic_dir_name``); when a topic's sequence numbers start again (a node restart, a ``replay
--loop``, a launch respawn: ``seq_restarts``), the masks that follow are saved as
``run0002_<seq>.png``, then ``run0003_``..., beside the first run's, so no mask is ever written over
and the files sorted by name come in the order they arrived (``_save``). A ``DIR`` holding the masks
of an earlier listen is refused
before anything is received, since a second run would mix its masks with them; ``--overwrite``
removes those masks (and the topic folders they leave empty) when the first new mask is saved.
Other files in DIR are never touched.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from perception import contracts, cvpath
from perception.config import same_setting, setting
from perception.console import GoneSafe, emit
from perception.endpoints import unresolved_host_problem
from perception.errors import ConfigError, SourceError, SourceUnavailableError
from perception.flags import add_flags, config_from_flags
from perception.metrics import display_width
from perception.options import CurveClientOptions, ReaderQueueOptions, ReaderTopicOptions, leading_slash_error
from perception.overwrite import refuse_earlier_output, remove_earlier_output
from perception.signals import install_signal_handlers
from perception.subscribe import MaskSubscriber, Message
from perception.subscribe_unasked import unasked_line
from perception.topic_stats import TopicStats, is_latched
from perception.wire import printable, topic_dir_name

log = logging.getLogger(__name__)


@dataclass
class ListenConfig:
    """The flags of ``perception listen`` (and the parameters of a ``listen`` launch node)."""

    endpoint: str = setting(contracts.DEFAULT_ENDPOINT, help="publisher endpoint")
    namespace: str | None = setting(None, exclusive="what", help="all topics under this namespace, e.g. perception/front")
    topic: list[str] = setting(default_factory=list, exclusive="what", metavar="T", help="exact topics (repeatable)")
    duration_s: float | None = setting(None, lo=0, flag="--duration", metavar="S", old_names=("duration",),
                                       help="stop after S seconds (default and 0: until Ctrl-C)")
    count: int | None = setting(None, lo=1, metavar="N", help="stop after N messages in total")
    interval_s: float = setting(1.0, lo=0.001, hi=3600, flag="--interval", metavar="S",
                                old_names=("interval",), help="seconds between report lines")
    echo: bool = setting(False, help="print every message's header (and JSON documents)")
    save_dir: Path | None = setting(None, metavar="DIR",
                                    help="save received masks as PNG: DIR/<topic, / as _ and _ as __; a topic with upper-case or "
                                         "other characters gets a hash suffix>/<seq>.png, and run0002_<seq>.png, "
                                         "run0003_... once the node's numbering starts again (a node restart), so "
                                         "no mask is overwritten")
    every: int = setting(1, lo=1, metavar="N", help="with --save-dir: every Nth mask per topic")
    overwrite: bool = setting(False, help="with --save-dir: replace the masks an earlier listen saved there (its "
                                          "<topic>/<seq>.png files, removed when the first new mask is saved) instead "
                                          "of refusing to start; other files stay")
    keep_latest: bool = setting(False, help="drain the socket, keep the newest message per topic")
    json: bool = setting(False, help="final summary as JSON on stdout (live lines go to stderr)")
    max_mask_pixels: int = setting(contracts.MAX_MASK_PIXELS, lo=1, hi=contracts.MAX_MASK_SIDE ** 2, metavar="N",
                                   help="skip masks declaring more than N pixels, before decoding")
    max_queue_mb: int = same_setting(ReaderQueueOptions, "max_queue_mb")
    max_topics: int = same_setting(ReaderTopicOptions, "max_topics")
    curve_server_key: str | None = same_setting(CurveClientOptions, "curve_server_key")
    curve_key: str | None = same_setting(CurveClientOptions, "curve_key")

    def __post_init__(self) -> None:
        for flag, name in [("--namespace", self.namespace), *(("--topic", t) for t in self.topic)]:
            if name and (problem := leading_slash_error(flag, name, publishing=False)):
                raise ValueError(problem)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, ListenConfig)


def _make_save_dir(save_dir: Path) -> None:
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create --save-dir {save_dir} ({exc.strerror}); choose a writable folder") from None


#: The name ``_save`` gives a mask in its topic's folder: its capture sequence number, 8 digits or
#: more, after ``run<N>_`` (4 digits or more, from 2) for the masks after the topic's numbering
#: started again (``saved_mask_name``).
SAVED_MASK_NAME = re.compile(r"(run[0-9]{4,}_)?[0-9]{8,}\.png")


def saved_mask_name(seq: int, run: int) -> str:
    """The file name of mask ``seq`` of the ``run``-th run of its topic's numbering (1: the first
    one listen heard; each restart of the numbering begins the next): ``00000042.png`` in the
    first run, ``run0002_00000042.png`` in the second. Sorted by name, the first run's files come
    first, then each later run's (up to 9999 runs), each in its own order."""
    return f"{seq:08d}.png" if run <= 1 else f"run{run:04d}_{seq:08d}.png"


def earlier_masks(save_dir: Path) -> list[Path]:
    """The masks an earlier ``listen --save-dir`` left in ``save_dir``: the files named as ``_save``
    names them (``SAVED_MASK_NAME``) in its subfolders (a topic's folder name never starts with a
    dot). Nothing else in ``save_dir`` is listen's: files beside the folders, other names inside
    them, hidden folders."""
    found: list[Path] = []
    try:
        folders = sorted(save_dir.iterdir()) if save_dir.is_dir() else []
    except OSError:
        return found  # a folder it cannot read: _make_save_dir or the first save says why
    for folder in folders:
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        try:
            found.extend(p for p in sorted(folder.iterdir()) if SAVED_MASK_NAME.fullmatch(p.name) and not p.is_dir())
        except OSError:
            continue
    return found


def _claim_save_dir(config: ListenConfig) -> list[Path]:
    """``--save-dir`` checked before anything is received: a folder holding an earlier listen's
    masks is refused unless ``--overwrite`` (a second run would mix its masks with them, file by
    file), whose masks are then returned, to be removed when the first new one is saved
    (``_remove_earlier_masks``), so a run that saves nothing leaves them as they were."""
    if config.save_dir is None:
        if config.overwrite:
            raise ConfigError("--overwrite replaces the masks of an earlier listen in --save-dir; add --save-dir DIR "
                              "or drop --overwrite")
        return []
    earlier = earlier_masks(config.save_dir)
    refuse_earlier_output(config.save_dir, earlier, flag="--save-dir", what="masks of an earlier listen",
                          overwrite=config.overwrite)
    for folder in sorted({path.parent for path in earlier}):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"--overwrite cannot remove the masks of an earlier listen in {folder} (permission "
                              "denied); remove them yourself or choose another --save-dir")
    _make_save_dir(config.save_dir)  # now, not at the first mask: a bad --save-dir must not surface mid-run
    return earlier


def _remove_earlier_masks(earlier: list[Path], save_dir: Path) -> None:
    """``--overwrite``: remove the earlier listen's masks (``_claim_save_dir``), all of them, and
    the topic folders they leave empty, before the first new mask is written."""
    count = len(earlier)
    remove_earlier_output(earlier, folder=save_dir, flag="--save-dir", what="a mask of an earlier listen",
                          folders=True)
    log.info("removed the %d mask(s) of an earlier listen in %s", count, save_dir)


#: The narrowest topic column of listen's report lines, in terminal columns.
TOPIC_COLUMNS = 32


def _topic_columns(topics) -> int:
    """The topic column's width for these topics: the widest of them as a terminal shows it (a CJK
    character or an emoji of a per-class topic takes two columns), at least ``TOPIC_COLUMNS``."""
    return max([TOPIC_COLUMNS, *(display_width(topic) for topic in topics)])


def _format_line(topic: str, figures: dict[str, Any], columns: int = TOPIC_COLUMNS) -> str:
    """One report line; ``topic`` padded to ``columns`` terminal columns (``_topic_columns``). The
    latched info topic shows no rate (``-``): its copies are resends to new subscriptions."""
    lat = figures["latency_ms"]
    rate = "-" if figures["rate_hz"] is None or is_latched(topic) else f"{figures['rate_hz']:.1f}"
    lat_text = f"lat p50 {lat['p50']:7.1f} p90 {lat['p90']:7.1f} p99 {lat['p99']:7.1f} ms" if lat else "lat        -"
    pad = " " * max(0, columns - display_width(topic))
    return (
        f"{topic}{pad} {rate:>6} Hz  {lat_text}  missing {figures['missing']:<5d} "
        f"(lost {figures['lost']}, node {figures['node_dropped']}) "
        f"{figures['bytes_per_s'] / 1e3:9.1f} kB/s  n={figures['count']}"
    )


def _echo(msg: Message, out) -> None:
    if msg.kind == contracts.KIND_JSON:
        print(f"{msg.topic} seq={msg.seq} {json.dumps(msg.data)}", file=out)  # JSON-escaped: one safe line
        return
    h = msg.header
    # frame_id, model_id and the latency names are the publisher's text: escaped, they cannot
    # retitle or clear the terminal or forge a line.
    print(printable(
        f"{msg.topic} seq={h['seq']} pub_seq={h.get('pub_seq', '-')} stamp={h['header']['stamp']['sec']}.{h['header']['stamp']['nanosec']:09d} "
        f"frame_id={h['header']['frame_id']} {h['height']}x{h['width']} {h['encoding']} "
        f"compression={h['compression']} values={h['values']} model={h['model_id']} latency_ms={h['latency_ms']}"),
        file=out,
    )


def _save(msg: Message, save_dir: Path, run: int = 1) -> str | None:
    """Write one mask under ``save_dir`` (the ``run``-th run of its topic's numbering:
    ``saved_mask_name``); the reason when it could not be written."""
    # The topic comes from the network: topic_dir_name keeps it one safe folder name inside save_dir.
    folder = save_dir / topic_dir_name(msg.topic)
    path = folder / saved_mask_name(msg.seq, run)
    try:
        folder.mkdir(exist_ok=True)
        if cvpath.imwrite(path, msg.data):  # any --save-dir name: OpenCV is not handed it (cvpath)
            return None
        return f"cannot write {path}: OpenCV cannot encode the mask as PNG"
    except (OSError, cv2.error) as exc:
        return f"cannot write {path}: {getattr(exc, 'strerror', None) or exc}"


def main(args: argparse.Namespace) -> int:
    config = config_from_flags(ListenConfig, args, source="perception listen")
    earlier = _claim_save_dir(config)
    # Received text is checked (wire.load_json refuses lone surrogates), but an echo line must never
    # be what stops a listener: whatever cannot be encoded is printed escaped.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    # A closed terminal (SIGHUP stops the listener) must not cost the --json summary: see GoneSafe.
    live = GoneSafe(sys.stderr if config.json else sys.stdout)
    stop = {"requested": False}

    def request_stop(signum, frame) -> None:
        stop["requested"] = True

    # Put back only after the summary: a stop signal while it prints (a second Ctrl-C, timeout's
    # SIGINT after --duration) must not cost the --json summary.
    handlers = install_signal_handlers(request_stop)
    try:
        summary, nothing, version_error, failure, unasked = _listen(config, earlier, live, stop)
        _print_summary(summary, live)
        if config.json:
            emit(json.dumps(summary, indent=2))
    finally:
        handlers.restore()
    if nothing:
        # Nothing at all arrived: the stream is not there (exit 4, as record and view), said once;
        # or only messages on longer topics that start with a --topic (a typo, a namespace): said so.
        raise SourceUnavailableError(unasked or nothing_received(config.endpoint, summary["duration_s"],
                                                                 _nothing_hint(config, failure)))
    if summary["messages"] == 0:
        # Messages came, none of them readable: a bad input (exit 2), as record says it.
        raise SourceError(every_message_skipped(summary, version_error))
    if summary["cut_off"] is not None:
        # Admitted, then refused for good (a revoked key): exit 4, as for a stream no longer there.
        raise SourceUnavailableError(cut_off_line(config.endpoint, summary["messages"], summary["cut_off"]))
    if failure is not None:
        # Still refused at the end (a node restarted with another key pair, behind a port forward
        # that closes at once): libzmq retries it, so not an error; said with the summary too.
        log.warning("at the end, %s was refusing this client's handshakes: %s", config.endpoint, failure)
    return 0


def _listen(config: ListenConfig, earlier: list[Path], live,
            stop: dict[str, bool]) -> tuple[dict[str, Any], bool, str | None, str | None, str | None]:
    """Receive until ``--duration``, ``--count`` or a stop; the summary, whether nothing at all came,
    the reason of the latest message skipped for its version (``last_version_error``), the node's
    handshake failure, and the line for messages that came only on longer topics than a ``--topic``
    (``subscribe_unasked.unasked_line``)."""
    sub = MaskSubscriber(
        config.endpoint,
        topics=config.topic or None,
        namespace=config.namespace,
        keep_latest=config.keep_latest,
        curve_server_key=config.curve_server_key,
        curve_key_file=config.curve_key,
        max_mask_pixels=config.max_mask_pixels,
        max_queue_mb=config.max_queue_mb,
        max_topics=config.max_topics,
    )
    # The node takes perception/front/ as perception/front: shown as the topics it matches, without '//'.
    namespace = (config.namespace or "").rstrip("/")
    what = ", ".join(config.topic) if config.topic else (f"{namespace}/*" if namespace else "all topics")
    print(f"listening on {config.endpoint} to {what}", file=live, flush=True)
    # One entry a topic, of at most --max-topics topics (the subscriber skips the messages of others).
    stats: dict[str, TopicStats] = {}
    saved: dict[str, int] = {}
    start_s = time.monotonic()
    next_report_s = start_s + config.interval_s
    end_s = start_s + config.duration_s if config.duration_s else None  # 0: no limit, as for 'perception run'
    total = save_errors = 0
    restart_said = clock_said = False
    try:
        while not stop["requested"]:
            now_s = time.monotonic()
            if end_s is not None and now_s >= end_s:
                break
            if config.count is not None and total >= config.count:
                break
            wait_s = min(0.1, next_report_s - now_s, (end_s - now_s) if end_s is not None else 0.1)
            msg = sub.recv(timeout_s=max(0.0, wait_s))
            now_s = time.monotonic()
            if msg is None and sub.cut_off() is not None:
                break  # the node refused this client after admitting it: nothing more will come
            if msg is not None:
                total += 1
                topic_stats = stats.setdefault(msg.topic, TopicStats(start_s))
                topic_stats.add(msg, now_s)
                if not clock_said and (low := topic_stats.latency_min_ms) is not None and low < 0:
                    clock_said = True
                    log.warning(clock_behind_hint(printable(msg.topic), low))
                if config.echo:
                    _echo(msg, live)
                if config.save_dir is not None and msg.kind == contracts.KIND_MASK:
                    n = saved.get(msg.topic, 0)
                    if earlier and n % config.every == 0:
                        _remove_earlier_masks(earlier, config.save_dir)  # --overwrite, at the first mask saved
                    run = topic_stats.restarts + 1  # each restart of the topic's numbering: the next run
                    if run > 1 and not restart_said:
                        restart_said = True
                        log.warning("%s numbers its masks from seq %d again (a node restart, a replay --loop): those "
                                    "of each new run are saved as %s, ... beside the earlier ones, none overwritten "
                                    "(the summary's restarts count them)", printable(msg.topic), msg.seq,
                                    saved_mask_name(msg.seq, run))
                    if n % config.every == 0 and (problem := _save(msg, config.save_dir, run)) is not None:
                        save_errors += 1
                        if save_errors in (1, 10, 100) or save_errors % 1000 == 0:  # rate-limited
                            log.warning("%s (%d mask(s) not saved so far)", problem, save_errors)
                    saved[msg.topic] = n + 1
            # Not at the very end: the summary follows (with, when nothing came, the hint once).
            if now_s >= next_report_s and (end_s is None or now_s < end_s):
                next_report_s = now_s + config.interval_s
                unasked = unasked_line(config.endpoint, config.topic, now_s - start_s, sub.unasked) if config.topic else None
                _report(stats, sub, now_s, live, unasked or _nothing_hint(config, sub.handshake_failure), bool(unasked))
    finally:
        sub.close()
    duration_s = time.monotonic() - start_s
    counters = sub.counters
    summary = {
        "endpoint": config.endpoint,
        "duration_s": round(duration_s, 3),
        "messages": total,
        "topics": {topic: s.summary(duration_s) for topic, s in sorted(stats.items())},
        "skipped": {"malformed": counters.malformed, "version_mismatch": counters.version_mismatch,
                    "over_max_topics": counters.over_max_topics},
        "max_topics": config.max_topics,
        "superseded": counters.superseded,
        "save_errors": save_errors,
        "last_error": sub.last_error,
        "cut_off": sub.cut_off(),
    }
    nothing = total == 0 and not (counters.malformed or counters.version_mismatch or counters.over_max_topics)
    unasked = unasked_line(config.endpoint, config.topic, duration_s, sub.unasked) if config.topic else None
    return summary, nothing, sub.last_version_error, sub.handshake_failure, unasked


def every_message_skipped(summary: dict[str, Any], version_error: str | None) -> str:
    """The one line of a listen that received messages but read none: how many, why, and the fix
    (for another wire version or a newer publisher's kind or compression, the reader's reason
    names both sides and the fix)."""
    skipped = summary["skipped"]
    received = skipped["malformed"] + skipped["version_mismatch"] + skipped["over_max_topics"]
    head = (f"nothing read from {summary['endpoint']} in {summary['duration_s']:.1f} s: all {received} message(s) "
            "received were skipped")
    if skipped["version_mismatch"]:
        malformed = f" and {skipped['malformed']} malformed" if skipped["malformed"] else ""
        return (f"{head}, {skipped['version_mismatch']} from another wire version or a newer publisher{malformed} "
                f"({version_error})")
    if skipped["malformed"]:
        return (f"{head} as malformed (the last: {summary['last_error']}); check that --endpoint is a perception "
                "node's, of the same perception version")
    return (f"{head}: on topics past the first {summary['max_topics']}; raise --max-topics or subscribe to fewer "
            "(--topic)")


def clock_behind_hint(topic: str, latency_ms: float) -> str:
    """The one line said when a latency below 0 comes (``latency_ms``, on ``topic``): a message cannot
    arrive before it was stamped, so this machine's wall clock is behind the publisher's by at
    least that much (or a clock was stepped while the message was on its way). The figures stay as
    measured."""
    behind = f"{-latency_ms / 1e3:.1f} s" if latency_ms <= -1000 else f"{-latency_ms:.1f} ms"
    return (f"latency below 0 on {topic} ({latency_ms:.1f} ms): this machine's clock is behind the publisher's by at "
            f"least {behind} (or a clock was stepped); latencies are shown as measured, sync both clocks "
            "(chrony/NTP) for latency across machines (the header's latency_ms, in --echo, needs no sync)")


def cut_off_line(endpoint: str, messages: int, failure: str) -> str:
    """The one line of a reader (listen, record, view) whose node admitted it, then refused its
    handshakes for good (``MaskSubscriber.cut_off``: a key revoked from --curve-allow)."""
    return (f"cut off by {endpoint} after {messages} message(s): {failure}; ZeroMQ does not retry a refused "
            "handshake, so restart this client once the node admits it again")


def nothing_received(endpoint: str, seconds: float, hint: str) -> str:
    """The one line of a subscriber (listen, record) that received nothing at all."""
    return f"no messages received from {endpoint} in {seconds:.1f} s; {hint}"


def _nothing_hint(config: ListenConfig, handshake_failure: str | None = None) -> str:
    return no_messages_hint("--topic" if config.topic else "--namespace", curve=bool(config.curve_server_key),
                            endpoint=config.endpoint, handshake_failure=handshake_failure)


def no_messages_hint(what_flag: str, *, curve: bool, endpoint: str | None = None,
                     handshake_failure: str | None = None) -> str:
    """What to check when a subscriber (listen, record, view) receives nothing: the endpoint, the
    subscription (``what_flag``) and, with CURVE, the keys (a handshake the node refuses looks the
    same from here as a node that is not there, unless the subscriber's monitor saw why: then
    ``handshake_failure`` is said instead). Given the ``endpoint``, a host name that does not
    resolve is said instead (``endpoints.unresolved_host_problem``: looked up once, ZeroMQ retries
    it without a word)."""
    if handshake_failure is not None:  # the node answered and refused this client (MaskSubscriber.handshake_failure)
        return handshake_failure
    problem = unresolved_host_problem(endpoint) if endpoint is not None else None
    if problem is not None:
        return problem
    hint = f"is the node running? check --endpoint / {what_flag}"
    if curve:
        hint += (" and the CURVE keys (--curve-server-key must be that node's public .key, and its "
                 "--curve-allow folder must hold this client's public key)")
    else:  # a CURVE node refuses a plain client without a word to it
        hint += " (a node with --curve-secret-key needs --curve-server-key and --curve-key)"
    return hint


#: A topic that received nothing for this long is left out of the lines each --interval (one line counts
#: and names them); the summary at the end still gives every topic.
SILENT_HIDE_S = 60.0


def _report(stats: dict[str, TopicStats], sub: MaskSubscriber, now_s: float, out, hint: str,
            unasked: bool = False) -> None:
    skipped = sub.counters.malformed + sub.counters.version_mismatch
    if not stats and skipped:
        # The node is there: what it sends is what this reader cannot read (the next line says why).
        print(f"no messages read yet from {sub.endpoint}: the {skipped} received so far were all skipped",
              file=out, flush=True)
    elif not stats:  # (the hint is the whole line when messages came only on topics not asked for)
        print(hint if unasked else f"no messages yet from {sub.endpoint}; {hint}", file=out, flush=True)
    # A topic silent for SILENT_HIDE_S leaves the table for one line of them all: a burst of topics that
    # then went quiet (a publisher inventing names) would otherwise print its rows every --interval
    # for the rest of the run. A topic that goes quiet shows 0.0 Hz until then; latched ones stay.
    shown = {t: s for t, s in stats.items()
             if s.latched or s.last_s is None or now_s - s.last_s < SILENT_HIDE_S}
    columns = _topic_columns(shown)
    for topic, s in sorted(shown.items()):
        print(_format_line(topic, s.window(now_s), columns), file=out)
    if len(shown) < len(stats):
        silent = sorted(set(stats) - set(shown))
        names = ", ".join(printable(t) for t in silent[:3]) + (f" and {len(silent) - 3} more" if len(silent) > 3 else "")
        print(f"{len(silent)} topic(s) silent for over {SILENT_HIDE_S:g} s, left out of the lines above: {names}", file=out)
    if skipped:
        print(f"skipped {skipped} message(s): {sub.last_error}", file=out)
    if sub.counters.over_max_topics:
        print(f"skipped {sub.counters.over_max_topics} message(s) on topics past the first {sub.max_topics} "
              "(--max-topics)", file=out)
    out.flush()


def _print_summary(summary: dict[str, Any], out) -> None:
    # Nothing received: the error line that follows says so, with the hint (not here as well).
    print(f"--- summary: {summary['messages']} messages in {summary['duration_s']:.1f} s", file=out)
    columns = _topic_columns(summary["topics"])
    for topic, figures in summary["topics"].items():
        print(_format_line(topic, figures, columns) + f"  restarts {figures['seq_restarts']}", file=out)
    skipped = summary["skipped"]
    if skipped["malformed"] or skipped["version_mismatch"]:
        print(f"skipped: {skipped['malformed']} malformed, {skipped['version_mismatch']} from another wire version "
              f"or a newer publisher ({summary['last_error']})", file=out)
    if skipped["over_max_topics"]:
        print(f"skipped: {skipped['over_max_topics']} on topics past the first {summary['max_topics']} (--max-topics)",
              file=out)
    out.flush()
