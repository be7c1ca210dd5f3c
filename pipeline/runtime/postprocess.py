"""Pure numpy post-processing shared by the ONNX runtime and the PyTorch reference path: anchor decoding,
NMS, embedding normalisation and distances."""

from __future__ import annotations

import numpy as np

from edgepipe.runtime.specs import BlazeFaceHead, GFLHead

__all__ = ["decode_blazeface", "nms", "embedding_distance"]


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


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box (4,) against many (N, 4)."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float, max_out: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, highest score first (ties keep input order)."""
    order = np.argsort(-scores, kind="stable")
    kept = []
    while order.size and (max_out is None or len(kept) < max_out):
        best = order[0]
        kept.append(best)
        rest = order[1:]
        order = rest[box_iou(boxes[best], boxes[rest]) <= iou_thresh]
    return np.asarray(kept, dtype=np.int64)


def l2_normalize(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Scale each row to unit length."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), eps)


def embedding_distance(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Pairwise distances between rows of a (N, D) and b (M, D): Euclidean, or 1 - cosine similarity."""
    a = np.atleast_2d(a).astype(np.float64)
    b = np.atleast_2d(b).astype(np.float64)
    if metric == "cosine":
        return 1.0 - l2_normalize(a) @ l2_normalize(b).T
    squared = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(squared, 0, None))


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


def multiclass_nms(boxes: np.ndarray, scores: np.ndarray, score_thresh: float, iou_thresh: float,
                   max_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class-wise greedy NMS with ONNX NonMaxSuppression's semantics, then the best `max_out` overall.

    Args:
        boxes: (N, 4) xyxy. scores: (N, C). score_thresh: keep scores > this. iou_thresh: suppress IoU > this.
        max_out: at most this many per class, then per image.

    Returns:
        (anchor indices (K,), class ids (K,), scores (K,)), best score first.
    """
    anchors, classes = np.nonzero(scores > score_thresh)
    kept_anchor, kept_class = [], []
    for c in np.unique(classes):
        rows = anchors[classes == c]
        keep = nms(boxes[rows], scores[rows, c], iou_thresh, max_out)
        kept_anchor.append(rows[keep])
        kept_class.append(np.full(len(keep), c))
    if not kept_anchor:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    anchor, cls = np.concatenate(kept_anchor), np.concatenate(kept_class)
    return top_k(anchor, cls, scores[anchor, cls], max_out)


def top_k(anchor: np.ndarray, cls: np.ndarray, score: np.ndarray, k: int):
    """The k best (anchor, class, score) triples, best first (stable on ties)."""
    order = np.argsort(-score, kind="stable")[:k]
    return anchor[order].astype(np.int64), cls[order].astype(np.int64), score[order].astype(np.float32)
