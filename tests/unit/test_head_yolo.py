"""The YOLO heads: decoding Ultralytics v8/11 (B, 4 + C, N) and YOLOv5 (B, N, 5 + C) layouts, and a graph with
Ultralytics' exact layout and known boxes, adopted and run end to end."""

import dataclasses
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepipe.adopt import AdoptOptions, adopt
from edgepipe.errors import ArtifactError, SpecError
from edgepipe.runtime import ObjectDetector
from edgepipe.runtime.heads import End2EndHead, YOLOv5Head, YOLOv8Head
from edgepipe.runtime.results import InputMapping
from edgepipe.runtime.specs import ArtifactMeta, InputSpec, Precision, Resize, Task

LABELS = ("person", "bicycle", "car")
N_64 = 8 * 8 + 4 * 4 + 2 * 2  # anchors of a 64x64 input at strides 8, 16, 32


def _rows(boxes_cxcywh_class_score) -> np.ndarray:
    """(4 + 3, N_64) rows: the given (cx, cy, w, h, class, score) at the first anchors, the rest empty."""
    rows = np.zeros((4 + len(LABELS), N_64), np.float32)
    for anchor, (cx, cy, w, h, cls, score) in enumerate(boxes_cxcywh_class_score):
        rows[:4, anchor] = cx, cy, w, h
        rows[4 + cls, anchor] = score
        rows[4 + (cls + 1) % len(LABELS), anchor] = score / 2  # a weaker second class: one label per box
    return rows


KNOWN = [(20, 20, 10, 10, 0, 0.9),  # person
         (20.5, 20.5, 10, 10, 0, 0.8),  # the same person again: suppressed (IoU 0.82 > 0.7)
         (21, 21, 10, 10, 2, 0.6),  # a car on it: another class, kept
         (50, 40, 8, 16, 1, 0.2)]  # below the default 0.25


def _meta(**input_changes):
    spec = InputSpec((3, 64, 64), resize=Resize.LETTERBOX_CENTER, mean=(0,) * 3, std=(255,) * 3, **input_changes)
    return ArtifactMeta("yolo.test", Task.DETECTION, Precision.FP32, spec, YOLOv8Head(), labels=LABELS)


def test_decode_keeps_one_label_per_box_and_nms_is_class_wise():
    found = YOLOv8Head().decode([_rows(KNOWN)[None]], _meta(), InputMapping(), (64, 64))
    assert [(d.label, round(d.score, 2)) for d in found] == [("person", 0.9), ("car", 0.6)]
    assert np.allclose(found[0].box_xyxy, [15, 15, 25, 25]) and np.allclose(found[1].box_xyxy, [16, 16, 26, 26])
    assert [d.label for d in YOLOv8Head().decode([_rows(KNOWN)[None]], _meta(), InputMapping(), (64, 64),
                                                 score_thresh=0.1)] == ["person", "car", "bicycle"]


def test_a_wrong_anchor_count_is_one_line():
    with pytest.raises(ArtifactError, match=r"is 7x83 per image; the yolov8 head expects \(4 \+ classes\)x84"):
        YOLOv8Head().decode([_rows(KNOWN)[None, :, :-1]], _meta(), InputMapping(), (64, 64))
    assert YOLOv8Head().output_shapes((640, 640), 80) == ((84, 8400),)


def _ultralytics_layout_graph(path, rows: np.ndarray):
    """images (1, 3, 64, 64) -> output0 (1, 7, 84): the known rows, plus 0 x the input's mean so the graph reads it."""
    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"]),
             helper.make_node("Add", ["rows", "z"], ["output0"])]
    graph = helper.make_graph(nodes, "yolo_layout", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                                  [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 7, N_64])],
                              [numpy_helper.from_array(rows[None], "rows"),
                               numpy_helper.from_array(np.array(0, np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def test_a_graph_with_the_ultralytics_layout_is_adopted_and_its_boxes_land_on_the_photo(tmp_path):
    source = _ultralytics_layout_graph(tmp_path / "yolo_layout.onnx", _rows(KNOWN))
    artifact = adopt(source, tmp_path / "out", AdoptOptions(
        head="yolov8", labels=LABELS, resize=Resize.LETTERBOX_CENTER, std=(255.0,) * 3, head_params={}))
    assert artifact.meta.head.outputs == ("output0",) and artifact.meta.input_name == "images"
    photo = np.zeros((64, 128, 3), np.uint8)  # 2:1, so the centred letterbox halves it and pads 16 px top/bottom
    found = ObjectDetector.from_path(artifact.onnx_path).detect(photo)
    assert [d.label for d in found] == ["person", "car"]
    # input (15, 15, 25, 25) -> source: (x / 0.5, (y - 16) / 0.5)
    assert np.allclose(found[0].box_xyxy, [30, 0, 50, 18], atol=1e-3)  # y clipped at the photo's top
    assert np.allclose(found[1].box_xyxy, [32, 0, 52, 20], atol=1e-3)


def test_adopting_a_yolo_layout_with_the_wrong_class_count_is_one_line(tmp_path):
    source = _ultralytics_layout_graph(tmp_path / "yolo_layout.onnx", _rows(KNOWN))
    with pytest.raises(ArtifactError, match=r"output 'output0' scores 3 classes, the labels name 2"):
        adopt(source, tmp_path / "out", AdoptOptions(head="yolov8", labels=("a", "b")))


def test_yolov5_scores_are_objectness_times_class_and_one_label_per_box():
    head = YOLOv5Head()
    n = head.anchors((64, 64))
    assert n == 3 * N_64 and head.output_shapes((640, 640), 80) == ((25200, 85),)
    rows = np.zeros((n, 5 + len(LABELS)), np.float32)
    rows[0] = [20, 20, 10, 10, 0.9, 1.0, 0.5, 0.0]  # person 0.9 (bicycle 0.45: not a second label)
    rows[1] = [20.5, 20.5, 10, 10, 0.8, 1.0, 0.0, 0.0]  # the same person, suppressed (IoU 0.82 > 0.45)
    rows[2] = [50, 40, 8, 16, 0.5, 0.0, 0.0, 0.4]  # car 0.2: below 0.25
    meta = dataclasses.replace(_meta(), head=head)
    found = head.decode([rows[None]], meta, InputMapping(), (64, 64))
    assert [(d.label, round(d.score, 2)) for d in found] == [("person", 0.9)]
    assert np.allclose(found[0].box_xyxy, [15, 15, 25, 25])
    assert [d.label for d in head.decode([rows[None]], meta, InputMapping(), (64, 64), score_thresh=0.1)] == [
        "person", "car"]
    with pytest.raises(ArtifactError, match=r"the yolov5 head expects 252x\(5 \+ classes\)"):
        head.decode([rows[None, :-1]], meta, InputMapping(), (64, 64))


def test_end2end_rows_are_thresholded_and_mapped_back_without_nms():
    head = End2EndHead(max_per_image=4)
    rows = np.array([[15, 15, 25, 25, 0.9, 0], [16, 16, 26, 26, 0.95, 0], [0, 0, 0, 0, 0.0, 0],
                     [40, 32, 48, 48, 0.3, 7]], np.float32)  # class 7: beyond the labels
    meta = dataclasses.replace(_meta(), head=head)
    mapping = InputMapping(scale_xy=(0.5, 0.5), offset_xy=(0.0, 16.0))
    found = head.decode([rows[None]], meta, mapping, (64, 128))
    assert [(d.label, round(d.score, 2)) for d in found] == [("person", 0.95), ("person", 0.9), ("7", 0.3)]
    assert np.allclose(found[0].box_xyxy, [32, 0, 52, 20]) and head.output_shapes((640, 640), 80) == ((4, 6),)
    with pytest.raises(ArtifactError, match="expects Kx6"):
        head.decode([rows[None, :, :5]], meta, mapping, (64, 128))


@pytest.mark.parametrize("head, fields, needle", [
    (YOLOv8Head, {"nms_iou": 0.0}, "nms_iou must be in (0, 1]"),
    (YOLOv8Head, {"strides": ()}, "YOLOv8Head.strides must be positive ints"),
    (YOLOv5Head, {"anchors_per_cell": 0}, "anchors_per_cell must be >= 1"),
    (End2EndHead, {"max_per_image": 0}, "max_per_image must be >= 1"),
    (End2EndHead, {"outputs": ("a", "b")}, "End2EndHead reads one output"),
    (YOLOv5Head, {"score_thresh": 1.5}, "score_thresh must be in [0, 1]"),
])
def test_box_heads_refuse_bad_fields(head, fields, needle):
    with pytest.raises(SpecError, match=re.escape(needle)):
        head(**fields)
