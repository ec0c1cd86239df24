"""A ``--topic`` that is a byte prefix of real topics (a typo ``perception/front/lan``, a namespace
given as a topic): ZeroMQ delivers the longer topics and the exact-topic filter drops them.

Hunt h48 (session s42): H2, the C and JavaScript clients never ended on ``--idle`` (each dropped
message reset the idle clock); M1, ``listen``, ``record`` and both clients ended with "no messages
received ... is the node running?" although the node sent all along; L3, the clients took
``--namespace /perception/front`` (a ROS 2 name) and waited for nothing. Now only messages taken
count as arrivals, the last line says what came instead and what was probably meant, and a
leading '/' is refused at once as ``listen`` refuses it.
"""

from __future__ import annotations

import subprocess
import threading
import time

import numpy as np
import pytest
from hostile import NS
from test_clients import _c_client, _js_client

from perception.subscribe import MaskSubscriber
from perception.subscribe_unasked import Unasked, unasked_line


class _Publishing:
    """A MaskPublisher sending a frame of masks every 20 ms from a thread of its own (its socket
    used by that thread only), until the ``with`` block ends."""

    def __init__(self, endpoint: str, **options) -> None:
        self.endpoint, self.options = endpoint, options
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from perception.publish import MaskPublisher

        masks = {n: np.full((4, 6), 255, np.uint8) for n in ("drivable", "lane", "obstacle")}
        with MaskPublisher(endpoint=self.endpoint, namespace=NS, **self.options) as pub:
            seq = 0
            while not self.stop.is_set():
                pub.publish_masks(seq=seq, capture_ns=time.time_ns(), frame_id="front", masks=masks, latency_ms={},
                                  model_id="tiny")
                seq += 1
                self.stop.wait(0.02)

    def __enter__(self) -> _Publishing:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def test_unasked_line_names_the_topics_and_what_was_meant():
    unasked = Unasked()
    assert unasked_line("tcp://h:1", [f"{NS}/lan"], 2.0, unasked) is None  # nothing came: the caller's own hint
    for topic in (f"{NS}/lane", f"{NS}/lane", f"{NS}/lane"):
        unasked.add(topic)
    assert unasked_line("tcp://h:1", [f"{NS}/lan"], 2.0, unasked) == (
        f"no messages on the topic {NS}/lan from tcp://h:1 in 2.0 s, but 3 on other topics ({NS}/lane): --topic takes "
        f"whole topic names, --namespace a namespace; did you mean --topic {NS}/lane?")
    ns = Unasked()
    for name in ("info", "drivable", "lane", "obstacle", "stats\x1b[2J"):
        ns.add(f"{NS}/{name}")
    line = unasked_line("tcp://h:1", [NS], 1.0, ns)
    assert f"but 5 on other topics ({NS}/info, {NS}/drivable, {NS}/lane, ...)" in line
    assert line.endswith(f"did you mean --namespace {NS}?") and "\x1b" not in line
    frame = Unasked()  # an atomic frame without an asked-for mask: its masks' topics
    frame.add(f"{NS}/drivable", f"{NS}/lane")
    assert unasked_line("tcp://h:1", [f"{NS}/lan"], 1.0, frame).endswith(f"did you mean --topic {NS}/lane?")


def test_subscriber_counts_a_frame_without_an_asked_for_mask_as_unasked(free_tcp_port):
    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    with MaskSubscriber(endpoint, topics=[f"{NS}/lan"]) as sub, _Publishing(endpoint, atomic_frames=True):
        deadline = time.monotonic() + 20
        while sub.unasked.messages < 3 and time.monotonic() < deadline:
            assert sub.recv(timeout_s=0.2) is None
    assert sub.unasked.messages >= 3, "the frames were never counted as not asked for"
    assert f"{NS}/lane" in sub.unasked.topics and sub.counters.received == 0


def test_listen_and_record_say_what_came_on_other_topics(free_tcp_port, tmp_path, capsys):
    from perception.cli import main

    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    with _Publishing(endpoint):
        assert main(["listen", "--endpoint", endpoint, "--topic", NS, "--duration", "1.5"]) == 4
        _, err = capsys.readouterr()
        out = tmp_path / "typo.mcap"
        assert main(["record", "--endpoint", endpoint, "--topic", f"{NS}/lan", "--out", str(out), "--duration", "1.5"]) == 4
        _, record_err = capsys.readouterr()
    assert "is the node running" not in err, err
    assert f"error: no messages on the topic {NS} from {endpoint} in 1." in err, err
    assert f"on other topics ({NS}/" in err and err.rstrip().endswith(f"did you mean --namespace {NS}?"), err
    assert not out.exists()
    assert f"nothing recorded, so no file was written to {out}: no messages on the topic {NS}/lan from" in record_err
    assert f"on other topics ({NS}/lane)" in record_err and f"did you mean --topic {NS}/lane?" in record_err, record_err


@pytest.mark.parametrize("name", ["c", "js"])
def test_clients_end_on_idle_and_name_the_other_topics(name, free_tcp_port):
    cmd, reason = (_c_client if name == "c" else _js_client)()
    if cmd is None:
        pytest.skip(f"the {name} subscriber cannot run here: {reason}")
    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    # L3: a ROS 2 name is refused at once, as listen refuses it.
    done = subprocess.run([*cmd, "--endpoint", endpoint, "--namespace", f"/{NS}"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"--namespace '/{NS}' starts with '/'" in done.stderr and f"drop the leading '/': '{NS}'" in done.stderr
    with _Publishing(endpoint):
        procs = {topic: subprocess.Popen([*cmd, "--endpoint", endpoint, "--topic", topic, "--idle", "1"],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for topic in (f"{NS}/lan", NS)}
        try:
            results = {topic: proc.communicate(timeout=15) for topic, proc in procs.items()}
        except subprocess.TimeoutExpired:
            pytest.fail("the client never ended on --idle 1: dropped messages reset its idle clock")
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
    for topic, proc in procs.items():
        out, err = results[topic]
        assert proc.returncode == 4 and out == "" and err.count("\n") == 1, (topic, err)
        assert f"error: no messages on the topic {topic} from {endpoint} in " in err, err
    assert f"({NS}/lane): --topic takes whole topic names, --namespace a namespace; did you mean --topic {NS}/lane?" \
        in results[f"{NS}/lan"][1]
    assert results[NS][1].rstrip().endswith(f"did you mean --namespace {NS}?")


@pytest.mark.parametrize("name", ["c", "js"])
def test_clients_count_a_frame_without_an_asked_for_mask_as_unasked(name, free_tcp_port):
    cmd, reason = (_c_client if name == "c" else _js_client)()
    if cmd is None:
        pytest.skip(f"the {name} subscriber cannot run here: {reason}")
    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    with _Publishing(endpoint, atomic_frames=True):
        proc = subprocess.Popen([*cmd, "--endpoint", endpoint, "--topic", f"{NS}/lan", "--idle", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail("the client never ended on --idle 1: frames without an asked-for mask reset its idle clock")
    assert proc.returncode == 4 and out == "", err
    assert f"no messages on the topic {NS}/lan from {endpoint}" in err and f"did you mean --topic {NS}/lane?" in err, err


def test_a_megabyte_topic_is_kept_cut_and_not_escaped_whole():
    """H51 HIGH-4: a hostile publisher's 2 MB topics were escaped whole, 0.5 s each, for every
    message dropped (``listen --duration 3`` ran 16 s)."""
    from perception.subscribe_unasked import UNASKED_TOPICS_KEPT, Unasked

    unasked = Unasked()
    for i in range(UNASKED_TOPICS_KEPT + 3):
        unasked.add(f"perception/front/lane{i}" + "\x01" * 2_000_000)
    assert unasked.messages == UNASKED_TOPICS_KEPT + 3 and unasked.more
    assert all(len(t) <= 120 and "\x01" not in t for t in unasked.topics), [len(t) for t in unasked.topics]
