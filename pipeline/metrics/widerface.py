"""WIDER FACE ground truth and face-detection AP: `read_widerface_gt(data_dir) -> list[WiderImage]` and
`widerface_ap(detections, gt) -> dict` (VOC all-point AP@0.5 plus recall by face size)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepipe.runtime.atomic import read_text
from edgepipe.runtime.errors import InputError
from edgepipe.runtime.postprocess import box_iou

__all__ = ["read_widerface_gt", "widerface_ap", "WiderImage"]

_BOX_FIELDS = "x1 y1 w h blur expression illumination invalid occlusion pose"
_SIZE_BUCKETS_PX = {"small": (0.0, 32.0), "medium": (32.0, 96.0), "large": (96.0, np.inf)}  # sqrt(w * h), [lo, hi)


@dataclass(frozen=True, eq=False)
class WiderImage:
    """One image of a WIDER FACE split and its faces."""

    path: Path  # data_dir / "images" / "<event>/<file>.jpg"
    boxes_xyxy: np.ndarray  # (N, 4) float32, pixels, x2 = x1 + w, y2 = y1 + h
    invalid: np.ndarray  # (N,) bool, the gt `invalid` flag: ignored by the AP


def read_widerface_gt(data_dir: str | Path) -> list[WiderImage]:
    """Read a WIDER FACE folder: `images/<event>/<file>.jpg` plus `gt.txt` in the official
    `wider_face_val_bbx_gt.txt` layout (image path line, face count line, one box line per face; an image with 0
    faces is followed by one all-zero box line, which is skipped).

    Args:
        data_dir: the folder holding `gt.txt` and `images/`.

    Returns:
        The images in file order.

    Raises:
        InputError: gt.txt is missing or empty, a count disagrees with the box lines after it, a box line is not
            10 numbers, an image is listed twice, or a listed image does not exist.
    """
    data_dir = Path(data_dir)
    gt_path = data_dir / "gt.txt"
    if not gt_path.is_file():
        raise InputError(f"{gt_path}: no such ground-truth file; expected a WIDER FACE folder (images/ + gt.txt)")
    lines = [(n, line.split()) for n, line in enumerate(read_text(gt_path).splitlines(), 1) if line.strip()]
    if not lines:
        raise InputError(f"{gt_path}: empty; expected WIDER FACE ground truth (image path, face count, boxes)")
    images, first_line, pos = [], {}, 0
    while pos < len(lines):
        start, lineno = pos, lines[pos][0]
        image, pos = _read_record(gt_path, data_dir, lines, pos)
        if image.path in first_line:
            raise InputError(f"{gt_path}:{lineno}: image {lines[start][1][0]!r} is listed twice "
                             f"(first on line {first_line[image.path]})")
        first_line[image.path] = lineno
        images.append(image)
    missing = [image for image in images if not image.path.is_file()]
    if missing:
        raise InputError(f"{gt_path}:{first_line[missing[0].path]}: listed image {missing[0].path} does not exist "
                         f"({len(missing)} of {len(images)} listed images missing)")
    return images


def _read_record(gt_path: Path, data_dir: Path, lines: list, pos: int) -> tuple[WiderImage, int]:
    """Parse one image record starting at lines[pos]; return it and the position after it."""
    lineno, fields = lines[pos]
    if len(fields) != 1:
        raise InputError(f"{gt_path}:{lineno}: expected an image path, got {len(fields)} fields {' '.join(fields)!r}")
    path = data_dir / "images" / fields[0]
    if pos + 1 >= len(lines):
        raise InputError(f"{gt_path}:{lineno}: image {fields[0]!r} has no face-count line after it")
    count_lineno, count_fields = lines[pos + 1]
    if len(count_fields) != 1 or not count_fields[0].isdigit():
        raise InputError(f"{gt_path}:{count_lineno}: expected the number of faces (one integer >= 0), "
                         f"got {' '.join(count_fields)!r}")
    n_faces, pos = int(count_fields[0]), pos + 2
    rows = []
    for k in range(n_faces):
        if pos + k >= len(lines) or len(lines[pos + k][1]) == 1:
            where = "the end of the file" if pos + k >= len(lines) else f"line {lines[pos + k][0]}"
            raise InputError(f"{gt_path}:{count_lineno}: count says {n_faces} faces but only {k} box lines follow "
                             f"before {where}")
        rows.append(_parse_box(gt_path, *lines[pos + k]))
    pos += n_faces
    if n_faces == 0 and pos < len(lines) and len(lines[pos][1]) == 10 and not any(_parse_box(gt_path, *lines[pos])):
        pos += 1  # the official file writes one all-zero box line for an image with no faces
    if pos < len(lines) and len(lines[pos][1]) != 1:
        raise InputError(f"{gt_path}:{count_lineno}: count says {n_faces} faces but more box lines follow "
                         f"(line {lines[pos][0]})")
    table = np.array(rows, np.float64).reshape(-1, 10)
    boxes_xyxy = np.concatenate([table[:, :2], table[:, :2] + table[:, 2:4]], axis=1).astype(np.float32)
    return WiderImage(path, boxes_xyxy, table[:, 7] != 0), pos


def _parse_box(gt_path: Path, lineno: int, fields: list[str]) -> list[float]:
    """The 10 numbers of one box line."""
    if len(fields) != 10:
        raise InputError(f"{gt_path}:{lineno}: expected 10 fields '{_BOX_FIELDS}', got {len(fields)}")
    try:
        return [float(field) for field in fields]
    except ValueError as e:
        raise InputError(f"{gt_path}:{lineno}: box fields must be numbers, got {' '.join(fields)!r}") from e


def widerface_ap(detections: dict, gt: list[WiderImage], iou_thresh: float = 0.5) -> dict:
    """Face-detection AP over a WIDER FACE split, the protocol of the reference figures in ZOO.md.

    Protocol: the faces are those with `invalid == 0`. All detections of all images are sorted by descending score
    (ties keep image order, then detection order) and matched greedily, VOC style: each detection takes the gt box
    of its image with the highest IoU (continuous pixel coordinates, no +1). If that IoU >= `iou_thresh` and the box
    is an invalid face, the detection is ignored (neither TP nor FP); if it is a valid face not yet matched, it is a
    TP and the face is used up; otherwise (a duplicate, or no gt box with IoU >= `iou_thresh`) it is a FP. AP is
    the VOC all-point interpolated AP: the area under the monotone (right-to-left maximum) precision envelope of the
    PR curve. Recall and recall by size are taken at the end of the PR curve (every detection kept); a face's size
    is sqrt(w * h) of its gt box: small < 32 px <= medium < 96 px <= large.

    Args:
        detections: image path (as in `gt`) -> (boxes_xyxy (M, 4), scores (M,)) in original image pixels, for
            every image of `gt` (M may be 0).
        gt: the images from `read_widerface_gt`.
        iou_thresh: IoU a detection needs to match a face.

    Returns:
        {"ap_50", "n_faces", "n_detections", "recall", "recall_by_size": {"small"|"medium"|"large":
        {"n", "recall"}}}; AP and recalls are fractions in [0, 1] (a bucket with no face has recall None).

    Raises:
        InputError: detections miss an image of `gt` or name one outside it, arrays have the wrong shape, or `gt`
            holds no valid face (AP is undefined).
    """
    per_image = _check_detections(detections, gt)
    valid = [~image.invalid for image in gt]
    n_faces = int(sum(v.sum() for v in valid))
    if n_faces == 0:
        raise InputError(f"ground truth of {len(gt)} images holds no face with invalid == 0; AP is undefined")
    image_index = np.concatenate([np.full(len(s), i) for i, (_, s) in enumerate(per_image)]).astype(np.int64)
    det_index = np.concatenate([np.arange(len(s)) for _, s in per_image]).astype(np.int64)
    scores = np.concatenate([s for _, s in per_image])
    matched = [np.zeros(len(image.invalid), bool) for image in gt]
    outcome = np.zeros(len(scores), np.int8)  # 1 TP, -1 FP, 0 ignored
    order = np.argsort(-scores, kind="stable")
    for k in order:
        i = image_index[k]
        outcome[k] = -1
        if len(gt[i].boxes_xyxy) == 0:
            continue
        ious = box_iou(per_image[i][0][det_index[k]], gt[i].boxes_xyxy.astype(np.float64))
        best = int(np.argmax(ious))
        if ious[best] < iou_thresh:
            continue
        if gt[i].invalid[best]:
            outcome[k] = 0
        elif not matched[i][best]:
            matched[i][best], outcome[k] = True, 1
    ranked = outcome[order]
    ranked = ranked[ranked != 0]
    tp, fp = np.cumsum(ranked == 1), np.cumsum(ranked == -1)
    recall = tp / n_faces
    precision = tp / np.maximum(tp + fp, 1)
    sizes = np.concatenate([_box_size_px(image.boxes_xyxy[v]) for image, v in zip(gt, valid)])
    found = np.concatenate([m[v] for m, v in zip(matched, valid)])
    return {"ap_50": _voc_all_point_ap(recall, precision), "n_faces": n_faces, "n_detections": int(len(scores)),
            "recall": float(found.sum() / n_faces), "recall_by_size": _recall_by_size(sizes, found)}


def _check_detections(detections: dict, gt: list[WiderImage]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Detections in gt order as float64 ((M, 4) boxes, (M,) scores); raise on missing or extra images or shapes."""
    by_path = {Path(path): value for path, value in detections.items()}
    gt_paths = [image.path for image in gt]
    missing = [path for path in gt_paths if path not in by_path]
    if missing:
        raise InputError(f"detections miss {len(missing)} of {len(gt)} ground-truth images, first: {missing[0]}")
    extra = sorted(set(by_path) - set(gt_paths))
    if extra:
        raise InputError(f"detections name {len(extra)} images not in the ground truth, first: {extra[0]}")
    out = []
    for path in gt_paths:
        boxes, scores = (np.asarray(a, np.float64) for a in by_path[path])
        boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
        if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != (len(boxes),):
            raise InputError(f"detections for {path}: expected boxes (M, 4) and scores (M,), got "
                             f"{boxes.shape} and {scores.shape}")
        out.append((boxes, scores))
    return out


def _box_size_px(boxes_xyxy: np.ndarray) -> np.ndarray:
    """sqrt(w * h) of xyxy boxes, (N,)."""
    wh = np.clip(boxes_xyxy[:, 2:] - boxes_xyxy[:, :2], 0, None).astype(np.float64)
    return np.sqrt(wh[:, 0] * wh[:, 1])


def _recall_by_size(sizes: np.ndarray, found: np.ndarray) -> dict:
    """{bucket: {"n", "recall"}} over the valid faces; recall None for an empty bucket."""
    out = {}
    for name, (lo, hi) in _SIZE_BUCKETS_PX.items():
        in_bucket = (sizes >= lo) & (sizes < hi)
        n = int(in_bucket.sum())
        out[name] = {"n": n, "recall": float(found[in_bucket].mean()) if n else None}
    return out


def _voc_all_point_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the monotone precision envelope (VOC 2010+ `voc_ap(use_07_metric=False)`)."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))
