"""read_onnx_graph on tiny hand-built ONNX graphs: nodes, decoded attributes, Conv defaults, wiring, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepipe.errors import WeightImportError
from edgepipe.models.weights.onnx_graph import read_onnx_graph

WEIGHT = np.arange(4 * 3 * 3 * 3, dtype=np.float32).reshape(4, 3, 3, 3) / 100.0
SLOPE = np.full((4, 1, 1), 0.25, np.float32)


def _write(path: Path, *, conv_attrs: dict, external: bool = False) -> Path:
    """x (N, 3, 8, 8) -> Conv (no bias) -> PRelu -> Resize -> y."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", **conv_attrs),
        helper.make_node("PRelu", ["c", "slope"], ["p"], name="prelu"),
        helper.make_node("Resize", ["p", "", "scales"], ["y"], name="up", mode="nearest"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(WEIGHT, "w"), numpy_helper.from_array(SLOPE, "slope"),
                     numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


def test_nodes_attributes_initializers_and_wiring(tmp_path):
    graph = read_onnx_graph(_write(tmp_path / "m.onnx", conv_attrs={"pads": [1, 1, 1, 1], "group": 1}))
    assert dict(graph.inputs) == {"x": ("N", 3, 8, 8)}
    assert list(graph.outputs) == ["y"]
    assert [n.op_type for n in graph.nodes] == ["Conv", "PRelu", "Resize"]
    assert graph.op_counts == {"Conv": 1, "PRelu": 1, "Resize": 1}
    conv, prelu, resize = graph.nodes
    assert resize.attr("mode") == "nearest" and resize.attr("nearest_mode", "round_prefer_floor") == "round_prefer_floor"
    assert graph.conv_attrs(conv) == {"kernel_shape": (3, 3), "strides": (1, 1), "pads": (1, 1, 1, 1),
                                      "dilations": (1, 1), "group": 1, "auto_pad": "NOTSET"}
    np.testing.assert_array_equal(graph.initializer(conv, 1), WEIGHT)
    np.testing.assert_array_equal(graph.initializer(prelu, 1), SLOPE)
    assert graph.producer("c") is conv and graph.producer("x") is None
    assert graph.consumers("c") == [prelu]


def test_missing_initializer_is_one_line(tmp_path):
    graph = read_onnx_graph(_write(tmp_path / "m.onnx", conv_attrs={}))
    with pytest.raises(WeightImportError, match="input 2: expected an initializer, found ''"):
        graph.initializer(graph.nodes[0], 2)  # the conv has no bias


@pytest.mark.parametrize("case", ["missing", "garbage", "external"])
def test_unreadable_files_are_refused(case, tmp_path):
    path = tmp_path / "m.onnx"
    if case == "garbage":
        path.write_bytes(b"\x00not an onnx file" * 10)
    elif case == "external":
        _write(path, conv_attrs={}, external=True)
    with pytest.raises(WeightImportError) as info:
        read_onnx_graph(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
