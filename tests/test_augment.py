"""Training augmentation: photometric, style and spectrum changes touch only the image, the
letterbox augmentation pads exactly like the node, every draw is reproducible, and the config keys
are checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from perception.contracts import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
from perception.errors import ConfigError
from perception.preprocess import PAD_VALUE, Letterbox
from perception.training.augment import CAMERA_ASPECTS, build_train_transform
from perception.training.config import TrainConfig, load_train_config

HW = (36, 64)  # 16:9, as the node's default camera
IGNORE = 255


def _sample(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = tv_tensors.Image(torch.randint(30, 220, (3, *HW), dtype=torch.uint8, generator=g))
    mask = tv_tensors.Mask(torch.randint(0, 5, HW, dtype=torch.uint8, generator=g))
    return image, mask


def _run(transform, seed: int):
    image, mask = _sample()
    torch.manual_seed(seed)
    out_image, out_mask = transform(image, mask)
    return out_image.as_subclass(torch.Tensor), out_mask.as_subclass(torch.Tensor)


def _plain(**kwargs):
    # No geometry (scale 1, no flip), so only what is under test changes the sample.
    return build_train_transform(HW, ignore_id=IGNORE, scale_range=(1.0, 1.0), hflip=False, color_jitter=0.0, **kwargs)


def test_photometric_and_style_change_the_image_never_the_labels():
    plain = _plain()
    heavy = _plain(photometric=1.0, style_prob=1.0)
    _, mask = _sample()
    changed = 0
    for seed in range(12):
        base_image, base_mask = _run(plain, seed)
        image, out_mask = _run(heavy, seed)
        assert torch.equal(out_mask, mask.long()) and torch.equal(base_mask, out_mask)
        assert torch.isfinite(image).all() and image.shape == base_image.shape
        changed += int((image - base_image).abs().mean() > 0.05)
    assert changed >= 10, f"only {changed} of 12 samples were changed by the photometric augmentation"


def _unnormalise(image: torch.Tensor) -> torch.Tensor:
    return image * torch.tensor(IMAGENET_STD_RGB).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN_RGB).view(3, 1, 1)


def test_pasta_perturbs_fine_detail_more_than_the_layout_and_never_the_labels():
    plain = _plain()
    pasta = _plain(pasta=1.0)
    _, mask = _sample()
    radius = torch.hypot(torch.fft.fftfreq(HW[0])[:, None], torch.fft.fftfreq(HW[1])[None, :])
    radius = radius / radius.max()
    low, high = (radius > 0) & (radius < 0.2), radius > 0.7
    # A low-contrast texture, so the clamp to 0..1 does not hide what the spectrum did.
    g = torch.Generator().manual_seed(0)
    texture = tv_tensors.Image(torch.randint(100, 156, (3, *HW), dtype=torch.uint8, generator=g))
    low_change, high_change = [], []
    for seed in range(8):
        torch.manual_seed(seed)
        base, base_mask = (x.as_subclass(torch.Tensor) for x in plain(texture, mask))
        torch.manual_seed(seed)
        image, out_mask = (x.as_subclass(torch.Tensor) for x in pasta(texture, mask))
        assert torch.equal(out_mask, mask.long()) and torch.equal(base_mask, out_mask)
        rgb = _unnormalise(image)
        assert rgb.min() >= -1e-5 and rgb.max() <= 1 + 1e-5, "PASTA leaves an image in 0..1"
        ratio = (torch.fft.fft2(rgb).abs() + 1e-6) / (torch.fft.fft2(_unnormalise(base)).abs() + 1e-6)
        change = ratio.log().abs()
        low_change.append(float(change[:, low].median()))
        high_change.append(float(change[:, high].median()))
    # The coarse layout moves a little (sigma 0.25 .. 0.61 there), the finest detail a lot (up to 9.25).
    assert max(low_change) < 0.35 and min(high_change) > 3 * max(low_change), (low_change, high_change)
    # A smaller alpha (for smaller images) perturbs the finest detail less.
    milder = _plain(pasta=1.0, pasta_alpha=1.0)
    torch.manual_seed(0)
    image, _ = (x.as_subclass(torch.Tensor) for x in milder(texture, mask))
    ratio = (torch.fft.fft2(_unnormalise(image)).abs() + 1e-6) / (torch.fft.fft2(_unnormalise(base)).abs() + 1e-6)
    assert float(ratio.log().abs()[:, high].median()) < 0.7 * min(high_change)


def test_pasta_keeps_where_things_are():
    # A bright square on a dark ground: its phase is kept, so after PASTA the square's pixels
    # are still, on average, the brighter ones.
    image = torch.full((3, *HW), 40, dtype=torch.uint8)
    image[:, 10:26, 20:44] = 200
    mask = torch.zeros(HW, dtype=torch.uint8)
    for seed in range(8):
        torch.manual_seed(seed)
        out, _ = _plain(pasta=1.0)(tv_tensors.Image(image), tv_tensors.Mask(mask))
        rgb = _unnormalise(out.as_subclass(torch.Tensor)).mean(0)
        inside = rgb[10:26, 20:44].mean()
        outside = torch.cat([rgb[:10].flatten(), rgb[26:].flatten()]).mean()
        assert inside > outside + 0.2, (seed, float(inside), float(outside))


def test_letterbox_pads_like_the_node_and_ignores_the_padded_labels():
    transform = _plain(letterbox_prob=1.0)
    pad_rgb = (PAD_VALUE / 255.0 - torch.tensor(IMAGENET_MEAN_RGB)) / torch.tensor(IMAGENET_STD_RGB)
    bars = {"rows": 0, "columns": 0}
    for seed in range(24):
        image, mask = _run(transform, seed)
        content_rows = np.flatnonzero((mask != IGNORE).any(1).numpy())
        content_cols = np.flatnonzero((mask != IGNORE).any(0).numpy())
        ch, cw = len(content_rows), len(content_cols)
        if (ch, cw) == HW:
            continue  # the aspect drawn was the sample's own
        bars["rows" if ch < HW[0] else "columns"] += 1
        # The geometry is the node's Letterbox of a frame with that aspect, centred.
        expected = Letterbox.fit((ch, cw), HW)
        assert (content_rows[0], content_cols[0]) == expected.offset_yx
        padded = mask == IGNORE
        assert padded.sum() == HW[0] * HW[1] - ch * cw
        assert torch.allclose(image[:, padded], pad_rgb[:, None].expand(3, int(padded.sum())), atol=1e-5)
        # The aspect is one of the camera aspects.
        assert min(abs(cw / ch - a) for a in CAMERA_ASPECTS) < 0.06
    assert bars["rows"] >= 2 and bars["columns"] >= 2, bars


def test_augmented_samples_are_reproducible():
    transform = _plain(photometric=0.8, style_prob=0.3, pasta=0.5, letterbox_prob=0.5)
    for seed in range(4):
        a = _run(transform, seed)
        b = _run(transform, seed)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_config_keys_default_off_and_are_range_checked():
    config = TrainConfig()
    assert (config.photometric, config.style_prob, config.pasta, config.letterbox_prob) == (0.0, 0.0, 0.0, 0.0)
    loaded = load_train_config(None, {"photometric": 0.7, "style_prob": 0.1, "pasta": 0.5, "letterbox_prob": 0.3})
    assert (loaded.photometric, loaded.style_prob, loaded.pasta, loaded.letterbox_prob) == (0.7, 0.1, 0.5, 0.3)
    for key in ("photometric", "style_prob", "pasta", "letterbox_prob"):
        with pytest.raises(ConfigError, match=key):
            load_train_config(None, {key: 1.5})
    assert load_train_config(None, {"pasta_alpha": 1.0}).pasta_alpha == 1.0
    with pytest.raises(ConfigError, match="pasta_alpha"):
        load_train_config(None, {"pasta_alpha": -1.0})


@pytest.mark.parametrize("image_hw", [(2000, 20), (20, 2000), (1, 1)])
def test_extreme_aspect_ratios_are_scaled_to_at_least_one_pixel(image_hw):
    # A 2000x20 frame at a 48x64 input is scaled by about 0.024: torchvision's ScaleJitter made its
    # width 0 and the resize raised ("Input and output sizes should be greater than 0") inside the
    # DataLoader. Now the thin side keeps 1 pixel and the crop pads the rest with the ignore id.
    from perception.training.augment import TrainSamples

    class Frames:
        class_table = None

        def __len__(self):
            return 4

        def __getitem__(self, index):
            return np.full((*image_hw, 3), 100, np.uint8), np.full(image_hw, index % 3, np.uint8)

    transform = build_train_transform((48, 64), ignore_id=IGNORE, scale_range=(0.5, 2.0))
    samples = TrainSamples(Frames(), transform, seed=0)
    for index in range(len(samples)):
        image, mask = samples[index]
        assert image.shape == (3, 48, 64) and mask.shape == (48, 64)
        assert set(mask.unique().tolist()) <= {index % 3, IGNORE}
