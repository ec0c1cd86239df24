"""What a user reads: ``launch --help`` names the CURVE key files ``--check`` reads and the exit-status
rule (V1 N6); ``eval``'s per-class table stays aligned with wide characters in class names (F6)."""

from __future__ import annotations

import numpy as np

from perception.contracts import ClassInfo, ClassTable
from perception.metrics import ConfusionMatrix, display_width


def test_launch_help_names_the_curve_key_files_and_the_exit_status(capsys):
    import pytest

    from perception.cli import main

    with pytest.raises(SystemExit) as done:
        main(["launch", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "usage: perception launch [-h] [-v] [-q] [--check] FILE" in text
    assert "CURVE key files: curve_secret_key, the curve_allow folder" in text
    assert "exit status: 0 when no node failed for good; 1 when one did" in text
    assert "required node's own 2 or 3" in text


def test_the_per_class_table_is_aligned_after_wide_characters():
    names = ["road", "車道", "🚗 car", "cafe\u0301", "an-ordinary-long-name"]
    table = ClassTable(classes=tuple(ClassInfo(i, n, (i, i, i)) for i, n in enumerate(names)))
    cm = ConfusionMatrix(len(names))
    rng = np.random.default_rng(0)
    cm.update(rng.integers(0, len(names), (20, 20)), rng.integers(0, len(names), (20, 20)))
    rows = cm.format_table(table).splitlines()[: len(names) + 1]
    # The number columns have fixed widths: aligned rows all end in the header's terminal column.
    assert len({display_width(row) for row in rows}) == 1, "\n".join(rows)
    assert display_width("車道") == 4 and display_width("🚗") == 2 and display_width("cafe\u0301") == 4
