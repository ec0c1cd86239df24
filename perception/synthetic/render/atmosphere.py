"""Light and weather on the finished clean image: the ego car's headlights and street-lamp pools at
night, glow around lamps, wet-road sheen and reflections, fog and rain streaks.

All of it changes the image only, after the labels are final. The light map and the glow are made
at a quarter of the image size and scaled up (they are smooth), so night and weather cost a few
whole-image passes. Hand-written because no imaging library does "a dash cam at night in the rain"
on a label-exact render; each effect is a simple physical approximation, not a full light model.
"""

from __future__ import annotations

import cv2
import numpy as np

from perception.synthetic.render.projection import View, roadside_s
from perception.synthetic.render.raster import CLASS_ID
from perception.synthetic.world import Scene

#: Downscale of the smooth light maps (glow, headlight and lamp pools, reflections).
LIGHT_SCALE = 4


def ground_distance_rows(view: View, height: int) -> np.ndarray:
    """Distance (m) of the flat ground seen in each image row; rows at or above the horizon get a
    stand-in distance (an object whose top is there stands, on average, about as far as the ground
    seen a third as far below the horizon), so fog thins towards the top of tall near things."""
    rows = np.arange(height, dtype=np.float32) + 0.5
    below = rows - np.float32(view.vh)
    mirrored = np.where(below > 0, below, -0.35 * below)
    return np.minimum(view.f * view.h / np.maximum(mirrored, 1e-3), 400.0).astype(np.float32)


def _light_map(scene: Scene, view: View, height: int, width: int) -> np.ndarray:
    """Extra light (0..~2, relative to the ambient) from the ego headlights and street lamps, H/4 x W/4."""
    h, w = max(1, height // LIGHT_SCALE), max(1, width // LIGHT_SCALE)
    light = np.zeros((h, w), np.float32)
    light_cfg = scene.lighting
    if light_cfg.headlights:
        rows = (np.arange(h, dtype=np.float32) + 0.5) * LIGHT_SCALE
        below = rows - np.float32(view.vh)
        d = np.where(below > 1, view.f * view.h / np.maximum(below, 1e-3), 1e4).astype(np.float32)
        cols = (np.arange(w, dtype=np.float32) + 0.5) * LIGHT_SCALE - np.float32(view.cx)
        x = cols[None, :] * (d[:, None] / np.float32(view.f))  # metres sideways at that distance
        spread = 1.3 + 0.18 * d[:, None]
        reach = np.minimum(1.0, (10.0 / np.maximum(d, 1.0)) ** 1.8)[:, None]
        light += 1.5 * reach * np.exp(-((x / spread) ** 2))
    for p in scene.poles:
        if p.kind != "lamp" or not 2.0 < p.d_m < 90.0 or light_cfg.time_of_day not in ("night", "dusk"):
            continue
        s = roadside_s(scene, p.side, p.offset_m) - p.side * 1.8
        u, v = view.project(s, p.d_m)
        ax = 5.5 * view.f / p.d_m / LIGHT_SCALE
        ay = max(1.0, 5.5 * view.f * view.h / (p.d_m * p.d_m) / LIGHT_SCALE)
        if -ax < u / LIGHT_SCALE < w + ax and v / LIGHT_SCALE < h + ay:
            cv2.ellipse(light, (int(u / LIGHT_SCALE), int(v / LIGHT_SCALE)), (int(ax) + 1, int(ay) + 1), 0, 0, 360, 0.7, -1)
    if light.any():
        light = cv2.GaussianBlur(light, (0, 0), max(1.0, w / 60))
    return light


def apply_atmosphere(image: np.ndarray, label: np.ndarray, lamps: np.ndarray, scene: Scene, view: View,
                     rng: np.random.Generator) -> np.ndarray:
    """The clean ``image`` under the scene's lights and weather. ``lamps`` is 255 where a light
    source (lamp, headlight, lit window) was drawn; ``rng`` places the rain streaks."""
    light = scene.lighting
    height, width = label.shape
    night = light.time_of_day in ("night", "dusk")
    small = (max(1, width // LIGHT_SCALE), max(1, height // LIGHT_SCALE))
    road = cv2.inRange(label, CLASS_ID["road"], CLASS_ID["lane_marking"])  # road and paint are ids 0, 1
    if night:
        pool = _light_map(scene, view, height, width)
        if pool.any():
            # Gain in 1/64 steps as uint8, so the full-size work is one saturating uint8 multiply.
            gain = cv2.resize(np.clip((1.0 + pool) * 64.0, 0, 255).astype(np.uint8), (width, height),
                              interpolation=cv2.INTER_LINEAR)
            gain[label == CLASS_ID["sky"]] = 64
            image = cv2.multiply(image, cv2.merge((gain, gain, gain)), scale=1.0 / 64.0)
    glow = None
    if night and light.bloom > 0 and lamps.any():
        # Glow: the bright lamps, blurred wide at a quarter of the size.
        source = cv2.resize(cv2.bitwise_and(image, image, mask=lamps), small, interpolation=cv2.INTER_AREA)
        glow = cv2.GaussianBlur(source, (0, 0), max(1.0, small[0] / 90))
        glow = cv2.addWeighted(glow, 1.5 * light.bloom, glow, 0.0, 0.0)
        image = cv2.add(image, cv2.resize(glow, (width, height), interpolation=cv2.INTER_LINEAR))
    if light.wet > 0 and road.any():
        image = _wet_road(image, road, glow, scene, view)
    if light.fog_density > 0:
        image = _fog(image, label, scene, view)
    if light.rain > 0:
        image = _rain(image, scene, rng)
    return image


def _wet_road(image: np.ndarray, road: np.ndarray, glow: np.ndarray | None, scene: Scene, view: View) -> np.ndarray:
    """Darker asphalt with a sky sheen growing towards the horizon and lamps mirrored as long streaks."""
    light = scene.lighting
    height, width = road.shape
    r0 = int(np.argmax(road.any(1)))  # first row with road: the work is on the band below it
    rows = np.arange(r0, height, dtype=np.float32)
    # Fresnel-like: the road mirrors more of the sky at grazing angles (far away, near the horizon).
    near = np.clip((rows - view.vh) / max(height - view.vh, 1.0), 0.0, 1.0)
    sheen = (light.wet * 0.45 * (1.0 - near) ** 2).astype(np.float32)[:, None, None]
    sky = np.asarray(light.sky_horizon_bgr, np.float32) * light.gain
    wet = image[r0:].astype(np.float32)
    wet *= (1.0 - 0.35 * light.wet) * (1.0 - sheen)
    wet += sky * sheen
    if glow is not None:
        # Reflections of lamps: the glow smeared downwards (a one-sided vertical kernel).
        length = max(3, glow.shape[0] // 4) | 1
        kernel = np.zeros((length, 1), np.float32)
        kernel[length // 2 :] = 1.0 / (length - length // 2)
        # Anchored at the kernel's last row: each pixel sums the glow above it, a streak downwards.
        streaks = cv2.filter2D(glow, -1, kernel, anchor=(0, length - 1), borderType=cv2.BORDER_CONSTANT)
        wet += cv2.resize(streaks, (width, height))[r0:].astype(np.float32) * np.float32(1.5 * light.wet)
    out = image.copy()
    np.copyto(out[r0:], np.clip(wet, 0, 255).astype(np.uint8), where=(road[r0:] > 0)[..., None])
    return out


def pixel_distance(label: np.ndarray, view: View) -> np.ndarray:
    """Approximate distance (m) of every pixel: ground pixels (road, paint, sidewalk, and grass
    below the horizon) lie at their row's ground distance; a pixel of anything standing on the
    ground (a car, a house, a tree) takes the distance of the nearest ground pixel below it in its
    column, which is where it stands, but no further than its row's stand-in distance
    (``ground_distance_rows``). Columns with no ground below are far away; the sky counts as
    distance 0 (the scene's sky colours already are the fog's, and haze leaves the sky alone)."""
    height, width = label.shape
    d_rows = ground_distance_rows(view, height)
    rows = np.arange(height, dtype=np.int32)[:, None]
    ground = (label <= CLASS_ID["sidewalk"]) | ((label == CLASS_ID["vegetation"]) & (rows > view.vh))
    below = np.where(ground, rows, np.int32(height))
    base = np.minimum.accumulate(below[::-1], axis=0)[::-1]  # nearest ground row at or below
    d_table = np.append(d_rows, np.float32(400.0))
    # Capped by the row's stand-in distance: what hangs over a gap of sky (a tree crown, a lamp arm)
    # would otherwise take the distance of the far ground seen through the gap.
    distance = np.minimum(d_table[base], d_rows[:, None])
    distance[label == CLASS_ID["sky"]] = 0.0  # the sky is drawn in the fog's colours already
    return distance


def _fog(image: np.ndarray, label: np.ndarray, scene: Scene, view: View) -> np.ndarray:
    """Blend towards the fog colour by distance (Beer-Lambert): t = 1 - exp(-density * distance)."""
    light = scene.lighting
    clear = np.exp(-np.float32(light.fog_density) * pixel_distance(label, view))  # transmittance
    fog_bgr = np.clip(np.asarray(light.sky_horizon_bgr, np.float32) * light.gain, 0, 255).astype(np.uint8)
    # One weighted blend per pixel (cv2.blendLinear) instead of float copies of the whole image.
    return cv2.blendLinear(image, np.full_like(image, fog_bgr), clear, np.float32(1.0) - clear)


def rain_streaks(rain: float, height: int, width: int, rng: np.random.Generator) -> np.ndarray | None:
    """The end points (N x 2 x 2, int32) of the rain streaks of one frame, drawn from ``rng``; None
    when there are none. Every draw a frame's rain makes is here: ``Renderer.skip`` makes them
    without drawing (a view that skips to a node's frame)."""
    n = int(rain * 400 * height * width / (360 * 640))
    if not n:
        return None
    x = rng.uniform(0, width, n)
    y = rng.uniform(0, height, n)
    length = rng.uniform(0.02, 0.07, n) * height
    slant = rng.uniform(-0.25, 0.25)
    return np.stack([x, y, x + slant * length, y + length], 1).astype(np.int32).reshape(-1, 2, 2)


def _rain(image: np.ndarray, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Slanted bright streaks of falling rain and a slight loss of contrast."""
    light = scene.lighting
    height, width = image.shape[:2]
    streaks = np.zeros((height, width), np.uint8)
    pts = rain_streaks(light.rain, height, width, rng)
    if pts is not None:
        cv2.polylines(streaks, list(pts), False, 255, 1, cv2.LINE_AA)
    veil = np.clip(np.asarray(light.sky_horizon_bgr, np.float32) * light.gain, 0, 255)
    out = cv2.addWeighted(image, 1.0 - 0.15 * light.rain, np.full_like(image, veil.astype(np.uint8)), 0.15 * light.rain, 0.0)
    streak_bgr = cv2.merge((streaks, streaks, streaks))
    return cv2.addWeighted(out, 1.0, streak_bgr, 0.22 * light.rain, 0.0)
