"""rosbag2 conventions in recordings: ROS 2 topic names, ``offered_qos_profiles`` channel metadata,
the ``ros2`` profile, class maps marked as class ids; read back with rosbags, and replay exact."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from test_record import frame_masks

from perception import contracts
from perception.mcap_layout import (
    CONTENT_HEADER,
    CONTENT_KEY,
    VALUES_KEY,
    WIRE_TOPIC_KEY,
    offered_qos_profiles,
    ros2_topic_name,
)
from perception.mcap_reader import read_recording
from perception.mcap_writer import McapMaskWriter
from perception.subscribe import Message
from perception.wire import mask_header

#: A camera name that is not a legal ROS 2 name token.
WIRE_NS = "perception/front-left.1"
ROS_NS = "/perception/front_left_1"


@pytest.mark.parametrize(
    ("wire", "ros"),
    [
        ("perception/front/lane", "/perception/front/lane"),
        ("perception/front-left.1/lane", "/perception/front_left_1/lane"),
        ("perception/2cam/obstacle/car", "/perception/_2cam/obstacle/car"),
        ("perception//x__y/", "/perception/x_y"),
    ],
)
def test_ros2_topic_names(wire, ros):
    assert ros2_topic_name(wire) == ros


def write_recording(path, n_frames: int = 5) -> None:
    writer = McapMaskWriter(path)
    for seq in range(n_frames):
        for name in ("lane", "class_map"):
            values = contracts.VALUES_CLASS_IDS if name == "class_map" else contracts.VALUES_BINARY
            header = mask_header(height=24, width=32, compression="none", values=values, seq=seq,
                                 capture_ns=10**18 + seq, publish_ns=10**18 + seq + 5, frame_id="cam",
                                 model_id="m", latency_ms={})
            writer.write(Message(f"{WIRE_NS}/{name}", header, frame_masks(seq)[name], 10**18 + seq + 9, seq))
    writer.close({"test": "yes"})


def test_channels_follow_rosbag2_conventions(tmp_path):
    path = tmp_path / "conv.mcap"
    write_recording(path)
    with open(path, "rb") as f:
        reader = make_reader(f)
        assert reader.get_header().profile == "ros2"
        channels = {c.topic: c for c in reader.get_summary().channels.values()}
    assert sorted(channels) == [f"{ROS_NS}/class_map", f"{ROS_NS}/class_map/meta", f"{ROS_NS}/lane", f"{ROS_NS}/lane/meta"]
    for topic, channel in channels.items():
        assert channel.message_encoding == "cdr"
        qos = yaml.safe_load(channel.metadata["offered_qos_profiles"])
        assert qos[0]["reliability"] == 2 and qos[0]["durability"] == 2 and qos[0]["history"] == 1  # best effort, volatile
        assert channel.metadata[WIRE_TOPIC_KEY] == f"{WIRE_NS}/{topic.split('/')[3]}"
        assert (channel.metadata[CONTENT_KEY] == CONTENT_HEADER) == topic.endswith("/meta")
    assert channels[f"{ROS_NS}/class_map"].metadata[VALUES_KEY] == "class_ids"
    assert channels[f"{ROS_NS}/lane"].metadata[VALUES_KEY] == "binary"
    latched = yaml.safe_load(offered_qos_profiles("perception/front/info"))[0]
    assert (latched["reliability"], latched["durability"], latched["depth"]) == (1, 1, 1)


def test_qos_profiles_are_dumped_once_not_per_channel(tmp_path, monkeypatch):
    # A YAML dump for every new channel took half the time of a recording of 40,000 topics.
    from perception import mcap_layout

    dumps = []
    real_dump = yaml.safe_dump
    monkeypatch.setattr(mcap_layout.yaml, "safe_dump", lambda *a, **k: dumps.append(1) or real_dump(*a, **k))
    mcap_layout._qos_yaml.cache_clear()  # a dump an earlier test made is not counted
    writer = McapMaskWriter(tmp_path / "many.mcap")
    header = mask_header(height=2, width=2, compression="none", values=contracts.VALUES_BINARY, seq=0, capture_ns=1,
                         publish_ns=1, frame_id="cam", model_id="m", latency_ms={})
    for i in range(50):
        writer.write(Message(f"perception/cam{i}/lane", header, np.zeros((2, 2), np.uint8), 2, 0))
    writer.close()
    assert len(dumps) == 1  # 100 channels, one profile
    with open(tmp_path / "many.mcap", "rb") as f:
        channels = make_reader(f).get_summary().channels.values()
    # The bytes rosbag2 writes: plain YAML, no anchors (&id001 / *id001) for the repeated durations.
    assert {c.metadata["offered_qos_profiles"] for c in channels} == {
        "- history: 1\n  depth: 0\n  reliability: 2\n  durability: 2\n  deadline:\n    sec: 0\n    nsec: 0\n"
        "  lifespan:\n    sec: 0\n    nsec: 0\n  liveliness: 1\n  liveliness_lease_duration:\n    sec: 0\n    nsec: 0\n"
        "  avoid_ros_namespace_conventions: false\n"}


def test_rosbags_reads_qos_names_and_class_ids(tmp_path):
    rosbags = pytest.importorskip("rosbags.rosbag2", reason="rosbags (dev extra) is not installed")
    from rosbags.typesys import Stores, get_typestore

    path = tmp_path / "conv.mcap"
    write_recording(path)
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    seen = {}
    with rosbags.Reader(path) as bag:
        for connection in bag.connections:
            qos = connection.ext.offered_qos_profiles
            assert len(qos) == 1 and qos[0].reliability.name == "BEST_EFFORT" and qos[0].durability.name == "VOLATILE"
        for connection, _, raw in bag.messages():
            if connection.msgtype == "sensor_msgs/msg/Image":
                image = typestore.deserialize_cdr(raw, connection.msgtype)
                seen.setdefault(connection.topic, []).append(image)
    assert [i.encoding for i in seen[f"{ROS_NS}/class_map"]] == ["8UC1"] * 5
    assert [i.encoding for i in seen[f"{ROS_NS}/lane"]] == ["mono8"] * 5
    np.testing.assert_array_equal(seen[f"{ROS_NS}/class_map"][4].data.reshape(24, 32), frame_masks(4)["class_map"])


def test_replay_keeps_the_wire_topics_and_headers_exact(tmp_path):
    path = tmp_path / "conv.mcap"
    write_recording(path)
    messages = list(read_recording(path))
    assert [(m.topic, m.seq) for m in messages] == [(f"{WIRE_NS}/{n}", s) for s in range(5) for n in ("lane", "class_map")]
    last = messages[-1]
    assert last.header["values"] == "class_ids" and last.header["encoding"] == "mono8"  # the wire header as sent
    assert int(last.header["capture_ns"]) == 10**18 + 4
    np.testing.assert_array_equal(last.data, frame_masks(4)["class_map"])
