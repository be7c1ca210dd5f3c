"""Box-detection training data: `read_box_set(data_dir) -> BoxSet` reads a COCO or WIDER FACE folder (the layouts
`edgepipe eval` scores) and `BoxAugment` makes one augmented, normalised model input from a sample, in numpy and
OpenCV, through the runtime's own normalisation (`to_input`), so training sees what the deployed model sees."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgepipe.metrics.coco import read_coco
from edgepipe.metrics.widerface import read_widerface_gt
from edgepipe.runtime.errors import InputError
from edgepipe.runtime.preprocess import read_image, to_input
from edgepipe.runtime.specs import Color, InputSpec, Resize

__all__ = ["read_box_set", "BoxSet", "BoxAugment"]

log = logging.getLogger(__name__)

EDGE_TOLERANCE_PX = 1.0  # boxes may overhang the image by rounding; beyond this they are an annotation error
WIDER_LABELS = ("face",)


@dataclass(frozen=True, eq=False)
class BoxSample:
    """One image and its boxes."""

    path: Path
    boxes_xyxy: np.ndarray  # (N, 4) float32, image pixels, inside the image
    classes: np.ndarray  # (N,) int64 indices into the set's labels


@dataclass(frozen=True, eq=False)
class BoxSet:
    """A labelled detection data set: its class names (the model's labels, in order) and its samples."""

    root: Path
    layout: str  # "coco" or "widerface"
    labels: tuple[str, ...]
    samples: tuple[BoxSample, ...]

    @property
    def n_boxes(self) -> int:
        return sum(len(s.boxes_xyxy) for s in self.samples)


def read_box_set(data_dir: str | Path) -> BoxSet:
    """Read a COCO folder (`images/` + `instances.json`, any categories; crowd boxes dropped) or a WIDER FACE folder
    (`images/` + `gt.txt`, one class 'face'; faces flagged invalid dropped).

    Raises:
        InputError: an unknown layout, no usable box in the whole folder, a box outside its image (by more than
            `EDGE_TOLERANCE_PX`) or with no area, or an annotation naming an unknown category or image.
    """
    data_dir = Path(data_dir)
    if (data_dir / "instances.json").is_file():
        labels, samples = _read_coco_boxes(data_dir)
        layout = "coco"
    elif (data_dir / "gt.txt").is_file():
        labels, samples = WIDER_LABELS, _read_wider_boxes(data_dir)
        layout = "widerface"
    else:
        raise InputError(f"{data_dir}: no annotations; expected images/ with instances.json (COCO) or gt.txt "
                         "(WIDER FACE)")
    box_set = BoxSet(data_dir, layout, labels, tuple(samples))
    if box_set.n_boxes == 0:
        raise InputError(f"{data_dir}: {len(samples)} images but no usable box annotation; nothing to train on")
    return box_set


def _read_coco_boxes(data_dir: Path) -> tuple[tuple[str, ...], list[BoxSample]]:
    coco = read_coco(data_dir)  # checks the file, the images and the categories
    ids = sorted(coco.categories)
    labels = tuple(coco.categories[cid] for cid in ids)
    class_of = {cid: k for k, cid in enumerate(ids)}
    size_of = {image_id: (w, h) for image_id, _, w, h in coco.images}
    rows: dict[int, list] = {image_id: [] for image_id in size_of}
    annotations = json.loads(coco.instances_path.read_text())["annotations"]
    for k, ann in enumerate(annotations):
        where = f"{coco.instances_path}: annotations[{k}]"
        try:
            image_id, category, (x, y, w, h) = int(ann["image_id"]), int(ann["category_id"]), map(float, ann["bbox"])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{where} needs 'image_id', 'category_id' and a 4-number 'bbox', got {ann!r}") from e
        if image_id not in rows:
            raise InputError(f"{where}: image_id {image_id} is not in 'images'")
        if category not in class_of:
            raise InputError(f"{where}: category_id {category} is not in 'categories' (known: {ids})")
        if ann.get("iscrowd", 0):
            continue  # a crowd region is not one object
        box = _checked_box(np.array([x, y, x + w, y + h], np.float32), size_of[image_id], where)
        rows[image_id].append((box, class_of[category]))
    samples = [_sample(path, rows[image_id]) for image_id, path, _, _ in coco.images]
    return labels, samples


def _read_wider_boxes(data_dir: Path) -> list[BoxSample]:
    samples = []
    for entry in read_widerface_gt(data_dir):
        height, width = read_image(entry.path).shape[:2]  # gt.txt has no image sizes; raises on a broken image
        where = f"{data_dir / 'gt.txt'}: {entry.path.relative_to(data_dir / 'images')}"
        kept = [(_checked_box(box, (width, height), f"{where} face {k}"), 0)
                for k, box in enumerate(entry.boxes_xyxy) if not entry.invalid[k]]
        samples.append(_sample(entry.path, kept))
    return samples


def _checked_box(box: np.ndarray, size: tuple[int, int], where: str) -> np.ndarray:
    width, height = size
    x1, y1, x2, y2 = (float(v) for v in box)
    tol = EDGE_TOLERANCE_PX
    if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
        raise InputError(f"{where}: box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] (xyxy) lies outside its "
                         f"{width}x{height} image")
    if x2 <= x1 or y2 <= y1:
        raise InputError(f"{where}: box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] (xyxy) has no area")
    return np.clip(box, 0, [width, height, width, height]).astype(np.float32)


def _mean_rgb(spec: InputSpec) -> tuple[float, float, float]:
    """The mean pixel in RGB order: the border colour that normalises to zero."""
    mean = tuple(float(m) for m in spec.mean)
    return mean[::-1] if spec.color == Color.BGR else mean


def _sample(path: Path, rows: list) -> BoxSample:
    boxes = np.array([box for box, _ in rows], np.float32).reshape(-1, 4)
    return BoxSample(path, boxes, np.array([c for _, c in rows], np.int64))


@dataclass(frozen=True)
class BoxAugment:
    """NanoDet's detection augmentation: a random scale and shift around the model's own resize, a horizontal flip,
    brightness/contrast/saturation jitter. `enabled=False` gives the plain deployed preprocessing."""

    scale: tuple[float, float] = (0.6, 1.4)  # zoom around the image centre after the model's resize
    shift: float = 0.2  # of the input size, each axis
    flip: float = 0.5  # probability of a horizontal flip
    brightness: float = 0.2  # added, on the 0..1 scale
    contrast: tuple[float, float] = (0.6, 1.4)
    saturation: tuple[float, float] = (0.5, 1.2)  # blend with the grey image
    min_visible: float = 0.3  # a box keeps its label if this share of its area stays on the canvas
    min_side_px: float = 2.0  # and both its sides are at least this long, in input pixels
    enabled: bool = True

    def __call__(self, sample: BoxSample, spec: InputSpec, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One training input: ((C, H, W) float32 normalised as `spec` says, boxes (M, 4) in input pixels,
        classes (M,))."""
        if spec.resize != Resize.STRETCH:
            raise InputError(f"training augmentation supports resize='stretch' inputs, got {spec.resize.value!r}")
        image = read_image(sample.path)  # RGB uint8
        out_h, out_w = spec.input_hw
        height, width = image.shape[:2]
        matrix = np.diag([out_w / width, out_h / height, 1.0])  # the deployed stretch resize
        if self.enabled:
            matrix = self._random_affine(rng, out_w, out_h) @ matrix
        warped = cv2.warpAffine(image, matrix[:2], (out_w, out_h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=_mean_rgb(spec))
        boxes, classes = self._map_boxes(sample, matrix, out_w, out_h)
        pixels = self._jitter(warped, rng) if self.enabled else warped.astype(np.float32)
        return to_input([pixels], spec)[0], boxes, classes

    def _random_affine(self, rng: np.random.Generator, out_w: int, out_h: int) -> np.ndarray:
        scale = rng.uniform(*self.scale)
        dx, dy = rng.uniform(-self.shift, self.shift, 2) * (out_w, out_h)
        centre = np.array([[1, 0, -out_w / 2], [0, 1, -out_h / 2], [0, 0, 1]], np.float64)
        zoom = np.diag([scale, scale, 1.0])
        back = np.array([[1, 0, out_w / 2 + dx], [0, 1, out_h / 2 + dy], [0, 0, 1]], np.float64)
        matrix = back @ zoom @ centre
        if rng.random() < self.flip:
            matrix = np.array([[-1, 0, out_w], [0, 1, 0], [0, 0, 1]], np.float64) @ matrix
        return matrix

    def _map_boxes(self, sample: BoxSample, matrix: np.ndarray, out_w: int, out_h: int):
        boxes = sample.boxes_xyxy.astype(np.float64)
        xs = boxes[:, [0, 2]] * matrix[0, 0] + matrix[0, 2]  # the matrix is axis-aligned: no rotation or shear
        ys = boxes[:, [1, 3]] * matrix[1, 1] + matrix[1, 2]
        mapped = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], 1)
        area = (mapped[:, 2] - mapped[:, 0]) * (mapped[:, 3] - mapped[:, 1])
        clipped = np.clip(mapped, 0, [out_w, out_h, out_w, out_h])
        sides = clipped[:, 2:] - clipped[:, :2]
        visible = sides.prod(1) / np.maximum(area, 1e-9)
        keep = (visible >= self.min_visible) & (sides.min(1) >= self.min_side_px)
        return clipped[keep].astype(np.float32), sample.classes[keep]

    def _jitter(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        pixels = image.astype(np.float32) / 255.0
        pixels += rng.uniform(-self.brightness, self.brightness)
        pixels *= rng.uniform(*self.contrast)
        grey = pixels @ np.array([0.299, 0.587, 0.114], np.float32)  # RGB luma
        alpha = rng.uniform(*self.saturation)
        pixels = pixels * alpha + grey[..., None] * (1 - alpha)
        return np.clip(pixels * 255.0, 0, 255)
