"""Small wordings H45 of session s41 left as LOW:

- a recording whose name holds a newline was "no split recording" although its splits were there;
- a ``metadata.yaml`` that is a folder was said to "list other files";
- ``inspect`` of a real-road check without task figures printed ``on ? (?, ...``.
"""

from __future__ import annotations

import pytest
import yaml

from perception.record_output import BAG_METADATA_FILE
from tests.test_upgrade_s41 import _recording


def test_recover_of_a_folder_whose_recording_name_holds_a_newline(tmp_path, capsys):
    from perception.cli import main

    for i in range(2):
        _recording(tmp_path / f"a\nb_{i}.mcap", metadata={"split_index": str(i)})
    assert main(["record", "--recover", str(tmp_path)]) == 0
    doc = yaml.safe_load((tmp_path / BAG_METADATA_FILE).read_text())
    assert doc["rosbag2_bagfile_information"]["relative_file_paths"] == ["a\nb_0.mcap", "a\nb_1.mcap"]


def test_recover_of_a_folder_whose_metadata_yaml_is_a_folder_says_so(tmp_path, capsys):
    from perception.cli import main

    for i in range(2):
        _recording(tmp_path / f"rec_{i}.mcap", metadata={"split_index": str(i)})
    (tmp_path / BAG_METADATA_FILE).mkdir()
    assert main(["record", "--recover", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / BAG_METADATA_FILE} is a folder, not a file" in err, err


def test_inspect_of_a_real_road_check_without_task_figures_names_what_is_missing(tmp_path, capsys):
    """H45 of s41: a hand-written check with only ``tasks_unknown_off`` printed ``real road  on ? (?, ...``."""
    from perception.cli import main
    from tests.tiny_models import tiny_metadata, write_brightness_model

    check = {"tasks_unknown_off": {"drivable": {"iou": 0.5}}, "frames": 3}
    model = write_brightness_model(tmp_path / "m.onnx", (8, 8), metadata=tiny_metadata((8, 8), real_road_check=check))
    assert main(["inspect", str(model)]) == 0
    line = next(t for t in capsys.readouterr().out.splitlines() if t.startswith("real road"))
    assert line == "real road  no task figures on data not named (?, 3 frames, never trained on)", line


def test_recover_of_a_folder_names_a_split_its_range_leaves_out(tmp_path, capsys):
    """H54 L3 of s42: 'it lists the 3 splits of rec (rec_0.mcap .. rec_3.mcap)' left rec_2 out unsaid there."""
    from perception.cli import main

    for i in (0, 1, 3):
        _recording(tmp_path / f"rec_{i}.mcap", metadata={"split_index": str(i)})
    _recording(tmp_path / "rec_2.mcap", killed=True)
    assert main(["record", "--recover", str(tmp_path)]) == 0
    assert "it lists the 3 splits of rec (rec_0.mcap .. rec_3.mcap without rec_2.mcap)" in capsys.readouterr().out


@pytest.mark.parametrize(("tau", "said"), [
    (0.0, "logits     not adjusted: tau 0 chosen (auto: best on the training frames)"),
    (0.8, "logits     adjusted: tau 0.8 of the enet class weights undone at the argmax (auto: best on the training frames)"),
])
def test_inspect_says_a_logit_adjustment_of_tau_0_adjusts_nothing(tmp_path, capsys, tau, said):
    """H53 L1 of s42: 'adjusted: tau 0.0 of the enet class weights undone' where nothing was."""
    from perception.cli import main
    from tests.tiny_models import tiny_metadata, write_brightness_model

    metadata = tiny_metadata((8, 8))
    classes = metadata.class_table.num_classes
    adjust = {"tau": tau, "weighting": "enet", "bias": [-0.0] * classes, "rule": "auto: best on the training frames"}
    model = write_brightness_model(tmp_path / "m.onnx", (8, 8), metadata=tiny_metadata((8, 8), logit_adjust=adjust))
    assert main(["inspect", str(model)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith(said) for line in lines), [line for line in lines if line.startswith("logits")]
