"""perception export --logit-adjust: the graph adds exactly the centred bias of the training data's
class weights, ``auto`` chooses tau on the training frames, and every mistake is one line."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from perception.cli import main as cli_main  # noqa: E402
from perception.contracts import INPUT_NAME, OUTPUT_CLASS_IDS  # noqa: E402
from perception.export import ExportConfig  # noqa: E402
from perception.export.graph import with_logits_output  # noqa: E402
from perception.modelfile import read_model_metadata  # noqa: E402
from perception.training.checkpoint import save_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_offline_one_thread")


@pytest.fixture(scope="module")
def weighted_checkpoint(trained_checkpoint, folder_dataset, tmp_path_factory):
    """The trained checkpoint as if trained with ENet class weights on the folder's train split."""
    _, ckpt = trained_checkpoint
    root, _ = folder_dataset
    config = {"class_weighting": "enet", "data": f"folder:{root}", "train_split": "train"}
    return save_checkpoint(tmp_path_factory.mktemp("weighted") / "last.pt", dataclasses.replace(ckpt, config=config))


def _ort_logits(path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(with_logits_output(onnx.load(str(path))).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["logits"], {INPUT_NAME: image[None]})[0] for image in images])


def test_logit_adjust_adds_the_centred_class_weight_bias_inside_the_graph(weighted_checkpoint, folder_dataset, tmp_path,
                                                                           capsys):
    from perception.datasets import class_pixel_stats, open_dataset
    from perception.training.losses import enet_weights

    root, table = folder_dataset
    plain, adjusted = tmp_path / "plain.onnx", tmp_path / "adjusted.onnx"
    assert cli_main(["export", "--checkpoint", str(weighted_checkpoint), "--out", str(plain), "--verify-count", "2"]) == 0
    assert cli_main(["export", "--checkpoint", str(weighted_checkpoint), "--out", str(adjusted), "--logit-adjust", "0.7",
                     "--confidence", "--unknown-threshold", "0.3", "--verify-count", "2"]) == 0
    printed = capsys.readouterr().out
    assert "logit adjustment: tau 0.7" in printed and "verify PASS" in printed, printed
    counts, _ = class_pixel_stats(open_dataset(f"folder:{root}", split="train"))
    log_w = np.log(enet_weights(counts))
    want = -0.7 * (log_w - log_w.mean())
    meta = read_model_metadata(adjusted)
    assert meta.logit_adjust["tau"] == 0.7 and meta.logit_adjust["weighting"] == "enet"
    np.testing.assert_allclose(meta.logit_adjust["bias"], want, rtol=1e-5, atol=1e-6)
    assert meta.logit_adjust["rule"].startswith("given") and not read_model_metadata(plain).logit_adjust
    # The graph adds exactly that bias to the model's logits, and its class ids are their argmax.
    images = np.stack([cv2.imread(str(p)) for p in sorted((root / "val" / "images").glob("*.png"))[:3]])
    base, shifted = _ort_logits(plain, images), _ort_logits(adjusted, images)
    np.testing.assert_allclose(shifted - base, np.broadcast_to(want[None, :, None, None], base.shape), atol=1e-4)
    import onnxruntime as ort

    session = ort.InferenceSession(str(adjusted), providers=["CPUExecutionProvider"])
    class_ids = np.concatenate([session.run([OUTPUT_CLASS_IDS], {INPUT_NAME: image[None]})[0] for image in images])
    assert (class_ids == shifted.argmax(1)).mean() > 0.999
    assert cli_main(["inspect", str(adjusted)]) == 0
    assert "logits     adjusted: tau 0.7 of the enet class weights" in capsys.readouterr().out


def test_logit_adjust_auto_chooses_tau_on_the_training_frames(weighted_checkpoint, folder_dataset, tmp_path, capsys):
    from perception.datasets import open_dataset
    from perception.export.logit_adjust import AUTO_TAUS
    from perception.training.evaluate import evaluate_checkpoint

    root, _ = folder_dataset
    out = tmp_path / "auto.onnx"
    assert cli_main(["export", "--checkpoint", str(weighted_checkpoint), "--out", str(out), "--logit-adjust", "auto",
                     "--verify-count", "2"]) == 0
    printed = capsys.readouterr().out
    adjust = read_model_metadata(out).logit_adjust
    sweep = adjust["sweep_miou"]
    assert list(sweep) == [f"{t:g}" for t in AUTO_TAUS] and adjust["tau"] in AUTO_TAUS
    assert sweep[f"{adjust['tau']:g}"] == max(sweep.values())
    assert "training frames of folder:" in adjust["rule"] and "training-frame mIoU by tau" in printed
    # tau 0 is the model as trained, scored as `perception eval --checkpoint` scores it on those frames.
    as_trained = evaluate_checkpoint(weighted_checkpoint, open_dataset(f"folder:{root}", split="train"), workers=0)
    assert sweep["0"] == pytest.approx(as_trained.miou(), abs=1e-6)


def test_logit_adjust_errors_are_one_line(trained_checkpoint, weighted_checkpoint, tmp_path, capsys):
    unweighted, _ = trained_checkpoint
    out = str(tmp_path / "x.onnx")
    assert cli_main(["export", "--checkpoint", str(unweighted), "--out", out, "--logit-adjust", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "was trained without class weights (class_weighting: none)" in err and "Traceback" not in err
    for value, needle in (("1.5", "tau must be in 0..1"), ("lots", "give a number in 0..1 or 'auto'")):
        assert cli_main(["export", "--checkpoint", str(weighted_checkpoint), "--out", out, "--logit-adjust", value]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err
    from perception.config import load_config
    from perception.errors import ConfigError

    for value, needle in (("lots", "give a number in 0..1 or 'auto'"), (2.0, "must be in 0..1 or 'auto'")):
        with pytest.raises(ConfigError, match=f"export.yaml: .*{needle}"):
            load_config(ExportConfig, {"checkpoint": "c.pt", "out": "m.onnx", "logit_adjust": value}, source="export.yaml")
    assert load_config(ExportConfig, {"checkpoint": "c.pt", "out": "m.onnx", "logit_adjust": "0.4"},
                       source="export.yaml").logit_adjust == 0.4
    moved = tmp_path / "moved.pt"
    ckpt = torch.load(weighted_checkpoint, weights_only=False)
    ckpt["config"]["data"] = f"folder:{tmp_path / 'gone'}"
    torch.save(ckpt, moved)
    assert cli_main(["export", "--checkpoint", str(moved), "--out", out, "--logit-adjust", "0.5"]) != 0
    err = capsys.readouterr().err
    assert "gone" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
