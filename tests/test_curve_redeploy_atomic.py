"""The README's atomic re-deploys of a --curve-allow folder keep an unchanged key's client connected
(V1 N7: removal is immediate, so `rm` then `cp` may cut it; a rename never leaves the key out)."""

from __future__ import annotations

import logging
import os
import shutil

from test_curve_allow_reload import NS, _receives, _wait_for_log

from perception.curve_keys import create_key_pair
from perception.publish import MaskPublisher
from perception.subscribe import MaskSubscriber


def _redeploy(tmp_path, caplog, redeploy) -> None:
    caplog.set_level(logging.INFO, logger="perception")
    keys = tmp_path / "keys"
    paths = {name: create_key_pair(keys, name) for name in ("server", "laptop", "other")}
    v1 = tmp_path / "allowed.v1"
    v1.mkdir()
    shutil.copy(paths["laptop"][0], v1)
    allowed = tmp_path / "allowed"
    allowed.symlink_to(v1.name)
    with MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, curve_secret_key_file=str(paths["server"][1]),
                       curve_allow_dir=str(allowed)) as pub, \
            MaskSubscriber(pub.endpoint, namespace=NS, curve_server_key=str(paths["server"][0]),
                           curve_key_file=str(paths["laptop"][1]), reconnect_ivl_ms=50) as laptop:
        assert _receives(pub, laptop)
        redeploy(tmp_path, paths)  # the same laptop.key again, and other.key added
        assert _wait_for_log(caplog, "(added other.key)")
        assert pub._core.curve_disconnects == 0
        assert _receives(pub, laptop)  # (its connection is checked above; the wait is for a loaded machine)
    assert not [r for r in caplog.records if "disconnected" in r.getMessage() or "removed" in r.getMessage()]


def test_a_symbolic_link_switched_to_a_new_folder_in_one_rename(tmp_path, caplog):
    def switch(root, paths):
        v2 = root / "allowed.v2"
        v2.mkdir()
        for name in ("laptop", "other"):
            shutil.copy(paths[name][0], v2)
        (root / "allowed.tmp").symlink_to(v2.name)
        os.replace(root / "allowed.tmp", root / "allowed")  # mv -T allowed.tmp allowed

    _redeploy(tmp_path, caplog, switch)


def test_each_file_moved_over_its_key_from_a_hidden_name(tmp_path, caplog):
    def move_in(root, paths):
        folder = root / "allowed"
        for name in ("laptop", "other"):
            shutil.copy(paths[name][0], folder / f".{name}.key.tmp")
            os.replace(folder / f".{name}.key.tmp", folder / f"{name}.key")

    _redeploy(tmp_path, caplog, move_in)
