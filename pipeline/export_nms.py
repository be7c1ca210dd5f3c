"""Detection post-processing inside the ONNX graph (`edgepipe export --nms-in-graph`): the GFL decode as torch
ops, then ONNX NonMaxSuppression appended to the exported graph: `with_nms(proto, head) -> proto`."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgepipe.models.zoo.nanodet import gfl_boxes
from edgepipe.runtime.heads.gfl import gfl_centres
from edgepipe.runtime.specs import GFLHead

__all__ = ["GFLDecoded", "with_nms"]

NMS_OUTPUTS = ("selected", "boxes", "box_scores")  # (K, 3) [batch, class, anchor], (K, 4) xyxy, (K,)
_DENSE_OUTPUTS = ("all_boxes", "all_scores")


class GFLDecoded(nn.Module):
    """Wraps a dense GFL detector so it returns (boxes (B, N, 4) xyxy in input px, scores (B, N, C)).

    The boxes are `models.zoo.nanodet.gfl_boxes`, the runtime's decode in torch ops, so it exports.
    """

    def __init__(self, model: nn.Module, head: GFLHead, input_hw: tuple[int, int]):
        super().__init__()
        self.model = model
        centres, strides = gfl_centres(head, input_hw)
        self.register_buffer("centres", torch.from_numpy(centres))  # (N, 2)
        self.register_buffer("strides", torch.from_numpy(strides))  # (N,)
        self.register_buffer("bins", torch.arange(head.reg_max + 1, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores, distributions = self.model(x)  # (B, N, C), (B, N, 4 * (R + 1))
        return gfl_boxes(distributions, self.centres, self.strides, self.bins), scores


def with_nms(proto: onnx.ModelProto, head: GFLHead, score_floor: float) -> onnx.ModelProto:
    """Append class-wise ONNX NonMaxSuppression to a graph whose outputs are `_DENSE_OUTPUTS`.

    Args:
        proto: the exported `GFLDecoded` graph (dynamic batch).
        head: IoU threshold and the per-class cap.
        score_floor: the lowest score the graph keeps; callers filter higher in numpy.

    Returns:
        The graph with outputs `NMS_OUTPUTS`.
    """
    graph = proto.graph
    boxes, scores = (o.name for o in graph.output)
    graph.initializer.extend([
        numpy_helper.from_array(np.array([head.max_per_image], np.int64), "nms_max_per_class"),
        numpy_helper.from_array(np.array([head.nms_iou], np.float32), "nms_iou"),
        numpy_helper.from_array(np.array([score_floor], np.float32), "nms_score_floor"),
        numpy_helper.from_array(np.array([0, 2], np.int64), "nms_batch_anchor_cols"),
    ])
    graph.node.extend([
        helper.make_node("Transpose", [scores], ["nms_scores_bcn"], perm=[0, 2, 1]),  # (B, C, N) as NMS wants
        # IoU is symmetric in x and y, so xyxy boxes work with the default [y1, x1, y2, x2] layout.
        helper.make_node("NonMaxSuppression", [boxes, "nms_scores_bcn", "nms_max_per_class", "nms_iou",
                                               "nms_score_floor"], [NMS_OUTPUTS[0]], center_point_box=0),
        helper.make_node("Gather", [NMS_OUTPUTS[0], "nms_batch_anchor_cols"], ["nms_batch_anchor"], axis=1),
        helper.make_node("GatherND", [boxes, "nms_batch_anchor"], [NMS_OUTPUTS[1]]),
        helper.make_node("GatherND", ["nms_scores_bcn", NMS_OUTPUTS[0]], [NMS_OUTPUTS[2]]),
    ])
    del graph.output[:]
    graph.output.extend([
        helper.make_tensor_value_info(NMS_OUTPUTS[0], TensorProto.INT64, ["detections", 3]),
        helper.make_tensor_value_info(NMS_OUTPUTS[1], TensorProto.FLOAT, ["detections", 4]),
        helper.make_tensor_value_info(NMS_OUTPUTS[2], TensorProto.FLOAT, ["detections"]),
    ])
    return proto
