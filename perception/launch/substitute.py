"""``$(var NAME)`` and ``$(env NAME [DEFAULT])`` substitutions, and the scalar <-> text rules they use.

A value that is exactly one substitution keeps the argument's type (``fps: $(var fps)`` stays a
number); inside a longer string it is spliced in as text (``as_text``: ``true``/``false`` for
booleans). ``parse_scalar`` reads ``NAME:=VALUE`` and ``$(env NAME DEFAULT)`` values.

Substitutions nest as in ROS 2 launch: an argument (NAME or DEFAULT) may hold substitutions
(``$(env OUT $(var dir)/runs)``, ``$(var $(env WHICH))``), resolved innermost first; an argument
in quotes (``'...'`` or ``"..."``) may hold spaces and parentheses, and ``''`` is an empty one
(``$(env NAME '')``: empty when unset). A resolved value is never substituted again, so values
cannot make a cycle; ``var_names`` gives the statically named arguments for the cycle checks of
arg defaults.
"""

from __future__ import annotations

import os
import re
from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Any

from perception.config import cut, short
from perception.errors import ConfigError
from perception.flags import as_text

#: A substitution's kind: ``var``, ``env`` (ROS 2's spelling of the others: letters, digits, "_", "-").
_KIND_RE = re.compile(r"[A-Za-z_][\w-]*")
#: Deeper nesting is refused (a hostile file must not reach Python's recursion limit).
MAX_DEPTH = 16
#: Linux's limit on one command-line argument (MAX_ARG_STRLEN, 32 pages of 4 KiB), which every node
#: parameter becomes: no substitution may make a longer value (``$(var a)$(var a)`` doubled 300
#: times over took 10 GB before), checked as the value is built.
MAX_ARG_BYTES = 128 * 1024
#: The most text the substitutions of one launch make in all (its files and includes): the
#: same 10 MB as a YAML file's text (``yamlfile.MAX_YAML_TEXT``), so many args each just under
#: ``MAX_ARG_BYTES`` cannot add up to gigabytes either.
MAX_TOTAL_TEXT = 10_000_000
KNOWN = "known: $(var NAME), $(env NAME [DEFAULT]); NAME and DEFAULT may hold substitutions"


@dataclass(frozen=True)
class _Sub:
    """One ``$(kind arg ...)``; each argument is a tuple of literal strings and nested ``_Sub``."""

    kind: str
    args: tuple[tuple[str | _Sub, ...], ...]
    source: str  # as written, for messages


class TextBudget:
    """What is left of ``MAX_TOTAL_TEXT`` for one launch's substitutions (one for all its files)."""

    def __init__(self, total: int = MAX_TOTAL_TEXT) -> None:
        self.total, self.left = total, total

    def spend(self, chars: int, where: str) -> None:
        self.left -= chars
        if self.left < 0:
            raise ConfigError(f"{where}: the substitutions of this launch make more than {self.total // 10**6} MB of "
                              "text in all; use fewer or shorter values")


class _Fault(Exception):
    """A syntax error in a value (the message, without where it is)."""


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


class _Parser:
    """Reads a string into literal text and ``_Sub`` trees (the ROS 2 launch grammar, minus escapes)."""

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def parts(self, mode: str, depth: int, quote: str = "") -> list[str | _Sub]:
        """Text and substitutions up to the end (``mode`` "top"), the end of an argument ("arg":
        whitespace or ")") or the closing ``quote`` ("quoted")."""
        text, out, buf = self.text, [], []
        while self.pos < len(text):
            char = text[self.pos]
            if text.startswith("$(", self.pos):
                if buf:
                    out.append("".join(buf))
                    buf = []
                out.append(self.substitution(depth + 1))
                continue
            if mode == "quoted" and char == quote:
                break
            if mode == "arg":
                if char.isspace() or char == ")":
                    break
                if char in "'\"":
                    self.pos += 1
                    inner = self.parts("quoted", depth, char)
                    if self.pos >= len(text):
                        raise _Fault(f"unfinished substitution in {short(text)}: a quote ({char}) is not closed; close it")
                    self.pos += 1
                    if buf:
                        out.append("".join(buf))
                        buf = []
                    out.extend(inner)
                    continue
                if char == "(":
                    raise _Fault(f"a '(' in an argument of a substitution in {short(text)}; put that argument "
                                 "in quotes ('...')")
            buf.append(char)
            self.pos += 1
        if buf:
            out.append("".join(buf))
        return out

    def substitution(self, depth: int) -> _Sub:
        text, start = self.text, self.pos
        if depth > MAX_DEPTH:
            raise _Fault(f"substitutions nested more than {MAX_DEPTH} deep; use an arg for the inner ones")
        kind = _KIND_RE.match(text, start + 2)
        if kind is None:
            raise _Fault(f"bad substitution {short(text[start:])}; {KNOWN}")
        self.pos = kind.end()
        args: list[tuple[str | _Sub, ...]] = []
        while True:
            gap = self.pos
            while self.pos < len(text) and text[self.pos].isspace():
                self.pos += 1
            if self.pos >= len(text):
                raise _Fault(f"unfinished substitution in {short(text)}: the '$(' at character {start + 1} has no "
                             "closing ')'; close it")
            if text[self.pos] == ")":
                self.pos += 1
                return _Sub(kind.group(), tuple(args), text[start:self.pos])
            if self.pos == gap:  # e.g. "$(env:X)": the kind runs into something that is not a space
                raise _Fault(f"bad substitution {short(text[start:])}; {KNOWN}")
            args.append(tuple(self.parts("arg", depth)))


def _parse(text: str) -> list[str | _Sub]:
    parser = _Parser(text)
    return parser.parts("top", 0)


def var_names(value: Any) -> list[str]:
    """The argument names ``value`` (a scalar, or nested dicts and lists) reads with ``$(var NAME)``, in order.

    Nested ones count (``$(env X $(var y))`` reads ``y``); a name that is itself a substitution is
    known only when it is resolved. A value with a syntax error reads none (``substitute`` says why).
    """
    if isinstance(value, dict):
        return [name for v in value.values() for name in var_names(v)]
    if isinstance(value, list):
        return [name for v in value for name in var_names(v)]
    if not isinstance(value, str) or "$(" not in value:
        return []
    try:
        parts = _parse(value)
    except _Fault:
        return []
    out: list[str] = []

    def walk(part: str | _Sub) -> None:
        if isinstance(part, _Sub):
            if part.kind == "var" and len(part.args) == 1 and all(isinstance(p, str) for p in part.args[0]):
                out.append("".join(part.args[0]))  # type: ignore[arg-type]
            for arg in part.args:
                for inner in arg:
                    walk(inner)

    for part in parts:
        walk(part)
    return out


def substitute(value: Any, values: dict[str, Any], declared: Container[str], where: str,
               below: Container[str] = (), budget: TextBudget | None = None) -> Any:
    """``value`` (a scalar, or nested dicts and lists) with every substitution resolved, innermost first.

    ``values`` holds the arguments that have a value, ``declared`` the names of all declared ones,
    ``below`` (for an arg's default) the arguments of the file that come at or below that arg, which
    its default cannot read; ``budget`` the text the launch's substitutions may still make (a new
    ``TextBudget`` when None). Raises ConfigError naming ``where`` for a missing argument, an unset
    variable, bad syntax, or text that substitutions make past ``MAX_ARG_BYTES`` characters in one
    value or the budget in all (checked as it is built, before it is).
    """
    budget = TextBudget() if budget is None else budget
    if isinstance(value, dict):
        return {k: substitute(v, values, declared, f"{where}: {cut(str(k), 60)}", below, budget)
                for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, values, declared, f"{where}[{i}]", below, budget) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$(" not in value:
        return value
    try:
        parts = _parse(value)
    except _Fault as exc:
        raise ConfigError(f"{where}: {exc}") from None

    def lookup(sub: _Sub, typed: bool) -> Any:
        """The value of ``sub``: typed (an argument's value; a variable or text read by ``parse_scalar``,
        as NAME:=VALUE is) where it is a whole value, else as it would be spliced into text."""
        if sub.kind == "var" and len(sub.args) == 1:
            name = resolve(sub.args[0], typed=False)
            if name in below:
                raise ConfigError(f"{where}: $(var {cut(name)}) names argument {short(name)}, which is this arg or "
                                  "declared below it; an arg default may use only the arguments declared above it")
            if name in values:
                return values[name]
            if name in declared:
                raise ConfigError(f"{where}: missing launch argument {short(name)}; pass {name}:=VALUE or give it a default")
            raise ConfigError(f"{where}: $(var {cut(name)}) names no declared argument; add an 'arg' entry for it above")
        if sub.kind == "env" and len(sub.args) in (1, 2):
            name = resolve(sub.args[0], typed=False)
            # As in ROS 2 launch, the DEFAULT is resolved (and must resolve) even when the variable is set.
            default = resolve(sub.args[1], typed) if len(sub.args) == 2 else None
            if name in os.environ:
                return parse_scalar(os.environ[name]) if typed else os.environ[name]
            if len(sub.args) == 2:
                return default
            raise ConfigError(f"{where}: environment variable {short(name)} is not set; set it or add a default")
        raise ConfigError(f"{where}: bad substitution {short(sub.source)}; {KNOWN}")

    def resolve(parts: Sequence[str | _Sub], typed: bool, scalar: bool = True) -> Any:
        """Text and substitutions: ``typed``, one substitution alone (spaces around it aside) is its
        value, and text is read by ``parse_scalar`` when ``scalar`` (``$(env NAME 256)``); else text."""
        subs = [p for p in parts if not (isinstance(p, str) and not p.strip())]
        if typed and len(subs) == 1 and isinstance(subs[0], _Sub):
            return lookup(subs[0], typed=True)
        pieces, size = [], 0
        for part in parts:
            piece = part if isinstance(part, str) else as_text(lookup(part, typed=False))
            size += len(piece)
            if size > MAX_ARG_BYTES:  # before joining: a value doubled over and over stops here
                raise ConfigError(f"{where}: its substitutions make a value of more than {MAX_ARG_BYTES:,} characters, "
                                  "more than one command-line argument may hold; shorten the values it uses")
            pieces.append(piece)
        budget.spend(size, where)
        joined = "".join(pieces)
        return parse_scalar(joined) if typed and scalar else joined

    return resolve(parts, typed=True, scalar=False)  # the value itself: its text stays text
