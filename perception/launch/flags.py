"""Node parameters -> command-line flags: the bridge that makes a launch node and a command the same.

A node kind's parameters are its command's settings (``perception.config.setting`` fields of the
kind's config dataclass). ``parameters_to_argv`` checks them with ``load_config`` (the same checks
and messages as the command's flags and YAML files) and writes the command line from the same
declarations (``perception.config.flags_for``); the command's own parser then reads that command
line back, so a node never starts with flags its command would refuse.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from perception.cli import refuse_repeats
from perception.config import load_config
from perception.errors import ConfigError
from perception.flags import flags_for


class _CheckingParser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing usage and exiting, and refuses a flag given
    twice as the node's own parser does (``perception.cli.OnceFlag``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        refuse_repeats(self)

    def error(self, message: str):  # noqa: D102 - argparse hook
        raise ConfigError(message)


def parameters_to_argv(command: str, config_class: type, parameters: dict[str, Any], where: str) -> list[str]:
    """Check a node's ``parameters`` against ``config_class`` and turn them into ``command``'s flags.

    Raises ConfigError naming ``where`` (the launch file and node) and the key.
    """
    source = f"{where}: parameters"
    load_config(config_class, parameters, source=source)
    argv = flags_for(config_class, parameters, where=source)
    parser = _CheckingParser(prog=f"perception {command}", add_help=False)
    importlib.import_module(f"perception.commands.{command}").add_arguments(parser)
    try:
        parser.parse_args(argv)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return argv
