"""The closed choices of the contract (task, layout, colour order, resize, precision) and `check`, the one-line
validation the specs and heads share. Imports nothing of edgepipe but its errors, so heads and specs can both use it."""

from __future__ import annotations

from enum import Enum

from edgepipe.runtime.errors import SpecError

__all__ = ["Task", "Layout", "Color", "Resize", "Precision", "check"]


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
    LETTERBOX_CENTER = "letterbox_center"  # keep aspect ratio, scale to fit, pad both sides equally (the YOLO family)
    STRETCH = "stretch"  # resize each axis independently to the input size
    ALIGNED_CHIP = "aligned_chip"  # input is a face chip warped from landmarks (see EmbeddingHead)
    # keep the image's own size (shrunk to fit the input size if larger), pad right/bottom to a multiple of
    # InputSpec.size_multiple: the graph takes any such size (YuNet, as OpenCV feeds it)
    PAD = "pad"


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    INT8_DYNAMIC = "int8-dynamic"


def check(cond: bool, message: str) -> None:
    if not cond:
        raise SpecError(message)
