"""Paths a user gives that the program may not read, or that are not what their names suggest.

Session 33, hunt 1: a folder, file, config or model this user may not read ended in a traceback
(F1); ``file://`` URLs worked for video files only (F4); an image replaced by a FIFO after the
folder was listed blocked the node for ever (F5); a file named like a GStreamer pipeline, a regular
file at a camera's path, ``--config /dev/null`` and ``--duration inf`` (F6).

Root ignores file permissions, and the tests usually run as root: the permission cases run the
program as user ``nobody`` through ``setpriv`` (skipped where there is none), or, for a user that
is not root, as that user.
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.errors import ConfigError, ModelError, SourceError, SourceUnavailableError
from perception.sources import open_source, source_kind

H, W = 48, 64
TIMEOUT_S = 120

def write_video(path: Path, n: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (W, H))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((H, W, 3), 10 * i, np.uint8))
    writer.release()
    return path


def write_images(folder: Path, n: int) -> Path:
    folder.mkdir(exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((H, W), 20 * i, np.uint8))
    return folder


def read_all(source, limit: int = 1000) -> list:
    frames = []
    while len(frames) < limit and (frame := source.read()) is not None:
        frames.append(frame)
    return frames


# ---- F1: permission denied, as a user the permissions apply to ---------------------------------------


@pytest.fixture(scope="module")
def denied(tiny_model_path) -> Path:
    """A world-readable folder (under /tmp: pytest's own folders are closed to other users) holding
    a folder nobody may list, one nobody may enter, and files nobody may read."""
    root = Path(tempfile.mkdtemp(prefix="perception-denied-"))
    root.chmod(0o755)
    (root / "home").mkdir(mode=0o777)
    (root / "home").chmod(0o777)
    shutil.copy(tiny_model_path, root / "model.onnx")
    write_images(root / "noperm", 2)
    write_images(root / "nx", 2)
    write_video(root / "nx" / "clip.avi", 3)
    shutil.copy(tiny_model_path, root / "nx" / "m.onnx")
    (root / "nx" / "c.yaml").write_text("fps: 5\n")
    write_images(root / "mixed", 3)
    (root / "noperm.yaml").write_text("fps: 5\n")
    shutil.copy(tiny_model_path, root / "noperm.onnx")
    write_video(root / "noperm.avi", 3)
    for closed in ("noperm", "noperm.yaml", "noperm.onnx", "noperm.avi", "mixed/1.png"):
        (root / closed).chmod(0)
    (root / "nx").chmod(0o700)  # listable by its owner only; others cannot enter it
    if os.geteuid() == 0:
        os.chown(root / "nx", 65534, 65534)  # owned by nobody: root without its capabilities is another user
    yield root
    for path in (root / "noperm", root / "nx"):
        path.chmod(0o755)
    shutil.rmtree(root)


#: name -> (command line, run in the ``denied`` folder; the words its one error line must hold)
CASES = {
    "folder": ("run --source noperm", "image folder noperm cannot be read: permission denied; check its "
               "permissions (ls -ld noperm) or run as a user who can read it"),
    "folder/": ("run --source noperm/", "image folder noperm/ cannot be read: permission denied"),
    "glob": ("run --source 'noperm/*.png'", "pattern noperm/*.png cannot be read: permission denied on folder noperm"),
    "image in a closed folder": ("run --source nx/0.png", "image file nx/0.png cannot be read: permission denied "
                                 "on folder nx; check its permissions (ls -ld nx)"),
    "glob in a closed folder": ("run --source 'nx/*.png'", "permission denied on folder nx"),
    "video in a closed folder": ("run --source nx/clip.avi", "video file nx/clip.avi cannot be read: permission "
                                 "denied on folder nx"),
    "file:// image in a closed folder": ("run --source file://{root}/nx/0.png", "nx/0.png cannot be read: permission "
                                         "denied on folder {root}/nx"),
    "unreadable video": ("run --source noperm.avi", "video file noperm.avi cannot be read: permission denied; "
                         "check its permissions (ls -ld noperm.avi)"),
    "config": ("run --config noperm.yaml", "config file noperm.yaml cannot be read: permission denied"),
    "config in a closed folder": ("run --config nx/c.yaml", "config file nx/c.yaml cannot be read: permission denied "
                                  "on folder nx"),
    "model in a closed folder": ("run --model nx/m.onnx", "model file nx/m.onnx cannot be read: permission denied "
                                 "on folder nx"),
    "unreadable model": ("run --model noperm.onnx", "model file noperm.onnx cannot be read: permission denied"),
    "view folder": ("view --source noperm --out home/v.mp4", "image folder noperm cannot be read: permission denied"),
    "view image in a closed folder": ("view --source nx/0.png --out home/v.mp4", "image file nx/0.png cannot be read: "
                                      "permission denied on folder nx"),
    "view unreadable video": ("view --source noperm.avi --out home/v.mp4", "video file noperm.avi cannot be read: "
                              "permission denied"),
}


@pytest.fixture(scope="module")
def results(denied, permission_bound) -> dict[str, subprocess.CompletedProcess]:
    user = permission_bound
    env = {**os.environ, "HOME": str(denied / "home")}

    def run(name: str) -> subprocess.CompletedProcess:
        argv = shlex.split(CASES[name][0].format(root=denied))
        if "--model" not in argv:
            argv += ["--model", "model.onnx"]
        if argv[0] == "run":
            argv += ["--endpoint", "ipc://home/never-bound"]
        return subprocess.run([*user, sys.executable, "-m", "perception", *argv], capture_output=True, text=True,
                              timeout=TIMEOUT_S, cwd=denied, env=env)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(CASES, pool.map(run, CASES), strict=True))


@pytest.mark.parametrize("name", list(CASES))
def test_a_path_this_user_may_not_read_is_one_line_naming_it_and_the_fix(name, results, denied):
    proc = results[name]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("perception: error:")]
    assert len(lines) == 1, proc.stderr
    assert CASES[name][1].format(root=denied) in lines[0], lines[0]


def test_an_image_this_user_may_not_read_is_skipped_as_permission_denied_not_undecodable(denied, permission_bound):
    script = ("from perception.sources import open_source\n"
              "src = open_source('mixed')\n"
              "n = 0\n"
              "while src.read() is not None:\n"
              "    n += 1\n"
              "print(n, src.corrupt)\n"
              "print(*src.skipped, sep='\\n')\n")
    proc = subprocess.run([*permission_bound, sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=TIMEOUT_S, cwd=denied)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "2 1", "'mixed/1.png' cannot be read: permission denied; check its permissions (ls -ld mixed/1.png) or run as "
        "a user who can read it"]


# ---- F1, as root: the same errors where Python raises PermissionError ---------------------------------


def test_a_folder_that_cannot_be_listed_is_a_source_error_naming_it(tmp_path, monkeypatch):
    folder = write_images(tmp_path / "frames", 2)

    def refuse(self):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", refuse)
    with pytest.raises(SourceError, match=r"^image folder .*/frames cannot be read: permission denied; check its "
                                          r"permissions \(ls -ld .*/frames\) or run as a user who can read it$"):
        open_source(str(folder))


def test_a_config_file_that_cannot_be_read_is_a_config_error_naming_it(tmp_path, monkeypatch):
    from perception.yamlfile import read_yaml

    config = tmp_path / "node.yaml"
    config.write_text("fps: 5\n")
    monkeypatch.setattr(Path, "read_text", lambda self, **_: (_ for _ in ()).throw(
        PermissionError(errno.EACCES, "Permission denied", str(self))))
    with pytest.raises(ConfigError, match=r"^config file .*/node.yaml cannot be read: permission denied"):
        read_yaml(config)


def _fake_command(monkeypatch, exc: BaseException) -> None:
    from perception import cli

    def main(args):
        raise exc

    monkeypatch.setattr(cli, "load_command", lambda name: types.SimpleNamespace(add_arguments=lambda parser: None,
                                                                                main=main))


@pytest.mark.parametrize(("exc", "code", "line"), [
    (PermissionError(errno.EACCES, "Permission denied", "data/out.bin"), 2,
     "perception: error: data/out.bin: permission denied; check its permissions (ls -ld data/out.bin) or run as a "
     "user who can use it\n"),
    (OSError(errno.ENOSPC, "No space left on device", "out/clip.mcap"), 1,
     "perception: error: out/clip.mcap: No space left on device; check the file and its file system\n"),
])
def test_an_os_error_about_a_file_that_a_command_did_not_catch_is_one_line(exc, code, line, monkeypatch, capsys):
    """The last net in perception.cli: a file no command's own check reached names the file and the cause."""
    from perception import cli

    _fake_command(monkeypatch, exc)
    assert cli.main(["synth"]) == code
    assert capsys.readouterr().err == line


def test_an_os_error_about_no_file_keeps_its_traceback(monkeypatch):
    """Not a file the user named: a bug, whose traceback says where."""
    from perception import cli

    _fake_command(monkeypatch, OSError(errno.EBADF, "Bad file descriptor"))
    with pytest.raises(OSError, match="Bad file descriptor"):
        cli.main(["synth"])


# ---- F4: file:// URLs name folders, globs and images too ----------------------------------------------


@pytest.mark.parametrize("tail", ["frames/", "frames", "frames/0.png", "frames/*.png"])
def test_a_file_url_names_an_image_folder_file_or_glob(tail, tmp_path):
    from perception.commands.run import _video_file

    write_images(tmp_path / "frames", 2)
    url = f"file://{tmp_path}/{tail}"
    assert _video_file(url) is None  # the check before the model loads finds it
    frames = read_all(open_source(url))
    assert len(frames) == (1 if tail.endswith(".png") and "*" not in tail else 2)


def test_a_file_url_of_a_missing_image_folder_names_its_path(tmp_path):
    from perception.commands.run import _video_file

    with pytest.raises(SourceError, match=r"^image folder .*/nope/ not found; check the path$"):
        _video_file(f"file://{tmp_path}/nope/")


# ---- F5: a listed image that became a FIFO is skipped, not read for ever ------------------------------


def test_an_image_replaced_by_a_fifo_after_listing_is_skipped_and_counted(tmp_path):
    folder = write_images(tmp_path / "frames", 3)
    src = open_source(str(folder))
    (folder / "1.png").unlink()
    os.mkfifo(folder / "1.png")
    got: list = []
    reader = threading.Thread(target=lambda: got.append(read_all(src)), daemon=True)
    reader.start()
    reader.join(60)
    if reader.is_alive():  # blocked in open(): a writer lets it go on, so that the test ends
        with open(folder / "1.png", "wb"):
            pass
        reader.join(10)
        pytest.fail("reading the folder blocked on the FIFO")
    assert len(got[0]) == 2 and src.corrupt == 1
    assert src.skipped == [f"{str(folder / '1.png')!r} is not a regular file (a device, pipe or socket)"]


# ---- F6: names that look like something else ----------------------------------------------------------


@pytest.mark.parametrize("name", ["a ! b.avi", "appsink"])
def test_an_existing_file_named_like_a_pipeline_is_that_file(name, tmp_path):
    path = write_video(tmp_path / "clip.avi", 3).rename(tmp_path / name)
    assert source_kind(str(path)) == "video"
    assert len(read_all(open_source(str(path)))) == 3
    assert source_kind(str(tmp_path / "videotestsrc ! appsink")) == "gstreamer"  # no such file: a pipeline


def test_a_regular_file_where_a_camera_should_be_is_not_a_camera_device(tmp_path):
    from perception.sources.base import SourceOptions
    from perception.sources.camera import CameraSource

    fake = tmp_path / "video98"
    fake.write_bytes(b"not a device")
    with pytest.raises(SourceError, match=r"video98 is a regular file, not a camera device; find the camera's "
                                          r"path with 'v4l2-ctl --list-devices'") as caught:
        CameraSource(str(fake), SourceOptions())
    assert not isinstance(caught.value, SourceUnavailableError)  # a mistake (exit 2), not a camera to wait for


@pytest.mark.parametrize("path", ["/dev/null", "fifo"])
def test_a_config_or_model_that_is_not_a_regular_file_is_named_as_such(path, tmp_path):
    from perception.modelfile import check_model_path
    from perception.yamlfile import read_yaml

    if path == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    assert stat.S_ISCHR(os.stat(path).st_mode) or stat.S_ISFIFO(os.stat(path).st_mode)
    with pytest.raises(ConfigError, match=rf"^config file {path} is not a regular file \(a device, pipe or socket\)"):
        read_yaml(path)
    with pytest.raises(ModelError, match=rf"^model file {path} is not a regular file \(a device, pipe or socket\)"):
        check_model_path(path)


@pytest.mark.parametrize("text", ["inf", "1e400", "-inf"])
def test_an_infinite_duration_is_refused_as_an_infinite_fps_is(text, tmp_path, monkeypatch, capsys):
    from perception.cli import main as cli_main
    from perception.config import load_config
    from perception.run_config import RunConfig

    with pytest.raises(ConfigError, match=rf"node.yaml: duration_s: expected a finite number, got {text!r}"):
        load_config(RunConfig, {"duration_s": text}, source="node.yaml")
    with pytest.raises(ConfigError, match=r"node.yaml: duration_s: expected a finite number, got inf"):
        load_config(RunConfig, {"duration_s": float("inf")}, source="node.yaml")
    monkeypatch.chdir(tmp_path)
    for flag in ("--duration", "--fps"):
        try:
            code = cli_main(["run", f"{flag}={text}"])
        except SystemExit as exc:  # argparse's own errors exit from inside the parser
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "expected a finite number" in err, err
