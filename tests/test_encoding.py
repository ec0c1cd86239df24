"""Payload codecs and message headers: exact round trips, byte layouts, sizes, the ROS mapping."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from perception import contracts
from perception.encoding import ENCODING_REGISTRY, DecodeError, codec_for_compression, get_codec
from perception.errors import ConfigError
from perception.wire import (
    WireError,
    WireVersionError,
    dump_header,
    mask_header,
    parse_header,
    ros_image_fields,
)

SIZES = [(1, 1), (7, 13), (37, 53), (64, 96)]
# sensor_msgs/Image fields (ROS 2), in message order; data is the decoded mask's bytes.
ROS_IMAGE_FIELDS = ["header", "height", "width", "encoding", "is_bigendian", "step", "data"]


def _binary_mask(rng, h, w):
    return (rng.random((h, w)) > 0.6).astype(np.uint8) * 255


def _rle_runs(flat):
    return 1 + sum(1 for a, b in zip(flat[:-1], flat[1:], strict=True) if a != b)


def test_registry_holds_the_contract_encodings():
    assert sorted(ENCODING_REGISTRY.names()) == sorted(contracts.ENCODINGS)
    for name in contracts.ENCODINGS:
        assert codec_for_compression(contracts.COMPRESSION_OF_ENCODING[name]) is get_codec(name)
    with pytest.raises(ConfigError, match=r"unknown encoding 'rel' \(did you mean 'rle'\?\); known: bitpack, mono8, png, rle"):
        get_codec("rel")


@pytest.mark.parametrize("name", contracts.ENCODINGS)
@pytest.mark.parametrize(("h", "w"), SIZES)
def test_binary_masks_round_trip_exactly_with_expected_sizes(name, h, w):
    rng = np.random.default_rng(h * 1000 + w)
    mask = _binary_mask(rng, h, w)
    codec = get_codec(name)
    payload = codec.encode(mask)
    decoded = codec.decode(payload, height=h, width=w)
    assert decoded.dtype == np.uint8 and decoded.shape == (h, w)
    np.testing.assert_array_equal(decoded, mask)
    expected_size = {
        "mono8": h * w,
        "bitpack": math.ceil(h * w / 8),
        "rle": 5 * _rle_runs(mask.reshape(-1).tolist()),
    }.get(name)
    if expected_size is not None:
        assert len(payload) == expected_size
    else:
        assert payload[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["mono8", "rle", "png"])
def test_class_maps_round_trip_exactly(name):
    rng = np.random.default_rng(1)
    # Blocky class map (like real predictions) plus noise, ids 0..10.
    class_map = np.kron(rng.integers(0, 11, (9, 13)), np.ones((5, 7), np.int64)).astype(np.uint8)[:43, :89]
    class_map[rng.random(class_map.shape) > 0.95] = 7
    codec = get_codec(name)
    np.testing.assert_array_equal(codec.decode(codec.encode(class_map), height=43, width=89), class_map)


def test_byte_layouts_are_pinned():
    mask = np.array([[0, 0, 255], [255, 255, 7]], dtype=np.uint8)
    # rle: (value u8, length u32 little-endian) per run over row-major pixels.
    assert get_codec("rle").encode(mask) == bytes([0, 2, 0, 0, 0, 255, 3, 0, 0, 0, 7, 1, 0, 0, 0])
    # bitpack: first pixel in the most significant bit, zero-padded tail.
    binary = np.array([[255, 0, 0, 0, 0, 0, 0, 255, 255]], dtype=np.uint8)
    assert get_codec("bitpack").encode(binary) == bytes([0b10000001, 0b10000000])
    assert get_codec("mono8").encode(mask) == bytes([0, 0, 255, 255, 255, 7])


def test_large_rle_run_lengths_are_little_endian_uint32():
    mask = np.zeros((300, 1000), np.uint8)  # one run of 300000 = 0x000493E0
    assert get_codec("rle").encode(mask) == bytes([0, 0xE0, 0x93, 0x04, 0x00])


@pytest.mark.parametrize(
    ("name", "payload", "message"),
    [
        ("mono8", b"\x00" * 5, "mono8 payload has 5 bytes, 2x3 needs 6"),
        ("bitpack", b"\x00" * 2, "bitpack payload has 2 bytes, 2x3 needs 1"),
        ("rle", b"\x00" * 6, "not a multiple of 5"),
        ("rle", bytes([0, 5, 0, 0, 0]), "rle runs cover 5 pixels, 2x3 needs 6"),
        ("png", b"not a png", "not a readable PNG"),
    ],
)
def test_payloads_that_do_not_fit_the_header_are_rejected(name, payload, message):
    with pytest.raises(DecodeError, match=message):
        get_codec(name).decode(payload, height=2, width=3)


def test_png_of_other_size_is_rejected():
    payload = get_codec("png").encode(np.zeros((4, 5), np.uint8))
    with pytest.raises(DecodeError, match="header says 8-bit greyscale 3x2"):
        get_codec("png").decode(payload, height=2, width=3)


def _png(ihdr_hw: tuple[int, int], rows: bytes, *, cut: int = 0, bad_crc: bool = False, idat_tail: bytes = b"",
         idat_cut: int = 0) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) ^ (1 if bad_crc and kind == b"IDAT" else 0)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", ihdr_hw[1], ihdr_hw[0], 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)[: len(zlib.compress(rows)) - idat_cut] + idat_tail) + chunk(b"IEND", b"")
    return png[: len(png) - cut]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (_png((2, 3), bytes(8), cut=1), "cut short"),
        (_png((2, 3), bytes(8), cut=20), "cut short"),
        (_png((2, 3), bytes(8), bad_crc=True), "chunk has a bad CRC"),
        (_png((2, 3), bytes(4 * 200_000)), "holds more than the 2 rows of 3 pixels"),
        (_png((2, 3), bytes(4)), "holds less than the 2 rows"),
        (_png((2, 3), bytes(8), idat_tail=b"\x00\x01"), "not one whole zlib stream \\(bytes follow its end"),
        (_png((2, 3), bytes(8), idat_cut=4), "not one whole zlib stream \\(its end is missing"),
    ],
)
def test_png_faults_are_refused_before_libpng_sees_them(payload, message, capfd):
    """Each of these made libpng print a line to stderr per message (a hostile stream flooded the
    log past the subscriber's rate-limited warnings); now the decoder names it and prints nothing."""
    assert get_codec("png").decode(_png((2, 3), bytes(8)), height=2, width=3).shape == (2, 3)
    with pytest.raises(DecodeError, match=message):
        get_codec("png").decode(payload, height=2, width=3)
    assert capfd.readouterr().err == ""


def test_encode_rejects_non_mask_arrays():
    with pytest.raises(ValueError, match="2-D uint8"):
        get_codec("mono8").encode(np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="2-D uint8"):
        get_codec("rle").encode(np.zeros((2, 3), np.float32))


def _header(**overrides):
    fields = dict(
        height=360, width=480, compression="bitpack", values="binary", seq=42,
        capture_ns=1_700_000_000_123_456_789, publish_ns=1_700_000_000_130_000_000,
        frame_id="front", model_id="bisenetv2-camvid-360x480-fp32", latency_ms={"infer": 4.25},
    )
    fields.update(overrides)
    return mask_header(**fields)


def test_mask_header_maps_onto_ros_image():
    header = parse_header(dump_header(_header()))
    assert list(header) == list(contracts.HEADER_FIELDS_MASK)
    ros = ros_image_fields(header)
    assert list(ros) == ROS_IMAGE_FIELDS[:-1]
    assert ros == {
        "header": {"stamp": {"sec": 1_700_000_000, "nanosec": 123_456_789}, "frame_id": "front"},
        "height": 360, "width": 480, "encoding": "mono8", "is_bigendian": 0, "step": 480,
    }
    assert header["compression"] == "bitpack" and header["values"] == "binary"
    assert header["seq"] == 42 and header["capture_ns"] == 1_700_000_000_123_456_789
    assert header["wire_version"] == contracts.WIRE_VERSION and header["kind"] == "mask"


def test_int_fields_take_integral_numbers_as_every_reader_does():
    """JSON (and JavaScript) cannot tell 2 from 2.0: an int field takes both, held as an int;
    2.5 and a wire_version that is not a number are malformed, not another wire version."""
    raw = dump_header(mask_header(height=2, width=3, compression="none", values="binary", seq=1, capture_ns=1,
                                  publish_ns=2, frame_id="f", model_id="m", latency_ms={}))
    header = parse_header(raw.replace(b'"height":2', b'"height":2.0').replace(b'"seq":1', b'"seq":1e0'))
    assert (header["height"], header["seq"]) == (2, 1) and type(header["height"]) is int and type(header["seq"]) is int
    with pytest.raises(WireError, match="'height' is 2.5, expected int"):
        parse_header(raw.replace(b'"height":2', b'"height":2.5'))
    with pytest.raises(WireError, match="'wire_version' is '2', expected int") as caught:
        parse_header(raw.replace(b'"wire_version":2', b'"wire_version":"2"'))
    assert not isinstance(caught.value, WireVersionError)


def test_header_from_another_wire_version_is_named():
    doc = _header()
    doc["wire_version"] = contracts.WIRE_VERSION + 1
    with pytest.raises(WireVersionError, match=f"wire version {contracts.WIRE_VERSION + 1}, this reader understands versions 1 and {contracts.WIRE_VERSION}"):
        parse_header(json.dumps(doc).encode())


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[1, 2]", "JSON list, expected an object"),
        (json.dumps({"wire_version": contracts.WIRE_VERSION, "kind": "video"}).encode(), "kind 'video'"),
        (dump_header({**_header(), "height": "360"}), "field 'height' is '360', expected int"),
        (dump_header({**_header(), "step": 100}), "step == width"),
    ],
)
def test_malformed_headers_are_rejected(frame, message):
    with pytest.raises(WireError, match=message):
        parse_header(frame)
