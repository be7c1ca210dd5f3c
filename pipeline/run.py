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
from edgepipe.runtime.video import VIDEO_SUFFIXES

__all__ = ["run_artifact", "RunSummary"]


@dataclass(frozen=True)
class RunSummary:
    kind: str  # "image", "folder" or "video"
    items: int  # images or frames processed
    detections: int
    seconds: float
    out: Path
    dropped: int = 0  # a live video's frames skipped because the step was busy (the newest frame wins)
    live: bool = False
    latency_ms: tuple[float, float] | None = None  # video: p50 and p99 of a frame's time from its pixels to its results

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
        recognizer = _recognizer(model, gallery, detector)

        def identify(im):
            results = recognizer.identify(im)
            return draw_identities(im, results)[0], len(results)

        return identify
    raise SpecError(f"{artifact}: no runner for a {head.kind!r} head")


def _recognizer(embedder, gallery: Path | None, detector: Path | None) -> FaceRecognizer:
    """A face embedder's model with the --detector and --gallery it needs to name people (checked to agree)."""
    if gallery is None or detector is None:
        raise SpecError(f"{embedder.path} is a face embedder: pass --gallery and --detector to identify people")
    from edgepipe.cli_faces import enable_gallery_index

    enable_gallery_index()
    return FaceRecognizer(FaceDetector.from_path(detector), FaceEmbedder(embedder), FaceGallery.load(gallery))


def run_artifact(artifact: str | Path, input_path: str | Path, out_path: str | Path, *,
                 score_thresh: float | None = None, gallery: Path | None = None, detector: Path | None = None,
                 jsonl: Path | None = None, source_options: dict | None = None, max_side: int | None = None,
                 progress: bool = True) -> RunSummary:
    """Annotate an image (-> image), a folder of images (-> folder) or a video (-> H.264 mp4, boxes tracked, faces
    named by track; `jsonl` gets each frame's results, see `edgepipe.run_video`). A video is a file, a camera
    (/dev/videoN or N), a stream URL (rtsp://, http://) or a folder of frames with an .mp4 `out_path`;
    `source_options` go to `edgepipe.runtime.streams.open_source` (max_frames, duration_s, reconnect, timeout_s);
    `max_side` shrinks a video's frames to at most that many px a side for a detector that takes any size (YuNet).

    A folder's unreadable images are skipped: the others are written, then InputError names every one skipped.

    Raises:
        InputError: the input is missing, not an image/video, has no frames, some of a folder's images could not
            be read, or the output cannot be written.
        ArtifactError: the artifact does not load.
    """
    from edgepipe.runtime.streams import is_live, open_source

    input_arg = str(input_path)  # a URL keeps its '//' (a Path would fold it)
    live = is_live(input_arg)
    input_path, out_path = Path(input_path), Path(out_path)
    if not live and not input_path.exists():
        raise InputError(f"{input_path}: no such file or folder")
    frames = input_path.is_dir() and out_path.suffix.lower() == ".mp4"  # a folder of frames, made a video
    video = live or frames or (input_path.is_file() and input_path.suffix.lower() in VIDEO_SUFFIXES)
    _check_out(input_path, out_path, video)  # before any work: a bad destination must not cost a whole video
    if jsonl is not None:
        if not video:
            raise InputError(f"{input_path}: --jsonl records a video's frames; this is not a video file")
        check_destination(jsonl)
    if video:
        from edgepipe.run_video import run_video

        step = _video_step(Path(artifact), score_thresh, gallery, detector, max_side)
        source = open_source(input_arg, **(source_options or {}))
        return run_video(step, source, out_path, jsonl, progress)
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
    annotated, n = annotate(read_image(input_path))
    atomic_write(out_path, encode_image(annotated, out_path.suffix.lower() or ".jpg"))
    return RunSummary("image", 1, n, time.perf_counter() - started, out_path)


def _video_step(artifact: Path, score_thresh, gallery: Path | None, detector: Path | None, max_side: int | None):
    from edgepipe.run_video import capped, video_step

    model = load(artifact)
    if model.meta.head.task == Task.DETECTION:
        return video_step(capped(ObjectDetector(model), max_side), score_thresh)
    if model.meta.head.task == Task.FACE_DETECTION:
        return video_step(capped(FaceDetector(model), max_side), score_thresh)
    if model.meta.head.task == Task.FACE_EMBEDDING:
        found = _recognizer(model, gallery, detector)
        return video_step(capped(found.detector, max_side), score_thresh, found.embedder, found.gallery)
    raise SpecError(f"{artifact}: no runner for a {model.meta.head.kind!r} head")


def _check_out(input_path: Path, out_path: Path, video: bool) -> None:
    """Refuse a destination that cannot take what `input_path` produces."""
    if video and out_path.suffix.lower() != ".mp4":
        raise InputError(f"{out_path}: a video is written as .mp4, got {out_path.suffix or 'no suffix'!r}")
    if video:
        check_destination(out_path)
    elif input_path.is_dir():
        check_destination(out_path, folder=True)
    else:
        check_image_path(out_path)


