"""DataLoaders whose reading errors reach the main process as raised, one line naming the file,
whichever process read the sample (``--workers 0`` and ``--workers 2`` say the same), and whose
workers leave Ctrl-C to the main process. Used by training (``trainer.build_data``) and by
evaluation of a checkpoint (``evaluate.py``).

    loader = make_loader(dataset, batch_size=8, num_workers=2, worker_init_fn=leave_sigint_to_main)
    for images, labels in loader_batches(loader):   # raises the reader's own DataError
        ...
"""

from __future__ import annotations

import pickle
import signal
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, default_collate

from perception.errors import DataError, PerceptionError


def leave_sigint_to_main(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Ctrl-C in a terminal, and the hangup of a closed terminal,
    reach every process of the group; the workers ignore them so that the main process can finish
    its step and save ``last.pt`` (see ``fit.stop_after_step_on_signal``) instead of finding its
    workers gone. SIGTERM keeps torch's own handler: the DataLoader ends its workers with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


class DataFailure:
    """A sample that could not be read (a ``PerceptionError`` such as ``DataError``, or an ``OSError``
    naming a file), carried to the main process as the batch instead of raised in a DataLoader
    worker: torch re-raises a worker's exception as a new one whose message is "Caught DataError in
    DataLoader worker process 0. Original Traceback ..." (twenty lines), where ``--workers 0``
    gives the reader's one line. ``loader_batches`` raises the error itself, as it was raised."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        try:  # the exception as it was (its type, message and attributes) when it pickles
            pickle.dumps(self.error)
        except Exception:  # noqa: BLE001 - any reason it cannot cross: keep its words
            return (DataFailure, (DataError(str(self.error)),))
        return (DataFailure, (self.error,))


class CarryErrors(torch.utils.data.Dataset):
    """``dataset`` whose reading errors come back as a ``DataFailure`` sample instead of being raised
    (in a worker as in the main process, so ``--workers 0`` and ``--workers 2`` say the same)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except (PerceptionError, OSError) as exc:
            return DataFailure(exc)


def carry_failures(collate: Callable[[list[Any]], Any]) -> Callable[[list[Any]], Any]:
    """``collate`` for a ``CarryErrors`` dataset: a batch with a ``DataFailure`` is that failure."""

    def collate_or_fail(samples: list[Any]) -> Any:
        for sample in samples:
            if isinstance(sample, DataFailure):
                return sample
        return collate(samples)

    return collate_or_fail


def make_loader(dataset: Any, *, collate_fn: Callable[[list[Any]], Any] | None = None, **kwargs: Any) -> DataLoader:
    """A ``DataLoader`` over ``dataset`` whose reading errors reach the main process as raised
    (``CarryErrors``); iterate it with ``loader_batches``."""
    return DataLoader(CarryErrors(dataset), collate_fn=carry_failures(collate_fn or default_collate), **kwargs)


def loader_batches(loader: DataLoader) -> Iterator[Any]:
    """The batches of ``loader`` (from ``make_loader``); a sample that could not be read raises its
    own error here (one line naming the file), whichever process read it."""
    for batch in loader:
        if isinstance(batch, DataFailure):
            raise batch.error
        yield batch
