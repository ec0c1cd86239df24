"""Projection of road coordinates to pixels for one frame (pinhole camera over a curved, sloped road).

Road coordinates as in ``perception.synthetic.world.scene``: ``s`` lateral from the left road
edge, ``d`` ahead along the road, ``y`` up, all in metres. ``View`` bends the road by its
heading, curvature and curvature rate and lifts it by its grade, so every drawing stage projects
through the same geometry.
"""

from __future__ import annotations

import numpy as np

from perception.synthetic.world import Building, Scene

#: Ground surfaces are drawn out to this distance (m); beyond, the horizon fill shows.
GROUND_FAR_M = 300.0
#: Objects nearer than this (m) are not drawn (they would be behind or inside the lens).
NEAR_CLIP_M = 1.0


class View:
    """Projection of road coordinates (s, d, y) to pixels for one frame."""

    def __init__(self, scene: Scene) -> None:
        cam, road = scene.camera, scene.road
        self.f = cam.focal_px
        self.cx = cam.cx_px
        self.vh = cam.horizon_v_px
        self.h = cam.mount_height_m
        self.s_ego = road.ego_s
        self.a1, self.a2, self.a3 = road.heading, road.curvature / 2, road.curvature_rate / 6
        self.g2 = road.grade_curvature / 2
        bottom = cam.height_px - self.vh
        d_near = max(0.5, 0.7 * self.f * self.h / max(bottom, 1.0))
        self.ground_d = np.geomspace(d_near, GROUND_FAR_M, 44)
        self.d_near = d_near

    def lateral(self, s, d):
        return s - self.s_ego + d * (self.a1 + d * (self.a2 + d * self.a3))

    def project(self, s, d, y=0.0):
        inv = self.f / d
        u = self.cx + self.lateral(s, d) * inv
        v = self.vh + (self.h - self.g2 * d * d - y) * inv
        return u, v

    def anchor(self, s: float, d: float) -> tuple[float, float, float]:
        """(u of s, v of the ground, pixels per metre) at distance d, for things facing the camera."""
        scale = self.f / d
        return (
            self.cx + self.lateral(s, d) * scale,
            self.vh + (self.h - self.g2 * d * d) * scale,
            scale,
        )

    def strip(self, s0, s1, d: np.ndarray, y0=0.0, y1=0.0) -> np.ndarray:
        """Polygon of the surface between lateral positions s0 and s1 (or heights y0, y1) over distances d."""
        u0, v0 = self.project(s0, d, y0)
        u1, v1 = self.project(s1, d, y1)
        n = len(d)
        out = np.empty((2 * n, 2))
        out[:n, 0] = u0
        out[:n, 1] = v0
        out[n:, 0] = u1[::-1]
        out[n:, 1] = v1[::-1]
        return out

    def ground_quads(self, s0, s1, d0, d1) -> np.ndarray:
        """(n,4,2) quads of ground rectangles s0..s1 x d0..d1 (arrays of equal length)."""
        d0 = np.maximum(d0, 0.5)
        d1 = np.maximum(d1, 0.5)
        ua, va = self.project(s0, d0)
        ub, _ = self.project(s1, d0)
        uc, vc = self.project(s1, d1)
        ud, _ = self.project(s0, d1)
        out = np.empty((len(d0), 4, 2))
        out[:, 0, 0], out[:, 1, 0], out[:, 2, 0], out[:, 3, 0] = ua, ub, uc, ud
        out[:, 0, 1] = out[:, 1, 1] = va
        out[:, 2, 1] = out[:, 3, 1] = vc
        return out


def roadside_s(scene: Scene, side: int, offset: float) -> float:
    """Lateral position ``offset`` metres outwards from the kerb on ``side``."""
    return scene.road.kerb_left_s - offset if side < 0 else scene.road.kerb_right_s + offset


def facade_s(scene: Scene, b: Building) -> float:
    """Lateral position of a building's facade: beyond the sidewalk (or a 2 m verge) and its setback."""
    road = scene.road
    sidewalk = road.sidewalk_left_m if b.side < 0 else road.sidewalk_right_m
    if sidewalk <= 0:
        sidewalk = 2.0
    return roadside_s(scene, b.side, sidewalk + b.setback_m)
