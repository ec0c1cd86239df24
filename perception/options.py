"""The option groups of a node: declared once, held by every command that has them.

``SourceOptions`` (what a source is asked for: size, rate, pixel format, pacing), ``EngineOptions``
(which backend choices an engine makes) and ``PublishOptions`` (the masks a node makes and how it
publishes them: endpoint, names, encodings, security) are held by ``RunConfig`` (and ``DemoConfig``
and ``ViewConfig`` hold the source and engine settings they offer) through
``perception.config.composed``: their settings stay flat YAML keys, launch parameters and flags
(``width``, ``--width``), so a frame width has one range and one help text wherever it is given.
``perception.sources`` and ``perception.engines`` re-export the first two. The CURVE keys are small
groups of their own: ``CurveServerOptions`` (a publisher's: ``run``, ``replay``) and
``CurveClientOptions`` (a subscriber's: ``listen``, ``record``, ``view``), and so are a subscriber's
receive queue budget, ``ReaderQueueOptions`` (``listen``, ``record``), and the number of topics it
keeps track of, ``ReaderTopicOptions`` (``listen``).

Light on purpose (no OpenCV, no NumPy): launch-file validation imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from perception import contracts
from perception.config import same_setting, setting, short
from perception.errors import ConfigError

#: The frame sizes a source may be asked for: from a thumbnail to a 16K panorama.
MIN_FRAME_SIDE, MAX_FRAME_SIDE = 16, 16384
#: The (height, width) sizes the synthetic camera draws, inclusive (``perception.synthetic.MIN_HW``
#: / ``MAX_HW``: below, the scene degenerates to a few pixels per object; above, it is not real-time),
#: and what it draws when not asked.
SYNTHETIC_MIN_HW, SYNTHETIC_MAX_HW = (48, 64), (1080, 1920)
SYNTHETIC_DEFAULT_HW = (360, 640)
#: The synthetic drive's frame rates (it moves the camera 1/fps seconds of driving per frame).
SYNTHETIC_FPS_RANGE = (1.0, 240.0)


def synthetic_size_error(width: int | None, height: int | None, fps: float | None = None) -> str | None:
    """Why the synthetic camera cannot draw ``width`` x ``height`` (None: its default) at ``fps``
    (None: its default), naming the settings and the range; None when it can. Checked with the
    other settings, before any work."""
    low_fps, high_fps = SYNTHETIC_FPS_RANGE
    if fps is not None and not low_fps <= fps <= high_fps:
        return f"fps={fps:g} is outside the synthetic camera's range ({low_fps:g}..{high_fps:g} frames per second); use e.g. fps 30"
    h = SYNTHETIC_DEFAULT_HW[0] if height is None else height
    w = SYNTHETIC_DEFAULT_HW[1] if width is None else width
    (low_h, low_w), (high_h, high_w) = SYNTHETIC_MIN_HW, SYNTHETIC_MAX_HW
    if low_w <= w <= high_w and low_h <= h <= high_h:
        return None
    return (f"width={w} height={h} is outside the synthetic camera's range (width {low_w}..{high_w}, "
            f"height {low_h}..{high_h}); use e.g. width {SYNTHETIC_DEFAULT_HW[1]} height {SYNTHETIC_DEFAULT_HW[0]}")


def leading_slash_error(what: str, name: str, *, publishing: bool = True) -> str | None:
    """The one line for a namespace or topic ``name`` (named ``what``: ``namespace``, ``--topic``)
    written as ROS writes a name, with a leading ``/``; None without one (or with nothing after it,
    which the caller refuses as empty). Wire topics have none (``perception/front/lane``; a
    recording's ROS 2 channel names add it): a node publishing under ``/perception/front`` reached no
    subscriber to ``perception/front/``, and a recorder subscribed to it (``publishing`` False)
    receives nothing from a node. The one declaration of this rule: a node's namespace
    (``PublishOptions``, ``MaskPublisher``) and what ``perception record`` subscribes to."""
    if not isinstance(name, str) or not name.startswith("/"):
        return None
    fixed = "/".join(part for part in name.split("/") if part)
    if not fixed:
        return None
    result = (f"so no subscriber to {short(fixed + '/')} would receive them" if publishing
              else "so it would receive nothing from a node")
    return (f"{what} {short(name)} starts with '/': wire topics have no leading '/' (only the ROS 2 names of a "
            f"recording's channels have one), {result}; drop the leading '/': {short(fixed)}")


def synthetic_hw_near(hw: tuple[int, int]) -> tuple[int, int]:
    """The size nearest ``hw`` (height, width) that the synthetic camera draws: frames for a model
    input outside its range (a 32x64 model) are drawn there and letterboxed."""
    return (min(max(hw[0], SYNTHETIC_MIN_HW[0]), SYNTHETIC_MAX_HW[0]),
            min(max(hw[1], SYNTHETIC_MIN_HW[1]), SYNTHETIC_MAX_HW[1]))

#: The inference backends ``perception run --engine`` takes (``perception.engines.ENGINES``).
EngineName = Literal["ort", "openvino", "auto", "tensorrt", "torch"]
ProviderName = Literal["auto", "cpu", "cuda", "tensorrt"]
PROVIDER_CHOICES: tuple[str, ...] = get_args(ProviderName)
CompileName = Literal["none", "tensorrt"]
COMPILE_CHOICES: tuple[str, ...] = get_args(CompileName)
PrecisionName = Literal["auto", "fp32", "bf16", "fp16", "int8"]
#: ``auto``: the model file's own precision (the ``auto`` engine probes the others).
PRECISION_CHOICES: tuple[str, ...] = get_args(PrecisionName)
MAX_THREADS = 256
#: The most frames ``--streams`` may keep in the inference stage at once.
MAX_STREAMS = 8
#: ``--streams``: a number of frames in flight, or ``auto`` (``--engine auto`` measures 1 and 2).
StreamsValue = int | Literal["auto"]


def streams_from_text(text: str) -> StreamsValue:
    """``--streams 2`` -> 2, ``--streams auto`` -> ``"auto"``; ConfigError naming the flag otherwise."""
    text = str(text).strip().lower()
    if text == "auto":
        return "auto"
    if not text.isdigit():
        raise ConfigError(f"--streams {short(text)}: expected a number of frames in flight (1..{MAX_STREAMS}) or auto")
    return int(text)


@dataclass(frozen=True)
class SourceOptions:
    """Options a source may use; each source reads those that apply to it.

    ``width``/``height``/``fps``/``fourcc`` are requested from cameras and set the synthetic
    world's size and rate; ``realtime`` paces files at their native rate (``fps`` overrides it);
    ``loop`` restarts finite inputs; ``read_timeout_s`` is how long a live read may stall before the
    source is reopened; ``seed`` seeds the synthetic world.
    """

    width: int | None = setting(
        None, lo=MIN_FRAME_SIDE, hi=MAX_FRAME_SIDE, group="source",
        help=f"frame width to request from a camera; the synthetic camera takes "
             f"{SYNTHETIC_MIN_HW[1]}..{SYNTHETIC_MAX_HW[1]} (its default {SYNTHETIC_DEFAULT_HW[1]})")
    height: int | None = setting(
        None, lo=MIN_FRAME_SIDE, hi=MAX_FRAME_SIDE, group="source",
        help=f"frame height to request from a camera; the synthetic camera takes "
             f"{SYNTHETIC_MIN_HW[0]}..{SYNTHETIC_MAX_HW[0]} (its default {SYNTHETIC_DEFAULT_HW[0]})")
    fps: float | None = setting(None, lo=0.1, hi=1000, group="source",
                                help="frame rate to request from a camera; synthetic/file pacing rate")
    fourcc: str | None = setting(None, group="source", help="camera pixel format, e.g. MJPG or YUYV")
    realtime: bool = setting(False, group="source", help="play files at their native rate")
    loop: bool = setting(False, group="source", help="restart files and image folders at the end")
    read_timeout_s: float = setting(5.0, lo=0.1, hi=600, flag="--read-timeout", metavar="S", group="source",
                                    help="seconds a live source may stall before it is reopened")
    seed: int = setting(0, lo=0, group="source", help="synthetic world seed")

    def __post_init__(self) -> None:
        if self.fourcc is not None and len(self.fourcc) != 4:
            raise ValueError(f"fourcc {short(self.fourcc)} must be 4 characters, e.g. MJPG or YUYV")


@dataclass(frozen=True)
class CurveClientOptions:
    """A subscriber's CURVE keys (``listen``, ``record``, ``view``): declared once here, and taken
    by each command with ``same_setting``, so the three say the same thing."""

    curve_server_key: str | None = setting(None, metavar="FILE", help="the node's public .key file (CURVE)")
    curve_key: str | None = setting(None, metavar="FILE", help="this client's .key_secret file (CURVE)")


#: A subscriber's budget (MiB) for the messages ZeroMQ queues for it before it reads them, and the
#: largest one a user may give (``ReaderQueueOptions``; ``perception.subscribe_decode.rcvhwm_for``).
DEFAULT_MAX_QUEUE_MB, MAX_QUEUE_MB = 256, 65536


@dataclass(frozen=True)
class ReaderQueueOptions:
    """A subscriber's receive queue budget (``listen``; the C and JavaScript clients' flag of the
    same name): ZeroMQ's ``RCVHWM`` is derived from it and the frame limit, so that the queue holds
    at most ``max_queue_mb`` MiB of frames at the limit (README, "Robustness", frame size)."""

    max_queue_mb: int = setting(DEFAULT_MAX_QUEUE_MB, lo=1, hi=MAX_QUEUE_MB, metavar="MB",
                                help="MiB of received messages ZeroMQ may queue before this reader takes them: its "
                                     "queue holds max(1, MB MiB / frame limit) messages, the frame limit being "
                                     "max(5 x --max-mask-pixels, 1 MiB)")


#: The most distinct topics a subscriber keeps track of by default, and the largest bound a user may
#: give (``ReaderTopicOptions``; ``perception.subscribe.MaskSubscriber(max_topics=)``).
DEFAULT_MAX_TOPICS, MAX_TOPICS = 256, 65536


@dataclass(frozen=True)
class ReaderTopicOptions:
    """How many distinct topics a subscriber keeps track of (``listen``; ``MaskSubscriber``, and so
    ``record`` and ``view``, at the default; the C and JavaScript clients' flag of the same name).
    Topics come from the network, each costs a reader some state (figures, a folder, a channel, a
    class table), so a publisher sending on ever new topics must not grow it without end: messages
    on topics past the first ``max_topics`` are skipped and counted (README, "Robustness")."""

    max_topics: int = setting(DEFAULT_MAX_TOPICS, lo=1, hi=MAX_TOPICS, metavar="N",
                              help="distinct topics this reader keeps track of (the namespace's info topic "
                                   "counts from the start): messages on further topics are skipped and counted, "
                                   "with one warning")


@dataclass(frozen=True)
class CurveServerOptions:
    """A publisher's CURVE keys (``run``, ``replay``): declared once here, with their one rule (an
    allow-list needs the server's secret key: without it nothing would be encrypted or checked).
    ``PublishOptions`` takes them with ``same_setting`` and applies the rule; ``ReplayConfig`` holds
    the group (``composed``). Both hand them to the XPUB core (``perception.xpub.XpubCore``), which
    loads the keys and follows the allow folder (``perception.security``)."""

    curve_secret_key: str | None = setting(None, metavar="FILE", help="server .key_secret file: encrypt with CURVE")
    curve_allow: str | None = setting(None, metavar="DIR", help="folder of allowed client .key files")

    def __post_init__(self) -> None:
        if self.curve_allow is not None and self.curve_secret_key is None:
            raise ValueError("--curve-allow needs --curve-secret-key (the server's .key_secret file)")


@dataclass(frozen=True)
class EngineOptions:
    """Backend choices. ``provider``: where to run (``auto`` picks the fastest available);
    ``threads``: CPU inference threads in all (0: the backend's default), shared by the ``streams``
    frames in flight (each runs on ``threads // streams``); ``streams``: frames the inference stage
    runs at once (``perception.engines.base.Engine.worker``), each with its own request or context:
    more frames per second when one inference does not fill the cores, a little more latency per
    frame; ``auto``: ``--engine auto``'s probe measures 1 and 2 for its winner (an error with the
    other engines); ``fp16``: half precision (torch);
    ``compile``: ``tensorrt`` compiles the torch engine's model with Torch-TensorRT;
    ``precision``: the arithmetic to run in (``bf16``: OpenVINO on CPUs with AVX-512 BF16/AMX;
    ``int8``: the model's INT8 sibling, see ``perception.engines.base.int8_model_path``)."""

    provider: ProviderName = setting("auto", group="engine", help="where to run the model (auto: the fastest available)")
    threads: int = setting(0, lo=0, hi=MAX_THREADS, group="engine",
                           help="CPU inference threads in all, shared by the --streams (0: the backend's default)")
    streams: StreamsValue = setting(
        1, lo=1, hi=MAX_STREAMS, group="engine", metavar="N|auto", from_text=streams_from_text, to_text=str,
        help="frames in flight in the inference stage (ort, openvino, auto): more throughput, a little more latency "
             "per frame; auto: --engine auto measures 1 and 2")
    fp16: bool = setting(False, group="engine", help="half precision (torch engine on CUDA)")
    compile: CompileName = setting("none", group="engine",
                                   help="tensorrt: Torch-TensorRT for --engine torch on CUDA")
    precision: PrecisionName = setting(
        "auto", group="engine",
        help="auto: the model's own; bf16, fp16: OpenVINO's inference precision, on CPUs that offer it; int8: the MODEL.int8.onnx sibling",
    )

    def __post_init__(self) -> None:
        # Every command builds its options here, so an unknown provider fails the same way for
        # run, view, demo, eval and bench, instead of as a KeyError deep in a backend.
        if self.provider not in PROVIDER_CHOICES:
            raise ConfigError(f"unknown --provider {short(self.provider)}; known: {', '.join(PROVIDER_CHOICES)}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or not 0 <= self.threads <= MAX_THREADS:
            raise ConfigError(f"--threads {short(self.threads)} must be an integer in 0..{MAX_THREADS} (0: the backend's default)")
        if self.streams != "auto" and (isinstance(self.streams, bool) or not isinstance(self.streams, int)
                                       or not 1 <= self.streams <= MAX_STREAMS):
            raise ConfigError(f"--streams {short(self.streams)} must be an integer in 1..{MAX_STREAMS} (frames in flight) or auto")
        if self.streams != "auto" and self.threads and self.threads < self.streams:
            raise ConfigError(f"--threads {self.threads} is fewer than --streams {self.streams}: each frame in flight needs "
                              f"a thread (--threads is the total); give --threads {self.streams} or more, or 0")
        if self.compile not in COMPILE_CHOICES:
            raise ConfigError(f"unknown --compile {short(self.compile)}; known: {', '.join(COMPILE_CHOICES)}")
        if self.precision not in PRECISION_CHOICES:
            raise ConfigError(f"unknown --precision {short(self.precision)}; known: {', '.join(PRECISION_CHOICES)}")


@dataclass(frozen=True)
class PublishOptions:
    """The masks a node makes and how it publishes them.

    ``endpoint``: the ZeroMQ PUB endpoint. ``camera_name``: the frame id and namespace suffix of an
    unnamed source. ``namespace``: the topic prefix (None: ``perception/<camera_name>``, see
    ``resolved_namespace``). ``mask_size``: ``model`` publishes masks at the model's scale with the
    letterbox padding cut off (the content region only), ``source`` resizes them to the camera
    frame. ``encoding``: mask topic -> payload encoding. ``task``: task -> class names overriding
    the model's task groups. ``obstacles``: publish obstacle blobs. ``per_class_obstacles``: also
    publish ``<namespace>/obstacle/<class>`` for each class of the obstacle task.
    ``atomic_frames``: all masks of a frame in one multipart message on ``<namespace>/frame``.
    ``drivable_reach``: ``ego`` keeps only the drivable area joined to the car
    (``perception.masks.EgoReach``), ``all`` every pixel of the drivable classes.
    ``unknown_threshold``: pixels whose confidence (``contracts.OUTPUT_CONFIDENCE``) is below it are
    published as the unknown id (models with a confidence output); None: the model's own
    threshold, 0: off. ``stats_interval_s``: seconds between stats documents. ``sndhwm``: messages
    queued per subscriber (None: 5 frames of every camera, ``send_limit.AUTO_BURSTS``). ``wait_subscribers``: hold the first frame until this many
    subscriptions to the node's namespace have reached the publisher (so a recorder started first
    loses nothing), failing after ``wait_timeout_s``. ``curve_secret_key``/``curve_allow``: CURVE
    encryption and the allowed clients' keys (declared by ``CurveServerOptions``, shared with replay).
    """

    endpoint: str = setting(contracts.DEFAULT_ENDPOINT, group="masks and publishing", help="ZeroMQ PUB endpoint")
    camera_name: str = setting("front", group="masks and publishing",
                               help="frame id and namespace suffix of an unnamed --source")
    namespace: str | None = setting(None, group="masks and publishing",
                                    help="topic prefix (default perception/<camera name>); with several cameras the "
                                         "prefix of each camera's <namespace>/<camera> (default perception)")
    mask_size: Literal[contracts.MASK_SIZES] = setting(
        contracts.DEFAULT_MASK_SIZE, group="masks and publishing",
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
    drivable_reach: Literal[contracts.DRIVABLE_REACH_CHOICES] = setting(
        contracts.DEFAULT_DRIVABLE_REACH, group="masks and publishing",
        help="ego: the drivable mask keeps only the area joined to the bottom of the frame, where the car stands "
             "(through drivable pixels or its own hood); all: every pixel of the drivable classes")
    unknown_threshold: float | None = setting(
        None, lo=0, hi=1, metavar="P", group="masks and publishing",
        help="class map id 255 (unknown, in no task mask) where the model's confidence is below P (default: the "
             "threshold in the model's metadata; 0: off); needs a model exported with --confidence")
    stats_interval_s: float = setting(1.0, lo=0.05, hi=3600, flag="--stats-interval", metavar="S",
                                      group="masks and publishing", help="seconds between stats documents")
    sndhwm: int | None = setting(None, lo=1, hi=100000, group="masks and publishing",
                                 help="ZeroMQ messages (not frames) queued per subscriber (default: 5 frames of every "
                                      "camera, e.g. 30 for one camera of 4 masks, obstacles and stats, 120 for four)")
    wait_subscribers: int = setting(0, lo=0, hi=1000, metavar="N", group="masks and publishing",
                                    help="hold the first frame until N subscribers have subscribed, e.g. a recorder of "
                                         "a lossless file run; with several cameras, N to each camera's namespace "
                                         "(0: start at once)")
    wait_timeout_s: float = setting(10.0, lo=0.1, hi=3600, flag="--wait-timeout", metavar="S",
                                    group="masks and publishing",
                                    help="seconds --wait-subscribers waits before the node fails (exit 4: launch files "
                                         "respawn it, as for a source not there yet)")
    curve_secret_key: str | None = same_setting(CurveServerOptions, "curve_secret_key", group="masks and publishing")
    curve_allow: str | None = same_setting(CurveServerOptions, "curve_allow", group="masks and publishing")

    def __post_init__(self) -> None:
        CurveServerOptions(self.curve_secret_key, self.curve_allow)  # its rule (ValueError naming the flags)
        for topic, enc in self.encoding.items():
            if topic not in contracts.MASK_TOPICS:
                raise ValueError(f"encoding: unknown mask topic {short(topic)}; known: {', '.join(contracts.MASK_TOPICS)}")
            if enc not in contracts.ENCODINGS:
                raise ValueError(f"encoding {topic}={enc}: unknown encoding; known: {', '.join(contracts.ENCODINGS)}")
        for task in self.task:
            if task not in contracts.TASKS:
                raise ValueError(f"task: unknown task {short(task)}; known: {', '.join(contracts.TASKS)}")
        # Topics, frame ids and recordings must stay legal ROS 2 names (checked at start, not in a bridge).
        problem = contracts.ros_token_error(self.camera_name)
        if problem is not None:
            raise ValueError(
                f"camera_name {short(self.camera_name)} is not a ROS 2 name ({problem}); use e.g. front_left_1"
            )
        # The namespace the topics go under, also when it comes from the camera name (a 300-character
        # camera name made every topic longer than any reader takes).
        problem = leading_slash_error("namespace", self.resolved_namespace)
        if problem is not None:
            raise ValueError(problem)
        problem = contracts.ros_namespace_error(self.resolved_namespace)
        if problem is not None:
            raise ValueError(
                f"namespace {short(self.resolved_namespace)} is not a ROS 2 namespace ({problem}); use e.g. perception/front_left"
                + ("" if self.namespace else " (it comes from camera_name: give a shorter camera_name)")
            )

    @property
    def resolved_namespace(self) -> str:
        """The topic prefix: ``namespace``, or ``perception/<camera_name>``."""
        return self.namespace or contracts.default_namespace(self.camera_name)
