"""The synthetic road world: procedural, seeded driving scenes with exact per-pixel labels.

    from perception.synthetic import render_scene, SyntheticDrive, write_dataset, colorize

``render_scene(seed)`` draws one independent scene, ``SyntheticDrive(seed)`` a coherent drive (the
node's ``synthetic`` camera), ``write_dataset`` a labelled dataset and/or an MP4 (``perception synth``).
Modules: ``world/`` (what a scene contains: ``scene``, ``objects``, ``layout``; how it moves:
``motion``), ``render/`` (scene -> image + labels: ``projection``, ``raster``, ``sky``, ``ground``,
``roadside``, ``traffic``, ``atmosphere``, ``lens``, ``sensor``, ``renderer``), ``drive`` (the entry
points), ``dataset`` (files on disk and the contact sheet), ``classes`` (the class table),
``version`` (``SYNTHETIC_WORLD_VERSION``: bumped whenever rendering changes).
"""

from perception.synthetic.classes import IGNORE_ID, SYNTHETIC_CLASSES
from perception.synthetic.dataset import colorize, write_dataset, write_video
from perception.synthetic.drive import MAX_HW, MIN_HW, SyntheticDrive, check_size, render_scene
from perception.synthetic.version import SYNTHETIC_WORLD_VERSION

__all__ = [
    "IGNORE_ID",
    "MAX_HW",
    "MIN_HW",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_WORLD_VERSION",
    "SyntheticDrive",
    "check_size",
    "colorize",
    "render_scene",
    "write_dataset",
    "write_video",
]
