"""Frame sources, chosen from the ``--source`` string: ``open_source(spec, **options)``.

================================  =========  ==========================================
``--source``                      kind       module
================================  =========  ==========================================
``/dev/video0``, ``0``            camera     ``perception/sources/camera.py`` (V4L2)
``drive.mp4`` (avi, mkv, gif...)  video      ``perception/sources/video.py``
``frames/``, ``'frames/*.png'``   images     ``perception/sources/images.py``
``rtsp://...``, ``http://...``    stream     ``perception/sources/stream.py`` (FFmpeg)
``'... ! appsink'``               gstreamer  ``perception/sources/stream.py``
``synthetic``                     synthetic  ``perception/sources/synthetic.py``
================================  =========  ==========================================

A ``file://`` URL is read as its path (``file:///data/drive.mp4`` is ``/data/drive.mp4``). A spec
that names an existing file or folder is that file or folder, even when its name holds ``* ? [``
or looks like a pipeline (``'a ! b.avi'``, ``appsink``); one that ends in ``/`` is a folder.
``synthetic``, a camera index and a URL keep their meaning.

Every source yields ``Frame`` records (seq from 0, capture_ns, capture_mono_ns, BGR image) and
raises ``SourceError`` with the fix when it cannot be opened.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from perception.errors import SourceError, hide_credentials, os_error_line, unreadable
from perception.registry import Registry
from perception.sources.base import (
    CorruptFrame,
    Frame,
    Source,
    SourceOptions,
    local_path,
    shown,
    video_spec_word,
)
from perception.sources.camera import CAMERA_PATTERN, CameraSource
from perception.sources.images import ImageSource, is_image_spec, path_exists
from perception.sources.stream import URL_PATTERN, GStreamerSource, StreamSource, is_gstreamer_pipeline
from perception.sources.synthetic import SyntheticSource
from perception.sources.video import VideoFileSource

SOURCES: Registry[type[Source]] = Registry("source")
for _cls in (CameraSource, VideoFileSource, ImageSource, StreamSource, GStreamerSource, SyntheticSource):
    SOURCES.register(_cls.kind)(_cls)


def source_kind(spec: str) -> str:
    """The registry name of the source ``spec`` describes (see the table above)."""
    spec = spec.strip()
    try:
        spec = local_path(spec)
    except SourceError:  # a file:// URL of another machine: open_source says why
        return "video"
    if spec == "synthetic":
        return "synthetic"
    if CAMERA_PATTERN.match(spec):
        return "camera"
    if URL_PATTERN.match(spec):
        return "stream"
    if is_gstreamer_pipeline(spec) and not path_exists(spec):  # a file named 'a ! b.avi' is that file
        return "gstreamer"
    if is_image_spec(spec):
        return "images"
    return "video"


def source_is_live(spec: str) -> bool:
    """Whether the source ``spec`` describes delivers frames at its own rate (cameras, streams,
    GStreamer pipelines, the synthetic camera: ``Source.live``) rather than as fast as they are read
    (video files, image folders)."""
    return SOURCES.get(source_kind(spec)).live


def open_source(spec: str, options: SourceOptions | None = None, *, kind: str | None = None, **changes: Any) -> Source:
    """Open the source ``spec`` (kind detected unless given) with ``options`` (default
    ``SourceOptions()``), ``changes`` replacing single fields (``open_source("synthetic", width=96)``).

    Raises:
        SourceError: the device, file or URL cannot be opened (the message names the fix).
        ConfigError: an unknown ``kind``.
    """
    spec = local_path(spec.strip())
    cls = SOURCES.get(kind or source_kind(spec))
    if cls.kind == "video":
        why = unreadable(spec)  # not "is it a video FFmpeg can decode?" for a file this user may not read
        if why is not None:
            raise SourceError(f"{video_spec_word(spec)} {shown(spec)} {why}")
    try:
        return cls(spec, dataclasses.replace(options or SourceOptions(), **changes))
    except PermissionError as exc:  # a file or folder on the way that this user may not read
        raise SourceError(hide_credentials(f"{cls.kind} source: {os_error_line(exc)}")) from None


__all__ = ["SOURCES", "CorruptFrame", "Frame", "Source", "SourceOptions", "open_source", "source_is_live", "source_kind"]
