"""Image folders, glob patterns and single image files, read in sorted order.

``perception run --source frames/`` or ``--source 'frames/*.png'``. An unreadable image is counted
as corrupt and skipped; ``loop`` restarts at the first image; ``realtime``/``fps`` pace delivery
(30 FPS when only ``realtime`` is given).
"""

from __future__ import annotations

import glob
from pathlib import Path

import cv2

from perception import MAX_SOURCE_PIXELS
from perception.errors import SourceError, why_not_a_file
from perception.sources.base import CorruptFrame, Source, SourceOptions, as_bgr, stamp

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
GLOB_CHARS = frozenset("*?[")
#: Rate used for --realtime on image sequences when --fps is not given.
DEFAULT_IMAGE_FPS = 30.0


def is_image_spec(spec: str) -> bool:
    """True for a folder, a glob pattern or an image file name."""
    return Path(spec).is_dir() or bool(GLOB_CHARS & set(spec)) or Path(spec).suffix.lower() in IMAGE_SUFFIXES


def list_images(spec: str) -> list[Path]:
    """The image files ``spec`` names, sorted; SourceError when there are none."""
    p = Path(spec)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if not files:
            raise SourceError(f"image folder {spec} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return files
    if GLOB_CHARS & set(spec):
        files = sorted(Path(f) for f in glob.glob(spec) if Path(f).is_file())
        if not files:
            raise SourceError(f"no files match {spec!r}; check the pattern (quote it so the shell keeps it)")
        return files
    if not p.is_file():
        raise SourceError(f"image file {spec} {why_not_a_file(p)}; check the path")
    return [p]


class ImageSource(Source):
    """A sorted list of image files."""

    kind = "images"

    def __init__(self, spec: str, options: SourceOptions) -> None:
        super().__init__(spec, options)
        self.files = list_images(spec)
        self._index = 0
        if options.realtime or options.fps:
            self.pace(options.fps or DEFAULT_IMAGE_FPS)

    def describe(self) -> str:
        return f"images {self.spec} ({len(self.files)} files)"

    def _next_image(self):
        if self._index >= len(self.files):
            if not self.options.loop:
                return None
            self._index = 0
        path = self.files[self._index]
        self._index += 1
        try:
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        except cv2.error:  # OpenCV's OPENCV_IO_MAX_IMAGE_PIXELS (perception.MAX_SOURCE_PIXELS), checked before decoding
            raise CorruptFrame(f"{path} has more than {MAX_SOURCE_PIXELS} pixels (8192 x 8192); "
                               "resize it for the node") from None
        capture_ns, capture_mono_ns = stamp()
        if image is None:
            raise CorruptFrame(f"{path} cannot be decoded")
        if image.dtype != "uint8":  # 16-bit PNG/TIFF: scale to 8 bits
            image = cv2.convertScaleAbs(image, alpha=255.0 / max(1, int(image.max())))
        return as_bgr(image), capture_ns, capture_mono_ns
