"""One declaration per setting: flags, YAML keys and launch parameters come from it and agree.

Each command's config dataclass declares its settings with ``perception.config.setting``; these
tests show that the flag, the YAML file and the launch node are checked by the same code (the same
message for the same mistake), that every command's flags round-trip to the config, and that the
drifts the declarations replaced are gone (one frame-size range, ``duration_s`` everywhere, replay's
seconds no longer named like the node's subscriber count).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import re
from pathlib import Path

import pytest
import yaml

from perception.cli import OneLineParser
from perception.config import config_to_dict, load_config
from perception.errors import ConfigError
from perception.flags import config_from_flags, flag_values, flags, flags_for
from perception.launch import load_launch
from perception.options import MAX_FRAME_SIDE, MIN_FRAME_SIDE, EngineOptions, PublishOptions, SourceOptions
from perception.run_config import RunConfig

ROOT = Path(__file__).resolve().parent.parent


def _config_class(command: str) -> type:
    where = {
        "run": ("perception.run_config", "RunConfig"),
        "demo": ("perception.demo", "DemoConfig"),
        "view": ("perception.view", "ViewConfig"),
        "record": ("perception.record", "RecordConfig"),
        "replay": ("perception.replay", "ReplayConfig"),
        "listen": ("perception.commands.listen", "ListenConfig"),
        "export": ("perception.export", "ExportConfig"),
        "train": ("perception.training.config", "TrainConfig"),
        "synth": ("perception.commands.synth", "SynthConfig"),
        "eval": ("perception.commands.eval", "EvalConfig"),
    }[command]
    return getattr(importlib.import_module(where[0]), where[1])


def _parser(command: str) -> argparse.ArgumentParser:
    class Raising(OneLineParser):
        def error(self, message: str):
            raise ConfigError(message)

    parser = Raising(prog=f"perception {command}")
    importlib.import_module(f"perception.commands.{command}").add_arguments(parser)
    return parser


def _from_flags(command: str, argv: list[str]):
    return config_from_flags(_config_class(command), _parser(command).parse_args(argv), source=f"perception {command}")


def _core(message: str) -> str:
    """The part of an error after the 'where' prefix (file, command or launch node)."""
    return re.search(r"\b\w+=\S+ is out of range( \[[^\]]*\]|: must be [<>]= [^ )]+)", message).group(0)


def _launch_error(tmp_path: Path, kind: str, parameters: dict) -> str:
    path = tmp_path / "bad.launch.yaml"
    path.write_text(yaml.safe_dump({"launch": [{"node": {"name": "n", "kind": kind, "parameters": parameters}}]}))
    with pytest.raises(ConfigError) as caught:
        load_launch(path)
    return str(caught.value)


# Sample values per command: every flag of the command, in the form a launch file would give it.
SAMPLES = {
    "run": {"source": ["front=synthetic", "rear=clip.mp4"], "width": 640, "height": 480, "fps": 15.0, "fourcc": "MJPG",
            "realtime": True, "loop": True, "read_timeout_s": 2.5, "seed": 4, "model": "m.onnx", "engine": "torch",
            "provider": "cpu", "threads": 2, "fp16": True, "compile": "tensorrt", "precision": "fp16", "warmup": 1,
            "queue": "lossless", "queue_capacity": 4, "max_frames": 7, "duration_s": 1.5, "batch_timeout_ms": 5.0,
            "endpoint": "tcp://127.0.0.1:5599", "namespace": "perception", "mask_size": "source",
            "encoding": {"lane": "rle", "drivable": "png"}, "task": {"obstacle": ["car", "pedestrian"]},
            "obstacles": False, "per_class_obstacles": True, "atomic_frames": True, "unknown_threshold": 0.25, "drivable_reach": "all",
            "stats_interval_s": 0.5, "sndhwm": 32, "wait_subscribers": 2, "wait_timeout_s": 3.0,
            "curve_secret_key": "server.key_secret", "curve_allow": "keys"},
    "demo": {"model": "m.onnx", "duration_s": 2.0, "endpoint": "tcp://127.0.0.1:5598", "out_dir": "o", "overwrite": True,
             "width": 320, "height": 240, "fps": 12.0, "seed": 3, "provider": "cpu", "threads": 1},
    "view": {"source": "synthetic", "model": "m.onnx", "seed": 2, "width": 320, "height": 240, "fps": 5.0,
             "out": "v.mp4", "overwrite": True, "max_frames": 3, "duration_s": 4.0, "alpha": 0.3, "provider": "cpu"},
    "record": {"out": "r.mcap", "endpoint": "tcp://127.0.0.1:5597", "topic": ["perception/front/lane", "a/b"],
               "duration_s": 6.0, "curve_server_key": "s.key", "curve_key": "c.key_secret", "max_mask_pixels": 100,
               "split_duration": 2.0, "split_size": 1.5, "chunk_size_kb": 64, "overwrite": True, "max_queue_mb": 512,
               "max_topics": 100},
    "replay": {"file": ["a.mcap", "b.mcap"], "max_rate": True, "endpoint": "tcp://127.0.0.1:5596",
               "wait_first_subscriber_s": 2.0, "restamp": True, "loop": True,
               "curve_secret_key": "server.key_secret", "curve_allow": "keys", "max_mask_pixels": 5000,
               "max_queue_mb": 8, "drain_timeout_s": 2.5},
    "listen": {"endpoint": "tcp://127.0.0.1:5595", "namespace": "perception/front", "duration_s": 2.0, "count": 9,
               "interval_s": 0.5, "echo": True, "save_dir": "masks", "every": 3, "overwrite": True, "keep_latest": True,
               "json": True, "max_mask_pixels": 1000, "max_queue_mb": 512, "max_topics": 100, "curve_server_key": "s.key",
               "curve_key": "c.key_secret"},
    "export": {"checkpoint": "c.pt", "out": "m.onnx", "input_hw": [64, 96], "confidence": True,
               "unknown_threshold": 0.5, "unknown_data": "synthetic", "unknown_count": 5, "dynamic_batch": True,
               "verify_data": "synthetic", "verify_count": 2, "int8": True, "calib": "synthetic", "calib_count": 3,
               "val_data": "synthetic", "val_count": 4, "allow_int8_drop": True, "latency_runs": 2, "tensorrt": True,
               "fp16": True, "trt_cache_dir": "cache", "logit_adjust": 0.5},
    "train": {"model": "segnet_basic", "data": "synthetic", "val_data": "synthetic", "input_hw": [64, 96],
              "epochs": 2, "steps": 5, "batch_size": 2, "lr": 0.01, "loss": "dice", "out": "runs/x", "device": "cpu",
              "workers": 0, "pretrained": False, "overwrite": True},
    "synth": {"out": "o", "count": 4, "input_hw": [48, 64], "seed": 1, "split": "val=0.2", "video": "d.mp4",
              "video_labels": True, "fps": 10.0, "images": False, "contact_sheet": "s.png", "overwrite": True},
    "eval": {"model": "m.onnx", "data": "synthetic", "split": "train", "device": "cpu", "batch_size": 2, "workers": 0,
             "threads": 1, "json": "e.json", "tasks": "drivable,lane", "task": {"obstacle": ["car"]},
             "data_task": {"obstacle": ["Car", "Truck"]}, "unknown_threshold": 0.4, "drivable_reach": "all", "mask_size": "source",
             "record": True, "contact_sheet": "c.png", "sheet_count": 4, "overwrite": True},
}


# Settings that exclude the ones above (mutually exclusive flags, a camera name beside a named source).
ALTERNATES = {
    "run": [{"source": "synthetic", "camera_name": "rear_1", "streams": 2}],  # streams: one camera only
    "view": [{"endpoint": "tcp://127.0.0.1:5594", "namespace": "perception/front", "curve_server_key": "s.key",
              "curve_key": "c.key_secret"}],  # CURVE keys: for a node's masks only
    "record": [{"out": "r.mcap", "namespace": "perception/front"},
               {"out": "r.mcap", "namespace": "perception/front", "split_size": 1.5, "append": True}],  # not overwrite
    "replay": [{"file": "a.mcap", "rate": 2.0}],
    "listen": [{"topic": ["perception/front/lane", "perception/front/stats"]}],
    "train": [{"pretrained": True}],
    "eval": [{"checkpoint": "c.pt", "tasks": ""}],
    "export": [{"checkpoint": "c.pt", "out": "m.onnx", "logit_adjust": "auto"}],
    "synth": [{"split": ["val=0.1", "test=0.1"]}],  # --split repeated: the flags add up
}


@pytest.mark.parametrize("command", list(SAMPLES))
def test_every_flag_round_trips_through_the_declaration(command):
    """Launch parameters -> flags (written from the declarations) -> the command's own parser -> the
    same config as the parameters loaded directly; and every declared flag is exercised."""
    cls = _config_class(command)
    samples = [SAMPLES[command], *ALTERNATES.get(command, [])]
    declared = {f.name for f in flags(cls)}
    covered = set().union(*samples)
    assert declared <= covered, f"untested flags: {declared - covered}"
    for parameters in samples:
        argv = flags_for(cls, parameters, where="test")
        via_flags = config_from_flags(cls, _parser(command).parse_args(argv), source="test")
        assert via_flags == load_config(cls, parameters, source="test"), argv


@pytest.mark.parametrize("command", ["run", "demo", "view"])
def test_a_frame_size_has_one_range_for_flags_yaml_and_launch(command, tmp_path):
    """Width was 1..16384 in the node and 16..8192 in demo and view: now one declaration, one message."""
    too_small = MIN_FRAME_SIDE - 1
    with pytest.raises(ConfigError) as by_flag:
        base = ["--source", "synthetic", "--model", "m.onnx"] if command == "view" else []
        _from_flags(command, [*base, "--width", str(too_small)])
    with pytest.raises(ConfigError) as by_yaml:
        data = {"width": too_small, **({"source": "synthetic", "model": "m.onnx"} if command == "view" else {})}
        load_config(_config_class(command), data, source="node.yaml")
    expected = f"width={too_small} is out of range [{MIN_FRAME_SIDE}, {MAX_FRAME_SIDE}]"
    assert _core(str(by_flag.value)) == _core(str(by_yaml.value)) == expected
    assert str(by_yaml.value) == f"node.yaml: {expected}"
    if command in ("run", "view"):  # the node kinds of launch files
        kind = {"run": "pipeline", "view": "view"}[command]
        message = _launch_error(tmp_path, kind, {"width": too_small, "source": "synthetic", "model": "m.onnx"})
        assert message.endswith(f"node 'n': parameters: {expected}")
    if command == "demo":  # the demo's camera is the synthetic one, which draws at most 1920 wide
        with pytest.raises(ConfigError, match="is outside the synthetic camera's range"):
            _from_flags(command, ["--width", str(MAX_FRAME_SIDE)])
        return
    big = _from_flags(command, ["--source", "/dev/video0", *(["--model", "m"] if command == "view" else []),
                                "--width", str(MAX_FRAME_SIDE)])
    assert big.source_options.width == MAX_FRAME_SIDE


def test_run_yaml_file_and_flags_give_the_same_message(tmp_path):
    from perception.commands.run import load_run_config

    node_yaml = tmp_path / "node.yaml"
    node_yaml.write_text("queue_capacity: 0\n")
    with pytest.raises(ConfigError) as by_file:
        load_run_config(_parser("run").parse_args(["--config", str(node_yaml)]))
    with pytest.raises(ConfigError) as by_flag:
        load_run_config(_parser("run").parse_args(["--queue-capacity", "0"]))
    launch = _launch_error(tmp_path, "pipeline", {"queue_capacity": 0})
    core = "queue_capacity=0 is out of range [1, 1024]"
    # named like argparse's errors: the command, then the file and key or the flag as typed
    assert str(by_file.value) == f"run: {node_yaml}: {core}"
    assert str(by_flag.value) == f"run: {core} (--queue-capacity 0)"
    assert launch.endswith(f"parameters: {core}")


def test_run_demo_and_view_hold_the_option_groups_not_copies():
    """RunConfig, DemoConfig and ViewConfig hold SourceOptions/EngineOptions (and RunConfig
    PublishOptions): no field of theirs repeats a group's setting."""
    for command in ("run", "demo", "view"):
        # demo's endpoint (a free port by default) and view's (a node to draw) are their own settings
        groups = (SourceOptions, EngineOptions, PublishOptions) if command == "run" else (SourceOptions, EngineOptions)
        grouped = {f.name for g in groups for f in dataclasses.fields(g)}
        cls = _config_class(command)
        fields = dataclasses.fields(cls)
        assert {f.name for f in fields} & grouped == set(), command
        assert {f.default_factory for f in fields if "composed" in f.metadata} == set(groups), command
        for flag in flags(cls):  # a group's setting keeps its declared default and range where it is offered
            origin = next((f for g in groups for f in dataclasses.fields(g) if f.name == flag.name), None)
            if origin is not None:
                assert (flag.field.default, flag.field.metadata["bounds"]) == (origin.default, origin.metadata["bounds"])
    run = RunConfig.from_settings(source="synthetic", width=640, fps=5.0, threads=2, precision="fp32", sndhwm=8)
    assert run.source_options == SourceOptions(width=640, fps=5.0)
    assert run.engine_options == EngineOptions(threads=2, precision="fp32")
    assert run.publish_options == PublishOptions(sndhwm=8)


def test_a_yaml_file_a_launch_node_and_flags_give_one_composed_config(tmp_path):
    """The flat keys of a run config (YAML file, launch node) and the flags build the same groups."""
    from perception.commands.run import load_run_config

    settings = {"source": "synthetic", "width": 320, "fps": 12.5, "realtime": True, "threads": 2, "precision": "fp32",
                "queue": "lossless", "endpoint": "tcp://127.0.0.1:5591", "encoding": {"lane": "rle"}, "obstacles": False}
    node_yaml = tmp_path / "node.yaml"
    node_yaml.write_text(yaml.safe_dump(settings))
    from_file = load_run_config(_parser("run").parse_args(["--config", str(node_yaml)]))
    from_flags = _from_flags("run", ["--source", "synthetic", "--width", "320", "--fps", "12.5", "--realtime",
                                     "--threads", "2", "--precision", "fp32", "--queue", "lossless",
                                     "--endpoint", "tcp://127.0.0.1:5591", "--encoding", "lane=rle", "--no-obstacles"])
    launch = tmp_path / "node.launch.yaml"
    launch.write_text(yaml.safe_dump({"launch": [{"node": {"name": "n", "kind": "pipeline", "parameters": settings}}]}))
    from_launch = _from_flags("run", list(load_launch(launch).nodes[0].argv))
    expected = RunConfig(
        source="synthetic", queue="lossless",
        source_options=SourceOptions(width=320, fps=12.5, realtime=True),
        engine_options=EngineOptions(threads=2, precision="fp32"),
        publish_options=PublishOptions(endpoint="tcp://127.0.0.1:5591", encoding={"lane": "rle"}, obstacles=False),
    )
    assert from_file == from_flags == from_launch == expected
    flat = config_to_dict(expected)  # a composed config written back is flat keys again (reports, plans)
    assert {"width", "threads", "endpoint"} <= set(flat) and "source_options" not in flat
    assert load_config(RunConfig, flat, source="again") == expected
    with pytest.raises(ConfigError, match="unknown key 'source_options'"):  # a group is not a key: its settings are
        load_config(RunConfig, {"source_options": {"width": 320}}, source="node.yaml")


@pytest.mark.parametrize(("key", "typed", "core"), [
    ("threads", ["--threads", "300"], "threads=300 is out of range [0, 256]"),
    ("streams", ["--streams", "0"], "streams=0 is out of range [1, 8]"),
    ("streams", ["--streams", "9"], "streams=9 is out of range [1, 8]"),
    ("read_timeout_s", ["--read-timeout", "0.01"], "read_timeout_s=0.01 is out of range [0.1, 600]"),
    ("sndhwm", ["--sndhwm", "0"], "sndhwm=0 is out of range [1, 100000]"),
])
def test_a_range_error_in_an_option_group_names_the_flag_and_the_key(key, typed, core, tmp_path):
    with pytest.raises(ConfigError) as by_flag:
        _from_flags("run", typed)
    assert str(by_flag.value) == f"run: {core} ({' '.join(typed)})"
    value = yaml.safe_load(typed[1])
    with pytest.raises(ConfigError) as by_yaml:
        load_config(RunConfig, {key: value}, source="node.yaml")
    assert str(by_yaml.value) == f"node.yaml: {core}"
    assert _launch_error(tmp_path, "pipeline", {key: value}).endswith(f"node 'n': parameters: {core}")


@pytest.mark.parametrize("command", ["run", "demo", "view", "record", "listen"])
def test_duration_is_duration_s_everywhere_and_flag_stays_duration(command):
    cls = _config_class(command)
    assert "duration_s" in {f.name for f in dataclasses.fields(cls)}
    assert "duration" not in {f.name for f in dataclasses.fields(cls)}
    (flag,) = [f for f in flags(cls) if f.name == "duration_s"]
    assert flag.option == "--duration"


@pytest.mark.parametrize("command", ["view", "record"])
def test_old_duration_key_is_accepted_with_a_deprecation_warning(command, tmp_path, caplog):
    """``duration`` was the key of view and record launch nodes: it still works for one release."""
    extra = {"view": {"source": "synthetic", "model": "m.onnx"}, "record": {"out": "r.mcap", "namespace": "p/f"}}[command]
    path = tmp_path / "old.launch.yaml"
    path.write_text(yaml.safe_dump({"launch": [{"node": {"name": "n", "kind": command,
                                                          "parameters": {"duration": 3, **extra}}}]}))
    with caplog.at_level(logging.WARNING, logger="perception"):
        plan = load_launch(path)
    assert "--duration" in plan.nodes[0].argv and "3" in plan.nodes[0].argv
    assert "'duration' is deprecated" in caplog.text and "use 'duration_s'" in caplog.text
    with pytest.raises(ConfigError, match="'duration' is the deprecated name of 'duration_s'; give only 'duration_s'"):
        load_config(_config_class(command), {"duration": 1, "duration_s": 2, **extra}, source="x.yaml")


def test_replay_waits_seconds_under_an_honest_name(caplog, tmp_path):
    """replay's ``wait_subscriber`` (seconds) read like run's ``wait_subscribers`` (a count)."""
    replay = _from_flags("replay", ["a.mcap", "--wait-first-subscriber", "5"])
    assert replay.wait_first_subscriber_s == 5.0
    run = _from_flags("run", ["--wait-subscribers", "2"])
    assert run.publish_options.wait_subscribers == 2
    with caplog.at_level(logging.WARNING, logger="perception"):
        old = _from_flags("replay", ["a.mcap", "--wait-subscriber", "4"])
    assert old.wait_first_subscriber_s == 4.0
    assert "--wait-subscriber is deprecated" in caplog.text and "--wait-first-subscriber" in caplog.text
    caplog.clear()
    path = tmp_path / "replay.launch.yaml"
    path.write_text(yaml.safe_dump({"launch": [{"node": {"name": "r", "kind": "replay",
                                                          "parameters": {"file": "a.mcap", "wait_subscriber": 2}}}]}))
    with caplog.at_level(logging.WARNING, logger="perception"):
        plan = load_launch(path)
    assert list(plan.nodes[0].argv) == ["--wait-first-subscriber", "2", "--", "a.mcap"]
    assert "'wait_subscriber' is deprecated" in caplog.text
    with pytest.raises(ConfigError, match="unknown key 'wait_subscribers'"):
        load_config(_config_class("replay"), {"file": "a.mcap", "wait_subscribers": 1}, source="x")


def test_help_shows_the_declared_default_and_range():
    text = _parser("run").format_help()
    assert re.search(r"--read-timeout S\s+seconds a live source may stall before it is reopened\s+\(default 5,\s+0.1..600\)",
                     text)
    assert re.search(r"--width WIDTH\s+frame width to request .*\(16..16384\)", text, re.DOTALL)
    assert "{ort,openvino,auto,tensorrt,torch}" in text


def test_flag_text_that_does_not_parse_is_one_config_error():
    with pytest.raises(ConfigError, match=r"--encoding 'lane': expected NAME=VALUE, e\.g\. --encoding drivable=bitpack"):
        _from_flags("run", ["--encoding", "lane"])
    with pytest.raises(ConfigError, match=r"bad --size '360': expected HEIGHTxWIDTH"):
        flag_values(_config_class("export"), _parser("export").parse_args(["--size", "360"]))
    with pytest.raises(ConfigError, match=r"^record: --out is required"):
        _from_flags("record", ["--namespace", "perception/front"])


def test_listen_launch_node_is_checked_like_its_flags(tmp_path):
    launch = _launch_error(tmp_path, "listen", {"every": 0})
    with pytest.raises(ConfigError) as by_flag:
        _from_flags("listen", ["--every", "0"])
    assert _core(launch) == _core(str(by_flag.value)) == "every=0 is out of range: must be >= 1"


def test_no_module_reads_argparse_internals():
    """Launch flags are written from the declarations, not from ``parser._actions``."""
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "perception").rglob("*.py") if "._actions" in p.read_text()]
    assert offenders == []


def _doc_pages() -> list[Path]:
    """The README and the pages under docs/ it links to."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _readme_command_lines() -> list[tuple[str, str, list[str]]]:
    """(file:line, command, flags) of each ``perception <command> ...`` line in the code blocks of
    ``_doc_pages()``."""
    out = []
    for page in _doc_pages():
        in_code = False
        for number, line in enumerate(page.read_text().splitlines(), start=1):
            if line.startswith("```"):
                in_code = not in_code
                continue
            words = line.split("#")[0].split()
            if in_code and len(words) >= 2 and words[0] == "perception" and words[1] in SAMPLES:
                out.append((f"{page.name}:{number}", words[1], [w.split("=")[0] for w in words[2:] if w.startswith("--")]))
    return out


def test_readme_examples_use_only_declared_flags():
    """The README's command lines name flags the commands (generated from the declarations) accept."""
    helps = {command: _parser(command).format_help() for command in SAMPLES}
    lines = _readme_command_lines()
    assert len(lines) > 20
    unknown = [(number, command, flag) for number, command, words in lines for flag in words
               if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helps[command])]
    assert unknown == []


def test_the_readme_links_only_to_files_in_the_repository():
    """Every relative link of the README (and of the docs/ pages) names a file the repository has."""
    links = [(page, link) for page in _doc_pages()
             for link in re.findall(r"\]\((?!https?://|#)([^)#\s]+)", page.read_text())]
    assert any(link.startswith("docs/") for _, link in links)
    missing = [(page.name, link) for page, link in links if not (page.parent / link).exists()]
    assert missing == []


def test_the_readme_holds_the_generated_table_of_run_settings():
    from perception.flags import settings_markdown

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = settings_markdown(RunConfig)
    assert table in readme, "README's run settings table differs from the declarations; paste settings_markdown(RunConfig)"
    # one row per flag: the table covers every declared run setting, and a new one appears in it
    assert table.count("\n| `--") == len(flags(RunConfig))


def _bench(argv: list[str]):
    """The bench config that ``perception bench MODE ...`` builds from its flags."""
    from perception.bench.engine import EngineBenchConfig
    from perception.bench.pipeline import PipelineBenchConfig

    args = _parser("bench").parse_args(argv)
    cls = {"engine": EngineBenchConfig, "pipeline": PipelineBenchConfig}[args.bench_mode]
    return config_from_flags(cls, args, source=f"perception bench {args.bench_mode}")


def test_bench_flags_are_runs_declarations_with_comma_lists():
    """The bench's --engine/--precision/--provider/--threads/--warmup (and the pipeline bench's
    source and engine flags) are run's declarations: the same choices, range and message."""
    cfg = _bench(["engine", "--engine", "ort,openvino", "--precision", "fp32,bf16,int8", "--threads", "1,2",
                  "--threads", "4", "--batch", "1,4", "--fp16", "both", "--warmup", "15"])
    assert cfg.engines == ["ort", "openvino"] and cfg.precisions == ["fp32", "bf16", "int8"]
    assert cfg.threads == [1, 2, 4] and cfg.batches == [1, 4] and cfg.fp16 == (False, True) and cfg.warmup == 15
    run = {f.name: f for f in flags(RunConfig)}
    from perception.bench.engine import EngineBenchConfig
    from perception.bench.pipeline import PipelineBenchConfig

    engine_bench = {f.field.metadata.get("listed") or f.name: f for f in flags(EngineBenchConfig)}
    pipeline_bench = {f.name: f for f in flags(PipelineBenchConfig)}
    for name in ("engine", "precision", "provider", "threads", "streams", "warmup"):
        assert engine_bench[name].option == run[name].option
        assert engine_bench[name].field.metadata["bounds"] == run[name].field.metadata["bounds"]
        if name == "engine":  # run's help, and what the bench's own torch-tensorrt row is
            assert engine_bench[name].field.metadata["help"].startswith(run[name].field.metadata["help"] + "; ")
        elif name != "warmup":  # warm-up runs per configuration, not before a node's first frame
            assert engine_bench[name].field.metadata["help"] == run[name].field.metadata["help"]
    for name in ("engine", "precision", "provider", "threads", "streams", "fps", "width", "height", "loop",
                 "batch_timeout_ms"):
        assert pipeline_bench[name].option == run[name].option
        assert pipeline_bench[name].field.metadata["bounds"] == run[name].field.metadata["bounds"]
        assert pipeline_bench[name].field.metadata["help"] == run[name].field.metadata["help"]
    assert pipeline_bench["warmup"].option == run["warmup"].option  # its help adds what the baseline makes
    assert pipeline_bench["warmup"].field.metadata["bounds"] == run["warmup"].field.metadata["bounds"]


@pytest.mark.parametrize(("bench", "run"), [
    (["engine", "--threads", "1,300"], ["--threads", "300"]),
    (["pipeline", "--threads", "300"], ["--threads", "300"]),
    (["engine", "--streams", "1,9"], ["--streams", "9"]),
    (["pipeline", "--streams", "0"], ["--streams", "0"]),
    (["engine", "--engine", "ort,onnx"], ["--engine", "onnx"]),
    (["engine", "--precision", "int4"], ["--precision", "int4"]),
    (["pipeline", "--width", "8"], ["--width", "8"]),
])
def test_a_bad_bench_value_fails_like_the_same_run_flag(bench, run):
    with pytest.raises(ConfigError) as by_bench:
        _bench(bench)
    with pytest.raises(ConfigError) as by_run:
        _from_flags("run", run)
    core = re.compile(r"\w+(=\S+ is out of range( \[[^\]]*\]|: must be [<>]= \S+)|: '\w+' is not one of)")
    assert core.search(str(by_bench.value)).group(0) == core.search(str(by_run.value)).group(0)
    assert str(by_bench.value).endswith(f"({' '.join(bench[1:])})")  # and how it was typed


def test_a_comma_list_item_that_is_not_a_number_names_the_flag():
    with pytest.raises(ConfigError, match=r"argument --threads: invalid int value: 'x'"):
        _bench(["engine", "--threads", "1,x"])
    with pytest.raises(ConfigError, match=r"--threads ',': expected at least one value"):
        _bench(["engine", "--threads", ","])


def test_a_number_setting_takes_exponents_from_yaml_and_refuses_nan():
    """YAML 1.1 reads ``1e1`` (no dot) as a string, and NaN passes every range check unless refused."""
    assert load_config(SourceOptions, yaml.safe_load("fps: 1e1"), source="node.yaml").fps == 10.0
    for text in ("fps: .nan", "fps: nan", "fps: ten"):
        with pytest.raises(ConfigError, match=r"node.yaml: fps: expected a number"):
            load_config(SourceOptions, yaml.safe_load(text), source="node.yaml")


@pytest.mark.parametrize(
    ("argv", "word"),
    [
        (["replay", ""], "argument FILE: an empty value (an unset shell variable?)"),
        (["eval", "--model", "m.onnx", "--data", ""], "argument --data: an empty value"),
        (["replay", "x.mcap", "--rate", "nan"], "rate: expected a number, got nan"),
        (["synth", "--seed", "-1"], "seed=-1 is out of range"),
    ],
)
def test_empty_nan_and_negative_seed_values_are_one_line_before_anything_runs(argv, word, tmp_path, monkeypatch, capsys):
    from perception.cli import main as cli_main

    monkeypatch.chdir(tmp_path)
    try:
        code = cli_main(argv)
    except SystemExit as exc:  # argparse's own errors exit from inside the parser
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert word in err and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir())  # nothing written


# ---- YAML settings files: one reader (perception.yamlfile.parse_yaml) for --config, launch files and
# ---- class tables; error lines quote values cut short --------------------------------------------


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from perception.cli import main as cli_main

    try:
        code = cli_main(argv)
    except SystemExit as exc:  # argparse's own errors exit from inside the parser
        code = exc.code
    return code, capsys.readouterr().err


def _nested_aliases(levels: int) -> str:
    """A flow list whose aliases expand to 10**(levels + 1) values in a few hundred bytes."""
    items = ["&a0 [x,x,x,x,x,x,x,x,x,x]"] + [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "[" + ", ".join(items) + "]"


@pytest.mark.parametrize("where", ["launch", "config"])
def test_aliases_that_expand_to_millions_of_values_are_refused_at_once(where, tmp_path, capsys):
    # Six levels of ten: a million values from 300 bytes (eight levels took 1.77 GB and 25 s, and
    # printed a 580 MB error line).
    file = tmp_path / "laughs.yaml"
    if where == "launch":
        file.write_text(f"launch:\n  - arg: {{name: q, default: {_nested_aliases(6)}}}\n"
                        "  - node: {name: x, kind: listen, parameters: {endpoint: $(var q)}}\n")
        argv = ["launch", str(file), "--check"]
    else:
        file.write_text(f"source: {_nested_aliases(6)}\n")
        argv = ["run", "--config", str(file), "--model", str(tmp_path / "nope.onnx")]
    code, err = _cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1, err[:300]
    assert err == (f"perception: error: {file}: its aliases (*name) expand to more than 100,000 values or 10 MB "
                   "of text; write the values out or nest fewer aliases\n")


def test_aliases_of_one_long_string_are_bounded_by_text_and_long_values_by_the_command_line(tmp_path, capsys):
    """5,000 references to one 100 kB string printed a 500 MB launch plan (1.5 GB, exit 0); one
    200 kB parameter passed --check and then failed at start with an E2BIG traceback."""
    long = "rtsp://127.0.0.1:1/" + "x" * 100_000
    many = tmp_path / "many.yaml"
    many.write_text("launch:\n  - node: {name: x, kind: pipeline, parameters: {source: {c0: &s \"" + long + "\", "
                    + ", ".join(f"c{i}: *s" for i in range(1, 5000)) + "}}}\n")
    code, err = _cli(["launch", str(many), "--check"], capsys)
    assert code == 2 and "expand to more than 100,000 values or 10 MB of text" in err and len(err) < 300, err[:300]
    one = tmp_path / "one.yaml"
    one.write_text("launch:\n  - node: {name: x, kind: pipeline, parameters: {source: \"" + long + "x" * 100_000 + "\"}}\n")
    code, err = _cli(["launch", str(one), "--check"], capsys)
    assert code == 2 and "its parameters make a command line the system refuses" in err and len(err) < 400, err[:400]


def test_anchors_aliases_and_merge_keys_in_small_files_keep_working(tmp_path):
    file = tmp_path / "two.yaml"
    file.write_text(
        "launch:\n"
        # any free port each: three publishers on one endpoint are refused (the 2nd could not bind it)
        "  - node: {name: a, kind: pipeline, parameters: &common {source: synthetic, fps: 5, width: 96, height: 64,\n"
        "                                                       endpoint: 'tcp://127.0.0.1:*'}}\n"
        "  - node:\n"
        "      name: b\n"
        "      kind: pipeline\n"
        "      parameters:\n"
        "        <<: *common\n"
        "        width: 128\n"  # overrides the merged key: not a key given twice
        "  - node: {name: c, kind: pipeline, parameters: *common}\n"
    )
    a, b, c = load_launch(file).nodes
    any_port = {"endpoint": "tcp://127.0.0.1:*"}
    assert a.parameters == c.parameters == {"source": "synthetic", "fps": 5, "width": 96, "height": 64, **any_port}
    assert b.parameters == {"source": "synthetic", "fps": 5, "width": 128, "height": 64, **any_port}


@pytest.mark.parametrize("where", ["launch", "config"])
def test_a_key_given_twice_is_refused_naming_the_file_key_and_lines(where, tmp_path, capsys):
    file = tmp_path / "twice.yaml"
    if where == "launch":
        file.write_text("launch:\n  - node:\n      name: a\n      kind: pipeline\n      parameters:\n"
                        "        width: 640\n        height: 360\n        width: 320\n")
        argv, lines = ["launch", str(file), "--check"], "lines 6 and 8"
    else:
        file.write_text("width: 640\nheight: 360\nwidth: 320\n")
        argv, lines = ["run", "--config", str(file), "--model", str(tmp_path / "nope.onnx")], "lines 1 and 3"
    code, err = _cli(argv, capsys)
    assert code == 2
    assert err == f"perception: error: {file}: key 'width' is given twice ({lines}); keep one\n"


def test_a_class_table_with_a_key_given_twice_is_refused(tmp_path):
    from perception.datasets.folder import _read_class_table
    from perception.errors import DataError

    table = tmp_path / "classes.yaml"
    table.write_text("ignore_id: 255\nignore_id: 0\nclasses: []\n")
    with pytest.raises(DataError, match=r"^class table .*classes.yaml: key 'ignore_id' is given twice \(lines 1 and 2\)"):
        _read_class_table(table)


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("width: [" + ",".join(["1"] * 20_000) + "]", "width: expected an integer, got [1, 1, 1,"),
        ("camera_name: " + "x" * 200_000 + "!", "camera_name 'xxxx"),
        ("source: [" + "v" * 100_000 + ", b=x]", "source 'vvvv"),
        ("encoding: {" + "y" * 1000 + ": rle}", "unknown mask topic 'yyyy"),
    ],
)
def test_an_error_quotes_a_long_value_cut_short(text, quoted, tmp_path, capsys):
    file = tmp_path / "long.yaml"
    file.write_text(text + "\n")
    code, err = _cli(["run", "--config", str(file), "--model", str(tmp_path / "nope.onnx")], capsys)
    assert code == 2 and quoted in err and "..." in err
    assert err.count("\n") == 1 and len(err) < 400, err[:400]


def test_a_launch_error_quotes_a_long_value_cut_short(tmp_path, capsys):
    file = tmp_path / "long.yaml"
    file.write_text("launch:\n  - node: {name: x, kind: listen, parameters: {endpoint: [" + ",".join(["9"] * 20_000) + "]}}\n")
    code, err = _cli(["launch", str(file), "--check"], capsys)
    assert code == 2 and "endpoint: expected a string, got [9, 9, 9," in err
    assert err.count("\n") == 1 and len(err) < 400, err[:400]


# ---- the synthetic camera's size, checked with the other settings -----------------------------


def test_the_synthetic_cameras_size_range_is_in_the_help_and_checked_before_any_work(tmp_path, capsys):
    from perception.cli import main as cli_main

    with pytest.raises(SystemExit):
        cli_main(["run", "--help"])
    helptext = " ".join(capsys.readouterr().out.split())
    assert "the synthetic camera takes 64..1920" in helptext and "the synthetic camera takes 48..1080" in helptext
    missing = str(tmp_path / "nope.onnx")  # checked after the settings: its error would come first otherwise
    for argv in (["run", "--width", "37", "--height", "53", "--model", missing],
                 ["run", "--width", "16", "--height", "16384", "--model", missing],
                 ["bench", "pipeline", "--width", "16", "--height", "16", "--model", missing, "--out", str(tmp_path / "b")],
                 ["demo", "--width", "2000", "--model", missing, "--out-dir", str(tmp_path / "d")]):
        code, err = _cli(argv, capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert "is outside the synthetic camera's range (width 64..1920, height 48..1080)" in err, err
        if "16384" in argv:
            assert err.rstrip().endswith("(--width 16, --height 16384)"), err  # every flag the message names
    # a camera may be asked for sizes the synthetic world does not draw
    assert load_config(RunConfig, {"source": "/dev/video0", "width": 37, "height": 53}, source="x").source_options.width == 37
    file = tmp_path / "node.yaml"
    file.write_text("launch:\n  - node: {name: a, kind: pipeline, parameters: {source: synthetic, width: 32}}\n")
    with pytest.raises(ConfigError, match=r"node 'a': parameters: width=32 height=360 is outside the synthetic"):
        load_launch(file)


# ---- flags given twice -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "--tasks", "drivable", "--task", "drivable=road", "--task", "drivable=sky"],
         "--task: drivable is given twice (--task drivable=road, --task drivable=sky); "
         "give its classes once, e.g. --task drivable=road,sky"),
        (["eval", "--tasks", ",,,"], "--tasks ',,,' holds an empty task name; list names with single commas, "
                                     "e.g. --tasks drivable,lane, or give --tasks alone for every task"),
        (["eval", "--tasks", "drivable,,lane"], "--tasks 'drivable,,lane' holds an empty task name"),
        (["run", "--encoding", "lane=rle", "--encoding", "lane=png"],
         "--encoding: lane is given twice (--encoding lane=rle, --encoding lane=png); keep one"),
    ],
)
def test_a_task_or_encoding_given_twice_or_an_empty_task_name_is_refused(argv, message, tmp_path, capsys):
    missing = str(tmp_path / "nope.onnx")  # refused before the model is opened
    code, err = _cli([*argv, "--model", missing], capsys)
    assert code == 2 and err.count("\n") == 1
    if "given twice" in message:  # the flags' own parsing fails as argparse's errors do: command first, --help last
        assert err.startswith(f"perception: error: {argv[0]}: {message}"), err
        assert err.rstrip().endswith(f"; see 'perception {argv[0]} --help'"), err
    else:  # eval's check of the task names it was given
        assert err.startswith(f"perception: error: {message}"), err


def test_export_unknown_threshold_help_says_what_the_confidence_is():
    """Since the pool (2026-12-06) the confidence is not always the top class probability."""
    from perception.contracts import CONFIDENCE_POOL_TASK

    text = " ".join(_parser("export").format_help().split())
    assert "below this top-class probability" not in text
    assert ("pixels whose confidence is below P are unknown in the node; the confidence is the top class probability, "
            f"or the summed probability of the {CONFIDENCE_POOL_TASK} classes where one of them wins") in text


def _every_help() -> dict[str, str]:
    """``--help`` of every command and bench mode that has settings flags, by its prog."""
    from perception.cli import build_parser

    out = {}
    for command in ("run", "demo", "view", "record", "replay", "listen", "export", "train", "synth", "eval", "bench"):
        chosen = build_parser(command).subcommands.choices[command]
        for parser in [chosen, *(chosen.subcommands.choices.values() if chosen.subcommands else [])]:
            out[parser.prog] = parser.format_help()
    return out


def test_help_ranges_and_defaults_are_written_as_a_person_writes_them():
    """No ``1..2.68435e+08``, ``1..1e+07`` or ``3600.0``: integers as integers, no exponents."""
    helps = _every_help()
    for prog, text in helps.items():
        flat = " ".join(text.split())
        assert not re.search(r"\d\.?\d*e[+-]\d", flat), prog
        assert not re.search(r"(default|\.\.|>=|<=) ?-?\d+\.0\b", flat), prog
    flat = {prog: " ".join(text.split()) for prog, text in helps.items()}
    assert "(default 16777216, 1..268435456)" in flat["perception listen"]
    assert "(default 200, 1..10000000)" in flat["perception bench engine"]
    assert "(default 100, 0..1000000)" in flat["perception bench pipeline"]


def test_required_flags_say_so_in_help():
    flat = {prog: " ".join(text.split()) for prog, text in _every_help().items()}
    assert re.search(r"--checkpoint CHECKPOINT checkpoint \.pt written by 'perception train' \(required\)",
                     flat["perception export"])
    assert re.search(r"--out OUT ONNX file to write, e\.g\. model\.onnx \(required\)", flat["perception export"])
    assert re.search(r"--out OUT output \.mcap file .*\(required unless --recover\)", flat["perception record"])
    assert "(required" not in flat["perception run"]


def test_a_setting_whose_default_is_decided_elsewhere_shows_that_default():
    """bench pipeline's None and bench engine's empty list mean "the node's own default": shown as
    that default (run's declaration), not as nothing; a value flag's bool default in its own word."""
    flat = {prog: " ".join(text.split()) for prog, text in _every_help().items()}
    engine, pipeline = flat["perception bench engine"], flat["perception bench pipeline"]
    assert re.search(r"--provider \S+ where to run the model .*?are compared \(default auto\)", engine)
    assert re.search(r"--threads THREADS\[,\.\.\.\] .*? \(default 0, 0\.\.256\)", engine)
    assert re.search(r"--streams N\[,\.\.\.\] .*? \(default 1, 1\.\.8\)", engine)
    for flag, default in (("--provider", "auto"), ("--threads", "0"), ("--precision", "auto"), ("--streams", "1")):
        assert re.search(rf"{flag} \S+ [^(]*(\([^)]*\)[^(]*)*?\(default {default}\b", pipeline), flag
    assert re.search(r"--batch-timeout-ms MS .*?\(default \d", pipeline)
    assert re.search(r"--pretrained PATH\|imagenet\|none .*?\(random init\) \(default none\)", flat["perception train"])


def test_every_bench_mode_has_a_description():
    helps = _every_help()
    for mode in ("engine", "pipeline", "probe", "report"):
        text = helps[f"perception bench {mode}"]
        description = text.split("\n\n")[1]  # after the usage block
        assert not description.lstrip().startswith(("options:", "positional arguments:")), mode


def test_numbers_and_ranges_in_messages():
    from perception.config import number_text, out_of_range_text, range_text

    assert [number_text(v) for v in (268435456, 1e7, 3600.0, 0.001, 1e-5, 0.1)] == [
        "268435456", "10000000", "3600", "0.001", "0.00001", "0.1"]
    assert range_text(1, 268435456.0) == "1..268435456" and range_text(0.001, None) == ">= 0.001"
    assert out_of_range_text(0.0, 10.0) == " [0, 10]" and out_of_range_text(1, None) == ": must be >= 1"
    assert out_of_range_text(None, 5) == ": must be <= 5"


def test_a_settings_error_carries_its_setting_for_the_command_line():
    """load_config marks a range or type error with the setting and the message without its source,
    so the CLI can name the command and the flag (perception.flags.command_error)."""
    with pytest.raises(ConfigError) as caught:
        load_config(SourceOptions, {"width": 8}, source="train config")
    exc = caught.value
    assert (exc.setting, exc.source, exc.detail) == ("width", "train config", "width=8 is out of range [16, 16384]")
    with pytest.raises(ConfigError) as caught:
        load_config(SourceOptions, {"fps": "ten"}, source="x.yaml")
    assert (caught.value.setting, caught.value.detail) == ("fps", "fps: expected a number, got 'ten'")
