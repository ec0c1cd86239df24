"""A training run's directory: one run in it, outside the data, created before the data loads.

``perception train --out DIR`` writes ``RUN_FILES`` there. A new run must not replace another run's
checkpoints or mix its log into theirs (``check_run_dir_free``), nor sit among a dataset's frames
(``check_run_dir_outside_data``); ``--overwrite`` clears the earlier run first (``remove_run_files``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from perception.errors import ConfigError, ModelError
from perception.training.config import TrainConfig

#: What a run writes into its directory: a directory holding any of them holds a run.
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "curves.png", "config.yaml")
#: A checkpoint being written (``checkpoint.save_checkpoint``): left behind only when the process
#: was killed while writing it.
TMP_FILES = ("last.pt.tmp", "best.pt.tmp")


def check_run_dir_free(path: Path, *, resume: str | Path | None, overwrite: bool) -> None:
    """A new run must not silently replace another's checkpoints and mix its log into theirs: a
    directory that holds a run is refused unless the run resumes from it or ``overwrite`` is set."""
    held = [name for name in RUN_FILES[:3] if (path / name).is_file()]
    if not held or overwrite:
        return
    if resumes_from(resume, path):
        return
    if (path / "last.pt").is_file():
        raise ConfigError(
            f"{path} already holds a run ({', '.join(held)}); continue it with --resume {path / 'last.pt'}, "
            "choose another --out, or replace it with --overwrite"
        )
    # No last.pt to continue from: a run stopped before its first checkpoint, or one whose first
    # last.pt was being written when a second Ctrl-C aborted it (what is left is its .tmp).
    cut_off = [name for name in TMP_FILES if (path / name).is_file()]
    why = (f"; {', '.join(cut_off)} is a checkpoint whose writing was cut off" if cut_off
           else " (it stopped before writing its first last.pt)")
    best = (f"continue it from its best.pt with --resume {path / 'best.pt'}, " if (path / "best.pt").is_file()
            else "")
    raise ConfigError(
        f"{path} already holds a run ({', '.join(held)}) but no last.pt to continue it from{why}; {best}"
        "replace it with --overwrite, or choose another --out"
    )


#: Dataset kinds whose spec argument is a folder of the user's files.
FOLDER_KINDS = ("folder", "camvid", "cityscapes")


def check_run_dir_outside_data(run_dir: Path, config: TrainConfig) -> None:
    """A run directory inside a dataset folder puts checkpoints and ``curves.png`` among its frames
    (a flat folder dataset then takes the plot for an unlabelled image): refused."""
    out = run_dir.resolve()
    for key in ("data", "val_data", "mix_data"):
        kind, _, argument = getattr(config, key).partition(":")
        if kind.strip() not in FOLDER_KINDS or not argument.strip():
            continue
        root = Path(argument.strip()).expanduser().resolve()
        if out == root or root in out.parents:
            flag = {"data": "--data", "val_data": "--val-data", "mix_data": "mix_data"}[key]
            raise ConfigError(f"--out {run_dir} is inside the dataset folder {argument.strip()} ({flag}): the run's "
                              "checkpoints and curves.png would mix with its frames; choose an --out outside it")


def resumes_from(resume: str | Path | None, run_dir: Path) -> bool:
    """The run continues one of ``run_dir``'s own checkpoints."""
    return resume is not None and Path(resume).resolve().parent == run_dir.resolve()


def remove_run_files(path: Path) -> None:
    """``--overwrite``: the earlier run's files go before the new run writes its own."""
    for name in (*RUN_FILES, *TMP_FILES):
        with contextlib.suppress(FileNotFoundError):
            (path / name).unlink()


def make_run_dir(path: Path) -> Path:
    """Create the run directory before any data or model is built; ConfigError when it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create run directory {path} ({exc.strerror}); choose a writable --out") from None
    return path


def check_checkpoint_path(path: str | Path) -> Path:
    """``path`` as a Path when it names a file; ModelError (one line, the fix) when it is missing or
    a folder. Torch-free, so ``perception eval`` checks it before anything loads; ``load_checkpoint``
    checks the same way."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"checkpoint {path} is a directory; pass a .pt file in it, e.g. {path / 'best.pt'}")
    if not path.is_file():
        raise ModelError(f"checkpoint {path} not found; pass the .pt file written by 'perception train'")
    return path
