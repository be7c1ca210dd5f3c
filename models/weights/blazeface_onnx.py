"""Read BlazeFace weights out of the barracuda ONNX files: `blazeface_state_dict_from_onnx(path, variant)`.

The tf2onnx graphs name layers `conv2d_17`, `depthwise_conv2d_9`, ..., so the mapping walks the graph in order and
checks every conv's attributes and shapes against `BlazeFace(variant)` instead of trusting names.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from edgepipe.errors import WeightImportError
from edgepipe.models.zoo.blazeface import DOWNSAMPLE_PAD_LRTB, STEM_PAD_LRTB, BlazeBlock, BlazeFace

__all__ = ["blazeface_state_dict_from_onnx"]

_HEAD_PREFIXES = ("classifiers.", "regressors.")


def _fail(path: Path, what: str) -> WeightImportError:
    return WeightImportError(f"{path}: {what}")


def _load_graph(path: Path) -> onnx.GraphProto:
    if not path.is_file():
        raise _fail(path, "no such file; expected a barracuda BlazeFace .onnx")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf raises DecodeError, RuntimeWarning-derived or ValueError on garbage
        raise _fail(path, f"not a valid ONNX file ({type(e).__name__}: {e})".replace("\n", " ")) from e
    if not model.graph.node:
        raise _fail(path, "not a valid ONNX file (graph has 0 nodes)")
    return model.graph


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim]


def _expected_op_counts(model: BlazeFace) -> Counter:
    """Every node the graph must hold, derived from the module's block table."""
    blocks = [m for m in model.modules() if isinstance(m, BlazeBlock)]
    residual = [b for b in blocks if b.residual]
    grows = sum(1 for b in residual if b.extra_channels > 0)
    return Counter(
        Conv=sum(1 for m in model.modules() if isinstance(m, nn.Conv2d)),
        Relu=1 + len(blocks),
        Add=len(residual),
        MaxPool=sum(1 for b in residual if b.stride == 2),
        ConstantOfShape=grows,  # tf2onnx writes the zero channel padding as Concat(x, ConstantOfShape)
        Concat=grows,
        Transpose=1 + 4,  # NHWC input, then one per head output
        Reshape=4,
    )


def _expected_pads(name: str, conv: nn.Conv2d) -> list[int]:
    """ONNX pads [top, left, bottom, right] that reproduce what the module does for this conv."""
    if name == "stem":
        left, right, top, bottom = STEM_PAD_LRTB
    elif conv.stride == (2, 2):
        left, right, top, bottom = DOWNSAMPLE_PAD_LRTB
    else:
        left = right = conv.padding[1]
        top = bottom = conv.padding[0]
    return [top, left, bottom, right]


def _head_output_of(conv_node: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]], outputs: set[str]) -> str:
    """The graph output a head conv feeds through Transpose -> Reshape, or '' for a backbone conv."""
    after = consumers.get(conv_node.output[0], [])
    if len(after) != 1 or after[0].op_type != "Transpose":
        return ""
    after = consumers.get(after[0].output[0], [])
    if len(after) != 1 or after[0].op_type != "Reshape" or after[0].output[0] not in outputs:
        return ""
    return after[0].output[0]


def blazeface_state_dict_from_onnx(path: str | Path, variant: str) -> dict[str, torch.Tensor]:
    """Map the initializers of a barracuda BlazeFace ONNX onto `BlazeFace(variant).state_dict()` keys.

    Args:
        path: `face_detection_back_256x256_barracuda.onnx` or `face_detection_front_128x128_barracuda.onnx`.
        variant: 'back' or 'front'; must match the file.

    Returns:
        float32 tensors keyed like `BlazeFace(variant).state_dict()`, ready for `load_strict`.

    Raises:
        WeightImportError: the file is missing or not ONNX, or its graph differs from the module in input shape,
            op counts, conv order, conv attributes or weight shapes.
        SpecError: `variant` is not 'back' or 'front'.
    """
    path = Path(path)
    model = BlazeFace(variant)
    graph = _load_graph(path)
    size = model.input_size

    initializers = {init.name: init for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    want_input = [1, size, size, 3]
    if len(inputs) != 1 or _dims(inputs[0]) != want_input:
        found = [_dims(i) for i in inputs]
        raise _fail(path, f"expected one NHWC input {want_input} for variant {variant!r}, found {found}")
    first = graph.node[0]
    perm = next((list(a.ints) for a in first.attribute if a.name == "perm"), None)
    if first.op_type != "Transpose" or perm != [0, 3, 1, 2]:
        raise _fail(path, f"expected the graph to open with Transpose perm [0, 3, 1, 2], found {first.op_type} {perm}")

    want_ops = _expected_op_counts(model)
    found_ops = Counter(node.op_type for node in graph.node)
    if found_ops != want_ops:
        want, found = dict(sorted(want_ops.items())), dict(sorted(found_ops.items()))
        raise _fail(path, f"expected op counts {want}, found {found}")

    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    output_names = [o.name for o in graph.output]
    backbone_nodes, head_by_output = [], {}
    for node in graph.node:
        if node.op_type == "Conv":
            head_output = _head_output_of(node, consumers, set(output_names))
            if head_output:
                head_by_output[head_output] = node
            else:
                backbone_nodes.append(node)

    # Graph outputs are [scores 16x16, scores 8x8, regressors 16x16, regressors 8x8], as the Unity runtime reads them.
    head_names = ["classifiers.0", "classifiers.1", "regressors.0", "regressors.1"]
    if sorted(head_by_output) != sorted(output_names) or len(output_names) != len(head_names):
        raise _fail(path, f"expected 4 head convs feeding outputs {output_names}, found {sorted(head_by_output)}")
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    backbone_names = [name for name in convs if not name.startswith(_HEAD_PREFIXES)]
    if len(backbone_nodes) != len(backbone_names):
        raise _fail(path, f"expected {len(backbone_names)} backbone convs, found {len(backbone_nodes)}")
    pairs = list(zip(backbone_names, backbone_nodes)) + [
        (name, head_by_output[out]) for name, out in zip(head_names, output_names)
    ]

    state: dict[str, torch.Tensor] = {}
    for name, node in pairs:
        conv = convs[name]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        found = {
            "kernel_shape": list(attrs.get("kernel_shape", [])),
            "strides": list(attrs.get("strides", [1, 1])),
            "group": attrs.get("group", 1),
            "pads": list(attrs.get("pads", [0, 0, 0, 0])),
        }
        want = {
            "kernel_shape": list(conv.kernel_size),
            "strides": list(conv.stride),
            "group": conv.groups,
            "pads": _expected_pads(name, conv),
        }
        if found != want:
            raise _fail(path, f"conv {node.name!r} -> {name!r}: expected {want}, found {found}")
        want_params = {"weight": tuple(conv.weight.shape)}
        if conv.bias is not None:
            want_params["bias"] = tuple(conv.bias.shape)
        sources = [i for i in node.input[1:] if i]
        if len(sources) != len(want_params):
            what = f"expected {len(want_params)} params, found {len(sources)}"
            raise _fail(path, f"conv {node.name!r} -> {name!r}: {what}")
        for (param, shape), source in zip(want_params.items(), sources):
            if source not in initializers:
                raise _fail(path, f"conv {node.name!r} -> {name}.{param}: expected an initializer, found {source!r}")
            array = numpy_helper.to_array(initializers[source])
            if array.dtype != np.float32 or array.shape != shape:
                raise _fail(
                    path, f"{source!r} -> {name}.{param}: expected float32 {shape}, found {array.dtype} {array.shape}"
                )
            state[f"{name}.{param}"] = torch.from_numpy(array.copy())
    return state
