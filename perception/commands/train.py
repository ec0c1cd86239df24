"""``perception train``: train a segmentation model from a YAML config and/or flags.

    perception train --config configs/camvid_bisenetv2.yaml --out runs/camvid_bisenetv2
    perception train --model bisenetv2 --data synthetic --size 360x480 --steps 2000 --out runs/syn
    perception train --config configs/camvid_litefpn_cpu.yaml --pretrained ~/weights/lite0.pth
    perception train --resume runs/syn/last.pt            # continue exactly where it stopped
    torchrun --nproc_per_node 2 -m perception train --config ...   # DDP

Flags override the config file; ``--set key=value`` sets any key of ``TrainConfig``. The resolved
config is printed and saved to ``<out>/config.yaml`` and in every checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import math
from typing import Any

from perception.config import parse_hw
from perception.errors import ConfigError, DependencyError

log = logging.getLogger(__name__)

#: flag attribute -> config key (values copied when the flag is given)
_FLAG_KEYS = {
    "model": "model",
    "data": "data",
    "val_data": "val_data",
    "epochs": "epochs",
    "steps": "steps",
    "batch_size": "batch_size",
    "lr": "lr",
    "out": "out",
    "workers": "workers",
    "device": "device",
    "loss": "loss",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of TrainConfig keys (see configs/)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set any config key (repeatable)")
    parser.add_argument("--model", help="model name, e.g. bisenetv2")
    parser.add_argument("--data", help="training data spec, e.g. camvid:/data/camvid or synthetic")
    parser.add_argument("--val-data", help="validation data spec (default: the val split of --data)")
    parser.add_argument("--size", help="training/model input size HxW, e.g. 360x480")
    parser.add_argument("--epochs", type=int, help="epochs (ignored when --steps is given)")
    parser.add_argument("--steps", type=int, help="total optimiser steps")
    parser.add_argument("--batch-size", type=int, help="batch size per process")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--loss", help="loss name: ce, ohem, dice, focal, ial")
    parser.add_argument("--workers", type=int, help="DataLoader worker processes")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--out", help="run directory for checkpoints, logs and curves")
    parser.add_argument(
        "--pretrained",
        metavar="PATH|imagenet|none",
        help="encoder weights: a local .pth file, 'imagenet' (the model's ImageNet weights: installed "
        "package or torch hub cache, downloaded there once if missing) or 'none' (random init)",
    )
    parser.add_argument("--resume", help="last.pt of an earlier run to continue from")


def overrides_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    from perception.training.config import parse_overrides

    values = {key: getattr(args, attr) for attr, key in _FLAG_KEYS.items() if getattr(args, attr) is not None}
    if args.size:
        values["input_hw"] = list(parse_hw(args.size))
    if args.pretrained is not None:
        values["pretrained"] = pretrained_value(args.pretrained)
    values.update(parse_overrides(args.set))
    return values


def pretrained_value(text: str) -> bool | str:
    """``--pretrained`` as the config value: True for 'imagenet', False for 'none', else a file path."""
    from pathlib import Path

    word = text.strip().lower()
    if word in ("imagenet", "true"):
        return True
    if word in ("none", "false", ""):
        return False
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(f"--pretrained {text}: no such file; give a .pth state dict, 'imagenet' or 'none'")
    return str(path)


def main(args: argparse.Namespace) -> int:
    from perception.training.config import TrainConfig, load_train_config

    overrides = overrides_from_flags(args)
    if not (args.resume and not args.config):
        config = load_train_config(args.config, overrides)  # a bad config fails before torch loads
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError:
        raise DependencyError("training needs torch and torchvision; pip install -e '.[train]'") from None
    from perception.training.fit import fit

    if args.resume and not args.config:
        # The checkpoint's own config, so `--resume runs/x/last.pt` alone continues that run.
        from perception.config import load_config
        from perception.training.checkpoint import load_checkpoint

        base = load_checkpoint(args.resume).config
        config = load_config(TrainConfig, {**base, **overrides}, source=f"config of {args.resume}")
    metrics = fit(config, resume=args.resume)
    if not math.isnan(metrics["miou"]):
        print(
            f"done: step {metrics['step']}, val mIoU {100 * metrics['miou']:.2f} %, G {100 * metrics['global_acc']:.2f} %, "
            f"C {100 * metrics['class_acc']:.2f} %; checkpoints in {metrics['run_dir']} (best.pt, last.pt)"
        )
    return 0
