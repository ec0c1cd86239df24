"""Node parameters <-> command-line flags: the bridge that makes a launch node and a command the same.

``parameters_to_argv`` turns a node's parameters into its command's flags and checks them with
that command's own argument parser; ``config_from_args`` goes the other way for the commands
themselves (flags -> config dataclass with the same checks as launch files).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
from typing import Any

from perception.config import load_config
from perception.errors import ConfigError
from perception.launch.substitute import as_text


class _CheckingParser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing usage and exiting."""

    def error(self, message: str):  # noqa: D102 - argparse hook
        raise ConfigError(message)


def _command_parser(command: str) -> argparse.ArgumentParser:
    module = importlib.import_module(f"perception.commands.{command}")
    parser = _CheckingParser(prog=f"perception {command}", add_help=False)
    module.add_arguments(parser)
    return parser


def parameters_to_argv(command: str, parameters: dict[str, Any], where: str) -> list[str]:
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
                text = ",".join(as_text(x) for x in v) if isinstance(v, (list, tuple)) else as_text(v)
                argv += [flag, f"{k}={text}"]
        elif isinstance(value, (list, tuple)):
            words = [as_text(v) for v in value]
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
            positional.append(as_text(value))
        else:
            argv += [flag, as_text(value)]
    full = argv + (["--", *positional] if positional else [])
    try:
        parser.parse_args(full)
    except ConfigError as exc:
        raise ConfigError(f"{where}: parameters: {exc}") from None
    return full


def config_from_args(cls: type, args: argparse.Namespace, *, command: str) -> Any:
    """Build a command's config dataclass from its parsed flags, with the same checks as launch files.

    Flags left at None are left out so the dataclass defaults apply. Raises ConfigError naming the
    command and the key.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    data = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return load_config(cls, data, source=f"perception {command}")
