"""Random draws of single scene objects: buildings and hedges, trees, poles and signs, vehicles, people.

``layout`` calls these to populate a new scene and ``motion`` calls them again to replace what the
camera has passed, so a drive never runs out of things. Each ``make_*`` consumes draws from the
caller's seeded ``numpy.random.Generator`` in a fixed order: changing that order changes every
seeded scene (the synthetic datasets and the tests rely on it staying put).
"""

from __future__ import annotations

import functools
import math
import random

import numpy as np

from perception.synthetic.world.scene import Building, Person, Pole, Road, Tree, Vehicle

# BGR colours (OpenCV order) of the things in the world.
CAR_COLORS = (
    (235, 235, 235), (30, 30, 32), (180, 180, 175), (110, 110, 112), (35, 35, 180), (150, 70, 30),
    (90, 40, 20), (50, 100, 40), (20, 200, 230), (20, 110, 230), (150, 180, 200), (60, 60, 130),
)
FACADE_COLORS = (
    (150, 180, 200), (60, 80, 150), (140, 140, 140), (210, 210, 205), (85, 85, 90), (150, 125, 100),
    (110, 150, 185), (170, 170, 160), (70, 95, 120),
    # brick red, sandstone, cream render, dark glass, pastel green and pink, concrete
    (50, 60, 140), (120, 170, 200), (190, 215, 230), (95, 80, 60), (160, 190, 160), (170, 160, 210), (120, 125, 125),
)
WINDOW_COLORS = ((55, 50, 45), (150, 120, 95), (95, 85, 75), (170, 160, 140), (140, 110, 80), (200, 190, 175))
SKIN_COLORS = ((90, 120, 170), (60, 90, 140), (130, 160, 210), (40, 60, 90))
SIGN_KINDS = ("round", "triangle", "square", "octagon", "direction")


def uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """One draw from [lo, hi) as a plain float."""
    return float(rng.uniform(lo, hi))


def pick(rng: np.random.Generator, seq):
    """One element of ``seq``, uniformly."""
    return seq[int(rng.integers(len(seq)))]


def jitter(rng: np.random.Generator, bgr, amount: float = 15.0) -> tuple[int, int, int]:
    """``bgr`` with each channel moved by up to +-``amount`` (clipped to 0..255)."""
    # Plain min/max: np.clip on a scalar costs more than the rest of a scene's sampling.
    return tuple(int(min(255.0, max(0.0, float(c + rng.uniform(-amount, amount))))) for c in bgr)


def make_building(rng: np.random.Generator, side: int, d0: float, environment: str) -> Building:
    hedge = environment != "urban" and rng.random() < 0.35
    if hedge:
        return Building(
            side=side, d0_m=d0, length_m=uniform(rng, 6, 30), setback_m=uniform(rng, 0.0, 1.5), height_m=uniform(rng, 0.8, 2.0),
            depth_m=uniform(rng, 0.6, 1.5), facade_bgr=jitter(rng, (40, 100, 55), 15), window_bgr=(0, 0, 0),
            floor_m=3.0, window_spacing_m=3.0, hedge=True,
        )
    tall = environment == "urban"
    return Building(
        side=side,
        d0_m=d0,
        length_m=uniform(rng, 8, 30),
        setback_m=uniform(rng, 0.0, 1.0) if tall else uniform(rng, 2.0, 10.0),
        height_m=uniform(rng, 8, 30) if tall else uniform(rng, 4, 9),
        depth_m=uniform(rng, 8, 15),
        facade_bgr=jitter(rng, pick(rng, FACADE_COLORS), 12),
        window_bgr=jitter(rng, pick(rng, WINDOW_COLORS), 10),
        floor_m=uniform(rng, 2.8, 3.6),
        window_spacing_m=uniform(rng, 2.2, 4.0),
    )


def make_tree(rng: np.random.Generator, side: int, d: float, offset: float, *, bare_p: float = 0.1) -> Tree:
    """A leafy broadleaf or conifer, or (with probability ``bare_p``) a bare winter tree."""
    conifer = rng.random() < 0.25
    n = int(rng.integers(3, 6))
    blobs = [(uniform(rng, -0.5, 0.5), uniform(rng, -0.4, 0.4), uniform(rng, 0.5, 0.8)) for _ in range(n)]
    tree = Tree(
        side=side, d_m=d, offset_m=offset, trunk_height_m=uniform(rng, 1.5, 3.5), crown_radius_m=uniform(rng, 1.2, 3.2),
        conifer=conifer, crown_bgr=jitter(rng, pick(rng, ((40, 100, 50), (30, 80, 45), (50, 120, 70), (35, 90, 80))), 12),
        blobs=blobs,
    )
    if rng.random() < bare_p:
        tree.bare, tree.conifer = True, False
        tree.crown_radius_m = uniform(rng, 2.0, 4.5)  # bare street trees: tall, wide crowns
        tree.crown_bgr = jitter(rng, pick(rng, ((55, 62, 70), (45, 50, 58), (70, 78, 85), (38, 45, 55))), 8)
        tree.branch_seed = int(rng.integers(1 << 31))
    return tree


@functools.lru_cache(maxsize=1024)
def bare_branches(seed: int) -> tuple[tuple[float, float, float, float, float], ...]:
    """A bare tree's limbs, forking from the trunk top out to the crown outline, thickest first.

    Each: x0, y0, x1, y1 (fractions of the crown radius from the crown centre, y up) and the width
    in metres. A pure function of ``seed`` (cached: a drive draws the same trees frame after frame).
    """
    # The standard library's generator: a few hundred scalar draws cost microseconds there, where
    # each numpy Generator call has a fixed overhead that made this the slowest part of a frame.
    rng = random.Random(seed)
    uni = rng.uniform
    out: list[tuple[float, float, float, float, float]] = []
    # (x, y, angle from vertical, length, width m, depth)
    n_limbs = rng.randint(3, 5)
    stack = [(0.0, -0.9, uni(-0.9, 0.9) * (i - 1.5) / 1.5 + uni(-0.2, 0.2), uni(0.7, 1.0), 0.09, 0)
             for i in range(n_limbs)]
    while stack:
        x, y, ang, length, width, depth = stack.pop()
        x1, y1 = x + length * math.sin(ang), y + length * math.cos(ang)
        scale = max(1.0, math.hypot(x1, y1 / 1.1))  # keep tips inside the crown outline
        x1, y1 = x1 / scale, y1 / scale
        out.append((x, y, x1, y1, width))
        if depth < 3:
            for _ in range(rng.randint(2, 3)):
                stack.append((x1, y1, ang + uni(-0.8, 0.8), length * uni(0.45, 0.7), width * 0.55, depth + 1))
    return tuple(sorted(out, key=lambda b: -b[4]))


def make_pole(rng: np.random.Generator, side: int, d: float, offset: float, *, kind: str | None = None) -> Pole:
    kind = kind or pick(rng, ("plain", "lamp", "lamp", "sign", "sign"))
    height = {"sign": (2.4, 3.2), "bollard": (0.8, 1.1)}.get(kind, (6.0, 9.0))
    return Pole(
        side=side, d_m=d, offset_m=offset, height_m=uniform(rng, *height),
        kind=kind, sign_kind=pick(rng, SIGN_KINDS), sign_height_m=uniform(rng, 2.0, 2.6),
    )


_VEHICLE_KINDS = {
    # kind: (width, height, length) ranges in metres, and how often it appears in traffic
    "sedan": ((1.7, 1.85), (1.35, 1.5), (4.2, 4.8)),
    "hatchback": ((1.6, 1.8), (1.4, 1.55), (3.6, 4.2)),
    "suv": ((1.8, 2.0), (1.6, 1.85), (4.4, 5.0)),
    "van": ((1.9, 2.1), (1.9, 2.4), (4.8, 5.6)),
    "pickup": ((1.9, 2.05), (1.75, 1.95), (5.2, 5.9)),
    "truck": ((2.4, 2.55), (3.0, 3.8), (7.0, 12.0)),
    "bus": ((2.45, 2.55), (2.9, 3.3), (10.0, 12.5)),
}
#: Kinds in traffic (repeats set the odds) and parked at the kerb (no trucks or buses).
TRAFFIC_KINDS = ("sedan", "sedan", "sedan", "hatchback", "hatchback", "suv", "suv", "van", "pickup", "truck", "bus")
PARKED_KINDS = ("sedan", "sedan", "hatchback", "hatchback", "suv", "van", "pickup")
BUS_COLORS = ((40, 170, 230), (40, 40, 200), (160, 90, 30), (225, 225, 225), (60, 140, 60))


def make_vehicle(rng: np.random.Generator, road: Road, lane: int, d: float, ego_speed: float, *,
                 parked: bool = False) -> Vehicle:
    """A vehicle in ``lane`` (-1 / ``n_lanes``: parked in the left / right parking strip)."""
    kind = pick(rng, PARKED_KINDS if parked else TRAFFIC_KINDS)
    (w0, w1), (h0, h1), (l0, l1) = _VEHICLE_KINDS[kind]
    oncoming = 0 <= lane < road.oncoming_lanes and not parked
    body = jitter(rng, pick(rng, CAR_COLORS), 10)
    if kind == "truck" and rng.random() < 0.6:
        body = jitter(rng, (225, 225, 225), 12)
    elif kind == "bus":
        body = jitter(rng, pick(rng, BUS_COLORS), 12)
    speed = uniform(rng, 8, 20) if oncoming else max(0.0, ego_speed + uniform(rng, -4, 3))
    return Vehicle(
        lane=lane, d_m=d, speed_mps=0.0 if parked else speed,
        oncoming=oncoming, width_m=uniform(rng, w0, w1), height_m=uniform(rng, h0, h1), length_m=uniform(rng, l0, l1),
        kind=kind, body_bgr=body, lateral_m=uniform(rng, -0.25, 0.25) if not parked else uniform(rng, -0.15, 0.1),
        parked=parked,
    )


def make_person(rng: np.random.Generator, road: Road, d: float, *, cyclist: bool, crossing: bool) -> Person:
    motorbike = cyclist and rng.random() < 0.35
    if crossing:
        s = uniform(rng, -1.0, road.width_m + 1.0)
        vs = uniform(rng, 0.9, 1.6) * (1 if rng.random() < 0.5 else -1) * (3.0 if cyclist else 1.0)
        vd = 0.0
    elif cyclist:
        lane = int(rng.integers(road.oncoming_lanes, road.n_lanes)) if motorbike else road.n_lanes - 1
        s = road.lane_centre(lane) + uniform(rng, -0.6, 0.6) if motorbike else road.width_m - uniform(rng, 0.5, 1.0)
        vs, vd = 0.0, uniform(rng, 3.0, 7.0) * (2.0 if motorbike else 1.0)
    else:
        side_left = rng.random() < 0.5 and road.sidewalk_left_m > 0
        if side_left:
            s = road.kerb_left_s - uniform(rng, 0.3, max(0.4, road.sidewalk_left_m - 0.3))
        else:
            width = road.sidewalk_right_m if road.sidewalk_right_m > 0 else 1.5
            s = road.kerb_right_s + uniform(rng, 0.3, max(0.4, width - 0.3))
        standing = rng.random() < 0.2
        vs, vd = 0.0, 0.0 if standing else uniform(rng, 0.8, 1.6) * (1 if rng.random() < 0.5 else -1)
    child = not cyclist and rng.random() < 0.15
    height = uniform(rng, 1.0, 1.45) if child else uniform(rng, 1.5, 1.95)
    return Person(
        s_m=s, d_m=d, vs_mps=vs, vd_mps=vd, height_m=height if not cyclist else uniform(rng, 1.65, 1.9),
        shirt_bgr=jitter(rng, tuple(int(x) for x in rng.integers(20, 235, 3)), 0),
        pants_bgr=jitter(rng, pick(rng, ((110, 70, 40), (40, 40, 40), (70, 60, 50), (150, 150, 150), (60, 50, 120))), 10),
        skin_bgr=pick(rng, SKIN_COLORS), phase=uniform(rng, 0, 2 * math.pi), cyclist=cyclist, crossing=crossing,
        motorbike=motorbike, build=uniform(rng, 0.8, 1.3), coat=rng.random() < 0.25, bag=rng.random() < 0.3,
    )
