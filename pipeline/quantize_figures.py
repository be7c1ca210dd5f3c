"""Figures of a quantized artifact against its fp32 source, for `edgepipe.quantize`: `compare_outputs` (raw tensors
and decoded results on real inputs) and `time_pair` (interleaved warm latency of both on this machine)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgepipe.runtime.postprocess import box_iou
from edgepipe.runtime.results import InputMapping
from edgepipe.runtime.session import load
from edgepipe.runtime.specs import Layout, Task

__all__ = ["compare_outputs", "time_pair"]

MATCH_IOU = 0.5  # a reference detection is kept when the quantized model has one of its class this close


def compare_outputs(fp32_path: Path, quant_path: Path, inputs: list[np.ndarray]) -> dict:
    """Raw-output max abs diff and cosine per output, plus decoded agreement (embeddings, faces or boxes)."""
    reference, candidate = load(fp32_path), load(quant_path)
    meta = reference.meta
    names = meta.head.outputs
    diff, dot, ref_sq, got_sq = (dict.fromkeys(names, 0.0) for _ in range(4))
    decoded = {"reference": 0, "quantized": 0, "matched": 0, "ious": [], "cosines": []}
    for batch in inputs:
        ref, got = reference.run(batch), candidate.run(batch)
        for name, a, b in zip(names, ref, got):
            a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
            diff[name] = max(diff[name], float(np.abs(a - b).max()))
            dot[name] += float(a @ b)
            ref_sq[name] += float(a @ a)
            got_sq[name] += float(b @ b)
        _decode_and_match(meta, ref, got, decoded, _input_hw(meta, batch))
    raw = {name: {"max_abs_diff": diff[name],
                  "cosine": dot[name] / max(np.sqrt(ref_sq[name] * got_sq[name]), 1e-30)} for name in names}
    figures = {"n_inputs": len(inputs), "raw": raw}
    if meta.head.task == Task.FACE_EMBEDDING:
        cosines = np.array(decoded["cosines"])
        figures["embedding_cosine_min"] = float(cosines.min())
        figures["embedding_cosine_mean"] = float(cosines.mean())
    else:
        ious = decoded["ious"]
        figures["decoded"] = {
            "detections_fp32": decoded["reference"], "detections_quantized": decoded["quantized"],
            "matched_fraction": decoded["matched"] / decoded["reference"] if decoded["reference"] else None,
            "matched_mean_iou": float(np.mean(ious)) if ious else None, "match_iou": MATCH_IOU,
            "score_thresh": meta.head.score_thresh, "units": "input pixels",
        }
    return figures


def _input_hw(meta, batch: np.ndarray) -> tuple[int, int]:
    """The (H, W) of a prepared batch (it varies per image for a Resize.PAD model)."""
    return tuple(batch.shape[2:4]) if meta.input.layout == Layout.NCHW else tuple(batch.shape[1:3])


def _decode_and_match(meta, ref: list[np.ndarray], got: list[np.ndarray], tally: dict, hw: tuple[int, int]) -> None:
    """Add one input's decoded agreement to `tally` (detections at the head's own threshold, in input pixels)."""
    if meta.head.task == Task.FACE_EMBEDDING:
        a, b = ref[0].astype(np.float64), got[0].astype(np.float64)
        tally["cosines"].extend((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))
        return
    mapping = InputMapping(input_hw=hw)  # input pixels
    # (box, class) of each result: faces are one class
    found_ref = [(r.box_xyxy, getattr(r, "class_id", 0)) for r in meta.head.decode(ref, meta, mapping, hw)]
    found_got = [(r.box_xyxy, getattr(r, "class_id", 0)) for r in meta.head.decode(got, meta, mapping, hw)]
    tally["reference"] += len(found_ref)
    tally["quantized"] += len(found_got)
    for box, cls in found_ref:
        same_class = np.array([b for b, c in found_got if c == cls], np.float32).reshape(-1, 4)
        best = float(box_iou(box, same_class).max()) if len(same_class) else 0.0
        if best >= MATCH_IOU:
            tally["matched"] += 1
            tally["ious"].append(best)


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_pair(fp32_path: Path, quant_path: Path, batch: np.ndarray, input_name: str, *, threads: int = 2,
              runs: int = 20, warmup: int = 3) -> dict:
    """Median warm latency of one batch through both models, runs interleaved so drift hits both alike."""
    sessions = {"fp32": _session(fp32_path, threads), "quantized": _session(quant_path, threads)}
    timings = {key: [] for key in sessions}
    for i in range(warmup + runs):
        for key, session in sessions.items():
            started = time.perf_counter()
            session.run(None, {input_name: batch})
            if i >= warmup:
                timings[key].append((time.perf_counter() - started) * 1e3)
    fp32_ms, quant_ms = (statistics.median(timings[key]) for key in ("fp32", "quantized"))
    return {"fp32_ms_p50": round(fp32_ms, 3), "ms_p50": round(quant_ms, 3), "speedup": round(fp32_ms / quant_ms, 3),
            "threads": threads, "runs": runs, "batch": int(batch.shape[0]), "interleaved": True}
