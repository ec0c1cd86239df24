"""Reading YAML settings files (``--config``, launch files, class tables) safely: one reader.

``parse_yaml`` is ``yaml.safe_load`` that also refuses what PyYAML would take silently or at great
cost: a key given twice, aliases that expand past a bound ("billion laughs"), a value that holds
itself, nesting too deep, a NUL character (``"\\0"``, which no path, name or flag can hold). ``read_yaml``
reads a file's top-level mapping with it, from a file of at most ``MAX_YAML_FILE_BYTES``. What the values
mean is ``perception.config``'s business (``load_config``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perception.config import short
from perception.errors import ConfigError, permission_denied, why_not_a_file

#: The most values a YAML settings file may hold once its aliases are expanded: far above any real
#: config or launch file, far below what a few hundred bytes of nested aliases ("billion laughs")
#: expand to, which would otherwise cost gigabytes and minutes in the checks and error messages.
MAX_YAML_VALUES = 100_000
#: The most text (characters of scalars) a YAML settings file may expand to through aliases: 5,000
#: references to one 100 kB string printed a 500 MB launch plan.
MAX_YAML_TEXT = 10_000_000
#: The largest settings file read: the same 10 MB (a 200 MB launch file, mostly a comment, took
#: 430 MB of memory to read whole).
MAX_YAML_FILE_BYTES = 10_000_000
#: In ``_check_tree``: the node is a key (not the value of one).
_A_KEY = object()


def parse_yaml(text: str, *, source: str) -> Any:
    """The project's one YAML reader for settings (``--config``, launch files, class tables).

    ``yaml.safe_load``, and also refusing, with a ConfigError naming ``source``:

    - a key given twice in one mapping (YAML would keep the last one without a word); merge keys
      (``<<: *defaults``) and the keys that override them stay allowed;
    - a document whose aliases expand to more than ``MAX_YAML_VALUES`` values, counted on the
      parsed nodes before anything is built (each node once, so counting costs what the file's
      own size does), or that refers to itself;
    - nesting too deep for the parser;
    - a NUL character in a key or a value (a YAML escape, ``"\\0"`` or ``"\\u0000"``): the system
      takes no path, name or command-line argument holding one, so each use would fail with a
      traceback (``embedded null byte``) wherever it went; named by its key and line.
    """
    import yaml  # here, not at the top: a node started without --config never pays its import

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)  # libyaml's parser when there
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_tree(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}: not valid YAML{where}: {getattr(exc, 'problem', None) or short(str(exc))}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to read; flatten the file") from None
    finally:
        loader.dispose()


def _check_tree(root: Any, source: str) -> None:
    """ConfigError when the parsed YAML node tree ``root`` has a mapping with a key given twice,
    holds itself, or, its aliases expanded, holds more than ``MAX_YAML_VALUES`` values or
    ``MAX_YAML_TEXT`` characters. Each node is
    visited once (memoised by id), so the check costs what the file's size does whatever the
    expansion; it runs before anything is built (and before merge keys copy their mappings)."""
    import yaml

    merge_tag = "tag:yaml.org,2002:merge"
    sizes: dict[int, int] = {}
    text: dict[int, int] = {}  # characters of scalars, aliases expanded
    text_read = 0
    open_nodes: set[int] = set()
    # Each node with the key it is the value of (or is inside of; _A_KEY for a key), for the NUL message.
    stack: list[tuple[Any, bool, Any]] = [(root, False, None)]

    def children(node: Any) -> list[Any]:
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        return []

    while stack:
        node, done, under = stack.pop()
        key = id(node)
        if done:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children(node))
            text[key] = len(node.value) if isinstance(node, yaml.ScalarNode) else sum(text[id(c)] for c in children(node))
            # More values than nodes seen so far, or more text than the file holds: aliases repeat
            # some (a long plain list, or a long string used once, costs what it is).
            if (sizes[key] > MAX_YAML_VALUES and sizes[key] > len(sizes)) or (
                text[key] > MAX_YAML_TEXT and text[key] > text_read
            ):
                raise ConfigError(
                    f"{source}: its aliases (*name) expand to more than {MAX_YAML_VALUES:,} values or "
                    f"{MAX_YAML_TEXT // 10**6} MB of text; write the values out or nest fewer aliases"
                )
            continue
        if key in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            text_read += len(node.value)  # each node once: the text the file itself holds
            if "\0" in node.value:
                what = "a key" if under is _A_KEY else "a value" if under is None else f"the value of key {short(under, 60)}"
                raise ConfigError(f"{source}: {what} at line {node.start_mark.line + 1} holds a NUL character (\\0), "
                                  "which no path, name or flag can hold; remove it")
        if key in open_nodes:
            raise ConfigError(f"{source}: the value at line {node.start_mark.line + 1} holds itself through an alias; "
                              "remove the loop")
        open_nodes.add(key)
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for key_node, _ in node.value:
                if key_node.tag == merge_tag or not isinstance(key_node, yaml.ScalarNode):
                    continue  # merged keys may be overridden by the mapping's own; complex keys are PyYAML's
                ident, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
                if ident in seen:
                    lines = f"line {line}" if seen[ident] == line else f"lines {seen[ident]} and {line}"
                    raise ConfigError(f"{source}: key {short(key_node.value, 60)} is given twice ({lines}); keep one")
                seen[ident] = line
        stack.append((node, True, under))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                label = key_node.value if isinstance(key_node, yaml.ScalarNode) else under
                stack.extend((c, False, w) for c, w in ((key_node, _A_KEY), (value_node, label)) if id(c) not in sizes)
        else:
            stack.extend((c, False, under) for c in children(node) if id(c) not in sizes)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``parse_yaml``; ConfigError naming the file when it is missing or malformed."""
    p = Path(path)
    why = why_not_a_file(p)  # "not found", "is a directory", a FIFO or /dev/null, permission denied on the way
    if why == "is a directory":
        raise ConfigError(f"config file {p} is a directory; pass a .yaml file")
    if why.startswith("cannot be read:"):
        raise ConfigError(f"config file {p} {why}")
    if why != "is a file":
        raise ConfigError(f"config file {p} {why}; check the path")
    try:
        if p.stat().st_size > MAX_YAML_FILE_BYTES:  # a regular file (why_not_a_file): its size is what a read gives
            raise ConfigError(f"{p} is larger than {MAX_YAML_FILE_BYTES // 10**6} MB, more than a settings or launch "
                              "file holds; pass the YAML file itself (a large value belongs in a file it names)")
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{p} is not a text file (not UTF-8); pass a YAML file") from None
    except PermissionError:
        raise ConfigError(f"config file {p} {permission_denied(p)}") from None
    data = parse_yaml(text, source=str(p))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of keys to values, got {type(data).__name__}")
    return data
