"""Hostile and malformed wire messages, shared by the hardening tests and the fuzz tests.

Each entry of ``hostile_messages()`` is (name, frames); every one must be skipped and counted by a
reader, never raise out of it, and never make it allocate more than a mask of the allowed size.
The ``findings`` are those of issue 15 (each broke a subscriber tool before the fix).
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np

from perception import contracts
from perception.wire import dump_header, frame_header, json_header, mask_header

NS = "perception/front"
TOPIC = f"{NS}/lane"


def good_header(**overrides) -> dict:
    fields = dict(height=2, width=3, compression="none", values="binary", seq=1, capture_ns=1_700_000_000_000_000_000,
                  publish_ns=1_700_000_000_000_000_001, frame_id="front", model_id="m", latency_ms={"infer": 1.0})
    fields.update(overrides)
    return mask_header(**fields)


def good_message(seq: int = 1, topic: str = TOPIC) -> list[bytes]:
    return [topic.encode(), dump_header(good_header(seq=seq)), bytes(6)]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(side: int) -> bytes:
    """A valid all-zero 8-bit greyscale PNG of side x side pixels, a few hundred kB for 20000
    (compressed row by row so the test itself never holds the raw image)."""
    comp = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def rle_run(value: int, length: int) -> bytes:
    return np.array([(value, length)], dtype=contracts.RLE_RUN_DTYPE).tobytes()


def hostile_messages(*, with_png_bomb: bool = True) -> list[tuple[str, list[bytes]]]:
    """The messages of issue 15's findings 2 and 3 and their relatives."""
    deep = b"[" * 100_000 + b"]" * 100_000
    out = [
        ("nested JSON header", [TOPIC.encode(), deep, bytes(6)]),
        ("nested JSON header object", [TOPIC.encode(), b'{"a":' * 50_000 + b"1" + b"}" * 50_000, bytes(6)]),
        ("5,000-digit integer in the header",
         [TOPIC.encode(), dump_header(good_header()).replace(b'"seq":1', b'"seq":' + b"9" * 5000), bytes(6)]),
        ("capture_ns = 10**400", [TOPIC.encode(), json.dumps({**good_header(), "capture_ns": 10**400}).encode(), bytes(6)]),
        ("negative seq", [TOPIC.encode(), dump_header({**good_header(), "seq": -1}), bytes(6)]),
        ("NaN latency", [TOPIC.encode(), dump_header(good_header()).replace(b'"infer":1.0', b'"infer":NaN'), bytes(6)]),
        ("400-character topic", [("x" * 400).encode(), dump_header(good_header()), bytes(6)]),
        ("topic with a newline", [f"{NS}/a\nb".encode(), dump_header(good_header()), bytes(6)]),
        ("rle 5 bytes declaring 40000x25000",
         [TOPIC.encode(), dump_header(good_header(height=25000, width=40000, compression="rle")), rle_run(0, 10**9)]),
        ("rle 5 bytes declaring 16384x16384 (over the pixel limit)",
         [TOPIC.encode(), dump_header(good_header(height=16384, width=16384, compression="rle")), rle_run(0, 16384**2)]),
        ("rle 20 bytes declaring 10**10 pixels",
         [TOPIC.encode(), dump_header(good_header(height=100_000, width=100_000, compression="rle")),
          rle_run(0, 2**32 - 1) * 4]),
        ("rle zero-length run", [TOPIC.encode(), dump_header(good_header(compression="rle")), rle_run(0, 0) + rle_run(0, 6)]),
        ("mono8 short payload", [TOPIC.encode(), dump_header(good_header()), bytes(5)]),
        ("png cut short in its image data", [TOPIC.encode(), dump_header(good_header(height=3, compression="png")),
                                             png_bomb(3)[:40]]),
        ("huge JSON header", [TOPIC.encode(), b'{"x":"' + b"a" * (contracts.MAX_HEADER_BYTES + 1) + b'"}', bytes(6)]),
        ("JSON payload nested", [f"{NS}/stats".encode(), dump_header(json_header(name="stats", seq=0, publish_ns=1)),
                                 b"[" * 100_000]),
        ("JSON payload with a 5,000-digit integer",
         [f"{NS}/stats".encode(), dump_header(json_header(name="stats", seq=0, publish_ns=1)), b"9" * 5000]),
    ]
    out += reader_rule_messages()
    if with_png_bomb:
        out.append(("png 20000x20000 under a 10x10 header",
                    [TOPIC.encode(), dump_header(good_header(height=10, width=10, compression="png")), png_bomb(20000)]))
    return out


def interlaced_png(height: int, width: int) -> bytes:
    """A well-formed Adam7-interlaced 8-bit greyscale PNG of zeros (every pass's rows, each with its filter byte)."""
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes:
        cols, rows = len(range(x0, width, dx)), len(range(y0, height, dy))
        if cols and rows:
            raw += bytes(rows * (cols + 1))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 1)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")


def frame_message(names: list[str], *, seq: int = 1, topic: str = f"{NS}/frame") -> list[bytes]:
    """An atomic frame of 2x3 zero masks named ``names``."""
    head = frame_header(seq=seq, pub_seq=seq, capture_ns=1_700_000_000_000_000_000,
                        publish_ns=1_700_000_000_000_000_001, frame_id="front", masks=list(names))
    parts = [p for _ in names for p in (dump_header(good_header(seq=seq)), bytes(6))]
    return [topic.encode(), dump_header(head), *parts]


def reader_rule_messages() -> list[tuple[str, list[bytes]]]:
    """Messages on which the Python, C and JavaScript readers once disagreed, or which each took
    while the wire format says no (the s28 hunt): every reader must refuse all of them."""
    good = dump_header(good_header())
    stats = f"{NS}/stats".encode()
    json_head = dump_header(json_header(name="stats", seq=0, publish_ns=1))
    return [
        # cJSON takes the first of two equal keys, Python and JSON.parse the last: refused everywhere.
        ("duplicate key in the header", [TOPIC.encode(), good.replace(b"{", b'{"seq":5,', 1), bytes(6)]),
        ("height 2.5 (not an integer)", [TOPIC.encode(), good.replace(b'"height":2', b'"height":2.5'), bytes(6)]),
        ("wire_version as a string", [TOPIC.encode(), good.replace(b'"wire_version":2', b'"wire_version":"2"'), bytes(6)]),
        ("lone surrogate in the header", [TOPIC.encode(), good.replace(b'"frame_id":"front"', b'"frame_id":"\\ud800"'),
                                          bytes(6)]),
        ("NUL escape in the header", [TOPIC.encode(), good.replace(b'"frame_id":"front"', b'"frame_id":"fr\\u0000ont"'),
                                      bytes(6)]),
        ("topic with a Unicode line separator", [f"{NS}/la\u2028ne".encode(), good, bytes(6)]),
        ("bitpack class map", [TOPIC.encode(), dump_header(good_header(values="class_ids", compression="bitpack")),
                               b"\0"]),
        ("interlaced png (Adam7)", [TOPIC.encode(), dump_header(good_header(compression="png")), interlaced_png(2, 3)]),
        ("mask on the stats topic", [stats, good, bytes(6)]),
        ("JSON document on a mask topic", [TOPIC.encode(), json_head, b"{}"]),
        ("duplicate key in a JSON payload", [stats, json_head, b'{"a":1,"a":2}']),
        ("JSON payload number overflowing to infinity", [stats, json_head, b'{"a":1e400}']),
        ("lone surrogate in a JSON payload", [stats, json_head, b'{"a":"\\udc00"}']),
        ("info without classes", [f"{NS}/info".encode(), dump_header(json_header(name="info", seq=0, publish_ns=1)),
                                  b'{"wire_version":2,"model_id":"m","unknown_id":255}']),
        ("info naming a class id twice", [f"{NS}/info".encode(), dump_header(json_header(name="info", seq=0, publish_ns=1)),
                                          b'{"wire_version":2,"model_id":"m","unknown_id":255,"classes":['
                                          b'{"id":0,"name":"a","color_rgb":[1,2,3]},{"id":0,"name":"b","color_rgb":[1,2,3]}]}']),
        ("mask header.stamp not its capture_ns", [TOPIC.encode(), dump_header(good_header()).replace(
            b'"sec":1700000000', b'"sec":1700000001'), bytes(6)]),
        ("frame naming a mask 'stats'", frame_message(["stats"])),
        ("frame naming a mask '../../x'", frame_message(["../../x"])),
        ("frame naming a mask with a newline", frame_message(["a\nFAKE LINE"])),
        ("frame naming a mask of 250 characters (a topic over 256 bytes)", frame_message(["m" * 250])),
    ]
