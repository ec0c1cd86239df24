"""The training configuration: one dataclass, loaded from YAML and ``--set key=value`` flags.

``load_train_config(path, overrides)`` reads the YAML file (optional), applies overrides on top,
and validates everything through ``perception.config.load_config`` (unknown keys rejected with a
"did you mean" hint, ranges checked). The resolved config is printed at start and stored in every
checkpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from perception.config import (
    bounds,
    cut,
    hw_from_text,
    hw_to_text,
    load_config,
    parse_hw,
    setting,
    short,
)
from perception.contracts import MAX_MODEL_INPUT_SIDE, MIN_MODEL_INPUT_SIDE
from perception.errors import ConfigError
from perception.yamlfile import parse_yaml, read_yaml


def pretrained_from_text(text: str) -> bool | str:
    """``--pretrained`` as the config value: True for 'imagenet', False for 'none', else a file path.

    Raises ConfigError for a path that is not a file."""
    word = text.strip().lower()
    if word in ("imagenet", "true"):
        return True
    if word in ("none", "false", ""):
        return False
    path = Path(text).expanduser()
    if path.is_dir():
        raise ConfigError(f"--pretrained {text}: is a directory; give the .pth state dict file inside it, 'imagenet' "
                          "or 'none'")
    if not path.is_file():
        raise ConfigError(f"--pretrained {text}: no such file; give a .pth state dict, 'imagenet' or 'none'")
    return str(path)


#: numpy's and torch's seeds are 32-bit: a larger one failed deep in the data loader.
MAX_SEED = 2**32 - 1
#: The largest scale jitter: 10x a side is already 100x the pixels of the model input.
MAX_SCALE = 10.0
#: What a model file is called (``--model`` elsewhere takes one; ``train --model`` an architecture).
_MODEL_FILE_SUFFIXES = (".onnx", ".pt", ".pth", ".engine", ".plan", ".ckpt")
_DEVICE = re.compile(r"auto|cpu|cuda(?::[0-9]{1,3})?")


@dataclass
class TrainConfig:
    # ---- model and data
    model: str = setting("bisenetv2", help="model architecture name, e.g. bisenetv2 (not a file: to continue a run "
                                            "use --resume, for encoder weights --pretrained)")
    #: Extra builder arguments, e.g. {aux: true}; ``pretrained`` is passed separately.
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    #: False (random init), True (torchvision ImageNet weights, from the local cache) or a .pth path.
    pretrained: bool | str = setting(
        False, metavar="PATH|imagenet|none", from_text=pretrained_from_text,
        help="encoder weights: a local .pth file, 'imagenet' (the model's ImageNet weights: installed package or "
             "torch hub cache, downloaded there once if missing) or 'none' (random init)")
    data: str = setting("synthetic", help="training data spec, e.g. camvid:/data/camvid or synthetic")
    #: Validation dataset spec; empty means the ``val`` split of ``data``.
    val_data: str = setting("", help="validation data spec (default: the val split of --data)")
    #: Splits of ``data`` (and ``val_data``) to train and validate on; CamVid takes ``LIST:SEQ+SEQ`` /
    #: ``LIST:-SEQ+SEQ`` to keep or drop sequences (a held-out sequence: train:-0006R0 / train:0006R0).
    train_split: str = "train"
    val_split: str = "val"
    #: A second training dataset mixed into ``data`` (e.g. the synthetic world into CamVid), its
    #: labels mapped into ``data``'s classes by ``mix_classes``; empty: none.
    mix_data: str = ""
    #: The share of training samples drawn from ``mix_data`` (0: none; the rest come from ``data``).
    mix_share: float = field(default=0.0, metadata=bounds(0.0, 0.9))
    #: ``mix_data`` class name -> ``data`` class name; classes left out are ignored in the loss.
    mix_classes: dict[str, str] = field(default_factory=dict)
    #: Training crop and model input size (height, width); validation images are resized to it.
    input_hw: tuple[int, int] = setting((352, 480), flag="--size", metavar="HxW", from_text=hw_from_text,
                                        to_text=hw_to_text,
                                        help="training/model input size HEIGHTxWIDTH, 16..4096 a side and a multiple of the "
                                             "model's stride (32: bisenetv2, litefpn)")
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
    #: Chance of PASTA per sample: the Fourier amplitude spectrum perturbed, fine detail the most
    #: (``augment.RandomAmplitudeSpectrum``), for models trained on rendered scenes.
    pasta: float = field(default=0.0, metadata=bounds(0.0, 1.0))
    #: PASTA's alpha: the spread at the finest frequency is (alpha ** 2 + 0.25); the paper's 3 was
    #: set for 768-pixel crops. On the default model's 256x384 crops both 3 and 1 cost the small
    #: classes (pedestrians) most of their IoU (README, "The default model").
    pasta_alpha: float = field(default=3.0, metadata=bounds(0.0, 10.0))
    #: Chance of cutting a sample to another camera's aspect ratio (4:3, 16:9, ...) and letterboxing
    #: it back exactly as the node does (padded labels ignored).
    letterbox_prob: float = field(default=0.0, metadata=bounds(0.0, 1.0))
    #: Chance of rare-class copy-paste per sample: the pixels of ``copy_paste_classes`` in another
    #: augmented training sample are pasted over this one, image and label (``augment.CopyPaste``).
    copy_paste: float = field(default=0.0, metadata=bounds(0.0, 1.0))
    #: The classes (names of the training data's class table) whose pixels ``copy_paste`` carries.
    copy_paste_classes: list[str] = field(default_factory=list)
    # ---- schedule (``steps`` > 0 wins over ``epochs``)
    epochs: int = setting(100, lo=1, help="epochs (ignored when --steps is given)")
    steps: int = setting(0, lo=0, help="total optimiser steps (0: --epochs decides)")
    #: 1 trains only models without a BatchNorm after a global pooling (``trainer.check_batch_of_one``
    #: refuses it for the others before anything is written).
    batch_size: int = setting(8, lo=1, help="batch size per process; at least 2 for bisenetv1, bisenetv2 and pspnet "
                                            "(their BatchNorm after a global pooling needs 2 images)")
    val_batch_size: int = field(default=4, metadata=bounds(1, None))
    #: Validate every this many optimiser steps (0: at the end of every epoch).
    val_every: int = field(default=0, metadata=bounds(0, None))
    # ---- optimiser
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = setting(1e-3, lo=0.0, hi=10.0, help="peak learning rate")
    weight_decay: float = field(default=1e-4, metadata=bounds(0.0, 1.0))
    momentum: float = field(default=0.9, metadata=bounds(0.0, 1.0))
    poly_power: float = field(default=0.9, metadata=bounds(0.0, 10.0))
    warmup_steps: int = field(default=0, metadata=bounds(0, None))
    grad_clip: float = field(default=0.0, metadata=bounds(0.0, None))
    #: CUDA only: float16 autocast with a gradient scaler. No effect on a CPU (bfloat16 autocast there
    #: measured no faster than ``channels_last`` alone in the CamVid recipe on a 2-core EPYC).
    amp: bool = True
    #: Train in PyTorch's channels-last memory format (NHWC), which oneDNN's CPU convolutions and
    #: CUDA tensor cores run faster (1.2x a LiteFPN step on a 2-core EPYC); the same arithmetic up
    #: to float rounding. Checkpoints and exports do not depend on it.
    channels_last: bool = True
    #: Under DDP on CUDA, synchronise BatchNorm statistics across GPUs.
    sync_bn: bool = True
    # ---- loss
    loss: str = setting("ce", help="loss name: ce, ohem, dice, focal, ial")
    class_weighting: Literal["none", "enet", "median_freq"] = "none"
    aux_weight: float = field(default=0.4, metadata=bounds(0.0, 10.0))
    #: Exponential moving average of the weights (0: off). When on, validation, ``best.pt``,
    #: ``last.pt`` and so export use the averaged weights; its decay after n updates is
    #: min(ema_decay, (1 + n) / (10 + n)), so early weights do not linger (see ``trainer.weight_average``).
    ema_decay: float = field(default=0.0, metadata=bounds(0.0, 0.9999))
    ohem_threshold: float = field(default=0.7, metadata=bounds(0.0, 1.0))
    ohem_min_fraction: float = field(default=1.0 / 16.0, metadata=bounds(0.0, 1.0))
    focal_gamma: float = field(default=2.0, metadata=bounds(0.0, 10.0))
    #: Adds ``lovasz_weight`` x the Lovász-softmax loss (a surrogate of mean IoU) of the main output
    #: to the configured loss (0: off).
    lovasz_weight: float = field(default=0.0, metadata=bounds(0.0, 10.0))
    #: Adds ``skeleton_weight`` x the skeleton recall loss (Kirchhoff et al., ECCV 2024) of each class
    #: in ``skeleton_classes`` (thin structures such as [Pole]) to the configured loss (0: off): the
    #: share of the label's skeleton the prediction misses, so a thin object missed along its length
    #: costs as much as a wide one.
    skeleton_weight: float = field(default=0.0, metadata=bounds(0.0, 10.0))
    skeleton_classes: list[str] = field(default_factory=list)
    #: Skeleton iterations (3x3 erosions): objects up to 2 x this + 1 pixels wide are thinned to a
    #: line; wider ones keep a core, which still counts.
    skeleton_iterations: int = field(default=5, metadata=bounds(1, 50))
    #: Adds ``detail_weight`` x STDC's detail loss (Fan et al., CVPR 2021; binary cross-entropy plus
    #: Dice against the label's class boundaries) on the model's training-only detail head, which
    #: ``model_kwargs: {detail: true}`` adds (litefpn) (0: off).
    detail_weight: float = field(default=0.0, metadata=bounds(0.0, 10.0))
    #: Importance-aware loss: weight per importance level (sky, background, road, vehicles/people).
    ial_level_weights: tuple[float, float, float, float] = (1.0, 1.5, 2.0, 3.0)
    #: Class name -> level 0..3, overriding the built-in keyword grouping.
    ial_levels: dict[str, int] = field(default_factory=dict)
    # ---- run
    out: Path = setting(Path("runs/train"), help="run directory for checkpoints, logs and curves")
    #: Replace a run already in ``out`` (its checkpoints, log, curves and config) instead of refusing.
    overwrite: bool = setting(False, help="replace a run already in --out (refused otherwise; --resume continues one)")
    seed: int = field(default=0, metadata=bounds(0, MAX_SEED))
    #: Seed of the model's initial weights (default: ``seed``). Runs that share it and differ in
    #: ``seed`` start from the same weights and see other data orders and augmentations, which
    #: tells the two sources of run-to-run spread apart.
    init_seed: int | None = field(default=None, metadata=bounds(0, MAX_SEED))
    device: str = setting("auto", help="auto, cpu, cuda or cuda:N")
    workers: int = setting(2, lo=0, hi=64, help="DataLoader worker processes")
    torch_threads: int = field(default=0, metadata=bounds(0, 256))
    log_every: int = field(default=10, metadata=bounds(1, None))
    progress: bool = True

    def __post_init__(self) -> None:
        for key, hw in (("input_hw", self.input_hw), ("crop_hw", self.crop_hw)):
            if hw is not None and not (min(hw) >= MIN_MODEL_INPUT_SIDE and max(hw) <= MAX_MODEL_INPUT_SIDE):
                flag = " (--size)" if key == "input_hw" else ""
                raise ValueError(f"{key}={list(hw)}{flag} is out of range: each side "
                                 f"{MIN_MODEL_INPUT_SIDE}..{MAX_MODEL_INPUT_SIDE}")
        lo, hi = self.scale_range
        if not 0 < lo <= hi <= MAX_SCALE:
            raise ValueError(f"scale_range={list(self.scale_range)} must satisfy 0 < low <= high <= {MAX_SCALE:g}")
        if Path(self.model).suffix.lower() in _MODEL_FILE_SUFFIXES or "/" in self.model:
            raise ValueError(f"model={short(self.model)} (--model) looks like a file: --model takes an architecture "
                             "name (e.g. bisenetv2); to continue a run use --resume LAST.pt, to start from encoder "
                             "weights --pretrained FILE.pth")
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(f"device={short(self.device)} is not one of auto, cpu, cuda, cuda:N")
        if str(self.out) in ("", "."):
            raise ValueError(f"out={short(str(self.out))} (--out) would put a run's files among others; "
                             "name a run directory, e.g. --out runs/syn")
        if self.mix_share > 0 and not self.mix_data:
            raise ValueError(f"mix_share={self.mix_share} needs mix_data, the dataset to mix in")
        if self.mix_data and self.mix_share == 0:
            raise ValueError(f"mix_data={self.mix_data!r} needs mix_share > 0, the share of samples it supplies")
        if self.copy_paste > 0 and not self.copy_paste_classes:
            raise ValueError(f"copy_paste={self.copy_paste} needs copy_paste_classes, e.g. [Pole, Pedestrian]: "
                             "which classes to paste")
        if self.skeleton_weight > 0 and not self.skeleton_classes:
            raise ValueError(f"skeleton_weight={self.skeleton_weight} needs skeleton_classes, e.g. [Pole]: which "
                             "thin classes the skeleton recall loss scores")
        if self.skeleton_classes and self.skeleton_weight == 0:
            raise ValueError("skeleton_classes is set but skeleton_weight is 0: give the loss a weight, e.g. "
                             "skeleton_weight: 1.0, or drop skeleton_classes")
        for key, value in self.model_kwargs.items():
            name, colon, given = str(key).partition(":")
            if colon and value is None and name.strip() and given.strip() and len(str(key)) <= 100:
                # YAML reads {width:0.25} (no space after the colon) as one key, 'width:0.25', of no value.
                fix = f"{{{name.strip()}: {given.strip()}}}"
                raise ValueError(f"model_kwargs key {short(str(key))} has no value: YAML needs a space after the colon, "
                                 f"write {fix} (on the command line, quoted: --set 'model_kwargs={fix}')")
        has_detail_head = self.model_kwargs.get("detail", False) is not False
        if self.detail_weight > 0 and not has_detail_head:
            raise ValueError(f"detail_weight={self.detail_weight} needs the model's detail head: add detail: true to "
                             "model_kwargs (litefpn)")
        if has_detail_head and self.detail_weight == 0:
            raise ValueError("model_kwargs has detail: true but detail_weight is 0: the head would train on "
                             "nothing; set detail_weight, e.g. 1.0, or drop detail")
        if self.mix_classes and not self.mix_data:
            raise ValueError("mix_classes is set but mix_data is empty: name the dataset to mix in, or drop mix_classes")
        if self.mix_data and not self.mix_classes:
            raise ValueError("mix_data needs mix_classes, e.g. {road: Road, car: Car}: which of its classes are which")
        if any(w < 0 for w in self.ial_level_weights):
            raise ValueError("ial_level_weights must be non-negative")
        bad = {k: v for k, v in self.ial_levels.items() if v not in (0, 1, 2, 3)}
        if bad:
            raise ValueError(f"ial_levels values must be 0..3, got {bad}")


#: The sizes (height, width): a YAML list ``[352, 480]``, or the text of the ``--size`` flag,
#: ``352x480`` (``--set input_hw=352x480``, ``crop_hw: 256x320`` in a file).
SIZE_KEYS = ("input_hw", "crop_hw")


#: A size as ``--set`` text: kept as text, since YAML reads ``0x96`` as the hex number 150.
_SIZE_TEXT = re.compile(r"\s*\d+\s*[xX]\s*\d+\s*")


def sizes_from_text(data: dict[str, Any], *, where: str) -> dict[str, Any]:
    """``data`` with a ``SIZE_KEYS`` value given as ``HxW`` text read as ``[H, W]`` (the range is
    ``TrainConfig``'s check); ConfigError showing both accepted forms for any other value that is
    not a list of two."""
    out = dict(data)
    for key in SIZE_KEYS:
        value = out.get(key)
        if value is None or (isinstance(value, (list, tuple)) and len(value) == 2):
            continue
        if isinstance(value, str) and _SIZE_TEXT.fullmatch(value):
            out[key] = list(parse_hw(value, what=key, minimum=0))
            continue
        forms = (f"--set {key}=[352,480] or --set {key}=352x480" if where == "--set"
                 else f"{key}: [352, 480] or {key}: 352x480")
        raise ConfigError(f"{where}: {key}: expected [HEIGHT, WIDTH] or HEIGHTxWIDTH, e.g. {forms}; got {short(value)}")
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr=0.01", "input_hw=[360,480]"]`` -> ``{"lr": 0.01, "input_hw": [360, 480]}`` (YAML values;
    a size may be ``HxW`` text, ``input_hw=360x480``: ``sizes_from_text``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {short(item)}: expected key=value, e.g. --set lr=0.01")
        if key.strip() in out:  # as a key given twice in a YAML file, or a --task given twice
            raise ConfigError(f"--set {cut(key.strip())} is given twice; keep one")
        # the settings files' reader: a few bytes of nested aliases must not expand to gigabytes
        if key.strip() in SIZE_KEYS and _SIZE_TEXT.fullmatch(value):
            out[key.strip()] = value
        else:
            out[key.strip()] = parse_yaml(value, source=f"--set {cut(item)}") if value.strip() else ""
    return sizes_from_text(out, where="--set")


def load_train_config(
    path: str | Path | list[str | Path] | None, overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """The config of ``path`` (if any; a list: each file's keys over the one before, so a small file
    can change a recipe without copying it) with ``overrides`` applied; ConfigError naming the key."""
    paths = [path] if isinstance(path, (str, Path)) else list(path or [])
    overrides = overrides or {}
    data: dict[str, Any] = {}
    files: list[tuple[str, dict[str, Any]]] = []
    for each in paths:
        doc = read_yaml(each)
        files.append((str(each), doc))
        data.update(doc)
    data.update(overrides)
    source = " + ".join(str(p) for p in paths) or "train config"
    config = load_config(TrainConfig, sizes_from_text(data, where=source), source=source)
    for index, (file, doc) in enumerate(files):
        # who replaces each key of this file: the command line, else the last later file that has it
        replacing = {key: later for later, later_doc in files[index + 1:] for key in later_doc}
        replacing.update(dict.fromkeys(overrides, "the command line"))
        check_replaced_values(file, doc, replacing, data)
    return config


def check_replaced_values(file: str, doc: dict[str, Any], replacing: dict[str, str], resolved: dict[str, Any]) -> None:
    """ConfigError naming ``file`` and the key when a value of ``doc`` that this run takes from
    elsewhere (``replacing``: key -> the command line or a later file) is itself wrong (``steps: ten``
    with ``--steps 2``): the other wins, but the file would fail the next run without it. A value
    is wrong when it fails its checks both alone (the other keys at their defaults) and in place of
    the winning value among this run's ``resolved`` keys: a value checked together with others
    (``copy_paste`` needs ``copy_paste_classes``) is not blamed where this run supplies them."""

    def problem(values: dict[str, Any]) -> ConfigError | None:
        try:
            load_config(TrainConfig, sizes_from_text(values, where=file), source=file)
        except ConfigError as exc:
            return exc
        return None

    for key in doc:
        if key not in replacing:
            continue
        alone = problem({key: doc[key]})
        if alone is not None and problem({**resolved, key: doc[key]}) is not None:
            raise ConfigError(f"{alone} ({replacing[key]} sets {key} too and wins in this run, but the file is wrong: "
                              "fix it)")
