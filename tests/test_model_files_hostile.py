"""Model files that lie or are incomplete (hunt 6a): what the user sees is one line naming the file and
the fix, a non-zero exit, and stats and ``inspect`` lines that say what runs.

- an INT8 sibling left from another model (``model.int8.onnx`` beside a new ``model.onnx``);
- external data (``model.onnx`` + ``model.onnx.data``): missing or short, the ONNX Runtime cache, upgrade;
- ONNX Runtime's load errors keep their cause (a too-new opset says so);
- control characters, a size past the cap and non-finite normalisation in the metadata;
- ``inspect`` on a graph without a confidence output, or whose argmax runs over another number of
  classes than its class table names;
- ``--precision fp32`` on an INT8 file: the stats say int8.

The files are the tiny test models (tests/tiny_models.py), built in tmp_path. The command-line cases
run as subprocesses, at most two at once, in one module fixture.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from tiny_models import tiny_metadata, write_brightness_model, write_upsampling_model

from perception import contracts
from perception.commands.inspect import format_description
from perception.contracts import ClassTable
from perception.engines import EngineOptions, load_engine
from perception.engines.base import backend_error_text, int8_differences
from perception.errors import ModelError
from perception.export import upgrade
from perception.modelfile import MAX_METADATA_BYTES, describe_model, read_model_metadata
from perception.onnxwire import ModelHeader
from perception.synthetic import SYNTHETIC_CLASSES

HW = (48, 64)
ASSETS = Path(__file__).resolve().parents[1] / "perception" / "assets"
RUN = "--duration 1 --width 64 --height 48 --endpoint tcp://127.0.0.1:*"


def set_metadata(path: Path, **changes) -> Path:
    """Rewrite the perception metadata of ``path``: JSON keys set to ``changes`` (raw, unvalidated)."""
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == contracts.METADATA_KEY:
            doc = json.loads(prop.value)
            doc.update(changes)
            prop.value = json.dumps(doc)
    onnx.save(model, str(path))
    return path


def with_external_data(model: Path, folder: Path, name: str = "m.onnx") -> Path:
    """``model`` saved again in ``folder`` with every weight in ``<name>.data`` beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / name
    onnx.save_model(onnx.load(str(model)), str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{name}.data", size_threshold=0)
    return out


def first_n_classes(n: int) -> ClassTable:
    classes = SYNTHETIC_CLASSES.classes[:n]
    names = {c.name for c in classes}
    groups = {task: tuple(m for m in members if m in names) for task, members in SYNTHETIC_CLASSES.task_groups.items()}
    return ClassTable(classes=classes, ignore_id=SYNTHETIC_CLASSES.ignore_id, task_groups={k: v for k, v in groups.items() if v})


# ------------------------------------------------------------------------------------------------
# The command line: one module fixture runs every case, two at a time
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile_models")
    # A new model.onnx copied over an old one, the old one's INT8 file left beside it.
    (root / "stale").mkdir()
    write_brightness_model(root / "stale" / "model.onnx", HW, metadata=tiny_metadata(HW, dataset="newroads"))
    write_brightness_model(root / "stale" / "model.int8.onnx", HW, metadata=tiny_metadata(HW, precision="int8"))
    # External data: complete, without its .data, with a cut .data.
    plain = write_upsampling_model(root / "plain.onnx", HW)
    with_external_data(plain, root / "ext")
    with_external_data(plain, root / "missing").with_name("m.onnx.data").unlink()
    short = with_external_data(plain, root / "short").with_name("m.onnx.data")
    short.write_bytes(short.read_bytes()[:100])
    # A metadata model name with a newline and a terminal escape; metadata past the cap.
    set_metadata(write_brightness_model(root / "ctrl.onnx", HW), model_name="a\nb\x1b[31mred")
    set_metadata(write_brightness_model(root / "huge.onnx", HW), unknown_rule="r" * (MAX_METADATA_BYTES + 1))
    # A graph stamped with an opset no ONNX Runtime knows.
    opset = onnx.load(str(write_brightness_model(root / "opset40.onnx", HW)))
    opset.opset_import[0].version = 40
    onnx.save(opset, str(root / "opset40.onnx"))
    # An INT8 file run at --precision fp32.
    write_brightness_model(root / "q.int8.onnx", HW, metadata=tiny_metadata(HW, precision="int8"))
    return root


#: name -> command line (shell words, {fx} the fixture folder)
CLI = {
    "run stale int8": f"-q run --model {{fx}}/stale/model.onnx --precision int8 {RUN}",
    "run missing data": f"-q run --model {{fx}}/missing/m.onnx {RUN}",
    "run short data": f"-q run --model {{fx}}/short/m.onnx --engine ort {RUN}",
    "inspect missing data": "inspect {fx}/missing/m.onnx",
    "inspect control name": "inspect {fx}/ctrl.onnx",
    "inspect huge metadata": "inspect {fx}/huge.onnx",
    "run opset 40": f"-q run --model {{fx}}/opset40.onnx {RUN}",
    "run ort fp32 on int8": f"run --model {{fx}}/q.int8.onnx --engine ort --precision fp32 {RUN}",
}


@pytest.fixture(scope="module")
def cli(fx) -> dict[str, subprocess.CompletedProcess]:
    def run(words: str) -> subprocess.CompletedProcess:
        args = [a.format(fx=fx) for a in shlex.split(words)]
        return subprocess.run([sys.executable, "-m", "perception", *args], capture_output=True, text=True, timeout=120,
                              cwd=fx)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(CLI, pool.map(run, CLI.values()), strict=True))


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The one stderr line of a refused start (exit 2, no traceback, no terminal escape)."""
    assert proc.returncode == ModelError.exit_code, proc.stderr
    assert "Traceback" not in proc.stderr and "\x1b" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("perception: error: "), proc.stderr
    return lines[0]


def test_a_stale_int8_sibling_is_refused_naming_both_files_and_the_fix(cli):
    line = one_error_line(cli["run stale int8"])
    assert "model.int8.onnx beside model.onnx was not quantised from it" in line
    assert "dataset 'newroads' / 'test'" in line
    assert "python -m perception.export.quantize" in line and "or remove" in line and "model.int8.onnx" in line


def test_missing_or_short_external_data_is_one_line_naming_the_data_file(cli):
    line = one_error_line(cli["run missing data"])
    assert "m.onnx keeps its weights in m.onnx.data beside it" in line and "is missing" in line
    assert "copy m.onnx.data into" in line and "re-export" in line.split("is missing")[1]
    line = one_error_line(cli["run short data"])
    assert "m.onnx.data is too short (100 bytes" in line and "ONNXRuntimeError" not in line
    line = one_error_line(cli["inspect missing data"])
    assert "m.onnx.data is missing" in line and cli["inspect missing data"].stdout == ""


def test_control_characters_in_the_metadata_are_refused_naming_the_field(cli):
    line = one_error_line(cli["inspect control name"])  # inspect reads with onnx, the node without: both below
    assert "ctrl.onnx: metadata field model_name holds a control character ('a\\nb\\x1b[31mred')" in line
    assert "\x1b" not in cli["inspect control name"].stdout


def test_metadata_over_the_cap_is_refused_before_it_is_printed(cli):
    line = one_error_line(cli["inspect huge metadata"])
    assert f"huge.onnx: its perception metadata is 1.0 MB, more than the {MAX_METADATA_BYTES} bytes" in line
    assert cli["inspect huge metadata"].stdout == ""


def test_a_too_new_opset_says_so_and_names_the_fix(cli):
    line = one_error_line(cli["run opset 40"])
    assert "cannot load opset40.onnx: its opset ai.onnx 40 is newer than this ONNX Runtime supports (up to opset" in line
    assert "or upgrade onnxruntime" in line and ".h:" not in line and "onnxruntime::" not in line


def test_fp32_asked_of_an_int8_file_warns_and_the_stats_say_int8(cli):
    proc = cli["run ort fp32 on int8"]
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats["engine"] == "ort" and stats["precision"] == "int8"
    warned = [ln for ln in proc.stderr.splitlines() if " W " in ln and "--precision fp32" in ln]
    assert len(warned) == 1 and "q.int8.onnx is an INT8 model" in warned[0] and "runs it in INT8" in warned[0]


# ------------------------------------------------------------------------------------------------
# INT8 siblings
# ------------------------------------------------------------------------------------------------


def test_int8_differences_see_another_model_but_not_what_tools_add_to_one_file():
    fp32 = tiny_metadata(HW, val_metrics={"miou": 0.5})
    int8 = dataclasses.replace(fp32, precision="int8", created_utc="later", tool_versions={"onnx": "9"},
                               val_metrics={"miou": 0.5, "int8_gate": {"passed": True}})
    assert int8_differences(fp32, int8) == []
    # export.unknown adds the confidence output and threshold to the FP32 file only; export.batch one file at a time.
    later = dataclasses.replace(fp32, has_confidence=True, unknown_threshold=0.5, unknown_rule="r", dynamic_batch=True,
                                real_road_check={"data": "camvid"})
    assert int8_differences(later, int8) == []
    assert int8_differences(dataclasses.replace(fp32, val_metrics={"miou": 0.6}), int8) == [
        "the checkpoint's validation figures differ (another training run)"]
    assert int8_differences(dataclasses.replace(fp32, input_hw=(96, 128)), int8) == ["input 96x128 / 48x64"]
    assert int8_differences(dataclasses.replace(fp32, class_table=first_n_classes(6)), int8) == [
        f"6 / {SYNTHETIC_CLASSES.num_classes} classes"]
    assert int8_differences(fp32, dataclasses.replace(int8, precision="fp32")) == ["precision 'fp32' in the INT8 file"]


def test_the_shipped_int8_file_is_its_fp32_model_s_sibling():
    assert int8_differences(read_model_metadata(ASSETS / "default.onnx"), read_model_metadata(ASSETS / "default.int8.onnx")) == []


def test_engines_refuse_a_stale_sibling_and_auto_runs_without_it(tmp_path, caplog):
    model = write_brightness_model(tmp_path / "m.onnx", HW, metadata=tiny_metadata(HW, model_name="new"))
    write_brightness_model(tmp_path / "m.int8.onnx", HW, metadata=tiny_metadata(HW, precision="int8"))
    with pytest.raises(ModelError, match=r"m\.int8\.onnx beside m\.onnx was not quantised from it \(m\.onnx / m\.int8\.onnx: "
                                         r"model_name 'new' / 'tiny'\)"):
        load_engine("ort", model, EngineOptions(provider="cpu", threads=1, precision="int8"))
    from perception.engines import auto as auto_mod

    # --engine auto: the stale file is no candidate at all, said once; a forced int8 is the error.
    with caplog.at_level(logging.WARNING, logger="perception.engines.auto"):
        selection = auto_mod.select_engine(model, EngineOptions(threads=1), cache_dir=tmp_path / "probe")
    assert selection.precision != "int8" and not [r for r in selection.results if r.label.endswith("int8")]
    assert caplog.text.count("--engine auto leaves out INT8: ") == 1 and "was not quantised from it" in caplog.text
    assert "--precision" not in caplog.text  # a flag nobody typed (verify 7)
    with pytest.raises(ModelError, match="was not quantised from it"):
        auto_mod.cpu_candidates(model, EngineOptions(threads=1, precision="int8"))


# ------------------------------------------------------------------------------------------------
# External data
# ------------------------------------------------------------------------------------------------


def test_external_data_models_skip_the_ort_cache_and_run_new_weights(tmp_path, monkeypatch, caplog):
    """The optimised-graph cache could not find the weights file (a 'damaged cache' warning at every
    start) and its key, the .onnx bytes, does not change with new weights: such models skip it."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("PERCEPTION_ORT_CACHE", str(cache))
    model = with_external_data(write_upsampling_model(tmp_path / "a.onnx", HW), tmp_path / "ext")
    other = write_upsampling_model(tmp_path / "b.onnx", HW)
    weights = onnx.load(str(other))
    w = next(t for t in weights.graph.initializer if t.name == "weight")
    w.CopyFrom(onnx.numpy_helper.from_array(-onnx.numpy_helper.to_array(w), "weight"))
    onnx.save(weights, str(other))
    same_layout = with_external_data(other, tmp_path / "ext_b")
    assert same_layout.read_bytes() == model.read_bytes()  # only the .data differs
    batch = np.random.default_rng(0).integers(0, 256, (1, *HW, 3), dtype=np.uint8)
    with caplog.at_level(logging.DEBUG, logger="perception.engines.ort"):
        first = [load_engine("ort", model, EngineOptions(provider="cpu", threads=1)).infer(batch)["class_ids"]
                 for _ in range(2)]
        (model.parent / "m.onnx.data").write_bytes((same_layout.parent / "m.onnx.data").read_bytes())
        second = load_engine("ort", model, EngineOptions(provider="cpu", threads=1)).infer(batch)["class_ids"]
    assert np.array_equal(first[0], first[1]) and not np.array_equal(first[0], second)
    assert not any(r.levelno >= logging.WARNING for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert sum("no optimised-graph cache for m.onnx: its weights are in m.onnx.data" in r.getMessage()
               for r in caplog.records) == 3
    assert not cache.exists() or not any(cache.iterdir())


def test_inspect_names_the_external_weights_file_and_its_size(tmp_path):
    model = with_external_data(write_upsampling_model(tmp_path / "a.onnx", HW), tmp_path / "ext")
    head = format_description(describe_model(model))[0]
    size = (model.parent / "m.onnx.data").stat().st_size
    assert f" + {size / 1e6:.2f} MB of weights in m.onnx.data," in head
    assert describe_model(model).to_dict()["external_data"] == {str(model.parent / "m.onnx.data"): size}


def test_external_data_outside_the_model_s_folder_is_refused(tmp_path):
    model = with_external_data(write_upsampling_model(tmp_path / "a.onnx", HW), tmp_path / "ext")
    proto = onnx.load(str(model), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../elsewhere.data"
    onnx.save(proto, str(model))
    with pytest.raises(ModelError, match=r"m\.onnx: weight '.*' is stored in '\.\./elsewhere\.data', which is not a file "
                                         r"name inside the model's folder"):
        read_model_metadata(model)


def test_upgrade_copies_the_weights_file_with_the_model_and_refuses_a_missing_one(tmp_path, capsys):
    model = with_external_data(write_upsampling_model(tmp_path / "a.onnx", HW), tmp_path / "ext")
    out = tmp_path / "up" / "copy.onnx"
    assert upgrade.main([str(model), "--out", str(out)]) == 0
    assert "copied it to" in capsys.readouterr().out and (out.parent / "m.onnx.data").is_file()
    batch = np.random.default_rng(1).integers(0, 256, (1, *HW, 3), dtype=np.uint8)
    options = EngineOptions(provider="cpu", threads=1)
    assert np.array_equal(load_engine("ort", out, options).infer(batch)["class_ids"],
                          load_engine("ort", model, options).infer(batch)["class_ids"])
    # Another model's weights file where the copy's would go: nothing overwritten.
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "m.onnx.data").write_bytes(b"another model's weights")
    assert upgrade.main([str(model), "--out", str(tmp_path / "busy" / "copy.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already there with other data" in err
    assert not (tmp_path / "busy" / "copy.onnx").exists()
    assert (tmp_path / "busy" / "m.onnx.data").read_bytes() == b"another model's weights"
    # Its weights file missing: one line, no traceback (onnx's ValidationError was not caught).
    (model.parent / "m.onnx.data").unlink()
    assert upgrade.main([str(model), "--out", str(tmp_path / "up2" / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "m.onnx.data is missing" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------
# ONNX Runtime's error text
# ------------------------------------------------------------------------------------------------


def test_backend_error_text_drops_source_locations_and_signatures_and_keeps_the_cause():
    opset = RuntimeError(
        "[ONNXRuntimeError] : 1 : FAIL : Load model from m.onnx failed:/onnxruntime_src/onnxruntime/core/graph/"
        "model_load_utils.h:46 void onnxruntime::model_load_utils::ValidateOpsetForDomain(const std::unordered_map<"
        "std::__cxx11::basic_string<char>, int>&, const onnxruntime::logging::Logger&, bool, const std::string&, int) "
        "ONNX Runtime only *guarantees* support for models stamped with official released onnx opset versions. "
        "Opset 40 is under development. Current official support for domain ai.onnx is till opset 28.\n")
    assert backend_error_text(opset) == (
        "Load model from m.onnx failed: ONNX Runtime only *guarantees* support for models stamped with official "
        "released onnx opset versions. Opset 40 is under development. Current official support for domain ai.onnx "
        "is till opset 28.")
    short = RuntimeError(
        "[ONNXRuntimeError] : 1 : FAIL : Exception during initialization: /onnxruntime_src/onnxruntime/core/optimizer/"
        "initializer.cc:79 onnxruntime::Initializer::Initializer(const onnxruntime::Graph&, const onnx::TensorProto&, "
        "const std::filesystem::__cxx11::path&, bool) [ONNXRuntimeError] : 1 : FAIL : tensorprotoutils.cc:2201 "
        "GetExtDataFromTensorProto External initializer: w offset: 2738432 size to read: 301056 given file_length: "
        "3000000 are out of bounds or can not be read in full.\n")
    assert backend_error_text(short) == (
        "Exception during initialization: External initializer: w offset: 2738432 size to read: 301056 given "
        "file_length: 3000000 are out of bounds or can not be read in full.")
    assert backend_error_text(RuntimeError("x" * 400)).endswith("...") and len(backend_error_text(RuntimeError("x" * 400))) == 300


# ------------------------------------------------------------------------------------------------
# Metadata: control characters, size, normalisation
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "field"), [
    ({"dataset": "road\u2028s"}, "dataset"),
    ({"unknown_rule": "tab\there"}, "unknown_rule"),
    ({"val_metrics": {"per_class_iou": {"ro\x85ad": 0.5}}}, r"val_metrics\.per_class_iou \(a key\)"),
])
def test_control_characters_anywhere_in_the_metadata_are_refused(tmp_path, changes, field):
    path = set_metadata(write_brightness_model(tmp_path / "m.onnx", HW), **changes)
    with pytest.raises(ModelError, match=rf"m\.onnx: metadata field {field} holds a control character"):
        read_model_metadata(path)
    with pytest.raises(ModelError, match=rf"m\.onnx: metadata field {field} holds a control character"):
        describe_model(path)


def test_a_control_character_in_a_class_name_is_refused(tmp_path):
    path = write_brightness_model(tmp_path / "m.onnx", HW)
    table = SYNTHETIC_CLASSES.to_dict()
    table["classes"][3]["name"] = "bu\x1bilding"
    table["task_groups"] = {}
    set_metadata(path, class_table=table)
    with pytest.raises(ModelError, match=r"metadata field class_table\.classes\[3\]\.name holds a control character "
                                         r"\('bu\\x1bilding'\)"):
        read_model_metadata(path)


def test_the_metadata_cap_leaves_room_for_any_exported_model():
    """Measured on the shipped models: 2.6 and 3.8 kB, against the 1 MiB cap."""
    for name in ("default.onnx", "default.int8.onnx"):
        size = len(ModelHeader.read(ASSETS / name).props[contracts.METADATA_KEY].encode())
        assert 1000 < size < MAX_METADATA_BYTES / 100


@pytest.mark.parametrize(("mean", "std", "word"), [
    (["NaN", "Infinity", 1e308], [0.2, 0.2, 0.2], "mean"),
    ([0.5, 0.5, 0.5], [0, 0, 0], "std"),
])
def test_normalisation_that_is_not_numbers_is_refused(tmp_path, mean, std, word):
    path = write_brightness_model(tmp_path / "m.onnx", HW)
    model = onnx.load(str(path))  # json.dumps would refuse NaN: written as the tester wrote it
    prop = next(p for p in model.metadata_props if p.key == contracts.METADATA_KEY)
    doc = json.loads(prop.value)
    prop.value = json.dumps({**doc, "mean": [float(v) for v in mean], "std": std})
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match=rf"m\.onnx: metadata {word} \[.*\] is not three (finite|positive) numbers"):
        read_model_metadata(path)


# ------------------------------------------------------------------------------------------------
# inspect says what the node does
# ------------------------------------------------------------------------------------------------


def test_inspect_warns_of_an_opset_newer_than_the_installation_knows(fx):
    lines = format_description(describe_model(fx / "opset40.onnx"))
    assert lines[1].startswith("warning    opset ai.onnx 40 is newer than any this installation knows (up to ")
    assert not any(line.startswith("warning") for line in format_description(describe_model(fx / "q.int8.onnx")))


def test_inspect_says_unknown_marking_is_off_without_a_confidence_output(tmp_path):
    path = write_brightness_model(tmp_path / "m.onnx", HW, metadata=tiny_metadata(HW, unknown_threshold=0.5529))
    lines = format_description(describe_model(path))
    assert ("unknown    marking off: no confidence output; its stored threshold 0.5529 is not used "
            "(perception export --confidence adds it)") in lines
    assert not any("below confidence" in line for line in lines)


@pytest.mark.parametrize("logit_bias", [False, True])
def test_inspect_warns_when_the_class_table_is_smaller_than_the_graph_s_classes(tmp_path, logit_bias):
    meta = tiny_metadata(HW, class_table=first_n_classes(6))
    path = write_upsampling_model(tmp_path / "m.onnx", HW, logit_bias=logit_bias)
    model = onnx.load(str(path))
    helper.set_model_props(model, {contracts.METADATA_KEY: meta.to_json()})
    onnx.save(model, str(path))
    description = describe_model(path)
    assert description.graph_classes == SYNTHETIC_CLASSES.num_classes  # from the Conv's weight: no shapes stored
    last = SYNTHETIC_CLASSES.num_classes - 1
    assert (f"warning    the graph's argmax runs over {last + 1} classes, its class table names 6: the node publishes "
            f"class ids 6..{last} as unknown (255); the metadata is another model's: re-export the model"
            ) in format_description(description)


def test_inspect_warns_when_the_class_table_is_larger_than_the_graph_s_classes(tmp_path):
    path = write_upsampling_model(tmp_path / "m.onnx", HW)
    model = onnx.load(str(path))
    weight = next(t for t in model.graph.initializer if t.name == "weight")
    weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight)[:4], "weight"))
    bias = next(t for t in model.graph.initializer if t.name == "bias")
    bias.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(bias)[:4], "bias"))
    model = onnx.shape_inference.infer_shapes(model)  # the shapes an export stores
    onnx.save(model, str(path))
    lines = format_description(describe_model(path))
    assert any(line.startswith("warning    the graph's argmax runs over 4 classes, its class table names "
                               f"{SYNTHETIC_CLASSES.num_classes}: classes 4..{SYNTHETIC_CLASSES.num_classes - 1} never appear")
               for line in lines), lines
    assert not any(line.startswith("warning") for line in format_description(describe_model(ASSETS / "default.onnx")))


# ------------------------------------------------------------------------------------------------
# --precision fp32 on an INT8 file: what runs is said
# ------------------------------------------------------------------------------------------------


def test_openvino_fp32_on_an_int8_file_says_int8(tmp_path, caplog):
    pytest.importorskip("openvino")
    path = write_brightness_model(tmp_path / "m.int8.onnx", HW, metadata=tiny_metadata(HW, precision="int8"))
    with caplog.at_level(logging.WARNING, logger="perception.engines.openvino"):
        engine = load_engine("openvino", path, EngineOptions(threads=1, precision="fp32"))
    assert engine.precision == "int8" and engine.provider == "CPU-int8"
    assert any("--precision fp32: m.int8.onnx is an INT8 model" in r.getMessage() and "run its FP32 model (m.onnx)"
               in r.getMessage() for r in caplog.records)
    plain = write_brightness_model(tmp_path / "f.onnx", HW, metadata=tiny_metadata(HW))
    assert load_engine("openvino", plain, EngineOptions(threads=1, precision="fp32")).precision == "fp32"


def test_a_tensorrt_engine_s_json_sidecar_gets_the_model_file_checks(tmp_path):
    """A prebuilt ``.engine`` with a ``.json`` sidecar: its metadata is read as a model's own is
    (size cap, control characters, normalisation), not trusted as it is."""
    from perception.engines.tensorrt import metadata_for_engine_file

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not read here")
    sidecar = tmp_path / "m.json"
    sidecar.write_text(tiny_metadata(HW).to_json())
    assert metadata_for_engine_file(engine).model_name == "tiny"
    sidecar.write_text(tiny_metadata(HW, model_name="a\nb\x1b[31m").to_json())
    with pytest.raises(ModelError, match=r"m\.json.*model_name holds a control character"):
        metadata_for_engine_file(engine)
    sidecar.write_text(" " * (2 << 20))
    with pytest.raises(ModelError, match=r"m\.json is 2\.1 MB, more than the 1048576 bytes"):
        metadata_for_engine_file(engine)


def test_inspect_escapes_the_producer_and_does_not_promise_marking_a_file_cannot_do(tmp_path):
    """Verify 7: the graph's producer name (not checked metadata) reached the terminal raw; and a
    file without a confidence output still described its real-road figures as the node's masks
    with unknown marking."""
    from perception.commands.inspect import format_description
    from perception.modelfile import describe_model

    model = onnx.load(str(ASSETS / "default.onnx"))
    model.producer_name = "evil\n12:00:00 E fake\x1b[31m"
    keep = [o for o in model.graph.output if o.name != "confidence"]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    for prop in model.metadata_props:  # the graph without its confidence output says so (the threshold kept)
        if prop.key == "perception.metadata":
            doc = json.loads(prop.value)
            doc["has_confidence"] = False
            prop.value = json.dumps(doc)
    path = tmp_path / "odd.onnx"
    onnx.save(model, str(path))
    lines = format_description(describe_model(path))
    text = "\n".join(lines)
    assert "\x1b" not in text and "\n12:00:00" not in text and "evil\\n12:00:00" in lines[0]
    assert "the node's masks: unknown below" not in text and "which this file cannot do" in text
    assert any(line.startswith("unknown    marking off: no confidence output") for line in lines)
