"""Child ``perception`` processes never import from the folder they are started in.

``python -m perception`` puts that folder first on sys.path: a ``perception.py`` (or a ``perception/``
package) there, a user's own script or another user's file in /tmp, replaced every launch node and
the launch still exited 0. Every spawn goes through ``perception.spawn`` now: launch's nodes, the
bench's node under test and ``--engine auto``'s probe child.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from perception import spawn

MARK = "HIJACKED: the folder's perception ran"


def hijacking_folder(root: Path, form: str) -> Path:
    """A folder holding a ``perception.py`` or a ``perception/`` package that prints MARK and exits 0."""
    folder = root / "work"
    folder.mkdir()
    code = f"import sys\nprint({MARK!r}, flush=True)\nsys.exit(0)\n"
    if form == "module":
        (folder / "perception.py").write_text(code)
    else:
        (folder / "perception").mkdir()
        (folder / "perception" / "__init__.py").write_text(code)
        (folder / "perception" / "__main__.py").write_text(code)
    return folder


@pytest.mark.parametrize("form", ["module", "package"])
def test_launch_nodes_run_the_installed_perception_not_the_working_folders(tmp_path, free_tcp_port, form):
    folder = hijacking_folder(tmp_path, form)
    launch = folder / "l.yaml"
    launch.write_text(yaml.safe_dump({"launch": [{"node": {"name": "ear", "kind": "listen", "parameters": {
        "endpoint": f"tcp://127.0.0.1:{free_tcp_port}", "duration_s": 0.5}}}]}))
    done = subprocess.run(spawn.perception_command("launch", str(launch)), cwd=folder, capture_output=True,
                          text=True, timeout=120)
    out = done.stdout + done.stderr
    assert MARK not in out, out
    # The real listen node ran: nothing was published, so it ended 4 and the launch reports it (exit 1).
    assert "[ear] " in out and "no messages received" in out, out
    assert done.returncode == 1, out


@pytest.mark.parametrize("safe_path_flag", [True, False], ids=["-P", "-c (Python 3.10)"])
def test_both_command_forms_ignore_the_working_folder_and_keep_the_program_name(tmp_path, safe_path_flag):
    folder = hijacking_folder(tmp_path, "module")
    cmd = spawn.module_command("perception", "keys", "--help", safe_path_flag=safe_path_flag)
    done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=60)
    assert MARK not in done.stdout, done.stdout
    assert done.returncode == 0 and done.stdout.startswith("usage: perception keys"), done.stdout + done.stderr


def test_the_engine_auto_probe_child_ignores_the_working_folder(tmp_path):
    from perception.engines.auto import probe_command
    from perception.options import EngineOptions

    folder = hijacking_folder(tmp_path, "package")
    cmd, env = probe_command(tmp_path / "m.onnx", EngineOptions(), tmp_path / "cache")
    done = subprocess.run([*cmd, "--help"], cwd=folder, env=env, capture_output=True, text=True, timeout=60)
    assert MARK not in done.stdout, done.stdout
    assert done.returncode == 0 and "usage:" in done.stdout, done.stdout + done.stderr


def test_the_bench_node_is_started_the_safe_way_and_reported_as_typed(tmp_path):
    from perception.bench.nodeproc import node_command
    from perception.bench.pipeline import PipelineBenchConfig

    cfg = PipelineBenchConfig(model=tmp_path / "m.onnx", source="synthetic", duration_s=1, progress=False)
    cmd = node_command(cfg, tmp_path / "m.onnx", "tcp://127.0.0.1:5999")
    prefix = spawn.perception_command()
    assert cmd[:len(prefix)] == prefix, cmd
    assert spawn.shown(cmd).startswith("perception -q run --model "), spawn.shown(cmd)


def test_a_checkout_run_from_its_own_folder_hands_its_folder_to_the_children(monkeypatch):
    # `python -m perception launch` in an uninstalled checkout found perception through its start
    # folder, which a safe child does not search: the child gets that folder by its absolute path.
    import perception

    root = str(Path(perception.__file__).resolve().parents[1])
    monkeypatch.setattr(sys, "path", [root, *sys.path[1:]])
    env = spawn.child_env({"PYTHONPATH": "/elsewhere"})
    assert env["PYTHONPATH"].split(":") == ["/elsewhere", root]
    monkeypatch.setattr(sys, "path", ["/some/script/folder", *sys.path[1:]])
    assert spawn.child_env({"A": "1"}) == {"A": "1"}
