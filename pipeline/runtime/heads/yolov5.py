"""YOLOv5 (and YOLOv7, YOLOX-style exports) detection head, as their ONNX export lays it out: one output
(B, N, 5 + C), per anchor a box (centre x, centre y, width, height in input pixels, decoded in the graph), an
objectness and C class probabilities (sigmoid applied). Score = objectness x class probability, as YOLOv5's NMS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from edgepipe.runtime.enums import Resize, Task, check
from edgepipe.runtime.errors import ArtifactError
from edgepipe.runtime.heads.base import QuantDefaults, check_box_head, grid_cells
from edgepipe.runtime.postprocess import single_label_nms
from edgepipe.runtime.results import Detection, InputMapping

if TYPE_CHECKING:
    from edgepipe.runtime.specs import ArtifactMeta

__all__ = ["YOLOv5Head"]


@dataclass(frozen=True)
class YOLOv5Head:
    """`anchors_per_cell` anchor boxes per cell of the stride 8/16/32 grids, one (N, 5 + C) output per image."""

    strides: tuple[int, ...] = (8, 16, 32)
    anchors_per_cell: int = 3  # N = 3 x sum over strides of (H / s) * (W / s): 25200 at 640x640
    score_thresh: float = 0.25  # YOLOv5 detect.py's conf-thres
    nms_iou: float = 0.45  # YOLOv5 detect.py's iou-thres, class-wise
    max_per_image: int = 300  # YOLOv5's max_det
    outputs: tuple[str, ...] = ("output0",)  # YOLOv5 export's name ("output" in older releases: --outputs)
    kind: str = "yolov5"

    task: ClassVar[Task] = Task.DETECTION
    resize: ClassVar[Resize | None] = None  # YOLOv5 letterboxes centred with grey 114: Resize.LETTERBOX_CENTER
    # Not yet measured on a YOLO model here: NanoDet's measured settings, the closest family available.
    quant_defaults: ClassVar[QuantDefaults] = QuantDefaults("percentile", per_channel=True, reduce_range=True,
                                                            calib_size=32)

    def __post_init__(self) -> None:
        check_box_head(self)
        check(self.anchors_per_cell >= 1, f"anchors_per_cell must be >= 1, got {self.anchors_per_cell}")

    def anchors(self, input_hw: tuple[int, int]) -> int:
        return self.anchors_per_cell * grid_cells(self.strides, input_hw)

    def output_shapes(self, input_hw: tuple[int, int], num_classes: int) -> tuple[tuple[int, ...], ...]:
        """One (N, 5 + C) output."""
        return ((self.anchors(input_hw), 5 + num_classes),)

    def classes_in(self, shapes: tuple[tuple[int, ...], ...]) -> int:
        return shapes[0][-1] - 5

    def decode(self, outputs: list[np.ndarray], meta: ArtifactMeta, mapping: InputMapping,
               image_hw: tuple[int, int], score_thresh: float | None = None, index: int = 0) -> list[Detection]:
        """Image `index` of a batch's (B, N, 5 + C) output -> detections in source pixels, best first."""
        rows = outputs[0][index].astype(np.float32)
        expected = self.anchors(mapping.input_size(meta.input.input_hw))
        if rows.ndim != 2 or rows.shape[0] != expected or rows.shape[1] < 6:
            raise ArtifactError(f"{meta.model_name}: output {self.outputs[0]!r} is {'x'.join(map(str, rows.shape))} "
                                f"per image; the yolov5 head expects {expected}x(5 + classes)")
        cx, cy, w, h = rows[:, :4].T
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
        scores = rows[:, 5:] * rows[:, 4:5]  # objectness x class probability
        thresh = self.score_thresh if score_thresh is None else float(score_thresh)
        # one label per box, as YOLOv5's NMS (multi_label=False)
        anchor, cls, score = single_label_nms(boxes, scores, thresh, self.nms_iou, self.max_per_image)
        return Detection.many(mapping.boxes_to_source(boxes[anchor], image_hw), cls, score, meta.labels)
