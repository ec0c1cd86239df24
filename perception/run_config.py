"""``RunConfig``: every setting of the node (``perception run`` flags, ``--config node.yaml``, launch files).

The one typed description of a node, validated once at the edge with ``perception.config.load_config``
(unknown keys rejected with a "did you mean", ranges from ``setting``, the checks in
``__post_init__``). Each field is the one declaration of its setting: ``perception run``'s flags are
generated from it (``perception.flags.add_flags``), YAML files and launch files' ``pipeline`` nodes
are checked against it. A new flag is a new field here, or in one of the option groups it holds:
``source_options`` (``SourceOptions``), ``engine_options`` (``EngineOptions``) and
``publish_options`` (``PublishOptions``), from ``perception.options``. Their settings are flat keys
and flags (``width: 640``, ``--width 640``), read as ``config.source_options.width``::

    from perception.config import load_config
    config = load_config(RunConfig, {"source": "drive.mp4", "queue": "lossless"}, source="node.yaml")
    from perception.config import load_config
    config = load_config(RunConfig, {"source": "drive.mp4", "queue": "lossless"}, source="node.yaml")

This module is imported to validate launch files: it must stay light (no engines, no OpenCV).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from perception import contracts
from perception.config import composed, cut, load_config, setting, short
from perception.options import EngineName, EngineOptions, PublishOptions, SourceOptions, synthetic_size_error

#: The shipped default model (``make default-model`` writes it).
DEFAULT_MODEL = Path(__file__).resolve().parent / "assets" / "default.onnx"
#: Most cameras one node batches into its engine (a source list of 5,000 started and hung).
MAX_CAMERAS = 16

# ``NAME=SOURCE``: a camera name in front of a source. The name part holds only ROS 2 name
# characters, so GStreamer pipelines (``v4l2src device=...``: a space before the '=') and URLs with
# query strings (``rtsp://host/s?a=1``) are never taken for one; a file really called
# ``front=x.mp4`` is passed as ``./front=x.mp4``.
_CAMERA_PREFIX = re.compile(r"^([A-Za-z0-9_]+)=(.*)$", re.DOTALL)


def split_camera_source(text: str) -> tuple[str | None, str]:
    """``"rear=clip.mp4"`` -> ("rear", "clip.mp4"); a source without a camera name -> (None, text)."""
    match = _CAMERA_PREFIX.match(text)
    return (None, text) if match is None else (match.group(1), match.group(2))


@dataclass(frozen=True)
class CameraSource:
    """One camera of a node: its name (frame id, namespace suffix) and its source spec."""

    name: str
    source: str


@dataclass
class RunConfig:
    """Every ``perception run`` setting; field names are the flags (``--max-frames`` -> max_frames).

    ``source``: one source (``clip.mp4``; camera ``camera_name``), or several cameras of one node,
    each named (``front=/dev/video0``; a list of such strings, or a mapping camera name -> source):
    their frames are batched into one inference (``batch_timeout_ms``: how long a batch waits for
    late cameras) and each camera publishes under ``<namespace>/<camera>`` (``namespace`` defaults
    to ``perception``), see ``cameras``. ``queue``: ``auto`` is ``latest`` for live sources
    (cameras, streams, synthetic) and ``lossless`` for files. ``max_frames``/``duration_s``: 0 runs
    until the input ends or the node is stopped. The option groups (``source_options``,
    ``engine_options``, ``publish_options``) document their own settings.
    """

    source: str | list[str] | dict[str, str] = setting(
        "synthetic", group="source", metavar="[CAMERA=]SOURCE",
        help="/dev/videoN or N (V4L2 camera), a video file, an image folder or quoted glob, rtsp://|http:// URL, "
             "a GStreamer pipeline, or 'synthetic'; repeat with a camera name each (front=/dev/video0) to batch "
             "several cameras into one engine",
    )
    source_options: SourceOptions = composed(SourceOptions)
    model: str | None = setting(None, group="engine",
                                help=f"exported .onnx (or .engine / .pt); default: the shipped {DEFAULT_MODEL.name}")
    engine: EngineName = setting(
        "ort", group="engine", help="inference backend (auto: probe once, run the fastest verified)")
    engine_options: EngineOptions = composed(EngineOptions)
    warmup: int = setting(1, lo=0, hi=1000, group="engine",
                          help="warm-up runs before the first frame (0 still makes one: the check that the model "
                               "runs and gives the outputs its graph declares)")
    queue: Literal["auto", "latest", "lossless"] = setting(
        "auto", group="pipeline",
        help="latest: keep the newest frame, count drops (auto for live sources); lossless: every frame (auto for files)")
    queue_capacity: int = setting(2, lo=1, hi=1024, group="pipeline",
                                  help="frames held between capture and inference (each a whole source image: "
                                       "2.8 MB at 1280x720, 25 MB at 3840x2160)")
    max_frames: int = setting(0, lo=0, group="pipeline", help="stop after this many frames, per camera (0: no limit)")
    duration_s: float = setting(0.0, lo=0, flag="--duration", metavar="S", group="pipeline",
                                help="stop after this many seconds (0: no limit)")
    batch_timeout_ms: float = setting(20.0, lo=0, hi=10_000, metavar="MS", group="pipeline",
                                      help="several cameras: how long a batch waits for late cameras before it runs "
                                           "with the frames it has")
    publish_options: PublishOptions = composed(PublishOptions)

    @classmethod
    def from_settings(cls, **settings: Any) -> RunConfig:
        """A config from flat settings, as a YAML file gives them, checked like one (ConfigError):
        ``RunConfig.from_settings(source="clip.mp4", width=640, threads=2, endpoint="tcp://*:5560")``."""
        return load_config(cls, settings, source="RunConfig")

    def __post_init__(self) -> None:
        cameras = self.cameras  # validates the sources and camera names (ValueError naming them)
        if any(camera.source == "synthetic" for camera in cameras):  # before the model loads, not after
            problem = synthetic_size_error(self.source_options.width, self.source_options.height, self.source_options.fps)
            if problem:
                raise ValueError(problem)
        # Encodings a topic cannot carry: checked before the model loads, not at the publisher's opening
        # (perception.encoding imports numpy and OpenCV: only for a node with --encoding).
        if self.publish_options.encoding:
            from perception.encoding import topic_encoding_error

            for topic, name in self.publish_options.encoding.items():
                problem = topic_encoding_error(topic, name)
                if problem:
                    raise ValueError(problem)
        if len(cameras) > 1 and self.engine_options.streams != 1:
            raise ValueError(
                f"streams {self.engine_options.streams} with {len(cameras)} cameras: the cameras' frames already share "
                "each inference (one batch in flight); drop --streams, or run a node per camera with --streams"
            )

    @property
    def cameras(self) -> tuple[CameraSource, ...]:
        """The node's cameras, in the order given. One unnamed source is camera ``camera_name``.

        Raises:
            ValueError: an empty source, an unnamed one among several, a camera name that is not a
                ROS 2 name or used twice, or ``camera_name`` set beside named sources.
        """
        if isinstance(self.source, str):
            items: list[tuple[str | None, str, str]] = [(*split_camera_source(self.source), self.source)]
        elif isinstance(self.source, dict):
            items = [(str(name), str(spec), f"{name}={spec}") for name, spec in self.source.items()]
        else:
            items = [(*split_camera_source(text), text) for text in self.source]
        if not items:
            raise ValueError("source is empty; pass e.g. --source /dev/video0, a video file or synthetic")
        if len(items) > MAX_CAMERAS:  # each camera is a capture thread and a share of every batch
            raise ValueError(f"source names {len(items)} cameras; one node batches at most {MAX_CAMERAS}: "
                             "run several nodes (a launch file), each with some of them")
        cameras: list[CameraSource] = []
        for name, spec, text in items:
            if not spec.strip():
                raise ValueError(f"source {short(text)} is empty; pass e.g. --source /dev/video0, a video file or synthetic")
            if name is None:
                if len(items) > 1:
                    raise ValueError(
                        f"source {short(text)} has no camera name; with several sources name each one, "
                        f"e.g. --source front=/dev/video0 --source rear={cut(text.removeprefix('='))}"
                    )
                name = self.publish_options.camera_name
            elif self.publish_options.camera_name not in ("front", name):
                raise ValueError(
                    f"camera_name {short(self.publish_options.camera_name)} and the named source {short(text)}: name the camera once"
                )
            problem = contracts.ros_token_error(name)
            if problem is not None:
                raise ValueError(f"camera name {short(name)} of source {short(text)} is not a ROS 2 name ({problem}); use e.g. front_left_1")
            if any(c.name == name for c in cameras):
                raise ValueError(f"camera name {short(name)} is used by two sources; give each camera its own name")
            cameras.append(CameraSource(name=name, source=spec.strip()))
        return tuple(cameras)

    @property
    def reads_flat_out(self) -> bool:
        """One camera whose source is a video file or image folder read as fast as the node can
        (no ``--fps``, no ``--realtime``): throughput is what counts (``--streams auto`` reads it)."""
        from perception.sources import source_is_live  # the sources' imports only when asked

        cameras = self.cameras
        options = self.source_options
        return len(cameras) == 1 and not source_is_live(cameras[0].source) and not options.fps and not options.realtime

    def camera_config(self, index: int) -> RunConfig:
        """The config of camera ``index`` alone: its source and name (``cameras``); with several
        cameras also its namespace ``<namespace or perception>/<camera>`` and synthetic seed
        ``seed + index`` (two synthetic cameras then show different scenes)."""
        cameras = self.cameras
        camera = cameras[index]
        source = f"{camera.name}={camera.source}"  # named again: a spec holding '=' stays whole
        publish = dataclasses.replace(self.publish_options, camera_name=camera.name)
        if len(cameras) == 1:
            return dataclasses.replace(self, source=source, publish_options=publish)
        prefix = (self.publish_options.namespace or contracts.NAMESPACE_PREFIX).rstrip("/")
        return dataclasses.replace(
            self, source=source, publish_options=dataclasses.replace(publish, namespace=f"{prefix}/{camera.name}"),
            source_options=dataclasses.replace(self.source_options, seed=self.source_options.seed + index),
        )

    @property
    def model_path(self) -> Path:
        return Path(self.model) if self.model else DEFAULT_MODEL
