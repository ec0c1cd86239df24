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
import contextlib
import dataclasses
import logging
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from perception.cli import DEPRECATIONS, OnceFlag, warn_deprecated
from perception.config import (
    config_to_dict,
    cut,
    declared,
    default_value_text,
    load_config,
    number_text,
    range_text,
    rename_old_keys,
    short,
)
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


def _default_text(f: dataclasses.Field, shape: str | None = None) -> str | None:
    """A setting's default as a flag would spell it; None when it has no shown default (None,
    empty, a switch's bool, a factory) and its declaration gives no ``default_text``."""
    if f.metadata.get("default_text"):
        return f.metadata["default_text"]  # a default decided when it runs, or the setting's own (bench)
    if f.metadata.get("listed") and f.default_factory is not dataclasses.MISSING:
        return ",".join(number_text(v) for v in f.default_factory()) or None  # a comma list's default, as typed
    if isinstance(f.default, bool) and shape not in (None, "switch"):
        # A value flag whose default is a bool (--pretrained PATH|imagenet|none: False): say it in
        # the metavar's word for it when there is one ("none"), else as YAML does ("false").
        from_text = f.metadata.get("from_text")
        for word in (f.metadata.get("metavar") or "").split("|") if from_text else ():
            with contextlib.suppress(ConfigError, ValueError, TypeError):
                if from_text(word) is f.default:
                    return word
        return (f.metadata.get("to_text") or as_text)(f.default)
    # an empty default (``()`` for "all") is said in the help, not as "(default )"
    return default_value_text(f)


def _range_text(f: dataclasses.Field) -> str | None:
    """A setting's declared range (``lo..hi``, ``>= lo`` or ``<= hi``); None when unbounded."""
    return range_text(*f.metadata.get("bounds", (None, None)))


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _help(flag: Flag) -> str:
    text = flag.field.metadata["help"]
    notes = []
    if _required(flag.field) and flag.shape != "positional":
        # not argparse's required=True: a config file or another flag may stand in for it (record
        # --recover needs no --out), and config_from_flags' own message names what it is for
        notes.append(flag.field.metadata.get("required_text") or "required")
    if (default := _default_text(flag.field, flag.shape)) is not None:
        notes.append(f"default {default}")
    if (span := flag.field.metadata.get("help_range") or _range_text(flag.field)) is not None:
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


class _DeprecatedFlag(OnceFlag):
    """An old spelling of a flag: sets the same value and warns once per use. With the current
    spelling on one command line it is the flag given twice (``OnceFlag``), not the last one winning.
    The warning waits until the command line has parsed (``cli.warn_deprecated``, from the
    parser or ``config_from_flags``): a line refused is refused in one line, with no warning first."""

    def __init__(self, option_strings: list[str], dest: str, current: str = "", **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.current = current

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001 - argparse hook
        super().__call__(parser, namespace, values, option_string)
        namespace.__dict__.setdefault(DEPRECATIONS, []).append(
            f"{option_string} is deprecated and will be removed in the next release; use {self.current}")


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add the flags of ``cls``'s settings to ``parser``.

    Only flags given on the command line reach the namespace (``default=SUPPRESS``), so a config
    file's values survive and the dataclass defaults apply otherwise (``config_from_flags``).
    """
    # Which settings this parser's flags give: how perception.cli names a flag in a settings error
    # raised later, outside config_from_flags (``train --lr -1``: see ``command_error``).
    parser.settings_classes = [*getattr(parser, "settings_classes", []), cls]
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


class TypedFloat(float):
    """A float flag's value as argparse keeps it, with the text it was typed as (``typed``): an
    error about it echoes ``(--duration 1e400)``, not the ``inf`` that text parses to.
    ``flag_values`` hands the config a plain float."""

    typed: str

    def __new__(cls, text: str) -> TypedFloat:
        value = super().__new__(cls, text)
        value.typed = text
        return value


def _plain(value: Any) -> Any:
    """``value`` with every ``TypedFloat`` in it (a ``--x A B`` list) a plain float."""
    if isinstance(value, TypedFloat):
        return float(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _not_empty(scalar: Callable[[str], Any]) -> Callable[[str], Any]:
    """``scalar`` for argparse, refusing an empty value: ``--model "$MODEL"`` with MODEL unset
    would otherwise mean the default model, ``.`` or the synthetic world without a word. A float
    keeps its text (``TypedFloat``)."""

    def convert(text: str) -> Any:
        if text == "":
            raise argparse.ArgumentTypeError("an empty value (an unset shell variable?); give one or leave the flag out")
        return TypedFloat(text) if scalar is float else scalar(text)

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
        value = _plain(given[flag.name])
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
    topics). Errors name the command the way argparse's do (``command``, by default ``source``
    without its ``perception `` prefix): ``run: width=8 is out of range [16, 16384] (--width 8)``
    for a flag, with the flag as typed; ``run: node.yaml: width=8 ...`` for a key of the file. A
    flag whose text does not parse (``--threads 1,x``) fails as argparse's own errors do, with the
    command's ``--help``.
    """
    label = command or source.removeprefix("perception ")
    warn_deprecated(args)  # an old flag's warning, when the parser did not say it (a plain ArgumentParser)
    data: dict[str, Any] = {}
    where = label
    if config_file is not None:
        data = rename_old_keys(cls, read_yaml(config_file), source=f"{label}: {config_file}")
        where = f"{label}: {config_file}"
    try:
        given = flag_values(cls, args)
    except ConfigError as exc:
        if command is None and not source.startswith("perception "):
            raise
        raise ConfigError(f"{label}: {exc}; see 'perception {label} --help'") from None
    for name, value in given.items():
        if isinstance(value, dict) and isinstance(data.get(name), dict):
            value = {**data[name], **value}
        data[name] = value
    for flag in flags(cls):
        if _required(flag.field) and flag.name not in data and flag.option:
            raise ConfigError(f"{label}: {flag.option} is required ({flag.field.metadata['help']})")
    try:
        config = load_config(cls, data, source=where)
    except ConfigError as exc:
        typed = _typed_flags(cls, args, exc)
        if typed is None:
            raise
        raise ConfigError(f"{label}: {getattr(exc, 'detail', exc)} ({typed})") from None
    if log.isEnabledFor(logging.DEBUG):  # -v: what the command runs with, every default included
        from perception.errors import hide_credentials

        flat = config_to_dict(config)
        settings = " ".join(f"{name}={_as_word(value)}" for name, value in flat.items())
        typed = " ".join(f.option for f in flags(cls) if f.name in given and f.option)
        log.debug("%s settings%s: %s", label, f" (flags {typed})" if typed else "", hide_credentials(settings))
    return config


def _as_word(value: Any) -> str:
    """A resolved setting for the -v line: numbers as typed, lists and mappings compact."""
    if isinstance(value, (list, tuple)):
        return ",".join(_as_word(v) for v in value) or "[]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}={_as_word(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "-"
    return number_text(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else as_text(value)


def _typed_flags(cls: type, args: argparse.Namespace, exc: ConfigError) -> str | None:
    """The flags given on the command line that ``exc`` (from ``load_config``) is about, each as it
    was typed (``--width 8``; ``--width 16, --height 16384`` for a message naming both); None when
    the message names no flag given (a key of a config file, a check across settings)."""
    given = vars(args)
    setting = getattr(exc, "setting", None)
    named = [f for f in flags(cls) if f.name in given and f.shape in ("value", "switch", "commas")
             and (f.field.metadata.get("listed") or f.name) != setting
             and re.search(rf"\b{f.field.metadata.get('listed') or f.name}[=:]", str(exc))]
    about = [f for f in flags(cls) if f.name in given and (f.field.metadata.get("listed") or f.name) == setting]
    if not about and not named:
        return None
    if setting is not None and not about:
        return None  # the message is about a key of the file; the flags it also names only compare with it
    return ", ".join(_as_typed(flag, given.get(flag.name)) for flag in [*about, *named])


def command_error(exc: Exception, parser: argparse.ArgumentParser, args: argparse.Namespace, command: str) -> str:
    """``exc``'s message as the command line says it: a settings error (``load_config``'s, marked
    with its setting) about a value given as a flag of ``parser`` (``add_flags``), or as ``--set
    KEY=VALUE``, names ``command`` and the flag as typed, as ``config_from_flags`` does: a command
    that builds its config itself (``perception train``) reads like the others."""
    setting = getattr(exc, "setting", None)
    if setting is None:
        return str(exc)
    typed = None
    for cls in getattr(parser, "settings_classes", []):
        typed = _typed_flags(cls, args, exc)
        if typed is not None:
            break
    if typed is None:
        # --set KEY=VALUE: the one flag that sets any key (train); the last one given wins
        given = [item for item in getattr(args, "set", None) or [] if item.partition("=")[0].strip() == setting]
        typed = cut(f"--set {given[-1]}") if given else None
    if typed is None:
        return str(exc)
    return f"{command}: {exc.detail} ({typed})"


def _as_typed(flag: Any, typed_value: Any) -> str:
    """A flag and its value as the user typed it, cut short."""
    if flag.shape == "switch":
        return flag.option
    if flag.shape == "commas":
        return cut(" ".join(f"{flag.option} {text}" for text in typed_value))
    if isinstance(typed_value, TypedFloat):
        return cut(f"{flag.option} {typed_value.typed}")  # as typed: 1e400, not the inf it parses to
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
            shown = _default_text(f, flag.shape) or "-"
        span = _range_text(f) or "-"
        option = flag.option or f.name.upper()
        if flag.shape == "pairs":
            option += " NAME=VALUE"
        meaning = f.metadata["help"].replace("|", "\\|")
        rows.append(f"| `{option}` | `{f.name}` | {shown.replace('|', chr(92) + '|')} | {span} | {meaning} |")
    return "\n".join(rows) + "\n"
