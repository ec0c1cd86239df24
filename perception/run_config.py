"""``RunConfig``: every setting of the node (``perception run`` flags, ``--config node.yaml``, launch files).

The one typed description of a node, validated once at the edge with ``perception.config.load_config``
(unknown keys rejected with a "did you mean", ranges from ``setting``, the checks in
``__post_init__``). Each field is the one declaration of its setting: ``perception run``'s flags are
generated from it (``perception.config.add_flags``), YAML files and launch files' ``pipeline`` nodes
are checked against it. A new flag is a new field here. The source and engine settings are
``perception.options``' declarations, reused (``same_setting``)::

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
from perception.config import same_setting, setting
from perception.options import CompileName, EngineOptions, PrecisionName, ProviderName, SourceOptions

#: The shipped default model (``make default-model`` writes it).
DEFAULT_MODEL = Path(__file__).resolve().parent / "assets" / "default.onnx"

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

    ``queue``: ``auto`` is ``latest`` for live sources (cameras, streams, synthetic) and
    ``lossless`` for files. ``source``: one source (``clip.mp4``; camera ``camera_name``), or several
    cameras of one node, each named (``front=/dev/video0``; a list of such strings, or a mapping
    camera name -> source): their frames are batched into one inference (``batch_timeout_ms``: how
    long a batch waits for late cameras) and each camera publishes under ``<namespace>/<camera>``
    (``namespace`` defaults to ``perception``), see ``cameras``. ``mask_size``: ``model`` publishes masks at the model's scale with the
    letterbox padding cut off (the content region only), ``source`` resizes them to the camera frame. ``encoding``: mask topic -> payload encoding.
    ``task``: task -> class names overriding the model's task groups. ``max_frames``/``duration_s``:
    0 runs until the input ends or the node is stopped. ``wait_subscribers``: hold the first frame
    until this many subscriptions to the node's namespace have reached the publisher (so a
    recorder started first loses nothing), failing after ``wait_timeout_s``. ``per_class_obstacles``:
    also publish ``<namespace>/obstacle/<class>`` for each class of the obstacle task. ``atomic_frames``:
    all masks of a frame in one multipart message on ``<namespace>/frame``. ``unknown_threshold``:
    pixels whose confidence (top softmax probability) is below it are published as the unknown id
    (models with a confidence output); None: the model's own threshold, 0: off.
    """

    source: str | list[str] | dict[str, str] = setting(
        "synthetic", group="source", metavar="[CAMERA=]SOURCE",
        help="/dev/videoN or N (V4L2 camera), a video file, an image folder or quoted glob, rtsp://|http:// URL, "
             "a GStreamer pipeline, or 'synthetic'; repeat with a camera name each (front=/dev/video0) to batch "
             "several cameras into one engine",
    )
    width: int | None = same_setting(SourceOptions, "width")
    height: int | None = same_setting(SourceOptions, "height")
    fps: float | None = same_setting(SourceOptions, "fps")
    fourcc: str | None = same_setting(SourceOptions, "fourcc")
    realtime: bool = same_setting(SourceOptions, "realtime")
    loop: bool = same_setting(SourceOptions, "loop")
    read_timeout_s: float = same_setting(SourceOptions, "read_timeout_s")
    seed: int = same_setting(SourceOptions, "seed")
    model: str | None = setting(None, group="engine",
                                help=f"exported .onnx (or .engine / .pt); default: the shipped {DEFAULT_MODEL.name}")
    engine: Literal["ort", "openvino", "auto", "tensorrt", "torch"] = setting(
        "ort", group="engine", help="inference backend (auto: probe once, run the fastest verified)")
    provider: ProviderName = same_setting(EngineOptions, "provider")
    threads: int = same_setting(EngineOptions, "threads")
    fp16: bool = same_setting(EngineOptions, "fp16")
    compile: CompileName = same_setting(EngineOptions, "compile")
    precision: PrecisionName = same_setting(EngineOptions, "precision")
    warmup: int = setting(1, lo=0, hi=1000, group="engine", help="warm-up runs before the first frame")
    queue: Literal["auto", "latest", "lossless"] = setting(
        "auto", group="pipeline",
        help="latest: keep the newest frame, count drops (auto for live sources); lossless: every frame (auto for files)")
    queue_capacity: int = setting(2, lo=1, hi=1024, group="pipeline", help="frames held between capture and inference")
    max_frames: int = setting(0, lo=0, group="pipeline", help="stop after this many frames, per camera (0: no limit)")
    duration_s: float = setting(0.0, lo=0, flag="--duration", metavar="S", group="pipeline",
                                help="stop after this many seconds (0: no limit)")
    batch_timeout_ms: float = setting(20.0, lo=0, hi=10_000, metavar="MS", group="pipeline",
                                      help="several cameras: how long a batch waits for late cameras before it runs "
                                           "with the frames it has")
    endpoint: str = setting(contracts.DEFAULT_ENDPOINT, group="masks and publishing", help="ZeroMQ PUB endpoint")
    camera_name: str = setting("front", group="masks and publishing",
                               help="frame id and namespace suffix of an unnamed --source")
    namespace: str | None = setting(None, group="masks and publishing",
                                    help="topic prefix (default perception/<camera name>); with several cameras the "
                                         "prefix of each camera's <namespace>/<camera> (default perception)")
    mask_size: Literal["model", "source"] = setting(
        "model", group="masks and publishing",
        help="model: the model's scale, letterbox padding cut off; source: masks at the camera frame size")
    encoding: dict[str, str] = setting(
        default_factory=dict, group="masks and publishing", metavar="TOPIC=ENC",
        help="payload encoding of one mask topic, e.g. drivable=bitpack (mono8 default, bitpack, rle, png); repeatable")
    task: dict[str, list[str]] = setting(
        default_factory=dict, group="masks and publishing", metavar="TASK=CLASS[,CLASS]",
        help="override a task's classes, e.g. lane=lane_marking or obstacle=car,pedestrian")
    obstacles: bool = setting(True, group="masks and publishing", help="do not publish obstacle blobs on the obstacles topic")
    per_class_obstacles: bool = setting(False, group="masks and publishing",
                                        help="also publish <namespace>/obstacle/<class>, a binary mask per obstacle class")
    atomic_frames: bool = setting(False, group="masks and publishing",
                                  help="send all masks of a frame in one multipart message on <namespace>/frame (all or none)")
    unknown_threshold: float | None = setting(
        None, lo=0, hi=1, metavar="P", group="masks and publishing",
        help="class map id 255 (unknown, in no task mask) where the model's confidence is below P (default: the "
             "threshold in the model's metadata; 0: off); needs a model exported with --confidence")
    stats_interval_s: float = setting(1.0, lo=0.05, hi=3600, flag="--stats-interval", metavar="S",
                                      group="masks and publishing", help="seconds between stats documents")
    sndhwm: int = setting(16, lo=1, hi=100000, group="masks and publishing",
                          help="ZeroMQ messages (not frames) queued per subscriber (16: about 2.5 frames)")
    wait_subscribers: int = setting(0, lo=0, hi=1000, metavar="N", group="masks and publishing",
                                    help="hold the first frame until N subscribers have subscribed, e.g. a recorder of "
                                         "a lossless file run (0: start at once)")
    wait_timeout_s: float = setting(10.0, lo=0.1, hi=3600, flag="--wait-timeout", metavar="S",
                                    group="masks and publishing",
                                    help="seconds --wait-subscribers waits before the node fails")
    curve_secret_key: str | None = setting(None, group="masks and publishing",
                                           help="server .key_secret file: encrypt with CURVE")
    curve_allow: str | None = setting(None, group="masks and publishing", help="folder of allowed client .key files")

    def __post_init__(self) -> None:
        self.cameras  # noqa: B018 - validates the sources and camera names (ValueError naming them)
        for topic, enc in self.encoding.items():
            if topic not in contracts.MASK_TOPICS:
                raise ValueError(f"encoding: unknown mask topic {topic!r}; known: {', '.join(contracts.MASK_TOPICS)}")
            if enc not in contracts.ENCODINGS:
                raise ValueError(f"encoding {topic}={enc}: unknown encoding; known: {', '.join(contracts.ENCODINGS)}")
        for task in self.task:
            if task not in contracts.TASKS:
                raise ValueError(f"task: unknown task {task!r}; known: {', '.join(contracts.TASKS)}")
        if self.fourcc is not None and len(self.fourcc) != 4:
            raise ValueError(f"fourcc {self.fourcc!r} must be 4 characters, e.g. MJPG or YUYV")
        # Topics, frame ids and recordings must stay legal ROS 2 names (checked at start, not in a bridge).
        problem = contracts.ros_token_error(self.camera_name)
        if problem is not None:
            raise ValueError(
                f"camera_name {self.camera_name!r} is not a ROS 2 name ({problem}); use e.g. front_left_1"
            )
        problem = None if self.namespace is None else contracts.ros_namespace_error(self.namespace)
        if problem is not None:
            raise ValueError(
                f"namespace {self.namespace!r} is not a ROS 2 namespace ({problem}); use e.g. perception/front_left"
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
        cameras: list[CameraSource] = []
        for name, spec, text in items:
            if not spec.strip():
                raise ValueError(f"source {text!r} is empty; pass e.g. --source /dev/video0, a video file or synthetic")
            if name is None:
                if len(items) > 1:
                    raise ValueError(
                        f"source {text!r} has no camera name; with several sources name each one, "
                        f"e.g. --source front=/dev/video0 --source rear={text}"
                    )
                name = self.camera_name
            elif self.camera_name not in ("front", name):
                raise ValueError(
                    f"camera_name {self.camera_name!r} and the named source {text!r}: name the camera once"
                )
            problem = contracts.ros_token_error(name)
            if problem is not None:
                raise ValueError(f"camera name {name!r} of source {text!r} is not a ROS 2 name ({problem}); use e.g. front_left_1")
            if any(c.name == name for c in cameras):
                raise ValueError(f"camera name {name!r} is used by two sources; give each camera its own name")
            cameras.append(CameraSource(name=name, source=spec.strip()))
        return tuple(cameras)

    def camera_config(self, index: int) -> RunConfig:
        """The config of camera ``index`` alone: its source and name (``cameras``); with several
        cameras also its namespace ``<namespace or perception>/<camera>`` and synthetic seed
        ``seed + index`` (two synthetic cameras then show different scenes)."""
        cameras = self.cameras
        camera = cameras[index]
        source = f"{camera.name}={camera.source}"  # named again: a spec holding '=' stays whole
        if len(cameras) == 1:
            return dataclasses.replace(self, source=source, camera_name=camera.name)
        prefix = (self.namespace or contracts.NAMESPACE_PREFIX).rstrip("/")
        return dataclasses.replace(
            self, source=source, camera_name=camera.name, namespace=f"{prefix}/{camera.name}", seed=self.seed + index,
        )

    @property
    def resolved_namespace(self) -> str:
        return self.namespace or contracts.default_namespace(self.camera_name)

    @property
    def model_path(self) -> Path:
        return Path(self.model) if self.model else DEFAULT_MODEL

    def source_options(self) -> dict[str, Any]:
        """Keyword options for ``perception.sources.open_source``: this config's ``SourceOptions`` fields."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(SourceOptions)}

    def engine_options(self) -> EngineOptions:
        """The ``EngineOptions`` for ``perception.engines.load_engine``: this config's fields of that name."""
        return EngineOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(EngineOptions)})
