"""Live video through the installed `edgepipe run`: an MJPEG camera served on 127.0.0.1 that dies mid-way (one
line, reconnected, the run goes on) or stalls (one line after --timeout, never hangs), the newest frame winning
(issue #16)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import pytest

from tests.support.servers import MjpegServer

pytestmark = pytest.mark.slow

EDGEPIPE = str(Path(sys.executable).with_name("edgepipe"))


@pytest.fixture(scope="module")
def jpegs(shared_data) -> list[bytes]:
    capture = cv2.VideoCapture(str(shared_data / "videos" / "face_carphone.mp4"))
    frames = []
    while (got := capture.read())[0]:
        frames.append(cv2.imencode(".jpg", got[1])[1].tobytes())
    capture.release()
    return frames


def _counts(out: str) -> tuple[int, int]:
    """(frames processed, frames dropped) from run's summary line."""
    return int(re.search(r"video: (\d+) frames", out)[1]), int(re.search(r"(\d+) frames dropped", out)[1])


def _run(artifacts, url: str, tmp_path: Path, *flags) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([EDGEPIPE, "run", str(artifacts["yunet.opencv"]), url, "--out", str(tmp_path / "live.mp4"),
                           "--jsonl", str(tmp_path / "live.jsonl"), *flags], capture_output=True, text=True,
                          timeout=120)
    return done, time.monotonic() - started


def test_a_stream_that_dies_is_reconnected_in_one_line(artifacts, jpegs, tmp_path):
    with MjpegServer(jpegs, [("frames", 40), ("frames", 30)]) as camera:
        done, _ = _run(artifacts, camera.url, tmp_path, "--reconnect", "1", "--timeout", "3")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("reconnecting (1 of 1)") == 1 and camera.connections == 2
    processed, dropped = _counts(done.stdout)
    assert processed + dropped == 70 and processed >= 35  # every frame read was processed or knowingly dropped
    with av.open(str(tmp_path / "live.mp4")) as video:
        assert video.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in video.decode(video=0)) == processed
    rows = [json.loads(line) for line in (tmp_path / "live.jsonl").read_text().splitlines()]
    assert rows and all(r["label"] == "face" for r in rows)
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)  # capture times, increasing
    assert "capture to result" in done.stdout


def test_a_stalled_stream_ends_after_the_timeout_and_never_hangs(artifacts, jpegs, tmp_path):
    with MjpegServer(jpegs, [("stall", 25)]) as camera:
        done, seconds = _run(artifacts, camera.url, tmp_path, "--timeout", "2")
    assert done.returncode == 0, done.stderr
    assert "the stream stopped (no frame for 2 s" in done.stderr and seconds < 30
    assert (tmp_path / "live.mp4").is_file()


def test_max_frames_stops_a_live_source(artifacts, jpegs, tmp_path):
    with MjpegServer(jpegs, [("frames", 1000)]) as camera:
        done, _ = _run(artifacts, camera.url, tmp_path, "--max-frames", "20")
    assert done.returncode == 0, done.stderr
    processed, dropped = _counts(done.stdout)
    assert processed + dropped == 20
