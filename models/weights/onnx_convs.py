"""Read the convolutions of an ONNX graph as plain data: `read_onnx_convs(path) -> OnnxConvGraph`.

Format only: the graph's input shapes, first node, op counts, outputs, and every Conv in graph order with its
attributes, its weight arrays and the graph output it feeds (through layout-only Transpose -> Reshape, as tf2onnx
writes head outputs). Which module a conv belongs to is the architecture's business (see `models/zoo/blazeface.py`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgepipe.errors import WeightImportError

__all__ = ["OnnxConv", "OnnxConvGraph", "read_onnx_convs"]


@dataclass(frozen=True)
class OnnxConv:
    """One Conv node: its attributes (ONNX defaults filled in) and its weight and bias arrays."""

    name: str
    kernel_shape: list[int]
    strides: list[int]
    group: int
    pads: list[int]  # [top, left, bottom, right]
    params: list[np.ndarray | None]  # weight, then bias when present; None for an input that is not an initializer
    param_names: list[str]
    feeds_output: str  # the graph output it feeds through Transpose -> Reshape, or ''


@dataclass(frozen=True)
class OnnxConvGraph:
    path: Path
    input_dims: list[list[int | str]]  # of the inputs that are not initializers
    first_op: str
    first_perm: list[int] | None  # the first node's `perm` attribute, if it has one
    op_counts: Counter
    outputs: list[str]
    convs: list[OnnxConv]  # in graph order

    def fail(self, what: str) -> WeightImportError:
        return WeightImportError(f"{self.path}: {what}")


def read_onnx_convs(path: str | Path) -> OnnxConvGraph:
    """Parse an ONNX file's convolutions.

    Raises:
        WeightImportError: the file is missing, not ONNX, or holds an empty graph.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightImportError(f"{path}: no such file; expected an .onnx file")
    try:
        graph = onnx.load(str(path)).graph
    except Exception as e:  # protobuf raises DecodeError, RuntimeWarning-derived or ValueError on garbage
        raise WeightImportError(f"{path}: not a valid ONNX file ({type(e).__name__}: {e})".replace("\n", " ")) from e
    if not graph.node:
        raise WeightImportError(f"{path}: not a valid ONNX file (graph has 0 nodes)")
    initializers = {init.name: init for init in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = [o.name for o in graph.output]
    first = graph.node[0]
    convs = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        sources = [i for i in node.input[1:] if i]
        convs.append(OnnxConv(
            name=node.name, kernel_shape=list(attrs.get("kernel_shape", [])),
            strides=list(attrs.get("strides", [1, 1])), group=attrs.get("group", 1),
            pads=list(attrs.get("pads", [0, 0, 0, 0])),
            params=[numpy_helper.to_array(initializers[s]) if s in initializers else None for s in sources],
            param_names=sources, feeds_output=_output_fed(node, consumers, set(outputs))))
    return OnnxConvGraph(
        path=path, input_dims=[_dims(i) for i in graph.input if i.name not in initializers], first_op=first.op_type,
        first_perm=next((list(a.ints) for a in first.attribute if a.name == "perm"), None),
        op_counts=Counter(node.op_type for node in graph.node), outputs=outputs, convs=convs)


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim]


def _output_fed(conv: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]], outputs: set[str]) -> str:
    """The graph output a conv feeds through Transpose -> Reshape, or ''."""
    after = consumers.get(conv.output[0], [])
    if len(after) != 1 or after[0].op_type != "Transpose":
        return ""
    after = consumers.get(after[0].output[0], [])
    if len(after) != 1 or after[0].op_type != "Reshape" or after[0].output[0] not in outputs:
        return ""
    return after[0].output[0]
