"""CURVE key checks, the allow-list watcher and the client's handshake diagnosis (session 40)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import pytest
import zmq

from perception.curve_keys import create_key_pair, load_key_pair
from perception.errors import PublishError
from perception.publish import MaskPublisher
from perception.subscribe import MaskSubscriber

NS = "s40"


def _with_key(path, which: str, new_key: str):
    """``path``'s text with its ``which`` (public-key / secret-key) value replaced by ``new_key``."""
    lines = path.read_text().splitlines(keepends=True)
    out = []
    for line in lines:
        if line.strip().startswith(which):
            line = f'    {which} = "{new_key}"\n'
        out.append(line)
    return "".join(out)


@pytest.fixture
def keys(tmp_path):
    key_dir, allow_dir = tmp_path / "keys", tmp_path / "allow"
    allow_dir.mkdir()
    paths = {name: create_key_pair(key_dir, name) for name in ("server", "laptop", "other")}
    (allow_dir / "laptop.key").write_bytes(paths["laptop"][0].read_bytes())
    return paths, allow_dir


def _bad_z85_copy(src, dst):
    secret = load_key_pair(src, role="x")[1].decode()
    dst.write_text(_with_key(src, "secret-key", "~" + secret[1:]))
    os.chmod(dst, 0o600)
    return dst


def test_a_key_with_a_character_outside_z85_is_one_line_naming_the_file(keys, tmp_path):
    paths, _ = keys
    bad = _bad_z85_copy(paths["laptop"][1], tmp_path / "bad.key_secret")
    with pytest.raises(PublishError, match="bad.key_secret holds a malformed key; recreate it"):
        load_key_pair(bad, role="client secret")
    # a client given it: the key file is named, never --endpoint
    with pytest.raises(PublishError) as err:
        MaskSubscriber("tcp://127.0.0.1:1", curve_server_key=str(paths["server"][0]), curve_key_file=str(bad))
    assert "bad.key_secret" in str(err.value) and "--endpoint" not in str(err.value)


def test_run_with_a_bad_z85_server_key_exits_2_before_curve_on(keys, tmp_path, free_tcp_port):
    paths, allow_dir = keys
    bad = _bad_z85_copy(paths["server"][1], tmp_path / "srv.key_secret")
    done = subprocess.run(
        [sys.executable, "-m", "perception", "run", "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}",
         "--curve-secret-key", str(bad), "--curve-allow", str(allow_dir), "--duration", "1"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "srv.key_secret" in done.stderr and "malformed" in done.stderr
    assert "Traceback" not in done.stderr and "CURVE on" not in done.stderr


def test_a_secret_file_whose_public_key_is_not_its_own_is_refused(keys, tmp_path):
    paths, _ = keys
    other_public = load_key_pair(paths["other"][1], role="x")[0].decode()
    mixed = tmp_path / "mixed.key_secret"
    mixed.write_text(_with_key(paths["laptop"][1], "public-key", other_public))
    os.chmod(mixed, 0o600)
    with pytest.raises(PublishError, match="mixed.key_secret holds a public key that does not belong"):
        load_key_pair(mixed, role="client secret")


@pytest.fixture
def auth(keys, caplog):
    from perception.security import AuditingAuthenticator

    paths, allow_dir = keys
    context = zmq.Context()
    a = AuditingAuthenticator(context, allow_dir)
    a.load_initial()
    cut: list[frozenset[bytes]] = []
    a.on_revoke = lambda revoked: cut.append(revoked) or 0
    caplog.set_level(logging.INFO, logger="perception.security")
    yield a, paths, allow_dir, cut
    a.stop()
    context.term()


def _laptop(paths):
    return load_key_pair(paths["laptop"][1], role="x")[0]


def test_a_huge_file_in_the_allow_folder_is_refused_unread_and_a_removal_applies_at_once(auth, caplog):
    a, paths, allow_dir, cut = auth
    with open(allow_dir / "huge.key", "wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB that would be read line by line
    (allow_dir / "laptop.key").unlink()
    a.reload()
    assert _laptop(paths) not in a.allowed and cut == [frozenset({_laptop(paths)})]
    warned = [r.getMessage() for r in caplog.records if "huge.key" in r.getMessage()]
    assert len(warned) == 1 and "too large" in warned[0]


def test_a_file_removed_while_the_folder_is_read_is_a_removal_not_a_file_being_written(auth, caplog, monkeypatch):
    import perception.security as security

    a, paths, allow_dir, cut = auth
    (allow_dir / "laptop.key").write_bytes(paths["laptop"][0].read_bytes() + b"\n")  # changed: read again
    real = security.load_certificate

    def vanish(path, *, role):
        if path.name == "laptop.key":
            path.unlink()
        return real(path, role=role)

    monkeypatch.setattr(security, "load_certificate", vanish)
    a.reload()
    assert _laptop(paths) not in a.allowed  # revoked at once, no grace
    text = caplog.text
    assert "still being written" not in text and "removed laptop.key" in text


def test_secret_keys_in_the_allow_folder_are_warned_about_once(auth, caplog):
    a, paths, allow_dir, _ = auth
    (allow_dir / "other.key").write_bytes(paths["other"][1].read_bytes())  # a secret copied as .key
    (allow_dir / "server.key_secret").write_bytes(paths["server"][1].read_bytes())
    a.reload()
    (allow_dir / "extra.key").write_bytes(paths["server"][0].read_bytes())  # another change: read again
    a.reload()
    lines = [r.getMessage() for r in caplog.records if "secret" in r.getMessage() and r.levelno == logging.WARNING]
    assert sum("other.key in" in line for line in lines) == 1
    assert sum("server.key_secret in" in line for line in lines) == 1


def test_many_keys_added_make_one_short_line(auth, caplog, tmp_path):
    a, _, allow_dir, _ = auth
    for i in range(40):
        public, _secret = create_key_pair(tmp_path / "many", f"c{i:03d}")
        (allow_dir / public.name).write_bytes(public.read_bytes())
    a.reload()
    line = next(r.getMessage() for r in caplog.records if "added" in r.getMessage())
    assert "41 client keys" in line and "and 35 more" in line and "c039.key" not in line


@pytest.mark.skipif(os.name == "nt", reason="links and FIFOs")
def test_broken_key_entries_are_warned_once_each(auth, caplog):
    a, paths, allow_dir, _ = auth
    (allow_dir / "dangling.key").symlink_to(allow_dir / "nowhere")
    (allow_dir / "folder.key").mkdir()
    os.mkfifo(allow_dir / "fifo.key")
    a.reload()
    (allow_dir / "more.key").write_bytes(paths["other"][0].read_bytes())
    a.reload()
    for name, why in (("dangling.key", "link to nothing"), ("folder.key", "is a folder"),
                      ("fifo.key", "not a regular file")):
        lines = [r.getMessage() for r in caplog.records if f"{name} in" in r.getMessage()]
        assert len(lines) == 1 and why in lines[0], (name, lines)
    assert _laptop(paths) in a.allowed


def test_a_dead_zap_thread_stops_the_node_and_admits_nobody(auth, caplog):
    a, paths, _, cut = auth
    failed = []
    a.on_failure = lambda: failed.append(True)
    dead = threading.Thread(target=lambda: None)
    dead.start()
    dead.join()
    a.thread = dead  # as if the ZAP thread had died of an error
    try:
        assert a.check_zap() is False
    finally:
        a.thread = None
    assert failed == [True] and a.allowed == frozenset() and cut == [frozenset({_laptop(paths)})]
    assert "ZAP authenticator thread died" in caplog.text


def _failure(sub: MaskSubscriber, want: str = "") -> str | None:
    """The subscriber's handshake failure once it says ``want`` (the first seen may be a bare close)."""
    deadline = time.monotonic() + 20  # a bound, not a timing: the event comes within milliseconds
    while (sub.handshake_failure is None or want not in sub.handshake_failure) and time.monotonic() < deadline:
        sub.recv(timeout_s=0.05)
    return sub.handshake_failure


def test_the_client_says_why_the_node_refused_it(keys):
    paths, allow_dir = keys
    server_public, server_secret = paths["server"]
    with MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, curve_secret_key_file=str(server_secret),
                       curve_allow_dir=str(allow_dir)) as pub:
        with MaskSubscriber(pub.endpoint, namespace=NS, curve_server_key=str(server_public),
                            curve_key_file=str(paths["other"][1])) as unlisted:
            assert "refused this client's key" in _failure(unlisted)
        with MaskSubscriber(pub.endpoint, namespace=NS) as plain:
            said = _failure(plain)  # mechanism mismatch, or the node closing on it first
            assert "--curve-server-key" in said and "--curve-key" in said
        with MaskSubscriber(pub.endpoint, namespace=NS, curve_server_key=str(paths["other"][0]),
                            curve_key_file=str(paths["laptop"][1])) as wrong:
            assert "--curve-server-key is most likely not this node's public key" in _failure(wrong)
    with MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS) as plain_node, \
            MaskSubscriber(plain_node.endpoint, namespace=NS, curve_server_key=str(server_public),
                           curve_key_file=str(paths["laptop"][1])) as curve_client:
        assert "the node is not encrypted (it runs without" in _failure(curve_client, "without")


def test_the_nothing_received_hint_names_the_handshake_failure():
    from perception.commands.listen import no_messages_hint

    assert no_messages_hint("--namespace", curve=True, handshake_failure="the node refused this client's key") \
        == "the node refused this client's key"
    assert "CURVE keys" in no_messages_hint("--namespace", curve=True)


def test_a_publisher_whose_zap_thread_died_stops_publishing_with_exit_1(keys):
    """check_zap's on_failure is the publisher's: its next send raises AuthenticatorDied (exit 1),
    so the node's publish stage fails and a launch respawns it (a SIGTERM to itself ended it 0)."""
    from perception.publish import MaskPublisher
    from perception.xpub import AuthenticatorDied

    paths, allow_dir = keys
    pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, curve_secret_key_file=paths["server"][1],
                        curve_allow_dir=allow_dir)
    try:
        auth = pub._core._auth
        dead = threading.Thread(target=lambda: None)
        dead.start()
        dead.join()
        thread, auth.thread = auth.thread, dead
        try:
            assert auth.check_zap() is False
        finally:
            auth.thread = thread
        with pytest.raises(AuthenticatorDied, match="ZAP authenticator thread died") as info:
            pub.publish_json("stats", {"frames_in": 1})
        assert info.value.exit_code == 1
    finally:
        pub.close()
