"""``perception keys`` writes its key files safely (hunt s36 H7 finding F6): the secret is never
readable by others, not even for a moment; no file is written through a symlink; ``--overwrite``
writes both files before it replaces either; the text stays pyzmq's certificate format."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import zmq.auth

from perception.curve_keys import create_key_pair


def _keys(out, *args, umask=None):
    cmd = [sys.executable, "-m", "perception", "keys", "--out", str(out), *args]
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, preexec_fn=preexec)


def test_a_dangling_symlink_at_the_secret_path_is_refused_and_nothing_written_through_it(tmp_path):
    out = tmp_path / "k"
    out.mkdir()
    target = tmp_path / "elsewhere"
    (out / "x.key_secret").symlink_to(target)
    result = _keys(out, "--name", "x")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"perception: error: {out / 'x.key_secret'} is a symbolic link; `perception keys` does not write key files "
        "through links: remove it or pick another --name"]
    assert not os.path.lexists(target) and not (out / "x.key").exists()


def test_overwrite_refuses_a_symlink_to_an_existing_file(tmp_path):
    out = tmp_path / "k"
    create_key_pair(out, "x")
    precious = tmp_path / "precious.txt"
    precious.write_text("precious\n")
    (out / "x.key").unlink()
    (out / "x.key").symlink_to(precious)
    secret_before = (out / "x.key_secret").read_bytes()
    result = _keys(out, "--name", "x", "--overwrite")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{out / 'x.key'} is a symbolic link" in lines[0], result.stderr
    assert precious.read_text() == "precious\n"
    assert (out / "x.key_secret").read_bytes() == secret_before


def test_the_secret_is_never_readable_by_others_while_it_is_written(tmp_path):
    """Every step of `keys` (each audit event: open, chmod, rename...) finds no file in the folder
    that holds a secret key and is open to other users, under the usual umask 022."""
    script = textwrap.dedent("""
        import os, stat, sys
        from perception.curve_keys import create_key_pair
        out = sys.argv[1]
        os.umask(0o022)
        seen, busy = [], [False]
        def hook(event, args):
            if busy[0] or not os.path.isdir(out):
                return
            busy[0] = True
            try:
                for entry in os.scandir(out):
                    try:
                        with open(entry.path, "rb") as f:
                            data = f.read()
                        mode = stat.S_IMODE(os.lstat(entry.path).st_mode)
                    except OSError:
                        continue
                    if b"secret-key" in data and mode & 0o077:
                        seen.append(f"{event}: {entry.name} {mode:04o}")
            finally:
                busy[0] = False
        sys.addaudithook(hook)
        create_key_pair(out, "n")
        create_key_pair(out, "n", overwrite=True)
        print(seen)
    """)
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "k")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert stat.S_IMODE((tmp_path / "k" / "n.key_secret").stat().st_mode) == 0o600


def test_overwrite_that_cannot_write_the_secret_leaves_the_public_key_as_it_was(tmp_path):
    out = tmp_path / "k"
    public, secret = create_key_pair(out, "x")
    before = public.read_bytes()
    secret.unlink()
    secret.mkdir()  # the secret cannot be written there
    result = _keys(out, "--name", "x", "--overwrite")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"perception: error: {secret} is a folder, not a key file; remove it or pick another --name"]
    assert public.read_bytes() == before


def test_overwrite_replaces_a_matching_pair_with_the_modes_and_no_leftovers(tmp_path):
    out = tmp_path / "k"
    public, secret = create_key_pair(out, "x")
    secret.chmod(0o644)
    old_public = zmq.auth.load_certificate(public)[0]
    result = _keys(out, "--name", "x", "--overwrite", umask=0)
    assert result.returncode == 0, result.stderr
    new_public, new_secret = zmq.auth.load_certificate(secret)
    assert new_secret is not None and new_public != old_public
    assert zmq.auth.load_certificate(public) == (new_public, None)  # the pair matches
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert sorted(p.name for p in out.iterdir()) == ["x.key", "x.key_secret"]  # no temporary file left


def test_the_key_files_keep_pyzmqs_certificate_text(tmp_path):
    ours = create_key_pair(tmp_path / "ours", "a")
    theirs = zmq.auth.create_certificates(tmp_path, "b")

    def shape(text: str) -> str:
        text = re.sub(r"Generated on .* by pyzmq", "Generated on DATE by pyzmq", text)
        return re.sub(r'"[^"]{40}"', '"KEY"', text)

    for mine, pyzmq_file in zip(ours, theirs, strict=True):
        assert shape(mine.read_text()) == shape(Path(pyzmq_file).read_text())
