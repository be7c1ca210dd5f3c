"""Arithmetic work of an ONNX graph and the fp32 peak of this CPU, for roofline shares:
`count_flops(model) -> int` (per image) and `cpu_peak_gflops() -> (GFLOP/s per core, formula)`.

FLOPs count the multiply-accumulates of Conv/ConvTranspose/Gemm/MatMul (and their integer forms) as 2 each;
element-wise ops, pooling and resizes are memory-bound and not counted.
"""

from __future__ import annotations

import math
import platform
from pathlib import Path

import onnx

from edgepipe.errors import BenchmarkError

__all__ = ["count_flops", "cpu_peak_gflops"]

# ISA flag -> (fp32 flop per cycle per core, how). Two FMA pipes are the norm for the x86 cores this targets
# (Intel since Haswell, AMD since Zen 2); parts with one 512-bit FMA unit or double-pumped AVX-512 (Zen 4) reach
# half the avx512f figure: pass `peak_gflops_per_core` for those.
_FLOP_PER_CYCLE = (
    ("avx512f", 64, "AVX-512: 2 FMA units x 16 fp32 lanes x 2 flop"),
    ("avx2+fma", 32, "AVX2+FMA: 2 FMA units x 8 fp32 lanes x 2 flop"),
    ("avx", 16, "AVX: 8-lane mul + 8-lane add"),
    ("asimd", 16, "NEON: 2 FMA units x 4 fp32 lanes x 2 flop"),
    ("sse2", 8, "SSE2: 4-lane mul + 4-lane add"),
)
# op type -> index of the weight (or second matrix) input
_CONV_WEIGHT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
_MATMUL_B = {"MatMul": 1, "MatMulInteger": 1, "QLinearMatMul": 3}


def count_flops(model: onnx.ModelProto | str | Path, batch: int = 1) -> int:
    """Floating-point operations of one forward pass, from the graph's shapes after ONNX shape inference.

    Conv: 2 * N * Cout * Hout * Wout * (Cin / group) * kh * kw; ConvTranspose: 2 * N * Cin * Hin * Win *
    (Cout / group) * kh * kw; Gemm and MatMul: 2 * M * N * K (times any broadcast batch dimensions).

    Args:
        model: an ONNX model or its path; a symbolic first input dimension is fixed to `batch` for the count.
        batch: the batch size N.

    Returns:
        The operation count (int) for `batch` images.

    Raises:
        BenchmarkError: the file does not load, or a counted node's shapes stay unknown after inference.
    """
    proto = _load(model)
    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    del fixed.graph.value_info[:]  # re-infer every shape from the fixed input size
    initializers = {t.name for t in fixed.graph.initializer}
    for tensor in fixed.graph.input:
        if tensor.name in initializers:
            continue
        dims = tensor.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch  # the dynamic batch; any other symbolic axis stays unknown and is reported
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception as e:  # onnx raises InferenceError and plain RuntimeErrors alike
        raise BenchmarkError(f"shape inference failed: {str(e).splitlines()[0][:200]}") from e
    shapes = _shape_table(inferred.graph)
    return sum(_node_flops(node, shapes) for node in inferred.graph.node)


def _load(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    try:
        return onnx.load(str(model))
    except Exception as e:  # protobuf DecodeError, OSError
        raise BenchmarkError(f"{model}: not a loadable ONNX file ({type(e).__name__})") from e


def _shape_table(graph: onnx.GraphProto) -> dict[str, tuple[int | None, ...]]:
    """Tensor name -> shape (None for an unknown dimension), from initializers, inputs and inferred values."""
    shapes = {t.name: tuple(int(d) for d in t.dims) for t in graph.initializer}
    for info in (*graph.input, *graph.value_info, *graph.output):
        if info.name in shapes or not info.type.tensor_type.HasField("shape"):
            continue
        shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                  for d in info.type.tensor_type.shape.dim)
    return shapes


def _known(node: onnx.NodeProto, shapes: dict, *names: str) -> list[tuple[int, ...]]:
    found = []
    for name in names:
        shape = shapes.get(name)
        if shape is None or any(d is None for d in shape):
            raise BenchmarkError(f"cannot count FLOPs of {node.op_type} {node.name!r}: shape of {name!r} "
                                 f"unknown after shape inference ({shape})")
        found.append(shape)
    return found


def _node_flops(node: onnx.NodeProto, shapes: dict) -> int:
    """2 x the multiply-accumulates of one node (0 for ops that are not counted)."""
    if node.op_type in _CONV_WEIGHT:
        out, weight = _known(node, shapes, node.output[0], node.input[_CONV_WEIGHT[node.op_type]])
        return 2 * math.prod(out) * math.prod(weight[1:])  # weight: (Cout, Cin / group, kh, kw)
    if node.op_type == "ConvTranspose":
        x, weight = _known(node, shapes, node.input[0], node.input[1])
        return 2 * math.prod(x) * math.prod(weight[1:])  # weight: (Cin, Cout / group, kh, kw)
    if node.op_type == "Gemm":
        a, out = _known(node, shapes, node.input[0], node.output[0])
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        return 2 * math.prod(out) * (a[0] if trans_a else a[1])  # out: (M, N)
    if node.op_type in _MATMUL_B:
        a, out = _known(node, shapes, node.input[0], node.output[0])
        return 2 * math.prod(out) * a[-1]  # out: (..., M, N); a: (..., M, K)
    return 0


def cpu_peak_gflops() -> tuple[float | None, str]:
    """Theoretical fp32 peak of one core of this CPU: flop per cycle (from the ISA) x clock.

    The clock is the maximum frequency the kernel reports (`cpufreq/cpuinfo_max_freq`, what `lscpu` calls
    "CPU max MHz"), else the highest "cpu MHz" in /proc/cpuinfo (the nominal clock under most hypervisors).

    Returns:
        (GFLOP/s per core or None when the clock is unknown, a one-line account of the formula).
    """
    flags = cpu_flags()
    for flag, per_cycle, how in _FLOP_PER_CYCLE:
        needed = flag.split("+")
        if all(f in flags for f in needed):
            break
    else:
        per_cycle, how = 8, f"unknown ISA on {platform.machine()}: assumed 8 fp32 flop"
    mhz, source = _clock_mhz()
    if mhz is None:
        return None, f"{how} = {per_cycle} flop/cycle x unknown clock"
    gflops = per_cycle * mhz / 1e3
    return gflops, f"{how} = {per_cycle} flop/cycle x {mhz / 1e3:.3f} GHz ({source}) = {gflops:.1f} GFLOP/s per core"


def cpu_flags() -> set[str]:
    """The ISA flags /proc/cpuinfo lists for this CPU (empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _clock_mhz() -> tuple[float | None, str]:
    max_freq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    try:
        return int(max_freq.read_text()) / 1e3, "cpuinfo_max_freq"  # kHz
    except (OSError, ValueError):
        pass
    try:
        mhz = [float(line.split(":", 1)[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
               if line.startswith("cpu MHz")]
    except (OSError, ValueError):
        mhz = []
    return (max(mhz), "/proc/cpuinfo cpu MHz") if mhz else (None, "")

