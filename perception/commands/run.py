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
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from perception import contracts
from perception.console import emit
from perception.errors import (
    ConfigError,
    ModelError,
    PerceptionError,
    SourceError,
    hide_credentials,
    start_thread,
)
from perception.flags import add_flags, config_from_flags
from perception.run_config import DEFAULT_MODEL, RunConfig
from perception.signals import STARTUP_SIGNALS as _SIGNALS
from perception.signals import StartupInterrupted as _StartupInterrupted
from perception.signals import StartupSignals, command_done
from perception.threadname import set_os_thread_name

log = logging.getLogger(__name__)

#: After a finite input ends, how long the last queued messages (and the final stats) may take to
#: go out before the publisher closes anyway. On a signal the node closes at once instead.
FLUSH_S = 1.0

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="YAML file with RunConfig keys; flags override it")
    add_flags(p, RunConfig)  # every other flag: generated from RunConfig's declarations


def load_run_config(args: argparse.Namespace) -> RunConfig:
    """The RunConfig from ``--config`` (if given) overridden by the flags given on the command line.

    Raises ConfigError naming the file or flag."""
    return config_from_flags(RunConfig, args, source="command line", config_file=getattr(args, "config", None),
                             command="run")




def check_source_settings(config: RunConfig, args: argparse.Namespace | None = None, *, as_keys: bool = False) -> None:
    """``sources.check_source_options`` for a node's cameras: a source setting none of them uses is a
    ConfigError naming it as it was given (``--width``, the key of ``--config``'s file, or with
    ``as_keys`` the key of a launch file's parameters)."""
    from perception.sources import check_source_options

    check_source_options(config.source_options, [camera.source for camera in config.cameras], args, as_keys=as_keys,
                         names=[camera.name for camera in config.cameras])


#: Start-up steps in which a mistake is found before anything starts (a flag, a config file, a file
#: that is not there): its one error line comes alone, with no stats document.
_BEFORE_STARTUP = ("starting", "loading the configuration")


def _startup_failed(step: str, exc: PerceptionError, publisher) -> None:
    """A failure once the start-up is under way (a model that does not load, a camera or stream
    that is not there): the final stats document with zero counters, ``end_reason`` ``start-up
    failed`` and ``error``, published (when the publisher is open) and printed, as every other end
    prints one, so a supervisor that reads the last stdout line always finds one."""
    from perception.stats_schema import STARTUP_FAILED

    final = startup_stats(step, STARTUP_FAILED, hide_credentials(str(exc)))
    if publisher is not None:
        publisher.publish_json(contracts.STATS_TOPIC, final)
    emit(json.dumps(final))


def _pipeline_step(pipeline: Any, fallback: str) -> str:
    """The start-up step a pipeline (or every camera's, of a ``MultiCameraNode``) was in when its
    start failed: ``warming up the engine``, ``waiting for subscribers``; ``fallback`` when none
    had begun its own."""
    steps = [each.startup for each in getattr(pipeline, "pipelines", [pipeline])]
    return next((step for step in steps if step not in ("created", "complete")), fallback)


def startup_stats(step: str, reason: str, error: str | None = None) -> dict[str, Any]:
    """The final stats document of a run stopped, or failed (``error``), during start-up
    (``contracts.STARTUP_STATS``): nothing read, all balanced."""
    from perception.stats_schema import startup_document

    return startup_document(step, reason, error)


#: Engines whose loading runs mostly outside the GIL (OpenVINO's import and its compiled-model
#: cache), so it overlaps with the rest of start-up. ONNX Runtime's session creation from its
#: optimised-model cache takes 20-40 ms and holds the GIL enough that a thread made it slower
#: (measured on the 2-core Xeon), so it loads in line, also when it is ``--engine auto``'s cached
#: verdict: in a thread, its imports took turns with the node's own and its warm-up started last.
_LOAD_BESIDE = ("auto", "openvino")
#: Engines whose warm-up runs in a thread (the loading one, or one of its own after an in-line
#: load) while the node imports the pipeline and opens the publisher and the sources: the warm-up
#: is native code outside the GIL, and the first frame waited for it. On the 2-core EPYC (MP4
#: source, 5 alternating `bench pipeline` launches each) the node's start -> first publish went
#: 519 -> 460 ms median with --engine ort and 556 -> 489 ms with --engine auto (ORT verdict).
#: TensorRT and torch (GPU, development) warm up in the pipeline, as before.
_WARM_BESIDE = ("auto", "openvino", "ort")


class EngineLoader:
    """Loads the run's engine, in a thread for ``_LOAD_BESIDE`` engines while the caller imports
    the pipeline and opens the publisher and the sources (``result`` joins it). With ``warmup``
    (one camera) a ``_WARM_BESIDE`` engine running one frame at a time also has its warm-up runs
    in that thread (after an in-line load, in a thread of their own); ``warmup_ms`` then says how
    long they took, and is None when the pipeline is to warm the engine up itself.

    Errors are kept and raised by ``result`` (or ``settle``) in the caller's thread, so they read
    as they did when the engine loaded first: a bad model is reported before a bad source.
    """

    def __init__(self, config: RunConfig, *, warmup: bool = False) -> None:
        self._config = config
        # also with --warmup 0: its one run is the model's check (engines.base.warmup_runs)
        self._warmup = warmup and config.engine in _WARM_BESIDE
        self._engine: Any = None
        self._error: BaseException | None = None
        self._thread = None
        self._loaded = threading.Event()
        self.warmup_ms: float | None = None
        self._cached = None  # --engine auto: the probe's cached verdict
        beside = config.engine in _LOAD_BESIDE
        if config.engine == "auto":
            from perception.engines.auto import cached_selection

            self._cached = cached_selection(Path(config.model_path), config.engine_options)
            beside = self._cached is None or self._cached.engine != "ort"
        if beside:
            self._start(self._load_and_warm)
        else:
            self._load()
            if self._error is not None:
                raise self._error
            if self._warmup:
                self._start(self._warm)

    def _start(self, target) -> None:
        def named() -> None:
            # Threads an engine starts while it loads here (OpenVINO's streams; ONNX Runtime's pool
            # when auto loads it here) take this thread's OS name: "engine" in top -H and bench
            # pipeline's per-thread CPU. An engine loaded on the main thread takes its name.
            set_os_thread_name("engine")
            target()

        self._thread = threading.Thread(target=named, name="perception-engine-load", daemon=True)
        start_thread(self._thread, "the thread that loads the engine")  # a process limit: one line, exit 1

    def _load_and_warm(self) -> None:
        self._load()
        if self._error is None and self._warmup:
            self._warm()

    def wait_for_load(self) -> bool:
        """Wait until the engine has loaded (or failed to); True when its warm-up runs (or ran)
        beside, which ``result`` then also waits for."""
        self._loaded.wait()
        return self._warmup and self._error is None and self._engine.streams == 1

    def _load(self) -> None:
        config = self._config
        try:
            if config.engine == "auto":  # the node starts at once, the probe (if any) runs beside it
                from perception.engines.auto import load_auto

                flat_out = config.engine_options.streams == "auto" and config.reads_flat_out
                self._engine = load_auto(Path(config.model_path), config.engine_options, background=True,
                                         cached=self._cached, flat_out=flat_out)
            else:
                from perception.engines import load_engine

                self._engine = load_engine(config.engine, config.model_path, config.engine_options)
        except BaseException as exc:  # raised in the caller's thread
            self._error = exc
        finally:
            self._loaded.set()

    def _warm(self) -> None:
        # One frame in flight runs on the engine itself, so its warm-up is the pipeline's; several
        # in flight warm their workers in the pipeline (at once). A signal skips it: the node stops.
        if self._engine.streams != 1 or _SIGNALS.signal is not None:
            return
        try:
            t0 = time.perf_counter()
            self._engine.warmup(self._config.warmup)
            self.warmup_ms = (time.perf_counter() - t0) * 1e3
        except BaseException as exc:  # raised in the caller's thread
            self._error = exc

    def result(self) -> Any:
        """The loaded engine; raises the loading error."""
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._engine

    def settle(self, *, quiet: bool = False) -> Any:
        """After another step failed: wait for the load; raise its error (unless ``quiet``), else
        return the engine so that the caller closes it."""
        if self._thread is not None:
            self._thread.join()
        if self._error is not None and not quiet:
            raise self._error from None
        return self._engine


def check_before_loading(config: RunConfig) -> None:
    """The checks that take microseconds, before the model loads (seconds) and the port is bound:
    the endpoint's syntax, that the model file and each video file named as a source are there.
    When one fails, the model is read first (only then, and only its header): a bad model is still
    named before a bad source, as when the engine loaded first (see EngineLoader).

    Raises:
        PublishError: a malformed endpoint. SourceError: a video file that is not there.
        ModelError: the model, when it is bad too.
    """
    from perception.endpoints import check_endpoint
    from perception.errors import PerceptionError, why_not_a_file

    if config.model is not None:
        from perception.modelfile import check_model_path

        check_model_path(config.model_path)  # not there, or a folder: a mistake, before start-up
    try:
        check_endpoint(config.publish_options.endpoint)
        cameras = config.cameras
        for camera in cameras:
            try:
                if camera.source.partition("://")[0].lower() in ("rtsp", "rtsps", "http", "https", "rtmp", "rtmps"):
                    from perception.sources.stream import refuse_malformed_url

                    refuse_malformed_url(camera.source)  # no host, a bad port: a mistake, not a stream down
                path = _video_file(camera.source)
                why = why_not_a_file(path) if path is not None else "is a file"
                if why != "is a file":
                    from perception.sources.base import shown, video_spec_word

                    # The words of VideoFileSource (and open_camera_sources), which would say the same
                    # once the model had loaded.
                    fix = "" if why.startswith("cannot be read:") else "; check the path"
                    raise SourceError(f"{video_spec_word(path)} {shown(camera.source)} {why}{fix}")
            except SourceError as exc:
                problem = str(exc)
                if len(cameras) > 1:
                    problem = f"camera {camera.name!r} (--source {camera.name}={camera.source}): {problem}"
                raise SourceError(hide_credentials(problem)) from None
    except PerceptionError:
        if config.engine in ("ort", "openvino", "auto"):  # each reads the model with this first
            from perception.modelfile import read_model_metadata

            read_model_metadata(config.model_path)  # raises the model's own error
        raise


class _Said(Exception):
    """An error of ``open_camera_sources`` that names its cameras already (raised as it is)."""

    def __init__(self, error: PerceptionError) -> None:
        super().__init__(str(error))
        self.error = error


def _video_file(spec: str) -> Path | None:
    """The path of a source that is a video file not there (``clip.mp4``, ``file:///data/clip.mp4``),
    else None; SourceError for images that are not there (``nope.jpg``, ``frames/``, ``'frames/*.png'``)
    and for a file or folder this user may not read. The usual sources (a file or camera that is
    there, synthetic, a URL) are told apart without importing the sources (OpenCV): that import
    would delay a model loading beside it."""
    spec = spec.strip()
    lowered = spec.lower()
    if (spec == "synthetic" or spec.isdigit() or spec.startswith("/dev/")
            or ("://" in spec and not lowered.startswith("file://"))):
        return None
    from perception.errors import unreadable

    path = spec
    if lowered.startswith("file://"):  # read as its path, as the source reads it
        from perception.sources.base import local_path

        try:
            path = local_path(spec)
        except SourceError:  # a file:// URL of another machine: open_source says why
            return None
    try:
        there = Path(path).exists()
    except PermissionError:  # a folder on the way that may not be entered: said below, in the kind's words
        there = False
    why = unreadable(path) if there else None
    if there and why is None:
        return None
    from perception.sources import source_kind

    kind = source_kind(path)
    if kind == "images":
        from perception.sources.images import list_images

        list_images(path)  # an image, folder or pattern that names no image, or may not be read: its own SourceError
    if why is not None:
        from perception.sources.base import shown

        raise SourceError(f"{'video file' if kind == 'video' else 'source'} {shown(spec)} {why}")
    return Path(path) if kind == "video" else None


#: How often the sources' openings (each in its own thread) are looked in on for a stop request.
OPEN_POLL_S = 0.05


def open_camera_sources(cameras: list[RunConfig], stop_requested: Callable[[], bool] | None = None) -> list[Any]:
    """Open each camera's source (``RunConfig.camera_config``); a failure closes the ones already
    open and names the camera when there are several.

    With ``stop_requested``, the sources open at once, each in a thread of its own
    (``sources.pending.Opening``: N streams that do not answer cost one ``--read-timeout``, not N),
    and this thread waits on them in ``OPEN_POLL_S`` slices: once ``stop_requested()`` is true, the
    openings still under way are abandoned, the sources already open are closed, and
    ``StartupInterrupted`` is raised (a stop, not a failure: also when an opening failed after the
    stop was asked for). In a node of several cameras, a camera that is not there
    (``SourceUnavailableError``: unplugged, its server down) does not stop the others: a
    ``PendingSource`` stands in for it and keeps opening it, unless no camera is there at all.

    Raises:
        SourceError (or ConfigError): a source cannot be opened; the message names the fix.
        StartupInterrupted: ``stop_requested()`` became true.
    """
    from perception.errors import PerceptionError, SourceUnavailableError
    from perception.sources import open_source
    from perception.sources.pending import Opening, PendingSource

    several = len(cameras) > 1
    specs = [camera.cameras[0].source for camera in cameras]
    names = [camera.publish_options.camera_name for camera in cameras]
    sources: list[Any] = []
    openings: list[Opening] = []
    try:
        if stop_requested is None:
            for spec, camera in zip(specs, cameras, strict=True):
                sources.append(open_source(spec, camera.source_options))
        else:
            openings = [Opening(spec, camera.source_options) for spec, camera in zip(specs, cameras, strict=True)]
            while not all(o.done.wait(OPEN_POLL_S / len(openings)) for o in openings):
                if stop_requested():
                    break
            if stop_requested():
                sources.extend(source for o in openings if (source := o.abandon()) is not None)
                raise _StartupInterrupted
            errors = [o.error for o in openings]
            missing = [isinstance(e, SourceUnavailableError) for e in errors]
            # A camera not there starts pending in a node of several, unless none is there at all.
            pending = several and not all(missing)
            if several and all(missing):  # each named: fixing the first would only show the next
                said = "; ".join(f"camera {name!r} (--source {name}={spec}): {error}"
                                 for name, spec, error in zip(names, specs, errors, strict=True))
                raise _Said(SourceUnavailableError(hide_credentials(f"no camera is there: {said}")))
            for index, (opening, error) in enumerate(zip(openings, errors, strict=True)):
                if error is None:
                    sources.append(opening.source)
                elif not (pending and missing[index]):
                    raise error
            if pending:
                opened = iter(sources)
                sources = [PendingSource(spec, camera.source_options, error, name) if gone else next(opened)
                           for spec, camera, error, name, gone in zip(specs, cameras, errors, names, missing,
                                                                      strict=True)]
    except _Said as said:
        _close_all(sources, openings)
        raise said.error from None
    except PerceptionError as exc:
        _close_all(sources, openings)
        if not several:
            raise
        index = next((i for i, o in enumerate(openings) if o.error is exc), len(sources))
        spec, name = specs[index], names[index]
        raise type(exc)(hide_credentials(f"camera {name!r} (--source {name}={spec}): {exc}")) from None
    except BaseException:
        _close_all(sources, openings)
        raise
    if several:  # their warnings and errors from now on say which camera
        for source, name in zip(sources, names, strict=True):
            source.name_camera(name)
    return sources


def _close_all(sources: list[Any], openings: list[Any]) -> None:
    """Close the sources opened, and those of openings that ended since (the others were abandoned)."""
    for source in {id(s): s for s in [*sources, *(o.abandon() for o in openings)] if s is not None}.values():
        source.close()


def _say_cgroup_limits(model: Path) -> None:
    """The CPU quota and the memory limit of this process's cgroup, once at start when one is set;
    a warning when the memory left looks too small for the node (perception/cgroups.py)."""
    from perception.cgroups import memory_line, quota_line

    if (quota := quota_line()) is not None:
        log.info("%s", quota)
    if (memory := memory_line(model)) is not None:
        warn, line = memory
        log.log(logging.WARNING if warn else logging.INFO, "%s", line)


def main(args: argparse.Namespace) -> int:
    signals = _SIGNALS
    if not signals.installed:  # a caller that skipped perception.cli
        signals.install()
    try:
        code = _run(args, signals)
        command_done(code)  # the final stats are out: a signal from now on changes nothing (the program)
        return code
    finally:
        signals.uninstall()


def _run(args: argparse.Namespace, signals: StartupSignals) -> int:
    t_start = time.monotonic()
    publisher = source = pipeline = engine = final = loader = None
    failed_at_startup = False
    try:
        signals.reached("loading the configuration")
        config = load_run_config(args)
        compile_with = config.engine_options.compile
        if compile_with != "none" and config.engine != "torch":
            raise ConfigError(f"--compile {compile_with} applies to --engine torch (a .pt checkpoint), not --engine {config.engine}")
        if config.engine_options.fp16 and config.engine not in ("torch", "tensorrt"):
            raise ConfigError(f"--fp16 applies to --engine torch and tensorrt (CUDA), not --engine {config.engine}; "
                              "on a CPU, --precision bf16 (OpenVINO) or int8 is the faster arithmetic")
        check_source_settings(config, args)
        if config.model is None and not DEFAULT_MODEL.is_file():
            raise ModelError(
                f"no --model given and the shipped default model {DEFAULT_MODEL} is missing; "
                "pass --model model.onnx or run 'make default-model'"
            )
        check_before_loading(config)
        from perception.engines.base import warn_threads_over_cores

        _say_cgroup_limits(Path(config.model) if config.model else DEFAULT_MODEL)
        warn_threads_over_cores(log, [config.engine_options.threads], "the inference threads take turns on the cores, "
                                "slower than --threads %d")
        signals.reached("loading the engine")
        loader = EngineLoader(config, warmup=len(config.cameras) == 1)
        from perception.pipeline import Pipeline
        from perception.publish import MaskPublisher

        cameras = [config.camera_config(i) for i in range(len(config.cameras))]
        signals.reached("opening the publisher")
        publish = config.publish_options
        publisher = MaskPublisher(
            endpoint=publish.endpoint,
            namespace=cameras[0].publish_options.resolved_namespace,
            encodings=publish.encoding,
            curve_secret_key_file=publish.curve_secret_key,
            curve_allow_dir=publish.curve_allow,
            sndhwm=publish.sndhwm,
            atomic_frames=publish.atomic_frames,
            namespaces=len(cameras),  # the default send limit holds bursts of every camera's frame
        )
        publishers = [publisher] + [publisher.add_namespace(c.publish_options.resolved_namespace) for c in cameras[1:]]
        signals.reached("opening the source")
        sources = open_camera_sources(cameras, stop_requested=lambda: signals.signal is not None)
        source = sources[0] if len(sources) == 1 else sources
        signals.reached("loading the engine")
        if loader.wait_for_load():
            signals.reached("warming up the engine")
        engine = loader.result()
        signals.reached("starting the pipeline")
        if len(cameras) == 1:
            pipeline = Pipeline(cameras[0], source=sources[0], engine=engine, publisher=publisher,
                                warmed_ms=loader.warmup_ms)
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
                emit(json.dumps(pipeline.final_stats))
            raise
        if pipeline.first_publish_mono_ns is not None:
            final["startup_to_first_mask_ms"] = round((pipeline.first_publish_mono_ns / 1e9 - t_start) * 1e3, 1)
    except _StartupInterrupted:
        final = startup_stats(signals.step, f"signal {signals.signal}")
        if publisher is not None:
            publisher.publish_json(contracts.STATS_TOPIC, final)
    except BaseException as exc:
        error = exc
        if loader is not None and engine is None:
            try:
                engine = loader.settle()  # the engine's own error first, as when it loaded alone
            except PerceptionError as engine_exc:
                error = engine_exc
        # A failure in start-up: before the pipeline ran, or in its own start (warming the engine
        # up, waiting for subscribers), which ends before its threads start and so with no stats.
        step = signals.step if pipeline is None else _pipeline_step(pipeline, signals.step)
        in_startup = (isinstance(error, PerceptionError) and signals.step not in _BEFORE_STARTUP
                      and (pipeline is None or pipeline.final_stats is None))
        if not (in_startup and signals.signal is not None):
            if in_startup:
                _startup_failed(step, error, publisher)
                failed_at_startup = True
            if error is exc:
                raise
            raise error from None  # the engine's own error, as when it loaded alone
        # A stop was asked for while the step failed (a stream that would not open, a port in
        # use): the run ends as stopped, as the README promises for a signal during start-up; the
        # failure is still said, on stderr.
        log.warning("%s (during start-up, stopping on %s)", hide_credentials(str(error)), signals.signal)
        final = startup_stats(step, f"signal {signals.signal}")
        if publisher is not None:
            publisher.publish_json(contracts.STATS_TOPIC, final)
    finally:
        if loader is not None and engine is None:
            engine = loader.settle(quiet=True)
        signals.pipeline = None
        if source is not None and pipeline is None:
            for each in source if isinstance(source, list) else [source]:
                each.close()  # once the pipeline exists, its capture thread owns the source
        if publisher is not None:
            stopped_by_signal = signals.signal is not None
            ended = final is not None or failed_at_startup  # a final document went out: let it leave
            publisher.close(flush_s=FLUSH_S if ended and not stopped_by_signal else 0.0)
        if engine is not None:
            engine.close()
    if "source_corrupt" in final:
        throttled = final.get("cpu_throttled_s")
        log.info(
            "stopped (%s): %d frames in, %d published, %d dropped, %d corrupt, %d in flight, %d reconnects, "
            "%.1f fps out%s",
            final["end_reason"], final["frames_in"], final["published"], final["dropped"], final["corrupt"],
            final["in_flight_discarded"], final["reconnects"], final["output_fps"],
            f"; the CPU quota throttled it {throttled:.1f} s" if throttled else "",
        )
    else:
        log.info("stopped (%s) during start-up while %s", final["end_reason"], final["startup"])
    emit(json.dumps(final))
    never_came = getattr(pipeline, "never_came", None)
    if never_came:  # the other cameras' input ended: exit 4, as for a camera not there at all
        from perception.errors import SourceUnavailableError

        specs = {c.publish_options.camera_name: c.cameras[0].source for c in cameras}
        raise SourceUnavailableError(hide_credentials("; ".join(
            f"camera {name!r} (--source {name}={specs.get(name, '?')}) never came while the other cameras ran"
            for name in never_came)) + "; check that it is plugged in, or give the right --source")
    for camera, doc in (final.get("cameras") or {"": final}).items():
        if doc.get("end_reason") == "end of input" and doc.get("published") == 0 and doc.get("frames_in") == doc.get("corrupt"):
            # A file, folder or clip that ended without one readable frame: a user mistake, not a
            # run (with several cameras it stopped the others: see MultiCameraNode.run).
            raise SourceError(f"{f'camera {camera!r}: ' if camera else ''}{doc.get('source', 'the source')} ended "
                              f"without one readable frame ({doc.get('corrupt', 0)} unreadable); check --source")
    return 0
