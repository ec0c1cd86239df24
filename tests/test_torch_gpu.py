"""The torch engine's GPU paths: --compile tensorrt, GPU-resident pre/post-processing, CUDA graphs.

Here (no GPU): the one-line errors when CUDA or Torch-TensorRT is absent, and the GPU-resident
``infer_frames`` path run on the CPU against the CPU pipeline's letterbox and mask tables. The
``gpu``-marked tests run the same checks on CUDA (skipped with a reason without one).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from perception.cli import main as cli_main  # noqa: E402
from perception.engines import EngineOptions, load_engine  # noqa: E402
from perception.errors import ConfigError, DependencyError  # noqa: E402
from perception.masks import task_lut  # noqa: E402
from perception.models import build_model  # noqa: E402
from perception.preprocess import Preprocessor  # noqa: E402
from perception.synthetic import SYNTHETIC_CLASSES, SyntheticDrive  # noqa: E402
from perception.training.checkpoint import Checkpoint, save_checkpoint  # noqa: E402

HW = (96, 128)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """BiSeNet V2 at width 0.25 with BatchNorm statistics from a few passes (untrained weights:
    the class ids are arbitrary but deterministic, which is all these comparisons need)."""
    torch.manual_seed(0)
    model = build_model("bisenetv2", num_classes=SYNTHETIC_CLASSES.num_classes, width=0.25)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 3, *HW))
    ckpt = Checkpoint(model_name="bisenetv2", model_kwargs={"width": 0.25}, class_table=SYNTHETIC_CLASSES,
                      input_hw=HW, state_dict=model.eval().state_dict(), dataset="synthetic")
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", ckpt)


def _frames(count: int, height: int = 120, width: int = 200) -> np.ndarray:
    drive = SyntheticDrive(seed=3, height=height, width=width, fps=30)
    return np.stack([drive.next_frame()[0] for _ in range(count)])


def _luts() -> dict[str, np.ndarray]:
    table = SYNTHETIC_CLASSES
    return {"drivable": task_lut([table.names.index("road"), table.names.index("lane_marking")]),
            "obstacle": task_lut([table.names.index(n) for n in ("car", "pedestrian", "cyclist")])}


def test_compile_tensorrt_without_cuda_is_one_line_exit_3(checkpoint, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = cli_main(["run", "--engine", "torch", "--model", str(checkpoint), "--compile", "tensorrt", "--max-frames", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 3
    assert err == "perception: error: --compile tensorrt needs a CUDA GPU and PyTorch sees none here; drop --compile tensorrt"


def test_compile_tensorrt_without_torch_tensorrt_is_one_line_exit_3(checkpoint, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # pretend: the package check comes next
    monkeypatch.setitem(sys.modules, "torch_tensorrt", None)  # import torch_tensorrt -> ImportError
    code = cli_main(["run", "--engine", "torch", "--model", str(checkpoint), "--compile", "tensorrt", "--max-frames", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 3 and err.count("\n") == 0
    assert err.startswith("perception: error: --compile tensorrt needs Torch-TensorRT: pip install -e '.[gpu]' --extra-index-url https://pypi.nvidia.com")


def test_compile_is_checked_before_anything_runs(checkpoint, capsys):
    code = cli_main(["run", "--engine", "ort", "--compile", "tensorrt", "--max-frames", "1"])
    assert code == 2
    assert "--compile tensorrt applies to --engine torch" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"unknown --compile 'tvm'; known: none, tensorrt"):
        EngineOptions(compile="tvm")
    with pytest.raises(ConfigError, match="runs on CUDA; drop --provider cpu"):
        load_engine("torch", checkpoint, EngineOptions(provider="cpu", compile="tensorrt"))


def test_bench_has_a_torch_tensorrt_row_that_fails_in_one_line_here(checkpoint, monkeypatch):
    from perception.bench.cases import open_engine
    from perception.bench.engine import ENGINE_SUFFIXES

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ENGINE_SUFFIXES["torch-tensorrt"] == ENGINE_SUFFIXES["torch"]
    with pytest.raises(DependencyError, match="--engine torch-tensorrt needs a CUDA GPU .*drop torch-tensorrt from --engine"):
        open_engine(checkpoint, "torch-tensorrt")


def test_cpu_path_is_unchanged_and_gpu_resident_path_matches_it_on_the_cpu(checkpoint):
    engine = load_engine("torch", checkpoint, EngineOptions(provider="cpu"))
    assert engine.provider == "torch-cpu-fp32" and not engine.cuda
    frames = _frames(2)
    pre = Preprocessor(HW)
    luts = _luts()
    result = engine.infer_frames(frames, luts)
    assert set(result["masks"]) == set(luts)
    agree = []
    for i, frame in enumerate(frames):
        reference = engine.infer(pre(frame).copy())
        ids = result["class_ids"][i]
        assert ids.shape == HW and ids.dtype == np.uint8 and result["confidence"][i].shape == HW
        agree.append(float(np.mean(ids == reference["class_ids"][0])))
        for name, lut in luts.items():  # the mask lookup on the device equals the CPU table lookup
            np.testing.assert_array_equal(result["masks"][name][i], lut[ids])
    # The torch bilinear resize and cv2's differ by rounding on a few pixels only.
    assert min(agree) >= 0.98, agree
    assert result["letterbox"] == pre.letterbox


def test_infer_frames_rejects_a_bad_batch(checkpoint):
    engine = load_engine("torch", checkpoint, EngineOptions(provider="cpu"))
    with pytest.raises(ConfigError, match="uint8 N x H x W x 3"):
        engine.infer_frames(np.zeros((120, 200, 3), np.uint8))


@pytest.mark.gpu
@pytest.mark.parametrize("fp16", [False, True])
def test_cuda_graph_path_matches_the_cpu(checkpoint, fp16):
    cpu = load_engine("torch", checkpoint, EngineOptions(provider="cpu"))
    gpu = load_engine("torch", checkpoint, EngineOptions(provider="cuda", fp16=fp16))
    batch = Preprocessor(HW)(_frames(1)[0]).copy()
    expected = cpu.infer(batch)["class_ids"]
    first = gpu.infer(batch)
    assert gpu._graph is not None, "the batch-1 step should run as a CUDA graph"
    again = gpu.infer(batch)
    np.testing.assert_array_equal(first["class_ids"], again["class_ids"])  # replay is deterministic
    assert float(np.mean(first["class_ids"] == expected)) >= (0.97 if fp16 else 0.995)
    two = gpu.infer(np.concatenate([batch, batch]))  # other batch sizes run eagerly
    assert two["class_ids"].shape == (2, *HW)


@pytest.mark.gpu
def test_gpu_resident_pre_and_post_processing_matches_the_cpu(checkpoint):
    cpu = load_engine("torch", checkpoint, EngineOptions(provider="cpu"))
    gpu = load_engine("torch", checkpoint, EngineOptions(provider="cuda"))
    frames = _frames(2)
    on_cpu, on_gpu = cpu.infer_frames(frames, _luts()), gpu.infer_frames(frames, _luts())
    assert float(np.mean(on_cpu["class_ids"] == on_gpu["class_ids"])) >= 0.995
    for name in on_cpu["masks"]:
        assert float(np.mean(on_cpu["masks"][name] == on_gpu["masks"][name])) >= 0.995


@pytest.mark.parametrize(("version", "half"), [("10.13.3", True), ("11.4.0", True), ("11.4.0", False)])
def test_compile_tensorrt_follows_the_tensorrt_major(monkeypatch, tmp_path, version, half):
    """Stand-in torch_tensorrt / tensorrt modules: which keywords reach torch_tensorrt.compile."""
    import types

    from perception.engines.torch import compile_tensorrt

    calls = []

    def dynamo_compile(exported_program, inputs=None, *, arg_inputs=None, engine_cache_dir="", **kwargs):
        raise AssertionError("only its signature is read")

    def compile_(module, **kwargs):
        calls.append(kwargs)
        return module

    fake_trt = types.SimpleNamespace(__version__=version)
    fake = types.SimpleNamespace(__version__="2.12.0", compile=compile_, dynamo=types.SimpleNamespace(compile=dynamo_compile))
    monkeypatch.setitem(sys.modules, "tensorrt", fake_trt)
    monkeypatch.setitem(sys.modules, "torch_tensorrt", fake)
    monkeypatch.setenv("PERCEPTION_TRT_CACHE", str(tmp_path / "trt"))
    model = torch.nn.Conv2d(3, 4, 1)
    compiled, dtype = compile_tensorrt(model, torch.zeros(1, 3, 8, 8), half=half)
    kwargs = calls[0]
    assert kwargs["ir"] == "dynamo" and kwargs["cache_built_engines"] and kwargs["reuse_cached_engines"]
    assert kwargs["engine_cache_dir"] == str(tmp_path / "trt" / "torch_tensorrt")
    if version.startswith("10."):
        assert kwargs["enabled_precisions"] == {torch.float16} and "use_explicit_typing" not in kwargs
        assert dtype == torch.float32 and compiled.weight.dtype == torch.float32
    else:  # strongly typed: no precision set, the graph's own types decide
        assert kwargs["use_explicit_typing"] is True and "enabled_precisions" not in kwargs
        want = torch.float16 if half else torch.float32
        assert dtype == want and compiled.weight.dtype == want and kwargs["arg_inputs"][0].dtype == want
