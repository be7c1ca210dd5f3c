"""COCO box detection: `read_coco(data_dir) -> CocoSet` and `coco_map(coco_set, detections) -> dict`, the
official pycocotools bbox evaluation run quietly. The contiguous 80-class label table is `coco_labels`'s (no
pycocotools there, so a model that only names COCO's classes need not install it)."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from edgepipe.metrics.coco_labels import COCO80_LABELS, COCO80_TO_CATEGORY_ID  # noqa: F401  (re-exported)
from edgepipe.runtime.atomic import read_text
from edgepipe.runtime.errors import InputError

__all__ = ["read_coco", "coco_map", "CocoSet"]

_REQUIRED_KEYS = ("images", "annotations", "categories")
_STATS = ("map_50_95", "map_50", "map_75", "map_small", "map_medium", "map_large")  # COCOeval.stats[0:6]
_DETECTION_KEYS = ("image_id", "category_id", "bbox", "score")


@dataclass(frozen=True, eq=False)
class CocoSet:
    """A COCO-layout folder: its annotation file, its images and its categories."""

    instances_path: Path  # data_dir / "instances.json", read again by `coco_map`
    images: tuple[tuple[int, Path, int, int], ...]  # (image_id, path, width, height) in json order
    categories: dict[int, str]  # official category id -> name


def read_coco(data_dir: str | Path) -> CocoSet:
    """Read a folder of `images/` plus `instances.json` (the official COCO instances json).

    Args:
        data_dir: the folder.

    Returns:
        The set, with every listed image checked to exist.

    Raises:
        InputError: instances.json is missing, is not UTF-8 JSON, lacks `images`/`annotations`/`categories`, has
            no images or no annotations, has a malformed image, category or annotation entry (a box of width or
            height <= 0 included), or lists images that are not under images/.
    """
    data_dir = Path(data_dir)
    path = data_dir / "instances.json"
    if not path.is_file():
        raise InputError(f"{path}: no such annotation file; expected a COCO folder (images/ + instances.json)")
    try:
        dataset = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    if not isinstance(dataset, dict):
        raise InputError(f"{path}: expected a JSON object at the top, got {type(dataset).__name__}")
    absent = [key for key in _REQUIRED_KEYS if not isinstance(dataset.get(key), list)]
    if absent:
        raise InputError(f"{path}: missing or non-list keys {absent}; "
                         f"a COCO instances json needs {list(_REQUIRED_KEYS)}")
    images = tuple(_image_row(path, data_dir / "images", k, entry) for k, entry in enumerate(dataset["images"]))
    if not images:
        raise InputError(f"{path}: 'images' is empty; there is nothing to evaluate")
    missing = [row[1] for row in images if not row[1].is_file()]
    if missing:
        raise InputError(f"{path}: {len(missing)} of {len(images)} listed images are missing, first: {missing[0]}")
    try:
        categories = {int(c["id"]): str(c["name"]) for c in dataset["categories"]}
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: every entry of 'categories' needs an integer 'id' and a 'name' ({e!r})") from e
    _check_annotations(path, dataset["annotations"], {row[0] for row in images}, categories)
    return CocoSet(path, images, categories)


def _check_annotations(path: Path, annotations: list, image_ids: set[int], categories: dict[int, str]) -> None:
    """Refuse what pycocotools would score silently as wrong: no boxes at all, or boxes it cannot match."""
    if not annotations:
        raise InputError(f"{path}: 'annotations' is empty; there is no ground truth to score against")
    bad: list[str] = []
    for k, ann in enumerate(annotations):
        try:
            box = [float(v) for v in ann["bbox"]]
            problem = ("bbox is not [x, y, w, h]" if len(box) != 4 else
                       "bbox is not finite" if not np.isfinite(box).all() else
                       "bbox width or height <= 0" if box[2] <= 0 or box[3] <= 0 else
                       f"image_id {ann['image_id']!r} is not in 'images'" if ann["image_id"] not in image_ids else
                       f"category_id {ann['category_id']!r} is not in 'categories'"
                       if ann["category_id"] not in categories else "")
        except (KeyError, TypeError, ValueError):
            problem = "needs 'image_id', 'category_id' and a numeric 'bbox'"
        if problem:
            bad.append(f"annotations[{k}]: {problem}")
    if bad:
        raise InputError(f"{path}: {len(bad)} of {len(annotations)} annotations are malformed, first "
                         f"{bad[0]}")


def _image_row(path: Path, images_dir: Path, index: int, entry) -> tuple[int, Path, int, int]:
    """(image_id, path, width, height) of one `images` entry."""
    try:
        return int(entry["id"]), images_dir / entry["file_name"], int(entry["width"]), int(entry["height"])
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: images[{index}] needs 'id', 'file_name', 'width' and 'height', got {entry!r}") from e


def coco_map(coco_set: CocoSet, detections: list[dict]) -> dict:
    """COCO box mAP of detections on a set, by pycocotools' COCOeval (iouType "bbox", its default parameters:
    IoU 0.50:0.95, 100 detections per image, area ranges small < 32^2 <= medium < 96^2 <= large, crowd ignored).

    Args:
        coco_set: the set from `read_coco`.
        detections: `{"image_id", "category_id", "bbox": [x, y, w, h], "score"}` per box, in original image pixels,
            with official category ids (see `COCO80_TO_CATEGORY_ID`). May be empty.

    Returns:
        {"map_50_95", "map_50", "map_75", "map_small", "map_medium", "map_large"}: floats in [0, 1], or None where
        COCOeval leaves the figure undefined (no ground truth in that area range).

    Raises:
        InputError: a detection lacks a key, has a malformed bbox, or names an image or category outside the set.
    """
    _check_detections(coco_set, detections)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools reports progress with print()
        coco_gt = COCO(str(coco_set.instances_path))
        if detections:
            coco_dt = coco_gt.loadRes([dict(d, bbox=[float(v) for v in d["bbox"]]) for d in detections])
        else:  # loadRes indexes anns[0]; an empty result set is built by hand instead
            coco_dt = COCO()
            coco_dt.dataset = {"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"],
                               "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: (float(value) if value >= 0 else None) for name, value in zip(_STATS, evaluator.stats)}


def _check_detections(coco_set: CocoSet, detections: list[dict]) -> None:
    """Raise InputError on the first detection that pycocotools would reject or misread."""
    image_ids = {row[0] for row in coco_set.images}
    for k, det in enumerate(detections):
        absent = [key for key in _DETECTION_KEYS if key not in det]
        if absent:
            raise InputError(f"detections[{k}]: missing keys {absent}; each needs {list(_DETECTION_KEYS)}")
        if np.shape(det["bbox"]) != (4,):
            raise InputError(f"detections[{k}]: bbox must be [x, y, w, h], got {det['bbox']!r}")
        if det["image_id"] not in image_ids:
            raise InputError(f"detections[{k}]: image_id {det['image_id']!r} is not in {coco_set.instances_path}")
        if det["category_id"] not in coco_set.categories:
            raise InputError(f"detections[{k}]: category_id {det['category_id']!r} is not in "
                             f"{coco_set.instances_path}; use official ids (COCO80_TO_CATEGORY_ID)")
