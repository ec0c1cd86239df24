"""What needs no labels reads no labels (V1 N3, H19 finding 8): INT8 calibration, export
verification and ``bench --frames folder:`` read each sample's label too, so a dataset of EXIF-tagged
phone photos whose labels carry no tag (refused for training and scoring since s38, as their
alignment cannot be known) was refused there as well, against the README's "calibration needs no
labels". ``dataset.image(i)`` reads the image alone, as the node reads it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from perception.datasets import open_dataset
from perception.errors import DataError
from perception.export.verify import load_samples
from perception.frames import bench_frames

CLASSES = "classes:\n- {id: 0, name: road, color: [128, 64, 128]}\n- {id: 1, name: sky, color: [70, 130, 180]}\n"


@pytest.fixture
def phone_photos(tmp_path):
    root = tmp_path / "phone"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.yaml").write_text(CLASSES)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    for i in range(3):
        Image.fromarray(np.full((48, 64, 3), 60 * i, np.uint8)).save(root / "images" / f"{i}.jpg", exif=exif.tobytes())
        Image.fromarray(np.zeros((64, 48), np.uint8)).save(root / "labels" / f"{i}.png")
    return f"folder:{root}"


def test_samples_with_labels_are_still_refused(phone_photos):
    with pytest.raises(DataError, match="carries EXIF orientation tag 6"):
        open_dataset(phone_photos, split="val")[0]


def test_calibration_and_verification_read_the_images_alone(phone_photos):
    samples, _ = load_samples(phone_photos, split="val", count=3, input_hw=(32, 48), labels=False)
    assert len(samples) == 3 and all(label is None and image.shape == (32, 48, 3) for image, label in samples)
    image = open_dataset(phone_photos, split="val").image(0)
    assert image.shape == (64, 48, 3)  # turned by its tag, as the node reads it


def test_bench_frames_from_a_dataset_read_the_images_alone(phone_photos):
    frames = bench_frames((32, 48), 3, 0, phone_photos)
    assert len(frames) == 3 and frames[0].shape == (32, 48, 3)
