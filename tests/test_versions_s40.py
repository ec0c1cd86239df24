"""Versions meeting each other (hunt s40/h33): a wire version 1 node's masks in ``perception view``
(finding 1), a deprecated launch key warned once (finding 5), and an old checkpoint's resume
refusal whose fix can be followed (finding 6)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq
from test_view_node_table import start_view

from perception import view_node
from perception.overlay import render_overlay
from perception.sources import SourceOptions, open_source
from perception.view import ViewConfig

NS = "perception/v"
MODEL_ID = "v1-node-model"
# A v1 node's masks are the model's whole letterboxed output: a 54x96 frame in a 72x96 model input
# fills rows 9..62, with 9 rows of padding above and below (as 180x320 in 288x384: 36 rows each).
FRAME_H, FRAME_W, MODEL_H, PAD = 54, 96, 72, 9


def _v1_masks() -> dict[str, np.ndarray]:
    drivable = np.zeros((MODEL_H, FRAME_W), np.uint8)
    drivable[45:, :] = 255  # the road in the lower frame rows, and the bottom padding marked drivable (as v1 did)
    obstacle = np.zeros((MODEL_H, FRAME_W), np.uint8)
    obstacle[30:45, 30:60] = 255  # a car standing on the road: frame rows 21..35
    return {"drivable": drivable, "obstacle": obstacle}


def _v1_header(name: str, seq: int, mask: np.ndarray) -> bytes:
    """A wire version 1 mask header, as revision 5b80ceb wrote it (integer nanoseconds, no geometry)."""
    now = time.time_ns()
    return json.dumps({
        "wire_version": 1, "kind": "mask",
        "header": {"stamp": {"sec": now // 10**9, "nanosec": now % 10**9}, "frame_id": "v"},
        "height": mask.shape[0], "width": mask.shape[1], "encoding": "mono8", "is_bigendian": 0,
        "step": mask.shape[1], "compression": "none", "values": "binary", "seq": seq,
        "capture_ns": now, "publish_ns": now, "model_id": MODEL_ID, "latency_ms": {"total": 1.0},
    }).encode()


def _serve_v1(config: ViewConfig, seconds: float = 30.0):
    """Run the view in a thread while a fake v1 node (no ``info`` topic: v1 had none) publishes
    drivable and obstacle masks; returns (frames rendered or the exception raised, seqs published)."""
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.linger = 0
    pub.bind("tcp://127.0.0.1:*")
    config.endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    viewer, result = start_view(config)
    seq = 0
    try:
        deadline = time.monotonic() + seconds
        while viewer.is_alive() and time.monotonic() < deadline:
            for name, mask in _v1_masks().items():
                pub.send_multipart([f"{NS}/{name}".encode(), _v1_header(name, seq, mask), mask.tobytes()])
            seq += 1
            viewer.join(timeout=0.04)
    finally:
        viewer.join(timeout=20)
        pub.close()
        context.term()
    return result.get("error", result.get("n")), seq


def _written(folder: Path) -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in sorted(folder.glob("view_*.png"))]


def test_a_v1_nodes_masks_are_cut_to_the_frame_not_squeezed_into_it(tmp_path, monkeypatch, caplog):
    """Finding 1: the padded 72-row masks were stretched over the 54-row frame, the car drawn above
    where it is and the bottom padding painted as road; now drawn as the v1 node's own view did."""
    monkeypatch.setattr(view_node, "INFO_WAIT_S", 0.3)
    options = SourceOptions(seed=3, width=FRAME_W, height=FRAME_H, fps=5)
    config = ViewConfig(endpoint="tcp://127.0.0.1:1", namespace=NS, source="synthetic", source_options=options,
                        out=tmp_path / "frames", max_frames=3, alpha=0.5)
    with caplog.at_level(logging.INFO, logger="perception.view"):
        n, seqs = _serve_v1(config)
    assert n == 3
    source = open_source("synthetic", options)
    source.pace(None)
    images = [source.read().image for _ in range(seqs)]
    source.close()
    cut = {name: mask[PAD:MODEL_H - PAD] for name, mask in _v1_masks().items()}
    expected = [render_overlay(images[s], None, None, task_masks=cut, alpha=0.5, caption=f"seq {s}  {MODEL_ID}")
                for s in range(seqs)]
    frames = _written(tmp_path / "frames")
    assert len(frames) == 3
    for frame in frames:
        assert any(np.array_equal(frame, e) for e in expected)
    said = [r.getMessage() for r in caplog.records if "wire version 1 masks" in r.getMessage()]
    assert len(said) == 1 and "letterbox padding" in said[0] and "upgrade the node" in said[0], said


def test_a_v1_mask_the_frames_size_is_drawn_as_it_is():
    """``--mask-size source`` on a v1 node: the mask is the frame, nothing to cut."""
    mask = np.arange(FRAME_H * FRAME_W, dtype=np.uint32).reshape(FRAME_H, FRAME_W).astype(np.uint8)
    cut = view_node.v1_frame_masks({"lane": mask}, (FRAME_H, FRAME_W))
    assert np.array_equal(cut["lane"], mask)


def test_a_v1_node_viewed_without_a_source_says_its_masks_hold_the_padding(tmp_path, monkeypatch, caplog):
    """Without --source the frame's size is unknown: the masks are drawn whole, and one warning says
    so and how to cut them (the node's own --source, or upgrading the node)."""
    monkeypatch.setattr(view_node, "INFO_WAIT_S", 0.3)
    config = ViewConfig(endpoint="tcp://127.0.0.1:1", namespace=NS, out=tmp_path / "frames", max_frames=2, alpha=0.5)
    with caplog.at_level(logging.WARNING, logger="perception.view"):
        n, _ = _serve_v1(config)
    assert n == 2
    said = [r.getMessage() for r in caplog.records if "wire version 1 masks" in r.getMessage()]
    assert len(said) == 1, said
    assert "letterbox padding" in said[0] and "--source" in said[0] and "upgrade the node" in said[0]
    assert all(frame.shape[0] >= MODEL_H for frame in _written(tmp_path / "frames"))


def test_a_deprecated_launch_key_is_warned_once_by_launch_check(tmp_path, caplog):
    """Finding 5: ``launch --check`` built a replay node's settings twice (plan, then file check),
    and its ``wait_subscriber`` warning came twice; the record node's ``duration`` once."""
    from perception.launch import check_node_files, load_launch

    recording = tmp_path / "drive.mcap"  # written by the record node of this launch: not read by the check
    launch = tmp_path / "old.yaml"
    launch.write_text(
        "launch:\n"
        "  - node:\n      name: rec\n      kind: record\n"
        f"      parameters: {{endpoint: 'tcp://127.0.0.1:47211', namespace: perception/front, out: '{recording}', "
        "duration: 2}\n"
        "  - node:\n      name: rp\n      kind: replay\n"
        f"      parameters: {{file: '{recording}', endpoint: 'tcp://127.0.0.1:47211', wait_subscriber: 2}}\n"
    )
    with caplog.at_level(logging.WARNING, logger="perception.config"):
        plan = load_launch(launch)
        check_node_files(plan)
    said = [r.getMessage() for r in caplog.records if "is deprecated" in r.getMessage()]
    assert [line.split(": key ")[1].split(" ")[0] for line in said] == ["'duration'", "'wait_subscriber'"], said
    replay = next(node for node in plan.nodes if node.kind == "replay")
    assert "--wait-first-subscriber" in replay.argv


def test_resuming_on_a_synthetic_world_with_new_classes_names_a_fix_that_can_be_followed():
    """Finding 6: "resume with the data it was trained on" for a checkpoint of an older synthetic
    world (11 classes, before ego_vehicle), which this release cannot make again."""
    import dataclasses

    from perception.errors import ConfigError
    from perception.synthetic.classes import SYNTHETIC_CLASSES
    from perception.training.checkpoint import Checkpoint
    from perception.training.run_state import check_resume_class_table

    old_world = dataclasses.replace(SYNTHETIC_CLASSES,
                                    classes=tuple(c for c in SYNTHETIC_CLASSES.classes if c.name != "ego_vehicle"))
    ckpt = Checkpoint(model_name="bisenetv2", model_kwargs={}, class_table=old_world, input_hw=(96, 128),
                      state_dict={}, dataset="synthetic:count=8")
    with pytest.raises(ConfigError) as caught:
        check_resume_class_table(ckpt, SYNTHETIC_CLASSES, "runs/old/last.pt", data_spec="synthetic:count=8")
    line = str(caught.value)
    assert "trained on 11 classes" in line and "has 12" in line
    assert "resume with the data" not in line  # it cannot be made again
    assert "(added ego_vehicle)" in line and "cannot be made again" in line
    assert "'perception export --checkpoint runs/old/last.pt'" in line and "start a new run on this data" in line
