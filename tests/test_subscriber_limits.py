"""The readers' frame limit and where the three readers (Python, C, JavaScript) must agree.

Every reader has ZeroMQ refuse frames over ``max_frame_bytes(max_mask_pixels)`` (``ZMQ_MAXMSGSIZE``),
the largest frame of a valid message: an ``rle`` payload of 5 bytes a pixel at worst. It once was
about one byte a pixel, so a valid mask of fine detail (alternate columns 0 and 255) cut every
reader off: ZeroMQ drops a connection that sends a frame over the limit and, after such a protocol
error, never reconnects it; the readers went deaf without a word. Now the mask arrives, and a
publisher that does send a frame over the limit costs one warning and a reconnect, after which
masks arrive again. A node that restarts is ZeroMQ's own reconnect, with no warning.

The C and JavaScript readers run where their toolchains are (as in ``tests/test_clients.py``); the
Python one always.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
import zlib
from collections.abc import Callable

import numpy as np
import pytest
import zmq
from hostile import NS, good_header, png_chunk
from test_clients import _c_client, _js_client

from perception import contracts
from perception.encoding import get_codec, max_payload_bytes
from perception.subscribe import MaskSubscriber, decode_message, max_frame_bytes
from perception.wire import dump_header

# --max-mask-pixels of every reader here: a 512x512 mask of alternate columns is an rle payload of
# 5 x 262144 = 1,310,720 bytes, over the 1 MiB JSON limit that set the old bound at this size.
PIXELS = 512 * 512
TOPIC = f"{NS}/lane"


@pytest.mark.parametrize("pixels", [1, 1000, 209_715, 209_716, PIXELS, 4096 * 4096, 16384 * 16384])
def test_the_frame_limit_is_the_largest_frame_of_a_valid_message(pixels):
    """max(5N, 1 MiB): the rule the README gives and the C and JavaScript readers apply."""
    assert max_frame_bytes(pixels) == max(5 * pixels, contracts.MAX_JSON_PAYLOAD_BYTES)


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (16384, 1), (1, 16384), (128, 128), (61, 97)])
def test_no_encoding_of_a_mask_is_larger_than_the_limit(shape):
    """Noise is the worst case of png (it does not compress) and alternate pixels that of rle (5N)."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, shape, dtype=np.uint8)
    stripes = (np.arange(noise.size) % 2 * 255).astype(np.uint8).reshape(shape)  # every pixel a run
    pixels = noise.size
    for name in contracts.ENCODINGS:
        codec = get_codec(name)
        for mask in (stripes,) if codec.binary_only else (noise, stripes):
            assert len(codec.encode(mask)) <= max_payload_bytes(pixels) <= max_frame_bytes(pixels), (name, shape)
    assert len(get_codec("rle").encode(stripes)) == 5 * pixels


def _mask(seq: int, mask: np.ndarray, *, compression: str = "rle") -> list[bytes]:
    header = good_header(height=mask.shape[0], width=mask.shape[1], compression=compression, seq=seq)
    codec = next(get_codec(n) for n in contracts.ENCODINGS if get_codec(n).compression == compression)
    return [TOPIC.encode(), dump_header(header), codec.encode(mask)]


def _stripes() -> np.ndarray:
    big = np.zeros((512, 512), np.uint8)
    big[:, ::2] = 255
    return big


class _Readers:
    """A test publisher (XPUB) with the Python subscriber and the available C and JavaScript
    clients on it, each with ``--max-mask-pixels PIXELS`` and stopping after ``count`` masks. The
    clients' stdout and stderr lines are collected as they come (``lines``, ``errors``)."""

    def __init__(self, endpoint: str, count: int) -> None:
        self.endpoint, self.count = endpoint, count
        self.ctx = zmq.Context()
        self.pub = self._bind()
        self.procs: dict[str, subprocess.Popen] = {}
        self.lines: dict[str, list[str]] = {}
        self.errors: dict[str, list[str]] = {}
        self._threads: list[threading.Thread] = []
        for name, probe in (("c", _c_client), ("js", _js_client)):
            cmd, _ = probe()
            if cmd is not None:
                proc = self.procs[name] = subprocess.Popen(
                    [*cmd, "--endpoint", endpoint, "--namespace", NS, "--max-mask-pixels", str(PIXELS),
                     "--count", str(count), "--duration", "60"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
                for stream, into in ((proc.stdout, self.lines.setdefault(name, [])),
                                     (proc.stderr, self.errors.setdefault(name, []))):
                    self._threads.append(threading.Thread(target=lambda f=stream, out=into: out.extend(f), daemon=True))
                    self._threads[-1].start()
        self.sub = MaskSubscriber(endpoint, namespace=NS, max_mask_pixels=PIXELS)
        self.python: list = []  # the Python subscriber's masks

    def received(self) -> dict[str, int]:
        """Masks each reader has received so far."""
        return {"python": len(self.python), **{name: len(lines) for name, lines in self.lines.items()}}

    def _bind(self) -> zmq.Socket:
        pub = self.ctx.socket(zmq.XPUB)
        pub.linger = 0
        pub.setsockopt(zmq.XPUB_VERBOSE, 1)  # every reader's subscription, not only the first of a prefix
        pub.setsockopt(zmq.SNDHWM, 0)
        pub.bind(self.endpoint)
        return pub

    def wait_subscribed(self) -> None:
        seen, deadline = 0, time.monotonic() + 30
        while seen < 1 + len(self.procs) and time.monotonic() < deadline:
            self.read_python(0.01)
            if self.pub.poll(10) and self.pub.recv()[:1] == b"\x01":
                seen += 1
        assert seen == 1 + len(self.procs), f"{seen} of {1 + len(self.procs)} readers subscribed"

    def restart(self) -> None:
        """The publisher goes away and comes back on the same endpoint (a node restart)."""
        self.pub.close(linger=0)
        time.sleep(0.3)
        self.pub = self._bind()
        self.wait_subscribed()

    def read_python(self, timeout_s: float) -> None:
        while (msg := self.sub.recv(timeout_s=timeout_s)) is not None:
            self.python.append(msg)
            timeout_s = 0

    def send(self, frames: list[bytes]) -> None:
        self.pub.send_multipart(frames)

    def send_until(self, make: Callable[[int], list[bytes]], done: Callable[[], bool], timeout_s: float = 30) -> None:
        """Send ``make(k)`` for k = 0, 1, ... every 20 ms until ``done()`` and every client ended."""
        deadline, k = time.monotonic() + timeout_s, 0
        while time.monotonic() < deadline and not (done() and all(p.poll() is not None for p in self.procs.values())):
            self.send(make(k))
            k += 1
            while self.pub.poll(0):
                self.pub.recv()  # a reconnected reader subscribes again
            self.read_python(0.02)

    def finish(self) -> dict[str, tuple[list[dict], str]]:
        """Each client's stdout lines and stderr, once it exited (with status 0)."""
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail(f"the {name} client did not finish: {''.join(self.errors[name])[-2000:]}")
        for thread in self._threads:
            thread.join(timeout=30)
        out = {}
        for name, proc in self.procs.items():
            stderr = "".join(self.errors[name])
            assert proc.returncode == 0, f"{name} exited {proc.returncode}: {stderr[-2000:]}"
            out[name] = ([json.loads(line) for line in self.lines[name]], stderr)
        return out

    def wait_received(self, count: int) -> None:
        """Until every reader has received ``count`` masks."""
        deadline = time.monotonic() + 30
        while min(self.received().values()) < count and time.monotonic() < deadline:
            self.read_python(0.02)
        assert min(self.received().values()) == count, self.received()

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for thread in self._threads:
            thread.join(timeout=10)
        for proc in self.procs.values():
            proc.stdout.close()
            proc.stderr.close()
        self.sub.close()
        self.pub.close(linger=0)
        self.ctx.term()


@pytest.fixture
def readers(free_tcp_port):
    """A factory of _Readers on a free port; the test closes nothing itself."""
    made = []

    def make(count: int) -> _Readers:
        made.append(_Readers(f"tcp://127.0.0.1:{free_tcp_port}", count))
        return made[-1]

    yield make
    for r in made:
        r.close()


def _dropped_lines(stderr: str, endpoint: str) -> list[str]:
    return [line for line in stderr.splitlines() if f"dropped the connection to {endpoint}" in line]


def test_a_valid_rle_mask_of_5n_bytes_and_the_masks_after_it_arrive_then_a_frame_over_the_limit_costs_one_warning(
        readers, caplog):
    """The hunt's case 1.1 at 512x512: the big mask and the small ones after it arrive in every
    reader. Then a hostile frame one byte over the limit: ZeroMQ drops each reader's connection, each
    says so once (naming the endpoint and the limit), connects again and gets the masks after it."""
    caplog.set_level(logging.WARNING, logger="perception.subscribe")
    big = _stripes()
    small = np.zeros((4, 4), np.uint8)
    limit = max_frame_bytes(PIXELS)
    first = _mask(1, big)
    assert len(first[2]) == limit == 5 * PIXELS  # exactly at the limit, over the old one
    r = readers(count=1 + 3 + 3)  # the big mask, 3 before the hostile frame, 3 after it
    r.wait_subscribed()
    for frames in (first, _mask(2, small), _mask(3, small), _mask(4, small)):
        r.send(frames)
    # Every reader takes these 4 first: a session ZeroMQ ends for a protocol error drops the messages
    # it queued for the reader that were not taken yet (the readers close with linger 0).
    r.wait_received(4)
    r.send([TOPIC.encode(), dump_header(good_header(seq=5)), bytes(limit + 1)])

    def after() -> list[int]:
        return [m.seq for m in r.python if m.seq >= 100]

    r.send_until(lambda k: _mask(100 + k, small), lambda: len(after()) >= 3)
    results = r.finish()
    assert [m.seq for m in r.python][:4] == [1, 2, 3, 4] and len(after()) >= 3
    assert np.array_equal(r.python[0].data, big)
    assert r.sub.counters.reconnects == 1 and r.sub.counters.malformed == 0
    warnings = [rec.getMessage() for rec in caplog.records if "dropped the connection" in rec.getMessage()]
    assert len(warnings) == 1 and r.endpoint in warnings[0] and f"over {limit} bytes" in warnings[0], warnings
    for name, (lines, err) in results.items():
        seqs = [line["seq"] for line in lines]
        assert seqs[:4] == [1, 2, 3, 4] and len(seqs) == 7 and min(seqs[4:]) >= 100, (name, seqs, err[-1500:])
        assert lines[0]["crc32"] == f"{zlib.crc32(big.tobytes()):08x}", name
        dropped = _dropped_lines(err, r.endpoint)
        assert len(dropped) == 1 and f"over {limit} bytes" in dropped[0], (name, err[-1500:])
        assert "skipped a message" not in err and "1 reconnects" in err, (name, err[-1500:])


def test_a_node_restart_is_zeromqs_own_reconnect_without_a_warning(readers, caplog):
    caplog.set_level(logging.WARNING, logger="perception.subscribe")
    small = np.zeros((4, 4), np.uint8)
    r = readers(count=1 + 2)
    r.wait_subscribed()
    r.send(_mask(1, small))
    r.wait_received(1)
    r.restart()
    r.send_until(lambda k: _mask(100 + k, small), lambda: sum(m.seq >= 100 for m in r.python) >= 2)
    results = r.finish()
    assert [m.seq for m in r.python][0] == 1 and sum(m.seq >= 100 for m in r.python) >= 2
    assert r.sub.counters.reconnects == 0 and "dropped the connection" not in caplog.text
    for name, (lines, err) in results.items():
        assert [line["seq"] for line in lines][0] == 1 and len(lines) == 3, (name, err[-1500:])
        assert not _dropped_lines(err, r.endpoint), (name, err[-1500:])


# --------------------------------------------------------------------------------------------
# What the three readers take and refuse alike
# --------------------------------------------------------------------------------------------

def _png(*extra: bytes, filters: bytes = b"\0\0", split: bytes | None = None) -> bytes:
    """A 2x3 greyscale PNG with ``extra`` chunks before its image data (``split``: a chunk between
    two IDAT chunks instead), its rows starting with ``filters``."""
    data = zlib.compress(b"".join(bytes([f]) + bytes([40 * r + 1, 2, 3]) for r, f in enumerate(filters)))
    idat = (png_chunk(b"IDAT", data) if split is None
            else png_chunk(b"IDAT", data[:5]) + split + png_chunk(b"IDAT", data[5:]))
    ihdr = png_chunk(b"IHDR", bytes.fromhex("00000003 00000002 0800000000"))
    return b"\x89PNG\r\n\x1a\n" + ihdr + b"".join(extra) + idat + png_chunk(b"IEND", b"")


def _png_message(seq: int, payload: bytes) -> list[bytes]:
    return [TOPIC.encode(), dump_header(good_header(compression="png", seq=seq)), payload]


def _with_header(number: int, **changes) -> list[bytes]:
    header = {**json.loads(dump_header(good_header(seq=number))), **changes}
    return [TOPIC.encode(), json.dumps(header).encode(), bytes(6)]


# (name, message, what each reader's skip line says; None: every reader decodes it)
AGREED = [
    ("png", lambda s: _png_message(s, _png()), None),
    ("png with tRNS", lambda s: _png_message(s, _png(png_chunk(b"tRNS", b"\0\x01"))), None),
    ("png with PLTE, zTXt and iCCP", lambda s: _png_message(s, _png(
        png_chunk(b"PLTE", bytes(6)), png_chunk(b"zTXt", b"k\0\0" + zlib.compress(bytes(10**7))),
        png_chunk(b"iCCP", b"k\0\0" + zlib.compress(bytes(10**7))))), None),
    ("png with a bad filter byte", lambda s: _png_message(s, _png(filters=b"\0\x09")), "bad adaptive filter value"),
    ("png with tEXt between its IDAT chunks", lambda s: _png_message(s, _png(split=png_chunk(b"tEXt", b"a\0b"))),
     "IDAT chunks are not consecutive"),
    ("png with an unknown critical chunk", lambda s: _png_message(s, _png(png_chunk(b"ABCD", b""))),
     "unknown critical chunk 'ABCD'"),
    ("png with a second IHDR", lambda s: _png_message(s, _png(png_chunk(b"IHDR", bytes(13)))), "second IHDR chunk"),
    ("png with a chunk type not of letters", lambda s: _png_message(s, _png(png_chunk(b"a1b2", b""))),
     "not four ASCII letters"),
    ("png whose IHDR says filter method 1", lambda s: _png_message(s, _png().replace(
        png_chunk(b"IHDR", bytes.fromhex("00000003 00000002 0800000000")),
        png_chunk(b"IHDR", bytes.fromhex("00000003 00000002 0800000100")))), "filter method 1"),
    ("capture_ns as a JSON number", lambda s: _with_header(s, capture_ns=1_700_000_000_000_000_000), "capture_ns"),
    ("publish_ns as a JSON number", lambda s: _with_header(s, publish_ns=1_700_000_000_000_000_001), "publish_ns"),
    ("mono8", lambda s: _mask(s, np.full((2, 3), 255, np.uint8), compression="none"), None),
]


def test_the_readers_take_and_refuse_the_same_pngs_and_headers(readers):
    """Ancillary chunks (tRNS included) are ignored by all three, a PLTE too; bad filter bytes and
    chunk layouts, and nanoseconds as JSON numbers, are refused by all three, naming the reason.
    The seq of each case is its index + 1."""
    python = {}
    for i, (name, make, _) in enumerate(AGREED):
        try:
            python[name] = zlib.crc32(decode_message(make(i + 1)).data.tobytes())
        except Exception as exc:  # noqa: BLE001 -- WireError or DecodeError, compared below
            python[name] = str(exc)
    for name, _, reason in AGREED:
        assert isinstance(python[name], int) if reason is None else reason in python[name], (name, python[name])
    assert python["png with tRNS"] == python["png"] == python["png with PLTE, zTXt and iCCP"]
    accepted = [name for name, _, reason in AGREED if reason is None]
    r = readers(count=len(accepted))
    if not r.procs:
        pytest.skip("neither the C nor the JavaScript client can run here (tests/test_clients.py says why)")
    r.wait_subscribed()
    for i, (_, make, _) in enumerate(AGREED):
        r.send(make(i + 1))
    for name, (lines, err) in r.finish().items():
        got = {AGREED[line["seq"] - 1][0]: int(line["crc32"], 16) for line in lines}
        assert got == {n: python[n] for n in accepted}, (name, err[-1500:])
        skipped = [line for line in err.splitlines() if "skipped a message" in line]
        refused = [(n, reason) for n, _, reason in AGREED if reason is not None]
        assert len(skipped) == len(refused), (name, err[-1500:])
        for (case, reason), line in zip(refused, skipped, strict=True):
            assert reason in line, (name, case, line)


def test_the_javascript_reader_names_a_seq_beyond_2_53():
    """Documented: the C and JavaScript readers hold seq in a double and refuse one beyond 2^53 - 1
    (Python takes it). The reason says so, not 'missing or not an integer'."""
    cmd, reason = _js_client()
    if cmd is None:
        pytest.skip(f"the js subscriber cannot run here: {reason}")
    script = ("const {parseMaskHeader, WireError} = require(process.argv[1]);"
              "try { parseMaskHeader(JSON.parse(process.argv[2])); console.log('ok'); }"
              "catch (e) { if (!(e instanceof WireError)) throw e; console.log(e.message); }")
    for seq, expected in ((2**53 - 1, "ok"), (2**53 + 2, "field 'seq' is 9007199254740994, outside 0..9007199254740991"),
                          (10**18, "field 'seq' is 1000000000000000000, outside 0..9007199254740991"),
                          (1.5, "field 'seq' is not an integer")):
        header = _with_header(1, seq=seq)[1].decode()
        done = subprocess.run([cmd[0], "-e", script, cmd[1], header], capture_output=True, text=True, timeout=60)
        assert done.stdout.strip() == expected, done.stderr
