"""quantize on an ONNX file without a contract: the budget is output parity, said plainly in the JSON and the
output; over it, only the JSON is written; what cannot be quantized is one line."""

import json

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepipe.cli import main
from edgepipe.errors import QuantizeError
from edgepipe.quantize_raw import quantize_raw
from edgepipe.runtime.specs import InputSpec, Resize


def _graph(path, *, weights_as_inputs=False, inputs=("x",), quantized=False):
    """x (1, 3, 32, 32) -> Conv 3x3 (8) -> Relu -> global pool -> y (1, 8, 1, 1), no edgepipe metadata."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.2, (8, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["y"])]
    if quantized:
        nodes.insert(0, helper.make_node("QuantizeLinear", ["x", "s"], ["xq"]))
    graph_inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 32, 32]) for n in inputs]
    if weights_as_inputs:  # as older exporters (MXNet) list them
        graph_inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [8, 3, 3, 3]))
    initializers = [w] + ([numpy_helper.from_array(np.array(0.1, np.float32), "s")] if quantized else [])
    graph = helper.make_graph(nodes, "theirs", graph_inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 1, 1])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        smooth = cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (9, 9), 0)
        cv2.imwrite(str(folder / f"p{i}.png"), smooth)
    return folder


SPEC = InputSpec((3, 32, 32), mean=(0.0,) * 3, std=(255.0,) * 3, resize=Resize.STRETCH)


def test_int8_within_the_parity_budget_writes_the_file_and_says_what_the_budget_was(tmp_path, photos):
    figures = quantize_raw(_graph(tmp_path / "theirs.onnx"), "int8", tmp_path / "out", SPEC, calib_dir=photos,
                           calib_size=4, parity_inputs=4, timing_runs=2)
    assert (tmp_path / "out" / "theirs.int8.onnx").is_file() and figures["contract"] is None
    budget = figures["budget"]
    assert budget["within_budget"] and budget["worst_cosine"] >= 0.99 and "no task head" in budget["metric"]
    assert json.loads((tmp_path / "out" / "theirs.int8.json").read_text())["parity"]["outputs"]["y"]["cosine"] > 0.99
    assert figures["settings"]["input"]["std"] == [255.0] * 3 and figures["settings"]["calib_inputs"] == 4


def test_over_the_budget_only_the_json_is_written(tmp_path, photos):
    with pytest.raises(QuantizeError, match=r"int8 output 'y' has cosine 0\.\d+ to fp32, under the 1 budget"):
        quantize_raw(_graph(tmp_path / "theirs.onnx"), "int8", tmp_path / "out", SPEC, calib_dir=photos,
                     calib_size=4, parity_inputs=4, timing_runs=2, min_cosine=1.0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["theirs.int8.json"]


def test_fp16_halves_weights_an_old_exporter_also_lists_as_inputs(tmp_path, photos):
    quantize_raw(_graph(tmp_path / "old.onnx", weights_as_inputs=True), "fp16", tmp_path / "out", SPEC,
                 calib_dir=photos, parity_inputs=2, timing_runs=2)
    half = onnx.load(str(tmp_path / "out" / "old.fp16.onnx"))
    assert {i.data_type for i in half.graph.initializer} == {TensorProto.FLOAT16}
    assert [i.name for i in half.graph.input] == ["x"] and half.graph.input[0].type.tensor_type.elem_type == 1


@pytest.mark.parametrize("graph, precision, needle", [
    ({"inputs": ("x", "mask")}, "fp16", "one image input, this graph has ['x', 'mask']"),
    ({"quantized": True}, "fp16", "already holds quantized nodes ['QuantizeLinear']"),
    ({}, "int8", "int8 static quantization needs calib_dir"),
])
def test_what_cannot_be_quantized_is_one_line(tmp_path, graph, precision, needle):
    with pytest.raises(QuantizeError) as error:
        quantize_raw(_graph(tmp_path / "m.onnx", **graph), precision, tmp_path / "out", SPEC)
    assert needle in str(error.value) and len(str(error.value).splitlines()) == 1


def test_the_cli_quantizes_a_contract_less_file_with_its_input_flags(tmp_path, photos, capsys):
    source = _graph(tmp_path / "theirs.onnx")
    assert main(["quantize", str(source), "--precision", "int8", "--calib", str(photos), "--calib-size", "4",
                 "--std", "255,255,255", "--color", "bgr", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "no contract, so the budget is output parity: worst cosine to fp32" in out
    settings = json.loads((tmp_path / "out" / "theirs.int8.json").read_text())["settings"]["input"]
    assert settings["color"] == "BGR" and settings["shape_chw"] == [3, 32, 32] and settings["resize"] == "stretch"
    assert main(["quantize", str(source), "--precision", "fp16", "--input-size", "64x64", "--out",
                 str(tmp_path / "o2")]) == 2
    assert "fixed at 32x32 (WxH), the contract says 64x64" in capsys.readouterr().err
