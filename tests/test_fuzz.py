"""Property-based fuzzing of every wire decoder and of the subscriber (hypothesis).

The property is the reader's contract: whatever bytes arrive, ``parse_header``, ``load_json``,
each codec's ``decode``, ``decode_message`` and ``MaskSubscriber.recv`` either return a value that
fits the header or raise WireError / DecodeError, and never anything else (no RecursionError,
ValueError from Python's int limit, OverflowError, MemoryError, cv2.error). Cases are random and
adversarial: arbitrary bytes, arbitrary JSON, valid headers with one field replaced, valid payloads
with bytes flipped, cut or appended.

`make test` runs the "ci" profile (derandomized, 100 cases a test, a few seconds); the long
campaign is ``PERCEPTION_FUZZ=fuzz python -m pytest -q --timeout 0 tests/test_fuzz.py`` (10,000 cases a test;
see tests/conftest.py and the README).
"""

from __future__ import annotations

import json
import time

import numpy as np
import zmq
from hostile import TOPIC, good_header, good_message
from hypothesis import assume, given
from hypothesis import strategies as st

from perception import contracts
from perception.encoding import ENCODING_REGISTRY, DecodeError, get_codec
from perception.subscribe import MaskSubscriber, decode_message
from perception.wire import WireError, dump_header, json_header, load_json, parse_header

READER_ERRORS = (WireError, DecodeError)

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**40), max_value=10**40)
    | st.sampled_from([2**63 - 1, 2**63, -1, 0, 10**400]) | st.floats() | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)


@st.composite
def mutated_bytes(draw, base: bytes) -> bytes:
    """``base`` with a few bytes flipped, deleted, inserted, or cut short / extended."""
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "cut", "extend"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "delete" and data:
            del data[pos]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "cut":
            del data[pos:]
        elif op == "extend":
            data += draw(st.binary(max_size=32))
    return bytes(data)


@st.composite
def mask_headers(draw) -> dict:
    """A valid mask header with some fields replaced by arbitrary JSON values (or removed)."""
    header = good_header(height=draw(st.integers(1, 12)), width=draw(st.integers(1, 12)),
                         compression=draw(st.sampled_from(list(contracts.COMPRESSION_OF_ENCODING.values()))))
    for name in draw(st.lists(st.sampled_from(list(header)), max_size=3)):
        if draw(st.booleans()):
            header[name] = draw(json_values)
        else:
            header.pop(name, None)
    return header


def _dump(doc) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()  # NaN / Infinity on purpose: a reader must refuse them


def _check_header(frame: bytes) -> None:
    try:
        header = parse_header(frame)
    except READER_ERRORS:
        return
    assert isinstance(header, dict) and header["kind"] in (contracts.KIND_MASK, contracts.KIND_JSON)


@given(st.binary(max_size=600))
def test_parse_header_on_arbitrary_bytes(frame):
    _check_header(frame)


@given(json_values)
def test_parse_header_on_arbitrary_json(doc):
    _check_header(_dump(doc))


@given(mask_headers())
def test_parse_header_on_valid_headers_with_fields_replaced(header):
    _check_header(_dump(header))


@given(mutated_bytes(dump_header(good_header())))
def test_parse_header_on_mutated_header_bytes(frame):
    _check_header(frame)


@given(st.integers(1, 2000), st.sampled_from("[{"))
def test_load_json_on_deep_nesting(depth, opener):
    closer = {"[": "]", "{": "}"}[opener]
    body = (opener if opener == "[" else '{"a":') * depth + "0" + closer * depth
    try:
        doc = load_json(body.encode(), max_bytes=contracts.MAX_JSON_PAYLOAD_BYTES, what="doc")
    except WireError:
        assert depth > contracts.MAX_JSON_DEPTH
        return
    assert depth <= contracts.MAX_JSON_DEPTH and doc is not None


@given(st.sampled_from(sorted(ENCODING_REGISTRY)), st.integers(-2, 40), st.integers(-2, 40),
       st.binary(max_size=400))
def test_codecs_on_arbitrary_payloads(name, height, width, payload):
    try:
        mask = get_codec(name).decode(payload, height=height, width=width)
    except DecodeError:
        return
    assert mask.shape == (height, width) and mask.dtype == np.uint8


@st.composite
def encoded_masks(draw):
    name = draw(st.sampled_from(sorted(ENCODING_REGISTRY)))
    codec = get_codec(name)
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    values = [0, 255] if codec.binary_only else draw(st.lists(st.integers(0, 255), min_size=1, max_size=4))
    mask = np.array(draw(st.lists(st.sampled_from(values), min_size=h * w, max_size=h * w)), np.uint8).reshape(h, w)
    return name, mask, codec.encode(mask)


@given(encoded_masks(), st.data())
def test_codecs_round_trip_and_reject_mutated_payloads(case, data):
    name, mask, payload = case
    codec = get_codec(name)
    np.testing.assert_array_equal(codec.decode(payload, height=mask.shape[0], width=mask.shape[1]), mask)
    mutated = data.draw(mutated_bytes(payload))
    h, w = data.draw(st.sampled_from([mask.shape, (mask.shape[1], mask.shape[0]), (mask.shape[0] + 1, mask.shape[1])]))
    try:
        out = codec.decode(mutated, height=h, width=w)
    except DecodeError:
        return
    assert out.shape == (h, w) and out.dtype == np.uint8


@st.composite
def messages(draw) -> list[bytes]:
    """Whole messages: a topic, a (mutated) header and a (mutated) payload, or random frame lists."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.lists(st.binary(max_size=64), max_size=5))
    topic = draw(st.sampled_from([TOPIC.encode(), b"..", b"x" * 300, b"\xff\xfe", b""]) | st.binary(max_size=40))
    if draw(st.booleans()):
        header = mask_headers()
        doc = draw(header)
        frame = _dump(doc)
        h, w = doc.get("height"), doc.get("width")
        sizes_ok = type(h) is int and type(w) is int and 0 < h <= 400 and 0 < w <= 400 and h * w <= 400
        if sizes_ok and doc.get("compression") in contracts.COMPRESSION_OF_ENCODING.values():
            name = {v: k for k, v in contracts.COMPRESSION_OF_ENCODING.items()}[doc["compression"]]
            mask = np.zeros((h, w), np.uint8)
            payload = draw(mutated_bytes(get_codec(name).encode(mask)))
        else:
            payload = draw(st.binary(max_size=200))
    else:
        frame = draw(mutated_bytes(dump_header(json_header(name="stats", seq=1, publish_ns=2))))
        payload = _dump(draw(json_values)) if draw(st.booleans()) else draw(st.binary(max_size=100))
    return [topic, frame, payload]


@given(messages())
def test_decode_message_on_adversarial_messages(frames):
    try:
        msg = decode_message(frames)
    except READER_ERRORS:
        return
    if msg.kind == contracts.KIND_MASK:
        assert msg.data.shape == (msg.header["height"], msg.header["width"])


def test_subscriber_survives_adversarial_messages_over_a_real_socket():
    """The subscriber end to end: fuzzed messages over loopback TCP, each followed by a good one
    that must arrive; every fuzzed message is returned valid or counted, and recv never raises."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.linger = 0
    pub.bind("tcp://127.0.0.1:*")
    endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    sub = MaskSubscriber(endpoint)
    try:
        assert pub.poll(30_000, zmq.POLLIN) and pub.recv()[:1] == b"\x01"
        state = {"sentinel": 0, "sent": 0}

        @given(messages())
        def one_message(frames):
            assume(frames)  # ZeroMQ cannot send an empty multipart message
            state["sentinel"] += 1
            state["sent"] += 1
            pub.send_multipart(frames)
            pub.send_multipart(good_message(seq=state["sentinel"], topic="fuzz/sentinel"))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                msg = sub.recv(timeout_s=1.0)
                if msg is not None and msg.topic == "fuzz/sentinel" and msg.seq == state["sentinel"]:
                    return
            raise AssertionError("the sentinel after a fuzzed message never arrived")

        one_message()
        c = sub.counters
        # Every fuzzed message was either returned or counted as skipped; each sentinel was returned.
        assert c.received - state["sentinel"] + c.malformed + c.version_mismatch == state["sent"]
    finally:
        sub.close()
        pub.close(linger=0)
        ctx.term()
