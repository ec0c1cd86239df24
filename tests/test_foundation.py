"""Contracts, typed config, registries and the CLI's error handling."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Literal

import pytest

from perception.config import bounds, load_config
from perception.contracts import ClassInfo, ClassTable
from perception.errors import ConfigError, ModelError
from perception.model_metadata import ModelMetadata
from perception.registry import Registry
from perception.synthetic import SYNTHETIC_CLASSES


@dataclasses.dataclass
class _Cfg:
    name: str
    lr: float = dataclasses.field(default=0.01, metadata=bounds(0.0, 1.0))
    steps: int = 10
    mode: Literal["latest", "lossless"] = "latest"
    size: tuple[int, int] = (360, 480)
    tags: list[str] = dataclasses.field(default_factory=list)
    note: str | None = None


def test_config_loads_and_coerces():
    cfg = load_config(_Cfg, {"name": "a", "lr": 1, "size": [240, 320], "tags": ["x"]}, source="t.yaml")
    assert cfg == _Cfg(name="a", lr=1.0, size=(240, 320), tags=["x"])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "a", "stpes": 3}, "t.yaml: unknown key 'stpes'; did you mean 'steps'?"),
        ({"name": "a", "lr": 2.0}, "t.yaml: lr=2.0 is out of range [0, 1]"),
        ({"name": "a", "mode": "fast"}, "t.yaml: mode: 'fast' is not one of 'latest', 'lossless'"),
        ({"name": "a", "steps": "ten"}, "t.yaml: steps: expected an integer, got 'ten'"),
        ({"lr": 0.1}, "t.yaml: missing required key 'name'"),
        ({"name": "a", "size": [1, 2, 3]}, "t.yaml: size: expected 2 values, got 3"),
    ],
)
def test_config_errors_name_the_key(data, message):
    with pytest.raises(ConfigError) as info:
        load_config(_Cfg, data, source="t.yaml")
    assert str(info.value) == message


def test_registry_unknown_name_lists_known():
    reg: Registry[int] = Registry("model")
    reg.register("segnet")(1)
    reg.register("bisenetv2")(2)
    with pytest.raises(ConfigError, match=r"unknown model 'bisenet3' \(did you mean 'bisenetv2'\?\); known: bisenetv2, segnet"):
        reg.get("bisenet3")


def test_class_table_validates_task_groups():
    with pytest.raises(ValueError, match="unknown classes"):
        ClassTable(classes=(ClassInfo(0, "road", (0, 0, 0)),), task_groups={"lane": ("paint",)})
    assert SYNTHETIC_CLASSES.task_ids("lane") == [SYNTHETIC_CLASSES.id_of("lane_marking")]
    for task in ("drivable", "lane", "obstacle"):
        assert SYNTHETIC_CLASSES.task_ids(task)


def test_metadata_round_trip_and_errors():
    meta = ModelMetadata(model_name="segnet", class_table=SYNTHETIC_CLASSES, input_hw=(96, 128), dataset="synthetic")
    again = ModelMetadata.from_json(meta.to_json())
    assert again == meta
    with pytest.raises(ModelError, match="m.onnx: metadata is not valid JSON"):
        ModelMetadata.from_json("{", source="m.onnx")
    with pytest.raises(ModelError, match="schema version 99"):
        ModelMetadata.from_json('{"schema_version": 99}', source="m.onnx")


def test_cli_runtime_commands_do_not_import_torch():
    code = (
        "import sys; from perception.cli import build_parser;"
        "[build_parser(c) for c in ('run', 'listen', 'inspect', 'keys', 'record', 'replay', 'view', 'demo')];"
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_cli_error_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "perception", "inspect", str(tmp_path / "missing.onnx")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("perception: error:") and "missing.onnx" in proc.stderr


def test_bad_flag_is_one_line_naming_the_command():
    proc = subprocess.run(
        [sys.executable, "-m", "perception", "synth", "--count", "abc"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "perception: error: synth: argument --count: invalid int value: 'abc'; see 'perception synth --help'\n"
    )
