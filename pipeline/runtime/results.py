"""What the runtime returns, in source-image pixels: `Detection` (a box detector's) and `Face` (a face detector's)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Detection", "Face"]


@dataclass(frozen=True)
class Detection:
    """One detected object, in source-image pixels."""

    box_xyxy: np.ndarray  # (4,) float32
    score: float
    class_id: int  # index into the artifact's labels
    label: str


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
