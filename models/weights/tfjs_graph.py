"""Read a TF.js graph model (model.json + weight shards) into plain numpy: `read_tfjs_graph(json_path)`.

The JSON holds a TF GraphDef (`modelTopology.node`) and a `weightsManifest` whose tensors lie back to back in the
shard files; float16 and affine uint8/uint16 entries are decoded to float32. numpy only, no TensorFlow.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from edgepipe.errors import WeightImportError

__all__ = ["TfjsGraph", "TfjsNode", "read_tfjs_graph"]

# Manifest dtype -> numpy dtype of the stored bytes (little-endian), before any dequantisation.
_STORED_DTYPES = {"float32": "<f4", "int32": "<i4", "bool": "|b1"}
_QUANTIZED_DTYPES = {"float16": "<f2", "uint8": "|u1", "uint16": "<u2"}


@dataclass(frozen=True)
class TfjsNode:
    name: str
    op: str  # TF op type, e.g. 'Conv2D'
    inputs: tuple[str, ...]  # 'node', 'node:1' for a second output, '^node' for a control dependency
    attrs: Mapping[str, Any] = field(default_factory=dict)  # decoded: str, int, float, bool, tuples of those


@dataclass(frozen=True)
class TfjsGraph:
    path: Path  # the model.json
    nodes: tuple[TfjsNode, ...]  # in file order, which TF.js writes topologically sorted for graph models
    weights: Mapping[str, np.ndarray] = field(compare=False)  # Const node name -> decoded array

    def node(self, name: str) -> TfjsNode:
        """The node called `name` (a trailing ':k' output index is ignored)."""
        for node in self.nodes:
            if node.name == name.split(":")[0].lstrip("^"):
                return node
        raise WeightImportError(f"{self.path}: no node {name!r} in the graph")


def _fail(path: Path, what: str) -> WeightImportError:
    return WeightImportError(f"{path}: {what}")


def _decode_attr(value: Mapping[str, Any]) -> Any:
    """One AttrValue in TF's JSON encoding -> a plain Python value."""
    if "s" in value:
        return base64.b64decode(value["s"]).decode("utf-8", errors="replace")
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "type" in value:
        return str(value["type"])
    if "shape" in value:
        return tuple(int(d.get("size", -1)) for d in value["shape"].get("dim", []))
    if "list" in value:
        items = value["list"]
        if "s" in items:
            return tuple(base64.b64decode(s).decode("utf-8", errors="replace") for s in items["s"])
        if "i" in items:
            return tuple(int(i) for i in items["i"])
        if "f" in items:
            return tuple(float(f) for f in items["f"])
        if "type" in items:
            return tuple(str(t) for t in items["type"])
        return ()
    if "tensor" in value:
        return dict(value["tensor"])  # Const values live in the weights; keep the header (dtype, shape)
    return dict(value)


def _parse_node(path: Path, raw: Any) -> TfjsNode:
    if not isinstance(raw, dict) or "name" not in raw or "op" not in raw:
        raise _fail(path, f"expected graph nodes with 'name' and 'op', found {str(raw)[:80]!r}")
    attrs = {key: _decode_attr(value) for key, value in raw.get("attr", {}).items()}
    return TfjsNode(str(raw["name"]), str(raw["op"]), tuple(raw.get("input", [])), MappingProxyType(attrs))


def _decode_entry(path: Path, entry: Mapping[str, Any], buffer: bytes, offset: int) -> tuple[np.ndarray, int]:
    """One manifest entry starting at `offset` of the concatenated shards -> (array, next offset)."""
    name, dtype, shape = entry.get("name"), entry.get("dtype"), entry.get("shape")
    if not isinstance(name, str) or not isinstance(shape, list):
        raise _fail(path, f"expected manifest entries with 'name' and 'shape', found {dict(entry)!r}"[:200])
    quantization = entry.get("quantization")
    if quantization is None:
        stored = _STORED_DTYPES.get(dtype)
        if stored is None:
            raise _fail(path, f"weight {name!r}: unsupported dtype {dtype!r}; expected one of {sorted(_STORED_DTYPES)}")
    else:
        stored = _QUANTIZED_DTYPES.get(quantization.get("dtype"))
        if stored is None:
            raise _fail(path, f"weight {name!r}: unsupported quantization dtype {quantization.get('dtype')!r}; "
                              f"expected one of {sorted(_QUANTIZED_DTYPES)}")
    count = int(np.prod(shape, dtype=np.int64))
    size = count * np.dtype(stored).itemsize
    if offset + size > len(buffer):
        raise _fail(path, f"weight {name!r} needs bytes {offset}..{offset + size}, found only {len(buffer)} bytes")
    array = np.frombuffer(buffer, dtype=stored, count=count, offset=offset).reshape(shape)
    if quantization is None:
        return array.copy(), offset + size
    if quantization["dtype"] == "float16":
        return array.astype(np.float32), offset + size
    # Affine uint8/uint16: value = q * scale + min, then back to the original dtype.
    scale, minimum = float(quantization.get("scale", 1.0)), float(quantization.get("min", 0.0))
    decoded = array.astype(np.float32) * np.float32(scale) + np.float32(minimum)
    if quantization.get("original_dtype", dtype) == "int32":
        return np.round(decoded).astype(np.int32), offset + size
    return decoded, offset + size


def _read_weights(path: Path, manifest: Any) -> dict[str, np.ndarray]:
    if not isinstance(manifest, list):
        raise _fail(path, f"expected 'weightsManifest' to be a list of groups, found {type(manifest).__name__}")
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        paths, entries = group.get("paths", []), group.get("weights", [])
        parts = []
        for shard in paths:
            shard_path = path.parent / shard
            if not shard_path.is_file():
                raise _fail(path, f"weight shard {shard_path} not found; expected it next to the model.json")
            parts.append(shard_path.read_bytes())
        buffer = b"".join(parts)
        offset = 0
        for entry in entries:
            weights[entry["name"]], offset = _decode_entry(path, entry, buffer, offset)
        if offset != len(buffer):
            raise _fail(path, f"manifest group {paths} describes {offset} bytes, found {len(buffer)} in the shards")
    return weights


def read_tfjs_graph(json_path: str | Path) -> TfjsGraph:
    """Parse a TF.js graph model and decode all its weights.

    Args:
        json_path: the `model.json`; its shards are read from the same folder as the manifest names them.

    Returns:
        The nodes in file order and every manifest tensor as a numpy array (float16/quantised -> float32).

    Raises:
        WeightImportError: missing files, invalid JSON, not a graph model, unsupported dtype, or shard sizes that
            disagree with the manifest.
    """
    path = Path(json_path)
    if not path.is_file():
        raise _fail(path, "no such file; expected a TF.js model.json")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(path, f"not valid JSON ({type(e).__name__}: {e})") from e
    if not isinstance(document, dict) or not isinstance(document.get("modelTopology"), dict):
        raise _fail(path, "expected a JSON object with 'modelTopology' and 'weightsManifest'")
    raw_nodes = document["modelTopology"].get("node")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise _fail(path, "expected 'modelTopology.node' to be a non-empty list (a TF.js graph model)")
    nodes = tuple(_parse_node(path, raw) for raw in raw_nodes)
    try:
        weights = _read_weights(path, document.get("weightsManifest"))
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise _fail(path, f"malformed weightsManifest ({type(e).__name__}: {e})") from e
    return TfjsGraph(path, nodes, MappingProxyType(weights))
