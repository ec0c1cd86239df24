"""The background: sky gradient and clouds, the grass plane, and the distant skyline and tree line.

Drawn first, so the ground and every object cover it.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from perception.synthetic.render.projection import View
from perception.synthetic.render.raster import CLASS_ID, SCALE, SHIFT, Palette, fill
from perception.synthetic.world import Scene

#: Sky gradient resolution (bands of slightly different colour).
SKY_BANDS = 20


def draw_sky(mat: np.ndarray, scene: Scene, view: View, pal: Palette) -> None:
    """Sky bands and clouds above the horizon, grass below it, the distant skyline and tree line."""
    height, width = mat.shape
    light = scene.lighting
    vh = int(np.clip(math.ceil(view.vh), 0, height))
    zen = np.asarray(light.sky_zenith_bgr, np.float32)
    hor = np.asarray(light.sky_horizon_bgr, np.float32)
    bands = np.empty(SKY_BANDS, np.uint8)
    for i in range(SKY_BANDS):
        t = (i / (SKY_BANDS - 1)) ** 2.2  # the sky brightens quickly just above the horizon
        bands[i] = pal.object(zen + (hor - zen) * t, CLASS_ID["sky"], emissive=True)
    if vh > 0:
        rows = (np.arange(vh) * SKY_BANDS // vh).astype(np.intp)
        mat[:vh] = bands[rows][:, None]
        # Clouds: a few overlapping puffs each, lit from above (brighter tops).
        white = np.float32(max(float(hor.max()), 150.0))
        top = pal.object(np.minimum(0.55 * white + 0.45 * hor + 25, 255), CLASS_ID["sky"], emissive=True)
        base = pal.object(0.5 * white + 0.3 * hor + 0.2 * zen, CLASS_ID["sky"], emissive=True)
        for u, v, rx, ry in light.clouds:
            cu, cv_, ax, ay = u * width, v * vh, rx * width, ry * height
            for du, dv, scale, mid in ((0.0, 0.15, 1.0, base), (-0.45, -0.1, 0.55, top), (0.3, -0.25, 0.6, top)):
                centre = (int((cu + du * ax) * SCALE), int((cv_ + dv * ay * 2) * SCALE))
                axes = (max(1, int(scale * ax * SCALE)), max(1, int(scale * ay * (1.6 if scale < 1 else 1) * SCALE)))
                cv2.ellipse(mat, centre, axes, 0, 0, 360, mid, -1, cv2.LINE_8, SHIFT)
    grass = pal.ground(scene.road.grass_bgr, CLASS_ID["vegetation"])
    mat[vh:] = grass
    # Distant skyline and tree line, standing on the horizon.
    base = view.vh + 1.0
    hor_mix = (hor + 2 * np.asarray((120, 120, 125), np.float32)) / 3
    if scene.skyline:
        pts = [(-1.0, base)]
        for u0, u1, hgt in scene.skyline:
            top = base - hgt * height
            pts += [(u0 * width, base), (u0 * width, top), (u1 * width, top), (u1 * width, base)]
        pts.append((width + 1.0, base))
        fill(mat, np.asarray(pts), pal.object(hor_mix, CLASS_ID["building"]))
    xs = np.linspace(-1.0, width + 1.0, len(scene.treeline))
    tree_top = base - scene.treeline * height
    poly = np.concatenate([np.stack([xs, tree_top], 1), [[width + 1.0, base], [-1.0, base]]])
    tree_bgr = (np.asarray(scene.road.grass_bgr, np.float32) * 0.6 + hor * 0.25).clip(0, 255)
    fill(mat, poly, pal.object(tree_bgr, CLASS_ID["vegetation"]))
