"""The contract an artifact carries inside its ONNX metadata: `InputSpec` and `ArtifactMeta` (whose head is one of
`heads.HEADS`).

Torch-free and dependency-free so a device can read a model file's contract with the runtime alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

from edgepipe.runtime.enums import Color, Layout, Precision, Resize, Task, check
from edgepipe.runtime.errors import ArtifactError, SpecError
from edgepipe.runtime.heads import HEADS, BlazeFaceHead, EmbeddingHead, GFLHead, Head, YuNetHead

# The enums and head classes are re-exported: the contract's vocabulary is read from here.
__all__ = ["InputSpec", "ArtifactMeta", "Task", "Layout", "Color", "Resize", "Precision", "BlazeFaceHead",
           "EmbeddingHead", "GFLHead", "YuNetHead", "Head"]

CONTRACT_VERSION = 1  # bump when a field changes meaning; the runtime refuses other versions
INTERPOLATIONS = ("auto", "linear", "area", "nearest", "cubic")
INPUT_DTYPES = ("float32", "uint8")


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
    dtype: str = "float32"  # of the input tensor; "uint8" takes raw pixels (mean 0, std 1), as some exports do
    size_multiple: int = 1  # Resize.PAD: the graph takes any H, W that are multiples of this, up to shape_chw's

    def __post_init__(self) -> None:
        check(len(self.shape_chw) == 3 and all(int(v) > 0 for v in self.shape_chw),
               f"InputSpec.shape_chw must be 3 positive ints, got {self.shape_chw!r}")
        check(self.shape_chw[0] == 3, f"InputSpec.shape_chw must have 3 channels, got {self.shape_chw[0]}")
        check(len(self.mean) == 3 and len(self.std) == 3, f"mean/std need 3 values, got {self.mean!r}/{self.std!r}")
        check(all(math.isfinite(v) for v in (*self.mean, *self.std, self.pad_value)),
              f"InputSpec.mean, std and pad_value must be finite, got {self.mean!r}/{self.std!r}/{self.pad_value!r}")
        check(all(s > 0 for s in self.std), f"InputSpec.std must be > 0, got {self.std!r}")
        check(self.dtype in INPUT_DTYPES, f"InputSpec.dtype must be one of {INPUT_DTYPES}, got {self.dtype!r}")
        check(self.dtype != "uint8" or (tuple(self.mean) == (0, 0, 0) and tuple(self.std) == (1, 1, 1)),
              f"a uint8 input takes raw pixels: mean (0, 0, 0) and std (1, 1, 1), got {self.mean!r}/{self.std!r}")
        check(self.size_multiple >= 1 and self.shape_chw[1] % self.size_multiple == 0
              and self.shape_chw[2] % self.size_multiple == 0,
              f"InputSpec.size_multiple must be >= 1 and divide the input size {self.shape_chw[1:]}, "
              f"got {self.size_multiple!r}")
        check(self.interpolation in INTERPOLATIONS,
               f"InputSpec.interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")

    @property
    def input_hw(self) -> tuple[int, int]:
        """The input size (with Resize.PAD: the largest; `prepare`'s mapping says what one image got)."""
        return int(self.shape_chw[1]), int(self.shape_chw[2])


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

    def __post_init__(self) -> None:
        check(self.task == self.head.task, f"task {self.task.value!r} does not match the {self.head.kind!r} head, "
              f"which does {self.head.task.value!r}")

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
            head_cls = HEADS.get(head_raw.get("kind"))
            if head_cls is None:
                raise ArtifactError(f"unknown head kind {head_raw.get('kind')!r}; expected one of {sorted(HEADS)}")
            raw["head"] = _from_plain(head_cls, head_raw)
            raw["input"] = _from_plain(InputSpec, raw["input"])
            return _from_plain(cls, raw)
        except ArtifactError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as e:  # Overflow: int(inf)
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
