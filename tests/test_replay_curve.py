"""`perception replay --curve-secret-key FILE --curve-allow DIR`: a recording of an encrypted node
re-published encrypted, with the node's own allow-list behaviour (the same XPUB core and
``perception/security.py``): allowed clients receive, others receive nothing, a key removed from the
folder cuts its client (counted in the summary), bad key files are one line and exit 2.

Waits poll with generous deadlines; no timing is asserted.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from test_curve_allow_reload import _wait_for_log

from perception.commands.replay import add_arguments
from perception.curve_keys import create_key_pair, load_public_key
from perception.flags import config_from_flags
from perception.replay import ReplayConfig, ReplaySummary, run_replay
from perception.subscribe import MaskSubscriber

NS = "perception/secure"
N_FRAMES = 8
DEADLINE_S = 20.0


def _class_map(seq: int) -> np.ndarray:
    return np.random.default_rng(seq).integers(0, 11, (24, 32), dtype=np.uint8)


def _write_recording(path) -> None:
    """``N_FRAMES`` class maps and stats documents, 10 ms apart."""
    from perception.mcap_writer import McapMaskWriter
    from perception.subscribe import Message
    from perception.wire import json_header, mask_header

    writer = McapMaskWriter(path)
    for seq in range(N_FRAMES):
        received = 1_000_000_000 + seq * 10_000_000
        header = mask_header(height=24, width=32, compression="none", values="class_ids", seq=seq,
                             capture_ns=received, publish_ns=received, frame_id="secure", model_id="m", latency_ms={})
        writer.write(Message(f"{NS}/class_map", header, _class_map(seq), wire_bytes=1, receive_ns=received))
        writer.write(Message(f"{NS}/stats", json_header(name="stats", seq=seq, publish_ns=received), {"seq": seq},
                             wire_bytes=1, receive_ns=received))
    writer.close()


@pytest.fixture
def setup(tmp_path, caplog):
    """keys/ (server, laptop, other, made by `perception keys`' code), allow/ holding laptop.key
    only, and rec.mcap."""
    caplog.set_level(logging.INFO, logger="perception")
    paths = {name: create_key_pair(tmp_path / "keys", name) for name in ("server", "laptop", "other")}
    allow = tmp_path / "allow"
    allow.mkdir()
    shutil.copy(paths["laptop"][0], allow)
    _write_recording(tmp_path / "rec.mcap")
    return tmp_path, paths, allow


def _config(argv: list[str]) -> ReplayConfig:
    """The config `perception replay ARGV` runs with (its own parser and flags)."""
    parser = argparse.ArgumentParser(prog="perception replay")
    add_arguments(parser)
    return config_from_flags(ReplayConfig, parser.parse_args(argv), source="perception replay")


class _Replay:
    """``run_replay`` in a thread (looping), stopped and joined on exit; ``summary`` afterwards."""

    def __init__(self, config: ReplayConfig) -> None:
        self.stop = threading.Event()
        self.summary: ReplaySummary | None = None
        self._thread = threading.Thread(target=self._run, args=(config,), daemon=True)

    def _run(self, config: ReplayConfig) -> None:
        self.summary = run_replay(config, self.stop)

    def __enter__(self) -> _Replay:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self._thread.join(timeout=DEADLINE_S)
        assert not self._thread.is_alive()


def _curve_argv(tmp_path, paths, allow, endpoint: str) -> list[str]:
    return [str(tmp_path / "rec.mcap"), "--loop", "--endpoint", endpoint, "--wait-first-subscriber", "30",
            "--curve-secret-key", str(paths["server"][1]), "--curve-allow", str(allow)]


def _subscriber(endpoint: str, paths, name: str) -> MaskSubscriber:
    return MaskSubscriber(endpoint, namespace=NS, curve_server_key=str(paths["server"][0]),
                          curve_key_file=str(paths[name][1]), reconnect_ivl_ms=50, reconnect_ivl_max_ms=200)


def test_an_allowed_client_receives_the_replayed_masks_and_a_client_not_allowed_nothing(setup, caplog, free_tcp_port):
    tmp_path, paths, allow = setup
    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    with _Replay(_config(_curve_argv(tmp_path, paths, allow, endpoint))) as replay, \
            _subscriber(endpoint, paths, "other") as other, _subscriber(endpoint, paths, "laptop") as laptop:
        # The allowed laptop gets every recorded class map, exact.
        masks: dict[int, np.ndarray] = {}
        deadline = time.monotonic() + DEADLINE_S
        while len(masks) < N_FRAMES and time.monotonic() < deadline:
            msg = laptop.recv(timeout_s=0.1)
            if msg is not None and msg.topic == f"{NS}/class_map":
                masks[msg.seq] = msg.data
        assert sorted(masks) == list(range(N_FRAMES))
        for seq, mask in masks.items():
            np.testing.assert_array_equal(mask, _class_map(seq))
        # The other key's handshake is refused, audited with its key, and it never receives,
        # while the laptop goes on receiving another pass of the recording.
        other_key = load_public_key(paths["other"][0], role="test").decode()
        refused = _wait_for_log(caplog, f"client key {other_key}")
        assert refused and "CURVE handshake refused" in refused[0]
        more, deadline = 0, time.monotonic() + DEADLINE_S
        while more < 2 * N_FRAMES and time.monotonic() < deadline:
            more += laptop.recv(timeout_s=0.1) is not None
            assert other.recv(timeout_s=0.0) is None
        assert more >= 2 * N_FRAMES
    assert replay.summary.curve_rejections >= 1
    assert "handshake" in replay.summary.format(tmp_path / "rec.mcap")


def test_a_key_removed_from_the_folder_cuts_its_client_and_is_counted(setup, caplog, free_tcp_port):
    tmp_path, paths, allow = setup
    endpoint = f"tcp://127.0.0.1:{free_tcp_port}"
    with _Replay(_config(_curve_argv(tmp_path, paths, allow, endpoint))) as replay, \
            _subscriber(endpoint, paths, "laptop") as laptop:
        assert any(laptop.recv(timeout_s=0.1) is not None for _ in range(int(DEADLINE_S / 0.1)))
        (allow / "laptop.key").unlink()
        lines = _wait_for_log(caplog, "(removed laptop.key)")
        assert lines == [f"CURVE allow-list: 0 client keys from {allow} (removed laptop.key); no client is admitted; "
                         "1 connected client with a removed key disconnected, new handshakes with it refused"]
        # Messages already queued may still arrive; then nothing more while the replay goes on.
        quiet_since, deadline = time.monotonic(), time.monotonic() + DEADLINE_S
        while time.monotonic() - quiet_since < 1.5 and time.monotonic() < deadline:
            if laptop.recv(timeout_s=0.05) is not None:
                quiet_since = time.monotonic()
        assert time.monotonic() - quiet_since >= 1.5, "the revoked client still receives the replay"
    assert replay.summary.curve_disconnects == 1
    assert "1 client cut (key revoked in --curve-allow: removed, changed or unreadable)" in replay.summary.format(tmp_path / "rec.mcap")


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_a_secret_key_other_users_can_read_draws_the_nodes_warning(setup, caplog):
    tmp_path, paths, allow = setup
    secret = paths["server"][1]
    secret.chmod(0o644)
    summary = run_replay(_config([str(tmp_path / "rec.mcap"), "--max-rate", "--endpoint", "tcp://127.0.0.1:*",
                                  "--curve-secret-key", str(secret), "--curve-allow", str(allow)]), threading.Event())
    assert summary.messages == 2 * N_FRAMES
    warned = [r.getMessage() for r in caplog.records if "readable by other users" in r.getMessage()]
    assert warned == [f"server secret key file {secret} is readable by other users (mode 0644); keep it private: "
                      f"chmod 600 {secret}"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--curve-secret-key", "keys/server.key", "--curve-allow", "allow"],
         "server secret key file keys/server.key has no secret key; pass the .key_secret file made by `perception keys`"),
        (["--curve-secret-key", "keys/missing.key_secret", "--curve-allow", "allow"],
         "server secret key file keys/missing.key_secret not found; create one with `perception keys --out DIR --name NAME`"),
        (["--curve-secret-key", "keys/server.key_secret", "--curve-allow", "keys/laptop.key"],
         "CURVE allow-list directory keys/laptop.key is a file, not a folder; give the folder that holds the "
         "subscribers' public .key files (e.g. keys)"),
        (["--curve-secret-key", "keys/server.key_secret", "--curve-allow", "empty"],
         "CURVE allow-list directory empty holds no .key files; copy each subscriber's public .key into it"),
        (["--curve-allow", "allow"], "replay: --curve-allow needs --curve-secret-key (the server's .key_secret file)"),
    ],
    ids=["public-key-as-secret", "missing-secret", "key-file-as-folder", "empty-folder", "allow-without-secret"],
)
def test_bad_key_files_are_one_line_and_exit_2(setup, flags, message):
    tmp_path, _, _ = setup
    (tmp_path / "empty").mkdir()
    done = subprocess.run([sys.executable, "-m", "perception", "replay", "rec.mcap", "--max-rate",
                           "--endpoint", "tcp://127.0.0.1:*", *flags],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "replayed" not in done.stdout
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert errors == [f"perception: error: {message}"]
