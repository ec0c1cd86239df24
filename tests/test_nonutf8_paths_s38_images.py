"""Image folders, globs and datasets whose names are not UTF-8 (H18's finding H2): one file named
``b'\\xfe_2.png'`` in a folder (a Latin-1 name from a FAT USB stick) crashed the node (SIGSEGV, exit
139, not a word) when its name was handed to OpenCV. Such a file is read like any other
(``perception.cvpath``: decoded from its bytes). Each command runs in a subprocess, so a crash fails
the test instead of pytest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import blocks
import cv2
import numpy as np
import pytest
import yaml

FF = os.fsdecode(b"\xff")  # a byte that is no UTF-8: Python holds it as the lone surrogate U+DCFF
FE = os.fsdecode(b"\xfe")
H, W = 48, 64


def _png(path, level: int) -> None:
    """A 16-bit PNG (its depth must survive the read) of grey ``level`` (0..255 after 65535 -> 255),
    written without handing OpenCV the name."""
    ok, encoded = cv2.imencode(".png", np.full((H, W, 3), level * 257, np.uint16))
    path.write_bytes(encoded.tobytes())


def _run(source: str, cwd) -> dict:
    done = subprocess.run([sys.executable, "-m", "perception", "run", "--source", source, "--endpoint",
                           "tcp://127.0.0.1:*"], capture_output=True, text=True, errors="backslashreplace", cwd=cwd,
                          timeout=120)
    assert done.returncode == 0, (source, done.returncode, done.stderr[-2000:])
    return json.loads(done.stdout)


def test_an_image_folder_reads_a_file_named_in_any_bytes_like_any_other(tmp_path):
    """H18's repro: ``fffile`` holding ``000.png`` and ``b'\\xfe_2.png'``; and a folder whose own name
    is not UTF-8."""
    plain = tmp_path / "fffile"
    plain.mkdir()
    _png(plain / "000.png", 10)
    _png(plain / f"{FE}_2.png", 20)
    odd = tmp_path / f"fr_{FF}"
    shutil.copytree(plain, odd)
    for source in (plain, odd):
        stats = _run(str(source), tmp_path)
        assert (stats["frames_in"], stats["corrupt"]) == (2, 0), source


@pytest.mark.parametrize("pattern", ["ffdir_*/*.png", "ffdir_*/*"], ids=["png", "any-suffix"])
def test_a_glob_reads_files_named_in_any_bytes(tmp_path, pattern):
    """``'ffdir_*/*'`` also asks OpenCV whether a file without an image suffix is an image."""
    folder = tmp_path / f"ffdir_{FF}"
    folder.mkdir()
    _png(folder / f"a{FF}.png", 10)
    _png(folder / f"b{FE}.png", 20)
    shutil.copy(folder / f"a{FF}.png", folder / f"c{FF}.frame")  # an image by its bytes, not its suffix
    (folder / f"d{FF}.txt").write_text("not an image")
    stats = _run(pattern, tmp_path)
    assert (stats["frames_in"], stats["corrupt"]) == (3 if pattern.endswith("*") else 2, 0)


_DATASET_SCRIPT = """
import sys
from perception.datasets import open_dataset
from perception.frames import bench_frames
root, folder = sys.argv[1:3]  # os.fsdecode(d): bytes that are no UTF-8 kept
image, label = open_dataset("folder:" + root, split="val")[0]
frames = bench_frames((48, 64), 3, 0, folder)
print(image.shape, label.shape, len(frames))
"""


def test_a_dataset_and_bench_frames_read_files_named_in_any_bytes(tmp_path):
    """``eval --data folder:`` and ``bench engine --frames`` read through the same reader."""
    root = tmp_path / f"data_{FF}"
    table = {"classes": [{"id": i, "name": n, "color": [40 * i, 40, 40]}
                         for i, n in enumerate(("background", "road", "lane_marking", "car"))],
             "ignore_id": 255, "task_groups": {"drivable": ["road"], "lane": ["lane_marking"], "obstacle": ["car"]}}
    (root / "val" / "images").mkdir(parents=True)
    (root / "val" / "labels").mkdir()
    (root / "val" / "classes.yaml").write_text(yaml.safe_dump(table))
    image, label = blocks.scene(np.random.default_rng(0))
    for folder, data in (("images", image), ("labels", label)):
        ok, encoded = cv2.imencode(".png", data)
        (root / "val" / folder / f"{FE}000.png").write_bytes(encoded.tobytes())
    frames = tmp_path / f"fr_{FF}"
    frames.mkdir()
    for i in range(3):
        _png(frames / f"{FE}{i}.png", 10 * i)
    done = subprocess.run([sys.executable, "-c", _DATASET_SCRIPT, str(root), str(frames)], capture_output=True,
                          text=True, errors="backslashreplace", cwd=tmp_path, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.split() == [*f"{image.shape} {label.shape}".split(), "1"]  # every 10th frame: 1 of 3
