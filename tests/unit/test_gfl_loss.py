"""ATSS assignment and the GFL losses on hand-made boxes."""

from __future__ import annotations

import torch

from edgepipe.models.training.gfl import GFLLoss, atss_assign, box_iou_aligned
from edgepipe.runtime.specs import GFLHead

HEAD = GFLHead(strides=(8, 16, 32), reg_max=10)
INPUT_HW = (64, 64)


def test_box_iou_and_giou():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]])
    assert torch.allclose(box_iou_aligned(a, b), torch.tensor([1.0, 0.0]), atol=1e-6)
    # disjoint boxes 10 apart: hull 30 x 10, union 200 -> GIoU = 0 - 100 / 300
    assert torch.allclose(box_iou_aligned(a, b, generalized=True), torch.tensor([1.0, -1 / 3]), atol=1e-6)


def test_atss_picks_anchors_inside_the_box_and_none_without_boxes():
    loss = GFLLoss(HEAD, INPUT_HW)
    box = torch.tensor([[8.0, 8.0, 48.0, 48.0]])
    assigned = atss_assign(loss.anchors, loss.level_sizes, box)
    positive = torch.nonzero(assigned == 0).squeeze(1)
    assert len(positive) > 0
    centres = loss.centres[positive]
    assert ((centres > 8) & (centres < 48)).all()
    assert (atss_assign(loss.anchors, loss.level_sizes, torch.zeros((0, 4))) == -1).all()


def test_overlapping_boxes_each_get_their_own_anchors():
    loss = GFLLoss(HEAD, INPUT_HW)
    boxes = torch.tensor([[0.0, 0.0, 30.0, 30.0], [34.0, 34.0, 64.0, 64.0]])
    assigned = atss_assign(loss.anchors, loss.level_sizes, boxes)
    assert {0, 1} <= set(assigned.tolist())


def test_perfect_prediction_has_lower_loss_than_a_wrong_one():
    loss = GFLLoss(HEAD, INPUT_HW)
    n = len(loss.centres)
    box, classes = torch.tensor([[12.0, 12.0, 44.0, 44.0]]), torch.tensor([0])
    assigned = atss_assign(loss.anchors, loss.level_sizes, box)
    positive = assigned == 0
    # distributions peaked on the true side distances (exact when they fall on a bin)
    sides = torch.cat([loss.centres - box[:, :2], box[:, 2:] - loss.centres], 1) / loss.strides[:, None]
    bins = torch.arange(HEAD.reg_max + 1, dtype=torch.float32)
    good = -(sides.clamp(0, HEAD.reg_max)[..., None] - bins).abs() * 20  # (N, 4, bins) logits
    good = good.reshape(1, n, -1)
    logits_good = torch.where(positive, 6.0, -6.0).reshape(1, n, 1)
    parts_good = loss(logits_good, good, [(box, classes)])
    parts_bad = loss(-logits_good, torch.zeros_like(good), [(box, classes)])
    for key in ("qfl", "giou", "dfl"):
        assert parts_good[key] < parts_bad[key], key
    assert parts_good["giou"] < 0.05
