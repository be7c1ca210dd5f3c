"""YuNet head (OpenCV Zoo's face detector): anchor-free, one prior per cell of the stride 8/16/32 grids, each with
cls and obj probabilities, a box and 5 landmarks. `YuNetHead.decode` turns one image's 12 outputs into `Face`s the
way OpenCV's FaceDetectorYN does; `yunet_priors` and `decode_yunet` are its arithmetic."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from edgepipe.runtime.enums import Resize, Task, check
from edgepipe.runtime.errors import ArtifactError, SpecError
from edgepipe.runtime.heads.base import QuantDefaults
from edgepipe.runtime.postprocess import nms
from edgepipe.runtime.results import Face, InputMapping

if TYPE_CHECKING:
    from edgepipe.runtime.specs import ArtifactMeta

__all__ = ["YuNetHead", "decode_yunet", "yunet_priors"]


@dataclass(frozen=True)
class YuNetHead:
    """Per cell of each stride's grid: cls and obj probabilities (sigmoid in the graph), a box as centre offset and
    log size in cells, and K landmarks as offsets in cells, all from the cell's top-left corner."""

    strides: tuple[int, ...] = (8, 16, 32)  # one grid per stride; the input size must be a multiple of the largest
    # FaceDetectorYN's default is 0.9, OpenCV Zoo's wrapper uses 0.6. Measured with SFace on lfw_10ids: at 0.9 one photo
    # loses its face and accuracy is 99.00%; at 0.6 none does and it is 100.00% (OpenCV's own pipeline: the same).
    score_thresh: float = 0.6  # on sqrt(cls * obj)
    nms_iou: float = 0.3  # suppress IoU > this, as cv::dnn::NMSBoxes
    top_k: int = 5000  # best candidates kept before NMS, as cv::dnn::NMSBoxes
    num_keypoints: int = 5
    # "right" is the subject's right, the point on the image's left (OpenCV's face.hpp order)
    keypoint_names: tuple[str, ...] = ("right_eye", "left_eye", "nose_tip", "mouth_right", "mouth_left")
    # (B, cells, C) each, grouped by kind then stride: cls, obj (C = 1), bbox (C = 4), kps (C = 2K)
    outputs: tuple[str, ...] = ("cls_8", "cls_16", "cls_32", "obj_8", "obj_16", "obj_32",
                                "bbox_8", "bbox_16", "bbox_32", "kps_8", "kps_16", "kps_32")
    kind: str = "yunet"

    task: ClassVar[Task] = Task.FACE_DETECTION
    resize: ClassVar[Resize | None] = None
    # MinMax, per-channel 7-bit, 32 photos of coco_calib: AP@0.5 86.09 -> 86.27 on widerface_val_100 (seed 0, first
    # try); 0.82x the speed of fp32 on AVX2 without VNNI (int8 depthwise convs), so quantize's warning sends users to fp32.
    quant_defaults: ClassVar[QuantDefaults] = QuantDefaults("minmax", per_channel=True, reduce_range=True,
                                                            calib_size=32)

    def __post_init__(self) -> None:
        check(len(self.strides) > 0 and all(s > 0 for s in self.strides),
              f"YuNetHead.strides must be a non-empty tuple of positive ints, got {self.strides!r}")
        check(0.0 < self.nms_iou <= 1.0, f"nms_iou must be in (0, 1], got {self.nms_iou}")
        check(self.top_k >= 1, f"top_k must be >= 1, got {self.top_k}")
        check(0.0 <= self.score_thresh <= 1.0, f"score_thresh must be in [0, 1], got {self.score_thresh}")
        check(len(self.keypoint_names) == self.num_keypoints,
              f"{self.num_keypoints} keypoints but {len(self.keypoint_names)} names")
        check(len(self.outputs) == 4 * len(self.strides),
              f"YuNetHead needs 4 outputs per stride (cls, obj, bbox, kps) = {4 * len(self.strides)}, "
              f"got {len(self.outputs)}")

    def output_shapes(self, input_hw: tuple[int, int], num_classes: int = 1) -> tuple[tuple[int, ...], ...]:
        """(cells, C) per output in `outputs` order: cells = (H / s) * (W / s); C = 1, 1, 4, 2K for cls, obj, bbox,
        kps. Raises SpecError unless H and W are multiples of the largest stride."""
        cells = [rows * cols for rows, cols in _grids_hw(self.strides, input_hw)]
        widths = (1, 1, 4, 2 * self.num_keypoints)  # cls, obj, bbox, kps
        return tuple((n, width) for width in widths for n in cells)

    def live_rows(self, outputs: list[np.ndarray], score: float, index: int = 0) -> list[np.ndarray]:
        """Per output, the cells of image `index` whose score sqrt(cls * obj) reaches `score` (they can decode)."""
        levels = len(self.strides)
        rows = [np.sqrt(np.clip(cls[index, :, 0], 0, 1) * np.clip(obj[index, :, 0], 0, 1)) >= score
                for cls, obj in zip(outputs[:levels], outputs[levels:2 * levels])]
        return rows * 4  # cls, obj, bbox and kps of each stride share its cells

    def decode(self, outputs: list[np.ndarray], meta: ArtifactMeta, mapping: InputMapping,
               image_hw: tuple[int, int], score_thresh: float | None = None, index: int = 0) -> list[Face]:
        """Image `index` of a batch's 12 raw outputs ((B, cells, C) each, `outputs` order) -> faces in source
        pixels, best first, after top_k and NMS."""
        head = self if score_thresh is None else dataclasses.replace(self, score_thresh=float(score_thresh))
        try:
            input_hw = mapping.input_size(meta.input.input_hw)
            want = self.output_shapes(input_hw)
        except SpecError as e:
            raise ArtifactError(f"{meta.model_name}: {e}") from e
        found = [tuple(np.shape(o)[1:]) for o in outputs]
        if found != list(want):
            raise ArtifactError(f"{meta.model_name}: output shapes {found} (without batch) do not match the "
                                f"{input_hw} input's {list(want)}")
        levels = len(self.strides)
        cls, obj, bbox, kps = ([o[index] for o in outputs[k * levels:(k + 1) * levels]] for k in range(4))
        boxes, keypoints, scores = decode_yunet(cls, obj, bbox, kps, head, input_hw)
        keep = _nms_like_opencv(boxes, scores, head)
        source_boxes = mapping.boxes_to_source(boxes[keep], image_hw)
        return [Face(box, float(scores[i]), mapping.to_source(keypoints[i]), head.keypoint_names)
                for box, i in zip(source_boxes, keep)]


def yunet_priors(strides: tuple[int, ...], input_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Every cell's top-left corner (N, 2) xy in input pixels and its stride (N,), in the outputs' row order
    (stride by stride, row-major); OpenCV uses the corner (c * s, r * s), with no half-cell offset.

    Raises:
        SpecError: H or W is not a positive multiple of the largest stride (the net's grids would not be H / s).
    """
    corners, cell_strides = [], []
    for stride, (rows, cols) in zip(strides, _grids_hw(strides, input_hw)):
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        corners.append(np.stack([xs, ys], -1).reshape(-1, 2) * stride)
        cell_strides.append(np.full(rows * cols, stride))
    return np.concatenate(corners).astype(np.float32), np.concatenate(cell_strides).astype(np.float32)


def _grids_hw(strides: tuple[int, ...], input_hw: tuple[int, int]) -> list[tuple[int, int]]:
    """(rows, cols) of each stride's grid; SpecError unless H and W are positive multiples of the largest stride."""
    in_h, in_w = input_hw
    largest = max(strides)
    check(in_h > 0 and in_w > 0 and in_h % largest == 0 and in_w % largest == 0,
          f"YuNet input size {tuple(input_hw)} must be positive multiples of {largest} (pad bottom/right)")
    return [(in_h // stride, in_w // stride) for stride in strides]


def decode_yunet(
    cls_list: list[np.ndarray], obj_list: list[np.ndarray], bbox_list: list[np.ndarray], kps_list: list[np.ndarray],
    head: YuNetHead, input_hw: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one image's raw YuNet outputs into boxes, keypoints and scores, in input pixels.

    Args:
        cls_list, obj_list: per stride, (cells, 1) probabilities (clamped to [0, 1] here, as OpenCV does).
        bbox_list: per stride, (cells, 4) as (dx, dy, log w, log h) in cells: centre ((c + dx) s, (r + dy) s),
            size (exp(log w) s, exp(log h) s).
        kps_list: per stride, (cells, 2K) as (dx, dy) per keypoint in cells from the corner: ((c + dx) s, (r + dy) s).
        head: decoder parameters (strides, score_thresh, num_keypoints).
        input_hw: network input size, multiples of the largest stride.

    Returns:
        boxes (N, 4) xyxy, keypoints (N, K, 2) xy, scores (N,) = sqrt(cls * obj), float32, for the cells with
        score >= head.score_thresh in the outputs' row order, before NMS.
    """
    corners, strides = yunet_priors(head.strides, input_hw)
    cls = np.clip(np.concatenate([a.reshape(-1) for a in cls_list]).astype(np.float32), 0, 1)
    obj = np.clip(np.concatenate([a.reshape(-1) for a in obj_list]).astype(np.float32), 0, 1)
    scores = np.sqrt(cls * obj)
    keep = scores.astype(np.float64) >= head.score_thresh  # not in float32, where a tiny threshold rounds to 0
    bbox = np.concatenate([a.reshape(-1, 4) for a in bbox_list]).astype(np.float32)[keep]  # (N, 4)
    kps = np.concatenate([a.reshape(-1, 2 * head.num_keypoints) for a in kps_list]).astype(np.float32)[keep]
    corners, strides = corners[keep], strides[keep, None]  # (N, 2), (N, 1)
    centre = corners + bbox[:, :2] * strides
    half = np.exp(bbox[:, 2:]) * strides / 2
    boxes = np.concatenate([centre - half, centre + half], 1)
    keypoints = corners[:, None, :] + kps.reshape(-1, head.num_keypoints, 2) * strides[:, :, None]
    return boxes.astype(np.float32), keypoints.astype(np.float32), scores[keep]


def _nms_like_opencv(boxes: np.ndarray, scores: np.ndarray, head: YuNetHead) -> np.ndarray:
    """FaceDetectorYN's cv::dnn::NMSBoxes: the top_k best, then greedy NMS on boxes whose x, y, w, h are truncated
    to ints (as its Rect2i); returns kept indices, best first."""
    order = np.argsort(-scores, kind="stable")[:head.top_k]
    x_y = np.trunc(boxes[order, :2])
    w_h = np.trunc(boxes[order, 2:] - boxes[order, :2])
    return order[nms(np.concatenate([x_y, x_y + w_h], 1), scores[order], head.nms_iou)]
