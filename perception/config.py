"""Typed configuration: dataclasses filled from YAML files, CLI flags or launch files, validated once.

``load_config(MyConfig, mapping, source="train.yaml")`` rejects unknown keys with a "did you mean"
hint, checks each value against the field's type (int, float, str, bool, Path, Literal, tuples,
lists, dicts, Optional, nested dataclasses) and its declared range, and raises ``ConfigError``
naming the source and the key. Ranges are declared with ``field(metadata=bounds(lo, hi))``.

A setting that users give (a flag, a YAML key, a launch-node parameter) is declared once, as a
dataclass field made by ``setting``: its type (the annotation), default, range, help, unit (in the
name: ``_s``, ``_ms``) and, where it differs from the field name, its flag. From that one declaration
``perception.flags`` generates a command's argparse flags and turns the parsed flags (and a launch
node's parameters) into the config through ``load_config``, so a flag, a YAML key and a launch
parameter are checked by the same code and fail with the same message. A group of settings that
several commands share (``perception.options.SourceOptions``) is held whole by each, with
``composed``; its settings stay flat keys and flags of the holder (the frame width of ``run``,
``demo`` and ``view`` is one declaration, with one range, read as ``config.source_options.width``)::

    @dataclass
    class ViewConfig:
        alpha: float = setting(0.5, lo=0.0, hi=1.0, help="mask opacity")
        source_options: SourceOptions = composed(SourceOptions, only=("width", "height"))

``same_setting`` copies one declaration into a config that offers it under its own meaning (eval's
``threads`` also sizes torch's pool).

Nothing here parses at import time or evaluates strings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import decimal
import difflib
import logging
import math
import types
import typing
from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

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
    const: Any = None,
    old_names: tuple[str, ...] = (),
    old_flags: tuple[str, ...] = (),
    cli: bool = True,
    listed: str | None = None,
    default_factory: Any = dataclasses.MISSING,
    default_text: str | None = None,
    required_text: str | None = None,
) -> Any:
    """A dataclass field that is a user setting: the one declaration of its default, range and help.

    ``lo``/``hi``: the inclusive range (checked by ``load_config`` for flags, YAML and launch files
    alike). ``flag``: the option when it is not ``--`` + the name with dashes (``--duration`` for
    ``duration_s``); a bool that defaults to True becomes ``--no-NAME``. ``group``: the ``--help``
    section; ``exclusive``: settings sharing this name are mutually exclusive flags. ``positional``:
    a positional argument. ``const``: the value of the flag given without one (``--tasks`` alone).
    ``from_text``/``to_text``: the flag's text <-> the value when it is not a
    plain scalar (``--size 360x480`` -> ``(360, 480)``); ``from_text`` may raise ConfigError.
    ``old_names``/``old_flags``: earlier spellings, still accepted for one release with a
    deprecation warning. ``cli=False``: a YAML/launch key without a flag. ``listed``: a list of
    values of the setting of this name (the field's type ``list[X]``), one flag with commas
    (``--threads 1,2``) or repeated; each value is checked against ``lo``/``hi`` and ``X``'s
    choices and named like that setting (``threads=300 is out of range [0, 256]``), see
    ``listed_setting``. ``default_text``: what ``--help`` says the default is when the declared
    default (None) means "decided when it runs" (``default_text="30"`` for a synthetic camera's rate).
    ``required_text``: what ``--help`` says of a setting without a default when another flag stands
    in for it (``required unless --recover`` for ``record --out``).
    """
    metadata = {
        "help": help, "bounds": (lo, hi), "flag": flag, "metavar": metavar, "group": group,
        "exclusive": exclusive, "positional": positional, "from_text": from_text, "to_text": to_text, "const": const,
        "old_names": tuple(old_names), "old_flags": tuple(old_flags), "cli": cli, "listed": listed,
        "default_text": default_text, "required_text": required_text,
    }
    return field(default=default, default_factory=default_factory, metadata=metadata)


def number_text(value: float) -> str:
    """A bound or default as a person writes it: ``16``, ``0.001``, ``268435456``; never ``1e+07``,
    ``2.68435e+08`` or ``3600.0`` (an integral float is an integer here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer():
            value = int(value)
        else:
            # repr is the shortest text that reads back the same; Decimal writes it out without an exponent
            return format(decimal.Decimal(repr(value)), "f")
    return str(value) if abs(value) < 10**30 else short(value)


def range_text(lo: float | None, hi: float | None) -> str | None:
    """A declared range as ``--help`` and the README show it: ``16..16384``, ``>= 1`` or ``<= 5``."""
    if lo is None and hi is None:
        return None
    if lo is not None and hi is not None:
        return f"{number_text(lo)}..{number_text(hi)}"
    return f">= {number_text(lo)}" if lo is not None else f"<= {number_text(hi)}"


def out_of_range_text(lo: float | None, hi: float | None) -> str:
    """What follows "NAME=VALUE is out of range" in a message: ``[16, 16384]`` for a closed range,
    ``: must be >= 0.001`` for a half-open one (an ``inf`` bound reads like a typo)."""
    if lo is not None and hi is not None:
        return f" [{number_text(lo)}, {number_text(hi)}]"
    return f": must be {range_text(lo, hi)}"


def default_value_text(f: dataclasses.Field) -> str | None:
    """A setting's declared default as its flag would spell it (None: no default to show)."""
    default = f.default
    if default in (None, dataclasses.MISSING, "") or isinstance(default, bool):
        return None
    to_text = f.metadata.get("to_text")
    text = to_text(default) if to_text else number_text(default)
    return text or None


def same_setting(cls: type, name: str, **changes: Any) -> Any:
    """A field declared like ``cls``'s setting ``name`` (default, range, help, flag), for another
    config that offers the same setting; ``changes`` override single items (``default=640``)."""
    found = {f.name: f for f in dataclasses.fields(cls)}[name]
    factory = found.default_factory if "default" not in changes else dataclasses.MISSING
    default = changes.pop("default", found.default)
    if default is None and found.default not in (None, dataclasses.MISSING) and "default_text" not in changes:
        # None here means "not given: the setting's own default applies" (bench pipeline's --threads
        # is the node's): --help shows that default, not nothing.
        changes["default_text"] = found.metadata.get("default_text") or default_value_text(found)
    return field(default=default, default_factory=factory, metadata={**found.metadata, **changes})


def listed_setting(cls: type, name: str, *, default: tuple[Any, ...] = (), **changes: Any) -> Any:
    """A list of values of ``cls``'s setting ``name`` (its range, choices, help and flag), for a
    command that compares several (``perception bench engine --threads 1,2``); the holder's
    annotation is ``list[X]`` with ``X`` the setting's type. ``changes`` override single items."""
    found = {f.name: f for f in dataclasses.fields(cls)}[name]
    flag = found.metadata.get("flag") or "--" + name.replace("_", "-")
    metadata = {**found.metadata, "listed": name, "flag": flag, "old_names": (), "old_flags": (), **changes}
    if not default and "default_text" not in changes:
        # An empty list means "the setting's own default" (bench engine's --provider): --help shows it.
        metadata["default_text"] = found.metadata.get("default_text") or default_value_text(found)
    return field(default_factory=lambda: list(default), metadata=metadata)


def composed(cls: type, *, only: tuple[str, ...] | None = None, group: Any = dataclasses.MISSING,
             help: dict[str, str] | None = None,  # noqa: A002 - the settings' help
             shown: dict[str, dict[str, str]] | None = None) -> Any:
    """A field holding a group of settings (``SourceOptions``), whose settings stay flat in the holder.

    The holder's YAML keys, launch parameters and flags are the group's own (``width``, ``--width``;
    not ``source_options.width``): ``load_config`` builds the group from them with its own
    declarations (the same range, the same message), ``perception.flags`` writes their flags in the
    field's place. ``only``: the group's settings this holder offers, in this order (the others keep
    their defaults and are unknown keys here); ``group``: their ``--help`` section here (None: the
    holder's main list); ``help``: setting name -> its help text here. Ranges and defaults are the
    group's, never changed here; ``shown`` only changes what ``--help`` says of them (setting name ->
    ``{"default_text": ..., "help_range": ...}``), where this holder takes less (the demo's synthetic
    camera draws widths of 64..1920 of the 16..16384 a camera may be asked for).
    """
    names = tuple(f.name for f in dataclasses.fields(cls) if f.init) if only is None else tuple(only)
    unknown = [n for n in names if n not in {f.name for f in dataclasses.fields(cls)}]
    if unknown:
        raise TypeError(f"composed({cls.__name__}): no setting {unknown[0]!r}")
    changes = {} if group is dataclasses.MISSING else {"group": group}
    helps = {name: {"help": text} for name, text in (help or {}).items()}
    for name, extra in (shown or {}).items():
        helps[name] = {**helps.get(name, {}), **extra}
    return field(default_factory=cls, metadata={"composed": (cls, names, changes, helps)})


@dataclasses.dataclass(frozen=True)
class Declared:
    """One setting as a holder offers it: its field (with the holder's ``composed`` changes), type
    hint, and ``owner``, the holder's field holding it (a ``composed`` group; None: the holder's own)."""

    field: dataclasses.Field
    hint: Any
    owner: str | None = None


def declared(cls: type) -> list[Declared]:
    """The settings ``cls`` takes as keys and flags, in order: its own fields and, in place of each
    ``composed`` field, the group's settings it offers."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if "composed" not in f.metadata:
            out.append(Declared(f, hints[f.name]))
            continue
        group_cls, names, changes, helps = f.metadata["composed"]
        inner = {g.name: g for g in dataclasses.fields(group_cls)}
        inner_hints = typing.get_type_hints(group_cls)
        for name in names:
            g = inner[name]
            metadata = {**g.metadata, **changes, **helps.get(name, {})}
            shown = field(default=g.default, default_factory=g.default_factory, metadata=metadata)
            shown.name, shown.type = g.name, g.type
            out.append(Declared(shown, inner_hints[name], f.name))
    return out


def parse_hw(text: str, *, what: str = "--size", minimum: int = 1) -> tuple[int, int]:
    """``"360x480"`` -> (360, 480): the one parser of HEIGHTxWIDTH sizes (CLI flags, dataset specs).

    Raises:
        ConfigError: not two integers around an ``x``, or a side below ``minimum``; it names
            ``what`` and shows the expected form.
    """
    h, sep, w = str(text).strip().lower().partition("x")
    if not sep or not h.strip().isdigit() or not w.strip().isdigit():
        raise ConfigError(f"bad {what} {short(text)}: expected HEIGHTxWIDTH, e.g. 360x480")
    size = (int(h), int(w))
    if min(size) < minimum:
        raise ConfigError(f"bad {what} {short(text)}: each side must be at least {minimum}")
    return size


def hw_from_text(text: str) -> list[int]:
    """``--size 360x480`` -> ``[360, 480]``, the value of an ``input_hw`` setting (``from_text``)."""
    return list(parse_hw(text))


def hw_to_text(hw: tuple[int, int] | list[int]) -> str:
    """``(360, 480)`` -> ``"360x480"``: an ``input_hw`` setting as its flag's text (``to_text``)."""
    return f"{hw[0]}x{hw[1]}"


def short(value: Any, limit: int = 70) -> str:
    """``repr(value)`` cut to about ``limit`` characters with "...": the way an error message quotes
    a value it refuses, so a long list or string does not become a line of megabytes. Walks only as
    much of a container as it shows (a list of a million items costs what its first few do)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return f"an integer of {value.bit_length()} bits"  # str() of a huge int is slow, or refused
    text = _bounded_repr(value, limit + 1)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cut(text: str, limit: int = 70) -> str:
    """``text`` (a name, a key, a flag's words) cut to ``limit`` characters with "..." when longer."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bounded_repr(value: Any, budget: int) -> str:
    """About the first ``budget`` characters of ``repr(value)`` (more only when shorter is impossible)."""
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        opening, closing = ("[", "]") if isinstance(value, list) else ("(", ")") if isinstance(value, tuple) else ("{", "}")
        parts: list[str] = []
        used = 1
        items = value.items() if isinstance(value, dict) else value
        for item in items:
            if used > budget:
                parts.append("...")
                break
            if isinstance(value, dict):
                text = f"{_bounded_repr(item[0], budget - used)}: {_bounded_repr(item[1], budget - used)}"
            else:
                text = _bounded_repr(item, budget - used)
            parts.append(text)
            used += len(text) + 2
        return opening + ", ".join(parts) + closing
    if isinstance(value, (str, bytes, bytearray)) and len(value) > budget:
        return repr(value[:budget])
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return f"<an integer of {value.bit_length()} bits>"
    return repr(value)


def load_config(cls: type[C], data: dict[str, Any], *, source: str) -> C:
    """Build dataclass ``cls`` from ``data``; every error names ``source`` and the key.

    The settings of a ``composed`` group are flat keys of ``data``; they build the group (with the
    group's own checks, under the same ``source``).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
    settings = {d.field.name: d for d in declared(cls)}
    data = rename_old_keys(cls, data, source=source)
    unknown = [k for k in data if k not in settings]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(settings), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(settings)}"
        raise ConfigError(f"{source}: unknown key {short(key)}{hint}")
    kwargs: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    for name, value in data.items():
        d = settings[name]
        if d.owner is not None:
            groups.setdefault(d.owner, {})[name] = value
            continue
        try:
            kwargs[name] = _checked(d, name, value, source)
        except ConfigError as exc:
            raise _about_setting(exc, d.field.metadata.get("listed") or name, source) from None
    holder = {f.name: f for f in dataclasses.fields(cls)}
    for owner, values in groups.items():
        kwargs[owner] = load_config(holder[owner].metadata["composed"][0], values, source=source)
    missing = [
        name
        for name, d in settings.items()
        if d.owner is None and name not in kwargs
        and d.field.default is dataclasses.MISSING and d.field.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{source}: missing required key {missing[0]!r}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ validation: about several settings, or none
        raise _about_setting(ConfigError(f"{source}: {exc}"), None, source) from None


def _checked(d: Declared, name: str, value: Any, source: str) -> Any:
    """``value`` of setting ``d`` converted to its type and checked against its range."""
    listed = d.field.metadata.get("listed")
    if listed:  # each value checked, and named, like one value of that setting
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {name}: expected a list, got {short(value)}")
        item = (typing.get_args(d.hint) or (Any,))[0]
        out = [_coerce(v, item, f"{source}: {listed}") for v in value]
        checked = out
    else:
        out = _coerce(value, d.hint, f"{source}: {name}")
        checked = [out]
    lo, hi = d.field.metadata.get("bounds", (None, None))
    for v in checked:
        is_number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if is_number and ((lo is not None and v < lo) or (hi is not None and v > hi)):
            raise ConfigError(f"{source}: {listed or name}={_number(v)} is out of range{out_of_range_text(lo, hi)}")
    return out


def _about_setting(exc: ConfigError, setting: str | None, source: str) -> ConfigError:
    """``exc`` (a message ``<source>: <detail>``) marked with the setting it is about, so that the
    command line can say it its own way: ``perception.cli`` names the command and the flag as typed
    (``train: lr=-1.0 is out of range [0, 10] (--lr -1)``) where the value came from a flag."""
    text = str(exc)
    exc.setting = setting
    exc.source = source
    exc.detail = text[len(source) + 2:] if text.startswith(f"{source}: ") else text
    return exc


def rename_old_keys(cls: type, data: dict[str, Any], *, source: str, warn: bool = True) -> dict[str, Any]:
    """``data`` with the deprecated keys of ``cls``'s settings (``old_names``) renamed, each with a
    warning (``warn=False``: none, for data whose warnings were given when it was first loaded)."""
    out = dict(data)
    for d in declared(cls):
        f = d.field
        for old in f.metadata.get("old_names", ()):
            if old not in out:
                continue
            if f.name in out:
                raise ConfigError(f"{source}: {old!r} is the deprecated name of {f.name!r}; give only {f.name!r}")
            if warn:
                log.warning("%s: key %r is deprecated and will be removed in the next release; use %r", source, old, f.name)
            out[f.name] = out.pop(old)
    return out


def config_to_dict(obj: Any) -> Any:
    """A plain, YAML/JSON-serialisable view of a config dataclass (for checkpoints and reports)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            value = config_to_dict(getattr(obj, f.name))
            if "composed" in f.metadata:  # a group's settings are flat keys of the holder
                out.update({name: value[name] for name in f.metadata["composed"][1]})
            else:
                out[f.name] = value
        return out
    if isinstance(obj, (list, tuple)):
        return [config_to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): config_to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _number(value: float) -> str:
    """A number for a message: as written, or its size when printing it would flood the line."""
    return str(value) if isinstance(value, float) or abs(value) < 10**30 else short(value)


def _key(key: Any) -> str:
    """A mapping key inside a message's "where" (``source: encoding.lane``), cut short when long."""
    return cut(str(key), 60)


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
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {short(value)} does not fit {_type_name(tp)}")
    if origin is Literal:
        if value in args:
            return value
        choices = ", ".join(repr(a) for a in args)
        raise ConfigError(f"{where}: {short(value)} is not one of {choices}")
    if dataclasses.is_dataclass(tp):
        return load_config(tp, value, source=where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {short(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {short(value)}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{_key(k)}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {short(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {short(value)}")
    if tp is float:
        number = value
        if isinstance(value, str):
            # YAML 1.1 reads ``5e1`` (no dot) as a string; the flag --fps 5e1 is a number.
            with contextlib.suppress(ValueError):
                number = float(value)
        if isinstance(number, (int, float)) and not isinstance(number, bool) and not math.isnan(number):
            # NaN compares false with every bound, so it would pass any range check.
            if math.isinf(number):  # inf (or 1e400) passes a range open at the top: --duration inf ran for ever
                raise ConfigError(f"{where}: expected a finite number, got {short(value)}")
            return float(number)
        raise ConfigError(f"{where}: expected a number, got {short(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {short(value)}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{where}: expected a path, got {short(value)}")
    return value
