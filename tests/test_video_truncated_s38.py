"""A video file cut to 0 bytes while the node read it (truncated in place, a copy restarted over
it) ended as if whole: "end of input", exit 0, the frames it lost counted nowhere (H17 finding 6;
cut part-way, it was reported). Its bytes now say nothing, so the size it had when opened decides:
a file shorter than that was cut off, and its missing frames are counted as for any cut file."""

from __future__ import annotations

import os

from perception.sources import open_source
from perception.synthetic.dataset import write_video


def test_a_video_cut_to_nothing_while_it_is_read_counts_the_frames_it_lost(tmp_path):
    clip = write_video(tmp_path / "drive.mp4", count=300, height=120, width=160)
    source = open_source(str(clip))
    assert source.frame_count == 300
    frames = [source.read() for _ in range(5)]
    assert all(f is not None for f in frames)
    os.truncate(clip, 0)
    while source.read() is not None:
        frames.append(None)
    source.close()
    read = source.frames_read
    assert 5 <= read < 300 and source.corrupt == 300 - read  # every frame accounted for
    assert source.skipped == [f"frames {read}-299 of 300 missing: the file ends after {read} of the 300 frames its "
                              "container states (cut off, or frames lost to damage earlier in the file)"]


def test_a_looped_file_deleted_mid_run_is_named_with_its_camera(tmp_path):
    """V2 N2: in a node of several cameras, a --loop file deleted mid-run ended the node with
    "video file v.mp4 not found", not saying which camera."""
    import pytest

    from perception.errors import SourceError

    clip = write_video(tmp_path / "v.mp4", count=3, height=48, width=64)
    source = open_source(str(clip), loop=True)
    source.name_camera("rear")
    assert source.read() is not None
    clip.unlink()
    with pytest.raises(SourceError, match=r"^camera 'rear', video file .*v\.mp4 not found; check the path$"):
        for _ in range(10):
            source.read()
    source.close()
