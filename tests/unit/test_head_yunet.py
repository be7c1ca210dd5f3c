"""YuNetHead on synthetic outputs: prior layout, OpenCV's decoding of one planted face, NMS, thresholds, top_k,
mapping back to the source image, refusals, and the output shapes of the PyTorch port."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgepipe.models.zoo.yunet import YUNET_OUTPUTS, YuNet
from edgepipe.runtime.errors import ArtifactError, SpecError
from edgepipe.runtime.heads import HEADS
from edgepipe.runtime.heads.yunet import YuNetHead, decode_yunet, yunet_priors
from edgepipe.runtime.results import InputMapping
from edgepipe.runtime.specs import ArtifactMeta, Color, InputSpec, Precision, Resize, Task

INPUT_HW = (64, 96)  # grids 8x12, 4x6, 2x3: 126 cells
FUZZ = settings(max_examples=int(os.environ.get("EDGEPIPE_FUZZ_EXAMPLES", "60")), deadline=None)


def _meta(head: YuNetHead, input_hw: tuple[int, int] = INPUT_HW) -> ArtifactMeta:
    return ArtifactMeta("yunet_n.opencv_2023mar", Task.FACE_DETECTION, Precision.FP32,
                        InputSpec((3, *input_hw), color=Color.BGR, mean=(0, 0, 0), std=(1, 1, 1),
                                  resize=Resize.LETTERBOX), head)


def _blank(head: YuNetHead, input_hw: tuple[int, int] = INPUT_HW) -> list[np.ndarray]:
    """All-zero outputs with a batch axis of 1: no cell scores above 0."""
    return [np.zeros((1, *shape), np.float32) for shape in head.output_shapes(input_hw)]


def _plant(outputs: list[np.ndarray], head: YuNetHead, stride: int, row: int, col: int, cls: float, obj: float,
           bbox=(0.0, 0.0, 0.0, 0.0), kps=(0.0,) * 10) -> None:
    """Set one cell of the stride's grid (cols = W / stride) in place."""
    level, levels = head.strides.index(stride), len(head.strides)
    cell = row * (INPUT_HW[1] // stride) + col
    for kind, values in enumerate(([cls], [obj], bbox, kps)):
        outputs[kind * levels + level][0, cell] = values


def test_priors_are_top_left_corners_row_major_per_stride():
    corners, strides = yunet_priors((8, 16, 32), INPUT_HW)
    assert corners.shape == (96 + 24 + 6, 2) and strides.shape == (126,)
    assert corners[:2].tolist() == [[0, 0], [8, 0]] and corners[12].tolist() == [0, 8]  # 12 cols at stride 8
    assert corners[96].tolist() == [0, 0] and strides[96] == 16 and corners[97].tolist() == [16, 0]
    assert corners[-1].tolist() == [64, 32] and strides[-1] == 32  # row 1, col 2 of the 2x3 grid
    assert corners.max(0).tolist() == [88, 56]  # no half-cell offset: the last stride-8 corner is (11 * 8, 7 * 8)


def test_one_planted_face_decodes_as_opencv_does():
    head = YuNetHead()
    outputs = _blank(head)
    kps = (0.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.25, 1.0, 0.75, 1.25)
    _plant(outputs, head, 16, row=1, col=2, cls=0.81, obj=0.64, bbox=(0.25, 0.5, np.log(2.0), np.log(1.5)), kps=kps)
    faces = head.decode(outputs, _meta(head), InputMapping(), INPUT_HW)
    assert len(faces) == 1
    face = faces[0]
    assert face.score == pytest.approx(np.sqrt(0.81 * 0.64), abs=1e-6)  # 0.72: the geometric mean
    # centre ((2 + 0.25) * 16, (1 + 0.5) * 16) = (36, 24); size (2 * 16, 1.5 * 16) = (32, 24)
    np.testing.assert_allclose(face.box_xyxy, [20, 12, 52, 36], atol=1e-4)
    want = (np.array(kps).reshape(5, 2) + (2, 1)) * 16  # offsets in cells from the cell's corner
    np.testing.assert_allclose(face.keypoints_xy, want, atol=1e-4)
    assert face.keypoint_names == ("right_eye", "left_eye", "nose_tip", "mouth_right", "mouth_left")


def test_decode_yunet_clamps_probabilities_and_keeps_row_order():
    head = YuNetHead(score_thresh=0.5)
    outputs = _blank(head)
    _plant(outputs, head, 32, row=0, col=0, cls=1.2, obj=0.49)  # clamped: sqrt(1 * 0.49) = 0.7
    _plant(outputs, head, 8, row=7, col=11, cls=0.6, obj=0.6)
    cls, obj, bbox, kps = ([o[0] for o in outputs[k * 3:(k + 1) * 3]] for k in range(4))
    boxes, keypoints, scores = decode_yunet(cls, obj, bbox, kps, head, INPUT_HW)
    np.testing.assert_allclose(scores, [0.6, 0.7], atol=1e-6)  # stride 8 first, before NMS
    np.testing.assert_allclose(boxes, [[84, 52, 92, 60], [0 - 16, 0 - 16, 16, 16]], atol=1e-5)
    assert keypoints.shape == (2, 5, 2) and keypoints[0, 0].tolist() == [88, 56]


def test_nms_drops_the_weaker_duplicate_and_keeps_the_best_first():
    head = YuNetHead(score_thresh=0.5)
    outputs = _blank(head)
    _plant(outputs, head, 8, row=2, col=2, cls=0.7, obj=0.7, bbox=(0.5, 0.5, np.log(3), np.log(3)))
    _plant(outputs, head, 8, row=2, col=3, cls=0.9, obj=0.9, bbox=(0.0, 0.5, np.log(3), np.log(3)))  # 4 px right
    _plant(outputs, head, 32, row=1, col=2, cls=0.8, obj=0.8)  # far away
    faces = head.decode(outputs, _meta(head), InputMapping(), INPUT_HW)
    assert [round(f.score, 4) for f in faces] == [0.9, 0.8]
    np.testing.assert_allclose(faces[0].box_xyxy, [12, 8, 36, 32], atol=1e-4)
    no_nms = YuNetHead(score_thresh=0.5, nms_iou=1.0)
    assert len(no_nms.decode(outputs, _meta(no_nms), InputMapping(), INPUT_HW)) == 3


def test_score_thresh_override_and_top_k():
    head = YuNetHead(score_thresh=0.9)
    outputs = _blank(head)
    for col, score in enumerate((0.55, 0.75, 0.65)):
        _plant(outputs, head, 32, row=0, col=col, cls=score, obj=score)
    assert head.decode(outputs, _meta(head), InputMapping(), INPUT_HW) == []
    faces = head.decode(outputs, _meta(head), InputMapping(), INPUT_HW, score_thresh=0.6)
    assert [round(f.score, 4) for f in faces] == [0.75, 0.65]
    assert len(head.decode(outputs, _meta(head), InputMapping(), INPUT_HW, score_thresh=0.0)) == 126  # boxes 0x0
    top2 = YuNetHead(score_thresh=0.5, top_k=2)
    assert [round(f.score, 4) for f in top2.decode(outputs, _meta(top2), InputMapping(), INPUT_HW)] == [0.75, 0.65]
    with pytest.raises(SpecError, match="score_thresh"):
        head.decode(outputs, _meta(head), InputMapping(), INPUT_HW, score_thresh=1.5)


def test_faces_map_back_to_source_pixels():
    head = YuNetHead()
    outputs = _blank(head)
    _plant(outputs, head, 16, row=1, col=2, cls=0.9, obj=0.9, bbox=(0.5, 0.5, np.log(2), np.log(2)), kps=(1.0,) * 10)
    mapping = InputMapping(scale_xy=(0.5, 0.25), offset_xy=(4.0, 2.0))  # input = source * scale + offset
    face, = head.decode(outputs, _meta(head), mapping, (400, 300))
    # input box (24, 8, 56, 40) -> ((24 - 4) / 0.5, (8 - 2) / 0.25, (56 - 4) / 0.5, (40 - 2) / 0.25)
    np.testing.assert_allclose(face.box_xyxy, [40, 24, 104, 152], atol=1e-3)
    np.testing.assert_allclose(face.keypoints_xy, np.tile([(48 - 4) / 0.5, (32 - 2) / 0.25], (5, 1)), atol=1e-3)
    clipped, = head.decode(outputs, _meta(head), mapping, (100, 80))
    assert clipped.box_xyxy.tolist() == [40, 24, 80, 100]


@pytest.mark.parametrize("input_hw", [(64, 100), (48, 96), (0, 96)])
def test_input_sizes_off_the_largest_stride_are_refused(input_hw):
    head = YuNetHead()
    with pytest.raises(SpecError, match="multiples of 32"):
        head.output_shapes(input_hw)
    with pytest.raises(ArtifactError, match="multiples of 32"):
        head.decode(_blank(head), _meta(head, (max(input_hw[0], 1), input_hw[1])), InputMapping(), INPUT_HW)


def test_outputs_of_the_wrong_shape_are_refused():
    head = YuNetHead()
    outputs = _blank(head)
    outputs[9] = np.zeros((1, 96, 8), np.float32)  # kps_8 with 4 keypoints
    with pytest.raises(ArtifactError, match="output shapes"):
        head.decode(outputs, _meta(head), InputMapping(), INPUT_HW)


@pytest.mark.parametrize("kwargs, message", [
    ({"strides": ()}, "strides"), ({"nms_iou": 0.0}, "nms_iou"), ({"top_k": 0}, "top_k"),
    ({"score_thresh": -0.1}, "score_thresh"), ({"num_keypoints": 4}, "names"), ({"outputs": ("cls_8",)}, "4 outputs"),
])
def test_bad_head_parameters_are_refused(kwargs, message):
    with pytest.raises(SpecError, match=message):
        YuNetHead(**kwargs)


def test_the_contract_round_trips_through_heads():
    meta = _meta(YuNetHead(score_thresh=0.45, top_k=100))
    assert HEADS["yunet"] is YuNetHead and ArtifactMeta.from_json(meta.to_json()) == meta


@pytest.mark.parametrize("input_hw", [(64, 96), (160, 128)])
def test_output_shapes_match_the_pytorch_port(input_hw):
    head = YuNetHead()
    assert head.outputs == YUNET_OUTPUTS
    with torch.no_grad():
        outputs = YuNet().eval()(torch.zeros(2, 3, *input_hw))
    assert tuple(tuple(o.shape[1:]) for o in outputs) == head.output_shapes(input_hw)


_CELLS = 8 * 12 + 4 * 6 + 2 * 3


@FUZZ
@given(
    cls=arrays(np.float32, (_CELLS,), elements=st.floats(-0.5, 1.5, width=32)),
    obj=arrays(np.float32, (_CELLS,), elements=st.floats(-0.5, 1.5, width=32)),
    bbox=arrays(np.float32, (_CELLS, 4), elements=st.floats(-6, 6, width=32)),
    kps=arrays(np.float32, (_CELLS, 10), elements=st.floats(-20, 20, width=32)),
    score_thresh=st.floats(0, 1), nms_iou=st.floats(0.01, 1), top_k=st.integers(1, 40),
)
def test_any_outputs_decode_to_sane_faces(cls, obj, bbox, kps, score_thresh, nms_iou, top_k):
    head = YuNetHead(score_thresh=score_thresh, nms_iou=nms_iou, top_k=top_k)
    splits = np.cumsum([96, 24])
    outputs = [part[None] for array in (cls[:, None], obj[:, None], bbox, kps) for part in np.split(array, splits)]
    faces = head.decode(outputs, _meta(head), InputMapping(), INPUT_HW)
    scores = np.array([f.score for f in faces])
    assert len(faces) <= top_k
    assert np.all((scores >= score_thresh) & (scores <= 1)) and np.all(np.diff(scores) <= 0)
    for face in faces:
        x1, y1, x2, y2 = face.box_xyxy
        assert 0 <= x1 <= x2 <= INPUT_HW[1] and 0 <= y1 <= y2 <= INPUT_HW[0]
        assert face.keypoints_xy.shape == (5, 2) and np.isfinite(face.keypoints_xy).all()
