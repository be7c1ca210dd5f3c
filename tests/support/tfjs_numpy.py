"""A minimal numpy interpreter of TF.js graph models, the independent reference for import-parity tests.

`run_tfjs_graph(graph, feeds, outputs)` evaluates the GraphDef in topological order with TF semantics (NHWC Conv2D /
MaxPool, half-pixel ResizeBilinear, ...); it knows only the ops the zoo's TF.js graphs use and refuses any other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from edgepipe.models.weights.tfjs_graph import TfjsGraph, TfjsNode

__all__ = ["run_tfjs_graph"]


def _window_out(size: int, window: int, stride: int, padding: str) -> tuple[int, int]:
    """TF output size and leading padding for one spatial axis."""
    if padding == "VALID":
        return (size - window) // stride + 1, 0
    if padding == "SAME":
        out = -(-size // stride)
        total = max((out - 1) * stride + window - size, 0)
        return out, total // 2
    raise NotImplementedError(f"padding {padding!r}")


def _pad_same(x: np.ndarray, ksize: tuple[int, int], strides: tuple[int, int], padding: str, value: float):
    """Apply TF SAME padding explicitly (NHWC), so the windows below are always VALID."""
    if padding != "SAME":
        return x
    pads = [(0, 0)]
    for axis, (window, stride) in enumerate(zip(ksize, strides), start=1):
        out, before = _window_out(x.shape[axis], window, stride, "SAME")
        total = max((out - 1) * stride + window - x.shape[axis], 0)
        pads.append((before, total - before))
    return np.pad(x, pads + [(0, 0)], constant_values=value)


def _windows(x: np.ndarray, ksize: tuple[int, int], strides: tuple[int, int]) -> np.ndarray:
    """(N, H, W, C) -> (N, OH, OW, KH, KW, C) strided view of every window (VALID)."""
    n, h, w, c = x.shape
    (kh, kw), (sh, sw) = ksize, strides
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    s = x.strides
    return np.lib.stride_tricks.as_strided(
        x, (n, oh, ow, kh, kw, c), (s[0], s[1] * sh, s[2] * sw, s[1], s[2], s[3]), writeable=False
    )


def _conv2d(node: TfjsNode, x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    if node.attrs.get("data_format", "NHWC") != "NHWC" or set(node.attrs.get("dilations", (1, 1, 1, 1))) != {1}:
        raise NotImplementedError(f"Conv2D {node.name!r}: only NHWC without dilation")
    kh, kw, cin, cout = kernel.shape
    strides = tuple(node.attrs["strides"][1:3])
    x = _pad_same(x, (kh, kw), strides, node.attrs["padding"], 0.0)
    cols = _windows(x, (kh, kw), strides)  # (N, OH, OW, KH, KW, Cin)
    n, oh, ow = cols.shape[:3]
    out = cols.reshape(n * oh * ow, kh * kw * cin) @ kernel.reshape(kh * kw * cin, cout)  # im2col + matmul
    return out.reshape(n, oh, ow, cout)


def _max_pool(node: TfjsNode, x: np.ndarray) -> np.ndarray:
    if node.attrs.get("data_format", "NHWC") != "NHWC":
        raise NotImplementedError(f"MaxPool {node.name!r}: only NHWC")
    ksize, strides = tuple(node.attrs["ksize"][1:3]), tuple(node.attrs["strides"][1:3])
    x = _pad_same(x, ksize, strides, node.attrs["padding"], -np.inf)
    return _windows(x, ksize, strides).max(axis=(3, 4))


def _resize_axis(in_size: int, out_size: int, half_pixel: bool, align_corners: bool):
    """Lower index, upper index and weight of the upper one, as TF's compute_interpolation_weights."""
    if align_corners and out_size > 1:
        scale = (in_size - 1) / (out_size - 1)
    else:
        scale = in_size / out_size
    dst = np.arange(out_size, dtype=np.float64)
    src = (dst + 0.5) * scale - 0.5 if half_pixel else dst * scale
    floor = np.floor(src)
    lower = np.clip(floor, 0, in_size - 1).astype(np.int64)
    upper = np.clip(np.ceil(src), 0, in_size - 1).astype(np.int64)
    return lower, upper, (src - floor).astype(np.float32)


def _resize_bilinear(node: TfjsNode, x: np.ndarray, size: np.ndarray) -> np.ndarray:
    half_pixel, align = bool(node.attrs.get("half_pixel_centers")), bool(node.attrs.get("align_corners"))
    (y0, y1, wy), (x0, x1, wx) = (
        _resize_axis(x.shape[axis], int(size[axis - 1]), half_pixel, align) for axis in (1, 2)
    )
    wy, wx = wy[None, :, None, None], wx[None, None, :, None]
    top = x[:, y0][:, :, x0] * (1 - wx) + x[:, y0][:, :, x1] * wx
    bottom = x[:, y1][:, :, x0] * (1 - wx) + x[:, y1][:, :, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(x.dtype)


def _sparse_to_dense(indices: np.ndarray, shape: np.ndarray, values: np.ndarray, default: np.ndarray) -> np.ndarray:
    dense = np.full(tuple(int(d) for d in np.atleast_1d(shape)), default, dtype=np.asarray(default).dtype)
    indices = np.asarray(indices)
    indices = indices.reshape(-1, 1) if indices.ndim < 2 else indices  # 0-D / 1-D: indices into a 1-D output
    for index, value in zip(indices, np.broadcast_to(values, (len(indices),))):
        dense[tuple(index)] = value
    return dense


def _split_v(node: TfjsNode, x: np.ndarray, sizes: np.ndarray, axis: np.ndarray) -> list[np.ndarray]:
    sizes = [int(s) for s in sizes]
    if -1 in sizes:
        sizes[sizes.index(-1)] = x.shape[int(axis)] - (sum(sizes) + 1)
    return np.split(x, np.cumsum(sizes)[:-1], axis=int(axis))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(x.dtype)


# op -> function(node, *input values) -> one array or a list of arrays (multi-output ops)
_OPS: dict[str, Callable[..., np.ndarray | list[np.ndarray]]] = {
    "Identity": lambda node, x: x,
    "Add": lambda node, a, b: a + b,
    "AddV2": lambda node, a, b: a + b,
    "BiasAdd": lambda node, a, b: a + b,
    "LeakyRelu": lambda node, x: np.where(x >= 0, x, x * np.float32(node.attrs.get("alpha", 0.2))),
    "Relu": lambda node, x: np.maximum(x, 0),
    "Sigmoid": lambda node, x: _sigmoid(x),
    "Pad": lambda node, x, pads: np.pad(x, pads.astype(np.int64)),
    "PadV2": lambda node, x, pads, value: np.pad(x, pads.astype(np.int64), constant_values=value),
    "Transpose": lambda node, x, perm: np.transpose(x, perm.astype(np.int64)),
    "Reshape": lambda node, x, shape: x.reshape(tuple(int(d) for d in shape)),
    "ConcatV2": lambda node, *args: np.concatenate(args[:-1], axis=int(args[-1])),
    "Conv2D": _conv2d,
    "MaxPool": _max_pool,
    "ResizeBilinear": _resize_bilinear,
    "SplitV": _split_v,
    "SparseToDense": lambda node, *args: _sparse_to_dense(*args),
}


def _topological_order(nodes: Sequence[TfjsNode], wanted: Sequence[str]) -> list[TfjsNode]:
    """The nodes `wanted` depends on, each after all its inputs (iterative DFS over the GraphDef)."""
    by_name = {node.name: node for node in nodes}
    order, done, stack = [], set(), [(name.split(":")[0], False) for name in reversed(wanted)]
    while stack:
        name, expanded = stack.pop()
        if name in done:
            continue
        if expanded:
            done.add(name)
            order.append(by_name[name])
            continue
        stack.append((name, True))
        for ref in reversed(by_name[name].inputs):
            source = ref.lstrip("^").split(":")[0]
            if source not in done:
                stack.append((source, False))
    return order


def run_tfjs_graph(graph: TfjsGraph, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
    """Evaluate `outputs` (node names, 'node:k' for the k-th output) given Placeholder values in `feeds`."""
    values: dict[str, list[np.ndarray]] = {}
    for node in _topological_order(graph.nodes, outputs):
        if node.op == "Placeholder":
            result = np.asarray(feeds[node.name], dtype=np.float32)
        elif node.op == "Const":
            result = graph.weights[node.name]
        elif node.op in _OPS:
            args = []
            for ref in node.inputs:
                if ref.startswith("^"):
                    continue
                source, _, index = ref.partition(":")
                args.append(values[source][int(index or 0)])
            result = _OPS[node.op](node, *args)
        else:
            raise NotImplementedError(f"op {node.op!r} of node {node.name!r} is not supported")
        values[node.name] = result if isinstance(result, list) else [result]
    return [values[name.split(":")[0]][int(name.partition(":")[2] or 0)] for name in outputs]
