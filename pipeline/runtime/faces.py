"""Face detection, alignment, embedding and a persistent gallery, on onnxruntime + numpy + opencv.

`FaceDetector`, `FaceEmbedder` and `FaceGallery` are the public classes; decoding is the head's
(`meta.head.decode`) and `face_chip` aligns, and the PyTorch reference path reuses both.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edgepipe.runtime.detection import decode_many
from edgepipe.runtime.enums import Task
from edgepipe.runtime.errors import ArtifactError, InputError
from edgepipe.runtime.gallery import FaceGallery, Match
from edgepipe.runtime.preprocess import align_face, as_rgb, prepare, to_input
from edgepipe.runtime.results import Face, InputMapping
from edgepipe.runtime.session import Model, load
from edgepipe.runtime.specs import EmbeddingHead

__all__ = ["FaceDetector", "FaceEmbedder", "FaceGallery", "FaceRecognizer", "Match"]

# Keypoints some detectors give and others derive: the mouth centre is the middle of its corners.
_DERIVED = {"mouth": ("mouth_right", "mouth_left")}
_REQUIRED = ("right_eye", "left_eye")  # with at least one more point, they fix a similarity transform


def _with_derived(points: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    derived = {name: (points[a] + points[b]) / 2 for name, (a, b) in _DERIVED.items()
               if name not in points and a in points and b in points}
    return {**points, **derived}


def alignment_points(face: Face, head: EmbeddingHead) -> tuple[np.ndarray, np.ndarray]:
    """The (source, chip) point pairs that align `face` for `head`: every keypoint both the detector and the
    embedder's template name (a mouth centre derived from mouth corners on either side), in template order.

    Raises:
        ArtifactError: fewer than the two eyes plus one more point in common.
    """
    source = _with_derived({name: np.asarray(xy, np.float64) for name, xy in zip(face.keypoint_names,
                                                                                 face.keypoints_xy)})
    target = _with_derived({name: np.array([x, y], np.float64) for name, x, y in head.template})
    common = [name for name in target if name in source]
    if not all(name in common for name in _REQUIRED) or len(common) < 3:
        raise ArtifactError(f"the embedder's template names keypoints {list(target)}; the detector gives "
                            f"{list(face.keypoint_names)}: they share {common}, too few to align a face")
    if "mouth" in common and any(part in common for part in _DERIVED["mouth"]):
        common.remove("mouth")  # a derived centre adds nothing to the corners it comes from
    return np.stack([source[n] for n in common]), np.stack([target[n] for n in common])


def face_chip(image_rgb: np.ndarray, face: Face, head: EmbeddingHead) -> np.ndarray:
    """Align one face into the embedder's chip using the keypoints it shares with the embedder's template."""
    source, target = alignment_points(face, head)
    return align_face(image_rgb, source, target, head.chip_size)


def _require_task(model: Model, task: Task, what: str) -> None:
    if model.meta.head.task != task:
        raise ArtifactError(f"{model.path}: is a {model.meta.task.value} model ({model.meta.model_name}), not a {what}")


def nearest_face(faces: list[Face], centre_xy: np.ndarray) -> Face | None:
    """The face whose box centre is nearest `centre_xy` (None if there are none)."""
    if not faces:
        return None
    return min(faces, key=lambda f: float(np.linalg.norm((f.box_xyxy[:2] + f.box_xyxy[2:]) / 2 - centre_xy)))


class FaceDetector:
    """BlazeFace-style detector: `detect(image_rgb) -> list[Face]`, best score first; `refine(image, face)` re-measures
    one face's keypoints for alignment."""

    def __init__(self, model: Model):
        _require_task(model, Task.FACE_DETECTION, "face detector")
        self.model = model

    @classmethod
    def from_path(cls, path: str | Path, **load_options) -> "FaceDetector":
        return cls(load(path, **load_options))

    def detect(self, image_rgb: np.ndarray, score_thresh: float | None = None) -> list[Face]:
        """Faces in source pixels, best first; the image is anything `preprocess.as_rgb` takes."""
        meta = self.model.meta
        batch, scale_xy = prepare(image_rgb, meta.input)  # prepare takes what as_rgb takes
        return meta.head.decode(self.model.run(batch), meta, scale_xy, image_rgb.shape[:2], score_thresh)

    def detect_many(self, images_rgb: list[np.ndarray], score_thresh: float | None = None) -> list[list[Face]]:
        """`detect` for several images, in one run per input shape (a fixed-size input: one run)."""
        return decode_many(self.model, images_rgb, score_thresh)

    def refine(self, image_rgb: np.ndarray, face: Face) -> Face:
        """The same face with keypoints re-detected in a crop `refine_crop_scale` box widths wide around it.

        Measured on photos (keypoint spread under small shifts of the crop, in eye distances): a face ~1/4 of the
        input wide gives the steadiest keypoints, steadier than a face that fills a whole 250 px photo. Returns the
        face unchanged if refinement is off or the face is lost in the crop.
        """
        meta = self.model.meta
        image_rgb = as_rgb(image_rgb)
        crop_scale = getattr(meta.head, "refine_crop_scale", 0.0)  # a head without one has no second pass
        if crop_scale <= 0:
            return face
        in_h, in_w = self.model.meta.input.input_hw
        centre = (face.box_xyxy[:2] + face.box_xyxy[2:]) / 2
        side = float(max(face.box_xyxy[2] - face.box_xyxy[0], face.box_xyxy[3] - face.box_xyxy[1])) * crop_scale
        if side < 1:
            return face
        scale = np.array([in_w / side, in_h / side])
        offset = (centre - side / 2) * scale  # image -> crop: p * scale - offset
        matrix = np.array([[scale[0], 0, -offset[0]], [0, scale[1], -offset[1]]])
        crop = cv2.warpAffine(image_rgb, matrix, (in_w, in_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        found = meta.head.decode(self.model.run(to_input([crop], meta.input)), meta, InputMapping(), (in_h, in_w))
        best = nearest_face(found, np.array([in_w, in_h]) / 2)
        if best is None:
            return face
        keypoints = ((best.keypoints_xy + offset) / scale).astype(np.float32)
        return Face(face.box_xyxy, face.score, keypoints, face.keypoint_names)


class FaceEmbedder:
    """Aligned-chip face embedder: `embed(image_rgb, faces) -> (N, D)`."""

    def __init__(self, model: Model):
        _require_task(model, Task.FACE_EMBEDDING, "face embedder")
        self.model = model
        self.head: EmbeddingHead = model.meta.head  # type: ignore[assignment]

    @classmethod
    def from_path(cls, path: str | Path, **load_options) -> "FaceEmbedder":
        return cls(load(path, **load_options))

    def embed_chips(self, chips_rgb: list[np.ndarray]) -> np.ndarray:
        """Embed already-aligned RGB chips: (N, D) float32."""
        if not len(chips_rgb):
            return np.zeros((0, self.head.dim), np.float32)
        chips = [as_rgb(chip, f"chip {i}") for i, chip in enumerate(chips_rgb)]
        return self.model.run(to_input(chips, self.model.meta.input))[0]

    def embed(self, image_rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        image_rgb = as_rgb(image_rgb)
        return self.embed_chips([face_chip(image_rgb, face, self.head) for face in faces])


class FaceRecognizer:
    """Detector + embedder + gallery: what a CLI or UI drives to enroll and identify people in photos."""

    def __init__(self, detector: FaceDetector, embedder: FaceEmbedder, gallery: FaceGallery | None = None):
        self.detector = detector
        self.embedder = embedder
        self.gallery = gallery if gallery is not None else FaceGallery.for_embedder(embedder)
        if self.gallery.model_name != embedder.model.meta.model_name:
            raise InputError(f"gallery was made with {self.gallery.model_name!r}, the embedder is "
                             f"{embedder.model.meta.model_name!r}: distances would not be comparable")

    def enroll(self, name: str, image_rgb: np.ndarray, source: str = "image") -> Face:
        """Add the largest face of `image_rgb` under `name`; raises InputError if there is none."""
        face, embedding = self.largest_face(image_rgb, source)
        self.gallery.enroll(name, embedding)
        return face

    def largest_face(self, image_rgb: np.ndarray, source: str = "image") -> tuple[Face, np.ndarray]:
        """The largest face of `image_rgb` (keypoints refined) and its (1, D) embedding; InputError if none."""
        image_rgb = as_rgb(image_rgb, source)
        faces = self.detector.detect(image_rgb)
        if not faces:
            raise InputError(f"no face found in {source}")
        face = self.detector.refine(image_rgb, max(faces, key=lambda f: f.area))
        return face, self.embedder.embed(image_rgb, [face])

    def identify(self, image_rgb: np.ndarray, threshold: float | None = None) -> list[tuple[Face, Match]]:
        """Every face in the image with who it is (name None = unknown), best detection first."""
        image_rgb = as_rgb(image_rgb)
        faces = [self.detector.refine(image_rgb, face) for face in self.detector.detect(image_rgb)]
        matches = self.gallery.identify(self.embedder.embed(image_rgb, faces), threshold) if faces else []
        return list(zip(faces, matches))
