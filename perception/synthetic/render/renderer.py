"""The frame: draws a ``Scene`` into a BGR image and its per-pixel class labels, in stage order.

    image, label = Renderer(360, 480).render(scene, rng)

Stages, each its own module: ``sky`` (background), ``ground`` (road surface, paint, shadows),
then every object in painter's order, furthest first (``roadside``: buildings, trees, poles,
signs; ``traffic``: vehicles, pedestrians, cyclists), all into one material map (``raster``).
The labels and the clean image are two look-ups of that map under the scene's lighting; lights and
weather (``atmosphere``) then touch the image only, the camera's roll, lens distortion and hood
(``lens``) change image and labels together, and texture, blur, colour and noise (``sensor``) touch
the image only.

Speed: the frame is a few dozen polygon fills into preallocated arrays plus a handful of whole-
image OpenCV passes; noise and texture come from tables computed once per image size.
"""

from __future__ import annotations

import cv2
import numpy as np

from perception.synthetic.render.atmosphere import apply_atmosphere, rain_streaks
from perception.synthetic.render.ground import draw_ground, draw_shadows
from perception.synthetic.render.lens import apply_lens, draw_hood
from perception.synthetic.render.projection import NEAR_CLIP_M, View
from perception.synthetic.render.raster import Palette
from perception.synthetic.render.roadside import draw_building, draw_frontage, draw_pole, draw_tree
from perception.synthetic.render.sensor import SensorEffects
from perception.synthetic.render.sky import draw_sky
from perception.synthetic.render.traffic import draw_cyclist, draw_pedestrian, draw_vehicle
from perception.synthetic.world import Building, Person, Scene, Tree, Vehicle


class Renderer:
    """Renders scenes of one image size; keeps its buffers and noise tables between frames."""

    def __init__(self, height: int, width: int) -> None:
        self.height = height
        self.width = width
        self.mat = np.empty((height, width), np.uint8)
        self.shade = np.zeros((height, width), np.uint8)
        self.paint = np.empty((height, width), np.uint8)
        self._sensor = SensorEffects(height, width)

    def render(self, scene: Scene, rng: np.random.Generator, *, noise: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``scene``: (BGR uint8 H x W x 3 image, uint8 H x W class ids).

        ``rng`` picks the sensor-noise window and the rain. ``noise=False`` returns the clean render
        (no lights and weather, texture, sensor noise or blur): the colours that the labels describe.
        The camera's roll, lens distortion and hood change image and labels alike, so they apply
        either way.
        """
        view = View(scene)
        pal = Palette()
        mat = self.mat
        draw_sky(mat, scene, view, pal)
        draw_ground(mat, self.paint, scene, view, pal)
        draw_shadows(mat, self.shade, scene, view)
        draw_objects(mat, scene, view, pal)
        colours, classes = pal.tables(scene)
        label = cv2.LUT(mat, classes)
        image = cv2.LUT(cv2.merge((mat, mat, mat)), colours)
        if noise:
            image = apply_atmosphere(image, label, cv2.LUT(mat, pal.lamp_table()), scene, view, rng)
        image, label = apply_lens(image, label, scene)
        draw_hood(image, label, scene)
        if noise:
            image = self._sensor.apply(image, scene.lighting, rng)
        return image, label

    def skip(self, scene: Scene, rng: np.random.Generator, *, noise: bool = True) -> None:
        """The draws from ``rng`` that ``render`` makes, in its order, without drawing anything: the
        next frames of a drive are then those that follow a rendered one (``SyntheticDrive.skip_frame``)."""
        if noise:
            if scene.lighting.rain > 0:
                rain_streaks(scene.lighting.rain, self.height, self.width, rng)
            self._sensor.noise_window(rng)


def draw_objects(mat: np.ndarray, scene: Scene, view: View, pal: Palette) -> None:
    """Every building, tree, pole, vehicle and person in view, in painter's order."""
    # Painter's order: the furthest first, so nearer things cover it and the labels follow.
    # A building or hedge counts at its far end: whatever stands beside its facade (trees,
    # poles, people on the sidewalk) is in front of it, whatever lies beyond it (e.g. traffic
    # round a bend) is behind it.
    items: list[tuple[float, object]] = [
        (b.d0_m + b.length_m, b) for b in scene.buildings if b.d0_m + b.length_m > NEAR_CLIP_M and b.d0_m < 220
    ]
    for group in (scene.trees, scene.poles, scene.vehicles, scene.people):
        items += [(o.d_near, o) for o in group if NEAR_CLIP_M < o.d_near < 170]
    if scene.frontage:  # across the end of the road: behind everything else in the scene
        items += [(scene.road.frontage_d_m, b) for b in scene.frontage]
    items.sort(key=lambda item: -item[0])
    for _, obj in items:
        if isinstance(obj, Building) and obj.side == 0:
            draw_frontage(mat, scene, view, pal, obj)
        elif isinstance(obj, Building):
            draw_building(mat, scene, view, pal, obj)
        elif isinstance(obj, Vehicle):
            draw_vehicle(mat, scene, view, pal, obj)
        elif isinstance(obj, Person):
            if obj.cyclist:
                draw_cyclist(mat, view, pal, obj)
            else:
                draw_pedestrian(mat, view, pal, obj)
        elif isinstance(obj, Tree):
            draw_tree(mat, scene, view, pal, obj)
        else:
            draw_pole(mat, scene, view, pal, obj)

