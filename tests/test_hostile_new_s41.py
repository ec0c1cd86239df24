"""Hostile input against session s41's new input surface (H45, session s41).

- F4: ``record --recover DIR`` said nothing of a missing split, and took another recording's split
  copied in under the same stem for one of its own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from perception.mcap_writer import McapMaskWriter
from perception.record_output import BAG_METADATA_FILE
from perception.subscribe import Message
from perception.wire import mask_header

NS = "perception/front"


def _split(path: Path, index: int, started: str = "2025-01-01T10:00:00+00:00") -> None:
    """A finished split as the recorder writes it: its ``split_index`` and its run's ``started_utc``."""
    writer = McapMaskWriter(path, chunk_size=256)
    for seq in range(2):
        header = mask_header(height=8, width=8, compression="none", values="binary", seq=seq, capture_ns=seq,
                             publish_ns=seq, frame_id="f", model_id="m", latency_ms={})
        writer.write(Message(f"{NS}/lane", header, np.zeros((8, 8), np.uint8), wire_bytes=1,
                             receive_ns=1_000_000 * (index + 1) + seq))
    writer.close({"split_index": str(index), "started_utc": started})


def _listed(folder: Path) -> list[str]:
    doc = yaml.safe_load((folder / BAG_METADATA_FILE).read_text())
    return doc["rosbag2_bagfile_information"]["relative_file_paths"]


def _recover(folder: Path, capsys) -> str:
    from perception.cli import main

    assert main(["record", "--recover", str(folder)]) == 0
    return capsys.readouterr().out


def test_recover_dir_names_a_missing_split(tmp_path, capsys):
    for i in (0, 1, 3):
        _split(tmp_path / f"run_{i}.mcap", i)
    out = _recover(tmp_path, capsys)
    assert "run_2.mcap is missing (deleted, moved or not copied)" in out, out
    assert _listed(tmp_path) == ["run_0.mcap", "run_1.mcap", "run_3.mcap"]


def test_recover_dir_names_a_split_the_earlier_metadata_listed(tmp_path, capsys):
    for i in range(3):
        _split(tmp_path / f"run_{i}.mcap", i)
    _recover(tmp_path, capsys)
    (tmp_path / "run_2.mcap").unlink()  # the last split, gone since
    out = _recover(tmp_path, capsys)
    assert "run_2.mcap is missing" in out, out


def test_recover_dir_leaves_out_a_split_whose_index_is_another(tmp_path, capsys):
    for i in range(3):
        _split(tmp_path / f"run_{i}.mcap", i)
    _split(tmp_path / "run_7.mcap", 1, started="2024-06-01T08:00:00+00:00")  # another drive's run_1
    out = _recover(tmp_path, capsys)
    assert "run_7.mcap is left out: its own metadata says it is split 1 of a recording, not split 7" in out, out
    assert "missing" not in out  # 3..6 are no gap: run_7 is not this recording's
    assert "lists the 3 splits of run (run_0.mcap .. run_2.mcap)" in out
    assert _listed(tmp_path) == ["run_0.mcap", "run_1.mcap", "run_2.mcap"]


def test_recover_dir_leaves_out_a_split_of_another_recorder_run(tmp_path, capsys):
    for i in (0, 2):
        _split(tmp_path / f"run_{i}.mcap", i)
    _split(tmp_path / "run_1.mcap", 1, started="2024-06-01T08:00:00+00:00")  # copied in to fill the gap
    out = _recover(tmp_path, capsys)
    assert "run_1.mcap is left out: its own metadata says its recorder started at 2024-06-01T08:00:00+00:00" in out
    assert _listed(tmp_path) == ["run_0.mcap", "run_2.mcap"]


def test_recover_dir_keeps_the_splits_of_an_append_run(tmp_path, capsys):
    for i in range(4):
        _split(tmp_path / f"run_{i}.mcap", i, started=f"2025-01-0{1 + i // 2}T10:00:00+00:00")
    out = _recover(tmp_path, capsys)
    assert "left out" not in out and "missing" not in out, out
    assert _listed(tmp_path) == [f"run_{i}.mcap" for i in range(4)]


# --------------------------------------------------------------------------------------------
# F5/F6: wording
# --------------------------------------------------------------------------------------------


def test_inspect_of_the_shipped_model_says_no_world_warning(capsys):
    from perception.cli import main

    model = Path(__file__).resolve().parent.parent / "perception" / "assets" / "default.onnx"
    assert main(["inspect", str(model)]) == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and "synthetic world" not in out and "not comparable" not in out, out


def test_inspect_prints_minus_zero_as_zero():
    from perception.commands.inspect import _pct

    assert _pct(-0.0) == "0.00 %" and _pct(0.5) == "50.00 %" and _pct(None) == "-"


def test_resume_refuses_a_malformed_world_in_train_state():
    from types import SimpleNamespace

    import pytest

    from perception.errors import ModelError
    from perception.training.run_state import check_resume_model

    config = SimpleNamespace(model="segnet_basic")
    for bad in ("1", float("nan"), 1.0, -1, True):
        ckpt = SimpleNamespace(train_state={"synthetic_world": bad}, model_name="segnet_basic")
        with pytest.raises(ModelError, match=r"is damaged: train_state synthetic_world .* is not a count"):
            check_resume_model(ckpt, config, "old.pt")
    for good in (1, 0):
        check_resume_model(SimpleNamespace(train_state={"synthetic_world": good}, model_name="segnet_basic"),
                           config, "old.pt")
    check_resume_model(SimpleNamespace(train_state={}, model_name="segnet_basic"), config, "old.pt")  # none: older


def test_a_gap_in_ade20k_class_ids_is_named_in_that_layout(tmp_path):
    import pytest

    from perception.datasets.folder import _read_class_table
    from perception.errors import DataError

    def table(ignore, ids):
        doc = {"ignore_id": ignore, "classes": [{"id": i, "name": f"c{i}", "color": [i, i, i]} for i in ids]}
        (tmp_path / "classes.yaml").write_text(yaml.safe_dump(doc))
        with pytest.raises(DataError) as info:
            _read_class_table(tmp_path / "classes.yaml")
        return str(info.value)

    why = table(0, [1, 2, 4])
    assert "the class ids must be 1, 2, ... in order without gaps: id 3 is missing" in why, why
    assert "must be 0.." not in why and "number the classes from 1" not in why
    assert "id 2 comes where id 1 should" in table(0, [2, 1, 3])
    assert "ADE20K" not in table(False, [1, 2, 4])  # not ignore_id 0: no hint of that layout
