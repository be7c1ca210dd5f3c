"""Where video frames come from: `open_source(spec)` -> a `FrameSource` yielding (RGB frame, time captured).

A spec is a video file, a folder of frames (sorted by name), a camera (`/dev/videoN` or its index N) or a stream
URL (rtsp://, http://, https://). A file or folder has a frame count and every frame is read; a camera or stream is
live: no count, frames until `max_frames` or `duration_s`, or until it ends. A live source that stalls (no frame
for `timeout_s`) or drops is reported in one log line and opened again, up to `reconnect` times; after that it
ends, and what was read stays good. Opening never waits longer than `timeout_s`.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from edgepipe.runtime.errors import InputError
from edgepipe.runtime.preprocess import IMAGE_SUFFIXES, read_image

__all__ = ["open_source", "FrameSource", "is_live"]

log = logging.getLogger(__name__)
_URL = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp)://", re.I)
_CAMERA = re.compile(r"^(/dev/video(\d+)|(\d+))$")


def is_live(spec: str | Path) -> bool:
    """Whether `spec` names a camera or a stream (no frame count, newest frame wins)."""
    return bool(_URL.match(str(spec)) or _CAMERA.match(str(spec)))


@dataclass
class FrameSource:
    """Frames of one source; iterate for (frame_rgb, captured_at perf_counter seconds)."""

    spec: str
    fps: float
    size_wh: tuple[int, int]
    frames: int | None  # None: live
    live: bool
    max_frames: int | None = None
    duration_s: float | None = None
    reconnect: int = 0
    timeout_s: float = 5.0
    reconnects: int = 0  # done so far
    _capture: cv2.VideoCapture | None = field(default=None, repr=False)
    _paths: list[Path] = field(default_factory=list, repr=False)

    def __iter__(self) -> Iterator[tuple[np.ndarray, float]]:
        started, count = time.perf_counter(), 0
        for frame in self._frames():
            yield frame, time.perf_counter()
            count += 1
            if (self.max_frames and count >= self.max_frames) or \
                    (self.duration_s and time.perf_counter() - started >= self.duration_s):
                return

    def _frames(self) -> Iterator[np.ndarray]:
        if self._paths:
            for path in self._paths:
                yield read_image(path)
            return
        while True:
            got = 0
            while self._capture is not None:
                ok, frame_bgr = self._capture.read()
                if not ok:
                    break
                got += 1
                yield cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
            if not self.live or self.reconnects >= self.reconnect:
                if self.live:
                    log.warning("%s: the stream stopped (no frame for %.0f s, or it ended)%s", self.spec,
                                self.timeout_s, f" after {self.reconnects} reconnect(s)" if self.reconnect else "")
                return
            self.reconnects += 1
            log.warning("%s: the stream stopped after %d frame(s); reconnecting (%d of %d)", self.spec, got,
                        self.reconnects, self.reconnect)
            self.close()
            self._capture = _open_capture(self.spec, self.timeout_s, required=False)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def _open_capture(spec: str, timeout_s: float, required: bool = True) -> cv2.VideoCapture | None:
    camera = _CAMERA.match(spec)
    ms = int(timeout_s * 1000)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
    if camera:
        capture = cv2.VideoCapture(int(camera.group(2) or camera.group(3)), cv2.CAP_ANY, params)
    else:
        capture = cv2.VideoCapture(spec, cv2.CAP_FFMPEG, params)
    if capture.isOpened():
        return capture
    capture.release()
    if required:
        what = "camera" if camera else "stream"
        raise InputError(f"{spec}: the {what} cannot be opened (nothing answered within {timeout_s:.0f} s, or it is "
                         "not a video)")
    return None


def open_source(spec: str | Path, *, max_frames: int | None = None, duration_s: float | None = None,
                reconnect: int = 0, timeout_s: float = 5.0, folder_fps: float = 25.0) -> FrameSource:
    """Open a file, a folder of frames, a camera or a stream (see the module). Raises InputError, in one line,
    for a source that does not exist, cannot be opened or has no frames."""
    spec = str(spec)
    limits = dict(max_frames=max_frames, duration_s=duration_s, reconnect=reconnect, timeout_s=timeout_s)
    if is_live(spec):
        capture = _open_capture(spec, timeout_s)
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = fps if 1 <= fps <= 240 else 25.0
        size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        return FrameSource(spec, fps, size, None, True, _capture=capture, **limits)
    path = Path(spec)
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise InputError(f"{path}: a folder of frames with no images ({', '.join(IMAGE_SUFFIXES)})")
        first = read_image(paths[0])
        return FrameSource(spec, folder_fps, (first.shape[1], first.shape[0]), len(paths), False, _paths=paths,
                           **limits)
    from edgepipe.runtime.video import open_video

    capture, fps, frames = open_video(path)
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    return FrameSource(spec, fps, size, frames, False, _capture=capture, **limits)
