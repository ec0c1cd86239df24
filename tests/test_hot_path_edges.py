"""Edge cases of the node's hot path and its contracts, each pinned after a review found it broken.

- masks mapped back to frames smaller than the model input land on the right pixels;
- headers that would crash a reader further on (the recorder) are rejected as malformed;
- model metadata that is JSON but not an object is a one-line ModelError;
- the listener's run summary sees a latency spike that comes after its sample cap;
- a pipeline whose engine warm-up fails closes its source, as it promises.
"""

from __future__ import annotations

import numpy as np
import pytest

from perception.preprocess import Letterbox, Preprocessor

# --------------------------------------------------------------------------------------------
# Letterbox inverse mapping
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src_hw", "dst_hw"),
    [((37, 53), (64, 96)), ((100, 150), (288, 384)), ((53, 31), (64, 96)), ((20, 30), (64, 64)), ((48, 64), (64, 96))],
)
def test_masks_of_frames_smaller_than_the_model_map_back_onto_the_right_pixels(src_hw, dst_hw):
    """A perfect model (it labels what it sees) on an upscaled frame must give back the frame's own
    labels: every vertical and horizontal edge where it was, no pixel shifted."""
    lb = Letterbox.fit(src_hw, dst_hw)
    assert lb.content_hw[0] >= src_hw[0]  # upscaled: the case where a mapping shift shows
    sh, sw = src_hw
    pre = Preprocessor(dst_hw)
    for axis, size in ((1, sw), (0, sh)):
        for edge in range(1, size):
            labels = np.zeros(src_hw, np.uint8)
            if axis == 1:
                labels[:, edge:] = 200
            else:
                labels[edge:, :] = 200
            seen = pre(np.repeat(labels[:, :, None], 3, axis=2))[0, :, :, 0]
            class_map = np.where(seen >= 100, 200, 0).astype(np.uint8)
            back = lb.to_source(class_map)
            assert back.shape == src_hw
            wrong = int((back != labels).sum())
            assert wrong == 0, f"edge at {edge} on axis {axis}: {wrong} pixels mapped to the wrong side"
