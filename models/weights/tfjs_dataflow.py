"""The dataflow of a TF.js graph model, as plain queries: `read_tfjs_dataflow(json_path) -> TfjsDataflow`.

Format only: which nodes feed which, the Conv2D nodes above a node, the zero padding in front of a conv and the bias
added after it, and the output rows the signature declares. Which module a conv belongs to is the architecture's
business (see `models/zoo/nanodet.py`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgepipe.errors import WeightImportError
from edgepipe.models.weights.tfjs_graph import TfjsGraph, TfjsNode, read_tfjs_graph

__all__ = ["TfjsDataflow", "read_tfjs_dataflow"]

_BIAS_OPS = ("Add", "AddV2", "BiasAdd")
_PAD_OPS = ("Pad", "PadV2")


def _source(ref: str) -> str:
    """Producer node name of an input reference ('node:1' -> 'node'); '' for a control dependency."""
    return "" if ref.startswith("^") else ref.split(":")[0]


class TfjsDataflow:
    """Producers, consumers and Conv2D ancestry of a TF.js graph (Const inputs skipped), plus the output rows
    (`(1, rows, channels)` outputs) its signature declares."""

    def __init__(self, path: Path, graph: TfjsGraph, output_rows: dict[str, int]):
        self.path, self.graph, self.output_rows = path, graph, output_rows
        self.by_name = {node.name: node for node in graph.nodes}
        self.consumers: dict[str, list[TfjsNode]] = {}
        for node in graph.nodes:
            for ref in node.inputs:
                self.consumers.setdefault(_source(ref), []).append(node)
        self.convs = [node for node in graph.nodes if node.op == "Conv2D"]
        self.conv_ancestors = {conv.name: self._conv_ancestors(conv) for conv in self.convs}

    def fail(self, what: str) -> WeightImportError:
        return WeightImportError(f"{self.path}: {what}")

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

    def explicit_padding(self, conv: TfjsNode) -> tuple[int, int]:
        """(top, left) zero padding applied by a Pad node in front of the conv, seen through layout Transposes;
        (-1, -1) for padding a symmetric spatial zero pad cannot express."""
        node, perm = self.data_inputs(conv)[0], list(range(4))
        while node.op == "Transpose":
            perm = [int(self.graph.weights[node.inputs[1]][axis]) for axis in perm]
            node = self.data_inputs(node)[0]
        if node.op not in _PAD_OPS:
            return (0, 0)
        pads = self.graph.weights[node.inputs[1]][perm]  # rows now in the conv's NHWC order
        if node.op == "PadV2" and float(self.graph.weights[node.inputs[2]]) != 0.0:
            return (-1, -1)  # not zero padding
        if pads[1, 0] != pads[1, 1] or pads[2, 0] != pads[2, 1] or pads[0].any() or pads[3].any():
            return (-1, -1)  # asymmetric or off-spatial padding
        return (int(pads[1, 0]), int(pads[2, 0]))

    def bias_of(self, conv: TfjsNode) -> np.ndarray:
        """The constant the single Add after the conv adds."""
        after = self.consumers.get(conv.name, [])
        if len(after) != 1 or after[0].op not in _BIAS_OPS:
            raise self.fail(f"expected conv {conv.name!r} to feed one bias Add, found {[n.op for n in after]}")
        consts = [ref for ref in after[0].inputs if ref in self.graph.weights]
        if len(consts) != 1:
            raise self.fail(f"expected bias add {after[0].name!r} to take one constant, found {consts}")
        return self.graph.weights[consts[0]]


def read_tfjs_dataflow(json_path: str | Path) -> TfjsDataflow:
    """Read a TF.js graph model (`model.json` with its `.bin` shards beside it) and its signature's output rows.

    Raises:
        WeightImportError: unreadable files, or a signature without rank-3 outputs.
    """
    path = Path(json_path)
    graph = read_tfjs_graph(path)
    document = json.loads(path.read_text(encoding="utf-8"))  # already validated by read_tfjs_graph
    rows = {}
    for key, spec in document.get("signature", {}).get("outputs", {}).items():
        dims = [int(d.get("size", -1)) for d in spec.get("tensorShape", {}).get("dim", [])]
        if len(dims) != 3:
            raise WeightImportError(f"{path}: expected signature output {key!r} of rank 3 (batch, rows, channels), "
                                    f"found {dims}")
        rows[spec.get("name", key).split(":")[0]] = dims[1]
    if not rows:
        raise WeightImportError(f"{path}: expected 'signature.outputs' naming the score and distribution outputs, "
                                "found none")
    return TfjsDataflow(path, graph, rows)
