"""Read a whole ONNX graph as plain data: `read_onnx_graph(path) -> OnnxGraph`.

Format only: the non-initializer inputs and the outputs with their dims, every node in file order with its decoded
attributes, and the initializers as numpy arrays. Which module a node belongs to is the architecture's business
(see `models/zoo/yunet.py` and `models/zoo/sface.py`); `read_onnx_convs` stays the lighter reader for conv-only graphs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgepipe.errors import WeightImportError

__all__ = ["OnnxGraph", "OnnxNode", "read_onnx_graph"]


@dataclass(frozen=True)
class OnnxNode:
    name: str
    op_type: str
    inputs: tuple[str, ...]  # '' for an omitted optional input
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)  # int, float, str, tuples of those, tensors as ndarray

    def attr(self, name: str, default: Any = None) -> Any:
        """The attribute `name`, or `default` (the ONNX default the caller knows) when the file omits it."""
        return self.attrs.get(name, default)


@dataclass(frozen=True)
class OnnxGraph:
    path: Path
    inputs: Mapping[str, tuple[int | str, ...]]  # graph inputs that are not initializers -> dims, in file order
    outputs: Mapping[str, tuple[int | str, ...]]  # graph outputs -> dims, in file order
    nodes: tuple[OnnxNode, ...]  # in file order, which ONNX requires to be topologically sorted
    initializers: Mapping[str, np.ndarray] = field(compare=False)

    def fail(self, what: str) -> WeightImportError:
        return WeightImportError(f"{self.path}: {what}")

    @property
    def op_counts(self) -> Counter:
        return Counter(node.op_type for node in self.nodes)

    def consumers(self, tensor: str) -> list[OnnxNode]:
        """The nodes that read `tensor`, in file order."""
        return [node for node in self.nodes if tensor in node.inputs]

    def producer(self, tensor: str) -> OnnxNode | None:
        """The node that writes `tensor`, or None for a graph input or an initializer."""
        return next((node for node in self.nodes if tensor in node.outputs), None)

    def conv_attrs(self, node: OnnxNode) -> dict[str, Any]:
        """A Conv node's attributes with the ONNX defaults filled in; kernel_shape defaults to the weight's."""
        weight = self.initializers.get(node.inputs[1]) if len(node.inputs) > 1 else None
        spatial = len(weight.shape) - 2 if weight is not None else 2
        kernel = tuple(weight.shape[2:]) if weight is not None else None
        return {
            "kernel_shape": tuple(node.attr("kernel_shape", kernel or ())),
            "strides": tuple(node.attr("strides", (1,) * spatial)),
            "pads": tuple(node.attr("pads", (0,) * 2 * spatial)),  # [x1_begin, x2_begin, ..., x1_end, x2_end, ...]
            "dilations": tuple(node.attr("dilations", (1,) * spatial)),
            "group": node.attr("group", 1),
            "auto_pad": node.attr("auto_pad", "NOTSET"),
        }

    def initializer(self, node: OnnxNode, index: int) -> np.ndarray:
        """The initializer behind `node.inputs[index]`; fails when that input is missing or computed."""
        name = node.inputs[index] if index < len(node.inputs) else ""
        if name not in self.initializers:
            raise self.fail(f"{node.op_type} {node.name!r} input {index}: expected an initializer, found {name!r}")
        return self.initializers[name]


def read_onnx_graph(path: str | Path) -> OnnxGraph:
    """Parse an ONNX file into nodes, attributes and initializer arrays.

    Args:
        path: the .onnx file (weights inside, no external data).

    Returns:
        The graph as plain Python and numpy values.

    Raises:
        WeightImportError: the file is missing, not ONNX, holds an empty graph or keeps weights as external data.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightImportError(f"{path}: no such file; expected an .onnx file")
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as e:  # protobuf raises DecodeError, RuntimeWarning-derived or ValueError on garbage
        raise WeightImportError(f"{path}: not a valid ONNX file ({type(e).__name__}: {e})".replace("\n", " ")) from e
    if not graph.node:
        raise WeightImportError(f"{path}: not a valid ONNX file (graph has 0 nodes)")
    external = [init.name for init in graph.initializer if init.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise WeightImportError(f"{path}: {len(external)} initializers are external data (first: {external[0]!r}); "
                                f"expected every weight inside the file")
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    nodes = tuple(
        OnnxNode(name=node.name, op_type=node.op_type, inputs=tuple(node.input), outputs=tuple(node.output),
                 attrs=MappingProxyType({a.name: _decode(onnx.helper.get_attribute_value(a)) for a in node.attribute}))
        for node in graph.node
    )
    return OnnxGraph(
        path=path,
        inputs=MappingProxyType({i.name: _dims(i) for i in graph.input if i.name not in initializers}),
        outputs=MappingProxyType({o.name: _dims(o) for o in graph.output}),
        nodes=nodes,
        initializers=MappingProxyType(initializers),
    )


def _decode(value: Any) -> Any:
    """An attribute value from onnx.helper -> str for bytes, ndarray for a tensor, tuple for a list."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    return value


def _dims(value_info: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                 for d in value_info.type.tensor_type.shape.dim)
