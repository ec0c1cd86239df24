"""The export chain: every model exports and passes the ORT-vs-PyTorch gate, INT8 stays within its
mIoU budget, metadata survives the file, and the TensorRT engine cache keys on what matters."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import sys

import cv2
import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

import blocks  # noqa: E402

from perception.cli import main as cli_main  # noqa: E402
from perception.contracts import INPUT_NAME, ONNX_OPSET, OUTPUT_CLASS_IDS, OUTPUT_CONFIDENCE, confidence_pool  # noqa: E402
from perception.engines.cache import EngineCache, engine_key  # noqa: E402
from perception.errors import DependencyError  # noqa: E402
from perception.export import ExportConfig, int8_path_for, run_export  # noqa: E402
from perception.export.graph import with_logits_output  # noqa: E402
from perception.export.onnx import ExportWrapper, export_onnx, prepare_model  # noqa: E402
from perception.export.quantize import io_nodes_to_exclude  # noqa: E402
from perception.export.verify import verify_onnx  # noqa: E402
from perception.model_metadata import ModelMetadata  # noqa: E402
from perception.modelfile import read_model_metadata  # noqa: E402
from perception.models import build_model, model_names  # noqa: E402
from perception.synthetic import SYNTHETIC_CLASSES  # noqa: E402

HW = blocks.HW  # the blocks dataset's size (conftest fixtures folder_dataset, trained_checkpoint), for every model here
#: The smallest configuration of each registered model (unknown future models: defaults).
SMALLEST = {
    "bisenetv2": {"width": 0.25},
    "segnet": {"width": 0.125},
    "segnet_basic": {"width": 0.125},
    "pspnet": {"backbone": "resnet18"},
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread: on a small shared CPU, more threads make these tiny models slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random_images(count: int, seed: int = 0) -> list[tuple[np.ndarray, None]]:
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        # Smooth blobs rather than white noise, so the logits have structure.
        small = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
        images.append((cv2.resize(small, (HW[1], HW[0]), interpolation=cv2.INTER_CUBIC), None))
    return images


def _small_model(name: str, num_classes: int):
    torch.manual_seed(0)
    model = build_model(name, num_classes=num_classes, aux=False, **SMALLEST.get(name, {}))
    # A few train-mode passes give BatchNorm real statistics, so activations neither vanish nor
    # explode and the logits comparison means something.
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 3, *HW))
    return model.eval()


@pytest.mark.parametrize("name", model_names())
def test_every_model_exports_and_passes_gate(name, tmp_path):
    model = _small_model(name, SYNTHETIC_CLASSES.num_classes)
    meta = ModelMetadata(model_name=name, class_table=SYNTHETIC_CLASSES, input_hw=HW, has_confidence=True,
                         confidence_pool=confidence_pool(SYNTHETIC_CLASSES))
    result = export_onnx(model, tmp_path / f"{name}.onnx", meta)
    proto = onnx.load(str(result.path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == ONNX_OPSET
    io = {v.name: v.type.tensor_type for v in [*proto.graph.input, *proto.graph.output]}
    assert io[INPUT_NAME].elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in io[INPUT_NAME].shape.dim] == [1, *HW, 3]
    for out in (OUTPUT_CLASS_IDS, OUTPUT_CONFIDENCE):
        assert io[out].elem_type == onnx.TensorProto.UINT8
        assert [d.dim_value for d in io[out].shape.dim] == [1, *HW]
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"MaxUnpool", "AdaptiveAvgPool", "If", "Loop"}, ops
    wrapper = ExportWrapper(prepare_model(model), mean_rgb=meta.mean, std_rgb=meta.std, with_confidence=True,
                            confidence_pool=meta.confidence_pool_flags())
    report = verify_onnx(wrapper, proto, _random_images(2), source="blobs")
    assert report.passed, report.lines()
    assert report.logits_within_tol >= 0.999


def test_segnet_exports_without_maxunpool_or_indices(tmp_path):
    model = _small_model("segnet", 11)
    meta = ModelMetadata(model_name="segnet", class_table=SYNTHETIC_CLASSES, input_hw=HW)
    proto = onnx.load(str(export_onnx(model, tmp_path / "s.onnx", meta).path))
    ops = [n.op_type for n in proto.graph.node]
    assert "MaxUnpool" not in ops
    assert [o.name for o in proto.graph.output] == [OUTPUT_CLASS_IDS]
    # MaxPool with a second (indices) output would mean the unpooling still uses indices.
    assert all(len(n.output) == 1 for n in proto.graph.node if n.op_type == "MaxPool")


def test_graph_does_preprocessing_like_training(tmp_path):
    """uint8 BGR in the graph == RGB / 255, mean/std normalised float into the model."""
    model = _small_model("segnet_basic", 11)
    meta = ModelMetadata(model_name="segnet_basic", class_table=SYNTHETIC_CLASSES, input_hw=HW)
    proto = onnx.load(str(export_onnx(model, tmp_path / "m.onnx", meta).path))
    image = _random_images(1, seed=3)[0][0]
    import onnxruntime as ort

    session = ort.InferenceSession(with_logits_output(proto).SerializeToString(), providers=["CPUExecutionProvider"])
    ort_logits = session.run(["logits"], {INPUT_NAME: image[None]})[0]
    rgb = image[..., ::-1].astype(np.float32) / 255.0
    x = (rgb - np.array(meta.mean, np.float32)) / np.array(meta.std, np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]).numpy()
    np.testing.assert_allclose(ort_logits, ref, atol=1e-4)


def test_gate_fails_when_graph_differs_from_model(tmp_path):
    model = _small_model("segnet_basic", 11)
    meta = ModelMetadata(model_name="segnet_basic", class_table=SYNTHETIC_CLASSES, input_hw=HW)
    proto = onnx.load(str(export_onnx(model, tmp_path / "m.onnx", meta).path))
    other = _small_model("segnet_basic", 11)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    wrapper = ExportWrapper(other, mean_rgb=meta.mean, std_rgb=meta.std)
    report = verify_onnx(wrapper, proto, _random_images(1))
    assert not report.passed
    assert report.lines()[0].startswith("verify FAIL")


class _Float32TieFlip(ExportWrapper):
    """PyTorch float32 breaking a near-tie the other way: a block of its logits moves by 0.2, as
    SegNet's unpooling switch did on a flat image with torch 2.14.1; float64 (the arbiter) does not."""

    def logits(self, image):
        out = super().logits(image)
        if self.scale.dtype == torch.float32:
            out = out.clone()
            out[:, :, :16, :16] += 0.2  # 4.2 % of the values
        return out


def test_gate_passes_near_tie_flips_that_float64_arbitrates(tmp_path):
    model = _small_model("segnet_basic", 11)
    meta = ModelMetadata(model_name="segnet_basic", class_table=SYNTHETIC_CLASSES, input_hw=HW, has_confidence=True)
    proto = onnx.load(str(export_onnx(model, tmp_path / "m.onnx", meta).path))
    wrapper = _Float32TieFlip(prepare_model(model), mean_rgb=meta.mean, std_rgb=meta.std, with_confidence=True)
    report = verify_onnx(wrapper, proto, _random_images(2))
    assert report.passed, report.lines()
    assert report.logits_within_tol_fp32 < 0.97  # the flipped block is seen and reported ...
    assert report.logits_within_tol == 1.0  # ... and arbitrated: ORT matches float64 there
    assert "near-tie flips" in report.lines()[1]


def test_dynamic_batch_export(tmp_path):
    model = _small_model("segnet_basic", 11)
    meta = ModelMetadata(model_name="segnet_basic", class_table=SYNTHETIC_CLASSES, input_hw=HW, dynamic_batch=True)
    path = export_onnx(model, tmp_path / "d.onnx", meta).path
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = np.stack([img for img, _ in _random_images(3)])
    (class_ids,) = session.run(None, {INPUT_NAME: batch})
    assert class_ids.shape == (3, *HW) and class_ids.dtype == np.uint8
    assert read_model_metadata(path).dynamic_batch


# ---- a tiny model trained on a labelled folder dataset: INT8 and the CLI end to end ----------

# The blocks dataset and its trained segnet_basic (fixtures folder_dataset, trained_checkpoint) are
# in conftest.py (tests/blocks.py), shared with test_logit_adjust.py.


def test_cli_export_int8_and_inspect(trained_checkpoint, folder_dataset, tmp_path, capsys):
    ckpt_path, ckpt = trained_checkpoint
    root, table = folder_dataset
    out = tmp_path / "model.onnx"
    code = cli_main([
        "export", "--checkpoint", str(ckpt_path), "--out", str(out), "--confidence",
        "--verify-data", f"folder:{root}", "--verify-count", "4",
        "--int8", "--calib", f"folder:{root}", "--calib-count", "16", "--val-count", "12", "--latency-runs", "3",
    ])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "verify PASS" in printed and "int8 PASS" in printed, printed

    meta = read_model_metadata(out)
    assert meta.model_name == "segnet_basic" and meta.input_hw == HW and meta.precision == "fp32"
    assert meta.class_table == table and meta.has_confidence
    assert meta.dataset == f"folder:{root}"
    assert meta.val_metrics["miou"] == pytest.approx(ckpt.metrics["miou"])
    # Where those figures were measured (this fixture's checkpoint has no training config: none).
    assert meta.val_metrics.get("input_hw") == ckpt.config.get("input_hw")
    assert set(meta.tool_versions) == {"torch", "onnx", "onnxruntime", "perception"}

    # --confidence stores the unknown threshold the rule chose on the checkpoint's own val data.
    assert 0 < meta.unknown_threshold <= 1 and f"val images of folder:{root}" in meta.unknown_rule
    assert "unknown: pixels with confidence below" in printed

    int8 = int8_path_for(out)
    int8_meta = read_model_metadata(int8)
    assert int8_meta.precision == "int8" and int8_meta.class_table == table
    # The INT8 model carries the confidence output and the threshold, in every CPU engine.
    assert int8_meta.has_confidence and int8_meta.unknown_threshold == meta.unknown_threshold
    # The gate's figures travel in the INT8 file (--engine auto holds it to the agreement measured).
    gate = int8_meta.val_metrics["int8_gate"]
    assert gate["passed"] is True and 0.5 < gate["agreement_with_fp32"] <= 1 and gate["images"] == 12
    assert gate["drop_points"] <= 0.5 and "class ids agree" in printed
    # 7-bit weights by default: the gate's verdict holds on CPUs with and without VNNI.
    assert gate["saturation_safe"] is True and "within 7 bits" in printed
    from perception.engines import EngineOptions, load_engine

    engines = [("ort", "int8")] + ([("openvino", "int8"), ("openvino", "fp32")] if _has_openvino() else [])
    for kind, precision in engines:
        engine = load_engine(kind, out, EngineOptions(precision=precision, threads=1))
        outputs = engine.infer(np.zeros((1, *HW, 3), np.uint8))
        assert engine.has_confidence and outputs[OUTPUT_CONFIDENCE].dtype == np.uint8, (kind, precision)
        assert outputs[OUTPUT_CONFIDENCE].shape == outputs[OUTPUT_CLASS_IDS].shape == (1, *HW)
        engine.close()
    ops = [n.op_type for n in onnx.load(str(int8)).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # The uint8 input is never quantised: the graph still starts with the float cast.
    assert onnx.load(str(int8)).graph.node[0].op_type == "Cast"

    assert cli_main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    for needle in ("segnet_basic", "lane_marking", "drivable", "class_ids", "confidence", "uint8", "Conv", "fp32"):
        assert needle in text, needle
    # hunt4d: the checkpoint's figures were shown as the file's (another size, INT8).
    assert "the checkpoint's validation in training" in text and "perception eval --model scores this file" in text
    assert cli_main(["inspect", str(int8)]) == 0
    text = capsys.readouterr().out
    assert "int8 gate  PASS" in text and "every dense 8-bit weight within 7 bits" in text
    assert ", before INT8; perception eval --model scores this file" in text
    assert cli_main(["inspect", str(int8), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["metadata"]["precision"] == "int8"
    assert doc["inputs"] == [{"name": INPUT_NAME, "dtype": "uint8", "shape": [1, *HW, 3]}]
    assert doc["op_counts"]["QuantizeLinear"] > 0
    assert doc["saturation_safe"] is True  # read from the weights, not from the gate's record


def _has_openvino() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def test_export_stores_a_given_unknown_threshold_and_grafts_confidence_like_the_exporter(
    trained_checkpoint, folder_dataset, tmp_path, capsys
):
    from perception.engines import EngineOptions, load_engine
    from perception.export.unknown import add_unknown_threshold

    ckpt_path, _ = trained_checkpoint
    root, _ = folder_dataset
    given = tmp_path / "given.onnx"
    assert cli_main(["export", "--checkpoint", str(ckpt_path), "--out", str(given), "--confidence",
                     "--unknown-threshold", "0.3", "--verify-count", "2"]) == 0
    meta = read_model_metadata(given)
    assert meta.unknown_threshold == 0.3 and meta.unknown_rule.startswith("given")
    capsys.readouterr()
    assert cli_main(["export", "--checkpoint", str(ckpt_path), "--out", str(tmp_path / "x.onnx"),
                     "--unknown-threshold", "0.3"]) == 2
    assert "add --confidence" in capsys.readouterr().err
    # A model exported without --confidence gets the same confidence output from perception.export.unknown.
    plain = tmp_path / "plain.onnx"
    assert cli_main(["export", "--checkpoint", str(ckpt_path), "--out", str(plain), "--verify-count", "2"]) == 0
    grafted = tmp_path / "grafted.onnx"
    line = add_unknown_threshold(plain, grafted, data=f"folder:{root}", count=6)
    assert "unknown: threshold" in line and f"folder:{root}" in line
    graft_meta = read_model_metadata(grafted)
    assert graft_meta.has_confidence and 0 < graft_meta.unknown_threshold <= 1
    reference = load_engine("ort", given, EngineOptions(provider="cpu", threads=1))
    engine = load_engine("ort", grafted, EngineOptions(provider="cpu", threads=1))
    batch = np.stack([cv2.imread(str(p)) for p in sorted((root / "val" / "images").glob("*.png"))[:4]])
    want, got = reference.infer(batch), engine.infer(batch)
    np.testing.assert_array_equal(got[OUTPUT_CLASS_IDS], want[OUTPUT_CLASS_IDS])
    assert np.abs(got[OUTPUT_CONFIDENCE].astype(int) - want[OUTPUT_CONFIDENCE]).max() <= 1
    reference.close()
    engine.close()


def test_int8_gate_fails_loudly(trained_checkpoint, folder_dataset, tmp_path, monkeypatch):
    """A budget no INT8 model can meet fails the export and removes the INT8 file."""
    import perception.export as export
    import perception.export.int8_gate  # noqa: F401  (the submodule the gate lives in)

    ckpt_path, _ = trained_checkpoint
    root, _ = folder_dataset
    monkeypatch.setattr(export.int8_gate, "MAX_MIOU_DROP_POINTS", -100.0)
    out = tmp_path / "m.onnx"
    cfg = ExportConfig(
        checkpoint=ckpt_path, out=out, verify_data=f"folder:{root}", verify_count=2,
        int8=True, calib=f"folder:{root}", calib_count=4, val_count=4, latency_runs=1,
    )
    with pytest.raises(export.ExportGateError, match=r"INT8 mIoU drop.*--accuracy-control SPEC"):
        run_export(cfg, report=lambda line: None)
    assert out.is_file() and not int8_path_for(out).exists()


def test_no_ungated_or_stale_int8_model_is_left_beside_the_fp32_one(trained_checkpoint, folder_dataset, tmp_path, monkeypatch):
    """The engines pair model.onnx with model.int8.onnx by name (--precision int8, --engine auto):
    an INT8 file interrupted before its gate's verdict, or made from the model a new export
    replaced, must not stay."""
    import perception.export as export
    import perception.export.quantize  # noqa: F401  (the submodule the quantiser lives in)

    ckpt_path, _ = trained_checkpoint
    root, _ = folder_dataset
    out = tmp_path / "m.onnx"
    int8_path_for(out).write_bytes(b"an INT8 model of earlier weights")
    seen = []

    def interrupted(fp32, int8, *args, **kwargs):  # Ctrl-C half way through writing the new INT8 file
        seen.append(int8.exists())
        int8.write_bytes(b"half an INT8 model")
        raise KeyboardInterrupt

    monkeypatch.setattr(export.quantize, "quantize_int8", interrupted)
    lines = []
    cfg = ExportConfig(checkpoint=ckpt_path, out=out, verify_data=f"folder:{root}", verify_count=1,
                       int8=True, calib=f"folder:{root}", calib_count=2, val_count=2, latency_runs=1)
    with pytest.raises(KeyboardInterrupt):
        run_export(cfg, report=lines.append)
    assert seen == [False]  # the earlier INT8 file went when its FP32 model was replaced ...
    assert "removed m.int8.onnx: it was quantised from the model m.onnx replaced; --int8 writes a new one" in lines
    assert out.is_file() and not int8_path_for(out).exists()  # ... and the interrupted one went too


def _previous_pair(folder):
    """A model and its INT8 sibling an earlier export wrote (their bytes stand in for them)."""
    out = folder / "m.onnx"
    out.write_bytes(b"the previous model")
    int8_path_for(out).write_bytes(b"the previous model's INT8 file")
    return out


def _files(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_a_failed_export_leaves_the_previous_model_and_its_int8_sibling_as_they_were(
    trained_checkpoint, folder_dataset, tmp_path, monkeypatch, capsys
):
    """Every input is read before anything is written, and the new model is verified under a
    temporary name: a bad --verify-data/--calib/--val-data, a failed verification or Ctrl-C during
    it leaves the working pair byte for byte, no temporary file, and no folder the export made."""
    import perception.export.verify as verify

    ckpt_path, _ = trained_checkpoint
    root, _ = folder_dataset
    out = _previous_pair(tmp_path)
    before = _files(tmp_path)
    base = ["export", "--checkpoint", str(ckpt_path), "--out", str(out), "--verify-count", "1"]
    for extra, message in (
        (["--verify-data", f"folder:{tmp_path}/typo"], "typo"),
        (["--int8", "--calib", f"folder:{tmp_path}/typo"], "typo"),
        (["--int8", "--calib", f"folder:{root}", "--val-data", f"folder:{tmp_path}/typo2"], "typo2"),
        (["--confidence", "--unknown-data", f"folder:{tmp_path}/typo3"], "typo3"),
    ):
        assert cli_main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert _files(tmp_path) == before, extra

    real = verify.verify_onnx
    monkeypatch.setattr(verify, "verify_onnx", lambda *a, **k: dataclasses.replace(real(*a, **k), passed=False))
    assert cli_main(base) == 2
    assert "failed verification against PyTorch (see above); not written; " f"{out} left as it was" in capsys.readouterr().err
    assert _files(tmp_path) == before
    assert cli_main([*base[:4], str(tmp_path / "new" / "deeper" / "m.onnx"), "--verify-count", "1"]) == 2
    assert _files(tmp_path) == before  # the folders it made went with the failure

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(verify, "verify_onnx", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_export(ExportConfig(checkpoint=ckpt_path, out=tmp_path / "new" / "m.onnx", verify_count=1), report=lambda _: None)
    with pytest.raises(KeyboardInterrupt):
        run_export(ExportConfig(checkpoint=ckpt_path, out=out, verify_count=1), report=lambda _: None)
    assert _files(tmp_path) == before


def test_out_that_is_the_checkpoint_is_refused_and_a_link_at_out_is_replaced(trained_checkpoint, tmp_path, capsys):
    """--out the checkpoint itself (its path, a link to it, or a checkpoint named .onnx) would
    destroy the only copy of the weights: one line, exit 2, the checkpoint intact. A link at --out
    to anything else is replaced by the new model, never written through."""
    import shutil

    ckpt_path, _ = trained_checkpoint
    ckpt = tmp_path / "ck.pt"
    shutil.copy(ckpt_path, ckpt)
    data = ckpt.read_bytes()
    link = tmp_path / "link.onnx"
    link.symlink_to(ckpt)
    named = tmp_path / "ckp.onnx"
    shutil.copy(ckpt_path, named)
    for checkpoint, out, message in (
        (ckpt, link, f"--out {link} is the checkpoint {ckpt} itself (through a link): the export would overwrite it"),
        (named, named, f"--out {named} is the checkpoint {named} itself: the export would overwrite it"),
        (tmp_path / "ckp.int8.onnx", named, "the INT8 file beside --out"),
    ):
        if not checkpoint.exists():
            shutil.copy(ckpt_path, checkpoint)
        assert cli_main(["export", "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("perception: error: ") and message in err and err.count("\n") == 1, err
    assert ckpt.read_bytes() == data and link.is_symlink() and named.read_bytes() == data
    assert (tmp_path / "ckp.int8.onnx").read_bytes() == data

    other = tmp_path / "other.onnx"
    other.write_bytes(b"another file")
    elsewhere = tmp_path / "elsewhere.onnx"
    elsewhere.symlink_to(other)
    assert cli_main(["export", "--checkpoint", str(ckpt), "--out", str(elsewhere), "--verify-count", "1"]) == 0
    assert not elsewhere.is_symlink() and read_model_metadata(elsewhere).model_name == "segnet_basic"
    assert other.read_bytes() == b"another file" and ckpt.read_bytes() == data
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_checkpoint_whose_class_table_no_longer_fits_its_weights_is_one_model_error(trained_checkpoint):
    from perception.contracts import ClassTable
    from perception.errors import ModelError
    from perception.training.checkpoint import build_model_from_checkpoint

    _, ckpt = trained_checkpoint
    edited = dataclasses.replace(ckpt, class_table=ClassTable(classes=ckpt.class_table.classes[:2]))
    with pytest.raises(ModelError, match=r"do not fit model 'segnet_basic' with its 2 classes: size mismatch for .*"
                                         r"class table or model_kwargs changed after training"):
        build_model_from_checkpoint(edited)


def test_quantiser_leaves_preprocessing_and_argmax_in_float(trained_checkpoint, tmp_path):
    _, ckpt = trained_checkpoint
    from perception.training.checkpoint import build_model_from_checkpoint

    meta = ModelMetadata(model_name="segnet_basic", class_table=ckpt.class_table, input_hw=HW)
    proto = onnx.load(str(export_onnx(build_model_from_checkpoint(ckpt), tmp_path / "m.onnx", meta).path))
    excluded = set(io_nodes_to_exclude(proto))
    by_name = {n.name: n for n in proto.graph.node}
    assert {by_name[n].op_type for n in excluded} >= {"Cast", "ArgMax"}
    assert not any(by_name[n].op_type == "Conv" for n in excluded)


def test_export_rejects_bad_size(trained_checkpoint, tmp_path, capsys):
    ckpt_path, _ = trained_checkpoint
    code = cli_main(["export", "--checkpoint", str(ckpt_path), "--out", str(tmp_path / "m.onnx"), "--size", "sixty"])
    assert code != 0
    assert capsys.readouterr().err.startswith("perception: error: export: bad --size 'sixty': expected HEIGHTxWIDTH")


def test_a_size_export_suggests_is_one_it_exports(trained_checkpoint, tmp_path, capsys):
    # Sizes below the synthetic world's 48x64: the verification scenes are drawn at a size it can
    # draw and letterboxed, so the suggestion is not refused next over the verification frames.
    ckpt_path, _ = trained_checkpoint
    out = tmp_path / "m.onnx"
    assert cli_main(["export", "--checkpoint", str(ckpt_path), "--out", str(out), "--size", "17x35"]) == 2
    err = capsys.readouterr().err
    suggested = re.search(r"; use (\d+x\d+) or (\d+x\d+)$", err.strip())
    assert suggested, err
    for size in suggested.groups():
        assert cli_main(["export", "--checkpoint", str(ckpt_path), "--out", str(out), "--size", size]) == 0
        assert read_model_metadata(out).input_hw == tuple(int(s) for s in size.split("x"))
    assert "synthetic image size" not in capsys.readouterr().err


# ---- TensorRT: the engine cache (no tensorrt needed) and the real build (GPU only) -------------

SHAPES = {INPUT_NAME: (1, 64, 96, 3)}


def _key(**changes):
    args = {"trt_version": "10.3.0", "gpu_name": "NVIDIA Orin sm87", "precision": "fp16", "input_shapes": SHAPES}
    onnx_bytes = changes.pop("onnx_bytes", b"model-a")
    args.update(changes)
    return engine_key(onnx_bytes, **args)


def test_engine_key_changes_with_everything_an_engine_depends_on():
    base = _key()
    assert _key().digest == base.digest
    for change in (
        {"onnx_bytes": b"model-b"},
        {"trt_version": "10.4.0"},
        {"gpu_name": "NVIDIA RTX 4090 sm89"},
        {"precision": "int8"},
        {"input_shapes": {INPUT_NAME: (1, 128, 192, 3)}},
    ):
        assert _key(**change).digest != base.digest, change
    with pytest.raises(ValueError, match="precision"):
        _key(precision="int4")


def test_engine_cache_reuses_unchanged_and_misses_changed(tmp_path):
    cache = EngineCache(tmp_path / "trt")
    key = _key()
    assert cache.load(key) is None
    path = cache.store(key, b"serialized-engine")
    assert cache.load(key) == b"serialized-engine"
    assert json.loads(path.with_suffix(".json").read_text())["precision"] == "fp16"
    assert cache.load(_key(onnx_bytes=b"retrained")) is None
    assert cache.load(_key(trt_version="10.5.0")) is None
    assert cache.timing_cache_path(trt_version="10.3", gpu="a") != cache.timing_cache_path(trt_version="10.3", gpu="b")


def test_missing_tensorrt_is_a_dependency_error(monkeypatch, tmp_path):
    from perception.engines import trt_build as trt_export

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    with pytest.raises(DependencyError, match=r"TensorRT 10 or 11 is not installed: pip install -e '\.\[gpu\]' --extra-index-url https://pypi\.nvidia\.com"):
        trt_export.engine_for(tmp_path / "m.onnx", precision="fp16")


def test_cli_tensorrt_without_tensorrt_is_one_line(trained_checkpoint, tmp_path, monkeypatch, capsys):
    ckpt_path, _ = trained_checkpoint
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    code = cli_main(["export", "--checkpoint", str(ckpt_path), "--out", str(tmp_path / "m.onnx"), "--tensorrt", "--fp16"])
    err = capsys.readouterr().err
    assert code == DependencyError.exit_code
    assert err.strip() == ("perception: error: TensorRT 10 or 11 is not installed: pip install -e '.[gpu]' --extra-index-url "
                           "https://pypi.nvidia.com (in the perception checkout, on a machine with an NVIDIA GPU)")


def test_ort_provider_options_enable_engine_and_timing_caches(tmp_path):
    from perception.engines.cache import ort_providers

    providers = ort_providers(tmp_path, fp16=True)
    name, options = providers[0]
    assert name == "TensorrtExecutionProvider"
    assert options["trt_engine_cache_enable"] and options["trt_timing_cache_enable"] and options["trt_fp16_enable"]
    assert options["trt_engine_cache_path"] == str(tmp_path)
    assert providers[1][0] == "CUDAExecutionProvider" and providers[-1] == "CPUExecutionProvider"


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_builds_then_loads_from_cache(precision, tmp_path):
    from perception.engines.trt_build import engine_for

    model = _small_model("segnet_basic", 11)
    meta = ModelMetadata(model_name="segnet_basic", class_table=SYNTHETIC_CLASSES, input_hw=HW)
    path = export_onnx(model, tmp_path / "m.onnx", meta).path
    cache = EngineCache(tmp_path / "trt")
    engine, key, built = engine_for(path, precision=precision, cache=cache)
    assert built and engine.stat().st_size > 0
    again, key2, built2 = engine_for(path, precision=precision, cache=cache)
    assert not built2 and again == engine and key2 == key


@pytest.fixture(scope="module")
def exported_fp32(trained_checkpoint, tmp_path_factory):
    _, ckpt = trained_checkpoint
    from perception.training.checkpoint import build_model_from_checkpoint

    meta = ModelMetadata(model_name="segnet_basic", class_table=ckpt.class_table, input_hw=HW)
    path = tmp_path_factory.mktemp("fp32") / "m.onnx"
    return export_onnx(build_model_from_checkpoint(ckpt), path, meta).path, meta


@pytest.mark.skipif(not _has_openvino(), reason="NNCF comes with the openvino extra")
def test_accuracy_control_keeps_the_drop_within_its_budget(exported_fp32, folder_dataset, tmp_path):
    """NNCF's accuracy-controlled quantisation runs on a tiny model, and with a zero budget the INT8
    file scores at least FP32's mIoU on the accuracy-control images (layers go back to float until
    it does)."""
    from perception.export.quantize import AccuracyControl, miou_validation_fn, quantize_int8
    from perception.export.verify import load_samples

    model, meta = exported_fp32
    root, _ = folder_dataset
    calib, _ = load_samples(f"folder:{root}", split="train", count=8, input_hw=HW)
    control, _ = load_samples(f"folder:{root}/train", split="val", count=10, input_hw=HW)
    out = quantize_int8(model, tmp_path / "m.int8.onnx", [i for i, _ in calib], metadata=meta,
                        accuracy_control=AccuracyControl(control, max_drop_points=0.0, ranking_count=4))
    assert read_model_metadata(out).precision == "int8"
    validate = miou_validation_fn(meta.class_table)
    fp32_miou, per_image = validate(onnx.load(str(model)), control)
    int8_miou, _ = validate(onnx.load(str(out)), control)
    assert len(per_image) == len(control) and 0 < fp32_miou <= 1
    assert int8_miou >= fp32_miou - 1e-9


def test_int8_weights_stay_within_7_bits_unless_asked(exported_fp32, folder_dataset, tmp_path):
    """By default the INT8 file's dense weights fit 7 bits, so a CPU without VNNI (whose 16-bit
    pair sums saturate past 64) computes what a CPU with VNNI does; ``disable`` uses the full
    8-bit range, and ``first_layer`` (an NNCF setting) is refused by the ort quantiser."""
    from onnx import numpy_helper

    from perception.export.quantize import ConfigError, quantize_int8
    from perception.export.verify import load_samples
    from perception.modelfile_graph import saturation_safe

    model, meta = exported_fp32
    root, _ = folder_dataset
    calib = [image for image, _ in load_samples(f"folder:{root}", split="train", count=6, input_hw=HW)[0]]

    def widest_weight(path) -> int:
        proto = onnx.load(str(path))
        return max(int(np.abs(numpy_helper.to_array(t).astype(np.int16)).max())
                   for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4)

    portable = quantize_int8(model, tmp_path / "p.int8.onnx", calib, metadata=meta, quantizer="ort")
    full = quantize_int8(model, tmp_path / "f.int8.onnx", calib, metadata=meta, quantizer="ort", overflow_fix="disable")
    assert widest_weight(portable) <= 64 < widest_weight(full) <= 127
    assert saturation_safe(onnx.load(str(portable))) and not saturation_safe(onnx.load(str(full)))
    # TensorRT's symmetric INT8 has no 16-bit pair sum: its weights keep the full range.
    trt = quantize_int8(model, tmp_path / "t.int8.onnx", calib, metadata=meta, symmetric_activations=True)
    assert widest_weight(trt) > 64
    with pytest.raises(ConfigError, match="first_layer needs the nncf quantiser"):
        quantize_int8(model, tmp_path / "x.int8.onnx", calib, metadata=meta, quantizer="ort", overflow_fix="first_layer")
    assert not saturation_safe(onnx.load(str(model)))  # no 8-bit weight to judge: not shown safe
    if _has_openvino():  # NNCF: enable halves every dense layer, first_layer only the first convolution
        nncf_enable = quantize_int8(model, tmp_path / "ne.int8.onnx", calib, metadata=meta, quantizer="nncf")
        first = quantize_int8(model, tmp_path / "n1.int8.onnx", calib, metadata=meta, quantizer="nncf",
                              overflow_fix="first_layer")
        assert widest_weight(nncf_enable) <= 64 < widest_weight(first)
        assert saturation_safe(onnx.load(str(nncf_enable))) and not saturation_safe(onnx.load(str(first)))
    else:
        with pytest.raises(ConfigError, match="the nncf quantiser needs NNCF"):
            quantize_int8(model, tmp_path / "x.int8.onnx", calib, metadata=meta, quantizer="nncf")


@pytest.mark.skipif(not _has_openvino(), reason="NNCF comes with the openvino extra")
def test_quantize_cli_accuracy_control_still_gated(exported_fp32, folder_dataset, tmp_path, monkeypatch, capsys):
    """The CLI's accuracy-control path ends at the same gate: a budget no model meets fails it and
    removes the file; the gate's own images are refused as the accuracy-control set."""
    import perception.export.quantize as quantize

    model, _ = exported_fp32
    root, _ = folder_dataset
    out = tmp_path / "q.int8.onnx"
    common = [str(model), "--out", str(out), "--calib", f"folder:{root}", "--calib-count", "6",
              "--val-data", f"folder:{root}", "--val-count", "4"]
    assert quantize.main([*common, "--accuracy-control", f"folder:{root}"]) == 2
    assert "is the gate's --val-data" in capsys.readouterr().err and not out.exists()
    assert quantize.main([*common, "--accuracy-control", f"folder:{root}/train", "--ac-max-drop", "3"]) == 2
    assert "--ac-max-drop 3.0 must be within 0..0.5" in capsys.readouterr().err
    real_gate = quantize.gate_int8  # the real scores, judged against a budget no model meets
    monkeypatch.setattr(quantize, "gate_int8", lambda *a, **k: dataclasses.replace(real_gate(*a, **k), max_drop_points=-100.0))
    code = quantize.main([*common, "--accuracy-control", f"folder:{root}/train", "--ac-count", "6", "--ac-max-drop", "0"])
    printed = capsys.readouterr()
    assert code == 1, printed
    assert "accuracy control on 6 images" in printed.out and "int8 FAIL" in printed.out and not out.exists()
    assert printed.err.splitlines()[-1].startswith("export.quantize: error: mIoU drop over budget"), printed.err
    with pytest.raises(quantize.ConfigError, match="needs the nncf quantiser"):
        quantize.quantize_int8(model, out, [np.zeros((*HW, 3), np.uint8)], metadata=read_model_metadata(model),
                               quantizer="ort", accuracy_control=quantize.AccuracyControl([]))
    # A gate that cannot run (val images that are not there) stops before calibration, and an INT8
    # file given as the model is named, not quantised again into q.int8.int8.onnx.
    assert quantize.main([str(model), "--out", str(out), "--calib", f"folder:{root}", "--val-data", f"folder:{tmp_path}/none"]) == 2
    assert f"{tmp_path}/none" in capsys.readouterr().err and not out.exists()
    import shutil

    from perception.modelfile import record_metadata

    shutil.copy(model, out)  # its metadata says int8: what quantize checks first
    record_metadata(out, precision="int8")
    assert quantize.main([str(out), "--calib", f"folder:{root}"]) == 2
    assert "q.int8.onnx is already INT8; quantise its FP32 model" in capsys.readouterr().err
    assert not (tmp_path / "q.int8.int8.onnx").exists()



def test_quantize_refuses_an_out_that_is_the_model_or_not_onnx_and_bad_counts(exported_fp32, tmp_path, capsys):
    """Each is refused in one line (exit 2) before any calibration, and the FP32 model is intact."""
    import shutil

    import perception.export.quantize as quantize

    source, _ = exported_fp32
    model = tmp_path / "fp.onnx"
    shutil.copy(source, model)
    data = model.read_bytes()
    link = tmp_path / "link.onnx"
    link.symlink_to(model)
    checkpoint = tmp_path / "ck.pt"
    checkpoint.write_bytes(b"PK\x03\x04 a checkpoint")
    for argv, message in (
        ([str(model), "--out", str(model)], f"--out {model} is the model {model} itself: the INT8 file would overwrite"),
        ([str(model), "--out", str(link)], "itself (through a link)"),
        ([str(link), "--out", str(model)], "itself (through a link)"),
        ([str(model), "--out", str(checkpoint)], f"--out {checkpoint} must name an .onnx file"),
        ([str(model), "--out", ""], "--out . must name an .onnx file (e.g. fp.int8.onnx)"),  # an unset $VAR
        ([str(model), "--calib-count", "-5"], "--calib-count -5 is out of range [1, 10000]"),
        ([str(model), "--calib-count", "0"], "--calib-count 0 is out of range [1, 10000]"),
        ([str(model), "--val-count", "0"], "--val-count 0 is out of range"),
        ([str(model), "--val-count", "-1"], "--val-count -1 is out of range"),
        ([str(model), "--ac-count", "-3"], "--ac-count -3 is out of range"),
        ([str(model), "--calib-count", "many"], "argument --calib-count: invalid int value: 'many'"),
    ):
        with contextlib.suppress(SystemExit):  # argparse's own errors exit
            assert quantize.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("export.quantize: error: ") and message in err and err.count("\n") == 1, (argv, err)
    assert model.read_bytes() == data and link.is_symlink() and checkpoint.read_bytes() == b"PK\x03\x04 a checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt", "fp.onnx", "link.onnx"]


def test_quantize_writes_out_only_after_the_gate(exported_fp32, folder_dataset, tmp_path, monkeypatch, capsys):
    """The INT8 file is written under a temporary name and renamed onto --out only with a passed
    gate: a failed gate leaves the file --out held (and no folder it made); a passed one replaces
    a link at --out instead of writing through it."""
    import perception.export.quantize as quantize

    model, _ = exported_fp32
    root, _ = folder_dataset
    out = tmp_path / "q.int8.onnx"
    out.write_bytes(b"an earlier INT8 file")
    common = ["--calib", f"folder:{root}", "--calib-count", "2", "--val-data", f"folder:{root}", "--val-count", "1",
              "--quantizer", "ort"]
    real_gate = quantize.gate_int8
    seen = []

    def failing_gate(fp32, int8, *a, **k):
        seen.append(out.read_bytes())  # --out while the gate runs
        return dataclasses.replace(real_gate(fp32, int8, *a, **k), max_drop_points=-100.0)

    monkeypatch.setattr(quantize, "gate_int8", failing_gate)
    assert quantize.main([str(model), "--out", str(out), *common]) == 1
    err = capsys.readouterr().err
    assert f"{out} not written; the file there before is left as it was" in err
    assert seen == [b"an earlier INT8 file"] and out.read_bytes() == b"an earlier INT8 file"
    assert quantize.main([str(model), "--out", str(tmp_path / "new" / "q.int8.onnx"), *common]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.int8.onnx"]

    monkeypatch.setattr(quantize, "gate_int8", real_gate)
    target = tmp_path / "target.onnx"
    target.write_bytes(b"a file a link points at")
    link = tmp_path / "link.int8.onnx"
    link.symlink_to(target)
    assert quantize.main([str(model), "--out", str(link), *common, "--allow-int8-drop"]) == 0
    assert f"wrote {link}" in capsys.readouterr().out
    assert not link.is_symlink() and read_model_metadata(link).precision == "int8"
    assert target.read_bytes() == b"a file a link points at"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
