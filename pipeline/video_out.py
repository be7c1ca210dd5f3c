"""Video out: `VideoOut(path, fps, size)` writes an mp4 atomically: H.264 (yuv420p, moov atom first) through
PyAV's libx264 when PyAV is installed (the `video` extra), which browsers play; else opencv's MPEG-4 Part 2
(`mp4v`), which players read but Chromium does not. Outside the runtime: PyAV is not a device dependency."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from edgepipe.runtime.atomic import partial_file, publish
from edgepipe.runtime.errors import InputError

__all__ = ["VideoOut", "h264_available"]

log = logging.getLogger(__name__)


def h264_available() -> bool:
    """Whether PyAV with an H.264 encoder is installed (then `VideoOut` writes H.264)."""
    try:
        import av

        av.codec.Codec("libx264", "w")
    except Exception:  # not installed, or a build without libx264
        return False
    return True


class VideoOut:
    """An mp4 writer that only appears at `path` when closed without error (use as a context manager); until then
    it is `<name>.partial-<pid>-<random>.mp4` beside it. `codec` says what it writes: "h264" or "mp4v"."""

    def __init__(self, path: str | Path, fps: float, size_wh: tuple[int, int], *, crf: int = 23,
                 preset: str = "veryfast"):
        self.path, self.size_wh = Path(path), (int(size_wh[0]), int(size_wh[1]))
        self._tmp = partial_file(self.path, ".mp4")  # the suffix tells opencv the container
        self.codec = "h264" if h264_available() else "mp4v"
        try:
            if self.codec == "h264":
                self._open_h264(fps, crf, preset)
            else:
                log.warning("PyAV is not installed: %s is MPEG-4 Part 2, which browsers do not play "
                            "(pip install 'edgepipe[video]' for H.264)", self.path)
                self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, self.size_wh)
                if not self._writer.isOpened():
                    raise InputError(f"{self.path}: opencv cannot write mp4 video here")
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def _open_h264(self, fps: float, crf: int, preset: str) -> None:
        import av

        self._container = av.open(str(self._tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
        self._stream = self._container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        width, height = self.size_wh
        self._stream.width, self._stream.height = width + width % 2, height + height % 2  # 4:2:0 wants even sides
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": preset}

    def write(self, frame_rgb: np.ndarray) -> None:
        if self.codec == "mp4v":
            self._writer.write(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))
            return
        import av

        height, width = frame_rgb.shape[:2]
        if (width, height) != (self._stream.width, self._stream.height):  # an odd side: repeat the last row/column
            frame_rgb = cv2.copyMakeBorder(frame_rgb, 0, self._stream.height - height, 0, self._stream.width - width,
                                           cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def _close(self) -> None:
        if self.codec == "mp4v":
            self._writer.release()
            return
        try:
            for packet in self._stream.encode():  # flush the encoder's delayed frames
                self._container.mux(packet)
        finally:
            self._container.close()

    def __enter__(self) -> "VideoOut":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._close()
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        if exc_type is None:
            publish(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)
