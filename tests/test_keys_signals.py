"""``perception keys`` stopped by Ctrl-C or SIGTERM: the README promises the old pair or the new one,
and no temporary file (one holds a secret) left behind.

The signal is sent by the command to itself at an exact point (after the first rename; during the
first fsync) by a wrapper around ``os.replace`` / ``os.fsync`` in the child process, so each case is
deterministic.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import zmq.auth

from perception.security import create_key_pair

CHILD = """
import os, signal, sys
real = getattr(os, {call!r})
calls = []
def wrapped(*args):
    result = real(*args)
    calls.append(args)
    if len(calls) == 1:
        os.kill(os.getpid(), signal.{signal})
    return result
setattr(os, {call!r}, wrapped)
from perception.cli import main
sys.argv = ["perception", "keys", "--out", "k", "--name", "n", "--overwrite"]
sys.exit(main())
"""


def run_keys_signalled(folder, call: str, sig: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD.format(call=call, signal=sig)], cwd=folder,
                          capture_output=True, text=True, timeout=60)


def pair(folder) -> tuple[bytes, bytes]:
    public, _ = zmq.auth.load_certificate(folder / "k" / "n.key")
    from_secret, secret = zmq.auth.load_certificate(folder / "k" / "n.key_secret")
    assert secret is not None
    return public, from_secret


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in (folder / "k").iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_stop_between_the_two_renames_leaves_a_matching_pair(tmp_path, sig):
    create_key_pair(tmp_path / "k", "n")
    old = pair(tmp_path)
    done = run_keys_signalled(tmp_path, "replace", sig)
    public, from_secret = pair(tmp_path)
    assert public == from_secret, "the secret and the public key file are of different pairs"
    assert public != old[0]  # the secret was replaced, so the new pair is complete
    assert done.returncode == 130 and done.stderr.strip().splitlines()[-1] == "perception: interrupted", done.stderr
    assert "Traceback" not in done.stderr
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_a_stop_signal_while_writing_removes_the_temporary_files_and_keeps_the_old_pair(tmp_path, sig):
    create_key_pair(tmp_path / "k", "n")
    old = pair(tmp_path)
    done = run_keys_signalled(tmp_path, "fsync", sig)
    assert done.returncode == 130 and done.stderr.strip().splitlines()[-1] == "perception: interrupted", done.stderr
    assert leftovers(tmp_path) == []  # no hidden .n.key_secret.*.tmp holding a secret
    assert pair(tmp_path) == old


def test_an_interrupt_that_gets_past_the_held_signals_still_finishes_the_pair(tmp_path, monkeypatch):
    # E.g. a signal taken by another thread, whose Python handler runs between the renames anyway.
    import os

    create_key_pair(tmp_path / "k", "n")
    old = pair(tmp_path)
    real = os.replace
    calls = []

    def replace_then_interrupt(src, dst):
        real(src, dst)
        calls.append(dst)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        create_key_pair(tmp_path / "k", "n", overwrite=True)
    monkeypatch.undo()
    public, from_secret = pair(tmp_path)
    assert public == from_secret and public != old[0]
    assert leftovers(tmp_path) == []
