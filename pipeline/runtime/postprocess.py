"""Pure numpy post-processing that every head shares (a head's own decoding lives in `runtime/heads/`): NMS,
class-wise NMS, box IoU, embedding normalisation and distances."""

from __future__ import annotations

import numpy as np

__all__ = ["nms", "multiclass_nms", "single_label_nms", "box_iou", "l2_normalize", "embedding_distance"]


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


def single_label_nms(boxes: np.ndarray, scores: np.ndarray, score_thresh: float, iou_thresh: float,
                     max_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`multiclass_nms` with each box kept for its best class only, as the YOLO family's predictors do
    (multi_label=False): same arguments and results."""
    rows = np.arange(len(scores))
    best = scores.argmax(1) if scores.size else np.zeros(0, np.int64)
    single = np.zeros_like(scores)
    single[rows, best] = scores[rows, best]
    return multiclass_nms(boxes, single, score_thresh, iou_thresh, max_out)


def top_k(anchor: np.ndarray, cls: np.ndarray, score: np.ndarray, k: int):
    """The k best (anchor, class, score) triples, best first (stable on ties)."""
    order = np.argsort(-score, kind="stable")[:k]
    return anchor[order].astype(np.int64), cls[order].astype(np.int64), score[order].astype(np.float32)
