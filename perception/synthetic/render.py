"""Draws a ``Scene`` into a BGR image and its per-pixel class labels, fast and exactly consistent.

How labels stay exact: everything is drawn once, into a single uint8 *material* map (each material
is a colour plus a class id), with ``cv2.fillPoly`` / ``cv2.circle`` and no anti-aliasing, painting
far things first so that nearer ones cover them. The label map and the clean image are then two
table look-ups of that same map (``cv2.LUT``), so the class at every pixel is by construction the
class of the thing whose colour is drawn there. Sun shadows on the ground map a ground material to
its darker twin (same class). Texture, sensor noise and blur are applied to the image only, after
the labels are final.

Speed: the frame is a few dozen polygon fills into preallocated arrays plus a handful of whole-
image OpenCV passes; noise and texture come from tables computed once per image size.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from perception.synthetic.classes import SYNTHETIC_CLASSES
from perception.synthetic.world import Building, Person, Pole, Scene, Tree, Vehicle

C = {name: SYNTHETIC_CLASSES.id_of(name) for name in SYNTHETIC_CLASSES.names}

#: Material ids 0..31 are ground materials; id + 32 is the same ground in shadow.
GROUND_SLOTS = 32
SHADOW_BIT = 32
#: Ids 64..255 are everything else (sky, buildings, vehicles, people, ...).
OBJECT_BASE = 64
#: Sky gradient resolution (bands of slightly different colour).
SKY_BANDS = 20
#: Ground surfaces are drawn out to this distance (m); beyond, the horizon fill shows.
GROUND_FAR_M = 300.0
#: Objects nearer than this (m) are not drawn (they would be behind or inside the lens).
NEAR_CLIP_M = 1.0
#: Sub-pixel precision of the polygon fills (coordinates in 1/4 pixel).
_SHIFT = 2
_SCALE = float(1 << _SHIFT)
#: Standard deviation (grey levels) of the stored noise and texture tables.
_TABLE_SIGMA = 20.0


class Palette:
    """Materials of one frame: colour, class and whether it emits light (lamps, lit windows, sky)."""

    def __init__(self) -> None:
        self.bgr = np.zeros((256, 3), np.float32)
        self.class_id = np.zeros(256, np.uint8)
        self.emissive = np.zeros(256, bool)
        self._n_ground = 0
        self._n_object = OBJECT_BASE
        self._ids: dict[tuple, int] = {}
        self._first_of_class: dict[int, int] = {}

    def ground(self, bgr, class_id: int) -> int:
        return self._add(bgr, class_id, False, ground=True)

    def object(self, bgr, class_id: int, emissive: bool = False) -> int:
        return self._add(bgr, class_id, emissive, ground=False)

    def _add(self, bgr, class_id: int, emissive: bool, *, ground: bool) -> int:
        key = (int(bgr[0]), int(bgr[1]), int(bgr[2]), class_id, emissive, ground)
        mid = self._ids.get(key)
        if mid is not None:
            return mid
        if ground:
            if self._n_ground >= GROUND_SLOTS:
                raise RuntimeError("synthetic renderer: more than 32 ground materials in one frame")
            mid = self._n_ground
            self._n_ground += 1
        elif self._n_object >= 256:
            # Palette full: reuse a material of the same class (colour is approximate, label exact).
            return self._first_of_class[class_id]
        else:
            mid = self._n_object
            self._n_object += 1
        self.bgr[mid] = key[:3]
        self.class_id[mid] = class_id
        self.emissive[mid] = emissive
        self._ids[key] = mid
        self._first_of_class.setdefault(class_id, mid)
        return mid

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


@functools.lru_cache(maxsize=4)
def _noise_table(height: int, width: int) -> np.ndarray:
    """Gaussian sensor noise, 2H x 2W x 3, uint8 centred on 128 (a random window is used per frame)."""
    rng = np.random.default_rng(0x5EED)
    noise = rng.normal(128.0, _TABLE_SIGMA, size=(2 * height, 2 * width, 3))
    return np.clip(noise, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def _texture_table(height: int, width: int) -> np.ndarray:
    """Blotchy low- and mid-frequency brightness variation (grime, wear), 2H x 2W x 3 uint8 around 128."""
    rng = np.random.default_rng(0x7E47)
    field = np.zeros((2 * height, 2 * width), np.float32)
    for cell, weight in ((48, 1.0), (12, 0.6), (3, 0.35)):
        small = rng.normal(0, 1, size=(2 * height // cell + 2, 2 * width // cell + 2)).astype(np.float32)
        field += weight * cv2.resize(small, (2 * width, 2 * height), interpolation=cv2.INTER_CUBIC)
    field *= _TABLE_SIGMA / max(float(field.std()), 1e-6)
    grey = np.clip(field + 128.0, 0, 255).astype(np.uint8)
    return cv2.merge((grey, grey, grey))


def _fill(mat: np.ndarray, polys, mid: int) -> None:
    """Fill float pixel polygons (one (N,2) array, an (n,k,2) array or a list of (N,2) arrays) with ``mid``.

    Coordinates stay bounded (nothing nearer than 0.5 m is projected), so no clipping is needed
    before the fixed-point conversion.
    """
    if isinstance(polys, np.ndarray):
        pts = (polys * _SCALE).astype(np.int32)
        if pts.ndim == 2:
            pts = pts[None]
    else:
        pts = [(p * _SCALE).astype(np.int32) for p in polys]
    if len(pts):
        cv2.fillPoly(mat, pts, int(mid), cv2.LINE_8, _SHIFT)


def _rects(u_c: float, v_g: float, scale: float, boxes: np.ndarray) -> np.ndarray:
    """Image quads (n,4,2) for boxes ``[x0, x1, y0, y1]`` (metres, in a plane facing the camera)."""
    x = u_c + boxes[:, :2] * scale
    y = v_g - boxes[:, 2:] * scale
    out = np.empty((len(boxes), 4, 2))
    out[:, 0, 0] = out[:, 3, 0] = x[:, 0]
    out[:, 1, 0] = out[:, 2, 0] = x[:, 1]
    out[:, 0, 1] = out[:, 1, 1] = y[:, 0]
    out[:, 2, 1] = out[:, 3, 1] = y[:, 1]
    return out


class _View:
    """Projection of road coordinates (s, d, y) to pixels for one frame."""

    def __init__(self, scene: Scene) -> None:
        cam, road = scene.camera, scene.road
        self.f = cam.focal_px
        self.cx = cam.cx_px
        self.vh = cam.horizon_v_px
        self.h = cam.mount_height_m
        self.s_ego = road.ego_s
        self.a1, self.a2, self.a3 = road.heading, road.curvature / 2, road.curvature_rate / 6
        self.g2 = road.grade_curvature / 2
        bottom = cam.height_px - self.vh
        d_near = max(0.5, 0.7 * self.f * self.h / max(bottom, 1.0))
        self.ground_d = np.geomspace(d_near, GROUND_FAR_M, 44)
        self.d_near = d_near

    def lateral(self, s, d):
        return s - self.s_ego + d * (self.a1 + d * (self.a2 + d * self.a3))

    def project(self, s, d, y=0.0):
        inv = self.f / d
        u = self.cx + self.lateral(s, d) * inv
        v = self.vh + (self.h - self.g2 * d * d - y) * inv
        return u, v

    def anchor(self, s: float, d: float) -> tuple[float, float, float]:
        """(u of s, v of the ground, pixels per metre) at distance d, for things facing the camera."""
        scale = self.f / d
        return (
            self.cx + self.lateral(s, d) * scale,
            self.vh + (self.h - self.g2 * d * d) * scale,
            scale,
        )

    def strip(self, s0, s1, d: np.ndarray, y0=0.0, y1=0.0) -> np.ndarray:
        """Polygon of the surface between lateral positions s0 and s1 (or heights y0, y1) over distances d."""
        u0, v0 = self.project(s0, d, y0)
        u1, v1 = self.project(s1, d, y1)
        n = len(d)
        out = np.empty((2 * n, 2))
        out[:n, 0] = u0
        out[:n, 1] = v0
        out[n:, 0] = u1[::-1]
        out[n:, 1] = v1[::-1]
        return out

    def ground_quads(self, s0, s1, d0, d1) -> np.ndarray:
        """(n,4,2) quads of ground rectangles s0..s1 x d0..d1 (arrays of equal length)."""
        d0 = np.maximum(d0, 0.5)
        d1 = np.maximum(d1, 0.5)
        ua, va = self.project(s0, d0)
        ub, _ = self.project(s1, d0)
        uc, vc = self.project(s1, d1)
        ud, _ = self.project(s0, d1)
        out = np.empty((len(d0), 4, 2))
        out[:, 0, 0], out[:, 1, 0], out[:, 2, 0], out[:, 3, 0] = ua, ub, uc, ud
        out[:, 0, 1] = out[:, 1, 1] = va
        out[:, 2, 1] = out[:, 3, 1] = vc
        return out


class Renderer:
    """Renders scenes of one image size; keeps its buffers and noise tables between frames."""

    def __init__(self, height: int, width: int) -> None:
        self.height = height
        self.width = width
        self.mat = np.empty((height, width), np.uint8)
        self.shade = np.zeros((height, width), np.uint8)
        self.paint = np.empty((height, width), np.uint8)
        self._noise = _noise_table(height, width)
        self._texture = _texture_table(height, width)

    # ----------------------------------------------------------------------------------------
    def render(self, scene: Scene, rng: np.random.Generator, *, noise: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``scene``: (BGR uint8 H x W x 3 image, uint8 H x W class ids).

        ``rng`` picks the sensor-noise window. ``noise=False`` returns the clean render (no
        texture, sensor noise or blur): the colours that the labels describe.
        """
        view = _View(scene)
        pal = Palette()
        mat = self.mat
        self._draw_sky(scene, view, pal)
        self._draw_ground(scene, view, pal)
        self._draw_shadows(scene, view)
        self._draw_objects(scene, view, pal)
        colours, classes = pal.tables(scene)
        label = cv2.LUT(mat, classes)
        image = cv2.LUT(cv2.merge((mat, mat, mat)), colours)
        if noise:
            image = self._camera_effects(image, scene, rng)
        return image, label

    def _camera_effects(self, image: np.ndarray, scene: Scene, rng: np.random.Generator) -> np.ndarray:
        light = scene.lighting
        h, w = self.height, self.width
        # The texture window belongs to the scene (steady over a drive); the noise window is new each frame.
        oy, ox = int(light.texture_offset[0] * (h - 1)), int(light.texture_offset[1] * (w - 1))
        # Surface grime is reflected light: it fades with the exposure (no blotches on a night sky).
        beta = 7.0 * light.texture_strength * min(1.0, light.ambient * light.gain) / _TABLE_SIGMA
        image = cv2.addWeighted(image, 1.0, self._texture[oy : oy + h, ox : ox + w], beta, -128.0 * beta)
        # Blur is specified for a 640-pixel-wide sensor; smaller images get proportionally less.
        blur_px = light.blur_sigma * w / 640.0
        if blur_px > 0.3:
            image = cv2.GaussianBlur(image, (0, 0), blur_px)
        oy, ox = int(rng.integers(h)), int(rng.integers(w))
        beta = light.noise_sigma / _TABLE_SIGMA
        return cv2.addWeighted(image, 1.0, self._noise[oy : oy + h, ox : ox + w], beta, -128.0 * beta)

    # ----------------------------------------------------------------------------------------
    def _draw_sky(self, scene: Scene, view: _View, pal: Palette) -> None:
        light = scene.lighting
        mat = self.mat
        vh = int(np.clip(math.ceil(view.vh), 0, self.height))
        zen = np.asarray(light.sky_zenith_bgr, np.float32)
        hor = np.asarray(light.sky_horizon_bgr, np.float32)
        bands = np.empty(SKY_BANDS, np.uint8)
        for i in range(SKY_BANDS):
            t = (i / (SKY_BANDS - 1)) ** 2.2  # the sky brightens quickly just above the horizon
            bands[i] = pal.object(zen + (hor - zen) * t, C["sky"], emissive=True)
        if vh > 0:
            rows = (np.arange(vh) * SKY_BANDS // vh).astype(np.intp)
            mat[:vh] = bands[rows][:, None]
            # Clouds: a few overlapping puffs each, lit from above (brighter tops).
            white = np.float32(max(float(hor.max()), 150.0))
            top = pal.object(np.minimum(0.55 * white + 0.45 * hor + 25, 255), C["sky"], emissive=True)
            base = pal.object(0.5 * white + 0.3 * hor + 0.2 * zen, C["sky"], emissive=True)
            for u, v, rx, ry in light.clouds:
                cu, cv_, ax, ay = u * self.width, v * vh, rx * self.width, ry * self.height
                for du, dv, scale, mid in ((0.0, 0.15, 1.0, base), (-0.45, -0.1, 0.55, top), (0.3, -0.25, 0.6, top)):
                    centre = (int((cu + du * ax) * _SCALE), int((cv_ + dv * ay * 2) * _SCALE))
                    axes = (max(1, int(scale * ax * _SCALE)), max(1, int(scale * ay * (1.6 if scale < 1 else 1) * _SCALE)))
                    cv2.ellipse(mat, centre, axes, 0, 0, 360, mid, -1, cv2.LINE_8, _SHIFT)
        grass = pal.ground(scene.road.grass_bgr, C["vegetation"])
        mat[vh:] = grass
        # Distant skyline and tree line, standing on the horizon.
        base = view.vh + 1.0
        hor_mix = (hor + 2 * np.asarray((120, 120, 125), np.float32)) / 3
        if scene.skyline:
            pts = [(-1.0, base)]
            for u0, u1, hgt in scene.skyline:
                top = base - hgt * self.height
                pts += [(u0 * self.width, base), (u0 * self.width, top), (u1 * self.width, top), (u1 * self.width, base)]
            pts.append((self.width + 1.0, base))
            _fill(mat, np.asarray(pts), pal.object(hor_mix, C["building"]))
        xs = np.linspace(-1.0, self.width + 1.0, len(scene.treeline))
        tree_top = base - scene.treeline * self.height
        poly = np.concatenate([np.stack([xs, tree_top], 1), [[self.width + 1.0, base], [-1.0, base]]])
        tree_bgr = (np.asarray(scene.road.grass_bgr, np.float32) * 0.6 + hor * 0.25).clip(0, 255)
        _fill(mat, poly, pal.object(tree_bgr, C["vegetation"]))

    # ----------------------------------------------------------------------------------------
    def _draw_ground(self, scene: Scene, view: _View, pal: Palette) -> None:
        road = scene.road
        mat = self.mat
        d = view.ground_d
        width = road.width_m
        grass = pal.ground(road.grass_bgr, C["vegetation"])
        # A wide terrain strip first: on a hill it hides the sky behind the crest.
        _fill(mat, view.strip(-300.0, width + 300.0, d), grass)
        # Asphalt and repair patches get adjacent ids: the paint mask below tests that id range.
        asphalt = pal.ground(road.asphalt_bgr, C["road"])
        patch = pal.ground(np.asarray(road.asphalt_bgr) * 0.8, C["road"])
        _fill(mat, view.strip(0.0, width, d), asphalt)
        if road.patches:
            p = np.asarray(road.patches)
            p = p[p[:, 3] > view.d_near]
            _fill(mat, view.ground_quads(p[:, 0], p[:, 1], p[:, 2], p[:, 3]), patch)
        kerb_w = 0.25
        for side, sidewalk in ((-1, road.sidewalk_left_m), (1, road.sidewalk_right_m)):
            edge = 0.0 if side < 0 else width
            if sidewalk > 0:
                far = edge + side * sidewalk
                _fill(mat, view.strip(edge, far, d), pal.ground(road.sidewalk_bgr, C["sidewalk"]))
                kerb_bgr = np.minimum(np.asarray(road.sidewalk_bgr) * 1.15 + 10, 255)
                kerb = pal.ground(kerb_bgr, C["sidewalk"])
                _fill(mat, view.strip(edge, edge + side * kerb_w, d), kerb)
                # The kerb's vertical face, seen from the road.
                face = pal.ground(np.asarray(road.sidewalk_bgr) * 0.7, C["sidewalk"])
                _fill(mat, view.strip(edge, edge, d, 0.0, road.kerb_height_m), face)
        self._draw_paint(scene, view, pal, road_ids=(asphalt, patch))

    def _draw_paint(self, scene: Scene, view: _View, pal: Palette, *, road_ids: tuple[int, int]) -> None:
        """Lane lines, dashes and crosswalks, applied only where asphalt is visible.

        OpenCV fills include the polygon outline, so a fill reaches up to a pixel past its edge;
        painting through a mask of the asphalt pixels keeps every lane_marking label on the road.
        """
        road = scene.road
        mat = self.paint
        mat.fill(255)
        white = pal.ground(np.full(3, 235.0) * road.paint_fade, C["lane_marking"])
        yellow = pal.ground(np.asarray((40.0, 185.0, 225.0)) * road.paint_fade, C["lane_marking"])
        half = road.paint_width_m / 2
        paint_d = view.ground_d[view.ground_d <= 200.0]
        dashes: dict[int, list[np.ndarray]] = {white: [], yellow: []}
        for b, (style, colour) in enumerate(road.boundary_styles):
            if style == "none":
                continue
            mid = white if colour == "white" else yellow
            s_b = b * road.lane_width_m
            # Edge lines sit just inside the road.
            if b == 0:
                s_b += half + 0.15
            elif b == road.n_lanes:
                s_b -= half + 0.15
            centres = (s_b - 1.5 * half, s_b + 1.5 * half) if style == "double" else (s_b,)
            for s in centres:
                if style == "dashed":
                    start = road.dash_phase_m - road.dash_period_m + road.dash_period_m * np.arange(
                        int(150.0 / road.dash_period_m) + 2
                    )
                    d0 = np.maximum(start, view.d_near)
                    d1 = start + road.dash_length_m
                    keep = d1 > d0
                    n = int(keep.sum())
                    if n:
                        dashes[mid].append(
                            view.ground_quads(np.full(n, s - half), np.full(n, s + half), d0[keep], d1[keep])
                        )
                else:
                    _fill(mat, view.strip(s - half, s + half, paint_d), mid)
        for mid, quads in dashes.items():
            if quads:
                _fill(mat, np.concatenate(quads), mid)
        if road.crosswalk_d_m is not None and road.crosswalk_d_m + 4.0 > view.d_near:
            d0 = road.crosswalk_d_m
            s0 = np.arange(0.4, road.width_m - 0.5, 1.0)
            n = len(s0)
            bars = view.ground_quads(s0, s0 + 0.5, np.full(n, d0), np.full(n, d0 + 3.5))
            stop_from = road.oncoming_lanes * road.lane_width_m + 0.2
            stop = view.ground_quads(
                np.array([stop_from]), np.array([road.width_m - 0.2]), np.array([d0 - 2.0]), np.array([d0 - 1.5])
            )
            _fill(mat, np.concatenate([bars, stop]), white)
        on_road = cv2.inRange(self.mat, road_ids[0], road_ids[1])
        cv2.bitwise_and(on_road, cv2.compare(mat, 255, cv2.CMP_NE), dst=on_road)
        cv2.copyTo(mat, on_road, self.mat)

    # ----------------------------------------------------------------------------------------
    def _draw_shadows(self, scene: Scene, view: _View) -> None:
        """Mark shadowed ground: contact shadows always, sun shadows when the light is hard."""
        road, light = scene.road, scene.lighting
        rects: list[tuple[float, float, float, float]] = []  # s0, s1, d0, d1 on the ground
        for v in scene.vehicles:
            if NEAR_CLIP_M < v.d_m < 150:
                s = road.lane_centre(v.lane) + v.lateral_m
                rects.append((s - v.width_m / 2 - 0.1, s + v.width_m / 2 + 0.1, v.d_m - 0.25, v.d_m + v.length_m))
        for p in scene.people:
            if NEAR_CLIP_M < p.d_m < 80:
                rects.append((p.s_m - 0.3, p.s_m + 0.3, p.d_m - 0.2, p.d_m + 0.3))
        if light.shadow_factor < 0.95:
            sun, k = light.sun_side, light.shadow_length
            for b in scene.buildings:
                if b.side == -sun and b.d0_m + b.length_m > view.d_near and b.d0_m < 150:
                    s_f = self._facade_s(scene, b)
                    far = s_f + sun * min(b.height_m * k, 25.0)
                    rects.append((min(s_f, far), max(s_f, far), b.d0_m + 0.5 * b.height_m * k, b.d0_m + b.length_m))
            for t in scene.trees:
                if view.d_near < t.d_m + 3 and t.d_m < 100:
                    s = self._side_s(scene, t.side, t.offset_m) + sun * (t.trunk_height_m + t.crown_radius_m) * k
                    r = t.crown_radius_m
                    rects.append((s - r, s + r, t.d_m - 0.6 * r, t.d_m + 0.6 * r))
            for p in scene.poles:
                if view.d_near < p.d_m < 100:
                    s = self._side_s(scene, p.side, p.offset_m)
                    far = s + sun * p.height_m * k
                    rects.append((min(s, far), max(s, far), p.d_m, p.d_m + 0.2))
        if not rects:
            return
        r = np.asarray(rects)
        pts = (view.ground_quads(r[:, 0], r[:, 1], r[:, 2], r[:, 3]) * _SCALE).astype(np.int32)
        shade = self.shade
        shade.fill(0)
        # One fill per quad: a single call with overlapping polygons would cancel the overlaps
        # (OpenCV fills by the even-odd rule).
        for i in range(len(pts)):
            cv2.fillPoly(shade, pts[i : i + 1], SHADOW_BIT, cv2.LINE_8, _SHIFT)
        # Only ground materials (< 32) may turn into their shadowed twin.
        ground = cv2.compare(self.mat, GROUND_SLOTS, cv2.CMP_LT)
        cv2.bitwise_and(shade, ground, dst=shade)
        cv2.bitwise_or(self.mat, shade, dst=self.mat)

    # ----------------------------------------------------------------------------------------
    @staticmethod
    def _side_s(scene: Scene, side: int, offset: float) -> float:
        """Lateral position ``offset`` metres outwards from the road edge on ``side``."""
        return -offset if side < 0 else scene.road.width_m + offset

    @staticmethod
    def _facade_s(scene: Scene, b: Building) -> float:
        road = scene.road
        sidewalk = road.sidewalk_left_m if b.side < 0 else road.sidewalk_right_m
        if sidewalk <= 0:
            sidewalk = 2.0
        return Renderer._side_s(scene, b.side, sidewalk + b.setback_m)

    def _draw_objects(self, scene: Scene, view: _View, pal: Palette) -> None:
        # Painter's order: the furthest first, so nearer things cover it and the labels follow.
        # A building or hedge counts at its far end: whatever stands beside its facade (trees,
        # poles, people on the sidewalk) is in front of it, whatever lies beyond it (e.g. traffic
        # round a bend) is behind it.
        items: list[tuple[float, object]] = [
            (b.d0_m + b.length_m, b) for b in scene.buildings if b.d0_m + b.length_m > NEAR_CLIP_M and b.d0_m < 220
        ]
        for group in (scene.trees, scene.poles, scene.vehicles, scene.people):
            items += [(o.d_near, o) for o in group if NEAR_CLIP_M < o.d_near < 170]
        items.sort(key=lambda item: -item[0])
        for _, obj in items:
            if isinstance(obj, Building):
                self._draw_building(scene, view, pal, obj)
            elif isinstance(obj, Vehicle):
                self._draw_vehicle(scene, view, pal, obj)
            elif isinstance(obj, Person):
                if obj.cyclist:
                    self._draw_cyclist(view, pal, obj)
                else:
                    self._draw_pedestrian(view, pal, obj)
            elif isinstance(obj, Tree):
                self._draw_tree(scene, view, pal, obj)
            else:
                self._draw_pole(scene, view, pal, obj)

    def _draw_building(self, scene: Scene, view: _View, pal: Palette, b: Building) -> None:
        mat = self.mat
        s_f = self._facade_s(scene, b)
        d1 = b.d0_m + b.length_m
        d = np.linspace(max(b.d0_m, NEAR_CLIP_M), d1, 6 if not b.hedge else 12)
        top = b.height_m + (0.15 * np.sin(d * 2.3) if b.hedge else 0.0)
        # Points of a facade share u at every height; only v moves up by height * f / d.
        u_f, v_f = view.project(s_f, d)
        v_top = v_f - top * (view.f / d)
        if u_f.max() < 0 or u_f.min() >= self.width or v_top.min() >= self.height:
            return  # off screen: nothing of it (nor its end face further out) is visible
        cls = C["vegetation"] if b.hedge else C["building"]
        facade_bgr = np.asarray(b.facade_bgr, np.float32)
        # Near end face (turned towards the camera), then the facade along the road.
        if b.d0_m >= NEAR_CLIP_M:
            u_e, v_e = view.project(np.array([s_f, s_f + b.side * b.depth_m]), b.d0_m)
            v_e_top = v_e - b.height_m * view.f / b.d0_m
            end = np.array([[u_e[0], v_e], [u_e[1], v_e], [u_e[1], v_e_top], [u_e[0], v_e_top]])
            _fill(mat, end, pal.object(facade_bgr * (0.7 if b.side * scene.lighting.sun_side < 0 else 0.85), cls))
        n = len(d)
        poly = np.empty((2 * n, 2))
        poly[:n, 0] = u_f
        poly[n:, 0] = u_f[::-1]
        poly[:n, 1] = v_f
        poly[n:, 1] = v_top[::-1]
        _fill(mat, poly, pal.object(facade_bgr, cls))
        # Windows, unless too small to see: one fill for all (they never overlap).
        if b.hedge or b.window_spacing_m * view.f / max(b.d0_m, NEAR_CLIP_M) < 3.0:
            return
        n_floors = int((b.height_m - 1.5) / b.floor_m)
        n_cols = int(b.length_m / b.window_spacing_m)
        if n_floors < 1 or n_cols < 1:
            return
        w0 = b.d0_m + 0.6 + np.arange(n_cols) * b.window_spacing_m
        w1 = w0 + 0.55 * b.window_spacing_m
        keep = (w0 > NEAR_CLIP_M) & (w1 < d1 - 0.3)
        if not keep.any():
            return
        w0, w1 = w0[keep], w1[keep]
        y0 = 1.0 + (np.arange(n_floors) + 0.3) * b.floor_m  # window sills, one per floor
        y1 = y0 + 0.5 * b.floor_m
        ua, va = view.project(s_f, w0)
        ub, vb = view.project(s_f, w1)
        ka, kb = view.f / w0, view.f / w1
        quads = np.empty((n_floors, len(w0), 4, 2))
        quads[:, :, 0, 0] = quads[:, :, 3, 0] = ua
        quads[:, :, 1, 0] = quads[:, :, 2, 0] = ub
        quads[:, :, 0, 1] = va - y0[:, None] * ka
        quads[:, :, 1, 1] = vb - y0[:, None] * kb
        quads[:, :, 2, 1] = vb - y1[:, None] * kb
        quads[:, :, 3, 1] = va - y1[:, None] * ka
        # About half the houses have their lights on at night (floor height is a stable per-building draw).
        lit = scene.lighting.time_of_day == "night" and (b.floor_m * 10) % 1 < 0.5
        window_bgr = (80, 190, 250) if lit else b.window_bgr
        _fill(mat, quads.reshape(-1, 4, 2), pal.object(window_bgr, C["building"], emissive=lit))

    def _draw_tree(self, scene: Scene, view: _View, pal: Palette, t: Tree) -> None:
        mat = self.mat
        u, vg, k = view.anchor(self._side_s(scene, t.side, t.offset_m), t.d_m)
        r = t.crown_radius_m
        trunk = pal.object((40, 62, 85), C["vegetation"])
        _fill(mat, _rects(u, vg, k, np.array([[-0.15, 0.15, 0.0, t.trunk_height_m + 0.5 * r]])), trunk)
        dark = pal.object(t.crown_bgr, C["vegetation"])
        light_bgr = np.minimum(np.asarray(t.crown_bgr, np.float32) * 1.2 + 8, 255)
        light = pal.object(light_bgr, C["vegetation"])
        if t.conifer:
            for i, frac in enumerate((0.0, 0.35, 0.65)):
                base = t.trunk_height_m * 0.6 + frac * 2.2 * r
                half = r * (1.0 - 0.55 * frac)
                tri = np.array([[u - half * k, vg - base * k], [u + half * k, vg - base * k],
                                [u, vg - (base + 1.4 * r) * k]])
                _fill(mat, tri, dark if i % 2 == 0 else light)
            return
        centre_y = t.trunk_height_m + r
        for i, (dx, dy, rad) in enumerate(t.blobs):
            cu = u + dx * r * k
            cv = vg - (centre_y + dy * r) * k
            radius = max(1, int(rad * r * k * _SCALE))
            cv2.circle(mat, (int(cu * _SCALE), int(cv * _SCALE)), radius, dark if i % 2 else light, -1, cv2.LINE_8, _SHIFT)

    def _draw_pole(self, scene: Scene, view: _View, pal: Palette, p: Pole) -> None:
        mat = self.mat
        s = self._side_s(scene, p.side, p.offset_m)
        u, vg, k = view.anchor(s, p.d_m)
        pole = pal.object((115, 118, 120) if p.kind != "plain" else (60, 75, 70), C["pole"])
        half = 0.06 if p.kind == "sign" else 0.1
        _fill(mat, _rects(u, vg, k, np.array([[-half, half, 0.0, p.height_m]])), pole)
        if p.kind == "lamp":
            reach = -p.side * 1.8  # the arm leans over the road
            x0, x1 = (0.0, reach) if reach > 0 else (reach, 0.0)
            _fill(mat, _rects(u, vg, k, np.array([[x0, x1, p.height_m - 0.12, p.height_m]])), pole)
            night = scene.lighting.time_of_day in ("night", "dusk")
            head = pal.object((200, 235, 255) if night else (90, 90, 95), C["pole"], emissive=night)
            _fill(mat, _rects(u, vg, k, np.array([[reach - 0.3, reach + 0.3, p.height_m - 0.25, p.height_m - 0.1]])), head)
        elif p.kind == "sign":
            self._draw_sign(pal, u, vg - p.sign_height_m * k, k, p.sign_kind)

    def _draw_sign(self, pal: Palette, u: float, v: float, k: float, kind: str) -> None:
        mat = self.mat
        sign = C["traffic_sign"]
        red = pal.object((35, 35, 200), sign)
        white = pal.object((235, 235, 235), sign)
        r = 0.35 * k
        if kind == "round":
            cv2.circle(mat, (int(u * _SCALE), int(v * _SCALE)), max(1, int(r * _SCALE)), red, -1, cv2.LINE_8, _SHIFT)
            cv2.circle(mat, (int(u * _SCALE), int(v * _SCALE)), max(1, int(0.72 * r * _SCALE)), white, -1, cv2.LINE_8, _SHIFT)
        elif kind == "triangle":
            for scale, mid in ((1.0, red), (0.6, white)):
                a = r * 1.2 * scale
                _fill(mat, np.array([[u - a, v + 0.6 * a], [u + a, v + 0.6 * a], [u, v - 1.1 * a]]), mid)
        elif kind == "octagon":
            ang = np.pi / 8 + np.arange(8) * np.pi / 4
            _fill(mat, np.stack([u + r * np.cos(ang), v + r * np.sin(ang)], 1), red)
        elif kind == "square":
            blue = pal.object((150, 80, 20), sign)
            _fill(mat, np.array([[u - r, v - r], [u + r, v - r], [u + r, v + r], [u - r, v + r]]), blue)
            _fill(mat, np.array([[u - 0.3 * r, v - 0.6 * r], [u + 0.3 * r, v - 0.6 * r], [u, v + 0.5 * r]]), white)
        else:  # direction board
            green = pal.object((60, 120, 25), sign)
            _fill(mat, np.array([[u - 2 * r, v - 1.2 * r], [u + 2 * r, v - 1.2 * r], [u + 2 * r, v + r], [u - 2 * r, v + r]]), green)
            _fill(mat, np.array([[u - 1.5 * r, v - 0.3 * r], [u + 1.2 * r, v - 0.3 * r], [u + 1.2 * r, v - 0.05 * r], [u - 1.5 * r, v - 0.05 * r]]), white)

    def _draw_vehicle(self, scene: Scene, view: _View, pal: Palette, v: Vehicle) -> None:
        if v.d_m < NEAR_CLIP_M:
            return
        mat = self.mat
        road = scene.road
        s_c = road.lane_centre(v.lane) + v.lateral_m
        u, vg, k = view.anchor(s_c, v.d_m)
        half = v.width_m / 2
        body_bgr = np.asarray(v.body_bgr, np.float32)
        car = C["car"]
        body = pal.object(body_bgr, car)
        side_body = pal.object(body_bgr * 0.78, car)
        glass = pal.object((45, 40, 38), car)
        trim = pal.object((35, 35, 38), car)
        tyre = pal.object((22, 22, 24), car)
        truck = v.kind == "truck"
        belt = v.height_m * (0.58 if v.kind in ("sedan", "suv") else 0.5)
        # Visible side face (from the face towards us back to the far end of the vehicle).
        x_c = view.lateral(s_c, v.d_m)
        if abs(x_c) > half:
            s_side = s_c - half if x_c > 0 else s_c + half
            far = v.d_m + v.length_m
            top = v.height_m if truck else belt
            _fill(mat, view.strip(s_side, s_side, np.array([v.d_m, far]), 0.3, top), side_body)
            if not truck:
                cab = np.array([v.d_m + 0.3 * v.length_m, v.d_m + 0.8 * v.length_m])
                _fill(mat, view.strip(s_side, s_side, cab, belt, v.height_m * 0.93), glass)
            for dw in (v.d_m + 0.9, far - 0.9):
                _fill(mat, view.strip(s_side, s_side, np.array([dw - 0.35, dw + 0.35]), 0.0, 0.6), tyre)
        # The face towards the camera: rear of same-direction traffic, front of oncoming traffic.
        wheel_w = 0.24
        wheels = np.array([[-half + 0.05, -half + 0.05 + wheel_w, 0.0, 0.5], [half - 0.05 - wheel_w, half - 0.05, 0.0, 0.5]])
        _fill(mat, _rects(u, vg, k, wheels), tyre)
        _fill(mat, _rects(u, vg, k, np.array([[-half, half, 0.28, 0.5]])), trim)
        _fill(mat, _rects(u, vg, k, np.array([[-half, half, 0.48, v.height_m if truck else belt]])), body)
        if truck:
            _fill(mat, _rects(u, vg, k, np.array([[-0.02, 0.02, 0.5, v.height_m - 0.05]])), trim)
        else:
            inset = 0.12 if v.kind != "van" else 0.05
            top = v.height_m
            cabin = np.array([[u + (-half + 0.05) * k, vg - belt * k], [u + (half - 0.05) * k, vg - belt * k],
                              [u + (half - 0.05 - 2 * inset) * k, vg - top * k], [u + (-half + 0.05 + 2 * inset) * k, vg - top * k]])
            _fill(mat, cabin, body)
            wy0, wy1 = belt + 0.06, top - 0.08
            win = np.array([[u + (-half + 0.15) * k, vg - wy0 * k], [u + (half - 0.15) * k, vg - wy0 * k],
                            [u + (half - 0.1 - 2 * inset) * k, vg - wy1 * k], [u + (-half + 0.1 + 2 * inset) * k, vg - wy1 * k]])
            _fill(mat, win, glass)
        night = scene.lighting.time_of_day in ("night", "dusk")
        if v.oncoming:
            lamp = pal.object((225, 245, 255) if night else (200, 210, 215), car, emissive=night)
        else:
            lamp = pal.object((40, 40, 255) if night else (30, 30, 170), car, emissive=night)
        ly = 0.62 if truck else belt - 0.25
        lights = np.array([[-half + 0.06, -half + 0.36, ly, ly + 0.16], [half - 0.36, half - 0.06, ly, ly + 0.16]])
        _fill(mat, _rects(u, vg, k, lights), lamp)
        plate = pal.object((220, 225, 225) if not v.oncoming else (210, 215, 215), car)
        _fill(mat, _rects(u, vg, k, np.array([[-0.26, 0.26, 0.32, 0.46]])), plate)

    def _draw_pedestrian(self, view: _View, pal: Palette, p: Person) -> None:
        mat = self.mat
        u, vg, k = view.anchor(p.s_m, p.d_m)
        h = p.height_m
        ped = C["pedestrian"]
        w = h / 1.75
        swing = math.sin(p.phase) * (0.22 if p.crossing else 0.05) * w
        pants = pal.object(p.pants_bgr, ped)
        shirt = pal.object(p.shirt_bgr, ped)
        skin = pal.object(p.skin_bgr, ped)
        hair = pal.object((25, 28, 32), ped)
        hip = 0.5 * h
        for side, sw in ((-1, swing), (1, -swing)):
            leg = np.array([[u + (side * 0.03 - 0.065) * w * k, vg - hip * k], [u + (side * 0.03 + 0.075) * w * k, vg - hip * k],
                            [u + (side * 0.08 + sw + 0.06) * w * k, vg], [u + (side * 0.08 + sw - 0.06) * w * k, vg]])
            _fill(mat, leg, pants)
        _fill(mat, _rects(u, vg, k, np.array([[-0.19 * w, 0.19 * w, hip - 0.03 * h, 0.82 * h]])), shirt)
        arms = np.array([[-0.26 * w, -0.19 * w, 0.47 * h, 0.8 * h], [0.19 * w, 0.26 * w, 0.47 * h, 0.8 * h]])
        _fill(mat, _rects(u, vg, k, arms), shirt)
        _fill(mat, _rects(u, vg, k, np.array([[-0.03 * w, 0.03 * w, 0.8 * h, 0.86 * h]])), skin)
        centre = (int(u * _SCALE), int((vg - 0.915 * h * k) * _SCALE))
        radius = max(1, int(0.068 * h * k * _SCALE))
        cv2.circle(mat, centre, radius, skin, -1, cv2.LINE_8, _SHIFT)
        cv2.ellipse(mat, centre, (radius, radius), 0, 180, 360, hair, -1, cv2.LINE_8, _SHIFT)

    def _draw_cyclist(self, view: _View, pal: Palette, p: Person) -> None:
        mat = self.mat
        u, vg, k = view.anchor(p.s_m, p.d_m)
        cyc = C["cyclist"]
        shirt = pal.object(p.shirt_bgr, cyc)
        pants = pal.object(p.pants_bgr, cyc)
        frame = pal.object((40, 40, 160), cyc)
        tyre = pal.object((25, 25, 25), cyc)
        helmet = pal.object((230, 230, 230), cyc)
        skin = pal.object(p.skin_bgr, cyc)
        pedal = 0.15 * math.sin(p.phase)
        if p.crossing:
            # Side view: two wheels, the frame and the rider leaning over the bars.
            direction = 1.0 if p.vs_mps > 0 else -1.0
            r = 0.34
            thick = max(1, int(0.06 * k))
            for x in (-0.52, 0.52):
                c = (int((u + x * k) * _SCALE), int((vg - r * k) * _SCALE))
                cv2.circle(mat, c, max(1, int(r * k * _SCALE)), tyre, thick, cv2.LINE_8, _SHIFT)
            pts = np.array([[-0.52, r], [-0.1, 0.95], [0.45, 0.95], [0.52, r], [0.0, 0.35]]) * [direction, 1.0]
            px = (u + pts[:, 0] * k).astype(np.float64)
            py = (vg - pts[:, 1] * k).astype(np.float64)
            for a, b in ((0, 1), (1, 4), (4, 0), (1, 2), (2, 3), (2, 4)):
                cv2.line(mat, (int(px[a] * _SCALE), int(py[a] * _SCALE)), (int(px[b] * _SCALE), int(py[b] * _SCALE)),
                         frame, thick, cv2.LINE_8, _SHIFT)
            torso = np.array([[-0.2, 0.95], [0.0, 0.95], [0.35 * direction + 0.1, 1.5], [0.35 * direction - 0.12, 1.5]])
            torso[:2, 0] *= direction
            _fill(mat, np.stack([u + torso[:, 0] * k, vg - torso[:, 1] * k], 1), shirt)
            leg = np.array([[-0.15 * direction, 0.98], [0.0, 0.95], [pedal + 0.04, 0.3], [pedal - 0.04, 0.3]])
            _fill(mat, np.stack([u + leg[:, 0] * k, vg - leg[:, 1] * k], 1), pants)
            head = (int((u + 0.38 * direction * k) * _SCALE), int((vg - 1.62 * k) * _SCALE))
        else:
            # Seen from behind: the rear wheel edge-on, legs pedalling, back and helmet.
            _fill(mat, _rects(u, vg, k, np.array([[-0.025, 0.025, 0.0, 0.7]])), tyre)
            _fill(mat, _rects(u, vg, k, np.array([[-0.06, 0.06, 0.55, 0.9], [-0.3, 0.3, 1.05, 1.09]])), frame)
            for side in (-1, 1):
                y_foot = 0.35 + side * pedal
                leg = np.array([[u + side * 0.02 * k, vg - 0.95 * k], [u + side * 0.16 * k, vg - 0.95 * k],
                                [u + side * 0.14 * k, vg - y_foot * k], [u + side * 0.06 * k, vg - y_foot * k]])
                _fill(mat, leg, pants)
            torso = np.array([[-0.18, 0.18, 0.9, 1.42]])
            _fill(mat, _rects(u, vg, k, torso), shirt)
            _fill(mat, _rects(u, vg, k, np.array([[-0.3, -0.18, 1.05, 1.38], [0.18, 0.3, 1.05, 1.38]])), skin)
            head = (int(u * _SCALE), int((vg - 1.55 * k) * _SCALE))
        radius = max(1, int(0.12 * k * _SCALE))
        cv2.circle(mat, head, radius, skin, -1, cv2.LINE_8, _SHIFT)
        cv2.ellipse(mat, head, (radius, radius), 0, 180, 360, helmet, -1, cv2.LINE_8, _SHIFT)
