"""Own labelled datasets in training and eval (H19): scoring a large label in bounded column bands
with the one-pass result, the warning for classes the training labels never hold (0/255 masks read
with ignore_id 255), one-image datasets' errors that name the real fixes, and an out-of-memory in
validation that names validation's settings."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from perception.metrics import ConfusionMatrix


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


class FixedLogits(nn.Module):
    """Returns the same logits (N x C x h x w) whatever the batch."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: x.shape[0]]


def _one_pass_scores(logits, labels, contents, biases, num_classes):
    """Confusion matrices the way scoring was done before the bands: one full-size resize each."""
    cms = [ConfusionMatrix(num_classes, ignore_id=255) for _ in biases]
    for sample_logits, label, (top, left, height, width) in zip(logits, labels, contents, strict=True):
        crop = sample_logits[:, top : top + height, left : left + width]
        scores = F.interpolate(crop[None].float(), size=label.shape, mode="bilinear")[0].numpy()
        for cm, bias in zip(cms, biases, strict=True):
            cm.update((scores if bias is None else scores + bias.numpy()[:, None, None]).argmax(0), label.numpy())
    return cms


def test_a_large_label_is_scored_in_bounded_bands_with_the_one_pass_scores(monkeypatch):
    """H19 finding 4: eval --checkpoint and validation resized the logits to the whole label in float32
    (num_classes x H x W: 2.3 GB for 12 classes at 48 MP, 6 GB peak for one frame). Now no resize
    output is larger than RESIZE_BAND_BYTES, and the confusion matrices are the one-pass ones."""
    from perception.training import trainer

    rng = np.random.default_rng(0)
    classes = 5
    logits = torch.from_numpy((rng.standard_normal((2, classes, 44, 60)) * 3).astype(np.float32))
    labels = [torch.from_numpy(rng.integers(0, classes, size)) for size in ((400, 600), (401, 597))]
    labels[1][:7] = 255  # ignored rows
    contents = [(2, 0, 40, 60), (2, 0, 40, 60)]  # letterboxed: two rows of padding above and below
    biases = [None, torch.from_numpy(rng.standard_normal(classes).astype(np.float32))]
    expected = _one_pass_scores(logits, labels, contents, biases, classes)

    outputs: list[int] = []
    real_interpolate = F.interpolate

    def measured(*args, **kwargs):
        out = real_interpolate(*args, **kwargs)
        outputs.append(out.numel() * out.element_size())
        return out

    monkeypatch.setattr(trainer, "RESIZE_BAND_BYTES", 1 << 20, raising=False)  # the full-size logits: 4.8 MB
    monkeypatch.setattr(torch.nn.functional, "interpolate", measured)
    batch = (torch.zeros(2, 3, 44, 60), labels, [torch.tensor(c) for c in contents])
    cms = trainer.score_loader_biased(FixedLogits(logits), [batch], biases, device=torch.device("cpu"),
                                      num_classes=classes, ignore_id=255, use_amp=False)
    assert outputs and max(outputs) <= 1 << 20
    for cm, want in zip(cms, expected, strict=True):
        np.testing.assert_array_equal(cm.matrix, want.matrix)
    assert cms[0].matrix.sum() == 400 * 600 + (401 - 7) * 597


@pytest.mark.parametrize(("classes", "source", "size"), [
    (12, (96, 128), (601, 999)),   # odd sizes, about 6x up
    (19, (45, 61), (240, 400)),
    (5, (96, 160), (96, 161)),     # one column more, rows unchanged
    (2, (12, 20), (50, 260)),      # a label under 129 rows: bands stay 129 - H columns wide or more
    (7, (97, 131), (131, 197)),
    (1, (17, 23), (513, 771)),
    (11, (360, 480), (721, 959)),  # a model input larger than the label's width / 2
])
def test_banded_resize_is_the_one_pass_resize_bit_for_bit(classes, source, size):
    """The bands' values are F.interpolate's (bilinear, align_corners=False as scoring uses it) to
    the last bit for random logits, whatever the band width, so no predicted class changes."""
    from perception.training.trainer import resized_logits

    rng = np.random.default_rng(classes)
    logits = torch.from_numpy((rng.standard_normal((classes, *source)) * 4).astype(np.float32))
    want = F.interpolate(logits[None], size=size, mode="bilinear")[0]
    full_bytes = want.numel() * 4
    for band_bytes in (full_bytes // 37, full_bytes // 3 + 1, full_bytes):
        got = torch.full_like(want, float("nan"))
        bands = 0
        for columns, scores in resized_logits(logits, size, band_bytes=band_bytes):
            got[:, :, columns] = scores
            bands += 1
        assert bands == 1 if band_bytes == full_bytes else bands > 1
        assert torch.equal(got, want), (band_bytes, int((got != want).sum()))
        assert torch.equal(got.argmax(0), want.argmax(0))


# ------------------------------------------------------------------------------------------------
# classes never labelled, one-image datasets
# ------------------------------------------------------------------------------------------------


def _folder(root: Path, table: dict, labels: list[np.ndarray]) -> str:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.yaml").write_text(yaml.safe_dump(table))
    rng = np.random.default_rng(0)
    for i, label in enumerate(labels):
        cv2.imwrite(str(root / "images" / f"{i:03d}.png"), rng.integers(0, 255, (*label.shape, 3), dtype=np.uint8))
        cv2.imwrite(str(root / "labels" / f"{i:03d}.png"), label)
    return f"folder:{root}"


def _binary_masks(count: int) -> list[np.ndarray]:
    masks = []
    for i in range(count):
        mask = np.zeros((32, 48), np.uint8)
        mask[16 + i % 4 :] = 255  # the road, below a horizon
        masks.append(mask)
    return masks


TWO_CLASSES = {"classes": [{"id": 0, "name": "background", "color": [0, 0, 0]},
                           {"id": 1, "name": "road", "color": [128, 64, 128]}]}
THREE_CLASSES = {"classes": [{"id": 0, "name": "road", "color": [128, 64, 128]},
                             {"id": 1, "name": "car", "color": [0, 0, 142]},
                             {"id": 2, "name": "sky", "color": [70, 130, 180]}], "ignore_id": 255}


def _train(data: str, out: Path, *extra: str, size: str = "32x48") -> int:
    from perception import cli

    return cli.main(["train", "--data", data, "--size", size, "--steps", "1", "--workers", "0", "--device", "cpu",
                     "--out", str(out), "--set", "progress=false", "--set", "torch_threads=1", *extra])


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name == "perception.training.trainer"]


def test_0_255_masks_read_with_ignore_id_255_warn_once_naming_the_cause_and_the_fix(tmp_path, caplog):
    """H19 finding 5: Label Studio / Labelbox 0/255 masks with a two-class table and ignore_id: 255 ignore
    every road pixel; training ran to the end (val mIoU 0.00 %) without a word. Now one warning at the
    start names the class, the cause and the fix, and the fix it names trains the road."""
    data = _folder(tmp_path / "masks", {**TWO_CLASSES, "ignore_id": 255}, _binary_masks(4))
    with caplog.at_level(logging.WARNING):
        assert _train(data, tmp_path / "run", "--model", "segnet_basic", "--batch-size", "2") == 0
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"class road has no labelled pixel in the 4 training labels of {data!r}: they hold "
                                  "only 0 and 255, and the class table sets ignore_id: 255")
    assert "remove ignore_id from classes.yaml" in warnings[0] and "255 reads as class 1 (road)" in warnings[0]

    caplog.clear()  # the fix: the same masks without ignore_id
    fixed = _folder(tmp_path / "fixed", TWO_CLASSES, _binary_masks(4))
    with caplog.at_level(logging.WARNING):
        assert _train(fixed, tmp_path / "run2", "--model", "segnet_basic", "--batch-size", "2") == 0
    assert _warnings(caplog) == []


def test_a_class_no_training_label_holds_is_named_and_the_labels_are_read_once(tmp_path, caplog, monkeypatch):
    """Any class of the table that the sampled training labels never hold is named with its id; with
    class weights the labels the weights read serve the check (one read, not two)."""
    from perception.datasets import open_dataset
    from perception.training import label_stats, trainer
    from perception.training.config import load_train_config

    labels = []
    for i in range(3):
        label = np.zeros((32, 48), np.uint8)
        label[: 10 + i] = 2  # sky above road; no car anywhere
        labels.append(label)
    data = _folder(tmp_path / "nocar", THREE_CLASSES, labels)
    reads = []
    real_stats = label_stats.class_pixel_stats

    def counted(dataset, **kwargs):
        reads.append(dataset)
        return real_stats(dataset, **kwargs)

    monkeypatch.setattr(label_stats, "class_pixel_stats", counted)
    config = load_train_config(None, {"model": "segnet_basic", "data": data, "input_hw": [32, 48], "batch_size": 2,
                                      "steps": 1, "workers": 0, "progress": False, "out": str(tmp_path / "o"),
                                      "class_weighting": "median_freq"})
    with caplog.at_level(logging.WARNING):
        trainer.build_run(config, trainer.build_data(config))
    assert len(reads) == 1
    warnings = _warnings(caplog)
    assert warnings == [f"class car has no labelled pixel in the 3 training labels of {data!r}: the model cannot "
                        "learn it; check that the labels hold its id (1)"]
    # export --logit-adjust's weights are still those of training
    np.testing.assert_array_equal(label_stats.class_weights_of("median_freq", open_dataset(data, split="train")),
                                  label_stats.median_frequency_weights(*real_stats(open_dataset(data, split="train"))))


def test_a_one_image_dataset_names_the_real_fixes_not_each_other(tmp_path, capsys):
    """H19 finding 7: one image with the default bisenetv2 said "has 1 samples, fewer than one batch of 2
    per process; lower --batch-size", and --batch-size 1 then said "use --batch-size 2 or more". Both now
    name adding images and the models that train on one image, and the advice works."""
    data = _folder(tmp_path / "one", THREE_CLASSES, [np.full((32, 48), 2, np.uint8)])
    assert _train(data, tmp_path / "a", "--model", "bisenetv2", "--batch-size", "2", size="64x64") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 samples" not in err and "lower --batch-size" not in err
    assert f"training data {data!r} has 1 sample, fewer than one batch of 2; bisenetv2 trains on batches of 2 or " in err
    assert "add images (2 or more), or train segnet_basic, segnet or litefpn, which take batches of one image " \
           "(--model segnet_basic --batch-size 1)" in err

    assert _train(data, tmp_path / "b", "--model", "bisenetv2", "--batch-size", "1", size="64x64") == 2
    err = capsys.readouterr().err
    assert err.startswith("perception: error: --batch-size 1 cannot train bisenetv2") and err.count("\n") == 1
    assert "with 1 training sample, add images and use --batch-size 2 or more, or train segnet_basic, segnet or " \
           "litefpn, which take batches of one image (--model segnet_basic --batch-size 1)" in err

    assert _train(data, tmp_path / "c", "--model", "segnet_basic", "--batch-size", "1") == 0  # the advice
    assert (tmp_path / "c" / "last.pt").is_file()

    # a model that trains on one image is told to use --batch-size 1; a few images, the batch that fits
    assert _train(data, tmp_path / "d", "--model", "segnet_basic", "--batch-size", "2") == 2
    assert "has 1 sample, fewer than one batch of 2; use --batch-size 1, or add images" in capsys.readouterr().err
    three = _folder(tmp_path / "three", THREE_CLASSES, [np.full((32, 48), 2, np.uint8)] * 3)
    assert _train(three, tmp_path / "e", "--model", "bisenetv2", "--batch-size", "8") == 2
    assert "has 3 samples, fewer than one batch of 8; lower --batch-size to 3 or less, or add images" \
        in capsys.readouterr().err


def test_the_single_image_models_named_are_those_that_train_on_one_image():
    from perception.models import build_model, model_names
    from perception.training.trainer import SINGLE_IMAGE_MODELS, batch_of_one_blocker

    trains_on_one = {name for name in model_names()
                     if batch_of_one_blocker(build_model(name, num_classes=3, pretrained=False), (64, 64),
                                             torch.device("cpu")) is None}
    assert set(SINGLE_IMAGE_MODELS) == trains_on_one


def test_running_out_of_memory_while_validating_names_validation_settings(tmp_path, monkeypatch, capsys):
    """An out-of-memory in validation (val_batch_size images, scored at the labels' size) named
    --batch-size, which validation does not use; it now says validating and names val_batch_size."""
    import perception.training.fit as fit_module

    def evaluate_out_of_memory(run, data, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 2304000000 bytes.")

    monkeypatch.setattr(fit_module, "evaluate", evaluate_out_of_memory)
    data = _folder(tmp_path / "d", THREE_CLASSES, [np.full((32, 48), 2, np.uint8)] * 2)
    assert _train(data, tmp_path / "run", "--model", "segnet_basic", "--batch-size", "2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("perception: error: training ran out of memory while validating at step 1 (--size 32x48, "
                       "val_batch_size 4, --workers 0, device cpu); lower val_batch_size (--set val_batch_size=1) "
                       "or --size")
