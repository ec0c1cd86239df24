"""Fit camera frames to the model input, and map model-sized masks back to the camera frame.

``Letterbox(src_hw, dst_hw)`` scales a frame to fit the model input keeping its aspect ratio and
centres it on constant padding; ``to_source(mask)`` undoes that exactly for masks (crop the padding,
then pixel-centre nearest-neighbour resize to the source size, so class ids are never blended).
``Preprocessor`` owns the one preallocated input batch the engine reads from.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Padding value for the letterbox border (black, as most segmentation exporters use).
PAD_VALUE = 0


@dataclass(frozen=True)
class Letterbox:
    """The geometry of fitting a ``src_hw`` image into ``dst_hw``.

    ``content_hw`` is the size of the scaled image inside the destination and ``offset_yx`` its
    top-left corner; the rest is padding. When the aspect ratios match there is no padding.
    """

    src_hw: tuple[int, int]
    dst_hw: tuple[int, int]
    content_hw: tuple[int, int]
    offset_yx: tuple[int, int]

    @classmethod
    def fit(cls, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> Letterbox:
        sh, sw = src_hw
        dh, dw = dst_hw
        scale = min(dh / sh, dw / sw)
        ch = min(dh, max(1, round(sh * scale)))
        cw = min(dw, max(1, round(sw * scale)))
        return cls(src_hw=(sh, sw), dst_hw=(dh, dw), content_hw=(ch, cw), offset_yx=((dh - ch) // 2, (dw - cw) // 2))

    @property
    def padded(self) -> bool:
        return self.content_hw != self.dst_hw

    def content(self, array: np.ndarray) -> np.ndarray:
        """The view of a destination-sized ``array`` (H x W[ x C]) that holds the image, padding cut off."""
        top, left = self.offset_yx
        ch, cw = self.content_hw
        return array[top : top + ch, left : left + cw]

    def apply(self, image: np.ndarray, out: np.ndarray, *, interpolation: int = cv2.INTER_LINEAR) -> None:
        """Resize ``image`` (src_hw x 3) into the content area of ``out`` (dst_hw x 3) in place.

        The padding of ``out`` is not touched: fill it once when the buffer is made."""
        ch, cw = self.content_hw
        target = self.content(out)
        if image.shape[:2] == (ch, cw):
            target[...] = image
        else:
            cv2.resize(image, (cw, ch), dst=target, interpolation=interpolation)

    def to_source(self, mask: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Map a ``dst_hw`` mask or class map back to ``src_hw``: crop the padding, resize nearest.

        INTER_NEAREST_EXACT samples at pixel centres, the same grid as the INTER_LINEAR resize in
        ``apply``; plain INTER_NEAREST samples at top-left corners, which moved mask edges by one
        source pixel on frames upscaled to the model input (smaller than it)."""
        crop = self.content(mask)
        sh, sw = self.src_hw
        if crop.shape[:2] == (sh, sw):
            if out is None:
                return crop
            out[...] = crop
            return out
        return cv2.resize(crop, (sw, sh), dst=out, interpolation=cv2.INTER_NEAREST_EXACT)


class Preprocessor:
    """Letterboxes frames into one preallocated uint8 ``1 x H x W x 3`` batch.

    The geometry is recomputed (and the padding refilled) only when the frame size changes.
    """

    def __init__(self, input_hw: tuple[int, int], *, pad_value: int = PAD_VALUE) -> None:
        self.input_hw = input_hw
        self.pad_value = pad_value
        self.batch = np.full((1, input_hw[0], input_hw[1], 3), pad_value, dtype=np.uint8)
        self.letterbox: Letterbox | None = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Fit ``image`` (H x W x 3 BGR uint8) into the batch and return the batch (no copy)."""
        src_hw = image.shape[:2]
        if self.letterbox is None or self.letterbox.src_hw != src_hw:
            self.letterbox = Letterbox.fit(src_hw, self.input_hw)
            self.batch.fill(self.pad_value)
        self.letterbox.apply(image, self.batch[0])
        return self.batch


def letterbox_image(image: np.ndarray, input_hw: tuple[int, int], *, pad_value: int = PAD_VALUE) -> tuple[np.ndarray, Letterbox]:
    """One image fitted into a new ``input_hw`` x 3 array exactly as the node's ``Preprocessor`` does.

    For offline users of the deploy preprocessing (evaluation, export verification, INT8
    calibration, training validation): returns the letterboxed image and its geometry, whose
    ``to_source`` maps a predicted mask back to ``image``'s size.
    """
    preprocessor = Preprocessor(input_hw, pad_value=pad_value)
    batch = preprocessor(image)
    assert preprocessor.letterbox is not None  # set by the call above
    return batch[0], preprocessor.letterbox


def letterbox_label(label: np.ndarray, letterbox: Letterbox, *, fill: int) -> np.ndarray:
    """A label map placed like its image by ``letterbox``: nearest on the same pixel-centre grid as
    the image's resize (INTER_NEAREST_EXACT), padding set to ``fill`` (an ignore id)."""
    out = np.full(letterbox.dst_hw, fill, dtype=label.dtype)
    letterbox.apply(label, out, interpolation=cv2.INTER_NEAREST_EXACT)
    return out
