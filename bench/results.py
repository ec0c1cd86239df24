"""A bench run's results file: the JSON every figure of its report is read from.

``new_results(kind, command)`` starts one (schema, kind, UTC time, command line, environment),
``write_results`` writes it as ``perception.bench.json`` and ``load_results`` reads one back for
``perception bench report``, refusing a file that is not one or holds what the bench never writes
(``report_checks.py``). ``OUTPUT_FILES`` names every file a bench output folder may hold; the
Markdown report and the plots made from the JSON are ``report.py``'s and ``plots.py``'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from perception.bench.plots import PLOT_FILES, writing
from perception.bench.report_checks import results_problem
from perception.errors import ConfigError

#: Schema id of bench JSON files; bump on an incompatible change.
RESULTS_SCHEMA = "perception.bench/1"


#: The files a bench run writes into its --out folder.
RESULTS_FILE = "perception.bench.json"
#: What an earlier release named it (``bench report DIR`` reads either).
OLD_RESULTS_FILE = "bench.json"
REPORT_FILE = "perception.bench.md"
#: Every file of a bench output: what an earlier run or report may have left in an --out folder.
OUTPUT_FILES = (RESULTS_FILE, REPORT_FILE, *PLOT_FILES.values())


def earlier_outputs(out_dir: str | Path) -> list[Path]:
    """The files of an earlier bench output in ``out_dir`` (``OUTPUT_FILES`` that are there, not
    folders); nothing else in the folder is the bench's."""
    out = Path(out_dir)
    return [out / name for name in OUTPUT_FILES if ((out / name).exists() or (out / name).is_symlink())
            and not (out / name).is_dir()]


def results_path(path: str | Path) -> Path:
    """The bench JSON that ``path`` names: the file, or the one in the folder ``path`` (an earlier
    release named it bench.json; a folder it wrote is read as it is)."""
    p = Path(path)
    if p.is_dir():
        return next((f for f in (p / RESULTS_FILE, p / OLD_RESULTS_FILE) if f.is_file()), p / RESULTS_FILE)
    return p


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a bench JSON file (or the one in the folder ``path``); ConfigError naming the file when
    it is missing or not a bench result."""
    p = results_path(path)
    if not p.is_file():
        raise ConfigError(f"bench results {p} not found; run 'perception bench engine' or 'pipeline' first")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p} is not valid JSON ({exc}); pass the perception.bench.json that bench wrote") from None
    except RecursionError:  # "[[[[..." thousands deep: the reader's stack, not a bench result
        raise ConfigError(f"{p} nests lists or objects thousands deep, which no bench result does; pass the "
                          "perception.bench.json that bench wrote") from None
    if not isinstance(doc, dict) or doc.get("schema") != RESULTS_SCHEMA:
        raise ConfigError(f"{p} is not a bench result (schema {RESULTS_SCHEMA!r}); pass the perception.bench.json that bench wrote")
    problem = results_problem(doc)
    if problem:
        raise ConfigError(f"{p}: {problem}, so no report can be made from it; pass the perception.bench.json that "
                          "bench wrote, as it wrote it (or run the bench again)")
    return doc


def write_results(results: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``results`` as ``perception.bench.json`` in ``out_dir`` (created when absent); returns the path.
    An OSError names the file (``plots.writing``: a full disk's error names none), a part written removed."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS_FILE
    text = json.dumps(results, indent=1, sort_keys=False) + "\n"
    with writing(path):
        path.write_text(text, encoding="utf-8")
    return path


def new_results(kind: str, command: str) -> dict[str, Any]:
    """The common head of a bench JSON: schema, kind, UTC time, the command line and the environment."""
    from datetime import datetime, timezone

    from perception.bench.env import collect_environment

    return {
        "schema": RESULTS_SCHEMA,
        "kind": kind,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command,
        "environment": collect_environment(),
    }
