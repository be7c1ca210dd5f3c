"""`edgepipe adopt` on small graphs built here: what fits becomes an artifact the runtime loads; what does not is
one line naming the file and the part that does not fit, and nothing is written."""

import argparse
import json

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from edgepipe.adopt import AdoptOptions, adopt
from edgepipe.cli import _input_shape, main
from edgepipe.cli_adopt import _setting, _size, _triple
from edgepipe.errors import ArtifactError
from edgepipe.runtime import FaceEmbedder, load


def _embedder_graph(path, *, dim=4, input_dims=("batch", 3, 16, 16), inputs=("x",), dtype=TensorProto.FLOAT,
                    quantized=False):
    """(N, 3, H, W) -> Conv -> global pool -> (N, dim) named "y", without any edgepipe metadata."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["p"]),
             helper.make_node("Flatten", ["p"], ["y"])]
    initializers = [numpy_helper.from_array(np.random.default_rng(0).normal(size=(dim, 3, 3, 3)).astype(np.float32),
                                            "w")]
    if quantized:  # a QDQ pair on the weight, as a quantized export carries
        nodes[:0] = [helper.make_node("QuantizeLinear", ["w0", "s", "z"], ["wq"]),
                     helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"])]
        initializers = [numpy_helper.from_array(np.ones((dim, 3, 3, 3), np.float32), "w0"),
                        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                        numpy_helper.from_array(np.array(0, np.int8), "z")]
    graph_inputs = [helper.make_tensor_value_info(name, dtype, list(input_dims)) for name in inputs]
    graph = helper.make_graph(nodes, "byo", graph_inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                           ["batch", dim])],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


EMBEDDING = dict(head="embedding", outputs=("y",), head_params={"dim": 4, "chip_size": 16})


def test_a_fitting_graph_becomes_an_artifact_the_runtime_uses(tmp_path):
    source = _embedder_graph(tmp_path / "My Net.onnx")
    artifact = adopt(source, tmp_path / "out", AdoptOptions(**EMBEDDING, template_of="sface.opencv"))
    assert artifact.onnx_path.name == "my_net.adopted.fp32.onnx"
    figures = json.loads(artifact.json_path.read_text())
    assert figures["checks"]["output_shapes"] == {"16x16": {"y": [4]}} and len(figures["source_sha256"]) == 64
    model = load(artifact.onnx_path)
    assert model.meta.input.shape_chw == (3, 16, 16) and model.meta.input.mean == (0.0, 0.0, 0.0)
    # sface's five points, scaled from its 112 px chip to this embedder's 16 px one
    assert model.meta.head.chip_size == 16 and model.meta.head.template[0] == ("right_eye", 38.2946 * 16 / 112,
                                                                               51.6963 * 16 / 112)
    assert model.run(np.zeros((2, 3, 16, 16), np.float32))[0].shape == (2, 4)
    assert FaceEmbedder(model).model is model


def test_a_fixed_batch_of_one_runs_a_longer_batch_item_by_item(tmp_path):
    source = _embedder_graph(tmp_path / "b1.onnx", input_dims=(1, 3, 16, 16))
    model = load(adopt(source, tmp_path / "out", AdoptOptions(**EMBEDDING)).onnx_path)
    batch = np.random.default_rng(1).uniform(0, 255, (3, 3, 16, 16)).astype(np.float32)
    together = model.run(batch)[0]
    assert together.shape == (3, 4)
    assert np.array_equal(together[2], model.run(batch[2:3])[0][0])


def test_a_quantized_graph_is_adopted_as_int8(tmp_path):
    source = _embedder_graph(tmp_path / "q.onnx", quantized=True)
    artifact = adopt(source, tmp_path / "out", AdoptOptions(**EMBEDDING))
    assert artifact.onnx_path.name == "q.adopted.int8.onnx" and artifact.meta.precision.value == "int8"


@pytest.mark.parametrize("graph, options, needle", [
    ({"dim": 8}, {}, "output 'y' is 8 after the batch; the 'embedding' head expects 4"),
    ({"input_dims": ("batch", "c", 16, 16)}, {}, "static channel count of 3"),
    ({"inputs": ("x", "mask")}, {}, "one image input, this one has ['x', 'mask']"),
    ({"dtype": TensorProto.DOUBLE}, {}, "is of ONNX type DOUBLE"),
    ({"input_dims": ("batch", 3, "h", "w")}, {}, "dynamic height or width; give its size with --input-size"),
    ({}, {"input_size": (32, 16)}, "fixed at 16x16 (WxH), the contract says 32x16"),
    ({}, {"outputs": ("embedding",)}, "lack ['embedding'], which the 'embedding' head reads"),
    ({}, {"head_params": {"dim": 4, "colour": 1}}, "has no field colour"),
    ({}, {"template_of": "yunet.opencv"}, "yunet.opencv is not a face embedder"),
    ({}, {"head_params": {"chip_size": 24}}, "the input is 16x16 (WxH), the chip 24x24"),
])
def test_what_does_not_fit_is_one_line_and_writes_nothing(tmp_path, graph, options, needle):
    source = _embedder_graph(tmp_path / "m.onnx", **graph)
    with pytest.raises(ArtifactError) as error:
        adopt(source, tmp_path / "out", AdoptOptions(**{**EMBEDDING, **options}))
    assert needle in str(error.value) and len(str(error.value).splitlines()) == 1, str(error.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_cli_refuses_a_non_model_and_a_detector_without_labels(tmp_path, capsys):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x89PNG not a model")
    assert main(["adopt", str(junk), "--head", "embedding", "--out", str(tmp_path / "o")]) == 2
    assert "not an ONNX model" in capsys.readouterr().err
    source = _embedder_graph(tmp_path / "m.onnx")
    assert main(["adopt", str(source), "--head", "gfl", "--out", str(tmp_path / "o")]) == 2
    assert "needs its class names: --labels FILE" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@given(st.text(max_size=12))
def test_flag_parsers_take_what_they_promise_or_refuse_with_the_text(text):
    for parse, valid in ((_size, lambda v: min(v) > 0), (_triple, lambda v: len(v) == 3 and np.isfinite(v).all()),
                         (_setting, lambda v: v[0].isidentifier()),
                         (_input_shape, lambda v: v[0] and all(d > 0 for d in v[1]))):
        try:
            value = parse(text)
        except argparse.ArgumentTypeError as e:
            assert repr(text) in str(e)
        else:
            assert valid(value)
