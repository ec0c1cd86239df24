"""What a new user walking the README top to bottom ran into around the node (session s34, hunt H3).

- ``replay --restamp`` shifts the ``obstacles`` document's ``capture_ns`` with the headers: it still
  names its frame's masks (README "JSON messages"), and ``listen`` reads every topic's latency as live;
- ``perception --help`` / ``listen --help`` speak of missing sequence numbers (README: ``missing``),
  and ``record --help`` does not call ``--out`` required where ``--recover`` needs none;
- a node of several cameras says its shared engine's warm-up once, with real figures;
- an encoding a topic cannot carry is a flag mistake: its one error line, before anything starts;
- the C and JavaScript clients name the classes present from ``info``'s class table only (the
  ``unknown_id`` is ``id255``, as every id the table does not name);
- the README's example blocks do not refuse their own earlier output when run in order.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_cli_errors import _said

from perception import contracts

REPO = Path(__file__).resolve().parents[1]
NS = "perception/walk"
HOUR_NS = 3600 * 10**9


# ---- replay --restamp ------------------------------------------------------------------------


def _hour_old_recording(path: Path, frames: int) -> list[int]:
    """A recording made an hour ago of ``frames`` frames: each one's class map and its obstacles
    document (``capture_ns`` in the payload, as the node sends it); the capture times."""
    from perception.mcap_writer import McapMaskWriter
    from perception.subscribe import Message
    from perception.wire import json_header, mask_header

    writer = McapMaskWriter(path)
    start, captures = time.time_ns() - HOUR_NS, []
    for seq in range(frames):
        capture = start + seq * 33_000_000
        captures.append(capture)
        header = mask_header(height=6, width=8, compression="none", values="class_ids", seq=seq, capture_ns=capture,
                             publish_ns=capture + 5_000_000, frame_id="walk", model_id="m", latency_ms={})
        writer.write(Message(f"{NS}/class_map", header, np.full((6, 8), seq, np.uint8), wire_bytes=1,
                             receive_ns=capture + 6_000_000))
        doc = {"seq": seq, "capture_ns": capture, "frame_id": "walk", "image_hw": [6, 8], "blobs": []}
        writer.write(Message(f"{NS}/obstacles", json_header(name="obstacles", seq=seq, publish_ns=capture + 5_000_000),
                             doc, wire_bytes=1, receive_ns=capture + 6_000_000))
    writer.close()
    return captures


def test_a_restamped_replay_moves_the_obstacles_capture_time_with_its_frame(tmp_path):
    """README: `--restamp` shifts the times to now, and an `obstacles` document carries "the
    frame's" `capture_ns`. It once kept the recorded one, so `listen` showed obstacles an hour old
    beside masks a few ms old."""
    from perception.replay import ReplayConfig, ReplayPublisher, run_replay
    from perception.subscribe import MaskSubscriber
    from perception.topic_stats import TopicStats

    frames = 4
    path = tmp_path / "old.mcap"
    recorded = _hour_old_recording(path, frames)
    publisher = ReplayPublisher("tcp://127.0.0.1:*")
    stop, worker = threading.Event(), None
    masks, obstacles, stats = {}, {}, {}
    try:
        with MaskSubscriber(publisher.endpoint, namespace=NS) as sub:
            assert publisher.wait_for_subscriber(30, stop), "the subscriber never subscribed"
            worker = threading.Thread(target=run_replay, args=(ReplayConfig(file=path, restamp=True), stop),
                                      kwargs={"publisher": publisher})
            worker.start()
            deadline = time.monotonic() + 60
            while (len(masks) < frames or len(obstacles) < frames) and time.monotonic() < deadline:
                msg = sub.recv(timeout_s=0.5)
                if msg is None:
                    continue
                stats.setdefault(msg.topic, TopicStats(time.monotonic())).add(msg, time.monotonic())
                (masks if msg.kind == "mask" else obstacles)[msg.seq] = msg
    finally:
        stop.set()
        if worker is not None:
            worker.join(timeout=30)
        publisher.close()
    assert sorted(masks) == sorted(obstacles) == list(range(frames))
    for seq in range(frames):
        # Moved to now, and the document still names the capture time of its frame's masks.
        assert masks[seq].capture_ns > recorded[seq] + HOUR_NS // 2
        assert obstacles[seq].data["capture_ns"] == masks[seq].capture_ns
    for topic in (f"{NS}/class_map", f"{NS}/obstacles"):
        p50_ms = stats[topic].summary(1.0)["latency_ms"]["p50"]
        assert p50_ms < 60_000, f"{topic}: latency {p50_ms} ms read from a recording an hour old"


def test_restamp_leaves_a_document_without_times_and_a_number_out_of_range_as_recorded():
    from perception.mcap_reader import RecordedMessage
    from perception.replay import _payload
    from perception.wire import json_header

    def payload(doc):
        msg = RecordedMessage(f"{NS}/obstacles", json_header(name="obstacles", seq=0, publish_ns=1), doc, 0)
        return json.loads(_payload(msg, 10**9))

    assert payload({"capture_ns": 5, "seq": 0}) == {"capture_ns": 5 + 10**9, "seq": 0}
    assert payload({"frames": 3}) == {"frames": 3}
    assert payload({"capture_ns": 2**63 - 1}) == {"capture_ns": 2**63 - 1}  # would leave int64: kept
    assert payload({"capture_ns": True}) == {"capture_ns": True}


# ---- help texts ------------------------------------------------------------------------------


def test_listen_is_described_by_missing_sequence_numbers_not_gaps(capsys):
    for argv in (["--help"], ["listen", "--help"]):
        code, out, _ = _said(argv, capsys)
        text = " ".join(out.split())
        assert code == 0 and "sequence gaps" not in text, argv
        assert "report rates, latency and missing sequence numbers" in text, argv


def test_record_help_says_recover_needs_no_out(capsys, tmp_path):
    """`--out` is required to record; the help of `--recover`, which works without it, says so."""
    code, out, _ = _said(["record", "--help"], capsys)
    text = " ".join(out.split())
    assert code == 0 and "[--out OUT]" in text
    recover_help = re.search(r"--recover FILE\|DIR (.*)$", text).group(1)
    assert "--out, not required with --recover" in recover_help, recover_help
    code, _, err = _said(["record", "--recover", str(tmp_path / "none.mcap")], capsys)
    assert code == 2 and "none.mcap not found" in err and "--out" not in err, err  # the file is missing, not --out


# ---- several cameras: the warm-up line -------------------------------------------------------


def test_a_node_of_several_cameras_says_its_warm_up_once_with_real_figures(tiny_model_path):
    done = subprocess.run(
        [sys.executable, "-m", "perception", "run", "--model", str(tiny_model_path), "--source", "a=synthetic",
         "--source", "b=synthetic", "--width", "64", "--height", "48", "--max-frames", "2", "--warmup", "2",
         "--threads", "1", "--endpoint", "tcp://127.0.0.1:*"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    assert len([line for line in lines if "engine warm-up for 2 cameras" in line]) == 1, done.stderr
    assert not [line for line in lines if "engine warm-up: " in line], done.stderr  # no "1 runs in 0 ms" per camera
    for camera in ("a", "b"):
        assert any(f"camera '{camera}': engine shared by 2 cameras (warm-up above); source synthetic" in line
                   for line in lines), done.stderr


# ---- encodings are checked with the other settings -------------------------------------------


def test_an_encoding_the_class_map_cannot_carry_is_a_flag_mistake_said_alone(tmp_path, capsys):
    """Before, the model loaded, a start-up-failed stats document was printed, then the error."""
    missing = tmp_path / "nope.onnx"  # the encoding's error comes first: nothing is loaded
    code, out, err = _said(["run", "--encoding", "class_map=bitpack", "--model", str(missing)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "encoding 'bitpack' keeps only 0/255 and cannot carry class_map" in err, err
    assert "use mono8, rle or png for class_map" in err
    assert _said(["run", "--encoding", "lane=bitpack", "--model", str(missing)], capsys)[2].count("not found") == 1


# ---- the C and JS clients name classes from info ---------------------------------------------


@pytest.mark.parametrize("name", ["c", "js"])
def test_the_clients_name_only_the_classes_of_infos_table(name, free_tcp_port, tmp_path):
    """README: mask lines give "the names of the classes present (from `info`)"; the unknown id 255
    is not in the class table, so it is `id255`, as any id the table does not name (it was
    "unknown", a name no info gives)."""
    from test_clients import _c_client, _finish, _js_client, _start

    from perception.publish import MaskPublisher
    from perception.synthetic.classes import SYNTHETIC_CLASSES

    cmd, reason = (_c_client if name == "c" else _js_client)()
    if cmd is None:
        pytest.skip(f"the {name} subscriber cannot run here: {reason}")
    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    classes = [{"id": c.id, "name": c.name, "color_rgb": list(c.color)} for c in SYNTHETIC_CLASSES.classes]
    class_map = np.array([[0, 3, contracts.UNKNOWN_CLASS_ID], [200, 8, 0]], np.uint8)
    with MaskPublisher(endpoint=endpoint, namespace=NS, encodings={"class_map": "rle"}) as pub:
        pub.set_info({"wire_version": 2, "frame_id": "front", "model_id": "tiny", "classes": classes, "ignore_id": None,
                      "unknown_id": contracts.UNKNOWN_CLASS_ID, "task_groups": {}, "topics": {}})
        proc = _start(cmd, endpoint, tmp_path / "dump.raw", "--namespace", NS, "--count", "1", "--duration", "60")
        try:
            assert pub.wait_for_subscribers(1, timeout_s=30), "the client never subscribed"
            pub.publish_masks(seq=0, capture_ns=time.time_ns(), frame_id="front", masks={"class_map": class_map},
                              latency_ms={"infer": 1.0}, model_id="tiny")
            lines, err = _finish(proc, name)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    mask = next(line for line in lines if line["kind"] == "mask")
    names = SYNTHETIC_CLASSES.names
    assert mask["classes_present"] == [names[0], names[3], names[8], "id200", "id255"], err


# ---- README example blocks, run in order -----------------------------------------------------


def _commands(block: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.split("#", 1)[0].strip() for line in joined.splitlines() if line.strip().startswith("perception ")]


def _writes(command: str) -> str | None:
    """The file a `perception record|view|synth` command refuses to write over (without --overwrite;
    `record --append` goes on after an earlier split recording there)."""
    words = command.split()
    if len(words) < 2 or "--overwrite" in words or "--recover" in words or "--append" in words:
        return None
    flag = {"record": "--out", "view": "--out", "synth": "--video"}.get(words[1])
    if flag is None:
        return None
    if flag in words:
        return words[words.index(flag) + 1]
    return "out/view.mp4" if words[1] == "view" and "--endpoint" not in words else None  # view's headless default


def test_readme_example_blocks_do_not_refuse_their_own_earlier_output():
    """Each block reads as a sequence: a later command writing what an earlier one wrote (without
    --overwrite) is refused, so the block fails when run top to bottom."""
    readme = (REPO / "README.md").read_text()
    checked = 0
    for block in re.findall(r"```(?:sh|bash)\n(.*?)```", readme, flags=re.S):
        written: dict[str, str] = {}
        for command in _commands(block):
            target = _writes(command)
            if target is None:
                continue
            checked += 1
            assert target not in written, f"{command!r} writes {target}, as {written.get(target)!r} did before it"
            written[target] = command
    assert checked >= 8  # the record, view and synth blocks were found


def test_the_publishing_line_names_the_per_class_topics_once_they_are_known(caplog):
    """--per-class-obstacles: the start line named the four fixed topics only (hunt s34/h3 L10)."""
    from perception import contracts
    from perception.publish import MaskPublisher

    with caplog.at_level("INFO", logger="perception.publish"), \
            MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace="perception/t") as pub:
        pub.declare_topics([*contracts.MASK_TOPICS, "obstacle/car"])
        pub.declare_topics(list(contracts.MASK_TOPICS))  # nothing new: no second line
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("publishing ")]
    assert len(lines) == 2 and "obstacle/car" not in lines[0] and "obstacle/car}" in lines[1], lines
