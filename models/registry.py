"""The zoo registry: one private dict name -> (ModelSpec, builder, converter). Public: `list_models`,
`get_spec`, `build`. Entries are added by `@register(spec, convert=...)` in `models/zoo/<family>.py`."""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from pipeline.errors import SpecError, UnknownModelError
from pipeline.specs import ModelSpec

__all__ = ["list_models", "get_spec", "build"]

Converter = Callable[[Path], dict[str, torch.Tensor]]  # source file -> state dict of the builder's module


@dataclass(frozen=True)
class _Entry:
    spec: ModelSpec
    builder: Callable[[], nn.Module]
    convert: Converter | None


_REGISTRY: dict[str, _Entry] = {}


def register(spec: ModelSpec, *, convert: Converter | None = None):
    """Decorator adding a zoo entry whose builder returns a randomly initialised module."""

    def decorator(builder: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        if spec.name in _REGISTRY:
            raise SpecError(f"model {spec.name!r} is registered twice")
        if (spec.weights is None) != (convert is None):
            raise SpecError(f"{spec.name}: a weight source needs a converter and vice versa")
        _REGISTRY[spec.name] = _Entry(spec, builder, convert)
        return builder

    return decorator


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, sorted."""
    return sorted(name for name in _REGISTRY if fnmatch.fnmatchcase(name, pattern))


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(_REGISTRY))}"
        raise UnknownModelError(f"unknown model {name!r}{hint}")
    return _REGISTRY[name]


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model; raises UnknownModelError with a suggestion."""
    return _entry(name).spec


def build(name: str, pretrained: bool = True, *, cache_dir: Path | None = None,
          weights: Path | None = None) -> nn.Module:
    """Build a zoo model in eval mode.

    Args:
        name: registry key, e.g. "dlib_resnet29.facerec".
        pretrained: load the converted source weights (fetched and cached on first use).
        cache_dir: cache root (default: `$EDGEPIPE_CACHE` or `~/.cache/edgepipe`).
        weights: a safetensors state dict to load instead of the zoo weights.

    Returns:
        The module, in eval mode.

    Raises:
        UnknownModelError: unknown name. WeightImportError: weights cannot be fetched, verified or loaded.
    """
    from models.pretrained import load_pretrained, load_safetensors
    from models.weights.load import load_strict

    entry = _entry(name)
    model = entry.builder()
    if weights is not None:
        load_strict(model, load_safetensors(Path(weights)), source=str(weights))
    elif pretrained and entry.convert is not None:
        state_dict = load_pretrained(entry.spec, entry.convert, cache_dir)
        load_strict(model, state_dict, source=f"{name} weights")
    return model.eval()
