"""A damaged JPEG in a dataset (bit rot, a cut file closed with FF D9) is read as libjpeg conceals it,
as before, but now said once, by name (the node skips such a frame since s42; a training run is not
stopped for one image)."""

from __future__ import annotations

import logging

import cv2
import numpy as np

from perception.datasets.base import read_dataset_image


def test_a_damaged_dataset_jpeg_is_read_and_said_once(tmp_path, caplog):
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.integers(0, 255, (90, 160, 3), dtype=np.uint8), (5, 5), 0)
    data = bytearray(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    data[len(data) // 2: len(data) // 2 + 300] = rng.integers(0, 255, 300, dtype=np.uint8).tobytes()
    path = tmp_path / "a.jpg"
    path.write_bytes(bytes(data))
    good = tmp_path / "b.jpg"
    good.write_bytes(cv2.imencode(".jpg", image)[1].tobytes())
    with caplog.at_level(logging.WARNING, logger="perception.datasets.base"):
        first = read_dataset_image(path)
        again = read_dataset_image(path)
        np.testing.assert_array_equal(read_dataset_image(good), cv2.imread(str(good)))
    expected = cv2.imread(str(path))
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(again, expected)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith(f"image {path}: a damaged JPEG image (libjpeg: ") \
        and "read as libjpeg conceals the damage" in said[0], said
