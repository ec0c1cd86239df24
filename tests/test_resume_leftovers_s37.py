"""Resume leftovers of hunt s37/h12: another class table (F1), the "already at N steps" advice
(F2), settings changed on a resume (F4), a run folder without its last.pt (F5), another --model
(F6)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from test_trainer import TABLE, _train, write_scenes

from perception import cli
from perception.training.checkpoint import load_checkpoint

#: The resumed run's checks and warnings are logged under here.
FIT_LOGGER = "perception.training"  # fit.py and run_state.py


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def base(tmp_path) -> tuple[Path, Path]:
    """(data folder, last.pt) of a segnet_basic run of 2 steps (a run set by --steps)."""
    data = tmp_path / "data"
    write_scenes(data / "train", 8)
    write_scenes(data / "val", 3, seed=1)
    assert _train(f"folder:{data}", tmp_path / "base", "--steps", "2") == 0
    return data, tmp_path / "base" / "last.pt"


def _error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("perception: error:")]


def _with_table(data: Path, to: Path, table: dict) -> Path:
    """A copy of the folder dataset ``data`` (its images and labels) with ``table`` as classes.yaml."""
    shutil.copytree(data, to)
    for split in ("train", "val"):
        (to / split / "classes.yaml").write_text(yaml.safe_dump(table))
    return to


def _resume(last: Path, out: Path, *extra: str) -> int:
    return cli.main(["train", "--resume", str(last), "--out", str(out), *extra])


def test_a_resume_refuses_another_class_table_of_the_same_size(base, tmp_path, capsys):
    """F1: renamed or re-ordered classes were taken silently; the resumed last.pt carried the new
    names on weights trained under the old ones (an export then names the classes wrongly)."""
    data, last = base
    fix = "resume with the data (classes.yaml) it was trained on, or start a new run on this data (without --resume)"
    renamed = TABLE.to_dict()
    renamed["classes"][1]["name"] = "truck"
    renamed["task_groups"]["obstacle"] = ["truck"]
    reordered = TABLE.to_dict()
    reordered["classes"][1]["name"], reordered["classes"][2]["name"] = "sky", "car"
    more = TABLE.to_dict()
    more["classes"].append({"id": 3, "name": "person", "color": [220, 20, 60]})
    capsys.readouterr()
    for name, table, says in (
        ("renamed", renamed, "was trained with class 1 'car', the data ({spec}) names class 1 'truck' (renamed): "
                             "its weights would carry the new names; "),
        ("reordered", reordered, "was trained with class 1 'car', the data ({spec}) names class 1 'sky' (the same "
                                 "classes in another order): its weights would carry the new names; "),
        ("more", more, "was trained on 3 classes (road, car, sky), the data ({spec}) has 4 (road, car, sky, "
                       "person); "),
    ):
        spec = f"folder:{_with_table(data, tmp_path / name, table)}"
        out = tmp_path / f"resumed_{name}"
        assert _resume(last, out, "--steps", "4", "--data", spec) == 2
        assert _error_lines(capsys) == [f"perception: error: checkpoint {last} {says.format(spec=spec)}{fix}"]
        assert not out.exists()  # refused before anything was written
    assert load_checkpoint(last).class_table == TABLE


def test_a_resume_with_other_colours_or_task_groups_warns_and_goes_on(base, tmp_path, caplog):
    data, last = base
    looks = TABLE.to_dict()
    looks["classes"][2]["color"] = [0, 0, 255]
    looks["task_groups"]["obstacle"] = ["car", "sky"]
    spec = f"folder:{_with_table(data, tmp_path / 'looks', looks)}"
    out = tmp_path / "resumed"
    with caplog.at_level(logging.WARNING, logger=FIT_LOGGER):
        assert _resume(last, out, "--steps", "3", "--data", spec) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"the class table of the data ({spec}) differs from checkpoint {last}'s: colour of 'sky' [70, 130, 180] -> "
        "[0, 0, 255]; task group 'obstacle' ['car'] -> ['car', 'sky']; the resumed run's checkpoints carry the "
        "data's table (colour-coded labels map colours to classes by it)"
    ]
    resumed = load_checkpoint(out / "last.pt")
    assert resumed.step == 3 and resumed.class_table.task_groups["obstacle"] == ("car", "sky")


def test_the_advice_to_train_on_names_the_flag_that_sets_the_run(base, tmp_path, capsys):
    """F2: "raise --steps (or --epochs)": on a run set by steps, --epochs 5 gave the same error."""
    data, last = base
    steps_advice = (f"perception: error: checkpoint {last} is at step 2, already at this run's 2 steps; raise --steps "
                    "to train on, e.g. --steps 4 (this run is set by steps, so --epochs counts only with --steps 0)")
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(last)]) == 2
    assert _error_lines(capsys) == [steps_advice]
    assert cli.main(["train", "--resume", str(last), "--epochs", "5"]) == 2  # what the line says: no effect
    assert _error_lines(capsys) == [steps_advice]
    assert _resume(last, tmp_path / "by_steps", "--steps", "4") == 0
    assert load_checkpoint(tmp_path / "by_steps" / "last.pt").step == 4
    # 8 images, batch size 2: 4 steps an epoch
    assert _resume(last, tmp_path / "by_epochs", "--steps", "0", "--epochs", "1") == 0
    assert load_checkpoint(tmp_path / "by_epochs" / "last.pt").step == 4
    # a run set by epochs is told to raise --epochs, and that works
    epochs_last = tmp_path / "by_epochs" / "last.pt"
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(epochs_last)]) == 2
    assert _error_lines(capsys) == [
        f"perception: error: checkpoint {epochs_last} is at step 4, already at this run's 4 steps; raise --epochs to "
        "train on (now 1, 4 steps an epoch), e.g. --epochs 2, or set the steps with --steps 8"
    ]
    assert cli.main(["train", "--resume", str(epochs_last), "--epochs", "2"]) == 0
    assert load_checkpoint(epochs_last).step == 8


def test_settings_changed_on_a_resume_are_named_in_one_warning(base, tmp_path, caplog):
    """F4: a new batch size or seed changes the data order of the current epoch: the run is no
    longer an exact continuation, which was not said."""
    _, last = base
    with caplog.at_level(logging.WARNING, logger=FIT_LOGGER):
        assert _resume(last, tmp_path / "same", "--steps", "3") == 0
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert _resume(last, tmp_path / "changed", "--steps", "3", "--batch-size", "4", "--set", "seed=5",
                       "--set", "loss=ohem") == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "resumed with settings other than the run's: --batch-size 2 -> 4, --loss ce -> ohem, seed 0 -> 5; it trains "
        "on with them, but is no longer an exact continuation: its steps from 3 on differ from the uninterrupted "
        "run's (another data order); resume without them to continue it exactly"
    ]
    assert load_checkpoint(tmp_path / "changed" / "last.pt").config["batch_size"] == 4  # taken


def test_a_run_folder_without_last_pt_is_not_sent_to_resume_it(base, tmp_path, capsys, monkeypatch):
    """F5: a second Ctrl-C while the first last.pt was written left last.pt.tmp and no last.pt; the
    next run said to --resume that last.pt."""
    from perception.training import checkpoint

    data, last = base
    spec = f"folder:{data}"
    run = tmp_path / "cut"
    shutil.copytree(last.parent, run)
    (run / "last.pt").unlink()
    (run / "best.pt").unlink()
    (run / "last.pt.tmp").write_bytes((last.read_bytes())[:1000])  # a save killed before its end
    capsys.readouterr()
    assert _train(spec, run, "--steps", "2") == 2
    assert _error_lines(capsys) == [
        f"perception: error: {run} already holds a run (metrics.jsonl) but no last.pt to continue it from; "
        "last.pt.tmp is a checkpoint whose writing was cut off; replace it with --overwrite, or choose another --out"
    ]
    assert _train(spec, run, "--steps", "1", "--overwrite") == 0
    assert not (run / "last.pt.tmp").exists() and load_checkpoint(run / "last.pt").step == 1

    # A folder that kept its best.pt is sent to resume that.
    (run / "last.pt").unlink()
    assert _train(spec, run, "--steps", "2") == 2
    assert _error_lines(capsys) == [
        f"perception: error: {run} already holds a run (best.pt, metrics.jsonl) but no last.pt to continue it from "
        f"(it stopped before writing its first last.pt); continue it from its best.pt with --resume "
        f"{run / 'best.pt'}, replace it with --overwrite, or choose another --out"
    ]
    assert cli.main(["train", "--resume", str(run / "best.pt"), "--steps", "2"]) == 0
    assert load_checkpoint(run / "last.pt").step == 2

    # A save cut off (a second Ctrl-C inside torch.save) leaves no half-written .tmp behind.
    def cut_off(doc, path):
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.torch, "save", cut_off)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(tmp_path / "x" / "last.pt", load_checkpoint(last))
    assert list((tmp_path / "x").iterdir()) == []


def test_a_resume_with_another_model_names_the_model_and_the_fix(base, tmp_path, capsys):
    """F6: the new model's refusal of the input size came first; with a size it took, the line named
    no fix."""
    _, last = base
    capsys.readouterr()
    for size in ("32x48", "32x64"):  # 32x48 is no multiple of bisenetv2's 32
        assert _resume(last, tmp_path / "other", "--steps", "4", "--model", "bisenetv2", "--size", size) == 2
        assert _error_lines(capsys) == [
            f"perception: error: checkpoint {last} is a 'segnet_basic' model, this run trains 'bisenetv2': a run "
            "resumes the model it trained; resume with --model segnet_basic (or without --model), or train "
            "'bisenetv2' as a new run (without --resume)"
        ]
    assert not (tmp_path / "other").exists()


def test_a_finished_run_resumed_with_more_steps_trains_them_at_the_new_schedule_s_rate(base, tmp_path):
    """The optimiser's saved rate was the old schedule's last, 0 at the end of a finished run: the
    first resumed step trained at 0. It takes the rate of the schedule of the new --steps, as a run
    of that many steps from the start has it."""
    import json

    data, last = base

    def train_lrs(folder: Path) -> dict[int, float]:
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["lr"] for r in records if r.get("kind") == "train"}

    assert _resume(last, tmp_path / "more", "--steps", "4", "--set", "log_every=1") == 0
    assert _train(f"folder:{data}", tmp_path / "whole", "--steps", "4", "--set", "log_every=1") == 0
    resumed, whole = train_lrs(tmp_path / "more"), train_lrs(tmp_path / "whole")
    assert resumed[3] > 0 and resumed[3] == pytest.approx(whole[3], rel=1e-6)
    assert resumed[4] == pytest.approx(whole[4], rel=1e-6)
