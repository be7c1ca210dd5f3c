"""MediaPipe BlazeFace head: SSD-style anchors, each with a score and a box plus K keypoints. `BlazeFaceHead.decode`
turns one image's outputs into `Face`s after NMS; `blazeface_anchors` and `decode_blazeface` are its arithmetic."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from edgepipe.runtime.enums import Resize, Task, check
from edgepipe.runtime.errors import ArtifactError
from edgepipe.runtime.heads.base import QuantDefaults
from edgepipe.runtime.postprocess import nms
from edgepipe.runtime.results import Face, InputMapping

if TYPE_CHECKING:
    from edgepipe.runtime.specs import ArtifactMeta

__all__ = ["BlazeFaceHead", "blazeface_anchors", "decode_blazeface"]


@dataclass(frozen=True)
class BlazeFaceHead:
    """SSD-style anchors with a score and 4 box + 2*K keypoint regressors per anchor (MediaPipe BlazeFace)."""

    strides: tuple[int, ...]  # one entry per anchor layer, e.g. (8, 16, 16, 16)
    anchors_per_location: int = 2  # per layer; layers with equal strides stack on one grid
    anchor_offset: float = 0.5  # anchor centre within its cell
    regressor_scale: float = 128.0  # regressors are in input pixels: divide by this to get [0, 1] units
    num_keypoints: int = 6
    keypoint_names: tuple[str, ...] = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")
    score_thresh: float = 0.5  # after sigmoid
    nms_iou: float = 0.3
    score_clip: float = 100.0  # logits are clipped to +-this before the sigmoid, as MediaPipe does
    # Keypoints for alignment are re-measured in a square crop this many face-box widths wide, where the face fills
    # the input at the scale the keypoints are most stable (0 disables the second pass).
    refine_crop_scale: float = 4.0
    outputs: tuple[str, str] = ("scores", "regressors")  # (B, A, 1) logits, (B, A, 4 + 2K)
    kind: str = "blazeface"

    task: ClassVar[Task] = Task.FACE_DETECTION
    resize: ClassVar[Resize | None] = None
    # The last stage's activations reach ~7e3 and the score logits ~1e4: with the last 40% of nodes in float, AP@0.5
    # drops 0.08 / -0.04 / 0.51 over seeds 0-2 (all but the output head in int8: 30+ points). Still ~1.7x slower
    # than fp32 on AVX2 without VNNI (int8 depthwise convs), so the speed warning sends users to fp32.
    quant_defaults: ClassVar[QuantDefaults] = QuantDefaults("percentile", per_channel=True, reduce_range=True,
                                                            calib_size=32, float_tail=0.4)

    def __post_init__(self) -> None:
        check(len(self.strides) > 0, "BlazeFaceHead.strides must not be empty")
        check(0.0 < self.nms_iou <= 1.0, f"nms_iou must be in (0, 1], got {self.nms_iou}")
        check(len(self.keypoint_names) == self.num_keypoints,
              f"{self.num_keypoints} keypoints but {len(self.keypoint_names)} names")

    def output_shapes(self, input_hw: tuple[int, int], num_classes: int = 1) -> tuple[tuple[int, ...], ...]:
        """(A, 1) score logits and (A, 4 + 2K) regressors for the A anchors."""
        anchors = len(blazeface_anchors(self, input_hw))
        return (anchors, 1), (anchors, 4 + 2 * self.num_keypoints)

    def live_rows(self, outputs: list[np.ndarray], score: float, index: int = 0) -> list[np.ndarray]:
        """Per output, the anchors of image `index` whose score reaches `score` (the rows that can decode)."""
        logits = np.clip(outputs[0][index, :, 0].astype(np.float64), -self.score_clip, self.score_clip)
        rows = 1.0 / (1.0 + np.exp(-logits)) >= score
        return [rows, rows]

    def decode(self, outputs: list[np.ndarray], meta: ArtifactMeta, mapping: InputMapping,
               image_hw: tuple[int, int], score_thresh: float | None = None, index: int = 0) -> list[Face]:
        """Image `index` of a batch's raw outputs ((B, A, 1) logits, (B, A, 4 + 2K)) -> faces in source pixels,
        after NMS, best first."""
        head = self if score_thresh is None else dataclasses.replace(self, score_thresh=float(score_thresh))
        scores_logit, regressors = outputs[0][index], outputs[1][index]
        input_hw = mapping.input_size(meta.input.input_hw)
        anchors = blazeface_anchors(head, input_hw)
        if len(anchors) != len(regressors):
            raise ArtifactError(f"{meta.model_name}: {len(regressors)} regressor rows but the head implies "
                                f"{len(anchors)} anchors")
        boxes, keypoints, scores = decode_blazeface(scores_logit, regressors, anchors, head, input_hw)
        keep = nms(boxes, scores, head.nms_iou)
        source_boxes = mapping.boxes_to_source(boxes[keep], image_hw)
        return [Face(box, float(scores[i]), mapping.to_source(keypoints[i]), head.keypoint_names)
                for box, i in zip(source_boxes, keep)]


def blazeface_anchors(head: BlazeFaceHead, input_hw: tuple[int, int]) -> np.ndarray:
    """MediaPipe SSD anchor centres in [0, 1] units, in the order the network emits them: (A, 2) as (x, y).

    Consecutive layers with the same stride share one grid, so their anchors interleave per cell.
    """
    in_h, in_w = input_hw
    centres = []
    i = 0
    while i < len(head.strides):
        stride = head.strides[i]
        layers = 1
        while i + layers < len(head.strides) and head.strides[i + layers] == stride:
            layers += 1
        rows, cols = -(-in_h // stride), -(-in_w // stride)  # ceil
        ys, xs = np.meshgrid((np.arange(rows) + head.anchor_offset) / rows,
                             (np.arange(cols) + head.anchor_offset) / cols, indexing="ij")
        grid = np.stack([xs, ys], -1).reshape(-1, 1, 2)  # (rows * cols, 1, 2)
        centres.append(np.repeat(grid, layers * head.anchors_per_location, axis=1).reshape(-1, 2))
        i += layers
    return np.concatenate(centres).astype(np.float32)


def decode_blazeface(
    scores_logit: np.ndarray, regressors: np.ndarray, anchors_xy: np.ndarray, head: BlazeFaceHead,
    input_hw: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one image's raw BlazeFace outputs into boxes, keypoints and scores, in input pixels.

    Args:
        scores_logit: (A,) or (A, 1) raw logits.
        regressors: (A, 4 + 2K) as (cx, cy, w, h, kp0x, kp0y, ...) offsets in units of `head.regressor_scale`.
        anchors_xy: (A, 2) anchor centres in [0, 1].
        head: decoder parameters.
        input_hw: network input size.

    Returns:
        boxes (N, 4) xyxy, keypoints (N, K, 2) xy, scores (N,) for anchors with score >= head.score_thresh,
        before NMS.
    """
    in_h, in_w = input_hw
    logits = np.clip(scores_logit.reshape(-1).astype(np.float64), -head.score_clip, head.score_clip)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = scores >= head.score_thresh
    reg = regressors[keep].astype(np.float32) / head.regressor_scale  # (N, 4 + 2K) in [0, 1] units
    anchors = anchors_xy[keep]  # (N, 2)
    centre = reg[:, 0:2] + anchors
    half = reg[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], 1) * np.array([in_w, in_h, in_w, in_h], np.float32)
    keypoints = reg[:, 4:4 + 2 * head.num_keypoints].reshape(-1, head.num_keypoints, 2) + anchors[:, None, :]
    keypoints = keypoints * np.array([in_w, in_h], np.float32)
    return boxes, keypoints, scores[keep].astype(np.float32)
