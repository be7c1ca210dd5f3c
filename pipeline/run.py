"""Run an artifact on an image, a folder of images or a video and write annotated copies:
`run_artifact(artifact, input_path, out_path) -> RunSummary`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from edgepipe.errors import InputError, SpecError
from edgepipe.runtime import FaceDetector, FaceEmbedder, FaceGallery, FaceRecognizer, ObjectDetector, load
from edgepipe.runtime.atomic import atomic_write, check_destination
from edgepipe.runtime.draw import check_image_path, draw_detections, draw_faces, draw_identities, encode_image
from edgepipe.runtime.preprocess import IMAGE_SUFFIXES, read_image
from edgepipe.runtime.specs import Task
from edgepipe.runtime.video import VIDEO_SUFFIXES, VideoOut, open_video, read_frames

__all__ = ["run_artifact", "RunSummary"]


@dataclass(frozen=True)
class RunSummary:
    kind: str  # "image", "folder" or "video"
    items: int  # images or frames processed
    detections: int
    seconds: float
    out: Path

    @property
    def fps(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


def _annotator(artifact: Path, score_thresh: float | None, gallery: Path | None,
               detector: Path | None) -> Callable[[np.ndarray], tuple[np.ndarray, int]]:
    """image -> (annotated image, number of results), for whatever kind of model the artifact is."""
    model = load(artifact)
    head = model.meta.head
    if head.task == Task.DETECTION:
        objects = ObjectDetector(model)

        def detect_objects(im):
            found = objects.detect(im, score_thresh)
            return draw_detections(im, found), len(found)

        return detect_objects
    if head.task == Task.FACE_DETECTION:
        faces = FaceDetector(model)

        def detect_faces(im):
            found = faces.detect(im, score_thresh)
            return draw_faces(im, found, [f"{face.score:.2f}" for face in found]), len(found)

        return detect_faces
    if head.task == Task.FACE_EMBEDDING:
        if gallery is None or detector is None:
            raise SpecError(f"{artifact} is a face embedder: pass --gallery and --detector to identify people")
        from edgepipe.cli_faces import enable_gallery_index

        enable_gallery_index()
        recognizer = FaceRecognizer(FaceDetector.from_path(detector), FaceEmbedder(model), FaceGallery.load(gallery))

        def identify(im):
            results = recognizer.identify(im)
            return draw_identities(im, results)[0], len(results)

        return identify
    raise SpecError(f"{artifact}: no runner for a {head.kind!r} head")


def run_artifact(artifact: str | Path, input_path: str | Path, out_path: str | Path, *,
                 score_thresh: float | None = None, gallery: Path | None = None, detector: Path | None = None,
                 progress: bool = True) -> RunSummary:
    """Annotate an image (-> image), a folder of images (-> folder) or a video (-> mp4).

    A folder's unreadable images are skipped: the others are written, then InputError names every one skipped.

    Raises:
        InputError: the input is missing, not an image/video, has no frames, some of a folder's images could not
            be read, or the output cannot be written.
        ArtifactError: the artifact does not load.
    """
    input_path, out_path = Path(input_path), Path(out_path)
    if not input_path.exists():
        raise InputError(f"{input_path}: no such file or folder")
    _check_out(input_path, out_path)  # before any work: a bad destination must not cost a whole video
    annotate = _annotator(Path(artifact), score_thresh, gallery, detector)
    started = time.perf_counter()
    if input_path.is_dir():
        images = sorted(p for p in input_path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise InputError(f"{input_path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        total, unreadable = 0, []
        for path in tqdm(images, desc="images", unit="img", disable=None if progress else True):
            try:
                image = read_image(path)
            except InputError as e:  # one bad photo does not cost the others: they are written, it is reported
                unreadable.append(str(e))
                continue
            annotated, n = annotate(image)
            atomic_write(out_path / path.name, encode_image(annotated, path.suffix.lower()))
            total += n
        if unreadable:
            raise InputError(f"{len(unreadable)} of {len(images)} images could not be read (the other "
                             f"{len(images) - len(unreadable)} are in {out_path}): {'; '.join(unreadable)}")
        return RunSummary("folder", len(images), total, time.perf_counter() - started, out_path)
    if input_path.suffix.lower() in VIDEO_SUFFIXES:
        return _run_video(annotate, input_path, out_path, progress, started)
    annotated, n = annotate(read_image(input_path))
    atomic_write(out_path, encode_image(annotated, out_path.suffix.lower() or ".jpg"))
    return RunSummary("image", 1, n, time.perf_counter() - started, out_path)


def _check_out(input_path: Path, out_path: Path) -> None:
    """Refuse a destination that cannot take what `input_path` produces."""
    if input_path.is_dir():
        check_destination(out_path, folder=True)
    elif input_path.suffix.lower() not in VIDEO_SUFFIXES:
        check_image_path(out_path)
    elif out_path.suffix.lower() != ".mp4":
        raise InputError(f"{out_path}: a video is written as .mp4, got {out_path.suffix or 'no suffix'!r}")
    else:
        check_destination(out_path)


def _run_video(annotate, input_path: Path, out_path: Path, progress: bool, started: float) -> RunSummary:
    capture, fps, frames = open_video(input_path)
    width, height = int(capture.get(3)), int(capture.get(4))  # CAP_PROP_FRAME_WIDTH, CAP_PROP_FRAME_HEIGHT
    count = total = 0
    try:
        with VideoOut(out_path, fps, (width, height)) as video:
            for frame in tqdm(read_frames(capture), total=frames, desc="frames", unit="frame",
                              disable=None if progress else True):
                annotated, n = annotate(frame)
                video.write(annotated)
                count, total = count + 1, total + n
    finally:
        capture.release()
    return RunSummary("video", count, total, time.perf_counter() - started, out_path)
