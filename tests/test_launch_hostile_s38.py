"""Hostile launch files (s38, hunter H17; fixer F6): each is refused by ``perception launch --check``
(and so before anything starts) in one line naming what to fix, never a traceback, never gigabytes.

- Two nodes that write one file (two ``record`` nodes on one ``out``, however spelt, or one whose
  ``out`` is a split of the other's recording; ``view`` outs, ``listen`` save folders): both
  reported success over a recording that could not be read.
- An arg-default substitution bomb (``$(var a)$(var a)`` doubled over) reached 10 GB during ``--check``.
- A NUL character in any YAML value (launch files and ``--config`` files) gave a traceback.
- A numeric ``endpoint`` skipped every endpoint check; loopback spellings (``127.1``,
  ``::ffff:127.0.0.1``) escaped the bind clash check and drew a false "unencrypted" warning;
  ``localhost.`` passed ``--check`` and failed at the bind.
- The "address already in use" fix named port+1, unchecked (busy, or another node's).
- No cap on includes, nodes, name length, file size; an ``arg`` declared twice was taken silently.
"""

from __future__ import annotations

import logging

import pytest
import yaml
import zmq

from perception.cli import main as cli_main
from perception.endpoints import address_in_use_fix, canonical_bind_host, is_loopback

LISTEN = {"kind": "listen", "parameters": {"namespace": "perception/front", "endpoint": "tcp://127.0.0.1:6590"}}


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _check_file(file, capsys, *args: str) -> tuple[int, str]:
    code, _out, err = _run(capsys, "launch", str(file), "--check", *args)
    assert "Traceback" not in err, err
    return code, err


def _check(folder, capsys, entries: list, *args: str) -> tuple[int, str]:
    file = folder / "l.yaml"
    file.write_text(yaml.safe_dump({"launch": entries}, width=10**9), encoding="utf-8")
    return _check_file(file, capsys, *args)


def _one_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("perception: error: "), err
    return lines[0]


def _record(name: str, out, **more) -> dict:
    return {"node": {"name": name, "kind": "record", "parameters": {
        "endpoint": "tcp://127.0.0.1:6590", "namespace": "perception/front", "out": str(out), **more}}}


# ---- #2: two nodes writing one file ---------------------------------------------------------------

def test_two_recorders_on_one_out_spelt_differently_are_refused_naming_both(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _check(tmp_path, capsys, [_record("r1", tmp_path / "same.mcap", overwrite=True),
                                          _record("r2", "./same.mcap", overwrite=True)])
    line = _one_error(err)
    assert code == 2
    assert (f"nodes 'r1' (out: {tmp_path / 'same.mcap'}) and 'r2' (out: ./same.mcap) both write "
            f"{tmp_path / 'same.mcap'}") in line and "give one of them another out" in line, line


def test_two_recorders_through_a_linked_folder_are_refused(tmp_path, capsys):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    code, err = _check(tmp_path, capsys, [_record("r1", tmp_path / "real" / "a.mcap"),
                                          _record("r2", tmp_path / "link" / "a.mcap")])
    assert code == 2 and "nodes 'r1' " in _one_error(err) and " and 'r2' " in err, err


@pytest.mark.parametrize(("first", "second", "split"), [
    ("sp.mcap", "sp_0.mcap", {"split_duration": 5}),  # the hunter's: sp.mcap's first split is the other's file
    ("sp.mcap", "sp_12.mcap", {}),  # without splits, record refuses (or with overwrite removes) sp_N.mcap too
    ("sp", "sp.mcap", {"split_size": 10}),  # both recordings split into sp_0.mcap, sp_1.mcap, ...
])
def test_a_recorder_writing_a_split_of_another_recording_is_refused(tmp_path, capsys, first, second, split):
    code, err = _check(tmp_path, capsys, [_record("r1", tmp_path / first, **split),
                                          _record("r2", tmp_path / second, split_size=10)])
    line = _one_error(err)
    assert code == 2 and "nodes 'r1' " in line and " and 'r2' " in line and "of the recording of 'r1'" in line, line


def test_recorders_on_distinct_files_pass(tmp_path, capsys):
    code, err = _check(tmp_path, capsys, [_record("r1", tmp_path / "sp.mcap", split_duration=5),
                                          _record("r2", tmp_path / "sp_a.mcap"),
                                          _record("r3", tmp_path / "other" / "sp.mcap", split_duration=5),
                                          _record("r4", tmp_path / "sp_0.mcap.bak")])
    assert code == 0, err


def test_two_views_or_listens_writing_one_place_are_refused(tmp_path, capsys, monkeypatch):
    views = [{"node": {"name": n, "kind": "view", "parameters": {
        "endpoint": "tcp://127.0.0.1:6590", "namespace": "perception/front", "out": str(tmp_path / "v.mp4")}}}
        for n in ("v1", "v2")]
    code, err = _check(tmp_path, capsys, views)
    assert code == 2 and "nodes 'v1' (out: " in _one_error(err), err

    saves = [{"node": {"name": n, "kind": "listen", "parameters": {
        "endpoint": "tcp://127.0.0.1:6590", "namespace": "perception/front", "save_dir": str(tmp_path / "m")}}}
        for n in ("l1", "l2")]
    code, err = _check(tmp_path, capsys, saves)
    assert code == 2 and "give one of them another save_dir" in _one_error(err), err

    # With no display, two views without out both write view's default file.
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.chdir(tmp_path)
    for view in views:
        del view["node"]["parameters"]["out"]
    code, err = _check(tmp_path, capsys, views)
    assert code == 2 and "out/view.mp4 (the default, with no display)" in _one_error(err), err


def test_the_default_view_out_is_the_one_view_writes():
    from perception.launch.checks import _DEFAULT_VIEW_OUT
    from perception.sinks import DEFAULT_VIEW_OUT

    assert str(DEFAULT_VIEW_OUT) == _DEFAULT_VIEW_OUT


# ---- #3: substitution bombs -----------------------------------------------------------------------

def _doubling_args(count: int) -> list:
    return [{"arg": {"name": "a0", "default": "xx"}}] + [
        {"arg": {"name": f"a{i}", "default": f"$(var a{i - 1})$(var a{i - 1})"}} for i in range(1, count)]


def test_an_arg_default_bomb_is_one_line_naming_the_arg_even_unused(tmp_path, capsys):
    # a_i holds 2^(i+1) characters: a17 is the first over 128 KiB (300 args reached 10 GB); no node uses them.
    code, err = _check(tmp_path, capsys, [*_doubling_args(26), {"node": {"name": "n", **LISTEN}}])
    line = _one_error(err)
    assert code == 2
    assert "arg 'a17': default: its substitutions make a value of more than 131,072 characters" in line, line


def test_many_large_values_stop_at_the_launch_text_budget(tmp_path, capsys):
    big = "x" * 100_000
    entries = [{"arg": {"name": "a0", "default": big}}] + [
        {"arg": {"name": f"a{i}", "default": "$(var a0)y"}} for i in range(1, 121)]  # 12 MB in all
    code, err = _check(tmp_path, capsys, [*entries, {"node": {"name": "n", **LISTEN}}])
    assert code == 2 and "the substitutions of this launch make more than 10 MB of text in all" in _one_error(err), err


# ---- #4: NUL characters -------------------------------------------------------------------------

@pytest.mark.parametrize(("node", "key"), [
    ('{name: n, kind: listen, parameters: {namespace: "perception/f\\u0000x"}}', "namespace"),
    ('{name: n, kind: record, parameters: {namespace: perception/front, out: "a\\0b.mcap"}}', "out"),
    ('{name: n, kind: pipeline, parameters: {source: "synthetic\\x00x"}}', "source"),
])
def test_a_nul_in_a_launch_value_is_one_line_naming_the_key(tmp_path, capsys, node, key):
    file = tmp_path / "l.yaml"
    file.write_text(f"launch:\n  - node: {node}\n", encoding="utf-8")
    code, err = _check_file(file, capsys)
    assert code == 2
    assert f"the value of key '{key}' at line 2 holds a NUL character" in _one_error(err), err


def test_a_nul_in_an_include_or_a_key_is_one_line(tmp_path, capsys):
    file = tmp_path / "l.yaml"
    file.write_text('launch:\n  - include: {file: "a\\0b.yaml"}\n', encoding="utf-8")
    code, err = _check_file(file, capsys)
    assert code == 2 and "the value of key 'file' at line 2 holds a NUL" in _one_error(err), err
    file.write_text('launch:\n  - node: {name: n, kind: listen, parameters: {"name\\0": 1}}\n', encoding="utf-8")
    code, err = _check_file(file, capsys)
    assert code == 2 and "a key at line 2 holds a NUL" in _one_error(err), err


def test_a_nul_in_a_run_config_file_is_one_line(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text('source: "a\\u0000b.mp4"\n', encoding="utf-8")
    code, _out, err = _run(capsys, "run", "--config", str(config))
    assert code == 2 and "Traceback" not in err
    assert "the value of key 'source' at line 1 holds a NUL character" in _one_error(err), err


# ---- #7, #8: endpoints --------------------------------------------------------------------------

def _pipeline(name: str, endpoint) -> dict:
    return {"node": {"name": name, "kind": "pipeline", "parameters": {"source": "synthetic", "camera_name": name,
                                                                      "endpoint": endpoint}}}


def test_a_numeric_endpoint_is_refused_with_the_whole_form(tmp_path, capsys):
    code, err = _check(tmp_path, capsys, [_pipeline("n", 5556)])
    assert code == 2
    assert ("node 'n': parameters: endpoint: 5556 is a port number, not an endpoint; give the whole endpoint, e.g. "
            "tcp://127.0.0.1:5556") in _one_error(err), err
    # A whole-value substitution keeps the argument's type, an int.
    code, err = _check(tmp_path, capsys, [{"arg": {"name": "port", "default": 6500}}, _pipeline("n", "$(var port)")],
                       "port:=6501")
    assert code == 2 and "endpoint: 6501 is a port number" in _one_error(err), err
    listen = {"name": "l", "kind": "listen", "parameters": {"namespace": "perception/front", "endpoint": 5556.5}}
    code, err = _check(tmp_path, capsys, [{"node": listen}])
    assert code == 2 and "endpoint: bad endpoint '5556.5'" in _one_error(err), err


@pytest.mark.parametrize("spelling", ["127.1", "[::ffff:127.0.0.1]", "0x7f.1", "2130706433"])
def test_loopback_spellings_clash_with_127_0_0_1_under_check(tmp_path, capsys, spelling):
    code, err = _check(tmp_path, capsys, [_pipeline("a", f"tcp://{spelling}:6390"),
                                          _pipeline("b", "tcp://127.0.0.1:6390")])
    assert code == 2
    assert f"nodes 'a' (tcp://{spelling}:6390) and 'b' (tcp://127.0.0.1:6390) bind the same address" in _one_error(err)


@pytest.mark.parametrize("spelling", ["127.1", "[::ffff:127.0.0.1]", "0x7f.1"])
def test_zeromq_binds_those_spellings_to_127_0_0_1_and_they_are_loopback(spelling):
    with zmq.Context() as ctx:
        first, second = ctx.socket(zmq.PUB), ctx.socket(zmq.PUB)
        second.setsockopt(zmq.IPV6, 1)
        try:
            first.bind("tcp://127.0.0.1:*")
            port = first.last_endpoint.decode().rsplit(":", 1)[1]
            with pytest.raises(zmq.ZMQError, match="in use"):  # ZeroMQ itself: one address
                second.bind(f"tcp://{spelling}:{port}")
        finally:
            first.close(linger=0)
            second.close(linger=0)
    assert canonical_bind_host(spelling) == "127.0.0.1"
    assert is_loopback(spelling.strip("[]"))
    assert not is_loopback("10.1") and canonical_bind_host("[::ffff:0.0.0.0]") == "0.0.0.0"


def test_a_loopback_spelling_draws_no_unencrypted_warning(caplog):
    from perception.publish import MaskPublisher

    with caplog.at_level(logging.WARNING, logger="perception.xpub"), \
            MaskPublisher(endpoint="tcp://127.1:*", namespace="perception/front"):
        pass
    assert not [r for r in caplog.records if "leave this machine" in r.getMessage()], caplog.text


def test_a_host_a_publisher_cannot_bind_is_refused_but_a_subscriber_may_name_it(tmp_path, capsys):
    code, err = _check(tmp_path, capsys, [_pipeline("a", "tcp://localhost.:6390")])
    line = _one_error(err)
    assert code == 2 and "node 'a': parameters: endpoint: cannot bind tcp://localhost.:6390: 'localhost.' is " \
                         "neither an IP address nor a network interface of this machine" in line, line
    listen = {"name": "l", "kind": "listen", "parameters": {"namespace": "perception/front",
                                                            "endpoint": "tcp://localhost.:6390"}}
    code, err = _check(tmp_path, capsys, [{"node": listen}])  # connecting looks the name up
    assert code == 0, err


# ---- #9: the address-in-use fix -------------------------------------------------------------------

def test_the_address_in_use_fix_names_no_port_it_has_not_checked():
    fix = address_in_use_fix("tcp://127.0.0.1:6324")
    assert "6325" not in fix and "--endpoint tcp://127.0.0.1:* for any free one" in fix, fix


# ---- #10, #11: caps and duplicates --------------------------------------------------------------

def test_an_include_fan_out_is_capped(tmp_path, capsys):
    (tmp_path / "f0.yaml").write_text("launch:\n  - arg: {name: x, default: 1}\n", encoding="utf-8")
    for level in (1, 2, 3):  # 11 + 121 + 1331 includes
        (tmp_path / f"f{level}.yaml").write_text(
            "launch:\n" + f"  - include: {{file: f{level - 1}.yaml}}\n" * 11, encoding="utf-8")
    top = tmp_path / "top.yaml"
    top.write_text("launch:\n  - include: {file: f3.yaml}\n  - node: {name: n, kind: listen}\n", encoding="utf-8")
    code, err = _check_file(top, capsys)
    assert code == 2 and "more than 1,000 includes in all" in _one_error(err), err


def test_an_arg_declared_twice_is_refused_naming_both(tmp_path, capsys):
    code, err = _check(tmp_path, capsys, [{"arg": {"name": "x", "default": "perception/one"}},
                                          {"node": {"name": "n", **LISTEN}},
                                          {"arg": {"name": "x", "default": "perception/two"}}])
    assert code == 2 and "arg 'x' is declared twice (entries 1 and 3); keep one" in _one_error(err), err


def test_names_nodes_and_file_size_are_capped(tmp_path, capsys):
    code, err = _check(tmp_path, capsys, [{"node": {"name": "n" * 64, **LISTEN}}])
    assert code == 0, err
    code, err = _check(tmp_path, capsys, [{"node": {"name": "n" * 65, **LISTEN}}])
    assert code == 2 and "name is 65 characters long; a name holds at most 64" in _one_error(err), err
    code, err = _check(tmp_path, capsys, [{"arg": {"name": "a" * 65, "default": 1}}, {"node": {"name": "n", **LISTEN}}])
    assert code == 2 and "a name holds at most 64" in _one_error(err), err

    code, err = _check(tmp_path, capsys, [{"node": {"name": f"n{i}", **LISTEN}} for i in range(257)])
    assert code == 2 and "node 'n256': more than 256 nodes in this launch" in _one_error(err), err

    big = tmp_path / "big.yaml"
    big.write_text("launch:\n  - node: {name: n, kind: listen}\n# " + "x" * 10_000_000 + "\n", encoding="utf-8")
    code, err = _check_file(big, capsys)
    assert code == 2 and f"{big} is larger than 10 MB" in _one_error(err), err


# ---- H16 #1: a respawning recorder without append -------------------------------------------------

def test_a_respawning_record_node_without_append_is_warned_about(tmp_path, capsys, caplog):
    plain = _record("rec", tmp_path / "run.mcap", split_duration=5)
    plain["node"]["respawn"] = True
    code, _err = _check(tmp_path, capsys, [plain])
    warned = [r.getMessage() for r in caplog.records if "should set append: true" in r.getMessage()]
    assert code == 0 and len(warned) == 1 and "node 'rec': a record node with respawn: true" in warned[0]
    caplog.clear()
    appending = _record("rec", tmp_path / "run.mcap", split_duration=5, append=True)
    appending["node"]["respawn"] = True
    code, _err = _check(tmp_path, capsys, [appending])
    assert code == 0 and not any("should set append" in r.getMessage() for r in caplog.records)
