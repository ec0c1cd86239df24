"""The trainer's steps on a tiny folder dataset and a tiny model: learning, exact resume, DDP, CLI."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from loopback_ports import free_tcp_port
from torch import nn

from perception.contracts import ClassInfo, ClassTable
from perception.training.checkpoint import load_checkpoint
from perception.training.config import TrainConfig, load_train_config, parse_overrides
from perception.training.fit import best_checkpoint, train_steps
from perception.training.run_state import resume_run, save_run_checkpoint
from perception.training.runlog import RunLog, StepLines
from perception.training.trainer import build_data, build_run, ema_decay_at, evaluate, poly_lr_factor, step

TABLE = ClassTable(
    classes=(ClassInfo(0, "road", (128, 64, 128)), ClassInfo(1, "car", (0, 0, 142)), ClassInfo(2, "sky", (70, 130, 180))),
    ignore_id=255,
    task_groups={"drivable": ("road",), "obstacle": ("car",)},
)
HW = (32, 48)


class TinySegModel(nn.Module):
    """Follows the perception.models contract: dict with out/aux in train mode, logits in eval."""

    input_multiple = 1

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        torch.manual_seed(7)  # same initial weights in every run of a test
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout2d(0.2))
        self.head = nn.Conv2d(8, num_classes, 1)
        self.aux = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: torch.Tensor):
        features = self.body(x)
        out = self.head(features)
        return {"out": out, "aux": self.aux(features)} if self.training else out


def write_scenes(root: Path, count: int, *, seed: int = 0) -> Path:
    """A folder dataset whose colours predict the labels: sky on top, road below, car boxes."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.yaml").write_text(yaml.safe_dump(TABLE.to_dict()))
    h, w = 48, 64
    for i in range(count):
        label = np.zeros((h, w), np.uint8)
        horizon = int(rng.integers(16, 28))
        label[:horizon] = 2
        x0, y0 = int(rng.integers(0, w - 16)), int(rng.integers(horizon - 4, h - 12))
        label[y0 : y0 + 10, x0 : x0 + 14] = 1
        label[0, 0] = 255
        colours = np.array([TABLE.classes[c].color[::-1] for c in range(3)] + [(0, 0, 0)] * 253, np.uint8)
        image = colours[label] + rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "images" / f"{i:03d}.png"), image)
        cv2.imwrite(str(root / "labels" / f"{i:03d}.png"), label)
    return root


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def data_spec(tmp_path) -> str:
    write_scenes(tmp_path / "data" / "train", 8)
    write_scenes(tmp_path / "data" / "val", 3, seed=1)
    return f"folder:{tmp_path / 'data'}"


def make_config(data_spec: str, out: Path, **overrides) -> TrainConfig:
    values = {
        "model": "tiny",
        "data": data_spec,
        "input_hw": list(HW),
        "batch_size": 2,
        "val_batch_size": 2,
        "steps": 6,
        "lr": 0.02,
        "workers": 0,
        "progress": False,
        "out": str(out),
        "seed": 3,
        **overrides,
    }
    return load_train_config(None, values)


def test_poly_schedule_with_warmup():
    factors = [poly_lr_factor(s, total_steps=10, warmup_steps=2, power=1.0) for s in range(11)]
    assert factors[:3] == [0.5, 1.0, 1.0]
    assert factors[6] == pytest.approx(0.5)
    assert factors[10] == 0.0


def test_config_rejects_unknown_keys_and_parses_overrides():
    from perception.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown key 'bacth_size'; did you mean 'batch_size'"):
        load_train_config(None, {"bacth_size": 4})
    assert parse_overrides(["input_hw=[64, 96]", "lr=0.1", "loss=ohem"]) == {
        "input_hw": [64, 96],
        "lr": 0.1,
        "loss": "ohem",
    }
    with pytest.raises(ConfigError, match="--set steps is given twice; keep one"):
        parse_overrides(["steps=1", "lr=0.1", "steps=2"])  # the last one silently won


def test_a_size_is_a_list_or_the_size_flags_text(tmp_path):
    from perception.errors import ConfigError

    # --set input_hw=64x96 was "expected a list, got '64x96'"; the --size text is read as the flag reads it
    assert parse_overrides(["input_hw=64x96", "crop_hw=32 X 48"]) == {"input_hw": [64, 96], "crop_hw": [32, 48]}
    assert load_train_config(None, parse_overrides(["input_hw=64x96"])).input_hw == (64, 96)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("input_hw: 64x96\ncrop_hw: [32, 48]\n")
    assert (load_train_config(recipe).input_hw, load_train_config(recipe).crop_hw) == ((64, 96), (32, 48))
    for value, shown in (("abc", "'abc'"), ("64", "64"), ("[64]", "[64]"), ("64x96x3", "'64x96x3'")):
        with pytest.raises(ConfigError, match=re.escape(
                "--set: input_hw: expected [HEIGHT, WIDTH] or HEIGHTxWIDTH, e.g. --set input_hw=[352,480] or "
                f"--set input_hw=352x480; got {shown}")):
            parse_overrides([f"input_hw={value}"])
    recipe.write_text("crop_hw: big\n")
    with pytest.raises(ConfigError, match=re.escape(f"{recipe}: crop_hw: expected [HEIGHT, WIDTH] or HEIGHTxWIDTH, "
                                                    "e.g. crop_hw: [352, 480] or crop_hw: 352x480; got 'big'")):
        load_train_config(recipe)
    # the range is the setting's own check (YAML alone would read 0x96 as the hex number 150)
    with pytest.raises(ConfigError, match=re.escape("input_hw=[0, 96] (--size) is out of range: each side 16..4096")):
        load_train_config(None, parse_overrides(["input_hw=0x96"]))


def test_few_steps_lower_the_loss(data_spec, tmp_path):
    config = make_config(data_spec, tmp_path / "run", steps=40, loss="ce", scale_range=[0.75, 1.25])
    data = build_data(config)
    run = build_run(config, data, model=TinySegModel(3))
    records = train_steps(run, data, until_step=config.steps)
    first = np.mean([r["loss"] for r in records[:5]])
    last = np.mean([r["loss"] for r in records[-5:]])
    assert last < 0.7 * first, (first, last)
    cm = evaluate(run, data)
    assert cm.matrix.sum() == 3 * (48 * 64 - 1)  # every val pixel but the ignored corner, at label size
    assert cm.miou() > 0.3


def test_without_a_bar_log_every_steps_print_a_line_with_eta(data_spec, tmp_path, caplog):
    # progress: false (the CPU recipes) showed no loss on the console at all, only metrics.jsonl had it
    config = make_config(data_spec, tmp_path / "run", steps=6, log_every=2, val_every=4)
    data = build_data(config)
    run = build_run(config, data, model=TinySegModel(3))
    with caplog.at_level(logging.INFO, logger="perception.training.fit"):
        records = train_steps(run, data, until_step=6, runlog=RunLog(tmp_path))
    lines = [r.getMessage() for r in caplog.records if re.match(r"step \d+/", r.getMessage())]
    # the logged loss is the mean of the log_every steps up to it, not the last batch's alone
    logged = [r for r in RunLog(tmp_path).records() if r["kind"] == "train"]
    assert [r["step"] for r in logged] == [2, 4, 6]
    for r in logged:
        window = [x["loss"] for x in records[r["step"] - 2:r["step"]]]
        assert r["loss"] == pytest.approx(sum(window) / 2) and window[0] != window[1]
    assert [f"loss {r['loss']:.4f}" in line for r, line in zip(logged, lines, strict=True)] == [True] * 3
    # the first log step's, the validating step's and the last step's lines always come (the rest at most
    # one per STEP_LINE_MIN_S: none here, where steps take milliseconds)
    assert [line.split(":")[0] for line in lines] == ["step 2/6", "step 4/6", "step 6/6"]
    pattern = r"step \d/6: loss \d+\.\d{4}, lr \d\.\d\de-\d\d, \d+\.\d img/s, elapsed \d\d:\d\d, ETA \d\d:\d\d"
    assert all(re.fullmatch(pattern, line) for line in lines), lines

    caplog.clear()  # with the bar (here off a terminal: its heartbeat), no such lines
    config = make_config(data_spec, tmp_path / "bar", steps=2, log_every=1, progress=True)
    run = build_run(config, data, model=TinySegModel(3))
    with caplog.at_level(logging.INFO, logger="perception.training.fit"):
        train_steps(run, data, until_step=2)
    assert not [r for r in caplog.records if r.getMessage().startswith("step 1/")]


def test_step_lines_are_rate_limited_unless_a_step_validates_or_ends(caplog):
    now = [0.0]
    lines = StepLines(0, 100, enabled=True, logger=logging.getLogger("perception.training.fit"), clock=lambda: now[0])
    record = {"loss": 1.23456, "lr": 1e-3, "images_per_s": 2.5}
    with caplog.at_level(logging.INFO, logger="perception.training.fit"):
        for t, step_number, always in ((10, 10, False), (15, 20, False), (24, 30, False), (26, 40, False),
                                       (27, 50, True), (30, 60, False), (42, 70, False)):
            now[0] = t
            lines.log_step(step_number, record, always=always)
    assert [r.getMessage() for r in caplog.records] == [
        "step 10/100: loss 1.2346, lr 1.00e-03, 2.5 img/s, elapsed 00:10, ETA 01:30",
        # steps 20 and 30 came 5 and 14 s after the last line: none; 16 s after, step 40's
        "step 40/100: loss 1.2346, lr 1.00e-03, 2.5 img/s, elapsed 00:26, ETA 00:39",
        "step 50/100: loss 1.2346, lr 1.00e-03, 2.5 img/s, elapsed 00:27, ETA 00:27",  # validates: 1 s after
        "step 70/100: loss 1.2346, lr 1.00e-03, 2.5 img/s, elapsed 00:42, ETA 00:18",  # 60 was 3 s after, 70 15 s
    ]
    StepLines(0, 10, enabled=False, logger=logging.getLogger("x")).log_step(10, record, always=True)  # progress on, or not rank 0
    assert len(caplog.records) == 4


def test_best_checkpoint_names_best_pts_step_also_after_a_resume(data_spec, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    config = make_config(data_spec, out, steps=6, val_every=2, lr=0.05)
    data = build_data(config)
    run = build_run(config, data, model=TinySegModel(3))
    assert best_checkpoint(run, out) is None  # no best.pt yet
    train_steps(run, data, until_step=4, run_dir=out)
    best = load_checkpoint(out / "best.pt").metrics
    assert best_checkpoint(run, out) == {"step": best["step"], "miou": best["miou"]} == {
        "step": run.best_step, "miou": run.best_miou}
    # resumed in place: best.pt may come from before this start; then the file says which step it holds
    resumed = build_run(config, data, model=TinySegModel(3))
    resume_run(resumed, out / "last.pt")
    assert resumed.best_step is None
    assert best_checkpoint(resumed, out) == {"step": best["step"], "miou": best["miou"]}


def test_the_done_line_names_best_pt_when_it_is_not_the_last_validation(tmp_path, monkeypatch, capsys):
    import perception.training.fit as fit_module
    from perception import cli

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "best.pt").write_bytes(b"")
    (run_dir / "last.pt").write_bytes(b"")
    final = {"step": 40, "miou": 0.0694, "global_acc": 0.3538, "class_acc": 0.1812, "run_dir": str(run_dir),
             "best": {"step": 10, "miou": 0.0801}}
    monkeypatch.setattr(fit_module, "fit", lambda config, resume=None: final)
    assert cli.main(["train", "--out", str(run_dir)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "done: step 40, val mIoU 6.94 %, G 35.38 %, C 18.12 %; best val mIoU 8.01 % at step 10 (best.pt); "
        f"checkpoints in {run_dir} (best.pt, last.pt)")
    (run_dir / "best.pt").unlink()  # a resume into a new --out that did not beat the score it carried
    monkeypatch.setattr(fit_module, "fit", lambda config, resume=None: {**final, "best": None})
    assert cli.main(["train", "--out", str(run_dir)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"done: step 40, val mIoU 6.94 %, G 35.38 %, C 18.12 %; checkpoints in {run_dir} (last.pt)")


def test_resume_gives_the_same_next_steps(data_spec, tmp_path):
    # 8 samples / batch 2 = 4 steps per epoch: stopping at 3 resumes mid-epoch.
    config = make_config(data_spec, tmp_path / "a", steps=6, val_every=3, warmup_steps=2)
    data = build_data(config)
    straight = build_run(config, data, model=TinySegModel(3))
    straight_records = train_steps(straight, data, until_step=6)

    config_b = make_config(data_spec, tmp_path / "b", steps=6, val_every=3, warmup_steps=2)
    data_b = build_data(config_b)
    first_half = build_run(config_b, data_b, model=TinySegModel(3))
    train_steps(first_half, data_b, until_step=3, run_dir=tmp_path / "b")
    assert (tmp_path / "b" / "last.pt").is_file() and (tmp_path / "b" / "best.pt").is_file()

    data_c = build_data(config_b)
    resumed = build_run(config_b, data_c, model=TinySegModel(3))
    torch.manual_seed(1234)  # whatever happened in between, resume restores the RNG state
    resume_run(resumed, tmp_path / "b" / "last.pt")
    resumed_records = train_steps(resumed, data_c, until_step=6)

    assert [r["loss"] for r in resumed_records] == [r["loss"] for r in straight_records[3:]]
    assert [r["lr"] for r in resumed_records] == [r["lr"] for r in straight_records[3:]]
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_channels_last_trains_the_same_steps_and_checkpoints_plain_weights(data_spec, tmp_path):
    runs = {}
    for channels_last in (True, False):
        config = make_config(data_spec, tmp_path / str(channels_last), steps=4, channels_last=channels_last)
        data = build_data(config)
        run = build_run(config, data, model=TinySegModel(3))
        conv = next(m for m in run.model.modules() if isinstance(m, nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        runs[channels_last] = (run, data, [r["loss"] for r in train_steps(run, data, until_step=4)])
    # The same arithmetic in another memory layout: the same losses up to float rounding.
    np.testing.assert_allclose(runs[True][2], runs[False][2], rtol=1e-4)
    run, data, _ = runs[True]
    ckpt = load_checkpoint(save_run_checkpoint(run, data, tmp_path / "cl.pt"))
    plain = TinySegModel(3)
    plain.load_state_dict(ckpt.state_dict)
    images, _ = next(iter(data.loader))
    run.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(images), run.model(images), rtol=1e-4, atol=1e-5)


def test_a_run_saved_in_one_layout_resumes_in_the_other(data_spec, tmp_path):
    # Runs from before channels_last existed saved plain-layout weights and optimiser state.
    losses = []
    for saved, resumed in ((False, True), (True, False)):
        out = tmp_path / f"{saved}"
        config = make_config(data_spec, out, steps=4, val_every=2, channels_last=saved)
        data = build_data(config)
        train_steps(build_run(config, data, model=TinySegModel(3)), data, until_step=2, run_dir=out)
        config = make_config(data_spec, out, steps=4, val_every=2, channels_last=resumed)
        data = build_data(config)
        run = build_run(config, data, model=TinySegModel(3))
        resume_run(run, out / "last.pt")
        losses.append([r["loss"] for r in train_steps(run, data, until_step=4)])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
    assert len(losses[0]) == 2 and all(np.isfinite(losses[0]))


def test_weight_average_decay_warms_up_then_holds():
    assert ema_decay_at(0.995, 0) == pytest.approx(0.1)  # the first average is mostly the new weights
    assert ema_decay_at(0.995, 90) == pytest.approx(0.91)
    assert ema_decay_at(0.995, 5000) == 0.995


def test_a_weight_average_is_validated_checkpointed_and_resumed_exactly(data_spec, tmp_path):
    config = make_config(data_spec, tmp_path / "a", steps=6, val_every=3, warmup_steps=2, ema_decay=0.9)
    data = build_data(config)
    straight = build_run(config, data, model=TinySegModel(3))
    train_steps(straight, data, until_step=6)

    config_b = make_config(data_spec, tmp_path / "b", steps=6, val_every=3, warmup_steps=2, ema_decay=0.9)
    data_b = build_data(config_b)
    first_half = build_run(config_b, data_b, model=TinySegModel(3))
    (tmp_path / "b").mkdir()
    train_steps(first_half, data_b, until_step=3, run_dir=tmp_path / "b", runlog=RunLog(tmp_path / "b"))
    ckpt = load_checkpoint(tmp_path / "b" / "last.pt")
    # The checkpoint's weights (what eval and export read) are the average, not the trained weights.
    averaged, trained = first_half.ema.module.state_dict(), first_half.bare_model.state_dict()
    assert all(torch.equal(ckpt.state_dict[k], averaged[k]) for k in averaged)
    assert not torch.equal(ckpt.state_dict["head.weight"], trained["head.weight"])
    assert torch.equal(ckpt.train_state["trained_weights"]["head.weight"], trained["head.weight"])
    assert ckpt.train_state["ema_updates"] == 3
    # Validation scores both, and the log and the curves carry both.
    assert 0 <= ckpt.metrics["trained_miou"] <= 1 and ckpt.metrics["miou"] == evaluate(first_half, data_b).miou()
    (record,) = [r for r in RunLog(tmp_path / "b").records() if r["kind"] == "val"]
    assert record["trained_miou"] == ckpt.metrics["trained_miou"]

    data_c = build_data(config_b)
    resumed = build_run(config_b, data_c, model=TinySegModel(3))
    resume_run(resumed, tmp_path / "b" / "last.pt")
    train_steps(resumed, data_c, until_step=6)
    for ours, theirs in ((straight.bare_model, resumed.bare_model), (straight.ema.module, resumed.ema.module)):
        for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
            assert torch.equal(a, b), name


def test_resuming_a_run_without_an_average_with_one_names_the_fix(data_spec, tmp_path):
    from perception.errors import ModelError

    config = make_config(data_spec, tmp_path / "a", steps=2)
    data = build_data(config)
    run = build_run(config, data, model=TinySegModel(3))
    train_steps(run, data, until_step=2)
    save_run_checkpoint(run, data, tmp_path / "a" / "last.pt")
    averaged = build_run(make_config(data_spec, tmp_path / "b", steps=2, ema_decay=0.99), data, model=TinySegModel(3))
    with pytest.raises(ModelError, match=r"without a weight average; resume it with ema_decay 0 \(--set ema_decay=0\)"):
        resume_run(averaged, tmp_path / "a" / "last.pt")


def test_init_seed_fixes_the_start_while_seed_changes_the_data(data_spec, tmp_path):
    def start_and_losses(**overrides):
        config = make_config(data_spec, tmp_path / "r", model="segnet_basic", steps=2, **overrides)
        data = build_data(config)
        run = build_run(config, data)  # the registry's model, initialised under the run's seeds
        start = {k: v.clone() for k, v in run.model.state_dict().items()}
        return start, [r["loss"] for r in train_steps(run, data, until_step=2)]

    plain, plain_losses = start_and_losses(seed=0)
    same, same_losses = start_and_losses(seed=0, init_seed=0)
    other_data, other_losses = start_and_losses(seed=1, init_seed=0)
    other_start, _ = start_and_losses(seed=1)
    # Without init_seed nothing changes: the start is the seed's, and so is every step after it.
    assert all(torch.equal(plain[k], same[k]) for k in plain) and plain_losses == same_losses
    assert all(torch.equal(plain[k], other_data[k]) for k in plain) and other_losses != plain_losses
    assert not all(torch.equal(plain[k], other_start[k]) for k in plain)


def test_checkpoint_carries_what_eval_and_export_need(data_spec, tmp_path):
    config = make_config(data_spec, tmp_path / "run", steps=1)
    data = build_data(config)
    run = build_run(config, data, model=TinySegModel(3))
    images, labels = next(iter(data.loader))
    assert images.shape == (2, 3, *HW) and labels.shape == (2, *HW)
    step(run, images, labels)
    run.last_metrics = evaluate(run, data).summary(TABLE)
    ckpt = load_checkpoint(save_run_checkpoint(run, data, tmp_path / "run" / "x.pt"))
    assert ckpt.class_table == TABLE
    assert ckpt.input_hw == HW and ckpt.model_name == "tiny" and ckpt.step == 1
    assert ckpt.config["data"] == data_spec and ckpt.config["input_hw"] == list(HW)
    assert set(ckpt.metrics) >= {"miou", "global_acc", "class_acc", "per_class_iou"}


def _ddp_worker(rank: int, port: int, data_spec: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from perception.training.distributed import cleanup_distributed, setup_distributed

    info = setup_distributed(torch.device("cpu"))
    config = make_config(data_spec, Path(out), steps=2, device="cpu", val_every=2)
    data = build_data(config, info)
    run = build_run(config, data, info=info, model=TinySegModel(3))
    train_steps(run, data, until_step=2)
    metrics = evaluate(run, data).matrix.sum()
    weights = {k: v.detach() for k, v in run.bare_model.named_parameters()}
    torch.save({"weights": weights, "val_pixels": int(metrics)}, Path(out) / f"rank{rank}.pt")
    cleanup_distributed(info)


def test_ddp_two_processes_on_gloo_keep_identical_weights(data_spec, tmp_path):
    port = free_tcp_port()
    torch.multiprocessing.spawn(_ddp_worker, args=(port, data_spec, str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    # Parameters (BatchNorm running stats are per rank on CPU; DDP re-broadcasts rank 0's each forward).
    for name, tensor in rank0["weights"].items():
        assert torch.equal(tensor, rank1["weights"][name]), name
    assert rank0["val_pixels"] == rank1["val_pixels"] == 3 * (48 * 64 - 1)  # shards summed over ranks


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "perception", *args], capture_output=True, text=True, timeout=240, check=False
    )


def test_train_cli_rejects_a_bad_config_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: bisenetv2\nlearning_rate: 0.1\n")
    result = _cli("train", "--config", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"perception: error: {bad}: unknown key 'learning_rate'")


def test_running_out_of_memory_ends_training_in_one_line_naming_the_settings(data_spec, tmp_path, monkeypatch, capsys):
    import perception.training.fit as fit_module
    from perception import cli

    real_step = fit_module.step

    def step_until_memory_runs_out(run, images, labels):
        if run.step == 2:  # torch's CPU allocator, word for word
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 2147483648 bytes. Error code 12 (Cannot allocate memory)")
        return real_step(run, images, labels)

    monkeypatch.setattr(fit_module, "step", step_until_memory_runs_out)
    out = tmp_path / "run"
    code = cli.main(["train", "--model", "segnet_basic", "--data", data_spec, "--size", "32x48", "--batch-size", "2",
                     "--steps", "4", "--workers", "0", "--device", "cpu", "--out", str(out),
                     "--set", "val_every=1", "--set", "progress=false", "--set", "torch_threads=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == (
        "perception: error: training ran out of memory at step 2 (--size 32x48, --batch-size 2, --workers 0, "
        f"device cpu); lower --batch-size or --size, or train on crops (--set crop_hw=[H,W]); {out / 'last.pt'} "
        "holds step 2: continue from it with --resume and smaller settings"
    )
    assert load_checkpoint(out / "last.pt").step == 2  # what was trained is kept

    def other_failure(run, images, labels):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")  # a bug, not memory: not hidden

    monkeypatch.setattr(fit_module, "step", other_failure)
    with pytest.raises(RuntimeError, match="shapes"):
        cli.main(["train", "--model", "segnet_basic", "--data", data_spec, "--size", "32x48", "--batch-size", "2",
                  "--steps", "1", "--workers", "0", "--device", "cpu", "--out", str(tmp_path / "bug"),
                  "--set", "progress=false"])


def _argmax_onnx(path: Path, input_hw: tuple[int, int]) -> None:
    """An exported-model stand-in: class id = argmax over the B, G, R channels, with real metadata."""
    import onnx
    from onnx import TensorProto, helper

    from perception.contracts import INPUT_NAME, METADATA_KEY, OUTPUT_CLASS_IDS
    from perception.model_metadata import ModelMetadata

    h, w = input_hw
    graph = helper.make_graph(
        [
            helper.make_node("Cast", [INPUT_NAME], ["f"], to=TensorProto.FLOAT),
            helper.make_node("ArgMax", ["f"], ["idx"], axis=3, keepdims=0),
            helper.make_node("Cast", ["idx"], [OUTPUT_CLASS_IDS], to=TensorProto.UINT8),
        ],
        "argmax",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, [1, h, w, 3])],
        [helper.make_tensor_value_info(OUTPUT_CLASS_IDS, TensorProto.UINT8, [1, h, w])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime >= 1.17 reads
    meta = ModelMetadata(model_name="argmax", class_table=TABLE, input_hw=input_hw, dataset="")
    helper.set_model_props(model, {METADATA_KEY: meta.to_json()})
    onnx.save(model, path)


def test_train_and_eval_cli_end_to_end(data_spec, tmp_path):
    out = tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            {"model": "segnet_basic", "data": data_spec, "input_hw": [32, 48], "batch_size": 2, "steps": 2,
             "workers": 0, "torch_threads": 1, "progress": False, "device": "cpu"}
        )
    )
    result = _cli("train", "--config", str(config), "--set", "lr=0.01", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "resolved config" in result.stdout and "done: step 2" in result.stdout
    assert re.search(r"fit: step 2/2: loss \d+\.\d+, lr ", result.stderr)  # progress: false prints log lines
    best = load_checkpoint(out / "best.pt").metrics
    assert f"; best val mIoU {100 * best['miou']:.2f} % at step 2 (best.pt); checkpoints in {out}" in result.stdout
    assert {"best.pt", "last.pt", "config.yaml", "metrics.jsonl", "curves.png"} <= {p.name for p in out.iterdir()}

    result = _cli("eval", "--checkpoint", str(out / "best.pt"), "--workers", "0", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "mIoU" in result.stdout and all(name in result.stdout for name in TABLE.names)
    ckpt_miou = load_checkpoint(out / "best.pt").metrics["miou"]
    eval_miou = float(re.search(r"mIoU (\d+\.\d+) %", result.stdout).group(1))
    assert eval_miou == pytest.approx(100 * ckpt_miou, abs=0.05)  # eval agrees with training's validation

    onnx_path = tmp_path / "argmax.onnx"
    _argmax_onnx(onnx_path, (24, 32))
    figures = tmp_path / "eval.json"
    code = (
        "import sys; from perception.cli import main; rc = main(sys.argv[1:]);"
        "assert 'torch' not in sys.modules, 'ONNX eval imported torch'; sys.exit(rc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "eval", "--model", str(onnx_path), "--data", data_spec, "--json", str(figures)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    from perception.datasets import open_dataset
    from perception.metrics import ConfusionMatrix

    expected = ConfusionMatrix(3, ignore_id=255)
    drivable = np.zeros(3, dtype=np.int64)  # true positive, false positive, false negative
    for image, label in open_dataset(data_spec, split="val"):
        # Same aspect ratio, so the node's letterbox is a plain resize; masks go back pixel-centred.
        small = cv2.resize(image, (32, 24), interpolation=cv2.INTER_LINEAR).argmax(2).astype(np.uint8)
        predicted = cv2.resize(small, (64, 48), interpolation=cv2.INTER_NEAREST_EXACT)
        expected.update(predicted, label)
        valid = label != 255
        drivable += [((predicted == 0) & (label == 0)).sum(), ((predicted == 0) & (label != 0) & valid).sum(),
                     ((predicted != 0) & (label == 0)).sum()]
    assert yaml.safe_load(figures.read_text())["miou"] == pytest.approx(expected.miou())

    # --tasks: by task group, still without torch (every drivable pixel, as counted above; the ego
    # reach has its own tests in test_drivable_reach.py).
    result = subprocess.run(
        [sys.executable, "-c", code, "eval", "--model", str(onnx_path), "--data", data_spec, "--tasks",
         "--drivable-reach", "all", "--json", str(figures), "--overwrite"],  # the figures above, replaced
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "drivable" in result.stdout and "obstacle" in result.stdout
    tasks = yaml.safe_load(figures.read_text())["tasks"]
    assert tasks["drivable"]["iou"] == pytest.approx(drivable[0] / drivable.sum())


def test_training_crops_are_cut_after_scale_jitter_relative_to_the_model_input():
    from torchvision import tv_tensors

    from perception.training.augment import build_train_transform

    transform = build_train_transform((64, 96), ignore_id=255, crop_hw=(32, 48), scale_range=(1.0, 1.0))
    image = tv_tensors.Image(torch.zeros(3, 64, 96, dtype=torch.uint8))
    label = tv_tensors.Mask(torch.ones(64, 96, dtype=torch.uint8))
    out_image, out_label = transform(image, label)
    assert out_image.shape == (3, 32, 48) and out_label.shape == (32, 48)
    assert set(out_label.unique().tolist()) == {1}  # a crop inside the image: no padding
    with pytest.raises(Exception, match="crop_hw"):
        load_train_config(None, {"crop_hw": [4, 4]})


# ---- a second dataset mixed in (the synthetic world into real frames), labels mapped by name

SYNTH_TO_TABLE = {"road": "road", "lane_marking": "road", "car": "car", "sky": "sky"}


def test_mixed_in_data_supplies_its_share_with_labels_mapped_by_name(data_spec, tmp_path):
    from perception.datasets import open_dataset
    from perception.synthetic import SYNTHETIC_CLASSES

    mix_spec = "synthetic:count=40,seed=2,size=48x64"
    config = make_config(data_spec, tmp_path / "run", mix_data=mix_spec, mix_share=0.5, mix_classes=SYNTH_TO_TABLE)
    data = build_data(config)
    mixed = data.samples.dataset
    assert len(data.train_set) == 8 and len(mixed) == 16  # half of every epoch's samples are rendered
    assert data.class_table.names == TABLE.names  # the run keeps the real data's classes

    pool = open_dataset(mix_spec, split="train")
    expected = {SYNTHETIC_CLASSES.names.index(k): TABLE.names.index(v) for k, v in SYNTH_TO_TABLE.items()}
    for epoch in (0, 1):
        data.samples.set_epoch(epoch)  # what fit does before each epoch: the pool is walked, not repeated
        image, label = mixed[8]
        raw_image, raw = pool[epoch * 8]
        assert np.array_equal(image, raw_image)
        want = np.full_like(raw, 255)
        for synthetic_id, table_id in expected.items():
            want[raw == synthetic_id] = table_id
        assert np.array_equal(label, want)
        assert set(np.unique(label)) <= {0, 1, 2, 255}
        building = raw == SYNTHETIC_CLASSES.names.index("building")  # not in the mapping: ignored
        assert building.any() and (label[building] == 255).all()
    assert np.array_equal(mixed[3][1], data.train_set[3][1])  # the real samples pass through unchanged

    run = build_run(config, data, model=TinySegModel(3))
    records = train_steps(run, data, until_step=config.steps)
    assert len(records) == config.steps and all(np.isfinite(r["loss"]) for r in records)


def test_a_later_config_file_changes_a_recipe_without_copying_it(tmp_path):
    from perception.errors import ConfigError

    recipe, mix = tmp_path / "recipe.yaml", tmp_path / "mix.yaml"
    recipe.write_text("model: tiny\nsteps: 40\nlr: 0.02\nout: runs/recipe\n")
    mix.write_text("mix_data: synthetic\nmix_share: 0.25\nmix_classes: {road: road}\nout: runs/mixed\n")
    config = load_train_config([recipe, mix], {"lr": 0.05})
    assert (config.steps, config.mix_share, config.out, config.lr) == (40, 0.25, Path("runs/mixed"), 0.05)
    mix.write_text("mix_share: 2\n")
    with pytest.raises(ConfigError, match=rf"{recipe} \+ {mix}: mix_share=2"):
        load_train_config([recipe, mix])


def test_mixed_in_data_names_a_class_neither_table_has(data_spec, tmp_path):
    from perception.errors import ConfigError, DataError

    mix = "synthetic:count=4,size=48x64"
    with pytest.raises(DataError, match=r"'tarmac' is not a class of the mixed-in data; its classes: road, "):
        build_data(make_config(data_spec, tmp_path / "a", mix_data=mix, mix_share=0.3, mix_classes={"tarmac": "road"}))
    with pytest.raises(DataError, match=r"'road' -> 'Road', which is not a class of the training data; its classes: road, car, sky"):
        build_data(make_config(data_spec, tmp_path / "b", mix_data=mix, mix_share=0.3, mix_classes={"road": "Road"}))
    with pytest.raises(ConfigError, match="mix_share=0.3 needs mix_data"):
        make_config(data_spec, tmp_path / "c", mix_share=0.3)
    with pytest.raises(ConfigError, match="needs mix_classes"):
        make_config(data_spec, tmp_path / "d", mix_data=mix, mix_share=0.3)
    with pytest.raises(ConfigError, match="needs mix_share > 0"):
        make_config(data_spec, tmp_path / "e", mix_data=mix, mix_classes=SYNTH_TO_TABLE)


def _train(data_spec: str, out: Path, *extra: str) -> int:
    """A tiny CPU training run; ``extra`` flags (``--batch-size 1``) take the place of the defaults'."""
    from perception import cli

    defaults = [flag_value for flag_value in (("--batch-size", "2"), ("--device", "cpu")) if flag_value[0] not in extra]
    return cli.main(["train", "--model", "segnet_basic", "--data", data_spec, "--size", "32x48",
                     *(arg for pair in defaults for arg in pair), "--workers", "0", "--out", str(out),
                     "--set", "progress=false", "--set", "torch_threads=1", *extra])


class _RunsCode:
    """A pickle that would create a file when unpickled: what a hostile .pt does with os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path):
    from perception.errors import ModelError

    marker = tmp_path / "ran"
    hostile = tmp_path / "hostile.pt"
    torch.save({"format": 1, "model_name": _RunsCode(marker)}, hostile)
    with pytest.raises(ModelError, match=r"holds a Python object \(io.open\) .* it was not loaded"):
        load_checkpoint(hostile)
    assert not marker.exists()


def test_a_new_run_does_not_replace_another_in_its_out(data_spec, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(data_spec, out, "--steps", "2") == 0
    first = (out / "best.pt").read_bytes()
    assert _train(data_spec, out, "--steps", "1") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"perception: error: {out} already holds a run (last.pt, best.pt, metrics.jsonl); continue it with "
        f"--resume {out / 'last.pt'}, choose another --out, or replace it with --overwrite"
    )
    assert (out / "best.pt").read_bytes() == first
    assert _train(data_spec, out, "--steps", "3", "--resume", str(out / "last.pt")) == 0  # continuing it is fine
    assert load_checkpoint(out / "last.pt").step == 3
    assert _train(data_spec, out, "--steps", "1", "--overwrite") == 0
    assert load_checkpoint(out / "last.pt").step == 1
    # --overwrite acts on this start only: a later --resume or --config of this run must not carry it.
    assert load_checkpoint(out / "last.pt").config["overwrite"] is False
    assert yaml.safe_load((out / "config.yaml").read_text())["overwrite"] is False
    steps = [json_line["step"] for json_line in RunLog(out).records()]
    assert steps and max(steps) == 1  # the replaced run's log went with it


def test_a_run_directory_inside_the_dataset_folder_is_refused(data_spec, tmp_path, capsys):
    inside = tmp_path / "data" / "train" / "images" / "run"
    assert _train(data_spec, inside, "--steps", "1") == 2
    assert "is inside the dataset folder" in capsys.readouterr().err and not inside.exists()


def test_resume_refusals_name_the_fix(data_spec, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(data_spec, out, "--steps", "2") == 0
    last = out / "last.pt"
    cases = {
        ("--steps", "2"): f"checkpoint {last} is at step 2, already at this run's 2 steps; raise --steps",
        ("--steps", "4", "--set", "optimizer=sgd"): "was trained with optimizer 'adamw', this run uses 'sgd'; "
                                                     "resume with --set optimizer=adamw",
        # hunt4d: a new lr or weight decay was saved in config.yaml and the checkpoint, but the
        # restored optimiser and scheduler kept the old ones.
        ("--steps", "4", "--set", "lr=0.01"): "was trained with lr 0.001, this run sets 0.01; a resumed run keeps "
                                               "its optimiser's state, so the new value would not be used: resume "
                                               "with --set lr=0.001, or start a new run",
        ("--steps", "4", "--set", "weight_decay=0.5"): "was trained with weight_decay 0.0001, this run sets 0.5",
    }
    for extra, message in cases.items():
        before = (out / "config.yaml").read_text()
        assert _train(data_spec, out, "--resume", str(last), *extra) == 2
        assert message in capsys.readouterr().err
        assert (out / "config.yaml").read_text() == before  # a refused resume writes nothing into the run
    doc = torch.load(last, weights_only=True)
    doc["train_state"]["rng"] = {"python": 1, "numpy": 2, "torch": 3}
    torch.save(doc, tmp_path / "damaged.pt")
    assert _train(data_spec, tmp_path / "other", "--steps", "4", "--resume", str(tmp_path / "damaged.pt")) == 2
    assert "holds a damaged training state (TypeError" in capsys.readouterr().err
    doc = torch.load(last, weights_only=True)
    doc["mean"] = [0.5, 0.5]
    torch.save(doc, tmp_path / "mean.pt")
    with pytest.raises(Exception, match=r"mean \[0.5, 0.5\] is not three finite numbers"):
        load_checkpoint(tmp_path / "mean.pt")


def test_a_resumed_run_continues_in_the_folder_that_holds_its_last_pt(data_spec, tmp_path, capsys):
    """hunt4d: '--resume X/last.pt' wrote to the folder saved in the checkpoint: a run moved since
    started a new folder at its old place (no best.pt, a metrics.jsonl of the new steps only)."""
    from perception import cli

    out = tmp_path / "run"
    assert _train(data_spec, out, "--steps", "2") == 0
    moved = tmp_path / "archive" / "run"
    moved.parent.mkdir()
    out.rename(moved)
    assert cli.main(["train", "--resume", str(moved / "last.pt"), "--steps", "4", "--set", "progress=false"]) == 0
    assert not out.exists()
    assert load_checkpoint(moved / "last.pt").step == 4
    steps = [json.loads(line).get("step") for line in (moved / "metrics.jsonl").read_text().splitlines()]
    assert min(steps) <= 2 < 4 == max(steps)  # one log for the whole run, in its own folder
    # hunt4d #7: a folder is named with its last.pt, and an older checkpoint (best.pt of step 2 here
    # once last.pt is at 4) does not silently rewind the run.
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(moved), "--steps", "6"]) == 2
    assert f"--resume {moved} is a folder; pass the run's last.pt: --resume {moved / 'last.pt'}" in capsys.readouterr().err
    older = moved / "step2.pt"
    assert _train(data_spec, tmp_path / "short", "--steps", "2") == 0
    (tmp_path / "short" / "last.pt").rename(older)
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(older), "--steps", "6", "--set", "progress=false"]) == 2
    assert (f"{older} is at step 2, but {moved / 'last.pt'} holds step 4: resuming into {moved} would train steps "
            "3-4 again and replace it; resume from") in capsys.readouterr().err
    assert load_checkpoint(moved / "last.pt").step == 4


def test_labels_that_are_all_void_are_named_as_the_cause(tmp_path, capsys, monkeypatch):
    import perception.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "MAX_VOID_BATCHES", 3)  # 20 in the product; 3 keeps the test short
    root = write_scenes(tmp_path / "void" / "train", 4)
    write_scenes(tmp_path / "void" / "val", 2, seed=1)
    good = f"folder:{tmp_path / 'void'}"
    labels = sorted((root / "labels").glob("*.png"))
    cv2.imwrite(str(labels[0]), np.full((48, 64), 255, np.uint8))
    # One void frame in good data (here a whole batch of one) teaches nothing and stops nothing.
    assert _train(good, tmp_path / "one", "--steps", "4", "--batch-size", "1") == 0
    for label in labels:
        cv2.imwrite(str(label), np.full((48, 64), 255, np.uint8))
    assert _train(good, tmp_path / "a", "--steps", "6") == 2
    assert ("the last 3 training batches (steps 1-3) had no labelled pixel: every label pixel was the ignore id 255"
            in capsys.readouterr().err)
    for label in sorted((tmp_path / "void" / "val" / "labels").glob("*.png")):
        cv2.imwrite(str(label), np.full((48, 64), 255, np.uint8))
    write_scenes(tmp_path / "fine" / "train", 4)
    assert _train(f"folder:{tmp_path / 'fine'}", tmp_path / "b", "--steps", "1",
                  "--set", f"val_data=folder:{tmp_path / 'void'}") == 2
    err = capsys.readouterr().err
    assert "has no labelled pixel: every label is the ignore id 255" in err
    assert f"the 1 steps trained are in {tmp_path / 'b' / 'last.pt'}" in err and load_checkpoint(tmp_path / "b" / "last.pt")


def test_ctrl_c_during_the_last_validation_keeps_every_step(data_spec, tmp_path, monkeypatch):
    import signal

    import perception.training.fit as fit_module

    real_evaluate = fit_module.evaluate

    def interrupted_evaluate(run, data, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the last validation runs
        return real_evaluate(run, data, **kwargs)

    monkeypatch.setattr(fit_module, "evaluate", interrupted_evaluate)
    out = tmp_path / "run"
    assert _train(data_spec, out, "--steps", "3") == 0  # the validation finishes and the run completes
    assert load_checkpoint(out / "last.pt").step == 3


def test_a_batch_of_one_is_refused_up_front_for_a_model_that_cannot_train_on_it(tmp_path, capsys):
    """Hunt 5d: --batch-size 1 (advertised as valid) crashed bisenetv2's first step with a 60-line
    BatchNorm traceback, exit 1, and left config.yaml. Now one line, exit 2, nothing written; models
    that train on one image (segnet_basic, above) still may."""
    from perception import cli

    out = tmp_path / "one"
    assert cli.main(["train", "--model", "bisenetv2", "--data", "synthetic:count=2,size=64x64", "--size", "64x64",
                     "--steps", "1", "--batch-size", "1", "--workers", "0", "--device", "cpu", "--out", str(out),
                     "--set", "progress=false", "--set", "torch_threads=1"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("perception: error: --batch-size 1 cannot train bisenetv2: BatchNorm needs at least "
                                   "2 images a batch (per process under DDP)")
    assert captured.err.count("\n") == 1 and "use --batch-size 2 or more" in captured.err
    assert not out.exists() and captured.out == ""


def test_the_batch_size_help_names_every_model_that_needs_two_images():
    """--help states the true minimum: the models it names are those a batch of one cannot train."""
    import dataclasses

    from perception.models import build_model, model_names
    from perception.training.trainer import batch_of_one_blocker

    text = {f.name: f for f in dataclasses.fields(TrainConfig)}["batch_size"].metadata["help"]
    named = set(re.findall(r"\b(\w+)(?=,| and| \()", text.split("at least 2 for ")[1]))
    blocked = {name for name in model_names()
               if batch_of_one_blocker(build_model(name, num_classes=3, pretrained=False), (64, 64),
                                       torch.device("cpu")) is not None}
    assert blocked == named == {"bisenetv1", "bisenetv2", "pspnet"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here")
def test_device_cuda_without_a_gpu_is_a_missing_dependency_naming_device_cpu(data_spec, tmp_path, capsys):
    assert _train(data_spec, tmp_path / "gpu", "--steps", "1", "--device", "cuda") == 3
    err = capsys.readouterr().err
    assert err.startswith("perception: error: --device cuda: PyTorch sees no CUDA GPU here") and err.count("\n") == 1
    assert "use --device cpu" in err and "--set device" not in err
    assert not (tmp_path / "gpu").exists()


@pytest.mark.parametrize("model", ["model.onnx", "runs/x/best.pt", "weights.pth"])
def test_a_model_file_given_to_train_model_points_to_resume_and_pretrained(tmp_path, capsys, model):
    from perception import cli

    assert cli.main(["train", "--model", model, "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "--model takes an architecture name (e.g. bisenetv2)" in err and "--resume" in err and "--pretrained" in err
    assert err.count("\n") == 1 and not (tmp_path / "m").exists()


def test_sigterm_and_a_hangup_stop_training_after_the_step_as_ctrl_c_does(caplog):
    """Hunt 5d: SIGTERM (kill, a service stop) ended training without last.pt (143, no line). Every
    stop signal now only asks the loop to end after its step (then last.pt is saved and the command
    ends as after Ctrl-C: tests/test_cli_errors.py runs that whole path with SIGINT); a second one
    reaches the handler found before (train's own: an interrupt at once)."""
    import signal
    import threading
    import time

    from perception.training.fit import stop_after_step_on_signal

    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name)
        earlier: list[int] = []
        previous = signal.signal(signum, lambda n, _f, seen=earlier: seen.append(n))
        try:
            stop = threading.Event()
            with caplog.at_level(logging.WARNING, logger="perception.training.fit"), \
                    stop_after_step_on_signal(stop, enabled=True):
                os.kill(os.getpid(), signum)
                assert stop.wait(5) and not earlier  # the first: finish the step
                os.kill(os.getpid(), signum)
                deadline = time.monotonic() + 5
                while not earlier and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert earlier == [signum]  # the second: the handler found before
        finally:
            signal.signal(signum, previous)
        assert f"{name}: stopping after this step and saving last.pt" in caplog.text
