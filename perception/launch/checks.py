"""The checks of a parsed launch: across its nodes, and of the files its nodes will open.

    plan = load_launch("launch/demo.yaml", parse_launch_arguments(["model:=m.onnx"]))  # runs the first two
    check_node_files(plan)   # perception launch FILE --check: the files the nodes will open exist

``check_bound_endpoints``: no two publishing nodes bind one address; ``check_written_files``: no
two nodes write one file or folder (both run by ``parse.load_launch`` on the nodes it read, before
any process starts). ``check_node_files`` (``--check``): the model, source, recording and CURVE key
files the nodes will open are there and readable. Each error names the launch file, the node and
the key.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from perception.config import cut, load_config
from perception.config import declared as declared_settings
from perception.endpoints import canonical_bind_host
from perception.errors import ConfigError, ModelError, PerceptionError
from perception.flags import as_text
from perception.launch.plan import NODE_KINDS, LaunchPlan, NodePlan

log = logging.getLogger("perception.launch")

#: A TCP endpoint as the nodes bind it (``perception.xpub`` checks the form itself when it binds).
_TCP_RE = re.compile(r"^tcp://(?P<host>\[[^\]]*\]|[^:/\[\]]+):(?P<port>\d+|\*)$")


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


def check_bound_endpoints(nodes: list[NodePlan]) -> None:
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


def check_written_files(nodes: list[NodePlan]) -> None:
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
    from perception.mcap_reader import missing_splits, read_recording, recording_files
    from perception.recover import open_recording
    from perception.replay import missing_line

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
        missing = missing_splits(given)
        if missing:  # the node replays the rest, saying so as it starts: --check says it now
            log.warning("%s: file: %s: the node will replay the recording without %s", where, missing_line(missing),
                        "it" if len(missing) == 1 else "them")
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
