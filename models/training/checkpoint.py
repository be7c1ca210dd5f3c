"""Training checkpoints as one safetensors file: `save_checkpoint(path, ...)` and `read_checkpoint(path)`.

The plain keys are the deployable state dict (the EMA weights when EMA is on), so `build(name, weights=CKPT)` and
`edgepipe export --weights CKPT` read a checkpoint like any state dict. Keys under `train.` hold what resuming needs
(the raw weights, the optimizer's tensors, the torch RNG); the metadata key `edgepipe` holds JSON: the model name,
the labels, the settings, the epoch and step, the history, the numpy RNG and the optimizer's hyper-parameters.
No pickle anywhere: a checkpoint cannot run code when read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from edgepipe.runtime.atomic import atomic_write
from edgepipe.runtime.errors import TrainError

__all__ = ["save_checkpoint", "read_checkpoint", "Checkpoint"]

FORMAT = "edgepipe.checkpoint/1"
METADATA_KEY = "edgepipe"
TRAIN_PREFIX = "train."


@dataclass(frozen=True, eq=False)
class Checkpoint:
    path: Path
    meta: dict  # model, labels, settings, epoch, step, history, best, numpy_rng, optimizer
    weights: dict[str, torch.Tensor]  # the deployable state dict
    raw_weights: dict[str, torch.Tensor]  # the weights being optimised (== weights without EMA)
    optimizer_tensors: dict[str, torch.Tensor]  # "<param index>.<state name>" -> tensor
    torch_rng: torch.Tensor | None

    @property
    def model(self) -> str:
        return self.meta["model"]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.meta["labels"])


def save_checkpoint(path: Path, meta: dict, weights: dict[str, torch.Tensor], *,
                    raw_weights: dict[str, torch.Tensor] | None = None,
                    optimizer_state: dict | None = None, torch_rng: torch.Tensor | None = None) -> Path:
    """Write a checkpoint atomically (a temporary sibling renamed into place: an interrupted save leaves the old
    file). `meta` needs "model" and "labels"; `optimizer_state` is `optimizer.state_dict()`."""
    tensors = {k: v.detach().contiguous() for k, v in weights.items()}
    if raw_weights is not None:
        tensors.update({f"{TRAIN_PREFIX}model.{k}": v.detach().contiguous() for k, v in raw_weights.items()})
    meta = {"format": FORMAT, **meta}
    if optimizer_state is not None:
        for index, state in optimizer_state["state"].items():
            for name, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{TRAIN_PREFIX}optim.{index}.{name}"] = value.detach().contiguous()
        meta["optimizer"] = {"param_groups": optimizer_state["param_groups"]}
    if torch_rng is not None:
        tensors[f"{TRAIN_PREFIX}rng.torch"] = torch_rng
    return atomic_write(path, save(tensors, metadata={METADATA_KEY: json.dumps(meta)}))


def read_checkpoint(path: str | Path, *, model: str | None = None) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`.

    Args:
        path: the .safetensors file.
        model: the zoo name it must have been trained from, if any.

    Raises:
        TrainError: the file is missing, truncated or not safetensors, has no edgepipe checkpoint metadata, or
            was trained from another model.
    """
    path = Path(path)
    meta = read_checkpoint_meta(path, model=model)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, SafetensorError, ValueError, RuntimeError) as e:
        raise _unreadable(path, e) from e
    weights = {k: v for k, v in tensors.items() if not k.startswith(TRAIN_PREFIX)}
    raw = {k[len(TRAIN_PREFIX) + 6:]: v for k, v in tensors.items() if k.startswith(f"{TRAIN_PREFIX}model.")}
    optim = {k[len(TRAIN_PREFIX) + 6:]: v for k, v in tensors.items() if k.startswith(f"{TRAIN_PREFIX}optim.")}
    return Checkpoint(path, meta, weights, raw or weights, optim, tensors.get(f"{TRAIN_PREFIX}rng.torch"))


def read_checkpoint_meta(path: str | Path, *, model: str | None = None) -> dict:
    """The metadata of a checkpoint (model, labels, settings, ...) from its header alone, checked as
    `read_checkpoint` checks it; the tensors are not read (nor checked for truncation)."""
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"{path}: no such checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (OSError, SafetensorError, ValueError, RuntimeError) as e:
        raise _unreadable(path, e) from e
    try:
        meta = json.loads(header[METADATA_KEY])
        if meta.get("format") != FORMAT:
            raise KeyError("format")
        meta["model"], meta["labels"]  # noqa: B018  (both must be present)
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise TrainError(f"{path}: not an edgepipe training checkpoint (no {FORMAT!r} metadata)") from e
    if model is not None and meta["model"] != model:
        raise TrainError(f"{path}: a checkpoint of {meta['model']!r}, not of {model!r}")
    return meta


def _unreadable(path: Path, error: Exception) -> TrainError:
    return TrainError(f"{path}: not a readable safetensors checkpoint (truncated or another format): "
                      f"{str(error).splitlines()[0][:160]}")


def optimizer_state(checkpoint: Checkpoint) -> dict:
    """The `optimizer.load_state_dict` argument saved in a checkpoint."""
    state: dict[int, dict] = {}
    for key, tensor in checkpoint.optimizer_tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor
    return {"state": state, "param_groups": checkpoint.meta["optimizer"]["param_groups"]}


def is_checkpoint(path: Path) -> bool:
    """Whether a safetensors file carries edgepipe checkpoint metadata (cheap: reads the header only)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return METADATA_KEY in (f.metadata() or {})
    except (OSError, SafetensorError, ValueError, RuntimeError):
        return False
