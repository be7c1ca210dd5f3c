"""The training objective of a GFL head (NanoDet, GFL): ATSS label assignment, then Quality Focal Loss on the class
scores, Distribution Focal Loss on the side distributions and GIoU loss on the decoded boxes: `GFLLoss`.

Why ATSS and not NanoDet-Plus's dynamic soft label assigner: NanoDet-g was trained with ATSS (its config predates
NanoDet-Plus), and the dynamic assigner needs NanoDet-Plus's auxiliary head to give sensible costs early on; ATSS
needs nothing but the anchor geometry, so a fine-tune starts from sane targets on the first step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from edgepipe.models.zoo.nanodet import gfl_boxes
from edgepipe.runtime.heads.gfl import gfl_centres
from edgepipe.runtime.specs import GFLHead

__all__ = ["GFLLoss", "atss_assign", "box_iou_aligned"]


def box_iou_aligned(a: torch.Tensor, b: torch.Tensor, *, generalized: bool = False, eps: float = 1e-7) -> torch.Tensor:
    """IoU (or GIoU) of paired xyxy boxes, (N, 4) and (N, 4) -> (N,)."""
    lt, rb = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area_a, area_b = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1), (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    union = area_a + area_b - inter + eps
    iou = inter / union
    if not generalized:
        return iou
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).clamp(min=0).prod(1) + eps
    return iou - (hull - union) / hull


def _box_iou_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every pair, (N, 4) x (M, 4) -> (N, M)."""
    lt, rb = torch.maximum(a[:, None, :2], b[None, :, :2]), torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    area_a, area_b = (a[:, 2:] - a[:, :2]).prod(1), (b[:, 2:] - b[:, :2]).prod(1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-7)


def atss_assign(anchors: torch.Tensor, level_sizes: list[int], gt_boxes: torch.Tensor, topk: int = 9) -> torch.Tensor:
    """Adaptive Training Sample Selection (Zhang et al., 2020).

    Per ground-truth box, take the `topk` anchors of each level whose centres are nearest to its centre; keep those
    whose IoU with it is at least the mean + std of the candidates' IoUs and whose centre lies inside it. An anchor
    claimed by several boxes goes to the one it overlaps most.

    Args:
        anchors: (N, 4) xyxy, the levels' anchors in the head's row order.
        level_sizes: anchors per level, summing to N.
        gt_boxes: (G, 4) xyxy.
        topk: candidates per level.

    Returns:
        (N,) int64: the index of the assigned box, or -1 for background.
    """
    n, g = anchors.shape[0], gt_boxes.shape[0]
    assigned = torch.full((n,), -1, dtype=torch.long)
    if g == 0:
        return assigned
    ious = _box_iou_matrix(anchors, gt_boxes)  # (N, G)
    anchor_centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    gt_centres = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    distances = torch.cdist(anchor_centres, gt_centres)  # (N, G)
    candidates, start = [], 0
    for size in level_sizes:
        k = min(topk, size)
        candidates.append(distances[start:start + size].topk(k, dim=0, largest=False).indices + start)  # (k, G)
        start += size
    candidates = torch.cat(candidates)  # (L * k, G)
    candidate_ious = ious.gather(0, candidates)
    threshold = candidate_ious.mean(0) + candidate_ious.std(0)  # (G,)
    centres = anchor_centres[candidates]  # (L * k, G, 2)
    inside = torch.minimum(centres - gt_boxes[None, :, :2], gt_boxes[None, :, 2:] - centres).min(-1).values > 0.01
    positive = (candidate_ious >= threshold[None]) & inside
    claimed = torch.full_like(ious, -1.0)  # IoU where (anchor, box) is a positive pair
    columns = torch.arange(g).expand_as(candidates)
    claimed[candidates[positive], columns[positive]] = ious[candidates[positive], columns[positive]]
    best_iou, best_gt = claimed.max(1)
    assigned[best_iou >= 0] = best_gt[best_iou >= 0]
    return assigned


@dataclass(frozen=True)
class GFLLossWeights:
    quality_focal: float = 1.0
    distribution_focal: float = 0.25
    giou: float = 2.0
    qfl_beta: float = 2.0  # focusing exponent of |sigmoid - target|
    octave_scale: float = 5.0  # ATSS anchor side, in strides
    topk: int = 9


class GFLLoss:
    """NanoDet's loss for its dense head outputs, callable as `loss(logits, distributions, targets) -> dict`.

    `logits` (B, N, C) are class logits before the sigmoid, `distributions` (B, N, 4 * (reg_max + 1)) the side
    logits, `targets` one (boxes (G, 4) xyxy in input pixels, classes (G,)) pair per image. The result holds the
    weighted parts and their sum under "loss".
    """

    def __init__(self, head: GFLHead, input_hw: tuple[int, int], weights: GFLLossWeights = GFLLossWeights()):
        centres, strides = gfl_centres(head, input_hw)  # the very grid the runtime decodes with
        self.centres, self.strides = torch.from_numpy(centres), torch.from_numpy(strides)
        half = self.strides[:, None] * weights.octave_scale / 2
        self.anchors = torch.cat([self.centres - half, self.centres + half], 1)
        self.level_sizes = [int((strides == s).sum()) for s in head.strides]
        self.reg_max = head.reg_max
        self.bins = torch.arange(head.reg_max + 1, dtype=torch.float32)
        self.weights = weights

    def __call__(self, logits: torch.Tensor, distributions: torch.Tensor,
                 targets: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        w = self.weights
        pos_image, pos_anchor, pos_class, pos_boxes = [], [], [], []
        for b, (boxes, classes) in enumerate(targets):
            assigned = atss_assign(self.anchors, self.level_sizes, boxes, w.topk)
            anchor = torch.nonzero(assigned >= 0).squeeze(1)
            pos_image.append(torch.full_like(anchor, b))
            pos_anchor.append(anchor)
            pos_class.append(classes[assigned[anchor]])
            pos_boxes.append(boxes[assigned[anchor]])
        pos_image, pos_anchor = torch.cat(pos_image), torch.cat(pos_anchor)
        pos_class, pos_boxes = torch.cat(pos_class), torch.cat(pos_boxes)
        n_pos = max(len(pos_anchor), 1)

        pos_dist = distributions[pos_image, pos_anchor]  # (P, 4 * bins)
        pred_boxes = self._decode_at(pos_dist, pos_anchor)
        score_targets = torch.zeros_like(logits)  # the IoU of the predicted box at its true class, 0 elsewhere
        score_targets[pos_image, pos_anchor, pos_class] = box_iou_aligned(pred_boxes.detach(), pos_boxes).clamp(min=0)

        prob = logits.sigmoid()
        qfl = F.binary_cross_entropy_with_logits(logits, score_targets, reduction="none")
        qfl = (qfl * (prob - score_targets).abs().pow(w.qfl_beta)).sum() / n_pos

        weight = prob.detach()[pos_image, pos_anchor].max(1).values  # (P,) boxes the model is sure of count more
        weight_sum = weight.sum().clamp(min=1e-6)
        giou = ((1 - box_iou_aligned(pred_boxes, pos_boxes, generalized=True)) * weight).sum() / weight_sum
        dfl = (self._dfl(pos_dist, pos_anchor, pos_boxes) * weight[:, None]).sum() / (4 * weight_sum)
        parts = {"qfl": w.quality_focal * qfl, "giou": w.giou * giou, "dfl": w.distribution_focal * dfl}
        return {"loss": sum(parts.values()), **parts, "positives": torch.tensor(float(len(pos_anchor)))}

    def _decode_at(self, pos_dist: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        return gfl_boxes(pos_dist, self.centres[anchor], self.strides[anchor], self.bins)

    def _dfl(self, pos_dist: torch.Tensor, anchor: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Distribution Focal Loss: cross-entropy on the two bins around each true side distance, weighted by
        nearness. Returns (P, 4)."""
        centres, strides = self.centres[anchor], self.strides[anchor, None]
        sides = torch.cat([centres - boxes[:, :2], boxes[:, 2:] - centres], 1) / strides  # (P, 4) in strides
        sides = sides.clamp(0, self.reg_max - 0.01)
        left = sides.floor().long()
        w_left, w_right = (left + 1).float() - sides, sides - left.float()
        log_prob = pos_dist.unflatten(-1, (4, self.reg_max + 1)).log_softmax(-1)  # (P, 4, bins)
        return -(log_prob.gather(-1, left[..., None]).squeeze(-1) * w_left
                 + log_prob.gather(-1, (left + 1)[..., None]).squeeze(-1) * w_right)
