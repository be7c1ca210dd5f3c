"""A generic training loop: `fit(recipe, options, out_dir, ...) -> FitResult`.

The loop knows nothing of detection: a `Recipe` brings the model, its batches and its loss, and a validation
callable scores a model. The loop owns the optimizer (AdamW or SGD), the warm-up + cosine schedule, the EMA of
the weights, gradient clipping, progress, validation each epoch, and the checkpoints: `last.safetensors` (all
that resuming needs) and `best.safetensors` (deployable weights), both written atomically at the end of an epoch,
so Ctrl-C or a crash leaves the last complete epoch intact. Runs are deterministic on CPU for a given seed, and
`--resume` continues bit for bit (weights, optimizer, schedule step, EMA, both RNGs).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from edgepipe.models.training.checkpoint import optimizer_state, read_checkpoint, read_checkpoint_meta, save_checkpoint
from edgepipe.runtime.errors import TrainError

__all__ = ["fit", "TrainOptions", "Recipe"]

OPTIMIZERS = ("adamw", "sgd")
LAST, BEST = "last.safetensors", "best.safetensors"


@dataclass(frozen=True)
class TrainOptions:
    epochs: int
    batch_size: int = 8
    lr: float = 1e-3  # peak learning rate, after warm-up
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    momentum: float = 0.9  # SGD only
    warmup_steps: int = 30  # linear from warmup_ratio * lr
    warmup_ratio: float = 0.1
    min_lr_ratio: float = 0.05  # the cosine ends at this share of lr
    ema_decay: float = 0.998  # 0 turns the EMA off; the effective decay ramps up over the first steps
    grad_clip: float = 35.0  # max gradient norm (NanoDet's setting)
    freeze_backbone: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise TrainError(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise TrainError(f"batch size must be an integer >= 1, got {self.batch_size!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TrainError(f"lr must be a positive number, got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise TrainError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not 0 <= self.ema_decay < 1:
            raise TrainError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")


class Recipe(Protocol):
    """What the loop needs from a training recipe."""

    model: nn.Module
    backbone_prefixes: tuple[str, ...]  # parameter names frozen by --freeze-backbone

    def n_batches(self, batch_size: int) -> int: ...

    def batches(self, rng: np.random.Generator, batch_size: int) -> Iterator: ...  # one epoch, in rng's order

    def loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]: ...  # "loss" plus named parts


@dataclass(frozen=True)
class FitResult:
    last: Path
    best: Path
    history: list[dict]
    best_epoch: int
    best_metric: float


def learning_rate(options: TrainOptions, step: int, total_steps: int) -> float:
    """Linear warm-up, then a half cosine down to `min_lr_ratio * lr`."""
    if step < options.warmup_steps:
        return options.lr * (options.warmup_ratio + (1 - options.warmup_ratio) * step / options.warmup_steps)
    progress = (step - options.warmup_steps) / max(total_steps - options.warmup_steps, 1)
    low = options.lr * options.min_lr_ratio
    return low + (options.lr - low) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def fit(recipe: Recipe, options: TrainOptions, out_dir: str | Path, *, meta: dict,
        validate: Callable[[nn.Module], dict], metric: str, resume: str | Path | None = None,
        progress: bool = True) -> FitResult:
    """Train `recipe.model` and keep the best and last checkpoints in `out_dir`.

    Args:
        recipe: model, batches and loss.
        options: the settings (a resumed run keeps the checkpoint's, except `epochs`).
        out_dir: where `last.safetensors` and `best.safetensors` go.
        meta: what the checkpoints must carry: at least "model" (zoo name) and "labels".
        validate: model (eval mode) -> metrics dict; run after every epoch.
        metric: the key of `validate`'s result that picks the best epoch (higher is better).
        resume: a `last.safetensors` to continue from.
        progress: show a bar per epoch on stderr.

    Returns:
        The checkpoint paths, the per-epoch history, and the best epoch and its metric.

    Raises:
        TrainError: a bad checkpoint (another model, other labels, truncated), or the loss is not finite.
    """
    out_dir = Path(out_dir)
    model = recipe.model
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    _freeze(model, recipe.backbone_prefixes if options.freeze_backbone else ())
    optimizer = _optimizer(model, options)
    ema = copy.deepcopy(model).eval().requires_grad_(False) if options.ema_decay > 0 else None
    epoch, step, history, best = 0, 0, [], {"epoch": 0, "metric": -math.inf}
    if resume is not None:
        epoch, step, history, best = _resume(Path(resume), meta, model, ema, optimizer, rng)
    total_steps = options.epochs * recipe.n_batches(options.batch_size)
    settings = asdict(options)
    while epoch < options.epochs:
        started = time.perf_counter()
        model.train()
        sums: dict[str, float] = {}
        batches = tqdm(recipe.batches(rng, options.batch_size), total=recipe.n_batches(options.batch_size),
                       desc=f"epoch {epoch + 1}/{options.epochs}", unit="batch", leave=False,
                       disable=None if progress else True)  # None: a bar on a terminal, none in a log
        for n, batch in enumerate(batches, 1):
            lr = learning_rate(options, step, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            parts = recipe.loss(model, batch)
            if not torch.isfinite(parts["loss"]):
                raise TrainError(f"epoch {epoch + 1} step {n}: the loss is {float(parts['loss'])}; lower --lr "
                                 f"(now {options.lr:g})")
            optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            if options.grad_clip:
                nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], options.grad_clip)
            optimizer.step()
            step += 1
            if ema is not None:
                _ema_update(ema, model, min(options.ema_decay, (1 + step) / (10 + step)))
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            batches.set_postfix(loss=f"{sums['loss'] / n:.3f}", lr=f"{lr:.2e}")
        train_s = time.perf_counter() - started
        model.eval()
        scores = validate(ema if ema is not None else model)
        record = {"epoch": epoch + 1, "step": step, "lr": lr, "train_s": round(train_s, 1),
                  **{f"train_{k}": v / n for k, v in sums.items()}, "val": scores,
                  "val_s": round(time.perf_counter() - started - train_s, 1)}
        if ema is not None:  # what the EMA buys, measured every epoch on the same data
            record["val_without_ema"] = validate(model)
        history.append(record)
        epoch += 1
        if scores[metric] > best["metric"]:
            best = {"epoch": epoch, "metric": scores[metric]}
        saved = {**meta, "settings": settings, "epoch": epoch, "step": step, "history": history, "best": best,
                 "metric": metric}
        deploy = (ema or model).state_dict()
        if best["epoch"] == epoch:
            save_checkpoint(out_dir / BEST, saved, deploy)
        save_checkpoint(out_dir / LAST, {**saved, "numpy_rng": rng.bit_generator.state}, deploy,
                        raw_weights=model.state_dict() if ema is not None else None,
                        optimizer_state=optimizer.state_dict(), torch_rng=torch.get_rng_state())
        _log_epoch(record, metric, options.epochs, progress)
    return FitResult(out_dir / LAST, out_dir / BEST, history, best["epoch"], best["metric"])


def _freeze(model: nn.Module, prefixes: tuple[str, ...]) -> None:
    for name, param in model.named_parameters():
        param.requires_grad_(not name.startswith(prefixes) if prefixes else True)


def _optimizer(model: nn.Module, options: TrainOptions) -> torch.optim.Optimizer:
    # Biases take no weight decay (NanoDet's and timm's practice); order is fixed so resumed state lines up.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": options.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if options.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=options.lr, momentum=options.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=options.lr)


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for (_, averaged), (_, current) in zip(ema.state_dict().items(), model.state_dict().items()):
        if averaged.dtype.is_floating_point:
            averaged.mul_(decay).add_(current, alpha=1 - decay)


def _resume(path: Path, meta: dict, model: nn.Module, ema: nn.Module | None, optimizer, rng) -> tuple:
    checkpoint = read_checkpoint(path, model=meta["model"])
    if checkpoint.labels != tuple(meta["labels"]):
        raise TrainError(f"{path}: trained on labels {list(checkpoint.labels)[:5]}, the data has "
                         f"{list(meta['labels'])[:5]}")
    if "numpy_rng" not in checkpoint.meta or "optimizer" not in checkpoint.meta:
        raise TrainError(f"{path}: holds deployable weights only (a best checkpoint?); resume from {LAST}")
    try:
        model.load_state_dict(checkpoint.raw_weights)
        if ema is not None:
            ema.load_state_dict(checkpoint.weights)
        optimizer.load_state_dict(optimizer_state(checkpoint))
    except (RuntimeError, ValueError, KeyError) as e:
        raise TrainError(f"{path}: does not fit this model and optimizer ({str(e).splitlines()[0][:160]}); "
                         "resume with the settings it was trained with") from e
    torch.set_rng_state(checkpoint.torch_rng)
    rng.bit_generator.state = checkpoint.meta["numpy_rng"]
    saved = checkpoint.meta
    return saved["epoch"], saved["step"], list(saved["history"]), dict(saved["best"])


def _log_epoch(record: dict, metric: str, epochs: int, progress: bool) -> None:
    if not progress:
        return
    extra = ""
    if "val_without_ema" in record:
        extra = f" (without EMA {record['val_without_ema'][metric]:.4f})"
    tqdm.write(f"epoch {record['epoch']}/{epochs}: loss {record['train_loss']:.4f}, val {metric} "
               f"{record['val'][metric]:.4f}{extra}, {record['train_s']:.0f} s train + {record['val_s']:.0f} s val")


def options_from_checkpoint(path: str | Path, epochs: int | None = None) -> TrainOptions:
    """The settings a checkpoint was trained with (to resume with them), with `epochs` optionally changed."""
    settings = dict(read_checkpoint_meta(path).get("settings", {}))
    fields = {f.name for f in dataclasses.fields(TrainOptions)}
    options = TrainOptions(**{k: v for k, v in settings.items() if k in fields})
    return dataclasses.replace(options, epochs=epochs) if epochs is not None else options
