"""A contact sheet: a grid of frames with a model's drivable, lane and obstacle masks painted on.

    perception eval --model perception/assets/default.onnx --data camvid:../shared/data/camvid \
        --tasks --contact-sheet docs/real_road.png

What a person looks at before trusting a model on a road it never saw: each tile is a dataset
frame, preprocessed exactly as the node does (letterbox into the model input, class ids mapped
back to the frame), with the node's task masks tinted as ``perception view`` tints them. The
frames are spread evenly over the dataset (first and last included), so the choice is not a
pick of good ones. Torch-free.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from perception.contracts import DEFAULT_DRIVABLE_REACH, OUTPUT_CLASS_IDS, OUTPUT_CONFIDENCE
from perception.errors import ConfigError
from perception.masks import MaskBuilder, unknown_marker_for
from perception.overlay import TASK_TINTS_BGR, render_overlay
from perception.preprocess import Preprocessor

#: Width of one tile in pixels; frames are scaled to it (a sheet of 12 CamVid frames is about 2 MB).
TILE_WIDTH = 400
COLUMNS = 3


def spread_indices(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)``, first and last included (all when fewer)."""
    if count >= total:
        return list(range(total))
    if count == 1:
        return [0]
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


def build_contact_sheet(
    engine, dataset, *, count: int = 12, caption: str = "", unknown_threshold: float | None = None,
    drivable_reach: str = DEFAULT_DRIVABLE_REACH,
) -> np.ndarray:
    """A BGR grid of ``count`` frames of ``dataset`` with ``engine``'s task masks painted on.

    Each tile is captioned with its dataset index; a legend strip of the task tints and
    ``caption`` run along the bottom. The masks are the node's: pixels below the model's unknown
    threshold (``unknown_threshold`` overrides it, 0: off) are in no task, and ``drivable_reach``
    ``ego`` keeps only the drivable area joined to the car.
    """
    if count < 1:
        raise ConfigError(f"--sheet-count {count} must be >= 1")
    table = engine.metadata.class_table
    builder = MaskBuilder(table, model=engine.metadata.model_id, drivable_reach=drivable_reach)
    tasks = [t for t in ("drivable", "lane", "obstacle") if t in builder.luts]
    preprocessor = Preprocessor(engine.input_hw)
    unknown = unknown_marker_for(engine.has_confidence, engine.metadata.unknown_threshold, unknown_threshold,
                                 model=engine.metadata.model_id)
    tiles = []
    for index in spread_indices(len(dataset), count):
        image, _ = dataset[index]
        batch = preprocessor(image)
        outputs = engine.infer(batch)
        class_ids = outputs[OUTPUT_CLASS_IDS][0]
        if unknown is not None:
            unknown.apply(class_ids, outputs[OUTPUT_CONFIDENCE][0])
        class_ids = preprocessor.letterbox.to_source(class_ids)
        masks = builder.build(np.ascontiguousarray(class_ids), only=set(tasks))
        tile = render_overlay(
            image, None, None, task_masks={t: masks[t] for t in tasks}, legend=False, caption=f"#{index}"
        )
        h, w = tile.shape[:2]
        tiles.append(cv2.resize(tile, (TILE_WIDTH, round(h * TILE_WIDTH / w)), interpolation=cv2.INTER_AREA))
    tile_h = max(t.shape[0] for t in tiles)
    rows = -(-len(tiles) // COLUMNS)
    sheet = np.full((rows * tile_h + 28, COLUMNS * TILE_WIDTH, 3), 24, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, COLUMNS)
        sheet[r * tile_h : r * tile_h + tile.shape[0], c * TILE_WIDTH : (c + 1) * TILE_WIDTH] = tile
    x = 6
    for task in tasks:
        cv2.rectangle(sheet, (x, sheet.shape[0] - 20), (x + 12, sheet.shape[0] - 8), TASK_TINTS_BGR[task], -1)
        cv2.putText(sheet, task, (x + 16, sheet.shape[0] - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (235, 235, 235), 1, cv2.LINE_AA)
        x += 30 + 8 * len(task)
    if caption:
        cv2.putText(sheet, caption, (x + 10, sheet.shape[0] - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (235, 235, 235), 1, cv2.LINE_AA)
    return sheet


def check_sheet_target(path: str | Path, count: int) -> None:
    """ConfigError before any work when the sheet could not be written or ``count`` is bad."""
    path = Path(path)
    if count < 1:
        raise ConfigError(f"--sheet-count {count} must be >= 1")
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--contact-sheet {path}: give a .png file name")
    if not path.parent.is_dir():
        raise ConfigError(f"--contact-sheet {path}: folder {path.parent} does not exist; create it or choose another path")


def write_contact_sheet(path: str | Path, sheet: np.ndarray) -> None:
    """Write the sheet as PNG; ConfigError naming the path when it cannot be written."""
    path = Path(path)
    check_sheet_target(path, 1)
    _, data = cv2.imencode(".png", sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    try:
        path.write_bytes(data.tobytes())
    except OSError as exc:
        raise ConfigError(f"cannot write --contact-sheet {path} ({exc.strerror})") from None
