"""The synthetic road world as a camera: ``perception run --source synthetic [--width W --height H --fps F]``.

Frames come from ``perception.synthetic.SyntheticDrive`` (seeded, procedural, exact labels) and
are paced to the requested rate like a real camera, so the node can be tried without hardware.
"""

from __future__ import annotations

from perception.errors import SourceError
from perception.options import SYNTHETIC_DEFAULT_HW
from perception.sources.base import Source, SourceOptions, as_bgr, stamp

DEFAULT_HW = SYNTHETIC_DEFAULT_HW
DEFAULT_FPS = 30.0


class SyntheticSource(Source):
    """An endless seeded synthetic drive, paced to ``fps``."""

    kind = "synthetic"
    live = True

    def __init__(self, spec: str, options: SourceOptions) -> None:
        super().__init__(spec, options)
        try:
            from perception.synthetic.drive import SyntheticDrive
        except ImportError as exc:
            raise SourceError(f"the synthetic world is not available in this install ({exc})") from None
        self.height = options.height or DEFAULT_HW[0]
        self.width = options.width or DEFAULT_HW[1]
        self.fps = options.fps or DEFAULT_FPS
        self._drive = SyntheticDrive(options.seed, height=self.height, width=self.width, fps=self.fps)
        self.pace(self.fps)

    def describe(self) -> str:
        return f"synthetic {self.width}x{self.height} @ {self.fps:g} fps (seed {self.options.seed})"

    def _next_image(self):
        bgr, _label = self._drive.next_frame()
        capture_ns, capture_mono_ns = stamp()
        return as_bgr(bgr), capture_ns, capture_mono_ns
