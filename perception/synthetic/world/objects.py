"""Random draws of single scene objects: buildings and hedges, trees, poles and signs, vehicles, people.

``layout`` calls these to populate a new scene and ``motion`` calls them again to replace what the
camera has passed, so a drive never runs out of things. Each ``make_*`` consumes draws from the
caller's seeded ``numpy.random.Generator`` in a fixed order: changing that order changes every
seeded scene (the synthetic datasets and the tests rely on it staying put).
"""

from __future__ import annotations

import math

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
)
WINDOW_COLORS = ((55, 50, 45), (150, 120, 95), (95, 85, 75), (170, 160, 140))
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
    return tuple(int(np.clip(c + rng.uniform(-amount, amount), 0, 255)) for c in bgr)


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


def make_tree(rng: np.random.Generator, side: int, d: float, offset: float) -> Tree:
    conifer = rng.random() < 0.25
    n = int(rng.integers(3, 6))
    blobs = [(uniform(rng, -0.5, 0.5), uniform(rng, -0.4, 0.4), uniform(rng, 0.5, 0.8)) for _ in range(n)]
    return Tree(
        side=side, d_m=d, offset_m=offset, trunk_height_m=uniform(rng, 1.5, 3.5), crown_radius_m=uniform(rng, 1.2, 3.2),
        conifer=conifer, crown_bgr=jitter(rng, pick(rng, ((40, 100, 50), (30, 80, 45), (50, 120, 70), (35, 90, 80))), 12),
        blobs=blobs,
    )


def make_pole(rng: np.random.Generator, side: int, d: float, offset: float) -> Pole:
    kind = pick(rng, ("plain", "lamp", "lamp", "sign", "sign"))
    return Pole(
        side=side, d_m=d, offset_m=offset, height_m=uniform(rng, 6.0, 9.0) if kind != "sign" else uniform(rng, 2.4, 3.2),
        kind=kind, sign_kind=pick(rng, SIGN_KINDS), sign_height_m=uniform(rng, 2.0, 2.6),
    )


_VEHICLE_KINDS = {
    # kind: (width, height, length) ranges
    "sedan": ((1.7, 1.85), (1.35, 1.5), (4.2, 4.8)),
    "suv": ((1.8, 2.0), (1.6, 1.85), (4.4, 5.0)),
    "van": ((1.9, 2.1), (1.9, 2.4), (4.8, 5.6)),
    "truck": ((2.4, 2.55), (3.0, 3.8), (7.0, 12.0)),
}


def make_vehicle(rng: np.random.Generator, road: Road, lane: int, d: float, ego_speed: float) -> Vehicle:
    kind = pick(rng, ("sedan", "sedan", "sedan", "suv", "suv", "van", "truck"))
    (w0, w1), (h0, h1), (l0, l1) = _VEHICLE_KINDS[kind]
    oncoming = lane < road.oncoming_lanes
    body = jitter(rng, pick(rng, CAR_COLORS), 10)
    if kind == "truck" and rng.random() < 0.6:
        body = jitter(rng, (225, 225, 225), 12)
    return Vehicle(
        lane=lane, d_m=d, speed_mps=uniform(rng, 8, 20) if oncoming else max(0.0, ego_speed + uniform(rng, -4, 3)),
        oncoming=oncoming, width_m=uniform(rng, w0, w1), height_m=uniform(rng, h0, h1), length_m=uniform(rng, l0, l1),
        kind=kind, body_bgr=body, lateral_m=uniform(rng, -0.25, 0.25),
    )


def make_person(rng: np.random.Generator, road: Road, d: float, *, cyclist: bool, crossing: bool) -> Person:
    if crossing:
        s = uniform(rng, -1.0, road.width_m + 1.0)
        vs = uniform(rng, 0.9, 1.6) * (1 if rng.random() < 0.5 else -1) * (3.0 if cyclist else 1.0)
        vd = 0.0
    elif cyclist:
        s = road.width_m - uniform(rng, 0.5, 1.0)
        vs, vd = 0.0, uniform(rng, 3.0, 7.0)
    else:
        side_left = rng.random() < 0.5 and road.sidewalk_left_m > 0
        if side_left:
            s = -uniform(rng, 0.3, max(0.4, road.sidewalk_left_m - 0.3))
        else:
            width = road.sidewalk_right_m if road.sidewalk_right_m > 0 else 1.5
            s = road.width_m + uniform(rng, 0.3, max(0.4, width - 0.3))
        standing = rng.random() < 0.2
        vs, vd = 0.0, 0.0 if standing else uniform(rng, 0.8, 1.6) * (1 if rng.random() < 0.5 else -1)
    return Person(
        s_m=s, d_m=d, vs_mps=vs, vd_mps=vd, height_m=uniform(rng, 1.55, 1.95) if not cyclist else uniform(rng, 1.65, 1.9),
        shirt_bgr=jitter(rng, tuple(int(x) for x in rng.integers(20, 235, 3)), 0),
        pants_bgr=jitter(rng, pick(rng, ((110, 70, 40), (40, 40, 40), (70, 60, 50), (150, 150, 150), (60, 50, 120))), 10),
        skin_bgr=pick(rng, SKIN_COLORS), phase=uniform(rng, 0, 2 * math.pi), cyclist=cyclist, crossing=crossing,
    )

