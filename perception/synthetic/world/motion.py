"""Move a scene on in time: ego motion, slowly changing road shape, traffic that keeps its gap,
walking pedestrians, and roadside objects recycled ahead once the camera has passed them.

    advance_scene(scene, 1.0 / fps, rng)   # what ``SyntheticDrive`` does after every frame
"""

from __future__ import annotations

import math

import numpy as np

from perception.synthetic.world.layout import FAR_OBJECTS_M
from perception.synthetic.world.objects import make_building, make_person, make_pole, make_vehicle, uniform
from perception.synthetic.world.scene import Pole, Scene, Vehicle

#: Traffic that falls this far behind the camera is respawned ahead.
BEHIND_M = -8.0


def wobble(scene: Scene) -> None:
    """The ego camera's slow weave in its lane at the scene's time (offset and heading). A drive
    starts with it too, so its first frame does not jump from the sampled scene's random heading."""
    scene.road.ego_offset_m = 0.25 * math.sin(0.35 * scene.time_s + scene.wobble_phase)
    scene.road.heading = 0.012 * math.cos(0.35 * scene.time_s + scene.wobble_phase)


def advance_scene(scene: Scene, dt_s: float, rng: np.random.Generator) -> None:
    """Move ``scene`` on by ``dt_s`` seconds of driving, in place; ``rng`` draws the new arrivals."""
    road = scene.road
    step = scene.ego_speed_mps * dt_s
    scene.time_s += dt_s
    scene.travelled_m += step
    # Road shape: curvature eases towards a target that changes every few seconds; the rate term
    # shows the change coming in the distance before the camera reaches it.
    if scene.time_s >= scene.next_curve_change_s:
        scene.curvature_target = float(rng.choice([0.0, uniform(rng, -1 / 150, 1 / 150), uniform(rng, -1 / 500, 1 / 500)]))
        scene.grade_target = uniform(rng, -2.5e-5, 1.2e-4) if rng.random() < 0.4 else 0.0
        scene.next_curve_change_s = scene.time_s + uniform(rng, 4.0, 10.0)
    ease = min(1.0, dt_s / 2.5)
    road.curvature_rate = (scene.curvature_target - road.curvature) / max(scene.ego_speed_mps * 2.5, 1.0)
    road.curvature += (scene.curvature_target - road.curvature) * ease
    road.grade_curvature += (scene.grade_target - road.grade_curvature) * ease
    wobble(scene)
    road.dash_phase_m = (road.dash_phase_m - step) % road.dash_period_m
    road.patches = [(s0, s1, d0 - step, d1 - step) for s0, s1, d0, d1 in road.patches]
    if road.patches and road.patches[0][3] < 0:
        s0 = uniform(rng, 0, road.width_m - 1.0)
        d0 = uniform(rng, 60, 90)
        road.patches = road.patches[1:] + [(s0, s0 + uniform(rng, 0.8, 3.0), d0, d0 + uniform(rng, 2.0, 12.0))]
    # Cracks and the side road pass by once (the houses were laid out around the junction).
    road.cracks = [(s0, d0 - step, s1, d1 - step) for s0, d0, s1, d1 in road.cracks if max(d0, d1) - step > 0]
    road.dropped_kerbs = [(side, d0 - step, d1 - step) for side, d0, d1 in road.dropped_kerbs if d1 - step > -5]
    if road.junction_d_m is not None:
        road.junction_d_m -= step
        if road.junction_d_m + road.junction_width_m < -5:
            road.junction_d_m = None
    if road.road_end_d_m is not None:  # drives never meet one (``sample_scene(road_end=False)``);
        road.road_end_d_m -= step  # an edited scene's T-junction comes nearer, and goes at the stop line
        if road.road_end_d_m < 1.0:
            road.road_end_d_m, scene.frontage = None, []
    if road.crosswalk_d_m is not None:
        road.crosswalk_d_m -= step
        if road.crosswalk_d_m < -5:
            road.crosswalk_d_m = uniform(rng, 120, 250)
    # Static roadside objects pass by; what falls behind is placed again beyond the furthest one.
    for b in scene.buildings:
        b.d0_m -= step
    for side in (-1, 1):
        mine = [b for b in scene.buildings if b.side == side]
        for b in mine:
            if b.d0_m + b.length_m < -20:
                far = max(x.d0_m + x.length_m for x in mine)
                new = make_building(rng, side, far + uniform(rng, 0.0, 15.0), scene.environment)
                b.__dict__.update(new.__dict__)
    for group in (scene.trees, scene.poles):
        for obj in group:
            obj.d_m -= step
        for obj in group:
            if obj.d_m < -3:
                far = max(o.d_m for o in group if o.side == obj.side)
                obj.d_m = far + uniform(rng, 7.0, 30.0)
                if isinstance(obj, Pole):
                    obj.__dict__.update(make_pole(rng, obj.side, obj.d_m, obj.offset_m,
                                                     kind="bollard" if obj.kind == "bollard" else None).__dict__)
    # Traffic.
    for v in scene.vehicles:
        v.d_m += (-v.speed_mps - scene.ego_speed_mps if v.oncoming else v.speed_mps - scene.ego_speed_mps) * dt_s
        if v.parked and v.d_m < BEHIND_M:  # the parked row goes on: a new car beyond the furthest
            far = max((o.d_m + o.length_m for o in scene.vehicles if o.parked and o.lane == v.lane), default=0.0)
            v.__dict__.update(make_vehicle(rng, road, v.lane, far + uniform(rng, 0.6, 6.0), scene.ego_speed_mps,
                                           parked=True).__dict__)
        elif v.d_m < BEHIND_M or v.d_m > FAR_OBJECTS_M + 20:
            lane = int(rng.integers(road.n_lanes))
            new = make_vehicle(rng, road, lane, uniform(rng, FAR_OBJECTS_M - 30, FAR_OBJECTS_M), scene.ego_speed_mps)
            if not new.oncoming:
                new.speed_mps = max(0.0, scene.ego_speed_mps - uniform(rng, 0.5, 4.0))
            v.__dict__.update(new.__dict__)
    # Keep a safe gap behind vehicles in the same lane (no driving through each other).
    by_lane: dict[int, list[Vehicle]] = {}
    for v in scene.vehicles:
        by_lane.setdefault(v.lane, []).append(v)
    for lane, lane_vehicles in by_lane.items():
        if not 0 <= lane < road.n_lanes:
            continue  # parked rows stand still, bumper to bumper
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
        p.d_m += (p.vd_mps - scene.ego_speed_mps) * dt_s
        p.s_m += p.vs_mps * dt_s
        p.phase += dt_s * (2.0 * math.pi * (0.9 if not p.cyclist else 1.2)) * (abs(p.vd_mps) + abs(p.vs_mps) > 0.1)
        if p.crossing and not (-2.0 < p.s_m < road.width_m + 2.0):
            p.vs_mps = -p.vs_mps
        if p.d_m < BEHIND_M or p.d_m > FAR_OBJECTS_M:
            new = make_person(rng, road, uniform(rng, 60.0, 120.0), cyclist=p.cyclist, crossing=p.crossing)
            p.__dict__.update(new.__dict__)
