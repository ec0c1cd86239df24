"""``perception synth --contact-sheet FILE`` refuses an existing file without ``--overwrite``, as
``--video`` and ``view --out`` do (it replaced someone's image silently)."""

from __future__ import annotations

import pytest

from perception.cli import main as cli_main

SHEET = ["--count", "2", "--size", "48x64"]


def _run(argv, capsys) -> tuple[int, str, str]:
    code = cli_main(["synth", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_an_existing_sheet_is_refused_in_one_line_and_left_as_it_was(tmp_path, capsys):
    sheet = tmp_path / "world.png"
    sheet.write_bytes(b"someone's picture")
    code, out, err = _run(["--contact-sheet", str(sheet), *SHEET], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0] == (f"perception: error: --contact-sheet {sheet} already exists; choose another --contact-sheet, "
                        "remove it, or pass --overwrite to replace it")
    assert sheet.read_bytes() == b"someone's picture"


def test_overwrite_replaces_it_and_a_new_path_needs_no_flag(tmp_path, capsys):
    sheet = tmp_path / "world.png"
    code, out, _ = _run(["--contact-sheet", str(sheet), *SHEET], capsys)
    assert code == 0 and f"to {sheet}" in out
    first = sheet.read_bytes()
    assert first.startswith(b"\x89PNG")
    code, _, _ = _run(["--contact-sheet", str(sheet), "--count", "3", "--size", "48x64", "--overwrite"], capsys)
    assert code == 0
    assert sheet.read_bytes() != first  # three tiles now, not two


def test_a_folder_in_its_place_is_named(tmp_path, capsys):
    code, _, err = _run(["--contact-sheet", str(tmp_path), *SHEET], capsys)
    assert code == 2 and f"--contact-sheet {tmp_path} is a folder" in err


@pytest.mark.parametrize("argv, said", [
    # --overwrite alone still names what it is for, now both files.
    (["--overwrite", "--count", "3"], "(or it replaces an existing --contact-sheet image;"),
    # The sheet's other refusals stay.
    (["--contact-sheet", "{dir}/w.png", "--overwrite", "--fps", "10"], "so --fps would be ignored"),
])
def test_overwrite_elsewhere_is_still_refused(tmp_path, capsys, argv, said):
    code, _, err = _run([a.replace("{dir}", str(tmp_path)) for a in argv], capsys)
    assert code == 2 and said in err, err
    assert list(tmp_path.iterdir()) == []
