"""``perception soup``: average the weights of training runs that started from the same weights.

    perception train --config C.yaml --set init_seed=0 --set seed=0 --out runs/a
    perception train --config C.yaml --set init_seed=0 --set seed=1 --out runs/b
    perception soup runs/a/best.pt runs/b/best.pt --out runs/soup/best.pt
    perception export --checkpoint runs/soup/best.pt --out model.onnx

The soup (``perception/training/soup.py``) is a checkpoint like any other: eval and export read
it. It is validated on the ingredients' validation data (their config's ``val_data`` or ``data``,
split ``val_split``), and those figures go into it, and from there into the exported model's
metadata, as a trained run's do.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

from perception.config import setting
from perception.errors import ConfigError, DependencyError
from perception.flags import add_flags, config_from_flags

log = logging.getLogger(__name__)


@dataclass
class SoupConfig:
    """The flags of ``perception soup``."""

    checkpoints: list[Path] = setting(
        positional=True, metavar="CHECKPOINT",
        help="two or more .pt files of runs with the same model and initial weights (init_seed)")
    out: Path = setting(help="the soup's .pt file (e.g. runs/soup/best.pt)")
    no_val: bool = setting(False, help="skip validating the soup (its checkpoint then carries no val figures)")
    threads: int = setting(0, lo=0, hi=256, help="torch CPU threads for the validation (0: default)")

    def __post_init__(self) -> None:
        if Path(self.out).suffix != ".pt":
            raise ValueError(f"--out {self.out} must be a .pt file, e.g. runs/soup/best.pt")
        if any(Path(p).resolve() == Path(self.out).resolve() for p in self.checkpoints):
            raise ValueError(f"--out {self.out} is one of the checkpoints; write the soup to another file")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, SoupConfig)


def main(args: argparse.Namespace) -> int:
    config = config_from_flags(SoupConfig, args, source="perception soup")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise DependencyError("a soup needs torch: pip install -e '.[train]'") from None
    from perception.training.checkpoint import save_checkpoint
    from perception.training.soup import make_soup

    soup = make_soup(config.checkpoints)
    for item in soup.config["soup"]:
        miou = item["val_miou"]
        print(f"{item['checkpoint']}: seed {item['seed']}, step {item['step']}, "
              f"val mIoU {'-' if miou is None else f'{100 * miou:.2f} %'}")
    if not config.no_val:
        soup.metrics = _validate(soup, config.out, threads=config.threads)
        print(f"soup of {len(config.checkpoints)}: val mIoU {100 * soup.metrics['miou']:.2f} %, "
              f"G {100 * soup.metrics['global_acc']:.2f} %, C {100 * soup.metrics['class_acc']:.2f} %")
    save_checkpoint(config.out, soup)
    print(f"wrote {config.out}")
    return 0


def _validate(soup, out: Path, *, threads: int) -> dict:
    """The soup's val figures, on its ingredients' validation data, as the trainer computes them."""
    import tempfile

    from perception.datasets import open_dataset
    from perception.training.checkpoint import save_checkpoint
    from perception.training.evaluate import evaluate_checkpoint

    spec = soup.config.get("val_data") or soup.config.get("data") or soup.dataset
    split = soup.config.get("val_split", "val")
    if not spec:
        raise ConfigError(f"the checkpoints do not say which data they validated on; pass --no-val and "
                          f"evaluate {out} with perception eval --data")
    dataset = open_dataset(spec, split=split)
    log.info("validating the soup on %s (%s, %d images)", spec, split, len(dataset))
    with tempfile.TemporaryDirectory(prefix="soup-") as tmp:
        path = save_checkpoint(Path(tmp) / "soup.pt", soup)
        cm = evaluate_checkpoint(path, dataset, threads=threads, workers=0)
    return {**cm.summary(soup.class_table), "step": soup.step, "data": spec, "split": split}
