"""Hunt 6e findings 1.3, 1.4, 1.5, 1.7 and 1.10 (synth): what a user sees.

- launch: ``$(var ...)`` / ``$(env ...)`` inside an ``arg``'s ``default`` are substituted (as in ROS 2
  launch), with the one-line errors a node's substitutions give; two publishing nodes on one address
  are one error under ``--check``, naming both.
- synth: ``--video`` refuses an existing file without ``--overwrite``; an interrupted run leaves a
  dataset that ``open_dataset`` and ``perception eval`` read, and says how many frames it wrote;
  ``--split`` flags add up; ``--out`` a folder of someone's images is refused.
"""

from __future__ import annotations

import json

import cv2
import pytest
import yaml

from perception.cli import main as cli_main
from perception.errors import ConfigError
from perception.launch import load_launch, parse_launch_arguments


def write_launch(path, entries: list):
    path.write_text(yaml.safe_dump({"launch": entries}, sort_keys=False))
    return path


def check(file, capsys, *args: str) -> tuple[int, str, str]:
    """``perception launch FILE --check [NAME:=VALUE ...]``: (exit code, stdout, stderr)."""
    code = cli_main(["launch", str(file), "--check", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def record_node(out: str = "$(var out)") -> dict:
    # A record node: --check opens no model for it, so these checks stay fast.
    return {"node": {"name": "rec", "kind": "record",
                     "parameters": {"namespace": "perception/front", "out": out, "endpoint": "tcp://127.0.0.1:5591"}}}


# ---- 1.3: substitutions in arg defaults

def test_an_arg_default_is_substituted_into_the_node_s_command(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HUNT6E_HOME", str(home))
    monkeypatch.delenv("HUNT6E_UNSET", raising=False)
    file = write_launch(tmp_path / "rec.yaml", [
        {"arg": {"name": "base", "default": "$(env HUNT6E_HOME)/runs"}},
        {"arg": {"name": "out", "default": "$(var base)/front.mcap"}},
        {"arg": {"name": "chunk", "default": "$(env HUNT6E_UNSET 256)"}},  # the env default keeps its type
        {"node": {"name": "rec", "kind": "record", "parameters": {
            "namespace": "perception/front", "out": "$(var out)", "chunk_size_kb": "$(var chunk)",
            "endpoint": "tcp://127.0.0.1:5591"}}},
    ])
    code, out, err = check(file, capsys)
    assert code == 0, err
    assert f"arguments: base={home}/runs, out={home}/runs/front.mcap, chunk=256" in out
    assert f"--out {home}/runs/front.mcap" in out and "--chunk-size 256" in out and "$(" not in out

    # NAME:=VALUE wins over the default, which is then not evaluated (an unset variable in it is fine).
    monkeypatch.delenv("HUNT6E_HOME")
    code, out, err = check(file, capsys, "base:=/data", "out:=o.mcap")
    assert code == 0, err
    assert "--out o.mcap" in out and "base=/data" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([{"name": "out", "default": "$(var zz)/x.mcap"}],
         "arg 'out': default: $(var zz) names no declared argument; add an 'arg' entry for it above"),
        ([{"name": "out", "default": "$(env HUNT6E_NOPE)/x.mcap"}],
         "arg 'out': default: environment variable 'HUNT6E_NOPE' is not set; set it or add a default"),
        ([{"name": "dir"}, {"name": "out", "default": "$(var dir)/x.mcap"}],
         "arg 'out': default: missing launch argument 'dir'; pass dir:=VALUE or give it a default"),
        ([{"name": "out", "default": "$(var dir)/x.mcap"}, {"name": "dir", "default": "/data"}],
         "arg 'out': default: $(var dir) names argument 'dir', which is declared below it; an arg default may use "
         "only the arguments declared above it: move the 'dir' arg up"),
        ([{"name": "out", "default": "$(var dir)"}, {"name": "dir", "default": "$(var out)"}],
         "arg 'out': default: $(var dir) makes a cycle of defaults (out -> dir -> out), so none of them has a value"),
        ([{"name": "out", "default": "a/$(var out)"}],
         "arg 'out': default: $(var out) makes a cycle of defaults (out -> out)"),
    ],
)
def test_a_bad_substitution_in_an_arg_default_is_one_line_under_check(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.delenv("HUNT6E_NOPE", raising=False)
    file = write_launch(tmp_path / "bad.yaml", [*({"arg": a} for a in args), record_node()])
    code, out, err = check(file, capsys)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"perception: error: {file}: {message}"), err


def test_a_file_mistake_in_a_default_is_reported_even_when_the_argument_is_given(tmp_path):
    # $(var ...) of an undeclared name or a cycle is wrong whatever the command line says.
    file = write_launch(tmp_path / "bad.yaml", [{"arg": {"name": "out", "default": "$(var zz)"}}, record_node()])
    with pytest.raises(ConfigError, match=r"default: \$\(var zz\) names no declared argument"):
        load_launch(file, parse_launch_arguments(["out:=x.mcap"]))


# ---- 1.7: two publishing nodes on one endpoint

def _publisher(name: str, endpoint: str | None, kind: str = "pipeline") -> dict:
    parameters = {"source": "synthetic", "camera_name": name} if kind == "pipeline" else {"file": "run.mcap"}
    if endpoint is not None:
        parameters["endpoint"] = endpoint
    return {"node": {"name": name, "kind": kind, "parameters": parameters}}


@pytest.mark.parametrize(
    ("first", "second", "what"),
    [
        ("tcp://127.0.0.1:5592", "tcp://127.0.0.1:5592", "both bind endpoint tcp://127.0.0.1:5592"),
        ("tcp://127.0.0.1:5592", "tcp://localhost:5592", "(tcp://127.0.0.1:5592) and 'b' (tcp://localhost:5592) bind"),
        ("tcp://*:5592", "tcp://localhost:5592", "bind the same address"),
        ("tcp://0.0.0.0:5592", "tcp://127.0.0.1:5592", "bind the same address"),
        ("tcp://*:5592", "tcp://0.0.0.0:5592", "bind the same address"),
        ("tcp://[::]:5592", "tcp://127.0.0.1:5592", "bind the same address"),  # an IPv6 socket takes IPv4 too
        ("tcp://lo:5592", "tcp://127.0.0.1:5592", "bind the same address"),  # the loopback interface's name
        ("tcp://LOCALHOST:5592", "tcp://127.0.0.1:5592", "bind the same address"),
        (None, None, "both bind endpoint tcp://127.0.0.1:5556 (the default)"),
        ("ipc://sock", "ipc://./sub/../sock", "bind the same address"),
    ],
)
def test_two_publishers_on_one_address_are_one_error_under_check(tmp_path, capsys, monkeypatch, first, second, what):
    monkeypatch.chdir(tmp_path)
    for kind in ("pipeline", "replay"):  # replay publishes too
        file = write_launch(tmp_path / "same.yaml", [_publisher("a", first), _publisher("b", second, kind)])
        code, out, err = check(file, capsys)
        assert code == 2 and out == "" and "started node" not in out
        lines = err.splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith(f"perception: error: {file}: nodes 'a'"), err
        assert what in lines[0] and "only one process can bind it" in lines[0], err
        assert "give one of them another " in lines[0]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("tcp://127.0.0.1:5592", "tcp://127.0.0.1:5593"),
        ("tcp://127.0.0.1:*", "tcp://127.0.0.1:*"),  # any free port each
        ("tcp://127.0.0.1:5592", "tcp://127.0.0.2:5592"),
        ("tcp://0.0.0.0:5592", "tcp://[::1]:5592"),  # IPv4 wildcard, IPv6 address: two families
        ("ipc:///tmp/a", "ipc:///tmp/b"),
    ],
)
def test_publishers_on_different_addresses_pass(tmp_path, first, second):
    file = write_launch(tmp_path / "two.yaml", [_publisher("a", first), _publisher("b", second)])
    assert len(load_launch(file).nodes) == 2


def test_subscribers_may_share_a_publisher_s_endpoint(tmp_path):
    endpoint = "tcp://127.0.0.1:5592"
    file = write_launch(tmp_path / "shared.yaml", [
        _publisher("cam", endpoint),
        {"node": {"name": "rec", "kind": "record", "parameters": {"namespace": "perception/cam", "out": "r.mcap",
                                                                  "endpoint": endpoint}}},
        {"node": {"name": "ears", "kind": "listen", "parameters": {"endpoint": "tcp://localhost:5592"}}},
    ])
    assert [n.name for n in load_launch(file).nodes] == ["cam", "rec", "ears"]


# ---- 1.4: synth --video over an existing file

def _frames_of(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_synth_refuses_to_overwrite_an_existing_video_without_overwrite(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    drive = tmp_path / "my_dashcam.mp4"
    drive.write_bytes(b"a real drive")
    small = ["--count", "2", "--size", "48x64"]
    assert cli_main(["synth", "--no-images", "--video", "my_dashcam.mp4", *small]) == 2
    assert capsys.readouterr().err == ("perception: error: --video my_dashcam.mp4 already exists; choose another "
                                       "--video, remove it, or pass --overwrite to replace it\n")
    assert drive.read_bytes() == b"a real drive"
    # ... also with a dataset: refused before the dataset is written
    assert cli_main(["synth", "--out", "ds", "--video", "my_dashcam.mp4", *small]) == 2
    assert "--video my_dashcam.mp4 already exists" in capsys.readouterr().err and not (tmp_path / "ds").exists()
    # --overwrite replaces it
    assert cli_main(["synth", "--no-images", "--video", "my_dashcam.mp4", "--overwrite", *small]) == 0
    assert _frames_of(drive) == 2
    # --overwrite without --video would be ignored: refused
    capsys.readouterr()
    assert cli_main(["synth", "--out", "ds", "--overwrite", *small]) == 2
    err = capsys.readouterr().err
    assert err.startswith("perception: error: --overwrite replaces an existing --video file; add --video") and \
        err.count("\n") == 1


def test_synth_replaces_the_video_of_its_own_earlier_output_as_it_replaces_the_output(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["synth", "--out", "ds", "--video", "ds/drive.mp4", "--size", "48x64"]
    assert cli_main([*argv, "--count", "3"]) == 0
    assert yaml.safe_load((tmp_path / "ds" / "synth.yaml").read_text())["video"] == "drive.mp4"
    assert cli_main([*argv, "--count", "2"]) == 0  # the same command again: no --overwrite needed
    assert _frames_of(tmp_path / "ds" / "drive.mp4") == 2
    capsys.readouterr()
    # Another output (or no dataset at all) does not own that video.
    assert cli_main(["synth", "--out", "other", "--video", "ds/drive.mp4", "--count", "2", "--size", "48x64"]) == 2
    assert "--video ds/drive.mp4 already exists" in capsys.readouterr().err
    assert cli_main(["synth", "--no-images", "--video", "ds/drive.mp4", "--count", "2", "--size", "48x64"]) == 2


# ---- 1.5: an interrupted synth leaves a dataset

def _interrupt_after(monkeypatch, frames: int) -> None:
    """Ctrl-C after ``frames`` dataset frames were rendered (KeyboardInterrupt, as the handler raises it)."""
    from perception.synthetic import dataset

    real, calls = dataset.render_scene, []

    def render(*args, **kwargs):
        if len(calls) == frames:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(dataset, "render_scene", render)


def test_an_interrupted_synth_leaves_a_dataset_of_the_frames_written(tmp_path, capsys, monkeypatch, tiny_model_path):
    from perception.datasets import open_dataset

    out = tmp_path / "big"
    argv = ["synth", "--out", str(out), "--count", "50", "--size", "48x64", "--split", "val=0.25"]
    _interrupt_after(monkeypatch, 5)
    assert cli_main(argv) == 130
    captured = capsys.readouterr()
    assert captured.err == (f"perception: interrupted; wrote 5 of 50 frames to {out}, a dataset of them "
                            "(train.txt 4, val.txt 1; synth.yaml says interrupted)\n")
    meta = yaml.safe_load((out / "synth.yaml").read_text())
    assert meta["count"] == 5 and meta["requested"] == 50 and meta["interrupted"] is True
    assert meta["split"] == {"train": 4, "val": 1}
    assert len(list((out / "images").iterdir())) == len(list((out / "labels").iterdir())) == 5
    assert len(open_dataset(f"folder:{out}", split="train")) == 4
    assert len(open_dataset(f"folder:{out}", split="val")) == 1
    report = tmp_path / "eval.json"
    assert cli_main(["eval", "--model", str(tiny_model_path), "--data", f"folder:{out}", "--split", "val",
                     "--threads", "1", "--json", str(report)]) == 0
    assert json.loads(report.read_text())
    capsys.readouterr()
    # The next run replaces the interrupted one whole.
    monkeypatch.undo()
    assert cli_main([*argv[:4], "3", *argv[5:]]) == 0
    meta = yaml.safe_load((out / "synth.yaml").read_text())
    assert meta["count"] == 3 and "interrupted" not in meta and "requested" not in meta
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000000.png", "000001.png", "000002.png"]


def test_an_interrupt_before_the_first_frame_says_none_was_written(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ds"
    _interrupt_after(monkeypatch, 0)
    assert cli_main(["synth", "--out", str(out), "--count", "4", "--size", "48x64"]) == 130
    assert capsys.readouterr().err == f"perception: interrupted; wrote 0 of 4 frames to {out}\n"
    assert (out / "classes.yaml").is_file() and yaml.safe_load((out / "synth.yaml").read_text())["count"] == 0


def test_an_interrupt_while_writing_the_video_says_how_far_it_got(tmp_path, capsys, monkeypatch):
    from perception.synthetic import dataset

    class StoppedDrive(dataset.SyntheticDrive):
        def next_frame(self):
            self.served = getattr(self, "served", 0) + 1
            if self.served > 2:
                raise KeyboardInterrupt
            return super().next_frame()

    monkeypatch.setattr(dataset, "SyntheticDrive", StoppedDrive)
    out, video = tmp_path / "ds", tmp_path / "ds" / "drive.mp4"
    argv = ["synth", "--out", str(out), "--count", "4", "--size", "48x64", "--video", str(video)]
    assert cli_main(argv) == 130
    assert capsys.readouterr().err == (f"perception: interrupted; wrote all 4 frames to {out} (train.txt 3, val.txt 1) "
                                       f"and 2 of 4 frames of the drive to {video} (a playable video of them)\n")
    assert _frames_of(video) == 2
    assert yaml.safe_load((out / "synth.yaml").read_text())["video_frames"] == 2
    alone = tmp_path / "alone.mp4"
    assert cli_main(["synth", "--no-images", "--video", str(alone), "--count", "4", "--size", "48x64"]) == 130
    assert capsys.readouterr().err == (f"perception: interrupted; wrote 2 of 4 frames of the drive to {alone} (a "
                                       "playable video of them)\n")
    monkeypatch.undo()
    assert cli_main(argv) == 0  # synth's own partial video: replaced without --overwrite
    assert _frames_of(video) == 4


# ---- 1.10: --split given twice, --out a folder of images

def test_split_flags_add_up_and_none_beside_a_split_is_refused(tmp_path, capsys):
    out = tmp_path / "ds"
    base = ["synth", "--out", str(out), "--count", "10", "--size", "48x64"]
    assert cli_main([*base, "--split", "val=0.2", "--split", "test=0.2"]) == 0
    assert "train.txt (6), val.txt (2), test.txt (2)" in capsys.readouterr().out
    assert {p.name for p in out.glob("*.txt")} == {"train.txt", "val.txt", "test.txt"}
    assert cli_main([*base, "--split", "none", "--split", "val=0.2"]) == 2
    assert capsys.readouterr().err == ("perception: error: --split none (train.txt only) and --split val=0.2 "
                                       "contradict each other; give one of them\n")


def test_synth_refuses_an_out_folder_of_someone_s_images(tmp_path, capsys):
    images = tmp_path / "ds" / "images"
    images.mkdir(parents=True)
    for i in range(3):
        (images / f"{i:06d}.png").write_bytes(b"their frame")
    assert cli_main(["synth", "--out", str(images), "--count", "2", "--size", "48x64"]) == 2
    assert capsys.readouterr().err == (
        f"perception: error: --out {images} holds images (000000.png, 000001.png and 1 more) and no synth.yaml of "
        "its own (another dataset's images/ or labels/ folder, or someone's frames); choose a new or empty folder\n")
    assert sorted(p.name for p in images.iterdir()) == ["000000.png", "000001.png", "000002.png"]
