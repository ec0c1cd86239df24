"""A client whose ``.key`` in --curve-allow was changed to ANOTHER key is told so when refused, not
that its file was removed (V1 N6); a removed file keeps its own words."""

from __future__ import annotations

import logging
import os
import shutil
import time

from test_curve_allow_reload import DEADLINE_S, NS, _wait_for_log

from perception.curve_keys import create_key_pair, load_public_key
from perception.publish import MaskPublisher
from perception.subscribe import MaskSubscriber


def _refusal_of(tmp_path, caplog, change) -> str:
    caplog.set_level(logging.INFO, logger="perception")
    keys, allow = tmp_path / "keys", tmp_path / "allow"
    allow.mkdir()
    paths = {name: create_key_pair(keys, name) for name in ("server", "laptop", "laptop2", "spare")}
    for name in ("laptop", "spare"):
        shutil.copy(paths[name][0], allow)
    with MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, curve_secret_key_file=str(paths["server"][1]),
                       curve_allow_dir=str(allow)) as pub:
        expected = change(paths, allow)
        assert _wait_for_log(caplog, expected)
        laptop = load_public_key(paths["laptop"][0], role="client").decode()
        with MaskSubscriber(pub.endpoint, namespace=NS, curve_server_key=str(paths["server"][0]),
                            curve_key_file=str(paths["laptop"][1]), reconnect_ivl_ms=50) as sub:
            deadline = time.monotonic() + DEADLINE_S
            while not [r for r in caplog.records if f"client key {laptop}" in r.getMessage()] \
                    and time.monotonic() < deadline:
                pub.publish_json("stats", {"fps": 1.0})
                assert sub.recv(timeout_s=0.05) is None
    refused = [r.getMessage() for r in caplog.records if f"client key {laptop}" in r.getMessage()]
    assert refused, "the laptop's handshake was never refused"
    return refused[0]


def test_a_key_changed_to_another_is_refused_as_changed(tmp_path, caplog):
    def change(paths, allow):  # laptop.key now holds laptop2's key, written atomically
        shutil.copy(paths["laptop2"][0], allow / ".new")
        os.replace(allow / ".new", allow / "laptop.key")
        return "(changed laptop.key)"

    line = _refusal_of(tmp_path, caplog, change)
    assert "its .key in --curve-allow was changed to another key" in line, line
    assert "removed" not in line


def test_a_removed_key_is_still_refused_as_removed(tmp_path, caplog):
    def remove(_paths, allow):
        (allow / "laptop.key").unlink()
        return "(removed laptop.key)"

    line = _refusal_of(tmp_path, caplog, remove)
    assert "its .key was removed from --curve-allow" in line, line
