"""``perception view --endpoint`` of an endpoint that sends only some masks (a replay of a recording
of some topics, a node without info): it draws what arrives and says once what it cannot draw and
why; with nothing drawable its one error line names what arrived and what is missing."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from tiny_models import write_brightness_model

from perception import contracts, view_node
from perception.contracts import ClassInfo, ClassTable
from perception.errors import SourceError, SourceUnavailableError
from perception.overlay import TASK_TINTS_BGR
from perception.publish import MaskPublisher
from perception.view import ViewConfig, run_view

NS = "perception/p"
H, W = 24, 32
TABLE = ClassTable(classes=(ClassInfo(0, "sky", (70, 130, 180)), ClassInfo(1, "road", (128, 64, 128))))
MODEL = "partial-test-24x32"


def _info(topics: list[str] | None) -> dict:
    doc = {"wire_version": contracts.WIRE_VERSION, "frame_id": "p", "model_id": MODEL, "unknown_id": 255,
           "classes": [{"id": c.id, "name": c.name, "color_rgb": list(c.color)} for c in TABLE.classes]}
    if topics is not None:  # as a node lists them: every mask topic it sends, and the JSON ones
        doc["topics"] = {contracts.topic_name(NS, t): {"kind": "mask"} for t in topics}
    return doc


def _masks(names) -> dict[str, np.ndarray]:
    """Drivable on the left quarter, lane in the second, nothing in the third: a tint per column."""
    out = {}
    for name in names:
        mask = np.zeros((H, W), np.uint8)
        if name == "drivable":
            mask[:, :8] = 255
        elif name == "lane":
            mask[:, 8:16] = 255
        elif name == "class_map":
            mask[:, 16:] = 1
        out[name] = mask
    return out


def _serve(config: ViewConfig, names, *, info: dict | None, first: tuple[str, ...] = (), seconds: float = 20.0,
           run=None):
    """Publish frames of the masks ``names`` (after one seq of only ``first``, as a view joining
    midway sees it) while ``run(config)`` (default ``run_view``) runs in the calling thread; returns
    what it returned or raised."""
    pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, sndhwm=1000)
    config.endpoint = pub.endpoint
    if info is not None:
        pub.set_info(info)
    done = threading.Event()

    def publish():
        deadline = time.monotonic() + seconds
        wanted = {"class_map", *contracts.TASKS}
        while not done.is_set() and pub.subscribed(wanted) != wanted and time.monotonic() < deadline:
            time.sleep(0.01)  # the view's subscriptions have reached the publisher: nothing is lost
        seq = 0
        if first:
            pub.publish_masks(seq=seq, capture_ns=time.time_ns(), frame_id="p", masks=_masks(first), latency_ms={},
                              model_id=MODEL)
            seq += 1
        while not done.is_set() and time.monotonic() < deadline:
            pub.publish_masks(seq=seq, capture_ns=time.time_ns(), frame_id="p", masks=_masks(names), latency_ms={},
                              model_id=MODEL)
            seq += 1
            done.wait(0.04)

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        return (run or run_view)(config)
    except Exception as exc:  # noqa: BLE001 - handed to the test
        return exc
    finally:
        done.set()
        publisher.join(timeout=20)
        pub.close()


def _written(folder: Path) -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in sorted(folder.glob("view_*.png"))]


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "perception.view"]


@pytest.mark.parametrize("listed", [["drivable", "lane", "obstacle", "class_map"], ["drivable", "lane"]],
                         ids=["info-lists-every-topic", "info-lists-what-comes"])
def test_an_endpoint_without_class_maps_gets_its_masks_drawn_as_tints(tmp_path, caplog, listed):
    """Info with the node's table, but only drivable and lane arrive (a replay of a recording of those
    topics, whose info still lists them all; or a node that sends just those)."""
    config = ViewConfig(endpoint="tcp://127.0.0.1:1", namespace=NS, out=tmp_path / "frames", max_frames=3, alpha=1.0,
                        duration_s=15)  # ends, drawn or not
    with caplog.at_level(logging.INFO, logger="perception.view"):
        n = _serve(config, ["drivable", "lane"], info=_info(listed), first=("lane",))
    assert n == 3
    frames = _written(tmp_path / "frames")
    assert len(frames) == 3
    for frame in frames:
        assert tuple(frame[5, 3]) == TASK_TINTS_BGR["drivable"]
        assert tuple(frame[5, 11]) == TASK_TINTS_BGR["lane"]  # every frame whole: not the lane-only first seq
        assert tuple(frame[5, 20]) == (0, 0, 0)
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings  # said once, not per frame
    assert "no class map on" in warnings[0] and "only its drivable, lane masks" in warnings[0]
    assert "as tints" in warnings[0]


def test_without_info_and_model_the_task_masks_that_arrive_are_tinted(tmp_path, caplog, monkeypatch):
    """Before, no frame was drawn until all three task masks had come: an endpoint of drivable
    alone rendered nothing and exited 2."""
    monkeypatch.setattr(view_node, "INFO_WAIT_S", 0.3)
    model = write_brightness_model(tmp_path / "tiny.onnx", (32, 48))
    for i, with_model in enumerate((None, model)):
        caplog.clear()
        config = ViewConfig(endpoint="tcp://127.0.0.1:1", namespace=NS, model=with_model, out=tmp_path / f"f{i}",
                            max_frames=2, alpha=1.0, duration_s=15)
        with caplog.at_level(logging.INFO, logger="perception.view"):
            assert _serve(config, ["drivable"], info=None) == 2
        frames = _written(tmp_path / f"f{i}")
        assert len(frames) == 2 and all(tuple(f[5, 3]) == TASK_TINTS_BGR["drivable"] for f in frames)
        warnings = _warnings(caplog)
        # One line, about the class map that does not come; no class table is needed, so no word of
        # the info or of --model's table.
        assert len(warnings) == 1 and "only its drivable masks" in warnings[0], warnings
        assert "class table" not in warnings[0]


def test_class_maps_without_a_table_end_in_one_line_naming_what_came_and_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(view_node, "INFO_WAIT_S", 0.3)
    out = tmp_path / "v.png"
    config = ViewConfig(endpoint="tcp://127.0.0.1:1", namespace=NS, out=out, duration_s=1.5)
    error = _serve(config, ["class_map"], info=None)
    assert isinstance(error, SourceError) and not isinstance(error, SourceUnavailableError), error  # exit 2, not 4
    message = str(error)
    assert f"nothing rendered, so nothing written to {out}" in message
    assert f"only class maps arrived from {config.endpoint} under {NS}" in message
    assert f"no {NS}/info from the node" in message and "no --model" in message
    assert "give --model" in message
    assert not out.exists()


def test_the_cli_says_so_in_one_line_and_exits_2(tmp_path, monkeypatch, capsys):
    from perception.cli import main as cli_main

    monkeypatch.setattr(view_node, "INFO_WAIT_S", 0.3)
    out = tmp_path / "v.mp4"
    config = ViewConfig(endpoint="tcp://127.0.0.1:1", namespace=NS, out=out, duration_s=1.5)

    def cli(config: ViewConfig) -> int:
        return cli_main(["view", "--endpoint", config.endpoint, "--namespace", NS, "--duration", "1.5",
                         "--out", str(out)])

    assert _serve(config, ["class_map"], info=None, run=cli) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("perception: error: nothing rendered"), errors
    assert "only class maps arrived" in errors[0] and "Traceback" not in errors[0]
    assert not out.exists()


def test_an_info_but_no_masks_is_named_as_such(tmp_path):
    """The node is there (its info came) but sends none of the masks view draws."""
    config = ViewConfig(endpoint="tcp://127.0.0.1:1", namespace=NS, out=tmp_path / "frames", duration_s=1.0)
    error = _serve(config, [], info=_info(None))
    assert isinstance(error, SourceUnavailableError), error  # no masks: exit 4, as for no node
    message = str(error)
    assert f"no masks received from {config.endpoint} under {NS}" in message
    assert f"only its {NS}/info (model {MODEL})" in message
    assert "sent no class_map, drivable, lane or obstacle mask" in message
    assert "is the node running" not in message  # it is
