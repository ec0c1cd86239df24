"""User mistakes at the command line end in one ``perception: error: ...`` line, never a traceback.

Each case runs ``perception`` as a subprocess, the way a user at 2 a.m. would, with a wrong file,
flag or folder, and checks: a non-zero exit, stderr starting with ``perception: error:``, a word
of the message that names the thing or the fix, and no ``Traceback``. The cheap cases run once,
two at a time, in a module fixture; each case is still its own test. Then the cases that need
their own set-up: a missing optional dependency, ``view --duration`` with no node publishing, and
Ctrl-C during training (which must leave a resumable ``last.pt``).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import onnx
import pytest
from tiny_models import write_brightness_model

#: Per command. Generous: one case that only times out (torch's import on a starved 2-core runner)
#: fails the module fixture that runs them all.
TIMEOUT_S = 240

#: name -> (arguments, shell-quoted, with {fx} for the fixture folder; a word of the error line)
CASES: dict[str, tuple[str, str]] = {
    "run config is binary": ("run --model {fx}/tiny.onnx --config {fx}/tiny.onnx", "not a text file"),
    "run config is a folder": ("run --model {fx}/tiny.onnx --config {fx}/folder", "is a directory"),
    "launch file is binary": ("launch {fx}/image.png --check", "not a text file"),
    "inspect a folder": ("inspect {fx}/folder", "is a directory"),
    # ENAMETOOLONG was a traceback (exit 1) for every path flag: run, replay, inspect, eval, launch...
    "a path part over 255 bytes": ("inspect {fx}/" + "x" * 300 + ".onnx", "is too long for the file system"),
    "a launch file name over 255 bytes": ("launch {fx}/" + "y" * 300 + ".yaml --check", "is too long for the file system"),
    "replay a folder without recordings": ("replay {fx}/folder", "holds no .mcap file"),
    "view unknown provider": (
        "view --source synthetic --model {fx}/tiny.onnx --max-frames 1 --out {fx}/v.png --provider gpu0",
        "provider: 'gpu0' is not one of 'auto', 'cpu', 'cuda', 'tensorrt'",
    ),
    "eval negative threads": ("eval --model {fx}/tiny.onnx --data synthetic --threads -1", "--threads -1"),
    "eval zero batch": ("eval --checkpoint {fx}/missing.pt --data synthetic --batch-size 0", "--batch-size 0"),
    "eval negative workers": ("eval --checkpoint {fx}/missing.pt --data synthetic --workers -1", "--workers -1"),
    "eval json is a folder": ("eval --model {fx}/tiny.onnx --data synthetic --json {fx}/folder", "is a directory"),
    "eval json folder missing": ("eval --model {fx}/tiny.onnx --data synthetic --json {fx}/nope/e.json", "does not exist"),
    "eval recorded dataset unusable": ("eval --model {fx}/tiny.onnx", "pass --data"),
    "eval checkpoint is onnx": ("eval --checkpoint {fx}/tiny.onnx --data synthetic", "is an exported ONNX model, not a checkpoint"),
    "export huge size": ("export --checkpoint {fx}/missing.pt --out {fx}/m.onnx --size 100000x100000",
                         "input size 100000x100000 is out of range: each side 16..4096"),
    "export out is an int8 name": ("export --checkpoint {fx}/missing.pt --out {fx}/m.int8.onnx",
                                   "is an INT8 file's name, and the export writes the FP32 model there"),
    "export tiny size": ("export --checkpoint {fx}/missing.pt --out {fx}/m.onnx --size 8x8", "each side 16..4096"),
    "train huge size": ("train --size 20000x20000 --out {fx}/run", "input_hw=[20000, 20000] (--size) is out of range: each side 16..4096"),
    "export out is a folder": ("export --checkpoint {fx}/missing.pt --out {fx}/folder.onnx", "is a directory"),
    "export out under a file": ("export --checkpoint {fx}/missing.pt --out {fx}/file.txt/m.onnx", "file.txt is a file, not a folder"),
    "bench out is a file": ("bench engine --model {fx}/tiny.onnx --out {fx}/file.txt", "is a file"),
    "bench out under a file": ("bench engine --model {fx}/tiny.onnx --out {fx}/file.txt/b", "cannot create"),
    "bench huge threads": ("bench engine --model {fx}/tiny.onnx --threads 100000 --out {fx}/b", "threads=100000 is out of range [0, 256] (--threads 100000)"),
    "bench huge batch": ("bench engine --model {fx}/tiny.onnx --batch 100000 --out {fx}/b", "batch=100000 is out of range [1, 1024]"),
    "listen save-dir is a file": ("listen --save-dir {fx}/file.txt --duration 1", "--save-dir"),
    # A bad model and a bad source: the model is named first, whether the engine loads in line
    # (ONNX Runtime) or in a thread beside the publisher's and the source's opening (OpenVINO,
    # auto; each its own endpoint, since the cases run two at a time).
    "run bad model and source, ort": ("run --engine ort --model {fx}/file.txt --source {fx}/nope.mp4", "file.txt is not a readable ONNX"),
    "run bad model and source, openvino": (
        "run --engine openvino --model {fx}/file.txt --source {fx}/nope.mp4 --endpoint ipc://{fx}/e1.sock", "file.txt is not a readable ONNX"),
    "run bad model and source, auto": ("run --engine auto --model {fx}/file.txt --source {fx}/nope.mp4 --endpoint ipc://{fx}/e2.sock", "file.txt is not a readable ONNX"),
    # auto hashes the file for its probe cache: a missing one was an OSError traceback there.
    "run auto missing model": ("run --engine auto --model {fx}/nowhere.onnx --endpoint ipc://{fx}/e8.sock",
                               "nowhere.onnx not found; check the path"),
    "bench probe model is a folder": ("bench probe {fx}/folder", "folder is a directory; pass the .onnx file"),
    "run auto fp16 on a cpu": ("run --engine auto --precision fp16 --model {fx}/tiny.onnx --endpoint ipc://{fx}/e9.sock",
                               "fp16 runs on a GPU"),
    "run auto int8 without its file": ("run --engine auto --precision int8 --model {fx}/tiny.onnx --endpoint ipc://{fx}/e10.sock",
                                       "tiny.int8.onnx beside the model, and it is not there"),
    "run good model, bad source, openvino": ("run --engine openvino --model {fx}/tiny.onnx --source {fx}/nope.mp4 --endpoint ipc://{fx}/e3.sock", "not found"),
    "run model input too large": ("run --model {fx}/huge.onnx", "input 5000x5000 has 25000000 pixels"),
    "inspect model input too large": ("inspect {fx}/huge.onnx", "re-export it at a smaller --size"),
    # Valid to every check before it runs: its confidence gathers channel 5 of 3 (ORT fails at run time).
    "run model fails its first inference": ("run --model {fx}/fails.onnx --duration 2", "the first inference on ort failed"),
    # Its class ids are the blue channel, 0..255, against a 12-class table.
    "eval model predicts ids past its table": ("eval --model {fx}/blue.onnx --data synthetic:count=2,size=64x96", "outside its class table"),
    # Declares uint8 [N, 64, 96] class ids and computes every other row and column (ORT only warns).
    "run model output smaller than declared": ("run --model {fx}/half.onnx --duration 2", "is uint8 (1, 32, 48) when it runs"),
    # NaN compares false with every bound; a negative seed reached numpy's generator.
    "run unknown threshold nan": ("run --model {fx}/tiny.onnx --unknown-threshold nan", "expected a number, got nan"),
    "run negative seed": ("run --model {fx}/tiny.onnx --seed -1", "seed=-1 is out of range"),
    # The synthetic world failed after the model had loaded, naming no flag.
    "run synthetic fps below its range": ("run --model {fx}/tiny.onnx --fps 0.1",
                                          "fps=0.1 is outside the synthetic camera's range (1..240 frames per second)"),
    # The suggested fix was 'rear==clip.mp4', which fails again.
    "run source with an empty camera name": ("run --model {fx}/tiny.onnx --source a=synthetic --source =clip.mp4",
                                             "e.g. --source front=/dev/video0 --source rear=clip.mp4"),
    "view two sources": ("view --source a=synthetic --source b=synthetic --model {fx}/tiny.onnx --out {fx}/v2.png",
                         "a view draws one source; run one view per camera"),
    # torch.save's zip archive given where an .onnx file belongs (the pickle form: test_modelfile).
    "run model is a checkpoint": ("run --model {fx}/zip.pt", "zip.pt is a PyTorch checkpoint, not an ONNX model: export it"),
    "run source without one readable frame": ("run --model {fx}/tiny.onnx --source {fx}/image.png --endpoint ipc://{fx}/e6.sock",
                                              "image.png (1 file) ended without one readable frame (1 unreadable)"),
    # "$MODEL" with MODEL unset: the default model, "." or the synthetic world would run without a word.
    "run empty model": ("run --model ''", "argument --model: an empty value (an unset shell variable?)"),
    # Its write probe (blocked by a folder where the temporary file goes) fails before the evaluation.
    "eval json cannot be written": ("eval --model {fx}/tiny.onnx --data synthetic --json {fx}/blocked.json",
                                    "blocked.json (Is a directory); choose a writable --json path"),
    "run fp16 on onnx runtime": ("run --model {fx}/tiny.onnx --fp16", "--fp16 applies to --engine torch and tensorrt"),
    # 9000 x 8000 in a 78 KB PNG: refused by OpenCV's decoder limit before it allocates 216 MB.
    "run image over the pixel limit": ("run --model {fx}/tiny.onnx --source {fx}/huge.png --endpoint ipc://{fx}/e7.sock",
                                       "huge.png (1 file) ended without one readable frame"),
    # Things that exist but are not files are named for what they are, not "not found".
    "run key file is a folder": ("run --model {fx}/tiny.onnx --curve-secret-key {fx}/folder", "folder is a directory"),
    "eval json under a file": ("eval --model {fx}/tiny.onnx --data synthetic --json {fx}/file.txt/e.json", "file.txt is a file, not a folder"),
    "view out is its source": ("view --source {fx}/image.png --model {fx}/tiny.onnx --out {fx}/image.png", "would overwrite the --source"),
    "run camera name not ROS": ("run --model {fx}/tiny.onnx --camera-name front-left.1", "only letters, digits and '_'"),
    "run namespace not ROS": ("run --model {fx}/tiny.onnx --namespace perception//2cam", "repeated '/'"),
    "train out is a file": (
        "train --model segnet_basic --data synthetic:count=2,size=64x96 --size 64x96 --steps 1 --batch-size 1 "
        "--workers 0 --out {fx}/file.txt",
        "cannot create run directory",
    ),
    "train unknown model option": (
        "train --model segnet_basic --data synthetic:count=2,size=64x96 --size 64x96 --steps 1 --batch-size 1 "
        "--workers 0 --out {fx}/t --set 'model_kwargs={{colour: 1}}'",
        "has no option 'colour'",
    ),
}


def perception(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "perception", *args], capture_output=True, text=True, timeout=TIMEOUT_S, cwd=cwd, **kwargs
    )


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> Path:
    """A folder of wrong inputs: a folder, a plain file, a PNG, and a tiny valid ONNX model."""
    root = tmp_path_factory.mktemp("fx")
    write_brightness_model(root / "tiny.onnx", (64, 96))
    write_brightness_model(root / "huge.onnx", (5000, 5000))
    fails = onnx.load(str(write_brightness_model(root / "fails.onnx", (64, 96), with_confidence=True)))
    blue = next(t for t in fails.graph.initializer if t.name == "blue")
    blue.CopyFrom(onnx.helper.make_tensor("blue", onnx.TensorProto.INT64, [], [5]))
    onnx.save(fails, str(root / "fails.onnx"))
    blue = onnx.load(str(write_brightness_model(root / "blue.onnx", (64, 96))))
    ids = next(n for n in blue.graph.node if n.output[0] == "class_ids")
    ids.CopyFrom(onnx.helper.make_node("Gather", ["image", "channel_0"], ["class_ids"], axis=3))
    blue.graph.initializer.append(onnx.helper.make_tensor("channel_0", onnx.TensorProto.INT64, [], [0]))
    onnx.save(blue, str(root / "blue.onnx"))
    half = onnx.load(str(write_brightness_model(root / "half.onnx", (64, 96))))
    ids = next(n for n in half.graph.node if n.output[0] == "class_ids")
    ids.output[0] = "full"
    half.graph.node.append(onnx.helper.make_node("Slice", ["full", "starts", "ends", "axes", "steps"], ["class_ids"]))
    half.graph.initializer.extend(onnx.helper.make_tensor(name, onnx.TensorProto.INT64, [2], values) for name, values in
                                  (("starts", [0, 0]), ("ends", [64, 96]), ("axes", [1, 2]), ("steps", [2, 2])))
    onnx.save(half, str(root / "half.onnx"))
    (root / "folder").mkdir()
    (root / "folder.onnx").mkdir()
    (root / "file.txt").write_text("not a folder\n")
    (root / "blocked.json.tmp").mkdir()
    import cv2
    import numpy as np

    cv2.imwrite(str(root / "huge.png"), np.zeros((9000, 8000), np.uint8))
    (root / "zip.pt").write_bytes(b"PK\x03\x04" + bytes(60))
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    return root


@pytest.fixture(scope="module")
def results(fx) -> dict[str, subprocess.CompletedProcess]:
    def run(name: str) -> subprocess.CompletedProcess:
        return perception(*shlex.split(CASES[name][0].format(fx=shlex.quote(str(fx)))), cwd=fx)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(CASES, pool.map(run, CASES), strict=True))


def assert_one_line_error(proc: subprocess.CompletedProcess, word: str) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode not in (0, 1), f"exit {proc.returncode}: {proc.stderr}"
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("perception: error:")]
    assert len(error_lines) == 1, proc.stderr
    assert word in error_lines[0], error_lines[0]


@pytest.mark.parametrize("name", list(CASES))
def test_user_mistake_is_one_line(name, results):
    assert_one_line_error(results[name], CASES[name][1])


def test_an_image_over_the_pixel_limit_is_named_as_such(results):
    assert "huge.png' has more than 67108864 pixels (8192 x 8192); resize it" in results["run image over the pixel limit"].stderr


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (["eval", "--checkpoint", "ckpt.pt", "--data", "synthetic"], "needs torch"),
        (["export", "--checkpoint", "ckpt.pt", "--out", "m.onnx"], "needs torch"),
        (["train", "--data", "synthetic", "--out", "runs/x"], "needs torch"),
    ],
)
def test_missing_torch_is_a_dependency_error(args, word, tmp_path):
    # torch made unimportable in the child, as on a runtime-only install (pip install perception).
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None; "
        "from perception.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    (tmp_path / "ckpt.pt").write_bytes(b"PK\x03\x04weights")  # a zip archive's start, as torch.save writes
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp_path
    )
    assert_one_line_error(proc, word)
    # the install the line names is the lock's (make venv-dev), not a plain pip resolution (H24)
    assert "make venv-dev in the perception checkout (the locked train extra)" in proc.stderr
    assert proc.returncode == 3


def test_view_of_silent_node_ends_at_duration(fx, free_tcp_port):
    # No node publishes: --duration must still end the run (it used to wait for a first mask forever).
    proc = perception(
        "view", "--endpoint", f"tcp://127.0.0.1:{free_tcp_port}", "--namespace", "perception/front",
        "--model", str(fx / "tiny.onnx"), "--duration", "0.5", "--out", str(fx / "silent.png"), cwd=fx,
    )
    # Nothing could be written to the --out asked for: one error line saying why, a non-zero exit.
    assert_one_line_error(proc, "no masks received")
    assert proc.returncode == 4  # no publisher there: 4, as listen and record (a stream that is not there)


def test_ctrl_c_during_training_keeps_a_resumable_last_pt(tmp_path):
    torch = pytest.importorskip("torch")
    from perception.training.checkpoint import load_checkpoint

    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "perception", "train", "--model", "segnet_basic", "--data", "synthetic:count=2,size=64x96",
         "--size", "64x96", "--steps", "1000", "--batch-size", "1", "--workers", "1", "--out", str(out),
         "--set", "progress=false", "--set", "log_every=1", "--set", "val_every=1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, start_new_session=True,
    )
    try:
        # metrics.jsonl gets a record after every step: once it has one, training is under way.
        deadline = time.monotonic() + TIMEOUT_S
        log = out / "metrics.jsonl"
        while not (log.is_file() and log.stat().st_size > 0):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        _, stderr = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Traceback" not in stderr, stderr
    assert proc.returncode == 130, stderr
    assert "continue with: perception train --resume" in stderr
    ckpt = load_checkpoint(out / "last.pt")
    assert 1 <= ckpt.step < 1000
    assert ckpt.train_state is not None and torch.is_tensor(ckpt.train_state["rng"]["torch"])


@pytest.mark.parametrize(("argv", "line"), [
    (["train", "--bogus"], "train: unrecognized arguments: --bogus; see 'perception train --help'"),
    (["export", "--checkpoint", "c.pt", "--bogus", "x"],
     "export: unrecognized arguments: --bogus x; see 'perception export --help'"),
    (["eval", "--bogus=3"], "eval: unrecognized arguments: --bogus=3; see 'perception eval --help'"),
    (["bench", "engine", "--bogus"], "bench engine: unrecognized arguments: --bogus; see 'perception bench engine --help'"),
    (["--bogus"], "unrecognized arguments: --bogus; see 'perception --help'"),
])
def test_an_unknown_flag_points_to_the_help_that_lists_the_commands_flags(argv, line, capsys):
    # argparse reports a flag no parser takes from the top parser: it pointed to 'perception --help'
    from perception import cli

    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2
    assert capsys.readouterr().err == f"perception: error: {line}\n"


def test_a_size_given_with_set_shows_the_forms_it_takes(capsys):
    from perception import cli

    assert cli.main(["train", "--set", "input_hw=352*480"]) == 2  # refused before torch loads or anything runs
    assert capsys.readouterr().err == (
        "perception: error: --set: input_hw: expected [HEIGHT, WIDTH] or HEIGHTxWIDTH, e.g. --set input_hw=[352,480] "
        "or --set input_hw=352x480; got '352*480'\n")


def _said(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``perception ARGV`` run in process (argparse exits by SystemExit)."""
    from perception import cli

    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("argv", "verbose", "quiet"), [
    (["-q", "run"], 0, True),
    (["run", "-q"], 0, True),  # was "unrecognized arguments: -q"
    (["run", "--quiet", "--duration", "1"], 0, True),
    (["-v", "run"], 1, False),
    (["run", "-v"], 1, False),
    (["-v", "run", "-v"], 2, False),  # each level counts: a subcommand's namespace replaced its parent's
    (["run", "-vv"], 2, False),
    (["bench", "engine", "-v"], 1, False),
    (["bench", "-v", "engine", "-v"], 2, False),
    (["listen"], 0, False),
])
def test_verbosity_flags_go_before_or_after_the_command(argv, verbose, quiet):
    from perception import cli

    command = next(a for a in argv if not a.startswith("-"))
    assert cli.verbosity(cli.build_parser(command).parse_args(argv)) == (verbose, quiet)


@pytest.mark.parametrize("argv", [["-v", "-q", "listen"], ["listen", "-q", "-v"], ["-q", "listen", "-v"]])
def test_verbose_and_quiet_together_are_refused_in_one_line(argv, capsys):
    code, out, err = _said(argv, capsys)
    assert code == 2 and out == ""
    assert err == "perception: error: listen: -q and -v contradict each other; give one of them; see 'perception listen --help'\n"


def test_every_command_and_bench_mode_lists_the_verbosity_flags_in_its_help():
    from perception import cli

    for name in cli.COMMANDS:
        parser = cli.build_parser(name)
        chosen = parser.subcommands.choices[name]
        parsers = [chosen, *(chosen.subcommands.choices.values() if chosen.subcommands else [])]
        for each in parsers:
            text = each.format_help()
            assert "-v, --verbose" in text and "-q, --quiet" in text, each.prog


def test_the_log_ladder(tmp_path):
    """default: ours INFO, theirs WARNING; -v: ours DEBUG; -vv: all DEBUG; -q: all WARNING. Run in a
    child: in a test process logging is already set up (pytest's handlers) and is left alone."""
    script = (
        "import logging\n"
        "from perception.cli import configure_logging\n"
        "for verbose, quiet in ((0, False), (1, False), (2, False), (0, True)):\n"
        "    root = logging.getLogger()\n"
        "    for h in list(root.handlers): root.removeHandler(h)\n"
        "    for name in ('perception', 'bench', 'torch.onnx'): logging.getLogger(name).setLevel(logging.NOTSET)\n"
        "    configure_logging(verbose, quiet)\n"
        "    print(*(logging.getLevelName(logging.getLogger(n).getEffectiveLevel())\n"
        "            for n in ('perception.pipeline', 'bench.engine', 'matplotlib', 'torch.onnx')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp_path)
    assert proc.stdout.splitlines() == [
        "INFO INFO WARNING WARNING",
        "DEBUG DEBUG WARNING WARNING",
        "DEBUG DEBUG DEBUG DEBUG",
        "WARNING WARNING WARNING WARNING",
    ], proc.stderr


def test_verbose_shows_the_resolved_settings_and_the_default_does_not(tmp_path):
    argv = ["synth", "--count", "1", "--size", "48x64", "--no-images", "--video", "v.mp4"]
    plain = perception(*argv, cwd=tmp_path)
    verbose = perception(*argv[:-1], "v2.mp4", "-v", cwd=tmp_path)  # a new --video: an existing one is refused
    assert plain.returncode == verbose.returncode == 0, verbose.stderr
    assert " D " not in plain.stderr
    settings = [line for line in verbose.stderr.splitlines() if " D perception.flags: synth settings" in line]
    assert len(settings) == 1, verbose.stderr
    # every setting, defaults included, and which flags were given
    assert "(flags --count --size --video --no-images)" in settings[0]
    assert "count=1" in settings[0] and "seed=0" in settings[0] and "fps=30" in settings[0]
    failed = perception("synth", "-v", "--count", "0", cwd=tmp_path)
    assert "ConfigError raised at " in failed.stderr and "config.py" in failed.stderr  # where it was found
    assert_one_line_error(failed, "synth: count=0 is out of range: must be >= 1 (--count 0)")


def test_perception_alone_names_the_commands_in_one_line(capsys):
    code, out, err = _said([], capsys)
    assert code == 2 and out == ""
    assert err.startswith("perception: error: no command given; choose one of: run, listen, demo,")
    assert err.endswith("; see 'perception --help'\n") and err.count("\n") == 1


def test_help_is_the_help_flag(capsys):
    code, overview, _ = _said(["help"], capsys)
    assert code == 0 and "COMMAND" in overview and "'perception help COMMAND'" in overview
    assert _said(["help", "record"], capsys)[:2] == _said(["record", "--help"], capsys)[:2]
    code, out, _ = _said(["help", "bench", "engine"], capsys)
    assert code == 0 and out.startswith("usage: perception bench engine")
    code, _, err = _said(["help", "rnu"], capsys)
    assert code == 2 and "did you mean 'run'?" in err


@pytest.mark.parametrize(("argv", "line"), [
    (["rnu"], "argument COMMAND: invalid choice: 'rnu' (choose from "),
    (["rnu"], "); did you mean 'run'?; see 'perception --help'"),
    (["bench", "engin"], "bench: argument MODE: invalid choice: 'engin' (choose from 'engine', 'pipeline', 'probe', "
                         "'report'); did you mean 'engine'?; see 'perception bench --help'"),
    (["listen", "--namspace", "x"], "listen: unrecognized arguments: --namspace x; did you mean '--namespace'?; "
                                    "see 'perception listen --help'"),
    (["listen", "--endpiont=tcp://a:1"], "did you mean '--endpoint'?"),
    (["listen", "--qiuet"], "did you mean '--quiet'?"),
    (["listen", "--precision", "x"], "listen: unrecognized arguments: --precision x; see 'perception listen --help'"),
])
def test_a_mistyped_command_or_flag_gets_a_suggestion_in_the_same_line(argv, line, capsys):
    code, _, err = _said(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and line in err, err


@pytest.mark.parametrize(("argv", "line"), [
    # a settings error names the command as argparse's errors do, with the flag as typed
    (["synth", "--count", "0"], "synth: count=0 is out of range: must be >= 1 (--count 0)"),
    (["listen", "--every", "0"], "listen: every=0 is out of range: must be >= 1 (--every 0)"),
    (["record", "--namespace", "p/f"], "record: --out is required (output .mcap file"),
    (["train", "--lr", "-1"], "train: lr=-1.0 is out of range [0, 10] (--lr -1)"),  # was "train config: ...", no flag
    (["train", "--set", "lr=-1"], "train: lr=-1.0 is out of range [0, 10] (--set lr=-1)"),
    (["train", "--batch-size", "0"], "train: batch_size=0 is out of range"),
    (["bench", "engine", "--runs", "0"], "bench engine: runs=0 is out of range [1, 10000000] (--runs 0)"),
    (["listen", "--max-mask-pixels", "0"], "listen: max_mask_pixels=0 is out of range [1, 268435456]"),
])
def test_a_settings_error_names_the_command_the_same_way_everywhere(argv, line, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = _said(argv, capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"perception: error: {line}"), err
    assert "inf]" not in err and "command line:" not in err and "perception: error: perception" not in err
    if argv[0] != "bench":  # the bench makes its --out folder first (so a typo there costs seconds)
        assert not any(tmp_path.iterdir())  # refused before anything was written
