"""Leftovers of session s37's hunt on recordings and sources (h11 findings 2, 4 and 5):

- OpenCV's own console line for an undecodable image (``[ERROR:0@0.6] global grfmt_png.cpp:297
  readHeader IHDR chunk shall be first...``) no longer reaches stderr, on the first ``--loop`` pass
  or any later one; our own warning names the file once (``OPENCV_LOG_LEVEL`` still shows it).
- A split recording's ``perception.recording`` metadata describe that file: ``message_counts`` are
  the messages it holds (as its own MCAP statistics count them); the recording's totals are
  ``recording_message_counts``.
- ``perception replay`` names what is wrong with a foreign or odd MCAP file in its one error line:
  channels without wire headers, a file cut short inside its first record, a message recorded with
  the wrong schema.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from test_record import NS, free_endpoint
from test_record_split import N_FRAMES, record_frames

from perception.mcap_layout import IMAGE_MSGDEF, IMAGE_SCHEMA, METADATA_NAME, STRING_MSGDEF, STRING_SCHEMA

REPO = Path(__file__).resolve().parents[1]
OPENCV_LINE = "grfmt_png"  # the part of OpenCV's line that names its PNG decoder


def _perception(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("OPENCV_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL")}
    full_env |= env or {}
    return subprocess.run([sys.executable, "-m", "perception", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=full_env)


# --- OpenCV's console line for an unreadable image ------------------------------------------------


@pytest.fixture
def folder_with_a_bad_png(tmp_path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in (0, 1):
        cv2.imwrite(str(folder / f"00{i}.png"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    # A PNG signature, then noise: OpenCV's PNG decoder logs "IHDR chunk shall be first" at ERROR level.
    (folder / "002.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.integers(0, 255, 400, dtype=np.uint8).tobytes())
    return folder


def _run_looped(folder: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # 3 files, 8 frames out: the bad file is read on three passes of --loop.
    return _perception(["run", "--source", str(folder), "--loop", "--max-frames", "8",
                        "--endpoint", free_endpoint()], folder.parent, env)


def test_an_unreadable_image_draws_our_warning_once_and_never_opencvs_line(folder_with_a_bad_png):
    done = _run_looped(folder_with_a_bad_png)
    assert done.returncode == 0, done.stderr
    assert OPENCV_LINE not in done.stderr and "[ERROR:" not in done.stderr, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "skipped an unreadable frame" in line]
    assert len(warnings) == 1 and "002.png" in warnings[0] and "cannot be decoded" in warnings[0], done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["corrupt"] == 1


def test_opencv_log_level_still_shows_opencvs_own_line(folder_with_a_bad_png):
    # The README's way to see them: the same run with OPENCV_LOG_LEVEL set shows OpenCV's line.
    done = _run_looped(folder_with_a_bad_png, {"OPENCV_LOG_LEVEL": "INFO"})
    assert done.returncode == 0, done.stderr
    assert OPENCV_LINE in done.stderr, done.stderr


def test_eval_on_a_dataset_with_an_unreadable_image_prints_our_error_alone(folder_with_a_bad_png, tiny_model_path):
    # eval reads datasets without the sources package: perception/__init__.py silences OpenCV there.
    root = folder_with_a_bad_png.parent / "data"
    (root / "labels").mkdir(parents=True)
    folder_with_a_bad_png.rename(root / "images")
    for name in ("000", "001", "002"):
        cv2.imwrite(str(root / "labels" / f"{name}.png"), np.zeros((48, 64), np.uint8))
    (root / "classes.yaml").write_text("classes:\n  - {id: 0, name: road, color: [128, 64, 128]}\n"
                                       "  - {id: 1, name: car, color: [0, 0, 142]}\n"
                                       "task_groups: {drivable: [road], obstacle: [car]}\n")
    done = _perception(["eval", "--tasks", "--model", str(tiny_model_path), "--data", f"folder:{root}"], root)
    assert done.returncode == 2, done.stderr
    assert "[ERROR:" not in done.stderr and "[ WARN:" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("perception: error: cannot read image "), done.stderr


# --- per-file counts in a split recording's metadata ----------------------------------------------


def _file_facts(path: Path) -> tuple[dict[str, str], dict[str, int]]:
    """(the file's perception.recording metadata, the data messages it holds per wire topic)."""
    with open(path, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        meta = {m.name: m.metadata for m in reader.iter_metadata()}[METADATA_NAME]
    held = {}
    for channel_id, count in summary.statistics.channel_message_counts.items():
        channel = summary.channels[channel_id]
        if channel.metadata["perception.content"] == "data":
            held[channel.metadata["perception.wire_topic"]] = count
    return meta, held


def test_each_split_s_message_counts_are_the_messages_it_holds(tmp_path):
    out = tmp_path / "rec" / "run.mcap"
    summary = record_frames(out, split_size=0.02)
    files = summary.files
    assert len(files) >= 3, files
    totals = {t: c.messages for t, c in summary.counts.items()}
    per_file = []
    for index, file in enumerate(files):
        meta, held = _file_facts(file)
        assert json.loads(meta["message_counts"]) == held, (file, meta["message_counts"], held)
        per_file.append(held)
        recording = json.loads(meta["recording_message_counts"])
        if index == len(files) - 1:
            assert recording == totals  # the whole recording, each message once
        own_skipped, all_skipped = json.loads(meta["skipped_counts"]), json.loads(meta["recording_skipped_counts"])
        assert own_skipped.keys() == all_skipped.keys() and all(own_skipped[k] <= all_skipped[k] for k in own_skipped)
    # The splits' own counts add up to the totals, but for the info repeated at each later split's start.
    class_map = f"{NS}/class_map"
    assert sum(f.get(class_map, 0) for f in per_file) == N_FRAMES == totals[class_map]
    assert sum(f.get(f"{NS}/info", 0) for f in per_file) == totals[f"{NS}/info"] + len(files) - 1
    # A later split really held fewer than the running total: the counts are its own.
    assert per_file[-1][class_map] < N_FRAMES


def test_an_unsplit_recording_s_counts_are_its_own_and_it_has_no_totals_keys(tmp_path):
    summary = record_frames(tmp_path / "one.mcap")
    meta, held = _file_facts(summary.files[0])
    assert json.loads(meta["message_counts"]) == held == {t: c.messages for t, c in summary.counts.items()}
    assert "recording_message_counts" not in meta and "split_index" not in meta


# --- replay's error line for foreign and odd files ------------------------------------------------


def _ros2_file(path: Path, *, meta: bool = True, data_schema: str = IMAGE_SCHEMA, n: int = 3) -> Path:
    """A ROS 2 MCAP file written with mcap_ros2's own writer (not perception's): masks on
    /perception/front/drivable, with or without their /meta wire headers."""
    from mcap_ros2.writer import Writer

    from perception.mcap_layout import header_frame
    from perception.wire import mask_header

    h, w = 6, 8
    with open(path, "wb") as f:
        writer = Writer(f)
        image = writer.register_msgdef(IMAGE_SCHEMA, IMAGE_MSGDEF)
        string = writer.register_msgdef(STRING_SCHEMA, STRING_MSGDEF)
        for seq in range(n):
            t = 1_700_000_000_000_000_000 + seq * 100_000_000
            if data_schema == IMAGE_SCHEMA:
                writer.write_message("/perception/front/drivable", image, {
                    "header": {"stamp": {"sec": t // 10**9, "nanosec": t % 10**9}, "frame_id": "front"},
                    "height": h, "width": w, "encoding": "mono8", "is_bigendian": 0, "step": w,
                    "data": bytes(h * w)}, log_time=t, publish_time=t, sequence=seq)
            else:
                writer.write_message("/perception/front/drivable", string, {"data": "hello"},
                                     log_time=t, publish_time=t, sequence=seq)
            if meta:
                header = mask_header(height=h, width=w, compression="none", values="binary", seq=seq, capture_ns=t,
                                     publish_ns=t, frame_id="front", model_id="hand", latency_ms={})
                writer.write_message("/perception/front/drivable/meta", string,
                                     {"data": header_frame(header).decode()}, log_time=t, publish_time=t, sequence=seq)
        writer.finish()
    return path


def _replay_error(path: Path) -> str:
    done = _perception(["replay", str(path), "--max-rate", "--endpoint", free_endpoint()], path.parent)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("perception: error: ")]
    assert len(errors) == 1 and done.stderr.strip().splitlines()[-1] == errors[0], done.stderr
    return errors[0]


def test_a_hand_made_file_with_wire_headers_replays(tmp_path):
    # The control for the cases below: the same writer, with the /meta channel, replays whole.
    path = _ros2_file(tmp_path / "good.mcap")
    done = _perception(["replay", str(path), "--max-rate", "--endpoint", free_endpoint()], tmp_path)
    assert done.returncode == 0 and "replayed 3 messages" in done.stderr + done.stdout, done.stderr


def test_a_ros2_bag_without_wire_headers_is_named_not_a_perception_recording(tmp_path):
    error = _replay_error(_ros2_file(tmp_path / "nometa.mcap", meta=False))
    assert "not a perception recording" in error, error
    assert "3 messages on /perception/front/drivable" in error and "/perception/front/drivable/meta" in error, error
    assert "no perception topics" not in error


def test_a_file_cut_in_its_first_record_is_named_cut_short_not_by_python(tmp_path):
    path = tmp_path / "cut.mcap"
    path.write_bytes(_ros2_file(tmp_path / "whole.mcap").read_bytes()[:20])  # the magic and 12 bytes of a record
    error = _replay_error(path)
    assert "not a whole MCAP file" in error and "cut short" in error and "byte 20" in error, error
    assert "unpack" not in error and "buffer" not in error, error


def test_a_mask_recorded_with_the_wrong_schema_names_both_schemas(tmp_path):
    error = _replay_error(_ros2_file(tmp_path / "schema.mcap", data_schema=STRING_SCHEMA))
    assert f"is a {STRING_SCHEMA}" in error and f"recorded as {IMAGE_SCHEMA}" in error, error
    assert "does not match its" not in error, error


def test_an_mcap_file_without_messages_still_says_no_perception_topics(tmp_path):
    from mcap.writer import Writer

    path = tmp_path / "empty.mcap"
    with open(path, "wb") as f:
        writer = Writer(f)
        writer.start()
        writer.finish()
    error = _replay_error(path)
    assert "no perception topics in this recording" in error and "holds no messages" in error, error


def test_two_files_with_nothing_to_replay_are_named_as_files_not_a_python_list(tmp_path):
    # V1: "[PosixPath('a.mcap'), PosixPath('b.mcap')]: no message of it can be replayed".
    a, b = _ros2_file(tmp_path / "a.mcap", meta=False), _ros2_file(tmp_path / "b.mcap", meta=False)
    done = _perception(["replay", str(a), str(b), "--max-rate", "--endpoint", free_endpoint()], tmp_path)
    assert done.returncode == 2, done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith(f"perception: error: 2 files ({a} .. {b}): not a perception recording"), error
    assert "PosixPath" not in done.stderr and "[" not in error


def test_launch_check_names_a_replay_node_s_file_as_given(tmp_path):
    path = _ros2_file(tmp_path / "nometa.mcap", meta=False)
    (tmp_path / "l.yaml").write_text(yaml.safe_dump({"launch": [{"node": {
        "name": "rp", "kind": "replay", "parameters": {"file": str(path), "endpoint": free_endpoint()}}}]}))
    done = _perception(["launch", "--check", str(tmp_path / "l.yaml")], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "PosixPath" not in done.stderr and f"{path}: not a perception recording" in done.stderr, done.stderr


def test_importing_the_library_leaves_opencv_s_logging_to_the_program():
    # V1: 'import perception' set OPENCV_LOG_LEVEL=SILENT for the whole program; the commands set it.
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_LOG_LEVEL"}
    code = "import os, perception.subscribe, perception.datasets.folder; print(os.environ.get('OPENCV_LOG_LEVEL'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "None", done.stderr
