"""Hunt s42 h49 (README walk as a training engineer): a stop signal to the whole process group,
export flags that need --int8, a checkpoint's own data path, non-checkpoint files given as one,
and the small wordings around them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


def _train_lines(out: Path) -> int:
    try:
        text = (out / "metrics.jsonl").read_text(encoding="utf-8")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if line.strip() and json.loads(line).get("kind") == "train")


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX")
def test_sigterm_to_the_process_group_saves_last_pt_and_exits_130(folder_dataset, tmp_path):
    """H1: systemd's default stop, `timeout` and `kill -- -PGID` send SIGTERM to every process of the
    group, DataLoader workers included; torch's "DataLoader worker ... is killed by signal:
    Terminated" came out of the middle of a step: exit 1, a traceback, no last.pt."""
    root, _ = folder_dataset
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "perception", "train", "--model", "bisenetv2", "--data", f"folder:{root}",
           "--size", "64x96", "--batch-size", "4", "--steps", "400", "--workers", "2", "--device", "cpu",
           "--out", str(out), "--set", "progress=false", "--set", "log_every=1", "--set", "val_every=1000",
           "--set", "torch_threads=1"]
    err_path = tmp_path / "err.txt"
    with open(err_path, "w", encoding="utf-8") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while _train_lines(out) < 2 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proc.poll() is None, err_path.read_text()
            os.killpg(proc.pid, signal.SIGTERM)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = err_path.read_text(encoding="utf-8")
    assert code == 130, text
    assert "Traceback" not in text and "Exception ignored" not in text, text
    assert (out / "last.pt").is_file() and "interrupted at step" in text


@pytest.fixture(scope="module")
def relative_run(tmp_path_factory):
    """A 1-step segnet_basic run started in ``base`` on ``folder:ds`` (a relative data path, as the
    checkpoint records it), and its exported model; returns ``base``."""
    import blocks

    from perception import cli

    base = tmp_path_factory.mktemp("relative")
    blocks.write_dataset(base / "ds")
    here = os.getcwd()
    os.chdir(base)
    try:
        assert cli.main(["-q", "train", "--model", "segnet_basic", "--data", "folder:ds", "--size", "64x96",
                         "--steps", "1", "--batch-size", "2", "--workers", "0", "--out", "run",
                         "--set", "progress=false", "--set", "torch_threads=1"]) == 0
        assert cli.main(["-q", "export", "--checkpoint", "run/best.pt", "--out", "m.onnx", "--verify-count", "1"]) == 0
    finally:
        os.chdir(here)
    (base / "elsewhere").mkdir()
    return base


@pytest.mark.parametrize("flags", [["--calib", "folder:ds"], ["--val-data", "folder:ds", "--val-count", "5"],
                                   ["--allow-int8-drop"], ["--calib-count", "8"]])
def test_int8_flags_without_int8_are_refused_naming_the_flag_and_the_fix(tmp_path, capsys, flags):
    """M1: they were ignored: an FP32 file only, exit 0, and the user believed the INT8 one gated."""
    from perception import cli

    assert cli.main(["export", "--checkpoint", str(tmp_path / "x.pt"), "--out", str(tmp_path / "m.onnx"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flags[0] in err and "add --int8" in err, err
    assert not (tmp_path / "m.onnx").exists()


def test_the_checkpoints_own_relative_data_names_where_it_came_from_and_the_flag(relative_run, monkeypatch, capsys):
    """M2: "dataset folder ds not found" named a path the user never typed, and no flag."""
    from perception import cli
    from perception.export import unknown

    monkeypatch.chdir(relative_run / "elsewhere")
    assert cli.main(["export", "--checkpoint", "../run/best.pt", "--out", "../c.onnx", "--confidence"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "recorded in checkpoint ../run/best.pt" in err and "--unknown-data" in err, err
    assert "relative to where that run started" in err
    assert unknown.main(["../m.onnx", "--out", "../u.onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "recorded in ../m.onnx" in err and "pass --data SPEC" in err, err
    assert not (relative_run / "c.onnx").exists() and not (relative_run / "u.onnx").exists()


def test_an_unreadable_calib_is_named_before_the_gate_that_defaults_to_it(relative_run, monkeypatch, capsys):
    """L6: a text --calib first read as the gate's label-less default ("has no labels")."""
    from perception import cli

    monkeypatch.chdir(relative_run)
    Path("notes.log").write_text("not images\n")
    assert cli.main(["export", "--checkpoint", "run/best.pt", "--out", "q.onnx", "--int8", "--calib", "notes.log"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("perception: error: --calib: ") and "no labels" not in err, err


@pytest.mark.parametrize(("head", "kind"), [
    (b"\x08\x0a\x12\x0aperception", "is an exported ONNX model, not a checkpoint: score it with 'perception eval --model"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is a PNG image, not a checkpoint"),
    (b"\x00\x00\x00\x1cftypisom", "is an MP4/MOV video, not a checkpoint"),
])
def test_a_file_that_is_no_checkpoint_is_named_for_what_it_is(tmp_path, capsys, head, kind):
    """M3: "cannot be read (Unsupported operand 8); it is damaged" for an ONNX model, a PNG, an MP4."""
    from perception import cli

    path = tmp_path / "given.bin"
    path.write_bytes(head + bytes(64))
    assert cli.main(["train", "--resume", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and kind in err and "operand" not in err and "damaged" not in err, err
    from perception.errors import ModelError
    from perception.training.checkpoint import load_checkpoint

    with pytest.raises(ModelError, match=kind.split(",")[0]):
        load_checkpoint(path)


def test_pretrained_weights_that_are_a_text_file_say_so_not_keyerror(tmp_path):
    """L1: "cannot be read as a state dict (KeyError)"."""
    from perception.errors import ModelError
    from perception.models.backbones import read_state_dict

    junk = tmp_path / "junk.pth"
    junk.write_text("hello\n")
    with pytest.raises(ModelError, match="cannot be read: it is not a PyTorch file") as info:
        read_state_dict(junk, model_name="pspnet")
    assert "KeyError" not in str(info.value)


def test_resume_on_data_of_the_same_steps_an_epoch_does_not_say_the_epochs_changed():
    """L3: "an epoch is now 13 steps (was 13), so the data order and the epoch ends ... differ"."""
    from types import SimpleNamespace

    from perception.training.run_state import data_size_change

    config = SimpleNamespace(steps=40, epochs=0, batch_size=2, val_every=0)
    run = SimpleNamespace(config=config, info=SimpleNamespace(world_size=1), train_samples=27, total_steps=40)
    ckpt = SimpleNamespace(train_state={"train_samples": 26}, config={"steps": 40, "batch_size": 2})
    line = data_size_change(ckpt, run, "run/last.pt", 13)
    assert "(was 13)" not in line and "epoch ends" not in line and "an epoch is still 13 steps" in line, line
    ckpt.train_state["train_samples"] = 30
    assert "an epoch is now 13 steps (was 15)" in data_size_change(ckpt, run, "run/last.pt", 13)


def test_out_in_the_folder_a_linked_dataset_copy_points_into_is_refused(tmp_path):
    """L7: a dataset copy made of links (train -> /data/camvid/train) let --out /data/camvid/run write
    into the real dataset: only the copy's own folder was compared."""
    from types import SimpleNamespace

    from perception.errors import ConfigError
    from perception.training.run_dir import check_run_dir_outside_data

    real = tmp_path / "camvid"
    (real / "train").mkdir(parents=True)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "train").symlink_to(real / "train")
    config = SimpleNamespace(data=f"camvid:{copy}", val_data="", mix_data="")
    with pytest.raises(ConfigError, match="inside the dataset folder .*camvid, where its .*train links to"):
        check_run_dir_outside_data(real / "run", config)
    check_run_dir_outside_data(tmp_path / "runs" / "a", config)  # beside both: fine


@pytest.mark.parametrize(("content", "said"), [
    (b"model: litefpn\nsteps: 3\n", "is a text file (YAML or JSON: a config is given with --config)"),
    (b"hello", "is no PyTorch file"),
    (b"", "is empty"),
])
def test_a_config_text_or_empty_file_given_as_a_checkpoint_is_named_for_what_it_is(tmp_path, content, said):
    """V2 of s42 (H49 M3, left): a YAML given to --resume was 'damaged (Unsupported operand 109)'."""
    from perception.errors import ModelError
    from perception.training.run_dir import check_checkpoint_path

    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=f"^checkpoint {path} {re.escape(said)}"):
        check_checkpoint_path(path)
