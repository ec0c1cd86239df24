"""The blocks dataset (coloured rectangles on a dark ground, a labelled ``folder:`` dataset with a
road / lane / car class table) and a narrow segnet_basic trained on it in ~10 s: the export, INT8,
CLI and logit-adjustment tests share them through the session fixtures ``folder_dataset`` and
``trained_checkpoint`` in conftest.py."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from perception.contracts import ClassTable

#: Image size of the blocks dataset, and the model input of its checkpoint.
HW = (64, 96)
COLOURS_BGR = {0: (40, 40, 40), 1: (200, 60, 60), 2: (60, 200, 60), 3: (60, 60, 220)}


def scene(rng) -> tuple[np.ndarray, np.ndarray]:
    """Random coloured rectangles on a dark background, with texture noise; label = colour's class."""
    label = np.zeros(HW, np.uint8)
    for _ in range(int(rng.integers(2, 5))):
        cls = int(rng.integers(1, 4))
        y0, x0 = int(rng.integers(0, HW[0] - 16)), int(rng.integers(0, HW[1] - 16))
        label[y0 : y0 + int(rng.integers(12, 40)), x0 : x0 + int(rng.integers(12, 50))] = cls
    lut = np.array([COLOURS_BGR[c] for c in range(4)], np.int16)
    image = lut[label] + rng.normal(0, 12, (*HW, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label


def write_dataset(root: Path) -> tuple[Path, ClassTable]:
    """48 train and 12 val scenes under ``root``; returns ``(root, class table)``."""
    table = {
        "classes": [
            {"id": 0, "name": "background", "color": [40, 40, 40]},
            {"id": 1, "name": "road", "color": [60, 60, 200]},
            {"id": 2, "name": "lane_marking", "color": [60, 200, 60]},
            {"id": 3, "name": "car", "color": [220, 60, 60]},
        ],
        "ignore_id": 255,
        "task_groups": {"drivable": ["road", "lane_marking"], "lane": ["lane_marking"], "obstacle": ["car"]},
    }
    rng = np.random.default_rng(7)
    for split, count in (("train", 48), ("val", 12)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir()
        (root / split / "classes.yaml").write_text(yaml.safe_dump(table))
        for i in range(count):
            image, label = scene(rng)
            cv2.imwrite(str(root / split / "images" / f"{i:03d}.png"), image)
            cv2.imwrite(str(root / split / "labels" / f"{i:03d}.png"), label)
    return root, ClassTable.from_dict(table)


def train_checkpoint(root: Path, table: ClassTable, checkpoint_path: Path):
    """segnet_basic (narrowest) trained 200 steps (~10 s, one torch thread) to segment the rectangles;
    saved to ``checkpoint_path``. Returns ``(path, Checkpoint)``."""
    import torch

    from perception.datasets import open_dataset
    from perception.metrics import ConfusionMatrix
    from perception.models import build_model
    from perception.training.checkpoint import Checkpoint, save_checkpoint

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = build_model("segnet_basic", num_classes=table.num_classes, width=0.125)
        train = open_dataset(f"folder:{root}", split="train")
        mean, std = np.array((0.485, 0.456, 0.406), np.float32), np.array((0.229, 0.224, 0.225), np.float32)

        def tensor(images):
            rgb = np.stack(images)[..., ::-1].astype(np.float32) / 255.0
            return torch.from_numpy(np.ascontiguousarray(((rgb - mean) / std).transpose(0, 3, 1, 2)))

        data = [train[i] for i in range(len(train))]
        x_all, y_all = tensor([d[0] for d in data]), torch.from_numpy(np.stack([d[1] for d in data])).long()
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for step in range(200):
            idx = torch.randint(0, len(data), (4,), generator=torch.Generator().manual_seed(step))
            out = model(x_all[idx])
            logits = out["out"] if isinstance(out, dict) else out
            loss = torch.nn.functional.cross_entropy(logits, y_all[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        model.eval()
        val = open_dataset(f"folder:{root}", split="val")
        matrix = ConfusionMatrix(table.num_classes, ignore_id=table.ignore_id)
        with torch.no_grad():
            for image, label in (val[i] for i in range(len(val))):
                matrix.update(model(tensor([image])).argmax(1)[0].numpy(), label)
        ckpt = Checkpoint(
            model_name="segnet_basic",
            model_kwargs={"width": 0.125},
            class_table=table,
            input_hw=HW,
            state_dict=model.state_dict(),
            dataset=f"folder:{root}",
            metrics=matrix.summary(table),
        )
        assert matrix.miou() > 0.6, f"the test model did not learn (val mIoU {matrix.miou():.2f})"
        return save_checkpoint(checkpoint_path, ckpt), ckpt
    finally:
        torch.set_num_threads(threads)
