"""Own labelled frames read the way the node reads its images (session s38, hunter H19).

EXIF orientation turned the image (as the node turns it) but never the label: a silent misalignment.
A ``folder:`` dataset skipped .webp/.tif/.ppm pairs the node reads. Transparent pixels of RGBA colour
labels took the class of the colour under them, and a 48 MP colour label took 2.6 GB to decode.
16-bit images were scaled unlike the node's. List-file errors did not name their cause.
"""

from __future__ import annotations

import logging
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from perception.datasets import open_dataset
from perception.errors import DataError
from perception.sources import open_source
from perception.sources.images import IMAGE_SUFFIXES

H, W = 24, 40  # not square: a 90-degree turn changes the shape
TABLE = {"classes": [{"id": 0, "name": "background", "color": [0, 0, 0]},
                     {"id": 1, "name": "road", "color": [128, 64, 128]},
                     {"id": 2, "name": "sky", "color": [70, 130, 180]}],
         "ignore_id": 255}
#: How the stored pixels of each EXIF orientation are shown (what OpenCV does to the image, which
#: the first test checks too), as numpy (rows, columns) operations.
SHOWN = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def _root(tmp_path: Path, table: dict | None = None) -> Path:
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.yaml").write_text(yaml.safe_dump(table or TABLE, sort_keys=False))
    return root


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stored pixels (RGB) and their class ids, both without symmetry, so any turn shows."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 3, (H, W)).astype(np.uint8)
    rgb = (np.array(TABLE["classes"][0]["color"], np.uint8)[None, None] + ids[..., None] * 60).astype(np.uint8)
    return rgb, ids


def _save(path: Path, array: np.ndarray, orientation: int | None) -> None:
    """``array`` (RGB or ids) with an EXIF orientation tag (None: no EXIF data at all)."""
    extra = {} if orientation is None else {"exif": _exif(orientation)}
    if path.suffix == ".jpg":
        extra.update(quality=100, subsampling=0)
    if path.suffix == ".webp":
        extra.update(lossless=True)
    Image.fromarray(array).save(path, **extra)


# ---- EXIF orientation -------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(2, 9))
def test_a_label_with_the_images_orientation_tag_is_turned_like_the_image(tmp_path, orientation):
    """Both files carry the tag (a tool that copies the photo's EXIF into the label): the label was
    left as stored while the image was turned, 3.74 % mIoU against 97 % upright."""
    root = _root(tmp_path)
    rgb, ids = _scene()
    _save(root / "images" / "a.png", rgb, orientation)
    _save(root / "labels" / "a.png", ids, orientation)
    image, label = open_dataset(f"folder:{root}", split="val")[0]
    assert np.array_equal(image, np.ascontiguousarray(SHOWN[orientation](rgb))[..., ::-1])  # as shown, BGR
    assert np.array_equal(label, SHOWN[orientation](ids))


@pytest.mark.parametrize("suffix", [".jpg", ".webp"])
def test_jpeg_and_webp_tags_turn_the_label_too(tmp_path, suffix):
    root = _root(tmp_path)
    rgb, ids = _scene()
    _save(root / "images" / f"a{suffix}", rgb, 6)
    _save(root / "labels" / "a.png", ids, 6)
    image, label = open_dataset(f"folder:{root}", split="val")[0]
    assert image.shape[:2] == label.shape == (W, H)
    assert np.array_equal(label, np.rot90(ids, -1))


def test_a_label_tag_of_its_own_is_applied(tmp_path):
    root = _root(tmp_path)
    rgb, ids = _scene()
    _save(root / "images" / "a.png", np.ascontiguousarray(rgb[::-1, ::-1]), None)
    _save(root / "labels" / "a.png", ids, 3)
    assert np.array_equal(open_dataset(f"folder:{root}", split="val")[0][1], ids[::-1, ::-1])


def test_a_tagged_image_with_an_untagged_label_is_refused_naming_both_fixes(tmp_path):
    """Square frames and 180-degree turns were silently misaligned; which way the label was drawn
    cannot be known, so the line names both fixes."""
    root = _root(tmp_path)
    rgb, ids = _scene()
    _save(root / "images" / "a.jpg", rgb, 3)
    _save(root / "labels" / "a.png", ids, None)
    ds = open_dataset(f"folder:{root}", split="val")
    image, label = root / "images" / "a.jpg", root / "labels" / "a.png"
    with pytest.raises(DataError) as info:
        ds[0]
    message = str(info.value)
    assert message.startswith(f"image {image} carries EXIF orientation tag 3, so it is shown turned 180 degrees")
    assert f"its label {label} carries no orientation tag: which way the label was drawn is not known" in message
    assert f"exiftran -ai {image}" in message and f"mogrify -auto-orient {image}" in message
    assert f"exiftool -Orientation= -n {image}" in message and "\n" not in message
    # A label with another tag is refused the same way.
    _save(root / "labels" / "a.png", ids, 6)
    with pytest.raises(DataError, match=r"but its label .*a.png carries orientation tag 6: "):
        open_dataset(f"folder:{root}", split="val")[0]


def test_a_90_degree_tag_says_what_the_labels_size_shows(tmp_path):
    """It was: 'label ... is 40 high x 24 wide but image ... is 24 high x 40 wide' for a JPEG that
    every viewer calls 24 x 40, with no word of EXIF."""
    root = _root(tmp_path)
    rgb, ids = _scene()
    _save(root / "images" / "a.jpg", np.ascontiguousarray(np.rot90(rgb, 1)), 6)  # shown as rgb
    _save(root / "labels" / "a.png", np.ascontiguousarray(np.rot90(ids, 1)), None)  # drawn on the stored pixels
    with pytest.raises(DataError, match=r"carries EXIF orientation tag 6, so it is shown turned 90 degrees clockwise "
                                        r".*its size says that it was drawn on the image's pixels as stored; "):
        open_dataset(f"folder:{root}", split="val")[0]
    _save(root / "labels" / "a.png", ids, None)  # drawn on the photo as shown
    with pytest.raises(DataError, match=r"its size says that it was drawn on the image as shown; "):
        open_dataset(f"folder:{root}", split="val")[0]


def test_a_size_mismatch_by_a_turn_names_the_orientation_tag(tmp_path):
    root = _root(tmp_path)
    rgb, ids = _scene()
    _save(root / "images" / "a.png", rgb, None)
    _save(root / "labels" / "a.png", ids, 8)  # drawn upright, but tagged: turned to 40 x 24
    with pytest.raises(DataError, match=r"is 40 high x 24 wide but image .* is 24 high x 40 wide; they must match; "
                                        r"the sizes are the same turned by 90 degrees: the label .*a.png is turned by "
                                        r"its EXIF orientation tag 8 \(turned 90 degrees anticlockwise\)"):
        open_dataset(f"folder:{root}", split="val")[0]


# ---- suffixes ---------------------------------------------------------------------------------


def test_a_folder_takes_every_image_type_the_node_takes(tmp_path):
    """.webp, .tif, .tiff, .ppm and .pgm pairs were skipped without a word (4 of 8 frames scored)."""
    root = _root(tmp_path)
    rgb, ids = _scene()
    suffixes = sorted(IMAGE_SUFFIXES)
    for i, suffix in enumerate(suffixes):
        params = [cv2.IMWRITE_WEBP_QUALITY, 101] if suffix == ".webp" else []
        picture = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if suffix == ".pgm" else rgb[..., ::-1]
        assert cv2.imwrite(str(root / "images" / f"{i}{suffix}"), picture, params)
        assert cv2.imwrite(str(root / "labels" / f"{i}.png"), ids)
    ds = open_dataset(f"folder:{root}", split="val")
    assert sorted(image.suffix for image, _ in ds.pairs) == suffixes
    assert all(np.array_equal(ds[i][1], ids) for i in range(len(ds)))


def test_an_unpaired_file_names_its_namesake_of_another_type(tmp_path):
    root = _root(tmp_path)
    rgb, ids = _scene()
    Image.fromarray(rgb).save(root / "images" / "a.png")
    Image.fromarray(rgb).save(root / "images" / "b.gif")
    for name in ("a", "b"):
        assert cv2.imwrite(str(root / "labels" / f"{name}.png"), ids)
    with pytest.raises(DataError, match=r"label .*b.png has no image named b\.\* in .*images; .*images/b.gif is there, "
                                        r"but .gif is not an image type a dataset reads \(.bmp, .jpeg, .jpg, .pgm, "):
        open_dataset(f"folder:{root}", split="val")


def test_a_lossy_webp_label_is_refused(tmp_path):
    root = _root(tmp_path)
    rgb, ids = _scene()
    Image.fromarray(rgb).save(root / "images" / "a.png")
    Image.fromarray(np.array(TABLE["classes"][1]["color"], np.uint8)[None, None].repeat(H, 0).repeat(W, 1)).save(
        root / "labels" / "a.webp", quality=90)
    with pytest.raises(DataError, match=r"label .*a.webp is a lossy WebP file, whose compression changes label values"):
        open_dataset(f"folder:{root}", split="val")[0]


# ---- RGBA colour labels -----------------------------------------------------------------------


def _rgba_label(ids: np.ndarray, clear_rows: int) -> np.ndarray:
    """A colour label (BGRA for OpenCV) whose top rows are transparent black, as an erased stroke."""
    palette = np.array([c["color"] for c in TABLE["classes"]], np.uint8)
    bgra = np.dstack([palette[ids][..., ::-1], np.full(ids.shape, 255, np.uint8)])
    bgra[:clear_rows] = 0
    return bgra


def test_transparent_pixels_of_a_colour_label_are_the_ignore_id(tmp_path):
    """They read as black, class 0 here: 92.29 % mIoU where the opaque labels give 100 %."""
    root = _root(tmp_path)
    rgb, ids = _scene()
    Image.fromarray(rgb).save(root / "images" / "a.png")
    assert cv2.imwrite(str(root / "labels" / "a.png"), _rgba_label(ids, 5))
    label = open_dataset(f"folder:{root}", split="val")[0][1]
    assert (label[:5] == 255).all() and np.array_equal(label[5:], ids[5:])


def test_transparent_pixels_without_an_ignore_id_are_refused(tmp_path):
    root = _root(tmp_path, {**TABLE, "ignore_id": None})
    rgb, ids = _scene()
    Image.fromarray(rgb).save(root / "images" / "a.png")
    assert cv2.imwrite(str(root / "labels" / "a.png"), _rgba_label(ids, 5))
    with pytest.raises(DataError, match=r"a.png has transparent pixels \(alpha 0\), which are read as the ignore id, "
                                        r"but class table .*classes.yaml has no ignore_id; set one there"):
        open_dataset(f"folder:{root}", split="val")[0]


def test_a_large_colour_label_is_decoded_in_a_few_bytes_a_pixel(tmp_path):
    """The colours were packed in int64 arrays, about 50 bytes a label pixel (2.6 GB for 48 MP)."""
    root = _root(tmp_path)
    h, w = 2000, 3000
    ids = np.zeros((h, w), np.uint8)
    ids[h // 2:] = 1
    ids[:, w // 2:] = 2
    palette = np.array([c["color"] for c in TABLE["classes"]], np.uint8)
    assert cv2.imwrite(str(root / "images" / "a.jpg"), np.zeros((h, w, 3), np.uint8))
    assert cv2.imwrite(str(root / "labels" / "a.png"), palette[ids][..., ::-1])
    ds = open_dataset(f"folder:{root}", split="val")
    tracemalloc.start()
    try:
        label = ds[0][1]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(label, ids)
    # image 3 + label file 3 + packed key 4 + ids 1 + found 1, and the 16 MB colour table: was 55
    assert peak / (h * w) < 20, peak / (h * w)


# ---- 16-bit images ----------------------------------------------------------------------------


def test_16_bit_images_read_as_the_node_reads_them(tmp_path):
    """OpenCV's own 16 -> 8 bits differed from the node's (65535 -> 255) by 1 on a quarter of the pixels."""
    root = _root(tmp_path)
    rng = np.random.default_rng(0)
    path = root / "images" / "a.png"
    assert cv2.imwrite(str(path), rng.integers(0, 65536, (H, W, 3)).astype(np.uint16))
    assert cv2.imwrite(str(root / "labels" / "a.png"), np.zeros((H, W), np.uint8))
    source = open_source(str(path))
    try:
        node = source.read().image
    finally:
        source.close()
    assert np.array_equal(open_dataset(f"folder:{root}", split="val")[0][0], node)


def test_12_bit_data_in_16_bit_images_is_warned_about_once_per_dataset(tmp_path, caplog):
    root = _root(tmp_path)
    rng = np.random.default_rng(0)
    for i in range(3):
        assert cv2.imwrite(str(root / "images" / f"{i}.png"), rng.integers(0, 4096, (H, W, 3)).astype(np.uint16))
        assert cv2.imwrite(str(root / "labels" / f"{i}.png"), np.zeros((H, W), np.uint8))
    with caplog.at_level(logging.WARNING, logger="perception.datasets"):
        ds = open_dataset(f"folder:{root}", split="val")
        for i in range(len(ds)):
            ds[i]
    warnings = [r.getMessage() for r in caplog.records if "10- or 12-bit" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "3 16-bit images hold values up to 4095 only" in warnings[0] and "as the node scales them" in warnings[0]


# ---- list files -------------------------------------------------------------------------------


def _listed(tmp_path: Path, train: list[str], val: list[str]) -> Path:
    root = _root(tmp_path)
    rgb, ids = _scene()
    for i in range(4):
        Image.fromarray(rgb).save(root / "images" / f"{i}.png")
        assert cv2.imwrite(str(root / "labels" / f"{i}.png"), ids)
    (root / "train.txt").write_text("".join(f"{line}\n" for line in train))
    (root / "val.txt").write_text("".join(f"{line}\n" for line in val))
    return root


def test_list_file_errors_name_backslashes_and_spaces(tmp_path):
    root = _listed(tmp_path, ["images\\0.png labels\\0.png"], ["images/1.png labels/1.png"])
    with pytest.raises(DataError, match=r"train.txt:1: images\\0.png not found in .*; use / between folders in list "
                                        r"files, not \\ \(a Windows path\)$"):
        open_dataset(f"folder:{root}", split="train")
    (root / "train.txt").write_text("images/img 0.png labels/0.png\n")
    with pytest.raises(DataError, match=r"train.txt:1: expected 'image_path label_path', got 'images/img 0.png "
                                        r"labels/0.png'; a line splits at white space, so a file name with a space "
                                        r"cannot be listed: rename the file$"):
        open_dataset(f"folder:{root}", split="train")


def test_frames_in_both_train_and_val_lists_are_warned_about(tmp_path, caplog):
    pairs = [f"images/{i}.png labels/{i}.png" for i in range(4)]
    root = _listed(tmp_path, pairs[:3], pairs[1:])
    with caplog.at_level(logging.WARNING, logger="perception.datasets"):
        open_dataset(f"folder:{root}", split="train")
        assert not caplog.records  # said once, by the split scored on them
        open_dataset(f"folder:{root}", split="val")
    [record] = caplog.records
    assert record.getMessage().startswith(f"2 of the 3 frames of {root / 'val.txt'} are also in train.txt (first: "
                                          f"{root / 'images' / '1.png'})")


def test_an_absolute_path_outside_the_folder_read_by_its_last_parts_is_warned_about(tmp_path, caplog):
    other = _listed(tmp_path / "other", [f"images/{i}.png labels/{i}.png" for i in range(4)], ["images/0.png labels/0.png"])
    root = _listed(tmp_path, [f"{other}/images/{i}.png {other}/labels/{i}.png" for i in range(2)],
                   ["images/3.png labels/3.png"])
    with caplog.at_level(logging.WARNING, logger="perception.datasets"):
        ds = open_dataset(f"folder:{root}", split="train")
    assert [image for image, _ in ds.pairs] == [root / "images" / "0.png", root / "images" / "1.png"]
    [record] = caplog.records
    assert record.getMessage() == (
        f"{root / 'train.txt'}:1: {other}/images/0.png is outside the dataset folder {root}, so "
        f"{root / 'images' / '0.png'} (its last two parts there) was read instead, as for 4 listed paths in all; to "
        "use the listed files, put them in the dataset folder")
