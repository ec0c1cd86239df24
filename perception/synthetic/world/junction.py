"""T-junctions: a scene whose road ends ahead at a crossing road, with the pavement beyond it and a
row of buildings facing the camera. ``layout.sample_scene`` calls ``add_road_end`` on every scene it
draws (unless asked not to); the renderer draws the ground in ``render.ground.draw_road_end`` and the
buildings in ``render.roadside.draw_frontage``.
"""

from __future__ import annotations

import numpy as np

from perception.synthetic.world.objects import make_building, uniform
from perception.synthetic.world.scene import Scene

#: Share of town scenes that look down a road ending in a T-junction.
ROAD_END_P = 0.2


def add_road_end(scene: Scene) -> None:
    """In some town scenes, end the road ahead in a T-junction: a crossing road, the pavement
    beyond it and a row of buildings (often shops) facing the camera, the view that a car waiting
    to turn has. Everything that stood beyond the end is removed.

    The draws come from a generator seeded by the scene's own fields, not from the scene's random
    stream, so a seed's scene is otherwise what it was and a drive never meets a road end.
    """
    road = scene.road
    if scene.environment == "rural":
        return
    key = np.asarray([*road.asphalt_bgr, road.lane_width_m, road.kerb_height_m, scene.camera.focal_px]) * 1e6
    rng = np.random.default_rng(np.abs(key).astype(np.int64) % (1 << 62))
    if rng.random() >= ROAD_END_P:
        return
    end = uniform(rng, 8.0, 35.0)
    road.road_end_d_m = end
    road.road_end_width_m = uniform(rng, 6.0, 11.0)
    road.road_end_pavement_m = uniform(rng, 1.8, 6.0)
    road.road_end_corner_m = max(1.5, min(road.sidewalk_left_m, road.sidewalk_right_m) or uniform(rng, 1.5, 3.0))
    road.curvature = road.curvature_rate = 0.0  # a straight approach: the frontage stays square to it
    if road.junction_d_m is not None and road.junction_d_m + road.junction_width_m > end - 4.0:
        road.junction_d_m = None
    if road.crosswalk_d_m is not None and road.crosswalk_d_m + 4.0 > end - 2.0:
        road.crosswalk_d_m = None
    road.dropped_kerbs = [k for k in road.dropped_kerbs if k[1] < end]
    corner = end - road.road_end_corner_m
    scene.buildings = [b for b in scene.buildings if b.d0_m + b.length_m < corner]
    scene.trees = [t for t in scene.trees if t.d_m < corner - 1.0]
    scene.poles = [p for p in scene.poles if p.d_m < end - 0.5]
    scene.vehicles = [v for v in scene.vehicles if v.d_m + v.length_m < end - 1.0]
    scene.people = [p for p in scene.people if p.d_m < end - 0.5]
    # The frontage: buildings side by side across the view, some of them shops.
    s = -120.0
    while s < road.width_m + 120.0:
        b = make_building(rng, 0, s, scene.environment)
        while b.hedge:  # a frontage of houses: nothing low enough to show the road beyond it
            b = make_building(rng, 0, s, scene.environment)
        b.length_m = min(b.length_m, uniform(rng, 6.0, 22.0))
        b.height_m = min(b.height_m, uniform(rng, 5.0, 16.0))
        scene.frontage.append(b)
        s += b.length_m

