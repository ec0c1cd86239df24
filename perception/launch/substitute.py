"""``$(var NAME)`` and ``$(env NAME [DEFAULT])`` substitutions, and the scalar <-> text rules they use.

A value that is exactly one substitution keeps the argument's type (``fps: $(var fps)`` stays a
number); inside a longer string it is spliced in as text (``as_text``: ``true``/``false`` for
booleans). ``parse_scalar`` reads ``NAME:=VALUE`` and ``$(env NAME DEFAULT)`` values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Container
from typing import Any

from perception.config import cut, short
from perception.errors import ConfigError
from perception.flags import as_text

SUBSTITUTION_RE = re.compile(r"\$\((\w+)((?:\s+[^()\s]+)*)\s*\)")


def parse_scalar(text: str) -> Any:
    """``"2"`` -> 2, ``"0.5"`` -> 0.5, ``"true"`` -> True; anything else stays a string."""
    # Deliberately narrower than YAML (where "on" or "no" would become booleans): ints, floats,
    # true/false, everything else a string.
    if text in ("true", "false"):
        return text == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def var_names(value: Any) -> list[str]:
    """The argument names ``value`` (a scalar, or nested dicts and lists) reads with ``$(var NAME)``, in order."""
    if isinstance(value, dict):
        return [name for v in value.values() for name in var_names(v)]
    if isinstance(value, list):
        return [name for v in value for name in var_names(v)]
    if not isinstance(value, str) or "$(" not in value:
        return []
    return [words[0] for m in SUBSTITUTION_RE.finditer(value)
            if m.group(1) == "var" and len(words := m.group(2).split()) == 1]


def substitute(value: Any, values: dict[str, Any], declared: Container[str], where: str) -> Any:
    """``value`` (a scalar, or nested dicts and lists) with every substitution resolved.

    ``values`` holds the arguments that have a value, ``declared`` the names of all declared ones.
    Raises ConfigError naming ``where`` for a missing argument, an unset variable or bad syntax.
    """
    if isinstance(value, dict):
        return {k: substitute(v, values, declared, f"{where}: {cut(str(k), 60)}") for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, values, declared, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "$(" not in value:
        return value

    def lookup(match: re.Match[str]) -> Any:
        kind, words = match.group(1), match.group(2).split()
        if kind == "var" and len(words) == 1:
            name = words[0]
            if name in values:
                return values[name]
            if name in declared:
                raise ConfigError(f"{where}: missing launch argument {short(name)}; pass {name}:=VALUE or give it a default")
            raise ConfigError(f"{where}: $(var {cut(name)}) names no declared argument; add an 'arg' entry for it above")
        if kind == "env" and len(words) in (1, 2):
            if words[0] in os.environ:
                return os.environ[words[0]]
            if len(words) == 2:
                return parse_scalar(words[1])
            raise ConfigError(f"{where}: environment variable {short(words[0])} is not set; set it or add a default")
        raise ConfigError(f"{where}: bad substitution {short(match.group(0))}; known: $(var NAME), $(env NAME [DEFAULT])")

    whole = SUBSTITUTION_RE.fullmatch(value.strip())
    if whole:
        return lookup(whole)
    text = SUBSTITUTION_RE.sub(lambda m: as_text(lookup(m)), value)
    if "$(" in text:
        raise ConfigError(f"{where}: unfinished substitution in {short(value)}; write $(var NAME)")
    return text


