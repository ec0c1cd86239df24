"""``record --out`` that cannot be a recording is refused before connecting (H48 M2, H47 L3 of s42):
a folder (``--overwrite`` then failed only after connecting) or a path under a file ("File exists");
a name other than ``.mcap`` is warned about (a replay of its folder passes over it)."""

from __future__ import annotations

import logging

import pytest

from perception.cli import main

ARGS = ["record", "--namespace", "perception/front", "--endpoint", "tcp://127.0.0.1:1", "--duration", "0.2"]


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_folder_as_out_is_refused_at_once(tmp_path, capsys, overwrite):
    (tmp_path / "dirout").mkdir()
    assert main([*ARGS, "--out", str(tmp_path / "dirout"), *overwrite]) == 2
    err = capsys.readouterr().err
    assert err == f"perception: error: --out {tmp_path / 'dirout'} is a folder; give a file path such as " \
                  f"{tmp_path / 'dirout' / 'run.mcap'}\n"


def test_an_out_under_a_file_names_the_file(tmp_path, capsys):
    (tmp_path / "drive.mp4").write_bytes(b"x")
    assert main([*ARGS, "--out", str(tmp_path / "drive.mp4" / "x.mcap")]) == 2
    assert f"{tmp_path / 'drive.mp4'} is a file, not a folder; choose another --out" in capsys.readouterr().err


def test_an_out_not_named_mcap_is_warned_about(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert main([*ARGS, "--out", str(tmp_path / "rec.txt")]) == 4  # no node there
    assert "--out " + str(tmp_path / "rec.txt") + ": a recording is an MCAP file" in caplog.text
    assert "name it rec.mcap" in caplog.text


@pytest.mark.parametrize("name", ["fifo.mcap", "run_1.mcap"])
def test_a_fifo_as_out_or_as_a_split_is_refused_and_left_as_it_is(tmp_path, capsys, name):
    """H51 HIGH-3 of s42: a device or FIFO was "an earlier recording", and --overwrite replaced it
    (as root, --out /dev/null removed /dev/null)."""
    import os
    import stat

    fifo = tmp_path / name
    os.mkfifo(fifo)
    out = tmp_path / ("fifo.mcap" if name == "fifo.mcap" else "run.mcap")
    assert main([*ARGS, "--out", str(out), "--overwrite"]) == 2
    assert f"--out {fifo} is not a regular file (a device, pipe or socket)" in capsys.readouterr().err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_recover_into_a_fifo_is_refused_and_leaves_it(tmp_path, capsys):
    """V1 of s42: ``record --recover x.mcap --out FIFO --overwrite`` replaced the FIFO (a device as root)."""
    import os
    import stat

    from tests.test_upgrade_s41 import _recording

    _recording(tmp_path / "x.mcap", killed=True)
    fifo = tmp_path / "out.mcap"
    os.mkfifo(fifo)
    assert main(["record", "--recover", str(tmp_path / "x.mcap"), "--out", str(fifo), "--overwrite"]) == 2
    assert f"--out {fifo} is not a regular file (a device, pipe or socket)" in capsys.readouterr().err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
