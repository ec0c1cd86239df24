"""``--streams N``: several frames in flight in the inference stage, published in order.

A node with streams 2 must publish every frame of a lossless file once and in capture order (also
when a later frame finishes first), balance its counters, stop its workers on ``stop()`` and turn a
failing engine into a StageError; OpenVINO's per-worker requests give the same class ids as one
request and as ONNX Runtime; a bad value is a one-line error naming the flag; a first start of
``--engine auto`` keeps the engine it switched away from open until the last frame on it returns.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_engines_cpu import INT8_VERDICT, fake_probe, run_until, write_good_int8
from test_pipeline import MODEL_HW, Link, SlowEngine, expected_maps, run_cli, write_video
from tiny_models import expected_class_ids, write_brightness_model

from perception import contracts
from perception.engines import EngineOptions, load_engine, probe_cache, probe_verdict
from perception.engines import auto as auto_mod
from perception.engines import probe as probe_mod
from perception.engines.base import Engine
from perception.engines.switching import SwitchingEngine
from perception.errors import ConfigError
from perception.frame_queue import FrameQueue
from perception.inflight import InFlight
from perception.pipeline import Pipeline, StageError
from perception.preprocess import Preprocessor
from perception.run_config import RunConfig
from perception.sources import open_source


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return write_brightness_model(tmp_path_factory.mktemp("model") / "tiny.onnx", MODEL_HW)


@pytest.fixture
def link():
    lk = Link()
    yield lk
    lk.close()


@pytest.fixture(autouse=True)
def _private_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("PERCEPTION_OPENVINO_CACHE", str(tmp_path / "ov-cache"))
    monkeypatch.setenv("PERCEPTION_PROBE_CACHE", str(tmp_path / "probe-cache"))


class FirstFrameLast(Engine):
    """ONNX Runtime's tiny model, whose workers hold the node's first frame (``first_batch``, as
    letterboxed) until another frame has finished on another worker: the publish step must put
    the first frame back in front."""

    kind = "first-frame-last"

    def __init__(self, inner: Engine, first_batch: np.ndarray) -> None:
        self.inner, self.first_batch = inner, first_batch
        self.metadata, self.input_spec, self.provider = inner.metadata, inner.input_spec, inner.provider
        self.model_path, self.streams = inner.model_path, inner.streams
        self.later_done = threading.Event()
        self.first_held = threading.Event()

    def infer(self, batch):
        return self.inner.infer(batch)

    def worker(self):
        return _Worker(self)

    def warm_workers(self, workers, n) -> None:
        pass

    def close(self):
        pass


class _Worker:
    def __init__(self, engine: FirstFrameLast) -> None:
        self.engine = engine

    def infer(self, batch):
        engine = self.engine
        first = not engine.first_held.is_set() and np.array_equal(batch, engine.first_batch)
        if first:
            engine.first_held.set()
            assert engine.later_done.wait(30), "no later frame finished while the first was held"
        out = engine.inner.infer(batch)
        if not first:
            engine.later_done.set()
        return out


def _arrival_order(link: Link, n: int, topic: str = "class_map", timeout_s: float = 20.0) -> list:
    """The ``topic`` messages in the order they arrived, until ``n`` of them (or the timeout)."""
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        msg = link.sub.recv(timeout_s=0.2)
        if msg is not None and msg.kind == "mask" and msg.topic.endswith("/" + topic):
            got.append(msg)
    return got


def test_two_streams_publish_every_frame_once_in_order_with_balanced_counts(tmp_path, model_path, link):
    n = 24
    video = str(write_video(tmp_path / "clip.avi", n))
    engine = load_engine("ort", model_path, EngineOptions(provider="cpu", threads=2, streams=2))
    first = open_source(video)
    wrapped = FirstFrameLast(engine, Preprocessor(MODEL_HW)(first.read().image).copy())
    first.close()
    config = RunConfig.from_settings(source=video, queue="lossless", warmup=1, streams=2, threads=2)
    pipeline = Pipeline(config, source=open_source(video), engine=wrapped, publisher=link.pub)
    final = pipeline.run()
    engine.close()
    msgs = _arrival_order(link, n)
    assert wrapped.first_held.is_set() and wrapped.later_done.is_set()  # frame 0 really finished after another
    assert [m.seq for m in msgs] == list(range(n))  # once each, in capture order
    assert [m.pub_seq for m in msgs] == list(range(n))
    expected = expected_maps(video, n)
    for msg in msgs:
        np.testing.assert_array_equal(msg.data, expected[msg.seq])
        assert {"queue", "preprocess", "infer", "postprocess", "total"} <= set(msg.header["latency_ms"])
    assert final["published"] == n and final["frames_in"] == n and final["dropped"] == 0
    assert final["corrupt"] == 0 and final["in_flight_discarded"] == 0 and final["balanced"]
    assert final["streams"] == 2 and final["end_reason"] == "end of input"
    assert not any(t.is_alive() for t in pipeline._threads)
    assert sum(t.name.startswith("perception-inference-") for t in pipeline._threads) == 2


def test_latest_queue_with_streams_drops_counts_and_keeps_the_order(tmp_path, model_path, link):
    n = 40
    video = str(write_video(tmp_path / "clip.avi", n))
    engine = load_engine("ort", model_path, EngineOptions(provider="cpu", threads=2, streams=2))
    source = open_source(video)

    class SlowWorkers(SlowEngine):  # each worker waits for capture to read further: certain drops
        streams = 2

        def worker(self):
            return self

    config = RunConfig.from_settings(source=video, queue="latest", queue_capacity=1, warmup=0, streams=2, threads=2)
    final = Pipeline(config, source=source, engine=SlowWorkers(engine, 0, outpaced_by=source), publisher=link.pub).run()
    engine.close()
    seqs = [m.seq for m in _arrival_order(link, final["published"])]
    assert final["dropped"] > 0 and final["frames_in"] == n and final["published"] + final["dropped"] == n
    assert final["balanced"] and len(seqs) == final["published"]
    assert seqs == sorted(set(seqs)) and seqs[-1] == n - 1  # in order, once each; the newest frame makes it


def test_max_frames_with_streams_stops_at_exactly_that_many(model_path, link):
    n = 7
    engine = load_engine("ort", model_path, EngineOptions(provider="cpu", threads=3, streams=3))
    config = RunConfig.from_settings(source="synthetic", queue="latest", max_frames=n, width=96, height=72, fps=240,
                                     seed=5, warmup=0, streams=3)
    source = open_source("synthetic", config.source_options)
    source.pace(None)
    final = Pipeline(config, source=source, engine=engine, publisher=link.pub).run()
    engine.close()
    seqs = [m.seq for m in _arrival_order(link, n)]
    assert final["published"] == n == len(seqs) and seqs == sorted(seqs) and final["balanced"]
    assert final["end_reason"] == "max frames reached"


def test_stop_mid_run_joins_every_worker_and_balances(model_path, link):
    engine = load_engine("ort", model_path, EngineOptions(provider="cpu", threads=3, streams=3))
    config = RunConfig.from_settings(source="synthetic", width=96, height=72, fps=240, warmup=0, streams=3)
    source = open_source("synthetic", config.source_options)
    pipeline = Pipeline(config, source=source, engine=engine, publisher=link.pub)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(final=pipeline.run()))
    thread.start()
    try:
        assert _arrival_order(link, 3), "nothing was published"
    finally:
        pipeline.stop()
        thread.join(timeout=30)
    engine.close()
    final = result["final"]
    assert not thread.is_alive() and not any(t.is_alive() for t in pipeline._threads)
    assert sum(t.name.startswith("perception-inference-") for t in pipeline._threads) == 3
    assert final["end_reason"] == "stopped" and final["balanced"] and final["published"] >= 3


def test_a_failing_engine_with_streams_stops_the_node_with_stage_error(model_path, link):
    engine = load_engine("ort", model_path, EngineOptions(provider="cpu", threads=2, streams=2))

    class Broken:
        def infer(self, batch):
            raise RuntimeError("device lost")

    engine.worker = lambda: Broken()  # type: ignore[method-assign]
    config = RunConfig.from_settings(source="synthetic", width=64, height=48, fps=240, warmup=0, queue="lossless",
                                     streams=2)
    src = open_source("synthetic", config.source_options)
    src.pace(None)
    # warmed_ms: the workers' check run passed (--warmup 0 still makes one); the device is lost at the first frame
    pipeline = Pipeline(config, source=src, engine=engine, publisher=link.pub, warmed_ms=0.0)
    with pytest.raises(StageError, match="inference stage failed: RuntimeError: device lost"):
        pipeline.run()
    engine.close()
    assert pipeline.final_stats["balanced"] and not any(t.is_alive() for t in pipeline._threads)


def test_in_flight_hands_frames_on_in_ticket_order_and_lets_failed_ones_go():
    frames: FrameQueue[str] = FrameQueue(8, "lossless")
    for name in "abcd":
        frames.put(name)
    inflight: InFlight[str, str] = InFlight(frames, window=3)
    taken = [inflight.take(0.01) for _ in range(4)]
    assert taken[:3] == [(0, "a"), (1, "b"), (2, "c")] and taken[3] is None  # the window is full
    assert inflight.in_order(2, "C") == [] and inflight.in_order(1, None) == [] and inflight.held == 1
    assert inflight.in_order(0, "A") == ["A", "C"]  # 1 failed: nothing for it, 2 follows at once
    assert inflight.take(0.01) == (3, "d")


def test_openvino_streams_give_the_same_class_ids_as_one_request_and_as_ort(tmp_path):
    pytest.importorskip("openvino")
    model = write_brightness_model(tmp_path / "tiny.onnx", MODEL_HW)
    rng = np.random.default_rng(3)
    batches = [rng.integers(0, 256, (1, *MODEL_HW, 3), dtype=np.uint8) for _ in range(8)]
    one = load_engine("openvino", model, EngineOptions(precision="fp32", threads=1))
    two = load_engine("openvino", model, EngineOptions(precision="fp32", threads=2, streams=2))
    ort = load_engine("ort", model, EngineOptions(provider="cpu", threads=2, streams=2))
    assert two.streams == 2 and two.cpu_streams == 2 and one.cpu_streams == 1
    workers = [two.worker(), two.worker()]
    got: dict[int, np.ndarray] = {}

    def run(worker, indices):
        for i in indices:
            got[i] = worker.infer(batches[i])["class_ids"]

    threads = [threading.Thread(target=run, args=(w, range(k, len(batches), 2))) for k, w in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for i, batch in enumerate(batches):
        np.testing.assert_array_equal(got[i], one.infer(batch)["class_ids"])
        np.testing.assert_array_equal(got[i], ort.worker().infer(batch)["class_ids"])
        np.testing.assert_array_equal(got[i], expected_class_ids(batch))
    for engine in (one, two, ort):
        engine.close()


@pytest.mark.parametrize(("argv", "match"), [
    (["--streams", "0"], "streams=0 is out of range [1, 8] (--streams 0)"),
    (["--streams", "9"], "streams=9 is out of range [1, 8] (--streams 9)"),
    (["--streams", "two"], "--streams"),
    (["--streams", "2", "--threads", "1"], "--threads 1 is fewer than --streams 2"),
    (["--streams", "2", "--source", "front=synthetic", "--source", "rear=synthetic"],
     "streams 2 with 2 cameras"),
    (["--streams", "2", "--engine", "torch", "--model", "m.pt"], "--engine torch runs one frame at a time"),
])
def test_bad_streams_are_one_line_errors_naming_the_flag(argv, match, model_path, capsys, free_tcp_port, tmp_path,
                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.pt").write_bytes(b"")  # there: a --model that is not there is named first, before start-up
    defaults = {"--model": str(model_path), "--source": "synthetic", "--endpoint": f"tcp://127.0.0.1:{free_tcp_port}"}
    for flag, value in defaults.items():
        if flag not in argv:
            argv = argv + [flag, value]
    try:
        code, lines = run_cli(argv + ["--max-frames", "1"], capsys)
    except SystemExit as exc:  # argparse's own errors (not an integer) exit from the parser
        code, lines = exc.code, capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("perception: error: "), lines
    assert match in lines[0]


def test_the_first_start_switch_waits_for_the_frames_in_flight_on_the_old_engine(tmp_path, monkeypatch):
    model = write_brightness_model(tmp_path / "tiny.onnx", MODEL_HW)
    write_good_int8(model)
    flag = fake_probe(monkeypatch, tmp_path, verdict=INT8_VERDICT)
    engine = auto_mod.load_auto(model, EngineOptions(threads=2, streams=2), background=True)
    batch = np.full((1, *MODEL_HW, 3), 120, np.uint8)
    try:
        assert isinstance(engine, SwitchingEngine) and engine.streams == 2
        first, second = engine.worker(), engine.worker()
        np.testing.assert_array_equal(first.infer(batch)["class_ids"], expected_class_ids(batch))
        old = engine._current
        in_flight = engine._enter(batch)  # a frame still running on ONNX Runtime FP32 when the verdict lands
        flag.touch()
        run_until(second, lambda: engine.precision == "int8", batch)
        assert engine.precision == "int8" and old.session is not None  # not closed under the running frame
        engine._leave(in_flight)
        assert old.session is None  # the last frame on it returned: closed
        np.testing.assert_array_equal(first.infer(batch)["class_ids"], expected_class_ids(batch))
        assert first._engine is engine._current
    finally:
        engine.close()


def test_stats_declare_streams():
    assert "streams" in {key.name for key in contracts.CAMERA_STATS}
    with pytest.raises(ConfigError, match="--threads 2 is fewer than --streams 3"):
        EngineOptions(threads=2, streams=3)


# --------------------------------------------------------------------------------------------
# --streams auto: --engine auto's probe measures 1 and 2 frames in flight for its winner
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("wall_1", "wall_2", "want", "blocks"), [
    (1.0, 0.5, 2, 2),  # 2x: clear after two blocks of each
    (1.0, 0.8, 2, 2),  # 1.25x: outside 5 % of 1.15x
    (1.0, 0.9, 1, 4),  # 1.11x: close to 1.15x, measured again
    (1.0, 1.0 / 1.15, 2, 4),  # at the threshold
    (1.0, 1.03, 1, 4),  # 0.97x: close to the 1.0x of a node that reads a file
    (1.0, 1 / 1.07, 1, 2),  # 1.07x: between the two bands
    (1.0, 1.25, 1, 2),  # 0.8x: clearly slower
])
def test_streams_auto_takes_two_only_when_measurably_faster(tmp_path, monkeypatch, wall_1, wall_2, want, blocks):
    model = write_brightness_model(tmp_path / "tiny.onnx", MODEL_HW)
    frames = [np.full((1, *MODEL_HW, 3), 77, np.uint8)]
    seen: list[int] = []

    def fake_wall(workers, frames, runs):  # the measured seconds, by how many frames were in flight
        seen.append(len(workers))
        for worker in workers:
            np.testing.assert_array_equal(worker.infer(frames[0])["class_ids"], expected_class_ids(frames[0]))
        return wall_1 if len(workers) == 1 else wall_2

    monkeypatch.setattr(probe_mod, "_frames_in_flight", fake_wall)
    streams, fps = probe_mod.choose_streams(auto_mod.Candidate("ort", "fp32"), model, EngineOptions(threads=2), frames)
    assert seen == [1, 2] * blocks  # alternating blocks, two more of each when the gain is close
    assert streams == want and fps["2"] / fps["1"] == pytest.approx(wall_1 / wall_2, rel=1e-3)
    assert probe_mod.choose_streams(auto_mod.Candidate("ort", "fp32"), model, EngineOptions(threads=1), frames) == (1, {})


def test_streams_auto_keeps_one_when_nothing_was_measured(tmp_path, monkeypatch):
    model = write_brightness_model(tmp_path / "tiny.onnx", MODEL_HW)
    monkeypatch.setattr(probe_mod, "_frames_in_flight", lambda workers, frames, runs: 0.0)  # a clock that stood still
    frames = [np.full((1, *MODEL_HW, 3), 77, np.uint8)]
    assert probe_mod.choose_streams(auto_mod.Candidate("ort", "fp32"), model, EngineOptions(threads=2), frames) == (1, {})


def test_the_probe_records_the_streams_and_streams_auto_runs_them(tmp_path, monkeypatch):
    model = write_brightness_model(tmp_path / "tiny.onnx", MODEL_HW)
    options = EngineOptions(threads=2, streams="auto")
    selection = auto_mod.select_engine(model, options)  # a real probe, in process
    assert selection.streams in (1, 2) and set(selection.streams_fps) == {"1", "2"}
    assert "--streams auto would run" in selection.reason
    assert probe_cache.read_cached(selection.key, probe_cache.probe_cache_dir()).streams == selection.streams
    for cached_streams in (2, 1):
        selection.streams = cached_streams
        probe_cache.write_cached(selection, probe_cache.probe_cache_dir())
        engine = auto_mod.load_auto(model, options, background=True)
        assert not isinstance(engine, SwitchingEngine) and engine.streams == cached_streams
        assert engine.selection["streams"] == cached_streams
        engine.close()
    fixed = auto_mod.load_auto(model, EngineOptions(threads=2, streams=1), background=True)
    assert fixed.streams == 1  # a number is taken as given
    fixed.close()


def _cached_verdict(model: Path, options: EngineOptions, streams: int, fps_1: float, fps_2: float) -> None:
    """A cached ONNX Runtime FP32 verdict for ``model`` whose probe chose ``streams`` and measured these rates."""
    key = probe_cache.probe_key(model, options, auto_mod.cpu_candidates(model, options))
    probe_cache.write_cached(probe_verdict.Selection(engine="ort", precision="fp32", reason="test verdict", key=key,
                                                     streams=streams, streams_fps={"1": fps_1, "2": fps_2}),
                             probe_cache.probe_cache_dir())


@pytest.mark.parametrize(("fps_2", "flat_out", "want"), [(104.0, True, 2), (104.0, False, 1), (95.0, True, 1)])
def test_streams_auto_for_a_file_read_flat_out_takes_two_unless_the_probe_measured_it_slower(tmp_path, fps_2, flat_out,
                                                                                           want):
    # The probe kept 1 (2 measured 1.04x, under its 1.15x); a node reading a file flat out runs 2
    # unless 2 measured slower, and its stats say what runs, what the probe chose, and why.
    model = write_brightness_model(tmp_path / "tiny.onnx", MODEL_HW)
    options = EngineOptions(threads=2, streams="auto")
    _cached_verdict(model, options, 1, 100.0, fps_2)
    engine = auto_mod.load_auto(model, options, background=True, flat_out=flat_out)
    try:
        assert not isinstance(engine, SwitchingEngine) and engine.streams == want
        assert engine.selection["streams"] == want
        if want == 2:
            assert engine.selection["probe_streams"] == 1
            assert engine.selection["streams_reason"].startswith(
                "this node runs 2 frames in flight: it reads a file flat out and the probe measured 2 at 1.04x 1")
        else:
            assert "streams_reason" not in engine.selection
    finally:
        engine.close()


def test_bench_probe_says_what_a_file_reading_node_runs(tmp_path):
    selection = probe_verdict.Selection(engine="openvino", precision="int8", reason="test verdict",
                                        key={"cpu": "Test CPU"}, streams=1, streams_fps={"1": 91.2, "2": 101.5})
    text = probe_verdict.describe(selection, tmp_path / "m.onnx", 2, tmp_path)
    assert ("  --streams auto: 1 for a camera or a paced source, 2 for a node reading a file flat out "
            "(2 measured 1.11x 1, from 1.00x)") in text.splitlines()
    selection.streams_fps = {"1": 91.2, "2": 80.0}  # 2 measured slower: one everywhere, nothing to add
    assert "flat out" not in probe_verdict.describe(selection, tmp_path / "m.onnx", 2, tmp_path)


def test_a_probe_that_chose_two_keeps_two_whatever_the_source(tmp_path):
    model = write_brightness_model(tmp_path / "tiny.onnx", MODEL_HW)
    options = EngineOptions(threads=2, streams="auto")
    _cached_verdict(model, options, 2, 100.0, 130.0)
    for flat_out in (True, False):
        engine = auto_mod.load_auto(model, options, background=True, flat_out=flat_out)
        assert engine.streams == 2 and "streams_reason" not in engine.selection
        engine.close()


@pytest.mark.parametrize(("settings", "flat_out"), [
    ({"source": "clip.mp4"}, True),
    ({"source": "frames/*.png"}, True),
    ({"source": "clip.mp4", "fps": 30}, False),
    ({"source": "clip.mp4", "realtime": True}, False),
    ({"source": "synthetic"}, False),
    ({"source": "/dev/video0"}, False),
    ({"source": "rtsp://cam.local/stream"}, False),
    ({"source": ["front=a.mp4", "rear=b.mp4"]}, False),
])
def test_which_nodes_read_flat_out(settings, flat_out):
    assert RunConfig.from_settings(**settings).reads_flat_out is flat_out


def test_the_run_command_gives_streams_auto_the_source_it_reads(tmp_path, model_path):
    from perception.commands.run import EngineLoader

    options = EngineOptions(threads=2, streams="auto")
    _cached_verdict(model_path, options, 1, 100.0, 104.0)
    video = write_video(tmp_path / "clip.avi", 2)
    for extra, want in (({}, 2), ({"fps": 30}, 1)):
        config = RunConfig.from_settings(source=str(video), model=str(model_path), engine="auto", streams="auto",
                                         threads=2, **extra)
        engine = EngineLoader(config).result()
        try:
            assert engine.streams == want, extra
        finally:
            engine.close()


def test_streams_auto_at_a_first_start_runs_one_frame_until_the_verdict(tmp_path, monkeypatch):
    model = write_brightness_model(tmp_path / "tiny.onnx", MODEL_HW)
    write_good_int8(model)
    fake_probe(monkeypatch, tmp_path, verdict={**INT8_VERDICT, "streams": 2})
    engine = auto_mod.load_auto(model, EngineOptions(threads=2, streams="auto"), background=True)
    try:
        assert isinstance(engine, SwitchingEngine) and engine.streams == 1
    finally:
        engine.close()


def test_streams_auto_is_a_value_of_the_flag_and_the_key(model_path, capsys, free_tcp_port):
    from perception.config import load_config

    assert load_config(RunConfig, {"streams": "auto", "engine": "auto"}, source="node.yaml").engine_options.streams == "auto"
    with pytest.raises(ConfigError, match="streams: 'two' does not fit"):
        load_config(RunConfig, {"streams": "two"}, source="node.yaml")
    code, lines = run_cli(["--model", str(model_path), "--source", "synthetic", "--streams", "auto", "--max-frames", "1",
                           "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}"], capsys)
    assert code != 0 and len(lines) == 1
    assert lines[0] == ("perception: error: --streams auto is measured by --engine auto's probe; give --engine ort a "
                        "number of frames in flight, e.g. --streams 2 (or 1)")
