"""Launch files: several nodes described as data, validated up front, started and supervised together.

A launch file is YAML in the spirit of ROS 2 launch files::

    launch:
      - arg: {name: camera, default: 0, description: V4L2 device index}
      - include: {file: common.yaml, args: {endpoint: "tcp://127.0.0.1:5560"}}
      - node:
          name: front                 # unique; output lines are prefixed "[front]"
          kind: pipeline              # pipeline (= perception run), record, replay, view, listen
          parameters:                 # the same names and checks as the command's flags
            source: "camera:$(var camera)"
            model: perception/assets/default.onnx
          respawn: true               # restart when it exits ...
          respawn_delay: 1.0          # ... after this many seconds, doubled per quick failure (max 30 s)
          respawn_max: 0              # give up after this many restarts (0: never give up)
          required: true              # when it is gone for good, stop everything
          delay: 0.0                  # start this many seconds after the launch (e.g. after a recorder)

``$(var NAME)`` is replaced by a launch argument (``perception launch FILE NAME:=VALUE`` or the
``default``), ``$(env NAME [DEFAULT])`` by an environment variable. A value that is exactly one
substitution keeps the argument's type (``fps: $(var fps)`` stays a number); inside a longer string
it is spliced in as text.

Everything is checked before any process starts: unknown keys, unknown node kinds, missing
arguments, bad parameter values (``pipeline`` parameters against ``RunConfig`` through
``perception.config.load_config``, the other kinds against their own config dataclasses, and every
kind against its command's own argument parser), missing include files. Each error names the file,
the node and the key.

``LaunchSupervisor(plan).run()`` starts each node as ``python -m perception <command> ...``,
prefixes its output lines with ``[name]``, restarts nodes per their policy and stops everything on
SIGINT/SIGTERM (SIGTERM to every child, a grace period, then SIGKILL), returning 0; when a required
node is gone for good it stops the rest and returns 1 (0 if that node finished cleanly).

Run: ``perception launch launch/demo.yaml model:=m.onnx`` (``--check`` prints the plan and exits).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from perception.config import bounds, load_config, read_yaml
from perception.errors import ConfigError
from perception.registry import Registry

#: A node restarted this many times in a row without staying up this long has its delay doubled.
STABLE_RUN_S = 10.0
#: Upper bound of the doubled respawn delay (unless respawn_delay itself is larger).
MAX_BACKOFF_S = 30.0
#: How long stopping waits for children after SIGTERM before it sends SIGKILL.
STOP_GRACE_S = 5.0

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_SUBST_RE = re.compile(r"\$\((\w+)((?:\s+[^()\s]+)*)\s*\)")


# --------------------------------------------------------------------------------------------
# Node kinds
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeKind:
    """A kind of node: the ``perception`` subcommand it runs and the dataclass its parameters fill.

    ``config_class`` returns the dataclass (imported lazily, so validating a ``view`` node never
    imports the pipeline); None means the command's argument parser is the only check.
    """

    command: str
    config_class: Callable[[], type] | None


def _attr(module: str, name: str) -> Callable[[], type]:
    return lambda: getattr(importlib.import_module(module), name)


NODE_KINDS: Registry[NodeKind] = Registry("node kind")
NODE_KINDS.register("pipeline")(NodeKind("run", _attr("perception.pipeline", "RunConfig")))
NODE_KINDS.register("record")(NodeKind("record", _attr("perception.record", "RecordConfig")))
NODE_KINDS.register("replay")(NodeKind("replay", _attr("perception.replay", "ReplayConfig")))
NODE_KINDS.register("view")(NodeKind("view", _attr("perception.view", "ViewConfig")))
NODE_KINDS.register("listen")(NodeKind("listen", None))


# --------------------------------------------------------------------------------------------
# Launch-file entries (validated with load_config like every other config)
# --------------------------------------------------------------------------------------------


@dataclass
class ArgEntry:
    name: str
    default: Any = None
    description: str = ""


@dataclass
class IncludeEntry:
    file: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class NodeEntry:
    name: str
    kind: str
    parameters: dict[str, Any] = field(default_factory=dict)
    respawn: bool = False
    respawn_delay: float = field(default=1.0, metadata=bounds(0.0, 3600.0))
    respawn_max: int = field(default=0, metadata=bounds(0, None))
    required: bool = False
    delay: float = field(default=0.0, metadata=bounds(0.0, 3600.0))


_ENTRY_TYPES = {"arg": ArgEntry, "include": IncludeEntry, "node": NodeEntry}


@dataclass(frozen=True)
class NodePlan:
    """One resolved node: what runs, with which validated parameters, and its restart policy."""

    name: str
    kind: str
    command: str
    parameters: dict[str, Any]
    argv: tuple[str, ...]
    respawn: bool
    respawn_delay_s: float
    respawn_max: int
    required: bool
    delay_s: float
    source_file: Path

    def command_line(self) -> list[str]:
        return [sys.executable, "-m", "perception", self.command, *self.argv]


@dataclass(frozen=True)
class LaunchPlan:
    file: Path
    arguments: dict[str, Any]
    nodes: tuple[NodePlan, ...]


# --------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------


def parse_launch_arguments(items: list[str]) -> dict[str, Any]:
    """Turn ``["camera:=2", "namespace:=perception/rear"]`` into a dict of typed scalars.

    Raises ConfigError for an item without ``:=``.
    """
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not _NAME_RE.match(name):
            raise ConfigError(f"launch argument {item!r} is not NAME:=VALUE (e.g. camera:=2)")
        out[name] = _parse_scalar(value)
    return out


def _parse_scalar(text: str) -> Any:
    # Deliberately narrower than YAML (where "on" or "no" would become booleans): ints, floats,
    # true/false, everything else a string.
    if text in ("true", "false"):
        return text == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def load_launch(path: str | Path, arguments: dict[str, Any] | None = None) -> LaunchPlan:
    """Read, resolve and validate a launch file; nothing is started.

    ``arguments`` are the ``NAME:=VALUE`` overrides of the top-level file's ``arg`` entries.
    Raises ConfigError naming the file, the node and the key for anything wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"launch file {path} not found; check the path (shipped ones are in launch/)")
    nodes: list[NodePlan] = []
    resolved = _load_file(path, dict(arguments or {}), nodes, chain=())
    seen: dict[str, Path] = {}
    for node in nodes:
        if node.name in seen:
            raise ConfigError(
                f"{node.source_file}: node {node.name!r}: name already used by a node in {seen[node.name]}; "
                "node names must be unique"
            )
        seen[node.name] = node.source_file
    if not nodes:
        raise ConfigError(f"{path}: no nodes to launch; add a 'node' entry")
    return LaunchPlan(file=path, arguments=resolved, nodes=tuple(nodes))


def _load_file(path: Path, given: dict[str, Any], nodes: list[NodePlan], chain: tuple[Path, ...]) -> dict[str, Any]:
    real = path.resolve()
    if real in chain:
        cycle = " -> ".join(str(p) for p in (*chain, real))
        raise ConfigError(f"{path}: include cycle {cycle}; remove one of the includes")
    doc = read_yaml(path)
    unknown = [k for k in doc if k != "launch"]
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {unknown[0]!r}; a launch file has one key, 'launch'")
    entries = doc.get("launch")
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'launch' must be a list of arg, include and node entries")

    declared: dict[str, ArgEntry] = {}
    values: dict[str, Any] = {}
    parsed: list[tuple[str, Any, str]] = []
    for index, item in enumerate(entries, start=1):
        where = f"{path}: entry {index}"
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(f"{where}: expected one of 'arg:', 'include:', 'node:' with a mapping below it")
        key, body = next(iter(item.items()))
        if key not in _ENTRY_TYPES:
            close = difflib.get_close_matches(str(key), list(_ENTRY_TYPES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown entry {key!r}{hint}; known: arg, include, node")
        if key == "arg":
            # Arguments are declared before anything uses them, as in ROS 2 launch files.
            arg = load_config(ArgEntry, body, source=f"{where} (arg)")
            if not _NAME_RE.match(arg.name):
                raise ConfigError(f"{where} (arg): name {arg.name!r} may hold letters, digits, '_', '-', '.'")
            declared[arg.name] = arg
            if arg.name in given:
                values[arg.name] = given[arg.name]
            elif isinstance(body, dict) and "default" in body:
                values[arg.name] = arg.default
        else:
            label = f"node {body.get('name')!r}" if key == "node" and isinstance(body, dict) else key
            # Substitute now so a later 'arg' cannot change what an earlier entry saw.
            where = f"{path}: {label}"
            parsed.append((key, _substitute(body, values, declared, where), where))

    extra = [name for name in given if name not in declared]
    if extra:
        close = difflib.get_close_matches(extra[0], list(declared), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(declared) or "(none)"
        raise ConfigError(f"{path}: unknown launch argument {extra[0]!r}{hint}; declared: {known}")

    for key, body, where in parsed:
        if key == "include":
            inc = load_config(IncludeEntry, body, source=where)
            target = Path(inc.file)
            if not target.is_absolute():
                target = path.parent / target
            if not target.is_file():
                raise ConfigError(f"{where}: file {inc.file!r} not found (looked at {target}); check the path")
            _load_file(target, dict(inc.args), nodes, chain=(*chain, real))
        else:
            nodes.append(_resolve_node(load_config(NodeEntry, body, source=where), path))
    return values


def _substitute(value: Any, values: dict[str, Any], declared: dict[str, ArgEntry], where: str) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, values, declared, f"{where}: {k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, values, declared, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "$(" not in value:
        return value

    def lookup(match: re.Match[str]) -> Any:
        kind, words = match.group(1), match.group(2).split()
        if kind == "var" and len(words) == 1:
            name = words[0]
            if name in values:
                return values[name]
            if name in declared:
                raise ConfigError(f"{where}: missing launch argument {name!r}; pass {name}:=VALUE or give it a default")
            raise ConfigError(f"{where}: $(var {name}) names no declared argument; add an 'arg' entry for it above")
        if kind == "env" and len(words) in (1, 2):
            if words[0] in os.environ:
                return os.environ[words[0]]
            if len(words) == 2:
                return _parse_scalar(words[1])
            raise ConfigError(f"{where}: environment variable {words[0]!r} is not set; set it or add a default")
        raise ConfigError(f"{where}: bad substitution {match.group(0)!r}; known: $(var NAME), $(env NAME [DEFAULT])")

    whole = _SUBST_RE.fullmatch(value.strip())
    if whole:
        return lookup(whole)
    text = _SUBST_RE.sub(lambda m: _as_text(lookup(m)), value)
    if "$(" in text:
        raise ConfigError(f"{where}: unfinished substitution in {value!r}; write $(var NAME)")
    return text


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _resolve_node(entry: NodeEntry, path: Path) -> NodePlan:
    where = f"{path}: node {entry.name!r}"
    if not _NAME_RE.match(entry.name):
        raise ConfigError(f"{where}: name may hold letters, digits, '_', '-', '.'")
    if entry.kind not in NODE_KINDS:
        raise ConfigError(f"{where}: kind: {NODE_KINDS.unknown_message(entry.kind)}")
    kind = NODE_KINDS.get(entry.kind)
    if kind.config_class is not None:
        load_config(kind.config_class(), entry.parameters, source=f"{where}: parameters")
    argv = tuple(_parameters_to_argv(kind.command, entry.parameters, where))
    return NodePlan(
        name=entry.name,
        kind=entry.kind,
        command=kind.command,
        parameters=dict(entry.parameters),
        argv=argv,
        respawn=entry.respawn,
        respawn_delay_s=entry.respawn_delay,
        respawn_max=entry.respawn_max,
        required=entry.required,
        delay_s=entry.delay,
        source_file=path,
    )


class _CheckingParser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing usage and exiting."""

    def error(self, message: str):  # noqa: D102 - argparse hook
        raise ConfigError(message)


def _command_parser(command: str) -> argparse.ArgumentParser:
    module = importlib.import_module(f"perception.commands.{command}")
    parser = _CheckingParser(prog=f"perception {command}", add_help=False)
    module.add_arguments(parser)
    return parser


def _parameters_to_argv(command: str, parameters: dict[str, Any], where: str) -> list[str]:
    """Turn validated parameters into the command's flags and check them with its own parser.

    A parameter ``foo_bar`` is the flag whose argparse ``dest`` is ``foo_bar``. argparse offers no
    public way to list a parser's arguments, so this reads ``parser._actions`` (stable for years).
    """
    parser = _command_parser(command)
    actions = {a.dest: a for a in parser._actions if a.dest != argparse.SUPPRESS}
    argv: list[str] = []
    positional: list[str] = []
    for name, value in parameters.items():
        action = actions.get(name)
        if action is None:
            known = [d for d in actions if d != "help"]
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
            raise ConfigError(f"{where}: parameters: unknown key {name!r}{hint}")
        flag = action.option_strings[-1] if action.option_strings else None
        key = f"{where}: parameters: {name}"
        if isinstance(action, argparse.BooleanOptionalAction):
            if not isinstance(value, bool):
                raise ConfigError(f"{key}: expected true or false, got {value!r}")
            long_flags = [s for s in action.option_strings if s.startswith("--")]
            argv.append(long_flags[0] if value else f"--no-{long_flags[0][2:]}")
        elif isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if not isinstance(value, bool):
                raise ConfigError(f"{key}: expected true or false, got {value!r}")
            if value == action.const:
                argv.append(flag)
            # otherwise leaving the flag out gives the command's own default for this switch
        elif isinstance(value, dict) and isinstance(action, argparse._AppendAction):
            # NAME=VALUE flags such as --encoding drivable=bitpack or --task obstacle=car,pedestrian
            for k, v in value.items():
                text = ",".join(_as_text(x) for x in v) if isinstance(v, (list, tuple)) else _as_text(v)
                argv += [flag, f"{k}={text}"]
        elif isinstance(value, (list, tuple)):
            words = [_as_text(v) for v in value]
            if isinstance(action, argparse._AppendAction):
                for word in words:
                    argv += [flag, word]
            elif flag is None:
                positional += words
            else:
                argv += [flag, *words]
        elif value is None:
            continue
        elif flag is None:
            positional.append(_as_text(value))
        else:
            argv += [flag, _as_text(value)]
    full = argv + (["--", *positional] if positional else [])
    try:
        parser.parse_args(full)
    except ConfigError as exc:
        raise ConfigError(f"{where}: parameters: {exc}") from None
    return full


def format_plan(plan: LaunchPlan) -> str:
    """The resolved plan as text: arguments, then each node's policy and exact command line."""
    lines = [f"launch plan: {plan.file} ({len(plan.nodes)} node{'s' if len(plan.nodes) != 1 else ''})"]
    if plan.arguments:
        lines.append("  arguments: " + ", ".join(f"{k}={'(unset)' if v is None else _as_text(v)}" for k, v in plan.arguments.items()))
    for node in plan.nodes:
        policy = "no respawn"
        if node.respawn:
            limit = "unlimited" if node.respawn_max == 0 else f"max {node.respawn_max}"
            policy = f"respawn after {node.respawn_delay_s:g} s ({limit})"
        required = ", required" if node.required else ""
        delay = f", starts after {node.delay_s:g} s" if node.delay_s else ""
        lines.append(f"  [{node.name}] {node.kind}: {policy}{required}{delay}")
        lines.append(f"      perception {node.command} {' '.join(_quote(a) for a in node.argv)}".rstrip())
    return "\n".join(lines)


def _quote(word: str) -> str:
    return word if word and re.fullmatch(r"[\w@%+=:,./-]+", word) else repr(word)


# --------------------------------------------------------------------------------------------
# Supervision
# --------------------------------------------------------------------------------------------


@dataclass
class _Running:
    plan: NodePlan
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    quick_failures: int = 0
    restart_at: float | None = None
    finished: bool = False
    returncode: int | None = None
    readers: list[threading.Thread] = dataclasses.field(default_factory=list)


class LaunchSupervisor:
    """Starts the nodes of a plan as child processes and keeps them running per their policy.

    ``run()`` blocks until SIGINT/SIGTERM (returns 0), until a required node is gone for good
    (returns its failure as 1, or 0 when it exited cleanly), or until every node has finished
    (0 when all exited 0, else 1). ``stop()`` may be called from another thread.
    """

    def __init__(self, plan: LaunchPlan, *, out: IO[str] | None = None, err: IO[str] | None = None) -> None:
        self.plan = plan
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._nodes = [_Running(plan=n) for n in plan.nodes]

    def stop(self) -> None:
        self._stop.set()

    def say(self, text: str) -> None:
        self._write(self._out, f"[launch] {text}\n")

    def run(self) -> int:
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: self._stop.set())
        try:
            return self._supervise()
        finally:
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _supervise(self) -> int:
        t0 = time.monotonic()
        for node in self._nodes:
            node.restart_at = t0 + node.plan.delay_s
        while not self._stop.wait(0.05):
            now = time.monotonic()
            for node in self._nodes:
                if node.process is not None and node.process.poll() is not None:
                    verdict = self._on_exit(node, now)
                    if verdict is not None:
                        return verdict
                if node.restart_at is not None and now >= node.restart_at:
                    node.restart_at = None
                    node.restarts += node.started_at > 0
                    self._start(node)
            if all(n.finished for n in self._nodes):
                failed = [n.plan.name for n in self._nodes if n.returncode != 0]
                self.say("all nodes finished" + (f"; failed: {', '.join(failed)}" if failed else ""))
                return 1 if failed else 0
        self.say("stop requested; stopping all nodes")
        return 0

    def _start(self, node: _Running) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # Own session per child: a Ctrl-C in the terminal reaches only the launcher, which then
        # stops the children in order instead of every process racing to exit at once.
        node.process = subprocess.Popen(
            node.plan.command_line(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        node.started_at = time.monotonic()
        node.readers = [
            threading.Thread(target=self._pump, args=(node.process.stdout, self._out, node.plan.name), daemon=True),
            threading.Thread(target=self._pump, args=(node.process.stderr, self._err, node.plan.name), daemon=True),
        ]
        for reader in node.readers:
            reader.start()
        again = f" (restart {node.restarts})" if node.restarts else ""
        self.say(f"started node {node.plan.name!r} (pid {node.process.pid}){again}")

    def _on_exit(self, node: _Running, now: float) -> int | None:
        code = node.process.returncode
        node.returncode = code
        node.process = None
        for reader in node.readers:
            reader.join(timeout=1.0)
        how = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
        plan = node.plan
        if plan.respawn and (plan.respawn_max == 0 or node.restarts < plan.respawn_max):
            node.quick_failures = node.quick_failures + 1 if now - node.started_at < STABLE_RUN_S else 0
            cap = max(MAX_BACKOFF_S, plan.respawn_delay_s)
            delay = min(cap, plan.respawn_delay_s * 2 ** max(0, node.quick_failures - 1))
            node.restart_at = now + delay
            self.say(f"node {plan.name!r} ended ({how}); restarting in {delay:g} s")
            return None
        node.finished = True
        gave_up = f"; gave up after {node.restarts} restarts" if plan.respawn else ""
        self.say(f"node {plan.name!r} ended ({how}){gave_up}")
        if plan.required:
            self.say(f"required node {plan.name!r} is gone; stopping all nodes")
            return 0 if code == 0 else 1
        return None

    def _shutdown(self) -> None:
        running = [n for n in self._nodes if n.process is not None and n.process.poll() is None]
        for node in running:
            node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for node in running:
            try:
                node.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"node {node.plan.name!r} did not stop within {STOP_GRACE_S:g} s; killing it")
                node.process.kill()
                node.process.wait()
        for node in self._nodes:
            for reader in node.readers:
                reader.join(timeout=1.0)

    def _pump(self, stream: IO[bytes], sink: IO[str], name: str) -> None:
        for raw in iter(stream.readline, b""):
            self._write(sink, f"[{name}] {raw.decode('utf-8', 'replace').rstrip()}\n")
        stream.close()

    def _write(self, sink: IO[str], text: str) -> None:
        with self._lock:
            sink.write(text)
            sink.flush()


def config_from_args(cls: type, args: argparse.Namespace, *, command: str) -> Any:
    """Build a command's config dataclass from its parsed flags, with the same checks as launch files.

    Flags left at None are left out so the dataclass defaults apply. Raises ConfigError naming the
    command and the key.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    data = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return load_config(cls, data, source=f"perception {command}")
