"""The options of a source and of an engine: declared once, used by every command that has them.

``SourceOptions`` (what a source is asked for: size, rate, pixel format, pacing) and
``EngineOptions`` (which backend choices an engine makes) are the settings ``perception run``,
``demo``, ``view`` and the bench share. ``RunConfig``, ``DemoConfig`` and ``ViewConfig`` reuse these
declarations with ``perception.config.same_setting``, so a frame width has one range and one help
text wherever it is a flag, a YAML key or a launch parameter. ``perception.sources`` and
``perception.engines`` re-export the two classes.

Light on purpose (no OpenCV, no NumPy): launch-file validation imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from perception.config import setting
from perception.errors import ConfigError

#: The frame sizes a source may be asked for: from a thumbnail to a 16K panorama.
MIN_FRAME_SIDE, MAX_FRAME_SIDE = 16, 16384

ProviderName = Literal["auto", "cpu", "cuda", "tensorrt"]
PROVIDER_CHOICES: tuple[str, ...] = get_args(ProviderName)
CompileName = Literal["none", "tensorrt"]
COMPILE_CHOICES: tuple[str, ...] = get_args(CompileName)
PrecisionName = Literal["auto", "fp32", "bf16", "fp16", "int8"]
#: ``auto``: the model file's own precision (the ``auto`` engine probes the others).
PRECISION_CHOICES: tuple[str, ...] = get_args(PrecisionName)
MAX_THREADS = 256


@dataclass(frozen=True)
class SourceOptions:
    """Options a source may use; each source reads those that apply to it.

    ``width``/``height``/``fps``/``fourcc`` are requested from cameras and set the synthetic
    world's size and rate; ``realtime`` paces files at their native rate (``fps`` overrides it);
    ``loop`` restarts finite inputs; ``read_timeout_s`` is how long a live read may stall before the
    source is reopened; ``seed`` seeds the synthetic world.
    """

    width: int | None = setting(None, lo=MIN_FRAME_SIDE, hi=MAX_FRAME_SIDE, group="source",
                                help="frame width to request from a camera; the synthetic world's width")
    height: int | None = setting(None, lo=MIN_FRAME_SIDE, hi=MAX_FRAME_SIDE, group="source",
                                 help="frame height to request from a camera; the synthetic world's height")
    fps: float | None = setting(None, lo=0.1, hi=1000, group="source",
                                help="frame rate to request from a camera; synthetic/file pacing rate")
    fourcc: str | None = setting(None, group="source", help="camera pixel format, e.g. MJPG or YUYV")
    realtime: bool = setting(False, group="source", help="play files at their native rate")
    loop: bool = setting(False, group="source", help="restart files and image folders at the end")
    read_timeout_s: float = setting(5.0, lo=0.1, hi=600, flag="--read-timeout", metavar="S", group="source",
                                    help="seconds a live source may stall before it is reopened")
    seed: int = setting(0, group="source", help="synthetic world seed")


@dataclass(frozen=True)
class EngineOptions:
    """Backend choices. ``provider``: where to run (``auto`` picks the fastest available);
    ``threads``: CPU intra-op threads (0: the backend's default); ``fp16``: half precision (torch);
    ``compile``: ``tensorrt`` compiles the torch engine's model with Torch-TensorRT;
    ``precision``: the arithmetic to run in (``bf16``: OpenVINO on CPUs with AVX-512 BF16/AMX;
    ``int8``: the model's INT8 sibling, see ``perception.engines.base.int8_model_path``)."""

    provider: ProviderName = setting("auto", group="engine", help="where to run the model (auto: the fastest available)")
    threads: int = setting(0, lo=0, hi=MAX_THREADS, group="engine", help="CPU inference threads (0: the backend's default)")
    fp16: bool = setting(False, group="engine", help="half precision (torch engine on CUDA)")
    compile: CompileName = setting("none", group="engine",
                                   help="tensorrt: Torch-TensorRT for --engine torch on CUDA")
    precision: PrecisionName = setting(
        "auto", group="engine",
        help="auto: the model's own; bf16: OpenVINO; int8: the MODEL.int8.onnx sibling",
    )

    def __post_init__(self) -> None:
        # Every command builds its options here, so an unknown provider fails the same way for
        # run, view, demo, eval and bench, instead of as a KeyError deep in a backend.
        if self.provider not in PROVIDER_CHOICES:
            raise ConfigError(f"unknown --provider {self.provider!r}; known: {', '.join(PROVIDER_CHOICES)}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or not 0 <= self.threads <= MAX_THREADS:
            raise ConfigError(f"--threads {self.threads!r} must be an integer in 0..{MAX_THREADS} (0: the backend's default)")
        if self.compile not in COMPILE_CHOICES:
            raise ConfigError(f"unknown --compile {self.compile!r}; known: {', '.join(COMPILE_CHOICES)}")
        if self.precision not in PRECISION_CHOICES:
            raise ConfigError(f"unknown --precision {self.precision!r}; known: {', '.join(PRECISION_CHOICES)}")
