"""The one way this program starts a child ``perception`` process: launch's nodes, the node under
``perception bench pipeline`` (and ``bench multicamera``'s), ``--engine auto``'s probe.

``python -m perception`` would put the folder it is started in first on ``sys.path``: a
``perception.py`` (or a ``perception/`` package) there, a user's own script of that name or another
user's file in a shared folder such as /tmp, would run instead of every node, as the launching user.
``perception_command`` starts the module so that the start folder is never searched: Python's ``-P``
(3.11 and later), else ``-c`` with a short program that drops that entry and runs the module as
``-m`` does (``runpy``). ``ps`` shows ``python -P -m perception run ...``.

``child_env`` is the environment for such a child: when this process imported ``perception`` from
its own start folder (a checkout run as ``python -m perception`` without installing it), that folder
is the one place the child could not find it, so its absolute path is added to ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

# Python 3.10 has no -P: drop the start folder's entry ('' under -c), then run the module as -m would.
_RUN_MODULE = ("import runpy, sys; sys.path[:1] = [p for p in sys.path[:1] if p]; "
               "runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")


def module_command(module: str, *args: str, safe_path_flag: bool | None = None) -> list[str]:
    """``[python, -P, -m, module, *args]``, or the ``-c`` form where Python has no ``-P``
    (``safe_path_flag``: None, whichever this Python supports; tests pick one)."""
    if safe_path_flag is None:
        safe_path_flag = sys.version_info >= (3, 11)
    if safe_path_flag:
        return [sys.executable, "-P", "-m", module, *args]
    return [sys.executable, "-c", _RUN_MODULE.format(module=module), *args]


def perception_command(*args: str) -> list[str]:
    """The command line of ``perception ARGS...`` as a child of this process, run by this very
    interpreter and never importing from the folder it starts in."""
    return module_command("perception", *args)


def shown(command: list[str]) -> str:
    """A ``perception_command`` as a user would type it (``perception -q run ...``), for reports."""
    prefix = len(perception_command())
    return shlex.join(["perception", *command[prefix:]])


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) for a ``perception_command`` child: with this package's
    folder added to ``PYTHONPATH`` when only this process's start folder gives it (see above)."""
    out = dict(os.environ if env is None else env)
    root = _root_from_start_folder()
    if root is not None:
        out["PYTHONPATH"] = os.pathsep.join([*filter(None, [out.get("PYTHONPATH")]), root])
    return out


def _root_from_start_folder() -> str | None:
    """The folder ``perception`` was imported from, when that is this process's start folder
    (``sys.path[0]`` of ``python -m``/``-c``/a script beside it), which a safe child does not search."""
    import perception

    if getattr(sys.flags, "safe_path", False) or not sys.path:
        return None  # this process ran with -P itself: its first entry is not the start folder
    root = Path(perception.__file__).resolve().parents[1]
    try:
        first = Path(sys.path[0] or os.getcwd()).resolve()
    except OSError:  # the start folder was removed
        return None
    return str(root) if first == root else None
