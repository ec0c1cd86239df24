"""The CURVE allow-list follows its folder while the node runs (hunt 6e finding 1.1), and key
hygiene: secret files open to others, the node's secret given to a client, unsafe key names
(finding 1.9).

Every test asserts what a user sees: who receives, the node's log lines, one-line refusals. Waits
poll with generous deadlines; no timing is asserted.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time

import pytest

from perception.curve_keys import create_key_pair, load_public_key
from perception.errors import PublishError
from perception.publish import MaskPublisher
from perception.subscribe import MaskSubscriber

NS = "perception/secure"
DEADLINE_S = 20.0


@pytest.fixture
def keys(tmp_path, caplog):
    """server, laptop (allowed), other (not allowed), spare (allowed); allow/ holds laptop.key and
    spare.key."""
    caplog.set_level(logging.INFO, logger="perception")
    key_dir, allow_dir = tmp_path / "keys", tmp_path / "allow"
    allow_dir.mkdir()
    paths = {name: create_key_pair(key_dir, name) for name in ("server", "laptop", "other", "spare")}
    for name in ("laptop", "spare"):
        shutil.copy(paths[name][0], allow_dir)
    return paths, allow_dir


def _publisher(paths, allow_dir):
    return MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, curve_secret_key_file=str(paths["server"][1]),
                         curve_allow_dir=str(allow_dir))


def _subscriber(pub, paths, name):
    return MaskSubscriber(pub.endpoint, namespace=NS, curve_server_key=str(paths["server"][0]),
                          curve_key_file=str(paths[name][1]), reconnect_ivl_ms=50, reconnect_ivl_max_ms=200)


def _receives(pub, sub, timeout_s=DEADLINE_S) -> bool:
    """Publish until ``sub`` gets a message (True) or the deadline passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pub.publish_json("stats", {"fps": 1.0})
        if sub.recv(timeout_s=0.05) is not None:
            return True
    return False


def _goes_quiet(pub, sub, quiet_s=1.5, timeout_s=DEADLINE_S) -> bool:
    """Publish until ``sub`` has received nothing for ``quiet_s`` while messages kept going out
    (True), or the deadline passes (False). Messages already queued before a cut may still arrive."""
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    while time.monotonic() < deadline:
        pub.publish_json("stats", {"fps": 1.0})
        if sub.recv(timeout_s=0.05) is not None:
            last = time.monotonic()
        elif time.monotonic() - last >= quiet_s:
            return True
    return False


def _wait_for_log(caplog, text, timeout_s=DEADLINE_S) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = [r.getMessage() for r in caplog.records if text in r.getMessage()]
        if lines:
            return lines
        time.sleep(0.05)
    return []


def _messages(caplog, text) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_a_key_added_to_the_folder_admits_that_client(keys, caplog):
    paths, allow_dir = keys
    with _publisher(paths, allow_dir) as pub:
        assert _messages(caplog, "CURVE on: 2 allowed client keys from")
        with _subscriber(pub, paths, "other") as early:
            assert not _receives(pub, early, timeout_s=1.0)
        hint = _wait_for_log(caplog, "CURVE handshake refused")
        assert "to admit it, add its .key to --curve-allow and restart the client" in hint[0]
        shutil.copy(paths["other"][0], allow_dir)  # what the refusal's hint says to do
        line = _wait_for_log(caplog, "(added other.key)")
        assert line == [f"CURVE allow-list: 3 client keys from {allow_dir} (added other.key)"]
        # The client started again (a new `perception listen`) gets in.
        with _subscriber(pub, paths, "other") as again:
            assert _receives(pub, again)


def test_a_removed_key_is_refused_and_its_connected_client_cut(keys, caplog):
    paths, allow_dir = keys
    with _publisher(paths, allow_dir) as pub, _subscriber(pub, paths, "laptop") as laptop, \
            _subscriber(pub, paths, "spare") as spare:
        assert _receives(pub, laptop) and _receives(pub, spare)
        rejections = pub.stats()["curve_rejections"]
        (allow_dir / "laptop.key").unlink()  # revoke the (stolen) laptop
        lines = _wait_for_log(caplog, "(removed laptop.key)")
        assert lines == [f"CURVE allow-list: 1 client key from {allow_dir} (removed laptop.key); 1 connected client "
                         "with a removed key disconnected, new handshakes with it refused"]
        # The laptop connected before the removal stops receiving; its reconnects are refused and
        # counted; the other client is untouched.
        assert _goes_quiet(pub, laptop)
        assert _receives(pub, spare)
        deadline = time.monotonic() + DEADLINE_S
        while pub.stats()["curve_rejections"] <= rejections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pub.stats()["curve_rejections"] > rejections
        assert pub.stats()["curve_disconnects"] >= 1  # the laptop connected before the removal was cut
        assert pub._core.curve_disconnects == 1
        # A new client with the removed key (a new `perception listen`) receives nothing either.
        with _subscriber(pub, paths, "laptop") as again:
            assert not _receives(pub, again, timeout_s=1.5)
        laptop_key = load_public_key(paths["laptop"][0], role="client").decode()
        refused = _messages(caplog, f"client key {laptop_key}")
        assert refused and "its .key was removed from --curve-allow" in refused[0]


def test_an_empty_folder_admits_nobody_and_a_key_put_back_admits_again(keys, caplog):
    paths, allow_dir = keys
    with _publisher(paths, allow_dir) as pub, _subscriber(pub, paths, "laptop") as laptop:
        assert _receives(pub, laptop)
        for path in allow_dir.glob("*.key"):
            path.unlink()
        lines = _wait_for_log(caplog, "no client is admitted")
        assert lines == [f"CURVE allow-list: 0 client keys from {allow_dir} (removed laptop.key, spare.key); no client "
                         "is admitted; 1 connected client with a removed key disconnected, new handshakes with them "
                         "refused"]
        assert _goes_quiet(pub, laptop)
        shutil.copy(paths["laptop"][0], allow_dir)
        assert _wait_for_log(caplog, "(added laptop.key)")
        with _subscriber(pub, paths, "laptop") as again:  # the laptop started again is admitted again
            assert _receives(pub, again)


def test_an_unreadable_folder_or_a_junk_key_never_opens_the_list(keys, caplog, tmp_path):
    paths, allow_dir = keys
    with _publisher(paths, allow_dir) as pub:
        # The folder disappears (moved away): the last list holds, one warning however long.
        moved = tmp_path / "allow.moved"
        allow_dir.rename(moved)
        warned = _wait_for_log(caplog, "cannot be read")
        assert warned == [f"CURVE allow-list folder {allow_dir} cannot be read (not found); keeping the last list "
                          "(2 client keys) until it can"]
        with _subscriber(pub, paths, "laptop") as laptop, _subscriber(pub, paths, "other") as other:
            assert _receives(pub, laptop)
            assert not _receives(pub, other, timeout_s=1.0)
        assert len(_messages(caplog, "cannot be read")) == 1
        moved.rename(allow_dir)
        assert _wait_for_log(caplog, "can be read again: 2 client keys, unchanged")
        # A junk .key: one warning naming it, it admits nobody, and a removal at the same time applies.
        (allow_dir / "junk.key").write_text("not a certificate\n")
        (allow_dir / "spare.key").unlink()
        warned = _wait_for_log(caplog, "junk.key")
        assert warned == [f"CURVE allow-list: junk.key in {allow_dir} is not a public key file (unreadable or "
                          "malformed), so not admitted; recreate it with `perception keys` and copy the .key"]
        assert _wait_for_log(caplog, "(removed spare.key)")
        with _subscriber(pub, paths, "spare") as spare, _subscriber(pub, paths, "laptop") as laptop:
            assert _receives(pub, laptop)
            assert not _receives(pub, spare, timeout_s=1.0)
        assert len(_messages(caplog, "junk.key")) == 1


def test_a_secret_key_open_to_others_warns_once_with_chmod(keys, caplog, tmp_path):
    paths, allow_dir = keys
    loose_server = tmp_path / "loose_server.key_secret"
    loose_client = tmp_path / "loose_laptop.key_secret"
    shutil.copy(paths["server"][1], loose_server)
    shutil.copy(paths["laptop"][1], loose_client)
    loose_server.chmod(0o644)
    loose_client.chmod(0o640)
    with MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, curve_secret_key_file=str(loose_server),
                       curve_allow_dir=str(allow_dir)) as pub:
        for _ in range(2):
            with MaskSubscriber(pub.endpoint, namespace=NS, curve_server_key=str(paths["server"][0]),
                                curve_key_file=str(loose_client)) as sub:
                assert _receives(pub, sub)  # a warning, not a refusal
    assert _messages(caplog, "by other users") == [
        f"server secret key file {loose_server} is readable by other users (mode 0644); keep it private: "
        f"chmod 600 {loose_server}",
        f"client secret key file {loose_client} is readable by other users (mode 0640); keep it private: "
        f"chmod 600 {loose_client}",
    ]
    # the files `perception keys` writes (mode 600) draw no warning
    caplog.clear()
    with MaskSubscriber("tcp://127.0.0.1:5556", curve_server_key=str(paths["server"][0]),
                        curve_key_file=str(paths["laptop"][1])):
        pass
    assert not _messages(caplog, "by other users")


def test_the_nodes_secret_key_as_server_key_is_refused_in_one_line(keys):
    paths, _ = keys
    server_public, server_secret = paths["server"]
    with pytest.raises(PublishError) as info:
        MaskSubscriber("tcp://127.0.0.1:5556", curve_server_key=str(server_secret), curve_key_file=str(paths["laptop"][1]))
    assert str(info.value) == (f"--curve-server-key {server_secret} is a secret key file (the node's .key_secret); "
                               f"give the node's public key, {server_public}, and keep the .key_secret on the node only")


def test_the_cli_refuses_the_swapped_server_key_in_one_line(keys):
    paths, _ = keys
    result = subprocess.run(
        [sys.executable, "-m", "perception", "listen", "--endpoint", "tcp://127.0.0.1:5556", "--duration", "1",
         "--curve-server-key", str(paths["server"][1]), "--curve-key", str(paths["laptop"][1])],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is a secret key file (the node's .key_secret)" in lines[0], result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--name", "a b"], "key name 'a b' is not a safe file name; use letters, digits, '.', '_' and '-'"),
    (["--name=-x"], "key name '-x' is not a safe file name"),
    (["--name", "../up"], "key name '../up' is not a safe file name"),
])
def test_keys_refuses_unsafe_names(tmp_path, args, message):
    result = subprocess.run([sys.executable, "-m", "perception", "keys", "--out", str(tmp_path / "k"), *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "k").exists()


def test_keys_out_a_file_says_it_is_a_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = subprocess.run([sys.executable, "-m", "perception", "keys", "--out", str(afile), "--name", "car"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"perception: error: cannot write keys to {afile}: it is a file, not a folder; give a folder for --out "
        "(created when missing)"
    ]


# ---------------------------------------------------------------------------- a key rewritten in place
# Hunt s36 H7 finding F4: a .key rewritten in place with the same key (scp, NFS, an editor saving in
# place) was read half-written, its key revoked at once and its client cut for good (ZeroMQ does not
# retry a refused handshake).


def test_a_key_rewritten_in_place_by_a_slow_writer_keeps_its_client(keys, caplog, monkeypatch):
    from perception import security

    monkeypatch.setattr(security, "ALLOW_GRACE_S", 60.0, raising=False)  # the pause below may take long
    paths, allow_dir = keys
    text = paths["laptop"][0].read_bytes()
    with _publisher(paths, allow_dir) as pub, _subscriber(pub, paths, "laptop") as laptop:
        assert _receives(pub, laptop)
        rejections = pub.stats()["curve_rejections"]
        target = allow_dir / "laptop.key"
        with target.open("wb") as f:  # the same key, written in two parts with a pause between
            f.write(text[:200])
            f.flush()
            held = _wait_for_log(caplog, "laptop.key in")
            assert held == [f"CURVE allow-list: laptop.key in {allow_dir} is not a public key file now (unreadable "
                            "or malformed: still being written?); its key stays admitted until it is left so for "
                            "60 s, then it is revoked"]
            f.write(text[200:])
        assert _wait_for_log(caplog, "whole again") == [
            f"CURVE allow-list: 2 client keys from {allow_dir} (whole again, the same key laptop.key)"]
        assert _receives(pub, laptop)  # never cut: it keeps receiving
        assert pub._core.curve_disconnects == 0
        assert pub.stats()["curve_rejections"] == rejections
        assert not _messages(caplog, "disconnected")


def test_a_key_left_malformed_is_revoked_after_the_grace_and_its_client_cut(keys, caplog):
    paths, allow_dir = keys
    with _publisher(paths, allow_dir) as pub, _subscriber(pub, paths, "laptop") as laptop, \
            _subscriber(pub, paths, "spare") as spare:
        assert _receives(pub, laptop) and _receives(pub, spare)
        (allow_dir / "laptop.key").write_text("not a certificate\n")
        assert _wait_for_log(caplog, "still being written?")
        lines = _wait_for_log(caplog, "(unreadable now laptop.key)")
        assert lines == [f"CURVE allow-list: 1 client key from {allow_dir} (unreadable now laptop.key); 1 connected "
                         "client with an unreadable key disconnected, new handshakes with it refused"]
        assert _goes_quiet(pub, laptop)
        assert _receives(pub, spare)
        with _subscriber(pub, paths, "laptop") as again:  # a new client with that key is refused
            assert not _receives(pub, again, timeout_s=1.5)


@pytest.fixture
def held_auth(keys):
    """An allow-list authenticator on keys' folder, not started, read by hand with a clock the test
    moves; cut[] records the keys revoked (as the publisher would be asked to disconnect them)."""
    import zmq

    from perception.security import AuditingAuthenticator

    paths, allow_dir = keys
    context = zmq.Context()
    auth = AuditingAuthenticator(context, allow_dir)
    auth.load_initial()
    clock = [100.0]
    auth._clock = lambda: clock[0]
    cut: list[frozenset[bytes]] = []
    auth.on_revoke = lambda revoked: cut.append(revoked) or 0
    key = {name: load_public_key(paths[name][0], role="client") for name in ("laptop", "spare", "other")}

    def at(t: float) -> set[str]:
        """Read the folder at time t; the names of the clients admitted."""
        clock[0] = 100.0 + t
        auth.reload()
        return {name for name, k in key.items() if auth.callback("*", k)}

    yield at, allow_dir, paths, cut
    auth.stop()
    context.term()


def test_a_malformed_key_file_is_held_while_it_changes_then_revoked(held_auth):
    at, allow_dir, paths, cut = held_auth
    target = allow_dir / "laptop.key"
    target.write_text("half")
    assert at(0) == {"laptop", "spare"}  # turned malformed: held
    assert at(1.9) == {"laptop", "spare"}
    target.write_text("half, more")  # still being written: the grace starts again
    assert at(3.0) == {"laptop", "spare"}
    assert at(4.9) == {"laptop", "spare"}
    assert not cut
    assert at(5.0) == {"spare"}  # malformed and unchanged for ALLOW_GRACE_S: revoked, its clients cut
    assert len(cut) == 1
    assert at(100) == {"spare"}  # and it stays so: a persistently bad file admits nobody
    shutil.copy(paths["laptop"][0], target)
    assert at(101) == {"laptop", "spare"}


def test_a_file_that_keeps_changing_malformed_is_revoked_after_the_longest_grace(held_auth):
    from perception.security import ALLOW_GRACE_MAX_S

    at, allow_dir, _, cut = held_auth
    target = allow_dir / "laptop.key"
    t = 0.0
    while t < ALLOW_GRACE_MAX_S:
        target.write_text("x" * (int(t) + 1))  # another malformed content every poll
        assert at(t) == {"laptop", "spare"}
        t += 1.0
    target.write_text("y" * 100)
    assert at(t) == {"spare"} and len(cut) == 1


def test_a_never_valid_file_admits_nobody_and_a_held_file_removed_is_revoked_at_once(held_auth):
    at, allow_dir, paths, cut = held_auth
    (allow_dir / "other.key").write_text(paths["other"][0].read_text()[:100])  # never a key: nobody
    assert at(0) == {"laptop", "spare"}
    (allow_dir / "laptop.key").write_text("half")
    assert at(1) == {"laptop", "spare"}
    (allow_dir / "laptop.key").unlink()  # removed while held: revoked now, not after the grace
    assert at(1.5) == {"spare"} and len(cut) == 1
    # A held file rewritten with another valid key: the old key goes, the new one is admitted.
    (allow_dir / "spare.key").write_text("half")
    assert at(2) == {"spare"}
    shutil.copy(paths["other"][0], allow_dir / "spare.key")
    assert at(2.5) == {"other"} and len(cut) == 2
