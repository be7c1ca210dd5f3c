"""The work one image takes, written once for every engine: `ImageTask(kind, ...)(paths) -> [record, ...]`.

`edgepipe run`, `eval` and `faces enroll` hand lists of image paths to an engine (`edgepipe.engine`): the local
one calls an `ImageTask` built on models it already has open; the Ray one sends a `TaskSpec` (paths and numbers,
nothing else) to each actor, which opens the same models once and builds the same `ImageTask`. Both therefore
produce the same records, which is what lets `eval --engine ray` promise the local engine's metric.

A record is one image's results, a dict of plain values (the Parquet schema in `edgepipe.engine`):
image, width, height, error (None, or why the image could not be used), boxes [[x1, y1, x2, y2], ...], scores,
labels, names (identity or None per face), distances, embeddings ([] unless asked) and note.

Kinds:
    detect        every box of an object detector (optionally only `classes`)
    faces         every face of a face detector
    identify      every face, refined, embedded and named from a gallery
    largest_face  the largest face, refined and embedded (enrolling)
    centre_face   the face nearest the photo's centre, refined and embedded (LFW: photos are centred on their
                  person); when no face passes the detector's threshold the lowest-threshold one is used and the
                  record's note says so
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepipe.runtime import FaceDetector, FaceEmbedder, FaceGallery, InputError, ObjectDetector, load, read_image
from edgepipe.runtime.faces import nearest_face
from edgepipe.runtime.specs import Task

__all__ = ["ImageTask", "TaskSpec", "KINDS", "FALLBACK_NOTE"]

KINDS = ("detect", "faces", "identify", "largest_face", "centre_face")
FALLBACK_SCORE = 0.05  # centre_face: the threshold of the second look when nothing passed the detector's own
FALLBACK_NOTE = "no confident face: the lowest-threshold detection nearest the centre was used"


def record(image: str, width: int = 0, height: int = 0, *, error: str | None = None, boxes=(), scores=(), labels=(),
           names=(), distances=(), embeddings=(), note: str | None = None) -> dict:
    """One image's record, every field present, as plain Python values (what Parquet and JSON take)."""
    return {"image": image, "width": int(width), "height": int(height), "error": error,
            "boxes": [[float(v) for v in box] for box in boxes], "scores": [float(s) for s in scores],
            "labels": list(labels), "names": list(names), "distances": [float(d) for d in distances],
            "embeddings": [[float(v) for v in e] for e in embeddings], "note": note}


class ImageTask:
    """One kind of per-image work on models already open; call it with a list of image paths.

    An image that cannot be read is a record with its `error`, not an exception: a bad file among thousands costs
    only itself. Readable images are run together, in one batch per input shape, where the kind allows.
    """

    def __init__(self, kind: str, *, detector: ObjectDetector | FaceDetector | None = None,
                 embedder: FaceEmbedder | None = None, gallery: FaceGallery | None = None,
                 score_thresh: float | None = None, classes: tuple[str, ...] | None = None,
                 embeddings: bool = False):
        if kind not in KINDS:
            raise ValueError(f"unknown image task {kind!r}; one of {', '.join(KINDS)}")
        if detector is None or (kind != "detect" and kind != "faces" and embedder is None):
            raise ValueError(f"image task {kind!r} needs a detector{'' if kind in ('detect', 'faces') else ' and an embedder'}")
        if kind == "identify" and gallery is None:
            raise ValueError("image task 'identify' needs a gallery")
        if gallery is not None and embedder is not None and gallery.model_name != embedder.model.meta.model_name:
            raise InputError(f"gallery was made with {gallery.model_name!r}, the embedder is "
                             f"{embedder.model.meta.model_name!r}: distances would not be comparable")
        self.kind, self.detector, self.embedder, self.gallery = kind, detector, embedder, gallery
        self.score_thresh, self.classes, self.embeddings = score_thresh, classes, embeddings

    def __call__(self, paths: list[str]) -> list[dict]:
        images, out = {}, {}
        for path in paths:
            try:
                images[path] = read_image(path)
            except InputError as e:
                out[path] = record(str(path), error=str(e))
        readable = list(images)
        found = self._detect([images[p] for p in readable])
        for path, faces in zip(readable, found):
            image = images[path]
            try:
                out[path] = self._one(str(path), image, faces)
            except InputError as e:
                out[path] = record(str(path), image.shape[1], image.shape[0], error=str(e))
        return [out[path] for path in paths]

    def _detect(self, images: list[np.ndarray]) -> list[list]:
        if not images:
            return []
        if self.kind == "detect":
            classes = set(self.classes) if self.classes else None
            return self.detector.detect_many(images, self.score_thresh, classes)
        return self.detector.detect_many(images, self.score_thresh)

    def _one(self, path: str, image: np.ndarray, found: list) -> dict:
        size = (image.shape[1], image.shape[0])
        if self.kind == "detect":
            return record(path, *size, boxes=[d.box_xyxy for d in found], scores=[d.score for d in found],
                          labels=[d.label for d in found])
        if self.kind == "faces":
            return record(path, *size, boxes=[f.box_xyxy for f in found], scores=[f.score for f in found],
                          labels=["face"] * len(found))
        note = None
        if self.kind == "identify":
            faces = [self.detector.refine(image, face) for face in found]
        else:
            if self.kind == "largest_face":
                face = max(found, key=lambda f: f.area) if found else None
            else:
                centre = np.array(size) / 2
                face = nearest_face(found, centre)
                if face is None:
                    face = nearest_face(self.detector.detect(image, score_thresh=FALLBACK_SCORE), centre)
                    note = FALLBACK_NOTE if face is not None else None
            if face is None:
                raise InputError(f"no face found in {path}")
            faces = [self.detector.refine(image, face)]
        vectors = self.embedder.embed(image, faces) if faces else np.zeros((0, self.embedder.head.dim), np.float32)
        keep = self.embeddings or self.kind != "identify"
        fields = dict(boxes=[f.box_xyxy for f in faces], scores=[f.score for f in faces], labels=["face"] * len(faces),
                      embeddings=vectors if keep else (), note=note)
        if self.kind == "identify" and faces:
            matches = self.gallery.identify(vectors)
            fields.update(names=[m.name for m in matches], distances=[m.distance for m in matches])
        return record(path, *size, **fields)


@dataclass(frozen=True)
class TaskSpec:
    """An `ImageTask` as paths and numbers, to open in another process: `spec.open()`."""

    kind: str
    artifact: str  # the detector for detect/faces, else the embedder
    detector: str | None = None  # the face detector beside an embedder
    gallery: str | None = None
    score_thresh: float | None = None
    classes: tuple[str, ...] | None = None
    embeddings: bool = False
    threads: int = 0  # onnxruntime intra-op threads per session (0: onnxruntime's choice)

    def open(self) -> ImageTask:
        """Load the models (once per process) and return the task. Raises ArtifactError for a bad artifact."""
        model = load(self.artifact, intra_op_threads=self.threads)
        options = dict(score_thresh=self.score_thresh, classes=self.classes, embeddings=self.embeddings)
        if self.kind in ("detect", "faces"):
            detector = ObjectDetector(model) if model.meta.head.task == Task.DETECTION else FaceDetector(model)
            return ImageTask(self.kind, detector=detector, **options)
        if self.detector is None:
            raise ValueError(f"image task {self.kind!r} needs a face detector beside the embedder")
        detector = FaceDetector(load(self.detector, intra_op_threads=self.threads))
        gallery = None
        if self.gallery is not None:
            from edgepipe.cli_faces import enable_gallery_index

            enable_gallery_index()
            gallery = FaceGallery.load(Path(self.gallery))
        return ImageTask(self.kind, detector=detector, embedder=FaceEmbedder(model), gallery=gallery, **options)
