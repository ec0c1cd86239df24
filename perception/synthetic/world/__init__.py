"""The synthetic world: what a road scene contains, how it is drawn at random, and how it moves.

    scene = sample_scene(rng, height=360, width=480)   # one independent scene (layout.py)
    advance_scene(scene, 1.0 / 30, rng)                 # the world one frame later (motion.py)

Modules: ``scene`` (the dataclasses: camera, road, lighting, buildings, trees, poles, vehicles,
people), ``objects`` (random draws of single objects), ``layout`` (a whole new scene) and
``motion`` (time steps of a drive). Everything draws from a caller's seeded
``numpy.random.Generator``; the renderer (``perception.synthetic.render``) turns scenes into pixels.
"""

from perception.synthetic.world.layout import sample_scene
from perception.synthetic.world.motion import advance_scene, wobble
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

__all__ = [
    "Building",
    "Camera",
    "Lighting",
    "Person",
    "Pole",
    "Road",
    "Scene",
    "Tree",
    "Vehicle",
    "advance_scene",
    "wobble",
    "sample_scene",
]
