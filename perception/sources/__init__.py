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

from perception.errors import ConfigError, SourceError, hide_credentials, os_error_line, unreadable
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


#: The source settings (``SourceOptions``) that only some kinds of source use (``_source_family``),
#: with those kinds in words and what the others do instead. One given for a node none of whose
#: sources uses it is a mistake, said before anything starts (it was ignored without a word: a
#: ``--width 640`` for a video file gave its own size). ``fps`` paces files and streams and is
#: asked of cameras and the synthetic camera; a GStreamer pipeline sets its own rate.
SOURCE_SETTING_USERS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "width": (("camera", "synthetic"), "cameras and the synthetic camera",
              "a file, folder or stream is read at its own size (the engine letterboxes every frame)"),
    "height": (("camera", "synthetic"), "cameras and the synthetic camera",
               "a file, folder or stream is read at its own size (the engine letterboxes every frame)"),
    "fourcc": (("camera",), "V4L2 cameras", "no other source has a pixel format to choose"),
    "fps": (("camera", "synthetic", "file", "stream"), "cameras, the synthetic camera, files and streams",
            "a GStreamer pipeline sets its own rate (videorate ! video/x-raw,framerate=15/1)"),
    "realtime": (("file", "stream"), "video files, image folders and clips behind a URL",
                 "a live source delivers at its own rate"),
    "loop": (("file", "stream"), "video files, image folders and clips behind a URL",
             "a live source does not end"),
    "read_timeout_s": (("camera", "stream", "gstreamer"), "cameras, streams and GStreamer pipelines",
                       "files, folders and the synthetic camera are not reopened"),
    "seed": (("synthetic",), "the synthetic camera", "other sources show what they hold"),
}

def _source_family(spec: str) -> str:
    """``camera``, ``synthetic``, ``stream`` (a URL), ``gstreamer`` or ``file`` (a video file, image
    file, folder or glob): ``source_kind``, files and folders taken together."""
    kind = source_kind(spec)
    return "file" if kind in ("video", "images") else kind


def check_source_options(options: SourceOptions, specs: list[str], args: Any = None, *, as_keys: bool = False,
                         names: list[str] | None = None) -> None:
    """ConfigError for a source setting (``SOURCE_SETTING_USERS``) that none of the sources ``specs``
    uses, naming it as it was given: its flag (``--width``), ``NAME in FILE`` when ``args`` (the
    parsed flags) came with a ``--config`` file that set it, or with ``as_keys`` the key (a launch
    file's parameters). One setting for several sources may be used by only some of them
    (``--width`` for a V4L2 camera beside a video file): run, launch, view and demo check alike.
    ``names``: the cameras' names, shown with their sources when there are several."""
    from perception.config import cut
    from perception.flags import flags

    defaults = {f.name: f.default for f in dataclasses.fields(SourceOptions)}
    options_of = {flag.name: flag.option for flag in flags(SourceOptions)}
    families = {_source_family(spec) for spec in specs}
    typed = vars(args) if args is not None else {}
    for name, (users, who, instead) in SOURCE_SETTING_USERS.items():
        if not hasattr(options, name) or getattr(options, name) == defaults[name] or families & set(users):
            continue
        config_file = typed.get("config")
        if as_keys:
            given = name
        else:
            given = options_of[name] if name in typed or config_file is None else f"{name} in {config_file}"
        source = hide_credentials(specs[0] if len(specs) == 1 else ", ".join(
            spec if names is None else f"{name}={spec}" for name, spec in zip(names or specs, specs, strict=True)))
        source = cut(source if source.isprintable() else repr(source), 120)  # a newline cannot fake a line
        raise ConfigError(f"{given} applies to {who} only, not to --source {source}: {instead}; drop it")


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


def native_rate(source) -> float | None:
    """The frame rate a source delivers at by itself: a video file's or stream's reported rate
    (``native_fps``; a source that sets it, as a camera could with its granted rate, is taken
    alike), the synthetic camera's ``fps``; None when it does not say (image folders)."""
    for name in ("native_fps", "fps"):
        value = getattr(source, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 10_000:
            return float(value)
    return None
