"""edgepipe.quantize on tiny hand-built graphs: op counts, max-abs error against fp32, one-line errors, no leftovers."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepipe.errors import ArtifactError, InputError, QuantizeError
from edgepipe.quantize import CalibMethod, QuantizeOptions, quantize
from edgepipe.runtime import load
from edgepipe.runtime.preprocess import prepare, read_image
from edgepipe.runtime.session import METADATA_KEY
from edgepipe.runtime.specs import ArtifactMeta, EmbeddingHead, InputSpec, Precision, Resize, Task

META = ArtifactMeta(model_name="tiny_net.test", task=Task.FACE_EMBEDDING, precision=Precision.FP32,
                    input=InputSpec((3, 16, 16), resize=Resize.ALIGNED_CHIP),
                    head=EmbeddingHead(dim=32, chip_size=16), opset=18)


def _tiny_graph(meta: ArtifactMeta = META, *, with_metadata: bool = True) -> onnx.ModelProto:
    """Conv-Relu-Conv-Relu-GlobalAveragePool-Flatten: (N, 3, 16, 16) -> (N, 32)."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)
               for name, shape in (("w1", (32, 3, 3, 3)), ("b1", (32,)), ("w2", (32, 32, 3, 3)), ("b2", (32,)))]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["embedding"], name="flatten"),
    ]
    return _embedder_model("tiny", nodes, weights, meta if with_metadata else None)


def _embedder_model(name: str, nodes, weights, meta: ArtifactMeta | None) -> onnx.ModelProto:
    """A (N, 3, 16, 16) -> (N, 32) opset-18 model of `nodes`, with our contract in its metadata unless meta is None."""
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 32])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    if meta is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, meta.to_json()
    return model


@pytest.fixture
def artifact(tmp_path) -> Path:
    path = tmp_path / "src" / "tiny_net.test.fp32.onnx"
    path.parent.mkdir()
    onnx.save_model(_tiny_graph(), path)
    return path


@pytest.fixture
def calib_dir(tmp_path) -> Path:
    folder = tmp_path / "calib"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):  # smooth random photos: blurred noise, 40 x 30 px
        image = cv2.GaussianBlur(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), (7, 7), 0)
        cv2.imwrite(str(folder / f"photo{i}.png"), image)
    return folder


def _options(calib_dir: Path, **changes) -> QuantizeOptions:
    return QuantizeOptions(calib_dir=calib_dir, calib_size=6, timing_runs=2, parity_inputs=4, **changes)


def _max_abs_error(reference: Path, candidate: Path, photos: Path) -> float:
    """Largest output difference on the photos, relative to the largest fp32 output."""
    x = np.concatenate([prepare(read_image(p), META.input)[0] for p in sorted(photos.iterdir())])
    ref = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(candidate), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    return float(np.abs(ref - got).max() / np.abs(ref).max())


def test_fp16_halves_the_size_and_stays_close(artifact, calib_dir, tmp_path):
    out = quantize(artifact, "fp16", tmp_path / "out", _options(calib_dir))
    assert out.onnx_path.name == "tiny_net.test.fp16.onnx" and out.json_path.is_file()
    assert 0.4 < out.figures["size_vs_fp32"] < 0.6
    assert load(out.onnx_path).meta == dataclasses.replace(META, precision=Precision.FP16)
    assert _max_abs_error(artifact, out.onnx_path, calib_dir) < 1e-2
    assert out.figures["parity"]["embedding_cosine_min"] > 0.999


def test_int8_static_inserts_qdq_and_stays_close(artifact, calib_dir, tmp_path):
    out = quantize(artifact, "int8", tmp_path / "out", _options(calib_dir, method=CalibMethod.MINMAX))
    ops = [node.op_type for node in onnx.load(out.onnx_path).graph.node]
    assert ops.count("QuantizeLinear") >= 2 and ops.count("DequantizeLinear") >= 4
    assert load(out.onnx_path).meta.precision == Precision.INT8
    assert _max_abs_error(artifact, out.onnx_path, calib_dir) < 0.1  # of the largest output: 8-bit steps
    assert out.figures["parity"]["embedding_cosine_min"] > 0.99
    settings = out.figures["settings"]
    assert settings["method"] == "minmax" and sorted(settings["calib_images"]) == [f"photo{i}.png" for i in range(6)]
    assert out.figures["size_vs_fp32"] < 0.5 and "speedup" in out.figures["speed"]


def _wide_graph() -> onnx.ModelProto:
    """Conv(3->64)-Relu-Conv(64->32, positive weights)-GlobalAveragePool-Flatten: large u8 x s8 products side by side,
    whose pairwise int16 sums overflow in the AVX2 int8 kernels of CPUs without VNNI."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.uniform(0.2, 1.0, (64, 3, 1, 1)).astype(np.float32), "w1"),
               numpy_helper.from_array(rng.uniform(0.5, 1.0, (32, 64, 1, 1)).astype(np.float32), "w2")]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("GlobalAveragePool", ["c2"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["embedding"], name="flatten"),
    ]
    return _embedder_model("wide", nodes, weights, META)


def test_int8_fused_kernels_match_the_qdq_graph(calib_dir, tmp_path):
    artifact = tmp_path / "src" / "tiny_net.test.fp32.onnx"
    artifact.parent.mkdir()
    onnx.save_model(_wide_graph(), artifact)
    out = quantize(artifact, "int8", tmp_path / "out", _options(calib_dir))  # family default: 7-bit weights
    assert out.figures["settings"]["reduce_range"] is True
    x = np.concatenate([prepare(read_image(p), META.input)[0] for p in sorted(calib_dir.iterdir())])
    outputs = {}
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level  # all: fused QLinearConv; none: DequantizeLinear -> float Conv
        session = ort.InferenceSession(str(out.onnx_path), options, providers=["CPUExecutionProvider"])
        outputs[level] = session.run(None, {"x": x})[0]
    fused, simulated = outputs.values()
    # Measured on an AVX2 CPU: 8-bit weights put the fused output 11% of its largest value off; 7-bit: 0.
    assert np.abs(fused - simulated).max() <= 1e-3 * np.abs(simulated).max()


def test_float_tail_keeps_the_output_side_in_float(artifact, calib_dir, tmp_path):
    out = quantize(artifact, "int8", tmp_path / "out", _options(calib_dir, float_tail=0.7))  # 5 of 6 nodes
    assert out.figures["settings"]["float_tail_nodes"] == ["relu1", "conv2", "relu2", "pool", "flatten"]
    assert "conv2" in out.figures["nodes"]["float"] and "conv1" not in out.figures["nodes"]["float"]
    assert out.figures["nodes"]["excluded_by_fallback"] == []


def test_int8_dynamic_runs(artifact, calib_dir, tmp_path):
    out = quantize(artifact, "int8-dynamic", tmp_path / "out", _options(calib_dir))
    ops = {node.op_type for node in onnx.load(out.onnx_path).graph.node}
    assert "DynamicQuantizeLinear" in ops or "ConvInteger" in ops
    assert load(out.onnx_path).meta.precision == Precision.INT8_DYNAMIC
    assert _max_abs_error(artifact, out.onnx_path, calib_dir) < 0.1


def test_writes_only_the_output_files(artifact, calib_dir, tmp_path, monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # onnxruntime's calibrator must not drop augmented_model.onnx here
    quantize(artifact, "int8", tmp_path / "out", _options(calib_dir, method=CalibMethod.ENTROPY))
    assert list(work.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tiny_net.test.int8.json", "tiny_net.test.int8.onnx"]


def _non_image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "mixed"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (folder / "b_notes.txt").write_text("not an image")
    return folder


@pytest.mark.parametrize("case, error, words", [
    ("missing calib dir", InputError, "no such calibration directory"),
    ("empty calib dir", InputError, "is empty"),
    ("non-image in calib dir", InputError, "b_notes.txt"),
    ("corrupt image", InputError, "photo0.png: could not be decoded as a .png image"),
    ("no calib dir for int8", QuantizeError, "needs calib_dir"),
    ("no metadata", ArtifactError, "no edgepipe metadata"),
    ("already int8 contract", QuantizeError, "already int8"),
    ("already quantized graph", QuantizeError, "QuantizeLinear"),
    ("unknown precision", QuantizeError, "unknown precision 'int4'"),
])
def test_bad_input_raises_one_line_and_writes_nothing(case, error, words, artifact, calib_dir, tmp_path):
    precision, calib = "int8", calib_dir
    if case == "missing calib dir":
        calib = tmp_path / "nowhere"
    elif case == "empty calib dir":
        calib = tmp_path / "empty"
        calib.mkdir()
    elif case == "non-image in calib dir":
        calib = _non_image_dir(tmp_path)
    elif case == "corrupt image":
        (calib_dir / "photo0.png").write_bytes(b"\x89PNG garbage")
    elif case == "no calib dir for int8":
        calib = None
    elif case == "no metadata":
        onnx.save_model(_tiny_graph(with_metadata=False), artifact)
    elif case == "already int8 contract":
        onnx.save_model(_tiny_graph(dataclasses.replace(META, precision=Precision.INT8)), artifact)
    elif case == "already quantized graph":
        out = quantize(artifact, "int8", tmp_path / "first", _options(calib_dir))
        artifact = out.onnx_path.with_name("copy.fp32.onnx")
        proto = onnx.load(out.onnx_path)
        proto.metadata_props[0].value = META.to_json()  # an fp32 contract on a QDQ graph
        onnx.save_model(proto, artifact)
    elif case == "unknown precision":
        precision = "int4"
    with pytest.raises(error) as caught:
        quantize(artifact, precision, tmp_path / "out", _options(calib))
    message = str(caught.value)
    assert words in message and "\n" not in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("changes, words", [({"max_drop": -0.5}, "max_drop must be >= 0"),
                                             ({"float_tail": 1.0}, "float_tail must be in [0, 1)")])
def test_bad_options_are_refused(changes, words):
    with pytest.raises(QuantizeError, match=re.escape(words)):
        QuantizeOptions(**changes)
