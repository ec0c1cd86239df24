"""The reference subscribers in C (clients/c) and JavaScript (clients/js) against the Python client.

A node runs the tiny model on the synthetic camera with every payload encoding (and atomic frames);
the C, JavaScript and Python subscribers listen side by side, and every mask must come out byte for
byte the same, with the same header fields and the same class names from ``<ns>/info``. Then both
clients are fed hostile and mutated messages from a test publisher: each must be skipped with a
stderr line, never crash the client, and the good messages between them must still decode.

The tests skip, naming what is missing, where the toolchain is absent: a C compiler and the
libzmq/cJSON/libpng/zlib development files (pkg-config), Node.js with ``clients/js/node_modules``
(``npm ci`` in clients/js). ``.ci/run`` installs them when it can.
"""

from __future__ import annotations

import fcntl
import functools
import itertools
import json
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import zmq
from hostile import NS, frame_message, good_header, hostile_messages, png_bomb, png_chunk, rle_run

from perception import contracts
from perception.encoding import get_codec
from perception.subscribe import MaskSubscriber
from perception.synthetic.classes import SYNTHETIC_CLASSES
from perception.wire import MaskGeometry, dump_header, frame_header, json_header

REPO = Path(__file__).resolve().parents[1]
C_DIR = REPO / "clients" / "c"
JS_DIR = REPO / "clients" / "js"
C_PACKAGES = ("libzmq", "libcjson", "libpng", "zlib")


@functools.cache
def _c_client() -> tuple[list[str] | None, str]:
    """The built C subscriber's command, or None and why it cannot be built here."""
    if shutil.which("make") is None or shutil.which("cc") is None:
        return None, "no C compiler (cc) or make; install gcc and make"
    if shutil.which("pkg-config") is None:
        return None, "pkg-config is not installed"
    missing = [p for p in C_PACKAGES if subprocess.run(["pkg-config", "--exists", p]).returncode != 0]
    if missing:
        return None, (f"pkg-config finds no {', '.join(missing)}; on Debian: apt-get install libzmq3-dev libcjson-dev "
                      "libpng-dev zlib1g-dev")
    # One build at a time: test files that run the clients may run in parallel (pytest-xdist), and
    # one must not start a binary another one's make is still writing.
    with open(Path(tempfile.gettempdir()) / "perception_sub.build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = subprocess.run(["make", "-s", "-C", str(C_DIR)], capture_output=True, text=True)
    if built.returncode != 0:
        return None, f"make -C clients/c failed: {built.stderr.strip()[-400:]}"
    return [str(C_DIR / "perception_sub")], ""


@functools.cache
def _js_client() -> tuple[list[str] | None, str]:
    node = shutil.which("node")
    if node is None:
        return None, "Node.js (node) is not installed"
    if not (JS_DIR / "node_modules" / "zeromq").is_dir():
        return None, "clients/js/node_modules is missing; run 'npm ci' in clients/js"
    probe = subprocess.run([node, "-e", "require('zeromq'); require('pngjs'); require('zlib').crc32(Buffer.alloc(1))"],
                           cwd=JS_DIR, capture_output=True, text=True)
    if probe.returncode != 0:
        return None, f"clients/js does not load here: {probe.stderr.strip().splitlines()[-1][:300]}"
    return [node, str(JS_DIR / "perception_sub.js")], ""


@pytest.mark.parametrize("name", ["c", "js"])
def test_reference_subscriber_builds_and_runs(name):
    """Each client builds (or loads) and answers --help; skipped, naming what is missing, where its
    toolchain is absent (the side-by-side test then runs with the other one)."""
    cmd, reason = (_c_client if name == "c" else _js_client)()
    if cmd is None:
        pytest.skip(f"the {name} subscriber cannot run here: {reason}")
    done = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--namespace" in done.stdout, done.stderr
    bad = subprocess.run([*cmd, "--count", "many"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--count takes a whole number" in bad.stderr


# Flag values both clients refuse with one stderr line and exit status 2: --max-mask-pixels is a
# whole number in 1..16384^2 (the largest mask side squared), names are not empty.
BAD_FLAGS = [
    ("--max-mask-pixels", "0"), ("--max-mask-pixels", "1e20"), ("--max-mask-pixels", "268435457"),
    ("--max-mask-pixels", "2.5"), ("--max-mask-pixels", ""), ("--count", "-1"), ("--count", "1e20"),
    ("--namespace", ""), ("--topic", ""),
]


@pytest.mark.parametrize("name", ["c", "js"])
def test_reference_subscribers_refuse_bad_flag_values(name):
    cmd, reason = (_c_client if name == "c" else _js_client)()
    if cmd is None:
        pytest.skip(f"the {name} subscriber cannot run here: {reason}")
    for flag, value in BAD_FLAGS:
        done = subprocess.run([*cmd, flag, value], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and flag in done.stderr, (flag, value, done.stderr)
    # The largest value runs (nothing listens on the endpoint: it stops after its --duration, saying
    # that nothing arrived, with exit status 4 as perception listen).
    done = subprocess.run([*cmd, "--endpoint", "tcp://127.0.0.1:9", "--max-mask-pixels", "268435456", "--duration", "0.1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 4 and "no messages received from tcp://127.0.0.1:9" in done.stderr, done.stderr


@pytest.mark.parametrize("name", ["c", "js"])
def test_a_client_that_receives_nothing_ends_after_idle_with_one_line_and_status_4(name):
    """--idle counts from the start until a message arrives (it once counted only after one, so a
    client on the wrong endpoint never ended); nothing at all received is one line and exit status
    4, as `perception listen` ends."""
    cmd, reason = (_c_client if name == "c" else _js_client)()
    if cmd is None:
        pytest.skip(f"the {name} subscriber cannot run here: {reason}")
    done = subprocess.run([*cmd, "--endpoint", "tcp://127.0.0.1:9", "--topic", f"{NS}/lane", "--idle", "0.3"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 4, done.stderr
    assert done.stderr.count("\n") == 1 and re.search(
        r"error: no messages received from tcp://127\.0\.0\.1:9 in 0\.\d s; is the node running\? check --endpoint / --topic",
        done.stderr), done.stderr


@pytest.fixture(scope="module")
def clients() -> dict[str, list[str]]:
    """name -> command of each reference subscriber available; the test skips naming what is missing
    only when neither is (a missing one is reported, and checked where it exists)."""
    found, why = {}, []
    for name, probe in (("c", _c_client), ("js", _js_client)):
        cmd, reason = probe()
        if cmd is None:
            why.append(f"{name}: {reason}")
        else:
            found[name] = cmd
    if not found:
        pytest.skip("no reference subscriber can run here (" + "; ".join(why) + ")")
    if why:
        print("reference subscribers not run: " + "; ".join(why))
    return found


@pytest.fixture(params=["c", "js"])
def client(request, clients) -> list[str]:
    if request.param not in clients:
        reason = (_c_client if request.param == "c" else _js_client)()[1]
        pytest.skip(f"the {request.param} subscriber cannot run here: {reason}")
    return clients[request.param]


@pytest.fixture(scope="module")
def model_169(tmp_path_factory) -> Path:
    """The brightness model with a 48x64 input (tests/tiny_models.py)."""
    from tiny_models import write_brightness_model

    return write_brightness_model(tmp_path_factory.mktemp("clients_model") / "tiny.onnx", (48, 64))


def _start(cmd: list[str], endpoint: str, dump: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*cmd, "--endpoint", endpoint, "--dump", str(dump), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")


def _finish(proc: subprocess.Popen, what: str) -> tuple[list[dict], str]:
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{what} did not finish: {err[-2000:]}")
    assert proc.returncode == 0, f"{what} exited {proc.returncode}: {err[-2000:]}"
    return [json.loads(line) for line in out.splitlines()], err


# Every encoding of every mask topic across the runs (bitpack only for the binary masks), the
# atomic-frame mode in one, odd and portrait frame sizes (letterboxed on either side).
RUNS = {
    "mixed": (["--encoding", "drivable=bitpack", "--encoding", "lane=rle", "--encoding", "obstacle=png",
               "--encoding", "class_map=rle", "--width", "97", "--height", "61"]),
    "atomic": (["--atomic-frames", "--encoding", "drivable=png", "--encoding", "lane=bitpack",
                "--encoding", "obstacle=mono8", "--encoding", "class_map=png", "--width", "65", "--height", "99",
                "--per-class-obstacles"]),
    "mono8-source": (["--encoding", "drivable=rle", "--encoding", "obstacle=bitpack", "--mask-size", "source",
                      "--width", "81", "--height", "49"]),
}
FRAMES = 40


@pytest.mark.parametrize("run", list(RUNS))
def test_c_js_and_python_subscribers_decode_the_same_masks(run, clients, model_169, free_tcp_port, tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    node_cmd = [sys.executable, "-m", "perception", "-q", "run", "--model", str(model_169), "--source", "synthetic",
                "--fps", "240", "--queue", "lossless", "--max-frames", str(FRAMES), "--threads", "1", "--warmup", "0",
                "--endpoint", endpoint, "--sndhwm", "100000", "--wait-subscribers", str(len(clients) + 1),
                "--wait-timeout", "60", *RUNS[run]]
    per_frame = len(contracts.MASK_TOPICS) + (len(SYNTHETIC_CLASSES.task_groups["obstacle"])
                                              if "--per-class-obstacles" in RUNS[run] else 0)
    procs = {name: _start(cmd, endpoint, tmp_path / f"{name}.raw", "--namespace", NS, "--duration", "150",
                          "--count", str(FRAMES * per_frame))
             for name, cmd in clients.items()}
    python_masks, info = [], None
    try:
        with MaskSubscriber(endpoint, namespace=NS) as sub:
            node = subprocess.Popen(node_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:
                msg = sub.recv(timeout_s=0.5)
                if msg is None:
                    if node.poll() is not None:
                        break
                    continue
                if msg.kind == "mask":
                    python_masks.append(msg)
            info = sub.info
            _, node_err = node.communicate(timeout=60)
        assert node.returncode == 0, node_err[-2000:]
        results = {name: _finish(proc, name) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert len({m.topic for m in python_masks}) == per_frame and len(python_masks) == FRAMES * per_frame
    assert info is not None
    names = {c["id"]: c["name"] for c in info["classes"]}
    for name, (lines, err) in results.items():
        assert "skipped a message" not in err, f"{name}: {err[-2000:]}"
        kinds = [line["kind"] for line in lines]
        first_mask = kinds.index("mask")
        infos = [line for line in lines[:first_mask] if line["topic"] == f"{NS}/info"]
        assert infos, f"{name}: no <ns>/info before the first mask"
        assert [c["name"] for c in infos[-1]["classes"]] == [c["name"] for c in info["classes"]]
        assert infos[-1]["model_id"] == info["model_id"] and infos[-1]["unknown_id"] == contracts.UNKNOWN_CLASS_ID
        mask_lines = [line for line in lines if line["kind"] == "mask"]
        assert len(mask_lines) == len(python_masks), f"{name}: {len(mask_lines)} masks, Python {len(python_masks)}"
        dump = (tmp_path / f"{name}.raw").read_bytes()
        for line, msg in zip(mask_lines, python_masks, strict=True):
            _assert_same_mask(line, msg, dump, names, where=f"{name} {msg.topic} seq {msg.seq}")


def _assert_same_mask(line: dict, msg, dump: bytes, names: dict[int, str], where: str) -> None:
    h = msg.header
    expected = {
        "topic": msg.topic, "seq": h["seq"], "pub_seq": h["pub_seq"], "capture_ns": str(h["capture_ns"]),
        "publish_ns": str(h["publish_ns"]), "stamp_sec": h["header"]["stamp"]["sec"],
        "stamp_nanosec": h["header"]["stamp"]["nanosec"], "frame_id": h["header"]["frame_id"], "model_id": h["model_id"],
        "height": h["height"], "width": h["width"], "compression": h["compression"], "values": h["values"],
        "source_height": h["source_height"], "source_width": h["source_width"],
        "roi_xywh": [h["roi"][k] for k in ("x_offset", "y_offset", "width", "height")],
        "binning_x": h["binning_x"], "binning_y": h["binning_y"],
    }
    assert {k: line[k] for k in expected} == expected, where
    size = h["height"] * h["width"]
    decoded = dump[line["dump_offset"]: line["dump_offset"] + size]
    assert decoded == msg.data.tobytes(), f"{where}: decoded bytes differ"
    if h["values"] == contracts.VALUES_CLASS_IDS:
        assert line["classes_present"] == [names[i] for i in np.unique(msg.data).tolist()], where


# --------------------------------------------------------------------------------------------
# Hostile and mutated messages
# --------------------------------------------------------------------------------------------

def _mask_message(seq: int, compression: str, values: str = "binary", hw: tuple[int, int] = (5, 7),
                  topic: str = "lane") -> list[bytes]:
    """A valid mask message of a random binary (or class id) mask in ``compression``."""
    rng = np.random.default_rng(seq)
    mask = (rng.integers(0, 2, hw) * 255).astype(np.uint8) if values == "binary" else rng.integers(0, 11, hw).astype(np.uint8)
    codec = next(get_codec(n) for n in contracts.ENCODINGS if get_codec(n).compression == compression)
    header = good_header(height=hw[0], width=hw[1], compression=compression, values=values, seq=seq, pub_seq=seq,
                         geometry=MaskGeometry.full((hw[0] * 2, hw[1] * 2)))
    return [f"{NS}/{topic}".encode(), dump_header(header), codec.encode(mask)]


def _frame_message(seq: int) -> list[bytes]:
    parts = [_mask_message(seq, c) for c in ("none", "rle")]
    head = frame_header(seq=seq, pub_seq=seq, capture_ns=1_700_000_000_000_000_000, publish_ns=1_700_000_000_000_000_001,
                        frame_id="front", masks=["drivable", "lane"])
    return [f"{NS}/frame".encode(), dump_header(head), parts[0][1], parts[0][2], parts[1][1], parts[1][2]]


def _integral_floats(raw: bytes) -> bytes:
    """A compact JSON header with every integer literal written as an integral float, by turns
    ``5.0`` and ``5e0`` (JSON Schema's "integer": a reader takes either as 5)."""
    forms = itertools.cycle((b".0", b"e0"))
    return re.sub(rb"(?<=[:\[,])(-?\d+)(?=[,}\]])", lambda m: m[1] + next(forms), raw)


def _png(rows: int, *, declared: int = 2, width: int = 3, split: bool = False, split_at: int = 5,
         end: bytes = png_chunk(b"IEND", b""), extra: bytes = b"", cut: int = 0, after: bytes = b"",
         next_idat: bytes | None = None) -> bytes:
    """An 8-bit greyscale PNG declaring ``declared`` rows whose image data holds ``rows`` (its IDAT
    split in two at ``split_at`` where ``split``, its zlib stream short of its last ``cut`` bytes
    and followed by ``after`` in the same IDAT, then one more IDAT of ``next_idat`` where given),
    ``extra`` chunks before the IDAT, ending with ``end``."""
    data = zlib.compress(b"".join(b"\0" + bytes([10 * (r + 1)]) * width for r in range(rows)))
    data = data[: len(data) - cut] + after
    idat = (png_chunk(b"IDAT", data[:split_at]) + png_chunk(b"IDAT", data[split_at:]) if split
            else png_chunk(b"IDAT", data))
    if next_idat is not None:
        idat += png_chunk(b"IDAT", next_idat)
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, declared, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + extra + idat + end


def _reader_rule_extras() -> list[tuple[str, list[bytes]]]:
    """More cases of the reader rules than hostile.reader_rule_messages() lists, and JSON that
    cJSON alone takes while Python's json and JSON.parse refuse it (each refused by every reader)."""
    topic, stats = f"{NS}/lane".encode(), f"{NS}/stats".encode()
    good = dump_header(good_header())
    json_head = dump_header(json_header(name="stats", seq=0, publish_ns=1))
    no_version = {k: v for k, v in json.loads(good).items() if k != "wire_version"}

    def header(old: bytes, new: bytes) -> list[bytes]:
        assert old in good
        return [topic, good.replace(old, new, 1), bytes(6)]

    def frame_id(raw: bytes) -> list[bytes]:
        return header(b'"frame_id":"front"', b'"frame_id":"' + raw + b'"')

    frame = frame_message(["lane"])
    png_head = dump_header(good_header(compression="png"))
    info_topic = f"{NS}/info".encode()
    info_head = dump_header(json_header(name="info", seq=0, publish_ns=1))

    def info(classes: str = '[{"id":0,"name":"road","color_rgb":[1,2,3]}]', **fields: str) -> list[bytes]:
        doc = {"wire_version": "2", "model_id": '"m"', "unknown_id": "255", "classes": classes, **fields}
        return [info_topic, info_head, ("{" + ",".join(f'"{k}":{v}' for k, v in doc.items()) + "}").encode()]

    def rgb(value: str) -> list[bytes]:
        return info(f'[{{"id":0,"name":"road","color_rgb":{value}}}]')

    def json_on(name: str) -> list[bytes]:
        return [f"{NS}/{name}".encode(), dump_header(json_header(name=name, seq=0, publish_ns=1)), b"{}"]

    return [
        # png: chunks whole with their CRCs right up to IEND, image data of exactly the declared rows
        ("png with image data of 3 rows under an IHDR of 2", [topic, png_head, _png(3)]),
        ("png with image data of 1 row under an IHDR of 2", [topic, png_head, _png(1)]),
        ("png without IEND", [topic, png_head, _png(2, end=b"")]),
        ("png whose zlib stream is cut short (no Adler-32)", [topic, png_head, _png(2, cut=4)]),
        ("png with a bad CRC in an ancillary chunk", [topic, png_head, _png(2, extra=png_chunk(b"tEXt", b"a\0b")[:-1] + b"\0")]),
        # png: one whole zlib stream, nothing after it in the IDAT data (bytes after IEND stay allowed)
        ("png with a second zlib stream after its own", [topic, png_head, _png(2, after=zlib.compress(bytes(4)))]),
        ("png with a stray byte after its zlib stream", [topic, png_head, _png(2, after=b"\0")]),
        ("png with an IDAT of data after its zlib stream ended", [topic, png_head, _png(2, next_idat=b"\x03\x00")]),
        ("png whose zlib stream lacks its last block's end and checksum", [topic, png_head, _png(2, cut=5)]),
        # 1: duplicate keys anywhere, compared after unescaping
        ("duplicate key in a nested object", header(b'"do_rectify":false', b'"do_rectify":false,"do_rectify":false')),
        ("duplicate key spelled with an escape", header(b'"seq":1', b'"seq":1,"s\\u0065q":1')),
        ("duplicate key in a frame's mask header",
         [*frame[:2], frame[2].replace(b'"seq":1', b'"seq":1,"seq":1'), frame[3]]),
        ("duplicate key in a JSON payload's nested object", [stats, json_head, b'{"a":{"b":1,"b":1}}']),
        # 2: integer fields take integral values only
        ("seq 0.5 in a JSON header", [stats, json_head.replace(b'"seq":0', b'"seq":0.5'), b"{}"]),
        ("header.stamp.sec 1700000000.5", header(b'"sec":1700000000', b'"sec":1700000000.5')),
        ("roi.x_offset 1e-1", header(b'"x_offset":0', b'"x_offset":1e-1')),
        # 3: lone surrogates, in keys too, and as raw UTF-8 bytes
        ("lone surrogate in a JSON payload's key", [stats, json_head, b'{"\\ud800":1}']),
        ("high surrogate before a non-surrogate escape", frame_id(b"\\ud800\\u0041")),
        ("surrogate pair in the wrong order", frame_id(b"\\udc00\\ud800")),
        ("high surrogate ending a string", frame_id(b"ab\\udbff")),
        ("surrogate as raw UTF-8 bytes", frame_id(b"\xed\xa0\x80")),
        ("overlong UTF-8 in a string", frame_id(b"\xc0\xaf")),
        # 4: numbers overflowing to infinity
        ("-1e400 in the header's latency_ms", header(b'"infer":1.0', b'"infer":-1e400')),
        ("1E+400 deep in a JSON payload", [stats, json_head, b'{"a":[1,[2,1E+400]]}']),
        # 6: wire_version not an integer
        ("wire_version missing", [topic, json.dumps(no_version).encode(), bytes(6)]),
        ("wire_version 2.5", header(b'"wire_version":2', b'"wire_version":2.5')),
        ("wire_version null", header(b'"wire_version":2', b'"wire_version":null')),
        # \u0000 in any string, keys included (the C reader cannot keep it; every reader refuses it)
        ("\\u0000 in the header's frame_id", frame_id(b"a\\u0000b")),
        ("\\u0000 in a header key", header(b'"seq":1', b'"seq":1,"x\\u0000":1')),
        ("\\u0000 in a JSON header's name", [stats, json_head.replace(b'"name":"stats"', b'"name":"st\\u0000ats"'), b"{}"]),
        ("\\u0000 in a JSON payload", [stats, json_head, b'{"a":["\\u0000"]}']),
        ("\\u0000 in a JSON payload's key", [stats, json_head, b'{"a":{"\\u0000":1}}']),
        ("\\u0000 in a frame's mask header", [*frame[:2], frame[2].replace(b'"frame_id":"front"', b'"frame_id":"\\u0000"'),
                                           frame[3]]),
        # control characters in topics and frame mask names: C0, DEL, C1, U+2028 and U+2029
        ("topic with U+2028", [f"{NS}/a\u2028b".encode(), good, bytes(6)]),
        ("topic with U+2029", [f"{NS}/a\u2029b".encode(), good, bytes(6)]),
        ("topic with U+009F", [f"{NS}/a\u009fb".encode(), good, bytes(6)]),
        ("frame naming a mask with U+2028", frame_message(["a\u2028b"])),
        ("frame naming a mask with U+2029", frame_message(["obstacle/a\u2029b"])),
        # 7: topic and kind agree (JSON anywhere but on a mask or frame topic)
        ("JSON document on the frame topic", [f"{NS}/frame".encode(), json_head, b"{}"]),
        *[(f"JSON document on <ns>/{name}", json_on(name))
          for name in ("drivable", "obstacle", "class_map", "obstacle/car", "obstacle/stats", "x/lane")],
        ("mask on the info topic", [f"{NS}/info".encode(), good, bytes(6)]),
        ("mask on the obstacles topic", [f"{NS}/obstacles".encode(), good, bytes(6)]),
        ("mask on the frame topic", [f"{NS}/frame".encode(), good, bytes(6)]),
        ("frame on a mask topic", frame_message(["lane"], topic=f"{NS}/lane")),
        # 8: atomic frame mask names
        *[(f"frame naming a mask {name!r}", frame_message([name]))
          for name in ("", "/lane", "lane/", "obstacle//car", "./lane", "obstacle/..", "obstacle/info", "obstacle/frame",
                       "a\x7fb", "a\x85b", "é" * 120)],
        ("frame naming a mask with a number", [frame[0], frame[1].replace(b'"masks":["lane"]', b'"masks":[7]'), *frame[2:]]),
        # the header table's latency_ms: at most 32 finite numbers (Python's reader checked it alone)
        ("latency_ms holding a string", header(b'"infer":1.0', b'"infer":"slow"')),
        ("latency_ms of 33 entries", header(b'"infer":1.0', b",".join(b'"s%d":1' % i for i in range(33)))),
        ("latency_ms 1e13", header(b'"infer":1.0', b'"infer":1e13')),
        # <ns>/info: wire_schema.INFO_SCHEMA, ids unique and not unknown_id
        *[(f"info color_rgb {value}", rgb(value))
          for value in ("[256,0,0]", "[0,-1,0]", "[0,0,1.5]", '["1",2,3]', "[true,0,0]", "[null,0,0]", "[1,2]", "[1,2,3,4]",
                        "{}", '"red"')],
        ("info class without color_rgb", info('[{"id":0,"name":"road"}]')),
        ("info class that is a list", info('[[0,"road",[1,2,3]]]')),
        ("info class id 255", info('[{"id":255,"name":"x","color_rgb":[1,2,3]}]', unknown_id="0")),
        ("info class id equal to unknown_id", info('[{"id":7,"name":"x","color_rgb":[1,2,3]}]', unknown_id="7")),
        ("info class name of 257 characters", info(f'[{{"id":0,"name":"{"é" * 257}","color_rgb":[1,2,3]}}]')),
        ("info class name a number", info('[{"id":0,"name":7,"color_rgb":[1,2,3]}]')),
        ("info of 256 classes", info("[" + ",".join(f'{{"id":{i % 255},"name":"c","color_rgb":[1,2,3]}}'
                                                    for i in range(256)) + "]")),
        ("info wire_version 1000001", info(wire_version="1000001")),
        ("info wire_version 2.5", info(wire_version="2.5")),
        ("info unknown_id 256", info(unknown_id="256")),
        ("info model_id of 257 characters", info(model_id='"' + "m" * 257 + '"')),
        ("info model_id null", info(model_id="null")),
        ("info classes an object", info(classes="{}")),
        ("info that is a list", [info_topic, info_head, b"[]"]),
        # strings of at most 256 characters (not bytes, not UTF-16 units)
        ("frame_id of 257 characters", frame_id("é".encode() * 257)),
        # JSON that cJSON takes and Python's json and JSON.parse refuse
        ("a leading zero", header(b'"seq":1', b'"seq":01')),
        ("bytes after the header", [topic, good + b"x", bytes(6)]),
        ("a form feed as whitespace", [topic, b"\x0c" + good, bytes(6)]),
        ("a raw tab inside a string", frame_id(b"a\tb")),
        ("a UTF-8 byte order mark before the header", [topic, b"\xef\xbb\xbf" + good, bytes(6)]),
        ("1. (a fraction without digits)", header(b'"infer":1.0', b'"infer":1.')),
        ("21-character integer with its sign in a JSON payload", [stats, json_head, b'{"a":-' + b"9" * 20 + b"}"]),
    ]


def _known_bad() -> list[tuple[str, list[bytes]]]:
    """Messages every reader must refuse: issue 15's hostile set (those a namespace subscription
    receives: a topic outside it never reaches the client) plus wrong sizes, geometry and frames."""
    good = _mask_message(1, "none")
    header = json.loads(good[1])

    def with_header(**changes) -> list[bytes]:
        return [good[0], json.dumps({**header, **changes}).encode(), good[2]]

    def recompressed(compression: str, payload: bytes) -> list[bytes]:
        return [good[0], dump_header({**parse(good[1]), "compression": compression}), payload]

    def parse(raw: bytes) -> dict:
        doc = json.loads(raw)
        return {**doc, **{k: int(doc[k]) for k in contracts.NS_FIELDS}}

    frame = _frame_message(4)
    bad = [(name, frames) for name, frames in hostile_messages(with_png_bomb=False) if frames[0].startswith(f"{NS}/".encode())]
    bad += [
        # issue 15's 20000x20000 bomb costs seconds to build; its 2000x2000 sibling meets the same check
        ("png 2000x2000 under a 10x10 header",
         [good[0], dump_header(good_header(height=10, width=10, compression="png")), png_bomb(2000)]),
        ("truncated header", [good[0], good[1][: len(good[1]) // 2], good[2]]),
        ("header is a list", [good[0], b"[1,2]", good[2]]),
        ("not UTF-8 header", [good[0], b"\xff\xfe{}", good[2]]),
        ("two parts", good[:2]),
        ("four parts", [*good, b"x"]),
        ("mono8 oversized payload", [good[0], good[1], good[2] + b"\0"]),
        ("bitpack wrong size", recompressed("bitpack", bytes(3))),
        ("rle runs short of the mask", recompressed("rle", rle_run(0, 34))),
        ("rle runs past the mask", recompressed("rle", rle_run(0, 36))),
        ("png of another size", recompressed("png", get_codec("png").encode(np.zeros((7, 5), np.uint8)))),
        ("png truncated", recompressed("png", get_codec("png").encode(np.zeros((5, 7), np.uint8))[:40])),
        ("wire version 3", with_header(wire_version=3)),
        ("wire version 1 (ns as integers)", with_header(wire_version=1, capture_ns=int(header["capture_ns"]))),
        ("capture_ns as a JSON number", with_header(capture_ns=int(header["capture_ns"]))),
        ("capture_ns of 20 digits", with_header(capture_ns="9" * 20)),
        ("capture_ns beyond 2^63-1", with_header(capture_ns=str(2**63))),
        ("stamp not capture_ns", with_header(header={**header["header"], "stamp": {"sec": 1, "nanosec": 0}})),
        ("roi outside the frame", with_header(roi={**header["roi"], "x_offset": 5})),
        ("binning that does not fit", with_header(binning_x=3.0)),
        ("step != width", with_header(step=8)),
        ("unknown compression", with_header(compression="zstd")),
        ("height 0", with_header(height=0)),
        ("height 16385", with_header(height=16385)),
        ("seq a string", with_header(seq="1")),
        ("seq negative", with_header(seq=-1)),
        ("values unknown", with_header(values="rgb")),
        ("no roi", [good[0], json.dumps({k: v for k, v in header.items() if k != "roi"}).encode(), good[2]]),
        ("frame with a part missing", frame[:-1]),
        ("frame with a mask of another seq", frame[:4] + _mask_message(9, "rle")[1:]),
        ("frame naming a mask twice", [frame[0], json.dumps(json.loads(frame[1]) | {"masks": ["lane", "lane"]}).encode(),
                                       *frame[2:]]),
        ("frame with 70 parts", [*frame, *([b"x"] * 64)]),
        ("info without classes", [f"{NS}/info".encode(), dump_header(json_header(name="info", seq=0, publish_ns=1)),
                                  b'{"wire_version":2,"model_id":"m","unknown_id":255}']),
        ("JSON payload not JSON", [f"{NS}/stats".encode(), dump_header(json_header(name="stats", seq=0, publish_ns=1)),
                                   b"{oops"]),
        *_reader_rule_extras(),
    ]
    return bad


def _mutations(count: int, seed: int) -> list[list[bytes]]:
    """Valid messages with random damage: cut short, bytes changed or inserted, parts dropped or
    repeated. The topic is left alone (a topic outside the subscription never reaches a client)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        kind = rng.choice(("none", "bitpack", "rle", "png", "class_ids", "frame"))
        base = (_frame_message(100 + i) if kind == "frame" else _mask_message(100 + i, "png", "class_ids")
                if kind == "class_ids" else _mask_message(100 + i, kind))
        frames = [bytearray(f) for f in base]
        for _ in range(rng.randint(1, 3)):
            k = rng.randrange(1, len(frames))
            action = rng.choice(("cut", "flip", "insert", "drop", "dup"))
            if action == "cut" and frames[k]:
                del frames[k][rng.randrange(len(frames[k])):]
            elif action == "flip" and frames[k]:
                frames[k][rng.randrange(len(frames[k]))] = rng.randrange(256)
            elif action == "insert":
                at = rng.randrange(len(frames[k]) + 1)
                frames[k][at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 9)))
            elif action == "drop" and len(frames) > 2:
                del frames[k]
            elif action == "dup":
                frames.insert(k, frames[k])
        out.append([bytes(f) for f in frames])
    return out


# What the stderr line of some known-bad messages must say (the reader rules' messages).
REASONS = {
    "duplicate key in the header": "twice in one object",
    "height 2.5 (not an integer)": "'height' is",
    "wire_version as a string": "field 'wire_version' is missing or not an integer",
    "wire_version missing": "field 'wire_version' is missing or not an integer",
    "lone surrogate in the header": "lone UTF-16 surrogate",
    "lone surrogate in a JSON payload's key": "lone UTF-16 surrogate",
    "bitpack class map": "bitpack carries binary masks only",
    "mask on the stats topic": "a name reserved for a JSON document",
    "mask on the frame topic": "a name reserved for atomic frames",
    "JSON document on a mask topic": "JSON document on a topic named 'lane', a mask topic",
    "JSON document on the frame topic": "JSON document on a topic named 'frame', a frame topic",
    "JSON document on <ns>/obstacle/car": "JSON document on a topic named 'car', a mask topic",
    "JSON document on <ns>/x/lane": "a mask topic",
    "\\u0000 in the header's frame_id": "\\u0000 escape",
    "\\u0000 in a header key": "\\u0000 escape",
    "\\u0000 in a JSON payload's key": "\\u0000 escape",
    "\\u0000 in a frame's mask header": "\\u0000 escape",
    "topic with U+2028": "control characters",
    "topic with U+2029": "control characters",
    "frame naming a mask with U+2028": "control characters",
    "frame naming a mask with U+2029": "control characters",
    "png whose zlib stream is cut short (no Adler-32)": "zlib stream is cut short",
    "png with a second zlib stream after its own": "bytes after the end of its zlib stream",
    "png with a stray byte after its zlib stream": "bytes after the end of its zlib stream",
    "png with an IDAT of data after its zlib stream ended": "bytes after the end of its zlib stream",
    "info color_rgb [256,0,0]": "color_rgb [r, g, b] in 0..255",
    "info color_rgb [0,0,1.5]": "color_rgb [r, g, b] in 0..255",
    "info class id equal to unknown_id": "not unknown_id",
    "info of 256 classes": "at most 255",
    "info wire_version 1000001": "outside 0..1000000",
    "info model_id of 257 characters": "longer than 256 characters",
    "duplicate key in a JSON payload": "twice in one object",
    "duplicate key spelled with an escape": "twice in one object",
    "JSON payload number overflowing to infinity": "overflows to infinity",
    "-1e400 in the header's latency_ms": "overflows to infinity",
    "frame naming a mask 'stats'": "reserved",
    "frame naming a mask '../../x'": "'..' part",
    "frame naming a mask with a newline": "control characters",
    "frame naming a mask of 250 characters (a topic over 256 bytes)": "bytes",
    "wire version 3": "wire version 3, this reader speaks version 2",
    "png with image data of 3 rows under an IHDR of 2": "holds more than the 2 rows",
    "png with image data of 1 row under an IHDR of 2": "holds less than the 2 rows",
}


def _accepted_extras(seq: int) -> list[list[bytes]]:
    """Good mask messages that only some readers once took: every integer field written as an
    integral float (2.0, 2e0); a png with tRNS (once refused by the JavaScript reader), PLTE and
    zTXt chunks (ignored by every reader); strings of 200 and 256 characters that are longer in
    bytes (frame_id as raw UTF-8) and in UTF-16 units (model_id, 4-byte characters as escaped
    pairs); a png whose image data is split in two IDAT chunks, with bytes after its IEND; one whose
    zlib stream's checksum is an IDAT of its own, and one with an empty IDAT after its stream; a
    frame_id holding the text \\u0000 (an escaped backslash, not a NUL) and characters that are not
    control characters (U+00A0, U+200B, U+2027)."""
    floats = _mask_message(seq, "rle", topic="good")
    long_strings = _mask_message(seq + 1, "none", topic="good")
    header = json.loads(long_strings[1])
    header["header"]["frame_id"] = "é😀" * 100
    header["model_id"] = "😀" * 256
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    png_head = dump_header(good_header(compression="png", seq=seq + 2))
    escaped = _mask_message(seq + 3, "none", topic="good")
    ancillary = png_chunk(b"tRNS", b"\0\x0a") + png_chunk(b"PLTE", bytes(3)) + png_chunk(b"zTXt", b"k\0\0" + zlib.compress(bytes(10**6)))
    return [[floats[0], _integral_floats(floats[1]), floats[2]],
            [floats[0], png_head, _png(2, extra=ancillary)],
            [long_strings[0], raw.replace("😀".encode() * 256, b"\\ud83d\\ude00" * 256), long_strings[2]],
            [floats[0], png_head, _png(2, split=True, end=png_chunk(b"IEND", b"") + b"after IEND")],
            [floats[0], png_head, _png(2, split=True, split_at=-4)],
            [floats[0], png_head, _png(2, next_idat=b"")],
            [escaped[0], escaped[1].replace(b'"frame_id":"front"', '"frame_id":"a\\\\u0000\u00a0\u200b\u2027"'.encode()),
             escaped[2]]]


def _accepted_json() -> list[list[bytes]]:
    """Good JSON documents: keys repeated only across objects, a surrogate pair, integral floats in
    the header, the text \\u0000 (an escaped backslash); JSON on any topic but a mask or frame one
    (``publish_json`` takes any name), also under a mask topic or with a non-control U+00A0/U+200B
    in its name; <ns>/info documents within wire_schema.INFO_SCHEMA (integral floats in color_rgb,
    other keys, no classes)."""
    json_head = dump_header(json_header(name="stats", seq=0, publish_ns=1))
    stats = f"{NS}/stats".encode()

    def on(name: str, payload: bytes = b'{"a":1}') -> list[bytes]:
        return [f"{NS}/{name}".encode(), dump_header(json_header(name=name, seq=0, publish_ns=1)), payload]

    info = ('{"wire_version":2e0,"model_id":"m","unknown_id":0,"extra":{"k":[1]},"classes":['
            '{"id":1,"name":"road","color_rgb":[0,255.0,2e0],"note":"x"},{"id":254,"name":"car","color_rgb":[255,0,0]}]}')
    return [
        [stats, json_head, b'{"a":{"x":1},"b":{"x":1},"c":"\\ud83d\\ude00","d":[{"x":1},{"x":2}]}'],
        [stats, _integral_floats(json_head), b'{"seq":1e0,"wire_version":-0.0}'],
        [stats, json_head, b'{"a":"\\\\u0000","\\\\u0000":1}'],
        *[on(name) for name in ("sync", "custom", "lane/meta", "obstacle/car/meta", "obstacles/car", "lanes",
                                "sync\u00a0\u2027x")],
        on("info", info.encode()),
        on("info", b'{"wire_version":0,"model_id":"","unknown_id":255,"classes":[]}'),
    ]


def test_clients_survive_hostile_and_mutated_messages(client, free_tcp_port, tmp_path):
    """Every known-bad message is skipped with one stderr line; randomly damaged messages are each
    decoded or skipped, never crash the client; the good masks between them all arrive intact, as
    do good JSON documents (``_accepted_json``)."""
    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    bad = _known_bad()
    goods = [_mask_message(1000 + i, c, v, topic="good") for i, (c, v) in enumerate(
        [("none", "binary"), ("bitpack", "binary"), ("rle", "class_ids"), ("png", "class_ids")] * 3)]
    goods += _accepted_extras(2000)
    docs = _accepted_json()
    mutated = _mutations(300, seed=14)
    stream = goods[:4] + [b for _, b in bad] + goods[4:8] + mutated + goods[8:] + docs
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 0)  # queue everything: the client's pace must not drop a test message
    pub.bind(endpoint)
    # The client ends once nothing has been waiting for 2 s after its last message; SNDHWM 0
    # queues the whole stream at once, so that comes only after it handled everything.
    proc = _start(client, endpoint, tmp_path / "dump.raw", "--namespace", NS, "--duration", "150", "--idle", "2")
    try:
        assert pub.poll(30_000), "the client never subscribed"
        assert pub.recv() == b"\x01" + f"{NS}/".encode()
        for frames in stream:
            pub.send_multipart(frames)
        lines, err = _finish(proc, client[-1])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        pub.close()
        ctx.term()
    skipped = [line for line in err.splitlines() if "skipped a message" in line]
    good_topic = f"{NS}/good"
    at = [i for i, line in enumerate(lines) if line.get("topic") == good_topic]
    assert len(at) == len(goods), f"{len(at)} of {len(goods)} good masks decoded: {err[-1500:]}"
    assert at[4] == at[3] + 1, f"known-bad messages were decoded: {lines[at[3] + 1: at[4]]}"
    # One line each, in order: the first len(bad) skips are the known-bad messages'.
    assert REASONS.keys() <= {name for name, _ in bad}
    for (name, _), line in zip(bad, skipped, strict=False):
        assert REASONS.get(name, "") in line, f"{name}: {line}"
    json_lines = [line for line in lines if line["kind"] == "json"]
    assert [line["topic"] for line in json_lines] == [d[0].decode() for d in docs], err[-1500:]
    assert [c["name"] for c in json_lines[-2]["classes"]] == ["road", "car"] and json_lines[-1]["classes"] == []
    # Every message is either decoded (a frame into its 2 masks) or skipped with one stderr line.
    messages = sum(1 if "frame_pub_seq" not in line else 0.5 for line in lines)
    assert messages + len(skipped) == len(stream), err[-1500:]
    assert len(skipped) >= len(bad)
    dump = (tmp_path / "dump.raw").read_bytes()
    for i, frames in zip(at, goods, strict=True):
        header = json.loads(frames[1])
        codec = next(get_codec(n) for n in contracts.ENCODINGS if get_codec(n).compression == header["compression"])
        expected = codec.decode(frames[2], height=int(header["height"]), width=int(header["width"])).tobytes()
        assert dump[lines[i]["dump_offset"]: lines[i]["dump_offset"] + len(expected)] == expected
        got = {k: lines[i][k] for k in ("height", "width", "seq", "frame_id", "model_id")}
        assert got == {"height": header["height"], "width": header["width"], "seq": header["seq"],
                       "frame_id": header["header"]["frame_id"], "model_id": header["model_id"]}, got


def test_a_late_client_gets_the_latched_info_first(client, free_tcp_port, tmp_path):
    """A client that connects after the node published frames receives <ns>/info (the class table)
    before the next mask, and names the class map's classes with it."""
    from perception.publish import MaskPublisher

    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    classes = [{"id": c.id, "name": c.name, "color_rgb": list(c.color)} for c in SYNTHETIC_CLASSES.classes]
    class_map = np.array([[0, 3, 3], [8, 8, 0]], np.uint8)

    def frame(seq: int) -> None:
        pub.publish_masks(seq=seq, capture_ns=time.time_ns(), frame_id="front", masks={"class_map": class_map},
                          latency_ms={"infer": 1.0}, model_id="tiny")

    with MaskPublisher(endpoint=endpoint, namespace=NS, encodings={"class_map": "png"}) as pub:
        pub.set_info({"wire_version": 2, "frame_id": "front", "model_id": "tiny", "classes": classes, "ignore_id": None,
                      "unknown_id": contracts.UNKNOWN_CLASS_ID, "task_groups": {}, "topics": {}})
        frame(0)  # nobody listens yet
        proc = _start(client, endpoint, tmp_path / "late.raw", "--namespace", NS, "--count", "1", "--duration", "60")
        try:
            assert pub.wait_for_subscribers(1, timeout_s=30), "the client never subscribed"
            frame(1)
            lines, err = _finish(proc, client[-1])
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert [line["topic"] for line in lines] == [f"{NS}/info", f"{NS}/class_map"], err
    assert [c["name"] for c in lines[0]["classes"]] == SYNTHETIC_CLASSES.names
    assert lines[1]["seq"] == 1 and lines[1]["pub_seq"] == 1  # the first frame was sent to nobody: no gap to it here
    assert lines[1]["classes_present"] == [SYNTHETIC_CLASSES.names[i] for i in (0, 3, 8)]


# --------------------------------------------------------------------------------------------
# --topic against an atomic-frames node
# --------------------------------------------------------------------------------------------

def test_an_exact_mask_topic_is_taken_out_of_atomic_frames(client, free_tcp_port, tmp_path):
    """An ``--atomic-frames`` node sends ``<ns>/lane`` only inside ``<ns>/frame``: ``--topic
    <ns>/lane`` also subscribes to that and prints the lane masks alone (a per-class
    ``<ns>/obstacle/car`` likewise, through ``<ns>/frame``), byte for byte as the Python client
    decodes them; ``--topic <ns>/frame`` prints every mask of each frame, once. Topics are exact: a
    camera at ``<ns>/lane2`` shares the prefix of ``<ns>/lane`` and is not printed."""
    from perception.publish import MaskPublisher

    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    frames = 12
    rng = np.random.default_rng(7)
    names = ("drivable", "lane", "obstacle", "class_map", "obstacle/car")
    asked = {"lane": [f"{NS}/lane"], "car": [f"{NS}/obstacle/car"], "whole": [f"{NS}/frame", f"{NS}/lane"]}
    expect = {"lane": {f"{NS}/lane"}, "car": {f"{NS}/obstacle/car"}, "whole": {f"{NS}/{n}" for n in names}}
    # What the publisher counts (since s42 only topics it sends: on this atomic node the masks ride
    # in <ns>/frame): one per mask each client asked for (lane, obstacle/car), one for the client of
    # <ns>/frame (its <ns>/lane adds no topic of its own), plus the Python one.
    subscriptions = 1 + 1 + 1 + 1
    procs: dict[str, subprocess.Popen] = {}
    python_masks = []
    try:
        with MaskPublisher(endpoint=endpoint, namespace=NS, atomic_frames=True, sndhwm=10_000,
                           encodings={"drivable": "bitpack", "lane": "rle", "obstacle": "png", "class_map": "png"}) as pub, \
                MaskSubscriber(endpoint, namespace=NS) as sub:
            other = pub.add_namespace(f"{NS}/lane2")
            procs = {run: _start(client, endpoint, tmp_path / f"{run}.raw", *itertools.chain(*(("--topic", t) for t in topics)),
                                 "--count", str(frames * len(expect[run])), "--duration", "60")
                     for run, topics in asked.items()}
            assert pub.wait_for_subscribers(subscriptions, timeout_s=30), (
                f"{pub.stats()['subscriptions']} of {subscriptions} subscriptions: does each --topic also "
                "subscribe to its frame topics?")
            for seq in range(frames):
                masks = {n: (rng.integers(0, 2, (6, 9)) * 255).astype(np.uint8) for n in names}
                masks["class_map"] = rng.integers(0, 11, (6, 9)).astype(np.uint8)
                other.publish_masks(seq=seq, capture_ns=time.time_ns(), frame_id="lane2", masks={"lane": masks["lane"]},
                                    latency_ms={}, model_id="tiny")
                other.publish_json("stats", {"seq": seq})
                pub.publish_masks(seq=seq, capture_ns=time.time_ns(), frame_id="front", masks=masks, latency_ms={},
                                  model_id="tiny")
            deadline = time.monotonic() + 30
            while len(python_masks) < frames * len(names) and time.monotonic() < deadline:
                msg = sub.recv(timeout_s=0.5)
                if msg is not None and msg.kind == "mask" and not msg.topic.startswith(f"{NS}/lane2/"):
                    python_masks.append(msg)
            results = {run: _finish(proc, f"{client[-1]} --topic {' '.join(asked[run])}") for run, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert len(python_masks) == frames * len(names)
    class_names = {i: f"id{i}" for i in range(256)}  # no <ns>/info: classes are named by id
    for run, (lines, err) in results.items():
        assert "skipped a message" not in err, f"{run}: {err[-1500:]}"
        assert all(line["kind"] == "mask" for line in lines), f"{run}: {[line['topic'] for line in lines]}"
        wanted = [m for m in python_masks if m.topic in expect[run]]
        assert [line["topic"] for line in lines] == [m.topic for m in wanted], run
        dump = (tmp_path / f"{run}.raw").read_bytes()
        for line, msg in zip(lines, wanted, strict=True):
            _assert_same_mask(line, msg, dump, class_names, where=f"{run}: {msg.topic} seq {msg.seq}")
