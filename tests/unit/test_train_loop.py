"""The generic training loop on a tiny recipe (a line fit): determinism, exact resume, Ctrl-C safety, checkpoint
errors. The detector recipe on real images is tested in tests/integration/test_train_detector.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from edgepipe.errors import TrainError
from edgepipe.models.training.checkpoint import read_checkpoint, save_checkpoint
from edgepipe.models.training.loop import TrainOptions, fit, learning_rate


class Line(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(3, 8)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        return self.head(torch.tanh(self.backbone(x)))


class LineRecipe:
    """y = x . w + noise, batches drawn from the loop's RNG, so determinism and resume are the loop's doing."""

    backbone_prefixes = ("backbone.",)

    def __init__(self, model, interrupt_at: int | None = None):
        self.model, self.interrupt_at, self.seen = model, interrupt_at, 0
        self.x = np.random.default_rng(1).normal(size=(40, 3)).astype(np.float32)
        self.y = self.x @ np.array([1.0, -2.0, 0.5], np.float32)

    def n_batches(self, batch_size):
        return -(-len(self.x) // batch_size)

    def batches(self, rng, batch_size):
        order = rng.permutation(len(self.x))
        for start in range(0, len(order), batch_size):
            self.seen += 1
            if self.interrupt_at is not None and self.seen == self.interrupt_at:
                raise KeyboardInterrupt
            rows = order[start:start + batch_size]
            noise = rng.normal(scale=0.01, size=len(rows)).astype(np.float32)  # the RNG state matters on resume
            yield torch.from_numpy(self.x[rows]), torch.from_numpy(self.y[rows] + noise)

    def loss(self, model, batch):
        x, y = batch
        loss = ((model(x).squeeze(1) - y) ** 2).mean()
        return {"loss": loss, "mse": loss.detach()}


META = {"model": "line.test", "labels": ["y"]}


def _validate(model):
    x = torch.linspace(-1, 1, 30).reshape(10, 3)
    with torch.no_grad():
        error = float(((model(x).squeeze(1) - x @ torch.tensor([1.0, -2.0, 0.5])) ** 2).mean())
    return {"neg_mse": -error}


def _fit(out, options, resume=None, interrupt_at=None):
    torch.manual_seed(123)  # the model's init; fit seeds everything after
    recipe = LineRecipe(Line(), interrupt_at)
    return recipe, fit(recipe, options, out, meta=META, validate=_validate, metric="neg_mse", resume=resume,
                       progress=False)


OPTIONS = TrainOptions(epochs=4, batch_size=8, lr=0.05, warmup_steps=3)


def _weights(path):
    return read_checkpoint(path).weights


def test_training_improves_and_records_history(tmp_path):
    _, result = _fit(tmp_path, OPTIONS)
    history = result.history
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert result.best_metric == max(h["val"]["neg_mse"] for h in history)
    assert "val_without_ema" in history[0]  # the EMA's effect is measured each epoch
    best = read_checkpoint(result.best)
    assert best.meta["epoch"] == result.best_epoch and best.labels == ("y",)
    assert not best.optimizer_tensors  # best holds deployable weights only


def test_same_seed_same_weights_and_resume_is_exact(tmp_path):
    _, straight = _fit(tmp_path / "a", OPTIONS)
    _, again = _fit(tmp_path / "b", OPTIONS)
    n = LineRecipe(Line()).n_batches(OPTIONS.batch_size)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in epoch 3, then --resume
        _fit(tmp_path / "c", OPTIONS, interrupt_at=2 * n + 2)
    _, resumed = _fit(tmp_path / "c", OPTIONS, resume=tmp_path / "c" / "last.safetensors")
    for name, tensor in _weights(straight.last).items():
        assert torch.equal(tensor, _weights(again.last)[name]), name
        assert torch.equal(tensor, _weights(resumed.last)[name]), name
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    _, other_seed = _fit(tmp_path / "d", dataclasses.replace(OPTIONS, seed=1))
    assert not torch.equal(_weights(other_seed.last)["head.weight"], _weights(straight.last)["head.weight"])


def test_interrupt_leaves_the_last_complete_epoch(tmp_path):
    n = LineRecipe(Line()).n_batches(OPTIONS.batch_size)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, OPTIONS, interrupt_at=2 * n + 2)  # inside epoch 3
    checkpoint = read_checkpoint(tmp_path / "last.safetensors")
    assert checkpoint.meta["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.safetensors", "last.safetensors"]  # no temp files


def test_freeze_backbone_leaves_it_unchanged(tmp_path):
    torch.manual_seed(123)
    start = Line().state_dict()
    _, result = _fit(tmp_path, dataclasses.replace(OPTIONS, freeze_backbone=True, ema_decay=0.0))
    trained = _weights(result.last)
    assert torch.equal(trained["backbone.weight"], start["backbone.weight"])
    assert not torch.equal(trained["head.weight"], start["head.weight"])


def test_learning_rate_warms_up_then_decays():
    lrs = [learning_rate(OPTIONS, s, 20) for s in range(21)]
    assert lrs[0] == pytest.approx(0.1 * OPTIONS.lr) and lrs[3] == pytest.approx(OPTIONS.lr)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    assert lrs[20] == pytest.approx(OPTIONS.min_lr_ratio * OPTIONS.lr)


@pytest.mark.parametrize("field, value, message", [
    ("epochs", 0, "epochs must be an integer >= 1, got 0"),
    ("batch_size", 0, "batch size must be an integer >= 1"),
    ("lr", -1.0, "lr must be a positive number"),
    ("optimizer", "adam", "optimizer must be one of"),
])
def test_bad_options(field, value, message):
    with pytest.raises(TrainError, match=message):
        dataclasses.replace(OPTIONS, **{field: value})


def test_bad_checkpoints(tmp_path):
    _, result = _fit(tmp_path / "run", dataclasses.replace(OPTIONS, epochs=1))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(result.last.read_bytes()[:5000])
    with pytest.raises(TrainError, match="truncated.safetensors: not a readable safetensors checkpoint"):
        read_checkpoint(truncated)
    with pytest.raises(TrainError, match="a checkpoint of 'line.test', not of 'nanodet_g.coco'"):
        read_checkpoint(result.last, model="nanodet_g.coco")
    plain = save_checkpoint(tmp_path / "plain.safetensors", {"model": "line.test", "labels": ["y"]},
                            Line().state_dict())
    with pytest.raises(TrainError, match="deployable weights only"):
        _fit(tmp_path / "other", OPTIONS, resume=plain)
    with pytest.raises(TrainError, match="trained on labels"):
        fit(LineRecipe(Line()), OPTIONS, tmp_path / "x", meta={**META, "labels": ["z"]}, validate=_validate,
            metric="neg_mse", resume=result.last, progress=False)


def test_sgd_trains_and_resumes_exactly(tmp_path):
    options = dataclasses.replace(OPTIONS, optimizer="sgd", lr=0.02)
    _, straight = _fit(tmp_path / "a", options)
    assert straight.history[-1]["train_loss"] < straight.history[0]["train_loss"]
    n = LineRecipe(Line()).n_batches(options.batch_size)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "b", options, interrupt_at=n + 1)
    _, resumed = _fit(tmp_path / "b", options, resume=tmp_path / "b" / "last.safetensors")
    for name, tensor in _weights(straight.last).items():  # momentum buffers travel in the checkpoint too
        assert torch.equal(tensor, _weights(resumed.last)[name]), name
