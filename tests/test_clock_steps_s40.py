"""Steps of the wall clock (NTP, chrony) and clocks that differ between machines (session s40, F28b).

- ``view --out x.mp4`` of a node measures the node's rate from its capture times: one step forward
  among them must not set the video's rate (it once made 0.00 fps and an OpenCV error).
- The JavaScript client times ``--duration`` and ``--idle`` on the monotonic clock: a step of
  ``Date.now()`` must neither end it early nor keep it running.
- ``listen`` says once that this machine's clock is behind the publisher's when a latency comes out
  below 0, and leaves the figures as measured.
- The bench measures the silence at the end of its window on the monotonic clock.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from loopback_ports import free_endpoint

from perception.cli import main as cli_main
from perception.publish import MaskPublisher

NS = "perception/s40"
REPO = Path(__file__).resolve().parents[1]
JS_CLIENT = REPO / "clients" / "js" / "perception_sub.js"


# --------------------------------------------------------------------------------------------
# view: the node's rate from capture times that a clock step moved
# --------------------------------------------------------------------------------------------


def test_node_rate_leaves_out_a_clock_step_among_the_capture_times():
    from perception.view_node import node_rate

    step = 3600 * 10**9
    fifth = 200_000_000  # a 5 fps node
    # A step forward after the third frame: the rate is the node's, not 0.0025 fps.
    forward = [i * fifth + (step if i >= 3 else 0) for i in range(10)]
    assert node_rate(forward) == pytest.approx(5.0)
    # A small step (5 s) after the second of three frames: the typical interval still wins.
    assert node_rate([0, fifth, 2 * fifth + 5 * 10**9]) == pytest.approx(5.0)
    # A step back among them: the intervals going forward give the rate.
    backward = [i * fifth - (step if i >= 5 else 0) + step for i in range(10)]
    assert node_rate(backward) == pytest.approx(5.0)
    # A node that drops every other frame now and then: every interval counts (the mean rate).
    assert node_rate([0, 100_000_000, 300_000_000, 400_000_000]) == pytest.approx(7.5)
    assert node_rate([0]) is None and node_rate([5, 5]) is None and node_rate([9, 3]) is None
    # Frames that come in bursts (a stream delivering three at a time every 0.3 s): their mean rate,
    # 10 fps, not the 1000 fps of the intervals within a burst.
    ms = 1_000_000
    assert node_rate([0, 1 * ms, 2 * ms, 300 * ms, 301 * ms, 302 * ms, 600 * ms]) == pytest.approx(10.0)


def _video_fps(path: Path) -> float:
    cap = cv2.VideoCapture(str(path))
    try:
        return cap.get(cv2.CAP_PROP_FPS)
    finally:
        cap.release()


def _view_a_publisher(tmp_path: Path, capture_ns_of, frames: int, caplog) -> tuple[int, Path]:
    """``view --out node.mp4`` of masks whose frame ``seq`` was captured at ``capture_ns_of(seq)``."""
    from perception.view import ViewConfig, run_view

    endpoint = free_endpoint()
    out = tmp_path / "node.mp4"
    config = ViewConfig(endpoint=endpoint, namespace=NS, out=out, max_frames=frames, duration_s=30)
    result: dict[str, object] = {}

    def view() -> None:
        try:
            result["n"] = run_view(config)
        except BaseException as exc:  # noqa: BLE001 - the test names it
            result["error"] = exc

    viewer = threading.Thread(target=view)
    publisher = MaskPublisher(endpoint=endpoint, namespace=NS, sndhwm=1000)
    with caplog.at_level(logging.INFO, logger="perception.view"):
        viewer.start()
        try:
            seq = 0
            deadline = time.monotonic() + 30
            while viewer.is_alive() and time.monotonic() < deadline:
                lane = np.full((12, 16), 255 * (seq % 2), np.uint8)
                publisher.publish_masks(seq=seq, capture_ns=capture_ns_of(seq), frame_id="f", masks={"lane": lane},
                                        latency_ms={}, model_id="m")
                seq += 1
                viewer.join(timeout=0.02)
        finally:
            viewer.join(timeout=30)
            publisher.close()
    assert "error" not in result, result.get("error")
    return result["n"], out


def test_a_video_of_a_node_whose_clock_steps_forward_plays_at_the_node_s_rate(tmp_path, caplog):
    """Masks captured 1/5 s apart, the node's clock stepped forward by an hour after the third: a
    5 fps video (it was 0.00 fps, and no video but an OpenCV error)."""
    start_ns = time.time_ns()
    n, out = _view_a_publisher(tmp_path, lambda seq: start_ns + seq * 200_000_000 + (3600 * 10**9 if seq >= 3 else 0),
                               12, caplog)
    assert n == 12
    assert _video_fps(out) == pytest.approx(5.0, abs=0.05)


def test_capture_times_spread_far_wider_than_they_came_give_the_default_rate_with_a_line(tmp_path, caplog):
    """Every frame an hour after the one before (a node whose clock keeps stepping): no rate below
    what frames arriving within 2 s can have; the video plays at 10 fps, and one line says why."""
    from perception.sinks import DEFAULT_VIDEO_FPS

    start_ns = time.time_ns()
    n, out = _view_a_publisher(tmp_path, lambda seq: start_ns + seq * 3600 * 10**9, 6, caplog)
    assert n == 6
    assert _video_fps(out) == pytest.approx(DEFAULT_VIDEO_FPS, abs=0.05)
    said = [r.getMessage() for r in caplog.records if "clock step" in r.getMessage()]
    assert len(said) == 1 and f"the video plays at {DEFAULT_VIDEO_FPS:g} fps" in said[0], said


# --------------------------------------------------------------------------------------------
# The JavaScript client: deadlines on the monotonic clock
# --------------------------------------------------------------------------------------------

# Loaded with `node -r`: Date.now() jumps by JS_STEP_S seconds once JS_STEP_AFTER_S seconds have passed
# (on the monotonic clock), as a system clock step moves it.
_JS_STEP = """
const step = Number(process.env.JS_STEP_S) * 1000, after = Number(process.env.JS_STEP_AFTER_S) * 1000;
const realNow = Date.now, { performance } = require("perf_hooks"), t0 = performance.now();
Date.now = () => realNow() + (performance.now() - t0 >= after ? step : 0);
"""


def _js_client_or_skip() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js (node) is not installed")
    if not (JS_CLIENT.parent / "node_modules" / "zeromq").is_dir():
        pytest.skip("clients/js/node_modules is missing; run 'npm ci' in clients/js")
    return [node]


@pytest.mark.parametrize(("step_s", "flag"), [(3600, "--duration"), (-3600, "--duration"), (-3600, "--idle")])
def test_the_js_client_ends_after_its_duration_or_idle_whatever_date_now_does(tmp_path, step_s, flag):
    """Nothing listens on the endpoint: the client ends after 1 s with its one line and status 4.
    With Date.now() timing it, a step forward ended it at once (saying it waited an hour), a step
    back kept it running for an hour."""
    node = _js_client_or_skip()
    preload = tmp_path / "step.js"
    preload.write_text(_JS_STEP)
    env = {"PATH": "/usr/bin:/bin", "JS_STEP_S": str(step_s), "JS_STEP_AFTER_S": "0.3"}
    try:
        done = subprocess.run([*node, "-r", str(preload), str(JS_CLIENT), "--endpoint", "tcp://127.0.0.1:9",
                               "--topic", f"{NS}/lane", flag, "1"],
                              capture_output=True, text=True, timeout=60, env=env, cwd=JS_CLIENT.parent)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the client did not end after {flag} 1 with Date.now() stepped by {step_s} s")
    assert done.returncode == 4, done.stderr
    said = re.search(r"no messages received from tcp://127\.0\.0\.1:9 in ([0-9.]+) s", done.stderr)
    assert said is not None, done.stderr
    # The time it says it waited is the time it waited: at least its 1 s, not the clock's hour.
    assert 1.0 <= float(said.group(1)) < 60, done.stderr


# --------------------------------------------------------------------------------------------
# listen: a latency below 0 proves the clocks differ
# --------------------------------------------------------------------------------------------


def _listen_to(stamp_offset_ns: int, capsys, caplog) -> tuple[dict, list[str]]:
    """``listen --json`` of 5 masks stamped ``stamp_offset_ns`` off this machine's clock: the
    summary and the warnings said."""
    publisher = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, sndhwm=1000)

    def publish() -> None:
        assert publisher.wait_for_subscribers(1, timeout_s=30)
        time.sleep(0.2)  # the subscription's filter is in place at the publisher
        for seq in range(5):
            lane = np.zeros((12, 16), np.uint8)
            publisher.publish_masks(seq=seq, capture_ns=time.time_ns() + stamp_offset_ns, frame_id="f",
                                    masks={"lane": lane}, latency_ms={}, model_id="m")
            time.sleep(0.01)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.WARNING, logger="perception.commands.listen"):
            code = cli_main(["listen", "--endpoint", publisher.endpoint, "--namespace", NS, "--count", "5",
                             "--duration", "30", "--json"])
    finally:
        thread.join(timeout=30)
        publisher.close()
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    return summary, [r.getMessage() for r in caplog.records]


def test_listen_says_once_that_this_clock_is_behind_the_publisher_s(capsys, caplog):
    """A publisher whose clock is 5 s ahead: the latencies stay as measured (about -5000 ms), and
    one line says what they prove and what to do."""
    summary, said = _listen_to(5 * 10**9, capsys, caplog)
    latency = summary["topics"][f"{NS}/lane"]["latency_ms"]
    assert latency["max"] < -4000  # the figures are the measured ones
    hints = [line for line in said if "clock is behind the publisher's" in line]
    assert len(hints) == 1, said
    assert re.search(r"by at least (4\.\d|5\.0) s", hints[0]) and "chrony/NTP" in hints[0], hints[0]


def test_listen_says_nothing_of_clocks_when_the_latencies_are_positive(capsys, caplog):
    summary, said = _listen_to(0, capsys, caplog)
    assert summary["topics"][f"{NS}/lane"]["latency_ms"]["p50"] >= 0
    assert not [line for line in said if "clock" in line], said


# --------------------------------------------------------------------------------------------
# bench: the silence at the end of the window, on the monotonic clock
# --------------------------------------------------------------------------------------------


def _mask(seq: int, receive_ns: int):
    from perception.subscribe import Message

    header = {"kind": "mask", "seq": seq, "pub_seq": seq, "capture_ns": receive_ns - 1_000_000,
              "publish_ns": receive_ns - 500_000, "latency_ms": {"infer": 1.0}, "model_id": "tiny"}
    return Message(topic="perception/bench/lane", header=header, data=None, wire_bytes=10, receive_ns=receive_ns)


def test_the_bench_measures_the_silence_at_the_window_s_end_on_the_monotonic_clock():
    """The subscriber heard frames 1..3, then nothing while the node published 3 more; the wall
    clock stepped back an hour meanwhile. The bench says how long it heard nothing (about 2 s),
    not -3600 s or nothing at all."""
    from perception.bench.received import Received, record_message, summarize_received

    final = {"frames_in": 7, "published": 7, "dropped": 0, "corrupt": 0, "source_corrupt": 0,
             "in_flight_discarded": 0, "unheard": 0, "balanced": True}
    before = Received()
    record_message(before, _mask(0, time.time_ns()))
    rx = before.window_after()
    for seq in (1, 2, 3):
        record_message(rx, _mask(seq, time.time_ns()))
    window_end_mono_ns = time.monotonic_ns() + 2 * 10**9  # the window ended 2 s after the last frame
    run = summarize_received(rx, window_s=3.0, cpu={}, subscriber={}, extra={}, final=final,
                             window_end_ns=time.time_ns() - 3600 * 10**9, window_end_mono_ns=window_end_mono_ns)
    silent = [w for w in run["warnings"] if "nothing in the last" in w]
    assert len(silent) == 1 and re.search(r"nothing in the last 2\.\d s of the 3\.0 s window", silent[0]), run["warnings"]


def test_listen_leaves_topics_silent_for_a_minute_out_of_its_lines(tmp_path):
    """A burst of topics that then went quiet (a publisher inventing names) printed every row every
    --interval for the rest of the run (H39: 32,003 lines); a topic that just went quiet still shows."""
    import io
    from types import SimpleNamespace

    from perception.commands import listen
    from perception.subscribe import SubscribeCounters
    from perception.topic_stats import TopicStats

    now = 1000.0
    stats = {}
    for i in range(5):  # quiet for two minutes
        stats[f"churn/t{i}/lane"] = TopicStats(0.0)
        stats[f"churn/t{i}/lane"].last_s = now - 120
    stats["perception/front/lane"] = TopicStats(now - 5)
    stats["perception/front/lane"].last_s = now - 2  # quiet for 2 s: still a line (0.0 Hz)
    sub = SimpleNamespace(counters=SubscribeCounters(), endpoint="tcp://127.0.0.1:1", max_topics=500, last_error="")
    out = io.StringIO()
    listen._report(stats, sub, now, out, "hint")
    lines = out.getvalue().splitlines()
    assert any(line.startswith("perception/front/lane") for line in lines), lines
    assert not any(line.startswith("churn/") for line in lines), lines
    assert lines[-1] == ("5 topic(s) silent for over 60 s, left out of the lines above: churn/t0/lane, churn/t1/lane, "
                         "churn/t2/lane and 2 more"), lines
