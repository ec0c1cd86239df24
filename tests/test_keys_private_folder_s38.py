"""``perception keys --out`` under umask 000 made its folder 0777 (H18 M7, V1): the secret files were
0600, but anyone could rename or replace them. The folders it makes are now 0700 whatever the
umask, and a folder already there that others may write is warned about."""

from __future__ import annotations

import logging
import os
import stat

from perception.curve_keys import create_key_pair


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_folders_keys_makes_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        public, secret = create_key_pair(tmp_path / "keys" / "car", "laptop")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "keys") == 0o700 and _mode(tmp_path / "keys" / "car") == 0o700
    assert _mode(secret) == 0o600 and _mode(public) == 0o644


def test_a_folder_others_may_write_is_warned_about(tmp_path, caplog):
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="perception.curve_keys"):
        create_key_pair(folder, "laptop")
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"key folder {folder} may be written by other users (mode 0777): they could replace the keys; "
                    f"chmod 700 {folder}"]
    caplog.clear()
    folder.chmod(0o700)
    create_key_pair(folder, "phone")
    assert caplog.records == []
