import numpy as np
import pytest

from edgepipe.runtime.heads.gfl import decode_gfl, gfl_centres
from edgepipe.runtime.postprocess import multiclass_nms
from edgepipe.runtime.results import InputMapping
from edgepipe.runtime.specs import ArtifactMeta, GFLHead, InputSpec, Precision, Resize, Task


def test_gfl_centres_follow_the_row_order():
    centres, strides = gfl_centres(GFLHead(), (416, 416))
    assert centres.shape == (2704 + 676 + 169, 2)
    assert np.allclose(centres[0], [4, 4]) and np.allclose(centres[1], [12, 4]) and np.allclose(centres[52], [4, 12])
    assert np.allclose(centres[2704], [8, 8]) and strides[2704] == 16 and strides[-1] == 32


def test_decode_gfl_takes_the_expectation_of_each_side():
    reg_max = 10
    logits = np.full((1, 4, reg_max + 1), -50.0, np.float32)
    logits[0, 0, 2] = logits[0, 1, 3] = 50.0  # left 2 bins, top 3 bins
    logits[0, 2, 4] = logits[0, 2, 5] = 50.0  # right: half at 4, half at 5 -> 4.5
    logits[0, 3, 0] = 50.0  # bottom 0
    boxes = decode_gfl(logits.reshape(1, -1), np.array([[100.0, 200.0]], np.float32), np.array([8.0]), reg_max)
    assert np.allclose(boxes[0], [100 - 16, 200 - 24, 100 + 36, 200], atol=1e-4)


def test_multiclass_nms_is_per_class_and_capped():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([[0.9, 0.8], [0.7, 0.0], [0.6, 0.01]], np.float32)  # (N, C)
    anchor, cls, score = multiclass_nms(boxes, scores, 0.05, 0.5, 100)
    # class 0: anchor 1 is suppressed by anchor 0; class 1 keeps anchor 0 although class 0 holds the same box
    assert list(zip(anchor.tolist(), cls.tolist())) == [(0, 0), (0, 1), (2, 0)]
    assert np.allclose(score, [0.9, 0.8, 0.6])
    assert len(multiclass_nms(boxes, scores, 0.05, 0.5, 2)[0]) == 2
    assert len(multiclass_nms(boxes, scores, 0.95, 0.5, 100)[0]) == 0


def _meta(mode):
    outputs = ("scores", "distributions") if mode == "dense" else ("selected", "boxes", "box_scores")
    return ArtifactMeta("nanodet_g.coco", Task.DETECTION, Precision.FP32, InputSpec((3, 32, 32), resize=Resize.STRETCH),
                        GFLHead(strides=(16, 32), mode=mode, outputs=outputs, score_thresh=0.3), labels=("a", "b"))


def test_dense_and_nms_outputs_decode_to_the_same_detections():
    rng = np.random.default_rng(1)
    n = 4 + 1
    scores = rng.uniform(0, 1, (1, n, 2)).astype(np.float32)
    dists = rng.normal(0, 2, (1, n, 44)).astype(np.float32)
    dense_meta, nms_meta = _meta("dense"), _meta("nms")
    dense = dense_meta.head.decode([scores, dists], dense_meta, InputMapping((0.5, 0.25)), (64, 128))
    centres, strides = gfl_centres(_meta("dense").head, (32, 32))
    boxes = decode_gfl(dists[0], centres, strides, 10)
    anchor, cls, _ = multiclass_nms(boxes, scores[0], 0.0, 0.6, 100)  # what ONNX NMS (threshold 0) would return
    order = np.lexsort((-scores[0][anchor, cls], cls))  # ONNX lists picks class by class
    selected = np.stack([np.zeros_like(anchor), cls, anchor], 1)[order]
    graph = nms_meta.head.decode([selected, boxes[selected[:, 2]], scores[0][selected[:, 2], selected[:, 1]]],
                                 nms_meta, InputMapping((0.5, 0.25)), (64, 128))
    assert len(dense) == len(graph) > 0
    for a, b in zip(dense, graph):
        assert a.label == b.label and a.score == pytest.approx(b.score) and np.allclose(a.box_xyxy, b.box_xyxy)
    assert all(d.box_xyxy[2] <= 128 and d.box_xyxy[3] <= 64 for d in dense)  # mapped back and clipped


def test_the_torch_box_decode_is_the_numpy_one():
    """Export (boxes in the graph) and training (GIoU loss) decode with `gfl_boxes`; the runtime with `decode_gfl`."""
    import torch

    from edgepipe.models.zoo.nanodet import gfl_boxes

    head = GFLHead(strides=(8, 16, 32), reg_max=7)
    centres, strides = gfl_centres(head, (64, 96))
    dists = np.random.default_rng(3).normal(0, 3, (len(centres), 4 * 8)).astype(np.float32)
    expected = decode_gfl(dists, centres, strides, head.reg_max)
    got = gfl_boxes(torch.from_numpy(dists)[None], torch.from_numpy(centres), torch.from_numpy(strides),
                    torch.arange(8, dtype=torch.float32))[0].numpy()
    assert got.shape == expected.shape == (len(centres), 4)
    assert np.abs(got - expected).max() < 1e-4
