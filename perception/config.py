"""Typed configuration: dataclasses filled from YAML files, CLI flags or launch files, validated once.

``load_config(MyConfig, mapping, source="train.yaml")`` rejects unknown keys with a "did you mean"
hint, checks each value against the field's type (int, float, str, bool, Path, Literal, tuples,
lists, dicts, Optional, nested dataclasses) and its declared range, and raises ``ConfigError``
naming the source and the key. Ranges are declared with ``field(metadata=bounds(lo, hi))``.

A setting that users give (a flag, a YAML key, a launch-node parameter) is declared once, as a
dataclass field made by ``setting``: its type (the annotation), default, range, help, unit (in the
name: ``_s``, ``_ms``) and, where it differs from the field name, its flag. From that one declaration
``add_flags`` generates a command's argparse flags, ``config_from_flags`` turns the parsed flags
into the config (through ``load_config``, so a flag, a YAML key and a launch parameter are checked
by the same code and fail with the same message) and ``flags_for`` turns launch-node parameters
back into the command line. ``same_setting`` reuses a declaration in another config (the frame
width of ``run``, ``demo`` and ``view`` is one declaration, with one range)::

    @dataclass
    class ViewConfig:
        alpha: float = setting(0.5, lo=0.0, hi=1.0, help="mask opacity")
        width: int | None = same_setting(SourceOptions, "width")

argparse generation is hand-written (about 150 lines) rather than a library: the libraries that
derive flags from dataclasses (simple-parsing, tyro, pydantic-settings) are not in the runtime's
dependencies, and none keeps this project's flag spellings (``--no-obstacles``, ``--source`` repeated
with ``NAME=SPEC``, ``--encoding TOPIC=ENC``) and its one-line ConfigErrors without as much glue.

Nothing here parses at import time or evaluates strings.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import types
import typing
from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from perception.errors import ConfigError

C = TypeVar("C")

log = logging.getLogger(__name__)


def bounds(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    """Field metadata declaring an inclusive numeric range."""
    return {"bounds": (lo, hi)}


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,  # noqa: A002 - argparse's name for it
    lo: float | None = None,
    hi: float | None = None,
    flag: str | None = None,
    metavar: str | None = None,
    group: str | None = None,
    exclusive: str | None = None,
    positional: bool = False,
    from_text: Callable[[Any], Any] | None = None,
    to_text: Callable[[Any], str] | None = None,
    old_names: tuple[str, ...] = (),
    old_flags: tuple[str, ...] = (),
    cli: bool = True,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field that is a user setting: the one declaration of its default, range and help.

    ``lo``/``hi``: the inclusive range (checked by ``load_config`` for flags, YAML and launch files
    alike). ``flag``: the option when it is not ``--`` + the name with dashes (``--duration`` for
    ``duration_s``); a bool that defaults to True becomes ``--no-NAME``. ``group``: the ``--help``
    section; ``exclusive``: settings sharing this name are mutually exclusive flags. ``positional``:
    a positional argument. ``from_text``/``to_text``: the flag's text <-> the value when it is not a
    plain scalar (``--size 360x480`` -> ``(360, 480)``); ``from_text`` may raise ConfigError.
    ``old_names``/``old_flags``: earlier spellings, still accepted for one release with a
    deprecation warning. ``cli=False``: a YAML/launch key without a flag.
    """
    metadata = {
        "help": help, "bounds": (lo, hi), "flag": flag, "metavar": metavar, "group": group,
        "exclusive": exclusive, "positional": positional, "from_text": from_text, "to_text": to_text,
        "old_names": tuple(old_names), "old_flags": tuple(old_flags), "cli": cli,
    }
    return field(default=default, default_factory=default_factory, metadata=metadata)


def same_setting(cls: type, name: str, **changes: Any) -> Any:
    """A field declared like ``cls``'s setting ``name`` (default, range, help, flag), for another
    config that offers the same setting; ``changes`` override single items (``default=640``)."""
    found = {f.name: f for f in dataclasses.fields(cls)}[name]
    factory = found.default_factory if "default" not in changes else dataclasses.MISSING
    default = changes.pop("default", found.default)
    return field(default=default, default_factory=factory, metadata={**found.metadata, **changes})


def parse_hw(text: str, *, what: str = "--size", minimum: int = 1) -> tuple[int, int]:
    """``"360x480"`` -> (360, 480): the one parser of HEIGHTxWIDTH sizes (CLI flags, dataset specs).

    Raises:
        ConfigError: not two integers around an ``x``, or a side below ``minimum``; it names
            ``what`` and shows the expected form.
    """
    h, sep, w = str(text).strip().lower().partition("x")
    if not sep or not h.strip().isdigit() or not w.strip().isdigit():
        raise ConfigError(f"bad {what} {text!r}: expected HEIGHTxWIDTH, e.g. 360x480")
    size = (int(h), int(w))
    if min(size) < minimum:
        raise ConfigError(f"bad {what} {text!r}: each side must be at least {minimum}")
    return size


def hw_from_text(text: str) -> list[int]:
    """``--size 360x480`` -> ``[360, 480]``, the value of an ``input_hw`` setting (``from_text``)."""
    return list(parse_hw(text))


def hw_to_text(hw: tuple[int, int] | list[int]) -> str:
    """``(360, 480)`` -> ``"360x480"``: an ``input_hw`` setting as its flag's text (``to_text``)."""
    return f"{hw[0]}x{hw[1]}"


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; ConfigError naming the file when it is missing or malformed."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file {p} is a directory; pass a .yaml file")
    if not p.is_file():
        raise ConfigError(f"config file {p} not found; check the path")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p} is not a text file (not UTF-8); pass a YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def load_config(cls: type[C], data: dict[str, Any], *, source: str) -> C:
    """Build dataclass ``cls`` from ``data``; every error names ``source`` and the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    data = rename_old_keys(cls, data, source=source)
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(fields)}"
        raise ConfigError(f"{source}: unknown key {key!r}{hint}")
    kwargs = {}
    for name, value in data.items():
        f = fields[name]
        kwargs[name] = _coerce(value, hints[name], f"{source}: {name}")
        lo, hi = f.metadata.get("bounds", (None, None))
        v = kwargs[name]
        is_number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if is_number and ((lo is not None and v < lo) or (hi is not None and v > hi)):
            rng = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
            raise ConfigError(f"{source}: {name}={v} is out of range {rng}")
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{source}: missing required key {missing[0]!r}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ validation
        raise ConfigError(f"{source}: {exc}") from None


def rename_old_keys(cls: type, data: dict[str, Any], *, source: str) -> dict[str, Any]:
    """``data`` with the deprecated keys of ``cls``'s settings (``old_names``) renamed, each with a warning."""
    out = dict(data)
    for f in dataclasses.fields(cls):
        for old in f.metadata.get("old_names", ()):
            if old not in out:
                continue
            if f.name in out:
                raise ConfigError(f"{source}: {old!r} is the deprecated name of {f.name!r}; give only {f.name!r}")
            log.warning("%s: key %r is deprecated and will be removed in the next release; use %r", source, old, f.name)
            out[f.name] = out.pop(old)
    return out


def config_to_dict(obj: Any) -> Any:
    """A plain, YAML/JSON-serialisable view of a config dataclass (for checkpoints and reports)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [config_to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): config_to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} does not fit {_type_name(tp)}")
    if origin is Literal:
        if value in args:
            return value
        choices = ", ".join(repr(a) for a in args)
        raise ConfigError(f"{where}: {value!r} is not one of {choices}")
    if dataclasses.is_dataclass(tp):
        return load_config(tp, value, source=where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{where}: expected a path, got {value!r}")
    return value


# --- Command-line flags, generated from the settings -------------------------------------------


@dataclasses.dataclass(frozen=True)
class Flag:
    """The command-line form of one setting (see ``setting``).

    ``shape``: ``switch`` (a bool: ``--x`` or ``--no-x``), ``value`` (``--x V``), ``repeat``
    (``--x A --x B``: one of several values, e.g. ``--source``), ``list`` (``--x A B``), ``pairs``
    (``--x NAME=VALUE``, repeatable, into a mapping) or ``positional``.
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
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata or not f.metadata.get("cli", True):
            continue
        tp = _strip_none(hints[f.name])
        origin = typing.get_origin(tp)
        scalar: Callable[[str], Any] = str
        if f.metadata.get("positional"):
            shape = "positional"
            scalar = _scalar(typing.get_args(tp)[0] if origin in (Union, types.UnionType) else tp)
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
        out.append(Flag(f.name, option, shape, scalar, f, hints[f.name]))
    return out


def _help(flag: Flag) -> str:
    text = flag.field.metadata["help"]
    default = flag.field.default
    notes = []
    to_text = flag.field.metadata.get("to_text")
    if default not in (None, dataclasses.MISSING, "") and not isinstance(default, bool):
        text_default = to_text(default) if to_text else f"{default:g}" if isinstance(default, float) else default
        notes.append(f"default {text_default}")
    lo, hi = flag.field.metadata.get("bounds", (None, None))
    if lo is not None or hi is not None:
        notes.append(f"{lo:g}..{hi:g}" if lo is not None and hi is not None else f">= {lo:g}" if lo is not None else f"<= {hi:g}")
    if notes:
        text += f" ({', '.join(notes)})"
    return text.replace("%", "%%")


def _metavar(flag: Flag) -> str | None:
    metavar = flag.field.metadata.get("metavar")
    if metavar is not None:
        return metavar
    tp = _strip_none(flag.hint)
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
            kwargs["action"] = "store_false" if flag.option.startswith("--no-") else "store_true"
        else:
            kwargs.update(type=flag.scalar, metavar=_metavar(flag))
            if flag.shape in ("repeat", "pairs"):
                kwargs["action"] = "append"
            elif flag.shape == "list":
                kwargs.update(nargs="+", action="extend")
        if flag.shape == "positional":
            nargs = "+" if typing.get_origin(_strip_none(flag.hint)) in (Union, types.UnionType, list) else None
            target.add_argument(flag.name, nargs=nargs, **kwargs)
            continue
        target.add_argument(flag.option, dest=flag.name, default=argparse.SUPPRESS, **kwargs)
        for old in meta.get("old_flags", ()):
            target.add_argument(old, dest=flag.name, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                                type=kwargs.get("type"), action=_DeprecatedFlag, current=flag.option)


def parse_pairs(items: list[str], option: str, *, listed: bool) -> dict[str, Any]:
    """``["lane=rle", "drivable=png"]`` -> ``{"lane": "rle", ...}`` (``listed``: comma-separated lists); ConfigError naming ``option``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            example = "obstacle=car,pedestrian" if listed else "drivable=bitpack"
            raise ConfigError(f"{option} {item!r}: expected NAME=VALUE, e.g. {option} {example}")
        out[key.strip()] = [v.strip() for v in value.split(",") if v.strip()] if listed else value.strip()
    return out


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
        elif flag.shape in ("repeat", "positional") and _one_or_many(flag.hint) and len(value) == 1:
            value = value[0]  # the single-value form: --source clip.mp4 is "clip.mp4", not a list
        out[flag.name] = value
    return out


def config_from_flags(cls: type[C], args: argparse.Namespace, *, source: str, config_file: str | Path | None = None) -> C:
    """``cls`` from the flags given, over ``config_file``'s keys when one is given.

    A ``pairs`` flag adds to the file's mapping (``--encoding lane=rle`` keeps the file's other
    topics). Raises ConfigError naming the file or ``source`` and the key.
    """
    data: dict[str, Any] = {}
    if config_file is not None:
        data = rename_old_keys(cls, read_yaml(config_file), source=str(config_file))
        source = f"{config_file} + {source}"
    for name, value in flag_values(cls, args).items():
        if isinstance(value, dict) and isinstance(data.get(name), dict):
            value = {**data[name], **value}
        data[name] = value
    for flag in flags(cls):
        required = flag.field.default is dataclasses.MISSING and flag.field.default_factory is dataclasses.MISSING
        if required and flag.name not in data and flag.option:
            raise ConfigError(f"{source}: {flag.option} is required ({flag.field.metadata['help']})")
    return load_config(cls, data, source=source)


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
            raise ConfigError(f"{where}: {name!r} is not a setting of this node kind")
        if value is None:
            continue
        to_text = flag.field.metadata.get("to_text") or as_text
        if flag.shape == "switch":
            if bool(value) == (not flag.option.startswith("--no-")):
                argv.append(flag.option)  # otherwise the flag left out gives the value
        elif flag.shape == "positional":
            positional += [to_text(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        elif isinstance(value, dict):
            for key, item in value.items():
                text = ",".join(as_text(x) for x in item) if isinstance(item, (list, tuple)) else as_text(item)
                argv += [flag.option, f"{key}={text}"]
        elif isinstance(value, (list, tuple)) and flag.shape in ("repeat", "list"):
            words = [as_text(v) for v in value]
            argv += [flag.option, *words] if flag.shape == "list" else [w for v in words for w in (flag.option, v)]
        else:
            argv += [flag.option, to_text(value)]
    return argv + (["--", *positional] if positional else [])


def as_text(value: Any) -> str:
    """A parameter value as a command-line word (YAML's spelling of booleans)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
