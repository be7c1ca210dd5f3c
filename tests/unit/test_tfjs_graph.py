"""read_tfjs_graph on a tiny hand-built TF.js graph model: nodes, attrs, float32/int32/float16/uint8 weights, errors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from edgepipe.errors import WeightImportError
from edgepipe.models.weights.tfjs_graph import read_tfjs_graph

KERNEL = np.arange(2 * 2 * 1 * 3, dtype=np.float32).reshape(2, 2, 1, 3) / 7.0
BIAS = np.array([0.5, -1.25, 3.0], dtype=np.float32)  # exactly representable in float16
PERM = np.array([0, 3, 1, 2], dtype=np.int32)
SCALE = np.array([0.0, 0.5, 2.5], dtype=np.float32)  # stored as uint8 with scale 0.5, min -1


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _write_model(folder: Path, *, truncate: int = 0, bias_dtype: str = "float32") -> Path:
    """model.json + group1-shard1of1.bin: input -> Conv2D -> BiasAdd -> Transpose, plus a uint8 constant."""
    nodes = [
        {"name": "input", "op": "Placeholder", "attr": {"shape": {"shape": {"dim": [{"size": "1"}, {"size": "4"},
                                                                                    {"size": "4"}, {"size": "1"}]}}}},
        {"name": "kernel", "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}}},
        {"name": "bias", "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}}},
        {"name": "perm", "op": "Const", "attr": {"dtype": {"type": "DT_INT32"}}},
        {"name": "scale", "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}}},
        {"name": "conv", "op": "Conv2D", "input": ["input", "kernel"],
         "attr": {"padding": {"s": _b64("VALID")}, "strides": {"list": {"i": ["1", "2", "2", "1"]}},
                  "use_cudnn_on_gpu": {"b": True}}},
        {"name": "biased", "op": "BiasAdd", "input": ["conv", "bias", "^perm"]},
        {"name": "act", "op": "LeakyRelu", "input": ["biased"], "attr": {"alpha": {"f": 0.1}}},
        {"name": "out", "op": "Transpose", "input": ["act", "perm"]},
    ]
    bias_bytes = BIAS.astype(np.float16).tobytes() if bias_dtype == "float16" else BIAS.tobytes()
    bias_entry = {"name": "bias", "shape": [3], "dtype": "float32"}
    if bias_dtype == "float16":
        bias_entry["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
    weights = [
        {"name": "kernel", "shape": list(KERNEL.shape), "dtype": "float32"},
        bias_entry,
        {"name": "perm", "shape": [4], "dtype": "int32"},
        {"name": "scale", "shape": [3], "dtype": "float32",
         "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0, "original_dtype": "float32"}},
    ]
    payload = KERNEL.tobytes() + bias_bytes + PERM.tobytes() + np.array([2, 3, 7], np.uint8).tobytes()
    document = {
        "format": "graph-model",
        "modelTopology": {"node": nodes, "versions": {}},
        "weightsManifest": [{"paths": ["group1-shard1of1.bin"], "weights": weights}],
    }
    (folder / "group1-shard1of1.bin").write_bytes(payload[: len(payload) - truncate])
    path = folder / "model.json"
    path.write_text(json.dumps(document))
    return path


def test_reads_nodes_attrs_and_weights(tmp_path):
    graph = read_tfjs_graph(_write_model(tmp_path))
    assert [n.op for n in graph.nodes] == ["Placeholder", "Const", "Const", "Const", "Const", "Conv2D", "BiasAdd",
                                           "LeakyRelu", "Transpose"]
    conv = graph.node("conv")
    assert conv.inputs == ("input", "kernel")
    assert conv.attrs["padding"] == "VALID" and conv.attrs["strides"] == (1, 2, 2, 1)
    assert conv.attrs["use_cudnn_on_gpu"] is True
    assert graph.node("act").attrs["alpha"] == pytest.approx(0.1)
    assert graph.node("input").attrs["shape"] == (1, 4, 4, 1)
    assert graph.node("biased").inputs[-1] == "^perm"
    np.testing.assert_array_equal(graph.weights["kernel"], KERNEL)
    np.testing.assert_array_equal(graph.weights["bias"], BIAS)
    assert graph.weights["perm"].dtype == np.int32
    np.testing.assert_array_equal(graph.weights["perm"], PERM)
    assert graph.weights["scale"].dtype == np.float32
    np.testing.assert_array_equal(graph.weights["scale"], SCALE)


def test_decodes_float16_to_float32(tmp_path):
    graph = read_tfjs_graph(_write_model(tmp_path, bias_dtype="float16"))
    assert graph.weights["bias"].dtype == np.float32
    np.testing.assert_array_equal(graph.weights["bias"], BIAS)
    np.testing.assert_array_equal(graph.weights["perm"], PERM)  # offsets after the 2-byte entries still line up


def test_truncated_bin_names_file_and_sizes(tmp_path):
    path = _write_model(tmp_path, truncate=2)
    with pytest.raises(WeightImportError, match=r"model\.json: weight 'scale' needs bytes .* found only") as info:
        read_tfjs_graph(path)
    assert "\n" not in str(info.value)


def test_extra_bytes_in_bin_are_refused(tmp_path):
    path = _write_model(tmp_path)
    shard = tmp_path / "group1-shard1of1.bin"
    shard.write_bytes(shard.read_bytes() + b"\0\0\0\0")
    with pytest.raises(WeightImportError, match=r"describes \d+ bytes, found \d+"):
        read_tfjs_graph(path)


def test_missing_bin(tmp_path):
    path = _write_model(tmp_path)
    (tmp_path / "group1-shard1of1.bin").unlink()
    with pytest.raises(WeightImportError, match="group1-shard1of1.bin not found"):
        read_tfjs_graph(path)


def test_unknown_dtype(tmp_path):
    path = _write_model(tmp_path)
    document = json.loads(path.read_text())
    document["weightsManifest"][0]["weights"][2]["dtype"] = "complex64"
    path.write_text(json.dumps(document))
    with pytest.raises(WeightImportError, match=r"weight 'perm': unsupported dtype 'complex64'"):
        read_tfjs_graph(path)


@pytest.mark.parametrize("text", ["{not json", "[]", '{"modelTopology": {"node": []}}'])
def test_bad_json(tmp_path, text):
    path = tmp_path / "model.json"
    path.write_text(text)
    with pytest.raises(WeightImportError, match=r"model\.json: "):
        read_tfjs_graph(path)


def test_missing_json(tmp_path):
    with pytest.raises(WeightImportError, match="no such file"):
        read_tfjs_graph(tmp_path / "absent.json")
