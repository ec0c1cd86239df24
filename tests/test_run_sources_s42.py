"""A URL that names no host (``rtsp://``) is a mistake, exit 2 before the model loads, not a stream
that is not there yet (exit 4, which a launch file respawns for ever; H47 L8 of s42)."""

from __future__ import annotations

import pytest

from perception.cli import main


@pytest.mark.parametrize("url", ["rtsp://", "http://", "rtsp://:554/live", "https://user:pw@/x"])
def test_a_url_without_a_host_is_one_line_exit_2(url, capsys):
    assert main(["run", "--source", url]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\\n") == 0 and err.count("\n") == 1, err  # no stats document: before start-up
    assert "names no host; give " in err and "pw" not in err


def test_the_stream_source_refuses_it_too():
    from perception.errors import SourceError
    from perception.sources.base import SourceOptions
    from perception.sources.stream import StreamSource

    with pytest.raises(SourceError, match=r"^--source rtsp:// names no host; give rtsp://HOST\[:PORT\]/PATH$"):
        StreamSource("rtsp://", SourceOptions())


def test_cameras_none_of_which_is_there_are_each_named(capsys):
    """H47 L6: with two cameras missing the line named only the first; fixing it showed the second."""
    assert main(["run", "--source", "front=/dev/video97", "--source", "rear=/dev/video98", "--max-frames", "1"]) == 4
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("perception: error: no camera is there: camera 'front' (--source front=/dev/video97): ")
    assert "; camera 'rear' (--source rear=/dev/video98): camera /dev/video98 not found" in err
