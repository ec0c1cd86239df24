"""Issue 15, findings 5 and 6: the final stats balance at every end, and signals are handled from
the first instruction of ``perception run``.

At every end (end of input, --max-frames, --duration, a signal, a stage failure) the final stats
satisfy ``frames_in == published + dropped + corrupt + in_flight_discarded``, each named.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.cli import main as cli_main
from perception.engines.base import Engine
from perception.errors import PublishError, SourceError
from perception.pipeline import Pipeline, StageError
from perception.publish import MaskPublisher
from perception.run_config import RunConfig
from perception.sources import open_source

TERMS = ("published", "dropped", "corrupt", "in_flight_discarded")


@pytest.fixture
def model_path(tiny_model_path) -> Path:
    return tiny_model_path


@pytest.fixture
def engine(tiny_engine) -> Engine:
    return tiny_engine


@pytest.fixture
def publisher():
    pub = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace="perception/balance", sndhwm=10_000)
    yield pub
    pub.close()


def assert_balanced(final: dict) -> None:
    assert all(isinstance(final[k], int) for k in ("frames_in", *TERMS)), final
    assert final["frames_in"] == sum(final[k] for k in TERMS), {k: final[k] for k in ("frames_in", *TERMS)}
    assert final["balanced"] is True


def write_video(path: Path, n: int, hw=(60, 80)) -> str:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (hw[1], hw[0]))
    rng = np.random.default_rng(3)
    for _ in range(n):
        writer.write(rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
    writer.release()
    return str(path)


class SlowEngine(Engine):
    """The tiny model made slow (and optionally failing after ``fail_after`` frames)."""

    kind = "slow"

    def __init__(self, inner: Engine, delay_s: float, fail_after: int | None = None) -> None:
        self.inner, self.delay_s, self.fail_after = inner, delay_s, fail_after
        self.metadata, self.input_spec, self.provider = inner.metadata, inner.input_spec, inner.provider
        self.model_path = inner.model_path
        self.calls = 0

    def infer(self, batch):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("device lost")
        time.sleep(self.delay_s)  # simulated compute time, not synchronisation
        return self.inner.infer(batch)

    def close(self):
        pass


def test_end_of_input_balances_with_a_corrupt_image(tmp_path, engine, publisher):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.full((30, 40, 3), i * 30, np.uint8))
    (folder / "03.png").write_bytes(b"not a png")
    config = RunConfig.from_settings(source=str(folder), warmup=0)
    final = Pipeline(config, source=open_source(str(folder)), engine=engine, publisher=publisher).run()
    assert final["end_reason"] == "end of input"
    assert final["frames_in"] == 6 and final["published"] == 5 and final["corrupt"] == 1
    assert_balanced(final)


def test_max_frames_reads_no_more_than_it_publishes_and_balances(engine, publisher):
    """Finding 5: '--max-frames 5' reported 8 in, 5 out, 0 drops."""
    config = RunConfig.from_settings(source="synthetic", width=64, height=48, fps=240, max_frames=5, warmup=0, queue="lossless")
    source = open_source("synthetic", config.source_options)
    source.pace(None)
    final = Pipeline(config, source=source, engine=engine, publisher=publisher).run()
    assert final["end_reason"] == "max frames reached"
    assert final["frames_in"] == final["published"] == 5
    assert_balanced(final)


def test_max_frames_with_the_latest_queue_balances(engine, publisher):
    config = RunConfig.from_settings(source="synthetic", width=64, height=48, fps=240, max_frames=5, warmup=0, queue="latest",
                       queue_capacity=1)
    source = open_source("synthetic", config.source_options)
    source.pace(None)
    final = Pipeline(config, source=source, engine=SlowEngine(engine, 0.02), publisher=publisher).run()
    assert final["end_reason"] == "max frames reached" and final["published"] == 5
    assert_balanced(final)


def test_duration_balances_with_frames_in_flight(engine, publisher):
    config = RunConfig.from_settings(source="synthetic", width=64, height=48, fps=240, duration_s=0.5, warmup=0,
                       queue="lossless", queue_capacity=4)
    source = open_source("synthetic", config.source_options)
    final = Pipeline(config, source=source, engine=SlowEngine(engine, 0.03), publisher=publisher).run()
    assert final["end_reason"] == "duration reached"
    assert_balanced(final)


def test_a_stop_after_the_whole_file_was_read_names_the_stop_not_the_end_of_input(tmp_path, engine, publisher):
    """Hunt 4a finding 1: once the last frame of a file was queued, a later --duration (or signal)
    was reported as 'end of input' although most frames were never published. The end of input
    is the reason only when every frame read went through."""
    clip = write_video(tmp_path / "clip.avi", 40)
    config = RunConfig.from_settings(source=clip, duration_s=0.4, warmup=0, queue="lossless", queue_capacity=64)
    pipeline = Pipeline(config, source=open_source(clip), engine=SlowEngine(engine, 0.05), publisher=publisher)
    final = pipeline.run()
    assert final["frames_in"] == 40 and final["in_flight_discarded"] > 0  # read to the end, not all published
    assert final["end_reason"] == "duration reached" == pipeline.end_reason
    assert_balanced(final)
    # Once everything went through, a late stop does not rewrite how the run ended.
    config = RunConfig.from_settings(source=clip, warmup=0)
    pipeline = Pipeline(config, source=open_source(clip), engine=engine, publisher=publisher)
    final = pipeline.run()
    pipeline.stop("signal SIGINT")
    assert final["end_reason"] == pipeline.end_reason == "end of input" and final["published"] == 40


class FailsAtTheEnd:
    """A source whose input, once read, fails for good (a camera unplugged, 200 unreadable frames)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def read(self):
        frame = self.inner.read()
        if frame is None:
            raise SourceError("camera gone for good")
        return frame

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_source_that_fails_for_good_still_publishes_the_frames_it_read(tmp_path, engine, publisher):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.full((30, 40, 3), i * 60, np.uint8))
    config = RunConfig.from_settings(source=str(folder), warmup=0, queue="lossless", queue_capacity=4)
    # The four frames are queued at once and the source fails; inference takes 50 ms a frame.
    pipeline = Pipeline(config, source=FailsAtTheEnd(open_source(str(folder))), engine=SlowEngine(engine, 0.05),
                        publisher=publisher)
    with pytest.raises(SourceError, match="gone for good"):
        pipeline.run()
    final = pipeline.final_stats
    assert final["end_reason"] == "capture failed" and "gone for good" in final["error"]
    assert final["published"] == 4 and final["in_flight_discarded"] == 0
    assert_balanced(final)


def test_stage_failure_still_gives_balanced_final_stats(engine, publisher):
    config = RunConfig.from_settings(source="synthetic", width=64, height=48, fps=240, warmup=0, queue="lossless")
    source = open_source("synthetic", config.source_options)
    # warmed_ms: no check run (--warmup 0 still makes one), so that the first 3 calls are the first 3 frames
    pipeline = Pipeline(config, source=source, engine=SlowEngine(engine, 0.0, fail_after=3), publisher=publisher,
                        warmed_ms=0.0)
    with pytest.raises(StageError, match="device lost"):
        pipeline.run()
    final = pipeline.final_stats
    assert final["end_reason"] == "inference failed" and "device lost" in final["error"]
    assert final["published"] == 3 and final["corrupt"] >= 25  # the failures in a row that ended it
    assert_balanced(final)


def test_publish_failure_counts_the_frame_it_lost(engine, publisher):
    calls = {"n": 0}
    real = publisher.publish_masks

    def flaky(**kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise PublishError("socket gone")
        return real(**kwargs)

    publisher.publish_masks = flaky
    config = RunConfig.from_settings(source="synthetic", width=64, height=48, fps=240, warmup=0, queue="lossless")
    source = open_source("synthetic", config.source_options)
    pipeline = Pipeline(config, source=source, engine=engine, publisher=publisher)
    with pytest.raises(PublishError, match="socket gone"):
        pipeline.run()
    final = pipeline.final_stats
    assert final["end_reason"] == "publish failed" and final["published"] == 3
    assert_balanced(final)


def test_signal_on_a_video_balances(tmp_path, model_path, free_tcp_port):
    """Finding 5: SIGTERM on a video reported 118 in, 114 out, 0 drops."""
    video = write_video(tmp_path / "clip.avi", 400)
    proc = subprocess.Popen(
        [sys.executable, "-m", "perception", "run", "--source", video, "--model", str(model_path), "--threads", "1",
         "--warmup", "0", "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}", "--realtime", "--fps", "100"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        for line in proc.stderr:
            if "first masks published" in line:
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    final = json.loads(out.strip().splitlines()[-1])
    assert final["end_reason"] == "signal SIGTERM" and final["startup"] == "complete" and final["published"] >= 1
    assert_balanced(final)


# --------------------------------------------------------------------------------------------
# Signals during start-up (finding 6)
# --------------------------------------------------------------------------------------------


def _signal_self(sig: int = signal.SIGTERM) -> None:
    os.kill(os.getpid(), sig)


#: The steps the main thread may be in while the engine warms up beside it (``perception run``'s
#: EngineLoader), waiting for the load included: the signal stops it at the next step it reaches.
BESIDE_THE_WARM_UP = ("opening the publisher", "opening the source", "loading the engine", "warming up the engine")


@pytest.mark.parametrize(
    ("target", "steps", "extra"),
    [
        ("perception.commands.run.load_run_config", ("loading the configuration",), ()),
        ("perception.engines.load_engine", ("loading the engine",), ()),
        ("perception.publish.MaskPublisher", ("opening the publisher",), ()),
        ("perception.sources.open_source", ("opening the source",), ()),
        # One frame in flight: the warm-up runs in the engine's loading thread.
        ("perception.engines.ort.OrtEngine.warmup", BESIDE_THE_WARM_UP, ()),
        # Two: each worker warms up in the pipeline, which the main thread waits for.
        ("perception.engines.ort.OrtEngine.warm_workers", ("warming up the engine",), ("--streams", "2", "--threads", "2")),
    ],
)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_at_any_start_up_step_exits_0_with_final_stats(monkeypatch, capsys, model_path, free_tcp_port,
                                                                  target, steps, extra, sig):
    module_name, attr = target.rsplit(".", 1)
    import importlib

    try:
        owner = importlib.import_module(module_name)
    except ModuleNotFoundError:  # a class attribute: perception.engines.ort.OrtEngine.warmup
        module_name, cls_name = module_name.rsplit(".", 1)
        owner = getattr(importlib.import_module(module_name), cls_name)
    real = getattr(owner, attr)

    def interrupted(*args, **kwargs):
        _signal_self(sig)  # handled in the main thread: at once, or as it next runs Python code
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, attr, interrupted)
    threads = () if "--threads" in extra else ("--threads", "1")  # a flag is given once
    code = cli_main(["-q", "run", "--model", str(model_path), "--source", "synthetic", "--width", "64",
                     "--height", "48", *threads, "--warmup", "1", *extra,
                     "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    final = json.loads(captured.out.strip().splitlines()[-1])
    assert final["end_reason"] == f"signal {signal.Signals(sig).name}" and final["startup"] in steps
    assert final["published"] == 0
    assert_balanced(final)
    # The handlers are given back once the command has returned.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_the_warm_up_runs_once_beside_the_source(monkeypatch, capsys, model_path, free_tcp_port):
    """One frame in flight: ``perception run`` warms the engine up in its loading thread while it
    opens the publisher and the source, and the pipeline does not warm it up again."""
    from perception.engines.ort import OrtEngine

    calls: list[tuple[str, int]] = []
    real = OrtEngine.warmup

    def counted(self, n: int = 3) -> None:
        calls.append((threading.current_thread().name, n))
        real(self, n)

    monkeypatch.setattr(OrtEngine, "warmup", counted)
    code = cli_main(["-q", "run", "--model", str(model_path), "--source", "synthetic", "--width", "64",
                     "--height", "48", "--threads", "1", "--warmup", "2", "--max-frames", "2",
                     "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    final = json.loads(captured.out.strip().splitlines()[-1])
    assert final["published"] == 2 and final["startup"] == "complete"
    assert calls == [("perception-engine-load", 2)]


def test_sigint_in_the_first_moments_of_a_real_process_is_clean(model_path, free_tcp_port):
    """A real process: SIGINT as soon as it says anything, long before the first mask."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "perception", "-v", "run", "--model", str(model_path), "--source", "synthetic",
         "--threads", "1", "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    lines: list[str] = []
    first = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            first.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert first.wait(60), "the node said nothing"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, "".join(lines)
    assert "Traceback" not in "".join(lines) and "interrupted" not in "".join(lines)
    final = json.loads(out.strip().splitlines()[-1])
    assert final["end_reason"] == "signal SIGINT"
    assert_balanced(final)
