"""H47 (s42): damaged JPEGs and PNGs in image folders and MJPEG.

HIGH-2: a JPEG whose data is damaged but that still ends in its end marker (bit rot mid-file, a
frame cut short and closed with FF D9) was published as a good frame, uncounted, with libjpeg's own
``Corrupt JPEG data: ...`` line on stderr; now it is a corrupt frame (image folder, raw .mjpeg
file, HTTP MJPEG stream), and the pixels of good JPEGs are those OpenCV gives.
MEDIUM-1: a damaged PNG's libpng line came on every ``--loop`` pass; now once.
MEDIUM-2: a PNG over libpng's side limit was "cannot be decoded" with libpng's lines; now it is
named for that limit, before decoding.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest

from perception.sources import SourceOptions, open_source
from perception.sources import jpeg as jpeg_module
from tests.test_geometry_s41 import mjpeg_server


def scene(w: int = 160, h: int = 120, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    image = np.dstack([x * 255 // w, y * 255 // h, (x + y) % 97 * 2]).astype(np.uint8)
    return cv2.add(image, rng.integers(0, 40, image.shape, dtype=np.uint8))


def encoded(image: np.ndarray, *params: int) -> bytes:
    return cv2.imencode(".jpg", image, list(params))[1].tobytes()


def damaged_jpegs() -> dict[str, bytes]:
    """Two JPEGs that OpenCV decodes (with libjpeg's warning on stderr) to a picture partly garbage
    or grey: bit rot in the middle, and a frame cut to a third and closed with its end marker."""
    good = encoded(scene())
    rot = bytearray(good)
    middle = len(rot) // 2
    rot[middle: middle + 60] = np.random.default_rng(1).integers(0, 255, 60, dtype=np.uint8).tobytes()
    found = {"rot.jpg": bytes(rot), "cut.jpg": good[: len(good) // 3] + b"\xff\xd9"}
    for data in found.values():  # what made them slip through: OpenCV gives an image (and libjpeg's line)
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
    return found


@pytest.fixture
def damaged(capfd) -> dict[str, bytes]:
    """``damaged_jpegs``, made before the test's own stderr is looked at."""
    found = damaged_jpegs()
    capfd.readouterr()
    return found


def read_all(source, limit: int = 50) -> list[np.ndarray]:
    frames = []
    try:
        while len(frames) < limit and (frame := source.read()) is not None:
            frames.append(frame.image)
    finally:
        source.close()
    return frames


def test_a_damaged_jpeg_in_an_image_folder_is_a_corrupt_frame(tmp_path, capfd, damaged):
    for name, data in damaged.items():
        (tmp_path / name).write_bytes(data)
    cv2.imwrite(str(tmp_path / "good.jpg"), scene(seed=2))
    source = open_source(str(tmp_path))
    frames = read_all(source)
    assert len(frames) == 1 and source.corrupt == 2, (len(frames), source.corrupt)  # was 3 published, 0 corrupt
    cut, rot = sorted(source.skipped)
    assert cut == f"'{tmp_path}/cut.jpg' is a damaged JPEG image (libjpeg: Corrupt JPEG data: premature end of data segment)"
    assert rot.startswith(f"'{tmp_path}/rot.jpg' is a damaged JPEG image (libjpeg: Corrupt JPEG data: "), rot
    assert "Corrupt JPEG data" not in capfd.readouterr().err  # no raw library line


def test_a_damaged_jpeg_in_a_raw_mjpeg_file_is_a_corrupt_frame(tmp_path, capfd, damaged):
    good = [encoded(scene(seed=s)) for s in range(4)]
    clip = tmp_path / "clip.mjpeg"
    clip.write_bytes(good[0] + damaged["rot.jpg"] + good[1] + damaged["cut.jpg"] + good[2] + good[3])
    source = open_source(str(clip))
    frames = read_all(source)
    assert len(frames) == 4 and source.corrupt == 2, (len(frames), source.corrupt)  # was 6 published, 0 corrupt
    assert all("a damaged JPEG image (libjpeg: " in s for s in source.skipped), source.skipped
    assert "Corrupt JPEG data" not in capfd.readouterr().err


def test_a_damaged_jpeg_in_an_http_mjpeg_stream_is_a_corrupt_frame(capfd, damaged):
    good = encoded(scene())
    server = mjpeg_server([good, good, damaged["rot.jpg"], good])
    try:
        source = open_source(f"http://127.0.0.1:{server.server_address[1]}/cam.mjpg", SourceOptions(read_timeout_s=5))
        frames = read_all(source, limit=5)
    finally:
        server.shutdown()
        server.server_close()
    assert len(frames) == 5 and source.corrupt == 1, source.corrupt  # was 0: the damaged one published
    assert "a damaged JPEG image (libjpeg: Corrupt JPEG data" in source.skipped[0], source.skipped
    assert "Corrupt JPEG data" not in capfd.readouterr().err


def exif_jpeg(data: bytes, orientation: int) -> bytes:
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    app1 = b"Exif\0\0II" + struct.pack("<HI", 42, 8) + ifd
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]


def test_good_jpegs_read_as_opencv_reads_them(tmp_path):
    """The same pixels as cv2.imread: EXIF orientation, grey, progressive, 4:4:4, CMYK, restart
    markers; and a webcam's fill bytes before the end marker are no damage."""
    from PIL import Image

    image = scene(48, 32)
    files = {
        "grey.jpg": encoded(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)),
        "progressive.jpg": encoded(image, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        "444.jpg": encoded(image, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444),
        "restart.jpg": encoded(image, cv2.IMWRITE_JPEG_RST_INTERVAL, 2),
        "padded.jpg": encoded(image)[:-2] + b"\x00\x00\xff\xd9",
    }
    cmyk = io.BytesIO()
    Image.fromarray(image[:, :, ::-1]).convert("CMYK").save(cmyk, "JPEG")
    files["cmyk.jpg"] = cmyk.getvalue()
    for orientation in range(1, 9):
        files[f"exif{orientation}.jpg"] = exif_jpeg(encoded(image), orientation)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    source = open_source(str(tmp_path))
    names = [p.name for p in source.files]
    frames = read_all(source)
    assert source.corrupt == 0 and len(frames) == len(files)
    for name, frame in zip(names, frames, strict=True):
        expected = cv2.imread(str(tmp_path / name), cv2.IMREAD_COLOR)
        assert frame.shape == expected.shape and np.array_equal(frame, expected), name


def test_a_jpeg_over_opencvs_pixel_limit_is_still_refused_before_decoding(tmp_path):
    """Not decoded by simplejpeg, which has no limit: given to OpenCV, which refuses it (in a fresh
    process: OpenCV reads its limit once, and this one imported cv2 before perception set it)."""
    data = bytearray(encoded(scene(48, 32)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", 9000, 9000)  # its header says 9000 x 9000
    (tmp_path / "huge.jpg").write_bytes(bytes(data))
    assert jpeg_module.jpeg_size(bytes(data)) == (9000, 9000)
    code = ("import sys; from perception.sources import open_source; s = open_source(sys.argv[1]); "
            "f = s.read(); print(f is None, s.skipped)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == (f"True [\"'{tmp_path}/huge.jpg' has more than 67108864 pixels (8192 x 8192); "
                                   "resize it for the node\"]"), done.stdout + done.stderr


def damaged_png(tmp_path) -> None:
    data = bytearray(cv2.imencode(".png", scene(64, 48))[1].tobytes())
    middle = len(data) // 2
    data[middle: middle + 40] = bytes(40)
    (tmp_path / "a.png").write_bytes(bytes(data))
    cv2.imwrite(str(tmp_path / "b.png"), scene(64, 48, seed=3))


def test_a_damaged_png_is_decoded_once_under_loop(tmp_path, capfd):
    damaged_png(tmp_path)
    source = open_source(str(tmp_path), SourceOptions(loop=True))
    frames = read_all(source, limit=8)  # 8 passes
    err = capfd.readouterr().err
    assert len(frames) == 8 and source.corrupt == 1 and len(source.skipped) == 1, (source.corrupt, source.skipped)
    assert err.count("libpng") <= 1, err  # was one libpng line a pass


def test_a_damaged_file_replaced_under_loop_is_read_again(tmp_path):
    damaged_png(tmp_path)
    source = open_source(str(tmp_path), SourceOptions(loop=True))
    try:
        assert source.read() is not None and source.corrupt == 1  # a.png skipped, b.png read
        cv2.imwrite(str(tmp_path / "a.png"), scene(64, 48, seed=4))  # repaired
        assert source.read() is not None and source.read() is not None  # a.png, then b.png
        assert source.corrupt == 1
    finally:
        source.close()


def png_header_only(path, width: int, height: int) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(bytes(1000))) + chunk(b"IEND", b""))


def test_a_png_over_libpngs_side_limit_is_named_for_it(tmp_path, capfd):
    png_header_only(tmp_path / "001.png", 2_000_000, 10)
    png_header_only(tmp_path / "002.png", 10, 1_020_000)
    cv2.imwrite(str(tmp_path / "003.png"), scene(64, 48))
    source = open_source(str(tmp_path))
    frames = read_all(source)
    assert len(frames) == 1 and source.corrupt == 2
    assert source.skipped == [  # was "cannot be decoded", with libpng's lines
        f"'{tmp_path}/001.png' is wider than 1000000 pixels (2000000), libpng's limit for one side of a PNG; "
        "resize it for the node",
        f"'{tmp_path}/002.png' is taller than 1000000 pixels (1020000), libpng's limit for one side of a PNG; "
        "resize it for the node"]
    assert "libpng" not in capfd.readouterr().err
