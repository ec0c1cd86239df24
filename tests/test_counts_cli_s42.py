"""s42 H51 M1, L1, L2, L5: a frame reader that also holds a prefix receiving nothing, the cli's line
for an unquoted pattern, and URLs with a blank host or a malformed port.

- On an ``--atomic-frames`` node a connection holding ``<ns>/frame`` and ``<ns>/obstacle/bus`` (a class
  the model does not have) received every frame and counted 0: ``--wait-subscribers 1`` said "no
  subscriber connected" and exited 4. A connection that holds ``<ns>/frame`` now counts at least once
  (xpub_counts: too long maybe, never too short).
- ``--source=a.png b.png c.png`` (the ``=`` form) got "unrecognized arguments"; the quoted fix broke on a
  name with ``'`` and a name with a newline split the one error line.
- ``rtsp:// /x``, ``rtsp://host:abc/x``, ``rtsp://host:99999/x`` passed the no-host check and failed in
  FFmpeg with exit 4 (a launch file respawns that for ever): now one line, exit 2, before the model loads.
"""

from __future__ import annotations

import shlex

import pytest

from perception.cli import main
from perception.publish import MaskPublisher
from perception.xpub_counts import SubscriptionCounts
from tests.test_subscriptions_s42 import _raw, _until

NS = "perception/front"
DECLARED = ["drivable", "lane", "obstacle", "obstacle/car", "class_map"]


# ---------------------------------------------------------------------- M1: counts


@pytest.mark.parametrize(("prefixes", "expected"), [
    ([f"{NS}/frame", f"{NS}/obstacle/bus"], 1),  # before: 0, and the wait failed
    ([f"{NS}/frame", f"{NS}/info", f"{NS}/x"], 2),  # before: 1
])
def test_a_frame_reader_holding_a_prefix_that_receives_nothing_counts(prefixes, expected):
    with MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS, atomic_frames=True) as pub:
        pub.declare_topics(DECLARED)
        sock = _raw(pub.endpoint, *prefixes)
        try:
            _until(lambda: pub._core.subscriptions() == len(prefixes), "the subscriptions to be read")
            assert pub.stats()["subscriptions"] == expected
            assert pub.wait_for_subscribers(expected, timeout_s=2.0)
            assert pub.subscribed(["lane"]) == {"lane"}  # the node builds and sends it the frames it counts for
        finally:
            sock.close()


def test_the_bookkeeping_counts_the_carrier_at_least_once_and_each_byte_prefix_as_documented():
    def counts_for(*prefixes: bytes) -> int:
        counts = SubscriptionCounts()
        for name in (b"ns/frame", b"ns/info", b"ns/stats", b"ns/obstacles"):
            counts.track(name, b"ns/")
        counts.carry(b"ns/", b"ns/frame", [b"ns/lane", b"ns/obstacle"])
        for prefix in prefixes:
            counts.subscribe(prefix, "conn")
        return counts.count(b"ns/")

    assert counts_for(b"ns/frame", b"ns/obstacle/bus") == 1  # before: 0
    assert counts_for(b"ns/frame", b"ns/x", b"ns/y") == 1  # before: 0
    assert counts_for(b"ns/frame") == 1
    assert counts_for(b"ns/frame", b"ns/lane") == 1  # once per mask asked for, not for the frame too
    assert counts_for(b"ns/frame", b"ns/lane", b"ns/x") == 1
    assert counts_for(b"ns/lane") == 0  # receives nothing
    assert counts_for(b"ns/x") == 0
    # repeated byte-prefixes of one topic from one socket each count (README: per subscriber and prefix)
    assert counts_for(b"ns/f", b"ns/fr", b"ns/fra", b"ns/fram", b"ns/frame") == 5
    assert counts_for(b"ns/f", b"ns/fr", b"ns/fra", b"ns/fram", b"ns/frame", b"ns/x") == 5  # before: 0
    # and the count follows an unsubscribe of the prefix that receives nothing, and of the frame
    counts = SubscriptionCounts()
    counts.track(b"ns/frame", b"ns/")
    counts.carry(b"ns/", b"ns/frame", [b"ns/lane"])
    counts.subscribe(b"ns/x", "c")
    counts.subscribe(b"ns/frame", "c")
    assert counts.count(b"ns/") == 1
    counts.unsubscribe(b"ns/x", "c")
    assert counts.count(b"ns/") == 1
    counts.unsubscribe(b"ns/frame", "c")
    assert counts.count(b"ns/") == 0


# ---------------------------------------------------------------------- L1, L2: the cli line


def _error_line(args, capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_the_equals_form_of_an_expanded_pattern_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fr").mkdir()
    for i in range(3):
        (tmp_path / f"fr/{i}.png").write_bytes(b"")
    err = _error_line(["run", "--source=fr/0.png", "fr/1.png", "fr/2.png"], capsys)  # before: unrecognized arguments
    assert ("--source takes one value, and got 3 files (fr/0.png fr/1.png fr/2.png): the shell expanded an "
            "unquoted pattern; quote it: --source 'fr/*.png'") in err


def test_the_quoted_fix_is_shell_safe_and_names_stay_on_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "it's").mkdir()
    files = [f"it's/{i}.png" for i in range(3)]
    for name in files:
        (tmp_path / name).write_bytes(b"")
    err = _error_line(["run", "--source", *files], capsys)
    fix = err.partition("quote it: ")[2].partition("; see ")[0]
    assert shlex.split(fix) == ["--source", "it's/*.png"], fix  # before: --source 'it's/*.png'

    (tmp_path / "nl").mkdir()
    files = [f"nl/{i}\n.png" for i in range(3)]
    for name in files:
        (tmp_path / name).write_bytes(b"")
    err = _error_line(["run", "--source", *files], capsys)  # before: the names split the line
    assert "(nl/$'0\\n.png' nl/$'1\\n.png'" not in err  # each name is one shell word
    assert "$'nl/0\\n.png' $'nl/1\\n.png' $'nl/2\\n.png'" in err and "quote it: --source 'nl/*.png'" in err

    (tmp_path / "n\nl").mkdir()
    files = [f"n\nl/{i}.png" for i in range(3)]
    for name in files:
        (tmp_path / name).write_bytes(b"")
    err = _error_line(["run", "--source", *files], capsys)
    assert "quote it: --source $'n\\nl/*.png'" in err

    err = _error_line(["run", "--sorce", "a\nb"], capsys)  # not a pattern: the words are escaped the same way
    assert "unrecognized arguments: --sorce $'a\\nb'" in err


# ---------------------------------------------------------------------- L5: URLs


@pytest.mark.parametrize(("url", "says"), [
    ("rtsp:// /x", "names no host"),
    ("rtsp://%20/x", "names no host"),
    ("rtsp://user:pw@ :554/x", "names no host"),
    ("rtsp://host:abc/x", "port 'abc' is not a number in 1..65535"),
    ("rtsp://host:99999/x", "port '99999' is not a number in 1..65535"),
    ("rtsp://host:0/x", "port '0' is not a number in 1..65535"),
    ("RTSP://[::1:554/x", "is not a valid URL"),
])
def test_a_url_with_a_blank_host_or_a_bad_port_is_one_line_exit_2(url, says, capsys):
    assert main(["run", "--source", url]) == 2  # before: 4, after FFmpeg's open failed
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err  # no stats document: before start-up
    assert says in err and "give rtsp://HOST[:PORT]/PATH" in err and "pw" not in err, err


@pytest.mark.parametrize("url", ["rtsp://[::1]:554/x", "rtsp://[fe80::1%25eth0]:554/x", "rtsp://host:/x",
                                 "http://cam.local/x.mjpg", "udp://@:1234"])
def test_good_urls_pass_the_check(url):
    from perception.sources.stream import refuse_malformed_url

    refuse_malformed_url(url)
