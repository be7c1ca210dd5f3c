"""`VideoOut`: H.264 through PyAV at any frame size (odd sides padded), all or nothing; the pipelined video loop."""

from __future__ import annotations

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgepipe.runtime.streams import open_source
from edgepipe.video_out import VideoOut, h264_available


@settings(max_examples=8, deadline=None)
@given(width=st.integers(2, 97), height=st.integers(2, 61), frames=st.integers(1, 12))
def test_any_size_is_written_as_h264_and_reads_back(tmp_path_factory, width, height, frames):
    assert h264_available()
    out = tmp_path_factory.mktemp("video") / "clip.mp4"
    rng = np.random.default_rng(width * height)
    with VideoOut(out, 25.0, (width, height)) as video:
        assert video.codec == "h264"
        for _ in range(frames):
            video.write(rng.integers(0, 256, (height, width, 3), np.uint8))
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert stream.codec_context.name == "h264" and len(decoded) == frames
    assert decoded[0].shape[:2] == (height + height % 2, width + width % 2)  # 4:2:0: odd sides padded by one


def test_a_failed_video_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with VideoOut(tmp_path / "clip.mp4", 25.0, (64, 48)) as video:
            video.write(np.zeros((48, 64, 3), np.uint8))
            raise RuntimeError("the detector failed")
    assert list(tmp_path.iterdir()) == []


def _clip(path, frames: int = 20):
    with VideoOut(path, 25.0, (32, 24)) as video:
        for k in range(frames):
            video.write(np.full((24, 32, 3), 10 * k, np.uint8))
    return path


def test_the_pipelined_loop_keeps_every_frame_in_order(tmp_path):
    from edgepipe.run_video import run_video

    seen = []

    def step(frame, index):
        seen.append(index)
        return frame, [{"track": 1, "box": [0, 0, 1, 1], "score": 0.9, "label": "x"}]

    summary = run_video(step, open_source(_clip(tmp_path / "in.mp4")), tmp_path / "out.mp4", tmp_path / "out.jsonl",
                        progress=False)
    assert seen == list(range(20)) and summary.items == 20 and summary.detections == 20
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [int(line.split('"frame": ')[1].split(",")[0]) for line in lines] == list(range(20))
    assert summary.latency_ms[0] <= summary.latency_ms[1]


def test_a_step_that_fails_mid_video_leaves_no_output(tmp_path):
    from edgepipe.run_video import run_video

    def step(frame, index):
        if index == 7:
            raise RuntimeError("the model failed on frame 7")
        return frame, []

    clip = _clip(tmp_path / "in.mp4")
    with pytest.raises(RuntimeError, match="frame 7"):
        run_video(step, open_source(clip), tmp_path / "out.mp4", tmp_path / "out.jsonl", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_a_folder_of_frames_is_a_source_and_bad_sources_are_one_line(tmp_path):
    import cv2

    from edgepipe.errors import InputError

    for k in range(3):
        cv2.imwrite(str(tmp_path / f"{k:03d}.png"), np.full((10, 12, 3), k, np.uint8))
    source = open_source(tmp_path)
    assert (source.frames, source.size_wh, source.live) == (3, (12, 10), False)
    assert [int(frame[0, 0, 0]) for frame, _ in source] == [0, 1, 2]
    with pytest.raises(InputError, match="cannot be opened"):
        open_source("http://127.0.0.1:9/none.mjpg", timeout_s=1)  # the discard port: nothing answers
    with pytest.raises(InputError, match="no images"):
        open_source((tmp_path / "empty").mkdir() or tmp_path / "empty")
