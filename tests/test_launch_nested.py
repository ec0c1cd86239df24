"""Launch substitutions nest as in ROS 2 launch: ``$(env NAME $(var y))`` and ``$(var $(env X))``,
resolved innermost first, with quoted arguments (``$(env NAME '')``); what cannot be read is one
line naming the file and the arg or node, cycles through nested ``$(var ...)`` included."""

from __future__ import annotations

import pytest
from test_launch_synth_guards import check, write_launch


def record_node(**parameters) -> dict:
    # A record node: --check opens no model for it, so these checks stay fast.
    return {"node": {"name": "rec", "kind": "record", "parameters": {
        "namespace": "perception/front", "out": "$(var out)", "endpoint": "tcp://127.0.0.1:5591", **parameters}}}


@pytest.fixture
def env(monkeypatch):
    for name in ("F4N_OUT", "F4N_DIR", "F4N_CHUNK", "F4N_WHICH", "F4N_EMPTY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_an_env_default_given_by_an_argument(tmp_path, capsys, env):
    file = write_launch(tmp_path / "nest.yaml", [
        {"arg": {"name": "dir", "default": "/data"}},
        {"arg": {"name": "chunk", "default": 256}},
        {"arg": {"name": "out", "default": "$(env F4N_OUT $(var dir))/front.mcap"}},
        record_node(chunk_size_kb="$(env F4N_CHUNK $(var chunk))"),  # one substitution keeps the number
    ])
    code, out, err = check(file, capsys)
    assert code == 0, err
    assert "--out /data/front.mcap" in out and "--chunk-size 256" in out and "$(" not in out

    code, out, err = check(file, capsys, "dir:=/mnt/ssd")  # the override flows through the nesting
    assert code == 0, err
    assert "--out /mnt/ssd/front.mcap" in out

    env.setenv("F4N_OUT", "/env")  # the variable, when set, wins over its default
    env.setenv("F4N_CHUNK", "512")
    code, out, err = check(file, capsys)
    assert code == 0, err
    assert "--out /env/front.mcap" in out and "--chunk-size 512" in out


def test_nesting_in_a_longer_default_a_name_and_quotes(tmp_path, capsys, env):
    env.setenv("F4N_WHICH", "rear")
    file = write_launch(tmp_path / "nest.yaml", [
        {"arg": {"name": "front", "default": "f.mcap"}},
        {"arg": {"name": "rear", "default": "r.mcap"}},
        # the argument's name from a variable; a default built of text and two levels of nesting
        {"arg": {"name": "path", "default": "$(env F4N_DIR runs/$(env F4N_DIR2 $(var $(env F4N_WHICH))))"}},
        # '' is an empty default (ROS 2's optional variable); quotes hold spaces and parentheses
        record_node(namespace="perception/front$(env F4N_EMPTY '')", out="$(env F4N_EMPTY 'my runs (left)/$(var path)')"),
    ])
    env.delenv("F4N_DIR2", raising=False)
    code, out, err = check(file, capsys)
    assert code == 0, err
    assert "path=runs/r.mcap" in out
    assert "--namespace perception/front " in out
    assert "--out 'my runs (left)/runs/r.mcap'" in out


def test_a_resolved_value_is_not_substituted_again(tmp_path, capsys, env):
    # An environment variable holding "$(" is text, spliced as it is (it used to be "unfinished").
    env.setenv("F4N_DIR", "/odd/$(var dir)")
    file = write_launch(tmp_path / "nest.yaml", [
        {"arg": {"name": "out", "default": "$(env F4N_DIR /data)/x.mcap"}}, record_node()])
    code, out, err = check(file, capsys)
    assert code == 0, err
    assert "/odd/$(var dir)/x.mcap" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # a cycle or a forward reference hidden inside $(env ...) is found like a plain one
        ([{"name": "a", "default": "$(env F4N_OUT $(var b))"}, {"name": "b", "default": "$(var a)"}, {"name": "out"}],
         "arg 'a': default: $(var b) makes a cycle of defaults (a -> b -> a), so none of them has a value"),
        ([{"name": "out", "default": "$(env F4N_OUT $(var dir))"}, {"name": "dir", "default": "/data"}],
         "arg 'out': default: $(var dir) names argument 'dir', which is declared below it"),
        # a name given by a substitution is checked once known: itself, or an arg below
        ([{"name": "out", "default": "$(var $(env F4N_WHICH out))"}],
         "arg 'out': default: $(var out) names argument 'out', which is this arg or declared below it; an arg "
         "default may use only the arguments declared above it"),
        ([{"name": "out", "default": "$(var $(env F4N_WHICH dir))"}, {"name": "dir", "default": "/d"}],
         "arg 'out': default: $(var dir) names argument 'dir', which is this arg or declared below it"),
        ([{"name": "out", "default": "$(var $(env F4N_WHICH nope))"}],
         "arg 'out': default: $(var nope) names no declared argument; add an 'arg' entry for it above"),
        # the inner substitution's own error, and ROS 2's rule that a DEFAULT resolves even when unused
        ([{"name": "out", "default": "$(env F4N_OUT $(env F4N_DIR))"}],
         "arg 'out': default: environment variable 'F4N_DIR' is not set; set it or add a default"),
        ([{"name": "out", "default": "$(env F4N_OUT $(find-pkg-share x))"}],
         "arg 'out': default: bad substitution '$(find-pkg-share x)'; known: $(var NAME), $(env NAME [DEFAULT])"),
        ([{"name": "out", "default": "$(env F4N_OUT $(var out)"}],
         "arg 'out': default: unfinished substitution in '$(env F4N_OUT $(var out)': the '$(' at character 1 "
         "has no closing ')'; close it"),
        ([{"name": "out", "default": "$(env F4N_OUT a(b))"}],
         "arg 'out': default: a '(' in an argument of a substitution in '$(env F4N_OUT a(b))'; put that argument "
         "in quotes ('...')"),
        ([{"name": "out", "default": "$(env F4N_OUT 'a b)"}],
         "arg 'out': default: unfinished substitution in \"$(env F4N_OUT 'a b)\": a quote (') is not closed"),
        ([{"name": "out", "default": "$(env F4N_OUT " * 20 + "x" + ")" * 20}],
         "arg 'out': default: substitutions nested more than 16 deep; use an arg for the inner ones"),
    ],
)
def test_a_bad_nested_default_is_one_line_naming_file_and_arg(tmp_path, capsys, env, args, message):
    env.setenv("F4N_OUT", "/set")  # set: the errors come from the default all the same
    file = write_launch(tmp_path / "bad.yaml", [*({"arg": a} for a in args), record_node()])
    code, out, err = check(file, capsys)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"perception: error: {file}: {message}"), err


def test_a_bad_nested_node_parameter_names_the_node_and_key(tmp_path, capsys, env):
    file = write_launch(tmp_path / "bad.yaml", [
        {"arg": {"name": "out", "default": "o.mcap"}}, record_node(topic="$(env F4N_EMPTY $(var cam))")])
    code, out, err = check(file, capsys)
    assert code == 2 and out == ""
    assert err.splitlines() == [f"perception: error: {file}: node 'rec': parameters: topic: $(var cam) names "
                                "no declared argument; add an 'arg' entry for it above"]
