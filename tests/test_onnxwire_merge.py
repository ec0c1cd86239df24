"""A model file whose ``graph`` field is written in two parts, as protobuf allows (hunt s35 H5, F4).

Protobuf merges a message field given twice: ``onnx.load``, ONNX Runtime and OpenVINO see one graph
holding both parts' initializers, inputs and outputs. The node's light reader (``onnxwire``) kept
only the last part, so an externally stored weight in the first part was never seen: perception's
own checks of the weights file were skipped, and ONNX Runtime's optimised-graph cache (keyed on the
``.onnx`` bytes, which do not change with the weights) kept running the old weights after the
weights file changed. The files here are built by concatenating two serialized ModelProto parts.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from tiny_models import write_upsampling_model

from perception.engines import EngineOptions, load_engine
from perception.errors import ModelError
from perception.modelfile import external_data_files, graph_inputs, read_model_metadata, tensor_specs
from perception.onnxwire import QUANTISATION_OP_MARKS, QUANTISATION_OPS, ModelHeader, is_quantisation_op

HW = (48, 64)


def split_model(tmp_path, weights: np.ndarray | None = None):
    """The upsampling test model saved as two ModelProto parts: the first holds only its ``weight``
    initializer, stored outside the file in ``split.data``; the second the rest of the graph and
    the metadata. Returns the model path and the weights file."""
    model = onnx.load(str(write_upsampling_model(tmp_path / "plain.onnx", HW)))
    weight = next(t for t in model.graph.initializer if t.name == "weight")
    array = numpy_helper.to_array(weight) if weights is None else weights
    folder = tmp_path / "split"
    folder.mkdir(exist_ok=True)
    data = folder / "split.data"
    data.write_bytes(array.astype(np.float32).tobytes())
    external = onnx.TensorProto()
    external.CopyFrom(weight)
    external.ClearField("raw_data")
    external.ClearField("float_data")
    external.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", data.name), ("offset", "0"), ("length", str(array.nbytes))):
        entry = external.external_data.add()
        entry.key, entry.value = key, value
    first = onnx.ModelProto()
    first.graph.initializer.append(external)
    rest = onnx.ModelProto()
    rest.CopyFrom(model)
    rest.graph.initializer.remove(next(t for t in rest.graph.initializer if t.name == "weight"))
    path = folder / "split.onnx"
    path.write_bytes(first.SerializeToString() + rest.SerializeToString())  # protobuf: one merged message
    return path, data


def test_the_reader_merges_a_graph_written_in_two_parts_as_onnx_does(tmp_path):
    path, data = split_model(tmp_path)
    proto = onnx.load(str(path), load_external_data=False)
    assert [t.name for t in proto.graph.initializer][0] == "weight"  # onnx sees both parts as one graph
    header = ModelHeader.read(path)
    assert [ref.tensor for ref in header.external] == ["weight"]
    assert header.external[0].location == "split.data"
    assert header.inputs == graph_inputs(proto) and header.outputs == tensor_specs(proto.graph.output)
    assert external_data_files(path) == {data: data.stat().st_size}


def test_a_missing_weights_file_of_the_first_part_is_perception_s_one_line(tmp_path):
    path, data = split_model(tmp_path)
    data.unlink()
    with pytest.raises(ModelError, match=r"^split\.onnx keeps its weights in split\.data beside it, and .* is missing: "
                                         r"copy split\.data into .* or re-export the model$"):
        read_model_metadata(path)


def test_a_split_model_skips_the_ort_cache_and_runs_new_weights(tmp_path, monkeypatch, caplog):
    """The user's view: new weights in the weights file give new class ids at the next start."""
    monkeypatch.setenv("PERCEPTION_ORT_CACHE", str(tmp_path / "cache"))
    path, data = split_model(tmp_path)
    before = data.read_bytes()
    batch = np.random.default_rng(0).integers(0, 256, (1, *HW, 3), dtype=np.uint8)

    def class_ids() -> np.ndarray:
        engine = load_engine("ort", path, EngineOptions(provider="cpu", threads=1))
        try:
            return engine.infer(batch)["class_ids"]
        finally:
            engine.close()

    with caplog.at_level(logging.DEBUG, logger="perception.engines.ort"):
        first = [class_ids(), class_ids()]
        data.write_bytes((-np.frombuffer(before, np.float32)).tobytes())
        second = class_ids()
    assert np.array_equal(first[0], first[1]) and not np.array_equal(first[0], second)
    assert any("no optimised-graph cache for split.onnx: its weights are in split.data" in r.getMessage()
               for r in caplog.records)
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.iterdir())


def test_every_quantisation_op_carries_a_mark_the_reader_looks_for():
    """The reader parses a node's op type only when its bytes hold a mark: an op without one would
    never be seen, and its quantised file would read as fp32."""
    for op in [*QUANTISATION_OPS, "QLinearConv", "QLinearMatMul", "QLinearAdd"]:
        assert is_quantisation_op(op)
        assert any(mark.decode() in op for mark in QUANTISATION_OP_MARKS), op
    assert not any(is_quantisation_op(op) for op in ("Conv", "MatMul", "Cast", "Resize", "ArgMax"))
