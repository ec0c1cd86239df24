"""Joint image + mask augmentation and the torch views of the numpy datasets.

Training samples go through torchvision transforms v2 with the image wrapped as
``tv_tensors.Image`` and the label as ``tv_tensors.Mask``, so geometric ops move both and the mask
is resampled with nearest neighbour: random scale, random crop to the training size (padding the
image with 0 and the mask with the ignore id), horizontal flip, colour jitter, then float RGB
normalised with the ImageNet mean/std (``contracts.IMAGENET_MEAN_RGB/STD``).

Optional, off unless asked for (``TrainConfig.photometric``, ``style_prob``, ``pasta``,
``letterbox_prob``):

- photometric: brightness, contrast, saturation, hue, gamma, blur, JPEG artefacts and sensor
  noise, so a model trained on clean renders copes with real cameras;
- style: now and then a grey image or swapped colour channels, so it does not lean on exact hues;
- pasta: the image's Fourier amplitude spectrum scaled by random factors whose spread grows with
  the spatial frequency (PASTA, Chattopadhyay et al. 2023): rendered scenes are poorer than real
  ones in fine detail, so a model trained on them learns to leave textures alone;
- letterbox: the sample is cut to another camera's aspect ratio (4:3, 16:9, ...) and padded back
  into the input exactly as the node letterboxes (``perception.preprocess.Letterbox``, pad value
  ``PAD_VALUE``; the padded labels are ignored), so a 16:9-trained model copes with 4:3 frames and
  the other way round.

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
from perception.preprocess import PAD_VALUE, Letterbox

#: Fill value of padded label pixels when a class table has no ignore id of its own.
DEFAULT_IGNORE_ID = 255
#: Camera aspect ratios (width / height) that the letterbox augmentation imitates.
CAMERA_ASPECTS = (4 / 3, 3 / 2, 16 / 10, 16 / 9, 2.0, 5 / 4)


class RandomGamma(v2.Transform):
    """Gamma curve ``x ** g`` with ``log g`` uniform in +-``log_range`` (images only, masks untouched)."""

    def __init__(self, log_range: float) -> None:
        super().__init__()
        self.log_range = log_range

    def make_params(self, flat_inputs: list) -> dict:
        return {"gamma": float(torch.empty(()).uniform_(-self.log_range, self.log_range).exp())}

    def transform(self, inpt, params: dict):
        if isinstance(inpt, tv_tensors.Image):
            return v2.functional.adjust_gamma(inpt, params["gamma"])
        return inpt


class ScaleJitter(v2.ScaleJitter):
    """torchvision's ``ScaleJitter`` (same draws, same sizes) with each side kept at 1 pixel or more.

    torchvision truncates ``side * ratio`` to an int, so an image of extreme aspect ratio (say
    2000x20 at a 48x64 input: ratio 0.024, width 20 * 0.024 -> 0) would be resized to zero pixels
    and the resize raise; here that side becomes 1 and the crop that follows pads the rest."""

    def make_params(self, flat_inputs: list) -> dict:
        new_height, new_width = super().make_params(flat_inputs)["size"]
        return {"size": (max(1, new_height), max(1, new_width))}


class RandomLetterbox(v2.Transform):
    """With probability ``p``: cut the sample to a random camera aspect ratio of ``CAMERA_ASPECTS``
    (a random window, at the same scale) and letterbox it back into its size exactly as the node's
    ``Letterbox`` does: centred, image padding ``PAD_VALUE`` (1/255 of it for float images), label
    padding ``ignore_id``. Aspects within 3 % of the sample's own are skipped (nothing to pad)."""

    def __init__(self, p: float, *, ignore_id: int) -> None:
        super().__init__()
        self.p = p
        self.ignore_id = ignore_id

    def make_params(self, flat_inputs: list) -> dict:
        height, width = next(x for x in flat_inputs if isinstance(x, tv_tensors.Image)).shape[-2:]
        if not float(torch.rand(())) < self.p:
            return {"box": None}
        aspect = CAMERA_ASPECTS[int(torch.randint(len(CAMERA_ASPECTS), ()))]
        own = width / height
        if abs(aspect / own - 1.0) < 0.03:
            return {"box": None}
        if aspect > own:  # a wider camera: fewer rows, bars above and below
            crop_h, crop_w = max(1, round(width / aspect)), width
        else:  # a narrower camera: fewer columns, bars left and right
            crop_h, crop_w = height, max(1, round(height * aspect))
        top = int(torch.randint(height - crop_h + 1, ()))
        left = int(torch.randint(width - crop_w + 1, ()))
        return {"box": (top, left, crop_h, crop_w), "letterbox": Letterbox.fit((crop_h, crop_w), (height, width))}

    def transform(self, inpt, params: dict):
        box = params["box"]
        if box is None or not isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            return inpt
        top, left, crop_h, crop_w = box
        letterbox: Letterbox = params["letterbox"]
        crop = inpt[..., top : top + crop_h, left : left + crop_w]
        if isinstance(inpt, tv_tensors.Mask):
            pad = self.ignore_id
        else:
            pad = PAD_VALUE if not inpt.is_floating_point() else PAD_VALUE / 255.0
        # The node's geometry (centring, content size) on channel-last numpy, as the node does it.
        source = crop.as_subclass(torch.Tensor)
        channels_last = source.ndim == 3
        array = (source.permute(1, 2, 0) if channels_last else source).contiguous().numpy()
        out = np.full((*letterbox.dst_hw, *array.shape[2:]), pad, dtype=array.dtype)
        letterbox.apply(array, out)
        result = torch.from_numpy(out)
        return tv_tensors.wrap(result.permute(2, 0, 1) if channels_last else result, like=inpt)


class RandomAmplitudeSpectrum(v2.Transform):
    """PASTA (Chattopadhyay et al., "PASTA: Proportional Amplitude Spectrum Training Augmentation
    for Syn-to-Real Domain Generalization", ICCV 2023), on float images in 0..1 (masks untouched).

    Each channel's 2-D Fourier amplitude at frequency radius ``r`` (0 at the mean, 1 at the highest
    frequency present) is multiplied by a draw from N(1, sigma(r)), sigma(r) = (alpha * r) ** k +
    beta; the phase is kept, so edges and layout stay where they are while fine texture, contrast
    and colour balance change, the fine ones most. The defaults are the paper's for semantic
    segmentation (alpha 3, k 2, beta 0.25). Written here because torchvision has no spectral
    augmentation; the draws come from torch's generator like every other v2 transform's.
    """

    def __init__(self, alpha: float = 3.0, k: float = 2.0, beta: float = 0.25) -> None:
        super().__init__()
        self.alpha, self.k, self.beta = alpha, k, beta

    def sigma(self, height: int, width: int) -> torch.Tensor:
        """The perturbation's standard deviation per frequency, in ``torch.fft.fft2``'s layout."""
        radius = torch.hypot(torch.fft.fftfreq(height)[:, None], torch.fft.fftfreq(width)[None, :])
        return (self.alpha * radius / radius.max()) ** self.k + self.beta

    def make_params(self, flat_inputs: list) -> dict:
        image = next(x for x in flat_inputs if isinstance(x, tv_tensors.Image))
        sigma = self.sigma(*image.shape[-2:])
        return {"factor": 1.0 + sigma * torch.randn((image.shape[-3], *sigma.shape))}

    def transform(self, inpt, params: dict):
        if not isinstance(inpt, tv_tensors.Image):
            return inpt
        if not inpt.is_floating_point():
            raise TypeError("RandomAmplitudeSpectrum works on float images in 0..1 (put it after ToDtype)")
        spectrum = torch.fft.fft2(inpt.as_subclass(torch.Tensor))
        # Scaling the complex coefficients scales the amplitude and keeps the phase (a negative
        # factor turns the phase by pi, as a negative amplitude does in the paper's formulation).
        out = torch.fft.ifft2(spectrum * params["factor"]).real.clamp_(0.0, 1.0)
        return tv_tensors.wrap(out.to(inpt.dtype), like=inpt)


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
    photometric: float = 0.0,
    style_prob: float = 0.0,
    pasta: float = 0.0,
    pasta_alpha: float = 3.0,
    letterbox_prob: float = 0.0,
) -> v2.Compose:
    """The training pipeline on (tv_tensors.Image uint8 RGB, tv_tensors.Mask uint8).

    Images are scale-jittered relative to the model input ``input_hw`` (so objects keep the size
    they have at inference), then cut to ``crop_hw`` (default: ``input_hw``). ``photometric``
    (0..1) is the strength and frequency of the camera-like colour, blur, JPEG and noise changes,
    ``style_prob`` the chance of a grey image or of swapped colour channels, ``pasta`` the chance of
    the amplitude-spectrum perturbation (``RandomAmplitudeSpectrum`` with ``pasta_alpha``), ``letterbox_prob`` the
    chance of the letterbox/pillarbox padding of another camera's aspect ratio (see the module
    docstring). All four at 0 give the pipeline of earlier versions, draw for draw.
    """
    height, width = input_hw
    crop_h, crop_w = crop_hw or input_hw
    steps: list[v2.Transform] = [
        # ScaleJitter scales relative to the image fitted into target_size, which it takes as
        # (width, height): a 360x480 image at a 360x480 input is scaled by 0.5..2.0 of itself
        # (never to less than 1 pixel a side: see ScaleJitter above).
        ScaleJitter(target_size=(width, height), scale_range=scale_range),
        v2.RandomCrop((crop_h, crop_w), pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_id}),
    ]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if color_jitter > 0:
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    s = photometric
    if s > 0:
        steps += [
            v2.RandomApply([v2.ColorJitter(brightness=0.5 * s, contrast=0.5 * s, saturation=0.7 * s, hue=0.06 * s)], p=0.8),
            v2.RandomApply([RandomGamma(0.45 * s)], p=0.5),
            v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 0.3 + 1.5 * s))], p=0.35 * s),
            v2.RandomApply([v2.JPEG((max(5, int(round(90 - 65 * s))), 95))], p=0.35 * s),
        ]
    if style_prob > 0:
        steps += [v2.RandomGrayscale(p=style_prob / 2), v2.RandomApply([v2.RandomChannelPermutation()], p=style_prob / 2)]
    steps.append(v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64}, scale=True))
    if pasta > 0:
        steps.append(v2.RandomApply([RandomAmplitudeSpectrum(alpha=pasta_alpha)], p=pasta))
    if s > 0:
        steps.append(v2.RandomApply([v2.GaussianNoise(sigma=0.04 * s)], p=0.4 * s))
    if letterbox_prob > 0:  # last, so nothing above touches the padding (it stays the node's pad value)
        steps.append(RandomLetterbox(letterbox_prob, ignore_id=ignore_id))
    steps.append(v2.Normalize(mean=list(IMAGENET_MEAN_RGB), std=list(IMAGENET_STD_RGB)))
    return v2.Compose(steps)


def normalise_bgr(image_bgr: np.ndarray) -> torch.Tensor:
    """uint8 BGR H x W x 3 -> float RGB 3 x H x W normalised like training."""
    rgb = torch.from_numpy(np.ascontiguousarray(image_bgr[..., ::-1])).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN_RGB).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD_RGB).view(3, 1, 1)
    return (rgb - mean) / std


class TrainSamples(Dataset):
    """Augmented training samples: ``(image float 3xHxW, label int64 HxW)``.

    With ``copy_paste`` > 0, that share of samples get the pixels of the classes ``paste_ids`` of
    another augmented sample pasted over them, image and label: rare-class copy-paste (the
    "simple copy-paste" of Ghiasi et al. 2021 and ClassMix of Olsson et al. 2021, with the pasted
    classes fixed to the rare ones). Poles, signs and people then appear in front of buildings,
    trees and roads they never stood before, and a few hundred frames of one town show them in
    more contexts. Written here because torchvision has no label-aware paste; both samples are
    augmented (and cropped to the same size) first, so the pasted pixels keep their scale. Nothing
    is pasted onto ``ignore_id`` pixels (the padding around a scaled-down frame).
    """

    def __init__(self, dataset: NumpyDataset, transform: v2.Compose, *, seed: int, copy_paste: float = 0.0,
                 paste_ids: tuple[int, ...] = (), ignore_id: int = DEFAULT_IGNORE_ID) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.copy_paste = copy_paste
        self.paste_ids = torch.tensor(sorted(paste_ids), dtype=torch.int64)
        self.ignore_id = ignore_id

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):  # a MixedDataset walks its pool epoch by epoch
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self._augmented(index, (self.seed, self.epoch, index))
        if self.copy_paste > 0:
            draws = np.random.default_rng([self.seed, self.epoch, index, 1])
            if draws.random() < self.copy_paste and len(self.dataset) > 1:
                other = int(draws.integers(len(self.dataset) - 1))
                other += other >= index  # never the sample itself
                donor_image, donor_mask = self._augmented(other, (self.seed, self.epoch, index, 2))
                pasted = torch.isin(donor_mask, self.paste_ids) & (mask != self.ignore_id)
                image = torch.where(pasted, donor_image, image)
                mask = torch.where(pasted, donor_mask, mask)
        return image, mask

    def _augmented(self, index: int, seed: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        image_bgr, label = self.dataset[index]
        image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image_bgr[..., ::-1])).permute(2, 0, 1))
        mask = tv_tensors.Mask(torch.from_numpy(label))
        # v2 transforms draw from torch's global generator: seed it per sample inside fork_rng so
        # the draws are reproducible and the caller's RNG stream is left untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.SeedSequence(list(seed)).generate_state(1)[0]))
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
