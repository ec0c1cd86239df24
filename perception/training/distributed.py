"""Process-group setup for DDP under torchrun, and a sampler that can resume mid-epoch.

``torchrun --nproc_per_node N -m perception train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK;
without them training runs as a single process through the same code (world size 1). The backend
is nccl on CUDA and gloo on CPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from perception.errors import ConfigError, DependencyError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1; a no-op otherwise."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ConfigError("RANK / WORLD_SIZE / LOCAL_RANK must be integers; start DDP runs with torchrun") from None
    if world_size <= 1:
        return DistInfo()
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)  # nccl needs each rank on its own GPU before init
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def cleanup_distributed(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def pick_device(name: str, info: DistInfo) -> torch.device:
    """``auto``: this rank's GPU when CUDA is available, else the CPU; ConfigError for a bad name."""
    if name == "auto":
        return torch.device(f"cuda:{info.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not a torch device; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        # A missing GPU (or a CPU-only torch build) is a missing dependency, exit 3, as for
        # `run --provider cuda`; `train` and `eval` both have --device.
        raise DependencyError(f"--device {name}: PyTorch sees no CUDA GPU here (torch {torch.__version__}); "
                              "use --device cpu (or auto)")
    return device


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffled by seed + epoch) that skips batches already trained this epoch."""

    def __init__(self, dataset: Dataset, info: DistInfo, *, seed: int, batch_size: int) -> None:
        super().__init__(
            dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed, drop_last=True
        )
        self.batch_size = batch_size
        self.start_batch = 0

    def set_position(self, epoch: int, start_batch: int) -> None:
        self.set_epoch(epoch)
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start_batch * self.batch_size :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start_batch * self.batch_size)


def all_reduce_sum(array: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(array, op=dist.ReduceOp.SUM)
    return array
