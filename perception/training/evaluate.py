"""Score a training checkpoint or an exported model on a dataset: ``perception eval``.

``evaluate_engine`` runs an exported model through an ``Engine`` (e.g. ONNX Runtime): each BGR
image is resized to the model input with OpenCV (bilinear), the uint8 class ids come back and are
resized to the label size with nearest neighbour. It uses numpy and OpenCV only, so evaluating an
ONNX file never imports torch. ``evaluate_checkpoint`` builds the checkpoint's model and scores it
exactly as validation during training does (logits resized bilinearly to the label size); it
imports torch when called.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2

from perception.contracts import ClassTable
from perception.datasets import Dataset
from perception.errors import DataError, DependencyError
from perception.metrics import ConfusionMatrix


def check_classes(model_table: ClassTable, dataset: Dataset, *, source: str) -> None:
    """DataError unless the model predicts the dataset's classes (same names in the same order)."""
    if model_table.names != dataset.class_table.names:
        raise DataError(
            f"{source} predicts classes {model_table.names}, but dataset {dataset.name!r} labels "
            f"{dataset.class_table.names}; evaluate on the dataset it was trained for"
        )


def evaluate_engine(engine, dataset: Dataset, *, on_sample: Callable[[], None] | None = None) -> ConfusionMatrix:
    """Confusion matrix of ``engine`` (``perception.engines.Engine``) over every sample of ``dataset``."""
    check_classes(engine.metadata.class_table, dataset, source=engine.model_path)
    table = dataset.class_table
    cm = ConfusionMatrix(table.num_classes, ignore_id=table.ignore_id)
    height, width = engine.input_hw
    for index in range(len(dataset)):
        image, label = dataset[index]
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        class_ids = engine.infer(image[None])["class_ids"][0]
        if class_ids.shape != label.shape:
            class_ids = cv2.resize(class_ids, (label.shape[1], label.shape[0]), interpolation=cv2.INTER_NEAREST)
        cm.update(class_ids, label)
        if on_sample is not None:
            on_sample()
    return cm


def evaluate_checkpoint(
    path: str | Path, dataset: Dataset, *, device: str = "auto", batch_size: int = 4, workers: int = 2, threads: int = 0
) -> ConfusionMatrix:
    """Confusion matrix of the checkpoint's model over ``dataset`` (ModelError for a bad file).

    ``threads`` > 0 sets torch's CPU threads. DependencyError when torch is not installed.
    """
    try:
        import torch
        from torch.utils.data import DataLoader
    except ImportError:
        raise DependencyError(
            "evaluating a .pt checkpoint needs torch: pip install -e '.[train]' "
            "(or evaluate the exported .onnx with --model, which needs no torch)"
        ) from None

    from perception.training.augment import EvalSamples, collate_eval, ignore_id_of
    from perception.training.checkpoint import build_model_from_checkpoint, load_checkpoint
    from perception.training.distributed import DistInfo, pick_device
    from perception.training.trainer import score_loader

    if threads > 0:
        torch.set_num_threads(threads)
    ckpt = load_checkpoint(path)
    check_classes(ckpt.class_table, dataset, source=f"checkpoint {path}")
    torch_device = pick_device(device, DistInfo())
    model = build_model_from_checkpoint(ckpt, device=torch_device)
    loader = DataLoader(
        EvalSamples(dataset, ckpt.input_hw), batch_size=batch_size, num_workers=workers, collate_fn=collate_eval
    )
    return score_loader(
        model,
        loader,
        device=torch_device,
        num_classes=ckpt.num_classes,
        ignore_id=ignore_id_of(dataset),
        use_amp=torch_device.type == "cuda",
    )
