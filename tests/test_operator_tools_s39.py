"""The operator's tools on odd inputs (hunt H23, session 39).

- ``listen --save-dir`` wrote a restarted node's masks over the ones it had saved (F3): each run of a
  topic's numbering now has its own names (``run0002_<seq>.png`` ...), so nothing is overwritten.
- ``inspect`` / ``run --model`` of an MCAP recording read the whole file and called it a corrupt
  model, naming only its base name (F6): it is named a recording, with the command that plays it.
- ``view --namespace perception`` on a node of several cameras said "is the node running?" while
  masks arrived under ``perception/front`` and ``perception/rear`` (F7): it names them and the flag.
- A video of a node's masks played at 10 fps whatever the node's rate (F8): the node's rate now.
- A view folder past 999,999 frames refused its own frames next time (F9).
- ``listen``'s rate for the latched ``info`` topic was its resends' spacing (F10): no rate there.
- A clock past 2038 made every reader refuse the node's masks without a word from the node (F13).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq
from loopback_ports import free_endpoint

from perception.cli import main as cli_main
from perception.publish import MaskPublisher

NS = "perception/s39"


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("perception: error:")]


# --------------------------------------------------------------------------------------------
# F3: listen --save-dir keeps every mask of a node that restarts
# --------------------------------------------------------------------------------------------


def test_listen_save_dir_keeps_the_masks_of_each_run_of_a_restarting_node(tmp_path, capsys, caplog):
    """Two runs of seq 0..3 (the second at another size, as a node restarted with another --size):
    all 8 masks are kept, and the names sorted come in the order they arrived."""
    save = tmp_path / "masks"
    publisher = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, sndhwm=1000)
    sent: list[tuple[int, tuple[int, int]]] = []

    def publish_two_runs() -> None:
        assert publisher.wait_for_subscribers(1, timeout_s=30)
        time.sleep(0.2)  # the subscription's filter is in place at the publisher
        for shape in ((24, 32), (12, 16)):
            for seq in range(4):
                lane = np.full(shape, 255 if seq % 2 else 0, np.uint8)
                publisher.publish_masks(seq=seq, capture_ns=time.time_ns(), frame_id="f", masks={"lane": lane},
                                        latency_ms={}, model_id="m")
                sent.append((seq, shape))
                time.sleep(0.01)

    thread = threading.Thread(target=publish_two_runs, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.WARNING, logger="perception.commands.listen"):
            code = cli_main(["listen", "--endpoint", publisher.endpoint, "--namespace", NS, "--count", "8",
                             "--duration", "30", "--save-dir", str(save)])
    finally:
        thread.join(timeout=30)
        publisher.close()
    out = capsys.readouterr().out
    assert code == 0, out
    assert "restarts 1" in out
    folder = save / "perception_s39_lane"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["00000000.png", "00000001.png", "00000002.png", "00000003.png",
                     "run0002_00000000.png", "run0002_00000001.png", "run0002_00000002.png", "run0002_00000003.png"]
    # Each file is the mask sent under that name: the first run's size, then the second's.
    for name, (seq, shape) in zip(names, sent, strict=True):
        mask = cv2.imread(str(folder / name), cv2.IMREAD_UNCHANGED)
        assert mask.shape == shape and int(mask[0, 0]) == (255 if seq % 2 else 0), name
    said = [r.getMessage() for r in caplog.records if "again" in r.getMessage()]
    assert len(said) == 1 and "run0002_00000000.png" in said[0] and "none overwritten" in said[0]


def test_a_second_listen_refuses_and_overwrite_removes_the_later_runs_masks_too(tmp_path):
    from perception.commands.listen import earlier_masks, saved_mask_name
    from perception.errors import ConfigError
    from perception.overwrite import refuse_earlier_output

    assert saved_mask_name(7, 1) == "00000007.png"
    assert saved_mask_name(7, 2) == "run0002_00000007.png"
    assert saved_mask_name(123_456_789, 12_345) == "run12345_123456789.png"
    folder = tmp_path / "perception_s39_lane"
    folder.mkdir()
    for name in ("00000000.png", "run0002_00000000.png", "run12345_123456789.png", "run2_00000000.png", "x.png"):
        (folder / name).write_bytes(b"png")
    found = sorted(p.name for p in earlier_masks(tmp_path))
    assert found == ["00000000.png", "run0002_00000000.png", "run12345_123456789.png"]  # not run2_, not x.png
    with pytest.raises(ConfigError, match="run0002_00000000.png"):
        refuse_earlier_output(tmp_path, earlier_masks(tmp_path), flag="--save-dir", what="masks of an earlier listen",
                              overwrite=False)


# --------------------------------------------------------------------------------------------
# F6: an MCAP recording given as a model
# --------------------------------------------------------------------------------------------


def _recording(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89MCAP0\r\n" + bytes(range(256)) * 64)  # the magic, then what onnx would choke on
    return path


def test_an_mcap_recording_given_as_a_model_is_named_a_recording_before_any_read(tmp_path, monkeypatch):
    import onnx

    from perception.errors import ModelError
    from perception.modelfile import load_model_proto

    def no_full_read(*args, **kwargs):
        raise AssertionError("onnx.load read the recording")

    monkeypatch.setattr(onnx, "load", no_full_read)
    path = _recording(tmp_path / "drives" / "run.mcap")
    with pytest.raises(ModelError) as caught:
        load_model_proto(path)
    line = str(caught.value)
    assert line.startswith(f"{path} is an MCAP recording (perception record's file), not an ONNX model")
    assert f"perception replay {path}" in line and "corrupt" not in line


@pytest.mark.parametrize("command", [["inspect", "{rec}"], ["run", "--model", "{rec}", "--source", "synthetic",
                                                            "--max-frames", "1"]])
def test_inspect_and_run_name_the_recording_by_the_path_given(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    _recording(tmp_path / "drives" / "run.mcap")
    code = cli_main([part.format(rec="drives/run.mcap") for part in command])
    errors = _errors(capsys.readouterr().err)
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith("perception: error: drives/run.mcap is an MCAP recording")
    assert "'perception replay drives/run.mcap'" in errors[0]


# --------------------------------------------------------------------------------------------
# F7: view --namespace of a node of several cameras
# --------------------------------------------------------------------------------------------


def test_view_of_a_namespace_above_the_cameras_names_them_and_the_flag(tmp_path):
    from perception.errors import ConfigError
    from perception.view import ViewConfig, run_view

    endpoint = free_endpoint()
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.linger = 0
    pub.bind(endpoint)
    stop = threading.Event()

    def cameras() -> None:
        # Only the topics are read by the probe: any header and payload do.
        while not stop.wait(0.02):
            for topic in ("perception/front/lane", "perception/rear/class_map", "perception/rear/obstacle/car"):
                pub.send_multipart([topic.encode(), b"{}", b""])

    thread = threading.Thread(target=cameras, daemon=True)
    thread.start()
    out = tmp_path / "v.mp4"
    try:
        config = ViewConfig(endpoint=endpoint, namespace="perception", out=out, duration_s=0.5)
        with pytest.raises(ConfigError) as caught:
            run_view(config)
    finally:
        stop.set()
        thread.join(timeout=5)
        pub.close()
        context.term()
    line = str(caught.value)
    assert f"nothing rendered, so nothing written to {out}: no masks received from {endpoint} under perception" in line
    assert "the node publishes under perception/front, perception/rear" in line
    assert line.endswith("give --namespace perception/front")
    assert "is the node running" not in line and not out.exists()


def test_view_of_no_node_at_all_still_asks_whether_it_runs(tmp_path):
    from perception.errors import SourceUnavailableError
    from perception.view import ViewConfig, run_view

    config = ViewConfig(endpoint=free_endpoint(), namespace="perception", out=tmp_path / "v.mp4", duration_s=0.3)
    with pytest.raises(SourceUnavailableError, match="is the node running"):
        run_view(config)


# --------------------------------------------------------------------------------------------
# F8: a video of a node's masks plays at the node's rate
# --------------------------------------------------------------------------------------------


def _video_fps(path: Path) -> float:
    cap = cv2.VideoCapture(str(path))
    try:
        return cap.get(cv2.CAP_PROP_FPS)
    finally:
        cap.release()


def test_a_video_of_a_node_s_masks_plays_at_the_node_s_rate(tmp_path):
    """Masks captured 1/15 s apart (sent faster than that): a 15 fps video, not 10."""
    from perception.view import ViewConfig, run_view
    from perception.view_node import node_rate

    assert node_rate([0, 100_000_000, 200_000_000]) == pytest.approx(10.0)
    assert node_rate([0]) is None and node_rate([5, 5]) is None and node_rate([9, 3]) is None

    endpoint = free_endpoint()
    out = tmp_path / "node.mp4"
    config = ViewConfig(endpoint=endpoint, namespace=NS, out=out, max_frames=12, duration_s=30)
    result: dict[str, int] = {}
    viewer = threading.Thread(target=lambda: result.update(n=run_view(config)))
    viewer.start()
    publisher = MaskPublisher(endpoint=endpoint, namespace=NS, sndhwm=1000)
    try:
        start_ns, seq = time.time_ns(), 0
        deadline = time.monotonic() + 30
        while viewer.is_alive() and time.monotonic() < deadline:
            lane = np.full((12, 16), 255 * (seq % 2), np.uint8)
            publisher.publish_masks(seq=seq, capture_ns=start_ns + seq * 1_000_000_000 // 15, frame_id="f",
                                    masks={"lane": lane}, latency_ms={}, model_id="m")
            seq += 1
            viewer.join(timeout=0.01)
    finally:
        viewer.join(timeout=30)
        publisher.close()
    assert result["n"] == 12
    assert _video_fps(out) == pytest.approx(15.0, abs=0.05)


# --------------------------------------------------------------------------------------------
# F9: a view folder past 999,999 frames
# --------------------------------------------------------------------------------------------


def test_a_view_folder_past_a_million_frames_is_still_an_earlier_view_s(tmp_path):
    from perception.sinks import FOLDER_FRAME_NAME, FrameSink
    from perception.view import _claim_out

    folder = tmp_path / "frames"
    sink = FrameSink(folder, fps=10)
    sink.frames = 999_999  # as after 9 hours at 30 fps
    frame = np.zeros((8, 8, 3), np.uint8)
    sink.write(frame)
    sink.close()
    (folder / "view_999999.png").write_bytes((folder / "view_1000000.png").read_bytes())
    assert all(FOLDER_FRAME_NAME.fullmatch(p.name) for p in folder.iterdir())
    # The next view into the folder takes both for an earlier view's frames (it was refused as foreign).
    assert sorted(p.name for p in _claim_out(folder, overwrite=False)) == ["view_1000000.png", "view_999999.png"]


# --------------------------------------------------------------------------------------------
# F10: no rate for the latched info topic
# --------------------------------------------------------------------------------------------


def test_listen_shows_no_rate_for_the_latched_info_topic():
    from perception.commands.listen import _format_line
    from perception.subscribe import Message
    from perception.topic_stats import TopicStats

    def info(seq: int) -> Message:
        return Message(topic=f"{NS}/info", header={"kind": "json", "seq": seq, "pub_seq": seq, "publish_ns": 1},
                       data={"classes": []}, wire_bytes=10, receive_ns=2)

    stats = TopicStats(0.0)
    stats.add(info(0), 1.000)
    stats.add(info(1), 1.003)  # resent to a second subscription 3 ms later: not 333 Hz
    summary = stats.summary(10.0)
    assert summary["rate_hz"] is None and summary["count"] == 2
    line = _format_line(f"{NS}/info", summary)
    assert " - Hz" in line and "333" not in line and line.endswith("n=2")
    window = _format_line(f"{NS}/info", stats.window(2.0))
    assert " - Hz" in window
    # A mask topic keeps its rate.
    lane = TopicStats(0.0)
    for i in range(3):
        lane.add(Message(topic=f"{NS}/lane", header={"kind": "mask", "seq": i, "pub_seq": i, "capture_ns": 1},
                         data=None, wire_bytes=1, receive_ns=1), 1.0 + i * 0.1)
    assert lane.summary(1.0)["rate_hz"] == pytest.approx(10.0)
    assert "10.0 Hz" in _format_line(f"{NS}/lane", lane.summary(1.0))


# --------------------------------------------------------------------------------------------
# F13: a clock past 2038
# --------------------------------------------------------------------------------------------

YEAR_2200_NS = 7_258_118_400 * 10**9


def _header(capture_ns: int) -> dict:
    from perception import wire

    return wire.mask_header(height=2, width=2, compression="none", values="binary", seq=0, capture_ns=capture_ns,
                            publish_ns=capture_ns, frame_id="f", model_id="m", latency_ms={})


def test_a_clock_past_2038_is_said_once_at_the_source_and_named_by_the_readers(monkeypatch, caplog):
    from perception import wire

    monkeypatch.setattr(wire, "_stamp_warned", [])
    with caplog.at_level(logging.WARNING, logger="perception.wire"):
        headers = [_header(YEAR_2200_NS + i) for i in range(3)]
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1
    assert "this machine's clock reads 2200-01-01 00:00:00 UTC" in said[0] and "every reader refuses" in said[0]
    assert "set the clock" in said[0]
    # header.stamp is still the capture time; every reader refuses it, naming the cause.
    assert headers[0]["header"]["stamp"] == {"sec": 7_258_118_400, "nanosec": 0}
    with pytest.raises(wire.WireError) as caught:
        wire.parse_header(wire.dump_header(headers[0]))
    line = str(caught.value)
    assert line.startswith("mask header field 'header.stamp.sec' is 7258118400, outside 0..2147483647 (int32 "
                           "seconds): 2200-01-01 00:00:00 UTC, past 2038-01-19 03:14:07 UTC")
    assert line.endswith("the publisher's clock is wrong (or it is past 2038): set its clock")
    # A time ROS 2 holds: no word, and read as ever.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="perception.wire"):
        wire.parse_header(wire.dump_header(_header(1_700_000_000 * 10**9)))
    assert caplog.records == []


def test_a_subscriber_names_the_clock_of_a_node_past_2038(monkeypatch):
    from perception import wire
    from perception.subscribe import MaskSubscriber

    monkeypatch.setattr(wire, "_stamp_warned", [])
    publisher = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, sndhwm=1000)
    sub = MaskSubscriber(publisher.endpoint, namespace=NS)
    try:
        assert publisher.wait_for_subscribers(1, timeout_s=30)
        time.sleep(0.2)
        deadline = time.monotonic() + 20
        while sub.counters.malformed == 0 and time.monotonic() < deadline:
            publisher.publish_masks(seq=0, capture_ns=YEAR_2200_NS, frame_id="f",
                                    masks={"lane": np.zeros((4, 4), np.uint8)}, latency_ms={}, model_id="m")
            assert sub.recv(timeout_s=0.1) is None
    finally:
        sub.close()
        publisher.close()
    assert sub.counters.malformed >= 1
    assert "2200-01-01" in sub.last_error and "publisher's clock" in sub.last_error
