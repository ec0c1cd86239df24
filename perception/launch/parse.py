"""Reading a launch file: entries, arguments, substitutions, includes and validation -> ``LaunchPlan``.

    plan = load_launch("launch/demo.yaml", parse_launch_arguments(["model:=m.onnx"]))
    check_node_files(plan)   # perception launch FILE --check: the files the nodes will open exist

Everything is checked here, before any process starts; each error names the file, the node and
the key. The file format is described in ``perception/launch/__init__.py``.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from perception.config import bounds, cut, load_config, short
from perception.config import declared as declared_settings
from perception.endpoints import canonical_bind_host, check_endpoint, unbindable_host
from perception.errors import ConfigError, ModelError, PerceptionError, PublishError, why_not_a_file
from perception.flags import as_text
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
    _check_bound_endpoints(nodes)
    _check_written_files(nodes)
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
        parameters=dict(entry.parameters),
        argv=argv,
        respawn=entry.respawn,
        respawn_delay_s=entry.respawn_delay,
        respawn_max=entry.respawn_max,
        required=entry.required,
        delay_s=entry.delay,
        source_file=path,
    )


#: A TCP endpoint as the nodes bind it (``perception.xpub`` checks the form itself when it binds).
_TCP_RE = re.compile(r"^tcp://(?P<host>\[[^\]]*\]|[^:/\[\]]+):(?P<port>\d+|\*)$")


def _check_node_endpoint(endpoint: Any, binds: bool, where: str) -> None:
    """The node's own endpoint check (``endpoints.check_endpoint``), run here so a malformed endpoint
    fails before anything starts: of any type, since the node reads its command line's text (a port
    number, ``endpoint: 5556`` or a whole-value ``$(var port)``, is no endpoint); and for a publisher
    (``binds``), a host it cannot bind on this machine (``endpoints.unbindable_host``: ``localhost.``)."""
    if endpoint is None:
        return
    if isinstance(endpoint, int) and not isinstance(endpoint, bool) and 0 < endpoint < 65536:
        raise ConfigError(f"{where}: {endpoint} is a port number, not an endpoint; give the whole endpoint, e.g. "
                          f"tcp://127.0.0.1:{endpoint}")
    try:
        host = check_endpoint(endpoint if isinstance(endpoint, str) else as_text(endpoint))
    except PublishError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    problem = unbindable_host(host) if binds and host is not None else None
    if problem is not None:
        raise ConfigError(f"{where}: cannot bind {endpoint}: {problem}")


def _bound_endpoint(node: NodePlan) -> tuple[str, str] | None:
    """The endpoint a publishing node (``NodeKind.binds``) binds, its ``endpoint`` or the kind's
    default, and how a message shows it; None for a node that binds nothing."""
    kind = NODE_KINDS.get(node.kind)
    if not kind.binds:
        return None
    if "endpoint" in node.parameters:
        value = node.parameters["endpoint"]
        return (value, value) if isinstance(value, str) else None
    value = next((d.field.default for d in declared_settings(kind.config_class()) if d.field.name == "endpoint"), None)
    return (value, f"{value} (the default)") if isinstance(value, str) else None


def _bind_address(endpoint: str) -> tuple[str, str, int] | None:
    """``(transport, host or path, port)`` in one spelling per address (``localhost`` and ``lo`` are
    127.0.0.1, ``*`` is 0.0.0.0: ``endpoints.canonical_bind_host``; an ipc path absolute); None for a wildcard port or path (any free one, which
    never clashes) or a form the node itself refuses."""
    tcp = _TCP_RE.match(endpoint)
    if tcp is not None:
        if tcp.group("port") == "*":
            return None
        return "tcp", canonical_bind_host(tcp.group("host")), int(tcp.group("port"))
    if endpoint.startswith("ipc://") and endpoint[len("ipc://"):] not in ("", "*"):
        where = endpoint[len("ipc://"):]
        # The nodes run in the launcher's directory; "@name" is Linux's abstract namespace, not a file.
        return "ipc", where if where.startswith("@") else os.path.normpath(os.path.abspath(where)), 0
    return None


def _same_address(a: tuple[str, str, int], b: tuple[str, str, int]) -> bool:
    """True when binding ``b`` fails while ``a`` is bound: the same address, or a wildcard host and
    another on the same port (0.0.0.0 covers every IPv4 address; ``::`` every address, IPv4 too,
    since an IPv6 socket takes IPv4 as well)."""
    if a[0] != b[0] or a[2] != b[2]:
        return False
    if a[1] == b[1]:
        return True
    if a[0] != "tcp":
        return False
    hosts = {a[1], b[1]}
    if "::" in hosts:
        return True
    if "0.0.0.0" in hosts:
        (other,) = hosts - {"0.0.0.0"}
        return ":" not in other  # an IPv6 address is another family
    return False


def _check_bound_endpoints(nodes: list[NodePlan]) -> None:
    """ConfigError naming both nodes when two publishing nodes bind one address: the second would fail
    with "address already in use" only when it starts. Subscribers (record, view, listen) connect and
    may share an endpoint; a ``tcp://HOST:*`` endpoint takes any free port and never clashes."""
    bound: list[tuple[NodePlan, str, tuple[str, str, int]]] = []
    for node in nodes:
        bound_here = _bound_endpoint(node)
        address = _bind_address(bound_here[0]) if bound_here is not None else None
        if address is None:
            continue
        endpoint = bound_here[1]
        for other, other_endpoint, other_address in bound:
            if not _same_address(other_address, address):
                continue
            where = str(node.source_file) if node.source_file == other.source_file else \
                f"{node.source_file} (and {other.source_file})"
            if other_endpoint == endpoint:
                what = f"nodes {other.name!r} and {node.name!r} both bind endpoint {endpoint}"
            else:
                what = f"nodes {other.name!r} ({other_endpoint}) and {node.name!r} ({endpoint}) bind the same address"
            fix = "another port" if address[0] == "tcp" else "another ipc:// path"
            raise ConfigError(f"{where}: {what}; only one process can bind it (the second would fail with 'address "
                              f"already in use'): give one of them {fix} (subscribers such as record, view and listen "
                              "may share one)")
        bound.append((node, endpoint, address))


#: Where a ``view`` node without ``out`` writes when no display is set (``sinks.DEFAULT_VIEW_OUT``,
#: not imported: reading a launch file must not import OpenCV).
_DEFAULT_VIEW_OUT = "out/view.mp4"


@dataclass(frozen=True)
class _Written:
    """A file or folder a node writes (``_written_by``), resolved as the node will open it (the nodes
    run in the launcher's folder; symbolic links followed)."""

    node: NodePlan
    key: str  # its parameter
    given: str  # as the launch file gives it
    path: str  # resolved
    folder: Any  # the folder's identity: (device, inode) when it exists, else its resolved path
    name: str
    #: A recording: ``record`` writes, refuses to start over, or with ``overwrite`` removes, the splits
    #: ``<stem>_0.mcap``, ``<stem>_1.mcap``, ... of its ``out`` too (``mcap_layout.split_path``).
    splits: bool


def _written_by(node: NodePlan) -> list[_Written]:
    """The files and folders a node writes: a ``record`` node's ``out`` (and its splits), a ``view``
    node's ``out`` (``out/view.mp4`` when it has none and no display is set, as ``view`` falls back),
    a ``listen`` node's ``save_dir``."""
    key = {"record": "out", "view": "out", "listen": "save_dir"}.get(node.kind)
    if key is None:
        return []
    value = node.parameters.get(key)
    given = value if isinstance(value, str) else as_text(value) if value is not None else ""
    if value is None and node.kind == "view" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        value, given = _DEFAULT_VIEW_OUT, f"{_DEFAULT_VIEW_OUT} (the default, with no display)"
    if value is None or not given:
        return []
    path = os.path.realpath(value if isinstance(value, str) else as_text(value))
    folder_path, name = os.path.split(path)
    try:
        info = os.stat(folder_path)
        folder: Any = (info.st_dev, info.st_ino)  # one folder however it is reached (a bind mount too)
    except OSError:  # not there yet: made by the node
        folder = folder_path
    return [_Written(node, key, given, path, folder, name, splits=node.kind == "record")]


def _split_family(name: str) -> tuple[str, str]:
    """``(stem, suffix)`` of the splits of a recording named ``name``: ``run.mcap`` and ``run`` both
    write ``run_0.mcap``, ``run_1.mcap``, ..."""
    pure = PurePath(name)
    return pure.stem, pure.suffix or ".mcap"


def _shared_file(a: _Written, b: _Written) -> tuple[str, _Written | None] | None:
    """The file both ``a`` and ``b`` write, and the recorder whose split it is (None when it is
    both's ``out``); None when they write none in common."""
    if a.folder != b.folder:
        return None
    if a.name == b.name:
        return a.path, None
    for rec, other in ((a, b), (b, a)):
        stem, suffix = _split_family(rec.name)
        if rec.splits and re.fullmatch(re.escape(stem) + r"_[0-9]+" + re.escape(suffix), other.name):
            return other.path, rec
    if a.splits and b.splits and _split_family(a.name) == _split_family(b.name):
        stem, suffix = _split_family(a.name)
        return os.path.join(os.path.dirname(a.path), f"{stem}_0{suffix}"), a
    return None


def _check_written_files(nodes: list[NodePlan]) -> None:
    """ConfigError naming both nodes when two nodes write one file or folder: two ``record`` nodes on
    one ``out`` (however it is spelt: ``./same.mcap``, through a linked folder), or one whose
    ``out`` is a split of the other's recording (``sp_0.mcap`` beside ``sp.mcap``); ``view`` outs
    and ``listen`` save folders too. Each would report success over a file the other destroyed."""
    written: list[_Written] = []
    for node in nodes:
        for this in _written_by(node):
            for other in written:
                shared = _shared_file(other, this)
                if shared is None:
                    continue
                path, recorder = shared
                where = str(node.source_file) if node.source_file == other.node.source_file else \
                    f"{node.source_file} (and {other.node.source_file})"
                split = ""
                if recorder is not None:
                    stem, suffix = _split_family(recorder.name)
                    split = (f" (a split {stem}_N{suffix} of the recording of {recorder.node.name!r}, which record "
                             "writes with split_duration or split_size, else refuses to start over or with overwrite "
                             "removes)")
                keys = this.key if this.key == other.key else f"{other.key} or {this.key}"
                raise ConfigError(
                    f"{where}: nodes {other.node.name!r} ({other.key}: {cut(other.given, 200)}) and {node.name!r} "
                    f"({this.key}: {cut(this.given, 200)}) both write {cut(path, 300)}{split}; one would destroy what "
                    f"the other writes while both report success: give one of them another {keys}")
            written.append(this)


def check_node_files(plan: LaunchPlan) -> None:
    """Check that the files ``pipeline`` and ``replay`` nodes will open are there and readable,
    starting nothing (a ``replay`` node: ``_check_replay_node``).

    The ``model`` (the shipped default when unset; an ``.onnx`` file also through
    ``read_model_metadata``, as the engines read it) and a ``source`` that is a video file, an
    image file or an image folder (opened and closed as the node would). Cameras, URLs, GStreamer
    pipelines, glob patterns and ``synthetic`` are left alone: they may come up after the check.
    Its CURVE key files (``curve_secret_key``, the ``curve_allow`` folder), read as the node reads
    them at its start. With ``per_class_obstacles``, the model's obstacle classes as topics, as the
    node checks them (``_check_per_class_topics``). Torch-free (``perception launch --check`` runs
    on the car).

    Raises:
        ModelError, SourceError, PublishError, ConfigError: naming the launch file, the node and the key.
    """
    # Imported here: reading a launch file must stay light (no ONNX, no OpenCV) for the plain launch.
    from perception import run_config
    from perception.commands.run import check_source_settings
    from perception.modelfile import read_model_metadata
    from perception.sources import open_source, source_kind
    from perception.sources.images import is_glob_spec

    made_here = _recorded_here(plan)
    for node in plan.nodes:
        if node.kind == "replay":
            _check_replay_node(node, made_here)
        if node.kind != "pipeline":
            continue
        where = f"{node.source_file}: node {node.name!r}: parameters"
        config = load_config(run_config.RunConfig, node.parameters, source=where)
        try:
            check_source_settings(config, as_keys=True)  # the node would refuse them at its start
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        metadata = None
        try:
            if config.model is None and not run_config.DEFAULT_MODEL.is_file():
                raise ModelError(
                    f"no model given and the shipped default model {run_config.DEFAULT_MODEL} is missing; "
                    "pass model:=model.onnx or run 'make default-model'"
                )
            if config.model_path.suffix.lower() == ".onnx":
                metadata = read_model_metadata(config.model_path)
            elif not config.model_path.is_file():  # .engine / .pt: read only by TensorRT / torch
                raise ModelError(f"model file {config.model_path} not found; check the path")
        except PerceptionError as exc:
            raise type(exc)(f"{where}: model: {exc}") from None
        if metadata is not None and config.publish_options.per_class_obstacles:
            _check_per_class_topics(config, metadata.class_table, where)
        for camera in config.cameras:  # one source, or several cameras of one node
            kind = source_kind(camera.source)
            if kind == "video" or (kind == "images" and not is_glob_spec(camera.source)):
                try:
                    open_source(camera.source, kind=kind).close()
                except PerceptionError as exc:
                    label = "source" if len(config.cameras) == 1 else f"source {camera.name}"
                    raise type(exc)(f"{where}: {label}: {exc}") from None
        _check_curve_files(config.publish_options, where)


def _recorded_here(plan: LaunchPlan) -> set[Path]:
    """The recordings this launch's ``record`` nodes write (their ``out``, and its folder, which
    holds its splits), resolved: a ``replay`` node may play one that is not there yet."""
    made: set[Path] = set()
    for node in plan.nodes:
        out = node.parameters.get("out") if node.kind == "record" else None
        if isinstance(out, (str, Path)) and str(out):
            made |= {Path(out).resolve(), Path(out).resolve().parent}
    return made


def _check_replay_node(node: NodePlan, made_here: set[Path]) -> None:
    """A ``replay`` node's recording and CURVE key files, as the node reads them at its start:
    every file given (or found in a folder, or the splits of a ``--split-*`` recording's name) is
    there, a regular file this user may read and an MCAP file, and the recording's head holds a
    perception message (``read_recording``, whose first message the node reads before it binds).
    A recording that a ``record`` node of this launch writes (its ``out`` not yet a file, or the
    folder of its splits) is left alone. Then ``curve_secret_key`` and ``curve_allow`` (``_check_curve_files``).

    Raises:
        SourceError, PublishError, ConfigError: naming the launch file, the node and the key.
    """
    from perception.errors import SourceError
    from perception.mcap_reader import read_recording, recording_files
    from perception.recover import open_recording

    where = f"{node.source_file}: node {node.name!r}: parameters"
    config = load_config(NODE_KINDS.get("replay").config_class(), node.parameters, source=where)
    given = config.file if isinstance(config.file, list) else [config.file]
    if not any(Path(p).resolve() in made_here and not Path(p).is_file() for p in given):
        fix = "pass a .mcap file made by 'perception record'"
        try:
            for file in recording_files(given):
                with open_recording(file, fix) as stream:
                    if stream.read(8) != b"\x89MCAP0\r\n":
                        raise SourceError(f"{file} is not an MCAP file; {fix}")
            next(iter(read_recording(given, max_mask_pixels=config.max_mask_pixels)))
        except PerceptionError as exc:
            raise type(exc)(f"{where}: file: {exc}") from None
    _check_curve_files(config.curve, where)


def _check_per_class_topics(config: Any, table: Any, where: str) -> None:
    """The node's own check (``publish.check_per_class_topic``, as its publisher declares its topics)
    of each per-class ``obstacle/<class>`` topic under each camera's namespace: a model exported
    before class tables refused such names may hold a class that cannot be a topic (``person/rider``).

    Raises:
        ConfigError: naming the launch file, the node and the class.
    """
    from perception.contracts import PER_CLASS_OBSTACLE_PREFIX
    from perception.masks import parse_task_overrides
    from perception.publish import check_per_class_topic

    publish = config.publish_options
    try:
        # The obstacle classes as the node's MaskBuilder takes them: a --task obstacle=... override first.
        tasks = parse_task_overrides({k: list(v) for k, v in publish.task.items()}, table, model=str(config.model_path))
        names = tasks.get("obstacle", list(table.task_groups.get("obstacle", ())))
        for index in range(len(config.cameras)):
            namespace = config.camera_config(index).publish_options.resolved_namespace
            for name in names:
                check_per_class_topic(namespace, PER_CLASS_OBSTACLE_PREFIX + name)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _check_curve_files(publish: Any, where: str) -> None:
    """Read a publisher's CURVE key files with the node's own loaders, in its order
    (``perception.xpub.XpubCore``): the server's ``curve_secret_key``, then the ``curve_allow``
    folder, whose authenticator is started on a context of its own and stopped at once.

    Raises:
        PublishError: naming the launch file, the node and the key.
    """
    if publish.curve_secret_key is None:
        return
    import logging

    from perception.curve_keys import load_key_pair
    from perception.security import start_authenticator
    from perception.zmq_context import new_context

    key = "curve_secret_key"
    try:
        load_key_pair(publish.curve_secret_key, role="server secret")
        if publish.curve_allow is not None:
            key = "curve_allow"
            context = new_context("the CURVE allow-list check")
            said = logging.getLogger("perception.security")
            level = said.level
            said.setLevel(max(logging.WARNING, said.getEffectiveLevel()))  # not its "CURVE on: ..." line
            try:
                start_authenticator(context, publish.curve_allow).stop()
            finally:
                said.setLevel(level)
                context.term()
    except PerceptionError as exc:
        raise type(exc)(f"{where}: {key}: {exc}") from None
