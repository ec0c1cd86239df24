"""The torch engine and ONNX Runtime on the exported file give the same class ids and confidence
(pooled over the obstacle group, ``contracts.confidence_pool``) on road images, letterboxed as the
node does. The torch engine normalises with its own code (x - mean) / std while
the exported graph does x * scale + bias, so this is what keeps the two from drifting apart."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from perception.contracts import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB  # noqa: E402
from perception.engines import EngineOptions, load_engine  # noqa: E402
from perception.export.onnx import build_metadata, export_onnx  # noqa: E402
from perception.models import build_model  # noqa: E402
from perception.preprocess import letterbox_image  # noqa: E402
from perception.synthetic import SYNTHETIC_CLASSES, SyntheticDrive  # noqa: E402
from perception.training.checkpoint import Checkpoint, save_checkpoint  # noqa: E402

HW = (96, 128)
CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"
#: Share of pixels whose class id must agree; float32 rounding may flip a true near-tie.
MIN_AGREEMENT = 0.999


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("bisenetv2", num_classes=SYNTHETIC_CLASSES.num_classes, width=0.25)
    _fit_to_road_scenes(model)
    ckpt = Checkpoint(model_name="bisenetv2", model_kwargs={"width": 0.25}, class_table=SYNTHETIC_CLASSES,
                      input_hw=HW, state_dict=model.state_dict(), dataset="synthetic")
    folder = tmp_path_factory.mktemp("torch_vs_ort")
    checkpoint = save_checkpoint(folder / "best.pt", ckpt)
    onnx_path = export_onnx(model, folder / "model.onnx",
                            build_metadata(ckpt, input_hw=HW, dynamic_batch=False, with_confidence=True)).path
    torch_engine = load_engine("torch", checkpoint, EngineOptions(provider="cpu", threads=1))
    ort_engine = load_engine("ort", onnx_path, EngineOptions(provider="cpu", threads=1))
    yield torch_engine, ort_engine
    torch_engine.close()
    ort_engine.close()


def _fit_to_road_scenes(model, steps: int = 60) -> None:
    """A few seconds of training on rendered road scenes, so the class ids follow the image (an
    untrained model's ids hardly depend on it, and then any two engines would agree)."""
    from perception.synthetic import render_scene

    scenes = [render_scene(500 + i, height=HW[0], width=HW[1]) for i in range(8)]
    mean, std = np.array(IMAGENET_MEAN_RGB, np.float32), np.array(IMAGENET_STD_RGB, np.float32)
    x = torch.from_numpy(np.stack([((s[0][..., ::-1] / 255.0 - mean) / std).transpose(2, 0, 1) for s in scenes]).astype(np.float32))
    y = torch.from_numpy(np.stack([s[1] for s in scenes]).astype(np.int64))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for step in range(steps):
        idx = torch.arange(4) + (step % 2) * 4
        out = model(x[idx])
        logits = out["out"] if isinstance(out, dict) else out
        loss = torch.nn.functional.cross_entropy(logits, y[idx], ignore_index=255)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()


def _road_images() -> list[np.ndarray]:
    drive = SyntheticDrive(seed=11, height=180, width=320, fps=30)  # 16:9, so the letterbox pads
    images = [drive.next_frame()[0] for _ in range(6)]
    if CAMVID.is_dir():  # real road frames when the data set is here
        for line in (CAMVID / "val.txt").read_text().splitlines()[:6]:
            image = cv2.imread(str(CAMVID / line.split()[0]), cv2.IMREAD_COLOR)
            if image is not None:
                images.append(image)
    return images


def test_torch_engine_and_onnx_runtime_agree_on_class_ids(engines):
    torch_engine, ort_engine = engines
    agree = total = 0
    for image in _road_images():
        batch = letterbox_image(image, HW)[0][None]
        ids_torch = torch_engine.infer(batch)["class_ids"]
        ids_ort = ort_engine.infer(batch)["class_ids"]
        assert ids_torch.shape == ids_ort.shape == (1, *HW)
        agree += int((ids_torch == ids_ort).sum())
        total += ids_ort.size
    # The comparison means something: the ids follow the image (a channel swap changes many).
    swapped = ort_engine.infer(np.ascontiguousarray(batch[..., ::-1]))["class_ids"]
    assert (swapped != ids_ort).mean() > 0.01
    assert agree / total >= MIN_AGREEMENT, f"class ids agree on {100 * agree / total:.3f} % of pixels"


def test_torch_engine_and_onnx_runtime_agree_on_the_pooled_confidence(engines):
    torch_engine, ort_engine = engines
    pool = SYNTHETIC_CLASSES.task_groups["obstacle"]
    assert torch_engine.metadata.confidence_pool == ort_engine.metadata.confidence_pool == pool
    close = total = pooled_wins = 0
    for image in _road_images():
        batch = letterbox_image(image, HW)[0][None]
        got_torch, got_ort = torch_engine.infer(batch), ort_engine.infer(batch)
        diff = np.abs(got_torch["confidence"].astype(int) - got_ort["confidence"])
        close += int((diff <= 1).sum())
        total += diff.size
        pooled_wins += int(np.isin(got_ort["class_ids"], [SYNTHETIC_CLASSES.id_of(n) for n in pool]).sum())
    assert pooled_wins > 0  # the pooled branch of both graphs ran
    assert close / total >= MIN_AGREEMENT, f"confidence within 1 on {100 * close / total:.3f} % of pixels"


def test_the_torch_engine_pools_a_split_obstacle(engines):
    torch_engine, _ = engines
    ped, cyc, road, lane = (SYNTHETIC_CLASSES.id_of(n) for n in ("pedestrian", "cyclist", "road", "lane_marking"))
    logits = torch.zeros((1, SYNTHETIC_CLASSES.num_classes, *HW))
    logits[0, [ped, cyc], : HW[0] // 2] = 10.0  # top half: pedestrian = cyclist, both obstacles
    logits[0, [road, lane], HW[0] // 2 :] = 10.0  # bottom half: road = lane_marking, both drivable
    model = torch_engine._model
    torch_engine._model = lambda x: logits
    try:
        class_ids, confidence = torch_engine._forward(torch.zeros((1, *HW, 3), dtype=torch.uint8))
    finally:
        torch_engine._model = model
    assert int(class_ids[0, 0, 0]) == ped and int(class_ids[0, -1, 0]) == road
    assert int(confidence[0, 0, 0]) == 255  # the pool: sure it is an obstacle
    assert int(confidence[0, -1, 0]) == 127  # drivable is never pooled: half each
