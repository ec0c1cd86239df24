"""Writers never replace what the user named silently: ``listen --save-dir``, ``eval --json`` /
``--contact-sheet``, ``demo --out`` and ``bench --out`` refuse an earlier output in one line naming it
("pass --overwrite to replace it"), exit 2, before any work, and replace it only with ``--overwrite``
(as ``record``, ``view --out``, ``synth`` and ``train --out``). Outputs the user did not name
(demo's ``out/``, bench's ``out/bench``) are the command's own and replaced each run."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from perception.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
DATA = "synthetic:count=2,size=48x64"


def _one_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("perception: error: "), err
    assert "Traceback" not in err
    return lines[0].removeprefix("perception: error: ")


def _free_endpoint() -> str:
    from loopback_ports import free_endpoint

    return free_endpoint()  # this xdist worker's own port block (a freed bind(0) port may be taken)


def _cli(*args: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perception", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------
# eval --json / --contact-sheet
# --------------------------------------------------------------------------------------------


@pytest.fixture
def no_model_loading(monkeypatch):
    import perception.engines

    def no_loading(*_args, **_kwargs):
        raise AssertionError("a model was loaded before the outputs were checked")

    monkeypatch.setattr(perception.engines, "load_engine", no_loading)


@pytest.mark.parametrize("flag, name", [("--json", "eval.json"), ("--contact-sheet", "sheet.png")])
def test_eval_refuses_an_existing_output_before_it_loads_the_model(tmp_path, tiny_model_path, capsys, no_model_loading,
                                                                    flag, name):
    target = tmp_path / name
    target.write_bytes(b"an earlier evaluation")
    code = cli_main(["eval", "--model", str(tiny_model_path), "--data", DATA, "--tasks", flag, str(target)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert _one_error(captured.err) == (f"{flag} {target} already exists; choose another {flag}, remove it, or pass "
                                        "--overwrite to replace it")
    assert target.read_bytes() == b"an earlier evaluation"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_eval_overwrite_replaces_the_json_and_the_sheet(tmp_path, tiny_model_path, capsys):
    report, sheet = tmp_path / "eval.json", tmp_path / "sheet.png"
    report.write_text("old")
    sheet.write_bytes(b"old")
    code = cli_main(["eval", "--model", str(tiny_model_path), "--data", DATA, "--tasks", "--json", str(report),
                     "--contact-sheet", str(sheet), "--sheet-count", "2", "--overwrite"])
    capsys.readouterr()
    assert code == 0
    assert json.loads(report.read_text())["data"] == DATA
    assert sheet.read_bytes()[:4] == b"\x89PNG"


def test_eval_json_dash_is_stdout_even_beside_a_file_named_dash(tmp_path, tiny_model_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-").write_text("not eval's")
    assert cli_main(["eval", "--model", str(tiny_model_path), "--data", DATA, "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["data"] == DATA
    assert (tmp_path / "-").read_text() == "not eval's"


@pytest.mark.parametrize("extra", [(), ("--json", "-")])
def test_eval_overwrite_without_a_file_output_is_refused(tmp_path, tiny_model_path, capsys, no_model_loading, extra):
    code = cli_main(["eval", "--model", str(tiny_model_path), "--data", DATA, "--overwrite", *extra])
    assert code == 2
    assert "--overwrite replaces an existing --json or --contact-sheet file" in _one_error(capsys.readouterr().err)


def test_eval_json_in_place_of_a_folder_is_named(tmp_path, tiny_model_path, capsys, no_model_loading):
    code = cli_main(["eval", "--model", str(tiny_model_path), "--data", DATA, "--json", str(tmp_path), "--overwrite"])
    assert code == 2
    assert _one_error(capsys.readouterr().err) == (f"--json {tmp_path} is a directory; give a file name such as "
                                                   f"{tmp_path / 'eval.json'}")


# --------------------------------------------------------------------------------------------
# demo --out
# --------------------------------------------------------------------------------------------


def _demo(model: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    return _cli("demo", "--model", str(model), "--duration", "1", "--endpoint", _free_endpoint(), "--width", "128",
                "--height", "96", "--threads", "1", *extra, cwd=cwd)


def test_demo_refuses_an_earlier_demo_in_a_named_folder_before_the_model_loads(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "demo.png").write_bytes(b"an earlier snapshot")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")  # it is there, so only loading it would fail: the refusal comes first
    done = _demo(bad, tmp_path, "--out", str(out))
    assert done.returncode == 2 and done.stdout == ""
    assert _one_error(done.stderr) == (f"--out {out} already holds demo.png (an earlier demo); choose another --out, "
                                       "remove it, or pass --overwrite to replace it")
    assert _tree(out) == {"demo.png": b"an earlier snapshot"}


def test_demo_overwrite_replaces_its_two_files_and_nothing_else(tmp_path, tiny_model_path):
    out = tmp_path / "d"
    out.mkdir()
    for name in ("demo.mp4", "demo.png", "notes.txt"):
        (out / name).write_bytes(b"old")
    done = _demo(tiny_model_path, tmp_path, "--out", str(out), "--overwrite")
    assert done.returncode == 0, done.stderr
    files = _tree(out)
    assert files["notes.txt"] == b"old"
    assert files["demo.png"][:4] == b"\x89PNG" and files["demo.mp4"] != b"old"


def test_demo_default_out_is_its_own_and_replaced_so_make_demo_runs_twice(tmp_path, tiny_model_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "demo.mp4").write_bytes(b"an earlier make demo")
    (tmp_path / "out" / "demo.png").write_bytes(b"an earlier make demo")
    done = _demo(tiny_model_path, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "demo.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "out" / "demo.mp4").read_bytes() != b"an earlier make demo"


def test_demo_folder_in_place_of_its_video_is_named(tmp_path, tiny_model_path):
    (tmp_path / "d" / "demo.mp4").mkdir(parents=True)
    done = _demo(tiny_model_path, tmp_path, "--out", str(tmp_path / "d"), "--overwrite")
    assert done.returncode == 2
    assert "demo.mp4 is a folder, where the demo writes its overlay video" in _one_error(done.stderr)


# --------------------------------------------------------------------------------------------
# bench --out
# --------------------------------------------------------------------------------------------

BENCH = ["bench", "engine", "--runs", "5", "--warmup", "1", "--blocks", "1", "--no-progress"]


@pytest.fixture
def no_measuring(monkeypatch):
    import perception.bench.engine

    def no_bench(*_args, **_kwargs):
        raise AssertionError("the bench measured before its --out was checked")

    monkeypatch.setattr(perception.bench.engine, "run_engine_bench", no_bench)


def test_bench_refuses_an_earlier_result_in_a_named_folder_before_measuring(tmp_path, tiny_model_path, capsys,
                                                                             no_measuring):
    out = tmp_path / "b"
    out.mkdir()
    (out / "perception.bench.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    code = cli_main([*BENCH, "--model", str(tiny_model_path), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert _one_error(captured.err) == (f"--out {out} already holds perception.bench.json (an earlier bench); choose "
                                        "another --out, remove it, or pass --overwrite to replace it")
    assert _tree(out) == {"perception.bench.json": b"{}", "notes.txt": b"mine"}


def test_bench_overwrite_replaces_the_earlier_result_whole_and_keeps_other_files(tmp_path, tiny_model_path, capsys):
    out = tmp_path / "b"
    out.mkdir()
    for name in ("perception.bench.json", "perception.bench.md", "pipeline_fps.png", "notes.txt"):
        (out / name).write_text("old")
    assert cli_main([*BENCH, "--model", str(tiny_model_path), "--out", str(out), "--overwrite"]) == 0
    capsys.readouterr()
    names = set(_tree(out))
    # the earlier pipeline plot does not stay beside the new engine report
    assert names == {"perception.bench.json", "perception.bench.md", "engine_latency_cdf.png", "engine_fps.png",
                     "notes.txt"}
    assert json.loads((out / "perception.bench.json").read_text())["kind"] == "engine"
    assert (out / "notes.txt").read_text() == "old"


def test_bench_default_out_is_its_own_and_replaced(tmp_path, tiny_model_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "out" / "bench"
    own.mkdir(parents=True)
    (own / "perception.bench.json").write_text("old")
    (own / "pipeline_stages.png").write_text("old")
    assert cli_main([*BENCH, "--model", str(tiny_model_path)]) == 0
    capsys.readouterr()
    assert json.loads((own / "perception.bench.json").read_text())["kind"] == "engine"
    assert not (own / "pipeline_stages.png").exists()


def test_bench_report_rebuilds_beside_its_json_and_refuses_a_named_folder_with_another(tmp_path, tiny_model_path,
                                                                                       capsys):
    first = tmp_path / "first"
    assert cli_main([*BENCH, "--model", str(tiny_model_path), "--out", str(first)]) == 0
    results = (first / "perception.bench.json").read_bytes()
    # beside its JSON: the report and plots are rebuilt, never refused, the JSON kept
    (first / "perception.bench.md").write_text("stale")
    assert cli_main(["bench", "report", str(first)]) == 0
    assert (first / "perception.bench.md").read_text() != "stale"
    assert (first / "perception.bench.json").read_bytes() == results
    # into a new folder: the report with a copy of its JSON
    other = tmp_path / "other"
    assert cli_main(["bench", "report", str(first), "--out", str(other)]) == 0
    assert (other / "perception.bench.json").read_bytes() == results and (other / "perception.bench.md").is_file()
    capsys.readouterr()
    # again: that folder now holds an earlier bench output
    (other / "perception.bench.md").write_text("kept")
    assert cli_main(["bench", "report", str(first), "--out", str(other)]) == 2
    assert "already holds perception.bench.json, perception.bench.md" in _one_error(capsys.readouterr().err)
    assert (other / "perception.bench.md").read_text() == "kept"
    assert cli_main(["bench", "report", str(first), "--out", str(other), "--overwrite"]) == 0
    assert (other / "perception.bench.md").read_text() != "kept"


# --------------------------------------------------------------------------------------------
# listen --save-dir
# --------------------------------------------------------------------------------------------

NS = "perception/ow"


def _earlier_listen(save: Path) -> None:
    """What an earlier listen left (two topic folders of masks) beside the user's own files."""
    for topic, seqs in (("perception_ow_lane", (7, 8)), ("perception_ow_gone", (3,))):
        (save / topic).mkdir(parents=True)
        for seq in seqs:
            (save / topic / f"{seq:08d}.png").write_bytes(b"earlier mask")
    (save / "notes.txt").write_text("mine")
    (save / "perception_ow_lane" / "README").write_text("mine too")
    (save / ".hidden").mkdir()
    (save / ".hidden" / "00000001.png").write_bytes(b"not listen's")


def test_listen_refuses_a_save_dir_holding_an_earlier_listen_s_masks(tmp_path):
    save = tmp_path / "masks"
    _earlier_listen(save)
    before = _tree(save)
    done = _cli("listen", "--endpoint", _free_endpoint(), "--namespace", NS, "--duration", "0.3",
                "--save-dir", str(save), cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert _one_error(done.stderr) == (
        f"--save-dir {save} already holds perception_ow_gone/00000003.png, perception_ow_lane/00000007.png, "
        "perception_ow_lane/00000008.png (masks of an earlier listen); choose another --save-dir, remove them, or "
        "pass --overwrite to replace them")
    assert _tree(save) == before


def test_listen_save_dir_with_other_files_only_needs_no_flag(tmp_path):
    save = tmp_path / "masks"
    save.mkdir()
    (save / "notes.txt").write_text("mine")
    (save / "shots").mkdir()
    (save / "shots" / "frame1.png").write_bytes(b"mine")
    done = _cli("listen", "--endpoint", _free_endpoint(), "--duration", "0.3", "--save-dir", str(save),
                cwd=tmp_path, timeout=60)
    assert done.returncode == 4, done.stderr  # nothing to receive; the folder itself was fine
    assert "no messages received" in done.stderr and "--save-dir" not in done.stderr
    assert _tree(save) == {"notes.txt": b"mine", "shots/frame1.png": b"mine"}


def test_listen_overwrite_without_save_dir_is_refused(tmp_path):
    done = _cli("listen", "--endpoint", _free_endpoint(), "--duration", "0.3", "--overwrite", cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert "--overwrite replaces the masks of an earlier listen in --save-dir" in _one_error(done.stderr)


def test_listen_overwrite_keeps_the_earlier_masks_when_nothing_is_saved(tmp_path):
    save = tmp_path / "masks"
    _earlier_listen(save)
    before = _tree(save)
    done = _cli("listen", "--endpoint", _free_endpoint(), "--namespace", NS, "--duration", "0.3",
                "--save-dir", str(save), "--overwrite", cwd=tmp_path, timeout=60)
    assert done.returncode == 4, done.stderr
    assert _tree(save) == before


def test_listen_overwrite_replaces_only_the_earlier_masks(tmp_path):
    from perception.publish import MaskPublisher

    save = tmp_path / "masks"
    _earlier_listen(save)
    publisher = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace=NS)
    stop = threading.Event()

    def publish_frames() -> None:
        seq = 100
        rng = np.random.default_rng(0)
        while not stop.wait(0.02):
            lane = (rng.random((24, 32)) > 0.5).astype(np.uint8) * 255
            publisher.publish_masks(seq=seq, capture_ns=time.time_ns(), frame_id="f", masks={"lane": lane},
                                    latency_ms={"infer": 1.0}, model_id="m")
            seq += 1

    thread = threading.Thread(target=publish_frames, daemon=True)
    thread.start()
    try:
        done = _cli("listen", "--endpoint", publisher.endpoint, "--namespace", NS, "--duration", "2",
                    "--save-dir", str(save), "--overwrite", cwd=tmp_path, timeout=60)
    finally:
        stop.set()
        thread.join(timeout=5)
        publisher.close()
    assert done.returncode == 0, done.stderr
    files = _tree(save)
    # the user's files stay, wherever they are; none of the earlier masks does
    assert files.pop("notes.txt") == b"mine" and files.pop("perception_ow_lane/README") == b"mine too"
    assert files.pop(".hidden/00000001.png") == b"not listen's"
    assert not (save / "perception_ow_gone").exists()  # emptied, so removed
    assert files and all(name.startswith("perception_ow_lane/") and int(name[-12:-4]) >= 100 for name in files), files
    assert all(data[:4] == b"\x89PNG" for data in files.values())
