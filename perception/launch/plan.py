"""The launch plan: node kinds, the resolved nodes with their restart policy, and the printed plan.

``parse.load_launch`` produces a ``LaunchPlan``; ``format_plan`` prints it before anything starts
(``perception launch FILE --check`` prints it and stops); ``supervisor.LaunchSupervisor`` runs it.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perception.config import cut
from perception.errors import hide_credentials
from perception.flags import as_text
from perception.registry import Registry
from perception.spawn import perception_command


@dataclass(frozen=True)
class NodeKind:
    """A kind of node: the ``perception`` subcommand it runs and the dataclass its parameters fill.

    ``config_class`` returns the dataclass whose settings are the node's parameters and the
    command's flags (imported lazily, so validating a ``view`` node never imports the pipeline).
    ``binds``: the node binds its ``endpoint`` (a publisher), so no two such nodes may name one address.
    """

    command: str
    config_class: Callable[[], type]
    #: Publishes: binds its ``endpoint`` (one process per address); subscribers connect and may share one.
    binds: bool = False


def _attr(module: str, name: str) -> Callable[[], type]:
    return lambda: getattr(importlib.import_module(module), name)


NODE_KINDS: Registry[NodeKind] = Registry("node kind")
NODE_KINDS.register("pipeline")(NodeKind("run", _attr("perception.run_config", "RunConfig"), binds=True))
NODE_KINDS.register("record")(NodeKind("record", _attr("perception.record", "RecordConfig")))
NODE_KINDS.register("replay")(NodeKind("replay", _attr("perception.replay", "ReplayConfig"), binds=True))
NODE_KINDS.register("view")(NodeKind("view", _attr("perception.view", "ViewConfig")))
NODE_KINDS.register("listen")(NodeKind("listen", _attr("perception.commands.listen", "ListenConfig")))


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
        """``python -P -m perception COMMAND ...`` (``spawn.perception_command``): never a
        ``perception.py`` from the folder the launch was started in."""
        return perception_command(self.command, *self.argv)


@dataclass(frozen=True)
class LaunchPlan:
    file: Path
    arguments: dict[str, Any]
    nodes: tuple[NodePlan, ...]


def format_plan(plan: LaunchPlan) -> str:
    """The resolved plan as text: arguments, then each node's policy and exact command line."""
    lines = [f"launch plan: {plan.file} ({len(plan.nodes)} node{'s' if len(plan.nodes) != 1 else ''})"]
    if plan.arguments:
        # Cut short like the values below: an argument may hold up to 128 KiB.
        lines.append("  arguments: " + ", ".join(f"{k}={'(unset)' if v is None else cut(as_text(v), 200)}"
                                                 for k, v in plan.arguments.items()))
    for node in plan.nodes:
        policy = "no respawn"
        if node.respawn:
            limit = "unlimited" if node.respawn_max == 0 else f"max {node.respawn_max}"
            policy = f"respawn after {node.respawn_delay_s:g} s ({limit})"
        required = ", required" if node.required else ""
        delay = f", starts after {node.delay_s:g} s" if node.delay_s else ""
        lines.append(f"  [{node.name}] {node.kind}: {policy}{required}{delay}")
        # Values are cut short in the printout (a 100 kB value would fill the terminal); the node gets them whole.
        lines.append(f"      perception {node.command} {' '.join(_quote(cut(a, 200)) for a in node.argv)}".rstrip())
    return hide_credentials("\n".join(lines))


def _quote(word: str) -> str:
    return word if word and re.fullmatch(r"[\w@%+=:,./-]+", word) else repr(word)
