"""0/255 masks (Label Studio, Labelbox) with a two-class table whose ``ignore_id`` is 255: every
class-1 pixel is left out. Training warned with the cause and the fix since s38; ``eval --tasks``
only said the data "labels no pixel of road". Both now name the cause and the one fix, declared once
(``metrics.masks_0_255_fix``)."""

from __future__ import annotations

import cv2
import numpy as np
import yaml

from perception.cli import main as cli_main


def _masks_folder(root, *, ignore_id):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    table = {"classes": [{"id": 0, "name": "background", "color": [0, 0, 0]},
                         {"id": 1, "name": "road", "color": [128, 64, 128]}],
             "task_groups": {"drivable": ["road"]}}
    if ignore_id is not None:
        table["ignore_id"] = ignore_id
    (root / "classes.yaml").write_text(yaml.safe_dump(table))
    rng = np.random.default_rng(0)
    for i in range(3):
        mask = np.zeros((48, 64), np.uint8)
        mask[24:] = 255  # the road, below a horizon, as 255
        cv2.imwrite(str(root / "images" / f"{i}.png"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        cv2.imwrite(str(root / "labels" / f"{i}.png"), mask)
    return f"folder:{root}"


def test_eval_tasks_names_ignore_id_255_as_the_cause_of_a_road_never_labelled(tmp_path, tiny_model_path, capsys):
    spec = _masks_folder(tmp_path / "masks", ignore_id=255)
    assert cli_main(["eval", "--model", str(tiny_model_path), "--data", spec, "--tasks", "drivable"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: drivable: ")]
    assert len(notes) == 1, notes
    assert f"{spec} labels no pixel of road" in notes[0]
    assert notes[0].endswith("; its labels hold 255, which the class table's ignore_id: 255 leaves out: for 0/255 "
                             "masks remove ignore_id from classes.yaml (or set it to another value), so that 255 "
                             "reads as class 1 (road)")

    # the fix it names: the same masks without ignore_id score the road
    fixed = _masks_folder(tmp_path / "fixed", ignore_id=None)
    assert cli_main(["eval", "--model", str(tiny_model_path), "--data", fixed, "--tasks", "drivable"]) == 0
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: drivable: ")]
