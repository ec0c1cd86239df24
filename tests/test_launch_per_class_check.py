"""``perception launch --check`` runs the node's own per-class topic check (V3, s36, N3).

A pipeline node with ``per_class_obstacles: true`` whose model (exported before class tables
refused such names) has an obstacle class that cannot be a topic passed ``--check``; the node then
exited 2 at its start. The check is ``publish.check_per_class_topic``, the one the node runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from perception.cli import main as cli_main
from perception.contracts import ClassInfo, ClassTable
from perception.synthetic import SYNTHETIC_CLASSES
from tests.tiny_models import tiny_metadata, write_brightness_model

EMOJI_64 = "🚗" * 64  # 64 characters, 256 UTF-8 bytes: a stored table takes it; no topic under a namespace does


def _model(folder: Path, pedestrian: str) -> Path:
    """A tiny model whose class ``pedestrian`` (an obstacle class) is called ``pedestrian``'s new name."""
    renamed = {"pedestrian": pedestrian}
    classes = tuple(ClassInfo(c.id, renamed.get(c.name, c.name), c.color) for c in SYNTHETIC_CLASSES.classes)
    groups = {k: tuple(renamed.get(n, n) for n in v) for k, v in SYNTHETIC_CLASSES.task_groups.items()}
    table = ClassTable(classes=classes, ignore_id=255, task_groups=groups)
    return write_brightness_model(folder / "m.onnx", (48, 64), metadata=tiny_metadata((48, 64), class_table=table))


def _check(folder: Path, capsys, **parameters) -> tuple[int, str]:
    file = folder / "l.yaml"
    node = {"name": "cam", "kind": "pipeline", "parameters": {"source": "synthetic", **parameters}}
    file.write_text(yaml.safe_dump({"launch": [{"node": node}]}, allow_unicode=True), encoding="utf-8")
    code = cli_main(["launch", str(file), "--check"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("name", "why"), [
    ("person/rider", "holds '/', which would split its per-class topic obstacle/<class> in two"),
    (EMOJI_64, "makes the topic perception/front/obstacle/<class> 282 UTF-8 bytes long, more than the readers' 256"),
], ids=["slash", "too-long"])
def test_check_refuses_a_per_class_topic_the_node_would_refuse(tmp_path, capsys, name, why):
    model = _model(tmp_path, name)
    code, err = _check(tmp_path, capsys, model=str(model), per_class_obstacles=True)
    assert code == 2, err
    assert err.strip().splitlines() == [
        f"perception: error: {tmp_path / 'l.yaml'}: node 'cam': parameters: --per-class-obstacles: the model's obstacle "
        f"class {name!r:.80} {why}; run without --per-class-obstacles, or rename the class in the dataset's "
        "classes.yaml, train and export again"]


def test_check_passes_that_model_without_per_class_topics_or_with_an_obstacle_override(tmp_path, capsys):
    model = _model(tmp_path, "person/rider")
    code, err = _check(tmp_path, capsys, model=str(model))
    assert code == 0, err
    # --task obstacle=car,cyclist: the node makes per-class topics of those two only.
    code, err = _check(tmp_path, capsys, model=str(model), per_class_obstacles=True, task={"obstacle": ["car", "cyclist"]})
    assert code == 0, err
