"""Command-line flags generated from settings: one declaration, the same flags for every command.

A command's config dataclass declares its settings with ``perception.config.setting``; this module
derives everything the command line needs from those declarations::

    def add_arguments(parser):             # perception/commands/view.py
        add_flags(parser, ViewConfig)

    def main(args):
        config = config_from_flags(ViewConfig, args, source="perception view")

``add_flags`` writes the argparse flags (type, help with the default and range, ``--no-X`` for a
bool that defaults to True, ``NAME=VALUE`` pairs for mappings, mutually exclusive groups);
``flag_values`` / ``config_from_flags`` turn the parsed flags into the config through
``perception.config.load_config`` (so a flag, a YAML key and a launch parameter are checked by the
same code and fail with the same message); ``flags_for`` writes the command line of a launch node
from its parameters.

Hand-written rather than a library: the libraries that derive flags from dataclasses
(simple-parsing, tyro, pydantic-settings) are not runtime dependencies, and none keeps this
project's flag spellings (``--no-obstacles``, ``--source`` repeated with ``NAME=SPEC``,
``--encoding TOPIC=ENC``) and its one-line ConfigErrors without as much glue.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from perception.config import cut, declared, load_config, rename_old_keys, short
from perception.errors import ConfigError
from perception.yamlfile import read_yaml

C = TypeVar("C")

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Flag:
    """The command-line form of one setting (see ``setting``).

    ``shape``: ``switch`` (a bool: ``--x`` or ``--no-x``), ``value`` (``--x V``), ``repeat``
    (``--x A --x B``: one of several values, e.g. ``--source``), ``list`` (``--x A B``), ``commas``
    (``--x A,B`` or ``--x A --x B``: a ``listed`` setting), ``pairs`` (``--x NAME=VALUE``,
    repeatable, into a mapping) or ``positional``.
    """

    name: str
    option: str | None
    shape: str
    scalar: Callable[[str], Any]
    field: dataclasses.Field
    hint: Any

    @property
    def listed_pairs(self) -> bool:
        """A ``pairs`` setting whose values are lists (``--task obstacle=car,pedestrian``)."""
        value_type = typing.get_args(_strip_none(self.hint))[1]
        return typing.get_origin(value_type) in (list, tuple)


def _strip_none(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _scalar(tp: Any) -> Callable[[str], Any]:
    if typing.get_origin(tp) is Literal:
        return type(typing.get_args(tp)[0])
    return tp if tp in (int, float, Path) else str


def flags(cls: type) -> list[Flag]:
    """The flags of ``cls``'s settings (fields declared with ``setting``, ``cli`` not False), in order."""
    out = []
    for d in declared(cls):  # a composed group's settings (SourceOptions' --width) in its place
        f, hint = d.field, d.hint
        if "help" not in f.metadata or not f.metadata.get("cli", True):
            continue
        tp = _strip_none(hint)
        origin = typing.get_origin(tp)
        scalar: Callable[[str], Any] = str
        if f.metadata.get("positional"):
            shape = "positional"
            scalar = _scalar(typing.get_args(tp)[0] if origin in (Union, types.UnionType) else tp)
        elif f.metadata.get("listed"):
            shape, scalar = "commas", _scalar(typing.get_args(tp)[0])
        elif tp is bool:
            shape = "switch"
        elif origin in (Union, types.UnionType):
            # str | list[str] | ...: one value per flag, several by repeating it; else one value as text
            listed = any(typing.get_origin(a) is list for a in typing.get_args(tp))
            shape = "repeat" if listed else "value"
        elif origin is list:
            shape, scalar = "list", _scalar(typing.get_args(tp)[0])
        elif origin is dict:
            shape = "pairs"
        else:
            shape, scalar = "value", _scalar(tp)
        option = f.metadata.get("flag")
        if option is None and shape != "positional":
            dashed = f.name.replace("_", "-")
            option = f"--no-{dashed}" if shape == "switch" and f.default is True else f"--{dashed}"
        out.append(Flag(f.name, option, shape, scalar, f, hint))
    return out


def _default_text(f: dataclasses.Field) -> str | None:
    """A setting's default as a flag would spell it; None when it has no shown default (None,
    empty, a bool, a factory)."""
    default = f.default
    if f.metadata.get("listed") and f.default_factory is not dataclasses.MISSING:
        return ",".join(str(v) for v in f.default_factory()) or None  # a comma list's default, as typed
    if default in (None, dataclasses.MISSING, "") or isinstance(default, bool):
        return None
    to_text = f.metadata.get("to_text")
    text = to_text(default) if to_text else f"{default:g}" if isinstance(default, float) else str(default)
    return text or None  # an empty default (``()`` for "all") is said in the help, not as "(default )"


def _range_text(f: dataclasses.Field) -> str | None:
    """A setting's declared range (``lo..hi``, ``>= lo`` or ``<= hi``); None when unbounded."""
    lo, hi = f.metadata.get("bounds", (None, None))
    if lo is None and hi is None:
        return None
    return f"{lo:g}..{hi:g}" if lo is not None and hi is not None else f">= {lo:g}" if lo is not None else f"<= {hi:g}"


def _help(flag: Flag) -> str:
    text = flag.field.metadata["help"]
    notes = []
    if (default := _default_text(flag.field)) is not None:
        notes.append(f"default {default}")
    if (span := _range_text(flag.field)) is not None:
        notes.append(span)
    if flag.shape == "commas":
        text += "; several, comma-separated or repeated, are compared"
    if notes:
        text += f" ({', '.join(notes)})"
    return text.replace("%", "%%")


def _metavar(flag: Flag) -> str | None:
    metavar = flag.field.metadata.get("metavar")
    if metavar is not None:
        return metavar
    tp = _strip_none(flag.hint)
    if flag.shape == "commas":
        item = typing.get_args(tp)[0]
        one = ("{" + ",".join(str(a) for a in typing.get_args(item)) + "}" if typing.get_origin(item) is Literal
               else flag.field.metadata["listed"].upper())
        return f"{one}[,...]"
    if typing.get_origin(tp) is Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(tp)) + "}"
    if flag.shape == "pairs":
        return "NAME=VALUE"
    return None


class _DeprecatedFlag(argparse.Action):
    """An old spelling of a flag: sets the same value and warns once per use."""

    def __init__(self, option_strings: list[str], dest: str, current: str = "", **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.current = current

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001 - argparse hook
        log.warning("%s is deprecated and will be removed in the next release; use %s", option_string, self.current)
        setattr(namespace, self.dest, values)


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add the flags of ``cls``'s settings to ``parser``.

    Only flags given on the command line reach the namespace (``default=SUPPRESS``), so a config
    file's values survive and the dataclass defaults apply otherwise (``config_from_flags``).
    """
    groups: dict[str, Any] = {}
    for flag in flags(cls):
        meta = flag.field.metadata
        target: Any = parser
        if meta.get("group"):
            if ("group", meta["group"]) not in groups:
                groups["group", meta["group"]] = parser.add_argument_group(meta["group"])
            target = groups["group", meta["group"]]
        if meta.get("exclusive"):
            if ("exclusive", meta["exclusive"]) not in groups:
                groups["exclusive", meta["exclusive"]] = target.add_mutually_exclusive_group()
            target = groups["exclusive", meta["exclusive"]]
        kwargs: dict[str, Any] = {"help": _help(flag)}
        if flag.shape == "switch":
            kwargs["action"] = "store_false" if flag.field.default is True else "store_true"
        else:
            # a comma list is split and converted by flag_values (one ConfigError per bad item)
            scalar = str if flag.shape == "commas" else flag.scalar
            # argparse converts a str const too (``--tasks`` alone is ""): that one stays allowed.
            kwargs.update(type=scalar if meta.get("const") == "" else _not_empty(scalar), metavar=_metavar(flag))
            if flag.shape in ("repeat", "pairs", "commas"):
                kwargs["action"] = "append"
            elif flag.shape == "list":
                kwargs.update(nargs="+", action="extend")
            elif meta.get("const") is not None:
                kwargs.update(nargs="?", const=meta["const"])
        if flag.shape == "positional":
            nargs = "+" if typing.get_origin(_strip_none(flag.hint)) in (Union, types.UnionType, list) else None
            target.add_argument(flag.name, nargs=nargs, **kwargs)
            continue
        target.add_argument(flag.option, dest=flag.name, default=argparse.SUPPRESS, **kwargs)
        if meta.get("old_flags") and flag.shape != "value":
            raise TypeError(f"{cls.__name__}.{flag.name}: old_flags are supported for flags that take one value")
        for old in meta.get("old_flags", ()):
            target.add_argument(old, dest=flag.name, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                                type=kwargs.get("type"), action=_DeprecatedFlag, current=flag.option)


def _not_empty(scalar: Callable[[str], Any]) -> Callable[[str], Any]:
    """``scalar`` for argparse, refusing an empty value: ``--model "$MODEL"`` with MODEL unset
    would otherwise mean the default model, ``.`` or the synthetic world without a word."""

    def convert(text: str) -> Any:
        if text == "":
            raise argparse.ArgumentTypeError("an empty value (an unset shell variable?); give one or leave the flag out")
        return scalar(text)

    convert.__name__ = getattr(scalar, "__name__", "value")  # argparse's "invalid int value: 'x'"
    return convert


def parse_pairs(items: list[str], option: str, *, listed: bool) -> dict[str, Any]:
    """``["lane=rle", "drivable=png"]`` -> ``{"lane": "rle", ...}`` (``listed``: comma-separated lists); ConfigError naming ``option``."""
    out: dict[str, Any] = {}
    seen: dict[str, str] = {}  # name -> its value as typed
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            example = "obstacle=car,pedestrian" if listed else "drivable=bitpack"
            raise ConfigError(f"{option} {short(item)}: expected NAME=VALUE, e.g. {option} {example}")
        key = key.strip()
        if key in out:  # the later one would silently replace the earlier
            given = [cut(f"{option} {key}={text}") for text in (seen[key], value)]
            fix = (f"give its classes once, e.g. {option} {cut(f'{key}={seen[key]},{value}')}" if listed
                   else "keep one")
            raise ConfigError(f"{option}: {cut(key, 60)} is given twice ({given[0]}, {given[1]}); {fix}")
        seen[key] = value
        out[key] = [v.strip() for v in value.split(",") if v.strip()] if listed else value.strip()
    return out


def split_commas(texts: list[str], flag: Flag) -> list[Any]:
    """``["1,2", "4"]`` (a ``commas`` flag, given twice) -> ``[1, 2, 4]``, each item converted like
    the one-value flag; ConfigError naming the flag for an item that does not convert or no item."""
    items = [item.strip() for text in texts for item in text.split(",") if item.strip()]
    if not items:
        raise ConfigError(f"{flag.option} {short(','.join(texts))}: expected at least one value, e.g. {flag.option} 1,2")
    values = []
    for item in items:
        try:
            values.append(flag.scalar(item))
        except ValueError:  # noqa: PERF203 - the first bad item is the message
            raise ConfigError(f"argument {flag.option}: invalid {flag.scalar.__name__} value: {short(item)}") from None
    return values


def _one_or_many(tp: Any) -> bool:
    """A ``X | list[X]`` setting: one value, or several."""
    return typing.get_origin(tp) in (Union, types.UnionType) and any(typing.get_origin(a) is not list for a in typing.get_args(tp))


def flag_values(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The settings of ``cls`` given as flags, as config values (not yet checked: see ``load_config``).

    Raises ConfigError for a flag whose text does not parse (``--size 360``, ``--task lane``).
    """
    given = vars(args)
    out: dict[str, Any] = {}
    for flag in flags(cls):
        if flag.name not in given:
            continue
        value = given[flag.name]
        convert = flag.field.metadata.get("from_text")
        if convert is not None:
            value = convert(value)
        elif flag.shape == "pairs":
            value = parse_pairs(value, flag.option, listed=flag.listed_pairs)
        elif flag.shape == "commas":
            value = split_commas(value, flag)
        elif flag.shape in ("repeat", "positional") and _one_or_many(flag.hint) and len(value) == 1:
            value = value[0]  # the single-value form: --source clip.mp4 is "clip.mp4", not a list
        out[flag.name] = value
    return out


def config_from_flags(cls: type[C], args: argparse.Namespace, *, source: str, config_file: str | Path | None = None,
                      command: str | None = None) -> C:
    """``cls`` from the flags given, over ``config_file``'s keys when one is given.

    A ``pairs`` flag adds to the file's mapping (``--encoding lane=rle`` keeps the file's other
    topics). Raises ConfigError naming the file or ``source`` and the key. A flag whose text does
    not parse (``--threads 1,x``) fails as argparse's own errors do, naming ``command`` (by default
    ``source`` when it is ``perception <command>``) and its ``--help``.
    """
    data: dict[str, Any] = {}
    if config_file is not None:
        data = rename_old_keys(cls, read_yaml(config_file), source=str(config_file))
        source = f"{config_file} + {source}"
    try:
        given = flag_values(cls, args)
    except ConfigError as exc:
        command = command or (source.removeprefix("perception ") if source.startswith("perception ") else None)
        if command is None:
            raise
        raise ConfigError(f"{command}: {exc}; see 'perception {command} --help'") from None
    for name, value in given.items():
        if isinstance(value, dict) and isinstance(data.get(name), dict):
            value = {**data[name], **value}
        data[name] = value
    for flag in flags(cls):
        required = flag.field.default is dataclasses.MISSING and flag.field.default_factory is dataclasses.MISSING
        if required and flag.name not in data and flag.option:
            raise ConfigError(f"{source}: {flag.option} is required ({flag.field.metadata['help']})")
    try:
        return load_config(cls, data, source=source)
    except ConfigError as exc:
        # The message names the setting as YAML and launch files do; add how it was typed here.
        named = [f for f in flags(cls) if f.name in given and f.shape in ("value", "switch", "commas")
                 and re.search(rf"\b{f.field.metadata.get('listed') or f.name}[=:]", str(exc))]
        if not named:
            raise
        # Every flag the message names (width=16 height=16384 ...: both), each as it was typed.
        typed = ", ".join(_as_typed(flag, vars(args).get(flag.name)) for flag in named)
        raise ConfigError(f"{exc} ({typed})") from None


def _as_typed(flag: Any, typed_value: Any) -> str:
    """A flag and its value as the user typed it, cut short."""
    if flag.shape == "switch":
        return flag.option
    if flag.shape == "commas":
        return cut(" ".join(f"{flag.option} {text}" for text in typed_value))
    if isinstance(typed_value, float) and typed_value.is_integer() and abs(typed_value) < 1e15:
        typed_value = int(typed_value)  # argparse made "--duration 0" a float: echo 0, as typed, not 0.0
    return cut(f"{flag.option} {as_text(typed_value)}")


def flags_for(cls: type, parameters: dict[str, Any], *, where: str) -> list[str]:
    """The command line that gives ``parameters`` (already checked with ``load_config``) as flags.

    What a launch node runs: ``{"duration_s": 5, "obstacles": False}`` -> ``["--duration", "5",
    "--no-obstacles"]``. A deprecated key is given under its current flag.
    """
    by_name: dict[str, Flag] = {}
    for flag in flags(cls):
        by_name[flag.name] = flag
        for old in flag.field.metadata.get("old_names", ()):
            by_name[old] = flag
    argv: list[str] = []
    positional: list[str] = []
    for name, value in parameters.items():
        flag = by_name.get(name)
        if flag is None:
            raise ConfigError(f"{where}: {short(name)} is not a setting of this node kind")
        if value is None:
            continue
        to_text = flag.field.metadata.get("to_text") or as_text
        if flag.shape == "switch":
            if bool(value) != (flag.field.default is True):
                argv.append(flag.option)  # otherwise the flag left out gives the value
        elif flag.shape == "positional":
            positional += [to_text(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        elif isinstance(value, dict):
            for key, item in value.items():
                text = ",".join(as_text(x) for x in item) if isinstance(item, (list, tuple)) else as_text(item)
                argv += [flag.option, f"{key}={text}"]
        elif isinstance(value, (list, tuple)) and flag.shape == "commas":
            argv += [flag.option, ",".join(as_text(v) for v in value)]
        elif isinstance(value, (list, tuple)) and flag.shape in ("repeat", "list"):
            words = [as_text(v) for v in value]
            argv += [flag.option, *words] if flag.shape == "list" else [w for v in words for w in (flag.option, v)]
        elif value == flag.field.metadata.get("const"):
            argv.append(flag.option)  # the flag alone gives its const
        else:
            argv += [flag.option, to_text(value)]
    return argv + (["--", *positional] if positional else [])


def as_text(value: Any) -> str:
    """A parameter value as a command-line word (YAML's spelling of booleans)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def settings_markdown(cls: type) -> str:
    """The README's table of ``cls``'s settings (flag, YAML key, default, range, meaning), generated
    from the declarations so that it cannot drift from ``--help`` (tests/test_settings.py checks the
    README holds exactly this text)."""
    rows = ["| flag | YAML / launch key | default | range | meaning |", "|---|---|---|---|---|"]
    for flag in flags(cls):
        f = flag.field
        if isinstance(f.default, bool):
            shown = "on" if f.default else "off"
        else:
            shown = _default_text(f) or "-"
        span = _range_text(f) or "-"
        option = flag.option or f.name.upper()
        if flag.shape == "pairs":
            option += " NAME=VALUE"
        meaning = f.metadata["help"].replace("|", "\\|")
        rows.append(f"| `{option}` | `{f.name}` | {shown.replace('|', chr(92) + '|')} | {span} | {meaning} |")
    return "\n".join(rows) + "\n"
