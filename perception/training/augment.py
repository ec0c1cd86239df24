"""Joint image + mask augmentation and the torch views of the numpy datasets.

Training samples go through torchvision transforms v2 with the image wrapped as
``tv_tensors.Image`` and the label as ``tv_tensors.Mask``, so geometric ops move both and the mask
is resampled with nearest neighbour: random scale, random crop to the training size (padding the
image with 0 and the mask with the ignore id), horizontal flip, colour jitter, then float RGB
normalised with the ImageNet mean/std (``contracts.IMAGENET_MEAN_RGB/STD``).

Every sample's random draws come from a generator seeded with ``(seed, epoch, index)``, so the
augmentation of a sample does not depend on worker count or on where a run was resumed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from perception.contracts import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
from perception.datasets import Dataset as NumpyDataset

#: Fill value of padded label pixels when a class table has no ignore id of its own.
DEFAULT_IGNORE_ID = 255


def ignore_id_of(dataset: NumpyDataset) -> int:
    table = dataset.class_table
    return DEFAULT_IGNORE_ID if table.ignore_id is None else table.ignore_id


def build_train_transform(
    input_hw: tuple[int, int],
    *,
    ignore_id: int,
    crop_hw: tuple[int, int] | None = None,
    scale_range: tuple[float, float] = (0.5, 2.0),
    hflip: bool = True,
    color_jitter: float = 0.3,
) -> v2.Compose:
    """The training pipeline on (tv_tensors.Image uint8 RGB, tv_tensors.Mask uint8).

    Images are scale-jittered relative to the model input ``input_hw`` (so objects keep the size
    they have at inference), then cut to ``crop_hw`` (default: ``input_hw``).
    """
    height, width = input_hw
    crop_h, crop_w = crop_hw or input_hw
    steps: list[v2.Transform] = [
        # ScaleJitter scales relative to the image fitted into target_size, which it takes as
        # (width, height): a 360x480 image at a 360x480 input is scaled by 0.5..2.0 of itself.
        v2.ScaleJitter(target_size=(width, height), scale_range=scale_range),
        v2.RandomCrop((crop_h, crop_w), pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_id}),
    ]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if color_jitter > 0:
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    steps += [
        v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64}, scale=True),
        v2.Normalize(mean=list(IMAGENET_MEAN_RGB), std=list(IMAGENET_STD_RGB)),
    ]
    return v2.Compose(steps)


def normalise_bgr(image_bgr: np.ndarray) -> torch.Tensor:
    """uint8 BGR H x W x 3 -> float RGB 3 x H x W normalised like training."""
    rgb = torch.from_numpy(np.ascontiguousarray(image_bgr[..., ::-1])).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN_RGB).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD_RGB).view(3, 1, 1)
    return (rgb - mean) / std


class TrainSamples(Dataset):
    """Augmented training samples: ``(image float 3xHxW, label int64 HxW)``."""

    def __init__(self, dataset: NumpyDataset, transform: v2.Compose, *, seed: int) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_bgr, label = self.dataset[index]
        image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image_bgr[..., ::-1])).permute(2, 0, 1))
        mask = tv_tensors.Mask(torch.from_numpy(label))
        # v2 transforms draw from torch's global generator: seed it per sample inside fork_rng so
        # the draws are reproducible and the caller's RNG stream is left untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]))
            image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


class EvalSamples(Dataset):
    """Validation samples: the image letterboxed into the model input exactly as the node does
    (``perception.preprocess``, the node's own code), the label at full resolution.

    Returns ``(image float 3 x H_in x W_in, label int64 H x W, content int64 [top, left, h, w])``:
    ``content`` is where the image sits inside the input; the prediction is cropped to it and
    resized back to the label size before scoring, so metrics are at the dataset's resolution.
    """

    def __init__(self, dataset: NumpyDataset, input_hw: tuple[int, int]) -> None:
        self.dataset = dataset
        self.input_hw = input_hw

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from perception.preprocess import letterbox_image

        image_bgr, label = self.dataset[index]
        image_bgr, letterbox = letterbox_image(image_bgr, self.input_hw)
        content = torch.tensor([*letterbox.offset_yx, *letterbox.content_hw])
        return normalise_bgr(image_bgr), torch.from_numpy(label.astype(np.int64)), content


def collate_eval(
    batch: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Stack the (equal-size) inputs; keep labels (sizes may differ) and content boxes as lists."""
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch], [b[2] for b in batch]
