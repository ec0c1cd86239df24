"""MaskSubscriber as a developer embeds it (hunt h27): keep-latest that returns every topic and
keeps up with a node, one subscriber shared by threads and by asyncio's executor, close() from
another thread, fork, recv(None), arguments that would subscribe to nothing, a lazy OpenCV
import and what help() shows."""

from __future__ import annotations

import asyncio
import math
import pydoc
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import zmq
from hostile import good_header
from test_publish_subscribe import _connect  # publish sync documents until the subscriber has one

from perception.errors import ConfigError, PerceptionError
from perception.publish import MaskPublisher
from perception.subscribe import MaskSubscriber, SubscriberClosedError
from perception.wire import dump_header

NS = "perception/test"
H, W = 45, 67
NOWHERE = "tcp://127.0.0.1:9"  # nothing listens there: a subscriber that never receives
TASKS = ("drivable", "lane", "obstacle")


@pytest.fixture
def publisher():
    pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, encodings={"drivable": "rle", "lane": "bitpack",
                                                                                "obstacle": "mono8"}, sndhwm=100_000)
    yield pub
    pub.close()


def _connect_masks(pub: MaskPublisher, sub: MaskSubscriber, barrier: MaskSubscriber) -> None:
    """``_connect`` for a subscriber of masks only: frames until it receives one, then the rest."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        _publish_frame(pub, 0)
        if sub.recv(timeout_s=0.02) is not None:
            _wait_for(barrier, "obstacle")
            for reader in (sub, barrier):
                while reader.recv(timeout_s=0.05) is not None:
                    pass
            return
    raise AssertionError(f"subscriber never connected to {pub.endpoint}")


def _publish_frame(pub: MaskPublisher, seq: int) -> None:
    mask = np.zeros((H, W), np.uint8)
    mask[: seq % H] = 255
    pub.publish_masks(seq=seq, capture_ns=time.time_ns(), frame_id="f", masks=dict.fromkeys(TASKS, mask),
                      latency_ms={}, model_id="m")


def _wait_for(barrier: MaskSubscriber, topic_end: str) -> None:
    """Until the plain subscriber gets a message on ``.../topic_end``: the publisher sent all before it."""
    while (msg := barrier.recv(timeout_s=5.0)) is not None and not msg.topic.endswith(topic_end):
        pass
    assert msg is not None, f"{topic_end} never arrived"


# --------------------------------------------------------------------------------------------
# keep_latest: every topic, each its newest message
# --------------------------------------------------------------------------------------------

def _fake_socket(sub: MaskSubscriber) -> list[list[zmq.Frame]]:
    """What 'arrives' at ``sub``: a list that a test appends messages to and recv takes them from."""
    queue: list[list[zmq.Frame]] = []
    sub._recv_frames = lambda: queue.pop(0) if queue else None
    return queue


def _mask_message(topic: str, seq: int) -> list[zmq.Frame]:
    header = dump_header(good_header(seq=seq))
    return [zmq.Frame(f"{NS}/{topic}".encode()), zmq.Frame(header), zmq.Frame(bytes(6))]


def test_keep_latest_returns_every_topic_of_a_frame_in_turn_each_its_newest():
    """A slow reader that takes one mask while a frame of three arrives: the topics take turns
    (it got only the first topic of every frame, drivable, before), each with the frame just sent."""
    with MaskSubscriber(NOWHERE, namespace=NS, masks=list(TASKS), keep_latest=True) as sub:
        arrives = _fake_socket(sub)
        got = []
        for seq in range(9):
            arrives.extend(_mask_message(topic, seq) for topic in TASKS)
            msg = sub.recv(timeout_s=0)
            got.append((msg.topic.rpartition("/")[2], msg.seq))
        assert got == [(TASKS[seq % 3], seq) for seq in range(9)]
        assert sub.counters.superseded == 27 - 9 - 2  # the two still pending were not replaced yet
        assert [(m.topic.rpartition("/")[2], m.seq) for m in (sub.recv(timeout_s=0), sub.recv(timeout_s=0))] == \
            [("drivable", 8), ("lane", 8)]


def test_keep_latest_slow_reader_of_a_real_node_gets_every_topic(publisher):
    with MaskSubscriber(publisher.endpoint, namespace=NS, masks=list(TASKS), keep_latest=True) as sub, \
            MaskSubscriber(publisher.endpoint, namespace=NS) as barrier:
        _connect(publisher, barrier)
        _connect_masks(publisher, sub, barrier)
        seen: dict[str, list[int]] = {}
        for seq in range(12):
            for _ in range(3):  # three frames between two recvs: the reader is slower than the node
                _publish_frame(publisher, seq)
            _wait_for(barrier, "obstacle")
            msg = sub.recv(timeout_s=5.0)
            assert msg is not None
            seen.setdefault(msg.topic.rpartition("/")[2], []).append(msg.seq)
        assert sorted(seen) == sorted(TASKS), seen
        assert all(seqs == sorted(seqs) for seqs in seen.values()), seen


def test_keep_latest_drains_past_zeromqs_short_receive_queue():
    """120 masks of a node's size (320 x 180 mono8) wait for a reader whose ZeroMQ queue holds 3
    (the default max_mask_pixels): a recv drains them, not only the few ZeroMQ held at a time (the
    old drain returned most of them one by one, oldest first: a reader that came back later was
    handed masks seconds behind the node, and further behind each time)."""
    pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, encodings=dict.fromkeys(TASKS, "mono8"),
                        sndhwm=100_000)
    mask = np.zeros((180, 320), np.uint8)
    with pub, MaskSubscriber(pub.endpoint, namespace=NS, keep_latest=True) as sub, \
            MaskSubscriber(pub.endpoint, namespace=NS) as barrier:
        assert sub.rcvhwm == 3
        _connect(pub, barrier)
        _connect(pub, sub)
        for seq in range(40):
            pub.publish_masks(seq=seq, capture_ns=time.time_ns(), frame_id="f", masks=dict.fromkeys(TASKS, mask),
                              latency_ms={}, model_id="m")
        pub.publish_json("done", {})
        _wait_for(barrier, "done")
        got = []
        while (msg := sub.recv(timeout_s=5.0)) is not None and not msg.topic.endswith("/done"):
            got.append((msg.topic.rpartition("/")[2], msg.seq))
            time.sleep(0.05)  # acting on the mask
        assert msg is not None, "'done' never arrived"
        # Each topic's newest after one drain: 3 messages (on a loaded machine a drain may stop
        # early, when ZeroMQ is slow to refill, and the next recv goes on with it: a few more).
        assert len(got) <= 9 and dict(got) == dict.fromkeys(TASKS, 39), got


# --------------------------------------------------------------------------------------------
# Threads, asyncio, close from another thread, fork
# --------------------------------------------------------------------------------------------

def test_one_subscriber_shared_by_threads_gives_each_message_once(publisher):
    """4 threads in recv on one subscriber (libzmq asserted and aborted the process, or two threads
    read the monitor: 'Invalid event message format'): each message goes to one of them."""
    with MaskSubscriber(publisher.endpoint, namespace=NS) as sub:
        _connect(publisher, sub)
        got: list[int] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def reader() -> None:
            try:
                while not stop.is_set():
                    msg = sub.recv(timeout_s=0.05)
                    if msg is not None and msg.topic.endswith("/n"):
                        got.append(msg.data["i"])
            except BaseException as exc:  # noqa: BLE001 - the test reports it
                errors.append(exc)

        threads = [threading.Thread(target=reader, daemon=True) for _ in range(4)]
        for thread in threads:
            thread.start()
        for i in range(300):
            publisher.publish_json("n", {"i": i})
            if i % 50 == 0:
                time.sleep(0.01)  # let the readers take turns while messages come
        deadline = time.monotonic() + 20
        while len(got) < 300 and time.monotonic() < deadline and not errors:
            time.sleep(0.01)
        stop.set()
        for thread in threads:
            thread.join(10)
        assert not errors and not any(t.is_alive() for t in threads), errors
        assert sorted(got) == list(range(300))


def test_asyncio_wait_for_around_recv_in_the_executor_does_not_crash(publisher):
    """The pattern an asyncio developer writes: a cancelled executor call goes on in its thread
    while the next one starts in another (libzmq aborted the process in 2 of 3 runs)."""
    with MaskSubscriber(publisher.endpoint, namespace=NS) as sub:
        _connect(publisher, sub)
        stop = threading.Event()

        def keep_publishing() -> None:
            i = 0
            while not stop.wait(0.001):
                publisher.publish_json("n", {"i": i})
                i += 1

        async def main() -> list[int]:
            loop = asyncio.get_running_loop()
            got = []
            for _ in range(300):
                try:
                    msg = await asyncio.wait_for(loop.run_in_executor(None, sub.recv, 0.2), timeout=0.002)
                    if msg is not None:
                        got.append(msg.data["i"])
                except asyncio.TimeoutError:
                    pass
            return got

        thread = threading.Thread(target=keep_publishing, daemon=True)
        thread.start()
        try:
            got = asyncio.run(main())
        finally:
            stop.set()
            thread.join(10)
        assert got and len(set(got)) == len(got) and got == sorted(got)


def test_close_from_another_thread_ends_a_recv_that_waits_for_ever():
    sub = MaskSubscriber(NOWHERE, namespace=NS)
    outcome: dict[str, BaseException | object] = {}
    started = threading.Event()

    def reader(name: str) -> None:
        started.set()
        try:
            outcome[name] = sub.recv(timeout_s=None)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            outcome[name] = exc

    first = threading.Thread(target=reader, args=("first",), daemon=True)
    first.start()
    started.wait(5)
    second = threading.Thread(target=reader, args=("second",), daemon=True)  # waits for the lock
    second.start()
    # A third thread with a timeout gives up waiting for the socket: None, no hang.
    assert sub.recv(timeout_s=0.05) is None
    sub.close()
    first.join(10)
    second.join(10)
    assert not first.is_alive() and not second.is_alive()
    assert isinstance(outcome["first"], SubscriberClosedError) and isinstance(outcome["second"], SubscriberClosedError)
    assert sub.closed


def test_recv_after_close_raises_one_documented_error():
    sub = MaskSubscriber(NOWHERE, namespace=NS)
    sub.close()
    sub.close()  # idempotent
    with pytest.raises(SubscriberClosedError, match=r"is closed \(close\(\) was called\); create a new one") as info:
        sub.recv(timeout_s=0)
    assert isinstance(info.value, PerceptionError) and not isinstance(info.value, zmq.ZMQError)


def test_a_forked_child_gets_one_clear_error_not_a_hang(tmp_path):
    """The child used the parent's subscriber and hung for ever in the socket monitor's poll."""
    script = textwrap.dedent(f"""
        import os, sys
        from perception.subscribe import MaskSubscriber, SubscriberForkError
        sub = MaskSubscriber({NOWHERE!r}, namespace={NS!r}, masks=["lane"])
        assert sub.recv(timeout_s=0) is None
        pid = os.fork()
        if pid == 0:
            try:
                sub.recv(timeout_s=1.0)
                print("child: recv returned")
            except SubscriberForkError as exc:
                print("child:", exc)
            sub.close()  # harmless in the child
            sys.stdout.flush()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("parent: child status", status, "then recv ->", sub.recv(timeout_s=0))
        sub.close()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("child: this MaskSubscriber was created in process ")
    assert "cannot be used after fork" in lines[0] and lines[0].endswith("create a MaskSubscriber in the child")
    assert lines[1] == "parent: child status 0 then recv -> None"


# --------------------------------------------------------------------------------------------
# recv's timeout, constructor arguments, CURVE wording
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("timeout_s", [None, math.inf])
def test_recv_without_a_limit_waits_until_a_message_comes(publisher, timeout_s):
    with MaskSubscriber(publisher.endpoint, namespace=NS, masks=["lane"]) as sub:
        stop = threading.Event()

        def keep_publishing() -> None:  # the first of these to reach the subscriber ends its wait
            seq = 0
            while not stop.wait(0.02):
                _publish_frame(publisher, seq)
                seq += 1

        thread = threading.Thread(target=keep_publishing, daemon=True)
        thread.start()
        try:
            msg = sub.recv(timeout_s=timeout_s)
        finally:
            stop.set()
            thread.join(10)
        assert msg is not None and msg.topic == f"{NS}/lane"


@pytest.mark.parametrize("timeout_s", ["1", math.nan, True])
def test_recv_refuses_a_timeout_that_is_no_number_of_seconds(timeout_s):
    with MaskSubscriber(NOWHERE, namespace=NS) as sub:
        with pytest.raises(ConfigError, match=r"timeout_s=.* must be a number of seconds, or None to wait until"):
            sub.recv(timeout_s=timeout_s)
        assert sub.recv(timeout_s=-1) is None  # 0 or less: what has arrived, at once


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"namespace": "/perception/front"}, "namespace '/perception/front' starts with '/'.*drop the leading '/': "
                                         "'perception/front'$"),
    ({"topics": ["/perception/front/lane"]}, "topics '/perception/front/lane' starts with '/'"),
    ({"namespace": NS, "masks": "lane"}, r"^masks='lane' is one string; masks takes a list of names, e.g. masks=\['lane'\]$"),
    ({"topics": f"{NS}/lane"}, r"^topics='perception/test/lane' is one string; .* e.g. topics=\['perception/test/lane'\]$"),
    ({"namespace": NS, "masks": ["lanes"]}, r"^masks: 'lanes' is not a topic of a node; masks takes drivable, lane, "
                                             r"obstacle, class_map, obstacle/<class>, stats, obstacles, info, frame \(other"),
    ({"namespace": NS, "masks": ["lane", ""]}, "not a name; give non-empty strings"),
    ({"namespace": NS, "masks": ["obstacle/"]}, "'obstacle/' is not a topic of a node"),
])
def test_arguments_that_would_subscribe_to_nothing_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message) as info:
        MaskSubscriber(NOWHERE, **kwargs)
    assert "\n" not in str(info.value)


def test_every_name_a_node_publishes_is_accepted_in_masks():
    names = ["drivable", "lane", "obstacle", "class_map", "obstacle/car", "obstacles", "stats", "info", "frame"]
    with MaskSubscriber(NOWHERE, namespace=NS, masks=names) as sub:
        assert sub.topics == [f"{NS}/{name}" for name in names]
    with MaskSubscriber(NOWHERE, namespace=NS, masks=("lane",)) as sub:  # any sequence of names
        assert sub.topics == [f"{NS}/lane"]


def test_half_a_curve_setup_names_the_keyword_arguments():
    with pytest.raises(ConfigError, match=r"CURVE needs both curve_server_key .* and curve_key_file"):
        MaskSubscriber(NOWHERE, curve_server_key="node.key")


# --------------------------------------------------------------------------------------------
# What importing the client costs, and what help() shows
# --------------------------------------------------------------------------------------------

def test_importing_the_client_does_not_load_opencv():
    """OpenCV (about 100 ms of a 230 ms import) is needed for png payloads only, loaded at the first."""
    script = ("import sys, perception.subscribe\n"
              "print('cv2' in sys.modules)\n"
              "from perception.encoding import get_codec\n"
              "import numpy as np\n"
              "mask = np.arange(12, dtype=np.uint8).reshape(3, 4)\n"
              "assert (get_codec('png').decode(get_codec('png').encode(mask), height=3, width=4) == mask).all()\n"
              "print('cv2' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]


def test_help_shows_attributes_threads_fork_and_stats():
    text = pydoc.render_doc(MaskSubscriber, renderer=pydoc.plaintext)
    for word in ("info:", "infos:", "counters:", "last_error:", "one subscriber may be shared by threads",
                 "run_in_executor", "SubscriberForkError", "SubscriberClosedError", "timeout_s``: 0",
                 "the topics taking turns"):
        assert word in text, word
    assert MaskSubscriber.stats.__doc__ and "superseded" in MaskSubscriber.stats.__doc__
