"""The INT8 gate refuses labels of another class table, as ``perception eval`` does.

Scored against another dataset's labels, FP32 and INT8 mIoU mean nothing, yet the gate passed and
stored that figure in the INT8 file (``val_metrics["int8_gate"]``, which ``--engine auto`` reads).
Calibration needs no labels, so ``--calib`` may name any dataset; the gate's ``--val-data``
(default: ``--calib``) and the accuracy control's labelled set may not. The refusal is one line,
exit 2, before any calibration (or export) work, and no file is written or changed.
"""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

from perception.cli import main as cli_main
from perception.contracts import ClassTable
from perception.errors import DataError
from perception.synthetic import SYNTHETIC_CLASSES


def _files(folder) -> dict[str, bytes | None]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.fixture
def no_calibration(monkeypatch):
    """quantize_int8 fails the test if reached: the class check must come first."""
    import perception.export.quantize as quantize

    def calibrating(*args, **kwargs):
        raise AssertionError("calibration ran before the class-table check")

    monkeypatch.setattr(quantize, "quantize_int8", calibrating)
    return quantize


def test_quantize_refuses_val_data_of_another_class_table(tiny_model_path, folder_dataset, tmp_path, no_calibration,
                                                          capsys):
    """The tiny model predicts the synthetic classes; the blocks folder labels four others."""
    quantize = no_calibration
    root, _ = folder_dataset
    model = tmp_path / "tiny.onnx"
    shutil.copy(tiny_model_path, model)
    before = _files(tmp_path)
    common = [str(model), "--calib-count", "2", "--val-count", "2"]

    # --val-data defaults to --calib: keep --calib (calibration needs no labels), add --val-data.
    assert quantize.main([*common, "--calib", f"folder:{root}"]) == 2
    printed = capsys.readouterr()
    err = printed.err
    assert err.count("\n") == 1 and not printed.out, printed
    assert err.startswith(f"export.quantize: error: INT8 gate: {model} predicts classes ['road', 'lane_marking', "), err
    assert f"... {SYNTHETIC_CLASSES.num_classes} in all]" in err  # the long list shortened
    assert f"but --val-data (default: --calib) 'folder:{root}' labels ['background', 'road', 'lane_marking', 'car']" in err
    # tiny_models' metadata says it was trained on "test"
    assert err.rstrip().endswith(f"keep --calib folder:{root} and add --val-data test (the dataset the model was "
                                 "trained for)"), err
    assert _files(tmp_path) == before

    # Named explicitly: pass another --val-data.
    assert quantize.main([*common, "--calib", "synthetic", "--val-data", f"folder:{root}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"but --val-data 'folder:{root}' labels" in err, err
    assert err.rstrip().endswith("pass --val-data test (the dataset the model was trained for)"), err
    assert _files(tmp_path) == before

    # The accuracy control's labelled set: NNCF would rank layers by the same meaningless mIoU.
    assert quantize.main([*common, "--calib", f"folder:{root}", "--val-data", "synthetic",
                          "--accuracy-control", f"folder:{root}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"export.quantize: error: INT8 accuracy control: {model} predicts"), err
    assert f"but --accuracy-control 'folder:{root}' labels" in err and "trained for (test), other than --val-data's" in err
    assert _files(tmp_path) == before


def test_quantize_calibrates_on_any_dataset_when_val_data_matches(tiny_model_path, folder_dataset, tmp_path,
                                                                  no_calibration):
    """--calib of another class table with a matching --val-data passes the check and calibrates."""
    root, _ = folder_dataset
    with pytest.raises(AssertionError, match="calibration ran"):
        no_calibration.main([str(tiny_model_path), "--out", str(tmp_path / "t.int8.onnx"), "--calib", f"folder:{root}",
                             "--val-data", "synthetic", "--calib-count", "2", "--val-count", "1"])


def test_quantize_gate_only_refuses_and_leaves_the_int8_file(tiny_model_path, folder_dataset, tmp_path, capsys):
    """--gate-only records the gate in an existing INT8 file: a mismatched --val-data leaves it as it was."""
    import perception.export.quantize as quantize
    from perception.modelfile import record_metadata

    root, _ = folder_dataset
    int8 = tmp_path / "tiny.int8.onnx"
    shutil.copy(tiny_model_path, int8)
    record_metadata(int8, precision="int8")
    before = _files(tmp_path)
    assert quantize.main([str(tiny_model_path), "--out", str(int8), "--gate-only", "--calib", f"folder:{root}",
                          "--val-count", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "INT8 gate:" in err and "add --val-data test" in err, err
    assert _files(tmp_path) == before


def test_export_int8_refuses_val_data_of_another_class_table(trained_checkpoint, folder_dataset, tmp_path, monkeypatch,
                                                            capsys):
    """``perception export --int8``: the blocks checkpoint gated on synthetic labels is refused before
    the export itself, and the folder --out names is not even created."""
    import perception.export.onnx as export_onnx
    import perception.export.quantize as quantize

    def never(*args, **kwargs):
        raise AssertionError("the export ran before the class-table check")

    monkeypatch.setattr(export_onnx, "export_onnx", never)
    monkeypatch.setattr(quantize, "quantize_int8", never)
    ckpt_path, _ = trained_checkpoint
    root, _ = folder_dataset
    out = tmp_path / "new" / "m.onnx"
    base = ["export", "--checkpoint", str(ckpt_path), "--out", str(out), "--int8", "--verify-count", "1",
            "--calib-count", "2", "--val-count", "2"]
    before = _files(tmp_path)

    assert cli_main([*base, "--calib", "synthetic"]) == 2
    printed = capsys.readouterr()
    err = printed.err
    assert err.count("\n") == 1, printed
    assert err.startswith(f"perception: error: INT8 gate: checkpoint {ckpt_path} predicts classes ['background', "
                          "'road', 'lane_marking', 'car'], but --val-data (default: --calib) 'synthetic' labels "
                          "['road', 'lane_marking', "), err
    assert err.rstrip().endswith(f"keep --calib synthetic and add --val-data folder:{root} (the dataset the model was "
                                 "trained for)"), err
    assert _files(tmp_path) == before

    assert cli_main([*base, "--calib", f"folder:{root}", "--val-data", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "but --val-data 'synthetic' labels" in err, err
    assert err.rstrip().endswith(f"pass --val-data folder:{root} (the dataset the model was trained for)"), err
    assert _files(tmp_path) == before

    # Calibrating on another dataset is fine: with a matching --val-data the export goes on.
    with pytest.raises(AssertionError, match="the export ran"):
        cli_main([*base, "--calib", "synthetic", "--val-data", f"folder:{root}"])


def test_the_message_shows_where_lists_that_look_alike_differ():
    """Shortened lists with the same first names would hide the difference: its place is named."""
    from perception.export.int8_gate import check_gate_classes, val_data_fix

    fewer = ClassTable.from_dict({"classes": [{"id": i, "name": n, "color": [i, i, i]}
                                              for i, n in enumerate(SYNTHETIC_CLASSES.names[:-1])]})
    dataset = SimpleNamespace(name="synthetic-11", class_table=fewer)
    fix = val_data_fix(val_data=None, calib="synthetic-11", trained_on="")
    assert fix == "calibration needs no labels, so keep --calib synthetic-11 and add --val-data SPEC naming the dataset " \
                  "the model was trained for"
    with pytest.raises(DataError) as caught:
        check_gate_classes(SYNTHETIC_CLASSES, dataset, model="m.onnx", flag="--val-data", fix=fix)
    last = SYNTHETIC_CLASSES.num_classes - 1
    assert f"(class {last}: {SYNTHETIC_CLASSES.names[last]!r} vs none)" in str(caught.value)
    assert "\n" not in str(caught.value)
    check_gate_classes(SYNTHETIC_CLASSES, SimpleNamespace(name="s", class_table=SYNTHETIC_CLASSES), model="m", flag="f",
                       fix=fix)  # the same table passes
    # The model's own dataset suggested only when it is not the refused one.
    assert val_data_fix(val_data="camvid:x", calib="camvid:x", trained_on="camvid:x").startswith("pass --val-data SPEC")
