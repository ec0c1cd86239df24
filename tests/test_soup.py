"""Model soups: runs that share ``init_seed`` start from the same weights and see other data; their
average (``perception soup``) is a validated checkpoint that eval and export read; runs from other
starts or of other models are refused in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from perception.errors import ModelError
from perception.training.checkpoint import build_model_from_checkpoint, load_checkpoint
from perception.training.config import load_train_config
from perception.training.evaluate import evaluate_checkpoint
from perception.training.fit import fit, train_steps
from perception.training.soup import make_soup
from perception.training.trainer import build_data, build_run
from tests.test_trainer import write_scenes


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def data_spec(tmp_path) -> str:
    write_scenes(tmp_path / "data" / "train", 8)
    write_scenes(tmp_path / "data" / "val", 3, seed=1)
    return f"folder:{tmp_path / 'data'}"


def _config(data_spec: str, out: Path, **overrides):
    values = {"model": "segnet_basic", "data": data_spec, "input_hw": [32, 48], "batch_size": 2, "val_batch_size": 2,
              "steps": 3, "lr": 0.01, "workers": 0, "progress": False, "device": "cpu", "out": str(out), **overrides}
    return load_train_config(None, values)


def _start_and_losses(config):
    data = build_data(config)
    run = build_run(config, data)
    start = {k: v.clone() for k, v in run.model.state_dict().items()}
    losses = [r["loss"] for r in train_steps(run, data, until_step=2)]
    return start, losses


def test_init_seed_fixes_the_start_while_seed_changes_the_data(data_spec, tmp_path):
    plain_start, plain_losses = _start_and_losses(_config(data_spec, tmp_path / "p", seed=0))
    same_start, same_losses = _start_and_losses(_config(data_spec, tmp_path / "a", seed=0, init_seed=0))
    other_data, other_losses = _start_and_losses(_config(data_spec, tmp_path / "b", seed=1, init_seed=0))
    other_start, _ = _start_and_losses(_config(data_spec, tmp_path / "c", seed=1))
    # Without init_seed nothing changes: a run's start is its seed's, and so is everything after it.
    assert all(torch.equal(plain_start[k], same_start[k]) for k in plain_start) and plain_losses == same_losses
    assert all(torch.equal(plain_start[k], other_data[k]) for k in plain_start)
    assert other_losses != plain_losses  # another data order and augmentation
    assert not all(torch.equal(plain_start[k], other_start[k]) for k in plain_start)


def _soup_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perception", "soup", *args],
                          capture_output=True, text=True, timeout=240, check=False)


def test_a_soup_is_the_average_validated_and_read_by_eval(data_spec, tmp_path):
    for name, seed in (("a", 0), ("b", 1)):
        fit(_config(data_spec, tmp_path / name, seed=seed, init_seed=0))
    a, b = load_checkpoint(tmp_path / "a" / "best.pt"), load_checkpoint(tmp_path / "b" / "best.pt")
    first_weight = next(k for k, v in a.state_dict.items() if v.is_floating_point() and v.dim() == 4)
    assert not torch.equal(a.state_dict[first_weight], b.state_dict[first_weight])

    out = tmp_path / "soup" / "best.pt"
    result = _soup_cli(str(tmp_path / "a" / "best.pt"), str(tmp_path / "b" / "best.pt"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "soup of 2: val mIoU" in result.stdout and f"wrote {out}" in result.stdout

    soup = load_checkpoint(out)
    for key, value in soup.state_dict.items():
        if value.is_floating_point():  # weights and BatchNorm statistics: the mean
            torch.testing.assert_close(value, (a.state_dict[key] + b.state_dict[key]) / 2)
        else:  # BatchNorm's batch counters: the first run's
            assert torch.equal(value, a.state_dict[key]), key
    assert [item["seed"] for item in soup.config["soup"]] == [0, 1]
    assert soup.train_state is None and soup.step == 3
    # Its stored val figures are what eval computes for it, on the runs' validation data.
    from perception.datasets import open_dataset

    cm = evaluate_checkpoint(out, open_dataset(data_spec, split="val"), device="cpu", workers=0)
    assert soup.metrics["miou"] == pytest.approx(cm.miou()) and soup.metrics["split"] == "val"
    build_model_from_checkpoint(soup)  # what export builds


def test_a_soup_of_runs_from_different_starts_is_refused(data_spec, tmp_path):
    for name, seed in (("a", 0), ("b", 1)):
        fit(_config(data_spec, tmp_path / name, seed=seed, steps=1))
    paths = [tmp_path / "a" / "best.pt", tmp_path / "b" / "best.pt"]
    with pytest.raises(ModelError, match=r"did not start from the same weights \(initial-weight seeds 0 and 1\).*init_seed"):
        make_soup(paths)

    fit(_config(data_spec, tmp_path / "wide", seed=0, steps=1, input_hw=[48, 64]))
    with pytest.raises(ModelError, match="input size or normalisation differ"):
        make_soup([paths[0], tmp_path / "wide" / "best.pt"])
    with pytest.raises(ModelError, match="at least two checkpoints"):
        make_soup(paths[:1])

    result = _soup_cli(*map(str, paths), "--out", str(tmp_path / "soup.pt"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and "init_seed" in lines[0], result.stderr
    assert not (tmp_path / "soup.pt").exists()
