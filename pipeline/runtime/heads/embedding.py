"""Face embedding head: one vector per aligned face chip. `EmbeddingHead.decode` returns an image's embedding;
the chip template says where the detector's keypoints go (see `runtime.faces.face_chip`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from edgepipe.runtime.enums import Resize, Task, check
from edgepipe.runtime.heads.base import QuantDefaults
from edgepipe.runtime.results import InputMapping

if TYPE_CHECKING:
    from edgepipe.runtime.specs import ArtifactMeta

__all__ = ["EmbeddingHead"]


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

    task: ClassVar[Task] = Task.FACE_EMBEDDING
    resize: ClassVar[Resize | None] = Resize.ALIGNED_CHIP  # the input is a chip warped from the face's keypoints
    # MinMax, per-channel 7-bit, 64 chips: accuracy drop -0.11 over seeds 0-2 (8-bit: 0.89; 32 chips: 0.11)
    quant_defaults: ClassVar[QuantDefaults] = QuantDefaults("minmax", per_channel=True, reduce_range=True,
                                                            calib_size=64)

    def __post_init__(self) -> None:
        check(self.metric in ("euclidean", "cosine"), f"metric must be 'euclidean' or 'cosine', got {self.metric!r}")
        check(self.dim > 0 and self.chip_size > 0, f"dim and chip_size must be > 0, got {self.dim}, {self.chip_size}")
        check(len(self.template) == 0 or len(self.template) >= 2, "template needs >= 2 points to fit a transform")

    def output_shapes(self, input_hw: tuple[int, int], num_classes: int = 0) -> tuple[tuple[int, ...], ...]:
        """One (dim,) vector per chip."""
        return ((self.dim,),)

    def decode(self, outputs: list[np.ndarray], meta: ArtifactMeta, mapping: InputMapping | None = None,
               image_hw: tuple[int, int] | None = None, score_thresh: float | None = None,
               index: int = 0) -> np.ndarray:
        """Chip `index`'s embedding, (D,) float32, as the network gives it (distances use `metric`)."""
        return outputs[0][index].astype(np.float32)
