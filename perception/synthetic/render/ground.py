"""The ground: terrain, asphalt and repair patches, sidewalks and kerbs, lane paint and crosswalks,
and the shadows that fall on them.

Shadows map a ground material to its darker twin (``raster.SHADOW_BIT``), which has the same
class, so they change colours and never labels. Paint is clipped to the asphalt pixels so every
``lane_marking`` label lies on the road.
"""

from __future__ import annotations

import cv2
import numpy as np

from perception.synthetic.render.projection import NEAR_CLIP_M, View, facade_s, roadside_s
from perception.synthetic.render.raster import CLASS_ID, GROUND_SLOTS, SCALE, SHADOW_BIT, SHIFT, Palette, fill
from perception.synthetic.world import Scene


def draw_ground(mat: np.ndarray, paint: np.ndarray, scene: Scene, view: View, pal: Palette) -> None:
    """Terrain, asphalt and repair patches, sidewalks with kerbs, then the paint (``paint`` is scratch)."""
    road = scene.road
    d = view.ground_d
    width = road.width_m
    grass = pal.ground(road.grass_bgr, CLASS_ID["vegetation"])
    # A wide terrain strip first: on a hill it hides the sky behind the crest.
    fill(mat, view.strip(-300.0, width + 300.0, d), grass)
    # Asphalt and repair patches get adjacent ids: the paint mask below tests that id range.
    asphalt = pal.ground(road.asphalt_bgr, CLASS_ID["road"])
    patch = pal.ground(np.asarray(road.asphalt_bgr) * 0.8, CLASS_ID["road"])
    crack = pal.ground(np.asarray(road.asphalt_bgr) * 0.55, CLASS_ID["road"])
    fill(mat, view.strip(road.kerb_left_s, road.kerb_right_s, d), asphalt)
    if road.patches:
        p = np.asarray(road.patches)
        p = p[p[:, 3] > view.d_near]
        fill(mat, view.ground_quads(p[:, 0], p[:, 1], p[:, 2], p[:, 3]), patch)
    for side, sidewalk in ((-1, road.sidewalk_left_m), (1, road.sidewalk_right_m)):
        if sidewalk > 0:
            draw_sidewalk(mat, paint, scene, view, pal, side, sidewalk)
    if road.junction_d_m is not None and road.junction_d_m + road.junction_width_m > view.d_near:
        # A side road crossing: asphalt through both sidewalks and out to the sides.
        j0, j1 = road.junction_d_m, road.junction_d_m + road.junction_width_m
        fill(mat, view.ground_quads(np.array([-60.0]), np.array([width + 60.0]), np.array([j0]), np.array([j1])), asphalt)
    if road.cracks:
        c = np.asarray(road.cracks)
        c = c[np.minimum(c[:, 1], c[:, 3]) > max(view.d_near, 1.5)]
        if len(c):
            a = np.stack(view.project(c[:, 0], c[:, 1]), 1)
            b = np.stack(view.project(c[:, 2], c[:, 3]), 1)
            lines = (np.stack([a, b], 1) * SCALE).astype(np.int32)
            # Drawn through a mask of the asphalt, like the paint, so a crack never leaves the road.
            paint.fill(255)
            cv2.polylines(paint, list(lines), False, int(crack), 1, cv2.LINE_8, SHIFT)
            on_road = cv2.inRange(mat, asphalt, patch)
            cv2.bitwise_and(on_road, cv2.compare(paint, 255, cv2.CMP_NE), dst=on_road)
            cv2.copyTo(paint, on_road, mat)
    draw_paint(mat, paint, scene, view, pal, road_ids=(asphalt, crack))
    if road.road_end_d_m is not None:
        draw_road_end(mat, scene, view, pal, asphalt)


def kerbstone_bgr(road) -> np.ndarray:
    """The kerbstone's colour: the road's own, or a stone a little lighter than the sidewalk."""
    if road.kerb_bgr is not None:
        return np.asarray(road.kerb_bgr, np.float64)
    return np.minimum(np.asarray(road.sidewalk_bgr, np.float64) * 1.15 + 10, 255)


def draw_road_end(mat: np.ndarray, scene: Scene, view: View, pal: Palette, asphalt: int) -> None:
    """A T-junction ahead: the pavements round the corners on this side, the crossing road, and
    beyond it the far kerb (its face towards the camera) and pavement up to the frontage. Drawn
    over the main road's ground, which ends here."""
    road = scene.road
    end, far = road.road_end_d_m, road.frontage_d_m
    if far <= view.d_near:
        return
    lo, hi = -150.0, road.width_m + 150.0
    sw_class = CLASS_ID["sidewalk"]
    base_bgr = np.asarray(road.sidewalk_bgr, np.float64)
    surface = pal.ground(base_bgr, sw_class)
    kerb_bgr = kerbstone_bgr(road)
    corner = end - road.road_end_corner_m
    fill(mat, view.ground_quads(np.array([lo, road.kerb_right_s]), np.array([road.kerb_left_s, hi]),
                                np.full(2, corner), np.full(2, end)), surface)
    fill(mat, view.ground_quads(np.array([lo]), np.array([hi]), np.array([end]), np.array([end + road.road_end_width_m])), asphalt)
    kerb_d = end + road.road_end_width_m
    fill(mat, view.ground_quads(np.array([lo]), np.array([hi]), np.array([kerb_d]), np.array([far])), surface)
    kerb = pal.ground(kerb_bgr, sw_class)
    fill(mat, view.ground_quads(np.array([lo]), np.array([hi]), np.array([kerb_d]), np.array([kerb_d + road.kerb_width_m])), kerb)
    # The far kerb's face, towards the camera: a band from the road up to the kerb's height.
    u0, v0 = view.project(np.array([lo, hi]), kerb_d)
    u1, v1 = view.project(np.array([hi, lo]), kerb_d, road.kerb_height_m)
    face = np.stack([np.concatenate([u0, u1]), np.concatenate([np.broadcast_to(v0, 2), np.broadcast_to(v1, 2)])], 1)
    fill(mat, face, pal.ground(np.minimum(kerb_bgr * 0.8, 255), sw_class))


def draw_sidewalk(
    mat: np.ndarray, paint: np.ndarray, scene: Scene, view: View, pal: Palette, side: int, width_m: float
) -> None:
    """One sidewalk: its surface (joints of slabs or bricks, a few slabs a shade off), any forecourt
    beyond it, the kerbstone's top band and its vertical face (lit or shaded by the sun; none where
    the kerb is dropped), all labelled sidewalk."""
    road, d = scene.road, view.ground_d
    sw_class = CLASS_ID["sidewalk"]
    edge = road.kerb_left_s if side < 0 else road.kerb_right_s
    far = edge + side * width_m
    inner = edge + side * road.kerb_width_m
    base_bgr = np.asarray(road.sidewalk_bgr, np.float64)
    forecourt = road.forecourt_m[0 if side < 0 else 1]
    if forecourt > 0:  # paved a shade off the pavement, out past the building line
        fill(mat, view.strip(far, far + side * forecourt, d), pal.ground(base_bgr * 0.92 + 4.0, sw_class))
    surface = pal.ground(base_bgr, sw_class)
    fill(mat, view.strip(edge, far, d), surface)
    along, across = road.slab_m
    if along > 0:
        draw_joints(mat, paint, scene, view, pal, surface, (min(inner, far), max(inner, far)), along, across)
    kerb_bgr = kerbstone_bgr(road)
    fill(mat, view.strip(edge, inner, d), pal.ground(kerb_bgr, sw_class))
    # The kerb's vertical face, seen from the road: lit when it faces the sun, else in shade.
    light = scene.lighting
    lit = light.shadow_factor < 0.95 and side * light.sun_side > 0
    face = pal.ground(np.minimum(kerb_bgr * (1.05 if lit else 0.6), 255), sw_class)
    for run in _raised_runs(d, [(d0, d1) for s_, d0, d1 in road.dropped_kerbs if s_ == side]):
        fill(mat, view.strip(edge, edge, run, 0.0, road.kerb_height_m), face)


def _raised_runs(d: np.ndarray, dropped: list[tuple[float, float]]) -> list[np.ndarray]:
    """The stretches of the distance samples ``d`` where the kerb stands (outside every dropped
    (d0, d1) stretch), each with its ends on the dropped stretches' edges."""
    if not dropped:
        return [d]
    cuts = sorted(x for d0, d1 in dropped for x in (d0, d1) if d[0] < x < d[-1])
    points = np.unique(np.concatenate([d, cuts]))
    mid = (points[:-1] + points[1:]) / 2
    up = np.ones(len(mid), bool)
    for d0, d1 in dropped:
        up &= ~((mid > d0) & (mid < d1))
    runs, start = [], None
    for i, raised in enumerate(up):
        if raised and start is None:
            start = i
        if not raised and start is not None:
            runs.append(points[start : i + 1])
            start = None
    if start is not None:
        runs.append(points[start:])
    return runs


def draw_joints(
    mat: np.ndarray, paint: np.ndarray, scene: Scene, view: View, pal: Palette, surface: int,
    span: tuple[float, float], along: float, across: float,
) -> None:
    """Joints of a paved surface (``along``/``across`` metres apart; ``across`` 0: none along the
    road) and one slab in a few a shade lighter or darker, drawn only over the ``surface`` material."""
    road = scene.road
    s_lo, s_hi = span
    base_bgr = np.asarray(road.sidewalk_bgr, np.float64)
    joint = pal.ground(base_bgr * 0.72, CLASS_ID["sidewalk"])
    # Only as far as joints stay a few pixels apart (beyond, they would alias into noise).
    rise = view.f * scene.camera.mount_height_m * along
    d_max = min(60.0, float(np.sqrt(rise / 2.0)))
    if d_max <= view.d_near:
        return
    phase = -scene.travelled_m % along  # the grid is fixed to the ground, so a drive rolls over it
    rows = phase + along * np.arange(int(np.ceil((d_max - phase) / along)))
    rows = rows[rows > view.d_near]
    paint.fill(255)
    if across > 0:
        cols = s_lo + across * np.arange(1, int((s_hi - s_lo) / across) + 1)
        n_r, n_c = len(rows) - 1, len(cols) + 1
        if n_r > 0:
            # A few slabs a shade off (a fixed hash of the slab's grid position, so drives are stable).
            i, j = np.meshgrid(np.arange(n_r), np.arange(n_c), indexing="ij")
            key = ((i + np.round(scene.travelled_m / along).astype(int)) * 73 + j * 37) % 11
            edges = np.concatenate([[s_lo], cols[cols < s_hi], [s_hi]])
            for tone, factor in ((0, 0.9), (5, 1.1)):
                pick = key == tone
                if pick.any():
                    r, c = np.nonzero(pick)
                    c = np.minimum(c, len(edges) - 2)
                    quads = view.ground_quads(edges[c], edges[c + 1], rows[r], rows[r + 1])
                    fill(paint, quads, pal.ground(base_bgr * factor, CLASS_ID["sidewalk"]))
        d_l = np.linspace(max(view.d_near, 0.5), min(60.0, d_max * 2.0), 16)
        lines = [np.stack(view.project(s, d_l), 1) for s in cols if s < s_hi]
    else:
        lines = []
    a = np.stack(view.project(s_lo, rows), 1)
    b = np.stack(view.project(s_hi, rows), 1)
    lines += list(np.stack([a, b], 1))
    if lines:
        cv2.polylines(paint, [(p * SCALE).astype(np.int32) for p in lines], False, int(joint), 1, cv2.LINE_8, SHIFT)
    on_surface = cv2.compare(mat, surface, cv2.CMP_EQ)
    cv2.bitwise_and(on_surface, cv2.compare(paint, 255, cv2.CMP_NE), dst=on_surface)
    cv2.copyTo(paint, on_surface, mat)


def draw_paint(
    mat: np.ndarray, paint: np.ndarray, scene: Scene, view: View, pal: Palette, *, road_ids: tuple[int, int]
) -> None:
    """Lane lines, dashes, crosswalks and the stop line before a T-junction, applied only where
    asphalt is visible.

    OpenCV fills include the polygon outline, so a fill reaches up to a pixel past its edge;
    painting through a mask of the asphalt pixels keeps every lane_marking label on the road.
    """
    road = scene.road
    paint.fill(255)
    # Worn paint fades towards the asphalt it lies on (never darker than it).
    asphalt = np.asarray(road.asphalt_bgr, np.float64)
    white = pal.ground(asphalt + (235.0 - asphalt) * road.paint_fade, CLASS_ID["lane_marking"])
    yellow = pal.ground(asphalt + (np.asarray((40.0, 185.0, 225.0)) - asphalt) * road.paint_fade, CLASS_ID["lane_marking"])
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
                fill(paint, view.strip(s - half, s + half, paint_d), mid)
    for mid, quads in dashes.items():
        if quads:
            fill(paint, np.concatenate(quads), mid)
    # Kerbside lines a hand's width from each kerb (waiting restrictions, edge lines).
    line_w = max(0.08, 0.7 * road.paint_width_m)
    for side, kind in zip((-1, 1), road.kerb_lines, strict=True):
        if kind == "none":
            continue
        colour = yellow if "yellow" in kind else white
        near = (road.kerb_left_s if side < 0 else road.kerb_right_s) - side * 0.2
        centres = (near, near - side * 2.2 * line_w) if kind.startswith("double") else (near,)
        for s in centres:
            fill(paint, view.strip(s - line_w / 2, s + line_w / 2, paint_d), colour)
    if road.crosswalk_d_m is not None and road.crosswalk_d_m + 4.0 > view.d_near:
        d0 = road.crosswalk_d_m
        s0 = np.arange(0.4, road.width_m - 0.5, 1.0)
        n = len(s0)
        bars = view.ground_quads(s0, s0 + 0.5, np.full(n, d0), np.full(n, d0 + 3.5))
        stop_from = road.oncoming_lanes * road.lane_width_m + 0.2
        stop = view.ground_quads(
            np.array([stop_from]), np.array([road.width_m - 0.2]), np.array([d0 - 2.0]), np.array([d0 - 1.5])
        )
        fill(paint, np.concatenate([bars, stop]), white)
    if road.road_end_d_m is not None and any(style != "none" for style, _ in road.boundary_styles):
        # A T-junction ahead: a stop (solid) or give-way (dashed) line across the lanes towards it.
        end = road.road_end_d_m
        s0, s1 = road.oncoming_lanes * road.lane_width_m + 0.2, road.width_m - 0.2
        if road.dash_length_m > 3.2:  # a stable per-road choice
            starts = np.arange(s0, s1 - 0.3, 1.2)
            ends = np.minimum(starts + 0.6, s1)
        else:
            starts, ends = np.array([s0]), np.array([s1])
        n = len(starts)
        fill(paint, view.ground_quads(starts, ends, np.full(n, end - 0.6), np.full(n, end - 0.3)), white)
    on_road = cv2.inRange(mat, road_ids[0], road_ids[1])
    cv2.bitwise_and(on_road, cv2.compare(paint, 255, cv2.CMP_NE), dst=on_road)
    cv2.copyTo(paint, on_road, mat)


def draw_shadows(mat: np.ndarray, shade: np.ndarray, scene: Scene, view: View) -> None:
    """Mark shadowed ground: contact shadows always, sun shadows when the light is hard."""
    road, light = scene.road, scene.lighting
    rects: list[tuple[float, float, float, float]] = []  # s0, s1, d0, d1 on the ground
    sun_shadows = light.shadow_factor < 0.95
    for v in scene.vehicles:
        if NEAR_CLIP_M < v.d_m < 150:
            s = road.lane_centre(v.lane) + v.lateral_m
            s0, s1 = s - v.width_m / 2 - 0.1, s + v.width_m / 2 + 0.1
            if sun_shadows:  # the body's shadow reaches out sideways, away from the sun
                reach = light.sun_side * min(v.height_m * light.shadow_length, 6.0)
                s0, s1 = min(s0, s0 + reach), max(s1, s1 + reach)
            rects.append((s0, s1, v.d_m - 0.25, v.d_m + v.length_m))
    for p in scene.people:
        if NEAR_CLIP_M < p.d_m < 80:
            rects.append((p.s_m - 0.3, p.s_m + 0.3, p.d_m - 0.2, p.d_m + 0.3))
    if sun_shadows:
        sun, k = light.sun_side, light.shadow_length
        for b in scene.buildings:
            if b.side == -sun and b.d0_m + b.length_m > view.d_near and b.d0_m < 150:
                s_f = facade_s(scene, b)
                far = s_f + sun * min(b.height_m * k, 25.0)
                rects.append((min(s_f, far), max(s_f, far), b.d0_m + 0.5 * b.height_m * k, b.d0_m + b.length_m))
        for t in scene.trees:
            if view.d_near < t.d_m + 3 and t.d_m < 100:
                s = roadside_s(scene, t.side, t.offset_m) + sun * (t.trunk_height_m + t.crown_radius_m) * k
                r = t.crown_radius_m
                rects.append((s - r, s + r, t.d_m - 0.6 * r, t.d_m + 0.6 * r))
        for p in scene.poles:
            if view.d_near < p.d_m < 100:
                s = roadside_s(scene, p.side, p.offset_m)
                far = s + sun * p.height_m * k
                rects.append((min(s, far), max(s, far), p.d_m, p.d_m + 0.2))
    if not rects:
        return
    r = np.asarray(rects)
    pts = (view.ground_quads(r[:, 0], r[:, 1], r[:, 2], r[:, 3]) * SCALE).astype(np.int32)
    shade.fill(0)
    # One fill per quad: a single call with overlapping polygons would cancel the overlaps
    # (OpenCV fills by the even-odd rule).
    for i in range(len(pts)):
        cv2.fillPoly(shade, pts[i : i + 1], SHADOW_BIT, cv2.LINE_8, SHIFT)
    # Only ground materials (< 32) may turn into their shadowed twin.
    ground = cv2.compare(mat, GROUND_SLOTS, cv2.CMP_LT)
    cv2.bitwise_and(shade, ground, dst=shade)
    cv2.bitwise_or(mat, shade, dst=mat)
