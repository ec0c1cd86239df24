"""The synthetic road world as a camera: ``perception run --source synthetic [--width W --height H --fps F]``.

Frames come from ``perception.synthetic.SyntheticDrive`` (seeded, procedural, exact labels) and
are paced to the requested rate like a real camera, so the node can be tried without hardware.
``seek`` moves on to a later frame without rendering the ones between (a view joining a node that
has run for an hour pairs its masks with frame seq 36000 in a fraction of a second).
"""

from __future__ import annotations

from collections.abc import Callable

from perception.errors import SourceError
from perception.options import SYNTHETIC_DEFAULT_HW
from perception.sources.base import Source, SourceOptions, as_bgr, stamp

DEFAULT_HW = SYNTHETIC_DEFAULT_HW
DEFAULT_FPS = 30.0
#: ``seek`` asks its ``stop`` every this many frames skipped (a frame costs about 0.02 ms).
SEEK_CHECK_FRAMES = 256


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

    def seek(self, seq: int, *, stop: Callable[[], bool] | None = None) -> bool:
        """Move on so that the next ``read`` gives frame ``seq`` (a later one than it would give),
        without rendering the frames between: the same bytes as reading them all, in about 0.02 ms a
        frame instead of milliseconds. A frame depends on every one before it (the world moves on
        with draws from one random stream, and each render draws its sensor-noise window and rain
        from that stream too), but moving the world on needs no picture: ``SyntheticDrive.skip_frame``
        makes the draws a render would make, through the functions the render draws them with. False
        when ``stop()`` said so first (asked every ``SEEK_CHECK_FRAMES`` frames): the frames skipped
        until then stay skipped."""
        if seq < self._seq:
            raise ValueError(f"cannot seek back from frame {self._seq} to {seq}")
        while self._seq < seq and not self._interrupted.is_set():
            if stop is not None and (seq - self._seq) % SEEK_CHECK_FRAMES == 0 and stop():
                return False
            self._drive.skip_frame()
            self._seq += 1
        return self._seq == seq
