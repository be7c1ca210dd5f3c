"""Graph-level steps of quantization that need no contract: which ops mean "already quantized", the fp16 copy,
onnxruntime's pre-quantization pass (after an opset upgrade where needed) and the float tail of a graph. Shared by
`quantize` (artifacts) and `quantize_raw` (files without a contract)."""

from __future__ import annotations

import math
from pathlib import Path

import onnx

from edgepipe.errors import QuantizeError
from edgepipe.ort_quantization import float16, quant_pre_process

__all__ = ["QUANT_OPS", "float16_copy", "prepare_graph", "tail_nodes"]

QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger")


def float16_copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and compute, float32 inputs and outputs. Weights that an older exporter also lists as graph
    inputs (MXNet's, in OpenCV Zoo's SFace) are dropped from the inputs first, or they would stay float32 as "I/O"."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    weights = {init.name for init in copy.graph.initializer}
    inputs = [value for value in copy.graph.input if value.name not in weights]
    del copy.graph.input[:]
    copy.graph.input.extend(inputs)
    return float16.convert_float_to_float16(copy, keep_io_types=True)


_MIN_QDQ_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (their `axis`) need opset 13


def prepare_graph(artifact: Path, tmp: Path) -> Path:
    """onnxruntime's pre-quantization pass: shape inference plus basic fusions (e.g. Conv + Mul + Add). A graph
    below opset 13 (an adopted file, e.g. OpenCV Zoo's opset-11 SFace) is converted to 13 first."""
    prepared, source = tmp / "prepared.onnx", artifact
    try:
        model = onnx.load(str(artifact))
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), _MIN_QDQ_OPSET)
        if opset < _MIN_QDQ_OPSET:
            source = tmp / "opset13.onnx"
            onnx.save(onnx.version_converter.convert_version(model, _MIN_QDQ_OPSET), str(source))
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    except Exception as e:  # onnx and onnxruntime raise untyped errors; report one line
        raise QuantizeError(f"{artifact}: pre-quantization pass failed: {type(e).__name__}: {str(e)[:200]}") from e
    return prepared


def tail_nodes(model: onnx.ModelProto, share: float) -> list[str]:
    """Names of the last `share` of the nodes in execution order: the output side (wide-range logits) first."""
    count = math.ceil(share * len(model.graph.node))
    return [node.name for node in model.graph.node[len(model.graph.node) - count:]]
