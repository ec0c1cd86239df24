"""A recording of a multi-camera ``--atomic-frames`` node replays every camera as atomic frames.

Each camera has its own ``<ns>/info`` saying its masks travel ``"in": "<ns>/frame"``; one camera's
info must not unframe the others (it did: the last info read replaced the whole list, so only
that camera came back framed, the others went out as loose masks that an exact ``<ns>/frame``
subscriber never got, and record's, ``--recover``'s and replay's counts were wrong too).
"""

from __future__ import annotations

import threading

import numpy as np
from test_record import NS, frame_masks, free_endpoint

from perception.mcap_reader import as_sent, read_recording
from perception.mcap_writer import McapMaskWriter
from perception.recover import recover_recording
from perception.replay import ReplayConfig, run_replay
from perception.subscribe import MaskSubscriber, Message
from perception.wire import json_header, mask_header

CAMERAS = ("front", "rear")
NAMES = ["lane", "class_map"]
N = 3


def _two_camera_atomic_recording(path) -> int:
    """Both cameras' infos first (as at a recording's start), then N frames of each camera,
    interleaved as a recorder receives them; the number of messages written."""
    writer = McapMaskWriter(path)
    written = 0
    for cam in CAMERAS:
        ns = f"{NS}/{cam}"
        info = {"topics": {f"{ns}/{n}": {"kind": "mask", "in": f"{ns}/frame"} for n in NAMES}}
        writer.write(Message(f"{ns}/info", json_header(name="info", seq=0, publish_ns=1), info, 1, 1))
        written += 1
    for seq in range(N):
        for i, cam in enumerate(CAMERAS):
            recv_ns = 1000 + 10 * seq + i  # a frame's masks were split from one message: one receive time
            for name in NAMES:
                header = mask_header(height=24, width=32, compression="none",
                                     values="binary" if name == "lane" else "class_ids", seq=seq, pub_seq=seq,
                                     capture_ns=100 + seq, publish_ns=200 + seq, frame_id=cam, model_id="m",
                                     latency_ms={})
                writer.write(Message(f"{NS}/{cam}/{name}", header, frame_masks(seq + 10 * i)[name], 1, recv_ns))
                written += 1
            writer.write(Message(f"{NS}/{cam}/stats", json_header(name="stats", seq=seq, publish_ns=seq),
                                 {"seq": seq}, 1, recv_ns))
            written += 1
    writer.close()
    return written


def test_each_camera_of_an_atomic_recording_replays_as_frames_and_the_counts_meet(tmp_path):
    path = tmp_path / "two_cameras.mcap"
    written = _two_camera_atomic_recording(path)
    frames, masks = len(CAMERAS) * N, len(CAMERAS) * N * len(NAMES)
    sent = written - masks + frames

    topics = [m.topic for m in as_sent(read_recording(path))]
    assert sorted(t for t in topics if t.endswith("/frame")) == sorted([f"{NS}/{c}/frame" for c in CAMERAS] * N)
    assert len(topics) == sent

    # --recover (and record, through the same tally) says how its count meets the replay's.
    recovered = recover_recording(path, tmp_path / "rebuilt.mcap")
    assert (recovered.frames.frames, recovered.frames.masks) == (frames, masks)
    assert f"{masks} of them are masks that came in {frames} atomic frames, which a replay sends as one message " \
           f"each ({sent} messages)" in recovered.format(), recovered.format()

    endpoint = free_endpoint()
    sub = MaskSubscriber(endpoint, topics=[f"{NS}/{c}/frame" for c in CAMERAS], split_frames=False)
    try:
        summary = run_replay(ReplayConfig(file=path, max_rate=True, endpoint=endpoint, wait_first_subscriber_s=10),
                             threading.Event())
        assert (summary.messages, summary.frames, summary.framed_masks, summary.as_recorded) == (
            sent, frames, masks, written)
        got = [m for m in iter(lambda: sub.recv(timeout_s=2), None)]
    finally:
        sub.close()
    for i, cam in enumerate(CAMERAS):
        mine = [m for m in got if m.topic == f"{NS}/{cam}/frame"]
        assert [m.seq for m in mine] == list(range(N)), cam
        for m in mine:
            assert list(m.data) == NAMES
            for name in NAMES:
                np.testing.assert_array_equal(m.data[name].data, frame_masks(m.seq + 10 * i)[name])
