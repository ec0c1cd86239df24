"""The training configuration: one dataclass, loaded from YAML and ``--set key=value`` flags.

``load_train_config(path, overrides)`` reads the YAML file (optional), applies overrides on top,
and validates everything through ``perception.config.load_config`` (unknown keys rejected with a
"did you mean" hint, ranges checked). The resolved config is printed at start and stored in every
checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from perception.config import bounds, load_config, read_yaml
from perception.errors import ConfigError


@dataclass
class TrainConfig:
    # ---- model and data
    model: str = "bisenetv2"
    #: Extra builder arguments, e.g. {aux: true}; ``pretrained`` is passed separately.
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    #: False (random init), True (torchvision ImageNet weights, from the local cache) or a .pth path.
    pretrained: bool | str = False
    data: str = "synthetic"
    #: Validation dataset spec; empty means the ``val`` split of ``data``.
    val_data: str = ""
    val_split: str = "val"
    #: Training crop and model input size (height, width); validation images are resized to it.
    input_hw: tuple[int, int] = (360, 480)
    #: Training crop (height, width), cut after scale jitter relative to ``input_hw``; empty means
    #: ``input_hw``. Smaller crops train several times faster on a CPU and the fully convolutional
    #: model still runs at ``input_hw``.
    crop_hw: tuple[int, int] | None = None
    # ---- augmentation
    scale_range: tuple[float, float] = (0.5, 2.0)
    hflip: bool = True
    color_jitter: float = field(default=0.3, metadata=bounds(0.0, 1.0))
    #: Camera-like photometric augmentation, strength 0..1 (brightness, contrast, saturation, hue,
    #: gamma, blur, JPEG, noise); 0 keeps the plain colour jitter only.
    photometric: float = field(default=0.0, metadata=bounds(0.0, 1.0))
    #: Chance of a style change per sample: a grey image or swapped colour channels.
    style_prob: float = field(default=0.0, metadata=bounds(0.0, 1.0))
    #: Chance of cutting a sample to another camera's aspect ratio (4:3, 16:9, ...) and letterboxing
    #: it back exactly as the node does (padded labels ignored).
    letterbox_prob: float = field(default=0.0, metadata=bounds(0.0, 1.0))
    # ---- schedule (``steps`` > 0 wins over ``epochs``)
    epochs: int = field(default=100, metadata=bounds(1, None))
    steps: int = field(default=0, metadata=bounds(0, None))
    batch_size: int = field(default=8, metadata=bounds(1, None))
    val_batch_size: int = field(default=4, metadata=bounds(1, None))
    #: Validate every this many optimiser steps (0: at the end of every epoch).
    val_every: int = field(default=0, metadata=bounds(0, None))
    # ---- optimiser
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = field(default=1e-3, metadata=bounds(0.0, 10.0))
    weight_decay: float = field(default=1e-4, metadata=bounds(0.0, 1.0))
    momentum: float = field(default=0.9, metadata=bounds(0.0, 1.0))
    poly_power: float = field(default=0.9, metadata=bounds(0.0, 10.0))
    warmup_steps: int = field(default=0, metadata=bounds(0, None))
    grad_clip: float = field(default=0.0, metadata=bounds(0.0, None))
    amp: bool = True
    #: Under DDP on CUDA, synchronise BatchNorm statistics across GPUs.
    sync_bn: bool = True
    # ---- loss
    loss: str = "ce"
    class_weighting: Literal["none", "enet", "median_freq"] = "none"
    aux_weight: float = field(default=0.4, metadata=bounds(0.0, 10.0))
    ohem_threshold: float = field(default=0.7, metadata=bounds(0.0, 1.0))
    ohem_min_fraction: float = field(default=1.0 / 16.0, metadata=bounds(0.0, 1.0))
    focal_gamma: float = field(default=2.0, metadata=bounds(0.0, 10.0))
    #: Importance-aware loss: weight per importance level (sky, background, road, vehicles/people).
    ial_level_weights: tuple[float, float, float, float] = (1.0, 1.5, 2.0, 3.0)
    #: Class name -> level 0..3, overriding the built-in keyword grouping.
    ial_levels: dict[str, int] = field(default_factory=dict)
    # ---- run
    out: Path = Path("runs/train")
    seed: int = 0
    device: str = "auto"
    workers: int = field(default=2, metadata=bounds(0, 64))
    torch_threads: int = field(default=0, metadata=bounds(0, 256))
    log_every: int = field(default=10, metadata=bounds(1, None))
    progress: bool = True

    def __post_init__(self) -> None:
        if min(self.input_hw) < 8:
            raise ValueError(f"input_hw={list(self.input_hw)} is too small (at least 8x8)")
        if self.crop_hw is not None and min(self.crop_hw) < 8:
            raise ValueError(f"crop_hw={list(self.crop_hw)} is too small (at least 8x8)")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range={list(self.scale_range)} must satisfy 0 < low <= high")
        if any(w < 0 for w in self.ial_level_weights):
            raise ValueError("ial_level_weights must be non-negative")
        bad = {k: v for k, v in self.ial_levels.items() if v not in (0, 1, 2, 3)}
        if bad:
            raise ValueError(f"ial_levels values must be 0..3, got {bad}")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr=0.01", "input_hw=[360,480]"]`` -> ``{"lr": 0.01, "input_hw": [360, 480]}`` (YAML values)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set lr=0.01")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: value is not valid YAML") from None
    return out


def load_train_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The config of ``path`` (if any) with ``overrides`` applied; ConfigError naming the key."""
    data = read_yaml(path) if path else {}
    data.update(overrides or {})
    source = f"{path}" if path else "train config"
    return load_config(TrainConfig, data, source=source)
