"""``perception synth``: write synthetic road-world frames as a labelled dataset and/or an MP4 drive.

    perception synth --out out/synth --count 200 --size 360x480 --seed 0 --split val=0.1
    perception synth --no-images --video out/drive.mp4 --video-labels --count 300 --fps 30
    perception synth --contact-sheet out/world.png --seed 0    # 16 frames + labels in one PNG

Thin over ``perception.synthetic.dataset.write_dataset``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from perception.config import hw_from_text, hw_to_text, setting
from perception.console import emit
from perception.errors import ConfigError
from perception.flags import add_flags, config_from_flags, flag_values, flags
from perception.overwrite import refuse_existing_file

log = logging.getLogger(__name__)


@dataclass
class SynthConfig:
    """The flags of ``perception synth``. ``count``/``input_hw`` None: 200 frames at 360x480 for a
    dataset, 16 tiles of 180x320 for a contact sheet (at most 64 there)."""

    out: Path = setting(Path("out/synth"), help="dataset directory")
    # 64: dataset.MAX_SHEET_COUNT, written out: importing it would load the renderer for --help
    count: int | None = setting(None, lo=1, help="number of frames (default: 200; with --contact-sheet 16, at most 64)")
    input_hw: tuple[int, int] | None = setting(
        None, flag="--size", metavar="HxW", from_text=hw_from_text, to_text=hw_to_text,
        help="frame size HEIGHTxWIDTH, 48x64 .. 1080x1920 (default: 360x480; 180x320 tiles with --contact-sheet)")
    seed: int = setting(0, lo=0, help="random seed; same seed, same bytes")
    split: str | list[str] = setting("val=0.1", help="held-out lists as NAME=FRACTION[,NAME=FRACTION] (repeatable: "
                                                      "the flags add up), each given at least one frame, or none; the "
                                                      "rest is train")
    video: Path | None = setting(None, help="also write an MP4 of a --count frame drive to this path")
    overwrite: bool = setting(False, help="replace an existing --video or --contact-sheet file instead of refusing to "
                                          "start (the video of the earlier synth output in --out is replaced without "
                                          "it)")
    video_labels: bool = setting(False, help="put the colourised labels beside the video frames")
    fps: float = setting(30.0, lo=1.0, hi=240.0, help="frame rate of the drive and the video")
    images: bool = setting(True, help="write only the video, no dataset")
    contact_sheet: Path | None = setting(
        None, metavar="PNG",
        help="write only a grid of the first --count dataset frames of --seed, each above its colourised labels, "
             "to this image file")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, SynthConfig)


def warn_if_portrait(hw: tuple[int, int] | None, flag: str = "--size") -> None:
    """One warning when a size asks for frames higher than wide: sizes here are HEIGHTxWIDTH, while
    the node's logs say WIDTHxHEIGHT ("source synthetic 640x360"), so 640x360 is an easy mistake."""
    if hw is not None and hw[0] > hw[1]:
        height, width = hw
        log.warning("portrait frames: %s is HEIGHTxWIDTH, so %dx%d is %d high and %d wide; for %d wide give %s %dx%d",
                    flag, height, width, height, width, height, flag, width, height)


def size_text(height: int, width: int) -> str:
    """A frame size as the summary lines say it, unmistakable in either convention."""
    return f"{height} high x {width} wide"


#: What ``--contact-sheet`` takes: it draws the frames of --count, --size and --seed, nothing else.
SHEET_FLAGS = ("contact_sheet", "count", "input_hw", "seed", "overwrite")
#: What ``--no-images`` leaves to ignore: the dataset's folder and lists (it writes only --video).
DATASET_ONLY_FLAGS = ("out", "split")


def _check_flags(config: SynthConfig, given: dict) -> None:
    """Flags that would be silently ignored together are refused, one line naming them."""
    if config.contact_sheet is not None:
        ignored = [f.option for f in flags(SynthConfig) if f.name in given and f.name not in SHEET_FLAGS]
        if ignored:
            raise ConfigError(f"--contact-sheet writes only the grid image, so {', '.join(ignored)} would be ignored; "
                              f"drop {_them(ignored)}, or run perception synth once more without --contact-sheet for "
                              "the dataset or video")
        from perception.synthetic.dataset import MAX_SHEET_COUNT

        if config.count is not None and config.count > MAX_SHEET_COUNT:
            raise ConfigError(f"--count {config.count}: a contact sheet holds at most {MAX_SHEET_COUNT} frames; give "
                              f"--count {MAX_SHEET_COUNT} or fewer")
    elif not config.images:
        ignored = [f.option for f in flags(SynthConfig) if f.name in given and f.name in DATASET_ONLY_FLAGS]
        if ignored:
            raise ConfigError(f"--no-images writes only the --video, no dataset, so {', '.join(ignored)} would be "
                              f"ignored; drop {_them(ignored)}, or drop --no-images to write the dataset too")
    if config.video_labels and config.video is None:
        raise ConfigError("--video-labels puts the labels beside the frames of --video; add --video PATH.mp4 "
                          "or drop --video-labels")
    if config.overwrite and config.video is None and config.contact_sheet is None:
        raise ConfigError("--overwrite replaces an existing --video file; add --video PATH.mp4 or drop --overwrite "
                          "(or it replaces an existing --contact-sheet image; --out is replaced only when it is an "
                          "earlier perception synth output, never another dataset)")
    if config.contact_sheet is not None:
        # replaced only with --overwrite, as --video and view --out; a folder in its place is named
        refuse_existing_file(config.contact_sheet, flag="--contact-sheet", overwrite=config.overwrite,
                             example="world.png")


def _them(names: list[str]) -> str:
    return "it" if len(names) == 1 else "them"


def split_text(split: str | list[str]) -> str:
    """``--split`` as one NAME=FRACTION list: several flags add up (``--split val=0.2 --split
    test=0.2`` is ``val=0.2,test=0.2``); ``none`` cannot be combined with a split."""
    if isinstance(split, str):
        return split
    if len(split) > 1 and any(text.strip().lower() == "none" for text in split):
        others = " ".join(f"--split {text}" for text in split if text.strip().lower() != "none")
        raise ConfigError(f"--split none (train.txt only) and {others} contradict each other; give one of them")
    return ",".join(split)


def main(args: argparse.Namespace) -> int:
    from perception.signals import interrupt_on_stop_signals
    from perception.synthetic.dataset import SynthInterrupted

    config = config_from_flags(SynthConfig, args, source="perception synth")
    _check_flags(config, flag_values(SynthConfig, args))
    warn_if_portrait(config.input_hw)
    with interrupt_on_stop_signals():  # SIGTERM / SIGHUP stop it as Ctrl-C does: one line, 130
        try:
            return _write(config)
        except SynthInterrupted as stopped:  # the dispatcher's line, saying what was written
            emit(f"perception: interrupted; {stopped.message}", file=sys.stderr)
            return 130


def _write(config: SynthConfig) -> int:
    from perception.synthetic.dataset import parse_split, write_contact_sheet, write_dataset

    if config.contact_sheet is not None:
        height, width = config.input_hw or (180, 320)
        count = 16 if config.count is None else config.count
        path = write_contact_sheet(config.contact_sheet, count=count, height=height, width=width, seed=config.seed)
        emit(f"wrote a contact sheet of {count} {_frames(count)} {size_text(height, width)} (seed {config.seed}) "
              f"to {path}")
        return 0
    height, width = config.input_hw or (360, 480)
    count = 200 if config.count is None else config.count
    start = time.perf_counter()
    summary = write_dataset(
        config.out, count=count, height=height, width=width, seed=config.seed, split=parse_split(split_text(config.split)),
        write_images=config.images, video=config.video, video_labels=config.video_labels, fps=config.fps,
        overwrite=config.overwrite,
    )
    seconds = time.perf_counter() - start
    if "out_dir" in summary:
        lists = ", ".join(f"{name}.txt ({n})" for name, n in summary["lists"].items())
        emit(f"wrote {count} {_frames(count)} {size_text(height, width)} (seed {config.seed}) to {summary['out_dir']}: "
              f"images/, labels/, classes.yaml, synth.yaml, {lists}")
    if "video" in summary:
        size = size_text(height, width)
        if config.video_labels:  # each frame with its labels beside it: twice as wide
            size = f"{size_text(height, 2 * width)} ({width}-wide frames, labels beside each)"
        emit(f"wrote {count}-frame drive {size} at {config.fps:g} fps to {summary['video']}")
    emit(f"took {seconds:.1f} s")
    return 0


def _frames(count: int) -> str:
    return "frame" if count == 1 else "frames"
