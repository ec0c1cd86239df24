"""Rare-class copy-paste (``copy_paste``, ``copy_paste_classes``): the chosen classes of another
augmented sample land on a sample, image and label together, never onto padding, in the asked
share of samples, reproducibly; the config keys are checked and a wrong class name is one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perception.contracts import ClassInfo, ClassTable
from perception.errors import ConfigError, DataError
from perception.training.augment import TrainSamples, build_train_transform
from perception.training.config import load_train_config
from perception.training.trainer import class_ids

HW = (12, 40)
IGNORE = 255
POLE = 2
N = 40


class Stripes:
    """Sample i: a grey image of value 5 * i, label 0 (road) with a one-column pole (class 2) at
    column i, and, in sample 0 only, an ignored right half (as padding would be)."""

    class_table = ClassTable(tuple(ClassInfo(i, name, (0, 0, 0)) for i, name in enumerate(("road", "car", "pole"))),
                             ignore_id=IGNORE)
    name = "stripes"

    def __len__(self) -> int:
        return N

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image = np.full((*HW, 3), 5 * index, dtype=np.uint8)
        label = np.zeros(HW, dtype=np.uint8)
        label[:, index % HW[1]] = POLE
        label[0, :] = 1  # a car row that is not pasted
        if index == 0:
            label[:, HW[1] // 2 :] = IGNORE
        return image, label


def _samples(copy_paste: float, seed: int = 0) -> TrainSamples:
    # No geometry and no colour change, so every pixel says which sample it came from.
    transform = build_train_transform(HW, ignore_id=IGNORE, scale_range=(1.0, 1.0), hflip=False, color_jitter=0.0)
    return TrainSamples(Stripes(), transform, seed=seed, copy_paste=copy_paste, paste_ids=(POLE,), ignore_id=IGNORE)


def _source_values(image: torch.Tensor) -> torch.Tensor:
    """Each pixel's original grey value (5 * sample index), undoing the normalisation of channel 0."""
    return (image[0] * 0.229 + 0.485) * 255.0


def test_pasted_pixels_are_the_other_samples_pole_image_and_label_together():
    samples = _samples(copy_paste=1.0)
    for index in range(1, N):
        image, label = samples[index]
        own = index % HW[1]
        pole_columns = sorted({int(c) for c in torch.nonzero(label[1:] == POLE)[:, 1]})
        assert own in pole_columns and len(pole_columns) == 2, (index, pole_columns)
        (donor_column,) = [c for c in pole_columns if c != own]
        values = _source_values(image).round()
        # The pasted column carries a donor's pixels, which is another sample with its pole there;
        # everything else is the sample's own, and the car row (not a pasted class) is untouched.
        donor_value = float(values[5, donor_column])
        assert donor_value != 5 * index and donor_value % 5 == 0 and int(donor_value // 5) % HW[1] == donor_column
        rest = torch.ones(HW, dtype=torch.bool)
        rest[1:, donor_column] = False
        assert torch.all(values[rest] == 5 * index)
        assert torch.all(label[0] == 1) and torch.all(label[1:, donor_column] == POLE)


def test_nothing_is_pasted_onto_ignored_pixels():
    samples = _samples(copy_paste=1.0)
    for epoch in range(6):
        samples.set_epoch(epoch)
        image, label = samples[0]
        right = label[:, HW[1] // 2 :]
        assert torch.all((right == IGNORE) | (right == 1)), "a pole was pasted onto an ignored pixel"
        assert torch.all(_source_values(image)[:, HW[1] // 2 :].round() == 0)


def test_the_share_of_pasted_samples_and_reproducibility():
    samples = _samples(copy_paste=0.5)
    pasted = []
    for epoch in range(5):
        samples.set_epoch(epoch)
        for index in range(1, N):
            image, label = samples[index]
            again_image, again_label = samples[index]
            assert torch.equal(image, again_image) and torch.equal(label, again_label)
            pasted.append(int((label[1:] == POLE).any(0).sum()) > 1)
    share = sum(pasted) / len(pasted)
    assert 0.38 < share < 0.62, share


def test_off_gives_the_plain_samples_draw_for_draw():
    plain = TrainSamples(Stripes(), _samples(0.0).transform, seed=3)
    off = _samples(copy_paste=0.0, seed=3)
    for index in range(N):
        a, b = plain[index], off[index]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_config_keys_are_checked_and_a_wrong_class_is_named():
    config = load_train_config(None, {"copy_paste": 0.5, "copy_paste_classes": ["pole"]})
    assert (config.copy_paste, config.copy_paste_classes) == (0.5, ["pole"])
    with pytest.raises(ConfigError, match="copy_paste=0.5 needs copy_paste_classes"):
        load_train_config(None, {"copy_paste": 0.5})
    with pytest.raises(ConfigError, match="copy_paste"):
        load_train_config(None, {"copy_paste": 1.5, "copy_paste_classes": ["pole"]})
    assert class_ids(Stripes.class_table, ["pole", "road"], "copy_paste_classes") == (2, 0)
    with pytest.raises(DataError, match=r"copy_paste_classes: 'Pole' is not a class of the training data; its classes: "
                                        r"road, car, pole"):
        class_ids(Stripes.class_table, ["Pole"], "copy_paste_classes")
