"""Strict state-dict loading that names what does not fit: `load_strict(model, state_dict)`."""

from __future__ import annotations

import torch
from torch import nn

from edgepipe.errors import WeightImportError

__all__ = ["load_strict"]


def load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str = "weights") -> nn.Module:
    """Load `state_dict` into `model`, refusing any missing, unexpected or mis-shaped key.

    Args:
        model: the module to fill.
        state_dict: tensors keyed like `model.state_dict()`.
        source: what the tensors came from, quoted in the error.

    Returns:
        The same module, loaded.

    Raises:
        WeightImportError: naming the counts, the first 3 missing/unexpected keys and the first shape mismatch.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        (k, tuple(state_dict[k].shape), tuple(v.shape))
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {unexpected[:3]})")
        if mismatched:
            key, found, want = mismatched[0]
            parts.append(f"{len(mismatched)} mis-shaped (first: {key!r} is {found}, expected {want})")
        raise WeightImportError(f"cannot load {source} into {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)
    return model
