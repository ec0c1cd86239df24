"""The synthetic world's T-junctions: a road that ends at a crossing road, with the pavement
beyond it and a row of buildings facing the camera (what a car waiting to turn sees)."""

from __future__ import annotations

import numpy as np

from perception.synthetic.drive import SyntheticDrive, scene_for_seed
from perception.synthetic.render.facade import FASCIA_COLORS
from perception.synthetic.render.projection import View
from perception.synthetic.render.raster import CLASS_ID
from perception.synthetic.world import Building, sample_scene
from perception.synthetic.world.motion import advance_scene
from tests.test_synthetic_surfaces import _plain_scene, _render

SIZE = (240, 320)
ROAD, LANE, SIDEWALK, BUILDING, SKY = (CLASS_ID[n] for n in ("road", "lane_marking", "sidewalk", "building", "sky"))


def _ended_seeds(n: int = 300) -> list[int]:
    return [seed for seed in range(n) if scene_for_seed(seed, height=120, width=160)[0].road.road_end_d_m is not None]


def test_some_town_scenes_end_in_a_t_junction_and_nothing_stands_beyond_it():
    scenes = [scene_for_seed(seed, height=120, width=160)[0] for seed in range(300)]
    town = [s for s in scenes if s.environment != "rural"]
    ended = [s for s in scenes if s.road.road_end_d_m is not None]
    assert all(s.environment != "rural" for s in ended)
    assert 0.1 <= len(ended) / len(town) <= 0.3, (len(ended), len(town))
    for s in ended:
        road = s.road
        end = road.road_end_d_m
        assert 8.0 <= end <= 35.0 and road.frontage_d_m > end + road.road_end_width_m
        assert all(b.d0_m + b.length_m < end for b in s.buildings)
        assert all(o.d_m < end for o in (*s.trees, *s.poles, *s.people))
        assert all(v.d_m + v.length_m < end for v in s.vehicles)
        assert road.junction_d_m is None or road.junction_d_m + road.junction_width_m < end
        # The frontage: houses side by side across the whole view, no hedge to see the road through.
        assert s.frontage and all(b.side == 0 and not b.hedge for b in s.frontage)
        assert s.frontage[0].d0_m <= -100 and s.frontage[-1].d0_m + s.frontage[-1].length_m >= road.width_m + 100
        assert all(a.d0_m + a.length_m == b.d0_m for a, b in zip(s.frontage, s.frontage[1:], strict=False))
    # Those scenes are otherwise what their seed gave (the end is drawn from its own generator).
    seed = _ended_seeds()[0]
    with_end, _ = scene_for_seed(seed, height=120, width=160)
    without = sample_scene(np.random.default_rng(seed), height=120, width=160, road_end=False)
    assert without.road.road_end_d_m is None and not without.frontage
    assert with_end.camera == without.camera and with_end.lighting == without.lighting
    assert (with_end.road.n_lanes, with_end.road.asphalt_bgr) == (without.road.n_lanes, without.road.asphalt_bgr)
    assert all(b in without.buildings for b in with_end.buildings)


def test_a_drive_never_meets_a_road_end_and_an_edited_one_goes_at_the_stop_line():
    for seed in _ended_seeds()[:3]:
        assert SyntheticDrive(seed, height=120, width=160).scene.road.road_end_d_m is None
    scene = scene_for_seed(_ended_seeds()[0], height=120, width=160)[0]
    end = scene.road.road_end_d_m
    advance_scene(scene, 0.5, np.random.default_rng(0))
    assert scene.road.road_end_d_m < end and scene.frontage
    while scene.road.road_end_d_m is not None:
        advance_scene(scene, 0.5, np.random.default_rng(0))
    assert not scene.frontage


def _junction(*, shop: bool):
    """A plain street ending 12 m ahead: an 8 m crossing road, a 3 m pavement and one long building
    across the view (``shop``: a window spacing that gives it a shop front)."""
    scene = _plain_scene(6, SIZE)
    road = scene.road
    road.road_end_d_m, road.road_end_width_m, road.road_end_pavement_m, road.road_end_corner_m = 12.0, 8.0, 3.0, 2.5
    road.boundary_styles = [("solid", "white")] * len(road.boundary_styles)
    road.dash_length_m = 2.0  # a solid stop line
    spacing = 2.51 if shop else 2.4  # the renderer's stable per-building shop choice (see test_synthetic_facades)
    scene.frontage = [Building(side=0, d0_m=-150.0, length_m=road.width_m + 300.0, setback_m=0.0, height_m=12.0,
                               depth_m=0.0, facade_bgr=(150, 180, 200), window_bgr=(95, 85, 75), floor_m=3.2,
                               window_spacing_m=spacing)]
    return scene


def test_a_road_end_is_road_then_the_far_kerb_and_pavement_then_the_frontage():
    scene = _junction(shop=False)
    road = scene.road
    image, label = _render(scene, SIZE)
    assert set(np.unique(label).tolist()) <= {ROAD, LANE, SIDEWALK, BUILDING, SKY, CLASS_ID["vegetation"]}
    view = View(scene)
    col = int(round(view.project(road.ego_s, 20.0)[0]))
    kerb_d = road.road_end_d_m + road.road_end_width_m
    v_stop = view.project(road.ego_s, road.road_end_d_m - 0.45)[1]
    v_kerb = view.project(road.ego_s, kerb_d)[1]
    v_far = view.project(road.ego_s, road.frontage_d_m)[1]
    v_top = view.project(road.ego_s, road.frontage_d_m, 12.0)[1]
    column = label[:, col]
    # Up the ego lane's centre column: the road (and its stop line), the crossing road, the far
    # kerb's face and pavement, the frontage's face, then the sky.
    assert column[int(v_stop)] == LANE
    assert (column[int(v_kerb) + 2 : int(v_stop) - 2] == ROAD).all()
    assert (column[int(v_far) + 2 : int(v_kerb) - 1] == SIDEWALK).all()
    assert (column[int(v_top) + 2 : int(v_far) - 1] == BUILDING).all()
    assert (column[: max(0, int(v_top) - 2)] == SKY).all()
    # The pavements round the corners, this side of the crossing road, outside the main road.
    for s in (road.kerb_left_s - 4.0, road.kerb_right_s + 4.0):
        u, v = view.project(s, road.road_end_d_m - 1.0)
        if 0 <= u < SIZE[1]:
            assert label[int(v), int(u)] == SIDEWALK
    # Nothing of the main road shows beyond the end: no lane paint above the crossing road.
    assert not (label[: int(v_kerb)] == LANE).any()


def test_a_frontage_shop_front_is_dressed_like_one_along_the_road():
    shop_image, shop_label = _render(_junction(shop=True), SIZE)
    plain_image, plain_label = _render(_junction(shop=False), SIZE)
    assert np.array_equal(shop_label, plain_label)  # the shop front changes colours, never labels
    rows = slice(0, SIZE[0] * 2 // 3)
    shop = {tuple(p) for p in shop_image[rows][shop_label[rows] == BUILDING].tolist()}
    plain = {tuple(p) for p in plain_image[rows][plain_label[rows] == BUILDING].tolist()}
    assert len(shop) >= len(plain) + 5  # fascia, lettering, panes, goods, mullions, a door
    assert shop & {tuple(c) for c in FASCIA_COLORS}
