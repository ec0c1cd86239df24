"""Wire format v2: nanosecond fields exact in every JSON parser, v1 still read, pub_seq accounting,
geometry fields checked like every other header field."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from perception import contracts
from perception.subscribe import Message
from perception.topic_stats import TopicStats
from perception.wire import MaskGeometry, WireError, dump_header, json_header, mask_header, parse_header

CAPTURE_NS = 1_764_622_800_123_456_789  # about 1.8e18: beyond 2**53
PUBLISH_NS = CAPTURE_NS + 7_000_001


def _header(**overrides) -> dict:
    fields = dict(height=3, width=5, compression="none", values="binary", seq=9, pub_seq=4, capture_ns=CAPTURE_NS,
                  publish_ns=PUBLISH_NS, frame_id="front", model_id="m", latency_ms={"infer": 1.0},
                  geometry=MaskGeometry.full((7, 11)))
    fields.update(overrides)
    return mask_header(**fields)


def test_ns_fields_travel_as_decimal_strings_and_come_back_as_ints():
    frame = dump_header(_header())
    raw = json.loads(frame)
    assert raw["wire_version"] == contracts.WIRE_VERSION == 2
    assert raw["capture_ns"] == str(CAPTURE_NS) and raw["publish_ns"] == str(PUBLISH_NS)
    assert all(isinstance(raw[name], str) for name in contracts.NS_FIELDS)
    parsed = parse_header(frame)
    assert parsed["capture_ns"] == CAPTURE_NS and parsed["publish_ns"] == PUBLISH_NS
    assert parsed["header"]["stamp"] == {"sec": CAPTURE_NS // 10**9, "nanosec": CAPTURE_NS % 10**9}
    assert json.loads(dump_header(json_header(name="stats", seq=3, publish_ns=PUBLISH_NS)))["publish_ns"] == str(PUBLISH_NS)


def test_a_double_based_parser_reads_v2_exactly_where_v1_lost_precision():
    """JavaScript's JSON.parse and cJSON hold numbers as IEEE doubles: parse with floats for every
    number, as they do. The v1 integer is rounded; the v2 string is exact."""
    v1 = json.dumps({**_header(), "wire_version": 1}).encode()
    as_double = json.loads(v1, parse_int=float)["capture_ns"]
    assert int(as_double) != CAPTURE_NS  # rounded by 21 ns: 2**53 is about 9.0e15
    v2 = json.loads(dump_header(_header()), parse_int=float)["capture_ns"]
    assert int(v2) == CAPTURE_NS  # a decimal string: JavaScript BigInt(s), C strtoll(s)


def test_node_reads_the_v2_ns_fields_exactly():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node (JavaScript) is not installed; install nodejs to run this check")
    script = (
        "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const h=JSON.parse(s);"
        "console.log(JSON.stringify({v2:BigInt(h.capture_ns).toString(),pub:BigInt(h.publish_ns).toString(),"
        "lossy:BigInt(Math.round(Number(h.capture_ns))).toString()}))})"
    )
    out = subprocess.run([node, "-e", script], input=dump_header(_header()), capture_output=True, check=True, timeout=60)
    got = json.loads(out.stdout)
    assert got["v2"] == str(CAPTURE_NS) and got["pub"] == str(PUBLISH_NS)
    assert got["lossy"] != str(CAPTURE_NS)  # what a plain JSON number would have given


def test_v1_headers_are_still_read_during_the_deprecation_window(caplog):
    v1 = {k: v for k, v in _header().items() if k not in ("pub_seq", "source_height", "source_width", "roi",
                                                            "binning_x", "binning_y")}
    v1["wire_version"] = 1
    parsed = parse_header(json.dumps(v1).encode())  # v1: plain integers
    assert parsed["capture_ns"] == CAPTURE_NS and "pub_seq" not in parsed
    with pytest.raises(WireError, match="capture_ns"):
        parse_header(json.dumps({**v1, "capture_ns": str(CAPTURE_NS)}).encode())  # v1 had integers only


@pytest.mark.parametrize(("field", "value", "match"), [
    ("capture_ns", "12a", "capture_ns"),
    ("capture_ns", "-5", "capture_ns"),
    ("capture_ns", "9" * 20, "capture_ns"),
    ("capture_ns", str(2**63), "outside"),
    ("publish_ns", 1.5, "publish_ns"),
    ("pub_seq", -1, "pub_seq"),
    ("pub_seq", "1", "pub_seq"),
    ("source_width", 0, "source_width"),
    ("roi", {"x_offset": 0, "y_offset": 0, "width": 5, "height": 3}, "roi.do_rectify"),
    ("roi", {"x_offset": -1, "y_offset": 0, "width": 5, "height": 3, "do_rectify": False}, "roi.x_offset"),
    ("binning_x", 0, "binning_x"),
    ("binning_y", "1", "binning_y"),
])
def test_v2_fields_are_checked(field, value, match):
    doc = json.loads(dump_header(_header()))
    doc[field] = value
    with pytest.raises(WireError, match=match):
        parse_header(json.dumps(doc).encode())


def test_geometry_of_a_scaled_mask():
    h = _header(height=48, width=29, geometry=MaskGeometry.full((61, 37)))
    assert (h["source_height"], h["source_width"]) == (61, 37)
    assert h["roi"] == {"x_offset": 0, "y_offset": 0, "width": 37, "height": 61, "do_rectify": False}
    assert h["binning_x"] == pytest.approx(37 / 29) and h["binning_y"] == pytest.approx(61 / 48)


def _msg(seq: int, pub_seq: int | None) -> Message:
    header = {"kind": "mask", "seq": seq, "capture_ns": CAPTURE_NS}
    if pub_seq is not None:
        header["pub_seq"] = pub_seq
    return Message(topic="t", header=header, data=None, wire_bytes=1, receive_ns=CAPTURE_NS)


def test_topic_stats_tell_transport_loss_from_node_drops():
    stats = TopicStats(0.0)
    # seq 0,1 | node dropped 2,3 | 4 | transport lost pub_seq 3 (seq 5) | 6 | node dropped 7 and lost 8 | 9
    for seq, pub_seq in [(0, 0), (1, 1), (4, 2), (6, 4), (9, 6)]:
        stats.add(_msg(seq, pub_seq), 0.0)
    summary = stats.summary(1.0)
    assert summary["missing"] == 5 and summary["lost"] == 2 and summary["node_dropped"] == 3


def test_topic_stats_count_no_gaps_on_the_latched_info_topic():
    info, masks = TopicStats(0.0), TopicStats(0.0)
    for seq, pub_seq in [(0, 0), (2, 2), (5, 5)]:  # re-sent to later subscriptions: numbers skip
        info.add(Message(topic="perception/front/info", header={"kind": "json", "seq": seq, "pub_seq": pub_seq},
                         data={}, wire_bytes=1, receive_ns=CAPTURE_NS), 0.0)
        masks.add(_msg(seq, pub_seq), 0.0)
    assert info.summary(1.0)["missing"] == 0 and info.summary(1.0)["lost"] == 0
    assert masks.summary(1.0)["missing"] == 3 and masks.summary(1.0)["lost"] == 3


def test_topic_stats_count_every_v1_gap_as_lost():
    stats = TopicStats(0.0)
    for seq in (0, 3):
        stats.add(_msg(seq, None), 0.0)
    assert stats.summary(1.0)["lost"] == 2


@pytest.mark.parametrize(("name", "rule"), [
    ("front-left.1", "only letters, digits and '_'"),
    ("1front", "starts with a digit"),
    ("front__left", "repeated underscore"),
    ("", "empty"),
])
def test_camera_names_follow_ros2_naming_rules(name, rule):
    assert rule in contracts.ros_token_error(name)


@pytest.mark.parametrize(("namespace", "rule"), [
    ("perception//front", "repeated '/'"),
    ("perception/front-left", "part 'front-left'"),
    ("perception/2cam", "starts with a digit"),
    ("/", "empty"),
])
def test_namespaces_follow_ros2_naming_rules(namespace, rule):
    assert rule in contracts.ros_namespace_error(namespace)


def test_a_namespace_whose_topics_no_reader_takes_is_refused_before_the_node_starts(capsys):
    """A 240-character namespace (or a 300-character camera name) made topics over the readers'
    256 bytes: every mask of an atomic frame with a per-class obstacle topic was lost. The longest
    namespace leaves room for <ns>/obstacle/<the longest class name>."""
    from perception.cli import main as cli_main

    longest = "n" * contracts.MAX_NAMESPACE_CHARS
    assert contracts.ros_namespace_error(longest) is None
    topic = contracts.topic_name(longest, contracts.PER_CLASS_OBSTACLE_PREFIX + "c" * contracts.MAX_CLASS_NAME)
    assert len(topic.encode()) == contracts.MAX_TOPIC_BYTES
    assert "more than 182" in contracts.ros_namespace_error(longest + "n")
    for flags in (["--namespace", "n" * 240], ["--camera-name", "c" * 300]):
        assert cli_main(["run", *flags, "--max-frames", "1"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "must fit the readers' 256-byte topic limit" in err[0], err


@pytest.mark.parametrize("namespace", ["perception/front", "/perception/front_left_1", "perception/front/"])
def test_valid_ros2_namespaces_pass(namespace):
    assert contracts.ros_namespace_error(namespace) is None and contracts.ros_token_error("front_left_1") is None


def test_listen_prints_transport_loss_and_node_drops_apart():
    from perception.commands.listen import _format_line

    stats = TopicStats(0.0)
    for seq, pub_seq in [(0, 0), (4, 1), (6, 3)]:  # 3 node drops, then 1 transport loss
        stats.add(_msg(seq, pub_seq), 0.0)
    assert "missing 4     (lost 1, node 3)" in _format_line("t", stats.summary(1.0))
