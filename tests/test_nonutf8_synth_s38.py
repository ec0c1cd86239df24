"""``perception synth`` with output names that are not UTF-8 (a Latin-1 folder on a USB stick): its
``--out``, ``--video`` and ``--contact-sheet`` went to OpenCV as such names, which crashed the
process (SIGSEGV, exit 139, nothing printed). Run in a subprocess, so a crash fails the test."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2

FF = os.fsdecode(b"\xff")


def _synth(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perception", "synth", "--count", "3", "--size", "48x64", *args],
                          capture_output=True, text=True, errors="backslashreplace", cwd=cwd, timeout=120)


def test_synth_writes_a_dataset_and_a_video_under_names_that_are_not_utf8(tmp_path):
    done = _synth("--out", f"data_{FF}", "--video", f"drive_{FF}.mp4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    images = sorted((tmp_path / f"data_{FF}" / "images").iterdir())
    assert [p.name for p in images] == ["000000.png", "000001.png", "000002.png"]
    os.link(images[0], tmp_path / "plain.png")  # OpenCV is handed a plain name only
    assert cv2.imread(str(tmp_path / "plain.png")).shape == (48, 64, 3)
    os.link(tmp_path / f"drive_{FF}.mp4", tmp_path / "plain.mp4")
    cap = cv2.VideoCapture(str(tmp_path / "plain.mp4"))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 3
    cap.release()


def test_synth_writes_a_contact_sheet_under_a_name_that_is_not_utf8(tmp_path):
    done = _synth("--contact-sheet", f"sheet_{FF}.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    os.link(tmp_path / f"sheet_{FF}.png", tmp_path / "plain.png")
    assert cv2.imread(str(tmp_path / "plain.png")) is not None


def test_a_url_holding_bytes_that_are_not_utf8_is_one_line_not_a_crash(tmp_path):
    done = subprocess.run([sys.executable, "-m", "perception", "run", "--source", f"rtsp://cam:pw@127.0.0.1:9/a{FF}",
                           "--max-frames", "1"], capture_output=True, text=True, errors="backslashreplace",
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "perception: error: the URL 'rtsp://***@127.0.0.1:9/a\\xff' holds bytes that are not UTF-8, which OpenCV "
        "cannot take; percent-encode them in a URL (\\xff as %FF) or write the text in UTF-8")
