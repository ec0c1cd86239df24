"""``RunConfig``: every setting of the node (``perception run`` flags, ``--config node.yaml``, launch files).

The one typed description of a node, validated once at the edge with ``perception.config.load_config``
(unknown keys rejected with a "did you mean", ranges from ``bounds``, the checks in
``__post_init__``). Launch files validate their ``pipeline`` nodes' parameters against it, so a new
flag is a new field here plus its argparse flag in ``perception/commands/run.py``::

    from perception.config import load_config
    config = load_config(RunConfig, {"source": "drive.mp4", "queue": "lossless"}, source="node.yaml")

This module is imported to validate launch files: it must stay light (no engines, no OpenCV).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from perception import contracts
from perception.config import bounds

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

    source: str | list[str] | dict[str, str] = "synthetic"
    model: str | None = None
    engine: Literal["ort", "openvino", "auto", "tensorrt", "torch"] = "ort"
    provider: Literal["auto", "cpu", "cuda", "tensorrt"] = "auto"
    threads: int = field(default=0, metadata=bounds(0, 256))
    fp16: bool = False
    compile: Literal["none", "tensorrt"] = "none"
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = "auto"
    queue: Literal["auto", "latest", "lossless"] = "auto"
    queue_capacity: int = field(default=2, metadata=bounds(1, 1024))
    endpoint: str = contracts.DEFAULT_ENDPOINT
    namespace: str | None = None
    camera_name: str = "front"
    mask_size: Literal["model", "source"] = "model"
    encoding: dict[str, str] = field(default_factory=dict)
    task: dict[str, list[str]] = field(default_factory=dict)
    obstacles: bool = True
    per_class_obstacles: bool = False
    atomic_frames: bool = False
    unknown_threshold: float | None = field(default=None, metadata=bounds(0, 1))
    max_frames: int = field(default=0, metadata=bounds(0, None))
    duration_s: float = field(default=0.0, metadata=bounds(0, None))
    realtime: bool = False
    loop: bool = False
    width: int | None = field(default=None, metadata=bounds(1, 16384))
    height: int | None = field(default=None, metadata=bounds(1, 16384))
    fps: float | None = field(default=None, metadata=bounds(0.1, 1000))
    fourcc: str | None = None
    read_timeout_s: float = field(default=5.0, metadata=bounds(0.1, 600))
    seed: int = 0
    warmup: int = field(default=3, metadata=bounds(0, 1000))
    stats_interval_s: float = field(default=1.0, metadata=bounds(0.05, 3600))
    curve_secret_key: str | None = None
    curve_allow: str | None = None
    sndhwm: int = field(default=16, metadata=bounds(1, 100000))
    wait_subscribers: int = field(default=0, metadata=bounds(0, 1000))
    wait_timeout_s: float = field(default=10.0, metadata=bounds(0.1, 3600))
    batch_timeout_ms: float = field(default=20.0, metadata=bounds(0, 10_000))

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
        """Keyword options for ``perception.sources.open_source``."""
        return {
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "fourcc": self.fourcc,
            "realtime": self.realtime,
            "loop": self.loop,
            "read_timeout_s": self.read_timeout_s,
            "seed": self.seed,
        }
