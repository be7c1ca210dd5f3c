"""fp32 ONNX artifact -> fp16, int8-dynamic or int8 static (QDQ, calibrated on real images), checked against its
source: `quantize(artifact, precision, out_dir, options) -> Artifact` writes `NAME.<precision>.onnx` and its JSON."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import onnx
import onnxruntime

import edgepipe
from edgepipe.artifact import Artifact, write_contract
from edgepipe.benchmark import machine_info
from edgepipe.errors import QuantizeError
from edgepipe.evaluate import evaluate
from edgepipe.ort_quantization import (
    CalibrationMethod,
    QuantFormat,
    QuantType,
    create_calibrator,
    float16,
    quantize_dynamic,
    quantize_static,
    save_tensors_data,
)
from edgepipe.quantize_calib import (
    ImageReader,
    calibration_inputs,
    graph_batch_limit,
    list_images,
    quantized_nodes,
    rank_harmful_nodes,
)
from edgepipe.quantize_figures import compare_outputs, time_pair
from edgepipe.quantize_graph import QUANT_OPS, float16_copy, prepare_graph, tail_nodes
from edgepipe.runtime.atomic import atomic_write, check_destination, scratch_dir
from edgepipe.runtime.session import load
from edgepipe.runtime.specs import ArtifactMeta, Precision, Task
from edgepipe.samples import sample_images
from edgepipe.sources import sha256_file

__all__ = ["quantize", "QuantizeOptions", "CalibMethod"]

log = logging.getLogger(__name__)


class CalibMethod(str, Enum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


ORT_METHODS = {CalibMethod.MINMAX: CalibrationMethod.MinMax, CalibMethod.ENTROPY: CalibrationMethod.Entropy,
               CalibMethod.PERCENTILE: CalibrationMethod.Percentile}
_PRECISIONS = (Precision.FP16, Precision.INT8, Precision.INT8_DYNAMIC)
# Task -> (EvalReport metric, largest accepted drop in points, i.e. percent of the [0, 1] metric).
_BUDGET = {Task.DETECTION: ("map_50_95", 1.0), Task.FACE_EMBEDDING: ("accuracy", 0.3),
           Task.FACE_DETECTION: ("ap_50", 1.0)}


@dataclass(frozen=True)
class _Recipe:
    """The int8 settings of one run: the head's `quant_defaults` with the options a user set put in their place."""

    method: CalibMethod
    per_channel: bool
    reduce_range: bool
    calib_size: int
    float_tail: float = 0.0


@dataclass(frozen=True)
class _Metric:
    """A task metric of one artifact on the budget's data set."""

    task: Task
    key: str  # e.g. "map_50_95"
    value: float  # fraction
    metrics: dict  # every metric of the report


@dataclass(frozen=True)
class _Attempt:
    """One quantized candidate and how it scored against the accuracy budget."""

    path: Path
    excluded: tuple[str, ...]  # nodes the fallback keeps in float
    quantized_nodes: int
    round: int = 0
    per_channel: bool | None = None  # int8 static: the weight scaling of this candidate
    harm: tuple[tuple[str, float], ...] = ()  # (node, harm) that this round's fallback ranked worst
    float_tail_nodes: tuple[str, ...] = ()
    metric: _Metric | None = None  # None without --eval-data
    fp32: float | None = None
    drop_points: float = 0.0
    budget: float | None = None  # points
    within_budget: bool = True


@dataclass(frozen=True)
class QuantizeOptions:
    """How to quantize; None fields take the measured default of the model's family (the head's `quant_defaults`)."""

    calib_dir: Path | None = None  # photos only; int8 needs them, other precisions use them for parity and timing
    calib_size: int | None = None  # inputs calibrated on (face chips for an embedder)
    method: CalibMethod | None = None
    per_channel: bool | None = None  # int8 weights: one scale per output channel
    reduce_range: bool | None = None  # int8 weights in 7 bits: no int16 overflow in AVX2 kernels without VNNI
    float_tail: float | None = None  # share of nodes, from the outputs back, kept in float from the first try
    eval_data: Path | None = None  # a data folder `evaluate` reads; enables the accuracy budget
    max_drop: float | None = None  # points of the task metric; None: 1.0 mAP, 0.3 accuracy, 1.0 AP@0.5
    detector: Path | None = None  # face-detector artifact that finds and aligns faces for an embedder
    max_fallback_rounds: int = 4  # re-quantizations keeping more nodes in float while over budget
    nodes_per_round: int = 2  # most harmful quantized nodes put back to float per round
    rank_inputs: int = 8  # calibration inputs the harm ranking runs on
    parity_inputs: int = 16  # real inputs of the fp32 vs quantized comparison
    threads: int = 2  # intra-op threads of both models when timing
    timing_runs: int = 20
    seed: int = 0  # order in which calibration photos are drawn

    def __post_init__(self) -> None:
        if self.max_drop is not None and not self.max_drop >= 0:
            raise QuantizeError(f"max_drop must be >= 0 points, got {self.max_drop!r}")
        if self.calib_size is not None and self.calib_size < 1:
            raise QuantizeError(f"calib_size must be >= 1, got {self.calib_size!r}")
        if self.float_tail is not None and not 0 <= self.float_tail < 1:
            raise QuantizeError(f"float_tail must be in [0, 1), got {self.float_tail!r}")
        if self.method is not None and not isinstance(self.method, CalibMethod):
            raise QuantizeError(f"method must be one of {[m.value for m in CalibMethod]}, got {self.method!r}")
        if min(self.max_fallback_rounds, self.nodes_per_round - 1, self.rank_inputs - 1, self.parity_inputs - 1,
               self.threads - 1, self.timing_runs - 1) < 0:
            raise QuantizeError("max_fallback_rounds must be >= 0 and nodes_per_round, rank_inputs, parity_inputs, "
                                "threads, timing_runs >= 1")


def quantize(artifact: Path, precision: str, out_dir: Path, options: QuantizeOptions = QuantizeOptions()) -> Artifact:
    """Quantize an fp32 edgepipe artifact and measure what it cost.

    Writes `out_dir/NAME.<precision>.onnx` (the fp32 contract with its precision field changed) and
    `NAME.<precision>.json`: size vs fp32, parity vs fp32 on real inputs (raw outputs and decoded results), the
    task metric of both on `options.eval_data` and its drop, calibration settings and inputs, the nodes kept in
    float, and both latencies on this machine (with a warning that names fp32 as the faster artifact where the
    quantized one is not faster). int8 static over the accuracy budget re-quantizes up to
    `max_fallback_rounds` times, each time keeping the `nodes_per_round` nodes that add the most error in float;
    still over budget, and with `per_channel` left to the family, it tries the other weight scaling the same way.

    Args:
        artifact: an fp32 ONNX file written by `export_onnx`.
        precision: "fp16", "int8" (static QDQ, u8 activations, s8 weights, 7-bit where the family's recipe says)
            or "int8-dynamic".
        out_dir: output directory (created).
        options: calibration, accuracy budget and timing settings.

    Returns:
        The new artifact with its figures.

    Raises:
        QuantizeError: bad precision or options, an already quantized model, calibration failed, or the budget
            cannot be met: then only the JSON of the best attempt is written (no .onnx), so its figures are kept.
        InputError: the calibration folder is missing, empty, or holds a non-image (named).
        ArtifactError: `artifact` is not an edgepipe ONNX file.
    """
    target = _precision(precision)
    check_destination(out_dir, folder=True)  # before calibration and evaluation, not after
    model = load(artifact)
    source = onnx.load(str(artifact))
    _require_float(artifact, model.meta, source)
    meta = dataclasses.replace(model.meta, precision=target)
    recipe = _resolve(model.meta, options)
    embedder = meta.head.task == Task.FACE_EMBEDDING
    if target == Precision.INT8 and options.calib_dir is None:
        raise QuantizeError("int8 static quantization needs calib_dir, a folder of real images")
    if embedder and options.eval_data is not None and options.detector is None:
        raise QuantizeError("evaluating a face embedder needs detector, the face-detector artifact that aligns faces")
    # Without calib_dir (fp16, int8-dynamic) parity and timing run on the package's own sample photos.
    photos = list_images(Path(options.calib_dir)) if options.calib_dir is not None else sample_images()
    size = recipe.calib_size if target == Precision.INT8 else options.parity_inputs
    inputs, input_names = calibration_inputs(meta, photos, size, seed=options.seed, detector=options.detector)
    out_path = Path(out_dir) / f"{meta.model_name}.{target.value}.onnx"
    started = time.perf_counter()
    with scratch_dir("quant") as tmp:
        fp32_metric = _metric(Path(artifact), options) if options.eval_data is not None else None
        settings = {"precision": target.value, "source": str(artifact), "inputs_from": str(photos[0].parent)}
        if target == Precision.FP16:
            proto = float16_copy(source)
            attempts = [_attempt(tmp / "fp16.onnx", proto, meta, Path(artifact), options, fp32_metric, [])]
        elif target == Precision.INT8_DYNAMIC:
            prepared = prepare_graph(Path(artifact), tmp)
            quantize_dynamic(prepared, tmp / "dynamic.onnx", per_channel=recipe.per_channel,
                             weight_type=QuantType.QInt8)
            proto = onnx.load(str(tmp / "dynamic.onnx"))
            attempts = [_attempt(tmp / "dynamic.onnx", proto, meta, Path(artifact), options, fp32_metric, [])]
            settings["per_channel"] = recipe.per_channel
        else:
            settings.update({"method": recipe.method.value, "per_channel": recipe.per_channel,
                             "reduce_range": recipe.reduce_range, "float_tail": recipe.float_tail,
                             "calib_size": recipe.calib_size, "calib_inputs": len(inputs), "seed": options.seed,
                             "activations": "QUInt8", "weights": "QInt8 (7-bit)" if recipe.reduce_range else "QInt8",
                             "format": "QDQ", "calib_images": input_names})
            attempts = _static(Path(artifact), meta, inputs, tmp, recipe, options, fp32_metric)
            over_budget = not any(a.within_budget for a in attempts)
            if fp32_metric is not None and options.per_channel is None and over_budget:
                # The family's weight scaling was measured on the zoo weights; a fine-tuned model may want the other.
                other = dataclasses.replace(recipe, per_channel=not recipe.per_channel)
                log.warning("%s: over budget with per_channel=%s; trying per_channel=%s", meta.model_name,
                            recipe.per_channel, other.per_channel)
                attempts += _static(Path(artifact), meta, inputs, tmp, other, options, fp32_metric, len(attempts))
            settings["float_tail_nodes"] = list(attempts[0].float_tail_nodes)
        best = min(attempts, key=lambda a: (not a.within_budget, a.round))
        if not best.within_budget:
            best = min(attempts, key=lambda a: a.drop_points)
        if best.per_channel is not None:
            settings["per_channel"] = best.per_channel  # the weight scaling of the attempt kept
        parity_inputs = inputs[: options.parity_inputs]
        figures = _figures(Path(artifact), best, meta, settings, parity_inputs, options, attempts)
        figures["seconds"] = round(time.perf_counter() - started, 1)
        if not best.within_budget:
            figures["status"] = "over budget: no .onnx written"
            json_path = atomic_write(out_path.with_suffix(".json"), json.dumps(figures, indent=1).encode())
            accuracy = figures["accuracy"]
            fallback_rounds = sum(1 for a in attempts if a.excluded)
            raise QuantizeError(
                f"{meta.model_name} {target.value}: {accuracy['metric']} drops {accuracy['drop_points']:.2f} points "
                f"({accuracy['fp32']:.4f} -> {accuracy['quantized']:.4f}), over the {accuracy['max_drop_points']:g} "
                f"budget after {fallback_rounds} fallback rounds{_tried(attempts)}; figures in {json_path}")
        if embedder and best.metric is not None and fp32_metric is not None:
            meta = _remeasured_threshold(meta, fp32_metric, best.metric, figures)
            onnx.save_model(write_contract(onnx.load(str(best.path)), meta), str(best.path))
        data = best.path.read_bytes()
    atomic_write(out_path, data)
    figures["sha256"] = sha256_file(out_path)
    json_path = atomic_write(out_path.with_suffix(".json"), json.dumps(figures, indent=1).encode())
    return Artifact(out_path, json_path, meta, figures)


def _precision(precision: str) -> Precision:
    """The target precision; fp32 and unknown names are refused."""
    allowed = [p.value for p in _PRECISIONS]
    if precision not in allowed:
        raise QuantizeError(f"unknown precision {precision!r}; expected one of {allowed}")
    return Precision(precision)


def _require_float(path: Path, meta: ArtifactMeta, proto: onnx.ModelProto) -> None:
    """Refuse a model whose contract or graph is already quantized."""
    if meta.precision != Precision.FP32:
        raise QuantizeError(f"{path}: is already {meta.precision.value}; quantize the fp32 artifact")
    found = sorted({n.op_type for n in proto.graph.node if n.op_type in QUANT_OPS or n.op_type.startswith("QLinear")})
    if found:
        raise QuantizeError(f"{path}: already holds quantized nodes {found}; quantize the fp32 artifact")


def _resolve(meta: ArtifactMeta, options: QuantizeOptions) -> _Recipe:
    """The family's recipe with the options that are not None put in its place."""
    defaults = meta.head.quant_defaults
    recipe = _Recipe(CalibMethod(defaults.method), defaults.per_channel, defaults.reduce_range, defaults.calib_size,
                     defaults.float_tail)
    chosen = {field.name: getattr(options, field.name) for field in dataclasses.fields(_Recipe)}
    return dataclasses.replace(recipe, **{name: value for name, value in chosen.items() if value is not None})


def _static(artifact: Path, meta: ArtifactMeta, inputs, tmp: Path, recipe: _Recipe, options: QuantizeOptions,
            fp32_metric: _Metric | None, first_round: int = 0) -> list[_Attempt]:
    """Calibrate once, quantize, and while over budget keep the most harmful nodes in float and retry."""
    prepared = prepare_graph(artifact, tmp)
    ranges = tmp / "ranges.json"  # activation ranges: computed once, reused by every round and weight setting
    if not ranges.is_file():
        _calibrate(prepared, meta, inputs, tmp, recipe.method)
    tail = tail_nodes(onnx.load(str(prepared)), recipe.float_tail)
    excluded: list[str] = []
    attempts, harm = [], []
    for round_index in range(options.max_fallback_rounds + 1):
        path = tmp / f"int8.round{first_round + round_index}.onnx"
        try:
            reader = ImageReader(meta.input_name, inputs, graph_batch_limit(prepared, meta.input_name))
            quantize_static(str(prepared), str(path), reader, quant_format=QuantFormat.QDQ,
                            per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=tail + excluded, calibrate_method=ORT_METHODS[recipe.method],
                            calibration_cache_path=str(ranges))
        except Exception as e:  # onnxruntime's calibrator raises untyped errors; report one line
            raise QuantizeError(f"{artifact}: int8 quantization failed: {type(e).__name__}: {str(e)[:200]}") from e
        proto = onnx.load(str(path))
        attempt = dataclasses.replace(_attempt(path, proto, meta, artifact, options, fp32_metric, excluded),
                                      round=first_round + round_index, harm=tuple(harm), float_tail_nodes=tuple(tail),
                                      per_channel=recipe.per_channel)
        attempts.append(attempt)
        if attempt.within_budget or round_index == options.max_fallback_rounds:
            break
        ranking = rank_harmful_nodes(onnx.load(str(prepared)), proto, meta.input_name, inputs[: options.rank_inputs])
        ranking = [item for item in ranking if item[0] not in excluded][: options.nodes_per_round]
        harm = [(name, round(value, 5)) for name, value, _ in ranking]
        excluded = excluded + sorted({n for _, _, group in ranking for n in group} - set(excluded))
        log.info("%s: %s over budget; keeping %s in float", meta.model_name, attempt.drop_points, harm)
    return attempts


def _tried(attempts: list[_Attempt]) -> str:
    """", per-channel and per-tensor weights tried" when the attempts covered both."""
    return ", per-channel and per-tensor weights tried" if len({a.per_channel for a in attempts}) > 1 else ""


def _calibrate(prepared: Path, meta: ArtifactMeta, inputs, tmp: Path, method: CalibMethod) -> Path:
    """Activation ranges as a calibration-cache file; the augmented model goes to `tmp`, not the working dir."""
    # quantize_static cannot pass histogram sizes, and Entropy's default (128 bins into 128) picks the full range,
    # i.e. MinMax: search 2048 bins as TensorRT does.
    extra = {"num_bins": 2048, "num_quantized_bins": 128} if method == CalibMethod.ENTROPY else {}
    try:
        calibrator = create_calibrator(prepared, augmented_model_path=str(tmp / "augmented.onnx"),
                                       calibrate_method=ORT_METHODS[method], extra_options=extra)
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print their progress
            calibrator.collect_data(ImageReader(meta.input_name, inputs, graph_batch_limit(prepared, meta.input_name)))
            save_tensors_data(calibrator.compute_data(), tmp / "ranges.json")
    except Exception as e:  # onnxruntime's calibrator raises untyped errors; report one line
        raise QuantizeError(f"{meta.model_name}: int8 calibration failed: {type(e).__name__}: {str(e)[:200]}") from e
    return tmp / "ranges.json"


def _attempt(path: Path, proto: onnx.ModelProto, meta: ArtifactMeta, fp32_path: Path, options: QuantizeOptions,
             fp32_metric: _Metric | None, excluded: list[str]) -> _Attempt:
    """Stamp the contract on a candidate and score it against the budget."""
    onnx.save_model(write_contract(proto, meta), str(path))
    attempt = _Attempt(path, tuple(excluded), len(set(quantized_nodes(proto)) - set(excluded)))
    if fp32_metric is None:
        return attempt
    metric = _metric(path, options)
    drop = 100.0 * (fp32_metric.value - metric.value)
    budget = options.max_drop if options.max_drop is not None else _BUDGET[fp32_metric.task][1]
    # 1e-9: a drop of exactly the budget (e.g. 0.9933 -> 0.9833 = 1.0000000000000009 points) is within it
    return dataclasses.replace(attempt, metric=metric, drop_points=round(drop, 4), within_budget=drop <= budget + 1e-9,
                               budget=budget, fp32=fp32_metric.value)


def _metric(path: Path, options: QuantizeOptions) -> _Metric:
    """The task metric of one artifact on `options.eval_data`."""
    report = evaluate(path, options.eval_data, detector=options.detector, progress=False)
    key = _BUDGET[report.task][0]
    return _Metric(report.task, key, float(report.metrics[key]), report.metrics)


def _remeasured_threshold(meta: ArtifactMeta, fp32_metric: _Metric, metric: _Metric, figures: dict) -> ArtifactMeta:
    """The embedder's match threshold for this precision: the contract's fp32 threshold (published or chosen) moved
    by as much as the LFW-protocol threshold moved from fp32 to this precision on the evaluation data, so the
    quantized model's distances are judged on their own scale, not fp32's. Recorded in `figures`."""
    shift = metric.metrics["threshold"] - fp32_metric.metrics["threshold"]
    head = dataclasses.replace(meta.head, match_thresh=round(meta.head.match_thresh + shift, 4))
    figures["accuracy"]["match_thresh"] = {"fp32": meta.head.match_thresh, "quantized": head.match_thresh,
                                           "lfw_threshold_fp32": round(fp32_metric.metrics["threshold"], 4),
                                           "lfw_threshold_quantized": round(metric.metrics["threshold"], 4)}
    meta = dataclasses.replace(meta, head=head)
    figures["meta"] = json.loads(meta.to_json())
    return meta


def _figures(fp32_path: Path, best: _Attempt, meta: ArtifactMeta, settings: dict, parity_inputs,
             options: QuantizeOptions, attempts: list[_Attempt]) -> dict:
    """The JSON of the chosen attempt: size, parity, accuracy, float nodes, speed, settings, versions."""
    path = best.path
    size_mb, fp32_mb = path.stat().st_size / 1e6, fp32_path.stat().st_size / 1e6
    speed = time_pair(fp32_path, path, parity_inputs[0], meta.input_name, threads=options.threads,
                      runs=options.timing_runs)
    proto = onnx.load(str(path))
    # A node kept in float still reads the DequantizeLinear of a quantized producer: the exclusions say it is float.
    quantized = set(quantized_nodes(proto)) - set(best.excluded) - set(best.float_tail_nodes)
    float_nodes = [n.name for n in proto.graph.node if n.name not in quantized and n.op_type not in QUANT_OPS]
    if meta.precision == Precision.FP16:  # everything is half but the converter's block list (and its Casts)
        float_nodes = [n.name for n in proto.graph.node if n.op_type in float16.DEFAULT_OP_BLOCK_LIST]
    figures = {
        "model": meta.model_name, "precision": meta.precision.value, "onnx": f"{meta.model_name}.{meta.precision.value}.onnx",
        "size_mb": round(size_mb, 3), "fp32_size_mb": round(fp32_mb, 3), "size_vs_fp32": round(size_mb / fp32_mb, 3),
        "sha256": "", "parity_vs": fp32_path.name, "parity": compare_outputs(fp32_path, path, parity_inputs),
        "settings": settings,
        "nodes": {"quantized": len(quantized), "excluded_by_fallback": list(best.excluded), "float": float_nodes},
        "speed": {**speed, "machine": machine_info()},
        "versions": {"edgepipe": edgepipe.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "meta": json.loads(meta.to_json()),
    }
    if meta.precision != Precision.FP16 and speed["speedup"] <= 1.0:
        figures["warning"] = (f"{meta.precision.value} is not faster than fp32 on this machine "
                              f"({speed['ms_p50']:.2f} vs {speed['fp32_ms_p50']:.2f} ms, {speed['threads']} threads); "
                              f"deploy {fp32_path.name} here")
    if best.metric is not None:
        figures["accuracy"] = {
            "data": str(options.eval_data), "metric": best.metric.key, "fp32": best.fp32,
            "quantized": best.metric.value, "drop_points": best.drop_points,
            "max_drop_points": best.budget, "within_budget": best.within_budget,
            "quantized_metrics": best.metric.metrics,
            "rounds": [{"round": a.round, "per_channel": a.per_channel, "excluded": list(a.excluded),
                        "drop_points": a.drop_points, "harm_added": [list(h) for h in a.harm]} for a in attempts],
        }
    return figures
