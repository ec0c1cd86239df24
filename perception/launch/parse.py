"""Reading a launch file: entries, arguments, substitutions, includes and validation -> ``LaunchPlan``.

    plan = load_launch("launch/demo.yaml", parse_launch_arguments(["model:=m.onnx"]))

Everything is checked here, before any process starts; each error names the file, the node and
the key. The checks across the parsed nodes (two nodes that bind one address or write one file)
and ``--check``'s look at the files the nodes will open are ``perception.launch.checks``'s. The
file format is described in ``perception/launch/__init__.py``.
"""

from __future__ import annotations

import difflib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perception.config import bounds, cut, load_config, rename_old_keys, short
from perception.endpoints import check_endpoint, unbindable_host
from perception.errors import ConfigError, PublishError, why_not_a_file
from perception.flags import as_text
from perception.launch.checks import check_bound_endpoints, check_written_files
from perception.launch.flags import parameters_to_argv
from perception.launch.plan import NODE_KINDS, LaunchPlan, NodePlan
from perception.launch.substitute import MAX_ARG_BYTES, TextBudget, parse_scalar, substitute, var_names
from perception.yamlfile import read_yaml

log = logging.getLogger(__name__)

#: Node and argument names: letters, digits, "_", "-", "." (they prefix output lines and flags).
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
#: The longest node or argument name (a node's name prefixes every line of its output).
MAX_NAME_CHARS = 64
#: The most nodes one launch starts (each is a process), includes it reads in all (a file included
#: 10 times by each of 7 files that include each other 10 times is 10^6 includes), and entries
#: (arg, include, node) it reads in all, each include counted each time it is read.
MAX_NODES = 256
MAX_INCLUDES = 1000
MAX_ENTRIES = 10_000


# Launch-file entries (validated with load_config like every other config).
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


def parse_launch_arguments(items: list[str]) -> dict[str, Any]:
    """Turn ``["camera:=2", "namespace:=perception/rear"]`` into a dict of typed scalars.

    Raises ConfigError for an item without ``:=``.
    """
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not _NAME_RE.match(name):
            raise ConfigError(f"launch argument {short(item)} is not NAME:=VALUE (e.g. camera:=2)")
        if len(name) > MAX_NAME_CHARS:
            raise ConfigError(f"launch argument {short(name)}: a name holds at most {MAX_NAME_CHARS} characters")
        out[name] = parse_scalar(value)
    return out


@dataclass
class _Loading:
    """One launch being read: its nodes so far, and what its files and includes have cost (the caps)."""

    nodes: list[NodePlan] = field(default_factory=list)
    includes: int = 0
    entries: int = 0
    budget: TextBudget = field(default_factory=TextBudget)
    #: Each file read, by its resolved path: a file included many times is read and parsed once.
    docs: dict[Path, dict[str, Any]] = field(default_factory=dict)


def load_launch(path: str | Path, arguments: dict[str, Any] | None = None) -> LaunchPlan:
    """Read, resolve and validate a launch file; nothing is started.

    ``arguments`` are the ``NAME:=VALUE`` overrides of the top-level file's ``arg`` entries.
    Raises ConfigError naming the file, the node and the key for anything wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"launch file {path} {why_not_a_file(path)}; check the path (shipped ones are in launch/)")
    loading = _Loading()
    resolved = _load_file(path, dict(arguments or {}), loading, chain=())
    nodes = loading.nodes
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
    check_bound_endpoints(nodes)
    check_written_files(nodes)
    _warn_respawning_recorders(nodes)
    return LaunchPlan(file=path, arguments=resolved, nodes=tuple(nodes))


def _warn_respawning_recorders(nodes: list[NodePlan]) -> None:
    """A ``record`` node that ``respawn`` restarts finds its first run's files at its ``out``:
    without ``append`` (or ``overwrite``) the restart refuses them (exit 2, never restarted again)."""
    for node in nodes:
        if node.kind == "record" and node.respawn and node.parameters.get("append") is not True \
                and node.parameters.get("overwrite") is not True:
            log.warning("%s: node %r: a record node with respawn: true should set append: true (with split_duration "
                        "or split_size): restarted without it, it finds the files of its first run and exits 2, and "
                        "nothing more is recorded", node.source_file, node.name)


def _load_file(path: Path, given: dict[str, Any], loading: _Loading, chain: tuple[Path, ...]) -> dict[str, Any]:
    real = path.resolve()
    if real in chain:
        cycle = " -> ".join(str(p) for p in (*chain, real))
        raise ConfigError(f"{path}: include cycle {cycle}; remove one of the includes")
    doc = loading.docs.get(real)
    if doc is None:
        doc = loading.docs[real] = read_yaml(path)  # never changed below: substitution makes new values
    unknown = [k for k in doc if k != "launch"]
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {short(unknown[0])}; a launch file has one key, 'launch'")
    entries = doc.get("launch")
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'launch' must be a list of arg, include and node entries")

    loading.entries += len(entries)
    if loading.entries > MAX_ENTRIES:
        raise ConfigError(f"{path}: more than {MAX_ENTRIES:,} arg, include and node entries in all (this file and "
                          "the files it includes, each include read again each time); include fewer files")
    declared: dict[str, ArgEntry] = {}
    declared_at: dict[str, int] = {}
    values: dict[str, Any] = {}
    default_names = _default_names(entries)
    parsed: list[tuple[str, Any, str]] = []
    for index, item in enumerate(entries, start=1):
        where = f"{path}: entry {index}"
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(f"{where}: expected one of 'arg:', 'include:', 'node:' with a mapping below it")
        key, body = next(iter(item.items()))
        if key not in _ENTRY_TYPES:
            close = difflib.get_close_matches(str(key), list(_ENTRY_TYPES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown entry {short(key)}{hint}; known: arg, include, node")
        if key == "arg":
            # Arguments are declared before anything uses them, as in ROS 2 launch files.
            arg = load_config(ArgEntry, body, source=f"{where} (arg)")
            _check_name(arg.name, f"{where} (arg)")
            if arg.name in declared:  # the later default would win without a word
                raise ConfigError(f"{path}: arg {short(arg.name)} is declared twice (entries {declared_at[arg.name]} "
                                  f"and {index}); keep one")
            has_default = isinstance(body, dict) and "default" in body
            at_default = f"{path}: arg {short(arg.name)}: default"
            if has_default:  # a mistake in the file, whatever the command line gives
                _check_default_names(arg.name, arg.default, declared, default_names, at_default)
            # A default cannot read its own arg.
            below = _NotAbove(arg.name, default_names, declared)
            declared[arg.name], declared_at[arg.name] = arg, index
            if arg.name in given:  # NAME:=VALUE wins; its default is not evaluated (as in ROS 2)
                values[arg.name] = given[arg.name]
            elif has_default:
                # As ROS 2 launch does: a default may use $(env ...) and the arguments declared above it
                # (a name given by a substitution, $(var $(env X)), is checked here, once it is known).
                values[arg.name] = substitute(arg.default, values, declared, at_default, below, loading.budget)
        else:
            label = f"node {short(body.get('name'))}" if key == "node" and isinstance(body, dict) else key
            # Substitute now so a later 'arg' cannot change what an earlier entry saw.
            where = f"{path}: {label}"
            parsed.append((key, substitute(body, values, declared, where, budget=loading.budget), where))

    extra = [name for name in given if name not in declared]
    if extra:
        close = difflib.get_close_matches(extra[0], list(declared), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(declared) or "(none)"
        raise ConfigError(f"{path}: unknown launch argument {short(extra[0])}{hint}; declared: {known}")

    for key, body, where in parsed:
        if key == "include":
            loading.includes += 1
            if loading.includes > MAX_INCLUDES:
                raise ConfigError(f"{where}: more than {MAX_INCLUDES:,} includes in all (each file's includes counted "
                                  "each time that file is read); include fewer files")
            inc = load_config(IncludeEntry, body, source=where)
            target = Path(inc.file)
            if not target.is_absolute():
                target = path.parent / target
            if not target.is_file():
                raise ConfigError(f"{where}: file {short(inc.file)} {why_not_a_file(target)} (looked at {target}); check the path")
            _load_file(target, dict(inc.args), loading, chain=(*chain, real))
        else:
            if len(loading.nodes) >= MAX_NODES:
                raise ConfigError(f"{where}: more than {MAX_NODES} nodes in this launch, each a process; split it "
                                  "into several launches")
            loading.nodes.append(_resolve_node(load_config(NodeEntry, body, source=where), path))
    return values


def _check_name(name: str, where: str, quoted: bool = True) -> None:
    """ConfigError for a node or arg name that is not letters, digits, '_', '-', '.' or is longer
    than ``MAX_NAME_CHARS`` (``quoted``: the message quotes it; ``where`` names it already otherwise)."""
    name_is = f"name {short(name)}" if quoted else "name"
    if not _NAME_RE.match(name):
        raise ConfigError(f"{where}: {name_is} may hold letters, digits, '_', '-', '.'")
    if len(name) > MAX_NAME_CHARS:
        raise ConfigError(f"{where}: {name_is} is {len(name):,} characters long; a name holds at most "
                          f"{MAX_NAME_CHARS} (a node's name prefixes every line of its output)")


class _NotAbove:
    """The arguments of a file that an arg's default cannot read: the arg itself (``name``) and
    those declared below it (``declared`` holds the ones above it; ``file_args`` all of the file's)."""

    def __init__(self, name: str, file_args: dict[str, list[str]], declared: dict[str, ArgEntry]) -> None:
        self.name, self.file_args, self.declared = name, file_args, declared

    def __contains__(self, other: object) -> bool:
        return other == self.name or (other in self.file_args and other not in self.declared)


def _default_names(entries: list) -> dict[str, list[str]]:
    """Each ``arg`` of the file -> the argument names its ``default`` reads with ``$(var NAME)``
    (entries that are not well-formed args are left to the checks that name them)."""
    out: dict[str, list[str]] = {}
    for item in entries:
        body = item.get("arg") if isinstance(item, dict) and len(item) == 1 else None
        if isinstance(body, dict) and isinstance(body.get("name"), str):
            out.setdefault(body["name"], []).extend(var_names(body.get("default")))
    return out


def _check_default_names(name: str, default: Any, above: dict[str, ArgEntry], graph: dict[str, list[str]],
                         where: str) -> None:
    """ConfigError for a ``$(var X)`` in arg ``name``'s default that X cannot fill: X declared below
    (or ``name`` itself, or in a cycle of defaults), or declared nowhere."""
    for ref in var_names(default):
        if ref in above:
            continue
        if ref not in graph:
            raise ConfigError(f"{where}: $(var {cut(ref)}) names no declared argument; add an 'arg' entry for it above")
        cycle = _default_cycle(name, ref, graph)
        if cycle:
            raise ConfigError(f"{where}: $(var {cut(ref)}) makes a cycle of defaults ({cut(' -> '.join(cycle), 200)}), "
                              "so none of them has a value; give one of them a plain default (an arg default may use "
                              "only the arguments declared above it)")
        raise ConfigError(f"{where}: $(var {cut(ref)}) names argument {short(ref)}, which is declared below it; an arg "
                          f"default may use only the arguments declared above it: move the {short(ref)} arg up")


def _default_cycle(name: str, ref: str, graph: dict[str, list[str]]) -> list[str] | None:
    """``[name, ref, ..., name]`` when ``ref``'s default leads back to ``name`` through the defaults of
    ``graph``; else None."""
    stack, seen = [[name, ref]], set()
    while stack:
        chain = stack.pop()
        if chain[-1] == name:
            return chain
        if chain[-1] in seen:
            continue
        seen.add(chain[-1])
        stack.extend([*chain, nxt] for nxt in graph.get(chain[-1], ()) if nxt in graph)
    return None


#: Linux's limit on all command-line arguments (ARG_MAX, 2 MiB by default, which the environment
#: shares), a share of it; on one, MAX_ARG_BYTES (``substitute``, which stops a longer value).
MAX_ARGV_BYTES = 1024 * 1024


def _resolve_node(entry: NodeEntry, path: Path) -> NodePlan:
    where = f"{path}: node {short(entry.name)}"
    _check_name(entry.name, where, quoted=False)
    if entry.kind not in NODE_KINDS:
        raise ConfigError(f"{where}: kind: {NODE_KINDS.unknown_message(entry.kind)}")
    kind = NODE_KINDS.get(entry.kind)
    argv = tuple(parameters_to_argv(kind.command, kind.config_class(), entry.parameters, where))
    _check_node_endpoint(entry.parameters.get("endpoint"), kind.binds, f"{where}: parameters: endpoint")
    # Each node runs as its own process with these arguments: Linux refuses (E2BIG, at start, as a
    # traceback) one argument over 128 KiB or all of them over its total limit.
    longest = max((len(a.encode("utf-8", "surrogatepass")) for a in argv), default=0)
    total = sum(len(a.encode("utf-8", "surrogatepass")) + 1 for a in argv)
    if longest >= MAX_ARG_BYTES or total > MAX_ARGV_BYTES:
        raise ConfigError(f"{where}: its parameters make a command line the system refuses (an argument of "
                          f"{longest:,} bytes, {total:,} in all; at most {MAX_ARG_BYTES - 1:,} and {MAX_ARGV_BYTES:,}); "
                          "shorten the values")
    return NodePlan(
        name=entry.name,
        kind=entry.kind,
        command=kind.command,
        # Under the current names: the checks that load them again (``checks.check_node_files``)
        # do not repeat the deprecation warnings that ``parameters_to_argv`` gave.
        parameters=rename_old_keys(kind.config_class(), entry.parameters, source=where, warn=False),
        argv=argv,
        respawn=entry.respawn,
        respawn_delay_s=entry.respawn_delay,
        respawn_max=entry.respawn_max,
        required=entry.required,
        delay_s=entry.delay,
        source_file=path,
    )


def _check_node_endpoint(endpoint: Any, binds: bool, where: str) -> None:
    """The node's own endpoint check (``endpoints.check_endpoint``), run here so a malformed endpoint
    fails before anything starts: of any type, since the node reads its command line's text (a port
    number, ``endpoint: 5556`` or a whole-value ``$(var port)``, is no endpoint); for a publisher
    (``binds``), a host it cannot bind on this machine (``endpoints.unbindable_host``: ``localhost.``),
    and for a subscriber, which connects, a ``*`` host or port (a bind's: a record node that copied
    the pipeline's ``tcp://*:5556``)."""
    if endpoint is None:
        return
    if isinstance(endpoint, int) and not isinstance(endpoint, bool) and 0 < endpoint < 65536:
        raise ConfigError(f"{where}: {endpoint} is a port number, not an endpoint; give the whole endpoint, e.g. "
                          f"tcp://127.0.0.1:{endpoint}")
    try:
        host = check_endpoint(endpoint if isinstance(endpoint, str) else as_text(endpoint), connect=not binds)
    except PublishError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    problem = unbindable_host(host) if binds and host is not None else None
    if problem is not None:
        raise ConfigError(f"{where}: cannot bind {endpoint}: {problem}")
