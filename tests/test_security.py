"""CURVE encryption with a client allow-list, key files, and ``perception keys``."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from perception.curve_keys import create_key_pair
from perception.errors import ConfigError, PublishError
from perception.publish import MaskPublisher
from perception.subscribe import MaskSubscriber

NS = "perception/secure"


@pytest.fixture
def keys(tmp_path):
    """server, an allowed client and an unknown client; allow/ holds only the allowed public key."""
    key_dir, allow_dir = tmp_path / "keys", tmp_path / "allow"
    allow_dir.mkdir()
    paths = {name: create_key_pair(key_dir, name) for name in ("server", "allowed", "stranger")}
    (allow_dir / "allowed.key").write_bytes(paths["allowed"][0].read_bytes())
    return paths, allow_dir


def test_allowed_client_receives_and_others_receive_nothing(keys):
    paths, allow_dir = keys
    server_public, server_secret = paths["server"]
    with MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, curve_secret_key_file=str(server_secret),
                       curve_allow_dir=str(allow_dir)) as pub, \
            MaskSubscriber(pub.endpoint, namespace=NS, curve_server_key=str(server_public),
                           curve_key_file=str(paths["allowed"][1])) as allowed, \
            MaskSubscriber(pub.endpoint, namespace=NS, curve_server_key=str(server_public),
                           curve_key_file=str(paths["stranger"][1])) as stranger, \
            MaskSubscriber(pub.endpoint, namespace=NS) as plaintext:
        deadline = time.monotonic() + 10
        msg = None
        while msg is None and time.monotonic() < deadline:
            pub.publish_json("stats", {"fps": 1.0})
            msg = allowed.recv(timeout_s=0.05)
        assert msg is not None and msg.data == {"fps": 1.0}
        # The allowed client is connected and receiving; keep publishing for a second and check
        # that neither the unknown key nor a client without CURVE gets a single message.
        received_by_allowed = 0
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            pub.publish_json("stats", {"fps": 2.0})
            assert stranger.recv(timeout_s=0.01) is None
            assert plaintext.recv(timeout_s=0.01) is None
            received_by_allowed += allowed.recv(timeout_s=0.01) is not None
        assert received_by_allowed > 0


def test_key_file_problems_are_one_line_publish_errors(keys, tmp_path):
    paths, allow_dir = keys
    server_public, server_secret = paths["server"]
    garbage = tmp_path / "garbage.key_secret"
    garbage.write_text("hello\n")
    cases = [
        ({"curve_secret_key_file": str(tmp_path / "nope.key_secret"), "curve_allow_dir": str(allow_dir)},
         "server secret key file .*nope.key_secret not found; create one with `perception keys"),
        ({"curve_secret_key_file": str(server_public), "curve_allow_dir": str(allow_dir)},
         "server.key has no secret key; pass the .key_secret file"),
        ({"curve_secret_key_file": str(garbage), "curve_allow_dir": str(allow_dir)},
         "garbage.key_secret is not a ZeroMQ certificate"),
        ({"curve_secret_key_file": str(server_secret), "curve_allow_dir": str(tmp_path / "missing")},
         "allow-list directory .*missing not found"),
        ({"curve_secret_key_file": str(server_secret), "curve_allow_dir": str(tmp_path / "keys" / "..")},
         "holds no .key files"),
        # one subscriber's key given for the folder of them: it is there, it is the wrong kind
        ({"curve_secret_key_file": str(server_secret), "curve_allow_dir": str(next(allow_dir.glob("*.key")))},
         r"allow-list directory .*\.key is a file, not a folder; give the folder that holds"),
    ]
    for kwargs, message in cases:
        with pytest.raises(PublishError, match=message) as info:
            MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="--curve-allow needs --curve-secret-key"):
        MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, curve_allow_dir=str(allow_dir))
    with pytest.raises(ConfigError, match="CURVE needs both"):
        MaskSubscriber("tcp://127.0.0.1:5556", curve_server_key=str(server_public))


def test_keys_command_writes_a_pair_and_refuses_to_overwrite(tmp_path):
    cmd = [sys.executable, "-m", "perception", "keys", "--out", str(tmp_path / "k"), "--name", "car"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    public, secret = tmp_path / "k" / "car.key", tmp_path / "k" / "car.key_secret"
    assert "public-key" in public.read_text() and "secret-key" not in public.read_text()
    assert "secret-key" in secret.read_text()
    assert secret.stat().st_mode & 0o077 == 0
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"perception: error: {public}, {secret} already exist; pick another --name or pass --overwrite"
    ]
    # --overwrite, as record and train spell it (hunt 5d finding 8); --force stays an alias.
    before = public.read_text()
    for flag in ("--overwrite", "--force"):
        replaced = subprocess.run([*cmd, flag], capture_output=True, text=True, timeout=60)
        assert replaced.returncode == 0, replaced.stderr
        assert public.read_text() != before
        before = public.read_text()


def test_refused_handshakes_are_logged_with_key_and_address_rate_limited_and_counted(keys, caplog):
    """Issue 15, finding 7: rejected CURVE handshakes were not logged."""
    from perception.curve_keys import load_public_key

    paths, allow_dir = keys
    server_public, server_secret = paths["server"]
    stranger_key = load_public_key(paths["stranger"][0], role="client").decode()
    with MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, curve_secret_key_file=str(server_secret),
                       curve_allow_dir=str(allow_dir)) as pub:
        # Three connections with the same unknown key: three refusals, one log line.
        strangers = [MaskSubscriber(pub.endpoint, namespace=NS, curve_server_key=str(server_public),
                                    curve_key_file=str(paths["stranger"][1]), reconnect_ivl_ms=10,
                                    reconnect_ivl_max_ms=10) for _ in range(3)]
        try:
            deadline = time.monotonic() + 20
            while pub.stats()["curve_rejections"] < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            rejections = pub.stats()["curve_rejections"]
        finally:
            for sub in strangers:
                sub.close()
        auth = pub._core._auth
        assert auth.last_rejection["public_key"] == stranger_key
        assert auth.last_rejection["address"] == "127.0.0.1"
    assert rejections >= 3
    refused = [r.getMessage() for r in caplog.records if "CURVE handshake refused" in r.getMessage()]
    assert refused and stranger_key in refused[0] and "from 127.0.0.1" in refused[0]
    assert len(refused) < rejections  # rate-limited: retries of one key and address are counted, not logged
