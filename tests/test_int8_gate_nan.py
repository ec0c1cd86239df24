"""Val labels with no labelled pixel (every pixel the ignore id) are refused by the INT8 gate and by
the unknown-threshold rule in ``perception eval``'s line, instead of a gate verdict on NaN mIoU
(stored in the INT8 file with ``--allow-int8-drop``) or "no wrongly claimed pixels" on nothing;
and a gate on a handful of images says that its verdict means little.
"""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import yaml
from tiny_models import write_brightness_model

from perception.errors import DataError
from perception.synthetic import SYNTHETIC_CLASSES

HW = (48, 64)


@pytest.fixture
def unlabelled(tmp_path):
    """A folder dataset of the tiny model's (synthetic) classes whose 2 val labels are all ignore id."""
    root = tmp_path / "void"
    (root / "val" / "images").mkdir(parents=True)
    (root / "val" / "labels").mkdir()
    (root / "val" / "classes.yaml").write_text(yaml.safe_dump(SYNTHETIC_CLASSES.to_dict()))
    for i in range(2):
        cv2.imwrite(str(root / "val" / "images" / f"{i}.png"), np.full((*HW, 3), 40 * i, np.uint8))
        cv2.imwrite(str(root / "val" / "labels" / f"{i}.png"), np.full(HW, SYNTHETIC_CLASSES.ignore_id, np.uint8))
    return f"folder:{root}"


def test_quantize_refuses_val_labels_without_a_labelled_pixel(tiny_model_path, unlabelled, tmp_path, monkeypatch,
                                                              capsys):
    import perception.export.quantize as quantize

    def calibrating(*args, **kwargs):
        raise AssertionError("calibration ran before the labels were checked")

    monkeypatch.setattr(quantize, "quantize_int8", calibrating)
    model = tmp_path / "tiny.onnx"
    shutil.copy(tiny_model_path, model)
    for extra in ([], ["--allow-int8-drop"]):
        assert quantize.main([str(model), "--calib", "synthetic", "--val-data", unlabelled, "--calib-count", "1",
                              *extra]) == 2
        printed = capsys.readouterr()
        assert printed.err.count("\n") == 1 and "nan" not in printed.out + printed.err, printed
        assert printed.err.startswith(f"export.quantize: error: INT8 gate: every label pixel of {unlabelled} (val, 2 "
                                      f"images) is the ignore id {SYNTHETIC_CLASSES.ignore_id}"), printed.err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx", "void"]  # no INT8 file written


def test_the_unknown_rule_refuses_val_labels_without_a_labelled_pixel(unlabelled, tmp_path):
    from perception.engines import EngineOptions, load_engine
    from perception.export.unknown import measure_curves

    model = write_brightness_model(tmp_path / "conf.onnx", HW, with_confidence=True)
    engine = load_engine("ort", model, EngineOptions(provider="cpu", threads=1))
    try:
        with pytest.raises(DataError, match=r"^unknown threshold: every label pixel of .* is the ignore id 255: .*"
                                            r"pass --unknown-data SPEC .* or --unknown-threshold P$"):
            measure_curves(engine, unlabelled, count=2)
    finally:
        engine.close()


def test_a_gate_on_few_images_warns_that_its_verdict_means_little():
    from perception.export.int8_gate import FEW_GATE_IMAGES, Int8Report

    def report(images: int) -> list[str]:
        return Int8Report(fp32_miou=0.5, int8_miou=0.5, val_images=images, fp32_p50_ms=2.0, int8_p50_ms=1.0, runs=3,
                          max_drop_points=0.5, allowed_drop=False, agreement=1.0).lines()

    assert any(line.startswith("  warning: only 2 val images: too few") for line in report(2))
    assert not any("warning" in line for line in report(FEW_GATE_IMAGES))
