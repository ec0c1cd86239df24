"""Draw one independent random scene: camera, road (lanes, paint, kerbs), lighting, roadside objects,
traffic, people and the distant skyline.

    scene = sample_scene(np.random.default_rng(7), height=360, width=480)

The order of the draws from ``rng`` is part of the contract: the same seed gives the same scene.
"""

from __future__ import annotations

import math

import numpy as np

from perception.synthetic.world.junction import add_road_end
from perception.synthetic.world.objects import (
    jitter,
    make_building,
    make_person,
    make_pole,
    make_tree,
    make_vehicle,
    pick,
    uniform,
)
from perception.synthetic.world.scene import (
    Building,
    Camera,
    Lighting,
    Person,
    Pole,
    Road,
    Scene,
    Tree,
    Vehicle,
)

#: Objects further ahead than this are not sampled (they would be a pixel or two).
FAR_OBJECTS_M = 160.0
TIMES_OF_DAY = ("day", "day", "day", "overcast", "overcast", "dusk", "night", "night")


HOOD_COLORS = ((235, 235, 235), (25, 25, 28), (170, 170, 168), (95, 95, 98), (30, 30, 150), (120, 60, 25), (45, 70, 40))


def sample_camera(rng: np.random.Generator, height: int, width: int) -> Camera:
    """Dash cams and roof cameras: field of view, mount height, pitch, roll, lens distortion and,
    in about a third of the scenes, the ego car's hood across the bottom of the frame."""
    hfov = math.radians(uniform(rng, 48.0, 100.0))
    focal = (width / 2) / math.tan(hfov / 2)
    hood = rng.random() < 0.35
    return Camera(
        height_px=height,
        width_px=width,
        focal_px=focal,
        cx_px=width / 2 + uniform(rng, -0.03, 0.03) * width,
        horizon_v_px=height * uniform(rng, 0.36, 0.56),
        mount_height_m=uniform(rng, 1.1, 2.3),
        roll_rad=math.radians(uniform(rng, -3.5, 3.5)) if rng.random() < 0.6 else 0.0,
        # Wider lenses bend more; the draw keeps mild pincushion rare.
        distortion_k1=-uniform(rng, 0.0, 0.25) * (hfov / math.radians(100.0)) if rng.random() < 0.6 else 0.0,
        hood_px=height * uniform(rng, 0.05, 0.17) if hood else 0.0,
        hood_curve=uniform(rng, 0.2, 0.9),
        hood_bgr=jitter(rng, pick(rng, HOOD_COLORS), 10),
    )


def sample_road(rng: np.random.Generator, environment: str) -> Road:
    n_lanes = int(rng.choice([1, 2, 2, 2, 3, 3, 4]))
    lane_w = uniform(rng, 2.9, 3.7) if n_lanes > 1 else uniform(rng, 3.4, 4.5)
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
                styles.append((pick(rng, ("double", "double", "solid", "dashed")), "yellow"))
            else:
                styles.append((pick(rng, ("solid", "dashed", "double")), "white"))
        else:
            styles.append(("dashed", "white") if rng.random() < 0.9 else ("solid", "white"))
    has_sidewalks = environment != "rural" or rng.random() < 0.2
    widest = 6.0 if environment == "urban" else 4.0  # town pavements reach 5-6 m
    sw_l = uniform(rng, 1.5, widest) if has_sidewalks and rng.random() < 0.9 else 0.0
    sw_r = uniform(rng, 1.5, widest) if has_sidewalks else 0.0
    grey = uniform(rng, 60, 115) if rng.random() < 0.85 else uniform(rng, 115, 150)  # asphalt or concrete
    warm = uniform(rng, -8, 8)  # brownish or bluish asphalt
    patches = []
    for _ in range(int(rng.integers(0, 4))):
        s0 = uniform(rng, 0, n_lanes * lane_w - 1.0)
        d0 = uniform(rng, 3, 60)
        patches.append((s0, s0 + uniform(rng, 0.8, 3.0), d0, d0 + uniform(rng, 2.0, 12.0)))
    dash_len = uniform(rng, 2.0, 4.5)
    asphalt = (grey - warm + uniform(rng, -4, 6), grey + uniform(rng, -3, 3), grey + warm + uniform(rng, -4, 4))
    surface = _sample_sidewalk_surface(rng, asphalt)
    kerbside = _sample_kerbside(rng, environment, sw_l, sw_r)
    return Road(
        n_lanes=n_lanes,
        lane_width_m=lane_w,
        ego_lane=ego_lane,
        oncoming_lanes=oncoming,
        boundary_styles=styles,
        paint_width_m=uniform(rng, 0.10, 0.22),
        dash_length_m=dash_len,
        dash_period_m=dash_len + uniform(rng, 3.0, 9.0),
        dash_phase_m=uniform(rng, 0.0, 12.0),
        sidewalk_left_m=sw_l,
        sidewalk_right_m=sw_r,
        kerb_height_m=uniform(rng, 0.05, 0.18),
        asphalt_bgr=asphalt,
        grass_bgr=jitter(rng, pick(rng, ((50, 125, 80), (45, 105, 90), (60, 140, 120), (40, 95, 70))), 12),
        paint_fade=uniform(rng, 0.75, 1.0) if rng.random() < 0.6 else uniform(rng, 0.4, 0.75),
        patches=patches,
        crosswalk_d_m=uniform(rng, 10.0, 45.0) if (environment == "urban" and rng.random() < 0.35) else None,
        heading=uniform(rng, -0.02, 0.02),
        curvature=float(rng.choice([0.0, uniform(rng, -1 / 120, 1 / 120), uniform(rng, -1 / 400, 1 / 400)])),
        curvature_rate=uniform(rng, -2e-5, 2e-5),
        grade_curvature=uniform(rng, -2.5e-5, 1.5e-4) if rng.random() < 0.5 else 0.0,
        parking_left_m=uniform(rng, 2.0, 2.6) if (sw_l > 0 and environment != "rural" and rng.random() < 0.3) else 0.0,
        parking_right_m=uniform(rng, 2.0, 2.6) if (sw_r > 0 and environment != "rural" and rng.random() < 0.5) else 0.0,
        cracks=_sample_cracks(rng, n_lanes * lane_w),
        junction_d_m=uniform(rng, 12.0, 70.0) if (environment != "rural" and rng.random() < 0.3) else None,
        junction_width_m=uniform(rng, 6.0, 12.0),
        **surface,
        **kerbside,
    )


#: Sidewalk colours (BGR): pale and darker concrete, and red, ochre and grey bricks.
SIDEWALK_COLORS = ((165, 170, 175), (140, 150, 160), (185, 185, 180), (120, 135, 150))
BRICK_COLORS = ((80, 95, 150), (95, 120, 165), (70, 80, 120), (120, 125, 130))


def _sample_sidewalk_surface(rng: np.random.Generator, asphalt: tuple[float, float, float]) -> dict:
    """The sidewalk's style, colour, joint spacing and kerbstone (``Road`` keyword arguments).

    A good share of sidewalks are deliberately close to the road's grey (asphalt pavements, grey
    slabs), so a model must tell them apart by the kerb, the joints and the geometry.
    """
    style = pick(rng, ("plain", "slabs", "slabs", "slabs", "bricks", "asphalt", "asphalt", "asphalt"))
    # Tarmac footways are often as dark as the road or darker (older, dirtier surfaces).
    road_like = np.asarray(asphalt) * uniform(rng, 0.85, 1.15) + uniform(rng, -8.0, 12.0)
    if style == "asphalt":
        colour = road_like
    elif style == "bricks":
        colour = pick(rng, BRICK_COLORS)
    elif style == "slabs" and rng.random() < 0.5:
        colour = road_like + uniform(rng, 5.0, 25.0)  # grey slabs a shade off the asphalt
    else:
        colour = pick(rng, SIDEWALK_COLORS)
    slab_m = {
        "plain": (uniform(rng, 1.2, 3.0), 0.0),
        "slabs": (uniform(rng, 0.4, 1.0), uniform(rng, 0.4, 1.0)),
        "bricks": (uniform(rng, 0.2, 0.3), uniform(rng, 0.1, 0.2)),
        "asphalt": (0.0, 0.0),
    }[style]
    kerb = pick(rng, ("light", "granite", "dark", "worn"))
    base = np.asarray(colour, np.float64)
    kerb_bgr = {
        "light": base * 1.15 + 18,
        "granite": np.full(3, uniform(rng, 110, 175)),
        "dark": base * 0.75,
        "worn": base * uniform(rng, 0.95, 1.08),  # a kerbstone worn to the pavement's own grey
    }[kerb]
    return {
        "sidewalk_style": style,
        "sidewalk_bgr": jitter(rng, colour, 8 if style == "asphalt" else 12),
        "slab_m": slab_m,
        "kerb_bgr": jitter(rng, np.minimum(kerb_bgr, 255.0), 8),
        "kerb_width_m": uniform(rng, 0.12, 0.35),
    }


def _sample_kerbside(rng: np.random.Generator, environment: str, sw_l: float, sw_r: float) -> dict:
    """Kerbside lines, dropped kerbs and forecourts (``Road`` keyword arguments).

    Streets where the pavement's surface looks like the road's, and what still tells them apart:
    waiting-restriction or edge lines along the kerb, kerbs dropped flush at driveways and
    crossings, and frontages paved like the pavement out to the buildings.
    """
    town = environment != "rural"
    lines = []
    for sidewalk in (sw_l, sw_r):
        if sidewalk > 0 and town and rng.random() < 0.45:
            lines.append(pick(rng, ("double_yellow", "double_yellow", "yellow", "white")))
        else:
            lines.append("none")
    dropped: list[tuple[int, float, float]] = []
    forecourt = []
    for side, sidewalk in ((-1, sw_l), (1, sw_r)):
        if sidewalk > 0 and town and rng.random() < 0.5:
            d = uniform(rng, 3.0, 30.0)
            while d < 120.0:
                length = uniform(rng, 2.5, 8.0)
                dropped.append((side, d, d + length))
                d += length + uniform(rng, 10.0, 45.0)
        forecourt.append(uniform(rng, 1.5, 10.0) if sidewalk > 0 and town and rng.random() < 0.3 else 0.0)
    return {"kerb_lines": tuple(lines), "dropped_kerbs": dropped, "forecourt_m": tuple(forecourt)}


def _sample_cracks(rng: np.random.Generator, road_width: float) -> list[tuple[float, float, float, float]]:
    """Short crack segments (s0, d0, s1, d1) on worn roads: some chains along the road, some across."""
    cracks: list[tuple[float, float, float, float]] = []
    if rng.random() < 0.45:
        for _ in range(int(rng.integers(2, 7))):
            s, d = uniform(rng, 0.2, road_width - 0.2), uniform(rng, 3.0, 40.0)
            along = rng.random() < 0.6
            for _ in range(int(rng.integers(3, 9))):
                ds, dd = (uniform(rng, -0.3, 0.3), uniform(rng, 0.5, 2.0)) if along else (uniform(rng, 0.3, 0.8), uniform(rng, -0.3, 0.3))
                cracks.append((s, d, s + ds, d + dd))
                s, d = s + ds, d + dd
    return cracks


def sample_lighting(rng: np.random.Generator) -> Lighting:
    """Time of day, weather (overcast, rain, wet roads, fog) and the camera's image pipeline."""
    tod = pick(rng, TIMES_OF_DAY)
    if tod == "day":
        zen, hor = (uniform(rng, 190, 240), uniform(rng, 130, 170), uniform(rng, 60, 110)), (235, 215, 200)
        if rng.random() < 0.35:  # hazy or over-exposed: a pale, nearly white sky, as dash cams often show
            pale = uniform(rng, 205, 245)
            zen, hor = (pale + uniform(rng, 0, 10), pale, pale - uniform(rng, 0, 25)), (min(255, pale + 10),) * 3
        ambient, shadow, noise = uniform(rng, 0.95, 1.15), uniform(rng, 0.35, 0.65), uniform(rng, 2, 6)
        tint = (1.0, 1.0, 1.0)
    elif tod == "overcast":
        g = uniform(rng, 175, 215)
        zen, hor = (g, g - 3, g - 6), (g + 15, g + 13, g + 10)
        ambient, shadow, noise = uniform(rng, 0.8, 1.0), 1.0, uniform(rng, 3, 7)
        tint = (1.02, 1.0, 0.97)
    elif tod == "dusk":
        zen, hor = (uniform(rng, 110, 150), uniform(rng, 70, 100), uniform(rng, 60, 90)), (120, 170, 245)
        ambient, shadow, noise = uniform(rng, 0.45, 0.75), uniform(rng, 0.6, 0.8), uniform(rng, 5, 9)
        tint = (0.85, 0.95, 1.15)
    else:
        zen, hor = (uniform(rng, 30, 50), uniform(rng, 15, 30), uniform(rng, 5, 20)), (70, 60, 55)
        if rng.random() < 0.4:  # city glow: orange-brown night sky
            hor = (uniform(rng, 40, 70), uniform(rng, 70, 100), uniform(rng, 100, 140))
        ambient, shadow, noise = uniform(rng, 0.12, 0.32), 1.0, uniform(rng, 6, 12)
        tint = (0.9, 1.0, 1.2) if rng.random() < 0.6 else (1.1, 1.0, 0.9)  # sodium or LED street light
    # Weather: rain or a wet road (any time but full sun), fog (by day or dusk).
    rain = uniform(rng, 0.2, 1.0) if (tod != "day" and rng.random() < 0.3) else 0.0
    wet = max(rain, uniform(rng, 0.3, 1.0) if (tod != "day" and rng.random() < 0.2) else 0.0)
    fog = uniform(rng, 0.006, 0.045) if (tod in ("overcast", "dusk", "day") and rng.random() < 0.15) else 0.0
    # Light haze (aerial perspective): distant things paler under a sky that stays as it is.
    haze = uniform(rng, 0.002, 0.006) if (not fog and tod != "night" and rng.random() < 0.35) else 0.0
    if fog or rain:
        g = {"night": uniform(rng, 30, 60), "dusk": uniform(rng, 110, 150)}.get(tod, uniform(rng, 150, 210))
        zen, hor = (g + 4, g + 2, g), (g + 12, g + 12, g + 10)
        shadow = 1.0
        ambient *= uniform(rng, 0.8, 1.0)
    clouds = []
    if tod in ("day", "dusk") and not (fog or rain):
        for _ in range(int(rng.integers(0, 6))):
            clouds.append((uniform(rng, 0, 1), uniform(rng, 0.05, 0.7), uniform(rng, 0.04, 0.15), uniform(rng, 0.02, 0.06)))
    wb = (uniform(rng, 0.85, 1.15), 1.0, uniform(rng, 0.85, 1.15)) if rng.random() < 0.7 else (1.0, 1.0, 1.0)
    return Lighting(
        time_of_day=tod,
        ambient=ambient,
        gain=uniform(rng, 0.85, 1.15) if rng.random() < 0.6 else uniform(rng, 0.6, 1.5),
        tint_bgr=tint,
        sky_zenith_bgr=zen,
        sky_horizon_bgr=hor,
        shadow_factor=shadow,
        sun_side=1.0 if rng.random() < 0.5 else -1.0,
        shadow_length=uniform(rng, 0.4, 2.2),
        noise_sigma=noise * (uniform(rng, 0.5, 2.0) if rng.random() < 0.5 else 1.0),
        blur_sigma=uniform(rng, 0.0, 1.1),
        texture_strength=uniform(rng, 0.3, 1.0),
        texture_offset=(uniform(rng, 0, 1), uniform(rng, 0, 1)),
        clouds=clouds,
        fog_density=fog or haze,
        wet=wet,
        rain=rain,
        headlights=tod == "night" or (tod == "dusk" and rng.random() < 0.5),
        white_balance_bgr=wb,
        gamma=uniform(rng, 0.75, 1.3) if rng.random() < 0.5 else 1.0,
        saturation=uniform(rng, 0.5, 1.35) if rng.random() < 0.5 else 1.0,
        vignette=uniform(rng, 0.1, 0.5) if rng.random() < 0.4 else 0.0,
        motion_blur_px=uniform(rng, 2.0, 9.0) if rng.random() < 0.25 else 0.0,
        motion_blur_angle=uniform(rng, -20.0, 20.0) if rng.random() < 0.7 else uniform(rng, 60, 120),
        jpeg_quality=int(rng.integers(25, 90)) if rng.random() < 0.45 else 0,
        bloom=uniform(rng, 0.4, 1.0),
    )

def _sample_side_objects(rng, scene_env: str, road: Road, side: int, d_from: float, d_to: float, bare_p: float = 0.1):
    buildings: list[Building] = []
    density = {"urban": 0.9, "suburban": 0.45, "rural": 0.12}[scene_env]
    d = d_from
    while d < d_to:
        b = make_building(rng, side, d, scene_env)
        if rng.random() < density:
            buildings.append(b)
            d += b.length_m + uniform(rng, 0.0, 6.0)
        else:
            d += uniform(rng, 6.0, 25.0)
    trees: list[Tree] = []
    tree_density = {"urban": 0.3, "suburban": 0.6, "rural": 0.75}[scene_env]
    d = d_from + uniform(rng, 0, 10)
    sidewalk = road.sidewalk_left_m if side < 0 else road.sidewalk_right_m
    while d < d_to:
        if rng.random() < tree_density:
            offset = uniform(rng, 0.6, max(0.8, sidewalk - 0.4)) if sidewalk > 0 else uniform(rng, 1.5, 6.0)
            trees.append(make_tree(rng, side, d, offset, bare_p=bare_p))
        d += uniform(rng, 7.0, 20.0)
    poles: list[Pole] = []
    d = d_from + uniform(rng, 0, 15)
    while d < d_to:
        poles.append(make_pole(rng, side, d, uniform(rng, 0.3, 0.6)))
        d += uniform(rng, 15.0, 40.0)
    if sidewalk > 0 and scene_env != "rural" and rng.random() < 0.35:
        # A row of bollards along the kerb.
        d = d_from + uniform(rng, 10, 40)
        end = d + uniform(rng, 8.0, 40.0)
        step = uniform(rng, 1.2, 3.0)
        while d < min(end, d_to):
            poles.append(make_pole(rng, side, d, uniform(rng, 0.3, 0.5), kind="bollard"))
            d += step
    return buildings, trees, poles


def sample_scene(rng: np.random.Generator, *, height: int, width: int, road_end: bool = True) -> Scene:
    """Draw one independent random scene for an image of ``height`` x ``width`` pixels.

    ``road_end=False``: never a T-junction ahead (a drive goes on along its road).
    """
    environment = pick(rng, ("urban", "urban", "suburban", "rural"))
    camera = sample_camera(rng, height, width)
    road = sample_road(rng, environment)
    lighting = sample_lighting(rng)
    ego_speed = uniform(rng, 7.0, 14.0) if environment == "urban" else uniform(rng, 12.0, 25.0)
    buildings, trees, poles = [], [], []
    bare_p = 0.85 if rng.random() < 0.3 else 0.05  # a winter scene: (nearly) all trees bare
    for side in (-1, 1):
        b, t, p = _sample_side_objects(rng, environment, road, side, -30.0, FAR_OBJECTS_M + 40.0, bare_p)
        buildings += b
        trees += t
        poles += p
    if road.junction_d_m is not None:  # the side road runs through a gap in the houses
        j0, j1 = road.junction_d_m - 2.0, road.junction_d_m + road.junction_width_m + 2.0
        buildings = [b for b in buildings if b.d0_m + b.length_m < j0 or b.d0_m > j1]
        trees = [t for t in trees if not j0 < t.d_m < j1]
    vehicles: list[Vehicle] = []
    for lane in range(road.n_lanes):
        d = uniform(rng, 6.0, 30.0)
        while d < FAR_OBJECTS_M:
            if rng.random() < 0.55 and not (lane == road.ego_lane and d < 7.0):
                v = make_vehicle(rng, road, lane, d, ego_speed)
                vehicles.append(v)
                d += v.length_m
            d += uniform(rng, 8.0, 40.0)
    for lane, width in ((-1, road.parking_left_m), (road.n_lanes, road.parking_right_m)):
        if width <= 0:
            continue
        d = uniform(rng, 2.0, 15.0)
        while d < FAR_OBJECTS_M * 0.6:
            if rng.random() < 0.8:  # a row with the odd gap
                v = make_vehicle(rng, road, lane, d, ego_speed, parked=True)
                vehicles.append(v)
                d += v.length_m + uniform(rng, 0.6, 2.5)
            else:
                d += uniform(rng, 3.0, 12.0)
    people: list[Person] = []
    n_ped = int(rng.integers(0, 7)) if environment != "rural" else int(rng.integers(0, 3))
    for _ in range(n_ped):
        people.append(make_person(rng, road, uniform(rng, 4.0, 60.0), cyclist=False, crossing=rng.random() < 0.15))
    for _ in range(int(rng.integers(0, 3))):
        people.append(make_person(rng, road, uniform(rng, 5.0, 50.0), cyclist=True, crossing=rng.random() < 0.25))
    # Distant skyline (blocks of buildings) and tree line at the horizon.
    skyline = []
    if environment != "rural" or rng.random() < 0.3:
        u = uniform(rng, -0.05, 0.05)
        while u < 1.0:
            w = uniform(rng, 0.02, 0.09)
            if rng.random() < 0.8:
                skyline.append((u, u + w, uniform(rng, 0.02, 0.16 if environment == "urban" else 0.06)))
            u += w
    knots = rng.uniform(0.005, 0.06, size=12)
    treeline = np.interp(np.linspace(0, 11, 64), np.arange(12), knots) + rng.uniform(0, 0.012, size=64)
    scene = Scene(
        camera=camera, road=road, lighting=lighting, buildings=buildings, trees=trees, poles=poles,
        vehicles=vehicles, people=people, skyline=skyline, treeline=treeline, environment=environment,
        ego_speed_mps=ego_speed, curvature_target=road.curvature, grade_target=road.grade_curvature,
        next_curve_change_s=uniform(rng, 3.0, 8.0), wobble_phase=uniform(rng, 0, 2 * math.pi),
    )
    if road_end:
        add_road_end(scene)
    return scene
