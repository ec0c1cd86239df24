"""The wire readers' JSON: strict RFC 8259, bounded, the same rule as the C and JS clients.

Every header and JSON payload a reader takes from the network (``wire.parse_header``, the
subscriber's JSON topics, ``replay``'s recorded documents) goes through ``load_json``. Python's
``json`` module alone is more lenient than the other readers and lets a message crash or stall a
process; the hooks below close those gaps, and the README's limits table states the rule.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from perception import contracts
from perception.config import short


class WireError(ValueError):
    """A message that does not follow the wire format (wrong frame count, bad header)."""



def load_json(data: bytes | memoryview, *, max_bytes: int, what: str) -> Any:
    """Parse untrusted UTF-8 JSON with bounded size, depth and integer length.

    ``json.loads`` alone lets a message crash or stall a reader: a 5,000-digit integer raises
    ValueError (Python's int-from-string limit), a deeply nested array RecursionError, and a big
    document costs memory. Here the size is checked before parsing, integer literals longer than
    ``contracts.MAX_JSON_INT_CHARS`` are refused before conversion, NaN/Infinity are refused, the C
    parser's own recursion guard is turned into a WireError, and the nesting of the result is
    checked against ``contracts.MAX_JSON_DEPTH`` (iteratively). Raises WireError naming ``what``.
    """
    size = memoryview(data).nbytes
    if size > max_bytes:
        raise WireError(f"{what} has {size} bytes, more than the limit of {max_bytes}")
    try:
        text = bytes(data).decode("utf-8")
        doc = json.loads(
            text, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant,
            object_pairs_hook=_unique_keys,
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"{what} is not UTF-8 JSON ({exc})") from None
    except _JsonLimit as exc:
        raise WireError(f"{what}: {exc}") from None
    except RecursionError:
        raise WireError(f"{what} is nested too deeply (limit {contracts.MAX_JSON_DEPTH})") from None
    if nesting_depth(doc) > contracts.MAX_JSON_DEPTH:
        raise WireError(f"{what} is nested too deeply (limit {contracts.MAX_JSON_DEPTH})")
    # UTF-8 cannot carry a lone surrogate, but a \ud800 escape can: Python keeps it in the str,
    # and printing or re-encoding it later raises. A \u0000 escape ends a C string early (cJSON
    # cuts the string there). The C and JS readers refuse both too.
    if _ODD_ESCAPE.search(text) and (problem := _string_problem(doc)) is not None:
        raise WireError(f"{what} holds {problem}")
    return doc


class _JsonLimit(ValueError):
    """A JSON literal beyond the reader's bounds (raised from the parser's hooks)."""


def _bounded_int(text: str) -> int:
    if len(text) > contracts.MAX_JSON_INT_CHARS:
        raise _JsonLimit(f"integer literal of {len(text)} characters (limit {contracts.MAX_JSON_INT_CHARS})")
    return int(text)


def _no_constant(name: str) -> float:
    raise _JsonLimit(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    """A number with a fraction or exponent; one that overflows (``1e400``) is refused, as NaN is."""
    value = float(text)
    if not math.isfinite(value):
        raise _JsonLimit(f"number {text[:40]} overflows to infinity")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are each given once: readers differ on which of two equal keys wins
    (cJSON the first, Python and JSON.parse the last), so a message with both is refused."""
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _JsonLimit(f"key {short(twice)} is given twice in one object")
    return doc


_ODD_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F]|0000)")


def _string_problem(doc: Any) -> str | None:
    """What is wrong with a string (key or value) of a parsed document: a lone surrogate or a NUL."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return "a \\u0000 (NUL) escape in a string"
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return "a lone UTF-16 surrogate escape (\\ud800-\\udfff without its pair)"
        elif isinstance(node, dict):
            stack.extend(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def nesting_depth(doc: Any, limit: int = contracts.MAX_JSON_DEPTH) -> int:
    """Deepest nesting of dicts and lists (tuples too) in a parsed document, without recursion;
    stops counting once past ``limit``. Also bounds a checkpoint's config and metrics."""
    deepest = 0
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list, tuple)))
    return deepest
