"""Object detection on onnxruntime + numpy: `ObjectDetector(model).detect(image_rgb) -> list[Detection]`.

Decoding is the head's (`meta.head.decode`), which the PyTorch reference path calls on the torch model's outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepipe.runtime.enums import Task
from edgepipe.runtime.errors import ArtifactError
from edgepipe.runtime.preprocess import as_rgb, prepare, resize_to_input, to_input
from edgepipe.runtime.results import Detection, InputMapping
from edgepipe.runtime.session import Model, load

__all__ = ["ObjectDetector", "Detection", "decode_many"]


class ObjectDetector:
    """A box detector artifact (any head whose task is detection): `detect(image_rgb, score_thresh=None,
    classes=None)`."""

    def __init__(self, model: Model):
        if model.meta.head.task != Task.DETECTION:
            raise ArtifactError(f"{model.path}: is a {model.meta.task.value} model ({model.meta.model_name}), "
                                "not an object detector")
        self.model = model

    @classmethod
    def from_path(cls, path: str | Path, **load_options) -> "ObjectDetector":
        return cls(load(path, **load_options))

    @property
    def labels(self) -> tuple[str, ...]:
        return self.model.meta.labels

    def detect(self, image_rgb: np.ndarray, score_thresh: float | None = None,
               classes: set[str] | None = None) -> list[Detection]:
        """Detections in source pixels, best first; `classes` keeps only those label names. The image is anything
        `preprocess.as_rgb` takes (RGB, grey, RGBA)."""
        meta = self.model.meta
        batch, scale_xy = prepare(image_rgb, meta.input)  # prepare takes what as_rgb takes
        found = meta.head.decode(self.model.run(batch), meta, scale_xy, image_rgb.shape[:2], score_thresh)
        return [d for d in found if classes is None or d.label in classes]

    def detect_many(self, images_rgb: list[np.ndarray], score_thresh: float | None = None,
                    classes: set[str] | None = None) -> list[list[Detection]]:
        """`detect` for several images, in one run per input shape (one for a fixed-size input): what a batch
        job feeds the artifact's dynamic batch axis."""
        found = decode_many(self.model, images_rgb, score_thresh)
        return [[d for d in each if classes is None or d.label in classes] for each in found]


def decode_many(model: Model, images_rgb: list[np.ndarray], score_thresh: float | None = None) -> list:
    """Each image's decoded results (`meta.head.decode`), the images resized and stacked so that those sharing an
    input shape run as one batch; same results as one `prepare` + run + decode per image."""
    meta = model.meta
    prepared: list[tuple[np.ndarray, InputMapping]] = [resize_to_input(as_rgb(im), meta.input) for im in images_rgb]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (resized, _) in enumerate(prepared):
        groups.setdefault(resized.shape, []).append(i)
    results: list = [None] * len(images_rgb)
    for members in groups.values():
        outputs = model.run(to_input([prepared[i][0] for i in members], meta.input))
        for index, i in enumerate(members):
            results[i] = meta.head.decode(outputs, meta, prepared[i][1], images_rgb[i].shape[:2], score_thresh, index)
    return results
