"""The camera body: roll and radial lens distortion (one remap of image and labels together) and the
ego car's hood across the bottom of the frame.

Both change the labels with the image: the remap samples the label map with nearest neighbour on
the same grid as the image, and the hood is drawn into both. The hood carries ``HOOD_CLASS``
(``ego_vehicle``, in no task group), so a model trained on the world learns to call its own hood
neither drivable road nor an obstacle ahead.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from perception.synthetic.render.raster import CLASS_ID
from perception.synthetic.world import Scene

#: Label of the ego car's hood: neither drivable road nor an obstacle (it is always there).
HOOD_CLASS = CLASS_ID["ego_vehicle"]


@functools.lru_cache(maxsize=4)
def warp_maps(height: int, width: int, roll_mrad: int, k1_milli: int) -> tuple[np.ndarray, np.ndarray]:
    """Source pixel of every output pixel (fixed-point maps for ``cv2.remap``) for a camera rolled
    by ``roll_mrad`` milliradians with radial distortion ``k1_milli`` / 1000 (radius measured in
    half-diagonals). The image is zoomed just enough that no output pixel samples outside the
    render (no borders to label)."""
    theta, k1 = roll_mrad / 1000.0, k1_milli / 1000.0
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    half_diag = math.hypot(width / 2.0, height / 2.0)
    px = ((np.arange(width, dtype=np.float32) - cx) / half_diag)[None, :]
    py = ((np.arange(height, dtype=np.float32) - cy) / half_diag)[:, None]
    # Distortion: the undistorted render is sampled at r * (1 - k1 r^2), scaled so corners stay corners.
    radial = (np.float32(1.0) - np.float32(k1) * (px * px + py * py)) * np.float32(1.0 / (1.0 - k1))
    c, s = math.cos(theta), math.sin(theta)
    cover = min(width / (width * abs(c) + height * abs(s)), height / (width * abs(s) + height * abs(c)))
    scale = np.float32(cover * half_diag)
    map_x = (np.float32(c) * px - np.float32(s) * py) * radial * scale + np.float32(cx)
    map_y = (np.float32(s) * px + np.float32(c) * py) * radial * scale + np.float32(cy)
    np.clip(map_x, 0, width - 1, out=map_x)
    np.clip(map_y, 0, height - 1, out=map_y)
    return cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)


def apply_lens(image: np.ndarray, label: np.ndarray, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Roll and distort ``image`` and ``label`` together (unchanged when the camera has neither)."""
    cam = scene.camera
    roll, k1 = int(round(cam.roll_rad * 1000)), int(round(cam.distortion_k1 * 1000))
    if roll == 0 and k1 == 0:
        return image, label
    map_xy, map_frac = warp_maps(label.shape[0], label.shape[1], roll, k1)
    image = cv2.remap(image, map_xy, map_frac, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    label = cv2.remap(label, map_xy, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    return image, label


def hood_mask(scene: Scene) -> np.ndarray | None:
    """uint8 mask (255: hood) of the ego hood's rows at the bottom, or None without a hood.

    Returns the bottom band only: shape ``(rows, width)`` for the last ``rows`` image rows."""
    cam = scene.camera
    rows = int(round(cam.hood_px))
    if rows < 1:
        return None
    width = cam.width_px
    x = np.linspace(-1.0, 1.0, 33)
    top = rows * (1.0 - cam.hood_curve * x * x)  # height of the hood edge above the bottom row
    pts = np.concatenate([np.stack([(x + 1) / 2 * (width - 1), rows - top], 1), [[width - 1, rows], [0, rows]]])
    mask = np.zeros((rows, width), np.uint8)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
    return mask


def draw_hood(image: np.ndarray, label: np.ndarray, scene: Scene) -> None:
    """Paint the hood into ``image`` and ``label`` in place: paint shaded darker towards the camera,
    with a band of reflected sky along its far edge."""
    mask = hood_mask(scene)
    if mask is None:
        return
    rows = mask.shape[0]
    light, cam = scene.lighting, scene.camera
    reflect = light.ambient * light.gain * np.asarray(light.tint_bgr, np.float32)
    body = np.asarray(cam.hood_bgr, np.float32) * reflect
    sky = np.asarray(light.sky_horizon_bgr, np.float32) * light.gain
    t = np.linspace(0.0, 1.0, rows, dtype=np.float32)[:, None]  # 0 at the far edge, 1 at the bottom
    sheen = 0.35 * np.exp(-t * 6.0)
    colours = body * (1.0 - 0.35 * t) * (1.0 - sheen) + sky * sheen
    band = np.broadcast_to(np.clip(colours, 0, 255).astype(np.uint8)[:, None, :], (rows, label.shape[1], 3))
    on = mask > 0
    image[-rows:][on] = band[on]
    label[-rows:][on] = HOOD_CLASS
