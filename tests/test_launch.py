"""Launch files: validation before anything starts, and real supervised node processes on loopback.

The supervised runs start ``perception launch`` as a subprocess with synthetic-camera nodes running a
tiny ONNX model, subscribe to what they publish, kill a node to see it respawned, and stop the
launch with SIGTERM. Every wait is on a message or an output line, with a timeout.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from tiny_models import write_brightness_model

from perception.errors import ConfigError
from perception.launch import format_plan, load_launch, parse_launch_arguments
from perception.subscribe import MaskSubscriber

REPO = Path(__file__).resolve().parents[1]
MODEL_HW = (48, 64)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return write_brightness_model(tmp_path_factory.mktemp("model") / "tiny.onnx", MODEL_HW)


def free_port() -> int:
    from loopback_ports import free_tcp_port

    return free_tcp_port()  # this xdist worker's own port block (a freed bind(0) port may be taken)


def camera_node(name: str, port: int, model: Path, **extra) -> dict:
    params = {
        "source": "synthetic", "model": str(model), "camera_name": name, "namespace": f"perception/{name}",
        "endpoint": f"tcp://127.0.0.1:{port}", "width": 96, "height": 64, "fps": 15, "threads": 1,
    }
    return {"node": {"name": name, "kind": "pipeline", "parameters": params, **extra}}


def write_launch(path: Path, entries: list) -> Path:
    path.write_text(yaml.safe_dump({"launch": entries}, sort_keys=False))
    return path


class LaunchProcess:
    """``perception launch FILE`` as a subprocess whose stdout lines are collected for waiting on."""

    def __init__(self, file: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "perception", "launch", str(file), *args],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_line(self, pattern: str, timeout_s: float = 30.0) -> re.Match:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(f"no line matching {pattern!r}; output so far:\n" + "\n".join(self.seen))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def wait_message(sub: MaskSubscriber, timeout_s: float = 30.0, *, captured_after_ns: int = 0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = sub.recv(timeout_s=0.5)
        if msg is not None and msg.kind == "mask" and msg.capture_ns > captured_after_ns:
            return msg
    raise AssertionError(f"no mask message from {sub.endpoint} within {timeout_s} s")


def test_two_cameras_publish_respawn_and_sigterm_stops_everything(tmp_path, model_path):
    ports = free_port(), free_port()
    file = write_launch(tmp_path / "two.yaml", [
        camera_node("left", ports[0], model_path, respawn=True, respawn_delay=0.2),
        camera_node("right", ports[1], model_path),
    ])
    subs = [MaskSubscriber(f"tcp://127.0.0.1:{p}", namespace=f"perception/{n}") for p, n in zip(ports, ("left", "right"), strict=True)]
    launch = LaunchProcess(file)
    try:
        pids = {}
        for _ in range(2):
            m = launch.wait_line(r"\[launch\] started node '(\w+)' \(pid (\d+)\)")
            pids[m.group(1)] = int(m.group(2))
        first = [wait_message(s) for s in subs]
        assert [m.topic.split("/")[1] for m in first] == ["left", "right"]
        assert first[0].header["header"]["frame_id"] == "left"

        # Kill one node: the launch must start it again, and the new process must publish (a frame
        # captured after the kill can only come from it).
        os.kill(pids["left"], signal.SIGKILL)
        killed_ns = time.time_ns()
        launch.wait_line(r"node 'left' ended \(signal SIGKILL\); restarting")
        again = launch.wait_line(r"started node 'left' \(pid (\d+)\) \(restart 1\)")
        assert int(again.group(1)) != pids["left"]
        assert wait_message(subs[0], captured_after_ns=killed_ns).topic.startswith("perception/left/")

        launch.proc.send_signal(signal.SIGTERM)
        assert launch.proc.wait(timeout=20) == 0
        launch.wait_line(r"stop requested; stopping all nodes")
        for pid in (int(again.group(1)), pids["right"]):
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        launch.stop()
        for s in subs:
            s.close()


def test_nodes_do_not_outlive_a_killed_launcher(tmp_path, model_path):
    # SIGKILL gives the launcher no chance to stop its children; the kernel must (PR_SET_PDEATHSIG),
    # or they would keep publishing as orphans.
    file = write_launch(tmp_path / "one.yaml", [camera_node("solo", free_port(), model_path)])
    launch = LaunchProcess(file)
    try:
        child = int(launch.wait_line(r"started node 'solo' \(pid (\d+)\)").group(1))
        launch.proc.kill()
        launch.proc.wait(timeout=10)
        deadline = time.monotonic() + 30  # the node's own stop deadline is 20 s after the kernel's SIGTERM
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)  # polling a pid: there is no event to wait on
        else:
            os.kill(child, signal.SIGKILL)
            raise AssertionError(f"node pid {child} outlived the killed launcher")
    finally:
        launch.stop()


def _listener_and_broken_node(tmp_path: Path, *, required: bool) -> Path:
    """A listener that runs until stopped, and a respawning pipeline node whose model is missing."""
    port = free_port()
    return write_launch(tmp_path / "req.yaml", [
        {"node": {"name": "listener", "kind": "listen", "parameters": {"endpoint": f"tcp://127.0.0.1:{port}"}}},
        {"node": {"name": "broken", "kind": "pipeline", "required": required, "respawn": True, "respawn_delay": 0.1,
                  "parameters": {"source": "synthetic", "model": str(tmp_path / "missing.onnx"),
                                 "endpoint": f"tcp://127.0.0.1:{port}"}}},
    ])


def test_required_node_failing_on_a_user_mistake_stops_the_launch_with_exit_2(tmp_path):
    # Exit code 2 is a bad input (perception/errors.py): respawning would fail the same way forever.
    launch = LaunchProcess(_listener_and_broken_node(tmp_path, required=True))
    try:
        launch.wait_line(r"\[broken\] perception: error: .*missing\.onnx")
        verdict = launch.wait_line(r"\[launch\] node 'broken' .*exit code 2.*")
        assert "not restarting" in verdict.group(0) and "restarting in" not in verdict.group(0)
        assert re.search(r"perception: error: model file .*missing\.onnx not found", verdict.group(0))
        launch.wait_line(r"required node 'broken' is gone; stopping all nodes")
        assert launch.proc.wait(timeout=20) == 2
        assert not any("restart" in line for line in launch.seen if "started node" in line)
    finally:
        launch.stop()


def test_node_whose_camera_is_not_there_yet_is_respawned(tmp_path, model_path):
    # A camera that is missing now may be there after boot: exit code 4 is retried, unlike 2.
    node = camera_node("cam", free_port(), model_path, respawn=True, respawn_delay=0.1)
    node["node"]["parameters"]["source"] = "/dev/video99"
    launch = LaunchProcess(write_launch(tmp_path / "cam.yaml", [node]))
    try:
        launch.wait_line(r"\[cam\] perception: error: camera /dev/video99 not found")
        launch.wait_line(r"node 'cam' ended \(exit code 4\); restarting")
        launch.wait_line(r"started node 'cam' \(pid \d+\) \(restart 1\)")
        launch.proc.send_signal(signal.SIGTERM)
        assert launch.proc.wait(timeout=20) == 0
    finally:
        launch.stop()


def test_optional_node_failing_on_a_user_mistake_is_not_respawned_and_the_rest_keep_running(tmp_path):
    launch = LaunchProcess(_listener_and_broken_node(tmp_path, required=False))
    try:
        verdict = launch.wait_line(r"\[launch\] node 'broken' .*exit code 2.*")
        assert "not restarting" in verdict.group(0) and "missing.onnx not found" in verdict.group(0)
        # The launch is still supervising the listener: a stop request is what ends it, with 1 (a
        # node failed for good during the run: a script or systemd unit around the launch sees it).
        launch.proc.send_signal(signal.SIGTERM)
        assert launch.proc.wait(timeout=20) == 1
        launch.wait_line(r"stop requested; stopping all nodes")
        launch.wait_line(r"summary: node 'broken' failed for good at .* \(exit code 2\), not restarted: "
                         r"perception: error: model file .*missing\.onnx not found")
        assert not any("started node 'broken'" in line and "restart" in line for line in launch.seen)
    finally:
        launch.stop()


def test_substitution_include_and_plan(tmp_path, model_path):
    (tmp_path / "sub").mkdir()
    write_launch(tmp_path / "sub" / "cam.yaml", [
        {"arg": {"name": "cam"}},
        {"arg": {"name": "port"}},
        camera_node("$(var cam)", 5999, model_path),
    ])
    inc = yaml.safe_load((tmp_path / "sub" / "cam.yaml").read_text())
    inc["launch"][2]["node"]["parameters"]["endpoint"] = "tcp://127.0.0.1:$(var port)"
    (tmp_path / "sub" / "cam.yaml").write_text(yaml.safe_dump(inc))
    top = write_launch(tmp_path / "top.yaml", [
        {"arg": {"name": "fps", "default": 15}},
        {"arg": {"name": "rear_port", "default": 6001}},
        {"include": {"file": "sub/cam.yaml", "args": {"cam": "rear", "port": "$(var rear_port)"}}},
        {"node": {"name": "front", "kind": "pipeline", "respawn": True, "respawn_max": 3,
                  "parameters": {"source": "synthetic", "model": str(model_path), "fps": "$(var fps)",
                                 "encoding": {"lane": "bitpack"}, "obstacles": False}}},
    ])
    plan = load_launch(top, parse_launch_arguments(["fps:=7.5"]))
    rear, front = plan.nodes
    assert rear.name == "rear" and "--endpoint" in rear.argv
    assert rear.argv[rear.argv.index("--endpoint") + 1] == "tcp://127.0.0.1:6001"
    assert front.argv[front.argv.index("--fps") + 1] == "7.5"
    assert list(front.argv[front.argv.index("--encoding"):][:2]) == ["--encoding", "lane=bitpack"]
    assert "--no-obstacles" in front.argv
    from perception.spawn import perception_command

    assert front.command_line() == perception_command("run", *front.argv)  # never -m from the working folder
    text = format_plan(plan)
    assert "[front] pipeline: respawn after 1 s (max 3)" in text and "perception run --source synthetic" in text


def test_the_printed_plan_hides_stream_credentials():
    """Hunt 4a finding 2: the plan (printed before every start, so in every journal) showed a
    camera URL's password and token; the node gets them whole."""
    secret = "rtsp://admin:hunter2@10.0.0.5/cam?api_key=k3y&channel=1"
    plan = load_launch(REPO / "launch" / "front_camera.yaml", parse_launch_arguments([f"device:={secret}"]))
    (node,) = plan.nodes
    assert node.argv[node.argv.index("--source") + 1] == secret
    text = format_plan(plan)
    assert "hunter2" not in text and "k3y" not in text and "admin" not in text
    assert "device=rtsp://***@10.0.0.5/cam?api_key=***&channel=1, model=" in text
    assert "--source 'rtsp://***@10.0.0.5/cam?api_key=***&channel=1' --camera-name front" in text


@pytest.mark.parametrize("name", ["front_camera.yaml", "two_cameras.yaml", "replay.yaml", "demo.yaml"])
def test_shipped_launch_files_validate(name):
    args = ["video:=drive.mp4"] if name == "replay.yaml" else []
    plan = load_launch(REPO / "launch" / name, parse_launch_arguments(args))
    assert plan.nodes
    if name == "two_cameras.yaml":
        endpoints = {n.parameters["endpoint"] for n in plan.nodes}
        namespaces = {n.parameters["namespace"] for n in plan.nodes}
        assert len(endpoints) == 2 and len(namespaces) == 2


def _node(**overrides) -> dict:
    node = {"name": "cam", "kind": "pipeline", "parameters": {"source": "synthetic"}}
    node.update(overrides)
    return {"node": node}


@pytest.mark.parametrize(
    ("entries", "args", "message"),
    [
        ([_node(parameters={"source": "synthetic", "fsp": 3})], [],
         r"bad\.yaml: node 'cam': parameters: unknown key 'fsp'; did you mean 'fps'\?"),
        ([_node(kind="camera")], [], r"bad\.yaml: node 'cam': kind: unknown node kind 'camera'.*known: listen, pipeline"),
        ([{"arg": {"name": "dev"}}, _node(parameters={"source": "$(var dev)"})], [],
         r"bad\.yaml: node 'cam': parameters: source: missing launch argument 'dev'; pass dev:=VALUE"),
        ([_node(parameters={"source": "synthetic", "fps": "fast"})], [],
         r"bad\.yaml: node 'cam': parameters: fps: expected a number, got 'fast'"),
        ([_node(parameters={"source": "synthetic", "queue": "fifo"})], [],
         r"bad\.yaml: node 'cam': parameters: queue: 'fifo' is not one of"),
        ([_node(respawn_dely=1)], [], r"bad\.yaml: node 'cam': unknown key 'respawn_dely'; did you mean 'respawn_delay'"),
        ([{"include": {"file": "nope.yaml"}}], [], r"bad\.yaml: include: file 'nope\.yaml' not found"),
        ([{"nod": {}}], [], r"bad\.yaml: entry 1: unknown entry 'nod' \(did you mean 'node'\?\)"),
        ([_node()], ["camera:=2"], r"bad\.yaml: unknown launch argument 'camera'"),
        ([_node(), _node()], [], r"node 'cam': name already used"),
        ([_node(kind="record", parameters={"out": "x.mcap"})], [], r"node 'cam': parameters: give --namespace NS"),
    ],
)
def test_bad_launch_files_name_file_node_and_key(tmp_path, entries, args, message):
    file = write_launch(tmp_path / "bad.yaml", entries)
    with pytest.raises(ConfigError, match=message):
        load_launch(file, parse_launch_arguments(args))


def test_bad_launch_file_cli_is_one_line_and_starts_nothing(tmp_path):
    file = write_launch(tmp_path / "bad.yaml", [_node(kind="camera")])
    done = subprocess.run([sys.executable, "-m", "perception", "launch", str(file)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"perception: error: {file}: node 'cam': kind: unknown node kind")
    assert "started node" not in done.stdout


@pytest.mark.parametrize(
    "order",
    [
        ["{file}", "--check", "fps:=7.5"],
        ["{file}", "fps:=7.5", "--check"],
        ["--check", "{file}", "fps:=7.5"],
        ["{file}", "--check"],
    ],
)
def test_check_flag_works_before_or_after_the_overrides(tmp_path, model_path, capsys, order):
    from perception.cli import main

    file = write_launch(tmp_path / "check.yaml", [
        {"arg": {"name": "fps", "default": 15}},
        {"node": {"name": "cam", "kind": "pipeline",
                  "parameters": {"source": "synthetic", "model": str(model_path), "fps": "$(var fps)"}}},
    ])
    assert main(["launch", *(word.format(file=file) for word in order)]) == 0
    out = capsys.readouterr().out
    expected_fps = "7.5" if "fps:=7.5" in order else "15"
    assert f"launch plan: {file} (1 node)" in out
    assert f"--fps {expected_fps}" in out
    assert "started node" not in out


def _check(tmp_path: Path, params: dict, capsys) -> tuple[int, str]:
    """``perception launch FILE --check`` on a one-pipeline-node file; (exit code, stderr)."""
    from perception.cli import main

    file = write_launch(tmp_path / "check.yaml", [{"node": {"name": "cam", "kind": "pipeline", "parameters": params}}])
    code = main(["launch", str(file), "--check"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"model": "{tmp}/missing.onnx"}, r"parameters: model: model file .*missing\.onnx not found"),
        ({"model": "{tmp}/text.onnx"}, r"parameters: model: \S*text\.onnx is not a readable ONNX file"),
        ({"model": "{tmp}/missing.engine", "engine": "tensorrt"}, r"parameters: model: model file .*missing\.engine not found"),
        ({"model": "{model}", "source": "{tmp}/drive.mp4"}, r"parameters: source: video file .*drive\.mp4 not found"),
        ({"model": "{model}", "source": "{tmp}/empty"}, r"parameters: source: image folder .*empty holds no images"),
        ({"model": "{model}", "source": "{tmp}/one.png"}, r"parameters: source: image file .*one\.png not found"),
        # A setting the node's source does not use, which the node would refuse at its start.
        ({"model": "{model}", "source": "{tmp}/frames/*.png", "width": 1280},
         r"parameters: width applies to cameras and the synthetic camera only, not to --source .*frames/\*\.png"),
    ],
)
def test_check_verifies_model_and_source_files(tmp_path, model_path, capsys, params, message):
    (tmp_path / "text.onnx").write_text("not a model\n")
    (tmp_path / "empty").mkdir()
    params = {"source": "synthetic", **{k: v.format(tmp=tmp_path, model=model_path) if isinstance(v, str) else v
                                        for k, v in params.items()}}
    code, err = _check(tmp_path, params, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"perception: error: {tmp_path / 'check.yaml'}: node 'cam': ")
    assert re.search(message, lines[0]), lines[0]


@pytest.fixture(scope="module")
def curve_keys(tmp_path_factory) -> Path:
    """A folder with a server key pair and an allow folder holding one client's public key."""
    from perception.curve_keys import create_key_pair

    keys = tmp_path_factory.mktemp("keys")
    create_key_pair(keys, "server")
    create_key_pair(keys, "laptop")
    (keys / "allowed").mkdir()
    (keys / "allowed" / "laptop.key").write_bytes((keys / "laptop.key").read_bytes())
    (keys / "empty").mkdir()
    return keys


@pytest.mark.parametrize(
    ("curve", "message"),
    [
        ({"curve_secret_key": "{keys}/missing.key_secret"},
         r"parameters: curve_secret_key: server secret key file .*missing\.key_secret not found"),
        ({"curve_secret_key": "{keys}/server.key"},
         r"parameters: curve_secret_key: server secret key file .*server\.key has no secret key"),
        ({"curve_secret_key": "{keys}/server.key_secret", "curve_allow": "{keys}/nope"},
         r"parameters: curve_allow: CURVE allow-list directory .*nope not found"),
        ({"curve_secret_key": "{keys}/server.key_secret", "curve_allow": "{keys}/empty"},
         r"parameters: curve_allow: CURVE allow-list directory .*empty holds no \.key files"),
    ],
)
def test_check_reads_the_curve_key_files_as_the_node_would(tmp_path, model_path, curve_keys, capsys, curve, message):
    # Without the check the node exits 2 at its start and, not restarted, leaves the camera dead.
    params = {"source": "synthetic", "model": str(model_path), **{k: v.format(keys=curve_keys) for k, v in curve.items()}}
    code, err = _check(tmp_path, params, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"perception: error: {tmp_path / 'check.yaml'}: node 'cam': ")
    assert re.search(message, lines[0]), lines[0]


def test_check_passes_good_curve_key_files(tmp_path, model_path, curve_keys):
    file = write_launch(tmp_path / "check.yaml", [{"node": {"name": "cam", "kind": "pipeline", "parameters": {
        "source": "synthetic", "model": str(model_path), "curve_secret_key": str(curve_keys / "server.key_secret"),
        "curve_allow": str(curve_keys / "allowed")}}}])
    done = subprocess.run([sys.executable, "-m", "perception", "launch", str(file), "--check"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "launch plan:" in done.stdout
    assert "CURVE on" not in done.stderr  # the node says so when it runs; the check starts nothing


def test_check_verifies_the_default_model_when_none_is_given(tmp_path, capsys, monkeypatch):
    from perception import run_config

    monkeypatch.setattr(run_config, "DEFAULT_MODEL", tmp_path / "assets" / "default.onnx")
    code, err = _check(tmp_path, {"source": "synthetic"}, capsys)
    assert code == 2 and "model: no model given and the shipped default model" in err and "make default-model" in err


@pytest.mark.parametrize("source", ["synthetic", "/dev/video9", "3", "rtsp://127.0.0.1:9/cam", "{tmp}/frames/*.png",
                                    "videotestsrc ! videoconvert ! appsink"])
def test_check_leaves_live_and_pattern_sources_alone(tmp_path, model_path, capsys, source):
    # Cameras may be plugged in, streams come up and files matching a pattern appear after the check.
    code, err = _check(tmp_path, {"source": source.format(tmp=tmp_path), "model": str(model_path)}, capsys)
    assert code == 0, err


def test_check_of_a_pipeline_with_files_imports_no_torch(tmp_path, model_path):
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "0.png").write_bytes(b"")  # listed by name; not decoded by the check
    file = write_launch(tmp_path / "files.yaml", [{"node": {"name": "cam", "kind": "pipeline", "parameters": {
        "source": str(tmp_path / "frames"), "model": str(model_path)}}}])
    code = (
        "import sys; from perception.cli import main; "
        f"assert main(['launch', {str(file)!r}, '--check']) == 0; "
        "assert 'torch' not in sys.modules, 'launch --check imported torch'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
