"""What a publisher can make a reader keep, print or allocate (hunt s34/h4 findings 3, 4, 5, 7, 8, 9, 12).

- Topics come from the network: every reader (``MaskSubscriber`` and so ``listen``, ``record``,
  ``view``; the C and JavaScript clients) keeps track of at most ``--max-topics`` of them, the
  namespace's ``<ns>/info`` counted from the start, and skips and counts messages on more; the three
  readers agree on which messages they take (the C and JavaScript ones once refused the node's own
  info after 64 others, which Python took).
- Received text printed to a terminal or a log has its non-printable characters escaped.
- ``listen --save-dir`` gives two topics two folders (``a_b`` and ``a/b`` once shared one).
- The C client prints integers exactly (seq 2^53 - 1 came out as 9.00719925474099e+15).
- ``view``'s legend of a node's class table is bounded; decoding an ``rle`` mask of one run a pixel
  takes no 64-bit copy of the runs.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
import zmq
from hostile import NS, good_header, good_message
from test_clients import _c_client, _js_client

from perception import contracts
from perception.encoding import get_codec
from perception.overlay import legend_rows, render_overlay
from perception.subscribe import MaskSubscriber
from perception.topic_stats import TopicStats
from perception.view_node import _draw_class_map, node_class_table
from perception.wire import MaskGeometry, dump_header, json_header, printable, topic_dir_name

CLASSES = [{"id": 0, "name": "road", "color_rgb": [128, 64, 128]}, {"id": 3, "name": "car", "color_rgb": [0, 0, 255]}]


def _xpub() -> tuple[zmq.Context, zmq.Socket, str]:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.linger = 0
    pub.sndhwm = 0  # queue everything: a slow reader must not lose a test message
    pub.bind("tcp://127.0.0.1:*")
    return ctx, pub, pub.getsockopt_string(zmq.LAST_ENDPOINT)


def _wait_subscribed(pub: zmq.Socket) -> None:
    """Until a subscription reaches the publisher (past the unsubscription of a reader before it)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if pub.poll(1000) and pub.recv()[:1] == b"\x01":
            return
    raise AssertionError("the reader never subscribed")


def _read_stream(argv: list[str], stream: list[list[bytes]], **popen) -> subprocess.CompletedProcess:
    """Start the reader ``argv`` against a new XPUB, send ``stream`` once it has subscribed, and
    return how it ended (its stdout and stderr as text)."""
    ctx, pub, endpoint = _xpub()
    proc = subprocess.Popen([*argv, "--endpoint", endpoint], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)
    try:
        _wait_subscribed(pub)
        for frames in stream:
            pub.send_multipart(frames)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        pub.close()
        ctx.term()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _info(topic: str, model_id: str = "node-model", classes: list | None = None) -> list[bytes]:
    doc = {"wire_version": 2, "model_id": model_id, "unknown_id": 255, "classes": CLASSES if classes is None else classes}
    return [topic.encode(), dump_header(json_header(name="info", seq=0, publish_ns=1)), json.dumps(doc).encode()]


def _class_map(seq: int) -> list[bytes]:
    header = good_header(height=2, width=3, values="class_ids", seq=seq, pub_seq=seq, geometry=MaskGeometry.full((2, 3)))
    return [f"{NS}/class_map".encode(), dump_header(header), bytes([0, 3, 3, 0, 0, 3])]


# ------------------------------------------------------------------------------------------------
# --max-topics: the same rule in the three readers
# ------------------------------------------------------------------------------------------------

#: A class map (its topic tracked), 300 other info topics, the node's own info, the class map again
#: at seq 2^53 - 1 (the largest every reader takes), and a JSON document on one topic more.
BIG_SEQ = 2**53 - 1
STREAM = [_class_map(1), *[_info(f"{NS}/n{i:03d}/info", model_id=f"other{i}") for i in range(300)],
          _info(f"{NS}/info"), _class_map(BIG_SEQ), [f"{NS}/late".encode(), dump_header(json_header(name="late", seq=0,
                                                                                                   publish_ns=1)), b"{}"]]
MAX_TOPICS = 10
#: Tracked: <ns>/info from the start, class_map, then the first 8 other info topics.
TAKEN = [f"{NS}/class_map", *[f"{NS}/n{i:03d}/info" for i in range(8)], f"{NS}/info", f"{NS}/class_map"]
OVER = len(STREAM) - len(TAKEN)


def test_the_python_reader_tracks_max_topics_and_always_takes_the_nodes_info(caplog):
    ctx, pub, endpoint = _xpub()
    got = []
    try:
        with caplog.at_level(logging.WARNING, logger="perception.subscribe"), \
                MaskSubscriber(endpoint, namespace=NS, max_topics=MAX_TOPICS) as sub:
            _wait_subscribed(pub)
            for frames in STREAM:
                pub.send_multipart(frames)
            deadline = time.monotonic() + 60
            while len(got) < len(TAKEN) and time.monotonic() < deadline:
                if (msg := sub.recv(timeout_s=0.5)) is not None:
                    got.append(msg)
            while sub.recv(timeout_s=0.5) is not None:  # the rest is skipped
                pass
    finally:
        pub.close()
        ctx.term()
    assert [m.topic for m in got] == TAKEN
    assert got[-1].seq == BIG_SEQ and sub.info["model_id"] == "node-model"
    assert len(sub.infos) <= MAX_TOPICS and f"{NS}/info" in sub.infos
    assert sub.counters.over_max_topics == OVER and sub.counters.malformed == 0
    warned = [r.getMessage() for r in caplog.records if "--max-topics" in r.getMessage()]
    assert len(warned) == 1 and f"{NS}/n008/info" in warned[0], warned


@pytest.mark.parametrize("name", ["c", "js"])
def test_the_c_and_js_readers_track_max_topics_as_python_does(name, tmp_path):
    """The same stream as the Python reader's: the same messages taken, the node's own info among
    them after 300 others (the clients once refused it after 64), one stderr line for the skipped
    ones and their count in the closing line; seq 2^53 - 1 printed exactly."""
    cmd, reason = (_c_client if name == "c" else _js_client)()
    if cmd is None:
        pytest.skip(f"the {name} subscriber cannot run here: {reason}")
    done = _read_stream([*cmd, "--namespace", NS, "--max-topics", str(MAX_TOPICS), "--duration", "60", "--idle", "2"],
                        STREAM)
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["topic"] for line in lines] == TAKEN, err
    assert f'"seq":{BIG_SEQ},' in out.splitlines()[-1]  # exactly, not 9.00719925474099e+15
    assert lines[-1]["classes_present"] == ["road", "car"]  # named by the node's own info
    assert "skipped a message" not in err
    assert err.count("--max-topics") == 2 and f"{NS}/n008/info" in err.splitlines()[0], err
    assert f"0 skipped, {OVER} on topics past the first {MAX_TOPICS} (--max-topics)" in err.splitlines()[-1], err


@pytest.mark.parametrize("name", ["c", "js"])
def test_the_c_and_js_readers_refuse_a_bad_max_topics(name):
    cmd, reason = (_c_client if name == "c" else _js_client)()
    if cmd is None:
        pytest.skip(f"the {name} subscriber cannot run here: {reason}")
    for value in ("0", "65537", "2.5", ""):
        done = subprocess.run([*cmd, "--max-topics", value], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--max-topics" in done.stderr, (value, done.stderr)


def test_max_topics_out_of_range_is_a_config_error():
    from perception.errors import ConfigError

    for bad in (0, 65537, True, 2.0):
        with pytest.raises(ConfigError, match="max_topics"):
            MaskSubscriber("tcp://127.0.0.1:9", namespace=NS, max_topics=bad)


def test_listen_keeps_bounded_topics_lines_and_folders(tmp_path):
    """A publisher on 40 topics against --max-topics 5: the summary, the report lines and the
    --save-dir folders hold 4 mask topics (the info topic takes the fifth place), the rest is one
    warning and a count."""
    save = tmp_path / "masks"
    stream = [good_message(1, topic=f"{NS}/t{i:02d}") for i in range(40)]
    stream += [good_message(2, topic=f"{NS}/t{i:02d}") for i in range(4)]  # with the first 4, what --count waits for
    done = _read_stream([sys.executable, "-m", "perception", "listen", "--namespace", NS, "--max-topics", "5",
                         "--save-dir", str(save), "--json", "--count", "8", "--duration", "60"], stream, cwd=tmp_path)
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, err
    summary = json.loads(out)
    assert sorted(summary["topics"]) == [f"{NS}/t{i:02d}" for i in range(4)]
    assert summary["skipped"]["over_max_topics"] == 36 and summary["max_topics"] == 5
    assert sorted(p.name for p in save.iterdir()) == [f"perception_front_t{i:02d}" for i in range(4)]
    assert err.count("is one past the 5 this reader keeps track of") == 1, err
    assert "on topics past the first 5 (--max-topics)" in err


def test_topic_stats_cost_little_per_topic():
    """listen keeps one TopicStats a topic: a few hundred bytes each, not a random generator's 2.5 kB."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [TopicStats(0.0) for _ in range(2000)]
        per_topic = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert per_topic < 1000, per_topic


# ------------------------------------------------------------------------------------------------
# Received text on a terminal
# ------------------------------------------------------------------------------------------------

def test_printable_escapes_what_a_terminal_would_act_on():
    assert printable("front") == "front"
    assert printable("é 😀 a\tb") == "é 😀 a\\tb"
    hostile = "\x1b]0;PWNED\x07\x1b[2J\r\nforged\u2028\u202e\x9b"
    shown = printable(hostile)
    assert shown.isprintable() and shown == "\\x1b]0;PWNED\\x07\\x1b[2J\\r\\nforged\\u2028\\u202e\\x9b"


def test_listen_echo_escapes_the_publishers_header_strings(tmp_path):
    ctx, pub, endpoint = _xpub()
    header = good_header(frame_id="\x1b]0;PWNED-TITLE\x07\x1b[31mRED", model_id="\x1b[2J\x1b[HCLEARED\r\nforged line")
    proc = subprocess.Popen([sys.executable, "-m", "perception", "listen", "--endpoint", endpoint, "--echo", "--count", "1",
                             "--duration", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        _wait_subscribed(pub)
        pub.send_multipart([f"{NS}/lane".encode(), dump_header(header), bytes(6)])
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        pub.close()
        ctx.term()
    assert proc.returncode == 0, err
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out
    echo = [line for line in out.splitlines() if line.startswith(f"{NS}/lane seq=1")]
    assert len(echo) == 1 and "frame_id=\\x1b]0;PWNED-TITLE\\x07\\x1b[31mRED" in echo[0], out
    assert "model=\\x1b[2J\\x1b[HCLEARED\\r\\nforged line" in echo[0]
    assert not any(line.startswith("forged line") for line in out.splitlines())


# ------------------------------------------------------------------------------------------------
# listen --save-dir folders
# ------------------------------------------------------------------------------------------------

def test_topic_folders_are_one_a_topic():
    topics = ["perception/front/a_b", "perception/front/a/b", "perception/front/a__b", "perception/front/a_/b",
              "perception/front/a/_b", "perception/front/a//b", "perception/front/a-b", "perception/front/a.b",
              "/perception/front/a_b", "perception/front/a b", "..", ".", "x" * 256, "x" * 255 + "y"]
    topics.append(topic_dir_name("perception/front/a b"))  # a topic named as another's hashed folder
    names = [topic_dir_name(t) for t in topics]
    assert len(set(names)) == len(topics), dict(zip(topics, names, strict=True))
    # The documented layout: / as _, _ as __, for every topic of the node.
    assert topic_dir_name("perception/front/lane") == "perception_front_lane"
    assert topic_dir_name("perception/front/class_map") == "perception_front_class__map"
    assert topic_dir_name("perception/front/obstacle/traffic_sign") == "perception_front_obstacle_traffic__sign"
    for name in names:
        assert name not in (".", "..") and not name.startswith(".") and "/" not in name and len(name) <= 111


def test_topic_folders_differ_on_a_file_system_that_ignores_case():
    # macOS and Windows: perception/front/Lane and perception/front/lane must not share a folder.
    topics = ["perception/front/lane", "perception/front/Lane", "perception/front/LANE", "perception/Front/lane",
              "perception/front/class_map", "perception/front/Class_map", "perception/front/class_Map",
              "perception/front/a b", "perception/front/A b", "X" * 200, "x" * 200, "perception/front/a_b",
              "perception/front/A_b", "perception/front/A/b", "perception/front/ä", "perception/front/Ä"]
    topics.append(topic_dir_name("perception/front/Lane"))  # a topic named as another's folder
    topics.append(topic_dir_name("perception/front/Lane").lower())
    names = [topic_dir_name(t) for t in topics]
    assert len({n.casefold() for n in names}) == len(topics), dict(zip(topics, names, strict=True))
    assert topic_dir_name("perception/front/lane") == "perception_front_lane"  # lower-case topics: unchanged
    assert topic_dir_name("perception/front/class_map") == "perception_front_class__map"
    # An upper-case topic keeps its readable characters, then its hash.
    assert re.fullmatch(r"perception_front_Lane-[0-9a-f]{10}", topic_dir_name("perception/front/Lane"))


def test_listen_saves_a_b_and_a_slash_b_apart_and_overwrite_finds_them(tmp_path):
    save = tmp_path / "masks"

    def listen(*extra: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "perception", "listen", "--endpoint", endpoint, "--namespace", NS,
                                 "--save-dir", str(save), "--count", "2", "--duration", "60", *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)

    ctx, pub, endpoint = _xpub()
    try:
        proc = listen()
        _wait_subscribed(pub)
        pub.send_multipart(good_message(1, topic=f"{NS}/a_b"))
        pub.send_multipart(good_message(2, topic=f"{NS}/a/b"))
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert sorted(p.relative_to(save).as_posix() for p in save.rglob("*.png")) == [
            "perception_front_a__b/00000001.png", "perception_front_a_b/00000002.png"]
        again = subprocess.run([sys.executable, "-m", "perception", "listen", "--endpoint", endpoint, "--save-dir", str(save)],
                               capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert again.returncode == 2 and "perception_front_a__b/00000001.png" in again.stderr, again.stderr
        proc = listen("--overwrite")
        _wait_subscribed(pub)
        pub.send_multipart(good_message(7, topic=f"{NS}/a_b"))
        pub.send_multipart(good_message(8, topic=f"{NS}/a_b"))
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        pub.close()
        ctx.term()
    assert sorted(p.relative_to(save).as_posix() for p in save.rglob("*.png")) == [
        "perception_front_a__b/00000007.png", "perception_front_a__b/00000008.png"]


# ------------------------------------------------------------------------------------------------
# view's legend of a node's table; rle decoding memory
# ------------------------------------------------------------------------------------------------

def test_a_huge_node_class_table_gets_a_bounded_legend():
    """255 classes of 256-character names turned 9x16 masks into 4102x2355 frames."""
    info = {"classes": [{"id": i, "name": "W" * 256, "color_rgb": [0, 255, 0]} for i in range(255)]}
    table = node_class_table(info)
    class_map = np.full((9, 16), 7, np.uint8)
    frame = _draw_class_map(np.zeros((9, 16, 3), np.uint8), class_map, table, alpha=0.5, caption="seq 1  m")
    # The legend's rows, and the caption's strip under a frame too small to hold it.
    assert frame.shape[0] <= 6 + 16 * legend_rows(9) + 32 and frame.shape[1] < 400, frame.shape
    assert all(len(c.name) <= 32 for c in table.classes)


def test_a_node_table_that_fits_is_drawn_as_render_overlay_draws_it():
    table = node_class_table({"classes": CLASSES})
    image = np.zeros((48, 64, 3), np.uint8)
    class_map = np.zeros((12, 16), np.uint8)
    class_map[4:, 8:] = 3
    np.testing.assert_array_equal(_draw_class_map(image, class_map, table, alpha=0.5, caption="seq 1  m"),
                                  render_overlay(image, class_map, table, alpha=0.5, caption="seq 1  m"))


def test_rle_of_one_run_a_pixel_decodes_without_a_64_bit_copy_of_the_runs():
    """A valid 4096 x 4096 rle mask of 16M one-pixel runs (80 MB): decoding once took a 128 MB copy
    of the run lengths on top of the 16 MB mask."""
    side = 4096
    runs = np.empty(side * side, dtype=contracts.RLE_RUN_DTYPE)
    runs["value"] = np.tile(np.array([0, 255], np.uint8), side * side // 2)
    runs["length"] = 1
    payload = runs.tobytes()
    del runs
    tracemalloc.start()
    try:
        mask = get_codec("rle").decode(payload, height=side, width=side)
        peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert mask.shape == (side, side) and mask[0, :4].tolist() == [0, 255, 0, 255] and int(mask.sum()) == 255 * side * side // 2
    assert peak_mb < 48, f"decoding took {peak_mb:.0f} MB"


def test_rle_decoded_in_chunks_matches_the_mask():
    rng = np.random.default_rng(3)
    mask = (rng.random((2000, 1500)) > 0.5).astype(np.uint8) * 255  # about 1.5M runs: more than one chunk of them
    codec = get_codec("rle")
    payload = codec.encode(mask)
    assert len(payload) // 5 > 2**20
    np.testing.assert_array_equal(codec.decode(payload, height=2000, width=1500), mask)


@pytest.mark.parametrize("char", ["\u202e", "\u200b", "\ufeff", "\u061c", "\U000e0041", "\u2066", "\u00ad"])
def test_a_topic_with_an_invisible_or_bidi_character_is_refused(char):
    """They cannot move the cursor, but they can reorder a printed line or make two topics look the
    same (verify s34/V1 NEW-3); every reader refuses them as control characters."""
    from perception.wire import WireError, check_topic

    with pytest.raises(WireError, match="control characters"):
        check_topic(f"{NS}/lane{char}".encode())
    assert check_topic(f"{NS}/voie_é".encode()) == f"{NS}/voie_é"  # other non-ASCII stays allowed
