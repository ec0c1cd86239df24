"""The runtime imports nothing from the build side, read from the import graph (not a hand list).

Every module of the runtime (what `perception run`, `listen`, `record`, `replay`, `view`, `demo`,
`launch`, `keys` and `inspect` can execute, and the CPU/GPU engines they load) is parsed, and its
imports, at module level and inside functions alike, are followed through the package. None may
reach torch, torchvision, perception.export or perception.bench (the build side), perception.training or
perception.models. The torch engine (an explicit `--engine torch` for development) and the
training, export, eval and bench commands are the build side and are not followed.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_ROOTS = [
    "perception.cli",
    *(f"perception.commands.{c}" for c in ("run", "listen", "record", "replay", "view", "demo", "launch", "keys", "inspect")),
    *(f"perception.engines.{e}" for e in ("ort", "openvino", "auto", "tensorrt")),
]
#: The build side: reachable only by an explicit choice (a training command, --engine torch).
NOT_FOLLOWED = {
    "perception.engines.torch",
    *(f"perception.commands.{c}" for c in ("train", "eval", "export", "bench", "synth")),
}
FORBIDDEN = ("torch", "torchvision", "perception.export", "perception.bench", "perception.training", "perception.models")


#: Packages installed from folders outside perception/ (pyproject's package-dir).
PACKAGE_DIRS = {"perception.export": ROOT / "export", "perception.bench": ROOT / "bench"}


def module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for package, folder in PACKAGE_DIRS.items():
        if name == package or name.startswith(package + "."):
            base = folder.joinpath(*name[len(package) + 1:].split(".")) if name != package else folder
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(name: str, path: Path) -> set[str]:
    """Every module ``path`` imports anywhere in its body (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base]) if base else ".".join(parts)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def runtime_graph() -> dict[str, set[str]]:
    """{runtime module: its imports}, following perception modules from RUNTIME_ROOTS."""
    graph: dict[str, set[str]] = {}
    todo = list(RUNTIME_ROOTS)
    while todo:
        name = todo.pop()
        if name in graph or name in NOT_FOLLOWED:
            continue
        path = module_file(name)
        if path is None:
            continue
        graph[name] = imports_of(name, path)
        todo.extend(i for i in graph[name] if i.startswith("perception") and module_file(i) is not None)
    return graph


def forbidden(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN)


def test_runtime_imports_nothing_from_the_build_side():
    graph = runtime_graph()
    assert len(graph) > 30, sorted(graph)  # the walk really covers the runtime
    bad = sorted(f"{m} imports {i}" for m, imports in graph.items() for i in imports if forbidden(i))
    assert not bad, "the runtime reaches the build side:\n" + "\n".join(bad)


def test_the_check_sees_a_lazy_import(tmp_path, monkeypatch):
    """A function-level import counts as much as a module-level one."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text("def f():\n    from perception.export.onnx import x\n    import torch\n")
    found = imports_of("pkg.mod", package / "mod.py")
    assert {"perception.export.onnx", "torch"} <= found


def test_node_start_up_leaves_out_yaml_and_asyncio():
    """What `perception run` imports before its first mask (without --config and CURVE) holds
    neither PyYAML nor asyncio (pyzmq's authenticator): each cost tens of ms of start-up."""
    import subprocess
    import sys

    code = (
        "import sys; import perception.cli, perception.commands.run, perception.pipeline, perception.publish, "
        "perception.subscribe, perception.engines.ort, perception.engines.auto, perception.sources; "
        "print(','.join(m for m in ('yaml', 'asyncio', 'zmq.auth.thread') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", done.stdout


def test_an_ort_node_run_imports_no_other_engine(tiny_model_path, tmp_path, free_tcp_port):
    """A real `perception run` to its first mask, with ``--engine ort`` and with ``--engine auto``
    whose cached verdict is ONNX Runtime (loaded in line, warmed up beside the source), imports
    neither OpenVINO nor torch nor onnx, nor asyncio (PyYAML is left out: the synthetic camera's
    module imports it)."""
    import json
    import os
    import subprocess
    import sys

    from perception.engines.auto import Selection, cpu_candidates
    from perception.engines.base import EngineOptions
    from perception.engines.probe_cache import probe_key, write_cached

    options = EngineOptions(threads=1)
    key = probe_key(tiny_model_path, options, cpu_candidates(tiny_model_path, options))
    write_cached(Selection(engine="ort", precision="fp32", reason="test", key=key), tmp_path)
    env = {**os.environ, "PERCEPTION_PROBE_CACHE": str(tmp_path)}
    unwanted = ("openvino", "torch", "onnx", "asyncio")
    for engine in ("ort", "auto"):
        code = (
            "import sys\nfrom perception.cli import main\n"
            f"main(['-q', 'run', '--engine', {engine!r}, '--model', {str(tiny_model_path)!r}, '--threads', '1', "
            f"'--source', 'synthetic', '--width', '64', '--height', '48', '--max-frames', '1', "
            f"'--endpoint', 'tcp://127.0.0.1:{free_tcp_port}'])\n"
            f"print('imported:' + ','.join(m for m in {unwanted!r} if m in sys.modules))"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        lines = done.stdout.strip().splitlines()
        final = json.loads(lines[-2])
        assert final["published"] == 1, (engine, final)
        if engine == "auto":
            assert final["engine_selection"]["engine"] == "ort", final["engine_selection"]
        assert lines[-1] == "imported:", f"--engine {engine}: {lines[-1]}"
