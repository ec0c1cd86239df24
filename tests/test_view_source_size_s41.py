"""``perception view --endpoint ... --source S``: the masks of a node are drawn over the frames of
``S`` paired by seq. A ``--source`` whose frames are of another size than the node's (its masks'
headers state the node's frame size) is not the node's source: the view said nothing and drew every
mask over the wrong frames (s40 F33a). It now stops with one line naming both sizes and the fix."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
from test_view_node_table import NS, _info, _serve, _written

from perception.errors import ConfigError
from perception.view import ViewConfig


def _images(folder, count: int = 300, hw: tuple[int, int] = (24, 32)):
    """A numbered image folder long enough for the seqs a view joins at."""
    folder.mkdir()
    for i in range(count):
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.full((*hw, 3), i % 250, np.uint8))
    return folder


def test_a_source_of_the_nodes_size_is_drawn(tmp_path):
    config = ViewConfig(endpoint="tcp://127.0.0.1:1", namespace=NS, source=str(_images(tmp_path / "in")),
                        out=tmp_path / "frames", max_frames=3, duration_s=15)
    result, _ = _serve(config, info=_info())
    assert result == 3, result
    assert len(_written(tmp_path / "frames")) == 3


def test_a_source_of_another_size_is_refused_naming_both_sizes(tmp_path):
    config = ViewConfig(endpoint="tcp://127.0.0.1:1", namespace=NS,
                        source=str(_images(tmp_path / "in", hw=(48, 64))),
                        out=tmp_path / "frames", max_frames=3, duration_s=15)
    result, _ = _serve(config, info=_info())
    assert isinstance(result, ConfigError), result
    said = str(result)
    assert "gives 64x48 frames" in said and "the node's 32x24 frames" in said and "not the node's source" in said, said
    assert said.startswith(f"nothing rendered, so nothing written to {tmp_path / 'frames'}"), said
    assert not _written(tmp_path / "frames")


def test_the_cli_says_it_in_one_line(tmp_path, capsys):
    """Through the CLI: exit 2 (the flag to change), one line, no traceback."""
    from test_view_node_table import _class_map

    from perception.cli import main as cli_main
    from perception.publish import MaskPublisher

    pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, sndhwm=1000)
    result = {}
    viewer = threading.Thread(target=lambda: result.setdefault("code", cli_main(
        ["view", "--endpoint", pub.endpoint, "--namespace", NS, "--source", str(_images(tmp_path / "in", hw=(48, 64))),
         "--out", str(tmp_path / "frames"), "--duration", "15"])))
    viewer.start()
    try:
        pub.set_info(_info())
        seq = 0
        while viewer.is_alive() and seq < 280:
            pub.publish_masks(seq=seq, capture_ns=time.time_ns(), frame_id="v", masks={"class_map": _class_map(seq)},
                              latency_ms={}, model_id="camvid-test-24x32")
            seq += 1
            viewer.join(timeout=0.04)
    finally:
        viewer.join(timeout=20)
        pub.close()
    assert result.get("code") == 2, result
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("perception: error:")]
    assert len(lines) == 1 and "not the node's source" in lines[0] and "Traceback" not in err, err
