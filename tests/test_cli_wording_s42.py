"""Flag mistakes a new user makes first (H47 of s42): an unquoted pattern the shell expanded, and a
flag cut short."""

from __future__ import annotations

import pytest

from perception.cli import main


def test_an_unquoted_pattern_is_named_with_the_quoted_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "frames").mkdir()
    files = [f"frames/f{i}.png" for i in range(12)]
    for name in files:
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(SystemExit) as done:
        main(["run", "--source", *files, "--mask-size", "source"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert ("--source takes one value, and got 12 files (frames/f0.png frames/f1.png frames/f2.png ... (12 in all)): "
            "the shell expanded an unquoted pattern; quote it: --source 'frames/*.png'") in err
    assert "f11.png" not in err  # a thousand names are not one line


@pytest.mark.parametrize(("typed", "meant"), [("--mask", "--mask-size"), ("--dur", "--duration"), ("--sorce", "--source")])
def test_a_flag_cut_short_suggests_the_flag_it_begins(typed, meant, capsys):
    with pytest.raises(SystemExit) as done:
        main(["run", typed, "1"])
    assert done.value.code == 2
    assert f"did you mean '{meant}'?" in capsys.readouterr().err


def test_files_that_are_no_pattern_get_no_pattern_advice(tmp_path, monkeypatch, capsys):
    """V1 of s42: two different files, or a flag that takes no pattern, were told to quote 'PATTERN'."""
    monkeypatch.chdir(tmp_path)
    for name in ("drive.mp4", "clip.avi", "a.yaml", "b.yaml"):
        (tmp_path / name).write_bytes(b"")
    for argv, said in ((["--source", "drive.mp4", "clip.avi"], "give each camera its own --source NAME=PATH"),
                       (["--config", "a.yaml", "b.yaml"], "--config takes one value, and got 2 files (a.yaml b.yaml); "
                                                          "give --config one of them")):
        with pytest.raises(SystemExit):
            main(["run", *argv])
        err = capsys.readouterr().err
        assert said in err and "quote" not in err, err


def test_a_flag_cut_short_that_begins_two_flags_names_both(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--wait", "1"])
    assert "did you mean '--wait-subscribers' or '--wait-timeout'?" in capsys.readouterr().err
