"""What a building's street face carries: shop fronts on the ground floor and framed windows above.

Real shop fronts are where a road model trained on plain facades goes wrong: big panes that show
shelves, posters and lit interiors, with the sky and the street's trees mirrored in their upper
part, divided by mullions and topped by a fascia with lettering. Annotated datasets label all of it
*building*, and so does this module (only colours vary; every fill is the building class).

Details come from a per-building generator seeded by the building's own fields
(``building_seed``), never from the scene's random stream: the seeded scene layouts stay as they
were, and a building looks the same in every frame of a drive. Colours come from small fixed
tables, so frames with many shops share palette slots.
"""

from __future__ import annotations

import numpy as np

from perception.synthetic.render.projection import NEAR_CLIP_M, View
from perception.synthetic.render.raster import CLASS_ID, Palette, fill
from perception.synthetic.world import Building
from perception.synthetic.world.objects import uniform

#: BGR tables. Fascias: dark green, navy, red, black, white, orange, plum.
FASCIA_COLORS = ((40, 70, 30), (90, 40, 20), (30, 30, 150), (30, 30, 32), (225, 225, 220), (30, 110, 200), (90, 40, 100))
#: Window and shop-front frames: white paint, black, dark green, aluminium.
FRAME_COLORS = ((225, 225, 220), (35, 35, 38), (45, 75, 45), (150, 150, 150))
#: What shows through a pane: a dark or dim interior, a lit warm or cool one (lit ones glow at night).
INTERIOR_COLORS = ((45, 40, 38), (72, 70, 68), (120, 140, 160), (180, 182, 178))
INTERIOR_LIT = (False, False, True, True)
#: Goods, shelves and posters in a display.
DISPLAY_COLORS = ((30, 30, 170), (200, 200, 200), (40, 120, 200), (140, 90, 40), (30, 160, 40), (20, 20, 20))
#: The sky and the street's trees mirrored in a pane's upper part; the sky in an upper window.
REFLECTED_SKY = (200, 190, 180)
MIRRORED_WINDOWS = ((170, 160, 150), (120, 120, 115))
REFLECTED_TREES = (70, 88, 78)
BUILDING = CLASS_ID["building"]


def building_seed(b: Building) -> int:
    """A stable seed from a building's own fields (the same building, the same details, every frame)."""
    return int((b.window_spacing_m * 7919.0 + b.floor_m * 104729.0 + b.length_m * 1299709.0 + b.height_m * 15485863.0) * 1000.0) % (1 << 32)


def facade_quads(view: View, s_f: float, d0, d1, y0, y1) -> np.ndarray:
    """(n,4,2) image quads of facade rectangles d0..d1 (along the road) x y0..y1 (height), in the
    facade's plane at lateral position ``s_f``; parts nearer than the near clip are cut off."""
    d0, d1, y0, y1 = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (d0, d1, y0, y1)))
    keep = d1 > NEAR_CLIP_M
    d0, d1, y0, y1 = np.maximum(d0[keep], NEAR_CLIP_M), d1[keep], y0[keep], y1[keep]
    # A facade point's u depends on d only; its v rises by y * f / d from the ground's.
    ua, va = view.project(s_f, d0)
    ub, vb = view.project(s_f, d1)
    ka, kb = view.f / d0, view.f / d1
    out = np.empty((len(d0), 4, 2))
    out[:, 0, 0] = out[:, 3, 0] = ua
    out[:, 1, 0] = out[:, 2, 0] = ub
    out[:, 0, 1] = va - y0 * ka
    out[:, 1, 1] = vb - y0 * kb
    out[:, 2, 1] = vb - y1 * kb
    out[:, 3, 1] = va - y1 * ka
    return out


class RoadsidePlane:
    """The plane of a facade along the road, at lateral position ``s_f``: a point on it is (a, y),
    ``a`` the distance along the road, ``y`` the height. Shop fronts and windows draw through a
    plane, so the same code dresses a facade along the road and one across its end."""

    a_min = NEAR_CLIP_M  # nearer than this is behind the near clip

    def __init__(self, view: View, s_f: float) -> None:
        self.view, self.s_f = view, s_f

    def quads(self, a0, a1, y0, y1) -> np.ndarray:
        return facade_quads(self.view, self.s_f, a0, a1, y0, y1)

    def points(self, a, y) -> tuple[np.ndarray, np.ndarray]:
        return self.view.project(self.s_f, np.maximum(a, NEAR_CLIP_M), y)

    def scale(self, a):
        """Pixels per metre at ``a``."""
        return self.view.f / np.maximum(a, NEAR_CLIP_M)


class CrossPlane:
    """The plane of a facade across the end of the road, ``d`` metres ahead and facing the camera:
    a point on it is (a, y), ``a`` the lateral position ``s``, ``y`` the height."""

    a_min = -np.inf

    def __init__(self, view: View, d: float) -> None:
        self.view, self.d = view, d

    def quads(self, a0, a1, y0, y1) -> np.ndarray:
        a0, a1, y0, y1 = np.broadcast_arrays(*(np.atleast_1d(np.asarray(a, np.float64)) for a in (a0, a1, y0, y1)))
        ua, va = self.view.project(a0, self.d, y0)
        ub, vb = self.view.project(a1, self.d, y1)
        out = np.empty((len(a0), 4, 2))
        out[:, 0, 0] = out[:, 3, 0] = ua
        out[:, 1, 0] = out[:, 2, 0] = ub
        out[:, 0, 1] = out[:, 1, 1] = va
        out[:, 2, 1] = out[:, 3, 1] = vb
        return out

    def points(self, a, y) -> tuple[np.ndarray, np.ndarray]:
        return self.view.project(np.asarray(a, np.float64), self.d, y)

    def scale(self, a):
        return np.full(np.shape(a), self.view.f / self.d) if np.ndim(a) else self.view.f / self.d


def draw_shop_front(mat: np.ndarray, plane: RoadsidePlane | CrossPlane, pal: Palette, b: Building, *, night: bool) -> float:
    """The ground floor as shops: fascia and lettering, panes with displays, reflections, mullions
    and a door. Returns the height (m) up to which upper-floor windows must not be drawn."""
    rng = np.random.default_rng(building_seed(b))
    top = min(b.floor_m + 0.4, b.height_m - 0.5)
    d0, d1 = b.d0_m, b.d0_m + b.length_m
    base_bgr = np.asarray(b.window_bgr, np.float32) * 0.5 + np.asarray(b.facade_bgr, np.float32) * 0.3
    fill(mat, plane.quads(d0, d1, 0.0, top), pal.object(base_bgr, BUILDING))  # pillars and risers
    fascia_y0 = top - uniform(rng, 0.45, 0.8)
    fascia_bgr = FASCIA_COLORS[int(rng.integers(len(FASCIA_COLORS)))]
    fill(mat, plane.quads(d0 + 0.15, d1 - 0.15, fascia_y0, top - 0.08), pal.object(fascia_bgr, BUILDING))
    glass_y0, glass_y1 = uniform(rng, 0.3, 0.7), fascia_y0 - uniform(rng, 0.05, 0.3)
    bay_m = uniform(rng, 1.4, 3.6)
    n_bays = max(1, int((b.length_m - 0.6) / bay_m))
    edges = d0 + 0.3 + np.arange(n_bays + 1) * ((b.length_m - 0.6) / n_bays)
    k = plane.scale(d0)
    if (edges[1] - edges[0]) * k < 6.0 or top * k < 8.0:  # too far for details: one dark pane
        fill(mat, plane.quads(d0, d1, glass_y0, glass_y1), pal.object((50, 45, 40), BUILDING))
        return top
    # Lettering on the fascia: light on a dark board, dark on a light one.
    letters = (30, 30, 32) if sum(fascia_bgr) > 400 else ((225, 225, 220), (90, 190, 225))[int(rng.integers(2))]
    start = uniform(rng, d0 + 0.5, max(d0 + 0.6, d1 - 4.0))
    x0 = start + np.cumsum(rng.uniform(0.25, 0.45, int(rng.integers(5, 14))))
    x0 = x0[x0 < d1 - 0.5]
    fh = top - 0.08 - fascia_y0
    fill(mat, plane.quads(x0, x0 + 0.18, fascia_y0 + 0.3 * fh, fascia_y0 + 0.75 * fh), pal.object(letters, BUILDING))
    # Panes: an interior colour each, goods and posters in front of it.
    inner = rng.integers(len(INTERIOR_COLORS), size=n_bays)
    a, z = edges[:-1], edges[1:]
    for k in np.unique(inner):
        lit = bool(INTERIOR_LIT[k]) and night
        fill(mat, plane.quads(a[inner == k], z[inner == k], glass_y0, glass_y1),
             pal.object(INTERIOR_COLORS[k], BUILDING, emissive=lit))
    n_items = int(rng.integers(2, 6)) * n_bays
    bay = rng.integers(n_bays, size=n_items)
    w = z[bay] - a[bay]
    gx0 = a[bay] + rng.uniform(0.0, 0.8, n_items) * w
    gx1 = np.minimum(gx0 + rng.uniform(0.12, 0.5, n_items) * w, z[bay])
    gh = glass_y1 - glass_y0
    gy0 = glass_y0 + rng.uniform(0.0, 0.6, n_items) * gh
    gy1 = np.minimum(gy0 + rng.uniform(0.08, 0.45, n_items) * gh, glass_y1)
    colour = rng.integers(len(DISPLAY_COLORS), size=n_items)
    for c in np.unique(colour):
        m = colour == c
        fill(mat, plane.quads(gx0[m], gx1[m], gy0[m], gy1[m]), pal.object(DISPLAY_COLORS[c], BUILDING))
    if rng.random() < 0.7:
        # The sky mirrored in the upper part of the panes, with the street's trees in it.
        ry0 = glass_y1 - uniform(rng, 0.2, 0.55) * gh
        fill(mat, plane.quads(a, z, ry0, glass_y1), pal.object(REFLECTED_SKY, BUILDING))
        n_trees = int(rng.integers(1, 5))
        tx = rng.uniform(d0, d1, n_trees)
        tw = rng.uniform(0.8, 2.5, n_trees)
        for x, half in zip(tx, tw / 2, strict=True):
            poly = _crown(plane, x, half, (edges[0], edges[-1]), (ry0 - 0.2, glass_y1), rng)
            if poly is not None:
                fill(mat, poly, pal.object(REFLECTED_TREES, BUILDING))
    # Mullions at the bay edges, a transom bar, and a door in one bay.
    frame = pal.object(FRAME_COLORS[int(rng.integers(len(FRAME_COLORS)))], BUILDING)
    bar = uniform(rng, 0.05, 0.12)
    quads = [plane.quads(edges - bar, edges + bar, glass_y0, glass_y1),
             plane.quads(edges[0], edges[-1], glass_y1 - 2 * bar, glass_y1)]
    if rng.random() < 0.5:  # a low transom too
        y = glass_y0 + uniform(rng, 0.25, 0.45) * gh
        quads.append(plane.quads(edges[0], edges[-1], y - bar, y + bar))
    fill(mat, np.concatenate(quads), frame)
    door_bay = int(rng.integers(n_bays))
    dx = a[door_bay] + uniform(rng, 0.1, 0.4) * (z[door_bay] - a[door_bay])
    door = (35, 35, 40) if rng.random() < 0.5 else INTERIOR_COLORS[int(inner[door_bay])]
    fill(mat, plane.quads(dx, min(dx + uniform(rng, 0.85, 1.1), z[door_bay]), 0.0, min(2.1, glass_y1)),
         pal.object(door, BUILDING))
    return top


def _crown(plane: RoadsidePlane | CrossPlane, x: float, half: float, span, heights, rng: np.random.Generator):
    """A tree crown's reflection: an irregular blob in the facade plane, clipped to the panes'
    ``span`` (d0, d1) and ``heights`` (y0, y1)."""
    ang = np.linspace(0.0, 2.0 * np.pi, 10, endpoint=False)
    r = rng.uniform(0.7, 1.0, len(ang))
    d = np.clip(x + half * r * np.cos(ang), *span)
    y0, y1 = heights
    if d.max() <= plane.a_min:
        return None
    y = np.clip(y1 + 0.6 * half * r * np.sin(ang), y0, y1)
    u, v = plane.points(d, y)
    return np.stack([u, v], 1)


def draw_windows(
    mat: np.ndarray, plane: RoadsidePlane | CrossPlane, pal: Palette, b: Building, *, above_m: float, night: bool
) -> None:
    """Upper-floor windows (from ``above_m`` up): frames and glazing bars on most buildings, some
    panes mirroring the sky; about half the houses have their lights on at night."""
    if b.window_spacing_m * plane.scale(b.d0_m) < 3.0:
        return  # too small to see
    n_floors = int((b.height_m - 1.5) / b.floor_m)
    n_cols = int(b.length_m / b.window_spacing_m)
    if n_floors < 1 or n_cols < 1:
        return
    # Every draw is made for the whole grid before anything is culled, so a window looks the same
    # in every frame of a drive.
    rng = np.random.default_rng(building_seed(b) + 1)
    framed = rng.random() < 0.7
    frame_bgr = FRAME_COLORS[int(rng.integers(len(FRAME_COLORS)))]
    rim = uniform(rng, 0.06, 0.12)
    bars = framed and rng.random() < 0.6  # glazing bars: one upright and one across each window
    mirrored = rng.random((n_floors, n_cols)) < uniform(rng, 0.0, 0.6)
    sky_bgr = MIRRORED_WINDOWS[int(rng.integers(len(MIRRORED_WINDOWS)))]
    d1 = b.d0_m + b.length_m
    w0 = b.d0_m + 0.6 + np.arange(n_cols) * b.window_spacing_m
    y0 = 1.0 + (np.arange(n_floors) + 0.3) * b.floor_m  # window sills, one per floor
    wa, wb = np.meshgrid(w0, y0)
    keep = (wa > plane.a_min) & (wa + 0.55 * b.window_spacing_m < d1 - 0.3) & (wb >= above_m)
    if not keep.any():
        return
    wa, wb, mirrored = wa[keep], wb[keep], mirrored[keep]
    wz, wt = wa + 0.55 * b.window_spacing_m, wb + 0.5 * b.floor_m
    big = b.window_spacing_m * plane.scale(wa) >= 10.0  # frames and bars only where they are a pixel or more
    if framed and big.any():
        fill(mat, plane.quads(wa[big] - rim, wz[big] + rim, wb[big] - rim, wt[big] + rim),
             pal.object(frame_bgr, BUILDING))
    lit = night and (b.floor_m * 10) % 1 < 0.5  # floor height: a stable per-building draw
    if lit:
        mirrored[:] = False
    glass_bgr = (80, 190, 250) if lit else b.window_bgr
    fill(mat, plane.quads(wa[~mirrored], wz[~mirrored], wb[~mirrored], wt[~mirrored]),
         pal.object(glass_bgr, BUILDING, emissive=lit))
    if mirrored.any():
        fill(mat, plane.quads(wa[mirrored], wz[mirrored], wb[mirrored], wt[mirrored]), pal.object(sky_bgr, BUILDING))
    if bars and big.any():
        half = 0.03
        a, z, lo, hi = wa[big], wz[big], wb[big], wt[big]
        mid_d, mid_y = (a + z) / 2, (lo + hi) / 2
        fill(mat, np.concatenate([plane.quads(mid_d - half, mid_d + half, lo, hi),
                                  plane.quads(a, z, mid_y - half, mid_y + half)]), pal.object(frame_bgr, BUILDING))


__all__ = ["CrossPlane", "RoadsidePlane", "building_seed", "draw_shop_front", "draw_windows", "facade_quads"]
