"""The ``folder`` dataset: your own images and labels with a ``classes.yaml`` class table.

    open_dataset("folder:/data/mine", split="train")   # also what ``perception synth`` writes

Labels may be class-id images, RGB colour-palette images, indexed PNGs whose index is the class id
(Pascal VOC's layout) or 0/255 binary masks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from perception.config import cut
from perception.contracts import ClassTable
from perception.datasets.base import (
    INVALID_LABEL,
    SegmentationDataset,
    check_8_bit,
    identity_lut,
    map_label,
    named,
    read_list_file,
    require_dir,
    unknown_split,
    warn_frames_in_other_lists,
)
from perception.errors import ConfigError, DataError, why_not_a_file
from perception.sources.images import (  # the node's: a folder dataset takes what it reads
    IMAGE_SUFFIXES,
    _not_a_regular_file,
)
from perception.yamlfile import parse_yaml

log = logging.getLogger(__name__)

#: The splits a folder without split lists or split sub-folders serves, each the whole folder.
FLAT_FOLDER_SPLITS = ("train", "val", "test")


def open_folder(argument: str, *, split: str, spec: str) -> SegmentationDataset:
    """``images/`` and ``labels/`` (or ``masks/``) matched by file name, with ``classes.yaml``.

    The split comes from a ``<split>/`` sub-folder with the same layout (by its exact name, else
    by ``SPLIT_FOLDER_NAMES`` in any case: ``validation/`` is val; ``_split_dataset``), else from a
    ``<split>.txt`` list of ``image label`` paths (as ``perception synth`` writes), else from
    split folders in ``images/`` mirrored in ``labels/`` (``_split_folder``), else the whole
    folder serves each of train, val and test. ``split`` is also read by the split folders' names
    in any case (``validation`` and ``Val`` are val: ``SPLIT_FOLDER_NAMES``). Once ``train.txt``,
    ``val.txt`` or ``test.txt`` is there, the lists are the splits: a split without its list is
    refused (train without ``train.txt`` would train on the ``val.txt`` frames). Without a list,
    images and labels pair by their path inside ``images/`` and ``labels/`` without the suffix,
    sub-folders included (``_pairs_by_name``).
    Labels are class-id images, RGB colour-palette images (colours from the table; each class its
    own colour), or 0/255 binary masks for a two-class table whose ignore id is not 255.

    Raises:
        DataError: an unknown split (listing the known ones), missing files, a bad class table.
    """
    if not argument:
        raise ConfigError(f"dataset {spec!r}: give the folder, e.g. folder:/data/mine")
    root = require_dir(Path(argument).expanduser(), "dataset folder")
    split_dirs = [p.name for p in root.iterdir() if not p.name.startswith(".") and (p / "images").is_dir()]
    if split_dirs:
        root = root / _split_dataset(root, sorted(split_dirs), split)
    wanted = SPLIT_FOLDER_NAMES.get(split.lower(), split)  # validation, Val: the val split, as split folders
    lists = [f"{name}.txt" for name in FLAT_FOLDER_SPLITS if (root / f"{name}.txt").is_file()]
    list_file = next((f for f in (root / f"{split}.txt", root / f"{wanted}.txt") if f.is_file()), None)
    if list_file is None and lists:
        if wanted == "train":  # val.txt alone: every image, the val.txt frames too, would be trained on
            listed = " and ".join(lists)
            raise DataError(f"{named(root)} has {listed} but no train.txt: with list files each split needs its own, as "
                            f"training on every image would train on the {listed} frames; write train.txt (one "
                            f"'image_path label_path' line per training pair, as in {lists[0]}), or remove {listed} "
                            "to split by the folders")
        raise unknown_split(split, "folder", _split_lists(root), f" {named(root)} (no {split}.txt there)")
    table_file = root / "classes.yaml"
    table, zero_void = _read_class_table(table_file)
    image_dir = require_dir(root / "images", "image folder")
    label_dir = next((root / n for n in ("labels", "masks") if (root / n).is_dir()), None)
    if label_dir is None:
        raise DataError(f"no labels/ or masks/ folder in {named(root)}; put one label image per image there")
    folders = None
    if list_file is not None:
        pairs = read_list_file(list_file, root)
        warn_frames_in_other_lists(list_file, pairs, root)
    else:
        # Split folders first: ``validation`` on images/training/ + images/validation/ is theirs to name.
        folders = _split_folder(image_dir, label_dir, split, root)
        if folders is not None:
            image_dir, label_dir = image_dir / folders[0], label_dir / folders[1]
        elif wanted not in FLAT_FOLDER_SPLITS and not split_dirs:  # a <split>/ sub-folder is that split whole
            raise unknown_split(split, "folder", FLAT_FOLDER_SPLITS, f" {named(root)} (one folder, no split folders or lists)")
        pairs = _pairs_by_name(image_dir, label_dir)
    dataset = SegmentationDataset(name=spec, class_table=table, pairs=pairs,
                                  decode_label=_folder_label_decoder(table, table_file, zero_void=zero_void))
    # No list, no split folder: the whole folder serves every split (eval says so: it may be the training data).
    dataset.whole_folder = list_file is None and folders is None and not split_dirs
    # The label value of void in the files, where it is not the table's ignore id (eval's pixel count names it).
    dataset.stored_void = 0 if zero_void else None
    return dataset


#: Sub-folders of ``images/`` read as a split, by their lower-cased name: Cityscapes' and BDD100K's
#: ``train``/``val``/``test``, ADE20K's ``training``/``validation``, and ``valid``/``testing``.
SPLIT_FOLDER_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                      "test": "test", "testing": "test"}


def _split_dataset(root: Path, names: list[str], split: str) -> str:
    """The sub-folder of ``root`` (one of ``names``, each holding ``images/``) that is ``split``:
    the one of that exact name, else the one that is the same split by ``SPLIT_FOLDER_NAMES`` in
    any case (``validation/`` for ``val``, ``Train/`` for ``train``; ``Night/`` for ``night``).
    DataError naming both when two are one split (``val/`` and ``validation/``), as only one of
    them would be read without a word, and for a split none of them is, naming them."""
    def key(name: str) -> str:
        return SPLIT_FOLDER_NAMES.get(name.lower(), name.lower())

    matches = [name for name in names if key(name) == key(split)]
    if split in names and (split.lower() not in SPLIT_FOLDER_NAMES or len(matches) == 1):
        return split  # a custom name (night/ beside Night/) is read by its exact name first
    if len(matches) > 1:
        raise DataError(f"{named(root)} has {len(matches)} folders for split {key(split)} ({_listed([f'{n}/' for n in matches])}), "
                        "each with its own images/: keep one of them")
    if not matches:
        raise unknown_split(split, "folder", names, f" {named(root)} (no {split}/images there)")
    return matches[0]


def _split_lists(root: Path) -> list[str]:
    """The names of the split lists in ``root``: ``train``, ``val`` and ``test`` when their
    ``.txt`` is there, and any other ``<name>.txt`` whose first line that is not empty holds two
    image paths (``images/a.png labels/a.png``); a ``README.txt`` or ``notes.txt`` is no split."""
    names = []
    for path in sorted(p for p in root.glob("*.txt") if p.is_file()):
        if path.stem in FLAT_FOLDER_SPLITS:
            names.append(path.stem)
            continue
        try:
            with path.open("rb") as file:
                head = file.read(4096)  # its first line, in the encodings read_list_file reads
        except OSError:
            continue
        encoding = "utf-16" if head[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
        first = next((line.split() for line in head.decode(encoding, errors="replace").splitlines() if line.strip()), [])
        if len(first) == 2 and all(Path(part).suffix.lower() in IMAGE_SUFFIXES for part in first):
            names.append(path.stem)
    return names


def _split_folder(image_dir: Path, label_dir: Path, split: str, root: Path) -> tuple[str, str] | None:
    """The sub-folders of ``images/`` and of ``labels/`` that hold ``split`` (``("Train", "train")``),
    or None when neither has split folders (then every image serves every split).

    Split folders (``SPLIT_FOLDER_NAMES``, any case) are the splits only when they are all that
    ``images/`` holds at its top, and ``labels/`` holds folders for the same splits (``Train/``
    pairs with ``train/``, ``validation/`` with ``val/``): anything else beside them (loose images,
    ``seqA/``, ``thumbs/``) would be trained and validated on, or dropped, without a word, so it is
    refused naming what is there and the two layouts that work; so are two folders for one split
    on one side (``train/`` and ``Train/``), naming both.
    """
    image_splits, image_rest = _top_level(image_dir)
    label_splits, label_rest = _top_level(label_dir)
    if not image_splits and not label_splits:
        deeper = _split_named_folder_below(image_dir)
        if deeper is not None:  # images/city/train/: every split would hold the val frames too
            raise DataError(f"{named(deeper)} is named like a split but is not at the top of {named(image_dir)}, so every frame "
                            "would serve every split (validation on training frames): put the split folders at the "
                            f"top ({image_dir.name}/train/, {image_dir.name}/val/, the same in {label_dir.name}/), "
                            "rename it, or list each split's pairs in train.txt and val.txt")
        return None
    fix = ("keep only split folders there, the same in images/ and labels/ (move the rest out), "
           "or list each split's pairs in train.txt and val.txt")
    for folder, splits, rest in ((image_dir, image_splits, image_rest), (label_dir, label_splits, label_rest)):
        if splits and rest:
            raise DataError(f"{named(folder)} holds split folders ({_listed(_folders(splits))}) beside {_listed(rest)}, which "
                            f"no split folder holds (they would be trained and validated on, or left out): {fix}")
        for canonical, names in sorted(splits.items()):
            if len(names) > 1:
                raise DataError(f"{named(folder)} has {len(names)} folders for split {canonical} "
                                f"({_listed([f'{n}/' for n in names])}): keep one of them, or list each split's pairs "
                                "in train.txt and val.txt")
    if image_splits.keys() != label_splits.keys():  # by split, so images/Train/ pairs with labels/train/
        have, want = (f"split folders {_listed(_folders(s))}" if s else "no split folders"
                      for s in (label_splits, image_splits))
        raise DataError(f"{named(image_dir)} has {want} but {named(label_dir)} has {have}; give {label_dir.name}/ the same split "
                        f"folders as {image_dir.name}/, or list each split's pairs in train.txt and val.txt")
    canonical = SPLIT_FOLDER_NAMES.get(split.lower(), split)
    if canonical not in image_splits:
        raise unknown_split(split, "folder", image_splits, f" {named(root)} (no {image_dir.name}/{split}/ there)")
    return image_splits[canonical][0], label_splits[canonical][0]


def _top_level(folder: Path) -> tuple[dict[str, list[str]], list[str]]:
    """The split folders at the top of ``folder`` by their split (``{"val": ["validation"]}``), and
    the other image files and folders there (``thumbs/``, ``000000.png``); hidden ones and files
    that are not images are left out, as ``_image_files`` does."""
    splits: dict[str, list[str]] = {}
    rest: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            canonical = SPLIT_FOLDER_NAMES.get(path.name.lower())
            if canonical is None:
                rest.append(f"{named(path.name)}/")
            else:
                splits.setdefault(canonical, []).append(path.name)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            rest.append(path.name)
    return splits, rest


def _split_named_folder_below(folder: Path) -> Path | None:
    """A folder named like a split (``SPLIT_FOLDER_NAMES``) below the top of ``folder``
    (``images/city/train/``), hidden folders left out; None when there is none."""
    for parent, dirs, _files in os.walk(folder):  # not through links: a link loop would not end
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if Path(parent) != folder:
            named = next((d for d in dirs if d.lower() in SPLIT_FOLDER_NAMES), None)
            if named is not None:
                return Path(parent) / named
    return None


def _folders(splits: dict[str, list[str]]) -> list[str]:
    """The split folders of ``_top_level`` as ``training/``, sorted."""
    return sorted(f"{n}/" for names in splits.values() for n in names)


def _listed(names: list[str], most: int = 3) -> str:
    """``a/, b/ and 2 more``: up to ``most`` names, then how many more."""
    if len(names) <= most:
        return ", ".join(names)
    return f"{', '.join(names[:most])} and {len(names) - most} more"


def _pairs_by_name(image_dir: Path, label_dir: Path) -> list[tuple[Path, Path]]:
    """Images and labels matched by their path inside ``images/`` and ``labels/`` without the
    suffix: ``images/seqA/000001.jpg`` with ``labels/seqA/000001.png``, sub-folders (followed
    through symbolic links) included, hidden files and folders (``.name``) left out."""
    images = _image_files(image_dir, "image")
    labels = _image_files(label_dir, "label")
    if not images:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {named(image_dir)} or its sub-folders"
                        + _other_suffixes(image_dir))
    for name in images:
        if name not in labels:
            _refuse_unreachable(images[name], "image")
            raise DataError(f"image {named(images[name])} has no label named {named(name)}.* in {named(label_dir)}"
                            + (_unread_namesake(label_dir, name) or _stray_hint(name, image_dir)))
    for name in labels:
        if name not in images:
            _refuse_unreachable(labels[name], "label")
            raise DataError(f"label {named(labels[name])} has no image named {named(name)}.* in {named(image_dir)}"
                            + (_unread_namesake(image_dir, name) or _stray_hint(name, label_dir)))
    return [(images[n], labels[n]) for n in sorted(images)]


def _refuse_unreachable(path: Path, what: str) -> None:
    """DataError for an image or label file without a partner that is no file at all (a link loop,
    a link to nothing): that, not the missing partner, is what to fix (``loopB.jpg``, the second
    link of a loop, has no label of its name because it is no image)."""
    why = _not_a_regular_file(path)
    if why is not None:
        raise DataError(f"{what} {named(path)} {why}; {'fix the link, or remove it' if path.is_symlink() else 'remove it'}")


def _unread_namesake(folder: Path, name: str) -> str:
    """For ``name`` (``seqA/000001``) missing from ``folder``: the file of that name there with a
    suffix that is not an image suffix read here (``000001.heic``), or the folder of that name with
    an image suffix (``000001.jpg/``), which is why it was not paired."""
    target = folder / name
    if not target.parent.is_dir():
        return ""
    for path in sorted(target.parent.glob(f"{_glob_escape(target.name)}.*")):
        if path.is_dir() and path.suffix.lower() in IMAGE_SUFFIXES and path.with_suffix("").name == target.name:
            return f"; {named(path)} is there, but it is a folder, not an image file: put the file there"
        if path.is_file() and path.with_suffix("").name == target.name:
            return (f"; {named(path)} is there, but {path.suffix} is not an image type a dataset reads "
                    f"({', '.join(sorted(IMAGE_SUFFIXES))}): convert it to one of these")
    return ""


def _other_suffixes(folder: Path) -> str:
    """For an image folder with no image: a file it does hold (another type of image), if any."""
    path = next((p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")), None)
    return "" if path is None else f"; it holds {named(path.relative_to(folder))}: convert the images to one of these"


def _glob_escape(text: str) -> str:
    """``text`` as a glob pattern that matches it alone (``[`` ``*`` ``?`` escaped)."""
    return "".join(f"[{c}]" if c in "[]*?" else c for c in text)


def _stray_hint(name: str, folder: Path) -> str:
    """For a file in a sub-folder (``thumbs/x``), the hint that a folder of previews or thumbnails
    that is not part of the dataset moves out of ``images/`` (or ``labels/``)."""
    if "/" not in name:
        return ""
    sub = folder / name.split("/", 1)[0]
    return f"; if {named(sub)}/ is not part of the dataset (previews, thumbnails), move it out of {folder.name}/"


def _image_files(folder: Path, what: str) -> dict[str, Path]:
    """The image files under ``folder`` by their path inside it without the suffix (``seqA/000001``);
    DataError naming both files when two share one (``x.png`` and ``x.jpg``), as only one of them
    could be paired."""
    found: dict[str, Path] = {}
    seen: set[Path] = set()
    pending = [folder]
    while pending:
        current = pending.pop()
        real = current.resolve()
        if real in seen:  # a symbolic link back to a folder already read
            continue
        seen.add(real)
        for path in sorted(current.iterdir()):
            if path.name.startswith("."):  # .DS_Store, macOS's ._x.png, editors' and notebooks' folders
                continue
            if path.is_dir():
                pending.append(path)
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                name = path.relative_to(folder).with_suffix("").as_posix()
                if name in found:
                    raise DataError(f"{what}s {named(found[name])} and {named(path)} share the name {named(name)}; keep one of them "
                                    f"(each {what} is matched by its name without the suffix)")
                found[name] = path
    return found


#: The ignore id a table gets whose labels store void as 0 (``ignore_id: 0``, classes numbered from 1).
ZERO_VOID_IGNORE_ID = 255
#: How to describe labels that store void as 0 and the classes as 1..N (ADE20K's layout), named by the errors.
ZERO_VOID_FIX = ("for labels that store void as 0 and the classes as 1..N (ADE20K's layout), number the classes "
                 "from 1 (id: 1, 2, ...) and set ignore_id: 0: they are read as classes 0..N-1 with ignore id 255")


def _read_class_table(path: Path) -> tuple[ClassTable, bool]:
    """The table of ``classes.yaml``, and whether its labels store void as 0 and the classes as
    1..N (``ignore_id: 0`` with class ids 1..N): then the table is the classes shifted to 0..N-1
    with ignore id ``ZERO_VOID_IGNORE_ID``, and the label decoder shifts the label values alike,
    so training, evaluation and the exported model all see the usual numbering."""
    if not path.is_file():
        raise DataError(f"class table {named(path)} {why_not_a_file(path)}; write one (classes, ignore_id, task_groups) next to images/")
    try:
        data = parse_yaml(path.read_text(encoding="utf-8", errors="replace"), source=f"class table {named(path)}")
    except ConfigError as exc:  # not YAML, a key given twice, aliases expanding too far
        raise DataError(str(exc)) from None
    zero_void = _stores_void_as_zero(data)
    if not zero_void and (why := _zero_void_layout_problem(data)) is not None:
        raise DataError(f"class table {named(path)} is malformed: {why}")
    if zero_void:
        data = {**data, "ignore_id": ZERO_VOID_IGNORE_ID,
                "classes": [{**entry, "id": entry["id"] - 1} for entry in data["classes"]]}
    try:
        return ClassTable.from_dict(data or {}, new=True), zero_void
    except (ValueError, AttributeError) as exc:
        why = str(exc)
        ignore = data.get("ignore_id") if isinstance(data, dict) else None
        if isinstance(data, dict) and (type(ignore) is int and ignore == 0 or why.startswith("class ids must be 0..")):
            why += f"; {ZERO_VOID_FIX}"
        raise DataError(f"class table {named(path)} is malformed: {why}") from None


def _zero_void_layout_problem(data: object) -> str | None:
    """With ``ignore_id: 0`` and class ids that are whole numbers other than 0 but not 1..N in order
    (ADE20K's layout with a gap, or out of order): the first id wrong, in that layout's terms."""
    if not isinstance(data, dict) or type(data.get("ignore_id")) is not int or data["ignore_id"] != 0:
        return None
    entries = data.get("classes")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        return None
    ids = [e.get("id") for e in entries]
    if not all(type(i) is int for i in ids) or 0 in ids:  # an id 0 is the collision ClassTable names
        return None
    want = next(n for n, i in enumerate(ids, 1) if i != n)
    what = f"id {want} is missing" if want not in ids else f"id {ids[want - 1]} comes where id {want} should"
    return (f"with ignore_id: 0 (void stored as 0, ADE20K's layout) the class ids must be 1, 2, ... "
            f"in order without gaps: {what} (got {cut(str(ids), 80)}); list the classes by id, each id from 1 to N "
            "once (one no label holds too)")


def _stores_void_as_zero(data: object) -> bool:
    """Whether a ``classes.yaml`` says ``ignore_id: 0`` with classes numbered 1..N in order."""
    if not isinstance(data, dict) or type(data.get("ignore_id")) is not int or data["ignore_id"] != 0:
        return False
    entries = data.get("classes")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        return False
    ids = [e.get("id") for e in entries]
    return all(type(i) is int for i in ids) and ids == list(range(1, len(ids) + 1))


def _folder_label_decoder(table: ClassTable, table_file: Path, *,
                          zero_void: bool = False) -> Callable[[np.ndarray, Path], np.ndarray]:
    lut = identity_lut(table)
    if zero_void:  # the files hold 0 for void and 1..N for the classes (``_read_class_table``)
        lut[:] = INVALID_LABEL
        lut[0] = table.ignore_id
        lut[1 : table.num_classes + 1] = np.arange(table.num_classes)
    elif table.num_classes == 2 and table.ignore_id != 255:
        lut[255] = 1  # 0/255 binary masks
    table_palette = np.array(table.palette(), dtype=np.uint8)
    shared = _shared_colour(table)
    warned = False
    by_key: np.ndarray | None = None  # colour -> id (``_colour_lut``), made for the first colour label

    def colour_ids(raw: np.ndarray) -> np.ndarray:
        """Each pixel's class by its colour, ``NO_CLASS`` where no class has it: a look-up of the
        colour packed as a 24-bit key, 4 bytes a pixel (a 48 MP label takes 190 MB for it)."""
        nonlocal by_key
        if by_key is None:
            by_key = _colour_lut(table_palette)
        key = raw[..., 2].astype(np.uint32)  # OpenCV reads BGR(A); the key is 0xRRGGBB
        key <<= 8
        key |= raw[..., 1]
        key <<= 8
        key |= raw[..., 0]
        return by_key[key]

    def read_by_colour(path: Path, by_colour: np.ndarray) -> np.ndarray:
        """``by_colour`` (each pixel's class by the table's colours), unless two classes share a colour:
        then a colour-coded label cannot say which class a pixel is (it would silently be the first)."""
        if shared is not None:
            (first, second), (r, g, b) = shared
            raise DataError(f"label {named(path)} is coded by colour, but class table {named(table_file)} gives classes {first!r} and "
                            f"{second!r} the same colour RGB({r},{g},{b}); give each class its own colour, or store "
                            "class-id labels")
        return by_colour

    def by_colour_or_index(path: Path, by_colour: np.ndarray) -> np.ndarray:
        """An indexed PNG whose colours are all the table's: also a class-id image when its indices
        are class ids. Where the two readings differ, its palette decides: Pascal VOC's own palette
        (what VOC and the tools that export its layout write) means the index is the class id; any
        other means an optimiser packed the table's colours (optipng). Warned once per dataset."""
        nonlocal warned
        indexed = _palette_indices(path)
        if indexed is None:
            return read_by_colour(path, by_colour)
        indices, palette = indexed
        by_index = lut[indices]
        if (by_index == INVALID_LABEL).any():
            return read_by_colour(path, by_colour)
        # Its palette up to the largest index used (a file may store fewer than 256 entries):
        # an optimiser numbers the colours it keeps from 0, so its entry 0 is rarely VOC's black.
        top = int(indices.max()) + 1
        voc = top <= len(palette) and np.array_equal(palette[:top], voc_palette()[:top])
        if shared is not None and (voc or _is_prefix(palette, table_palette, min(top, table.num_classes))):
            # Two classes share a colour, so only the index tells them apart, and this palette (VOC's, or
            # the table's colours in id order) says that the index is the class id.
            return by_index.astype(np.uint8)
        if np.array_equal(by_index, by_colour):
            return read_by_colour(path, by_colour)
        if not warned:
            warned = True
            log.warning("label %s is an indexed PNG that reads two ways: its colours are the class table's, and "
                        "its indices are class ids too; read by its %s, as its palette %s Pascal VOC's (one warning "
                        "per dataset); store class-id PNGs to remove the doubt", named(path),
                        "indices" if voc else "colours", "is" if voc else "is not")
        return by_index.astype(np.uint8) if voc else read_by_colour(path, by_colour)

    def decode(raw: np.ndarray, path: Path) -> np.ndarray:
        check_8_bit(raw, path)
        if raw.ndim == 2:
            return map_label(raw, lut, path, table)
        by_colour = colour_ids(raw)
        found = by_colour != NO_CLASS
        # Transparent pixels (alpha 0) of an RGBA label are not labelled: the ignore id, whatever
        # colour lies under them (paint programs keep the colour of an erased stroke). An indexed
        # PNG's transparency is its palette's, for display: its index or colour decides, as before.
        clear = raw[..., 3] == 0 if raw.shape[2] == 4 else None
        if clear is not None and (not clear.any() or _is_indexed_png(path)):
            clear = None
        if clear is not None:
            if table.ignore_id is None:
                raise DataError(f"label {named(path)} has transparent pixels (alpha 0), which are read as the ignore id, but "
                                f"class table {named(table_file)} has no ignore_id; set one there, or make the labels opaque")
            by_colour[clear] = table.ignore_id
            found |= clear
        if not found.all():
            indexed = _palette_indices(path)
            indices = None if indexed is None else indexed[0]
            b, g, r = (int(v) for v in raw.reshape(-1, raw.shape[2])[int(np.argmin(found)), :3])
            if indices is not None:  # an indexed PNG whose palette is not the table's: VOC's convention
                mapped = lut[indices]
                if (mapped != INVALID_LABEL).all():
                    return mapped.astype(np.uint8)
                index = int(indices[mapped == INVALID_LABEL][0])
                raise DataError(f"label {named(path)} is an indexed PNG that fits neither reading: its colour RGB({r},{g},{b}) "
                                f"is not in the class table, and its index {index} is not a class id; check the labels")
            grey = raw[..., 2]
            hint = ""
            if (grey == raw[..., 1]).all() and (grey == raw[..., 0]).all() and (lut[grey] != INVALID_LABEL).all():
                webp = " (WebP has no single-channel form)" if path.suffix.lower() == ".webp" else ""
                if raw.shape[2] == 4:  # OpenCV reads a grey+alpha PNG (GIMP's export of a grey layer) as BGRA
                    hint = ("; it looks like class ids saved as a grey image with an alpha channel (grey+alpha)"
                            f"{webp}: save them as a single-channel 8-bit PNG, without alpha")
                else:
                    hint = (f"; it looks like class ids saved as a colour image (all three channels equal){webp}: "
                            "save them as a single-channel 8-bit PNG")
            if not hint:
                ignore = (f"the ignore id {table.ignore_id}" if table.ignore_id is not None
                          else f"an ignore_id set in {table_file.name}")
                hint = (f"; add the colour to {named(table_file)} as a class of its own (color: [{r}, {g}, {b}]), or, to "
                        f"leave those pixels out (a void), save labels as class ids (a single-channel 8-bit PNG) "
                        f"with them set to {ignore}")
            raise DataError(f"label {named(path)} has colour RGB({r},{g},{b}), which is not in the class table{hint}")
        if clear is not None:  # not an indexed PNG
            return read_by_colour(path, by_colour)
        return by_colour_or_index(path, by_colour)

    return decode


#: What ``_colour_lut`` holds for a colour of no class (class ids are 0..254).
NO_CLASS = 255


def _colour_lut(palette: np.ndarray) -> np.ndarray:
    """Class id by colour key ``0xRRGGBB`` (16 MB), ``NO_CLASS`` for colours of no class; where
    two classes share a colour, the first."""
    by_key = np.full(1 << 24, NO_CLASS, dtype=np.uint8)
    for class_id in reversed(range(len(palette))):  # the first class of a shared colour written last
        r, g, b = (int(v) for v in palette[class_id])
        by_key[(r << 16) | (g << 8) | b] = class_id
    return by_key


def _is_indexed_png(path: Path) -> bool:
    """Whether ``path`` is an indexed (palette) PNG, from its header."""
    if path.suffix.lower() != ".png":
        return False
    from PIL import Image  # Pillow: header only

    try:
        with Image.open(path) as image:
            return image.mode == "P"
    except (OSError, ValueError):
        return False


def _is_prefix(palette: np.ndarray, table_palette: np.ndarray, top: int) -> bool:
    """Whether the first ``top`` entries of a PNG's ``palette`` are the table's colours in id order."""
    return top <= len(palette) and np.array_equal(palette[:top], table_palette[:top])


def _shared_colour(table: ClassTable) -> tuple[tuple[str, str], tuple[int, int, int]] | None:
    """The first two classes of ``table`` with the same colour, and that colour; None when each has its own."""
    first: dict[tuple[int, int, int], str] = {}
    for info in table.classes:
        if info.color in first:
            return (first[info.color], info.name), info.color
        first[info.color] = info.name
    return None


def voc_palette() -> np.ndarray:
    """Pascal VOC's 256-colour label palette (RGB), the one its devkit's ``labelcolormap`` makes:
    the bits of the index spread over the three channels, most significant first."""
    index = np.arange(256)
    palette = np.zeros((256, 3), dtype=np.uint8)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= (((index >> (3 * bit + channel)) & 1) << (7 - bit)).astype(np.uint8)
    return palette


def _palette_indices(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The palette indices of an indexed (palette) PNG label and its palette (N x 3 RGB), else None.

    OpenCV expands an indexed PNG to its palette's colours, which is right when those are the class
    table's colours (an optimiser such as optipng turns an RGB label into an indexed one). Pascal VOC
    and the tools that export its layout store the class id as the index and keep the palette for
    display; only Pillow reads the index. Pillow opens the header only, so an RGB label costs little.
    """
    if path.suffix.lower() != ".png":
        return None
    from PIL import Image  # Pillow: the one reader of PNG palette indices; only on this path

    try:
        with Image.open(path) as image:
            if image.mode != "P":
                return None
            palette = np.frombuffer(bytes(image.getpalette("RGB") or b""), dtype=np.uint8).reshape(-1, 3)
            return np.asarray(image, dtype=np.uint8), palette
    except (OSError, ValueError):  # OpenCV read it; a file Pillow cannot is reported by colour
        return None
