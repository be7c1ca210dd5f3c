"""Video in with opencv: `open_video(path)` -> (capture, fps, frames); `read_frames(capture)` yields RGB frames.
Writing (H.264 through PyAV) lives outside the runtime, in `edgepipe.video_out`: a device that only reads needs
nothing more than opencv."""

from __future__ import annotations

from pathlib import Path

import cv2

from edgepipe.runtime.errors import InputError

__all__ = ["open_video", "read_frames", "VIDEO_SUFFIXES"]

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
