"""``perception synth``: write synthetic road-world frames as a labelled dataset and/or an MP4 drive.

    perception synth --out out/synth --count 200 --size 360x480 --seed 0 --split val=0.1
    perception synth --no-images --video out/drive.mp4 --video-labels --count 300 --fps 30
    perception synth --contact-sheet out/world.png --seed 0    # 16 frames + labels in one PNG

Thin over ``perception.synthetic.dataset.write_dataset``.
"""

from __future__ import annotations

import argparse
import time

from perception.config import parse_hw
from perception.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/synth", help="dataset directory (default: out/synth)")
    parser.add_argument("--count", type=int, default=None,
                        help="number of frames (default: 200; 16 with --contact-sheet, at most 64 there)")
    parser.add_argument("--size", default=None,
                        help="HEIGHTxWIDTH, 48x64 .. 1080x1920 (default: 360x480; 180x320 tiles with --contact-sheet)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default: 0)")
    parser.add_argument("--split", default="val=0.1",
                        help="held-out lists as NAME=FRACTION[,NAME=FRACTION]; the rest is train (default: val=0.1)")
    parser.add_argument("--video", default=None, help="also write an MP4 of a --count frame drive to this path")
    parser.add_argument("--video-labels", action="store_true", help="put the colourised labels beside the video frames")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of the drive and the video (default: 30)")
    parser.add_argument("--no-images", action="store_true", help="write only the video, no dataset")
    parser.add_argument("--contact-sheet", default=None, metavar="PNG",
                        help="write only a grid of the first --count dataset frames of --seed, each above its "
                             "colourised labels, to this image file")


def main(args: argparse.Namespace) -> int:
    from perception.synthetic.dataset import parse_split, write_contact_sheet, write_dataset

    if args.contact_sheet is not None:
        height, width = parse_hw(args.size or "180x320")
        count = 16 if args.count is None else args.count
        path = write_contact_sheet(args.contact_sheet, count=count, height=height, width=width, seed=args.seed)
        print(f"wrote a contact sheet of {count} frames {height}x{width} (seed {args.seed}) to {path}")
        return 0
    height, width = parse_hw(args.size or "360x480")
    args.count = 200 if args.count is None else args.count
    if not 1.0 <= args.fps <= 240.0:
        raise ConfigError(f"--fps {args.fps:g} is out of range; use 1 to 240")
    start = time.perf_counter()
    summary = write_dataset(
        args.out, count=args.count, height=height, width=width, seed=args.seed, split=parse_split(args.split),
        write_images=not args.no_images, video=args.video, video_labels=args.video_labels, fps=args.fps,
    )
    seconds = time.perf_counter() - start
    if "out_dir" in summary:
        lists = ", ".join(f"{name}.txt ({n})" for name, n in summary["lists"].items())
        print(f"wrote {args.count} frames {height}x{width} (seed {args.seed}) to {summary['out_dir']}: "
              f"images/, labels/, classes.yaml, synth.yaml, {lists}")
    if "video" in summary:
        print(f"wrote {args.count}-frame drive at {args.fps:g} fps to {summary['video']}")
    print(f"took {seconds:.1f} s")
    return 0
