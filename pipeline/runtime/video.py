"""Video in and out with opencv: `read_video(path)` yields RGB frames; `VideoOut` writes an mp4 atomically."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edgepipe.runtime.atomic import partial_file, publish
from edgepipe.runtime.errors import InputError

__all__ = ["open_video", "VideoOut"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def open_video(path: str | Path) -> tuple[cv2.VideoCapture, float, int]:
    """Open a video; return (capture, fps, frame count). Raises InputError if it cannot be read or has no frames."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such video file")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InputError(f"{path}: cannot be opened as a video")
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, _ = capture.read()
    if not ok or frames <= 0:
        capture.release()
        raise InputError(f"{path}: video has no frames")
    capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    return capture, float(fps), frames


def read_frames(capture: cv2.VideoCapture):
    """Yield RGB frames until the stream ends."""
    while True:
        ok, frame_bgr = capture.read()
        if not ok:
            return
        yield cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)


class VideoOut:
    """An mp4 writer that only appears at `path` when closed without error (use as a context manager); until then
    it is `<name>.partial-<pid>-<random>.mp4` beside it."""

    def __init__(self, path: str | Path, fps: float, size_wh: tuple[int, int]):
        self.path = Path(path)
        self._tmp = partial_file(self.path, ".mp4")  # the suffix tells opencv the container
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size_wh)
        if not self._writer.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise InputError(f"{self.path}: opencv cannot write mp4 video here")

    def write(self, frame_rgb: np.ndarray) -> None:
        self._writer.write(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))

    def __enter__(self) -> "VideoOut":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._writer.release()
        if exc_type is None:
            publish(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)
