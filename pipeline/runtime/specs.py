"""The contract an artifact carries inside its ONNX metadata: `InputSpec`, the head specs and `ArtifactMeta`.

Torch-free and dependency-free so a device can read a model file's contract with the runtime alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any, Union

from edgepipe.runtime.errors import ArtifactError, SpecError

__all__ = ["InputSpec", "ArtifactMeta"]

CONTRACT_VERSION = 1  # bump when a field changes meaning; the runtime refuses other versions
INTERPOLATIONS = ("auto", "linear", "area", "nearest", "cubic")


class Task(str, Enum):
    FACE_DETECTION = "face_detection"
    FACE_EMBEDDING = "face_embedding"
    DETECTION = "detection"


class Layout(str, Enum):
    NCHW = "NCHW"
    NHWC = "NHWC"


class Color(str, Enum):
    RGB = "RGB"
    BGR = "BGR"


class Resize(str, Enum):
    LETTERBOX = "letterbox"  # keep aspect ratio, scale to fit, pad right/bottom
    STRETCH = "stretch"  # resize each axis independently to the input size
    ALIGNED_CHIP = "aligned_chip"  # input is a face chip warped from landmarks (see EmbeddingHead)


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    INT8_DYNAMIC = "int8-dynamic"


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise SpecError(message)


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes the model's input tensor."""

    shape_chw: tuple[int, int, int]  # e.g. (3, 150, 150)
    layout: Layout = Layout.NCHW  # layout of the ONNX input tensor
    color: Color = Color.RGB  # channel order the network expects
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)  # subtracted, 0-255 pixel scale, in `color` order
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)  # divided after the mean
    resize: Resize = Resize.LETTERBOX
    pad_value: float = 0.0  # 0-255 value of letterbox padding, before normalisation
    # opencv interpolation of the resize: "auto" is area averaging when shrinking and bilinear when enlarging
    interpolation: str = "auto"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        _check(len(self.shape_chw) == 3 and all(int(v) > 0 for v in self.shape_chw),
               f"InputSpec.shape_chw must be 3 positive ints, got {self.shape_chw!r}")
        _check(self.shape_chw[0] == 3, f"InputSpec.shape_chw must have 3 channels, got {self.shape_chw[0]}")
        _check(len(self.mean) == 3 and len(self.std) == 3, f"mean/std need 3 values, got {self.mean!r}/{self.std!r}")
        _check(all(s > 0 for s in self.std), f"InputSpec.std must be > 0, got {self.std!r}")
        _check(self.dtype == "float32", f"InputSpec.dtype must be 'float32', got {self.dtype!r}")
        _check(self.interpolation in INTERPOLATIONS,
               f"InputSpec.interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")

    @property
    def input_hw(self) -> tuple[int, int]:
        return int(self.shape_chw[1]), int(self.shape_chw[2])


@dataclass(frozen=True)
class BlazeFaceHead:
    """SSD-style anchors with a score and 4 box + 2*K keypoint regressors per anchor (MediaPipe BlazeFace)."""

    strides: tuple[int, ...]  # one entry per anchor layer, e.g. (8, 16, 16, 16)
    anchors_per_location: int = 2  # per layer; layers with equal strides stack on one grid
    anchor_offset: float = 0.5  # anchor centre within its cell
    regressor_scale: float = 128.0  # regressors are in input pixels: divide by this to get [0, 1] units
    num_keypoints: int = 6
    keypoint_names: tuple[str, ...] = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")
    score_thresh: float = 0.5  # after sigmoid
    nms_iou: float = 0.3
    score_clip: float = 100.0  # logits are clipped to +-this before the sigmoid, as MediaPipe does
    # Keypoints for alignment are re-measured in a square crop this many face-box widths wide, where the face fills
    # the input at the scale the keypoints are most stable (0 disables the second pass).
    refine_crop_scale: float = 4.0
    outputs: tuple[str, str] = ("scores", "regressors")  # (B, A, 1) logits, (B, A, 4 + 2K)
    kind: str = "blazeface"

    def __post_init__(self) -> None:
        _check(len(self.strides) > 0, "BlazeFaceHead.strides must not be empty")
        _check(0.0 < self.nms_iou <= 1.0, f"nms_iou must be in (0, 1], got {self.nms_iou}")
        _check(len(self.keypoint_names) == self.num_keypoints,
               f"{self.num_keypoints} keypoints but {len(self.keypoint_names)} names")


@dataclass(frozen=True)
class EmbeddingHead:
    """A face embedder fed with aligned chips; faces match when their distance is below `match_thresh`."""

    dim: int = 128
    metric: str = "euclidean"  # or "cosine"
    match_thresh: float = 0.6
    chip_size: int = 150
    # Where the detector's keypoints land in the chip, in chip pixels: name -> (x, y). A similarity transform
    # is fitted from the detected keypoints with these names to these positions.
    template: tuple[tuple[str, float, float], ...] = ()
    outputs: tuple[str] = ("embedding",)
    kind: str = "embedding"

    def __post_init__(self) -> None:
        _check(self.metric in ("euclidean", "cosine"), f"metric must be 'euclidean' or 'cosine', got {self.metric!r}")
        _check(self.dim > 0 and self.chip_size > 0, f"dim and chip_size must be > 0, got {self.dim}, {self.chip_size}")
        _check(len(self.template) == 0 or len(self.template) >= 2, "template needs >= 2 points to fit a transform")


@dataclass(frozen=True)
class GFLHead:
    """NanoDet/GFL dense head: per cell, class scores (after sigmoid) and 4 side distances as distributions over
    `reg_max + 1` bins, measured from the cell centre in units of the stride."""

    strides: tuple[int, ...] = (8, 16, 32)  # one grid per stride, rows ordered by stride then row-major
    reg_max: int = 10  # bins 0..reg_max
    cell_offset: float = 0.5  # distances start at ((col + offset) * stride, (row + offset) * stride)
    score_thresh: float = 0.35  # what apps show; evaluation passes 0.05
    nms_iou: float = 0.6  # class-wise
    max_per_image: int = 100
    # "dense": outputs are (scores (B, N, C), distributions (B, N, 4 * (reg_max + 1))), decoded and NMS-ed in numpy.
    # "nms": the graph decodes and runs ONNX NonMaxSuppression; outputs are (selected (K, 3) as [batch, class,
    # anchor], boxes (K, 4) xyxy in input pixels, scores (K,)), and only the per-image cap is left to numpy.
    mode: str = "dense"
    graph_score_floor: float = 0.05  # "nms" mode: the lowest score the graph keeps (lower thresholds cannot apply)
    outputs: tuple[str, ...] = ("scores", "distributions")
    kind: str = "gfl"

    def __post_init__(self) -> None:
        _check(self.mode in ("dense", "nms"), f"GFLHead.mode must be 'dense' or 'nms', got {self.mode!r}")
        _check(self.reg_max > 0 and len(self.strides) > 0, f"bad GFL head: reg_max={self.reg_max}, strides={self.strides}")
        _check(0.0 < self.nms_iou <= 1.0, f"nms_iou must be in (0, 1], got {self.nms_iou}")


Head = Union[BlazeFaceHead, EmbeddingHead, GFLHead]
_HEADS = {"blazeface": BlazeFaceHead, "embedding": EmbeddingHead, "gfl": GFLHead}


@dataclass(frozen=True)
class ArtifactMeta:
    """Everything the runtime needs to use an ONNX file, plus where it came from."""

    model_name: str  # zoo key, e.g. "dlib_resnet29.facerec"
    task: Task
    precision: Precision
    input: InputSpec
    head: Head
    labels: tuple[str, ...] = ()
    input_name: str = "x"
    opset: int = 17
    edgepipe_version: str = ""
    spec_sha: str = ""  # sha256 of the ModelSpec JSON the artifact was built from
    source_package: str = ""  # e.g. "pypi:face-recognition-models==0.3.0"
    source_file: str = ""
    source_sha256: str = ""
    license: str = ""
    contract_version: int = CONTRACT_VERSION

    def to_json(self) -> str:
        return json.dumps(_to_plain(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ArtifactMeta":
        """Parse and validate; raises ArtifactError on anything malformed."""
        try:
            raw = json.loads(text)
            version = raw.get("contract_version")
            if version != CONTRACT_VERSION:
                raise ArtifactError(f"artifact contract version {version!r} is not supported; expected {CONTRACT_VERSION}")
            head_raw = dict(raw["head"])
            head_cls = _HEADS.get(head_raw.get("kind"))
            if head_cls is None:
                raise ArtifactError(f"unknown head kind {head_raw.get('kind')!r}; expected one of {sorted(_HEADS)}")
            raw["head"] = _from_plain(head_cls, head_raw)
            raw["input"] = _from_plain(InputSpec, raw["input"])
            return _from_plain(cls, raw)
        except ArtifactError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ArtifactError(f"malformed edgepipe metadata: {e}") from e


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    return value


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list) else value


def _from_plain(cls: type, raw: dict) -> Any:
    """Build a frozen dataclass from JSON-plain values, converting lists to tuples and strings to enums."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(raw) - set(names)
    if unknown:
        raise SpecError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    kwargs = {}
    for key, value in raw.items():
        enum_cls = _ENUM_FIELDS.get((cls.__name__, key))
        kwargs[key] = enum_cls(value) if enum_cls else _to_tuple(value)
    return cls(**kwargs)


_ENUM_FIELDS = {
    ("InputSpec", "layout"): Layout,
    ("InputSpec", "color"): Color,
    ("InputSpec", "resize"): Resize,
    ("ArtifactMeta", "task"): Task,
    ("ArtifactMeta", "precision"): Precision,
}
