import numpy as np
import pytest

from edgepipe.runtime.heads.blazeface import blazeface_anchors, decode_blazeface
from edgepipe.runtime.postprocess import embedding_distance, nms
from edgepipe.runtime.specs import BlazeFaceHead


@pytest.mark.parametrize("strides, size", [((8, 16, 16, 16), 128), ((16, 32, 32, 32), 256)])
def test_blazeface_anchor_layout(strides, size):
    anchors = blazeface_anchors(BlazeFaceHead(strides=strides), (size, size))
    assert anchors.shape == (896, 2)
    cells = size // strides[0]
    assert np.allclose(anchors[0], anchors[1]) and np.allclose(anchors[0], [0.5 / cells] * 2)  # 2 per cell
    first_coarse = 2 * cells * cells
    assert np.allclose(anchors[first_coarse:first_coarse + 6], anchors[first_coarse])  # 3 layers x 2 share a cell
    assert anchors.min() > 0 and anchors.max() < 1


def test_decode_places_boxes_and_keypoints_around_anchors():
    head = BlazeFaceHead(strides=(8, 16, 16, 16), regressor_scale=128.0, score_thresh=0.5)
    anchors = blazeface_anchors(head, (128, 128))
    logits = np.full((896, 1), -10.0, np.float32)
    logits[5] = 3.0
    regressors = np.zeros((896, 16), np.float32)
    regressors[5, 2:4] = 32.0  # 32 px wide and high
    regressors[5, 4:6] = 8.0  # first keypoint 8 px right/down of the anchor
    boxes, keypoints, scores = decode_blazeface(logits, regressors, anchors, head, (128, 128))
    centre = anchors[5] * 128
    assert boxes.shape == (1, 4) and np.allclose(boxes[0], [*(centre - 16), *(centre + 16)])
    assert np.allclose(keypoints[0, 0], centre + 8) and np.allclose(keypoints[0, 1], centre)
    assert scores[0] == pytest.approx(1 / (1 + np.exp(-3.0)))


def test_nms_suppresses_overlaps_and_keeps_order():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.6, 0.9, 0.5, 0.1], np.float32)
    assert nms(boxes, scores, 0.3).tolist() == [1, 2]
    assert nms(boxes, scores, 0.99).tolist() == [1, 0, 2]  # the exact duplicate (IoU 1) still goes
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).tolist() == []


def test_embedding_distances():
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    b = np.array([[0.0, 0.0], [0.0, 2.0]])
    assert np.allclose(embedding_distance(a, b, "euclidean"), [[5.0, np.sqrt(13)], [1.0, np.sqrt(5)]])
    assert np.allclose(embedding_distance(a, b[1:], "cosine"), [[0.2], [1.0]])
