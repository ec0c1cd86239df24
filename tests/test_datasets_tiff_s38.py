"""TIFF images with an orientation tag (V1, s38): OpenCV's TIFF decoder turns a TIFF by its tag
however it is read (for display and ``IMREAD_UNCHANGED`` alike, tags 5-8 too when decoded from its
bytes), but the dataset reader took TIFF tags for unapplied: a tagged TIFF image with an untagged
label was turned alone (silently misaligned), and a tagged TIFF label would have been turned twice."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from perception.datasets import open_dataset
from perception.errors import DataError

CLASSES = ("classes:\n- {id: 0, name: road, color: [128, 64, 128]}\n- {id: 1, name: sky, color: [70, 130, 180]}\n"
           "ignore_id: 255\n")


def _dataset(root, tag: int, label_suffix: str, *, h: int = 64, w: int = 96):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.yaml").write_text(CLASSES)
    stored = np.full((h, w, 3), 40, np.uint8)
    stored[: h // 4] = 230  # sky in the top quarter of the pixels as stored
    label = np.zeros((h, w), np.uint8)
    label[: h // 4] = 1
    exif = Image.Exif()
    exif[0x0112] = tag
    Image.fromarray(stored).save(root / "images" / "0.tif", exif=exif.tobytes())
    if label_suffix == ".tif":  # tagged as its image: both turned alike
        Image.fromarray(label).save(root / "labels" / "0.tif", exif=exif.tobytes())
    else:
        Image.fromarray(label).save(root / "labels" / f"0{label_suffix}")
    return open_dataset(f"folder:{root}", split="val")


@pytest.mark.parametrize("tag", [3, 6])
def test_a_tagged_tiff_image_with_an_untagged_label_is_refused_naming_the_tag(tmp_path, tag):
    dataset = _dataset(tmp_path / "d", tag, ".png")
    with pytest.raises(DataError, match=rf"carries EXIF orientation tag {tag}, .* carries no orientation tag"):
        dataset[0]


@pytest.mark.parametrize("tag", [3, 6, 8])
def test_a_tagged_tiff_label_with_its_tagged_tiff_image_lines_up(tmp_path, tag):
    image, label = _dataset(tmp_path / "d", tag, ".tif")[0]
    assert image.shape[:2] == label.shape
    assert ((image.mean(axis=2) > 128) == (label == 1)).all()  # sky pixels are sky labels, turned alike
