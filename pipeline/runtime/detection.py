"""Object detection on onnxruntime + numpy: `ObjectDetector(model).detect(image_rgb) -> list[Detection]`.

`detections_from_outputs` is the pure post-processing the PyTorch reference path shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepipe.runtime.errors import ArtifactError
from edgepipe.runtime.postprocess import decode_gfl, gfl_centres, multiclass_nms
from edgepipe.runtime.preprocess import prepare
from edgepipe.runtime.session import Model, load
from edgepipe.runtime.specs import ArtifactMeta, GFLHead

__all__ = ["ObjectDetector", "Detection", "detections_from_outputs"]


@dataclass(frozen=True)
class Detection:
    """One detected object, in source-image pixels."""

    box_xyxy: np.ndarray  # (4,) float32
    score: float
    class_id: int  # index into the artifact's labels
    label: str


def detections_from_outputs(
    outputs: list[np.ndarray], meta: ArtifactMeta, scale_xy: tuple[float, float], image_hw: tuple[int, int],
    score_thresh: float | None = None, index: int = 0,
) -> list[Detection]:
    """Decode image `index` of a batch's raw outputs into detections in source pixels, best first.

    Dense heads are decoded and NMS-ed here; "nms" heads only need the per-image cap and the threshold.
    """
    head: GFLHead = meta.head  # type: ignore[assignment]
    thresh = head.score_thresh if score_thresh is None else float(score_thresh)
    if head.mode == "dense":
        scores, distributions = outputs[0][index], outputs[1][index]  # (N, C), (N, 4 * (R + 1))
        centres, strides = gfl_centres(head, meta.input.input_hw)
        if len(centres) != len(scores):
            raise ArtifactError(f"{meta.model_name}: {len(scores)} output rows but the head implies {len(centres)}")
        boxes = decode_gfl(distributions, centres, strides, head.reg_max)
        anchor, cls, score = multiclass_nms(boxes, scores, thresh, head.nms_iou, head.max_per_image)
        boxes = boxes[anchor]
    else:
        selected, all_boxes, all_scores = outputs  # (K, 3) [batch, class, anchor], (K, 4), (K,)
        # ONNX NMS lists each image's picks class by class, best first, as multiclass_nms builds them: a stable
        # sort by score then gives the same order as the dense path.
        mine = np.flatnonzero((selected[:, 0] == index) & (all_scores > max(thresh, head.graph_score_floor)))
        kept = mine[np.argsort(-all_scores[mine], kind="stable")[:head.max_per_image]]
        cls, boxes, score = selected[kept, 1], all_boxes[kept], all_scores[kept]
    scale = np.array([*scale_xy, *scale_xy], np.float32)
    h, w = image_hw
    boxes = np.clip(boxes / scale, 0, [w, h, w, h]).astype(np.float32)
    labels = meta.labels
    return [Detection(boxes[i], float(score[i]), int(cls[i]), labels[cls[i]] if cls[i] < len(labels) else str(cls[i]))
            for i in range(len(score))]


class ObjectDetector:
    """A detector artifact with a GFL head: `detect(image_rgb, score_thresh=None, classes=None)`."""

    def __init__(self, model: Model):
        if not isinstance(model.meta.head, GFLHead):
            raise ArtifactError(f"{model.path}: is a {model.meta.task.value} model ({model.meta.model_name}), "
                                "not an object detector")
        self.model = model

    @classmethod
    def from_path(cls, path: str | Path, **load_options) -> "ObjectDetector":
        return cls(load(path, **load_options))

    @property
    def labels(self) -> tuple[str, ...]:
        return self.model.meta.labels

    def detect(self, image_rgb: np.ndarray, score_thresh: float | None = None,
               classes: set[str] | None = None) -> list[Detection]:
        """Detections in source pixels, best first; `classes` keeps only those label names."""
        batch, scale_xy = prepare(image_rgb, self.model.meta.input)
        found = detections_from_outputs(self.model.run(batch), self.model.meta, scale_xy, image_rgb.shape[:2],
                                        score_thresh)
        return [d for d in found if classes is None or d.label in classes]
