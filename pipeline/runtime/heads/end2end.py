"""End-to-end detection head: boxes, scores and classes already decoded and NMS-ed inside the graph, as Ultralytics
exports YOLOv10 and YOLO26 (and `nms=True` exports): one output (B, K, 6), per row x1, y1, x2, y2 in input pixels,
score, class id; rows past the detections have score 0. Decoding is a threshold and the map back to the photo."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from edgepipe.runtime.enums import Resize, Task
from edgepipe.runtime.errors import ArtifactError
from edgepipe.runtime.heads.base import QuantDefaults, check_box_head
from edgepipe.runtime.results import Detection, InputMapping

if TYPE_CHECKING:
    from edgepipe.runtime.specs import ArtifactMeta

__all__ = ["End2EndHead"]


@dataclass(frozen=True)
class End2EndHead:
    """K already-final detections per image: (K, 6) rows of x1, y1, x2, y2, score, class."""

    max_per_image: int = 300  # K, the graph's fixed row count (Ultralytics' max_det)
    score_thresh: float = 0.25
    outputs: tuple[str, ...] = ("output0",)
    kind: str = "end2end"

    task: ClassVar[Task] = Task.DETECTION
    resize: ClassVar[Resize | None] = None
    # Not yet measured on an end-to-end model here: NanoDet's measured settings.
    quant_defaults: ClassVar[QuantDefaults] = QuantDefaults("percentile", per_channel=True, reduce_range=True,
                                                            calib_size=32)

    def __post_init__(self) -> None:
        check_box_head(self)

    def output_shapes(self, input_hw: tuple[int, int], num_classes: int) -> tuple[tuple[int, ...], ...]:
        """One (K, 6) output, whatever the size and the class count."""
        return ((self.max_per_image, 6),)

    def classes_in(self, shapes: tuple[tuple[int, ...], ...]) -> int:
        """The class count is not in the shapes: any; the labels say it (class ids beyond are named by number)."""
        return 0

    def decode(self, outputs: list[np.ndarray], meta: ArtifactMeta, mapping: InputMapping,
               image_hw: tuple[int, int], score_thresh: float | None = None, index: int = 0) -> list[Detection]:
        """Image `index` of a batch's (B, K, 6) output -> the detections above the threshold, best first."""
        rows = outputs[0][index].astype(np.float32)
        if rows.ndim != 2 or rows.shape[1] != 6:
            raise ArtifactError(f"{meta.model_name}: output {self.outputs[0]!r} is {'x'.join(map(str, rows.shape))} "
                                "per image; the end2end head expects Kx6 (x1, y1, x2, y2, score, class)")
        thresh = self.score_thresh if score_thresh is None else float(score_thresh)
        kept = rows[rows[:, 4] > thresh]
        kept = kept[np.argsort(-kept[:, 4], kind="stable")]
        classes = np.rint(kept[:, 5]).astype(np.int64)
        return Detection.many(mapping.boxes_to_source(kept[:, :4], image_hw), classes, kept[:, 4], meta.labels)
