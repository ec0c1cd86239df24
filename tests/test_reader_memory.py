"""What a reader's ZeroMQ queue may hold before the reader takes it: bounded by ``--max-queue-mb``.

ZeroMQ counts a receive queue (``ZMQ_RCVHWM``) in whole messages, whatever their size, and each
reader takes frames of up to ``max(5 x --max-mask-pixels, 1 MiB)`` bytes (``ZMQ_MAXMSGSIZE``). With
ZeroMQ's default of 1000 messages a publisher that floods frames at that limit made a reader that
was not reading (slow, or blocked) queue up to 1000 of them: 84 GB at the default
``--max-mask-pixels``. Every reader (Python, C, JavaScript) now sets
``RCVHWM = max(1, --max-queue-mb MiB // frame limit)`` (``subscribe_decode.rcvhwm_for``), so such a queue
holds at most ``--max-queue-mb``. Here a publisher floods each reader, kept from reading, with
valid masks whose payload is exactly the frame limit, and the reader's memory must grow by no more
than that (it grew by all it was sent before).

The C and JavaScript readers run where their toolchains are (as in ``tests/test_clients.py``); the
Python one always.
"""

from __future__ import annotations

import array
import fcntl
import os
import subprocess
import sys
import termios
import time
from collections.abc import Callable

import numpy as np
import pytest
import zmq
from hostile import NS, good_header
from test_clients import _c_client, _js_client

from perception import contracts
from perception.encoding import get_codec
from perception.errors import ConfigError
from perception.options import DEFAULT_MAX_QUEUE_MB, MAX_QUEUE_MB
from perception.subscribe import MaskSubscriber, Message, max_frame_bytes
from perception.subscribe_decode import rcvhwm_for
from perception.wire import dump_header

MiB = 2**20
TOPIC = f"{NS}/lane"


@pytest.mark.parametrize(("pixels", "mb", "expected"), [
    (contracts.MAX_MASK_PIXELS, DEFAULT_MAX_QUEUE_MB, 3),  # 80 MiB frames: 3 fill 256 MiB
    (512 * 512, DEFAULT_MAX_QUEUE_MB, 204),                 # 1.25 MiB frames
    (1000, DEFAULT_MAX_QUEUE_MB, 256),                      # the 1 MiB JSON limit rules
    (16384 * 16384, DEFAULT_MAX_QUEUE_MB, 1),               # one frame over the budget: still one
    (1024 * 1024, 40, 8),
    (1, 1, 1),
    (1, MAX_QUEUE_MB, MAX_QUEUE_MB),
])
def test_the_receive_queue_is_the_budget_over_the_frame_limit(pixels, mb, expected):
    """The README's rule: max(1, MB MiB // max(5N, 1 MiB)) messages, which the subscriber sets."""
    assert rcvhwm_for(pixels, mb) == expected == max(1, mb * MiB // max(5 * pixels, MiB))
    assert expected == 1 or expected * max_frame_bytes(pixels) <= mb * MiB
    with MaskSubscriber("tcp://127.0.0.1:9", namespace=NS, max_mask_pixels=pixels, max_queue_mb=mb) as sub:
        assert sub.rcvhwm == expected == sub._socket.getsockopt(zmq.RCVHWM)


def test_a_receive_queue_over_the_budget_is_refused_in_one_line():
    """rcvhwm may be shorter than the budget allows, not longer; max_queue_mb is 1..65536."""
    with MaskSubscriber("tcp://127.0.0.1:9", namespace=NS, rcvhwm=2) as sub:
        assert sub._socket.getsockopt(zmq.RCVHWM) == 2
    with pytest.raises(ConfigError, match=r"^rcvhwm=4 must be a whole number in 1\.\.3: 3 messages of frames up to "
                                          r"83886080 bytes fill max_queue_mb=256; raise max_queue_mb"):
        MaskSubscriber("tcp://127.0.0.1:9", namespace=NS, rcvhwm=4)
    with pytest.raises(ConfigError, match=r"^rcvhwm=1000 must be a whole number in 1\.\.25"):
        MaskSubscriber("tcp://127.0.0.1:9", namespace=NS, rcvhwm=1000, max_mask_pixels=1000, max_queue_mb=25)
    for bad in (0, MAX_QUEUE_MB + 1, 2.5, True):
        with pytest.raises(ConfigError, match=rf"^max_queue_mb={bad!r} must be a whole number of MiB in 1\.\.65536$"):
            MaskSubscriber("tcp://127.0.0.1:9", namespace=NS, max_queue_mb=bad)


def test_listen_refuses_a_bad_max_queue_mb_in_one_line():
    for value in ("0", "65537", "1.5"):
        done = subprocess.run([sys.executable, "-m", "perception", "listen", "--max-queue-mb", value, "--duration", "0.1"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, (value, done.stderr)
        assert done.stderr.startswith("perception: error:") and "--max-queue-mb" in done.stderr, (value, done.stderr)


@pytest.mark.parametrize("name", ["c", "js"])
def test_the_clients_refuse_a_bad_max_queue_mb_in_one_line(name):
    cmd, reason = (_c_client if name == "c" else _js_client)()
    if cmd is None:
        pytest.skip(f"the {name} subscriber cannot run here: {reason}")
    for value in ("0", "65537", "2.5", ""):
        done = subprocess.run([*cmd, "--max-queue-mb", value], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, (value, done.stderr)
        assert "--max-queue-mb takes a whole number in 1..65536" in done.stderr, (value, done.stderr)
    done = subprocess.run([*cmd, "--endpoint", "tcp://127.0.0.1:9", "--max-queue-mb", "65536", "--duration", "0.1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 4 and "no messages received" in done.stderr, done.stderr


def test_keep_latest_stops_a_drain_at_the_budget():
    """A publisher faster than the reader, under a subscribed namespace, with a new topic every
    message: a keep-latest drain keeps one message a topic, so it stops once it holds
    max_queue_mb (it took all 50 queued before), and the messages it had not taken yet wait for
    the next recv: every one arrives, in order."""
    payload = bytes(300 * 1000)
    sent: list[str] = []

    def faster_than_the_reader() -> list[zmq.Frame] | None:  # the socket, with 50 messages queued
        if len(sent) == 50:
            return None
        sent.append(f"{NS}/x{len(sent)}")
        header = dump_header(good_header(height=300, width=1000, seq=len(sent)))
        return [zmq.Frame(sent[-1].encode()), zmq.Frame(header), zmq.Frame(payload)]

    with MaskSubscriber("tcp://127.0.0.1:9", namespace=NS, keep_latest=True, max_mask_pixels=300_000,
                        max_queue_mb=1) as sub:
        sub._recv_frames = faster_than_the_reader
        got = [sub.recv(timeout_s=0)]
        assert len(sent) == 4  # 1 MiB of 300 kB messages: the fourth fills it
        while (msg := sub.recv(timeout_s=0)) is not None:
            assert sub._pending_bytes <= MiB
            got.append(msg)
        assert all(isinstance(m, Message) for m in got) and [m.topic for m in got] == sent
        assert len(sent) == 50 and sub.counters.malformed == sub.counters.superseded == 0


# --------------------------------------------------------------------------------------------
# A flood of frames at the limit at a reader that does not read
# --------------------------------------------------------------------------------------------

PIXELS = 1024 * 1024  # frames of 5 MiB
QUEUE_MB = 40  # 8 of them
FLOOD = 60  # 300 MiB sent at most: what a queue of 1000 would take in


def _fionread(fd: int) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def _reader_command(name: str) -> list[str]:
    if name == "python":
        return [sys.executable, "-m", "perception", "listen", "--namespace", NS, "--echo", "--duration", "300"]
    cmd, reason = (_c_client if name == "c" else _js_client)()
    if cmd is None:
        pytest.skip(f"the {name} subscriber cannot run here: {reason}")
    return [*cmd, "--namespace", NS, "--duration", "300"]


def _wait_until_full(fd: int, capacity: int, more: Callable[[int], None]) -> None:
    """Until the pipe a reader writes to is full (so the reader is blocked writing), calling
    ``more(room)`` whenever it has stopped growing short of that."""
    deadline, seen = time.monotonic() + 120, -1
    while time.monotonic() < deadline:
        now = _fionread(fd)
        if now > capacity - 4096:  # a line that does not fit blocks (writes up to 4 kB are whole)
            return
        if now == seen:
            more(capacity - now)
        seen = now
        time.sleep(0.2)
    pytest.fail("the reader never filled its output pipe")


@pytest.mark.parametrize("name", ["python", "c", "js"])
def test_a_flood_of_frames_at_the_limit_grows_a_reader_that_does_not_read_by_at_most_its_budget(name, tmp_path):
    cmd = _reader_command(name)
    h = w = 1024
    stripes = (np.arange(h * w) % 2 * 255).astype(np.uint8).reshape(h, w)
    payload = get_codec("rle").encode(stripes)  # a run a pixel: the largest valid frame
    assert len(payload) == max_frame_bytes(PIXELS) == 5 * MiB
    big = [TOPIC.encode(), dump_header(good_header(height=h, width=w, compression="rle", seq=1)), payload]

    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.linger = 0
    pub.sndhwm = 4
    pub.setsockopt(zmq.XPUB_NODROP, 1)  # a full queue to the reader: zmq.Again, not a silent drop
    endpoint = f"tcp://127.0.0.1:{pub.bind_to_random_port('tcp://127.0.0.1')}"
    cmd = [*cmd, "--endpoint", endpoint, "--max-mask-pixels", str(PIXELS), "--max-queue-mb", str(QUEUE_MB)]
    # Kept from reading: the C and JavaScript readers block writing the first large mask to a
    # --dump FIFO that nobody reads; listen --echo (its lines unbuffered) blocks on a full stdout.
    fifo = None
    if name != "python":
        fifo = tmp_path / "dump.fifo"
        os.mkfifo(fifo)
        fifo_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the reader's open does not wait for a reader
        cmd += ["--dump", str(fifo)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        assert pub.poll(60_000), "the reader never subscribed"
        pub.recv()
        if fifo is not None:
            pub.send_multipart(big)
            _wait_until_full(fifo_fd, fcntl.fcntl(fifo_fd, fcntl.F_GETPIPE_SZ), lambda room: None)
        else:
            small = np.zeros((4, 4), np.uint8).tobytes()
            seq = iter(range(10**6))

            def echo_lines(room: int) -> None:  # an echo line is some 300 bytes
                for _ in range(max(1, min(50, room // 1000))):
                    pub.send_multipart([TOPIC.encode(), dump_header(good_header(height=4, width=4, seq=next(seq))),
                                        small])

            out = proc.stdout.fileno()
            _wait_until_full(out, fcntl.fcntl(out, fcntl.F_GETPIPE_SZ), echo_lines)
        assert proc.poll() is None
        before = _rss(proc.pid)
        sent, pushed_back, last_sent = 0, False, time.monotonic()
        frame = zmq.Frame(payload)
        while sent < FLOOD and not pushed_back:
            try:
                pub.send_multipart([*big[:2], frame], flags=zmq.NOBLOCK, copy=False)
                sent, last_sent = sent + 1, time.monotonic()
            except zmq.Again:
                # Our queue to the reader is full; it stays full once the socket buffers and the
                # reader's own queue are too (not while ZeroMQ is still writing the frames out).
                pushed_back = time.monotonic() - last_sent > 1.0
                time.sleep(0.01)
        budget = QUEUE_MB * MiB
        # The queue, one frame ZeroMQ may be taking in, allocator slack.
        bound = budget + 2 * len(payload) + 16 * MiB
        grown = _rss(proc.pid) - before
        deadline = time.monotonic() + (2 if pushed_back else 20)
        while time.monotonic() < deadline and grown <= bound:  # a queue too long goes on growing
            time.sleep(0.2)
            grown = _rss(proc.pid) - before
        assert grown <= bound, f"{name}: grew by {grown / MiB:.0f} MiB for {sent} frames of 5 MiB sent"
        assert pushed_back, f"{name}: took all {sent} frames of 5 MiB"
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        if fifo is not None:
            os.close(fifo_fd)
        pub.close(linger=0)
        ctx.term()
