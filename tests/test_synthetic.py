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
        image, label = _render(scene, size=(240, 320))
        lane = label == LANE
        assert lane.sum() > 50, f"seed {seed}: no lane paint"
        # The same scene without paint: every lane pixel must have been road, nothing else changes.
        scene.road.boundary_styles = [("none", "white")] * len(scene.road.boundary_styles)
        scene.road.crosswalk_d_m = None
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
        (["--count", "0"], "must be a positive integer"),
        (["--split", "val=2"], "bad split"),
        (["--no-images"], "nothing to write"),
    ],
)
def test_synth_command_bad_flags_are_one_line_errors(tmp_path, capsys, flags, message):
    rc = cli_main(["synth", "--out", str(tmp_path / "ds"), "--count", "2", "--size", "64x96", *flags])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("perception: error: ") and message in err and err.count("\n") == 1


def test_synth_command_unwritable_out_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = cli_main(["synth", "--out", str(blocker / "ds"), "--count", "1", "--size", "64x96"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot create output directory" in err
