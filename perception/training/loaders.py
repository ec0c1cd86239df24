"""DataLoaders whose reading errors reach the main process as raised, one line naming the file,
whichever process read the sample (``--workers 0`` and ``--workers 2`` say the same), and whose
workers leave Ctrl-C to the main process. Used by training (``trainer.build_data``) and by
evaluation of a checkpoint (``evaluate.py``).

    loader = make_loader(dataset, batch_size=8, num_workers=2, worker_init_fn=leave_sigint_to_main)
    for images, labels in loader_batches(loader):   # raises the reader's own DataError
        ...

A SIGTERM sent to the whole process group (systemd's default stop, ``timeout``, ``kill -- -PGID``)
also ends the workers; ``worker_deaths_as_stop`` and ``lost_worker_ends_stop`` make that the stop it
is (training finishes its step and saves ``last.pt``) instead of torch's error in the middle of a step.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, default_collate

from perception.errors import DataError, PerceptionError

log = logging.getLogger(__name__)


def leave_sigint_to_main(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Ctrl-C in a terminal, and the hangup of a closed terminal,
    reach every process of the group; the workers ignore them so that the main process can finish
    its step and save ``last.pt`` (see ``fit.stop_after_step_on_signal``) instead of finding its
    workers gone. SIGTERM keeps torch's own handler: the DataLoader ends its workers with it (a
    SIGTERM to the whole group ends them too: ``worker_deaths_as_stop``)."""
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


#: How torch names a worker's death by a stop signal (``strsignal``): SIGTERM, SIGINT, SIGHUP.
STOP_SIGNAL_DEATHS = ("killed by signal: Terminated", "killed by signal: Interrupt", "killed by signal: Hangup")


def worker_stopped(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's error for a DataLoader worker that a stop signal ended."""
    text = str(exc)
    return isinstance(exc, RuntimeError) and "DataLoader worker" in text and any(d in text for d in STOP_SIGNAL_DEATHS)


def worker_lost(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's error for a DataLoader worker that is gone (killed, or found dead
    when its batch did not come: "exited unexpectedly")."""
    text = str(exc)
    return isinstance(exc, RuntimeError) and "DataLoader worker" in text and (
        "killed by signal" in text or "exited unexpectedly" in text)


@contextlib.contextmanager
def worker_deaths_as_stop(stop: threading.Event, *, enabled: bool = True) -> Iterator[None]:
    """While active (main thread), a DataLoader worker ended by a stop signal sets ``stop`` instead
    of raising torch's RuntimeError wherever the main thread is (torch checks its workers from a
    SIGCHLD handler: the error came out of the middle of a forward pass, with the step half done).
    The step under way then finishes and the caller ends as after its own stop signal; a batch the
    dead worker owed ends the wait for it with "exited unexpectedly" (``lost_worker_ends_stop``).
    Other deaths (the kernel's SIGKILL for memory, a crash) raise as torch raises them."""
    if not enabled or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGCHLD"):
        yield
        return
    try:  # torch installs its handler at its first worker; installed now, so that it can be wrapped
        from torch.utils.data._utils.signal_handling import _set_SIGCHLD_handler

        _set_SIGCHLD_handler()
    except (ImportError, AttributeError):  # another torch: its own handling stays
        yield
        return
    torch_handler = signal.getsignal(signal.SIGCHLD)
    if not callable(torch_handler):
        yield
        return

    def on_child(signum: int, frame: Any) -> None:
        try:
            torch_handler(signum, frame)
        except RuntimeError as exc:
            if not worker_stopped(exc):
                raise
            if not stop.is_set():  # a worker stopped alone: the same stop as the main process's own
                log.warning("%s: stopping after this step and saving last.pt", str(exc).strip().rstrip("."))
            stop.set()

    # Not perception.signals.install_signal_handlers: SIGCHLD is no stop signal of the command's.
    signal.signal(signal.SIGCHLD, on_child)
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, torch_handler)


@contextlib.contextmanager
def lost_worker_ends_stop(stop: threading.Event | None) -> Iterator[None]:
    """Once ``stop`` is set (a stop signal, or a worker ended by one: ``worker_deaths_as_stop``), a
    lost DataLoader worker is part of that stop, not an error: the block ends quietly (the batch
    the worker owed never came; the steps done are the caller's to save)."""
    try:
        yield
    except RuntimeError as exc:
        if stop is None or not stop.is_set() or not worker_lost(exc):
            raise
        log.debug("data-loading worker gone while stopping: %s", exc)
