"""``--wait-subscribers N`` on a node of several cameras (hunt s39 h21, finding 2).

Each camera waits for N subscriptions to its own namespace, and no camera publishes before every
camera has them (a subscription to the cameras' common parent, ``perception``, counts for each).
Was: the cameras waited one after the other, so the front camera, subscribed, published all its
frames while the rear one waited; the node then failed with "no subscriber connected", exit 4, and
final stats of ``published 0`` (a launch file respawns it and a lossless recorder receives the
front frames twice).
"""

from __future__ import annotations

import json
import time

from perception.cli import main as cli_main
from perception.errors import SubscribersMissingError
from perception.subscribe import MaskSubscriber

FRAMES = 3


def _run_two_cameras(model, endpoint, capsys, *, timeout_s: float) -> tuple[int, dict, list[str]]:
    argv = ["-q", "run", "--model", str(model), "--source", "front=synthetic", "--source", "rear=synthetic",
            "--width", "64", "--height", "48", "--fps", "240", "--queue", "lossless", "--max-frames", str(FRAMES),
            "--threads", "1", "--warmup", "0", "--endpoint", endpoint, "--wait-subscribers", "1",
            "--wait-timeout", str(timeout_s)]
    code = cli_main(argv)
    captured = capsys.readouterr()
    final = json.loads(captured.out.strip().splitlines()[-1])
    errors = [line for line in captured.err.splitlines() if line.startswith("perception: error:")]
    assert "Traceback" not in captured.err
    return code, final, errors


def _drain(sub: MaskSubscriber, topic: str | None) -> list:
    """The messages ``sub`` receives (of ``topic``; None: all) until half a second passes without one."""
    got = []
    while (msg := sub.recv(timeout_s=0.5)) is not None:
        if topic is None or msg.topic == topic:
            got.append(msg)
    return got


def test_one_camera_subscribed_publishes_nothing_and_says_which_camera_has_no_subscriber(
        tiny_model_path, free_tcp_port, capsys):
    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    with MaskSubscriber(endpoint, topics=["perception/front/class_map"]) as front:
        code, final, errors = _run_two_cameras(tiny_model_path, endpoint, capsys, timeout_s=1.5)
        heard = _drain(front, "perception/front/class_map")
    assert code == SubscribersMissingError.exit_code == 4
    assert errors == [f"perception: error: no subscriber to camera 'rear' (perception/rear) connected to {endpoint} "
                      "within 1.5 s (--wait-subscribers 1 counts each camera's own namespace; a recorder of "
                      "perception counts for every camera); start the recorder first or drop --wait-subscribers"]
    # What the line and the stats say is true: the subscribed camera did not start alone.
    assert heard == []
    assert final["published"] == final["frames_out"] == final["frames_in"] == 0 and final["balanced"]
    assert final["end_reason"] == "start-up failed" and final["startup"] == "waiting for subscribers"


def test_every_camera_subscribed_runs_to_the_end_and_each_subscriber_gets_every_frame(
        tiny_model_path, free_tcp_port, capsys):
    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    with (MaskSubscriber(endpoint, topics=["perception/front/class_map"]) as front,
          MaskSubscriber(endpoint, topics=["perception/rear/class_map"]) as rear):
        code, final, errors = _run_two_cameras(tiny_model_path, endpoint, capsys, timeout_s=30)
        heard = {"front": _drain(front, "perception/front/class_map"), "rear": _drain(rear, "perception/rear/class_map")}
    assert code == 0 and errors == []
    assert final["published"] == final["frames_out"] == 2 * FRAMES and final["balanced"]
    for camera, msgs in heard.items():
        assert [m.seq for m in msgs] == list(range(FRAMES)), camera  # held until its subscriber joined


def test_a_subscriber_to_the_common_parent_counts_for_every_camera(tiny_model_path, free_tcp_port, capsys):
    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    with MaskSubscriber(endpoint, namespace="perception") as both:
        code, final, errors = _run_two_cameras(tiny_model_path, endpoint, capsys, timeout_s=30)
        heard = _drain(both, None)
    assert code == 0 and errors == []
    assert final["published"] == 2 * FRAMES and final["balanced"]
    for camera in ("front", "rear"):
        assert [m.seq for m in heard if m.topic == f"perception/{camera}/class_map"] == list(range(FRAMES)), camera


def test_no_subscriber_at_all_is_one_line_naming_both_cameras_and_exit_4(tiny_model_path, free_tcp_port, capsys):
    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    code, final, errors = _run_two_cameras(tiny_model_path, endpoint, capsys, timeout_s=0.3)
    assert code == 4
    assert len(errors) == 1
    assert errors[0].startswith("perception: error: no subscriber to camera 'front' (perception/front) and no "
                                f"subscriber to camera 'rear' (perception/rear) connected to {endpoint} within 0.3 s")
    assert errors[0].endswith("start the recorder first or drop --wait-subscribers")
    assert final["published"] == 0 and final["balanced"] and final["startup"] == "waiting for subscribers"


def test_a_camera_that_fails_to_start_after_another_ran_leaves_stats_that_count_what_that_one_published(
        tiny_model_path, free_tcp_port, capsys, monkeypatch):
    from perception.errors import ResourceError
    from perception.pipeline import Pipeline

    launch = Pipeline.launch
    front_done = []

    def launch_or_fail(self):
        if self.config.publish_options.camera_name == "rear":  # the thread limit reached at the second camera
            deadline = time.monotonic() + 30
            while front_done[0].frames_published < FRAMES and time.monotonic() < deadline:
                time.sleep(0.01)
            raise ResourceError("cannot start the node's capture thread: the process limit is reached")
        front_done.append(self)
        launch(self)

    monkeypatch.setattr(Pipeline, "launch", launch_or_fail)
    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    with (MaskSubscriber(endpoint, topics=["perception/front/class_map"]) as front,
          MaskSubscriber(endpoint, topics=["perception/rear/class_map"])):
        code, final, errors = _run_two_cameras(tiny_model_path, endpoint, capsys, timeout_s=30)
        heard = _drain(front, "perception/front/class_map")
    assert code == ResourceError.exit_code and len(errors) == 1 and "process limit" in errors[0]
    # The last stdout line is the node's summary: it counts the front frames that went out.
    assert len(heard) == FRAMES
    assert final["cameras"]["front"]["published"] == final["published"] == FRAMES
    assert final["error"] == errors[0].removeprefix("perception: error: ")
