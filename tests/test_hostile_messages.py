"""Issue 15, findings 2-4: no malformed or hostile message crashes or exhausts a subscriber tool.

Each message of ``tests/hostile.py`` is skipped and counted by ``decode_message``, by
``MaskSubscriber``, by ``perception listen --save-dir`` and by the recorder (whose file keeps the
good messages), and a decode bomb leaves ``listen``'s peak RSS under 300 MB.
"""

from __future__ import annotations

import json
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq
from hostile import NS, TOPIC, good_header, good_message, hostile_messages, png_bomb, png_chunk, rle_run

from perception import contracts
from perception.encoding import DecodeError, get_codec
from perception.subscribe import MaskSubscriber, decode_message
from perception.wire import WireError, dump_header, topic_dir_name

HOSTILE = hostile_messages()


@pytest.mark.parametrize(("name", "frames"), HOSTILE, ids=[n for n, _ in HOSTILE])
def test_decode_message_rejects_each_hostile_message_with_a_wire_or_decode_error(name, frames):
    with pytest.raises((WireError, DecodeError)):
        decode_message(frames)


def test_decode_bombs_are_refused_before_allocating(monkeypatch):
    # The PNG's IHDR is read first: OpenCV never sees a 20000x20000 image claimed to be 10x10.
    monkeypatch.setattr(cv2, "imdecode", lambda *a, **k: pytest.fail("cv2.imdecode ran on a PNG whose IHDR lies"))
    with pytest.raises(DecodeError, match="20000x20000"):
        get_codec("png").decode(png_bomb(20000), height=10, width=10)
    with pytest.raises(DecodeError, match="more than the limit"):
        get_codec("rle").decode(rle_run(0, 40000 * 25000), height=25000, width=40000)
    # The limit is configurable: a reader that expects big masks raises it.
    assert get_codec("rle").decode(rle_run(7, 6), height=2, width=3, max_pixels=6).sum() == 42
    with pytest.raises(DecodeError, match="more than the limit of 5"):
        get_codec("mono8").decode(bytes(6), height=2, width=3, max_pixels=5)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("capture_ns", 10**400, "integer literal of 401 characters"),
        ("capture_ns", str(2**63), "capture_ns' is 9223372036854775808, outside"),
        ("capture_ns", 1_700_000_000_000_000_000, "capture_ns' is 1700000000000000000, expected a decimal string"),
        ("seq", -1, "seq' is -1, outside"),
        ("height", 0, "height' is 0, outside"),
        ("compression", "zip", "compression 'zip' is a compression this reader does not know"),
        ("values", "rgb", "values' is 'rgb'"),
        ("model_id", "m" * 1000, "model_id' has 1000 characters"),
        ("latency_ms", {"infer": "fast"}, "latency_ms.infer' is 'fast', expected number"),
        ("latency_ms", {str(i): 1.0 for i in range(100)}, "latency_ms' has 100 entries"),
        ("header", {"stamp": {"sec": 2**40, "nanosec": 0}, "frame_id": "f"}, "header.stamp.sec' is"),
        ("is_bigendian", 1, "is_bigendian 1"),
    ],
)
def test_every_header_field_is_checked_against_the_contract_schema(field, value, message):
    header = json.loads(dump_header(good_header()))  # as the wire has it: nanoseconds as decimal strings
    frames = [TOPIC.encode(), json.dumps({**header, field: value}).encode(), bytes(6)]
    with pytest.raises(WireError, match=message):
        decode_message(frames)


def _png(*chunks: bytes, filters: bytes = bytes(5), idat_split_by: bytes | None = None, ihdr_tail: bytes = bytes(3)) -> bytes:
    """A 7x5 greyscale PNG with ``chunks`` before its image data (``idat_split_by``: a chunk between
    two IDAT chunks), its rows starting with ``filters``, its IHDR ending with ``ihdr_tail``
    (compression method, filter method, interlace)."""
    data = zlib.compress(b"".join(bytes([f]) + bytes(range(10 * r, 10 * r + 7)) for r, f in enumerate(filters)))
    idat = (png_chunk(b"IDAT", data) if idat_split_by is None
            else png_chunk(b"IDAT", data[:6]) + idat_split_by + png_chunk(b"IDAT", data[6:]))
    ihdr = png_chunk(b"IHDR", struct.pack(">II", 7, 5) + b"\x08\x00" + ihdr_tail)
    return b"\x89PNG\r\n\x1a\n" + ihdr + b"".join(chunks) + idat + png_chunk(b"IEND", b"")


# Each once made libpng print a line on stderr in the Python reader (hunt 6d, 1.2), past the
# subscriber's rate-limited warnings. None: decoded, as the plain PNG; else the skip reason.
SILENT_PNGS = {
    "plain": (_png(), None),
    "bad filter byte": (_png(filters=b"\0\0\x09\0\0"), "bad adaptive filter value (9 starts row 2"),
    "zTXt inflating to 10 MB": (_png(png_chunk(b"zTXt", b"k\0\0" + zlib.compress(b"a" * 10**7, 9))), None),
    "iCCP inflating to 10 MB": (_png(png_chunk(b"iCCP", b"k\0\0" + zlib.compress(b"a" * 10**7, 9))), None),
    "PLTE in a greyscale image": (_png(png_chunk(b"PLTE", bytes(6))), None),
    "tRNS of the wrong length": (_png(png_chunk(b"tRNS", bytes(3))), None),
    "sBIT 9": (_png(png_chunk(b"sBIT", b"\x09")), None),
    "two gAMA": (_png(png_chunk(b"gAMA", bytes(4)), png_chunk(b"gAMA", bytes(4))), None),
    "IEND with data": (_png()[:-12] + png_chunk(b"IEND", b"xx"), None),
    "tEXt between IDAT chunks": (_png(idat_split_by=png_chunk(b"tEXt", b"a\0b")), "IDAT chunks are not consecutive"),
    "unknown critical chunk": (_png(png_chunk(b"ABCD", b"x")), "unknown critical chunk 'ABCD'"),
    "chunk type of digits": (_png(png_chunk(b"1234", b"x")), "not four ASCII letters"),
    "second IHDR": (_png(png_chunk(b"IHDR", bytes(13))), "second IHDR chunk"),
    "IHDR compression method 1": (_png(ihdr_tail=b"\x01\x00\x00"), "compression method 1 and filter method 0"),
}
_DECODE_EACH = """
import json, pickle, sys, zlib
from perception.subscribe import decode_message
for name, frames in pickle.load(open(sys.argv[1], "rb")):
    try:
        print(json.dumps([name, zlib.crc32(decode_message(frames).data.tobytes())]))
    except Exception as exc:
        print(json.dumps([name, f"{type(exc).__name__}: {exc}"]))
"""


def test_no_hostile_png_makes_libpng_print_a_line(tmp_path):
    """The reader refuses bad filter bytes and chunk layouts itself, naming why, and hands OpenCV
    only IHDR, IDAT and IEND (ancillary chunks and PLTE are ignored): libpng finds nothing to print
    on stderr. In a subprocess, so that its stderr (fd 2) is all there is."""
    header = dump_header(good_header(height=5, width=7, compression="png", values="class_ids"))
    cases = [(name, [f"{NS}/class_map".encode(), header, png]) for name, (png, _) in SILENT_PNGS.items()]
    (tmp_path / "cases.pkl").write_bytes(pickle.dumps(cases))
    done = subprocess.run([sys.executable, "-c", _DECODE_EACH, str(tmp_path / "cases.pkl")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    got = dict(json.loads(line) for line in done.stdout.splitlines())
    plain = got["plain"]
    assert isinstance(plain, int)
    for name, (_, reason) in SILENT_PNGS.items():
        if reason is None:
            assert got[name] == plain, (name, got[name])
        else:
            assert got[name].startswith("DecodeError: png payload") and reason in got[name], (name, got[name])


@pytest.mark.parametrize("topic", ["..", ".", "../../etc", "a/../../b", "x" * 256, "/", "perception/front/lane"])
def test_topic_folder_names_stay_inside_the_save_dir(tmp_path, topic):
    name = topic_dir_name(topic)
    assert name not in (".", "..") and "/" not in name and not name.startswith(".") and len(name) <= 111
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    assert topic_dir_name(topic) != topic_dir_name(topic + "_")  # distinct topics, distinct folders
    assert topic_dir_name("perception/front/lane") == "perception_front_lane"  # the documented layout


def _xpub() -> tuple[zmq.Context, zmq.Socket, str]:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.linger = 0
    pub.bind("tcp://127.0.0.1:*")
    return ctx, pub, pub.getsockopt_string(zmq.LAST_ENDPOINT)


def _wait_subscribed(pub: zmq.Socket, timeout_s: float = 30.0) -> None:
    if not pub.poll(int(timeout_s * 1000), zmq.POLLIN):
        raise AssertionError("the subscriber never subscribed")
    assert pub.recv()[:1] == b"\x01"


def _send_all(pub: zmq.Socket, good: list[list[bytes]]) -> None:
    for _, frames in HOSTILE:
        pub.send_multipart(frames)
    for frames in good:
        pub.send_multipart(frames)


def test_mask_subscriber_skips_and_counts_every_hostile_message(caplog):
    ctx, pub, endpoint = _xpub()
    try:
        with MaskSubscriber(endpoint) as sub:
            _wait_subscribed(pub)
            _send_all(pub, [good_message(seq) for seq in range(3)])
            got = []
            deadline = time.monotonic() + 30
            while len(got) < 3 and time.monotonic() < deadline:
                if (msg := sub.recv(timeout_s=0.5)) is not None:
                    got.append(msg.seq)
            assert got == [0, 1, 2]
            assert sub.counters.malformed == len(HOSTILE) and sub.counters.received == 3
    finally:
        pub.close(linger=0)
        ctx.term()
    assert "skipped a malformed message" in caplog.text
    assert caplog.text.count("skipped a malformed message") <= 3  # rate-limited: 1st, 10th, 100th...


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_listen_survives_hostile_messages_saves_safely_and_stays_under_300_mb(tmp_path):
    """Findings 2 (listen crashed), 3 (decode bombs) and 4 (--save-dir escaped for topic '..')."""
    ctx, pub, endpoint = _xpub()
    save = tmp_path / "saved"
    good = [good_message(0), good_message(1, topic=".."), good_message(2, topic="x" * 200)]
    # A legal mask at the pixel limit (16 MiB decoded, 5 bytes on the wire) may be allocated; bigger ones not.
    side = int(contracts.MAX_MASK_PIXELS**0.5)
    good.append([TOPIC.encode(), dump_header(good_header(seq=3, height=side, width=side, compression="rle")),
                 rle_run(0, side * side)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "perception", "listen", "--endpoint", endpoint, "--save-dir", str(save), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    last = save / "perception_front_lane" / "00000003.png"
    try:
        _wait_subscribed(pub)
        for _ in range(3):  # the bombs three times over: peak memory must not add up
            _send_all(pub, [])
        _send_all(pub, good)
        deadline = time.monotonic() + 60  # messages are handled in order: the last file means all were
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert last.exists(), "listen did not save the last good mask"
        peak_mb = _vm_hwm_mb(proc.pid)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        pub.close(linger=0)
        ctx.term()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "libpng" not in err and "WARN:" not in err  # no library line per hostile PNG, past the rate limit
    summary = json.loads(out)
    assert summary["skipped"]["malformed"] == 4 * len(HOSTILE) and summary["messages"] == len(good)
    assert peak_mb < 300, f"listen peaked at {peak_mb:.0f} MB"
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png"))
    assert all(p.startswith("saved/") for p in written) and len(written) >= 4, written
    assert not (tmp_path / "00000001.png").exists()


def test_recorder_survives_hostile_messages_and_keeps_the_good_ones(tmp_path):
    """Finding 2: 'perception record' died on the nested-JSON message and left 0 messages."""
    from perception.mcap_reader import read_recording
    from perception.record import RecordConfig, Recorder

    ctx, pub, endpoint = _xpub()
    out = tmp_path / "run.mcap"
    recorder = Recorder(RecordConfig(out=out, endpoint=endpoint, namespace=NS))
    stop = threading.Event()
    result = {}
    worker = threading.Thread(target=lambda: result.update(summary=recorder.run(stop)))
    worker.start()
    try:
        _wait_subscribed(pub)
        _send_all(pub, [good_message(seq) for seq in range(5)])
        deadline = time.monotonic() + 30
        while recorder.messages < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(timeout=30)
        pub.close(linger=0)
        ctx.term()
    summary = result["summary"]
    in_namespace = sum(1 for _, frames in HOSTILE if frames[0].startswith(f"{NS}/".encode()))
    assert summary.messages == 5 and summary.skipped["malformed"] == in_namespace
    assert "malformed" in summary.format()
    assert [m.seq for m in read_recording(out)] == list(range(5))


def test_replay_reader_skips_and_counts_a_recorded_header_that_breaks_the_contract(tmp_path, caplog):
    from perception.mcap_reader import ReadCounters, read_recording
    from perception.mcap_writer import McapMaskWriter
    from perception.subscribe import Message

    path = tmp_path / "tampered.mcap"
    writer = McapMaskWriter(path)
    for seq in range(4):
        header = good_header(seq=seq)
        if seq == 1:
            header["capture_ns"] = 10**30  # as a damaged or foreign file might hold
        if seq == 2:
            header["height"] = 3  # the image below is 2x3
        writer.write(Message(TOPIC, header, np.zeros((2, 3), np.uint8), 0, seq + 1))
    writer.close()
    counters = ReadCounters()
    assert [m.seq for m in read_recording(path, counters=counters)] == [0, 3]
    assert counters.malformed == 2 and "skipped a recorded message" in caplog.text


def test_view_draws_good_masks_among_hostile_messages(tmp_path, tiny_model_path):
    """``perception view --endpoint``: hostile messages and a JSON document on the mask topic are
    skipped; the good masks are drawn."""
    from perception.view import ViewConfig, run_view
    from perception.wire import json_header

    ctx, pub, endpoint = _xpub()
    topic = f"{NS}/class_map".encode()
    config = ViewConfig(endpoint=endpoint, namespace=NS, model=tiny_model_path, out=tmp_path / "frames", max_frames=3)
    result = {}
    viewer = threading.Thread(target=lambda: result.update(n=run_view(config)))
    viewer.start()
    try:
        _wait_subscribed(pub)
        seq = 0
        deadline = time.monotonic() + 60
        while viewer.is_alive() and time.monotonic() < deadline:
            pub.send_multipart([topic, dump_header(json_header(name="class_map", seq=seq, publish_ns=1)), b"{}"])
            for _, frames in HOSTILE:
                pub.send_multipart([topic, *frames[1:]])
            pub.send_multipart([topic, dump_header(good_header(seq=seq, values="class_ids")), bytes(6)])
            seq += 1
            viewer.join(timeout=0.2)
    finally:
        viewer.join(timeout=30)
        pub.close(linger=0)
        ctx.term()
    assert result["n"] == 3 and len(list((tmp_path / "frames").glob("view_*.png"))) == 3
