"""The synthetic world's building faces: shop fronts and framed windows, all labelled building;
and the palette keeping slots for near things in a crowded frame."""

from __future__ import annotations

import numpy as np
import pytest

from perception.synthetic.render.facade import DISPLAY_COLORS, FASCIA_COLORS, INTERIOR_COLORS, building_seed
from perception.synthetic.render.raster import CLASS_ID, CROWDED, NEAR_COLOUR, Palette
from perception.synthetic.world import Building
from tests.test_synthetic_surfaces import _plain_scene, _render

SIZE = (240, 320)
BUILDING = CLASS_ID["building"]


def _street(*, shop: bool, d0_m: float = 4.0):
    """A plain scene with one three-storey building on the right; ``shop`` picks a window spacing
    that gives it a shop front (the renderer's stable per-building choice) or one that does not."""
    scene = _plain_scene(6, SIZE)
    spacing = 2.51 if shop else 2.4  # (spacing * 7) % 1: 0.57 (< 0.6: a shop front) or 0.8
    b = Building(side=1, d0_m=d0_m, length_m=30.0, setback_m=0.3, height_m=11.0, depth_m=10.0,
                 facade_bgr=(150, 180, 200), window_bgr=(95, 85, 75), floor_m=3.2, window_spacing_m=spacing)
    scene.buildings = [b]
    return scene, b


def _ground_floor(image, label):
    """Pixels of the building's ground floor band: building-labelled pixels in the lower part of
    the facade (rows below the facade's middle on the right half of the frame)."""
    h, w = label.shape
    rows = slice(h // 3, h)
    cols = slice(w // 2, w)
    sub = label[rows, cols] == BUILDING
    return image[rows, cols][sub], sub


def test_a_shop_front_is_all_building_and_shows_a_fascia_displays_and_frames():
    scene, b = _street(shop=True)
    assert (b.window_spacing_m * 7.0) % 1.0 < 0.6
    image, label = _render(scene, SIZE)
    # Only road things, sky, terrain and the building: the shop front adds no other class.
    drawn = set(np.unique(label).tolist())
    assert BUILDING in drawn
    assert drawn <= {CLASS_ID[n] for n in ("road", "lane_marking", "sidewalk", "vegetation", "sky", "building")}
    pixels, _ = _ground_floor(image, label)
    colours = {tuple(p) for p in pixels.tolist()}
    # The plain facade of the old world had 3 colours down there (facade, shop, glass); a shop
    # front has its fascia, lettering, panes, goods, reflections, mullions and a door.
    assert len(colours) >= 8
    # Its fascia is one of the board colours (clean render in flat neutral light: colours exact).
    assert colours & {tuple(c) for c in FASCIA_COLORS}


def test_a_building_without_a_shop_has_no_displays_only_its_windows():
    scene, b = _street(shop=False)
    assert (b.window_spacing_m * 7.0) % 1.0 >= 0.6
    image, label = _render(scene, SIZE)
    pixels, _ = _ground_floor(image, label)
    colours = {tuple(p) for p in pixels.tolist()}
    assert not colours & {tuple(c) for c in DISPLAY_COLORS + INTERIOR_COLORS}
    assert len(colours) < 8  # facade, glass, mirrored glass, frames


def test_a_buildings_details_stay_the_same_as_the_camera_moves():
    """Details come from the building's own fields, not the frame: the same materials (colour and
    class) whether it starts 4 m or 6 m ahead, and the same images for the same scene twice."""
    near, b = _street(shop=True, d0_m=4.0)
    far, _ = _street(shop=True, d0_m=6.0)
    image_a, label_a = _render(near, SIZE)
    image_b, label_b = _render(near, SIZE)
    assert np.array_equal(image_a, image_b) and np.array_equal(label_a, label_b)
    image_c, label_c = _render(far, SIZE)
    colours = [{tuple(p) for p in img[lab == BUILDING].tolist()} for img, lab in ((image_a, label_a), (image_c, label_c))]
    shared = colours[0] & colours[1]
    assert len(shared) >= 0.8 * max(len(colours[0]), len(colours[1]))
    assert building_seed(b) == building_seed(far.buildings[0])  # d0 plays no part in it


@pytest.mark.parametrize("offset", [NEAR_COLOUR - 1, NEAR_COLOUR + 6])
def test_a_crowded_palette_reuses_near_twins_and_keeps_slots_for_new_colours(offset):
    building = CLASS_ID["building"]
    pal = Palette()
    base = pal.object((40, 60, 80), building)
    i = 0
    while pal._n_object < CROWDED:  # well-separated colours of another class
        pal.object(((i % 8) * 30, (i // 8 % 8) * 30, (i // 64) * 30), CLASS_ID["car"])
        i += 1
    slots = pal._n_object
    twin = pal.object((40 + offset, 60, 80), building)
    if offset <= NEAR_COLOUR:
        assert twin == base and pal._n_object == slots  # a near twin: the same slot
    else:
        assert twin != base and pal._n_object == slots + 1  # a new colour still gets its own slot
        assert tuple(pal.bgr[twin]) == (40 + offset, 60, 80)
    # The label is exact either way.
    assert pal.class_id[twin] == building
