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

from perception.curve_keys import create_key_pair

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
    # ... and the command says so: "perception: interrupted" (exit 130) read as "the old key still holds".
    assert done.returncode == 0, done.stderr
    assert "interrupted" not in done.stderr and "Traceback" not in done.stderr
    assert done.stdout.startswith("public key: k/n.key") and "secret key: k/n.key_secret" in done.stdout
    assert leftovers(tmp_path) == []


#: The child stops itself just after a temporary key file is created (``os.open``) or at its last
#: ``os.close``: the first (the secret's) or the second (the public's). Python runs the signal's
#: handler right after the call returns, where the file had a name nobody would remove.
CHILD_AT_FILE = """
import os, signal, sys
real_open, real_close = os.open, os.close
temporary = {{}}  # fd -> 1 for the first temporary file, 2 for the second
created = []
def opened(path, *args, **kwargs):
    fd = real_open(path, *args, **kwargs)
    if str(path).endswith(".tmp"):
        created.append(path)
        temporary[fd] = len(created)
        if ("open", temporary[fd]) == {when!r}:
            os.kill(os.getpid(), signal.{signal})
    return fd
def closed(fd):
    real_close(fd)
    if fd in temporary and ("close", temporary.pop(fd)) == {when!r}:
        os.kill(os.getpid(), signal.{signal})
os.open, os.close = opened, closed
from perception.cli import main
sys.argv = ["perception", "keys", "--out", "k", "--name", "n", "--overwrite"]
sys.exit(main())
"""


@pytest.mark.parametrize(("when", "sig"), [(("open", 1), "SIGTERM"), (("close", 1), "SIGINT"),
                                           (("open", 2), "SIGINT"), (("close", 2), "SIGTERM")])
def test_a_stop_as_a_temporary_file_is_created_or_closed_leaves_none(tmp_path, when, sig):
    """V3 (s36) N2: a hidden .n.key_secret.<hex>.tmp was left, once with the whole new secret in it."""
    create_key_pair(tmp_path / "k", "n")
    old = pair(tmp_path)
    done = subprocess.run([sys.executable, "-c", CHILD_AT_FILE.format(when=when, signal=sig)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert leftovers(tmp_path) == []
    assert pair(tmp_path) == old  # the stop came before any rename: the old pair stays
    assert done.returncode == 130 and done.stderr.strip().splitlines() == ["perception: interrupted"], done.stderr


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
    # The pair ends up new, so it is returned as written (not an interrupt saying the old one holds).
    assert create_key_pair(tmp_path / "k", "n", overwrite=True) == (tmp_path / "k" / "n.key",
                                                                    tmp_path / "k" / "n.key_secret")
    monkeypatch.undo()
    public, from_secret = pair(tmp_path)
    assert public == from_secret and public != old[0]
    assert leftovers(tmp_path) == []


def test_an_interrupt_that_gets_past_the_held_signals_while_writing_keeps_the_old_pair(tmp_path, monkeypatch):
    # E.g. a signal taken by another thread, whose handler runs just after the secret's file is created.
    import os

    create_key_pair(tmp_path / "k", "n")
    old = pair(tmp_path)
    real = os.open

    def open_then_interrupt(path, *args, **kwargs):
        fd = real(path, *args, **kwargs)
        if str(path).endswith(".tmp"):
            os.close(fd)
            raise KeyboardInterrupt
        return fd

    monkeypatch.setattr(os, "open", open_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        create_key_pair(tmp_path / "k", "n", overwrite=True)
    monkeypatch.undo()
    assert pair(tmp_path) == old and leftovers(tmp_path) == []
