"""What a benchmark cell is given, worked out once in the parent: `artifact_info(path)` (contract, size, GFLOPs per
image, or for a file without a contract its inputs' shapes and dtypes) and `cell_providers(...)` (the onnxruntime
providers argument of one cell, TensorRT's profile and caches included)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import onnx

from edgepipe.errors import BenchmarkError
from edgepipe.flops import count_flops
from edgepipe.runtime.providers import session_providers
from edgepipe.runtime.session import METADATA_KEY, read_contract
from edgepipe.runtime.specs import ArtifactMeta, Layout

__all__ = ["ArtifactInfo", "artifact_info", "cell_providers"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArtifactInfo:
    path: Path
    meta: ArtifactMeta | None  # None: a file without a contract, timed on random inputs made from its graph
    meta_json: str
    size_mb: float
    gflops: float | None
    name: str  # the row's model: the contract's name, or the file's stem
    precision: str
    raw_inputs: dict[str, tuple[list, str]] | None = None  # contract-less: input -> (dims, None = batch; dtype)


def artifact_info(path: Path, shapes: dict[str, tuple[int, ...]] | None = None) -> ArtifactInfo:
    """Contract, size and per-image GFLOPs of an artifact, read once in this process; for a file without a
    contract, its inputs' shapes and dtypes instead (dynamic dims from `shapes`)."""
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError and friends
        raise BenchmarkError(f"{path}: not a loadable ONNX file ({type(e).__name__})") from e
    props = {p.key: p.value for p in proto.metadata_props}
    size_mb = round(path.stat().st_size / 1e6, 3)
    if METADATA_KEY not in props:
        raw = raw_inputs(proto, path, shapes or {})
        for value in proto.graph.input:  # counted at the shapes it will run at, batch 1
            for dim, size in zip(value.type.tensor_type.shape.dim, raw.get(value.name, ((),))[0]):
                dim.dim_value = size or 1
        quantized = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") or n.op_type.endswith("Integer")
                        for n in proto.graph.node)
        return ArtifactInfo(path, None, "", size_mb, gflops(proto, path), path.stem,
                             "int8" if quantized else "fp32", raw)
    meta = read_contract(props, path)
    return ArtifactInfo(path, meta, props[METADATA_KEY], size_mb, gflops(proto, path), meta.model_name,
                         meta.precision.value)


def gflops(proto: onnx.ModelProto, path: Path) -> float | None:
    try:
        return count_flops(proto, batch=1) / 1e9
    except BenchmarkError as e:
        log.warning("%s: FLOPs not counted: %s", path.name, e)
        return None


_ONNX_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
                onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT8: "int8", onnx.TensorProto.INT32: "int32",
                onnx.TensorProto.INT64: "int64", onnx.TensorProto.BOOL: "bool"}


def raw_inputs(proto: onnx.ModelProto, path: Path, shapes: dict[str, tuple[int, ...]]) -> dict:
    """Input name -> (dims with None for the batch axis when the graph leaves it dynamic, dtype); every other
    dynamic dim must come from `shapes` (--shape NAME:1x3x640x640), or this is one line naming it."""
    weights = {init.name for init in proto.graph.initializer}
    inputs = {}
    unknown = sorted(set(shapes) - {i.name for i in proto.graph.input})
    if unknown:
        raise BenchmarkError(f"{path}: --shape names {unknown}, not inputs of this graph")
    for value in (i for i in proto.graph.input if i.name not in weights):
        kind = value.type.tensor_type.elem_type
        if kind not in _ONNX_DTYPES:
            raise BenchmarkError(f"{path}: input {value.name!r} is of ONNX type "
                                 f"{onnx.TensorProto.DataType.Name(kind)}, which bench cannot make data for")
        graph_dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        dims = list(shapes.get(value.name, graph_dims))
        if value.name in shapes and len(dims) != len(graph_dims):
            raise BenchmarkError(f"{path}: --shape gives {value.name!r} {len(dims)} dims, the graph has "
                                 f"{len(graph_dims)}")
        if dims and graph_dims and graph_dims[0] is None:
            dims[0] = None  # the batch axis: each cell's --batch
        if None in dims[1:]:
            shown = "x".join("?" if d is None else str(d) for d in graph_dims)
            raise BenchmarkError(f"{path}: has no edgepipe contract and input {value.name!r} has dynamic dims "
                                 f"({shown}); give them with --shape {value.name}:" +
                                 "x".join("1" if d is None and i == 0 else "N" if d is None else str(d)
                                          for i, d in enumerate(graph_dims)))
        inputs[value.name] = (dims, _ONNX_DTYPES[kind])
    return inputs


def cell_providers(ep: str, threads: int, batch: int, info: ArtifactInfo, cache_dir: Path,
                   gpu: str | None = None, batches: tuple[int, ...] = ()) -> list:
    """The onnxruntime providers argument of a cell: only the requested provider (CPU is onnxruntime's implicit
    fallback, which the profile then shows). TensorRT gets a dynamic-batch profile from the smallest to the largest
    of `batches` (this cell's batch as the one to optimise for), so its engine is built (or loaded from the cache,
    `CACHE/tensorrt/GPU/`) at session creation, fp16 or int8 (from the QDQ nodes) as the artifact is, and no CUDA
    provider behind it: a node TensorRT does not take shows up as a fallback."""
    if ep != "tensorrt":
        return session_providers(ep, threads=threads)

    def shape(n: int) -> str:
        if info.meta is None:
            return ",".join(f"{name}:{'x'.join(str(n if d is None else d) for d in dims)}"
                            for name, (dims, _) in info.raw_inputs.items())
        c, h, w = info.meta.input.shape_chw
        dims = (n, c, h, w) if info.meta.input.layout == Layout.NCHW else (n, h, w, c)
        return f"{info.meta.input_name}:{'x'.join(map(str, dims))}"

    (name, options), _ = session_providers("tensorrt", fp16=info.precision == "fp16",
                                           int8=info.precision.startswith("int8"), cache_dir=cache_dir,
                                           gpu=gpu or "gpu0")
    low, high = min((*batches, batch)), max((*batches, batch))
    return [(name, {**options, "trt_profile_min_shapes": shape(low), "trt_profile_opt_shapes": shape(batch),
                    "trt_profile_max_shapes": shape(high)})]
