"""What a synthetic road scene is made of: the plain data the sampler fills in and the renderer draws.

A scene is described in road coordinates: ``s`` is the lateral position in metres measured from
the left road edge (negative: left of the road, beyond ``road.width_m``: right of it), ``d`` is
the distance ahead of the ego camera along the road in metres, ``y`` is the height above the road
surface. ``layout.sample_scene`` fills these in at random, ``motion.advance_scene`` moves them on,
and ``perception.synthetic.render`` turns them into pixels and labels. Colours are BGR (OpenCV order).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Camera:
    """Pinhole camera: ``focal_px``, principal column ``cx_px``, ``horizon_v_px`` (pitch) and mount height."""

    height_px: int
    width_px: int
    focal_px: float
    cx_px: float
    horizon_v_px: float
    mount_height_m: float
    roll_rad: float = 0.0  # rotation of the image about the optical axis
    distortion_k1: float = 0.0  # radial lens distortion (negative: barrel, as on wide dash cams)
    hood_px: float = 0.0  # rows of the ego car's hood visible at the bottom (0: none)
    hood_curve: float = 0.0  # how much the hood edge bows up in the middle (fraction of hood_px)
    hood_bgr: tuple[int, int, int] = (40, 40, 40)


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
    parking_left_m: float = 0.0  # parking strip between the road and the left kerb (asphalt, road class)
    parking_right_m: float = 0.0
    cracks: list[tuple[float, float, float, float]] = field(default_factory=list)  # s0, d0, s1, d1 polylines
    junction_d_m: float | None = None  # a side road crossing at this distance
    junction_width_m: float = 8.0
    # The sidewalk's surface: plain concrete panels, a grid of paving slabs, small bricks or
    # asphalt (often close to the road's own colour, so only the kerb and the geometry tell them
    # apart); joints every slab_m = (along the road, across it).
    sidewalk_style: str = "plain"  # plain | slabs | bricks | asphalt
    slab_m: tuple[float, float] = (2.0, 0.0)
    kerb_bgr: tuple[float, float, float] | None = None  # None: a stone a little lighter than the sidewalk
    kerb_width_m: float = 0.25
    # Kerbside lines, per side (left, right): none | yellow | double_yellow | white. Waiting
    # restrictions in the UK and much of Europe, edge lines elsewhere: paint a hand's width from
    # the kerb, on the road, so the surface beyond the line is pavement however alike the two look.
    kerb_lines: tuple[str, str] = ("none", "none")
    # Dropped kerbs (driveway and pedestrian crossings): (side, d0, d1) stretches where the kerb is
    # flush with the road, so only the surface and the geometry tell the pavement from the road.
    dropped_kerbs: list[tuple[int, float, float]] = field(default_factory=list)
    # Forecourts, per side: metres of ground beyond the pavement paved like it (shop fronts,
    # station forecourts, private frontages), labelled sidewalk; 0: a verge or the building line.
    forecourt_m: tuple[float, float] = (0.0, 0.0)
    # A T-junction ahead (town scenes only): the road ends at ``road_end_d_m`` in a crossing road
    # ``road_end_width_m`` wide; beyond it a pavement ``road_end_pavement_m`` deep and a row of
    # buildings facing the camera (``Scene.frontage``). The pavements on this side of the crossing
    # road run round the corners, ``road_end_corner_m`` deep. None: the road goes on.
    road_end_d_m: float | None = None
    road_end_width_m: float = 9.0
    road_end_pavement_m: float = 3.0
    road_end_corner_m: float = 3.0

    @property
    def width_m(self) -> float:
        return self.n_lanes * self.lane_width_m

    @property
    def frontage_d_m(self) -> float | None:
        """Distance of the facades across the end of the road (None: no T-junction ahead)."""
        if self.road_end_d_m is None:
            return None
        return self.road_end_d_m + self.road_end_width_m + self.road_end_pavement_m

    @property
    def ego_s(self) -> float:
        return (self.ego_lane + 0.5) * self.lane_width_m + self.ego_offset_m

    @property
    def kerb_left_s(self) -> float:
        """Lateral position of the left kerb (the road edge plus any parking strip)."""
        return -self.parking_left_m

    @property
    def kerb_right_s(self) -> float:
        return self.width_m + self.parking_right_m

    def lane_centre(self, lane: int) -> float:
        """Centre of a lane; lane -1 is the left parking strip and lane ``n_lanes`` the right one."""
        if lane < 0:
            return -self.parking_left_m / 2
        if lane >= self.n_lanes:
            return self.width_m + self.parking_right_m / 2
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
    # Weather and the camera's image pipeline (image only; labels never change).
    fog_density: float = 0.0  # extinction per metre (0: clear air)
    wet: float = 0.0  # 0 dry .. 1 soaked: dark, mirror-like asphalt
    rain: float = 0.0  # 0 .. 1: streak density
    headlights: bool = False  # the ego car's low beams light the road ahead
    white_balance_bgr: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gamma: float = 1.0
    saturation: float = 1.0
    vignette: float = 0.0  # corner darkening 0..1
    motion_blur_px: float = 0.0  # length of the blur streak for a 640-pixel-wide sensor
    motion_blur_angle: float = 0.0  # degrees: under 45 a horizontal streak, else a vertical one
    jpeg_quality: int = 0  # 0: no compression artefacts
    bloom: float = 0.0  # glow around bright lamps


@dataclass
class Building:
    """A house, shop or hedge along the road (``side`` -1 left, +1 right), or across the end of the
    road at a T-junction (``side`` 0, in ``Scene.frontage``): its face then looks at the camera,
    ``d0_m`` and ``length_m`` run across the road (lateral ``s``) and ``setback_m`` and ``depth_m``
    are unused."""

    side: int  # -1 left, +1 right, 0 across the end of the road
    d0_m: float  # where the face starts: along the road (sides), across it (frontage)
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
    # A bare (winter) tree: branches as thin strokes, sky seen through the crown, which is still
    # labelled vegetation inside its outline, as an annotator draws it. The branches grow from
    # ``branch_seed`` when the tree is drawn (``objects.bare_branches``), not for every tree sampled.
    bare: bool = False
    branch_seed: int = 0

    @property
    def d_near(self) -> float:
        return self.d_m


@dataclass
class Pole:
    side: int
    d_m: float
    offset_m: float
    height_m: float
    kind: str  # plain | lamp | sign | bollard (a knee-high post at the kerb)
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
    kind: str  # sedan | hatchback | suv | van | pickup | truck | bus
    body_bgr: tuple[int, int, int]
    lateral_m: float = 0.0  # offset from the lane centre
    parked: bool = False

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
    motorbike: bool = False  # a motorcyclist (drawn bulkier, labelled cyclist)
    build: float = 1.0  # width relative to the height (0.8 slim .. 1.3 broad)
    coat: bool = False  # a long coat or dress down to the knees
    bag: bool = False  # a backpack or shoulder bag

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
    frontage: list[Building] = field(default_factory=list)  # across the end of the road (side 0)
    extra: dict = field(default_factory=dict)
