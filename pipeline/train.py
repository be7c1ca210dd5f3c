"""Fine-tune a zoo detector on a user's labelled folder: `train(name, data, val, out_dir, options) -> FitResult`,
and `split_data(data_dir, out_dir)`, which splits a folder into train and val parts (WIDER FACE by event, COCO by
image) so that no event is in both.

Validation each epoch runs the model through the same runtime pre- and post-processing and the same evaluator
as `edgepipe eval` (COCO mAP@[.5:.95] for a COCO folder, AP@0.5 for a WIDER FACE folder).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np

from edgepipe.errors import InputError, TrainError
from edgepipe.evaluate import evaluate_model
from edgepipe.export import artifact_meta
from edgepipe.models import build
from edgepipe.models.registry import spec_of
from edgepipe.models.training.checkpoint import read_checkpoint
from edgepipe.models.training.data import read_box_set
from edgepipe.models.training.detection import DetectionRecipe
from edgepipe.models.training.loop import LAST, FitResult, TrainOptions, fit
from edgepipe.parity import TorchModel
from edgepipe.runtime.atomic import atomic_write

__all__ = ["train", "split_data"]

METRIC_OF_LAYOUT = {"coco": "map_50_95", "widerface": "ap_50"}


def train(name: str, data: str | Path, val: str | Path, out_dir: str | Path, options: TrainOptions, *,
          resume: str | Path | None = None, cache_dir: Path | None = None, progress: bool = True) -> FitResult:
    """Fine-tune zoo detector `name` on `data`, validating on `val` each epoch.

    The head is re-sized to the data's classes; the backbone and neck start from the zoo weights (or from
    `resume`). Checkpoints go to `out_dir/last.safetensors` and `out_dir/best.safetensors`.

    Raises:
        InputError: a data folder without annotations or with boxes outside their images.
        TrainError: train and val classes differ, the model has no trainable recipe, `out_dir` already holds a run
            (and no `resume`), or a bad checkpoint.
    """
    spec = spec_of(name)
    if spec.head.kind != "gfl":  # the training recipe is NanoDet's (ATSS, GFL losses)
        raise TrainError(f"{name}: training is available for box detectors (GFL head); this model's head is "
                         f"{spec.head.kind!r}")
    out_dir = Path(out_dir)
    if resume is None and (out_dir / LAST).exists():
        raise TrainError(f"{out_dir} already holds a training run ({LAST}); pass --resume {out_dir / LAST} or "
                         "another --out")
    started_from = read_checkpoint(resume, model=name) if resume is not None else None  # a bad one fails first
    train_set, val_set = read_box_set(data), read_box_set(val)
    if train_set.labels != val_set.labels:
        raise TrainError(f"the classes differ between train ({_names(train_set.labels)}) and val "
                         f"({_names(val_set.labels)}); both folders need the same category list")
    labels = train_set.labels
    spec = dataclasses.replace(spec, labels=labels)
    model = build(name, cache_dir=cache_dir, labels=labels)
    runtime_meta = artifact_meta(spec)
    val_dir = Path(val)

    def validate(module) -> dict:
        report = evaluate_model(TorchModel(Path(f"{name} (training)"), runtime_meta, module), val_dir, progress=False)
        return report.metrics

    meta = {"model": name, "labels": list(labels), "data": str(data), "val": str(val),
            "n_train_images": len(train_set.samples), "n_train_boxes": train_set.n_boxes,
            "n_val_images": len(val_set.samples)}
    if started_from is None:
        model.eval()
        meta["val_before"] = validate(model)  # the starting point: zoo backbone, fresh class head
    else:
        meta["val_before"] = started_from.meta.get("val_before", {})
    recipe = DetectionRecipe(model, spec, train_set)
    return fit(recipe, options, out_dir, meta=meta, validate=validate, metric=METRIC_OF_LAYOUT[val_set.layout],
               resume=resume, progress=progress)


def _names(labels: tuple[str, ...]) -> str:
    return f"{len(labels)}: {', '.join(labels[:6])}{', ...' if len(labels) > 6 else ''}"


def split_data(data_dir: str | Path, out_dir: str | Path, *, val_fraction: float = 0.3, seed: int = 0) -> dict:
    """Split a WIDER FACE folder by event (the `images/<event>/` folder) or a COCO folder by image into
    `out_dir/train` and `out_dir/val`, copying the images; events are drawn at random (by `seed`) until the val
    part holds at least `val_fraction` of the images.

    Returns:
        {"train": n_images, "val": n_images, "val_events": [...]}.

    Raises:
        InputError: an unknown layout, a fraction outside (0, 1), fewer than two events or images, or `out_dir`
            already exists.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not 0 < val_fraction < 1:
        raise InputError(f"val fraction must be in (0, 1), got {val_fraction}")
    if out_dir.exists():
        raise InputError(f"{out_dir} already exists; split into a new folder")
    box_set = read_box_set(data_dir)
    rel = [s.path.relative_to(data_dir / "images") for s in box_set.samples]
    group_of = {p: _group(p, box_set.layout) for p in rel}
    groups = sorted(set(group_of.values()))
    if len(groups) < 2:
        raise InputError(f"{data_dir}: {len(groups)} event(s); a split needs at least two")
    rng = np.random.default_rng(seed)
    counts = {g: sum(1 for p in rel if group_of[p] == g) for g in groups}
    val_groups, n_val = set(), 0
    for g in rng.permutation(groups):
        if n_val >= val_fraction * len(rel) or len(val_groups) == len(groups) - 1:
            break
        val_groups.add(str(g))
        n_val += counts[str(g)]
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for part in ("train", "val"):
            keep = [p for p in rel if (group_of[p] in val_groups) == (part == "val")]
            for p in keep:
                (tmp / part / "images" / p).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(data_dir / "images" / p, tmp / part / "images" / p)
            _write_annotations(data_dir, tmp / part, box_set.layout, {str(p) for p in keep})
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"train": len(rel) - n_val, "val": n_val, "val_events": sorted(val_groups)}


def _group(path: Path, layout: str) -> str:
    """What may not be in both parts: a WIDER FACE event folder, or a COCO image."""
    return path.parts[0] if layout == "widerface" else str(path)


def _write_annotations(data_dir: Path, out: Path, layout: str, keep: set[str]) -> None:
    if layout == "widerface":  # copy each kept image's record verbatim (gt.txt keeps its own format)
        lines = (data_dir / "gt.txt").read_text().splitlines()
        records, current = [], None
        for line in lines:
            fields = line.split()
            if len(fields) == 1 and not fields[0].isdigit():
                current = [line]
                records.append(current)
            elif current is not None:
                current.append(line)
        text = "\n".join(line for record in records if record[0].strip() in keep for line in record) + "\n"
        atomic_write(out / "gt.txt", text.encode())
        return
    dataset = json.loads((data_dir / "instances.json").read_text())
    images = [im for im in dataset["images"] if im["file_name"] in keep]
    ids = {im["id"] for im in images}
    dataset = {**dataset, "images": images, "annotations": [a for a in dataset["annotations"] if a["image_id"] in ids]}
    atomic_write(out / "instances.json", json.dumps(dataset).encode())
