"""Writes the synthetic world to disk: a labelled image dataset and/or an MP4 of a drive.

Layout of a dataset directory (what ``perception synth`` writes and the training side reads)::

    images/000000.png     BGR frames
    labels/000000.png     uint8 class ids (SYNTHETIC_CLASSES), same size
    classes.yaml          the class table (ClassTable.to_dict(): classes, ignore_id, task_groups)
    train.txt, val.txt    one "images/NNNNNN.png labels/NNNNNN.png" pair per line (split by --split)
    synth.yaml            how it was generated (seed, size, count, split, the --video it wrote, and
                          ``synthetic_world``: SYNTHETIC_WORLD_VERSION, the renderer's version); an
                          interrupted run's says ``interrupted: true``, the frames it wrote
                          (``count``, which the lists cover) and the ``requested`` count

Dataset frames are independent scenes (``render_scene``) for variety; the video is one coherent
``SyntheticDrive``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import yaml

from perception import cvpath
from perception.contracts import ClassTable
from perception.errors import ConfigError, file_in_the_way
from perception.overwrite import refuse_existing_file
from perception.synthetic.classes import SYNTHETIC_CLASSES
from perception.synthetic.drive import SyntheticDrive, check_size, render_scene
from perception.synthetic.version import SYNTHETIC_WORLD_VERSION, WORLD_KEY


def colorize(label: np.ndarray, class_table: ClassTable = SYNTHETIC_CLASSES) -> np.ndarray:
    """BGR image of a label map in the class table's colours (ids outside the table are black)."""
    lut = np.zeros((256, 3), np.uint8)
    for c in class_table.classes:
        lut[c.id] = c.color[::-1]  # table colours are RGB
    return lut[label]


def scene_seed(seed: int, index: int) -> int:
    """The ``render_scene`` seed of frame ``index`` of a dataset made with ``seed`` (never overlaps
    between seeds for fewer than 2**32 frames)."""
    return (int(seed) << 32) | int(index)


def parse_split(text: str) -> dict[str, float]:
    """``"val=0.1,test=0.05"`` -> {"val": 0.1, "test": 0.05}; the rest is ``train``; ``"none"`` -> {}
    (train.txt only). ConfigError if bad, or for a fraction of 0 (an empty list file)."""
    split: dict[str, float] = {}
    if text.strip().lower() == "none":
        return split
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            fraction = float(value)
        except ValueError:
            fraction = -1.0
        name = name.strip()
        if name == "train" and sep:
            raise ConfigError(f"bad split {part!r}: train is what the other splits leave, not given; name only the "
                              "held-out lists, such as val=0.1,test=0.1")
        if not sep or not name or not 0.0 <= fraction < 1.0:
            raise ConfigError(f"bad split {part!r}; use NAME=FRACTION pairs such as val=0.1,test=0.1")
        # The name becomes the list file NAME.txt inside --out: a plain word, named once.
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ConfigError(f"bad split name {name!r}: letters, digits, '_' and '-' only (it names {name}.txt in --out)")
        if name in split:
            raise ConfigError(f"split {name!r} is given twice in {text!r}; name each split once")
        if fraction == 0.0:  # an empty NAME.txt, which train and eval refuse
            raise ConfigError(f"split {part!r} would write an empty {name}.txt; give it a share such as {name}=0.1, "
                              f"or leave {name} out of --split (--split none writes train.txt only)")
        split[name] = fraction
    if sum(split.values()) >= 1.0:
        raise ConfigError(f"split fractions {text!r} add up to 1 or more; leave some frames for train")
    return split


def _assign_splits(count: int, split: dict[str, float]) -> dict[str, list[int]]:
    """Frame indices per list: each named split takes its share of the last frames, in order, and at
    least one frame (an empty list file is refused by train and eval); train keeps the first ones.
    ConfigError when ``count`` leaves train no frame."""
    sizes = {name: max(1, int(round(count * fraction))) for name, fraction in split.items()}
    if count - sum(sizes.values()) < 1:
        shares = ", ".join(f"{name} {n}" for name, n in sizes.items())
        raise ConfigError(f"--count {count} is too few frames for train plus {shares} (each split gets at least one); "
                          f"use --count {len(split) + 1} or more, or --split none for train.txt only")
    out: dict[str, list[int]] = {}
    end = count
    for name, n in sizes.items():
        out[name] = list(range(end - n, end))
        end -= n
    return {"train": list(range(end)), **out}


#: The file names of the frames ``write_dataset`` writes in images/ and labels/.
FRAME_NAME = re.compile(r"[0-9]{6}\.png")
#: What ``write_dataset`` writes in --out besides the list files.
DATASET_ENTRIES = ("images", "labels", "classes.yaml", "synth.yaml")
#: Most frames a contact sheet holds (``perception synth --contact-sheet --count``).
MAX_SHEET_COUNT = 64
#: ``synth.yaml``'s ``generator``: marks a folder as written by ``write_dataset``.
GENERATOR = "perception.synthetic"


class SynthInterrupted(KeyboardInterrupt):
    """A ``write_dataset`` stopped by Ctrl-C or a stop signal, after leaving what it wrote usable;
    ``message`` says what is there (``perception synth`` ends with it on the interrupt line)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _earlier_synth_meta(root: Path) -> dict | None:
    """The synth.yaml of the earlier ``write_dataset`` output in ``root``; None when ``root`` holds
    no synth.yaml of ours."""
    meta_path = root / "synth.yaml"
    if not meta_path.is_file() or meta_path.is_symlink():
        return None
    try:
        meta = yaml.safe_load(meta_path.read_text(encoding="utf-8", errors="replace"))
    except yaml.YAMLError:
        return None
    if not isinstance(meta, dict) or meta.get("generator") != GENERATOR:
        return None
    return meta


def _earlier_synth_lists(root: Path) -> list[str] | None:
    """The list names (train, val, ...) of the earlier ``write_dataset`` output in ``root``; None
    when ``root`` holds no synth.yaml of ours. Names that are not plain words are skipped (the
    file is only a hint of what to remove; nothing outside ``root`` is ever named by it)."""
    meta = _earlier_synth_meta(root)
    if meta is None:
        return None
    lists = meta.get("split") if isinstance(meta.get("split"), dict) else {}
    return ["train", *(str(n) for n in lists if re.fullmatch(r"[A-Za-z0-9_-]+", str(n)) and n != "train")]


def _earlier_synth_video(root: Path) -> Path | None:
    """The ``--video`` the earlier ``write_dataset`` output in ``root`` wrote (synth.yaml's ``video``,
    relative to ``root`` when inside it), resolved; None when there is none."""
    meta = _earlier_synth_meta(root)
    video = meta.get("video") if meta is not None else None
    if not isinstance(video, str) or not video:
        return None
    return (root / video).resolve()


def _video_in_meta(video: Path, root: Path) -> str:
    """How synth.yaml names the video it wrote: relative to ``root`` when inside it (the folder may
    move with it), else absolute."""
    path, base = video.resolve(), root.resolve()
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def refuse_existing_video(video: Path, *, overwrite: bool, replaced: Path | None = None) -> None:
    """ConfigError when writing ``video`` would replace a file without ``overwrite``: any existing
    file but ``replaced`` (the video of the earlier synth output this run replaces whole), and
    never a folder (``overwrite.refuse_existing_file``'s rule)."""
    if replaced is not None and not video.is_symlink() and not video.is_dir() and video.exists() \
            and video.resolve() == replaced:
        return
    refuse_existing_file(video, flag="--video", overwrite=overwrite, example="synthetic.mp4")


def _claim_out_dir(root: Path, lists: list[str]) -> list[Path]:
    """The files of an earlier ``perception synth`` output in ``root`` to remove before writing a new
    one (so no frame or list of the old set is left behind); ConfigError when ``root`` holds
    anything of a dataset that synth did not write, which must never be overwritten."""
    if not root.is_dir():
        return []
    ours = [*DATASET_ENTRIES, *(f"{name}.txt" for name in lists)]
    earlier = _earlier_synth_lists(root)
    if earlier is None:
        clash = [name + ("/" if (root / name).is_dir() else "") for name in (*ours, "masks")
                 if (root / name).exists() or (root / name).is_symlink()]
        if clash:
            raise ConfigError(f"--out {root} already holds a dataset ({', '.join(clash)}) that perception synth did not "
                              "write (no synth.yaml of its own); choose a new or empty folder")
        # Image files as the image sources read them: an --out holding any is another set's image folder.
        from perception.sources.images import IMAGE_SUFFIXES

        images = sorted(p.name for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
        if images:  # another dataset's images/ or labels/, or a camera's frames: never a place for a dataset
            shown = ", ".join(images[:2]) + (f" and {len(images) - 2} more" if len(images) > 2 else "")
            raise ConfigError(f"--out {root} holds images ({shown}) and no synth.yaml of its own (another dataset's "
                              "images/ or labels/ folder, or someone's frames); choose a new or empty folder")
        return []
    stale = []
    for sub in ("images", "labels"):
        folder = root / sub
        if not (folder.exists() or folder.is_symlink()):
            continue
        if folder.is_symlink() or not folder.is_dir():
            raise ConfigError(f"--out {root} is an earlier perception synth output, but {folder} is not its folder "
                              "(a link or a file); move it away or choose another --out")
        for path in sorted(folder.iterdir()):
            if not FRAME_NAME.fullmatch(path.name) or path.is_symlink() or not path.is_file():
                raise ConfigError(f"--out {root} is an earlier perception synth output, but {path} is not one of its "
                                  "frames; move it away or choose another --out")
            stale.append(path)
    for name in (*(f"{name}.txt" for name in earlier), "classes.yaml", "synth.yaml"):
        path = root / name
        if path.is_symlink() or path.is_file():
            stale.append(path)
        elif path.exists():
            raise ConfigError(f"--out {root} is an earlier perception synth output, but {path} is not a file; "
                              "move it away or choose another --out")
    return stale


def _prepare_dir(path: Path) -> Path:
    from perception.sinks import os_reason

    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = file_in_the_way(path) or os_reason(exc)
        raise ConfigError(f"cannot create output directory {path} ({why}); choose a writable path") from None
    if not os.access(path, os.W_OK):
        raise ConfigError(f"output directory {path} is not writable; choose a writable path")
    return path


def _check_video_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ConfigError(f"video file {path} must end in .mp4")
    return path


def check_video_writable(path: Path, *, height: int, width: int, fps: float) -> None:
    """ConfigError, before any work, unless an mp4v video of ``width`` x ``height`` frames can be
    written at ``path``: a file is written beside it and removed, and a file already there opened
    for writing (``sinks.check_output_writable``: a missing or read-only folder, ``/proc``, a
    read-only file that ``--overwrite`` would replace), then an OpenCV writer is opened on a second
    such file (an OpenCV without mp4v). Folders made for it are removed again (``write_video``
    makes them)."""
    from perception.sinks import check_output_writable, missing_folders, remove_empty_folders

    created = missing_folders(path.parent)
    probe = path.with_name(path.name + ".probe.mp4")
    try:
        check_output_writable(path, fix="choose a writable --video path")
        try:  # any name: OpenCV is not handed one that is not UTF-8 (cvpath)
            writer = cvpath.video_writer(probe, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
        except OSError as exc:
            raise ConfigError(cvpath.unnamable(path, "--video", exc)) from None
        opened = writer.isOpened()
        writer.release()
        if not opened:
            raise ConfigError(f"cannot open video file {path} for writing: this OpenCV writes no mp4v video; "
                              "install opencv-python with its video codecs")
    finally:
        probe.unlink(missing_ok=True)
        remove_empty_folders(created)


def write_video(path: str | Path, *, count: int, height: int, width: int, seed: int = 0, fps: float = 30.0,
                with_labels: bool = False, progress: Callable[[int], None] | None = None,
                opened: Callable[[], None] | None = None) -> Path:
    """Write ``count`` frames of ``SyntheticDrive(seed)`` to an MP4 (mp4v); with ``with_labels`` the
    colourised label is placed to the right of each frame. Returns the path. ConfigError if the file
    cannot be written. ``opened`` is called once the file is open, before the first frame."""
    height, width = check_size(height, width)
    path = _check_video_path(path)
    _prepare_dir(path.parent if str(path.parent) else Path("."))
    drive = SyntheticDrive(seed, height=height, width=width, fps=fps)
    frame_wh = (width * (2 if with_labels else 1), height)
    try:
        writer = cvpath.video_writer(path, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), frame_wh)
    except OSError as exc:
        raise ConfigError(cvpath.unnamable(path, "--video", exc)) from None
    if not writer.isOpened():
        raise ConfigError(f"cannot open video file {path} for writing; check the path and that OpenCV has mp4v")
    try:
        if opened is not None:
            opened()
        for i in range(count):
            image, label = drive.next_frame()
            writer.write(np.hstack([image, colorize(label)]) if with_labels else image)
            if progress is not None:
                progress(i)
    finally:
        writer.release()
    return path


def write_dataset(out_dir: str | Path, *, count: int, height: int, width: int, seed: int = 0,
                  split: dict[str, float] | None = None, write_images: bool = True,
                  video: str | Path | None = None, video_labels: bool = False, fps: float = 30.0,
                  overwrite: bool = False, progress: Callable[[int], None] | None = None) -> dict[str, object]:
    """Write ``count`` labelled synthetic frames to ``out_dir`` (layout in the module docstring) and,
    if ``video`` is given, an MP4 of a ``count``-frame drive. Returns a summary (paths and counts).

    An existing ``video`` file is replaced only with ``overwrite``, or when it is the video of the
    earlier synth output in ``out_dir`` that this run replaces whole (its synth.yaml names it).
    Interrupted (KeyboardInterrupt: Ctrl-C, or a stop signal under ``interrupt_on_stop_signals``),
    it leaves a dataset of the frames written so far that ``folder:out_dir`` reads (classes.yaml
    is written first; the list files over those frames and a synth.yaml with ``count`` written of
    ``requested`` and ``interrupted: true`` at the interrupt), and raises ``SynthInterrupted``
    saying how many frames were written.

    Raises ConfigError for a count <= 0, a size out of range, a bad split, an unwritable path or
    an existing ``video`` file it may not replace.
    """
    if not isinstance(count, int) or count <= 0:
        raise ConfigError(f"synthetic frame count {count!r} must be a positive integer")
    height, width = check_size(height, width)
    if not write_images and video is None:
        raise ConfigError("nothing to write: images are off and no video path was given")
    split = dict(split or {})
    summary: dict[str, object] = {"count": count, "size": f"{height}x{width}", "seed": seed}
    root = Path(out_dir)
    video = _check_video_path(video) if video is not None else None
    assigned: dict[str, list[int]] = {}
    stale: list[Path] = []
    if write_images:
        assigned = _assign_splits(count, split)
        stale = _claim_out_dir(root, list(assigned))
    if video is not None:  # before anything is written: a refused run leaves everything as it was
        if write_images:
            _refuse_video_in_dataset(video, root)
        refuse_existing_video(video, overwrite=overwrite, replaced=_earlier_synth_video(root) if write_images else None)
        # Rendering the dataset takes minutes for thousands of frames: a --video that cannot be written
        # (/proc/x.mp4, a read-only folder) is said now, not after them.
        check_video_writable(video, height=height, width=width * (2 if video_labels else 1), fps=fps)
    done = "wrote "
    if write_images:
        root = _prepare_dir(root)
        for path in stale:  # an earlier synth output: replaced whole, no old frame or list left behind
            path.unlink()
        lists = {name: len(indices) for name, indices in assigned.items()}
        meta: dict[str, object] = {"generator": GENERATOR, WORLD_KEY: SYNTHETIC_WORLD_VERSION, "seed": seed,
                                   "count": count, "height": height, "width": width, "split": lists}
        # classes.yaml first, so the frames written so far are a dataset whenever the run stops; and a
        # synth.yaml that marks the folder as synth's (the next run replaces it) and, until the run
        # ends, says it did not finish (what a run killed outright leaves).
        (root / "classes.yaml").write_text(yaml.safe_dump(SYNTHETIC_CLASSES.to_dict(), sort_keys=False))
        marker = {k: v for k, v in meta.items() if k != "count"}
        _write_meta(root, {**marker, "requested": count, "interrupted": True})
        (root / "images").mkdir(exist_ok=True)
        (root / "labels").mkdir(exist_ok=True)
        written = 0
        try:
            for i in range(count):
                image, label = render_scene(scene_seed(seed, i), height=height, width=width)
                name = f"{i:06d}.png"
                for folder, picture in (("images", image), ("labels", label)):
                    try:  # any --out name: OpenCV is not handed one that is not UTF-8 (cvpath)
                        written_ok = cvpath.imwrite(root / folder / name, picture)
                    except OSError as exc:
                        raise ConfigError(f"could not write {cvpath.display(root / folder / name)}: "
                                          f"{exc.strerror or exc}; free space or choose a writable --out") from None
                    if not written_ok:
                        raise ConfigError(f"could not write {cvpath.display(root / folder / name)}; check free "
                                          "space and permissions")
                written = i + 1
                if progress is not None:
                    progress(i)
        except KeyboardInterrupt:
            raise SynthInterrupted(_keep_frames_written(root, written, count, split, meta)) from None
        _write_lists(root, assigned)
        _write_meta(root, meta)
        summary.update(out_dir=str(root), lists=lists)
        done = f"wrote all {count} frames to {root} ({_lists_text(lists)}) and "
    if video is not None:
        frames = [0]

        def claim() -> None:  # the file is open: from here it is synth's, the next run into out_dir may replace it
            if write_images:
                meta["video"] = _video_in_meta(video, root)
                _write_meta(root, meta)

        try:
            write_video(video, count=count, height=height, width=width, seed=seed, fps=fps, with_labels=video_labels,
                        progress=lambda i: frames.__setitem__(0, i + 1), opened=claim)
        except KeyboardInterrupt:
            if write_images and "video" in meta:
                _write_meta(root, {**meta, "video_frames": frames[0]})
            raise SynthInterrupted(f"{done}{frames[0]} of {count} frames of the drive to {video} (a playable "
                                   "video of them)") from None
        summary["video"] = str(video)
    return summary


def _refuse_video_in_dataset(video: Path, root: Path) -> None:
    """ConfigError when ``video`` is the dataset folder ``root`` or lies in its images/ or labels/,
    which hold only its frames and label masks (the next run would refuse the video there as
    someone else's file)."""
    path, base = video.resolve(), root.resolve()
    if path == base:
        raise ConfigError(f"--video {video} is the --out folder itself; give the video a path of its own, such as "
                          f"{root / 'drive.mp4'}")
    for sub, holds in (("images", "frames"), ("labels", "label masks")):
        if path.is_relative_to(base / sub):
            raise ConfigError(f"--video {video} is inside {root / sub}, which holds only the dataset's {holds}; put "
                              f"the video beside them, such as {root / video.name}")


def _write_meta(root: Path, meta: dict[str, object]) -> None:
    (root / "synth.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))


def _write_lists(root: Path, assigned: dict[str, list[int]]) -> None:
    for name, indices in assigned.items():
        (root / f"{name}.txt").write_text("".join(f"images/{i:06d}.png labels/{i:06d}.png\n" for i in indices))


def _lists_text(lists: dict[str, int]) -> str:
    return ", ".join(f"{name}.txt {n}" for name, n in lists.items())


def _keep_frames_written(root: Path, written: int, count: int, split: dict[str, float], meta: dict[str, object]) -> str:
    """After an interrupt: make the ``written`` frames in ``root`` a dataset (list files over them,
    split as ``split`` would split that many, else all train; synth.yaml saying so); returns the
    line that says what is there."""
    for sub in ("images", "labels"):  # a frame cut between its image and its label
        partial = root / sub / f"{written:06d}.png"
        if partial.is_file():
            partial.unlink()
    try:
        assigned = _assign_splits(written, split) if written else {}
    except ConfigError:  # too few frames for a frame per split: all of them train
        assigned = {"train": list(range(written))}
    _write_lists(root, assigned)
    lists = {name: len(indices) for name, indices in assigned.items()}
    _write_meta(root, {**meta, "count": written, "requested": count, "split": lists, "interrupted": True})
    if not written:
        return f"wrote 0 of {count} frames to {root}"
    return (f"wrote {written} of {count} frames to {root}, a dataset of them ({_lists_text(lists)}; synth.yaml says "
            "interrupted)")


def contact_sheet(*, count: int = 16, height: int = 180, width: int = 320, seed: int = 0, columns: int = 4) -> np.ndarray:
    """A BGR grid of ``count`` dataset frames of ``seed`` (the frames ``perception synth --seed`` writes),
    each with its colourised labels underneath, for a quick look at the world's variety."""
    if not isinstance(count, int) or not 1 <= count <= MAX_SHEET_COUNT:
        raise ConfigError(f"contact sheet count {count!r} must be 1..{MAX_SHEET_COUNT}")
    height, width = check_size(height, width)
    tiles = []
    for i in range(count):
        image, label = render_scene(scene_seed(seed, i), height=height, width=width)
        tiles.append(np.vstack([image, colorize(label)]))
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (-len(tiles) % columns)
    rows = [np.hstack(tiles[r : r + columns]) for r in range(0, len(tiles), columns)]
    return np.vstack(rows)


def write_contact_sheet(path: str | Path, *, count: int = 16, height: int = 180, width: int = 320, seed: int = 0) -> Path:
    """Write ``contact_sheet`` to a PNG (or any image format OpenCV writes); ConfigError if it cannot,
    said before any tile is rendered and naming ``--contact-sheet`` (the type from the suffix, the
    place by writing a file there, a file already there by opening it for writing)."""
    from perception.sinks import check_output_writable, missing_folders, os_reason, remove_empty_folders

    path = Path(path)
    if not isinstance(count, int) or not 1 <= count <= MAX_SHEET_COUNT:
        raise ConfigError(f"contact sheet count {count!r} must be 1..{MAX_SHEET_COUNT}")
    if not cvpath.have_image_writer(path):
        kind = f"the suffix {path.suffix}" if path.suffix else "no file suffix"
        raise ConfigError(f"--contact-sheet {path} has {kind}, not an image type a contact sheet is written as; "
                          f"give a .png path such as {path.with_name(path.stem + '.png')}")
    fix = "choose a writable --contact-sheet path"
    parent = path.parent if str(path.parent) else Path(".")
    created = missing_folders(parent)
    try:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {parent} for --contact-sheet {path} "
                              f"({file_in_the_way(parent) or os_reason(exc)}); {fix}") from None
        check_output_writable(path, fix=fix)
    except ConfigError:
        remove_empty_folders(created)
        raise
    sheet = contact_sheet(count=count, height=height, width=width, seed=seed)
    # Encoded here and written by Python: a failure is the system's reason in one line, not an OpenCV
    # warning on stderr followed by a guess.
    ok, encoded = cv2.imencode(path.suffix, sheet)
    if not ok:
        raise ConfigError(f"could not encode the contact sheet as {path.suffix}; give a .png path such as "
                          f"{path.with_name(path.stem + '.png')}")
    try:
        path.write_bytes(encoded.tobytes())
    except OSError as exc:
        raise ConfigError(f"could not write contact sheet {path} ({os_reason(exc)}); {fix}") from None
    return path
