"""What an older version left on disk, used by this one (H43, session s41).

- F1: the synthetic world has a version; runs, checkpoints, exports and ``synth.yaml`` record it, and a
  resume or an eval against another world version says the figures are not comparable.
- F2: ``record --recover`` of a killed ``drive_2025.mcap`` beside ``drive_2023.mcap`` (two recordings)
  wrote a ``metadata.yaml`` listing both as splits.
- F4: a ``listen`` launch node's old ``duration`` / ``interval`` keys were refused.
- F6: ``record --recover DIR`` writes the ``metadata.yaml`` of splits that older versions left without one.
- F7: a 0-byte recording given to replay was "not an MCAP file".
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

from perception.mcap_writer import McapMaskWriter
from perception.record_output import BAG_METADATA_FILE
from perception.recover import recover_recording
from perception.subscribe import Message
from perception.wire import mask_header

NS = "perception/front"


def _recording(path: Path, n: int = 3, *, metadata: dict[str, str] | None = None, killed: bool = False) -> None:
    writer = McapMaskWriter(path, chunk_size=256)
    mask = np.zeros((8, 8), np.uint8)
    for seq in range(n):
        header = mask_header(height=8, width=8, compression="none", values="binary", seq=seq, capture_ns=seq,
                             publish_ns=seq, frame_id="f", model_id="m", latency_ms={})
        writer.write(Message(f"{NS}/lane", header, mask, wire_bytes=1, receive_ns=1_000_000 + seq))
    if killed:
        writer.abandon()
    else:
        writer.close(metadata)


def _listed(folder: Path) -> list[str]:
    doc = yaml.safe_load((folder / BAG_METADATA_FILE).read_text())
    return doc["rosbag2_bagfile_information"]["relative_file_paths"]


def test_recover_of_a_killed_date_named_recording_does_not_make_a_bag_of_its_neighbours(tmp_path):
    _recording(tmp_path / "drive_2023.mcap", metadata={"endpoint": "e"})  # complete, unsplit
    _recording(tmp_path / "drive_2025.mcap", 6, killed=True)
    summary = recover_recording(tmp_path / "drive_2025.mcap")
    assert not (tmp_path / BAG_METADATA_FILE).exists()
    assert "drive_2025.mcap is taken for a recording of its own, not a split" in summary.format()


def test_recover_of_a_killed_split_still_joins_its_recording(tmp_path):
    for i in range(2):
        _recording(tmp_path / f"run_{i}.mcap", metadata={"split_index": str(i)})
    _recording(tmp_path / "run_2023.mcap", metadata={"endpoint": "e"})  # numbered, but a recording of its own
    _recording(tmp_path / "run_2.mcap", 6, killed=True)
    summary = recover_recording(tmp_path / "run_2.mcap")
    assert "lists it now (3 splits" in summary.format()
    assert _listed(tmp_path) == ["run_0.mcap", "run_1.mcap", "run_2.mcap"]


def test_recover_of_a_folder_writes_the_metadata_older_versions_did_not(tmp_path, capsys):
    from perception.cli import main

    for i in range(3):
        _recording(tmp_path / f"rec_{i}.mcap", metadata={"split_index": str(i)})
    _recording(tmp_path / "rec_3.mcap", killed=True)
    assert main(["record", "--recover", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / BAG_METADATA_FILE} written: it lists the 3 splits of rec (rec_0.mcap .. rec_2.mcap)" in out
    assert "rec_3.mcap is unfinished" in out
    assert _listed(tmp_path) == ["rec_0.mcap", "rec_1.mcap", "rec_2.mcap"]


def test_recover_of_a_folder_without_splits_is_one_line(tmp_path, capsys):
    from perception.cli import main

    _recording(tmp_path / "drive_2024.mcap", metadata={"endpoint": "e"})
    assert main(["record", "--recover", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no split recording" in err, err


def test_replay_of_an_empty_file_says_it_is_empty(tmp_path):
    from perception.errors import SourceError
    from perception.mcap_reader import read_recording

    (tmp_path / "old.mcap").write_bytes(b"")
    with pytest.raises(SourceError, match=r"old.mcap is empty \(0 bytes\): its recorder ended before"):
        list(read_recording(tmp_path / "old.mcap"))


@pytest.mark.parametrize(("key", "value", "field"), [("duration", 3, "duration_s"), ("interval", 2, "interval_s")])
def test_listen_takes_its_old_launch_keys_with_a_warning(key, value, field, caplog):
    from perception.commands.listen import ListenConfig
    from perception.config import load_config

    with caplog.at_level(logging.WARNING, logger="perception"):
        config = load_config(ListenConfig, {key: value, "namespace": NS}, source="old.yaml")
    assert getattr(config, field) == value
    assert f"'{key}' is deprecated" in caplog.text and f"use '{field}'" in caplog.text


# --------------------------------------------------------------------------------------------
# F1: the synthetic world's version
# --------------------------------------------------------------------------------------------


def _tiny_train(out: Path, *extra: str) -> int:
    import torch

    from perception import cli

    torch.set_num_threads(1)
    return cli.main(["train", "--model", "segnet_basic", "--data", "synthetic:count=4,size=48x64", "--size", "48x64",
                     "--batch-size", "2", "--workers", "0", "--device", "cpu", "--out", str(out), "--set",
                     "progress=false", "--set", "torch_threads=1", *extra])


def test_a_run_records_its_world_and_a_resume_of_an_older_one_says_the_figures_are_not_comparable(tmp_path, caplog):
    import json

    import torch

    from perception.synthetic import SYNTHETIC_WORLD_VERSION
    from perception.training.checkpoint import load_checkpoint

    out = tmp_path / "run"
    assert _tiny_train(out, "--steps", "1") == 0
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt.metrics["synthetic_world"] == SYNTHETIC_WORLD_VERSION
    assert ckpt.train_state["synthetic_world"] == SYNTHETIC_WORLD_VERSION
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1]).get("synthetic_world") == SYNTHETIC_WORLD_VERSION
    with caplog.at_level(logging.WARNING):
        assert _tiny_train(tmp_path / "same", "--steps", "2", "--resume", str(out / "last.pt")) == 0
    assert "synthetic world" not in caplog.text  # the same world: nothing to say
    # A checkpoint of an earlier release: no world recorded.
    doc = torch.load(out / "last.pt", weights_only=False)
    doc["metrics"].pop("synthetic_world")
    doc["train_state"].pop("synthetic_world")
    torch.save(doc, tmp_path / "old.pt")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert _tiny_train(tmp_path / "resumed", "--steps", "2", "--resume", str(tmp_path / "old.pt")) == 0
    lines = [r.getMessage() for r in caplog.records if "synthetic world" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "an unknown version (an earlier release recorded none)" in lines[0]
    assert f"this release renders synthetic world version {SYNTHETIC_WORLD_VERSION}" in lines[0]
    assert "not comparable" in lines[0] and "trains on the new scenes" in lines[0]


def test_synth_yaml_records_the_world(tmp_path):
    from perception.synthetic import SYNTHETIC_WORLD_VERSION, write_dataset

    write_dataset(tmp_path / "s", count=2, height=48, width=64)
    assert yaml.safe_load((tmp_path / "s" / "synth.yaml").read_text())["synthetic_world"] == SYNTHETIC_WORLD_VERSION


def test_eval_and_inspect_name_figures_of_another_world(caplog):
    from perception.commands.eval import _warn_world_change
    from perception.model_metadata import ModelMetadata
    from perception.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_WORLD_VERSION

    spec = "synthetic:count=8,size=64x96"
    with caplog.at_level(logging.WARNING):
        _warn_world_change(spec, "old.onnx", spec, {"miou": 0.02, "step": 4})
        _warn_world_change(spec, "new.onnx", spec, {"miou": 0.02, "synthetic_world": SYNTHETIC_WORLD_VERSION})
        _warn_world_change("camvid:/d", "old.onnx", spec, {"miou": 0.02})  # other data: no figure compared
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("old.onnx's stored validation figures (perception inspect) were "
                                                   "measured in synthetic world an unknown version"), lines
    # The metadata reader takes the key (and older files without it), and refuses a malformed one.
    meta = ModelMetadata("m", SYNTHETIC_CLASSES, (32, 48), dataset=spec,
                         val_metrics={"miou": 0.5, "synthetic_world": SYNTHETIC_WORLD_VERSION})
    assert ModelMetadata.from_json(meta.to_json()).val_metrics["synthetic_world"] == SYNTHETIC_WORLD_VERSION
    with pytest.raises(Exception, match="synthetic_world"):
        ModelMetadata.from_json(meta.to_json().replace('"synthetic_world": 1', '"synthetic_world": -1'))


def test_export_upgrade_names_the_int8_file_beside_it(tmp_path, capsys):
    from test_upgrade import older_export

    from perception.export import upgrade
    from perception.modelfile import save_model

    save_model(older_export(), tmp_path / "m.onnx")
    save_model(older_export(), tmp_path / "m.int8.onnx")  # (any graph on the older layout stands in for it)
    assert upgrade.main([str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'm.int8.onnx'} beside it is still on the older normalisation" in out
    assert f"python -m perception.export.upgrade {tmp_path / 'm.int8.onnx'} upgrades it too" in out
    assert upgrade.main([str(tmp_path / "m.int8.onnx")]) == 0
    assert "beside it" not in capsys.readouterr().out
