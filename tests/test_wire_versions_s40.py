"""Readers meeting a publisher of another wire version, or a newer one (hunt s40 h33, findings 2-4).

- ``listen`` and the C and JavaScript readers that receive messages but can read none of them
  (another wire version) end with one line naming both versions and the fix, exit status 2 (as
  ``record``), and ``listen``'s line each second no longer asks whether the node runs (finding 2).
- The C and JavaScript readers name the fix for another wire version and say it rate-limited, as
  the Python reader (the 1st, 10th, 100th...), not once a message (finding 3).
- A message kind or compression a reader does not know, on an otherwise valid header, is skipped
  as from a newer publisher ("upgrade this reader"), counted with the version mismatches, never as
  malformed, by all three readers (finding 4).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
import zmq
from hostile import NS, good_header, good_message
from test_clients import _c_client, _js_client
from test_reader_bounds import _read_stream

from perception.subscribe_decode import NewerPublisherError, decode_message
from perception.wire import WireError, WireVersionError, dump_header, frame_header

NEWER = "this reader does not know (from a newer publisher?): upgrade this reader"


def _with_header(**changes) -> list[bytes]:
    """A valid mask message of ``good_header`` with ``changes`` in its (wire) header."""
    topic, raw, payload = good_message(seq=3)
    return [topic, json.dumps({**json.loads(raw), **changes}).encode(), payload]


V3 = _with_header(wire_version=3)
NEW_KIND = _with_header(kind="pointcloud")
NEW_COMPRESSION = _with_header(compression="zstd")


# --- the Python reader ------------------------------------------------------------------------


def test_a_new_kind_or_compression_on_a_valid_header_is_from_a_newer_publisher_not_malformed():
    with pytest.raises(NewerPublisherError, match=r"header kind 'pointcloud' is a message kind " + NEWER.replace("?", r"\?")
                       .replace("(", r"\(").replace(")", r"\)")):
        decode_message(NEW_KIND)
    with pytest.raises(NewerPublisherError, match=r"compression 'zstd' is a compression this reader does not know"):
        decode_message(NEW_COMPRESSION)
    # Inside an atomic frame too.
    head = frame_header(seq=3, pub_seq=3, capture_ns=1_700_000_000_000_000_000, publish_ns=1_700_000_000_000_000_001,
                        frame_id="front", masks=["lane"])
    part = json.loads(dump_header(good_header(seq=3))) | {"compression": "zstd"}
    with pytest.raises(NewerPublisherError, match="compression 'zstd'"):
        decode_message([f"{NS}/frame".encode(), dump_header(head), json.dumps(part).encode(), bytes(6)])
    # Another wire version stays a version mismatch, naming both versions and the fix.
    with pytest.raises(WireVersionError, match="wire version 3, this reader understands versions 1 and 2; run the same"):
        decode_message(V3)


@pytest.mark.parametrize("changes", [
    {"compression": "zstd", "height": 0},          # a new compression on a header wrong otherwise
    {"compression": "zstd", "values": "rgb"},
    {"compression": 7},                            # not a name at all
    {"kind": 7},
    {"kind": "pointcloud", "wire_version": "2"},   # a wire_version that is no integer
])
def test_a_header_wrong_otherwise_is_still_malformed(changes):
    with pytest.raises(WireError) as raised:
        decode_message(_with_header(**changes))
    assert not isinstance(raised.value, NewerPublisherError | WireVersionError), raised.value


class _Publisher:
    """An XPUB on ``endpoint`` sending ``messages`` over and over (every 20 ms) until closed."""

    def __init__(self, endpoint: str, messages: list[list[bytes]]):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(messages,), daemon=True)
        self.thread.start()

    def _run(self, messages):
        while not self.stop.wait(0.02):
            for frames in messages:
                self.sock.send_multipart(frames)

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()
        self.ctx.term()


def _listen(endpoint: str, messages: list[list[bytes]], *extra: str) -> subprocess.CompletedProcess:
    pub = _Publisher(endpoint, messages)
    try:
        return subprocess.run([sys.executable, "-m", "perception", "listen", "--endpoint", endpoint, "--namespace", NS,
                               "--duration", "2", "--interval", "0.4", *extra],
                              capture_output=True, text=True, timeout=120)
    finally:
        pub.close()


def test_listen_that_reads_nothing_of_another_wire_version_says_so_and_exits_2(free_tcp_port):
    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    done = _listen(endpoint, [V3], "--json")
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"perception: error: nothing read from {endpoint} in "), last
    assert "from another wire version or a newer publisher (message has wire version 3, this reader understands " \
           "versions 1 and 2; run the same perception version on both sides)" in last, last
    # The node is there: the lines each second say what arrives, not "is the node running?".
    assert "is the node running" not in done.stderr, done.stderr[-2000:]
    assert "no messages read yet from" in done.stderr and "were all skipped" in done.stderr, done.stderr[-2000:]
    summary = json.loads(done.stdout)  # the summary still comes first, on stdout
    assert summary["messages"] == 0 and summary["skipped"]["version_mismatch"] > 0
    assert summary["skipped"]["malformed"] == 0


def test_record_that_records_nothing_of_another_wire_version_names_both_versions(free_tcp_port, tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    pub = _Publisher(endpoint, [V3])
    try:
        done = subprocess.run([sys.executable, "-m", "perception", "record", "--endpoint", endpoint, "--namespace", NS,
                               "--duration", "2", "--out", str(tmp_path / "run.mcap")],
                              capture_output=True, text=True, timeout=120)
    finally:
        pub.close()
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"perception: error: nothing recorded from {endpoint}: every message received was skipped"), last
    assert "message has wire version 3, this reader understands versions 1 and 2; run the same perception version " \
           "on both sides" in last, last
    assert not (tmp_path / "run.mcap").exists()


def test_listen_counts_a_newer_publishers_kind_apart_from_malformed_messages(free_tcp_port):
    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    done = _listen(endpoint, [NEW_KIND, NEW_COMPRESSION], "--json")
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"header kind 'pointcloud' is a message kind {NEWER}" in done.stderr, done.stderr[-2000:]
    assert f"compression 'zstd' is a compression {NEWER}" in done.stderr, done.stderr[-2000:]
    assert "malformed message" not in done.stderr, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["skipped"]["malformed"] == 0 and summary["skipped"]["version_mismatch"] > 0


def test_listen_that_reads_something_beside_them_exits_0(free_tcp_port):
    done = _listen(f"tcp://127.0.0.1:{free_tcp_port}", [V3, good_message(seq=3, topic=f"{NS}/drivable")])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "from another wire version or a newer publisher" in done.stdout, done.stdout[-2000:]


# --- the C and JavaScript readers -------------------------------------------------------------


@pytest.fixture(params=["c", "js"])
def client(request) -> list[str]:
    cmd, reason = (_c_client if request.param == "c" else _js_client)()
    if cmd is None:
        pytest.skip(f"the {request.param} subscriber cannot run here: {reason}")
    return cmd


def _feed(client: list[str], stream: list[list[bytes]]) -> subprocess.CompletedProcess:
    """Run the client, send it ``stream`` once it subscribed (all queued: none dropped), and return
    it ended (``--idle``: once it handled everything)."""
    return _read_stream([*client, "--namespace", NS, "--duration", "100", "--idle", "1.5"], stream, errors="replace")


def test_a_client_of_another_wire_version_says_the_fix_rate_limited_and_exits_2(client):
    done = _feed(client, [V3] * 25)
    lines = done.stderr.strip().splitlines()
    skipped = [line for line in lines if "skipped a message" in line]
    # The 1st and the 10th of 25 alike, each naming both versions and the fix.
    assert len(skipped) == 2, done.stderr[-2000:]
    for line, count in zip(skipped, (1, 10), strict=True):
        assert line.endswith("wire version 3, this reader speaks version 2; run the same perception version on both "
                             f"sides ({count} so far)"), line
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 3 and "error: nothing read from tcp://127.0.0.1:" in lines[-1], done.stderr[-2000:]
    assert lines[-1].endswith("all 25 messages received were skipped, 25 from another wire version or a newer publisher "
                              "(wire version 3, this reader speaks version 2; run the same perception version on both "
                              "sides)"), lines[-1]
    assert done.stdout == ""


def test_a_client_skips_a_newer_publishers_kind_and_compression_naming_the_fix(client):
    good = good_message(seq=3, topic=f"{NS}/drivable")
    done = _feed(client, [NEW_KIND, NEW_COMPRESSION, good, NEW_KIND])
    assert done.returncode == 0, done.stderr[-2000:]
    skipped = [line for line in done.stderr.splitlines() if "skipped a message" in line]
    assert len(skipped) == 2, done.stderr[-2000:]  # the second pointcloud is its reason's 2nd: not said
    assert skipped[0].endswith(f"header kind 'pointcloud' is a message kind {NEWER} (1 so far)"), skipped[0]
    assert skipped[1].endswith(f"compression 'zstd' is a compression {NEWER} (1 so far)"), skipped[1]
    assert [json.loads(line)["topic"] for line in done.stdout.splitlines()] == [f"{NS}/drivable"]
    assert "1 masks, 0 JSON documents, 3 skipped" in done.stderr, done.stderr[-2000:]
