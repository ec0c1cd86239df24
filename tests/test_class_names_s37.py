"""Class names a reader could not tell from something else (hunt s37/h12: F3, F7 and the cosmetic
finding): a class named like an id the table does not name (`id255`, what the C and JS clients print
for the unknown id) or like eval's `unknown`; one name in two Unicode spellings; and tables that
pad a CJK or emoji name by its characters instead of the columns a terminal shows."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import yaml
from tiny_models import tiny_metadata, write_brightness_model

from perception.commands.inspect import format_description
from perception.commands.listen import _print_summary, _report
from perception.contracts import ClassTable
from perception.datasets import open_dataset
from perception.errors import DataError
from perception.metrics import display_width
from perception.modelfile import describe_model
from perception.synthetic.classes import SYNTHETIC_CLASSES
from perception.topic_stats import TopicStats

ROOT = Path(__file__).resolve().parents[1]
NFD_CAFE = "cafe\u0301"  # 'e' and a combining acute accent: prints as 'café'


def _table(*names: str) -> dict:
    classes = [{"id": i, "name": n, "color": [10 * i, 0, 0]} for i, n in enumerate(("road", *names))]
    return {"classes": classes, "ignore_id": 255, "task_groups": {"drivable": ["road"], "obstacle": list(names)}}


def _dataset(root: Path, table: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.yaml").write_text(yaml.safe_dump(table, allow_unicode=True), encoding="utf-8")
    for folder, array in (("images", np.full((8, 8, 3), 90, np.uint8)), ("labels", np.zeros((8, 8), np.uint8))):
        (root / folder).mkdir()
        assert cv2.imwrite(str(root / folder / "a.png"), array)
    return root


def _refusal(tmp_path: Path, table: dict) -> str:
    with pytest.raises(DataError) as caught:
        open_dataset(f"folder:{_dataset(tmp_path / 'd', table)}", split="val")
    message = str(caught.value)
    assert "\n" not in message, message
    return message


# ---- F3: names readers give what is not a class ----------------------------------------------


@pytest.mark.parametrize(("name", "why"), [
    ("id255", r"is how the C and JS clients print a class id the table does not name \(id<N>: id255 for unknown "
              r"pixels\), so it would read as another id"),
    ("id3", r"is how the C and JS clients print a class id the table does not name"),
    ("id0007", r"is how the C and JS clients print a class id the table does not name"),
    ("unknown", r"is the name perception eval --tasks gives pixels marked unknown \(id 255\), beside the model's "
                r"classes, so their counts would merge with this class's"),
    ("unreachable", r"is the name perception eval --tasks gives pixels cut from drivable as unreachable"),
])
def test_a_class_named_like_an_unnamed_id_or_evals_unknown_is_refused(tmp_path, name, why):
    """A class named id255 printed in a C/JS class_map line exactly as the unknown pixels beside it
    (`[..., "id255", ..., "id255"]`); one named `unknown` would add its counts to eval's unknown ones."""
    message = _refusal(tmp_path, _table("car", name))
    assert re.search(rf"classes\.yaml is malformed: class name {re.escape(repr(name))} {why}.*; rename the class$",
                     message), message


@pytest.mark.parametrize("name", ["id", "idx3", "id3a", "ID3", "Unknown", "id\u0663", "car id3", "unknown car"])
def test_names_that_only_resemble_them_are_kept(tmp_path, name):
    """The clients print `id` and ASCII digits, lower case, and eval the exact word: anything else
    cannot be mistaken for them."""
    table = open_dataset(f"folder:{_dataset(tmp_path / 'd', _table('car', name))}", split="val").class_table
    assert table.names == ["road", "car", name]


def test_a_model_file_with_such_a_name_still_runs():
    """Stored tables (model files, checkpoints) are read without the new-table rules."""
    table = ClassTable.from_dict(_table("id255", "unknown", "café", NFD_CAFE))
    assert table.names == ["road", "id255", "unknown", "café", NFD_CAFE]
    assert table.new_table_error() is not None


# ---- F7: one name in two Unicode spellings -----------------------------------------------------


def test_one_name_in_two_unicode_spellings_is_refused_naming_both(tmp_path):
    """'café' and 'cafe' + U+0301 were two classes whose per-class topics printed identically; the
    line shows both with their code points, which is where they differ."""
    message = _refusal(tmp_path, _table("café", "car", NFD_CAFE))
    assert message.endswith(
        f"classes.yaml is malformed: class names 'café' and '{NFD_CAFE}' are one name in two Unicode spellings "
        "('caf\\xe9' and 'cafe\\u0301'), which print alike, as do their per-class topics; rename one of them, "
        "or merge the two classes"), message


def test_a_single_name_in_either_spelling_is_kept(tmp_path):
    for n, name in enumerate(("café", NFD_CAFE)):
        spec = f"folder:{_dataset(tmp_path / str(n), _table('car', name))}"
        assert open_dataset(spec, split="val").class_table.names[2] == name


def test_eval_on_such_a_dataset_is_one_line_and_exit_2(tmp_path):
    model = write_brightness_model(tmp_path / "m.onnx", (8, 8))
    root = _dataset(tmp_path / "d", _table("car", "id255"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "perception", "eval", "--model", str(model), "--data", f"folder:{root}",
                           "--threads", "1", "--workers", "0"], capture_output=True, text=True, timeout=120, env=env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(lines) == 1, done.stderr[-2000:]
    assert "class name 'id255' is how the C and JS clients print" in lines[0] and lines[0].endswith("rename the class")


# ---- Cosmetic: tables padded by display width --------------------------------------------------

WIDE = ("道路 Straße", "🚗🚗🚗", "a_class_name_longer_than_twenty_columns", NFD_CAFE)


def _column_at(lines: list[str], marker: str) -> set[int]:
    """The terminal column where ``marker`` starts on each line."""
    return {display_width(line[: line.index(marker)]) for line in lines}


def test_inspect_lines_up_wide_and_long_class_names(tmp_path):
    """`道路 Straße` and emoji names pushed inspect's rgb column out of line (padded by len())."""
    classes = [{"id": c.id, "name": WIDE[c.id] if c.id < len(WIDE) else c.name, "color": list(c.color)}
               for c in SYNTHETIC_CLASSES.classes]
    table = ClassTable.from_dict({"classes": classes, "ignore_id": 255,
                                  "task_groups": {"drivable": [WIDE[0]], "障碍物": [WIDE[1], WIDE[2]]}})
    path = write_brightness_model(tmp_path / "m.onnx", (8, 8), metadata=tiny_metadata((8, 8), class_table=table))
    lines = format_description(describe_model(path))
    rows = [line for line in lines if " rgb(" in line]
    assert len(rows) == SYNTHETIC_CLASSES.num_classes and len(_column_at(rows, " rgb(")) == 1, "\n".join(rows)
    start = lines.index("tasks")
    tasks = lines[start + 1: start + 3]
    assert len(_column_at(tasks[:1], WIDE[0]) | _column_at(tasks[1:], WIDE[1])) == 1, "\n".join(tasks)


TOPICS = ["perception/front/class_map", "perception/front/obstacle/道路 Straße", "perception/front/obstacle/🚗🚗🚗",
          "perception/front/obstacle/" + "a_long_class_name" * 3]


def test_listen_widens_its_topic_column_and_pads_by_display_width():
    """listen's per-second lines and its summary: the rate column starts at one terminal column for
    a CJK, an emoji and a 77-character topic alike."""
    stats = {topic: TopicStats(0.0) for topic in TOPICS}
    sub = SimpleNamespace(endpoint="tcp://x", max_topics=256,
                          counters=SimpleNamespace(malformed=0, version_mismatch=0, over_max_topics=0))
    out = io.StringIO()
    _report(stats, sub, 1.0, out, "hint")
    lines = out.getvalue().splitlines()
    assert len(lines) == len(TOPICS) and len(_column_at(lines, " Hz ")) == 1, "\n".join(lines)
    assert any(line.startswith(TOPICS[3] + "    0.0 Hz") for line in lines), "\n".join(lines)

    out = io.StringIO()
    _print_summary({"messages": 0, "duration_s": 1.0, "topics": {t: s.summary(1.0) for t, s in stats.items()},
                    "skipped": {"malformed": 0, "version_mismatch": 0, "over_max_topics": 0}}, out)
    lines = out.getvalue().splitlines()[1:]
    assert len(lines) == len(TOPICS) and len(_column_at(lines, " Hz ")) == 1, "\n".join(lines)
