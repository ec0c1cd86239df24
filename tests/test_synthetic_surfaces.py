"""The synthetic world's sidewalks (surfaces, kerbstones) and bare winter trees: labels stay exact."""

from __future__ import annotations

from collections import Counter

import numpy as np

from perception.synthetic import SYNTHETIC_CLASSES
from perception.synthetic.drive import scene_for_seed
from perception.synthetic.render import Renderer
from perception.synthetic.render.projection import View
from perception.synthetic.render.raster import CLASS_ID, Palette
from perception.synthetic.world import Vehicle
from perception.synthetic.world.objects import bare_branches, make_tree

H, W = 120, 160
ROAD, SIDEWALK, VEG, SKY = (SYNTHETIC_CLASSES.id_of(n) for n in ("road", "sidewalk", "vegetation", "sky"))


def _plain_scene(seed: int, size=(H, W)):
    """A scene with nothing standing on the ground, in flat neutral light (clean colours = materials)."""
    scene, _ = scene_for_seed(seed, height=size[0], width=size[1])
    scene.buildings, scene.trees, scene.poles, scene.vehicles, scene.people = [], [], [], [], []
    light = scene.lighting
    light.ambient, light.gain, light.tint_bgr, light.shadow_factor = 1.0, 1.0, (1.0, 1.0, 1.0), 1.0
    road = scene.road
    road.junction_d_m = road.crosswalk_d_m = road.road_end_d_m = None
    scene.frontage = []
    road.curvature = road.curvature_rate = road.heading = road.grade_curvature = 0.0
    scene.camera.roll_rad = scene.camera.distortion_k1 = scene.camera.hood_px = 0.0
    return scene


def _render(scene, size=(H, W)):
    return Renderer(*size).render(scene, np.random.default_rng(0), noise=False)


def test_scenes_span_sidewalk_surfaces_winter_trees_and_bollards():
    scenes = [scene_for_seed(seed, height=H, width=W)[0] for seed in range(80)]
    styles = Counter(s.road.sidewalk_style for s in scenes if s.road.sidewalk_right_m > 0)
    assert set(styles) == {"plain", "slabs", "bricks", "asphalt"}, styles
    assert any(max(s.road.sidewalk_left_m, s.road.sidewalk_right_m) > 5.0 for s in scenes)  # wide town pavements
    bare = [sum(t.bare for t in s.trees) / max(1, len(s.trees)) for s in scenes]
    assert sum(b > 0.6 for b in bare) >= 5  # winter scenes
    assert sum(0 < b < 0.6 for b in bare) >= 1  # the odd bare tree among leafy ones
    assert any(p.kind == "bollard" for s in scenes for p in s.poles)


def test_road_grey_sidewalks_are_labelled_sidewalk_not_road():
    seeds = [seed for seed in range(60) if scene_for_seed(seed, height=H, width=W)[0].road.sidewalk_style == "asphalt"]
    assert seeds
    checked = 0
    for seed in seeds:
        scene = _plain_scene(seed)
        if scene.road.sidewalk_right_m <= 0:
            continue
        image, label = _render(scene)
        road_px, side_px = image[label == ROAD], image[label == SIDEWALK]
        assert len(road_px) > 200 and len(side_px) > 100, f"seed {seed}"
        # The surface colour is close to the asphalt's: only the kerb and the geometry tell them apart.
        gap = np.abs(np.median(side_px, 0).astype(int) - np.median(road_px, 0).astype(int)).max()
        assert gap <= 40, f"seed {seed}: sidewalk {np.median(side_px, 0)} vs road {np.median(road_px, 0)}"
        checked += 1
    assert checked


def test_a_kerb_band_lies_between_road_and_sidewalk_labels():
    checked = 0
    for seed in range(40):
        scene = _plain_scene(seed, size=(240, 320))
        road = scene.road
        if road.sidewalk_right_m <= 0:
            continue
        road.kerb_bgr, road.kerb_width_m = (0, 0, 250), 0.3  # a red kerbstone, easy to find
        image, label = _render(scene, size=(240, 320))
        red = (image[..., 0] < 5) & (image[..., 1] < 5) & (image[..., 2] > 100)
        assert (label[red] == SIDEWALK).all(), f"seed {seed}: kerb not labelled sidewalk"
        # In rows near the camera, the first sidewalk pixel right of the road is the kerb.
        rows = hits = 0
        for row in range(170, 230):
            cols = np.flatnonzero(label[row] == ROAD)
            if len(cols) and cols[-1] + 1 < 320 and label[row, cols[-1] + 1] == SIDEWALK:
                rows += 1
                hits += bool(red[row, cols[-1] + 1])
        if rows < 10:  # the right kerb is out of view near the camera (a wide road or parking strip)
            continue
        assert hits >= 0.9 * rows, f"seed {seed}: {hits}/{rows} rows with a kerb at the road edge"
        checked += 1
        if checked == 3:
            break
    assert checked == 3


def test_a_bare_tree_crown_is_vegetation_with_sky_seen_through_it():
    scene = _plain_scene(5, size=(240, 320))
    scene.lighting.time_of_day = "day"
    tree = make_tree(np.random.default_rng(1), 1, 12.0, 1.0, bare_p=1.0)
    assert tree.bare and len(bare_branches(tree.branch_seed)) > 20
    scene.trees = [tree]
    image, label = _render(scene, size=(240, 320))
    _, no_tree = _render(_plain_scene(5, size=(240, 320)), size=(240, 320))
    crown = (label == VEG) & (no_tree == SKY)
    assert crown.sum() > 300
    # Through the crown, most pixels keep the colour of the sky behind them; the branches are drawn.
    sky_colours = {tuple(c) for c in image[label == SKY]}
    crown_px = [tuple(c) for c in image[crown]]
    through = sum(c in sky_colours for c in crown_px) / len(crown_px)
    assert 0.3 < through < 0.95, through
    assert tuple(tree.crown_bgr) in set(crown_px)


def test_sky_seen_through_a_crown_is_no_lamp():
    pal = Palette()
    sky = pal.object((230, 200, 180), CLASS_ID["sky"], emissive=True)
    lamp = pal.object((200, 235, 255), CLASS_ID["pole"], emissive=True)
    through = pal.relabelled(sky, CLASS_ID["vegetation"])
    assert pal.class_id[through] == VEG and (pal.bgr[through] == pal.bgr[sky]).all()
    assert pal.emissive[through]  # lit like the sky, so it keeps the sky's colour exactly
    table = pal.lamp_table()
    assert table[through] == 0 and table[sky] == 0 and table[lamp] == 255


def _scene_with_right_pavement(size=(240, 320)):
    """The first plain scene whose right kerb is in view near the camera."""
    for seed in range(60):
        scene = _plain_scene(seed, size=size)
        road = scene.road
        if road.sidewalk_right_m > 0 and road.n_lanes * road.lane_width_m + road.parking_right_m < 8.0:
            road.kerb_lines, road.dropped_kerbs, road.forecourt_m = ("none", "none"), [], (0.0, 0.0)
            return scene
    raise AssertionError("no scene with a right pavement in 60 seeds")


def test_a_dropped_kerb_has_no_face_and_keeps_the_labels():
    scene = _scene_with_right_pavement()
    road = scene.road
    road.kerb_bgr, road.kerb_height_m = (0, 0, 250), 0.18
    scene.lighting.shadow_factor = 1.0  # the face in shade: 0.6 x the kerbstone, a red of 150
    image, label = _render(scene, size=(240, 320))
    face = (image[..., 0] < 5) & (image[..., 1] < 5) & (np.abs(image[..., 2].astype(int) - 150) < 5)
    assert face.sum() > 20
    road.dropped_kerbs = [(-1, -10.0, 400.0), (1, -10.0, 400.0)]  # flush all along, both sides
    dropped, dropped_label = _render(scene, size=(240, 320))
    flat_face = (dropped[..., 0] < 5) & (dropped[..., 1] < 5) & (np.abs(dropped[..., 2].astype(int) - 150) < 5)
    assert flat_face.sum() == 0
    # The face was sidewalk and so is what shows there now: no label changes class but at its edge.
    assert (label[face] == SIDEWALK).all()
    changed = label != dropped_label
    assert changed.sum() <= face.sum()


def test_a_forecourt_is_sidewalk_beyond_the_pavement():
    scene = _scene_with_right_pavement()
    _, plain = _render(scene, size=(240, 320))
    scene.road.forecourt_m = (0.0, 6.0)
    _, paved = _render(scene, size=(240, 320))
    changed = plain != paved
    assert changed.sum() > 50
    assert (paved[changed] == SIDEWALK).all() and not (plain[changed] == SIDEWALK).any()


def test_kerbside_lines_are_lane_paint_beside_the_kerb():
    scene = _scene_with_right_pavement()
    scene.road.boundary_styles = [("none", "white")] * len(scene.road.boundary_styles)
    _, bare = _render(scene, size=(240, 320))
    scene.road.kerb_lines = ("none", "double_yellow")
    image, lined = _render(scene, size=(240, 320))
    lane = lined == CLASS_ID["lane_marking"]
    assert lane.sum() > 30 and (bare[lane] == ROAD).all()
    # Yellow (BGR: low blue, high red) and right of the image centre, near the right kerb.
    assert np.median(image[lane][:, 2].astype(int) - image[lane][:, 0]) > 60
    assert np.median(np.nonzero(lane)[1]) > 160
    # Two parallel lines: rows near the camera cross two separate runs of paint.
    runs = [np.count_nonzero(np.diff(np.concatenate([[0], r.astype(int)])) == 1) for r in lane[120:] if r.any()]
    assert runs.count(2) >= 5, runs


SEDAN_PAINT = (30, 30, 180)
SEDAN_LENGTH_M = 4.5


def _sedan_at(d_m: float, *, next_lane: bool = False, size=(240, 320)):
    """(scene, image, label): a plain scene with one red sedan ``d_m`` ahead, in the ego lane or the next."""
    scene = _plain_scene(5, size)
    lane = scene.road.ego_lane
    if next_lane:
        lane = lane + 1 if lane + 1 < scene.road.n_lanes else lane - 1
    scene.vehicles.append(Vehicle(lane=lane, d_m=d_m, speed_mps=0.0, oncoming=False, width_m=1.8,
                                  height_m=1.5, length_m=SEDAN_LENGTH_M, kind="sedan", body_bgr=SEDAN_PAINT))
    image, label = _render(scene, size)
    return scene, image, label


def test_a_car_is_labelled_down_to_the_road_and_its_lower_panels_mirror_the_road():
    """The rear of a car ahead: car pixels run from the roof to the ground (the dark gap under the
    body is part of the car, as annotated datasets draw it), and the lower body panel sits between
    the paint and the asphalt in colour (gloss reflecting the road), the upper panel is the paint."""
    paint = np.array(SEDAN_PAINT, np.float32)
    scene, image, label = _sedan_at(6.0)
    road = scene.road
    u, v_ground, k = View(scene).anchor(road.lane_centre(road.ego_lane), 6.0)
    col = int(round(u - 0.45 * k))  # left of the plate, right of the left lamp and wheel

    def at(height_m):
        return int(round(v_ground - height_m * k)), col

    car_rows = np.flatnonzero(label[:, col] == CLASS_ID["car"])
    assert len(car_rows) > 30 and car_rows[-1] - car_rows[0] + 1 == len(car_rows), "one unbroken run of car pixels"
    assert abs(car_rows[-1] - v_ground) <= 2, "the car's label reaches the ground"
    assert image[at(0.12)].max() < 40, "the gap under the body is near black"
    asphalt = np.asarray(road.asphalt_bgr, np.float32)
    upper, lower = image[at(0.8)].astype(np.float32), image[at(0.53)].astype(np.float32)
    assert np.abs(upper - paint).max() <= 2
    assert np.linalg.norm(lower - asphalt) < np.linalg.norm(upper - asphalt)
    assert lower[2] < upper[2] and label[at(0.53)] == CLASS_ID["car"]


def test_a_parked_car_side_is_car_down_to_the_ground_between_its_tyres_and_road_beyond_its_ends():
    """The side of a car in the next lane: at ground level the dark gap between the tyres is car,
    and the road stays visible beyond the car's far end (an outline drawn bumper to tyre)."""
    d, length = 8.0, SEDAN_LENGTH_M
    scene, image, label = _sedan_at(d, next_lane=True)
    view = View(scene)
    s_c = scene.road.lane_centre(scene.vehicles[0].lane)
    s_side = s_c - 0.9 if view.lateral(s_c, d) > 0 else s_c + 0.9

    def px(d_m, height_m):
        u, v = view.project(s_side, d_m, height_m)
        return int(round(float(v))), int(round(float(u)))

    gap = px(d + length / 2, 0.1)  # mid-car, under the sill
    assert label[gap] == CLASS_ID["car"] and image[gap].max() < 40
    for where in (d + length - 0.25, d + length + 0.4):  # under the far overhang, and past the far end
        assert label[px(where, 0.03)] in (ROAD, SYNTHETIC_CLASSES.id_of("lane_marking")), where


def test_a_full_palette_never_gives_a_painted_panel_a_lamps_glow():
    car = CLASS_ID["car"]
    pal = Palette()
    lamp = pal.object((40, 40, 255), car, emissive=True)
    paint = pal.object((30, 30, 150), car)
    i = 0
    while pal._n_object < 256 - SYNTHETIC_CLASSES.num_classes:  # fill the palette with other colours
        pal.object(((i % 8) * 30, (i // 8 % 8) * 30, (i // 64) * 30), CLASS_ID["building"])  # no two near twins
        i += 1
    # Closest in colour to the lamp, but not a light: it gets the painted material.
    assert pal.object((40, 40, 250), car) == paint
    assert pal.object((30, 30, 160), car, emissive=True) == lamp
