"""The README's wire-format statements that an outside client depends on (hunt s37 h13), checked
against a real node (``Pipeline`` with the tiny model) and a plain ZeroMQ SUB socket, as a client in
another language would read it:

- ``obstacles``: the payload's ``seq`` is the frame's ``seq`` (that of the masks of the same frame)
  and its ``capture_ns`` is a JSON number equal to their ``capture_ns``; the JSON header's ``seq``
  counts the documents sent, so it is not the frame's.
- Subscribing to the whole name ``<ns>/obstacle`` (a byte prefix) also delivers ``<ns>/obstacles`` and
  every ``<ns>/obstacle/<class>``; the Python reader's exact topics keep only the one asked for.
- ``info.topics[...].encoding`` is the ``--encoding`` name, while every mask header says ``mono8``;
  ``info.geometry`` holds ``source_hw`` and ``mask_hw`` ([height, width]) matching the headers.
- ``binning_*`` are rounded to 9 decimals, and readers accept
  ``|binning * size - roi| <= 1e-6 * roi + 1e-6 + 1e-9 * size``.
- An atomic frame on ``<ns>/frame`` holds every mask topic, whatever else the client subscribed to.
"""

from __future__ import annotations

import json
import time

import pytest
import zmq

from perception import contracts
from perception.pipeline import Pipeline
from perception.publish import MaskPublisher
from perception.run_config import RunConfig
from perception.sources import open_source
from perception.subscribe import MaskSubscriber
from perception.wire import MaskGeometry, WireError, dump_header, mask_header, parse_header

NS = "perception/test"
#: A hang guard for the receive loops (not a timed assert: a healthy run ends far sooner).
GIVE_UP_S = 60.0


def _sub(endpoint: str, *prefixes: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    for prefix in prefixes:
        sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
    return sock


def _recv(sock: zmq.Socket) -> list[bytes] | None:
    return sock.recv_multipart() if sock.poll(200) else None


def _start(config: RunConfig, engine, pub: MaskPublisher, *, paced: bool) -> Pipeline:
    source = open_source("synthetic", config.source_options)
    if not paced:
        source.pace(None)
    pipeline = Pipeline(config, source=source, engine=engine, publisher=pub)
    pipeline.start()  # returns once wait_subscribers subscriptions arrived and the threads run
    return pipeline


def test_obstacles_pair_with_masks_by_payload_seq_and_obstacle_is_a_prefix_of_longer_topics(tiny_engine):
    encodings = {"lane": "rle", "drivable": "bitpack", "class_map": "png"}
    exact = None
    with MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, sndhwm=10_000, encodings=encodings) as pub:
        sock = _sub(pub.endpoint, f"{NS}/lane")
        # 100 x 70 frames into the 48 x 64 (height x width) model: 45 x 64 masks, binning 100/64 and 70/45.
        config = RunConfig.from_settings(source="synthetic", queue="lossless", max_frames=3000, width=100, height=70,
                                         fps=30, warmup=0, per_class_obstacles=True, wait_subscribers=1,
                                         encoding=encodings)
        pipeline = _start(config, tiny_engine, pub, paced=True)
        try:
            topics: dict[str, list[tuple[dict, bytes]]] = {}
            exact_topics: list[str] = []
            info = None
            subscribed_more = False
            deadline = time.monotonic() + GIVE_UP_S
            while time.monotonic() < deadline and (len(topics.get(f"{NS}/obstacles", [])) < 3 or len(exact_topics) < 3):
                if exact is not None:
                    while (msg := exact.recv(timeout_s=0)) is not None:
                        exact_topics.append(msg.topic)
                parts = _recv(sock)
                if parts is None:
                    continue
                topic, header = parts[0].decode(), json.loads(parts[1])
                topics.setdefault(topic, []).append((header, parts[2]))
                if topic == f"{NS}/info":
                    info = json.loads(parts[2])
                if not subscribed_more and topic == f"{NS}/lane" and header["seq"] >= 2:
                    # Frames 0..2 went out while nobody asked for obstacles: none were sent.
                    sock.setsockopt(zmq.SUBSCRIBE, f"{NS}/obstacle".encode())
                    sock.setsockopt(zmq.SUBSCRIBE, f"{NS}/info".encode())
                    # And the Python reader, asked for the exact topic <ns>/obstacle.
                    exact = MaskSubscriber(pub.endpoint, topics=[f"{NS}/obstacle"])
                    subscribed_more = True
        finally:
            pipeline.stop()
            pipeline.finish()
            sock.close()
            if exact is not None:
                exact.close()
    docs = topics.get(f"{NS}/obstacles", [])
    # At least 3 (the loop goes on until the exact reader has 3 too)
    assert len(docs) >= 3, f"obstacles documents received: {len(docs)}; topics: {sorted(topics)}"
    assert info is not None
    per_class = {f"{NS}/obstacle/{name}" for name in info["task_groups"]["obstacle"]}
    # The whole name <ns>/obstacle is a byte prefix: the JSON document and every per-class mask came too.
    assert set(topics) == {f"{NS}/lane", f"{NS}/info", f"{NS}/obstacle", f"{NS}/obstacles", *per_class}
    # The Python reader's exact topic keeps only the topic asked for.
    assert len(exact_topics) >= 3 and set(exact_topics) == {f"{NS}/obstacle"}
    masks = {h["seq"]: h for h, _ in topics[f"{NS}/obstacle"]}
    for i, (header, payload) in enumerate(docs):
        doc = json.loads(payload)
        # The header's seq (and pub_seq) count the documents; the payload's seq is the frame's.
        assert header["kind"] == "json" and header["seq"] == header["pub_seq"] == i
        assert "capture_ns" not in header
        assert doc["seq"] >= 3 and doc["seq"] in masks
        # capture_ns in the payload is a JSON number (an int here), equal to the masks' decimal string.
        assert isinstance(doc["capture_ns"], int) and b'"capture_ns":"' not in payload
        assert doc["capture_ns"] == int(masks[doc["seq"]]["capture_ns"])
        assert doc["image_hw"] == [masks[doc["seq"]]["height"], masks[doc["seq"]]["width"]]
    assert docs[0][0]["seq"] == 0 and json.loads(docs[0][1])["seq"] != 0

    # info.topics: encoding is the --encoding name; the headers' encoding is always mono8.
    compression = contracts.COMPRESSION_OF_ENCODING
    for name, enc in {"lane": "rle", "obstacle": "mono8", **{t.split("/", 2)[2]: "mono8" for t in per_class}}.items():
        entry = info["topics"][f"{NS}/{name}"]
        assert (entry["encoding"], entry["compression"]) == (enc, compression[enc])
    assert info["topics"][f"{NS}/drivable"]["encoding"] == "bitpack"
    assert info["topics"][f"{NS}/class_map"]["encoding"] == "png"
    assert info["topics"][f"{NS}/obstacles"] == {"kind": "json", "encoding": "json"}
    lane = topics[f"{NS}/lane"][-1][0]
    assert lane["encoding"] == "mono8" and lane["compression"] == "rle"
    # info.geometry: source_hw and mask_hw are [height, width], as the headers' sizes say.
    geometry = info["geometry"]
    assert geometry["source_hw"] == [lane["source_height"], lane["source_width"]] == [70, 100]
    assert geometry["mask_hw"] == [lane["height"], lane["width"]] == [45, 64]
    assert info["input_hw"] == [48, 64]
    # binning: roi / mask size rounded to 9 decimals (70 / 45 does not terminate).
    assert (lane["binning_x"], lane["binning_y"]) == (round(100 / 64, 9), round(70 / 45, 9)) == (1.5625, 1.555555556)
    assert lane["binning_y"] * lane["height"] != lane["roi"]["height"]


def _header(binning_y: float) -> bytes:
    header = mask_header(height=45, width=64, compression="none", values="binary", seq=0, capture_ns=1, publish_ns=1,
                         frame_id="f", model_id="m", latency_ms={}, geometry=MaskGeometry.full((70, 100)))
    return dump_header({**header, "binning_y": binning_y})


@pytest.mark.parametrize(("binning_y", "ok"), [
    (1.555555556, True),  # what the node sends: 70 / 45 rounded to 9 decimals
    (70 / 45, True),  # the exact ratio
    ((70 + 1e-6 * 70 + 0.5e-6) / 45, True),  # inside |binning * size - roi| <= 1e-6 * roi + 1e-6 + 1e-9 * size
    ((70 + 1e-6 * 70 + 2e-6) / 45, False),  # outside it
    (1.5556, False),  # 4 decimals: 45 x 1.5556 = 70.002
])
def test_binning_tolerance_the_readme_gives(binning_y, ok):
    assert MaskGeometry.full((70, 100)).fields(45, 64)["binning_y"] == 1.555555556
    if ok:
        assert parse_header(_header(binning_y))["binning_y"] == binning_y
    else:
        with pytest.raises(WireError, match="binning_y"):
            parse_header(_header(binning_y))


def test_a_mask_far_larger_than_its_frame_keeps_its_rounded_binning_readable():
    # A 1-pixel-high frame upscaled to a 4041-row mask: 1 / 4041 rounded to 9 decimals is off by
    # 4.5e-10 a row, 1.8e-6 over the mask, past 1e-6 * roi + 1e-6 alone (every reader refused it).
    header = mask_header(height=4041, width=8, compression="none", values="binary", seq=0, capture_ns=1,
                         publish_ns=1, frame_id="f", model_id="m", latency_ms={}, geometry=MaskGeometry.full((1, 8)))
    assert header["binning_y"] == round(1 / 4041, 9)
    assert parse_header(dump_header(header))["height"] == 4041


def test_an_atomic_frame_holds_every_mask_whatever_else_was_subscribed(tiny_engine):
    with MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, sndhwm=10_000, atomic_frames=True) as pub:
        # A client asking for <ns>/frame and one mask by name: each frame still holds all of them.
        sock = _sub(pub.endpoint, f"{NS}/frame", f"{NS}/lane", f"{NS}/info")
        config = RunConfig.from_settings(source="synthetic", queue="lossless", max_frames=2, width=96, height=72,
                                         warmup=0, wait_subscribers=2, atomic_frames=True)  # lane (in frame), info
        pipeline = _start(config, tiny_engine, pub, paced=False)
        try:
            frames, info = [], None
            deadline = time.monotonic() + GIVE_UP_S
            while time.monotonic() < deadline and (len(frames) < 2 or info is None):
                parts = _recv(sock)
                if parts is None:
                    continue
                if parts[0] == f"{NS}/frame".encode():
                    frames.append(json.loads(parts[1]))
                    assert len(parts) == 2 + 2 * len(frames[-1]["masks"])
                elif parts[0] == f"{NS}/info".encode():
                    info = json.loads(parts[2])
                else:
                    raise AssertionError(f"a message on {parts[0]!r}: with atomic frames masks travel only in frames")
        finally:
            pipeline.stop()
            pipeline.finish()
            sock.close()
    assert len(frames) == 2 and info is not None
    listed = info["topics"][f"{NS}/frame"]["masks"]
    assert sorted(listed) == sorted(contracts.MASK_TOPICS)
    for frame in frames:
        assert sorted(frame["masks"]) == sorted(listed)
