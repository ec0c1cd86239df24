"""A run stopped by a data error in a validation (verify pass V2's N2, N3): the resumed run redoes
that validation, so best.pt, metrics.jsonl and the weights equal an uninterrupted run's; and the
last.pt kept on the error does not carry the previous validation's figures as its own."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from test_trainer import write_scenes

from perception import cli
from perception.training.checkpoint import load_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _train(data_spec: str, out: Path, *extra: str) -> int:
    return cli.main(["train", "--model", "segnet_basic", "--data", data_spec, "--size", "32x48", "--batch-size", "2",
                     "--workers", "0", "--device", "cpu", "--out", str(out), "--set", "progress=false",
                     "--set", "torch_threads=1", "--set", "lr=0.01", *extra])


def _val_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["kind"] == "val"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("perception: error:")]
    return line


@pytest.fixture
def data(tmp_path) -> Path:
    root = tmp_path / "data"
    write_scenes(root / "train", 4)
    write_scenes(root / "val", 2, seed=1)
    return root


def test_a_resume_redoes_the_validation_a_bad_file_stopped(data, tmp_path, capsys):
    """N2: the resumed run went straight on to step 3, so the step-2 validation was never run: its
    val record was missing and best.pt could be a later, worse step than the uninterrupted run's."""
    spec = f"folder:{data}"
    assert _train(spec, tmp_path / "ref", "--steps", "4", "--set", "val_every=2") == 0

    bad = data / "val" / "images" / "001.png"
    good = bad.read_bytes()
    bad.write_bytes(b"junk")
    out = tmp_path / "run"
    last = out / "last.pt"
    assert _train(spec, out, "--steps", "4", "--set", "val_every=2") == 2
    assert _error_line(capsys) == (
        f"perception: error: cannot read image {bad}: it is text, not an image (it starts with 'junk'); replace it "
        f"with a good copy, or remove it and its label; the 2 steps trained are in "
        f"{last}: fix the data, then continue with: perception train --resume {last}"
    )
    kept = load_checkpoint(last)
    assert kept.step == 2 and kept.train_state["val_pending"] is True
    assert kept.metrics == {}  # no validation scored these weights (none ever finished)
    # the kept figures go back into later checkpoints: crafted ones are refused as the others are
    doc = torch.load(last, weights_only=True)
    doc["train_state"]["last_validation"] = {"miou": float("inf")}
    torch.save(doc, tmp_path / "crafted.pt")
    assert cli.main(["train", "--resume", str(tmp_path / "crafted.pt"), "--out", str(tmp_path / "other")]) == 2
    line = _error_line(capsys)
    assert "holds a damaged training state" in line and "last_validation: metrics miou inf is not a share" in line

    bad.write_bytes(good)
    assert cli.main(["train", "--resume", str(last)]) == 0
    reference, resumed = _val_records(tmp_path / "ref"), _val_records(out)
    assert [r["step"] for r in resumed] == [2, 4]
    assert resumed == reference
    for name in ("best.pt", "last.pt"):
        want, got = load_checkpoint(tmp_path / "ref" / name), load_checkpoint(out / name)
        assert (got.step, got.metrics) == (want.step, want.metrics), name
        assert all(torch.equal(got.state_dict[k], want.state_dict[k]) for k in want.state_dict), name


def test_a_failed_last_validation_is_resumable_and_last_pt_keeps_no_older_figures(data, tmp_path, capsys):
    """N2 at the last step (it said "score them with perception eval", so best.pt never saw the last
    validation) and N3: the last.pt kept at step 4 stored step 2's figures, which export and
    inspect then showed for the step-4 weights. Also N4: a label that cannot be read is a label."""
    spec = f"folder:{data}"
    out = tmp_path / "run"
    last = out / "last.pt"
    assert _train(spec, out, "--steps", "2", "--set", "val_every=2") == 0
    bad = data / "val" / "labels" / "000.png"
    good = bad.read_bytes()
    bad.write_bytes(b"junk")

    assert cli.main(["train", "--resume", str(last), "--steps", "4"]) == 2
    assert _error_line(capsys) == (
        f"perception: error: cannot read label {bad}: it is text, not an image (it starts with 'junk'); replace it "
        f"with a good copy, or remove it and its image; the 4 steps trained are in "
        f"{last}: fix the data, then continue with: perception train --resume {last}"
    )
    kept = load_checkpoint(last)
    assert kept.step == 4 and kept.metrics == {}
    assert kept.train_state["last_validation"]["step"] == 2 and kept.train_state["val_pending"] is True

    onnx_path = tmp_path / "m.onnx"
    assert cli.main(["export", "--checkpoint", str(last), "--out", str(onnx_path)]) == 0
    capsys.readouterr()
    assert cli.main(["inspect", str(onnx_path)]) == 0
    shown = [line for line in capsys.readouterr().out.splitlines() if line.startswith("val ")]
    assert shown == ["val        none stored: no validation in training scored these weights (the checkpoint was "
                     "saved between validations); perception eval --model scores this file"]

    bad.write_bytes(good)
    assert cli.main(["train", "--resume", str(last)]) == 0  # at its last step: runs only the validation
    assert [r["step"] for r in _val_records(out)] == [2, 4]
    assert load_checkpoint(last).metrics["step"] == 4
    assert load_checkpoint(out / "best.pt").step in (2, 4)
    assert cli.main(["train", "--resume", str(last)]) == 2  # done now: nothing left to run
    assert "already at this run's 4 steps" in _error_line(capsys)


def test_ctrl_c_before_the_last_validation_leaves_it_to_the_resume(data, tmp_path, monkeypatch, capsys):
    """A stop after the last step, before its validation, said "score it with perception eval":
    the run's metrics.jsonl and best.pt then never had the last validation."""
    import perception.training.fit as fit_module

    spec = f"folder:{data}"
    assert _train(spec, tmp_path / "ref", "--steps", "3", "--set", "val_every=2") == 0
    real_step = fit_module.step

    def interrupted_step(run, images, labels):
        if run.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during the last step
        return real_step(run, images, labels)

    monkeypatch.setattr(fit_module, "step", interrupted_step)
    out = tmp_path / "run"
    assert _train(spec, out, "--steps", "3", "--set", "val_every=2") == 130
    kept = load_checkpoint(out / "last.pt")
    assert kept.step == 3 and kept.metrics == {} and kept.train_state["val_pending"] is True
    monkeypatch.setattr(fit_module, "step", real_step)
    assert cli.main(["train", "--resume", str(out / "last.pt")]) == 0
    assert _val_records(out) == _val_records(tmp_path / "ref")
    assert load_checkpoint(out / "best.pt").step == load_checkpoint(tmp_path / "ref" / "best.pt").step
