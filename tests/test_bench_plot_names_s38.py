"""``bench engine --model m_\\xff.onnx`` measured, then died with a traceback drawing the plot legend:
matplotlib refuses a model name whose bytes are not UTF-8 (held by Python as lone surrogates)."""

from __future__ import annotations

import os

import pytest

from perception.bench.plots import _drawable, plot_engine


def test_a_model_name_that_is_not_utf8_is_drawn_with_its_bytes_escaped():
    assert _drawable("m_" + os.fsdecode(b"\xff") + ".onnx fp32") == "m_\\xff.onnx fp32"
    assert _drawable("caf\u00e9 \ud800") == "caf\u00e9 \\ud800"  # any other lone surrogate, escaped as such
    assert _drawable("default.onnx ort fp32") == "default.onnx ort fp32"


def test_the_engine_plots_draw_such_a_name(tmp_path):
    pytest.importorskip("matplotlib")
    row = {"label": "m_" + os.fsdecode(b"\xfe") + ".onnx ort fp32", "samples_ms": [1.0, 1.2, 1.1],
           "throughput_ips": 900.0}
    written = plot_engine({"engine": {"results": [row]}}, tmp_path)
    assert written and all(path.stat().st_size > 0 for path in written.values())
