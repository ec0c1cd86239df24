"""Launch leftovers of s36 (s37, f2).

``perception launch --check`` reads what a ``replay`` node will read at its start, as it does for
``pipeline`` nodes: its recording (there, readable, an MCAP file holding perception messages) and its
CURVE key files; a recording a ``record`` node of the same launch will write is left alone.

``respawn_max`` and the exit status: 0 is "never give up" (README "Respawn"; the default, so that
``respawn: true`` alone restarts), and a node that is never given up never fails for good; ``respawn:
false`` and a used-up ``respawn_max`` both fail for good (exit 1, a summary line), ``respawn_max``
without ``respawn`` changes nothing.
"""

from __future__ import annotations

import os
import re
import shutil

import pytest
import yaml
from test_launch_supervisor import fails, launch, node
from test_record import write_small_recording

from perception.cli import main as cli_main
from perception.curve_keys import create_key_pair
from perception.launch import supervisor as sup_module

CAMERA_GONE = fails(4, "perception: error: camera /dev/video9 not found")


def _check(folder, capsys, *nodes: dict) -> tuple[int, str, str]:
    file = folder / "l.yaml"
    file.write_text(yaml.safe_dump({"launch": [{"node": n} for n in nodes]}), encoding="utf-8")
    code = cli_main(["launch", str(file), "--check"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _replay(file, **parameters) -> dict:
    return {"name": "rp", "kind": "replay", "parameters": {"file": str(file), "endpoint": "tcp://127.0.0.1:5597",
                                                           **parameters}}


@pytest.fixture
def rec(tmp_path):
    path = tmp_path / "rec.mcap"
    write_small_recording(path)
    return path


def test_check_passes_a_replay_node_with_a_good_recording_and_starts_nothing(tmp_path, capsys, rec):
    code, out, err = _check(tmp_path, capsys, _replay(rec))
    assert code == 0, err
    assert "[rp] replay" in out and "started node" not in out


@pytest.mark.parametrize("case", ["missing", "not-mcap", "empty-folder", "fifo", "no-perception-topics"])
def test_check_refuses_a_replay_node_whose_recording_the_node_would_refuse(tmp_path, capsys, rec, case):
    target = tmp_path / "input"
    if case == "missing":
        target = tmp_path / "nope" / "x.mcap"
        why = f"recording {target} not found"
    elif case == "not-mcap":
        target = tmp_path / "video.mcap"
        target.write_bytes(b"RIFF....AVI LIST" * 4)
        why = f"{target} is not an MCAP file"
    elif case == "empty-folder":
        target.mkdir()
        why = f"recording folder {target} holds no .mcap file"
    elif case == "fifo":
        target = tmp_path / "pipe.mcap"
        os.mkfifo(target)
        why = f"{target} is a FIFO, not a recording file"
    else:  # an MCAP file, but not one perception record wrote
        from mcap.writer import Writer

        target = tmp_path / "other.mcap"
        with open(target, "wb") as f:
            writer = Writer(f)
            writer.start()
            writer.finish()
        why = "no perception topics in this recording"
    code, out, err = _check(tmp_path, capsys, _replay(target))
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"perception: error: {tmp_path / 'l.yaml'}: node 'rp': parameters: file: "), lines
    assert why in lines[0], lines
    assert "launch plan" not in out  # refused before the plan is printed, as for pipeline nodes


def test_check_reads_every_file_of_a_replay_node_not_only_the_first(tmp_path, capsys, rec):
    bad = tmp_path / "run_1.mcap"
    bad.write_bytes(b"not a recording at all")
    code, _out, err = _check(tmp_path, capsys, {**_replay(rec), "parameters": {
        "file": [str(rec), str(bad)], "endpoint": "tcp://127.0.0.1:5597"}})
    assert code == 2 and f"{bad} is not an MCAP file" in err, err


def test_check_leaves_alone_a_recording_this_launch_records(tmp_path, capsys):
    out_file = tmp_path / "out" / "run.mcap"
    recorder = {"name": "rec", "kind": "record", "parameters": {"out": str(out_file), "namespace": "perception/front"}}
    code, _out, err = _check(tmp_path, capsys, recorder, _replay(out_file))
    assert code == 0, err
    # Not recorded by this launch: the same missing file is refused.
    code, _out, err = _check(tmp_path, capsys, _replay(out_file))
    assert code == 2 and "not found" in err, err


@pytest.fixture
def keys(tmp_path):
    paths = {name: create_key_pair(tmp_path / "keys", name) for name in ("server", "laptop")}
    allow = tmp_path / "allow"
    allow.mkdir()
    shutil.copy(paths["laptop"][0], allow)
    return paths, allow


def test_check_reads_a_replay_nodes_curve_key_files(tmp_path, capsys, rec, keys):
    paths, allow = keys
    good = {"curve_secret_key": str(paths["server"][1]), "curve_allow": str(allow)}
    code, _out, err = _check(tmp_path, capsys, _replay(rec, **good))
    assert code == 0, err

    code, _out, err = _check(tmp_path, capsys, _replay(rec, **{**good, "curve_secret_key": str(tmp_path / "nope.key")}))
    assert code == 2 and re.search(r"node 'rp': parameters: curve_secret_key: .*nope\.key", err), err
    assert len(err.strip().splitlines()) == 1, err

    # The public .key given as the secret: the node refuses it, and so does the check.
    code, _out, err = _check(tmp_path, capsys, _replay(rec, **{**good, "curve_secret_key": str(paths["server"][0])}))
    assert code == 2 and "curve_secret_key: " in err and "secret" in err, err

    (allow / "laptop.key").write_text("garbage\n")
    code, _out, err = _check(tmp_path, capsys, _replay(rec, **good))
    assert code == 2 and "node 'rp': parameters: curve_allow: " in err, err

    code, _out, err = _check(tmp_path, capsys, _replay(rec, **{**good, "curve_allow": str(tmp_path / "none")}))
    assert code == 2 and "node 'rp': parameters: curve_allow: " in err, err


# ---- respawn_max and the exit status ----------------------------------------------------------------


def test_respawn_false_fails_for_good_at_the_first_failure_whatever_respawn_max_says():
    for policy in ({}, {"respawn_max": 0}, {"respawn_max": 3}):
        code, out = launch(node("cam", CAMERA_GONE, respawn=False, **policy))
        assert code == 1, (policy, out)
        assert "restarting" not in out and "(restart 1)" not in out, (policy, out)
        assert re.search(r"summary: node 'cam' failed for good at .* \(exit code 4\), not restarted: perception: "
                         r"error: camera /dev/video9 not found", out), (policy, out)


def test_a_used_up_respawn_max_fails_for_good_and_respawn_max_0_never_gives_up(monkeypatch):
    monkeypatch.setattr(sup_module, "MIN_BACKOFF_S", 0.01)
    code, out = launch(node("cam", CAMERA_GONE, respawn=True, respawn_delay_s=0.0, respawn_max=2))
    assert code == 1 and "gave up after 2 restarts in a row" in out, out
    assert re.search(r"summary: node 'cam' gave up at .* after it was restarted 2 times", out), out
    # respawn_max 0 (the default): restarted past any count, never given up; stopped, it is named in
    # the summary as down waiting for its restart, and it did not fail for good.
    code, out = launch(node("cam", CAMERA_GONE, respawn=True, respawn_delay_s=0.0, respawn_max=0),
                       stop_on=r"started node 'cam' .*\(restart 4\)")
    assert "gave up" not in out and "(restart 4)" in out, out
    assert re.search(r"summary: node 'cam' (was down at the stop|restarted \d+ times)", out), out
    assert code == 0, out


# ---- the node's allow-list line says how a key went ------------------------------------------------
# (perception/security.py: the line that counts the connected clients cut said "with a removed key"
# for a .key changed to another key or left unreadable too.)


def _allow_list_setup(tmp_path, caplog):
    import logging

    from test_curve_allow_reload import _publisher, _receives, _subscriber

    caplog.set_level(logging.INFO, logger="perception")
    paths = {name: create_key_pair(tmp_path / "keys", name) for name in ("server", "laptop", "other", "spare")}
    first = tmp_path / "allow.1"
    first.mkdir()
    for name in ("laptop", "spare"):
        shutil.copy(paths[name][0], first)
    allow = tmp_path / "allow"
    allow.symlink_to(first.name)  # switched to a new folder in one rename, as the README says
    return paths, allow, _publisher, _subscriber, _receives


def _switch(tmp_path, allow, files: dict) -> None:
    """``allow`` pointed at a new folder holding ``files`` (name -> source), in one rename."""
    new = tmp_path / f"allow.{len(list(tmp_path.glob('allow.*'))) + 1}"
    new.mkdir()
    for name, source in files.items():
        shutil.copy(source, new / name)
    (tmp_path / "allow.tmp").symlink_to(new.name)
    os.replace(tmp_path / "allow.tmp", allow)


def test_the_allow_list_line_says_a_changed_key_was_changed_not_removed(tmp_path, caplog):
    from test_curve_allow_reload import _goes_quiet, _wait_for_log

    paths, allow, publisher, subscriber, receives = _allow_list_setup(tmp_path, caplog)
    with publisher(paths, allow) as pub, subscriber(pub, paths, "laptop") as laptop, \
            subscriber(pub, paths, "spare") as spare:
        assert receives(pub, laptop) and receives(pub, spare)
        # laptop.key now holds another client's key; spare.key is unchanged.
        _switch(tmp_path, allow, {"laptop.key": paths["other"][0], "spare.key": paths["spare"][0]})
        lines = _wait_for_log(caplog, "(changed laptop.key)")
        assert lines == [f"CURVE allow-list: 2 client keys from {allow} (changed laptop.key); 1 connected client "
                         "with a changed key disconnected, new handshakes with it refused"], lines
        assert _goes_quiet(pub, laptop)
        assert receives(pub, spare, timeout_s=1.0)


def test_the_allow_list_line_counts_the_cut_clients_by_how_their_key_went(tmp_path, caplog):
    from test_curve_allow_reload import _goes_quiet, _wait_for_log

    paths, allow, publisher, subscriber, receives = _allow_list_setup(tmp_path, caplog)
    with publisher(paths, allow) as pub, subscriber(pub, paths, "laptop") as laptop, \
            subscriber(pub, paths, "spare") as spare:
        assert receives(pub, laptop) and receives(pub, spare)
        # In one step: laptop.key changed to another key, spare.key removed.
        _switch(tmp_path, allow, {"laptop.key": paths["other"][0]})
        lines = _wait_for_log(caplog, "(removed spare.key; changed laptop.key)")
        assert lines == [f"CURVE allow-list: 1 client key from {allow} (removed spare.key; changed laptop.key); "
                         "2 connected clients with a revoked key disconnected (1 with a removed key, 1 with a changed "
                         "key), new handshakes with them refused"], lines
        assert _goes_quiet(pub, laptop) and _goes_quiet(pub, spare)



def test_the_allow_list_line_says_an_unreadable_key_was_not_removed(tmp_path, caplog, monkeypatch):
    from test_curve_allow_reload import _goes_quiet, _wait_for_log

    from perception import security

    monkeypatch.setattr(security, "ALLOW_GRACE_S", 0.5)  # the grace before a malformed file's key is revoked
    paths, allow, publisher, subscriber, receives = _allow_list_setup(tmp_path, caplog)
    with publisher(paths, allow) as pub, subscriber(pub, paths, "laptop") as laptop:
        assert receives(pub, laptop)
        (allow / "laptop.key").write_text("not a certificate\n")
        lines = _wait_for_log(caplog, "(unreadable now laptop.key)")
        assert lines == [f"CURVE allow-list: 1 client key from {allow} (unreadable now laptop.key); 1 connected "
                         "client with an unreadable key disconnected, new handshakes with it refused"], lines
        assert _goes_quiet(pub, laptop)
