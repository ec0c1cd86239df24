"""What a synthetic road scene contains, how it is drawn at random, and how it moves over time.

A scene is described in road coordinates: ``s`` is the lateral position in metres measured from
the left road edge (negative: left of the road, beyond ``road.width_m``: right of it), ``d`` is
the distance ahead of the ego camera along the road in metres, ``y`` is the height above the road
surface. The renderer (``perception.synthetic.render``) turns this into pixels and labels; this
module only samples and advances the description, with a seeded ``numpy.random.Generator``.

``sample_scene(rng, height=..., width=...)`` draws one independent scene; ``scene.advance(dt_s, rng)``
moves it forward in time (ego motion, traffic, walking pedestrians, slowly changing curvature),
which is what ``SyntheticDrive`` does every frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: Objects further ahead than this are not sampled (they would be a pixel or two).
FAR_OBJECTS_M = 160.0
#: Traffic that falls this far behind the camera is respawned ahead.
BEHIND_M = -8.0

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
TIMES_OF_DAY = ("day", "day", "day", "overcast", "dusk", "night")


@dataclass
class Camera:
    """Pinhole camera: ``focal_px``, principal column ``cx_px``, ``horizon_v_px`` (pitch) and mount height."""

    height_px: int
    width_px: int
    focal_px: float
    cx_px: float
    horizon_v_px: float
    mount_height_m: float


@dataclass
class Road:
    """The road and its surroundings. Curvature is that of the road ahead of the ego camera."""

    n_lanes: int
    lane_width_m: float
    ego_lane: int
    oncoming_lanes: int  # the leftmost lanes carry traffic towards the camera
    boundary_styles: list[tuple[str, str]]  # per boundary 0..n_lanes: (solid|dashed|double|none, white|yellow)
    paint_width_m: float
    dash_length_m: float
    dash_period_m: float
    dash_phase_m: float
    sidewalk_left_m: float  # 0: grass verge instead of a sidewalk
    sidewalk_right_m: float
    kerb_height_m: float
    asphalt_bgr: tuple[float, float, float]
    sidewalk_bgr: tuple[float, float, float]
    grass_bgr: tuple[float, float, float]
    paint_fade: float
    patches: list[tuple[float, float, float, float]]  # asphalt repairs: s0, s1, d0, d1
    crosswalk_d_m: float | None
    # Geometry ahead: lateral offset x(d) = heading*d + curvature*d^2/2 + curvature_rate*d^3/6.
    heading: float = 0.0
    curvature: float = 0.0
    curvature_rate: float = 0.0
    grade_curvature: float = 0.0  # road height y(d) = grade_curvature * d^2 / 2
    ego_offset_m: float = 0.0  # wobble of the ego camera around its lane centre

    @property
    def width_m(self) -> float:
        return self.n_lanes * self.lane_width_m

    @property
    def ego_s(self) -> float:
        return (self.ego_lane + 0.5) * self.lane_width_m + self.ego_offset_m

    def lane_centre(self, lane: int) -> float:
        return (lane + 0.5) * self.lane_width_m


@dataclass
class Lighting:
    """Time of day, exposure, colour cast, sun shadows and the camera's noise and blur."""

    time_of_day: str
    ambient: float  # multiplies reflective materials
    gain: float  # camera exposure, multiplies everything
    tint_bgr: tuple[float, float, float]
    sky_zenith_bgr: tuple[float, float, float]
    sky_horizon_bgr: tuple[float, float, float]
    shadow_factor: float  # 1.0: no hard shadows
    sun_side: float  # +1: shadows fall towards +s, -1: towards -s
    shadow_length: float  # shadow lateral length per metre of object height
    noise_sigma: float
    blur_sigma: float
    texture_strength: float
    texture_offset: tuple[float, float]  # window into the texture table (fractions), fixed for a drive
    clouds: list[tuple[float, float, float, float]]  # u, v (fractions of the sky area), rx, ry (fractions)


@dataclass
class Building:
    side: int  # -1 left, +1 right
    d0_m: float
    length_m: float
    setback_m: float  # from the outer edge of the sidewalk
    height_m: float
    depth_m: float
    facade_bgr: tuple[int, int, int]
    window_bgr: tuple[int, int, int]
    floor_m: float
    window_spacing_m: float
    hedge: bool = False  # a low hedge (vegetation) instead of a house

    @property
    def d_near(self) -> float:
        return self.d0_m


@dataclass
class Tree:
    side: int
    d_m: float
    offset_m: float  # outwards from the road edge
    trunk_height_m: float
    crown_radius_m: float
    conifer: bool
    crown_bgr: tuple[int, int, int]
    blobs: list[tuple[float, float, float]]  # crown blobs: dx, dy, radius (fractions of crown radius)

    @property
    def d_near(self) -> float:
        return self.d_m


@dataclass
class Pole:
    side: int
    d_m: float
    offset_m: float
    height_m: float
    kind: str  # plain | lamp | sign
    sign_kind: str = "round"
    sign_height_m: float = 2.3

    @property
    def d_near(self) -> float:
        return self.d_m


@dataclass
class Vehicle:
    lane: int
    d_m: float  # distance of the face towards the camera
    speed_mps: float  # along its own direction of travel
    oncoming: bool
    width_m: float
    height_m: float
    length_m: float
    kind: str  # sedan | suv | van | truck
    body_bgr: tuple[int, int, int]
    lateral_m: float = 0.0  # offset from the lane centre

    @property
    def d_near(self) -> float:
        return self.d_m


@dataclass
class Person:
    """A pedestrian or a cyclist; ``cyclist`` selects which."""

    s_m: float
    d_m: float
    vs_mps: float  # lateral speed (crossing)
    vd_mps: float  # speed along the road (relative to the ground)
    height_m: float
    shirt_bgr: tuple[int, int, int]
    pants_bgr: tuple[int, int, int]
    skin_bgr: tuple[int, int, int]
    phase: float
    cyclist: bool = False
    crossing: bool = False

    @property
    def d_near(self) -> float:
        return self.d_m


@dataclass
class Scene:
    """Everything the renderer needs for one frame. ``time_s`` and ``travelled_m`` grow in a drive."""

    camera: Camera
    road: Road
    lighting: Lighting
    buildings: list[Building]
    trees: list[Tree]
    poles: list[Pole]
    vehicles: list[Vehicle]
    people: list[Person]
    skyline: list[tuple[float, float, float]]  # distant blocks: u0, u1 (fractions of width), height (px/H)
    treeline: np.ndarray  # heights of the distant tree line (fractions of H) across the width
    environment: str  # urban | suburban | rural
    ego_speed_mps: float
    time_s: float = 0.0
    travelled_m: float = 0.0
    curvature_target: float = 0.0
    grade_target: float = 0.0
    next_curve_change_s: float = 0.0
    wobble_phase: float = 0.0
    extra: dict = field(default_factory=dict)

    def advance(self, dt_s: float, rng: np.random.Generator) -> None:
        """Move the world on by ``dt_s`` seconds of driving (ego motion, traffic, road shape)."""
        _advance(self, dt_s, rng)


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _jitter(rng: np.random.Generator, bgr, amount: float = 15.0) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.uniform(-amount, amount), 0, 255)) for c in bgr)


def sample_camera(rng: np.random.Generator, height: int, width: int) -> Camera:
    hfov = math.radians(_u(rng, 55.0, 78.0))
    focal = (width / 2) / math.tan(hfov / 2)
    return Camera(
        height_px=height,
        width_px=width,
        focal_px=focal,
        cx_px=width / 2 + _u(rng, -0.03, 0.03) * width,
        horizon_v_px=height * _u(rng, 0.40, 0.52),
        mount_height_m=_u(rng, 1.2, 1.7),
    )


def sample_road(rng: np.random.Generator, environment: str) -> Road:
    n_lanes = int(rng.choice([1, 2, 2, 2, 3, 3, 4]))
    lane_w = _u(rng, 2.9, 3.7) if n_lanes > 1 else _u(rng, 3.4, 4.5)
    us_style = rng.random() < 0.5
    two_way = n_lanes >= 2 and rng.random() < 0.6
    oncoming = n_lanes // 2 if two_way else 0
    ego_lane = int(rng.integers(oncoming, n_lanes))
    styles: list[tuple[str, str]] = []
    for b in range(n_lanes + 1):
        if b in (0, n_lanes):
            edge_color = "yellow" if (us_style and b == 0 and not two_way) else "white"
            styles.append(("solid", edge_color) if rng.random() < 0.75 else ("none", "white"))
        elif two_way and b == oncoming:
            if us_style:
                styles.append((_pick(rng, ("double", "double", "solid", "dashed")), "yellow"))
            else:
                styles.append((_pick(rng, ("solid", "dashed", "double")), "white"))
        else:
            styles.append(("dashed", "white") if rng.random() < 0.9 else ("solid", "white"))
    has_sidewalks = environment != "rural" or rng.random() < 0.2
    sw_l = _u(rng, 1.5, 4.0) if has_sidewalks and rng.random() < 0.9 else 0.0
    sw_r = _u(rng, 1.5, 4.0) if has_sidewalks else 0.0
    grey = _u(rng, 60, 115)
    patches = []
    for _ in range(int(rng.integers(0, 4))):
        s0 = _u(rng, 0, n_lanes * lane_w - 1.0)
        d0 = _u(rng, 3, 60)
        patches.append((s0, s0 + _u(rng, 0.8, 3.0), d0, d0 + _u(rng, 2.0, 12.0)))
    dash_len = _u(rng, 2.0, 4.5)
    return Road(
        n_lanes=n_lanes,
        lane_width_m=lane_w,
        ego_lane=ego_lane,
        oncoming_lanes=oncoming,
        boundary_styles=styles,
        paint_width_m=_u(rng, 0.10, 0.22),
        dash_length_m=dash_len,
        dash_period_m=dash_len + _u(rng, 3.0, 9.0),
        dash_phase_m=_u(rng, 0.0, 12.0),
        sidewalk_left_m=sw_l,
        sidewalk_right_m=sw_r,
        kerb_height_m=_u(rng, 0.08, 0.18),
        asphalt_bgr=(grey + _u(rng, -4, 6), grey + _u(rng, -3, 3), grey + _u(rng, -4, 4)),
        sidewalk_bgr=_jitter(rng, _pick(rng, ((165, 170, 175), (140, 150, 160), (185, 185, 180), (120, 135, 150))), 12),
        grass_bgr=_jitter(rng, _pick(rng, ((50, 125, 80), (45, 105, 90), (60, 140, 120), (40, 95, 70))), 12),
        paint_fade=_u(rng, 0.75, 1.0),
        patches=patches,
        crosswalk_d_m=_u(rng, 10.0, 45.0) if (environment == "urban" and rng.random() < 0.35) else None,
        heading=_u(rng, -0.02, 0.02),
        curvature=float(rng.choice([0.0, _u(rng, -1 / 120, 1 / 120), _u(rng, -1 / 400, 1 / 400)])),
        curvature_rate=_u(rng, -2e-5, 2e-5),
        grade_curvature=_u(rng, -2.5e-5, 1.5e-4) if rng.random() < 0.5 else 0.0,
    )


def sample_lighting(rng: np.random.Generator) -> Lighting:
    tod = _pick(rng, TIMES_OF_DAY)
    if tod == "day":
        zen, hor = (_u(rng, 190, 240), _u(rng, 130, 170), _u(rng, 60, 110)), (235, 215, 200)
        ambient, shadow, noise = _u(rng, 0.95, 1.15), _u(rng, 0.45, 0.65), _u(rng, 2, 6)
        tint = (1.0, 1.0, 1.0)
    elif tod == "overcast":
        g = _u(rng, 175, 215)
        zen, hor = (g, g - 3, g - 6), (g + 15, g + 13, g + 10)
        ambient, shadow, noise = _u(rng, 0.8, 1.0), 1.0, _u(rng, 3, 7)
        tint = (1.02, 1.0, 0.97)
    elif tod == "dusk":
        zen, hor = (_u(rng, 110, 150), _u(rng, 70, 100), _u(rng, 60, 90)), (120, 170, 245)
        ambient, shadow, noise = _u(rng, 0.55, 0.75), _u(rng, 0.6, 0.8), _u(rng, 5, 9)
        tint = (0.85, 0.95, 1.15)
    else:
        zen, hor = (_u(rng, 30, 50), _u(rng, 15, 30), _u(rng, 5, 20)), (70, 60, 55)
        ambient, shadow, noise = _u(rng, 0.28, 0.42), 1.0, _u(rng, 7, 12)
        tint = (1.0, 1.0, 1.1)
    clouds = []
    if tod in ("day", "dusk"):
        for _ in range(int(rng.integers(0, 6))):
            clouds.append((_u(rng, 0, 1), _u(rng, 0.05, 0.7), _u(rng, 0.04, 0.15), _u(rng, 0.02, 0.06)))
    return Lighting(
        time_of_day=tod,
        ambient=ambient,
        gain=_u(rng, 0.85, 1.15),
        tint_bgr=tint,
        sky_zenith_bgr=zen,
        sky_horizon_bgr=hor,
        shadow_factor=shadow,
        sun_side=1.0 if rng.random() < 0.5 else -1.0,
        shadow_length=_u(rng, 0.4, 1.6),
        noise_sigma=noise,
        blur_sigma=_u(rng, 0.0, 1.1),
        texture_strength=_u(rng, 0.3, 1.0),
        texture_offset=(_u(rng, 0, 1), _u(rng, 0, 1)),
        clouds=clouds,
    )


def make_building(rng: np.random.Generator, side: int, d0: float, environment: str) -> Building:
    hedge = environment != "urban" and rng.random() < 0.35
    if hedge:
        return Building(
            side=side, d0_m=d0, length_m=_u(rng, 6, 30), setback_m=_u(rng, 0.0, 1.5), height_m=_u(rng, 0.8, 2.0),
            depth_m=_u(rng, 0.6, 1.5), facade_bgr=_jitter(rng, (40, 100, 55), 15), window_bgr=(0, 0, 0),
            floor_m=3.0, window_spacing_m=3.0, hedge=True,
        )
    tall = environment == "urban"
    return Building(
        side=side,
        d0_m=d0,
        length_m=_u(rng, 8, 30),
        setback_m=_u(rng, 0.0, 1.0) if tall else _u(rng, 2.0, 10.0),
        height_m=_u(rng, 8, 30) if tall else _u(rng, 4, 9),
        depth_m=_u(rng, 8, 15),
        facade_bgr=_jitter(rng, _pick(rng, FACADE_COLORS), 12),
        window_bgr=_jitter(rng, _pick(rng, WINDOW_COLORS), 10),
        floor_m=_u(rng, 2.8, 3.6),
        window_spacing_m=_u(rng, 2.2, 4.0),
    )


def make_tree(rng: np.random.Generator, side: int, d: float, offset: float) -> Tree:
    conifer = rng.random() < 0.25
    n = int(rng.integers(3, 6))
    blobs = [(_u(rng, -0.5, 0.5), _u(rng, -0.4, 0.4), _u(rng, 0.5, 0.8)) for _ in range(n)]
    return Tree(
        side=side, d_m=d, offset_m=offset, trunk_height_m=_u(rng, 1.5, 3.5), crown_radius_m=_u(rng, 1.2, 3.2),
        conifer=conifer, crown_bgr=_jitter(rng, _pick(rng, ((40, 100, 50), (30, 80, 45), (50, 120, 70), (35, 90, 80))), 12),
        blobs=blobs,
    )


def make_pole(rng: np.random.Generator, side: int, d: float, offset: float) -> Pole:
    kind = _pick(rng, ("plain", "lamp", "lamp", "sign", "sign"))
    return Pole(
        side=side, d_m=d, offset_m=offset, height_m=_u(rng, 6.0, 9.0) if kind != "sign" else _u(rng, 2.4, 3.2),
        kind=kind, sign_kind=_pick(rng, SIGN_KINDS), sign_height_m=_u(rng, 2.0, 2.6),
    )


_VEHICLE_KINDS = {
    # kind: (width, height, length) ranges
    "sedan": ((1.7, 1.85), (1.35, 1.5), (4.2, 4.8)),
    "suv": ((1.8, 2.0), (1.6, 1.85), (4.4, 5.0)),
    "van": ((1.9, 2.1), (1.9, 2.4), (4.8, 5.6)),
    "truck": ((2.4, 2.55), (3.0, 3.8), (7.0, 12.0)),
}


def make_vehicle(rng: np.random.Generator, road: Road, lane: int, d: float, ego_speed: float) -> Vehicle:
    kind = _pick(rng, ("sedan", "sedan", "sedan", "suv", "suv", "van", "truck"))
    (w0, w1), (h0, h1), (l0, l1) = _VEHICLE_KINDS[kind]
    oncoming = lane < road.oncoming_lanes
    body = _jitter(rng, _pick(rng, CAR_COLORS), 10)
    if kind == "truck" and rng.random() < 0.6:
        body = _jitter(rng, (225, 225, 225), 12)
    return Vehicle(
        lane=lane, d_m=d, speed_mps=_u(rng, 8, 20) if oncoming else max(0.0, ego_speed + _u(rng, -4, 3)),
        oncoming=oncoming, width_m=_u(rng, w0, w1), height_m=_u(rng, h0, h1), length_m=_u(rng, l0, l1),
        kind=kind, body_bgr=body, lateral_m=_u(rng, -0.25, 0.25),
    )


def make_person(rng: np.random.Generator, road: Road, d: float, *, cyclist: bool, crossing: bool) -> Person:
    if crossing:
        s = _u(rng, -1.0, road.width_m + 1.0)
        vs = _u(rng, 0.9, 1.6) * (1 if rng.random() < 0.5 else -1) * (3.0 if cyclist else 1.0)
        vd = 0.0
    elif cyclist:
        s = road.width_m - _u(rng, 0.5, 1.0)
        vs, vd = 0.0, _u(rng, 3.0, 7.0)
    else:
        side_left = rng.random() < 0.5 and road.sidewalk_left_m > 0
        if side_left:
            s = -_u(rng, 0.3, max(0.4, road.sidewalk_left_m - 0.3))
        else:
            width = road.sidewalk_right_m if road.sidewalk_right_m > 0 else 1.5
            s = road.width_m + _u(rng, 0.3, max(0.4, width - 0.3))
        standing = rng.random() < 0.2
        vs, vd = 0.0, 0.0 if standing else _u(rng, 0.8, 1.6) * (1 if rng.random() < 0.5 else -1)
    return Person(
        s_m=s, d_m=d, vs_mps=vs, vd_mps=vd, height_m=_u(rng, 1.55, 1.95) if not cyclist else _u(rng, 1.65, 1.9),
        shirt_bgr=_jitter(rng, tuple(int(x) for x in rng.integers(20, 235, 3)), 0),
        pants_bgr=_jitter(rng, _pick(rng, ((110, 70, 40), (40, 40, 40), (70, 60, 50), (150, 150, 150), (60, 50, 120))), 10),
        skin_bgr=_pick(rng, SKIN_COLORS), phase=_u(rng, 0, 2 * math.pi), cyclist=cyclist, crossing=crossing,
    )


def _sample_side_objects(rng, scene_env: str, road: Road, side: int, d_from: float, d_to: float):
    buildings: list[Building] = []
    density = {"urban": 0.9, "suburban": 0.45, "rural": 0.12}[scene_env]
    d = d_from
    while d < d_to:
        b = make_building(rng, side, d, scene_env)
        if rng.random() < density:
            buildings.append(b)
            d += b.length_m + _u(rng, 0.0, 6.0)
        else:
            d += _u(rng, 6.0, 25.0)
    trees: list[Tree] = []
    tree_density = {"urban": 0.3, "suburban": 0.6, "rural": 0.75}[scene_env]
    d = d_from + _u(rng, 0, 10)
    sidewalk = road.sidewalk_left_m if side < 0 else road.sidewalk_right_m
    while d < d_to:
        if rng.random() < tree_density:
            offset = _u(rng, 0.6, max(0.8, sidewalk - 0.4)) if sidewalk > 0 else _u(rng, 1.5, 6.0)
            trees.append(make_tree(rng, side, d, offset))
        d += _u(rng, 7.0, 20.0)
    poles: list[Pole] = []
    d = d_from + _u(rng, 0, 15)
    while d < d_to:
        poles.append(make_pole(rng, side, d, _u(rng, 0.3, 0.6)))
        d += _u(rng, 15.0, 40.0)
    return buildings, trees, poles


def sample_scene(rng: np.random.Generator, *, height: int, width: int) -> Scene:
    """Draw one independent random scene for an image of ``height`` x ``width`` pixels."""
    environment = _pick(rng, ("urban", "urban", "suburban", "rural"))
    camera = sample_camera(rng, height, width)
    road = sample_road(rng, environment)
    lighting = sample_lighting(rng)
    ego_speed = _u(rng, 7.0, 14.0) if environment == "urban" else _u(rng, 12.0, 25.0)
    buildings, trees, poles = [], [], []
    for side in (-1, 1):
        b, t, p = _sample_side_objects(rng, environment, road, side, -30.0, FAR_OBJECTS_M + 40.0)
        buildings += b
        trees += t
        poles += p
    vehicles: list[Vehicle] = []
    for lane in range(road.n_lanes):
        d = _u(rng, 6.0, 30.0)
        while d < FAR_OBJECTS_M:
            if rng.random() < 0.55 and not (lane == road.ego_lane and d < 7.0):
                v = make_vehicle(rng, road, lane, d, ego_speed)
                vehicles.append(v)
                d += v.length_m
            d += _u(rng, 8.0, 40.0)
    people: list[Person] = []
    n_ped = int(rng.integers(0, 7)) if environment != "rural" else int(rng.integers(0, 3))
    for _ in range(n_ped):
        people.append(make_person(rng, road, _u(rng, 4.0, 60.0), cyclist=False, crossing=rng.random() < 0.15))
    for _ in range(int(rng.integers(0, 3))):
        people.append(make_person(rng, road, _u(rng, 5.0, 50.0), cyclist=True, crossing=rng.random() < 0.25))
    # Distant skyline (blocks of buildings) and tree line at the horizon.
    skyline = []
    if environment != "rural" or rng.random() < 0.3:
        u = _u(rng, -0.05, 0.05)
        while u < 1.0:
            w = _u(rng, 0.02, 0.09)
            if rng.random() < 0.8:
                skyline.append((u, u + w, _u(rng, 0.02, 0.16 if environment == "urban" else 0.06)))
            u += w
    knots = rng.uniform(0.005, 0.06, size=12)
    treeline = np.interp(np.linspace(0, 11, 64), np.arange(12), knots) + rng.uniform(0, 0.012, size=64)
    return Scene(
        camera=camera, road=road, lighting=lighting, buildings=buildings, trees=trees, poles=poles,
        vehicles=vehicles, people=people, skyline=skyline, treeline=treeline, environment=environment,
        ego_speed_mps=ego_speed, curvature_target=road.curvature, grade_target=road.grade_curvature,
        next_curve_change_s=_u(rng, 3.0, 8.0), wobble_phase=_u(rng, 0, 2 * math.pi),
    )


# --------------------------------------------------------------------------------------------
# Motion
# --------------------------------------------------------------------------------------------


def _advance(scene: Scene, dt: float, rng: np.random.Generator) -> None:
    road = scene.road
    step = scene.ego_speed_mps * dt
    scene.time_s += dt
    scene.travelled_m += step
    # Road shape: curvature eases towards a target that changes every few seconds; the rate term
    # shows the change coming in the distance before the camera reaches it.
    if scene.time_s >= scene.next_curve_change_s:
        scene.curvature_target = float(rng.choice([0.0, _u(rng, -1 / 150, 1 / 150), _u(rng, -1 / 500, 1 / 500)]))
        scene.grade_target = _u(rng, -2.5e-5, 1.2e-4) if rng.random() < 0.4 else 0.0
        scene.next_curve_change_s = scene.time_s + _u(rng, 4.0, 10.0)
    ease = min(1.0, dt / 2.5)
    road.curvature_rate = (scene.curvature_target - road.curvature) / max(scene.ego_speed_mps * 2.5, 1.0)
    road.curvature += (scene.curvature_target - road.curvature) * ease
    road.grade_curvature += (scene.grade_target - road.grade_curvature) * ease
    road.ego_offset_m = 0.25 * math.sin(0.35 * scene.time_s + scene.wobble_phase)
    road.heading = 0.012 * math.cos(0.35 * scene.time_s + scene.wobble_phase)
    road.dash_phase_m = (road.dash_phase_m - step) % road.dash_period_m
    road.patches = [(s0, s1, d0 - step, d1 - step) for s0, s1, d0, d1 in road.patches]
    if road.patches and road.patches[0][3] < 0:
        s0 = _u(rng, 0, road.width_m - 1.0)
        d0 = _u(rng, 60, 90)
        road.patches = road.patches[1:] + [(s0, s0 + _u(rng, 0.8, 3.0), d0, d0 + _u(rng, 2.0, 12.0))]
    if road.crosswalk_d_m is not None:
        road.crosswalk_d_m -= step
        if road.crosswalk_d_m < -5:
            road.crosswalk_d_m = _u(rng, 120, 250)
    # Static roadside objects pass by; what falls behind is placed again beyond the furthest one.
    for b in scene.buildings:
        b.d0_m -= step
    for side in (-1, 1):
        mine = [b for b in scene.buildings if b.side == side]
        for b in mine:
            if b.d0_m + b.length_m < -20:
                far = max(x.d0_m + x.length_m for x in mine)
                new = make_building(rng, side, far + _u(rng, 0.0, 15.0), scene.environment)
                b.__dict__.update(new.__dict__)
    for group in (scene.trees, scene.poles):
        for obj in group:
            obj.d_m -= step
        for obj in group:
            if obj.d_m < -3:
                far = max(o.d_m for o in group if o.side == obj.side)
                obj.d_m = far + _u(rng, 7.0, 30.0)
                if isinstance(obj, Pole):
                    obj.__dict__.update(make_pole(rng, obj.side, obj.d_m, obj.offset_m).__dict__)
    # Traffic.
    for v in scene.vehicles:
        v.d_m += (-v.speed_mps - scene.ego_speed_mps if v.oncoming else v.speed_mps - scene.ego_speed_mps) * dt
        if v.d_m < BEHIND_M or v.d_m > FAR_OBJECTS_M + 20:
            lane = int(rng.integers(road.n_lanes))
            new = make_vehicle(rng, road, lane, _u(rng, FAR_OBJECTS_M - 30, FAR_OBJECTS_M), scene.ego_speed_mps)
            if not new.oncoming:
                new.speed_mps = max(0.0, scene.ego_speed_mps - _u(rng, 0.5, 4.0))
            v.__dict__.update(new.__dict__)
    # Keep a safe gap behind vehicles in the same lane (no driving through each other).
    by_lane: dict[int, list[Vehicle]] = {}
    for v in scene.vehicles:
        by_lane.setdefault(v.lane, []).append(v)
    for lane_vehicles in by_lane.values():
        lane_vehicles.sort(key=lambda v: v.d_m)
        for near, far in zip(lane_vehicles, lane_vehicles[1:], strict=False):
            if far.d_m - (near.d_m + near.length_m) >= 6.0:
                continue
            if near.oncoming:  # coming towards us: the far one follows the near one
                far.speed_mps = min(far.speed_mps, near.speed_mps)
                far.d_m = near.d_m + near.length_m + 6.0
            else:  # same direction: the near one follows the far one
                near.speed_mps = min(near.speed_mps, far.speed_mps)
                near.d_m = far.d_m - near.length_m - 6.0
        for v in lane_vehicles:
            if v.lane == road.ego_lane and not v.oncoming and 0 < v.d_m < 8.0:
                v.d_m = 8.0
                v.speed_mps = max(v.speed_mps, scene.ego_speed_mps)
    for p in scene.people:
        p.d_m += (p.vd_mps - scene.ego_speed_mps) * dt
        p.s_m += p.vs_mps * dt
        p.phase += dt * (2.0 * math.pi * (0.9 if not p.cyclist else 1.2)) * (abs(p.vd_mps) + abs(p.vs_mps) > 0.1)
        if p.crossing and not (-2.0 < p.s_m < road.width_m + 2.0):
            p.vs_mps = -p.vs_mps
        if p.d_m < BEHIND_M or p.d_m > FAR_OBJECTS_M:
            new = make_person(rng, road, _u(rng, 60.0, 120.0), cyclist=p.cyclist, crossing=p.crossing)
            p.__dict__.update(new.__dict__)
