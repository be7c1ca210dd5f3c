"""Ultralytics YOLOv8 / YOLO11 detection head, as their ONNX export lays it out: one output (B, 4 + C, N), per
anchor point a box (centre x, centre y, width, height in input pixels, already decoded in the graph) and C class
probabilities (sigmoid applied), no objectness. `YOLOv8Head.decode` keeps each anchor's best class, runs class-wise
NMS and maps the boxes back to the source image, as Ultralytics' own predictor does (single label per box)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from edgepipe.runtime.enums import Resize, Task
from edgepipe.runtime.errors import ArtifactError
from edgepipe.runtime.heads.base import QuantDefaults, check_box_head, grid_cells
from edgepipe.runtime.postprocess import single_label_nms
from edgepipe.runtime.results import Detection, InputMapping

if TYPE_CHECKING:
    from edgepipe.runtime.specs import ArtifactMeta

__all__ = ["YOLOv8Head", "yolov8_boxes"]


@dataclass(frozen=True)
class YOLOv8Head:
    """Anchor-free rows for every cell of the stride 8/16/32 grids, in one (4 + C, N) output per image."""

    strides: tuple[int, ...] = (8, 16, 32)  # N = sum over strides of (H / s) * (W / s): 8400 at 640x640
    score_thresh: float = 0.25  # Ultralytics' predict default (conf)
    nms_iou: float = 0.7  # Ultralytics' predict default (iou), class-wise
    max_per_image: int = 300  # Ultralytics' max_det
    outputs: tuple[str, ...] = ("output0",)  # the name Ultralytics' exporter gives it
    kind: str = "yolov8"

    task: ClassVar[Task] = Task.DETECTION
    resize: ClassVar[Resize | None] = None  # Ultralytics letterboxes centred with grey 114: Resize.LETTERBOX_CENTER
    # Not yet measured on a YOLO model here: NanoDet's measured settings, the closest family (dense anchor-free).
    quant_defaults: ClassVar[QuantDefaults] = QuantDefaults("percentile", per_channel=True, reduce_range=True,
                                                            calib_size=32)

    def __post_init__(self) -> None:
        check_box_head(self)

    def anchors(self, input_hw: tuple[int, int]) -> int:
        """N, the anchor points of an input of this size (each stride's grid, rounded up)."""
        return grid_cells(self.strides, input_hw)

    def output_shapes(self, input_hw: tuple[int, int], num_classes: int) -> tuple[tuple[int, ...], ...]:
        """One (4 + C, N) output."""
        return ((4 + num_classes, self.anchors(input_hw)),)

    def classes_in(self, shapes: tuple[tuple[int, ...], ...]) -> int:
        """C, from the per-image output shapes a graph gave."""
        return shapes[0][0] - 4

    def decode(self, outputs: list[np.ndarray], meta: ArtifactMeta, mapping: InputMapping,
               image_hw: tuple[int, int], score_thresh: float | None = None, index: int = 0) -> list[Detection]:
        """Image `index` of a batch's (B, 4 + C, N) output -> detections in source pixels, best first."""
        rows = outputs[0][index]
        expected = self.anchors(mapping.input_size(meta.input.input_hw))
        if rows.ndim != 2 or rows.shape[1] != expected or rows.shape[0] < 5:
            raise ArtifactError(f"{meta.model_name}: output {self.outputs[0]!r} is {'x'.join(map(str, rows.shape))} "
                                f"per image; the yolov8 head expects (4 + classes)x{expected}")
        boxes, scores = yolov8_boxes(rows)
        thresh = self.score_thresh if score_thresh is None else float(score_thresh)
        # one label per box, as Ultralytics' predictor (multi_label=False)
        anchor, cls, score = single_label_nms(boxes, scores, thresh, self.nms_iou, self.max_per_image)
        return Detection.many(mapping.boxes_to_source(boxes[anchor], image_hw), cls, score, meta.labels)


def yolov8_boxes(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One image's (4 + C, N) rows -> boxes (N, 4) xyxy in input pixels and class scores (N, C)."""
    cx, cy, w, h = rows[:4].astype(np.float32)
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    return boxes, rows[4:].T.astype(np.float32)
