"""A reader whose key is revoked from the node's ``--curve-allow`` while it runs: the node cuts it
and refuses its reconnect, and libzmq never tries that handshake again, so nothing more can come.
``listen`` and ``record`` sat silent until their ``--duration`` and exited 0 (``record`` under a
launch file: for ever, never respawned). They now end within a few seconds with one line naming
the refusal, exit 4; ``record`` finishes its file first."""

from __future__ import annotations

import threading
import time

from test_curve_allow_reload import DEADLINE_S, NS, _publisher, _receives, _subscriber, keys  # noqa: F401 - a fixture

from perception.cli import main as cli_main
from perception.mcap_reader import read_recording


def test_a_subscriber_cut_by_a_revocation_says_so_and_another_is_not(keys):  # noqa: F811 - the fixture
    paths, allow_dir = keys
    with _publisher(paths, allow_dir) as pub, _subscriber(pub, paths, "laptop") as laptop, \
            _subscriber(pub, paths, "spare") as spare:
        assert _receives(pub, laptop) and _receives(pub, spare)
        assert laptop.cut_off() is None
        (allow_dir / "laptop.key").unlink()
        deadline = time.monotonic() + DEADLINE_S
        while laptop.cut_off() is None and time.monotonic() < deadline:
            pub.publish_json("stats", {"fps": 1.0})
            laptop.recv(timeout_s=0.05)
        said = laptop.cut_off()
        assert said is not None and "refused this client's key" in said, said
        assert _receives(pub, spare) and spare.cut_off() is None


def _serve_until(pub, done: threading.Event, revoke, after_s: float = 1.0) -> None:
    """Publish until ``done``; ``revoke()`` once, ``after_s`` in."""
    start = time.monotonic()
    revoked = False
    while not done.is_set() and time.monotonic() - start < 60:
        pub.publish_json("stats", {"fps": 1.0})
        if not revoked and time.monotonic() - start >= after_s:
            revoke()
            revoked = True
        time.sleep(0.02)


def _reader(argv: list[str], result: dict, done: threading.Event) -> threading.Thread:
    def target():
        try:
            result["code"] = cli_main(argv)
        finally:
            done.set()

    thread = threading.Thread(target=target)
    thread.start()
    return thread


def test_listen_ends_with_exit_4_when_its_key_is_revoked(keys, capsys):  # noqa: F811 - the fixture
    paths, allow_dir = keys
    with _publisher(paths, allow_dir) as pub:
        result, done = {}, threading.Event()
        started = time.monotonic()
        thread = _reader(["listen", "--endpoint", pub.endpoint, "--namespace", NS, "--duration", "40",
                          "--curve-server-key", str(paths["server"][0]), "--curve-key", str(paths["laptop"][1])],
                         result, done)
        _serve_until(pub, done, lambda: (allow_dir / "laptop.key").unlink())
        thread.join(timeout=30)
    assert result.get("code") == 4, result
    assert time.monotonic() - started < 30  # not at --duration 40
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("perception: error:")]
    assert len(lines) == 1 and f"cut off by {pub.endpoint} after " in lines[0], err
    assert "refused this client's key" in lines[0] and "restart this client" in lines[0]


def test_record_finishes_its_file_and_ends_with_exit_4_when_its_key_is_revoked(keys, tmp_path, capsys):  # noqa: F811
    paths, allow_dir = keys
    out = tmp_path / "rec.mcap"
    with _publisher(paths, allow_dir) as pub:
        result, done = {}, threading.Event()
        thread = _reader(["record", "--endpoint", pub.endpoint, "--namespace", NS, "--out", str(out),
                          "--duration", "40", "--curve-server-key", str(paths["server"][0]),
                          "--curve-key", str(paths["laptop"][1])], result, done)
        _serve_until(pub, done, lambda: (allow_dir / "laptop.key").unlink(), after_s=1.5)
        thread.join(timeout=30)
    assert result.get("code") == 4, result
    err = capsys.readouterr().err
    assert "cut off by" in err and "Traceback" not in err, err
    assert len(list(read_recording(out))) > 0  # what came before the cut is recorded, the file finished


class _Monitor:
    """A socket monitor that hands over the events given (``recv_monitor_message`` patched)."""

    def __init__(self, events):
        self.events = list(events)

    def poll(self, timeout):
        return bool(self.events)


def test_a_bare_close_behind_a_port_forward_never_cuts_the_reader_off(monkeypatch, caplog):
    """H45 F1: a node restarting behind docker-proxy or ssh -L accepts and closes the connection at
    once (HANDSHAKE_FAILED_NO_DETAIL, errno alternating 0x68/0x20): libzmq retries that, and the
    reader got messages again once the node was back, but the cut-off ended it after 2 s, exit 4,
    with 10 warning lines a second. Only the refusals libzmq never retries (AUTH, PROTOCOL) cut."""
    import zmq
    import zmq.utils.monitor

    from perception import subscribe_monitor as mon

    monitor = _Monitor([])
    monkeypatch.setattr(zmq.utils.monitor, "recv_monitor_message", lambda m: m.events.pop(0))
    now = [1000.0]
    monkeypatch.setattr(mon.time, "monotonic", lambda: now[0])
    where = b"tcp://127.0.0.1:5591"
    conns = mon.Connections(curve=False)
    monitor.events.append({"event": zmq.EVENT_HANDSHAKE_SUCCEEDED, "value": 0, "endpoint": where})
    conns.read(monitor)
    with caplog.at_level("WARNING", logger="perception.subscribe"):
        for i in range(40):  # 4 s of a bare close every 0.1 s, its errno alternating
            monitor.events.append({"event": zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, "value": (0x68, 0x20)[i % 2],
                                   "endpoint": where})
            conns.read(monitor)
            now[0] += 0.1
    assert conns.cut_off() is None
    assert len([r for r in caplog.records if "closed the handshake" in r.getMessage()]) == 1
    monitor.events.append({"event": zmq.EVENT_HANDSHAKE_FAILED_AUTH, "value": 400, "endpoint": where})
    conns.read(monitor)
    assert conns.cut_off() is None  # not yet: 2 s
    now[0] += mon.CUT_OFF_S
    assert "refused this client's key" in (conns.cut_off() or "")


def test_a_listen_still_refused_at_its_end_says_so_and_exits_0(monkeypatch, caplog):
    """V2 NEW-3: a node restarted with another key pair (or behind a port forward that closes at
    once) is retried by libzmq, so the reader waits, exit 0; its end now says it was being refused."""
    from perception.publish import MaskPublisher
    from perception.subscribe import MaskSubscriber

    monkeypatch.setattr(MaskSubscriber, "handshake_failure", property(lambda self: "the CURVE handshake failed: X"))
    with MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS) as pub:
        result, done = {}, threading.Event()
        thread = _reader(["listen", "--endpoint", pub.endpoint, "--namespace", NS, "--duration", "1.5"], result, done)
        with caplog.at_level("WARNING", logger="perception.commands.listen"):
            while not done.is_set():
                pub.publish_json("stats", {"fps": 1.0})
                time.sleep(0.02)
            thread.join(timeout=30)
    assert result.get("code") == 0, result
    said = [r.getMessage() for r in caplog.records if r.name == "perception.commands.listen"]
    assert any(f"at the end, {pub.endpoint} was refusing this client's handshakes: the CURVE handshake failed" in m
               for m in said), said
