"""NanoDet / Generalized Focal Loss box head: per grid cell, class scores and four side distances as distributions
over bins. `GFLHead.decode` turns one image's outputs into `Detection`s; `gfl_centres` and `decode_gfl` are the
box arithmetic the export (boxes in the graph) and training share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from edgepipe.runtime.enums import Resize, Task, check
from edgepipe.runtime.errors import ArtifactError
from edgepipe.runtime.heads.base import QuantDefaults
from edgepipe.runtime.postprocess import multiclass_nms
from edgepipe.runtime.results import Detection, InputMapping

if TYPE_CHECKING:
    from edgepipe.runtime.specs import ArtifactMeta

__all__ = ["GFLHead", "gfl_centres", "decode_gfl"]


@dataclass(frozen=True)
class GFLHead:
    """NanoDet/GFL dense head: per cell, class scores (after sigmoid) and 4 side distances as distributions over
    `reg_max + 1` bins, measured from the cell centre in units of the stride."""

    strides: tuple[int, ...] = (8, 16, 32)  # one grid per stride, rows ordered by stride then row-major
    reg_max: int = 10  # bins 0..reg_max
    cell_offset: float = 0.5  # distances start at ((col + offset) * stride, (row + offset) * stride)
    score_thresh: float = 0.35  # what apps show; evaluation passes 0.05
    nms_iou: float = 0.6  # class-wise
    max_per_image: int = 100
    # "dense": outputs are (scores (B, N, C), distributions (B, N, 4 * (reg_max + 1))), decoded and NMS-ed in numpy.
    # "nms": the graph decodes and runs ONNX NonMaxSuppression; outputs are (selected (K, 3) as [batch, class,
    # anchor], boxes (K, 4) xyxy in input pixels, scores (K,)), and only the per-image cap is left to numpy.
    mode: str = "dense"
    graph_score_floor: float = 0.05  # "nms" mode: the lowest score the graph keeps (lower thresholds cannot apply)
    outputs: tuple[str, ...] = ("scores", "distributions")
    kind: str = "gfl"

    task: ClassVar[Task] = Task.DETECTION
    resize: ClassVar[Resize | None] = None
    # Percentile, per-channel 7-bit: mAP drop 0.07 / -0.03 / 1.11 over seeds 0-2 (per-tensor 8-bit: 0.95 / 1.40 / 0.80)
    quant_defaults: ClassVar[QuantDefaults] = QuantDefaults("percentile", per_channel=True, reduce_range=True,
                                                            calib_size=32)

    def __post_init__(self) -> None:
        check(self.mode in ("dense", "nms"), f"GFLHead.mode must be 'dense' or 'nms', got {self.mode!r}")
        check(self.reg_max > 0 and len(self.strides) > 0,
              f"bad GFL head: reg_max={self.reg_max}, strides={self.strides}")
        check(0.0 < self.nms_iou <= 1.0, f"nms_iou must be in (0, 1], got {self.nms_iou}")

    def output_shapes(self, input_hw: tuple[int, int], num_classes: int) -> tuple[tuple[int, ...], ...]:
        """Dense: (N, C) scores and (N, 4 * (reg_max + 1)) distributions for the N cells of every stride's grid."""
        cells = len(gfl_centres(self, input_hw)[0])
        return (cells, num_classes), (cells, 4 * (self.reg_max + 1))

    def classes_in(self, shapes: tuple[tuple[int, ...], ...]) -> int:
        """C, from the per-image output shapes a graph gave (dense: the scores' width)."""
        return shapes[0][-1]

    def decode(self, outputs: list[np.ndarray], meta: ArtifactMeta, mapping: InputMapping,
               image_hw: tuple[int, int], score_thresh: float | None = None, index: int = 0) -> list[Detection]:
        """Image `index` of a batch's raw outputs -> detections in source pixels, best first.

        Dense outputs are decoded and NMS-ed here; "nms" outputs only need the per-image cap and the threshold.
        """
        thresh = self.score_thresh if score_thresh is None else float(score_thresh)
        if self.mode == "dense":
            scores, distributions = outputs[0][index], outputs[1][index]  # (N, C), (N, 4 * (R + 1))
            centres, strides = gfl_centres(self, mapping.input_size(meta.input.input_hw))
            if len(centres) != len(scores):
                raise ArtifactError(f"{meta.model_name}: {len(scores)} output rows but the head implies {len(centres)}")
            boxes = decode_gfl(distributions, centres, strides, self.reg_max)
            anchor, cls, score = multiclass_nms(boxes, scores, thresh, self.nms_iou, self.max_per_image)
            boxes = boxes[anchor]
        else:
            selected, all_boxes, all_scores = outputs  # (K, 3) [batch, class, anchor], (K, 4), (K,)
            # ONNX NMS lists each image's picks class by class, best first, as multiclass_nms builds them: a stable
            # sort by score then gives the same order as the dense path.
            mine = np.flatnonzero((selected[:, 0] == index) & (all_scores > max(thresh, self.graph_score_floor)))
            kept = mine[np.argsort(-all_scores[mine], kind="stable")[:self.max_per_image]]
            cls, boxes, score = selected[kept, 1], all_boxes[kept], all_scores[kept]
        return Detection.many(mapping.boxes_to_source(boxes, image_hw), cls, score, meta.labels)


def gfl_centres(head: GFLHead, input_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres (N, 2) xy in input pixels and their strides (N,), in the head's row order."""
    in_h, in_w = input_hw
    centres, strides = [], []
    for stride in head.strides:
        rows, cols = -(-in_h // stride), -(-in_w // stride)
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        centres.append((np.stack([xs, ys], -1).reshape(-1, 2) + head.cell_offset) * stride)
        strides.append(np.full(rows * cols, stride))
    return np.concatenate(centres).astype(np.float32), np.concatenate(strides).astype(np.float32)


def decode_gfl(distributions: np.ndarray, centres: np.ndarray, strides: np.ndarray, reg_max: int) -> np.ndarray:
    """Box distributions (N, 4 * (reg_max + 1)) logits -> boxes (N, 4) xyxy in input pixels.

    Each side's distance is the expectation of a softmax over bins 0..reg_max, times the stride, from the centre.
    """
    logits = distributions.reshape(-1, 4, reg_max + 1).astype(np.float32)
    logits = logits - logits.max(-1, keepdims=True)
    prob = np.exp(logits)
    prob /= prob.sum(-1, keepdims=True)
    distance = (prob @ np.arange(reg_max + 1, dtype=np.float32)) * strides[:, None]  # (N, 4) left, top, right, bottom
    return np.concatenate([centres - distance[:, :2], centres + distance[:, 2:]], 1)
