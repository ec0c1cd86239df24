"""A ``--curve-allow`` folder that other users may write was used without a word (H18): anyone who
can write there adds a ``.key`` and is admitted, since the folder is followed while the node runs."""

from __future__ import annotations

import logging

import pytest
import zmq

from perception.curve_keys import create_key_pair
from perception.security import start_authenticator


@pytest.mark.parametrize("mode, warned", [(0o777, True), (0o775, True), (0o1777, True), (0o755, False), (0o700, False)])
def test_an_allow_list_folder_others_may_write_is_warned_about(tmp_path, caplog, mode, warned):
    allow = tmp_path / "allowed"
    create_key_pair(allow, "laptop")
    (allow / "laptop.key_secret").unlink()
    allow.chmod(mode)
    context = zmq.Context()
    try:
        with caplog.at_level(logging.WARNING, logger="perception.security"):
            auth = start_authenticator(context, allow)
        auth.stop()
    finally:
        context.term()
    said = [r.getMessage() for r in caplog.records if "may be written by other users" in r.getMessage()]
    assert said == ([f"CURVE allow-list directory {allow} may be written by other users (mode {mode:04o}): any of "
                     f"them could add a .key and be admitted; chmod go-w {allow}"] if warned else [])
