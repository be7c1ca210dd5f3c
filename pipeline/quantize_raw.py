"""Quantize an ONNX file that has no edgepipe contract: `quantize_raw(source, precision, out_dir, input_spec)`.

Without a task head there is no task metric, so the budget is on output parity instead: every output's cosine
similarity to fp32 over the parity inputs must reach `min_cosine` (and the max abs diff is reported). Int8 static
calibrates on photos prepared with `input_spec` (size, resize, colour, mean, std: what the graph expects); fp16 and
int8-dynamic compare on the same photos. The result is `NAME.PRECISION.onnx` (still without a contract: `adopt` it
to give it a head) and its JSON: parity, the budget said plainly, speed, settings.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import edgepipe
from edgepipe.errors import QuantizeError
from edgepipe.ort_quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
from edgepipe.quantize import ORT_METHODS, CalibMethod
from edgepipe.quantize_calib import ImageReader, graph_batch_limit, list_images
from edgepipe.quantize_figures import time_pair
from edgepipe.quantize_graph import QUANT_OPS, float16_copy, prepare_graph
from edgepipe.runtime.atomic import atomic_write, check_destination, scratch_dir
from edgepipe.runtime.preprocess import prepare, read_image
from edgepipe.runtime.specs import InputSpec
from edgepipe.samples import sample_images
from edgepipe.sources import sha256_file
from edgepipe.timing import machine_info

__all__ = ["quantize_raw", "MIN_COSINE"]

MIN_COSINE = 0.99  # the default parity budget: every output's cosine similarity to fp32 over the parity inputs


def quantize_raw(source: str | Path, precision: str, out_dir: str | Path, input_spec: InputSpec, *,
                 calib_dir: Path | None = None, calib_size: int = 32, method: CalibMethod = CalibMethod.MINMAX,
                 min_cosine: float = MIN_COSINE, parity_inputs: int = 8, threads: int = 2,
                 timing_runs: int = 20) -> dict:
    """Quantize a contract-less fp32 ONNX file within an output-parity budget.

    Args:
        source: the fp32 ONNX file (one image input).
        precision: "fp16", "int8" (static, QDQ, per-channel 7-bit weights) or "int8-dynamic".
        input_spec: how a photo becomes the graph's input (its size must fit the graph's fixed dims).
        calib_dir: photos to calibrate on (int8) and compare on (default for the others: the sample photos).
        min_cosine: the budget: every output's cosine to fp32 must reach it.

    Returns:
        The figures written beside the new file (`figures["onnx"]` names it).

    Raises:
        QuantizeError: not one image input, already quantized, no photos for int8, or over the budget (then only
            the JSON is written).
    """
    source, out_dir = Path(source), Path(out_dir)
    check_destination(out_dir, folder=True)
    if precision not in ("fp16", "int8", "int8-dynamic"):
        raise QuantizeError(f"precision must be fp16, int8 or int8-dynamic, got {precision!r}")
    if not 0 < min_cosine <= 1:
        raise QuantizeError(f"min_cosine must be in (0, 1], got {min_cosine!r}")
    proto = onnx.load(str(source))
    found = sorted({n.op_type for n in proto.graph.node if n.op_type in QUANT_OPS or n.op_type.startswith("QLinear")})
    if found:
        raise QuantizeError(f"{source}: already holds quantized nodes {found}; quantize the fp32 file")
    weights = {init.name for init in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise QuantizeError(f"{source}: quantize feeds one image input, this graph has {inputs}")
    input_name = inputs[0]
    if precision == "int8" and calib_dir is None:
        raise QuantizeError("int8 static quantization needs calib_dir, a folder of real images")
    photos = list_images(Path(calib_dir)) if calib_dir is not None else sample_images()
    batches = [prepare(read_image(p), input_spec)[0] for p in photos[:max(calib_size, parity_inputs)]]
    out_path = out_dir / f"{_stem(source)}.{precision}.onnx"
    started = time.perf_counter()
    with scratch_dir("quant") as tmp:
        candidate = tmp / out_path.name
        if precision == "fp16":
            onnx.save(float16_copy(proto), str(candidate))
        else:
            prepared = prepare_graph(source, tmp)
            try:
                if precision == "int8-dynamic":
                    quantize_dynamic(prepared, candidate, per_channel=True, weight_type=QuantType.QInt8)
                else:
                    reader = ImageReader(input_name, batches[:calib_size], graph_batch_limit(prepared, input_name))
                    quantize_static(str(prepared), str(candidate), reader, quant_format=QuantFormat.QDQ,
                                    per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                                    weight_type=QuantType.QInt8, calibrate_method=ORT_METHODS[method])
            except Exception as e:  # onnxruntime's quantizer raises untyped errors; report one line
                raise QuantizeError(f"{source}: {precision} quantization failed: {type(e).__name__}: "
                                    f"{str(e).splitlines()[0][:200] if str(e) else ''}") from e
        parity = _parity(source, candidate, input_name, batches[:parity_inputs])
        worst = min(v["cosine"] for v in parity.values())
        figures = {
            "model": _stem(source), "precision": precision, "onnx": out_path.name, "source": str(source),
            "source_sha256": sha256_file(source), "contract": None,
            "budget": {"metric": "output cosine to fp32 (no task head, so no task metric)", "min_cosine": min_cosine,
                       "worst_cosine": worst, "within_budget": worst >= min_cosine},
            "parity": {"inputs": len(batches[:parity_inputs]), "inputs_from": str(photos[0].parent),
                       "outputs": parity},
            "settings": {"precision": precision,
                         "input": json.loads(json.dumps(dataclasses.asdict(input_spec), default=lambda e: e.value)),
                         **({"method": method.value, "calib_inputs": len(batches[:calib_size]),
                             "per_channel": True, "reduce_range": True, "format": "QDQ"}
                            if precision == "int8" else {})},
            "speed": {**time_pair(source, candidate, batches[0], input_name, threads=threads, runs=timing_runs),
                      "machine": machine_info()},
            "size_mb": round(candidate.stat().st_size / 1e6, 3),
            "size_vs_fp32": round(candidate.stat().st_size / source.stat().st_size, 3),
            "seconds": round(time.perf_counter() - started, 1),
            "versions": {"edgepipe": edgepipe.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
        }
        if worst < min_cosine:
            figures["status"] = "over budget: no .onnx written"
            json_path = atomic_write(out_path.with_suffix(".json"), json.dumps(figures, indent=1).encode())
            name = min(parity, key=lambda k: parity[k]["cosine"])
            raise QuantizeError(f"{source}: {precision} output {name!r} has cosine {worst:.4f} to fp32, under the "
                                f"{min_cosine:g} budget; figures in {json_path}")
        data = candidate.read_bytes()
    atomic_write(out_path, data)
    atomic_write(out_path.with_suffix(".json"), json.dumps(figures, indent=1).encode())
    return figures


def _stem(source: Path) -> str:
    return source.name[:-len(".onnx")] if source.name.endswith(".onnx") else source.stem


def _parity(fp32_path: Path, quant_path: Path, input_name: str, batches: list[np.ndarray]) -> dict:
    """Per output: max abs diff and cosine (over all parity inputs together) of the quantized file to fp32."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    reference, candidate = (ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                            for p in (fp32_path, quant_path))
    names = [o.name for o in reference.get_outputs()]
    tally = {name: [0.0, 0.0, 0.0, 0.0] for name in names}  # max abs diff, a.b, a.a, b.b
    for batch in batches:
        for name, a, b in zip(names, reference.run(names, {input_name: batch}),
                              candidate.run(names, {input_name: batch})):
            a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
            t = tally[name]
            t[0] = max(t[0], float(np.abs(a - b).max()) if a.size else 0.0)
            t[1], t[2], t[3] = t[1] + float(a @ b), t[2] + float(a @ a), t[3] + float(b @ b)
    return {name: {"max_abs_diff": t[0], "cosine": float(t[1] / max(np.sqrt(t[2] * t[3]), 1e-30))}
            for name, t in tally.items()}
