"""The box-detection recipe for `fit`: a GFL-head detector (NanoDet-g) on a `BoxSet`, with NanoDet's
augmentation and loss. Another detector family brings its own loss and keeps the rest."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import nn

from edgepipe.models.training.data import BoxAugment, BoxSet
from edgepipe.models.training.gfl import GFLLoss
from edgepipe.specs import ModelSpec

__all__ = ["DetectionRecipe"]

Batch = tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]  # (B, C, H, W), per image (boxes, classes)


class DetectionRecipe:
    """Batches of augmented images with their boxes, and the GFL loss of the model's raw outputs.

    The model must have `forward_raw(x) -> (class logits (B, N, C), distributions (B, N, 4 * (reg_max + 1)))`
    laid out as `spec.head` says, and keep its feature extractor under `backbone`.
    """

    backbone_prefixes = ("backbone.",)

    def __init__(self, model: nn.Module, spec: ModelSpec, data: BoxSet, augment: BoxAugment = BoxAugment()):
        if spec.head.kind != "gfl":
            raise TypeError(f"DetectionRecipe needs a GFL head, got {spec.head.kind!r}")
        self.model, self.spec, self.data, self.augment = model, spec, data, augment
        self.loss_fn = GFLLoss(spec.head, spec.input.input_hw)

    def n_batches(self, batch_size: int) -> int:
        return -(-len(self.data.samples) // batch_size)

    def batches(self, rng: np.random.Generator, batch_size: int) -> Iterator[Batch]:
        order = rng.permutation(len(self.data.samples))
        for start in range(0, len(order), batch_size):
            inputs, targets = [], []
            for index in order[start:start + batch_size]:
                pixels, boxes, classes = self.augment(self.data.samples[index], self.spec.input, rng)
                inputs.append(pixels)
                targets.append((torch.from_numpy(boxes), torch.from_numpy(classes)))
            yield torch.from_numpy(np.stack(inputs)), targets

    def loss(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        inputs, targets = batch
        logits, distributions = model.forward_raw(inputs)
        return self.loss_fn(logits, distributions, targets)
