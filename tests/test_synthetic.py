"""The synthetic road world: determinism, label rules, occlusion, drive coherence, the synth command."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml

from perception.cli import main as cli_main
from perception.contracts import ClassTable
from perception.errors import ConfigError
from perception.synthetic import SYNTHETIC_CLASSES, SyntheticDrive, colorize, render_scene
from perception.synthetic.drive import scene_for_seed
from perception.synthetic.render import Renderer
from perception.synthetic.world import Person, Vehicle

H, W = 120, 160
ROAD, LANE, CAR, PED = (SYNTHETIC_CLASSES.id_of(n) for n in ("road", "lane_marking", "car", "pedestrian"))


def _render(scene, size=(H, W)):
    """Clean render of an edited scene."""
    return Renderer(*size).render(scene, np.random.default_rng(0), noise=False)


def test_same_seed_same_bytes_different_seeds_differ():
    a_img, a_lab = render_scene(3, height=H, width=W)
    b_img, b_lab = render_scene(3, height=H, width=W)
    c_img, c_lab = render_scene(4, height=H, width=W)
    assert a_img.shape == (H, W, 3) and a_img.dtype == np.uint8
    assert a_lab.shape == (H, W) and a_lab.dtype == np.uint8
    assert a_img.tobytes() == b_img.tobytes() and a_lab.tobytes() == b_lab.tobytes()
    assert a_img.tobytes() != c_img.tobytes() and a_lab.tobytes() != c_lab.tobytes()


def test_labels_use_the_table_and_every_class_appears():
    seen: set[int] = set()
    for seed in range(8):
        _, label = render_scene(seed, height=H, width=W)
        ids = set(np.unique(label).tolist())
        assert ids <= set(range(SYNTHETIC_CLASSES.num_classes)), f"seed {seed}: ids {ids} outside the table"
        seen |= ids
    assert seen == set(range(SYNTHETIC_CLASSES.num_classes)), f"missing {set(range(11)) - seen}"


def test_noise_and_blur_touch_only_the_image():
    noisy_img, noisy_lab = render_scene(5, height=H, width=W)
    clean_img, clean_lab = render_scene(5, height=H, width=W, noise=False)
    assert np.array_equal(noisy_lab, clean_lab)
    assert not np.array_equal(noisy_img, clean_img)


def test_lane_paint_is_bright_and_only_on_the_road():
    # The first six scenes whose road has painted lines (some country lanes have none).
    painted = [seed for seed in range(30) if any(
        style != "none" for style, _ in scene_for_seed(seed, height=240, width=320)[0].road.boundary_styles)][:6]
    assert len(painted) == 6
    for seed in painted:
        scene, _ = scene_for_seed(seed, height=240, width=320)
        # No hard sun shadows: paint in a long shadow is darker than the sunlit asphalt of its row.
        scene.lighting.shadow_factor = 1.0
        image, label = _render(scene, size=(240, 320))
        lane = label == LANE
        assert lane.sum() > 50, f"seed {seed}: no lane paint"
        # The same scene without paint: every lane pixel must have been road, nothing else changes.
        scene.road.boundary_styles = [("none", "white")] * len(scene.road.boundary_styles)
        scene.road.crosswalk_d_m = None
        scene.road.kerb_lines = ("none", "none")
        _, unpainted = _render(scene, size=(240, 320))
        assert (unpainted[lane] == ROAD).all(), f"seed {seed}: lane_marking outside the road"
        assert np.array_equal(unpainted[~lane], label[~lane])
        # Painted pixels are brighter than the asphalt of their row in the clean render.
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.int32)
        brighter = total = 0
        for row in np.flatnonzero(lane.any(1)):
            road_cols = np.flatnonzero(label[row] == ROAD)
            if len(road_cols):
                lane_grey = grey[row, lane[row]]
                total += len(lane_grey)
                brighter += int((lane_grey > np.median(grey[row, road_cols])).sum())
        assert brighter >= 0.9 * total, f"seed {seed}: lane label on unpainted pixels ({brighter}/{total})"


def test_obstacles_occlude_what_is_behind_them():
    scene, _ = scene_for_seed(11, height=H, width=W)
    scene.vehicles.clear()
    scene.people.clear()
    _, empty = _render(scene)
    road = scene.road
    car = Vehicle(lane=road.ego_lane, d_m=10.0, speed_mps=0.0, oncoming=False, width_m=1.8, height_m=1.5,
                  length_m=4.5, kind="sedan", body_bgr=(30, 30, 180))
    walker = Person(s_m=road.ego_s, d_m=16.0, vs_mps=0.0, vd_mps=0.0, height_m=1.8, shirt_bgr=(0, 200, 0),
                    pants_bgr=(50, 50, 50), skin_bgr=(90, 120, 170), phase=0.0)
    scene.vehicles.append(car)
    _, with_car = _render(scene)
    changed = with_car != empty
    assert changed.sum() > 100
    assert (with_car[changed] == CAR).all()
    assert np.isin(empty[changed], (ROAD, LANE)).mean() > 0.5  # the car stands on the road
    scene.vehicles.clear()
    scene.people.append(walker)
    _, with_walker = _render(scene)
    walker_px = with_walker == PED
    scene.vehicles.append(car)
    _, both = _render(scene)
    hidden = walker_px & (with_car == CAR)
    assert hidden.sum() > 10, "test setup: the pedestrian should stand behind the car"
    assert (both[hidden] == CAR).all(), "the nearer car must cover the pedestrian behind it"
    assert (both[walker_px & ~hidden] == PED).all()


def test_drive_is_deterministic_and_coherent():
    a = SyntheticDrive(2, height=H, width=W, noise=False)
    b = SyntheticDrive(2, height=H, width=W, noise=False)
    frames = [a.next_frame() for _ in range(6)]
    for img, lab in frames[:3]:
        img_b, lab_b = b.next_frame()
        assert img.tobytes() == img_b.tobytes() and lab.tobytes() == lab_b.tobytes()
    step = np.abs(frames[0][0].astype(np.int16) - frames[1][0]).mean()
    other = np.abs(render_scene(20, height=H, width=W, noise=False)[0].astype(np.int16)
                   - render_scene(21, height=H, width=W, noise=False)[0]).mean()
    assert step < 0.5 * other, f"consecutive frames differ by {step:.1f}, random scenes by {other:.1f}"
    lanes = [lab == LANE for _, lab in frames]
    assert not np.array_equal(lanes[0], lanes[5]), "lane dashes should move as the car drives"
    assert isinstance(next(iter(a)), tuple)


@pytest.mark.parametrize(("height", "width"), [(20, 160), (120, 30), (2000, 480), (360, 4000)])
def test_sizes_outside_the_range_are_refused(height, width):
    with pytest.raises(ConfigError, match="out of range"):
        render_scene(0, height=height, width=width)
    with pytest.raises(ConfigError, match="out of range"):
        SyntheticDrive(0, height=height, width=width)


def test_colorize_uses_the_table_colours():
    label = np.array([[ROAD, CAR]], np.uint8)
    out = colorize(label, SYNTHETIC_CLASSES)
    assert out[0, 0].tolist() == list(SYNTHETIC_CLASSES.classes[ROAD].color[::-1])
    assert out[0, 1].tolist() == list(SYNTHETIC_CLASSES.classes[CAR].color[::-1])


def test_synth_command_writes_a_dataset_and_a_video(tmp_path, capsys):
    out = tmp_path / "ds"
    video = tmp_path / "drive.mp4"
    rc = cli_main(["synth", "--out", str(out), "--count", "4", "--size", f"{H}x{W}", "--seed", "1",
                   "--split", "val=0.25", "--video", str(video), "--video-labels"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and str(video) in printed
    table = ClassTable.from_dict(yaml.safe_load((out / "classes.yaml").read_text()))
    assert table == SYNTHETIC_CLASSES
    train = (out / "train.txt").read_text().split("\n")[:-1]
    val = (out / "val.txt").read_text().split("\n")[:-1]
    assert len(train) == 3 and len(val) == 1
    for line in train + val:
        image_rel, label_rel = line.split()
        image = cv2.imread(str(out / image_rel), cv2.IMREAD_COLOR)
        label = cv2.imread(str(out / label_rel), cv2.IMREAD_UNCHANGED)
        assert image.shape == (H, W, 3) and label.shape == (H, W) and label.dtype == np.uint8
        assert label.max() < table.num_classes
    # Frame 0 of the dataset is render_scene of its derived seed, written losslessly.
    from perception.synthetic.dataset import scene_seed

    assert np.array_equal(cv2.imread(str(out / "labels/000000.png"), cv2.IMREAD_UNCHANGED),
                          render_scene(scene_seed(1, 0), height=H, width=W)[1])
    cap = cv2.VideoCapture(str(video))
    frames = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (H, 2 * W, 3)
        frames += 1
    cap.release()
    assert frames == 4


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--size", "10x10"], "out of range"),
        (["--size", "big"], "bad --size"),
        (["--count", "0"], "count=0 is out of range"),
        (["--split", "val=2"], "bad split"),
        (["--split", "../escaped=0.5"], "bad split name '../escaped'"),
        (["--split", "a/b=0.5"], "letters, digits, '_' and '-' only"),
        (["--split", "val=0.2,val=0.1"], "split 'val' is given twice"),
        (["--no-images"], "nothing to write"),
    ],
)
def test_synth_command_bad_flags_are_one_line_errors(tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.chdir(tmp_path)
    # Each flag once (a flag given twice is an error of its own); --no-images refuses an --out it ignores.
    base = {"--out": str(tmp_path / "ds"), "--count": "2", "--size": "64x96"}
    if "--no-images" in flags:
        del base["--out"]
    rc = cli_main(["synth", *(word for flag, value in base.items() if flag not in flags for word in (flag, value)),
                   *flags])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("perception: error: ") and message in err and err.count("\n") == 1


def test_synth_says_the_size_as_height_and_width_and_warns_of_portrait_frames(tmp_path, capsys, caplog):
    """--size is HEIGHTxWIDTH; the node's logs say WIDTHxHEIGHT, so "--size 640x360" wrote portrait
    frames under a summary ("frames 640x360") that read like the node's landscape size."""
    assert cli_main(["synth", "--out", str(tmp_path / "tall"), "--count", "1", "--size", "96x64", "--split", "none"]) == 0
    assert "wrote 1 frame 96 high x 64 wide (seed 0)" in capsys.readouterr().out
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["portrait frames: --size is HEIGHTxWIDTH, so 96x64 is 96 high and 64 wide; for 96 wide give "
                        "--size 64x96"]
    caplog.clear()
    assert cli_main(["synth", "--out", str(tmp_path / "wide"), "--count", "2", "--size", "64x96", "--split", "none"]) == 0
    assert "wrote 2 frames 64 high x 96 wide (seed 0)" in capsys.readouterr().out
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def _lists(out) -> dict[str, int]:
    return {p.stem: len(p.read_text().splitlines()) for p in sorted(out.glob("*.txt"))}


def test_synth_gives_every_split_a_frame_or_refuses(tmp_path, capsys):
    # Under 10 frames, val=0.1 rounded to an empty val.txt, which train and eval then refused.
    assert cli_main(["synth", "--out", str(tmp_path / "five"), "--count", "5", "--size", "48x64"]) == 0
    assert _lists(tmp_path / "five") == {"train": 4, "val": 1}
    assert cli_main(["synth", "--out", str(tmp_path / "two"), "--count", "2", "--size", "48x64"]) == 0
    assert _lists(tmp_path / "two") == {"train": 1, "val": 1}
    assert cli_main(["synth", "--out", str(tmp_path / "one"), "--count", "1", "--size", "48x64", "--split", "none"]) == 0
    assert _lists(tmp_path / "one") == {"train": 1}
    capsys.readouterr()
    refused = {
        ("--count", "1"): "--count 1 is too few frames for train plus val 1 (each split gets at least one); "
                          "use --count 2 or more, or --split none",
        ("--count", "2", "--split", "val=0.1,test=0.1"): "use --count 3 or more",
        ("--count", "5", "--split", "val=0"): "split 'val=0' would write an empty val.txt; give it a share such as "
                                              "val=0.1, or leave val out of --split (--split none",
    }
    for flags, message in refused.items():
        out = tmp_path / "refused"
        assert cli_main(["synth", "--out", str(out), "--size", "48x64", *flags]) == 2
        err = capsys.readouterr().err
        assert err.startswith("perception: error: ") and message in err and err.count("\n") == 1
        assert not out.exists()  # refused before anything is written


def test_synth_replaces_its_own_earlier_output_and_refuses_other_datasets(tmp_path, capsys):
    out = tmp_path / "ds"
    argv = ["synth", "--out", str(out), "--size", "48x64"]
    assert cli_main([*argv, "--count", "12", "--split", "val=0.2,test=0.1"]) == 0
    assert _lists(out) == {"test": 1, "train": 9, "val": 2}
    # A smaller set into the same folder: the old frames and test.txt are gone, not left as orphans.
    assert cli_main([*argv, "--count", "3", "--seed", "4"]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert _lists(out) == {"train": 2, "val": 1}
    assert yaml.safe_load((out / "synth.yaml").read_text())["seed"] == 4
    capsys.readouterr()
    # A file synth did not write inside its folders: refused, nothing touched.
    (out / "images" / "mine.jpg").write_bytes(b"x")
    assert cli_main([*argv, "--count", "2"]) == 2
    err = capsys.readouterr().err
    assert f"--out {out} is an earlier perception synth output, but {out / 'images' / 'mine.jpg'} is not one of its" in err
    assert len(list((out / "images").iterdir())) == 4 and _lists(out) == {"train": 2, "val": 1}
    # Someone's own dataset with frames named like synth's: never overwritten.
    own = tmp_path / "own"
    (own / "images").mkdir(parents=True)
    (own / "images" / "000000.png").write_bytes(b"their frame")
    (own / "train.txt").write_text("images/000000.png labels/000000.png\n")
    assert cli_main(["synth", "--out", str(own), "--count", "2", "--size", "48x64"]) == 2
    err = capsys.readouterr().err
    assert err == (f"perception: error: --out {own} already holds a dataset (images/, train.txt) that perception synth "
                   "did not write (no synth.yaml of its own); choose a new or empty folder\n")
    assert (own / "images" / "000000.png").read_bytes() == b"their frame"
    # A folder with other things in it (no dataset) is fine: synth writes beside them.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.md").write_text("mine")
    assert cli_main(["synth", "--out", str(other), "--count", "2", "--size", "48x64"]) == 0
    assert (other / "notes.md").read_text() == "mine" and _lists(other) == {"train": 1, "val": 1}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--contact-sheet", "S", "--video", "V"], "--contact-sheet writes only the grid image, so --video would be"),
        (["--contact-sheet", "S", "--no-images"], "so --no-images would be ignored"),
        (["--contact-sheet", "S", "--out", "O", "--split", "val=0.5"], "so --out, --split would be ignored"),
        (["--video-labels"], "--video-labels puts the labels beside the frames of --video; add --video PATH.mp4"),
        (["--video", "V.avi"], "video file V.avi must end in .mp4"),  # checked before the dataset is written
    ],
)
def test_synth_flags_that_would_be_ignored_are_refused(tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.chdir(tmp_path)
    rc = cli_main(["synth", "--count", "2", "--size", "48x64", *flags])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("perception: error: ") and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # refused before anything is written


def test_synth_command_unwritable_out_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = cli_main(["synth", "--out", str(blocker / "ds"), "--count", "2", "--size", "64x96"])
    err = capsys.readouterr().err
    assert rc == 2 and f"cannot create output directory {blocker / 'ds'} ({blocker} is a file, not a folder)" in err


# ---- the world's variety: light, weather, camera, traffic (what a user looking at frames notices)

def _lighting(time_of_day: str, **changes):
    """The first lighting draw of ``time_of_day`` (clear weather, no camera pipeline effects) with ``changes``."""
    from dataclasses import replace

    from perception.synthetic.world.layout import sample_lighting

    for k in range(500):
        light = sample_lighting(np.random.default_rng(k))
        if light.time_of_day == time_of_day:
            clear = dict(fog_density=0.0, rain=0.0, wet=0.0, gamma=1.0, saturation=1.0, vignette=0.0,
                         motion_blur_px=0.0, jpeg_quality=0, white_balance_bgr=(1.0, 1.0, 1.0), gain=1.0)
            return replace(light, **{**clear, **changes})
    raise AssertionError(f"no {time_of_day} lighting in 500 draws")


def _plain_scene(seed: int, size=(H, W)):
    """A scene with a level camera, no lens distortion and no hood."""
    scene, _ = scene_for_seed(seed, height=size[0], width=size[1])
    scene.camera.roll_rad = scene.camera.distortion_k1 = scene.camera.hood_px = 0.0
    return scene


def _grey(image):
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float64)


def test_a_night_scene_is_darker_than_the_same_scene_by_day_and_labels_do_not_change():
    for seed in (1, 2, 3):
        scene = _plain_scene(seed)
        scene.lighting = _lighting("day")
        day_img, day_lab = Renderer(H, W).render(scene, np.random.default_rng(0))
        scene.lighting = _lighting("night")
        night_img, night_lab = Renderer(H, W).render(scene, np.random.default_rng(0))
        assert np.array_equal(day_lab, night_lab)
        # Most of the frame is dark (lit windows, lamps and the headlit road are the exceptions).
        assert np.median(_grey(night_img)) < 0.6 * np.median(_grey(day_img)), f"seed {seed}"


def test_headlights_light_the_road_just_ahead_at_night():
    scene = _plain_scene(4)
    scene.vehicles.clear()
    scene.lighting = _lighting("night", headlights=False)
    dark, label = Renderer(H, W).render(scene, np.random.default_rng(0))
    scene.lighting.headlights = True
    lit, _ = Renderer(H, W).render(scene, np.random.default_rng(0))
    near_road = np.zeros_like(label, bool)
    near_road[int(0.85 * H):, W // 3: 2 * W // 3] = True
    near_road &= label == ROAD
    assert near_road.sum() > 20
    assert _grey(lit)[near_road].mean() > 1.3 * _grey(dark)[near_road].mean()


def test_the_hood_rows_carry_the_hood_label_and_are_not_road():
    from perception.synthetic.render.lens import HOOD_CLASS, hood_mask

    scene = _plain_scene(5)
    _, without = _render(scene)
    scene.camera.hood_px = 0.12 * H
    scene.camera.hood_curve = 0.5
    image, label = _render(scene)
    mask = hood_mask(scene) > 0
    rows = mask.shape[0]
    assert rows == round(0.12 * H) and mask[-1].all()
    assert (label[-rows:][mask] == HOOD_CLASS).all()
    hood = SYNTHETIC_CLASSES.classes[HOOD_CLASS].name
    assert hood == "ego_vehicle" and not any(hood in names for names in SYNTHETIC_CLASSES.task_groups.values())
    # The hood covers what was road at the bottom centre and leaves the rest of the frame alone.
    assert without[-1, W // 2] == ROAD and label[-1, W // 2] == HOOD_CLASS
    assert np.array_equal(label[:-rows], without[:-rows])


def test_fog_washes_out_a_far_car_more_than_a_near_one():
    scene = _plain_scene(6, size=(240, 320))
    scene.vehicles.clear()
    scene.people.clear()
    scene.road.parking_right_m = 2.4
    scene.lighting = _lighting("overcast", noise_sigma=0.0, texture_strength=0.0, blur_sigma=0.0)

    def car(lane, d):
        return Vehicle(lane=lane, d_m=d, speed_mps=0.0, oncoming=False, width_m=1.8, height_m=1.5, length_m=4.5,
                       kind="sedan", body_bgr=(30, 30, 180), parked=lane == scene.road.n_lanes)

    scene.vehicles += [car(scene.road.ego_lane, 45.0), car(scene.road.n_lanes, 7.0)]
    clear, label = Renderer(240, 320).render(scene, np.random.default_rng(0))
    scene.lighting.fog_density = 0.04
    foggy, _ = Renderer(240, 320).render(scene, np.random.default_rng(0))
    cars = cv2.connectedComponents((label == CAR).astype(np.uint8))[1]
    sizes = np.bincount(cars.ravel())[1:]
    assert len(sizes) == 2, "test setup: two separate cars"
    far, near = (cars == 1 + int(np.argmin(sizes))), (cars == 1 + int(np.argmax(sizes)))
    kept = {name: _grey(foggy)[px].std() / _grey(clear)[px].std() for name, px in (("far", far), ("near", near))}
    assert kept["far"] < 0.35, f"the far car kept {kept['far']:.2f} of its contrast in fog"
    assert kept["near"] > kept["far"] + 0.3, kept


def test_rolled_distorted_labels_stay_on_the_objects_drawn():
    scene = _plain_scene(11)
    scene.vehicles.clear()
    scene.people.clear()
    scene.road.asphalt_bgr = (100.0, 100.0, 100.0)
    scene.road.patches, scene.road.cracks = [], []
    scene.camera.roll_rad, scene.camera.distortion_k1 = 0.05, -0.2
    empty_img, empty = _render(scene)
    scene.vehicles.append(Vehicle(lane=scene.road.ego_lane, d_m=9.0, speed_mps=0.0, oncoming=False, width_m=1.8,
                                  height_m=1.5, length_m=4.5, kind="sedan", body_bgr=(30, 30, 180)))
    image, label = _render(scene)
    car = cv2.erode((label == CAR).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert car.sum() > 100
    # Where the label says car, the image shows the car (its colours), not the road it covers.
    differs = np.abs(image.astype(np.int16) - empty_img).max(axis=2) > 12
    assert differs[car].mean() > 0.95
    assert (label[label != empty] == CAR).all()


def test_heavy_weather_frames_are_deterministic():
    scene, _ = scene_for_seed(7, height=H, width=W)
    scene.lighting = _lighting("night", rain=0.8, wet=0.8, jpeg_quality=40, motion_blur_px=6.0, vignette=0.4)
    a = Renderer(H, W).render(scene, np.random.default_rng(3))
    b = Renderer(H, W).render(scene, np.random.default_rng(3))
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()


def test_a_dataset_of_frames_spans_the_conditions():
    from perception.synthetic.dataset import scene_seed

    scenes = [scene_for_seed(scene_seed(0, i), height=H, width=W)[0] for i in range(80)]
    lights = [s.lighting for s in scenes]
    assert {light.time_of_day for light in lights} == {"day", "overcast", "dusk", "night"}
    for what, count in {
        "fog": sum(light.fog_density >= 0.006 for light in lights),
        "light haze": sum(0 < light.fog_density < 0.006 for light in lights),
        "rain": sum(light.rain > 0 for light in lights),
        "wet road": sum(light.wet > 0 for light in lights),
        "jpeg": sum(light.jpeg_quality > 0 for light in lights),
        "motion blur": sum(light.motion_blur_px > 0 for light in lights),
        "hood": sum(s.camera.hood_px > 0 for s in scenes),
        "roll": sum(s.camera.roll_rad != 0 for s in scenes),
        "lens distortion": sum(s.camera.distortion_k1 != 0 for s in scenes),
        "parked row": sum(any(v.parked for v in s.vehicles) for s in scenes),
        "bus or truck": sum(any(v.kind in ("bus", "truck") for v in s.vehicles) for s in scenes),
        "motorbike": sum(any(p.motorbike for p in s.people) for s in scenes),
        "junction": sum(s.road.junction_d_m is not None for s in scenes),
        "cracks": sum(bool(s.road.cracks) for s in scenes),
        "kerbside lines": sum(any(k != "none" for k in s.road.kerb_lines) for s in scenes),
        "dropped kerbs": sum(bool(s.road.dropped_kerbs) for s in scenes),
        "forecourt": sum(any(f > 0 for f in s.road.forecourt_m) for s in scenes),
        "asphalt pavement": sum(s.road.sidewalk_style == "asphalt" for s in scenes),
    }.items():
        assert count >= 2, f"only {count} of 80 frames with {what}"
    fovs = [2 * np.degrees(np.arctan(W / 2 / s.camera.focal_px)) for s in scenes]
    assert max(fovs) - min(fovs) > 30


def test_synth_contact_sheet_command(tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    rc = cli_main(["synth", "--contact-sheet", str(sheet), "--count", "6", "--size", "64x96", "--seed", "2"])
    assert rc == 0 and str(sheet) in capsys.readouterr().out
    image = cv2.imread(str(sheet), cv2.IMREAD_COLOR)
    assert image.shape == (2 * 2 * 64, 4 * 96, 3)  # 4 columns, 2 rows of (frame over labels)
    from perception.synthetic.dataset import scene_seed

    first, first_label = render_scene(scene_seed(2, 0), height=64, width=96)
    assert np.array_equal(image[:64, :96], first)
    assert np.array_equal(image[64:128, :96], colorize(first_label))
    rc = cli_main(["synth", "--contact-sheet", str(tmp_path / "sheet.nope"), "--count", "1", "--size", "64x96"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("perception: error: ") and "contact sheet" in err


def test_a_crowded_frame_keeps_exact_labels_when_the_palette_fills_up():
    from perception.synthetic.render.raster import Palette

    pal = Palette()
    cars = [pal.object((i % 256, (7 * i) % 256, (13 * i) % 256), CAR) for i in range(400)]
    cyclist = pal.object((1, 2, 3), SYNTHETIC_CLASSES.id_of("cyclist"))
    assert (pal.class_id[cars] == CAR).all() and pal.class_id[cyclist] == SYNTHETIC_CLASSES.id_of("cyclist")
    # A whole frame of it: parked rows on both sides and traffic nose to tail, every car its own colour.
    scene = _plain_scene(12)
    scene.road.parking_left_m = scene.road.parking_right_m = 2.4
    colours = np.random.default_rng(0).integers(0, 255, size=(400, 3))
    scene.vehicles = [Vehicle(lane=lane, d_m=4.0 + 5.0 * i, speed_mps=0.0, oncoming=False, width_m=1.8,
                              height_m=1.5, length_m=4.5, kind="sedan", body_bgr=tuple(int(c) for c in colours[k]),
                              parked=True)
                      for k, (lane, i) in enumerate((lane, i) for lane in range(-1, scene.road.n_lanes + 1) for i in range(32))
                      if not (lane == scene.road.ego_lane and i < 2)]
    scene.people = [Person(s_m=scene.road.ego_s, d_m=6.0, vs_mps=0.0, vd_mps=0.0, height_m=1.8,
                           shirt_bgr=(0, 200, 0), pants_bgr=(50, 50, 50), skin_bgr=(90, 120, 170), phase=0.0,
                           cyclist=True)]
    assert 3 * len(scene.vehicles) > 256
    _, label = _render(scene)
    assert (label == CAR).sum() > 100 and (label == SYNTHETIC_CLASSES.id_of("cyclist")).sum() > 10
