"""The zoo registry: one private dict name -> (ModelSpec, builder, converter). Public: `list_models`,
`get_spec`, `build`. Entries are added by `@register(spec, convert=...)` in `models/zoo/<family>.py`."""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from edgepipe.errors import SpecError, UnknownModelError
from edgepipe.specs import ModelSpec

__all__ = ["list_models", "get_spec", "build"]

Converter = Callable[[Path], dict[str, torch.Tensor]]  # source file -> state dict of the builder's module
Reclass = Callable[[dict[str, torch.Tensor], int], dict[str, torch.Tensor]]  # zoo state dict -> one for N classes


@dataclass(frozen=True)
class _Entry:
    spec: ModelSpec
    builder: Callable[..., nn.Module]  # (num_classes=...) too, where `reclass` is given
    convert: Converter | None
    reclass: Reclass | None


_REGISTRY: dict[str, _Entry] = {}


def register(spec: ModelSpec, *, convert: Converter | None = None, reclass: Reclass | None = None):
    """Decorator adding a zoo entry whose builder returns a randomly initialised module. `reclass` makes the entry
    trainable on other classes: the builder then takes `num_classes`, and `reclass` adapts the zoo weights (class
    rows re-initialised, everything class-agnostic kept)."""

    def decorator(builder: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        if spec.name in _REGISTRY:
            raise SpecError(f"model {spec.name!r} is registered twice")
        if (spec.weights is None) != (convert is None):
            raise SpecError(f"{spec.name}: a weight source needs a converter and vice versa")
        _REGISTRY[spec.name] = _Entry(spec, builder, convert, reclass)
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
          weights: Path | None = None, labels: tuple[str, ...] | None = None) -> nn.Module:
    """Build a zoo model in eval mode.

    Args:
        name: registry key, e.g. "dlib_resnet29.facerec".
        pretrained: load the converted source weights (fetched and cached on first use).
        cache_dir: cache root (default: `$EDGEPIPE_CACHE` or `~/.cache/edgepipe`).
        weights: a safetensors state dict or an `edgepipe train` checkpoint (whose labels size the head) to load
            instead of the zoo weights.
        labels: classes of a model to be trained: the head is re-sized to them and the zoo weights adapted.

    Returns:
        The module, in eval mode.

    Raises:
        UnknownModelError: unknown name. WeightImportError: weights cannot be fetched, verified or loaded.
        TrainError: a checkpoint is unreadable or of another model. SpecError: the model cannot change its classes.
    """
    from edgepipe.models.pretrained import load_pretrained, load_safetensors
    from edgepipe.models.training.checkpoint import is_checkpoint, read_checkpoint
    from edgepipe.models.weights.load import load_strict

    entry = _entry(name)
    state_dict, source = None, f"{name} weights"
    if weights is not None:
        if is_checkpoint(Path(weights)):
            checkpoint = read_checkpoint(weights, model=name)
            state_dict, labels = checkpoint.weights, checkpoint.labels
        else:
            state_dict = load_safetensors(Path(weights))
        source = str(weights)
    resized = labels is not None and tuple(labels) != entry.spec.labels
    if resized and entry.reclass is None:
        raise SpecError(f"{name} cannot be re-sized to other classes (it has no class head to re-train)")
    model = entry.builder(num_classes=len(labels)) if resized else entry.builder()
    if state_dict is None and pretrained and entry.convert is not None:
        state_dict = load_pretrained(entry.spec, entry.convert, cache_dir)
        if resized:
            state_dict = entry.reclass(state_dict, len(labels))
    if state_dict is not None:
        load_strict(model, state_dict, source=source)
    return model.eval()


def spec_of(name: str, weights: Path | None = None) -> ModelSpec:
    """The spec of a zoo model, with the labels of a training checkpoint when `weights` is one."""
    from edgepipe.models.training.checkpoint import is_checkpoint, read_checkpoint_meta

    spec = get_spec(name)
    if weights is not None and is_checkpoint(Path(weights)):
        spec = dataclasses.replace(spec, labels=tuple(read_checkpoint_meta(weights, model=name)["labels"]))
    return spec
