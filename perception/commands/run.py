"""``perception run``: the node. Source -> engine -> drivable/lane/obstacle masks over ZeroMQ.

    perception run --source /dev/video0 --model model.onnx
    perception run --source drive.mp4 --max-frames 300
    perception run --config node.yaml --endpoint tcp://127.0.0.1:5557   # flags override the file
    perception run --source drive.mp4 --wait-subscribers 1              # after `perception record ...`
    perception run --source front=/dev/video0 --source rear=/dev/video2  # one engine, two cameras

Prints the final stats as one JSON line on stdout when it ends (end of input, --max-frames,
--duration, SIGINT/SIGTERM). User mistakes end with one ``perception: error: ...`` line.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from perception import contracts
from perception.config import load_config, read_yaml
from perception.errors import ConfigError, ModelError
from perception.run_config import DEFAULT_MODEL, RunConfig
from perception.signals import SignalHandlers

log = logging.getLogger(__name__)

#: After a finite input ends, how long the last queued messages (and the final stats) may take to
#: go out before the publisher closes anyway. On a signal the node closes at once instead.
FLUSH_S = 1.0

S = argparse.SUPPRESS  # only flags actually given reach the config, so --config values survive


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=S, help="YAML file with RunConfig keys; flags override it")
    g = p.add_argument_group("source")
    g.add_argument("--source", action="append", default=S, metavar="[CAMERA=]SOURCE",
                   help="/dev/videoN or N (V4L2 camera), a video file, an image folder or quoted glob, "
                        "rtsp://|http:// URL, a GStreamer pipeline, or 'synthetic' (default: synthetic); "
                        "repeat with a camera name each (front=/dev/video0) to batch several cameras "
                        "into one engine")
    g.add_argument("--width", type=int, default=S, help="camera/synthetic frame width to request")
    g.add_argument("--height", type=int, default=S, help="camera/synthetic frame height to request")
    g.add_argument("--fps", type=float, default=S, help="camera rate to request; synthetic/file pacing rate")
    g.add_argument("--fourcc", default=S, help="camera pixel format, e.g. MJPG or YUYV")
    g.add_argument("--realtime", action="store_true", default=S, help="play files at their native rate")
    g.add_argument("--loop", action="store_true", default=S, help="restart files and image folders at the end")
    g.add_argument("--read-timeout", dest="read_timeout_s", type=float, default=S,
                   help="seconds a live source may stall before it is reopened (default 5)")
    g.add_argument("--seed", type=int, default=S, help="synthetic world seed (default 0)")
    g = p.add_argument_group("engine")
    g.add_argument("--model", default=S, help=f"exported .onnx (or .engine / .pt); default {DEFAULT_MODEL.name}")
    g.add_argument("--engine", default=S,
                   help="ort (default), openvino, auto (probe once, run the fastest verified), tensorrt or torch")
    g.add_argument("--provider", default=S, help="auto (default), cpu, cuda or tensorrt")
    g.add_argument("--threads", type=int, default=S, help="CPU inference threads (0: backend default)")
    g.add_argument("--fp16", action="store_true", default=S, help="half precision (torch engine on CUDA)")
    g.add_argument("--compile", default=S, help="none (default) or tensorrt: Torch-TensorRT for --engine torch on CUDA")
    g.add_argument("--precision", default=S,
                   help="auto (default: the model's own), fp32, bf16 (openvino), int8 (the MODEL.int8.onnx sibling)")
    g.add_argument("--warmup", type=int, default=S, help="warm-up runs before the first frame (default 3)")
    g = p.add_argument_group("pipeline")
    g.add_argument("--queue", default=S,
                   help="latest (keep newest, count drops; default for live sources) or lossless (default for files)")
    g.add_argument("--queue-capacity", type=int, default=S, help="frames held between capture and inference (default 2)")
    g.add_argument("--max-frames", type=int, default=S,
                   help="stop after this many frames, per camera (0: no limit)")
    g.add_argument("--batch-timeout-ms", dest="batch_timeout_ms", type=float, default=S, metavar="MS",
                   help="several cameras: how long a batch waits for late cameras before it runs with the "
                        "frames it has (default 20)")
    g.add_argument("--duration", dest="duration_s", type=float, default=S, help="stop after this many seconds")
    g = p.add_argument_group("masks and publishing")
    g.add_argument("--endpoint", default=S, help=f"ZeroMQ PUB endpoint (default {contracts.DEFAULT_ENDPOINT})")
    g.add_argument("--camera-name", default=S,
                   help="frame id and namespace suffix of an unnamed --source (default front)")
    g.add_argument("--namespace", default=S,
                   help="topic prefix (default perception/<camera name>); with several cameras the prefix "
                        "of each camera's <namespace>/<camera> (default perception)")
    g.add_argument("--mask-size", default=S, help="model (default: the model's scale, letterbox padding cut off) or source: masks at the camera frame size")
    g.add_argument("--encoding", action="append", default=S, metavar="TOPIC=ENC",
                   help="payload encoding of one mask topic, e.g. drivable=bitpack (mono8 default, bitpack, rle, png); repeatable")
    g.add_argument("--task", action="append", default=S, metavar="TASK=CLASS[,CLASS]",
                   help="override a task's classes, e.g. lane=lane_marking or obstacle=car,pedestrian")
    g.add_argument("--no-obstacles", dest="obstacles", action="store_false", default=S,
                   help="do not publish obstacle blobs on the obstacles topic")
    g.add_argument("--per-class-obstacles", action="store_true", default=S,
                   help="also publish <namespace>/obstacle/<class>, a binary mask per obstacle class")
    g.add_argument("--unknown-threshold", type=float, default=S, metavar="P",
                   help="class map id 255 (unknown, in no task mask) where the model's confidence is below P "
                        "(0..1; default: the threshold in the model's metadata; 0: off); needs a model "
                        "exported with --confidence")
    g.add_argument("--stats-interval", dest="stats_interval_s", type=float, default=S,
                   help="seconds between stats documents (default 1)")
    g.add_argument("--sndhwm", type=int, default=S,
                   help="ZeroMQ messages (not frames) queued per subscriber (default 16, about 2.5 frames)")
    g.add_argument("--atomic-frames", action="store_true", default=S,
                   help="send all masks of a frame in one multipart message on <namespace>/frame (all or none)")
    g.add_argument("--wait-subscribers", type=int, default=S, metavar="N",
                   help="hold the first frame until N subscribers have subscribed, e.g. a recorder of a "
                        "lossless file run (default 0: start at once)")
    g.add_argument("--wait-timeout", dest="wait_timeout_s", type=float, default=S, metavar="S",
                   help="seconds --wait-subscribers waits before the node fails (default 10)")
    g.add_argument("--curve-secret-key", default=S, help="server .key_secret file: encrypt with CURVE")
    g.add_argument("--curve-allow", default=S, help="folder of allowed client .key files")


def _pairs(items: list[str], flag: str, *, listed: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            example = "obstacle=car,pedestrian" if listed else "drivable=bitpack"
            raise ConfigError(f"{flag} {item!r}: expected NAME=VALUE, e.g. {flag} {example}")
        out[key.strip()] = [v.strip() for v in value.split(",") if v.strip()] if listed else value.strip()
    return out


def load_run_config(args: argparse.Namespace) -> RunConfig:
    """The RunConfig from ``--config`` (if given) overridden by the flags given on the command line.

    Raises ConfigError naming the file or flag."""
    flags = {k: v for k, v in vars(args).items() if k in RunConfig.__dataclass_fields__}
    if isinstance(flags.get("source"), list) and len(flags["source"]) == 1:
        flags["source"] = flags["source"][0]  # the single-source form, exactly as before
    if "encoding" in flags:
        flags["encoding"] = _pairs(flags["encoding"], "--encoding", listed=False)
    if "task" in flags:
        flags["task"] = _pairs(flags["task"], "--task", listed=True)
    config_file = getattr(args, "config", None)
    data: dict[str, Any] = read_yaml(config_file) if config_file else {}
    for key in ("encoding", "task"):
        if key in flags and isinstance(data.get(key), dict):
            flags[key] = {**data[key], **flags[key]}
    data.update(flags)
    source = f"{config_file} + command line" if config_file else "command line"
    return load_config(RunConfig, data, source=source)


class StartupSignals:
    """SIGINT/SIGTERM handling from the first instruction of ``perception run`` to its last.

    Installed before anything heavy is imported (``perception.cli`` calls ``install()`` first).
    Until the pipeline runs, a signal is only recorded and start-up stops at the next step
    (``reached``), so the node still exits 0 with a final stats document that says how far start-up
    got; once the pipeline exists, a signal stops it like any other end.
    """

    def __init__(self) -> None:
        self.signal: str | None = None
        self.step = "starting"
        self.pipeline: Any = None
        self._handlers = SignalHandlers(self._on_signal)

    @property
    def installed(self) -> bool:
        return self._handlers.installed

    def install(self) -> None:
        """Catch the signals from now on, with a fresh state."""
        self.signal, self.step, self.pipeline = None, "starting", None
        self._handlers.install()

    def uninstall(self) -> None:
        """Give the signals back to the handlers found at ``install``."""
        self._handlers.restore()

    def _on_signal(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        self.signal = self.signal or name
        if self.pipeline is not None:
            self.pipeline.stop(f"signal {name}")

    def reached(self, step: str) -> None:
        """Start-up is at ``step``; raises _StartupInterrupted when a signal came before."""
        if self.signal is not None:
            raise _StartupInterrupted
        self.step = step


class _StartupInterrupted(Exception):
    """A signal arrived during start-up (before the pipeline ran)."""


_SIGNALS = StartupSignals()


def install_startup_signals() -> None:
    """Catch SIGINT/SIGTERM from now on (``perception.cli`` calls this first for ``run``)."""
    _SIGNALS.install()


def startup_stats(step: str, reason: str) -> dict[str, Any]:
    """The final stats document of a run stopped during start-up (``contracts.STARTUP_STATS``):
    nothing read, all balanced."""
    from perception.stats_schema import startup_document

    return startup_document(step, reason)


def open_camera_sources(cameras: list[RunConfig]) -> list[Any]:
    """Open each camera's source (``RunConfig.camera_config``); a failure closes the ones already
    open and names the camera when there are several.

    Raises:
        SourceError (or ConfigError): the source cannot be opened; the message names the fix.
    """
    from perception.errors import PerceptionError
    from perception.sources import open_source

    sources: list[Any] = []
    try:
        for camera in cameras:
            spec = camera.cameras[0].source
            try:
                sources.append(open_source(spec, **camera.source_options()))
            except PerceptionError as exc:
                if len(cameras) == 1:
                    raise
                raise type(exc)(f"camera {camera.camera_name!r} (--source {camera.camera_name}={spec}): {exc}") from None
    except BaseException:
        for source in sources:
            source.close()
        raise
    return sources


def main(args: argparse.Namespace) -> int:
    signals = _SIGNALS
    if not signals.installed:  # a caller that skipped perception.cli
        signals.install()
    try:
        return _run(args, signals)
    finally:
        signals.uninstall()


def _run(args: argparse.Namespace, signals: StartupSignals) -> int:
    t_start = time.monotonic()
    publisher = source = pipeline = engine = final = None
    try:
        signals.reached("loading the configuration")
        from perception.engines import EngineOptions, load_engine
        from perception.pipeline import Pipeline
        from perception.publish import MaskPublisher

        config = load_run_config(args)
        if config.compile != "none" and config.engine != "torch":
            raise ConfigError(f"--compile {config.compile} applies to --engine torch (a .pt checkpoint), not --engine {config.engine}")
        if config.model is None and not DEFAULT_MODEL.is_file():
            raise ModelError(
                f"no --model given and the shipped default model {DEFAULT_MODEL} is missing; "
                "pass --model model.onnx or run 'make default-model'"
            )
        signals.reached("loading the engine")
        engine = load_engine(
            config.engine, config.model_path,
            EngineOptions(provider=config.provider, threads=config.threads, fp16=config.fp16, compile=config.compile,
                          precision=config.precision),
        )
        cameras = [config.camera_config(i) for i in range(len(config.cameras))]
        signals.reached("opening the publisher")
        publisher = MaskPublisher(
            endpoint=config.endpoint,
            namespace=cameras[0].resolved_namespace,
            encodings=config.encoding,
            curve_secret_key_file=config.curve_secret_key,
            curve_allow_dir=config.curve_allow,
            sndhwm=config.sndhwm,
            atomic_frames=config.atomic_frames,
        )
        publishers = [publisher] + [publisher.add_namespace(c.resolved_namespace) for c in cameras[1:]]
        signals.reached("opening the source")
        sources = open_camera_sources(cameras)
        source = sources[0] if len(sources) == 1 else sources
        signals.reached("starting the pipeline")
        if len(cameras) == 1:
            pipeline = Pipeline(cameras[0], source=sources[0], engine=engine, publisher=publisher)
        else:
            from perception.cameras import MultiCameraNode

            pipeline = MultiCameraNode(config, sources=sources, engine=engine, publishers=publishers)
        signals.pipeline = pipeline
        if signals.signal is not None:  # arrived between the check above and the line before
            pipeline.stop(f"signal {signals.signal}")
        try:
            final = pipeline.run()
        except BaseException:
            if pipeline.final_stats is not None:  # a stage failed: its stats still go out
                print(json.dumps(pipeline.final_stats), file=sys.stdout, flush=True)
            raise
        if pipeline.first_publish_mono_ns is not None:
            final["startup_to_first_mask_ms"] = round((pipeline.first_publish_mono_ns / 1e9 - t_start) * 1e3, 1)
    except _StartupInterrupted:
        final = startup_stats(signals.step, f"signal {signals.signal}")
        if publisher is not None:
            publisher.publish_json(contracts.STATS_TOPIC, final)
    finally:
        signals.pipeline = None
        if source is not None and pipeline is None:
            for each in source if isinstance(source, list) else [source]:
                each.close()  # once the pipeline exists, its capture thread owns the source
        if publisher is not None:
            stopped_by_signal = signals.signal is not None
            ended = final is not None
            publisher.close(flush_s=FLUSH_S if ended and not stopped_by_signal else 0.0)
        if engine is not None:
            engine.close()
    if "source_corrupt" in final:
        log.info(
            "stopped (%s): %d frames in, %d published, %d dropped, %d corrupt, %d in flight, %d reconnects, "
            "%.1f fps out",
            final["end_reason"], final["frames_in"], final["published"], final["dropped"], final["corrupt"],
            final["in_flight_discarded"], final["reconnects"], final["output_fps"],
        )
    else:
        log.info("stopped (%s) during start-up while %s", final["end_reason"], final["startup"])
    print(json.dumps(final), file=sys.stdout, flush=True)
    return 0
