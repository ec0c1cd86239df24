"""From the model's class map to the published masks: drivable, lane, obstacle, class_map, blobs.

Each task is a set of classes from the model's ``task_groups`` (``--task lane=lane_marking`` or
``--task obstacle=car,pedestrian`` overrides them). A task whose classes the model lacks is not
advertised, with one warning. Every mask of a frame comes from one lookup pass over the class map:
a 256-entry table maps each class id to a byte with one bit per mask (eight masks a byte), then each
mask is that bit as 0 or 255 - no per-class loops on the hot path.

Unknown pixels: with a model that has the ``confidence`` output, ``UnknownMarker`` sets every
class-map pixel whose confidence is below the threshold (the model's ``unknown_threshold``, or
``perception run --unknown-threshold``) to ``contracts.UNKNOWN_CLASS_ID`` before the masks are
built; no task lookup table maps that id, so drivable, lane and obstacle never claim such a pixel.

Reach: with ``drivable_reach="ego"`` (the default, ``perception run --drivable-reach``), ``EgoReach``
keeps only the drivable pixels joined to the bottom of the frame, where the car stands.

Extras: per-class obstacle masks (``per_class_obstacles``: ``obstacle/<class>`` for each class of
the obstacle task, one more lookup each), and obstacle blobs (``obstacle_blobs``: each connected
region of one class, with its class, box, pixel area and centroid) for the ``obstacles`` JSON topic.
"""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np

from perception.contracts import (
    DEFAULT_DRIVABLE_REACH,
    DRIVABLE_REACH_CHOICES,
    EGO_CLASS_NAMES,
    PER_CLASS_OBSTACLE_PREFIX,
    TASKS,
    UNKNOWN_CLASS_ID,
    ClassTable,
    unknown_level,
)
from perception.errors import ConfigError

log = logging.getLogger(__name__)

MASK_ON = 255

#: Blobs smaller than this (pixels) are noise, not obstacles.
DEFAULT_MIN_BLOB_AREA_PX = 16
#: At most this many blobs (the largest) go into one obstacles document.
DEFAULT_MAX_BLOBS = 64


def task_lut(class_ids: list[int]) -> np.ndarray:
    """A 256-entry table mapping the given class ids to 255 and everything else to 0."""
    lut = np.zeros(256, dtype=np.uint8)
    lut[class_ids] = MASK_ON
    return lut


class UnknownMarker:
    """Marks the pixels a model is unsure of as ``UNKNOWN_CLASS_ID``, in place.

    Args:
        threshold: confidence (0..1], ``contracts.OUTPUT_CONFIDENCE``, below which a pixel is unknown; the uint8
            confidence is compared with ``contracts.unknown_level(threshold)``.
        set_by: where the threshold came from (for logs and the stats document).
    """

    def __init__(self, threshold: float, *, set_by: str = "") -> None:
        self.threshold = float(threshold)
        self.level = unknown_level(self.threshold)
        self.set_by = set_by
        self._marks: np.ndarray | None = None

    def apply(self, class_ids: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """Set ``class_ids`` to UNKNOWN_CLASS_ID where ``confidence`` is below the level (both
        H x W uint8, ``class_ids`` writable); returns the 0/255 marks (reused by the next call).

        Three elementwise ufuncs into one preallocated buffer (compare, 0/1 -> 0/255, OR), no
        allocation. ``np.copyto(class_ids, 255, where=confidence < level)`` computes the same but
        measured 2.5-4.5x slower at 288x384 on the default model's confidence maps (0.12-0.20 ms
        against 0.04-0.05 ms for this; 0.9 ms against 0.03 ms on random maps: a masked store per
        pixel).
        """
        marks = self._marks
        if marks is None or marks.shape != confidence.shape:
            marks = self._marks = np.empty(confidence.shape, dtype=np.uint8)
        np.less(confidence, self.level, out=marks, casting="unsafe")  # 1 where unsure, else 0
        np.negative(marks, out=marks)  # uint8: 1 -> 255, 0 -> 0
        np.bitwise_or(class_ids, marks, out=class_ids)  # 255 | id == 255 == UNKNOWN_CLASS_ID
        return marks


def unknown_marker_for(has_confidence: bool, default_threshold: float, flag: float | None, *, model: str) -> UnknownMarker | None:
    """The node's unknown marking for a model, decided once at start (and logged once), or None.

    Args:
        has_confidence: the engine returns the ``confidence`` output.
        default_threshold: the model's ``unknown_threshold`` metadata (0: none chosen).
        flag: ``--unknown-threshold`` (None: use the model's; 0: off).
        model: the model id, for messages.

    Raises:
        ConfigError: a threshold above 0 was asked for a model without a confidence output.
    """
    if flag is not None and flag > 0 and not has_confidence:
        raise ConfigError(
            f"--unknown-threshold {flag:g}: model {model} has no confidence output; re-export it with "
            "'perception export --confidence' or drop --unknown-threshold"
        )
    if flag is not None and flag > 0 and unknown_level(flag) == 0:  # confidence < 0: never true
        raise ConfigError(f"--unknown-threshold {flag:g} rounds to confidence level 0 of 255 (the confidence output's "
                          "steps), which marks no pixel; give 0 to turn marking off, or 0.002 or more")
    if flag == 0:
        log.info("unknown marking off (--unknown-threshold 0): every pixel keeps its class")
        return None
    if not has_confidence:
        log.info("unknown marking off: model %s has no confidence output (export it with --confidence to mark "
                 "unsure pixels as id %d)", model, UNKNOWN_CLASS_ID)
        return None
    threshold, set_by = (flag, "--unknown-threshold") if flag is not None else (default_threshold, "model metadata")
    if threshold <= 0:
        log.info("unknown marking off: model %s has a confidence output but no unknown_threshold in its metadata; "
                 "pass --unknown-threshold P (e.g. 0.5) to mark unsure pixels", model)
        return None
    marker = UnknownMarker(threshold, set_by=set_by)
    log.info("unknown marking on: pixels with confidence below %.4g (uint8 level %d, from %s) are class id %d, "
             "in no task mask", threshold, marker.level, set_by, UNKNOWN_CLASS_ID)
    return marker


#: The bottom share of the frame's rows where the car stands (``EgoReach``).
EGO_BAND = 0.1


class EgoReach:
    """The part of the drivable area the car can reach: the drivable pixels 8-connected, through
    drivable pixels or the car's own hood (``EGO_CLASS_NAMES``), to the bottom tenth of the frame.

    A patch of pavement or a car park that the model calls road but that no drivable path joins to
    the car, or a road seen beyond a wall, is not drivable for the car. Unknown pixels join nothing:
    the car cannot count on them. It costs 0.25 ms a frame at 270x480 on 2 cores (median, the
    default model's maps: one lookup, one connected-components pass, one gather when it cuts).
    Measured on CamVid val (real roads, never trained on; README "The
    default model"): the default model's drivable IoU 90.6 -> 91.6, precision 93.5 -> 94.6, recall
    96.7 -> 96.6; +0.6 to +2.3 IoU over nine runs of the earlier 1400-step recipe.

    Args:
        table: the model's class table.
        drivable_classes: the class names of the drivable task.
    """

    def __init__(self, table: ClassTable, drivable_classes: list[str] | tuple[str, ...]) -> None:
        joining = [*drivable_classes, *(n for n in EGO_CLASS_NAMES if n in table.names)]
        self.join_lut = np.zeros(256, dtype=np.uint8)
        self.join_lut[[table.id_of(n) for n in joining]] = 1
        self._join: np.ndarray | None = None

    def reachable(self, class_map: np.ndarray) -> np.ndarray | None:
        """0/255 over an H x W uint8 class map (the frame, no letterbox padding): 255 on the
        joining pixels whose component reaches the bottom band; None when every component does
        (nothing to cut, the common case)."""
        class_map = np.ascontiguousarray(class_map)
        join = self._join
        if join is None or join.shape != class_map.shape:
            join = self._join = np.empty_like(class_map)
        cv2.LUT(class_map, self.join_lut, dst=join)
        count, labels = cv2.connectedComponents(join, connectivity=8, ltype=label_type(join.shape))
        keep = np.zeros(count, dtype=np.uint8)
        keep[np.unique(labels[-max(1, round(join.shape[0] * EGO_BAND)):])] = MASK_ON
        keep[0] = 0  # the background
        if keep[1:].all():
            return None
        return keep[labels]

    def apply(self, drivable: np.ndarray, class_map: np.ndarray) -> tuple[int, int]:
        """Clear the pixels of ``drivable`` (0/255, built from ``class_map``) the car cannot reach,
        in place; returns (its pixels before, its pixels kept)."""
        before = cv2.countNonZero(drivable)
        reachable = self.reachable(class_map) if before else None
        if reachable is None:
            return before, before
        np.bitwise_and(drivable, reachable, out=drivable)
        return before, cv2.countNonZero(drivable)


def parse_task_overrides(items: dict[str, list[str]] | None, table: ClassTable, *, model: str) -> dict[str, list[str]]:
    """Validate ``{"lane": ["lane_marking"]}`` against the model's classes; ConfigError naming the fix."""
    overrides = {}
    for task, names in (items or {}).items():
        if task not in TASKS:
            raise ConfigError(f"--task {task}=...: unknown task {task!r}; known: {', '.join(TASKS)}")
        overrides[task] = check_group_classes(task, names, table, flag="--task", owner=f"model {model}")
    return overrides


def check_group_classes(task: str, names: list[str], table: ClassTable, *, flag: str, owner: str) -> list[str]:
    """``names`` (a task group given as ``FLAG TASK=CLASS,...``) when each is a class of ``table``;
    ConfigError naming the first class ``owner`` lacks, and its classes, otherwise."""
    unknown = [n for n in names if n not in table.names]
    if unknown or not names:
        # Class names are matched exactly; one that differs only in case is named (road for Road).
        same = [n for n in table.names if unknown and n.casefold() == unknown[0].casefold()]
        guess = f" (did you mean {same[0]!r}?)" if same else ""
        raise ConfigError(
            f"{flag} {task}={','.join(names)}: {owner} has no class {unknown[0] if unknown else '(none given)'!r}{guess}; "
            f"its classes: {', '.join(table.names)}"
        )
    return list(names)


class MaskBuilder:
    """Turns class maps into the published masks, reusing its output buffers.

    Args:
        table: the model's class table.
        model: the model id (for messages).
        overrides: task -> class names, replacing the model's task groups for those tasks.
        per_class_obstacles: every class of the obstacle task also gets its own mask
            (key ``obstacle/<class>``).
        drivable_reach: ``ego`` keeps only the drivable area joined to the car (``EgoReach``),
            ``all`` every pixel of the drivable classes.

    Raises:
        ConfigError: an override names an unknown task or class.
    """

    def __init__(
        self,
        table: ClassTable,
        *,
        model: str = "model",
        overrides: dict[str, list[str]] | None = None,
        per_class_obstacles: bool = False,
        drivable_reach: str = DEFAULT_DRIVABLE_REACH,
    ) -> None:
        if drivable_reach not in DRIVABLE_REACH_CHOICES:
            raise ConfigError(f"--drivable-reach {drivable_reach!r}: choose one of {', '.join(DRIVABLE_REACH_CHOICES)}")
        self.table = table
        self.drivable_reach = drivable_reach
        checked = parse_task_overrides(overrides, table, model=model)
        self.luts: dict[str, np.ndarray] = {}
        self.task_classes: dict[str, list[str]] = {}
        for task in TASKS:
            names = checked.get(task, list(table.task_groups.get(task, ())))
            if not names:
                log.warning(
                    "model %s has no classes for task %r (its task groups: %s); the %s mask is not published. "
                    "Map classes to it with --task %s=<class>[,<class>]",
                    model, task, ", ".join(table.task_groups) or "none", task, task,
                )
                continue
            self.task_classes[task] = names
            self.luts[task] = task_lut([table.id_of(n) for n in names])
        if per_class_obstacles:
            for name in self.task_classes.get("obstacle", ()):
                self.luts[PER_CLASS_OBSTACLE_PREFIX + name] = task_lut([table.id_of(name)])
        # The one lookup pass: bit b of group g's table is set for the class ids of the mask
        # self._bits[name] == (g, 1 << b); eight masks share a group (one LUT pass per eight).
        self._bits: dict[str, tuple[int, int]] = {}
        self._bit_luts: list[np.ndarray] = []
        for i, (name, lut) in enumerate(self.luts.items()):
            group, bit = divmod(i, 8)
            if bit == 0:
                self._bit_luts.append(np.zeros(256, dtype=np.uint8))
            self._bit_luts[group] |= np.where(lut == MASK_ON, np.uint8(1 << bit), np.uint8(0))
            self._bits[name] = (group, 1 << bit)
        self._bit_planes: list[np.ndarray] = []
        self._buffers: dict[str, np.ndarray] = {}
        self.reach = (EgoReach(table, self.task_classes["drivable"])
                      if drivable_reach == "ego" and "drivable" in self.task_classes else None)
        #: (pixels of the drivable classes, pixels kept) of the last drivable mask built with the reach.
        self.last_reach: tuple[int, int] | None = None

    @property
    def topics(self) -> list[str]:
        """The mask names ``build`` returns: the advertised tasks, per-class masks, then ``class_map``."""
        return [*self.luts, "class_map"]

    def build(self, class_map: np.ndarray, only: set[str] | frozenset[str] | None = None) -> dict[str, np.ndarray]:
        """Masks for one H x W uint8 class map. The arrays are reused by the next call: consume
        (encode/send) them before building again.

        ``only``: build just these mask names (the node passes the topics someone subscribes to);
        None builds every mask. ``class_map`` is always in the result (it costs nothing).
        """
        masks = {"class_map": class_map}
        names = [name for name in self.luts if only is None or name in only]
        if not names:
            return masks
        if len(self._bit_planes) != len(self._bit_luts) or self._bit_planes[0].shape != class_map.shape:
            self._bit_planes = [np.empty_like(class_map) for _ in self._bit_luts]
        # One lookup pass per eight masks (class id -> one bit per mask), then per mask one AND
        # and one threshold (SIMD passes, far cheaper than a lookup). Measured at 270x480 on the
        # 2-core Xeon (shared, best of 7): 3 masks 0.11-0.17 ms against 0.19-0.23 ms for one
        # cv2.LUT per mask, 7 masks (per-class obstacles) 0.18-0.25 against 0.37-0.52 ms; a
        # gather of a 256 x K table (np.take) took 2.6-5.5 ms, as each mask must be its own plane.
        for group in sorted({self._bits[name][0] for name in names}):
            cv2.LUT(class_map, self._bit_luts[group], dst=self._bit_planes[group])
        for name in names:
            group, bit = self._bits[name]
            buf = self._buffers.get(name)
            if buf is None or buf.shape != class_map.shape:
                buf = self._buffers[name] = np.empty_like(class_map)
            np.bitwise_and(self._bit_planes[group], np.uint8(bit), out=buf)
            # 255 where the bit is set, else 0. (cv2.compare(buf, 0) took a 1 x 1 map for the scalar
            # and failed; the threshold has no such case and measured twice as fast at 270x480.)
            cv2.threshold(buf, 0, 255, cv2.THRESH_BINARY, dst=buf)
            masks[name] = buf
        if self.reach is not None and "drivable" in masks:
            self.last_reach = self.reach.apply(masks["drivable"], class_map)
        return masks


def label_type(hw: tuple[int, int]) -> int:
    """The narrowest OpenCV label type that can number every 8-connected component of an H x W mask.

    At most ceil(H/2) * ceil(W/2) components fit (isolated pixels on every other row and column),
    plus the background label 0. 16-bit labels made ``cv2.connectedComponentsWithStats`` 2.4-2.8x
    faster than 32-bit ones on the node's 270x480 obstacle masks on the 2-core Xeon (0.34-0.47
    against 0.94-1.12 ms, same components and stats); larger masks keep 32-bit labels.
    """
    h, w = hw
    return cv2.CV_16U if -(-h // 2) * -(-w // 2) + 1 <= np.iinfo(np.uint16).max else cv2.CV_32S


def obstacle_blobs(
    obstacle_mask: np.ndarray,
    class_map: np.ndarray,
    table: ClassTable,
    *,
    min_area_px: int = DEFAULT_MIN_BLOB_AREA_PX,
    max_blobs: int = DEFAULT_MAX_BLOBS,
) -> list[dict[str, Any]]:
    """The obstacle mask's connected regions of one class each, largest first: class, box, area,
    centroid. A pedestrian in front of a car is two blobs, each with only its own pixels (one
    region of every obstacle class together, named by its most common class, once called a car's
    pixels a pedestrian's).

    Args:
        obstacle_mask: H x W uint8, non-zero on obstacles.
        class_map: H x W uint8 class ids (same size): which class each obstacle pixel is.
        table: the model's class table.
        min_area_px: smaller regions are dropped as noise.
        max_blobs: keep only this many of the largest.

    Returns:
        ``[{"class": "car", "class_id": 8, "box_xywh": [x, y, w, h], "area_px": 812,
        "centroid_xy": [x, y]}, ...]`` in pixels of the mask.
    """
    ltype = label_type(obstacle_mask.shape)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(obstacle_mask, connectivity=8, ltype=ltype)
    if count <= 1:
        return []
    # The classes in each region, in one bincount over (region, class) pairs: most regions hold one
    # class and are taken as they are; only the ones that mix classes are split (below).
    on = obstacle_mask != 0
    num_classes = max(table.num_classes, int(class_map.max()) + 1)
    pairs = labels[on].astype(np.int64) * num_classes + class_map[on]
    votes = np.bincount(pairs, minlength=count * num_classes).reshape(count, num_classes)
    kinds = np.count_nonzero(votes, axis=1)
    areas = stats[:, cv2.CC_STAT_AREA]
    pure = np.flatnonzero((kinds == 1) & (areas >= min_area_px))
    # Every kept region as rows of (area, class id, x, y, w, h) and its centroid, gathered as arrays.
    rows = [np.column_stack([areas[pure], votes[pure].argmax(axis=1), stats[pure, :4]])]
    centres = [centroids[pure]]
    mixed = np.flatnonzero((kinds > 1) & (areas >= min_area_px))
    if mixed.size:
        # The regions that mix classes, split by class in one pass per class over the box that holds
        # them all (parts of different regions never touch: the regions are separate components).
        x0, y0 = stats[mixed, cv2.CC_STAT_LEFT].min(), stats[mixed, cv2.CC_STAT_TOP].min()
        x1 = (stats[mixed, cv2.CC_STAT_LEFT] + stats[mixed, cv2.CC_STAT_WIDTH]).max()
        y1 = (stats[mixed, cv2.CC_STAT_TOP] + stats[mixed, cv2.CC_STAT_HEIGHT]).max()
        is_mixed = np.zeros(count, bool)
        is_mixed[mixed] = True
        in_mixed = is_mixed[labels[y0:y1, x0:x1]]
        crop = class_map[y0:y1, x0:x1]
        # A class with fewer pixels in all of them than min_area_px has no part to keep.
        for cid in np.flatnonzero(votes[mixed].sum(axis=0) >= min_area_px).tolist():
            part = (in_mixed & (crop == cid)).view(np.uint8)
            _, _, part_stats, part_centroids = cv2.connectedComponentsWithStats(part, connectivity=8, ltype=ltype)
            keep = np.flatnonzero(part_stats[1:, cv2.CC_STAT_AREA] >= min_area_px) + 1
            box = part_stats[keep, :4] + np.array([x0, y0, 0, 0])
            rows.append(np.column_stack([part_stats[keep, cv2.CC_STAT_AREA], np.full(keep.size, cid), box]))
            centres.append(part_centroids[keep] + np.array([x0, y0]))
    found = np.concatenate(rows).astype(np.int64)
    order = np.argsort(-found[:, 0], kind="stable")[:max_blobs]  # largest first; ties keep the order found
    centre = np.concatenate(centres)
    names = table.names
    blobs = []
    for (area, cid, x, y, w, h), (cx, cy) in zip(found[order].tolist(), centre[order].tolist(), strict=True):
        blobs.append(
            {
                "class": names[cid] if cid < len(names) else str(cid),
                "class_id": cid,
                "box_xywh": [x, y, w, h],
                "area_px": area,
                "centroid_xy": [round(cx, 2), round(cy, 2)],
            }
        )
    return blobs
