"""End-to-end parity of a PyTorch model and its ONNX artifact on real images, through the *same* numpy pre-
and post-processing: `measure_parity(torch_model, onnx_path, images)` returns the figures of the model's task
(`FaceDetectorParity`, `EmbedderParity`, `BoxDetectorParity`), each with the `gate_max_abs_diff` the export judges."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgepipe.runtime import load
from edgepipe.runtime.faces import face_chip
from edgepipe.runtime.postprocess import box_iou
from edgepipe.runtime.preprocess import prepare, to_input
from edgepipe.runtime.specs import ArtifactMeta, EmbeddingHead, Task

__all__ = ["measure_parity", "TorchModel", "Parity", "FaceDetectorParity", "EmbedderParity", "BoxDetectorParity"]

LIVE_SCORE = 0.05  # anchors at or above this score are the ones decoding can turn into detections


@dataclass(frozen=True)
class FaceDetectorParity:
    """Torch vs onnxruntime for a face detector: raw outputs, then the decoded faces."""

    n_images: int
    n_faces_torch: int
    face_count_mismatches: int
    raw_max_abs_diff: float
    live_anchor_max_abs_diff: float  # over the anchors scoring >= live_score in torch: the ones that can decode
    live_score: float
    gate_max_abs_diff: float  # = live_anchor_max_abs_diff
    box_max_abs_diff_px: float
    keypoint_max_abs_diff_px: float
    box_min_iou: float | None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EmbedderParity:
    """Torch vs onnxruntime for a face embedder on aligned chips."""

    n_chips: int
    raw_max_abs_diff: float
    gate_max_abs_diff: float  # = raw_max_abs_diff
    cosine_min: float
    embedding_max_l2_diff: float
    chips_from: str | None = None  # the detector that found the faces the chips were cut from

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "chips_from" or v is not None}


@dataclass(frozen=True)
class BoxDetectorParity:
    """Torch vs onnxruntime for a box detector: raw outputs (dense graphs), then detections at the score floor."""

    n_images: int
    n_detections_torch: int
    score_floor: float
    detection_mismatches: int
    raw_max_abs_diff: float | None  # None for a graph with NMS inside (its raw outputs are not torch's)
    score_max_abs_diff: float
    box_max_abs_diff_px: float
    gate_max_abs_diff: float  # raw for dense graphs, the detection scores for graphs with NMS

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


Parity = FaceDetectorParity | EmbedderParity | BoxDetectorParity


def _torch_run(model: nn.Module, batch: np.ndarray) -> list[np.ndarray]:
    with torch.inference_mode():
        out = model(torch.from_numpy(batch))
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [o.float().numpy() for o in out]


@dataclass
class TorchModel:
    """A PyTorch module behind the runtime `Model` interface (`path`, `meta`, `run`), so the runtime's own pre- and
    post-processing can drive and evaluate the source model exactly as it drives the ONNX artifact."""

    path: Path
    meta: ArtifactMeta
    module: nn.Module
    precision_label: str = "torch"  # what reports call this model's precision

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return _torch_run(self.module, batch)


def measure_parity(torch_model: nn.Module, onnx_path, images_rgb: list[np.ndarray],
                   chips_rgb: list[np.ndarray] | None = None) -> Parity:
    """Compare torch and onnxruntime on real inputs, raw tensors and decoded results.

    Args:
        torch_model: the source module (eval mode).
        onnx_path: its exported artifact.
        images_rgb: full photos (used by detectors).
        chips_rgb: aligned face chips (used by embedders).

    Returns:
        The figures of the model's task: `raw_max_abs_diff` over all outputs, `gate_max_abs_diff` (what the export
        tolerance judges: all outputs of an embedder, the anchors scoring >= LIVE_SCORE of a face detector, the raw
        outputs or detection scores of a box detector), and the decoded differences (boxes, keypoints, embeddings).
    """
    model = load(onnx_path)
    meta = model.meta
    if meta.head.task == Task.FACE_EMBEDDING:
        return _embedder_parity(torch_model, model, chips_rgb or [])
    if meta.head.task == Task.FACE_DETECTION:
        return _detector_parity(torch_model, model, images_rgb)
    return _box_detector_parity(torch_model, model, images_rgb)


def _detector_parity(torch_model, model, images_rgb) -> FaceDetectorParity:
    meta = model.meta
    raw, live, box_diff, kp_diff, ious, count_mismatch, n_faces = 0.0, 0.0, 0.0, 0.0, [], 0, 0
    for image in images_rgb:
        batch, scale = prepare(image, meta.input)
        ref, got = _torch_run(torch_model, batch), model.run(batch)
        raw = max(raw, *(float(np.abs(a - b).max()) for a, b in zip(ref, got)))
        # Background anchors can reach logits of ~1e4, where one float32 step is ~1e-3: judge the rows that can
        # become detections (the head's score >= LIVE_SCORE in the reference).
        masks = meta.head.live_rows(ref, LIVE_SCORE)  # one (rows,) mask per output
        if any(m.any() for m in masks):
            live = max(live, *(float(np.abs(a[0][m] - b[0][m]).max()) for a, b, m in zip(ref, got, masks) if m.any()))
        ref_faces = meta.head.decode(ref, meta, scale, image.shape[:2])
        got_faces = meta.head.decode(got, meta, scale, image.shape[:2])
        n_faces += len(ref_faces)
        count_mismatch += abs(len(ref_faces) - len(got_faces))
        for a, b in zip(ref_faces, got_faces):
            box_diff = max(box_diff, float(np.abs(a.box_xyxy - b.box_xyxy).max()))
            kp_diff = max(kp_diff, float(np.abs(a.keypoints_xy - b.keypoints_xy).max()))
            ious.append(float(box_iou(a.box_xyxy, b.box_xyxy[None])[0]))
    return FaceDetectorParity(
        n_images=len(images_rgb), n_faces_torch=n_faces, face_count_mismatches=count_mismatch, raw_max_abs_diff=raw,
        live_anchor_max_abs_diff=live, live_score=LIVE_SCORE, gate_max_abs_diff=live, box_max_abs_diff_px=box_diff,
        keypoint_max_abs_diff_px=kp_diff, box_min_iou=min(ious) if ious else None)


def _embedder_parity(torch_model, model, chips_rgb) -> EmbedderParity:
    if not chips_rgb:
        raise ValueError("embedder parity needs at least one aligned face chip")
    batch = to_input(chips_rgb, model.meta.input)
    ref = _torch_run(torch_model, batch)[0]
    got = model.run(batch)[0]
    cosine = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    return EmbedderParity(
        n_chips=len(chips_rgb), raw_max_abs_diff=float(np.abs(ref - got).max()),
        gate_max_abs_diff=float(np.abs(ref - got).max()), cosine_min=float(cosine.min()),
        embedding_max_l2_diff=float(np.linalg.norm(ref - got, axis=1).max()))


def chips_for_parity(detector_torch: nn.Module, detector_meta, images_rgb, head: EmbeddingHead, limit: int = 32):
    """Aligned chips of the faces the torch detector finds in `images_rgb`, at most `limit`."""
    chips = []
    for image in images_rgb:
        batch, scale = prepare(image, detector_meta.input)
        for face in detector_meta.head.decode(_torch_run(detector_torch, batch), detector_meta, scale, image.shape[:2]):
            chips.append(face_chip(image, face, head))
    return chips[:limit]


def _box_detector_parity(torch_model, model, images_rgb) -> BoxDetectorParity:
    """Dense graphs: raw scores and distributions; both kinds: the decoded detections at the evaluation floor."""
    meta = model.meta
    dense_meta = dataclasses.replace(meta, head=dataclasses.replace(meta.head, mode="dense",
                                                                    outputs=("scores", "distributions")))
    floor = meta.head.graph_score_floor
    raw, score_diff, box_diff, mismatches, n_dets = 0.0, 0.0, 0.0, 0, 0
    for image in images_rgb:
        batch, scale = prepare(image, meta.input)
        ref, got = _torch_run(torch_model, batch), model.run(batch)
        if meta.head.mode == "dense":
            raw = max(raw, *(float(np.abs(a - b).max()) for a, b in zip(ref, got)))
        ref_dets = dense_meta.head.decode(ref, dense_meta, scale, image.shape[:2], floor)
        got_dets = meta.head.decode(got, meta, scale, image.shape[:2], floor)
        n_dets += len(ref_dets)
        mismatches += abs(len(ref_dets) - len(got_dets))
        for a, b in zip(ref_dets, got_dets):
            if a.class_id != b.class_id:
                mismatches += 1
                continue
            score_diff = max(score_diff, abs(a.score - b.score))
            box_diff = max(box_diff, float(np.abs(a.box_xyxy - b.box_xyxy).max()))
    dense = meta.head.mode == "dense"
    return BoxDetectorParity(
        n_images=len(images_rgb), n_detections_torch=n_dets, score_floor=floor, detection_mismatches=mismatches,
        raw_max_abs_diff=raw if dense else None, score_max_abs_diff=score_diff, box_max_abs_diff_px=box_diff,
        gate_max_abs_diff=raw if dense else score_diff)
