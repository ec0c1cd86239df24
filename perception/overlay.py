"""Overlay rendering: camera images with the masks blended in (the library piece of viewing).

``render_overlay(image_bgr, class_map, class_table)``: class colours from the model's class table,
optional drivable / lane / obstacle tints (``TASK_TINTS_BGR``), a caption and a colour legend
beside the image. The caption is a bar at the bottom of the image, or a strip under the picture when
that bar would hide more than ``CAPTION_MAX_SHARE`` of a small frame. ``perception view``, ``perception demo`` and the contact sheet draw with it.
"""

from __future__ import annotations

import cv2
import numpy as np

from perception.contracts import ClassTable

#: BGR tints of the task masks (used when no class map is at hand, e.g. a node publishing tasks only).
TASK_TINTS_BGR: dict[str, tuple[int, int, int]] = {
    "drivable": (80, 200, 60),  # green
    "lane": (0, 230, 255),  # yellow
    "obstacle": (40, 40, 230),  # red
}
_FONT = cv2.FONT_HERSHEY_SIMPLEX
#: The largest share of the image's height the caption bar may cover; on smaller frames the caption
#: goes in a strip under the picture instead, so that no more of the scene is hidden.
CAPTION_MAX_SHARE = 0.1


def render_overlay(
    image_bgr: np.ndarray,
    class_map: np.ndarray | None,
    class_table: ClassTable | None,
    *,
    task_masks: dict[str, np.ndarray] | None = None,
    alpha: float = 0.5,
    legend: bool = True,
    caption: str | None = None,
) -> np.ndarray:
    """Blend masks into a camera image and return a new BGR image.

    Args:
        image_bgr: uint8 H x W x 3 camera frame (not modified).
        class_map: uint8 class ids covering the whole frame at any scale (as the node publishes
            them: letterbox padding cut off), resized to the frame; ids outside the class table
            are left unpainted.
            None to draw only ``task_masks``.
        class_table: colours and names for ``class_map`` and the legend (needed with a class map).
        task_masks: optional ``{"drivable"|"lane"|"obstacle": 0/255 mask}`` painted with
            ``TASK_TINTS_BGR`` over the class colours.
        alpha: weight of the mask colours, 0..1.
        legend: append a legend panel to the right of the image listing the class table's colours
            and the tints used.
        caption: one line of text (e.g. FPS and latency), drawn on a bar at the bottom of the image;
            when that bar would cover more than ``CAPTION_MAX_SHARE`` of its height (frames under
            about 170 rows), in a strip added under the whole picture instead.

    Returns:
        uint8 BGR image: H x W x 3, or wider (and at least tall enough for the legend) with ``legend``,
        and taller by the caption strip on small frames.

    Raises:
        ValueError: a non-BGR image, or a class map without a class table (caller bugs).
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 H x W x 3 BGR image, got {image_bgr.dtype} {image_bgr.shape}")
    if class_map is not None and class_table is None:
        raise ValueError("a class map needs its class table for colours")
    hw = image_bgr.shape[:2]
    # Full-frame temporaries are what a large frame costs (4096 x 4096: 48 MiB a colour image, 16 MiB
    # a mask): one colour image and the painted mask, blended in place, and no boolean indexing
    # (``a[mask]`` with an H x W mask builds two int64 index arrays, 256 MiB at 4096 x 4096).
    # ``colour`` is read only where a pixel is ``painted``.
    entries: list[tuple[str, tuple[int, int, int]]] = []
    if class_map is not None:
        ids = _to_frame(class_map, hw)
        lut = np.zeros((256, 3), dtype=np.uint8)
        known = np.zeros(256, dtype=bool)
        for info in class_table.classes:
            if info.id < 256:
                lut[info.id] = info.color[::-1]  # table colours are RGB
                known[info.id] = True
        colour = lut[ids]
        painted = known[ids]
        # Every class, not only those in view: the frame size then stays the same from frame to frame.
        entries += _class_entries(class_table, ids, legend_rows(hw[0]) - len(task_masks or {}))
    else:
        colour = np.zeros(image_bgr.shape, dtype=np.uint8)
        painted = np.zeros(hw, dtype=bool)
    for task, mask in (task_masks or {}).items():
        tint = TASK_TINTS_BGR.get(task)
        if tint is None:
            raise ValueError(f"unknown task {task!r}; known: {', '.join(TASK_TINTS_BGR)}")
        on = _to_frame(mask, hw) > 0
        np.copyto(colour, np.array(tint, dtype=np.uint8), where=on[..., None])
        painted |= on
        entries.append((task, tint))
    # Blended everywhere, in place, then the image again where nothing is painted.
    out = cv2.addWeighted(image_bgr, 1.0 - alpha, colour, alpha, 0.0, dst=colour)
    np.copyto(out, image_bgr, where=~painted[..., None])
    below = bool(caption) and not _draw_caption(out, caption)
    picture = _with_legend(out, entries) if legend else out
    return _with_caption_strip(picture, caption, hw[0]) if below else picture


#: The legend's row height, and the fewest rows it may have beside a short frame.
LEGEND_ROW_PX = 16
LEGEND_MIN_ROWS = 32


def legend_rows(frame_h: int) -> int:
    """The most rows a legend has beside a frame ``frame_h`` rows high (a class table from the
    network may list 255 classes: the legend must not make the picture many times the frame)."""
    return max(LEGEND_MIN_ROWS, (frame_h - 6) // LEGEND_ROW_PX)


def _class_entries(table: ClassTable, ids: np.ndarray, rows: int) -> list[tuple[str, tuple[int, int, int]]]:
    """Legend rows of ``table``: every class when they fit in ``rows``, else the classes in the frame
    first, then the others by id, and a last row naming how many are left out."""
    classes = list(table.classes)
    if len(classes) > max(rows, 1):
        # bincount takes int64: counted a million pixels at a time, not as one 8-bytes-a-pixel copy.
        flat = ids.reshape(-1)
        present = np.zeros(256, dtype=bool)
        for start in range(0, flat.size, 1 << 20):
            present |= np.bincount(flat[start:start + (1 << 20)], minlength=256) > 0
        ordered = sorted(classes, key=lambda c: (not (c.id < 256 and present[c.id]), c.id))
        shown = ordered[: max(rows, 2) - 1]
        return [*((c.name, tuple(int(v) for v in c.color[::-1])) for c in shown),
                (f"+{len(classes) - len(shown)} more classes", (60, 60, 60))]
    return [(c.name, tuple(int(v) for v in c.color[::-1])) for c in classes]


def _to_frame(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A mask resized to the frame. Masks cover the whole frame (wire v2: the letterbox padding is
    cut and ``roi`` is the frame), so this is a plain nearest resize, sampled at pixel centres; a
    crop of padding here would shift them by a pixel."""
    if mask.shape[:2] == hw:
        return mask
    return cv2.resize(mask, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST_EXACT)


def _caption_bar(text: str, frame_h: int) -> tuple[float, int, int, int]:
    """Font scale, text width, bar height and baseline of a caption for a frame ``frame_h`` rows high."""
    scale = max(0.3, frame_h / 900)
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
    return scale, tw, th + base + 6, base


def _draw_caption(image: np.ndarray, text: str) -> bool:
    """Draw the caption bar at the bottom of ``image``; False (nothing drawn) when the bar would
    cover more than ``CAPTION_MAX_SHARE`` of it."""
    h = image.shape[0]
    scale, tw, bar_h, base = _caption_bar(text, h)
    if bar_h > CAPTION_MAX_SHARE * h:
        return False
    y = h - base - 3
    cv2.rectangle(image, (0, h - bar_h), (min(image.shape[1], tw + 6), h), (0, 0, 0), -1)
    cv2.putText(image, text, (3, y), _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return True


def _with_caption_strip(picture: np.ndarray, text: str, frame_h: int) -> np.ndarray:
    """``picture`` with a black strip under it holding the caption, across its whole width."""
    scale, _, bar_h, base = _caption_bar(text, frame_h)
    strip = np.zeros((bar_h, picture.shape[1], 3), np.uint8)
    cv2.putText(strip, text, (3, bar_h - base - 3), _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([picture, strip])


def _with_legend(image: np.ndarray, entries: list[tuple[str, tuple[int, int, int]]]) -> np.ndarray:
    # A panel beside the image rather than on it: the legend never hides part of the scene.
    h, w = image.shape[:2]
    scale = 0.4
    row_h = LEGEND_ROW_PX
    labels = entries or [("(no mask)", (60, 60, 60))]
    text_w = max(cv2.getTextSize(name, _FONT, scale, 1)[0][0] for name, _ in labels)
    panel_w = 8 + 12 + 6 + text_w + 8
    panel_h = max(h, 6 + row_h * len(labels))
    canvas = np.full((panel_h, w + panel_w, 3), 24, dtype=np.uint8)
    canvas[:h, :w] = image
    for i, (name, bgr) in enumerate(labels):
        y = 6 + i * row_h
        cv2.rectangle(canvas, (w + 8, y), (w + 20, y + 12), bgr, -1)
        cv2.putText(canvas, name, (w + 26, y + 10), _FONT, scale, (235, 235, 235), 1, cv2.LINE_AA)
    return canvas
