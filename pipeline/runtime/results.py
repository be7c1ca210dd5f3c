"""What the runtime returns, in source-image pixels: `Detection` (a box detector's) and `Face` (a face detector's)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Detection", "Face", "InputMapping"]


@dataclass(frozen=True)
class InputMapping:
    """Where source-image pixels land in the model input: input = source * scale + offset, per axis (x, y).

    Preprocessing returns it; a head's decode maps its input-pixel results back to the source with it.
    """

    scale_xy: tuple[float, float] = (1.0, 1.0)
    offset_xy: tuple[float, float] = (0.0, 0.0)  # a centred letterbox's padding on the left and on top
    input_hw: tuple[int, int] | None = None  # the input's size when it varies per image (Resize.PAD), else None

    def input_size(self, default_hw: tuple[int, int]) -> tuple[int, int]:
        """The size of the input this mapping leads to: its own when it varies per image, else `default_hw`."""
        return self.input_hw or default_hw

    def to_source(self, points_xy: np.ndarray) -> np.ndarray:
        """(..., 2) points in input pixels -> source pixels, float32."""
        offset, scale = np.asarray(self.offset_xy, np.float32), np.asarray(self.scale_xy, np.float32)
        return ((np.asarray(points_xy, np.float32) - offset) / scale).astype(np.float32)

    def boxes_to_source(self, boxes_xyxy: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
        """(N, 4) xyxy boxes in input pixels -> source pixels, clipped to the image, float32."""
        h, w = image_hw
        boxes = self.to_source(np.asarray(boxes_xyxy, np.float32).reshape(-1, 2, 2)).reshape(-1, 4)
        return np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)


@dataclass(frozen=True)
class Detection:
    """One detected object, in source-image pixels."""

    box_xyxy: np.ndarray  # (4,) float32
    score: float
    class_id: int  # index into the artifact's labels
    label: str

    @staticmethod
    def many(boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray, labels: tuple[str, ...]) -> list["Detection"]:
        """One per row; a class id beyond the labels is named by its number."""
        return [Detection(boxes[i], float(scores[i]), int(classes[i]),
                          labels[classes[i]] if classes[i] < len(labels) else str(classes[i]))
                for i in range(len(scores))]


@dataclass(frozen=True)
class Face:
    """One detected face, in source-image pixels."""

    box_xyxy: np.ndarray  # (4,) float32
    score: float
    keypoints_xy: np.ndarray  # (K, 2) float32
    keypoint_names: tuple[str, ...]

    @property
    def area(self) -> float:
        return float(max(0.0, self.box_xyxy[2] - self.box_xyxy[0]) * max(0.0, self.box_xyxy[3] - self.box_xyxy[1]))
