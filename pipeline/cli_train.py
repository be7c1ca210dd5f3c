"""`edgepipe train` and `edgepipe split`: the training commands of the CLI (see `edgepipe.cli`)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from edgepipe.errors import TrainError

__all__ = ["add_training_commands"]


def _cmd_train(args) -> int:
    from edgepipe.models.training.loop import TrainOptions, options_from_checkpoint
    from edgepipe.train import train

    given = {"epochs": args.epochs, "batch_size": args.batch, "lr": args.lr, "optimizer": args.optimizer,
             "ema_decay": args.ema_decay, "freeze_backbone": args.freeze_backbone or None, "seed": args.seed}
    given = {k: v for k, v in given.items() if v is not None}
    if args.resume:  # the run goes on with its own settings; only --epochs may grow
        options = options_from_checkpoint(args.resume, given.get("epochs"))
    elif "epochs" not in given:
        raise TrainError("--epochs is required (or --resume a run)")
    else:
        options = dataclasses.replace(TrainOptions(epochs=given["epochs"]), **given)
    try:
        result = train(args.model, args.data, args.val, args.out, options, resume=args.resume,
                       cache_dir=args.cache_dir)
    except KeyboardInterrupt:
        print(f"edgepipe: interrupted; the last complete epoch is in {Path(args.out) / 'last.safetensors'} "
              f"(continue with --resume)", file=sys.stderr)
        return 130
    print(f"best epoch {result.best_epoch}: {result.history[result.best_epoch - 1]['val']} -> {result.best}; "
          f"last: {result.last}")
    return 0


def _cmd_split(args) -> int:
    from edgepipe.train import split_data

    counts = split_data(args.data, args.out, val_fraction=args.val_fraction, seed=args.seed)
    print(f"wrote {args.out}/train ({counts['train']} images) and {args.out}/val ({counts['val']} images; "
          f"events {', '.join(counts['val_events'])})")
    return 0


def add_training_commands(sub) -> None:
    """Add `train` and `split` to the CLI's sub-parsers."""
    tr = sub.add_parser("train", help="fine-tune a zoo detector on a COCO or WIDER FACE folder (head re-sized to its "
                        "classes); best and last checkpoints as safetensors")
    tr.add_argument("model", help="zoo detector to start from, e.g. nanodet_g.coco")
    tr.add_argument("--data", required=True, help="training folder: images/ + instances.json (COCO) or gt.txt (WIDER)")
    tr.add_argument("--val", required=True, help="validation folder, same layout and classes; scored every epoch")
    tr.add_argument("--out", required=True, help="directory for last.safetensors and best.safetensors")
    tr.add_argument("--epochs", type=int, help="epochs to train (with --resume: the new total)")
    tr.add_argument("--batch", type=int, help="images per step (default 8)")
    tr.add_argument("--lr", type=float, help="peak learning rate after warm-up (default 1e-3)")
    tr.add_argument("--optimizer", choices=["adamw", "sgd"], help="default adamw")
    tr.add_argument("--ema-decay", type=float, help="EMA of the weights (default 0.998; 0 turns it off)")
    tr.add_argument("--freeze-backbone", action="store_true", help="train the neck and head only")
    tr.add_argument("--seed", type=int, help="seed of the data order and augmentation (default 0)")
    tr.add_argument("--resume", help="a last.safetensors to continue from, with its own settings")
    tr.set_defaults(func=_cmd_train)

    split = sub.add_parser("split", help="split a WIDER FACE folder by event (COCO: by image) into OUT/train, OUT/val")
    split.add_argument("data", help="the folder to split")
    split.add_argument("--out", required=True, help="new folder to create")
    split.add_argument("--val-fraction", type=float, default=0.3, help="least share of images in val (default 0.3)")
    split.add_argument("--seed", type=int, default=0, help="which events go to val (default 0)")
    split.set_defaults(func=_cmd_split)
