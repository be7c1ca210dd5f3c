"""What every head provides (`Head`) and the int8 settings a head's family starts from (`QuantDefaults`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from edgepipe.runtime.enums import Resize, Task, check
from edgepipe.runtime.results import InputMapping

if TYPE_CHECKING:
    from edgepipe.runtime.specs import ArtifactMeta

__all__ = ["Head", "QuantDefaults", "check_box_head", "grid_cells"]


@dataclass(frozen=True)
class QuantDefaults:
    """A family's measured int8 static settings; `edgepipe quantize` starts from them (issue #5's tables)."""

    method: str  # calibration: "minmax", "entropy" or "percentile"
    per_channel: bool  # one weight scale per output channel
    # 7-bit weights: u8 x s8 products summed in pairs overflow int16 in the AVX2 kernels without VNNI, and per-channel
    # scales put every channel at the full +-127 (measured: dlib fused 0.44-0.89 points off vs 0.00-0.33 simulated).
    reduce_range: bool
    calib_size: int  # calibration inputs
    float_tail: float = 0.0  # share of the graph's nodes, counted back from the outputs, kept in float


class Head(Protocol):
    """An output head: a frozen dataclass of decoder parameters that an artifact's contract carries.

    `kind` names it in the contract; `outputs` are the graph outputs it reads, in order; `task` is what the model
    does; `resize` is the preprocessing it needs (None: any); `quant_defaults` is where int8 starts. A box detector
    also says how many classes its outputs hold (`classes_in(shapes)`), which `adopt` checks against the labels.
    """

    kind: str
    outputs: tuple[str, ...]
    task: ClassVar[Task]
    resize: ClassVar[Resize | None]
    quant_defaults: ClassVar[QuantDefaults]

    def output_shapes(self, input_hw: tuple[int, int], num_classes: int) -> tuple[tuple[int, ...], ...]:
        """The shape of each output for one image (no batch axis), in `outputs` order."""
        ...

    def decode(self, outputs: list[np.ndarray], meta: ArtifactMeta, mapping: InputMapping,
               image_hw: tuple[int, int], score_thresh: float | None = None, index: int = 0) -> Any:
        """Image `index` of a batch's raw outputs -> the runtime's results for it, in source-image pixels."""
        ...


def grid_cells(strides: tuple[int, ...], input_hw: tuple[int, int]) -> int:
    """Cells of every stride's grid over an input of this size (each side rounded up), summed."""
    return sum(-(-input_hw[0] // s) * -(-input_hw[1] // s) for s in strides)


def check_box_head(head) -> None:
    """What every single-output box head checks of itself: its thresholds, its cap, its one output (and its strides
    where it has them). Raises SpecError naming the field."""
    name = type(head).__name__
    strides = getattr(head, "strides", (1,))
    check(len(strides) > 0 and all(s > 0 for s in strides), f"{name}.strides must be positive ints, got {strides!r}")
    check(0.0 < getattr(head, "nms_iou", 1.0) <= 1.0, f"nms_iou must be in (0, 1], got {getattr(head, 'nms_iou', None)}")
    check(0.0 <= head.score_thresh <= 1.0, f"score_thresh must be in [0, 1], got {head.score_thresh}")
    check(head.max_per_image >= 1, f"max_per_image must be >= 1, got {head.max_per_image}")
    check(len(head.outputs) == 1, f"{name} reads one output, got {list(head.outputs)}")
