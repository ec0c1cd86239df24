"""The generator's public entry points: independent random scenes and a temporally coherent drive.

    image, label = render_scene(7, height=360, width=480)          # one scene, same bytes every time
    drive = SyntheticDrive(seed=0, height=360, width=480, fps=30)   # the node's ``synthetic`` camera
    image, label = drive.next_frame()

Images are BGR uint8 H x W x 3, labels uint8 H x W class ids of ``SYNTHETIC_CLASSES``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from perception.errors import ConfigError
from perception.options import SYNTHETIC_FPS_RANGE, SYNTHETIC_MAX_HW, SYNTHETIC_MIN_HW
from perception.synthetic.render import Renderer
from perception.synthetic.world import Scene, advance_scene, sample_scene, wobble

#: Supported image sizes (inclusive). Below the minimum the scene geometry degenerates to a few
#: pixels per object; the maximum keeps the generator real-time.
MIN_HW = SYNTHETIC_MIN_HW
MAX_HW = SYNTHETIC_MAX_HW


def check_size(height: int, width: int) -> tuple[int, int]:
    """Validate an image size; ConfigError naming the size and the allowed range otherwise."""
    ok = (
        isinstance(height, (int, np.integer))
        and isinstance(width, (int, np.integer))
        and MIN_HW[0] <= height <= MAX_HW[0]
        and MIN_HW[1] <= width <= MAX_HW[1]
    )
    if not ok:
        raise ConfigError(
            f"synthetic image size {height}x{width} is out of range; use HxW between "
            f"{MIN_HW[0]}x{MIN_HW[1]} and {MAX_HW[0]}x{MAX_HW[1]} (e.g. 360x480)"
        )
    return int(height), int(width)


def scene_for_seed(seed: int, *, height: int = 360, width: int = 480) -> tuple[Scene, np.random.Generator]:
    """The scene that ``render_scene(seed)`` draws, and the generator it continues with (for tests
    that edit a scene, e.g. place a car, before rendering it with ``Renderer``)."""
    height, width = check_size(height, width)
    rng = np.random.default_rng(seed)
    return sample_scene(rng, height=height, width=width), rng


def render_scene(seed: int, *, height: int = 360, width: int = 480, noise: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One random, independent scene: (BGR uint8 image H x W x 3, uint8 label H x W).

    Deterministic: the same seed and size give the same bytes. ``noise=False`` gives the clean
    render (no texture, sensor noise or blur) whose colours the labels describe exactly.
    Raises ConfigError for a size outside ``MIN_HW``..``MAX_HW``.
    """
    scene, rng = scene_for_seed(seed, height=height, width=width)
    return _renderer(height, width).render(scene, rng, noise=noise)


_RENDERERS: dict[tuple[int, int], Renderer] = {}


def _renderer(height: int, width: int) -> Renderer:
    # One renderer (buffers, noise tables) per size, reused across calls; the render returns new arrays.
    key = (height, width)
    if key not in _RENDERERS:
        if len(_RENDERERS) >= 4:
            _RENDERERS.pop(next(iter(_RENDERERS)))
        _RENDERERS[key] = Renderer(height, width)
    return _RENDERERS[key]


class SyntheticDrive:
    """A seeded, endless drive through the synthetic world at ``fps`` frames per second.

    Consecutive frames are coherent: the camera moves along the road (dashes and roadside objects
    pass by), the curvature changes slowly, other traffic and pedestrians move. Each call to
    ``next_frame`` returns fresh arrays (image BGR uint8 H x W x 3, label uint8 H x W).
    """

    def __init__(self, seed: int = 0, *, height: int = 360, width: int = 480, fps: float = 30.0,
                 noise: bool = True) -> None:
        self.height, self.width = check_size(height, width)
        if not (isinstance(fps, (int, float)) and SYNTHETIC_FPS_RANGE[0] <= fps <= SYNTHETIC_FPS_RANGE[1]):
            raise ConfigError(f"synthetic drive fps {fps!r} is out of range; use {SYNTHETIC_FPS_RANGE[0]:g} to {SYNTHETIC_FPS_RANGE[1]:g}")
        self.fps = float(fps)
        self.noise = noise
        self.frame_index = 0
        self._rng = np.random.default_rng(seed)
        self.scene = sample_scene(self._rng, height=self.height, width=self.width, road_end=False)
        wobble(self.scene)
        self._renderer = Renderer(self.height, self.width)

    def next_frame(self) -> tuple[np.ndarray, np.ndarray]:
        """Render the current moment and advance the world by one frame interval."""
        frame = self._renderer.render(self.scene, self._rng, noise=self.noise)
        advance_scene(self.scene, 1.0 / self.fps, self._rng)
        self.frame_index += 1
        return frame

    def skip_frame(self) -> None:
        """Advance as ``next_frame`` does, without the picture (about 0.02 ms instead of milliseconds):
        the renderer's random draws (``Renderer.skip``), then the world one frame interval on."""
        self._renderer.skip(self.scene, self._rng, noise=self.noise)
        advance_scene(self.scene, 1.0 / self.fps, self._rng)
        self.frame_index += 1

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            yield self.next_frame()
