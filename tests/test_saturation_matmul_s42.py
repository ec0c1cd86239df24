"""``saturation_safe`` reads a MatMul whose weight is its first input (H53 M2 of s42: every PSPNet INT8
file, whose pooling multiplies a constant by the activation, was "some dense 8-bit weights use the
full range" and told to pass an --overflow-fix it already had)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from perception.modelfile_graph import saturation_safe


def _matmul_model(weight: np.ndarray, *, weight_first: bool):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])
    inits = [numpy_helper.from_array(weight, "w_q"), numpy_helper.from_array(np.float32(0.1), "s"),
             numpy_helper.from_array(np.int8(0), "z")]
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "s", "z"], ["w"]),
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "s", "z"], ["x_dq"]),
        helper.make_node("MatMul", ["w", "x_dq"] if weight_first else ["x_dq", "w"], ["y"]),
    ]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("weight_first", [True, False])
def test_a_matmul_weight_is_read_on_either_side(weight_first):
    small = np.full((4, 4), 60, np.int8)
    assert saturation_safe(_matmul_model(small, weight_first=weight_first))
    assert not saturation_safe(_matmul_model(np.full((4, 4), 127, np.int8), weight_first=weight_first))
