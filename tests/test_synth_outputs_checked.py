"""``perception synth``: its outputs are checked before any frame is rendered (hunt s36 H8).

``--video /proc/x.mp4`` wrote the whole dataset and then failed, leaving a ``synth.yaml`` that named
a video never written; ``--contact-sheet /proc/x.png`` or one without a suffix rendered every tile
first; a ``--video`` inside the dataset's own ``images/`` blocked the next run; ``--no-images``
ignored ``--out`` and ``--split`` without a word.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from perception.cli import main as cli_main
from perception.synthetic import dataset

SMALL = ["--count", "3", "--size", "48x64"]
needs_proc = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("perception: error: "), err
    return lines[0].removeprefix("perception: error: ")


@pytest.fixture
def no_rendering(monkeypatch):
    """Any frame or tile rendered fails the test: the refusals come before the work."""
    def render(*args, **kwargs):
        raise AssertionError("a frame was rendered before the output was checked")

    monkeypatch.setattr(dataset, "render_scene", render)
    monkeypatch.setattr(dataset, "SyntheticDrive", render)


@needs_proc
def test_a_video_that_cannot_be_written_is_refused_before_the_dataset(tmp_path, monkeypatch, capsys, no_rendering):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["synth", "--out", "ds", "--video", "/proc/x.mp4", *SMALL]) == 2
    # (No such file or directory) as root, (permission denied) for another user
    assert re.fullmatch(r"cannot write /proc/x\.mp4 \(.+\); choose a writable --video path", _one_error(capsys))
    assert list(tmp_path.iterdir()) == []  # no dataset, no synth.yaml claiming the video


@needs_proc
def test_a_video_that_fails_to_open_is_not_named_in_synth_yaml(tmp_path, monkeypatch, capsys):
    """Past the check (a disk gone read-only in between, an OpenCV without mp4v): synth.yaml names
    the video only once the file is open."""
    monkeypatch.setattr(dataset, "check_video_writable", lambda *a, **k: None, raising=False)
    assert cli_main(["synth", "--out", str(tmp_path / "ds"), "--video", "/proc/x.mp4", *SMALL]) == 2
    assert "/proc" in _one_error(capsys)  # cannot open video file /proc/x.mp4 (root), /proc is not writable
    meta = yaml.safe_load((tmp_path / "ds" / "synth.yaml").read_text())
    assert "video" not in meta and meta["count"] == 3


@needs_proc
@pytest.mark.parametrize(("sheet", "said"), [
    ("/proc/x.png", r"cannot write /proc/x\.png \(.+\); choose a writable --contact-sheet path"),
    ("cs", r"--contact-sheet cs has no file suffix, not an image type a contact sheet is written as; give a \.png "
           r"path such as cs\.png"),
    ("new/sheet.nope", r"--contact-sheet new/sheet\.nope has the suffix \.nope, not an image type a contact sheet is "
                       r"written as; give a \.png path such as new/sheet\.png"),
])
def test_a_contact_sheet_that_cannot_be_written_is_refused_before_any_tile(tmp_path, monkeypatch, capsys, no_rendering,
                                                                             sheet, said):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["synth", "--contact-sheet", sheet, "--count", "2", "--size", "48x64"]) == 2
    assert re.fullmatch(said, _one_error(capsys))
    assert list(tmp_path.iterdir()) == []  # no folder made for it either


def test_a_video_inside_the_dataset_frames_folders_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for inside, holds in (("vi/images/drive.mp4", "frames"), ("vi/labels/drive.mp4", "label masks")):
        assert cli_main(["synth", "--out", "vi", "--video", inside, *SMALL]) == 2
        folder = str(Path(inside).parent)
        assert _one_error(capsys) == (f"--video {inside} is inside {folder}, which holds only the dataset's {holds}; "
                                      f"put the video beside them, such as {Path('vi/drive.mp4')}")
    assert list(tmp_path.iterdir()) == []
    # Beside them it is the output's own, replaced by the next run without --overwrite.
    argv = ["synth", "--out", "vi", "--video", "vi/drive.mp4", *SMALL]
    assert cli_main(argv) == 0 and cli_main(argv) == 0


@pytest.mark.parametrize(("flags", "said"), [
    (["--out", "o1", "--split", "val=0.3"], "so --out, --split would be ignored; drop them,"),
    (["--split", "none"], "so --split would be ignored; drop it,"),
])
def test_no_images_refuses_the_dataset_flags_it_would_ignore(tmp_path, monkeypatch, capsys, flags, said):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["synth", "--no-images", "--video", "ni.mp4", *flags, *SMALL]) == 2
    message = _one_error(capsys)
    assert message.startswith("--no-images writes only the --video, no dataset, ") and said in message, message
    assert list(tmp_path.iterdir()) == []


def test_contact_sheet_ignored_flag_is_said_in_the_singular(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["synth", "--contact-sheet", "x.png", "--split", "none"]) == 2
    assert "so --split would be ignored; drop it, or run" in _one_error(capsys)


def test_the_contact_sheet_count_limit_is_in_help_and_names_the_flag(tmp_path, monkeypatch, capsys, no_rendering):
    import argparse

    from perception.commands.synth import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    help_text = " ".join(parser.format_help().split())
    assert f"with --contact-sheet 16, at most {dataset.MAX_SHEET_COUNT})" in help_text
    monkeypatch.chdir(tmp_path)
    over = dataset.MAX_SHEET_COUNT + 1
    assert cli_main(["synth", "--contact-sheet", "x.png", "--count", str(over)]) == 2
    assert _one_error(capsys) == (f"--count {over}: a contact sheet holds at most {dataset.MAX_SHEET_COUNT} frames; "
                                  f"give --count {dataset.MAX_SHEET_COUNT} or fewer")
    assert list(tmp_path.iterdir()) == []


def test_a_train_split_says_train_is_the_rest(capsys, tmp_path):
    assert cli_main(["synth", "--out", str(tmp_path / "ds"), "--split", "train=0.5", *SMALL]) == 2
    assert _one_error(capsys) == ("bad split 'train=0.5': train is what the other splits leave, not given; name only "
                                  "the held-out lists, such as val=0.1,test=0.1")


def test_the_video_labels_summary_gives_the_videos_width(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["synth", "--out", "ds", "--video", "d.mp4", "--video-labels", *SMALL]) == 0
    out = capsys.readouterr().out
    assert re.search(r"wrote 3-frame drive 48 high x 128 wide \(64-wide frames, labels beside each\) at 30 fps to "
                     r"d\.mp4", out), out
