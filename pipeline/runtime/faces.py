"""Face detection, alignment, embedding and a persistent gallery, on onnxruntime + numpy + opencv.

`FaceDetector`, `FaceEmbedder` and `FaceGallery` are the public classes; decoding is the head's
(`meta.head.decode`) and `face_chip` aligns, and the PyTorch reference path reuses both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgepipe.runtime.atomic import atomic_write, locked
from edgepipe.runtime.enums import Task
from edgepipe.runtime.errors import ArtifactError, InputError
from edgepipe.runtime.postprocess import embedding_distance
from edgepipe.runtime.preprocess import align_face, as_rgb, prepare, to_input
from edgepipe.runtime.results import Face, InputMapping
from edgepipe.runtime.session import Model, load
from edgepipe.runtime.specs import EmbeddingHead

__all__ = ["FaceDetector", "FaceEmbedder", "FaceGallery"]

GALLERY_FORMAT = "edgepipe-face-gallery"
GALLERY_VERSION = 1


@dataclass(frozen=True)
class Match:
    """Who a face is: `name` is None for an unknown face; `distance` is to the nearest enrolled embedding."""

    name: str | None
    distance: float
    nearest: str | None  # the closest enrolled name, even when over the threshold


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


class FaceGallery:
    """Named face embeddings persisted as JSON (no pickle); identifies by nearest distance under a threshold."""

    def __init__(self, model_name: str, metric: str, threshold: float):
        self.model_name = model_name
        self.metric = metric
        self.threshold = float(threshold)
        self._people: dict[str, np.ndarray] = {}  # name -> (n, D)

    @classmethod
    def for_embedder(cls, embedder: FaceEmbedder) -> "FaceGallery":
        return cls(embedder.model.meta.model_name, embedder.head.metric, embedder.head.match_thresh)

    @property
    def names(self) -> list[str]:
        return sorted(self._people)

    def count(self, name: str) -> int:
        return len(self._people.get(name, ()))

    def enroll(self, name: str, embeddings: np.ndarray) -> None:
        """Add embeddings (D,) or (N, D) under `name`; checked before anything changes."""
        name = self._checked_name(name)
        embeddings = np.atleast_2d(np.asarray(embeddings, np.float32))
        dims = {v.shape[1] for v in self._people.values()}
        if embeddings.ndim != 2 or not embeddings.size or (dims and embeddings.shape[1] not in dims):
            raise InputError(f"embeddings of shape {embeddings.shape} do not fit this gallery "
                             f"(expected (N, {dims.pop() if dims else 'D'}))")
        if not np.isfinite(embeddings).all():
            raise InputError(f"embeddings for {name!r} hold NaN or infinite values")
        if name in self._people:
            embeddings = np.concatenate([self._people[name], embeddings])
        self._people[name] = embeddings

    @staticmethod
    def _checked_name(name: str) -> str:
        name = str(name).strip()
        if not name:
            raise InputError("a gallery name must not be empty")
        return name

    def remove(self, name: str) -> None:
        if name not in self._people:
            raise InputError(f"gallery has no person {name!r}; enrolled: {self.names}")
        del self._people[name]

    def rename(self, old: str, new: str) -> None:
        """Give `old`'s embeddings the name `new`; every check comes before the change, so a bad name loses nothing."""
        new = self._checked_name(new)
        if old not in self._people:
            raise InputError(f"gallery has no person {old!r}; enrolled: {self.names}")
        if new in self._people:
            raise InputError(f"gallery already has a person {new!r}")
        self._people[new] = self._people.pop(old)

    def identify(self, embeddings: np.ndarray, threshold: float | None = None) -> list[Match]:
        """Match each row of `embeddings` (N, D) to the nearest enrolled person."""
        threshold = self.threshold if threshold is None else float(threshold)
        if not np.isfinite(threshold) or threshold <= 0:
            raise InputError(f"match threshold must be a finite distance > 0, got {threshold!r}")
        embeddings = np.atleast_2d(embeddings)
        if not self._people:
            return [Match(None, float("inf"), None) for _ in embeddings]
        names = self.names
        best = np.stack([embedding_distance(embeddings, self._people[n], self.metric).min(1) for n in names], 1)
        matches = []
        for row in best:  # (P,) distance to each person
            j = int(row.argmin())
            matches.append(Match(names[j] if row[j] <= threshold else None, float(row[j]), names[j]))
        return matches

    @classmethod
    def update(cls, path: str | Path, change, new) -> "FaceGallery":
        """Read the gallery at `path` (or start `new()`), apply `change(gallery)` and save it, all under an
        exclusive lock: concurrent writers each see the others' changes, none is lost."""
        with locked(path):
            gallery = cls.load(path) if Path(path).exists() else new()
            change(gallery)
            gallery.save(path)
        return gallery

    def save(self, path: str | Path) -> Path:
        body = {
            "format": GALLERY_FORMAT, "version": GALLERY_VERSION, "model": self.model_name,
            "metric": self.metric, "threshold": self.threshold,
            "people": {name: self._people[name].round(7).tolist() for name in self.names},
        }
        return atomic_write(path, json.dumps(body, indent=1).encode())

    @classmethod
    def load(cls, path: str | Path) -> "FaceGallery":
        """Read a gallery file; raises InputError naming the file and the problem if it is missing or corrupt."""
        path = Path(path)
        try:
            body = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise InputError(f"{path}: no such gallery file") from e
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{path}: corrupt gallery file ({type(e).__name__}: {e})") from e
        if not isinstance(body, dict) or body.get("format") != GALLERY_FORMAT:
            raise InputError(f"{path}: not an edgepipe face gallery (format field is missing or wrong)")
        if body.get("version") != GALLERY_VERSION:
            raise InputError(f"{path}: gallery version {body.get('version')!r}; expected {GALLERY_VERSION}")
        try:
            gallery = cls(str(body["model"]), str(body["metric"]), float(body["threshold"]))
            if not np.isfinite(gallery.threshold) or gallery.threshold <= 0:
                raise ValueError(f"threshold {gallery.threshold!r} is not a finite distance > 0")
            for name, rows in body["people"].items():
                array = np.asarray(rows, np.float32)
                if array.ndim != 2 or array.shape[0] == 0:
                    raise ValueError(f"person {name!r} has embeddings of shape {array.shape}")
                gallery.enroll(name, array)
        except (KeyError, TypeError, ValueError, AttributeError, InputError) as e:  # InputError: enroll's checks
            raise InputError(f"{path}: corrupt gallery file ({type(e).__name__}: {e})") from e
        return gallery


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
