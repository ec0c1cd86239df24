"""Edge cases of the node's hot path and its contracts, each pinned after a review found it broken.

- masks mapped back to frames smaller than the model input land on the right pixels;
- headers and payloads that would crash a reader (listen, the recorder) are rejected as malformed;
- model metadata that is JSON but not an object is a one-line ModelError;
- the listener's run summary sees a latency spike that comes after its sample cap;
- a pipeline whose engine warm-up fails closes its source, as it promises;
- exported metrics (NaN IoU of absent classes) are strict JSON; INT8 quantiser failures are one line.
"""

from __future__ import annotations

import numpy as np
import pytest

from perception import contracts
from perception.encoding import DecodeError
from perception.errors import ModelError
from perception.model_metadata import ModelMetadata
from perception.preprocess import Letterbox, Preprocessor
from perception.subscribe import Message, decode_message
from perception.synthetic.classes import SYNTHETIC_CLASSES
from perception.topic_stats import TopicStats
from perception.wire import WireError, dump_header, json_header, mask_header, parse_header

# --------------------------------------------------------------------------------------------
# Letterbox inverse mapping
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src_hw", "dst_hw"),
    [((37, 53), (64, 96)), ((100, 150), (288, 384)), ((53, 31), (64, 96)), ((20, 30), (64, 64)), ((48, 64), (64, 96))],
)
def test_masks_of_frames_smaller_than_the_model_map_back_onto_the_right_pixels(src_hw, dst_hw):
    """A perfect model (it labels what it sees) on an upscaled frame must give back the frame's own
    labels: every vertical and horizontal edge where it was, no pixel shifted."""
    lb = Letterbox.fit(src_hw, dst_hw)
    assert lb.content_hw[0] >= src_hw[0]  # upscaled: the case where a mapping shift shows
    sh, sw = src_hw
    pre = Preprocessor(dst_hw)
    for axis, size in ((1, sw), (0, sh)):
        for edge in range(1, size):
            labels = np.zeros(src_hw, np.uint8)
            if axis == 1:
                labels[:, edge:] = 200
            else:
                labels[edge:, :] = 200
            seen = pre(np.repeat(labels[:, :, None], 3, axis=2))[0, :, :, 0]
            class_map = np.where(seen >= 100, 200, 0).astype(np.uint8)
            back = lb.to_source(class_map)
            assert back.shape == src_hw
            wrong = int((back != labels).sum())
            assert wrong == 0, f"edge at {edge} on axis {axis}: {wrong} pixels mapped to the wrong side"


# --------------------------------------------------------------------------------------------
# Headers a reader relies on
# --------------------------------------------------------------------------------------------


def _mask_doc() -> dict:
    return mask_header(
        height=2, width=3, compression="none", values="binary", seq=1, capture_ns=1_700_000_000_000_000_000,
        publish_ns=1_700_000_000_000_000_001, frame_id="front", model_id="m", latency_ms={"infer": 1.0},
    )


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({}, "header"),
        ({"frame_id": "front"}, "stamp"),
        ({"stamp": {"sec": 1}, "frame_id": "front"}, "nanosec"),
        ({"stamp": {"sec": "1", "nanosec": 0}, "frame_id": "front"}, "sec"),
        ({"stamp": {"sec": 1, "nanosec": 0}}, "frame_id"),
    ],
)
def test_mask_header_without_a_ros_stamp_and_frame_id_is_malformed(header, message):
    """The recorder writes header.stamp and header.frame_id into every ROS Image: a message without
    them must be skipped as malformed, not crash it with a KeyError."""
    doc = {**_mask_doc(), "header": header}
    with pytest.raises(WireError, match=message):
        decode_message([b"perception/front/lane", dump_header(doc), bytes(6)])


@pytest.mark.parametrize("payload", [b"", b"\x89PNG\r\n\x1a\n"])
def test_empty_or_cut_png_payload_is_a_decode_error(payload):
    """OpenCV asserts on an empty buffer (cv2.error); the subscriber only skips DecodeError, so an
    empty png payload must be one, not a traceback out of listen or record."""
    doc = {**_mask_doc(), "compression": "png"}
    with pytest.raises(DecodeError, match="png payload"):
        decode_message([b"perception/front/lane", dump_header(doc), payload])


@pytest.mark.parametrize(("field", "value"), [("publish_ns", None), ("publish_ns", "1e3"), ("publish_ns", 1.5), ("name", None), ("name", 3)])
def test_json_header_missing_a_documented_field_is_malformed(field, value):
    doc = json_header(name="stats", seq=0, publish_ns=1)
    if value is None:
        del doc[field]
    else:
        doc[field] = value
    with pytest.raises(WireError, match=field):
        parse_header(dump_header(doc))


def test_json_header_fields_are_the_contract():
    """The README documents name, seq and publish_ns; the contract's field list must say the same."""
    assert list(json_header(name="stats", seq=0, publish_ns=1)) == list(contracts.HEADER_FIELDS_JSON)
    assert list(parse_header(dump_header(_mask_doc()))) == list(contracts.HEADER_FIELDS_MASK)


@pytest.mark.parametrize("text", ["[1, 2]", '"metadata"', "null", "3"])
def test_metadata_that_is_json_but_not_an_object_is_a_model_error(text):
    with pytest.raises(ModelError, match="model.onnx: metadata is not a JSON object"):
        ModelMetadata.from_json(text, source="model.onnx")


# --------------------------------------------------------------------------------------------
# Long runs
# --------------------------------------------------------------------------------------------


def _message(seq: int, latency_ms: float) -> Message:
    capture_ns = 1_700_000_000_000_000_000
    header = {"kind": "mask", "seq": seq, "capture_ns": capture_ns}
    return Message(topic="t", header=header, data=None, wire_bytes=10, receive_ns=capture_ns + int(latency_ms * 1e6))


def test_listen_summary_sees_a_latency_spike_after_its_sample_cap(monkeypatch):
    """A node runs for days: the summary keeps a bounded sample, but its max (and its percentiles)
    must cover the whole run, not only the first samples."""
    monkeypatch.setattr(TopicStats, "_MAX_SAMPLES", 100)  # the real cap is about an hour at 30 Hz
    stats = TopicStats(0.0)
    for seq in range(1000):
        stats.add(_message(seq, 5.0 if seq < 500 else 50.0), now_s=seq / 30)
    assert len(stats.latencies_ms) <= 100
    summary = stats.summary(1000 / 30)["latency_ms"]
    assert summary["max"] == pytest.approx(50.0)
    # Half of the run had 50 ms: the median lies between the two levels' samples, not at 5 ms.
    assert summary["p90"] == pytest.approx(50.0)
    assert 5.0 <= summary["p50"] <= 50.0 and summary["p99"] == pytest.approx(50.0)


def test_listen_times_obstacles_from_their_frames_capture_and_stats_from_publishing():
    """listen showed obstacles 2 ms old beside their frame's masks at 170 ms: it timed the document's
    publishing, while the payload carries the frame's capture time."""
    capture_ns, publish_ns = 1_700_000_000_000_000_000, 1_700_000_000_160_000_000
    receive_ns = publish_ns + 2_000_000

    def json_message(name, data):
        header = {"kind": "json", "name": name, "seq": 0, "publish_ns": publish_ns}
        return Message(topic=f"ns/{name}", header=header, data=data, wire_bytes=10, receive_ns=receive_ns)

    def latency(msg):
        stats = TopicStats(0.0)
        stats.add(msg, now_s=0.0)
        return stats.summary(1.0)["latency_ms"]["max"]

    assert latency(json_message("obstacles", {"seq": 0, "capture_ns": capture_ns, "blobs": []})) == pytest.approx(162.0)
    assert latency(json_message("stats", {"published": 3})) == pytest.approx(2.0)  # belongs to no frame
    # a hostile payload's number is no time: publishing's, never an OverflowError
    assert latency(json_message("obstacles", {"capture_ns": 10**400})) == pytest.approx(2.0)
    assert latency(json_message("obstacles", {"capture_ns": True})) == pytest.approx(2.0)


# --------------------------------------------------------------------------------------------
# Pipeline start-up failure
# --------------------------------------------------------------------------------------------


def test_engine_warmup_failure_closes_the_source(tmp_path):
    from tiny_models import write_brightness_model

    from perception.engines import EngineOptions, load_engine
    from perception.pipeline import Pipeline
    from perception.run_config import RunConfig
    from perception.sources import open_source

    model = write_brightness_model(tmp_path / "tiny.onnx", (24, 32))
    engine = load_engine("ort", model, EngineOptions(provider="cpu", threads=1))

    class WarmupFails(type(engine)):
        def warmup(self, n: int = 3) -> None:
            raise ModelError("tiny.onnx: the provider cannot run this graph")

    engine.__class__ = WarmupFails
    source = open_source("synthetic", width=64, height=48, fps=100)
    closed = []
    close = source.close
    source.close = lambda: (closed.append(True), close())

    class NoPublisher:
        endpoint = "inproc://none"

        def publish_json(self, name, doc):
            raise AssertionError("nothing may be published when the start fails")

    pipeline = Pipeline(RunConfig.from_settings(warmup=1), source=source, engine=engine, publisher=NoPublisher())
    with pytest.raises(ModelError, match="provider cannot run"):
        pipeline.run()
    assert closed, "the source was left open"
    engine.close()


# --------------------------------------------------------------------------------------------
# Export metadata
# --------------------------------------------------------------------------------------------


def test_exported_metrics_are_strict_json():
    """A class absent from both the labels and the predictions has IoU NaN; the metadata must still
    be JSON that any reader (a C++ node, jq over ``inspect --json``) parses: NaN becomes null."""
    import json

    from perception.metrics import strict_json

    metrics = {"miou": np.float64("nan"), "per_class_iou": {"road": 0.9, "bus": float("nan")}, "x": [float("inf")]}
    safe = strict_json(metrics)
    assert safe == {"miou": None, "per_class_iou": {"road": 0.9, "bus": None}, "x": [None]}

    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    text = ModelMetadata(model_name="m", class_table=SYNTHETIC_CLASSES, input_hw=(4, 6), val_metrics=safe).to_json()
    assert json.loads(text, parse_constant=reject)["val_metrics"]["per_class_iou"]["bus"] is None


def test_int8_calibration_images_of_another_size_are_a_data_error(tmp_path):
    pytest.importorskip("torch")
    from tiny_models import tiny_metadata, write_brightness_model

    from perception.errors import DataError
    from perception.export.quantize import quantize_int8

    model = write_brightness_model(tmp_path / "tiny.onnx", (24, 32))
    with pytest.raises(DataError, match=r"calibration image 1 is 10x10, the model input is 24x32"):
        quantize_int8(model, tmp_path / "int8.onnx", [np.zeros((24, 32, 3), np.uint8), np.zeros((10, 10, 3), np.uint8)],
                      metadata=tiny_metadata((24, 32)))


def test_int8_quantiser_failing_inside_onnx_runtime_is_a_model_error(tmp_path, monkeypatch):
    """ONNX Runtime's own exception types (Fail, InvalidGraph, ...) derive from Exception only; the
    quantiser raising one must still end as the documented one-line ModelError."""
    pytest.importorskip("torch")
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidGraph
    from tiny_models import tiny_metadata, write_brightness_model

    import perception.export.quantize as quantize

    def fail(*args, **kwargs):
        raise InvalidGraph("[ONNXRuntimeError] : 10 : INVALID_GRAPH : node Foo has no kernel\nmore detail")

    monkeypatch.setattr(quantize, "quantize_static", fail)
    model = write_brightness_model(tmp_path / "tiny.onnx", (24, 32))
    with pytest.raises(ModelError, match="INT8 quantisation failed: .*INVALID_GRAPH : node Foo has no kernel$"):
        quantize.quantize_int8(model, tmp_path / "int8.onnx", [np.zeros((24, 32, 3), np.uint8)],
                               metadata=tiny_metadata((24, 32)), quantizer="ort")
