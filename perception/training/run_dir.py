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
        flag = {"data": "--data", "val_data": "--val-data", "mix_data": "mix_data"}[key]
        for root, linked in _data_folders(Path(argument.strip()).expanduser()):
            if out == root or root in out.parents:
                where = f"{root}, where its {linked} links to" if linked else argument.strip()
                raise ConfigError(f"--out {run_dir} is inside the dataset folder {where} ({flag}): the run's "
                                  "checkpoints and curves.png would mix with its frames; choose an --out outside it")


def _data_folders(folder: Path) -> list[tuple[Path, str]]:
    """The folders a dataset ``folder``'s files are in, resolved, with the link that leads there
    ("" for the folder itself): the folder, and for each linked entry of it (a copy of a dataset as
    links: ``train -> /data/camvid/train``) the folder linked to and, when it has the link's name,
    the dataset folder holding it (``/data/camvid``)."""
    root = folder.resolve()
    found = [(root, "")]
    try:
        entries = [entry for entry in folder.iterdir() if entry.is_symlink()]
    except OSError:
        return found
    for entry in entries[:64]:
        target = entry.resolve()
        if not target.is_dir():  # a linked file: the folder it is in
            found.append((target.parent, str(entry)))
            continue
        found.append((target, str(entry)))
        if target.name == entry.name:
            found.append((target.parent, str(entry)))
    return found


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
    kind = foreign_kind(path)
    if kind == "an exported ONNX model":
        raise ModelError(f"checkpoint {path} is an exported ONNX model, not a checkpoint: score it with 'perception eval "
                         f"--model {path}', read it with 'perception inspect {path}' (--resume and export need the "
                         "run's .pt: last.pt, best.pt)")
    if kind:
        raise ModelError(f"checkpoint {path} is {kind}, not a checkpoint; pass the .pt file written by 'perception train'")
    return path


#: What a file's first bytes show it to be, for one given where a checkpoint belongs (a checkpoint
#: is a zip archive, or a pickle: never these); checked by ``foreign_kind``.
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
          (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"\x1aE\xdf\xa3", "a Matroska/WebM video"),
          (b"\x89MCAP0", "an MCAP recording (perception record's file)"))


def foreign_kind(path: Path) -> str | None:
    """What ``path`` is when its first bytes show it is no checkpoint (an ONNX model, an image, a
    video, a recording, an XML or HTML document), else None (torch's reader judges it)."""
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError:
        return None  # the reader names the problem
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[4:8] == b"ftyp":
        return "an MP4/MOV video"
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"WEBP"):
        return "an AVI video" if head[8:12] == b"AVI " else "a WebP image"
    # An ONNX ModelProto opens with field 1, ir_version (a small varint): bytes 0x08, 1..0x7f.
    if len(head) > 1 and head[0] == 0x08 and 0 < head[1] < 0x80:
        return "an exported ONNX model"
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"<"):
        return "an XML or HTML document (perhaps a failed download's error page)"
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save's zip archive, or an older pickle
        return None
    if text[:1] in (b"{", b"[") or b":" in text:
        return "a text file (YAML or JSON: a config is given with --config)"
    return "no PyTorch file (neither the zip archive torch.save writes nor a pickle)"
