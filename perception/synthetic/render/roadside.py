"""Roadside objects: buildings and hedges (with windows), trees, poles, street lamps and traffic signs.

Each ``draw_*`` paints one object into the material map; the renderer calls them in painter's
order (furthest first).
"""

from __future__ import annotations

import cv2
import numpy as np

from perception.synthetic.render.facade import CrossPlane, RoadsidePlane, draw_shop_front, draw_windows
from perception.synthetic.render.projection import NEAR_CLIP_M, View, facade_s, roadside_s
from perception.synthetic.render.raster import CLASS_ID, SCALE, SHIFT, Palette, fill, rects
from perception.synthetic.world import Building, Pole, Scene, Tree
from perception.synthetic.world.objects import bare_branches


def draw_building(mat: np.ndarray, scene: Scene, view: View, pal: Palette, b: Building) -> None:
    """A building or hedge: near end face, facade along the road, windows (lit at night)."""
    height, width = mat.shape
    s_f = facade_s(scene, b)
    d1 = b.d0_m + b.length_m
    d = np.linspace(max(b.d0_m, NEAR_CLIP_M), d1, 6 if not b.hedge else 12)
    top = b.height_m + (0.15 * np.sin(d * 2.3) if b.hedge else 0.0)
    # Points of a facade share u at every height; only v moves up by height * f / d.
    u_f, v_f = view.project(s_f, d)
    v_top = v_f - top * (view.f / d)
    if u_f.max() < 0 or u_f.min() >= width or v_top.min() >= height:
        return  # off screen: nothing of it (nor its end face further out) is visible
    cls = CLASS_ID["vegetation"] if b.hedge else CLASS_ID["building"]
    facade_bgr = np.asarray(b.facade_bgr, np.float32)
    # Near end face (turned towards the camera), then the facade along the road.
    if b.d0_m >= NEAR_CLIP_M:
        u_e, v_e = view.project(np.array([s_f, s_f + b.side * b.depth_m]), b.d0_m)
        v_e_top = v_e - b.height_m * view.f / b.d0_m
        end = np.array([[u_e[0], v_e], [u_e[1], v_e], [u_e[1], v_e_top], [u_e[0], v_e_top]])
        fill(mat, end, pal.object(facade_bgr * (0.7 if b.side * scene.lighting.sun_side < 0 else 0.85), cls))
    n = len(d)
    poly = np.empty((2 * n, 2))
    poly[:n, 0] = u_f
    poly[n:, 0] = u_f[::-1]
    poly[:n, 1] = v_f
    poly[n:, 1] = v_top[::-1]
    fill(mat, poly, pal.object(facade_bgr, cls))
    if b.hedge:
        return
    dress_facade(mat, RoadsidePlane(view, s_f), pal, b, night=scene.lighting.time_of_day == "night")


def dress_facade(mat: np.ndarray, plane: RoadsidePlane | CrossPlane, pal: Palette, b: Building, *, night: bool) -> None:
    """A shop front on most tall buildings (a stable per-building choice), then the windows above it."""
    above = 0.0
    if b.height_m > 5.5 and (b.window_spacing_m * 7.0) % 1.0 < 0.6:
        above = draw_shop_front(mat, plane, pal, b, night=night)
    draw_windows(mat, plane, pal, b, above_m=above, night=night)


def draw_frontage(mat: np.ndarray, scene: Scene, view: View, pal: Palette, b: Building) -> None:
    """A building across the end of the road (``Scene.frontage``), its face towards the camera,
    dressed like a facade along the road: shop fronts on some, windows on all."""
    d = scene.road.frontage_d_m
    if d is None or d <= NEAR_CLIP_M:
        return
    plane = CrossPlane(view, d)
    face = plane.quads(b.d0_m, b.d0_m + b.length_m, 0.0, b.height_m)
    u = face[0, :, 0]
    if u.max() < 0 or u.min() >= mat.shape[1]:
        return
    fill(mat, face, pal.object(np.asarray(b.facade_bgr, np.float32), CLASS_ID["building"]))
    dress_facade(mat, plane, pal, b, night=scene.lighting.time_of_day == "night")


def draw_tree(mat: np.ndarray, scene: Scene, view: View, pal: Palette, t: Tree) -> None:
    """A trunk and a crown of blobs (broadleaf), stacked triangles (conifer) or bare branches."""
    u, vg, k = view.anchor(roadside_s(scene, t.side, t.offset_m), t.d_m)
    r = t.crown_radius_m
    trunk = pal.object((40, 62, 85), CLASS_ID["vegetation"])
    fill(mat, rects(u, vg, k, np.array([[-0.15, 0.15, 0.0, t.trunk_height_m + 0.5 * r]])), trunk)
    if t.bare:
        draw_bare_crown(mat, view, pal, t, u, vg, k)
        return
    dark = pal.object(t.crown_bgr, CLASS_ID["vegetation"])
    light_bgr = np.minimum(np.asarray(t.crown_bgr, np.float32) * 1.2 + 8, 255)
    light = pal.object(light_bgr, CLASS_ID["vegetation"])
    if t.conifer:
        for i, frac in enumerate((0.0, 0.35, 0.65)):
            base = t.trunk_height_m * 0.6 + frac * 2.2 * r
            half = r * (1.0 - 0.55 * frac)
            tri = np.array([[u - half * k, vg - base * k], [u + half * k, vg - base * k],
                            [u, vg - (base + 1.4 * r) * k]])
            fill(mat, tri, dark if i % 2 == 0 else light)
        return
    centre_y = t.trunk_height_m + r
    for i, (dx, dy, rad) in enumerate(t.blobs):
        cu = u + dx * r * k
        cv = vg - (centre_y + dy * r) * k
        radius = max(1, int(rad * r * k * SCALE))
        cv2.circle(mat, (int(cu * SCALE), int(cv * SCALE)), radius, dark if i % 2 else light, -1, cv2.LINE_8, SHIFT)


def draw_bare_crown(mat: np.ndarray, view: View, pal: Palette, t: Tree, u: float, vg: float, k: float) -> None:
    """A winter tree's crown: whatever lies behind shows through (mostly sky), relabelled as the
    tree inside the crown outline, as an annotator draws it; then the branches as thin strokes."""
    height, width = mat.shape
    veg = CLASS_ID["vegetation"]
    r = t.crown_radius_m
    cu, cv_ = u, vg - (t.trunk_height_m + r) * k
    ax, ay = r * k, 1.1 * r * k
    x0, x1 = max(0, int(cu - ax) - 1), min(width, int(cu + ax) + 2)
    y0, y1 = max(0, int(cv_ - ay) - 1), min(height, int(cv_ + ay) + 2)
    twig = pal.object(t.crown_bgr, veg)
    if x1 > x0 and y1 > y0:
        sub = mat[y0:y1, x0:x1]
        crown = np.zeros(sub.shape, np.uint8)
        centre = (int((cu - x0) * SCALE), int((cv_ - y0) * SCALE))
        cv2.ellipse(crown, centre, (max(1, int(ax * SCALE)), max(1, int(ay * SCALE))), 0, 0, 360, 255, -1, cv2.LINE_8, SHIFT)
        lut = np.arange(256, dtype=np.uint8)
        for mid in np.flatnonzero(np.bincount(sub[crown > 0], minlength=256)):
            twin = pal.relabelled(int(mid), veg)
            lut[mid] = twig if twin is None else twin
        cv2.copyTo(cv2.LUT(sub, lut), crown, sub)
    # Branches, thickest first; a stroke is never thinner than one pixel, and twigs far thinner
    # than a pixel are left out (their haze is the crown colour seen through).
    ox, oy = cu, cv_
    for x_a, y_a, x_b, y_b, w in bare_branches(t.branch_seed):
        if 2 * w * k < 0.25:
            break
        a = (int((ox + x_a * r * k) * SCALE), int((oy - y_a * r * k) * SCALE))
        b = (int((ox + x_b * r * k) * SCALE), int((oy - y_b * r * k) * SCALE))
        cv2.line(mat, a, b, twig, max(1, int(round(2 * w * k))), cv2.LINE_8, SHIFT)


def draw_pole(mat: np.ndarray, scene: Scene, view: View, pal: Palette, p: Pole) -> None:
    """A plain pole, a street lamp with its arm over the road, or a sign post with its sign."""
    s = roadside_s(scene, p.side, p.offset_m)
    u, vg, k = view.anchor(s, p.d_m)
    colour = {"plain": (60, 75, 70), "bollard": (45, 45, 50)}.get(p.kind, (115, 118, 120))
    pole = pal.object(colour, CLASS_ID["pole"])
    half = {"sign": 0.06, "bollard": 0.08}.get(p.kind, 0.1)
    fill(mat, rects(u, vg, k, np.array([[-half, half, 0.0, p.height_m]])), pole)
    if p.kind == "lamp":
        reach = -p.side * 1.8  # the arm leans over the road
        x0, x1 = (0.0, reach) if reach > 0 else (reach, 0.0)
        fill(mat, rects(u, vg, k, np.array([[x0, x1, p.height_m - 0.12, p.height_m]])), pole)
        night = scene.lighting.time_of_day in ("night", "dusk")
        head = pal.object((200, 235, 255) if night else (90, 90, 95), CLASS_ID["pole"], emissive=night)
        fill(mat, rects(u, vg, k, np.array([[reach - 0.3, reach + 0.3, p.height_m - 0.25, p.height_m - 0.1]])), head)
    elif p.kind == "sign":
        draw_sign(mat, pal, u, vg - p.sign_height_m * k, k, p.sign_kind)


def draw_sign(mat: np.ndarray, pal: Palette, u: float, v: float, k: float, kind: str) -> None:
    """A traffic sign of ``kind`` centred at pixel (u, v), ``k`` pixels per metre."""
    sign = CLASS_ID["traffic_sign"]
    red = pal.object((35, 35, 200), sign)
    white = pal.object((235, 235, 235), sign)
    r = 0.35 * k
    if kind == "round":
        cv2.circle(mat, (int(u * SCALE), int(v * SCALE)), max(1, int(r * SCALE)), red, -1, cv2.LINE_8, SHIFT)
        cv2.circle(mat, (int(u * SCALE), int(v * SCALE)), max(1, int(0.72 * r * SCALE)), white, -1, cv2.LINE_8, SHIFT)
    elif kind == "triangle":
        for scale, mid in ((1.0, red), (0.6, white)):
            a = r * 1.2 * scale
            fill(mat, np.array([[u - a, v + 0.6 * a], [u + a, v + 0.6 * a], [u, v - 1.1 * a]]), mid)
    elif kind == "octagon":
        ang = np.pi / 8 + np.arange(8) * np.pi / 4
        fill(mat, np.stack([u + r * np.cos(ang), v + r * np.sin(ang)], 1), red)
    elif kind == "square":
        blue = pal.object((150, 80, 20), sign)
        fill(mat, np.array([[u - r, v - r], [u + r, v - r], [u + r, v + r], [u - r, v + r]]), blue)
        fill(mat, np.array([[u - 0.3 * r, v - 0.6 * r], [u + 0.3 * r, v - 0.6 * r], [u, v + 0.5 * r]]), white)
    else:  # direction board
        green = pal.object((60, 120, 25), sign)
        fill(mat, np.array([[u - 2 * r, v - 1.2 * r], [u + 2 * r, v - 1.2 * r], [u + 2 * r, v + r], [u - 2 * r, v + r]]), green)
        fill(mat, np.array([[u - 1.5 * r, v - 0.3 * r], [u + 1.2 * r, v - 0.3 * r], [u + 1.2 * r, v - 0.05 * r], [u - 1.5 * r, v - 0.05 * r]]), white)
