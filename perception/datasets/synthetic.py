"""The ``synthetic`` dataset: road-world scenes rendered on the fly, no files needed.

    open_dataset("synthetic:count=500,seed=1,size=360x480", split="train")

Train and val draw disjoint frames of the same seed; frame numbering matches ``perception synth``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from perception.config import parse_hw
from perception.datasets.base import unknown_split
from perception.errors import ConfigError

#: First frame index of the synthetic validation split, so train and val scenes never coincide.
SYNTHETIC_VAL_FIRST_INDEX = 1 << 31
#: The splits of the synthetic world: where each starts in the frame numbering, and its default count.
SYNTHETIC_SPLITS = {"train": (0, 500), "val": (SYNTHETIC_VAL_FIRST_INDEX, 100)}


class SyntheticDataset(Sequence):
    """Road-world scenes rendered on the fly: sample ``i`` is frame ``first_index + i`` of seed ``seed``.

    Frame numbering follows ``perception synth`` (``scene_seed(seed, index)``), so training on
    ``synthetic:seed=S`` sees the same scenes that ``perception synth --seed S`` writes.
    """

    def __init__(self, *, count: int, seed: int, first_index: int, height: int, width: int, name: str) -> None:
        from perception.synthetic import SYNTHETIC_CLASSES, check_size

        self.name = name
        self.class_table = SYNTHETIC_CLASSES
        self.count = count
        self.seed = seed
        self.first_index = first_index
        self.height, self.width = check_size(height, width)

    def __len__(self) -> int:
        return self.count

    def image(self, index: int) -> np.ndarray:
        """Scene ``index``'s image alone (``SegmentationDataset.image``)."""
        return self[index][0]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        from perception.synthetic import render_scene
        from perception.synthetic.dataset import scene_seed

        seed = scene_seed(self.seed, self.first_index + index)
        return render_scene(seed, height=self.height, width=self.width)

    def describe(self, index: int) -> str:
        return f"synthetic scene {self.first_index + index} of seed {self.seed}"


def open_synthetic(argument: str, *, split: str, spec: str) -> SyntheticDataset:
    """``count`` scenes (train 500 / val 100 by default) of ``size`` starting at ``seed``.

    Raises:
        DataError: a split other than train and val.
        ConfigError: a bad option.
    """
    if split not in SYNTHETIC_SPLITS:
        raise unknown_split(split, "synthetic", SYNTHETIC_SPLITS)
    first_index, default_count = SYNTHETIC_SPLITS[split]
    options = {"count": str(default_count), "seed": "0", "size": "360x480"}
    for item in filter(None, (p.strip() for p in argument.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in options:
            raise ConfigError(f"dataset {spec!r}: bad option {item!r}; use count=N,seed=N,size=HxW")
        options[key] = value
    try:
        count, seed = int(options["count"]), int(options["seed"])
    except ValueError:
        raise ConfigError(f"dataset {spec!r}: count and seed must be integers") from None
    if not 1 <= count < SYNTHETIC_VAL_FIRST_INDEX:
        raise ConfigError(f"dataset {spec!r}: count={count} must be in 1..{SYNTHETIC_VAL_FIRST_INDEX - 1}")
    if seed < 0:
        raise ConfigError(f"dataset {spec!r}: seed={seed} must be >= 0")
    height, width = parse_hw(options["size"], what=f"size in dataset {spec!r}", minimum=8)
    return SyntheticDataset(count=count, seed=seed, first_index=first_index, height=height, width=width, name=spec)
