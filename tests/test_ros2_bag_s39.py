"""Recordings as a ROS 2 team opens them: one wire topic and one type per ROS 2 channel name, a
split recording's folder is a rosbag2 bag (``metadata.yaml``), each file tells rosbag2 how to read
its QoS, a foreign bag's replay error counts its messages, and a ROS-style namespace with a
leading '/' is refused in one line. Read back with the ``mcap`` library (no rosbags needed)."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader

from perception import contracts
from perception.errors import ConfigError, SourceError
from perception.mcap_layout import WIRE_TOPIC_KEY, offered_qos_profiles, split_path
from perception.mcap_reader import read_recording
from perception.mcap_writer import McapMaskWriter, UnrecordableMessage
from perception.record import RecordConfig
from perception.record_output import BAG_METADATA_FILE, ROSBAG2_RECORD, BagMetadata
from perception.record_splits import SplitWriter
from perception.recover import recover_recording
from perception.subscribe import Message
from perception.wire import json_header, mask_header

README = Path(__file__).resolve().parents[1] / "README.md"
T0 = 1_700_000_000_000_000_000


def mask(topic: str, seq: int, *, t: int | None = None) -> Message:
    t = T0 + seq * 1000 if t is None else t
    header = mask_header(height=4, width=6, compression="none", values=contracts.VALUES_BINARY, seq=seq,
                         capture_ns=t, publish_ns=t + 1, frame_id="front", model_id="m", latency_ms={})
    data = np.full((4, 6), 255 if seq % 2 else 0, np.uint8)
    return Message(topic=topic, header=header, data=data, wire_bytes=100, receive_ns=t + 2)


def document(topic: str, seq: int, doc: dict, *, t: int | None = None) -> Message:
    t = T0 + seq * 1000 if t is None else t
    header = json_header(name=topic.rsplit("/", 1)[1], seq=seq, publish_ns=t + 1)
    return Message(topic=topic, header=header, data=doc, wire_bytes=100, receive_ns=t + 2)


def channels_of(path: Path) -> dict[str, tuple[str, str]]:
    """ROS 2 channel name -> (wire topic, schema name), checking that no name is declared twice."""
    with open(path, "rb") as f:
        summary = make_reader(f).get_summary()
    names = [c.topic for c in summary.channels.values()]
    assert len(names) == len(set(names)), names
    return {c.topic: (c.metadata[WIRE_TOPIC_KEY], summary.schemas[c.schema_id].name)
            for c in summary.channels.values()}


def suffixed(ros_name: str, wire_topic: str) -> str:
    return f"{ros_name}_{hashlib.sha1(wire_topic.encode()).hexdigest()[:8]}"


# --- F1: one wire topic a ROS 2 name --------------------------------------------------------


COLLIDING = ["perception/front/obstacle", "perception/front/obstacle/meta", "perception/front-left/lane",
             "perception/front_left/lane", "perception/front/obstacle/traffic-light",
             "perception/front/obstacle/traffic light"]


def test_colliding_wire_topics_get_distinct_ros_names_and_replay_exact(tmp_path, caplog):
    path = tmp_path / "coll.mcap"
    writer = McapMaskWriter(path)
    with caplog.at_level(logging.WARNING, logger="perception.mcap_writer"):
        for seq in range(3):
            for topic in COLLIDING:
                writer.write(mask(topic, seq))
    writer.close()
    channels = channels_of(path)
    # Every ROS 2 name holds one wire topic and one type (the headers on <name>/meta).
    by_wire = {}
    for name, (wire, schema) in channels.items():
        if name.endswith("/meta") and schema == "std_msgs/msg/String" and channels.get(name[:-5], ("",))[0] == wire:
            continue
        assert schema == "sensor_msgs/msg/Image", (name, schema)
        by_wire[wire] = name
    assert by_wire == {
        "perception/front/obstacle": "/perception/front/obstacle",
        # a class named "meta" would be the obstacle topic's header channel
        "perception/front/obstacle/meta": suffixed("/perception/front/obstacle/meta", "perception/front/obstacle/meta"),
        "perception/front-left/lane": "/perception/front_left/lane",  # first come keeps the plain name
        "perception/front_left/lane": suffixed("/perception/front_left/lane", "perception/front_left/lane"),
        "perception/front/obstacle/traffic-light": "/perception/front/obstacle/traffic_light",
        "perception/front/obstacle/traffic light": suffixed("/perception/front/obstacle/traffic_light",
                                                            "perception/front/obstacle/traffic light"),
    }
    warnings = [r.getMessage() for r in caplog.records if "is recorded on the ROS 2 topic" in r.getMessage()]
    assert len(warnings) == 3, warnings  # once a renamed topic, not once a message
    assert any("'perception/front/obstacle/meta'" in w and "wire-header channel" in w for w in warnings)
    assert any("'perception/front_left/lane'" in w and "'perception/front-left/lane'" in w for w in warnings)
    # replay reads the wire topics from the channel metadata: nothing merged, nothing lost
    got = {}
    for m in read_recording(path):
        got.setdefault(m.topic, []).append(m.seq)
    assert got == {topic: [0, 1, 2] for topic in COLLIDING}


def split_config(out: Path, **extra) -> RecordConfig:
    return RecordConfig(out=out, topic=["perception/front/lane"], split_size=1000, **extra)


def no_metadata(split=None, file_counts=None) -> dict[str, str]:
    return {}


def write_splits(out: Path, batches: list[list[Message]], **extra) -> SplitWriter:
    """One SplitWriter run, a new split for each batch after the first."""
    writer = SplitWriter(split_config(out, **extra), no_metadata)
    try:
        for i, batch in enumerate(batches):
            if i:
                writer._opened = -1e9  # the split's duration is up: the next message starts a new one
                writer.config.split_duration = 1.0
            for msg in batch:
                writer.write(msg)
        writer.close()
    finally:
        writer.release()
    return writer


def test_a_renamed_topic_keeps_its_name_in_every_split_and_after_append(tmp_path):
    out = tmp_path / "bag" / "run.mcap"
    a, b = "perception/front-left/lane", "perception/front_left/lane"
    write_splits(out, [[mask(a, 0), mask(b, 0)], [mask(b, 1), mask(a, 1)]])
    # a later --append run hears them the other way round: the names stay
    write_splits(out, [[mask(b, 2), mask(a, 2)]], append=True)
    files = [split_path(out, i) for i in range(3)]
    assert all(f.is_file() for f in files)
    for f in files:
        names = {wire: name for name, (wire, _) in channels_of(f).items() if not name.endswith("/meta")}
        assert names == {a: "/perception/front_left/lane", b: suffixed("/perception/front_left/lane", b)}, f


def test_a_topic_cannot_change_type_from_one_split_to_the_next(tmp_path):
    out = tmp_path / "run.mcap"
    writer = SplitWriter(split_config(out), no_metadata)
    try:
        writer.write(mask("perception/front/x", 0))
        writer._opened, writer.config.split_duration = -1e9, 1.0
        writer.write(mask("perception/front/lane", 1))  # starts split 1
        assert len(writer.paths) == 2
        with pytest.raises(UnrecordableMessage, match="perception/front/x is recorded as sensor_msgs/msg/Image"):
            writer.write(document("perception/front/x", 1, {"a": 1}))
        writer.close()
    finally:
        writer.release()


# --- F2: a split recording's folder is a rosbag2 bag ------------------------------------------


def bag_info(folder: Path) -> dict:
    text = (folder / BAG_METADATA_FILE).read_text()
    assert "&id" not in text and "*id" not in text  # no YAML anchors: rosbag2 writes none
    return yaml.safe_load(text)["rosbag2_bagfile_information"]


def read_as_one_bag(folder: Path) -> dict:
    """Open the bag as rosbag2 does: metadata.yaml's files, in order, each through the mcap reader;
    check every figure metadata.yaml gives against the files themselves."""
    info = bag_info(folder)
    assert info["version"] == 8 and info["storage_identifier"] == "mcap"
    assert info["compression_mode"] == "" and info["compression_format"] == ""
    topics = {t["topic_metadata"]["name"]: t for t in info["topics_with_message_count"]}
    counts: dict[str, int] = {}
    times = []
    for rel, entry in zip(info["relative_file_paths"], info["files"], strict=True):
        assert entry["path"] == rel
        with open(folder / rel, "rb") as f:
            reader = make_reader(f)
            summary = reader.get_summary()
            file_times = []
            for schema, channel, message in reader.iter_messages():
                meta = topics[channel.topic]["topic_metadata"]  # every channel is listed ...
                assert meta["type"] == schema.name and meta["serialization_format"] == "cdr"  # ... with its type
                assert meta["offered_qos_profiles"] == channel.metadata["offered_qos_profiles"]
                counts[channel.topic] = counts.get(channel.topic, 0) + 1
                file_times.append(message.log_time)
        assert entry["message_count"] == len(file_times) == summary.statistics.message_count
        assert entry["starting_time"]["nanoseconds_since_epoch"] == min(file_times)
        assert entry["duration"]["nanoseconds"] == max(file_times) - min(file_times)
        times += file_times
    assert {name: t["message_count"] for name, t in topics.items()} == counts
    assert info["message_count"] == sum(counts.values())
    assert info["starting_time"]["nanoseconds_since_epoch"] == min(times)
    assert info["duration"]["nanoseconds"] == max(times) - min(times)
    for t in topics.values():  # the QoS string reads as rosbag2's profile list
        assert yaml.safe_load(t["topic_metadata"]["offered_qos_profiles"])[0]["history"] == 1
    return {"files": info["relative_file_paths"], "counts": counts}


INFO = {"wire_version": 2, "model_id": "m", "unknown_id": 255, "classes": [{"id": 0, "name": "road", "color_rgb": [1, 2, 3]}]}


def test_split_folder_is_one_rosbag2_bag_kept_true_by_append_and_recover(tmp_path):
    folder = tmp_path / "bag"
    out = folder / "run.mcap"
    lane, info = "perception/front/lane", "perception/front/info"
    first = write_splits(out, [[document(info, 0, INFO), mask(lane, 0)], [mask(lane, 1)], [mask(lane, 2)]])
    assert first.paths == [split_path(out, i) for i in range(3)]
    bag = read_as_one_bag(folder)
    assert bag["files"] == ["run_0.mcap", "run_1.mcap", "run_2.mcap"]
    # the latched info is written again at each split's start, as the files hold it
    assert bag["counts"]["/perception/front/lane"] == 3 and bag["counts"]["/perception/front/info"] == 3
    assert bag["counts"]["/perception/front/lane/meta"] == 3

    # --append: the new splits join the bag
    write_splits(out, [[mask(lane, 3)]], append=True)
    assert read_as_one_bag(folder)["files"] == [f"run_{i}.mcap" for i in range(4)]

    # a recorder killed inside split 4: not listed (indexed readers refuse it) until --recover rebuilds it
    killed = McapMaskWriter(split_path(out, 4), chunk_size=256)
    for seq in range(4, 10):
        killed.write(mask(lane, seq))
    killed.abandon()
    BagMetadata(out).update()  # as a recorder or --recover writes it now
    assert read_as_one_bag(folder)["files"] == [f"run_{i}.mcap" for i in range(4)]
    summary = recover_recording(split_path(out, 4))
    assert f"{folder / BAG_METADATA_FILE} lists it now (5 splits" in summary.format()
    bag = read_as_one_bag(folder)
    assert bag["files"] == [f"run_{i}.mcap" for i in range(5)]
    assert bag["counts"]["/perception/front/lane"] == 4 + summary.wire_messages


def test_unsplit_recordings_get_no_metadata_and_overwrite_removes_a_stale_one(tmp_path):
    folder = tmp_path / "bag"
    out = folder / "run.mcap"
    write_splits(out, [[mask("perception/front/lane", 0)], [mask("perception/front/lane", 1)]])
    assert (folder / BAG_METADATA_FILE).is_file()
    # an unsplit recording over it (--overwrite) removes the old splits and their metadata.yaml
    writer = SplitWriter(RecordConfig(out=out, topic=["perception/front/lane"], overwrite=True), no_metadata)
    try:
        writer.write(mask("perception/front/lane", 5))
        writer.close()
    finally:
        writer.release()
    assert sorted(p.name for p in folder.iterdir()) == ["run.mcap"]


def test_a_foreign_metadata_yaml_is_left_alone_with_one_warning(tmp_path, caplog):
    folder = tmp_path / "bag"
    folder.mkdir()
    foreign = "rosbag2_bagfile_information:\n  version: 5\n  relative_file_paths: [other_0.db3]\n"
    (folder / BAG_METADATA_FILE).write_text(foreign)
    with caplog.at_level(logging.WARNING, logger="perception.record_output"):
        write_splits(folder / "run.mcap", [[mask("perception/front/lane", i)] for i in range(3)])
    assert (folder / BAG_METADATA_FILE).read_text() == foreign
    lines = [r.getMessage() for r in caplog.records if BAG_METADATA_FILE in r.getMessage()]
    assert len(lines) == 1 and "is left as it is" in lines[0] and "a folder of its own" in lines[0], lines


def test_a_recording_that_received_nothing_leaves_the_bag_as_it_was(tmp_path):
    folder = tmp_path / "bag"
    out = folder / "run.mcap"
    write_splits(out, [[mask("perception/front/lane", 0)], [mask("perception/front/lane", 1)]])
    before = (folder / BAG_METADATA_FILE).read_text()
    writer = SplitWriter(split_config(out, append=True), no_metadata)  # opens run_2.mcap at once
    try:
        writer.close()
        writer.remove()  # nothing came: what the recorder does
    finally:
        writer.release()
    assert not split_path(out, 2).exists()
    assert (folder / BAG_METADATA_FILE).read_text() == before


def test_every_file_tells_rosbag2_its_metadata_version(tmp_path):
    """rosbag2's MCAP storage reads a file's channel QoS by the version of its 'rosbag2' record;
    without one, Jazzy reads the numbers as policy names (unknown policies)."""
    path = tmp_path / "one.mcap"
    writer = McapMaskWriter(path)
    for seq in range(3):
        writer.write(mask("perception/front/lane", seq))
    writer.close()
    killed = McapMaskWriter(tmp_path / "killed.mcap", chunk_size=256)
    for seq in range(6):
        killed.write(mask("perception/front/lane", seq))
    killed.abandon()  # a killed recorder writes no records at the end ...
    recover_recording(tmp_path / "killed.mcap")  # ... and --recover adds it
    for file in (path, tmp_path / "killed.mcap"):
        with open(file, "rb") as f:
            reader = make_reader(f)
            records = [m for m in reader.iter_metadata() if m.name == ROSBAG2_RECORD]
            stats = reader.get_summary().statistics
        assert len(records) == 1, file
        meta = yaml.safe_load(records[0].metadata["serialized_metadata"])
        assert meta["version"] == 8 and meta["storage_identifier"] == "mcap"
        assert meta["message_count"] == stats.message_count
        assert meta["starting_time"]["nanoseconds_since_epoch"] == stats.message_start_time
        assert meta["duration"]["nanoseconds"] == stats.message_end_time - stats.message_start_time
        assert meta["relative_file_paths"] == [file.name]
        # every key rosbag2 decodes for version 8 is there
        assert {"topics_with_message_count", "compression_format", "compression_mode", "files", "custom_data",
                "ros_distro"} <= set(meta)


def test_qos_profiles_are_plain_yaml_without_anchors():
    text = offered_qos_profiles("perception/front/lane")
    assert "&" not in text and "*" not in text
    assert yaml.safe_load(text) == [{
        "history": 1, "depth": 0, "reliability": 2, "durability": 2, "deadline": {"sec": 0, "nsec": 0},
        "lifespan": {"sec": 0, "nsec": 0}, "liveliness": 1, "liveliness_lease_duration": {"sec": 0, "nsec": 0},
        "avoid_ros_namespace_conventions": False}]


# --- F4: a foreign bag's replay error counts its messages ---------------------------------------


def test_replay_of_a_foreign_bag_counts_all_its_messages(tmp_path):
    from mcap.writer import Writer

    from perception.mcap_layout import IMAGE_MSGDEF

    path = tmp_path / "foreign.mcap"
    with open(path, "wb") as f:
        writer = Writer(f)
        writer.start(profile="ros2", library="another tool")
        schema = writer.register_schema("sensor_msgs/msg/Image", "ros2msg", IMAGE_MSGDEF.encode())
        channel = writer.register_channel("/perception/front/lane", "cdr", schema,
                                          {"offered_qos_profiles": offered_qos_profiles("perception/front/lane")})
        from mcap_ros2._dynamic import serialize_dynamic

        encode = serialize_dynamic("sensor_msgs/msg/Image", IMAGE_MSGDEF)["sensor_msgs/msg/Image"]
        for i in range(5):  # as rosbag2 writes them: every sequence 0
            image = {"header": {"stamp": {"sec": 1, "nanosec": i}, "frame_id": "front"}, "height": 1, "width": 1,
                     "encoding": "mono8", "is_bigendian": 0, "step": 1, "data": b"\x00"}
            writer.add_message(channel, log_time=T0 + i, data=encode(image), publish_time=T0 + i, sequence=0)
        writer.finish()
    with pytest.raises(SourceError, match=r"not a perception recording: its 5 messages on /perception/front/lane "):
        list(read_recording(path))


# --- F5: a namespace with a leading '/' ---------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["run", "--source", "synthetic", "--namespace", "/perception/front", "--max-frames", "1"],
    ["record", "--namespace", "/perception/front", "--out", "x.mcap", "--duration", "1"],
    ["record", "--topic", "/perception/front/lane", "--out", "x.mcap", "--duration", "1"],
    ["listen", "--namespace", "/perception/front", "--duration", "1"],
    ["listen", "--topic", "/perception/front/lane", "--duration", "1"],
    ["view", "--endpoint", "tcp://127.0.0.1:1", "--namespace", "/perception/front", "--duration", "1"],
])
def test_a_leading_slash_is_refused_in_one_line_with_the_fix(tmp_path, capsys, monkeypatch, args):
    from perception.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "starts with '/'" in err and "drop the leading '/'" in err and "'perception/front" in err, err
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_a_publisher_refuses_a_leading_slash_too():
    from perception.publish import MaskPublisher

    with pytest.raises(ConfigError, match=r"drop the leading '/': 'perception/front'"):
        MaskPublisher(endpoint="tcp://127.0.0.1:1", namespace="/perception/front")


# --- README -----------------------------------------------------------------------------------


def test_readme_renaming_examples_are_what_the_recorder_writes():
    text = " ".join(README.read_text().split())
    assert "front-left.1" not in text  # a camera name 'perception run' refuses
    example = re.search(r"`(/perception/front/obstacle/traffic_light_[0-9a-f]{8})`", text).group(1)
    assert example == suffixed("/perception/front/obstacle/traffic_light", "perception/front/obstacle/traffic light")
    # the wire section and the recording section say the same of the class map's ROS encoding
    assert "writes `\"8UC1\"` for `class_map`" in text and "`8UC1` for `class_map`" in text
