"""``--engine auto``: run the fastest engine and precision on this machine whose answers agree with FP32.

At the first start of a model on a machine a short probe loads each candidate (ONNX Runtime FP32,
OpenVINO FP32 / bf16 where the CPU has it, and ONNX Runtime / OpenVINO INT8 when the model has an
INT8 sibling), runs it on ``PROBE_FRAMES`` frames, and keeps only candidates whose
class ids equal the FP32 reference on at least ``MIN_AGREEMENT`` of the pixels. The fastest of those
(median latency, candidates timed in turn so that a busy machine slows them alike) runs the node.
That measurement lives in ``perception.engines.probe``, the verdict's types and words in
``perception.engines.probe_verdict`` and its cache in ``perception.engines.probe_cache``; this module
chooses the candidates, runs the probe in a child process and loads the winner.
The frames are the node's own first inputs when the node probes (``SwitchingEngine``), the
user's with ``python -m perception.engines.auto MODEL --frames SPEC``, else rendered road scenes:
a model trained on real roads is unsure on rendered ones, where its INT8 and bf16 answers flip
more, so agreement there would reject candidates that are right on the road the node sees.

The verdict is cached (``perception.engines.probe_cache``) under a key of the model, the machine
and the libraries: a changed model, library or machine probes again. The choice and its reason are
logged once and published in the stats document (``engine_selection``). ``--engine``,
``--precision`` and ``--provider`` force a choice: ``--precision`` limits the candidates, a GPU
``--provider`` skips the CPU probe.

The node probes in a child process (``python -m perception.engines.auto MODEL``, which writes the
cache): the candidates' libraries, sessions and compiled models stay out of the node, whose memory
after a first start is then what it is after any later one (the default model on the 2-core Xeon,
OpenVINO bf16 chosen: 245 MB resident after an in-process probe, 151 MB with the verdict cached).
At a first start the node does not wait for the child (``load_auto(..., background=True)``,
``SwitchingEngine``): it runs ONNX Runtime FP32 from the first frame and switches to the verified
winner between two frames when the verdict arrives (first mask 0.65 s instead of 3.61 s there).
An INT8 candidate whose file records a passed mIoU gate is held to the class-id agreement that gate
measured (``INT8_AGREEMENT_MARGIN``), the issue's "or the model's stored gate". The probe times
candidates one frame at a time; the winner is loaded with the node's ``--streams``.
A verdict whose winner fails to load here, or loads and fails its first inference (run in
``load_auto``, before the node's warm-up), is forgotten and ONNX Runtime FP32 runs (``_fall_back``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from perception.engines import cache as engine_cache
from perception.engines import probe_cache
from perception.engines.base import INT8_SUFFIX, Engine, EngineOptions, check_int8_sibling
from perception.engines.cpu import cpu_isa
from perception.engines.probe import frames_from, int8_sibling, load_candidate, probe_frames, run_probe
from perception.engines.probe_cache import (
    cache_path,
    forget_cached,
    node_cache_dir,
    probe_key,
    read_cached,
    write_cached,
)
from perception.engines.probe_verdict import (
    REFERENCE,
    Candidate,
    Selection,
    VerdictError,
    file_precision,
    streams_for_node,
)
from perception.errors import ConfigError, DependencyError, ModelError, PerceptionError, ResourceError
from perception.modelfile import read_model_metadata
from perception.signals import die_with_parent
from perception.spawn import module_command

log = logging.getLogger(__name__)

#: The probe child's lines on stderr that carry a cache warning to the node (``child_verdict``).
CACHE_WARNING_PREFIX = "perception-cache-warning: "


def openvino_offers() -> tuple[bool, bool]:
    """(OpenVINO is installed, it can run bf16 here), read without importing it where the CPU's
    flags tell: ``import openvino`` and its ``Core`` cost about 0.3 s of a node start that may run
    ONNX Runtime only. Its CPU plugin offers BF16 on AVX-512 BF16 or AMX-BF16; where /proc/cpuinfo
    is not available, OpenVINO is asked."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return False, False
    isa = cpu_isa()
    if isa:
        return True, bool({"AVX-512 BF16", "AMX-BF16"} & set(isa))
    try:
        from perception.engines.openvino import cpu_capabilities

        capabilities = cpu_capabilities()
    except ImportError:
        return False, False
    return bool(capabilities), "BF16" in capabilities


def cpu_candidates(model_path: Path, options: EngineOptions) -> list[Candidate]:
    """The candidates worth probing here, limited to ``options.precision`` unless ``auto``."""
    found = [Candidate("ort", "fp32")]  # the reference: the file as it is (probe.load_candidate)
    openvino, bf16 = openvino_offers()
    if options.precision in ("auto", "int8") and _file_is_int8(model_path):
        # An INT8 file runs INT8 on every engine whatever precision is asked: its float candidates
        # would time the INT8 graph under a float label (and warn about a --precision not given).
        if options.precision == "int8":
            found = [Candidate("ort", "int8")]
        return found + ([Candidate("openvino", "int8")] if openvino else [])
    if openvino:
        found.append(Candidate("openvino", "fp32"))
        if bf16:
            found.append(Candidate("openvino", "bf16"))
    if _paired_int8_sibling(model_path, forced=options.precision == "int8") is not None:
        found.append(Candidate("ort", "int8"))
        if openvino:
            found.append(Candidate("openvino", "int8"))
    if options.precision != "auto":
        found = [c for c in found if c.precision == options.precision]
    return found


def _file_is_int8(model_path: Path) -> bool:
    """True when ``model_path`` is an INT8 file (False when it cannot be read: its load says why)."""
    try:
        return read_model_metadata(model_path).precision == "int8"
    except PerceptionError:
        return False


#: INT8 siblings already said to belong to another model (a warning once per file and process).
_STALE_WARNED: set[Path] = set()


def _paired_int8_sibling(model_path: Path, *, forced: bool) -> Path | None:
    """The INT8 sibling, when it was quantised from ``model_path`` (``check_int8_sibling``). One left
    from another model is no candidate: one warning naming both files, or, with a forced
    ``--precision int8``, the one-line error (there is nothing else to run)."""
    sibling = int8_sibling(model_path)
    if sibling is None:
        return None
    try:
        check_int8_sibling(model_path, sibling)
    except ModelError as exc:
        if forced:
            raise
        if sibling not in _STALE_WARNED:
            _STALE_WARNED.add(sibling)
            log.warning("--engine auto leaves out INT8: %s", str(exc).removeprefix("--precision int8: "))
        return None
    return sibling


def _no_candidate(model_path: Path, precision: str) -> PerceptionError:
    """Why no CPU engine runs ``precision`` for this model, and the fix."""
    what = f"--engine auto --precision {precision}"
    if precision == "int8":
        sibling = model_path.with_name(model_path.name.removesuffix(".onnx") + INT8_SUFFIX)
        return ModelError(f"{what} needs the INT8 file {sibling} beside the model, and it is not there; make it with "
                          f"python -m perception.export.quantize {model_path} --calib SPEC, or drop --precision")
    if precision == "bf16":
        return DependencyError(f"{what}: bf16 needs OpenVINO and a CPU with AVX-512 BF16 or AMX; this CPU has "
                               f"{', '.join(cpu_isa()) or 'neither'}: use --precision auto, fp32 or int8")
    # Also bench probe's error, which has neither --engine nor --provider: the GPU routes are named
    # as perception run takes them.
    return ConfigError(f"{what}: on a CPU auto (and bench probe) chooses among fp32, bf16 and int8 ({precision} "
                       "runs on a GPU: perception run --provider cuda, or --engine tensorrt); use --precision auto, "
                       "fp32, bf16 or int8")


def select_engine(
    model_path: Path, options: EngineOptions, *, cache_dir: Path | None = None, isolated: bool = False,
    frames: str = "",
) -> Selection:
    """The cached selection for this model and machine, else a fresh probe (then cached);
    ``isolated`` probes in a child process (``probe_in_child``), as the node does. ``frames``
    (``frames_from``'s SPEC) probes on those frames whatever is cached, and caches that verdict."""
    candidates = cpu_candidates(model_path, options)
    if not candidates:
        raise _no_candidate(model_path, options.precision)
    cache_dir = cache_dir if cache_dir is not None else node_cache_dir()
    key = probe_key(model_path, options, candidates)
    cached = None if frames else read_cached(key, cache_dir)
    if cached is not None:
        return cached
    metadata = read_model_metadata(model_path)  # a clear ModelError before any engine is tried
    if isolated:
        return probe_in_child(model_path, options, cache_dir, key)
    if frames:
        images, described = frames_from(frames, metadata.input_hw)
        selection = run_probe(model_path, options, candidates, images, frames_label=described)
    else:
        selection = run_probe(model_path, options, candidates, probe_frames(metadata.input_hw))
    selection.key = key
    if not selection.uncached:  # a verdict made while the system refused a candidate is for this start only
        write_cached(selection, cache_dir)
    return selection


def probe_command(model_path: Path, options: EngineOptions, cache_dir: Path | None, *, nice: int = 0,
                  frames: Path | None = None) -> tuple[list[str], dict]:
    """The command line and environment of the probe child (``python -P -m perception.engines.auto``);
    ``frames``: a .npy of the node's inputs to judge the candidates on; ``cache_dir`` None: the
    child finds (as the node did) that it has no cache."""
    import perception

    env = dict(os.environ)
    # The child imports this very package, wherever it was imported from.
    root = str(Path(perception.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    # -P (perception.spawn): never a perception.py from the node's working folder
    cmd = module_command("perception.engines.auto", str(model_path), "--threads", str(options.threads),
                         "--precision", options.precision)
    if cache_dir is not None:
        cmd += ["--cache-dir", str(cache_dir)]
    if nice:
        cmd += ["--nice", str(nice)]
    if frames is not None:
        cmd += ["--frames", str(frames)]
    return cmd, env


#: What the probe child ended by SIGKILL is said to be: under a memory limit (a container's memory
#: cgroup) the kernel's OOM killer takes it (``probe_preexec`` makes it the first in line).
PROBE_KILLED = ("killed (SIGKILL, most likely the kernel's OOM killer: the probe needs more memory than is free)")


def probe_preexec():
    """The probe child's ``preexec_fn``: it dies with the node (``die_with_parent``), and it is the
    process the kernel's OOM killer takes first (``/proc/self/oom_score_adj`` 1000; raising it needs
    no privilege), never the node: under a memory limit the node alone fits in, the probe (every
    candidate's library and compiled model) took it over, and the killer chose the largest process,
    the node (exit 137 at every start under ``launch``). Only system calls run in the child before
    its exec (no import, no allocation that could take a lock another thread held at the fork)."""
    die = die_with_parent()

    def preexec() -> None:
        if die is not None:
            die()
        try:
            fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
        except OSError:  # no /proc (not Linux): nothing to adjust
            return
        try:
            os.write(fd, b"1000")
        except OSError:
            pass
        finally:
            os.close(fd)

    return preexec


def child_verdict(returncode: int, stdout: str, stderr: str, key: dict) -> Selection:
    """The probe child's verdict (its last stdout line, JSON), or its error raised again here. The
    child's cache warnings (``CACHE_WARNING_PREFIX`` lines on its stderr: a probe cache it cannot
    write, say) are logged here, once each, as the node's own.

    Raises:
        ModelError / DependencyError: what the child's probe raised.
        PerceptionError: the child died without a verdict (its last output line is quoted).
    """
    stderr = _relay_cache_warnings(stderr)
    doc: dict = {}
    # Its verdict or error is its last JSON line (a library may print after it).
    for line in reversed([ln for ln in stdout.splitlines() if ln.strip().startswith("{")]):
        try:
            found = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(found, dict) and ("engine" in found or "error" in found):
            doc = found
            break
    if returncode == 0 and "engine" in doc:
        try:
            selection = Selection.from_dict(doc)
        except VerdictError as exc:
            raise PerceptionError(f"--engine auto: the engine probe process gave an unusable verdict ({exc}); "
                                  "try --engine ort") from None
        selection.key = key
        return selection
    # WarmupError (the reference's first inference failed: ``run_probe``'s warm-up check) is a ModelError
    error = {"ModelError": ModelError, "WarmupError": ModelError, "DependencyError": DependencyError,
             "ResourceError": ResourceError}.get(doc.get("error_type", ""))
    if error is not None:
        raise error(doc.get("error", "the engine probe failed"))
    if isinstance(doc.get("error"), str) and doc["error"].strip():  # another error: its one line, not lost
        error = ConfigError if doc.get("error_type") == "ConfigError" else PerceptionError
        raise error(f"--engine auto: the engine probe failed: {doc['error'].strip().splitlines()[0][:300]}; "
                    "try --engine ort")
    if returncode == -signal.SIGKILL:  # a memory limit, most likely: not the model's fault (exit 1, respawned)
        raise ResourceError(f"--engine auto: the engine probe process was {PROBE_KILLED}; free memory or raise the "
                            "memory limit, or try --engine ort")
    last = (stderr.strip().splitlines() or ["no output"])[-1]
    raise PerceptionError(f"--engine auto: the engine probe process exited with status {returncode} ({last[:200]}); "
                          "try --engine ort")


def _relay_cache_warnings(stderr: str) -> str:
    """Log the cache warnings in the probe child's ``stderr`` (``child_verdict``); the rest of it."""
    rest = []
    for line in stderr.splitlines():
        if line.startswith(CACHE_WARNING_PREFIX):
            try:
                message = json.loads(line[len(CACHE_WARNING_PREFIX):])
            except (ValueError, RecursionError):
                message = None
            if isinstance(message, str):
                engine_cache.warn_once(message)
                continue
        rest.append(line)
    return "\n".join(rest)


class _CacheWarningRelay(logging.Handler):
    """In the probe child: each cache warning as one ``CACHE_WARNING_PREFIX`` line on stderr, for the
    node to log (its stderr is otherwise read only when it fails)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(CACHE_WARNING_PREFIX + json.dumps(record.getMessage()) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - a warning must never end the probe
            self.handleError(record)


def probe_in_child(model_path: Path, options: EngineOptions, cache_dir: Path | None, key: dict) -> Selection:
    """``select_engine`` in a child process (see the module docstring): it writes the cache and
    prints the verdict as JSON; its ModelError or DependencyError comes back as the same error
    (``child_verdict``)."""
    cmd, env = probe_command(model_path, options, cache_dir)
    log.info("--engine auto: probing the engines for %s in a child process (once per model and machine)",
             model_path.name)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, preexec_fn=probe_preexec())
    return child_verdict(done.returncode, done.stdout, done.stderr, key)


def cached_selection(model_path: Path, options: EngineOptions) -> Selection | None:
    """The cached verdict ``load_auto(..., background=True)`` would load without probing; None
    when it would probe, start switching, or take no verdict (a GPU provider, a forced precision,
    an unreadable model: ``load_auto`` reports those)."""
    if options.provider not in ("auto", "cpu") or options.precision not in ("auto", "fp32"):
        return None
    try:
        candidates = cpu_candidates(model_path, options)
        return read_cached(probe_key(model_path, options, candidates), node_cache_dir())
    except (OSError, PerceptionError):
        return None


def load_auto(model_path: Path, options: EngineOptions, *, background: bool = False,
              cached: Selection | None = None, flat_out: bool = False) -> Engine:
    """``--engine auto``: probe (or read the cached probe), load the winner, log why once.

    ``background`` (the node): without a cached verdict, start at once on ONNX Runtime FP32 and
    switch when the probe's verdict arrives (``SwitchingEngine``), rather than wait for it. Only
    when FP32 is a candidate: a forced ``--precision bf16``/``int8`` waits for its verdict.
    ``cached``: the verdict ``cached_selection`` read for these arguments (not read again).
    ``flat_out``: the node reads a file flat out (``streams_for_node`` decides ``--streams auto``).
    """
    auto_streams = options.streams == "auto"
    if options.provider not in ("auto", "cpu"):
        from perception.engines.ort import OrtEngine

        log.info("--engine auto with --provider %s: ONNX Runtime on that provider (the probe is for CPUs)",
                 options.provider)
        return OrtEngine(model_path, dataclasses.replace(options, streams=1) if auto_streams else options)
    selection = cached
    if selection is None and background and options.precision in ("auto", "fp32"):
        candidates = cpu_candidates(model_path, options)
        cache_dir = node_cache_dir()
        key = probe_key(model_path, options, candidates)
        selection = read_cached(key, cache_dir)
        if selection is None and len(candidates) > 1:
            read_model_metadata(model_path)  # a clear ModelError before anything starts
            killed = probe_cache.killed_at(key, cache_dir)
            if killed is not None:  # the last probe here was SIGKILLed (a memory limit): not again so soon
                return _held_off(model_path, options, killed, auto_streams=auto_streams)
            room = no_probe_room()
            if room is not None:  # said before any probe is promised (the node's start lines)
                return _without_probe(model_path, options, room, f"raise the memory limit, or {probe_elsewhere(model_path, options)}",
                                      auto_streams=auto_streams)
            from perception.engines.switching import SwitchingEngine  # imports this module

            if auto_streams:  # the node's workers are set at its start, before the verdict
                log.info("--engine auto --streams auto: one frame in flight until the probe's verdict; "
                         "the next start runs the streams it measured")
                options = dataclasses.replace(options, streams=1)
            return SwitchingEngine(model_path, options, cache_dir=cache_dir, key=key)
    if selection is None:
        selection = select_engine(model_path, options, isolated=True)
    streams_reason = ""
    if auto_streams:
        streams, streams_reason = streams_for_node(selection, flat_out=flat_out)
        options = dataclasses.replace(options, streams=streams)
    candidate = Candidate(selection.engine, selection.precision)
    try:
        engine = load_candidate(candidate, model_path, options)
    except Exception as exc:  # whatever it is (OpenVINO raises RuntimeError), FP32 must come back
        if candidate == Candidate(*REFERENCE):
            raise  # ONNX Runtime FP32 itself: the model's own error, as --engine ort reports it
        return _fall_back(model_path, options, selection, exc, auto_streams=auto_streams)
    if candidate != Candidate(*REFERENCE):
        # Its first inference runs here, not in the node's warm-up after this returns (the run
        # command's loader, the pipeline, the multi-camera batcher), so that a winner that loads and
        # then fails to run falls back as one that fails to load does. It is the warm-up's costly
        # run (allocations, kernel choice); the node's warm-up runs follow it.
        try:
            engine.warmup(1)
        except Exception as exc:
            engine.close()
            return _fall_back(model_path, options, selection, exc, auto_streams=auto_streams, ran=True)
    engine.selection = {**selection.to_dict(), "precision": engine.precision or selection.precision, "state": "chosen"}
    if streams_reason:  # the stats document says what runs and why, beside what the probe chose
        engine.selection.update(streams=options.streams, probe_streams=selection.streams, streams_reason=streams_reason)
    elif not auto_streams and isinstance(options.streams, int):
        # --streams N (or a node of several cameras, which runs 1): what runs, not what the probe measured
        engine.selection.update(streams=options.streams, probe_streams=selection.streams)
    log.info(
        "--engine auto chose %s%s (%s%s)",
        # what runs: the reference on an INT8 file runs it as it is (ort-int8, keyed ort-fp32)
        f"{selection.engine}-{engine.precision or selection.precision}",
        f", {options.streams} frame{'s' if options.streams > 1 else ''} in flight{' (--streams auto)' if auto_streams else ''}"
        if auto_streams or options.streams > 1 else "",
        selection.reason + (f"; {streams_reason}" if streams_reason else ""),
        "; cached probe" if selection.from_cache else f"; probed in {selection.probe_s:.1f} s",
    )
    return engine


#: An engine's load error opens with the flag it checked ("--precision bf16: this CPU has no BF16
#: ...") and may end with advice about flags ("; use --precision fp32 or int8"): flags a node on
#: --engine auto never typed, so its warning keeps only the cause between them.
_FLAG_PREFIX = re.compile(r"^--[a-z][\w-]* [^\s:;]+: ")
_FLAG_ADVICE = re.compile(r"; (?:use|try|give|pass|drop|write) .*$")


def load_failure(exc: BaseException) -> str:
    """Why a verdict's winner failed to load, without the flags the engine's message names (see
    ``_FLAG_PREFIX``): the user of ``--engine auto`` typed none of them."""
    text = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    return _FLAG_ADVICE.sub("", _FLAG_PREFIX.sub("", text))[:200] or type(exc).__name__


#: What the probe child may take at its peak: ONNX Runtime and OpenVINO with the candidates loaded
#: (`perception bench probe` on the default model, AMD EPYC 2 cores: 497 MiB max RSS). Under a memory
#: cgroup with less room than this, no probe is begun (``no_probe_room``).
PROBE_MEMORY_BYTES = 512 * 2**20


def no_probe_room() -> str | None:
    """Why no probe may begin here (a memory cgroup with less room than ``PROBE_MEMORY_BYTES``: the
    OOM killer would end the probe or, the node being the larger, the node), else None."""
    from perception import cgroups

    room = cgroups.memory_headroom_bytes()
    if room is None or room >= PROBE_MEMORY_BYTES:
        return None
    return (f"not probing: this cgroup's memory limit leaves {room // 2**20} MiB, and a probe takes about "
            f"{PROBE_MEMORY_BYTES // 2**20} MiB")


def probe_elsewhere(model_path: Path, options: EngineOptions) -> str:
    """How to get a verdict cached for this node from a probe run where there is room."""
    return (f"run perception bench probe {model_path} --threads {options.threads} where there is room: the node's "
            "next start here reads its cached verdict")


def held_off_then(model_path: Path, options: EngineOptions) -> str:
    """What follows a probe killed by SIGKILL (``probe_cache.note_killed``), in words."""
    return (f"the node's starts in the next {probe_cache.KILLED_HOLD_S // 3600} h run it without probing; to probe "
            f"now, free memory or raise the memory limit, then run perception bench probe {model_path} --threads "
            f"{options.threads}")


def _held_off(model_path: Path, options: EngineOptions, killed: float, *, auto_streams: bool) -> Engine:
    """ONNX Runtime FP32 without a probe: the last probe for these arguments was killed by SIGKILL
    (most likely the OOM killer) less than ``probe_cache.KILLED_HOLD_S`` ago."""
    import time

    ago = max(0.0, time.time() - killed)
    ago_text = f"{ago / 3600:.1f} h" if ago >= 3600 else f"{ago / 60:.0f} min"
    why = f"the last probe of {model_path.name} here ({ago_text} ago) was {PROBE_KILLED}"
    return _without_probe(model_path, options, why, held_off_then(model_path, options), auto_streams=auto_streams)


def _without_probe(model_path: Path, options: EngineOptions, why: str, then: str, *, auto_streams: bool) -> Engine:
    """ONNX Runtime (the file's own precision) without a probe, for ``why``, with one warning that
    says ``then`` (what to do); ``engine_selection`` says ``failed`` and why."""
    running = f"ONNX Runtime {file_precision(model_path).upper()}"
    log.warning("--engine auto: %s; running %s (%s)", why, running, then)
    engine = load_candidate(Candidate(*REFERENCE), model_path,
                            dataclasses.replace(options, streams=1) if auto_streams else options)
    engine.selection = {"engine": REFERENCE[0], "precision": engine.precision or REFERENCE[1], "state": "failed",
                        "from_cache": False, "reason": f"{why}; {running} runs without probing"}
    return engine


def _fall_back(model_path: Path, options: EngineOptions, selection: Selection, exc: BaseException, *,
               auto_streams: bool, ran: bool = False) -> Engine:
    """A verdict whose winner failed to load here (the CPU or a library lacks what it needs), or
    loaded and failed its first inference (``ran``): forget it, so that the next start probes again,
    and run ONNX Runtime FP32 with a warning that says why (and ``engine_selection`` ``state``
    ``failed``). A forced ``--precision bf16|int8`` has no FP32 to run: the error then names the
    verdict, not the engine's flags."""
    cache_dir = node_cache_dir()
    source = (f"the cached verdict {cache_path(selection.key, cache_dir)}" if selection.from_cache and cache_dir
              else "the probe")
    if ran:  # WarmupError names the file and advises flags: the backend's own error says it here
        # a WarmupError, or a ResourceError (refused memory or threads), keeps the backend's own words as reason
        reason = getattr(exc, "reason", None)
        error = f"{type(exc.__cause__ or exc).__name__}: {reason}" if isinstance(reason, str) else load_failure(exc)
        what = f"its first inference failed here ({error})"
    else:
        what = f"it failed to load here ({load_failure(exc)})"
    why = f"{source} chose {selection.engine}-{selection.precision} but {what}"
    if options.precision not in ("auto", "fp32") and isinstance(exc, ResourceError):
        # The system refused memory or a thread: neither the model's fault (not a ModelError, exit 2,
        # which launch never respawns) nor the verdict's (kept: a respawn with memory to spare runs it).
        raise ResourceError(f"--engine auto --precision {options.precision}: {exc}") from None
    forget_cached(selection.key, cache_dir)
    if options.precision not in ("auto", "fp32"):
        # WarmupError (a ModelError) takes other arguments: the first inference's failure is a ModelError.
        error = type(exc) if isinstance(exc, PerceptionError) and not ran else ModelError
        raise error(f"--engine auto --precision {options.precision}: {why}; it is forgotten, so the next start "
                    "probes again") from None
    # the reference runs the file as it is: ONNX Runtime INT8 for an INT8 file (probe_verdict.ran_label)
    running = f"ONNX Runtime {file_precision(model_path).upper()}"
    log.warning("--engine auto: %s; running %s (the next start probes again)", why, running)
    engine = load_candidate(Candidate(*REFERENCE), model_path,
                            dataclasses.replace(options, streams=1) if auto_streams else options)
    engine.selection = {"engine": REFERENCE[0], "precision": engine.precision or REFERENCE[1], "state": "failed",
                        "from_cache": selection.from_cache, "reason": f"{why}; {running} kept"}
    return engine


def add_probe_arguments(parser) -> None:
    """The probe's flags, declared once: for its child (``main``) and ``perception bench probe``."""
    from perception.run_config import DEFAULT_MODEL

    parser.add_argument("model", type=Path, nargs="?", default=DEFAULT_MODEL,
                        help="ONNX model (default: the shipped default model)")
    parser.add_argument("--threads", type=int, default=0,
                        help="inference threads in all: the node's --threads, since the verdict is cached per "
                             "thread count (0: the backend's default)")
    parser.add_argument("--precision", default="auto", metavar="auto|fp32|bf16|int8",
                        help="limit the candidates to this precision (auto: all)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="verdict cache folder (default: ~/.cache/perception/probe or PERCEPTION_PROBE_CACHE)")
    parser.add_argument("--frames", default="", metavar="SPEC",
                        help="judge agreement on these frames and probe again whatever is cached: a dataset spec "
                             "(camvid:PATH, its val images), a video file or image folder (every 10th frame), or a "
                             ".npy of uint8 N x H x W x 3 model inputs; default: the cached verdict, else rendered "
                             "road scenes")


def probe_now(model: Path, *, threads: int, precision: str, frames: str, cache_dir: Path | None) -> Selection:
    """Probe (or read the cache) for ``perception bench probe`` and the child.

    Raises:
        PerceptionError: an unreadable model or frames, no engine that agrees (the message says).
    """
    if threads < 0:
        raise ConfigError(f"--threads {threads}: give 0 (the backend's default) or a positive count")
    options = EngineOptions(provider="cpu", threads=threads, precision=precision)
    return select_engine(model, options, cache_dir=cache_dir, frames=frames)


def main(argv: list[str] | None = None) -> int:
    """The child of ``probe_in_child``: probe (or read the cache), print the verdict as one JSON line."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m perception.engines.auto", description=main.__doc__, allow_abbrev=False)
    add_probe_arguments(parser)
    parser.add_argument("--nice", type=int, default=0, help="lower this process's priority by N first")
    args = parser.parse_args(argv)
    if args.nice:
        os.nice(args.nice)
    relay, handler = logging.getLogger(engine_cache.__name__), _CacheWarningRelay(logging.WARNING)
    relay.addHandler(handler)
    relay.propagate = False  # said once, by the node
    try:
        selection = probe_now(args.model, threads=args.threads, precision=args.precision, frames=args.frames,
                              cache_dir=args.cache_dir)
    except PerceptionError as exc:
        print(json.dumps({"error_type": type(exc).__name__, "error": str(exc)}))
        return 2
    finally:  # as it was (main also runs in process, from the tests)
        relay.removeHandler(handler)
        relay.propagate = True
    print(json.dumps(selection.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
