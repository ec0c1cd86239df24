"""Rasterising into the material map: the frame's palette of materials and exact polygon fills.

Everything in a frame is drawn once into a single uint8 *material* map. A material is a colour
plus a class id (plus whether it emits light), so the label map and the clean image are two table
look-ups of that same map and the class at every pixel is by construction the class of the thing
whose colour is drawn there. Fills use ``cv2.fillPoly`` with no anti-aliasing (a pixel is one
material, never a blend) at a quarter-pixel fixed-point precision.
"""

from __future__ import annotations

import cv2
import numpy as np

from perception.synthetic.classes import SYNTHETIC_CLASSES
from perception.synthetic.world import Scene

#: Class id of every synthetic class name, e.g. ``CLASS_ID["road"]``.
CLASS_ID = {name: SYNTHETIC_CLASSES.id_of(name) for name in SYNTHETIC_CLASSES.names}

#: Material ids 0..31 are ground materials; id + 32 is the same ground in shadow.
GROUND_SLOTS = 32
SHADOW_BIT = 32
#: Ids 64..255 are everything else (sky, buildings, vehicles, people, ...).
OBJECT_BASE = 64

#: Object slots kept for the first material of each class, so a crowded frame never runs out.
RESERVED_SLOTS = SYNTHETIC_CLASSES.num_classes

#: Once this many object slots are taken, a colour within ``NEAR_COLOUR`` (summed over B, G, R) of
#: one of the same class and light reuses its slot: far things are drawn first, so this keeps slots
#: free for the near ones, which would otherwise get the stand-in colours of a full palette.
CROWDED = OBJECT_BASE + 144
NEAR_COLOUR = 24.0

#: Sub-pixel precision of the polygon fills (coordinates in 1/4 pixel).
SHIFT = 2
SCALE = float(1 << SHIFT)


class Palette:
    """Materials of one frame: colour, class and whether it emits light (lamps, lit windows, sky)."""

    def __init__(self) -> None:
        self.bgr = np.zeros((256, 3), np.float32)
        self.class_id = np.zeros(256, np.uint8)
        self.emissive = np.zeros(256, bool)
        self.lamp = np.zeros(256, bool)  # a light source (emissive, and not sky seen through something)
        self._n_ground = 0
        self._n_object = OBJECT_BASE
        self._ids: dict[tuple, int] = {}
        self._first_of_class: dict[int, int] = {}

    def ground(self, bgr, class_id: int) -> int:
        return self._add(bgr, class_id, False, ground=True)

    def object(self, bgr, class_id: int, emissive: bool = False) -> int:
        return self._add(bgr, class_id, emissive, ground=False)

    def relabelled(self, mid: int, class_id: int) -> int | None:
        """An object material that looks exactly like ``mid`` but has ``class_id``: e.g. the sky
        seen through a bare tree's crown, labelled as the tree. None for shadowed ground (its colour
        is only made in ``tables``)."""
        if GROUND_SLOTS <= mid < 2 * GROUND_SLOTS:
            return None
        return self._add(self.bgr[mid], class_id, bool(self.emissive[mid]), ground=False, lamp=bool(self.lamp[mid]))

    def _add(self, bgr, class_id: int, emissive: bool, *, ground: bool, lamp: bool | None = None) -> int:
        if lamp is None:
            lamp = emissive and class_id != CLASS_ID["sky"]
        key = (int(bgr[0]), int(bgr[1]), int(bgr[2]), class_id, emissive, ground, lamp)
        mid = self._ids.get(key)
        if mid is not None:
            return mid
        if ground:
            if self._n_ground >= GROUND_SLOTS:
                raise RuntimeError("synthetic renderer: more than 32 ground materials in one frame")
            mid = self._n_ground
            self._n_ground += 1
        else:
            if self._n_object >= CROWDED and class_id in self._first_of_class:
                twin = self._stand_in(key[:3], class_id, emissive, lamp, full=self._n_object >= 256 - RESERVED_SLOTS)
                if twin is not None:
                    return twin
            mid = self._n_object
            self._n_object += 1
        self.bgr[mid] = key[:3]
        self.class_id[mid] = class_id
        self.emissive[mid] = emissive
        self.lamp[mid] = lamp
        self._ids[key] = mid
        self._first_of_class.setdefault(class_id, mid)
        return mid

    def _stand_in(self, bgr, class_id: int, emissive: bool, lamp: bool, *, full: bool) -> int | None:
        """A crowded palette's existing material for a new colour: the closest of the same class
        (label exact, colour approximate) and of the same kind of light where there is one (a painted
        panel must not glow like a lamp). Once full, any such colour; before, only a near twin (None
        otherwise). The last slots stay reserved for the first material of each class."""
        used = slice(OBJECT_BASE, self._n_object)
        same_class = self.class_id[used] == class_id
        same_light = same_class & (self.emissive[used] == emissive) & (self.lamp[used] == lamp)
        same = np.flatnonzero(same_light if same_light.any() else same_class) + OBJECT_BASE
        error = np.abs(self.bgr[same] - np.asarray(bgr, np.float32)).sum(axis=1)
        best = int(np.argmin(error))
        if full or (error[best] <= NEAR_COLOUR and same_light.any()):
            return int(same[best])
        return None

    def tables(self, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
        """(colour LUT 1x256x3 uint8, class LUT 256 uint8) under the scene's lighting."""
        light = scene.lighting
        reflect = np.float32(light.ambient) * np.asarray(light.tint_bgr, np.float32)
        factor = np.where(self.emissive[:, None], np.float32(1.0), reflect[None, :]) * np.float32(light.gain)
        lit = self.bgr * factor
        shadow = light.shadow_factor if light.shadow_factor < 0.95 else 0.55
        lit[SHADOW_BIT : SHADOW_BIT + GROUND_SLOTS] = lit[:GROUND_SLOTS] * np.float32(shadow)
        colours = np.clip(lit, 0, 255).astype(np.uint8).reshape(1, 256, 3)
        classes = self.class_id.copy()
        classes[SHADOW_BIT : SHADOW_BIT + GROUND_SLOTS] = classes[:GROUND_SLOTS]
        return colours, classes

    def lamp_table(self) -> np.ndarray:
        """Look-up table material -> 255 for light sources (emissive, except the sky), else 0."""
        return (self.lamp * 255).astype(np.uint8)


def fill(mat: np.ndarray, polys, mid: int) -> None:
    """Fill float pixel polygons (one (N,2) array, an (n,k,2) array or a list of (N,2) arrays) with ``mid``.

    Coordinates stay bounded (nothing nearer than 0.5 m is projected), so no clipping is needed
    before the fixed-point conversion.
    """
    if isinstance(polys, np.ndarray):
        pts = (polys * SCALE).astype(np.int32)
        if pts.ndim == 2:
            pts = pts[None]
    else:
        pts = [(p * SCALE).astype(np.int32) for p in polys]
    if len(pts):
        cv2.fillPoly(mat, pts, int(mid), cv2.LINE_8, SHIFT)


def rects(u_c: float, v_g: float, scale: float, boxes: np.ndarray) -> np.ndarray:
    """Image quads (n,4,2) for boxes ``[x0, x1, y0, y1]`` (metres, in a plane facing the camera)."""
    x = u_c + boxes[:, :2] * scale
    y = v_g - boxes[:, 2:] * scale
    out = np.empty((len(boxes), 4, 2))
    out[:, 0, 0] = out[:, 3, 0] = x[:, 0]
    out[:, 1, 0] = out[:, 2, 0] = x[:, 1]
    out[:, 0, 1] = out[:, 1, 1] = y[:, 0]
    out[:, 2, 1] = out[:, 3, 1] = y[:, 1]
    return out
